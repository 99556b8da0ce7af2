//! [`SqliteStore`]: the embedded, durable backend.
//!
//! # Files
//! A data directory (created with mode 0700) holds `lock`, on which the store keeps an exclusive
//! `flock` for its whole life so two berths can never share one directory, and `store.db`
//! (mode 0600, with its `-wal`/`-shm` companions) in SQLite's WAL mode with `synchronous=FULL`.
//!
//! # Schema
//! - `log(rev PRIMARY KEY, key, value, create_rev, prev_rev, deleted)`: the history, one row per
//!   write (a delete is a row with `deleted = 1`). `prev_rev` points at the row this write
//!   replaced, which is where watch events get `prev_kv` from.
//! - `current(key PRIMARY KEY, rev)`: the latest live row of every key, for fast latest reads.
//!   It stores the revision only, not a second copy of the value: the value is one primary-key
//!   lookup away in `log`, and not duplicating it halves the bytes written per put.
//! - `meta(current, compacted)`: the store's revision and compacted revision, updated in the
//!   same transaction as the data, so the revision never goes backwards across restarts even
//!   when compaction has removed the newest log rows (tombstones).
//!
//! Keys are stored as BLOBs so SQLite compares them bytewise, the same order as Rust's `str`.
//!
//! # Writes and group commit
//! One writer thread owns the only read-write connection. Requests reach it over a channel with
//! a oneshot reply. It takes everything pending, runs each request inside one SQLite
//! transaction, in order (each txn sees the effects of the ones before it, revisions go up by
//! one per write op), COMMITs once — with `synchronous=FULL` that commit is the fsync — and only
//! then publishes the events to watchers and answers every request of the batch. Each request
//! runs under its own SAVEPOINT so a request-specific failure (say, a value over SQLite's size
//! limit) fails only that request.
//!
//! Failures that concern the whole batch: `SQLITE_FULL` fails it with [`StoreError::NoSpace`]
//! (rolled back; later writes may succeed once space is freed). An I/O error, corruption, or a
//! failed COMMIT of any other kind *poisons* the store: that batch and every later write get
//! [`StoreError::Unavailable`] until the process reopens the store. After a failed fsync the
//! kernel may have dropped the dirty pages and cleared the error, so retrying and reporting
//! success could acknowledge data that is not on disk (the "fsyncgate" problem). As with any
//! failed write, a request answered `Unavailable` may or may not turn out to be applied after
//! a restart (its WAL frames may have reached the disk); it is never reported as done, its
//! revision is never published to watchers, and on restart the revision counter resumes from
//! whatever was durably committed.
//!
//! # Reads
//! A small pool of read-only connections, used through `spawn_blocking`. Each read is one read
//! transaction, so the data and the revision it reports come from the same snapshot. Reads at
//! an older revision use the log: per key, the latest row at or below the revision, unless it is
//! a delete.
//!
//! # Watches
//! See [`crate::watch`]: history replays read the log in chunks; live events come from a
//! broadcast the writer feeds after each commit.
//!
//! # Compaction
//! Runs in the writer, serialized with writes. For every key written since the previous
//! compaction it deletes the rows superseded at the compact point, then the deletes (tombstones)
//! at or below it. The latest row at or below the compact point of every live key stays (reads
//! at exactly the compacted revision still work, and it is the `prev_kv` of the key's next
//! event).
//!
//! # Integrity
//! Opening runs `PRAGMA quick_check` and fails with [`StoreError::Corrupt`] naming the problems
//! it reports, then checks the schema version and that the recorded revisions are consistent
//! with the log. `quick_check` verifies the b-tree structure of every page (it is O(size of
//! the database): milliseconds for a small store, on the order of a second per few hundred MB)
//! but not the contents of values; what it catches is the damage that makes SQLite misread a
//! file (torn or overwritten pages, truncation, a file that is not a database). SQLite errors
//! reporting corruption while running are also surfaced as `Corrupt`, never as data.
//!
//! Damage `quick_check` cannot see — a flipped bit inside a stored value — is caught by a CRC-32
//! kept with every log row over everything the row says (revision, key, value, create and
//! previous revisions, tombstone). Opening verifies every row and refuses the store naming the
//! first bad revision and key; every read verifies the rows it returns, so a store damaged while
//! running reports `Corrupt` instead of serving the damage. CRC-32 runs at memory speed, small
//! next to the JSON work above the store.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::watch::{self, Batch, Feed, History, KeyPrefix, Replay};
use crate::{
    Compare, Event, EventKind, KeyValue, Op, OpResponse, RangeRequest, RangeResponse, Result,
    Revision, Revisions, Store, StoreError, Txn, TxnResponse, WatchOptions, WatchStream,
};

const DB_FILE: &str = "store.db";
const LOCK_FILE: &str = "lock";
/// `PRAGMA application_id`: "brth", so a foreign SQLite file is refused rather than adopted.
const APPLICATION_ID: i32 = 0x6272_7468;
const SCHEMA_VERSION: i32 = 2;
/// How long a connection waits on SQLite's own locks. The writer is the only writer, so this
/// only covers checkpoints and readers briefly overlapping them.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
    CREATE TABLE log (
        rev        INTEGER PRIMARY KEY,
        key        BLOB    NOT NULL,
        value      BLOB,
        create_rev INTEGER NOT NULL,
        prev_rev   INTEGER NOT NULL,
        deleted    INTEGER NOT NULL,
        sum        INTEGER NOT NULL
    );
    CREATE INDEX log_key_rev ON log (key, rev);
    CREATE TABLE current (
        key BLOB PRIMARY KEY,
        rev INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        current   INTEGER NOT NULL,
        compacted INTEGER NOT NULL
    );
    INSERT INTO meta (id, current, compacted) VALUES (1, 0, 0);
