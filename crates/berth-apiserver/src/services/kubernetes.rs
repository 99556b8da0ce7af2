//! The `kubernetes` Service in `default`, through which in-cluster clients find the API server,
//! with the Endpoints and EndpointSlice behind it: what kube-apiserver's `kubernetesservice`
//! controller and its endpoint reconciler keep. They are written at every start, so a port or
//! address that changed since the last one is corrected.
//!
//! The Service takes the first address of the service CIDR (10.43.0.1 by default) and has one
//! port, `https` 443, whose target is the API server's port. The Endpoints and EndpointSlice
//! point at the address the API server listens on; they are written by the server itself,
//! without the validation clients get, because that address is usually the loopback address
//! that validation rightly refuses from clients (upstream refuses to start on one instead).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use berth_api::resources;
use serde_json::{Value, json};

use crate::registry::{Registry, Target, WriteOptions};
use crate::status::{ApiError, ApiResult};

pub const NAME: &str = "kubernetes";
pub const NAMESPACE: &str = "default";
/// The port of the `kubernetes` Service (`--kubernetes-service-port` … upstream's 443).
pub const SERVICE_PORT: u16 = 443;
/// The name of its one port, which clients such as kube-proxy and CoreDNS look for.
pub const PORT_NAME: &str = "https";

/// The address the Endpoints name for an API server listening on `listen`: the address
/// itself, or the loopback address when it listens on every address (as the admin
/// kubeconfig does).
pub fn endpoint_address(listen: SocketAddr) -> IpAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

fn lookup(group: &str, version: &str, plural: &str) -> ApiResult<&'static berth_api::ResourceInfo> {
    resources::lookup(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} resource")))
}

fn desired_ports(port: u16) -> Value {
    json!([{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP", "targetPort": port}])
}

/// Whether the stored Service's ports are the ones it should have (upstream's
/// `checkServiceFormat`: name, protocol, port, targetPort, and no node port).
fn ports_correct(service: &Value, port: u16) -> bool {
    let Some(ports) = service.pointer("/spec/ports").and_then(Value::as_array) else {
        return false;
    };
    let [only] = ports.as_slice() else {
        return false;
    };
    only.get("name").and_then(Value::as_str) == Some(PORT_NAME)
        && only
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            == "TCP"
        && only.get("port").and_then(Value::as_i64) == Some(i64::from(SERVICE_PORT))
        && only.get("targetPort").and_then(Value::as_i64) == Some(i64::from(port))
        && only.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0
}

/// Creates the `kubernetes` Service, Endpoints and EndpointSlice if they are missing and
/// corrects them if they are not what an API server at `listen` needs.
pub async fn ensure(
    registry: &Registry,
    cluster_ip: Ipv4Addr,
    listen: SocketAddr,
) -> ApiResult<()> {
    ensure_service(registry, cluster_ip, listen.port()).await?;
    let address = endpoint_address(listen);
    let port_entry = json!([{"name": PORT_NAME, "port": listen.port(), "protocol": "TCP"}]);
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            // Upstream's reconciler marks them so the mirroring controller leaves them alone:
            // it writes the EndpointSlice itself.
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}
        },
        "subsets": [{"addresses": [{"ip": address.to_string()}], "ports": port_entry}]
    });
    registry
        .ensure_system_object(lookup("", "v1", "endpoints")?, NAMESPACE, &endpoints)
        .await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": NAME}
        },
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": port_entry
    });
    registry
        .ensure_system_object(
            lookup("discovery.k8s.io", "v1", "endpointslices")?,
            NAMESPACE,
            &slice,
        )
        .await?;
    Ok(())
}

/// upstream's `CreateOrUpdateMasterServiceIfNeeded`: create with the first address of the
/// range, or correct the ports and type of the existing one. Its cluster IP is never changed
/// (it cannot be); a Service left with another one by a changed CIDR is reported.
async fn ensure_service(registry: &Registry, cluster_ip: Ipv4Addr, port: u16) -> ApiResult<()> {
    let info = lookup("", "v1", "services")?;
    match registry.get(info, Some(NAMESPACE), NAME).await {
        Ok(current) => {
            let ip = current.pointer("/spec/clusterIP").and_then(Value::as_str);
            if ip != Some(cluster_ip.to_string().as_str()) {
                tracing::warn!(
                    cluster_ip = ?ip,
                    expected = %cluster_ip,
                    "the kubernetes Service does not have the first address of the service CIDR; delete it to have it recreated"
                );
            }
            let type_ = current.pointer("/spec/type").and_then(Value::as_str);
            if ports_correct(&current, port) && type_ == Some("ClusterIP") {
                return Ok(());
            }
            let mut updated = current.clone();
            updated["spec"]["ports"] = desired_ports(port);
            updated["spec"]["type"] = json!("ClusterIP");
            registry
                .update(
                    Target::object(info, Some(NAMESPACE), NAME),
                    updated,
                    &WriteOptions::default(),
                )
                .await?;
            Ok(())
        }
        Err(e) if e.code == 404 => {
            let service = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": NAME,
                    "namespace": NAMESPACE,
                    "labels": {"component": "apiserver", "provider": "kubernetes"}
                },
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": cluster_ip.to_string(),
                    "clusterIPs": [cluster_ip.to_string()],
                    "ports": desired_ports(port),
                    "sessionAffinity": "None"
                }
            });
            match registry
                .create(info, Some(NAMESPACE), service, &WriteOptions::default())
                .await
            {
                Ok(_) => Ok(()),
                // Created meanwhile by another server on this store: it is there.
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
