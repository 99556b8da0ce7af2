//! A revisioned key-value store with etcd's model.
//!
//! Every write gets the next value of one global revision counter; that revision is the
//! written key's `mod_revision`, which the API server hands out as the object's
//! `resourceVersion`. Reads can be served at the latest revision or at any revision not yet
//! compacted away, and a watch replays every change after a given revision, then follows live
//! changes. Writes are transactions that compare a key's `mod_revision`, which is all the
//! optimistic concurrency Kubernetes needs: create is `txn(mod_revision == 0, put)`, update and
//! delete are `txn(mod_revision == expected, op, else get)`.
//!
//! Backends:
//! - [`sqlite::SqliteStore`]: the embedded default. A write is acknowledged only once it is
//!   durable on disk; concurrent writers are group-committed.
//! - [`memory::MemoryStore`]: for unit tests of code above the store.
//! - [`etcd::EtcdStore`]: an external etcd cluster (`berth up --store etcd://…`).
//!
//! Every backend must pass [`conformance`], the store's behaviour written down as tests.

pub mod conformance;
pub mod etcd;
pub mod memory;
pub mod sqlite;
mod watch;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;

/// A position in the store's history. Revisions start at 1 and only grow, across restarts too.
pub type Revision = i64;

/// One key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision that created this key (its current incarnation, since the last delete).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

/// A read of one key (`range_end` = `None`) or of the half-open interval `[key, range_end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: String,
    pub range_end: Option<String>,
    /// Serve the read as of this revision; `None` reads the latest state.
    pub revision: Option<Revision>,
    /// Return at most this many keys (in key order); `None` = no limit.
    pub limit: Option<usize>,
}

impl RangeRequest {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        let key = prefix.into();
        let range_end = Some(prefix_end(&key));
        RangeRequest {
            key,
            range_end,
            ..Default::default()
        }
    }

    /// Exactly one key.
    pub fn key(key: impl Into<String>) -> Self {
        RangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Matching keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the read was served at (the store's current revision for latest reads).
    pub revision: Revision,
    /// True when `limit` cut the result short.
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this value; 0 means "the key does not exist".
    ModRevisionEquals { key: String, revision: Revision },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Delete { key: String },
    Get { key: String },
}

/// An etcd-style transaction: if every comparison holds, run `success`, else run `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResponse {
    /// The new revision of the written key.
    Put {
        revision: Revision,
        prev: Option<KeyValue>,
    },
    /// The deleted key's last value, if it existed.
    Delete {
        revision: Revision,
        prev: Option<KeyValue>,
    },
    Get {
        kv: Option<KeyValue>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store's revision after the transaction (unchanged if it wrote nothing).
    pub revision: Revision,
    pub responses: Vec<OpResponse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv.value` is empty and `kv.mod_revision` is the delete's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's value before this change (`None` when a put created the key).
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Event(Event),
    /// Every event under the watched prefix with a revision ≤ this one has been delivered.
    /// Sent while the watch is idle, at least every [`WatchOptions::progress_interval`].
    Progress(Revision),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    pub progress_interval: std::time::Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            progress_interval: std::time::Duration::from_secs(1),
        }
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem, StoreError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (compacted revision is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {requested} is a future revision (current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The store cannot accept writes (for example after a failed fsync: it never retries one
    /// and reports success). Reads may still work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk is full; nothing was written.
    #[error("no space left for the store: {0}")]
    NoSpace(String),
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another berth")]
    Locked(String),
    #[error("store corrupt: {0}")]
    Corrupt(String),
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store every berth component talks to. Keep it etcd-shaped: an etcd backend implements
/// it with the same calls, and the conformance suite holds every backend to the same rules.
pub trait Store: Send + Sync + 'static {
    fn range(&self, request: RangeRequest) -> BoxFuture<'_, Result<RangeResponse>>;

    /// Runs a transaction atomically. Resolves only once the writes are durable.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>>;

    /// Every change to a key starting with `prefix` with a revision strictly greater than
    /// `after`, in revision order, then live changes. `after` older than the compacted revision
    /// fails with [`StoreError::Compacted`] (immediately, never with a partial stream).
    fn watch(
        &self,
        prefix: String,
        after: Revision,
        options: WatchOptions,
    ) -> BoxFuture<'_, Result<WatchStream>>;

    /// Forgets history before `revision`: reads and watches at older revisions then fail with
    /// [`StoreError::Compacted`]. The latest value of every key is kept.
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>>;

    /// The latest revision and the compacted revision.
    fn revisions(&self) -> BoxFuture<'_, Result<Revisions>>;

    /// Whether the store can accept writes: `Err(Unavailable)` once it has stopped acknowledging
    /// them (for example after a failed fsync). Reads may still work.
    fn writable(&self) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    pub current: Revision,
    pub compacted: Revision,
}

/// The smallest key greater than every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`,
/// on characters: UTF-8 orders bytes as code points, so bumping the last character that can be
/// bumped bounds the prefix exactly, for non-ASCII keys too).
pub fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Surrogates are not characters; the next one after them is U+E000.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(bumped) = char::from_u32(next) {
            chars.push(bumped);
            return chars.into_iter().collect();
        }
    }
    // An empty prefix (or one of only U+10FFFF): no key is above the largest character.
    char::MAX.to_string()
}

