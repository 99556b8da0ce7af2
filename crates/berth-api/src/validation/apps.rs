//! apps/v1: Deployments, ReplicaSets, StatefulSets and ControllerRevisions
//! (`pkg/apis/apps/validation`, plus the selector immutability of the apps/v1 registry).

use k8s_openapi::api::apps::v1::{
    ControllerRevision, Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
    StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{self, IMMUTABLE, NameRule, nonnegative};
use super::names;
use super::pod::validate_pod_template_spec;
use super::render::{self, Raw};
use super::storage::validate_pvc_spec;
use super::{Errors, FieldError, Path};

fn meta_path() -> Path {
    Path::new("metadata")
}

fn spec_path() -> Path {
    Path::new("spec")
}

/// k8s-openapi turns a missing selector into `{}`; with neither list present it is taken as
/// missing, which is by far the likelier mistake (and what Kubernetes reports for it).
fn selector_missing(sel: &LabelSelector) -> bool {
    sel.match_labels.is_none() && sel.match_expressions.is_none()
}

/// The selector checks Deployments, ReplicaSets and StatefulSets share, and the template's
/// labels against it. `kind` words the empty-selector message.
fn selector_and_template_labels(
    sel: &LabelSelector,
    template: &PodTemplateSpec,
    kind: &str,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    let sel_path = path.child("selector");
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let labels_path = path.child("template").child("metadata").child("labels");
    if selector_missing(sel) {
        errs.push(FieldError::required(&sel_path, ""));
        // A nil selector matches nothing, so the template cannot match it either.
        errs.push(FieldError::invalid(
            &labels_path,
            &Raw(render::string_map(labels)),
            "`selector` does not match template `labels`",
        ));
        return errs;
    }
    errs.extend(meta::validate_label_selector(sel, &sel_path));
    if meta::selector_is_empty(sel) {
        errs.push(FieldError::invalid(
            &sel_path,
            &Raw(render::label_selector(sel)),
            format!("empty selector is invalid for {kind}"),
        ));
    }
    if !meta::selector_is_usable(sel) {
        let detail = if kind == "statefulset" {
            ""
        } else {
            "invalid label selector"
        };
        errs.push(FieldError::invalid(
            &sel_path,
            &Raw(render::label_selector(sel)),
            detail,
        ));
    } else if !meta::selector_is_empty(sel) && !meta::selector_matches(sel, labels) {
        errs.push(FieldError::invalid(
            &labels_path,
            &Raw(render::string_map(labels)),
            "`selector` does not match template `labels`",
        ));
    }
    errs
}

/// ValidatePodTemplateSpecForReplicaSet minus the label match: template rules plus
/// restartPolicy Always and no activeDeadlineSeconds.
fn replica_template(template: &PodTemplateSpec, owner: &str, path: &Path) -> Errors {
    let mut errs = validate_pod_template_spec(template, path);
    let default_spec = PodSpec::default();
    let spec = template.spec.as_ref().unwrap_or(&default_spec);
    let restart = spec.restart_policy.as_deref().unwrap_or("");
    if restart != "Always" {
        errs.push(FieldError::not_supported(
            &path.child("spec").child("restartPolicy"),
            restart,
            &["Always"],
        ));
    }
    if spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            &path.child("spec").child("activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
    errs
}

/// ValidatePositiveIntOrPercent.
fn int_or_percent(v: &IntOrString, path: &Path) -> Errors {
    match v {
        IntOrString::String(s) => names::is_valid_percent(s)
            .into_iter()
            .map(|m| FieldError::invalid(path, &Raw(render::int_or_string(Some(v))), m))
            .collect(),
        IntOrString::Int(i) => {
            let mut errs = Vec::new();
            nonnegative(&mut errs, Some((*i).into()), path);
            errs
        }
    }
}

fn percent_value(v: &IntOrString) -> Option<i64> {
    match v {
        IntOrString::String(s) if names::is_valid_percent(s).is_empty() => {
            s.trim_end_matches('%').parse().ok()
        }
        _ => None,
    }
}

fn int_or_percent_value(v: Option<&IntOrString>) -> i64 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => (*i).into(),
        Some(s) => percent_value(s).unwrap_or(0),
    }
}

