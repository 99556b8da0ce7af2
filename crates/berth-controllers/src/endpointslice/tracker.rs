//! What the EndpointSlice controller wrote that its slice cache may not show yet (upstream's
//! `EndpointSliceTracker`).
//!
//! The reconcile decides from the cache. Deciding from a cache that misses a slice this
//! controller just created would create its endpoints a second time; one that still shows
//! a slice as it was before an update would move endpoints by stale contents. So every
//! write is remembered per Service until the cache shows it, and a reconcile that finds
//! the cache behind waits for it instead of deciding (the slice's watch event wakes it).
//! Upstream compares slice generations; the API server does not keep one for slices here,
//! so an update is seen once the cache no longer shows the resourceVersion it replaced — an
//! equality test, which holds for any API server. A record older than [`EXPIRY`] is dropped,
//! so a missed watch event delays a Service, never stops it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::runtime::ObjectKey;

/// How long a write may stay unseen before the controller stops waiting for it.
pub const EXPIRY: Duration = Duration::from_secs(30);

/// What the cache should show of one slice the controller wrote.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// Created: the slice is in the cache.
    Present,
    /// Updated: the cache no longer shows the slice at this resourceVersion.
    Replaced(Option<String>),
    /// Deleted: the slice is gone from the cache (or being deleted).
    Gone,
}

/// Per Service, per slice uid: what the cache should show, and since when.
type Writes = HashMap<ObjectKey, HashMap<String, (Expect, Instant)>>;

/// Writes not yet seen.
#[derive(Default)]
pub struct Tracker {
    writes: Mutex<Writes>,
}

impl Tracker {
    /// The controller created `slice` (as the API server returned it) for `service`.
    pub fn created(&self, service: &ObjectKey, slice: &EndpointSlice, now: Instant) {
        self.record(service, slice.metadata.uid.as_deref(), Expect::Present, now);
    }

    /// The controller updated the slice `uid` that it had read at `resource_version`.
    pub fn updated(
        &self,
        service: &ObjectKey,
        uid: Option<&str>,
        resource_version: Option<String>,
        now: Instant,
    ) {
        self.record(service, uid, Expect::Replaced(resource_version), now);
    }

    /// The controller deleted the slice `uid`.
    pub fn deleted(&self, service: &ObjectKey, uid: Option<&str>, now: Instant) {
        self.record(service, uid, Expect::Gone, now);
    }

    fn record(&self, service: &ObjectKey, uid: Option<&str>, expect: Expect, now: Instant) {
        let Some(uid) = uid else {
            return;
        };
        self.lock()
            .entry(service.clone())
            .or_default()
            .insert(uid.to_string(), (expect, now));
    }

    /// The slice `uid` of `service` left the cache: nothing written to it can show any more.
    pub fn forget(&self, service: &ObjectKey, uid: &str) {
        let mut writes = self.lock();
        if let Some(slices) = writes.get_mut(service) {
            slices.remove(uid);
            if slices.is_empty() {
                writes.remove(service);
            }
        }
    }

    /// True when `slices` (the service's slices in the cache, those being deleted included)
    /// miss a write of this controller. Writes the cache shows, and expired ones, are
    /// forgotten.
    pub fn stale(&self, service: &ObjectKey, slices: &[&EndpointSlice], now: Instant) -> bool {
        let mut writes = self.lock();
        let Some(pending) = writes.get_mut(service) else {
            return false;
        };
        pending.retain(|uid, (expect, at)| {
            if now.duration_since(*at) > EXPIRY {
                return false;
            }
            let cached = slices
                .iter()
                .find(|s| s.metadata.uid.as_deref() == Some(uid.as_str()));
            let seen = match expect {
                Expect::Present => cached.is_some(),
                Expect::Replaced(old) => cached.is_none_or(|s| s.metadata.resource_version != *old),
                Expect::Gone => cached.is_none_or(|s| s.metadata.deletion_timestamp.is_some()),
            };
            !seen
        });
        let stale = !pending.is_empty();
        if !stale {
            writes.remove(service);
        }
        stale
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writes> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(uid: &str, rv: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn key() -> ObjectKey {
        (Some("ns".into()), "web".into())
    }

    #[test]
    fn the_cache_is_stale_until_it_shows_each_write() {
        let tracker = Tracker::default();
        let now = Instant::now();
        assert!(!tracker.stale(&key(), &[], now));

        tracker.created(&key(), &slice("a", "5"), now);
        assert!(tracker.stale(&key(), &[], now));
        assert!(!tracker.stale(&key(), &[&slice("a", "5")], now));

        tracker.updated(&key(), Some("a"), Some("5".into()), now);
        assert!(tracker.stale(&key(), &[&slice("a", "5")], now));
        assert!(!tracker.stale(&key(), &[&slice("a", "6")], now));

        tracker.deleted(&key(), Some("a"), now);
        assert!(tracker.stale(&key(), &[&slice("a", "6")], now));
        let mut going = slice("a", "7");
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(!tracker.stale(&key(), &[&going], now));
        assert!(tracker.lock().is_empty(), "seen writes are forgotten");
    }

    #[test]
    fn a_deleted_slice_or_an_old_write_stops_the_wait() {
        let tracker = Tracker::default();
        let now = Instant::now();
        tracker.created(&key(), &slice("a", "5"), now);
        tracker.forget(&key(), "a");
        assert!(!tracker.stale(&key(), &[], now));

        tracker.created(&key(), &slice("b", "5"), now);
        assert!(tracker.stale(&key(), &[], now + EXPIRY));
        assert!(!tracker.stale(&key(), &[], now + EXPIRY + Duration::from_secs(1)));
    }
}
