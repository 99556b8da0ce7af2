//! The ReplicaSet controller's decisions, without I/O: which pods it claims, adopts and
//! releases, how many pods to create or which to delete, and what its status says. The
//! reconcile in the parent module reads the caches, calls these, and carries out the answer.

use std::collections::BTreeMap;

use berth_api::selectors::LabelSelector;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::rank;
use crate::Error;
use crate::claim::Claims;
use crate::pods;

/// At most this many pods are created or deleted in one reconcile (upstream's
/// `BurstReplicas`), so one huge ReplicaSet cannot monopolise the API server.
pub const BURST_REPLICAS: usize = 500;

/// The first slow-start batch; each later one doubles (`SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH: usize = 1;

/// The condition type that reports failed pod creations or deletions.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Sorts `pods` (any namespace's; others are skipped) as upstream's `ClaimPods` does, over
/// the active pods only: finished or terminating pods are neither replicas nor adopted.
pub fn claim<'a>(
    rs: &ReplicaSet,
    selector: &Option<LabelSelector>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Claims<'a, Pod> {
    let active = pods.into_iter().filter(|p| pods::is_active(p));
    crate::claim::claim(&rs.metadata, selector, active)
}

/// What a reconcile does to the number of pods.
#[derive(Debug, PartialEq)]
pub enum Scale<'a> {
    /// The count is right.
    Hold,
    /// Create this many pods (at most [`BURST_REPLICAS`]), in [`slow_start`] batches.
    Create(usize),
    /// Delete these pods (at most [`BURST_REPLICAS`]), best victims first.
    Delete(Vec<&'a Pod>),
}

/// `spec.replicas` against the pods it has (`claimed`); `related` are the active pods of it
/// and its siblings, which decide who is doubled up on a node.
pub fn scale<'a>(
    rs: &ReplicaSet,
    claimed: &[&'a Pod],
    related: &[&Pod],
    now: Timestamp,
) -> Scale<'a> {
    let want = usize::try_from(desired_replicas(rs)).unwrap_or(0);
    let have = claimed.len();
    if have < want {
        Scale::Create((want - have).min(BURST_REPLICAS))
    } else if have > want {
        let count = (have - want).min(BURST_REPLICAS);
        let victims = if count < have {
            rank::victims(claimed, related, now)
        } else {
            claimed.to_vec()
        };
        Scale::Delete(victims.into_iter().take(count).collect())
    } else {
        Scale::Hold
    }
}

/// Batch sizes for creating `count` pods: 1, 2, 4, … until `count` is reached. A batch that
/// fails stops the rest, so a template the API server rejects costs one request, not 500.
pub fn slow_start(count: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let (mut left, mut size) = (count, SLOW_START_INITIAL_BATCH);
    while left > 0 {
        let batch = size.min(left);
        batches.push(batch);
        left -= batch;
        size = size.saturating_mul(2);
    }
    batches
}

/// `spec.replicas`, defaulted as the API server does.
pub fn desired_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Why creating or deleting pods failed, for the ReplicaFailure condition.
#[derive(Debug, Clone, PartialEq)]
pub struct ManageFailure {
    /// FailedCreate or FailedDelete.
    pub reason: &'static str,
    /// What the API server said.
    pub message: String,
}

impl ManageFailure {
    /// The failure a reconcile's error reports, if it is one of creating or deleting pods.
    pub fn of(error: &Error) -> Option<ManageFailure> {
        let reason = match error {
            Error::FailedCreate { .. } => "FailedCreate",
            Error::FailedDelete { .. } => "FailedDelete",
            _ => return None,
        };
        Some(ManageFailure {
            reason,
            message: error.message(),
        })
    }
}

