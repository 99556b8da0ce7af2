//! Service cluster IPs and node ports, allocated as kube-apiserver allocates them and kept in
//! the store.
//!
//! # One key per allocation, written in the Service's own transaction
//!
//! Every allocated value is a key of its own, `/registry/ranges/serviceips/<ip>` or
//! `/registry/ranges/servicenodeports/<port>`, whose value names the Service that holds it
//! (namespace, name and uid). The keys are written in the same store transaction as the
//! Service itself: a create is `txn(service == 0 ∧ each new key == 0, put service + keys)`, an
//! update or delete compares the Service's revision and the revisions of the keys it gives up
//! and deletes them with it. So:
//!
//! - **No duplicates.** Two writers that pick the same value both compare that key against 0;
//!   the store lets exactly one through. This holds across concurrent requests, and would hold
//!   across API servers on one store, without any lock in this process.
//! - **Nothing leaks, nothing is lost, even at a crash.** A Service and its allocations are
//!   written or not written together; there is no window in which an address is taken but the
//!   Service does not exist yet, or the Service is gone but its address is still taken.
//! - **It survives restarts** because the store is the record.
//!
//! Kubernetes keeps one bitmap object per range (`RangeAllocation`) instead, because etcd cannot
//! put a Service and an update of another key that others also update in one transaction
//! without retrying the whole create on every concurrent allocation; its registry says so
//! itself ("If we had a transactional store, this would just be part of the larger
//! transaction"). The bitmap makes every create compare-and-swap one hot key, and the two-step
//! write (bitmap, then Service) is why upstream needs a repair loop that frees leaked
//! addresses only after several passes. berth's store has multi-key transactions, so the one
//! hot key, the retries and the leak window all go away; the price is one small key per
//! allocated value and a read of the keys a Service gives up before deleting them.
//!
//! Which values are free is kept in memory ([`crate::allocator::Pool`], loaded at start) so a
//! random pick needs no read. That view is only a hint: a value it wrongly thinks free loses
//! the compare in the store and the write is retried with another pick, and a value the client
//! asked for by number is always decided by the store. Requests that race for the same value
//! mark it in the pool while they are in flight, so they pick different ones.
//!
//! # Repair at start
//!
//! [`ServiceAllocations::repair`] (upstream's repair controllers) makes the keys match the
//! Services before the server takes requests: a key whose Service is gone or no longer holds
//! the value is freed, and a value a Service holds without a key (a Service written before
//! allocation existed, or restored from elsewhere) gets its key, unless it is outside the
//! range or another Service already holds it, which is logged as upstream reports it.

pub mod kubernetes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_api::ResourceInfo;
use berth_api::validation::{FieldError, FieldErrorKind};
use berth_store::ops::{self, Written};
use berth_store::{Compare, KeyValue, Op, OpResponse, RangeRequest, Revision, Store, Txn};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::allocator::{NodePortRange, Pool, ServiceCidr};
use crate::status::{ApiError, ApiResult};

/// The keys of allocated cluster IPs: `<prefix><ip>`.
pub const SERVICE_IPS_PREFIX: &str = "/registry/ranges/serviceips/";
/// The keys of allocated node ports (health check node ports included): `<prefix><port>`.
pub const SERVICE_NODE_PORTS_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// One allocated value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Claim {
    Ip(Ipv4Addr),
    NodePort(u16),
}

impl Claim {
    /// The store key that records this allocation.
    pub fn key(&self) -> String {
        match self {
            Claim::Ip(ip) => format!("{SERVICE_IPS_PREFIX}{ip}"),
            Claim::NodePort(port) => format!("{SERVICE_NODE_PORTS_PREFIX}{port}"),
        }
    }

    /// The allocation a store key records.
    pub fn from_key(key: &str) -> Option<Claim> {
        if let Some(ip) = key.strip_prefix(SERVICE_IPS_PREFIX) {
            ip.parse().ok().map(Claim::Ip)
        } else {
            key.strip_prefix(SERVICE_NODE_PORTS_PREFIX)?
                .parse()
                .ok()
                .map(Claim::NodePort)
        }
    }
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::Ip(ip) => write!(f, "cluster IP {ip}"),
            Claim::NodePort(port) => write!(f, "node port {port}"),
        }
    }
}

