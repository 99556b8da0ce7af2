//! SQLite-specific behaviour: files and locking, durability across reopen, failure handling,
//! group commit, integrity checking.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_store::conformance::{put, put_txn};
use berth_store::ops::{self, Written};
use berth_store::sqlite::{InjectedFailure, SqliteStore};
use berth_store::{Op, RangeRequest, Store, StoreError, Txn, WatchItem, WatchOptions};
use bytes::Bytes;
use futures::StreamExt;

/// The next watch item; a stalled stream fails the test instead of hanging it.
async fn next(stream: &mut berth_store::WatchStream) -> Option<berth_store::Result<WatchItem>> {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("watch stalled")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn creates_private_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/data");
    let store = SqliteStore::open(&dir).unwrap();
    put(&*store, "/k", "v").await;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("store.db")), 0o600);
    assert_eq!(mode(&dir.join("lock")), 0o600);
    assert_eq!(mode(&dir.join("store.db-wal")), 0o600);
    assert_eq!(store.dir(), dir);
}

#[tokio::test]
async fn second_open_is_locked_while_first_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(tmp.path()).unwrap();
    match SqliteStore::open(tmp.path()) {
        Err(StoreError::Locked(dir)) => assert_eq!(dir, tmp.path().display().to_string()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open succeeded"),
    }
    put(&*first, "/k", "v").await;
    drop(first);
    // Dropping the store closes the database and releases the lock before returning.
    let second = SqliteStore::open(tmp.path()).unwrap();
    assert_eq!(
        ops::get(&*second, "/k").await.unwrap().0.map(|kv| kv.value),
        Some(Bytes::from("v"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_reopen_and_revisions_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let mut acknowledged = Vec::new();
    {
        let store = SqliteStore::open(tmp.path()).unwrap();
        let mut tasks = Vec::new();
        for task in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..8 {
                    let key = format!("/durable/{task}/{i}");
                    let value = format!("{task}-{i}");
                    let revision = put(&*store, &key, &value).await;
                    written.push((key, value, revision));
                }
                written
            }));
        }
        for task in tasks {
            acknowledged.extend(task.await.unwrap());
        }
        // Make the newest write a delete, then compact it away: the revision must still be
        // remembered (it lives in the meta row, not only in the log).
        let txn = Txn {
            success: vec![Op::Delete {
                key: "/durable/0/0".to_string(),
            }],
            ..Default::default()
        };
        store.txn(txn).await.unwrap();
        acknowledged.retain(|(key, _, _)| key != "/durable/0/0");
        let last = store.revisions().await.unwrap().current;
        assert_eq!(last, 129);
        store.compact(last).await.unwrap();
    }
    let store = SqliteStore::open(tmp.path()).unwrap();
    let revisions = store.revisions().await.unwrap();
    assert_eq!((revisions.current, revisions.compacted), (129, 129));
    for (key, value, revision) in &acknowledged {
        let kv = ops::get(&*store, key)
            .await
            .unwrap()
            .0
            .expect("acknowledged key is present");
        assert_eq!(kv.value, Bytes::from(value.clone()));
        assert_eq!(kv.mod_revision, *revision);
    }
    assert_eq!(ops::get(&*store, "/durable/0/0").await.unwrap().0, None);
    // Revisions are never reused.
    assert_eq!(put(&*store, "/durable/next", "v").await, 130);
    let old = RangeRequest {
        revision: Some(128),
        ..RangeRequest::prefix("/durable/")
    };
    assert_eq!(
        store.range(old).await,
        Err(StoreError::Compacted {
            requested: 128,
            compacted: 129
        })
    );
}

