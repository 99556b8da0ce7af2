//! Builders for the pods and nodes the unit tests schedule.

use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

pub fn container(cpu: &str, memory: &str) -> Container {
    Container {
        name: "c".into(),
        resources: Some(ResourceRequirements {
            requests: Some(
                [("cpu", cpu), ("memory", memory)]
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn node(name: &str, cpu: &str, memory: &str) -> Node {
    let resources = [("cpu", cpu), ("memory", memory), ("pods", "110")]
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            ..Default::default()
        }),
    }
}
