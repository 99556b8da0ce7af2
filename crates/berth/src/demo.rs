//! `berth demo adder` and `berth bench adder`: the story of the adder, told against a running
//! berth with the examples' own manifests (examples/adder/, compiled in).
//!
//! The demo applies the three stages in turn and has concurrent users add numbers through the
//! Service's load balancer, from this machine, then says what they saw and whether it is what
//! the story promises ([`verdict`]): in memory the replicas disagree and a user sees the total
//! go down; on a shared locked file, and in PostgreSQL run as a StatefulSet, every total is
//! distinct, each user's totals grow and nothing sent is lost. Last it deletes the database's
//! pod and shows the same name, the same DNS name (a new address) and the same total when it
//! is back. Any broken promise ends it with an error, so it exits non-zero.
//!
//! The bench runs the same stages for throughput instead: adds per second and latency through
//! the Service in each mode, and one replica in memory as the upper bound.

mod cluster;
mod load;
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use cluster::Cluster;
use verdict::Add;

const MEMORY: &str = include_str!("../../../examples/adder/1-memory.yaml");
const SHARED_VOLUME: &str = include_str!("../../../examples/adder/2-shared-volume.yaml");
const DATABASE: &str = include_str!("../../../examples/adder/3-database.yaml");

/// What both the demo and the bench need.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The adder program to run (default: `adder` beside this berth, as `cargo build -p adder`
    /// leaves it, then on PATH). It is packed into the image `adder:latest`.
    #[arg(long, value_name = "PATH")]
    pub adder: Option<PathBuf>,
    /// The namespace the story runs in.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The load balancer's port on this machine (the examples use 8080).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DemoOptions {
    #[command(flatten)]
    pub common: Common,
    /// How many adder replicas each stage runs (the story needs more than one to show its
    /// bug; with one, the memory stage fails its expectation).
    #[arg(long, default_value_t = 3)]
    pub replicas: i32,
    /// Concurrent users.
    #[arg(long, default_value_t = 4)]
    pub users: usize,
    /// Adds per user per stage.
    #[arg(long, default_value_t = 25)]
    pub adds: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchOptions {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent users, each on its own kept-alive connection.
    #[arg(long, default_value_t = 16)]
    pub users: usize,
    /// Seconds of load per mode.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// The adder program to pack: the one named, else the one beside this executable (where
/// cargo puts every binary of the workspace), else one on PATH.
pub fn find_adder(named: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = named {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--adder {}: no such program", path.display());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("adder")));
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("adder"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .context(
            "no adder program: build it with `cargo build --release -p adder` (it lands beside \
             berth) or name it with --adder PATH",
        )
}

/// Prints a progress line now, not when the buffer fills.
macro_rules! say {
    ($($arg:tt)*) => {{
        println!($($arg)*);
        let _ = std::io::stdout().flush();
    }};
}

/// The edits every stage's manifest gets: the Service's port, the Deployment's replicas.
fn tweak(port: u16, replicas: i32) -> impl Fn(&mut Value) {
    move |object: &mut Value| match object["kind"].as_str() {
        Some("Service") if object["metadata"]["name"] == "adder" => {
            if let Some(ports) = object["spec"]["ports"].as_array_mut() {
                for p in ports {
                    p["port"] = json!(port);
                }
            }
        }
        Some("Deployment") if object["metadata"]["name"] == "adder" => {
            object["spec"]["replicas"] = json!(replicas);
        }
        _ => {}
    }
}

/// Applies one stage and waits until its adders (and, with a database, postgres-0) are ready
/// and the load balancer reaches exactly them; returns the replicas' names and the total they
/// agree on, or each one's total when they do not.
async fn roll_out(
    cluster: &Cluster,
    manifest: &str,
    port: u16,
    replicas: i32,
    address: SocketAddr,
) -> anyhow::Result<(BTreeSet<String>, BTreeMap<String, i64>)> {
    let applied = cluster.apply(manifest, tweak(port, replicas)).await?;
    say!("  applied {}", applied.join(", "));
    if manifest.contains("kind: StatefulSet") {
        say!("  waiting for postgres-0 to be ready …");
        let pod = cluster.pod_ready("postgres-0", None).await?;
        say!("  postgres-0 is ready at {}", pod.ip);
    }
    say!("  waiting for {replicas} ready adder replicas …");
    let pods = cluster.rolled_out("adder", replicas).await?;
    let names: Vec<&str> = pods.iter().map(String::as_str).collect();
    say!("  ready: {}", names.join(", "));
    let totals = balanced(address, &pods).await?;
    Ok((pods, totals))
}

/// Waits until the load balancer reaches every one of `pods` and no other (the proxy follows
/// the endpoints shortly after pods become ready); returns each replica's current total.
async fn balanced(
    address: SocketAddr,
    pods: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut seen = BTreeMap::new();
        let mut strangers = BTreeSet::new();
        for _ in 0..10 * pods.len().max(1) {
            if let Ok(reply) =
                load::request(address, "GET", "/total", "", Duration::from_secs(5)).await
            {
                if pods.contains(&reply.pod) {
                    seen.insert(reply.pod, reply.total);
                } else {
                    strangers.insert(reply.pod);
                }
            }
        }
        if strangers.is_empty() && seen.len() == pods.len() {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            bail!(
                "the load balancer at {address} does not reach exactly {pods:?}: answered by \
                 {seen:?} and old pods {strangers:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The one total every replica reports (a shared store), or an error naming the split.
fn agreed(totals: &BTreeMap<String, i64>) -> anyhow::Result<i64> {
    let distinct: BTreeSet<i64> = totals.values().copied().collect();
    match distinct.len() {
        1 => Ok(*distinct.first().unwrap_or(&0)),
        _ => bail!("the replicas report different totals before any add: {totals:?}"),
    }
}

fn list(counts: &BTreeMap<String, impl std::fmt::Display>) -> String {
    counts
        .iter()
        .map(|(pod, n)| format!("{pod} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Users add concurrently through the load balancer; prints what they saw.
async fn users(
    address: SocketAddr,
    options: &DemoOptions,
) -> anyhow::Result<(Vec<Vec<Add>>, Duration)> {
    say!(
        "  {} users add numbers from 1 to 9, {} times each, through {address} …",
        options.users,
        options.adds
    );
    let started = Instant::now();
    let seen = load::users(address, options.users, options.adds)
        .await
        .context("a user's add failed")?;
    Ok((seen, started.elapsed()))
}

/// Stage 2 and 3's promise, checked: the totals users saw form one chain from `start` and the
/// total afterwards is `start` plus everything sent.
async fn consistent(
    address: SocketAddr,
    options: &DemoOptions,
    pods: &BTreeSet<String>,
    start: i64,
) -> anyhow::Result<i64> {
    let (seen, took) = users(address, options).await?;
    let end = load::request(address, "GET", "/total", "", Duration::from_secs(30))
        .await
        .context("reading the total")?
        .total;
    let found = verdict::agreement(&seen, start, end)
        .map_err(|broken| anyhow::anyhow!("expected one consistent total: {broken}"))?;
    say!(
        "  {} adds in {:.1} s, answered by {}",
        found.adds,
        took.as_secs_f64(),
        list(&found.answered_by)
    );
    if options.replicas > 1 && found.answered_by.len() < 2 {
        bail!("every add went to one replica: the load balancer did not spread the users");
    }
    say!(
        "  every total returned was distinct, each user's totals only grew, and each add moved \
         the total by exactly its number"
    );
    let reported = balanced(address, pods).await?;
    if reported.values().any(|&total| total != end) {
        bail!("after the adds the replicas report {reported:?}, not {end} each");
    }
    say!(
        "  ✔ total {start} + {} sent = {end}, the total every replica now reports",
        found.sum
    );
    Ok(end)
}

/// `berth demo adder`.
pub async fn adder(client: kube::Client, options: DemoOptions) -> anyhow::Result<()> {
    let cluster = Cluster::new(client, &options.common.namespace);
    let port = options.common.port;
    let replicas = options.replicas;
    // The load balancer listens on every address of this machine, loopback included.
    let address = SocketAddr::from(([127, 0, 0, 1], port));

    say!(
        "Stage 1 — memory (examples/adder/1-memory.yaml): a Deployment of {replicas} adders, \
         each keeping the total in its own memory, behind a LoadBalancer Service"
    );
    let (pods, _) = roll_out(&cluster, MEMORY, port, replicas, address).await?;
    let (ingress, _) = cluster.load_balancer("adder").await?;
    say!("  service adder: load balancer {ingress}:{port}; the users connect to {address}");
    let mut showed = None;
    for round in 1..=3 {
        let (seen, took) = users(address, &options).await?;
        let divergence = verdict::divergence(&seen);
        say!(
            "  {} adds in {:.1} s; the replicas' totals: {}",
            seen.iter().map(Vec::len).sum::<usize>(),
            took.as_secs_f64(),
            list(&divergence.replicas)
        );
        if let Some(down) = &divergence.went_down {
            say!(
                "  user {} saw the total go down: {}, then {}",
                down.client + 1,
                down.seen,
                down.then
            );
        }
        if divergence.shows_the_bug() {
            showed = Some(round);
            break;
        }
        say!("  (no disagreement this round; the users try again)");
    }
    if showed.is_none() {
        bail!(
            "expected users to see different totals and a total going down with {replicas} \
             replicas keeping it in memory, and they did not (only {} answered)",
            pods.len()
        );
    }
    say!("  ✔ as the story says: each replica counts only the adds it served");

    say!(
        "Stage 2 — shared volume (examples/adder/2-shared-volume.yaml): the total in one file \
         on a ReadWriteMany claim, each add under an exclusive lock"
    );
    let (pods, totals) = roll_out(&cluster, SHARED_VOLUME, port, replicas, address).await?;
    let (phase, volume) = cluster.claim("adder-total").await?;
    say!("  claim adder-total: {phase}, volume {volume}");
    let start = agreed(&totals)?;
    say!("  every replica reports the total {start}");
    consistent(address, &options, &pods, start).await?;

    say!(
        "Stage 3 — database (examples/adder/3-database.yaml): PostgreSQL as a StatefulSet \
         with a headless Service and a volumeClaimTemplate; the adders use postgres-0.postgres"
    );
    let (pods, totals) = roll_out(&cluster, DATABASE, port, replicas, address).await?;
    let start = agreed(&totals)?;
    say!("  every replica reports the total {start}");
    let total = consistent(address, &options, &pods, start).await?;
    restart_database(&cluster, address, total).await?;
    say!("The story held at every stage.");
    Ok(())
}

/// Deletes postgres-0 and shows that what comes back has its name, its DNS name and its data.
async fn restart_database(
    cluster: &Cluster,
    address: SocketAddr,
    total: i64,
) -> anyhow::Result<()> {
    let dns = cluster.dns_server().await?;
    let name = format!(
        "postgres-0.postgres.{}.svc.cluster.local",
        cluster.namespace()
    );
    let before = cluster.pod_ready("postgres-0", None).await?;
    let (_, volume) = cluster.claim("data-postgres-0").await?;
    let resolved = cluster::resolve(dns, &name).await?;
    say!(
        "  postgres-0 (uid {}) is at {}; {name} → {}; claim data-postgres-0 → {volume}",
        before.uid,
        before.ip,
        addresses(&resolved)
    );
    say!("  deleting pod postgres-0 …");
    let deleted = Instant::now();
    cluster.delete_pod("postgres-0").await?;
    let after = cluster.pod_ready("postgres-0", Some(&before.uid)).await?;
    say!(
        "  postgres-0 is back after {:.1} s: a new pod (uid {}) at {}",
        deleted.elapsed().as_secs_f64(),
        after.uid,
        after.ip
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let resolved = loop {
        let resolved = cluster::resolve(dns, &name).await.unwrap_or_default();
        if resolved.iter().any(|ip| ip.to_string() == after.ip) {
            break resolved;
        }
        if Instant::now() > deadline {
            bail!(
                "{name} resolves to {} after the restart, not the new pod's {}",
                addresses(&resolved),
                after.ip
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (phase, volume_after) = cluster.claim("data-postgres-0").await?;
    if volume_after != volume {
        bail!("postgres-0 came back on volume {volume_after}, not {volume}");
    }
    // The adders reconnect on their next request; they answer 503 while they cannot.
    let deadline = Instant::now() + Duration::from_secs(120);
    let total_after = loop {
        match load::request(address, "GET", "/total", "", Duration::from_secs(30)).await {
            Ok(reply) => break reply.total,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("reading the total after the restart");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    say!(
        "  the same name, postgres-0; the same DNS name, {name} → {}; the same claim \
         data-postgres-0 ({phase}) → {volume_after}",
        addresses(&resolved)
    );
    if total_after != total {
        bail!("the total was {total} before postgres-0 was deleted and is {total_after} after");
    }
    say!("  ✔ the same total: {total_after}");
    Ok(())
}

fn addresses(ips: &[std::net::IpAddr]) -> String {
    if ips.is_empty() {
        return "nothing".into();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `berth bench adder`: adds per second and latency in every mode, in one run.
pub async fn bench(client: kube::Client, options: BenchOptions) -> anyhow::Result<()> {
    let cluster = Cluster::new(client, &options.common.namespace);
    let port = options.common.port;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let duration = Duration::from_secs(options.seconds.max(1));
    let runs = [
        ("memory", MEMORY, 3),
        ("file", SHARED_VOLUME, 3),
        ("db", DATABASE, 3),
        ("memory", MEMORY, 1),
    ];
    let mut rows = Vec::new();
    for (mode, manifest, replicas) in runs {
        say!("{mode} × {replicas}:");
        roll_out(&cluster, manifest, port, replicas, address).await?;
        // A short warm-up: connections, the database's first transactions, page cache.
        load::throughput(address, options.users, Duration::from_secs(1)).await;
        let measured = load::throughput(address, options.users, duration).await;
        say!(
            "  {:.0} adds/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            measured.per_second(),
            millis(measured.quantile(0.5)),
            millis(measured.quantile(0.99)),
            measured.errors
        );
        if measured.adds == 0 {
            bail!("no add succeeded in {mode} mode");
        }
        rows.push((mode, replicas, measured));
    }
    say!(
        "\n{} users on kept-alive connections through the adder Service's load balancer, {} s per mode:",
        options.users,
        duration.as_secs()
    );
    say!("| mode | replicas | adds/s | p50 | p99 | errors |");
    say!("|---|---|---|---|---|---|");
    for (mode, replicas, measured) in rows {
        say!(
            "| {mode} | {replicas} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            measured.per_second(),
            millis(measured.quantile(0.5)),
            millis(measured.quantile(0.99)),
            measured.errors
        );
    }
    Ok(())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
