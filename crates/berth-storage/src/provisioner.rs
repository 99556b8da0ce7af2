//! The provisioner (external-provisioner's job for our two provisioners): a claim the PV
//! controller has handed to `berth.dev/local-path` or `berth.dev/local-ext4` (annotation
//! `volume.kubernetes.io/storage-provisioner`), not yet bound, and either Immediate or with
//! this node selected, gets its backing storage and then its PersistentVolume, named
//! `pvc-<claim uid>` so that doing it again (after a crash, a conflict, a stale cache) finds
//! the same volume rather than making a second one.
//!
//! [`decide`] and [`volume`] are pure (what to do with a claim; the PV object for it);
//! `reconcile` carries it out and records Provisioning, ProvisioningSucceeded and
//! ProvisioningFailed on the claim. Failures are retried with back-off.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, LocalVolumeSource, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::StorageError;
use crate::local::Storage;
use crate::names::{self, Layout, Provisioner, VolumeName};
use crate::runtime::{self, Events};

/// What to do with a claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours, not for this node, not yet (WaitForFirstConsumer without a node), or done.
    Skip,
    /// Make its volume with this provisioner.
    Provision(Provisioner),
    /// Ours, but it cannot be provisioned as it is; the message is the event's.
    Fail(String),
}

/// The provisioner a claim was handed to, if it is one of ours.
pub fn provisioner_of(claim: &PersistentVolumeClaim) -> Option<Provisioner> {
    let annotations = claim.metadata.annotations.as_ref()?;
    annotations
        .get(names::ANN_STORAGE_PROVISIONER)
        .or_else(|| annotations.get(names::ANN_BETA_STORAGE_PROVISIONER))
        .and_then(|name| Provisioner::from_name(name))
}

/// The claim's storage request in bytes.
pub fn requested_bytes(claim: &PersistentVolumeClaim) -> Option<u64> {
    let quantity = request(claim)?;
    berth_client::quantity::value(&quantity.0).and_then(|v| u64::try_from(v).ok())
}

fn request(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// What the provisioner does with `claim` on `node`, given its class and whether its volume
/// already exists.
pub fn decide(
    claim: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    node: &str,
    volume_exists: bool,
) -> Decision {
    let Some(provisioner) = provisioner_of(claim) else {
        return Decision::Skip;
    };
    let Some(spec) = claim.spec.as_ref() else {
        return Decision::Skip;
    };
    if claim.metadata.deletion_timestamp.is_some()
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
        || volume_exists
    {
        return Decision::Skip;
    }
    let Some(class_name) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) else {
        return Decision::Fail("the claim names no StorageClass".into());
    };
    let Some(class) = class else {
        return Decision::Fail(format!(
            "storageclass.storage.k8s.io \"{class_name}\" not found"
        ));
    };
    if class.provisioner != provisioner.name() {
        // Handed to us under a class that names someone else: not ours to act on.
        return Decision::Skip;
    }
    let selected = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANN_SELECTED_NODE));
    let wait = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    match selected {
        Some(selected) if selected != node => return Decision::Skip,
        None if wait => return Decision::Skip,
        _ => {}
    }
    if spec.selector.is_some() {
        return Decision::Fail("claim Selector is not supported".into());
    }
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        return Decision::Fail("data sources are not supported".into());
    }
    if spec
        .volume_mode
        .as_deref()
        .is_some_and(|m| m != "Filesystem")
    {
        return Decision::Fail("only volumeMode Filesystem is supported".into());
    }
    if requested_bytes(claim).is_none_or(|b| b == 0) {
        return Decision::Fail("the claim requests no storage".into());
    }
    Decision::Provision(provisioner)
}

