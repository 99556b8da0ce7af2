//! Kubernetes' defaulting: the values the API server fills in that clients rely on seeing.
//!
//! This follows `pkg/apis/*/v1/defaults.go` (applied to every object of the type, including
//! objects embedded in others: a Deployment's pod template gets PodSpec defaults, a
//! StatefulSet's volumeClaimTemplates get PVC defaults), plus the few values Kubernetes sets in
//! its create strategies and default admission plugins that kubectl users see on every pod
//! (`serviceAccountName: default`, `priority: 0`, the not-ready/unreachable tolerations).
//! Submodules: `pod` (PodSpec and templates) and `kinds` (everything else).
//!
//! Defaulting only fills what is absent, so running it again on an update leaves a stored
//! object as it is. It never fails: an object that does not decode is left alone for
//! validation to report.

mod kinds;
mod pod;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::ResourceInfo;

/// Fills in the defaults for `object`, an object of `info`'s kind.
pub fn apply_defaults(info: &ResourceInfo, object: &mut Value) {
    if !info.namespaced() {
        // Kubernetes clears the namespace of cluster-scoped objects before it validates them.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("namespace");
        }
    }
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::{discovery::v1 as discovery, storage::v1 as storage};
    match (info.group, info.kind) {
        ("", "Pod") => typed(object, pod::pod),
        ("", "Service") => typed(object, kinds::service),
        ("", "Namespace") => typed(object, kinds::namespace),
        ("", "Node") => typed(object, kinds::node),
        ("", "Secret") => typed(object, kinds::secret),
        ("", "Endpoints") => typed(object, kinds::endpoints),
        ("", "PersistentVolume") => typed(object, kinds::persistent_volume),
        ("", "PersistentVolumeClaim") => typed(object, kinds::persistent_volume_claim),
        ("storage.k8s.io", "StorageClass") => typed(object, |sc: &mut storage::StorageClass| {
            kinds::storage_class(sc)
        }),
        ("apps", "Deployment") => typed(object, |d: &mut apps::Deployment| kinds::deployment(d)),
        ("apps", "ReplicaSet") => typed(object, |r: &mut apps::ReplicaSet| kinds::replica_set(r)),
        ("apps", "StatefulSet") => {
            typed(object, |s: &mut apps::StatefulSet| kinds::stateful_set(s))
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            typed(object, |e: &mut discovery::EndpointSlice| {
                kinds::endpoint_slice(e)
            })
        }
        // ConfigMaps, Events, ServiceAccounts, Leases, ControllerRevisions have no defaults.
        _ => {}
    }
}

/// Runs `f` on the typed object and writes the result back; leaves undecodable input alone.
fn typed<T: DeserializeOwned + Serialize>(object: &mut Value, f: impl FnOnce(&mut T)) {
    let Ok(mut t) = serde_json::from_value::<T>(object.clone()) else {
        return;
    };
    f(&mut t);
    if let Ok(v) = serde_json::to_value(t) {
        *object = v;
    }
}

#[cfg(test)]
mod tests;
