//! Pod IP addresses from the pod CIDR, as CNI's host-local IPAM keeps them: one file per
//! allocated address, named by the address and holding its owner (the pod uid), created with
//! `O_EXCL` so an address can never be handed out twice, and made durable (file and directory
//! fsynced) before it is used, so a restart of berth neither leaks nor duplicates addresses.
//!
//! Allocation goes round-robin from the last address handed out, as host-local does, so an
//! address just freed is not reused at once (a client still talking to the old pod would
//! reach the new one). One process owns the directory (the data dir is locked); the in-memory
//! index is a cache of the files, rebuilt at open.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Cidr, NetError};

/// Allocated addresses of one pod network, kept in `dir`.
pub struct Ipam {
    dir: PathBuf,
    cidr: Cidr,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// address → owner.
    owners: BTreeMap<Ipv4Addr, String>,
    last: Option<Ipv4Addr>,
}

const LAST_FILE: &str = "last_reserved_ip";

impl Ipam {
    /// Opens (creating) the allocation directory and reads what is allocated.
    pub fn open(dir: &Path, cidr: Cidr) -> Result<Ipam, NetError> {
        // Owner-only, like the rest of berth's state (reliability case E5).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(NetError::io("creating", dir))?;
        let mut state = State::default();
        for entry in std::fs::read_dir(dir).map_err(NetError::io("reading", dir))? {
            let entry = entry.map_err(NetError::io("reading", dir))?;
            let name = entry.file_name();
            let Some(address) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let owner = std::fs::read_to_string(entry.path())
                .map_err(NetError::io("reading", &entry.path()))?;
            state.owners.insert(address, owner.trim().to_string());
        }
        state.last = std::fs::read_to_string(dir.join(LAST_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Ok(Ipam {
            dir: dir.to_path_buf(),
            cidr,
            state: Mutex::new(state),
        })
    }

    /// The address of `owner`, allocating one if it has none (idempotent).
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, NetError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((address, _)) = state.owners.iter().find(|(_, o)| *o == owner) {
            return Ok(*address);
        }
        let hosts = self.cidr.pod_addresses();
        let count = hosts.len();
        let start = state
            .last
            .and_then(|last| hosts.index_of(last))
            .map_or(0, |i| (i + 1) % count.max(1));
        for step in 0..count {
            let address = hosts.nth((start + step) % count);
            if state.owners.contains_key(&address) {
                continue;
            }
            let path = self.dir.join(address.to_string());
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            let mut file = match created {
                Ok(file) => file,
                // Someone else's file we did not know of (it cannot happen with one owner of
                // the directory, but the file is the truth): skip the address.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NetError::Io(format!("creating {}", path.display()), e)),
            };
            file.write_all(owner.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(NetError::io("writing", &path))?;
            let _ = crate::write_private(&self.dir.join(LAST_FILE), &address.to_string());
            self.sync_dir()?;
            state.owners.insert(address, owner.to_string());
            state.last = Some(address);
            return Ok(address);
        }
        Err(NetError::Exhausted(self.cidr.to_string()))
    }

    /// Frees whatever `owner` holds (idempotent).
    pub fn release(&self, owner: &str) -> Result<(), NetError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let held: Vec<Ipv4Addr> = state
            .owners
            .iter()
            .filter(|(_, o)| *o == owner)
            .map(|(a, _)| *a)
            .collect();
        for address in held {
            let path = self.dir.join(address.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(NetError::Io(format!("removing {}", path.display()), e)),
            }
            state.owners.remove(&address);
        }
        self.sync_dir()
    }

    /// The owners holding addresses now.
    pub fn owners(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.owners.values().cloned().collect()
    }

    /// The address `owner` holds, if any.
    pub fn address_of(&self, owner: &str) -> Option<Ipv4Addr> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .owners
            .iter()
            .find(|(_, o)| *o == owner)
            .map(|(a, _)| *a)
    }

    fn sync_dir(&self) -> Result<(), NetError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(NetError::io("syncing", &self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("valid CIDR")
    }

    #[test]
    fn allocations_are_idempotent_round_robin_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ipam = Ipam::open(dir.path(), cidr("10.42.0.0/29")).expect("open");
        let a = ipam.allocate("pod-a").expect("a");
        assert_eq!(
            a,
            Ipv4Addr::new(10, 42, 0, 2),
            "the gateway .1 is never handed out"
        );
        assert_eq!(ipam.allocate("pod-a").expect("again"), a);
        let b = ipam.allocate("pod-b").expect("b");
        assert_eq!(b, Ipv4Addr::new(10, 42, 0, 3));
        ipam.release("pod-a").expect("release");
        // Round robin: the freed .2 is not the next one handed out.
        assert_eq!(
            ipam.allocate("pod-c").expect("c"),
            Ipv4Addr::new(10, 42, 0, 4)
        );
        drop(ipam);
        let reopened = Ipam::open(dir.path(), cidr("10.42.0.0/29")).expect("reopen");
        assert_eq!(reopened.address_of("pod-b"), Some(b));
        assert_eq!(reopened.address_of("pod-a"), None);
        assert_eq!(
            reopened.allocate("pod-d").expect("d"),
            Ipv4Addr::new(10, 42, 0, 5)
        );
    }

    #[test]
    fn a_full_range_is_an_error_not_a_duplicate() {
        let dir = tempfile::tempdir().expect("temp dir");
        // /29: .0 network, .1 gateway, .7 broadcast: five pod addresses.
        let ipam = Ipam::open(dir.path(), cidr("10.42.0.0/29")).expect("open");
        let got: HashSet<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}")).expect("allocate"))
            .collect();
        assert_eq!(got.len(), 5);
        assert!(matches!(
            ipam.allocate("one-too-many"),
            Err(NetError::Exhausted(_))
        ));
    }

    proptest::proptest! {
        // Each step fsyncs; a few dozen sequences find what hundreds would.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Any sequence of allocations, releases and reopenings keeps one address per owner
        /// and one owner per address, and what is on disk is what is in memory.
        #[test]
        fn no_duplicates_and_no_leaks(ops in proptest::collection::vec((0u8..3, 0u8..12), 1..80)) {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut ipam = Ipam::open(dir.path(), cidr("10.42.0.0/28")).expect("open");
            let mut model: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
            for (op, who) in ops {
                let owner = format!("pod-{who}");
                match op {
                    0 => match ipam.allocate(&owner) {
                        Ok(address) => {
                            if let Some(old) = model.get(&owner) {
                                proptest::prop_assert_eq!(*old, address);
                            }
                            proptest::prop_assert!(
                                model.iter().all(|(o, a)| *a != address || *o == owner),
                                "{} handed out twice", address
                            );
                            model.insert(owner, address);
                        }
                        Err(NetError::Exhausted(_)) => proptest::prop_assert!(model.len() >= 13),
                        Err(e) => proptest::prop_assert!(false, "{}", e),
                    },
                    1 => {
                        ipam.release(&owner).expect("release");
                        model.remove(&owner);
                    }
                    _ => ipam = Ipam::open(dir.path(), cidr("10.42.0.0/28")).expect("reopen"),
                }
            }
            let mut owners = ipam.owners();
            owners.sort();
            proptest::prop_assert_eq!(owners, model.keys().cloned().collect::<Vec<_>>());
            let files = std::fs::read_dir(dir.path())
                .expect("read")
                .filter(|e| e.as_ref().is_ok_and(|e| e.file_name() != LAST_FILE))
                .count();
            proptest::prop_assert_eq!(files, model.len());
        }
    }
}
