//! The Endpoints controller's decision, without I/O: a Service and the pods it selects become
//! the subsets of its Endpoints object, packed as upstream packs them (each distinct set of
//! addresses once, with every port it serves), and compared with the object there is to
//! decide whether to create it, update it, or leave it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::addresses::{self, HEADLESS_LABEL};

/// At most this many addresses go into one Endpoints object; the rest are dropped and the
/// object says so ([`OVER_CAPACITY_ANNOTATION`]). EndpointSlices have no such limit.
pub const MAX_CAPACITY: usize = 1000;
/// Set to `truncated` on an Endpoints object holding only [`MAX_CAPACITY`] of its addresses.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// When the change behind the object happened. Optional upstream; this controller does not
/// track it, and removes it as upstream does when it has no trigger time.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// What to do with the Service's Endpoints object.
#[derive(Debug, PartialEq)]
pub enum Write {
    /// It already says this.
    Unchanged,
    /// There is none; create this one.
    Create(Endpoints),
    /// Replace it with this one (it carries the current object's resourceVersion, so a
    /// stale view of the object conflicts rather than overwrites).
    Update(Endpoints),
}

/// An address's identity while packing: its IP and its pod's uid.
type AddressKey = (String, String);
/// A port while packing: name, number, protocol, appProtocol (`None` for a headless
/// Service without ports).
type PortKey = Option<(String, i32, String, Option<String>)>;

/// The decision for one Service (whose selector picks `pods` from its namespace) and its
/// Endpoints object, if there is one.
pub fn plan(service: &Service, pods: &[&Pod], current: Option<&Endpoints>) -> Write {
    let mut desired = subsets(service, pods);
    let truncated = truncate(&mut desired);
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    if let Some(current) = current {
        // The headless label is compared apart from the Service's labels, as upstream.
        let mut labels = current.metadata.labels.clone().unwrap_or_default();
        labels.remove(HEADLESS_LABEL);
        let subsets = current.subsets.as_deref().unwrap_or(&[]);
        let annotated = current
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(OVER_CAPACITY_ANNOTATION));
        if normalized(subsets) == normalized(&desired)
            && labels == service_labels
            && annotated == truncated
        {
            return Write::Unchanged;
        }
    }

    let mut new = current.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            ..Default::default()
        },
        subsets: None,
    });
    new.subsets = (!desired.is_empty()).then_some(desired);

    let mut labels = service_labels;
    if addresses::has_cluster_ip(service) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.to_string(), String::new());
    }
    new.metadata.labels = (!labels.is_empty()).then_some(labels);

    let mut annotations = new.metadata.annotations.take().unwrap_or_default();
    annotations.remove(TRIGGER_TIME_ANNOTATION);
    if truncated {
        annotations.insert(
            OVER_CAPACITY_ANNOTATION.to_string(),
            "truncated".to_string(),
        );
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    new.metadata.annotations = (!annotations.is_empty()).then_some(annotations);

    match current {
        None => Write::Create(new),
        Some(_) => Write::Update(new),
    }
}

/// The subsets the Service's Endpoints should hold: every published pod's address (ready,
/// or not ready unless `publishNotReadyAddresses`) with every Service port it resolves,
/// packed and sorted.
pub fn subsets(service: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish_not_ready = addresses::publish_not_ready(service);
    let ports = addresses::service_ports(service);
    let mut entries: Vec<(EndpointAddress, PortKey, bool)> = Vec::new();
    for pod in pods {
        if !addresses::should_publish(pod, publish_not_ready) {
            continue;
        }
        let family = addresses::legacy_family(service, pod);
        let Some(ip) = addresses::ips_of_family(pod, family).into_iter().next() else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            hostname: addresses::hostname(pod, service),
            node_name: addresses::node_name(pod).map(str::to_string),
            target_ref: Some(addresses::target_ref(pod)),
        };
        let ready = publish_not_ready || addresses::is_ready(pod);
        if ports.is_empty() {
            // A headless Service may have no ports; any other without ports gets nothing.
            if addresses::is_headless(service) {
                entries.push((address, None, ready));
            }
            continue;
        }
        for port in ports {
            if let Some(number) = addresses::find_port(pod, port) {
                let key = (
                    port.name.clone().unwrap_or_default(),
                    number,
                    port.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                    port.app_protocol.clone(),
                );
                entries.push((address.clone(), Some(key), ready));
            }
        }
    }
    repack(entries)
}

