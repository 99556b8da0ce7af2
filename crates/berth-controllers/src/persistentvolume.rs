//! The PersistentVolume controller: it binds claims to volumes and keeps both sides' phases,
//! as upstream's `pkg/controller/volume/persistentvolume` does (its binding half; provisioning
//! and deleting are the provisioners' in berth-storage, per the storage contract).
//!
//! - A Pending claim binds to the volume pre-bound to it (its `spec.claimRef`) or else the
//!   smallest Available volume that satisfies its class, access modes, size, volume mode,
//!   selector and — once the scheduler chose a node (`volume.kubernetes.io/selected-node`) —
//!   whose node affinity admits that node ([`matching`]). A claim naming a volume
//!   (`spec.volumeName`) gets that one or nothing.
//! - Binding writes the volume's claimRef (with the claim's uid), the volume's phase Bound, the
//!   claim's `spec.volumeName` with `pv.kubernetes.io/bind-completed` (and
//!   `pv.kubernetes.io/bound-by-controller` on whichever side the controller chose), then the
//!   claim's phase Bound with the volume's capacity and access modes. A bound pair never
//!   changes partner: a bound claim whose volume is gone or taken is Lost.
//! - A claim with no match whose class has a provisioner is handed to it
//!   (`volume.kubernetes.io/storage-provisioner`, event ExternalProvisioning), unless the class
//!   waits for a consumer and none is scheduled yet (event WaitForFirstConsumer).
//! - A volume whose claim is gone is reclaimed: Retain → Released; Delete → Released for its
//!   external deleter (berth's provisioners), else Failed; Recycle → Failed (deprecated).
//!
//! Shape: two loops of the shared [`crate::runtime`] machinery, as upstream's two queues: one
//! over claims (woken by their own changes, by any volume or StorageClass change for claims
//! still unbound, and by a volume change for the claim it names) and one over volumes (woken
//! by their own changes and their claim's). The decisions are pure ([`decide`]); the writes
//! are merge patches carrying the resourceVersion they were planned from, spec through the
//! object and phases through the status subresource, so a stale cache conflicts and retries
//! instead of binding one volume twice.

pub mod decide;
pub mod matching;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::runtime::{self, Backoff, Events};
use decide::{
    BETA_STORAGE_PROVISIONER, BIND_COMPLETED, BOUND_BY_CONTROLLER, ClaimPlan, SELECTED_NODE,
    STORAGE_PROVISIONER, VolumePlan,
};
use matching::{HOSTNAME_LABEL, NodeView, annotation};

/// The component its events carry, as upstream's.
const COMPONENT: &str = "persistentvolume-controller";

/// Back-off after a failure (mostly conflicts with a cache that is behind): short, since the
/// retry usually succeeds at once, doubling up to half a minute.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the claim loop reads.
struct ClaimContext {
    client: Client,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    nodes: Store<Node>,
    events: Events<PersistentVolumeClaim>,
}

/// What the volume loop reads.
struct VolumeContext {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    events: Events<PersistentVolume>,
}

/// Runs both loops until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let stop = stop.shared();
    tokio::join!(
        run_claims(client.clone(), stop.clone()),
        run_volumes(client, stop),
    );
}

/// Claims that no binding is complete for yet: the ones a new or changed volume or class may
/// concern.
fn unbound_claims(claims: &Store<PersistentVolumeClaim>) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    claims
        .state()
        .iter()
        .filter(|c| !decide::bind_completed(c))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

