//! The deleter (external-provisioner's other half): a volume one of our provisioners made on
//! this node, with reclaim policy Delete, that no live claim holds any more (Released, its
//! claim gone, or itself being deleted while unbound) loses its backing storage — refused,
//! and retried with back-off, while it is still mounted — then our finalizer, then the
//! PersistentVolume object. A Retain volume being deleted only loses our finalizer: its data
//! stays, as promised.
//!
//! [`decide`] is pure; `reconcile` re-reads the claim live before it believes the cache that
//! the claim is gone (a cache behind the server must never cost a user their data).

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::StorageError;
use crate::local::Storage;
use crate::names::{self, Layout, Provisioner, VolumeName};
use crate::runtime::{self, Events};

/// What to do with a volume.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours, not this node's, still claimed, or Retain and not being deleted.
    Skip,
    /// Remove its backing storage, then the finalizer, then the object. With
    /// `confirm_claim_gone`, only once a live read confirms the claim is gone.
    Reclaim {
        provisioner: Provisioner,
        name: VolumeName,
        confirm_claim_gone: bool,
    },
    /// Being deleted under a policy that keeps the data: only drop our finalizer.
    ReleaseFinalizer,
    /// Ours, but its source is not what we make; never touched (the message says why).
    Refuse(String),
}

/// The provisioner that made `volume`, if ours.
pub fn provisioner_of(volume: &PersistentVolume) -> Option<Provisioner> {
    volume
        .metadata
        .annotations
        .as_ref()?
        .get(names::ANN_PROVISIONED_BY)
        .and_then(|name| Provisioner::from_name(name))
}

/// The node names the volume's required node affinity admits by hostname.
fn affinity_nodes(volume: &PersistentVolume) -> Vec<&str> {
    let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return Vec::new();
    };
    required
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .filter(|e| e.key == names::HOSTNAME_LABEL && e.operator == "In")
        .flat_map(|e| e.values.iter().flatten().map(String::as_str))
        .collect()
}

/// What the deleter on `node` does with `volume`; `claim` is the cached claim its claimRef
/// names (by namespace and name), if any.
pub fn decide(
    volume: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    node: &str,
    layout: &Layout,
) -> Decision {
    let Some(provisioner) = provisioner_of(volume) else {
        return Decision::Skip;
    };
    let Some(spec) = volume.spec.as_ref() else {
        return Decision::Skip;
    };
    if !affinity_nodes(volume).contains(&node) {
        return Decision::Skip;
    }
    let deleting = volume.metadata.deletion_timestamp.is_some();
    let has_finalizer = volume
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == names::FINALIZER);
    if spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete") {
        return if deleting && has_finalizer {
            Decision::ReleaseFinalizer
        } else {
            Decision::Skip
        };
    }
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    let claim_gone = spec.claim_ref.as_ref().is_some_and(|reference| {
        claim.is_none_or(|c| c.metadata.uid.is_some() && c.metadata.uid != reference.uid)
    });
    let released = phase == Some("Released") || (deleting && phase != Some("Bound"));
    if !released && !claim_gone {
        return Decision::Skip;
    }
    let name = match VolumeName::parse(volume.metadata.name.as_deref().unwrap_or_default()) {
        Ok(name) => name,
        Err(e) => return Decision::Refuse(e.to_string()),
    };
    // Only what we would have made for this name is removed, whatever the object says.
    let ours = match provisioner {
        Provisioner::LocalPath => spec
            .local
            .as_ref()
            .is_some_and(|l| std::path::Path::new(&l.path) == layout.local_path(&name)),
        Provisioner::LocalExt4 => spec.csi.as_ref().is_some_and(|c| {
            c.driver == names::LOCAL_EXT4_DRIVER && c.volume_handle == name.as_str()
        }),
    };
    if !ours {
        return Decision::Refuse(format!(
            "volume {name} does not point at the storage {} made for it",
            provisioner.name()
        ));
    }
    Decision::Reclaim {
        provisioner,
        name,
        confirm_claim_gone: !released,
    }
}

