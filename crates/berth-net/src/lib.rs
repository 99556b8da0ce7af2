//! berth's pod network, what a CNI bridge plugin with host-local IPAM does, in-process: a
//! bridge on the host holding the pod CIDR's gateway address, and for each pod a veth pair
//! with one end on the bridge and the other, as `eth0`, in the pod's network namespace with
//! an address from the CIDR, a default route via the gateway, and loopback up.
//!
//! Where to start: [`PodNetwork::attach`] and [`PodNetwork::detach`]. Addresses come from
//! [`ipam`] (durable, no duplicates); links from a [`Links`] implementation — [`link::Netlink`]
//! talks to the kernel through rtnetlink, [`link::Recording`] records calls for tests of
//! everything above it.
//!
//! The pod's network namespace itself is made by the runtime with the pod's other
//! namespaces (as a CRI runtime makes the sandbox's); this crate only configures it, as a CNI
//! plugin is handed a namespace path.

pub mod ipam;
pub mod link;
pub mod proxy;
pub mod routes;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

pub use ipam::Ipam;
pub use link::Links;

/// Why the pod network could not do something.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("invalid CIDR {0:?}: {1}")]
    InvalidCidr(String, &'static str),
    #[error("nftables refused the service rules: {0}")]
    Nftables(String),
}

impl NetError {
    pub(crate) fn io<'a>(
        what: &'a str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> NetError + 'a {
        move |e| NetError::Io(format!("{what} {}", path.display()), e)
    }
}

