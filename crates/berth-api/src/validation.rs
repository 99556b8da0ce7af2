//! Kubernetes' validation rules for the objects berth serves, one [`FieldError`] per bad field.
//!
//! This module owns the error type and its wire format (`FieldError::message` is byte-for-byte
//! what Kubernetes 1.33's `field.Error.Error()` prints, which kubectl shows verbatim), and the
//! three entry points the API server calls. The rules themselves live in submodules per API area:
//! [`names`] (the string formats: DNS labels, qualified names, ...), `meta` (ObjectMeta and label
//! selectors), `pod` (PodSpec, shared by every pod template), `service`, `core_kinds` (the small core
//! kinds), `storage`, `apps` and `other` (discovery, coordination, events.k8s.io).
//!
//! Every rule works on the k8s-openapi type the object already went through in
//! [`crate::codec`], so a field that is absent and one that is `null` look the same, as they do
//! to Kubernetes. Objects are expected to be defaulted ([`crate::defaults::apply_defaults`])
//! before they are validated, as Kubernetes does: fields that defaulting always fills
//! (`restartPolicy`, `dnsPolicy`, `imagePullPolicy`, ...) are `Required` here.

mod apps;
mod core_kinds;
mod meta;
pub mod names;
mod other;
mod path;
mod pod;
pub(crate) mod quantity;
mod render;
mod service;
mod storage;

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::ResourceInfo;

pub(crate) use path::Path;
pub(crate) use render::GoValue;

/// What is wrong with a field; each maps to a Kubernetes `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    Forbidden,
    NotSupported,
    /// A reference to something that does not exist, e.g. a volumeMount naming no volume.
    NotFound,
    TooLong,
    TooMany,
    Internal,
}

impl FieldErrorKind {
    /// The `reason` of a `StatusCause`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Internal => "InternalError",
        }
    }

    /// The words Kubernetes prints for the type, e.g. "Invalid value".
    fn label(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Internal => "Internal error",
        }
    }

    /// Whether Kubernetes prints the bad value for this type.
    fn shows_value(self) -> bool {
        !matches!(
            self,
            FieldErrorKind::Required
                | FieldErrorKind::Forbidden
                | FieldErrorKind::TooLong
                | FieldErrorKind::Internal
        )
    }
}

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// The field's path as Kubernetes writes it: `spec.template.spec.containers[0].image`,
    /// `metadata.labels`, `data[key]`.
    pub field: String,
    /// The bad value already rendered the way Go's `%v`/`%q`/`%#v` would (strings quoted).
    /// `None` for the types that never print a value.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    /// The `reason` of the `StatusCause` for this error, e.g. "FieldValueInvalid".
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The message exactly as Kubernetes' `field.Error.Error()` prints it, e.g.
    /// `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
    pub fn message(&self) -> String {
        let mut s = format!("{}: {}", self.field, self.kind.label());
        if self.kind.shows_value()
            && let Some(value) = &self.value
        {
            s.push_str(": ");
            s.push_str(value);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    fn new(kind: FieldErrorKind, path: &Path, value: Option<String>, detail: String) -> Self {
        FieldError {
            kind,
            field: path.to_string(),
            value,
            detail,
        }
    }

    pub(crate) fn required(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, path, None, detail.into())
    }

    pub(crate) fn invalid<V: GoValue + ?Sized>(
        path: &Path,
        value: &V,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            FieldErrorKind::Invalid,
            path,
            Some(value.go()),
            detail.into(),
        )
    }

    pub(crate) fn forbidden(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, path, None, detail.into())
    }

    pub(crate) fn duplicate<V: GoValue + ?Sized>(path: &Path, value: &V) -> Self {
        Self::new(
            FieldErrorKind::Duplicate,
            path,
            Some(value.go()),
            String::new(),
        )
    }

    pub(crate) fn not_found<V: GoValue + ?Sized>(path: &Path, value: &V) -> Self {
        Self::new(
            FieldErrorKind::NotFound,
            path,
            Some(value.go()),
            String::new(),
        )
    }

    /// `supported` is listed in the order given; Kubernetes sorts the ones that come from a set.
    pub(crate) fn not_supported<V: GoValue + ?Sized>(
        path: &Path,
        value: &V,
        supported: &[&str],
    ) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| render::quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(FieldErrorKind::NotSupported, path, Some(value.go()), detail)
    }

    /// A NotSupported error if an optional enum field is set to something outside `supported`.
    pub(crate) fn unless_supported(
        path: &Path,
        value: Option<&str>,
        supported: &[&str],
    ) -> Option<Self> {
        value
            .filter(|v| !supported.contains(v))
            .map(|v| Self::not_supported(path, v, supported))
    }

    /// Kubernetes 1.33's `field.TooLong`: the value is never printed.
    pub(crate) fn too_long(path: &Path, max_bytes: usize) -> Self {
        Self::new(
            FieldErrorKind::TooLong,
            path,
            None,
            format!("may not be more than {max_bytes} bytes"),
        )
    }

    pub(crate) fn too_many(path: &Path, actual: usize, max: usize) -> Self {
        Self::new(
            FieldErrorKind::TooMany,
            path,
            Some(actual.to_string()),
            format!("must have at most {max} items"),
        )
    }

    pub(crate) fn internal(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Internal, path, None, detail.into())
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for FieldError {}

