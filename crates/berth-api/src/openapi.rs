//! OpenAPI v3: the `/openapi/v3` root and one document per group-version, which kubectl needs
//! before `apply`, `create -f` and `edit` will run, and which `kubectl explain` renders.
//!
//! Each document is built once from the k8s-openapi schemas (their `schemars::JsonSchema` impls,
//! rendered for OpenAPI 3.0, which already carry Kubernetes' definition names such as
//! `io.k8s.api.core.v1.Pod` and the upstream field descriptions) plus what those impls lack:
//! - `x-kubernetes-group-version-kind` on each kind, list kind and shared meta kind; explain finds
//!   a resource's schema by it;
//! - the strategic-merge-patch metadata (`x-kubernetes-patch-strategy`, `-patch-merge-key`,
//!   `-list-type`, `-list-map-keys`, `-map-type`; `PATCH_METADATA`). Client-side `kubectl apply`
//!   computes its patch from *this* document when the GVK's PATCH operation accepts
//!   `application/strategic-merge-patch+json`; without the metadata every list would be replaced
//!   wholesale and removing a container or env var from a manifest would never reach the server;
//! - the paths of every resource (collection, item, all-namespaces list and subresources). Every
//!   PATCH operation names its GVK and has a `fieldValidation` query parameter: that is how kubectl
//!   learns the server validates fields itself (otherwise it demands `--validate=false`).
//!
//! The root lists `serverRelativeURL: /openapi/v3/<gv>?hash=<H>`, where H is a content hash of the
//! document (FNV-1a, 128 bits, hex) and also its ETag: stable for a given build of berth, and
//! different whenever the document changes, which is all the client cache needs.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::resources::{RESOURCES, ResourceInfo, Subresource};

/// One group-version's document, serialized once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupVersionDoc {
    /// The JSON document.
    pub body: Vec<u8>,
    /// The content hash, as used in the root's `?hash=`; send it quoted as the `ETag`.
    pub etag: String,
}

/// The Kubernetes version the documents describe (the k8s-openapi feature berth builds with).
const KUBERNETES_VERSION: &str = "v1.33.0";

const SCHEMAS: &str = "#/components/schemas/";

/// `GET /openapi/v3`: where each group-version's document is, with its hash.
pub fn root() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(path, doc)| {
            let url = format!("/openapi/v3/{path}?hash={}", doc.etag);
            (path.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `GET /openapi/v3/<path>` for `path` = "api/v1" or "apis/<group>/<version>" (surrounding slashes
/// are ignored); `None` for a group-version berth does not serve.
pub fn group_version(path: &str) -> Option<Arc<GroupVersionDoc>> {
    documents().get(path.trim_matches('/')).cloned()
}

/// Every document, built on first use: the schemas do not change while berth runs.
fn documents() -> &'static BTreeMap<String, Arc<GroupVersionDoc>> {
    static DOCUMENTS: OnceLock<BTreeMap<String, Arc<GroupVersionDoc>>> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        group_versions()
            .into_iter()
            .map(|(group, version)| {
                let body = serde_json::to_vec(&document(group, version))
                    // Serializing a serde_json::Value to memory only fails on non-string map
                    // keys, which a Value cannot have.
                    .expect("a JSON value serializes");
                let etag = content_hash(&body);
                (
                    gv_path(group, version),
                    Arc::new(GroupVersionDoc { body, etag }),
                )
            })
            .collect()
    })
}

/// The served group-versions, in resource-table order.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    gvs
}

/// "api/v1" or "apis/apps/v1": the key in the root and the URL path after `/openapi/v3/`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// FNV-1a over 128 bits, hex. A content hash for cache busting, not a security boundary; unlike
/// std's `DefaultHasher` its output is fixed by its definition, so equal documents hash equally
/// across builds.
fn content_hash(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    });
    format!("{hash:032X}")
}

