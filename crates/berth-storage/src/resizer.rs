//! The resizer (external-resizer's job, with kubelet's file-system step folded in, since the
//! node is this process): a Bound claim on a local-ext4 volume whose class allows expansion
//! and whose request exceeds its volume's capacity gets its image grown, then the volume's
//! capacity raised, then — once the file system has grown too (online at once if the volume
//! is staged, else at its next stage) — the claim's `status.capacity`. While that is under
//! way the claim shows the condition Resizing, then FileSystemResizePending.
//!
//! Shrinking, and growing under a class without allowVolumeExpansion, are refused by the API
//! server before they reach here; [`decide`] ignores them anyway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimCondition,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::StorageError;
use crate::local::{Grown, Storage};
use crate::names::{self, Provisioner, VolumeName};
use crate::provisioner::requested_bytes;
use crate::runtime::{self, Events};

pub const RESIZING: &str = "Resizing";
pub const FS_RESIZE_PENDING: &str = "FileSystemResizePending";

/// How often a claim waiting for its file system to grow at next stage is looked at again
/// (the stage happens in the node agent, which does not tell us).
const PENDING_RECHECK: Duration = Duration::from_secs(10);

/// What to do with a claim.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Skip,
    /// Grow the volume to the request.
    Expand {
        name: VolumeName,
        bytes: u64,
        quantity: Quantity,
    },
    /// The image is grown; the file system grows at next stage.
    WaitForStage,
    /// Everything has grown: the claim's capacity becomes the volume's, conditions cleared.
    Finish {
        capacity: Quantity,
    },
}

fn bytes(q: Option<&Quantity>) -> Option<u64> {
    q.and_then(|q| berth_client::quantity::value(&q.0))
        .and_then(|v| u64::try_from(v).ok())
}

fn has_condition(claim: &PersistentVolumeClaim, kind: &str) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind))
}

/// What the resizer does with `claim`, bound to `volume` under `class`; `fs_pending` says
/// the volume's file system still has to catch up with its image.
pub fn decide(
    claim: &PersistentVolumeClaim,
    volume: Option<&PersistentVolume>,
    class: Option<&StorageClass>,
    fs_pending: bool,
) -> Decision {
    let (Some(volume), Some(class), Some(spec)) = (volume, class, claim.spec.as_ref()) else {
        return Decision::Skip;
    };
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !bound
        || spec.volume_name != volume.metadata.name
        || class.allow_volume_expansion != Some(true)
    {
        return Decision::Skip;
    }
    if crate::deleter::provisioner_of(volume) != Some(Provisioner::LocalExt4) {
        return Decision::Skip;
    }
    let Some(csi) = volume.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
        return Decision::Skip;
    };
    let Ok(name) = VolumeName::parse(&csi.volume_handle) else {
        return Decision::Skip;
    };
    if csi.driver != names::LOCAL_EXT4_DRIVER
        || volume.metadata.name.as_deref() != Some(name.as_str())
    {
        return Decision::Skip;
    }
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    let capacity = volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let claimed = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let (Some(requested_q), Some(wanted), Some(has)) =
        (requested, requested_bytes(claim), bytes(capacity))
    else {
        return Decision::Skip;
    };
    if wanted > has {
        return Decision::Expand {
            name,
            bytes: wanted,
            quantity: requested_q.clone(),
        };
    }
    let behind = bytes(claimed).is_none_or(|c| c < has);
    if fs_pending && (behind || has_condition(claim, RESIZING)) {
        return Decision::WaitForStage;
    }
    if behind || has_condition(claim, RESIZING) || has_condition(claim, FS_RESIZE_PENDING) {
        return capacity.map_or(Decision::Skip, |c| Decision::Finish {
            capacity: c.clone(),
        });
    }
    Decision::Skip
}

/// What every reconcile shares.
struct Context {
    client: Client,
    storage: Arc<Storage>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    events: Events<PersistentVolumeClaim>,
}

