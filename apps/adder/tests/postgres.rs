//! The `db` mode against a real PostgreSQL that the test starts itself: Debian's server
//! binaries, `initdb` on a temporary directory and `postgres` on a free loopback port, run as
//! the host's `postgres` user (the server refuses root) through `setpriv`, and stopped and
//! removed afterwards.
//!
//! Needs root (to switch to the `postgres` user) and the server (`apt-get install
//! postgresql`); without them the tests say so and pass, as the CI machine has both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use adder::{DbStore, RetryPolicy, Store, StoreError};

/// The newest installed server's `bin` directory.
fn server_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    command
}

/// A PostgreSQL server on a temporary directory, stopped and removed when dropped.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl Postgres {
    /// Initializes a cluster and starts it; `None` (after saying why) if this machine cannot.
    fn start() -> Option<Postgres> {
        let Some(bin) = server_bin() else {
            eprintln!(
                "skipped: no PostgreSQL server in /usr/lib/postgresql (apt-get install postgresql)"
            );
            return None;
        };
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: starting PostgreSQL as the postgres user needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&data)
            .status()
            .unwrap();
        assert!(chown.success());
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let init = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-instructions")
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pg = Postgres {
            bin,
            dir,
            port,
            server: None,
        };
        pg.run();
        pg.psql_in("postgres", "CREATE ROLE adder LOGIN");
        pg.psql_in("postgres", "CREATE DATABASE adder OWNER adder");
        Some(pg)
    }

    /// Starts the server on the cluster and waits until it accepts connections.
    fn run(&mut self) {
        let data = self.dir.path().join("data");
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown (what a pod's stop signal asks for): sessions end with 57P01.
    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            child.wait().unwrap();
        }
    }

    fn psql(&self, sql: &str) -> String {
        self.psql_in("adder", sql)
    }

    fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = as_postgres(&self.bin.join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d"])
            .arg(db)
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=adder dbname=adder", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn store(pg: &Postgres) -> DbStore {
    DbStore::new(
        &pg.url(),
        RetryPolicy {
            budget: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Threads adding 1 `adds` times each through stores of their own (as replicas do); each
/// thread's totals in order.
fn add_concurrently(pg: &Postgres, threads: usize, adds: usize) -> Vec<Vec<i64>> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = store(pg);
            std::thread::spawn(move || (0..adds).map(|_| store.add(1).unwrap()).collect())
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn db_mode_against_a_real_postgres() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };

    // The table is created on first use; a fresh total is 0.
    let first = store(&pg);
    assert_eq!(first.total().unwrap(), 0);
    assert_eq!(pg.psql("SELECT value FROM total"), "0");

    // Concurrent adds from several "replicas": every total distinct, each thread's growing.
    let (threads, adds) = (6, 40);
    let seen = add_concurrently(&pg, threads, adds);
    let mut all: Vec<i64> = Vec::new();
    for totals in &seen {
        assert!(totals.windows(2).all(|w| w[0] < w[1]), "{totals:?}");
        all.extend(totals);
    }
    all.sort_unstable();
    let n = (threads * adds) as i64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>());
    assert_eq!(first.total().unwrap(), n);

    // Overflow is refused and leaves the total alone.
    let err = first.add(i64::MAX).unwrap_err();
    assert!(
        matches!(err, StoreError::Overflow { total, .. } if total == n),
        "{err}"
    );
    assert_eq!(first.total().unwrap(), n);

    // Sessions killed under running adds (pg_terminate_backend sends what a fast shutdown
    // sends, 57P01): the adds are retried, none lost or doubled.
    let stop = Arc::new(AtomicBool::new(false));
    let adders: Vec<_> = (0..3)
        .map(|_| {
            let (store, stop) = (store(&pg), stop.clone());
            std::thread::spawn(move || {
                let mut totals = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    totals.push(store.add(1).unwrap());
                }
                totals
            })
        })
        .collect();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(50));
        pg.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'adder'",
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut during: Vec<i64> = Vec::new();
    for a in adders {
        let totals = a.join().unwrap();
        assert!(totals.windows(2).all(|w| w[0] < w[1]), "{totals:?}");
        during.extend(totals);
    }
    during.sort_unstable();
    let m = during.len() as i64;
    assert_eq!(during, (n + 1..=n + m).collect::<Vec<_>>());
    assert_eq!(first.total().unwrap(), n + m);

    // The server restarts under a running add: the add waits for it and succeeds once.
    pg.stop();
    let outage = Instant::now();
    let waiting = {
        let store = store(&pg);
        std::thread::spawn(move || {
            let started = Instant::now();
            (store.add(5), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    pg.run();
    let (result, waited) = waiting.join().unwrap();
    assert_eq!(result.unwrap(), n + m + 5);
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    eprintln!(
        "add across a restart waited {waited:?} (outage {:?})",
        outage.elapsed()
    );
    // The pooled connections of `first` died with the old server; it reconnects.
    assert_eq!(first.total().unwrap(), n + m + 5);
    assert_eq!(pg.psql("SELECT value FROM total"), (n + m + 5).to_string());

    // A database that does not exist is an error at once, not a retry loop.
    let missing = DbStore::new(
        &format!("host=127.0.0.1 port={} user=adder dbname=nope", pg.port),
        RetryPolicy::default(),
    )
    .unwrap();
    let started = Instant::now();
    let err = missing.add(1).unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
