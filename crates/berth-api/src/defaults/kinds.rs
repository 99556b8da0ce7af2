//! Defaults for every kind but Pod: Services (including the cluster IP bookkeeping of the
//! Service create strategy), Namespaces, Nodes, Secrets, Endpoints, volumes and claims,
//! StorageClasses, the apps/v1 workloads and EndpointSlices.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Endpoints, Namespace, NamespaceSpec, NamespaceStatus, Node, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
    PersistentVolumeStatus, Secret, Service, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod;

fn empty(o: &Option<String>) -> bool {
    o.as_deref().unwrap_or("").is_empty()
}

fn set(o: &mut Option<String>, v: &str) {
    if empty(o) {
        *o = Some(v.to_string());
    }
}

/// `SetDefaults_Service`, plus the create strategy's clusterIP/clusterIPs sync and the
/// single-stack IPv4 family choice berth's one node makes.
pub(super) fn service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    set(&mut spec.session_affinity, "None");
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let config = spec
            .session_affinity_config
            .get_or_insert_with(SessionAffinityConfig::default);
        let client_ip = config.client_ip.get_or_insert_with(ClientIPConfig::default);
        if client_ip.timeout_seconds.is_none() {
            client_ip.timeout_seconds = Some(10800);
        }
    }
    set(&mut spec.type_, "ClusterIP");
    for port in spec.ports.iter_mut().flatten() {
        set(&mut port.protocol, "TCP");
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let type_ = spec.type_.clone().unwrap_or_default();
    if type_ == "NodePort" || type_ == "LoadBalancer" {
        set(&mut spec.external_traffic_policy, "Cluster");
    }
    if spec.internal_traffic_policy.is_none() && type_ != "ExternalName" {
        spec.internal_traffic_policy = Some("Cluster".to_string());
    }
    if type_ == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        spec.allocate_load_balancer_node_ports = Some(true);
    }
    drop_type_dependent_fields(spec, &type_);
    if type_ == "ExternalName" {
        return;
    }
    // The strategy keeps clusterIP and clusterIPs[0] in step, whichever the client set.
    let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
    let first = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .cloned();
    match (cluster_ip.is_empty(), first) {
        (false, None) => spec.cluster_ips = Some(vec![cluster_ip]),
        (true, Some(first)) => spec.cluster_ip = Some(first),
        _ => {}
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let selectorless = spec.selector.as_ref().is_none_or(|s| s.is_empty());
    if spec.ip_family_policy.is_none() {
        // Kubernetes makes selector-less headless services dual-stack where it can.
        let policy = if headless && selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.ip_family_policy = Some(policy.to_string());
    }
    if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
        spec.ip_families = Some(vec!["IPv4".to_string()]);
    }
}

/// What Kubernetes' `dropTypeDependentFields` removes when a Service changes type: a patch
/// that turns a NodePort into a ClusterIP (or anything into an ExternalName) keeps the old
/// allocations, and Kubernetes drops them before validating. Without the old object at hand
/// this drops them whenever the type cannot have them, which also quietly accepts a create
/// that sets them (Kubernetes would refuse that one).
fn drop_type_dependent_fields(spec: &mut k8s_openapi::api::core::v1::ServiceSpec, type_: &str) {
    if type_ == "ExternalName" {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        spec.ip_families = None;
        spec.ip_family_policy = None;
    }
    if type_ == "ClusterIP" || type_ == "ExternalName" {
        for port in spec.ports.iter_mut().flatten() {
            port.node_port = None;
        }
    }
    let external_ips = spec.external_ips.as_ref().is_some_and(|e| !e.is_empty());
    let externally_accessible =
        type_ == "NodePort" || type_ == "LoadBalancer" || (type_ == "ClusterIP" && external_ips);
    if !externally_accessible {
        spec.external_traffic_policy = None;
    }
    let needs_health_check =
        type_ == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local");
    if !needs_health_check {
        spec.health_check_node_port = None;
    }
    if type_ != "LoadBalancer" {
        spec.allocate_load_balancer_node_ports = None;
        spec.load_balancer_class = None;
    }
}

/// The namespace create strategy: the `kubernetes` finalizer and phase Active. Skipped once the
/// namespace is being deleted, when the finalizer is meant to go away.
pub(super) fn namespace(ns: &mut Namespace) {
    if ns.metadata.deletion_timestamp.is_some() {
        return;
    }
    let spec = ns.spec.get_or_insert_with(NamespaceSpec::default);
    if spec.finalizers.is_none() {
        spec.finalizers = Some(vec!["kubernetes".to_string()]);
    }
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    set(&mut status.phase, "Active");
}

