//! The StatefulSet controller: it owns the pods, the per-pod claims and the
//! ControllerRevisions of every StatefulSet, as upstream's `pkg/controller/statefulset` does.
//! Pods are named `<set>-<ordinal>` with hostname = name and subdomain = serviceName, each
//! with its claims `<template>-<set>-<ordinal>` made before it and reused after it; they are
//! created, replaced, scaled and updated in ordinal order (OrderedReady) or all at once
//! (Parallel); RollingUpdate (partition, maxUnavailable) and OnDelete move them between
//! revisions; the claims' owners follow persistentVolumeClaimRetentionPolicy; status reports
//! the counts and revisions `kubectl rollout status` reads.
//!
//! Shape: the shared applier machinery of [`crate::runtime`] over reflector caches of
//! StatefulSets, pods, claims, ControllerRevisions and Services; a pod or revision event
//! wakes its controller (or, for an orphan, every set that selects it), a claim event every
//! set of its namespace whose selector selects the claim (a claim's owner may be a pod).
//!
//! `reconcile` is the one reconcile, level-triggered and idempotent. The decisions are pure:
//! [`identity`] (names, labels, claims of an ordinal), [`history`] (revisions), [`retention`]
//! (claim owners) and [`plan`] (what to create, delete or fix, and the status); this module
//! claims pods and revisions ([`crate::claim`]), writes the revision, carries out the plan and
//! writes the status. [`Expectations`] keep a cache lagging the controller's own creates and
//! deletes from making it act twice; since pod names are fixed, a create the cache has not
//! shown yet fails with AlreadyExists rather than making a second pod either way.

pub mod history;
pub mod identity;
pub mod plan;
pub mod retention;
#[cfg(test)]
mod testing;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{TryStreamExt, future};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

use crate::error::api_message;
use crate::expectations::Expectations;
use crate::runtime::{self, Backoff, Events};
use crate::{Error, claim, pods};
use plan::{Action, Why};

/// The component name on events, as upstream's.
pub const COMPONENT: &str = "statefulset-controller";

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A safety net for changes no event reports.
const RESYNC: Duration = Duration::from_secs(300);
/// Name collisions tolerated before giving up on creating a revision (each bumps the
/// collision count; two in a row already mean something is wrong).
const MAX_COLLISIONS: i32 = 100;

/// What every reconcile shares.
struct Context {
    client: Client,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
    services: Store<Service>,
    expectations: Expectations,
    events: Events<StatefulSet>,
    /// (set uid, generation) already warned about a missing headless Service, so the
    /// warning is recorded once per spec rather than on every reconcile.
    warned: Mutex<HashSet<(String, i64)>>,
}

