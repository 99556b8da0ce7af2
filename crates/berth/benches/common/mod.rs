//! What the benches share: the cleanup registry and its watchdog, the `berth up` child, the
//! latency statistics, the results table and the description of the machine; the lean HTTPS
//! client and its fixed-count loads are in `api_client`.
//!
//! Each bench takes this in with `mod common;` (Cargo does not make `benches/common/mod.rs` a
//! bench of its own). What only one bench needs stays in that bench, including its own methods
//! on these types (`Server::rss_kib` in control_plane.rs, `Latencies::summary` in pods.rs).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

#[allow(dead_code)] // The control-plane bench runs no pods.
pub mod pods;

#[allow(dead_code)] // Each API bench drives the server with a different part of it.
pub mod api_client;

/// `cargo bench` passes --bench; `cargo test --benches` does not, and a bench is no test. Says
/// how to run the bench `name` when it is not run as one.
pub fn run_as_bench(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    println!("{name}: a benchmark; run it with `cargo bench -p berth --bench {name}`");
    false
}

// ---------------------------------------------------------------------------------------------
// Cleanup: every child berth and the temporary root are registered, so even the watchdog's exit
// leaves nothing behind.

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static ROOT: Mutex<Option<Root>> = Mutex::new(None);

/// The temporary root, and what to do before removing it once the children are killed.
struct Root {
    path: PathBuf,
    before_removal: fn(&Path),
}

fn registered_children() -> MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

fn registered_root() -> MutexGuard<'static, Option<Root>> {
    ROOT.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn kill_pid(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Kills the registered children, removes the registered root (after its `before_removal`) and
/// exits with `code`.
pub fn kill_registered_and_exit(code: i32) -> ! {
    for pid in registered_children().drain(..) {
        kill_pid(pid as i32);
    }
    if let Some(root) = registered_root().take() {
        // Give the killed servers a moment to release their files.
        std::thread::sleep(Duration::from_millis(200));
        (root.before_removal)(&root.path);
        let _ = std::fs::remove_dir_all(root.path);
    }
    std::process::exit(code);
}

/// Stops the whole bench `name` (servers and temp dir cleaned up) after `deadline`.
pub fn start_watchdog(name: &'static str, deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!(
            "{name} bench: still running after {} s; stopping",
            deadline.as_secs()
        );
        kill_registered_and_exit(2);
    });
}

/// Makes the bench's temporary root, `<prefix>…` in `BERTH_BENCH_DIR` (default: Cargo's target
/// tmp dir), and registers it; `before_removal` runs on it before an early exit removes it.
pub fn make_root(prefix: &str, before_removal: fn(&Path)) -> tempfile::TempDir {
    let parent = std::env::var_os("BERTH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent).expect("create the bench's parent dir");
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .expect("make the bench's temp dir");
    *registered_root() = Some(Root {
        path: root.path().to_path_buf(),
        before_removal,
    });
    root
}

/// The root is the caller's to remove again.
pub fn unregister_root() {
    *registered_root() = None;
}

// ---------------------------------------------------------------------------------------------
// The server process

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local addr").port()
}

/// The `berth` Cargo built for this bench, or `BERTH_BENCH_BINARY` (to measure another build).
pub fn berth_binary() -> PathBuf {
    std::env::var_os("BERTH_BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth")))
}

