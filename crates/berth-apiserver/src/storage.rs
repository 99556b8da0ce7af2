//! Storage admission and the built-in StorageClasses.
//!
//! kube-apiserver runs three admission plugins on storage objects that berth needs for
//! PersistentVolumes to behave as users expect, reproduced here with their rules and words:
//! - DefaultStorageClass (mutating, create only): a claim that names no class
//!   (`spec.storageClassName` absent or null, and no beta annotation; `""` is a choice, not an
//!   absence) gets the default class, the StorageClass annotated
//!   `storageclass.kubernetes.io/is-default-class: "true"` (newest first, then by name);
//! - StorageObjectInUseProtection (mutating, create only): new claims get the
//!   `kubernetes.io/pvc-protection` finalizer and new volumes `kubernetes.io/pv-protection`;
//! - PersistentVolumeClaimResize (validating, update only): a claim may grow only when it is
//!   Bound and its class has `allowVolumeExpansion: true`. It runs after validation, as
//!   upstream's validating admission does, so a shrink is refused by validation (422) first.
//!
//! [`install_builtin_classes`] creates the two classes berth ships (`local-path`, the default,
//! and `local-ext4`), once per data dir.

use std::path::{Path, PathBuf};

use berth_api::ResourceInfo;
use berth_api::resources;
use serde_json::{Value, json};

use crate::registry::{ListOptions, Registry, Target, WriteOptions};
use crate::status::{ApiError, ApiResult};

/// The annotation that marks the default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// Its beta spelling, which Kubernetes still honours.
pub const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The beta claim annotation that names a class (it wins over `spec.storageClassName`).
pub const BETA_CLAIM_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";
/// Keeps a claim while a pod uses it (removed by the protection controller).
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// Keeps a volume while it is bound (removed by the protection controller).
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

/// The file in the data dir that records that the built-in classes were installed, so a
/// class an administrator deleted stays deleted across restarts (k3s's local-storage
/// manifest is likewise applied once, not enforced).
pub const BUILTIN_CLASSES_MARKER: &str = "storage-classes-installed";

/// Upstream's refusal when a claim grows without a class that allows expansion.
pub const RESIZE_NOT_SUPPORTED: &str = "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";
/// Upstream's refusal when a claim that is not Bound grows.
pub const RESIZE_NOT_BOUND: &str = "Only bound persistent volume claims can be expanded";

fn is_claim(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "PersistentVolumeClaim"
}

fn is_volume(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "PersistentVolume"
}

fn storage_classes() -> ApiResult<&'static ResourceInfo> {
    resources::lookup("storage.k8s.io", "v1", "storageclasses")
        .ok_or_else(|| ApiError::internal("no storageclasses resource"))
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// PersistentVolumeClaimHasClass: the beta annotation or a non-null `spec.storageClassName`
/// (even `""`, which asks for no class).
fn claim_has_class(claim: &Value) -> bool {
    annotation(claim, BETA_CLAIM_CLASS_ANNOTATION).is_some()
        || claim
            .pointer("/spec/storageClassName")
            .is_some_and(|c| !c.is_null())
}

/// GetPersistentVolumeClaimClass: the beta annotation first, then the spec, else "".
fn claim_class(claim: &Value) -> &str {
    annotation(claim, BETA_CLAIM_CLASS_ANNOTATION)
        .or_else(|| {
            claim
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
        })
        .unwrap_or("")
}

/// IsDefaultAnnotation: either spelling set to exactly "true".
fn is_default_class(class: &Value) -> bool {
    annotation(class, DEFAULT_CLASS_ANNOTATION) == Some("true")
        || annotation(class, BETA_DEFAULT_CLASS_ANNOTATION) == Some("true")
}

/// Seconds since the epoch of an object's creationTimestamp; an unreadable one sorts as the
/// oldest, so it never wins over a class whose age is known.
fn created(object: &Value) -> i64 {
    object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map_or(i64::MIN, |t| t.as_second())
}

/// GetDefaultClass: among the classes marked default, the newest by creationTimestamp, ties
/// broken by name ascending (so adding a new default takes over without editing the old one).
pub fn pick_default_class(classes: &[Value]) -> Option<&str> {
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .filter_map(|c| {
            let name = c.pointer("/metadata/name").and_then(Value::as_str)?;
            Some((created(c), name))
        })
        .min_by(|(ta, na), (tb, nb)| tb.cmp(ta).then_with(|| na.cmp(nb)))
        .map(|(_, name)| name)
}

