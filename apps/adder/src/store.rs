//! Where the running total lives: the [`Store`] trait and its in-process and file modes
//! (the database mode is [`crate::db::DbStore`]).
//!
//! - [`MemoryStore`]: a process-local total behind a mutex. Correct for one process; with
//!   several replicas behind a Service each has its own total, which is the story's bug.
//! - [`FileStore`]: the total in one file that every replica can share (a ReadWriteMany
//!   volume). Each add opens the file, takes an exclusive `flock`, reads, adds, writes,
//!   `fdatasync`s and unlocks, so adds from any number of processes and pods are serialized
//!   by the kernel and none is lost.
//!
//! The `db` mode (PostgreSQL, one transaction per add) is a third implementation of
//! [`Store`]. The trait is synchronous on purpose: the file mode blocks in `flock` and
//! `fsync`, and the blocking database client fits the same shape, so the HTTP layer runs
//! every store call on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

/// Why an add or a read of the total failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file (or, later, the database) could not be used.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The stored total is not a number. Never treated as 0: that would silently reset
    /// every user's total.
    #[error(
        "the total in {path} is corrupt ({content:?} is not an integer); fix or remove the file"
    )]
    Corrupt { path: PathBuf, content: String },
    /// The new total does not fit in an i64.
    #[error("adding {amount} to {total} would overflow the total")]
    Overflow { total: i64, amount: i64 },
    /// The database answered with an error that retrying cannot change (a missing database
    /// or role, a bad connection string).
    #[error("database: {0}")]
    Database(String),
    /// The database stayed unreachable for the whole retry budget. The add was certainly
    /// not applied.
    #[error(
        "the database is unavailable (gave up after {attempts} attempts in {waited:.1?}; the add was not applied): {message}"
    )]
    Unavailable {
        attempts: u32,
        waited: Duration,
        message: String,
    },
    /// The add's COMMIT was sent but its outcome could not be learned before giving up: it
    /// may or may not be in the total.
    #[error(
        "the database went away while committing and did not come back within {waited:.1?}; the add may or may not have been applied: {message}"
    )]
    Unknown { waited: Duration, message: String },
}

/// The running total. Implementations must make `add` atomic with respect to every other
/// `add` that shares the same total (in this process or any other).
pub trait Store: Send + Sync + 'static {
    /// Adds `amount` and returns the new total.
    fn add(&self, amount: i64) -> Result<i64, StoreError>;
    /// The current total.
    fn total(&self) -> Result<i64, StoreError>;
}

fn add_checked(total: i64, amount: i64) -> Result<i64, StoreError> {
    total
        .checked_add(amount)
        .ok_or(StoreError::Overflow { total, amount })
}