/// The Service an allocation key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    fn of(service: &Value) -> Owner {
        let field = |f: &str| {
            service
                .pointer(&format!("/metadata/{f}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Owner {
            namespace: field("namespace"),
            name: field("name"),
            uid: field("uid"),
        }
    }

    fn encode(&self) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&json!({
                "kind": "Service", "namespace": self.namespace, "name": self.name, "uid": self.uid
            }))
            .unwrap_or_default(),
        )
    }

    fn decode(kv: &KeyValue) -> Option<Owner> {
        serde_json::from_slice(&kv.value).ok()
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether `info` is the core/v1 Service.
pub fn is_service(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Service"
}

fn spec_str<'a>(service: &'a Value, field: &str) -> &'a str {
    service
        .pointer(&format!("/spec/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn service_type(service: &Value) -> &str {
    match spec_str(service, "type") {
        "" => "ClusterIP",
        t => t,
    }
}

/// `spec.clusterIPs`, or `[spec.clusterIP]` when only the singular is set.
fn cluster_ips(service: &Value) -> Vec<String> {
    let plural: Vec<String> = service
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !plural.is_empty() {
        return plural;
    }
    match spec_str(service, "clusterIP") {
        "" => Vec::new(),
        ip => vec![ip.to_string()],
    }
}

fn is_headless(service: &Value) -> bool {
    cluster_ips(service).first().map(String::as_str) == Some("None")
}

fn needs_node_ports(service: &Value) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

/// upstream's `shouldAllocateNodePorts`.
fn should_allocate_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => {
            service
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false)
        }
        _ => false,
    }
}

/// upstream's `NeedsHealthCheck`.
fn needs_health_check(service: &Value) -> bool {
    service_type(service) == "LoadBalancer" && spec_str(service, "externalTrafficPolicy") == "Local"
}

fn ports(service: &Value) -> Vec<Value> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn node_port_of(port: &Value) -> i64 {
    port.get("nodePort").and_then(Value::as_i64).unwrap_or(0)
}

fn as_port(value: i64) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// Everything a stored Service holds: its cluster IPs unless it is an ExternalName (headless
/// `None` is no address), its node ports if it is a NodePort or LoadBalancer, and its health
/// check node port if it needs one.
pub fn held(service: &Value) -> BTreeSet<Claim> {
    let mut claims = BTreeSet::new();
    if service_type(service) != "ExternalName" {
        claims.extend(
            cluster_ips(service)
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .map(Claim::Ip),
        );
    }
    if needs_node_ports(service) {
        claims.extend(
            ports(service)
                .iter()
                .filter_map(|p| as_port(node_port_of(p)))
                .map(Claim::NodePort),
        );
    }
    if needs_health_check(service)
        && let Some(port) = service
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
            .and_then(as_port)
    {
        claims.insert(Claim::NodePort(port));
    }
    claims
}

/// upstream's `patchAllocatedValues`: an update that leaves out values the Service was given
/// (a `kubectl replace` of the original manifest, an old client) keeps them, as long as the
/// Service still needs them. Without this the update would look like a request to give them
/// up and be refused ("may not change once set"), or silently allocate new ones.
pub fn patch_allocated_values(new: &mut Value, old: &Value) {
    let needs_cluster_ip = |s: &Value| service_type(s) != "ExternalName";
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let spec = spec_mut(new);
        let empty = |v: Option<&Value>| match v {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        };
        if empty(spec.get("clusterIP"))
            && let Some(ip) = old.pointer("/spec/clusterIP").filter(|v| !empty(Some(v)))
        {
            spec.insert("clusterIP".into(), ip.clone());
        }
        if empty(spec.get("clusterIPs"))
            && let Some(ips) = old.pointer("/spec/clusterIPs").filter(|v| !empty(Some(v)))
        {
            spec.insert("clusterIPs".into(), ips.clone());
        }
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let used = |s: &Value| -> BTreeSet<i64> {
            ports(s)
                .iter()
                .map(node_port_of)
                .filter(|p| *p != 0)
                .collect()
        };
        // Values the new object already uses elsewhere cannot be patched in.
        let in_both: BTreeSet<i64> = used(old).intersection(&used(new)).copied().collect();
        // Ports are matched by name: the client may have changed anything else about them.
        let by_name: BTreeMap<String, i64> = ports(old)
            .iter()
            .map(|p| {
                (
                    p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    node_port_of(p),
                )
            })
            .collect();
        if let Some(new_ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in new_ports.iter_mut() {
                if node_port_of(port) != 0 {
                    continue;
                }
                let name = port.get("name").and_then(Value::as_str).unwrap_or("");
                if let Some(old_port) = by_name.get(name).copied().filter(|p| *p != 0)
                    && !in_both.contains(&old_port)
                    && let Some(map) = port.as_object_mut()
                {
                    map.insert("nodePort".into(), json!(old_port));
                }
            }
        }
    }
    if needs_health_check(old) && needs_health_check(new) {
        let hc = new
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if hc == 0
            && let Some(old_hc) = old.pointer("/spec/healthCheckNodePort").cloned()
        {
            spec_mut(new).insert("healthCheckNodePort".into(), old_hc);
        }
    }
}

