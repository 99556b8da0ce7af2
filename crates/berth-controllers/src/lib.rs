//! berth's controllers: the reconcile loops that turn ReplicaSets and Deployments into pods,
//! publish the pods behind each Service, delete what lost its owner, empty namespaces
//! being deleted, and bind persistent volume claims to volumes. Like the scheduler and the node agent they are clients of the API server
//! (kube-rs over loopback), so the same code would drive any Kubernetes API.
//!
//! Where to start: [`run`] campaigns for the controller lease ([`leader`]) and, while this
//! process holds it, runs every controller; losing the lease (or berth stopping) stops them
//! all. Each controller is one module with one `reconcile` function in kube-runtime's shape:
//! level-triggered (it reads the world as it is now, never the event that woke it),
//! idempotent (running it twice changes nothing the second time) and requeued with back-off
//! when it fails.
//!
//! - [`replicaset`]: pods to match `spec.replicas`, adoption and release, status;
//! - [`deployment`]: ReplicaSets per template, rolling and recreate updates, revisions,
//!   progress conditions;
//! - [`endpointslice`]: the EndpointSlices of each Service with a selector (its pods'
//!   addresses, readiness and ports);
//! - [`endpoints`]: the legacy Endpoints object of each Service with a selector;
//! - [`servicelb`]: the load-balancer ingress of each LoadBalancer Service without a class
//!   (the Ready Nodes' InternalIP addresses, as k3s's ServiceLB);
//! - [`gc`]: ownerReferences-driven deletion (background, foreground, orphan);
//! - [`namespace`]: emptying a Terminating namespace and finalizing it;
//! - [`statefulset`]: pods with stable names, hostnames and claims per ordinal, ordered or
//!   parallel, rolling and on-delete updates through ControllerRevisions, claim retention;
//! - [`persistentvolume`]: binding claims to volumes, both sides' phases, the hand-off to
//!   provisioners and reclaim;
//! - [`protection`]: the pvc-protection and pv-protection finalizers, removed once deleting
//!   is safe;
//! - [`nodelifecycle`]: nodes that stop heartbeating go Unknown and get the unreachable
//!   taints, their pods lose readiness; [`nodelifecycle::eviction`] deletes the pods of
//!   NoExecute-tainted nodes that do not tolerate it (taint-based eviction);
//! - [`nodeipam`]: each node's pod CIDR, a subnet of the cluster CIDR (`--allocate-node-cidrs`);
//!
//! What they share:
//!
//! - [`runtime`]: reflector caches, event-to-owner mapping, back-off, events, the run loop;
//! - [`claim`]: adoption and release by selector and controller reference;
//! - [`expectations`]: what a controller has asked for and not yet seen in its cache;
//! - [`pods`]: pod readiness and availability, controller references, template hashes;
//! - [`resources`]: the resource types the garbage collector and namespace controller cover;
//! - [`error`]: what a reconcile fails with, and which failures are worth retrying.

pub mod claim;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod error;
pub mod expectations;
pub mod gc;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod pods;
pub mod protection;
pub mod replicaset;
pub mod resources;
pub mod runtime;
pub mod servicelb;
pub mod statefulset;

use std::future::Future;

use kube::Client;
use tokio::sync::watch;

pub use error::Error;

/// What the controllers can be told (kube-controller-manager's flags of the same meaning).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// How long a node may go without heartbeats before it counts as unreachable
    /// (`--node-monitor-grace-period`, 40 s; `--node-startup-grace-period`, 60 s).
    pub node_grace: nodelifecycle::Grace,
    /// The cluster CIDR cut into node subnets (`--cluster-cidr`, `--node-cidr-mask-size`):
    /// when set, Nodes without a podCIDR get one (`--allocate-node-cidrs`).
    pub node_cidrs: Option<nodeipam::Range>,
}

/// Runs every controller while this process holds the controller lease, until `stop`
/// resolves. `identity` names this process in the lease (see [`leader::identity`]).
pub async fn run(client: Client, identity: String, stop: impl Future<Output = ()>) {
    run_with(client, identity, Config::default(), stop).await;
}

/// [`run`] with a [`Config`] of its own.
pub async fn run_with(
    client: Client,
    identity: String,
    config: Config,
    stop: impl Future<Output = ()>,
) {
    let election = leader::LeaderElection::new(client.clone(), identity);
    election
        .run(stop, move |lost| {
            run_controllers(client.clone(), config.clone(), lost)
        })
        .await;
}

/// All controllers side by side; each stops when `stop` turns true. None of them ends on an
/// error: a failed reconcile is retried with back-off inside its controller.
async fn run_controllers(client: Client, config: Config, stop: watch::Receiver<bool>) {
    let stopped = |stop: watch::Receiver<bool>| async move {
        let mut stop = stop;
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::join!(
        replicaset::run(client.clone(), stopped(stop.clone())),
        deployment::run(client.clone(), stopped(stop.clone())),
        statefulset::run(client.clone(), stopped(stop.clone())),
        endpointslice::run(client.clone(), stopped(stop.clone())),
        endpoints::run(client.clone(), stopped(stop.clone())),
        servicelb::run(client.clone(), stopped(stop.clone())),
        gc::run(client.clone(), stopped(stop.clone())),
        namespace::run(client.clone(), stopped(stop.clone())),
        persistentvolume::run(client.clone(), stopped(stop.clone())),
        protection::run(client.clone(), stopped(stop.clone())),
        nodelifecycle::run(client.clone(), config.node_grace, stopped(stop.clone())),
        nodelifecycle::eviction::run(client.clone(), stopped(stop.clone())),
        async {
            if let Some(range) = config.node_cidrs {
                nodeipam::run(client.clone(), range, stopped(stop.clone())).await;
            }
        },
    );
}
