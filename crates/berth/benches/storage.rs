//! The storage benchmark (issue 6): how long a claim takes to be Bound, how long a pod with a
//! fresh claim takes to run, and how fast a pod writes to its volume against the same write on
//! the host, for each built-in class, on the real `berth up` (release mode under `cargo bench`).
//!
//! Run it with `cargo bench -p berth --bench storage`. Knobs: `BERTH_BENCH_DIR` (where the
//! temporary data dir goes; the host write goes to the same filesystem), `BERTH_BENCH_CLAIMS`
//! (claims per class in `bind`, default 30), `BERTH_BENCH_PODS` (pods per class in `pods`,
//! default 10), `BERTH_BENCH_WRITE_ROUNDS` (default 5), `BERTH_BENCH_ONLY` (a comma-separated
//! subset of `bind,pods,write`), `BERTH_BENCH_BINARY` (a different `berth` to measure).
//!
//! - `bind`: the built-in classes are WaitForFirstConsumer, so a claim alone never binds. The
//!   bench makes an Immediate copy of each (same provisioner) and creates N claims of 1 GiB one
//!   after another, each timed from just before its create to the first watch event that shows
//!   it Bound (provisioning included: a directory for local-path, a sparse image and mkfs for
//!   local-ext4). Then it deletes them all and times until every PV and its storage is gone.
//! - `pods`: the built-in classes themselves (WaitForFirstConsumer, the default path): a claim
//!   and a pod mounting it (`sleep`, host-program image) created back to back, timed from just
//!   before the claim's create to the first watch event showing the pod Running (scheduling,
//!   selected-node, provisioning, binding, mounting, starting). N one after another, with the
//!   same pod without a volume as the baseline.
//! - `write`: `dd if=/dev/zero of=/data/f bs=1M count=256 conv=fsync` in a pod (restartPolicy
//!   Never; dd's summary read from the pod's log once it Succeeded) on a fresh 512 MiB claim of
//!   each class, and the same dd on the host into a directory on the data dir's filesystem;
//!   `BERTH_BENCH_WRITE_ROUNDS` rounds (default 5), each starting with the next of the three,
//!   the median and best of each reported with their ratio to the host.
//!
//! At the end berth is stopped and `berth down` run; nothing may be left mounted under the
//! bench's root or attached to a loop device backed by a file under it.
//!
//! This is a benchmark, not a test: it reports, it does not fail on a missed figure.

#[allow(dead_code)] // This bench uses part of the shared harness.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use common::pods::{clear_root, client, detach_mounts, leftovers, wait_node_ready};
use common::{Latencies, Phases, Report, Server, ms};

const DEADLINE: Duration = Duration::from_secs(1800);
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
const NAMESPACE: &str = "default";
const CLASSES: [&str; 2] = ["local-path", "local-ext4"];
const CLAIM_SIZE: &str = "1Gi";
const WRITE_CLAIM_SIZE: &str = "512Mi";
const WRITE_MIB: u32 = 256;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() {
    if !common::run_as_bench("storage") {
        return;
    }
    common::start_watchdog("storage", DEADLINE);
    let root = common::make_root("berth-storage-bench-", clear_root);
    let started = Instant::now();
    let mut report = Report::new(true);
    let result = run(&mut report, root.path());
    // After `berth down`: nothing of the bench's may stay mounted or attached.
    let (mounts, loops) = storage_leftovers(root.path());
    report.check(
        "cleanup",
        "mounts under the bench root after berth down (/proc/self/mountinfo)",
        mounts.len().to_string(),
        "0",
        mounts.is_empty(),
    );
    report.check(
        "cleanup",
        "loop devices backed by files under the bench root (losetup -a)",
        loops.len().to_string(),
        "0",
        loops.is_empty(),
    );
    report.print(&format!(
        "berth storage benchmark ({:.0} s)",
        started.elapsed().as_secs_f64()
    ));
    for left in mounts.iter().chain(&loops) {
        eprintln!("storage bench: left behind: {left}");
    }
    if let Err(error) = result {
        eprintln!("storage bench failed: {error:#}");
        common::kill_registered_and_exit(1);
    }
    let left = leftovers(root.path());
    if !left.is_empty() {
        eprintln!("storage bench: {} processes left behind", left.len());
        common::kill_registered_and_exit(1);
    }
    if !mounts.is_empty() || !loops.is_empty() {
        eprintln!("storage bench: mounts or loop devices left behind");
        common::kill_registered_and_exit(1);
    }
    common::unregister_root();
    detach_mounts(root.path());
    drop(root);
}

