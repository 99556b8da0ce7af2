//! The store's behaviour written down as a test suite every backend must pass unchanged.
//!
//! Each case is a `pub async fn(Arc<dyn Store>)` that panics on a violation. A backend runs them
//! with [`conformance_tests!`](crate::conformance_tests), which generates one `#[tokio::test]`
//! per case (the calling crate needs `tokio` with `macros` and `rt-multi-thread`):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use berth_store::Store;
//! use berth_store::memory::MemoryStore;
//!
//! async fn make() -> Arc<dyn Store> {
//!     MemoryStore::new()
//! }
//!
//! berth_store::conformance_tests!(make);
//! # fn main() {}
//! ```
//!
//! or with [`run_all`] from a single test. The factory is called once per case and returns
//! anything [`IntoFixture`]: the store alone, or `(store, guard)` where the guard (a temporary
//! directory, a test server) lives until the case has finished and the store is dropped.
//!
//! The cases are written so an etcd-backed store can pass them too: they use absolute
//! revisions only relative to the revision they start at, keep their keys under a
//! per-case prefix, and never rely on more than one revision per transaction (etcd gives all
//! ops of a txn the same revision; berth's own backends give one per write op, which their own
//! tests check). Watch assertions that "nothing else arrives" wait for a
//! [`WatchItem::Progress`] covering the last expected revision rather than for a timeout, so no
//! case depends on timing; the timeouts below only turn a hang into a failure.

use std::any::Any;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::ops::{self, Written};
use crate::{
    Compare, Event, EventKind, KeyValue, Op, OpResponse, RangeRequest, Revision, Store, StoreError,
    Txn, WatchItem, WatchOptions, WatchStream,
};

/// Longest wait for anything a case expects; only reached when the backend is broken.
const TIMEOUT: Duration = Duration::from_secs(20);

/// What a factory hands the suite.
pub trait IntoFixture {
    /// The store, and whatever must outlive it (dropped after the store).
    fn into_fixture(self) -> (Arc<dyn Store>, Box<dyn Any + Send>);
}

impl IntoFixture for Arc<dyn Store> {
    fn into_fixture(self) -> (Arc<dyn Store>, Box<dyn Any + Send>) {
        (self, Box::new(()))
    }
}

impl<S: Store> IntoFixture for Arc<S> {
    fn into_fixture(self) -> (Arc<dyn Store>, Box<dyn Any + Send>) {
        (self, Box::new(()))
    }
}

impl<G: Send + 'static> IntoFixture for (Arc<dyn Store>, G) {
    fn into_fixture(self) -> (Arc<dyn Store>, Box<dyn Any + Send>) {
        (self.0, Box::new(self.1))
    }
}

