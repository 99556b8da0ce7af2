//! The PV controller's decisions ([`super::decide`]) on the cases upstream's controller tests
//! cover: binding, pre-binding from either side, provisioning hand-off, losing a volume, and
//! reclaim.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PersistentVolumeStatus};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::decide::*;
use super::matching::tests::{claim, claim_ref, volume};
use super::matching::{HOSTNAME_LABEL, NodeView};

const RWO: &[&str] = &["ReadWriteOnce"];

fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        provisioner: provisioner.into(),
        volume_binding_mode: Some(mode.into()),
        ..Default::default()
    }
}

fn annotate(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
}

fn with_phase(mut v: PersistentVolume, phase: &str) -> PersistentVolume {
    v.status = Some(PersistentVolumeStatus {
        phase: Some(phase.into()),
        ..Default::default()
    });
    v
}

fn bound_to(
    mut v: PersistentVolume,
    c: &PersistentVolumeClaim,
    with_uid: bool,
) -> PersistentVolume {
    if let Some(spec) = v.spec.as_mut() {
        spec.claim_ref = Some(claim_ref(c, with_uid));
    }
    v
}

fn naming(mut c: PersistentVolumeClaim, volume: &str, completed: bool) -> PersistentVolumeClaim {
    if let Some(spec) = c.spec.as_mut() {
        spec.volume_name = Some(volume.into());
    }
    if completed {
        annotate(&mut c.metadata, BIND_COMPLETED, "yes");
    }
    c
}

fn bind_target<'a>(plan: &ClaimPlan<'a>) -> Option<&'a str> {
    match plan {
        ClaimPlan::Bind(v) => v.metadata.name.as_deref(),
        _ => None,
    }
}

