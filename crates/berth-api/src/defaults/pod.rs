//! Pod and PodSpec defaults (`SetDefaults_PodSpec`, `SetDefaults_Pod`, `SetDefaults_Container`,
//! the volume source defaults) and what Kubernetes' pod admission adds to every pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, PodStatus,
    PodTemplateSpec, Probe, ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::validation::quantity::Quantity as Parsed;

/// 0644, the mode Kubernetes gives files projected from secrets and config maps.
const DEFAULT_MODE: i32 = 0o644;

/// Defaults for a pod template embedded in a workload.
pub(super) fn template(t: &mut PodTemplateSpec) {
    pod_spec(t.spec.get_or_insert_with(Default::default));
}

/// `SetDefaults_PodSpec` and the defaults of everything a PodSpec holds.
pub(super) fn pod_spec(spec: &mut PodSpec) {
    if spec.dns_policy.as_deref().unwrap_or("").is_empty() {
        spec.dns_policy = Some("ClusterFirst".to_string());
    }
    if spec.restart_policy.as_deref().unwrap_or("").is_empty() {
        spec.restart_policy = Some("Always".to_string());
    }
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext::default());
    }
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(30);
    }
    if spec.scheduler_name.as_deref().unwrap_or("").is_empty() {
        spec.scheduler_name = Some("default-scheduler".to_string());
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume(v);
    }
    for c in spec.containers.iter_mut() {
        container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        container(c);
    }
    for ec in spec.ephemeral_containers.iter_mut().flatten() {
        if ec
            .termination_message_path
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            ec.termination_message_path = Some("/dev/termination-log".to_string());
        }
        if ec
            .termination_message_policy
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            ec.termination_message_policy = Some("File".to_string());
        }
        if ec.image_pull_policy.as_deref().unwrap_or("").is_empty() {
            ec.image_pull_policy =
                Some(pull_policy_for(ec.image.as_deref().unwrap_or("")).to_string());
        }
    }
}

fn host_network_ports(containers: &mut [Container]) {
    for c in containers {
        for p in c.ports.iter_mut().flatten() {
            if p.host_port.unwrap_or(0) == 0 {
                p.host_port = Some(p.container_port);
            }
        }
    }
}

/// Always for `:latest` or an untagged image, else IfNotPresent; a digest counts as a tag.
pub(crate) fn pull_policy_for(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or("");
    let has_digest = image.contains('@');
    let last_segment = without_digest.rsplit('/').next().unwrap_or("");
    let tag = last_segment.split_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if has_digest => "IfNotPresent",
        None if image.is_empty() => "IfNotPresent",
        None => "Always",
    }
}

fn container(c: &mut Container) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(pull_policy_for(c.image.as_deref().unwrap_or("")).to_string());
    }
    if c.termination_message_path
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_path = Some("/dev/termination-log".to_string());
    }
    if c.termination_message_policy
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_policy = Some("File".to_string());
    }
    if c.resources.is_none() {
        // Go's non-pointer struct always shows as `resources: {}`.
        c.resources = Some(ResourceRequirements::default());
    }
    for p in c.ports.iter_mut().flatten() {
        if p.protocol.as_deref().unwrap_or("").is_empty() {
            p.protocol = Some("TCP".to_string());
        }
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe(p);
    }
    if let Some(l) = &mut c.lifecycle {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(http) = &mut h.http_get {
                http_get(http);
            }
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(fr) = env.value_from.as_mut().and_then(|f| f.field_ref.as_mut()) {
            field_selector(fr);
        }
    }
}

fn probe(p: &mut Probe) {
    let zero_or_none = |v: Option<i32>| v.unwrap_or(0) == 0;
    if zero_or_none(p.timeout_seconds) {
        p.timeout_seconds = Some(1);
    }
    if zero_or_none(p.period_seconds) {
        p.period_seconds = Some(10);
    }
    if zero_or_none(p.success_threshold) {
        p.success_threshold = Some(1);
    }
    if zero_or_none(p.failure_threshold) {
        p.failure_threshold = Some(3);
    }
    if let Some(http) = &mut p.http_get {
        http_get(http);
    }
}

fn http_get(h: &mut HTTPGetAction) {
    if h.path.as_deref().unwrap_or("").is_empty() {
        h.path = Some("/".to_string());
    }
    if h.scheme.as_deref().unwrap_or("").is_empty() {
        h.scheme = Some("HTTP".to_string());
    }
}