/// Lists every case; `$callback` receives `$args; [case, ...]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! { $($args)* [
            create_if_absent,
            update_and_delete_compare_mod_revision,
            revisions_increase_by_one_per_write,
            create_revision_across_delete_and_recreate,
            txn_success_and_failure_branches,
            values_are_opaque_bytes,
            range_prefix_limit_more,
            range_at_old_revision,
            range_future_revision,
            range_compacted_revision,
            watch_replays_then_follows_live,
            watch_prefix_filters_keys,
            watch_delete_carries_prev_kv,
            watch_from_compacted_revision_fails,
            watch_from_current_sees_only_new,
            watch_long_replay_is_complete,
            watchers_see_identical_sequences,
            compaction_keeps_latest_values,
            compact_future_fails_and_repeat_is_noop,
            progress_when_idle,
            concurrent_txns_get_unique_revisions,
            concurrent_compare_and_swap,
        ] }
    };
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is a factory expression (a
/// closure or function path) returning a future of something [`IntoFixture`].
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__store_conformance_cases!(__store_conformance_emit_tests, $make;);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_emit_tests {
    ($make:expr; [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let make = $make;
                let (store, guard) = $crate::conformance::IntoFixture::into_fixture(make().await);
                $crate::conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_emit_run {
    ($make:expr; [$($case:ident),* $(,)?]) => {
        $(
            {
                tracing::info!(case = stringify!($case), "store conformance");
                let (store, guard) = $crate::conformance::IntoFixture::into_fixture($make().await);
                $crate::conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}

/// Runs every case in turn, each on a fresh fixture from `make`.
pub async fn run_all<F, Fut, B>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
    B: IntoFixture,
{
    crate::__store_conformance_cases!(__store_conformance_emit_run, make;);
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn bytes(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: bytes(value),
        create_revision,
        mod_revision,
    }
}

async fn current(store: &dyn Store) -> Revision {
    store.revisions().await.expect("revisions").current
}

/// A transaction that only puts `value` at `key`, unconditionally.
pub fn put_txn(key: &str, value: &str) -> Txn {
    Txn {
        success: vec![Op::Put {
            key: key.to_string(),
            value: bytes(value),
        }],
        ..Default::default()
    }
}

/// Puts `value` at `key` (panicking on failure, as a test helper); the write's revision.
pub async fn put(store: &dyn Store, key: &str, value: &str) -> Revision {
    let response = store.txn(put_txn(key, value)).await.expect("put");
    match response.responses.first() {
        Some(OpResponse::Put { revision, .. }) => *revision,
        other => panic!("put {key}: unexpected response {other:?}"),
    }
}

async fn delete(store: &dyn Store, key: &str) -> Revision {
    let txn = Txn {
        success: vec![Op::Delete {
            key: key.to_string(),
        }],
        ..Default::default()
    };
    let response = store.txn(txn).await.expect("delete");
    match response.responses.first() {
        Some(OpResponse::Delete {
            revision,
            prev: Some(_),
        }) => *revision,
        other => panic!("delete {key}: unexpected response {other:?}"),
    }
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    ops::get(store, key).await.expect("get").0
}

async fn create(store: &dyn Store, key: &str, value: &str) -> Revision {
    match ops::create(store, key, bytes(value)).await.expect("create") {
        Written::Ok(revision) => revision,
        other => panic!("create {key}: {other:?}"),
    }
}

async fn list(store: &dyn Store, prefix: &str, revision: Option<Revision>) -> Vec<KeyValue> {
    let request = RangeRequest {
        revision,
        ..RangeRequest::prefix(prefix)
    };
    store.range(request).await.expect("range").kvs
}

fn options() -> WatchOptions {
    WatchOptions {
        progress_interval: Duration::from_millis(20),
    }
}

async fn watch(store: &dyn Store, prefix: &str, after: Revision) -> WatchStream {
    match store.watch(prefix.to_string(), after, options()).await {
        Ok(stream) => stream,
        Err(error) => panic!("watch {prefix} after {after}: {error}"),
    }
}

/// The next item, failing the case once `deadline` passes.
async fn next_item_by(stream: &mut WatchStream, deadline: tokio::time::Instant) -> WatchItem {
    match tokio::time::timeout_at(deadline, stream.next()).await {
        Ok(Some(Ok(item))) => item,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("the watch did not deliver what was expected within {TIMEOUT:?}"),
    }
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + TIMEOUT
}

/// The next event, skipping progress items.
async fn next_event(stream: &mut WatchStream) -> Event {
    let deadline = deadline();
    loop {
        if let WatchItem::Event(event) = next_item_by(stream, deadline).await {
            return event;
        }
    }
}

async fn next_events(stream: &mut WatchStream, count: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        events.push(next_event(stream).await);
    }
    events
}

/// Asserts that no event arrives before a progress item covering `through`.
async fn expect_quiet(stream: &mut WatchStream, through: Revision) {
    let deadline = deadline();
    loop {
        match next_item_by(stream, deadline).await {
            WatchItem::Event(event) => {
                panic!("unexpected event (expected quiet through {through}): {event:?}")
            }
            WatchItem::Progress(revision) if revision >= through => return,
            WatchItem::Progress(_) => {}
        }
    }
}

fn put_event(kv: KeyValue, prev_kv: Option<KeyValue>) -> Event {
    Event {
        kind: EventKind::Put,
        kv,
        prev_kv,
    }
}

fn delete_event(key: &str, revision: Revision, prev_kv: KeyValue) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_string(),
            value: Bytes::new(),
            create_revision: 0,
            mod_revision: revision,
        },
        prev_kv: Some(prev_kv),
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Create succeeds once; a second create reports the existing value and writes nothing.
pub async fn create_if_absent(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/conformance/create/a";
    let revision = create(store, key, "one").await;
    assert_eq!(
        get(store, key).await,
        Some(kv(key, "one", revision, revision))
    );
    assert_eq!(
        ops::create(store, key, bytes("two")).await.expect("create"),
        Written::Conflict(Some(kv(key, "one", revision, revision)))
    );
    assert_eq!(
        get(store, key).await,
        Some(kv(key, "one", revision, revision))
    );
    assert_eq!(
        current(store).await,
        revision,
        "a failed create must not take a revision"
    );
}

/// Updates and deletes happen only when the expected mod_revision matches; a conflict returns
/// the current value.
pub async fn update_and_delete_compare_mod_revision(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/conformance/cas/a";
    let r1 = create(store, key, "one").await;
    let one = kv(key, "one", r1, r1);
    assert_eq!(
        ops::put_if(store, key, bytes("x"), 0)
            .await
            .expect("put_if"),
        Written::Conflict(Some(one.clone()))
    );
    assert_eq!(
        ops::put_if(store, key, bytes("x"), r1 + 1000)
            .await
            .expect("put_if"),
        Written::Conflict(Some(one.clone()))
    );
    let r2 = match ops::put_if(store, key, bytes("two"), r1)
        .await
        .expect("put_if")
    {
        Written::Ok(revision) => revision,
        other => panic!("update: {other:?}"),
    };
    assert!(r2 > r1);
    let two = kv(key, "two", r1, r2);
    assert_eq!(get(store, key).await, Some(two.clone()));
    assert_eq!(
        ops::put_if(store, key, bytes("x"), r1)
            .await
            .expect("put_if"),
        Written::Conflict(Some(two.clone()))
    );
    assert_eq!(
        ops::delete_if(store, key, r1).await.expect("delete_if"),
        Written::Conflict(Some(two.clone()))
    );
    assert_eq!(get(store, key).await, Some(two));
    let r3 = match ops::delete_if(store, key, r2).await.expect("delete_if") {
        Written::Ok(revision) => revision,
        other => panic!("delete: {other:?}"),
    };
    assert!(r3 > r2);
    assert_eq!(get(store, key).await, None);
    assert_eq!(
        ops::delete_if(store, key, r2).await.expect("delete_if"),
        Written::Conflict(None)
    );
    assert_eq!(
        ops::put_if(store, key, bytes("x"), r2)
            .await
            .expect("put_if"),
        Written::Conflict(None)
    );
    assert_eq!(current(store).await, r3);
}

/// Every write takes exactly the next revision; reads, failed compares and deletes of absent
/// keys take none.
pub async fn revisions_increase_by_one_per_write(store: Arc<dyn Store>) {
    let store = &*store;
    let start = current(store).await;
    for i in 1..=5 {
        assert_eq!(
            put(store, &format!("/conformance/rev/k{i}"), "v").await,
            start + i
        );
        assert_eq!(current(store).await, start + i);
    }
    assert_eq!(delete(store, "/conformance/rev/k1").await, start + 6);
    assert_eq!(put(store, "/conformance/rev/k2", "w").await, start + 7);

    let failed = Txn {
        compares: vec![Compare::ModRevisionEquals {
            key: "/conformance/rev/k2".to_string(),
            revision: start + 2,
        }],
        success: vec![Op::Put {
            key: "/conformance/rev/k2".to_string(),
            value: bytes("no"),
        }],
        failure: vec![],
    };
    let response = store.txn(failed).await.expect("txn");
    assert!(!response.succeeded);
    assert_eq!(response.revision, start + 7);

    let read = Txn {
        success: vec![Op::Get {
            key: "/conformance/rev/k3".to_string(),
        }],
        ..Default::default()
    };
    let response = store.txn(read).await.expect("txn");
    assert_eq!(response.revision, start + 7);

    let delete_absent = Txn {
        success: vec![Op::Delete {
            key: "/conformance/rev/none".to_string(),
        }],
        ..Default::default()
    };
    let response = store.txn(delete_absent).await.expect("txn");
    assert_eq!(response.revision, start + 7);
    assert!(matches!(
        response.responses.as_slice(),
        [OpResponse::Delete { prev: None, .. }]
    ));

    assert_eq!(current(store).await, start + 7);
    assert_eq!(put(store, "/conformance/rev/k9", "v").await, start + 8);
}

/// create_revision stays through updates and is new after delete and recreate.
pub async fn create_revision_across_delete_and_recreate(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/conformance/create-rev/a";
    let c1 = create(store, key, "one").await;
    let u1 = put(store, key, "two").await;
    let u2 = put(store, key, "three").await;
    assert_eq!(get(store, key).await, Some(kv(key, "three", c1, u2)));
    delete(store, key).await;
    let c2 = create(store, key, "again").await;
    assert!(c2 > u2);
    assert_eq!(get(store, key).await, Some(kv(key, "again", c2, c2)));
    let u3 = put(store, key, "more").await;
    assert_eq!(get(store, key).await, Some(kv(key, "more", c2, u3)));
    let old = RangeRequest {
        revision: Some(u1),
        ..RangeRequest::key(key)
    };
    assert_eq!(
        store.range(old).await.expect("range").kvs,
        vec![kv(key, "two", c1, u1)]
    );
}

/// A txn runs `success` when every compare holds, `failure` otherwise, atomically.
pub async fn txn_success_and_failure_branches(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = ("/conformance/txn/a", "/conformance/txn/b");
    let absent = |key: &str| Compare::ModRevisionEquals {
        key: key.to_string(),
        revision: 0,
    };
    let txn = Txn {
        compares: vec![absent(a), absent(b)],
        success: vec![
            Op::Put {
                key: a.to_string(),
                value: bytes("a1"),
            },
            Op::Put {
                key: b.to_string(),
                value: bytes("b1"),
            },
            Op::Get { key: a.to_string() },
        ],
        failure: vec![Op::Get { key: a.to_string() }],
    };
    let response = store.txn(txn.clone()).await.expect("txn");
    assert!(response.succeeded);
    let [
        OpResponse::Put {
            revision: ra,
            prev: None,
        },
        OpResponse::Put {
            revision: rb,
            prev: None,
        },
        OpResponse::Get { kv: Some(got) },
    ] = response.responses.as_slice()
    else {
        panic!("unexpected responses {:?}", response.responses);
    };
    assert!(ra <= rb && *rb <= response.revision);
    assert_eq!(got, &kv(a, "a1", *ra, *ra));
    assert_eq!(current(store).await, response.revision);
    assert_eq!(
        list(store, "/conformance/txn/", None).await,
        vec![kv(a, "a1", *ra, *ra), kv(b, "b1", *rb, *rb)]
    );

    // Same txn again: the keys exist now, so the failure branch runs and nothing is written.
    let before = current(store).await;
    let response = store.txn(txn).await.expect("txn");
    assert!(!response.succeeded);
    assert_eq!(response.revision, before);
    assert_eq!(
        response.responses,
        vec![OpResponse::Get {
            kv: Some(kv(a, "a1", *ra, *ra))
        }]
    );
    assert_eq!(current(store).await, before);

    // One compare holding is not enough.
    let mixed = Txn {
        compares: vec![
            Compare::ModRevisionEquals {
                key: a.to_string(),
                revision: *ra,
            },
            Compare::ModRevisionEquals {
                key: b.to_string(),
                revision: 0,
            },
        ],
        success: vec![Op::Delete { key: a.to_string() }],
        failure: vec![],
    };
    let response = store.txn(mixed).await.expect("txn");
    assert!(!response.succeeded);
    assert!(response.responses.is_empty());
    assert_eq!(get(store, a).await, Some(kv(a, "a1", *ra, *ra)));

    // An unconditional put reports the value it replaced.
    let overwrite = Txn {
        success: vec![Op::Put {
            key: a.to_string(),
            value: bytes("a2"),
        }],
        ..Default::default()
    };
    let response = store.txn(overwrite).await.expect("txn");
    assert!(matches!(
        response.responses.as_slice(),
        [OpResponse::Put { prev: Some(prev), .. }] if *prev == kv(a, "a1", *ra, *ra)
    ));
}

/// Values are bytes: empty and non-UTF-8 values round-trip through reads and watches.
pub async fn values_are_opaque_bytes(store: Arc<dyn Store>) {
    let store = &*store;
    let start = current(store).await;
    let binary = Bytes::from_static(&[0, 159, 146, 150, 255, 0]);
    for (key, value) in [
        ("/conformance/bytes/empty", Bytes::new()),
        ("/conformance/bytes/binary", binary),
    ] {
        let txn = Txn {
            success: vec![Op::Put {
                key: key.to_string(),
                value: value.clone(),
            }],
            ..Default::default()
        };
        store.txn(txn).await.expect("put");
        assert_eq!(
            get(store, key).await.map(|kv| kv.value),
            Some(value.clone())
        );
    }
    let mut stream = watch(store, "/conformance/bytes/", start).await;
    let events = next_events(&mut stream, 2).await;
    assert_eq!(events[0].kv.value, Bytes::new());
    assert_eq!(events[1].kv.value.as_ref(), &[0, 159, 146, 150, 255, 0]);
}

/// Prefix and interval reads return keys in order, honour `limit` and report `more`.
pub async fn range_prefix_limit_more(store: Arc<dyn Store>) {
    let store = &*store;
    let keys = [
        "/conformance/range/a/3",
        "/conformance/range/a/1",
        "/conformance/range/ab",
        "/conformance/range/a/2",
    ];
    for key in keys {
        create(store, key, key).await;
    }
    create(store, "/conformance/range/a/4", "4").await;
    create(store, "/conformance/range/b/1", "b").await;
    let now = current(store).await;
    let names = |response: &crate::RangeResponse| {
        response
            .kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>()
    };

    let all_a = [
        "/conformance/range/a/1",
        "/conformance/range/a/2",
        "/conformance/range/a/3",
        "/conformance/range/a/4",
    ];
    let response = store
        .range(RangeRequest::prefix("/conformance/range/a/"))
        .await
        .expect("range");
    assert_eq!(names(&response), all_a);
    assert!(!response.more);
    assert_eq!(response.revision, now);

    for (limit, more) in [(1, true), (2, true), (4, false), (10, false)] {
        let request = RangeRequest {
            limit: Some(limit),
            ..RangeRequest::prefix("/conformance/range/a/")
        };
        let response = store.range(request).await.expect("range");
        assert_eq!(names(&response), all_a[..limit.min(4)], "limit {limit}");
        assert_eq!(response.more, more, "limit {limit}");
    }

    let interval = RangeRequest {
        key: "/conformance/range/a/2".to_string(),
        range_end: Some("/conformance/range/a/4".to_string()),
        ..Default::default()
    };
    assert_eq!(
        names(&store.range(interval).await.expect("range")),
        ["/conformance/range/a/2", "/conformance/range/a/3"]
    );

    let one = store
        .range(RangeRequest::key("/conformance/range/a/3"))
        .await
        .expect("range");
    assert_eq!(names(&one), ["/conformance/range/a/3"]);
    assert_eq!(one.kvs[0].value, bytes("/conformance/range/a/3"));
    let missing = store
        .range(RangeRequest::key("/conformance/range/a/9"))
        .await
        .expect("range");
    assert!(missing.kvs.is_empty() && !missing.more);
    assert_eq!(missing.revision, now);

    let everything = store
        .range(RangeRequest::prefix("/conformance/range/"))
        .await
        .expect("range");
    assert_eq!(
        names(&everything),
        [
            "/conformance/range/a/1",
            "/conformance/range/a/2",
            "/conformance/range/a/3",
            "/conformance/range/a/4",
            "/conformance/range/ab",
            "/conformance/range/b/1"
        ]
    );
    assert!(
        store
            .range(RangeRequest::prefix("/conformance/range/zz"))
            .await
            .expect("range")
            .kvs
            .is_empty()
    );
}

/// A read at an older revision sees exactly the state as of that revision.
pub async fn range_at_old_revision(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b, c) = (
        "/conformance/old/a",
        "/conformance/old/b",
        "/conformance/old/c",
    );
    let r1 = put(store, a, "1").await;
    let r2 = put(store, b, "1").await;
    let r3 = put(store, a, "2").await;
    let r4 = delete(store, b).await;
    let r5 = put(store, c, "1").await;
    put(store, a, "3").await;
    let expected = [
        (r1, vec![kv(a, "1", r1, r1)]),
        (r2, vec![kv(a, "1", r1, r1), kv(b, "1", r2, r2)]),
        (r3, vec![kv(a, "2", r1, r3), kv(b, "1", r2, r2)]),
        (r4, vec![kv(a, "2", r1, r3)]),
        (r5, vec![kv(a, "2", r1, r3), kv(c, "1", r5, r5)]),
    ];
    for (revision, kvs) in expected {
        let request = RangeRequest {
            revision: Some(revision),
            ..RangeRequest::prefix("/conformance/old/")
        };
        let response = store.range(request).await.expect("range");
        assert_eq!(response.kvs, kvs, "at revision {revision}");
        assert_eq!(response.revision, revision);
    }
    let one = RangeRequest {
        revision: Some(r2),
        ..RangeRequest::key(b)
    };
    assert_eq!(
        store.range(one).await.expect("range").kvs,
        vec![kv(b, "1", r2, r2)]
    );
    let limited = RangeRequest {
        revision: Some(r3),
        limit: Some(1),
        ..RangeRequest::prefix("/conformance/old/")
    };
    let response = store.range(limited).await.expect("range");
    assert_eq!(response.kvs, vec![kv(a, "2", r1, r3)]);
    assert!(response.more);
}

/// Reading at a revision the store has not reached fails.
pub async fn range_future_revision(store: Arc<dyn Store>) {
    let store = &*store;
    put(store, "/conformance/future/a", "1").await;
    let now = current(store).await;
    let request = RangeRequest {
        revision: Some(now + 1),
        ..RangeRequest::prefix("/conformance/future/")
    };
    assert_eq!(
        store.range(request).await,
        Err(StoreError::FutureRevision {
            requested: now + 1,
            current: now
        })
    );
}

/// Reading below the compacted revision fails; at and above it works.
pub async fn range_compacted_revision(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = ("/conformance/compacted/a", "/conformance/compacted/b");
    let r1 = put(store, a, "1").await;
    let r2 = put(store, a, "2").await;
    let r3 = put(store, b, "1").await;
    let r4 = put(store, a, "3").await;
    store.compact(r3).await.expect("compact");
    assert_eq!(store.revisions().await.expect("revisions").compacted, r3);
    for old in [r1, r2] {
        let request = RangeRequest {
            revision: Some(old),
            ..RangeRequest::prefix("/conformance/compacted/")
        };
        assert_eq!(
            store.range(request).await,
            Err(StoreError::Compacted {
                requested: old,
                compacted: r3
            })
        );
    }
    assert_eq!(
        list(store, "/conformance/compacted/", Some(r3)).await,
        vec![kv(a, "2", r1, r2), kv(b, "1", r3, r3)]
    );
    assert_eq!(
        list(store, "/conformance/compacted/", Some(r4)).await,
        vec![kv(a, "3", r1, r4), kv(b, "1", r3, r3)]
    );
}

/// A watch replays exactly the events after its revision, in order, with prev_kv, then live ones.
pub async fn watch_replays_then_follows_live(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = ("/conformance/watch/a", "/conformance/watch/b");
    let r1 = put(store, a, "1").await;
    let r2 = put(store, a, "2").await;
    let r3 = put(store, b, "1").await;
    let mut stream = watch(store, "/conformance/watch/", r1).await;
    assert_eq!(
        next_events(&mut stream, 2).await,
        vec![
            put_event(kv(a, "2", r1, r2), Some(kv(a, "1", r1, r1))),
            put_event(kv(b, "1", r3, r3), None)
        ]
    );
    expect_quiet(&mut stream, r3).await;
    let r4 = put(store, a, "3").await;
    assert_eq!(
        next_event(&mut stream).await,
        put_event(kv(a, "3", r1, r4), Some(kv(a, "2", r1, r2)))
    );
    let r5 = delete(store, b).await;
    assert_eq!(
        next_event(&mut stream).await,
        delete_event(b, r5, kv(b, "1", r3, r3))
    );
    expect_quiet(&mut stream, r5).await;
}

/// A watch sees only keys under its prefix (a prefix is a string prefix, not a path segment).
pub async fn watch_prefix_filters_keys(store: Arc<dyn Store>) {
    let store = &*store;
    let start = current(store).await;
    let mut live = watch(store, "/conformance/prefix/a/", start).await;
    let r1 = put(store, "/conformance/prefix/a/1", "x").await;
    put(store, "/conformance/prefix/b/1", "x").await;
    put(store, "/conformance/prefix/ab", "x").await;
    put(store, "/conformance/prefix/a", "x").await;
    let r2 = put(store, "/conformance/prefix/a/2", "x").await;
    put(store, "/conformance/prefix/b/2", "x").await;
    let end = current(store).await;
    let expected = vec![
        put_event(kv("/conformance/prefix/a/1", "x", r1, r1), None),
        put_event(kv("/conformance/prefix/a/2", "x", r2, r2), None),
    ];
    assert_eq!(next_events(&mut live, 2).await, expected);
    expect_quiet(&mut live, end).await;
    let mut replayed = watch(store, "/conformance/prefix/a/", start).await;
    assert_eq!(next_events(&mut replayed, 2).await, expected);
    expect_quiet(&mut replayed, end).await;
}

/// A delete event carries the deleted value as prev_kv, live and replayed alike.
pub async fn watch_delete_carries_prev_kv(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/conformance/watch-delete/a";
    let start = current(store).await;
    let c1 = create(store, key, "v1").await;
    let u1 = put(store, key, "v2").await;
    let mut live = watch(store, "/conformance/watch-delete/", u1).await;
    let d1 = delete(store, key).await;
    let expected = delete_event(key, d1, kv(key, "v2", c1, u1));
    assert_eq!(next_event(&mut live).await, expected);
    let mut replayed = watch(store, "/conformance/watch-delete/", start).await;
    assert_eq!(
        next_events(&mut replayed, 3).await,
        vec![
            put_event(kv(key, "v1", c1, c1), None),
            put_event(kv(key, "v2", c1, u1), Some(kv(key, "v1", c1, c1))),
            expected,
        ]
    );
    expect_quiet(&mut replayed, d1).await;
}

/// Watching from below the compacted revision fails at once; from it, works.
pub async fn watch_from_compacted_revision_fails(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/conformance/watch-compacted/a";
    let r1 = put(store, key, "1").await;
    let r2 = put(store, key, "2").await;
    let r3 = put(store, key, "3").await;
    store.compact(r2).await.expect("compact");
    match store
        .watch("/conformance/watch-compacted/".to_string(), r1, options())
        .await
    {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, r2),
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let mut stream = watch(store, "/conformance/watch-compacted/", r2).await;
    // The value r3 replaced is the latest one at the compact point, which compaction keeps.
    assert_eq!(
        next_event(&mut stream).await,
        put_event(kv(key, "3", r1, r3), Some(kv(key, "2", r1, r2)))
    );
    expect_quiet(&mut stream, r3).await;
}

/// A watch from the current revision has nothing to replay and sees only later writes.
pub async fn watch_from_current_sees_only_new(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/conformance/watch-now/a";
    put(store, key, "old").await;
    let now = current(store).await;
    let mut stream = watch(store, "/conformance/watch-now/", now).await;
    expect_quiet(&mut stream, now).await;
    let r = put(store, key, "new").await;
    let event = next_event(&mut stream).await;
    assert_eq!(event.kv.mod_revision, r);
    assert_eq!(event.kv.value, bytes("new"));
    expect_quiet(&mut stream, r).await;
}

/// A watch from far back replays a long history completely and in order.
pub async fn watch_long_replay_is_complete(store: Arc<dyn Store>) {
    let store = &*store;
    const TXNS: usize = 25;
    const PER_TXN: usize = 100;
    let start = current(store).await;
    for t in 0..TXNS {
        let success = (0..PER_TXN)
            .map(|i| Op::Put {
                key: format!("/conformance/long/{:05}", t * PER_TXN + i),
                value: bytes("v"),
            })
            .collect();
        store
            .txn(Txn {
                success,
                ..Default::default()
            })
            .await
            .expect("txn");
    }
    let end = current(store).await;
    let mut stream = watch(store, "/conformance/long/", start).await;
    let events = next_events(&mut stream, TXNS * PER_TXN).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.kv.key, format!("/conformance/long/{i:05}"));
    }
    assert!(
        events
            .windows(2)
            .all(|pair| pair[0].kv.mod_revision <= pair[1].kv.mod_revision)
    );
    expect_quiet(&mut stream, end).await;
}

/// Watchers of the same prefix from the same revision see the same sequence, under concurrent writes.
pub async fn watchers_see_identical_sequences(store: Arc<dyn Store>) {
    let start = current(&*store).await;
    let mut first = watch(&*store, "/conformance/agree/", start).await;
    let mut writers = Vec::new();
    for task in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10 {
                put(&*store, &format!("/conformance/agree/{task}/{i}"), "v").await;
            }
        }));
    }
    // The second watcher starts mid-way, from the same revision: part replay, part live.
    let mut second = watch(&*store, "/conformance/agree/", start).await;
    for writer in writers {
        writer.await.expect("writer task");
    }
    let a = next_events(&mut first, 80).await;
    let b = next_events(&mut second, 80).await;
    assert_eq!(a, b);
    assert!(
        a.windows(2)
            .all(|pair| pair[0].kv.mod_revision < pair[1].kv.mod_revision)
    );
    let end = current(&*store).await;
    expect_quiet(&mut first, end).await;
    expect_quiet(&mut second, end).await;
}

