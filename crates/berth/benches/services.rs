//! The service proxy benchmark (issue 5): pod → Service → pod against pod → pod direct, and
//! how long an endpoint change takes to steer traffic, on the real `berth up` (release mode
//! under `cargo bench`).
//!
//! Run it with `cargo bench -p berth --bench services`. Knobs: `BERTH_BENCH_DIR` (where the
//! temporary data dir goes), `BERTH_BENCH_SECONDS` (length of each throughput run, default 5),
//! `BERTH_BENCH_BINARY` (a different `berth` to measure).
//!
//! Two pods (`sleep`, host-program image) give two network namespaces on the pod bridge; the
//! bench's own threads enter them (setns into the namespace berth pinned for each pod) to be
//! the client and the server, so the packets take exactly a pod's path — veth, bridge, the
//! host's nftables rules — while the load generator is the same program both ways.
//!
//! - `rr`: one connection, 64-byte request, 64-byte answer, back to back (a request/response
//!   rate, netperf's TCP_RR).
//! - `crr`: a new connection per 64-byte exchange (netperf's TCP_CRR): every connection is a
//!   new conntrack entry and a new DNAT decision through the Service.
//! - `bulk`: one connection streaming 64 KiB writes into a sink (netperf's TCP_STREAM).
//! - `endpoint change`: a selectorless Service whose EndpointSlice the bench rewrites between
//!   two server ports; timed from the API write's acknowledgement to the first new connection
//!   answered by the new port (the client connects every millisecond).
//!
//! Each throughput figure is measured direct (the server pod's IP) and through the Service's
//! cluster IP, alternately, three times each; the best of each is reported and compared.
//!
//! This is a benchmark, not a test: it reports, it does not fail on a missed figure.

#[allow(dead_code)] // This bench uses part of the shared harness.
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, PostParams};

use common::pods::{clear_root, client, detach_mounts, leftovers, wait_node_ready};
use common::{Latencies, Report, Server};

const DEADLINE: Duration = Duration::from_secs(600);
const NAMESPACE: &str = "default";
/// The server's ports: echo, sink, and the two the endpoint-change Service switches between.
const ECHO_PORT: u16 = 9000;
const SINK_PORT: u16 = 9003;
const SWITCH_PORTS: [u16; 2] = [9001, 9002];
const MESSAGE: usize = 64;
const CHUNK: usize = 64 * 1024;
const SWITCHES: usize = 20;

