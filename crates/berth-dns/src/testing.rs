//! Kubernetes objects for the unit tests, written as the API server would serve them.

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use crate::index::{Index, IndexOptions};
use crate::name::Domain;

pub fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

pub fn service(namespace: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .unwrap()
}

/// A slice of `service` with `endpoints` (the API's shape) and `ports`.
pub fn slice(
    namespace: &str,
    service: &str,
    name: &str,
    endpoints: Value,
    ports: Value,
) -> EndpointSlice {
    let address_type = if endpoints.to_string().contains(':') {
        "IPv6"
    } else {
        "IPv4"
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}

/// A small cluster with one of everything the lookups tell apart.
pub fn cluster() -> (Vec<Namespace>, Vec<Service>, Vec<EndpointSlice>) {
    let namespaces = ["default", "db", "empty"].map(namespace).to_vec();
    let services = vec![
        service(
            "default",
            "web",
            json!({
                "type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ],
            }),
        ),
        service(
            "default",
            "dual",
            json!({
                "clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21", "fd00:96::21"],
                "ports": [{"name": "http", "port": 80}],
            }),
        ),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
        service(
            "default",
            "alias",
            json!({
                "type": "ExternalName", "externalName": "web.default.svc.cluster.local",
            }),
        ),
        service(
            "default",
            "ipext",
            json!({"type": "ExternalName", "externalName": "1.2.3.4"}),
        ),
        service(
            "db",
            "pg",
            json!({
                "clusterIP": "None", "ports": [{"name": "pg", "port": 5432}],
            }),
        ),
        service(
            "db",
            "pg-all",
            json!({
                "clusterIP": "None", "publishNotReadyAddresses": true,
                "ports": [{"name": "pg", "port": 5432}],
            }),
        ),
        service(
            "db",
            "nobody",
            json!({
                "clusterIP": "None", "ports": [{"name": "pg", "port": 5432}],
            }),
        ),
        service("db", "v6", json!({"clusterIP": "None"})),
    ];
    let slices = vec![
        slice(
            "db",
            "pg",
            "pg-abc",
            json!([
                {"addresses": ["10.244.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "hostname": "pg-1", "conditions": {"ready": false}},
                {"addresses": ["10.244.0.7"]},
            ]),
            json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        ),
        slice(
            "db",
            "pg-all",
            "pg-all-abc",
            json!([
                {"addresses": ["10.244.1.5"], "hostname": "x", "conditions": {"ready": false}},
            ]),
            json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        ),
        slice(
            "db",
            "v6",
            "v6-abc",
            json!([{"addresses": ["fd00:244::9"]}]),
            json!([]),
        ),
        // The slice of web (not headless): its endpoints still have names and PTRs.
        slice(
            "default",
            "web",
            "web-abc",
            json!([
                {"addresses": ["10.244.2.1"], "conditions": {"ready": true}},
            ]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        ),
    ];
    (namespaces, services, slices)
}

pub fn index() -> Index {
    let (namespaces, services, slices) = cluster();
    Index::build(
        &IndexOptions::new(Domain::new("cluster.local").unwrap()),
        &namespaces,
        &services,
        &slices,
    )
}
