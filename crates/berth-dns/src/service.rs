//! The `kube-system/kube-dns` Service: what CoreDNS's manifest gives a k3s or kubeadm
//! cluster, so pods use `nameserver <service CIDR>.10` and tools that look for the cluster
//! DNS (`kubectl get svc -n kube-system kube-dns`) find it.
//!
//! The server runs in berth itself, not in a pod, so the Service has no selector: berth writes
//! its EndpointSlice and Endpoints, naming the address the server listens on, and the service
//! proxy carries port 53 (UDP and TCP) there.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";

/// The ports, named as CoreDNS's Service names them.
const PORTS: [(&str, &str); 2] = [("dns", "UDP"), ("dns-tcp", "TCP")];

fn metadata(name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(NAMESPACE.to_string()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    [("k8s-app", "kube-dns"), ("kubernetes.io/name", "CoreDNS")]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Service with `cluster_ip`.
pub fn service(cluster_ip: IpAddr) -> Service {
    Service {
        metadata: metadata(NAME, labels(&[])),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_string()),
            cluster_ips: Some(vec![cluster_ip.to_string()]),
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, protocol)| ServicePort {
                        name: Some(name.to_string()),
                        port: 53,
                        protocol: Some(protocol.to_string()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The EndpointSlice naming the server at `server`.
pub fn endpoint_slice(server: SocketAddr) -> EndpointSlice {
    EndpointSlice {
        metadata: metadata(
            NAME,
            labels(&[
                ("kubernetes.io/service-name", NAME),
                ("endpointslice.kubernetes.io/managed-by", "berth"),
            ]),
        ),
        address_type: if server.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![server.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        }],
        ports: Some(
            PORTS
                .iter()
                .map(|(name, protocol)| SlicePort {
                    name: Some(name.to_string()),
                    port: Some(i32::from(server.port())),
                    protocol: Some(protocol.to_string()),
                    ..SlicePort::default()
                })
                .collect(),
        ),
    }
}

/// The legacy Endpoints naming the server at `server`.
pub fn endpoints(server: SocketAddr) -> Endpoints {
    Endpoints {
        metadata: metadata(NAME, labels(&[])),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: server.ip().to_string(),
                ..EndpointAddress::default()
            }]),
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, protocol)| EndpointPort {
                        name: Some(name.to_string()),
                        port: i32::from(server.port()),
                        protocol: Some(protocol.to_string()),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            ..EndpointSubset::default()
        }]),
    }
}

/// Makes the Service, its EndpointSlice and Endpoints what a server at `server` needs,
/// creating or replacing them. Fails if the Service exists with another cluster IP (a user's,
/// which berth leaves alone) or the address is taken.
pub async fn ensure(
    client: &Client,
    cluster_ip: IpAddr,
    server: SocketAddr,
) -> Result<(), kube::Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    match services.get_opt(NAME).await? {
        Some(existing) => {
            let ip = existing.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
            if ip != Some(cluster_ip.to_string().as_str()) {
                return Err(kube::Error::Service(
                    format!("{NAMESPACE}/{NAME} exists with the cluster IP {ip:?}").into(),
                ));
            }
        }
        None => {
            services
                .create(&PostParams::default(), &service(cluster_ip))
                .await?;
        }
    }
    put(
        Api::namespaced(client.clone(), NAMESPACE),
        endpoint_slice(server),
    )
    .await?;
    put(
        Api::namespaced(client.clone(), NAMESPACE),
        endpoints(server),
    )
    .await
}

/// Creates `object`, or replaces the one there (at its resourceVersion): once at start, so
/// an address changed by a new `--cluster-cidr` is corrected.
async fn put<K>(api: Api<K>, mut object: K) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &object).await?;
        }
        Some(current) => {
            object.meta_mut().resource_version = current.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &object).await?;
        }
    }
    Ok(())
}
