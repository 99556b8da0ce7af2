//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! foreground and orphan propagation policies the API server leaves as finalizers.
//!
//! Kubernetes semantics (the "Garbage Collection" docs are the spec):
//! - *background* (the default): the owner goes at once; a dependent all of whose owners are
//!   gone is deleted, with the policy its own finalizers ask for (background otherwise), so a
//!   chain unwinds one generation at a time;
//! - *foreground*: the owner keeps a deletionTimestamp and the `foregroundDeletion`
//!   finalizer; its dependents are deleted (in the foreground when they have dependents of
//!   their own) and the finalizer is removed once no dependent with `blockOwnerDeletion` is
//!   left;
//! - *orphan*: the owner's reference is removed from every dependent, then the `orphan`
//!   finalizer.
//!
//! A dependent with several owners is deleted only when none is left; while some remain, the
//! references to the ones that are gone (or waiting for their dependents) are removed. An
//! owner is identified by uid: an object with the owner's name but another uid is not the
//! owner. A namespaced owner must be in its dependent's namespace; a reference across
//! namespaces counts as absent and is reported with a `OwnerRefInvalidNamespace` Warning, and
//! a cluster-scoped dependent naming a namespaced kind can never be resolved, so it is
//! reported and left alone.
//!
//! Why a graph of every object rather than a kube `Controller` per kind: ownership crosses
//! kinds (a ConfigMap may own a Secret), and what matters for an object is the state of
//! *other* objects — its owners, its dependents — which no per-kind cache can answer.
//! Upstream keeps the same graph. Every listable resource type ([`crate::resources`]) is
//! watched through the dynamic API ([`graph`] keeps only the metadata that matters), and a
//! change to an object marks it, its owners and its dependents for another look.
//!
//! Why the graph is never trusted for a deletion: it lags the API server, so it may not yet
//! show an owner that was just created. The one reconcile ([`reconcile`]) first asks the
//! graph ([`plan`]); when every owner there is alive, nothing is read. Otherwise the object
//! and each owner are read live (by name, compared by uid) and [`decide`] chooses from what
//! the server says; deletions carry uid and resourceVersion preconditions, so an object that
//! changed since it was read is left for the next look.

pub mod graph;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use berth_api::resources::{self, ResourceInfo};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Error;
use crate::resources::{api_resource, collectable, dynamic_api};
use crate::runtime::Backoff;
use graph::{FOREGROUND, Graph, Node, ORPHAN};

/// Every object with owners or a deletion in progress is looked at again this often, so a
/// decision that depended on a change the graph never showed still gets made.
const RESYNC_EVERY: Duration = Duration::from_secs(5 * 60);
/// The first retry of a failed reconcile; each further failure doubles it, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one owner reference resolves to, read live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// No object with that uid exists where the reference points.
    Dangling,
    /// The owner is being deleted in the foreground.
    WaitingForDependents,
    /// The reference cannot be resolved (a namespaced kind named by a cluster-scoped
    /// dependent, or a kind berth does not serve); the dependent is left alone.
    Unresolvable,
}

/// One step of the garbage collector for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Nothing,
    /// The graph cannot vouch for every owner: read them live and [`decide`].
    Verify,
    /// Remove the object from these dependents' owner references, then its `orphan`
    /// finalizer.
    Orphan {
        dependents: Vec<String>,
    },
    /// Remove this finalizer from the object.
    RemoveFinalizer(&'static str),
    /// Remove the references to these owner uids.
    RemoveOwners(Vec<String>),
    /// Delete the object with `policy`; first make the references to the `unblock` owner
    /// uids non-blocking.
    Delete {
        policy: PolicyChoice,
        unblock: Vec<String>,
    },
}

/// A propagation policy (kube's type is not comparable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChoice {
    Background,
    Foreground,
    Orphan,
}

impl PolicyChoice {
    fn to_kube(self) -> PropagationPolicy {
        match self {
            PolicyChoice::Background => PropagationPolicy::Background,
            PolicyChoice::Foreground => PropagationPolicy::Foreground,
            PolicyChoice::Orphan => PropagationPolicy::Orphan,
        }
    }
}

