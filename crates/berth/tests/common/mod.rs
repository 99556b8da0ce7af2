//! Test harness: starts the real `berth up` on a temporary data dir and a free loopback port,
//! and runs the real kubectl against it.
//!
//! `BERTH_TEST_STORE=etcd` runs every server on etcd instead of the embedded store: each
//! [`Berth`] started without a `--store` of its own gets a private single-member etcd on
//! loopback (killed when the `Berth` is dropped) and `--store etcd://…` for it.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

/// A real etcd (one member or a cluster) on loopback, shared with berth-store's tests.
#[path = "../../../berth-store/tests/etcd_server/mod.rs"]
pub mod etcd_server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Berth {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub extra_args: Vec<String>,
    /// Run the server as this user and group (uid, gid) instead of the test's own.
    pub run_as: Option<(u32, u32)>,
    /// Extra environment for the server process (e.g. a test failpoint).
    pub env: Vec<(String, String)>,
    /// The private etcd this server keeps its state in under `BERTH_TEST_STORE=etcd`; dropped
    /// (killed) after the server.
    pub etcd: Option<etcd_server::EtcdCluster>,
}

/// Whether `BERTH_TEST_STORE` asks for servers on etcd (`etcd`) or the embedded store (unset,
/// empty or `sqlite`).
pub fn test_store_is_etcd() -> bool {
    match std::env::var("BERTH_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => false,
        Ok("etcd") => true,
        Ok(other) => panic!("BERTH_TEST_STORE={other:?}: expected etcd or sqlite"),
    }
}

/// A pod bridge name and /24 that no other server of this test process uses, and (by the
/// process id) most likely none of a concurrent one: `10.<200 + pid % 50>.<n>.0/24`.
pub fn unique_pod_network() -> (String, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256;
    let pid = std::process::id();
    (
        format!("bt{}x{n}", pid % 100_000),
        format!("10.{}.{n}.0/24", 200 + pid % 50),
    )
}

