//! Node selector terms (`nodeSelectorTerms`, as in a pod's required node affinity and a
//! PersistentVolume's node affinity) against a node's name and labels: what
//! `nodeaffinity.NewNodeSelector` decides upstream, for the scheduler and the PV controller
//! alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

/// The terms are OR'ed: some term must match. No terms match nothing.
pub fn selector_matches(
    selector: &NodeSelector,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, node_name, labels))
}

/// The requirements of a term are AND'ed; a term with no requirements at all matches no node.
pub fn term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // metadata.name is the only field Kubernetes supports in matchFields.
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(node_name))
        })
}

/// One requirement against the label's value (`None`: the node lacks the label). `Gt` and
/// `Lt` compare integers and fail on anything else.
pub fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let as_int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(as_int), values) else {
                return false;
            };
            let Some(want) = as_int(want) else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn operators_match_as_upstream() {
        assert!(requirement_matches(&req("z", "In", &["a"]), Some("a")));
        assert!(!requirement_matches(&req("z", "In", &["a"]), None));
        assert!(requirement_matches(&req("z", "NotIn", &["a"]), None));
        assert!(requirement_matches(&req("z", "Exists", &[]), Some("")));
        assert!(requirement_matches(&req("z", "DoesNotExist", &[]), None));
        assert!(requirement_matches(&req("z", "Gt", &["3"]), Some("4")));
        assert!(!requirement_matches(&req("z", "Lt", &["3"]), Some("x")));
        assert!(!requirement_matches(
            &req("z", "Gt", &["3", "4"]),
            Some("5")
        ));
    }

    #[test]
    fn terms_and_fields() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        let empty = NodeSelectorTerm::default();
        assert!(!term_matches(&empty, "n1", &labels));
        let by_name = NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.name", "In", &["n1"])]),
            ..Default::default()
        };
        assert!(term_matches(&by_name, "n1", &labels));
        assert!(!term_matches(&by_name, "n2", &labels));
        let selector = NodeSelector {
            node_selector_terms: vec![
                NodeSelectorTerm {
                    match_expressions: Some(vec![req("zone", "In", &["b"])]),
                    ..Default::default()
                },
                by_name,
            ],
        };
        assert!(selector_matches(&selector, "n1", &labels));
        assert!(!selector_matches(&selector, "n2", &labels));
    }
}