fn field_selector(f: &mut ObjectFieldSelector) {
    if f.api_version.as_deref().unwrap_or("").is_empty() {
        f.api_version = Some("v1".to_string());
    }
}

fn volume(v: &mut Volume) {
    let has_source = v.aws_elastic_block_store.is_some()
        || v.azure_disk.is_some()
        || v.azure_file.is_some()
        || v.cephfs.is_some()
        || v.cinder.is_some()
        || v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.fc.is_some()
        || v.flex_volume.is_some()
        || v.flocker.is_some()
        || v.gce_persistent_disk.is_some()
        || v.git_repo.is_some()
        || v.glusterfs.is_some()
        || v.host_path.is_some()
        || v.image.is_some()
        || v.iscsi.is_some()
        || v.nfs.is_some()
        || v.persistent_volume_claim.is_some()
        || v.photon_persistent_disk.is_some()
        || v.portworx_volume.is_some()
        || v.projected.is_some()
        || v.quobyte.is_some()
        || v.rbd.is_some()
        || v.scale_io.is_some()
        || v.secret.is_some()
        || v.storageos.is_some()
        || v.vsphere_volume.is_some();
    if !has_source {
        v.empty_dir = Some(Default::default());
    }
    if let Some(s) = &mut v.secret
        && s.default_mode.is_none()
    {
        s.default_mode = Some(DEFAULT_MODE);
    }
    if let Some(c) = &mut v.config_map
        && c.default_mode.is_none()
    {
        c.default_mode = Some(DEFAULT_MODE);
    }
    if let Some(d) = &mut v.downward_api {
        if d.default_mode.is_none() {
            d.default_mode = Some(DEFAULT_MODE);
        }
        for f in d.items.iter_mut().flatten() {
            if let Some(fr) = &mut f.field_ref {
                field_selector(fr);
            }
        }
    }
    if let Some(p) = &mut v.projected {
        if p.default_mode.is_none() {
            p.default_mode = Some(DEFAULT_MODE);
        }
        for src in p.sources.iter_mut().flatten() {
            if let Some(t) = &mut src.service_account_token
                && t.expiration_seconds.is_none()
            {
                t.expiration_seconds = Some(3600);
            }
            for f in src
                .downward_api
                .iter_mut()
                .flat_map(|d| d.items.iter_mut().flatten())
            {
                if let Some(fr) = &mut f.field_ref {
                    field_selector(fr);
                }
            }
        }
    }
    if let Some(h) = &mut v.host_path
        && h.type_.is_none()
    {
        h.type_ = Some(String::new());
    }
    if let Some(t) = v
        .ephemeral
        .as_mut()
        .and_then(|e| e.volume_claim_template.as_mut())
        && t.spec.volume_mode.is_none()
    {
        t.spec.volume_mode = Some("Filesystem".to_string());
    }
}

/// `SetDefaults_Pod`, then what the ServiceAccount, Priority and DefaultTolerationSeconds
/// admission plugins and the pod create strategy add.
pub(super) fn pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        requests_from_limits(c);
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    if spec.host_network == Some(true) {
        // Only pods: for templates this hides behind a feature gate that is off.
        host_network_ports(&mut spec.containers);
        if let Some(init) = &mut spec.init_containers {
            host_network_ports(init);
        }
    }
    pod_spec(spec);
    if spec
        .service_account_name
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        let sa = spec
            .service_account
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string());
        spec.service_account_name = Some(sa);
    }
    if spec.service_account.as_deref().unwrap_or("").is_empty() {
        spec.service_account.clone_from(&spec.service_account_name);
    }
    if spec.priority.is_none() && spec.priority_class_name.as_deref().unwrap_or("").is_empty() {
        spec.priority = Some(0);
    }
    if spec.preemption_policy.is_none() {
        spec.preemption_policy = Some("PreemptLowerPriority".to_string());
    }
    default_tolerations(spec.tolerations.get_or_insert_with(Vec::new));
    let qos = qos_class(spec);
    let status = pod.status.get_or_insert_with(PodStatus::default);
    if status.phase.as_deref().unwrap_or("").is_empty() {
        status.phase = Some("Pending".to_string());
    }
    if status.qos_class.as_deref().unwrap_or("").is_empty() {
        status.qos_class = Some(qos.to_string());
    }
}

