//! The EndpointSlice controller: it keeps the EndpointSlices of every Service with a
//! selector, as upstream's `pkg/controller/endpointslice` does. Each pod the selector picks
//! in the Service's namespace that has an IP and has not finished is one endpoint (its
//! address, ready/serving/terminating conditions, node, zone, hostname, a reference to the
//! pod), in slices labelled `kubernetes.io/service-name=<service>` and
//! `endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io`, controlled by
//! the Service (so the garbage collector deletes them with it), at most
//! [`MAX_ENDPOINTS_PER_SLICE`] each. Services without a selector, and ExternalName ones, are
//! left alone: their slices, if any, are someone else's.
//!
//! Shape: the shared applier machinery of [`crate::runtime`] over Services, with reflector
//! caches of pods, Nodes (for zones) and the slices this controller manages (a watch
//! filtered by the managed-by label). A Service's own change wakes it; a pod's change wakes
//! the Services selecting it now or before ([`membership`](crate::endpoints::membership));
//! a slice's change wakes the Service its label names, so a slice deleted or edited by hand
//! is put back.
//!
//! `reconcile` is the one reconcile: it reads the caches, asks [`reconciler::plan`] (pure)
//! what to create, update and delete, and does it. The [`tracker`] holds it back while the
//! slice cache does not show its own last writes yet, which would otherwise make it create
//! endpoints twice.

pub mod reconciler;
pub mod tracker;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::Error;
use crate::endpoints::addresses::{self, SERVICE_NAME_LABEL, ZONE_LABEL};
use crate::endpoints::{membership, namespace_terminating, write_error};
use crate::runtime::{self, Backoff, Events, ObjectKey};
pub use reconciler::{CONTROLLER_NAME, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE};
use reconciler::{Plan, Zones};
use tracker::Tracker;

/// The component name on events, as upstream's.
pub const COMPONENT: &str = "endpointslice-controller";

/// Back-off after a failed reconcile: this doubled per consecutive failure, up to
/// [`MAX_BACKOFF`]. A change of the Service or its pods still wakes it at once.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How soon a Service whose slice cache is behind is looked at again, should the slice's
/// own watch event not wake it first.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// How soon a Service with pods on Nodes the cache does not know is looked at again (Node
/// changes wake no Service).
const UNKNOWN_NODE_RETRY: Duration = Duration::from_secs(5);

/// A safety net for changes no event reports: every Service is looked at again this often.
const RESYNC: Duration = Duration::from_secs(600);

/// What every reconcile shares.
struct Context {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    tracker: Tracker,
    events: Events<Service>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (services, service_events) = runtime::reflector::<Service>(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);
    let (nodes, node_events) = runtime::reflector::<Node>(&client);
    let (slices, slice_events) = managed_slices(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        nodes,
        slices,
        tracker: Tracker::default(),
        events: Events::new(client, COMPONENT, services.clone()),
    });

    let forget = context.clone();
    let slice_events = slice_events.inspect_ok(move |event| {
        if let watcher::Event::Delete(slice) = event
            && let (Some(service), Some(uid)) = (service_key(slice), &slice.metadata.uid)
        {
            forget.tracker.forget(&service, uid);
        }
    });
    let triggers = vec![
        runtime::trigger_self(service_events),
        membership::pod_triggers(pod_events, services.clone()),
        runtime::trigger_mapped(slice_events, |slice: EndpointSlice| {
            let (namespace, name) = service_key(&slice)?;
            Some(ObjectRef::new(&name).within(namespace.as_deref()?))
        }),
        // Nodes only fill the cache the zones come from; as upstream, a Node's change wakes
        // no Service.
        runtime::trigger_mapped(node_events, |_: Node| None::<ObjectRef<Service>>),
    ];
    runtime::run(
        "endpointslice",
        reconcile,
        context,
        services,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// A cache of the slices this controller manages (in every namespace), and the watch events
/// that fill it. A slice whose managed-by label changes leaves the watch as if deleted.
fn managed_slices(
    client: &Client,
) -> (
    Store<EndpointSlice>,
    impl futures::Stream<Item = Result<watcher::Event<EndpointSlice>, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store::<EndpointSlice>();
    let config =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}"));
    let events = reflector::reflector(
        writer,
        watcher(Api::<EndpointSlice>::all(client.clone()), config).default_backoff(),
    );
    (store, events)
}

