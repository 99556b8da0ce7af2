//! The Deployment controller: it owns the ReplicaSets of every Deployment — one per pod
//! template, named `<deployment>-<pod-template-hash>` — and moves replicas from the old ones
//! to the new one by the Deployment's strategy (RollingUpdate within maxSurge and
//! maxUnavailable, or Recreate), keeps revisions for `kubectl rollout history|undo`, deletes
//! history beyond revisionHistoryLimit, and reports progress in the Deployment's status
//! (counts, the Progressing, Available and ReplicaFailure conditions). Pods are the
//! ReplicaSet controller's; this controller only reads them, for Recreate.
//!
//! Shape: kube-runtime's [`applier`] (the engine inside `Controller`) over three reflector
//! caches — Deployments, ReplicaSets, pods — with one [`reconcile`] per Deployment. Not
//! `Controller::owns`: that opens a watch of its own, so a reconcile woken by a ReplicaSet
//! change could read a ReplicaSet cache that has not seen the change yet, find nothing to do
//! and not be woken again. Feeding the applier from the reflectors the reconcile reads
//! (which `Controller` only allows behind kube-runtime's unstable features) means the cache
//! always holds what woke it.
//!
//! The decision is [`plan::plan`], pure; this module claims ReplicaSets
//! ([`claim`]), gathers what the plan needs from the caches, and applies the plan. Every
//! ReplicaSet write carries the resourceVersion it was planned from, so a plan made from a
//! stale cache fails with a conflict and is made again, instead of acting twice.
//!
//! - [`plan`]: sync, rolling and recreate rollouts, scaling, revisions, status;
//! - [`claim`]: adoption and release of ReplicaSets by selector;
//! - [`util`]: annotations, fenceposts, template equality, conditions.

pub mod claim;
pub mod plan;
pub mod util;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_client::events::Recorder;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::{Error, pods};

/// The component name on this controller's events.
const COMPONENT: &str = "deployment-controller";
/// With nothing else to wake it, a Deployment is looked at again this often.
const RESYNC: Duration = Duration::from_secs(300);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What every reconcile shares.
struct Context {
    client: Client,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    recorder: tokio::sync::Mutex<Recorder>,
    /// Consecutive failures per Deployment uid, for the back-off.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) -> Result<(), Error> {
    let (deployments, deployment_writer) = reflector::store::<Deployment>();
    let (replica_sets, rs_writer) = reflector::store::<ReplicaSet>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let config = watcher::Config::default();

    let deployment_events = reflector::reflector(
        deployment_writer,
        watcher(Api::<Deployment>::all(client.clone()), config.clone()).default_backoff(),
    )
    .touched_objects()
    .map_ok(|d: Deployment| vec![ObjectRef::from_obj(&d)]);

    let lookup = deployments.clone();
    let rs_events = reflector::reflector(
        rs_writer,
        watcher(Api::<ReplicaSet>::all(client.clone()), config.clone()).default_backoff(),
    )
    .touched_objects()
    .map_ok(move |rs: ReplicaSet| deployments_of_replica_set(&rs, &lookup));

    let (lookup_d, lookup_rs) = (deployments.clone(), replica_sets.clone());
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), config).default_backoff(),
    )
    .touched_objects()
    .map_ok(move |pod: Pod| recreate_deployment_of_pod(&pod, &lookup_rs, &lookup_d));

    let streams: Vec<BoxStream<'static, Result<Vec<ObjectRef<Deployment>>, watcher::Error>>> = vec![
        deployment_events.boxed(),
        rs_events.boxed(),
        pod_events.boxed(),
    ];
    let queue = futures::stream::select_all(streams)
        .map_ok(|refs| futures::stream::iter(refs.into_iter().map(Ok::<_, watcher::Error>)))
        .try_flatten();

    let context = Arc::new(Context {
        recorder: tokio::sync::Mutex::new(Recorder::new(client.clone(), COMPONENT, None)),
        client,
        replica_sets,
        pods: pod_store,
        failures: Mutex::new(HashMap::new()),
    });
    let controller = applier(
        |d, ctx| Box::pin(reconcile(d, ctx)),
        error_policy,
        context,
        deployments,
        queue,
        Config::default(),
    )
    .for_each(|result| {
        match result {
            Ok(_) => {}
            Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
            // A conflict only means the cache was behind; the retry plans from newer data.
            Err(kube::runtime::controller::Error::ReconcilerFailed(
                Error::Api(kube::Error::Api(s)),
                _,
            )) if s.is_conflict() => {}
            Err(e) => tracing::warn!(error = %e, "deployment reconcile failed"),
        }
        futures::future::ready(())
    });
    tokio::select! {
        () = stop => {}
        () = controller => {}
    }
    Ok(())
}