fn spec_mut(service: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !service.get("spec").is_some_and(Value::is_object) {
        service["spec"] = json!({});
    }
    service["spec"]
        .as_object_mut()
        .expect("spec was just made an object")
}

/// Go's `%#v` of a `[]string`, as upstream prints the clusterIPs in its messages.
fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values
        .iter()
        .map(|v| serde_json::to_string(v).unwrap_or_default())
        .collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// A value the client asked for by number, and how to refuse it if it is taken.
#[derive(Debug, Clone)]
enum Request {
    ClusterIp { ips: Vec<String>, ip: String },
    NodePort { index: usize, port: i64 },
    HealthCheck(i64),
}

impl Request {
    /// The error for a requested value that another Service holds, worded as upstream's.
    fn already_allocated(&self, info: &ResourceInfo, name: &str) -> ApiError {
        match self {
            Request::ClusterIp { ips, ip } => ApiError::invalid(
                info,
                name,
                &[field_invalid(
                    "spec.clusterIPs",
                    go_string_slice(ips),
                    format!("failed to allocate IP {ip}: provided IP is already allocated"),
                )],
            ),
            Request::NodePort { index, port } => ApiError::invalid(
                info,
                name,
                &[field_invalid(
                    &format!("spec.ports[{index}].nodePort"),
                    port.to_string(),
                    "provided port is already allocated".to_string(),
                )],
            ),
            Request::HealthCheck(port) => ApiError::internal(format!(
                "failed to allocate requested HealthCheck NodePort {port}: provided port is already allocated"
            )),
        }
    }
}

fn field_invalid(field: &str, value: String, detail: String) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Invalid,
        field: field.to_string(),
        value: Some(value),
        detail,
    }
}

/// The Service allocators of one API server: the ranges, and which values are taken.
pub struct ServiceAllocations {
    cidr: ServiceCidr,
    node_ports: NodePortRange,
    pools: Mutex<Pools>,
}

#[derive(Debug)]
struct Pools {
    ips: Pool,
    ports: Pool,
}

impl Pools {
    /// The pool and position of a claim, if it is inside its range.
    fn slot(
        &mut self,
        ranges: (&ServiceCidr, &NodePortRange),
        claim: Claim,
    ) -> Option<(&mut Pool, u32)> {
        match claim {
            Claim::Ip(ip) => Some((&mut self.ips, ranges.0.offset_of(ip)?)),
            Claim::NodePort(port) => Some((&mut self.ports, ranges.1.offset_of(i64::from(port))?)),
        }
    }
}

/// What a repair pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Keys freed because no Service holds their value any more.
    pub freed: Vec<Claim>,
    /// Keys written for values Services held without one.
    pub repaired: Vec<Claim>,
    /// Values more than one Service holds (each Service but the key's owner is named).
    pub duplicates: Vec<(Claim, Owner)>,
    /// Values Services hold outside the configured ranges.
    pub out_of_range: Vec<(Claim, Owner)>,
}

impl ServiceAllocations {
    /// Allocators over the two ranges, with nothing taken: [`ServiceAllocations::repair`]
    /// loads what the store holds.
    pub fn new(cidr: ServiceCidr, node_ports: NodePortRange) -> Arc<Self> {
        Arc::new(ServiceAllocations {
            cidr,
            node_ports,
            pools: Mutex::new(Pools {
                ips: cidr.pool(),
                ports: node_ports.pool(),
            }),
        })
    }

    pub fn cidr(&self) -> ServiceCidr {
        self.cidr
    }

    pub fn node_port_range(&self) -> NodePortRange {
        self.node_ports
    }

