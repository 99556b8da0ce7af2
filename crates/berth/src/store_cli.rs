//! Which store `berth up` keeps the cluster in (`--store`), and `berth store export|import`,
//! which move every object between stores.
//!
//! # The export format
//!
//! JSON lines (UTF-8, one JSON object per line), in this order:
//!
//! ```text
//! {"format":"berth-store-export","revision":1234,"source":"sqlite","version":1}
//! {"key":"/registry/core/configmaps/default/a","value":"{\"apiVersion\":\"v1\",…}"}
//! {"key":"/registry/…","valueBase64":"…"}
//! {"end":true,"keys":57}
//! ```
//!
//! The header names the format, its version (1), the store revision every key was read at
//! (all keys come from that one revision) and the kind of store read (`sqlite` or `etcd`).
//! Then one line per key, in ascending key order: the key as stored, and the value's bytes
//! exactly as stored — as a JSON string under `value` when they are UTF-8 (every value berth
//! writes is JSON text, so objects stay readable and greppable), else as standard base64
//! under `valueBase64`. The trailer counts the key lines, so a cut-off file is refused.
//!
//! Values are the stored bytes, never re-encoded: an object keeps its uid, its
//! creationTimestamp and every field. resourceVersion is not part of a stored object (it is
//! the key's mod revision, stamped on every read), so imported objects get the target store's
//! revisions as their resourceVersions and are served like any other object. Everything else
//! berth keeps in the store moves with it: the Services' cluster IP and node port allocations
//! (`/registry/ranges/…`), Leases, Events. An export holds Secrets in the clear: it is
//! written owner-only (0600).
//!
//! # Import
//!
//! Only into an empty store (no key at all; for etcd, none under berth's prefix): the keys are
//! created in transactions of at most [`BATCH_OPS`] keys and [`BATCH_BYTES`] bytes (etcd's
//! default `--max-txn-ops` and, below its `--max-request-bytes`, request size), each
//! conditional on its keys being absent, and read back and compared afterwards. The embedded
//! store is opened under the data dir's lock, so neither command runs beside a `berth up` on
//! that data dir.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use berth_store::etcd::{EtcdConfig, EtcdConfigError};
use berth_store::{Compare, Op, RangeRequest, Revision, Store, StoreError, Txn};
use bytes::Bytes;
use serde_json::{Value, json};

/// The most keys one import transaction writes (etcd's default `--max-txn-ops`).
pub const BATCH_OPS: usize = 128;
/// The most key and value bytes one import transaction carries (etcd refuses requests over
/// its `--max-request-bytes`, 1.5 MiB by default). A larger single key goes alone.
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Keys per read of an export.
const PAGE: usize = 500;
const FORMAT: &str = "berth-store-export";
const VERSION: u64 = 1;

/// The value of `--store`: the embedded store in the data dir, or an etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite,
    Etcd(EtcdConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error(
        "unknown store {0:?}: expected `sqlite` (the embedded store in the data dir), \
         etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?timeout=5s] \
         or etcds://…?ca=FILE[&cert=FILE&key=FILE]"
    )]
    Unknown(String),
    #[error(transparent)]
    Etcd(#[from] EtcdConfigError),
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(text: &str) -> Result<Self, StoreUrlError> {
        if text == "sqlite" {
            Ok(StoreUrl::Sqlite)
        } else if text.contains("://") {
            Ok(StoreUrl::Etcd(text.parse()?))
        } else {
            Err(StoreUrlError::Unknown(text.to_string()))
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite => f.write_str("sqlite"),
            StoreUrl::Etcd(config) => config.fmt(f),
        }
    }
}

impl StoreUrl {
    fn kind(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite => "sqlite",
            StoreUrl::Etcd(_) => "etcd",
        }
    }

    /// Where the store is, for messages.
    fn describe(&self, data_dir: &Path) -> String {
        match self {
            StoreUrl::Sqlite => format!("the embedded store in {}", data_dir.display()),
            StoreUrl::Etcd(config) => format!("the etcd store at {config}"),
        }
    }
}

/// The file in `<data>/store` that records the store `berth up` last served this data dir
/// from. A data dir moved to etcd must not come back up on its old embedded store just because
/// `--store` was left out: that would silently serve the cluster as it was before the move,
/// beside the same certificates and pods.
const RECORD_FILE: &str = "backend";