/// Compaction keeps the latest value of every live key, keeps deleted keys deleted, and the
/// store carries on from the same revision.
pub async fn compaction_keeps_latest_values(store: Arc<dyn Store>) {
    let store = &*store;
    let prefix = "/conformance/compaction/";
    let (a, b, c, d) = (
        "/conformance/compaction/a",
        "/conformance/compaction/b",
        "/conformance/compaction/c",
        "/conformance/compaction/d",
    );
    for value in ["1", "2", "3"] {
        put(store, a, value).await;
    }
    put(store, b, "1").await;
    delete(store, b).await;
    put(store, c, "1").await;
    delete(store, c).await;
    put(store, c, "2").await;
    put(store, d, "1").await;
    let before = list(store, prefix, None).await;
    assert_eq!(
        before.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        [a, c, d]
    );
    let point = current(store).await;
    store.compact(point).await.expect("compact");
    assert_eq!(list(store, prefix, None).await, before);
    assert_eq!(list(store, prefix, Some(point)).await, before);
    assert_eq!(get(store, b).await, None);
    let revisions = store.revisions().await.expect("revisions");
    assert_eq!((revisions.current, revisions.compacted), (point, point));

    let mut stream = watch(store, prefix, point).await;
    let r = put(store, a, "4").await;
    assert_eq!(r, point + 1);
    let latest_a = before[0].clone();
    assert_eq!(
        next_event(&mut stream).await,
        put_event(kv(a, "4", latest_a.create_revision, r), Some(latest_a))
    );
    let r = delete(store, d).await;
    assert_eq!(
        next_event(&mut stream).await,
        delete_event(d, r, before[2].clone())
    );
    let r = put(store, b, "new").await;
    assert_eq!(
        next_event(&mut stream).await,
        put_event(kv(b, "new", r, r), None)
    );
}