/// The Deployment controlling a ReplicaSet; for an orphan, every Deployment of its namespace
/// whose selector selects it (one of them may adopt it).
fn deployments_of_replica_set(
    rs: &ReplicaSet,
    deployments: &Store<Deployment>,
) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.metadata.namespace.clone().unwrap_or_default();
    if let Some(owner) = pods::controller_of(&rs.metadata) {
        if owner.kind == "Deployment" && owner.api_version.starts_with("apps/") {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    deployments
        .state()
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|d| {
            pods::selector(d.spec.as_ref().map(|s| &s.selector), "deployment")
                .is_ok_and(|s| pods::selects(&s, rs.metadata.labels.as_ref()))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// The Recreate Deployment whose ReplicaSet controls the pod: Recreate waits for old pods to
/// be gone, which only the pods show. Rolling updates follow ReplicaSet status instead.
fn recreate_deployment_of_pod(
    pod: &Pod,
    replica_sets: &Store<ReplicaSet>,
    deployments: &Store<Deployment>,
) -> Vec<ObjectRef<Deployment>> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(owner) = pods::controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet") else {
        return Vec::new();
    };
    let Some(rs) = replica_sets.get(&ObjectRef::new(&owner.name).within(&namespace)) else {
        return Vec::new();
    };
    let Some(d_owner) = pods::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") else {
        return Vec::new();
    };
    let d_ref = ObjectRef::new(&d_owner.name).within(&namespace);
    let recreate = deployments
        .get(&d_ref)
        .is_some_and(|d| d.spec.as_ref().is_some_and(|s| !util::is_rolling(s)));
    if recreate { vec![d_ref] } else { Vec::new() }
}

