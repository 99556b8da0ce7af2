//! The node lifecycle controller (kube-controller-manager's `node-lifecycle-controller`) and
//! taint-based eviction ([`eviction`], its `taint-eviction-controller`).
//!
//! A node agent proves it is alive by renewing its Lease in `kube-node-lease` (every 10 s)
//! and posting its status (the Ready condition's lastHeartbeatTime). When neither has
//! happened for the grace period (`--node-monitor-grace-period`, 40 s; 60 s from creation
//! for a node that never posted Ready), this controller:
//!
//! 1. sets the node's Ready, MemoryPressure, DiskPressure and PIDPressure conditions to
//!    Unknown ("Kubelet stopped posting node status.") through `nodes/<name>/status`;
//! 2. taints it `node.kubernetes.io/unreachable` NoSchedule (the scheduler sends no new pod
//!    there) and NoExecute with the time it was added (for Ready=False, posted by a kubelet
//!    that is alive but not ready, `node.kubernetes.io/not-ready` instead), and removes them
//!    once its Ready condition is True again; the pressure, network and cordon NoSchedule
//!    taints follow their conditions the same way (upstream's TaintNodesByCondition);
//! 3. marks the Ready condition of the node's pods False, so EndpointSlices stop sending them
//!    traffic.
//!
//! [`eviction`] then deletes the pods of a NoExecute-tainted node that do not tolerate the
//! taint, at once or when their tolerationSeconds run out (every pod tolerates
//! not-ready/unreachable for 300 s unless it says otherwise: the DefaultTolerationSeconds
//! admission in `berth-api`'s pod defaults). The deletion is graceful, and on a node nobody
//! hears from nothing confirms it, so the pod object stays Terminating: a ReplicaSet makes a
//! replacement elsewhere, a StatefulSet does not (its identity may still be running there).
//!
//! As in upstream, when no node of any zone is Ready the cluster is taken to be cut off from
//! its nodes rather than the nodes being down, and no node gets a NoExecute taint (a small
//! zone mostly down gets no new ones); see [`health::Disruption`]. Upstream also limits how
//! many nodes per second get NoExecute taints (0.1/s); berth, with a handful of nodes at most,
//! does not.
//!
//! Shape: the shared run loop of [`crate::runtime`] over Nodes, with reflector caches of the
//! node Leases and of pods. The decisions are pure ([`health`]); `reconcile` is one
//! level-triggered pass over one node that writes the conditions, then the taints, then the
//! pods, each only when it differs, and asks to be run again the moment the node's grace
//! period would run out. A node's change wakes every node (whether a node may be tainted
//! depends on how many others are Ready), its Lease's change and its pods' changes wake it.

pub mod eviction;
pub mod health;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::Error;
use crate::error::Stored;
use crate::runtime::{self, Backoff, Events};
pub use health::Grace;

/// The component name on events, as upstream's.
pub const COMPONENT: &str = "node-controller";
/// Where node agents keep their Leases, named after their nodes.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A safety net for changes no event reports (upstream looks at every node every 5 s; berth
/// wakes at each deadline instead and looks again at least this often).
const RESYNC: Duration = Duration::from_secs(60);
/// Wake this much after a deadline, so the pass that wakes finds it passed.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// What every reconcile shares.
struct Context {
    client: Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    grace: Grace,
    /// When this controller started: no node is silent for longer than since then.
    since: Timestamp,
    node_events: Events<Node>,
    pod_events: Events<Pod>,
}

/// A reflector of the node Leases (only `kube-node-lease`).
pub(crate) fn lease_reflector(
    client: &Client,
) -> (
    Store<Lease>,
    impl futures::Stream<Item = Result<watcher::Event<Lease>, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store::<Lease>();
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    (store, events)
}

/// The node a pod is bound to, as a reconcile request.
pub(crate) fn node_of(pod: &Pod) -> Option<ObjectRef<Node>> {
    let name = pod.spec.as_ref()?.node_name.as_deref()?;
    (!name.is_empty()).then(|| ObjectRef::new(name))
}

/// The pods the cache shows bound to `node`.
pub(crate) fn pods_on(pods: &Store<Pod>, node: &str) -> Vec<Arc<Pod>> {
    pods.state()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .collect()
}