fn run(report: &mut Report, root: &Path) -> anyhow::Result<()> {
    common::machine(report, root, "CPU (nproc x model)", true);
    common::note_conditions(report);
    let phases = Phases::from_env(report);
    let data_dir = root.join("data");
    let bridge = format!("bst{}", std::process::id() % 100_000);
    // A pod network, service range and node ports of its own: the tests use 10.150-249.x and
    // node ports up to 32759, the services bench 10.238-239.x.
    let mut server = Server::spawn(
        &data_dir,
        &[
            "--pod-bridge",
            &bridge,
            "--cluster-cidr",
            "10.251.0.0/24",
            "--service-cidr",
            "10.252.0.0/24",
            "--service-node-port-range",
            "32760-32767",
        ],
        None,
    )?;
    server.wait_up()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("bench runtime")?;
    let result = runtime.block_on(measure(report, &phases, root, &data_dir));
    // The watch tasks end with the runtime, before berth does.
    drop(runtime);
    server.stop(Duration::from_secs(15));
    common::berth_down(&data_dir, "storage");
    result
}

async fn measure(
    report: &mut Report,
    phases: &Phases,
    root: &Path,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let client = client(data_dir).await?;
    let node = wait_node_ready(&client).await?;
    eprintln!("node {node} is Ready");
    let apis = Apis {
        claims: Api::namespaced(client.clone(), NAMESPACE),
        pods: Api::namespaced(client.clone(), NAMESPACE),
        volumes: Api::all(client.clone()),
        classes: Api::all(client.clone()),
    };
    for class in CLASSES {
        apis.classes
            .get(class)
            .await
            .with_context(|| format!("the built-in class {class}"))?;
    }
    if phases.wants("bind") {
        bind(report, &apis, data_dir).await?;
    }
    if phases.wants("pods") {
        pods(report, &apis, data_dir).await?;
    }
    if phases.wants("write") {
        write(report, &apis, root, data_dir).await?;
    }
    // Every volume is gone by now; the agent should have removed its staging directories.
    let staged = std::fs::read_dir(data_dir.join("csi"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|driver| count_entries(&driver.path()))
        .sum::<usize>();
    report.add(
        "cleanup",
        "CSI staging directories left under <data>/csi once every volume is gone",
        staged.to_string(),
    );
    Ok(())
}

struct Apis {
    claims: Api<PersistentVolumeClaim>,
    pods: Api<Pod>,
    volumes: Api<PersistentVolume>,
    classes: Api<StorageClass>,
}

// ---------------------------------------------------------------------------------------------
// The phases

/// Claim created → Bound, through an Immediate copy of each built-in class.
async fn bind(report: &mut Report, apis: &Apis, data_dir: &Path) -> anyhow::Result<()> {
    let n = knob("BERTH_BENCH_CLAIMS", 30);
    let mut bound = Watch::start(
        apis.claims.clone(),
        "bench=bind",
        |c: &PersistentVolumeClaim| {
            c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        },
    )
    .await?;
    for class in CLASSES {
        let immediate = format!("bench-immediate-{class}");
        apis.classes
            .create(&PostParams::default(), &immediate_class(&immediate, class)?)
            .await
            .with_context(|| format!("create the class {immediate}"))?;
        eprintln!("bind: {n} claims of {CLAIM_SIZE}, class {immediate}");
        let mut samples = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("bind-{class}-{i}");
            let started = Instant::now();
            apis.claims
                .create(
                    &PostParams::default(),
                    &claim(&name, &immediate, CLAIM_SIZE, "bind")?,
                )
                .await
                .with_context(|| format!("create the claim {name}"))?;
            let seen = bound.wait(&name).await?;
            samples.push(seen.saturating_duration_since(started));
            names.push(name);
        }
        let samples = Latencies::new(samples);
        report.add(
            "claim -> Bound",
            format!(
                "{class} (Immediate copy), {CLAIM_SIZE}: create -> watch shows Bound, p50 / p99 / max (x{n})"
            ),
            samples.p50_p99_max(),
        );
        let deleted = Instant::now();
        for name in &names {
            apis.claims
                .delete(name, &DeleteParams::default())
                .await
                .with_context(|| format!("delete the claim {name}"))?;
        }
        wait_storage_gone(apis, data_dir).await?;
        report.add(
            "claim -> Bound",
            format!("  delete the {n} claims -> every PV and its storage gone"),
            ms(deleted.elapsed()),
        );
        apis.classes
            .delete(&immediate, &DeleteParams::default())
            .await
            .with_context(|| format!("delete the class {immediate}"))?;
    }
    Ok(())
}

