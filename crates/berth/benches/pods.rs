//! The pods benchmark: how fast a pod goes from `create` to a running container. Starts the real
//! `berth up` (API server, scheduler and node agent; the binary Cargo built for this bench, so
//! release mode under `cargo bench`) on a temporary data dir on the same disk as the target dir,
//! imports a busybox image built from `/bin/busybox`, creates pods running `sleep 3600` with
//! kube-rs, and prints one table of results beside the targets.
//!
//! Run it with `cargo bench -p berth --bench pods`. Knobs (environment variables):
//! `BERTH_BENCH_DIR` (where the temporary data dir goes; default: Cargo's target tmp dir),
//! `BERTH_BENCH_QUICK=1` (20 pods per phase, for checking the bench itself), `BERTH_BENCH_PODS`
//! (pods per phase, default 200), `BERTH_BENCH_RATE` (pods/s of the paced phases, default 10),
//! `BERTH_BENCH_ONLY` (a comma-separated subset of `floor,running,ready,burst`),
//! `BERTH_BENCH_BINARY` (a different `berth` to measure) and `BERTH_BENCH_LOG` (the server's
//! `BERTH_LOG`, e.g. `debug`; its stderr then goes to `<target tmp>/pods-bench-server.log`).
//!
//! Phases, each on an otherwise idle berth (the pods of one phase are deleted with grace 0, and
//! their containers are gone, before the next starts):
//!
//! - `floor`: the same process without berth, `unshare --fork --pid --mount --uts --ipc
//!   --mount-proc /bin/busybox echo`, timed from spawn to the first byte on its stdout pipe.
//! - `running`: pods created at a steady pace (open loop: each create is sent at its scheduled
//!   time whatever the earlier ones do), create → Running measured from just before
//!   `Api::<Pod>::create` to the first event of one watch on all pods that shows phase Running
//!   with the container's state `running`.
//! - `ready`: the same with an exec readiness probe (`true`, periodSeconds 1,
//!   initialDelaySeconds 0), create → the first event showing the Ready condition True.
//! - `burst`: the pods created as fast as 16 concurrent kube-rs creates go, timed from the
//!   first create to the last pod's Running event: pods started per second.
//!
//! This is a benchmark, not a test: nothing here fails on a missed target; it says so.

#[path = "../../berth-image/tests/common/mod.rs"]
mod fixtures;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use fixtures::E;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

// ---------------------------------------------------------------------------------------------
// Sizes and targets

struct Sizes {
    pods: usize,
    rate: f64,
    burst_clients: usize,
    floor_runs: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        let quick = std::env::var("BERTH_BENCH_QUICK").is_ok_and(|v| v == "1");
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
        let pods = number("BERTH_BENCH_PODS").map_or(if quick { 20 } else { 200 }, |n| n as usize);
        Sizes {
            pods,
            rate: number("BERTH_BENCH_RATE").unwrap_or(10.0),
            burst_clients: 16,
            floor_runs: pods,
        }
    }
}

const TARGET_P99_RUNNING: Duration = Duration::from_millis(100);
const TARGET_FLOOR_RATIO: f64 = 3.0;
const TARGET_PODS_PER_SEC: f64 = 20.0;

/// The whole bench is stopped (berth, pods and temp dir cleaned up) if it runs longer than this.
const DEADLINE: Duration = Duration::from_secs(900);
/// How long one phase may wait for its pods to run, or to be gone.
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);

/// The most pods alive at once: below the node's capacity of 110 pods (kubelet's default
/// maxPods, which berth's node reports), so a phase of 200 runs as rounds of at most 100, with
/// the round's pods deleted (and their containers gone) before the next round.
const ROUND: usize = 100;

const NAMESPACE: &str = "default";
const IMAGE: &str = "busybox:test";

// ---------------------------------------------------------------------------------------------
// Cleanup: the berth child and the temporary root are registered, so even the watchdog's exit
// leaves nothing behind: berth is killed, then every process of the pods' cgroups and every
// shim of this data dir, then the mounts below the root are detached and the root removed.

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static ROOT: Mutex<Option<PathBuf>> = Mutex::new(None);