/// Upstream's `RepackSubsets`: each address (by IP and pod) once; for each port, the
/// addresses serving it and whether each is ready (not ready wins when an address is seen
/// both ways); ports served by exactly the same addresses share one subset. Addresses sort
/// by IP then pod uid, ports by name then number, subsets by their ports.
fn repack(entries: Vec<(EndpointAddress, PortKey, bool)>) -> Vec<EndpointSubset> {
    let mut all: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    for (address, port, ready) in entries {
        let uid = address
            .target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default();
        let key = (address.ip.clone(), uid);
        all.entry(key.clone()).or_insert(address);
        let seen = by_port.entry(port).or_default().entry(key).or_insert(ready);
        *seen = *seen && ready;
    }

    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<PortKey>> = BTreeMap::new();
    for (port, addresses) in by_port {
        let set: Vec<(AddressKey, bool)> = addresses.into_iter().collect();
        groups.entry(set).or_default().push(port);
    }

    let mut subsets: Vec<(Vec<PortKey>, EndpointSubset)> = groups
        .into_iter()
        .map(|(set, ports)| {
            let pick = |ready: bool| -> Option<Vec<EndpointAddress>> {
                let list: Vec<EndpointAddress> = set
                    .iter()
                    .filter(|(_, r)| *r == ready)
                    .filter_map(|(key, _)| all.get(key).cloned())
                    .collect();
                (!list.is_empty()).then_some(list)
            };
            let endpoint_ports: Vec<EndpointPort> = ports
                .iter()
                .flatten()
                .map(|(name, port, protocol, app_protocol)| EndpointPort {
                    name: (!name.is_empty()).then(|| name.clone()),
                    port: *port,
                    protocol: Some(protocol.clone()),
                    app_protocol: app_protocol.clone(),
                })
                .collect();
            let subset = EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: (!endpoint_ports.is_empty()).then_some(endpoint_ports),
            };
            (ports, subset)
        })
        .collect();
    subsets.sort_by(|a, b| a.0.cmp(&b.0));
    subsets.into_iter().map(|(_, s)| s).collect()
}