#[cfg(test)]
mod prefix_tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends_bound_exactly() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert_eq!(prefix_end("a\u{7f}"), "a\u{80}");
        assert_eq!(prefix_end("é"), "ê");
        assert_eq!(prefix_end("a\u{10FFFF}"), "b");
        assert_eq!(prefix_end("\u{D7FF}"), "\u{E000}");
        for key in ["é", "éa", "é\u{10FFFF}", "/registry/pods/x"] {
            let prefix: String = key.chars().take(1).collect();
            assert!(
                key >= prefix.as_str() && key < prefix_end(&prefix).as_str(),
                "{key}"
            );
        }
        assert!("\u{10FFFE}" < prefix_end("").as_str());
    }
}

/// Convenience calls over [`Store::txn`] in the shape the API server uses them.
pub mod ops {
    use super::*;

    /// The outcome of a conditional write.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Written {
        Ok(Revision),
        /// The comparison failed; the key's current value (None if it does not exist).
        Conflict(Option<KeyValue>),
    }

    /// Creates `key` only if it does not exist.
    pub async fn create(store: &dyn Store, key: &str, value: Bytes) -> Result<Written> {
        put_if(store, key, value, 0).await
    }

    /// Writes `key` only if its mod_revision is `expected` (0 = only if absent).
    pub async fn put_if(
        store: &dyn Store,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Written> {
        let txn = Txn {
            compares: vec![Compare::ModRevisionEquals {
                key: key.to_string(),
                revision: expected,
            }],
            success: vec![Op::Put {
                key: key.to_string(),
                value,
            }],
            failure: vec![Op::Get {
                key: key.to_string(),
            }],
        };
        let response = store.txn(txn).await?;
        Ok(written(response))
    }

    /// Deletes `key` only if its mod_revision is `expected`.
    pub async fn delete_if(store: &dyn Store, key: &str, expected: Revision) -> Result<Written> {
        let txn = Txn {
            compares: vec![Compare::ModRevisionEquals {
                key: key.to_string(),
                revision: expected,
            }],
            success: vec![Op::Delete {
                key: key.to_string(),
            }],
            failure: vec![Op::Get {
                key: key.to_string(),
            }],
        };
        let response = store.txn(txn).await?;
        Ok(written(response))
    }

    fn written(response: TxnResponse) -> Written {
        if response.succeeded {
            let revision = match response.responses.first() {
                Some(OpResponse::Put { revision, .. })
                | Some(OpResponse::Delete { revision, .. }) => *revision,
                _ => response.revision,
            };
            Written::Ok(revision)
        } else {
            let current = response.responses.into_iter().find_map(|r| match r {
                OpResponse::Get { kv } => kv,
                _ => None,
            });
            Written::Conflict(current)
        }
    }

    /// The latest value of one key.
    pub async fn get(store: &dyn Store, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        let response = store.range(RangeRequest::key(key)).await?;
        Ok((response.kvs.into_iter().next(), response.revision))
    }
}
