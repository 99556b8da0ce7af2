//! One request from routing to response: authenticate, route, read the body, run the verb
//! against the registry and render the result as JSON, a Table, or a watch stream.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use berth_api::patch::PatchType;
use berth_api::selectors::{FieldSelector, LabelSelector, validate_fields};
use berth_api::{ResourceInfo, discovery, openapi, tables};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::auth::Authenticator;
use crate::body;
use crate::registry::{
    DeleteOptions, Deleted, FieldValidation, ListOptions, Registry, Target, WriteOptions,
};
use crate::request::{Query, ResourceRequest, Route, Verb, route};
use crate::status::{ApiError, ApiResult, success_status};
use crate::watch::{WatchEvent, WatchRequest, bookmark_object, watch};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The Kubernetes version whose API berth serves (k8s-openapi's `v1_33`).
pub const KUBERNETES_MINOR: &str = "33";
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// Everything a request handler needs.
pub struct State {
    pub registry: Registry,
    pub auth: Authenticator,
    /// How pod log/exec/attach/portforward requests reach node agents ([`crate::proxy`]).
    pub agents: crate::proxy::Agents,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(
    status: StatusCode,
    value: &impl serde::Serialize,
    warnings: &[String],
) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for warning in warnings {
        // RFC 7234 warn-text: a quoted string with \ and " escaped.
        let text = format!(
            "299 - \"{}\"",
            warning.replace('\\', "\\\\").replace('"', "\\\"")
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, &error.to_status(), &[]);
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Entry point for every request.
pub async fn handle<B>(state: Arc<State>, request: Request<B>) -> Result<Response<Body>, Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = match dispatch(&state, request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    Ok(response)
}

fn header_str<B>(request: &Request<B>, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn dispatch<B>(state: &State, request: Request<B>) -> ApiResult<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let route = route(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    // Version and health are public, as kube-apiserver's system:public-info-viewer makes them.
    match &route {
        Ok(Route::Version) => return Ok(json_response(StatusCode::OK, &version(), &[])),
        Ok(Route::Health(check)) => {
            // livez: the process serves. healthz/readyz: the store can be read and written.
            if *check != "livez" {
                let store = state.registry.store();
                let healthy = store.revisions().await.and_then(|_| store.writable());
                if let Err(e) = healthy {
                    let mut response =
                        text_response(StatusCode::INTERNAL_SERVER_ERROR, "store unhealthy");
                    *response.body_mut() =
                        full(format!("[-]store failed: {e}\n{check} check failed\n"));
                    return Ok(response);
                }
            }
            return Ok(text_response(StatusCode::OK, "ok"));
        }
        _ => {}
    }
    if !state
        .auth
        .authenticate(&state.registry, header_str(&request, header::AUTHORIZATION))
        .await
    {
        return Err(ApiError::unauthorized());
    }
    let accept = header_str(&request, header::ACCEPT)
        .unwrap_or("")
        .to_string();
    match route? {
        Route::Version | Route::Health(_) => Err(ApiError::no_route()),
        Route::DiscoveryRoot { core } => {
            if let Some(content_type) = discovery::wants_aggregated(&accept) {
                let doc = if core {
                    discovery::aggregated_core()
                } else {
                    discovery::aggregated_apis()
                };
                let mut response = json_response(StatusCode::OK, &doc, &[]);
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept"));
                Ok(response)
            } else {
                let doc = if core {
                    discovery::api_versions()
                } else {
                    discovery::api_group_list()
                };
                Ok(json_response(StatusCode::OK, &doc, &[]))
            }
        }
        Route::DiscoveryGroup(group) => discovery::api_group(&group)
            .map(|doc| json_response(StatusCode::OK, &doc, &[]))
            .ok_or_else(ApiError::no_route),
        Route::DiscoveryGroupVersion { group, version } => {
            discovery::api_resource_list(&group, &version)
                .map(|doc| json_response(StatusCode::OK, &doc, &[]))
                .ok_or_else(ApiError::no_route)
        }
        Route::OpenApiRoot => Ok(json_response(StatusCode::OK, &openapi::root(), &[])),
        Route::OpenApiGroupVersion(path) => {
            let doc = openapi::group_version(&path).ok_or_else(ApiError::no_route)?;
            let etag = format!("\"{}\"", doc.etag);
            if header_str(&request, header::IF_NONE_MATCH) == Some(etag.as_str()) {
                let mut response = Response::new(full(Bytes::new()));
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                return Ok(response);
            }
            let mut response = Response::new(full(doc.body.clone()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(value) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, value);
            }
            Ok(response)
        }
        // Served by the node agent: proxied before any body is read, since an upgraded
        // connection has none and a followed log never ends.
        Route::Resource(resource) if crate::proxy::is_proxied(&resource) => {
            crate::proxy::serve(state, resource, request).await
        }
        Route::Resource(resource) => {
            let content_type = header_str(&request, header::CONTENT_TYPE).map(str::to_string);
            let content_length =
                header_str(&request, header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok());
            let body = body::read(request.into_body(), content_length).await?;
            resource_request(state, resource, content_type.as_deref(), &body, &accept).await
        }
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "berth",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": concat!("berth ", env!("CARGO_PKG_VERSION")),
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

/// What the client wants in the body of a read: the objects, or a Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rendering {
    Object,
    Table { include_object: IncludeObject },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IncludeObject {
    None,
    Metadata,
    Object,
}

fn rendering(accept: &str, query: &Query) -> Rendering {
    let wants_table = accept.split(',').any(|part| part.contains("as=Table"));
    if !wants_table {
        return Rendering::Object;
    }
    let include_object = match query.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    Rendering::Table { include_object }
}

fn now() -> k8s_openapi::jiff::Timestamp {
    berth_api::tables::now()
}

fn render_table(
    info: &ResourceInfo,
    objects: &[Value],
    revision: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let mut table = tables::table(info, objects, revision, continue_token, now());
    if let Some(rows) = table.get_mut("rows").and_then(Value::as_array_mut) {
        for (row, object) in rows.iter_mut().zip(objects) {
            match include {
                IncludeObject::None => {
                    if let Some(r) = row.as_object_mut() {
                        r.remove("object");
                    }
                }
                IncludeObject::Object => row["object"] = object.clone(),
                IncludeObject::Metadata => {}
            }
        }
    }
    table
}

/// A one-row Table of one object (a single GET, or one watch event), at the object's revision.
fn render_row(info: &ResourceInfo, object: &Value, include: IncludeObject) -> Value {
    let rv = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    render_table(info, std::slice::from_ref(object), rv, None, include)
}

fn write_options(query: &Query) -> ApiResult<WriteOptions> {
    let dry_run = match query.all("dryRun") {
        [] => false,
        values if values.iter().all(|v| v == "All") => true,
        values => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {:?}: only All is supported",
                values
            )));
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_validation: FieldValidation::parse(query.get("fieldValidation"))?,
        duplicate_fields: Vec::new(),
    })
}

fn list_options(info: &ResourceInfo, query: &Query) -> ApiResult<ListOptions> {
    let label_selector = match query.get("labelSelector") {
        Some(s) => s
            .parse::<LabelSelector>()
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        None => LabelSelector::default(),
    };
    let field_selector = match query.get("fieldSelector") {
        Some(s) => s
            .parse::<FieldSelector>()
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?,
        None => FieldSelector::default(),
    };
    validate_fields(info, &field_selector).map_err(ApiError::bad_request)?;
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
        None => None,
    };
    Ok(ListOptions {
        label_selector,
        field_selector,
        limit,
        continue_token: query.get("continue").map(str::to_string),
        resource_version: query.get("resourceVersion").map(str::to_string),
        resource_version_match: query.get("resourceVersionMatch").map(str::to_string),
    })
}

fn delete_options(query: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut options = DeleteOptions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value = body::parse_json(body)?;
        options.grace_period_seconds = value.get("gracePeriodSeconds").and_then(Value::as_i64);
        options.propagation_policy = value
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        if value.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && options.propagation_policy.is_none()
        {
            options.propagation_policy = Some("Orphan".into());
        }
        options.precondition_uid = value
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        options.precondition_resource_version = value
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        options.dry_run = value
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        options.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    if let Some(p) = query.get("propagationPolicy") {
        options.propagation_policy = Some(p.to_string());
    }
    if query.all("dryRun").iter().any(|v| v == "All") {
        options.dry_run = true;
    }
    Ok(options)
}

async fn resource_request(
    state: &State,
    request: ResourceRequest,
    content_type: Option<&str>,
    body: &[u8],
    accept: &str,
) -> ApiResult<Response<Body>> {
    let ResourceRequest {
        info,
        namespace,
        name,
        subresource,
        verb,
        query,
    } = request;
    let ns = namespace.as_deref();
    let registry = &state.registry;
    if !info.verbs.contains(&verb.as_str()) {
        return Err(ApiError::method_not_supported(info, verb.as_str()));
    }
    match (subresource.as_deref(), verb) {
        (Some("scale"), _) => {
            return scale(
                state,
                info,
                ns,
                name.as_deref().unwrap_or(""),
                verb,
                &query,
                content_type,
                body,
            )
            .await;
        }
        (Some("binding"), Verb::Create) => {
            return binding(
                state,
                info,
                ns,
                name.as_deref().unwrap_or(""),
                content_type,
                body,
            )
            .await;
        }
        (Some("status") | None, _) => {}
        (Some("finalize"), Verb::Update) => {
            return finalize_namespace(
                state,
                info,
                name.as_deref().unwrap_or(""),
                content_type,
                body,
            )
            .await;
        }
        (Some(_), _) => return Err(ApiError::method_not_supported(info, verb.as_str())),
    }
    let subresource = subresource.as_deref().filter(|s| *s == "status");
    match verb {
        Verb::Get => {
            let name = name.unwrap_or_default();
            let object = registry.get(info, ns, &name).await?;
            match rendering(accept, &query) {
                Rendering::Object => Ok(json_response(StatusCode::OK, &object, &[])),
                Rendering::Table { include_object } => Ok(json_response(
                    StatusCode::OK,
                    &render_row(info, &object, include_object),
                    &[],
                )),
            }
        }
        Verb::List => {
            let options = list_options(info, &query)?;
            let listed = registry.list(info, ns, &options).await?;
            let rv = listed.revision.to_string();
            match rendering(accept, &query) {
                Rendering::Object => {
                    let mut metadata = json!({"resourceVersion": rv});
                    if let Some(token) = &listed.continue_token {
                        metadata["continue"] = json!(token);
                    }
                    // Serialized from borrowed parts: `json!` would deep-copy every item
                    // first (it goes through `to_value`), doubling a large list's time and
                    // peak memory. Fields in the order a `Value` map would write them.
                    #[derive(serde::Serialize)]
                    struct List<'a> {
                        #[serde(rename = "apiVersion")]
                        api_version: &'a str,
                        items: &'a [Value],
                        kind: &'a str,
                        metadata: &'a Value,
                    }
                    let list = List {
                        api_version: &info.api_version(),
                        items: &listed.items,
                        kind: &info.list_kind(),
                        metadata: &metadata,
                    };
                    Ok(json_response(StatusCode::OK, &list, &[]))
                }
                Rendering::Table { include_object } => Ok(json_response(
                    StatusCode::OK,
                    &render_table(
                        info,
                        &listed.items,
                        &rv,
                        listed.continue_token.as_deref(),
                        include_object,
                    ),
                    &[],
                )),
            }
        }
        Verb::Watch => {
            let mut options = list_options(info, &query)?;
            if let Some(name) = name {
                // GET .../pods/x?watch=true watches one object.
                let by_name = format!("metadata.name={name}");
                options.field_selector = by_name
                    .parse()
                    .map_err(|e| ApiError::bad_request(format!("{e}")))?;
            }
            let timeout = match query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
            {
                Some(t) => Duration::from_secs(t),
                // kube-apiserver picks a random timeout between 30 and 60 minutes.
                None => Duration::from_secs(1800 + rand::random_range(0..1800)),
            };
            let request = WatchRequest {
                info,
                namespace: namespace.clone(),
                options,
                allow_bookmarks: query.flag("allowWatchBookmarks"),
                timeout,
            };
            let events = watch(registry, request).await?;
            let render = rendering(accept, &query);
            let frames = events.map(move |event| {
                let object = match &event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                        match render {
                            Rendering::Object => Cow::Borrowed(o),
                            Rendering::Table { include_object } => {
                                Cow::Owned(render_row(info, o, include_object))
                            }
                        }
                    }
                    WatchEvent::Bookmark(revision) => Cow::Owned(bookmark_object(info, *revision)),
                    WatchEvent::Error(e) => Cow::Owned(e.to_status()),
                };
                // Borrowed, not `json!` (which would deep-copy the object once more per event
                // and watcher); fields in the order a `Value` map would write them.
                #[derive(serde::Serialize)]
                struct Line<'a> {
                    object: &'a Value,
                    #[serde(rename = "type")]
                    kind: &'a str,
                }
                let mut line = serde_json::to_vec(&Line {
                    object: &object,
                    kind: event.type_name(),
                })
                .unwrap_or_default();
                line.push(b'\n');
                Ok::<_, Infallible>(Frame::data(Bytes::from(line)))
            });
            let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            Ok(response)
        }
        Verb::Create => {
            let mut options = write_options(&query)?;
            let decoded = body::decode_object(content_type, body)?;
            let object = decoded.value;
            if options.field_validation != FieldValidation::Ignore {
                options.duplicate_fields = decoded.duplicate_fields;
            }
            let written = registry.create(info, ns, object, &options).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &written.object,
                &written.warnings,
            ))
        }
        Verb::Update => {
            let mut options = write_options(&query)?;
            let decoded = body::decode_object(content_type, body)?;
            let object = decoded.value;
            if options.field_validation != FieldValidation::Ignore {
                options.duplicate_fields = decoded.duplicate_fields;
            }
            let name = name.unwrap_or_default();
            let written = registry
                .update(
                    Target {
                        info,
                        namespace: ns,
                        name: &name,
                        subresource,
                    },
                    object,
                    &options,
                )
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &written.object,
                &written.warnings,
            ))
        }
        Verb::Patch => {
            let options = write_options(&query)?;
            let patch_type = content_type
                .and_then(PatchType::from_content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type.unwrap_or("")))?;
            let patch = body::decode(content_type, body)?;
            let name = name.unwrap_or_default();
            let (written, created) = registry
                .patch(
                    Target {
                        info,
                        namespace: ns,
                        name: &name,
                        subresource,
                    },
                    patch_type,
                    &patch,
                    &options,
                )
                .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(status, &written.object, &written.warnings))
        }
        Verb::Delete => {
            let options = delete_options(&query, body)?;
            let name = name.unwrap_or_default();
            match registry.delete(info, ns, &name, &options).await? {
                Deleted::Gone(object) => Ok(json_response(StatusCode::OK, &object, &[])),
                Deleted::Pending(object) => Ok(json_response(StatusCode::ACCEPTED, &object, &[])),
            }
        }
        Verb::DeleteCollection => {
            let list = list_options(info, &query)?;
            let options = delete_options(&query, body)?;
            let listed = registry.list(info, ns, &list).await?;
            let mut deleted = Vec::new();
            for object in listed.items {
                let item_ns = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let item_name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                match registry
                    .delete(info, item_ns.as_deref(), &item_name, &options)
                    .await
                {
                    Ok(Deleted::Gone(o) | Deleted::Pending(o)) => deleted.push(o),
                    // Someone else deleted it first: that is what was asked for.
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let list = json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": {"resourceVersion": listed.revision.to_string()}, "items": deleted});
            Ok(json_response(StatusCode::OK, &list, &[]))
        }
    }
}