/// Requests default to limits for each resource given a limit only.
fn requests_from_limits(c: &mut Container) {
    let Some(res) = &mut c.resources else {
        return;
    };
    let Some(limits) = &res.limits else {
        return;
    };
    let requests = res.requests.get_or_insert_with(BTreeMap::new);
    for (k, v) in limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// DefaultTolerationSeconds: pods ride out 5 minutes of a not-ready or unreachable node.
fn default_tolerations(tolerations: &mut Vec<Toleration>) {
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = tolerations.iter().any(|t| {
            let effect = t.effect.as_deref().unwrap_or("");
            (t.key.as_deref() == Some(key) || t.key.as_deref().unwrap_or("").is_empty())
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            tolerations.push(Toleration {
                key: Some(key.to_string()),
                operator: Some("Exists".to_string()),
                effect: Some("NoExecute".to_string()),
                toleration_seconds: Some(300),
                value: None,
            });
        }
    }
}

fn nonzero(q: &Quantity) -> bool {
    Parsed::parse(&q.0).is_some_and(|p| !p.is_zero())
}

/// The pod's QoS class, as `qos.GetPodQOS` computes it for a valid pod.
fn qos_class(spec: &PodSpec) -> &'static str {
    let containers = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    let compute = |m: Option<&BTreeMap<String, Quantity>>| -> Vec<(String, Quantity)> {
        m.into_iter()
            .flatten()
            .filter(|(k, q)| (k.as_str() == "cpu" || k.as_str() == "memory") && nonzero(q))
            .map(|(k, q)| (k.clone(), q.clone()))
            .collect()
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in containers() {
        let res = c.resources.as_ref();
        let requests = compute(res.and_then(|r| r.requests.as_ref()));
        let limits = compute(res.and_then(|r| r.limits.as_ref()));
        any |= !requests.is_empty() || !limits.is_empty();
        let has = |name: &str| limits.iter().any(|(k, _)| k == name);
        if !has("cpu") || !has("memory") {
            guaranteed = false;
        }
        for (name, req) in &requests {
            let same = limits.iter().any(|(k, lim)| {
                k == name
                    && matches!((Parsed::parse(&lim.0), Parsed::parse(&req.0)), (Some(a), Some(b)) if a.cmp(&b).is_eq())
            });
            if !same {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(key: Option<&str>, effect: Option<&str>, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some("Exists".to_string()),
            effect: effect.map(str::to_string),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn keys_and_seconds(tolerations: &[Toleration]) -> Vec<(String, Option<i64>)> {
        tolerations
            .iter()
            .map(|t| (t.key.clone().unwrap_or_default(), t.toleration_seconds))
            .collect()
    }

    #[test]
    fn default_toleration_seconds_fill_in_only_what_the_pod_does_not_tolerate() {
        let unreachable = "node.kubernetes.io/unreachable";
        let not_ready = "node.kubernetes.io/not-ready";
        // The pod's own unreachable toleration stays as it is; not-ready gets 300 s.
        let mut own = vec![toleration(Some(unreachable), Some("NoExecute"), Some(3))];
        default_tolerations(&mut own);
        assert_eq!(
            keys_and_seconds(&own),
            [
                (unreachable.to_string(), Some(3)),
                (not_ready.to_string(), Some(300))
            ]
        );
        // One without an effect covers NoExecute too.
        let mut any_effect = vec![toleration(Some(not_ready), None, None)];
        default_tolerations(&mut any_effect);
        assert_eq!(
            keys_and_seconds(&any_effect),
            [
                (not_ready.to_string(), None),
                (unreachable.to_string(), Some(300))
            ]
        );
        // A NoSchedule toleration does not cover the NoExecute taint: both defaults added.
        let mut no_schedule = vec![toleration(Some(unreachable), Some("NoSchedule"), None)];
        default_tolerations(&mut no_schedule);
        assert_eq!(no_schedule.len(), 3);
        assert_eq!(
            no_schedule[2],
            toleration(Some(unreachable), Some("NoExecute"), Some(300))
        );
        // Running it twice adds nothing more.
        let before = no_schedule.clone();
        default_tolerations(&mut no_schedule);
        assert_eq!(no_schedule, before);
    }
}
