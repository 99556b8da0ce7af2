//! berth's cluster DNS: the names of Services, their endpoints and pods, answered as CoreDNS's
//! kubernetes plugin answers them, and every other name forwarded to the host's resolvers.
//! Like the scheduler and the controllers it is a client of the API server (kube-rs over
//! loopback), so it would work unchanged from another machine.
//!
//! Where to start: [`Server::run`] keeps reflector caches of Namespaces, Services and
//! EndpointSlices ([`watch`]) and rebuilds an [`Index`] from them on every change; a request
//! is decoded, answered by [`Index::lookup`] — a pure function of the index and the question,
//! tested without a server — or forwarded ([`forward`]), and encoded (the private `handler` module).
//!
//! - [`name`]: reading a query name (`_port._proto.svc.ns.svc.<domain>`, reverse names, …);
//! - [`index`]: what is built from the objects (namespaces, Services with their ready
//!   endpoints, the reverse map);
//! - [`lookup`]: the answers, NXDOMAIN vs NODATA, the SOA;
//! - [`records`]: the published index, swapped whole on every change;
//! - [`watch`]: the reflectors and the rebuild loop;
//! - [`forward`]: the host's resolvers (`/etc/resolv.conf`), never this server itself;
//! - [`server`]: the UDP and TCP loops; [`config`]; [`error`];
//! - [`service`]: the `kube-system/kube-dns` Service in front of the server.
//!
//! # The records
//!
//! With the cluster domain `cluster.local` (configurable), TTL 5 s:
//!
//! | name | type | answer |
//! |---|---|---|
//! | `<svc>.<ns>.svc.cluster.local` | A/AAAA | the ClusterIPs; headless: every ready endpoint (all with `publishNotReadyAddresses`) |
//! | `<hostname>.<svc>.<ns>.svc.cluster.local` | A/AAAA | that endpoint (`hostname`, e.g. a StatefulSet pod, or the address as `10-244-0-5`) |
//! | `_<port>._<proto>.<svc>.<ns>.svc.cluster.local` | SRV | each named port: target the Service, or for headless each endpoint's name; addresses in the additional section |
//! | `<svc>.<ns>.svc.cluster.local` (ExternalName) | CNAME | `spec.externalName`, followed for other types |
//! | `<d>.<c>.<b>.<a>.in-addr.arpa`, `ip6.arpa` | PTR | a ClusterIP's Service, or an endpoint's names |
//! | `<a-b-c-d>.<ns>.pod.cluster.local` | A/AAAA | that address, if the namespace exists ("pods insecure") |
//! | `cluster.local` | SOA, NS | the zone's (`ns.dns.cluster.local`, `hostmaster.cluster.local`) |
//!
//! A name under the domain that does not exist is NXDOMAIN, one that exists without records
//! of the asked type NODATA, both with the SOA in the authority section. A headless Service
//! with no ready endpoints does not exist (as in CoreDNS). Search lists and `ndots` are the
//! client's (the pod's resolv.conf): the server never expands or shortens a name. Where
//! berth differs from CoreDNS, it is in corners where CoreDNS contradicts the DNS itself:
//! `dns.<domain>` and `dns-version.<domain>` asked for A are NODATA, not NXDOMAIN; labels
//! under an ExternalName Service or below `<ip>.<ns>.pod` do not exist; a CNAME to a name
//! outside the domain is followed for every type, not only A and AAAA.
//!
//! # Wiring it into `berth up`
//!
//! ```ignore
//! let dns = berth_dns::Server::bind(listen, client.clone(), berth_dns::Config::default()).await?;
//! let dns_task = tokio::spawn(dns.run(stopping(stop_rx.clone())));
//! ```
//!
//! `client` is the admin kube-rs client the scheduler already gets. [`Server::bind`] binds UDP
//! and TCP at once (so a taken port fails `berth up` early, or can be logged and skipped);
//! [`Server::run`] returns when its future completes. Answers for the cluster are SERVFAIL
//! until the first list of the three caches (well under a second after start), then follow
//! every change within about 50 ms.
//!
//! - **Listen address.** Port 53 needs root (or `CAP_NET_BIND_SERVICE`), which `berth up`
//!   has when it runs the node agent. The address is where pods can reach the host: today
//!   pods share the host's network, so `127.0.0.1:53` (not `0.0.0.0:53`, which would take the
//!   port from a local resolver such as dnsmasq, and systemd-resolved's `127.0.0.53:53` is
//!   another address). Once pod networking lands, listen on the host's address on the pod
//!   bridge (the pods' gateway), and, as k3s does with the same service CIDR, give the
//!   `kube-system/kube-dns` Service the ClusterIP `10.43.0.10` with an endpoint at that
//!   address, so pods use the usual `nameserver 10.43.0.10` and the Service proxy carries it;
//!   set [`Config::nameservers`] to that ClusterIP so `ns.dns.cluster.local` names it.
//! - **Pods' resolv.conf.** The node agent writes it (`crates/berth-node/src/sandbox.rs`, today
//!   the host's file). For `dnsPolicy: ClusterFirst` (the default) kubelet writes
//!   `nameserver <cluster DNS>`, `search <ns>.svc.cluster.local svc.cluster.local
//!   cluster.local` plus the host's search domains, and `options ndots:5`; `Default` keeps the
//!   host's file; `None` uses `dnsConfig` alone.
//! - **Forwarding.** Names outside the domain go to the `nameserver`s of the host's
//!   `/etc/resolv.conf` as berth sees it (from the host's network namespace, so a loopback
//!   stub such as systemd-resolved's works), minus this server's own address; there is no
//!   cache of forwarded answers (CoreDNS's default configuration adds `cache 30`).
//! - **Logging.** The server logs nothing per query: its start and upstreams at `info`,
//!   failures to forward at `debug`.

pub mod config;
pub mod error;
pub mod forward;
mod handler;
pub mod index;
pub mod lookup;
pub mod name;
pub mod records;
pub mod server;
pub mod service;
#[cfg(test)]
mod testing;
pub mod watch;

pub use config::Config;
pub use error::Error;
pub use index::{Index, IndexOptions};
pub use lookup::{Answer, Outcome};
pub use records::Records;
pub use server::Server;
