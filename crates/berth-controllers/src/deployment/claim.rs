//! Which ReplicaSets a Deployment controls, as upstream's ReplicaSetControllerRefManager
//! decides it: its own that its selector still selects; orphans its selector selects (adopted,
//! unless the Deployment or the ReplicaSet is being deleted); its own that its selector no
//! longer selects are released. Other controllers' ReplicaSets are never touched.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use crate::Error;
use crate::pods;

/// The outcome of claiming a namespace's ReplicaSets.
#[derive(Debug, Default)]
pub struct Claims {
    /// Controlled by the Deployment and selected by it.
    pub owned: Vec<ReplicaSet>,
    /// Orphans to adopt (they join `owned` once adopted).
    pub adopt: Vec<ReplicaSet>,
    /// Controlled by the Deployment but no longer selected: to release.
    pub release: Vec<ReplicaSet>,
}

/// Sorts the ReplicaSets of the Deployment's namespace into owned, to adopt and to release.
pub fn claim<'a>(
    d: &Deployment,
    replica_sets: impl IntoIterator<Item = &'a ReplicaSet>,
) -> Result<Claims, Error> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d
        .metadata
        .uid
        .as_deref()
        .ok_or_else(|| Error::Incomplete(format!("deployment {name}"), "metadata.uid"))?;
    let selector = pods::selector(
        d.spec.as_ref().map(|s| &s.selector),
        &format!("deployment {name}"),
    )?;
    let deleting = d.metadata.deletion_timestamp.is_some();
    let mut claims = Claims::default();
    for rs in replica_sets {
        if rs.metadata.namespace != d.metadata.namespace {
            continue;
        }
        let selected = pods::selects(&selector, rs.metadata.labels.as_ref());
        match pods::controller_of(&rs.metadata) {
            Some(owner) if owner.uid == uid => {
                if selected {
                    claims.owned.push(rs.clone());
                } else if !deleting {
                    claims.release.push(rs.clone());
                }
            }
            Some(_) => {}
            None => {
                if selected && !deleting && rs.metadata.deletion_timestamp.is_none() {
                    claims.adopt.push(rs.clone());
                }
            }
        }
    }
    Ok(claims)
}

/// The ReplicaSet with the Deployment as its controller.
pub fn adopted(d: &Deployment, rs: &ReplicaSet) -> Result<ReplicaSet, Error> {
    let reference = pods::controller_reference(&d.metadata, "apps/v1", "Deployment")?;
    let mut rs = rs.clone();
    rs.metadata
        .owner_references
        .get_or_insert_with(Vec::new)
        .push(reference);
    Ok(rs)
}

/// The ReplicaSet without the Deployment's reference.
pub fn released(d: &Deployment, rs: &ReplicaSet) -> ReplicaSet {
    let mut rs = rs.clone();
    if let Some(refs) = rs.metadata.owner_references.as_mut() {
        refs.retain(|r| Some(&r.uid) != d.metadata.uid.as_ref());
        if refs.is_empty() {
            rs.metadata.owner_references = None;
        }
    }
    rs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference,
    };

    fn labels(app: &str) -> Option<std::collections::BTreeMap<String, String>> {
        Some([("app".to_string(), app.to_string())].into())
    }

    fn rs(name: &str, app: &str, owner: Option<&str>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: labels(app),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "x".into(),
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
    fn owns_adopts_and_releases_by_selector_and_controller_reference() {
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                selector: LabelSelector {
                    match_labels: labels("web"),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let all = [
            rs("mine", "web", Some("d-uid")),
            rs("orphan", "web", None),
            rs("strayed", "db", Some("d-uid")),
            rs("theirs", "web", Some("other")),
            rs("unrelated", "db", None),
        ];
        let claims = claim(&d, &all).unwrap();
        let names = |v: &[ReplicaSet]| -> Vec<String> {
            v.iter().filter_map(|r| r.metadata.name.clone()).collect()
        };
        assert_eq!(names(&claims.owned), ["mine"]);
        assert_eq!(names(&claims.adopt), ["orphan"]);
        assert_eq!(names(&claims.release), ["strayed"]);
        let adopted = adopted(&d, &all[1]).unwrap();
        assert_eq!(
            pods::controller_of(&adopted.metadata).map(|r| r.uid.as_str()),
            Some("d-uid")
        );
        assert!(released(&d, &all[2]).metadata.owner_references.is_none());
    }
}