/// How long from `now` until `at` (zero if it has passed).
pub(crate) fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, grace: Grace, stop: impl Future<Output = ()>) {
    let (nodes, node_events) = runtime::reflector::<Node>(&client);
    let (leases, lease_events) = lease_reflector(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        nodes: nodes.clone(),
        leases,
        pods: pods.clone(),
        grace,
        since: Timestamp::now(),
        node_events: Events::new(client.clone(), COMPONENT, nodes.clone()),
        pod_events: Events::new(client, COMPONENT, pods),
    });
    let every = nodes.clone();
    let triggers = vec![
        runtime::trigger_mapped(node_events, move |_: Node| {
            every
                .state()
                .iter()
                .map(|n| ObjectRef::from_obj(n.as_ref()))
                .collect::<Vec<_>>()
        }),
        runtime::trigger_mapped(lease_events, |lease: Lease| {
            lease
                .metadata
                .name
                .map(|name| ObjectRef::<Node>::new(&name))
        }),
        runtime::trigger_mapped(pod_events, |pod: Pod| node_of(&pod)),
    ];
    runtime::run(
        "nodelifecycle",
        reconcile,
        context,
        nodes,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// The one reconcile: the node's conditions, then its taints, then its pods' readiness, as
/// [`health`] decides them now; again when its grace period would run out.
async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    runtime::synced(&ctx.nodes, "node").await?;
    runtime::synced(&ctx.leases, "lease").await?;
    runtime::synced(&ctx.pods, "pod").await?;
    let name = Stored::new("Node", &node.metadata).name()?.to_string();
    let now = Timestamp::now();
    let lease_of = |name: &str| {
        ctx.leases
            .get(&ObjectRef::new(name).within(LEASE_NAMESPACE))
    };
    let deadline = health::deadline(&node, lease_of(&name).as_deref(), ctx.since, ctx.grace);

    // Whether a node may be tainted depends on the others: each node's Ready status as this
    // pass would leave it.
    let all = ctx.nodes.state();
    let disruption = health::Disruption::of(all.iter().map(|n| {
        let lease = n.metadata.name.as_deref().and_then(lease_of);
        let silent = now > health::deadline(n, lease.as_deref(), ctx.since, ctx.grace);
        (
            health::zone(n),
            !silent && health::ready_status(n) == Some("True"),
        )
    }));

    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut current = (*node).clone();
    if let Some(conditions) = health::silent_conditions(&current, deadline, now) {
        let was_ready = health::ready_status(&current) == Some("True");
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": resource_version(&current)?},
            "status": {"conditions": conditions},
        });
        current = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(node = %name, "node stopped posting its status; its conditions are Unknown");
        if was_ready {
            let message = format!("Node {name} status is now: NodeNotReady");
            ctx.node_events
                .record(&current, "Normal", "NodeNotReady", &message)
                .await;
        }
    }

    if let Some(taints) = health::taints(&current, &disruption, now) {
        let value = if taints.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(&taints)?
        };
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": resource_version(&current)?},
            "spec": {"taints": value},
        });
        current = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let keys: Vec<String> = taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        tracing::info!(node = %name, taints = ?keys, "node taints updated");
    }

    for pod in pods_on(&ctx.pods, &name) {
        if health::marks_not_ready(&current, &pod) {
            mark_not_ready(&ctx, &pod, now).await?;
        }
    }

    let next = if now <= deadline {
        until(deadline, now) + DEADLINE_SLACK
    } else {
        RESYNC
    };
    Ok(Action::requeue(next.min(RESYNC)))
}

/// Sets the pod's Ready condition False (its reason and message kept, its transition now),
/// as upstream's `MarkPodsNotReady`, with the resourceVersion it was decided from.
async fn mark_not_ready(ctx: &Context, pod: &Pod, now: Timestamp) -> Result<(), Error> {
    let stored = Stored::new("Pod", &pod.metadata);
    let namespace = stored.namespace()?;
    let name = stored.name()?;
    let version = stored.resource_version()?;
    // A strategic merge patch merges conditions by type: only Ready changes.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": version},
        "status": {"conditions": [{
            "type": "Ready",
            "status": "False",
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        }]},
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %format!("{namespace}/{name}"), "pod marked not ready: its node is not ready");
            ctx.pod_events
                .record(pod, "Warning", "NodeNotReady", "Node is not ready")
                .await;
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn resource_version(node: &Node) -> Result<&str, Error> {
    Stored::new("Node", &node.metadata).resource_version()
}