/// The store the data dir's last `berth up` used, if recorded.
fn recorded(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join("store").join(RECORD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records that the data dir's cluster is served from `url`.
fn record(data_dir: &Path, url: &StoreUrl) -> anyhow::Result<()> {
    let store_dir = data_dir.join("store");
    berth_apiserver::files::ensure_private_dir(&store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let path = store_dir.join(RECORD_FILE);
    berth_apiserver::files::write_private(&path, format!("{url}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Refuses the embedded store for a data dir whose cluster was last served from etcd. Moving
/// to etcd, or between etcd clusters, is always the user's explicit `--store`; only falling
/// back to the embedded store can happen by omission.
fn check_recorded(url: &StoreUrl, data_dir: &Path) -> anyhow::Result<()> {
    match (recorded(data_dir)?, url) {
        (Some(was), StoreUrl::Sqlite) if was != "sqlite" => anyhow::bail!(
            "{dir} keeps its cluster in etcd ({was}): start it with `--store {was}`. To move \
             the cluster back to the embedded store, export it (`berth store export --store \
             {was}`) and import it into a new data dir; to start over on this data dir's \
             embedded store, remove {record}",
            dir = data_dir.display(),
            record = data_dir.join("store").join(RECORD_FILE).display()
        ),
        _ => Ok(()),
    }
}

/// An open store and what keeps the data dir locked while it is used.
pub struct Opened {
    pub store: Arc<dyn Store>,
    /// The data dir's lock when the store is etcd (the embedded store holds its own).
    _lock: Option<std::fs::File>,
}

/// Opens the store `berth up` serves from, holding the data dir's lock either way: the data
/// dir keeps the certificates, tokens and pods' files, which one berth owns.
pub async fn open_for_up(url: &StoreUrl, data_dir: &Path) -> anyhow::Result<Opened> {
    let cannot = || format!("cannot open the store in {}", data_dir.display());
    check_recorded(url, data_dir).with_context(cannot)?;
    let opened = open_unchecked_for_up(url, data_dir).await?;
    record(data_dir, url).with_context(cannot)?;
    Ok(opened)
}

async fn open_unchecked_for_up(url: &StoreUrl, data_dir: &Path) -> anyhow::Result<Opened> {
    let store_dir = data_dir.join("store");
    match url {
        StoreUrl::Sqlite => {
            let store = berth_store::sqlite::SqliteStore::open(&store_dir)
                .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
            Ok(Opened { store, _lock: None })
        }
        StoreUrl::Etcd(config) => {
            let lock = lock_data_dir(data_dir)
                .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
            let store = berth_store::etcd::connect(config)
                .await
                .with_context(|| format!("cannot use the etcd store at {config}"))?;
            Ok(Opened {
                store,
                _lock: Some(lock),
            })
        }
    }
}

/// The built-in StorageClasses are installed once per data dir (a marker file records it), so
/// a class deleted later stays deleted. A data dir that was used with another store, started on
/// an empty etcd, must install them into it: the marker speaks of a store no longer used.
pub async fn forget_classes_marker_for_fresh_store(
    store: &dyn Store,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let marker = data_dir.join(berth_apiserver::storage::BUILTIN_CLASSES_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    let any = store
        .range(RangeRequest {
            limit: Some(1),
            ..RangeRequest::prefix("")
        })
        .await
        .context("cannot read the store")?;
    if any.kvs.is_empty() {
        std::fs::remove_file(&marker)
            .with_context(|| format!("cannot remove {}", marker.display()))?;
    }
    Ok(())
}

/// The lock the embedded store takes (`<data>/store/lock`), taken for a berth on etcd too.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    let store_dir = data_dir.join("store");
    berth_apiserver::files::ensure_private_dir(&store_dir)
        .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", store_dir.display())))?;
    berth_store::sqlite::lock_dir_waiting(&store_dir, std::time::Duration::from_secs(2))
}

/// Opens a store for `berth store export|import`; the embedded one only while no berth runs
/// on the data dir.
async fn open_offline(url: &StoreUrl, data_dir: &Path, create: bool) -> anyhow::Result<Opened> {
    match url {
        StoreUrl::Sqlite => {
            let store_dir = data_dir.join("store");
            if !create && !store_dir.is_dir() {
                anyhow::bail!("there is no embedded store in {}", data_dir.display());
            }
            if create {
                berth_apiserver::files::ensure_private_dir(data_dir).with_context(|| {
                    format!("cannot create the data dir {}", data_dir.display())
                })?;
            }
            let dir = store_dir.clone();
            let opened =
                tokio::task::spawn_blocking(move || berth_store::sqlite::SqliteStore::open(&dir))
                    .await
                    .context("the store's opening thread failed")?;
            match opened {
                Ok(store) => Ok(Opened { store, _lock: None }),
                Err(StoreError::Locked(_)) => anyhow::bail!(
                    "berth up is running on {}; stop it first",
                    data_dir.display()
                ),
                Err(e) => Err(e).with_context(|| {
                    format!("cannot open the embedded store in {}", data_dir.display())
                }),
            }
        }
        StoreUrl::Etcd(config) => {
            let store = berth_store::etcd::connect(config)
                .await
                .with_context(|| format!("cannot use the etcd store at {config}"))?;
            Ok(Opened { store, _lock: None })
        }
    }
}

/// Every key and value of `store` as of its current revision, in key order.
async fn read_all(store: &dyn Store) -> anyhow::Result<ReadAll> {
    let revision = store.revisions().await?.current;
    let everything = RangeRequest::prefix("");
    let end = everything.range_end.clone();
    let mut key = everything.key;
    let mut entries = Vec::new();
    loop {
        let page = store
            .range(RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                revision: Some(revision),
                limit: Some(PAGE),
            })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } => anyhow::anyhow!(
                    "{e}: the store was compacted past revision {revision} while it was read; \
                     run the export again"
                ),
                other => other.into(),
            })?;
        let Some(last) = page.kvs.last() else {
            break;
        };
        key = format!("{}\0", last.key);
        entries.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
        if !page.more {
            break;
        }
    }
    Ok(ReadAll { revision, entries })
}

struct ReadAll {
    revision: Revision,
    entries: Vec<(String, Bytes)>,
}

/// `berth store export`: writes the whole store, read at one revision, to `output` (stdout
/// when `None`).
pub async fn export(url: &StoreUrl, data_dir: &Path, output: Option<&Path>) -> anyhow::Result<()> {
    // The embedded store of a data dir moved to etcd holds the cluster as it was before.
    check_recorded(url, data_dir)?;
    let opened = open_offline(url, data_dir, false).await?;
    let all = read_all(opened.store.as_ref())
        .await
        .with_context(|| format!("cannot read {}", url.describe(data_dir)))?;
    let text = encode(url.kind(), all.revision, &all.entries)?;
    match output {
        Some(path) if path != Path::new("-") => {
            berth_apiserver::files::write_private(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "exported {} keys of {} at revision {} to {}",
                all.entries.len(),
                url.describe(data_dir),
                all.revision,
                path.display()
            );
        }
        _ => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&text)
                .and_then(|()| stdout.flush())
                .context("cannot write the export to stdout")?;
        }
    }
    Ok(())
}