#[tokio::test]
async fn failed_fsync_poisons_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let good = put(&*store, "/k", "good").await;
    let mut watch = store
        .watch(
            "/".to_string(),
            good,
            WatchOptions {
                progress_interval: Duration::from_millis(10),
            },
        )
        .await
        .unwrap();

    store.fail_next_commit(InjectedFailure::Io);
    assert!(matches!(
        store.txn(put_txn("/k", "lost")).await,
        Err(StoreError::Unavailable(_))
    ));
    // Every later write is refused too, including ones that would have worked.
    assert!(matches!(
        store.txn(put_txn("/other", "x")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        ops::create(&*store, "/new", Bytes::new()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.compact(good).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.stats().poisoned.is_some());

    // Reads keep working and show only what was committed.
    let (kv, revision) = ops::get(&*store, "/k").await.unwrap();
    assert_eq!(kv.map(|kv| kv.value), Some(Bytes::from("good")));
    assert_eq!(revision, good);
    assert_eq!(store.revisions().await.unwrap().current, good);
    // Watchers never saw the failed write: the first thing they get is progress at `good`.
    match next(&mut watch).await {
        Some(Ok(WatchItem::Progress(revision))) => assert_eq!(revision, good),
        other => panic!("unexpected {other:?}"),
    }
    drop(watch);
    drop(store);

    // A restart recovers; the revision continues from the last durable commit.
    let store = SqliteStore::open(tmp.path()).unwrap();
    assert_eq!(store.stats().poisoned, None);
    assert_eq!(
        ops::get(&*store, "/k").await.unwrap().0.map(|kv| kv.value),
        Some(Bytes::from("good"))
    );
    assert_eq!(put(&*store, "/k", "after").await, good + 1);
}

#[tokio::test]
async fn full_disk_fails_the_batch_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let first = put(&*store, "/k", "1").await;
    store.fail_next_commit(InjectedFailure::NoSpace);
    assert!(matches!(
        store.txn(put_txn("/k", "2")).await,
        Err(StoreError::NoSpace(_))
    ));
    assert_eq!(store.stats().poisoned, None);
    assert_eq!(store.revisions().await.unwrap().current, first);
    assert_eq!(
        ops::get(&*store, "/k").await.unwrap().0.map(|kv| kv.value),
        Some(Bytes::from("1"))
    );
    // The failed write's revision was never acknowledged or published, so it is free again.
    assert_eq!(put(&*store, "/k", "3").await, first + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_group_committed() {
    const WRITERS: usize = 64;
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let before = store.stats();

    // Hold the writer so every request is queued before it commits anything: the batch then
    // deterministically holds all of them.
    let pause = store.pause_writer().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match ops::create(&*store, &format!("/group/{i}"), Bytes::from("v"))
                .await
                .unwrap()
            {
                Written::Ok(revision) => revision,
                other => panic!("{other:?}"),
            }
        }));
    }
    while store.stats().queued < WRITERS as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(pause);
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap());
    }
    revisions.sort();
    assert_eq!(revisions, (1..=WRITERS as i64).collect::<Vec<_>>());
    let after = store.stats();
    assert_eq!(after.commits - before.commits, 1, "{after:?}");
    assert_eq!(after.requests - before.requests, WRITERS as u64);
    assert_eq!(after.writes - before.writes, WRITERS as u64);

    // Without the pause it still works, whatever batches happen to form.
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            put(&*store, &format!("/free/{i}"), "v").await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let end = store.stats();
    assert_eq!(end.writes, 2 * WRITERS as u64);
    assert!(end.commits - after.commits <= WRITERS as u64);
}

