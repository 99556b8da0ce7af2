//! The ServiceLB controller: it owns `status.loadBalancer` of the Services that berth itself
//! load-balances, as k3s's ServiceLB does for the status. A Service of type LoadBalancer
//! without `spec.loadBalancerClass` is reachable on its node ports on every node, so its
//! ingress is one entry per address of type InternalIP of the Ready Nodes (sorted,
//! deduplicated, of the Service's IP families, each `{ip, ipMode: VIP}`); kubectl then shows
//! them as its EXTERNAL-IP instead of `<pending>`. A Service that is no longer of type
//! LoadBalancer has its ingress removed (the API server refuses ingress on any other type, so
//! it cannot be anyone else's). A LoadBalancer Service with a class is another
//! implementation's, and its status is left alone entirely: clearing it would fight that
//! implementation. (The class cannot be added to a LoadBalancer Service in place — it is
//! immutable — only by a detour through another type, where the ingress is removed.)
//!
//! Shape: the shared run loop of [`crate::runtime`] over Services, with a reflector cache of
//! Nodes. A Service's own change wakes it; any Node change wakes every Service this
//! controller load-balances, since any of them may change which addresses they get.
//! [`ingress`] (pure) says what the ingress should be; `reconcile` writes it only when it
//! differs, through the status subresource as a merge patch carrying the resourceVersion it
//! was planned from, so a cache behind the server conflicts and retries instead of
//! overwriting newer data.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::Error;
use crate::runtime::{self, Backoff};

/// The ipMode of every entry, as k3s writes it: packets for the address reach the node with
/// that address as their destination (no proxy in front rewrites it, which `Proxy` would
/// say), so clients in the cluster may short-cut to the Service.
pub const IP_MODE: &str = "VIP";

/// Back-off after a failed write (a conflict included): this doubled per consecutive failure,
/// up to [`MAX_BACKOFF`], as upstream's service controller retries up to five minutes. A
/// change of the Service or of any Node still wakes it at once.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What every reconcile shares.
struct Context {
    client: Client,
    nodes: Store<Node>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (services, service_events) = runtime::reflector::<Service>(&client);
    let (nodes, node_events) = runtime::reflector::<Node>(&client);
    let context = Arc::new(Context { client, nodes });
    let balanced = services.clone();
    let triggers = vec![
        runtime::trigger_self(service_events),
        runtime::trigger_mapped(node_events, move |_: Node| {
            balanced
                .state()
                .iter()
                .filter(|s| load_balanced(s))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        }),
    ];
    runtime::run(
        "servicelb",
        reconcile,
        context,
        services,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// The one reconcile: the Service's `status.loadBalancer.ingress` made what [`ingress`] says,
/// written only when it differs from what the Service shows.
async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    runtime::synced(&ctx.nodes, "node").await?;
    let nodes = ctx.nodes.state();
    let nodes: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
    let Some(wanted) = ingress(&service, &nodes) else {
        return Ok(Action::await_change());
    };
    if wanted == current_ingress(&service) {
        return Ok(Action::await_change());
    }

    let stored = crate::error::Stored::new("Service", &service.metadata);
    let namespace = stored.namespace()?;
    let name = stored.name()?;
    let version = stored.resource_version()?;
    // A merge patch replaces the list whole; `null` removes it, leaving `loadBalancer: {}`.
    let ingress = if wanted.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_value(&wanted)?
    };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": version},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            let ips: Vec<&str> = wanted.iter().filter_map(|i| i.ip.as_deref()).collect();
            tracing::debug!(service = %format!("{namespace}/{name}"), ?ips, "load balancer ingress written");
            Ok(Action::await_change())
        }
        // Deleted meanwhile: there is no status left to write.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// A Service this controller load-balances: of type LoadBalancer, without a class (one with
/// a class names another implementation).
pub fn load_balanced(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none()
    })
}

/// What `status.loadBalancer.ingress` of `service` should be, given every Node: `None` when
/// it is not this controller's to say (a LoadBalancer Service with a class); empty for a
/// Service of any other type than LoadBalancer; else one entry per InternalIP address of the
/// Ready `nodes`, of the Service's IP families (all, if it names none), sorted and
/// deduplicated. Addresses that are not IPs are skipped: the API server would refuse them.
pub fn ingress(service: &Service, nodes: &[&Node]) -> Option<Vec<LoadBalancerIngress>> {
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
        return Some(Vec::new());
    }
    if !load_balanced(service) {
        return None;
    }
    let families = spec.and_then(|s| s.ip_families.as_deref()).unwrap_or(&[]);
    let wanted_family = |ip: &IpAddr| {
        families.is_empty()
            || families.iter().any(|f| match f.as_str() {
                "IPv4" => ip.is_ipv4(),
                "IPv6" => ip.is_ipv6(),
                _ => false,
            })
    };
    // An ordered set of parsed addresses: sorted (IPv4 before IPv6, numerically) and each
    // once, however the nodes spell it.
    let addresses: BTreeSet<IpAddr> = nodes
        .iter()
        .filter(|node| ready(node))
        .filter_map(|node| node.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.trim().parse::<IpAddr>().ok())
        .filter(wanted_family)
        .collect();
    Some(
        addresses
            .into_iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some(IP_MODE.to_string()),
                ..Default::default()
            })
            .collect(),
    )
}

