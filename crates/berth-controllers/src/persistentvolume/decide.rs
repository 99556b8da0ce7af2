//! What the PV controller does about one claim or one volume, decided without I/O from what
//! the caches show: upstream's `syncClaim` (`syncUnboundClaim`, `syncBoundClaim`) and
//! `syncVolume` with `reclaimVolume`, reduced to plans that the reconciles in the parent
//! module carry out. Every plan is safe to carry out again: the writes it leads to are skipped
//! when the objects already say what they should.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use super::matching::{self, NodeView, annotation};
use crate::{Error, pods};

/// On a claim: the controller finished binding it (the claim half is written).
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the controller, not a user, chose the partner.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a volume: the provisioner that made it (and so deletes it under reclaim Delete).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim: the provisioner asked to make a volume for it.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The same, under its legacy name, which older provisioners still read.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On a claim: the node its first consumer was scheduled to (set by the scheduler).
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// A class provisioner that provisions nothing (static local volumes only).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// An event to record about the object a plan is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Event {
    fn normal(reason: &'static str, message: impl Into<String>) -> Event {
        Event {
            type_: "Normal",
            reason,
            message: message.into(),
        }
    }

    fn warning(reason: &'static str, message: impl Into<String>) -> Event {
        Event {
            type_: "Warning",
            reason,
            message: message.into(),
        }
    }
}

/// The annotations that make a StorageClass the default (GA and beta).
const DEFAULT_CLASS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// The default StorageClass, as admission picks it: the newest of those annotated as
/// default, ties by name.
pub fn default_class<'a>(classes: &[&'a StorageClass]) -> Option<&'a str> {
    classes
        .iter()
        .filter(|c| {
            DEFAULT_CLASS
                .iter()
                .any(|key| annotation(&c.metadata, key) == Some("true"))
        })
        .max_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
        .and_then(|c| c.metadata.name.as_deref())
}

/// A claim made while there was no default class, unbound and never given a class: it gets
/// the default once there is one (upstream's retroactive default StorageClass assignment).
pub fn needs_default_class(claim: &PersistentVolumeClaim) -> bool {
    let spec = claim.spec.as_ref();
    claim.metadata.deletion_timestamp.is_none()
        && spec.is_some_and(|s| s.storage_class_name.is_none())
        && volume_name(claim).is_empty()
        && annotation(&claim.metadata, "volume.beta.kubernetes.io/storage-class").is_none()
}

/// What to do about one claim.
#[derive(Debug, PartialEq)]
pub enum ClaimPlan<'a> {
    /// It stays (or becomes) Pending, without capacity or access modes; `provisioner`, when
    /// set, is written to its storage-provisioner annotations (the hand-off to a provisioner).
    Pending {
        provisioner: Option<String>,
        event: Option<Event>,
    },
    /// Bind it and this volume to each other, finishing whichever half is not written yet.
    Bind(&'a PersistentVolume),
    /// Its volume is gone or belongs to another claim: it becomes Lost.
    Lost(Event),
    /// Nothing to write.
    Nothing,
}

/// The controller wrote the claim's half of a binding (its bind-completed annotation).
pub fn bind_completed(claim: &PersistentVolumeClaim) -> bool {
    annotation(&claim.metadata, BIND_COMPLETED).is_some()
}

fn volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn named<'a>(volumes: &[&'a PersistentVolume], name: &str) -> Option<&'a PersistentVolume> {
    volumes
        .iter()
        .copied()
        .find(|v| v.metadata.name.as_deref() == Some(name))
}

