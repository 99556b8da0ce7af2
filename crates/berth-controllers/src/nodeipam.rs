//! The node IPAM controller (kube-controller-manager's `node-ipam-controller` with
//! `--allocate-node-cidrs` and the range allocator): every Node without `spec.podCIDR` gets
//! the lowest free subnet of size `--node-cidr-mask-size` of the cluster CIDR, written once
//! (`spec.podCIDR` and `spec.podCIDRs`, with a resourceVersion precondition; the API server
//! keeps it immutable from then on). The node agent builds its pod network on that subnet and
//! the other nodes route it to the node's InternalIP.
//!
//! Two nodes never get the same subnet, even when reconciled at once: allocation holds one
//! lock from picking a subnet to the write, and a subnet written but not yet in the cache stays
//! reserved in memory until the cache shows it (or its node is gone). When the range is
//! exhausted the node gets a `CIDRNotAvailable` event and is looked at again later.
//!
//! A cluster CIDR no larger than one subnet is a single subnet: the whole range.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use crate::Error;
use crate::error::Stored;
use crate::runtime::{self, Backoff, Events};

/// The component name on events, as upstream's.
pub const COMPONENT: &str = "cidrAllocator";

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How soon a node that found the range full looks again (a node may have been deleted).
const EXHAUSTED_RETRY: Duration = Duration::from_secs(30);

/// The cluster CIDR cut into node subnets: `--cluster-cidr` and `--node-cidr-mask-size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    network: u32,
    prefix: u8,
    /// The subnets' prefix length (never shorter than `prefix`).
    mask: u8,
}

