//! The ReplicaSet controller: it owns the pods of every ReplicaSet. It creates pods from the
//! template until `spec.replicas` run, deletes the least useful ones when there are too many,
//! adopts orphan pods its selector matches, releases pods whose labels no longer match, and
//! reports replicas, fullyLabeledReplicas, readyReplicas, availableReplicas and the
//! ReplicaFailure condition in `status` — as upstream's `pkg/controller/replicaset` does.
//!
//! Shape: kube-runtime's [`applier`] (the engine under `kube::runtime::Controller`: per-object
//! queue, no two reconciles of one object at once, requeues) fed by two reflectors, one of
//! ReplicaSets and one of pods. Why not `Controller` with `.owns()` and `.watches()`: those
//! open watches of their own, separate from the pod cache the reconcile reads, so a reconcile
//! woken by a pod event could read a cache that has not seen that event yet and, finding
//! nothing to do, never look again. Here the one pod reflector updates its cache first and
//! then maps the event to the ReplicaSets it concerns (its controller, or for an orphan every
//! ReplicaSet in its namespace whose selector matches it, for adoption), so a reconcile always
//! sees at least what woke it. Mapping orphans by selector needs the ReplicaSet cache, which
//! `.watches()` cannot reach either.
//!
//! [`reconcile`] is the one reconcile; it is level-triggered and idempotent. The decisions are
//! pure functions in [`decide`] (claim, scale, status) and [`rank`] (scale-down victims); the
//! reconcile reads the caches, calls them, and carries out the answer. [`Expectations`] keep a
//! cache that lags the controller's own writes from causing extra creations or deletions.

pub mod decide;
pub mod rank;
#[cfg(test)]
mod testing;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_client::events::Recorder;
use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, trigger_with};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};
use kube::{Api, Client};

