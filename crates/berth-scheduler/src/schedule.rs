//! One scheduling decision, with no I/O: which pods the scheduler owns, which node a pod goes
//! to (filter, then score), and the "0/N nodes are available" message when none fits.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use crate::filter::Filter;
use crate::snapshot::{NodeInfo, Snapshot, pod_requests};

/// The scheduler name pods get by default; berth answers for it and for an empty name.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Is this pod waiting for this scheduler? Not bound, ours, not being deleted, not finished.
pub fn is_pending(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unbound = spec.node_name.as_deref().unwrap_or("").is_empty();
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("" | SCHEDULER_NAME)
    );
    unbound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && !crate::snapshot::is_terminated(pod)
}

/// Why no node fits: how many nodes there were and how many failed for each reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    /// kube-scheduler's `FitError.Error()`: "count reason" strings sorted as strings (which
    /// is by reason text whenever the counts have the same number of digits).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        parts.sort();
        write!(f, "0/{} nodes are available", self.nodes)?;
        if parts.is_empty() {
            write!(f, ".")
        } else {
            write!(f, ": {}.", parts.join(", "))
        }
    }
}

/// Runs every filter on every node and picks the feasible node with the most room left.
pub fn schedule(
    pod: &Pod,
    snapshot: &Snapshot,
    filters: &[Box<dyn Filter>],
) -> Result<String, FitError> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i64, &str)> = None;
    for node in &snapshot.nodes {
        let verdict = filters
            .iter()
            .try_for_each(|f| f.filter(pod, node, snapshot));
        match verdict {
            Err(failed) => {
                for reason in failed {
                    *reasons.entry(reason).or_default() += 1;
                }
            }
            Ok(()) => {
                let score = least_allocated(pod, node);
                // Nodes are sorted by name, so keeping the first of equal scores breaks ties
                // by name.
                if best.is_none_or(|(top, _)| score > top) {
                    best = Some((score, node.name()));
                }
            }
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_string()),
        None => Err(FitError {
            nodes: snapshot.nodes.len(),
            reasons,
        }),
    }
}

/// kube-scheduler's LeastAllocated score: the free fraction of CPU and memory after placing
/// the pod, 0–100 each, averaged.
pub fn least_allocated(pod: &Pod, node: &NodeInfo) -> i64 {
    let (allocatable, _) = node.allocatable();
    let want = pod_requests(pod);
    let free = |capacity: i64, used: i64, more: i64| {
        if capacity <= 0 {
            return 0;
        }
        let used = used.saturating_add(more);
        // i128: 100 × a large memory capacity overflows i64.
        (i128::from(capacity.saturating_sub(used).max(0)) * 100 / i128::from(capacity)) as i64
    };
    let cpu = free(
        allocatable.milli_cpu,
        node.requested.milli_cpu,
        want.milli_cpu,
    );
    let memory = free(allocatable.memory, node.requested.memory, want.memory);
    (cpu + memory) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::default_filters;
    use crate::testing::{container, node, pod};
    use k8s_openapi::api::core::v1::NodeSpec;
    use std::sync::Arc;

    fn snapshot(nodes: Vec<k8s_openapi::api::core::v1::Node>, bound: Vec<Pod>) -> Snapshot {
        let nodes: Vec<_> = nodes.into_iter().map(Arc::new).collect();
        let pods: Vec<_> = bound.into_iter().map(Arc::new).collect();
        Snapshot::new(&nodes, &pods, &Default::default())
    }

    #[test]
    fn message_counts_and_sorts_reasons_like_kubernetes() {
        let e = FitError {
            nodes: 3,
            reasons: [
                ("Insufficient memory".to_string(), 2),
                (
                    "node(s) didn't match Pod's node affinity/selector".to_string(),
                    1,
                ),
            ]
            .into(),
        };
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient memory."
        );
        let e = FitError {
            nodes: 2,
            reasons: [
                ("Insufficient cpu".to_string(), 2),
                ("Insufficient memory".to_string(), 2),
            ]
            .into(),
        };
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
        );
        let none = FitError {
            nodes: 0,
            reasons: BTreeMap::new(),
        };
        assert_eq!(none.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn picks_the_least_allocated_node_and_breaks_ties_by_name() {
        let mut busy = pod("busy");
        busy.spec.as_mut().expect("spec").node_name = Some("a".into());
        busy.spec.as_mut().expect("spec").containers = vec![container("1", "1Gi")];
        let s = snapshot(
            vec![
                node("b", "4", "4Gi"),
                node("a", "4", "4Gi"),
                node("c", "4", "4Gi"),
            ],
            vec![busy],
        );
        let mut p = pod("p");
        p.spec.as_mut().expect("spec").containers = vec![container("1", "1Gi")];
        assert_eq!(schedule(&p, &s, &default_filters()), Ok("b".to_string()));
    }

    #[test]
    fn no_fit_reports_the_first_failing_filter_per_node() {
        let mut cordoned = node("a", "1", "1Gi");
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let s = snapshot(
            vec![cordoned, node("b", "1", "1Gi"), node("c", "1", "1Gi")],
            vec![],
        );
        let mut p = pod("p");
        p.spec.as_mut().expect("spec").containers = vec![container("2", "2Gi")];
        let err = schedule(&p, &s, &default_filters()).expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn pending_means_unbound_ours_alive_and_unfinished() {
        let p = pod("p");
        assert!(is_pending(&p));
        let mut bound = p.clone();
        bound.spec.as_mut().expect("spec").node_name = Some("a".into());
        assert!(!is_pending(&bound));
        let mut other = p.clone();
        other.spec.as_mut().expect("spec").scheduler_name = Some("custom".into());
        assert!(!is_pending(&other));
        let mut named = p.clone();
        named.spec.as_mut().expect("spec").scheduler_name = Some(SCHEDULER_NAME.into());
        assert!(is_pending(&named));
        let mut deleting = p.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(!is_pending(&deleting));
        let mut failed = p;
        failed.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        assert!(!is_pending(&failed));
    }
}
