//! When to look at a pending pod again: at once if the world it was judged against has changed
//! (a fingerprint of the nodes, the bound pods and the pod's own spec), otherwise after a
//! back-off that doubles from 1 s to 10 s per failed attempt. This is kube-scheduler's
//! unschedulable queue reduced to what one machine needs; it only decides *whether* a pod is
//! looked at, never *how* — the reconcile is the same whatever woke it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const INITIAL: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(10);

/// The delay after `attempts` failures (1 s, 2 s, 4 s, 8 s, then 10 s).
pub fn delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    INITIAL.saturating_mul(1 << doublings).min(MAX)
}

#[derive(Debug)]
struct Entry {
    attempts: u32,
    due: Instant,
    fingerprint: u64,
}

/// Per-pod (by uid) back-off state.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// Should the pod be evaluated now? Yes if it never failed, if its world changed since it
    /// last failed, or if its back-off has run out.
    pub fn is_due(&self, uid: &str, fingerprint: u64, now: Instant) -> bool {
        self.entries
            .get(uid)
            .is_none_or(|e| e.fingerprint != fingerprint || now >= e.due)
    }

    /// Records a failed attempt against the world `fingerprint`.
    pub fn failed(&mut self, uid: &str, fingerprint: u64, now: Instant) {
        let entry = self.entries.entry(uid.to_string()).or_insert(Entry {
            attempts: 0,
            due: now,
            fingerprint,
        });
        entry.attempts = entry.attempts.saturating_add(1);
        entry.due = now + delay(entry.attempts);
        entry.fingerprint = fingerprint;
    }

    pub fn forget(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    /// Drops the state of pods that are no longer pending.
    pub fn retain(&mut self, mut pending: impl FnMut(&str) -> bool) {
        self.entries.retain(|uid, _| pending(uid));
    }

    /// The earliest moment a back-off runs out.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_one_second_to_ten() {
        let secs: Vec<u64> = (1..=7).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn due_when_new_changed_or_expired() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert!(b.is_due("p", 1, now));
        b.failed("p", 1, now);
        assert!(!b.is_due("p", 1, now));
        assert!(b.is_due("p", 2, now), "the world changed");
        assert!(b.is_due("p", 1, now + Duration::from_secs(1)));
        b.failed("p", 1, now);
        assert!(!b.is_due("p", 1, now + Duration::from_secs(1)));
        assert_eq!(b.next_due(), Some(now + Duration::from_secs(2)));
        b.retain(|uid| uid != "p");
        assert!(b.is_due("p", 1, now));
        assert_eq!(b.next_due(), None);
    }
}
