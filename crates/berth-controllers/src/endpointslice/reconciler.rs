//! The EndpointSlice controller's decision, without I/O: a Service, the pods it selects and
//! the slices it has become the slices to create, update and delete — upstream's
//! `endpointslice` reconciler, step for step.
//!
//! Per address type the Service carries ([`addresses::service_families`]): each published
//! pod (not finished, with an IP; terminating pods too, marked so) becomes one endpoint,
//! grouped by the ports it resolves to (a named targetPort can differ per pod, or be
//! missing), since one slice has one list of ports. Within a group the existing slices are
//! kept where they can be: endpoints that are no longer wanted leave their slice (a slice
//! left empty is deleted), changed endpoints are rewritten in place, and new endpoints fill
//! the slices being updated anyway, then an untouched slice they all fit in, and only then
//! new slices of at most [`MAX_ENDPOINTS_PER_SLICE`]. A slice to create and one to delete
//! become one update of the latter. A Service with no endpoints keeps one empty placeholder
//! slice, so that consumers can tell "no endpoints" from "not processed yet". Slices of the
//! Service's name that another object of that name owned are deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::endpoints::addresses::{self, Family, HEADLESS_LABEL, SERVICE_NAME_LABEL};

/// At most this many endpoints go into one slice (upstream's default
/// `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`], as upstream's.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";

/// The zone of each Node the cluster shows (`None` for a Node without a zone label).
pub type Zones = HashMap<String, Option<String>>;

/// The writes that bring a Service's slices to what its pods say.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// New slices (named by the API server from `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices as they should be, each with the resourceVersion it was read at.
    pub update: Vec<EndpointSlice>,
    /// Existing slices to delete.
    pub delete: Vec<EndpointSlice>,
    /// Pods left out because no Node of their `nodeName` is known (yet); the Service
    /// should be looked at again.
    pub unknown_nodes: Vec<String>,
}

impl Plan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The decision for one Service: `pods` are the pods its selector picks in its namespace,
/// `existing` its slices managed by this controller and not being deleted, `zones` the
/// Nodes known, `max` the endpoints per slice.
pub fn plan(
    service: &Service,
    pods: &[&Pod],
    existing: &[&EndpointSlice],
    zones: &Zones,
    max: usize,
) -> Plan {
    let families = addresses::service_families(service);
    let mut plan = Plan::default();
    let mut by_family: BTreeMap<Family, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        match Family::from_name(&slice.address_type).filter(|f| families.contains(f)) {
            Some(family) => by_family.entry(family).or_default().push(slice),
            // The Service no longer has this family.
            None => plan.delete.push((*slice).clone()),
        }
    }
    let mut unknown = BTreeSet::new();
    for family in families {
        let slices = by_family.remove(&family).unwrap_or_default();
        let part = plan_family(service, pods, &slices, family, zones, max, &mut unknown);
        plan.create.extend(part.create);
        plan.update.extend(part.update);
        plan.delete.extend(part.delete);
    }
    plan.unknown_nodes = unknown.into_iter().collect();
    plan
}

/// An endpoint's identity (upstream's endpoint hash): its addresses, hostname and pod.
type EndpointKey = (Vec<String>, String, String, String);
/// A port list's identity: name, port, protocol, appProtocol of each, sorted.
type PortsKey = Vec<(String, Option<i32>, String, Option<String>)>;