pub(crate) type Errors = Vec<FieldError>;

/// The kinds with rules of their own; everything else gets ObjectMeta checks only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    CoreEvent,
    ServiceAccount,
    PersistentVolume,
    PersistentVolumeClaim,
    StorageClass,
    Deployment,
    ReplicaSet,
    StatefulSet,
    ControllerRevision,
    EndpointSlice,
    Lease,
    EventsEvent,
    Other,
}

fn kind_of(info: &ResourceInfo) -> Kind {
    match (info.group, info.kind) {
        ("", "Namespace") => Kind::Namespace,
        ("", "Node") => Kind::Node,
        ("", "Pod") => Kind::Pod,
        ("", "Service") => Kind::Service,
        ("", "Endpoints") => Kind::Endpoints,
        ("", "ConfigMap") => Kind::ConfigMap,
        ("", "Secret") => Kind::Secret,
        ("", "Event") => Kind::CoreEvent,
        ("", "ServiceAccount") => Kind::ServiceAccount,
        ("", "PersistentVolume") => Kind::PersistentVolume,
        ("", "PersistentVolumeClaim") => Kind::PersistentVolumeClaim,
        ("storage.k8s.io", "StorageClass") => Kind::StorageClass,
        ("apps", "Deployment") => Kind::Deployment,
        ("apps", "ReplicaSet") => Kind::ReplicaSet,
        ("apps", "StatefulSet") => Kind::StatefulSet,
        ("apps", "ControllerRevision") => Kind::ControllerRevision,
        ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
        ("coordination.k8s.io", "Lease") => Kind::Lease,
        ("events.k8s.io", "Event") => Kind::EventsEvent,
        _ => Kind::Other,
    }
}

/// Decodes `value` into its k8s-openapi type. The codec already did this once, so a failure
/// here means the server handed us something it did not decode; it is reported, not panicked on.
fn typed<T: DeserializeOwned>(info: &ResourceInfo, value: &Value) -> Result<T, Errors> {
    serde_json::from_value(value.clone()).map_err(|e| {
        vec![FieldError::internal(
            &Path::new("<object>"),
            format!("{} could not be decoded: {e}", info.kind),
        )]
    })
}

/// Runs `f` on the typed object, turning a decode failure into an internal error.
fn with_typed<T: DeserializeOwned>(
    info: &ResourceInfo,
    value: &Value,
    f: impl FnOnce(&T) -> Errors,
) -> Errors {
    match typed::<T>(info, value) {
        Ok(t) => f(&t),
        Err(errs) => errs,
    }
}

fn with_typed2<T: DeserializeOwned>(
    info: &ResourceInfo,
    new: &Value,
    old: &Value,
    f: impl FnOnce(&T, &T) -> Errors,
) -> Errors {
    match (typed::<T>(info, new), typed::<T>(info, old)) {
        (Ok(n), Ok(o)) => f(&n, &o),
        (Err(errs), _) | (_, Err(errs)) => errs,
    }
}

