//! The fault file system against its own promises, through real system calls on a real mount:
//! unsynced data dies with the power, synced data does not; a failing device loses what it was
//! asked to sync and never gets it back; a lying one loses it while saying it did not. And the
//! reason it exists: SQLite that syncs keeps every commit across a power cut, SQLite that does not
//! loses commits — so a store that acknowledged before syncing would be caught.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use berth_faultfs::{Device, FaultFs};

struct Disk {
    backing: tempfile::TempDir,
    mountpoint: tempfile::TempDir,
}

impl Disk {
    fn new() -> Option<(Disk, FaultFs)> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: mounting a FUSE file system needs root");
            return None;
        }
        let disk = Disk {
            backing: tempfile::tempdir().expect("backing dir"),
            mountpoint: tempfile::tempdir().expect("mount point"),
        };
        let fs = disk.mount();
        Some((disk, fs))
    }

    fn mount(&self) -> FaultFs {
        FaultFs::mount(self.backing.path(), self.mountpoint.path()).expect("mount the fault fs")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.mountpoint.path().join(name)
    }

    fn on_disk(&self, name: &str) -> Vec<u8> {
        fs::read(self.backing.path().join(name)).expect("the file is on the backing dir")
    }
}

fn read(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(path)
        .expect("open")
        .read_to_end(&mut data)
        .expect("read");
    data
}

/// A new file of `len` bytes of 1s, synced, open for reading and writing.
fn synced_ones(path: &Path, len: usize) -> File {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("create");
    file.write_all_at(&vec![1u8; len], 0).expect("write");
    file.sync_all().expect("fsync");
    file
}

#[test]
fn unsynced_data_is_lost_at_a_power_cut_and_synced_data_is_not() {
    let Some((disk, fs)) = Disk::new() else {
        return;
    };
    let mut synced = File::create(disk.file("synced")).expect("create");
    synced.write_all(b"kept").expect("write");
    synced.sync_data().expect("fsync");
    synced.write_all(b" and lost").expect("write");
    let mut unsynced = File::create(disk.file("unsynced")).expect("create");
    unsynced.write_all(&[7u8; 10_000]).expect("write");
    drop((synced, unsynced));
    // Programs see everything they wrote...
    assert_eq!(read(&disk.file("synced")), b"kept and lost");
    assert_eq!(read(&disk.file("unsynced")).len(), 10_000);
    assert_eq!(
        fs::metadata(disk.file("unsynced")).expect("stat").len(),
        10_000
    );
    // ... the disk has only what was synced.
    assert_eq!(disk.on_disk("synced"), b"kept");
    assert!(disk.on_disk("unsynced").is_empty());
    let counters = fs.power_cut();
    assert!(counters.lost_bytes >= 10_000 + 9, "{counters:?}");
    let fs = disk.mount();
    assert_eq!(read(&disk.file("synced")), b"kept");
    assert!(read(&disk.file("unsynced")).is_empty());
    fs.unmount().expect("unmount");
}

#[test]
fn truncation_is_cached_too_and_holes_read_as_zeros() {
    let Some((disk, fs)) = Disk::new() else {
        return;
    };
    let path = disk.file("f");
    let file = synced_ones(&path, 10_000);
    file.set_len(100).expect("truncate");
    file.write_all_at(b"end", 5_000)
        .expect("write past the end");
    let mut expected = vec![1u8; 100];
    expected.resize(5_000, 0);
    expected.extend_from_slice(b"end");
    assert_eq!(read(&path), expected);
    assert_eq!(
        disk.on_disk("f"),
        vec![1u8; 10_000],
        "the disk has the last sync"
    );
    file.sync_all().expect("fsync");
    assert_eq!(disk.on_disk("f"), expected);
    drop(file);
    fs.unmount().expect("unmount");
}

#[test]
fn bytes_a_truncation_removed_stay_gone_when_the_file_grows_again() {
    let Some((disk, fs)) = Disk::new() else {
        return;
    };
    let path = disk.file("f");
    let file = synced_ones(&path, 10_000);
    file.set_len(100).expect("truncate");
    file.set_len(10_000).expect("extend");
    let mut expected = vec![1u8; 100];
    expected.resize(10_000, 0);
    assert_eq!(
        read(&path),
        expected,
        "the stale bytes on disk are not read"
    );
    // A failed sync leaves the size change pending: the next good one still applies it.
    fs.set_device(Device::ErrorWrites);
    file.sync_all().expect_err("the device fails");
    fs.set_device(Device::Healthy);
    file.write_all_at(&[2u8], 0).expect("write");
    file.sync_all().expect("fsync");
    expected[0] = 2;
    assert_eq!(read(&path), expected);
    let on_disk = disk.on_disk("f");
    assert_eq!(on_disk.len(), 10_000);
    assert_eq!(
        &on_disk[100..],
        &expected[100..],
        "the truncation reached the disk"
    );
    drop(file);
    fs.unmount().expect("unmount");
}