/// A pod with a fresh claim of each built-in class (WaitForFirstConsumer) → Running, and the
/// same pod without a volume.
async fn pods(report: &mut Report, apis: &Apis, data_dir: &Path) -> anyhow::Result<()> {
    let n = knob("BERTH_BENCH_PODS", 10);
    let mut running = Watch::start(apis.pods.clone(), "bench=pods", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await?;
    for class in [None, Some("local-path"), Some("local-ext4")] {
        let label = class.unwrap_or("no volume");
        eprintln!("pods: {n} pods, {label}");
        let mut samples = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("pod-{}-{i}", class.unwrap_or("none"));
            let started = Instant::now();
            if let Some(class) = class {
                apis.claims
                    .create(
                        &PostParams::default(),
                        &claim(&name, class, CLAIM_SIZE, "pods")?,
                    )
                    .await
                    .with_context(|| format!("create the claim {name}"))?;
            }
            let command = ["sleep", "3600"];
            apis.pods
                .create(
                    &PostParams::default(),
                    &pod(
                        &name,
                        class.map(|_| name.as_str()),
                        &command,
                        "Always",
                        "pods",
                    )?,
                )
                .await
                .with_context(|| format!("create the pod {name}"))?;
            let seen = running.wait(&name).await?;
            samples.push(seen.saturating_duration_since(started));
            names.push(name);
        }
        let samples = Latencies::new(samples);
        let metric = match class {
            None => format!(
                "baseline, no volume: create -> watch shows Running, p50 / p99 / max (x{n})"
            ),
            Some(class) => format!(
                "{class} (WaitForFirstConsumer), {CLAIM_SIZE}: claim + pod created -> pod Running, p50 / p99 / max (x{n})"
            ),
        };
        report.add(
            "pod with a fresh claim -> Running",
            metric,
            samples.p50_p99_max(),
        );
        for name in &names {
            apis.pods
                .delete(name, &DeleteParams::default())
                .await
                .with_context(|| format!("delete the pod {name}"))?;
            if class.is_some() {
                apis.claims
                    .delete(name, &DeleteParams::default())
                    .await
                    .with_context(|| format!("delete the claim {name}"))?;
            }
        }
        wait_pods_gone(apis, data_dir).await?;
        wait_storage_gone(apis, data_dir).await?;
    }
    Ok(())
}

/// Sequential write throughput in a pod on each class against the host.
async fn write(
    report: &mut Report,
    apis: &Apis,
    root: &Path,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let rounds = knob("BERTH_BENCH_WRITE_ROUNDS", 5);
    let targets = ["host", CLASSES[0], CLASSES[1]];
    let mut runs: HashMap<&str, Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        eprintln!("write: round {round}");
        // Each round starts with the next target, so none is always first after a pause.
        for i in 0..targets.len() {
            let target = targets[(round + i) % targets.len()];
            let rate = if target == "host" {
                write_on_host(&root.join("host-write")).await?
            } else {
                write_in_pod(apis, data_dir, target, round).await?
            };
            eprintln!("  {target}: {rate:.0} MB/s");
            runs.entry(target).or_default().push(rate);
        }
    }
    let median = |what: &str| {
        let mut r = runs[what].clone();
        r.sort_by(f64::total_cmp);
        r[(r.len() - 1) / 2]
    };
    let best = |what: &str| runs[what].iter().copied().fold(0f64, f64::max);
    let all = |what: &str| {
        runs[what]
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let what = format!("dd bs=1M count={WRITE_MIB} conv=fsync, MB/s, median / best of {rounds}");
    for target in targets {
        let place = if target == "host" {
            "on the host, a directory on the data dir's filesystem".to_string()
        } else {
            format!("in a pod, a fresh {target} claim of {WRITE_CLAIM_SIZE}")
        };
        report.add(
            "sequential write",
            format!("{what}: {place}"),
            format!(
                "{:.0} / {:.0} (runs in order: {})",
                median(target),
                best(target),
                all(target)
            ),
        );
        if target != "host" {
            report.add(
                "sequential write",
                format!("  {target} / host, median / best"),
                format!(
                    "{:.1} % / {:.1} %",
                    100.0 * median(target) / median("host").max(f64::MIN_POSITIVE),
                    100.0 * best(target) / best("host").max(f64::MIN_POSITIVE)
                ),
            );
        }
    }
    Ok(())
}