fn event_reason(plan: &ClaimPlan<'_>) -> Option<&'static str> {
    match plan {
        ClaimPlan::Pending { event, .. } => event.as_ref().map(|e| e.reason),
        ClaimPlan::Lost(e) => Some(e.reason),
        _ => None,
    }
}

#[test]
fn a_pending_claim_binds_to_the_smallest_fit() {
    let c = claim("c", "1Gi", Some(""), RWO);
    let vs = [
        volume("big", "5Gi", "", RWO),
        volume("small", "1Gi", "", RWO),
    ];
    let refs: Vec<&PersistentVolume> = vs.iter().collect();
    let plan = plan_claim(&c, &refs, None, None).expect("plan");
    assert_eq!(bind_target(&plan), Some("small"));
}

#[test]
fn without_a_match_a_claim_waits_or_goes_to_its_provisioner() {
    let refs: Vec<&PersistentVolume> = Vec::new();
    let no_class = claim("c", "1Gi", Some(""), RWO);
    let plan = plan_claim(&no_class, &refs, None, None).expect("plan");
    assert_eq!(event_reason(&plan), Some("FailedBinding"));

    let missing = claim("c", "1Gi", Some("gone"), RWO);
    let plan = plan_claim(&missing, &refs, None, None).expect("plan");
    assert_eq!(event_reason(&plan), Some("ProvisioningFailed"));

    let immediate = class("fast", "berth.dev/local-ext4", "Immediate");
    let c = claim("c", "1Gi", Some("fast"), RWO);
    let plan = plan_claim(&c, &refs, Some(&immediate), None).expect("plan");
    assert_eq!(
        plan,
        ClaimPlan::Pending {
            provisioner: Some("berth.dev/local-ext4".into()),
            event: Some(Event {
                type_: "Normal",
                reason: "ExternalProvisioning",
                message: "waiting for a volume to be created, either by external provisioner \"berth.dev/local-ext4\" or manually created by system administrator".into(),
            }),
        }
    );
    // Annotated already: nothing more to write, the event still says what it waits for.
    let mut handed = c.clone();
    annotate(
        &mut handed.metadata,
        STORAGE_PROVISIONER,
        "berth.dev/local-ext4",
    );
    annotate(
        &mut handed.metadata,
        BETA_STORAGE_PROVISIONER,
        "berth.dev/local-ext4",
    );
    let plan = plan_claim(&handed, &refs, Some(&immediate), None).expect("plan");
    assert!(matches!(
        plan,
        ClaimPlan::Pending {
            provisioner: None,
            event: Some(_)
        }
    ));
}

#[test]
fn wait_for_first_consumer_holds_until_a_node_is_selected() {
    let wffc = class("local-path", "berth.dev/local-path", "WaitForFirstConsumer");
    let c = claim("c", "1Gi", Some("local-path"), RWO);
    let v = volume("v", "1Gi", "local-path", RWO);
    let refs = vec![&v];
    let plan = plan_claim(&c, &refs, Some(&wffc), None).expect("plan");
    assert_eq!(event_reason(&plan), Some("WaitForFirstConsumer"));
    if let ClaimPlan::Pending { provisioner, .. } = &plan {
        assert!(provisioner.is_none());
    }
    // Once the scheduler chose a node, the volume binds if its affinity admits the node.
    let mut selected = c.clone();
    annotate(&mut selected.metadata, SELECTED_NODE, "n1");
    let labels: BTreeMap<String, String> = [(HOSTNAME_LABEL.to_string(), "n1".to_string())].into();
    let node = NodeView {
        name: "n1",
        labels: &labels,
    };
    let plan = plan_claim(&selected, &refs, Some(&wffc), Some(node)).expect("plan");
    assert_eq!(bind_target(&plan), Some("v"));
    // No volume: provisioning on that node.
    let plan = plan_claim(&selected, &[], Some(&wffc), Some(node)).expect("plan");
    assert!(
        matches!(plan, ClaimPlan::Pending { provisioner: Some(p), .. } if p == "berth.dev/local-path")
    );
}

#[test]
fn a_claim_naming_a_volume_takes_it_or_nothing() {
    let c = naming(claim("c", "1Gi", Some(""), RWO), "chosen", false);
    let chosen = volume("chosen", "10Gi", "", RWO);
    let smaller = volume("smaller", "1Gi", "", RWO);
    let refs = vec![&smaller, &chosen];
    assert_eq!(
        bind_target(&plan_claim(&c, &refs, None, None).expect("plan")),
        Some("chosen")
    );
    // Missing: Pending, quietly.
    let plan = plan_claim(&c, &[&smaller], None, None).expect("plan");
    assert_eq!(
        plan,
        ClaimPlan::Pending {
            provisioner: None,
            event: None
        }
    );
    // Too small: VolumeMismatch.
    let tiny = volume("chosen", "1Mi", "", RWO);
    let plan = plan_claim(&c, &[&tiny], None, None).expect("plan");
    assert_eq!(event_reason(&plan), Some("VolumeMismatch"));
    // Taken by another claim: FailedBinding.
    let other = claim("other", "1Gi", Some(""), RWO);
    let taken = bound_to(volume("chosen", "10Gi", "", RWO), &other, true);
    let plan = plan_claim(&c, &[&taken], None, None).expect("plan");
    assert_eq!(event_reason(&plan), Some("FailedBinding"));
    // Pre-bound to it already (its uid or none): bind.
    let mine = bound_to(volume("chosen", "10Gi", "", RWO), &c, false);
    assert_eq!(
        bind_target(&plan_claim(&c, &[&mine], None, None).expect("plan")),
        Some("chosen")
    );
}

#[test]
fn a_bound_claim_keeps_its_volume_or_is_lost() {
    let c = naming(claim("c", "1Gi", Some(""), RWO), "v", true);
    let mine = bound_to(with_phase(volume("v", "1Gi", "", RWO), "Bound"), &c, true);
    let other = volume("w", "1Gi", "", RWO);
    assert_eq!(
        bind_target(&plan_claim(&c, &[&other, &mine], None, None).expect("plan")),
        Some("v")
    );
    // The volume's half cleared: put back, never another volume.
    let cleared = with_phase(volume("v", "1Gi", "", RWO), "Available");
    assert_eq!(
        bind_target(&plan_claim(&c, &[&other, &cleared], None, None).expect("plan")),
        Some("v")
    );
    // Gone: Lost.
    let plan = plan_claim(&c, &[&other], None, None).expect("plan");
    assert_eq!(event_reason(&plan), Some("ClaimLost"));
    // Taken by another claim: Lost (misbound).
    let someone = claim("someone", "1Gi", Some(""), RWO);
    let taken = bound_to(volume("v", "1Gi", "", RWO), &someone, true);
    let plan = plan_claim(&c, &[&taken], None, None).expect("plan");
    assert_eq!(event_reason(&plan), Some("ClaimMisbound"));
    // Its volumeName cleared: Lost.
    let mut blank = c.clone();
    if let Some(spec) = blank.spec.as_mut() {
        spec.volume_name = None;
    }
    assert_eq!(
        event_reason(&plan_claim(&blank, &[&mine], None, None).expect("plan")),
        Some("ClaimLost")
    );
}

#[test]
fn an_invalid_selector_is_an_error_that_waits_for_a_change() {
    let mut c = claim("c", "1Gi", Some(""), RWO);
    if let Some(spec) = c.spec.as_mut() {
        spec.selector = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: "tier".into(),
                        operator: "Sideways".into(),
                        values: None,
                    },
                ]),
                ..Default::default()
            },
        );
    }
    let err = plan_claim(&c, &[], None, None).expect_err("invalid selector");
    assert!(err.needs_change());
}

#[test]
fn volume_phases_follow_the_claim() {
    let c = naming(claim("c", "1Gi", Some(""), RWO), "v", true);
    let free = volume("v", "1Gi", "", RWO);
    assert!(matches!(
        plan_volume(&free, None),
        VolumePlan::Phase {
            phase: "Available",
            ..
        }
    ));
    // Pre-bound by a user, uid unknown: Available until the claim binds it.
    let reserved = bound_to(volume("v", "1Gi", "", RWO), &c, false);
    assert!(matches!(
        plan_volume(&reserved, Some(&c)),
        VolumePlan::Phase {
            phase: "Available",
            ..
        }
    ));
    let bound = bound_to(volume("v", "1Gi", "", RWO), &c, true);
    assert!(matches!(
        plan_volume(&bound, Some(&c)),
        VolumePlan::Phase { phase: "Bound", .. }
    ));
    // The claim has not written its half yet: leave it to the claim's sync.
    let unnamed = claim("c", "1Gi", Some(""), RWO);
    assert_eq!(plan_volume(&bound, Some(&unnamed)), VolumePlan::Nothing);
}

