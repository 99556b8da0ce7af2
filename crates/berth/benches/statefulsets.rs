//! The StatefulSet benchmark (issue 7): how long a Parallel StatefulSet of N replicas with a
//! volumeClaimTemplate takes to go from 0 to N Ready, how long an OrderedReady one of 10
//! takes, and how long a rolling update of each takes, on the real `berth up` (API server,
//! scheduler, controllers, provisioner and node agent; release mode under `cargo bench`).
//!
//! Run it with `cargo bench -p berth --bench statefulsets`. Knobs (environment variables):
//! `BERTH_BENCH_DIR` (where the temporary data dir goes), `BERTH_BENCH_REPLICAS` (the Parallel
//! set's replicas, default 100), `BERTH_BENCH_ORDERED` (the OrderedReady set's, default 10),
//! `BERTH_BENCH_ONLY` (a comma-separated subset of `parallel,ordered,baseline`),
//! `BERTH_BENCH_BINARY` (a different `berth` to measure).
//!
//! Every pod is `sleep 3600` from the host-program image (`berth.dev/host`), no probes,
//! terminationGracePeriodSeconds 1; each set has a headless Service and a volumeClaimTemplate
//! `data` of 1 GiB from the default class (local-path, WaitForFirstConsumer) mounted at /data.
//!
//! - `parallel`: podManagementPolicy Parallel, N replicas, created with kube-rs; timed from
//!   just before the create to the first StatefulSet status (one watch on the set) showing N
//!   ready and N available replicas. Then a template change (the annotation `kubectl rollout
//!   restart` sets), RollingUpdate with the default maxUnavailable 1, timed to the status
//!   `kubectl rollout status` waits for: the new generation observed, N updated, N ready and
//!   the current revision equal to the update revision.
//! - `ordered`: the same with OrderedReady (the default) and `BERTH_BENCH_ORDERED` replicas.
//! - `baseline`: the Parallel set of N without a volumeClaimTemplate, scale-up only: what the
//!   claims cost.
//!
//! Beside the totals, a watch on every pod and claim notes when each first showed each stage
//! (pod: seen, scheduled, Ready, terminating, gone; claim: seen, selected-node, Bound), so the
//! report says where the time goes. Between phases the set is deleted, and its claims (kept by
//! the default retention policy) after it, until no PV or volume is left.
//!
//! At the end berth is stopped and `berth down` run; nothing may be left mounted under the
//! bench's root.
//!
//! This is a benchmark, not a test: it reports, it does not fail on a missed figure.

#[allow(dead_code)] // This bench uses part of the shared harness.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use common::pods::{clear_root, client, detach_mounts, leftovers, wait_node_ready};
use common::{Latencies, Phases, Report, Server, ms};

const DEADLINE: Duration = Duration::from_secs(1800);
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
const NAMESPACE: &str = "default";
const SERVICE: &str = "bench";
const CLAIM_SIZE: &str = "1Gi";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

fn knob(name: &str, default: i32) -> i32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() {
    if !common::run_as_bench("statefulsets") {
        return;
    }
    common::start_watchdog("statefulsets", DEADLINE);
    let root = common::make_root("berth-statefulsets-bench-", clear_root);
    let started = Instant::now();
    let mut report = Report::new(true);
    let result = run(&mut report, root.path());
    // After `berth down`: nothing of the bench's may stay mounted.
    let mounts = mounts_under(root.path());
    report.check(
        "cleanup",
        "mounts under the bench root after berth down (/proc/self/mountinfo)",
        mounts.len().to_string(),
        "0",
        mounts.is_empty(),
    );
    report.print(&format!(
        "berth statefulsets benchmark ({:.0} s)",
        started.elapsed().as_secs_f64()
    ));
    for mount in &mounts {
        eprintln!("statefulsets bench: left mounted: {mount}");
    }
    if let Err(error) = result {
        eprintln!("statefulsets bench failed: {error:#}");
        common::kill_registered_and_exit(1);
    }
    let left = leftovers(root.path());
    if !left.is_empty() {
        eprintln!("statefulsets bench: {} processes left behind", left.len());
        common::kill_registered_and_exit(1);
    }
    if !mounts.is_empty() {
        common::kill_registered_and_exit(1);
    }
    common::unregister_root();
    detach_mounts(root.path());
    drop(root);
}

