//! Which pods a ReplicaSet deletes first when it scales down: upstream's `ActivePodsWithRanks`
//! order, with the `PodDeletionCost` and `LogarithmicScaleDown` behaviour that is on by default
//! in Kubernetes. The pods that matter least come first: not yet scheduled, not yet running,
//! not ready, cheap to delete, doubled up on a node, recently ready, restarting, young.

use std::cmp::Reverse;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::pods;

/// The annotation by which a user says which pods to delete first (lower first).
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// `pods` ordered for deletion, first victim first. `related` are the active pods whose
/// placement counts for "doubled up" (the ReplicaSet's own and its siblings').
pub fn victims<'a>(pods: &[&'a Pod], related: &[&Pod], now: Timestamp) -> Vec<&'a Pod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| pods::is_active(p)) {
        *on_node.entry(node_of(pod)).or_default() += 1;
    }
    let mut ranked: Vec<(Rank<'a>, &'a Pod)> = pods
        .iter()
        .map(|p| {
            let colocated = on_node.get(node_of(p)).copied().unwrap_or(0);
            (Rank::of(p, colocated, now), *p)
        })
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    ranked.into_iter().map(|(_, p)| p).collect()
}

/// A pod's place in the deletion order, compared field by field (smaller goes first).
///
/// Upstream compares pairs with a function that is not a total order (two ready times in one
/// age bucket compare by uid, two equal ones fall through to restarts), which Go's sort
/// tolerates and Rust's refuses; a key per pod is a total order by construction and keeps
/// upstream's priorities: unassigned, phase, not ready, deletion cost, doubled up, recently
/// ready (by power-of-two age bucket), restarts, young (by bucket), then uid.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'a> {
    assigned: bool,
    phase: u8,
    ready: bool,
    cost: i32,
    more_colocated: Reverse<usize>,
    /// The age bucket of the Ready transition for ready pods (unknown first); equal for all
    /// pods that are not ready.
    ready_age: i64,
    more_restarts: Reverse<i32>,
    created_age: i64,
    uid: Option<&'a str>,
}

