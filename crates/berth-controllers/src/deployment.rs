//! The Deployment controller: it owns the ReplicaSets of every Deployment — one per pod
//! template, named `<deployment>-<pod-template-hash>` — and moves replicas from the old ones
//! to the new one by the Deployment's strategy (RollingUpdate within maxSurge and
//! maxUnavailable, or Recreate), keeps revisions for `kubectl rollout history|undo`, deletes
//! history beyond revisionHistoryLimit, and reports progress in the Deployment's status
//! (counts, the Progressing, Available and ReplicaFailure conditions). Pods are the
//! ReplicaSet controller's; this controller only reads them, for Recreate.
//!
//! Shape: the shared applier machinery of [`crate::runtime`] over three reflector caches —
//! Deployments, ReplicaSets, pods — with one `reconcile` per Deployment; a ReplicaSet event
//! wakes its Deployment (or, for an orphan, every Deployment that selects it), and a pod event
//! wakes a Recreate Deployment, which waits for old pods to be gone.
//!
//! The decision is [`plan::plan`], pure; this module claims ReplicaSets
//! ([`crate::claim`]), gathers what the plan needs from the caches, and applies the plan. Every
//! ReplicaSet write carries the resourceVersion it was planned from, so a plan made from a
//! stale cache fails with a conflict and is made again, instead of acting twice.
//!
//! - [`plan`]: sync, rolling and recreate rollouts, scaling, revisions, status;
//! - [`util`]: annotations, fenceposts, template equality, conditions.

pub mod plan;
pub mod util;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::runtime::{self, Backoff, Events};
use crate::{Error, claim, pods};

/// The component name on this controller's events.
const COMPONENT: &str = "deployment-controller";
/// With nothing else to wake it, a Deployment is looked at again this often.
const RESYNC: Duration = Duration::from_secs(300);
/// Back-off after a failed reconcile: this doubled per consecutive failure, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What every reconcile shares.
struct Context {
    client: Client,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    events: Events<Deployment>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (deployments, deployment_events) = runtime::reflector::<Deployment>(&client);
    let (replica_sets, rs_events) = runtime::reflector::<ReplicaSet>(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);

    let lookup = deployments.clone();
    let (lookup_d, lookup_rs) = (deployments.clone(), replica_sets.clone());
    let triggers = vec![
        runtime::trigger_self(deployment_events),
        runtime::trigger_mapped(rs_events, move |rs: ReplicaSet| {
            runtime::controllers_of(&rs.metadata, &lookup, |d: &Deployment| {
                d.spec.as_ref().map(|s| &s.selector)
            })
        }),
        runtime::trigger_mapped(pod_events, move |pod: Pod| {
            recreate_deployment_of_pod(&pod, &lookup_rs, &lookup_d)
        }),
    ];
    let context = Arc::new(Context {
        events: Events::new(client.clone(), COMPONENT, deployments.clone()),
        client,
        replica_sets,
        pods,
    });
    runtime::run(
        "deployment",
        reconcile,
        context,
        deployments,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// The Recreate Deployment whose ReplicaSet controls the pod: Recreate waits for old pods to
/// be gone, which only the pods show. Rolling updates follow ReplicaSet status instead.
fn recreate_deployment_of_pod(
    pod: &Pod,
    replica_sets: &Store<ReplicaSet>,
    deployments: &Store<Deployment>,
) -> Option<ObjectRef<Deployment>> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let owner = pods::controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet")?;
    let rs = replica_sets.get(&ObjectRef::new(&owner.name).within(namespace))?;
    let d_owner = pods::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")?;
    let d_ref = ObjectRef::new(&d_owner.name).within(namespace);
    let recreate = deployments
        .get(&d_ref)
        .is_some_and(|d| d.spec.as_ref().is_some_and(|s| !util::is_rolling(s)));
    recreate.then_some(d_ref)
}

/// The one reconcile: claim the Deployment's ReplicaSets, plan, apply the plan.
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Planning from a cache that has not listed yet would miss the old ReplicaSets.
    runtime::synced(&ctx.replica_sets, "replicaset").await?;
    runtime::synced(&ctx.pods, "pod").await?;

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
    let uid = d
        .metadata
        .uid
        .clone()
        .ok_or_else(|| Error::Incomplete(format!("deployment {name}"), "metadata.uid"))?;
    let selector = pods::selector(
        d.spec.as_ref().map(|s| &s.selector),
        &format!("deployment {namespace}/{name}"),
    )?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);

    let in_namespace: Vec<Arc<ReplicaSet>> = ctx
        .replica_sets
        .state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let claims = claim::claim(
        &d.metadata,
        &selector,
        in_namespace.iter().map(AsRef::as_ref),
    );
    let mut owned: Vec<ReplicaSet> = claims.owned.into_iter().cloned().collect();
    if !claims.adopt.is_empty() {
        claim::ensure_can_adopt(&d_api, &d).await?;
        let reference = pods::controller_reference(&d.metadata, "apps/v1", "Deployment")?;
        for rs in claims.adopt {
            owned.extend(claim::adopt(&rs_api, rs, &reference).await?);
        }
    }
    for rs in claims.release {
        claim::release(&rs_api, rs, &uid).await?;
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
    Ok(Action::requeue(requeue))
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
        ctx.events
            .record(d, note.type_, note.reason, &note.message)
            .await;
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
                    ctx.events
                        .record(d, "Normal", "ScalingReplicaSet", &message)
                        .await;
                }
            }
            // The cache has not shown it yet (or a collision): the next plan sees it.
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                return Err(kube::Error::Api(s).into());
            }
            Err(e) => {
                let message = format!("Failed to create new replica set {:?}: {e}", rs_name(rs));
                ctx.events
                    .record(d, "Warning", util::FAILED_RS_CREATE, &message)
                    .await;
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
            ctx.events
                .record(d, "Normal", "ScalingReplicaSet", &message)
                .await;
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
