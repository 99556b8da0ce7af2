//! Pods and ReplicaSets for the unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::pods;

pub fn t(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("valid time")
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A pod in namespace `ns`, created at `created` seconds, labelled app=web, no owner.
pub fn pod(name: &str, created: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(&[("app", "web")])),
            creation_timestamp: Some(Time(t(created))),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus::default()),
    }
}

pub fn running(mut p: Pod) -> Pod {
    p.status.get_or_insert_with(Default::default).phase = Some("Running".into());
    p
}

/// Ready since `since` seconds.
pub fn ready(mut p: Pod, since: i64) -> Pod {
    p.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(t(since))),
            ..Default::default()
        });
    p
}

/// ReplicaSet `web` in `ns` selecting app=web, template labels app=web,tier=front.
pub fn replica_set(replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("rs-uid".into()),
            generation: Some(2),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", "web"), ("tier", "front")])),
                    ..Default::default()
                }),
                spec: Some(PodSpec::default()),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// `p` controlled by `rs`.
pub fn owned_by(mut p: Pod, rs: &ReplicaSet) -> Pod {
    let reference =
        pods::controller_reference(&rs.metadata, "apps/v1", "ReplicaSet").expect("named rs");
    p.metadata.owner_references = Some(vec![reference]);
    p
}
