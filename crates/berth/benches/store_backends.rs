//! The store backends side by side: durable API creates and reads on the embedded store
//! (SQLite in the data dir) and on etcd, one member and three, all in one run on this machine.
//!
//! For each backend it starts the real `berth up --disable-agent --disable-controller-manager`
//! (the binary Cargo built for this bench, so release mode under `cargo bench`), on etcd with
//! `--store etcd://…` naming every member, and measures through the lean HTTPS client of
//! `common/api_client.rs`: durable ConfigMap creates by 1 client and by 16 clients (closed
//! loop), then GETs of one ConfigMap by 16 clients. Each load also reports the CPU the server,
//! the etcd members and this process (the load generator) used, as cores, and how busy the
//! whole machine was.
//!
//! etcd is Debian's `/usr/bin/etcd` (`BERTH_TEST_ETCD` overrides it) on loopback, started by
//! berth-store's test helper (`tests/etcd_server/mod.rs`) with its fsyncs on (etcd's default):
//! a single member with fast elections, three with etcd's default timing. Every data dir,
//! berth's and each member's, is in this bench's temporary root (`BERTH_BENCH_DIR`, default
//! Cargo's target tmp dir), so on one disk.
//!
//! Run it with `cargo bench -p berth --bench store_backends`. Knobs: `BERTH_BENCH_DIR`,
//! `BERTH_BENCH_QUICK=1` (small counts, to check the bench itself) and `BERTH_BENCH_BINARY`.
//! Every server and etcd is killed at the end, on failure and by the watchdog (etcd also by
//! the parent-death signal the helper sets).

#[allow(dead_code)] // This bench uses part of what the benches share.
mod common;

/// A real etcd (one member or a cluster) on loopback, shared with berth-store's tests.
#[path = "../../berth-store/tests/etcd_server/mod.rs"]
mod etcd_server;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::{Method, StatusCode};

use common::api_client::{Load, Target, create_namespace, load, post_configmap, thousands};
use common::{Report, Server, ms};
use etcd_server::EtcdCluster;

struct Sizes {
    warm_up: usize,
    serial_creates: usize,
    concurrent_creates: usize,
    clients: usize,
    gets: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            warm_up: 400,
            serial_creates: 2_000,
            concurrent_creates: 10_000,
            clients: 16,
            gets: 10_000,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            warm_up: 100,
            serial_creates: 200,
            concurrent_creates: 1_000,
            clients: 16,
            gets: 1_000,
        }
    }
}

/// The whole bench is killed (servers, etcd and temp dirs cleaned up) if it runs longer.
const DEADLINE: Duration = Duration::from_secs(1200);
/// How long a stopped server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Linux's USER_HZ: the unit of the CPU times in /proc.
const TICKS_PER_SECOND: f64 = 100.0;

const NAMESPACE_PATH: &str = "/api/v1/namespaces/bench/configmaps";

/// A store to measure: the embedded one (`members == 0`) or etcd with that many members.
struct Backend {
    name: &'static str,
    members: usize,
}

const BACKENDS: [Backend; 3] = [
    Backend {
        name: "embedded (SQLite)",
        members: 0,
    },
    Backend {
        name: "etcd, 1 member",
        members: 1,
    },
    Backend {
        name: "etcd, 3 members",
        members: 3,
    },
];

// ---------------------------------------------------------------------------------------------
// CPU accounting

/// utime + stime of a process, in ticks, from /proc/PID/stat.
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The fields after the command (which may hold spaces) in parentheses; utime and stime
    // are the stat's 14th and 15th fields, so the 12th and 13th after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The etcd members this process started: its children named `etcd`.
fn etcd_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let comm_is_etcd = stat.contains("(etcd)");
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            comm_is_etcd && parent == Some(me)
        })
        .collect()
}

/// A reading of the CPU time of the processes involved and of the whole machine.
struct CpuReading {
    at: Instant,
    berth: u64,
    etcd: u64,
    client: u64,
    machine: Option<(u64, u64)>,
}