/// A `berth up` child, registered for cleanup; killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub port: u16,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Spawns `berth up`; returns at once (the clock of a cold start starts before this call).
    /// `log`: the server's `BERTH_LOG` level and a file for its stderr; without it, `warn` to
    /// this process's stderr. `args` go after `up` (e.g. `--disable-agent`).
    pub fn spawn(
        data_dir: &Path,
        args: &[&str],
        log: Option<(String, PathBuf)>,
    ) -> anyhow::Result<Server> {
        let port = free_port();
        let mut command = Command::new(berth_binary());
        command
            .arg("up")
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        match log {
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
        Ok(Server {
            child: Some(child),
            pid,
            port,
            lines,
        })
    }

    /// Waits for "berth is up" on stdout; returns the server's own "ready in N ms".
    pub fn wait_up(&mut self) -> anyhow::Result<Option<u64>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("berth is up") => return Ok(parse_ready_ms(&line)),
                Ok(_) => {}
                Err(_) => {
                    if let Some(status) = self.exited() {
                        bail!("berth exited before it was up: {status}");
                    }
                    if Instant::now() > deadline {
                        bail!("berth did not come up in 30 s");
                    }
                }
            }
        }
    }

    /// How the server ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok()?
    }

    /// SIGTERM, then waits (killing it after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + grace;
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

