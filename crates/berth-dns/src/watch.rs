//! Keeping the index current from the API server: reflector caches of Namespaces, Services
//! and EndpointSlices (`discovery.k8s.io/v1`), and on every change a rebuild of the index
//! from them, published whole.
//!
//! Changes are coalesced for [`COALESCE`] before a rebuild, so a burst (a Deployment rolling
//! its pods) costs one rebuild rather than one per event, and a change is answered well
//! within a second. A rebuild is linear in the number of objects (about a millisecond per
//! thousand Services with their slices); lookups never wait for it.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::Records;

/// How long changes gather before the index is rebuilt.
pub const COALESCE: Duration = Duration::from_millis(50);

/// Watches the cluster and keeps `records` current until the returned future is dropped.
/// Until every cache has listed once, `records` stays unsynced.
pub(crate) async fn keep_current(client: Client, records: Records) {
    let changed = Arc::new(Notify::new());
    let (namespaces, a) = cache::<Namespace>(Api::all(client.clone()), changed.clone());
    let (services, b) = cache::<Service>(Api::all(client.clone()), changed.clone());
    let (slices, c) = cache::<EndpointSlice>(Api::all(client), changed.clone());
    let _tasks = AbortOnDrop(vec![a, b, c]);

    let ready = futures::future::try_join3(
        namespaces.wait_until_ready(),
        services.wait_until_ready(),
        slices.wait_until_ready(),
    )
    .await;
    if ready.is_err() {
        tracing::error!("a DNS watch ended before its cache was ready; cluster names get SERVFAIL");
        return;
    }
    let mut first = true;
    loop {
        let (n, s, e) = (namespaces.state(), services.state(), slices.state());
        records.replace(
            n.iter().map(Arc::as_ref),
            s.iter().map(Arc::as_ref),
            e.iter().map(Arc::as_ref),
        );
        if first {
            tracing::info!(services = s.len(), "cluster DNS records ready");
            first = false;
        }
        changed.notified().await;
        tokio::time::sleep(COALESCE).await;
    }
}

/// A reflector cache of `K`, driven by a task that pokes `changed` on every watch event.
fn cache<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
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
    (store, tokio::spawn(drive(stream, changed)))
}

async fn drive<S, T>(stream: S, changed: Arc<Notify>)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    tokio::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            // The watcher backs off and resumes by itself; the cache keeps its last state.
            Err(e) => tracing::warn!(error = %e, "DNS watch failed; retrying"),
        }
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
