//! Watch: turns the store's change stream for one resource into Kubernetes watch events
//! (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`), applying namespace and selector
//! filters the way the watch cache does: an object that stops matching is `DELETED`, one that
//! starts matching is `ADDED`.

use std::time::Duration;

use berth_api::ResourceInfo;
use berth_store::{Event, EventKind, Revision, WatchItem, WatchOptions};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::registry::{ListOptions, Registry};
use crate::status::{ApiError, ApiResult};

/// One event, before it is rendered as JSON or a Table.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    Bookmark(Revision),
    Error(ApiError),
}

impl WatchEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark(_) => "BOOKMARK",
            WatchEvent::Error(_) => "ERROR",
        }
    }
}

pub struct WatchRequest {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub options: ListOptions,
    pub allow_bookmarks: bool,
    pub timeout: Duration,
}

fn key_prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
    match namespace.filter(|_| info.namespaced()) {
        Some(ns) => format!("{}{}/", crate::registry::storage_prefix(info), ns),
        None => crate::registry::storage_prefix(info),
    }
}

/// Maps one store event to what a watcher with these selectors sees, if anything.
fn translate(
    info: &ResourceInfo,
    event: &Event,
    options: &ListOptions,
) -> ApiResult<Option<WatchEvent>> {
    let revision = event.kv.mod_revision;
    let old = match &event.prev_kv {
        Some(prev) => {
            let mut old = Registry::decode(info, prev)?;
            old["metadata"]["resourceVersion"] = json!(revision.to_string());
            Some(old)
        }
        None => None,
    };
    let old_matches = old
        .as_ref()
        .is_some_and(|o| Registry::matches(info, o, options));
    match event.kind {
        EventKind::Delete => Ok(old.filter(|_| old_matches).map(WatchEvent::Deleted)),
        EventKind::Put => {
            let new = Registry::decode(info, &event.kv)?;
            let new_matches = Registry::matches(info, &new, options);
            Ok(match (old_matches, new_matches) {
                (true, true) => Some(WatchEvent::Modified(new)),
                (false, true) => Some(WatchEvent::Added(new)),
                // It no longer matches: for this watcher the object is gone.
                (true, false) => old.map(WatchEvent::Deleted),
                (false, false) => None,
            })
        }
    }
}

/// Starts a watch. `resourceVersion` "" or "0" first sends the current objects as ADDED.
/// A compacted start revision yields a single ERROR event with 410 Expired, as kube-apiserver does.
pub async fn watch(
    registry: &Registry,
    request: WatchRequest,
) -> ApiResult<impl Stream<Item = WatchEvent> + Send + 'static + use<>> {
    let WatchRequest {
        info,
        namespace,
        options,
        allow_bookmarks,
        timeout,
    } = request;
    let rv = options.resource_version.clone().unwrap_or_default();
    let mut initial = Vec::new();
    let start = if rv.is_empty() || rv == "0" {
        let list_options = ListOptions {
            limit: None,
            continue_token: None,
            resource_version: None,
            ..options.clone()
        };
        let listed = registry
            .list(info, namespace.as_deref(), &list_options)
            .await?;
        initial = listed.items.into_iter().map(WatchEvent::Added).collect();
        listed.revision
    } else {
        rv.parse::<Revision>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?
    };
    let prefix = key_prefix(info, namespace.as_deref());
    let stream = match registry
        .store()
        .watch(prefix, start, WatchOptions::default())
        .await
    {
        Ok(stream) => stream,
        Err(e @ berth_store::StoreError::Compacted { .. }) => {
            let events: Vec<WatchEvent> = vec![WatchEvent::Error(ApiError::from(e))];
            return Ok(futures::stream::iter(events).boxed());
        }
        Err(e) => return Err(e.into()),
    };
    let mut last_bookmark = start;
    let live = stream
        .filter_map(move |item| {
            let out = match item {
                Ok(WatchItem::Event(event)) => match translate(info, &event, &options) {
                    Ok(e) => e,
                    Err(e) => Some(WatchEvent::Error(e)),
                },
                Ok(WatchItem::Progress(revision)) => {
                    if allow_bookmarks && revision > last_bookmark {
                        last_bookmark = revision;
                        Some(WatchEvent::Bookmark(revision))
                    } else {
                        None
                    }
                }
                Err(e) => Some(WatchEvent::Error(e.into())),
            };
            futures::future::ready(out)
        })
        // An error ends the watch; the client re-lists or resumes.
        .scan(false, |ended, event| {
            if *ended {
                return futures::future::ready(None);
            }
            *ended = matches!(event, WatchEvent::Error(_));
            futures::future::ready(Some(event))
        });
    let events = futures::stream::iter(initial).chain(live);
    let deadline = tokio::time::sleep(timeout);
    Ok(events.take_until(deadline).boxed())
}

/// The `object` of a BOOKMARK event: only kind, apiVersion and the resourceVersion.
pub fn bookmark_object(info: &ResourceInfo, revision: Revision) -> Value {
    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": revision.to_string()}})
}
