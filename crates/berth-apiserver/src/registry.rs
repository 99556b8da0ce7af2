//! The generic registry: create, read, update, patch and delete of any resource in the
//! resource table, on top of the store. It owns the object lifecycle rules that hold for every
//! kind (uid, creationTimestamp, generation, resourceVersion preconditions, status
//! subresources, graceful deletion and finalizers); per-kind rules come from `berth_api`.
//! Services are the one kind whose writes touch more than the object: their cluster IPs and
//! node ports are taken and given back in the same transaction (see [`crate::services`]), on
//! every path that writes or removes a Service.

use std::sync::Arc;

use berth_api::ResourceInfo;
use berth_api::codec;
use berth_api::conversion;
use berth_api::defaults::apply_defaults;
use berth_api::patch::{PatchType, apply_patch};
use berth_api::resources;
use berth_api::selectors::{FieldSelector, LabelSelector, field_value};
use berth_api::validation::{validate_create, validate_status_update, validate_update};
use berth_store::ops::{self, Written};
use berth_store::{KeyValue, RangeRequest, Revision, Store};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::services::{self, Outcome, Plan, ServiceAllocations, ServiceOp};
use crate::status::{ApiError, ApiResult};

/// The largest object the store keeps (etcd's default request limit).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// How many times an unconditional write is retried when it races another writer.
const MAX_RETRIES: usize = 16;

/// `fieldValidation`: what to do with fields the type does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> ApiResult<Self> {
        match value {
            None | Some("") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; valid values are Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Options every write takes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Keys that appeared twice in one object of the request body (see `body::duplicate_fields`).
    pub duplicate_fields: Vec<String>,
}

/// The result of a write: the object and any warnings for the client (`Warning` headers).
#[derive(Debug, Clone)]
pub struct WriteResult {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// The object a write addresses: `subresource` is `Some("status")` for status writes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub info: &'static ResourceInfo,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub subresource: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn object(info: &'static ResourceInfo, namespace: Option<&'a str>, name: &'a str) -> Self {
        Target {
            info,
            namespace,
            name,
            subresource: None,
        }
    }
}

/// Parsed list options.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Value),
    /// The object is marked for deletion and waits for finalizers or graceful termination.
    Pending(Value),
}

/// DeleteOptions, from the body or the query.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

pub struct Registry {
    store: Arc<dyn Store>,
    /// Service cluster IPs and node ports, written in the same transactions as the Services.
    services: Arc<ServiceAllocations>,
}

/// Now, as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    berth_api::tables::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn timestamp_after(seconds: i64) -> String {
    let now = berth_api::tables::now();
    let later = now
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(now);
    later.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The store key of an object: resources served in two shapes share one stored object.
pub fn storage_key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    conversion::storage_resource(info).key(namespace, name)
}

/// The store key prefix of every object of a resource.
pub fn storage_prefix(info: &ResourceInfo) -> String {
    conversion::storage_resource(info).key_prefix()
}

/// Kinds whose metadata.generation tracks spec changes.
fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.kind),
        (
            "apps",
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        )
    )
}

fn has_status_subresource(info: &ResourceInfo) -> bool {
    info.subresource("status").is_some()
}

/// The status an object starts with, for kinds whose status only the system writes.
fn initial_status(info: &ResourceInfo, object: &Value) -> Option<Value> {
    match (info.group, info.kind) {
        // Nodes report their own status at registration.
        ("", "Node") => object.get("status").cloned(),
        ("", "Pod") => Some(json!({"phase": "Pending"})),
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            Some(json!({"phase": "Pending"}))
        }
        ("", "Namespace") => Some(json!({"phase": "Active"})),
        ("", "Service") => Some(json!({"loadBalancer": {}})),
        _ => Some(json!({})),
    }
}

fn meta(object: &Value) -> &Value {
    object.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    meta(object).get(field).and_then(Value::as_str)
}