/// Subsets as compared: empty lists as absent, and the pods' resourceVersions ignored (a pod
/// change that moves nothing must not rewrite the object).
fn normalized(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let clean = |list: &Option<Vec<EndpointAddress>>| -> Option<Vec<EndpointAddress>> {
        let list: Vec<EndpointAddress> = list
            .iter()
            .flatten()
            .cloned()
            .map(|mut a| {
                if let Some(r) = a.target_ref.as_mut() {
                    r.resource_version = None;
                }
                if a.hostname.as_deref() == Some("") {
                    a.hostname = None;
                }
                a
            })
            .collect();
        (!list.is_empty()).then_some(list)
    };
    subsets
        .iter()
        .map(|s| EndpointSubset {
            addresses: clean(&s.addresses),
            not_ready_addresses: clean(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}

fn address_count(list: Option<&Vec<EndpointAddress>>) -> usize {
    list.map_or(0, Vec::len)
}

/// Cuts the subsets down to [`MAX_CAPACITY`] addresses, as upstream: ready addresses first;
/// each subset keeps a share proportional to its size (rounded up, the last ones getting
/// what is left). Returns whether anything was cut.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let ready: usize = subsets
        .iter()
        .map(|s| address_count(s.addresses.as_ref()))
        .sum();
    let not_ready: usize = subsets
        .iter()
        .map(|s| address_count(s.not_ready_addresses.as_ref()))
        .sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut left = max;
    for subset in subsets.iter_mut() {
        let in_subset = if truncate_ready {
            address_count(subset.addresses.as_ref())
        } else {
            address_count(subset.not_ready_addresses.as_ref())
        };
        let share = (in_subset * max).div_ceil(total).min(left);
        if truncate_ready {
            if let Some(list) = subset.addresses.as_mut() {
                list.truncate(share);
            }
            subset.not_ready_addresses = None;
            left -= address_count(subset.addresses.as_ref());
        } else {
            if let Some(list) = subset.not_ready_addresses.as_mut() {
                list.truncate(share);
            }
            left -= address_count(subset.not_ready_addresses.as_ref());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::testing::{
        labels, named_port, pod, service, terminating, with_ip, with_port,
    };

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    fn port_numbers(subset: &EndpointSubset) -> Vec<i32> {
        subset.ports.iter().flatten().map(|p| p.port).collect()
    }

    #[test]
    fn ready_pods_are_addresses_and_the_rest_not_ready_addresses() {
        let svc = service("web", &[("app", "web")]);
        let a = with_ip(pod("a", true), "10.1.0.1");
        let b = with_ip(pod("b", false), "10.1.0.2");
        let gone = with_ip(terminating(pod("c", true)), "10.1.0.3");
        let subsets = subsets(&svc, &[&a, &b, &gone]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.1.0.2"]);
        assert_eq!(port_numbers(&subsets[0]), [8080]);
        let address = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(address.node_name.as_deref(), Some("node-1"));
        let target = address.target_ref.as_ref().unwrap();
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(target.name.as_deref(), Some("a"));
        assert_eq!(target.uid.as_deref(), Some("uid-a"));
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_pod_ready_even_terminating() {
        let mut svc = service("web", &[("app", "web")]);
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let a = with_ip(pod("a", false), "10.1.0.1");
        let b = with_ip(terminating(pod("b", true)), "10.1.0.2");
        let subsets = subsets(&svc, &[&a, &b]);
        assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1", "10.1.0.2"]);
        assert_eq!(subsets[0].not_ready_addresses, None);
    }

    #[test]
    fn named_ports_resolve_per_pod_into_separate_subsets() {
        let mut svc = service("web", &[("app", "web")]);
        svc.spec.as_mut().unwrap().ports = Some(vec![named_port("http", "web")]);
        let a = with_port(with_ip(pod("a", true), "10.1.0.1"), "web", 8080);
        let b = with_port(with_ip(pod("b", true), "10.1.0.2"), "web", 9090);
        let none = with_ip(pod("c", true), "10.1.0.3");
        let subsets = subsets(&svc, &[&a, &b, &none]);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1"]);
        assert_eq!(port_numbers(&subsets[0]), [8080]);
        assert_eq!(ips(&subsets[1].addresses), ["10.1.0.2"]);
        assert_eq!(port_numbers(&subsets[1]), [9090]);
        assert_eq!(
            subsets[0].ports.as_ref().unwrap()[0].name.as_deref(),
            Some("http")
        );
    }

    #[test]
    fn ports_served_by_the_same_addresses_share_a_subset() {
        let mut svc = service("web", &[("app", "web")]);
        let mut metrics = named_port("metrics", "metrics");
        metrics.port = 9100;
        svc.spec.as_mut().unwrap().ports = Some(vec![named_port("http", "web"), metrics]);
        let a = with_port(
            with_port(with_ip(pod("a", true), "10.1.0.1"), "web", 80),
            "metrics",
            9100,
        );
        let b = with_port(
            with_port(with_ip(pod("b", false), "10.1.0.2"), "web", 80),
            "metrics",
            9100,
        );
        let only_web = with_port(with_ip(pod("c", true), "10.1.0.3"), "web", 80);
        let subsets = subsets(&svc, &[&a, &b, &only_web]);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        // http is served by a, b and c; metrics by a and b.
        let http = subsets.iter().find(|s| port_numbers(s) == [80]).unwrap();
        assert_eq!(ips(&http.addresses), ["10.1.0.1", "10.1.0.3"]);
        assert_eq!(ips(&http.not_ready_addresses), ["10.1.0.2"]);
        let metrics = subsets.iter().find(|s| port_numbers(s) == [9100]).unwrap();
        assert_eq!(ips(&metrics.addresses), ["10.1.0.1"]);

        // Two ports served by the same addresses are one subset.
        let both = subsets_of(&svc, &[&a, &b]);
        assert_eq!(both.len(), 1);
        assert_eq!(port_numbers(&both[0]), [80, 9100]);
    }

    fn subsets_of(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
        subsets(svc, pods)
    }

    #[test]
    fn not_ready_wins_when_one_address_is_seen_both_ways() {
        let address = |uid: &str| EndpointAddress {
            ip: "10.1.0.1".into(),
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                uid: Some(uid.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let port = Some(("".to_string(), 80, "TCP".to_string(), None));
        let packed = repack(vec![
            (address("x"), port.clone(), true),
            (address("x"), port.clone(), false),
            (address("y"), port, true),
        ]);
        assert_eq!(packed.len(), 1);
        assert_eq!(packed[0].addresses.as_ref().unwrap().len(), 1);
        assert_eq!(packed[0].not_ready_addresses.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn a_headless_service_without_ports_lists_addresses_alone() {
        let mut svc = service("web", &[("app", "web")]);
        let spec = svc.spec.as_mut().unwrap();
        spec.ports = None;
        spec.cluster_ip = Some("None".into());
        let a = pod("a", true);
        let subsets = subsets(&svc, &[&a]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].ports, None);
        assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1"]);
        // Not headless and no ports: nothing.
        svc.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.1".into());
        assert!(super::subsets(&svc, &[&a]).is_empty());
    }

    #[test]
    fn hostnames_come_from_pods_in_the_service_subdomain() {
        let svc = service("web", &[("app", "web")]);
        let mut a = pod("a", true);
        let spec = a.spec.as_mut().unwrap();
        spec.hostname = Some("a0".into());
        spec.subdomain = Some("web".into());
        let subsets = subsets(&svc, &[&a]);
        let address = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(address.hostname.as_deref(), Some("a0"));
    }

    #[test]
    fn the_object_is_created_then_left_alone_until_something_changes() {
        let mut svc = service("web", &[("app", "web")]);
        svc.metadata.labels = Some(labels(&[("team", "blue")]));
        let a = pod("a", true);
        let Write::Create(created) = plan(&svc, &[&a], None) else {
            panic!("expected a create");
        };
        assert_eq!(created.metadata.name.as_deref(), Some("web"));
        assert_eq!(created.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(created.metadata.labels, Some(labels(&[("team", "blue")])));
        assert_eq!(plan(&svc, &[&a], Some(&created)), Write::Unchanged);

        // A pod's resourceVersion in the stored reference is not a change.
        let mut stored = created.clone();
        stored.metadata.resource_version = Some("7".into());
        stored.subsets.as_mut().unwrap()[0]
            .addresses
            .as_mut()
            .unwrap()[0]
            .target_ref
            .as_mut()
            .unwrap()
            .resource_version = Some("3".into());
        assert_eq!(plan(&svc, &[&a], Some(&stored)), Write::Unchanged);

        // Readiness moves the address, as an update of the stored object.
        let not_ready = pod("a", false);
        let Write::Update(updated) = plan(&svc, &[&not_ready], Some(&stored)) else {
            panic!("expected an update");
        };
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
        let subset = &updated.subsets.as_ref().unwrap()[0];
        assert_eq!(subset.addresses, None);
        assert_eq!(ips(&subset.not_ready_addresses), ["10.1.0.1"]);

        // Label changes on the Service follow; a headless Service gets the headless label.
        svc.metadata.labels = None;
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let Write::Update(relabelled) = plan(&svc, &[&a], Some(&stored)) else {
            panic!("expected an update");
        };
        assert_eq!(
            relabelled.metadata.labels,
            Some(labels(&[(HEADLESS_LABEL, "")]))
        );
        assert_eq!(plan(&svc, &[&a], Some(&relabelled)), Write::Unchanged);
    }

    #[test]
    fn no_pods_means_no_subsets() {
        let svc = service("web", &[("app", "web")]);
        let Write::Create(created) = plan(&svc, &[], None) else {
            panic!("expected a create");
        };
        assert_eq!(created.subsets, None);
    }

    #[test]
    fn more_than_the_capacity_is_truncated_ready_first_and_annotated() {
        let svc = service("web", &[("app", "web")]);
        let pods: Vec<Pod> = (0..1100)
            .map(|i| {
                let ip = format!("10.2.{}.{}", i / 200, i % 200 + 1);
                with_ip(pod(&format!("p{i}"), i < 900), &ip)
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let Write::Create(created) = plan(&svc, &refs, None) else {
            panic!("expected a create");
        };
        let subset = &created.subsets.as_ref().unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap().len(), 900);
        assert_eq!(subset.not_ready_addresses.as_ref().unwrap().len(), 100);
        let annotations = created.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[OVER_CAPACITY_ANNOTATION], "truncated");
        // What was written is what is wanted: no rewrite (upstream rewrites an over-capacity
        // object on every sync; this controller also wakes on its own writes, which would
        // make that a loop).
        assert_eq!(plan(&svc, &refs, Some(&created)), Write::Unchanged);

        let mut ready_only: Vec<EndpointSubset> = vec![EndpointSubset {
            addresses: Some(
                (0..1500)
                    .map(|i| EndpointAddress {
                        ip: format!("10.3.{}.{}", i / 200, i % 200 + 1),
                        ..Default::default()
                    })
                    .collect(),
            ),
            not_ready_addresses: Some(vec![EndpointAddress::default()]),
            ports: None,
        }];
        assert!(truncate(&mut ready_only));
        assert_eq!(
            ready_only[0].addresses.as_ref().unwrap().len(),
            MAX_CAPACITY
        );
        assert_eq!(ready_only[0].not_ready_addresses, None);
    }
}
