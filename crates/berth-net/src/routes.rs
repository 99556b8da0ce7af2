//! Routes between nodes, as flannel's host-gw backend makes them: nodes that share a link
//! reach each other's pods directly, so each node keeps, in its own network namespace, one
//! route per other node: `<its podCIDR> via <its InternalIP>`. Nothing is encapsulated; the
//! other node forwards the packet onto its pod bridge.
//!
//! Where to start: [`run`] keeps the routes current from the Nodes; [`wanted`] decides them
//! (pure), [`sync`] makes the kernel match. The kernel side is behind [`Routes`]:
//! [`Netlink`] (rtnetlink) marks every route it adds with berth's own protocol number
//! [`PROTOCOL`], so that routes of deleted nodes or changed addresses are found and removed on
//! the next resync and by [`teardown`] (`berth down`), and routes of anyone else are never
//! touched; [`Recording`] is the fake.
//!
//! A node on the same machine (its InternalIP loopback or this node's own) or with a podCIDR
//! overlapping this node's gets no route: its pods are already on a link of this host.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::RouteMessageBuilder;

use crate::link::{exists_is_fine, in_namespace, netlink};
use crate::{Cidr, NetError};

/// The route protocol number berth's routes carry (`ip route show proto 211`); unassigned in
/// iproute2's `rt_protos`.
pub const PROTOCOL: u8 = 211;

/// How often the routes are compared with the Nodes even when nothing changed.
const RESYNC: Duration = Duration::from_secs(30);

/// One route: `destination via gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: (Ipv4Addr, u8),
    pub gateway: Ipv4Addr,
}

impl Route {
    pub fn new(destination: Cidr, gateway: Ipv4Addr) -> Route {
        Route {
            destination: (destination.network(), destination.prefix()),
            gateway,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (network, prefix) = self.destination;
        write!(f, "{network}/{prefix} via {}", self.gateway)
    }
}

/// The kernel's routes, as far as berth's are concerned.
pub trait Routes: Send + Sync {
    /// The routes that carry [`PROTOCOL`].
    fn list(&self) -> Result<Vec<Route>, NetError>;
    /// Adds the route with [`PROTOCOL`]; replaces one of the same destination.
    fn add(&self, route: &Route) -> Result<(), NetError>;
    /// Deletes the route (gone already is fine).
    fn delete(&self, route: &Route) -> Result<(), NetError>;
}

/// This node, as [`wanted`] needs it.
#[derive(Debug, Clone)]
pub struct Local {
    pub node_name: String,
    pub pod_cidr: Cidr,
    pub node_ip: IpAddr,
}

/// The routes this node needs to the pods of `nodes`: one per other node with a podCIDR and an
/// IPv4 InternalIP off this machine.
pub fn wanted<'a>(local: &Local, nodes: impl IntoIterator<Item = &'a Node>) -> Vec<Route> {
    let mut routes = BTreeSet::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(local.node_name.as_str()) {
            continue;
        }
        let Some(cidr) = node
            .spec
            .as_ref()
            .and_then(|s| {
                s.pod_cidr
                    .as_deref()
                    .or_else(|| s.pod_cidrs.as_ref()?.first().map(String::as_str))
            })
            .and_then(|c| c.parse::<Cidr>().ok())
        else {
            continue;
        };
        let Some(ip) = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        if ip.is_loopback() || ip.is_unspecified() || IpAddr::from(ip) == local.node_ip {
            continue;
        }
        if cidr.overlaps(&local.pod_cidr) {
            continue;
        }
        routes.insert(Route::new(cidr, ip));
    }
    routes.into_iter().collect()
}

/// Makes berth's routes in the kernel exactly `wanted`: adds the missing, deletes the rest.
/// Returns how many were added and deleted.
pub fn sync(routes: &dyn Routes, wanted: &[Route]) -> Result<(usize, usize), NetError> {
    let have: BTreeSet<Route> = routes.list()?.into_iter().collect();
    let want: BTreeSet<Route> = wanted.iter().copied().collect();
    let mut deleted = 0;
    for route in have.difference(&want) {
        routes.delete(route)?;
        deleted += 1;
    }
    let mut added = 0;
    for route in want.difference(&have) {
        routes.add(route)?;
        added += 1;
    }
    Ok((added, deleted))
}

