//! From Services and EndpointSlices to the proxy's [`ServicePort`]s, with kube-proxy's rules
//! for which endpoints take traffic: the ready ones; when none is ready, the ones still
//! serving while they terminate (so a rolling update does not drop connections); for a
//! `Local` traffic policy, only those on this node.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort as KubePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{Endpoint, Protocol, ServicePort};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Kubernetes' default sessionAffinity timeout: three hours.
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// Every proxied port of `services`, with endpoints from `slices`, as seen from node `node`.
pub fn service_ports<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> Vec<ServicePort> {
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        let labels = slice.metadata.labels.as_ref();
        if let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            slices_of
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut ports = Vec::new();
    for service in services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let slices = slices_of
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        ports.extend(ports_of(service, slices, node));
    }
    ports
}

fn ports_of(service: &Service, slices: &[&EndpointSlice], node: &str) -> Vec<ServicePort> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Vec::new();
    }
    let mut virtual_ips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .chain(spec.external_ips.iter().flatten())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    virtual_ips.sort();
    virtual_ips.dedup();
    let exposed_on_node = matches!(kind, "NodePort" | "LoadBalancer");
    let load_balancer = kind == "LoadBalancer" && spec.load_balancer_class.is_none();
    if virtual_ips.is_empty() && !exposed_on_node {
        // Headless: DNS names the pods themselves; nothing to proxy.
        return Vec::new();
    }
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let local_only = |policy: &Option<String>| policy.as_deref() == Some("Local");
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();

    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::from_kubernetes(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let label = port.name.clone().unwrap_or_else(|| number.to_string());
        let candidates = candidates(slices, port, protocol);
        let pick = |local: bool| -> Vec<Endpoint> {
            let on_node = |c: &&Candidate| !local || c.node.as_deref() == Some(node);
            usable(candidates.iter().filter(on_node))
        };
        ports.push(ServicePort {
            key: format!("{namespace}/{name}/{protocol}/{label}"),
            protocol,
            port: number,
            virtual_ips: virtual_ips.clone(),
            node_port: port
                .node_port
                .filter(|_| exposed_on_node)
                .and_then(|p| u16::try_from(p).ok()),
            load_balancer,
            endpoints: pick(local_only(&spec.internal_traffic_policy)),
            external_endpoints: pick(local_only(&spec.external_traffic_policy)),
            affinity_seconds,
        });
    }
    ports
}

/// An endpoint of a Service port as a slice lists it.
struct Candidate {
    endpoint: Endpoint,
    ready: bool,
    serving_while_terminating: bool,
    node: Option<String>,
}

/// The endpoints in `slices` for the Service port `port`: a slice's port matches by name
/// (both empty for an unnamed port) and protocol.
fn candidates(slices: &[&EndpointSlice], port: &KubePort, protocol: Protocol) -> Vec<Candidate> {
    let wanted = port.name.as_deref().unwrap_or_default();
    let mut found = Vec::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == wanted
                && Protocol::from_kubernetes(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(target) = target
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // Kubernetes reads only the first address of an endpoint.
            let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            found.push(Candidate {
                endpoint: Endpoint { ip, port: target },
                ready,
                serving_while_terminating: serving && terminating,
                node: endpoint.node_name.clone(),
            });
        }
    }
    found
}