/// Runs the resizer until `stop` resolves.
pub async fn run(
    client: Client,
    node: String,
    storage: Arc<Storage>,
    stop: impl Future<Output = ()>,
) {
    let (claims, claim_events) = runtime::reflector::<PersistentVolumeClaim>(&client);
    let (volumes, volume_events) = runtime::reflector::<PersistentVolume>(&client);
    let (classes, class_events) = runtime::reflector::<StorageClass>(&client);
    let triggers = vec![
        runtime::trigger_self(claim_events),
        runtime::trigger_mapped(volume_events, |volume: PersistentVolume| {
            crate::provisioner::claim_of(&volume)
        }),
        // Classes are only read; their events keep the cache filling.
        runtime::trigger_mapped(class_events, |_: StorageClass| {
            None::<ObjectRef<PersistentVolumeClaim>>
        }),
    ];
    let context = Arc::new(Context {
        events: Events::new(client.clone(), "berth-storage", &node, claims.clone()),
        client,
        storage,
        volumes,
        classes,
    });
    runtime::run("resizer", reconcile, context, claims, triggers, stop).await;
}

async fn reconcile(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, StorageError> {
    runtime::synced(&ctx.volumes, "PersistentVolume").await?;
    runtime::synced(&ctx.classes, "StorageClass").await?;
    let spec = claim.spec.as_ref();
    let volume = spec
        .and_then(|s| s.volume_name.as_deref())
        .and_then(|n| ctx.volumes.get(&ObjectRef::new(n)));
    let class = spec
        .and_then(|s| s.storage_class_name.as_deref())
        .and_then(|n| ctx.classes.get(&ObjectRef::new(n)));
    let pending = volume
        .as_ref()
        .and_then(|v| VolumeName::parse(v.metadata.name.as_deref().unwrap_or_default()).ok())
        .is_some_and(|n| ctx.storage.resize_pending(&n));
    match decide(&claim, volume.as_deref(), class.as_deref(), pending) {
        Decision::Skip => Ok(Action::await_change()),
        Decision::WaitForStage => {
            if !has_condition(&claim, FS_RESIZE_PENDING) {
                patch_claim_status(&claim, &ctx.client, Some(FS_RESIZE_PENDING), None).await?;
            }
            Ok(Action::requeue(PENDING_RECHECK))
        }
        Decision::Finish { capacity } => {
            patch_claim_status(&claim, &ctx.client, None, Some(&capacity)).await?;
            Ok(Action::await_change())
        }
        Decision::Expand {
            name,
            bytes,
            quantity,
        } => {
            let claim = patch_claim_status(&claim, &ctx.client, Some(RESIZING), None).await?;
            let storage = ctx.storage.clone();
            let grown = match runtime::blocking(move || storage.grow(&name, bytes)).await {
                Ok(grown) => grown,
                Err(error) => {
                    let message = format!("resize volume failed: {error}");
                    ctx.events
                        .record(&claim, "Warning", "VolumeResizeFailed", &message)
                        .await;
                    return Err(error);
                }
            };
            let volume_name = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
            let patch = serde_json::json!({"spec": {"capacity": {"storage": quantity}}});
            api.patch(&volume_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            ctx.events
                .record(
                    &claim,
                    "Normal",
                    "VolumeResizeSuccessful",
                    &format!("resize volume {volume_name} succeeded"),
                )
                .await;
            match grown {
                Grown::Done => {
                    patch_claim_status(&claim, &ctx.client, None, Some(&quantity)).await?;
                    Ok(Action::await_change())
                }
                Grown::AtNextStage => {
                    patch_claim_status(&claim, &ctx.client, Some(FS_RESIZE_PENDING), None).await?;
                    Ok(Action::requeue(PENDING_RECHECK))
                }
            }
        }
    }
}

/// Sets the claim's resize condition to `condition` (or clears both when `None`) and, if
/// given, its capacity, through the status subresource, guarded by its resourceVersion.
async fn patch_claim_status(
    claim: &PersistentVolumeClaim,
    client: &Client,
    condition: Option<&str>,
    capacity: Option<&Quantity>,
) -> Result<PersistentVolumeClaim, StorageError> {
    let mut conditions: Vec<PersistentVolumeClaimCondition> = claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != RESIZING && c.type_ != FS_RESIZE_PENDING)
        .collect();
    if let Some(kind) = condition {
        conditions.push(PersistentVolumeClaimCondition {
            type_: kind.into(),
            status: "True".into(),
            last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            message: (kind == FS_RESIZE_PENDING)
                .then(|| "Waiting for user to (re-)start a pod to finish file system resize of volume on node.".into()),
            ..Default::default()
        });
    }
    let mut status = serde_json::json!({"conditions": conditions});
    if let Some(capacity) = capacity {
        status["capacity"] = serde_json::json!({"storage": capacity});
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": claim.metadata.resource_version},
        "status": status,
    });
    let api: Api<PersistentVolumeClaim> = Api::namespaced(
        client.clone(),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
    );
    Ok(api
        .patch_status(
            claim.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Layout;
    use crate::provisioner::tests::{claim, class};
    use crate::provisioner::volume;
    use k8s_openapi::api::core::v1::PersistentVolumeClaimStatus;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn bound(
        request: &str,
        pv_capacity: &str,
        claim_capacity: &str,
    ) -> (PersistentVolumeClaim, PersistentVolume, StorageClass) {
        let sc = class("local-ext4", names::LOCAL_EXT4, "WaitForFirstConsumer");
        let mut c = claim(Some(names::LOCAL_EXT4), "local-ext4", Some("n"));
        let mut pv = volume(
            &c,
            &sc,
            Provisioner::LocalExt4,
            "n",
            &Layout::new(Path::new("/d")),
        )
        .expect("volume");
        if let Some(spec) = pv.spec.as_mut() {
            spec.capacity = Some(BTreeMap::from([(
                "storage".into(),
                Quantity(pv_capacity.into()),
            )]));
        }
        if let Some(spec) = c.spec.as_mut() {
            spec.volume_name = pv.metadata.name.clone();
            if let Some(r) = spec.resources.as_mut() {
                r.requests = Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(request.into()),
                )]));
            }
        }
        c.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            capacity: Some(BTreeMap::from([(
                "storage".into(),
                Quantity(claim_capacity.into()),
            )])),
            ..Default::default()
        });
        (c, pv, sc)
    }

    #[test]
    fn a_larger_request_expands_then_finishes() {
        let (c, pv, sc) = bound("2Gi", "1Gi", "1Gi");
        assert!(matches!(
            decide(&c, Some(&pv), Some(&sc), false),
            Decision::Expand { bytes, ref quantity, .. } if bytes == 2 << 30 && quantity.0 == "2Gi"
        ));
        let (c, pv, sc) = bound("2Gi", "2Gi", "1Gi");
        assert_eq!(
            decide(&c, Some(&pv), Some(&sc), false),
            Decision::Finish {
                capacity: Quantity("2Gi".into())
            }
        );
        assert_eq!(
            decide(&c, Some(&pv), Some(&sc), true),
            Decision::WaitForStage
        );
        let (c, pv, sc) = bound("2Gi", "2Gi", "2Gi");
        assert_eq!(decide(&c, Some(&pv), Some(&sc), false), Decision::Skip);
        // Same size written differently is no resize.
        let (c, pv, sc) = bound("1024Mi", "1Gi", "1Gi");
        assert_eq!(decide(&c, Some(&pv), Some(&sc), false), Decision::Skip);
    }

    #[test]
    fn only_expandable_ext4_volumes_grow() {
        let (c, pv, mut sc) = bound("2Gi", "1Gi", "1Gi");
        sc.allow_volume_expansion = Some(false);
        assert_eq!(decide(&c, Some(&pv), Some(&sc), false), Decision::Skip);
        let (c, mut pv, sc) = bound("2Gi", "1Gi", "1Gi");
        if let Some(a) = pv.metadata.annotations.as_mut() {
            a.insert(names::ANN_PROVISIONED_BY.into(), names::LOCAL_PATH.into());
        }
        assert_eq!(decide(&c, Some(&pv), Some(&sc), false), Decision::Skip);
        let (mut c, pv, sc) = bound("2Gi", "1Gi", "1Gi");
        if let Some(s) = c.status.as_mut() {
            s.phase = Some("Pending".into());
        }
        assert_eq!(decide(&c, Some(&pv), Some(&sc), false), Decision::Skip);
        let (c, pv, sc) = bound("512Mi", "1Gi", "1Gi");
        assert_eq!(
            decide(&c, Some(&pv), Some(&sc), false),
            Decision::Skip,
            "never shrinks"
        );
    }

    #[test]
    fn leftover_conditions_are_cleared() {
        let (mut c, pv, sc) = bound("2Gi", "2Gi", "2Gi");
        if let Some(s) = c.status.as_mut() {
            s.conditions = Some(vec![PersistentVolumeClaimCondition {
                type_: FS_RESIZE_PENDING.into(),
                status: "True".into(),
                ..Default::default()
            }]);
        }
        assert_eq!(
            decide(&c, Some(&pv), Some(&sc), false),
            Decision::Finish {
                capacity: Quantity("2Gi".into())
            }
        );
    }
}
