//! The etcd backend against a real etcd (Debian's etcd-server, started per test on loopback
//! ports): the whole conformance suite, key prefixes, compaction by another client, and
//! behaviour while etcd is down and after it returns.

mod etcd_server;

use std::sync::Arc;
use std::time::Duration;

use berth_store::conformance::{put, put_txn};
use berth_store::{
    RangeRequest, Revision, Store, StoreError, WatchItem, WatchOptions, WatchStream,
};
use bytes::Bytes;
use etcd_server::EtcdServer;
use futures::StreamExt;

/// The conformance suite, each case on its own etcd: the suite counts revisions from where a
/// case starts and compacts, and etcd's revision and compaction are global, so cases sharing
/// one etcd would see each other's writes.
mod conformance {
    use std::sync::Arc;

    use berth_store::Store;

    use super::EtcdServer;

    async fn make() -> (Arc<dyn Store>, EtcdServer) {
        let server = EtcdServer::start().await;
        let store: Arc<dyn Store> = server.connect("/conformance-prefix/").await;
        (store, server)
    }

    berth_store::conformance_tests!(make);
}

/// The next event of a watch, skipping progress; a stalled or failed stream fails the test.
async fn next_event(stream: &mut WatchStream) -> berth_store::Event {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(WatchItem::Event(event)))) => return event,
            Ok(Some(Ok(WatchItem::Progress(_)))) => {}
            Ok(Some(Err(error))) => panic!("watch failed: {error}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no event within 20 s"),
        }
    }
}

fn options() -> WatchOptions {
    WatchOptions {
        progress_interval: Duration::from_millis(50),
    }
}

/// Two stores with different prefixes on one etcd never see each other's keys, and the keys
/// are laid out as prefix + key in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_stores_apart() {
    let server = EtcdServer::start().await;
    let a = server.connect("/a/").await;
    let b = server.connect("/b/").await;
    let from = a.revisions().await.expect("revisions").current;
    let mut watch_b = b
        .watch(String::new(), from, options())
        .await
        .expect("watch");
    put(&*a, "/registry/x", "in a").await;
    let rb = put(&*b, "/registry/x", "in b").await;

    let everything = |store: Arc<berth_store::etcd::EtcdStore>| async move {
        store
            .range(RangeRequest::prefix(""))
            .await
            .expect("range")
            .kvs
    };
    let in_a = everything(a.clone()).await;
    assert_eq!(in_a.len(), 1);
    assert_eq!(in_a[0].key, "/registry/x");
    assert_eq!(in_a[0].value, Bytes::from("in a"));
    let in_b = everything(b.clone()).await;
    assert_eq!(in_b.len(), 1);
    assert_eq!(in_b[0].value, Bytes::from("in b"));
    // The watch of b's whole keyspace sees only b's write.
    let event = next_event(&mut watch_b).await;
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        ("/registry/x", rb)
    );

    // The raw layout: a store at the root prefix sees both, under their prefixes.
    let root = server.connect("/").await;
    let keys: Vec<String> = everything(root)
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["a//registry/x", "b//registry/x"]);
}

/// A compaction made by another client is reported by revisions(), reads and watches, with the
/// compacted revision, as the embedded backend reports its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_by_another_client_is_seen() {
    let server = EtcdServer::start().await;
    let store = server.connect("/berth/").await;
    let other = server.connect("/other/").await;
    let r1 = put(&*store, "/k", "1").await;
    put(&*store, "/k", "2").await;
    let r3 = put(&*store, "/k", "3").await;
    assert_eq!(store.revisions().await.expect("revisions").compacted, 0);
    other.compact(r3).await.expect("compact");
    let revisions = store.revisions().await.expect("revisions");
    assert_eq!((revisions.current, revisions.compacted), (r3, r3));
    let old = RangeRequest {
        revision: Some(r1),
        ..RangeRequest::key("/k")
    };
    assert_eq!(
        store.range(old).await,
        Err(StoreError::Compacted {
            requested: r1,
            compacted: r3
        })
    );
    match store.watch("/".into(), r1, options()).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (r1, r3)),
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
}

/// Every kind of call fails with Unavailable within `limit`.
async fn expect_unavailable(store: &dyn Store, before: Revision, limit: Duration) {
    type Call<'a> = futures::future::BoxFuture<'a, Result<(), StoreError>>;
    let calls: Vec<(&str, Call<'_>)> = vec![
        (
            "range",
            Box::pin(async { store.range(RangeRequest::prefix("/w/")).await.map(|_| ()) }),
        ),
        (
            "txn",
            Box::pin(async { store.txn(put_txn("/w/lost", "x")).await.map(|_| ()) }),
        ),
        (
            "revisions",
            Box::pin(async { store.revisions().await.map(|_| ()) }),
        ),
        (
            "watch",
            Box::pin(async {
                store
                    .watch("/w/".into(), before, options())
                    .await
                    .map(|_| ())
            }),
        ),
        ("compact", Box::pin(async { store.compact(before).await })),
    ];
    for (name, call) in calls {
        let started = tokio::time::Instant::now();
        let result = call.await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{name} with etcd down: {result:?}"
        );
        assert!(took <= limit, "{name} took {took:?}");
    }
}

/// Writes `key` (retrying while etcd comes back) and returns the key of the watch's next event.
async fn next_event_after_writing(store: &dyn Store, watch: &mut WatchStream, key: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.txn(put_txn(key, "v")).await {
            Ok(_) => break,
            Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("write after the outage: {error}"),
        }
    }
    loop {
        let event = next_event(watch).await;
        // A write that timed out during the outage may still have been applied.
        if event.kv.key != "/w/lost" {
            return event.kv.key;
        }
    }
}

/// With etcd frozen or killed every call fails with Unavailable within the request timeout (no
/// hang); a watch survives the outage and resumes where it was; after etcd returns the same
/// store object works again and nothing acknowledged was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_etcd_is_unavailable_then_recovers() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    // Slack for scheduling and the last retry's pause on a 2-core machine.
    const SLACK: Duration = Duration::from_millis(750);
    let mut server = EtcdServer::start().await;
    let store = berth_store::etcd::connect(&server.config("/berth/", TIMEOUT))
        .await
        .expect("connect");
    let before = put(&*store, "/w/before", "1").await;
    let mut watch = store
        .watch("/w/".into(), before, options())
        .await
        .expect("watch");

    // Frozen, then killed: each time every call fails with Unavailable within the timeout.
    server.pause();
    expect_unavailable(&*store, before, TIMEOUT + SLACK).await;
    server.resume();
    assert_eq!(
        next_event_after_writing(&*store, &mut watch, "/w/resumed").await,
        "/w/resumed"
    );
    server.stop();
    expect_unavailable(&*store, before, TIMEOUT + SLACK).await;

    server.restart().await;
    // The same store object serves again once its connection is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match store.txn(put_txn("/w/after", "2")).await {
            Ok(response) => break response.revision,
            Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("store did not recover: {error}"),
        }
    };
    let listed = store
        .range(RangeRequest::prefix("/w/"))
        .await
        .expect("range after restart");
    let keys: Vec<&str> = listed.kvs.iter().map(|kv| kv.key.as_str()).collect();
    // "/w/lost" may or may not have been applied (it was never acknowledged); "before" was.
    assert!(
        keys.contains(&"/w/before") && keys.contains(&"/w/after"),
        "{keys:?}"
    );

    // The watch resumed from its last revision: the next event is the first write after it.
    let event = next_event(&mut watch).await;
    let event = if event.kv.key == "/w/lost" {
        next_event(&mut watch).await
    } else {
        event
    };
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        ("/w/after", after)
    );
}