fn run(report: &mut Report, root: &Path) -> anyhow::Result<()> {
    common::machine(report, root, "CPU (nproc x model)", false);
    common::note_conditions(report);
    let phases = Phases::from_env(report);
    let data_dir = root.join("data");
    let bridge = format!("bss{}", std::process::id() % 100_000);
    // A pod network, service range and node ports of its own: the tests use 10.150-249.x and
    // node ports 30000-32759, the services bench 10.238-239.x, the storage bench 10.251-252.x
    // and 32760-32767. 100 pods and the agent's default of 110 leave no room, so more.
    let mut server = Server::spawn(
        &data_dir,
        &[
            "--pod-bridge",
            &bridge,
            "--cluster-cidr",
            "10.253.0.0/24",
            "--service-cidr",
            "10.254.0.0/24",
            "--service-node-port-range",
            "29990-29999",
            "--max-pods",
            "250",
        ],
        None,
    )?;
    server.wait_up()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("bench runtime")?;
    let result = runtime.block_on(measure(report, &phases, &data_dir));
    // The watch tasks end with the runtime, before berth does.
    drop(runtime);
    server.stop(Duration::from_secs(15));
    common::berth_down(&data_dir, "statefulsets");
    result
}

struct Apis {
    sets: Api<StatefulSet>,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    volumes: Api<PersistentVolume>,
}

async fn measure(report: &mut Report, phases: &Phases, data_dir: &Path) -> anyhow::Result<()> {
    let client = client(data_dir).await?;
    let node = wait_node_ready(&client).await?;
    eprintln!("node {node} is Ready");
    let apis = Apis {
        sets: Api::namespaced(client.clone(), NAMESPACE),
        pods: Api::namespaced(client.clone(), NAMESPACE),
        claims: Api::namespaced(client.clone(), NAMESPACE),
        volumes: Api::all(client.clone()),
    };
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    services
        .create(&PostParams::default(), &headless_service()?)
        .await
        .context("create the headless Service")?;
    let timeline = Timeline::start(&apis).await?;
    let parallel = knob("BERTH_BENCH_REPLICAS", 100);
    let ordered = knob("BERTH_BENCH_ORDERED", 10);
    if phases.wants("parallel") {
        let case = Case {
            section: "Parallel",
            name: "par",
            replicas: parallel,
            parallel: true,
            volume: true,
        };
        scale_up_and_update(report, &apis, &timeline, &case, data_dir).await?;
    }
    if phases.wants("ordered") {
        let case = Case {
            section: "OrderedReady",
            name: "ord",
            replicas: ordered,
            parallel: false,
            volume: true,
        };
        scale_up_and_update(report, &apis, &timeline, &case, data_dir).await?;
    }
    if phases.wants("baseline") {
        let case = Case {
            section: "Parallel, no claims",
            name: "novol",
            replicas: parallel,
            parallel: true,
            volume: false,
        };
        scale_up(report, &apis, &timeline, &case).await?;
        delete_set(&apis, &case, data_dir).await?;
    }
    Ok(())
}

/// One StatefulSet to measure.
struct Case {
    section: &'static str,
    name: &'static str,
    replicas: i32,
    parallel: bool,
    volume: bool,
}

impl Case {
    fn policy(&self) -> &'static str {
        if self.parallel {
            "Parallel"
        } else {
            "OrderedReady"
        }
    }
}

async fn scale_up_and_update(
    report: &mut Report,
    apis: &Apis,
    timeline: &Timeline,
    case: &Case,
    data_dir: &Path,
) -> anyhow::Result<()> {
    scale_up(report, apis, timeline, case).await?;
    rolling_update(report, apis, timeline, case).await?;
    delete_set(apis, case, data_dir).await
}

// ---------------------------------------------------------------------------------------------
// The phases

