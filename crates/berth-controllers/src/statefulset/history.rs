//! A StatefulSet's ControllerRevisions, without I/O: what a revision holds, how it is named,
//! which revisions are the set's current and update revisions, and which old ones go
//! (upstream's `history` package and `getStatefulSetRevisions` / `truncateHistory`).
//!
//! A revision stores what `kubectl rollout history|undo sts/<name>` read and apply: `data`
//! is the strategic merge patch `{"spec": {"template": {…, "$patch": "replace"}}}` that
//! restores the set's pod template, as upstream's `getPatch` writes it. Its name is
//! `<set>-<hash>` (the hash of the template and the collision count, also in the
//! `controller.kubernetes.io/hash` label), its labels are the template's, its annotations the
//! set's (so `kubernetes.io/change-cause` shows in the history), and the set controls it.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Value, json};

use super::identity;
use crate::{Error, pods};

/// The label holding a revision's hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The set's pod template, as the API server stored it.
pub fn set_template(set: &StatefulSet) -> PodTemplateSpec {
    set.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// The patch a revision stores for `template`.
pub fn data_for(template: &PodTemplateSpec) -> Result<Value, Error> {
    let mut template = serde_json::to_value(template)?;
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    Ok(json!({"spec": {"template": template}}))
}

/// The pod template a revision restores (`None` when its data is not a template patch).
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let data = revision.data.as_ref()?;
    let template = data.0.get("spec")?.get("template")?;
    // k8s-openapi's decoding skips the `$patch` directive as an unknown field.
    serde_json::from_value(template.clone()).ok()
}

/// The revision of `set`'s current template numbered `number`, named for `collision_count`.
pub fn new_revision(
    set: &StatefulSet,
    number: i64,
    collision_count: i32,
) -> Result<ControllerRevision, Error> {
    let template = set_template(set);
    let hash = pods::template_hash(&template, (collision_count > 0).then_some(collision_count));
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    let name = format!(
        "{}-{hash}",
        set.metadata.name.as_deref().unwrap_or_default()
    );
    Ok(ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![pods::controller_reference(
                &set.metadata,
                "apps/v1",
                "StatefulSet",
            )?]),
            ..Default::default()
        },
        data: Some(RawExtension(data_for(&template)?)),
        revision: number,
    })
}

/// Two revisions restore the same template (upstream's `EqualRevision`, on the decoded
/// template rather than bytes: the API server may print the same JSON differently).
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    matches!((template_of(a), template_of(b)), (Some(x), Some(y)) if x == y)
}

/// Sorted as upstream's `SortControllerRevisions`: by revision number, then creation time,
/// then name.
pub fn sort(revisions: &mut [&ControllerRevision]) {
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t =
                    |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// What becomes of the update revision.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateRevision {
    /// The newest revision already restores the set's template.
    Latest(String),
    /// An older revision does (a rollback): it is renumbered to be the newest.
    Renumber { name: String, revision: i64 },
    /// No revision does: create this one (on a name collision with a different revision,
    /// bump the collision count and try again).
    Create(Box<ControllerRevision>),
}

/// The set's revisions sorted, the update revision to use or make, and the current revision
/// (the one status names, if it still exists; else the update revision).
#[derive(Debug)]
pub struct Selection {
    pub update: UpdateRevision,
    pub current: Option<String>,
}

/// Upstream's `getStatefulSetRevisions`, deciding without writing. `revisions` are the set's
/// own, sorted with [`sort`].
pub fn select(set: &StatefulSet, revisions: &[&ControllerRevision]) -> Result<Selection, Error> {
    let collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let next = revisions.last().map_or(1, |r| r.revision + 1);
    let candidate = new_revision(set, next, collision_count)?;
    let equal_revisions: Vec<&&ControllerRevision> =
        revisions.iter().filter(|r| equal(r, &candidate)).collect();
    let name = |r: &ControllerRevision| r.metadata.name.clone().unwrap_or_default();
    let update = match (equal_revisions.last(), revisions.last()) {
        (Some(equal), Some(latest)) if name(equal) == name(latest) => {
            UpdateRevision::Latest(name(latest))
        }
        (Some(equal), _) => UpdateRevision::Renumber {
            name: name(equal),
            revision: next,
        },
        (None, _) => UpdateRevision::Create(Box::new(candidate)),
    };
    let status_current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref());
    let current = status_current
        .filter(|c| {
            revisions
                .iter()
                .any(|r| r.metadata.name.as_deref() == Some(c))
        })
        .map(str::to_string);
    Ok(Selection { update, current })
}

