//! The ranges Services take their cluster IPs and node ports from, and the in-memory pool that
//! picks free values in them. Nothing here touches the store: [`crate::services`] persists each
//! allocation as a key of its own and uses a [`Pool`] only as a fast, conservative view of
//! which values are taken.
//!
//! The picking follows kube-apiserver's `randomScanStrategyWithOffset`: a range is split into a
//! lower band kept for values clients ask for by number (a cluster DNS address such as
//! `10.43.0.10`, a well-known node port) and an upper band that random allocation prefers, so
//! that a requested low value is rarely already taken by chance. Random allocation falls back
//! to the lower band only once the upper one is full. The band's size is upstream's
//! `min(max(16, size/16), 256)` for IPs and `min(max(16, size/32), 128)` for ports.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use rand::Rng;

/// The largest service CIDR accepted: 2^20 addresses (a /12), kube-apiserver's limit too.
const MAX_CIDR_BITS: u8 = 20;

/// `--service-cluster-ip-range`: the IPv4 network Service cluster IPs come from.
///
/// As in Kubernetes, the network address and the broadcast address are never handed out, so a
/// /16 has 65534 usable addresses, the first of which (`.0.1`) belongs to the `kubernetes`
/// Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl ServiceCidr {
    /// The network `network/prefix`; `network` must have no host bits set and the range must
    /// hold at least one usable address (a /30 or larger) and at most 2^20 addresses.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, RangeError> {
        let text = format!("{network}/{prefix}");
        if prefix > 30 {
            return Err(RangeError(format!(
                "service CIDR {text} is too small: it must hold at least one address besides the network and broadcast addresses (/30 or larger)"
            )));
        }
        if 32 - prefix > MAX_CIDR_BITS {
            return Err(RangeError(format!(
                "service CIDR {text} is too large: it may hold at most 2^{MAX_CIDR_BITS} addresses (/{} or smaller)",
                32 - MAX_CIDR_BITS
            )));
        }
        let host_bits = u32::MAX >> prefix;
        if u32::from(network) & host_bits != 0 {
            return Err(RangeError(format!(
                "service CIDR {text} has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(network) & !host_bits)
            )));
        }
        Ok(ServiceCidr { network, prefix })
    }

    /// How many addresses can be allocated (the network and broadcast addresses excluded).
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The first allocatable address: the `kubernetes` Service's cluster IP.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The position of `ip` among the allocatable addresses, if it is one of them.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(ip).checked_sub(u32::from(self.first()))?;
        (offset < self.size()).then_some(offset)
    }

    /// The allocatable address at `offset` (which must be below [`ServiceCidr::size`]).
    pub fn ip_at(&self, offset: u32) -> Ipv4Addr {
        debug_assert!(offset < self.size());
        Ipv4Addr::from(u32::from(self.first()) + offset)
    }

    /// The lower band kept for requested addresses (upstream's `calculateRangeOffset`, which
    /// measures the whole CIDR, network and broadcast addresses included).
    pub fn static_band(&self) -> u32 {
        let cidr_size = 1u32 << (32 - self.prefix);
        if cidr_size <= 16 {
            0
        } else {
            (cidr_size / 16).clamp(16, 256)
        }
    }

    /// A pool over this range's addresses.
    pub fn pool(&self) -> Pool {
        Pool::new(self.size(), self.static_band())
    }
}

impl Default for ServiceCidr {
    /// 10.43.0.0/16, k3s's default, which keeps clear of the usual 10.96.0.0/12 of kubeadm
    /// clusters a developer may also reach.
    fn default() -> Self {
        ServiceCidr {
            network: Ipv4Addr::new(10, 43, 0, 0),
            prefix: 16,
        }
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for ServiceCidr {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            RangeError(format!(
                "invalid service CIDR {s:?}: expected an IPv4 network such as 10.43.0.0/16"
            ))
        };
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
        ServiceCidr::new(ip, prefix)
    }
}

