//! The Endpoints controller: it keeps the legacy Endpoints object (named as its Service) of
//! every Service with a selector, as upstream's `pkg/controller/endpoint` does. The pods the
//! selector picks in the Service's namespace that have an IP, have not finished and are not
//! being deleted are its addresses — under `addresses` when Ready, `notReadyAddresses`
//! otherwise (every one under `addresses` for a Service that publishes not-ready addresses,
//! terminating pods included then) — with each Service port's targetPort resolved per pod.
//! Services without a selector, and ExternalName ones, are left alone: their Endpoints, if
//! any, are someone else's. When a Service is deleted, its Endpoints object is deleted too
//! (nothing owns it, so the garbage collector would not), as upstream does.
//!
//! Shape: the shared applier machinery of [`crate::runtime`] over Services, with reflector
//! caches of pods and Endpoints. A Service's own change wakes it; a pod's change wakes the
//! Services selecting it now or before ([`membership`]); an Endpoints change wakes the
//! Service of its name, so an edited or deleted object is put back. Beside the reconciles,
//! the Services the watch shows gone ([`gone`]) — and, once at start, every Endpoints object
//! without a Service, as upstream's `checkLeftoverEndpoints` — have their Endpoints deleted.
//!
//! `reconcile` is the one reconcile: [`subsets::plan`] (pure) says whether to create, update
//! or leave the object; writes carry the resourceVersion they were planned from, so a cache
//! behind the server conflicts and retries instead of overwriting.
//!
//! The modules beside it are shared with the EndpointSlice controller: [`addresses`] (what a
//! Service and a pod say about endpoints) and [`membership`] (which Services a pod event
//! concerns).

pub mod addresses;
pub mod gone;
pub mod membership;
pub mod subsets;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::Error;
use crate::runtime::{self, Backoff, Events, ObjectKey};
use gone::Gone;
use subsets::Write;

/// The component name on events, as upstream's.
pub const COMPONENT: &str = "endpoint-controller";

/// Endpoints objects with this annotation are leader-election records (of old
/// controller-managers), not a Service's: the leftover check at start leaves them alone.
pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Back-off after a failed reconcile or deletion: this doubled per consecutive failure, up
/// to [`MAX_BACKOFF`]. A change of the Service or its pods still wakes it at once.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How soon a Service is looked at again when the Endpoints cache proved behind the server
/// (a create found the object there), should its watch event not wake it first.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// A safety net for changes no event reports: every Service is looked at again this often.
const RESYNC: Duration = Duration::from_secs(600);

/// What every reconcile shares.
struct Context {
    client: Client,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    events: Events<Endpoints>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (services, service_events) = runtime::reflector::<Service>(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);
    let (endpoints, endpoints_events) = runtime::reflector::<Endpoints>(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        endpoints: endpoints.clone(),
        events: Events::new(client, COMPONENT, endpoints.clone()),
    });

    let (gone_tx, gone_rx) = mpsc::unbounded::<ObjectKey>();
    let mut gone = Gone::default();
    let services_gone = gone_tx.clone();
    let service_events = service_events.inspect_ok(move |event| {
        for key in gone.observe(event) {
            let _ = services_gone.unbounded_send(key);
        }
    });
    let triggers = vec![
        runtime::trigger_self(service_events),
        membership::pod_triggers(pod_events, services.clone()),
        runtime::trigger_mapped(endpoints_events, |ep: Endpoints| {
            let namespace = ep.metadata.namespace?;
            Some(ObjectRef::<Service>::new(ep.metadata.name.as_deref()?).within(&namespace))
        }),
    ];
    let controller = runtime::run(
        "endpoints",
        reconcile,
        context.clone(),
        services.clone(),
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    );
    let sweep = leftovers(services.clone(), endpoints, gone_tx);
    let deleter = gone_rx.for_each_concurrent(None, move |key| {
        delete_endpoints(context.clone(), services.clone(), key)
    });
    // The deletions run as long as the controller does (their channel outlives them both).
    let deletions = async move {
        futures::join!(sweep, deleter);
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = controller => {}
        () = deletions => {}
    }
}