/// 0 → N Ready, with where the time went.
async fn scale_up(
    report: &mut Report,
    apis: &Apis,
    timeline: &Timeline,
    case: &Case,
) -> anyhow::Result<()> {
    let (n, section) = (case.replicas, case.section);
    eprintln!("{section}: 0 -> {n} ready replicas");
    let created = Instant::now();
    apis.sets
        .create(&PostParams::default(), &stateful_set(case)?)
        .await
        .with_context(|| format!("create the StatefulSet {}", case.name))?;
    wait_for(&apis.sets, case.name, |s| {
        let status = s.status.clone().unwrap_or_default();
        status.replicas == n
            && status.ready_replicas == Some(n)
            && status.available_replicas == Some(n)
    })
    .await?;
    let done = Instant::now();
    let total = done - created;
    let volume = if case.volume {
        "a local-path claim each"
    } else {
        "no claims"
    };
    report.add(
        section,
        format!(
            "create -> status shows {n} ready and available ({}, {volume})",
            case.policy()
        ),
        ms(total),
    );
    report.add(
        section,
        "  pods Ready per second",
        format!("{:.1}", f64::from(n) / total.as_secs_f64()),
    );

    let t = timeline.snapshot();
    let pods: Vec<&PodTimes> = t
        .pods
        .values()
        .filter(|p| p.name.starts_with(&format!("{}-", case.name)))
        .filter(|p| p.seen.is_some_and(|s| s >= created))
        .collect();
    let seen: Vec<Instant> = pods.iter().filter_map(|p| p.seen).collect();
    if let (Some(first), Some(last)) = (seen.iter().min(), seen.iter().max()) {
        report.add(
            section,
            format!("  create -> first / last of the {} pods seen", seen.len()),
            format!("{} / {}", ms(*first - created), ms(*last - created)),
        );
    }
    let span = |from: fn(&PodTimes) -> Option<Instant>, to: fn(&PodTimes) -> Option<Instant>| {
        Latencies::new(
            pods.iter()
                .filter_map(|p| Some(to(p)?.saturating_duration_since(from(p)?)))
                .collect(),
        )
    };
    if case.volume {
        let claims: HashMap<&str, &ClaimTimes> = t
            .claims
            .values()
            .filter(|c| c.seen.is_some_and(|s| s >= created))
            .map(|c| (c.name.as_str(), c))
            .collect();
        let mut to_selected = Vec::new();
        let mut provision = Vec::new();
        let mut bound_to_scheduled = Vec::new();
        for pod in &pods {
            let Some(claim) = claims.get(format!("data-{}", pod.name).as_str()) else {
                continue;
            };
            if let (Some(seen), Some(selected)) = (pod.seen, claim.selected) {
                to_selected.push(selected.saturating_duration_since(seen));
            }
            if let (Some(selected), Some(bound)) = (claim.selected, claim.bound) {
                provision.push(bound.saturating_duration_since(selected));
            }
            if let (Some(bound), Some(scheduled)) = (claim.bound, pod.scheduled) {
                bound_to_scheduled.push(scheduled.saturating_duration_since(bound));
            }
        }
        let (to_selected, provision, bound_to_scheduled) = (
            Latencies::new(to_selected),
            Latencies::new(provision),
            Latencies::new(bound_to_scheduled),
        );
        report.add(
            section,
            format!(
                "  pod seen -> its claim has selected-node (scheduler's pick), p50 / p99 / max (x{})",
                to_selected.count()
            ),
            to_selected.p50_p99_max(),
        );
        report.add(
            section,
            "  selected-node -> claim Bound (provisioning, PV, binding), p50 / p99 / max",
            provision.p50_p99_max(),
        );
        report.add(
            section,
            "  claim Bound -> pod scheduled (nodeName), p50 / p99 / max",
            bound_to_scheduled.p50_p99_max(),
        );
    }
    let scheduled = span(|p| p.seen, |p| p.scheduled);
    report.add(
        section,
        format!(
            "  pod seen -> scheduled (nodeName), p50 / p99 / max (x{})",
            scheduled.count()
        ),
        scheduled.p50_p99_max(),
    );
    let started = span(|p| p.scheduled, |p| p.ready);
    report.add(
        section,
        "  pod scheduled -> Running and Ready (agent: mounts, start, status), p50 / p99 / max",
        started.p50_p99_max(),
    );
    if let Some(last_ready) = pods.iter().filter_map(|p| p.ready).max() {
        report.add(
            section,
            "  last pod Ready -> status shows all Ready",
            ms(done.saturating_duration_since(last_ready)),
        );
    }
    Ok(())
}

