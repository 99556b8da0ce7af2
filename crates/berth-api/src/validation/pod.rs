//! Pods and the PodSpec rules every pod template shares
//! (`pkg/apis/core/validation/validation.go`: ValidatePodSpec, ValidatePodUpdate, ...).
//!
//! Deployments, ReplicaSets and StatefulSets call [`validate_pod_template_spec`] with their
//! template's path, so the same checks report `spec.template.spec.containers[0].image`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, HTTPGetAction, KeyToPath, LifecycleHandler, ObjectFieldSelector, Pod,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecurityContext, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{self, NameRule, nonnegative, validate_label_name, validate_labels};
use super::names::{self, inclusive_range_error};
use super::quantity::{self, Quantity};
use super::render::{self, Null, Raw};
use super::{Errors, FieldError, Path};

const MAX_INT32: i64 = i32::MAX as i64;
const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// Where a PodSpec sits: in a Pod, or in a template of some other object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PodOpts {
    pub(crate) is_pod: bool,
}

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

/// ValidatePodCreate.
pub(crate) fn validate_pod_create(pod: &Pod) -> Errors {
    let mut errs = validate_pod_metadata_and_spec(pod, true);
    let spec_path = Path::new("spec");
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push(FieldError::forbidden(
            &spec_path.child("ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    if !s(&spec.node_name).is_empty()
        && spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty())
    {
        errs.push(FieldError::forbidden(
            &spec_path.child("nodeName"),
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
    errs
}

/// validatePodMetadataAndSpec. Metadata is checked as for a create only when `check_meta`.
fn validate_pod_metadata_and_spec(pod: &Pod, check_meta: bool) -> Errors {
    let meta_path = Path::new("metadata");
    let spec_path = Path::new("spec");
    let mut errs = if check_meta {
        meta::validate_object_meta(&pod.metadata, true, NameRule::Subdomain, &meta_path)
    } else {
        Vec::new()
    };
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    errs.extend(pod_specific_annotations(
        pod.metadata.annotations.as_ref(),
        spec,
        &meta_path.child("annotations"),
    ));
    errs.extend(validate_pod_spec(
        spec,
        Some(&pod.metadata),
        &spec_path,
        PodOpts { is_pod: true },
    ));
    if s(&spec.service_account_name).is_empty() {
        for (vi, v) in spec.volumes.iter().flatten().enumerate() {
            for (si, src) in v
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .enumerate()
            {
                if src.service_account_token.is_some() {
                    errs.push(FieldError::forbidden(
                        &spec_path
                            .child("volumes")
                            .index(vi)
                            .child("projected")
                            .child("sources")
                            .index(si)
                            .child("serviceAccountToken"),
                        "must not be specified when serviceAccountName is not set",
                    ));
                }
            }
        }
    }
    for (list, name) in [
        (Some(&spec.containers), "containers"),
        (spec.init_containers.as_ref(), "initContainers"),
    ] {
        for (i, c) in list.into_iter().flatten().enumerate() {
            let image = s(&c.image);
            if image.len() != image.trim().len() {
                errs.push(FieldError::invalid(
                    &spec_path.child(name).index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    errs
}

fn pod_specific_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    spec: &PodSpec,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    let Some(annotations) = annotations else {
        return errs;
    };
    if let Some(v) = annotations.get("kubernetes.io/config.mirror")
        && s(&spec.node_name).is_empty()
    {
        errs.push(FieldError::invalid(
            &path.key("kubernetes.io/config.mirror"),
            v.as_str(),
            "must set spec.nodeName if mirror pod annotation is set",
        ));
    }
    if let Some(v) = annotations.get("controller.kubernetes.io/pod-deletion-cost")
        && v.trim().parse::<i32>().is_err()
    {
        errs.push(FieldError::invalid(
            &path.key("controller.kubernetes.io/pod-deletion-cost"),
            v.as_str(),
            "must be a 32bit integer",
        ));
    }
    errs
}

/// ValidatePodTemplateSpec, for templates embedded in workloads (`path` is the template's).
pub(crate) fn validate_pod_template_spec(template: &PodTemplateSpec, path: &Path) -> Errors {
    let meta = template.metadata.as_ref();
    let mut errs = validate_labels(meta.and_then(|m| m.labels.as_ref()), &path.child("labels"));
    errs.extend(meta::validate_annotations(
        meta.and_then(|m| m.annotations.as_ref()),
        &path.child("annotations"),
    ));
    let default_spec = PodSpec::default();
    let spec = template.spec.as_ref().unwrap_or(&default_spec);
    errs.extend(pod_specific_annotations(
        meta.and_then(|m| m.annotations.as_ref()),
        spec,
        &path.child("annotations"),
    ));
    errs.extend(validate_pod_spec(
        spec,
        None,
        &path.child("spec"),
        PodOpts { is_pod: false },
    ));
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push(FieldError::forbidden(
            &path.child("spec").child("ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// ValidatePodSpec.
pub(crate) fn validate_pod_spec(
    spec: &PodSpec,
    pod_meta: Option<&ObjectMeta>,
    path: &Path,
    opts: PodOpts,
) -> Errors {
    let mut errs = Vec::new();
    if spec.termination_grace_period_seconds.is_none() {
        errs.push(FieldError::required(
            &path.child("terminationGracePeriodSeconds"),
            "",
        ));
    }
    let grace = spec.termination_grace_period_seconds;
    let (vols, verrs) = validate_volumes(
        spec.volumes.as_deref().unwrap_or(&[]),
        pod_meta,
        &path.child("volumes"),
        opts,
    );
    errs.extend(verrs);
    let claim_names: BTreeSet<&str> = spec
        .resource_claims
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    for (i, claim) in spec.resource_claims.iter().flatten().enumerate() {
        let p = path.child("resourceClaims").index(i);
        if claim.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            errs.extend(dns1123_label(&claim.name, &p.child("name")));
        }
    }
    let restart_policy = s(&spec.restart_policy);
    errs.extend(validate_containers(
        &spec.containers,
        &vols,
        &claim_names,
        grace,
        &path.child("containers"),
        opts,
        restart_policy,
    ));
    errs.extend(validate_init_containers(
        spec.init_containers.as_deref().unwrap_or(&[]),
        &spec.containers,
        &vols,
        &claim_names,
        grace,
        &path.child("initContainers"),
        opts,
        restart_policy,
    ));
    errs.extend(validate_ephemeral_names(
        spec,
        &path.child("ephemeralContainers"),
    ));
    errs.extend(validate_host_network_deps(spec, path, opts));
    match restart_policy {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(&path.child("restartPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            &path.child("restartPolicy"),
            other,
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns_policy = s(&spec.dns_policy);
    match dns_policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(FieldError::required(&path.child("dnsPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            &path.child("dnsPolicy"),
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(validate_labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
    ));
    errs.extend(validate_pod_security_context(
        spec,
        &path.child("securityContext"),
    ));
    if let Some(affinity) = &spec.affinity {
        errs.extend(validate_affinity(affinity, &path.child("affinity")));
    }
    errs.extend(validate_dns_config(
        spec,
        dns_policy,
        &path.child("dnsConfig"),
    ));
    for (i, g) in spec.readiness_gates.iter().flatten().enumerate() {
        errs.extend(meta::validate_qualified_name(
            &g.condition_type,
            &path.child("readinessGates").index(i).child("conditionType"),
        ));
    }
    let mut seen_gates = BTreeSet::new();
    for (i, g) in spec.scheduling_gates.iter().flatten().enumerate() {
        let p = path.child("schedulingGates").index(i);
        errs.extend(meta::validate_qualified_name(&g.name, &p));
        if !seen_gates.insert(g.name.as_str()) {
            errs.push(FieldError::duplicate(&p, g.name.as_str()));
        }
    }
    errs.extend(validate_topology_spread(
        spec,
        &path.child("topologySpreadConstraints"),
    ));
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|v| !v.is_empty())
    {
        for msg in names::name_is_dns_subdomain(sa, false) {
            errs.push(FieldError::invalid(
                &path.child("serviceAccountName"),
                sa,
                msg,
            ));
        }
    }
    if let Some(node) = spec.node_name.as_deref().filter(|v| !v.is_empty()) {
        for msg in names::name_is_dns_subdomain(node, false) {
            errs.push(FieldError::invalid(&path.child("nodeName"), node, msg));
        }
    }
    if let Some(v) = spec.active_deadline_seconds
        && !(1..=MAX_INT32).contains(&v)
    {
        errs.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            &v,
            inclusive_range_error(1, MAX_INT32),
        ));
    }
    if let Some(h) = spec.hostname.as_deref().filter(|v| !v.is_empty()) {
        errs.extend(dns1123_label(h, &path.child("hostname")));
    }
    if let Some(h) = spec.subdomain.as_deref().filter(|v| !v.is_empty()) {
        errs.extend(dns1123_label(h, &path.child("subdomain")));
    }
    if let Some(t) = spec.tolerations.as_deref().filter(|t| !t.is_empty()) {
        errs.extend(validate_tolerations(t, &path.child("tolerations")));
    }
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        let p = path.child("hostAliases").index(i);
        for msg in names::is_valid_ip(&alias.ip) {
            errs.push(FieldError::invalid(&p.child("ip"), alias.ip.as_str(), msg));
        }
        for (j, h) in alias.hostnames.iter().flatten().enumerate() {
            errs.extend(dns1123_subdomain(h, &p.child("hostnames").index(j)));
        }
    }
    if let Some(pc) = spec
        .priority_class_name
        .as_deref()
        .filter(|v| !v.is_empty())
    {
        for msg in names::name_is_dns_subdomain(pc, false) {
            errs.push(FieldError::invalid(
                &path.child("priorityClassName"),
                pc,
                msg,
            ));
        }
    }
    if let Some(rc) = &spec.runtime_class_name {
        for msg in names::name_is_dns_subdomain(rc, false) {
            errs.push(FieldError::invalid(
                &path.child("runtimeClassName"),
                rc.as_str(),
                msg,
            ));
        }
    }
    if let Some(pp) = &spec.preemption_policy {
        match pp.as_str() {
            "PreemptLowerPriority" | "Never" => {}
            "" => errs.push(FieldError::required(&path.child("preemptionPolicy"), "")),
            other => errs.push(FieldError::not_supported(
                &path.child("preemptionPolicy"),
                other,
                &["PreemptLowerPriority", "Never"],
            )),
        }
    }
    if let Some(overhead) = &spec.overhead {
        errs.extend(validate_resource_requirements(
            &ResourceRequirements {
                limits: Some(overhead.clone()),
                ..Default::default()
            },
            &BTreeSet::new(),
            &path.child("overhead"),
        ));
    }
    if let Some(os) = &spec.os {
        if os.name.is_empty() {
            errs.push(FieldError::required(
                &path.child("os").child("name"),
                "cannot be empty",
            ));
        } else if os.name != "linux" && os.name != "windows" {
            errs.push(FieldError::not_supported(
                &path.child("os"),
                os.name.as_str(),
                &["linux", "windows"],
            ));
        }
    }
    errs
}

pub(crate) fn dns1123_label(value: &str, path: &Path) -> Errors {
    names::is_dns1123_label(value)
        .into_iter()
        .map(|msg| FieldError::invalid(path, value, msg))
        .collect()
}

pub(crate) fn dns1123_subdomain(value: &str, path: &Path) -> Errors {
    names::is_dns1123_subdomain(value)
        .into_iter()
        .map(|msg| FieldError::invalid(path, value, msg))
        .collect()
}

type Volumes<'a> = BTreeMap<&'a str, &'a Volume>;

/// ValidateVolumes: names unique labels, exactly one source each.
fn validate_volumes<'a>(
    volumes: &'a [Volume],
    pod_meta: Option<&ObjectMeta>,
    path: &Path,
    opts: PodOpts,
) -> (Volumes<'a>, Errors) {
    let mut errs = Vec::new();
    let mut vols = BTreeMap::new();
    let pod_name = pod_meta.and_then(|m| m.name.as_deref()).unwrap_or("");
    let created_pvcs: BTreeSet<String> = if pod_name.is_empty() {
        BTreeSet::new()
    } else {
        volumes
            .iter()
            .filter(|v| v.ephemeral.is_some())
            .map(|v| format!("{pod_name}-{}", v.name))
            .collect()
    };
    for (i, vol) in volumes.iter().enumerate() {
        let p = path.index(i);
        let name_path = p.child("name");
        let mut el = validate_volume_source(vol, &p, pod_name, opts);
        if vol.name.is_empty() {
            el.push(FieldError::required(&name_path, ""));
        } else {
            el.extend(dns1123_label(&vol.name, &name_path));
        }
        if vols.contains_key(vol.name.as_str()) {
            el.push(FieldError::duplicate(&name_path, vol.name.as_str()));
        }
        if el.is_empty() {
            vols.insert(vol.name.as_str(), vol);
        } else {
            errs.extend(el);
        }
        if let Some(pvc) = &vol.persistent_volume_claim
            && created_pvcs.contains(&pvc.claim_name)
        {
            errs.push(FieldError::invalid(
                &p.child("persistentVolumeClaim").child("claimName"),
                pvc.claim_name.as_str(),
                "must not reference a PVC that gets created for an ephemeral volume",
            ));
        }
    }
    (vols, errs)
}

/// Counts the sources of a volume (or a PersistentVolume) as Kubernetes does: the first one
/// present is validated, every later one is reported as forbidden under its name.
pub(crate) struct VolumeSources<'a> {
    path: &'a Path,
    count: usize,
}

impl<'a> VolumeSources<'a> {
    pub(crate) fn new(path: &'a Path) -> Self {
        Self { path, count: 0 }
    }

    /// Whether the source named `name` is present and the first; if present but not the first,
    /// the forbidden error goes to `errs` and it is not to be validated.
    pub(crate) fn one(&mut self, present: bool, name: &str, errs: &mut Errors) -> bool {
        if !present {
            return false;
        }
        if self.count > 0 {
            errs.push(FieldError::forbidden(
                &self.path.child(name),
                "may not specify more than 1 volume type",
            ));
            return false;
        }
        self.count += 1;
        true
    }

    /// Counts a source without checking for an earlier one, where Kubernetes does so.
    pub(crate) fn count_unchecked(&mut self) {
        self.count += 1;
    }

    /// No source was counted: the volume has no type.
    pub(crate) fn none(&self) -> bool {
        self.count == 0
    }
}

/// validateVolumeSource. The sources are looked at in Kubernetes' order, and every one after
/// the first is reported as forbidden under the (sometimes misspelled) name Kubernetes uses.
fn validate_volume_source(vol: &Volume, path: &Path, pod_name: &str, opts: PodOpts) -> Errors {
    let mut errs = Vec::new();
    let mut sources = VolumeSources::new(path);
    if let Some(ed) = &vol.empty_dir {
        sources.count_unchecked();
        if let Some(limit) = &ed.size_limit
            && Quantity::parse(&limit.0).is_some_and(|q| q.is_negative())
        {
            errs.push(FieldError::forbidden(
                &path.child("emptyDir").child("sizeLimit"),
                "SizeLimit field must be a valid resource quantity",
            ));
        }
    }
    if sources.one(vol.host_path.is_some(), "hostPath", &mut errs)
        && let Some(hp) = &vol.host_path
    {
        errs.extend(validate_host_path(
            &hp.path,
            hp.type_.as_deref(),
            &path.child("hostPath"),
        ));
    }
    if sources.one(vol.git_repo.is_some(), "gitRepo", &mut errs)
        && let Some(g) = &vol.git_repo
    {
        if g.repository.is_empty() {
            errs.push(FieldError::required(
                &path.child("gitRepo").child("repository"),
                "",
            ));
        }
        errs.extend(local_descending_path(
            s(&g.directory),
            &path.child("gitRepo").child("directory"),
        ));
    }
    sources.one(
        vol.gce_persistent_disk.is_some(),
        "gcePersistentDisk",
        &mut errs,
    );
    sources.one(
        vol.aws_elastic_block_store.is_some(),
        "awsElasticBlockStore",
        &mut errs,
    );
    if sources.one(vol.secret.is_some(), "secret", &mut errs)
        && let Some(sec) = &vol.secret
    {
        let p = path.child("secret");
        if s(&sec.secret_name).is_empty() {
            errs.push(FieldError::required(&p.child("secretName"), ""));
        }
        errs.extend(file_mode(sec.default_mode, &p.child("defaultMode")));
        for (i, kp) in sec.items.iter().flatten().enumerate() {
            errs.extend(key_to_path(
                &kp.key,
                &kp.path,
                kp.mode,
                &p.child("items").index(i),
            ));
        }
    }
    if sources.one(vol.nfs.is_some(), "nfs", &mut errs)
        && let Some(nfs) = &vol.nfs
    {
        errs.extend(validate_nfs(&nfs.server, &nfs.path, &path.child("nfs")));
    }
    sources.one(vol.iscsi.is_some(), "iscsi", &mut errs);
    sources.one(vol.glusterfs.is_some(), "glusterfs", &mut errs);
    sources.one(vol.flocker.is_some(), "flocker", &mut errs);
    if sources.one(
        vol.persistent_volume_claim.is_some(),
        "persistentVolumeClaim",
        &mut errs,
    ) && let Some(pvc) = &vol.persistent_volume_claim
        && pvc.claim_name.is_empty()
    {
        errs.push(FieldError::required(
            &path.child("persistentVolumeClaim").child("claimName"),
            "",
        ));
    }
    sources.one(vol.rbd.is_some(), "rbd", &mut errs);
    sources.one(vol.cinder.is_some(), "cinder", &mut errs);
    sources.one(vol.cephfs.is_some(), "cephFS", &mut errs);
    sources.one(vol.quobyte.is_some(), "quobyte", &mut errs);
    if sources.one(vol.downward_api.is_some(), "downwarAPI", &mut errs)
        && let Some(d) = &vol.downward_api
    {
        let p = path.child("downwardAPI");
        errs.extend(file_mode(d.default_mode, &p.child("defaultMode")));
        for f in d.items.iter().flatten() {
            errs.extend(downward_api_file(f, &p));
        }
    }
    sources.one(vol.fc.is_some(), "fc", &mut errs);
    sources.one(vol.flex_volume.is_some(), "flexVolume", &mut errs);
    if sources.one(vol.config_map.is_some(), "configMap", &mut errs)
        && let Some(cm) = &vol.config_map
    {
        let p = path.child("configMap");
        if cm.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        errs.extend(file_mode(cm.default_mode, &p.child("defaultMode")));
        for (i, kp) in cm.items.iter().flatten().enumerate() {
            errs.extend(key_to_path(
                &kp.key,
                &kp.path,
                kp.mode,
                &p.child("items").index(i),
            ));
        }
    }
    sources.one(vol.azure_file.is_some(), "azureFile", &mut errs);
    sources.one(vol.vsphere_volume.is_some(), "vsphereVolume", &mut errs);
    sources.one(
        vol.photon_persistent_disk.is_some(),
        "photonPersistentDisk",
        &mut errs,
    );
    sources.one(vol.portworx_volume.is_some(), "portworxVolume", &mut errs);
    sources.one(vol.azure_disk.is_some(), "azureDisk", &mut errs);
    sources.one(vol.storageos.is_some(), "storageos", &mut errs);
    if sources.one(vol.projected.is_some(), "projected", &mut errs)
        && let Some(pr) = &vol.projected
    {
        errs.extend(validate_projected(pr, &path.child("projected")));
    }
    sources.one(vol.scale_io.is_some(), "scaleIO", &mut errs);
    if sources.one(vol.csi.is_some(), "csi", &mut errs)
        && let Some(csi) = &vol.csi
    {
        errs.extend(validate_csi_driver_name(
            &csi.driver,
            &path.child("csi").child("driver"),
        ));
        if let Some(r) = &csi.node_publish_secret_ref {
            if r.name.is_empty() {
                errs.push(FieldError::required(
                    &path
                        .child("csi")
                        .child("nodePublishSecretRef")
                        .child("name"),
                    "",
                ));
            } else {
                for msg in names::name_is_dns_subdomain(&r.name, false) {
                    errs.push(FieldError::invalid(
                        &path.child("csi").child("name"),
                        r.name.as_str(),
                        msg,
                    ));
                }
            }
        }
    }
    if sources.one(vol.ephemeral.is_some(), "ephemeral", &mut errs)
        && let Some(e) = &vol.ephemeral
    {
        let p = path.child("ephemeral");
        match &e.volume_claim_template {
            None => errs.push(FieldError::required(&p.child("volumeClaimTemplate"), "")),
            Some(t) => {
                let tp = p.child("volumeClaimTemplate");
                errs.extend(meta::validate_template_object_meta(
                    t.metadata.as_ref(),
                    &tp.child("metadata"),
                ));
                errs.extend(super::storage::validate_pvc_spec(
                    &t.spec,
                    &tp.child("spec"),
                ));
            }
        }
        if !pod_name.is_empty() && !vol.name.is_empty() {
            let pvc_name = format!("{pod_name}-{}", vol.name);
            for msg in names::name_is_dns_subdomain(&pvc_name, false) {
                errs.push(FieldError::invalid(
                    &path.child("name"),
                    vol.name.as_str(),
                    format!("PVC name {}: {msg}", render::quote(&pvc_name)),
                ));
            }
        }
    }
    if sources.one(vol.image.is_some(), "image", &mut errs)
        && let Some(img) = &vol.image
    {
        let p = path.child("image");
        if opts.is_pod && s(&img.reference).is_empty() {
            errs.push(FieldError::required(&p.child("reference"), ""));
        }
        errs.extend(pull_policy(s(&img.pull_policy), &p.child("pullPolicy")));
    }
    if sources.none() {
        errs.push(FieldError::required(path, "must specify a volume type"));
    }
    errs
}

pub(crate) fn validate_csi_driver_name(driver: &str, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if driver.is_empty() {
        errs.push(FieldError::required(path, ""));
    }
    if driver.len() > 63 {
        errs.push(FieldError::too_long(path, 63));
    }
    for msg in names::is_dns1123_subdomain(&driver.to_lowercase()) {
        errs.push(FieldError::invalid(path, driver, msg));
    }
    errs
}

pub(crate) fn validate_nfs(server: &str, nfs_path: &str, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if server.is_empty() {
        errs.push(FieldError::required(&path.child("server"), ""));
    }
    if nfs_path.is_empty() {
        errs.push(FieldError::required(&path.child("path"), ""));
    }
    if !nfs_path.starts_with('/') {
        errs.push(FieldError::invalid(
            &path.child("path"),
            nfs_path,
            "must be an absolute path",
        ));
    }
    errs
}

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// validateHostPathVolumeSource, also used for PersistentVolumes. Stricter than upstream in
/// one respect: a relative path, which no node can resolve, is refused here rather than left
/// to fail at mount time (reliability case D6).
pub(crate) fn validate_host_path(host_path: &str, type_: Option<&str>, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if host_path.is_empty() {
        errs.push(FieldError::required(&path.child("path"), ""));
        return errs;
    }
    if !host_path.starts_with('/') {
        errs.push(FieldError::invalid(
            &path.child("path"),
            host_path,
            "must be an absolute path",
        ));
    }
    errs.extend(path_no_backsteps(host_path, &path.child("path")));
    if let Some(t) = type_
        && !HOST_PATH_TYPES.contains(&t)
    {
        errs.push(FieldError::not_supported(
            &path.child("type"),
            t,
            HOST_PATH_TYPES,
        ));
    }
    errs
}

/// validatePathNoBacksteps: no `..` element.
pub(crate) fn path_no_backsteps(target: &str, path: &Path) -> Errors {
    if target.replace('\\', "/").split('/').any(|e| e == "..") {
        vec![FieldError::invalid(path, target, "must not contain '..'")]
    } else {
        Vec::new()
    }
}

/// validateLocalDescendingPath: relative, no `..` element.
fn local_descending_path(target: &str, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if target.starts_with('/') {
        errs.push(FieldError::invalid(path, target, "must be a relative path"));
    }
    errs.extend(path_no_backsteps(target, path));
    errs
}

/// ValidateLocalNonReservedPath.
fn local_non_reserved_path(target: &str, path: &Path) -> Errors {
    let mut errs = local_descending_path(target, path);
    if target.starts_with("..") && !target.starts_with("../") {
        errs.push(FieldError::invalid(
            path,
            target,
            "must not start with '..'",
        ));
    }
    errs
}

fn file_mode(mode: Option<i32>, path: &Path) -> Errors {
    match mode {
        Some(m) if !(0..=0o777).contains(&m) => {
            vec![FieldError::invalid(path, &m, FILE_MODE_ERROR)]
        }
        _ => Vec::new(),
    }
}

fn key_to_path(key: &str, target: &str, mode: Option<i32>, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if key.is_empty() {
        errs.push(FieldError::required(&path.child("key"), ""));
    }
    if target.is_empty() {
        errs.push(FieldError::required(&path.child("path"), ""));
    }
    errs.extend(local_non_reserved_path(target, &path.child("path")));
    errs.extend(file_mode(mode, &path.child("mode")));
    errs
}

const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const CONTAINER_RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn downward_api_file(f: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if f.path.is_empty() {
        errs.push(FieldError::required(&path.child("path"), ""));
    }
    errs.extend(local_non_reserved_path(&f.path, &path.child("path")));
    if let Some(fr) = &f.field_ref {
        errs.extend(object_field_selector(
            fr,
            VOLUME_FIELD_PATHS,
            &path.child("fieldRef"),
        ));
        if f.resource_field_ref.is_some() {
            errs.push(FieldError::invalid(
                path,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ));
        }
    } else if let Some(rf) = &f.resource_field_ref {
        errs.extend(resource_field_selector(
            rf,
            true,
            &path.child("resourceFieldRef"),
        ));
    } else {
        errs.push(FieldError::required(
            path,
            "one of fieldRef and resourceFieldRef is required",
        ));
    }
    errs.extend(file_mode(f.mode, &path.child("mode")));
    errs
}

/// A projected `secret` or `configMap` source: both name their object and project its keys
/// as items. `all_paths` is shared by every source of the volume, so a path projected twice is
/// reported (at the volume's `path`) whichever source repeats it.
fn projected_keys(
    name: &str,
    items: Option<&[KeyToPath]>,
    p: &Path,
    path: &Path,
    all_paths: &mut BTreeSet<String>,
) -> Errors {
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::required(&p.child("name"), ""));
    }
    for (j, kp) in items.into_iter().flatten().enumerate() {
        errs.extend(key_to_path(
            &kp.key,
            &kp.path,
            kp.mode,
            &p.child("items").index(j),
        ));
        if !kp.path.is_empty() && !all_paths.insert(kp.path.clone()) {
            errs.push(FieldError::invalid(
                path,
                name,
                "conflicting duplicate paths",
            ));
        }
    }
    errs
}

fn validate_projected(
    pr: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    path: &Path,
) -> Errors {
    let mut errs = file_mode(pr.default_mode, &path.child("defaultMode"));
    let mut all_paths = BTreeSet::new();
    for (i, src) in pr.sources.iter().flatten().enumerate() {
        let sp = path.child("sources").index(i);
        let mut n = 0;
        if let Some(sec) = &src.secret {
            n += 1;
            errs.extend(projected_keys(
                &sec.name,
                sec.items.as_deref(),
                &sp.child("secret"),
                path,
                &mut all_paths,
            ));
        }
        if let Some(cm) = &src.config_map {
            n += 1;
            errs.extend(projected_keys(
                &cm.name,
                cm.items.as_deref(),
                &sp.child("configMap"),
                path,
                &mut all_paths,
            ));
        }
        if let Some(d) = &src.downward_api {
            n += 1;
            let p = sp.child("downwardAPI");
            for f in d.items.iter().flatten() {
                errs.extend(downward_api_file(f, &p));
                if !f.path.is_empty() && !all_paths.insert(f.path.clone()) {
                    errs.push(FieldError::invalid(
                        path,
                        f.path.as_str(),
                        "conflicting duplicate paths",
                    ));
                }
            }
        }
        if let Some(t) = &src.service_account_token {
            n += 1;
            let p = sp.child("serviceAccountToken");
            let exp = t.expiration_seconds.unwrap_or(3600);
            if exp < 600 {
                errs.push(FieldError::invalid(
                    &p.child("expirationSeconds"),
                    &exp,
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if exp > 1 << 32 {
                errs.push(FieldError::invalid(
                    &p.child("expirationSeconds"),
                    &exp,
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
            if t.path.is_empty() {
                errs.push(FieldError::required(&path.child("path"), ""));
            } else {
                errs.extend(local_non_reserved_path(&t.path, &path.child("path")));
            }
        }
        if src.cluster_trust_bundle.is_some() {
            n += 1;
        }
        if n > 1 {
            errs.push(FieldError::forbidden(
                &sp,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
    errs
}

/// SplitMaybeSubscriptedPath: `metadata.labels['key']` -> ("metadata.labels", "key").
fn split_subscripted(field_path: &str) -> Option<(&str, &str)> {
    let inner = field_path.strip_suffix("']")?;
    let (path, sub) = inner.split_once("['")?;
    if path.is_empty() {
        None
    } else {
        Some((path, sub))
    }
}

/// validateObjectFieldSelector, with ConvertDownwardAPIFieldLabel's rules for v1.
fn object_field_selector(fs: &ObjectFieldSelector, supported: &[&str], path: &Path) -> Errors {
    let mut errs = Vec::new();
    let api_version = s(&fs.api_version);
    if api_version.is_empty() {
        errs.push(FieldError::required(&path.child("apiVersion"), ""));
        return errs;
    }
    if fs.field_path.is_empty() {
        errs.push(FieldError::required(&path.child("fieldPath"), ""));
        return errs;
    }
    let converted = if api_version != "v1" {
        Err(format!("unsupported pod version: {api_version}"))
    } else if let Some((p, _)) = split_subscripted(&fs.field_path) {
        match p {
            "metadata.annotations" | "metadata.labels" => Ok(fs.field_path.clone()),
            _ => Err(format!(
                "field label does not support subscript: {}",
                fs.field_path
            )),
        }
    } else {
        match fs.field_path.as_str() {
            "metadata.annotations"
            | "metadata.labels"
            | "metadata.name"
            | "metadata.namespace"
            | "metadata.uid"
            | "spec.nodeName"
            | "spec.restartPolicy"
            | "spec.serviceAccountName"
            | "spec.schedulerName"
            | "status.phase"
            | "status.hostIP"
            | "status.hostIPs"
            | "status.podIP"
            | "status.podIPs" => Ok(fs.field_path.clone()),
            "spec.host" => Ok("spec.nodeName".to_string()),
            other => Err(format!("field label not supported: {other}")),
        }
    };
    let internal = match converted {
        Ok(p) => p,
        Err(e) => {
            errs.push(FieldError::invalid(
                &path.child("fieldPath"),
                fs.field_path.as_str(),
                format!("error converting fieldPath: {e}"),
            ));
            return errs;
        }
    };
    if let Some((p, sub)) = split_subscripted(&internal) {
        match p {
            "metadata.annotations" => {
                errs.extend(meta::validate_qualified_name(&sub.to_lowercase(), path))
            }
            "metadata.labels" => errs.extend(meta::validate_qualified_name(sub, path)),
            _ => errs.push(FieldError::invalid(path, p, "does not support subscript")),
        }
    } else if !supported.contains(&internal.as_str()) {
        errs.push(FieldError::not_supported(
            &path.child("fieldPath"),
            internal.as_str(),
            supported,
        ));
    }
    errs
}

fn resource_field_selector(
    rf: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    volume: bool,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    if volume && s(&rf.container_name).is_empty() {
        errs.push(FieldError::required(&path.child("containerName"), ""));
    } else if rf.resource.is_empty() {
        errs.push(FieldError::required(&path.child("resource"), ""));
    } else if !CONTAINER_RESOURCE_FIELDS.contains(&rf.resource.as_str())
        && !rf.resource.starts_with("requests.hugepages-")
        && !rf.resource.starts_with("limits.hugepages-")
    {
        errs.push(FieldError::not_supported(
            &path.child("resource"),
            rf.resource.as_str(),
            CONTAINER_RESOURCE_FIELDS,
        ));
    }
    errs
}

fn validate_env(vars: &[EnvVar], path: &Path) -> Errors {
    let mut errs = Vec::new();
    for (i, ev) in vars.iter().enumerate() {
        let p = path.index(i);
        if ev.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            for msg in names::is_relaxed_env_var_name(&ev.name) {
                errs.push(FieldError::invalid(&p.child("name"), ev.name.as_str(), msg));
            }
        }
        let Some(from) = &ev.value_from else {
            continue;
        };
        let vp = p.child("valueFrom");
        let mut n = 0;
        if let Some(fr) = &from.field_ref {
            n += 1;
            errs.extend(object_field_selector(
                fr,
                ENV_FIELD_PATHS,
                &vp.child("fieldRef"),
            ));
        }
        if let Some(rf) = &from.resource_field_ref {
            n += 1;
            errs.extend(resource_field_selector(
                rf,
                false,
                &vp.child("resourceFieldRef"),
            ));
        }
        if let Some(cm) = &from.config_map_key_ref {
            n += 1;
            errs.extend(key_selector(
                &cm.name,
                &cm.key,
                &vp.child("configMapKeyRef"),
            ));
        }
        if let Some(sec) = &from.secret_key_ref {
            n += 1;
            errs.extend(key_selector(&sec.name, &sec.key, &vp.child("secretKeyRef")));
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(&ev.value).is_empty() {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn key_selector(name: &str, key: &str, path: &Path) -> Errors {
    let mut errs = Vec::new();
    for msg in names::name_is_dns_subdomain(name, false) {
        errs.push(FieldError::invalid(&path.child("name"), name, msg));
    }
    if key.is_empty() {
        errs.push(FieldError::required(&path.child("key"), ""));
    } else {
        for msg in names::is_config_map_key(key) {
            errs.push(FieldError::invalid(&path.child("key"), key, msg));
        }
    }
    errs
}

fn validate_env_from(sources: &[k8s_openapi::api::core::v1::EnvFromSource], path: &Path) -> Errors {
    let mut errs = Vec::new();
    for (i, ev) in sources.iter().enumerate() {
        let p = path.index(i);
        if let Some(prefix) = ev.prefix.as_deref().filter(|v| !v.is_empty()) {
            for msg in names::is_relaxed_env_var_name(prefix) {
                errs.push(FieldError::invalid(&p.child("prefix"), prefix, msg));
            }
        }
        let mut n = 0;
        for (present, name) in [
            (
                ev.config_map_ref.as_ref().map(|r| r.name.as_str()),
                "configMapRef",
            ),
            (ev.secret_ref.as_ref().map(|r| r.name.as_str()), "secretRef"),
        ] {
            let Some(ref_name) = present else {
                continue;
            };
            n += 1;
            let rp = p.child(name).child("name");
            if ref_name.is_empty() {
                errs.push(FieldError::required(&rp, ""));
            } else {
                // Kubernetes checks these names as prefixes, so a trailing '-' passes.
                for msg in names::name_is_dns_subdomain(ref_name, true) {
                    errs.push(FieldError::invalid(&rp, ref_name, msg));
                }
            }
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                path,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn pull_policy(policy: &str, path: &Path) -> Errors {
    match policy {
        "Always" | "IfNotPresent" | "Never" => Vec::new(),
        "" => vec![FieldError::required(path, "")],
        other => vec![FieldError::not_supported(
            path,
            other,
            &["Always", "IfNotPresent", "Never"],
        )],
    }
}

fn validate_container_ports(
    ports: &[k8s_openapi::api::core::v1::ContainerPort],
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    let mut names_seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = names::is_valid_port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid(&p.child("name"), name, msg));
                }
            } else if !names_seen.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(&p.child("containerPort"), ""));
        } else {
            for msg in names::is_valid_port_num(port.container_port.into()) {
                errs.push(FieldError::invalid(
                    &p.child("containerPort"),
                    &port.container_port,
                    msg,
                ));
            }
        }
        if let Some(hp) = port.host_port.filter(|h| *h != 0) {
            for msg in names::is_valid_port_num(hp.into()) {
                errs.push(FieldError::invalid(&p.child("hostPort"), &hp, msg));
            }
        }
        errs.extend(protocol(s(&port.protocol), &p.child("protocol")));
    }
    errs
}

/// A port protocol: required, one of SCTP/TCP/UDP.
pub(crate) fn protocol(proto: &str, path: &Path) -> Errors {
    match proto {
        "TCP" | "UDP" | "SCTP" => Vec::new(),
        "" => vec![FieldError::required(path, "")],
        other => vec![FieldError::not_supported(
            path,
            other,
            &["SCTP", "TCP", "UDP"],
        )],
    }
}

fn validate_volume_mounts(c: &Container, vols: &Volumes, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let devices: BTreeMap<&str, &str> = c
        .volume_devices
        .iter()
        .flatten()
        .map(|d| (d.name.as_str(), d.device_path.as_str()))
        .collect();
    let mut mount_points = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = path.index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        if !vols.contains_key(m.name.as_str()) {
            errs.push(FieldError::not_found(&p.child("name"), m.name.as_str()));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(&p.child("mountPath"), ""));
        }
        if !mount_points.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("mountPath"),
                m.mount_path.as_str(),
                "must be unique",
            ));
        }
        if devices.contains_key(m.name.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("name"),
                m.name.as_str(),
                "must not already exist in volumeDevices",
            ));
        }
        if devices.values().any(|d| *d == m.mount_path) {
            errs.push(FieldError::invalid(
                &p.child("mountPath"),
                m.mount_path.as_str(),
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub_path = s(&m.sub_path);
        let sub_path_expr = s(&m.sub_path_expr);
        if vols.get(m.name.as_str()).is_some_and(|v| v.image.is_some()) {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    &p.child("subPath"),
                    sub_path,
                    "not allowed in image volume sources",
                ));
            }
            if !sub_path_expr.is_empty() {
                errs.push(FieldError::invalid(
                    &p.child("subPathExpr"),
                    sub_path_expr,
                    "not allowed in image volume sources",
                ));
            }
        }
        // Kubernetes reports subPath problems on the list's path, without the index.
        if !sub_path.is_empty() {
            errs.extend(local_descending_path(sub_path, &path.child("subPath")));
        }
        if !sub_path_expr.is_empty() {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    &p.child("subPathExpr"),
                    sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            errs.extend(local_descending_path(
                sub_path_expr,
                &path.child("subPathExpr"),
            ));
        }
        if let Some(prop) = &m.mount_propagation {
            let pp = path.child("mountPropagation");
            if !matches!(prop.as_str(), "Bidirectional" | "HostToContainer" | "None") {
                errs.push(FieldError::not_supported(
                    &pp,
                    prop.as_str(),
                    &["Bidirectional", "HostToContainer", "None"],
                ));
            }
            let privileged = c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true);
            if prop == "Bidirectional" && !privileged {
                errs.push(FieldError::forbidden(
                    &pp,
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
        if let Some(rro) = &m.recursive_read_only {
            let rp = path.child("recursiveReadOnly");
            match rro.as_str() {
                "Disabled" => {}
                "Enabled" | "IfPossible" => {
                    if m.read_only != Some(true) {
                        errs.push(FieldError::forbidden(
                            &rp,
                            "may only be specified when readOnly is true",
                        ));
                    }
                    if m.mount_propagation.as_deref().is_some_and(|p| p != "None") {
                        errs.push(FieldError::forbidden(
                            &rp,
                            "may only be specified when mountPropagation is None or not specified",
                        ));
                    }
                }
                other => errs.push(FieldError::not_supported(
                    &rp,
                    other,
                    &["Disabled", "Enabled", "IfPossible"],
                )),
            }
        }
    }
    errs
}

fn validate_volume_devices(c: &Container, vols: &Volumes, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let mounts: BTreeMap<&str, &str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    let mut paths = BTreeSet::new();
    let mut dev_names = BTreeSet::new();
    for (i, d) in c.volume_devices.iter().flatten().enumerate() {
        let p = path.index(i);
        let vol = vols.get(d.name.as_str());
        if d.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        if dev_names.contains(d.name.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("name"),
                d.name.as_str(),
                "must be unique",
            ));
        }
        match vol {
            Some(v) if v.persistent_volume_claim.is_none() && v.ephemeral.is_none() => errs.push(FieldError::invalid(
                &p.child("name"),
                d.name.as_str(),
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            )),
            Some(_) => {}
            None => errs.push(FieldError::not_found(&p.child("name"), d.name.as_str())),
        }
        if d.device_path.is_empty() {
            errs.push(FieldError::required(&p.child("devicePath"), ""));
        }
        if paths.contains(d.device_path.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("devicePath"),
                d.device_path.as_str(),
                "must be unique",
            ));
        }
        if !d.device_path.is_empty() && d.device_path.split('/').any(|e| e == "..") {
            errs.push(FieldError::invalid(
                &p.child("devicePath"),
                d.device_path.as_str(),
                "can not contain backsteps ('..')",
            ));
        } else {
            paths.insert(d.device_path.as_str());
        }
        if mounts.contains_key(d.name.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("name"),
                d.name.as_str(),
                "must not already exist in volumeMounts",
            ));
        }
        if mounts.values().any(|m| *m == d.device_path) {
            errs.push(FieldError::invalid(
                &p.child("devicePath"),
                d.device_path.as_str(),
                "must not already exist as a path in volumeMounts",
            ));
        }
        if !d.name.is_empty() {
            dev_names.insert(d.name.as_str());
        }
    }
    errs
}

const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
    "storage",
    "requests.storage",
];

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_extended_resource(name: &str) -> bool {
    !is_native_resource(name)
        && !name.starts_with("requests.")
        && names::is_qualified_name(&format!("requests.{name}")).is_empty()
}

fn overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !is_hugepages(name)
}

/// validateContainerResourceName.
fn container_resource_name(name: &str, path: &Path) -> Errors {
    let mut errs: Errors = names::is_qualified_name(name)
        .into_iter()
        .map(|msg| FieldError::invalid(path, name, msg))
        .collect();
    if errs.is_empty()
        && !name.contains('/')
        && !STANDARD_RESOURCES.contains(&name)
        && !is_hugepages(name)
        && !name.starts_with("requests.hugepages-")
    {
        errs.push(FieldError::invalid(
            path,
            name,
            "must be a standard resource type or fully qualified",
        ));
    }
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages(name) {
            errs.push(FieldError::invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native_resource(name) && !is_extended_resource(name) {
        errs.push(FieldError::invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
    errs
}

/// ValidateResourceQuantityValue, plus the format check k8s-openapi does not do.
pub(crate) fn quantity_value(name: &str, raw: &str, path: &Path) -> (Option<Quantity>, Errors) {
    let Some(q) = Quantity::parse(raw) else {
        return (
            None,
            vec![FieldError::invalid(path, raw, quantity::FORMAT_ERROR)],
        );
    };
    let mut errs = Vec::new();
    if q.is_negative() {
        errs.push(FieldError::invalid(
            path,
            raw,
            "must be greater than or equal to 0",
        ));
    }
    if is_extended_resource(name) && !q.is_integer() {
        errs.push(FieldError::invalid(path, raw, "must be an integer"));
    }
    (Some(q), errs)
}

/// validateResourceRequirements for a container.
fn validate_resource_requirements(
    req: &ResourceRequirements,
    claim_names: &BTreeSet<&str>,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    let mut limits = BTreeMap::new();
    let (mut lim_cpu_mem, mut req_cpu_mem, mut lim_huge, mut req_huge) =
        (false, false, false, false);
    for (name, q) in req.limits.iter().flatten() {
        let p = lim_path.key(name);
        errs.extend(container_resource_name(name, &p));
        let (parsed, e) = quantity_value(name, &q.0, &p);
        errs.extend(e);
        if let Some(parsed) = parsed {
            limits.insert(name.as_str(), (parsed, q.0.as_str()));
        }
        lim_huge |= is_hugepages(name);
        lim_cpu_mem |= name == "cpu" || name == "memory";
    }
    for (name, q) in req.requests.iter().flatten() {
        let p = req_path.key(name);
        errs.extend(container_resource_name(name, &p));
        let (parsed, e) = quantity_value(name, &q.0, &p);
        errs.extend(e);
        match (parsed, limits.get(name.as_str())) {
            (Some(parsed), Some((limit, limit_raw))) => {
                let ord = parsed.cmp(limit);
                if ord != std::cmp::Ordering::Equal && !overcommit_allowed(name) {
                    errs.push(FieldError::invalid(
                        &req_path,
                        q.0.as_str(),
                        format!("must be equal to {name} limit of {limit_raw}"),
                    ));
                } else if ord == std::cmp::Ordering::Greater {
                    errs.push(FieldError::invalid(
                        &req_path,
                        q.0.as_str(),
                        format!("must be less than or equal to {name} limit of {limit_raw}"),
                    ));
                }
            }
            (_, None) if !overcommit_allowed(name) => {
                errs.push(FieldError::required(
                    &lim_path,
                    "Limit must be set for non overcommitable resources",
                ));
            }
            _ => {}
        }
        req_huge |= is_hugepages(name);
        req_cpu_mem |= name == "cpu" || name == "memory";
    }
    if !lim_cpu_mem && !req_cpu_mem && (req_huge || lim_huge) {
        errs.push(FieldError::forbidden(
            path,
            "HugePages require cpu or memory",
        ));
    }
    let mut claims_seen = BTreeSet::new();
    for (i, claim) in req.claims.iter().flatten().enumerate() {
        let p = path.child("claims").index(i);
        if claim.name.is_empty() {
            errs.push(FieldError::required(&p, ""));
            continue;
        }
        let key = match claim.request.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => format!("{}/{r}", claim.name),
            None => claim.name.clone(),
        };
        if !claims_seen.insert(key.clone()) {
            errs.push(FieldError::duplicate(&p, key.as_str()));
        }
        if !claim_names.contains(claim.name.as_str()) {
            let mut e = FieldError::not_found(&p, claim.name.as_str());
            e.detail = if claim_names.is_empty() {
                "must be one of the names in pod.spec.resourceClaims which is empty".to_string()
            } else {
                format!(
                    "must be one of the names in pod.spec.resourceClaims: {}",
                    claim_names.iter().copied().collect::<Vec<_>>().join(", ")
                )
            };
            errs.push(e);
        }
    }
    errs
}

/// validateContainerCommon.
fn validate_container_common(
    c: &Container,
    vols: &Volumes,
    claim_names: &BTreeSet<&str>,
    path: &Path,
    restart_policy: &str,
) -> Errors {
    let mut errs = Vec::new();
    if c.name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else {
        errs.extend(dns1123_label(&c.name, &path.child("name")));
    }
    if s(&c.image).is_empty() {
        errs.push(FieldError::required(&path.child("image"), ""));
    }
    match s(&c.termination_message_policy) {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(
            &path.child("terminationMessagePolicy"),
            "",
        )),
        other => errs.push(FieldError::not_supported(
            &path.child("terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(validate_container_ports(
        c.ports.as_deref().unwrap_or(&[]),
        &path.child("ports"),
    ));
    errs.extend(validate_env(
        c.env.as_deref().unwrap_or(&[]),
        &path.child("env"),
    ));
    errs.extend(validate_env_from(
        c.env_from.as_deref().unwrap_or(&[]),
        &path.child("envFrom"),
    ));
    errs.extend(validate_volume_mounts(c, vols, &path.child("volumeMounts")));
    errs.extend(validate_volume_devices(
        c,
        vols,
        &path.child("volumeDevices"),
    ));
    errs.extend(pull_policy(
        s(&c.image_pull_policy),
        &path.child("imagePullPolicy"),
    ));
    if let Some(r) = &c.resources {
        errs.extend(validate_resource_requirements(
            r,
            claim_names,
            &path.child("resources"),
        ));
    }
    let mut resize_seen = BTreeSet::new();
    for (i, rp) in c.resize_policy.iter().flatten().enumerate() {
        let p = path.child("resizePolicy");
        if !resize_seen.insert(rp.resource_name.as_str()) {
            errs.push(FieldError::duplicate(
                &p.index(i),
                rp.resource_name.as_str(),
            ));
        }
        match rp.resource_name.as_str() {
            "cpu" | "memory" => {}
            "" => errs.push(FieldError::required(&p, "")),
            other => errs.push(FieldError::not_supported(&p, other, &["cpu", "memory"])),
        }
        match rp.restart_policy.as_str() {
            "NotRequired" | "RestartContainer" => {}
            "" => errs.push(FieldError::required(&p, "")),
            other => errs.push(FieldError::not_supported(
                &p,
                other,
                &["NotRequired", "RestartContainer"],
            )),
        }
        if restart_policy == "Never" && rp.restart_policy != "NotRequired" {
            errs.push(FieldError::invalid(
                &p,
                rp.restart_policy.as_str(),
                "must be 'NotRequired' when `restartPolicy` is 'Never'",
            ));
        }
    }
    if let Some(sc) = &c.security_context {
        errs.extend(validate_security_context(
            sc,
            &path.child("securityContext"),
        ));
    }
    errs
}

/// validateContainers.
fn validate_containers(
    containers: &[Container],
    vols: &Volumes,
    claim_names: &BTreeSet<&str>,
    grace: Option<i64>,
    path: &Path,
    _opts: PodOpts,
    restart_policy: &str,
) -> Errors {
    if containers.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_container_common(
            c,
            vols,
            claim_names,
            &p,
            restart_policy,
        ));
        if !seen.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(&p.child("name"), c.name.as_str()));
        }
        errs.extend(lifecycle_and_probes(c, grace, &p));
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(containers, path));
    errs
}

#[allow(clippy::too_many_arguments)] // Mirrors validateInitContainers' inputs one for one.
fn validate_init_containers(
    containers: &[Container],
    regular: &[Container],
    vols: &Volumes,
    claim_names: &BTreeSet<&str>,
    grace: Option<i64>,
    path: &Path,
    _opts: PodOpts,
    restart_policy: &str,
) -> Errors {
    let mut errs = Vec::new();
    let mut all: BTreeSet<&str> = regular.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in containers.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_container_common(
            c,
            vols,
            claim_names,
            &p,
            restart_policy,
        ));
        let mut restart_always = false;
        if let Some(rp) = &c.restart_policy {
            if rp != "Always" {
                errs.push(FieldError::not_supported(
                    &p.child("restartPolicy"),
                    rp.as_str(),
                    &["Always"],
                ));
            }
            restart_always = rp == "Always";
        }
        if all.contains(c.name.as_str()) {
            errs.push(FieldError::duplicate(&p.child("name"), c.name.as_str()));
        } else if !c.name.is_empty() {
            all.insert(c.name.as_str());
        }
        errs.extend(host_port_conflicts(std::slice::from_ref(c), path));
        if restart_always {
            errs.extend(lifecycle_and_probes(c, grace, &p));
        } else {
            const WHY: &str = "may not be set for init containers without restartPolicy=Always";
            for (present, name) in [
                (c.lifecycle.is_some(), "lifecycle"),
                (c.liveness_probe.is_some(), "livenessProbe"),
                (c.readiness_probe.is_some(), "readinessProbe"),
                (c.startup_probe.is_some(), "startupProbe"),
            ] {
                if present {
                    errs.push(FieldError::forbidden(&p.child(name), WHY));
                }
            }
        }
        if !c.resize_policy.as_ref().is_none_or(Vec::is_empty) && !restart_always {
            errs.push(FieldError::invalid(
                &p.child("resizePolicy"),
                &Raw(render::json(&c.resize_policy)),
                "must not be set for init containers",
            ));
        }
    }
    errs
}

/// Ephemeral containers' names must not collide with any other container's.
fn validate_ephemeral_names(spec: &PodSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let mut all: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    all.extend(
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str()),
    );
    let others = all.clone();
    for (i, ec) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let p = path.index(i);
        if ec.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            errs.extend(dns1123_label(&ec.name, &p.child("name")));
        }
        if !all.insert(ec.name.as_str()) {
            errs.push(FieldError::duplicate(&p.child("name"), ec.name.as_str()));
        }
        if let Some(t) = ec
            .target_container_name
            .as_deref()
            .filter(|t| !t.is_empty())
            && !others.contains(t)
        {
            errs.push(FieldError::not_found(&p.child("targetContainerName"), t));
        }
    }
    errs
}

/// AccumulateUniqueHostPorts.
fn host_port_conflicts(containers: &[Container], path: &Path) -> Errors {
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in c.ports.iter().flatten().enumerate() {
            let hp = port.host_port.unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!("{}/{}/{hp}", s(&port.protocol), s(&port.host_ip));
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    &path.index(ci).child("ports").index(pi).child("hostPort"),
                    key.as_str(),
                ));
            }
        }
    }
    errs
}

