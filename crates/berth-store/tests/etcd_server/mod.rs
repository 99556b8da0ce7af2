//! A real etcd for tests: Debian's `etcd` (etcd-server) on free loopback ports with its data in
//! a temporary directory, killed when dropped (and by the kernel if the test process dies
//! first, through the parent-death signal), so no test leaves a process behind.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_store::Store;
use berth_store::etcd::{EtcdConfig, EtcdStore};

/// The etcd binary; `BERTH_TEST_ETCD` overrides it.
fn etcd_binary() -> PathBuf {
    std::env::var_os("BERTH_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Two distinct free loopback ports (held together while chosen so they differ).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let ports = (
        a.local_addr().expect("port").port(),
        b.local_addr().expect("port").port(),
    );
    drop((a, b));
    ports
}

pub struct EtcdServer {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a single-member etcd and waits until it serves.
    pub async fn start() -> EtcdServer {
        let mut last_error = String::new();
        // A port taken between choosing and binding makes etcd exit; choose again.
        for _ in 0..5 {
            let (client_port, peer_port) = free_ports();
            let mut server = EtcdServer {
                dir: tempfile::tempdir().expect("tempdir"),
                client_port,
                peer_port,
                child: None,
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
        format!("127.0.0.1:{}", self.client_port)
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
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let mut command = Command::new(etcd_binary());
        command
            .arg("--name=default")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            // Elect the single member quickly.
            .arg("--heartbeat-interval=20")
            .arg("--election-timeout=200")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        self.child = Some(command.spawn().expect("spawn etcd"));
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let config = self.config("/", Duration::from_millis(500));
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited with {status}: {}", self.log()));
            }
            match berth_store::etcd::connect(&config).await {
                Ok(store) if store.revisions().await.is_ok() => return Ok(()),
                Ok(_) => {}
                Err(error) if tokio::time::Instant::now() > deadline => {
                    self.stop();
                    return Err(format!("{error}; log: {}", self.log()));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Kills etcd (SIGKILL: an acknowledged write must already be durable).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes etcd (SIGSTOP): connections stay open but nothing answers, the case that hangs
    /// a client without timeouts.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().expect("etcd is running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("etcd's pid");
        rustix::process::kill_process(pid, signal).expect("signal etcd");
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
