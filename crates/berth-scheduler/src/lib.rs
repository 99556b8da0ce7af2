//! berth's scheduler: binds pending pods to nodes. It is a client of the API server like any
//! other (kube-rs over loopback), so it would work unchanged from another machine.
//!
//! Where to start: [`Scheduler::run`] keeps two reflector caches (nodes and pods) and runs
//! scheduling passes; a pass calls [`Scheduler::reconcile`] — the one reconcile — for each
//! pending pod that is due. The decision itself has no I/O: [`schedule::schedule`] runs the
//! [`filter::Filter`]s over a [`snapshot::Snapshot`] and scores what is left. A pod placed on a
//! node is assumed there at once (later decisions of the pass see its requests), and the pass
//! then sends its bindings, up to [`BIND_CONCURRENCY`] at a time: each is a durable write, and
//! sent one after another they would cap a burst at one fsync per pod.
//!
//! Why reflectors and a loop rather than `kube::runtime::Controller`: scheduling decisions must
//! be made one after another against one view of the cluster (two pods must not both take a
//! node's last slot), and any change to a node or a pod may make *every* pending pod
//! schedulable. A Controller reconciles objects concurrently and only the object that changed;
//! bending it to this would need concurrency 1 plus a reconcile-all trigger on every event. A
//! pass over the caches is that, written plainly; [`queue`] holds the per-pod back-off.
//!
//! Level-triggered: a pass reads the caches as they are now; a pod is re-evaluated whenever
//! the nodes, the bound pods or its own spec differ from what it last failed against, and
//! otherwise when its back-off (1 s doubling to 10 s) runs out.
//!
//! - [`filter`]: the predicates and the [`filter::Filter`] extension point (volumes come next);
//! - [`schedule`]: filter, score (least allocated, ties by name), the "0/N nodes" message;
//! - [`snapshot`]: nodes with what is requested on them, effective pod requests;
//! - [`volumes`]: claims, volumes and classes: where a pod's claims let it go, and the
//!   WaitForFirstConsumer hand-off (the selected-node annotation, binding once claims are Bound);
//! - [`quantity`]: `500m`, `128Mi`, `1e3` as integers;
//! - [`queue`]: when to look at a pending pod again;
//! - [`events`]: core/v1 Events with repeat counting.

pub mod error;
pub mod events;
pub mod filter;
pub use berth_client::quantity;
pub mod queue;
pub mod schedule;
pub mod snapshot;
#[cfg(test)]
mod testing;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_client::cache::{AbortOnDrop, watched};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use tokio::sync::Notify;

pub use error::Error;
use filter::Filter;
use queue::Backoff;
use snapshot::Snapshot;

/// Bindings a pass has in flight at once (kube-scheduler binds in goroutines, unbounded).
pub const BIND_CONCURRENCY: usize = 16;

/// What [`Scheduler::reconcile`] decided for a pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// The pod goes to this node: it is assumed there; the binding is still to be sent.
    Bind(String),
    /// Not now: no node fits, or its claims are still being bound to the chosen node.
    Wait,
}

/// The scheduler: its filters, and what it remembers between passes.
pub struct Scheduler {
    client: Client,
    filters: Vec<Box<dyn Filter>>,
    backoff: Backoff,
    recorder: events::Recorder,
    /// uid → node of pods bound by this scheduler that the pod cache does not show bound yet.
    assumed: HashMap<String, String>,
}

impl Scheduler {
    /// A scheduler with [`filter::default_filters`].
    pub fn new(client: Client) -> Scheduler {
        Scheduler {
            recorder: events::Recorder::new(client.clone()),
            client,
            filters: filter::default_filters(),
            backoff: Backoff::default(),
            assumed: HashMap::new(),
        }
    }

    /// Adds a filter after the default ones (e.g. volume node affinity).
    #[must_use]
    pub fn with_filter(mut self, filter: Box<dyn Filter>) -> Scheduler {
        self.filters.push(filter);
        self
    }