    fn pools(&self) -> MutexGuard<'_, Pools> {
        // A panic while holding the lock leaves the pools as consistent as between any two
        // calls (every change is one bit), so a poisoned lock is still usable.
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many cluster IPs and node ports the in-memory view has taken (tests, metrics).
    pub fn counts(&self) -> (u32, u32) {
        let pools = self.pools();
        (pools.ips.count(), pools.ports.count())
    }

    /// Works out what a write of a Service does to the allocations: `old` is the stored
    /// Service (`None` for a create), `new` the Service to store, into which the allocated
    /// values are filled; `gone` means the write deletes the Service, giving up everything.
    /// Values the write takes are marked in memory until the [`Plan`] is settled.
    pub(crate) fn plan(
        self: &Arc<Self>,
        info: &'static ResourceInfo,
        old: Option<&Value>,
        new: &mut Value,
        gone: bool,
    ) -> ApiResult<Plan> {
        let owner = Owner::of(old.unwrap_or(new));
        let old_held = old.map(held).unwrap_or_default();
        let mut requested = BTreeMap::new();
        let mut reserved = Vec::new();
        if !gone {
            let mut pools = self.pools();
            let filled = self.fill(
                &mut pools,
                info,
                old,
                &old_held,
                new,
                &mut reserved,
                &mut requested,
            );
            if let Err(e) = filled {
                for claim in &reserved {
                    if let Some((pool, slot)) = pools.slot((&self.cidr, &self.node_ports), *claim) {
                        pool.release(slot);
                    }
                }
                return Err(e);
            }
        }
        let new_held = if gone { BTreeSet::new() } else { held(new) };
        Ok(Plan {
            alloc: self.clone(),
            info,
            owner,
            create: new_held.difference(&old_held).copied().collect(),
            release: old_held.difference(&new_held).copied().collect(),
            requested,
            reserved,
            settled: false,
        })
    }