/// What the graph alone says about the object `uid`; reads nothing.
pub fn plan(graph: &Graph, uid: &str) -> Action {
    let Some(item) = graph.get(uid) else {
        return Action::Nothing;
    };
    if item.orphaning() {
        return Action::Orphan {
            dependents: graph.dependents(uid).map(|d| d.uid.clone()).collect(),
        };
    }
    if item.deleting_dependents() {
        let blocked = graph.dependents(uid).any(|d| {
            d.reference_to(uid)
                .is_some_and(|r| r.block_owner_deletion == Some(true))
        });
        // Its dependents are marked for a look whenever it changes, so while they are being
        // deleted there is nothing to do here; their removal brings it back.
        return if blocked {
            Action::Nothing
        } else {
            Action::RemoveFinalizer(FOREGROUND)
        };
    }
    if item.deleting || item.owners.is_empty() {
        return Action::Nothing;
    }
    if item.owners.iter().all(|r| solid_in_graph(graph, item, r)) {
        Action::Nothing
    } else {
        Action::Verify
    }
}

/// The graph shows `reference` as a live owner of `item` that is not waiting for its
/// dependents: same uid, kind, group and name, in the item's namespace if namespaced.
fn solid_in_graph(graph: &Graph, item: &Node, reference: &OwnerReference) -> bool {
    graph.get(&reference.uid).is_some_and(|owner| {
        !owner.deleting_dependents()
            && matches_reference(owner, reference)
            && (owner.namespace.is_none() || owner.namespace == item.namespace)
    })
}

fn matches_reference(owner: &Node, reference: &OwnerReference) -> bool {
    let (group, _) = resources::split_api_version(&reference.api_version);
    owner.resource.kind == reference.kind
        && owner.resource.group == group
        && owner.name == reference.name
}

/// Chooses for a dependent as read live, given the live state of each owner reference.
/// `has_dependents`: the item owns something itself; `dependent_deleting_dependents`: one of
/// those is itself being deleted in the foreground (a possible cycle).
pub fn decide(
    item: &Node,
    owners: &[(String, OwnerState)],
    has_dependents: bool,
    dependent_deleting_dependents: bool,
) -> Action {
    if item.deleting || owners.is_empty() {
        return Action::Nothing;
    }
    if owners.iter().any(|(_, s)| *s == OwnerState::Unresolvable) {
        return Action::Nothing;
    }
    let with = |state: OwnerState| -> Vec<String> {
        owners
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(uid, _)| uid.clone())
            .collect()
    };
    let solid = with(OwnerState::Solid);
    let mut gone = with(OwnerState::Dangling);
    let waiting = with(OwnerState::WaitingForDependents);
    if !solid.is_empty() {
        // It stays, but stops naming owners that are gone or about to be.
        gone.extend(waiting);
        return if gone.is_empty() {
            Action::Nothing
        } else {
            Action::RemoveOwners(gone)
        };
    }
    if !waiting.is_empty() && has_dependents {
        // The owner waits for this item, which must then wait for its own dependents. If one
        // of those waits too, the chain may loop back: stop blocking owners so it cannot
        // deadlock (as upstream does).
        let unblock = if dependent_deleting_dependents {
            item.owners
                .iter()
                .filter(|r| r.block_owner_deletion == Some(true))
                .map(|r| r.uid.clone())
                .collect()
        } else {
            Vec::new()
        };
        return Action::Delete {
            policy: PolicyChoice::Foreground,
            unblock,
        };
    }
    let policy = if item.has_finalizer(ORPHAN) {
        PolicyChoice::Orphan
    } else if item.has_finalizer(FOREGROUND) {
        PolicyChoice::Foreground
    } else {
        PolicyChoice::Background
    };
    Action::Delete {
        policy,
        unblock: Vec::new(),
    }
}

