//! What the provisioner, deleter and resizer share around their one `reconcile`: reflector
//! caches, mapping one kind's events to the objects they concern, per-object back-off,
//! events, and the loop that runs the reconciles. The shape of berth-controllers' runtime
//! (kube-runtime's `applier` fed by our own reflectors, so a reconcile always reads a cache
//! that has seen what woke it), kept here rather than shared because these controllers run
//! in the node agent's process, not under the controller lease, and fail with
//! [`StorageError`].

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_client::events::Recorder;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::controller::{self, Action, Config, ReconcileRequest, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::StorageError;

/// How many objects of one kind are reconciled at once; provisioning blocks on mkfs, so a
/// burst of claims queues rather than running every mkfs at once on a small machine.
pub const CONCURRENCY: u16 = 2;

/// Back-off after a failure: this, doubled per consecutive failure, up to [`MAX_BACKOFF`]
/// (external-provisioner retries from 1 s up to 5 min).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One source of reconcile requests for objects of kind `K`.
pub type Triggers<K> = BoxStream<'static, Result<ReconcileRequest<K>, watcher::Error>>;

/// A cache of every `K`, and the watch events that fill it (poll them, as [`Triggers`]).
pub fn reflector<K>(
    client: &Client,
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    (store, events)
}

/// Requests a reconcile of each object the reflector `events` touch.
pub fn trigger_self<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> Triggers<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + 'static,
{
    controller::trigger_self(events.touched_objects(), ()).boxed()
}

/// Requests a reconcile of the objects `map` names for each object the reflector `events`
/// touch.
pub fn trigger_mapped<K, D, I>(
    events: impl Stream<Item = Result<watcher::Event<D>, watcher::Error>> + Send + 'static,
    map: impl Fn(D) -> I + Send + 'static,
) -> Triggers<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + 'static,
    D: Send + 'static,
    I: IntoIterator<Item = ObjectRef<K>> + 'static,
    I::IntoIter: Send + 'static,
{
    controller::trigger_with(events.touched_objects(), map).boxed()
}

/// Waits until `store` holds its first listing, so a reconcile never acts on an empty cache.
pub async fn synced<K>(store: &Store<K>, what: &'static str) -> Result<(), StorageError>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .await
        .map_err(|_| StorageError::CacheStopped(what))
}

/// Runs blocking storage work (mkfs, mounts, removing trees) off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Task(e.to_string()))?
}

/// Exponential back-off per object.
#[derive(Default)]
struct Backoff {
    failures: Mutex<HashMap<(Option<String>, String), u32>>,
}

impl Backoff {
    fn failed(&self, key: (Option<String>, String)) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key).or_insert(0);
        let delay = FIRST_BACKOFF
            .saturating_mul(1u32.checked_shl(*count).unwrap_or(u32::MAX))
            .min(MAX_BACKOFF);
        *count = count.saturating_add(1);
        delay
    }

    fn reset(&self, key: &(Option<String>, String)) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Events about one controller's objects, as one component on this node. A failure to
/// record is logged, never a reason to fail a reconcile.
pub struct Events<K: Resource<DynamicType = ()> + Clone + 'static> {
    recorder: tokio::sync::Mutex<Recorder>,
    /// Repeat counts of objects this cache no longer shows are forgotten.
    subjects: Store<K>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Events<K> {
    pub fn new(client: Client, component: &str, node: &str, subjects: Store<K>) -> Events<K> {
        Events {
            recorder: tokio::sync::Mutex::new(Recorder::new(client, component, Some(node))),
            subjects,
        }
    }

    /// Records `reason`/`message` (type Normal or Warning) about `object`.
    pub async fn record(&self, object: &K, type_: &str, reason: &str, message: &str) {
        let mut reference = object.object_ref(&());
        reference.resource_version = object.meta().resource_version.clone();
        let live: HashSet<String> = self
            .subjects
            .state()
            .iter()
            .filter_map(|o| o.meta().uid.clone())
            .collect();
        let mut recorder = self.recorder.lock().await;
        recorder.retain(|uid| live.contains(uid));
        if let Err(e) = recorder.record(&reference, type_, reason, message).await {
            tracing::warn!(error = %e, "could not record event");
        }
    }
}

/// Runs `reconcile` for every object of `store` that `triggers` name (and whenever a
/// reconcile asks to be requeued), until `stop` resolves. A failure is retried with
/// back-off per object, except one only a change of the object can cure, which waits.
pub async fn run<K, Ctx, Fut>(
    controller: &'static str,
    mut reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    context: Arc<Ctx>,
    store: Store<K>,
    triggers: Vec<Triggers<K>>,
    stop: impl Future<Output = ()>,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, StorageError>> + Send + 'static,
{
    let backoff = Arc::new(Backoff::default());
    let failed = backoff.clone();
    let error_policy = move |object: Arc<K>, error: &StorageError, _: Arc<Ctx>| {
        let meta = object.meta();
        let name = meta.name.clone().unwrap_or_default();
        if error.needs_change() {
            tracing::warn!(controller, object = name, %error, "left alone until it changes");
            return Action::await_change();
        }
        let delay = failed.failed((meta.namespace.clone(), name.clone()));
        if error.is_stale() {
            tracing::debug!(controller, object = name, %error, ?delay, "stale cache; retrying");
        } else {
            tracing::warn!(controller, object = name, %error, ?delay, "reconcile failed; retrying");
        }
        Action::requeue(delay)
    };
    let results = applier(
        move |object, ctx| Box::pin(reconcile(object, ctx)),
        error_policy,
        context,
        store,
        futures::stream::select_all(triggers),
        Config::default().concurrency(CONCURRENCY),
    )
    .for_each(|result| {
        match result {
            Ok((object, _)) => backoff.reset(&(object.namespace, object.name)),
            Err(controller::Error::ObjectNotFound(object)) => {
                backoff.reset(&(object.namespace, object.name));
            }
            Err(controller::Error::ReconcilerFailed(..)) => {}
            Err(e) => tracing::warn!(controller, error = %e, "controller queue failed"),
        }
        futures::future::ready(())
    });
    tokio::select! {
        () = stop => {}
        () = results => {}
    }
}
