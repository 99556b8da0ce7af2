//! ObjectMeta and label selector rules shared by every kind
//! (`k8s.io/apimachinery/pkg/api/validation/objectmeta.go` and `apis/meta/v1/validation`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::names::{self, is_qualified_name, is_valid_label_value};
use super::render::{self, Raw};
use super::{Errors, FieldError, Path};

/// Kubernetes' limit on the summed size of annotation keys and values.
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The message of every immutability error.
pub(crate) const IMMUTABLE: &str = "field is immutable";

/// Which name format a kind uses for `metadata.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    Subdomain,
    Label,
    Dns1035,
}

impl NameRule {
    pub(crate) fn check(self, name: &str, prefix: bool) -> Vec<String> {
        match self {
            NameRule::Subdomain => names::name_is_dns_subdomain(name, prefix),
            NameRule::Label => names::name_is_dns_label(name, prefix),
            NameRule::Dns1035 => names::name_is_dns1035_label(name, prefix),
        }
    }
}

/// [`validate_object_meta`] at `metadata` when `with_meta`, else nothing. A kind's validator
/// takes `with_meta` false when its update calls it: the update checks the metadata against
/// the old object instead, and the name cannot change there.
pub(crate) fn validate_object_meta_if(
    with_meta: bool,
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
) -> Errors {
    if with_meta {
        validate_object_meta(meta, namespaced, rule, &Path::new("metadata"))
    } else {
        Vec::new()
    }
}

