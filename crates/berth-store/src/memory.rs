//! [`MemoryStore`]: the store's semantics in plain maps behind a mutex, with no durability.
//!
//! It exists so code above the store can be unit-tested without a disk, and as the reference
//! the SQLite backend is checked against (the property test in `tests/` runs random operation
//! sequences on both and compares every answer). It keeps the same history a durable backend
//! does, so reads at old revisions, watches from old revisions and compaction behave exactly
//! like SQLite's; it just never writes anything down.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::watch::{self, Batch, Feed, History, KeyPrefix, Replay};
use crate::{
    Compare, Event, EventKind, KeyValue, Op, OpResponse, RangeRequest, RangeResponse, Result,
    Revision, Revisions, Store, StoreError, Txn, TxnResponse, WatchOptions, WatchStream,
};

/// An in-memory [`Store`]. Cheap to create; everything is lost when it is dropped.
pub struct MemoryStore {
    state: Arc<Shared>,
    feed: Feed,
}

struct Shared(Mutex<State>);

#[derive(Default)]
struct State {
    current: Revision,
    compacted: Revision,
    /// Every key's versions by revision; `None` marks a delete. Compaction keeps, per key, the
    /// latest version at or below the compacted revision (if it is not a delete) and all later ones.
    keys: BTreeMap<String, BTreeMap<Revision, Option<Version>>>,
    /// Every event above the compacted revision, for watch replay.
    events: BTreeMap<Revision, Event>,
}

#[derive(Debug, Clone)]
struct Version {
    value: Bytes,
    create_revision: Revision,
}

impl MemoryStore {
    pub fn new() -> Arc<MemoryStore> {
        Arc::new(MemoryStore {
            state: Arc::new(Shared(Mutex::new(State::default()))),
            feed: watch::new_feed(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only mutated in ways that leave it consistent at every step, so a panic
        // while holding the lock (a bug elsewhere) does not make it unusable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key_value(key: &str, revision: Revision, version: &Version) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: version.value.clone(),
        create_revision: version.create_revision,
        mod_revision: revision,
    }
}

impl State {
    /// The key's value as of `at` (None if absent then).
    fn get_at(&self, key: &str, at: Revision) -> Option<KeyValue> {
        let versions = self.keys.get(key)?;
        let (revision, version) = versions.range(..=at).next_back()?;
        version
            .as_ref()
            .map(|version| key_value(key, *revision, version))
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.get_at(key, self.current)
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse> {
        let at = match request.revision {
            Some(revision) if revision > 0 => revision,
            _ => self.current,
        };
        if at > self.current {
            return Err(StoreError::FutureRevision {
                requested: at,
                current: self.current,
            });
        }
        if at < self.compacted {
            return Err(StoreError::Compacted {
                requested: at,
                compacted: self.compacted,
            });
        }
        let mut kvs = Vec::new();
        let mut more = false;
        let mut push = |kv: KeyValue| {
            if request.limit.is_some_and(|limit| kvs.len() >= limit) {
                more = true;
                false
            } else {
                kvs.push(kv);
                true
            }
        };
        match &request.range_end {
            None => {
                if let Some(kv) = self.get_at(&request.key, at) {
                    push(kv);
                }
            }
            // BTreeMap::range panics on an inverted range; an empty interval matches nothing.
            Some(end) if end.as_str() <= request.key.as_str() => {}
            Some(end) => {
                let bounds = (
                    Bound::Included(request.key.as_str()),
                    Bound::Excluded(end.as_str()),
                );
                for key in self.keys.range::<str, _>(bounds).map(|(key, _)| key) {
                    if let Some(kv) = self.get_at(key, at)
                        && !push(kv)
                    {
                        break;
                    }
                }
            }
        }
        Ok(RangeResponse {
            kvs,
            revision: at,
            more,
        })
    }

    fn txn(&mut self, txn: &Txn, events: &mut Vec<Event>) -> TxnResponse {
        let succeeded = txn.compares.iter().all(|compare| match compare {
            Compare::ModRevisionEquals { key, revision } => {
                self.get(key).map_or(0, |kv| kv.mod_revision) == *revision
            }
        });
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                Op::Put { key, value } => {
                    let prev = self.get(key);
                    let revision = self.current + 1;
                    let create_revision = prev.as_ref().map_or(revision, |kv| kv.create_revision);
                    let version = Version {
                        value: value.clone(),
                        create_revision,
                    };
                    let kv = key_value(key, revision, &version);
                    self.keys
                        .entry(key.clone())
                        .or_default()
                        .insert(revision, Some(version));
                    self.record(
                        revision,
                        Event {
                            kind: EventKind::Put,
                            kv,
                            prev_kv: prev.clone(),
                        },
                        events,
                    );
                    OpResponse::Put { revision, prev }
                }
                Op::Delete { key } => match self.get(key) {
                    // Deleting an absent key writes nothing and takes no revision (as in etcd).
                    None => OpResponse::Delete {
                        revision: self.current,
                        prev: None,
                    },
                    Some(prev) => {
                        let revision = self.current + 1;
                        self.keys
                            .entry(key.clone())
                            .or_default()
                            .insert(revision, None);
                        let kv = KeyValue {
                            key: key.clone(),
                            value: Bytes::new(),
                            create_revision: 0,
                            mod_revision: revision,
                        };
                        self.record(
                            revision,
                            Event {
                                kind: EventKind::Delete,
                                kv,
                                prev_kv: Some(prev.clone()),
                            },
                            events,
                        );
                        OpResponse::Delete {
                            revision,
                            prev: Some(prev),
                        }
                    }
                },
                Op::Get { key } => OpResponse::Get { kv: self.get(key) },
            });
        }
        TxnResponse {
            succeeded,
            revision: self.current,
            responses,
        }
    }

    fn record(&mut self, revision: Revision, event: Event, events: &mut Vec<Event>) {
        self.current = revision;
        self.events.insert(revision, event.clone());
        events.push(event);
    }

    fn compact(&mut self, revision: Revision) -> Result<()> {
        if revision > self.current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.current,
            });
        }
        if revision <= self.compacted {
            return Ok(());
        }
        self.keys.retain(|_, versions| {
            let latest = versions
                .range(..=revision)
                .next_back()
                .map(|(rev, version)| (*rev, version.is_some()));
            if let Some((latest, live)) = latest {
                // Everything older than the latest version at the compact point is superseded;
                // the latest itself goes too when it is a delete (reads at or after the compact
                // point then find nothing older, which is right).
                versions.retain(|rev, _| *rev > latest || (*rev == latest && live));
            }
            !versions.is_empty()
        });
        self.events = self.events.split_off(&(revision + 1));
        self.compacted = revision;
        Ok(())
    }
}

