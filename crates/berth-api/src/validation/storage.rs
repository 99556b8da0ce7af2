//! PersistentVolumes, PersistentVolumeClaims and StorageClasses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;

use super::meta::{self, IMMUTABLE, NameRule};
use super::names;
use super::pod::{
    VolumeSources, path_no_backsteps, quantity_value, validate_csi_driver_name, validate_host_path,
    validate_nfs, validate_node_selector,
};
use super::quantity::Quantity;
use super::render::{self, Null, Raw};
use super::{Errors, FieldError, Path};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

fn access_modes(modes: &[String], path: &Path) -> Errors {
    let mut errs = Vec::new();
    let (mut rwop, mut other) = (false, false);
    for m in modes {
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.push(FieldError::not_supported(path, m.as_str(), ACCESS_MODES));
        }
        if m == "ReadWriteOncePod" {
            rwop = true;
        } else if ACCESS_MODES.contains(&m.as_str()) {
            other = true;
        }
    }
    if rwop && other {
        errs.push(FieldError::forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    errs
}

fn class_name(name: &str, path: &Path) -> Errors {
    names::name_is_dns_subdomain(name, false)
        .into_iter()
        .map(|m| FieldError::invalid(path, name, m))
        .collect()
}

/// ValidatePersistentVolumeSpec (not inline).
fn validate_pv_spec(spec: &PersistentVolumeSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let modes = spec.access_modes.as_deref().unwrap_or(&[]);
    if modes.is_empty() {
        errs.push(FieldError::required(&path.child("accessModes"), ""));
    }
    errs.extend(access_modes(modes, &path.child("accessModes")));
    let capacity = spec.capacity.clone().unwrap_or_default();
    let cap_path = path.child("capacity");
    if capacity.is_empty() {
        errs.push(FieldError::required(&cap_path, ""));
    }
    if !capacity.contains_key("storage") || capacity.len() > 1 {
        let rendered: BTreeMap<String, String> = capacity
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        errs.push(FieldError::not_supported(
            &cap_path,
            &Raw(format!(
                "core.ResourceList{{{}}}",
                render::string_map(Some(&rendered))
                    .trim_start_matches("map[string]string{")
                    .trim_end_matches('}')
            )),
            &["storage"],
        ));
    }
    for (k, q) in &capacity {
        let p = cap_path.key(k);
        let (parsed, e) = quantity_value(k, &q.0, &p);
        if parsed.is_some_and(|q| !q.is_negative() && q.is_zero()) {
            errs.push(FieldError::invalid(
                &p,
                q.0.as_str(),
                "must be greater than zero",
            ));
        } else {
            errs.extend(e);
        }
    }
    let reclaim = s(&spec.persistent_volume_reclaim_policy);
    if !reclaim.is_empty() && !RECLAIM_POLICIES.contains(&reclaim) {
        errs.push(FieldError::not_supported(
            &path.child("persistentVolumeReclaimPolicy"),
            reclaim,
            RECLAIM_POLICIES,
        ));
    }
    let mut node_affinity = false;
    if let Some(na) = &spec.node_affinity {
        node_affinity = true;
        match &na.required {
            Some(req) => errs.extend(validate_node_selector(
                req,
                &path.child("nodeAffinity").child("required"),
            )),
            None => errs.push(FieldError::required(
                &path.child("nodeAffinity").child("required"),
                "must specify required node constraints",
            )),
        }
    }
    let mut sources = VolumeSources::new(path);
    if sources.one(spec.host_path.is_some(), "hostPath", &mut errs)
        && let Some(hp) = &spec.host_path
    {
        errs.extend(validate_host_path(
            &hp.path,
            hp.type_.as_deref(),
            &path.child("hostPath"),
        ));
    }
    sources.one(
        spec.gce_persistent_disk.is_some(),
        "gcePersistentDisk",
        &mut errs,
    );
    sources.one(
        spec.aws_elastic_block_store.is_some(),
        "awsElasticBlockStore",
        &mut errs,
    );
    sources.one(spec.glusterfs.is_some(), "glusterfs", &mut errs);
    sources.one(spec.flocker.is_some(), "flocker", &mut errs);
    if sources.one(spec.nfs.is_some(), "nfs", &mut errs)
        && let Some(nfs) = &spec.nfs
    {
        errs.extend(validate_nfs(&nfs.server, &nfs.path, &path.child("nfs")));
    }
    sources.one(spec.rbd.is_some(), "rbd", &mut errs);
    sources.one(spec.quobyte.is_some(), "quobyte", &mut errs);
    sources.one(spec.cephfs.is_some(), "cephFS", &mut errs);
    sources.one(spec.iscsi.is_some(), "iscsi", &mut errs);
    sources.one(spec.cinder.is_some(), "cinder", &mut errs);
    sources.one(spec.fc.is_some(), "fc", &mut errs);
    // Kubernetes counts flexVolume without checking for an earlier source.
    if spec.flex_volume.is_some() {
        sources.count_unchecked();
    }
    sources.one(spec.azure_file.is_some(), "azureFile", &mut errs);
    sources.one(spec.vsphere_volume.is_some(), "vsphereVolume", &mut errs);
    sources.one(
        spec.photon_persistent_disk.is_some(),
        "photonPersistentDisk",
        &mut errs,
    );
    sources.one(spec.portworx_volume.is_some(), "portworxVolume", &mut errs);
    sources.one(spec.azure_disk.is_some(), "azureDisk", &mut errs);
    sources.one(spec.scale_io.is_some(), "scaleIO", &mut errs);
    if sources.one(spec.local.is_some(), "local", &mut errs)
        && let Some(local) = &spec.local
    {
        let lp = path.child("local");
        if local.path.is_empty() {
            errs.push(FieldError::required(&lp.child("path"), ""));
        } else {
            errs.extend(path_no_backsteps(&local.path, &lp.child("path")));
        }
        if !node_affinity {
            errs.push(FieldError::required(
                &path.child("nodeAffinity"),
                "Local volume requires node affinity",
            ));
        }
    }
    sources.one(spec.storageos.is_some(), "storageos", &mut errs);
    if sources.one(spec.csi.is_some(), "csi", &mut errs)
        && let Some(csi) = &spec.csi
    {
        let cp = path.child("csi");
        errs.extend(validate_csi_driver_name(&csi.driver, &cp.child("driver")));
        if csi.volume_handle.is_empty() {
            errs.push(FieldError::required(&cp.child("volumeHandle"), ""));
        }
        for (r, name) in [
            (
                &csi.controller_publish_secret_ref,
                "controllerPublishSecretRef",
            ),
            (
                &csi.controller_expand_secret_ref,
                "controllerExpandSecretRef",
            ),
            (&csi.node_publish_secret_ref, "nodePublishSecretRef"),
            (&csi.node_expand_secret_ref, "nodeExpandSecretRef"),
        ] {
            if let Some(r) = r {
                let rp = cp.child(name);
                let rn = s(&r.name);
                if rn.is_empty() {
                    errs.push(FieldError::required(&rp.child("name"), ""));
                } else {
                    errs.extend(super::pod::dns1123_subdomain(rn, &rp.child("name")));
                }
                let rns = s(&r.namespace);
                if rns.is_empty() {
                    errs.push(FieldError::required(&rp.child("namespace"), ""));
                } else {
                    errs.extend(super::pod::dns1123_label(rns, &rp.child("namespace")));
                }
            }
        }
    }
    if sources.none() {
        errs.push(FieldError::required(path, "must specify a volume type"));
    }
    if let Some(hp) = &spec.host_path
        && (hp.path == "/" || hp.path.trim_end_matches('/').is_empty())
        && reclaim == "Recycle"
    {
        errs.push(FieldError::forbidden(
            &path.child("persistentVolumeReclaimPolicy"),
            "may not be 'recycle' for a hostPath mount of '/'",
        ));
    }
    let class = s(&spec.storage_class_name);
    if !class.is_empty() {
        errs.extend(class_name(class, &path.child("storageClassName")));
    }
    if let Some(mode) = &spec.volume_mode
        && !VOLUME_MODES.contains(&mode.as_str())
    {
        errs.push(FieldError::not_supported(
            &path.child("volumeMode"),
            mode.as_str(),
            VOLUME_MODES,
        ));
    }
    if let Some(vac) = &spec.volume_attributes_class_name {
        if vac.is_empty() {
            errs.push(FieldError::required(
                &path.child("volumeAttributesClassName"),
                "an empty string is disallowed",
            ));
        } else {
            errs.extend(class_name(vac, &path.child("volumeAttributesClassName")));
        }
        if spec.csi.is_none() {
            errs.push(FieldError::required(
                &path.child("csi"),
                "has to be specified when using volumeAttributesClassName",
            ));
        }
    }
    errs
}

pub(crate) fn validate_persistent_volume(pv: &PersistentVolume) -> Errors {
    let mut errs = meta::validate_object_meta(
        &pv.metadata,
        false,
        NameRule::Subdomain,
        &Path::new("metadata"),
    );
    errs.extend(validate_pv_spec(
        &pv.spec.clone().unwrap_or_default(),
        &Path::new("spec"),
    ));
    errs
}

/// The volume source of a PV spec: everything but the fields that may change.
fn pv_source(spec: &PersistentVolumeSpec) -> PersistentVolumeSpec {
    PersistentVolumeSpec {
        access_modes: None,
        capacity: None,
        claim_ref: None,
        mount_options: None,
        node_affinity: None,
        persistent_volume_reclaim_policy: None,
        storage_class_name: None,
        volume_attributes_class_name: None,
        volume_mode: None,
        ..spec.clone()
    }
}

/// ValidatePersistentVolumeUpdate.
pub(crate) fn validate_pv_update(new: &PersistentVolume, old: &PersistentVolume) -> Errors {
    let mut errs =
        meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    let new_spec = new.spec.clone().unwrap_or_default();
    let old_spec = old.spec.clone().unwrap_or_default();
    errs.extend(validate_pv_spec(&new_spec, &Path::new("spec")));
    let mut new_source = pv_source(&new_spec);
    let old_source = pv_source(&old_spec);
    // A controllerExpandSecretRef may be added to a CSI volume that had none.
    if let (Some(nc), Some(oc)) = (new_source.csi.as_mut(), old_source.csi.as_ref())
        && oc.controller_expand_secret_ref.is_none()
    {
        nc.controller_expand_secret_ref = None;
    }
    if new_source != old_source {
        let diff = render::spec_diff(&old_source, &new_source);
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("persistentvolumesource"),
            format!("spec.persistentvolumesource is immutable after creation\n{diff}"),
        ));
    }
    if new_spec.volume_mode != old_spec.volume_mode {
        // Kubernetes names this field without its `spec.` prefix.
        errs.push(FieldError::invalid(
            &Path::new("volumeMode"),
            &Raw(render::opt_str(new_spec.volume_mode.as_deref())),
            IMMUTABLE,
        ));
    }
    if old_spec.node_affinity.is_some() && new_spec.node_affinity != old_spec.node_affinity {
        errs.push(FieldError::invalid(
            &Path::new("nodeAffinity"),
            &Raw(render::json(&new_spec.node_affinity)),
            format!("{IMMUTABLE}, except for updating from beta label to GA"),
        ));
    }
    if old_spec.volume_attributes_class_name.is_some()
        && new_spec.volume_attributes_class_name.is_none()
    {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("volumeAttributesClassName"),
            "update from non-nil value to nil is forbidden",
        ));
    }
    errs
}