/// `berth store import`: writes an export into an empty store.
pub async fn import(url: &StoreUrl, data_dir: &Path, input: &Path) -> anyhow::Result<()> {
    let text = if input == Path::new("-") {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut text)
            .context("cannot read the export from stdin")?;
        text
    } else {
        std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?
    };
    let entries = decode(&text).with_context(|| {
        format!(
            "{} is not a complete berth store export",
            if input == Path::new("-") {
                "stdin".to_string()
            } else {
                input.display().to_string()
            }
        )
    })?;
    let opened = open_offline(url, data_dir, true).await?;
    let store = opened.store.as_ref();
    let target = url.describe(data_dir);
    let existing = store
        .range(RangeRequest {
            limit: Some(1),
            ..RangeRequest::prefix("")
        })
        .await
        .with_context(|| format!("cannot read {target}"))?;
    if let Some(kv) = existing.kvs.first() {
        anyhow::bail!(
            "{target} is not empty (it holds {:?}, among others): import only into an empty \
             store",
            kv.key
        );
    }
    let total = entries.len();
    let mut written = 0;
    for batch in batches(&entries) {
        let txn = Txn {
            compares: batch
                .iter()
                .map(|(key, _)| Compare::ModRevisionEquals {
                    key: key.clone(),
                    revision: 0,
                })
                .collect(),
            success: batch
                .iter()
                .map(|(key, value)| Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            failure: Vec::new(),
        };
        let partial = || {
            format!(
                "the import into {target} stopped after {written} of {total} keys; the store \
                 now holds part of the export: empty it and import again"
            )
        };
        let response = store.txn(txn).await.with_context(partial)?;
        if !response.succeeded {
            return Err(anyhow::anyhow!(
                "a key of the export was written by someone else meanwhile"
            ))
            .with_context(partial);
        }
        written += batch.len();
    }
    // Read everything back: the store holds exactly the export.
    let back = read_all(store)
        .await
        .with_context(|| format!("cannot read {target} back"))?;
    let expected: BTreeMap<&str, &Bytes> = entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let got: BTreeMap<&str, &Bytes> = back.entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
    if expected != got {
        let differs = expected
            .keys()
            .chain(got.keys())
            .find(|key| expected.get(*key) != got.get(*key))
            .copied()
            .unwrap_or_default();
        anyhow::bail!(
            "{target} does not hold exactly the export after the import (first difference at \
             {differs:?}): was it written to meanwhile?"
        );
    }
    eprintln!(
        "imported {total} keys into {target} (revision {})",
        back.revision
    );
    Ok(())
}