fn selector_of(
    set: &StatefulSet,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> {
    set.spec.as_ref().map(|s| &s.selector)
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (sets, set_events) = runtime::reflector::<StatefulSet>(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);
    let (claims, claim_events) = runtime::reflector::<PersistentVolumeClaim>(&client);
    let (revisions, revision_events) = runtime::reflector::<ControllerRevision>(&client);
    let (services, service_events) = runtime::reflector::<Service>(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        claims,
        revisions,
        services,
        expectations: Expectations::default(),
        events: Events::new(client, COMPONENT, sets.clone()),
        warned: Mutex::new(HashSet::new()),
    });

    let forget = context.clone();
    let set_events = set_events.inspect_ok(move |event| {
        if let watcher::Event::Delete(set) = event
            && let Some(uid) = &set.metadata.uid
        {
            forget.expectations.forget(uid);
        }
    });
    let (by_pod, by_revision, by_claim) = (sets.clone(), sets.clone(), sets.clone());
    let triggers = vec![
        runtime::trigger_self(set_events),
        runtime::trigger_mapped(pod_events, move |pod: Pod| {
            runtime::controllers_of(&pod.metadata, &by_pod, selector_of)
        }),
        runtime::trigger_mapped(revision_events, move |revision: ControllerRevision| {
            runtime::controllers_of(&revision.metadata, &by_revision, selector_of)
        }),
        runtime::trigger_mapped(claim_events, move |claim: PersistentVolumeClaim| {
            selecting_sets(&claim.metadata, &by_claim)
        }),
        // Only so the Service cache fills; a Service appearing later needs no reconcile.
        runtime::trigger_mapped(service_events, |_: Service| {
            Vec::<ObjectRef<StatefulSet>>::new()
        }),
    ];
    runtime::run(
        "statefulset",
        reconcile,
        context,
        sets,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// Every set of the claim's namespace whose selector selects it: a claim is owned by its set
/// or by a scaled-down pod (or by nothing), so the controller reference cannot say.
fn selecting_sets(
    claim: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    sets: &Store<StatefulSet>,
) -> Vec<ObjectRef<StatefulSet>> {
    sets.state()
        .iter()
        .filter(|s| s.metadata.namespace == claim.namespace)
        .filter(|s| {
            pods::selector(selector_of(s), "StatefulSet")
                .is_ok_and(|sel| pods::selects(&sel, claim.labels.as_ref()))
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The one reconcile: claim the set's revisions and pods, settle the update revision, carry
/// out the plan unless the cache has not shown the last writes, write the status, trim the
/// history.
async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    runtime::synced(&ctx.pods, "pod").await?;
    runtime::synced(&ctx.claims, "persistentvolumeclaim").await?;
    runtime::synced(&ctx.revisions, "controllerrevision").await?;
    runtime::synced(&ctx.services, "service").await?;
    let namespace = set
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| Error::Incomplete("StatefulSet".into(), "metadata.namespace"))?;
    let name = set
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::Incomplete("StatefulSet".into(), "metadata.name"))?;
    let uid = set.metadata.uid.clone().ok_or_else(|| {
        Error::Incomplete(format!("StatefulSet {namespace}/{name}"), "metadata.uid")
    })?;
    let describe = format!("StatefulSet {namespace}/{name}");
    let selector = pods::selector(selector_of(&set), &describe)?;
    let set_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let revision_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);

    // Revisions: adopt orphans the selector selects, release those it no longer does.
    let all_revisions = ctx.revisions.state();
    let in_namespace = all_revisions
        .iter()
        .map(AsRef::as_ref)
        .filter(|r: &&ControllerRevision| r.metadata.namespace.as_deref() == Some(&namespace));
    let claims = claim::claim(&set.metadata, &selector, in_namespace);
    let mut revisions: Vec<ControllerRevision> = claims.owned.into_iter().cloned().collect();
    if !claims.adopt.is_empty() {
        claim::ensure_can_adopt(&set_api, &set).await?;
        let reference = pods::controller_reference(&set.metadata, "apps/v1", "StatefulSet")?;
        for revision in claims.adopt {
            revisions.extend(claim::adopt(&revision_api, revision, &reference).await?);
        }
    }
    for revision in claims.release {
        claim::release(&revision_api, revision, &uid).await?;
    }

    // Pods: only `<set>-<ordinal>` ones are the set's (upstream's `isMemberOf`).
    let all_pods = ctx.pods.state();
    let pods_in_namespace: Vec<&Pod> = all_pods
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.namespace.as_deref() == Some(&namespace))
        .collect();
    let claims = claim::claim(&set.metadata, &selector, pods_in_namespace.iter().copied());
    let (mut owned, strayed): (Vec<&Pod>, Vec<&Pod>) = claims
        .owned
        .into_iter()
        .partition(|p| identity::is_member(&set, p));
    let adopt: Vec<&Pod> = claims
        .adopt
        .into_iter()
        .filter(|p| identity::is_member(&set, p))
        .collect();
    if !adopt.is_empty() {
        claim::ensure_can_adopt(&set_api, &set).await?;
        let reference = pods::controller_reference(&set.metadata, "apps/v1", "StatefulSet")?;
        for pod in adopt {
            if claim::adopt(&pod_api, pod, &reference).await?.is_some() {
                owned.push(pod);
            }
        }
    }
    for pod in claims.release.into_iter().chain(strayed) {
        claim::release(&pod_api, pod, &uid).await?;
    }

    // The update revision: the newest if it restores the template, an older one renumbered
    // (a rollback), or a new one.
    let mut sorted: Vec<&ControllerRevision> = revisions.iter().collect();
    history::sort(&mut sorted);
    let selection = history::select(&set, &sorted)?;
    let mut collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let update = match selection.update {
        history::UpdateRevision::Latest(name) => sorted
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(&name))
            .map(|r| (*r).clone())
            .ok_or_else(|| Error::Invalid(format!("revision {name} vanished")))?,
        history::UpdateRevision::Renumber { name, revision } => {
            let patch = json!({"revision": revision});
            revision_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?
        }
        history::UpdateRevision::Create(candidate) => {
            create_revision(
                &revision_api,
                &set,
                candidate.revision,
                &mut collision_count,
            )
            .await?
        }
    };
    let update_name = update.metadata.name.clone().unwrap_or_default();
    revisions.retain(|r| r.metadata.name.as_deref() != Some(&update_name));
    revisions.push(update.clone());
    let mut sorted: Vec<&ControllerRevision> = revisions.iter().collect();
    history::sort(&mut sorted);
    let current = selection
        .current
        .as_deref()
        .and_then(|c| {
            sorted
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(c))
        })
        .map_or(&update, |r| *r);
    let current_name = current.metadata.name.clone().unwrap_or_default();
    let fallback = history::set_template(&set);
    let update_template = history::template_of(&update).unwrap_or_else(|| fallback.clone());
    let current_template = history::template_of(current).unwrap_or_else(|| fallback.clone());

    let claims_state = ctx.claims.state();
    let claims_by_name: BTreeMap<String, &PersistentVolumeClaim> = claims_state
        .iter()
        .map(AsRef::as_ref)
        .filter(|c: &&PersistentVolumeClaim| c.metadata.namespace.as_deref() == Some(&namespace))
        .filter_map(|c| Some((c.metadata.name.clone()?, c)))
        .collect();
    let observed = plan::Observed {
        set: &set,
        pods: &owned,
        claims: &claims_by_name,
        current: plan::Revision {
            name: &current_name,
            template: &current_template,
        },
        update: plan::Revision {
            name: &update_name,
            template: &update_template,
        },
        collision_count,
        now: Timestamp::now(),
    };
    let mut plan = plan::plan(&observed)?;

    let satisfied = ctx.expectations.satisfied(
        &uid,
        |created| {
            pods_in_namespace
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(created))
        },
        |deleted| {
            !pods_in_namespace.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(deleted)
                    && p.metadata.deletion_timestamp.is_none()
            })
        },
    );
    let applied = if satisfied {
        if let Some(waiting) = &plan.waiting {
            tracing::debug!(statefulset = %name, %waiting, "statefulset waits");
        }
        let writer = Writer {
            ctx: &ctx,
            set: &set,
            uid: &uid,
            pods: &pod_api,
            claims: &claim_api,
        };
        writer.apply(plan.take_batches()).await
    } else {
        Ok(())
    };

    if plan::status_changed(&set, &plan.status) {
        write_status(&set_api, &name, &plan.status).await?;
    }
    for old in history::to_truncate(&set, &sorted, &current_name, &update_name, &owned) {
        let Some(old_name) = old.metadata.name.as_deref() else {
            continue;
        };
        match revision_api
            .delete(old_name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    warn_without_headless_service(&ctx, &set).await;
    applied?;
    let requeue = plan.requeue_after.map_or(RESYNC, |after| {
        after.min(RESYNC) + Duration::from_millis(100)
    });
    Ok(Requeue::requeue(requeue))
}

/// Creates the revision of the set's template numbered `number` (upstream's
/// `CreateControllerRevision`): a name taken by an equal revision is that revision; by a
/// different one, a hash collision, which the collision count resolves.
async fn create_revision(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    number: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision, Error> {
    for _ in 0..MAX_COLLISIONS {
        let revision = history::new_revision(set, number, *collision_count)?;
        let name = revision.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &revision).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let existing = api.get(&name).await?;
                if history::equal(&existing, &revision) {
                    return Ok(existing);
                }
                *collision_count = collision_count.saturating_add(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Invalid(format!(
        "StatefulSet {}: {MAX_COLLISIONS} revision name collisions",
        set.metadata.name.as_deref().unwrap_or_default()
    )))
}

/// Carries out a plan's batches one after another, the sequences of a batch concurrently;
/// a batch with a failure ends it (upstream's `slowStartBatch`), with its first error.
struct Writer<'a> {
    ctx: &'a Context,
    set: &'a StatefulSet,
    uid: &'a str,
    pods: &'a Api<Pod>,
    claims: &'a Api<PersistentVolumeClaim>,
}

impl Writer<'_> {
    fn set_name(&self) -> &str {
        self.set.metadata.name.as_deref().unwrap_or_default()
    }

    fn describe(&self) -> String {
        let namespace = self.set.metadata.namespace.as_deref().unwrap_or_default();
        format!("StatefulSet {namespace}/{}", self.set_name())
    }

    async fn event(&self, type_: &str, reason: &str, message: &str) {
        self.ctx
            .events
            .record(self.set, type_, reason, message)
            .await;
    }

    async fn apply(&self, batches: plan::Batches) -> Result<(), Error> {
        for batch in batches {
            let results = future::join_all(batch.into_iter().map(|s| self.run(s))).await;
            if let Some(error) = results.into_iter().find_map(Result::err) {
                return Err(error);
            }
        }
        Ok(())
    }

    /// One sequence, in order; the first failure ends it.
    async fn run(&self, actions: Vec<Action>) -> Result<(), Error> {
        for action in actions {
            self.apply_one(action).await?;
        }
        Ok(())
    }

    async fn apply_one(&self, action: Action) -> Result<(), Error> {
        match action {
            Action::CreatePod { pod, claims } => {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                self.create_claims(&pod_name, &claims).await?;
                self.create_pod(&pod).await?;
            }
            Action::CreateClaims { pod, claims } => self.create_claims(&pod, &claims).await?,
            Action::DeletePod { name, uid, why } => self.delete_pod(&name, &uid, why).await?,
            Action::LabelPod { name, uid, labels } => {
                let patch = json!({"metadata": {"labels": labels, "uid": uid}});
                match self
                    .pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Action::SetClaimOwners { claim } => {
                let name = claim.metadata.name.clone().unwrap_or_default();
                match self
                    .claims
                    .replace(&name, &PostParams::default(), &claim)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    async fn create_claims(
        &self,
        pod: &str,
        claims: &[PersistentVolumeClaim],
    ) -> Result<(), Error> {
        let set_name = self.set_name();
        for claim in claims {
            let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
            match self.claims.create(&PostParams::default(), claim).await {
                Ok(_) => {
                    let message = format!(
                        "create Claim {claim_name} Pod {pod} in StatefulSet {set_name} success"
                    );
                    self.event("Normal", "SuccessfulCreate", &message).await;
                }
                // The cache has not shown it yet: it is the claim we want.
                Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                Err(source) => {
                    let message = format!(
                        "create Claim {claim_name} for Pod {pod} in StatefulSet {set_name} failed error: {}",
                        api_message(&source)
                    );
                    self.event("Warning", "FailedCreate", &message).await;
                    return Err(Error::FailedCreate {
                        owner: self.describe(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn create_pod(&self, pod: &Pod) -> Result<(), Error> {
        let set_name = self.set_name();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        match self.pods.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.ctx
                    .expectations
                    .expect_created(self.uid, [pod_name.clone()]);
                let message = format!("create Pod {pod_name} in StatefulSet {set_name} successful");
                self.event("Normal", "SuccessfulCreate", &message).await;
                Ok(())
            }
            // The old pod of this name is still there (the cache is behind): never a second
            // one; the next reconcile sees it.
            Err(kube::Error::Api(s)) if s.is_already_exists() => Err(kube::Error::Api(s).into()),
            Err(source) => {
                let message = format!(
                    "create Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                    api_message(&source)
                );
                self.event("Warning", "FailedCreate", &message).await;
                Err(Error::FailedCreate {
                    owner: self.describe(),
                    source,
                })
            }
        }
    }

    async fn delete_pod(&self, name: &str, pod_uid: &str, why: Why) -> Result<(), Error> {
        let set_name = self.set_name();
        if why == Why::Failed {
            let namespace = self.set.metadata.namespace.as_deref().unwrap_or_default();
            let message =
                format!("StatefulSet {namespace}/{set_name} is recreating failed Pod {name}");
            self.event("Warning", "RecreatingFailedPod", &message).await;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod_uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods.delete(name, &params).await {
            Ok(_) => {
                self.ctx
                    .expectations
                    .expect_deleted(self.uid, [pod_uid.to_string()]);
                let message = format!("delete Pod {name} in StatefulSet {set_name} successful");
                self.event("Normal", "SuccessfulDelete", &message).await;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(source) => {
                let message = format!(
                    "delete Pod {name} in StatefulSet {set_name} failed error: {}",
                    api_message(&source)
                );
                self.event("Warning", "FailedDelete", &message).await;
                Err(Error::FailedDelete {
                    owner: self.describe(),
                    source,
                })
            }
        }
    }
}

/// Writes `status` through the status subresource. A merge patch names every field the
/// controller owns, so it needs no resourceVersion; conditions are left as they are.
async fn write_status(
    api: &Api<StatefulSet>,
    name: &str,
    status: &StatefulSetStatus,
) -> Result<(), Error> {
    let patch = json!({
        "status": {
            "replicas": status.replicas,
            "readyReplicas": status.ready_replicas,
            "currentReplicas": status.current_replicas,
            "updatedReplicas": status.updated_replicas,
            "availableReplicas": status.available_replicas,
            "currentRevision": status.current_revision,
            "updateRevision": status.update_revision,
            "observedGeneration": status.observed_generation,
            "collisionCount": status.collision_count,
        }
    });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A set whose serviceName names no headless Service still runs, but its pods' DNS names
/// will not resolve: say so once per generation, as a Warning event on the set.
async fn warn_without_headless_service(ctx: &Context, set: &StatefulSet) {
    let Some(service) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
    let found = ctx.services.get(&ObjectRef::new(service).within(namespace));
    let headless = found.as_ref().is_some_and(|s| {
        s.spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .is_some_and(|ip| ip == "None")
    });
    if headless {
        return;
    }
    let key = (
        set.metadata.uid.clone().unwrap_or_default(),
        set.metadata.generation.unwrap_or(0),
    );
    if !ctx
        .warned
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key)
    {
        return;
    }
    let what = if found.is_some() {
        format!("Service {namespace}/{service} is not headless (clusterIP: None)")
    } else {
        format!("Service {namespace}/{service} does not exist")
    };
    let name = set.metadata.name.as_deref().unwrap_or_default();
    let message = format!(
        "{what}: the pods' DNS names such as {name}-0.{service}.{namespace}.svc.cluster.local will not resolve until a headless Service named {service} selects them"
    );
    ctx.events
        .record(set, "Warning", "HeadlessServiceMissing", &message)
        .await;
}
