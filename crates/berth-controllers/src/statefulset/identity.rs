//! A StatefulSet pod's identity, without I/O: the ordinal in its name, the labels and
//! hostname it is given, the claims its volumeClaimTemplates give it, and whether a pod
//! still carries the identity and storage its name promises (upstream's
//! `stateful_set_utils.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{Error, pods};

/// The label naming the pod, so a Service can select one replica.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// `<parent>-<ordinal>` split, as upstream's `getParentNameAndOrdinal` (`(.*)-([0-9]+)$`):
/// `None` when the name does not end in a dash and a 32-bit ordinal.
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, digits.parse().ok()?))
}

/// The pod's ordinal, if its name has one.
pub fn ordinal(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?).map(|(_, o)| o)
}

/// A pod named `<set>-<ordinal>`: the only pods a StatefulSet claims.
pub fn is_member(set: &StatefulSet, pod: &Pod) -> bool {
    let (Some(set_name), Some(name)) = (set.metadata.name.as_deref(), &pod.metadata.name) else {
        return false;
    };
    parent_and_ordinal(name).is_some_and(|(parent, _)| parent == set_name)
}

/// `spec.ordinals.start` (0 when unset).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

/// `spec.replicas`, defaulted as the API server does.
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

/// The ordinals the set should have: `start .. start + replicas`.
pub fn ordinal_range(set: &StatefulSet) -> std::ops::Range<i32> {
    let start = start_ordinal(set);
    start..start.saturating_add(replicas(set))
}

/// `<set>-<ordinal>`.
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}",
        set.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `<template>-<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!(
        "{template}-{}-{ordinal}",
        set.metadata.name.as_deref().unwrap_or_default()
    )
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

/// The claims of the pod with `ordinal`, as (template name, claim), in template order: each
/// template's copy named `<template>-<set>-<ordinal>` in the set's namespace, labelled with the
/// set's matchLabels so they can be found again by selector (upstream's
/// `getPersistentVolumeClaims`). Owner references are the retention policy's
/// ([`super::retention`]).
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|template| {
            let template_name = template.metadata.name.clone().unwrap_or_default();
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&template_name, set, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            (template_name, claim)
        })
        .collect()
}

/// The pod with `ordinal` made from `template` (the template of the revision named
/// `revision`): the template's labels, annotations, finalizers and spec, named
/// `<set>-<ordinal>` with hostname = name and subdomain = serviceName, the identity labels,
/// each claim template's volume in place of a template volume of that name, controlled by
/// the set (upstream's `newVersionedStatefulSetPod`).
pub fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision: &str,
) -> Result<Pod, Error> {
    let meta = template.metadata.clone().unwrap_or_default();
    let name = pod_name(set, ordinal);
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    let claims = claims_for(set, ordinal);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template_name, claim)| Volume {
            name: template_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    volumes.extend(
        spec.volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claims.iter().any(|(t, _)| *t == v.name)),
    );
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![pods::controller_reference(
                &set.metadata,
                "apps/v1",
                "StatefulSet",
            )?]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The identity labels `pod` lacks or has wrong (empty when its identity matches; upstream's
/// `identityMatches` + `updateIdentity`). Name and namespace cannot drift: they are how the
/// pod was found.
pub fn identity_fix(pod: &Pod) -> BTreeMap<String, String> {
    let mut fix = BTreeMap::new();
    let (Some(name), Some(ordinal)) = (pod.metadata.name.as_deref(), ordinal(pod)) else {
        return fix;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    for (key, value) in [
        (POD_NAME_LABEL, name.to_string()),
        (POD_INDEX_LABEL, ordinal.to_string()),
    ] {
        if labels.get(key) != Some(&value) {
            fix.insert(key.to_string(), value);
        }
    }
    fix
}

/// The claims `pod` should mount that it does not (upstream's `storageMatches`). A pod's
/// volumes cannot change after creation, so a mismatch is only reported.
pub fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal(pod) else {
        return false;
    };
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    claims_for(set, ordinal).iter().all(|(template, claim)| {
        volumes.iter().any(|v| {
            v.name == *template
                && v.persistent_volume_claim.as_ref().map(|c| &c.claim_name)
                    == claim.metadata.name.as_ref()
        })
    })
}

/// The revision a pod was made from ("" when unlabelled).
pub fn pod_revision(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn names_split_into_parent_and_ordinal() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-x1"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-99999999999"), None);
    }

    #[test]
    fn membership_is_by_parent_name() {
        let set = stateful_set(2);
        assert!(is_member(&set, &pod(&set, 0)));
        let mut other = pod(&set, 0);
        other.metadata.name = Some("web-x-0".into());
        assert!(!is_member(&set, &other));
    }

    #[test]
    fn a_new_pod_has_the_identity_and_the_claims_of_its_ordinal() {
        let mut set = stateful_set(3);
        set.spec.as_mut().expect("spec").ordinals =
            Some(k8s_openapi::api::apps::v1::StatefulSetOrdinals { start: Some(5) });
        assert_eq!(ordinal_range(&set), 5..8);
        let template = set.spec.as_ref().expect("spec").template.clone();
        let pod = new_pod(&set, &template, 6, "web-abc").expect("pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-6"));
        let labels = pod.metadata.labels.clone().expect("labels");
        assert_eq!(labels[POD_NAME_LABEL], "web-6");
        assert_eq!(labels[POD_INDEX_LABEL], "6");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("web-6"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volume = &spec.volumes.as_ref().expect("volumes")[0];
        assert_eq!(volume.name, "www");
        assert_eq!(
            volume
                .persistent_volume_claim
                .as_ref()
                .expect("claim")
                .claim_name,
            "www-web-6"
        );
        assert!(storage_matches(&set, &pod));
        assert!(identity_fix(&pod).is_empty());
        let controller = pods::controller_of(&pod.metadata).expect("controller");
        assert_eq!(controller.kind, "StatefulSet");

        let claims = claims_for(&set, 6);
        assert_eq!(claims.len(), 1);
        let claim = &claims[0].1;
        assert_eq!(claim.metadata.name.as_deref(), Some("www-web-6"));
        assert_eq!(
            claim.metadata.labels.as_ref().expect("labels")["app"],
            "web"
        );
    }

    #[test]
    fn lost_identity_labels_are_restored() {
        let set = stateful_set(1);
        let mut pod = pod(&set, 0);
        pod.metadata
            .labels
            .as_mut()
            .expect("labels")
            .remove(POD_NAME_LABEL);
        let fix = identity_fix(&pod);
        assert_eq!(fix.get(POD_NAME_LABEL).map(String::as_str), Some("web-0"));
        assert_eq!(fix.len(), 1);
    }
}