/// ValidatePersistentVolumeClaimSpec.
pub(crate) fn validate_pvc_spec(spec: &PersistentVolumeClaimSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let modes = spec.access_modes.as_deref().unwrap_or(&[]);
    if modes.is_empty() {
        errs.push(FieldError::required(
            &path.child("accessModes"),
            "at least 1 access mode is required",
        ));
    }
    if let Some(sel) = &spec.selector {
        errs.extend(meta::validate_label_selector(sel, &path.child("selector")));
    }
    errs.extend(access_modes(modes, &path.child("accessModes")));
    let storage_path = path.child("resources").key("storage");
    match spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    {
        None => errs.push(FieldError::required(&storage_path, "")),
        Some(q) => match Quantity::parse(&q.0) {
            None => {
                let (_, e) = quantity_value("storage", &q.0, &storage_path);
                errs.extend(e);
            }
            Some(parsed) if parsed.is_negative() || parsed.is_zero() => {
                errs.push(FieldError::invalid(
                    &storage_path,
                    q.0.as_str(),
                    "must be greater than zero",
                ));
            }
            Some(_) => {}
        },
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        errs.extend(class_name(class, &path.child("storageClassName")));
    }
    if let Some(mode) = &spec.volume_mode
        && !VOLUME_MODES.contains(&mode.as_str())
    {
        errs.push(FieldError::not_supported(
            &path.child("volumeMode"),
            mode.as_str(),
            VOLUME_MODES,
        ));
    }
    for (name, kind, api_group, ns, p) in [
        spec.data_source.as_ref().map(|d| {
            (
                d.name.as_str(),
                d.kind.as_str(),
                d.api_group.as_deref(),
                None,
                path.child("dataSource"),
            )
        }),
        spec.data_source_ref.as_ref().map(|d| {
            (
                d.name.as_str(),
                d.kind.as_str(),
                d.api_group.as_deref(),
                d.namespace.as_deref(),
                path.child("dataSourceRef"),
            )
        }),
    ]
    .into_iter()
    .flatten()
    {
        if name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        if kind.is_empty() {
            errs.push(FieldError::required(&p.child("kind"), ""));
        }
        let group = api_group.unwrap_or("");
        if group.is_empty() && kind != "PersistentVolumeClaim" {
            errs.push(FieldError::invalid(
                &p,
                kind,
                "must be 'PersistentVolumeClaim' when referencing the default apiGroup",
            ));
        }
        if !group.is_empty() {
            errs.extend(super::pod::dns1123_subdomain(group, &p.child("apiGroup")));
        }
        if let Some(ns) = ns.filter(|n| !n.is_empty()) {
            for msg in names::name_is_dns_label(ns, false) {
                errs.push(FieldError::invalid(&p.child("namespace"), ns, msg));
            }
        }
    }
    if spec
        .data_source_ref
        .as_ref()
        .is_some_and(|r| r.namespace.as_ref().is_some_and(|n| !n.is_empty()))
    {
        if spec.data_source.is_some() {
            errs.push(FieldError::invalid(
                path,
                &Raw(path.child("dataSource").to_string()),
                "may not be specified when dataSourceRef.namespace is specified",
            ));
        }
    } else if let (Some(ds), Some(dsr)) = (&spec.data_source, &spec.data_source_ref)
        && (ds.api_group != dsr.api_group || ds.kind != dsr.kind || ds.name != dsr.name)
    {
        errs.push(FieldError::invalid(
            path,
            &Raw(path.child("dataSource").to_string()),
            "must match dataSourceRef",
        ));
    }
    if let Some(vac) = spec
        .volume_attributes_class_name
        .as_deref()
        .filter(|v| !v.is_empty())
    {
        errs.extend(class_name(vac, &path.child("volumeAttributesClassName")));
    }
    errs
}