/// The OpenAPI document of one group-version.
fn document(group: &str, version: &str) -> Value {
    let resources: Vec<&'static ResourceInfo> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let mut generator = SchemaSettings::openapi3().into_generator();
    // (group, version, kind) → definition name, for the GVK extension and the paths' refs.
    let mut kinds: BTreeMap<(&'static str, &'static str, &'static str), String> = BTreeMap::new();
    for r in &resources {
        if let Some(name) = add_kind(&mut generator, r.group, r.kind) {
            kinds.insert((r.group, r.version, r.kind), name);
        }
        for sub in r.subresources {
            let (g, v, k) = subresource_gvk(r, sub);
            if let Some(name) = add_kind(&mut generator, g, k) {
                kinds.insert((g, v, k), name);
            }
        }
    }
    let shared = Shared {
        delete_options: add::<meta::DeleteOptions>(&mut generator),
        status: add::<meta::Status>(&mut generator),
        patch: add::<meta::Patch>(&mut generator),
        list_meta: add::<meta::ListMeta>(&mut generator),
    };
    let watch_event = add::<meta::WatchEvent<()>>(&mut generator);
    let mut schemas = generator.take_definitions(true);

    // List kinds (k8s-openapi has one generic List<T> without a schema), then the GVKs.
    let mut lists = BTreeMap::new();
    for r in &resources {
        if let Some(item) = kinds.get(&(r.group, r.version, r.kind)) {
            let list_name = format!("{item}List");
            schemas.insert(list_name.clone(), list_schema(r, item, &shared.list_meta));
            lists.insert((r.group, r.kind), list_name.clone());
            annotate_gvk(&mut schemas, &list_name, r.group, r.version, &r.list_kind());
        }
    }
    for ((g, v, k), name) in &kinds {
        annotate_gvk(&mut schemas, name, g, v, k);
    }
    annotate_gvk(&mut schemas, &shared.status, "", "v1", "Status");
    // Like upstream, the option and event kinds carry the GVK of every group that accepts them.
    for (g, v) in group_versions() {
        annotate_gvk(&mut schemas, &shared.delete_options, g, v, "DeleteOptions");
        annotate_gvk(&mut schemas, &watch_event, g, v, "WatchEvent");
    }
    annotate_patch_metadata(&mut schemas);
    metadata_is_optional(&mut schemas);

    let mut paths = Map::new();
    for r in &resources {
        let refs = Refs {
            kind: kinds.get(&(r.group, r.version, r.kind)).map(String::as_str),
            list: lists.get(&(r.group, r.kind)).map(String::as_str),
            shared: &shared,
        };
        resource_paths(&mut paths, r, &refs, &kinds);
    }

    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Definition names of the meta kinds every document uses.
struct Shared {
    delete_options: String,
    status: String,
    patch: String,
    list_meta: String,
}

/// Adds `T` (and all it references) to the generator; returns its definition name.
fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Adds the k8s-openapi schema of a kind; `None` for a kind k8s-openapi does not model (the
/// exec/attach/port-forward option kinds), whose operations then carry no schema reference.
fn add_kind(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coordination, core::v1 as core};
    use k8s_openapi::api::{
        autoscaling::v1 as autoscaling, discovery::v1 as discovery, events::v1 as events,
        storage::v1 as storage,
    };
    let g = generator;
    Some(match (group, kind) {
        ("", "Namespace") => add::<core::Namespace>(g),
        ("", "Node") => add::<core::Node>(g),
        ("", "Pod") => add::<core::Pod>(g),
        ("", "Service") => add::<core::Service>(g),
        ("", "Endpoints") => add::<core::Endpoints>(g),
        ("", "ConfigMap") => add::<core::ConfigMap>(g),
        ("", "Secret") => add::<core::Secret>(g),
        ("", "Event") => add::<core::Event>(g),
        ("", "ServiceAccount") => add::<core::ServiceAccount>(g),
        ("", "PersistentVolume") => add::<core::PersistentVolume>(g),
        ("", "PersistentVolumeClaim") => add::<core::PersistentVolumeClaim>(g),
        ("", "Binding") => add::<core::Binding>(g),
        ("storage.k8s.io", "StorageClass") => add::<storage::StorageClass>(g),
        ("apps", "Deployment") => add::<apps::Deployment>(g),
        ("apps", "ReplicaSet") => add::<apps::ReplicaSet>(g),
        ("apps", "StatefulSet") => add::<apps::StatefulSet>(g),
        ("apps", "ControllerRevision") => add::<apps::ControllerRevision>(g),
        ("discovery.k8s.io", "EndpointSlice") => add::<discovery::EndpointSlice>(g),
        ("coordination.k8s.io", "Lease") => add::<coordination::Lease>(g),
        ("events.k8s.io", "Event") => add::<events::Event>(g),
        ("autoscaling", "Scale") => add::<autoscaling::Scale>(g),
        _ => return None,
    })
}

/// (group, version, kind) a subresource answers with; empty fields in the table mean "the
/// parent's" (status returns the resource itself).
fn subresource_gvk(
    r: &ResourceInfo,
    sub: &Subresource,
) -> (&'static str, &'static str, &'static str) {
    match (sub.kind, sub.version) {
        ("", _) => (r.group, r.version, r.kind),
        (kind, "") => (r.group, r.version, kind),
        (kind, version) => (sub.group, version, kind),
    }
}

fn list_schema(r: &ResourceInfo, item: &str, list_meta: &str) -> Value {
    json!({
        "description": format!("{} is a list of {}.", r.list_kind(), r.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": {"$ref": format!("{SCHEMAS}{item}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "allOf": [{"$ref": format!("{SCHEMAS}{list_meta}")}],
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "required": ["items"],
    })
}

/// Appends `{group, kind, version}` to a definition's `x-kubernetes-group-version-kind` list.
fn annotate_gvk(
    schemas: &mut Map<String, Value>,
    definition: &str,
    group: &str,
    version: &str,
    kind: &str,
) {
    let Some(schema) = schemas.get_mut(definition).and_then(Value::as_object_mut) else {
        return;
    };
    let gvk = json!({"group": group, "kind": kind, "version": version});
    let list = schema
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut()
        && !list.contains(&gvk)
    {
        list.push(gvk);
    }
}

/// k8s-openapi lists `metadata` as required on every kind because its Rust field is not optional;
/// upstream requires it only where the Go field lacks `omitempty` (the core Event). kubectl explain
/// prints `-required-` from this list.
fn metadata_is_optional(schemas: &mut Map<String, Value>) {
    for (name, schema) in schemas.iter_mut() {
        if name == "io.k8s.api.core.v1.Event" {
            continue;
        }
        let Some(schema) = schema.as_object_mut() else {
            continue;
        };
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|field| field != "metadata");
            if required.is_empty() {
                schema.remove("required");
            }
        }
    }
}

/// Adds [`PATCH_METADATA`] and [`ATOMIC_STRUCTS`] to the definitions present in `schemas`.
fn annotate_patch_metadata(schemas: &mut Map<String, Value>) {
    for entry in patch_metadata() {
        let Some(property) = schemas
            .get_mut(entry.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(entry.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let mut set = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                property.insert(key.into(), value.into());
            }
        };
        set("x-kubernetes-patch-strategy", entry.patch_strategy);
        set("x-kubernetes-patch-merge-key", entry.merge_key);
        set("x-kubernetes-list-type", entry.list_type);
        set("x-kubernetes-map-type", entry.map_type);
        if !entry.list_map_keys.is_empty() {
            property.insert(
                "x-kubernetes-list-map-keys".into(),
                entry.list_map_keys.clone().into(),
            );
        }
    }
    for definition in ATOMIC_STRUCTS.split_whitespace() {
        if let Some(schema) = schemas.get_mut(definition).and_then(Value::as_object_mut) {
            schema.insert("x-kubernetes-map-type".into(), "atomic".into());
        }
    }
}

/// One line of [`PATCH_METADATA`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldMetadata {
    definition: &'static str,
    field: &'static str,
    patch_strategy: Option<&'static str>,
    merge_key: Option<&'static str>,
    list_type: Option<&'static str>,
    list_map_keys: Vec<&'static str>,
    map_type: Option<&'static str>,
}

/// [`PATCH_METADATA`], parsed. Lines that do not have seven columns are skipped; a unit test
/// checks there are none.
fn patch_metadata() -> impl Iterator<Item = FieldMetadata> {
    let column = |s: &'static str| (s != "-").then_some(s);
    PATCH_METADATA.lines().filter_map(move |line| {
        let cols: Vec<&'static str> = line.split_whitespace().collect();
        let [
            definition,
            field,
            strategy,
            key,
            list_type,
            map_keys,
            map_type,
        ] = cols[..]
        else {
            return None;
        };
        Some(FieldMetadata {
            definition,
            field,
            patch_strategy: column(strategy),
            merge_key: column(key),
            list_type: column(list_type),
            list_map_keys: column(map_keys)
                .map(|keys| keys.split(',').collect())
                .unwrap_or_default(),
            map_type: column(map_type),
        })
    })
}

// ---- paths ---------------------------------------------------------------------------------

/// Definition names an operation of one resource refers to.
struct Refs<'a> {
    kind: Option<&'a str>,
    list: Option<&'a str>,
    shared: &'a Shared,
}

fn schema_ref(definition: Option<&str>) -> Value {
    match definition {
        Some(name) => json!({"$ref": format!("{SCHEMAS}{name}")}),
        // A kind without a schema still gets a well-formed operation.
        None => json!({"type": "object"}),
    }
}

