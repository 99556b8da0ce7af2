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

mod common;

#[path = "../../berth-image/tests/common/mod.rs"]
mod fixtures;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use fixtures::E;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

use common::pods::{clear_root, client, detach_mounts, floor, leftovers, wait_node_ready};
use common::{Latencies, Phases, Report, Server, berth_binary, ms};

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
/// How long a stopped server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Cleanup: the berth child and the temporary root are registered (see common), so even the
// watchdog's exit leaves nothing behind: berth is killed, then every process of the pods'
// cgroups and every shim of this data dir, then the mounts below the root are detached and the
// root removed.

// ---------------------------------------------------------------------------------------------
// The server process

fn server_log() -> Option<(String, PathBuf)> {
    let level = std::env::var("BERTH_BENCH_LOG").ok()?;
    Some((
        level,
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pods-bench-server.log"),
    ))
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
// Statistics

impl Latencies {
    fn summary(&self) -> String {
        format!(
            "p50 {} / p99 {} (min {}, max {}; n={})",
            ms(self.median()),
            ms(self.pct(99.0)),
            ms(self.min()),
            ms(self.max()),
            self.count()
        )
    }
}

/// CPU time (all cores, all processes) used between two calls, from /proc/stat, in seconds.
fn cpu_busy_seconds() -> f64 {
    // USER_HZ is 100 on Linux.
    common::cpu_times().map_or(f64::NAN, |(idle, total)| (total - idle) as f64 / 100.0)
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
            .and_then(|v| v["init"]["startedAtUnixNanos"].as_u64())
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

fn report_cpu(report: &mut Report, section: &'static str, phase: &Phase) {
    report.add(
        section,
        "  CPU used by the machine over the phase",
        format!(
            "{:.1} CPU-s in {:.1} s ({:.0} CPU-ms per pod)",
            phase.cpu_seconds,
            phase.span.as_secs_f64(),
            phase.cpu_seconds * 1e3 / phase.timelines.len() as f64
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
    if !common::run_as_bench("pods") {
        return;
    }
    common::start_watchdog("pods", DEADLINE);
    let sizes = Sizes::from_env();
    let root = common::make_root("berth-pods-bench-", clear_root);

    let started = Instant::now();
    let mut report = Report::new(true);
    let result = run(&mut report, &sizes, root.path());
    let total = started.elapsed();
    report.print(&format!(
        "berth pods benchmark ({} pods per phase, {:.0} s)",
        sizes.pods,
        total.as_secs_f64()
    ));
    let left = leftovers(root.path());
    if !left.is_empty() {
        eprintln!(
            "pods bench: {} processes left behind; killing them",
            left.len()
        );
    }
    if let Err(error) = result {
        eprintln!("pods bench failed: {error:#}");
        common::kill_registered_and_exit(1);
    }
    if !left.is_empty() {
        common::kill_registered_and_exit(1);
    }
    common::unregister_root();
    detach_mounts(root.path());
    drop(root);
}

fn run(report: &mut Report, sizes: &Sizes, root: &Path) -> anyhow::Result<()> {
    common::machine(report, root, "CPU (nproc x model)", false);
    common::note_conditions(report);
    let phases = Phases::from_env(report);
    let n = sizes.pods;

    // The floor first, while nothing of berth runs.
    let floor_p99 = if phases.wants("floor") {
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
    let mut server = Server::spawn(&data_dir, &[], server_log())?;
    server.wait_up()?;
    eprintln!("server: pid {}, port {}", server.pid, server.port);
    import_busybox(root, &data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("bench runtime")?;
    let result = runtime.block_on(async {
        let client = client(&data_dir).await?;
        let node = wait_node_ready(&client).await?;
        eprintln!("node {node} is Ready");
        // One warm-up pod: the first start pays for page-cache misses of the image and binary.
        run_phase(&client, &data_dir, "warmup", 1, &Pace::Burst(1), false).await?;

        if phases.wants("running") {
            eprintln!("running: {n} pods at {}/s", sizes.rate);
            let phase = run_phase(&client, &data_dir, "run", n, &Pace::Steady(sizes.rate), false).await?;
            let running = phase.running();
            report.check(
                "running",
                format!(
                    "create -> Running, {n} pods at a steady {}/s (p50 / p99 / max)",
                    sizes.rate
                ),
                running.p50_p99_max(),
                "p99 < 100 ms",
                running.pct(99.0) < TARGET_P99_RUNNING,
            );
            report_breakdown(report, "running", &phase);
            report_cpu(report, "running", &phase);
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

        if phases.wants("ready") {
            eprintln!("ready: {n} pods with an exec readiness probe at {}/s", sizes.rate);
            let phase = run_phase(&client, &data_dir, "ready", n, &Pace::Steady(sizes.rate), true).await?;
            let ready = phase.lat(|t, s| s.ready.map(|r| r - t.sent));
            report.add(
                "ready",
                format!(
                    "create -> Ready, exec probe [true] every 1 s, {n} pods at {}/s (p50 / p99 / max)",
                    sizes.rate
                ),
                ready.p50_p99_max(),
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

        if phases.wants("burst") {
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
            report_cpu(report, "burst", &phase);
            report_deletes(report, "burst", &phase);
        }
        anyhow::Ok(())
    });
    if result.is_err() {
        // Leave no pods running: try to delete them through the API before stopping berth.
        let _ = runtime.block_on(async {
            let client = client(&data_dir).await?;
            tokio::time::timeout(Duration::from_secs(60), delete_all(&client, &data_dir)).await?
        });
    }
    drop(runtime);
    server.stop(STOP_GRACE);
    result
}