/// In a batch, each txn sees the writes of the txns before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txns_in_one_batch_see_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let pause = store.pause_writer().await.unwrap();
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            ops::create(&*store, "/k", Bytes::from("first"))
                .await
                .unwrap()
        })
    };
    while store.stats().queued < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let second = {
        let store = store.clone();
        tokio::spawn(async move {
            ops::create(&*store, "/k", Bytes::from("second"))
                .await
                .unwrap()
        })
    };
    while store.stats().queued < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(pause);
    assert_eq!(first.await.unwrap(), Written::Ok(1));
    match second.await.unwrap() {
        Written::Conflict(Some(kv)) => {
            assert_eq!((kv.value, kv.mod_revision), (Bytes::from("first"), 1))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.stats().commits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_end_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let options = WatchOptions {
        progress_interval: Duration::from_millis(10),
    };
    let stream = store
        .watch("/".to_string(), 0, options.clone())
        .await
        .unwrap();
    assert_eq!(store.stats().watchers, 1);
    drop(stream);
    assert_eq!(store.stats().watchers, 0);

    // Closing the store ends its watches with an error, then the stream ends.
    let mut stream = store.watch("/".to_string(), 0, options).await.unwrap();
    drop(store);
    // Progress items may come first, but only a bounded number of them.
    for _ in 0..1000 {
        match next(&mut stream).await {
            Some(Ok(WatchItem::Progress(_))) => {}
            Some(Err(StoreError::Unavailable(_))) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(next(&mut stream).await.is_none());
}

fn write_store(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(dir).unwrap();
        for i in 0..200 {
            put(&*store, &format!("/fill/{i:04}"), &"x".repeat(300)).await;
        }
    });
}

fn open_error(dir: &Path) -> StoreError {
    match SqliteStore::open(dir) {
        Err(error) => error,
        Ok(_) => panic!("opening a damaged store succeeded"),
    }
}

#[test]
fn damaged_pages_fail_open_with_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    write_store(tmp.path());
    let path = tmp.path().join("store.db");
    // Closing the last connection checkpointed the WAL into the main file and removed it.
    assert!(!tmp.path().join("store.db-wal").exists());
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size >= 8 * 4096, "database unexpectedly small: {size}");
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // Overwrite pages 2..6 (b-tree pages of the tables) with garbage.
    file.seek(SeekFrom::Start(4096)).unwrap();
    file.write_all(&vec![0xa5; 4 * 4096]).unwrap();
    drop(file);
    match open_error(tmp.path()) {
        StoreError::Corrupt(message) => {
            assert!(
                message.contains("store.db") && message.contains("integrity check failed"),
                "{message}"
            )
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// Damage to a data page deep in the file: the integrity check finds it and says where.
#[test]
fn damaged_leaf_page_is_reported_by_the_integrity_check() {
    let tmp = tempfile::tempdir().unwrap();
    write_store(tmp.path());
    let path = tmp.path().join("store.db");
    let size = std::fs::metadata(&path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // Cell contents in the middle of a page in the middle of the file (a page of the log).
    file.seek(SeekFrom::Start(size / 2 + 100)).unwrap();
    file.write_all(&[0xa5; 200]).unwrap();
    drop(file);
    match open_error(tmp.path()) {
        StoreError::Corrupt(message) => {
            assert!(message.contains("integrity check failed"), "{message}");
            assert!(
                message.contains("page"),
                "the problem is not located: {message}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn not_a_database_fails_open_with_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("store.db"), vec![0x42; 8192]).unwrap();
    match open_error(tmp.path()) {
        StoreError::Corrupt(message) => assert!(message.contains("not a database"), "{message}"),
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn foreign_database_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(tmp.path().join("store.db")).unwrap();
    conn.execute_batch("CREATE TABLE something (x INTEGER)")
        .unwrap();
    drop(conn);
    match open_error(tmp.path()) {
        StoreError::Corrupt(message) => assert!(message.contains("not a berth store"), "{message}"),
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn inconsistent_revisions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_store(tmp.path());
    let conn = rusqlite::Connection::open(tmp.path().join("store.db")).unwrap();
    conn.execute_batch("UPDATE meta SET current = 5").unwrap();
    drop(conn);
    match open_error(tmp.path()) {
        StoreError::Corrupt(message) => {
            assert!(message.contains("inconsistent revisions"), "{message}")
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// A watcher that falls more than the live feed's capacity behind catches up from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_rereads_history() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<SqliteStore> = SqliteStore::open(tmp.path()).unwrap();
    let options = WatchOptions {
        progress_interval: Duration::from_secs(3600),
    };
    let mut stream = store.watch("/lag/".to_string(), 0, options).await.unwrap();
    // More commits than the feed buffers, each its own batch, while the watcher reads nothing.
    const WRITES: i64 = 1100;
    for i in 0..WRITES {
        put(&*store, &format!("/lag/{i}"), "v").await;
    }
    for i in 0..WRITES {
        match next(&mut stream).await {
            Some(Ok(WatchItem::Event(event))) => {
                assert_eq!(event.kv.mod_revision, i + 1);
                assert_eq!(event.kv.key, format!("/lag/{i}"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let live = put(&*store, "/lag/live", "v").await;
    match next(&mut stream).await {
        Some(Ok(WatchItem::Event(event))) => assert_eq!(event.kv.mod_revision, live),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn removed_store_files_stop_acknowledgements() {
    for victim in ["store.db", "store.db-wal"] {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(tmp.path()).unwrap();
        put(&*store, "/before", "v").await;
        assert!(store.writable().is_ok());
        std::fs::remove_file(tmp.path().join(victim)).unwrap();
        // Health reports it before any write tries.
        assert!(
            matches!(store.writable(), Err(StoreError::Unavailable(m)) if m.contains("removed"))
        );
        let error = store.txn(put_txn("/after", "v")).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Unavailable(m) if m.contains(victim)),
            "{error:?}"
        );
    }
}

/// Copies the store's files while it runs: what a crash at this moment would leave on disk
/// (every acknowledged commit has been fsynced, so the page cache and the disk agree on it).
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["store.db", "store.db-wal"] {
        let source = from.join(name);
        if source.exists() {
            std::fs::copy(&source, to.join(name)).unwrap();
        }
    }
}

/// A5: a torn WAL tail after a crash. Whatever number of bytes is cut off the end, the store
/// opens, keeps a prefix of the acknowledged history (commits are appended in order), and the
/// next revision is above every surviving one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_tail_keeps_a_prefix_of_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = SqliteStore::open(&live).unwrap();
    let mut written = Vec::new();
    for i in 0..40 {
        let key = format!("/k/{i:03}");
        let revision = put(&*store, &key, &"v".repeat(i * 50)).await;
        written.push((key, revision));
    }
    let image = tmp.path().join("image");
    crash_image(&live, &image);
    drop(store);
    let wal_len = std::fs::metadata(image.join("store.db-wal")).unwrap().len();
    assert!(
        wal_len > 40 * 4096,
        "the history is in the WAL, not checkpointed: {wal_len} bytes"
    );
    for cut in [1u64, 7, 100, 4095, 4096, 4097, 10_000, wal_len / 2, wal_len] {
        let torn = tmp.path().join(format!("torn-{cut}"));
        crash_image(&image, &torn);
        let wal = std::fs::OpenOptions::new()
            .write(true)
            .open(torn.join("store.db-wal"))
            .unwrap();
        wal.set_len(wal_len.saturating_sub(cut)).unwrap();
        drop(wal);
        let reopened = SqliteStore::open(&torn).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let listed = reopened.range(RangeRequest::prefix("/k/")).await.unwrap();
        let surviving: Vec<(String, i64)> = listed
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect();
        assert_eq!(
            surviving,
            written[..surviving.len()],
            "cut {cut}: not a prefix of the history"
        );
        if cut >= wal_len / 2 {
            assert!(
                surviving.len() < written.len() / 2 + 2,
                "cut {cut} should lose the later half"
            );
        }
        if cut <= 4096 {
            assert!(
                surviving.len() >= written.len() - 2,
                "cut {cut} lost more than the torn commit"
            );
        }
        let last = surviving.last().map(|(_, r)| *r).unwrap_or(0);
        let next = put(&*reopened, "/after", "v").await;
        assert!(next > last, "cut {cut}: revision {next} not above {last}");
    }
}

/// A6: a flipped byte inside an old value, which SQLite's own structure check cannot see, makes
/// opening refuse the store with a checksum error naming the damaged revision — never serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_old_value_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let marker = "berth-a6-marker-0123456789";
    let damaged_revision = {
        let store = SqliteStore::open(&dir).unwrap();
        put(&*store, "/k/before", "v").await;
        let revision = put(&*store, "/k/victim", marker).await;
        for i in 0..20 {
            put(&*store, &format!("/k/after-{i}"), "v").await;
        }
        revision
    };
    // Closed cleanly: everything is checkpointed into store.db.
    let db = dir.join("store.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the value is in the file");
    bytes[at + 5] ^= 0x01;
    std::fs::write(&db, &bytes).unwrap();
    let error = open_error(&dir);
    match &error {
        StoreError::Corrupt(message) => {
            assert!(message.contains("checksum mismatch"), "{message}");
            assert!(
                message.contains(&format!("revision {damaged_revision}")),
                "{message}"
            );
            assert!(message.contains("/k/victim"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