use crate::Error;
use crate::expectations::Expectations;
use crate::pods;
use decide::{Claim, ManageFailure, Scale};

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
    recorder: tokio::sync::Mutex<Recorder>,
    /// Consecutive failures per ReplicaSet uid, for the back-off.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) -> Result<(), Error> {
    let (rs_store, rs_writer) = reflector::store::<ReplicaSet>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pod_store,
        replica_sets: rs_store.clone(),
        expectations: Expectations::default(),
        recorder: tokio::sync::Mutex::new(Recorder::new(client.clone(), COMPONENT, None)),
        failures: Mutex::new(HashMap::new()),
    });

    let rs_events = reflector::reflector(
        rs_writer,
        watcher(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let forget = ctx.clone();
    let rs_triggers = trigger_with(rs_events, move |event| match event {
        watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) => Some(ObjectRef::from_obj(&rs)),
        watcher::Event::Delete(rs) => {
            if let Some(uid) = &rs.metadata.uid {
                forget.expectations.forget(uid);
                forget.failures().remove(uid);
            }
            None
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    });

    let pod_events = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    let pod_triggers = trigger_with(pod_events, move |pod: Pod| {
        replica_sets_for_pod(&pod, &rs_store)
    });

    let controller = applier(
        |rs, ctx| Box::pin(reconcile(rs, ctx)),
        error_policy,
        ctx.clone(),
        ctx.replica_sets.clone(),
        futures::stream::select(rs_triggers, pod_triggers),
        Config::default(),
    )
    .for_each(|result| {
        match result {
            Ok(_) => {}
            // A ReplicaSet deleted between its event and its reconcile: nothing to do.
            Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
            // Logged by error_policy, with the back-off.
            Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
            Err(e) => tracing::warn!(error = %e, "replicaset reconcile failed; will retry"),
        }
        future::ready(())
    });
    tokio::select! {
        () = stop => Ok(()),
        () = controller => Ok(()),
    }
}

/// The ReplicaSets a pod event concerns: its controller if that is a ReplicaSet; if it has no
/// controller, every ReplicaSet in its namespace that selects it (one of them may adopt it).
fn replica_sets_for_pod(pod: &Pod, replica_sets: &Store<ReplicaSet>) -> Vec<ObjectRef<ReplicaSet>> {
    let Some(namespace) = pod.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    if let Some(owner) = pods::controller_of(&pod.metadata) {
        let is_rs = owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/");
        return if is_rs {
            vec![ObjectRef::new(&owner.name).within(namespace)]
        } else {
            Vec::new()
        };
    }
    replica_sets
        .state()
        .iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace))
        .filter(|rs| {
            let selector = rs.spec.as_ref().map(|s| &s.selector);
            pods::selector(selector, "ReplicaSet")
                .is_ok_and(|s| pods::selects(&s, pod.metadata.labels.as_ref()))
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn error_policy(rs: Arc<ReplicaSet>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = rs.metadata.name.as_deref().unwrap_or("");
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let mut failures = ctx.failures();
    let count = failures.entry(uid).or_insert(0);
    let delay = FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(*count).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    *count = count.saturating_add(1);
    tracing::warn!(replicaset = name, error = %error, ?delay, "replicaset sync failed");
    Action::requeue(delay)
}

impl Context {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn event(&self, rs: &ReplicaSet, type_: &str, reason: &str, message: &str) {
        let reference = reference(rs);
        let mut recorder = self.recorder.lock().await;
        // Forget repeat counts of ReplicaSets that are gone.
        let live: HashSet<String> = self
            .replica_sets
            .state()
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .collect();
        recorder.retain(|uid| live.contains(uid));
        if let Err(e) = recorder.record(&reference, type_, reason, message).await {
            tracing::warn!(error = %e, "could not record event");
        }
    }
}

/// The one reconcile: claim the ReplicaSet's pods (adopting and releasing), create or delete
/// pods towards `spec.replicas` unless its own last writes are not in the cache yet or it is
/// being deleted, then write the status if it changed. Errors requeue with back-off.
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::Invalid("the pod cache stopped before it was filled".into()))?;
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
    let selector = match pods::selector(
        rs.spec.as_ref().map(|s| &s.selector),
        &format!("ReplicaSet {namespace}/{name}"),
    ) {
        Ok(selector) => selector,
        // Retrying cannot fix a selector; the next change to the ReplicaSet wakes it again.
        Err(e) => {
            tracing::warn!(error = %e, "replicaset left alone");
            return Ok(Action::await_change());
        }
    };

    let all_pods = ctx.pods.state();
    let in_namespace: Vec<&Pod> = all_pods
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let Claim {
        owned,
        adopt,
        release,
    } = decide::claim(&rs, &selector, in_namespace.iter().copied());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut claimed = owned;
    if !adopt.is_empty() {
        ensure_still_there(&ctx, &rs, &namespace, &name, &uid).await?;
        let reference = pods::controller_reference(&rs.metadata, "apps/v1", "ReplicaSet")?;
        let reference = serde_json::to_value(&reference)
            .map_err(|e| Error::Invalid(format!("encoding an owner reference: {e}")))?;
        for pod in adopt {
            if patch_owner(&pod_api, pod, reference.clone()).await? {
                claimed.push(pod);
            }
        }
    }
    for pod in release {
        let remove = serde_json::json!({"$patch": "delete", "uid": uid});
        patch_owner(&pod_api, pod, remove).await?;
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
            Scale::Create(count) => create_pods(&ctx, &rs, &pod_api, &uid, count).await,
            Scale::Delete(victims) => delete_pods(&ctx, &rs, &pod_api, &uid, &victims).await,
        }
    } else {
        Ok(())
    };

    let failure = managed.as_ref().err().map(|e| ManageFailure {
        message: error_message(e),
    });
    let status = decide::status(&rs, &claimed, failure.as_ref(), now);
    if decide::status_changed(&rs, &status) {
        write_status(&ctx, &namespace, &name, &status).await?;
    }
    // Failing to create or delete pods is retried with back-off after the status says so.
    managed?;
    ctx.failures().remove(&uid);
    let requeue = decide::next_available(&rs, &claimed, now)
        .map_or(RESYNC, |due| due.min(RESYNC) + Duration::from_millis(100));
    Ok(Action::requeue(requeue))
}

