//! The service proxy, kube-proxy's job on this node: traffic to a Service's cluster IP, its
//! node port or its load balancer port goes to one of the Service's ready endpoints.
//!
//! The data flow: [`Proxy::run`] watches Services and EndpointSlices ([`berth_client::cache`]),
//! turns them into [`model::ServicePort`]s ([`services`]), renders those as one nftables
//! table ([`nftables::Ruleset`]) and applies the difference from the last sync in one atomic
//! transaction ([`nftables::Dataplane`]). Packets are then rewritten by the kernel (DNAT and
//! conntrack), never copied through berth: the measured reason is in ARCHITECTURE.md.
//!
//! The table stays in the kernel when berth stops, so Services keep working across a restart;
//! the next proxy replaces it whole once its caches have synced, and `berth down` removes it.

pub mod model;
pub mod nftables;
pub mod services;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_client::cache::{AbortOnDrop, watched};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::{Cidr, NetError};
use model::{Protocol, ServicePort};
use nftables::{Dataplane, Ruleset, TableConfig};

/// How long changes gather before a sync: a Deployment's rollout costs one sync, and an
/// endpoint change still reaches the kernel well within a second.
pub const COALESCE: Duration = Duration::from_millis(20);

/// A sync also runs this often without a change, repairing a table someone else altered.
const RESYNC: Duration = Duration::from_secs(30);

/// After a failed sync, the next attempt (a full replace) waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// What the proxy needs to know about this node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// This node's name: `Local` traffic policies keep its endpoints.
    pub node_name: String,
    /// The pod bridge; the nftables table is named after it, so berths on one host (as the
    /// tests run them) keep apart.
    pub bridge: String,
    pub cluster_cidr: Cidr,
    pub service_cidr: Cidr,
    /// Where the kernel's sysctls are (`/proc/sys`; a temporary directory in tests).
    pub sysctl_root: PathBuf,
}

/// The service proxy of one node.
pub struct Proxy {
    config: ProxyConfig,
    dataplane: Arc<dyn Dataplane>,
}

impl Proxy {
    pub fn new(config: ProxyConfig, dataplane: Arc<dyn Dataplane>) -> Proxy {
        Proxy { config, dataplane }
    }

    /// The nftables table this proxy owns.
    pub fn table(&self) -> &str {
        &self.config.bridge
    }

    /// Sets the kernel up for the proxy: forwarding on; route_localnet on the bridge so that
    /// `127.0.0.1:<nodePort>` can be sent to a pod (the table drops what else would use it);
    /// bridged traffic through the IP hooks so conntrack sees replies between pods on one
    /// bridge. Returns whether that last one holds; without it every proxied connection is
    /// masqueraded.
    pub fn prepare_kernel(&self) -> Result<bool, NetError> {
        let root = &self.config.sysctl_root;
        write_sysctl(root, "net/ipv4/ip_forward", "1")?;
        let localnet = format!("net/ipv4/conf/{}/route_localnet", self.config.bridge);
        write_sysctl(root, &localnet, "1")?;
        let bridged = Path::new("net/bridge/bridge-nf-call-iptables");
        if !root.join(bridged).exists() {
            tracing::warn!(
                "br_netfilter is not loaded: every Service connection is masqueraded, so servers see the bridge's address"
            );
            return Ok(false);
        }
        write_sysctl(root, "net/bridge/bridge-nf-call-iptables", "1")?;
        Ok(true)
    }

    /// Keeps the kernel's rules equal to the cluster's Services until `stop` resolves.
    pub async fn run(
        self,
        client: Client,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), NetError> {
        let bridged = self.prepare_kernel()?;
        let table = TableConfig {
            table: self.config.bridge.clone(),
            bridge: self.config.bridge.clone(),
            cluster_cidr: self.config.cluster_cidr,
            service_cidr: self.config.service_cidr,
            masquerade_all: !bridged,
        };
        tokio::select! {
            () = self.keep_current(client, table) => Ok(()),
            () = stop => Ok(()),
        }
    }