pub(crate) fn validate_pvc(pvc: &PersistentVolumeClaim) -> Errors {
    let mut errs = meta::validate_object_meta(
        &pvc.metadata,
        true,
        NameRule::Subdomain,
        &Path::new("metadata"),
    );
    errs.extend(validate_pvc_spec(
        &pvc.spec.clone().unwrap_or_default(),
        &Path::new("spec"),
    ));
    errs
}

/// ValidatePersistentVolumeClaimUpdate: once created only resources.requests and
/// volumeAttributesClassName of a bound claim may change, volumeName may be set once, and a
/// nil storageClassName may be set.
pub(crate) fn validate_pvc_update(
    new: &PersistentVolumeClaim,
    old: &PersistentVolumeClaim,
) -> Errors {
    let mut errs =
        meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    let new_spec = new.spec.clone().unwrap_or_default();
    let old_spec = old.spec.clone().unwrap_or_default();
    errs.extend(validate_pvc_spec(&new_spec, &Path::new("spec")));
    let mut new_clone = new_spec.clone();
    let mut old_clone = old_spec.clone();
    if s(&old_spec.volume_name).is_empty() {
        old_clone.volume_name.clone_from(&new_clone.volume_name);
    }
    let old_beta = old
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"));
    let new_beta = new
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"));
    let upgrade_from_annotation = old_beta.is_some()
        && old_spec.storage_class_name.is_none()
        && new_spec.storage_class_name.as_ref() == old_beta
        && (new_beta.is_none() || new_beta == old_beta);
    if upgrade_from_annotation {
        new_clone.storage_class_name = None;
    } else {
        if new_beta != old_beta {
            errs.push(FieldError::invalid(
                &Path::new("metadata")
                    .child("annotations")
                    .child("volume.beta.kubernetes.io/storage-class"),
                new_beta.map_or("", String::as_str),
                IMMUTABLE,
            ));
        }
        let upgrade_from_nil = new_spec.storage_class_name.is_some()
            && old_spec.storage_class_name.is_none()
            && (old_beta.is_none() || new_spec.storage_class_name.as_ref() == old_beta);
        if upgrade_from_nil {
            new_clone
                .storage_class_name
                .clone_from(&old_clone.storage_class_name);
        }
    }
    let bound = new
        .status
        .as_ref()
        .is_some_and(|st| s(&st.phase) == "Bound");
    if bound {
        if let Some(requests) = new_clone
            .resources
            .as_mut()
            .and_then(|r| r.requests.as_mut())
        {
            match old_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
            {
                Some(q) => {
                    requests.insert("storage".to_string(), q.clone());
                }
                None => {
                    requests.remove("storage");
                }
            }
        }
        if new_clone.volume_attributes_class_name.is_some() {
            new_clone
                .volume_attributes_class_name
                .clone_from(&old_clone.volume_attributes_class_name);
        }
    }
    if new_clone != old_clone {
        let diff = render::spec_diff(&old_clone, &new_clone);
        errs.push(FieldError::forbidden(
            &Path::new("spec"),
            format!("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{diff}"),
        ));
    }
    let storage = |spec: &PersistentVolumeClaimSpec| {
        spec.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| Quantity::parse(&q.0))
    };
    let status_size = old
        .status
        .as_ref()
        .and_then(|st| st.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| Quantity::parse(&q.0));
    if let (Some(n), Some(o)) = (storage(&new_spec), storage(&old_spec))
        && n.cmp(&o).is_lt()
    {
        // RecoverVolumeExpansionFailure (on in 1.33) allows shrinking back towards status.capacity.
        let floor = status_size.unwrap_or(Quantity::parse("0").unwrap_or(o));
        if n.cmp(&floor).is_le() {
            errs.push(FieldError::forbidden(
                &Path::new("spec")
                    .child("resources")
                    .child("requests")
                    .child("storage"),
                "field can not be less than status.capacity",
            ));
        }
    }
    if new_spec.volume_mode != old_spec.volume_mode {
        errs.push(FieldError::invalid(
            &Path::new("volumeMode"),
            &Raw(render::opt_str(new_spec.volume_mode.as_deref())),
            IMMUTABLE,
        ));
    }
    if old_spec.volume_attributes_class_name.is_some() {
        match new_spec.volume_attributes_class_name.as_deref() {
            None => errs.push(FieldError::forbidden(
                &Path::new("spec").child("volumeAttributesClassName"),
                "update from non-nil value to nil is forbidden",
            )),
            Some("") => errs.push(FieldError::forbidden(
                &Path::new("spec").child("volumeAttributesClassName"),
                "update from non-nil value to an empty string is forbidden",
            )),
            Some(_) => {}
        }
    }
    errs
}