/// Before adopting, upstream re-reads the ReplicaSet from the API server: the cache may still
/// show a ReplicaSet that was deleted (or deleted and recreated under the same name), and a
/// pod must not be adopted by an owner that is gone.
async fn ensure_still_there(
    ctx: &Context,
    rs: &ReplicaSet,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), Error> {
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    let fresh = api.get(name).await?;
    if fresh.metadata.uid.as_deref() != Some(uid) {
        return Err(Error::Invalid(format!(
            "original ReplicaSet {namespace}/{name} is gone: got uid {}, wanted {uid}",
            fresh.metadata.uid.as_deref().unwrap_or("")
        )));
    }
    if fresh.metadata.deletion_timestamp.is_some() || rs.metadata.deletion_timestamp.is_some() {
        return Err(Error::Invalid(format!(
            "ReplicaSet {namespace}/{name} is being deleted; it adopts no pods"
        )));
    }
    Ok(())
}

/// Adds or removes (`item` with `$patch: delete`) an owner reference on `pod` with a strategic
/// merge patch keyed by uid, carrying the pod's uid as upstream does so a pod recreated under
/// the same name is not touched. `Ok(false)` when the pod is gone or no longer accepts the
/// change (it was deleted or changed meanwhile); the next reconcile sees why.
async fn patch_owner(api: &Api<Pod>, pod: &Pod, item: serde_json::Value) -> Result<bool, Error> {
    let Some(name) = pod.metadata.name.as_deref() else {
        return Ok(false);
    };
    let patch = serde_json::json!({
        "metadata": {"ownerReferences": [item], "uid": pod.metadata.uid},
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_invalid() => Ok(false),
        Err(e) => Err(e.into()),
    }
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

/// Creates `count` pods in slow-start batches, stopping at the first batch with a failure,
/// which is returned. Each created name is expected in the cache.
async fn create_pods(
    ctx: &Context,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    uid: &str,
    count: usize,
) -> Result<(), Error> {
    let pod = pod_from_template(rs)?;
    let params = PostParams::default();
    for batch in decide::slow_start(count) {
        let results = future::join_all((0..batch).map(|_| api.create(&params, &pod))).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(created) => {
                    let name = created.metadata.name.unwrap_or_default();
                    ctx.expectations.expect_created(uid, [name.clone()]);
                    ctx.event(
                        rs,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {name}"),
                    )
                    .await;
                }
                // Every create fails in a namespace being deleted, and that is expected.
                Err(kube::Error::Api(status)) if namespace_terminating(&status) => {}
                Err(e) => {
                    let message = api_message(&e);
                    ctx.event(
                        rs,
                        "Warning",
                        "FailedCreate",
                        &format!("Error creating: {message}"),
                    )
                    .await;
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e.into());
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
    uid: &str,
    victims: &[&Pod],
) -> Result<(), Error> {
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
                ctx.event(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                )
                .await;
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                ctx.expectations.expect_deleted(uid, [pod_uid]);
            }
            Err(e) => {
                let message = api_message(&e);
                ctx.event(
                    rs,
                    "Warning",
                    "FailedDelete",
                    &format!("Error deleting: {message}"),
                )
                .await;
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(()), |e| Err(e.into()))
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

/// The reference events about `rs` carry.
fn reference(rs: &ReplicaSet) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("ReplicaSet".into()),
        name: rs.metadata.name.clone(),
        namespace: rs.metadata.namespace.clone(),
        uid: rs.metadata.uid.clone(),
        resource_version: rs.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// What the API server said, as upstream prints a status error: its message alone.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// [`api_message`] for a controller error, for the ReplicaFailure condition.
fn error_message(error: &Error) -> String {
    match error {
        Error::Api(e) => api_message(e),
        other => other.to_string(),
    }
}

fn namespace_terminating(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}
