//! Applying PATCH bodies to objects: JSON patch (RFC 6902), JSON merge patch (RFC 7386),
//! Kubernetes' strategic merge patch, and berth's stand-in for server-side apply.
//!
//! This module owns the patch formats and the strategic-merge metadata of the built-in types
//! berth serves: which lists are merged by which key (`patchMergeKey`/`patchStrategy` in
//! k8s.io/api's Go struct tags) and which lists are atomic. It works on objects in their JSON
//! form; decoding the result into the typed object, defaulting and validation happen afterwards
//! in [`crate::codec`] and friends.
//!
//! # Strategic merge patch
//!
//! The algorithm follows `k8s.io/apimachinery/pkg/util/strategicpatch` (`mergeMap` with
//! `MergeParallelList` and `IgnoreUnmatchedNulls`, as the apiserver calls it): maps merge
//! recursively, `null` deletes, lists declared `patchStrategy: merge` merge by their merge key
//! (or are unioned when they hold primitives), every other list is replaced. The directives
//! `$patch: replace|delete`, `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>` are honoured, with upstream's ordering rules: items named
//! in `$setElementOrder` come in that order, items only the server has keep their place
//! relative to them.
//!
//! Where upstream is accidental, berth is deliberately kinder:
//! - `$patch: merge` is accepted as the no-op it says it is (upstream rejects it);
//! - a value the original lacks is inserted with its directives resolved rather than copied
//!   verbatim (upstream would drop a new `$patch: replace` map and keep stray `$retainKeys`);
//! - items of an atomic list and `$patch: replace` contents lose their directives and nulls;
//! - merge-key values compare numerically (`80` matches `80.0`), and an item of the original
//!   that lacks the merge key is kept rather than failing the whole patch.
//!
//! Fields the metadata table does not know (custom fields, anything unknown) merge as maps and
//! replace as lists, which is also what upstream does for them.
//!
//! # Server-side apply (limitation)
//!
//! berth does not track `managedFields` yet, so apply cannot know which fields the applier
//! owned before and therefore never removes a field the applied configuration omits. An apply
//! body is strategic-merged onto the live object with directives disabled (`$`-keys are plain
//! fields): every field the applier sets wins, `null` removes a field, lists merge by their
//! strategic merge key rather than by server-side apply's `x-kubernetes-list-map-keys`, and
//! there are no conflicts, so `force` changes nothing.

use std::mem;

use serde_json::{Map, Value};

use crate::resources::ResourceInfo;

/// The patch formats Kubernetes accepts, named by the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json`: a list of RFC 6902 operations.
    Json,
    /// `application/merge-patch+json`: RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply (see the module docs).
    Apply,
}

impl PatchType {
    /// The patch type of a Content-Type header value; parameters such as `; charset=utf-8` are
    /// ignored. `None` for anything that is not a patch type (the caller answers 415).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        [
            PatchType::Json,
            PatchType::Merge,
            PatchType::StrategicMerge,
            PatchType::Apply,
        ]
        .into_iter()
        .find(|t| t.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The media type that selects this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch was refused. The message is meant to be shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not a valid patch of its type, whatever the object (400 Bad Request).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but cannot be applied to this object, e.g. a JSON patch `test`
    /// failed or a path does not exist (422 Unprocessable Entity).
    #[error("{0}")]
    NotApplicable(String),
}

impl PatchError {
    /// The HTTP status Kubernetes answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::Malformed(_) => 400,
            PatchError::NotApplicable(_) => 422,
        }
    }
}

/// Upstream's limit (`maxJSONPatchOperations`): a bigger patch is a denial-of-service vector.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Applies `patch` to `original`, an object of the resource `info`, and returns the patched
/// object. `original` is not modified.
pub fn apply_patch(
    info: &ResourceInfo,
    patch_type: PatchType,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => apply_json_patch(original, patch),
        PatchType::Merge => {
            // RFC 7386 lets a non-object patch replace the whole document, which can never
            // yield a Kubernetes object.
            if !patch.is_object() {
                return Err(PatchError::Malformed(format!(
                    "a merge patch must be a JSON object, got {}",
                    json_type(patch)
                )));
            }
            let mut doc = original.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        PatchType::StrategicMerge => strategic_merge(info, original, patch, Mode::Patch),
        PatchType::Apply => strategic_merge(info, original, patch, Mode::Apply),
    }
}

fn apply_json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(format!(
            "a JSON patch must be a JSON array of operations, got {}",
            json_type(patch)
        )));
    };
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::Malformed(format!(
            "the allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            operations.len()
        )));
    }
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    let mut doc = original.clone();
    // patch_unsafe: the copy is thrown away on error, so the crate's undo log (and its
    // `unreachable!` should undoing fail) buys nothing.
    json_patch::patch_unsafe(&mut doc, &operations)
        .map_err(|e| PatchError::NotApplicable(format!("the JSON patch cannot be applied: {e}")))?;
    Ok(doc)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `$`-keys are directives (a strategic merge patch) or plain fields (an apply body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Patch,
    Apply,
}

impl Mode {
    fn directives(self) -> bool {
        self == Mode::Patch
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

fn strategic_merge(
    info: &ResourceInfo,
    original: &Value,
    patch: &Value,
    mode: Mode,
) -> Result<Value, PatchError> {
    let what = match mode {
        Mode::Patch => "a strategic merge patch",
        Mode::Apply => "an apply configuration",
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(format!(
            "{what} must be a JSON object, got {}",
            json_type(patch)
        )));
    };
    let Value::Object(original) = original else {
        return Err(PatchError::NotApplicable(format!(
            "cannot apply {what} to {}",
            json_type(original)
        )));
    };
    merge_map(original.clone(), patch.clone(), Some(root_type(info)), mode).map(Value::Object)
}

// ---------------------------------------------------------------------------------------------
// Strategic merge metadata.
//
// Only the paths that lead to a list with `patchStrategy: merge` are listed: every other map
// merges and every other list is replaced, which is exactly what an unlisted field gets. The
// entries come from the struct tags in k8s.io/api (core/v1, apps/v1) and k8s.io/apimachinery
// (meta/v1 ObjectMeta); a test checks every name against k8s-openapi's schema.

/// A Kubernetes type (or a family of types sharing the relevant fields) whose fields matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// Any object: only its metadata has merge lists.
    Object,
    ObjectMeta,
    Namespace,
    Node,
    NodeSpec,
    NodeStatus,
    Pod,
    PodTemplateSpec,
    PodSpec,
    /// Container and EphemeralContainer.
    Container,
    PodStatus,
    Service,
    ServiceSpec,
    /// Every status whose only merge list is `conditions` keyed by `type`.
    ConditionsStatus,
    ServiceAccount,
    PersistentVolumeClaim,
    /// Deployment, ReplicaSet and StatefulSet: a pod template and conditions.
    Workload,
    WorkloadSpec,
}

/// What strategic merge needs to know about one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A struct with fields of its own that matter.
    Struct(Ty),
    /// A list of structs merged by `key`, whose items are of type `item` if they matter.
    Keyed { key: &'static str, item: Option<Ty> },
    /// A list of primitives with merge strategy: a union.
    Set,
}

const fn keyed(key: &'static str) -> Shape {
    Shape::Keyed { key, item: None }
}