/// The status the ReplicaSet should show for `claimed`. A failure adds a ReplicaFailure
/// condition unless one is already there; success removes it.
pub fn status(
    rs: &ReplicaSet,
    claimed: &[&Pod],
    failure: Option<&ManageFailure>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = min_ready_seconds(rs);
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(claimed.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p| has_all(p.metadata.labels.as_ref(), &template_labels));
    let ready = count(&|p| pods::is_ready(p));
    let available = count(&|p| pods::is_available(p, min_ready, now));

    let mut status = rs.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match failure {
        Some(failure) if !has_failure => {
            conditions.push(ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some(failure.reason.into()),
                message: Some(failure.message.clone()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        _ => {}
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.replicas = i32::try_from(claimed.len()).unwrap_or(i32::MAX);
    status.fully_labeled_replicas = Some(fully_labeled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.observed_generation = rs.metadata.generation;
    status
}

fn has_all(labels: Option<&BTreeMap<String, String>>, wanted: &BTreeMap<String, String>) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// True when `new` differs from what the ReplicaSet shows in what upstream compares
/// (counts, conditions, and whether this generation was observed), so an unchanged status
/// writes nothing.
pub fn status_changed(rs: &ReplicaSet, new: &ReplicaSetStatus) -> bool {
    let old = rs.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    old.replicas != new.replicas
        || n(old.fully_labeled_replicas) != n(new.fully_labeled_replicas)
        || n(old.ready_replicas) != n(new.ready_replicas)
        || n(old.available_replicas) != n(new.available_replicas)
        || old.observed_generation != rs.metadata.generation
        || old.conditions.unwrap_or_default() != new.conditions.clone().unwrap_or_default()
}

/// How long until the next of `claimed` that is ready but not yet available becomes
/// available, so the status can be refreshed then.
pub fn next_available(
    rs: &ReplicaSet,
    claimed: &[&Pod],
    now: Timestamp,
) -> Option<std::time::Duration> {
    let min_ready = min_ready_seconds(rs);
    claimed
        .iter()
        .filter_map(|p| pods::until_available(p, min_ready, now))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicaset::testing::*;

    fn names<'a>(pods: &[&'a Pod]) -> Vec<&'a str> {
        let mut names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect();
        names.sort_unstable();
        names
    }

    fn selector(rs: &ReplicaSet) -> Option<LabelSelector> {
        pods::selector(rs.spec.as_ref().map(|s| &s.selector), "rs").expect("valid selector")
    }

    #[test]
    fn claims_owned_adopts_matching_orphans_releases_mismatches_ignores_others() {
        let rs = replica_set(3);
        let mine = owned_by(pod("mine", 1), &rs);
        let mut relabelled = owned_by(pod("relabelled", 1), &rs);
        relabelled.metadata.labels = Some(labels(&[("app", "other")]));
        let orphan = pod("orphan", 1);
        let mut stranger = pod("stranger", 1);
        stranger.metadata.labels = Some(labels(&[("app", "other")]));
        let mut other_rs = replica_set(1);
        other_rs.metadata.uid = Some("other-uid".into());
        let theirs = owned_by(pod("theirs", 1), &other_rs);
        let mut finished = owned_by(pod("finished", 1), &rs);
        finished.status.get_or_insert_with(Default::default).phase = Some("Succeeded".into());
        let mut terminating_orphan = pod("terminating", 1);
        terminating_orphan.metadata.deletion_timestamp = Some(Time(t(5)));
        let mut elsewhere = pod("elsewhere", 1);
        elsewhere.metadata.namespace = Some("other".into());

        let all = [
            &mine,
            &relabelled,
            &orphan,
            &stranger,
            &theirs,
            &finished,
            &terminating_orphan,
            &elsewhere,
        ];
        let claim = claim(&rs, &selector(&rs), all);
        assert_eq!(names(&claim.owned), ["mine"]);
        assert_eq!(names(&claim.adopt), ["orphan"]);
        assert_eq!(names(&claim.release), ["relabelled"]);
    }

    #[test]
    fn a_replica_set_being_deleted_neither_adopts_nor_releases() {
        let mut rs = replica_set(3);
        rs.metadata.deletion_timestamp = Some(Time(t(5)));
        let mine = owned_by(pod("mine", 1), &rs);
        let mut relabelled = owned_by(pod("relabelled", 1), &rs);
        relabelled.metadata.labels = Some(labels(&[("app", "other")]));
        let orphan = pod("orphan", 1);
        let claim = super::claim(&rs, &selector(&rs), [&mine, &relabelled, &orphan]);
        assert_eq!(names(&claim.owned), ["mine"]);
        assert!(claim.adopt.is_empty() && claim.release.is_empty());
    }

    #[test]
    fn scales_up_by_the_shortfall_and_down_by_ranked_victims_within_the_burst() {
        let rs = replica_set(3);
        let now = t(100_000);
        let a = running(pod("a", 10));
        assert_eq!(scale(&rs, &[&a], &[&a], now), Scale::Create(2));
        assert_eq!(
            scale(&replica_set(2_000), &[], &[], now),
            Scale::Create(BURST_REPLICAS)
        );

        let ready_old = ready(running(pod("ready-old", 10)), 20);
        let ready_new = ready(running(pod("ready-new", 10)), 99_000);
        let pending = pod("pending", 10);
        let unready = running(pod("unready", 10));
        let claimed = [&ready_old, &pending, &ready_new, &unready];
        let Scale::Delete(victims) = scale(&replica_set(1), &claimed, &claimed, now) else {
            panic!("expected deletions");
        };
        let order: Vec<_> = victims
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(order, ["pending", "unready", "ready-new"]);
        assert_eq!(scale(&replica_set(4), &claimed, &claimed, now), Scale::Hold);
        let Scale::Delete(all) = scale(&replica_set(0), &claimed, &claimed, now) else {
            panic!("expected deletions");
        };
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn slow_start_doubles_batches_up_to_the_count() {
        assert_eq!(slow_start(0), Vec::<usize>::new());
        assert_eq!(slow_start(1), [1]);
        assert_eq!(slow_start(3), [1, 2]);
        assert_eq!(slow_start(10), [1, 2, 4, 3]);
        assert_eq!(slow_start(500).iter().sum::<usize>(), 500);
        assert_eq!(slow_start(500).len(), 9);
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let mut rs = replica_set(3);
        rs.spec.as_mut().expect("spec").min_ready_seconds = Some(30);
        let now = t(1_000);
        let mut full = ready(running(pod("full", 1)), 900);
        full.metadata.labels = Some(labels(&[("app", "web"), ("tier", "front")]));
        let just_ready = ready(running(pod("just-ready", 1)), 990);
        let unready = running(pod("unready", 1));
        let claimed = [&full, &just_ready, &unready];
        let status = status(&rs, &claimed, None, now);
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(1));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.conditions, None);
        assert_eq!(
            next_available(&rs, &claimed, now),
            Some(std::time::Duration::from_secs(20))
        );
        assert!(status_changed(&rs, &status));
        rs.status = Some(status.clone());
        assert!(!status_changed(&rs, &status));
        rs.metadata.generation = Some(3);
        assert!(status_changed(&rs, &status), "a new generation is observed");
    }

    #[test]
    fn a_failure_sets_replica_failure_once_and_success_removes_it() {
        let mut rs = replica_set(3);
        let failure = ManageFailure {
            reason: "FailedCreate",
            message: "pods \"web-x\" is invalid".into(),
        };
        let first = status(&rs, &[], Some(&failure), t(10));
        let conditions = first.conditions.clone().expect("a condition");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, REPLICA_FAILURE);
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].reason.as_deref(), Some("FailedCreate"));
        assert_eq!(
            conditions[0].message.as_deref(),
            Some("pods \"web-x\" is invalid")
        );
        rs.status = Some(first.clone());

        // Failing again keeps the first condition (and its transition time) as it is.
        let again = ManageFailure {
            reason: "FailedCreate",
            message: "another".into(),
        };
        let second = status(&rs, &[], Some(&again), t(20));
        assert_eq!(second.conditions, first.conditions);
        assert!(!status_changed(&rs, &second));

        let healed = status(&rs, &[], None, t(30));
        assert_eq!(healed.conditions, None);
        assert!(status_changed(&rs, &healed));

        let one = owned_by(pod("a", 1), &rs);
        let two = owned_by(pod("b", 1), &rs);
        let mut one_replica = replica_set(1);
        one_replica.status = None;
        let failure = ManageFailure {
            reason: "FailedDelete",
            message: "forbidden".into(),
        };
        let delete_failed = status(&one_replica, &[&one, &two], Some(&failure), t(10));
        assert_eq!(
            delete_failed.conditions.expect("a condition")[0]
                .reason
                .as_deref(),
            Some("FailedDelete")
        );
    }
}
