//! Volume-aware scheduling: kube-scheduler's VolumeBinding and VolumeRestrictions plugins for
//! PersistentVolumeClaims.
//!
//! A pod may go to a node only if every claim it mounts can be there:
//! - a missing or deleting claim keeps the pod off every node;
//! - a bound claim's volume must admit the node through its node affinity (a local volume's
//!   data lives on one node);
//! - an unbound claim whose class binds `Immediate` (or that has no class) must be bound first
//!   by the PersistentVolume controller, so the pod waits;
//! - an unbound `WaitForFirstConsumer` claim is bound for the pod: once a node is chosen the
//!   scheduler writes it into the claim as `volume.kubernetes.io/selected-node` (the provisioner
//!   provisions there, or the controller binds a volume that admits it) and binds the pod only
//!   when every claim is Bound — kube-scheduler's PreBind, level-triggered: the pass that sees
//!   the claims Bound binds the pod;
//! - a `ReadWriteOncePod` claim already used by a scheduled pod keeps other pods off.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::filter::{Filter, term_matches};
use crate::snapshot::{NodeInfo, Snapshot};

/// The annotation that tells the provisioner (and the PV controller) the node the claim's
/// first consumer was scheduled to.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The claims, volumes and classes a pass sees, and which scheduled pods use which claim.
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    claims: HashMap<(String, String), Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
    /// (namespace, claim) → uids of pods on a node (bound or assumed) that mount it.
    users: HashMap<(String, String), Vec<String>>,
}

fn key_of<K: kube::Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The names of the claims `pod` mounts, in volume order.
pub fn claims_of(pod: &Pod) -> Vec<&str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .collect()
}

/// What stands between a pod's claim and a node.
#[derive(Clone, Debug, PartialEq)]
enum ClaimState<'a> {
    Missing,
    Deleting,
    /// Bound to this volume (which may be missing from the cache).
    Bound(Option<&'a PersistentVolume>),
    /// Unbound; waits for the PV controller.
    Immediate,
    /// Unbound, WaitForFirstConsumer; the node already selected, if any.
    WaitingForConsumer(Option<&'a str>),
}

impl Volumes {
    pub fn new(
        claims: &[Arc<PersistentVolumeClaim>],
        volumes: &[Arc<PersistentVolume>],
        classes: &[Arc<StorageClass>],
    ) -> Volumes {
        Volumes {
            claims: claims
                .iter()
                .map(|c| (key_of(c.as_ref()), c.clone()))
                .collect(),
            volumes: volumes
                .iter()
                .map(|v| (v.metadata.name.clone().unwrap_or_default(), v.clone()))
                .collect(),
            classes: classes
                .iter()
                .map(|c| (c.metadata.name.clone().unwrap_or_default(), c.clone()))
                .collect(),
            users: HashMap::new(),
        }
    }

    /// Records that `pod`, placed on a node, mounts its claims.
    pub fn add_user(&mut self, pod: &Pod) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for claim in claims_of(pod) {
            self.users
                .entry((namespace.clone(), claim.to_string()))
                .or_default()
                .push(uid.clone());
        }
    }

    fn claim(&self, namespace: &str, name: &str) -> Option<&PersistentVolumeClaim> {
        self.claims
            .get(&(namespace.to_string(), name.to_string()))
            .map(Arc::as_ref)
    }

    fn state(&self, namespace: &str, name: &str) -> ClaimState<'_> {
        let Some(claim) = self.claim(namespace, name) else {
            return ClaimState::Missing;
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return ClaimState::Deleting;
        }
        let spec = claim.spec.as_ref();
        let volume_name = spec
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty());
        if let Some(volume) = volume_name {
            return ClaimState::Bound(self.volumes.get(volume).map(Arc::as_ref));
        }
        let class = spec
            .and_then(|s| s.storage_class_name.as_deref())
            .filter(|c| !c.is_empty())
            .and_then(|c| self.classes.get(c));
        let waits = class
            .and_then(|c| c.volume_binding_mode.as_deref())
            .is_some_and(|mode| mode == "WaitForFirstConsumer");
        if waits {
            let selected = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SELECTED_NODE))
                .map(String::as_str);
            ClaimState::WaitingForConsumer(selected)
        } else {
            ClaimState::Immediate
        }
    }

    /// The WaitForFirstConsumer claims of `pod` that do not name `node` yet: the scheduler
    /// writes the node into them before binding.
    pub fn claims_to_select(&self, pod: &Pod, node: &str) -> Vec<String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        claims_of(pod)
            .into_iter()
            .filter(|claim| {
                matches!(self.state(namespace, claim),
                    ClaimState::WaitingForConsumer(selected) if selected != Some(node))
            })
            .map(str::to_string)
            .collect()
    }

    /// Whether every claim of `pod` is bound, so the pod itself may be bound.
    pub fn all_bound(&self, pod: &Pod) -> bool {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        claims_of(pod)
            .into_iter()
            .all(|claim| matches!(self.state(namespace, claim), ClaimState::Bound(Some(_))))
    }

    /// A fingerprint of what volume verdicts depend on: claims' and volumes' versions.
    pub fn versions(&self) -> Vec<(String, String)> {
        let mut versions: Vec<(String, String)> = self
            .claims
            .values()
            .map(|c| {
                (
                    format!("pvc/{}/{}", key_of(c.as_ref()).0, key_of(c.as_ref()).1),
                    c.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .chain(self.volumes.values().map(|v| {
                (
                    format!("pv/{}", v.metadata.name.as_deref().unwrap_or_default()),
                    v.metadata.resource_version.clone().unwrap_or_default(),
                )
            }))
            .chain(self.classes.values().map(|c| {
                (
                    format!("sc/{}", c.metadata.name.as_deref().unwrap_or_default()),
                    c.metadata.resource_version.clone().unwrap_or_default(),
                )
            }))
            .collect();
        versions.sort();
        versions
    }
}

/// Whether `volume`'s required node affinity admits `node` (no affinity admits every node).
fn admits(volume: &PersistentVolume, node: &Node) -> bool {
    let required = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    let Some(required) = required else {
        return true;
    };
    let empty = Default::default();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    required
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, node, labels))
}