/// What every reconcile shares.
struct Context {
    client: Client,
    node: String,
    storage: Arc<Storage>,
    claims: Store<PersistentVolumeClaim>,
    events: Events<PersistentVolume>,
}

/// Runs the deleter of `node` until `stop` resolves.
pub async fn run(
    client: Client,
    node: String,
    storage: Arc<Storage>,
    stop: impl Future<Output = ()>,
) {
    let (volumes, volume_events) = runtime::reflector::<PersistentVolume>(&client);
    let (claims, claim_events) = runtime::reflector::<PersistentVolumeClaim>(&client);
    let bound = volumes.clone();
    let triggers = vec![
        runtime::trigger_self(volume_events),
        // A claim's change (its deletion above all) wakes the volumes that name it.
        runtime::trigger_mapped(claim_events, move |claim: PersistentVolumeClaim| {
            bound
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
                .collect::<Vec<_>>()
        }),
    ];
    let context = Arc::new(Context {
        events: Events::new(client.clone(), "berth-storage", &node, volumes.clone()),
        client,
        node,
        storage,
        claims,
    });
    runtime::run("deleter", reconcile, context, volumes, triggers, stop).await;
}

async fn reconcile(
    volume: Arc<PersistentVolume>,
    ctx: Arc<Context>,
) -> Result<Action, StorageError> {
    runtime::synced(&ctx.claims, "PersistentVolumeClaim").await?;
    let claim = crate::provisioner::claim_of(&volume).and_then(|r| ctx.claims.get(&r));
    match decide(&volume, claim.as_deref(), &ctx.node, ctx.storage.layout()) {
        Decision::Skip => Ok(Action::await_change()),
        Decision::Refuse(message) => {
            ctx.events
                .record(&volume, "Warning", "VolumeFailedDelete", &message)
                .await;
            Err(StorageError::Invalid(message))
        }
        Decision::ReleaseFinalizer => {
            remove_finalizer(&volume, &ctx.client).await?;
            Ok(Action::await_change())
        }
        Decision::Reclaim {
            provisioner,
            name,
            confirm_claim_gone,
        } => {
            if confirm_claim_gone && claim_still_there(&volume, &ctx.client).await? {
                return Ok(Action::await_change());
            }
            let storage = ctx.storage.clone();
            if let Err(error) = runtime::blocking(move || storage.delete(provisioner, &name)).await
            {
                ctx.events
                    .record(&volume, "Warning", "VolumeFailedDelete", &error.to_string())
                    .await;
                return Err(error);
            }
            remove_finalizer(&volume, &ctx.client).await?;
            if volume.metadata.deletion_timestamp.is_none() {
                let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: volume.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api
                    .delete(volume.metadata.name.as_deref().unwrap_or_default(), &params)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Action::await_change())
        }
    }
}

/// The claim the volume's claimRef names still exists, with that uid, on the server.
async fn claim_still_there(
    volume: &PersistentVolume,
    client: &Client,
) -> Result<bool, StorageError> {
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Ok(false);
    };
    let (Some(namespace), Some(name)) = (reference.namespace.as_deref(), reference.name.as_deref())
    else {
        return Ok(false);
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let live = api.get_opt(name).await?;
    Ok(live.is_some_and(|c| reference.uid.is_none() || c.metadata.uid == reference.uid))
}