fn seconds() -> Duration {
    let s = std::env::var("BERTH_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(5);
    Duration::from_secs(s)
}

fn main() {
    if !common::run_as_bench("services") {
        return;
    }
    common::start_watchdog("services", DEADLINE);
    let root = common::make_root("berth-services-bench-", clear_root);
    let started = Instant::now();
    let mut report = Report::new(true);
    let result = run(&mut report, root.path());
    report.print(&format!(
        "berth services benchmark ({:.0} s)",
        started.elapsed().as_secs_f64()
    ));
    if let Err(error) = result {
        eprintln!("services bench failed: {error:#}");
        common::kill_registered_and_exit(1);
    }
    let left = leftovers(root.path());
    if !left.is_empty() {
        eprintln!("services bench: {} processes left behind", left.len());
        common::kill_registered_and_exit(1);
    }
    common::unregister_root();
    detach_mounts(root.path());
    drop(root);
}

fn run(report: &mut Report, root: &Path) -> anyhow::Result<()> {
    common::machine(report, root, "CPU (nproc x model)", false);
    common::note_conditions(report);
    let data_dir = root.join("data");
    let bridge = format!("bsb{}", std::process::id() % 100_000);
    let mut server = Server::spawn(
        &data_dir,
        &[
            "--pod-bridge",
            &bridge,
            "--cluster-cidr",
            "10.239.0.0/24",
            "--service-cidr",
            "10.238.0.0/24",
        ],
        None,
    )?;
    server.wait_up()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("bench runtime")?;
    let result = runtime.block_on(measure(report, &data_dir));
    server.stop(Duration::from_secs(15));
    common::berth_down(&data_dir, "services");
    result
}

async fn measure(report: &mut Report, data_dir: &Path) -> anyhow::Result<()> {
    let client = client(data_dir).await?;
    wait_node_ready(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    for name in ["client", "server"] {
        pods.create(&PostParams::default(), &holder(name)?).await?;
    }
    let (server_ip, server_ns) = running(&pods, "server", data_dir).await?;
    let (_, client_ns) = running(&pods, "client", data_dir).await?;

    // The servers live in the server pod's namespace for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let ready = std::sync::mpsc::channel();
    {
        let (stop, ready) = (stop.clone(), ready.0);
        let ns = server_ns.clone();
        std::thread::spawn(move || serve(&ns, &stop, &ready));
    }
    ready
        .1
        .recv_timeout(Duration::from_secs(5))
        .context("the servers did not start")??;

    services
        .create(&PostParams::default(), &service("echo", true)?)
        .await?;
    let echo_ip = cluster_ip(&services, "echo").await?;
    // The Service's endpoint: the server pod, whose port is the bench's own server.
    let through_service = Target {
        echo: SocketAddr::from((echo_ip, 80)),
        sink: SocketAddr::from((echo_ip, 81)),
    };
    let direct = Target {
        echo: SocketAddr::from((server_ip, ECHO_PORT)),
        sink: SocketAddr::from((server_ip, SINK_PORT)),
    };
    let echo = through_service.echo;
    in_namespace(&client_ns, move || {
        wait_answer(echo, Duration::from_secs(10))
    })?;

    let span = seconds();
    for (name, what, run) in [
        (
            "rr",
            "one connection, 64 B each way, transactions/s",
            rr as fn(Target, Duration) -> anyhow::Result<f64>,
        ),
        ("crr", "a connection per 64 B exchange, connections/s", crr),
        ("bulk", "one connection streaming, MiB/s", bulk),
    ] {
        let (mut best_direct, mut best_service) = (0f64, 0f64);
        for round in 0..3 {
            eprintln!("{name}: round {round}");
            best_direct = best_direct.max(in_namespace(&client_ns, move || run(direct, span))?);
            best_service = best_service.max(in_namespace(&client_ns, move || {
                run(through_service, span)
            })?);
        }
        report.add(
            name,
            format!("{what}: pod -> pod direct"),
            format!("{best_direct:.0}"),
        );
        report.add(
            name,
            format!("{what}: pod -> Service -> pod"),
            format!("{best_service:.0}"),
        );
        report.check(
            name,
            "  through the Service / direct",
            format!(
                "{:.1} %",
                100.0 * best_service / best_direct.max(f64::MIN_POSITIVE)
            ),
            ">= 90 %",
            best_service >= 0.9 * best_direct,
        );
    }

    // Endpoint change: a selectorless Service and a slice the bench writes itself.
    services
        .create(&PostParams::default(), &service("switch", false)?)
        .await?;
    let switch_ip = cluster_ip(&services, "switch").await?;
    let target = SocketAddr::from((switch_ip, 80));
    let mut samples = Vec::new();
    let mut current = 0usize;
    put_slice(&slices, server_ip, SWITCH_PORTS[current]).await?;
    in_namespace(&client_ns, move || {
        wait_answer(target, Duration::from_secs(10))
    })?;
    for i in 0..SWITCHES {
        eprintln!("endpoint change {i}");
        current = 1 - current;
        let want = current as u8;
        let watcher = {
            let ns = client_ns.clone();
            std::thread::spawn(move || in_namespace(&ns, move || first_answer(target, want)))
        };
        // The client polls from before the write; the clock starts once it is acknowledged.
        std::thread::sleep(Duration::from_millis(50));
        put_slice(&slices, server_ip, SWITCH_PORTS[current]).await?;
        let written = Instant::now();
        let seen = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the polling client panicked"))??;
        samples.push(seen.saturating_duration_since(written));
    }
    let samples = Latencies::new(samples);
    report.check(
        "endpoint change",
        format!("EndpointSlice write acknowledged -> new connections reach the new endpoint (x{SWITCHES})"),
        samples.p50_p99_max(),
        "< 1 s",
        samples.max() < Duration::from_secs(1),
    );

    stop.store(true, Ordering::Relaxed);
    for name in ["client", "server"] {
        let _ = pods.delete(name, &Default::default()).await;
    }
    let _ = services.delete("echo", &Default::default()).await;
    let _ = services.delete("switch", &Default::default()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("the pods were not deleted");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A pod that only holds a network namespace.
fn holder(name: &str) -> anyhow::Result<Pod> {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "berth.dev/host", "command": ["sleep", "3600"]}],
        },
    }))
    .context("the pod manifest")
}

/// `echo`: selects the server pod, port 80 → the echo server, 81 → the sink. `switch`: no
/// selector.
fn service(name: &str, selected: bool) -> anyhow::Result<Service> {
    let mut spec = serde_json::json!({"ports": [
        {"name": "echo", "port": 80, "targetPort": ECHO_PORT},
        {"name": "sink", "port": 81, "targetPort": SINK_PORT},
    ]});
    if selected {
        spec["selector"] = serde_json::json!({"bench": "server"});
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec}))
        .context("the service manifest")
}

