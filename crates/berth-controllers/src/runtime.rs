//! The machinery the typed controllers (ReplicaSet, Deployment, namespace) share around their
//! one `reconcile`: reflector caches, mapping a dependent's change to the controller it
//! concerns, back-off, event recording, and the loop that runs the reconciles.
//!
//! Why kube-runtime's [`applier`] (the engine inside `kube::runtime::Controller`: a queue per
//! object, no two reconciles of one object at once, requeues) fed by our own reflectors, not
//! `Controller` with `.owns()` and `.watches()`: those open watches of their own, apart from
//! the caches the reconcile reads, so a reconcile woken by a dependent's event could read a
//! cache that has not seen that event yet, find nothing to do, and never look again. Here each
//! reflector updates its cache first and then maps the event to the objects it concerns
//! ([`controllers_of`]), so a reconcile always sees at least what woke it. Mapping an orphan
//! to the controllers whose selector matches it also needs the controllers' cache, which
//! `.watches()` cannot reach. (Sharing one pod cache between controllers would need
//! kube-runtime's unstable shared-store feature; each controller keeps its own.)

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_client::events::Recorder;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::runtime::controller::{self, Action, Config, ReconcileRequest, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::{Error, pods};

/// How many objects of one kind are reconciled at once (upstream's default of 5 concurrent
/// syncs for ReplicaSets and Deployments); more only queue, so a burst of changes cannot open
/// an unbounded number of requests against the API server.
pub const CONCURRENCY: u16 = 5;

/// An object's namespace and name: what the run loop keys its back-off by.
pub type ObjectKey = (Option<String>, String);

/// One source of reconcile requests for objects of kind `K`.
pub type Triggers<K> = BoxStream<'static, Result<ReconcileRequest<K>, watcher::Error>>;

/// A cache of every `K` in the cluster, and the stream of watch events that fills it; the
/// events must be polled (by turning them into [`Triggers`]) for the cache to fill.
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

/// The controllers of kind `O` that a change to `dependent` concerns: its controller if that
/// is an `O`; for an orphan, every `O` in its namespace whose selector selects it (one of
/// them may adopt it).
pub fn controllers_of<O>(
    dependent: &ObjectMeta,
    owners: &Store<O>,
    selector: impl Fn(&O) -> Option<&LabelSelector>,
) -> Vec<ObjectRef<O>>
where
    O: Resource<DynamicType = ()> + Clone,
{
    let Some(namespace) = dependent.namespace.as_deref() else {
        return Vec::new();
    };
    if let Some(owner) = pods::controller_of(dependent) {
        let group = owner.api_version.split_once('/').map_or("", |(g, _)| g);
        let is_owner_kind = owner.kind == O::kind(&()) && group == O::group(&());
        return if is_owner_kind {
            vec![ObjectRef::new(&owner.name).within(namespace)]
        } else {
            Vec::new()
        };
    }
    owners
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .filter(|o| {
            pods::selector(selector(o), &O::kind(&()))
                .is_ok_and(|s| pods::selects(&s, dependent.labels.as_ref()))
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Exponential back-off per key: `first` after the first consecutive failure, doubling up
/// to `max`, back to `first` once the key succeeds.
pub struct Backoff<Key> {
    first: Duration,
    max: Duration,
    failures: Mutex<HashMap<Key, u32>>,
}

impl<Key: Hash + Eq> Backoff<Key> {
    pub fn new(first: Duration, max: Duration) -> Backoff<Key> {
        Backoff {
            first,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// One more consecutive failure of `key`: how long to wait before trying it again.
    pub fn failed(&self, key: Key) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key).or_insert(0);
        let delay = self
            .first
            .saturating_mul(1u32.checked_shl(*count).unwrap_or(u32::MAX))
            .min(self.max);
        *count = count.saturating_add(1);
        delay
    }

    /// `key` succeeded (or is gone): its next failure starts from `first` again.
    pub fn reset<Q>(&self, key: &Q)
    where
        Key: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Events about the objects one controller reconciles, recorded as one component. A failure
/// to record is logged, never a reason to fail a reconcile.
pub struct Events<K: Resource<DynamicType = ()> + Clone + 'static> {
    recorder: tokio::sync::Mutex<Recorder>,
    /// The controller's cache of its objects: the recorder's repeat counts of objects it no
    /// longer shows are forgotten, so they do not pile up as objects come and go.
    subjects: Store<K>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Events<K> {
    pub fn new(client: Client, component: &str, subjects: Store<K>) -> Events<K> {
        Events {
            recorder: tokio::sync::Mutex::new(Recorder::new(client, component, None)),
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

/// Waits until the reflector cache `store` holds its first listing, so a reconcile never
/// acts on an empty cache; `what` names it in the error when the cache stops first.
pub async fn synced<K>(store: &Store<K>, what: &'static str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheStopped(what))
}

/// Runs `reconcile` for every object of `store` that `triggers` name (and whenever a
/// reconcile asks to be requeued), at most [`CONCURRENCY`] at once, until `stop` resolves or
/// the triggers end. A failed reconcile is retried after `backoff` (per object), except one
/// that only a change of the object can cure ([`Error::needs_change`]), which waits for it.
pub async fn run<K, Ctx, Fut>(
    controller: &'static str,
    mut reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    context: Arc<Ctx>,
    store: Store<K>,
    triggers: Vec<Triggers<K>>,
    backoff: Backoff<ObjectKey>,
    stop: impl Future<Output = ()>,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let backoff = Arc::new(backoff);
    let failed = backoff.clone();
    let error_policy = move |object: Arc<K>, error: &Error, _: Arc<Ctx>| {
        let name = object.meta().name.as_deref().unwrap_or("").to_string();
        if error.needs_change() {
            tracing::warn!(controller, object = name, %error, "left alone until it changes");
            return Action::await_change();
        }
        let meta = object.meta();
        let delay = failed.failed((meta.namespace.clone(), name.clone()));
        if error.is_conflict() || error.is_not_found() {
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
            // Logged by the error policy, with its back-off.
            Err(controller::Error::ReconcilerFailed(..)) => {}
            // The watcher backs off and resumes by itself.
            Err(e) => tracing::warn!(controller, error = %e, "controller queue failed"),
        }
        futures::future::ready(())
    });
    tokio::select! {
        () = stop => {}
        () = results => {}
    }
}

/// Requests a reconcile of each object the reflector `events` touch (changed or deleted).
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(name: &str, namespace: &str, app: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        }
    }

    fn replica_sets(sets: &[(&str, &str, &str)]) -> Store<ReplicaSet> {
        let (store, mut writer) = reflector::store::<ReplicaSet>();
        for (name, namespace, app) in sets {
            let rs = ReplicaSet {
                metadata: meta(name, namespace, app),
                spec: Some(ReplicaSetSpec {
                    selector: LabelSelector {
                        match_labels: Some([("app".to_string(), app.to_string())].into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                status: None,
            };
            writer.apply_watcher_event(&watcher::Event::Apply(rs));
        }
        store
    }

    fn names(refs: Vec<ObjectRef<ReplicaSet>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn a_dependent_wakes_its_controller_or_as_an_orphan_every_selecting_owner() {
        let store = replica_sets(&[
            ("web-a", "ns", "web"),
            ("web-b", "ns", "web"),
            ("db", "ns", "db"),
            ("web-elsewhere", "other", "web"),
        ]);
        fn selector(rs: &ReplicaSet) -> Option<&LabelSelector> {
            rs.spec.as_ref().map(|s| &s.selector)
        }
        let orphan = meta("pod", "ns", "web");
        assert_eq!(
            names(controllers_of(&orphan, &store, selector)),
            ["web-a", "web-b"]
        );

        let reference = |kind: &str, api_version: &str| OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "web-b".into(),
            uid: "uid-web-b".into(),
            controller: Some(true),
            ..Default::default()
        };
        let mut owned = Pod {
            metadata: meta("pod", "ns", "web"),
            ..Default::default()
        };
        owned.metadata.owner_references = Some(vec![reference("ReplicaSet", "apps/v1")]);
        assert_eq!(
            names(controllers_of(&owned.metadata, &store, selector)),
            ["web-b"]
        );
        owned.metadata.owner_references = Some(vec![reference("ReplicaSet", "example.com/v1")]);
        assert!(controllers_of(&owned.metadata, &store, selector).is_empty());
    }

    #[test]
    fn backoff_doubles_to_its_maximum_and_starts_over_after_a_success() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..5).map(|_| backoff.failed("a".to_string())).collect();
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5]);
        assert_eq!(backoff.failed("b".to_string()), Duration::from_secs(1));
        backoff.reset("a");
        assert_eq!(backoff.failed("a".to_string()), Duration::from_secs(1));
    }
}