";

/// Tuning for [`SqliteStore::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Read-only connections in the read pool (reads beyond this wait for one).
    pub read_connections: usize,
    /// The most write requests one commit carries.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            read_connections: 4,
            max_batch: 512,
        }
    }
}

/// Counters describing the store's work so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Successful COMMITs of the writer (each is one fsync of the WAL).
    pub commits: u64,
    /// Write requests (txns and compactions) the writer has taken on, successful or not.
    pub requests: u64,
    /// Revisions written (puts, and deletes of existing keys), committed.
    pub writes: u64,
    /// Write requests waiting for the writer.
    pub queued: u64,
    /// Live watch streams (a dropped stream stops counting at once).
    pub watchers: usize,
    /// Why the store refuses writes, if it does.
    pub poisoned: Option<String>,
}

/// A failure [`SqliteStore::fail_next_commit`] injects instead of the next COMMIT.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFailure {
    /// The fsync of the commit fails (`SQLITE_IOERR_FSYNC`): the store must become poisoned.
    Io,
    /// The disk is full (`SQLITE_FULL`): the batch fails with `NoSpace`, later writes work.
    NoSpace,
}

/// Holds the writer paused (see [`SqliteStore::pause_writer`]) until dropped.
#[doc(hidden)]
pub struct WriterPause {
    _resume: std::sync::mpsc::Sender<()>,
}

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    dir: PathBuf,
    /// `None` only while dropping: closing the channel is what stops the writer.
    requests: Option<mpsc::UnboundedSender<Request>>,
    shared: Arc<Shared>,
    readers: Arc<ReadPool>,
    feed: Feed,
    writer: Option<JoinHandle<()>>,
}

/// State the writer shares with the store handle.
#[derive(Default)]
struct Shared {
    commits: AtomicU64,
    requests: AtomicU64,
    writes: AtomicU64,
    queued: AtomicU64,
    current: AtomicI64,
    compacted: AtomicI64,
    poisoned: Mutex<Option<String>>,
    /// 0, or an [`InjectedFailure`] code for the next COMMIT.
    fail_next_commit: AtomicU8,
    /// The database and WAL files as opened, to notice them being removed or replaced.
    files: Vec<FileIdentity>,
}

/// A file by path and by (device, inode): if the path stops naming the same inode, SQLite is
/// writing to a file nobody will find after a restart.
#[derive(Debug, Clone)]
struct FileIdentity {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        match FileIdentity::of(&self.path) {
            Some(now) if now.dev == self.dev && now.ino == self.ino => Ok(()),
            Some(_) => Err(format!(
                "store file {} was replaced while berth was running",
                self.path.display()
            )),
            None => Err(format!(
                "store file {} was removed while berth was running",
                self.path.display()
            )),
        }
    }
}

impl Shared {
    /// Checks that the store's files are still the ones it writes to.
    fn files_intact(&self) -> std::result::Result<(), String> {
        self.files.iter().try_for_each(FileIdentity::check)
    }

    fn poisoned(&self) -> MutexGuard<'_, Option<String>> {
        self.poisoned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Request {
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnResponse>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Test hook: the writer acknowledges, then blocks until `resume` is disconnected.
    Pause {
        paused: oneshot::Sender<()>,
        resume: std::sync::mpsc::Receiver<()>,
    },
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {error}", path.display()))
}

/// Maps a SQLite error seen by a reader (or while opening).
fn read_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(error.to_string())
        }
        Some(ErrorCode::DiskFull) => StoreError::NoSpace(error.to_string()),
        _ => StoreError::Backend(error.to_string()),
    }
}

/// The checksum of one log row: everything the row says, so no field can change unnoticed.
fn row_sum(
    rev: Revision,
    key: &[u8],
    value: Option<&[u8]>,
    create_rev: Revision,
    prev_rev: Revision,
    deleted: bool,
) -> i64 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&rev.to_le_bytes());
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    match value {
        Some(value) => {
            hasher.update(&[1]);
            hasher.update(value);
        }
        None => hasher.update(&[0]),
    }
    hasher.update(&create_rev.to_le_bytes());
    hasher.update(&prev_rev.to_le_bytes());
    hasher.update(&[u8::from(deleted)]);
    i64::from(hasher.finalize())
}

/// Fails with `Corrupt`, naming the row, unless the stored checksum matches the row.
#[allow(clippy::too_many_arguments)] // The row's columns, as stored.
fn verify_row(
    rev: Revision,
    key: &[u8],
    value: Option<&[u8]>,
    create_rev: Revision,
    prev_rev: Revision,
    deleted: bool,
    sum: i64,
) -> Result<()> {
    if row_sum(rev, key, value, create_rev, prev_rev, deleted) == sum {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "checksum mismatch in the log row of revision {rev} (key {:?}): the stored data is damaged",
        String::from_utf8_lossy(key)
    )))
}

/// Verifies every row of the log; O(size of the log), run once at open.
fn verify_log(conn: &Connection) -> Result<()> {
    let mut statement = conn
        .prepare("SELECT rev, key, value, create_rev, prev_rev, deleted, sum FROM log ORDER BY rev")
        .map_err(read_error)?;
    let mut rows = statement.query([]).map_err(read_error)?;
    while let Some(row) = rows.next().map_err(read_error)? {
        let key: Vec<u8> = row.get(1).map_err(read_error)?;
        let value: Option<Vec<u8>> = row.get(2).map_err(read_error)?;
        verify_row(
            row.get(0).map_err(read_error)?,
            &key,
            value.as_deref(),
            row.get(3).map_err(read_error)?,
            row.get(4).map_err(read_error)?,
            row.get(5).map_err(read_error)?,
            row.get(6).map_err(read_error)?,
        )?;
    }
    Ok(())
}

