//! The deployments benchmark (issue 4): how long a Deployment takes to go from 0 to N ready
//! replicas, and how long a rolling update of those N replicas takes, on the real `berth up`
//! (API server, scheduler, controllers and node agent; release mode under `cargo bench`), with
//! the pod start floor — the same process started bare by `unshare` — beside it.
//!
//! Run it with `cargo bench -p berth --bench deployments`. Knobs (environment variables):
//! `BERTH_BENCH_DIR` (where the temporary data dir goes), `BERTH_BENCH_REPLICAS` (default 100),
//! `BERTH_BENCH_BINARY` (a different `berth` to measure).
//!
//! - `floor`: `unshare --fork --pid --mount --uts --ipc --mount-proc busybox echo`, spawn →
//!   first byte on its stdout (as in the pods bench).
//! - `scale-up`: a Deployment of N replicas (`sleep`, host-program image, no probes) created
//!   with kube-rs; timed from just before the create to the first Deployment status showing N
//!   ready and N available replicas (one watch on the Deployment).
//! - `rolling update`: a template change (as `kubectl rollout restart` makes) with the default
//!   strategy (maxSurge 25 %, maxUnavailable 25 %); timed from the patch to the status
//!   `kubectl rollout status` waits for: the new generation observed, N updated, N in total
//!   (old pods gone from the count), N available. The fewest ready replicas seen during the
//!   rollout is reported as a check of maxUnavailable.
//!
//! This is a benchmark, not a test: it reports, it does not fail on a missed figure.

#[allow(dead_code)] // This bench uses part of the shared harness.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use common::pods::{clear_root, client, detach_mounts, floor, leftovers, wait_node_ready};
use common::{Report, Server, ms};

const DEADLINE: Duration = Duration::from_secs(900);
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
const NAME: &str = "bench";
const NAMESPACE: &str = "default";
const FLOOR_RUNS: usize = 200;

fn replicas() -> i32 {
    std::env::var("BERTH_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
}

fn main() {
    if !common::run_as_bench("deployments") {
        return;
    }
    common::start_watchdog("deployments", DEADLINE);
    let root = common::make_root("berth-deployments-bench-", clear_root);
    let started = Instant::now();
    let mut report = Report::new(true);
    let n = replicas();
    let result = run(&mut report, n, root.path());
    report.print(&format!(
        "berth deployments benchmark ({n} replicas, {:.0} s)",
        started.elapsed().as_secs_f64()
    ));
    let left = leftovers(root.path());
    if let Err(error) = result {
        eprintln!("deployments bench failed: {error:#}");
        common::kill_registered_and_exit(1);
    }
    if !left.is_empty() {
        eprintln!("deployments bench: {} processes left behind", left.len());
        common::kill_registered_and_exit(1);
    }
    common::unregister_root();
    detach_mounts(root.path());
    drop(root);
}

fn run(report: &mut Report, n: i32, root: &Path) -> anyhow::Result<()> {
    common::machine(report, root, "CPU (nproc x model)", false);
    common::note_conditions(report);

    eprintln!("floor: unshare x {FLOOR_RUNS}");
    let (floor, _) = floor(FLOOR_RUNS)?;
    report.add(
        "floor",
        "unshare --fork --pid --mount --uts --ipc --mount-proc busybox echo: spawn -> first byte on the pipe",
        floor.p50_p99_max(),
    );
    let floor_total = floor.median() * n as u32;
    report.add(
        "floor",
        format!("  {n} such starts one after another (p50 x {n})"),
        ms(floor_total),
    );

    let data_dir = root.join("data");
    let mut server = Server::spawn(&data_dir, &[], None)?;
    server.wait_up()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("bench runtime")?;
    let result = runtime.block_on(async {
        let client = client(&data_dir).await?;
        let node = wait_node_ready(&client).await?;
        eprintln!("node {node} is Ready");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);

        eprintln!("scale-up: 0 -> {n} ready replicas");
        let created = Instant::now();
        deployments
            .create(&PostParams::default(), &deployment(n)?)
            .await
            .context("create the deployment")?;
        let (_, _) = wait_for(&deployments, |d| {
            let s = d.status.clone().unwrap_or_default();
            s.ready_replicas == Some(n) && s.available_replicas == Some(n)
        })
        .await?;
        let scale_up = created.elapsed();
        report.add(
            "scale-up",
            format!("create -> {n} ready and available replicas"),
            ms(scale_up),
        );
        report.add(
            "scale-up",
            "  pods started per second",
            format!("{:.1}", f64::from(n) / scale_up.as_secs_f64()),
        );
        report.add(
            "scale-up",
            "  against the floor (scale-up / floor p50 x replicas)",
            format!("{:.1}x", scale_up.as_secs_f64() / floor_total.as_secs_f64()),
        );

        eprintln!("rolling update of {n} replicas");
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "bench"}}}}});
        let patched = Instant::now();
        let generation = deployments
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("patch the template")?
            .metadata
            .generation
            .unwrap_or(0);
        let (_, fewest_ready) = wait_for(&deployments, |d| {
            let s = d.status.clone().unwrap_or_default();
            s.observed_generation >= Some(generation)
                && s.updated_replicas == Some(n)
                && s.replicas == Some(n)
                && s.available_replicas == Some(n)
        })
        .await?;
        let rollout = patched.elapsed();
        report.add(
            "rolling update",
            format!("template change -> {n} updated, available, old ones gone (25 % / 25 %)"),
            ms(rollout),
        );
        report.add(
            "rolling update",
            "  fewest ready replicas seen during it (maxUnavailable allows n - 25 %)",
            format!("{fewest_ready} (floor of the rule: {})", n - n / 4),
        );
        report.add(
            "rolling update",
            "  pods replaced per second",
            format!("{:.1}", f64::from(n) / rollout.as_secs_f64()),
        );

        eprintln!("deleting");
        deployments
            .delete(NAME, &DeleteParams::background())
            .await
            .context("delete the deployment")?;
        wait_pods_gone(&client, &data_dir).await
    });
    server.stop(Duration::from_secs(15));
    result
}

fn deployment(replicas: i32) -> anyhow::Result<Deployment> {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": NAME},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main",
                        "image": "berth.dev/host",
                        "command": ["sleep", "3600"],
                    }],
                },
            },
        },
    }))
    .context("the deployment manifest")
}

/// Watches the Deployment until `done` holds; returns the object and the fewest ready
/// replicas any status on the way showed.
async fn wait_for(
    api: &Api<Deployment>,
    done: impl Fn(&Deployment) -> bool,
) -> anyhow::Result<(Deployment, i32)> {
    let config = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), config));
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut fewest = i32::MAX;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("not done after {} s", PHASE_TIMEOUT.as_secs()))?;
        let Some(event) = event else {
            bail!("the deployment watch ended");
        };
        let deployment = match event {
            Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => d,
            Ok(_) | Err(_) => continue,
        };
        let ready = deployment
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        fewest = fewest.min(ready);
        if done(&deployment) {
            return Ok((deployment, fewest));
        }
    }
}

/// Waits until no pod is left in the API and the agent has removed every pod directory.
async fn wait_pods_gone(client: &kube::Client, data_dir: &Path) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let left = pods.list(&ListParams::default()).await?.items.len();
        let dirs = std::fs::read_dir(data_dir.join("pods"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left == 0 && dirs == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} pods and {dirs} pod dirs left after the delete");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
