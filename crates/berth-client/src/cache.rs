//! Watched caches that wake a rebuild: what the cluster DNS and the service proxy (and any
//! other reader that recomputes one whole view from a few kinds) keep of the API.
//!
//! [`watched`] is a kube-runtime reflector whose every event pokes a shared [`Notify`]; the
//! reader waits on it, gathers the burst for a moment, and rebuilds from the stores, so a
//! hundred events cost one rebuild. The watcher backs off and resumes by itself after an
//! error; the store keeps its last state meanwhile.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

/// A reflector cache of `K` from `api`, kept by a task that pokes `changed` on every watch
/// event. `what` names the watch in the log.
pub fn watched<K>(
    api: Api<K>,
    changed: Arc<Notify>,
    what: &'static str,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    (store, tokio::spawn(drive(stream, changed, what)))
}

async fn drive<S, T>(stream: S, changed: Arc<Notify>, what: &'static str)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    tokio::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(error = %e, "{what} watch failed; retrying"),
        }
    }
}

/// Aborts the watch tasks when the reader that owns them goes away.
pub struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
