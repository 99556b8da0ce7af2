//! How the server is set up: the cluster domain, the TTL, and where other names go.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::index::DEFAULT_TTL;

/// The server's settings; [`Config::default`] is CoreDNS's defaults in a kubeadm cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster domain (kubelet's `clusterDomain`): `cluster.local`.
    pub cluster_domain: String,
    /// The TTL of every answer from the cluster's records, and the SOA's minimum (negative
    /// caching): 5 s, as CoreDNS.
    pub ttl: u32,
    /// Where names outside the cluster domain are forwarded. `None` reads the `nameserver`
    /// lines of [`Config::resolv_conf`] (port 53). Either way, an address that is this
    /// server itself is left out.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The host's resolver configuration: `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// The addresses of `ns.dns.<domain>` (the name server of the zone's SOA and NS records),
    /// which should be where pods reach this server. Empty: the listen address, unless that is
    /// a wildcard address.
    pub nameservers: Vec<IpAddr>,
    /// How long to wait for one upstream before trying the next: 2 s.
    pub upstream_timeout: Duration,
    /// At most this many forwarded queries at once (more are answered SERVFAIL), which also
    /// bounds the damage of a forwarding loop the address check cannot see: 1024.
    pub max_forwards_in_flight: usize,
    /// A TCP connection idle this long is closed: 10 s.
    pub tcp_idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cluster_domain: "cluster.local".into(),
            ttl: DEFAULT_TTL,
            upstreams: None,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            nameservers: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            max_forwards_in_flight: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}