/// Compares two resource quantities exactly (`1Gi` equals `1073741824`); `None` when either
/// is not a quantity. The API server's PersistentVolumeClaimResize admission needs it, and
/// the parser stays private to validation so there is one notion of a quantity.
pub fn compare_quantities(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    Some(quantity::Quantity::parse(a)?.cmp(&quantity::Quantity::parse(b)?))
}

/// Validates an object about to be created.
pub fn validate_create(info: &ResourceInfo, object: &Value) -> Vec<FieldError> {
    use k8s_openapi::api::{apps::v1 as apps_v1, core::v1 as core_v1};
    use k8s_openapi::api::{coordination::v1 as coord_v1, discovery::v1 as disc_v1};
    use k8s_openapi::api::{events::v1 as events_v1, storage::v1 as storage_v1};
    match kind_of(info) {
        Kind::Namespace => with_typed(info, object, core_kinds::validate_namespace),
        Kind::Node => with_typed(info, object, core_kinds::validate_node),
        Kind::Pod => with_typed(info, object, pod::validate_pod_create),
        Kind::Service => with_typed(info, object, service::validate_service),
        Kind::Endpoints => with_typed(info, object, core_kinds::validate_endpoints),
        Kind::ConfigMap => with_typed(info, object, core_kinds::validate_config_map),
        Kind::Secret => with_typed(info, object, core_kinds::validate_secret),
        Kind::CoreEvent => with_typed(info, object, |e: &core_v1::Event| {
            core_kinds::validate_event(e, true)
        }),
        Kind::ServiceAccount => with_typed(info, object, core_kinds::validate_service_account),
        Kind::PersistentVolume => with_typed(info, object, storage::validate_persistent_volume),
        Kind::PersistentVolumeClaim => with_typed(info, object, storage::validate_pvc),
        Kind::StorageClass => with_typed(info, object, |sc: &storage_v1::StorageClass| {
            storage::validate_storage_class(sc, true)
        }),
        Kind::Deployment => with_typed(info, object, |d: &apps_v1::Deployment| {
            apps::validate_deployment(d, true)
        }),
        Kind::ReplicaSet => with_typed(info, object, |r: &apps_v1::ReplicaSet| {
            apps::validate_replica_set(r, true)
        }),
        Kind::StatefulSet => with_typed(info, object, |s: &apps_v1::StatefulSet| {
            apps::validate_stateful_set(s, true)
        }),
        Kind::ControllerRevision => with_typed(info, object, |c: &apps_v1::ControllerRevision| {
            apps::validate_controller_revision(c, true)
        }),
        Kind::EndpointSlice => with_typed(info, object, |e: &disc_v1::EndpointSlice| {
            other::validate_endpoint_slice(e, true)
        }),
        Kind::Lease => with_typed(info, object, |l: &coord_v1::Lease| {
            other::validate_lease(l, true)
        }),
        Kind::EventsEvent => with_typed(info, object, |e: &events_v1::Event| {
            other::validate_events_event(e, true)
        }),
        Kind::Other => generic_meta_create(info, object),
    }
}

