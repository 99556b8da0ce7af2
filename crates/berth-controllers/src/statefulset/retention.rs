//! `persistentVolumeClaimRetentionPolicy` as owner references on the claims, without I/O
//! (upstream's `isClaimOwnerUpToDate` / `updateClaimOwnerRefForSetAndPod`). The StatefulSet
//! controller never deletes a claim itself: it makes the set (whenDeleted: Delete) or a
//! scaled-down pod (whenScaled: Delete) the claim's controller, and the garbage collector
//! deletes the claim once that owner is gone.
//!
//! | whenScaled / whenDeleted | claim of a pod in range | claim of a scaled-down pod |
//! |---|---|---|
//! | Retain / Retain | no reference | no reference |
//! | Retain / Delete | the set | the set |
//! | Delete / Retain | no reference | the pod |
//! | Delete / Delete | the set | the pod |

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::{Error, pods};

/// The set's policy: is each of whenDeleted and whenScaled `Delete`? Anything but `Delete`
/// (including a value this version does not know) retains, as upstream treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub delete_when_deleted: bool,
    pub delete_when_scaled: bool,
}

impl Policy {
    pub fn of(set: &StatefulSet) -> Policy {
        let policy = set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
        let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
        Policy {
            delete_when_deleted: delete(policy.and_then(|p| p.when_deleted.as_ref())),
            delete_when_scaled: delete(policy.and_then(|p| p.when_scaled.as_ref())),
        }
    }
}

fn refers_to(reference: &OwnerReference, kind: &str, api_version: &str, name: &str) -> bool {
    reference.kind == kind && reference.api_version == api_version && reference.name == name
}

/// A claim referring to a pod of this name with another uid than `pod_uid` (or to any pod of
/// this name when the pod does not exist yet) belongs to a pod that was scaled down: the
/// garbage collector is about to delete it, and a new pod must not mount it (upstream's
/// `PodClaimIsStale`). Only possible when whenScaled is Delete.
pub fn is_stale(claim: &PersistentVolumeClaim, pod_name: &str, pod_uid: Option<&str>) -> bool {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| refers_to(r, "Pod", "v1", pod_name) && pod_uid.is_none_or(|uid| r.uid != uid))
}

/// The owner references `claim` should carry for `pod` (in range or scaled down), or `None`
/// when it already does. References to anything else are kept; a claim that some other
/// controller controls keeps that controller and gets no reference from us.
pub fn owners_for(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &ObjectMeta,
    in_range: bool,
    policy: Policy,
) -> Result<Option<Vec<OwnerReference>>, Error> {
    let set_uid = set.metadata.uid.as_deref().unwrap_or_default();
    let pod_uid = pod.uid.as_deref().unwrap_or_default();
    let current = claim.metadata.owner_references.clone().unwrap_or_default();
    let ours = |r: &OwnerReference| r.uid == set_uid || (!pod_uid.is_empty() && r.uid == pod_uid);
    let mut wanted: Vec<OwnerReference> = current.iter().filter(|r| !ours(r)).cloned().collect();
    let foreign_controller = wanted.iter().any(|r| r.controller == Some(true));
    if !foreign_controller {
        let want_set = policy.delete_when_deleted && (in_range || !policy.delete_when_scaled);
        let want_pod = policy.delete_when_scaled && !in_range && !pod_uid.is_empty();
        if want_set {
            wanted.push(pods::controller_reference(
                &set.metadata,
                "apps/v1",
                "StatefulSet",
            )?);
        }
        if want_pod {
            wanted.push(pods::controller_reference(pod, "v1", "Pod")?);
        }
    }
    let same = wanted.len() == current.len() && wanted.iter().all(|w| current.contains(w));
    Ok((!same).then_some(wanted))
}

/// The owner references of a claim created for a pod in range.
pub fn owners_at_creation(set: &StatefulSet, policy: Policy) -> Result<Vec<OwnerReference>, Error> {
    Ok(if policy.delete_when_deleted {
        vec![pods::controller_reference(
            &set.metadata,
            "apps/v1",
            "StatefulSet",
        )?]
    } else {
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn kinds(refs: &[OwnerReference]) -> Vec<&str> {
        refs.iter().map(|r| r.kind.as_str()).collect()
    }

    #[test]
    fn each_policy_gives_its_owners_in_range_and_scaled_down() {
        let cases = [
            ((false, false), [vec![], vec![]]),
            ((true, false), [vec!["StatefulSet"], vec!["StatefulSet"]]),
            ((false, true), [vec![], vec!["Pod"]]),
            ((true, true), [vec!["StatefulSet"], vec!["Pod"]]),
        ];
        for ((when_deleted, when_scaled), [in_range, scaled_down]) in cases {
            let set = with_policy(stateful_set(1), when_deleted, when_scaled);
            let policy = Policy::of(&set);
            let pod = pod(&set, 0);
            let claim = claim(&set, 0);
            for (range, expected) in [(true, &in_range), (false, &scaled_down)] {
                let owners = owners_for(&claim, &set, &pod.metadata, range, policy)
                    .expect("owners")
                    .unwrap_or_default();
                assert_eq!(&kinds(&owners), expected, "{policy:?} in range {range}");
                let mut fixed = claim.clone();
                fixed.metadata.owner_references = Some(owners);
                assert_eq!(
                    owners_for(&fixed, &set, &pod.metadata, range, policy).expect("owners"),
                    None,
                    "fixing is idempotent"
                );
            }
        }
    }

    #[test]
    fn a_claim_left_by_a_scaled_down_pod_is_stale_for_its_successor() {
        let set = with_policy(stateful_set(1), false, true);
        let old = pod(&set, 0);
        let mut claim = claim(&set, 0);
        claim.metadata.owner_references =
            owners_for(&claim, &set, &old.metadata, false, Policy::of(&set)).expect("owners");
        assert!(is_stale(&claim, "web-0", None));
        assert!(!is_stale(&claim, "web-0", old.metadata.uid.as_deref()));
        assert!(!is_stale(&claim, "web-1", None));
    }
}