/// Upstream's `checkLeftoverEndpoints`: once both caches are filled, every Endpoints object
/// (except leader-election records) is checked for its Service, so Services deleted while no
/// controller ran lose their Endpoints too.
async fn leftovers(
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    check: mpsc::UnboundedSender<ObjectKey>,
) {
    if services.wait_until_ready().await.is_err() || endpoints.wait_until_ready().await.is_err() {
        return;
    }
    for ep in endpoints.state() {
        let leader = ep
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
        if let (false, Some(name)) = (leader, ep.metadata.name.clone()) {
            let _ = check.unbounded_send((ep.metadata.namespace.clone(), name));
        }
    }
}

/// Deletes the Endpoints object of a Service that has gone — unless the cache shows a
/// Service of that name again, whose reconcile then owns the object. Failures are retried
/// with back-off until they succeed or the controller stops.
async fn delete_endpoints(ctx: Arc<Context>, services: Store<Service>, key: ObjectKey) {
    let (Some(namespace), name) = key else {
        return;
    };
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    let backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        let service = ObjectRef::<Service>::new(&name).within(&namespace);
        if services.get(&service).is_some() {
            return;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::debug!(endpoints = %format!("{namespace}/{name}"), "deleted with its Service");
                return;
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => return,
            Err(e) => {
                let delay = backoff.failed(());
                tracing::warn!(
                    endpoints = %format!("{namespace}/{name}"),
                    error = %e,
                    ?delay,
                    "could not delete the Endpoints of a deleted Service; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The one reconcile: the Service's Endpoints object made to list its pods. A failed write
/// is reported as a FailedToCreateEndpoint or FailedToUpdateEndpoint event (not for a
/// conflict, which only says the cache was behind) and retried with back-off.
async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    runtime::synced(&ctx.pods, "pod").await?;
    runtime::synced(&ctx.endpoints, "endpoints").await?;
    let Some((namespace, name)) = addresses::managed_service(&service)? else {
        return Ok(Action::await_change());
    };

    let all_pods = ctx.pods.state();
    let pods: Vec<&Pod> = all_pods
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| addresses::selects(&service, p))
        .collect();
    let current = ctx.endpoints.get(&ObjectRef::new(&name).within(&namespace));
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PostParams::default();
    match subsets::plan(&service, &pods, current.as_deref()) {
        Write::Unchanged => {}
        Write::Create(ep) => match api.create(&params, &ep).await {
            Ok(_) => {}
            // Every create fails in a namespace being deleted, and that is expected.
            Err(kube::Error::Api(status)) if namespace_terminating(&status) => {}
            // The cache is behind: the object is there. Its watch event brings it.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Err(e) => {
                let error = write_error(e);
                let message = format!(
                    "Failed to create endpoint for service {namespace}/{name}: {}",
                    error.message()
                );
                ctx.events
                    .record(&ep, "Warning", "FailedToCreateEndpoint", &message)
                    .await;
                return Err(error);
            }
        },
        Write::Update(ep) => match api.replace(&name, &params, &ep).await {
            Ok(_) => {}
            // Deleted meanwhile: the cache is behind, and its watch event wakes this again.
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Err(e) => {
                let error = write_error(e);
                if !error.is_conflict() {
                    let message = format!(
                        "Failed to update endpoint {namespace}/{name}: {}",
                        error.message()
                    );
                    ctx.events
                        .record(&ep, "Warning", "FailedToUpdateEndpoint", &message)
                        .await;
                }
                return Err(error);
            }
        },
    }
    Ok(Action::requeue(RESYNC))
}

/// What a refused write fails the reconcile with. An object the API server finds invalid
/// (422) is one made from the Service and its pods as they are, so retrying cannot help
/// until one of them changes (which wakes the Service anyway): it becomes
/// [`Error::Invalid`], which waits for that instead of backing off in vain. (A pod whose IP
/// the API refuses in endpoints, such as a loopback address, is such a case.)
pub(crate) fn write_error(error: kube::Error) -> Error {
    match error {
        kube::Error::Api(status) if status.code == 422 => Error::Invalid(status.message),
        other => Error::Api(other),
    }
}

/// The API server refused a create because the namespace is being deleted.
pub(crate) fn namespace_terminating(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}