/// The Service a slice belongs to, by its namespace and service-name label.
fn service_key(slice: &EndpointSlice) -> Option<ObjectKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((slice.metadata.namespace.clone(), name.clone()))
}

/// The one reconcile: the Service's slices made to list its pods. Errors requeue with
/// back-off and are reported as a FailedToUpdateEndpointSlices event on the Service.
async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    runtime::synced(&ctx.pods, "pod").await?;
    runtime::synced(&ctx.nodes, "node").await?;
    runtime::synced(&ctx.slices, "endpointslice").await?;
    let Some((namespace, name)) = addresses::managed_service(&service)? else {
        return Ok(Action::await_change());
    };
    let key: ObjectKey = (Some(namespace.clone()), name.clone());

    let all_pods = ctx.pods.state();
    let pods: Vec<&Pod> = all_pods
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| addresses::selects(&service, p))
        .collect();
    let all_slices = ctx.slices.state();
    let slices: Vec<&EndpointSlice> = all_slices
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| service_key(s).as_ref() == Some(&key))
        .collect();
    if ctx.tracker.stale(&key, &slices, Instant::now()) {
        tracing::debug!(service = %format!("{namespace}/{name}"), "slice cache is behind; waiting");
        return Ok(Action::requeue(STALE_RETRY));
    }
    let existing: Vec<&EndpointSlice> = slices
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    let zones: Zones = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|n| {
            let zone = n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL))
                .cloned();
            Some((n.metadata.name.clone()?, zone))
        })
        .collect();

    let plan = reconciler::plan(&service, &pods, &existing, &zones, MAX_ENDPOINTS_PER_SLICE);
    if let Err(error) = write(&ctx, &namespace, &key, &plan).await {
        if !error.is_conflict() {
            let message = format!(
                "Error updating Endpoint Slices for Service {namespace}/{name}: {}",
                error.message()
            );
            ctx.events
                .record(
                    &service,
                    "Warning",
                    "FailedToUpdateEndpointSlices",
                    &message,
                )
                .await;
        }
        return Err(error);
    }
    if !plan.unknown_nodes.is_empty() {
        tracing::debug!(
            service = %format!("{namespace}/{name}"),
            pods = ?plan.unknown_nodes,
            "pods on nodes not known yet are left out"
        );
        return Ok(Action::requeue(UNKNOWN_NODE_RETRY));
    }
    Ok(Action::requeue(RESYNC))
}

/// Carries out the plan: creates, then updates (each conditional on the resourceVersion it
/// was planned from), then deletes (conditional on the uid), remembering each for the
/// tracker. Stops at the first failure. In a namespace being deleted creates fail, and that
/// is expected: the rest is left to the namespace's deletion.
async fn write(ctx: &Context, namespace: &str, key: &ObjectKey, plan: &Plan) -> Result<(), Error> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams::default();
    for slice in &plan.create {
        match api.create(&params, slice).await {
            Ok(created) => ctx.tracker.created(key, &created, Instant::now()),
            Err(kube::Error::Api(status)) if namespace_terminating(&status) => return Ok(()),
            Err(e) => return Err(write_error(e)),
        }
    }
    for slice in &plan.update {
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        api.replace(name, &params, slice)
            .await
            .map_err(write_error)?;
        let uid = slice.metadata.uid.as_deref();
        let read_at = slice.metadata.resource_version.clone();
        ctx.tracker.updated(key, uid, read_at, Instant::now());
    }
    for slice in &plan.delete {
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: slice.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(write_error(e)),
        }
        ctx.tracker
            .deleted(key, slice.metadata.uid.as_deref(), Instant::now());
    }
    Ok(())
}