/// `--service-node-port-range`: the ports NodePort and LoadBalancer Services are exposed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    base: u16,
    size: u16,
}

impl NodePortRange {
    /// The ports `first..=last`.
    pub fn new(first: u16, last: u16) -> Result<Self, RangeError> {
        if first == 0 || last < first {
            return Err(RangeError(format!(
                "invalid node port range {first}-{last}: it must be a non-empty range of ports above 0"
            )));
        }
        Ok(NodePortRange {
            base: first,
            size: last - first + 1,
        })
    }

    pub fn first(&self) -> u16 {
        self.base
    }

    pub fn last(&self) -> u16 {
        self.base + (self.size - 1)
    }

    pub fn size(&self) -> u32 {
        u32::from(self.size)
    }

    pub fn offset_of(&self, port: i64) -> Option<u32> {
        let offset = port.checked_sub(i64::from(self.base))?;
        u32::try_from(offset).ok().filter(|o| *o < self.size())
    }

    pub fn port_at(&self, offset: u32) -> u16 {
        debug_assert!(offset < self.size());
        self.base + offset as u16
    }

    /// The lower band kept for requested ports (upstream's `calculateRangeOffset`).
    pub fn static_band(&self) -> u32 {
        let size = self.size();
        if size <= 16 {
            0
        } else {
            (size / 32).clamp(16, 128)
        }
    }

    /// A pool over this range's ports.
    pub fn pool(&self) -> Pool {
        Pool::new(self.size(), self.static_band())
    }
}

impl Default for NodePortRange {
    /// Kubernetes' 30000-32767.
    fn default() -> Self {
        NodePortRange {
            base: 30000,
            size: 2768,
        }
    }
}

impl fmt::Display for NodePortRange {
    /// `first-last`, as Kubernetes writes it in its error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

impl FromStr for NodePortRange {
    type Err = RangeError;

    /// `30000-32767`, or `30000+2768` (first port and size), as `--service-node-port-range`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            RangeError(format!(
                "invalid node port range {s:?}: expected first-last, such as 30000-32767"
            ))
        };
        let s = s.trim();
        if let Some((first, last)) = s.split_once('-') {
            let first = first.trim().parse().map_err(|_| bad())?;
            let last = last.trim().parse().map_err(|_| bad())?;
            NodePortRange::new(first, last)
        } else if let Some((first, size)) = s.split_once('+') {
            let first: u16 = first.trim().parse().map_err(|_| bad())?;
            let size: u16 = size.trim().parse().map_err(|_| bad())?;
            let last = size
                .checked_sub(1)
                .and_then(|extra| first.checked_add(extra))
                .ok_or_else(bad)?;
            NodePortRange::new(first, last)
        } else {
            Err(bad())
        }
    }
}

/// A range that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(String);

/// Which of `size` values are taken, and the random pick of a free one.
///
/// A bitmap, as upstream's allocator: 2^20 values (the largest service CIDR) cost 128 KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    size: u32,
    /// Values below this are picked at random only once every value above is taken.
    band: u32,
    bits: Vec<u64>,
    count: u32,
}