impl<'a> Rank<'a> {
    fn of(pod: &'a Pod, colocated: usize, now: Timestamp) -> Rank<'a> {
        let ready = pods::is_ready(pod);
        Rank {
            assigned: !node_of(pod).is_empty(),
            phase: phase_ordinal(pod),
            ready,
            cost: deletion_cost(pod),
            more_colocated: Reverse(colocated),
            ready_age: if ready {
                age_bucket(ready_since(pod), now)
            } else {
                i64::MIN
            },
            more_restarts: Reverse(max_restarts(pod)),
            created_age: age_bucket(created(pod), now),
            uid: pod.metadata.uid.as_deref(),
        }
    }
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// floor(log2(age in nanoseconds)): times in one power-of-two age bucket count as equal, so
/// scale-down prefers young pods without always taking the very newest (which would keep the
/// oldest forever). -1 for a time not in the past, -2 for an unknown one (both sort first).
fn age_bucket(time: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(time) = time else {
        return -2;
    };
    let age = now.as_nanosecond() - time.as_nanosecond();
    if age <= 0 {
        -1
    } else {
        i64::from(127 - age.leading_zeros())
    }
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    // Validation rejects a cost that is not an int32, so a bad one cannot reach here from
    // the API server; treat it as the default.
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicaset::testing::{pod, ready, running, t};

    fn names<'a>(pods: &[&'a Pod]) -> Vec<&'a str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect()
    }

    fn on_node(mut p: Pod) -> Pod {
        p.spec.get_or_insert_with(Default::default).node_name = Some("node".into());
        p
    }

    #[test]
    fn unassigned_pending_and_unready_pods_go_first() {
        let now = t(100_000);
        let unassigned = pod("unassigned", 10);
        let mut pending = on_node(pod("pending", 10));
        pending.status.get_or_insert_with(Default::default).phase = Some("Pending".into());
        let unready = running(on_node(pod("unready", 10)));
        let ready_pod = ready(running(on_node(pod("ready", 10))), 20);
        let all = [&ready_pod, &unready, &pending, &unassigned];
        assert_eq!(
            names(&victims(&all, &all, now)),
            ["unassigned", "pending", "unready", "ready"]
        );
    }

    #[test]
    fn recently_ready_restarting_and_newer_pods_go_first() {
        let now = t(100_000);
        // Ready at very different times: the more recently ready goes first.
        let old_ready = ready(running(on_node(pod("old-ready", 10))), 20);
        let new_ready = ready(running(on_node(pod("new-ready", 10))), 99_990);
        let all = [&old_ready, &new_ready];
        assert_eq!(names(&victims(&all, &all, now)), ["new-ready", "old-ready"]);

        // Same readiness: more restarts first, then newer first.
        let mut restarts = running(on_node(pod("restarts", 10)));
        restarts
            .status
            .get_or_insert_with(Default::default)
            .container_statuses = Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
            restart_count: 3,
            ..Default::default()
        }]);
        let old = running(on_node(pod("old", 10)));
        let young = running(on_node(pod("young", 99_000)));
        let all = [&old, &young, &restarts];
        assert_eq!(
            names(&victims(&all, &all, now)),
            ["restarts", "young", "old"]
        );
    }

    #[test]
    fn deletion_cost_and_doubling_up_rank_before_age() {
        let now = t(100_000);
        let mut cheap = running(on_node(pod("cheap", 10)));
        cheap.metadata.annotations = Some([(DELETION_COST.to_string(), "-5".to_string())].into());
        let young = running(on_node(pod("young", 99_000)));
        let all = [&young, &cheap];
        assert_eq!(names(&victims(&all, &all, now)), ["cheap", "young"]);

        let mut alone = running(pod("alone", 10));
        alone.spec.get_or_insert_with(Default::default).node_name = Some("other".into());
        let crowded = running(on_node(pod("crowded", 10)));
        let sibling = running(on_node(pod("sibling", 10)));
        let mine = [&alone, &crowded];
        let related = [&alone, &crowded, &sibling];
        assert_eq!(names(&victims(&mine, &related, now)), ["crowded", "alone"]);
    }

    #[test]
    fn times_in_one_age_bucket_are_ordered_by_uid() {
        let now = t(100_000);
        assert_eq!(age_bucket(Some(t(100_000)), now), -1);
        assert_eq!(age_bucket(None, now), -2);
        // 1000 s and 1001 s old: the same power of two of nanoseconds.
        let mut a = running(on_node(pod("a", 99_000)));
        let mut b = running(on_node(pod("b", 98_999)));
        a.metadata.uid = Some("2".into());
        b.metadata.uid = Some("1".into());
        let all = [&a, &b];
        assert_eq!(names(&victims(&all, &all, now)), ["b", "a"]);
    }

    proptest::proptest! {
        /// Any mix of pods sorts without panicking, and the order is the same whatever order
        /// the pods came in (a total order).
        #[test]
        fn the_order_is_total(specs in proptest::collection::vec(
            (0u8..3, proptest::option::of(0i64..100_000), 0i64..100_000, 0i32..3, proptest::bool::ANY, 0u8..4),
            1..40,
        )) {
            let now = t(100_000);
            let pods: Vec<Pod> = specs
                .iter()
                .enumerate()
                .map(|(i, (phase, ready_at, created_at, restarts, assigned, uid))| {
                    let mut p = pod(&format!("p{i}"), *created_at);
                    p.metadata.uid = Some(format!("u{uid}"));
                    if *assigned {
                        p = on_node(p);
                    }
                    let status = p.status.get_or_insert_with(Default::default);
                    status.phase = Some(["Pending", "Running", "Unknown"][usize::from(*phase)].into());
                    status.container_statuses = Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                        restart_count: *restarts,
                        ..Default::default()
                    }]);
                    match ready_at {
                        Some(at) => ready(p, *at),
                        None => p,
                    }
                })
                .collect();
            let forward: Vec<&Pod> = pods.iter().collect();
            let backward: Vec<&Pod> = pods.iter().rev().collect();
            fn ranks<'a>(order: &[&'a Pod], now: Timestamp) -> Vec<Rank<'a>> {
                victims(order, &[], now)
                    .into_iter()
                    .map(|p| Rank::of(p, 0, now))
                    .collect()
            }
            let (a, b) = (ranks(&forward, now), ranks(&backward, now));
            proptest::prop_assert!(a.windows(2).all(|w| w[0] <= w[1]));
            proptest::prop_assert_eq!(a, b);
        }
    }
}