/// A service CIDR (a /24) and a node port range (20 ports) for one test server: each berth's
/// service proxy installs its rules on the host, so concurrent servers must not hand out the
/// same cluster IP or node port.
pub fn unique_service_ranges() -> (String, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let slot = ((pid % 23) * 6 + n % 6) % 138;
    let first = 30_000 + slot * 20;
    (
        format!("10.{}.{}.0/24", 150 + pid % 50, n % 256),
        format!("{first}-{}", first + 19),
    )
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Berth {
    pub fn start() -> Berth {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Berth {
        let mut berth = Self::unstarted(args);
        berth.launch();
        berth
    }

    /// Starts the server with its temporary directory (and so its data dir) inside `parent`,
    /// for tests that put the state on a file system of their own.
    pub fn start_in(parent: &Path, args: &[&str]) -> Berth {
        let mut berth = Self::in_dir(tempfile::tempdir_in(parent).expect("temp dir"), args);
        berth.launch();
        berth
    }

    /// A server that is not started yet: [`Berth::launch`] starts it.
    pub fn unstarted(args: &[&str]) -> Berth {
        Self::in_dir(tempfile::tempdir().expect("temp dir"), args)
    }

    fn in_dir(dir: tempfile::TempDir, args: &[&str]) -> Berth {
        let mut extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        // Servers of concurrent tests must not share a pod bridge or hand out one address
        // twice: each gets a bridge and a /24 of its own (unless the test chose them).
        if !extra_args.iter().any(|a| a == "--cluster-cidr") {
            let (bridge, cidr) = unique_pod_network();
            extra_args.extend(["--pod-bridge".into(), bridge, "--cluster-cidr".into(), cidr]);
        }
        let (services, node_ports) = unique_service_ranges();
        if !extra_args.iter().any(|a| a == "--service-cidr") {
            extra_args.extend(["--service-cidr".into(), services]);
        }
        if !extra_args.iter().any(|a| a == "--service-node-port-range") {
            extra_args.extend(["--service-node-port-range".into(), node_ports]);
        }
        let own_store = extra_args
            .iter()
            .any(|a| a == "--store" || a.starts_with("--store="));
        let etcd = (test_store_is_etcd() && !own_store).then(|| {
            let etcd = etcd_server::EtcdCluster::start(1);
            extra_args.extend(["--store".into(), etcd.store_url("")]);
            etcd
        });
        Berth {
            child: None,
            dir,
            port: free_port(),
            extra_args,
            run_as: None,
            env: Vec::new(),
            etcd,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The `berth up` command line for this server's data dir, port and extra arguments.
    pub fn up_command(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .arg("up")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra_args)
            // BERTH_TEST_LOG (e.g. `berth_node=debug`) shows more of the server when debugging.
            .env(
                "BERTH_LOG",
                std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some((uid, gid)) = self.run_as {
            command.gid(gid).uid(uid);
        }
        command
    }

    /// Runs `berth up` for this server (it must not be running) and expects it to exit within
    /// `timeout`; returns its exit status (`None` if it was still running, then killed) and stderr.
    pub fn try_up(&self, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
        let child = self
            .up_command()
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start berth");
        wait_or_kill(child, timeout)
    }

    /// Starts the server process and returns at once, with a channel of the lines it prints on
    /// stdout; [`Berth::wait_up`] waits for it to be up. For crash tests that kill it anywhere,
    /// including during startup.
    pub fn spawn(&mut self) -> std::sync::mpsc::Receiver<String> {
        let mut child = self
            .up_command()
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start berth");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        rx
    }

    /// Waits until a server started with [`Berth::spawn`] prints that it is up. Errors if it
    /// exits first, was killed, or is not up by `deadline`.
    pub fn wait_up(
        &mut self,
        lines: &std::sync::mpsc::Receiver<String>,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(20))) {
                Ok(line) if line.starts_with("berth is up") => return Ok(()),
                Ok(_) => {}
                Err(_) => {
                    let Some(child) = self.child.as_mut() else {
                        return Err("berth was killed".into());
                    };
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("berth exited before it was up: {status}"));
                    }
                    if Instant::now() >= deadline {
                        return Err("berth was not up in time".into());
                    }
                }
            }
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts (or restarts) the server and waits until it says it is up.
    pub fn launch(&mut self) {
        let lines = self.spawn();
        if let Err(e) = self.wait_up(&lines, Instant::now() + Duration::from_secs(30)) {
            panic!("{e} (waited up to 30 s)");
        }
    }

    /// kill -9, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            kubeconfig: self.kubeconfig(),
            cache: self.dir.path().join("kubectl-cache"),
            binary: kubectl_binary(),
        }
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .expect("token")
            .trim()
            .to_string()
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }
}

impl Berth {
    /// `berth down` on this data dir: stops the containers `berth up` left running and
    /// removes the pods' files from the machine. Returns whether it succeeded.
    pub fn down(&self) -> bool {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("down")
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill();
        // Containers outlive `berth up` on purpose; a test must not leave them behind.
        let data = self.data_dir();
        if data.join("run").exists() || data.join("pods").exists() {
            self.down();
        }
    }
}

pub fn kubectl_binary() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"))
}

pub struct Kubectl {
    pub kubeconfig: PathBuf,
    pub cache: PathBuf,
    pub binary: PathBuf,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        command.env_remove("KUBECONFIG");
        command
    }

    /// Runs kubectl and returns what it printed, whatever its exit code.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run kubectl"))
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("kubectl output"))
    }

    /// Runs kubectl and fails the test unless it succeeds; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    #[track_caller]
    pub fn apply(&self, manifest: &str) -> String {
        let run = self.run_stdin(&["apply", "-f", "-"], manifest);
        assert_eq!(
            run.code, 0,
            "kubectl apply failed:\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run.stdout
    }
}

/// Writes `text` to a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