/// The revisions beyond `spec.revisionHistoryLimit` to delete: the oldest that are neither
/// the current nor the update revision nor any pod's (upstream's `truncateHistory`).
pub fn to_truncate<'a>(
    set: &StatefulSet,
    revisions: &[&'a ControllerRevision],
    current: &str,
    update: &str,
    pods: &[&Pod],
) -> Vec<&'a ControllerRevision> {
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut live: HashSet<&str> = [current, update].into();
    live.extend(pods.iter().map(|p| identity::pod_revision(p)));
    let history: Vec<&ControllerRevision> = revisions
        .iter()
        .copied()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    let excess = history.len().saturating_sub(limit);
    history.into_iter().take(excess).collect()
}

/// Revisions by name, for looking up the current and update revisions' templates.
pub fn by_name<'a>(
    revisions: &[&'a ControllerRevision],
) -> BTreeMap<String, &'a ControllerRevision> {
    revisions
        .iter()
        .filter_map(|r| Some((r.metadata.name.clone()?, *r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn with_image(mut set: StatefulSet, image: &str) -> StatefulSet {
        let spec = set.spec.as_mut().expect("spec");
        spec.template.spec.as_mut().expect("pod spec").containers[0].image = Some(image.into());
        set
    }

    #[test]
    fn a_revision_is_the_template_patch_named_by_its_hash() {
        let set = stateful_set(2);
        let revision = new_revision(&set, 1, 0).expect("revision");
        let name = revision.metadata.name.clone().expect("name");
        let hash = &revision.metadata.labels.as_ref().expect("labels")[HASH_LABEL];
        assert_eq!(name, format!("web-{hash}"));
        let data = &revision.data.as_ref().expect("data").0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(template_of(&revision), Some(set_template(&set)));
        assert_eq!(
            revision.metadata.labels.as_ref().expect("labels")["app"],
            "web"
        );
        let bumped = new_revision(&set, 1, 1).expect("revision");
        assert_ne!(bumped.metadata.name, revision.metadata.name);
        assert!(equal(&bumped, &revision));
    }

    #[test]
    fn the_update_revision_is_reused_created_or_renumbered_on_rollback() {
        let v1 = stateful_set(2);
        let r1 = new_revision(&v1, 1, 0).expect("r1");
        let selection = select(&v1, &[&r1]).expect("select");
        assert_eq!(
            selection.update,
            UpdateRevision::Latest(r1.metadata.name.clone().expect("name"))
        );
        assert_eq!(selection.current, None);

        let v2 = with_image(stateful_set(2), "busybox:v2");
        let UpdateRevision::Create(r2) = select(&v2, &[&r1]).expect("select").update else {
            panic!("a new template makes a new revision");
        };
        assert_eq!(r2.revision, 2);

        // Back to v1's template: v1's revision becomes number 3.
        let selection = select(&v1, &[&r1, &r2]).expect("select");
        assert_eq!(
            selection.update,
            UpdateRevision::Renumber {
                name: r1.metadata.name.clone().expect("name"),
                revision: 3
            }
        );
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_first_but_never_a_live_revision() {
        let mut set = stateful_set(1);
        set.spec.as_mut().expect("spec").revision_history_limit = Some(1);
        let revisions: Vec<ControllerRevision> = (1..=4)
            .map(|n| {
                let s = with_image(stateful_set(1), &format!("busybox:v{n}"));
                new_revision(&s, n, 0).expect("revision")
            })
            .collect();
        let refs: Vec<&ControllerRevision> = revisions.iter().collect();
        let name = |i: usize| revisions[i].metadata.name.clone().expect("name");
        let mut pod = pod(&set, 0);
        pod.metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert(identity::REVISION_LABEL.into(), name(0));
        let gone: Vec<String> = to_truncate(&set, &refs, &name(3), &name(3), &[&pod])
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        // Live: 0 (a pod's) and 3; history 1, 2; the limit keeps the newest, 2.
        assert_eq!(gone, [name(1)]);
    }
}