fn key_from_db(key: Vec<u8>) -> Result<String> {
    String::from_utf8(key)
        .map_err(|error| StoreError::Corrupt(format!("a key in the log is not UTF-8: {error}")))
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` with default options. Blocking: it checks
    /// the database's integrity, so call it before serving or from `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<Arc<SqliteStore>> {
        Self::open_with(dir, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with explicit options.
    pub fn open_with(dir: &Path, options: SqliteOptions) -> Result<Arc<SqliteStore>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| io_error("cannot create data directory", dir, error))?;
        let lock = lock_dir_waiting(dir, LOCK_WAIT)?;

        let path = dir.join(DB_FILE);
        // SQLite creates files 0644 (less umask); create it ourselves so it is never readable by
        // others, not even briefly. The -wal and -shm files inherit the database's mode.
        let db_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|error| io_error("cannot create", &path, error))?;
        db_file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|error| io_error("cannot set permissions of", &path, error))?;
        drop(db_file);

        let conn = open_writer(&path).map_err(|error| with_path(&path, error))?;
        let (current, compacted) = load_meta(&conn).map_err(|error| with_path(&path, error))?;
        // Make the new files' directory entries durable before acknowledging anything.
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| io_error("cannot sync data directory", dir, error))?;

        let readers = Arc::new(ReadPool::open(&path, options.read_connections.max(1))?);
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let files = [path.clone(), PathBuf::from(wal)]
            .iter()
            .filter_map(|p| FileIdentity::of(p))
            .collect();
        let shared = Arc::new(Shared {
            files,
            ..Shared::default()
        });
        shared.current.store(current, Ordering::SeqCst);
        shared.compacted.store(compacted, Ordering::SeqCst);
        let feed = watch::new_feed();
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            conn,
            _lock: lock,
            receiver,
            shared: shared.clone(),
            feed: feed.clone(),
            max_batch: options.max_batch.max(1),
            current,
            compacted,
            poisoned: None,
        };
        let writer = std::thread::Builder::new()
            .name("berth-store-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|error| {
                StoreError::Backend(format!("cannot start the writer thread: {error}"))
            })?;
        tracing::info!(dir = %dir.display(), current, compacted, "store opened");
        Ok(Arc::new(SqliteStore {
            dir: dir.to_path_buf(),
            requests: Some(requests),
            shared,
            readers,
            feed,
            writer: Some(writer),
        }))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            commits: self.shared.commits.load(Ordering::SeqCst),
            requests: self.shared.requests.load(Ordering::SeqCst),
            writes: self.shared.writes.load(Ordering::SeqCst),
            queued: self.shared.queued.load(Ordering::SeqCst),
            watchers: self.feed.receiver_count(),
            poisoned: self.shared.poisoned().clone(),
        }
    }

    /// Test hook: the next COMMIT fails as `failure` says instead of running (the batch is
    /// rolled back and handled exactly as a real failure of that kind).
    #[doc(hidden)]
    pub fn fail_next_commit(&self, failure: InjectedFailure) {
        let code = match failure {
            InjectedFailure::Io => 1,
            InjectedFailure::NoSpace => 2,
        };
        self.shared.fail_next_commit.store(code, Ordering::SeqCst);
    }

    /// Test hook: returns once the writer is blocked; it stays blocked, queueing requests,
    /// until the returned guard is dropped. Lets a test make batching deterministic. Drop the
    /// guard before the store: dropping the store waits for the writer.
    #[doc(hidden)]
    pub async fn pause_writer(&self) -> Result<WriterPause> {
        let (paused, paused_rx) = oneshot::channel();
        let (resume_tx, resume) = std::sync::mpsc::channel();
        self.send(Request::Pause { paused, resume })?;
        paused_rx.await.map_err(|_| writer_gone())?;
        Ok(WriterPause { _resume: resume_tx })
    }

    fn send(&self, request: Request) -> Result<()> {
        let requests = self.requests.as_ref().ok_or_else(writer_gone)?;
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        requests.send(request).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            writer_gone()
        })
    }

    fn check_poisoned(&self) -> Result<()> {
        match self.shared.poisoned().as_ref() {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    /// Not poisoned, and the files on disk are still the ones being written.
    fn check_writable(&self) -> Result<()> {
        self.check_poisoned()?;
        self.shared.files_intact().map_err(StoreError::Unavailable)
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".to_string())
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.readers.close();
        // Closing the channel ends the writer once it has answered what is queued; joining it
        // means the database is closed and the directory lock released when drop returns, so
        // the directory can be reopened right away.
        self.requests = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

/// Takes the exclusive lock of the store in `dir`, as an open store holds it: tools that
/// must not run beside `berth up` (such as `berth down`) hold it while they work.
/// How long a starting berth waits for the data dir's lock: a berth killed a moment ago may
/// still be letting go of it (a child it forked holds the lock until that child execs), and a
/// restart right after a crash must not fail for that.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// [`lock_dir`], retrying for up to `wait` while another process holds the lock.
pub fn lock_dir_waiting(dir: &Path, wait: std::time::Duration) -> Result<File> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match lock_dir(dir) {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

pub fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|error| io_error("cannot open", &path, error))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Locked(dir.display().to_string())),
        Err(error) => Err(io_error("cannot lock", &path, error.into())),
    }
}

/// Opens the write connection: creates the schema on a new database, checks an existing one.
fn open_writer(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(read_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(read_error)?;
    integrity_check(&conn)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(read_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "cannot switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(read_error)?;
    // Keep the WAL from staying large after a burst, once checkpointed.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(read_error)?;

    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(read_error)?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(read_error)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(read_error)?;
    if application_id == 0 && version == 0 && tables == 0 {
        let init = format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        );
        conn.execute_batch(&init).map_err(read_error)?;
    } else if application_id != APPLICATION_ID {
        return Err(StoreError::Corrupt(format!(
            "{} is not a berth store (application_id {application_id:#x})",
            path.display()
        )));
    } else if version != SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {version}; this berth understands {SCHEMA_VERSION}",
            path.display()
        )));
    }
    verify_log(&conn)?;
    Ok(conn)
}

