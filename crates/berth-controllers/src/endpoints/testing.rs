//! Services and pods for the unit tests of both endpoint controllers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Service `name` in `ns` (uid `uid-<name>`) with a cluster IP, IPv4, selecting `selector`,
/// one port `http` 80 → 8080.
pub fn service(name: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels(selector)),
            cluster_ip: Some("10.96.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Service port `name` 80 → the container port named `target`.
pub fn named_port(name: &str, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: 80,
        target_port: Some(IntOrString::String(target.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// A running pod `name` in `ns` labelled app=web on node `node-1`, with IP 10.1.0.1, Ready
/// or not.
pub fn pod(name: &str, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(&[("app", "web")])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "main".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.0.1".into()),
            pod_ips: Some(vec![PodIP {
                ip: "10.1.0.1".into(),
            }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// `p` with the one IP `ip`.
pub fn with_ip(mut p: Pod, ip: &str) -> Pod {
    let status = p.status.get_or_insert_with(Default::default);
    status.pod_ip = Some(ip.into());
    status.pod_ips = Some(vec![PodIP { ip: ip.into() }]);
    p
}

/// `p` with a container port `name` = `number`.
pub fn with_port(mut p: Pod, name: &str, number: i32) -> Pod {
    let spec = p.spec.get_or_insert_with(Default::default);
    spec.containers[0]
        .ports
        .get_or_insert_with(Vec::new)
        .push(ContainerPort {
            name: Some(name.into()),
            container_port: number,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    p
}

/// `p` being deleted.
pub fn terminating(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    p
}