/// ValidatePersistentVolumeClaimStatusUpdate.
pub(crate) fn validate_pvc_status_update(
    new: &PersistentVolumeClaim,
    old: &PersistentVolumeClaim,
) -> Errors {
    let mut errs =
        meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    if new
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(
            &Path::new("Spec").child("accessModes"),
            "",
        ));
    }
    let cap_path = Path::new("status").child("capacity");
    for (k, q) in new
        .status
        .iter()
        .flat_map(|st| st.capacity.iter().flatten())
    {
        let (_, e) = quantity_value(k, &q.0, &cap_path.key(k));
        errs.extend(e);
    }
    errs
}

const MAX_PARAMETERS: usize = 512;
const MAX_PARAMETERS_SIZE: usize = 256 * 1024;

/// ValidateStorageClass. `with_meta` is false on update, where the name cannot change.
pub(crate) fn validate_storage_class(sc: &StorageClass, with_meta: bool) -> Errors {
    let mut errs =
        meta::validate_object_meta_if(with_meta, &sc.metadata, false, NameRule::Subdomain);
    let path = Path::new("provisioner");
    if sc.provisioner.is_empty() {
        errs.push(FieldError::required(&path, ""));
    } else {
        errs.extend(meta::validate_qualified_name(
            &sc.provisioner.to_lowercase(),
            &path,
        ));
    }
    let params = sc.parameters.clone().unwrap_or_default();
    let params_path = Path::new("parameters");
    if params.len() > MAX_PARAMETERS {
        errs.push(FieldError::too_long(&params_path, MAX_PARAMETERS));
    } else {
        let mut total = 0usize;
        for (k, v) in &params {
            if k.is_empty() {
                errs.push(FieldError::invalid(
                    &params_path,
                    k.as_str(),
                    "field can not be empty.",
                ));
            }
            total = total.saturating_add(k.len() + v.len());
        }
        if total > MAX_PARAMETERS_SIZE {
            errs.push(FieldError::too_long(&params_path, MAX_PARAMETERS_SIZE));
        }
    }
    let reclaim = s(&sc.reclaim_policy);
    if !reclaim.is_empty() && reclaim != "Delete" && reclaim != "Retain" {
        errs.push(FieldError::not_supported(
            &Path::new("reclaimPolicy"),
            reclaim,
            &["Delete", "Retain"],
        ));
    }
    match sc.volume_binding_mode.as_deref() {
        None => errs.push(FieldError::required(&Path::new("volumeBindingMode"), "")),
        Some("Immediate" | "WaitForFirstConsumer") => {}
        Some(other) => errs.push(FieldError::not_supported(
            &Path::new("volumeBindingMode"),
            other,
            &["Immediate", "WaitForFirstConsumer"],
        )),
    }
    for (i, term) in sc.allowed_topologies.iter().flatten().enumerate() {
        let p = Path::new("allowedTopologies")
            .index(i)
            .child("matchLabelExpressions");
        let mut keys = std::collections::BTreeSet::new();
        for (j, req) in term.match_label_expressions.iter().flatten().enumerate() {
            let rp = p.index(j);
            if req.values.is_empty() {
                errs.push(FieldError::required(&rp.child("values"), ""));
            }
            errs.extend(meta::validate_label_name(&req.key, &rp.child("key")));
            if !keys.insert(req.key.as_str()) {
                errs.push(FieldError::duplicate(&rp.child("key"), req.key.as_str()));
            }
        }
    }
    errs
}