impl Range {
    /// `cidr` (`10.42.0.0/16`) cut into subnets of prefix `mask` (24).
    pub fn new(cidr: &str, mask: u8) -> Result<Range, String> {
        let (address, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr}: no /prefix"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{cidr}: not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{cidr}: bad prefix"))?;
        // A node's pod CIDR holds its bridge's address and at least one pod, as the pod network
        // requires of any CIDR (prefix 8 to 30).
        if !(8..=30).contains(&mask) {
            return Err(format!(
                "node CIDR mask size {mask} is not between 8 and 30"
            ));
        }
        let network = u32::from(address);
        if network & !prefix_mask(prefix) != 0 {
            return Err(format!("{cidr}: host bits are set"));
        }
        if mask.saturating_sub(prefix) > 16 {
            return Err(format!(
                "{cidr} holds more than 65536 subnets of /{mask}; use a larger mask"
            ));
        }
        Ok(Range {
            network,
            prefix,
            mask: mask.max(prefix),
        })
    }

    /// How many node subnets the range holds.
    pub fn len(&self) -> usize {
        1 << (self.mask - self.prefix)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`th subnet (`i < len()`), as Kubernetes writes it: `10.42.1.0/24`.
    pub fn subnet(&self, i: usize) -> String {
        let step = 1u64 << (32 - u32::from(self.mask));
        let start = u64::from(self.network) + step * i as u64;
        format!("{}/{}", Ipv4Addr::from(start as u32), self.mask)
    }

    /// The index of `cidr` if it is one of the range's subnets.
    pub fn index_of(&self, cidr: &str) -> Option<usize> {
        let (address, prefix) = cidr.split_once('/')?;
        let address: Ipv4Addr = address.parse().ok()?;
        if prefix.parse::<u8>().ok()? != self.mask {
            return None;
        }
        let offset = u64::from(u32::from(address).checked_sub(self.network)?);
        let i = usize::try_from(offset >> (32 - u32::from(self.mask))).ok()?;
        (i < self.len() && self.subnet(i) == cidr).then_some(i)
    }

    /// The lowest subnet not in `used`.
    pub fn lowest_free(&self, used: &dyn Fn(usize) -> bool) -> Option<usize> {
        (0..self.len()).find(|&i| !used(i))
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The podCIDR a node shows (`spec.podCIDR`, else the first of `spec.podCIDRs`).
pub fn pod_cidr(node: &Node) -> Option<&str> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .as_deref()
        .or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))
        .filter(|c| !c.is_empty())
}

struct Context {
    client: Client,
    nodes: Store<Node>,
    range: Range,
    /// Subnets written by this controller that the cache may not show yet, by node name. The
    /// lock is held from choosing a subnet to writing it.
    pending: tokio::sync::Mutex<BTreeMap<usize, String>>,
    events: Events<Node>,
}

/// Runs the controller over `range` until `stop` resolves.
pub async fn run(client: Client, range: Range, stop: impl Future<Output = ()>) {
    let (nodes, node_events) = runtime::reflector::<Node>(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        nodes: nodes.clone(),
        range,
        pending: tokio::sync::Mutex::new(BTreeMap::new()),
        events: Events::new(client, COMPONENT, nodes.clone()),
    });
    runtime::run(
        "nodeipam",
        reconcile,
        context,
        nodes,
        vec![runtime::trigger_self(node_events)],
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    runtime::synced(&ctx.nodes, "node").await?;
    if pod_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let stored = Stored::new("Node", &node.metadata);
    let (name, resource_version) = (stored.name()?.to_string(), stored.resource_version()?);
    let mut pending = ctx.pending.lock().await;
    let all = ctx.nodes.state();
    let mut used = std::collections::BTreeSet::new();
    for other in &all {
        if let Some(i) = pod_cidr(other).and_then(|c| ctx.range.index_of(c)) {
            used.insert(i);
        }
    }
    // A pending subnet is settled once the cache shows its node with a podCIDR, or no longer
    // shows the node at all.
    pending.retain(|_, owner| {
        all.iter()
            .find(|n| n.metadata.name.as_deref() == Some(owner.as_str()))
            .is_some_and(|n| pod_cidr(n).is_none())
    });
    // This node may have been given one already that the cache does not show yet.
    if pending.values().any(|owner| *owner == name) {
        return Ok(Action::requeue(FIRST_BACKOFF));
    }
    let Some(index) = ctx
        .range
        .lowest_free(&|i| used.contains(&i) || pending.contains_key(&i))
    else {
        drop(pending);
        let message = format!("Node {name} status is now: CIDRNotAvailable");
        ctx.events
            .record(&node, "Normal", "CIDRNotAvailable", &message)
            .await;
        tracing::warn!(node = %name, "no pod CIDR left for the node");
        return Ok(Action::requeue(EXHAUSTED_RETRY));
    };
    let cidr = ctx.range.subnet(index);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    });
    let api: Api<Node> = Api::all(ctx.client.clone());
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    pending.insert(index, name.clone());
    tracing::info!(node = %name, %cidr, "allocated the node's pod CIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cut_into_subnets() {
        let range = Range::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(range.len(), 256);
        assert_eq!(range.subnet(0), "10.42.0.0/24");
        assert_eq!(range.subnet(255), "10.42.255.0/24");
        assert_eq!(range.index_of("10.42.7.0/24"), Some(7));
        assert_eq!(range.index_of("10.42.7.0/25"), None);
        assert_eq!(range.index_of("10.43.0.0/24"), None);
        assert_eq!(range.index_of("10.42.7.1/24"), None);
        assert_eq!(range.lowest_free(&|i| i < 3 || i == 4), Some(3));
        assert_eq!(range.lowest_free(&|_| true), None);

        // No larger than one subnet: the whole range is the only one.
        let small = Range::new("10.200.3.0/24", 24).unwrap();
        assert_eq!((small.len(), small.subnet(0)), (1, "10.200.3.0/24".into()));
        let smaller = Range::new("10.200.3.0/26", 24).unwrap();
        assert_eq!(smaller.subnet(0), "10.200.3.0/26");
        assert_eq!(smaller.index_of("10.200.3.0/26"), Some(0));

        assert!(Range::new("10.0.0.0/8", 26).is_err(), "too many subnets");
    }

    #[test]
    fn bad_ranges_are_refused() {
        for (cidr, mask) in [
            ("10.42.0.1/16", 24),
            ("10.42.0.0", 24),
            ("x/16", 24),
            ("10.42.0.0/16", 0),
            ("10.42.0.0/16", 33),
            ("10.42.0.0/16", 31),
            ("10.42.0.0/16", 7),
        ] {
            assert!(Range::new(cidr, mask).is_err(), "{cidr} {mask}");
        }
    }

    #[test]
    fn pod_cidr_reads_either_field() {
        let mut node = Node::default();
        assert_eq!(pod_cidr(&node), None);
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidrs: Some(vec!["10.42.1.0/24".into()]),
            ..Default::default()
        });
        assert_eq!(pod_cidr(&node), Some("10.42.1.0/24"));
        node.spec.as_mut().unwrap().pod_cidr = Some("10.42.2.0/24".into());
        assert_eq!(pod_cidr(&node), Some("10.42.2.0/24"));
    }
}
