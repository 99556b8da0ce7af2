//! What the EndpointSlice and Endpoints controllers both ask of a Service and a pod, without
//! I/O: which Services they manage, which pods a Service selects, whether a pod is published
//! at all, which of its IPs, on which port, under which hostname — upstream's
//! `endpointsliceutil` and `podutil.FindPort`, shared as upstream shares them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ContainerPort, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pods;

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label (empty value) on the slices and Endpoints of a Service without a cluster IP.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The Node label whose value becomes an endpoint's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The Service's selector, when the controllers fill its endpoints: not for ExternalName
/// Services, and not for Services without a selector (their Endpoints and EndpointSlices are
/// written by someone else). An empty selector is no selector, as it is once Kubernetes has
/// stored it (an empty map does not survive its protobuf round trip).
pub fn managed_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// The namespace and name of a Service whose endpoints the controllers fill, or `None` for
/// one they leave to its user (see [`managed_selector`]).
pub fn managed_service(service: &Service) -> Result<Option<(String, String)>, crate::Error> {
    let stored = crate::error::Stored::new("Service", &service.metadata);
    let (namespace, name) = (stored.namespace()?, stored.name()?);
    Ok(managed_selector(service).map(|_| (namespace.to_string(), name.to_string())))
}

/// The Service selects the pod: same namespace, and every selector label matches.
pub fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = managed_selector(service) else {
        return false;
    };
    if service.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pod has finished (phase Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// The pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the pod is published at all (upstream's `ShouldPodBeInEndpoints`): not finished,
/// with an IP, and — unless `include_terminating` — not being deleted.
pub fn should_publish(pod: &Pod, include_terminating: bool) -> bool {
    if is_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || !is_terminating(pod)
}

/// The pod's IPs, primary first: `status.podIPs`, or `status.podIP` alone when the list is
/// empty.
pub fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// An IP family, and the EndpointSlice address type that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    IPv4,
    IPv6,
}

impl Family {
    /// The family of an address; `None` when it is not an IP address.
    pub fn of(ip: &str) -> Option<Family> {
        match ip.parse::<IpAddr>().ok()? {
            IpAddr::V4(_) => Some(Family::IPv4),
            IpAddr::V6(_) => Some(Family::IPv6),
        }
    }

    /// The EndpointSlice `addressType` (and Service `ipFamilies` entry) of this family.
    pub fn name(self) -> &'static str {
        match self {
            Family::IPv4 => "IPv4",
            Family::IPv6 => "IPv6",
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        match name {
            "IPv4" => Some(Family::IPv4),
            "IPv6" => Some(Family::IPv6),
            _ => None,
        }
    }
}

/// The address types the Service's EndpointSlices carry: one per family in
/// `spec.ipFamilies`; without any, the family of its cluster IP, else IPv4 (upstream's
/// `getAddressTypesForService`).
pub fn service_families(service: &Service) -> Vec<Family> {
    let spec = service.spec.as_ref();
    let mut families: Vec<Family> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| Family::from_name(f))
        .collect();
    families.sort();
    families.dedup();
    if families.is_empty() {
        let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        let family = if cluster_ip.is_empty() || cluster_ip == "None" {
            Family::IPv4
        } else {
            Family::of(cluster_ip).unwrap_or(Family::IPv4)
        };
        families.push(family);
    }
    families
}

/// The family of the Endpoints object's addresses for this pod (upstream's
/// `podToEndpointAddressForService`): the Service's first IP family; without one, its
/// cluster IP's family, or for a headless Service the pod's primary IP's.
pub fn legacy_family(service: &Service, pod: &Pod) -> Family {
    let spec = service.spec.as_ref();
    if let Some(first) = spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
    {
        return Family::from_name(first).unwrap_or(Family::IPv4);
    }
    let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    let decider = if !cluster_ip.is_empty() && cluster_ip != "None" {
        Some(cluster_ip)
    } else {
        pod_ips(pod).first().copied()
    };
    decider.and_then(Family::of).unwrap_or(Family::IPv4)
}

/// The pod's IPs of one family, in the order the pod lists them.
pub fn ips_of_family(pod: &Pod, family: Family) -> Vec<String> {
    pod_ips(pod)
        .into_iter()
        .filter(|ip| Family::of(ip) == Some(family))
        .map(str::to_string)
        .collect()
}

/// The port a Service port reaches on this pod (upstream's `podutil.FindPort`): a numeric
/// targetPort as it is; a named one is the container port of that name and the Service
/// port's protocol, in the pod's containers or its sidecars (restartable init containers).
/// `None` when the pod has no such port. An unset targetPort is the Service's port (the API
/// server defaults it so).
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        None => return Some(port.port),
        Some(IntOrString::Int(number)) => return Some(*number),
        Some(IntOrString::String(name)) => name,
    };
    if let Ok(number) = name.parse::<i32>() {
        // A number written as a string is still a number (intstr's IntValue).
        return Some(number);
    }
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let spec = pod.spec.as_ref()?;
    let matches = |p: &&ContainerPort| {
        p.name.as_deref() == Some(name.as_str())
            && p.protocol.as_deref().unwrap_or("TCP") == protocol
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(matches)
        .map(|p| p.container_port)
}