#[test]
fn a_volume_whose_claim_is_gone_is_reclaimed_by_its_policy() {
    let c = claim("c", "1Gi", Some(""), RWO);
    let policy = |p: &str| {
        let mut v = with_phase(bound_to(volume("v", "1Gi", "", RWO), &c, true), "Bound");
        if let Some(spec) = v.spec.as_mut() {
            spec.persistent_volume_reclaim_policy = Some(p.into());
        }
        v
    };
    let outcome = |v: &PersistentVolume| match plan_volume(v, None) {
        VolumePlan::Release { phase, event, .. } => Some((phase, event.map(|e| e.reason))),
        _ => None,
    };
    assert_eq!(outcome(&policy("Retain")), Some(("Released", None)));
    assert_eq!(
        outcome(&policy("Recycle")),
        Some(("Failed", Some("VolumeFailedRecycle")))
    );
    assert_eq!(
        outcome(&policy("Delete")),
        Some(("Failed", Some("VolumeFailedDelete")))
    );
    assert_eq!(
        outcome(&policy("Sideways")),
        Some(("Failed", Some("VolumeUnknownReclaimPolicy")))
    );
    for provisioner in ["berth.dev/local-path", "berth.dev/local-ext4"] {
        let mut ours = policy("Delete");
        annotate(&mut ours.metadata, PROVISIONED_BY, provisioner);
        assert_eq!(outcome(&ours), Some(("Released", None)));
        // Released already: left to the deleter, nothing more to write.
        assert_eq!(
            plan_volume(&with_phase(ours, "Released"), None),
            VolumePlan::Nothing
        );
    }
    // A claim of the same name with another uid is not this volume's claim.
    let mut newer = c.clone();
    newer.metadata.uid = Some("newer".into());
    assert_eq!(
        outcome(&policy("Retain")),
        outcome_with(&policy("Retain"), &newer)
    );
    // Failed stays Failed.
    assert_eq!(
        plan_volume(&with_phase(policy("Recycle"), "Failed"), None),
        VolumePlan::Nothing
    );
    // Released under Retain, then the policy changed to one that cannot be carried out.
    assert!(matches!(
        plan_volume(&with_phase(policy("Recycle"), "Released"), None),
        VolumePlan::Release {
            phase: "Failed",
            ..
        }
    ));
}

fn outcome_with(
    v: &PersistentVolume,
    c: &PersistentVolumeClaim,
) -> Option<(&'static str, Option<&'static str>)> {
    match plan_volume(v, Some(c)) {
        VolumePlan::Release { phase, event, .. } => Some((phase, event.map(|e| e.reason))),
        _ => None,
    }
}

#[test]
fn a_volume_bound_by_the_controller_to_a_claim_bound_elsewhere_is_freed() {
    let c = naming(claim("c", "1Gi", Some(""), RWO), "elsewhere", true);
    let mut chosen = bound_to(with_phase(volume("v", "1Gi", "", RWO), "Bound"), &c, true);
    // A user's pre-binding waits.
    assert_eq!(plan_volume(&chosen, Some(&c)), VolumePlan::Nothing);
    annotate(&mut chosen.metadata, BOUND_BY_CONTROLLER, "yes");
    assert_eq!(plan_volume(&chosen, Some(&c)), VolumePlan::Unbind);
    // A volume provisioned for it under Delete is released for its deleter instead.
    let mut provisioned = chosen.clone();
    annotate(
        &mut provisioned.metadata,
        PROVISIONED_BY,
        "berth.dev/local-path",
    );
    if let Some(spec) = provisioned.spec.as_mut() {
        spec.persistent_volume_reclaim_policy = Some("Delete".into());
    }
    assert!(matches!(
        plan_volume(&provisioned, Some(&c)),
        VolumePlan::Release {
            phase: "Released",
            ..
        }
    ));
}

#[test]
fn a_claim_without_a_class_gets_the_newest_default() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let class = |name: &str, default: bool, second: i64| StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: default.then(|| {
                [(
                    "storageclass.kubernetes.io/is-default-class".to_string(),
                    "true".to_string(),
                )]
                .into()
            }),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(second).expect("time"),
            )),
            ..Default::default()
        },
        provisioner: "berth.dev/local-path".into(),
        ..Default::default()
    };
    let (old, new, plain) = (
        class("old", true, 10),
        class("new", true, 20),
        class("plain", false, 30),
    );
    assert_eq!(default_class(&[&old, &plain]), Some("old"));
    assert_eq!(default_class(&[&old, &new, &plain]), Some("new"));
    assert_eq!(default_class(&[&plain]), None);
}
