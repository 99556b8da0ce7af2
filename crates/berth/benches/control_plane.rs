//! The control plane's benchmark: starts the real `berth up` (the binary Cargo built for this
//! bench, so release mode under `cargo bench`) on a temporary data dir on the same disk as the
//! target dir, drives it over HTTPS with a bearer token, and prints one table of results beside
//! the targets.
//!
//! Run it with `cargo bench -p berth --bench control_plane`. Knobs (environment variables):
//! `BERTH_BENCH_DIR` (where the temporary data dirs go; default: Cargo's target tmp dir) and
//! `BERTH_BENCH_QUICK=1` (smaller counts, for checking the bench itself), `BERTH_BENCH_ONLY`
//! (a comma-separated subset of `floor,cold,creates,pods,watch`) and `BERTH_BENCH_BINARY` (a
//! different `berth` to measure, e.g. an older build).
//!
//! The client is the lean one in `common/api_client.rs` (hyper's HTTP/1.1 client connection
//! over tokio-rustls, one keep-alive connection per simulated client), so the client's own CPU
//! cost, which shares the machine with the server, stays small. One row repeats the concurrent
//! creates through kube-rs for comparison.
//!
//! This is a benchmark, not a test: nothing here fails on a missed target; it says so.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use common::api_client::{
    Call, Conn, Load, REQUEST_TIMEOUT, Target, configmap, connect_all, create_namespace, gather,
    load, post_configmap, thousands,
};
use common::{Latencies, Phases, Report, Server, ms};

// ---------------------------------------------------------------------------------------------
// Sizes and targets

struct Sizes {
    serial_creates: usize,
    concurrent_creates: usize,
    concurrent_clients: usize,
    kube_rs_creates: usize,
    dry_run_creates: usize,
    pods: usize,
    pod_gets: usize,
    list_runs: usize,
    watchers: usize,
    watch_events: usize,
    watch_rate: u64,
    cold_runs: usize,
    populated_cold_runs: usize,
    floor_single: usize,
    floor_batched: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            serial_creates: 2_000,
            concurrent_creates: 10_000,
            concurrent_clients: 16,
            kube_rs_creates: 4_000,
            dry_run_creates: 5_000,
            pods: 10_000,
            pod_gets: 2_000,
            list_runs: 5,
            watchers: 100,
            watch_events: 1_000,
            watch_rate: 100,
            cold_runs: 10,
            populated_cold_runs: 5,
            floor_single: 3_000,
            floor_batched: 20_000,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            serial_creates: 200,
            concurrent_creates: 1_000,
            concurrent_clients: 16,
            kube_rs_creates: 400,
            dry_run_creates: 500,
            pods: 1_000,
            pod_gets: 200,
            list_runs: 2,
            watchers: 20,
            watch_events: 100,
            watch_rate: 100,
            cold_runs: 3,
            populated_cold_runs: 2,
            floor_single: 300,
            floor_batched: 2_000,
        }
    }
}

const TARGET_CREATES_PER_SEC: f64 = 5_000.0;
const TARGET_P99: Duration = Duration::from_millis(10);
const TARGET_COLD_START: Duration = Duration::from_millis(150);
const TARGET_IDLE_RSS_KIB: u64 = 30 * 1024;

/// The whole bench is killed (servers and temp dirs cleaned up) if it runs longer than this.
const DEADLINE: Duration = Duration::from_secs(600);

/// How long a stopped server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The server process: what only this bench reads of it