/// validatePodHostNetworkDeps: with hostNetwork, hostPort must equal containerPort.
fn validate_host_network_deps(spec: &PodSpec, path: &Path, opts: PodOpts) -> Errors {
    let mut errs = Vec::new();
    if spec.host_network != Some(true) {
        return errs;
    }
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let hp = port.host_port.unwrap_or(0);
            if (opts.is_pod || hp != 0) && hp != port.container_port {
                errs.push(FieldError::invalid(
                    &path
                        .child("containers")
                        .index(i)
                        .child("ports")
                        .index(j)
                        .child("hostPort"),
                    &hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
    errs
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// The lifecycle hooks and the three probes of a container that runs for the pod's life: a
/// regular container, or an init container with restartPolicy Always (a sidecar).
fn lifecycle_and_probes(c: &Container, grace: Option<i64>, p: &Path) -> Errors {
    let mut errs = Vec::new();
    if let Some(l) = &c.lifecycle {
        errs.extend(validate_lifecycle(l, grace, &p.child("lifecycle")));
    }
    for (probe, name, kind) in [
        (&c.liveness_probe, "livenessProbe", ProbeKind::Liveness),
        (&c.readiness_probe, "readinessProbe", ProbeKind::Readiness),
        (&c.startup_probe, "startupProbe", ProbeKind::Startup),
    ] {
        errs.extend(validate_probe_kind(
            probe.as_ref(),
            grace,
            &p.child(name),
            kind,
        ));
    }
    errs
}

fn validate_probe_kind(
    probe: Option<&Probe>,
    grace: Option<i64>,
    path: &Path,
    kind: ProbeKind,
) -> Errors {
    let Some(probe) = probe else {
        return Vec::new();
    };
    let mut errs = validate_probe(probe, grace, path);
    match kind {
        ProbeKind::Liveness | ProbeKind::Startup => {
            let st = probe.success_threshold.unwrap_or(0);
            if st != 1 {
                errs.push(FieldError::invalid(
                    &path.child("successThreshold"),
                    &st,
                    "must be 1",
                ));
            }
        }
        ProbeKind::Readiness => {
            if let Some(t) = probe.termination_grace_period_seconds {
                errs.push(FieldError::invalid(
                    &path.child("terminationGracePeriodSeconds"),
                    &t,
                    "must not be set for readinessProbes",
                ));
            }
        }
    }
    errs
}

fn validate_probe(probe: &Probe, grace: Option<i64>, path: &Path) -> Errors {
    let handler = Handler {
        exec: probe
            .exec
            .as_ref()
            .map(|e| e.command.as_deref().unwrap_or(&[]).len()),
        http_get: probe.http_get.as_ref(),
        tcp_port: probe.tcp_socket.as_ref().map(|t| t.port.clone()),
        grpc_port: probe.grpc.as_ref().map(|g| g.port),
        sleep: None,
    };
    let mut errs = validate_handler(&handler, grace, path);
    for (v, name) in [
        (probe.initial_delay_seconds, "initialDelaySeconds"),
        (probe.timeout_seconds, "timeoutSeconds"),
        (probe.period_seconds, "periodSeconds"),
        (probe.success_threshold, "successThreshold"),
        (probe.failure_threshold, "failureThreshold"),
    ] {
        nonnegative(&mut errs, v.map(i64::from), &path.child(name));
    }
    if let Some(t) = probe.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.push(FieldError::invalid(
            &path.child("terminationGracePeriodSeconds"),
            &t,
            "must be greater than 0",
        ));
    }
    errs
}

struct Handler<'a> {
    /// The number of command words, if an exec handler is set.
    exec: Option<usize>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_port: Option<IntOrString>,
    grpc_port: Option<i32>,
    sleep: Option<i64>,
}

fn validate_handler(h: &Handler, grace: Option<i64>, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let mut n = 0;
    let mut take = |present: bool, name: &str, errs: &mut Errors| -> bool {
        if !present {
            return false;
        }
        if n > 0 {
            errs.push(FieldError::forbidden(
                &path.child(name),
                "may not specify more than 1 handler type",
            ));
            return false;
        }
        n += 1;
        true
    };
    if take(h.exec.is_some(), "exec", &mut errs) && h.exec == Some(0) {
        errs.push(FieldError::required(
            &path.child("exec").child("command"),
            "",
        ));
    }
    if take(h.http_get.is_some(), "httpGet", &mut errs)
        && let Some(http) = h.http_get
    {
        let p = path.child("httpGet");
        if s(&http.path).is_empty() {
            errs.push(FieldError::required(&p.child("path"), ""));
        }
        errs.extend(port_num_or_name(&http.port, &p.child("port")));
        let scheme = s(&http.scheme);
        if scheme != "HTTP" && scheme != "HTTPS" {
            errs.push(FieldError::not_supported(
                &p.child("scheme"),
                scheme,
                &["HTTP", "HTTPS"],
            ));
        }
        for header in http.http_headers.iter().flatten() {
            for msg in names::is_http_header_name(&header.name) {
                errs.push(FieldError::invalid(
                    &p.child("httpHeaders"),
                    header.name.as_str(),
                    msg,
                ));
            }
        }
    }
    if take(h.tcp_port.is_some(), "tcpSocket", &mut errs)
        && let Some(port) = &h.tcp_port
    {
        errs.extend(port_num_or_name(
            port,
            &path.child("tcpSocket").child("port"),
        ));
    }
    if take(h.grpc_port.is_some(), "grpc", &mut errs)
        && let Some(port) = h.grpc_port
    {
        errs.extend(port_num_or_name(
            &IntOrString::Int(port),
            &path.child("grpc").child("port"),
        ));
    }
    if take(h.sleep.is_some(), "sleep", &mut errs)
        && let (Some(secs), Some(grace)) = (h.sleep, grace)
        && (secs < 0 || secs > grace)
    {
        errs.push(FieldError::invalid(
            &path.child("sleep"),
            &secs,
            format!("must be non-negative and less than terminationGracePeriodSeconds ({grace})"),
        ));
    }
    if n == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    errs
}

fn lifecycle_handler(h: &LifecycleHandler, grace: Option<i64>, path: &Path) -> Errors {
    let handler = Handler {
        exec: h
            .exec
            .as_ref()
            .map(|e| e.command.as_deref().unwrap_or(&[]).len()),
        http_get: h.http_get.as_ref(),
        tcp_port: h.tcp_socket.as_ref().map(|t| t.port.clone()),
        grpc_port: None,
        sleep: h.sleep.as_ref().map(|s| s.seconds),
    };
    validate_handler(&handler, grace, path)
}

fn validate_lifecycle(
    l: &k8s_openapi::api::core::v1::Lifecycle,
    grace: Option<i64>,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    if let Some(h) = &l.post_start {
        errs.extend(lifecycle_handler(h, grace, &path.child("postStart")));
    }
    if let Some(h) = &l.pre_stop {
        errs.extend(lifecycle_handler(h, grace, &path.child("preStop")));
    }
    errs
}

/// ValidatePortNumOrName.
pub(crate) fn port_num_or_name(port: &IntOrString, path: &Path) -> Errors {
    match port {
        IntOrString::Int(i) => names::is_valid_port_num((*i).into())
            .into_iter()
            .map(|msg| FieldError::invalid(path, i, msg))
            .collect(),
        IntOrString::String(s) => names::is_valid_port_name(s)
            .into_iter()
            .map(|msg| FieldError::invalid(path, s.as_str(), msg))
            .collect(),
    }
}

fn id_range(errs: &mut Errors, v: Option<i64>, path: &Path) {
    if let Some(v) = v.filter(|v| !(0..=MAX_INT32).contains(v)) {
        errs.push(FieldError::invalid(
            path,
            &v,
            inclusive_range_error(0, MAX_INT32),
        ));
    }
}

fn seccomp_profile(sp: Option<&k8s_openapi::api::core::v1::SeccompProfile>, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let Some(sp) = sp else {
        return errs;
    };
    match sp.type_.as_str() {
        "Localhost" | "RuntimeDefault" | "Unconfined" => {}
        "" => errs.push(FieldError::required(
            &path.child("type"),
            "type is required when seccompProfile is set",
        )),
        other => errs.push(FieldError::not_supported(
            &path.child("type"),
            other,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
    if sp.type_ == "Localhost" {
        match &sp.localhost_profile {
            None => errs.push(FieldError::required(
                &path.child("localhostProfile"),
                "must be set when seccomp type is Localhost",
            )),
            Some(p) => errs.extend(local_descending_path(p, &path.child("localhostProfile"))),
        }
    } else if sp.localhost_profile.is_some() {
        errs.push(FieldError::invalid(
            &path.child("localhostProfile"),
            &Raw(render::json(sp)),
            "can only be set when seccomp type is Localhost",
        ));
    }
    errs
}

/// validatePodSpecSecurityContext.
fn validate_pod_security_context(spec: &PodSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let Some(sc) = &spec.security_context else {
        return errs;
    };
    id_range(&mut errs, sc.fs_group, &path.child("fsGroup"));
    id_range(&mut errs, sc.run_as_user, &path.child("runAsUser"));
    id_range(&mut errs, sc.run_as_group, &path.child("runAsGroup"));
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        id_range(
            &mut errs,
            Some(*g),
            &path.child("supplementalGroups").index(i),
        );
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        errs.push(FieldError::invalid(
            &path.child("shareProcessNamespace"),
            &true,
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    let mut sysctls = BTreeSet::new();
    for (i, sysctl) in sc.sysctls.iter().flatten().enumerate() {
        let p = path.child("sysctls").index(i).child("name");
        if sysctl.name.is_empty() {
            errs.push(FieldError::required(&p, ""));
        } else if !valid_sysctl_name(&sysctl.name) {
            errs.push(FieldError::invalid(
                &p,
                sysctl.name.as_str(),
                "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
            ));
        } else if !sysctls.insert(sysctl.name.as_str()) {
            errs.push(FieldError::duplicate(&p, sysctl.name.as_str()));
        }
    }
    errs.extend(FieldError::unless_supported(
        &path.child("fsGroupChangePolicy"),
        sc.fs_group_change_policy.as_deref(),
        &["Always", "OnRootMismatch"],
    ));
    errs.extend(seccomp_profile(
        sc.seccomp_profile.as_ref(),
        &path.child("seccompProfile"),
    ));
    errs.extend(FieldError::unless_supported(
        &path.child("supplementalGroupsPolicy"),
        sc.supplemental_groups_policy.as_deref(),
        &["Merge", "Strict"],
    ));
    errs.extend(FieldError::unless_supported(
        &path.child("seLinuxChangePolicy"),
        sc.se_linux_change_policy.as_deref(),
        &["MountOption", "Recursive"],
    ));
    errs
}

fn valid_sysctl_name(name: &str) -> bool {
    let segment = |seg: &str| {
        let b = seg.as_bytes();
        match (b.first(), b.last()) {
            (Some(&f), Some(&l)) => {
                (f.is_ascii_lowercase() || f.is_ascii_digit())
                    && (l.is_ascii_lowercase() || l.is_ascii_digit())
                    && b.iter().all(|&c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_'
                    })
            }
            _ => false,
        }
    };
    name.len() <= 253 && name.split(['.', '/']).all(segment)
}

/// ValidateSecurityContext for a container.
fn validate_security_context(sc: &SecurityContext, path: &Path) -> Errors {
    let mut errs = Vec::new();
    id_range(&mut errs, sc.run_as_user, &path.child("runAsUser"));
    id_range(&mut errs, sc.run_as_group, &path.child("runAsGroup"));
    errs.extend(FieldError::unless_supported(
        &path.child("procMount"),
        sc.proc_mount.as_deref(),
        &["Default", "Unmasked"],
    ));
    errs.extend(seccomp_profile(
        sc.seccomp_profile.as_ref(),
        &path.child("seccompProfile"),
    ));
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errs.push(FieldError::invalid(
                path,
                &Raw(render::json(sc)),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        if sc
            .capabilities
            .as_ref()
            .is_some_and(|c| c.add.iter().flatten().any(|a| a == "CAP_SYS_ADMIN"))
        {
            errs.push(FieldError::invalid(
                path,
                &Raw(render::json(sc)),
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
    errs
}

fn validate_dns_config(spec: &PodSpec, dns_policy: &str, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if dns_policy == "None" {
        match &spec.dns_config {
            None => {
                errs.push(FieldError::required(
                    path,
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
                return errs;
            }
            Some(c) if c.nameservers.as_ref().is_none_or(Vec::is_empty) => {
                errs.push(FieldError::required(
                    &path.child("nameservers"),
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                ));
                return errs;
            }
            Some(_) => {}
        }
    }
    let Some(c) = &spec.dns_config else {
        return errs;
    };
    let nameservers = c.nameservers.as_deref().unwrap_or(&[]);
    if nameservers.len() > 3 {
        errs.push(FieldError::invalid(
            &path.child("nameservers"),
            &Raw(render::string_slice(Some(nameservers))),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        for msg in names::is_valid_ip(ns) {
            errs.push(FieldError::invalid(
                &path.child("nameservers").index(i),
                ns.as_str(),
                msg,
            ));
        }
    }
    let searches = c.searches.as_deref().unwrap_or(&[]);
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            &Raw(render::string_slice(Some(searches))),
            "must not have more than 32 search paths",
        ));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            &Raw(render::string_slice(Some(searches))),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        if search == "." {
            continue;
        }
        let trimmed = search.strip_suffix('.').unwrap_or(search);
        // RelaxedDNSSearchValidation (on by default in 1.33) lets search domains hold '_'.
        for msg in names::is_dns1123_subdomain_with_underscore(trimmed) {
            errs.push(FieldError::invalid(
                &path.child("searches").index(i),
                trimmed,
                msg,
            ));
        }
    }
    for (i, o) in c.options.iter().flatten().enumerate() {
        if s(&o.name).is_empty() {
            errs.push(FieldError::required(
                &path.child("options").index(i),
                "must not be empty",
            ));
        }
    }
    errs
}

fn node_selector_requirement(
    r: &k8s_openapi::api::core::v1::NodeSelectorRequirement,
    allow_invalid_values: bool,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" | "NotIn" => {
            if values.is_empty() {
                errs.push(FieldError::required(
                    &path.child("values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errs.push(FieldError::forbidden(
                    &path.child("values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
        }
        "Gt" | "Lt" => {
            if values.len() != 1 {
                errs.push(FieldError::required(
                    &path.child("values"),
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                ));
            }
        }
        other => errs.push(FieldError::invalid(
            &path.child("operator"),
            other,
            "not a valid selector operator",
        )),
    }
    errs.extend(validate_label_name(&r.key, &path.child("key")));
    if !allow_invalid_values {
        for (i, v) in values.iter().enumerate() {
            for msg in names::is_valid_label_value(v) {
                errs.push(FieldError::invalid(
                    &path.child("values").index(i),
                    v.as_str(),
                    msg,
                ));
            }
        }
    }
    errs
}

fn node_selector_term(
    t: &k8s_openapi::api::core::v1::NodeSelectorTerm,
    allow_invalid_values: bool,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    for (j, r) in t.match_expressions.iter().flatten().enumerate() {
        errs.extend(node_selector_requirement(
            r,
            allow_invalid_values,
            &path.child("matchExpressions").index(j),
        ));
    }
    for (j, r) in t.match_fields.iter().flatten().enumerate() {
        let p = path.child("matchFields").index(j);
        let values = r.values.as_deref().unwrap_or(&[]);
        match r.operator.as_str() {
            "In" | "NotIn" => {
                if values.len() != 1 {
                    errs.push(FieldError::required(
                        &p.child("values"),
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                &p.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        if r.key != "metadata.name" {
            errs.push(FieldError::invalid(
                &p.child("key"),
                r.key.as_str(),
                "not a valid field selector key",
            ));
        } else {
            for (k, v) in values.iter().enumerate() {
                for msg in names::name_is_dns_subdomain(v, false) {
                    errs.push(FieldError::invalid(
                        &p.child("values").index(k),
                        v.as_str(),
                        msg,
                    ));
                }
            }
        }
    }
    errs
}

/// ValidateNodeSelector, also used for PersistentVolume node affinity.
pub(crate) fn validate_node_selector(
    sel: &k8s_openapi::api::core::v1::NodeSelector,
    path: &Path,
) -> Errors {
    let terms_path = path.child("nodeSelectorTerms");
    if sel.node_selector_terms.is_empty() {
        return vec![FieldError::required(
            &terms_path,
            "must have at least one node selector term",
        )];
    }
    sel.node_selector_terms
        .iter()
        .enumerate()
        .flat_map(|(i, t)| node_selector_term(t, false, &terms_path.index(i)))
        .collect()
}

fn pod_affinity_term(t: &k8s_openapi::api::core::v1::PodAffinityTerm, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if let Some(sel) = &t.label_selector {
        errs.extend(meta::validate_label_selector(
            sel,
            &path.child("labelSelector"),
        ));
    }
    if let Some(sel) = &t.namespace_selector {
        errs.extend(meta::validate_label_selector(
            sel,
            &path.child("namespaceSelector"),
        ));
    }
    for ns in t.namespaces.iter().flatten() {
        for msg in names::name_is_dns_label(ns, false) {
            errs.push(FieldError::invalid(
                &path.child("namespace"),
                ns.as_str(),
                msg,
            ));
        }
    }
    for (list, name) in [
        (&t.match_label_keys, "matchLabelKeys"),
        (&t.mismatch_label_keys, "mismatchLabelKeys"),
    ] {
        let keys = list.as_deref().unwrap_or(&[]);
        if !keys.is_empty() && t.label_selector.is_none() {
            errs.push(FieldError::forbidden(
                &path.child(name),
                "must not be specified when labelSelector is not set",
            ));
            continue;
        }
        for (i, k) in keys.iter().enumerate() {
            errs.extend(validate_label_name(k, &path.child(name).index(i)));
        }
    }
    if t.topology_key.is_empty() {
        errs.push(FieldError::required(
            &path.child("topologyKey"),
            "can not be empty",
        ));
    }
    errs.extend(validate_label_name(
        &t.topology_key,
        &path.child("topologyKey"),
    ));
    errs
}

fn validate_affinity(a: &k8s_openapi::api::core::v1::Affinity, path: &Path) -> Errors {
    let mut errs = Vec::new();
    if let Some(na) = &a.node_affinity {
        let p = path.child("nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            errs.extend(validate_node_selector(
                req,
                &p.child("requiredDuringSchedulingIgnoredDuringExecution"),
            ));
        }
        for (i, t) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let tp = p
                .child("preferredDuringSchedulingIgnoredDuringExecution")
                .index(i);
            if !(1..=100).contains(&t.weight) {
                errs.push(FieldError::invalid(
                    &tp.child("weight"),
                    &t.weight,
                    "must be in the range 1-100",
                ));
            }
            errs.extend(node_selector_term(
                &t.preference,
                true,
                &tp.child("preference"),
            ));
        }
    }
    let pod_affinities = [
        (
            a.pod_affinity.as_ref().map(|p| {
                (
                    &p.required_during_scheduling_ignored_during_execution,
                    &p.preferred_during_scheduling_ignored_during_execution,
                )
            }),
            "podAffinity",
        ),
        (
            a.pod_anti_affinity.as_ref().map(|p| {
                (
                    &p.required_during_scheduling_ignored_during_execution,
                    &p.preferred_during_scheduling_ignored_during_execution,
                )
            }),
            "podAntiAffinity",
        ),
    ];
    for (terms, name) in pod_affinities {
        let Some((required, preferred)) = terms else {
            continue;
        };
        let p = path.child(name);
        for (i, t) in required.iter().flatten().enumerate() {
            errs.extend(pod_affinity_term(
                t,
                &p.child("requiredDuringSchedulingIgnoredDuringExecution")
                    .index(i),
            ));
        }
        for (i, t) in preferred.iter().flatten().enumerate() {
            let tp = p
                .child("preferredDuringSchedulingIgnoredDuringExecution")
                .index(i);
            if !(1..=100).contains(&t.weight) {
                errs.push(FieldError::invalid(
                    &tp.child("weight"),
                    &t.weight,
                    "must be in the range 1-100",
                ));
            }
            errs.extend(pod_affinity_term(
                &t.pod_affinity_term,
                &tp.child("podAffinityTerm"),
            ));
        }
    }
    errs
}

fn validate_topology_spread(spec: &PodSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let constraints = spec.topology_spread_constraints.as_deref().unwrap_or(&[]);
    for (i, c) in constraints.iter().enumerate() {
        let p = path.index(i);
        if c.max_skew <= 0 {
            errs.push(FieldError::invalid(
                &p.child("maxSkew"),
                &c.max_skew,
                "must be greater than zero",
            ));
        }
        if c.topology_key.is_empty() {
            errs.push(FieldError::required(
                &p.child("topologyKey"),
                "can not be empty",
            ));
        }
        if c.when_unsatisfiable != "DoNotSchedule" && c.when_unsatisfiable != "ScheduleAnyway" {
            errs.push(FieldError::not_supported(
                &p.child("whenUnsatisfiable"),
                c.when_unsatisfiable.as_str(),
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        if constraints[i + 1..].iter().any(|o| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        }) {
            errs.push(FieldError::duplicate(
                &p.child("{topologyKey, whenUnsatisfiable}"),
                format!("{{{}, {}}}", c.topology_key, c.when_unsatisfiable).as_str(),
            ));
        }
        if let Some(md) = c.min_domains {
            if md <= 0 {
                errs.push(FieldError::invalid(
                    &p.child("minDomains"),
                    &md,
                    "must be greater than zero",
                ));
            }
            if c.when_unsatisfiable != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    &p.child("minDomains"),
                    &md,
                    format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {}",
                        c.when_unsatisfiable
                    ),
                ));
            }
        }
        for (v, name) in [
            (&c.node_affinity_policy, "nodeAffinityPolicy"),
            (&c.node_taints_policy, "nodeTaintsPolicy"),
        ] {
            errs.extend(FieldError::unless_supported(
                &p.child(name),
                v.as_deref(),
                &["Honor", "Ignore"],
            ));
        }
        if let Some(sel) = &c.label_selector {
            errs.extend(meta::validate_label_selector(
                sel,
                &p.child("labelSelector"),
            ));
        }
        let keys = c.match_label_keys.as_deref().unwrap_or(&[]);
        if !keys.is_empty() && c.label_selector.is_none() {
            errs.push(FieldError::forbidden(
                &p.child("matchLabelKeys"),
                "must not be specified when labelSelector is not set",
            ));
        }
        for (j, k) in keys.iter().enumerate() {
            errs.extend(validate_label_name(k, &p.child("matchLabelKeys").index(j)));
        }
    }
    errs
}

/// ValidateTolerations.
pub(crate) fn validate_tolerations(tolerations: &[Toleration], path: &Path) -> Errors {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = s(&t.key);
        let op = s(&t.operator);
        let effect = s(&t.effect);
        if !key.is_empty() {
            errs.extend(validate_label_name(key, &p.child("key")));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                &p.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                &p.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = s(&t.value);
        match op {
            "Equal" | "" => {
                let msgs = names::is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        &p.child("operator"),
                        value,
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        &p.child("operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                &p.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            errs.push(FieldError::not_supported(
                &p.child("effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
    errs
}

const UPDATABLE_POD_SPEC_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// ValidatePodUpdate: besides the listed fields, `spec.nodeName` may go from empty to set once
/// (what a binding does); everything else in the spec is fixed.
pub(crate) fn validate_pod_update(new: &Pod, old: &Pod) -> Errors {
    let meta_path = Path::new("metadata");
    let spec_path = Path::new("spec");
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path);
    errs.extend(validate_pod_metadata_and_spec(new, false));
    let default_spec = PodSpec::default();
    let new_spec = new.spec.as_ref().unwrap_or(&default_spec);
    let old_spec = old.spec.as_ref().unwrap_or(&default_spec);

    for (new_c, old_c, name) in [
        (
            &new_spec.containers[..],
            &old_spec.containers[..],
            "containers",
        ),
        (
            new_spec.init_containers.as_deref().unwrap_or(&[]),
            old_spec.init_containers.as_deref().unwrap_or(&[]),
            "initContainers",
        ),
    ] {
        let p = spec_path.child(name);
        if new_c.len() != old_c.len() {
            errs.push(FieldError::forbidden(
                &p,
                "pod updates may not add or remove containers",
            ));
            return errs;
        }
        for (i, c) in new_c.iter().enumerate() {
            let image = s(&c.image);
            if image.is_empty() {
                errs.push(FieldError::required(&p.index(i).child("image"), ""));
            }
            if image.trim().len() != image.len() {
                errs.push(FieldError::invalid(
                    &p.index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }

    let ads_path = spec_path.child("activeDeadlineSeconds");
    match (
        new_spec.active_deadline_seconds,
        old_spec.active_deadline_seconds,
    ) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            errs.push(FieldError::invalid(
                &ads_path,
                &n,
                inclusive_range_error(0, MAX_INT32),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(
                &ads_path,
                &n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            &ads_path,
            &Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    errs.extend(only_added_tolerations(
        new_spec.tolerations.as_deref().unwrap_or(&[]),
        old_spec.tolerations.as_deref().unwrap_or(&[]),
        &spec_path.child("tolerations"),
    ));

    let new_gates = new_spec.scheduling_gates.as_deref().unwrap_or(&[]);
    let old_gates: BTreeSet<&str> = old_spec
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    for (i, g) in new_gates.iter().enumerate() {
        if !old_gates.contains(g.name.as_str()) {
            errs.push(FieldError::forbidden(
                &spec_path.child("schedulingGates").index(i).child("name"),
                format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    g.name
                ),
            ));
        }
    }

    if new_spec == old_spec {
        return errs;
    }
    let mut munged = new_spec.clone();
    for (c, o) in munged.containers.iter_mut().zip(&old_spec.containers) {
        c.image.clone_from(&o.image);
    }
    if let (Some(cs), Some(os)) = (
        munged.init_containers.as_mut(),
        old_spec.init_containers.as_ref(),
    ) {
        for (c, o) in cs.iter_mut().zip(os) {
            c.image.clone_from(&o.image);
        }
    }
    munged.active_deadline_seconds = old_spec.active_deadline_seconds;
    munged
        .scheduling_gates
        .clone_from(&old_spec.scheduling_gates);
    munged.tolerations.clone_from(&old_spec.tolerations);
    if old_spec
        .termination_grace_period_seconds
        .is_some_and(|t| t < 0)
        && munged.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
    }
    if s(&old_spec.node_name).is_empty() {
        munged.node_name.clone_from(&old_spec.node_name);
    }
    if !old_gates.is_empty() {
        // A gated pod may gain node selector entries, none changed or removed.
        let old_sel = old_spec.node_selector.clone().unwrap_or_default();
        let new_sel = munged.node_selector.clone().unwrap_or_default();
        if old_sel.iter().all(|(k, v)| new_sel.get(k) == Some(v)) {
            munged.node_selector.clone_from(&old_spec.node_selector);
        } else {
            errs.push(FieldError::invalid(
                &spec_path.child("nodeSelector"),
                &Raw(render::string_map(munged.node_selector.as_ref())),
                "only additions to spec.nodeSelector are allowed (no mutations or deletions)",
            ));
            munged.node_selector.clone_from(&old_spec.node_selector);
        }
    }
    if &munged != old_spec {
        let diff = render::spec_diff(old_spec, &munged);
        errs.push(FieldError::forbidden(
            &spec_path,
            format!(
                "pod updates may not change fields other than {UPDATABLE_POD_SPEC_FIELDS}\n{diff}"
            ),
        ));
    }
    errs
}

/// validateOnlyAddedTolerations: existing tolerations stay, bar their tolerationSeconds.
fn only_added_tolerations(new: &[Toleration], old: &[Toleration], path: &Path) -> Errors {
    for o in old {
        let found = new.iter().any(|n| {
            let mut o = o.clone();
            o.toleration_seconds = n.toleration_seconds;
            &o == n
        });
        if !found {
            return vec![FieldError::forbidden(
                path,
                "existing toleration can not be modified except its tolerationSeconds",
            )];
        }
    }
    validate_tolerations(new, path)
}

/// ValidatePodStatusUpdate.
pub(crate) fn validate_pod_status_update(new: &Pod, old: &Pod) -> Errors {
    let meta_path = Path::new("metadata");
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path);
    let default_spec = PodSpec::default();
    let new_spec = new.spec.as_ref().unwrap_or(&default_spec);
    let old_spec = old.spec.as_ref().unwrap_or(&default_spec);
    errs.extend(pod_specific_annotations(
        new.metadata.annotations.as_ref(),
        new_spec,
        &meta_path.child("annotations"),
    ));
    let status_path = Path::new("status");
    let default_status = Default::default();
    let status: &k8s_openapi::api::core::v1::PodStatus =
        new.status.as_ref().unwrap_or(&default_status);
    let old_status = old.status.as_ref().unwrap_or(&default_status);
    for (i, c) in status.conditions.iter().flatten().enumerate() {
        if matches!(c.type_.as_str(), "PodScheduled" | "Ready" | "Initialized") {
            continue;
        }
        errs.extend(meta::validate_qualified_name(
            &c.type_,
            &meta_path.child("conditions").index(i).child("Type"),
        ));
    }
    if new_spec.node_name != old_spec.node_name {
        errs.push(FieldError::forbidden(
            &status_path.child("nodeName"),
            "may not be changed directly",
        ));
    }
    if let Some(n) = status
        .nominated_node_name
        .as_deref()
        .filter(|n| !n.is_empty())
        && status.nominated_node_name != old_status.nominated_node_name
    {
        for msg in names::name_is_dns_subdomain(n, false) {
            errs.push(FieldError::invalid(
                &status_path.child("nominatedNodeName"),
                n,
                msg,
            ));
        }
    }
    if let (Some(n), Some(o)) = (status.qos_class.as_deref(), old_status.qos_class.as_deref())
        && !o.is_empty()
        && n != o
    {
        errs.push(FieldError::invalid(
            &status_path.child("qosClass"),
            n,
            meta::IMMUTABLE,
        ));
    }
    let restart = s(&old_spec.restart_policy);
    errs.extend(state_transitions(
        status.container_statuses.as_deref().unwrap_or(&[]),
        old_status.container_statuses.as_deref().unwrap_or(&[]),
        &status_path.child("containerStatuses"),
        restart,
        &[],
    ));
    let restartable: Vec<&str> = old_spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    errs.extend(state_transitions(
        status.init_container_statuses.as_deref().unwrap_or(&[]),
        old_status.init_container_statuses.as_deref().unwrap_or(&[]),
        &status_path.child("initContainerStatuses"),
        restart,
        &restartable,
    ));
    let ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    errs.extend(ip_list(&ips, &status_path.child("podIPs")));
    if let Some(host_ips) = status.host_ips.as_deref().filter(|h| !h.is_empty()) {
        let first = host_ips[0].ip.as_str();
        if s(&status.host_ip) != first {
            errs.push(FieldError::invalid(
                &status_path.child("hostIPs").index(0).child("ip"),
                first,
                "must be equal to `hostIP`",
            ));
        }
        let ips: Vec<&str> = host_ips.iter().map(|h| h.ip.as_str()).collect();
        errs.extend(ip_list(&ips, &status_path.child("hostIPs")));
    }
    errs
}

fn state_transitions(
    new: &[k8s_openapi::api::core::v1::ContainerStatus],
    old: &[k8s_openapi::api::core::v1::ContainerStatus],
    path: &Path,
    restart_policy: &str,
    restartable: &[&str],
) -> Errors {
    let mut errs = Vec::new();
    if restart_policy == "Always" {
        return errs;
    }
    for (i, o) in old.iter().enumerate() {
        let Some(term) = o.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        if term.exit_code != 0 && restart_policy == "OnFailure" {
            continue;
        }
        if restartable.contains(&o.name.as_str()) {
            continue;
        }
        for n in new {
            if n.name == o.name
                && n.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_none()
            {
                errs.push(FieldError::forbidden(
                    &path.index(i).child("state"),
                    "may not be transitioned to non-terminated state",
                ));
            }
        }
    }
    errs
}

/// Pod and host IPs: valid, at most one per family, no duplicates.
fn ip_list(ips: &[&str], path: &Path) -> Errors {
    let mut errs = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        for msg in names::is_valid_ip(ip) {
            errs.push(FieldError::invalid(&path.index(i), *ip, msg));
        }
    }
    if ips.len() > 1 {
        let v4 = ips
            .iter()
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
            .count();
        let v6 = ips
            .iter()
            .filter(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
            .count();
        if ips.len() > 2 || v4 != 1 || v6 != 1 {
            let list: Vec<String> = ips
                .iter()
                .map(|ip| format!("{{IP:{}}}", render::quote(ip)))
                .collect();
            errs.push(FieldError::invalid(
                path,
                &Raw(format!("[]core.PodIP{{{}}}", list.join(", "))),
                "may specify no more than one IP for each IP family",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, ip) in ips.iter().enumerate() {
            if !seen.insert(*ip) {
                errs.push(FieldError::duplicate(
                    &path.index(i),
                    &Raw(format!("core.PodIP{{IP:{}}}", render::quote(ip))),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests;
