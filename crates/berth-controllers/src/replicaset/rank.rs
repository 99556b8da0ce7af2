//! Which pods a ReplicaSet deletes first when it scales down: upstream's `ActivePodsWithRanks`
//! order, with the `PodDeletionCost` and `LogarithmicScaleDown` behaviour that is on by default
//! in Kubernetes. The pods that matter least come first: not yet scheduled, not yet running,
//! not ready, cheap to delete, doubled up on a node, recently ready, restarting, young.

use std::cmp::Ordering;
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
    let mut ranked: Vec<(&Pod, usize)> = pods
        .iter()
        .map(|p| (*p, on_node.get(node_of(p)).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|a, b| compare(a, b, now));
    ranked.into_iter().map(|(p, _)| p).collect()
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// `Less` for deletion: `Ordering::Less` when `a` should go before `b`.
fn compare(a: &(&Pod, usize), b: &(&Pod, usize), now: Timestamp) -> Ordering {
    let ((a, a_rank), (b, b_rank)) = (*a, *b);
    let (a_node, b_node) = (node_of(a), node_of(b));
    if a_node != b_node && (a_node.is_empty() || b_node.is_empty()) {
        return if a_node.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let by_phase = phase_ordinal(a).cmp(&phase_ordinal(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (a_ready, b_ready) = (pods::is_ready(a), pods::is_ready(b));
    if a_ready != b_ready {
        return if a_ready {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    let by_cost = deletion_cost(a).cmp(&deletion_cost(b));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    // More colocated pods first: deleting those spreads the rest.
    if a_rank != b_rank {
        return b_rank.cmp(&a_rank);
    }
    if a_ready && b_ready {
        let (a_since, b_since) = (ready_since(a), ready_since(b));
        if a_since != b_since {
            return newer_first(a, a_since, b, b_since, now);
        }
    }
    let by_restarts = max_restarts(b).cmp(&max_restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let (a_created, b_created) = (created(a), created(b));
    if a_created != b_created {
        return newer_first(a, a_created, b, b_created, now);
    }
    Ordering::Equal
}

/// Newer (or unknown) times first. Times in the same power-of-two age bucket count as equal
/// and are ordered by uid instead, so scale-down does not always pick the very newest pods
/// (which would keep the oldest forever) while still preferring young ones.
fn newer_first(
    a: &Pod,
    a_time: Option<Timestamp>,
    b: &Pod,
    b_time: Option<Timestamp>,
    now: Timestamp,
) -> Ordering {
    let (Some(a_time), Some(b_time)) = (a_time, b_time) else {
        // An unknown time sorts before a known one.
        return match (a_time, b_time) {
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            _ => Ordering::Equal,
        };
    };
    let by_bucket = age_bucket(a_time, now).cmp(&age_bucket(b_time, now));
    if by_bucket != Ordering::Equal {
        return by_bucket;
    }
    a.metadata.uid.cmp(&b.metadata.uid)
}

/// floor(log2(age in nanoseconds)), or -1 for a time not in the past.
fn age_bucket(time: Timestamp, now: Timestamp) -> i64 {
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
        assert_eq!(age_bucket(t(100_000), now), -1);
        // 1000 s and 1001 s old: the same power of two of nanoseconds.
        let mut a = running(on_node(pod("a", 99_000)));
        let mut b = running(on_node(pod("b", 98_999)));
        a.metadata.uid = Some("2".into());
        b.metadata.uid = Some("1".into());
        let all = [&a, &b];
        assert_eq!(names(&victims(&all, &all, now)), ["b", "a"]);
    }
}