/// A total in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    total: Mutex<i64>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn add(&self, amount: i64) -> Result<i64, StoreError> {
        // A poisoned lock only means another request panicked between reading and writing an
        // i64, which cannot leave it half-written; keep serving.
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        *total = add_checked(*total, amount)?;
        Ok(*total)
    }

    fn total(&self) -> Result<i64, StoreError> {
        Ok(*self.total.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The most a total file can hold: an i64 right-aligned in [`RECORD_WIDTH`] columns plus a
/// newline is 21 bytes; anything much longer was not written by us.
const MAX_FILE_BYTES: u64 = 4096;
/// Every total is written as exactly this many characters plus a newline (`i64::MIN` is 20).
const RECORD_WIDTH: usize = 20;

/// A total in a file shared by every replica.
///
/// The file holds the total as decimal text (`cat` shows it). Every write is one `pwrite`
/// of the same 21 bytes at offset 0, never a truncate followed by a write: a crash between
/// those two would leave an empty file, which reads as 0 — exactly the silent reset this
/// mode exists to prevent. A fixed-size overwrite within one sector either lands or not.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

/// The default path, the mount point the story's manifests give the shared volume.
pub const DEFAULT_FILE: &str = "/data/total";

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, what: &str) -> impl FnOnce(io::Error) -> StoreError + use<> {
        let context = format!("{what} {}", self.path.display());
        move |source| StoreError::Io { context, source }
    }

    /// Opens the file (creating it empty, which reads as 0) and locks it with `lock`.
    /// The lock belongs to this open file description, so every call locks anew even within
    /// one process, and it is released when the file is closed, whatever happens.
    fn open_locked(&self, lock: FlockOperation) -> Result<File, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&self.path)
            .map_err(self.io("opening"))?;
        flock(&file, lock).map_err(|e| self.io("locking")(io::Error::from(e)))?;
        Ok(file)
    }

    /// Reads the total from the locked file: empty is 0, anything not an integer is corrupt.
    fn read(&self, file: &File) -> Result<(i64, u64), StoreError> {
        let mut content = Vec::new();
        // One byte past the limit tells a too-long file from one exactly at it.
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut content)
            .map_err(self.io("reading"))?;
        let len = content.len() as u64;
        let corrupt = |content: &[u8]| StoreError::Corrupt {
            path: self.path.clone(),
            content: String::from_utf8_lossy(&content[..content.len().min(64)]).into_owned(),
        };
        if len > MAX_FILE_BYTES {
            return Err(corrupt(&content));
        }
        let text = std::str::from_utf8(&content).map_err(|_| corrupt(&content))?;
        let text = text.trim();
        if text.is_empty() {
            return Ok((0, len));
        }
        let total = text.parse().map_err(|_| corrupt(&content))?;
        Ok((total, len))
    }
}