impl Berth {
    /// Runs a second `berth up` on this server's data dir, listening on `port`. Waits at most
    /// `timeout` for it to exit (killing it if it has not) and returns its exit status (`None`
    /// if it was still running) and what it printed on stderr.
    pub fn run_second_instance(
        &self,
        port: u16,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .arg("up")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            // BERTH_TEST_LOG (e.g. `berth_node=debug`) shows more of the server when debugging.
            .env(
                "BERTH_LOG",
                std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        wait_or_kill(command.spawn().expect("start a second berth"), timeout)
    }

    /// A raw HTTPS client authenticated with the admin token.
    pub async fn raw(&self) -> Raw {
        self.raw_with(Some(format!("Bearer {}", self.token())))
            .await
    }

    /// A raw HTTPS client that sends `authorization` (or no `Authorization` header at all).
    pub async fn raw_with(&self, authorization: Option<String>) -> Raw {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config");
        // No credentials of kube-rs's own and no retries: the test sees exactly what the
        // server answers to exactly one request.
        config.auth_info = Default::default();
        config.default_retry = false;
        Raw {
            client: kube::Client::try_from(config).expect("kube client"),
            authorization,
        }
    }
}

/// Waits at most `timeout` for `child` to exit, killing it if it has not; returns its exit
/// status (`None` if it had to be killed) and what it printed on stderr.
fn wait_or_kill(mut child: Child, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for berth") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("berth output");
    (status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Raw HTTPS requests, for the status codes, headers and bodies kube-rs's typed API hides. It
/// uses kube-rs's transport (TLS trusting the CA in the admin kubeconfig) without its
/// authentication and retry layers; the `Authorization` header is the one the test chose.
#[derive(Clone)]
pub struct Raw {
    client: kube::Client,
    authorization: Option<String>,
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every value of one header, as text.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

impl Raw {
    /// Sends one request and reads the whole response.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply, kube::Error> {
        let response = self.start(method, path, content_type, body).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect_bytes().await?;
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    async fn start(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<http::Response<kube::client::Body>, kube::Error> {
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(authorization) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(kube::client::Body::from(body))
            .expect("a valid request");
        self.client.send(request).await
    }

    pub async fn get(&self, path: &str) -> Result<Reply, kube::Error> {
        self.send("GET", path, None, Vec::new()).await
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<Reply, kube::Error> {
        let body = serde_json::to_vec(body).expect("JSON");
        self.send("POST", path, Some("application/json"), body)
            .await
    }

    pub async fn put(&self, path: &str, body: &serde_json::Value) -> Result<Reply, kube::Error> {
        let body = serde_json::to_vec(body).expect("JSON");
        self.send("PUT", path, Some("application/json"), body).await
    }

    /// DELETE, with `DeleteOptions` as the body if given.
    pub async fn delete(
        &self,
        path: &str,
        options: Option<&serde_json::Value>,
    ) -> Result<Reply, kube::Error> {
        match options {
            Some(options) => {
                let body = serde_json::to_vec(options).expect("JSON");
                self.send("DELETE", path, Some("application/json"), body)
                    .await
            }
            None => self.send("DELETE", path, None, Vec::new()).await,
        }
    }

    /// Starts a watch (or any streamed GET): the status code and the stream of its lines.
    pub async fn watch(&self, path: &str) -> Result<(u16, WatchLines), kube::Error> {
        let response = self.start("GET", path, None, Vec::new()).await?;
        let status = response.status().as_u16();
        Ok((
            status,
            WatchLines {
                body: response.into_body(),
                buffer: Vec::new(),
            },
        ))
    }
}

/// The events of a watch response, one JSON object per line.
pub struct WatchLines {
    body: kube::client::Body,
    buffer: Vec<u8>,
}

impl WatchLines {
    /// The next event; `None` when the stream has ended, an error if the connection broke or a
    /// line is not JSON.
    pub async fn next(&mut self) -> Option<Result<serde_json::Value, String>> {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| {
                    format!("bad watch line ({e}): {}", String::from_utf8_lossy(&line))
                }));
            }
            match self.body.frame().await {
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => return None,
                None => {
                    let rest = std::mem::take(&mut self.buffer);
                    return Some(Err(format!(
                        "the stream ended inside a line: {}",
                        String::from_utf8_lossy(&rest)
                    )));
                }
                Some(Err(e)) => return Some(Err(format!("the stream broke: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Polls `check` every 200 ms until it gives a value; past `timeout`, fails with what its
/// last attempt said.
#[track_caller]
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what} (waited {timeout:?}); last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