    async fn keep_current(&self, client: Client, table: TableConfig) {
        let changed = Arc::new(Notify::new());
        let (services, a) = watched::<Service>(Api::all(client.clone()), changed.clone(), "proxy");
        let (slices, b) = watched::<EndpointSlice>(Api::all(client), changed.clone(), "proxy");
        let _tasks = AbortOnDrop(vec![a, b]);
        // Until both have listed, the table of the last berth keeps serving.
        if futures::future::try_join(services.wait_until_ready(), slices.wait_until_ready())
            .await
            .is_err()
        {
            tracing::error!(
                "a proxy watch ended before its cache was ready; Services are not updated"
            );
            return;
        }
        let mut applied: Option<(Ruleset, Vec<ServicePort>)> = None;
        loop {
            let (s, e) = (services.state(), slices.state());
            let ports = services::service_ports(
                s.iter().map(Arc::as_ref),
                e.iter().map(Arc::as_ref),
                &self.config.node_name,
            );
            let rules = Ruleset::render(&table, &ports);
            for conflict in &rules.conflicts {
                tracing::warn!("{conflict}");
            }
            let transaction = rules.transaction(&table.table, applied.as_ref().map(|(r, _)| r));
            let stale = applied
                .as_ref()
                .map(|(_, before)| stale_udp_flows(before, &ports))
                .unwrap_or_default();
            let dataplane = self.dataplane.clone();
            let result = tokio::task::spawn_blocking(move || {
                dataplane.apply(&transaction)?;
                for (destination, port, endpoint) in stale {
                    if let Err(e) = dataplane.forget_udp_flows(destination, port, endpoint) {
                        tracing::warn!(error = %e, "cannot forget UDP flows to a removed endpoint");
                    }
                }
                Ok::<(), NetError>(())
            })
            .await;
            let wait = match result {
                Ok(Ok(())) => {
                    if applied.is_none() {
                        tracing::info!(ports = ports.len(), "service proxy rules in place");
                    }
                    applied = Some((rules, ports));
                    RESYNC
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot apply the service rules; replacing them whole shortly");
                    applied = None;
                    RETRY
                }
                Err(e) => {
                    tracing::error!(error = %e, "the service rules sync panicked");
                    applied = None;
                    RETRY
                }
            };
            let _ = tokio::time::timeout(wait, changed.notified()).await;
            tokio::time::sleep(COALESCE).await;
        }
    }
}

/// The UDP flows (`destination`, `port`, `endpoint`) that `before` sent to an endpoint that
/// `now` no longer lists for the same destination and port.
pub fn stale_udp_flows(
    before: &[ServicePort],
    now: &[ServicePort],
) -> Vec<(Ipv4Addr, u16, Ipv4Addr)> {
    let flows = |ports: &[ServicePort]| -> BTreeSet<(Ipv4Addr, u16, Ipv4Addr)> {
        ports
            .iter()
            .filter(|p| p.protocol == Protocol::Udp)
            .flat_map(|p| {
                p.virtual_ips
                    .iter()
                    .flat_map(move |ip| p.endpoints.iter().map(move |e| (*ip, p.port, e.ip)))
            })
            .collect()
    };
    let current = flows(now);
    flows(before).difference(&current).copied().collect()
}

fn write_sysctl(root: &Path, name: &str, value: &str) -> Result<(), NetError> {
    let path = root.join(name);
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(NetError::io("writing", &path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Endpoint;

    fn udp(endpoints: &[u8]) -> ServicePort {
        ServicePort {
            key: "default/dns/udp/dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            virtual_ips: vec![Ipv4Addr::new(10, 43, 0, 10)],
            node_port: None,
            load_balancer: false,
            endpoints: endpoints
                .iter()
                .map(|last| Endpoint {
                    ip: Ipv4Addr::new(10, 42, 0, *last),
                    port: 5353,
                })
                .collect(),
            external_endpoints: Vec::new(),
            affinity_seconds: None,
        }
    }

    #[test]
    fn removed_udp_endpoints_have_their_flows_forgotten() {
        let stale = stale_udp_flows(&[udp(&[2, 3])], &[udp(&[3, 4])]);
        assert_eq!(
            stale,
            [(
                Ipv4Addr::new(10, 43, 0, 10),
                53,
                Ipv4Addr::new(10, 42, 0, 2)
            )]
        );
        let mut tcp = udp(&[2]);
        tcp.protocol = Protocol::Tcp;
        assert!(stale_udp_flows(&[tcp], &[]).is_empty());
    }

    #[test]
    fn the_kernel_is_prepared_through_sysctls() {
        let root = tempfile::tempdir().expect("temp dir");
        for dir in ["net/ipv4/conf/berth0", "net/bridge"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
        }
        std::fs::write(root.path().join("net/ipv4/ip_forward"), "0").expect("write");
        std::fs::write(root.path().join("net/bridge/bridge-nf-call-iptables"), "0").expect("write");
        let proxy = Proxy::new(
            ProxyConfig {
                node_name: "here".into(),
                bridge: "berth0".into(),
                cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
                service_cidr: "10.43.0.0/16".parse().expect("cidr"),
                sysctl_root: root.path().to_path_buf(),
            },
            Arc::new(nftables::Recording::default()),
        );
        assert!(proxy.prepare_kernel().expect("prepare"));
        let read = |name: &str| std::fs::read_to_string(root.path().join(name)).expect(name);
        assert_eq!(read("net/ipv4/ip_forward"), "1");
        assert_eq!(read("net/ipv4/conf/berth0/route_localnet"), "1");
        assert_eq!(read("net/bridge/bridge-nf-call-iptables"), "1");
        std::fs::remove_file(root.path().join("net/bridge/bridge-nf-call-iptables")).expect("rm");
        assert!(
            !proxy
                .prepare_kernel()
                .expect("prepare without br_netfilter")
        );
    }
}