impl Server {
    fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("read /proc/PID/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
        };
        Ok((
            field("VmRSS:").context("no VmRSS")?,
            field("VmHWM:").context("no VmHWM")?,
        ))
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// The disk

fn is_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::statfs(path)
        .map(|s| {
            let t = s.f_type;
            t == TMPFS_MAGIC || t == RAMFS_MAGIC
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// 6. The floor: raw SQLite on the same disk.

/// Inserts `rows` rows, `per_commit` per transaction; returns rows/s and the commit latencies
/// (BEGIN to COMMIT returned).
fn sqlite_floor(
    dir: &Path,
    rows: usize,
    per_commit: usize,
    value: &[u8],
) -> anyhow::Result<(f64, Latencies)> {
    let path = dir.join(format!("floor-{per_commit}.db"));
    let conn = rusqlite::Connection::open(&path).context("open floor db")?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .context("WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("floor db is not in WAL mode: {mode}");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .context("synchronous")?;
    conn.execute_batch("CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL)")
        .context("create table")?;
    let started = Instant::now();
    let mut commits = Vec::with_capacity(rows / per_commit + 1);
    let mut i = 0;
    while i < rows {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").context("begin")?;
        {
            let mut insert = conn
                .prepare_cached("INSERT INTO kv (key, value) VALUES (?1, ?2)")
                .context("prepare")?;
            for _ in 0..per_commit.min(rows - i) {
                let key = format!("/registry/configmaps/floor/c-{i:08}");
                insert
                    .execute(rusqlite::params![key.as_bytes(), value])
                    .context("insert")?;
                i += 1;
            }
        }
        conn.execute_batch("COMMIT").context("commit")?;
        commits.push(t.elapsed());
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok((rate, Latencies::new(commits)))
}

// ---------------------------------------------------------------------------------------------
// 4. Cold start to the first served request.

/// One authenticated GET /api/v1/namespaces on a fresh connection; Ok(()) on a 200.
async fn probe(data_dir: &Path, port: u16) -> anyhow::Result<()> {
    let target = Target::load(data_dir, port)?;
    let mut conn = target.connect().await?;
    conn.expect(Method::GET, "/api/v1/namespaces", None, StatusCode::OK)
        .await?;
    Ok(())
}

/// Spawns berth on `data_dir` and polls (every 250 µs, on a thread of its own) until an
/// authenticated GET /api/v1/namespaces succeeds. Returns the time from spawn and the server's
/// own "ready in" figure.
fn cold_start(data_dir: &Path) -> anyhow::Result<(Duration, Option<u64>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("probe runtime")?;
    let started = Instant::now();
    let mut server = Server::spawn(data_dir, &[], None)?;
    let elapsed = loop {
        if runtime.block_on(probe(data_dir, server.port)).is_ok() {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("berth did not serve a request within 30 s");
        }
        if let Some(status) = server.exited() {
            bail!("berth exited during a cold start: {status}");
        }
        std::thread::sleep(Duration::from_micros(250));
    };
    let reported = server.wait_up()?;
    server.stop(STOP_GRACE);
    Ok((elapsed, reported))
}

fn cold_starts(
    report: &mut Report,
    root: &Path,
    runs: usize,
) -> anyhow::Result<(Latencies, Latencies)> {
    let mut fresh = Vec::new();
    let mut existing = Vec::new();
    let mut reported_fresh = Vec::new();
    let mut reported_existing = Vec::new();
    for run in 0..runs {
        let dir = root.join(format!("cold-{run}"));
        let (t, r) = cold_start(&dir)?;
        fresh.push(t);
        reported_fresh.extend(r);
        let (t, r) = cold_start(&dir)?;
        existing.push(t);
        reported_existing.extend(r);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let fresh = Latencies::new(fresh);
    let existing = Latencies::new(existing);
    reported_fresh.sort();
    reported_existing.sort();
    let med = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0);
    for (dir, starts) in [("fresh", &fresh), ("existing", &existing)] {
        report.check(
            "cold start",
            format!("spawn -> first authenticated GET, {dir} data dir ({runs} runs)"),
            format!(
                "min {}, median {}, max {}",
                ms(starts.min()),
                ms(starts.median()),
                ms(starts.max())
            ),
            "< 150 ms",
            starts.median() < TARGET_COLD_START,
        );
    }
    report.add(
        "cold start",
        "server's own \"ready in\" (median, fresh / existing)",
        format!(
            "{} ms / {} ms",
            med(&reported_fresh),
            med(&reported_existing)
        ),
    );
    Ok((fresh, existing))
}

// ---------------------------------------------------------------------------------------------
// 1, 2. Fixed-count loads

/// Open loop: request `i` is due at `start + i / rate`, sent by client `i % clients`. When a
/// client falls behind, latency counts from when the request was due (so queueing shows rather
/// than hiding behind a late send: no coordinated omission).
async fn paced_load<F>(
    target: &Target,
    clients: usize,
    total: usize,
    rate: u64,
    make: F,
) -> anyhow::Result<Load>
where
    F: Fn(usize) -> Call + Send + Sync + 'static,
{
    let conns = connect_all(target, clients).await?;
    let make = Arc::new(make);
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let started = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for (k, mut conn) in conns.into_iter().enumerate() {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total / clients + 1);
            let mut previous_done = started;
            for i in (k..total).step_by(clients) {
                let due = started + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                // Behind schedule (the previous request ended after this one was due): count
                // from when it was due. Otherwise from the actual send, so the timer's 1 ms
                // granularity is not charged to the server.
                let from = if previous_done > due {
                    due
                } else {
                    Instant::now()
                };
                let (method, path, body, want) = make(i);
                conn.expect(method, &path, body, want).await?;
                previous_done = Instant::now();
                latencies.push(previous_done - from);
            }
            anyhow::Ok(latencies)
        }));
    }
    gather(tasks, total, started, "paced").await
}

fn pod(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"main","image":"busybox:1.36","command":["sleep","3600"],"resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#
    ))
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct ListShape {
    metadata: ListMeta,
    items: Vec<serde::de::IgnoredAny>,
}