/// "CoreV1", "AppsV1", "StorageV1": how upstream operation ids name a group-version.
fn gv_ident(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    group.split('.').chain([version]).map(capitalize).collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The collection, item, all-namespaces and subresource paths of one resource.
fn resource_paths(
    paths: &mut Map<String, Value>,
    r: &ResourceInfo,
    refs: &Refs,
    kinds: &BTreeMap<(&'static str, &'static str, &'static str), String>,
) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let gv = gv_ident(r.group, r.version);
    let tag = format!("{}_{}", uncapitalize(&gv_ident(r.group, "")), r.version);
    let scope = if r.namespaced() { "Namespaced" } else { "" };
    let kind = r.kind;
    let can = |verb: &str| r.verbs.contains(&verb);
    let gvk = json!({"group": r.group, "kind": kind, "version": r.version});
    let op = |action: &str, id: String, description: String| Operation {
        action: action.to_string(),
        id,
        description,
        tag: tag.clone(),
        gvk: gvk.clone(),
    };

    let collection = if r.namespaced() {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let scope_params = || {
        let mut params = Vec::new();
        if r.namespaced() {
            params.push(namespace_param());
        }
        params
    };

    // Collection: list, create, deletecollection.
    let mut item = PathItem::new(scope_params());
    if can("list") {
        item.insert(
            "get",
            op(
                "list",
                format!("list{gv}{scope}{kind}"),
                format!("list or watch objects of kind {kind}"),
            )
            .build(list_params(), None, list_responses(refs.list)),
        );
    }
    if can("create") {
        item.insert(
            "post",
            op(
                "post",
                format!("create{gv}{scope}{kind}"),
                format!("create a {kind}"),
            )
            .build(
                write_params(),
                Some(body(refs.kind)),
                responses(&["200", "201", "202"], refs.kind),
            ),
        );
    }
    if can("deletecollection") {
        let mut params = delete_params();
        params.extend(list_params());
        item.insert(
            "delete",
            op(
                "deletecollection",
                format!("delete{gv}Collection{scope}{kind}"),
                format!("delete collection of {kind}"),
            )
            .build(
                params,
                Some(body(Some(&refs.shared.delete_options))),
                responses(&["200"], Some(&refs.shared.status)),
            ),
        );
    }
    item.add_to(paths, collection.clone());

    // Across namespaces, for `kubectl get -A`.
    if r.namespaced() && can("list") {
        let mut item = PathItem::new(Vec::new());
        item.insert(
            "get",
            op(
                "list",
                format!("list{gv}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
            )
            .build(list_params(), None, list_responses(refs.list)),
        );
        item.add_to(paths, format!("{base}/{}", r.plural));
    }

    // One object: read, replace, patch, delete.
    let item_path = format!("{collection}/{{name}}");
    let mut params = vec![name_param(kind)];
    params.extend(scope_params());
    let mut item = PathItem::new(params);
    if can("get") {
        item.insert(
            "get",
            op(
                "get",
                format!("read{gv}{scope}{kind}"),
                format!("read the specified {kind}"),
            )
            .build(Vec::new(), None, responses(&["200"], refs.kind)),
        );
    }
    if can("update") {
        item.insert(
            "put",
            op(
                "put",
                format!("replace{gv}{scope}{kind}"),
                format!("replace the specified {kind}"),
            )
            .build(
                write_params(),
                Some(body(refs.kind)),
                responses(&["200", "201"], refs.kind),
            ),
        );
    }
    if can("patch") {
        item.insert(
            "patch",
            op(
                "patch",
                format!("patch{gv}{scope}{kind}"),
                format!("partially update the specified {kind}"),
            )
            .build(
                patch_params(),
                Some(patch_body(&refs.shared.patch)),
                responses(&["200", "201"], refs.kind),
            ),
        );
    }
    if can("delete") {
        item.insert(
            "delete",
            op(
                "delete",
                format!("delete{gv}{scope}{kind}"),
                format!("delete a {kind}"),
            )
            .build(
                delete_params(),
                Some(body(Some(&refs.shared.delete_options))),
                responses(&["200", "202"], refs.kind),
            ),
        );
    }
    item.add_to(paths, item_path.clone());

    for sub in r.subresources {
        let (g, v, k) = subresource_gvk(r, sub);
        let sub_kind = kinds.get(&(g, v, k)).map(String::as_str);
        let suffix = capitalize(sub.name);
        let sub_gvk = json!({"group": g, "kind": k, "version": v});
        let sub_op = |action: &str, verb: &str, description: String| Operation {
            action: action.to_string(),
            id: format!("{verb}{gv}{scope}{kind}{suffix}"),
            description,
            tag: tag.clone(),
            gvk: sub_gvk.clone(),
        };
        let has = |verb: &str| sub.verbs.contains(&verb);
        let mut params = vec![name_param(kind)];
        params.extend(scope_params());
        let mut item = PathItem::new(params);
        match sub.name {
            "log" => {
                item.insert(
                    "get",
                    sub_op("get", "read", format!("read log of the specified {kind}")).build(
                        log_params(),
                        None,
                        text_responses("text/plain"),
                    ),
                );
            }
            "exec" | "attach" | "portforward" => {
                // Streaming upgrades (websocket/SPDY): "connect" operations, as upstream.
                let params = connect_params(sub.name);
                for (method, verb) in [("get", "Get"), ("post", "Post")] {
                    if has(method_verb(method)) {
                        item.insert(
                            method,
                            sub_op(
                                "connect",
                                &format!("connect{verb}"),
                                format!("connect {method} requests to {} of {kind}", sub.name),
                            )
                            .build(
                                params.clone(),
                                None,
                                text_responses("*/*"),
                            ),
                        );
                    }
                }
            }
            _ => {
                if has("get") {
                    item.insert(
                        "get",
                        sub_op(
                            "get",
                            "read",
                            format!("read {} of the specified {kind}", sub.name),
                        )
                        .build(
                            Vec::new(),
                            None,
                            responses(&["200"], sub_kind),
                        ),
                    );
                }
                if has("update") {
                    item.insert(
                        "put",
                        sub_op(
                            "put",
                            "replace",
                            format!("replace {} of the specified {kind}", sub.name),
                        )
                        .build(
                            write_params(),
                            Some(body(sub_kind)),
                            responses(&["200", "201"], sub_kind),
                        ),
                    );
                }
                if has("patch") {
                    item.insert(
                        "patch",
                        sub_op(
                            "patch",
                            "patch",
                            format!("partially update {} of the specified {kind}", sub.name),
                        )
                        .build(
                            patch_params(),
                            Some(patch_body(&refs.shared.patch)),
                            responses(&["200", "201"], sub_kind),
                        ),
                    );
                }
                if has("create") {
                    item.insert(
                        "post",
                        sub_op("post", "create", format!("create {} of a {kind}", sub.name)).build(
                            write_params(),
                            Some(body(sub_kind)),
                            responses(&["200", "201", "202"], sub_kind),
                        ),
                    );
                }
            }
        }
        item.add_to(paths, format!("{item_path}/{}", sub.name));
    }
}

/// The API verb an HTTP method of a connect operation needs.
fn method_verb(method: &str) -> &'static str {
    if method == "post" { "create" } else { "get" }
}

fn uncapitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A path item under construction: path-level parameters plus one operation per method.
struct PathItem(Map<String, Value>);

impl PathItem {
    fn new(parameters: Vec<Value>) -> Self {
        let mut item = Map::new();
        if !parameters.is_empty() {
            item.insert("parameters".into(), parameters.into());
        }
        PathItem(item)
    }

    fn insert(&mut self, method: &str, operation: Value) {
        self.0.insert(method.into(), operation);
    }

    /// Adds the item unless it has no operations (a resource without the verbs for it).
    fn add_to(self, paths: &mut Map<String, Value>, path: String) {
        if self.0.keys().any(|k| k != "parameters") {
            paths.insert(path, Value::Object(self.0));
        }
    }
}

/// What every operation of a resource shares.
struct Operation {
    action: String,
    id: String,
    description: String,
    tag: String,
    gvk: Value,
}

impl Operation {
    fn build(self, parameters: Vec<Value>, request_body: Option<Value>, responses: Value) -> Value {
        let mut op = Map::new();
        op.insert("description".into(), self.description.into());
        op.insert("operationId".into(), self.id.into());
        op.insert("tags".into(), json!([self.tag]));
        if !parameters.is_empty() {
            op.insert("parameters".into(), parameters.into());
        }
        if let Some(body) = request_body {
            op.insert("requestBody".into(), body);
        }
        op.insert("responses".into(), responses);
        op.insert("x-kubernetes-action".into(), self.action.into());
        op.insert("x-kubernetes-group-version-kind".into(), self.gvk);
        Value::Object(op)
    }
}

fn body(definition: Option<&str>) -> Value {
    json!({"content": {"*/*": {"schema": schema_ref(definition)}}, "required": true})
}

/// The four patch formats berth accepts; kubectl computes a strategic merge patch only when the
/// operation lists `application/strategic-merge-patch+json`.
fn patch_body(patch: &str) -> Value {
    let schema = schema_ref(Some(patch));
    let content: Map<String, Value> = [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ]
    .into_iter()
    .map(|media| (media.to_string(), json!({"schema": schema.clone()})))
    .collect();
    json!({"content": content, "required": true})
}

fn responses(codes: &[&str], definition: Option<&str>) -> Value {
    let schema = schema_ref(definition);
    let mut out = Map::new();
    for code in codes {
        out.insert(
            (*code).to_string(),
            json!({
                "description": status_text(code),
                "content": {
                    "application/json": {"schema": schema.clone()},
                    "application/yaml": {"schema": schema.clone()},
                },
            }),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

fn list_responses(definition: Option<&str>) -> Value {
    let schema = schema_ref(definition);
    json!({
        "200": {
            "description": "OK",
            "content": {
                "application/json": {"schema": schema.clone()},
                "application/json;stream=watch": {"schema": schema.clone()},
                "application/yaml": {"schema": schema},
            },
        },
        "401": {"description": "Unauthorized"},
    })
}

fn text_responses(media_type: &str) -> Value {
    json!({
        "200": {"description": "OK", "content": {media_type: {"schema": {"type": "string"}}}},
        "401": {"description": "Unauthorized"},
    })
}

fn status_text(code: &str) -> &'static str {
    match code {
        "201" => "Created",
        "202" => "Accepted",
        _ => "OK",
    }
}

// ---- parameters ----------------------------------------------------------------------------

/// A query parameter as upstream writes it (`uniqueItems` included: kube-openapi emits it on
/// every scalar query parameter).
fn query(name: &str, type_: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": type_, "uniqueItems": true},
    })
}

fn name_param(kind: &str) -> Value {
    json!({
        "name": "name",
        "in": "path",
        "description": format!("name of the {kind}"),
        "required": true,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn namespace_param() -> Value {
    json!({
        "name": "namespace",
        "in": "path",
        "description": "object name and auth scope, such as for teams and projects",
        "required": true,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    )
}

/// The parameter kubectl looks for before it lets the server validate fields.
fn field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
    )
}

fn field_manager(description: &str) -> Value {
    query("fieldManager", "string", description)
}

fn write_params() -> Vec<Value> {
    vec![
        dry_run(),
        field_manager(
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        ),
        field_validation(),
    ]
}

fn patch_params() -> Vec<Value> {
    vec![
        dry_run(),
        field_manager(
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).",
        ),
        field_validation(),
        query(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
        ),
        query(
            "orphanDependents",
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion.",
        ),
        query(
            "continue",
            "string",
            "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue).",
        ),
        query(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        query(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        query(
            "limit",
            "integer",
            "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        ),
        query(
            "resourceVersion",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details. Defaults to unset",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details. Defaults to unset",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
        ),
        query(
            "watch",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        ),
    ]
}

fn log_params() -> Vec<Value> {
    vec![
        query(
            "container",
            "string",
            "The container for which to stream logs. Defaults to only container if there is one container in the pod.",
        ),
        query(
            "follow",
            "boolean",
            "Follow the log stream of the pod. Defaults to false.",
        ),
        query(
            "limitBytes",
            "integer",
            "If set, the number of bytes to read from the server before terminating the log output.",
        ),
        query(
            "previous",
            "boolean",
            "Return previous terminated container logs. Defaults to false.",
        ),
        query(
            "sinceSeconds",
            "integer",
            "A relative time in seconds before the current time from which to show logs. Only one of sinceSeconds or sinceTime may be specified.",
        ),
        query(
            "tailLines",
            "integer",
            "If set, the number of lines from the end of the logs to show. If not specified, logs are shown from the creation of the container or sinceSeconds or sinceTime",
        ),
        query(
            "timestamps",
            "boolean",
            "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false.",
        ),
    ]
}

fn connect_params(subresource: &str) -> Vec<Value> {
    if subresource == "portforward" {
        return vec![query(
            "ports",
            "integer",
            "List of ports to forward Required when using WebSockets",
        )];
    }
    let mut params = vec![
        query(
            "container",
            "string",
            "The container in which to execute the command. Defaults to only container if there is only one container in the pod.",
        ),
        query(
            "stderr",
            "boolean",
            "Redirect the standard error stream of the pod for this call.",
        ),
        query(
            "stdin",
            "boolean",
            "Redirect the standard input stream of the pod for this call. Defaults to false.",
        ),
        query(
            "stdout",
            "boolean",
            "Redirect the standard output stream of the pod for this call.",
        ),
        query(
            "tty",
            "boolean",
            "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false.",
        ),
    ];
    if subresource == "exec" {
        params.insert(0, query("command", "string", "Command is the remote command to execute. argv array. Not executed within a shell."));
    }
    params
}

/// Strategic-merge-patch and list/map topology metadata of the fields that have any, one line per
/// field: definition, field, patch strategy, merge key, list type, list-map keys (comma-separated),
/// map type; `-` for none.
///
/// Extracted from the `+patchStrategy`, `+patchMergeKey`, `+listType`, `+listMapKey` and `+mapType`
/// markers of the Kubernetes API types (as carried in the comments of the k8s-pb crate, a newer
/// release than 1.33, restricted to fields k8s-openapi's v1.33 schemas have). kube-apiserver emits
/// these same extensions from the same markers. Lines for definitions a document does not contain
/// are ignored.
const PATCH_METADATA: &str = "
io.k8s.api.core.v1.Capabilities add - - atomic - -
io.k8s.api.core.v1.Capabilities drop - - atomic - -
io.k8s.api.core.v1.CephFSPersistentVolumeSource monitors - - atomic - -
io.k8s.api.core.v1.CephFSVolumeSource monitors - - atomic - -
io.k8s.api.core.v1.ComponentStatus conditions merge type map type -
io.k8s.api.core.v1.ConfigMapProjection items - - atomic - -
io.k8s.api.core.v1.ConfigMapVolumeSource items - - atomic - -
io.k8s.api.core.v1.Container command - - atomic - -
io.k8s.api.core.v1.Container args - - atomic - -
io.k8s.api.core.v1.Container ports merge containerPort map containerPort,protocol -
io.k8s.api.core.v1.Container envFrom - - atomic - -
io.k8s.api.core.v1.Container env merge name map name -
io.k8s.api.core.v1.Container resizePolicy - - atomic - -
io.k8s.api.core.v1.Container volumeMounts merge mountPath map mountPath -
io.k8s.api.core.v1.Container volumeDevices merge devicePath map devicePath -
io.k8s.api.core.v1.ContainerImage names - - atomic - -
io.k8s.api.core.v1.ContainerStatus volumeMounts merge mountPath map mountPath -
io.k8s.api.core.v1.ContainerStatus allocatedResourcesStatus merge name map name -
io.k8s.api.core.v1.DownwardAPIProjection items - - atomic - -
io.k8s.api.core.v1.DownwardAPIVolumeSource items - - atomic - -
io.k8s.api.core.v1.EndpointSubset addresses - - atomic - -
io.k8s.api.core.v1.EndpointSubset notReadyAddresses - - atomic - -
io.k8s.api.core.v1.EndpointSubset ports - - atomic - -
io.k8s.api.core.v1.Endpoints subsets - - atomic - -
io.k8s.api.core.v1.EphemeralContainer command - - atomic - -
io.k8s.api.core.v1.EphemeralContainer args - - atomic - -
io.k8s.api.core.v1.EphemeralContainer ports merge containerPort map containerPort,protocol -
io.k8s.api.core.v1.EphemeralContainer envFrom - - atomic - -
io.k8s.api.core.v1.EphemeralContainer env merge name map name -
io.k8s.api.core.v1.EphemeralContainer resizePolicy - - atomic - -
io.k8s.api.core.v1.EphemeralContainer volumeMounts merge mountPath map mountPath -
io.k8s.api.core.v1.EphemeralContainer volumeDevices merge devicePath map devicePath -
io.k8s.api.core.v1.ExecAction command - - atomic - -
io.k8s.api.core.v1.FCVolumeSource targetWWNs - - atomic - -
io.k8s.api.core.v1.FCVolumeSource wwids - - atomic - -
io.k8s.api.core.v1.HTTPGetAction httpHeaders - - atomic - -
io.k8s.api.core.v1.HostAlias hostnames - - atomic - -
io.k8s.api.core.v1.ISCSIPersistentVolumeSource portals - - atomic - -
io.k8s.api.core.v1.ISCSIVolumeSource portals - - atomic - -
io.k8s.api.core.v1.LimitRangeSpec limits - - atomic - -
io.k8s.api.core.v1.LinuxContainerUser supplementalGroups - - atomic - -
io.k8s.api.core.v1.LoadBalancerIngress ports - - atomic - -
io.k8s.api.core.v1.LoadBalancerStatus ingress - - atomic - -
io.k8s.api.core.v1.NamespaceSpec finalizers - - atomic - -
io.k8s.api.core.v1.NamespaceStatus conditions merge type map type -
io.k8s.api.core.v1.NodeAffinity preferredDuringSchedulingIgnoredDuringExecution - - atomic - -
io.k8s.api.core.v1.NodeSelector nodeSelectorTerms - - atomic - -
io.k8s.api.core.v1.NodeSelectorRequirement values - - atomic - -
io.k8s.api.core.v1.NodeSelectorTerm matchExpressions - - atomic - -
io.k8s.api.core.v1.NodeSelectorTerm matchFields - - atomic - -
io.k8s.api.core.v1.NodeSpec podCIDRs merge - set - -
io.k8s.api.core.v1.NodeSpec taints - - atomic - -
io.k8s.api.core.v1.NodeStatus conditions merge type map type -
io.k8s.api.core.v1.NodeStatus addresses merge type map type -
io.k8s.api.core.v1.NodeStatus images - - atomic - -
io.k8s.api.core.v1.NodeStatus volumesInUse - - atomic - -
io.k8s.api.core.v1.NodeStatus volumesAttached - - atomic - -
io.k8s.api.core.v1.NodeStatus runtimeHandlers - - atomic - -
io.k8s.api.core.v1.PersistentVolumeClaimSpec accessModes - - atomic - -
io.k8s.api.core.v1.PersistentVolumeClaimStatus accessModes - - atomic - -
io.k8s.api.core.v1.PersistentVolumeClaimStatus conditions merge type map type -
io.k8s.api.core.v1.PersistentVolumeClaimStatus allocatedResourceStatuses - - - - granular
io.k8s.api.core.v1.PersistentVolumeSpec accessModes - - atomic - -
io.k8s.api.core.v1.PersistentVolumeSpec mountOptions - - atomic - -
io.k8s.api.core.v1.PodAffinity requiredDuringSchedulingIgnoredDuringExecution - - atomic - -
io.k8s.api.core.v1.PodAffinity preferredDuringSchedulingIgnoredDuringExecution - - atomic - -
io.k8s.api.core.v1.PodAffinityTerm namespaces - - atomic - -
io.k8s.api.core.v1.PodAffinityTerm matchLabelKeys - - atomic - -
io.k8s.api.core.v1.PodAffinityTerm mismatchLabelKeys - - atomic - -
io.k8s.api.core.v1.PodAntiAffinity requiredDuringSchedulingIgnoredDuringExecution - - atomic - -
io.k8s.api.core.v1.PodAntiAffinity preferredDuringSchedulingIgnoredDuringExecution - - atomic - -
io.k8s.api.core.v1.PodDNSConfig nameservers - - atomic - -
io.k8s.api.core.v1.PodDNSConfig searches - - atomic - -
io.k8s.api.core.v1.PodDNSConfig options - - atomic - -
io.k8s.api.core.v1.PodSecurityContext supplementalGroups - - atomic - -
io.k8s.api.core.v1.PodSecurityContext sysctls - - atomic - -
io.k8s.api.core.v1.PodSpec volumes merge,retainKeys name map name -
io.k8s.api.core.v1.PodSpec initContainers merge name map name -
io.k8s.api.core.v1.PodSpec containers merge name map name -
io.k8s.api.core.v1.PodSpec ephemeralContainers merge name map name -
io.k8s.api.core.v1.PodSpec nodeSelector - - - - atomic
io.k8s.api.core.v1.PodSpec imagePullSecrets merge name map name -
io.k8s.api.core.v1.PodSpec tolerations - - atomic - -
io.k8s.api.core.v1.PodSpec hostAliases merge ip map ip -
io.k8s.api.core.v1.PodSpec readinessGates - - atomic - -
io.k8s.api.core.v1.PodSpec topologySpreadConstraints merge topologyKey map topologyKey,whenUnsatisfiable -
io.k8s.api.core.v1.PodSpec schedulingGates merge name map name -
io.k8s.api.core.v1.PodSpec resourceClaims merge,retainKeys name map name -
io.k8s.api.core.v1.PodStatus conditions merge type map type -
io.k8s.api.core.v1.PodStatus hostIPs merge ip atomic - -
io.k8s.api.core.v1.PodStatus podIPs merge ip map ip -
io.k8s.api.core.v1.PodStatus initContainerStatuses - - atomic - -
io.k8s.api.core.v1.PodStatus containerStatuses - - atomic - -
io.k8s.api.core.v1.PodStatus ephemeralContainerStatuses - - atomic - -
io.k8s.api.core.v1.PodStatus resourceClaimStatuses merge,retainKeys name map name -
io.k8s.api.core.v1.ProjectedVolumeSource sources - - atomic - -
io.k8s.api.core.v1.RBDPersistentVolumeSource monitors - - atomic - -
io.k8s.api.core.v1.RBDVolumeSource monitors - - atomic - -
io.k8s.api.core.v1.ReplicationControllerSpec selector - - - - atomic
io.k8s.api.core.v1.ReplicationControllerStatus conditions merge type map type -
io.k8s.api.core.v1.ResourceQuotaSpec scopes - - atomic - -
io.k8s.api.core.v1.ResourceRequirements claims - - map name -
io.k8s.api.core.v1.ResourceStatus resources - - map resourceID -
io.k8s.api.core.v1.ScopeSelector matchExpressions - - atomic - -
io.k8s.api.core.v1.ScopedResourceSelectorRequirement values - - atomic - -
io.k8s.api.core.v1.SecretProjection items - - atomic - -
io.k8s.api.core.v1.SecretVolumeSource items - - atomic - -
io.k8s.api.core.v1.ServiceAccount secrets merge name map name -
io.k8s.api.core.v1.ServiceAccount imagePullSecrets - - atomic - -
io.k8s.api.core.v1.ServiceSpec ports merge port map port,protocol -
io.k8s.api.core.v1.ServiceSpec selector - - - - atomic
io.k8s.api.core.v1.ServiceSpec clusterIPs - - atomic - -
io.k8s.api.core.v1.ServiceSpec externalIPs - - atomic - -
io.k8s.api.core.v1.ServiceSpec loadBalancerSourceRanges - - atomic - -
io.k8s.api.core.v1.ServiceSpec ipFamilies - - atomic - -
io.k8s.api.core.v1.ServiceStatus conditions merge type map type -
io.k8s.api.core.v1.TopologySelectorLabelRequirement values - - atomic - -
io.k8s.api.core.v1.TopologySelectorTerm matchLabelExpressions - - atomic - -
io.k8s.api.core.v1.TopologySpreadConstraint matchLabelKeys - - atomic - -
io.k8s.api.apps.v1.DaemonSetStatus conditions merge type map type -
io.k8s.api.apps.v1.DeploymentSpec strategy retainKeys - - - -
io.k8s.api.apps.v1.DeploymentStatus conditions merge type map type -
io.k8s.api.apps.v1.ReplicaSetStatus conditions merge type map type -
io.k8s.api.apps.v1.StatefulSetSpec volumeClaimTemplates - - atomic - -
io.k8s.api.apps.v1.StatefulSetStatus conditions merge type map type -
io.k8s.api.storage.v1.CSIDriverSpec volumeLifecycleModes - - set - -
io.k8s.api.storage.v1.CSIDriverSpec tokenRequests - - atomic - -
io.k8s.api.storage.v1.CSINodeDriver topologyKeys - - atomic - -
io.k8s.api.storage.v1.CSINodeSpec drivers merge name map name -
io.k8s.api.storage.v1.StorageClass mountOptions - - atomic - -
io.k8s.api.storage.v1.StorageClass allowedTopologies - - atomic - -
io.k8s.api.discovery.v1.Endpoint addresses - - set - -
io.k8s.api.discovery.v1.EndpointHints forZones - - atomic - -
io.k8s.api.discovery.v1.EndpointHints forNodes - - atomic - -
io.k8s.api.discovery.v1.EndpointSlice endpoints - - atomic - -
io.k8s.api.discovery.v1.EndpointSlice ports - - atomic - -
io.k8s.api.policy.v1.PodDisruptionBudgetSpec selector replace - - - -
io.k8s.api.policy.v1.PodDisruptionBudgetStatus conditions merge type map type -
io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup versions - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup serverAddressByClientCIDRs - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList groups - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.APIResource shortNames - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.APIResource categories - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList resources - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions versions - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions serverAddressByClientCIDRs - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions dryRun - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.FieldSelectorRequirement values - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector matchExpressions - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement values - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta ownerReferences merge uid map uid -
io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta finalizers merge - set - -
io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta managedFields - - atomic - -
io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails causes - - atomic - -
";

/// Definitions marked `+structType=atomic`: replaced as a whole by apply, never merged.
const ATOMIC_STRUCTS: &str = "
io.k8s.api.core.v1.ConfigMapKeySelector
io.k8s.api.core.v1.EndpointAddress
io.k8s.api.core.v1.EndpointPort
io.k8s.api.core.v1.FileKeySelector
io.k8s.api.core.v1.LocalObjectReference
io.k8s.api.core.v1.NodeSelector
io.k8s.api.core.v1.NodeSelectorTerm
io.k8s.api.core.v1.ObjectFieldSelector
io.k8s.api.core.v1.ObjectReference
io.k8s.api.core.v1.ResourceFieldSelector
io.k8s.api.core.v1.ScopeSelector
io.k8s.api.core.v1.SecretKeySelector
io.k8s.api.core.v1.SecretReference
io.k8s.api.core.v1.TopologySelectorTerm
io.k8s.api.core.v1.TypedLocalObjectReference
io.k8s.api.discovery.v1.EndpointPort
io.k8s.api.autoscaling.v1.CrossVersionObjectReference
io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector
io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference
";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Value {
        let doc = group_version(path).expect("document served");
        serde_json::from_slice(&doc.body).expect("document is JSON")
    }

    fn gvk(group: &str, version: &str, kind: &str) -> Value {
        json!({"group": group, "kind": kind, "version": version})
    }

    #[test]
    fn root_lists_every_group_version_with_its_hash() {
        let root = root();
        let paths = root["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), group_versions().len());
        for (group, version) in group_versions() {
            let path = gv_path(group, version);
            let doc = group_version(&path).expect("document for every listed path");
            assert_eq!(
                paths[&path]["serverRelativeURL"],
                format!("/openapi/v3/{path}?hash={}", doc.etag)
            );
            assert_eq!(doc.etag, content_hash(&doc.body));
            assert_eq!(doc.etag.len(), 32);
        }
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        assert!(group_version("/apis/apps/v1/").is_some());
        assert!(group_version("apis/batch/v1").is_none());
        assert!(group_version("").is_none());
    }

    #[test]
    fn documents_are_deterministic() {
        for (group, version) in group_versions() {
            let a = serde_json::to_vec(&document(group, version)).expect("serializes");
            let b = serde_json::to_vec(&document(group, version)).expect("serializes");
            assert_eq!(content_hash(&a), content_hash(&b), "{group}/{version}");
        }
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }

    #[test]
    fn every_resource_has_a_patch_operation_kubectl_accepts() {
        for r in RESOURCES {
            let doc = parse(&gv_path(r.group, r.version));
            let want = gvk(r.group, r.version, r.kind);
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .expect("paths")
                .values()
                .filter_map(|item| item.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == want)
                .collect();
            assert!(!patches.is_empty(), "{} has a PATCH operation", r.plural);
            // kubectl inspects whichever matching PATCH it meets first, so every one must qualify.
            for op in patches {
                let params = op["parameters"].as_array().expect("parameters");
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
                    "{}: fieldValidation",
                    r.plural
                );
                for name in ["dryRun", "fieldManager", "force"] {
                    assert!(
                        params.iter().any(|p| p["name"] == name),
                        "{}: {name}",
                        r.plural
                    );
                }
                let content = op["requestBody"]["content"].as_object().expect("content");
                for media in [
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                ] {
                    assert!(content.contains_key(media), "{}: {media}", r.plural);
                }
            }
        }
    }

    /// kubectl explain finds a resource's GVK on an operation of one of four paths, then the
    /// schema whose GVK list contains exactly that object.
    #[test]
    fn explain_finds_every_kind() {
        for r in RESOURCES {
            let doc = parse(&gv_path(r.group, r.version));
            let prefix = format!("/{}/{}", gv_path(r.group, r.version), "");
            let candidates = [
                format!("{prefix}{}", r.plural),
                format!("{prefix}{}/{{name}}", r.plural),
                format!("{prefix}namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}namespaces/{{namespace}}/{}/{{name}}", r.plural),
            ];
            let found = candidates
                .iter()
                .filter_map(|p| doc["paths"].get(p))
                .flat_map(|item| ["get", "post", "put", "patch", "delete"].map(|m| item.get(m)))
                .flatten()
                .map(|op| &op["x-kubernetes-group-version-kind"])
                .next()
                .expect("an operation with a GVK");
            assert_eq!(found, &gvk(r.group, r.version, r.kind));
            let matching: Vec<&String> = doc["components"]["schemas"]
                .as_object()
                .expect("schemas")
                .iter()
                .filter(|(_, s)| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|list| list.contains(found))
                })
                .map(|(name, _)| name)
                .collect();
            assert_eq!(matching.len(), 1, "{}: {matching:?}", r.plural);
        }
    }

    fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_within_its_document() {
        for (group, version) in group_versions() {
            let doc = parse(&gv_path(group, version));
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            assert!(refs.len() > 10);
            for r in refs {
                let name = r
                    .strip_prefix(SCHEMAS)
                    .unwrap_or_else(|| panic!("{r} points into components.schemas"));
                assert!(
                    schemas.contains_key(name),
                    "{group}/{version}: {r} unresolved"
                );
            }
            // schemars' placeholder for a schema still being generated must not survive.
            assert!(schemas.values().all(Value::is_object));
        }
    }

    #[test]
    fn core_document_describes_pods_for_explain() {
        let doc = parse("api/v1");
        assert_eq!(doc["openapi"], "3.0.0");
        assert_eq!(doc["info"]["title"], "Kubernetes");
        let schemas = &doc["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "Pod")])
        );
        // Fields with their own definitions are `allOf: [$ref]` with the description beside it,
        // which is what explain's templates walk.
        let spec = &pod["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        assert!(
            spec["description"]
                .as_str()
                .is_some_and(|d| d.contains("desired behavior"))
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert!(
            schemas["io.k8s.api.core.v1.Container"]["properties"]["image"]["description"]
                .is_string()
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "PodList")])
        );
        assert_eq!(
            schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Status"]["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "Status")])
        );
        let delete_gvks = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
            ["x-kubernetes-group-version-kind"]
            .as_array()
            .expect("DeleteOptions GVKs");
        assert!(delete_gvks.contains(&gvk("apps", "v1", "DeleteOptions")));
        assert!(
            schemas["io.k8s.api.core.v1.Binding"]["x-kubernetes-group-version-kind"].is_array()
        );
        assert!(
            pod.get("required").is_none(),
            "metadata is optional, as upstream"
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.Binding"]["required"],
            json!(["target"])
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.Event"]["required"],
            json!(["involvedObject", "metadata"])
        );
        // Only core kinds: the events.k8s.io Event lives in its own document.
        assert!(schemas.get("io.k8s.api.events.v1.Event").is_none());
    }

    #[test]
    fn paths_cover_collections_items_and_subresources() {
        let doc = parse("api/v1");
        let paths = &doc["paths"];
        let pods = &paths["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(pods["get"]["operationId"], "listCoreV1NamespacedPod");
        assert_eq!(pods["post"]["x-kubernetes-action"], "post");
        assert_eq!(pods["delete"]["x-kubernetes-action"], "deletecollection");
        assert_eq!(
            pods["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodList"
        );
        assert_eq!(
            paths["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        let pod = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        for method in ["get", "put", "patch", "delete"] {
            assert!(pod.get(method).is_some(), "pod {method}");
        }
        assert_eq!(pod["parameters"][0]["name"], "name");
        assert_eq!(pod["parameters"][1]["name"], "namespace");
        assert!(paths["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"].is_object());
        assert_eq!(
            paths["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]["responses"]["200"]["content"]
                ["text/plain"]["schema"]["type"],
            "string"
        );
        let exec = &paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"];
        assert_eq!(exec["get"]["x-kubernetes-action"], "connect");
        assert_eq!(
            exec["post"]["x-kubernetes-group-version-kind"],
            gvk("", "v1", "PodExecOptions")
        );
        // Cluster-scoped: no namespace segment, no all-namespaces twin.
        assert!(paths["/api/v1/nodes/{name}"]["patch"].is_object());
        assert!(paths.get("/api/v1/namespaces/{namespace}/nodes").is_none());

        let apps = parse("apis/apps/v1");
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            gvk("autoscaling", "v1", "Scale")
        );
        assert_eq!(
            scale["patch"]["operationId"],
            "patchAppsV1NamespacedDeploymentScale"
        );
        assert_eq!(
            scale["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
        );
        assert_eq!(
            apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"],
            json!([gvk("autoscaling", "v1", "Scale")])
        );
        let storage = parse("apis/storage.k8s.io/v1");
        assert_eq!(
            storage["paths"]["/apis/storage.k8s.io/v1/storageclasses/{name}"]["patch"]["operationId"],
            "patchStorageV1StorageClass"
        );
    }

    /// Follows a field path the way kubectl's PatchMetaFromOpenAPIV3 does (property, then
    /// `allOf[0]`, then `$ref`; `items` for lists) and returns the property schema at the end.
    fn patch_meta<'a>(doc: &'a Value, kind: &str, path: &[&str]) -> &'a Value {
        let schemas = &doc["components"]["schemas"];
        let resolve = |mut s: &'a Value| {
            if let Some(first) = s.get("allOf").and_then(|a| a.get(0)) {
                s = first;
            }
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => &schemas[r.trim_start_matches(SCHEMAS)],
                None => s,
            }
        };
        let mut schema = &schemas[kind];
        let mut property = &Value::Null;
        for key in path {
            property = &schema["properties"][*key];
            assert!(property.is_object(), "{kind}: no field {key}");
            schema = resolve(property.get("items").unwrap_or(property));
        }
        property
    }

    #[test]
    fn strategic_merge_metadata_reaches_kubectl() {
        let apps = parse("apis/apps/v1");
        let deployment = "io.k8s.api.apps.v1.Deployment";
        let containers = patch_meta(
            &apps,
            deployment,
            &["spec", "template", "spec", "containers"],
        );
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let env = patch_meta(
            &apps,
            deployment,
            &["spec", "template", "spec", "containers", "env"],
        );
        assert_eq!(env["x-kubernetes-patch-merge-key"], "name");
        let volumes = patch_meta(&apps, deployment, &["spec", "template", "spec", "volumes"]);
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let strategy = patch_meta(&apps, deployment, &["spec", "strategy"]);
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        let owners = patch_meta(&apps, deployment, &["metadata", "ownerReferences"]);
        assert_eq!(owners["x-kubernetes-patch-merge-key"], "uid");
        let finalizers = patch_meta(&apps, deployment, &["metadata", "finalizers"]);
        assert_eq!(finalizers["x-kubernetes-list-type"], "set");

        let core = parse("api/v1");
        let ports = patch_meta(&core, "io.k8s.api.core.v1.Service", &["spec", "ports"]);
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "port");
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["port", "protocol"])
        );
        let selector = patch_meta(&core, "io.k8s.api.core.v1.Service", &["spec", "selector"]);
        assert_eq!(selector["x-kubernetes-map-type"], "atomic");
        assert_eq!(
            core["components"]["schemas"]["io.k8s.api.core.v1.ObjectReference"]["x-kubernetes-map-type"],
            "atomic"
        );
    }

    #[test]
    fn patch_metadata_table_is_well_formed_and_used() {
        let lines = PATCH_METADATA
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        assert_eq!(
            patch_metadata().count(),
            lines,
            "every line has seven columns"
        );
        // Most entries must land on a served document; the rest belong to kinds berth does not
        // serve (or to types only newer Kubernetes has).
        let docs: Vec<Value> = group_versions()
            .into_iter()
            .map(|(g, v)| parse(&gv_path(g, v)))
            .collect();
        let applied = patch_metadata()
            .filter(|entry| {
                docs.iter().any(|doc| {
                    doc["components"]["schemas"][entry.definition]["properties"][entry.field]
                        .get("x-kubernetes-list-type")
                        .or_else(|| {
                            doc["components"]["schemas"][entry.definition]["properties"]
                                [entry.field]
                                .get("x-kubernetes-patch-strategy")
                        })
                        .or_else(|| {
                            doc["components"]["schemas"][entry.definition]["properties"]
                                [entry.field]
                                .get("x-kubernetes-map-type")
                        })
                        .is_some()
                })
            })
            .count();
        assert!(applied * 10 > lines * 8, "{applied} of {lines} applied");
        for entry in patch_metadata() {
            for value in [entry.patch_strategy, entry.list_type, entry.map_type]
                .into_iter()
                .flatten()
            {
                assert!(
                    [
                        "merge",
                        "retainKeys",
                        "merge,retainKeys",
                        "replace",
                        "atomic",
                        "set",
                        "map",
                        "granular"
                    ]
                    .contains(&value),
                    "{entry:?}"
                );
            }
            assert_eq!(
                entry.list_type == Some("map"),
                !entry.list_map_keys.is_empty(),
                "{entry:?}"
            );
        }
    }
}