/// Compacting beyond the current revision fails; compacting at or below the compacted revision
/// changes nothing. (etcd answers the latter with ErrCompacted; an etcd backend maps that to Ok.)
pub async fn compact_future_fails_and_repeat_is_noop(store: Arc<dyn Store>) {
    let store = &*store;
    put(store, "/conformance/compact-twice/a", "1").await;
    put(store, "/conformance/compact-twice/a", "2").await;
    let now = current(store).await;
    assert_eq!(
        store.compact(now + 1).await,
        Err(StoreError::FutureRevision {
            requested: now + 1,
            current: now
        })
    );
    store.compact(now).await.expect("compact");
    store.compact(now).await.expect("compact again");
    store.compact(now - 1).await.expect("compact lower");
    let revisions = store.revisions().await.expect("revisions");
    assert_eq!((revisions.current, revisions.compacted), (now, now));
}

/// An idle watch sends progress items, each covering everything delivered.
pub async fn progress_when_idle(store: Arc<dyn Store>) {
    let store = &*store;
    let r1 = put(store, "/conformance/progress/a", "1").await;
    let mut stream = watch(store, "/conformance/progress/", r1).await;
    let mut seen = 0;
    let by = deadline();
    while seen < 3 {
        match next_item_by(&mut stream, by).await {
            WatchItem::Progress(revision) => {
                assert!(revision >= r1);
                seen += 1;
            }
            WatchItem::Event(event) => panic!("unexpected event {event:?}"),
        }
    }
    // Writes elsewhere move progress forward too: nothing under the prefix is pending up to them.
    let other = put(store, "/conformance/elsewhere", "1").await;
    expect_quiet(&mut stream, other).await;
    let r2 = put(store, "/conformance/progress/a", "2").await;
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, r2);
    expect_quiet(&mut stream, r2).await;
}