fn meta_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn finalizers(object: &Value) -> Vec<String> {
    meta(object)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A namespace's `spec.finalizers` (empty for every other kind).
fn namespace_finalizers(info: &ResourceInfo, object: &Value) -> Vec<String> {
    if info.plural != "namespaces" || !info.group.is_empty() {
        return Vec::new();
    }
    object
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The object without metadata and status: what a spec change is measured on.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

fn parse_revision(value: &str) -> Option<Revision> {
    value.parse::<Revision>().ok().filter(|r| *r >= 0)
}

/// The name Kubernetes makes from generateName: five characters from an alphabet without vowels.
fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut name = prefix.to_string();
    for _ in 0..5 {
        let i = rand::random_range(0..ALPHABET.len());
        name.push(ALPHABET[i] as char);
    }
    name
}

fn encode_continue(revision: Revision, start: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(Revision, String)> {
    use base64::Engine;
    let invalid =
        || ApiError::bad_request("continue key is not valid: illegal base64 data or structure");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let revision = value
        .get("rv")
        .and_then(Value::as_i64)
        .ok_or_else(invalid)?;
    let start = value
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?
        .to_string();
    Ok((revision, start))
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, services: Arc<ServiceAllocations>) -> Self {
        Registry { store, services }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn services(&self) -> &Arc<ServiceAllocations> {
        &self.services
    }

    /// Writes a Service with its allocations (see [`services::write`]), run to the end even if
    /// the caller goes away, so the in-memory view of what is taken learns how it ended.
    async fn write_service(
        &self,
        key: &str,
        expected: Revision,
        op: ServiceOp,
        plan: Plan,
    ) -> ApiResult<Outcome> {
        tokio::spawn(services::write(
            self.store.clone(),
            key.to_string(),
            expected,
            op,
            plan,
        ))
        .await
        .map_err(|e| ApiError::internal(format!("the write of a Service did not finish: {e}")))?
    }

    /// The create of a Service: its cluster IP and node ports are allocated and written in the
    /// same transaction as the Service. A value picked at random that another writer took
    /// first is picked again.
    async fn create_service(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        object: Value,
        warnings: Vec<String>,
        options: &WriteOptions,
    ) -> ApiResult<WriteResult> {
        let name = meta_str(&object, "name").unwrap_or("").to_string();
        let key = storage_key(info, namespace, &name);
        for _ in 0..MAX_RETRIES {
            let mut object = object.clone();
            let plan = self.services.plan(info, None, &mut object, false)?;
            let bytes = Self::encode(info, &object)?;
            if options.dry_run {
                plan.dry_run(self.store.as_ref()).await?;
                return Ok(WriteResult { object, warnings });
            }
            match self
                .write_service(&key, 0, ServiceOp::Put(bytes), plan)
                .await?
            {
                Outcome::Written(revision) => {
                    Self::stamp(info, &mut object, revision);
                    return Ok(WriteResult { object, warnings });
                }
                Outcome::ServiceChanged => return Err(ApiError::already_exists(info, &name)),
                Outcome::Refused(error) => return Err(error),
                Outcome::Retry => continue,
            }
        }
        Err(ApiError::stale(info, &name))
    }

    /// Creates or corrects an object the API server itself owns, without the validation
    /// clients get (the `kubernetes` Endpoints name the loopback address the server listens
    /// on, which validation refuses from clients). `desired` carries the name, the labels to
    /// enforce and the top-level fields to enforce; anything else of a stored object (uid,
    /// annotations, other labels) is kept, and an object already right is not written.
    pub async fn ensure_system_object(
        &self,
        info: &'static ResourceInfo,
        namespace: &str,
        desired: &Value,
    ) -> ApiResult<()> {
        let name = meta_str(desired, "name").unwrap_or("").to_string();
        let key = storage_key(info, Some(namespace), &name);
        for _ in 0..MAX_RETRIES {
            match self.get_kv(info, Some(namespace), &name).await? {
                None => {
                    let mut object = desired.clone();
                    Self::check_type(info, &mut object)?;
                    {
                        let m = meta_mut(&mut object);
                        m.insert("namespace".into(), json!(namespace));
                        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
                    }
                    apply_defaults(info, &mut object);
                    match ops::create(self.store.as_ref(), &key, Self::encode(info, &object)?)
                        .await?
                    {
                        Written::Ok(_) => return Ok(()),
                        Written::Conflict(_) => continue,
                    }
                }
                Some(kv) => {
                    let current = Self::decode(info, &kv)?;
                    let mut updated = current.clone();
                    if let Some(fields) = desired.as_object() {
                        for (field, value) in fields {
                            if !matches!(field.as_str(), "apiVersion" | "kind" | "metadata") {
                                updated[field.as_str()] = value.clone();
                            }
                        }
                    }
                    if let Some(labels) = desired
                        .pointer("/metadata/labels")
                        .and_then(Value::as_object)
                    {
                        let m = meta_mut(&mut updated);
                        if !m.get("labels").is_some_and(Value::is_object) {
                            m.insert("labels".into(), json!({}));
                        }
                        if let Some(existing) = m.get_mut("labels").and_then(Value::as_object_mut) {
                            for (k, v) in labels {
                                existing.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    apply_defaults(info, &mut updated);
                    if updated == current {
                        return Ok(());
                    }
                    match ops::put_if(
                        self.store.as_ref(),
                        &key,
                        Self::encode(info, &updated)?,
                        kv.mod_revision,
                    )
                    .await?
                    {
                        Written::Ok(_) => return Ok(()),
                        Written::Conflict(_) => continue,
                    }
                }
            }
        }
        Err(ApiError::stale(info, &name))
    }

    /// The stored bytes as the client sees them: with resourceVersion, kind and apiVersion.
    pub fn decode(info: &ResourceInfo, kv: &KeyValue) -> ApiResult<Value> {
        let stored: Value = serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::internal(format!("stored object {} is not valid JSON: {e}", kv.key))
        })?;
        let mut object = conversion::from_storage(info, stored);
        Self::stamp(info, &mut object, kv.mod_revision);
        Ok(object)
    }

    fn stamp(info: &ResourceInfo, object: &mut Value, revision: Revision) {
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), json!(info.api_version()));
            map.insert("kind".into(), json!(info.kind));
        }
        meta_mut(object).insert("resourceVersion".into(), json!(revision.to_string()));
    }

    fn encode(info: &ResourceInfo, object: &Value) -> ApiResult<Bytes> {
        let mut copy = conversion::to_storage(info, object.clone());
        // The revision is the store's to give; it is never part of the stored bytes.
        if let Some(m) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let bytes = serde_json::to_vec(&copy).map_err(|e| ApiError::internal(e.to_string()))?;
        if bytes.len() > MAX_OBJECT_BYTES {
            return Err(ApiError::too_large(format!(
                "the object is too large to store: {} bytes exceeds the limit of {} bytes",
                bytes.len(),
                MAX_OBJECT_BYTES
            )));
        }
        Ok(Bytes::from(bytes))
    }

    async fn get_kv(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<KeyValue>> {
        let (kv, _) = ops::get(self.store.as_ref(), &storage_key(info, namespace, name)).await?;
        Ok(kv)
    }

    pub async fn get(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        match self.get_kv(info, namespace, name).await? {
            Some(kv) => Self::decode(info, &kv),
            None => Err(ApiError::not_found(info, name)),
        }
    }

    /// Checks that the namespace exists and takes new objects.
    async fn check_namespace(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> ApiResult<()> {
        let namespaces = resources::lookup("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("no namespaces"))?;
        match self.get_kv(namespaces, None, namespace).await? {
            None => Err(ApiError::namespace_not_found(namespace)),
            Some(kv) => {
                let ns = Self::decode(namespaces, &kv)?;
                if meta(&ns)
                    .get("deletionTimestamp")
                    .is_some_and(|v| !v.is_null())
                {
                    let mut error = ApiError::forbidden(
                        info,
                        name,
                        &format!(
                            "unable to create new content in namespace {namespace} because it is being terminated"
                        ),
                    );
                    if let Some(details) = error.details.as_mut() {
                        details["causes"] = json!([{"reason": "NamespaceTerminating", "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace"}]);
                    }
                    Err(error)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Decodes through the typed struct and applies `fieldValidation` to unknown fields.
    fn admit_decode(
        info: &ResourceInfo,
        object: Value,
        options: &WriteOptions,
    ) -> ApiResult<(Value, Vec<String>)> {
        let decoded =
            codec::decode(info, object).map_err(|e| ApiError::bad_request(e.to_string()))?;
        // Kubernetes' wording: strict decoding errors name each field once, duplicates first.
        let problems: Vec<String> = options
            .duplicate_fields
            .iter()
            .map(|f| format!("duplicate field \"{f}\""))
            .chain(
                decoded
                    .unknown_fields
                    .iter()
                    .map(|f| format!("unknown field \"{f}\"")),
            )
            .collect();
        let mut warnings = Vec::new();
        match options.field_validation {
            FieldValidation::Strict if !problems.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    info.kind,
                    info.version,
                    info.kind,
                    problems.join(", ")
                )));
            }
            FieldValidation::Warn => warnings = problems,
            _ => {}
        }
        Ok((decoded.object, warnings))
    }

    /// Checks the body's apiVersion/kind against the endpoint and fills them in when absent.
    fn check_type(info: &ResourceInfo, object: &mut Value) -> ApiResult<()> {
        let Some(map) = object.as_object_mut() else {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled: the body is not a JSON object",
                info.kind, info.version
            )));
        };
        let expected = info.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != expected => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({expected})"
                )));
            }
            _ => {}
        }
        match map.get("kind").and_then(Value::as_str) {
            Some(k) if k != info.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    info.kind
                )));
            }
            _ => {}
        }
        map.insert("apiVersion".into(), json!(expected));
        map.insert("kind".into(), json!(info.kind));
        Ok(())
    }

    /// Checks the body's namespace against the URL's and fills it in.
    fn check_namespace_field(
        info: &ResourceInfo,
        object: &mut Value,
        namespace: Option<&str>,
    ) -> ApiResult<()> {
        let meta = meta_mut(object);
        if !info.namespaced() {
            meta.remove("namespace");
            return Ok(());
        }
        let url_ns = namespace.unwrap_or("");
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                meta.insert("namespace".into(), json!(url_ns));
                Ok(())
            }
        }
    }

    pub async fn create(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions,
    ) -> ApiResult<WriteResult> {
        Self::check_type(info, &mut object)?;
        Self::check_namespace_field(info, &mut object, namespace)?;
        {
            let m = meta_mut(&mut object);
            let has_name = m
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !has_name
                && let Some(prefix) = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
            {
                let name = generate_name(prefix);
                m.insert("name".into(), json!(name));
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            if tracks_generation(info) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        let (mut object, warnings) = Self::admit_decode(info, object, options)?;
        if has_status_subresource(info) {
            match initial_status(info, &object) {
                Some(status) => object["status"] = status,
                None => {
                    if let Some(m) = object.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        apply_defaults(info, &mut object);
        // Mutating admission runs before validation, as in kube-apiserver.
        crate::storage::admit_create(self, info, &mut object).await?;
        let name = meta_str(&object, "name").unwrap_or("").to_string();
        let errors = validate_create(info, &object);
        if !errors.is_empty() {
            return Err(ApiError::invalid(info, &name, &errors));
        }
        if let Some(ns) = namespace.filter(|_| info.namespaced()) {
            self.check_namespace(info, ns, &name).await?;
        }
        if services::is_service(info) {
            return self
                .create_service(info, namespace, object, warnings, options)
                .await;
        }
        let bytes = Self::encode(info, &object)?;
        if options.dry_run {
            return Ok(WriteResult { object, warnings });
        }
        let key = storage_key(info, namespace, &name);
        match ops::create(self.store.as_ref(), &key, bytes).await? {
            Written::Ok(revision) => {
                Self::stamp(info, &mut object, revision);
                Ok(WriteResult { object, warnings })
            }
            Written::Conflict(_) => Err(ApiError::already_exists(info, &name)),
        }
    }

    /// Reads, changes with `change` and writes back, retrying on races unless the caller
    /// pinned a resourceVersion. `change` returns `None` to leave the object as it is.
    /// An object being deleted whose last finalizer is removed is deleted here, as Kubernetes does.
    pub(crate) async fn guaranteed_update<F>(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        mut change: F,
        dry_run: bool,
    ) -> ApiResult<Value>
    where
        F: FnMut(&Value, Revision) -> ApiResult<Option<Value>>,
    {
        let key = storage_key(info, namespace, name);
        for _ in 0..MAX_RETRIES {
            let Some(kv) = self.get_kv(info, namespace, name).await? else {
                return Err(ApiError::not_found(info, name));
            };
            let current = Self::decode(info, &kv)?;
            let Some(mut updated) = change(&current, kv.mod_revision)? else {
                return Ok(current);
            };
            let being_deleted = meta(&updated)
                .get("deletionTimestamp")
                .is_some_and(|v| !v.is_null());
            let zero_grace = meta(&updated)
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0;
            let delete_now = being_deleted
                && finalizers(&updated).is_empty()
                && namespace_finalizers(info, &updated).is_empty()
                && (info.kind != "Pod" || zero_grace);
            if services::is_service(info) {
                // Allocations change with the Service, in its transaction.
                let plan = self
                    .services
                    .plan(info, Some(&current), &mut updated, delete_now)?;
                if dry_run {
                    plan.dry_run(self.store.as_ref()).await?;
                    return Ok(updated);
                }
                if !delete_now && updated == current {
                    return Ok(current);
                }
                let op = if delete_now {
                    ServiceOp::Delete
                } else {
                    ServiceOp::Put(Self::encode(info, &updated)?)
                };
                match self.write_service(&key, kv.mod_revision, op, plan).await? {
                    Outcome::Written(revision) => {
                        Self::stamp(info, &mut updated, revision);
                        return Ok(updated);
                    }
                    Outcome::ServiceChanged | Outcome::Retry => continue,
                    Outcome::Refused(error) => return Err(error),
                }
            }
            if dry_run {
                return Ok(updated);
            }
            let written = if delete_now {
                ops::delete_if(self.store.as_ref(), &key, kv.mod_revision).await?
            } else {
                if updated == current {
                    return Ok(current);
                }
                ops::put_if(
                    self.store.as_ref(),
                    &key,
                    Self::encode(info, &updated)?,
                    kv.mod_revision,
                )
                .await?
            };
            match written {
                Written::Ok(revision) => {
                    Self::stamp(info, &mut updated, revision);
                    return Ok(updated);
                }
                Written::Conflict(_) => continue,
            }
        }
        Err(ApiError::stale(info, name))
    }

    /// Checks a client's resourceVersion precondition against the stored one.
    fn check_precondition(
        info: &ResourceInfo,
        name: &str,
        wanted: Option<&str>,
        actual: Revision,
    ) -> ApiResult<()> {
        match wanted.filter(|v| !v.is_empty()) {
            None => Ok(()),
            Some(v) => match parse_revision(v) {
                Some(r) if r == actual => Ok(()),
                Some(_) => Err(ApiError::stale(info, name)),
                None => Err(ApiError::bad_request(format!(
                    "invalid resourceVersion {v:?}"
                ))),
            },
        }
    }

    /// Carries the system-owned metadata of `old` into `new` for an update of the main resource.
    fn prepare_update(info: &ResourceInfo, new: &mut Value, old: &Value) -> ApiResult<()> {
        let old_meta = meta(old).clone();
        let being_deleted = old_meta
            .get("deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        // A uid in the new object is a precondition (upstream's UpdatedObjectInfo): writing
        // it to another object of the same name is a conflict, not a silent success. This is
        // what makes a controller's adopt/release patch safe against a recreated object.
        let old_uid = old_meta.get("uid").and_then(Value::as_str).unwrap_or("");
        if let Some(new_uid) = meta_str(new, "uid").filter(|u| !u.is_empty())
            && new_uid != old_uid
        {
            let name = old_meta.get("name").and_then(Value::as_str).unwrap_or("");
            return Err(ApiError::conflict(
                info,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        let old_finalizers = finalizers(old);
        let new_finalizers = finalizers(new);
        if being_deleted && new_finalizers.iter().any(|f| !old_finalizers.contains(f)) {
            let name = old_meta.get("name").and_then(Value::as_str).unwrap_or("");
            return Err(ApiError::invalid(
                info,
                name,
                &[berth_api::validation::FieldError {
                    kind: berth_api::validation::FieldErrorKind::Forbidden,
                    field: "metadata.finalizers".into(),
                    value: None,
                    detail: "no new finalizers can be added if the object is being deleted".into(),
                }],
            ));
        }
        let m = meta_mut(new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(v) => {
                    m.insert(field.into(), v.clone());
                }
                None => {
                    m.remove(field);
                }
            }
        }
        if has_status_subresource(info) {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        if tracks_generation(info) && spec_part(new) != spec_part(old) {
            let generation = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(new).insert("generation".into(), json!(generation));
        }
        Ok(())
    }

    /// The status subresource: only status changes; everything else stays as stored.
    fn prepare_status_update(new: &Value, old: &Value) -> Value {
        let mut merged = old.clone();
        match new.get("status") {
            Some(status) => merged["status"] = status.clone(),
            None => {
                if let Some(map) = merged.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        merged
    }

    /// Runs the admission chain for an update and returns the object to store.
    fn admit_update(
        target: Target<'_>,
        mut new: Value,
        old: &Value,
        options: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let Target {
            info,
            namespace,
            name,
            subresource,
        } = target;
        Self::check_type(info, &mut new)?;
        Self::check_namespace_field(info, &mut new, namespace)?;
        let body_name = meta_str(&new, "name").unwrap_or("");
        if body_name.is_empty() {
            meta_mut(&mut new).insert("name".into(), json!(name));
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let (mut new, w) = Self::admit_decode(info, new, options)?;
        warnings.extend(w);
        let is_status = subresource == Some("status");
        if is_status {
            new = Self::prepare_status_update(&new, old);
        } else {
            Self::prepare_update(info, &mut new, old)?;
            if services::is_service(info) {
                services::patch_allocated_values(&mut new, old);
            }
        }
        apply_defaults(info, &mut new);
        let errors = if is_status {
            validate_status_update(info, &new, old)
        } else {
            validate_update(info, &new, old)
        };
        if !errors.is_empty() {
            return Err(ApiError::invalid(info, name, &errors));
        }
        Ok(new)
    }

    /// The shared path of PUT and PATCH: `propose` turns the stored object into the client's
    /// intended one (checking preconditions), then admission runs on it, retrying on races.
    async fn admitted_update<F>(
        &self,
        target: Target<'_>,
        options: &WriteOptions,
        mut propose: F,
    ) -> ApiResult<WriteResult>
    where
        F: FnMut(&Value, Revision) -> ApiResult<Value>,
    {
        let mut warnings = Vec::new();
        let resize = crate::storage::ResizeAdmission::load(self, target).await?;
        let object = self
            .guaranteed_update(
                target.info,
                target.namespace,
                target.name,
                |current, revision| {
                    let proposed = propose(current, revision)?;
                    warnings.clear();
                    let admitted =
                        Self::admit_update(target, proposed, current, options, &mut warnings)?;
                    // Validating admission, after validation as upstream orders them.
                    if let Some(resize) = &resize {
                        resize.validate(target.info, target.name, &admitted, current)?;
                    }
                    Ok(Some(admitted))
                },
                options.dry_run,
            )
            .await?;
        Ok(WriteResult { object, warnings })
    }

    /// PUT of the whole object (or of its status).
    pub async fn update(
        &self,
        target: Target<'_>,
        object: Value,
        options: &WriteOptions,
    ) -> ApiResult<WriteResult> {
        let wanted = meta_str(&object, "resourceVersion").map(str::to_string);
        self.admitted_update(target, options, |_, revision| {
            Self::check_precondition(target.info, target.name, wanted.as_deref(), revision)?;
            Ok(object.clone())
        })
        .await
    }

    /// PATCH of the whole object (or of its status). Server-side apply creates a missing object,
    /// which the `bool` reports.
    pub async fn patch(
        &self,
        target: Target<'_>,
        patch_type: PatchType,
        patch: &Value,
        options: &WriteOptions,
    ) -> ApiResult<(WriteResult, bool)> {
        let Target {
            info,
            namespace,
            name,
            subresource,
        } = target;
        if patch_type == PatchType::Apply
            && subresource.is_none()
            && self.get_kv(info, namespace, name).await?.is_none()
        {
            let mut object = patch.clone();
            let body_name = meta_str(&object, "name").unwrap_or("");
            if !body_name.is_empty() && body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            meta_mut(&mut object).insert("name".into(), json!(name));
            return Ok((self.create(info, namespace, object, options).await?, true));
        }
        let written = self
            .admitted_update(target, options, |current, revision| {
                let patched = apply_patch(info, patch_type, current, patch)
                    .map_err(|e| ApiError::patch_failed(info, name, &e))?;
                // A resourceVersion in the patch is a precondition, as in Kubernetes.
                Self::check_precondition(
                    info,
                    name,
                    meta_str(&patched, "resourceVersion"),
                    revision,
                )?;
                Ok(patched)
            })
            .await?;
        Ok((written, false))
    }

    /// Marks for deletion or deletes, honouring grace periods, finalizers and propagation.
    pub async fn delete(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let key = storage_key(info, namespace, name);
        if info.plural == "namespaces"
            && matches!(
                name,
                "default" | "kube-system" | "kube-public" | "kube-node-lease"
            )
        {
            return Err(ApiError::forbidden(
                info,
                name,
                "this namespace may not be deleted",
            ));
        }
        for _ in 0..MAX_RETRIES {
            let Some(kv) = self.get_kv(info, namespace, name).await? else {
                return Err(ApiError::not_found(info, name));
            };
            let current = Self::decode(info, &kv)?;
            if let Some(uid) = options.precondition_uid.as_deref() {
                let actual = meta_str(&current, "uid").unwrap_or("");
                if uid != actual {
                    return Err(ApiError::conflict(
                        info,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                        ),
                    ));
                }
            }
            if let Some(rv) = options.precondition_resource_version.as_deref()
                && parse_revision(rv) != Some(kv.mod_revision)
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            let mut updated = current.clone();
            let mut fins = finalizers(&current);
            match options.propagation_policy.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.retain(|f| f != "orphan");
                    fins.push("foregroundDeletion".into());
                }
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => {
                    fins.retain(|f| f != "foregroundDeletion");
                    fins.push("orphan".into());
                }
                Some("Background") | None => {}
                Some("Foreground") | Some("Orphan") => {}
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported propagationPolicy {other:?}"
                    )));
                }
            }
            // Pods end gracefully: the node agent stops the containers, then deletes with grace 0.
            let grace = if info.kind == "Pod" {
                let scheduled = current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let default_grace = current
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                let grace = options.grace_period_seconds.unwrap_or(default_grace).max(0);
                let finished = matches!(
                    current.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                if scheduled && !finished { grace } else { 0 }
            } else {
                0
            };
            let already_deleting = meta(&current)
                .get("deletionTimestamp")
                .is_some_and(|v| !v.is_null());
            // A namespace also waits for its spec.finalizers: the namespace controller empties
            // it (through `/finalize`) once everything in the namespace is gone.
            if !fins.is_empty() || grace > 0 || !namespace_finalizers(info, &current).is_empty() {
                {
                    let m = meta_mut(&mut updated);
                    if !fins.is_empty() {
                        m.insert("finalizers".into(), json!(fins));
                    }
                    let previous_grace =
                        m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                    // A shorter grace period may replace a longer one; a longer never extends it.
                    let effective = match previous_grace {
                        Some(p) if already_deleting => p.min(grace),
                        _ => grace,
                    };
                    if !already_deleting || Some(effective) != previous_grace {
                        m.insert(
                            "deletionTimestamp".into(),
                            json!(timestamp_after(effective)),
                        );
                        m.insert("deletionGracePeriodSeconds".into(), json!(effective));
                    }
                }
                if info.plural == "namespaces" {
                    updated["status"]["phase"] = json!("Terminating");
                }
                if options.dry_run {
                    return Ok(Deleted::Pending(updated));
                }
                if updated == current {
                    return Ok(Deleted::Pending(current));
                }
                match ops::put_if(
                    self.store.as_ref(),
                    &key,
                    Self::encode(info, &updated)?,
                    kv.mod_revision,
                )
                .await?
                {
                    Written::Ok(revision) => {
                        Self::stamp(info, &mut updated, revision);
                        return Ok(Deleted::Pending(updated));
                    }
                    Written::Conflict(_) => continue,
                }
            }
            if options.dry_run {
                return Ok(Deleted::Gone(current));
            }
            if services::is_service(info) {
                // Its cluster IP and node ports are freed in the same transaction.
                let mut gone = current.clone();
                let plan = self.services.plan(info, Some(&current), &mut gone, true)?;
                match self
                    .write_service(&key, kv.mod_revision, ServiceOp::Delete, plan)
                    .await?
                {
                    Outcome::Written(_) => return Ok(Deleted::Gone(current)),
                    Outcome::ServiceChanged | Outcome::Retry => continue,
                    Outcome::Refused(error) => return Err(error),
                }
            }
            match ops::delete_if(self.store.as_ref(), &key, kv.mod_revision).await? {
                Written::Ok(_) => return Ok(Deleted::Gone(current)),
                Written::Conflict(_) => continue,
            }
        }
        Err(ApiError::stale(info, name))
    }

    /// Does an object pass the list's selectors?
    pub fn matches(info: &ResourceInfo, object: &Value, options: &ListOptions) -> bool {
        let labels = meta(object).get("labels").cloned().unwrap_or(Value::Null);
        options.label_selector.matches_value(&labels)
            && options
                .field_selector
                .matches(&|field: &str| field_value(info, object, field))
    }

    /// Lists objects, consistent at one revision across pages.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> ApiResult<ListResult> {
        let prefix = match namespace.filter(|_| info.namespaced()) {
            Some(ns) => format!("{}{}/", storage_prefix(info), ns),
            None => storage_prefix(info),
        };
        let range_end = berth_store::prefix_end(&prefix);
        let (mut start, mut revision) =
            match options.continue_token.as_deref().filter(|t| !t.is_empty()) {
                Some(token) => {
                    let (revision, start) = decode_continue(token)?;
                    if !start.starts_with(&prefix) {
                        return Err(ApiError::bad_request(
                            "continue key is not valid: it does not belong to this list",
                        ));
                    }
                    (start, Some(revision))
                }
                None => (prefix.clone(), None),
            };
        if revision.is_none() {
            revision = self.list_revision(options).await?;
        }
        // With a fieldSelector on metadata.name, only one key can match.
        if let Some(name) = options.field_selector.exact("metadata.name")
            && options.continue_token.is_none()
        {
            let key = format!("{prefix}{name}");
            let names_one_object = namespace.is_some() || !info.namespaced();
            if names_one_object {
                let response = self
                    .store
                    .range(RangeRequest {
                        key,
                        range_end: None,
                        revision,
                        limit: None,
                    })
                    .await
                    .map_err(|e| self.list_error(e))?;
                let mut items = Vec::new();
                for kv in &response.kvs {
                    let object = Self::decode(info, kv)?;
                    if Self::matches(info, &object, options) {
                        items.push(object);
                    }
                }
                return Ok(ListResult {
                    items,
                    revision: response.revision,
                    continue_token: None,
                });
            }
        }
        let limit = options.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let batch = limit.map(|l| l.max(64)).unwrap_or(usize::MAX);
        loop {
            let response = self
                .store
                .range(RangeRequest {
                    key: start.clone(),
                    range_end: Some(range_end.clone()),
                    revision,
                    limit: if batch == usize::MAX {
                        None
                    } else {
                        Some(batch)
                    },
                })
                .await
                .map_err(|e| self.list_error(e))?;
            // Later pages are read at the revision of the first.
            revision = Some(response.revision);
            let served_at = response.revision;
            let mut last_key = None;
            for kv in &response.kvs {
                last_key = Some(kv.key.clone());
                let object = Self::decode(info, kv)?;
                if Self::matches(info, &object, options) {
                    items.push(object);
                    if let Some(l) = limit
                        && items.len() == l
                    {
                        let more_here = kv.key
                            != response
                                .kvs
                                .last()
                                .map(|k| k.key.clone())
                                .unwrap_or_default();
                        if more_here || response.more {
                            let next = format!("{}\u{0}", kv.key);
                            return Ok(ListResult {
                                items,
                                revision: served_at,
                                continue_token: Some(encode_continue(served_at, &next)),
                            });
                        }
                        return Ok(ListResult {
                            items,
                            revision: served_at,
                            continue_token: None,
                        });
                    }
                }
            }
            match (response.more, last_key) {
                (true, Some(last)) => start = format!("{last}\u{0}"),
                _ => {
                    return Ok(ListResult {
                        items,
                        revision: served_at,
                        continue_token: None,
                    });
                }
            }
        }
    }

    fn list_error(&self, error: berth_store::StoreError) -> ApiError {
        match error {
            berth_store::StoreError::Compacted { .. } => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ),
            other => other.into(),
        }
    }

    /// The revision a list without a continue token is served at (`None` = latest).
    async fn list_revision(&self, options: &ListOptions) -> ApiResult<Option<Revision>> {
        let Some(rv) = options
            .resource_version
            .as_deref()
            .filter(|v| !v.is_empty() && *v != "0")
        else {
            return Ok(None);
        };
        let revision = parse_revision(rv)
            .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        match options.resource_version_match.as_deref() {
            Some("Exact") => Ok(Some(revision)),
            None | Some("") | Some("NotOlderThan") => {
                self.wait_for_revision(revision).await?;
                Ok(None)
            }
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid resourceVersionMatch {other:?}"
            ))),
        }
    }

    /// Waits (briefly) until the store has reached `revision`, as a NotOlderThan read needs.
    async fn wait_for_revision(&self, revision: Revision) -> ApiResult<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let current = self.store.revisions().await?.current;
            if current >= revision {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {revision}, current: {current}"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "/registry/core/pods/default/a\u{0}");
        assert_eq!(
            decode_continue(&token).unwrap(),
            (42, "/registry/core/pods/default/a\u{0}".to_string())
        );
        assert!(decode_continue("!!").is_err());
        assert!(decode_continue("e30=").is_err());
    }

    #[test]
    fn generated_names_have_five_suffix_characters() {
        let name = generate_name("web-");
        assert_eq!(name.len(), 9);
        assert!(name.starts_with("web-"));
    }
}
