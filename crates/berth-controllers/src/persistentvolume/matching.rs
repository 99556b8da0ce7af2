//! Which volume a claim may have, without I/O: upstream's `FindMatchingVolume` and
//! `checkVolumeSatisfyClaim` (pkg/controller/volume/persistentvolume) and the helpers they
//! share (claim and volume class, access modes, volume mode, node affinity).
//!
//! One deliberate difference: upstream walks the volumes grouped by access-mode set, fewest
//! modes first, and takes the smallest fit of the first group with one, so a larger volume
//! with fewer modes can win over a smaller one. berth's rule is the documented one — the
//! smallest eligible volume — with fewer access modes only breaking ties of equal capacity
//! (then the name, so the choice never depends on cache order).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim};

/// The resource name of a volume's size in capacities and requests.
pub const STORAGE: &str = "storage";
/// The annotation that named a class before `storageClassName` existed; it still wins.
pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The label every berth Node carries, its name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The node a claim is to be used on, as node affinity sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// `GetPersistentVolumeClaimClass`: the beta annotation, else `spec.storageClassName`, else
/// "" (no class). A claim without class and one with "" alike only match volumes without.
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    if let Some(class) = annotation(&claim.metadata, BETA_STORAGE_CLASS) {
        return class;
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// `GetPersistentVolumeClass`: the beta annotation, else `spec.storageClassName`, else "".
pub fn volume_class(volume: &PersistentVolume) -> &str {
    if let Some(class) = annotation(&volume.metadata, BETA_STORAGE_CLASS) {
        return class;
    }
    volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// One annotation's value.
pub fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The storage the claim requests, in bytes (none requested is zero, as upstream's zero
/// Quantity).
pub fn requested_bytes(claim: &PersistentVolumeClaim) -> i64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(STORAGE))
        .and_then(|q| berth_client::quantity::value(&q.0))
        .unwrap_or(0)
}

/// The volume's `spec.capacity.storage` in bytes (none is zero).
pub fn capacity_bytes(volume: &PersistentVolume) -> i64 {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(STORAGE))
        .and_then(|q| berth_client::quantity::value(&q.0))
        .unwrap_or(0)
}

fn volume_modes(volume: &PersistentVolume) -> &[String] {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
}

/// `CheckAccessModes`: the volume offers every access mode the claim asks for.
pub fn access_modes_cover(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let offered = volume_modes(volume);
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
        .iter()
        .all(|mode| offered.contains(mode))
}

/// `CheckVolumeModeMismatches`: a block claim needs a block volume and a filesystem claim a
/// filesystem volume (unset is Filesystem on both sides).
pub fn volume_mode_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let claim_mode = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    let volume_mode = volume.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    claim_mode.unwrap_or("Filesystem") != volume_mode.unwrap_or("Filesystem")
}

/// `IsVolumeBoundToClaim`: the volume's claimRef names the claim (namespace and name) and
/// either carries its uid or none yet (pre-bound by a user who could not know the uid).
pub fn is_volume_bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    reference.name == claim.metadata.name
        && reference.namespace == claim.metadata.namespace
        && match reference.uid.as_deref() {
            None | Some("") => true,
            uid => uid == claim.metadata.uid.as_deref(),
        }
}

/// `CheckNodeAffinity`: a volume without required node affinity is reachable from every
/// node; otherwise one of its terms must match the node (terms are ORed, a term's
/// requirements ANDed, and a term with no requirements matches nothing).
pub fn node_affinity_admits(volume: &PersistentVolume, node: NodeView<'_>) -> bool {
    let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, node))
}

fn term_matches(term: &NodeSelectorTerm, node: NodeView<'_>) -> bool {
    berth_client::node_affinity::term_matches(term, node.name, node.labels)
}

/// What one volume is to one unbound claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Its claimRef names the claim (a user's pre-binding, or a provisioner's volume made for
    /// it): taken before any other, whatever its size.
    PreBound,
    /// Available and satisfying everything the claim asks: one of the candidates.
    Eligible,
    /// Not for this claim.
    No,
}