impl CpuReading {
    fn take(server: u32, etcd: &[u32]) -> CpuReading {
        CpuReading {
            at: Instant::now(),
            berth: process_ticks(server),
            etcd: etcd.iter().map(|pid| process_ticks(*pid)).sum(),
            client: process_ticks(std::process::id()),
            machine: common::cpu_times(),
        }
    }

    /// "berth 0.9 / etcd 0.7 / client 0.3 cores, machine 98% busy" since `before`.
    fn since(&self, before: &CpuReading, with_etcd: bool) -> String {
        let wall = (self.at - before.at).as_secs_f64().max(1e-9);
        let cores =
            |after: u64, before: u64| after.saturating_sub(before) as f64 / TICKS_PER_SECOND / wall;
        let busy = match (before.machine, self.machine) {
            (Some((idle0, total0)), Some((idle1, total1))) => {
                let total = total1.saturating_sub(total0).max(1) as f64;
                format!(
                    "{:.0}%",
                    100.0 * (1.0 - idle1.saturating_sub(idle0) as f64 / total)
                )
            }
            _ => "?".to_string(),
        };
        let etcd = if with_etcd {
            format!("{:.2}", cores(self.etcd, before.etcd))
        } else {
            "–".to_string()
        };
        format!(
            "{:.2} / {etcd} / {:.2} | {busy}",
            cores(self.berth, before.berth),
            cores(self.client, before.client)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// One backend

/// One line of the results table.
struct Line {
    store: &'static str,
    load: String,
    result: Load,
    cpu: String,
}

/// Starts `backend` (etcd, then berth on it), measures it, and stops both.
fn measure(
    backend: &Backend,
    root: &Path,
    sizes: &Sizes,
    report: &mut Report,
    lines: &mut Vec<Line>,
) -> anyhow::Result<()> {
    report.note(format!(
        "{}: load average at its start (1/5/15 min): {}",
        backend.name,
        common::loadavg()
    ));
    // The helper panics when etcd does not start; that becomes this bench's error.
    let etcd = match backend.members {
        0 => None,
        n => {
            eprintln!("{}: starting etcd", backend.name);
            let cluster = std::panic::catch_unwind(|| EtcdCluster::start(n))
                .map_err(|_| anyhow::anyhow!("{}: etcd did not start", backend.name))?;
            Some(cluster)
        }
    };
    let store_url = etcd.as_ref().map(|c| c.store_url(""));
    let mut args = vec!["--disable-agent", "--disable-controller-manager"];
    if let Some(url) = &store_url {
        args.extend(["--store", url.as_str()]);
    }
    let data_dir = root.join(format!("berth-{}", backend.members));
    let mut server = Server::spawn(&data_dir, &args, None)?;
    server.wait_up()?;
    let etcd_pids = etcd_pids();
    if etcd_pids.len() != backend.members {
        bail!(
            "{}: found {} etcd processes, want {}",
            backend.name,
            etcd_pids.len(),
            backend.members
        );
    }
    eprintln!(
        "{}: berth pid {}, port {}; etcd pids {etcd_pids:?}",
        backend.name, server.pid, server.port
    );
    let target = Target::load(&data_dir, server.port)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("bench runtime")?;
    let with_etcd = backend.members > 0;
    let pid = server.pid;
    let mut run = |load_name: String, work: &dyn Fn() -> anyhow::Result<Load>| {
        eprintln!("{}: {load_name}", backend.name);
        let before = CpuReading::take(pid, &etcd_pids);
        let result = work()?;
        let cpu = CpuReading::take(pid, &etcd_pids).since(&before, with_etcd);
        eprintln!("  {}  cpu {cpu}", result.summary());
        lines.push(Line {
            store: backend.name,
            load: load_name,
            result,
            cpu,
        });
        anyhow::Ok(())
    };

    runtime.block_on(async {
        let mut conn = target.connect().await?;
        create_namespace(&mut conn, "bench").await?;
        // Warm-up (not reported): connections, caches, the stores' files.
        load(
            &target,
            4,
            sizes.warm_up,
            post_configmap(NAMESPACE_PATH, "warm"),
        )
        .await?;
        anyhow::Ok(())
    })?;
    run(
        format!(
            "creates, 1 client × {}",
            thousands(sizes.serial_creates as f64)
        ),
        &|| {
            runtime.block_on(load(
                &target,
                1,
                sizes.serial_creates,
                post_configmap(NAMESPACE_PATH, "serial"),
            ))
        },
    )?;
    run(
        format!(
            "creates, {} clients × {} total",
            sizes.clients,
            thousands(sizes.concurrent_creates as f64)
        ),
        &|| {
            runtime.block_on(load(
                &target,
                sizes.clients,
                sizes.concurrent_creates,
                post_configmap(NAMESPACE_PATH, "conc"),
            ))
        },
    )?;
    let one = format!("{NAMESPACE_PATH}/serial-000000");
    run(
        format!(
            "GET one ConfigMap, {} clients × {} total",
            sizes.clients,
            thousands(sizes.gets as f64)
        ),
        &|| {
            let one = one.clone();
            runtime.block_on(load(&target, sizes.clients, sizes.gets, move |_| {
                (Method::GET, one.clone(), None, StatusCode::OK)
            }))
        },
    )?;
    drop(runtime);
    server.stop(STOP_GRACE);
    drop(etcd);
    Ok(())
}

fn print_table(lines: &[Line]) {
    println!();
    println!(
        "| store | load | per second | p50 | p99 | max | CPU cores: berth / etcd / client | machine busy |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for line in lines {
        let l = &line.result.latencies;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            line.store,
            line.load,
            thousands(line.result.rate()),
            ms(l.median()),
            ms(l.pct(99.0)),
            ms(l.max()),
            line.cpu
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if !common::run_as_bench("store_backends") {
        return;
    }
    let quick = std::env::var("BERTH_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let root = common::make_root("berth-bench-stores-", |_| {});
    // The etcd helper puts each cluster in a temp dir of its own under TMPDIR: here, in the
    // bench's root, on the same disk as berth's data dirs (and removed with the root).
    // SAFETY: no other thread runs yet (the watchdog and the etcd keeper start below).
    unsafe { std::env::set_var("TMPDIR", root.path()) };
    common::start_watchdog("store_backends", DEADLINE);

    let started = Instant::now();
    let mut report = Report::new(true);
    let mut lines = Vec::new();
    let result = run(&mut report, &mut lines, &sizes, root.path());
    let total = started.elapsed();
    report.print(&format!(
        "berth store backends benchmark{} ({:.0} s)",
        if quick { " (QUICK sizes)" } else { "" },
        total.as_secs_f64()
    ));
    print_table(&lines);
    common::unregister_root();
    drop(root);
    if let Err(error) = result {
        eprintln!("store_backends bench failed: {error:#}");
        common::kill_registered_and_exit(1);
    }
}

fn run(
    report: &mut Report,
    lines: &mut Vec<Line>,
    sizes: &Sizes,
    root: &Path,
) -> anyhow::Result<()> {
    common::machine(report, root, "CPU", true);
    let etcd_version = std::process::Command::new(
        std::env::var_os("BERTH_TEST_ETCD").unwrap_or_else(|| "/usr/bin/etcd".into()),
    )
    .arg("--version")
    .output()
    .ok()
    .and_then(|o| String::from_utf8(o.stdout).ok())
    .and_then(|s| s.lines().next().map(str::to_string))
    .unwrap_or_else(|| "?".into());
    report.add("machine", "etcd", etcd_version);
    report.add(
        "machine",
        "client",
        "lean: hyper HTTP/1.1 + tokio-rustls, 1 keep-alive connection per client",
    );
    common::note_conditions(report);
    for backend in &BACKENDS {
        measure(backend, root, sizes, report, lines)?;
    }
    Ok(())
}