/// Runs the garbage collector until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let kinds = collectable();
    type Events = Pin<
        Box<
            dyn Stream<Item = (usize, Result<watcher::Event<DynamicObject>, watcher::Error>)>
                + Send,
        >,
    >;
    let streams: Vec<Events> = kinds
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(info));
            watcher(api, watcher::Config::default())
                .default_backoff()
                .map(move |event| (i, event))
                .boxed()
        })
        .collect();
    let mut events = futures::stream::select_all(streams);
    let mut collector = Collector::new(client);
    let mut graph = Graph::default();
    let mut queue = Queue::new();
    // Per kind: the uids a relist has shown so far (a relist replaces what the graph holds).
    let mut relisting: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut synced: HashSet<usize> = HashSet::new();
    let mut next_resync = Instant::now() + RESYNC_EVERY;
    tokio::pin!(stop);

    loop {
        // Nothing is decided before every kind has been listed once: an owner of a kind not
        // yet listed would look absent and cost a live read for every dependent.
        let ready = synced.len() == kinds.len();
        let wake = queue.next_due().filter(|_| ready);
        tokio::select! {
            () = &mut stop => return,
            event = events.next() => {
                let Some((kind, event)) = event else { return };
                let info = kinds[kind];
                let dirty = match event {
                    Ok(watcher::Event::Apply(o)) => apply(&mut graph, info, &o),
                    Ok(watcher::Event::Delete(o)) => {
                        o.metadata.uid.as_deref().map(|uid| graph.remove(uid)).unwrap_or_default()
                    }
                    Ok(watcher::Event::Init) => {
                        relisting.insert(kind, HashSet::new());
                        BTreeSet::new()
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        if let (Some(seen), Some(uid)) = (relisting.get_mut(&kind), &o.metadata.uid) {
                            seen.insert(uid.clone());
                        }
                        apply(&mut graph, info, &o)
                    }
                    Ok(watcher::Event::InitDone) => {
                        synced.insert(kind);
                        let seen = relisting.remove(&kind).unwrap_or_default();
                        let mut dirty = BTreeSet::new();
                        for uid in graph.uids_of(info) {
                            if !seen.contains(&uid) {
                                dirty.extend(graph.remove(&uid));
                            }
                        }
                        if synced.len() == kinds.len() {
                            tracing::info!(kinds = kinds.len(), "garbage collector synced");
                        }
                        dirty
                    }
                    Err(e) => {
                        // The watcher backs off and resumes by itself.
                        tracing::warn!(resource = info.plural, error = %e, "garbage collector watch failed; retrying");
                        BTreeSet::new()
                    }
                };
                for uid in dirty {
                    queue.add(uid);
                }
            }
            () = sleep_until(wake) => {
                for uid in queue.take_due(Instant::now()) {
                    match reconcile(&mut collector, &graph, &uid).await {
                        Ok(()) => queue.forget(&uid),
                        Err(e) => {
                            tracing::debug!(%uid, error = %e, "garbage collection failed; will retry");
                            queue.retry(uid);
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(next_resync) => {
                next_resync = Instant::now() + RESYNC_EVERY;
                for uid in graph.uids_needing_attention() {
                    queue.add(uid);
                }
            }
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn apply(
    graph: &mut Graph,
    info: &'static ResourceInfo,
    object: &DynamicObject,
) -> BTreeSet<String> {
    Node::from_meta(info, &object.metadata)
        .map(|node| graph.upsert(node))
        .unwrap_or_default()
}

/// The one reconcile: one step towards what Kubernetes' garbage collection wants for the
/// object `uid`, from the graph and, when the graph cannot vouch for the owners, from the API
/// server itself.
pub async fn reconcile(collector: &mut Collector, graph: &Graph, uid: &str) -> Result<(), Error> {
    let Some(node) = graph.get(uid) else {
        return Ok(());
    };
    match plan(graph, uid) {
        Action::Nothing => Ok(()),
        Action::Orphan { dependents } => {
            for dependent in dependents.iter().filter_map(|d| graph.get(d)) {
                collector
                    .remove_owners(dependent, &[uid.to_string()])
                    .await?;
            }
            collector.remove_finalizer(node, ORPHAN).await
        }
        Action::RemoveFinalizer(finalizer) => collector.remove_finalizer(node, finalizer).await,
        _ => {
            let Some(live) = collector.get_live(node).await? else {
                return Ok(());
            };
            let mut owners = Vec::with_capacity(live.owners.len());
            for reference in &live.owners {
                owners.push((
                    reference.uid.clone(),
                    collector.resolve(graph, &live, reference).await?,
                ));
            }
            let has_dependents = graph.dependents(uid).next().is_some();
            let cyclic = graph.dependents(uid).any(Node::deleting_dependents);
            match decide(&live, &owners, has_dependents, cyclic) {
                Action::RemoveOwners(gone) => collector.remove_owners(&live, &gone).await,
                Action::Delete { policy, unblock } => {
                    let mut live = live;
                    if !unblock.is_empty() {
                        live = match collector.unblock(&live, &unblock).await? {
                            Some(updated) => updated,
                            None => return Ok(()),
                        };
                    }
                    collector.delete(&live, policy).await
                }
                _ => Ok(()),
            }
        }
    }
}

/// The garbage collector's side of the API: live reads, patches, deletions and events.
pub struct Collector {
    client: Client,
    recorder: berth_client::Recorder,
    /// (dependent uid, owner uid) pairs already reported as invalid, so a dependent that is
    /// looked at again does not pile up events.
    reported: HashSet<(String, String)>,
}

impl Collector {
    fn new(client: Client) -> Collector {
        Collector {
            recorder: berth_client::Recorder::new(
                client.clone(),
                "garbage-collector-controller",
                None,
            ),
            client,
            reported: HashSet::new(),
        }
    }

    fn api(&self, node: &Node) -> Api<DynamicObject> {
        dynamic_api(&self.client, node.resource, node.namespace.as_deref())
    }

    /// The object as the server has it now, if it is still the object with this uid.
    async fn get_live(&self, node: &Node) -> Result<Option<Node>, Error> {
        let live = self.api(node).get_opt(&node.name).await?;
        Ok(live
            .and_then(|o| Node::from_meta(node.resource, &o.metadata))
            .filter(|live| live.uid == node.uid))
    }

    /// What `reference` on `item` points at, read live.
    async fn resolve(
        &mut self,
        graph: &Graph,
        item: &Node,
        reference: &OwnerReference,
    ) -> Result<OwnerState, Error> {
        let Some(owner_kind) = resources::lookup_kind(&reference.api_version, &reference.kind)
        else {
            tracing::debug!(item = %item.key(), kind = %reference.kind, "owner of a kind berth does not serve");
            return Ok(OwnerState::Unresolvable);
        };
        if owner_kind.namespaced() && item.namespace.is_none() {
            self.report_invalid(item, reference, "").await;
            return Ok(OwnerState::Unresolvable);
        }
        if let Some(seen) = graph.get(&reference.uid)
            && seen.namespace.is_some()
            && seen.namespace != item.namespace
        {
            let namespace = item.namespace.clone().unwrap_or_default();
            self.report_invalid(item, reference, &namespace).await;
        }
        let api = dynamic_api(&self.client, owner_kind, item.namespace.as_deref());
        let Some(owner) = api.get_opt(&reference.name).await? else {
            return Ok(OwnerState::Dangling);
        };
        let Some(owner) = Node::from_meta(owner_kind, &owner.metadata) else {
            return Ok(OwnerState::Dangling);
        };
        Ok(if owner.uid != reference.uid {
            OwnerState::Dangling
        } else if owner.deleting_dependents() {
            OwnerState::WaitingForDependents
        } else {
            OwnerState::Solid
        })
    }

    /// The Warning upstream writes for an owner reference that crosses namespaces.
    async fn report_invalid(&mut self, item: &Node, reference: &OwnerReference, namespace: &str) {
        if !self
            .reported
            .insert((item.uid.clone(), reference.uid.clone()))
        {
            return;
        }
        let message = format!(
            "ownerRef [{}/{}, namespace: {namespace}, name: {}, uid: {}] does not exist in namespace {:?}",
            reference.api_version,
            reference.kind,
            reference.name,
            reference.uid,
            item.namespace.as_deref().unwrap_or(""),
        );
        let object = ObjectReference {
            api_version: Some(item.resource.api_version()),
            kind: Some(item.resource.kind.to_string()),
            name: Some(item.name.clone()),
            namespace: item.namespace.clone(),
            uid: Some(item.uid.clone()),
            ..Default::default()
        };
        if let Err(e) = self
            .recorder
            .record(&object, "Warning", "OwnerRefInvalidNamespace", &message)
            .await
        {
            tracing::debug!(error = %e, "could not record OwnerRefInvalidNamespace");
        }
    }

    /// Removes the references to `owners` from `dependent` (read live first, written with its
    /// resourceVersion so a concurrent change is not lost).
    async fn remove_owners(&self, dependent: &Node, owners: &[String]) -> Result<(), Error> {
        let Some(live) = self.get_live(dependent).await? else {
            return Ok(());
        };
        let kept: Vec<&OwnerReference> = live
            .owners
            .iter()
            .filter(|r| !owners.contains(&r.uid))
            .collect();
        if kept.len() == live.owners.len() {
            return Ok(());
        }
        let references = if kept.is_empty() {
            Value::Null
        } else {
            json!(kept)
        };
        self.patch_meta(&live, json!({"ownerReferences": references}))
            .await
    }

    /// Removes `finalizer` from `node`, if it still carries it.
    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), Error> {
        let Some(live) = self.get_live(node).await? else {
            return Ok(());
        };
        if !live.has_finalizer(finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = live.finalizers.iter().filter(|f| *f != finalizer).collect();
        tracing::info!(object = %live.key(), finalizer, "removing finalizer");
        self.patch_meta(&live, json!({"finalizers": kept})).await
    }

    /// Makes `item`'s references to `owners` non-blocking; the updated object, or `None`
    /// when it is gone.
    async fn unblock(&self, item: &Node, owners: &[String]) -> Result<Option<Node>, Error> {
        let references: Vec<OwnerReference> = item
            .owners
            .iter()
            .cloned()
            .map(|mut r| {
                if owners.contains(&r.uid) {
                    r.block_owner_deletion = Some(false);
                }
                r
            })
            .collect();
        self.patch_meta(item, json!({"ownerReferences": references}))
            .await?;
        self.get_live(item).await
    }

    /// A merge patch of `metadata` that fails if the object changed since `live` was read.
    async fn patch_meta(&self, live: &Node, mut metadata: Value) -> Result<(), Error> {
        metadata["resourceVersion"] = json!(live.resource_version);
        let patch = json!({"metadata": metadata});
        match self
            .api(live)
            .patch(&live.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, live: &Node, policy: PolicyChoice) -> Result<(), Error> {
        tracing::info!(object = %live.key(), ?policy, "deleting dependent whose owners are gone");
        let params = DeleteParams {
            propagation_policy: Some(policy.to_kube()),
            preconditions: Some(Preconditions {
                uid: Some(live.uid.clone()),
                resource_version: live.resource_version.clone(),
            }),
            ..Default::default()
        };
        match self.api(live).delete(&live.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Which objects are due for a look, with back-off for those that failed.
struct Queue {
    due: HashMap<String, Instant>,
    backoff: Backoff<String>,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            due: HashMap::new(),
            backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        }
    }

    /// Looks at `uid` as soon as possible (a change beats a back-off).
    fn add(&mut self, uid: String) {
        self.due.insert(uid, Instant::now());
    }

    fn retry(&mut self, uid: String) {
        let delay = self.backoff.failed(uid.clone());
        self.due.insert(uid, Instant::now() + delay);
    }

    fn forget(&mut self, uid: &str) {
        self.backoff.reset(uid);
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    fn take_due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &due {
            self.due.remove(uid);
        }
        due
    }
}

#[cfg(test)]
mod tests;