/// An IPv4 network, `10.42.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address (`10.42.0.0` of 10.42.0.0/16).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The first subnet of prefix `prefix` (`10.42.0.0/24` of 10.42.0.0/16 and 24): what the
    /// node of `berth up` takes of the cluster CIDR. A network no larger than that is itself.
    pub fn first_subnet(&self, prefix: u8) -> Cidr {
        Cidr {
            network: self.network,
            prefix: self.prefix.max(prefix.min(32)),
        }
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The first host address: the bridge's, the pods' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The address `offset` past the network's (`10.43.0.10` is offset 10 of 10.43.0.0/16),
    /// if it is inside.
    pub fn address(&self, offset: u32) -> Option<Ipv4Addr> {
        let address = Ipv4Addr::from(u32::from(self.network).checked_add(offset)?);
        self.contains(address).then_some(address)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    /// The addresses pods may get: every host address but the gateway (and not the network
    /// and broadcast addresses).
    pub fn pod_addresses(&self) -> PodAddresses {
        let network = u32::from(self.network);
        let size = 1u64 << (32 - u32::from(self.prefix));
        // network, gateway and broadcast are not for pods.
        let count = size.saturating_sub(3);
        PodAddresses {
            first: network.saturating_add(2),
            count: usize::try_from(count).unwrap_or(usize::MAX),
        }
    }
}

/// The pod addresses of a [`Cidr`], by index.
pub struct PodAddresses {
    first: u32,
    count: usize,
}

impl PodAddresses {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`th address (`i < len()`).
    pub fn nth(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(self.first.wrapping_add(i as u32))
    }

    pub fn index_of(&self, address: Ipv4Addr) -> Option<usize> {
        let offset = u32::from(address).checked_sub(self.first)? as usize;
        (offset < self.count).then_some(offset)
    }
}

impl FromStr for Cidr {
    type Err = NetError;

    fn from_str(text: &str) -> Result<Cidr, NetError> {
        let invalid = |why| NetError::InvalidCidr(text.to_string(), why);
        let (address, prefix) = text.split_once('/').ok_or_else(|| invalid("no /prefix"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| invalid("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(invalid("the prefix must be between 8 and 30"));
        }
        let cidr = Cidr {
            network: address,
            prefix,
        };
        if u32::from(address) & !cidr.mask() != 0 {
            return Err(invalid("host bits are set"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The pod network's settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The host bridge (`berth0`).
    pub bridge: String,
    pub cidr: Cidr,
}

/// The pod network of this node: its bridge, its addresses and its links.
pub struct PodNetwork {
    config: NetworkConfig,
    ipam: Ipam,
    links: Arc<dyn Links>,
}

const BRIDGE_FILE: &str = "bridge";

/// Replaces `path` with `text`, readable by its owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(NetError::io("writing", path))
}

/// Removes every pod link and address recorded in `state_dir`, the bridge and the service
/// proxy's table: what `berth down` does once the pods are stopped. Returns how many pods
/// were detached.
pub fn teardown(
    state_dir: &Path,
    links: &dyn Links,
    dataplane: &dyn proxy::nftables::Dataplane,
) -> Result<usize, NetError> {
    let Ok(bridge) = std::fs::read_to_string(state_dir.join(BRIDGE_FILE)) else {
        return Ok(0);
    };
    // The range does not matter for releasing.
    let any: Cidr = "10.0.0.0/8".parse()?;
    let ipam = Ipam::open(state_dir, any)?;
    let owners = ipam.owners();
    for owner in &owners {
        links.remove(&host_interface(owner))?;
        ipam.release(owner)?;
    }
    links.remove(bridge.trim())?;
    proxy::nftables::delete_table(dataplane, bridge.trim())?;
    Ok(owners.len())
}

/// The host-side veth of a pod: `vb` and the first 13 hex digits of its uid (interface names
/// have at most 15 bytes).
pub fn host_interface(uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(13)
        .collect();
    format!("vb{hex}")
}

impl PodNetwork {
    /// The network with addresses kept in `state_dir`; makes the bridge if it is missing.
    pub fn open(
        config: NetworkConfig,
        state_dir: &Path,
        links: Arc<dyn Links>,
    ) -> Result<PodNetwork, NetError> {
        let ipam = Ipam::open(state_dir, config.cidr)?;
        // Remembered for `teardown`, which runs without the configuration.
        let recorded = state_dir.join(BRIDGE_FILE);
        write_private(&recorded, &config.bridge)?;
        links.ensure_bridge(&config.bridge, config.cidr.gateway(), config.cidr.prefix())?;
        Ok(PodNetwork {
            config,
            ipam,
            links,
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Gives the pod `uid` whose network namespace is pinned at `netns` its address and
    /// `eth0`. Idempotent: a pod already attached keeps its address (a restarted agent calls
    /// this again for pods it adopts).
    pub fn attach(&self, uid: &str, netns: &Path) -> Result<Ipv4Addr, NetError> {
        let address = self.ipam.allocate(uid)?;
        let result = self.links.attach(&link::Attachment {
            bridge: &self.config.bridge,
            host_interface: &host_interface(uid),
            netns,
            address,
            prefix: self.config.cidr.prefix(),
            gateway: self.config.cidr.gateway(),
        });
        if let Err(e) = result {
            // Nothing half-made stays behind; the next attempt starts over.
            let _ = self.links.remove(&host_interface(uid));
            return Err(e);
        }
        Ok(address)
    }

    /// The address the pod holds, if any.
    pub fn address_of(&self, uid: &str) -> Option<Ipv4Addr> {
        self.ipam.address_of(uid)
    }

    /// Removes the pod's link and frees its address. Idempotent.
    pub fn detach(&self, uid: &str) -> Result<(), NetError> {
        self.links.remove(&host_interface(uid))?;
        self.ipam.release(uid)
    }

    /// Frees the addresses of pods for which `keep(uid)` is false (they are gone), with their
    /// links: what a crash between a pod's removal and its release would otherwise leak.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<usize, NetError> {
        let mut freed = 0;
        for owner in self.ipam.owners() {
            if !keep(&owner) {
                self.detach(&owner)?;
                freed += 1;
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_know_their_addresses() {
        let cidr: Cidr = "10.42.0.0/16".parse().expect("valid");
        assert_eq!(cidr.gateway(), Ipv4Addr::new(10, 42, 0, 1));
        assert!(cidr.contains(Ipv4Addr::new(10, 42, 255, 254)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 43, 0, 1)));
        let pods = cidr.pod_addresses();
        assert_eq!(pods.len(), 65_533);
        assert_eq!(pods.nth(0), Ipv4Addr::new(10, 42, 0, 2));
        assert_eq!(pods.nth(pods.len() - 1), Ipv4Addr::new(10, 42, 255, 254));
        assert_eq!(pods.index_of(Ipv4Addr::new(10, 42, 0, 1)), None);
        assert_eq!(cidr.to_string(), "10.42.0.0/16");
        assert_eq!(cidr.address(10), Some(Ipv4Addr::new(10, 42, 0, 10)));
        assert_eq!(cidr.address(1 << 16), None);
        let first = cidr.first_subnet(24);
        assert_eq!(first.to_string(), "10.42.0.0/24");
        assert!(first.overlaps(&cidr) && cidr.overlaps(&first));
        assert!(!first.overlaps(&"10.42.1.0/24".parse().expect("valid")));
        assert_eq!(first.first_subnet(16), first);
        for bad in [
            "10.42.0.0",
            "10.42.0.1/16",
            "10.42.0.0/33",
            "x/16",
            "10.0.0.0/4",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_interfaces_fit_the_kernel_limit() {
        let name = host_interface("0f072278-7439-435b-93eb-bf91cee78f19");
        assert_eq!(name, "vb0f07227874394");
        assert!(name.len() <= 15);
    }

    #[test]
    fn attach_and_detach_drive_links_and_addresses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let links = Arc::new(link::Recording::default());
        let network = PodNetwork::open(
            NetworkConfig {
                bridge: "berth0".into(),
                cidr: "10.42.0.0/24".parse().expect("valid"),
            },
            dir.path(),
            links.clone(),
        )
        .expect("open");
        let netns = Path::new("/run/pod/ns/net");
        let address = network.attach("uid-1", netns).expect("attach");
        assert_eq!(network.attach("uid-1", netns).expect("again"), address);
        network.detach("uid-1").expect("detach");
        network.detach("uid-1").expect("detach again");
        assert_eq!(network.address_of("uid-1"), None);
        assert_eq!(
            links.calls(),
            [
                "bridge berth0 10.42.0.1/24",
                "attach vbd1 on berth0 /run/pod/ns/net 10.42.0.2/24 via 10.42.0.1",
                "attach vbd1 on berth0 /run/pod/ns/net 10.42.0.2/24 via 10.42.0.1",
                "remove vbd1",
                "remove vbd1",
            ]
        );
        network.attach("uid-2", netns).expect("attach");
        assert_eq!(network.retain(|uid| uid != "uid-2").expect("retain"), 1);
        assert_eq!(network.address_of("uid-2"), None);
        network.attach("uid-3", netns).expect("attach");
        let fresh = link::Recording::default();
        let tables = proxy::nftables::Recording::default();
        assert_eq!(teardown(dir.path(), &fresh, &tables).expect("teardown"), 1);
        assert_eq!(fresh.calls(), ["remove vbd3", "remove berth0"]);
        assert_eq!(
            tables.calls(),
            ["add table ip berth0\ndelete table ip berth0\n"]
        );
    }
}