/// `SetDefaults_NodeStatus`: allocatable defaults to capacity.
pub(super) fn node(node: &mut Node) {
    if let Some(status) = &mut node.status
        && status.allocatable.is_none()
    {
        status.allocatable.clone_from(&status.capacity);
    }
}

/// `SetDefaults_Secret`, and the v1 conversion that folds `stringData` into `data`.
pub(super) fn secret(secret: &mut Secret) {
    set(&mut secret.type_, "Opaque");
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in string_data {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

pub(super) fn endpoints(ep: &mut Endpoints) {
    for port in ep
        .subsets
        .iter_mut()
        .flatten()
        .flat_map(|s| s.ports.iter_mut().flatten())
    {
        set(&mut port.protocol, "TCP");
    }
}

pub(super) fn persistent_volume(pv: &mut PersistentVolume) {
    let spec = pv.spec.get_or_insert_with(Default::default);
    set(&mut spec.persistent_volume_reclaim_policy, "Retain");
    set(&mut spec.volume_mode, "Filesystem");
    if let Some(hp) = &mut spec.host_path
        && hp.type_.is_none()
    {
        hp.type_ = Some(String::new());
    }
    let status = pv
        .status
        .get_or_insert_with(PersistentVolumeStatus::default);
    set(&mut status.phase, "Pending");
}

fn pvc_spec(spec: &mut PersistentVolumeClaimSpec) {
    set(&mut spec.volume_mode, "Filesystem");
}

pub(super) fn persistent_volume_claim(pvc: &mut PersistentVolumeClaim) {
    pvc_spec(pvc.spec.get_or_insert_with(Default::default));
    let status = pvc
        .status
        .get_or_insert_with(PersistentVolumeClaimStatus::default);
    set(&mut status.phase, "Pending");
}

pub(super) fn storage_class(sc: &mut StorageClass) {
    set(&mut sc.reclaim_policy, "Delete");
    set(&mut sc.volume_binding_mode, "Immediate");
}

fn quarter() -> IntOrString {
    IntOrString::String("25%".to_string())
}

/// apps/v1 `SetDefaults_Deployment`.
pub(super) fn deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    if spec.replicas.is_none() {
        spec.replicas = Some(1);
    }
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    set(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        if ru.max_unavailable.is_none() {
            ru.max_unavailable = Some(quarter());
        }
        if ru.max_surge.is_none() {
            ru.max_surge = Some(quarter());
        }
    }
    if spec.revision_history_limit.is_none() {
        spec.revision_history_limit = Some(10);
    }
    if spec.progress_deadline_seconds.is_none() {
        spec.progress_deadline_seconds = Some(600);
    }
    pod::template(&mut spec.template);
}

/// apps/v1 `SetDefaults_ReplicaSet`.
pub(super) fn replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    if spec.replicas.is_none() {
        spec.replicas = Some(1);
    }
    pod::template(spec.template.get_or_insert_with(Default::default));
}

/// apps/v1 `SetDefaults_StatefulSet`.
pub(super) fn stateful_set(sts: &mut StatefulSet) {
    let spec = sts.spec.get_or_insert_with(Default::default);
    set(&mut spec.pod_management_policy, "OrderedReady");
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    if empty(&strategy.type_) {
        strategy.type_ = Some("RollingUpdate".to_string());
        if strategy.rolling_update.is_none() {
            strategy.rolling_update = Some(RollingUpdateStatefulSetStrategy::default());
        }
    }
    if strategy.type_.as_deref() == Some("RollingUpdate")
        && let Some(ru) = &mut strategy.rolling_update
        && ru.partition.is_none()
    {
        ru.partition = Some(0);
    }
    let policy = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    set(&mut policy.when_deleted, "Retain");
    set(&mut policy.when_scaled, "Retain");
    if spec.replicas.is_none() {
        spec.replicas = Some(1);
    }
    if spec.revision_history_limit.is_none() {
        spec.revision_history_limit = Some(10);
    }
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        persistent_volume_claim(claim);
    }
    pod::template(&mut spec.template);
}

/// discovery/v1 `SetDefaults_EndpointPort`.
pub(super) fn endpoint_slice(es: &mut EndpointSlice) {
    for port in es.ports.iter_mut().flatten() {
        if port.name.is_none() {
            port.name = Some(String::new());
        }
        if port.protocol.is_none() {
            port.protocol = Some("TCP".to_string());
        }
    }
}