/// A template change → every pod replaced and Ready, with where each step's time went.
async fn rolling_update(
    report: &mut Report,
    apis: &Apis,
    timeline: &Timeline,
    case: &Case,
) -> anyhow::Result<()> {
    let (n, section) = (case.replicas, case.section);
    eprintln!("{section}: rolling update of {n} replicas");
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "bench"}}}}});
    let patched = Instant::now();
    let generation = apis
        .sets
        .patch(case.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("patch the template")?
        .metadata
        .generation
        .unwrap_or(0);
    let fewest_ready = wait_for(&apis.sets, case.name, |s| {
        let status = s.status.clone().unwrap_or_default();
        status.observed_generation >= Some(generation)
            && status.replicas == n
            && status.updated_replicas == Some(n)
            && status.ready_replicas == Some(n)
            && status.update_revision.is_some()
            && status.current_revision == status.update_revision
    })
    .await?;
    let total = patched.elapsed();
    report.add(
        section,
        format!("template change -> {n} updated and Ready (RollingUpdate, maxUnavailable 1)"),
        ms(total),
    );
    report.add(
        section,
        "  per pod replaced (total / replicas)",
        ms(total / n as u32),
    );
    report.add(
        section,
        "  fewest ready replicas in the status during it (maxUnavailable 1)",
        fewest_ready.to_string(),
    );

    // Each step: the old pod marked for deletion -> gone -> its replacement seen -> Ready.
    let t = timeline.snapshot();
    let prefix = format!("{}-", case.name);
    let mut by_name: HashMap<&str, Vec<&PodTimes>> = HashMap::new();
    for pod in t.pods.values().filter(|p| p.name.starts_with(&prefix)) {
        by_name.entry(pod.name.as_str()).or_default().push(pod);
    }
    let (mut terminate, mut recreate, mut start, mut step) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for pods in by_name.values() {
        let old = pods
            .iter()
            .find(|p| p.terminating.is_some_and(|at| at >= patched));
        let new = pods.iter().find(|p| p.seen.is_some_and(|at| at >= patched));
        let (Some(old), Some(new)) = (old, new) else {
            continue;
        };
        let (Some(marked), Some(gone), Some(seen), Some(ready)) =
            (old.terminating, old.gone, new.seen, new.ready)
        else {
            continue;
        };
        terminate.push(gone.saturating_duration_since(marked));
        recreate.push(seen.saturating_duration_since(gone));
        start.push(ready.saturating_duration_since(seen));
        step.push(ready.saturating_duration_since(marked));
    }
    let step = Latencies::new(step);
    report.add(
        section,
        format!(
            "  step: old pod marked for deletion -> replacement Ready, p50 / p99 / max (x{})",
            step.count()
        ),
        step.p50_p99_max(),
    );
    report.add(
        section,
        "    old pod marked -> gone (SIGTERM, grace 1 s, agent's final status)",
        Latencies::new(terminate).p50_p99_max(),
    );
    report.add(
        section,
        "    old pod gone -> replacement seen (controller)",
        Latencies::new(recreate).p50_p99_max(),
    );
    report.add(
        section,
        "    replacement seen -> Running and Ready (schedule, mount, start)",
        Latencies::new(start).p50_p99_max(),
    );
    Ok(())
}