async fn put_slice(api: &Api<EndpointSlice>, ip: Ipv4Addr, port: u16) -> anyhow::Result<()> {
    let mut slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "switch", "labels": {
            "kubernetes.io/service-name": "switch",
            "endpointslice.kubernetes.io/managed-by": "bench"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "echo", "port": port, "protocol": "TCP"}],
    }))?;
    match api.get_opt("switch").await? {
        None => {
            api.create(&PostParams::default(), &slice).await?;
        }
        Some(current) => {
            slice.metadata.resource_version = current.metadata.resource_version;
            api.replace("switch", &PostParams::default(), &slice)
                .await?;
        }
    }
    Ok(())
}

async fn cluster_ip(api: &Api<Service>, name: &str) -> anyhow::Result<Ipv4Addr> {
    let service = api.get(name).await?;
    let ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    ip.parse().with_context(|| format!("the cluster IP {ip:?}"))
}

/// Waits for the pod to run; its IP and its pinned network namespace.
async fn running(
    api: &Api<Pod>,
    name: &str,
    data_dir: &Path,
) -> anyhow::Result<(Ipv4Addr, PathBuf)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = api.get(name).await?;
        let status = pod.status.unwrap_or_default();
        if status.phase.as_deref() == Some("Running")
            && let Some(ip) = status.pod_ip.and_then(|ip| ip.parse().ok())
        {
            let uid = pod.metadata.uid.unwrap_or_default();
            let ns = data_dir.join("pods").join(uid).join("ns/net");
            return Ok((ip, ns));
        }
        if Instant::now() > deadline {
            bail!("pod {name} is not running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `f` on a thread inside the network namespace pinned at `ns`.
fn in_namespace<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a bench thread panicked"))?
}

fn enter(ns: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(ns).with_context(|| format!("open {}", ns.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&file),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("setns {}", ns.display()))
}

/// Where a throughput run sends: the echo server and the sink, direct or through the Service.
#[derive(Clone, Copy)]
struct Target {
    echo: SocketAddr,
    sink: SocketAddr,
}

/// The servers in the server pod: echo on ECHO_PORT, a sink on SINK_PORT, one byte (0 or 1)
/// on each of SWITCH_PORTS.
fn serve(ns: &Path, stop: &Arc<AtomicBool>, ready: &std::sync::mpsc::Sender<anyhow::Result<()>>) {
    let listeners = enter(ns).and_then(|()| {
        let bind = |port| TcpListener::bind(("0.0.0.0", port));
        Ok([
            bind(ECHO_PORT)?,
            bind(SINK_PORT)?,
            bind(SWITCH_PORTS[0])?,
            bind(SWITCH_PORTS[1])?,
        ])
    });
    let [echo, sink, a, b] = match listeners {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let accept = |listener: TcpListener, handle: fn(TcpStream)| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || handle(stream));
                }
            }
        });
    };
    accept(a, |mut s| drop(s.write_all(&[0])));
    accept(b, |mut s| drop(s.write_all(&[1])));
    accept(sink, |mut s| {
        drop(std::io::copy(&mut s, &mut std::io::sink()))
    });
    accept(echo, |mut s| {
        let _ = s.set_nodelay(true);
        let mut buffer = [0u8; MESSAGE];
        while let Ok(n) = s.read(&mut buffer) {
            if n == 0 || s.write_all(&buffer[..n]).is_err() {
                return;
            }
        }
    });
}

fn connect(to: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

fn exchange(stream: &mut TcpStream) -> std::io::Result<()> {
    let message = [7u8; MESSAGE];
    stream.write_all(&message)?;
    let mut answer = [0u8; MESSAGE];
    stream.read_exact(&mut answer)
}

fn rr(to: Target, span: Duration) -> anyhow::Result<f64> {
    let mut stream = connect(to.echo)?;
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < span {
        exchange(&mut stream)?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

fn crr(to: Target, span: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < span {
        let mut stream = connect(to.echo)?;
        exchange(&mut stream)?;
        // The client closes first and its side keeps TIME_WAIT; SO_LINGER 0 would reset
        // instead and hide the cost of a real close.
        drop(stream);
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

fn bulk(to: Target, span: Duration) -> anyhow::Result<f64> {
    let mut stream = connect(to.sink)?;
    let chunk = vec![1u8; CHUNK];
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < span {
        stream.write_all(&chunk)?;
        sent += CHUNK as u64;
    }
    Ok(sent as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64())
}

/// Connects until `to` answers (the Service's rules are in place).
fn wait_answer(to: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let answered = connect(to).and_then(|mut s| {
            let mut byte = [0u8; 1];
            s.write_all(&[7u8; MESSAGE]).ok();
            s.read(&mut byte)
        });
        if answered.is_ok_and(|n| n > 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{to} never answered");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects every millisecond until a connection is answered with `want`; when that was.
fn first_answer(to: SocketAddr, want: u8) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut byte = [9u8; 1];
        let read = connect(to).and_then(|mut s| s.read_exact(&mut byte));
        if read.is_ok() && byte[0] == want {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("traffic never moved to the new endpoint");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