fn integrity_check(conn: &Connection) -> Result<()> {
    // A badly damaged file can make the check itself fail (SQLITE_CORRUPT) instead of listing
    // problems; either way the result is `Corrupt`.
    let context = |error: rusqlite::Error| match read_error(error) {
        StoreError::Corrupt(message) => {
            StoreError::Corrupt(format!("integrity check failed: {message}"))
        }
        other => other,
    };
    let mut statement = conn.prepare("PRAGMA quick_check").map_err(context)?;
    let problems = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(context)?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    // SQLite reports several problems per row, one per line; keep the error on one line.
    let problems = problems.join("\n").replace('\n', "; ");
    Err(StoreError::Corrupt(format!(
        "integrity check failed: {problems}"
    )))
}

/// Names the database file in an error from opening it.
fn with_path(path: &Path, error: StoreError) -> StoreError {
    match error {
        StoreError::Corrupt(message) => {
            StoreError::Corrupt(format!("{}: {message}", path.display()))
        }
        StoreError::Backend(message) => {
            StoreError::Backend(format!("{}: {message}", path.display()))
        }
        StoreError::NoSpace(message) => {
            StoreError::NoSpace(format!("{}: {message}", path.display()))
        }
        other => other,
    }
}

/// Reads and sanity-checks the recorded revisions.
fn load_meta(conn: &Connection) -> Result<(Revision, Revision)> {
    let (current, compacted): (Revision, Revision) = conn
        .query_row(
            "SELECT current, compacted FROM meta WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(read_error)?
        .ok_or_else(|| StoreError::Corrupt("the meta row is missing".to_string()))?;
    let newest: Option<Revision> = conn
        .query_row("SELECT max(rev) FROM log", [], |row| row.get(0))
        .map_err(read_error)?;
    if compacted < 0 || compacted > current || newest.is_some_and(|newest| newest > current) {
        return Err(StoreError::Corrupt(format!(
            "inconsistent revisions: current {current}, compacted {compacted}, newest log row {newest:?}"
        )));
    }
    Ok((current, compacted))
}

fn read_meta(conn: &Connection) -> Result<(Revision, Revision)> {
    conn.prepare_cached("SELECT current, compacted FROM meta WHERE id = 1")
        .and_then(|mut statement| statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(read_error)
}

// ---------------------------------------------------------------------------------------------
// Reads

/// Read-only connections, handed to blocking tasks one read at a time.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection, so at most that many reads hold a blocking thread.
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

fn open_reader(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(read_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(read_error)?;
    // The reads bind their LIMIT as a parameter; without the query planner stability guarantee
    // SQLite expires a statement whenever such a parameter is rebound and recompiles it on the
    // next step, so every cached read was parsed and planned again (about 15% of the server's
    // CPU under a create load). QPSG only fixes the plan; results are the same.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(read_error)?;
    Ok(conn)
}

fn closed_error() -> StoreError {
    StoreError::Unavailable("the store was closed".to_string())
}

impl ReadPool {
    fn open(path: &Path, size: usize) -> Result<ReadPool> {
        let idle = (0..size)
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>>>()?;
        Ok(ReadPool {
            path: path.to_path_buf(),
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
            closed: AtomicBool::new(false),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.permits.close();
        self.idle().clear();
    }

    /// Runs `read` on a pooled connection on a blocking thread.
    async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed_error())?;
        let pool = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if pool.closed.load(Ordering::SeqCst) {
                return Err(closed_error());
            }
            // A connection lost to a panicking read is replaced here.
            let popped = pool.idle().pop();
            let mut conn = match popped {
                Some(conn) => conn,
                None => open_reader(&pool.path)?,
            };
            let result = read(&mut conn);
            if !pool.closed.load(Ordering::SeqCst) {
                pool.idle().push(conn);
            }
            result
        });
        task.await
            .map_err(|error| StoreError::Backend(format!("read task failed: {error}")))?
    }
}

/// Raw row as read from SQLite, converted outside the row callback so conversion errors can be
/// reported as [`StoreError::Corrupt`].
type RawKv = (Vec<u8>, Option<Vec<u8>>, Revision, Revision, Revision, i64);

fn to_kv((key, value, create_revision, mod_revision, prev_rev, sum): RawKv) -> Result<KeyValue> {
    // Range reads only return live rows (deleted = 0).
    verify_row(
        mod_revision,
        &key,
        value.as_deref(),
        create_revision,
        prev_rev,
        false,
        sum,
    )?;
    Ok(KeyValue {
        key: key_from_db(key)?,
        value: Bytes::from(value.unwrap_or_default()),
        create_revision,
        mod_revision,
    })
}

/// The bytes range `[start, end)` a range request covers. One key is `[key, key + "\0")`.
fn request_bounds(request: &RangeRequest) -> (Vec<u8>, Vec<u8>) {
    let start = request.key.as_bytes().to_vec();
    let end = match &request.range_end {
        Some(end) => end.as_bytes().to_vec(),
        None => {
            let mut end = start.clone();
            end.push(0);
            end
        }
    };
    (start, end)
}

fn sql_limit(limit: Option<usize>) -> i64 {
    // One more than asked for tells whether there is more; -1 is SQLite's "no limit".
    limit.map_or(-1, |limit| {
        i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
    })
}

fn range_blocking(conn: &mut Connection, request: &RangeRequest) -> Result<RangeResponse> {
    let tx = conn.transaction().map_err(read_error)?;
    let (current, compacted) = read_meta(&tx)?;
    let at = match request.revision {
        Some(revision) if revision > 0 => revision,
        _ => current,
    };
    if at > current {
        return Err(StoreError::FutureRevision {
            requested: at,
            current,
        });
    }
    if at < compacted {
        return Err(StoreError::Compacted {
            requested: at,
            compacted,
        });
    }
    let (start, end) = request_bounds(request);
    let limit = sql_limit(request.limit);
    let rows: Vec<RawKv> = if at == current {
        let mut statement = tx
            .prepare_cached(
                "SELECT c.key, l.value, l.create_rev, l.rev, l.prev_rev, l.sum FROM current c JOIN log l ON l.rev = c.rev
                 WHERE c.key >= ?1 AND c.key < ?2 ORDER BY c.key LIMIT ?3",
            )
            .map_err(read_error)?;
        statement
            .query_map(params![start, end, limit], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(read_error)?
    } else {
        let mut statement = tx
            .prepare_cached(
                "SELECT l.key, l.value, l.create_rev, l.rev, l.prev_rev, l.sum
                 FROM (SELECT max(rev) AS rev FROM log WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key) m
                 JOIN log l ON l.rev = m.rev
                 WHERE l.deleted = 0 ORDER BY l.key LIMIT ?4",
            )
            .map_err(read_error)?;
        statement
            .query_map(params![start, end, at, limit], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(read_error)?
    };
    let mut kvs = rows.into_iter().map(to_kv).collect::<Result<Vec<_>>>()?;
    let more = request.limit.is_some_and(|limit| kvs.len() > limit);
    if let Some(limit) = request.limit {
        kvs.truncate(limit);
    }
    Ok(RangeResponse {
        kvs,
        revision: at,
        more,
    })
}

/// One log row joined with the row it replaced.
struct RawEvent {
    rev: Revision,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    create_rev: Revision,
    deleted: bool,
    prev_rev: Revision,
    sum: i64,
    prev_value: Option<Vec<u8>>,
    prev_create_rev: Option<Revision>,
    prev_prev_rev: Option<Revision>,
    prev_sum: Option<i64>,
}

fn to_event(raw: RawEvent) -> Result<Event> {
    verify_row(
        raw.rev,
        &raw.key,
        raw.value.as_deref(),
        raw.create_rev,
        raw.prev_rev,
        raw.deleted,
        raw.sum,
    )?;
    if let (Some(create_rev), Some(prev_prev_rev), Some(sum)) =
        (raw.prev_create_rev, raw.prev_prev_rev, raw.prev_sum)
    {
        // The replaced row is a live value of the same key (tombstones are never replaced).
        verify_row(
            raw.prev_rev,
            &raw.key,
            raw.prev_value.as_deref(),
            create_rev,
            prev_prev_rev,
            false,
            sum,
        )?;
    }
    let key = key_from_db(raw.key)?;
    let prev_kv = if raw.prev_rev > 0 {
        // Compaction always keeps the row a later event replaced; its absence is damage.
        let create_revision = raw.prev_create_rev.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "log row {} refers to missing row {}",
                raw.rev, raw.prev_rev
            ))
        })?;
        Some(KeyValue {
            key: key.clone(),
            value: Bytes::from(raw.prev_value.unwrap_or_default()),
            create_revision,
            mod_revision: raw.prev_rev,
        })
    } else {
        None
    };
    let (kind, kv) = if raw.deleted {
        (
            EventKind::Delete,
            KeyValue {
                key,
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: raw.rev,
            },
        )
    } else {
        let value = Bytes::from(raw.value.unwrap_or_default());
        (
            EventKind::Put,
            KeyValue {
                key,
                value,
                create_revision: raw.create_rev,
                mod_revision: raw.rev,
            },
        )
    };
    Ok(Event { kind, kv, prev_kv })
}