/// Deletes the set, then its claims, and waits until no pod, claim, PV or volume is left.
async fn delete_set(apis: &Apis, case: &Case, data_dir: &Path) -> anyhow::Result<()> {
    eprintln!("{}: deleting", case.section);
    apis.sets
        .delete(case.name, &DeleteParams::background())
        .await
        .with_context(|| format!("delete the StatefulSet {}", case.name))?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let pods = apis.pods.list(&ListParams::default()).await?.items.len();
        let dirs = count_entries(&data_dir.join("pods"));
        if pods == 0 && dirs == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{pods} pods and {dirs} pod dirs left after the delete");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for claim in apis.claims.list(&ListParams::default()).await?.items {
        apis.claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .with_context(|| format!("delete the claim {}", claim.name_any()))?;
    }
    loop {
        let claims = apis.claims.list(&ListParams::default()).await?.items.len();
        let volumes = apis.volumes.list(&ListParams::default()).await?.items.len();
        let stored = count_entries(&data_dir.join("storage").join("local-path"));
        if claims == 0 && volumes == 0 && stored == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{claims} claims, {volumes} PVs and {stored} volumes left after the delete");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Watches the set until `done` holds; returns the fewest ready replicas any status showed.
async fn wait_for(
    api: &Api<StatefulSet>,
    name: &str,
    done: impl Fn(&StatefulSet) -> bool,
) -> anyhow::Result<i32> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), config));
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut fewest = i32::MAX;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("not done after {} s", PHASE_TIMEOUT.as_secs()))?;
        let Some(event) = event else {
            bail!("the StatefulSet watch ended");
        };
        let set = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
            Ok(_) | Err(_) => continue,
        };
        let ready = set
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        fewest = fewest.min(ready);
        if done(&set) {
            return Ok(fewest);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The timeline: when each pod and claim first showed each stage.

#[derive(Default, Clone)]
struct PodTimes {
    name: String,
    seen: Option<Instant>,
    scheduled: Option<Instant>,
    ready: Option<Instant>,
    terminating: Option<Instant>,
    gone: Option<Instant>,
}

#[derive(Default, Clone)]
struct ClaimTimes {
    name: String,
    seen: Option<Instant>,
    selected: Option<Instant>,
    bound: Option<Instant>,
}

/// By uid.
#[derive(Default, Clone)]
struct Times {
    pods: HashMap<String, PodTimes>,
    claims: HashMap<String, ClaimTimes>,
}

struct Timeline {
    times: Arc<Mutex<Times>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn first(slot: &mut Option<Instant>, now: Instant, holds: bool) {
    if holds && slot.is_none() {
        *slot = Some(now);
    }
}

impl Timeline {
    /// Starts the watches of every pod and claim; returns once both have listed.
    async fn start(apis: &Apis) -> anyhow::Result<Timeline> {
        let times = Arc::new(Mutex::new(Times::default()));
        let (pods_ready, pods_listed) = tokio::sync::oneshot::channel();
        let pods = {
            let (api, times) = (apis.pods.clone(), times.clone());
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
                let mut ready = Some(pods_ready);
                while let Some(event) = stream.next().await {
                    let now = Instant::now();
                    let (pod, deleted) = match event {
                        Ok(watcher::Event::InitDone) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                            continue;
                        }
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                        Ok(watcher::Event::Delete(p)) => (p, true),
                        Ok(watcher::Event::Init) | Err(_) => continue,
                    };
                    let Some(uid) = pod.metadata.uid.clone() else {
                        continue;
                    };
                    let mut times = times.lock().unwrap_or_else(|e| e.into_inner());
                    let t = times.pods.entry(uid).or_default();
                    t.name = pod.name_any();
                    first(&mut t.seen, now, true);
                    let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.as_ref());
                    first(&mut t.scheduled, now, spec_node.is_some());
                    first(&mut t.ready, now, running_and_ready(&pod));
                    first(
                        &mut t.terminating,
                        now,
                        pod.metadata.deletion_timestamp.is_some(),
                    );
                    first(&mut t.gone, now, deleted);
                }
            })
        };
        let (claims_ready, claims_listed) = tokio::sync::oneshot::channel();
        let claims = {
            let (api, times) = (apis.claims.clone(), times.clone());
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
                let mut ready = Some(claims_ready);
                while let Some(event) = stream.next().await {
                    let now = Instant::now();
                    let claim = match event {
                        Ok(watcher::Event::InitDone) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                            continue;
                        }
                        Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
                        Ok(_) | Err(_) => continue,
                    };
                    let Some(uid) = claim.metadata.uid.clone() else {
                        continue;
                    };
                    let mut times = times.lock().unwrap_or_else(|e| e.into_inner());
                    let t = times.claims.entry(uid).or_default();
                    t.name = claim.name_any();
                    first(&mut t.seen, now, true);
                    first(
                        &mut t.selected,
                        now,
                        claim.annotations().contains_key(SELECTED_NODE),
                    );
                    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
                    first(&mut t.bound, now, phase == Some("Bound"));
                }
            })
        };
        for listed in [pods_listed, claims_listed] {
            tokio::time::timeout(Duration::from_secs(30), listed)
                .await
                .context("a timeline watch did not start")?
                .context("a timeline watch ended")?;
        }
        Ok(Timeline {
            times,
            tasks: vec![pods, claims],
        })
    }

    fn snapshot(&self) -> Times {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

// ---------------------------------------------------------------------------------------------
// Manifests

fn headless_service() -> anyhow::Result<Service> {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": SERVICE},
        "spec": {
            "clusterIP": "None",
            "selector": {"bench": "statefulsets"},
            "ports": [{"name": "none", "port": 80}],
        },
    }))
    .context("the Service manifest")
}

fn stateful_set(case: &Case) -> anyhow::Result<StatefulSet> {
    let mut container = serde_json::json!({
        "name": "main",
        "image": "berth.dev/host",
        "command": ["sleep", "3600"],
    });
    let mut spec = serde_json::json!({
        "serviceName": SERVICE,
        "replicas": case.replicas,
        "podManagementPolicy": case.policy(),
        "selector": {"matchLabels": {"app": case.name}},
        "template": {
            "metadata": {"labels": {"app": case.name, "bench": "statefulsets"}},
            "spec": {"terminationGracePeriodSeconds": 1},
        },
    });
    if case.volume {
        container["volumeMounts"] = serde_json::json!([{"name": "data", "mountPath": "/data"}]);
        // No storageClassName: the default class (local-path, WaitForFirstConsumer).
        spec["volumeClaimTemplates"] = serde_json::json!([{
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": CLAIM_SIZE}},
            },
        }]);
    }
    spec["template"]["spec"]["containers"] = serde_json::json!([container]);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": case.name},
        "spec": spec,
    }))
    .context("the StatefulSet manifest")
}

/// Mount points under `root` (/proc/self/mountinfo).
fn mounts_under(root: &Path) -> Vec<String> {
    let root_text = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|p| p.starts_with(&root_text))
        })
        .map(str::to_string)
        .collect()
}