fn registered_children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill_pid(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn kill_registered_and_exit(code: i32) -> ! {
    for pid in registered_children().drain(..) {
        kill_pid(pid as i32);
    }
    if let Some(root) = ROOT.lock().unwrap_or_else(|p| p.into_inner()).take() {
        std::thread::sleep(Duration::from_millis(200));
        let killed = kill_leftovers(&root);
        if killed > 0 {
            eprintln!("pods bench: killed {killed} leftover processes");
        }
        std::thread::sleep(Duration::from_millis(200));
        detach_mounts(&root);
        let _ = std::fs::remove_dir_all(root);
    }
    std::process::exit(code);
}

fn start_watchdog() {
    std::thread::spawn(|| {
        std::thread::sleep(DEADLINE);
        eprintln!(
            "pods bench: still running after {} s; stopping",
            DEADLINE.as_secs()
        );
        kill_registered_and_exit(2);
    });
}

/// The processes this bench's berth left: shims (their command line names a bundle under
/// `root`) and everything in the cgroups of the pods recorded under `root`.
fn leftovers(root: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let root_text = root.to_string_lossy().into_owned();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&root_text) {
                pids.push(pid);
            }
        }
    }
    let records = root.join("data/run/pods");
    for entry in std::fs::read_dir(records).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(cgroup) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["cgroup"].as_str().map(str::to_string))
        else {
            continue;
        };
        let cgroup = cgroup.trim_start_matches('/').to_string();
        for hierarchy in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            collect_cgroup_procs(&Path::new(hierarchy).join(&cgroup), &mut pids);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|p| *p != std::process::id() as i32);
    pids
}

fn collect_cgroup_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_cgroup_procs(&entry.path(), pids);
        }
    }
}

/// Kills what [`leftovers`] finds; returns how many.
fn kill_leftovers(root: &Path) -> usize {
    let pids = leftovers(root);
    for pid in &pids {
        kill_pid(*pid);
    }
    pids.len()
}

/// Lazily unmounts everything mounted below `root` (the pods' overlays), deepest first.
fn detach_mounts(root: &Path) {
    let root_text = root.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&root_text))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
    }
}

// ---------------------------------------------------------------------------------------------
// The server process

struct Server {
    child: Option<Child>,
    pid: u32,
    port: u16,
    data_dir: PathBuf,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local addr").port()
}

/// The `berth` Cargo built for this bench, or `BERTH_BENCH_BINARY` (to measure another build).
fn berth_binary() -> PathBuf {
    std::env::var_os("BERTH_BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth")))
}

fn server_log() -> Option<(String, PathBuf)> {
    let level = std::env::var("BERTH_BENCH_LOG").ok()?;
    Some((
        level,
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pods-bench-server.log"),
    ))
}

impl Server {
    /// Starts `berth up` and waits for "berth is up".
    fn start(data_dir: &Path) -> anyhow::Result<Server> {
        let port = free_port();
        let mut command = Command::new(berth_binary());
        command
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        match server_log() {
            Some((level, path)) => {
                let file = std::fs::File::create(&path).context("create the server log")?;
                command.env("BERTH_LOG", level).stderr(file);
            }
            None => {
                command.env("BERTH_LOG", "warn").stderr(Stdio::inherit());
            }
        }
        let mut child = command.spawn().context("start berth")?;
        let pid = child.id();
        registered_children().push(pid);
        let stdout = child.stdout.take().context("berth's stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child: Some(child),
            pid,
            port,
            data_dir: data_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("berth is up") => return Ok(server),
                Ok(_) => {}
                Err(_) => {
                    if let Some(child) = server.child.as_mut()
                        && let Ok(Some(status)) = child.try_wait()
                    {
                        bail!("berth exited before it was up: {status}");
                    }
                    if Instant::now() > deadline {
                        bail!("berth did not come up in 30 s");
                    }
                }
            }
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// SIGTERM, then waits (killing it after 15 s).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            registered_children().retain(|p| *p != self.pid);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            registered_children().retain(|p| *p != self.pid);
        }
    }
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).context("read kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .context("kube config")?;
    kube::Client::try_from(config).context("kube client")
}

/// The applets the image links to /bin/busybox.
const APPLETS: &[&str] = &["sh", "sleep", "true", "echo", "cat"];

