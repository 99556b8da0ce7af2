//! Which objects a controller controls, as upstream's `ControllerRefManager` decides it for
//! every workload controller: the ReplicaSet controller claims pods, the Deployment
//! controller ReplicaSets, by the same rules.
//!
//! - its own (controller reference with its uid) that its selector still selects: owned;
//! - its own that its selector no longer selects: released (removing only its reference),
//!   unless it is being deleted;
//! - orphans (no controller reference) its selector selects, that are not being deleted
//!   themselves: adopted, unless it is being deleted;
//! - anything another controller controls, or in another namespace: never touched.
//!
//! The decision ([`claim`]) is pure. Adoption and release ([`adopt`], [`release`]) are
//! strategic merge patches of `ownerReferences` keyed by uid that carry the dependent's uid as
//! a precondition, as upstream's are: they touch only the one reference, need no
//! resourceVersion, and cannot land on an object recreated under the same name. Before
//! adopting, [`ensure_can_adopt`] reads the owner live, since a cache may still show an owner
//! that is gone.

use berth_api::selectors::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Error, pods};

/// How a controller's namespace sorts out for it.
#[derive(Debug)]
pub struct Claims<'a, K> {
    /// Controlled by it and selected by it.
    pub owned: Vec<&'a K>,
    /// Orphans to adopt (they join `owned` once adopted).
    pub adopt: Vec<&'a K>,
    /// Controlled by it but no longer selected: to release.
    pub release: Vec<&'a K>,
}

/// Sorts `candidates` for the controller with metadata `owner` and selector `selector`.
/// Candidates of other namespaces are skipped; the caller leaves out those it never counts
/// (the ReplicaSet controller passes only active pods).
pub fn claim<'a, K: Resource>(
    owner: &ObjectMeta,
    selector: &Option<LabelSelector>,
    candidates: impl IntoIterator<Item = &'a K>,
) -> Claims<'a, K> {
    let deleting = owner.deletion_timestamp.is_some();
    let mut claims = Claims {
        owned: Vec::new(),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for candidate in candidates {
        let meta = candidate.meta();
        if meta.namespace != owner.namespace {
            continue;
        }
        let selected = pods::selects(selector, meta.labels.as_ref());
        match pods::controller_of(meta) {
            Some(controller) if Some(&controller.uid) == owner.uid.as_ref() => {
                if selected {
                    claims.owned.push(candidate);
                } else if !deleting {
                    claims.release.push(candidate);
                }
            }
            Some(_) => {}
            None => {
                if selected && !deleting && meta.deletion_timestamp.is_none() {
                    claims.adopt.push(candidate);
                }
            }
        }
    }
    claims
}

/// Upstream's `RecheckDeletionTimestamp`: adoption needs the owner as the API server has it
/// now, the same object (by uid) and not being deleted.
pub async fn ensure_can_adopt<O>(api: &Api<O>, owner: &O) -> Result<(), Error>
where
    O: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = owner.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    let fresh = api.get_opt(name).await?;
    let same =
        fresh.is_some_and(|f| f.meta().uid == meta.uid && f.meta().deletion_timestamp.is_none());
    if same && meta.deletion_timestamp.is_none() {
        Ok(())
    } else {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        Err(Error::OwnerGone(format!(
            "{} {namespace}/{name}",
            O::kind(&())
        )))
    }
}

/// Makes `reference`'s owner the controller of `object`. `None` when the object is gone or
/// refuses the reference (it was deleted, or another controller adopted it meanwhile); the
/// next reconcile sees why.
pub async fn adopt<K>(
    api: &Api<K>,
    object: &K,
    reference: &OwnerReference,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    patch_owner_references(api, object, serde_json::to_value(reference)?).await
}

/// Removes the reference to `owner_uid` from `object`'s owner references; `None` when the
/// object is gone.
pub async fn release<K>(api: &Api<K>, object: &K, owner_uid: &str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    patch_owner_references(api, object, json!({"$patch": "delete", "uid": owner_uid})).await
}

async fn patch_owner_references<K>(
    api: &Api<K>,
    object: &K,
    item: Value,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let Some(name) = meta.name.as_deref() else {
        return Ok(None);
    };
    let patch = json!({"metadata": {"ownerReferences": [item], "uid": meta.uid}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(patched) => Ok(Some(patched)),
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_invalid() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn labels(app: &str) -> Option<std::collections::BTreeMap<String, String>> {
        Some([("app".to_string(), app.to_string())].into())
    }

    fn owner(deleting: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("owner-uid".into()),
            deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
    }

    fn object(name: &str, app: &str, controller: Option<&str>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: labels(app),
                owner_references: controller.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "x".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(objects: &[&ReplicaSet]) -> Vec<String> {
        objects
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect()
    }

    fn web() -> Option<LabelSelector> {
        let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: labels("web"),
            ..Default::default()
        };
        pods::selector(Some(&selector), "test").expect("valid selector")
    }

    #[test]
    fn owns_adopts_and_releases_by_selector_and_controller_reference() {
        let mut terminating_orphan = object("terminating", "web", None);
        terminating_orphan.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut elsewhere = object("elsewhere", "web", None);
        elsewhere.metadata.namespace = Some("other".into());
        let all = [
            object("mine", "web", Some("owner-uid")),
            object("orphan", "web", None),
            object("strayed", "db", Some("owner-uid")),
            object("theirs", "web", Some("other")),
            object("unrelated", "db", None),
            terminating_orphan,
            elsewhere,
        ];
        let claims = claim(&owner(false), &web(), &all);
        assert_eq!(names(&claims.owned), ["mine"]);
        assert_eq!(names(&claims.adopt), ["orphan"]);
        assert_eq!(names(&claims.release), ["strayed"]);
    }

    #[test]
    fn an_owner_being_deleted_keeps_its_own_but_neither_adopts_nor_releases() {
        let all = [
            object("mine", "web", Some("owner-uid")),
            object("orphan", "web", None),
            object("strayed", "db", Some("owner-uid")),
        ];
        let claims = claim(&owner(true), &web(), &all);
        assert_eq!(names(&claims.owned), ["mine"]);
        assert!(claims.adopt.is_empty() && claims.release.is_empty());
    }
}