/// The dd on the host, into a fresh file in `dir` (removed after); MB/s.
async fn write_on_host(dir: &Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir).context("the host write dir")?;
    let output = tokio::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", dir.join("f").display()))
        .args(["bs=1M", &format!("count={WRITE_MIB}"), "conv=fsync"])
        .env("LC_ALL", "C")
        .output()
        .await
        .context("run dd on the host")?;
    std::fs::remove_dir_all(dir).context("remove the host write dir")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("dd on the host: {}: {stderr}", output.status);
    }
    dd_mb_per_s(&stderr)
}

/// The dd in a pod (restartPolicy Never) on a fresh claim of `class`, read from the pod's log
/// once it Succeeded; the pod and the claim are gone again before this returns. MB/s.
async fn write_in_pod(
    apis: &Apis,
    data_dir: &Path,
    class: &str,
    round: usize,
) -> anyhow::Result<f64> {
    let name = format!("write-{class}-{round}");
    let script = format!(
        "dd if=/dev/zero of=/data/f bs=1M count={WRITE_MIB} conv=fsync 2>&1; rm -f /data/f"
    );
    apis.claims
        .create(
            &PostParams::default(),
            &claim(&name, class, WRITE_CLAIM_SIZE, "write")?,
        )
        .await
        .with_context(|| format!("create the claim {name}"))?;
    apis.pods
        .create(
            &PostParams::default(),
            &pod(&name, Some(&name), &["sh", "-c", &script], "Never", "write")?,
        )
        .await
        .with_context(|| format!("create the pod {name}"))?;
    let log = succeeded_log(&apis.pods, &name).await?;
    let rate = dd_mb_per_s(&log).with_context(|| format!("pod {name}'s log: {log}"))?;
    apis.pods
        .delete(&name, &DeleteParams::default())
        .await
        .with_context(|| format!("delete the pod {name}"))?;
    apis.claims
        .delete(&name, &DeleteParams::default())
        .await
        .with_context(|| format!("delete the claim {name}"))?;
    wait_pods_gone(apis, data_dir).await?;
    wait_storage_gone(apis, data_dir).await?;
    Ok(rate)
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// An Immediate StorageClass `name` with the provisioner of the built-in class `of`.
fn immediate_class(name: &str, of: &str) -> anyhow::Result<StorageClass> {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "provisioner": format!("berth.dev/{of}"),
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))
    .context("the class manifest")
}

fn claim(
    name: &str,
    class: &str,
    size: &str,
    phase: &str,
) -> anyhow::Result<PersistentVolumeClaim> {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": phase}},
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }))
    .context("the claim manifest")
}