/// Builds a busybox image from `/bin/busybox` (busybox-static) and imports it with
/// `berth image import`, as crates/berth/tests/pods.rs does.
fn import_busybox(root: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let bin = std::fs::read("/bin/busybox")
        .or_else(|_| std::fs::read("/usr/bin/busybox"))
        .context("busybox is required (apt-get install -y busybox-static)")?;
    let links: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    let mut entries = vec![
        E::Dir("bin", 0o755),
        E::File("bin/busybox", &bin, 0o755),
        E::Dir("etc", 0o755),
        E::Dir("tmp", 0o1777),
        E::Dir("root", 0o700),
    ];
    for link in &links {
        entries.push(E::Symlink(link, "busybox"));
    }
    let layer = fixtures::layer(&entries);
    let config = fixtures::config(&[&layer], &["sh"]);
    let archive = fixtures::oci_layout(IMAGE, &config, &[fixtures::gzip(&layer)], None);
    let file = fixtures::write(root, "busybox.tar", &archive);
    let output = Command::new(berth_binary())
        .args(["image", "import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("run berth image import")?;
    if !output.status.success() {
        bail!(
            "berth image import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statistics and the report

struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut samples: Vec<Duration>) -> Latencies {
        samples.sort();
        Latencies(samples)
    }
    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
    fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
    fn min(&self) -> Duration {
        self.0.first().copied().unwrap_or_default()
    }
    fn median(&self) -> Duration {
        self.pct(50.0)
    }
    fn summary(&self) -> String {
        format!(
            "p50 {} / p99 {} (min {}, max {}; n={})",
            ms(self.median()),
            ms(self.pct(99.0)),
            ms(self.min()),
            ms(self.max()),
            self.0.len()
        )
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

struct Row {
    section: &'static str,
    metric: String,
    value: String,
    target: String,
    verdict: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    misses: Vec<String>,
}

impl Report {
    fn add(&mut self, section: &'static str, metric: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            section,
            metric: metric.into(),
            value: value.into(),
            target: String::new(),
            verdict: String::new(),
        });
        eprintln!("  {}", self.rows.last().map(line_of).unwrap_or_default());
    }

    fn check(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        let metric = metric.into();
        let target = target.into();
        if !met {
            self.misses.push(format!("{metric} (target {target})"));
        }
        self.rows.push(Row {
            section,
            metric,
            value: value.into(),
            target,
            verdict: if met { "met" } else { "MISSED" }.to_string(),
        });
        eprintln!("  {}", self.rows.last().map(line_of).unwrap_or_default());
    }

    fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    fn print(&self) {
        let width = |f: fn(&Row) -> usize| self.rows.iter().map(f).max().unwrap_or(0);
        let w = [
            width(|r| r.section.len()),
            width(|r| r.metric.len()),
            width(|r| r.value.len()),
            width(|r| r.target.len()).max(6),
        ];
        println!(
            "| {:w0$} | {:w1$} | {:w2$} | {:w3$} | {:6} |",
            "area",
            "metric",
            "result",
            "target",
            "met?",
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
        println!(
            "|{}|{}|{}|{}|{}|",
            "-".repeat(w[0] + 2),
            "-".repeat(w[1] + 2),
            "-".repeat(w[2] + 2),
            "-".repeat(w[3] + 2),
            "-".repeat(8)
        );
        for r in &self.rows {
            println!(
                "| {:w0$} | {:w1$} | {:w2$} | {:w3$} | {:6} |",
                r.section,
                r.metric,
                r.value,
                r.target,
                r.verdict,
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            );
        }
        println!();
        if self.misses.is_empty() {
            println!("All stated targets are met.");
        } else {
            println!("TARGETS MISSED ({}):", self.misses.len());
            for m in &self.misses {
                println!("  - {m}");
            }
        }
        if !self.notes.is_empty() {
            println!();
            println!("Notes:");
            for n in &self.notes {
                println!("  - {n}");
            }
        }
    }
}

fn line_of(r: &Row) -> String {
    if r.target.is_empty() {
        format!("{}: {}", r.metric, r.value)
    } else {
        format!(
            "{}: {}   [target {}: {}]",
            r.metric, r.value, r.target, r.verdict
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The machine

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The share of CPU time (all cores) not idle over `window`, from /proc/stat.
fn cpu_busy_percent(window: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((idle, fields.iter().sum()))
    }
    let Some((idle0, total0)) = sample() else {
        return f64::NAN;
    };
    std::thread::sleep(window);
    let Some((idle1, total1)) = sample() else {
        return f64::NAN;
    };
    let total = total1.saturating_sub(total0).max(1) as f64;
    100.0 * (1.0 - idle1.saturating_sub(idle0) as f64 / total)
}

/// CPU time (all cores, all processes) used between two calls, from /proc/stat, in seconds.
fn cpu_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let total: u64 = fields.iter().sum();
    // USER_HZ is 100 on Linux.
    (total - idle) as f64 / 100.0
}

fn machine(report: &mut Report, dir: &Path) {
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into());
    let mem = first_line_with("/proc/meminfo", "MemTotal").unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    report.add("machine", "CPU (nproc x model)", format!("{cores} x {cpu}"));
    report.add("machine", "memory", mem);
    report.add("machine", "kernel", kernel);
    report.add("machine", "data dir", dir.display().to_string());
    report.add("machine", "load average at start (1/5/15 min)", loadavg());
    report.add(
        "machine",
        "server binary",
        berth_binary().display().to_string(),
    );
}

// ---------------------------------------------------------------------------------------------
// The floor: the same process, bare, in its own namespaces.

/// `unshare --fork --pid --mount --uts --ipc --mount-proc /bin/busybox echo up`, `runs` times:
/// spawn → the first byte on its stdout pipe, and spawn → exit (reaped).
fn floor(runs: usize) -> anyhow::Result<(Latencies, Latencies)> {
    let busybox = if Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "/usr/bin/busybox"
    };
    let mut running = Vec::with_capacity(runs);
    let mut exited = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut child = Command::new("unshare")
            .args([
                "--fork",
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                "--mount-proc",
                busybox,
                "echo",
                "up",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn unshare")?;
        let mut stdout = child.stdout.take().context("unshare's stdout")?;
        let mut byte = [0u8; 1];
        let n = stdout.read(&mut byte).context("read unshare's stdout")?;
        let t1 = Instant::now();
        let status = child.wait().context("wait for unshare")?;
        let t2 = Instant::now();
        if n == 0 || !status.success() {
            bail!("unshare failed ({status}); it needs root");
        }
        running.push(t1 - t0);
        exited.push(t2 - t0);
    }
    Ok((Latencies::new(running), Latencies::new(exited)))
}

// ---------------------------------------------------------------------------------------------
// Pods

fn pod(name: &str, readiness: bool) -> anyhow::Result<Pod> {
    let mut container = serde_json::json!({
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "3600"],
    });
    if readiness {
        container["readinessProbe"] = serde_json::json!({
            "exec": {"command": ["true"]},
            "periodSeconds": 1,
            "initialDelaySeconds": 0,
        });
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [container]},
    }))
    .context("pod JSON")
}