/// The ready endpoints, or if there are none the serving terminating ones; sorted, once each.
fn usable<'a>(candidates: impl Iterator<Item = &'a Candidate> + Clone) -> Vec<Endpoint> {
    let mut chosen: Vec<Endpoint> = candidates
        .clone()
        .filter(|c| c.ready)
        .map(|c| c.endpoint)
        .collect();
    if chosen.is_empty() {
        chosen = candidates
            .filter(|c| c.serving_while_terminating)
            .map(|c| c.endpoint)
            .collect();
    }
    chosen.sort();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        serde_json::from_value(serde_yaml_value(yaml)).expect("service")
    }

    fn slice(yaml: &str) -> EndpointSlice {
        serde_json::from_value(serde_yaml_value(yaml)).expect("slice")
    }

    /// The tests write objects as JSON-with-comments-free YAML flow maps; JSON is YAML.
    fn serde_yaml_value(text: &str) -> serde_json::Value {
        serde_json::from_str(text).expect("json")
    }

    fn web() -> Service {
        service(
            r#"{"metadata": {"namespace": "default", "name": "web"},
                "spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"], "type": "NodePort",
                         "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                                   {"name": "dns", "port": 53, "protocol": "UDP"}]}}"#,
        )
    }

    fn web_slice() -> EndpointSlice {
        slice(
            r#"{"metadata": {"namespace": "default", "name": "web-abc",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "dns", "port": 5353, "protocol": "UDP"}],
                "endpoints": [
                  {"addresses": ["10.42.0.3"], "conditions": {"ready": true}, "nodeName": "here"},
                  {"addresses": ["10.42.0.2"], "conditions": {"ready": true}, "nodeName": "there"},
                  {"addresses": ["10.42.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "here"}
                ]}"#,
        )
    }

    fn ips(endpoints: &[Endpoint]) -> Vec<String> {
        endpoints.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ready_endpoints_take_traffic_per_named_port() {
        let ports = service_ports([&web()], [&web_slice()], "here");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.key, "default/web/tcp/http");
        assert_eq!(http.node_port, Some(30080));
        assert!(!http.load_balancer);
        assert_eq!(ips(&http.endpoints), ["10.42.0.2:8080", "10.42.0.3:8080"]);
        let dns = &ports[1];
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(ips(&dns.endpoints), ["10.42.0.2:5353", "10.42.0.3:5353"]);
        assert_eq!(dns.node_port, None);
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let mut slice = web_slice();
        for endpoint in &mut slice.endpoints[..2] {
            endpoint.conditions.as_mut().expect("conditions").ready = Some(false);
        }
        let ports = service_ports([&web()], [&slice], "here");
        assert_eq!(ips(&ports[0].endpoints), ["10.42.0.4:8080"]);
    }

    #[test]
    fn local_traffic_policies_keep_this_nodes_endpoints() {
        let mut service = web();
        let spec = service.spec.as_mut().expect("spec");
        spec.external_traffic_policy = Some("Local".into());
        let ports = service_ports([&service], [&web_slice()], "here");
        assert_eq!(
            ips(&ports[0].endpoints),
            ["10.42.0.2:8080", "10.42.0.3:8080"]
        );
        assert_eq!(ips(&ports[0].external_endpoints), ["10.42.0.3:8080"]);
    }

    #[test]
    fn headless_and_external_name_services_are_not_proxied() {
        let headless = service(
            r#"{"metadata": {"namespace": "default", "name": "web"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}"#,
        );
        let external = service(
            r#"{"metadata": {"namespace": "default", "name": "web"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}}"#,
        );
        assert!(service_ports([&headless, &external], [&web_slice()], "here").is_empty());
    }

    #[test]
    fn affinity_and_load_balancers_come_from_the_spec() {
        let lb = service(
            r#"{"metadata": {"namespace": "default", "name": "web"},
                "spec": {"clusterIP": "10.43.0.5", "type": "LoadBalancer", "sessionAffinity": "ClientIP",
                         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                         "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}}"#,
        );
        let ports = service_ports([&lb], [&web_slice()], "here");
        assert!(ports[0].load_balancer);
        assert_eq!(ports[0].affinity_seconds, Some(60));
        let mut classed = lb.clone();
        let spec = classed.spec.as_mut().expect("spec");
        spec.load_balancer_class = Some("example.com/other".into());
        spec.session_affinity_config = None;
        let ports = service_ports([&classed], [&web_slice()], "here");
        assert!(!ports[0].load_balancer);
        assert_eq!(ports[0].affinity_seconds, Some(10_800));
    }

    #[test]
    fn slices_of_other_services_and_unmatched_ports_are_ignored() {
        let mut other = web_slice();
        other.metadata.labels =
            Some([(SERVICE_NAME_LABEL.to_string(), "other".to_string())].into());
        let ports = service_ports([&web()], [&other], "here");
        assert!(ports[0].endpoints.is_empty());
        let mut renamed = web_slice();
        for port in renamed.ports.iter_mut().flatten() {
            port.name = Some("nope".into());
        }
        let ports = service_ports([&web()], [&renamed], "here");
        assert!(ports[0].endpoints.is_empty());
    }
}
