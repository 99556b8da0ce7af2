//! The owner graph: every object the garbage collector has seen, by uid, with its owner
//! references, and the reverse index from an owner's uid to the objects that name it.
//!
//! The reverse index is keyed by the uid an owner reference carries, whether or not an object
//! with that uid exists: a dependent whose owner was never seen (or is gone) still appears under
//! that uid, which is how the collector finds dependents of a deleted owner, and how a
//! dependent referencing a uid that never existed is found at all (upstream calls such an
//! owner a "virtual node"). Only metadata is kept; the objects themselves are not.

use std::collections::{BTreeSet, HashMap};

use berth_api::resources::ResourceInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The finalizer that holds an owner until its blocking dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that holds an owner until its dependents no longer reference it.
pub const ORPHAN: &str = "orphan";

/// One object as the graph knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: Option<String>,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
}

impl Node {
    /// The node for an object's metadata; `None` when it lacks a name or uid (nothing could
    /// reference or delete it).
    pub fn from_meta(resource: &'static ResourceInfo, meta: &ObjectMeta) -> Option<Node> {
        Some(Node {
            resource,
            namespace: meta.namespace.clone().filter(|_| resource.namespaced()),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            resource_version: meta.resource_version.clone(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        })
    }

    pub fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Being deleted in the foreground: waiting for its blocking dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }

    /// Being deleted with its dependents orphaned.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.has_finalizer(ORPHAN)
    }

    /// Its reference to `owner`, if it has one.
    pub fn reference_to(&self, owner: &str) -> Option<&OwnerReference> {
        self.owners.iter().find(|r| r.uid == owner)
    }

    /// "plural/namespace/name" or "plural/name", for logs.
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.resource.plural, self.name),
            None => format!("{}/{}", self.resource.plural, self.name),
        }
    }
}

/// All nodes, and who references whom.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → uids of the nodes whose owner references carry it.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The nodes that reference `owner` (by uid).
    pub fn dependents(&self, owner: &str) -> impl Iterator<Item = &Node> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.nodes.get(uid))
    }

    /// Uids of the nodes of `resource`, for forgetting what a relist no longer shows.
    pub fn uids_of(&self, resource: &ResourceInfo) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| std::ptr::eq(n.resource, resource))
            .map(|n| n.uid.clone())
            .collect()
    }

    /// The objects a periodic resync looks at again: those with owners or a deletion the
    /// collector carries out.
    pub fn uids_needing_attention(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| !n.owners.is_empty() || n.deleting_dependents() || n.orphaning())
            .map(|n| n.uid.clone())
            .collect()
    }

    /// Adds or replaces a node. Returns the uids whose decision may have changed: the node
    /// itself, its owners before and after (one of their dependents changed), and its
    /// dependents (their owner changed: it may have started being deleted).
    pub fn upsert(&mut self, node: Node) -> BTreeSet<String> {
        let uid = node.uid.clone();
        let old = self.nodes.remove(&uid);
        if old.as_ref() == Some(&node) {
            self.nodes.insert(uid, node);
            return BTreeSet::new();
        }
        let mut dirty = BTreeSet::from([uid.clone()]);
        if let Some(old) = &old {
            self.unlink(old);
            dirty.extend(old.owners.iter().map(|r| r.uid.clone()));
        }
        for owner in &node.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
            dirty.insert(owner.uid.clone());
        }
        dirty.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
        self.nodes.insert(uid, node);
        dirty
    }

    /// Forgets a node (it was deleted). Returns its owners (one of their dependents is gone)
    /// and its dependents (their owner is gone).
    pub fn remove(&mut self, uid: &str) -> BTreeSet<String> {
        let Some(old) = self.nodes.remove(uid) else {
            return BTreeSet::new();
        };
        self.unlink(&old);
        let mut dirty: BTreeSet<String> = old.owners.iter().map(|r| r.uid.clone()).collect();
        dirty.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        dirty
    }

    fn unlink(&mut self, node: &Node) {
        for owner in &node.owners {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(&node.uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
    }
}