const fn keyed_of(key: &'static str, item: Ty) -> Shape {
    Shape::Keyed {
        key,
        item: Some(item),
    }
}

const METADATA: Shape = Shape::Struct(Ty::ObjectMeta);
const CONDITIONS: Shape = keyed("type");

/// Every field strategic merge needs to know about, as (type, JSON field name, shape).
static FIELDS: &[(Ty, &str, Shape)] = &[
    (Ty::Object, "metadata", METADATA),
    (Ty::ObjectMeta, "ownerReferences", keyed("uid")),
    (Ty::ObjectMeta, "finalizers", Shape::Set),
    (Ty::Namespace, "metadata", METADATA),
    (Ty::Namespace, "status", Shape::Struct(Ty::ConditionsStatus)),
    (Ty::Node, "metadata", METADATA),
    (Ty::Node, "spec", Shape::Struct(Ty::NodeSpec)),
    (Ty::Node, "status", Shape::Struct(Ty::NodeStatus)),
    (Ty::NodeSpec, "podCIDRs", Shape::Set),
    (Ty::NodeStatus, "conditions", CONDITIONS),
    (Ty::NodeStatus, "addresses", keyed("type")),
    (Ty::Pod, "metadata", METADATA),
    (Ty::Pod, "spec", Shape::Struct(Ty::PodSpec)),
    (Ty::Pod, "status", Shape::Struct(Ty::PodStatus)),
    (Ty::PodTemplateSpec, "metadata", METADATA),
    (Ty::PodTemplateSpec, "spec", Shape::Struct(Ty::PodSpec)),
    (Ty::PodSpec, "volumes", keyed("name")),
    (
        Ty::PodSpec,
        "initContainers",
        keyed_of("name", Ty::Container),
    ),
    (Ty::PodSpec, "containers", keyed_of("name", Ty::Container)),
    (
        Ty::PodSpec,
        "ephemeralContainers",
        keyed_of("name", Ty::Container),
    ),
    (Ty::PodSpec, "imagePullSecrets", keyed("name")),
    (Ty::PodSpec, "hostAliases", keyed("ip")),
    (
        Ty::PodSpec,
        "topologySpreadConstraints",
        keyed("topologyKey"),
    ),
    (Ty::PodSpec, "schedulingGates", keyed("name")),
    (Ty::PodSpec, "resourceClaims", keyed("name")),
    (Ty::Container, "ports", keyed("containerPort")),
    (Ty::Container, "env", keyed("name")),
    (Ty::Container, "volumeMounts", keyed("mountPath")),
    (Ty::Container, "volumeDevices", keyed("devicePath")),
    (Ty::PodStatus, "conditions", CONDITIONS),
    (Ty::PodStatus, "hostIPs", keyed("ip")),
    (Ty::PodStatus, "podIPs", keyed("ip")),
    (Ty::PodStatus, "resourceClaimStatuses", keyed("name")),
    (Ty::Service, "metadata", METADATA),
    (Ty::Service, "spec", Shape::Struct(Ty::ServiceSpec)),
    (Ty::Service, "status", Shape::Struct(Ty::ConditionsStatus)),
    (Ty::ServiceSpec, "ports", keyed("port")),
    (Ty::ConditionsStatus, "conditions", CONDITIONS),
    (Ty::ServiceAccount, "metadata", METADATA),
    (Ty::ServiceAccount, "secrets", keyed("name")),
    (Ty::PersistentVolumeClaim, "metadata", METADATA),
    (
        Ty::PersistentVolumeClaim,
        "status",
        Shape::Struct(Ty::ConditionsStatus),
    ),
    (Ty::Workload, "metadata", METADATA),
    (Ty::Workload, "spec", Shape::Struct(Ty::WorkloadSpec)),
    (Ty::Workload, "status", Shape::Struct(Ty::ConditionsStatus)),
    (
        Ty::WorkloadSpec,
        "template",
        Shape::Struct(Ty::PodTemplateSpec),
    ),
];

fn root_type(info: &ResourceInfo) -> Ty {
    match (info.group, info.kind) {
        ("", "Namespace") => Ty::Namespace,
        ("", "Node") => Ty::Node,
        ("", "Pod") => Ty::Pod,
        ("", "Service") => Ty::Service,
        ("", "ServiceAccount") => Ty::ServiceAccount,
        ("", "PersistentVolumeClaim") => Ty::PersistentVolumeClaim,
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => Ty::Workload,
        // Endpoints subsets, EndpointSlice endpoints, PV and StorageClass lists, events,
        // leases, config maps and secrets have no merge lists outside their metadata.
        _ => Ty::Object,
    }
}

fn shape(ty: Option<Ty>, name: &str) -> Option<Shape> {
    let ty = ty?;
    FIELDS
        .iter()
        .find(|(t, field, _)| *t == ty && *field == name)
        .map(|(_, _, shape)| *shape)
}

/// The type of a struct-valued field, for recursing into it.
fn struct_type(ty: Option<Ty>, name: &str) -> Option<Ty> {
    match shape(ty, name) {
        Some(Shape::Struct(ty)) => Some(ty),
        _ => None,
    }
}

/// How a list field is patched.
#[derive(Debug, Clone, Copy)]
struct ListMeta {
    merge: bool,
    key: Option<&'static str>,
    item: Option<Ty>,
}