fn parse_list(bytes: &[u8]) -> anyhow::Result<ListShape> {
    serde_json::from_slice(bytes).context("parse list")
}

async fn creates(
    report: &mut Report,
    target: &Target,
    sizes: &Sizes,
    data_dir: &Path,
    port: u16,
) -> anyhow::Result<(Load, Load)> {
    let mut conn = target.connect().await?;
    create_namespace(&mut conn, "creates").await?;
    create_namespace(&mut conn, "kubers").await?;
    create_namespace(&mut conn, "dryrun").await?;
    let path = "/api/v1/namespaces/creates/configmaps";

    // Warm-up (not reported): connections, caches, the store's page cache.
    load(target, 4, 400, post_configmap(path, "warm")).await?;

    eprintln!("creates: 1 client x {}", sizes.serial_creates);
    let serial = load(
        target,
        1,
        sizes.serial_creates,
        post_configmap(path, "serial"),
    )
    .await?;
    report.add(
        "creates",
        format!(
            "durable ConfigMap creates, 1 client, {}",
            thousands(sizes.serial_creates as f64)
        ),
        serial.summary(),
    );

    let clients = sizes.concurrent_clients;
    eprintln!(
        "creates: {clients} clients, {} total",
        sizes.concurrent_creates
    );
    let concurrent = load(
        target,
        clients,
        sizes.concurrent_creates,
        post_configmap(path, "conc"),
    )
    .await?;
    report.check(
        "creates",
        format!(
            "durable ConfigMap creates/s, {clients} clients, {} total",
            thousands(sizes.concurrent_creates as f64)
        ),
        concurrent.summary(),
        ">= 5,000/s",
        concurrent.rate() >= TARGET_CREATES_PER_SEC,
    );
    report.check(
        "creates",
        format!("create latency, {clients} clients, saturated (p50 / p99 / max)"),
        concurrent.latencies.p50_p99_max(),
        "p99 < 10 ms",
        concurrent.latencies.pct(99.0) < TARGET_P99,
    );

    // The targets' operating point: 5,000 creates/s offered, open loop.
    let rate = TARGET_CREATES_PER_SEC as u64;
    let paced_count = sizes.concurrent_creates / 2;
    eprintln!("creates: {clients} clients, paced at {rate}/s x {paced_count}");
    let paced = paced_load(
        target,
        clients,
        paced_count,
        rate,
        post_configmap(path, "paced"),
    )
    .await?;
    report.check(
        "creates",
        format!(
            "create latency at {} creates/s offered ({clients} clients, open loop; p50 / p99 / max)",
            thousands(rate as f64)
        ),
        format!("{}  (achieved {}/s)", paced.latencies.p50_p99_max(), thousands(paced.rate())),
        "p99 < 10 ms",
        paced.latencies.pct(99.0) < TARGET_P99,
    );

    // Attribution: the same requests with dryRun=All run everything but the store's commit.
    eprintln!(
        "creates: {clients} clients, dryRun=All x {}",
        sizes.dry_run_creates
    );
    let dry = load(
        target,
        clients,
        sizes.dry_run_creates,
        post_configmap("/api/v1/namespaces/dryrun/configmaps?dryRun=All", "dry"),
    )
    .await?;
    report.add(
        "creates",
        format!("same, dryRun=All (no commit), {clients} clients"),
        dry.summary(),
    );
    let gets = load(target, clients, sizes.dry_run_creates, |_| {
        (
            Method::GET,
            "/api/v1/namespaces/default".to_string(),
            None,
            StatusCode::OK,
        )
    })
    .await?;
    report.add(
        "creates",
        format!("GET /api/v1/namespaces/default, {clients} clients (HTTPS+store read floor)"),
        gets.summary(),
    );

    // The same creates through kube-rs, for comparison with the lean client.
    eprintln!(
        "creates: kube-rs, {clients} tasks x {}",
        sizes.kube_rs_creates
    );
    let kube_load = kube_rs_creates(data_dir, port, clients, sizes.kube_rs_creates).await?;
    report.add(
        "creates",
        format!("same creates through kube-rs, {clients} concurrent tasks, one kube::Client"),
        kube_load.summary(),
    );
    Ok((serial, concurrent))
}