/// One port group's wanted endpoints, by identity.
struct Group {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// Upstream's `reconcileByAddressType` and `finalize` for one address type.
fn plan_family(
    service: &Service,
    pods: &[&Pod],
    existing: &[&EndpointSlice],
    family: Family,
    zones: &Zones,
    max: usize,
    unknown_nodes: &mut BTreeSet<String>,
) -> Plan {
    let labels = slice_labels(service);
    let mut create = Vec::new();
    let mut update = Vec::new();
    let mut delete: Vec<EndpointSlice> = Vec::new();

    let mut existing_by_ports: BTreeMap<PortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, service) {
            let key = ports_key(slice.ports.as_deref().unwrap_or(&[]));
            existing_by_ports.entry(key).or_default().push(slice);
        } else {
            delete.push((*slice).clone());
        }
    }

    let publish_not_ready = addresses::publish_not_ready(service);
    let mut desired: BTreeMap<PortsKey, Group> = BTreeMap::new();
    for pod in pods {
        if !addresses::should_publish(pod, true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let group = desired.entry(ports_key(&ports)).or_insert_with(|| Group {
            ports,
            endpoints: BTreeMap::new(),
        });
        let zone = match addresses::node_name(pod).and_then(|n| zones.get(n)) {
            Some(zone) => zone.clone(),
            // Upstream leaves the pod out and retries later, unless the Service publishes
            // every address anyway.
            None if !publish_not_ready => {
                unknown_nodes.insert(pod.metadata.name.clone().unwrap_or_default());
                continue;
            }
            None => None,
        };
        let endpoint = pod_endpoint(pod, service, family, zone);
        if !endpoint.addresses.is_empty() {
            group.endpoints.insert(endpoint_key(&endpoint), endpoint);
        }
    }

    for (key, group) in desired.iter_mut() {
        let slices = existing_by_ports.get(key).map_or(&[][..], Vec::as_slice);
        let endpoints = std::mem::take(&mut group.endpoints);
        let part = plan_ports(
            service,
            slices,
            endpoints,
            &group.ports,
            family,
            &labels,
            max,
        );
        create.extend(part.create);
        update.extend(part.update);
        delete.extend(part.delete);
    }
    for (key, slices) in &existing_by_ports {
        if !desired.contains_key(key) {
            delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }

    // A Service without endpoints keeps one empty slice.
    if existing.len() == delete.len() && create.is_empty() {
        let placeholder = new_slice(service, &[], family, &labels);
        if delete.len() == 1 && is_placeholder(&delete[0], &placeholder) {
            delete.clear();
        } else {
            create.push(placeholder);
        }
    }

    // A create and a delete are one update of the slice that would be deleted (if it is the
    // Service's own and of this address type, which is immutable).
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        let old = &delete[i];
        if old.address_type == family.name() && owned_by(old, service) {
            let mut slice = create.pop().expect("checked non-empty");
            slice.metadata.name = old.metadata.name.clone();
            slice.metadata.uid = old.metadata.uid.clone();
            slice.metadata.resource_version = old.metadata.resource_version.clone();
            update.push(slice);
            delete.remove(i);
        } else {
            i += 1;
        }
    }

    // A Service being deleted gets no new slices: the garbage collector is removing them.
    if service.metadata.deletion_timestamp.is_some() {
        create.clear();
    }
    Plan {
        create,
        update,
        delete,
        unknown_nodes: Vec::new(),
    }
}

/// Upstream's `reconcileByPortMapping`: one port group's existing slices and wanted
/// endpoints.
fn plan_ports(
    service: &Service,
    existing: &[&EndpointSlice],
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    family: Family,
    labels: &BTreeMap<String, String>,
    max: usize,
) -> Plan {
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();

    // 1. Drop endpoints no longer wanted, rewrite changed ones.
    for slice in existing {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut kept = Vec::new();
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(wanted) = desired.remove(&endpoint_key(endpoint)) {
                changed |= !same_beyond_key(&wanted, endpoint);
                kept.push(wanted);
            }
        }
        let labels_changed = slice.metadata.labels.as_ref() != Some(labels);
        let mut copy = (*slice).clone();
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
            } else {
                copy.endpoints = kept;
                copy.metadata.labels = Some(labels.clone());
                to_update.insert(name.clone());
            }
        } else if labels_changed {
            copy.metadata.labels = Some(labels.clone());
            to_update.insert(name.clone());
        } else {
            unchanged.insert(name.clone());
        }
        slices.insert(name, copy);
    }

    // 2. New endpoints fill the slices being written anyway, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        let mut order: Vec<&String> = to_update.iter().collect();
        order.sort_by_key(|name| std::cmp::Reverse(slices[*name].endpoints.len()));
        for name in order {
            let slice = slices.get_mut(name).expect("slice to update is known");
            fill(slice, &mut desired, max);
        }
    }

    // 3. Then an untouched slice all the rest fit in, else new slices.
    let mut create = Vec::new();
    while !desired.is_empty() {
        let mut target = None;
        if desired.len() < max && !unchanged.is_empty() {
            target = slice_to_fill(&unchanged, &slices, desired.len(), max);
        }
        match target {
            Some(name) => {
                let slice = slices.get_mut(&name).expect("unchanged slice is known");
                fill(slice, &mut desired, max);
                unchanged.remove(&name);
                to_update.insert(name);
            }
            None => {
                let mut slice = new_slice(service, ports, family, labels);
                fill(&mut slice, &mut desired, max);
                create.push(slice);
            }
        }
    }

    Plan {
        create,
        update: to_update.iter().map(|n| slices[n].clone()).collect(),
        delete: to_delete.iter().map(|n| slices[n].clone()).collect(),
        unknown_nodes: Vec::new(),
    }
}