/// What `FindMatchingVolume` checks of one volume for `claim`. `selector` is the claim's
/// parsed `spec.selector` (`None`: no selector, every volume passes); `node` the node the
/// claim is to be used on (its selected-node annotation), whose labels the volume's node
/// affinity must admit; `delay_binding` that the claim's class waits for a consumer and no
/// node is chosen yet, so only a volume pre-bound to it may match.
pub fn fit(
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
    selector: Option<&berth_api::selectors::LabelSelector>,
    node: Option<NodeView<'_>>,
    delay_binding: bool,
) -> Fit {
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let bound_here = is_volume_bound_to_claim(volume, claim);
    if claim_ref.is_some() && !bound_here {
        return Fit::No;
    }
    if capacity_bytes(volume) < requested_bytes(claim)
        || volume_mode_mismatch(claim, volume)
        || volume.metadata.deletion_timestamp.is_some()
        || !access_modes_cover(claim, volume)
    {
        return Fit::No;
    }
    let node_ok = node.is_none_or(|node| node_affinity_admits(volume, node));
    if bound_here {
        return if node_ok { Fit::PreBound } else { Fit::No };
    }
    if delay_binding {
        return Fit::No;
    }
    let available = volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Available");
    let empty = BTreeMap::new();
    let selected =
        selector.is_none_or(|s| s.matches(volume.metadata.labels.as_ref().unwrap_or(&empty)));
    if available && selected && volume_class(volume) == claim_class(claim) && node_ok {
        Fit::Eligible
    } else {
        Fit::No
    }
}

/// The volume `claim` binds to: the one pre-bound to it if any (the first, by name), else the
/// smallest eligible one — ties broken by fewer access modes, then by name. `None` when no
/// volume fits. See [`fit`] for the arguments.
pub fn best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    selector: Option<&berth_api::selectors::LabelSelector>,
    node: Option<NodeView<'_>>,
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let mut pre_bound: Option<&PersistentVolume> = None;
    let mut best: Option<(i64, usize, &str, &PersistentVolume)> = None;
    for volume in volumes {
        let name = volume.metadata.name.as_deref().unwrap_or("");
        match fit(claim, volume, selector, node, delay_binding) {
            Fit::PreBound => {
                if pre_bound.is_none_or(|p| name < p.metadata.name.as_deref().unwrap_or("")) {
                    pre_bound = Some(volume);
                }
            }
            Fit::Eligible => {
                let key = (capacity_bytes(volume), volume_modes(volume).len(), name);
                if best.is_none_or(|(c, m, n, _)| key < (c, m, n)) {
                    best = Some((key.0, key.1, key.2, volume));
                }
            }
            Fit::No => {}
        }
    }
    pre_bound.or(best.map(|(.., volume)| volume))
}

