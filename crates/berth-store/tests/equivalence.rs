//! Behaviour berth's own backends share beyond the portable conformance suite, and a property
//! test that random operation sequences get identical answers from MemoryStore and SqliteStore.

use std::sync::Arc;
use std::time::Duration;

use berth_store::memory::MemoryStore;
use berth_store::sqlite::SqliteStore;
use berth_store::{
    Compare, Event, Op, OpResponse, RangeRequest, Result, Revision, Store, Txn, WatchItem,
    WatchOptions,
};
use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;

/// Unlike etcd (one revision per txn), berth's backends give each write op of a txn its own
/// revision, in op order.
async fn one_revision_per_write_op(store: Arc<dyn Store>) {
    let put = |key: &str| Op::Put {
        key: key.to_string(),
        value: Bytes::from("v"),
    };
    store
        .txn(Txn {
            success: vec![put("/x")],
            ..Default::default()
        })
        .await
        .unwrap();
    let start = store.revisions().await.unwrap().current;
    let txn = Txn {
        compares: vec![],
        success: vec![
            put("/a"),
            put("/b"),
            Op::Get {
                key: "/a".to_string(),
            },
            Op::Delete {
                key: "/a".to_string(),
            },
            Op::Delete {
                key: "/missing".to_string(),
            },
            put("/b"),
        ],
        failure: vec![],
    };
    let response = store.txn(txn).await.unwrap();
    let revisions: Vec<Revision> = response
        .responses
        .iter()
        .map(|response| match response {
            OpResponse::Put { revision, .. } | OpResponse::Delete { revision, .. } => *revision,
            OpResponse::Get { kv } => kv.as_ref().map_or(-1, |kv| kv.mod_revision),
        })
        .collect();
    assert_eq!(
        revisions,
        vec![
            start + 1,
            start + 2,
            start + 1,
            start + 3,
            start + 3,
            start + 4
        ]
    );
    assert_eq!(response.revision, start + 4);
    // The second put of /b sees the first one as its previous value.
    assert!(matches!(
        &response.responses[5],
        OpResponse::Put { prev: Some(prev), .. } if prev.mod_revision == start + 2 && prev.create_revision == start + 2
    ));
}