/// The node's Ready condition is True: it is up and can take the traffic.
fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ingress the Service shows now (none and an empty list alike).
fn current_ingress(service: &Service) -> Vec<LoadBalancerIngress> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerStatus, NodeAddress, NodeCondition, NodeStatus, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(type_: &str, class: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                load_balancer_class: class.map(str::to_string),
                ip_families: Some(vec!["IPv4".into()]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, ready: &str, addresses: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(type_, address)| NodeAddress {
                            type_: type_.to_string(),
                            address: address.to_string(),
                        })
                        .collect(),
                ),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn ips(ingress: &[LoadBalancerIngress]) -> Vec<&str> {
        ingress.iter().filter_map(|i| i.ip.as_deref()).collect()
    }

    #[test]
    fn ready_nodes_internal_ips_sorted_and_deduplicated() {
        let a = node(
            "a",
            "True",
            &[
                ("InternalIP", "192.168.1.20"),
                ("Hostname", "a"),
                ("ExternalIP", "203.0.113.5"),
            ],
        );
        let b = node(
            "b",
            "True",
            &[
                ("InternalIP", "192.168.1.3"),
                ("InternalIP", "192.168.1.20"),
            ],
        );
        let down = node("c", "False", &[("InternalIP", "192.168.1.9")]);
        let unknown = node("d", "Unknown", &[("InternalIP", "192.168.1.10")]);
        let wanted = ingress(&service("LoadBalancer", None), &[&a, &b, &down, &unknown])
            .expect("a LoadBalancer without class is ours");
        // Numeric order, not text order ("192.168.1.20" < "192.168.1.3" as text).
        assert_eq!(ips(&wanted), ["192.168.1.3", "192.168.1.20"]);
        assert!(wanted.iter().all(|i| i.ip_mode.as_deref() == Some("VIP")));
        assert!(
            wanted
                .iter()
                .all(|i| i.hostname.is_none() && i.ports.is_none())
        );
    }

    #[test]
    fn only_the_services_ip_families_and_real_ips() {
        let n = node(
            "a",
            "True",
            &[
                ("InternalIP", "fd00::2"),
                ("InternalIP", "not-an-ip"),
                ("InternalIP", "10.0.0.2"),
            ],
        );
        let v4 = service("LoadBalancer", None);
        assert_eq!(ips(&ingress(&v4, &[&n]).expect("ours")), ["10.0.0.2"]);
        let mut dual = v4.clone();
        if let Some(spec) = dual.spec.as_mut() {
            spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        }
        assert_eq!(
            ips(&ingress(&dual, &[&n]).expect("ours")),
            ["10.0.0.2", "fd00::2"]
        );
        let mut unset = v4;
        if let Some(spec) = unset.spec.as_mut() {
            spec.ip_families = None;
        }
        assert_eq!(
            ips(&ingress(&unset, &[&n]).expect("ours")),
            ["10.0.0.2", "fd00::2"]
        );
    }

    #[test]
    fn no_ready_node_means_no_ingress() {
        let down = node("a", "False", &[("InternalIP", "10.0.0.2")]);
        let no_status = Node::default();
        let svc = service("LoadBalancer", None);
        assert_eq!(ingress(&svc, &[&down, &no_status]), Some(Vec::new()));
        assert_eq!(ingress(&svc, &[]), Some(Vec::new()));
    }

    #[test]
    fn other_types_get_none_and_a_class_is_left_alone() {
        let n = node("a", "True", &[("InternalIP", "10.0.0.2")]);
        for type_ in ["ClusterIP", "NodePort", "ExternalName"] {
            assert_eq!(ingress(&service(type_, None), &[&n]), Some(Vec::new()));
            assert!(!load_balanced(&service(type_, None)));
        }
        let no_spec = Service::default();
        assert_eq!(ingress(&no_spec, &[&n]), Some(Vec::new()));
        let classed = service("LoadBalancer", Some("example.com/other"));
        assert_eq!(ingress(&classed, &[&n]), None);
        assert!(!load_balanced(&classed));
        assert!(load_balanced(&service("LoadBalancer", None)));
    }

    #[test]
    fn what_was_written_reads_back_as_unchanged() {
        let n = node("a", "True", &[("InternalIP", "10.0.0.2")]);
        let mut svc = service("LoadBalancer", None);
        assert_eq!(current_ingress(&svc), Vec::new());
        let wanted = ingress(&svc, &[&n]).expect("ours");
        assert_ne!(wanted, current_ingress(&svc));
        // What the API server returns after the patch, decoded as the cache decodes it.
        let written: LoadBalancerIngress =
            serde_json::from_value(serde_json::json!({"ip": "10.0.0.2", "ipMode": "VIP"}))
                .expect("decodes");
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![written]),
            }),
            ..Default::default()
        });
        assert_eq!(wanted, current_ingress(&svc));
        // An empty list is no ingress: nothing to clear.
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(Vec::new()),
            }),
            ..Default::default()
        });
        let clusterip = Service {
            spec: service("ClusterIP", None).spec,
            ..svc
        };
        assert_eq!(
            ingress(&clusterip, &[&n]).expect("ours"),
            current_ingress(&clusterip)
        );
    }

    #[test]
    fn the_ingress_serializes_as_the_api_expects() {
        let n = node("a", "True", &[("InternalIP", "10.0.0.2")]);
        let wanted = ingress(&service("LoadBalancer", None), &[&n]).expect("ours");
        assert_eq!(
            serde_json::to_value(&wanted).expect("encodes"),
            serde_json::json!([{"ip": "10.0.0.2", "ipMode": "VIP"}])
        );
    }
}