/// `checkVolumeSatisfyClaim`: whether the volume a claim names in `spec.volumeName` can be
/// its (the user chose it, so selector and phase do not count); the error says why not, in
/// upstream's words.
pub fn check_satisfies(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), &'static str> {
    if capacity_bytes(volume) < requested_bytes(claim) {
        return Err("requested PV is too small");
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match");
    }
    if volume_mode_mismatch(claim, volume) {
        return Err("incompatible volumeMode");
    }
    if !access_modes_cover(claim, volume) {
        return Err("incompatible accessMode");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_client::node_affinity::requirement_matches;
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, ObjectReference, PersistentVolumeClaimSpec,
        PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proptest::prelude::*;

    pub(crate) fn volume(name: &str, size: &str, class: &str, modes: &[&str]) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some([(STORAGE.to_string(), Quantity(size.into()))].into()),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                storage_class_name: (!class.is_empty()).then(|| class.to_string()),
                persistent_volume_reclaim_policy: Some("Retain".into()),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Available".into()),
                ..Default::default()
            }),
        }
    }

    pub(crate) fn claim(
        name: &str,
        size: &str,
        class: Option<&str>,
        modes: &[&str],
    ) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([(STORAGE.to_string(), Quantity(size.into()))].into()),
                    ..Default::default()
                }),
                storage_class_name: class.map(str::to_string),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn claim_ref(claim: &PersistentVolumeClaim, with_uid: bool) -> ObjectReference {
        ObjectReference {
            kind: Some("PersistentVolumeClaim".into()),
            api_version: Some("v1".into()),
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone(),
            uid: if with_uid {
                claim.metadata.uid.clone()
            } else {
                None
            },
            ..Default::default()
        }
    }

    fn pick<'a>(c: &PersistentVolumeClaim, vs: &'a [PersistentVolume]) -> Option<&'a str> {
        best_match(c, vs, None, None, false).and_then(|v| v.metadata.name.as_deref())
    }

    const RWO: &[&str] = &["ReadWriteOnce"];

    #[test]
    fn the_smallest_volume_that_is_big_enough_wins() {
        let vs = [
            volume("big", "10Gi", "", RWO),
            volume("small", "500Mi", "", RWO),
            volume("fit", "2Gi", "", RWO),
            volume("fit-too", "2048Mi", "", &["ReadWriteOnce", "ReadOnlyMany"]),
        ];
        assert_eq!(pick(&claim("c", "1Gi", Some(""), RWO), &vs), Some("fit"));
        assert_eq!(pick(&claim("c", "3Gi", Some(""), RWO), &vs), Some("big"));
        assert_eq!(pick(&claim("c", "11Gi", Some(""), RWO), &vs), None);
        // Equal capacity written two ways: fewer access modes first.
        assert_eq!(pick(&claim("c", "2Gi", None, RWO), &vs), Some("fit"));
    }

    #[test]
    fn class_access_modes_and_volume_mode_must_match() {
        let vs = [
            volume("fast", "1Gi", "fast", RWO),
            volume("none", "1Gi", "", RWO),
            volume("rwx", "5Gi", "", &["ReadWriteMany", "ReadWriteOnce"]),
        ];
        assert_eq!(
            pick(&claim("c", "1Gi", Some("fast"), RWO), &vs),
            Some("fast")
        );
        // No class and "" alike only take volumes without a class.
        assert_eq!(pick(&claim("c", "1Gi", None, RWO), &vs), Some("none"));
        assert_eq!(pick(&claim("c", "1Gi", Some(""), RWO), &vs), Some("none"));
        assert_eq!(pick(&claim("c", "1Gi", Some("slow"), RWO), &vs), None);
        assert_eq!(
            pick(&claim("c", "1Gi", Some(""), &["ReadWriteMany"]), &vs),
            Some("rwx")
        );
        let mut block = claim("c", "1Gi", Some(""), RWO);
        if let Some(spec) = block.spec.as_mut() {
            spec.volume_mode = Some("Block".into());
        }
        assert_eq!(pick(&block, &vs), None);
        let mut annotated = claim("c", "1Gi", None, RWO);
        annotated.metadata.annotations =
            Some([(BETA_STORAGE_CLASS.to_string(), "fast".to_string())].into());
        assert_eq!(pick(&annotated, &vs), Some("fast"));
    }

    #[test]
    fn only_available_unclaimed_volumes_not_being_deleted_are_candidates() {
        let c = claim("c", "1Gi", Some(""), RWO);
        let mut released = volume("released", "1Gi", "", RWO);
        released.status = Some(PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        let mut deleting = volume("deleting", "1Gi", "", RWO);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let mut theirs = volume("theirs", "1Gi", "", RWO);
        if let Some(spec) = theirs.spec.as_mut() {
            spec.claim_ref = Some(claim_ref(&claim("other", "1Gi", None, RWO), true));
        }
        assert_eq!(pick(&c, &[released, deleting, theirs]), None);
    }

    #[test]
    fn a_volume_pre_bound_to_the_claim_wins_over_a_smaller_one() {
        let c = claim("c", "1Gi", Some(""), RWO);
        let mut mine = volume("mine", "10Gi", "other-class", RWO);
        if let Some(spec) = mine.spec.as_mut() {
            spec.claim_ref = Some(claim_ref(&c, false));
        }
        // Its phase does not matter either (upstream takes a pre-bound volume as it is).
        mine.status = None;
        let vs = [volume("small", "1Gi", "", RWO), mine.clone()];
        assert_eq!(pick(&c, &vs), Some("mine"));
        // Even while binding is delayed.
        assert_eq!(
            best_match(&c, &vs, None, None, true).and_then(|v| v.metadata.name.as_deref()),
            Some("mine")
        );
        // A claimRef with another uid is an older claim of the same name: not this one's.
        if let Some(spec) = mine.spec.as_mut() {
            spec.claim_ref = Some(ObjectReference {
                uid: Some("older".into()),
                ..claim_ref(&c, false)
            });
        }
        assert_eq!(pick(&c, &[mine]), None);
    }

    #[test]
    fn delayed_binding_takes_only_pre_bound_volumes() {
        let c = claim("c", "1Gi", Some(""), RWO);
        let vs = [volume("v", "1Gi", "", RWO)];
        assert!(best_match(&c, &vs, None, None, true).is_none());
    }

    #[test]
    fn the_selector_filters_by_volume_labels() {
        let c = claim("c", "1Gi", Some(""), RWO);
        let mut labelled = volume("labelled", "5Gi", "", RWO);
        labelled.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
        let vs = [volume("plain", "1Gi", "", RWO), labelled];
        let selector = berth_api::selectors::LabelSelector::parse("tier=gold").expect("parses");
        let chosen = best_match(&c, &vs, Some(&selector), None, false);
        assert_eq!(
            chosen.and_then(|v| v.metadata.name.as_deref()),
            Some("labelled")
        );
    }

    fn on_node(volume: &mut PersistentVolume, node: &str) {
        if let Some(spec) = volume.spec.as_mut() {
            spec.node_affinity = Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            });
        }
    }

    #[test]
    fn node_affinity_must_admit_the_selected_node() {
        let c = claim("c", "1Gi", Some(""), RWO);
        let mut there = volume("there", "1Gi", "", RWO);
        on_node(&mut there, "b");
        let mut here = volume("here", "2Gi", "", RWO);
        on_node(&mut here, "a");
        let anywhere = volume("anywhere", "3Gi", "", RWO);
        let vs = [there, here, anywhere];
        let labels: BTreeMap<String, String> =
            [(HOSTNAME_LABEL.to_string(), "a".to_string())].into();
        let node = NodeView {
            name: "a",
            labels: &labels,
        };
        let chosen = best_match(&c, &vs, None, Some(node), false);
        assert_eq!(
            chosen.and_then(|v| v.metadata.name.as_deref()),
            Some("here")
        );
        // Without a node (an Immediate claim) node affinity is not the controller's concern.
        assert_eq!(pick(&c, &vs), Some("there"));
    }

    #[test]
    fn node_selector_operators() {
        let labels: BTreeMap<String, String> = [
            ("zone".to_string(), "z1".to_string()),
            ("size".to_string(), "5".to_string()),
        ]
        .into();
        let node = NodeView {
            name: "n",
            labels: &labels,
        };
        let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        assert!(requirement_matches(&req("zone", "In", &["z1"]), Some("z1")));
        assert!(!requirement_matches(
            &req("zone", "NotIn", &["z1"]),
            Some("z1")
        ));
        assert!(requirement_matches(&req("zone", "NotIn", &["z1"]), None));
        assert!(requirement_matches(&req("size", "Gt", &["4"]), Some("5")));
        assert!(!requirement_matches(&req("size", "Lt", &["4"]), Some("5")));
        assert!(requirement_matches(&req("x", "DoesNotExist", &[]), None));
        let empty = NodeSelectorTerm::default();
        assert!(!term_matches(&empty, node));
        let by_name = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n"])]),
        };
        assert!(term_matches(&by_name, node));
    }

    #[test]
    fn a_named_volume_is_checked_for_size_class_mode_and_access() {
        let c = claim("c", "2Gi", Some("fast"), RWO);
        assert_eq!(
            check_satisfies(&volume("v", "1Gi", "fast", RWO), &c),
            Err("requested PV is too small")
        );
        assert_eq!(
            check_satisfies(&volume("v", "2Gi", "", RWO), &c),
            Err("storageClassName does not match")
        );
        assert_eq!(
            check_satisfies(&volume("v", "2Gi", "fast", &["ReadOnlyMany"]), &c),
            Err("incompatible accessMode")
        );
        assert_eq!(
            check_satisfies(&volume("v", "2Gi", "fast", RWO), &c),
            Ok(())
        );
    }

    const MODES: [&str; 3] = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"];
    const CLASSES: [&str; 3] = ["", "fast", "slow"];
    const PHASES: [&str; 3] = ["Available", "Bound", "Released"];

    fn arb_volume() -> impl Strategy<Value = PersistentVolume> {
        (
            1u32..64,
            0usize..3,
            1u8..8,
            0usize..3,
            any::<bool>(),
            0u32..1000,
        )
            .prop_map(|(mib, class, modes, phase, claimed, n)| {
                let modes: Vec<&str> = MODES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| modes & (1 << i) != 0)
                    .map(|(_, m)| *m)
                    .collect();
                let mut v = volume(
                    &format!("v{n}"),
                    &format!("{mib}Mi"),
                    CLASSES[class],
                    &modes,
                );
                v.status = Some(PersistentVolumeStatus {
                    phase: Some(PHASES[phase].into()),
                    ..Default::default()
                });
                if claimed && let Some(spec) = v.spec.as_mut() {
                    spec.claim_ref = Some(claim_ref(&claim("other", "1Mi", None, RWO), true));
                }
                v
            })
    }

    proptest! {
        /// The chosen volume is eligible, and no eligible volume is smaller; nothing is chosen
        /// only when nothing is eligible.
        #[test]
        fn smallest_fit(
            volumes in proptest::collection::vec(arb_volume(), 0..12),
            mib in 1u32..64,
            class in 0usize..3,
            mode in 0usize..3,
        ) {
            let c = claim("c", &format!("{mib}Mi"), Some(CLASSES[class]), &[MODES[mode]]);
            let eligible: Vec<&PersistentVolume> = volumes
                .iter()
                .filter(|v| fit(&c, v, None, None, false) == Fit::Eligible)
                .collect();
            match best_match(&c, &volumes, None, None, false) {
                Some(chosen) => {
                    prop_assert_eq!(fit(&c, chosen, None, None, false), Fit::Eligible);
                    prop_assert!(capacity_bytes(chosen) >= requested_bytes(&c));
                    prop_assert!(access_modes_cover(&c, chosen));
                    prop_assert_eq!(volume_class(chosen), CLASSES[class]);
                    for other in &eligible {
                        prop_assert!(capacity_bytes(chosen) <= capacity_bytes(other));
                    }
                }
                None => prop_assert!(eligible.is_empty()),
            }
        }
    }
}