/// Our finalizer off the volume (a merge patch of the rest of the list, guarded by the
/// resourceVersion it was computed from, so a finalizer added meanwhile is not lost).
async fn remove_finalizer(volume: &PersistentVolume, client: &Client) -> Result<(), StorageError> {
    let finalizers: Vec<&String> = volume.metadata.finalizers.iter().flatten().collect();
    if !finalizers.iter().any(|f| *f == names::FINALIZER) {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers
        .into_iter()
        .filter(|f| *f != names::FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": volume.metadata.resource_version,
            "finalizers": rest,
        }
    });
    let api: Api<PersistentVolume> = Api::all(client.clone());
    match api
        .patch(
            volume.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provisioner::tests::{UID, claim, class};
    use crate::provisioner::volume;
    use k8s_openapi::api::core::v1::PersistentVolumeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::path::Path;

    fn layout() -> Layout {
        Layout::new(Path::new("/d"))
    }

    fn provisioned(
        provisioner: Provisioner,
        phase: &str,
    ) -> (PersistentVolume, PersistentVolumeClaim) {
        let c = claim(Some(provisioner.name()), "sc", Some("node1"));
        let sc = class("sc", provisioner.name(), "WaitForFirstConsumer");
        let mut pv = volume(&c, &sc, provisioner, "node1", &layout()).expect("volume");
        pv.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        (pv, c)
    }

    fn reclaim(provisioner: Provisioner, confirm: bool) -> Decision {
        Decision::Reclaim {
            provisioner,
            name: VolumeName::for_claim(UID).expect("name"),
            confirm_claim_gone: confirm,
        }
    }

    #[test]
    fn released_delete_volumes_are_reclaimed_bound_ones_never() {
        for p in [Provisioner::LocalPath, Provisioner::LocalExt4] {
            let (pv, c) = provisioned(p, "Released");
            assert_eq!(decide(&pv, None, "node1", &layout()), reclaim(p, false));
            assert_eq!(
                decide(&pv, None, "node2", &layout()),
                Decision::Skip,
                "another node's data"
            );
            let (pv, _) = provisioned(p, "Bound");
            assert_eq!(decide(&pv, Some(&c), "node1", &layout()), Decision::Skip);
        }
    }

    #[test]
    fn a_gone_claim_is_confirmed_live_first() {
        let (pv, c) = provisioned(Provisioner::LocalPath, "Bound");
        assert_eq!(
            decide(&pv, None, "node1", &layout()),
            reclaim(Provisioner::LocalPath, true)
        );
        let mut replaced = c.clone();
        replaced.metadata.uid = Some("another".into());
        assert_eq!(
            decide(&pv, Some(&replaced), "node1", &layout()),
            reclaim(Provisioner::LocalPath, true)
        );
        assert_eq!(decide(&pv, Some(&c), "node1", &layout()), Decision::Skip);
    }

    #[test]
    fn retain_keeps_the_data_and_only_lets_the_object_go() {
        let (mut pv, _) = provisioned(Provisioner::LocalExt4, "Released");
        if let Some(spec) = pv.spec.as_mut() {
            spec.persistent_volume_reclaim_policy = Some("Retain".into());
        }
        assert_eq!(decide(&pv, None, "node1", &layout()), Decision::Skip);
        pv.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            decide(&pv, None, "node1", &layout()),
            Decision::ReleaseFinalizer
        );
    }

    #[test]
    fn a_deleted_unbound_volume_is_reclaimed() {
        let (mut pv, c) = provisioned(Provisioner::LocalPath, "Available");
        pv.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            decide(&pv, Some(&c), "node1", &layout()),
            reclaim(Provisioner::LocalPath, false)
        );
    }

    #[test]
    fn volumes_not_ours_or_pointing_elsewhere_are_left_alone() {
        let (mut pv, _) = provisioned(Provisioner::LocalPath, "Released");
        if let Some(a) = pv.metadata.annotations.as_mut() {
            a.insert(
                names::ANN_PROVISIONED_BY.into(),
                "rancher.io/local-path".into(),
            );
        }
        assert_eq!(decide(&pv, None, "node1", &layout()), Decision::Skip);

        let (mut pv, _) = provisioned(Provisioner::LocalPath, "Released");
        if let Some(local) = pv.spec.as_mut().and_then(|s| s.local.as_mut()) {
            local.path = "/etc".into();
        }
        assert!(matches!(
            decide(&pv, None, "node1", &layout()),
            Decision::Refuse(_)
        ));

        let (mut pv, _) = provisioned(Provisioner::LocalExt4, "Released");
        pv.metadata.name = Some("../../x".into());
        assert!(matches!(
            decide(&pv, None, "node1", &layout()),
            Decision::Refuse(_)
        ));
    }
}