/// The selector of a workload as the string form the Scale status carries.
fn selector_string(object: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = object
        .pointer("/spec/selector/matchExpressions")
        .and_then(Value::as_array)
    {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

fn scale_of(object: &Value) -> Value {
    let m = object.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp")
        },
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(object)
        }
    })
}

#[allow(clippy::too_many_arguments)] // The verb's inputs, passed straight through from the router.
async fn scale(
    state: &State,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    verb: Verb,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> ApiResult<Response<Body>> {
    let registry = &state.registry;
    let current = registry.get(info, namespace, name).await?;
    let current_scale = scale_of(&current);
    let new_scale = match verb {
        Verb::Get => return Ok(json_response(StatusCode::OK, &current_scale, &[])),
        Verb::Update => body::decode(content_type, body)?,
        Verb::Patch => {
            let patch_type = content_type
                .and_then(PatchType::from_content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type.unwrap_or("")))?;
            let patch = body::decode(content_type, body)?;
            let scale_info = ResourceInfo {
                group: "autoscaling",
                version: "v1",
                kind: "Scale",
                ..*info
            };
            berth_api::patch::apply_patch(&scale_info, patch_type, &current_scale, &patch)
                .map_err(|e| ApiError::patch_failed(&scale_info, name, &e))?
        }
        _ => return Err(ApiError::method_not_supported(info, verb.as_str())),
    };
    let replicas = new_scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut patch = json!({"spec": {"replicas": replicas}});
    // The Scale's resourceVersion is the object's: honour it as a precondition.
    if let Some(rv) = new_scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
    {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    let options = write_options(query)?;
    let (written, _) = registry
        .patch(
            Target::object(info, namespace, name),
            PatchType::Merge,
            &patch,
            &options,
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &scale_of(&written.object),
        &written.warnings,
    ))
}