    /// Allocates what `new` needs and does not have yet (upstream's `allocateCreate` /
    /// `allocateUpdate`), reserving each value in `pools`.
    #[allow(clippy::too_many_arguments)] // One step of `plan`, split out so its lock is held once.
    fn fill(
        &self,
        pools: &mut Pools,
        info: &'static ResourceInfo,
        old: Option<&Value>,
        old_held: &BTreeSet<Claim>,
        new: &mut Value,
        reserved: &mut Vec<Claim>,
        requested: &mut BTreeMap<Claim, Request>,
    ) -> ApiResult<()> {
        let name = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut rng = rand::rng();
        let type_ = service_type(new).to_string();

        // Cluster IPs (upstream's allocClusterIPs): not for ExternalName, not for headless.
        if type_ != "ExternalName" {
            let from_nothing = old.is_none_or(|o| service_type(o) == "ExternalName");
            if from_nothing {
                self.check_families(info, &name, new)?;
            }
            if !is_headless(new) {
                let ips = cluster_ips(new);
                match ips.first() {
                    None => {
                        let slot = pools.ips.take_next(&mut rng).ok_or_else(|| {
                            ApiError::internal("failed to allocate a serviceIP: range is full")
                        })?;
                        let ip = self.cidr.ip_at(slot);
                        reserved.push(Claim::Ip(ip));
                        let spec = spec_mut(new);
                        spec.insert("clusterIP".into(), json!(ip.to_string()));
                        spec.insert("clusterIPs".into(), json!([ip.to_string()]));
                    }
                    Some(first) => {
                        if let Ok(ip) = first.parse::<Ipv4Addr>()
                            && !old_held.contains(&Claim::Ip(ip))
                        {
                            let Some(slot) = self.cidr.offset_of(ip) else {
                                return Err(ApiError::invalid(
                                    info,
                                    &name,
                                    &[field_invalid(
                                        "spec.clusterIPs",
                                        go_string_slice(&ips),
                                        format!(
                                            "failed to allocate IP {first}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                                            self.cidr
                                        ),
                                    )],
                                ));
                            };
                            if pools.ips.take(slot) {
                                reserved.push(Claim::Ip(ip));
                            }
                            requested.insert(
                                Claim::Ip(ip),
                                Request::ClusterIp {
                                    ips: ips.clone(),
                                    ip: first.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }

        // Node ports (upstream's initNodePorts on create, updateNodePorts on update).
        let mut node_ports: BTreeSet<i64> = BTreeSet::new();
        if needs_node_ports(new) {
            let should_allocate = should_allocate_node_ports(new);
            let mut list = ports(new);
            // On create, ports with the same number (TCP and UDP 53) share one node port.
            let mut by_number: BTreeMap<i64, i64> = BTreeMap::new();
            for i in 0..list.len() {
                let number = list[i].get("port").and_then(Value::as_i64).unwrap_or(0);
                let mut wanted = node_port_of(&list[i]);
                if wanted == 0 && old.is_none() {
                    if let Some(shared) = by_number.get(&number) {
                        list[i]["nodePort"] = json!(shared);
                        continue;
                    }
                    // upstream's findRequestedNodePort: a later port of the same number may
                    // name the node port both should use.
                    wanted = list
                        .iter()
                        .filter(|p| p.get("port").and_then(Value::as_i64) == Some(number))
                        .map(node_port_of)
                        .find(|np| *np != 0)
                        .unwrap_or(0);
                }
                if wanted == 0 {
                    if !should_allocate {
                        // Only ports asked for by number, then.
                        continue;
                    }
                    let slot = pools.ports.take_next(&mut rng).ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?;
                    let port = self.node_ports.port_at(slot);
                    reserved.push(Claim::NodePort(port));
                    wanted = i64::from(port);
                } else if !node_ports.contains(&wanted)
                    && !as_port(wanted).is_some_and(|p| old_held.contains(&Claim::NodePort(p)))
                {
                    let in_range = self.node_ports.offset_of(wanted);
                    let (Some(slot), Some(port)) = (in_range, as_port(wanted)) else {
                        return Err(ApiError::invalid(
                            info,
                            &name,
                            &[field_invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                wanted.to_string(),
                                format!(
                                    "provided port is not in the valid range. The range of valid ports is {}",
                                    self.node_ports
                                ),
                            )],
                        ));
                    };
                    if pools.ports.take(slot) {
                        reserved.push(Claim::NodePort(port));
                    }
                    requested.insert(
                        Claim::NodePort(port),
                        Request::NodePort {
                            index: i,
                            port: wanted,
                        },
                    );
                }
                list[i]["nodePort"] = json!(wanted);
                by_number.entry(number).or_insert(wanted);
                node_ports.insert(wanted);
            }
            if !list.is_empty() {
                spec_mut(new).insert("ports".into(), Value::Array(list));
            }
        }

        // The health check node port (upstream's allocHealthCheckNodePort), which upstream
        // reports as an internal error rather than an invalid field.
        if needs_health_check(new) {
            let hc = new
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if hc == 0 {
                let slot = pools.ports.take_next(&mut rng).ok_or_else(|| {
                    // Upstream prints the port it failed to get, which is always 0.
                    ApiError::internal("failed to allocate a HealthCheck NodePort 0: range is full")
                })?;
                let port = self.node_ports.port_at(slot);
                reserved.push(Claim::NodePort(port));
                spec_mut(new).insert("healthCheckNodePort".into(), json!(port));
            } else if !as_port(hc).is_some_and(|p| old_held.contains(&Claim::NodePort(p))) {
                let requested_error = |why: &str| {
                    ApiError::internal(format!(
                        "failed to allocate requested HealthCheck NodePort {hc}: {why}"
                    ))
                };
                if node_ports.contains(&hc) {
                    return Err(requested_error("provided port is already allocated"));
                }
                let (Some(slot), Some(port)) = (self.node_ports.offset_of(hc), as_port(hc)) else {
                    return Err(requested_error(&format!(
                        "provided port is not in the valid range. The range of valid ports is {}",
                        self.node_ports
                    )));
                };
                if pools.ports.take(slot) {
                    reserved.push(Claim::NodePort(port));
                }
                requested.insert(Claim::NodePort(port), Request::HealthCheck(hc));
            }
        }
        Ok(())
    }

    /// The part of upstream's `initIPFamilyFields` a single-stack IPv4 cluster needs: a Service
    /// that asks for IPv6 or for dual-stack cannot have it here.
    fn check_families(&self, info: &ResourceInfo, name: &str, new: &Value) -> ApiResult<()> {
        if is_headless(new) {
            // Headless Services may name both families; they get no addresses.
            return Ok(());
        }
        let mut errors = Vec::new();
        if spec_str(new, "ipFamilyPolicy") == "RequireDualStack" {
            errors.push(field_invalid(
                "spec.ipFamilyPolicy",
                "\"RequireDualStack\"".into(),
                "this cluster is not configured for dual-stack services".into(),
            ));
        }
        let families = new
            .pointer("/spec/ipFamilies")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, family) in families.iter().enumerate() {
            let family = family.as_str().unwrap_or("");
            if family != "IPv4" {
                errors.push(field_invalid(
                    &format!("spec.ipFamilies[{i}]"),
                    serde_json::to_string(family).unwrap_or_default(),
                    "not configured on this cluster".into(),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(info, name, &errors))
        }
    }

    /// Makes the allocation keys match the Services in the store and loads the in-memory view
    /// from them. Run before the server takes requests: it assumes no one else writes
    /// Services or allocation keys meanwhile.
    pub async fn repair(
        &self,
        store: &dyn Store,
        services_prefix: &str,
    ) -> ApiResult<RepairReport> {
        let mut report = RepairReport::default();
        // Who holds what, by the Services.
        let mut holders: BTreeMap<Claim, Vec<Owner>> = BTreeMap::new();
        for kv in store
            .range(RangeRequest::prefix(services_prefix))
            .await?
            .kvs
        {
            let Ok(service) = serde_json::from_slice::<Value>(&kv.value) else {
                tracing::warn!(key = %kv.key, "a stored Service is not JSON; its allocations are not repaired");
                continue;
            };
            let owner = Owner::of(&service);
            for claim in held(&service) {
                holders.entry(claim).or_default().push(owner.clone());
            }
        }
        // Who holds what, by the keys.
        let mut keys: BTreeMap<Claim, (Option<Owner>, Revision)> = BTreeMap::new();
        for prefix in [SERVICE_IPS_PREFIX, SERVICE_NODE_PORTS_PREFIX] {
            for kv in store.range(RangeRequest::prefix(prefix)).await?.kvs {
                match Claim::from_key(&kv.key) {
                    Some(claim) => {
                        keys.insert(claim, (Owner::decode(&kv), kv.mod_revision));
                    }
                    None => {
                        tracing::warn!(key = %kv.key, "removing an allocation key that names no value");
                        ops::delete_if(store, &kv.key, kv.mod_revision).await?;
                    }
                }
            }
        }
        // Free the keys whose owner no longer holds their value (upstream: "appears to have
        // leaked: cleaning up"). The store's transactions leave none behind; this is for data
        // written any other way.
        let mut valid: BTreeMap<Claim, Owner> = BTreeMap::new();
        for (claim, (owner, revision)) in keys {
            let holds = owner.as_ref().is_some_and(|o| {
                holders
                    .get(&claim)
                    .is_some_and(|hs| hs.iter().any(|h| h.uid == o.uid))
            });
            match owner {
                Some(owner) if holds => {
                    valid.insert(claim, owner);
                }
                _ => {
                    tracing::info!(%claim, "the {claim} appears to have leaked: cleaning up");
                    ops::delete_if(store, &claim.key(), revision).await?;
                    report.freed.push(claim);
                }
            }
        }
        // Give every held value its key.
        for (claim, owners) in &holders {
            let in_range = match claim {
                Claim::Ip(ip) => self.cidr.offset_of(*ip).is_some(),
                Claim::NodePort(port) => self.node_ports.offset_of(i64::from(*port)).is_some(),
            };
            let keeper = match valid.get(claim) {
                Some(owner) => owner.clone(),
                None if !in_range => {
                    for owner in owners {
                        match claim {
                            Claim::Ip(ip) => {
                                tracing::warn!(service = %owner, "Cluster IP [IPv4]: {ip} is not within the configured Service CIDR {}; please recreate service", self.cidr)
                            }
                            Claim::NodePort(port) => {
                                tracing::warn!(service = %owner, "Port {port} is not within the port range {}; please recreate service", self.node_ports)
                            }
                        }
                        report.out_of_range.push((*claim, owner.clone()));
                    }
                    continue;
                }
                None => {
                    let owner = owners[0].clone();
                    match claim {
                        Claim::Ip(ip) => {
                            tracing::warn!(service = %owner, "Cluster IP [IPv4]:{ip} is not allocated; repairing")
                        }
                        Claim::NodePort(port) => {
                            tracing::warn!(service = %owner, "Port {port} is not allocated; repairing")
                        }
                    }
                    match ops::create(store, &claim.key(), owner.encode()).await? {
                        Written::Ok(_) => report.repaired.push(*claim),
                        Written::Conflict(_) => {
                            return Err(ApiError::internal(format!(
                                "the allocation of the {claim} changed during the repair at start"
                            )));
                        }
                    }
                    valid.insert(*claim, owner.clone());
                    owner
                }
            };
            for owner in owners.iter().filter(|o| o.uid != keeper.uid) {
                match claim {
                    Claim::Ip(ip) => {
                        tracing::warn!(service = %owner, "Cluster IP [IPv4]:{ip} was assigned to multiple services; please recreate service")
                    }
                    Claim::NodePort(port) => {
                        tracing::warn!(service = %owner, "Port {port} was assigned to multiple services; please recreate service")
                    }
                }
                report.duplicates.push((*claim, owner.clone()));
            }
        }
        let mut pools = Pools {
            ips: self.cidr.pool(),
            ports: self.node_ports.pool(),
        };
        for claim in valid.keys() {
            if let Some((pool, slot)) = pools.slot((&self.cidr, &self.node_ports), *claim) {
                pool.take(slot);
            }
        }
        *self.pools() = pools;
        Ok(report)
    }

    /// Every allocation key in the store and its owner (tests and debugging).
    pub async fn stored(store: &dyn Store) -> ApiResult<BTreeMap<Claim, Owner>> {
        let mut out = BTreeMap::new();
        for prefix in [SERVICE_IPS_PREFIX, SERVICE_NODE_PORTS_PREFIX] {
            for kv in store.range(RangeRequest::prefix(prefix)).await?.kvs {
                if let (Some(claim), Some(owner)) = (Claim::from_key(&kv.key), Owner::decode(&kv)) {
                    out.insert(claim, owner);
                }
            }
        }
        Ok(out)
    }
}

/// What one write of a Service does to the allocations, from [`ServiceAllocations::plan`]
/// until it is written ([`write`]) or dropped, which gives back what it reserved in memory.
pub(crate) struct Plan {
    alloc: Arc<ServiceAllocations>,
    info: &'static ResourceInfo,
    owner: Owner,
    /// Keys to create: values the new Service holds and the old did not.
    create: Vec<Claim>,
    /// Keys to delete: values the old Service held and the new does not.
    release: Vec<Claim>,
    /// The new values the client asked for by number, and how to refuse each.
    requested: BTreeMap<Claim, Request>,
    /// Values this plan marked taken in memory (and so must unmark if it is not written).
    reserved: Vec<Claim>,
    settled: bool,
}

impl Plan {
    fn ranges(&self) -> (&ServiceCidr, &NodePortRange) {
        (&self.alloc.cidr, &self.alloc.node_ports)
    }

    /// The write happened: the new values stay taken, the released ones are free.
    fn commit(mut self, released: &[Claim]) {
        let mut pools = self.alloc.pools();
        let ranges = (&self.alloc.cidr, &self.alloc.node_ports);
        for claim in &self.create {
            if let Some((pool, slot)) = pools.slot(ranges, *claim) {
                pool.take(slot);
            }
        }
        for claim in released {
            if let Some((pool, slot)) = pools.slot(ranges, *claim) {
                pool.release(slot);
            }
        }
        drop(pools);
        self.settled = true;
    }

    /// The write did not happen: give back what was reserved, except values found taken.
    fn abort(mut self, taken: &[Claim]) {
        self.undo(taken);
        self.settled = true;
    }

    fn undo(&self, taken: &[Claim]) {
        let mut pools = self.alloc.pools();
        let ranges = self.ranges();
        for claim in &self.reserved {
            if !taken.contains(claim)
                && let Some((pool, slot)) = pools.slot(ranges, *claim)
            {
                pool.release(slot);
            }
        }
        for claim in taken {
            if let Some((pool, slot)) = pools.slot(ranges, *claim) {
                pool.take(slot);
            }
        }
    }

    /// The outcome is unknown (the store failed): keep everything marked taken, which can
    /// only make random picks avoid a value until the next start's repair.
    fn forget(mut self) {
        self.settled = true;
    }

    /// A dry run: refuses requested values that are taken, as the real write would, and
    /// gives everything back.
    pub(crate) async fn dry_run(self, store: &dyn Store) -> ApiResult<()> {
        let mut refused = None;
        for (claim, request) in &self.requested {
            if ops::get(store, &claim.key()).await?.0.is_some() {
                refused = Some(request.already_allocated(self.info, &self.owner.name));
                break;
            }
        }
        self.abort(&[]);
        refused.map_or(Ok(()), Err)
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        if !self.settled {
            self.undo(&[]);
        }
    }
}

/// What the Service write itself is.
pub(crate) enum ServiceOp {
    Put(Bytes),
    Delete,
}

/// How a write with allocations ended.
pub(crate) enum Outcome {
    /// Written; the Service's new revision.
    Written(Revision),
    /// The Service is not at the expected revision (for a create: it exists).
    ServiceChanged,
    /// A value picked at random was taken meanwhile, or a released key changed: plan again.
    Retry,
    /// A value the client asked for is taken.
    Refused(ApiError),
}

/// Writes a Service at `key` (expected at `expected`, 0 for a create) together with its
/// allocation keys, and settles the plan. Run it to completion (spawned): the in-memory view
/// must learn how the write ended even if the client goes away.
pub(crate) async fn write(
    store: Arc<dyn Store>,
    key: String,
    expected: Revision,
    op: ServiceOp,
    plan: Plan,
) -> ApiResult<Outcome> {
    // The keys to give up, at the revisions they are read at: only those this Service owns.
    let mut releases = Vec::new();
    for claim in plan.release.clone() {
        let claim_key = claim.key();
        let kv = match ops::get(store.as_ref(), &claim_key).await {
            Ok((kv, _)) => kv,
            Err(e) => {
                plan.abort(&[]);
                return Err(e.into());
            }
        };
        match kv {
            Some(kv) if Owner::decode(&kv).is_some_and(|o| o.uid == plan.owner.uid) => {
                releases.push((claim, kv.mod_revision));
            }
            Some(kv) => tracing::warn!(
                %claim, service = %plan.owner, holder = ?Owner::decode(&kv),
                "not releasing the {claim}: another Service holds it"
            ),
            None => {}
        }
    }
    let mut compares = vec![Compare::ModRevisionEquals {
        key: key.clone(),
        revision: expected,
    }];
    let mut success = vec![match op {
        ServiceOp::Put(value) => Op::Put {
            key: key.clone(),
            value,
        },
        ServiceOp::Delete => Op::Delete { key: key.clone() },
    }];
    let mut failure = vec![Op::Get { key: key.clone() }];
    let value = plan.owner.encode();
    for claim in &plan.create {
        compares.push(Compare::ModRevisionEquals {
            key: claim.key(),
            revision: 0,
        });
        success.push(Op::Put {
            key: claim.key(),
            value: value.clone(),
        });
        failure.push(Op::Get { key: claim.key() });
    }
    for (claim, revision) in &releases {
        compares.push(Compare::ModRevisionEquals {
            key: claim.key(),
            revision: *revision,
        });
        success.push(Op::Delete { key: claim.key() });
    }
    let response = match store
        .txn(Txn {
            compares,
            success,
            failure,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            plan.forget();
            return Err(e.into());
        }
    };
    if response.succeeded {
        let revision = match response.responses.first() {
            Some(OpResponse::Put { revision, .. } | OpResponse::Delete { revision, .. }) => {
                *revision
            }
            _ => response.revision,
        };
        let released: Vec<Claim> = releases.iter().map(|(c, _)| *c).collect();
        plan.commit(&released);
        return Ok(Outcome::Written(revision));
    }
    let got: Vec<Option<KeyValue>> = response
        .responses
        .into_iter()
        .map(|r| match r {
            OpResponse::Get { kv } => kv,
            _ => None,
        })
        .collect();
    let service_revision = got
        .first()
        .and_then(|kv| kv.as_ref())
        .map_or(0, |kv| kv.mod_revision);
    let taken: Vec<Claim> = plan
        .create
        .iter()
        .zip(got.iter().skip(1))
        .filter(|(_, kv)| kv.is_some())
        .map(|(claim, _)| *claim)
        .collect();
    if service_revision != expected {
        plan.abort(&taken);
        return Ok(Outcome::ServiceChanged);
    }
    let refused = taken
        .iter()
        .find_map(|claim| plan.requested.get(claim))
        .map(|request| request.already_allocated(plan.info, &plan.owner.name));
    plan.abort(&taken);
    Ok(match refused {
        Some(error) => Outcome::Refused(error),
        None => Outcome::Retry,
    })
}

#[cfg(test)]
mod tests;