    /// Watches nodes and pods and schedules until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let changed = Arc::new(Notify::new());
        let (nodes, node_task) =
            watched::<Node>(Api::all(self.client.clone()), changed.clone(), "scheduler");
        let (pods, pod_task) =
            watched::<Pod>(Api::all(self.client.clone()), changed.clone(), "scheduler");
        let (claims, claim_task) = watched::<PersistentVolumeClaim>(
            Api::all(self.client.clone()),
            changed.clone(),
            "scheduler",
        );
        let (volumes, volume_task) = watched::<PersistentVolume>(
            Api::all(self.client.clone()),
            changed.clone(),
            "scheduler",
        );
        let (classes, class_task) =
            watched::<StorageClass>(Api::all(self.client.clone()), changed.clone(), "scheduler");
        // Abort the watch tasks however this function ends.
        let _tasks = AbortOnDrop(vec![
            node_task,
            pod_task,
            claim_task,
            volume_task,
            class_task,
        ]);
        let storage = Storage {
            claims,
            volumes,
            classes,
        };
        tokio::pin!(shutdown);

        let ready = async {
            nodes
                .wait_until_ready()
                .await
                .map_err(|_| Error::CacheNotReady("node"))?;
            pods.wait_until_ready()
                .await
                .map_err(|_| Error::CacheNotReady("pod"))?;
            storage.wait_until_ready().await
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            ready = ready => ready?,
        }
        tracing::info!("scheduler started");

