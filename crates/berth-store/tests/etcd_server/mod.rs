//! A real etcd for tests: Debian's `etcd` (etcd-server) on free loopback ports with its data in
//! a temporary directory, killed when dropped (and by the kernel if the test process dies
//! first, through the parent-death signal), so no test leaves a process behind.
//!
//! [`EtcdServer`] is one member, waited for through the store itself (async);
//! [`EtcdCluster`] is one or more members waited for over etcd's `/health` endpoint, without
//! an async runtime, for tests and harnesses that are not async. Either may be started from
//! any thread: every member is spawned by one keeper thread that lives as long as the test
//! process, because the parent-death signal follows the thread that forked, not the process.
#![allow(dead_code)] // Each test binary uses a different part of the helper.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_store::Store;
use berth_store::etcd::{EtcdConfig, EtcdStore};

/// The etcd binary; `BERTH_TEST_ETCD` overrides it.
fn etcd_binary() -> PathBuf {
    std::env::var_os("BERTH_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// `count` distinct free loopback ports (held together while chosen so they differ).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("port").port())
        .collect()
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from a thread that lives as long as the process, with the parent-death
/// signal set: the kernel kills the child when that thread (so the test process) ends.
fn spawn_kept(mut command: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("etcd-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the etcd keeper thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .map_err(|_| std::io::Error::other("the etcd keeper lock is poisoned"))?
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("the etcd keeper thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the etcd keeper thread did not answer"))?
}

/// One etcd member's ports, files and process.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Its data and log live here.
    dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts the member; `initial_cluster` lists every member (`name=peer-url,…`), and
    /// `(heartbeat, election)` are etcd's timing flags in milliseconds.
    fn spawn(&mut self, initial_cluster: &str, (heartbeat, election): (u32, u32)) {
        std::fs::create_dir_all(&self.dir).expect("member dir");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log file");
        let (client, peer) = (self.client_url(), self.peer_url());
        let mut command = Command::new(etcd_binary());
        command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-token=berth-test")
            .arg(format!("--heartbeat-interval={heartbeat}"))
            .arg(format!("--election-timeout={election}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        self.child = Some(spawn_kept(command).expect("spawn etcd"));
    }

    /// An error if the member's process has exited.
    fn check_running(&mut self) -> Result<(), String> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            return Err(format!(
                "etcd {} exited with {status}: {}",
                self.name,
                self.log()
            ));
        }
        Ok(())
    }

    fn log(&self) -> String {
        log_tail(&self.dir.join("etcd.log"))
    }

    /// SIGKILL: an acknowledged write must already be durable.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().expect("etcd is running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("etcd's pid");
        rustix::process::kill_process(pid, signal).expect("signal etcd");
    }

    /// One plain HTTP request to the member's client port (with `body`, a POST), the
    /// response body if it answered 200 within a second.
    fn http(&self, path: &str, body: Option<&str>) -> Result<String, String> {
        let timeout = Duration::from_secs(1);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(timeout)).ok();
        stream.set_write_timeout(Some(timeout)).ok();
        let request = match body {
            Some(body) => format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            None => format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        };
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| format!("read: {e}"))?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not HTTP: {response:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{head}\n{body}"));
        }
        Ok(body.to_string())
    }

    /// Whether the member says it is healthy (it has a leader and serves).
    fn healthy(&self) -> Result<(), String> {
        let body = self.http("/health", None)?;
        if body.contains("\"health\":\"true\"") {
            Ok(())
        } else {
            Err(format!("unhealthy: {body}"))
        }
    }
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------------

pub struct EtcdServer {
    dir: tempfile::TempDir,
    member: Member,
}

/// A single member elects itself quickly.
const SINGLE_TIMING: (u32, u32) = (20, 200);

