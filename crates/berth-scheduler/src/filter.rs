//! Filters: may this pod run on this node? Each is one of kube-scheduler's filter plugins,
//! run in kube-scheduler's order, and fails with the same reason text Kubernetes reports, so
//! the "0/3 nodes are available: …" message reads as it would on any cluster.
//!
//! The [`Filter`] trait is the extension point: volume-aware scheduling (PV node affinity,
//! WaitForFirstConsumer, ReadWriteOncePod) is one more `Filter`,
//! [`crate::volumes::VolumeBinding`], last in [`default_filters`].
//!
//! Node readiness is not checked here: Kubernetes filters NotReady nodes through the taints
//! `node.kubernetes.io/not-ready` and `…/unreachable` that the node lifecycle controller adds,
//! and [`TaintToleration`] already honours those once something sets them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm, Pod, Taint, Toleration};

use crate::snapshot::{NodeInfo, Snapshot, pod_requests};

/// One predicate over (pod, node). `Err` holds the reasons the node does not fit; most
/// filters give one, the resource filter one per insufficient resource, as Kubernetes does.
pub trait Filter: Send + Sync {
    fn filter(&self, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> Result<(), Vec<String>>;
}

/// The filters berth runs, in kube-scheduler's order; a node is rejected by the first that fails.
pub fn default_filters() -> Vec<Box<dyn Filter>> {
    vec![
        Box::new(NodeUnschedulable),
        Box::new(TaintToleration),
        Box::new(NodeAffinity),
        Box::new(NodeResourcesFit),
        Box::new(crate::volumes::VolumeBinding),
    ]
}

fn fail(reason: impl Into<String>) -> Result<(), Vec<String>> {
    Err(vec![reason.into()])
}

/// `spec.unschedulable` (a cordoned node) keeps new pods off, unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint that stands for it.
pub struct NodeUnschedulable;

impl Filter for NodeUnschedulable {
    fn filter(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> Result<(), Vec<String>> {
        let unschedulable = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !unschedulable {
            return Ok(());
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
            return Ok(());
        }
        fail("node(s) were unschedulable")
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// `Toleration.ToleratesTaint`: the effect matches (empty tolerates every effect), the key
/// matches (empty with `Exists` tolerates every key), and the value is equal unless `Exists`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Taints with effect NoSchedule or NoExecute keep off every pod that does not tolerate them
/// (PreferNoSchedule only lowers a score in Kubernetes; berth does not score by it).
pub struct TaintToleration;

impl Filter for TaintToleration {
    fn filter(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> Result<(), Vec<String>> {
        let taints = node.node.spec.as_ref().and_then(|s| s.taints.as_deref());
        let untolerated = taints.unwrap_or(&[]).iter().find(|taint| {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tolerations(pod).iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Ok(()),
            Some(taint) => fail(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )),
        }
    }
}

/// `spec.nodeSelector` (every pair must be a node label) and the required node affinity
/// (`nodeSelectorTerms` are OR'ed, the requirements inside a term AND'ed).
pub struct NodeAffinity;

impl Filter for NodeAffinity {
    fn filter(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> Result<(), Vec<String>> {
        if matches_node_selector_and_affinity(pod, &node.node) {
            Ok(())
        } else {
            fail("node(s) didn't match Pod's node affinity/selector")
        }
    }
}

fn matches_node_selector_and_affinity(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !selector_ok {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|term| term_matches(term, node, labels)),
    }
}

/// A term with no requirements at all matches no node (`nodeaffinity.NewNodeSelector`).
pub(crate) fn term_matches(
    term: &NodeSelectorTerm,
    node: &Node,
    labels: &BTreeMap<String, String>,
) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    berth_client::node_affinity::term_matches(term, name, labels)
}

/// The pod's effective requests must fit in the node's allocatable minus what the pods
/// already on it request; the pod itself counts against `pods`.
pub struct NodeResourcesFit;

impl Filter for NodeResourcesFit {
    fn filter(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> Result<(), Vec<String>> {
        let (allocatable, max_pods) = node.allocatable();
        let want = pod_requests(pod);
        let mut reasons = Vec::new();
        if node.pods + 1 > max_pods {
            reasons.push("Too many pods".to_string());
        }
        // A zero request always fits, even on a node that is already overcommitted.
        if want.milli_cpu > 0
            && want.milli_cpu
                > allocatable
                    .milli_cpu
                    .saturating_sub(node.requested.milli_cpu)
        {
            reasons.push("Insufficient cpu".to_string());
        }
        if want.memory > 0 && want.memory > allocatable.memory.saturating_sub(node.requested.memory)
        {
            reasons.push("Insufficient memory".to_string());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{container, node, pod};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity as Affinity_, NodeSelector, NodeSelectorRequirement, NodeSpec,
    };

    fn run(f: &dyn Filter, p: &Pod, n: &Node) -> Result<(), Vec<String>> {
        let info = NodeInfo::new(std::sync::Arc::new(n.clone()));
        f.filter(p, &info, &Snapshot::default())
    }

    fn one(reason: &str) -> Result<(), Vec<String>> {
        Err(vec![reason.to_string()])
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            ..Default::default()
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cordoned_nodes_are_filtered_unless_tolerated() {
        let mut n = node("a", "1", "1Gi");
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let mut p = pod("p");
        assert_eq!(
            run(&NodeUnschedulable, &p, &n),
            one("node(s) were unschedulable")
        );
        p.spec.as_mut().expect("spec").tolerations = Some(vec![toleration(
            "node.kubernetes.io/unschedulable",
            "Exists",
            "",
            "NoSchedule",
        )]);
        assert_eq!(run(&NodeUnschedulable, &p, &n), Ok(()));
    }

    #[test]
    fn toleration_matching() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(
            tolerates(&toleration("dedicated", "", "gpu", ""), &t),
            "empty op is Equal, empty effect all"
        );
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(
            &toleration("dedicated", "Exists", "", "NoSchedule"),
            &t
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Exists", "", "NoExecute"),
            &t
        ));
        assert!(
            tolerates(&toleration("", "Exists", "", ""), &t),
            "tolerates everything"
        );
        assert!(!tolerates(&toleration("", "Equal", "", ""), &t));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
    }

    #[test]
    fn taints_with_no_schedule_or_no_execute_need_a_toleration() {
        let mut n = node("a", "1", "1Gi");
        n.spec = Some(NodeSpec {
            taints: Some(vec![
                taint("soft", "", "PreferNoSchedule"),
                taint("dedicated", "gpu", "NoSchedule"),
            ]),
            ..Default::default()
        });
        let mut p = pod("p");
        assert_eq!(
            run(&TaintToleration, &p, &n),
            one("node(s) had untolerated taint {dedicated: gpu}")
        );
        p.spec.as_mut().expect("spec").tolerations =
            Some(vec![toleration("dedicated", "Equal", "gpu", "NoSchedule")]);
        assert_eq!(run(&TaintToleration, &p, &n), Ok(()));

        n.spec.as_mut().expect("spec").taints = Some(vec![taint("gone", "", "NoExecute")]);
        assert_eq!(
            run(&TaintToleration, &p, &n),
            one("node(s) had untolerated taint {gone: }")
        );
    }

    #[test]
    fn node_selector_needs_every_label() {
        let mut n = node("a", "1", "1Gi");
        n.metadata.labels = Some([("disk".to_string(), "ssd".to_string())].into());
        let mut p = pod("p");
        assert_eq!(run(&NodeAffinity, &p, &n), Ok(()));
        p.spec.as_mut().expect("spec").node_selector =
            Some([("disk".to_string(), "ssd".to_string())].into());
        assert_eq!(run(&NodeAffinity, &p, &n), Ok(()));
        p.spec
            .as_mut()
            .expect("spec")
            .node_selector
            .as_mut()
            .expect("selector")
            .insert("zone".into(), "x".into());
        assert_eq!(
            run(&NodeAffinity, &p, &n),
            one("node(s) didn't match Pod's node affinity/selector")
        );
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn with_affinity(terms: Vec<NodeSelectorTerm>) -> Pod {
        let mut p = pod("p");
        p.spec.as_mut().expect("spec").affinity = Some(Affinity {
            node_affinity: Some(Affinity_ {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn exprs(reqs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(reqs),
            match_fields: None,
        }
    }

    #[test]
    fn required_node_affinity_operators() {
        let mut n = node("a", "1", "1Gi");
        n.metadata.labels = Some(
            [("zone", "x"), ("gen", "5")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        let fits = |reqs: Vec<NodeSelectorRequirement>| {
            run(&NodeAffinity, &with_affinity(vec![exprs(reqs)]), &n).is_ok()
        };
        assert!(fits(vec![req("zone", "In", &["x", "y"])]));
        assert!(!fits(vec![req("zone", "In", &["y"])]));
        assert!(fits(vec![req("zone", "NotIn", &["y"])]));
        assert!(
            fits(vec![req("missing", "NotIn", &["y"])]),
            "absent label is not in"
        );
        assert!(!fits(vec![req("zone", "NotIn", &["x"])]));
        assert!(fits(vec![req("zone", "Exists", &[])]));
        assert!(!fits(vec![req("missing", "Exists", &[])]));
        assert!(fits(vec![req("missing", "DoesNotExist", &[])]));
        assert!(!fits(vec![req("zone", "DoesNotExist", &[])]));
        assert!(fits(vec![req("gen", "Gt", &["4"])]));
        assert!(!fits(vec![req("gen", "Gt", &["5"])]));
        assert!(fits(vec![req("gen", "Lt", &["6"])]));
        assert!(!fits(vec![req("zone", "Lt", &["6"])]), "non-integer label");
        assert!(
            !fits(vec![req("zone", "In", &["x"]), req("gen", "In", &["4"])]),
            "AND within a term"
        );
        assert!(!fits(vec![]), "an empty term matches nothing");
    }

    #[test]
    fn terms_are_ored_and_match_fields_uses_the_node_name() {
        let n = node("a", "1", "1Gi");
        let by_name = |op: &str, names: &[&str]| NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", op, names)]),
        };
        let p = with_affinity(vec![
            exprs(vec![req("zone", "Exists", &[])]),
            by_name("In", &["a"]),
        ]);
        assert_eq!(run(&NodeAffinity, &p, &n), Ok(()));
        let p = with_affinity(vec![by_name("NotIn", &["a"])]);
        assert!(run(&NodeAffinity, &p, &n).is_err());
        let p = with_affinity(vec![by_name("In", &["b"])]);
        assert!(run(&NodeAffinity, &p, &n).is_err());
    }

    #[test]
    fn resources_fit_against_allocatable_minus_requested() {
        let n = node("a", "2", "1Gi");
        let mut info = NodeInfo::new(std::sync::Arc::new(n));
        let mut p = pod("p");
        p.spec.as_mut().expect("spec").containers = vec![container("1500m", "512Mi")];
        let snap = Snapshot::default();
        assert_eq!(NodeResourcesFit.filter(&p, &info, &snap), Ok(()));
        info.requested.milli_cpu = 1000;
        info.requested.memory = 768 << 20;
        assert_eq!(
            NodeResourcesFit.filter(&p, &info, &snap),
            Err(vec![
                "Insufficient cpu".into(),
                "Insufficient memory".into()
            ])
        );
        info.requested = Default::default();
        info.pods = 110;
        assert_eq!(
            NodeResourcesFit.filter(&p, &info, &snap),
            Err(vec!["Too many pods".into()])
        );
        // A pod that requests nothing fits an overcommitted node that has a pod slot.
        info.pods = 0;
        info.requested.milli_cpu = 5000;
        assert_eq!(NodeResourcesFit.filter(&pod("empty"), &info, &snap), Ok(()));
    }
}