fn replay_blocking(
    conn: &mut Connection,
    prefix: &KeyPrefix,
    after: Revision,
    limit: usize,
) -> Result<Replay> {
    let tx = conn.transaction().map_err(read_error)?;
    let (current, compacted) = read_meta(&tx)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let mut statement = tx
        .prepare_cached(
            "SELECT l.rev, l.key, l.value, l.create_rev, l.deleted, l.prev_rev, p.value, p.create_rev,
                    l.sum, p.prev_rev, p.sum
             FROM log l LEFT JOIN log p ON p.rev = l.prev_rev
             WHERE l.rev > ?1 AND l.rev <= ?2 AND l.key >= ?3 AND (?4 IS NULL OR l.key < ?4)
             ORDER BY l.rev LIMIT ?5",
        )
        .map_err(read_error)?;
    let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<RawEvent> = statement
        .query_map(
            params![
                after,
                current,
                prefix.prefix.as_bytes(),
                prefix.end,
                sql_limit
            ],
            |row| {
                Ok(RawEvent {
                    rev: row.get(0)?,
                    key: row.get(1)?,
                    value: row.get(2)?,
                    create_rev: row.get(3)?,
                    deleted: row.get(4)?,
                    prev_rev: row.get(5)?,
                    prev_value: row.get(6)?,
                    prev_create_rev: row.get(7)?,
                    sum: row.get(8)?,
                    prev_prev_rev: row.get(9)?,
                    prev_sum: row.get(10)?,
                })
            },
        )
        .and_then(|rows| rows.collect())
        .map_err(read_error)?;
    let caught_up = rows.len() < limit;
    let events = rows.into_iter().map(to_event).collect::<Result<Vec<_>>>()?;
    let through = if caught_up {
        current
    } else {
        events.last().map_or(after, |event| event.kv.mod_revision)
    };
    Ok(Replay {
        events,
        through,
        caught_up,
    })
}