impl EtcdServer {
    /// Starts a single-member etcd and waits until it serves.
    pub async fn start() -> EtcdServer {
        let mut last_error = String::new();
        // A port taken between choosing and binding makes etcd exit; choose again.
        for _ in 0..5 {
            let ports = free_ports(2);
            let dir = tempfile::tempdir().expect("tempdir");
            let mut server = EtcdServer {
                member: Member {
                    name: "default".into(),
                    client_port: ports[0],
                    peer_port: ports[1],
                    dir: dir.path().to_path_buf(),
                    child: None,
                },
                dir,
            };
            server.spawn();
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// `127.0.0.1:PORT` of the client URL.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// A store configuration for this server under `prefix`.
    pub fn config(&self, prefix: &str, request_timeout: Duration) -> EtcdConfig {
        EtcdConfig {
            prefix: prefix.to_string(),
            request_timeout,
            ..EtcdConfig::new([self.endpoint()])
        }
    }

    pub async fn connect(&self, prefix: &str) -> Arc<EtcdStore> {
        berth_store::etcd::connect(&self.config(prefix, Duration::from_secs(5)))
            .await
            .expect("connect to the test etcd")
    }

    fn spawn(&mut self) {
        let initial = format!("{}={}", self.member.name, self.member.peer_url());
        self.member.spawn(&initial, SINGLE_TIMING);
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let config = self.config("/", Duration::from_millis(500));
        loop {
            self.member.check_running()?;
            match berth_store::etcd::connect(&config).await {
                Ok(store) if store.revisions().await.is_ok() => return Ok(()),
                Ok(_) => {}
                Err(error) if tokio::time::Instant::now() > deadline => {
                    self.stop();
                    return Err(format!("{error}; log: {}", self.member.log()));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills etcd (SIGKILL: an acknowledged write must already be durable).
    pub fn stop(&mut self) {
        self.member.kill();
    }

    /// Freezes etcd (SIGSTOP): connections stay open but nothing answers, the case that hangs
    /// a client without timeouts.
    pub fn pause(&self) {
        self.member.signal(rustix::process::Signal::STOP);
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) {
        self.member.signal(rustix::process::Signal::CONT);
    }

    /// Starts etcd again on the same ports and data, and waits until it serves.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(error) = self.wait_ready().await {
            panic!("etcd did not restart: {error}");
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------

/// An etcd cluster of one or more members on loopback, started and watched without an async
/// runtime. Members are numbered from 0; each keeps its ports and data across
/// [`EtcdCluster::kill`] and [`EtcdCluster::start_member`].
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    timing: (u32, u32),
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one is healthy (a leader is elected).
    /// A single member uses fast elections; several use etcd's default timing (heartbeat
    /// 100 ms, election 1 s), so a loaded test machine does not make leaders flap.
    pub fn start(size: usize) -> EtcdCluster {
        assert!(size > 0, "an etcd cluster has members");
        let timing = if size == 1 {
            SINGLE_TIMING
        } else {
            (100, 1000)
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let ports = free_ports(2 * size);
            let members: Vec<Member> = (0..size)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    dir: dir.path().join(format!("m{i}")),
                    child: None,
                })
                .collect();
            let initial_cluster = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            let mut cluster = EtcdCluster {
                dir,
                members,
                initial_cluster,
                timing,
            };
            for i in 0..size {
                cluster.spawn(i);
            }
            match cluster.wait_healthy(&(0..size).collect::<Vec<_>>(), Duration::from_secs(30)) {
                Ok(()) => return cluster,
                Err(error) => {
                    cluster.kill_all();
                    last_error = error;
                }
            }
        }
        panic!("the etcd cluster did not start: {last_error}");
    }

    fn spawn(&mut self, i: usize) {
        let (initial, timing) = (self.initial_cluster.clone(), self.timing);
        self.members[i].spawn(&initial, timing);
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// `127.0.0.1:PORT` of every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// The `--store` URL naming every member (with `options`, e.g. `?timeout=2s`, appended).
    pub fn store_url(&self, options: &str) -> String {
        format!("etcd://{}{options}", self.endpoints().join(","))
    }

    /// Waits until each of `members` is running and healthy.
    pub fn wait_healthy(&mut self, members: &[usize], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut last = Ok(());
            for &i in members {
                self.members[i].check_running()?;
                if let Err(e) = self.members[i].healthy() {
                    last = Err(format!("etcd {}: {e}", self.members[i].name));
                    break;
                }
            }
            match last {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    let logs: Vec<String> = members
                        .iter()
                        .map(|&i| {
                            format!("--- {}:\n{}", self.members[i].name, self.members[i].log())
                        })
                        .collect();
                    return Err(format!("{e} (waited {timeout:?})\n{}", logs.join("\n")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The index of the member that is the leader, as a running member reports it.
    pub fn leader(&self) -> Option<usize> {
        // The member id and the leader's id of each running member that answers.
        let statuses: Vec<Option<(String, String)>> = self
            .members
            .iter()
            .map(|m| {
                m.child.as_ref()?;
                let status = m.http("/v3/maintenance/status", Some("{}")).ok()?;
                Some((
                    json_field(&status, "member_id")?,
                    json_field(&status, "leader")?,
                ))
            })
            .collect();
        let leader = statuses.iter().flatten().map(|(_, leader)| leader).next()?;
        statuses
            .iter()
            .position(|status| status.as_ref().is_some_and(|(id, _)| id == leader))
    }

    /// Whether member `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again on its ports and data (it rejoins the cluster); does not wait.
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    pub fn kill_all(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }

    /// The last lines of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}:\n{}", m.name, m.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The string value of `"name":"…"` in etcd's gateway JSON (uint64s are strings there).
fn json_field(json: &str, name: &str) -> Option<String> {
    let start = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let end = json[start..].find('"')?;
    Some(json[start..start + end].to_string())
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