/// Deletes every route of berth's: what `berth down` does. Returns how many.
pub fn teardown(routes: &dyn Routes) -> Result<usize, NetError> {
    Ok(sync(routes, &[])?.1)
}

/// Keeps this node's routes to the other nodes' pods current from the Nodes until `stop`
/// resolves; removes them when it does.
pub async fn run(
    client: Client,
    local: Local,
    routes: Arc<dyn Routes>,
    stop: impl Future<Output = ()>,
) {
    let (store, writer) = reflector::store::<Node>();
    let events = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    // Most Node events (status, leases' conditions, labels) change no route: the kernel is only
    // asked when the wanted routes differ from the last sync's, or on the periodic tick, which
    // also brings back routes someone else deleted.
    let mut last: Option<Vec<Route>> = None;
    let mut resync = |store: &reflector::Store<Node>, always: bool| {
        let nodes = store.state();
        let want = wanted(&local, nodes.iter().map(AsRef::as_ref));
        if !always && last.as_ref() == Some(&want) {
            return;
        }
        let routes = routes.clone();
        // Netlink blocks briefly; keep it off the async workers.
        tokio::task::block_in_place(|| match sync(routes.as_ref(), &want) {
            Ok((0, 0)) => last = Some(want),
            Ok((added, deleted)) => {
                tracing::info!(added, deleted, routes = ?want.iter().map(ToString::to_string).collect::<Vec<_>>(), "routes to other nodes' pods updated");
                last = Some(want);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot update the routes to other nodes' pods");
                last = None;
            }
        });
    };
    // A store still being (re)listed may miss nodes: its routes would be removed for a moment.
    let ready = |store: &reflector::Store<Node>| {
        futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
    };
    let keep = async {
        let mut events = std::pin::pin!(events);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(_)) if ready(&store) => resync(&store, false),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "watching nodes for routes"),
                    None => return,
                },
                _ = tick.tick() => {
                    if ready(&store) {
                        resync(&store, true);
                    }
                }
            }
        }
    };
    tokio::select! {
        () = keep => {}
        () = stop => {}
    }
    // Routes via nodes nobody keeps current any more would outlive this node's knowledge.
    if let Err(e) = tokio::task::block_in_place(|| teardown(routes.as_ref())) {
        tracing::warn!(error = %e, "cannot remove the routes to other nodes' pods");
    }
}

fn message(route: &Route) -> RouteMessage {
    let (network, prefix) = route.destination;
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(network, prefix)
        .gateway(route.gateway)
        .protocol(RouteProtocol::Other(PROTOCOL))
        .build()
}

/// rtnetlink in the network namespace of the calling process (needs CAP_NET_ADMIN).
#[derive(Debug, Default)]
pub struct Netlink;

impl Routes for Netlink {
    fn list(&self) -> Result<Vec<Route>, NetError> {
        let found = Arc::new(Mutex::new(Vec::new()));
        let sink = found.clone();
        in_namespace(None, move |handle| async move {
            let all = RouteMessageBuilder::<Ipv4Addr>::new().build();
            let mut dump = handle.route().get(all).execute();
            while let Some(message) = dump.try_next().await.map_err(netlink)? {
                if message.header.protocol != RouteProtocol::Other(PROTOCOL) {
                    continue;
                }
                let mut destination = None;
                let mut gateway = None;
                for attribute in &message.attributes {
                    match attribute {
                        RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                            destination = Some(*a);
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
                        _ => {}
                    }
                }
                if let (Some(network), Some(gateway)) = (destination, gateway) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(Route {
                        destination: (network, message.header.destination_prefix_length),
                        gateway,
                    });
                }
            }
            Ok(())
        })?;
        let found = found.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(found)
    }

    fn add(&self, route: &Route) -> Result<(), NetError> {
        let message = message(route);
        in_namespace(None, move |handle| async move {
            handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .or_else(exists_is_fine)
        })
    }

    fn delete(&self, route: &Route) -> Result<(), NetError> {
        let message = message(route);
        in_namespace(None, move |handle| async move {
            match handle.route().del(message).execute().await {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -rustix::io::Errno::SRCH.raw_os_error() =>
                {
                    Ok(())
                }
                Err(e) => Err(netlink(e)),
            }
        })
    }
}