/// What the one watch saw of one pod: the first time of each milestone.
#[derive(Default, Clone)]
struct Seen {
    bound: Option<Instant>,
    running: Option<Instant>,
    ready: Option<Instant>,
}

type SeenMap = Arc<Mutex<HashMap<String, Seen>>>;

fn lock(seen: &SeenMap) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

fn observe(seen: &SeenMap, pod: &Pod, now: Instant) {
    let Some(name) = pod.metadata.name.clone() else {
        return;
    };
    let spec_bound = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().is_some_and(|n| !n.is_empty()));
    let status = pod.status.as_ref();
    let running_state = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "main"))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref());
    let running =
        status.and_then(|s| s.phase.as_deref()) == Some("Running") && running_state.is_some();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let mut map = lock(seen);
    let entry = map.entry(name).or_default();
    if spec_bound && entry.bound.is_none() {
        entry.bound = Some(now);
    }
    if running && entry.running.is_none() {
        entry.running = Some(now);
    }
    if ready && entry.ready.is_none() {
        entry.ready = Some(now);
    }
}

/// One watch on all pods of the namespace, from `rv`, recording first sightings into `seen`
/// until aborted (re-watching from the last resourceVersion if the server ends the stream).
async fn watch_pods(api: Api<Pod>, mut rv: String, seen: SeenMap) -> anyhow::Result<()> {
    loop {
        let params = WatchParams::default().timeout(290);
        let mut stream = api.watch(&params, &rv).await?.boxed();
        while let Some(event) = stream.try_next().await? {
            let now = Instant::now();
            match event {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    observe(&seen, &pod, now);
                    if let Some(v) = pod.metadata.resource_version {
                        rv = v;
                    }
                }
                WatchEvent::Deleted(pod) => {
                    if let Some(v) = pod.metadata.resource_version {
                        rv = v;
                    }
                }
                WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                WatchEvent::Error(e) => bail!("watch error: {e:?}"),
            }
        }
    }
}

/// The timeline of one pod of a phase.
struct Timeline {
    name: String,
    uid: String,
    sent: Instant,
    sent_wall: SystemTime,
    acked: Option<Instant>,
    agent: AgentTimes,
}