impl Pool {
    pub fn new(size: u32, band: u32) -> Pool {
        Pool {
            size,
            band: band.min(size),
            bits: vec![0; size.div_ceil(64) as usize],
            count: 0,
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// How many values are taken.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_taken(&self, value: u32) -> bool {
        value < self.size && self.bits[(value / 64) as usize] & (1 << (value % 64)) != 0
    }

    /// Marks `value` taken; false if it already was (or is outside the pool).
    pub fn take(&mut self, value: u32) -> bool {
        if value >= self.size || self.is_taken(value) {
            return false;
        }
        self.bits[(value / 64) as usize] |= 1 << (value % 64);
        self.count += 1;
        true
    }

    /// Marks `value` free; false if it already was.
    pub fn release(&mut self, value: u32) -> bool {
        if !self.is_taken(value) {
            return false;
        }
        self.bits[(value / 64) as usize] &= !(1 << (value % 64));
        self.count -= 1;
        true
    }

    /// Takes a free value chosen at random, preferring the upper band; `None` when full.
    pub fn take_next(&mut self, rng: &mut impl Rng) -> Option<u32> {
        if self.count >= self.size {
            return None;
        }
        let value = self
            .scan(self.band, self.size, rng)
            .or_else(|| self.scan(0, self.band, rng))?;
        self.take(value);
        Some(value)
    }

    /// The first free value of `[start, end)` from a random point on, wrapping around.
    fn scan(&self, start: u32, end: u32, rng: &mut impl Rng) -> Option<u32> {
        let len = end.checked_sub(start).filter(|l| *l > 0)?;
        let from = rng.random_range(0..len);
        // Whole words at a time: a nearly full /12 is 16384 words, not a million probes.
        let mut i = 0;
        while i < len {
            let value = start + (from + i) % len;
            let word = self.bits[(value / 64) as usize];
            if word == u64::MAX && value.is_multiple_of(64) && len - i >= 64 && value + 64 <= end {
                i += 64;
                continue;
            }
            if !self.is_taken(value) {
                return Some(value);
            }
            i += 1;
        }
        None
    }

    /// Every taken value, in order.
    pub fn taken(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.size).filter(|v| self.is_taken(*v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn cidrs_parse_and_exclude_network_and_broadcast() {
        let cidr: ServiceCidr = "10.43.0.0/16".parse().unwrap();
        assert_eq!(cidr, ServiceCidr::default());
        assert_eq!(cidr.to_string(), "10.43.0.0/16");
        assert_eq!(cidr.size(), 65534);
        assert_eq!(cidr.first(), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(cidr.offset_of(Ipv4Addr::new(10, 43, 0, 0)), None);
        assert_eq!(cidr.offset_of(Ipv4Addr::new(10, 43, 0, 10)), Some(9));
        assert_eq!(cidr.offset_of(Ipv4Addr::new(10, 43, 255, 254)), Some(65533));
        assert_eq!(cidr.offset_of(Ipv4Addr::new(10, 43, 255, 255)), None);
        assert_eq!(cidr.offset_of(Ipv4Addr::new(10, 44, 0, 1)), None);
        assert_eq!(cidr.ip_at(65533), Ipv4Addr::new(10, 43, 255, 254));
        assert_eq!(cidr.static_band(), 256);

        let small: ServiceCidr = "192.168.7.16/28".parse().unwrap();
        assert_eq!(small.size(), 14);
        assert_eq!(small.first(), Ipv4Addr::new(192, 168, 7, 17));
        assert_eq!(small.static_band(), 0);
        assert_eq!(
            "10.96.0.0/24".parse::<ServiceCidr>().unwrap().static_band(),
            16
        );

        for bad in [
            "10.43.0.0",
            "10.43.0.1/16",
            "10.43.0.0/31",
            "10.0.0.0/8",
            "x/16",
        ] {
            assert!(bad.parse::<ServiceCidr>().is_err(), "{bad}");
        }
        assert_eq!(
            "10.43.0.1/16"
                .parse::<ServiceCidr>()
                .unwrap_err()
                .to_string(),
            "service CIDR 10.43.0.1/16 has host bits set; did you mean 10.43.0.0/16?"
        );
    }

    #[test]
    fn port_ranges_parse_like_the_flag() {
        let range: NodePortRange = "30000-32767".parse().unwrap();
        assert_eq!(range, NodePortRange::default());
        assert_eq!(range.to_string(), "30000-32767");
        assert_eq!(range.size(), 2768);
        assert_eq!(range.static_band(), 86);
        assert_eq!(range.offset_of(29999), None);
        assert_eq!(range.offset_of(30000), Some(0));
        assert_eq!(range.offset_of(32767), Some(2767));
        assert_eq!(range.offset_of(32768), None);
        assert_eq!(range.offset_of(-1), None);
        assert_eq!(
            "30000+2768".parse::<NodePortRange>().unwrap(),
            NodePortRange::default()
        );
        assert_eq!(
            "31000-31009"
                .parse::<NodePortRange>()
                .unwrap()
                .static_band(),
            0
        );
        for bad in ["0-10", "20-10", "30000", "a-b", "65535+2"] {
            assert!(bad.parse::<NodePortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn random_picks_prefer_the_upper_band_then_fill_the_lower() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut pool = Pool::new(100, 20);
        let mut picked = Vec::new();
        for _ in 0..80 {
            picked.push(pool.take_next(&mut rng).unwrap());
        }
        assert!(picked.iter().all(|v| *v >= 20), "{picked:?}");
        for _ in 0..20 {
            let v = pool.take_next(&mut rng).unwrap();
            assert!(v < 20);
        }
        assert_eq!(pool.count(), 100);
        assert_eq!(pool.take_next(&mut rng), None);
        assert!(pool.release(5));
        assert_eq!(pool.take_next(&mut rng), Some(5));
    }

    #[test]
    fn a_large_nearly_full_pool_still_finds_its_last_free_value() {
        let mut rng = StdRng::seed_from_u64(1);
        let size = 1 << 20;
        let mut pool = Pool::new(size, 256);
        for v in 0..size {
            pool.take(v);
        }
        pool.release(123_457);
        assert_eq!(pool.take_next(&mut rng), Some(123_457));
        assert_eq!(pool.take_next(&mut rng), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Next,
        Take(u32),
        Release(u32),
        /// Releases the n-th held value (so releases hit held values often).
        ReleaseHeld(usize),
    }

    fn op(size: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Next),
            1 => (0..size + 2).prop_map(Op::Take),
            1 => (0..size + 2).prop_map(Op::Release),
            3 => any::<usize>().prop_map(Op::ReleaseHeld),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random allocate/release sequences never hand out a value twice and never lose one:
        /// the pool always agrees with a plain set of what was handed out, random picks come
        /// only from free values, and once everything is released the whole range can be
        /// handed out again.
        #[test]
        fn pools_never_duplicate_and_never_leak(
            (size, band, ops) in (1u32..200).prop_flat_map(|size| {
                (Just(size), 0..=size, proptest::collection::vec(op(size), 0..400))
            }),
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut pool = Pool::new(size, band);
            let mut held = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Next => match pool.take_next(&mut rng) {
                        Some(v) => {
                            prop_assert!(v < size);
                            prop_assert!(held.insert(v), "{v} handed out twice");
                            // The lower band only once the upper one is full.
                            if v < band.min(size) {
                                prop_assert!((band..size).all(|u| held.contains(&u)));
                            }
                        }
                        None => prop_assert_eq!(held.len() as u32, size),
                    },
                    Op::Take(v) => {
                        let newly = pool.take(v);
                        prop_assert_eq!(newly, v < size && !held.contains(&v));
                        if newly {
                            held.insert(v);
                        }
                    }
                    Op::Release(v) => {
                        prop_assert_eq!(pool.release(v), held.remove(&v));
                    }
                    Op::ReleaseHeld(n) => {
                        if let Some(v) = held.iter().nth(n % held.len().max(1)).copied() {
                            prop_assert!(pool.release(v));
                            held.remove(&v);
                        }
                    }
                }
                prop_assert_eq!(pool.count() as usize, held.len());
            }
            prop_assert_eq!(pool.taken().collect::<BTreeSet<_>>(), held.clone());
            for v in held {
                prop_assert!(pool.release(v));
            }
            prop_assert_eq!(pool.count(), 0);
            let mut all = BTreeSet::new();
            while let Some(v) = pool.take_next(&mut rng) {
                prop_assert!(all.insert(v));
            }
            prop_assert_eq!(all.len() as u32, size);
        }
    }
}