/// Keeps routes in memory and records the calls: the fake.
#[derive(Debug, Default)]
pub struct Recording {
    state: Mutex<(BTreeSet<Route>, Vec<String>)>,
}

impl Recording {
    pub fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

impl Routes for Recording {
    fn list(&self) -> Result<Vec<Route>, NetError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state.0.iter().copied().collect())
    }

    fn add(&self, route: &Route) -> Result<(), NetError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0.retain(|r| r.destination != route.destination);
        state.0.insert(*route);
        state.1.push(format!("add {route}"));
        Ok(())
    }

    fn delete(&self, route: &Route) -> Result<(), NetError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0.remove(route);
        state.1.push(format!("delete {route}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node.spec = Some(NodeSpec {
            pod_cidr: cidr.map(Into::into),
            pod_cidrs: cidr.map(|c| vec![c.into()]),
            ..NodeSpec::default()
        });
        node.status = Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                },
            ]),
            ..NodeStatus::default()
        });
        node
    }

    fn local() -> Local {
        Local {
            node_name: "first".into(),
            pod_cidr: "10.42.0.0/24".parse().unwrap(),
            node_ip: IpAddr::from([192, 0, 2, 1]),
        }
    }

    #[test]
    fn one_route_per_other_node_off_this_machine() {
        let nodes = [
            node("first", Some("10.42.0.0/24"), "192.0.2.1"),
            node("second", Some("10.42.1.0/24"), "192.0.2.2"),
            node("third", Some("10.42.2.0/24"), "192.0.2.3"),
            node("waiting", None, "192.0.2.4"),
            node("same-host", Some("10.42.5.0/24"), "127.0.0.1"),
            node("also-here", Some("10.42.6.0/24"), "192.0.2.1"),
            node("overlapping", Some("10.42.0.0/16"), "192.0.2.7"),
            node("no-address", Some("10.42.8.0/24"), "not an address"),
        ];
        let routes: Vec<String> = wanted(&local(), &nodes)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            routes,
            ["10.42.1.0/24 via 192.0.2.2", "10.42.2.0/24 via 192.0.2.3"]
        );
    }

    #[test]
    fn sync_adds_the_missing_and_removes_the_stale() {
        let kernel = Recording::default();
        let second = node("second", Some("10.42.1.0/24"), "192.0.2.2");
        let third = node("third", Some("10.42.2.0/24"), "192.0.2.3");
        let want = wanted(&local(), [&second, &third]);
        assert_eq!(sync(&kernel, &want).unwrap(), (2, 0));
        assert_eq!(sync(&kernel, &want).unwrap(), (0, 0));
        // third is deleted, second moves to another address.
        let moved = node("second", Some("10.42.1.0/24"), "192.0.2.9");
        assert_eq!(sync(&kernel, &wanted(&local(), [&moved])).unwrap(), (1, 2));
        assert_eq!(teardown(&kernel).unwrap(), 1);
        assert_eq!(
            kernel.calls(),
            [
                "add 10.42.1.0/24 via 192.0.2.2",
                "add 10.42.2.0/24 via 192.0.2.3",
                "delete 10.42.1.0/24 via 192.0.2.2",
                "delete 10.42.2.0/24 via 192.0.2.3",
                "add 10.42.1.0/24 via 192.0.2.9",
                "delete 10.42.1.0/24 via 192.0.2.9",
            ]
        );
    }
}