/// `ValidateObjectMeta` for an object about to be created. The server fills `name` from
/// `generateName` before this runs, so an empty name is an error here.
pub(crate) fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    if let Some(gen_name) = meta.generate_name.as_deref().filter(|s| !s.is_empty()) {
        for msg in rule.check(gen_name, true) {
            errs.push(FieldError::invalid(
                &path.child("generateName"),
                gen_name,
                msg,
            ));
        }
    }
    match meta.name.as_deref().unwrap_or("") {
        "" => errs.push(FieldError::required(
            &path.child("name"),
            "name or generateName is required",
        )),
        name => {
            for msg in rule.check(name, false) {
                errs.push(FieldError::invalid(&path.child("name"), name, msg));
            }
        }
    }
    let namespace = meta.namespace.as_deref().unwrap_or("");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(&path.child("namespace"), ""));
        } else {
            for msg in names::name_is_dns_label(namespace, false) {
                errs.push(FieldError::invalid(
                    &path.child("namespace"),
                    namespace,
                    msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(generation) = meta.generation.filter(|g| *g < 0) {
        errs.push(FieldError::invalid(
            &path.child("generation"),
            &generation,
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(common_meta(meta, path));
    errs
}

/// The checks create and update share.
fn common_meta(meta: &ObjectMeta, path: &Path) -> Errors {
    let mut errs = Vec::new();
    errs.extend(validate_labels(meta.labels.as_ref(), &path.child("labels")));
    errs.extend(validate_annotations(
        meta.annotations.as_ref(),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        meta,
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        meta.finalizers.as_deref().unwrap_or(&[]),
        &path.child("finalizers"),
    ));
    errs
}

/// `ValidateObjectMetaUpdate`. The server carries uid, creationTimestamp, deletion fields and
/// generation over from the stored object, so only values a client actually changed are
/// reported: an absent uid or timestamp counts as unchanged.
pub(crate) fn validate_object_meta_update(
    new: &ObjectMeta,
    old: &ObjectMeta,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        let old_f = old.finalizers.as_deref().unwrap_or(&[]);
        let mut extra: Vec<&String> = new
            .finalizers
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            errs.push(FieldError::forbidden(
                &path.child("finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    render::string_slice(Some(&list))
                ),
            ));
        }
    }
    immutable_str(
        &mut errs,
        new.name.as_deref().unwrap_or(""),
        old.name.as_deref().unwrap_or(""),
        &path.child("name"),
    );
    immutable_str(
        &mut errs,
        new.namespace.as_deref().unwrap_or(""),
        old.namespace.as_deref().unwrap_or(""),
        &path.child("namespace"),
    );
    if let Some(uid) = new.uid.as_deref().filter(|u| !u.is_empty())
        && uid != old.uid.as_deref().unwrap_or("")
    {
        errs.push(FieldError::invalid(&path.child("uid"), uid, IMMUTABLE));
    }
    immutable_time(
        &mut errs,
        new.creation_timestamp.as_ref(),
        old.creation_timestamp.as_ref(),
        &path.child("creationTimestamp"),
    );
    immutable_time(
        &mut errs,
        new.deletion_timestamp.as_ref(),
        old.deletion_timestamp.as_ref(),
        &path.child("deletionTimestamp"),
    );
    if let Some(grace) = new.deletion_grace_period_seconds
        && old
            .deletion_grace_period_seconds
            .is_some_and(|o| o != grace)
    {
        errs.push(FieldError::invalid(
            &path.child("deletionGracePeriodSeconds"),
            &grace,
            IMMUTABLE,
        ));
    }
    errs.extend(common_meta(new, path));
    errs
}

fn immutable_time(errs: &mut Errors, new: Option<&Time>, old: Option<&Time>, path: &Path) {
    if let (Some(n), Some(o)) = (new, old)
        && n != o
    {
        errs.push(FieldError::invalid(path, &Raw(render::time(n)), IMMUTABLE));
    }
}

/// `ValidateImmutableField` for a string.
pub(crate) fn immutable_str(errs: &mut Errors, new: &str, old: &str, path: &Path) {
    if new != old {
        errs.push(FieldError::invalid(path, new, IMMUTABLE));
    }
}

/// `ValidateLabels`: the errors name the map, not the key.
pub(crate) fn validate_labels(labels: Option<&BTreeMap<String, String>>, path: &Path) -> Errors {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        errs.extend(validate_label_name(k, path));
        for msg in is_valid_label_value(v) {
            errs.push(FieldError::invalid(path, v.as_str(), msg));
        }
    }
    errs
}

/// `ValidateLabelName`.
pub(crate) fn validate_label_name(key: &str, path: &Path) -> Errors {
    is_qualified_name(key)
        .into_iter()
        .map(|msg| FieldError::invalid(path, key, msg))
        .collect()
}

/// `ValidateQualifiedName`.
pub(crate) fn validate_qualified_name(value: &str, path: &Path) -> Errors {
    validate_label_name(value, path)
}

/// `ValidateAnnotations`: keys are qualified names, case aside; 256 KiB in all.
pub(crate) fn validate_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations.into_iter().flatten() {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_owner_references(meta: &ObjectMeta, path: &Path) -> Errors {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for r in meta.owner_references.iter().flatten() {
        let version = match r.api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => *v,
            [_, v] => *v,
            _ => "",
        };
        if version.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("apiVersion"),
                r.api_version.as_str(),
                "version must not be empty",
            ));
        }
        if r.kind.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("kind"),
                r.kind.as_str(),
                "kind must not be empty",
            ));
        }
        if r.name.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("name"),
                r.name.as_str(),
                "name must not be empty",
            ));
        }
        if r.uid.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("uid"),
                r.uid.as_str(),
                "uid must not be empty",
            ));
        }
        if r.api_version == "v1" && r.kind == "Event" {
            errs.push(FieldError::invalid(
                path,
                &Raw(owner_reference(r)),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.controller == Some(true) {
            let current = format!("{}/{}", r.kind, r.name);
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    &Raw(format!(
                        "[]v1.OwnerReference{{{}}}",
                        meta.owner_references
                            .iter()
                            .flatten()
                            .map(owner_reference)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

fn owner_reference(r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> String {
    let bool_ptr = |b: Option<bool>| match b {
        Some(b) => format!("(*bool)({b})"),
        None => "(*bool)(nil)".to_string(),
    };
    format!(
        "v1.OwnerReference{{APIVersion:{}, Kind:{}, Name:{}, UID:{}, Controller:{}, BlockOwnerDeletion:{}}}",
        render::quote(&r.api_version),
        render::quote(&r.kind),
        render::quote(&r.name),
        render::quote(&r.uid),
        bool_ptr(r.controller),
        bool_ptr(r.block_owner_deletion)
    )
}

/// The finalizer names Kubernetes accepts without a domain.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateFinalizers` plus core's `validateKubeFinalizerName`.
pub(crate) fn validate_finalizers(finalizers: &[String], path: &Path) -> Errors {
    let mut errs = Vec::new();
    for f in finalizers {
        for msg in is_qualified_name(f) {
            errs.push(FieldError::invalid(path, f.as_str(), msg));
        }
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        errs.push(FieldError::invalid(
            path,
            &Raw(render::string_slice(Some(finalizers))),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    for (i, f) in finalizers.iter().enumerate() {
        errs.extend(kube_finalizer_name(f, &path.index(i)));
    }
    errs
}

/// `validateKubeFinalizerName`: a finalizer without a '/' must be one of the standard ones.
pub(crate) fn kube_finalizer_name(f: &str, path: &Path) -> Errors {
    if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
        vec![FieldError::invalid(
            path,
            f,
            "name is neither a standard finalizer name nor is it fully qualified",
        )]
    } else {
        Vec::new()
    }
}

/// `ValidateLabelSelector` with invalid label values refused.
pub(crate) fn validate_label_selector(sel: &LabelSelector, path: &Path) -> Errors {
    let mut errs = validate_labels(sel.match_labels.as_ref(), &path.child("matchLabels"));
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = expr.values.as_deref().unwrap_or(&[]);
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        errs.extend(validate_label_name(&expr.key, &p.child("key")));
        for (j, v) in values.iter().enumerate() {
            for msg in is_valid_label_value(v) {
                errs.push(FieldError::invalid(
                    &p.child("values").index(j),
                    v.as_str(),
                    msg,
                ));
            }
        }
    }
    errs
}

/// Whether a selector is well-formed enough to match with (`LabelSelectorAsSelector`).
pub(crate) fn selector_is_usable(sel: &LabelSelector) -> bool {
    sel.match_expressions.iter().flatten().all(|e| {
        let n = e.values.as_deref().map_or(0, <[String]>::len);
        match e.operator.as_str() {
            "In" | "NotIn" => n > 0,
            "Exists" | "DoesNotExist" => n == 0,
            _ => false,
        }
    })
}

/// Whether a selector selects nothing-in-particular (matches everything).
pub(crate) fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether `labels` satisfy `sel`.
pub(crate) fn selector_matches(
    sel: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// `ValidateNonnegativeField`.
pub(crate) fn nonnegative(errs: &mut Errors, value: Option<i64>, path: &Path) {
    if let Some(v) = value.filter(|v| *v < 0) {
        errs.push(FieldError::invalid(
            path,
            &v,
            "must be greater than or equal to 0",
        ));
    }
}

/// `ValidateTemplateObjectMeta`: embedded metadata may carry only labels and annotations.
pub(crate) fn validate_template_object_meta(meta: Option<&ObjectMeta>, path: &Path) -> Errors {
    let Some(meta) = meta else {
        return Vec::new();
    };
    let mut errs = validate_annotations(meta.annotations.as_ref(), &path.child("annotations"));
    errs.extend(validate_labels(meta.labels.as_ref(), &path.child("labels")));
    let stripped = ObjectMeta {
        labels: None,
        annotations: None,
        ..meta.clone()
    };
    let set = [
        ("name", stripped.name.is_some()),
        ("generateName", stripped.generate_name.is_some()),
        ("namespace", stripped.namespace.is_some()),
        ("selfLink", stripped.self_link.is_some()),
        ("uid", stripped.uid.is_some()),
        ("resourceVersion", stripped.resource_version.is_some()),
        ("generation", stripped.generation.is_some()),
        ("creationTimestamp", stripped.creation_timestamp.is_some()),
        ("deletionTimestamp", stripped.deletion_timestamp.is_some()),
        (
            "deletionGracePeriodSeconds",
            stripped.deletion_grace_period_seconds.is_some(),
        ),
        ("ownerReferences", stripped.owner_references.is_some()),
        ("finalizers", stripped.finalizers.is_some()),
        ("managedFields", stripped.managed_fields.is_some()),
    ];
    for (field, present) in set {
        if present {
            errs.push(FieldError::forbidden(&path.child(field), "cannot be set"));
        }
    }
    errs
}