/// The class waits for a consumer (`volumeBindingMode: WaitForFirstConsumer`).
pub fn waits_for_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The plan for `claim`, given every volume, the StorageClass it names (`None` when it names
/// none or the class does not exist) and the node its selected-node annotation names
/// (`None` without one). Fails only on a claim selector that cannot be evaluated.
pub fn plan_claim<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &[&'a PersistentVolume],
    class: Option<&StorageClass>,
    node: Option<NodeView<'_>>,
) -> Result<ClaimPlan<'a>, Error> {
    if bind_completed(claim) {
        return Ok(plan_bound_claim(claim, volumes));
    }
    let name = volume_name(claim);
    if name.is_empty() {
        // A claim on its way out gets nothing new: the volume would only be released again.
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(ClaimPlan::Nothing);
        }
        return plan_unbound_claim(claim, volumes, class, node);
    }
    // The user named the volume (spec.volumeName): it or nothing.
    let Some(volume) = named(volumes, name) else {
        return Ok(ClaimPlan::Pending {
            provisioner: None,
            event: None,
        });
    };
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if claim_ref.is_none() {
        return Ok(match matching::check_satisfies(volume, claim) {
            Ok(()) => ClaimPlan::Bind(volume),
            Err(why) => ClaimPlan::Pending {
                provisioner: None,
                event: Some(Event::warning(
                    "VolumeMismatch",
                    format!("Cannot bind to requested volume \"{name}\": {why}"),
                )),
            },
        });
    }
    if matching::is_volume_bound_to_claim(volume, claim) {
        return Ok(ClaimPlan::Bind(volume));
    }
    Ok(ClaimPlan::Pending {
        provisioner: None,
        event: Some(Event::warning(
            "FailedBinding",
            format!("volume \"{name}\" already bound to a different claim."),
        )),
    })
}

/// `syncUnboundClaim` for a claim that names no volume: the best match, else the hand-off to
/// a provisioner, else waiting.
fn plan_unbound_claim<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &[&'a PersistentVolume],
    class: Option<&StorageClass>,
    node: Option<NodeView<'_>>,
) -> Result<ClaimPlan<'a>, Error> {
    let object = format!(
        "PersistentVolumeClaim {}/{}",
        claim.metadata.namespace.as_deref().unwrap_or(""),
        claim.metadata.name.as_deref().unwrap_or("")
    );
    let selector = match claim.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(selector) => pods::selector(Some(selector), &object)?,
        None => None,
    };
    // Binding waits for the scheduler when the class says so and no node is chosen yet.
    let delay = waits_for_consumer(class) && node.is_none();
    let volumes = volumes.iter().copied();
    if let Some(volume) = matching::best_match(claim, volumes, selector.as_ref(), node, delay) {
        return Ok(ClaimPlan::Bind(volume));
    }
    let pending = |provisioner: Option<String>, event: Event| ClaimPlan::Pending {
        provisioner,
        event: Some(event),
    };
    if delay {
        return Ok(pending(
            None,
            Event::normal(
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            ),
        ));
    }
    let class_name = matching::claim_class(claim);
    if class_name.is_empty() {
        return Ok(pending(
            None,
            Event::normal(
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            ),
        ));
    }
    let Some(class) = class else {
        return Ok(pending(
            None,
            Event::warning(
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            ),
        ));
    };
    if class.provisioner == NO_PROVISIONER {
        return Ok(pending(
            None,
            Event::warning(
                "ProvisioningFailed",
                format!("no volume plugin matched name: {NO_PROVISIONER}"),
            ),
        ));
    }
    let annotated = annotation(&claim.metadata, STORAGE_PROVISIONER)
        == Some(class.provisioner.as_str())
        && annotation(&claim.metadata, BETA_STORAGE_PROVISIONER)
            == Some(class.provisioner.as_str());
    Ok(pending(
        (!annotated).then(|| class.provisioner.clone()),
        Event::normal(
            "ExternalProvisioning",
            format!(
                "waiting for a volume to be created, either by external provisioner \"{}\" or manually created by system administrator",
                class.provisioner
            ),
        ),
    ))
}

/// `syncBoundClaim`: a bound claim keeps its volume, or is Lost; it never gets another.
fn plan_bound_claim<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &[&'a PersistentVolume],
) -> ClaimPlan<'a> {
    let name = volume_name(claim);
    if name.is_empty() {
        return ClaimPlan::Lost(Event::warning(
            "ClaimLost",
            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
        ));
    }
    let Some(volume) = named(volumes, name) else {
        return ClaimPlan::Lost(Event::warning(
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
        ));
    };
    match volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        // The volume's half is missing (an admin cleared it, or a crash between the writes):
        // put it back.
        None => ClaimPlan::Bind(volume),
        Some(reference) if reference.uid.is_some() && reference.uid == claim.metadata.uid => {
            ClaimPlan::Bind(volume)
        }
        Some(_) => ClaimPlan::Lost(Event::warning(
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
        )),
    }
}

