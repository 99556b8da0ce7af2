//! What several controllers ask of pods and owners: is a pod active, ready, available; which
//! object controls it; how a controller's selector reads; and the `pod-template-hash` a
//! Deployment gives each template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use crate::Error;

/// A pod that counts towards its controller's replicas: not finished and not being deleted
/// (upstream's `controller.IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod's Ready condition last turned True, if it is True now.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (condition.status == "True").then(|| condition.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's `podutil.IsPodAvailable`). A
/// Ready condition without a transition time counts as ready since forever.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// How long until a pod that is ready but not yet available becomes available, so a
/// controller can requeue for that moment instead of polling.
pub fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let Some(Some(since)) = ready_since(pod) else {
        return None;
    };
    let due = since.as_second() + i64::from(min_ready_seconds);
    let left = due - now.as_second();
    (left > 0).then(|| std::time::Duration::from_secs(left as u64))
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The reference a controller puts on what it creates or adopts: `controller: true` and
/// `blockOwnerDeletion: true`, so foreground deletion of the owner waits for it.
pub fn controller_reference(
    owner: &ObjectMeta,
    api_version: &str,
    kind: &str,
) -> Result<OwnerReference, Error> {
    let name = owner
        .name
        .clone()
        .ok_or_else(|| Error::Incomplete(kind.to_string(), "metadata.name"))?;
    let uid = owner
        .uid
        .clone()
        .ok_or_else(|| Error::Incomplete(format!("{kind} {name}"), "metadata.uid"))?;
    Ok(OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// A workload's `spec.selector` as something that matches labels. A missing selector matches
/// nothing (upstream treats a nil selector so); an invalid one is an error naming `object`.
pub fn selector(
    selector: Option<&LabelSelector>,
    object: &str,
) -> Result<Option<berth_api::selectors::LabelSelector>, Error> {
    let Some(selector) = selector else {
        return Ok(None);
    };
    berth_api::selectors::LabelSelector::from_k8s(selector)
        .map(Some)
        .map_err(|e| Error::Selector {
            object: object.to_string(),
            message: e.to_string(),
        })
}

/// True when `selector` (as returned by [`selector`]) selects `labels`.
pub fn selects(
    selector: &Option<berth_api::selectors::LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    selector
        .as_ref()
        .is_some_and(|s| s.matches(labels.unwrap_or(&empty)))
}

/// The label a Deployment puts on its ReplicaSets, their selectors and their pods.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The `pod-template-hash` of a template: FNV-1a (32 bits) over the template, then over the
/// collision count when there is one, printed in decimal and spelled in the alphabet
/// Kubernetes uses for generated names (no vowels, so no words). Upstream hashes Go's
/// printed form of the struct, which no other language reproduces; the value only has to be
/// stable for one template and differ between templates, and this one is.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    // Serializing a k8s-openapi struct is deterministic: fields in declaration order, maps
    // sorted (BTreeMap).
    write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(count) = collision_count {
        write(&(count as u32).to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|digit| char::from(ALPHABET[usize::from(digit) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: &str, ready: Option<(&str, i64)>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.map(|(status, at)| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        last_transition_time: Some(Time(
                            Timestamp::from_second(at).expect("valid time"),
                        )),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn availability_waits_min_ready_seconds_after_ready() {
        let now = Timestamp::from_second(1_000).expect("valid time");
        let ready_at_990 = pod("Running", Some(("True", 990)));
        assert!(is_available(&ready_at_990, 0, now));
        assert!(is_available(&ready_at_990, 10, now));
        assert!(!is_available(&ready_at_990, 11, now));
        assert_eq!(
            until_available(&ready_at_990, 15, now),
            Some(std::time::Duration::from_secs(5))
        );
        assert!(!is_available(&pod("Running", Some(("False", 1))), 0, now));
        assert!(!is_available(&pod("Pending", None), 0, now));
    }

    #[test]
    fn finished_or_deleted_pods_are_not_active() {
        assert!(is_active(&pod("Running", None)));
        assert!(is_active(&pod("Pending", None)));
        assert!(!is_active(&pod("Succeeded", None)));
        assert!(!is_active(&pod("Failed", None)));
        let mut deleting = pod("Running", None);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(!is_active(&deleting));
    }

    #[test]
    fn template_hashes_are_stable_differ_by_template_and_collision_count() {
        let mut template = PodTemplateSpec {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        let first = template_hash(&template, None);
        assert_eq!(first, template_hash(&template, None));
        assert_ne!(first, template_hash(&template, Some(1)));
        assert!(
            first
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        template.metadata = Some(ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        });
        assert_ne!(first, template_hash(&template, None));
    }

    #[test]
    fn a_missing_selector_selects_nothing() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert!(!selects(
            &selector(None, "rs").expect("no selector"),
            Some(&labels)
        ));
        let web = LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        };
        let web = selector(Some(&web), "rs").expect("valid selector");
        assert!(selects(&web, Some(&labels)));
        assert!(!selects(&web, None));
    }
}