fn list_meta(ty: Option<Ty>, name: &str) -> ListMeta {
    match shape(ty, name) {
        Some(Shape::Keyed { key, item }) => ListMeta {
            merge: true,
            key: Some(key),
            item,
        },
        Some(Shape::Set) => ListMeta {
            merge: true,
            key: None,
            item: None,
        },
        Some(Shape::Struct(_)) | None => ListMeta {
            merge: false,
            key: None,
            item: None,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The merge itself, after strategicpatch's mergeMap / mergeSlice.

fn malformed(message: impl Into<String>) -> PatchError {
    PatchError::Malformed(message.into())
}

fn not_applicable(message: impl Into<String>) -> PatchError {
    PatchError::NotApplicable(message.into())
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: Option<Ty>,
    mode: Mode,
) -> Result<Map<String, Value>, PatchError> {
    if mode.directives() {
        if let Some(directive) = patch.remove(DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => return Ok(clean_map(patch, mode)),
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => {
                    return Err(malformed(format!(
                        "unknown patch type: {directive} in map: {}",
                        Value::Object(patch)
                    )));
                }
            }
        }
        apply_retain_keys(&mut original, &mut patch)?;
        apply_set_element_order(&mut original, &mut patch, ty, mode)?;
    }

    for (key, patch_value) in patch {
        let (name, delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(rest) if mode.directives() => (directive_target(rest, &key)?.to_string(), true),
            _ => (key, false),
        };
        if patch_value.is_null() {
            // A null deletion list says nothing; a null field deletes the field.
            if !delete_list {
                original.remove(&name);
            }
            continue;
        }
        if delete_list && !patch_value.is_array() {
            return Err(malformed(format!(
                "invalid patch format: {DELETE_FROM_PRIMITIVE_LIST}/{name} must be a list, got {}",
                json_type(&patch_value)
            )));
        }
        let merged = match original.remove(&name) {
            None if delete_list => None,
            None => clean(patch_value, mode, false),
            Some(current) => merge_value(current, patch_value, ty, &name, delete_list, mode)?,
        };
        if let Some(merged) = merged {
            original.insert(name, merged);
        }
    }
    Ok(original)
}

/// The value of field `name` after patching `current` with `patch` (both present, not null).
fn merge_value(
    current: Value,
    patch: Value,
    ty: Option<Ty>,
    name: &str,
    delete_list: bool,
    mode: Mode,
) -> Result<Option<Value>, PatchError> {
    if mem::discriminant(&current) != mem::discriminant(&patch) {
        // A deletion list cannot delete from something that is not a list.
        return Ok(if delete_list {
            Some(current)
        } else {
            clean(patch, mode, false)
        });
    }
    Ok(match (current, patch) {
        (Value::Object(current), Value::Object(patch)) => Some(Value::Object(merge_map(
            current,
            patch,
            struct_type(ty, name),
            mode,
        )?)),
        (Value::Array(current), Value::Array(patch)) => Some(Value::Array(merge_list_field(
            current,
            patch,
            list_meta(ty, name),
            delete_list,
            mode,
        )?)),
        (_, patch) => Some(patch),
    })
}

/// `$deleteFromPrimitiveList/finalizers` → `finalizers`.
fn directive_target<'a>(rest: &'a str, key: &str) -> Result<&'a str, PatchError> {
    match rest.strip_prefix('/') {
        Some(target) if !target.is_empty() => Ok(target),
        _ => Err(malformed(format!(
            "invalid patch format: {key:?} does not name a list (expected \"<directive>/<field>\")"
        ))),
    }
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// `$retainKeys`: the fields of `original` not listed are cleared before merging.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(malformed(format!(
            "invalid patch format of retainKeys: {RETAIN_KEYS} must be a list of field names, got {}",
            json_type(&retain)
        )));
    };
    let retained = |key: &str| retain.iter().any(|k| k.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(SET_ELEMENT_ORDER)
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        {
            continue;
        }
        if !retained(key) {
            return Err(malformed(format!(
                "invalid patch format of retainKeys: field {key:?} is set but not listed in {RETAIN_KEYS}"
            )));
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// Processes every `$setElementOrder/<list>` of `patch`, merging `<list>` and ordering the
/// result; both keys leave `patch`.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: Option<Ty>,
    mode: Mode,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(order) = patch.remove(&key) else {
            continue;
        };
        let rest = key.strip_prefix(SET_ELEMENT_ORDER).unwrap_or_default();
        let name = directive_target(rest, &key)?.to_string();
        let Value::Array(order) = order else {
            return Err(malformed(format!(
                "invalid patch format of setElementOrder list: {key:?} must be a list, got {}",
                json_type(&order)
            )));
        };
        let meta = list_meta(ty, &name);
        let current = match original.remove(&name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                return Err(not_applicable(format!(
                    "{key:?} orders field {name:?}, which is {} rather than a list",
                    json_type(&other)
                )));
            }
        };
        let patch_list = match patch.remove(&name) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                return Err(malformed(format!(
                    "{key:?} orders field {name:?}, but the patch sets it to {} rather than a list",
                    json_type(&other)
                )));
            }
        };
        let kind = element_kind(&[
            current.as_deref().unwrap_or_default(),
            patch_list.as_deref().unwrap_or_default(),
        ])?;
        // Maps are identified by their merge key; primitives, and the items of an atomic list
        // someone ordered anyway, by their whole value.
        let identity = match (kind, meta.key) {
            (Some(Kind::Object), Some(key)) if meta.merge => Identity::Key(key),
            _ => Identity::Whole,
        };
        if let Some(patch_list) = &patch_list {
            validate_element_order(patch_list, &order, identity)?;
        }
        let server_order: Vec<Value> = current
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|item| identity.of(item).clone())
            .collect();
        let merged = match (current, patch_list) {
            (None, None) => continue,
            (Some(current), None) => current,
            (None, Some(patch_list)) => clean_list(patch_list, mode),
            (Some(current), Some(patch_list)) => {
                merge_list_field(current, patch_list, meta, false, mode)?
            }
        };
        let mut order_keys = Vec::with_capacity(order.len());
        for item in &order {
            order_keys.push(identity.required(item)?.clone());
        }
        let (named, server_only) = partition(merged, &order_keys, identity);
        let ordered = normalize_order(named, server_only, &order_keys, &server_order, identity);
        original.insert(name, Value::Array(ordered));
    }
    Ok(())
}

/// Upstream's validatePatchWithSetOrderList: the patch list must be a subsequence of the order
/// list, or the client computed the patch from something else.
fn validate_element_order(
    patch_list: &[Value],
    order: &[Value],
    identity: Identity,
) -> Result<(), PatchError> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if let Identity::Key(_) = identity {
            let Value::Object(map) = item else {
                return Err(malformed(format!(
                    "list items merged by key must be maps, got {item}"
                )));
            };
            if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        items.push(item);
    }
    let (mut i, mut j) = (0, 0);
    while i < items.len() && j < order.len() {
        if has_directive(items[i]) {
            i += 1;
            continue;
        }
        if same(identity.required(items[i])?, identity.required(&order[j])?) {
            i += 1;
        }
        j += 1;
    }
    if i < items.len() {
        return Err(malformed(format!(
            "the order in patch list {} doesn't match {SET_ELEMENT_ORDER} list {}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

fn has_directive(item: &Value) -> bool {
    item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE))
}

/// mergeSliceHandler: merge-strategy lists (and deletion lists) merge, the rest are replaced.
fn merge_list_field(
    current: Vec<Value>,
    patch: Vec<Value>,
    meta: ListMeta,
    delete_list: bool,
    mode: Mode,
) -> Result<Vec<Value>, PatchError> {
    if meta.merge || delete_list {
        merge_list(current, patch, meta, delete_list, mode)
    } else {
        Ok(clean_list(patch, mode))
    }
}

/// What a list holds, for deciding how to merge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Primitive(mem::Discriminant<Value>),
}

/// The single kind of element of `lists` together; `None` when they are all empty.
fn element_kind(lists: &[&[Value]]) -> Result<Option<Kind>, PatchError> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let this = match item {
            Value::Array(_) => return Err(not_applicable("lists of lists are not supported")),
            Value::Object(_) => Kind::Object,
            other => Kind::Primitive(mem::discriminant(other)),
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k == this => {}
            Some(_) => {
                return Err(not_applicable(
                    "list element types are not identical: a list must not mix maps, strings, numbers and booleans",
                ));
            }
        }
    }
    Ok(kind)
}