impl History for Shared {
    fn replay(
        &self,
        prefix: Arc<KeyPrefix>,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Replay>> {
        let state = self.lock();
        let result = if after < state.compacted {
            Err(StoreError::Compacted {
                requested: after,
                compacted: state.compacted,
            })
        } else {
            let events = state
                .events
                .range((Bound::Excluded(after), Bound::Unbounded))
                .map(|(_, event)| event);
            Ok(watch::replay_from_slice(
                events,
                &prefix,
                after,
                state.current,
                limit,
            ))
        };
        futures::future::ready(result).boxed()
    }
}

impl MemoryStore {
    fn txn_now(&self, txn: &Txn) -> TxnResponse {
        let mut state = self.lock();
        let mut events = Vec::new();
        let response = state.txn(txn, &mut events);
        if !events.is_empty() {
            // Published while still holding the lock, so batches reach the feed in revision order.
            let batch = Batch {
                revision: state.current,
                events,
            };
            let _no_watchers = self.feed.send(Arc::new(batch));
        }
        response
    }
}

// Every call does its work when the future is first polled, not when it is created, as with a
// real backend: a future dropped unpolled has no effect.
impl Store for MemoryStore {
    fn range(&self, request: RangeRequest) -> BoxFuture<'_, Result<RangeResponse>> {
        async move { self.lock().range(&request) }.boxed()
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        async move { Ok(self.txn_now(&txn)) }.boxed()
    }

    fn watch(
        &self,
        prefix: String,
        after: Revision,
        options: WatchOptions,
    ) -> BoxFuture<'_, Result<WatchStream>> {
        let history: Arc<dyn History> = self.state.clone();
        watch::watch(history, &self.feed, prefix, after, options).boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        async move { self.lock().compact(revision) }.boxed()
    }

    fn revisions(&self) -> BoxFuture<'_, Result<Revisions>> {
        async move {
            let state = self.lock();
            Ok(Revisions {
                current: state.current,
                compacted: state.compacted,
            })
        }
        .boxed()
    }
}