async fn run_claims(client: Client, stop: impl Future<Output = ()>) {
    let (claims, claim_events) = runtime::reflector::<PersistentVolumeClaim>(&client);
    let (volumes, volume_events) = runtime::reflector::<PersistentVolume>(&client);
    let (classes, class_events) = runtime::reflector::<StorageClass>(&client);
    let (nodes, node_events) = runtime::reflector::<Node>(&client);
    let context = Arc::new(ClaimContext {
        client: client.clone(),
        volumes,
        classes,
        nodes,
        events: Events::new(client, COMPONENT, claims.clone()),
    });
    let (for_volumes, for_classes, for_nodes) = (claims.clone(), claims.clone(), claims.clone());
    let triggers = vec![
        runtime::trigger_self(claim_events),
        runtime::trigger_mapped(volume_events, move |volume: PersistentVolume| {
            let mut wake = unbound_claims(&for_volumes);
            if let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
                && let (Some(name), Some(namespace)) = (&r.name, &r.namespace)
            {
                wake.push(ObjectRef::new(name).within(namespace));
            }
            wake
        }),
        runtime::trigger_mapped(class_events, move |_: StorageClass| {
            unbound_claims(&for_classes)
        }),
        // A node's labels decide which local volumes its claims may take.
        runtime::trigger_mapped(node_events, move |node: Node| {
            let name = node.metadata.name.unwrap_or_default();
            for_nodes
                .state()
                .iter()
                .filter(|c| !decide::bind_completed(c))
                .filter(|c| annotation(&c.metadata, SELECTED_NODE) == Some(name.as_str()))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }),
    ];
    runtime::run(
        "persistentvolume-claims",
        reconcile_claim,
        context,
        claims,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

async fn run_volumes(client: Client, stop: impl Future<Output = ()>) {
    let (volumes, volume_events) = runtime::reflector::<PersistentVolume>(&client);
    let (claims, claim_events) = runtime::reflector::<PersistentVolumeClaim>(&client);
    let context = Arc::new(VolumeContext {
        client: client.clone(),
        claims,
        events: Events::new(client, COMPONENT, volumes.clone()),
    });
    let partners = volumes.clone();
    let triggers = vec![
        runtime::trigger_self(volume_events),
        // A claim's change concerns the volume it names and every volume naming it.
        runtime::trigger_mapped(claim_events, move |claim: PersistentVolumeClaim| {
            let mut wake: Vec<ObjectRef<PersistentVolume>> = partners
                .state()
                .iter()
                .filter(|v| {
                    v.spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .is_some_and(|r| {
                            r.name == claim.metadata.name && r.namespace == claim.metadata.namespace
                        })
                })
                .map(|v| ObjectRef::from_obj(v.as_ref()))
                .collect();
            if let Some(name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                && !name.is_empty()
            {
                wake.push(ObjectRef::new(name));
            }
            wake
        }),
    ];
    runtime::run(
        "persistentvolume-volumes",
        reconcile_volume,
        context,
        volumes,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

fn key(claim: &PersistentVolumeClaim) -> Result<(&str, &str, &str), Error> {
    let stored = crate::error::Stored::new("PersistentVolumeClaim", &claim.metadata);
    Ok((
        stored.namespace()?,
        stored.name()?,
        stored.resource_version()?,
    ))
}

fn volume_key(volume: &PersistentVolume) -> Result<(&str, &str), Error> {
    let stored = crate::error::Stored::new("PersistentVolume", &volume.metadata);
    Ok((stored.name()?, stored.resource_version()?))
}

/// The claim loop's one reconcile: [`decide::plan_claim`] over the caches, carried out.
async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<ClaimContext>,
) -> Result<Action, Error> {
    runtime::synced(&ctx.volumes, "persistentvolume").await?;
    runtime::synced(&ctx.classes, "storageclass").await?;
    runtime::synced(&ctx.nodes, "node").await?;
    if decide::needs_default_class(&claim) {
        let classes = ctx.classes.state();
        let classes: Vec<&StorageClass> = classes.iter().map(AsRef::as_ref).collect();
        if let Some(default) = decide::default_class(&classes) {
            assign_class(&ctx.client, &claim, default).await?;
            // The claim's own change brings it back here with its class.
            return Ok(Action::await_change());
        }
    }
    let class_name = matching::claim_class(&claim);
    let class = (!class_name.is_empty())
        .then(|| ctx.classes.get(&ObjectRef::new(class_name)))
        .flatten();
    let selected = annotation(&claim.metadata, SELECTED_NODE).filter(|n| !n.is_empty());
    let node = selected.map(|name| ctx.nodes.get(&ObjectRef::new(name)));
    // A node the cache does not show yet still has the label every berth Node has.
    let fallback: Option<BTreeMap<String, String>> =
        selected.map(|name| [(HOSTNAME_LABEL.to_string(), name.to_string())].into());
    let empty = BTreeMap::new();
    let node_view = match (selected, &node, &fallback) {
        (Some(name), Some(Some(node)), _) => Some(NodeView {
            name,
            labels: node.metadata.labels.as_ref().unwrap_or(&empty),
        }),
        (Some(name), _, Some(labels)) => Some(NodeView { name, labels }),
        _ => None,
    };
    let cached = ctx.volumes.state();
    let mut volumes: Vec<&PersistentVolume> = cached.iter().map(AsRef::as_ref).collect();
    let mut plan = decide::plan_claim(&claim, &volumes, class.as_deref(), node_view)?;

    // Before declaring a bound claim Lost for a volume the cache does not show, ask the API
    // server: the volume cache may be behind the claim cache.
    let live;
    if let ClaimPlan::Lost(_) = plan
        && let Some(name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref())
        && !name.is_empty()
        && !volumes
            .iter()
            .any(|v| v.metadata.name.as_deref() == Some(name))
    {
        let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
        live = api.get_opt(name).await?;
        if let Some(volume) = &live {
            volumes.push(volume);
            plan = decide::plan_claim(&claim, &volumes, class.as_deref(), node_view)?;
        }
    }

    match plan {
        ClaimPlan::Nothing => {}
        ClaimPlan::Bind(volume) => bind(&ctx, &claim, volume).await?,
        ClaimPlan::Pending { provisioner, event } => {
            let mut claim = (*claim).clone();
            if let Some(provisioner) = provisioner {
                claim = hand_to_provisioner(&ctx.client, &claim, &provisioner).await?;
            }
            if let Some(event) = event {
                ctx.events
                    .record(&claim, event.type_, event.reason, &event.message)
                    .await;
            }
            claim_status(&ctx.client, &claim, "Pending", None).await?;
        }
        ClaimPlan::Lost(event) => {
            ctx.events
                .record(&claim, event.type_, event.reason, &event.message)
                .await;
            claim_status(&ctx.client, &claim, "Lost", None).await?;
        }
    }
    Ok(Action::await_change())
}

/// Gives a claim without a class the default class `class`.
async fn assign_class(
    client: &Client,
    claim: &PersistentVolumeClaim,
    class: &str,
) -> Result<(), Error> {
    let (namespace, name, version) = key(claim)?;
    let patch =
        json!({"metadata": {"resourceVersion": version}, "spec": {"storageClassName": class}});
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Sets the claim's storage-provisioner annotations (current and legacy) to `provisioner`.
async fn hand_to_provisioner(
    client: &Client,
    claim: &PersistentVolumeClaim,
    provisioner: &str,
) -> Result<PersistentVolumeClaim, Error> {
    let (namespace, name, version) = key(claim)?;
    let patch = json!({"metadata": {
        "resourceVersion": version,
        "annotations": {
            STORAGE_PROVISIONER: provisioner,
            BETA_STORAGE_PROVISIONER: provisioner,
        },
    }});
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// The volume's claimRef names `claim` with its uid.
fn points_at(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name == claim.metadata.name
                && r.namespace == claim.metadata.namespace
                && r.uid.is_some()
                && r.uid == claim.metadata.uid
        })
}

/// upstream's `bind`: each of the four writes only if the object does not say it already, in
/// upstream's order (volume spec, volume phase, claim spec, claim phase), so a crash or a
/// conflict between them is finished by the next reconcile of either side.
async fn bind(
    ctx: &ClaimContext,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Result<(), Error> {
    let (namespace, claim_name, claim_version) = key(claim)?;
    let uid = claim
        .metadata
        .uid
        .as_deref()
        .ok_or_else(|| Error::Incomplete("PersistentVolumeClaim".into(), "metadata.uid"))?;
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut volume = volume.clone();
    if !points_at(&volume, claim) {
        let (name, version) = volume_key(&volume)?;
        let mut metadata = json!({"resourceVersion": version});
        // The controller chose this volume unless a user pre-bound it to the claim.
        if !matching::is_volume_bound_to_claim(&volume, claim) {
            metadata["annotations"] = json!({BOUND_BY_CONTROLLER: "yes"});
        }
        let patch = json!({
            "metadata": metadata,
            "spec": {"claimRef": {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": namespace,
                "name": claim_name,
                "uid": uid,
                "resourceVersion": claim_version,
            }},
        });
        volume = volumes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if decide::phase(&volume) != "Bound" {
        volume = volume_phase(&ctx.client, &volume, "Bound", None).await?;
    }
    let volume_name = volume_key(&volume)?.0;

    let mut claim = claim.clone();
    let named = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    let mut annotations = Map::new();
    if named != Some(volume_name) {
        annotations.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    if !decide::bind_completed(&claim) {
        annotations.insert(BIND_COMPLETED.into(), "yes".into());
    }
    if named != Some(volume_name) || !annotations.is_empty() {
        let patch = json!({
            "metadata": {"resourceVersion": claim_version, "annotations": annotations},
            "spec": {"volumeName": volume_name},
        });
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
        claim = api
            .patch(claim_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    claim_status(&ctx.client, &claim, "Bound", Some(&volume)).await?;
    tracing::debug!(claim = %format!("{namespace}/{claim_name}"), volume = volume_name, "bound");
    Ok(())
}

/// upstream's `updateClaimStatus`: the phase; without a volume, no access modes and no
/// capacity; with one, its access modes, and its capacity when the claim becomes Bound now
/// and the volume is larger than what the claim shows (later, a difference is the resizer's
/// business and is left alone). Written only when something differs.
async fn claim_status(
    client: &Client,
    claim: &PersistentVolumeClaim,
    phase: &str,
    volume: Option<&PersistentVolume>,
) -> Result<(), Error> {
    let status = claim.status.clone().unwrap_or_default();
    let mut patch = Map::new();
    let changing = status.phase.as_deref() != Some(phase);
    if changing {
        patch.insert("phase".into(), phase.into());
    }
    match volume {
        None => {
            if status.access_modes.is_some() {
                patch.insert("accessModes".into(), Value::Null);
            }
            if status.capacity.is_some() {
                patch.insert("capacity".into(), Value::Null);
            }
        }
        Some(volume) => {
            let spec = volume.spec.clone().unwrap_or_default();
            if status.access_modes != spec.access_modes {
                patch.insert(
                    "accessModes".into(),
                    serde_json::to_value(&spec.access_modes)?,
                );
            }
            if changing {
                let bytes =
                    |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                        q.and_then(|q| berth_client::quantity::value(&q.0))
                    };
                let has = status
                    .capacity
                    .as_ref()
                    .and_then(|c| bytes(c.get(matching::STORAGE)));
                let offered = spec
                    .capacity
                    .as_ref()
                    .and_then(|c| bytes(c.get(matching::STORAGE)));
                if offered.is_some() && (has.is_none() || offered > has) {
                    patch.insert("capacity".into(), serde_json::to_value(&spec.capacity)?);
                }
            }
        }
    }
    if patch.is_empty() {
        return Ok(());
    }
    let (namespace, name, version) = key(claim)?;
    let patch = json!({"metadata": {"resourceVersion": version}, "status": patch});
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
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

/// Writes the volume's phase and message (none clears it) through its status subresource,
/// with the time of the transition.
async fn volume_phase(
    client: &Client,
    volume: &PersistentVolume,
    phase: &str,
    message: Option<&str>,
) -> Result<PersistentVolume, Error> {
    let (name, version) = volume_key(volume)?;
    let now = serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))?;
    let patch = json!({
        "metadata": {"resourceVersion": version},
        "status": {"phase": phase, "message": message, "lastPhaseTransitionTime": now},
    });
    let api: Api<PersistentVolume> = Api::all(client.clone());
    Ok(api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// The volume loop's one reconcile: [`decide::plan_volume`] over the caches, carried out.
async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    ctx: Arc<VolumeContext>,
) -> Result<Action, Error> {
    runtime::synced(&ctx.claims, "persistentvolumeclaim").await?;
    let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let claim_ref = reference.and_then(|r| Some((r.namespace.as_deref()?, r.name.as_deref()?)));
    let cached = claim_ref.and_then(|(ns, name)| ctx.claims.get(&ObjectRef::new(name).within(ns)));
    let mut plan = decide::plan_volume(&volume, cached.as_deref());
    // Upstream's double check: a claim the cache does not show (yet) may well exist — a
    // provisioner's volume can arrive before its claim reaches this cache. Release only
    // what the API server says is gone.
    if let VolumePlan::Release { .. } = plan
        && let Some((namespace, name)) = claim_ref
    {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
        let live = api.get_opt(name).await?;
        plan = decide::plan_volume(&volume, live.as_ref());
    }
    match plan {
        VolumePlan::Nothing => {}
        VolumePlan::Phase {
            phase,
            message,
            event,
        }
        | VolumePlan::Release {
            phase,
            message,
            event,
        } => {
            if decide::phase(&volume) != phase {
                let updated = volume_phase(&ctx.client, &volume, phase, message.as_deref()).await?;
                if let Some(event) = event {
                    ctx.events
                        .record(&updated, event.type_, event.reason, &event.message)
                        .await;
                }
            }
        }
        VolumePlan::Unbind => {
            let (name, version) = volume_key(&volume)?;
            let patch = json!({
                "metadata": {"resourceVersion": version, "annotations": {BOUND_BY_CONTROLLER: null}},
                "spec": {"claimRef": null},
            });
            let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
            let updated = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            volume_phase(&ctx.client, &updated, "Available", None).await?;
        }
    }
    Ok(Action::await_change())
}