/// The history of a [`SqliteStore`], as seen by watches (which outlive any borrow of the store).
struct PoolHistory(Arc<ReadPool>);

impl History for PoolHistory {
    fn replay(
        &self,
        prefix: Arc<KeyPrefix>,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Replay>> {
        let pool = self.0.clone();
        async move {
            pool.run(move |conn| replay_blocking(conn, &prefix, after, limit))
                .await
        }
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

/// How a batch-level failure is answered.
enum BatchFailure {
    NoSpace(String),
    /// Not the disk's fault and nothing uncertain happened: fail the batch, keep going.
    Transient(String),
    /// Durability is uncertain from here on.
    Poison(String),
}

/// Classifies a SQLite error that ended a batch. `at_commit`: it came from COMMIT itself.
fn classify(error: &rusqlite::Error, at_commit: bool) -> BatchFailure {
    let message = error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => BatchFailure::NoSpace(message),
        // Nothing was attempted on disk in these cases, even at COMMIT (BUSY leaves the
        // transaction open; we roll it back).
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::OutOfMemory) => {
            BatchFailure::Transient(message)
        }
        _ if at_commit => BatchFailure::Poison(message),
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly,
        ) => BatchFailure::Poison(message),
        _ => BatchFailure::Transient(message),
    }
}

/// Whether an error inside one request must fail the whole batch (rather than just roll back
/// that request's savepoint).
fn is_batch_fatal(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
        )
    )
}

/// A request's work, separated from where its answer goes.
enum Work {
    Txn(Txn),
    Compact(Revision),
}

enum Outcome {
    Txn(TxnResponse),
    Compacted,
}

enum Reply {
    Txn(oneshot::Sender<Result<TxnResponse>>),
    Compact(oneshot::Sender<Result<()>>),
}

impl Reply {
    fn send(self, result: Result<Outcome>) {
        // A send fails only when the caller stopped waiting (its future was dropped); the write
        // stands regardless, as with a client that disconnects after sending to etcd.
        match self {
            Reply::Txn(reply) => {
                let _ = reply.send(result.and_then(|outcome| match outcome {
                    Outcome::Txn(response) => Ok(response),
                    Outcome::Compacted => Err(StoreError::Backend(
                        "internal: mismatched reply".to_string(),
                    )),
                }));
            }
            Reply::Compact(reply) => {
                let _ = reply.send(result.map(|_| ()));
            }
        }
    }
}