/// The PersistentVolume for `claim`, as the contract fixes it.
pub fn volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    provisioner: Provisioner,
    node: &str,
    layout: &Layout,
) -> Result<PersistentVolume, StorageError> {
    let missing = |what: &str| StorageError::Invalid(format!("the claim lacks {what}"));
    let uid = claim
        .metadata
        .uid
        .as_deref()
        .ok_or_else(|| missing("metadata.uid"))?;
    let name = VolumeName::for_claim(uid)?;
    let spec = claim.spec.as_ref().ok_or_else(|| missing("spec"))?;
    let capacity = request(claim).ok_or_else(|| missing("a storage request"))?;
    let (local, csi) = match provisioner {
        Provisioner::LocalPath => (
            Some(LocalVolumeSource {
                path: layout.local_path(&name).to_string_lossy().into_owned(),
                fs_type: None,
            }),
            None,
        ),
        Provisioner::LocalExt4 => (
            None,
            Some(CSIPersistentVolumeSource {
                driver: names::LOCAL_EXT4_DRIVER.into(),
                volume_handle: name.to_string(),
                fs_type: Some("ext4".into()),
                ..Default::default()
            }),
        ),
    };
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                names::ANN_PROVISIONED_BY.to_string(),
                provisioner.name().to_string(),
            )])),
            finalizers: Some(vec![names::FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            // Pre-bound to the claim, as external-provisioner does, so no other claim can take it.
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: Some(uid.to_string()),
                ..Default::default()
            }),
            capacity: Some(BTreeMap::from([("storage".to_string(), capacity.clone())])),
            access_modes: spec.access_modes.clone(),
            volume_mode: Some(
                spec.volume_mode
                    .clone()
                    .unwrap_or_else(|| "Filesystem".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            mount_options: class.mount_options.clone(),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: names::HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            local,
            csi,
            ..Default::default()
        }),
        status: None,
    })
}

/// What every reconcile shares.
struct Context {
    client: Client,
    node: String,
    storage: Arc<Storage>,
    classes: Store<StorageClass>,
    volumes: Store<PersistentVolume>,
    events: Events<PersistentVolumeClaim>,
}

/// Runs the provisioner of `node` until `stop` resolves.
pub async fn run(
    client: Client,
    node: String,
    storage: Arc<Storage>,
    stop: impl Future<Output = ()>,
) {
    let (claims, claim_events) = runtime::reflector::<PersistentVolumeClaim>(&client);
    let (classes, class_events) = runtime::reflector::<StorageClass>(&client);
    let (volumes, volume_events) = runtime::reflector::<PersistentVolume>(&client);
    let of_class = claims.clone();
    let triggers = vec![
        runtime::trigger_self(claim_events),
        // A class appearing (or changing) wakes the claims waiting for it.
        runtime::trigger_mapped(class_events, move |class: StorageClass| {
            let name = class.metadata.name.unwrap_or_default();
            of_class
                .state()
                .iter()
                .filter(|c| {
                    c.spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.as_deref())
                        == Some(name.as_str())
                })
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }),
        // A volume's change (its deletion included) wakes its claim.
        runtime::trigger_mapped(volume_events, |volume: PersistentVolume| claim_of(&volume)),
    ];
    let context = Arc::new(Context {
        events: Events::new(client.clone(), "berth-storage", &node, claims.clone()),
        client,
        node,
        storage,
        classes,
        volumes,
    });
    runtime::run("provisioner", reconcile, context, claims, triggers, stop).await;
}

/// The claim a volume's claimRef names.
pub(crate) fn claim_of(volume: &PersistentVolume) -> Option<ObjectRef<PersistentVolumeClaim>> {
    let reference = volume.spec.as_ref()?.claim_ref.as_ref()?;
    Some(ObjectRef::new(reference.name.as_deref()?).within(reference.namespace.as_deref()?))
}