/// Validates a change of the main resource, including what may not change.
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    use k8s_openapi::api::{apps::v1 as apps_v1, core::v1 as core_v1};
    use k8s_openapi::api::{coordination::v1 as coord_v1, discovery::v1 as disc_v1};
    use k8s_openapi::api::{events::v1 as events_v1, storage::v1 as storage_v1};
    match kind_of(info) {
        Kind::Namespace => with_typed2(info, new, old, core_kinds::validate_namespace_update),
        Kind::Node => with_typed2(info, new, old, core_kinds::validate_node_update),
        Kind::Pod => with_typed2(info, new, old, pod::validate_pod_update),
        Kind::Service => with_typed2(info, new, old, service::validate_service_update),
        Kind::Endpoints => with_typed2(info, new, old, core_kinds::validate_endpoints_update),
        Kind::ConfigMap => with_typed2(info, new, old, core_kinds::validate_config_map_update),
        Kind::Secret => with_typed2(info, new, old, core_kinds::validate_secret_update),
        Kind::CoreEvent => with_typed2(info, new, old, |n: &core_v1::Event, o| {
            core_kinds::validate_event_update(n, o)
        }),
        Kind::ServiceAccount => {
            with_typed2(info, new, old, core_kinds::validate_service_account_update)
        }
        Kind::PersistentVolume => with_typed2(info, new, old, storage::validate_pv_update),
        Kind::PersistentVolumeClaim => with_typed2(info, new, old, storage::validate_pvc_update),
        Kind::StorageClass => with_typed2(info, new, old, |n: &storage_v1::StorageClass, o| {
            storage::validate_storage_class_update(n, o)
        }),
        Kind::Deployment => with_typed2(info, new, old, |n: &apps_v1::Deployment, o| {
            apps::validate_deployment_update(n, o)
        }),
        Kind::ReplicaSet => with_typed2(info, new, old, |n: &apps_v1::ReplicaSet, o| {
            apps::validate_replica_set_update(n, o)
        }),
        Kind::StatefulSet => with_typed2(info, new, old, |n: &apps_v1::StatefulSet, o| {
            apps::validate_stateful_set_update(n, o)
        }),
        Kind::ControllerRevision => {
            with_typed2(info, new, old, |n: &apps_v1::ControllerRevision, o| {
                apps::validate_controller_revision_update(n, o)
            })
        }
        Kind::EndpointSlice => with_typed2(info, new, old, |n: &disc_v1::EndpointSlice, o| {
            other::validate_endpoint_slice_update(n, o)
        }),
        Kind::Lease => with_typed2(info, new, old, |n: &coord_v1::Lease, o| {
            other::validate_lease_update(n, o)
        }),
        Kind::EventsEvent => with_typed2(info, new, old, |n: &events_v1::Event, o| {
            other::validate_events_event_update(n, o)
        }),
        Kind::Other => generic_meta_update(info, new, old),
    }
}

/// Validates a write to the `status` subresource: metadata rules and status sanity only,
/// since the server keeps the old spec for such writes.
pub fn validate_status_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    use k8s_openapi::api::{apps::v1 as apps_v1, core::v1 as core_v1};
    match kind_of(info) {
        Kind::Pod => with_typed2(info, new, old, pod::validate_pod_status_update),
        Kind::Namespace => {
            with_typed2(info, new, old, core_kinds::validate_namespace_status_update)
        }
        Kind::Node => with_typed2(info, new, old, core_kinds::validate_node_update),
        Kind::Service => with_typed2(info, new, old, service::validate_service_status_update),
        Kind::PersistentVolumeClaim => {
            with_typed2(info, new, old, storage::validate_pvc_status_update)
        }
        Kind::Deployment => with_typed2(info, new, old, |n: &apps_v1::Deployment, o| {
            apps::validate_deployment_status_update(n, o)
        }),
        Kind::ReplicaSet => with_typed2(info, new, old, |n: &apps_v1::ReplicaSet, o| {
            apps::validate_replica_set_status_update(n, o)
        }),
        Kind::StatefulSet => with_typed2(info, new, old, |n: &apps_v1::StatefulSet, o| {
            apps::validate_stateful_set_status_update(n, o)
        }),
        Kind::PersistentVolume => {
            with_typed2(info, new, old, |n: &core_v1::PersistentVolume, o| {
                meta::validate_object_meta_update(&n.metadata, &o.metadata, &Path::new("metadata"))
            })
        }
        _ => generic_meta_update(info, new, old),
    }
}

fn raw_meta(
    info: &ResourceInfo,
    value: &Value,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, Errors> {
    match value.get("metadata") {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(m) => typed(info, m),
    }
}

fn generic_meta_create(info: &ResourceInfo, object: &Value) -> Errors {
    match raw_meta(info, object) {
        Ok(m) => meta::validate_object_meta(
            &m,
            info.namespaced(),
            meta::NameRule::Subdomain,
            &Path::new("metadata"),
        ),
        Err(errs) => errs,
    }
}

fn generic_meta_update(info: &ResourceInfo, new: &Value, old: &Value) -> Errors {
    match (raw_meta(info, new), raw_meta(info, old)) {
        (Ok(n), Ok(o)) => meta::validate_object_meta_update(&n, &o, &Path::new("metadata")),
        (Err(errs), _) | (_, Err(errs)) => errs,
    }
}

#[cfg(test)]
mod tests;
