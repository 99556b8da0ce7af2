//! The vocabulary of Deployments that has no I/O: the annotations and condition reasons
//! `kubectl` reads, surge and unavailability from percentages, revisions, template equality
//! that ignores the `pod-template-hash` label, and condition bookkeeping.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::Error;
use crate::pods::TEMPLATE_HASH_LABEL;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Upstream caps revision-history at this many characters.
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// Annotations that belong to the ReplicaSet (or to kubectl) and are never copied from the
/// Deployment.
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS
    ) || key.starts_with("deprecated.deployment.rollback.to")
}

/// `spec.replicas`, which the API server defaults to 1.
pub fn desired(spec: &DeploymentSpec) -> i32 {
    spec.replicas.unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn set_rs_replicas(rs: &mut ReplicaSet, replicas: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
}

pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// `status.availableReplicas` as the ReplicaSet reports it.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// What may be counted on as available after the ReplicaSet controller catches up: never
/// more than `spec.replicas`. A ReplicaSet just scaled down still reports the pods it is
/// about to delete; counting them would let a rolling update take away more than
/// maxUnavailable allows.
pub fn rs_dependable(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

pub fn is_rolling(spec: &DeploymentSpec) -> bool {
    spec.strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// An int-or-percent resolved against `total`; percentages round up or down.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, Error> {
    match value {
        IntOrString::Int(v) => Ok(*v),
        IntOrString::String(s) => {
            let percent = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(|| Error::Invalid(format!("invalid int-or-percent value {s:?}")))?;
            let scaled = i64::from(total) * percent;
            let value = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(value)
                .map_err(|_| Error::Invalid(format!("int-or-percent value {s:?} out of range")))
        }
    }
}

/// maxSurge and maxUnavailable of a rolling update for `desired` replicas: surge rounds up,
/// unavailability down, and both 0 would deadlock, so unavailability becomes 1.
pub fn fenceposts(spec: &DeploymentSpec) -> Result<(i32, i32), Error> {
    let desired = desired(spec);
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&quarter);
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&quarter);
    let surge = scaled_value(surge, desired, true)?;
    let unavailable = scaled_value(unavailable, desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

pub fn max_surge(spec: &DeploymentSpec) -> Result<i32, Error> {
    if !is_rolling(spec) {
        return Ok(0);
    }
    Ok(fenceposts(spec)?.0)
}

/// maxUnavailable, never more than the desired replicas.
pub fn max_unavailable(spec: &DeploymentSpec) -> Result<i32, Error> {
    if !is_rolling(spec) || desired(spec) == 0 {
        return Ok(0);
    }
    Ok(fenceposts(spec)?.1.min(desired(spec)))
}

/// The revision annotation as a number; absent or unparsable counts as 0.
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(rs, key).and_then(|v| v.parse().ok())
}

pub fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS)
}

pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, MAX_REPLICAS)
}

/// Sets desired-replicas and max-replicas; true when either changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

/// Copies the Deployment's annotations (all but the skipped ones) to the ReplicaSet; true when
/// any changed. Annotations removed from the Deployment stay on the ReplicaSet, as upstream.
fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if skip_copy(key) || annotations.get(key) == Some(value) {
            continue;
        }
        annotations.insert(key.clone(), value.clone());
        changed = true;
    }
    changed
}

/// The annotations of the new ReplicaSet: the Deployment's, a revision of at least
/// `new_revision` (a ReplicaSet that becomes new again remembers its earlier revisions in
/// revision-history), and, for one about to be created, the replica annotations.
pub fn set_new_rs_annotations(
    d: &Deployment,
    spec: &DeploymentSpec,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> Result<bool, Error> {
    let mut changed = copy_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    let old = annotations.get(REVISION).cloned();
    let old_number = match old.as_deref() {
        None | Some("") => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(n) => n,
            // Not ours to repair: leave the annotations as they are.
            Err(_) => return Ok(changed),
        },
    };
    if old_number < new_revision {
        annotations.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            let mut entries: Vec<&str> = history.split(',').filter(|e| !e.is_empty()).collect();
            entries.push(&old);
            // Drop the oldest entries until the list fits.
            while entries.len() > 1 && entries.join(",").len() > MAX_REVISION_HISTORY_CHARS {
                entries.remove(0);
            }
            let joined = entries.join(",");
            annotations.insert(REVISION_HISTORY.to_string(), joined);
        }
    }
    if !exists {
        let desired = desired(spec);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge(spec)?);
    }
    Ok(changed)
}

/// The template as JSON without the hash label and without empty values, so that a nil and an
/// empty map compare equal (as Kubernetes' semantic equality has it).
fn comparable(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    prune(&mut value);
    value
}

fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune(v);
            }
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Two templates are the same apart from the `pod-template-hash` label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    comparable(a) == comparable(b)
}

/// Oldest first; ties by name (upstream's ReplicaSetsByCreationTimestamp). A ReplicaSet not
/// created yet is the newest.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let created = |rs: &ReplicaSet| {
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::MAX, |t| t.0)
    };
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Lowest revision first, then oldest.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a)
        .cmp(&revision(b))
        .then_with(|| by_creation(a, b))
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition unless one with the same status and reason is there; a condition whose
/// status does not change keeps its transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = condition_of(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_.clone());
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

