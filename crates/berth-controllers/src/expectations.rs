//! What a controller has created or deleted and not yet seen in its watch cache.
//!
//! A controller reads its pods (or ReplicaSets) from a cache that lags its own writes. If it
//! created two pods and reconciles again before the cache shows them, it would count too few
//! and create two more. Upstream counts pending adds and deletes per controller and decrements
//! them from watch events; here the expectation remembers *which* objects it waits for and is
//! satisfied when the cache shows them — level-triggered, so a missed event cannot wedge it.
//! An expectation older than [`EXPECTATION_TIMEOUT`] is dropped, as upstream does, so a lost
//! write cannot stop a controller for good.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a controller waits to see its own writes before acting without them.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
struct Pending {
    /// Names of created objects the cache does not show yet.
    created: HashSet<String>,
    /// Uids of deleted objects the cache still shows (without a deletionTimestamp).
    deleted: HashSet<String>,
    since: Option<Instant>,
}

/// Per-controller-object expectations, keyed by the owner's uid.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// `owner` created objects named `names`.
    pub fn expect_created(&self, owner: &str, names: impl IntoIterator<Item = String>) {
        self.with(owner, |p| p.created.extend(names));
    }

    /// `owner` deleted objects with these uids.
    pub fn expect_deleted(&self, owner: &str, uids: impl IntoIterator<Item = String>) {
        self.with(owner, |p| p.deleted.extend(uids));
    }

    /// A create that failed will never show up: stop waiting for it.
    pub fn creation_failed(&self, owner: &str, name: &str) {
        self.with(owner, |p| {
            p.created.remove(name);
        });
    }

    /// True when the cache has caught up with `owner`'s writes: every created name is
    /// `present` and every deleted uid is `gone` (absent or terminating). Satisfied
    /// expectations are forgotten.
    pub fn satisfied(
        &self,
        owner: &str,
        present: impl Fn(&str) -> bool,
        gone: impl Fn(&str) -> bool,
    ) -> bool {
        let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = all.get_mut(owner) else {
            return true;
        };
        pending.created.retain(|name| !present(name));
        pending.deleted.retain(|uid| !gone(uid));
        let expired = pending
            .since
            .is_some_and(|since| since.elapsed() >= EXPECTATION_TIMEOUT);
        if expired || (pending.created.is_empty() && pending.deleted.is_empty()) {
            all.remove(owner);
            return true;
        }
        false
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner);
    }

    fn with(&self, owner: &str, f: impl FnOnce(&mut Pending)) {
        let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let pending = all.entry(owner.to_string()).or_default();
        pending.since.get_or_insert_with(Instant::now);
        f(pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_the_cache_shows_every_write() {
        let e = Expectations::default();
        assert!(e.satisfied("rs", |_| false, |_| false));
        e.expect_created("rs", ["a".to_string(), "b".to_string()]);
        e.expect_deleted("rs", ["uid-c".to_string()]);
        assert!(!e.satisfied("rs", |n| n == "a", |_| true));
        assert!(
            !e.satisfied("rs", |_| false, |_| true),
            "b is still missing"
        );
        e.creation_failed("rs", "b");
        assert!(e.satisfied("rs", |_| false, |_| true));
        assert!(
            e.satisfied("rs", |_| false, |_| false),
            "forgotten once satisfied"
        );
    }
}