/// Moves wanted endpoints into `slice` until it holds `max`.
fn fill(slice: &mut EndpointSlice, desired: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, endpoint)) = desired.pop_first() else {
            break;
        };
        slice.endpoints.push(endpoint);
    }
}

/// Upstream's `getSliceToFill`: the fullest untouched slice that still has room for all
/// `count` endpoints.
fn slice_to_fill(
    unchanged: &BTreeSet<String>,
    slices: &BTreeMap<String, EndpointSlice>,
    count: usize,
    max: usize,
) -> Option<String> {
    unchanged
        .iter()
        .filter(|name| slices[*name].endpoints.len() + count <= max)
        .max_by_key(|name| (slices[*name].endpoints.len(), std::cmp::Reverse(*name)))
        .cloned()
}

/// The endpoint of one pod for one address type (upstream's `podToEndpoint`): serving when
/// the pod is Ready, terminating while it is being deleted, ready when serving and not
/// terminating — or always, for a Service that publishes not-ready addresses.
pub fn pod_endpoint(
    pod: &Pod,
    service: &Service,
    family: Family,
    zone: Option<String>,
) -> Endpoint {
    let serving = addresses::is_ready(pod);
    let terminating = addresses::is_terminating(pod);
    let ready = addresses::publish_not_ready(service) || (serving && !terminating);
    Endpoint {
        addresses: addresses::ips_of_family(pod, family),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(addresses::target_ref(pod)),
        node_name: addresses::node_name(pod).map(str::to_string),
        zone,
        hostname: addresses::hostname(pod, service),
        hints: None,
        deprecated_topology: None,
    }
}

/// The ports of a pod's endpoints: each Service port the pod resolves (a Service port whose
/// named targetPort the pod lacks is left out).
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    addresses::service_ports(service)
        .iter()
        .filter_map(|port| {
            let number = addresses::find_port(pod, port)?;
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".to_string())),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    (
        addresses,
        endpoint.hostname.clone().unwrap_or_default(),
        target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
        target.and_then(|t| t.name.clone()).unwrap_or_default(),
    )
}

/// Upstream's `EndpointsEqualBeyondHash`: what the identity leaves out is equal too.
fn same_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && a.hints == b.hints
        && a.target_ref == b.target_ref
}

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut key: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// The labels of the Service's slices (upstream's `setEndpointSliceLabels`): the Service's
/// own, except the reserved ones, then the headless label when it has no cluster IP, its
/// name and this controller's.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let reserved = [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL];
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !addresses::has_cluster_ip(service) {
        labels.insert(HEADLESS_LABEL.to_string(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.to_string(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.to_string(), CONTROLLER_NAME.to_string());
    labels
}

/// A new, empty slice of the Service: named `<service>-<random>` by the API server,
/// controlled by the Service.
fn new_slice(
    service: &Service,
    ports: &[EndpointPort],
    family: Family,
    labels: &BTreeMap<String, String>,
) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_string(),
                kind: "Service".to_string(),
                name,
                uid: service.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: family.name().to_string(),
        endpoints: Vec::new(),
        ports: (!ports.is_empty()).then(|| ports.to_vec()),
    }
}

/// The slice is owned by this Service (not by an earlier one of the same name).
fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| Some(r.uid.as_str()) == uid && r.kind == "Service" && r.api_version == "v1")
}

/// The existing slice is already the placeholder that would be created (upstream compares
/// namespace, labels and content, not names or owners).
fn is_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.metadata.namespace == placeholder.metadata.namespace
        && slice.metadata.labels == placeholder.metadata.labels
        && slice.address_type == placeholder.address_type
        && slice.endpoints.is_empty()
        && slice.ports.as_ref().is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests;