async fn reconcile(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, StorageError> {
    runtime::synced(&ctx.classes, "StorageClass").await?;
    runtime::synced(&ctx.volumes, "PersistentVolume").await?;
    let Some(uid) = claim.metadata.uid.as_deref() else {
        return Ok(Action::await_change());
    };
    let volume_name = VolumeName::for_claim(uid)?;
    let class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .and_then(|name| ctx.classes.get(&ObjectRef::new(name)));
    let exists = ctx
        .volumes
        .get(&ObjectRef::new(volume_name.as_str()))
        .is_some();
    match decide(&claim, class.as_deref(), &ctx.node, exists) {
        Decision::Skip => Ok(Action::await_change()),
        Decision::Fail(message) => {
            ctx.events
                .record(&claim, "Warning", "ProvisioningFailed", &message)
                .await;
            Err(StorageError::Invalid(message))
        }
        Decision::Provision(provisioner) => {
            // decide() only provisions with a class.
            let Some(class) = class else {
                return Ok(Action::await_change());
            };
            let class_name = class.metadata.name.clone().unwrap_or_default();
            let claim_name = format!(
                "{}/{}",
                claim.metadata.namespace.as_deref().unwrap_or_default(),
                claim.metadata.name.as_deref().unwrap_or_default()
            );
            let message =
                format!("External provisioner is provisioning volume for claim \"{claim_name}\"");
            ctx.events
                .record(&claim, "Normal", "Provisioning", &message)
                .await;
            match provision(&claim, &class, provisioner, &volume_name, &ctx).await {
                Ok(()) => {
                    let message = format!("Successfully provisioned volume {volume_name}");
                    ctx.events
                        .record(&claim, "Normal", "ProvisioningSucceeded", &message)
                        .await;
                    Ok(Action::await_change())
                }
                Err(error) => {
                    let message = format!(
                        "failed to provision volume with StorageClass \"{class_name}\": {error}"
                    );
                    ctx.events
                        .record(&claim, "Warning", "ProvisioningFailed", &message)
                        .await;
                    // Retried with back-off even when the claim stays as it is: the disk may
                    // have room again, a tool may have been installed.
                    Err(match error {
                        StorageError::Invalid(message) => StorageError::Task(message),
                        other => other,
                    })
                }
            }
        }
    }
}

/// The backing storage, then the PersistentVolume (an existing one of that name is ours,
/// made by an earlier attempt).
async fn provision(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    provisioner: Provisioner,
    name: &VolumeName,
    ctx: &Context,
) -> Result<(), StorageError> {
    let pv = volume(claim, class, provisioner, &ctx.node, ctx.storage.layout())?;
    let bytes = requested_bytes(claim).unwrap_or_default();
    let storage = ctx.storage.clone();
    let backing = name.clone();
    runtime::blocking(move || storage.create(provisioner, &backing, bytes)).await?;
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &pv).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use std::path::Path;

    pub(crate) const UID: &str = "0123abcd-4567-89ef-0a1b-23456789abcd";

    pub(crate) fn claim(
        provisioner: Option<&str>,
        class: &str,
        node: Option<&str>,
    ) -> PersistentVolumeClaim {
        let mut annotations = BTreeMap::new();
        if let Some(p) = provisioner {
            annotations.insert(names::ANN_STORAGE_PROVISIONER.to_string(), p.to_string());
        }
        if let Some(n) = node {
            annotations.insert(names::ANN_SELECTED_NODE.to_string(), n.to_string());
        }
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("ns".into()),
                uid: Some(UID.into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity("1Gi".into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            provisioner: provisioner.into(),
            volume_binding_mode: Some(mode.into()),
            reclaim_policy: Some("Delete".into()),
            mount_options: Some(vec!["noatime".into()]),
            allow_volume_expansion: Some(provisioner == names::LOCAL_EXT4),
            ..Default::default()
        }
    }

    const WFFC: &str = "WaitForFirstConsumer";

    #[test]
    fn provisions_only_what_is_handed_to_us_for_this_node() {
        let lp = class("local-path", names::LOCAL_PATH, WFFC);
        let ours = claim(Some(names::LOCAL_PATH), "local-path", Some("node1"));
        assert_eq!(
            decide(&ours, Some(&lp), "node1", false),
            Decision::Provision(Provisioner::LocalPath)
        );
        assert_eq!(
            decide(&ours, Some(&lp), "node2", false),
            Decision::Skip,
            "another node's"
        );
        assert_eq!(
            decide(&ours, Some(&lp), "node1", true),
            Decision::Skip,
            "already made"
        );
        let waiting = claim(Some(names::LOCAL_PATH), "local-path", None);
        assert_eq!(
            decide(&waiting, Some(&lp), "node1", false),
            Decision::Skip,
            "WFFC without a node"
        );
        let immediate = class("fast", names::LOCAL_EXT4, "Immediate");
        let now = claim(Some(names::LOCAL_EXT4), "fast", None);
        assert_eq!(
            decide(&now, Some(&immediate), "node1", false),
            Decision::Provision(Provisioner::LocalExt4)
        );
        let theirs = claim(Some("ebs.csi.aws.com"), "local-path", Some("node1"));
        assert_eq!(decide(&theirs, Some(&lp), "node1", false), Decision::Skip);
        let unannotated = claim(None, "local-path", Some("node1"));
        assert_eq!(
            decide(&unannotated, Some(&lp), "node1", false),
            Decision::Skip
        );
        let mismatch = claim(Some(names::LOCAL_EXT4), "local-path", Some("node1"));
        assert_eq!(decide(&mismatch, Some(&lp), "node1", false), Decision::Skip);

        let mut bound = ours.clone();
        if let Some(spec) = bound.spec.as_mut() {
            spec.volume_name = Some("pv".into());
        }
        assert_eq!(decide(&bound, Some(&lp), "node1", false), Decision::Skip);
        let mut legacy = claim(None, "local-path", Some("node1"));
        if let Some(a) = legacy.metadata.annotations.as_mut() {
            a.insert(
                names::ANN_BETA_STORAGE_PROVISIONER.into(),
                names::LOCAL_PATH.into(),
            );
        }
        assert_eq!(
            decide(&legacy, Some(&lp), "node1", false),
            Decision::Provision(Provisioner::LocalPath)
        );
    }

    #[test]
    fn unprovisionable_claims_fail_with_a_reason() {
        let lp = class("local-path", names::LOCAL_PATH, "Immediate");
        let ours = claim(Some(names::LOCAL_PATH), "local-path", None);
        assert!(
            matches!(decide(&ours, None, "n", false), Decision::Fail(m) if m.contains("not found"))
        );
        let mut block = ours.clone();
        if let Some(spec) = block.spec.as_mut() {
            spec.volume_mode = Some("Block".into());
        }
        assert!(matches!(
            decide(&block, Some(&lp), "n", false),
            Decision::Fail(_)
        ));
        let mut empty = ours.clone();
        if let Some(spec) = empty.spec.as_mut() {
            spec.resources = None;
        }
        assert!(matches!(
            decide(&empty, Some(&lp), "n", false),
            Decision::Fail(_)
        ));
        let mut selector = ours;
        if let Some(spec) = selector.spec.as_mut() {
            spec.selector = Some(Default::default());
        }
        assert!(matches!(
            decide(&selector, Some(&lp), "n", false),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn the_volume_is_exactly_what_the_contract_says() {
        let layout = Layout::new(Path::new("/var/lib/berth"));
        let lp = class("local-path", names::LOCAL_PATH, WFFC);
        let c = claim(Some(names::LOCAL_PATH), "local-path", Some("node1"));
        let pv = volume(&c, &lp, Provisioner::LocalPath, "node1", &layout).expect("volume");
        let json = serde_json::to_value(&pv).expect("json");
        let name = format!("pvc-{UID}");
        assert_eq!(
            json,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": "berth.dev/local-path"},
                    "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer"],
                },
                "spec": {
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns", "name": "data", "uid": UID},
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Filesystem",
                    "storageClassName": "local-path",
                    "persistentVolumeReclaimPolicy": "Delete",
                    "mountOptions": ["noatime"],
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node1"]}
                    ]}]}},
                    "local": {"path": format!("/var/lib/berth/storage/local-path/{name}")},
                },
            })
        );

        let ext4 = class("local-ext4", names::LOCAL_EXT4, WFFC);
        let pv = volume(&c, &ext4, Provisioner::LocalExt4, "node1", &layout).expect("volume");
        let spec = serde_json::to_value(pv.spec).expect("json");
        assert_eq!(
            spec["csi"],
            serde_json::json!({"driver": "local-ext4.berth.dev", "volumeHandle": name, "fsType": "ext4"})
        );
        assert!(spec.get("local").is_none());
    }

    #[test]
    fn a_hostile_uid_never_becomes_a_volume() {
        let layout = Layout::new(Path::new("/d"));
        let lp = class("local-path", names::LOCAL_PATH, WFFC);
        let mut c = claim(Some(names::LOCAL_PATH), "local-path", Some("n"));
        c.metadata.uid = Some("../../etc".into());
        assert!(matches!(
            volume(&c, &lp, Provisioner::LocalPath, "n", &layout),
            Err(StorageError::InvalidName(_))
        ));
    }
}