/// Groups entries into transactions within etcd's limits.
fn batches(entries: &[(String, Bytes)]) -> Vec<&[(String, Bytes)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (key, value)) in entries.iter().enumerate() {
        let size = key.len() + value.len();
        if i > start && (i - start >= BATCH_OPS || bytes + size > BATCH_BYTES) {
            out.push(&entries[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// The export of `entries` read at `revision`.
fn encode(
    source: &str,
    revision: Revision,
    entries: &[(String, Bytes)],
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut line = |value: Value| -> anyhow::Result<()> {
        serde_json::to_writer(&mut out, &value)?;
        out.push(b'\n');
        Ok(())
    };
    line(json!({"format": FORMAT, "version": VERSION, "revision": revision, "source": source}))?;
    for (key, value) in entries {
        match std::str::from_utf8(value) {
            Ok(text) => line(json!({"key": key, "value": text}))?,
            Err(_) => line(json!({
                "key": key,
                "valueBase64": base64::engine::general_purpose::STANDARD.encode(value),
            }))?,
        }
    }
    line(json!({"end": true, "keys": entries.len()}))?;
    Ok(out)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("the file is empty")]
    Empty,
    #[error("the file ends without its trailer line (cut off?)")]
    NoTrailer,
    #[error("the trailer counts {expected} keys but the file has {found}")]
    Count { expected: u64, found: usize },
    #[error("key {0:?} appears twice")]
    Duplicate(String),
}

/// The entries of an export, checked whole before anything is written.
fn decode(text: &[u8]) -> Result<Vec<(String, Bytes)>, DecodeError> {
    let bad = |line: usize, reason: &str| DecodeError::Line {
        line,
        reason: reason.to_string(),
    };
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line));
    let (_, header) = lines.next().ok_or(DecodeError::Empty)?;
    let header: Value = header
        .map_err(|e| bad(1, &e.to_string()))
        .and_then(|line| serde_json::from_str(&line).map_err(|e| bad(1, &e.to_string())))?;
    if header.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(bad(
            1,
            "not a berth store export (no \"format\": \"berth-store-export\")",
        ));
    }
    if header.get("version").and_then(Value::as_u64) != Some(VERSION) {
        return Err(bad(
            1,
            "an export format version this berth does not know (it reads 1)",
        ));
    }
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some((number, line)) = lines.next() {
        let line = line.map_err(|e| bad(number, &e.to_string()))?;
        let mut object: serde_json::Map<String, Value> =
            serde_json::from_str(&line).map_err(|e| bad(number, &e.to_string()))?;
        if object.get("end") == Some(&Value::Bool(true)) {
            let expected = object
                .get("keys")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(number, "the trailer has no key count"))?;
            if expected != entries.len() as u64 {
                return Err(DecodeError::Count {
                    expected,
                    found: entries.len(),
                });
            }
            if let Some((after, _)) = lines.next() {
                return Err(bad(after, "a line after the trailer"));
            }
            return Ok(entries);
        }
        let Some(Value::String(key)) = object.remove("key") else {
            return Err(bad(number, "no \"key\" string"));
        };
        let value = match (object.remove("value"), object.remove("valueBase64")) {
            (Some(Value::String(text)), None) => Bytes::from(text.into_bytes()),
            (None, Some(Value::String(encoded))) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| bad(number, &format!("bad valueBase64: {e}")))?,
            ),
            _ => {
                return Err(bad(
                    number,
                    "expected exactly one of \"value\" (a string) or \"valueBase64\"",
                ));
            }
        };
        if !seen.insert(key.clone()) {
            return Err(DecodeError::Duplicate(key));
        }
        entries.push((key, value));
    }
    Err(DecodeError::NoTrailer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_moved_to_etcd_refuses_the_embedded_store_by_omission() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite: StoreUrl = "sqlite".parse().expect("sqlite");
        let etcd: StoreUrl = "etcd://127.0.0.1:2379".parse().expect("etcd");
        // Nothing recorded (a new data dir, or one from before the record): anything goes.
        check_recorded(&sqlite, dir.path()).expect("a new data dir");
        record(dir.path(), &sqlite).expect("record");
        check_recorded(&etcd, dir.path()).expect("moving to etcd is explicit");
        record(dir.path(), &etcd).expect("record");
        check_recorded(&etcd, dir.path()).expect("the same store");
        let refused = check_recorded(&sqlite, dir.path()).expect_err("back by omission");
        let message = refused.to_string();
        assert!(
            message.contains("keeps its cluster in etcd (etcd://127.0.0.1:2379")
                && message.contains("--store etcd://127.0.0.1:2379"),
            "{message}"
        );
    }

    fn entries() -> Vec<(String, Bytes)> {
        vec![
            (
                "/registry/core/configmaps/default/a".into(),
                Bytes::from_static(br#"{"metadata":{"uid":"u-1"},"data":{"k":"v\n\u00e9"}}"#),
            ),
            (
                "/registry/ranges/serviceips/10.43.0.1".into(),
                Bytes::from_static(b"{}"),
            ),
            (
                "/x/binary".into(),
                Bytes::from_static(&[0, 159, 146, 150, 255]),
            ),
            ("/x/empty".into(), Bytes::new()),
        ]
    }

    #[test]
    fn export_round_trips_every_byte() {
        let text = encode("sqlite", 42, &entries()).expect("encodes");
        let lines: Vec<&str> = std::str::from_utf8(&text).expect("utf-8").lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[0].contains("\"revision\":42"), "{}", lines[0]);
        assert!(lines[3].contains("valueBase64"), "{}", lines[3]);
        assert_eq!(decode(&text), Ok(entries()));
    }

    #[test]
    fn damaged_exports_are_refused() {
        let text =
            String::from_utf8(encode("etcd", 7, &entries()).expect("encodes")).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        let cut = lines[..4].join("\n");
        assert_eq!(decode(cut.as_bytes()), Err(DecodeError::NoTrailer));
        let missing = [&lines[..2], &lines[3..]].concat().join("\n");
        assert!(matches!(
            decode(missing.as_bytes()),
            Err(DecodeError::Count {
                expected: 4,
                found: 3
            })
        ));
        let twice = [&lines[..2], &lines[1..2], &lines[2..]].concat().join("\n");
        assert!(matches!(
            decode(twice.as_bytes()),
            Err(DecodeError::Duplicate(_))
        ));
        assert_eq!(decode(b""), Err(DecodeError::Empty));
        assert!(matches!(
            decode(b"{\"key\":\"a\"}\n"),
            Err(DecodeError::Line { line: 1, .. })
        ));
        let trailing = format!("{text}{{\"key\":\"z\",\"value\":\"\"}}\n");
        assert!(matches!(
            decode(trailing.as_bytes()),
            Err(DecodeError::Line { .. })
        ));
    }

    #[test]
    fn batches_respect_etcd_limits() {
        let small: Vec<(String, Bytes)> = (0..300)
            .map(|i| (format!("/k/{i:04}"), Bytes::from_static(b"v")))
            .collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [128, 128, 44]);
        let big = Bytes::from(vec![b'x'; 400 * 1024]);
        let large: Vec<(String, Bytes)> = (0..5)
            .map(|i| (format!("/b/{i}"), big.clone()))
            .chain(std::iter::once((
                "/huge".to_string(),
                Bytes::from(vec![b'y'; 2 << 20]),
            )))
            .collect();
        let sizes: Vec<usize> = batches(&large).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1, 1]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn store_urls() {
        assert_eq!("sqlite".parse::<StoreUrl>().ok(), Some(StoreUrl::Sqlite));
        assert!(matches!(
            "etcd://127.0.0.1:2379".parse::<StoreUrl>(),
            Ok(StoreUrl::Etcd(_))
        ));
        assert!(matches!(
            "etcd://127.0.0.1".parse::<StoreUrl>(),
            Err(StoreUrlError::Etcd(_))
        ));
        assert!(matches!(
            "postgres".parse::<StoreUrl>(),
            Err(StoreUrlError::Unknown(_))
        ));
        let url = "etcds://a:1,b:2/k8s/?ca=/ca.pem&timeout=2s";
        assert_eq!(
            url.parse::<StoreUrl>().map(|u| u.to_string()).ok(),
            Some(url.into())
        );
    }
}
