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

use berth_client::cache::{AbortOnDrop, watched};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::Records;

/// How long changes gather before the index is rebuilt.
pub const COALESCE: Duration = Duration::from_millis(50);

/// Watches the cluster and keeps `records` current until the returned future is dropped.
/// Until every cache has listed once, `records` stays unsynced.
pub(crate) async fn keep_current(client: Client, records: Records) {
    let changed = Arc::new(Notify::new());
    let (namespaces, a) = watched::<Namespace>(Api::all(client.clone()), changed.clone(), "DNS");
    let (services, b) = watched::<Service>(Api::all(client.clone()), changed.clone(), "DNS");
    let (slices, c) = watched::<EndpointSlice>(Api::all(client), changed.clone(), "DNS");
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