/// A request-level failure.
enum ItemError {
    /// The request is invalid in the current state (nothing was written).
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for ItemError {
    fn from(error: rusqlite::Error) -> Self {
        ItemError::Sql(error)
    }
}

struct Writer {
    // Declared before `_lock` so the connection closes before the directory lock is released.
    conn: Connection,
    _lock: File,
    receiver: mpsc::UnboundedReceiver<Request>,
    shared: Arc<Shared>,
    feed: Feed,
    max_batch: usize,
    /// The revision as of the writer's open transaction (committed revision between batches).
    current: Revision,
    compacted: Revision,
    poisoned: Option<String>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.receiver.blocking_recv() {
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                match request {
                    Request::Txn { txn, reply } => batch.push((Work::Txn(txn), Reply::Txn(reply))),
                    Request::Compact { revision, reply } => {
                        batch.push((Work::Compact(revision), Reply::Compact(reply)))
                    }
                    Request::Pause { paused, resume } => {
                        // Requests before the pause are committed first; those sent during it
                        // are drained into the next batch.
                        if !batch.is_empty() {
                            self.process(std::mem::take(&mut batch));
                        }
                        let _ = paused.send(());
                        let _ = resume.recv();
                    }
                }
                if batch.len() >= self.max_batch {
                    break;
                }
                next = self.receiver.try_recv().ok();
            }
            if !batch.is_empty() {
                self.process(batch);
            }
        }
        tracing::debug!("store writer stopping");
    }

    fn process(&mut self, batch: Vec<(Work, Reply)>) {
        // Counted before any reply goes out, so a caller that has its answer sees itself counted.
        self.shared
            .requests
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        self.run_batch(batch);
    }

    fn run_batch(&mut self, batch: Vec<(Work, Reply)>) {
        if let Some(reason) = &self.poisoned {
            for (_, reply) in batch {
                reply.send(Err(StoreError::Unavailable(reason.clone())));
            }
            return;
        }
        // A write into a removed or replaced file would be acknowledged and then lost on restart.
        if let Err(reason) = self.shared.files_intact() {
            tracing::error!(%reason, "store poisoned");
            *self.shared.poisoned() = Some(reason.clone());
            self.poisoned = Some(reason.clone());
            for (_, reply) in batch {
                reply.send(Err(StoreError::Unavailable(reason.clone())));
            }
            return;
        }
        let start = (self.current, self.compacted);
        if let Err(error) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let failure = self.abort(&error, false, start);
            for (_, reply) in batch {
                reply.send(Err(failure.clone()));
            }
            return;
        }

        let mut answered: Vec<(Reply, Result<Outcome>)> = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let mut batch = batch.into_iter();
        while let Some((work, reply)) = batch.next() {
            match self.apply(&work, &mut events) {
                Ok(result) => answered.push((reply, result)),
                Err(error) => {
                    let failure = self.abort(&error, false, start);
                    let replies = answered.into_iter().map(|(reply, _)| reply);
                    for reply in replies
                        .chain(std::iter::once(reply))
                        .chain(batch.map(|(_, reply)| reply))
                    {
                        reply.send(Err(failure.clone()));
                    }
                    return;
                }
            }
        }
        let writes = events.len() as u64;
        let compacting = self.compacted != start.1;
        failpoint::hit(if compacting {
            "compact-before-commit"
        } else {
            "before-commit"
        });
        let commit = self.update_meta(start).and_then(|()| self.commit());
        if commit.is_ok() {
            failpoint::hit(if compacting {
                "compact-after-commit"
            } else {
                "after-commit"
            });
        }
        if let Err(error) = commit {
            let failure = self.abort(&error, true, start);
            for (reply, _) in answered {
                reply.send(Err(failure.clone()));
            }
            return;
        }
        self.shared.commits.fetch_add(1, Ordering::SeqCst);
        self.shared.writes.fetch_add(writes, Ordering::SeqCst);
        self.shared.current.store(self.current, Ordering::SeqCst);
        self.shared
            .compacted
            .store(self.compacted, Ordering::SeqCst);
        // Watchers first, then callers: once a caller sees its write acknowledged, every watch
        // already has it queued.
        if !events.is_empty() {
            let _no_watchers = self.feed.send(Arc::new(Batch {
                revision: self.current,
                events,
            }));
        }
        for (reply, result) in answered {
            reply.send(result);
        }
    }

    fn update_meta(&self, start: (Revision, Revision)) -> rusqlite::Result<()> {
        if (self.current, self.compacted) != start {
            self.conn
                .prepare_cached("UPDATE meta SET current = ?1, compacted = ?2 WHERE id = 1")?
                .execute(params![self.current, self.compacted])?;
        }
        Ok(())
    }

    fn commit(&self) -> rusqlite::Result<()> {
        let injected = self.shared.fail_next_commit.swap(0, Ordering::SeqCst);
        let code = match injected {
            1 => rusqlite::ffi::SQLITE_IOERR_FSYNC,
            2 => rusqlite::ffi::SQLITE_FULL,
            _ => return self.conn.execute_batch("COMMIT"),
        };
        self.conn.execute_batch("ROLLBACK")?;
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some("injected failure".to_string()),
        ))
    }

    /// Ends a failed batch: rolls back, restores the in-memory revisions, poisons the store if
    /// durability is in doubt, and returns what every request of the batch is answered.
    fn abort(
        &mut self,
        error: &rusqlite::Error,
        at_commit: bool,
        start: (Revision, Revision),
    ) -> StoreError {
        (self.current, self.compacted) = start;
        let mut failure = classify(error, at_commit);
        if !self.conn.is_autocommit()
            && let Err(rollback) = self.conn.execute_batch("ROLLBACK")
        {
            failure = BatchFailure::Poison(format!("{error}; then rollback failed: {rollback}"));
        }
        match failure {
            BatchFailure::NoSpace(message) => {
                tracing::warn!(%message, "write batch failed: no space");
                StoreError::NoSpace(message)
            }
            BatchFailure::Transient(message) => {
                tracing::warn!(%message, "write batch failed");
                StoreError::Backend(message)
            }
            BatchFailure::Poison(message) => {
                let reason = format!(
                    "writes disabled after a storage failure (restart to recover): {message}"
                );
                tracing::error!(%reason, "store poisoned");
                *self.shared.poisoned() = Some(reason.clone());
                self.poisoned = Some(reason.clone());
                StoreError::Unavailable(reason)
            }
        }
    }

    /// Runs one request under its own savepoint. `Err` = the batch must fail; `Ok(Err(_))` =
    /// only this request failed (its savepoint was rolled back).
    fn apply(&mut self, work: &Work, events: &mut Vec<Event>) -> rusqlite::Result<Result<Outcome>> {
        let saved = (self.current, self.compacted, events.len());
        self.conn.execute_batch("SAVEPOINT request")?;
        let result = match work {
            Work::Txn(txn) => self.apply_txn(txn, events).map(Outcome::Txn),
            Work::Compact(revision) => self.apply_compact(*revision).map(|()| Outcome::Compacted),
        };
        match result {
            Ok(outcome) => {
                self.conn.execute_batch("RELEASE request")?;
                Ok(Ok(outcome))
            }
            Err(error) => {
                (self.current, self.compacted) = (saved.0, saved.1);
                events.truncate(saved.2);
                let error = match error {
                    ItemError::Sql(error) if is_batch_fatal(&error) => return Err(error),
                    ItemError::Sql(error) => read_error(error),
                    ItemError::Store(error) => error,
                };
                self.conn
                    .execute_batch("ROLLBACK TO request; RELEASE request")?;
                Ok(Err(error))
            }
        }
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, ItemError> {
        let row: Option<RawKv> = self
            .conn
            .prepare_cached(
                "SELECT c.key, l.value, l.create_rev, l.rev, l.prev_rev, l.sum FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?1",
            )?
            .query_row(params![key.as_bytes()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
            })
            .optional()?;
        row.map(to_kv).transpose().map_err(ItemError::Store)
    }

    fn mod_revision(&self, key: &str) -> rusqlite::Result<Revision> {
        let revision = self
            .conn
            .prepare_cached("SELECT rev FROM current WHERE key = ?1")?
            .query_row(params![key.as_bytes()], |row| row.get(0))
            .optional()?;
        Ok(revision.unwrap_or(0))
    }

    fn insert_log(
        &self,
        revision: Revision,
        key: &str,
        value: Option<&[u8]>,
        create_revision: Revision,
        prev_revision: Revision,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO log (rev, key, value, create_rev, prev_rev, deleted, sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                revision,
                key.as_bytes(),
                value,
                create_revision,
                prev_revision,
                value.is_none(),
                row_sum(revision, key.as_bytes(), value, create_revision, prev_revision, value.is_none())
            ])?;
        Ok(())
    }

    fn apply_txn(&mut self, txn: &Txn, events: &mut Vec<Event>) -> Result<TxnResponse, ItemError> {
        let mut succeeded = true;
        for compare in &txn.compares {
            match compare {
                Compare::ModRevisionEquals { key, revision } => {
                    if self.mod_revision(key)? != *revision {
                        succeeded = false;
                        break;
                    }
                }
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                Op::Put { key, value } => {
                    let prev = self.get(key)?;
                    let revision = self.current + 1;
                    let create_revision = prev.as_ref().map_or(revision, |kv| kv.create_revision);
                    let prev_revision = prev.as_ref().map_or(0, |kv| kv.mod_revision);
                    self.insert_log(revision, key, Some(value), create_revision, prev_revision)?;
                    self.conn
                        .prepare_cached(
                            "INSERT INTO current (key, rev) VALUES (?1, ?2)
                             ON CONFLICT (key) DO UPDATE SET rev = excluded.rev",
                        )?
                        .execute(params![key.as_bytes(), revision])?;
                    self.current = revision;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    };
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev.clone(),
                    });
                    OpResponse::Put { revision, prev }
                }
                Op::Delete { key } => match self.get(key)? {
                    // Deleting an absent key writes nothing and takes no revision (as in etcd).
                    None => OpResponse::Delete {
                        revision: self.current,
                        prev: None,
                    },
                    Some(prev) => {
                        let revision = self.current + 1;
                        self.insert_log(revision, key, None, 0, prev.mod_revision)?;
                        self.conn
                            .prepare_cached("DELETE FROM current WHERE key = ?1")?
                            .execute(params![key.as_bytes()])?;
                        self.current = revision;
                        let kv = KeyValue {
                            key: key.clone(),
                            value: Bytes::new(),
                            create_revision: 0,
                            mod_revision: revision,
                        };
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv,
                            prev_kv: Some(prev.clone()),
                        });
                        OpResponse::Delete {
                            revision,
                            prev: Some(prev),
                        }
                    }
                },
                Op::Get { key } => OpResponse::Get { kv: self.get(key)? },
            });
        }
        Ok(TxnResponse {
            succeeded,
            revision: self.current,
            responses,
        })
    }

    fn apply_compact(&mut self, revision: Revision) -> Result<(), ItemError> {
        if revision > self.current {
            return Err(ItemError::Store(StoreError::FutureRevision {
                requested: revision,
                current: self.current,
            }));
        }
        if revision <= self.compacted {
            return Ok(());
        }
        // Only keys written since the last compaction can have newly superseded rows: older
        // rows of every other key were already reduced to their latest one.
        self.conn
            .prepare_cached(
                "DELETE FROM log WHERE rev IN (
                    SELECT o.rev
                    FROM (SELECT key, max(rev) AS top FROM log WHERE rev > ?1 AND rev <= ?2 GROUP BY key) k
                    JOIN log o ON o.key = k.key AND o.rev < k.top
                 )",
            )?
            .execute(params![self.compacted, revision])?;
        // A delete at or below the compact point hides nothing any more (what it deleted is gone).
        self.conn
            .prepare_cached("DELETE FROM log WHERE deleted = 1 AND rev > ?1 AND rev <= ?2")?
            .execute(params![self.compacted, revision])?;
        self.compacted = revision;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn writable(&self) -> Result<()> {
        self.check_writable()
    }

    fn range(&self, request: RangeRequest) -> BoxFuture<'_, Result<RangeResponse>> {
        let readers = self.readers.clone();
        async move {
            readers
                .run(move |conn| range_blocking(conn, &request))
                .await
        }
        .boxed()
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        async move {
            self.check_poisoned()?;
            let (reply, response) = oneshot::channel();
            self.send(Request::Txn { txn, reply })?;
            response.await.map_err(|_| writer_gone())?
        }
        .boxed()
    }

    fn watch(
        &self,
        prefix: String,
        after: Revision,
        options: WatchOptions,
    ) -> BoxFuture<'_, Result<WatchStream>> {
        let history: Arc<dyn History> = Arc::new(PoolHistory(self.readers.clone()));
        watch::watch(history, &self.feed, prefix, after, options).boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        async move {
            self.check_poisoned()?;
            let (reply, response) = oneshot::channel();
            self.send(Request::Compact { revision, reply })?;
            response.await.map_err(|_| writer_gone())?
        }
        .boxed()
    }

    fn revisions(&self) -> BoxFuture<'_, Result<Revisions>> {
        let revisions = Revisions {
            current: self.shared.current.load(Ordering::SeqCst),
            compacted: self.shared.compacted.load(Ordering::SeqCst),
        };
        futures::future::ready(Ok(revisions)).boxed()
    }
}

/// Crash points for tests of crash recovery (reliability case A3/A8): with
/// `BERTH_TEST_FAILPOINT=<point>:<n>` in its environment, the process aborts — as abruptly as a
/// power cut, no destructors, no flush — the n-th time the writer reaches `<point>`. Points:
/// `before-commit`, `after-commit` (durable but not yet acknowledged), and
/// `compact-before-commit` / `compact-after-commit` for batches that compact. Without the
/// variable this is one relaxed atomic load per batch.
mod failpoint {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Armed {
        point: String,
        at: u64,
        seen: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var("BERTH_TEST_FAILPOINT").ok()?;
                let (point, at) = spec.split_once(':')?;
                Some(Armed {
                    point: point.to_string(),
                    at: at.parse().ok()?,
                    seen: AtomicU64::new(0),
                })
            })
            .as_ref()
    }

    pub(super) fn hit(point: &str) {
        if let Some(armed) = armed()
            && armed.point == point
            && armed.seen.fetch_add(1, Ordering::Relaxed) + 1 == armed.at
        {
            eprintln!("berth: failpoint {point} reached, aborting");
            std::process::abort();
        }
    }
}