impl Store for FileStore {
    fn add(&self, amount: i64) -> Result<i64, StoreError> {
        let file = self.open_locked(FlockOperation::LockExclusive)?;
        let (total, old_len) = self.read(&file)?;
        let total = add_checked(total, amount)?;
        let record = format!("{total:>RECORD_WIDTH$}\n");
        file.write_all_at(record.as_bytes(), 0)
            .map_err(self.io("writing"))?;
        // Only a file someone wrote by hand can be longer; cut its tail after the new record
        // is in place, so no moment exists where the file reads as empty.
        if old_len > record.len() as u64 {
            file.set_len(record.len() as u64)
                .map_err(self.io("truncating"))?;
        }
        // The answer goes out only once the total is durable: a user who saw N never sees
        // less after a crash.
        file.sync_data().map_err(self.io("syncing"))?;
        if old_len == 0 {
            // A file this add created (or first filled) also needs its directory entry on disk.
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(self.io("syncing the directory of"))?;
            }
        }
        flock(&file, FlockOperation::Unlock)
            .map_err(|e| self.io("unlocking")(io::Error::from(e)))?;
        Ok(total)
    }

    fn total(&self) -> Result<i64, StoreError> {
        // Under a shared lock: readers never see a write in progress and never wait for
        // each other.
        let file = self.open_locked(FlockOperation::LockShared)?;
        Ok(self.read(&file)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    #[test]
    fn memory_adds_and_reports() {
        let store = MemoryStore::new();
        assert_eq!(store.total().unwrap(), 0);
        assert_eq!(store.add(5).unwrap(), 5);
        assert_eq!(store.add(-2).unwrap(), 3);
        assert_eq!(store.total().unwrap(), 3);
    }

    #[test]
    fn memory_refuses_overflow_and_keeps_the_total() {
        let store = MemoryStore::new();
        store.add(i64::MAX).unwrap();
        assert!(matches!(store.add(1), Err(StoreError::Overflow { .. })));
        assert_eq!(store.total().unwrap(), i64::MAX);
    }

    #[test]
    fn memory_never_loses_an_add_across_threads() {
        let store = Arc::new(MemoryStore::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        store.add(1).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.total().unwrap(), 8000);
    }

    #[test]
    fn a_missing_or_empty_file_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("total");
        let store = FileStore::new(&path);
        assert_eq!(store.total().unwrap(), 0);
        std::fs::write(&path, "").unwrap();
        assert_eq!(store.total().unwrap(), 0);
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(store.add(7).unwrap(), 7);
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "7");
    }

    #[test]
    fn file_records_have_one_width_and_cut_a_longer_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("total");
        let long = format!("{}5\n", " ".repeat(100));
        std::fs::write(&path, long).unwrap();
        let store = FileStore::new(&path);
        assert_eq!(store.add(1).unwrap(), 6);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), RECORD_WIDTH + 1, "{text:?}");
        store.add(i64::MIN / 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().len(),
            RECORD_WIDTH + 1
        );
        // A hand-written total is read as is.
        std::fs::write(&path, "41").unwrap();
        assert_eq!(store.add(1).unwrap(), 42);
    }

    #[test]
    fn a_corrupt_file_is_an_error_never_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("total");
        let store = FileStore::new(&path);
        for bad in [
            &b"12abc"[..],
            b"\0\0\0\0",
            b"1.5",
            b"\xff\xfe",
            &[b'7'; 5000],
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = store.add(1).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("corrupt"), "{err}");
            assert!(matches!(store.total(), Err(StoreError::Corrupt { .. })));
            assert_eq!(std::fs::read(&path).unwrap(), bad, "the file is left alone");
        }
    }

    #[test]
    fn file_overflow_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("total");
        let store = FileStore::new(&path);
        store.add(i64::MAX).unwrap();
        assert!(matches!(store.add(1), Err(StoreError::Overflow { .. })));
        assert_eq!(store.total().unwrap(), i64::MAX);
    }

    #[test]
    fn an_unusable_path_is_an_io_error_naming_it() {
        let store = FileStore::new("/nonexistent-dir-for-adder/total");
        let err = store.add(1).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent-dir-for-adder/total"));
    }

    /// N threads × M adds, each add through a file handle of its own (a separate open file
    /// description, so `flock` arbitrates between them as between processes): the sum.
    #[test]
    fn file_never_loses_an_add_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("total");
        let (threads, adds) = (8, 50);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let store = FileStore::new(&path);
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..adds {
                        seen.push(store.add(1).unwrap());
                    }
                    seen
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let seen = h.join().unwrap();
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
            all.extend(seen);
        }
        all.sort_unstable();
        // Every total from 1 to N×M was returned exactly once: no add saw another's state.
        assert_eq!(all, (1..=threads * adds).collect::<Vec<i64>>());
        assert_eq!(FileStore::new(&path).total().unwrap(), threads * adds);
    }

    const CHILD_FILE: &str = "ADDER_TEST_CHILD_FILE";
    const CHILD_ADDS: &str = "ADDER_TEST_CHILD_ADDS";

    /// Not a test by itself: the body of each child process of
    /// [`file_never_loses_an_add_across_processes`], which runs this test binary again.
    #[test]
    #[ignore = "run as a child process by file_never_loses_an_add_across_processes"]
    fn child_process_adds() {
        let (Some(path), Some(adds)) = (std::env::var_os(CHILD_FILE), std::env::var_os(CHILD_ADDS))
        else {
            return;
        };
        let adds: i64 = adds.to_string_lossy().parse().unwrap();
        let store = FileStore::new(path);
        for _ in 0..adds {
            store.add(1).unwrap();
        }
    }

    #[test]
    fn file_never_loses_an_add_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("total");
        let exe = std::env::current_exe().unwrap();
        let (processes, adds) = (4, 50);
        let children: Vec<_> = (0..processes)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "store::tests::child_process_adds",
                        "--ignored",
                        "--test-threads=1",
                    ])
                    .env(CHILD_FILE, &path)
                    .env(CHILD_ADDS, adds.to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        assert_eq!(FileStore::new(&path).total().unwrap(), processes * adds);
    }
}