        loop {
            self.pass(&nodes, &pods, &storage).await;
            // With nothing backing off, only a change wakes the scheduler.
            let wake = self
                .backoff
                .next_due()
                .map_or(Instant::now() + Duration::from_secs(3600), |due| due);
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = changed.notified() => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// One scheduling pass over every pending pod that is due, highest priority and oldest first.
    async fn pass(&mut self, nodes: &Store<Node>, pods: &Store<Pod>, storage: &Storage) {
        let nodes = nodes.state();
        let pods = pods.state();
        let mut volumes = volumes::Volumes::new(
            &storage.claims.state(),
            &storage.volumes.state(),
            &storage.classes.state(),
        );

        // Assumed pods leave the list once the cache shows them bound, or gone.
        let by_uid: HashMap<&str, &Pod> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, p.as_ref())))
            .collect();
        self.assumed.retain(|uid, _| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| schedule::is_pending(p))
        });

        let mut pending: Vec<&Pod> = pods
            .iter()
            .map(Arc::as_ref)
            .filter(|p| schedule::is_pending(p))
            .filter(|p| {
                p.metadata
                    .uid
                    .as_ref()
                    .is_some_and(|uid| !self.assumed.contains_key(uid))
            })
            .collect();
        pending.sort_by_key(|p| {
            (
                std::cmp::Reverse(p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.namespace.clone(),
                p.metadata.name.clone(),
            )
        });
        // What is remembered about pods that are no longer pending goes: back-offs and event
        // repeat counts.
        let pending_uids: HashSet<String> = pending
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        self.backoff.retain(|uid| pending_uids.contains(uid));
        self.recorder.retain(pending_uids);

        for pod in pods.iter().filter(|p| !snapshot::is_terminated(p)) {
            let on_node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            let assumed = pod
                .metadata
                .uid
                .as_ref()
                .is_some_and(|uid| self.assumed.contains_key(uid));
            if on_node || assumed {
                volumes.add_user(pod);
            }
        }
        let world = world_fingerprint(&nodes, &pods, &volumes);
        let mut snapshot = Snapshot::new(&nodes, &pods, &self.assumed);
        snapshot.volumes = volumes;
        let mut bindings = Vec::new();
        for pod in pending {
            let fingerprint = pod_fingerprint(world, pod);
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if !self.backoff.is_due(&uid, fingerprint, Instant::now()) {
                continue;
            }
            match self.reconcile(pod, &mut snapshot).await {
                Ok(Placement::Bind(node)) => bindings.push((pod.clone(), uid, fingerprint, node)),
                Ok(Placement::Wait) => self.backoff.failed(&uid, fingerprint, Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "scheduling failed; will retry");
                    self.backoff.failed(&uid, fingerprint, Instant::now());
                }
            }
        }
        // Owned data and a hand-fed FuturesUnordered: a stream combinator over closures that
        // borrow makes the pass's future fail the Send check of the task that runs it.
        let mut queue = bindings.into_iter();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut results = Vec::new();
        loop {
            while in_flight.len() < BIND_CONCURRENCY {
                let Some((pod, uid, fingerprint, node)) = queue.next() else {
                    break;
                };
                let client = self.client.clone();
                in_flight.push(async move {
                    let result = bind(&client, &pod, &node).await;
                    (pod, uid, fingerprint, node, result)
                });
            }
            match in_flight.next().await {
                Some(result) => results.push(result),
                None => break,
            }
        }
        for (pod, uid, fingerprint, node, result) in results {
            match result {
                Ok(()) => {
                    self.backoff.forget(&uid);
                    self.assumed.insert(uid, node.clone());
                    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
                    let name = pod.metadata.name.as_deref().unwrap_or_default();
                    tracing::info!(pod = %format!("{namespace}/{name}"), %node, "scheduled");
                    let message = format!("Successfully assigned {namespace}/{name} to {node}");
                    self.recorder.record(&pod, "Normal", "Scheduled", &message);
                }
                // Bound or being deleted meanwhile: the cache will show it and the pod stops
                // being pending; nothing to undo.
                Err(Error::Bind {
                    source: kube::Error::Api(status),
                    ..
                }) if status.is_conflict() => self.backoff.forget(&uid),
                Err(e) => {
                    // The pass's snapshot still counts the pod on the node, which only makes the
                    // rest of this pass more careful; the next pass starts from the caches.
                    tracing::warn!(error = %e, "binding failed; will retry");
                    self.backoff.failed(&uid, fingerprint, Instant::now());
                }
            }
        }
    }

    /// The one reconcile: place `pod` (pending, as the cache shows it) or say why it cannot be
    /// placed. A placed pod is assumed on its node in `snapshot`; its binding is the caller's
    /// to send ([`bind`]).
    pub async fn reconcile(
        &mut self,
        pod: &Pod,
        snapshot: &mut Snapshot,
    ) -> Result<Placement, Error> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match schedule::schedule(pod, snapshot, &self.filters) {
            Ok(node) if !snapshot.volumes.all_bound(pod) => {
                // PreBind: the claims learn the node, and the pod is bound by the pass that
                // sees them Bound (the claims' changes wake it).
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(self.client.clone(), &namespace);
                for claim in snapshot.volumes.claims_to_select(pod, &node) {
                    let patch = serde_json::json!({"metadata": {"annotations": {
                        volumes::SELECTED_NODE: node}}});
                    claims
                        .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|source| Error::SelectNode {
                            claim: format!("{namespace}/{claim}"),
                            node: node.clone(),
                            source,
                        })?;
                    tracing::info!(claim = %format!("{namespace}/{claim}"), %node, "selected a node for a claim");
                }
                Ok(Placement::Wait)
            }
            Ok(node) => {
                snapshot.assume(pod, &node);
                Ok(Placement::Bind(node))
            }
            Err(fit) => {
                let message = fit.to_string();
                tracing::debug!(pod = %format!("{namespace}/{name}"), %message, "unschedulable");
                if let Some(conditions) = unschedulable_conditions(pod, &message) {
                    let patch = serde_json::json!({"status": {"conditions": conditions}});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|source| Error::Status {
                            pod: format!("{namespace}/{name}"),
                            source,
                        })?;
                }
                self.recorder
                    .record(pod, "Warning", "FailedScheduling", &message);
                Ok(Placement::Wait)
            }
        }
    }
}