fn parse_ready_ms(line: &str) -> Option<u64> {
    let rest = line.split("ready in ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The kube-rs configuration of the admin kubeconfig `berth up` wrote into `data_dir`.
pub async fn kube_config(data_dir: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(data_dir.join("admin.kubeconfig"))
        .context("read kubeconfig")?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .context("kube config")
}

// ---------------------------------------------------------------------------------------------
// Statistics

pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Latencies {
        samples.sort();
        Latencies(samples)
    }
    pub fn count(&self) -> usize {
        self.0.len()
    }
    /// Nearest-rank percentile.
    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
    pub fn min(&self) -> Duration {
        self.0.first().copied().unwrap_or_default()
    }
    pub fn median(&self) -> Duration {
        self.pct(50.0)
    }
    /// "p50 / p99 / max".
    pub fn p50_p99_max(&self) -> String {
        format!(
            "{} / {} / {}",
            ms(self.median()),
            ms(self.pct(99.0)),
            ms(self.max())
        )
    }
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

// ---------------------------------------------------------------------------------------------
// The report

pub struct Row {
    section: &'static str,
    metric: String,
    value: String,
    target: String,
    verdict: String,
}

/// The results table, with the missed targets and the notes below it. Checked rows and notes
/// are echoed to stderr as they come; plain rows too with `echo_added`.
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    misses: Vec<String>,
    echo_added: bool,
}

impl Report {
    pub fn new(echo_added: bool) -> Report {
        Report {
            rows: Vec::new(),
            notes: Vec::new(),
            misses: Vec::new(),
            echo_added,
        }
    }

    pub fn add(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
    ) {
        self.rows.push(Row {
            section,
            metric: metric.into(),
            value: value.into(),
            target: String::new(),
            verdict: String::new(),
        });
        if self.echo_added {
            self.echo_last();
        }
    }

    pub fn check(
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
        self.echo_last();
    }

    fn echo_last(&self) {
        eprintln!("  {}", self.rows.last().map(line_of).unwrap_or_default());
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    /// Prints `title`, the table (rows grouped by section, in the order the sections first
    /// came), the missed targets, the notes and the load average at the end.
    pub fn print(&self, title: &str) {
        println!();
        println!("{title}");
        println!();
        let width = |f: fn(&Row) -> usize| self.rows.iter().map(f).max().unwrap_or(0);
        let w = [
            width(|r| r.section.len()),
            width(|r| r.metric.len()),
            width(|r| r.value.len()),
            width(|r| r.target.len()).max(6),
        ];
        let line = |cells: [&str; 5]| {
            println!(
                "| {:w0$} | {:w1$} | {:w2$} | {:w3$} | {:6} |",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            );
        };
        line(["area", "metric", "result", "target", "met?"]);
        println!(
            "|{}|{}|{}|{}|{}|",
            "-".repeat(w[0] + 2),
            "-".repeat(w[1] + 2),
            "-".repeat(w[2] + 2),
            "-".repeat(w[3] + 2),
            "-".repeat(8)
        );
        let mut sections: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !sections.contains(&r.section) {
                sections.push(r.section);
            }
        }
        let grouped = sections
            .iter()
            .flat_map(|s| self.rows.iter().filter(move |r| r.section == *s));
        for r in grouped {
            line([r.section, &r.metric, &r.value, &r.target, &r.verdict]);
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
        println!();
        println!("load average at end (1/5/15 min): {}", loadavg());
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

/// The phases `BERTH_BENCH_ONLY` (a comma-separated list) asks for; all without it.
pub struct Phases(Option<String>);

impl Phases {
    /// Reads `BERTH_BENCH_ONLY`, noting in the report when it limits the run.
    pub fn from_env(report: &mut Report) -> Phases {
        let only = std::env::var("BERTH_BENCH_ONLY").ok();
        if let Some(only) = &only {
            report.note(format!("only these phases ran (BERTH_BENCH_ONLY): {only}"));
        }
        Phases(only)
    }

    pub fn wants(&self, phase: &str) -> bool {
        self.0
            .as_deref()
            .is_none_or(|only| only.split(',').any(|p| p.trim() == phase))
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

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The machine's rows: CPU (as `cpu_metric`), memory, kernel, the data dir (with `filesystem`,
/// also the mount it is on), the load average at the start and the server binary.
pub fn machine(report: &mut Report, dir: &Path, cpu_metric: &'static str, filesystem: bool) {
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into());
    let mem = first_line_with("/proc/meminfo", "MemTotal").unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    report.add("machine", cpu_metric, format!("{cores} x {cpu}"));
    report.add("machine", "memory", mem);
    report.add("machine", "kernel", kernel);
    report.add("machine", "data dir", dir.display().to_string());
    if filesystem {
        report.add("machine", "data dir filesystem", filesystem_of(dir));
    }
    report.add("machine", "load average at start (1/5/15 min)", loadavg());
    report.add(
        "machine",
        "server binary",
        berth_binary().display().to_string(),
    );
}

/// The conditions of the run: how busy the CPU was in the second before it (a note when it was
/// not idle), and a note when the bench was built without optimizations.
pub fn note_conditions(report: &mut Report) {
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
}

/// The mount the path lives on (longest mount point that is a prefix of it), from /proc/mounts.
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            continue;
        }
        let mount_point = Path::new(fields[1]);
        if path.starts_with(mount_point) {
            let len = fields[1].len();
            if best.as_ref().is_none_or(|(l, _)| len >= *l) {
                best = Some((
                    len,
                    format!("{} on {} ({})", fields[0], fields[1], fields[2]),
                ));
            }
        }
    }
    let magic = rustix::fs::statfs(&path)
        .map(|s| format!("statfs f_type {:#x}", s.f_type))
        .unwrap_or_else(|e| format!("statfs failed: {e}"));
    match best {
        Some((_, m)) => format!("{m}, {magic}"),
        None => magic,
    }
}

/// The CPU time of all cores since boot, from /proc/stat's `cpu` line: (idle + iowait, total),
/// in USER_HZ ticks.
pub fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((idle, fields.iter().sum()))
}

/// The share of CPU time (all cores) not idle over `window`, from /proc/stat.
fn cpu_busy_percent(window: Duration) -> f64 {
    let Some((idle0, total0)) = cpu_times() else {
        return f64::NAN;
    };
    std::thread::sleep(window);
    let Some((idle1, total1)) = cpu_times() else {
        return f64::NAN;
    };
    let total = total1.saturating_sub(total0).max(1) as f64;
    100.0 * (1.0 - idle1.saturating_sub(idle0) as f64 / total)
}

/// `berth down` on the bench's data dir once its server is stopped: the pods, mounts, links
/// and nftables table it made go. A failure is reported, not fatal (the leftover checks that
/// follow say what stayed).
#[allow(dead_code)] // The control-plane and pods benches run no `berth down`.
pub fn berth_down(data_dir: &Path, bench: &str) {
    let down = Command::new(berth_binary())
        .args(["down", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .status();
    if !down.is_ok_and(|s| s.success()) {
        eprintln!("{bench} bench: berth down failed");
    }
}