/// `pods/<name>/binding`: the scheduler's one write, setting spec.nodeName exactly once.
async fn binding(
    state: &State,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> ApiResult<Response<Body>> {
    let binding = body::decode(content_type, body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request("binding target name is required"));
    }
    let expected_uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let now = crate::registry::now_rfc3339();
    // Binding is a system write: it bypasses the pod update rules that forbid spec changes.
    state
        .registry
        .guaranteed_update(
            info,
            namespace,
            name,
            |pod, _| {
                if let Some(existing) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                    return Err(ApiError::conflict(info, name, &format!("pod {name} is already assigned to node \"{existing}\"")));
                }
                // A binding names the pod it was decided for; a pod recreated under the same
                // name since then is a different pod.
                if let Some(uid) = expected_uid.as_deref()
                    && pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
                {
                    return Err(ApiError::conflict(
                        info,
                        name,
                        &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")),
                    ));
                }
                if pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                    return Err(ApiError::conflict(info, name, &format!("pod {name} is being deleted, cannot be assigned to a host")));
                }
                let mut pod = pod.clone();
                pod["spec"]["nodeName"] = json!(node);
                let mut conditions: Vec<Value> =
                    pod.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
                pod["status"]["conditions"] = json!(conditions);
                Ok(Some(pod))
            },
            false,
        )
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &success_status(json!({"name": name, "kind": "pods"})),
        &[],
    ))
}

/// `namespaces/<name>/finalize`: the namespace controller's write of `spec.finalizers`. When the
/// namespace is being deleted and nothing holds it any more, the write removes it.
async fn finalize_namespace(
    state: &State,
    info: &'static ResourceInfo,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> ApiResult<Response<Body>> {
    let requested = body::decode(content_type, body)?;
    let finalizers = requested
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or(json!([]));
    if !finalizers.is_array() {
        return Err(ApiError::bad_request("spec.finalizers must be a list"));
    }
    let object = state
        .registry
        .guaranteed_update(
            info,
            None,
            name,
            |current, _| {
                let mut updated = current.clone();
                updated["spec"]["finalizers"] = finalizers.clone();
                Ok(Some(updated))
            },
            false,
        )
        .await?;
    Ok(json_response(StatusCode::OK, &object, &[]))
}