/// Binds `pod` to `node` through the pods/binding subresource (for `pod`'s uid only).
async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), Error> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    Api::<Pod>::namespaced(client.clone(), &namespace)
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map(|_| ())
        .map_err(|source| Error::Bind {
            pod: format!("{namespace}/{name}"),
            node: node.to_string(),
            source,
        })
}

/// The pod's conditions with PodScheduled=False/Unschedulable and `message`, or `None` when
/// the pod already says exactly that (so an unchanged verdict writes nothing).
pub fn unschedulable_conditions(pod: &Pod, message: &str) -> Option<Vec<PodCondition>> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let existing = conditions.iter().find(|c| c.type_ == "PodScheduled");
    if existing.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    }) {
        return None;
    }
    // lastTransitionTime moves only when the status does.
    let transition = existing
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(k8s_openapi::jiff::Timestamp::now()));
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.into()),
        last_transition_time: Some(transition),
        ..Default::default()
    });
    Some(conditions)
}

/// What a failed verdict depended on outside the pod: each node as it is now (its
/// resourceVersion) and which live pods are bound where.
fn world_fingerprint(nodes: &[Arc<Node>], pods: &[Arc<Pod>], volumes: &volumes::Volumes) -> u64 {
    let mut nodes: Vec<_> = nodes
        .iter()
        .map(|n| (&n.metadata.name, &n.metadata.resource_version))
        .collect();
    nodes.sort();
    let mut bound: Vec<_> = pods
        .iter()
        .filter(|p| !snapshot::is_terminated(p))
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.as_ref()?;
            Some((&p.metadata.uid, node))
        })
        .collect();
    bound.sort();
    let mut h = DefaultHasher::new();
    nodes.hash(&mut h);
    bound.hash(&mut h);
    volumes.versions().hash(&mut h);
    h.finish()
}

/// The storage caches: claims, volumes and classes.
struct Storage {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

impl Storage {
    async fn wait_until_ready(&self) -> Result<(), Error> {
        let not_ready = |what| move |_| Error::CacheNotReady(what);
        self.claims
            .wait_until_ready()
            .await
            .map_err(not_ready("persistentvolumeclaim"))?;
        self.volumes
            .wait_until_ready()
            .await
            .map_err(not_ready("persistentvolume"))?;
        self.classes
            .wait_until_ready()
            .await
            .map_err(not_ready("storageclass"))
    }
}

/// The world fingerprint combined with the pod's spec, which is all a verdict depends on.
fn pod_fingerprint(world: u64, pod: &Pod) -> u64 {
    let mut h = DefaultHasher::new();
    world.hash(&mut h);
    serde_json::to_string(&pod.spec)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    #[test]
    fn unschedulable_condition_is_written_only_when_it_changes() {
        let mut p = pod("p");
        let first = unschedulable_conditions(&p, "0/1 nodes are available: 1 Too many pods.")
            .expect("a new condition");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].reason.as_deref(), Some("Unschedulable"));
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(first.clone()),
            ..Default::default()
        });
        assert_eq!(
            unschedulable_conditions(&p, "0/1 nodes are available: 1 Too many pods."),
            None
        );
        let changed = unschedulable_conditions(&p, "no nodes available to schedule pods")
            .expect("the message changed");
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed[0].last_transition_time, first[0].last_transition_time,
            "still False, so the transition time stays"
        );
    }

    #[test]
    fn fingerprints_ignore_pod_status_but_not_spec() {
        let world = world_fingerprint(&[], &[], &Default::default());
        let p = pod("p");
        let mut with_status = p.clone();
        with_status.status = Some(Default::default());
        assert_eq!(
            pod_fingerprint(world, &p),
            pod_fingerprint(world, &with_status)
        );
        let mut respec = p.clone();
        respec.spec.as_mut().expect("spec").node_selector = Some(Default::default());
        assert_ne!(pod_fingerprint(world, &p), pod_fingerprint(world, &respec));
    }
}