async fn kube_rs_creates(
    data_dir: &Path,
    port: u16,
    tasks: usize,
    total: usize,
) -> anyhow::Result<Load> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let config = common::kube_config(data_dir).await?;
    if config.cluster_url.port_u16() != Some(port) {
        bail!(
            "the kubeconfig names {}, not port {port}",
            config.cluster_url
        );
    }
    let client = kube::Client::try_from(config).context("kube client")?;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "kubers");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let api = api.clone();
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let object: ConfigMap = serde_json::from_slice(&configmap(&format!("kube-{i:06}")))
                    .context("configmap json")?;
                let t = Instant::now();
                tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    api.create(&kube::api::PostParams::default(), &object),
                )
                .await
                .context("kube-rs create timed out")?
                .context("kube-rs create")?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    gather(handles, total, started, "kube-rs").await
}

// ---------------------------------------------------------------------------------------------
// 2. Pods: get one, list 10,000.

async fn pods(
    report: &mut Report,
    target: &Target,
    sizes: &Sizes,
    server: &Server,
) -> anyhow::Result<()> {
    let mut conn = target.connect().await?;
    create_namespace(&mut conn, "pods").await?;
    let clients = sizes.concurrent_clients;
    eprintln!("pods: creating {} ({clients} clients)", sizes.pods);
    let created = load(target, clients, sizes.pods, |i| {
        (
            Method::POST,
            "/api/v1/namespaces/pods/pods".to_string(),
            Some(pod(&format!("pod-{i:06}"))),
            StatusCode::CREATED,
        )
    })
    .await?;
    report.add(
        "pods",
        format!(
            "create {} Pods (busybox), {clients} clients",
            thousands(sizes.pods as f64)
        ),
        created.summary(),
    );
    let (rss, _) = server.rss_kib()?;
    report.add(
        "memory",
        format!(
            "VmRSS after {} Pods (+{} ConfigMaps)",
            thousands(sizes.pods as f64),
            thousands(
                (sizes.serial_creates + sizes.concurrent_creates + sizes.kube_rs_creates + 400)
                    as f64
            )
        ),
        mib(rss),
    );

    eprintln!("pods: GET one x {}", sizes.pod_gets);
    let one = format!("/api/v1/namespaces/pods/pods/pod-{:06}", sizes.pods / 2);
    let get = load(target, 1, sizes.pod_gets, move |_| {
        (Method::GET, one.clone(), None, StatusCode::OK)
    })
    .await?;
    report.check(
        "pods",
        "GET one Pod, 1 client (p50 / p99 / max)",
        format!(
            "{}  ({}/s)",
            get.latencies.p50_p99_max(),
            thousands(get.rate())
        ),
        "p99 < 10 ms",
        get.latencies.pct(99.0) < TARGET_P99,
    );

    eprintln!("pods: LIST all x {}", sizes.list_runs);
    let mut full = Vec::new();
    let mut size = 0;
    for _ in 0..sizes.list_runs {
        let t = Instant::now();
        let bytes = conn
            .expect(
                Method::GET,
                "/api/v1/namespaces/pods/pods",
                None,
                StatusCode::OK,
            )
            .await?;
        let list = parse_list(&bytes)?;
        full.push(t.elapsed());
        if list.items.len() != sizes.pods {
            bail!("listed {} pods, want {}", list.items.len(), sizes.pods);
        }
        size = bytes.len();
    }
    let full = Latencies::new(full);
    report.add(
        "pods",
        format!(
            "LIST {} Pods, one response ({} runs)",
            thousands(sizes.pods as f64),
            sizes.list_runs
        ),
        format!(
            "min {}, median {}  ({:.1} MB JSON)",
            ms(full.min()),
            ms(full.median()),
            size as f64 / 1e6
        ),
    );

    let mut paged = Vec::new();
    let mut pages = 0;
    for _ in 0..sizes.list_runs {
        let t = Instant::now();
        let mut items = 0;
        let mut continue_token: Option<String> = None;
        pages = 0;
        loop {
            let path = match &continue_token {
                Some(token) => format!("/api/v1/namespaces/pods/pods?limit=500&continue={token}"),
                None => "/api/v1/namespaces/pods/pods?limit=500".to_string(),
            };
            let bytes = conn
                .expect(Method::GET, &path, None, StatusCode::OK)
                .await?;
            let list = parse_list(&bytes)?;
            items += list.items.len();
            pages += 1;
            match list.metadata.continue_token.filter(|t| !t.is_empty()) {
                Some(token) => continue_token = Some(token),
                None => break,
            }
        }
        paged.push(t.elapsed());
        if items != sizes.pods {
            bail!("paged list gave {items} pods, want {}", sizes.pods);
        }
    }
    let paged = Latencies::new(paged);
    report.add(
        "pods",
        format!(
            "LIST {} Pods, limit=500 ({pages} pages, {} runs)",
            thousands(sizes.pods as f64),
            sizes.list_runs
        ),
        format!("min {}, median {}", ms(paged.min()), ms(paged.median())),
    );
    let (rss, hwm) = server.rss_kib()?;
    report.add(
        "memory",
        "VmRSS after the lists (VmHWM = peak)",
        format!("{} (peak {})", mib(rss), mib(hwm)),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Watch delivery latency.

#[derive(Deserialize)]
struct EventShape {
    #[serde(rename = "type")]
    kind: String,
    object: ObjectShape,
}

#[derive(Deserialize)]
struct ObjectShape {
    metadata: NameShape,
}

#[derive(Deserialize)]
struct NameShape {
    #[serde(default)]
    name: String,
}

const NOT_YET: u64 = u64::MAX;

/// Reads a watch stream until it has seen all `count` objects (named `w-NNNNNN`) or the
/// deadline; returns the receive time (ns since `base`) per object.
async fn watcher(
    mut conn: Conn,
    path: String,
    count: usize,
    base: Instant,
    deadline: Instant,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<u64>> {
    let response = conn.send(Method::GET, &path, None).await?;
    if response.status() != StatusCode::OK {
        bail!("watch: status {}", response.status());
    }
    let _ = ready.send(()).await;
    drop(ready);
    let mut body = response.into_body();
    let mut received = vec![NOT_YET; count];
    let mut seen = 0;
    let mut buffer: Vec<u8> = Vec::new();
    while seen < count {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(frame)) => frame.context("watch stream")?,
            Ok(None) => bail!("watch stream ended after {seen} of {count} events"),
            Err(_) => break,
        };
        let now = base.elapsed().as_nanos() as u64;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event: EventShape = serde_json::from_slice(&line).context("watch event")?;
            if event.kind != "ADDED" {
                continue;
            }
            if let Some(i) = event
                .object
                .metadata
                .name
                .strip_prefix("w-")
                .and_then(|n| n.parse::<usize>().ok())
                && i < count
                && received[i] == NOT_YET
            {
                received[i] = now;
                seen += 1;
            }
        }
    }
    Ok(received)
}