/// A host-program pod running `command`, with the claim `claim` at /data when there is one,
/// labelled `bench=<phase>`.
fn pod(
    name: &str,
    claim: Option<&str>,
    command: &[&str],
    restart: &str,
    phase: &str,
) -> anyhow::Result<Pod> {
    let mut container = serde_json::json!({
        "name": "main",
        "image": "berth.dev/host",
        "command": command,
        "env": [{"name": "LC_ALL", "value": "C"}],
    });
    let mut spec = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "restartPolicy": restart,
    });
    if let Some(claim) = claim {
        container["volumeMounts"] = serde_json::json!([{"name": "data", "mountPath": "/data"}]);
        spec["volumes"] =
            serde_json::json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    spec["containers"] = serde_json::json!([container]);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": phase}},
        "spec": spec,
    }))
    .context("the pod manifest")
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// A watch of the objects labelled `selector` that notes when each first satisfies a condition.
struct Watch {
    seen: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    early: HashMap<String, Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Starts the watch and returns once its initial list is done (so no event is missed).
    async fn start<K>(api: Api<K>, selector: &str, done: fn(&K) -> bool) -> anyhow::Result<Watch>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
    {
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let config = watcher::Config::default().labels(selector);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, config));
            let mut ready_tx = Some(ready_tx);
            let mut noted = std::collections::HashSet::new();
            while let Some(event) = stream.next().await {
                let object = match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready_tx.take() {
                            let _ = ready.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    Ok(_) | Err(_) => continue,
                };
                let at = Instant::now();
                if done(&object) && noted.insert(object.name_any()) {
                    let _ = tx.send((object.name_any(), at));
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .context("the watch did not start")?
            .context("the watch ended")?;
        Ok(Watch {
            seen,
            early: HashMap::new(),
            task,
        })
    }

    /// When the watch first showed `name` done.
    async fn wait(&mut self, name: &str) -> anyhow::Result<Instant> {
        if let Some(at) = self.early.remove(name) {
            return Ok(at);
        }
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .map_err(|_| anyhow::anyhow!("{name}: not done after {PHASE_TIMEOUT:?}"))?;
            let Some((seen, at)) = next else {
                bail!("the watch ended");
            };
            if seen == name {
                return Ok(at);
            }
            self.early.insert(seen, at);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for the pod to succeed; its log.
async fn succeeded_log(api: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let pod = api.get(name).await?;
        match pod.status.and_then(|s| s.phase).as_deref() {
            Some("Succeeded") => break,
            Some("Failed") => {
                let log = api
                    .logs(name, &LogParams::default())
                    .await
                    .unwrap_or_default();
                bail!("pod {name} failed: {log}");
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("pod {name} did not succeed in {PHASE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.logs(name, &LogParams::default())
        .await
        .with_context(|| format!("pod {name}'s log"))
}

/// Waits until no pod is left in the API and the agent has removed every pod directory.
async fn wait_pods_gone(apis: &Apis, data_dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let left = apis.pods.list(&ListParams::default()).await?.items.len();
        let dirs = count_entries(&data_dir.join("pods"));
        if left == 0 && dirs == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} pods and {dirs} pod dirs left after the delete");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no claim and no PV is left in the API and no volume under the data dir.
async fn wait_storage_gone(apis: &Apis, data_dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let claims = apis.claims.list(&ListParams::default()).await?.items.len();
        let volumes = apis.volumes.list(&ListParams::default()).await?.items.len();
        let stored = CLASSES
            .iter()
            .map(|c| count_entries(&data_dir.join("storage").join(c)))
            .sum::<usize>();
        if claims == 0 && volumes == 0 && stored == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{claims} claims, {volumes} PVs and {stored} volumes on disk left after the delete"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Figures and leftovers

/// MB/s (10^6 bytes) from dd's summary, "268435456 bytes (268 MB, 256 MiB) copied, 0.5 s, …".
fn dd_mb_per_s(output: &str) -> anyhow::Result<f64> {
    let line = output
        .lines()
        .find(|l| l.contains(" bytes") && l.contains(" copied"))
        .context("no dd summary")?;
    let bytes: f64 = line
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .context("dd's byte count")?;
    let seconds: f64 = line
        .split(", ")
        .find_map(|part| part.strip_suffix(" s")?.trim().parse().ok())
        .context("dd's seconds")?;
    if bytes < f64::from(WRITE_MIB) * 1024.0 * 1024.0 || seconds <= 0.0 {
        bail!("dd wrote {bytes} bytes in {seconds} s");
    }
    Ok(bytes / 1e6 / seconds)
}

/// Mount points under `root` (/proc/self/mountinfo) and loop devices whose backing file is
/// under it (`losetup -a`).
fn storage_leftovers(root: &Path) -> (Vec<String>, Vec<String>) {
    let root_text = root.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = mountinfo
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|p| p.starts_with(&root_text))
        })
        .map(|l| format!("mounted: {l}"))
        .collect();
    let loops = match std::process::Command::new("losetup").arg("-a").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&root_text))
            .map(|l| format!("attached: {l}"))
            .collect(),
        Err(error) => vec![format!("losetup -a failed: {error}")],
    };
    (mounts, loops)
}
