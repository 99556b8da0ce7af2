//! The namespace controller: empties a namespace being deleted, then lets it go.
//!
//! Deleting a namespace only marks it (the API server sets its deletionTimestamp and phase
//! Terminating, refuses new objects in it, and keeps it while `spec.finalizers` holds
//! `kubernetes`). This controller owns that finalizer: for a Terminating namespace it deletes
//! every namespaced resource type berth serves (the same table the garbage collector watches,
//! [`crate::resources::collectable`]) with a plain delete-collection, so pods end gracefully through
//! their node agent and objects with finalizers wait for them. When a list shows nothing left
//! in any type it writes `spec.finalizers` without `kubernetes` through
//! `namespaces/<name>/finalize`, and the API server removes the namespace.
//!
//! Shape: the shared run loop of [`crate::runtime`] over one reflector of namespaces (one
//! namespace is one unit of work, unlike the garbage collector's cross-kind graph). Deleting
//! content is not a namespace event, so a namespace with content left is looked at again
//! after [`FIRST_RECHECK`], then less and less often up to [`MAX_RECHECK`] (as upstream's
//! rate-limited requeue): content held by a finalizer for long must not cost a list of every
//! resource type every second. Failures back off likewise. What
//! the status says is a pure function of what one pass found ([`Found`] → [`conditions`]),
//! with upstream's five condition types, reasons and messages, so `kubectl describe ns` reads
//! as it does on Kubernetes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};

use crate::runtime::{self, Backoff};
use crate::{Error, resources};

/// The finalizer this controller owns on namespaces.
pub const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose content is still going is first looked at again; each further
/// look that still finds content doubles the wait, up to [`MAX_RECHECK`].
pub const FIRST_RECHECK: Duration = Duration::from_secs(1);
pub const MAX_RECHECK: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one pass over a Terminating namespace found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Resource types whose deletion or listing failed, with the error.
    pub failures: Vec<String>,
    /// "resource.group" → objects still there (upstream spells the core group as empty:
    /// "pods.").
    pub remaining: BTreeMap<String, usize>,
    /// Finalizer → objects still carrying it.
    pub finalizers: BTreeMap<String, usize>,
}

impl Found {
    /// Nothing is left and nothing failed: the namespace may go.
    pub fn empty(&self) -> bool {
        self.failures.is_empty() && self.remaining.is_empty()
    }
}