/// Creates the namespace `ns`; returns the resourceVersion of its (empty) ConfigMap list, to
/// watch from.
async fn watch_namespace(target: &Target, ns: &str) -> anyhow::Result<String> {
    let mut conn = target.connect().await?;
    create_namespace(&mut conn, ns).await?;
    let bytes = conn
        .expect(
            Method::GET,
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            None,
            StatusCode::OK,
        )
        .await?;
    Ok(parse_list(&bytes)?.metadata.resource_version)
}

/// Starts `watchers` [`watcher`]s of the ConfigMaps of `ns` from `rv`, each on its own
/// connection, and waits until every one has its stream open.
async fn start_watchers(
    target: &Target,
    ns: &str,
    rv: &str,
    watchers: usize,
    count: usize,
    base: Instant,
    deadline: Instant,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<Vec<u64>>>>> {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(watchers);
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let conn = target.connect().await?;
        let path = format!(
            "/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=300"
        );
        handles.push(tokio::spawn(watcher(
            conn,
            path,
            count,
            base,
            deadline,
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        ready_rx.recv().await.context("a watcher failed to start")?;
    }
    Ok(handles)
}

async fn watch_latency(report: &mut Report, target: &Target, sizes: &Sizes) -> anyhow::Result<()> {
    let rv = watch_namespace(target, "watch").await?;
    let count = sizes.watch_events;
    let watchers = sizes.watchers;
    let rate = sizes.watch_rate;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let base = Instant::now();
    let deadline = base + interval * count as u32 + Duration::from_secs(20);

    eprintln!("watch: {watchers} watchers, {count} writes at {rate}/s");
    let handles = start_watchers(target, "watch", &rv, watchers, count, base, deadline).await?;

    // Writers: paced, 4 connections so one slow create does not delay the schedule.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(NOT_YET)).collect());
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..count).map(|_| AtomicU64::new(NOT_YET)).collect());
    let writers = 4;
    let start = Instant::now() + Duration::from_millis(50);
    let mut writer_handles = Vec::new();
    for w in 0..writers {
        let mut conn = target.connect().await?;
        let sent = sent.clone();
        let acked = acked.clone();
        writer_handles.push(tokio::spawn(async move {
            for i in (w..count).step_by(writers) {
                tokio::time::sleep_until((start + interval * i as u32).into()).await;
                sent[i].store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                conn.expect(
                    Method::POST,
                    "/api/v1/namespaces/watch/configmaps",
                    Some(configmap(&format!("w-{i:06}"))),
                    StatusCode::CREATED,
                )
                .await?;
                acked[i].store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
            }
            anyhow::Ok(())
        }));
    }
    for handle in writer_handles {
        handle.await.context("writer panicked")??;
    }
    let mut from_send = Vec::with_capacity(count * watchers);
    let mut from_ack: Vec<i64> = Vec::with_capacity(count * watchers);
    let mut missing = 0usize;
    let mut first_send = u64::MAX;
    let mut last_receive = 0u64;
    for s in sent.iter() {
        first_send = first_send.min(s.load(Ordering::SeqCst));
    }
    for handle in handles {
        let received = handle.await.context("watcher panicked")??;
        for (i, r) in received.into_iter().enumerate() {
            if r == NOT_YET {
                missing += 1;
                continue;
            }
            let s = sent[i].load(Ordering::SeqCst);
            let a = acked[i].load(Ordering::SeqCst);
            from_send.push(Duration::from_nanos(r.saturating_sub(s)));
            from_ack.push(r as i64 - a as i64);
            last_receive = last_receive.max(r);
        }
    }
    let from_send = Latencies::new(from_send);
    let delivered = from_send.count();
    let creates = Latencies::new(
        sent.iter()
            .zip(acked.iter())
            .map(|(s, a)| {
                Duration::from_nanos(
                    a.load(Ordering::SeqCst)
                        .saturating_sub(s.load(Ordering::SeqCst)),
                )
            })
            .collect(),
    );
    from_ack.sort();
    let ack_pct = |p: f64| {
        let rank = ((p / 100.0) * from_ack.len() as f64).ceil() as usize;
        from_ack
            .get(rank.clamp(1, from_ack.len().max(1)) - 1)
            .copied()
            .unwrap_or(0)
    };
    let signed_ms = |ns: i64| format!("{:+.2} ms", ns as f64 / 1e6);
    let span = Duration::from_nanos(last_receive.saturating_sub(first_send));
    report.check(
        "watch",
        format!(
            "{watchers} watchers, {count} creates at {rate}/s: receive - send (p50 / p99 / max)"
        ),
        from_send.p50_p99_max(),
        "p99 < 10 ms",
        from_send.pct(99.0) < TARGET_P99,
    );
    report.add(
        "watch",
        "  of which the create itself: send - ack (p50 / p99 / max)",
        creates.p50_p99_max(),
    );
    report.add(
        "watch",
        "receive - write acknowledged (p50 / p99; negative = event before the ack)",
        format!(
            "{} / {}",
            signed_ms(ack_pct(50.0)),
            signed_ms(ack_pct(99.0))
        ),
    );
    report.add(
        "watch",
        "events delivered",
        format!(
            "{} of {} ({} missing), {}/s over {:.2} s",
            thousands(delivered as f64),
            thousands((count * watchers) as f64),
            missing,
            thousands(delivered as f64 / span.as_secs_f64().max(1e-9)),
            span.as_secs_f64()
        ),
    );
    Ok(())
}

/// The most events/s the watchers can take: writes as fast as 16 clients can make them.
async fn watch_throughput(
    report: &mut Report,
    target: &Target,
    sizes: &Sizes,
) -> anyhow::Result<()> {
    let count = sizes.watch_events;
    let watchers = sizes.watchers;
    let rv = watch_namespace(target, "watch2").await?;
    let base = Instant::now();
    let deadline = base + Duration::from_secs(60);
    let handles = start_watchers(target, "watch2", &rv, watchers, count, base, deadline).await?;
    eprintln!("watch: {watchers} watchers, {count} writes as fast as possible");
    let started = base.elapsed().as_nanos() as u64;
    let writes = load(
        target,
        sizes.concurrent_clients,
        count,
        post_configmap("/api/v1/namespaces/watch2/configmaps", "w"),
    )
    .await?;
    let mut delivered = 0usize;
    let mut last = 0u64;
    for handle in handles {
        for r in handle.await.context("watcher panicked")?? {
            if r != NOT_YET {
                delivered += 1;
                last = last.max(r);
            }
        }
    }
    let span = Duration::from_nanos(last.saturating_sub(started));
    report.add(
        "watch",
        format!(
            "{watchers} watchers, {count} creates unpaced ({} clients)",
            sizes.concurrent_clients
        ),
        format!(
            "{}/s events delivered ({} of {} in {:.2} s; writes ran at {}/s)",
            thousands(delivered as f64 / span.as_secs_f64().max(1e-9)),
            thousands(delivered as f64),
            thousands((count * watchers) as f64),
            span.as_secs_f64(),
            thousands(writes.rate())
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if !common::run_as_bench("control_plane") {
        return;
    }
    common::start_watchdog("control_plane", DEADLINE);
    let quick = std::env::var("BERTH_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let root = common::make_root("berth-bench-", |_| {});

    let started = Instant::now();
    let mut report = Report::new(false);
    let result = run(&mut report, &sizes, root.path());
    let total = started.elapsed();
    report.print(&format!(
        "berth control plane benchmark{} ({:.0} s)",
        if quick { " (QUICK sizes)" } else { "" },
        total.as_secs_f64()
    ));
    common::unregister_root();
    drop(root);
    if let Err(error) = result {
        eprintln!("control_plane bench failed: {error:#}");
        common::kill_registered_and_exit(1);
    }
}

fn run(report: &mut Report, sizes: &Sizes, root: &Path) -> anyhow::Result<()> {
    common::machine(report, root, "CPU", true);
    report.add(
        "machine",
        "client",
        "lean: hyper HTTP/1.1 + tokio-rustls, 1 keep-alive connection per client",
    );
    if is_tmpfs(root) {
        report.note(format!(
            "{} is on tmpfs: durability numbers mean nothing there; set BERTH_BENCH_DIR to a disk",
            root.display()
        ));
    }
    common::note_conditions(report);
    let phases = Phases::from_env(report);

    // 6. The floor first, while nothing else of ours runs.
    let (single, batched16) = if phases.wants("floor") {
        floor(report, sizes, root)?
    } else {
        (f64::NAN, f64::NAN)
    };

    // 4. Cold starts (each its own server, stopped before the next).
    if phases.wants("cold") {
        eprintln!(
            "cold start: {} fresh + {} existing",
            sizes.cold_runs, sizes.cold_runs
        );
        cold_starts(report, root, sizes.cold_runs)?;
    }

    // The long-running server for everything else. It runs no node agent: the pods the load
    // phases create are API objects to store and watch, not workloads for this machine.
    let data_dir = root.join("main");
    let mut server = Server::spawn(&data_dir, &["--disable-agent"], None)?;
    server.wait_up()?;
    eprintln!("server: pid {}, port {}", server.pid, server.port);
    let target = Target::load(&data_dir, server.port)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("bench runtime")?;
    runtime.block_on(async {
        let mut conn = target.connect().await?;
        conn.expect(Method::GET, "/api/v1/namespaces", None, StatusCode::OK)
            .await?;
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    // 5. Idle RSS.
    let (rss, _) = server.rss_kib()?;
    report.check(
        "memory",
        format!(
            "idle VmRSS after start, --disable-agent (1 request served; {} threads)",
            server.threads()
        ),
        mib(rss),
        "< 30 MiB",
        rss < TARGET_IDLE_RSS_KIB,
    );

    if phases.wants("creates") {
        let (serial, concurrent) =
            runtime.block_on(creates(report, &target, sizes, &data_dir, server.port))?;
        if !single.is_nan() {
            for (label, rate) in [
                ("1 client", serial.rate()),
                (
                    &*format!("{} clients", sizes.concurrent_clients),
                    concurrent.rate(),
                ),
            ] {
                report.add(
                    "floor",
                    format!("ratio: berth creates/s ({label}) / raw SQLite 1 row per commit"),
                    format!("{:.2}", rate / single),
                );
            }
            report.add(
                "floor",
                format!(
                    "ratio: berth creates/s ({} clients) / raw SQLite 16 rows per commit",
                    sizes.concurrent_clients
                ),
                format!("{:.2}", concurrent.rate() / batched16),
            );
        }
    }
    if phases.wants("pods") {
        runtime.block_on(pods(report, &target, sizes, &server))?;
    }
    if phases.wants("watch") {
        runtime.block_on(watch_latency(report, &target, sizes))?;
        runtime.block_on(watch_throughput(report, &target, sizes))?;
    }
    let (rss, hwm) = server.rss_kib()?;
    report.add(
        "memory",
        format!(
            "VmRSS at the end ({} threads; VmHWM = peak)",
            server.threads()
        ),
        format!("{} (peak {})", mib(rss), mib(hwm)),
    );
    drop(runtime);
    server.stop(STOP_GRACE);

    // 4b. Cold start on the populated data dir.
    if phases.wants("cold") {
        populated_cold_starts(report, sizes, &data_dir)?;
    }
    Ok(())
}

/// The raw SQLite floor; returns the one-row-per-commit and 16-rows-per-commit rates.
fn floor(report: &mut Report, sizes: &Sizes, root: &Path) -> anyhow::Result<(f64, f64)> {
    eprintln!("floor: raw SQLite");
    let value = configmap("floor-value-of-typical-size");
    let floor_dir = root.join("floor");
    std::fs::create_dir_all(&floor_dir).context("floor dir")?;
    let (single, commits) = sqlite_floor(&floor_dir, sizes.floor_single, 1, &value)?;
    let (batched16, _) = sqlite_floor(&floor_dir, sizes.floor_batched, 16, &value)?;
    let (batched256, _) = sqlite_floor(&floor_dir, sizes.floor_batched, 256, &value)?;
    report.add(
        "floor",
        "raw SQLite, WAL, synchronous=FULL, 1 row per commit",
        format!(
            "{}/s  (commit p50 {}, p99 {}, max {})",
            thousands(single),
            ms(commits.median()),
            ms(commits.pct(99.0)),
            ms(commits.max())
        ),
    );
    report.add(
        "floor",
        "raw SQLite, same, 16 rows per commit",
        format!("{}/s", thousands(batched16)),
    );
    report.add(
        "floor",
        "raw SQLite, same, 256 rows per commit",
        format!("{}/s", thousands(batched256)),
    );
    Ok((single, batched16))
}

fn populated_cold_starts(
    report: &mut Report,
    sizes: &Sizes,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let store_bytes: u64 = std::fs::read_dir(data_dir.join("store"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let mut populated = Vec::new();
    for _ in 0..sizes.populated_cold_runs {
        populated.push(cold_start(data_dir)?.0);
    }
    let populated = Latencies::new(populated);
    report.check(
        "cold start",
        format!(
            "spawn -> first authenticated GET, the populated data dir ({:.0} MB store, {} runs)",
            store_bytes as f64 / 1e6,
            sizes.populated_cold_runs
        ),
        format!(
            "min {}, median {}",
            ms(populated.min()),
            ms(populated.median())
        ),
        "< 150 ms",
        populated.median() < TARGET_COLD_START,
    );
    Ok(())
}