fn fail(reason: impl Into<String>) -> Result<(), Vec<String>> {
    Err(vec![reason.into()])
}

/// VolumeRestrictions (ReadWriteOncePod) and VolumeBinding, with upstream's reason texts.
pub struct VolumeBinding;

impl Filter for VolumeBinding {
    fn filter(&self, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> Result<(), Vec<String>> {
        let volumes = &snapshot.volumes;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let mut unbound_immediate = false;
        for claim_name in claims_of(pod) {
            match volumes.state(namespace, claim_name) {
                ClaimState::Missing => {
                    return fail(format!("persistentvolumeclaim \"{claim_name}\" not found"));
                }
                ClaimState::Deleting => {
                    return fail(format!(
                        "persistentvolumeclaim \"{claim_name}\" is being deleted"
                    ));
                }
                ClaimState::Bound(None) => {
                    return fail(
                        "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)",
                    );
                }
                ClaimState::Bound(Some(volume)) => {
                    if !admits(volume, &node.node) {
                        return fail("node(s) had volume node affinity conflict");
                    }
                }
                ClaimState::Immediate => unbound_immediate = true,
                ClaimState::WaitingForConsumer(Some(selected)) if selected != node.name() => {
                    return fail("node(s) did not match the node selected for a volume");
                }
                ClaimState::WaitingForConsumer(_) => {}
            }
            let once_pod = volumes
                .claim(namespace, claim_name)
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.access_modes.as_ref())
                .is_some_and(|modes| modes.iter().any(|m| m == "ReadWriteOncePod"));
            let users = volumes
                .users
                .get(&(namespace.to_string(), claim_name.to_string()));
            if once_pod && users.is_some_and(|u| u.iter().any(|other| other != uid)) {
                return fail(
                    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode",
                );
            }
        }
        if unbound_immediate {
            return fail("pod has unbound immediate PersistentVolumeClaims");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Volume, VolumeNodeAffinity,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn mounting(name: &str, claim: &str) -> Pod {
        let mut p = pod(name);
        p.spec.as_mut().expect("spec").volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: None,
            }),
            ..Default::default()
        }]);
        p
    }

    fn claim(
        name: &str,
        class: &str,
        volume: Option<&str>,
        modes: &[&str],
    ) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                volume_name: volume.map(str::to_string),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn class(name: &str, mode: &str) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            provisioner: "berth.dev/local-path".into(),
            volume_binding_mode: Some(mode.into()),
            ..Default::default()
        }
    }

    fn volume_on(name: &str, host: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "kubernetes.io/hostname".into(),
                                operator: "In".into(),
                                values: Some(vec![host.into()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn labelled(name: &str) -> NodeInfo {
        let mut n = node(name, "4", "4Gi");
        n.metadata.labels = Some([("kubernetes.io/hostname".to_string(), name.to_string())].into());
        NodeInfo::new(Arc::new(n))
    }

    fn snapshot(volumes: Volumes) -> Snapshot {
        Snapshot {
            nodes: vec![labelled("a"), labelled("b")],
            volumes,
        }
    }

    fn verdict(p: &Pod, s: &Snapshot) -> Vec<Result<(), Vec<String>>> {
        s.nodes
            .iter()
            .map(|n| VolumeBinding.filter(p, n, s))
            .collect()
    }

    #[test]
    fn a_bound_claim_pins_the_pod_to_its_volumes_node() {
        let volumes = Volumes::new(
            &[Arc::new(claim(
                "data",
                "local-path",
                Some("pv1"),
                &["ReadWriteOnce"],
            ))],
            &[Arc::new(volume_on("pv1", "b"))],
            &[Arc::new(class("local-path", "WaitForFirstConsumer"))],
        );
        let s = snapshot(volumes);
        let p = mounting("p", "data");
        assert_eq!(
            verdict(&p, &s),
            [fail("node(s) had volume node affinity conflict"), Ok(())]
        );
        assert!(s.volumes.all_bound(&p));
        assert!(s.volumes.claims_to_select(&p, "b").is_empty());
    }

    #[test]
    fn missing_and_immediate_unbound_claims_keep_the_pod_pending() {
        let s = snapshot(Volumes::new(&[], &[], &[]));
        assert_eq!(
            verdict(&mounting("p", "gone"), &s)[0],
            fail("persistentvolumeclaim \"gone\" not found")
        );
        let volumes = Volumes::new(
            &[Arc::new(claim("data", "fast", None, &["ReadWriteOnce"]))],
            &[],
            &[Arc::new(class("fast", "Immediate"))],
        );
        let s = snapshot(volumes);
        assert_eq!(
            verdict(&mounting("p", "data"), &s)[1],
            fail("pod has unbound immediate PersistentVolumeClaims")
        );
    }

    #[test]
    fn wait_for_first_consumer_claims_get_the_chosen_node() {
        let volumes = Volumes::new(
            &[Arc::new(claim(
                "data",
                "local-path",
                None,
                &["ReadWriteOnce"],
            ))],
            &[],
            &[Arc::new(class("local-path", "WaitForFirstConsumer"))],
        );
        let s = snapshot(volumes);
        let p = mounting("p", "data");
        assert_eq!(verdict(&p, &s), [Ok(()), Ok(())]);
        assert_eq!(s.volumes.claims_to_select(&p, "a"), ["data"]);
        assert!(!s.volumes.all_bound(&p));
        // Once selected, only that node fits and nothing more is written for it.
        let mut selected = claim("data", "local-path", None, &["ReadWriteOnce"]);
        selected.metadata.annotations = Some([(SELECTED_NODE.to_string(), "a".to_string())].into());
        let s = snapshot(Volumes::new(
            &[Arc::new(selected)],
            &[],
            &[Arc::new(class("local-path", "WaitForFirstConsumer"))],
        ));
        assert!(verdict(&p, &s)[0].is_ok());
        assert!(verdict(&p, &s)[1].is_err());
        assert!(s.volumes.claims_to_select(&p, "a").is_empty());
    }

    #[test]
    fn a_read_write_once_pod_claim_takes_one_pod() {
        let mut volumes = Volumes::new(
            &[Arc::new(claim(
                "solo",
                "local-path",
                Some("pv1"),
                &["ReadWriteOncePod"],
            ))],
            &[Arc::new(volume_on("pv1", "a"))],
            &[],
        );
        let first = mounting("first", "solo");
        volumes.add_user(&first);
        let s = snapshot(volumes);
        assert!(verdict(&first, &s)[0].is_ok(), "the user itself still fits");
        assert_eq!(
            verdict(&mounting("second", "solo"), &s)[0],
            fail(
                "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
            )
        );
    }

    #[test]
    fn a_claim_bound_to_a_missing_volume_fits_nowhere() {
        let volumes = Volumes::new(
            &[Arc::new(claim(
                "data",
                "",
                Some("nope"),
                &["ReadWriteOnce"],
            ))],
            &[],
            &[],
        );
        let s = snapshot(volumes);
        assert!(
            verdict(&mounting("p", "data"), &s)
                .iter()
                .all(Result::is_err)
        );
    }
}
