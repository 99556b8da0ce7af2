//! The ReplicaSet controller: it owns the pods of every ReplicaSet. It creates pods from the
//! template until `spec.replicas` run, deletes the least useful ones when there are too many,
//! adopts orphan pods its selector matches, releases pods whose labels no longer match, and
//! reports replicas, fullyLabeledReplicas, readyReplicas, availableReplicas and the
//! ReplicaFailure condition in `status` — as upstream's `pkg/controller/replicaset` does.
//!
//! Shape: the shared applier machinery of [`crate::runtime`] over two reflector caches, one
//! of ReplicaSets and one of pods; a pod event wakes its controller or, for an orphan, every
//! ReplicaSet of its namespace that selects it (see that module for why not `Controller`).
//!
//! `reconcile` is the one reconcile; it is level-triggered and idempotent. The decisions are
//! pure functions in [`decide`] (claim, scale, status) and [`rank`] (scale-down victims); the
//! reconcile reads the caches, calls them, and carries out the answer. [`Expectations`] keep a
//! cache that lags the controller's own writes from causing extra creations or deletions.

pub mod decide;
pub mod rank;
#[cfg(test)]
mod testing;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{TryStreamExt, future};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::error::api_message;
use crate::expectations::Expectations;
use crate::runtime::{self, Backoff, Events};
use crate::{Error, claim, pods};
use decide::{ManageFailure, Scale};

/// The component name on events, as upstream's.
pub const COMPONENT: &str = "replicaset-controller";

/// Back-off after a failed reconcile: this doubled per consecutive failure, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A safety net for changes no event reports (a pod's controller reference moved to another
/// owner): every ReplicaSet is looked at again this often.
const RESYNC: Duration = Duration::from_secs(600);

/// What every reconcile shares.
struct Context {
    client: Client,
    pods: Store<Pod>,
    replica_sets: Store<ReplicaSet>,
    expectations: Expectations,
    events: Events<ReplicaSet>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (replica_sets, rs_events) = runtime::reflector::<ReplicaSet>(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        replica_sets: replica_sets.clone(),
        expectations: Expectations::default(),
        events: Events::new(client, COMPONENT, replica_sets.clone()),
    });

    let forget = context.clone();
    let rs_events = rs_events.inspect_ok(move |event| {
        if let watcher::Event::Delete(rs) = event
            && let Some(uid) = &rs.metadata.uid
        {
            forget.expectations.forget(uid);
        }
    });
    let lookup = replica_sets.clone();
    let triggers = vec![
        runtime::trigger_self(rs_events),
        runtime::trigger_mapped(pod_events, move |pod: Pod| {
            runtime::controllers_of(&pod.metadata, &lookup, |rs: &ReplicaSet| {
                rs.spec.as_ref().map(|s| &s.selector)
            })
        }),
    ];
    runtime::run(
        "replicaset",
        reconcile,
        context,
        replica_sets,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// The one reconcile: claim the ReplicaSet's pods (adopting and releasing), create or delete
/// pods towards `spec.replicas` unless its own last writes are not in the cache yet or it is
/// being deleted, then write the status if it changed. Errors requeue with back-off.
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    runtime::synced(&ctx.pods, "pod").await?;
    let namespace = rs
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| Error::Incomplete("ReplicaSet".into(), "metadata.namespace"))?;
    let name = rs
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::Incomplete("ReplicaSet".into(), "metadata.name"))?;
    let uid = rs.metadata.uid.clone().ok_or_else(|| {
        Error::Incomplete(format!("ReplicaSet {namespace}/{name}"), "metadata.uid")
    })?;
    let selector = pods::selector(
        rs.spec.as_ref().map(|s| &s.selector),
        &format!("ReplicaSet {namespace}/{name}"),
    )?;

    let all_pods = ctx.pods.state();
    let in_namespace: Vec<&Pod> = all_pods
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let claims = decide::claim(&rs, &selector, in_namespace.iter().copied());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut claimed = claims.owned;
    if !claims.adopt.is_empty() {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
        claim::ensure_can_adopt(&rs_api, &rs).await?;
        let reference = pods::controller_reference(&rs.metadata, "apps/v1", "ReplicaSet")?;
        for pod in claims.adopt {
            if claim::adopt(&pod_api, pod, &reference).await?.is_some() {
                claimed.push(pod);
            }
        }
    }
    for pod in claims.release {
        claim::release(&pod_api, pod, &uid).await?;
    }

    let satisfied = ctx.expectations.satisfied(
        &uid,
        |created| {
            in_namespace
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(created))
        },
        |deleted| {
            !in_namespace.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(deleted)
                    && p.metadata.deletion_timestamp.is_none()
            })
        },
    );
    let now = Timestamp::now();
    let managed = if satisfied && rs.metadata.deletion_timestamp.is_none() {
        let related = related_pods(&ctx, &rs, &in_namespace);
        match decide::scale(&rs, &claimed, &related, now) {
            Scale::Hold => Ok(()),
            Scale::Create(count) => {
                let pod = pod_from_template(&rs)?;
                create_pods(&ctx, &rs, &pod_api, &pod, count).await
            }
            Scale::Delete(victims) => delete_pods(&ctx, &rs, &pod_api, &victims).await,
        }
    } else {
        Ok(())
    };

    let failure = managed.as_ref().err().and_then(ManageFailure::of);
    let status = decide::status(&rs, &claimed, failure.as_ref(), now);
    if decide::status_changed(&rs, &status) {
        write_status(&ctx, &namespace, &name, &status).await?;
    }
    // Failing to create or delete pods is retried with back-off after the status says so.
    managed?;
    let requeue = decide::next_available(&rs, &claimed, now)
        .map_or(RESYNC, |due| due.min(RESYNC) + Duration::from_millis(100));
    Ok(Action::requeue(requeue))
}