fn merge_list(
    current: Vec<Value>,
    patch: Vec<Value>,
    meta: ListMeta,
    delete_list: bool,
    mode: Mode,
) -> Result<Vec<Value>, PatchError> {
    let Some(kind) = element_kind(&[&current, &patch])? else {
        return Ok(current);
    };
    if kind != Kind::Object {
        if delete_list {
            return Ok(current
                .into_iter()
                .filter(|item| !patch.iter().any(|p| same(p, item)))
                .collect());
        }
        let patch_order = patch.clone();
        let server_order = current.clone();
        let mut merged: Vec<Value> = Vec::with_capacity(current.len() + patch.len());
        for item in current.into_iter().chain(patch) {
            if !merged.iter().any(|m| same(m, &item)) {
                merged.push(item);
            }
        }
        let (from_patch, server_only) = partition(merged, &patch_order, Identity::Whole);
        return Ok(normalize_order(
            from_patch,
            server_only,
            &patch_order,
            &server_order,
            Identity::Whole,
        ));
    }
    if delete_list {
        return Err(malformed(format!(
            "{DELETE_FROM_PRIMITIVE_LIST} only applies to lists of primitives"
        )));
    }
    let Some(key) = meta.key else {
        return Err(not_applicable(
            "cannot merge lists of maps without a merge key",
        ));
    };
    let identity = Identity::Key(key);
    let (current, patch) = match mode {
        Mode::Patch => split_list_directives(current, patch, key, mode)?,
        Mode::Apply => (current, patch),
    };
    let mut patch_order = Vec::with_capacity(patch.len());
    for item in &patch {
        patch_order.push(identity.required(item)?.clone());
    }
    let server_order: Vec<Value> = current
        .iter()
        .map(|item| identity.of(item).clone())
        .collect();
    let merged = merge_keyed_items(current, patch, key, meta.item, mode)?;
    let (from_patch, server_only) = partition(merged, &patch_order, identity);
    Ok(normalize_order(
        from_patch,
        server_only,
        &patch_order,
        &server_order,
        identity,
    ))
}

/// mergeSliceWithSpecialElements: applies `{"$patch": "delete", <key>: v}` items and
/// `{"$patch": "replace"}`, returning the original to merge into and the plain patch items.
fn split_list_directives(
    mut current: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    mode: Mode,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(mut map) = item else {
            plain.push(item);
            continue;
        };
        let Some(directive) = map.remove(DIRECTIVE) else {
            plain.push(Value::Object(map));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(value) = map.get(key) else {
                    return Err(no_merge_key(&map, key));
                };
                current.retain(|item| !same(Identity::Key(key).of(item), value));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                if !map.is_empty() {
                    plain.push(Value::Object(map));
                }
            }
            _ => {
                return Err(malformed(format!(
                    "unknown patch type: {directive} in list item: {}",
                    Value::Object(map)
                )));
            }
        }
    }
    if replace {
        Ok((clean_list(plain, mode), Vec::new()))
    } else {
        Ok((current, plain))
    }
}

/// mergeSliceWithoutSpecialElements: each patch item merges into the item with its key, or is
/// appended.
fn merge_keyed_items(
    mut current: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    item_type: Option<Ty>,
    mode: Mode,
) -> Result<Vec<Value>, PatchError> {
    for item in patch {
        let Value::Object(item) = item else {
            continue;
        };
        let Some(value) = item.get(key) else {
            return Err(no_merge_key(&item, key));
        };
        let found = current
            .iter()
            .position(|c| same(Identity::Key(key).of(c), value));
        match found {
            Some(index) => {
                if let Value::Object(existing) = &mut current[index] {
                    *existing = merge_map(mem::take(existing), item, item_type, mode)?;
                }
            }
            None => {
                if let Some(item) = clean(Value::Object(item), mode, true) {
                    current.push(item);
                }
            }
        }
    }
    Ok(current)
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> PatchError {
    malformed(format!(
        "map: {} does not contain declared merge key: {key}",
        Value::Object(map.clone())
    ))
}

/// How list items are told apart: by their merge key, or whole (primitives).
#[derive(Debug, Clone, Copy)]
enum Identity<'a> {
    Key(&'a str),
    Whole,
}

static NULL: Value = Value::Null;

impl Identity<'_> {
    /// The identity of `item`; a map missing the key counts as null, as upstream's index().
    fn of(self, item: &Value) -> &Value {
        match self {
            Identity::Key(key) => item.get(key).unwrap_or(&NULL),
            Identity::Whole => item,
        }
    }

    /// The identity of an item the client sent, which must carry the merge key.
    fn required(self, item: &Value) -> Result<&Value, PatchError> {
        match self {
            Identity::Key(key) => match item {
                Value::Object(map) => map.get(key).ok_or_else(|| no_merge_key(map, key)),
                other => Err(malformed(format!(
                    "list items merged by key must be maps, got {other}"
                ))),
            },
            Identity::Whole => Ok(item),
        }
    }
}

/// Value equality, except that numbers compare by value: a merge key of `80` finds `80.0`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

fn index_of(order: &[Value], identity: &Value) -> Option<usize> {
    order.iter().position(|o| same(o, identity))
}

/// Splits `items` into those whose identity is in `named` and the rest, keeping their order.
fn partition(items: Vec<Value>, named: &[Value], identity: Identity) -> (Vec<Value>, Vec<Value>) {
    items
        .into_iter()
        .partition(|item| index_of(named, identity.of(item)).is_some())
}