/// Exponential back-off per Deployment; success resets it.
fn error_policy(d: Arc<Deployment>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(uid).or_insert(0);
    *count = count.saturating_add(1);
    let delay = BACKOFF_START
        .saturating_mul(1 << (*count - 1).min(10))
        .min(BACKOFF_MAX);
    tracing::debug!(
        deployment = %d.metadata.name.clone().unwrap_or_default(),
        %error, ?delay, "deployment reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// The one reconcile: claim the Deployment's ReplicaSets, plan, apply the plan.
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Planning from a cache that has not listed yet would miss the old ReplicaSets.
    let not_ready = |what: &str| Error::Invalid(format!("the {what} cache stopped"));
    ctx.replica_sets
        .wait_until_ready()
        .await
        .map_err(|_| not_ready("replicaset"))?;
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| not_ready("pod"))?;

    let name = d
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::Incomplete("deployment".into(), "metadata.name"))?;
    let namespace = d
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| Error::Incomplete(format!("deployment {name}"), "metadata.namespace"))?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);

    let in_namespace: Vec<Arc<ReplicaSet>> = ctx
        .replica_sets
        .state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let claims = claim::claim(&d, in_namespace.iter().map(AsRef::as_ref))?;
    let mut owned = claims.owned;
    if !claims.adopt.is_empty() && can_adopt(&d_api, &d).await? {
        for rs in &claims.adopt {
            let adopted = claim::adopted(&d, rs)?;
            match rs_api
                .replace(&rs_name(rs), &PostParams::default(), &adopted)
                .await
            {
                Ok(rs) => owned.push(rs),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for rs in &claims.release {
        let released = claim::released(&d, rs);
        match rs_api
            .replace(&rs_name(rs), &PostParams::default(), &released)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }

    let owned_uids: Vec<String> = owned
        .iter()
        .filter_map(|rs| rs.metadata.uid.clone())
        .collect();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| pods::controller_of(&p.metadata).is_some_and(|o| owned_uids.contains(&o.uid)))
        .collect();
    let pod_refs: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let namespace_refs: Vec<&ReplicaSet> = in_namespace.iter().map(AsRef::as_ref).collect();
    let plan = plan::plan(plan::Observed {
        deployment: &d,
        owned,
        namespace: &namespace_refs,
        pods: &pod_refs,
        now: Timestamp::now(),
    })?;
    let requeue = plan.requeue_after.map_or(RESYNC, |after| after.min(RESYNC));
    apply(&ctx, &d, &rs_api, &d_api, plan).await?;

    if let Some(uid) = &d.metadata.uid {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
    Ok(Action::requeue(requeue))
}

/// upstream's RecheckDeletionTimestamp: adopt only for a Deployment that still exists (the
/// same one) and is not being deleted, read from the API rather than the cache.
async fn can_adopt(api: &Api<Deployment>, d: &Deployment) -> Result<bool, Error> {
    let fresh = api
        .get_opt(d.metadata.name.as_deref().unwrap_or_default())
        .await?;
    Ok(fresh.is_some_and(|f| {
        f.metadata.uid == d.metadata.uid && f.metadata.deletion_timestamp.is_none()
    }))
}

fn rs_name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

/// Applies a plan in order; the first failure ends the reconcile (and requeues it).
async fn apply(
    ctx: &Context,
    d: &Deployment,
    rs_api: &Api<ReplicaSet>,
    d_api: &Api<Deployment>,
    plan: plan::Plan,
) -> Result<(), Error> {
    let name = d.metadata.name.clone().unwrap_or_default();
    for note in &plan.notes {
        record(ctx, d, note.type_, note.reason, &note.message).await;
    }
    if let Some(rs) = &plan.create {
        let replicas = util::rs_replicas(rs);
        match rs_api.create(&PostParams::default(), rs).await {
            Ok(created) => {
                if replicas > 0 {
                    let message = format!(
                        "Scaled up replica set {} from 0 to {replicas}",
                        rs_name(&created)
                    );
                    record(ctx, d, "Normal", "ScalingReplicaSet", &message).await;
                }
            }
            // The cache has not shown it yet (or a collision): the next plan sees it.
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                return Err(kube::Error::Api(s).into());
            }
            Err(e) => {
                let message = format!("Failed to create new replica set {:?}: {e}", rs_name(rs));
                record(ctx, d, "Warning", util::FAILED_RS_CREATE, &message).await;
                if let Some(spec) = d.spec.as_ref()
                    && util::progress_deadline(spec).is_some()
                {
                    let mut status = plan
                        .status
                        .clone()
                        .or_else(|| d.status.clone())
                        .unwrap_or_default();
                    let c = util::new_condition(
                        util::PROGRESSING,
                        "False",
                        util::FAILED_RS_CREATE,
                        message,
                        Timestamp::now(),
                    );
                    util::set_condition(&mut status, c);
                    // The create error is what matters; a status error would hide it.
                    let _ = write_status(d_api, d, status).await;
                }
                return Err(e.into());
            }
        }
    }
    for update in &plan.updates {
        let rs = &update.replica_set;
        rs_api
            .replace(&rs_name(rs), &PostParams::default(), rs)
            .await?;
        if update.from != update.to {
            let direction = if update.to > update.from {
                "up"
            } else {
                "down"
            };
            let message = format!(
                "Scaled {direction} replica set {} from {} to {}",
                rs_name(rs),
                update.from,
                update.to
            );
            record(ctx, d, "Normal", "ScalingReplicaSet", &message).await;
        }
    }
    for rs in &plan.deletes {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.metadata.uid.clone(),
                resource_version: rs.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        tracing::debug!(deployment = %name, replicaset = %rs_name(rs), "deleting old replica set");
        match rs_api.delete(&rs_name(rs), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The revision goes first and the status is written as of the patched object: the other
    // way round the next reconcile, woken by the status write, would plan from a cache
    // without the patch and conflict with it.
    let mut current = None;
    if let Some(revision) = plan.revision {
        let patch = serde_json::json!({"metadata": {"annotations": {util::REVISION: revision}}});
        let patched = d_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        current = Some(patched);
    }
    if let Some(status) = plan.status {
        let mut base = d.clone();
        if let Some(patched) = current {
            base.metadata.resource_version = patched.metadata.resource_version;
        }
        write_status(d_api, &base, status).await?;
    }
    Ok(())
}

/// Writes the status through the status subresource, as of the resourceVersion it was
/// computed from.
async fn write_status(
    api: &Api<Deployment>,
    d: &Deployment,
    status: DeploymentStatus,
) -> Result<(), Error> {
    let mut d = d.clone();
    d.status = Some(status);
    let name = d.metadata.name.clone().unwrap_or_default();
    api.replace_status(&name, &PostParams::default(), &d)
        .await?;
    Ok(())
}

/// Records an event about the Deployment; a failure to record is logged, not fatal.
async fn record(ctx: &Context, d: &Deployment, type_: &str, reason: &str, message: &str) {
    let object = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: d.metadata.name.clone(),
        namespace: d.metadata.namespace.clone(),
        uid: d.metadata.uid.clone(),
        resource_version: d.metadata.resource_version.clone(),
        field_path: None,
    };
    if let Err(e) = ctx
        .recorder
        .lock()
        .await
        .record(&object, type_, reason, message)
        .await
    {
        tracing::debug!(error = %e, "could not record a deployment event");
    }
}