fn condition_of<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    condition(status, type_)
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// A deadline is set and is not "never" (MaxInt32).
pub fn progress_deadline(spec: &DeploymentSpec) -> Option<i32> {
    spec.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

/// Every replica is updated and available and the status describes the current spec.
pub fn complete(d: &Deployment, spec: &DeploymentSpec, status: &DeploymentStatus) -> bool {
    let want = desired(spec);
    status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// The new status shows progress over the old: more updated, ready or available replicas,
/// or fewer old ones.
pub fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// No progress was reported within the deadline since the Progressing condition was last
/// updated.
pub fn timed_out(spec: &DeploymentSpec, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(spec) else {
        return false;
    };
    let Some(condition) = condition(status, PROGRESSING) else {
        return false;
    };
    match condition.reason.as_deref() {
        // A finished rollout has nothing to time out (until the template changes).
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => condition
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rolling(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> DeploymentSpec {
        DeploymentSpec {
            replicas: Some(replicas),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn surge_rounds_up_unavailable_rounds_down_and_both_zero_means_one_unavailable() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(
            fenceposts(&rolling(3, pct("25%"), pct("25%"))).unwrap(),
            (1, 0)
        );
        assert_eq!(
            fenceposts(&rolling(10, pct("25%"), pct("25%"))).unwrap(),
            (3, 2)
        );
        assert_eq!(
            fenceposts(&rolling(3, IntOrString::Int(0), IntOrString::Int(0))).unwrap(),
            (0, 1)
        );
        assert_eq!(
            fenceposts(&rolling(3, IntOrString::Int(2), pct("50%"))).unwrap(),
            (2, 1)
        );
        assert_eq!(
            max_unavailable(&rolling(2, pct("0%"), IntOrString::Int(5))).unwrap(),
            2
        );
        assert!(fenceposts(&rolling(3, pct("x"), pct("25%"))).is_err());
        let recreate = DeploymentSpec {
            replicas: Some(3),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            ..Default::default()
        };
        assert_eq!(max_surge(&recreate).unwrap(), 0);
        assert_eq!(max_unavailable(&recreate).unwrap(), 0);
    }

    #[test]
    fn templates_compare_without_the_hash_label_and_empty_values() {
        let labels = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: labels(&[("app", "web")]),
                annotations: Some(Default::default()),
                ..Default::default()
            }),
            spec: None,
        };
        let b = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: labels(&[("app", "web"), (TEMPLATE_HASH_LABEL, "abc")]),
                ..Default::default()
            }),
            spec: None,
        };
        assert!(equal_ignore_hash(&a, &b));
        let c = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: labels(&[("app", "db")]),
                ..Default::default()
            }),
            spec: None,
        };
        assert!(!equal_ignore_hash(&a, &c));
    }

    #[test]
    fn a_replica_set_that_becomes_new_again_keeps_its_old_revisions() {
        let d = Deployment {
            metadata: ObjectMeta {
                annotations: Some(
                    [
                        ("kubernetes.io/change-cause".to_string(), "v1".to_string()),
                        (LAST_APPLIED.to_string(), "{}".to_string()),
                        (REVISION.to_string(), "9".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = rolling(3, IntOrString::Int(1), IntOrString::Int(0));
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(&d, &spec, &mut rs, 1, false).unwrap());
        assert_eq!(annotation(&rs, REVISION), Some("1"));
        assert_eq!(annotation(&rs, "kubernetes.io/change-cause"), Some("v1"));
        assert_eq!(annotation(&rs, LAST_APPLIED), None);
        assert_eq!(annotation(&rs, DESIRED_REPLICAS), Some("3"));
        assert_eq!(annotation(&rs, MAX_REPLICAS), Some("4"));
        assert_eq!(annotation(&rs, REVISION_HISTORY), None);
        assert!(!set_new_rs_annotations(&d, &spec, &mut rs, 1, true).unwrap());
        assert!(set_new_rs_annotations(&d, &spec, &mut rs, 3, true).unwrap());
        assert!(set_new_rs_annotations(&d, &spec, &mut rs, 5, true).unwrap());
        assert_eq!(annotation(&rs, REVISION), Some("5"));
        assert_eq!(annotation(&rs, REVISION_HISTORY), Some("1,3"));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_their_status_holds() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", NEW_RS_CREATED, "a".into(), t(10)),
        );
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", NEW_RS_CREATED, "b".into(), t(20)),
        );
        let c = condition(&status, PROGRESSING).unwrap();
        assert_eq!(c.message.as_deref(), Some("a"), "same reason: unchanged");
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "True", RS_UPDATED, "c".into(), t(30)),
        );
        let c = condition(&status, PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time.as_ref().unwrap().0, t(10));
        assert_eq!(c.last_update_time.as_ref().unwrap().0, t(30));
        set_condition(
            &mut status,
            new_condition(PROGRESSING, "False", TIMED_OUT, "d".into(), t(40)),
        );
        let c = condition(&status, PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time.as_ref().unwrap().0, t(40));
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
    }
}