fn not_more_than_100_percent(v: &IntOrString, path: &Path) -> Errors {
    match percent_value(v) {
        Some(p) if p > 100 => vec![FieldError::invalid(
            path,
            &Raw(render::int_or_string(Some(v))),
            "must not be greater than 100%",
        )],
        _ => Vec::new(),
    }
}

fn strategy_rendering(strategy: &DeploymentStrategy) -> String {
    let ru = match &strategy.rolling_update {
        None => "(*apps.RollingUpdateDeployment)(nil)".to_string(),
        Some(ru) => format!(
            "&apps.RollingUpdateDeployment{{MaxUnavailable:{}, MaxSurge:{}}}",
            render::int_or_string(ru.max_unavailable.as_ref()),
            render::int_or_string(ru.max_surge.as_ref())
        ),
    };
    format!(
        "apps.DeploymentStrategy{{Type:{}, RollingUpdate:{ru}}}",
        render::quote(strategy.type_.as_deref().unwrap_or(""))
    )
}

/// ValidateDeploymentStrategy.
fn deployment_strategy(strategy: &DeploymentStrategy, path: &Path) -> Errors {
    let mut errs = Vec::new();
    match strategy.type_.as_deref().unwrap_or("") {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    &path.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match &strategy.rolling_update {
            None => errs.push(FieldError::required(
                &path.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let p = path.child("rollingUpdate");
                let zero = IntOrString::Int(0);
                let mu = ru.max_unavailable.as_ref().unwrap_or(&zero);
                let ms = ru.max_surge.as_ref().unwrap_or(&zero);
                errs.extend(int_or_percent(mu, &p.child("maxUnavailable")));
                errs.extend(int_or_percent(ms, &p.child("maxSurge")));
                if int_or_percent_value(Some(mu)) == 0 && int_or_percent_value(Some(ms)) == 0 {
                    errs.push(FieldError::invalid(
                        &p.child("maxUnavailable"),
                        &Raw(render::int_or_string(ru.max_unavailable.as_ref())),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                errs.extend(not_more_than_100_percent(mu, &p.child("maxUnavailable")));
            }
        },
        _ => errs.push(FieldError::not_supported(
            path,
            &Raw(strategy_rendering(strategy)),
            &["Recreate", "RollingUpdate"],
        )),
    }
    errs
}

/// ValidateDeploymentSpec.
fn deployment_spec(spec: &DeploymentSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    nonnegative(
        &mut errs,
        spec.replicas.map(i64::from),
        &path.child("replicas"),
    );
    errs.extend(selector_and_template_labels(
        &spec.selector,
        &spec.template,
        "deployment",
        path,
    ));
    errs.extend(replica_template(
        &spec.template,
        "ReplicaSet",
        &path.child("template"),
    ));
    errs.extend(deployment_strategy(
        &spec.strategy.clone().unwrap_or_default(),
        &path.child("strategy"),
    ));
    nonnegative(
        &mut errs,
        spec.min_ready_seconds.map(i64::from),
        &path.child("minReadySeconds"),
    );
    nonnegative(
        &mut errs,
        spec.revision_history_limit.map(i64::from),
        &path.child("revisionHistoryLimit"),
    );
    if let Some(pds) = spec.progress_deadline_seconds {
        nonnegative(
            &mut errs,
            Some(pds.into()),
            &path.child("progressDeadlineSeconds"),
        );
        if pds <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(FieldError::invalid(
                &path.child("progressDeadlineSeconds"),
                &pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

pub(crate) fn validate_deployment(d: &Deployment, with_meta: bool) -> Errors {
    let mut errs = meta::validate_object_meta_if(with_meta, &d.metadata, true, NameRule::Subdomain);
    errs.extend(deployment_spec(
        &d.spec.clone().unwrap_or_default(),
        &spec_path(),
    ));
    errs
}

fn immutable_selector(new: &LabelSelector, old: &LabelSelector) -> Errors {
    if new != old {
        vec![FieldError::invalid(
            &spec_path().child("selector"),
            &Raw(render::label_selector(new)),
            IMMUTABLE,
        )]
    } else {
        Vec::new()
    }
}

/// ValidateDeploymentUpdate plus apps/v1's fixed selector.
pub(crate) fn validate_deployment_update(new: &Deployment, old: &Deployment) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(validate_deployment(new, false));
    let (n, o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    errs.extend(immutable_selector(&n.selector, &o.selector));
    errs
}

fn status_counts(errs: &mut Errors, counts: &[(Option<i32>, &str)], path: &Path) {
    for (v, name) in counts {
        nonnegative(errs, v.map(i64::from), &path.child(name));
    }
}

fn not_above(
    errs: &mut Errors,
    value: Option<i32>,
    limit: Option<i32>,
    name: &str,
    msg: &str,
    path: &Path,
) {
    let v = value.unwrap_or(0);
    if v > limit.unwrap_or(0) {
        errs.push(FieldError::invalid(&path.child(name), &v, msg));
    }
}

fn collision_count(errs: &mut Errors, new: Option<i32>, old: Option<i32>, path: &Path) {
    let decremented = match (new, old) {
        (None, Some(_)) => true,
        (Some(n), Some(o)) => n < o,
        _ => false,
    };
    if decremented {
        errs.push(FieldError::invalid(
            &path.child("collisionCount"),
            &new.unwrap_or(0),
            "cannot be decremented",
        ));
    }
}

pub(crate) fn validate_deployment_status_update(new: &Deployment, old: &Deployment) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    let st = new.status.clone().unwrap_or_default();
    let path = Path::new("status");
    nonnegative(
        &mut errs,
        st.observed_generation,
        &path.child("observedGeneration"),
    );
    status_counts(
        &mut errs,
        &[
            (st.replicas, "replicas"),
            (st.updated_replicas, "updatedReplicas"),
            (st.ready_replicas, "readyReplicas"),
            (st.available_replicas, "availableReplicas"),
            (st.unavailable_replicas, "unavailableReplicas"),
            (st.collision_count, "collisionCount"),
        ],
        &path,
    );
    const MSG: &str = "cannot be greater than status.replicas";
    not_above(
        &mut errs,
        st.updated_replicas,
        st.replicas,
        "updatedReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.ready_replicas,
        st.replicas,
        "readyReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.available_replicas,
        st.replicas,
        "availableReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.available_replicas,
        st.ready_replicas,
        "availableReplicas",
        "cannot be greater than readyReplicas",
        &path,
    );
    collision_count(
        &mut errs,
        st.collision_count,
        old.status.as_ref().and_then(|s| s.collision_count),
        &path,
    );
    errs
}

fn replica_set_spec(spec: &ReplicaSetSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    nonnegative(
        &mut errs,
        spec.replicas.map(i64::from),
        &path.child("replicas"),
    );
    nonnegative(
        &mut errs,
        spec.min_ready_seconds.map(i64::from),
        &path.child("minReadySeconds"),
    );
    let template = spec.template.clone().unwrap_or_default();
    // Kubernetes words the empty ReplicaSet selector as it does for deployments.
    errs.extend(selector_and_template_labels(
        &spec.selector,
        &template,
        "deployment",
        path,
    ));
    errs.extend(replica_template(
        &template,
        "ReplicaSet",
        &path.child("template"),
    ));
    errs
}

pub(crate) fn validate_replica_set(rs: &ReplicaSet, with_meta: bool) -> Errors {
    let mut errs =
        meta::validate_object_meta_if(with_meta, &rs.metadata, true, NameRule::Subdomain);
    errs.extend(replica_set_spec(
        &rs.spec.clone().unwrap_or_default(),
        &spec_path(),
    ));
    errs
}

pub(crate) fn validate_replica_set_update(new: &ReplicaSet, old: &ReplicaSet) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(validate_replica_set(new, false));
    let (n, o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    errs.extend(immutable_selector(&n.selector, &o.selector));
    errs
}

pub(crate) fn validate_replica_set_status_update(new: &ReplicaSet, old: &ReplicaSet) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    let st = new.status.clone().unwrap_or_default();
    let path = Path::new("status");
    status_counts(
        &mut errs,
        &[
            (Some(st.replicas), "replicas"),
            (st.fully_labeled_replicas, "fullyLabeledReplicas"),
            (st.ready_replicas, "readyReplicas"),
            (st.available_replicas, "availableReplicas"),
        ],
        &path,
    );
    nonnegative(
        &mut errs,
        st.observed_generation,
        &path.child("observedGeneration"),
    );
    const MSG: &str = "cannot be greater than status.replicas";
    let replicas = Some(st.replicas);
    not_above(
        &mut errs,
        st.fully_labeled_replicas,
        replicas,
        "fullyLabeledReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.ready_replicas,
        replicas,
        "readyReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.available_replicas,
        replicas,
        "availableReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.available_replicas,
        st.ready_replicas,
        "availableReplicas",
        "cannot be greater than readyReplicas",
        &path,
    );
    errs
}

/// ValidateStatefulSetSpec. Like Kubernetes, the template's pod spec is not validated in
/// full here (only its metadata), because volumes may come from volumeClaimTemplates.
fn stateful_set_spec(spec: &StatefulSetSpec, path: &Path) -> Errors {
    let mut errs = Vec::new();
    match spec.pod_management_policy.as_deref().unwrap_or("") {
        "" => errs.push(FieldError::required(&path.child("podManagementPolicy"), "")),
        "OrderedReady" | "Parallel" => {}
        other => errs.push(FieldError::invalid(
            &path.child("podManagementPolicy"),
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let strategy_path = path.child("updateStrategy");
    match strategy.type_.as_deref().unwrap_or("") {
        "" => errs.push(FieldError::required(&strategy_path, "")),
        "OnDelete" => {
            if let Some(ru) = &strategy.rolling_update {
                errs.push(FieldError::invalid(
                    &strategy_path.child("rollingUpdate"),
                    &Raw(render::json(ru)),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = &strategy.rolling_update {
                let p = strategy_path.child("rollingUpdate");
                nonnegative(
                    &mut errs,
                    ru.partition.map(i64::from),
                    &p.child("partition"),
                );
                if let Some(mu) = &ru.max_unavailable {
                    let mp = p.child("maxUnavailable");
                    errs.extend(int_or_percent(mu, &mp));
                    if int_or_percent_value(Some(mu)) == 0 {
                        errs.push(FieldError::invalid(
                            &mp,
                            &Raw(render::int_or_string(Some(mu))),
                            "cannot be 0",
                        ));
                    }
                    errs.extend(not_more_than_100_percent(mu, &mp));
                }
            }
        }
        _ => {
            errs.push(FieldError::invalid(
                &strategy_path,
                &Raw(render::json(&strategy)),
                "must be 'RollingUpdate' or 'OnDelete'",
            ));
        }
    }
    if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
        let p = path.child("persistentVolumeClaimRetentionPolicy");
        for (v, name) in [
            (&policy.when_deleted, "whenDeleted"),
            (&policy.when_scaled, "whenScaled"),
        ] {
            let v = v.as_deref().unwrap_or("");
            if v != "Retain" && v != "Delete" {
                errs.push(FieldError::not_supported(
                    &p.child(name),
                    v,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    nonnegative(
        &mut errs,
        spec.replicas.map(i64::from),
        &path.child("replicas"),
    );
    nonnegative(
        &mut errs,
        spec.min_ready_seconds.map(i64::from),
        &path.child("minReadySeconds"),
    );
    if let Some(ord) = &spec.ordinals {
        nonnegative(
            &mut errs,
            ord.start.map(i64::from),
            &path.child("ordinals.start"),
        );
    }
    let template_path = path.child("template");
    errs.extend(selector_and_template_labels(
        &spec.selector,
        &spec.template,
        "statefulset",
        path,
    ));
    let meta = spec.template.metadata.as_ref();
    errs.extend(meta::validate_labels(
        meta.and_then(|m| m.labels.as_ref()),
        &template_path.child("labels"),
    ));
    errs.extend(meta::validate_annotations(
        meta.and_then(|m| m.annotations.as_ref()),
        &template_path.child("annotations"),
    ));
    let default_spec = PodSpec::default();
    let pod_spec = spec.template.spec.as_ref().unwrap_or(&default_spec);
    let restart = pod_spec.restart_policy.as_deref().unwrap_or("");
    if restart != "Always" {
        errs.push(FieldError::not_supported(
            &template_path.child("spec").child("restartPolicy"),
            restart,
            &["Always"],
        ));
    }
    if pod_spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            &template_path.child("spec").child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    for (i, vct) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let p = path.child("volumeClaimTemplates").index(i);
        if vct.metadata.name.as_deref().unwrap_or("").is_empty() {
            errs.push(FieldError::required(
                &p.child("metadata").child("name"),
                "name or generateName is required",
            ));
        }
        errs.extend(validate_pvc_spec(
            &vct.spec.clone().unwrap_or_default(),
            &p.child("spec"),
        ));
    }
    errs
}

pub(crate) fn validate_stateful_set(sts: &StatefulSet, with_meta: bool) -> Errors {
    let mut errs = meta::validate_object_meta_if(with_meta, &sts.metadata, true, NameRule::Label);
    errs.extend(stateful_set_spec(
        &sts.spec.clone().unwrap_or_default(),
        &spec_path(),
    ));
    errs
}

/// ValidateStatefulSetUpdate: only the listed fields of the spec may change.
pub(crate) fn validate_stateful_set_update(new: &StatefulSet, old: &StatefulSet) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(validate_stateful_set(new, false));
    let old_spec = old.spec.clone().unwrap_or_default();
    let mut munged = new.spec.clone().unwrap_or_default();
    munged.replicas = old_spec.replicas;
    munged.template.clone_from(&old_spec.template);
    munged.update_strategy.clone_from(&old_spec.update_strategy);
    munged.min_ready_seconds = old_spec.min_ready_seconds;
    munged.revision_history_limit = old_spec.revision_history_limit;
    munged.ordinals.clone_from(&old_spec.ordinals);
    munged
        .persistent_volume_claim_retention_policy
        .clone_from(&old_spec.persistent_volume_claim_retention_policy);
    if munged != old_spec {
        errs.push(FieldError::forbidden(
            &spec_path(),
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
    errs
}

pub(crate) fn validate_stateful_set_status_update(new: &StatefulSet, old: &StatefulSet) -> Errors {
    let mut errs = Vec::new();
    let st = new.status.clone().unwrap_or_default();
    let path = Path::new("status");
    status_counts(
        &mut errs,
        &[
            (Some(st.replicas), "replicas"),
            (st.ready_replicas, "readyReplicas"),
            (st.current_replicas, "currentReplicas"),
            (st.updated_replicas, "updatedReplicas"),
            (st.available_replicas, "availableReplicas"),
        ],
        &path,
    );
    nonnegative(
        &mut errs,
        st.observed_generation,
        &path.child("observedGeneration"),
    );
    nonnegative(
        &mut errs,
        st.collision_count.map(i64::from),
        &path.child("collisionCount"),
    );
    const MSG: &str = "cannot be greater than status.replicas";
    let replicas = Some(st.replicas);
    not_above(
        &mut errs,
        st.ready_replicas,
        replicas,
        "readyReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.current_replicas,
        replicas,
        "currentReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.updated_replicas,
        replicas,
        "updatedReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.available_replicas,
        replicas,
        "availableReplicas",
        MSG,
        &path,
    );
    not_above(
        &mut errs,
        st.available_replicas,
        st.ready_replicas,
        "availableReplicas",
        "cannot be greater than status.readyReplicas",
        &path,
    );
    errs.extend(meta::validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        &meta_path(),
    ));
    collision_count(
        &mut errs,
        st.collision_count,
        old.status.as_ref().and_then(|s| s.collision_count),
        &path,
    );
    errs
}

pub(crate) fn validate_controller_revision(cr: &ControllerRevision, with_meta: bool) -> Errors {
    let mut errs =
        meta::validate_object_meta_if(with_meta, &cr.metadata, true, NameRule::Subdomain);
    if cr.data.is_none() {
        errs.push(FieldError::required(
            &Path::new("data"),
            "data is mandatory",
        ));
    }
    nonnegative(&mut errs, Some(cr.revision), &Path::new("revision"));
    errs
}

/// ValidateControllerRevisionUpdate: data is fixed.
pub(crate) fn validate_controller_revision_update(
    new: &ControllerRevision,
    old: &ControllerRevision,
) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(validate_controller_revision(new, false));
    if new.data != old.data {
        errs.push(FieldError::invalid(
            &Path::new("data"),
            &Raw(render::json(&new.data)),
            IMMUTABLE,
        ));
    }
    errs
}

#[cfg(test)]
mod tests;