fn add_finalizer(object: &mut Value, finalizer: &str) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(items) = list.as_array_mut()
        && !items.iter().any(|f| f.as_str() == Some(finalizer))
    {
        items.push(json!(finalizer));
    }
}

/// The mutating storage admission of a create: DefaultStorageClass, then
/// StorageObjectInUseProtection (upstream's plugin order). Other kinds pass untouched.
pub(crate) async fn admit_create(
    registry: &Registry,
    info: &ResourceInfo,
    object: &mut Value,
) -> ApiResult<()> {
    if is_claim(info) {
        if !claim_has_class(object) {
            let classes = registry
                .list(storage_classes()?, None, &ListOptions::default())
                .await?;
            if let Some(name) = pick_default_class(&classes.items) {
                if !object.get("spec").is_some_and(Value::is_object) {
                    object["spec"] = json!({});
                }
                object["spec"]["storageClassName"] = json!(name);
            }
        }
        add_finalizer(object, PVC_PROTECTION_FINALIZER);
    } else if is_volume(info) {
        add_finalizer(object, PV_PROTECTION_FINALIZER);
    }
    Ok(())
}

fn requested_storage(claim: &Value) -> Option<&str> {
    claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
}

/// PersistentVolumeClaimResize for one update of a claim. The class is read before the
/// update's read-modify-write loop (which cannot wait on the store), as upstream reads it
/// from an informer: a class name never changes once set, so the one read is the class of
/// every retry, and a claim whose class changes under it is simply not resizable.
pub(crate) struct ResizeAdmission {
    /// The stored claim's class and, if that class exists, its allowVolumeExpansion.
    class: Option<(String, Option<bool>)>,
}

impl ResizeAdmission {
    /// The admission for an update of `target`, or `None` when it does not apply (another
    /// kind, a subresource, or a claim that does not exist, which the update reports itself).
    pub(crate) async fn load(registry: &Registry, target: Target<'_>) -> ApiResult<Option<Self>> {
        if !is_claim(target.info) || target.subresource.is_some() {
            return Ok(None);
        }
        let claim = match registry
            .get(target.info, target.namespace, target.name)
            .await
        {
            Ok(claim) => claim,
            Err(e) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        };
        let name = claim_class(&claim);
        if name.is_empty() {
            return Ok(Some(ResizeAdmission { class: None }));
        }
        let allow = match registry.get(storage_classes()?, None, name).await {
            Ok(class) => Some(
                class
                    .get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        Ok(Some(ResizeAdmission {
            class: Some((name.to_string(), allow)),
        }))
    }

    /// Refuses growing `old` into `new` unless upstream would allow it.
    pub(crate) fn validate(
        &self,
        info: &ResourceInfo,
        name: &str,
        new: &Value,
        old: &Value,
    ) -> ApiResult<()> {
        match resize_refusal(new, old, self.class.as_ref().map(|(n, a)| (n.as_str(), *a))) {
            Some(why) => Err(ApiError::forbidden(info, name, why)),
            None => Ok(()),
        }
    }
}

/// Upstream's Validate of PersistentVolumeClaimResize as a pure function: `class` is the
/// class the claim had when the update began and its allowVolumeExpansion (`None` when the
/// class does not exist).
pub fn resize_refusal(
    new: &Value,
    old: &Value,
    class: Option<(&str, Option<bool>)>,
) -> Option<&'static str> {
    // A missing or unparsable size compares as zero upstream; validation has already refused
    // an unparsable one, so only "grows from nothing" needs care: that counts as growing.
    let grows =
        match (requested_storage(new), requested_storage(old)) {
            (Some(n), Some(o)) => berth_api::validation::compare_quantities(n, o)
                .is_some_and(std::cmp::Ordering::is_gt),
            (Some(n), None) => berth_api::validation::compare_quantities(n, "0")
                .is_some_and(std::cmp::Ordering::is_gt),
            (None, _) => false,
        };
    if !grows {
        return None;
    }
    if old.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
        return Some(RESIZE_NOT_BOUND);
    }
    let (new_class, old_class) = (claim_class(new), claim_class(old));
    let allowed = match class {
        Some((name, Some(allow))) => {
            !new_class.is_empty() && new_class == old_class && old_class == name && allow
        }
        _ => false,
    };
    (!allowed).then_some(RESIZE_NOT_SUPPORTED)
}