/// The namespace's conditions after a pass that found `found`: upstream's five types, each
/// True with what is wrong or False with its all-clear. A condition's transition time moves
/// only when its status does.
pub fn conditions(
    found: &Found,
    existing: &[NamespaceCondition],
    now: Timestamp,
) -> Vec<NamespaceCondition> {
    let remaining = found
        .remaining
        .iter()
        .map(|(resource, n)| format!("{resource} has {n} resource instances"))
        .collect::<Vec<_>>()
        .join(", ");
    let finalizers = found
        .finalizers
        .iter()
        .map(|(f, n)| format!("{f} in {n} resource instances"))
        .collect::<Vec<_>>()
        .join(", ");
    // (type, failing?, failing reason and message, all-clear reason and message)
    let states = [
        (
            "NamespaceDeletionDiscoveryFailure",
            None,
            (
                "ResourcesDiscovered",
                "All resources successfully discovered".to_string(),
            ),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            None,
            (
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".to_string(),
            ),
        ),
        (
            "NamespaceDeletionContentFailure",
            (!found.failures.is_empty()).then(|| {
                (
                    "ContentDeletionFailed",
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        found.failures.len(),
                        found.failures.join(", ")
                    ),
                )
            }),
            (
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".to_string(),
            ),
        ),
        (
            "NamespaceContentRemaining",
            (!found.remaining.is_empty()).then(|| {
                (
                    "SomeResourcesRemain",
                    format!("Some resources are remaining: {remaining}"),
                )
            }),
            (
                "ContentRemoved",
                "All content successfully removed".to_string(),
            ),
        ),
        (
            "NamespaceFinalizersRemaining",
            (!found.finalizers.is_empty()).then(|| {
                (
                    "SomeFinalizersRemain",
                    format!("Some content in the namespace has finalizers remaining: {finalizers}"),
                )
            }),
            (
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".to_string(),
            ),
        ),
    ];
    states
        .into_iter()
        .map(|(type_, failing, ok)| {
            let (status, (reason, message)) = match failing {
                Some(f) => ("True", f),
                None => ("False", ok),
            };
            let transition = existing
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NamespaceCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// `spec.finalizers` without ours, or `None` when ours is not there (nothing to do).
pub fn finalizers_without_ours(ns: &Namespace) -> Option<Vec<String>> {
    let finalizers = ns.spec.as_ref()?.finalizers.clone().unwrap_or_default();
    finalizers
        .iter()
        .any(|f| f == FINALIZER)
        .then(|| finalizers.into_iter().filter(|f| f != FINALIZER).collect())
}

struct Context {
    client: Client,
    /// Consecutive looks per namespace that found content left.
    rechecks: Backoff<String>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (namespaces, events) = runtime::reflector::<Namespace>(&client);
    let context = Arc::new(Context {
        client,
        rechecks: Backoff::new(FIRST_RECHECK, MAX_RECHECK),
    });
    runtime::run(
        "namespace",
        reconcile,
        context,
        namespaces,
        vec![runtime::trigger_self(events)],
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// The one reconcile: for a namespace being deleted that still carries our finalizer, delete
/// what is in it, say in its status what is left, and finalize it once nothing is.
async fn reconcile(ns: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let Some(kept) = finalizers_without_ours(&ns) else {
        return Ok(Action::await_change());
    };
    let name = ns.name_any();
    let client = &context.client;
    let found = delete_content(client, &name).await;

    let api: Api<Namespace> = Api::all(client.clone());
    let existing = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let wanted = conditions(&found, &existing, Timestamp::now());
    if !same_conditions(&wanted, &existing) {
        let patch = serde_json::json!({"status": {"conditions": wanted}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if !found.empty() {
        return Ok(Action::requeue(context.rechecks.failed(name)));
    }
    context.rechecks.reset(&name);

    tracing::info!(namespace = %name, "namespace is empty; finalizing");
    let mut finalized = ns.as_ref().clone();
    finalized
        .spec
        .get_or_insert_with(Default::default)
        .finalizers = Some(kept);
    match api
        .replace_subresource::<Namespace>("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Conditions equal but for transition times that a rewrite would keep anyway.
fn same_conditions(a: &[NamespaceCondition], b: &[NamespaceCondition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                x.type_ == y.type_
                    && x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
            })
        })
}

/// Deletes every namespaced object in `namespace` and reports what is left. A type whose
/// delete or list fails is a failure, never "empty".
async fn delete_content(client: &Client, namespace: &str) -> Found {
    let mut found = Found::default();
    for info in resources::collectable()
        .into_iter()
        .filter(|r| r.namespaced())
    {
        let api = resources::dynamic_api(client, info, Some(namespace));
        let resource = format!("{}.{}", info.plural, info.group);
        let listed = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                found.failures.push(format!("listing {resource}: {e}"));
                continue;
            }
        };
        let items = if listed
            .iter()
            .any(|o| o.metadata.deletion_timestamp.is_none())
        {
            if let Err(e) = api
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
            {
                found.failures.push(format!("deleting {resource}: {e}"));
                continue;
            }
            match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => {
                    found.failures.push(format!("listing {resource}: {e}"));
                    continue;
                }
            }
        } else {
            listed
        };
        if items.is_empty() {
            continue;
        }
        found.remaining.insert(resource, items.len());
        for item in &items {
            for finalizer in item.metadata.finalizers.iter().flatten() {
                *found.finalizers.entry(finalizer.clone()).or_insert(0) += 1;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    #[test]
    fn an_empty_namespace_reports_all_clear() {
        let found = Found::default();
        assert!(found.empty());
        let conditions = conditions(&found, &[], at(10));
        assert_eq!(conditions.len(), 5);
        assert!(conditions.iter().all(|c| c.status == "False"));
        let remaining = conditions
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .expect("content condition");
        assert_eq!(remaining.reason.as_deref(), Some("ContentRemoved"));
    }

    #[test]
    fn remaining_content_and_finalizers_are_named_as_upstream_does() {
        let found = Found {
            failures: vec![],
            remaining: [
                ("pods.".to_string(), 1),
                ("replicasets.apps".to_string(), 2),
            ]
            .into(),
            finalizers: [("foregroundDeletion".to_string(), 1)].into(),
        };
        assert!(!found.empty());
        let conditions = conditions(&found, &[], at(10));
        let get = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t)
                .expect("condition present")
        };
        let remaining = get("NamespaceContentRemaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some(
                "Some resources are remaining: pods. has 1 resource instances, replicasets.apps has 2 resource instances"
            )
        );
        assert_eq!(
            get("NamespaceFinalizersRemaining").message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: foregroundDeletion in 1 resource instances"
            )
        );
        assert_eq!(get("NamespaceDeletionContentFailure").status, "False");
    }

    #[test]
    fn a_failure_is_never_empty_and_transition_times_move_with_status() {
        let failed = Found {
            failures: vec!["listing pods.: boom".into()],
            ..Default::default()
        };
        assert!(!failed.empty());
        let first = conditions(&failed, &[], at(10));
        let again = conditions(&failed, &first, at(20));
        assert_eq!(first, again, "unchanged status keeps its transition time");
        let cleared = conditions(&Found::default(), &again, at(30));
        let content = cleared
            .iter()
            .find(|c| c.type_ == "NamespaceDeletionContentFailure")
            .expect("present");
        assert_eq!(content.status, "False");
        assert_eq!(content.last_transition_time, Some(Time(at(30))));
        assert!(same_conditions(&first, &again));
        assert!(!same_conditions(&first, &cleared));
    }

    #[test]
    fn only_our_finalizer_is_removed() {
        let ns = |f: &[&str]| Namespace {
            spec: Some(NamespaceSpec {
                finalizers: Some(f.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        };
        assert_eq!(
            finalizers_without_ours(&ns(&["kubernetes", "example.com/x"])),
            Some(vec!["example.com/x".to_string()])
        );
        assert_eq!(finalizers_without_ours(&ns(&["example.com/x"])), None);
        assert_eq!(finalizers_without_ours(&Namespace::default()), None);
    }
}