/// ValidateStorageClassUpdate: parameters, provisioner, reclaimPolicy and volumeBindingMode
/// are fixed at creation.
pub(crate) fn validate_storage_class_update(new: &StorageClass, old: &StorageClass) -> Errors {
    let mut errs =
        meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    errs.extend(validate_storage_class(new, false));
    if new.parameters.clone().unwrap_or_default() != old.parameters.clone().unwrap_or_default() {
        errs.push(FieldError::forbidden(
            &Path::new("parameters"),
            "updates to parameters are forbidden.",
        ));
    }
    if new.provisioner != old.provisioner {
        errs.push(FieldError::forbidden(
            &Path::new("provisioner"),
            "updates to provisioner are forbidden.",
        ));
    }
    if s(&new.reclaim_policy) != s(&old.reclaim_policy) {
        errs.push(FieldError::forbidden(
            &Path::new("reclaimPolicy"),
            "updates to reclaimPolicy are forbidden.",
        ));
    }
    if new.volume_binding_mode != old.volume_binding_mode {
        let rendered = match &new.volume_binding_mode {
            Some(m) => Raw(render::quote(m)),
            None => Raw(super::GoValue::go(&Null)),
        };
        errs.push(FieldError::invalid(
            &Path::new("volumeBindingMode"),
            &rendered,
            IMMUTABLE,
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errs: &Errors) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn pv(v: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(v).unwrap()
    }

    fn pvc(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    fn good_pv() -> serde_json::Value {
        json!({"metadata": {"name": "pv1"}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem",
            "hostPath": {"path": "/data/pv1", "type": ""}
        }})
    }

    fn good_pvc() -> serde_json::Value {
        json!({"metadata": {"name": "data", "namespace": "default"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "1Gi"}}
        }})
    }

    #[test]
    fn good_volumes_pass() {
        assert_eq!(
            messages(&validate_persistent_volume(&pv(good_pv()))),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&validate_pvc(&pvc(good_pvc()))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn pv_errors() {
        let mut v = good_pv();
        v["spec"]["accessModes"] = json!(["ReadWriteOncePod", "ReadWriteMany", "Sometimes"]);
        v["spec"]["hostPath"]["path"] = json!("/data/../etc");
        v["spec"]["local"] = json!({"path": "/mnt"});
        v["spec"]["persistentVolumeReclaimPolicy"] = json!("Keep");
        assert_eq!(
            messages(&validate_persistent_volume(&pv(v))),
            vec![
                "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
                "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Recycle\", \"Retain\"",
                "spec.hostPath.path: Invalid value: \"/data/../etc\": must not contain '..'",
                "spec.local: Forbidden: may not specify more than 1 volume type",
            ]
        );
        let local = json!({"metadata": {"name": "pv2"}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/mnt/disk"}}});
        assert_eq!(
            messages(&validate_persistent_volume(&pv(local))),
            vec!["spec.nodeAffinity: Required value: Local volume requires node affinity"]
        );
    }

    #[test]
    fn pv_source_is_immutable() {
        let old = pv(good_pv());
        let mut new = good_pv();
        new["spec"]["hostPath"]["path"] = json!("/data/other");
        let errs = messages(&validate_pv_update(&pv(new), &old));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation\n"),
            "{errs:?}"
        );
    }

    #[test]
    fn pvc_errors() {
        let v = json!({"metadata": {"name": "data", "namespace": "default"}, "spec": {"resources": {"requests": {"storage": "0"}}, "volumeMode": "Raw"}});
        assert_eq!(
            messages(&validate_pvc(&pvc(v))),
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Invalid value: \"0\": must be greater than zero",
                "spec.volumeMode: Unsupported value: \"Raw\": supported values: \"Block\", \"Filesystem\"",
            ]
        );
    }

    #[test]
    fn pvc_update_rules() {
        let old = pvc(good_pvc());
        let mut bigger = good_pvc();
        bigger["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let errs = messages(&validate_pvc_update(&pvc(bigger.clone()), &old));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n"));
        bigger["status"] = json!({"phase": "Bound"});
        assert!(validate_pvc_update(&pvc(bigger.clone()), &old).is_empty());
        let mut bound_old = good_pvc();
        bound_old["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
        bigger["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        assert_eq!(
            messages(&validate_pvc_update(&pvc(bigger), &pvc(bound_old))),
            vec![
                "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
            ]
        );
        let mut named = good_pvc();
        named["spec"]["volumeName"] = json!("pv1");
        assert!(validate_pvc_update(&pvc(named), &old).is_empty());
    }

    #[test]
    fn storage_classes() {
        let sc = |v| -> StorageClass { serde_json::from_value(v).unwrap() };
        let good = json!({"metadata": {"name": "local"}, "provisioner": "berth.dev/local",
            "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
        assert!(validate_storage_class(&sc(good.clone()), true).is_empty());
        let bad = json!({"metadata": {"name": "local"}, "provisioner": "",
            "reclaimPolicy": "Recycle", "volumeBindingMode": "Later"});
        assert_eq!(
            messages(&validate_storage_class(&sc(bad), true)),
            vec![
                "provisioner: Required value",
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
                "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"",
            ]
        );
        let mut changed = good.clone();
        changed["parameters"] = json!({"type": "fast"});
        changed["volumeBindingMode"] = json!("Immediate");
        assert_eq!(
            messages(&validate_storage_class_update(&sc(changed), &sc(good))),
            vec![
                "parameters: Forbidden: updates to parameters are forbidden.",
                "volumeBindingMode: Invalid value: \"Immediate\": field is immutable",
            ]
        );
    }
}