/// The StorageClasses berth ships, as the storage contract fixes them: `local-path` (the
/// default; a directory per volume, size not enforced) and `local-ext4` (an ext4 image per
/// volume, so the size is enforced and can grow).
pub fn builtin_classes() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local-path",
                "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
            },
            "provisioner": "berth.dev/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": false,
        }),
        json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "local-ext4"},
            "provisioner": "berth.dev/local-ext4",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": true,
        }),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot create the built-in StorageClass {name}: {source}")]
    Create { name: String, source: ApiError },
    #[error("cannot write {path}: {source}")]
    Marker {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`install_builtin_classes`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The marker was there: a previous start installed them, nothing was touched.
    AlreadyDone,
    /// These classes were created (a class that already existed is left as it is).
    Created(Vec<String>),
}

/// Creates the built-in classes on the first start of `data_dir`: each one only if no class
/// of that name exists, then writes the marker, so a later start (after an administrator
/// deleted or replaced one) changes nothing. Without the marker (first start, or a start
/// that failed half-way, or starts with `--disable-storage-classes` so far) it runs again.
pub async fn install_builtin_classes(
    registry: &Registry,
    data_dir: &Path,
) -> Result<Installed, InstallError> {
    let marker = data_dir.join(BUILTIN_CLASSES_MARKER);
    if marker.exists() {
        return Ok(Installed::AlreadyDone);
    }
    let info = storage_classes().map_err(|source| InstallError::Create {
        name: "storageclasses".into(),
        source,
    })?;
    let mut created = Vec::new();
    for class in builtin_classes() {
        let name = class
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match registry
            .create(info, None, class, &WriteOptions::default())
            .await
        {
            Ok(_) => created.push(name),
            // Someone made a class of this name first: theirs stays.
            Err(e) if e.code == 409 => {}
            Err(source) => return Err(InstallError::Create { name, source }),
        }
    }
    crate::files::write_private(&marker, b"the built-in StorageClasses were installed\n").map_err(
        |source| InstallError::Marker {
            path: marker.clone(),
            source,
        },
    )?;
    Ok(Installed::Created(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str, default: Option<&str>) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created},
            "provisioner": "x"});
        if let Some(d) = default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: d});
        }
        c
    }

    #[test]
    fn default_class_is_the_newest_then_by_name() {
        assert_eq!(pick_default_class(&[]), None);
        let none = [
            class("a", "2024-01-01T00:00:00Z", None),
            class("b", "2024-01-01T00:00:00Z", Some("false")),
            class("c", "2024-01-01T00:00:00Z", Some("True")),
        ];
        assert_eq!(pick_default_class(&none), None);
        let several = [
            class("old", "2024-01-01T00:00:00Z", Some("true")),
            class("zeta", "2024-06-01T00:00:00Z", Some("true")),
            class("alpha", "2024-06-01T00:00:00Z", Some("true")),
            class("plain", "2025-01-01T00:00:00Z", None),
        ];
        assert_eq!(pick_default_class(&several), Some("alpha"));
        let mut beta = class("beta", "2023-01-01T00:00:00Z", None);
        beta["metadata"]["annotations"] = json!({BETA_DEFAULT_CLASS_ANNOTATION: "true"});
        assert_eq!(pick_default_class(&[beta]), Some("beta"));
    }

    #[test]
    fn a_claim_has_a_class_when_it_says_so_even_empty() {
        assert!(!claim_has_class(&json!({"spec": {}})));
        assert!(!claim_has_class(
            &json!({"spec": {"storageClassName": null}})
        ));
        assert!(claim_has_class(&json!({"spec": {"storageClassName": ""}})));
        assert!(claim_has_class(
            &json!({"metadata": {"annotations": {BETA_CLAIM_CLASS_ANNOTATION: "x"}}, "spec": {}})
        ));
        let both = json!({"metadata": {"annotations": {BETA_CLAIM_CLASS_ANNOTATION: "beta"}},
            "spec": {"storageClassName": "spec"}});
        assert_eq!(claim_class(&both), "beta");
    }

    #[test]
    fn finalizers_are_added_once() {
        let mut v = json!({"metadata": {"name": "a", "finalizers": ["x"]}});
        add_finalizer(&mut v, PVC_PROTECTION_FINALIZER);
        add_finalizer(&mut v, PVC_PROTECTION_FINALIZER);
        assert_eq!(
            v["metadata"]["finalizers"],
            json!(["x", PVC_PROTECTION_FINALIZER])
        );
        let mut bare = json!({"metadata": {"name": "a"}});
        add_finalizer(&mut bare, PV_PROTECTION_FINALIZER);
        assert_eq!(
            bare["metadata"]["finalizers"],
            json!([PV_PROTECTION_FINALIZER])
        );
    }

    fn claim(size: &str, class: Option<&str>, phase: &str) -> Value {
        let mut c = json!({"metadata": {"name": "data"},
            "spec": {"resources": {"requests": {"storage": size}}},
            "status": {"phase": phase}});
        if let Some(class) = class {
            c["spec"]["storageClassName"] = json!(class);
        }
        c
    }

    #[test]
    fn resize_rules() {
        let old = claim("1Gi", Some("fast"), "Bound");
        let grow = claim("2Gi", Some("fast"), "Bound");
        // Not growing (same size in other units, or smaller) is never this plugin's business.
        assert_eq!(
            resize_refusal(
                &claim("1073741824", Some("fast"), "Bound"),
                &old,
                Some(("fast", Some(false)))
            ),
            None
        );
        assert_eq!(
            resize_refusal(
                &claim("512Mi", Some("fast"), "Bound"),
                &old,
                Some(("fast", Some(false)))
            ),
            None
        );
        assert_eq!(
            resize_refusal(&grow, &old, Some(("fast", Some(true)))),
            None
        );
        assert_eq!(
            resize_refusal(&grow, &old, Some(("fast", Some(false)))),
            Some(RESIZE_NOT_SUPPORTED)
        );
        assert_eq!(
            resize_refusal(&grow, &old, Some(("fast", None))),
            Some(RESIZE_NOT_SUPPORTED)
        );
        assert_eq!(
            resize_refusal(&grow, &old, None),
            Some(RESIZE_NOT_SUPPORTED)
        );
        // A claim without a class (static binding) cannot grow.
        assert_eq!(
            resize_refusal(
                &claim("2Gi", Some(""), "Bound"),
                &claim("1Gi", Some(""), "Bound"),
                None
            ),
            Some(RESIZE_NOT_SUPPORTED)
        );
        assert_eq!(
            resize_refusal(
                &claim("2Gi", Some("fast"), "Pending"),
                &claim("1Gi", Some("fast"), "Pending"),
                Some(("fast", Some(true)))
            ),
            Some(RESIZE_NOT_BOUND)
        );
    }

    /// A registry on an empty memory store with the `default` namespace.
    async fn registry() -> Registry {
        let store: std::sync::Arc<dyn berth_store::Store> = berth_store::memory::MemoryStore::new();
        let registry = Registry::new(
            store,
            crate::services::ServiceAllocations::new(
                crate::ServiceCidr::default(),
                crate::NodePortRange::default(),
            ),
        );
        let namespaces = resources::lookup("", "v1", "namespaces").unwrap();
        registry
            .create(
                namespaces,
                None,
                json!({"metadata": {"name": "default"}}),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        registry
    }

    fn claims() -> &'static ResourceInfo {
        resources::lookup("", "v1", "persistentvolumeclaims").unwrap()
    }

    async fn create_claim(registry: &Registry, name: &str, spec: Value) -> Value {
        let mut claim = json!({"metadata": {"name": name}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        if let (Some(base), Some(extra)) = (claim["spec"].as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        registry
            .create(claims(), Some("default"), claim, &WriteOptions::default())
            .await
            .unwrap()
            .object
    }

    #[tokio::test]
    async fn claims_get_the_default_class_and_protection() {
        let registry = registry().await;
        let dir = tempfile::tempdir().unwrap();
        let before = create_claim(&registry, "before", json!({})).await;
        assert_eq!(before["spec"].get("storageClassName"), None);
        assert_eq!(
            before["metadata"]["finalizers"],
            json!([PVC_PROTECTION_FINALIZER])
        );
        assert_eq!(
            install_builtin_classes(&registry, dir.path())
                .await
                .unwrap(),
            Installed::Created(vec!["local-path".into(), "local-ext4".into()])
        );
        let after = create_claim(&registry, "after", json!({})).await;
        assert_eq!(after["spec"]["storageClassName"], "local-path");
        let none = create_claim(&registry, "none", json!({"storageClassName": ""})).await;
        assert_eq!(none["spec"]["storageClassName"], "");
        let chosen = create_claim(
            &registry,
            "chosen",
            json!({"storageClassName": "local-ext4"}),
        )
        .await;
        assert_eq!(chosen["spec"]["storageClassName"], "local-ext4");

        let volumes = resources::lookup("", "v1", "persistentvolumes").unwrap();
        let pv = registry
            .create(
                volumes,
                None,
                json!({"metadata": {"name": "pv1"}, "spec": {
                    "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": "/tmp/pv1"}}}),
                &WriteOptions::default(),
            )
            .await
            .unwrap()
            .object;
        assert_eq!(
            pv["metadata"]["finalizers"],
            json!([PV_PROTECTION_FINALIZER])
        );
    }

    #[tokio::test]
    async fn builtin_classes_are_installed_once() {
        let registry = registry().await;
        let dir = tempfile::tempdir().unwrap();
        let classes = storage_classes().unwrap();
        // An administrator's own class of a built-in name is kept.
        registry
            .create(
                classes,
                None,
                json!({"metadata": {"name": "local-ext4"}, "provisioner": "example.com/mine"}),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            install_builtin_classes(&registry, dir.path())
                .await
                .unwrap(),
            Installed::Created(vec!["local-path".into()])
        );
        let mine = registry.get(classes, None, "local-ext4").await.unwrap();
        assert_eq!(mine["provisioner"], "example.com/mine");
        assert!(dir.path().join(BUILTIN_CLASSES_MARKER).exists());
        registry
            .delete(
                classes,
                None,
                "local-path",
                &crate::registry::DeleteOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            install_builtin_classes(&registry, dir.path())
                .await
                .unwrap(),
            Installed::AlreadyDone
        );
        assert_eq!(
            registry
                .get(classes, None, "local-path")
                .await
                .unwrap_err()
                .code,
            404
        );
    }

    #[tokio::test]
    async fn growing_needs_a_bound_claim_of_an_expandable_class() {
        let registry = registry().await;
        let dir = tempfile::tempdir().unwrap();
        install_builtin_classes(&registry, dir.path())
            .await
            .unwrap();
        for (name, class) in [("path", "local-path"), ("ext4", "local-ext4")] {
            create_claim(&registry, name, json!({"storageClassName": class})).await;
            let target = Target {
                info: claims(),
                namespace: Some("default"),
                name,
                subresource: Some("status"),
            };
            registry
                .patch(
                    target,
                    berth_api::patch::PatchType::Merge,
                    &json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}),
                    &WriteOptions::default(),
                )
                .await
                .unwrap();
        }
        let grow = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
        let resize = |name: &'static str, patch: Value| {
            let registry = &registry;
            async move {
                registry
                    .patch(
                        Target::object(claims(), Some("default"), name),
                        berth_api::patch::PatchType::Merge,
                        &patch,
                        &WriteOptions::default(),
                    )
                    .await
            }
        };
        let refused = resize("path", grow.clone()).await.unwrap_err();
        assert_eq!(refused.code, 403);
        assert_eq!(
            refused.message,
            format!("persistentvolumeclaims \"path\" is forbidden: {RESIZE_NOT_SUPPORTED}")
        );
        let (grown, _) = resize("ext4", grow).await.unwrap();
        assert_eq!(
            grown.object["spec"]["resources"]["requests"]["storage"],
            "2Gi"
        );
        let shrink = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let refused = resize("ext4", shrink).await.unwrap_err();
        assert_eq!(refused.code, 422);
        assert!(
            refused
                .message
                .contains("spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn builtin_classes_follow_the_contract() {
        let classes = builtin_classes();
        assert_eq!(pick_default_class(&classes), Some("local-path"));
        let by_name = |n: &str| {
            classes
                .iter()
                .find(|c| c["metadata"]["name"] == n)
                .cloned()
                .unwrap_or(Value::Null)
        };
        let path = by_name("local-path");
        assert_eq!(path["provisioner"], "berth.dev/local-path");
        assert_eq!(path["allowVolumeExpansion"], false);
        let ext4 = by_name("local-ext4");
        assert_eq!(ext4["provisioner"], "berth.dev/local-ext4");
        assert_eq!(ext4["allowVolumeExpansion"], true);
        for c in [&path, &ext4] {
            assert_eq!(c["reclaimPolicy"], "Delete");
            assert_eq!(c["volumeBindingMode"], "WaitForFirstConsumer");
        }
    }
}