/// When the node agent reached each step for one pod, from what it left on disk (wall clock,
/// nanoseconds): the pod's directory made by the sandbox set-up, the container's bundle made
/// by the runtime's start, and the shim's record of the moment libcontainer started the process.
#[derive(Default, Clone, Copy)]
struct AgentTimes {
    sandbox: Option<SystemTime>,
    bundle: Option<SystemTime>,
    started: Option<SystemTime>,
}

impl AgentTimes {
    fn read(data_dir: &Path, uid: &str) -> AgentTimes {
        let born = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.created()).ok();
        let bundle = data_dir.join(format!("run/containers/{uid}-main-0"));
        let started = std::fs::read_to_string(bundle.join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["startedAtUnixNanos"].as_u64())
            .map(|n| SystemTime::UNIX_EPOCH + Duration::from_nanos(n));
        AgentTimes {
            sandbox: born(data_dir.join("pods").join(uid)),
            bundle: born(bundle),
            started,
        }
    }
}

/// An instant of the bench's clock as wall-clock time, through the pod's send.
fn wall(t: &Timeline, i: Option<Instant>) -> Option<SystemTime> {
    Some(t.sent_wall + (i? - t.sent))
}

/// `b - a`, when both are known and in that order.
fn between(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<Duration> {
    b?.duration_since(a?).ok()
}

#[derive(Default)]
struct Phase {
    timelines: Vec<Timeline>,
    seen: HashMap<String, Seen>,
    /// From the first create's send to the moment every pod had been seen Running (or Ready),
    /// summed over the rounds.
    span: Duration,
    /// Each round's span and pod count.
    rounds: Vec<(usize, Duration)>,
    cpu_seconds: f64,
    /// The deletes after each round: pods and how long until they were gone.
    deleted: usize,
    delete_time: Duration,
}

impl Phase {
    fn rounds_text(&self) -> String {
        self.rounds
            .iter()
            .map(|(n, d)| format!("{:.1}/s", *n as f64 / d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn lat(&self, pick: impl Fn(&Timeline, &Seen) -> Option<Duration>) -> Latencies {
        Latencies::new(
            self.timelines
                .iter()
                .filter_map(|t| self.seen.get(&t.name).and_then(|s| pick(t, s)))
                .collect(),
        )
    }
    fn running(&self) -> Latencies {
        self.lat(|t, s| s.running.map(|r| r - t.sent))
    }
}

enum Pace {
    /// `rate` creates per second, each sent at its time (open loop).
    Steady(f64),
    /// As fast as `clients` concurrent creates go.
    Burst(usize),
}

/// Runs `count` pods as rounds of at most [`ROUND`], deleting each round's pods (and waiting
/// until they are gone) before the next.
async fn run_phase(
    client: &kube::Client,
    data_dir: &Path,
    prefix: &str,
    count: usize,
    pace: &Pace,
    readiness: bool,
) -> anyhow::Result<Phase> {
    let mut phase = Phase::default();
    let mut first = 0;
    while first < count {
        let n = ROUND.min(count - first);
        let round = run_round(client, data_dir, prefix, first, n, pace, readiness).await?;
        let (deleted, took) = delete_all(client, data_dir).await?;
        phase.timelines.extend(round.timelines);
        phase.seen.extend(round.seen);
        phase.span += round.span;
        phase.rounds.push((n, round.span));
        phase.cpu_seconds += round.cpu_seconds;
        phase.deleted += deleted;
        phase.delete_time += took;
        first += n;
    }
    Ok(phase)
}

/// Creates pods `<prefix>-NNNN` for NNNN in `first..first + count` and waits until the watch
/// has seen every one Running (and Ready, with `readiness`).
async fn run_round(
    client: &kube::Client,
    data_dir: &Path,
    prefix: &str,
    first: usize,
    count: usize,
    pace: &Pace,
    readiness: bool,
) -> anyhow::Result<Phase> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let rv = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let seen: SeenMap = Arc::default();
    let watcher = tokio::spawn(watch_pods(api.clone(), rv, seen.clone()));
    // Let the watch be established before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names: Vec<String> = (first..first + count)
        .map(|i| format!("{prefix}-{i:04}"))
        .collect();
    let cpu0 = cpu_busy_seconds();
    let start = Instant::now();
    let create = |name: String| {
        let api = api.clone();
        async move {
            let body = pod(&name, readiness)?;
            let sent_wall = SystemTime::now();
            let sent = Instant::now();
            let created = api
                .create(&PostParams::default(), &body)
                .await
                .with_context(|| format!("create {name}"))?;
            let acked = Some(Instant::now());
            anyhow::Ok(Timeline {
                name,
                uid: created.metadata.uid.unwrap_or_default(),
                sent,
                sent_wall,
                acked,
                agent: AgentTimes::default(),
            })
        }
    };
    let mut timelines: Vec<Timeline> = match *pace {
        Pace::Steady(rate) => {
            let mut tasks = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                tasks.push(tokio::spawn(create(name.clone())));
            }
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.context("create task")??);
            }
            out
        }
        Pace::Burst(clients) => {
            futures::stream::iter(names.iter().cloned().map(create))
                .buffer_unordered(clients)
                .try_collect()
                .await?
        }
    };
    let done = |s: &Seen| {
        if readiness {
            s.ready.is_some()
        } else {
            s.running.is_some()
        }
    };
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let finished = {
            let map = lock(&seen);
            names
                .iter()
                .filter(|n| map.get(*n).is_some_and(done))
                .count()
        };
        if finished == count {
            break;
        }
        if watcher.is_finished() {
            let result = watcher.await.context("watch task")?;
            bail!("the watch ended: {result:?}");
        }
        if Instant::now() > deadline {
            watcher.abort();
            bail!(
                "only {finished} of {count} pods of {prefix} were {} after {} s",
                if readiness { "Ready" } else { "Running" },
                PHASE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = lock(&seen).clone();
    let last = names
        .iter()
        .filter_map(|n| {
            let s = seen.get(n)?;
            if readiness { s.ready } else { s.running }
        })
        .max()
        .unwrap_or(start);
    let cpu_seconds = cpu_busy_seconds() - cpu0;
    watcher.abort();
    for t in &mut timelines {
        t.agent = AgentTimes::read(data_dir, &t.uid);
    }
    Ok(Phase {
        timelines,
        seen,
        span: last - start,
        cpu_seconds,
        ..Phase::default()
    })
}

/// Deletes every pod of the namespace with grace 0 and waits until the API has none and the
/// agent has removed their containers and directories; returns how long that took.
async fn delete_all(client: &kube::Client, data_dir: &Path) -> anyhow::Result<(usize, Duration)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let start = Instant::now();
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let count = names.len();
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    futures::stream::iter(names.into_iter().map(|name| {
        let (api, params) = (api.clone(), params.clone());
        async move {
            match api.delete(&name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(e) => Err(anyhow::Error::new(e).context(format!("delete {name}"))),
            }
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let empty = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    };
    loop {
        let left = api.list(&ListParams::default()).await?.items.len();
        let containers_gone = empty(data_dir.join("run/containers"));
        let pods_gone = empty(data_dir.join("pods"));
        if left == 0 && containers_gone && pods_gone {
            return Ok((count, start.elapsed()));
        }
        if Instant::now() > deadline {
            bail!(
                "pods not gone after {} s: {left} in the API, containers gone: {containers_gone}, \
                 pod dirs gone: {pods_gone}",
                PHASE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_node_ready(client: &kube::Client) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in nodes.list(&ListParams::default()).await?.items {
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                return Ok(node.metadata.name.unwrap_or_default());
            }
        }
        if Instant::now() > deadline {
            bail!("no Ready node after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report_deletes(report: &mut Report, section: &'static str, phase: &Phase) {
    report.add(
        section,
        "delete with grace 0 after each round -> API empty, containers and pod dirs removed",
        format!(
            "{} pods in {:.2} s over {} rounds",
            phase.deleted,
            phase.delete_time.as_secs_f64(),
            phase.rounds.len()
        ),
    );
}

/// Picks one duration of a pod's timeline, if it has both ends.
type Pick = dyn Fn(&Timeline, &Seen) -> Option<Duration>;

fn report_breakdown(report: &mut Report, section: &'static str, phase: &Phase) {
    report.add(
        section,
        "  create call (send -> response)",
        phase.lat(|t, _| t.acked.map(|a| a - t.sent)).summary(),
    );
    report.add(
        section,
        "  send -> watch shows spec.nodeName (scheduled)",
        phase.lat(|t, s| s.bound.map(|b| b - t.sent)).summary(),
    );
    report.add(
        section,
        "  scheduled -> watch shows Running (agent + runtime + status)",
        phase.lat(|_, s| Some(s.running? - s.bound?)).summary(),
    );
    let rows: [(&str, &Pick); 5] = [
        (
            "  agent: send -> pod dir made (worker starts the sandbox)",
            &|t, _| between(Some(t.sent_wall), t.agent.sandbox),
        ),
        (
            "  agent: pod dir -> bundle made (sandbox, volumes, overlay rootfs)",
            &|t, _| between(t.agent.sandbox, t.agent.bundle),
        ),
        (
            "  runtime: bundle -> process started (shim + libcontainer)",
            &|t, _| between(t.agent.bundle, t.agent.started),
        ),
        (
            "  process started -> watch shows Running (status PATCH + watch)",
            &|t, s| between(t.agent.started, wall(t, s.running)),
        ),
        (
            "  send -> process started (the shim's own clock)",
            &|t, _| between(Some(t.sent_wall), t.agent.started),
        ),
    ];
    for (metric, pick) in rows {
        report.add(section, metric, phase.lat(pick).summary());
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and a bench is no test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pods: a benchmark; run it with `cargo bench -p berth --bench pods`");
        return;
    }
    start_watchdog();
    let sizes = Sizes::from_env();
    let parent = std::env::var_os("BERTH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent).expect("create the bench's parent dir");
    let root = tempfile::Builder::new()
        .prefix("berth-pods-bench-")
        .tempdir_in(&parent)
        .expect("make the bench's temp dir");
    *ROOT.lock().unwrap_or_else(|p| p.into_inner()) = Some(root.path().to_path_buf());

    let started = Instant::now();
    let mut report = Report::default();
    let result = run(&mut report, &sizes, root.path());
    let total = started.elapsed();
    println!();
    println!(
        "berth pods benchmark ({} pods per phase, {:.0} s)",
        sizes.pods,
        total.as_secs_f64()
    );
    println!();
    report.print();
    println!();
    println!("load average at end (1/5/15 min): {}", loadavg());
    let left = leftovers(root.path());
    if !left.is_empty() {
        eprintln!(
            "pods bench: {} processes left behind; killing them",
            left.len()
        );
    }
    if let Err(error) = result {
        eprintln!("pods bench failed: {error:#}");
        kill_registered_and_exit(1);
    }
    if !left.is_empty() {
        kill_registered_and_exit(1);
    }
    *ROOT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    detach_mounts(root.path());
    drop(root);
}

fn run(report: &mut Report, sizes: &Sizes, root: &Path) -> anyhow::Result<()> {
    machine(report, root);
    let busy = cpu_busy_percent(Duration::from_secs(1));
    report.add(
        "machine",
        "CPU busy (all cores) in the second before the run",
        format!("{busy:.0}%"),
    );
    if busy > 10.0 {
        report.note(format!(
            "the machine was not idle at the start ({busy:.0}% CPU busy): other work shares \
             the cores, so these numbers are pessimistic"
        ));
    }
    if cfg!(debug_assertions) {
        report.note("this bench was built without optimizations; numbers are not representative");
    }
    let only = std::env::var("BERTH_BENCH_ONLY").ok();
    let wants = |phase: &str| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|p| p.trim() == phase))
    };
    if let Some(only) = &only {
        report.note(format!("only these phases ran (BERTH_BENCH_ONLY): {only}"));
    }
    let n = sizes.pods;

    // The floor first, while nothing of berth runs.
    let floor_p99 = if wants("floor") {
        eprintln!("floor: unshare x {}", sizes.floor_runs);
        let (running, exited) = floor(sizes.floor_runs)?;
        report.add(
            "floor",
            "unshare --fork --pid --mount --uts --ipc --mount-proc busybox echo: spawn -> first byte on the pipe",
            running.summary(),
        );
        report.add("floor", "  same: spawn -> exit reaped", exited.summary());
        Some(running.pct(99.0))
    } else {
        None
    };

    let data_dir = root.join("data");
    let mut server = Server::start(&data_dir)?;
    eprintln!("server: pid {}, port {}", server.pid, server.port);
    import_busybox(root, &data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("bench runtime")?;
    let result = runtime.block_on(async {
        let client = client(&server.kubeconfig()).await?;
        let node = wait_node_ready(&client).await?;
        eprintln!("node {node} is Ready");
        // One warm-up pod: the first start pays for page-cache misses of the image and binary.
        run_phase(&client, &data_dir, "warmup", 1, &Pace::Burst(1), false).await?;

        if wants("running") {
            eprintln!("running: {n} pods at {}/s", sizes.rate);
            let phase = run_phase(&client, &data_dir, "run", n, &Pace::Steady(sizes.rate), false).await?;
            let running = phase.running();
            report.check(
                "running",
                format!(
                    "create -> Running, {n} pods at a steady {}/s (p50 / p99 / max)",
                    sizes.rate
                ),
                format!(
                    "{} / {} / {}",
                    ms(running.median()),
                    ms(running.pct(99.0)),
                    ms(running.max())
                ),
                "p99 < 100 ms",
                running.pct(99.0) < TARGET_P99_RUNNING,
            );
            report_breakdown(report, "running", &phase);
            report.add(
                "running",
                "  CPU used by the machine over the phase",
                format!(
                    "{:.1} CPU-s in {:.1} s ({:.0} CPU-ms per pod)",
                    phase.cpu_seconds,
                    phase.span.as_secs_f64(),
                    phase.cpu_seconds * 1e3 / n as f64
                ),
            );
            if let Some(floor_p99) = floor_p99 {
                let ratio = running.pct(99.0).as_secs_f64() / floor_p99.as_secs_f64();
                report.check(
                    "running",
                    "p99(create -> Running) / p99(floor)",
                    format!(
                        "{ratio:.1}x ({} / {})",
                        ms(running.pct(99.0)),
                        ms(floor_p99)
                    ),
                    "<= 3x",
                    ratio <= TARGET_FLOOR_RATIO,
                );
            }
            report_deletes(report, "running", &phase);
        }

        if wants("ready") {
            eprintln!("ready: {n} pods with an exec readiness probe at {}/s", sizes.rate);
            let phase = run_phase(&client, &data_dir, "ready", n, &Pace::Steady(sizes.rate), true).await?;
            let ready = phase.lat(|t, s| s.ready.map(|r| r - t.sent));
            report.add(
                "ready",
                format!(
                    "create -> Ready, exec probe [true] every 1 s, {n} pods at {}/s (p50 / p99 / max)",
                    sizes.rate
                ),
                format!(
                    "{} / {} / {}",
                    ms(ready.median()),
                    ms(ready.pct(99.0)),
                    ms(ready.max())
                ),
            );
            report.add(
                "ready",
                "  create -> Running, same pods",
                phase.running().summary(),
            );
            report.add(
                "ready",
                "  Running -> Ready (first probe and its status)",
                phase
                    .lat(|_, s| Some(s.ready? - s.running?))
                    .summary(),
            );
            report_deletes(report, "ready", &phase);
        }

        if wants("burst") {
            eprintln!(
                "burst: {n} pods as fast as possible ({} clients)",
                sizes.burst_clients
            );
            let phase =
                run_phase(&client, &data_dir, "burst", n, &Pace::Burst(sizes.burst_clients), false).await?;
            let rate = n as f64 / phase.span.as_secs_f64();
            report.check(
                "burst",
                format!(
                    "pods started per second: {n} creates in rounds of <= {ROUND}, {} concurrent, \
                     first send -> last Running",
                    sizes.burst_clients
                ),
                format!(
                    "{rate:.1} pods/s ({:.2} s; rounds {})",
                    phase.span.as_secs_f64(),
                    phase.rounds_text()
                ),
                ">= 20 pods/s",
                rate >= TARGET_PODS_PER_SEC,
            );
            report.add(
                "burst",
                "  create -> Running per pod under the burst",
                phase.running().summary(),
            );
            report_breakdown(report, "burst", &phase);
            report.add(
                "burst",
                "  CPU used by the machine over the phase",
                format!(
                    "{:.1} CPU-s in {:.1} s ({:.0} CPU-ms per pod)",
                    phase.cpu_seconds,
                    phase.span.as_secs_f64(),
                    phase.cpu_seconds * 1e3 / n as f64
                ),
            );
            report_deletes(report, "burst", &phase);
        }
        anyhow::Ok(())
    });
    if result.is_err() {
        // Leave no pods running: try to delete them through the API before stopping berth.
        let _ = runtime.block_on(async {
            let client = client(&server.kubeconfig()).await?;
            tokio::time::timeout(Duration::from_secs(60), delete_all(&client, &data_dir)).await?
        });
    }
    drop(runtime);
    server.stop();
    result
}
