//! One consistent view of the cluster for a scheduling pass: every node with what is already
//! requested on it, built from the reflector caches plus the pods this scheduler has bound but
//! whose binding the pod watch has not shown yet ("assumed" pods, as kube-scheduler calls them).
//! Without the assumed pods two pods scheduled back to back could both claim a node's last slot.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// The resources the scheduler accounts for. CPU in millicores, memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Resources {
    fn add(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(other.milli_cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

fn lookup(map: Option<&std::collections::BTreeMap<String, Quantity>>, key: &str) -> Option<i64> {
    let q = map?.get(key)?;
    if key == "cpu" {
        quantity::milli_value(&q.0)
    } else {
        quantity::value(&q.0)
    }
}

/// A container's requests; a resource with a limit but no request requests its limit, which
/// is what the API server's defaulting would have written.
fn container_requests(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    let get = |key: &str| {
        lookup(r.and_then(|r| r.requests.as_ref()), key)
            .or_else(|| lookup(r.and_then(|r| r.limits.as_ref()), key))
            .unwrap_or(0)
    };
    Resources {
        milli_cpu: get("cpu"),
        memory: get("memory"),
    }
}

/// The pod's effective request, as Kubernetes computes it (`resourcehelper.PodRequests`):
/// the larger of the app containers' sum and each init container's request, where restartable
/// init containers (sidecars) keep running and so add to everything that starts after them;
/// plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let containers = spec
        .containers
        .iter()
        .map(container_requests)
        .fold(Resources::default(), Resources::add);
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let request = container_requests(init);
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.add(request);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars.add(request));
        }
    }
    let overhead = Resources {
        milli_cpu: lookup(spec.overhead.as_ref(), "cpu").unwrap_or(0),
        memory: lookup(spec.overhead.as_ref(), "memory").unwrap_or(0),
    };
    containers.add(sidecars).max(init_peak).add(overhead)
}

/// A pod that has finished no longer holds its node's resources.
pub fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A node with what its pods already request.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub requested: Resources,
    pub pods: i64,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            node,
            requested: Resources::default(),
            pods: 0,
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// `status.allocatable` (falling back to capacity, as an old node would report only that).
    pub fn allocatable(&self) -> (Resources, i64) {
        let status = self.node.status.as_ref();
        let get = |key: &str| {
            lookup(status.and_then(|s| s.allocatable.as_ref()), key)
                .or_else(|| lookup(status.and_then(|s| s.capacity.as_ref()), key))
                .unwrap_or(0)
        };
        (
            Resources {
                milli_cpu: get("cpu"),
                memory: get("memory"),
            },
            get("pods"),
        )
    }

    fn add_pod(&mut self, pod: &Pod) {
        self.requested = self.requested.add(pod_requests(pod));
        self.pods += 1;
    }
}

/// Every node, sorted by name, with its load; and the claims, volumes and classes.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    pub volumes: crate::volumes::Volumes,
}

impl Snapshot {
    /// Builds the view from cached nodes and pods; `assumed` maps the uid of a pod this
    /// scheduler bound to its node, for bindings the cache does not show yet.
    pub fn new(nodes: &[Arc<Node>], pods: &[Arc<Pod>], assumed: &HashMap<String, String>) -> Self {
        let mut nodes: Vec<NodeInfo> = nodes.iter().cloned().map(NodeInfo::new).collect();
        nodes.sort_by(|a, b| a.name().cmp(b.name()));
        let mut snapshot = Snapshot {
            nodes,
            volumes: Default::default(),
        };
        for pod in pods {
            if is_terminated(pod) {
                continue;
            }
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty());
            let assumed_node = pod
                .metadata
                .uid
                .as_ref()
                .and_then(|uid| assumed.get(uid))
                .map(String::as_str);
            if let Some(node) = bound.or(assumed_node) {
                snapshot.assume(pod, node);
            }
        }
        snapshot
    }

    /// Counts `pod` against `node` (a pod bound to a node berth does not know is not counted).
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        if let Some(info) = self.nodes.iter_mut().find(|n| n.name() == node) {
            info.add_pod(pod);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{container, node, pod};

    #[test]
    fn effective_requests_take_the_init_maximum() {
        let mut p = pod("p");
        let spec = p.spec.as_mut().expect("spec");
        spec.containers = vec![container("500m", "100Mi"), container("500m", "100Mi")];
        spec.init_containers = Some(vec![container("2", "50Mi"), container("100m", "1Gi")]);
        assert_eq!(
            pod_requests(&p),
            Resources {
                milli_cpu: 2000,
                memory: 1 << 30
            }
        );
    }

    #[test]
    fn sidecars_add_to_later_init_containers_and_to_the_app() {
        let mut p = pod("p");
        let spec = p.spec.as_mut().expect("spec");
        spec.containers = vec![container("1", "100Mi")];
        let mut sidecar = container("200m", "10Mi");
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers = Some(vec![sidecar, container("1500m", "10Mi")]);
        // init peak: 200m + 1500m = 1700m; app: 1000m + 200m = 1200m.
        assert_eq!(pod_requests(&p).milli_cpu, 1700);
        assert_eq!(pod_requests(&p).memory, 110 << 20);
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let mut p = pod("p");
        let mut c = container("0", "0");
        c.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(
                [("memory".to_string(), Quantity("1Gi".into()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        });
        p.spec.as_mut().expect("spec").containers = vec![c];
        assert_eq!(pod_requests(&p).memory, 1 << 30);
    }

    #[test]
    fn snapshot_counts_bound_and_assumed_but_not_finished_pods() {
        let nodes = vec![
            Arc::new(node("b", "4", "4Gi")),
            Arc::new(node("a", "4", "4Gi")),
        ];
        let mut bound = pod("bound");
        bound.spec.as_mut().expect("spec").node_name = Some("a".into());
        bound.spec.as_mut().expect("spec").containers = vec![container("1", "1Gi")];
        let mut done = bound.clone();
        done.metadata.uid = Some("done".into());
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let mut assumed_pod = pod("assumed");
        assumed_pod.metadata.uid = Some("u-assumed".into());
        assumed_pod.spec.as_mut().expect("spec").containers = vec![container("2", "0")];
        let assumed = [("u-assumed".to_string(), "b".to_string())].into();
        let pods = vec![Arc::new(bound), Arc::new(done), Arc::new(assumed_pod)];
        let s = Snapshot::new(&nodes, &pods, &assumed);
        assert_eq!(s.nodes[0].name(), "a");
        assert_eq!(s.nodes[0].requested.milli_cpu, 1000);
        assert_eq!(s.nodes[0].pods, 1);
        assert_eq!(s.nodes[1].requested.milli_cpu, 2000);
    }
}