/// normalizeElementOrder: patch items in the patch's order, server-only items in the server's
/// order, then interleaved so that a server-only item stays ahead of the patch items it
/// preceded on the server.
fn normalize_order(
    mut from_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    identity: Identity,
) -> Vec<Value> {
    let rank =
        |order: &[Value], item: &Value| index_of(order, identity.of(item)).unwrap_or(usize::MAX);
    from_patch.sort_by_key(|item| rank(patch_order, item));
    server_only.sort_by_key(|item| rank(server_order, item));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => matches!(
                (index_of(server_order, identity.of(l)), index_of(server_order, identity.of(r))),
                (Some(li), Some(ri)) if li < ri
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// A patch value going into the result as is (the original had nothing to merge it with):
/// nulls are dropped and, for a strategic merge patch, directives resolved and removed.
/// `None` when the value deletes itself (`$patch: delete`) or, as a list item, is a bare
/// directive.
fn clean(value: Value, mode: Mode, list_item: bool) -> Option<Value> {
    match value {
        Value::Object(mut map) => {
            if mode.directives()
                && let Some(directive) = map.remove(DIRECTIVE)
                && (directive.as_str() == Some("delete") || (list_item && map.is_empty()))
            {
                return None;
            }
            Some(Value::Object(clean_map(map, mode)))
        }
        Value::Array(items) => Some(Value::Array(clean_list(items, mode))),
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>, mode: Mode) -> Map<String, Value> {
    map.into_iter()
        .filter(|(key, value)| !(value.is_null() || (mode.directives() && is_directive_key(key))))
        .filter_map(|(key, value)| clean(value, mode, false).map(|value| (key, value)))
        .collect()
}

fn clean_list(items: Vec<Value>, mode: Mode) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|item| clean(item, mode, true))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RESOURCES, lookup};
    use proptest::prelude::*;
    use serde_json::json;

    fn resource(group: &str, plural: &str) -> &'static ResourceInfo {
        lookup(group, "v1", plural).expect("resource in the table")
    }

    fn smp(plural: &str, original: Value, patch: Value) -> Result<Value, PatchError> {
        let group = match plural {
            "deployments" | "replicasets" | "statefulsets" => "apps",
            _ => "",
        };
        apply_patch(
            resource(group, plural),
            PatchType::StrategicMerge,
            &original,
            &patch,
        )
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .map(|items| items.iter().filter_map(|i| i["name"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn content_types_name_patch_types() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type(" Application/Strategic-Merge-Patch+JSON "),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml;charset=utf-8"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type(""), None);
        for t in [
            PatchType::Json,
            PatchType::Merge,
            PatchType::StrategicMerge,
            PatchType::Apply,
        ] {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }

    #[test]
    fn json_patch_applies_and_reports_failures_by_kind() {
        let cms = resource("", "configmaps");
        let original = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let patched = apply_patch(
            cms,
            PatchType::Json,
            &original,
            &json!([
                {"op": "test", "path": "/data/a", "value": "1"},
                {"op": "add", "path": "/data/b", "value": "2"},
                {"op": "remove", "path": "/data/a"}
            ]),
        )
        .unwrap();
        assert_eq!(patched["data"], json!({"b": "2"}));

        let failed = apply_patch(
            cms,
            PatchType::Json,
            &original,
            &json!([{"op": "test", "path": "/data/a", "value": "2"}]),
        )
        .unwrap_err();
        assert_eq!(failed.status_code(), 422, "{failed}");
        let missing = apply_patch(
            cms,
            PatchType::Json,
            &original,
            &json!([{"op": "replace", "path": "/nope/x", "value": 1}]),
        )
        .unwrap_err();
        assert!(matches!(missing, PatchError::NotApplicable(_)), "{missing}");

        for malformed in [
            json!({"op": "add"}),
            json!([{"op": "frobnicate", "path": "/a"}]),
            json!([{"op": "add", "value": 1}]),
        ] {
            let err = apply_patch(cms, PatchType::Json, &original, &malformed).unwrap_err();
            assert_eq!(err.status_code(), 400, "{malformed}: {err}");
        }
    }

    #[test]
    fn merge_patch_is_rfc_7386() {
        let cms = resource("", "configmaps");
        let original =
            json!({"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "y"}});
        let patched = apply_patch(
            cms,
            PatchType::Merge,
            &original,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": null}),
        )
        .unwrap();
        assert_eq!(
            patched,
            json!({"metadata": {"name": "c", "labels": {"b": "2", "c": "3"}}})
        );
        let err = apply_patch(cms, PatchType::Merge, &original, &json!([1])).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)));
    }

    #[test]
    fn kubectl_apply_of_a_deployment() {
        let original = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}",
                "deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{"name": "nginx", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                    "restartPolicy": "Always"}}},
            "status": {"replicas": 1}
        });
        let patch = json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"new\":true}"}},"spec":{"replicas":3,"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"}],"containers":[{"image":"nginx:1.28","name":"nginx"}]}}}});
        let patched = smp("deployments", original.clone(), patch).unwrap();

        let mut expected = original;
        expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"new\":true}");
        expected["spec"]["replicas"] = json!(3);
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        assert_eq!(patched, expected);
    }

    #[test]
    fn kubectl_apply_changing_a_service_port() {
        let original = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"clusterIP": "10.0.0.9", "selector": {"app": "db"},
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432}]}
        });
        let patch = json!({"spec":{"$setElementOrder/ports":[{"port":5433}],"ports":[{"port":5433,"targetPort":5432},{"$patch":"delete","port":5432}]}});
        let patched = smp("services", original, patch).unwrap();
        assert_eq!(
            patched["spec"],
            json!({"clusterIP": "10.0.0.9", "selector": {"app": "db"},
                   "ports": [{"port": 5433, "targetPort": 5432}]})
        );
    }

    #[test]
    fn kubectl_rollout_restart() {
        let original = json!({"metadata": {"name": "web"}, "spec": {"template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let patch = json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-01-01T00:00:00Z"}}}}});
        let patched = smp("deployments", original.clone(), patch).unwrap();
        let mut expected = original;
        expected["spec"]["template"]["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"});
        assert_eq!(patched, expected);
    }

    #[test]
    fn nested_merge_lists_delete_and_reorder() {
        let original = pod(json!({"containers": [{"name": "app", "image": "a", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}]}));
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "app"}], "containers": [{
            "name": "app",
            "$setElementOrder/env": [{"name": "C"}, {"name": "A"}],
            "env": [{"name": "C", "value": "33"}, {"$patch": "delete", "name": "B"}]}]}});
        let patched = smp("pods", original, patch).unwrap();
        assert_eq!(
            patched["spec"]["containers"],
            json!([{"name": "app", "image": "a", "env": [{"name": "C", "value": "33"}, {"name": "A", "value": "1"}]}])
        );
    }

    #[test]
    fn patch_replace_and_delete_on_maps() {
        let original = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
                              "spec": {"securityContext": {"runAsUser": 1}, "containers": []}});
        let replaced = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(replaced["metadata"]["labels"], json!({"c": "3"}));

        let deleted = smp(
            "pods",
            original.clone(),
            json!({"spec": {"securityContext": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert_eq!(deleted["spec"]["securityContext"], json!({}));

        // Documented deviation: upstream rejects `$patch: merge`; it means what merging does.
        let merged = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"labels": {"$patch": "merge", "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(
            merged["metadata"]["labels"],
            json!({"a": "1", "b": "2", "c": "3"})
        );

        let err = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"labels": {"$patch": "bogus"}}}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, PatchError::Malformed(m) if m.contains("unknown patch type")),
            "{err}"
        );

        // A replace map for a field the original lacks is inserted without the directive.
        let fresh = smp(
            "pods",
            original,
            json!({"spec": {"nodeSelector": {"$patch": "replace", "disk": "ssd"}}}),
        )
        .unwrap();
        assert_eq!(fresh["spec"]["nodeSelector"], json!({"disk": "ssd"}));
    }

    #[test]
    fn patch_replace_and_delete_in_lists() {
        let original = pod(json!({"containers": [
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}));
        let replaced = smp(
            "pods",
            original.clone(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c"}]}}),
        )
        .unwrap();
        assert_eq!(
            replaced["spec"]["containers"],
            json!([{"name": "c", "image": "c"}])
        );

        let deleted = smp(
            "pods",
            original.clone(),
            json!({"spec": {"containers": [{"$patch": "delete", "name": "a"}, {"$patch": "delete", "name": "zz"}]}}),
        )
        .unwrap();
        assert_eq!(names(&deleted["spec"]["containers"]), ["b"]);

        let err = smp(
            "pods",
            original,
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, PatchError::Malformed(m) if m.contains("does not contain declared merge key: name")),
            "{err}"
        );
    }

    #[test]
    fn retain_keys_clears_the_other_members_of_a_union() {
        let deployment = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "strategy": {
            "type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
        let patched = smp(
            "deployments",
            deployment.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
        )
        .unwrap();
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));

        let err = smp(
            "deployments",
            deployment.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");
        let err = smp(
            "deployments",
            deployment,
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");

        // A volume switching source: the old source goes, the merge by name keeps the rest.
        let original = pod(json!({"containers": [], "volumes": [
            {"name": "data", "emptyDir": {}}, {"name": "other", "emptyDir": {}}]}));
        let patched = smp(
            "pods",
            original,
            json!({"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "name": "data"}]}}),
        )
        .unwrap();
        assert_eq!(
            patched["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "cfg"}}, {"name": "other", "emptyDir": {}}])
        );
    }

    #[test]
    fn primitive_merge_lists_are_unions() {
        let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}, "spec": {"containers": []}});
        let added = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
        )
        .unwrap();
        // Without $setElementOrder upstream puts patch items ahead of server-only ones.
        assert_eq!(added["metadata"]["finalizers"], json!(["c", "a", "b"]));

        let ordered = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "c"], "finalizers": ["c"]}}),
        )
        .unwrap();
        assert_eq!(ordered["metadata"]["finalizers"], json!(["a", "b", "c"]));

        let removed = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}}),
        )
        .unwrap();
        assert_eq!(removed["metadata"]["finalizers"], json!(["a"]));

        let both = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "a"], "$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["c"]}}),
        )
        .unwrap();
        assert_eq!(both["metadata"]["finalizers"], json!(["c", "a"]));

        // Deleting from a list the object lacks does not create it.
        let absent = smp(
            "pods",
            json!({"metadata": {"name": "p"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        )
        .unwrap();
        assert_eq!(absent, json!({"metadata": {"name": "p"}}));

        let err = smp(
            "pods",
            original,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "b"}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");
    }

    #[test]
    fn lists_merge_by_their_declared_keys() {
        let original = json!({
            "metadata": {"name": "p", "ownerReferences": [{"uid": "u1", "name": "rs", "kind": "ReplicaSet"}]},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                     "volumeMounts": [{"mountPath": "/data", "name": "v"}]}],
                     "tolerations": [{"key": "a", "operator": "Exists"}],
                     "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}
        });
        let patched = smp(
            "pods",
            original,
            json!({
                "metadata": {"ownerReferences": [{"uid": "u1", "controller": true}]},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 443}],
                                         "volumeMounts": [{"mountPath": "/data", "readOnly": true}]}],
                         "tolerations": [{"key": "b", "operator": "Exists"}],
                         "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }),
        )
        .unwrap();
        assert_eq!(
            patched["metadata"]["ownerReferences"],
            json!([{"uid": "u1", "name": "rs", "kind": "ReplicaSet", "controller": true}])
        );
        assert_eq!(
            patched["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 443}, {"containerPort": 80}])
        );
        assert_eq!(
            patched["spec"]["containers"][0]["volumeMounts"],
            json!([{"mountPath": "/data", "name": "v", "readOnly": true}])
        );
        // No patch strategy: atomic.
        assert_eq!(
            patched["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        // Merged by ip, but hostnames itself is atomic.
        assert_eq!(
            patched["spec"]["hostAliases"],
            json!([{"ip": "10.0.0.1", "hostnames": ["b"]}])
        );
        assert_eq!(
            patched["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}])
        );
    }

    #[test]
    fn pod_templates_share_the_pod_spec_rules() {
        for plural in ["deployments", "replicasets", "statefulsets"] {
            let original = json!({"metadata": {"name": "w"}, "spec": {
                "template": {"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
            let patched = smp(
                plural,
                original,
                json!({"spec": {
                    "template": {"spec": {"containers": [{"name": "b", "image": "b2"}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "logs"}}]}}),
            )
            .unwrap();
            assert_eq!(
                patched["spec"]["template"]["spec"]["containers"],
                json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b2"}]),
                "{plural}"
            );
            // No merge key: replaced.
            assert_eq!(
                patched["spec"]["volumeClaimTemplates"],
                json!([{"metadata": {"name": "logs"}}])
            );
        }
    }

    #[test]
    fn nulls_delete_and_unknown_fields_pass_through() {
        let original = json!({"metadata": {"name": "d"}, "spec": {"replicas": 2, "paused": true}});
        let patched = smp(
            "deployments",
            original,
            json!({"spec": {"paused": null, "custom": {"x": [1, 2]}, "nothing": null}}),
        )
        .unwrap();
        assert_eq!(
            patched["spec"],
            json!({"replicas": 2, "custom": {"x": [1, 2]}})
        );
    }

    // Ported from strategicpatch's "set elements order in a list with server-only items 2"
    // and "... 3", on containers instead of the test type's mergingList.
    #[test]
    fn set_element_order_keeps_server_only_items_in_place() {
        let c = |name: &str| json!({"name": name, "image": name});
        let original = pod(json!({"containers": [c("1"), c("2"), c("9"), c("3"), c("4")]}));
        let patch = json!({"spec": {"$setElementOrder/containers": [
            {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}]}});
        let patched = smp("pods", original, patch.clone()).unwrap();
        assert_eq!(
            names(&patched["spec"]["containers"]),
            ["2", "1", "9", "4", "3"]
        );

        let original = pod(json!({"containers": [
            c("1"), c("2"), c("7"), c("9"), c("8"), c("3"), c("4")]}));
        let patched = smp("pods", original, patch).unwrap();
        assert_eq!(
            names(&patched["spec"]["containers"]),
            ["2", "1", "7", "9", "8", "4", "3"]
        );
    }

    // Ported from strategicpatch's customStrategicMergePatchRawTestCases.
    #[test]
    fn set_element_order_edge_cases_from_upstream() {
        let original = pod(json!({"containers": [{"name": "1"}, {"name": "3"}]}));
        let patched = smp(
            "pods",
            original,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
                "containers": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]}}),
        )
        .unwrap();
        assert_eq!(
            patched["spec"]["containers"],
            json!([{"name": "3", "value": "3"}, {"name": "1", "value": "1"}])
        );

        let original = pod(json!({"containers": [{"name": "1"}, {"name": "3"}, {"name": "2"}]}));
        let err = smp(
            "pods",
            original,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
                "containers": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]}}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, PatchError::Malformed(m) if m.contains("doesn't match")),
            "{err}"
        );

        let original = json!({"metadata": {"finalizers": ["1", "3"]}});
        let patched = smp(
            "pods",
            original,
            json!({"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}}),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["3", "1"]));

        // "merge lists of scalars": current [1,2,4], patch adds 3 after 2.
        let original = json!({"metadata": {"finalizers": ["1", "2", "4"]}});
        let patched = smp(
            "pods",
            original,
            json!({"metadata": {"$setElementOrder/finalizers": ["1", "2", "3"], "finalizers": ["3"]}}),
        )
        .unwrap();
        assert_eq!(
            patched["metadata"]["finalizers"],
            json!(["1", "2", "3", "4"])
        );

        let err = smp(
            "pods",
            json!({"metadata": {}}),
            json!({"metadata": {"$setElementOrder": ["a"]}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");
    }

    #[test]
    fn shape_errors() {
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let err = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"finalizers": [["a"]]}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::NotApplicable(_)), "{err}");
        let err = smp(
            "pods",
            original.clone(),
            json!({"metadata": {"finalizers": [1]}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::NotApplicable(_)), "{err}");
        let err = smp(
            "pods",
            pod(json!({"containers": [{"name": "a"}]})),
            json!({"spec": {"containers": [{"image": "x"}]}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");
        let err = smp("pods", original, json!(["not", "an", "object"])).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err}");
        // A type change is a replacement, not an error.
        let patched = smp(
            "pods",
            json!({"spec": {"containers": {"oops": true}}}),
            json!({"spec": {"containers": [{"name": "a"}]}}),
        )
        .unwrap();
        assert_eq!(patched["spec"]["containers"], json!([{"name": "a"}]));
    }

    #[test]
    fn new_values_lose_their_directives() {
        let patched = smp(
            "pods",
            pod(json!({})),
            json!({"spec": {"containers": [
                {"name": "a", "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "1"}, {"$patch": "delete", "name": "Y"}], "args": null},
                {"$patch": "replace"}]}}),
        )
        .unwrap();
        assert_eq!(
            patched["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "X", "value": "1"}]}])
        );
    }

    #[test]
    fn apply_sets_what_the_applier_sets_and_keeps_the_rest() {
        let deployments = resource("apps", "deployments");
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "busybox"}]}}}
        });
        let applied = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"$patch": "replace"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.29"}]}}}
        });
        let result = apply_patch(deployments, PatchType::Apply, &live, &applied).unwrap();
        assert_eq!(result["spec"]["replicas"], 2);
        assert_eq!(
            result["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "nginx", "image": "nginx:1.29", "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "busybox"}])
        );
        assert_eq!(
            result["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "3"
        );
        // Directives mean nothing in an apply configuration.
        assert_eq!(result["metadata"]["labels"], json!({"$patch": "replace"}));

        let created = apply_patch(deployments, PatchType::Apply, &json!({}), &applied).unwrap();
        assert_eq!(created["spec"]["replicas"], 2);
    }

    // ---- the metadata table against k8s-openapi's schema ------------------------------------

    fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
        match node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            Some(name) => resolve(root, &root["$defs"][name]),
            None => node,
        }
    }

    fn check_type(
        root: &Value,
        node: &Value,
        ty: Ty,
        path: &str,
        checked: &mut Vec<Ty>,
        errors: &mut Vec<String>,
    ) {
        checked.push(ty);
        let node = resolve(root, node);
        for (_, name, shape) in FIELDS.iter().filter(|(t, _, _)| *t == ty) {
            let path = format!("{path}.{name}");
            let Some(property) = node["properties"].get(*name) else {
                errors.push(format!("{path}: no such field"));
                continue;
            };
            let property = resolve(root, property);
            let is_array = property["type"] == "array";
            match *shape {
                Shape::Struct(ty) => {
                    if property["type"] != "object" {
                        errors.push(format!("{path}: not an object"));
                    }
                    check_type(root, property, ty, &path, checked, errors);
                }
                Shape::Keyed { key, item } => {
                    let items = resolve(root, &property["items"]);
                    if !is_array || items["properties"].get(key).is_none() {
                        errors.push(format!("{path}: not a list of objects with {key:?}"));
                    }
                    if let Some(ty) = item {
                        check_type(root, items, ty, &format!("{path}[]"), checked, errors);
                    }
                }
                Shape::Set => {
                    if !is_array || property["items"]["type"] != "string" {
                        errors.push(format!("{path}: not a list of strings"));
                    }
                }
            }
        }
    }

    fn schema_of(info: &ResourceInfo) -> Option<Value> {
        use k8s_openapi::api::{
            apps::v1 as apps, coordination::v1 as coordination, core::v1 as core,
            discovery::v1 as discovery, events::v1 as events, storage::v1 as storage,
        };
        use schemars::schema_for;
        let schema = match (info.group, info.kind) {
            ("", "Namespace") => schema_for!(core::Namespace),
            ("", "Node") => schema_for!(core::Node),
            ("", "Pod") => schema_for!(core::Pod),
            ("", "Service") => schema_for!(core::Service),
            ("", "Endpoints") => schema_for!(core::Endpoints),
            ("", "ConfigMap") => schema_for!(core::ConfigMap),
            ("", "Secret") => schema_for!(core::Secret),
            ("", "Event") => schema_for!(core::Event),
            ("", "ServiceAccount") => schema_for!(core::ServiceAccount),
            ("", "PersistentVolume") => schema_for!(core::PersistentVolume),
            ("", "PersistentVolumeClaim") => schema_for!(core::PersistentVolumeClaim),
            ("storage.k8s.io", "StorageClass") => schema_for!(storage::StorageClass),
            ("apps", "Deployment") => schema_for!(apps::Deployment),
            ("apps", "ReplicaSet") => schema_for!(apps::ReplicaSet),
            ("apps", "StatefulSet") => schema_for!(apps::StatefulSet),
            ("apps", "ControllerRevision") => schema_for!(apps::ControllerRevision),
            ("discovery.k8s.io", "EndpointSlice") => schema_for!(discovery::EndpointSlice),
            ("coordination.k8s.io", "Lease") => schema_for!(coordination::Lease),
            ("events.k8s.io", "Event") => schema_for!(events::Event),
            _ => return None,
        };
        serde_json::to_value(schema).ok()
    }

    #[test]
    fn the_merge_table_names_real_fields() {
        let mut errors = Vec::new();
        let mut checked = Vec::new();
        for info in RESOURCES {
            let Some(schema) = schema_of(info) else {
                errors.push(format!("{}: no schema in this test", info.kind));
                continue;
            };
            check_type(
                &schema,
                &schema,
                root_type(info),
                info.kind,
                &mut checked,
                &mut errors,
            );
        }
        assert!(errors.is_empty(), "{errors:#?}");
        for (ty, name, _) in FIELDS {
            assert!(checked.contains(ty), "{ty:?}.{name} is never reached");
        }
    }

    // ---- properties -------------------------------------------------------------------------

    /// JSON with no nulls inside objects and no `$` keys: patching with it means "set this".
    fn plain_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-e]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn plain_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-e]{1,2}", plain_json(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// Anything, with the keys and values that steer the strategic merge code well represented.
    fn chaos_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i8>().prop_map(|n| json!(n)),
            Just(json!(1.5)),
            prop_oneof![
                "[a-c]{0,2}",
                Just("replace".to_string()),
                Just("delete".to_string()),
                Just("merge".to_string()),
                Just("name".to_string()),
                Just("containers".to_string()),
            ]
            .prop_map(Value::String),
        ];
        let key = prop_oneof![
            "[a-c]{1,2}",
            Just("$patch".to_string()),
            Just("$retainKeys".to_string()),
            Just("$setElementOrder".to_string()),
            Just("$setElementOrder/containers".to_string()),
            Just("$setElementOrder/finalizers".to_string()),
            Just("$setElementOrder/a".to_string()),
            Just("$deleteFromPrimitiveList/finalizers".to_string()),
            Just("$deleteFromPrimitiveList/containers".to_string()),
            Just("$deleteFromPrimitiveList/a".to_string()),
            Just("metadata".to_string()),
            Just("finalizers".to_string()),
            Just("ownerReferences".to_string()),
            Just("uid".to_string()),
            Just("spec".to_string()),
            Just("template".to_string()),
            Just("containers".to_string()),
            Just("env".to_string()),
            Just("ports".to_string()),
            Just("containerPort".to_string()),
            Just("name".to_string()),
        ];
        leaf.prop_recursive(6, 64, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_patch_ops() -> impl Strategy<Value = Value> {
        let pointer = prop_oneof![
            Just(""),
            Just("/a"),
            Just("/a/0"),
            Just("/a/-"),
            Just("/a/b"),
            Just("/b"),
            Just("/0"),
            Just("/spec/containers/0/name"),
            Just("/a~1b"),
            Just("/a/99999999999999999999"),
        ];
        let op = prop_oneof![
            Just("add"),
            Just("remove"),
            Just("replace"),
            Just("move"),
            Just("copy"),
            Just("test"),
        ];
        prop::collection::vec(
            (op, pointer.clone(), pointer, chaos_json())
                .prop_map(|(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value})),
            0..6,
        )
        .prop_map(Value::Array)
    }

    fn unique_names(pool: &'static str, max: usize) -> impl Strategy<Value = Vec<String>> {
        prop::collection::btree_set(pool, 0..max)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
    }

    /// A deployment whose merge lists have unique keys, as a valid object does.
    fn deployment() -> impl Strategy<Value = Value> {
        let container = (
            "[a-z]{1,3}",
            unique_names("[A-D]", 4),
            prop::collection::btree_set(1u16..5, 0..3),
        )
            .prop_map(|(image, env, ports)| {
                json!({"image": image,
                       "env": env.iter().map(|n| json!({"name": n, "value": n})).collect::<Vec<_>>(),
                       "ports": ports.iter().map(|p| json!({"containerPort": p})).collect::<Vec<_>>()})
            });
        (
            unique_names("c[0-4]", 5),
            prop::collection::vec(container, 5),
            unique_names("f[0-4]", 4),
            unique_names("u[0-3]", 3),
            plain_object(),
            plain_json(),
        )
            .prop_map(|(names, mut containers, finalizers, uids, labels, extra)| {
                let containers: Vec<Value> = names
                    .iter()
                    .zip(containers.iter_mut())
                    .map(|(name, c)| {
                        c["name"] = json!(name);
                        c.clone()
                    })
                    .collect();
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "d", "labels": labels, "finalizers": finalizers,
                                 "ownerReferences": uids.iter().map(|u| json!({"uid": u, "name": u})).collect::<Vec<_>>()},
                    "spec": {"replicas": 1, "extra": extra, "template": {"spec": {"containers": containers,
                             "tolerations": [{"key": "k"}]}}},
                    "status": {"conditions": [{"type": "Available", "status": "True"}]}
                })
            })
    }

    /// The RFC 7386 patch that turns `from` into `to` (which has no nulls in objects).
    fn merge_diff(from: &Value, to: &Value) -> Value {
        match (from, to) {
            (Value::Object(from), Value::Object(to)) => {
                let mut out = Map::new();
                for key in from.keys().filter(|k| !to.contains_key(*k)) {
                    out.insert(key.clone(), Value::Null);
                }
                for (key, value) in to {
                    match from.get(key) {
                        Some(old) if old == value => {}
                        Some(old) if old.is_object() && value.is_object() => {
                            out.insert(key.clone(), merge_diff(old, value));
                        }
                        _ => {
                            out.insert(key.clone(), value.clone());
                        }
                    }
                }
                Value::Object(out)
            }
            _ => to.clone(),
        }
    }

    proptest! {
        #[test]
        fn merge_patch_of_a_diff_reaches_the_target(from in chaos_json(), to in plain_object()) {
            let cms = resource("", "configmaps");
            let from = if from.is_object() { from } else { json!({"x": from}) };
            let patch = merge_diff(&from, &to);
            prop_assert_eq!(apply_patch(cms, PatchType::Merge, &from, &patch).unwrap(), to);
        }

        #[test]
        fn json_patch_of_a_diff_reaches_the_target(from in chaos_json(), to in chaos_json()) {
            let cms = resource("", "configmaps");
            let patch = serde_json::to_value(json_patch::diff(&from, &to)).unwrap();
            prop_assert_eq!(apply_patch(cms, PatchType::Json, &from, &patch).unwrap(), to);
        }

        #[test]
        fn a_patch_equal_to_the_object_changes_nothing(object in deployment()) {
            let deployments = resource("apps", "deployments");
            for patch_type in [PatchType::StrategicMerge, PatchType::Apply] {
                let patched = apply_patch(deployments, patch_type, &object, &object).unwrap();
                prop_assert_eq!(&patched, &object);
            }
        }

        #[test]
        fn plain_json_patched_with_itself_is_unchanged(object in plain_object(), index in any::<prop::sample::Index>()) {
            let info = index.get(RESOURCES);
            for patch_type in [PatchType::StrategicMerge, PatchType::Apply] {
                prop_assert_eq!(apply_patch(info, patch_type, &object, &object).unwrap(), object.clone());
            }
        }

        #[test]
        fn an_empty_patch_changes_nothing(object in chaos_json(), index in any::<prop::sample::Index>()) {
            let info = index.get(RESOURCES);
            let object = if object.is_object() { object } else { json!({"x": object}) };
            for patch_type in [PatchType::StrategicMerge, PatchType::Apply, PatchType::Merge] {
                prop_assert_eq!(apply_patch(info, patch_type, &object, &json!({})).unwrap(), object.clone());
            }
            prop_assert_eq!(apply_patch(info, PatchType::Json, &object, &json!([])).unwrap(), object);
        }

        #[test]
        fn set_element_order_neither_loses_nor_duplicates(
            server in unique_names("c[0-7]", 8),
            order in unique_names("c[0-7]", 8),
            keep in prop::collection::vec(any::<bool>(), 8),
            deletes in prop::collection::btree_set("c[0-7]", 0..3),
        ) {
            let patch_names: Vec<&String> = order
                .iter()
                .zip(keep.iter())
                .filter(|(name, keep)| **keep && !deletes.contains(*name))
                .map(|(name, _)| name)
                .collect();
            let mut patch_list: Vec<Value> = patch_names
                .iter()
                .map(|n| json!({"name": n, "image": "new"}))
                .collect();
            patch_list.extend(deletes.iter().map(|n| json!({"$patch": "delete", "name": n})));
            let original = pod(json!({"containers": server.iter().map(|n| json!({"name": n, "image": "old"})).collect::<Vec<_>>()}));
            let patch = json!({"spec": {
                "$setElementOrder/containers": order.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
                "containers": patch_list}});
            let patched = smp("pods", original, patch).unwrap();
            let result = names(&patched["spec"]["containers"]);

            let mut expected: Vec<&str> = server
                .iter()
                .map(String::as_str)
                .chain(patch_names.iter().map(|n| n.as_str()))
                .filter(|n| !deletes.contains(*n))
                .collect();
            expected.sort_unstable();
            expected.dedup();
            let mut sorted = result.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&sorted, &expected, "result {:?}", result);

            let in_order: Vec<&str> = result.iter().copied().filter(|n| order.iter().any(|o| o == n)).collect();
            let wanted: Vec<&str> = order.iter().map(String::as_str).filter(|n| result.contains(n)).collect();
            prop_assert_eq!(in_order, wanted);
        }

        #[test]
        fn no_input_panics(
            original in chaos_json(),
            patch in chaos_json(),
            ops in json_patch_ops(),
            index in any::<prop::sample::Index>(),
        ) {
            let info = index.get(RESOURCES);
            for patch_type in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge, PatchType::Apply] {
                let _ = apply_patch(info, patch_type, &original, &patch);
                let _ = apply_patch(info, patch_type, &json!({"x": original.clone()}), &patch);
            }
            let _ = apply_patch(info, PatchType::Json, &original, &ops);
            let _ = apply_patch(info, PatchType::StrategicMerge, &patch, &original);
        }
    }
}