/// What to do about one volume.
#[derive(Debug, PartialEq)]
pub enum VolumePlan {
    /// Nothing to write.
    Nothing,
    /// Set this phase (and message) unless it is the phase already.
    Phase {
        phase: &'static str,
        message: Option<String>,
        event: Option<Event>,
    },
    /// Its claim is gone: the reclaim policy's phase, as [`Self::Phase`]. Kept apart so the
    /// reconcile can make sure the claim is really gone before acting on a cache.
    Release {
        phase: &'static str,
        message: Option<String>,
        event: Option<Event>,
    },
    /// The controller bound it to a claim that is bound elsewhere: clear its claimRef and
    /// make it Available again.
    Unbind,
}

/// The volume's `status.phase` ("" when none).
pub fn phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The volume's provisioner (its provisioned-by annotation) is an external one, which deletes
/// the volume itself: berth's own provisioners, or any not of the in-tree `kubernetes.io/`
/// family, as upstream leaves every such volume to its external deleter.
pub fn deleted_externally(volume: &PersistentVolume) -> bool {
    annotation(&volume.metadata, PROVISIONED_BY)
        .is_some_and(|p| !p.is_empty() && !p.starts_with("kubernetes.io/"))
}

/// The plan for `volume`, given the claim its claimRef names as the cache (or a live read)
/// shows it (`None` when there is none of that namespace and name).
pub fn plan_volume(volume: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> VolumePlan {
    let available = VolumePlan::Phase {
        phase: "Available",
        message: None,
        event: None,
    };
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return available;
    };
    let Some(uid) = reference.uid.as_deref().filter(|u| !u.is_empty()) else {
        // Pre-bound by a user to a claim not bound yet: the claim's sync binds it.
        return available;
    };
    // A claim of that name with another uid is a newer claim: this volume's is gone.
    let claim = claim.filter(|c| c.metadata.uid.as_deref() == Some(uid));
    let Some(claim) = claim else {
        return release(volume);
    };
    let bound_to = volume_name(claim);
    if bound_to.is_empty() {
        // The claim's sync finishes the binding.
        return VolumePlan::Nothing;
    }
    if Some(bound_to) == volume.metadata.name.as_deref() {
        return VolumePlan::Phase {
            phase: "Bound",
            message: None,
            event: None,
        };
    }
    // The claim is bound to another volume.
    let reclaim = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    if annotation(&volume.metadata, PROVISIONED_BY).is_some() && reclaim == Some("Delete") {
        // Provisioned for it in vain: release it, and the deleter removes it.
        release(volume)
    } else if annotation(&volume.metadata, BOUND_BY_CONTROLLER).is_some() {
        VolumePlan::Unbind
    } else {
        // A user's pre-binding: it waits until the claim is unbound.
        VolumePlan::Nothing
    }
}

/// `reclaimVolume` for a volume whose claim is gone: Retain keeps it Released for an admin;
/// Delete leaves it Released for an external deleter, or Failed when nothing can delete it;
/// Recycle (deprecated, and berth has no recycler) and unknown policies leave it Failed. A
/// volume already Failed stays so; one already Released changes only to Failed.
fn release(volume: &PersistentVolume) -> VolumePlan {
    let current = phase(volume);
    if current == "Failed" {
        return VolumePlan::Nothing;
    }
    let reclaim = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let name = volume.metadata.name.as_deref().unwrap_or("");
    let failed = |reason: &'static str, message: String| VolumePlan::Release {
        phase: "Failed",
        message: Some(message.clone()),
        event: Some(Event::warning(reason, message)),
    };
    let released = || {
        if current == "Released" {
            VolumePlan::Nothing
        } else {
            VolumePlan::Release {
                phase: "Released",
                message: None,
                event: None,
            }
        }
    };
    match reclaim {
        "Retain" => released(),
        "Delete" if deleted_externally(volume) => released(),
        "Delete" => failed(
            "VolumeFailedDelete",
            format!(
                "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
            ),
        ),
        "Recycle" => failed(
            "VolumeFailedRecycle",
            "the Recycle reclaim policy is deprecated and berth has no recycler; delete the volume's data and clear spec.claimRef, or use Retain or dynamic provisioning".to_string(),
        ),
        _ => failed(
            "VolumeUnknownReclaimPolicy",
            "Volume has unrecognized PersistentVolumeReclaimPolicy".to_string(),
        ),
    }
}