/// The hostname an endpoint of this pod carries (upstream's `ShouldSetHostname`): the pod's
/// `spec.hostname` when its `spec.subdomain` is this Service's name, in its namespace.
pub fn hostname(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_namespace = pod.metadata.namespace == service.metadata.namespace;
    let subdomain_is_service = spec.subdomain.is_some() && spec.subdomain == service.metadata.name;
    (same_namespace && subdomain_is_service).then(|| hostname.to_string())
}

/// Whether the Service has a cluster IP (not headless, upstream's `IsServiceIPSet`).
pub fn has_cluster_ip(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// Whether the Service is headless (clusterIP None), which may then have no ports.
pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The Service's ports.
pub fn service_ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

/// Whether every endpoint of the Service counts as ready (`publishNotReadyAddresses`).
pub fn publish_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pods::is_ready(pod)
}

/// The reference from an endpoint to its pod.
pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".to_string()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's node, when it has one.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::testing::{named_port, pod, service};
    use k8s_openapi::api::core::v1::{Container, PodIP};

    #[test]
    fn external_name_and_selectorless_services_are_not_managed() {
        let web = service("web", &[("app", "web")]);
        assert!(managed_selector(&web).is_some());
        let mut empty = web.clone();
        empty.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(managed_selector(&empty).is_none());
        let mut none = web.clone();
        none.spec.as_mut().unwrap().selector = None;
        assert!(managed_selector(&none).is_none());
        let mut external = web.clone();
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(managed_selector(&external).is_none());
    }

    #[test]
    fn a_service_selects_pods_of_its_namespace_by_every_label() {
        let web = service("web", &[("app", "web"), ("tier", "front")]);
        let mut p = pod("a", true);
        assert!(!selects(&web, &p), "tier is missing");
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "front".into());
        assert!(selects(&web, &p));
        p.metadata.namespace = Some("other".into());
        assert!(!selects(&web, &p));
    }

    #[test]
    fn terminal_ipless_and_terminating_pods_are_left_out() {
        let p = pod("a", true);
        assert!(should_publish(&p, false));
        let mut done = p.clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_publish(&done, true));
        let mut no_ip = p.clone();
        no_ip.status.as_mut().unwrap().pod_ip = None;
        no_ip.status.as_mut().unwrap().pod_ips = None;
        assert!(!should_publish(&no_ip, true));
        let mut going = p.clone();
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(!should_publish(&going, false));
        assert!(should_publish(&going, true));
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_protocol() {
        let svc_port = named_port("http", "web");
        let mut p = pod("a", true);
        assert_eq!(find_port(&p, &svc_port), None);
        p.spec.as_mut().unwrap().containers = vec![Container {
            name: "main".into(),
            ports: Some(vec![ContainerPort {
                name: Some("web".into()),
                container_port: 8080,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }];
        assert_eq!(find_port(&p, &svc_port), Some(8080));
        let mut udp = svc_port.clone();
        udp.protocol = Some("UDP".into());
        assert_eq!(find_port(&p, &udp), None);
        let mut numeric = svc_port.clone();
        numeric.target_port = Some(IntOrString::Int(9000));
        assert_eq!(find_port(&p, &numeric), Some(9000));
        numeric.target_port = None;
        assert_eq!(find_port(&p, &numeric), Some(80));
    }

    #[test]
    fn families_come_from_the_service_then_its_cluster_ip() {
        let mut svc = service("web", &[("app", "web")]);
        assert_eq!(service_families(&svc), [Family::IPv4]);
        let spec = svc.spec.as_mut().unwrap();
        spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        assert_eq!(service_families(&svc), [Family::IPv4, Family::IPv6]);
        svc.spec.as_mut().unwrap().ip_families = None;
        svc.spec.as_mut().unwrap().cluster_ip = Some("fd00::1".into());
        assert_eq!(service_families(&svc), [Family::IPv6]);

        let mut p = pod("a", true);
        p.status.as_mut().unwrap().pod_ips = Some(vec![
            PodIP {
                ip: "10.0.0.1".into(),
            },
            PodIP {
                ip: "fd00::9".into(),
            },
        ]);
        assert_eq!(ips_of_family(&p, Family::IPv6), ["fd00::9"]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(legacy_family(&svc, &p), Family::IPv4);
    }

    #[test]
    fn hostname_needs_the_subdomain_to_be_the_service() {
        let svc = service("web", &[("app", "web")]);
        let mut p = pod("a", true);
        p.spec.as_mut().unwrap().hostname = Some("a-host".into());
        assert_eq!(hostname(&p, &svc), None);
        p.spec.as_mut().unwrap().subdomain = Some("web".into());
        assert_eq!(hostname(&p, &svc).as_deref(), Some("a-host"));
        p.spec.as_mut().unwrap().subdomain = Some("other".into());
        assert_eq!(hostname(&p, &svc), None);
    }
}
