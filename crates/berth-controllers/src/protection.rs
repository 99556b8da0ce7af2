//! The storage protection controllers, as upstream's `pvcprotection` and `pvprotection`: the
//! API server puts `kubernetes.io/pvc-protection` on every claim and
//! `kubernetes.io/pv-protection` on every volume, so deleting one only marks it; these remove
//! the finalizer once deleting is safe.
//!
//! - A claim being deleted loses its finalizer once no pod of its namespace that has not
//!   terminated (phase not Succeeded or Failed) uses it — as a `persistentVolumeClaim`
//!   volume, or as the claim of a generic ephemeral volume (`<pod>-<volume>`, controlled by
//!   the pod). Pods not scheduled yet count too: berth does not rely on the node refusing a
//!   claim being deleted, as upstream does for them. When the pod cache shows no user, a live
//!   list of the namespace's pods must agree (upstream's double check), since a pod created a
//!   moment ago may not be in the cache yet.
//! - A volume being deleted loses its finalizer once its phase is not Bound.
//!
//! Shape: two loops of the shared [`crate::runtime`] machinery. Claims are woken by their own
//! changes and by the changes of the pods that use them (a pod finishing or going away is
//! what frees a claim); volumes by their own changes. The finalizer is removed with a merge
//! patch of the finalizer list carrying the resourceVersion it was computed from, so a
//! concurrent change of the list conflicts and is retried instead of overwritten.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::runtime::{self, Backoff};
use crate::{Error, pods};

/// The finalizer that keeps a claim in use.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a bound volume.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How soon to look again when the live list found a user the cache did not show: its event
/// wakes the claim anyway once the cache has it; this is only the safety net.
const RECHECK: Duration = Duration::from_secs(2);

struct ClaimContext {
    client: Client,
    pods: Store<Pod>,
}

/// Runs both loops until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let stop = stop.shared();
    tokio::join!(
        run_claims(client.clone(), stop.clone()),
        run_volumes(client, stop),
    );
}

async fn run_claims(client: Client, stop: impl Future<Output = ()>) {
    let (claims, claim_events) = runtime::reflector::<PersistentVolumeClaim>(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);
    let context = Arc::new(ClaimContext { client, pods });
    let triggers = vec![
        runtime::trigger_self(claim_events),
        runtime::trigger_mapped(pod_events, |pod: Pod| {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            claims_of(&pod)
                .into_iter()
                .map(|name| ObjectRef::new(&name).within(&namespace))
                .collect::<Vec<_>>()
        }),
    ];
    runtime::run(
        "pvc-protection",
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
    runtime::run(
        "pv-protection",
        reconcile_volume,
        Arc::new(client),
        volumes,
        vec![runtime::trigger_self(volume_events)],
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// Being deleted and still held by `finalizer`: the only state these controllers act on.
fn held(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_some()
        && meta
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// The pod has terminated: it will never use a volume again.
fn terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The names of the claims the pod's volumes refer to: `persistentVolumeClaim` sources, and
/// the claim of each generic ephemeral volume (`<pod>-<volume>`).
pub fn claims_of(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(source) = &v.persistent_volume_claim {
                Some(source.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// The pod, not terminated, uses the claim: by name, or as its ephemeral volume's claim —
/// which counts only when the pod controls that claim (another claim of that name is a
/// user's, which the pod would refuse to use).
pub fn uses(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    if terminated(pod) || pod.metadata.namespace != claim.metadata.namespace {
        return false;
    }
    let Some(claim_name) = claim.metadata.name.as_deref() else {
        return false;
    };
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .any(|v| {
            if let Some(source) = &v.persistent_volume_claim {
                source.claim_name == claim_name
            } else if v.ephemeral.is_some() {
                format!("{pod_name}-{}", v.name) == claim_name
                    && pods::controller_of(&claim.metadata)
                        .is_some_and(|owner| Some(&owner.uid) == pod.metadata.uid.as_ref())
            } else {
                false
            }
        })
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<ClaimContext>,
) -> Result<Action, Error> {
    if !held(&claim.metadata, PVC_PROTECTION) {
        return Ok(Action::await_change());
    }
    runtime::synced(&ctx.pods, "pod").await?;
    if ctx.pods.state().iter().any(|pod| uses(pod, &claim)) {
        return Ok(Action::await_change());
    }
    let namespace =
        claim.metadata.namespace.as_deref().ok_or_else(|| {
            Error::Incomplete("PersistentVolumeClaim".into(), "metadata.namespace")
        })?;
    let live: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = live.list(&ListParams::default()).await?;
    if listed.items.iter().any(|pod| uses(pod, &claim)) {
        return Ok(Action::requeue(RECHECK));
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    release(&api, claim.as_ref(), PVC_PROTECTION).await?;
    Ok(Action::await_change())
}

async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    client: Arc<Client>,
) -> Result<Action, Error> {
    if !held(&volume.metadata, PV_PROTECTION) {
        return Ok(Action::await_change());
    }
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase == Some("Bound") {
        return Ok(Action::await_change());
    }
    let api: Api<PersistentVolume> = Api::all((*client).clone());
    release(&api, volume.as_ref(), PV_PROTECTION).await?;
    Ok(Action::await_change())
}

/// Removes `finalizer` from `object`'s finalizers (as the cache showed them, at that
/// resourceVersion). Gone meanwhile is fine: nothing is left to hold.
async fn release<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let kind = K::kind(&());
    let stored = crate::error::Stored::new(&kind, meta);
    let name = stored.name()?;
    let version = stored.resource_version()?;
    let rest: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let patch = json!({"metadata": {"resourceVersion": version, "finalizers": rest}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::debug!(object = name, finalizer, "finalizer removed");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EphemeralVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, PodStatus, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(name: &str, phase: &str, volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn pvc_volume(name: &str, claim: &str) -> Volume {
        Volume {
            name: name.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: None,
            }),
            ..Default::default()
        }
    }

    fn ephemeral(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        }
    }

    fn claim(name: &str, owner: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: "p".into(),
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

    #[test]
    fn only_pods_that_have_not_terminated_hold_a_claim() {
        let data = claim("data", None);
        for (phase, holds) in [
            ("Pending", true),
            ("Running", true),
            ("Unknown", true),
            ("Succeeded", false),
            ("Failed", false),
        ] {
            let p = pod("p", phase, vec![pvc_volume("v", "data")]);
            assert_eq!(uses(&p, &data), holds, "{phase}");
        }
        let other = pod("p", "Running", vec![pvc_volume("v", "other")]);
        assert!(!uses(&other, &data));
        let mut elsewhere = pod("p", "Running", vec![pvc_volume("v", "data")]);
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!uses(&elsewhere, &data));
    }

    #[test]
    fn an_ephemeral_claim_is_held_by_the_pod_that_controls_it() {
        let p = pod("p", "Running", vec![ephemeral("scratch")]);
        assert_eq!(claims_of(&p), ["p-scratch"]);
        assert!(uses(&p, &claim("p-scratch", Some("uid-p"))));
        assert!(!uses(&p, &claim("p-scratch", Some("uid-someone-else"))));
        assert!(!uses(&p, &claim("p-scratch", None)));
    }

    #[test]
    fn only_objects_being_deleted_with_the_finalizer_are_acted_on() {
        let mut meta = ObjectMeta {
            finalizers: Some(vec![PVC_PROTECTION.into()]),
            ..Default::default()
        };
        assert!(!held(&meta, PVC_PROTECTION));
        meta.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(held(&meta, PVC_PROTECTION));
        assert!(!held(&meta, PV_PROTECTION));
    }
}