/// Many tasks writing at once all succeed, with unique revisions and nothing lost.
pub async fn concurrent_txns_get_unique_revisions(store: Arc<dyn Store>) {
    const TASKS: usize = 64;
    const PER_TASK: usize = 4;
    let start = current(&*store).await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..PER_TASK {
                revisions.push(
                    create(
                        &*store,
                        &format!("/conformance/concurrent/{task:02}/{i}"),
                        "v",
                    )
                    .await,
                );
            }
            revisions
        }));
    }
    let mut revisions = BTreeSet::new();
    for task in tasks {
        for revision in task.await.expect("task") {
            assert!(
                revisions.insert(revision),
                "revision {revision} given twice"
            );
        }
    }
    let total = (TASKS * PER_TASK) as Revision;
    assert_eq!(revisions.len() as Revision, total);
    assert_eq!(revisions.first().copied(), Some(start + 1));
    assert_eq!(revisions.last().copied(), Some(start + total));
    assert_eq!(current(&*store).await, start + total);
    assert_eq!(
        list(&*store, "/conformance/concurrent/", None).await.len() as Revision,
        total
    );
}

/// Compare-and-swap increments from many tasks are never lost.
pub async fn concurrent_compare_and_swap(store: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 10;
    let key = "/conformance/counter";
    create(&*store, key, "0").await;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0usize;
            for _ in 0..INCREMENTS {
                let mut seen = get(&*store, key).await.expect("counter exists");
                loop {
                    let n: usize = std::str::from_utf8(&seen.value)
                        .expect("utf8")
                        .parse()
                        .expect("number");
                    match ops::put_if(&*store, key, bytes(&(n + 1).to_string()), seen.mod_revision)
                        .await
                        .expect("put_if")
                    {
                        Written::Ok(_) => break,
                        Written::Conflict(Some(current)) => {
                            conflicts += 1;
                            seen = current;
                        }
                        Written::Conflict(None) => panic!("counter vanished"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let value = get(&*store, key).await.expect("counter").value;
    assert_eq!(value, bytes(&(TASKS * INCREMENTS).to_string()));
}