/// The active pods of this ReplicaSet and of its siblings (ReplicaSets with the same
/// controller, e.g. one Deployment's), for ranking who is doubled up on a node.
fn related_pods<'a>(ctx: &Context, rs: &ReplicaSet, in_namespace: &[&'a Pod]) -> Vec<&'a Pod> {
    let mut owners: HashSet<String> = rs.metadata.uid.iter().cloned().collect();
    if let Some(controller) = pods::controller_of(&rs.metadata) {
        owners.extend(
            ctx.replica_sets
                .state()
                .iter()
                .filter(|other| other.metadata.namespace == rs.metadata.namespace)
                .filter(|other| {
                    pods::controller_of(&other.metadata).is_some_and(|c| c.uid == controller.uid)
                })
                .filter_map(|other| other.metadata.uid.clone()),
        );
    }
    in_namespace
        .iter()
        .copied()
        .filter(|p| pods::is_active(p))
        .filter(|p| pods::controller_of(&p.metadata).is_some_and(|c| owners.contains(&c.uid)))
        .collect()
}

/// Creates `count` copies of `pod` in slow-start batches, stopping at the first batch with
/// a failure, which is returned. Each created name is expected in the cache.
async fn create_pods(
    ctx: &Context,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    pod: &Pod,
    count: usize,
) -> Result<(), Error> {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let params = PostParams::default();
    for batch in decide::slow_start(count) {
        let results = future::join_all((0..batch).map(|_| api.create(&params, pod))).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(created) => {
                    let name = created.metadata.name.unwrap_or_default();
                    ctx.expectations.expect_created(uid, [name.clone()]);
                    let message = format!("Created pod: {name}");
                    ctx.events
                        .record(rs, "Normal", "SuccessfulCreate", &message)
                        .await;
                }
                // Every create fails in a namespace being deleted, and that is expected.
                Err(kube::Error::Api(status)) if namespace_terminating(&status) => {}
                Err(e) => {
                    let message = format!("Error creating: {}", api_message(&e));
                    ctx.events
                        .record(rs, "Warning", "FailedCreate", &message)
                        .await;
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(source) = failure {
            return Err(Error::FailedCreate {
                owner: describe(rs),
                source,
            });
        }
    }
    Ok(())
}

/// Deletes `victims`; each deleted (or already gone) uid is expected to leave the cache. The
/// first failure is returned.
async fn delete_pods(
    ctx: &Context,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    victims: &[&Pod],
) -> Result<(), Error> {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let deletions = victims.iter().filter_map(|pod| {
        let name = pod.metadata.name.clone()?;
        let pod_uid = pod.metadata.uid.clone()?;
        Some(async move {
            let result = api.delete(&name, &DeleteParams::default()).await;
            (name, pod_uid, result)
        })
    });
    let mut failure = None;
    for (name, pod_uid, result) in future::join_all(deletions).await {
        match result {
            Ok(_) => {
                ctx.expectations.expect_deleted(uid, [pod_uid]);
                let message = format!("Deleted pod: {name}");
                ctx.events
                    .record(rs, "Normal", "SuccessfulDelete", &message)
                    .await;
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                ctx.expectations.expect_deleted(uid, [pod_uid]);
            }
            Err(e) => {
                let message = format!("Error deleting: {}", api_message(&e));
                ctx.events
                    .record(rs, "Warning", "FailedDelete", &message)
                    .await;
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        None => Ok(()),
        Some(source) => Err(Error::FailedDelete {
            owner: describe(rs),
            source,
        }),
    }
}

/// "ReplicaSet namespace/name", for errors.
fn describe(rs: &ReplicaSet) -> String {
    let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    format!("ReplicaSet {namespace}/{name}")
}

/// The pod the ReplicaSet creates: the template's labels, annotations, finalizers and spec,
/// named `<rs>-<random>` by the API server, controlled by the ReplicaSet.
fn pod_from_template(rs: &ReplicaSet) -> Result<Pod, Error> {
    let name = rs.metadata.name.as_deref().unwrap_or("");
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| Error::Incomplete(format!("ReplicaSet {name}"), "spec.template"))?;
    let meta = template.metadata.unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![pods::controller_reference(
                &rs.metadata,
                "apps/v1",
                "ReplicaSet",
            )?]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// Writes `status` through the status subresource. A merge patch names every field the
/// controller owns (null for no conditions), so it needs no resourceVersion and cannot lose
/// a race with a spec update; the next reconcile observes the newer generation.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &ReplicaSetStatus,
) -> Result<(), Error> {
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "status": {
            "replicas": status.replicas,
            "fullyLabeledReplicas": status.fully_labeled_replicas,
            "readyReplicas": status.ready_replicas,
            "availableReplicas": status.available_replicas,
            "observedGeneration": status.observed_generation,
            "conditions": status.conditions,
        }
    });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: there is no status left to write.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The API server refused a create because the namespace is being deleted.
fn namespace_terminating(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}