#[tokio::test]
async fn memory_one_revision_per_write_op() {
    one_revision_per_write_op(MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_one_revision_per_write_op() {
    let tmp = tempfile::tempdir().unwrap();
    one_revision_per_write_op(SqliteStore::open(tmp.path()).unwrap()).await;
}

// ---------------------------------------------------------------------------------------------
// Property test

const KEYS: &[&str] = &["/p/a", "/p/b", "/p/c", "/p/a/x", "/q/a", "/q/ab", "/r"];
const PREFIXES: &[&str] = &["/p/", "/p/a", "/q/", "/", ""];

#[derive(Debug, Clone)]
enum TxnOp {
    Put(usize, u8),
    Delete(usize),
    Get(usize),
}

#[derive(Debug, Clone)]
enum Action {
    Txn {
        compares: Vec<(usize, Revision)>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    Range {
        key: usize,
        prefix: Option<usize>,
        revision: Option<Revision>,
        limit: Option<usize>,
    },
    Compact(Revision),
    Watch {
        prefix: usize,
        after: Revision,
    },
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        3 => (0..KEYS.len(), any::<u8>()).prop_map(|(key, value)| TxnOp::Put(key, value)),
        1 => (0..KEYS.len()).prop_map(TxnOp::Delete),
        1 => (0..KEYS.len()).prop_map(TxnOp::Get),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    // Revisions are drawn from a small range so compares, reads and compactions hit real,
    // compacted and future revisions alike.
    let revision = 0..30i64;
    prop_oneof![
        6 => (
            prop::collection::vec((0..KEYS.len(), revision.clone()), 0..3),
            prop::collection::vec(txn_op(), 0..4),
            prop::collection::vec(txn_op(), 0..3),
        )
            .prop_map(|(compares, success, failure)| Action::Txn { compares, success, failure }),
        2 => (
            0..KEYS.len(),
            prop::option::of(0..PREFIXES.len()),
            prop::option::of(revision.clone()),
            prop::option::of(0..4usize),
        )
            .prop_map(|(key, prefix, revision, limit)| Action::Range { key, prefix, revision, limit }),
        1 => revision.clone().prop_map(Action::Compact),
        1 => (0..PREFIXES.len(), revision).prop_map(|(prefix, after)| Action::Watch { prefix, after }),
    ]
}

fn txn_ops(ops: &[TxnOp]) -> Vec<Op> {
    ops.iter()
        .map(|op| match op {
            TxnOp::Put(key, value) => Op::Put {
                key: KEYS[*key].to_string(),
                value: Bytes::from(vec![*value; 3]),
            },
            TxnOp::Delete(key) => Op::Delete {
                key: KEYS[*key].to_string(),
            },
            TxnOp::Get(key) => Op::Get {
                key: KEYS[*key].to_string(),
            },
        })
        .collect()
}

/// Everything observable about one action's outcome.
#[derive(Debug, PartialEq, Eq)]
enum Observed {
    Txn(Result<berth_store::TxnResponse>),
    Range(Result<berth_store::RangeResponse>),
    Compact(Result<()>),
    Watch(Result<Vec<Event>>),
}

async fn perform(store: &dyn Store, action: &Action) -> Observed {
    match action {
        Action::Txn {
            compares,
            success,
            failure,
        } => {
            let txn = Txn {
                compares: compares
                    .iter()
                    .map(|(key, revision)| Compare::ModRevisionEquals {
                        key: KEYS[*key].to_string(),
                        revision: *revision,
                    })
                    .collect(),
                success: txn_ops(success),
                failure: txn_ops(failure),
            };
            Observed::Txn(store.txn(txn).await)
        }
        Action::Range {
            key,
            prefix,
            revision,
            limit,
        } => {
            let base = match prefix {
                Some(prefix) => RangeRequest::prefix(PREFIXES[*prefix]),
                None => RangeRequest::key(KEYS[*key]),
            };
            Observed::Range(
                store
                    .range(RangeRequest {
                        revision: *revision,
                        limit: *limit,
                        ..base
                    })
                    .await,
            )
        }
        Action::Compact(revision) => Observed::Compact(store.compact(*revision).await),
        Action::Watch { prefix, after } => {
            let options = WatchOptions {
                progress_interval: Duration::from_millis(2),
            };
            let current = store.revisions().await.unwrap().current;
            let mut stream = match store
                .watch(PREFIXES[*prefix].to_string(), *after, options)
                .await
            {
                Ok(stream) => stream,
                Err(error) => return Observed::Watch(Err(error)),
            };
            // Everything up to the current revision, as proven by a progress item covering it.
            let mut events = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let item = tokio::time::timeout_at(deadline, stream.next()).await;
                match item.expect("the watch did not catch up") {
                    Some(Ok(WatchItem::Event(event))) => events.push(event),
                    Some(Ok(WatchItem::Progress(revision))) if revision >= current => break,
                    Some(Ok(WatchItem::Progress(_))) => {}
                    other => panic!("watch: {other:?}"),
                }
            }
            Observed::Watch(Ok(events))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_and_sqlite_agree(actions in prop::collection::vec(action(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let memory: Arc<dyn Store> = MemoryStore::new();
            let sqlite: Arc<dyn Store> = SqliteStore::open(tmp.path()).unwrap();
            for (step, action) in actions.iter().enumerate() {
                let expected = perform(&*memory, action).await;
                let actual = perform(&*sqlite, action).await;
                prop_assert_eq!(&expected, &actual, "step {}: {:?}", step, action);
            }
            prop_assert_eq!(memory.revisions().await.unwrap(), sqlite.revisions().await.unwrap());
            let everything = RangeRequest::prefix("");
            prop_assert_eq!(memory.range(everything.clone()).await, sqlite.range(everything).await);
            Ok(())
        })?;
    }
}
