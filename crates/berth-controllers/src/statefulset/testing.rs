//! StatefulSets, pods and claims for the unit tests.

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodCondition, PodSpec,
    PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::identity;

/// The revision name the test pods are labelled with unless a test says otherwise.
pub const V1: &str = "web-v1";

pub fn t(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("valid time")
}

/// StatefulSet `web` in `ns` (app=web, serviceName nginx, one claim template `www`),
/// OrderedReady, RollingUpdate with partition 0, Retain/Retain.
pub fn stateful_set(replicas: i32) -> StatefulSet {
    let labels = Some([("app".to_string(), "web".to_string())].into());
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("set-uid".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            },
            service_name: Some("nginx".into()),
            pod_management_policy: Some("OrderedReady".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some("busybox:test".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("www".into()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    ..Default::default()
                }),
                status: None,
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn with_policy(
    mut set: StatefulSet,
    delete_when_deleted: bool,
    delete_when_scaled: bool,
) -> StatefulSet {
    let word = |delete: bool| Some(if delete { "Delete" } else { "Retain" }.to_string());
    set.spec
        .as_mut()
        .expect("spec")
        .persistent_volume_claim_retention_policy =
        Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: word(delete_when_deleted),
            when_scaled: word(delete_when_scaled),
        });
    set
}

/// The set's pod of `ordinal` at revision [`V1`], as the API server has it just after
/// creation (Pending, uid `uid-web-<ordinal>`).
pub fn pod(set: &StatefulSet, ordinal: i32) -> Pod {
    let template = set.spec.as_ref().expect("spec").template.clone();
    let mut pod = identity::new_pod(set, &template, ordinal, V1).expect("pod");
    pod.metadata.uid = Some(format!("uid-web-{ordinal}"));
    pod.metadata.creation_timestamp = Some(Time(t(0)));
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    pod
}

pub fn at_revision(mut pod: Pod, revision: &str) -> Pod {
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(identity::REVISION_LABEL.into(), revision.into());
    pod
}

/// Running and Ready since `t(0)`.
pub fn ready(mut pod: Pod) -> Pod {
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase = Some("Running".into());
    status.conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: "True".into(),
        last_transition_time: Some(Time(t(0))),
        ..Default::default()
    }]);
    pod
}

pub fn running_not_ready(mut pod: Pod) -> Pod {
    pod.status.get_or_insert_with(Default::default).phase = Some("Running".into());
    pod
}

pub fn failed(mut pod: Pod) -> Pod {
    pod.status.get_or_insert_with(Default::default).phase = Some("Failed".into());
    pod
}

pub fn terminating(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(t(1)));
    pod
}

/// The claim of `ordinal`'s pod, as the API server has it (uid `uid-www-<ordinal>`).
pub fn claim(set: &StatefulSet, ordinal: i32) -> PersistentVolumeClaim {
    let (_, mut claim) = identity::claims_for(set, ordinal).remove(0);
    claim.metadata.uid = Some(format!("uid-www-{ordinal}"));
    claim.metadata.resource_version = Some("1".into());
    claim
}