#[test]
fn a_failed_sync_loses_the_data_for_good_and_a_lying_device_loses_it_silently() {
    let Some((disk, fs)) = Disk::new() else {
        return;
    };
    let mut file = File::create(disk.file("f")).expect("create");
    file.write_all(b"before").expect("write");
    file.sync_data().expect("fsync");

    fs.set_device(Device::ErrorWrites);
    file.write_all(b" failed")
        .expect("a write only reaches the cache");
    let error = file.sync_data().expect_err("the device fails the sync");
    assert_eq!(error.raw_os_error(), Some(5), "EIO: {error}");
    assert_eq!(
        File::create(disk.file("g"))
            .map_err(|e| e.raw_os_error())
            .err(),
        Some(Some(5)),
        "new names are refused too"
    );
    fs.set_device(Device::Healthy);
    // The device works again and the next sync succeeds. Programs still read what they wrote
    // (the cache keeps it); the disk gets the new size but never the bytes.
    file.sync_data().expect("fsync");
    assert_eq!(read(&disk.file("f")), b"before failed");
    let mut survived = b"before".to_vec();
    survived.resize(b"before failed".len(), 0);
    assert_eq!(disk.on_disk("f"), survived);

    fs.set_device(Device::DropWrites);
    file.write_all(b" dropped").expect("write");
    file.sync_data().expect("a lying device reports success");
    assert_eq!(disk.on_disk("f"), survived);
    drop(file);
    let counters = fs.power_cut();
    assert_eq!(counters.failed_syncs, 1, "{counters:?}");
    assert_eq!(counters.dropped_syncs, 1, "{counters:?}");
    let fs = disk.mount();
    assert_eq!(read(&disk.file("f")), survived);
    fs.unmount().expect("unmount");
}

#[test]
fn a_renamed_file_keeps_its_unsynced_data_and_a_sync_writes_it_under_the_new_name() {
    let Some((disk, fs)) = Disk::new() else {
        return;
    };
    fs::create_dir(disk.file("dir")).expect("mkdir");
    let mut file = File::create(disk.file("dir/tmp")).expect("create");
    file.write_all(b"atomic").expect("write");
    fs::rename(disk.file("dir/tmp"), disk.file("dir/final")).expect("rename");
    file.sync_all().expect("fsync");
    drop(file);
    fs::rename(disk.file("dir"), disk.file("moved")).expect("rename a directory");
    assert_eq!(read(&disk.file("moved/final")), b"atomic");
    let names: Vec<String> = fs::read_dir(disk.file("moved"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["final".to_string()]);
    fs.power_cut();
    assert_eq!(disk.on_disk("moved/final"), b"atomic");
}

const WRITER: &str = "FAULTFS_SQLITE_WRITER";

/// Not a test on its own: run by [`rows_after_power_cut`] in a child process (this test binary,
/// with `FAULTFS_SQLITE_WRITER=<db path>|<synchronous>`), it commits 200 rows one transaction at
/// a time into a WAL-mode SQLite database on the mount, says so, and kills itself with SIGKILL:
/// nothing is checkpointed or synced at exit.
#[test]
fn sqlite_writer() {
    let Ok(spec) = std::env::var(WRITER) else {
        return;
    };
    let (path, synchronous) = spec.split_once('|').expect("path|synchronous");
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "wal")
        .expect("wal");
    conn.pragma_update(None, "synchronous", synchronous)
        .expect("synchronous");
    conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, v BLOB)")
        .expect("schema");
    for n in 0..200 {
        conn.execute("INSERT INTO t VALUES (?1, zeroblob(1000))", [n])
            .expect("insert");
    }
    println!("committed 200");
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
        .expect("SIGKILL myself");
}

fn rows_after_power_cut(synchronous: &str) -> Option<i64> {
    let (disk, fs) = Disk::new()?;
    let db = disk.file("db");
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "sqlite_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(WRITER, format!("{}|{synchronous}", db.display()))
        .output()
        .expect("run the writer");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("committed 200"),
        "the writer did not commit: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let counters = fs.power_cut();
    eprintln!("synchronous={synchronous}: {counters:?}");
    let conn = rusqlite::Connection::open(disk.backing.path().join("db")).expect("reopen");
    let count = conn
        .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        .unwrap_or(0);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap_or_else(|e| e.to_string());
    assert!(
        check == "ok" || count == 0,
        "integrity after the cut: {check}"
    );
    Some(count)
}

#[test]
fn sqlite_that_syncs_keeps_every_commit_and_sqlite_that_does_not_loses_them() {
    let Some(kept) = rows_after_power_cut("FULL") else {
        return;
    };
    assert_eq!(kept, 200, "every commit of synchronous=FULL survives");
    let Some(lost) = rows_after_power_cut("OFF") else {
        return;
    };
    assert!(
        lost < 200,
        "synchronous=OFF acknowledged commits that were never synced; a power cut must lose some"
    );
}
