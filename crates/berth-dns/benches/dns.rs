//! Cluster DNS throughput and latency: the real server on loopback, an index of 1,000
//! Services (900 with a ClusterIP, 100 headless with 3 endpoints each, in 10 namespaces).
//! Clients and server share the machine, as pods and berth do.
//!
//! - Closed loop (throughput): N clients, each sends a query, waits for the answer, sends the
//!   next; over UDP, and over TCP for one row. The floor row is the same clients against a
//!   UDP echo on the same runtime (no DNS work at all): what loopback, the runtime and the
//!   clients cost on this machine.
//! - Open loop (latency at a rate): queries sent at a fixed rate from 4 sockets whatever the
//!   answers do, so queueing shows in the latency instead of slowing the clients down; a
//!   query unanswered after a second is lost.
//!
//! Run: `cargo bench -p berth-dns --bench dns` (`BERTH_DNS_BENCH_SECS` sets the seconds per
//! row, 5 by default). Prints the machine and how busy it was, then one row per load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_dns::{Config, IndexOptions, Server};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const NAMESPACES: usize = 10;
/// The server runtime's thread name, by which its CPU time is found in /proc.
const SERVER_THREAD: &str = "dns-server";
const CLUSTER_IP_SERVICES: usize = 900;
const HEADLESS_SERVICES: usize = 100;

fn main() {
    let secs: u64 = std::env::var("BERTH_DNS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let window = Duration::from_secs(secs);
    print_machine();

    let (namespaces, services, slices) = objects();
    let options = IndexOptions::new(berth_dns::name::Domain::new("cluster.local").unwrap());
    let start = Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        std::hint::black_box(berth_dns::Index::build(
            &options,
            &namespaces,
            &services,
            &slices,
        ));
    }
    println!(
        "index rebuild, {} Services and {} EndpointSlices: {:.2} ms",
        services.len(),
        slices.len(),
        start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
    );
    let index = berth_dns::Index::build(&options, &namespaces, &services, &slices);
    let names: Vec<Name> = (0..CLUSTER_IP_SERVICES)
        .map(|i| Name::from_ascii(cluster_ip_name(i)).unwrap())
        .collect();
    let start = Instant::now();
    let lookups = 1_000_000;
    for i in 0..lookups {
        std::hint::black_box(index.lookup(&names[i % names.len()], RecordType::A));
    }
    println!(
        "lookup alone (A of a ClusterIP Service, one thread): {:.0} ns",
        start.elapsed().as_secs_f64() * 1e9 / lookups as f64
    );
    println!();

    // The server on a runtime of its own, as in `berth up` (one worker per core).
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let addr = server_runtime.block_on(async {
        let server = Server::bind_without_watch(
            "127.0.0.1:0".parse().unwrap(),
            Config {
                upstreams: Some(vec![]),
                ..Config::default()
            },
        )
        .await
        .unwrap();
        server.records().replace(&namespaces, &services, &slices);
        let addr = server.local_addr();
        tokio::spawn(server.run(std::future::pending()));
        addr
    });

    let floor = server_runtime.block_on(async {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        for _ in 0..std::thread::available_parallelism().map_or(2, usize::from) {
            tokio::spawn(echo(socket.clone()));
        }
        addr
    });

    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("closed loop (each client: send, wait for the answer, send the next)");
    println!(
        "{:<44} {:>7} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "load", "clients", "queries/s", "p50 µs", "p99 µs", "p99.9 µs", "server CPU"
    );
    // (UDP datagrams the kernel dropped for a full receive buffer, machine-wide, are counted
    // in the open-loop table, where a drop is a lost query rather than a client's timeout.)
    let rows: Vec<(&str, usize, Mix, bool, SocketAddr)> = vec![
        ("A, ClusterIP Service", 1, Mix::ClusterIp, false, addr),
        ("A, ClusterIP Service", 4, Mix::ClusterIp, false, addr),
        ("A, ClusterIP Service", 16, Mix::ClusterIp, false, addr),
        ("A, ClusterIP Service", 64, Mix::ClusterIp, false, addr),
        (
            "A, headless Service (3 endpoints)",
            16,
            Mix::Headless,
            false,
            addr,
        ),
        (
            "SRV, _http._tcp of a ClusterIP Service",
            16,
            Mix::Srv,
            false,
            addr,
        ),
        ("NXDOMAIN (no such Service)", 16, Mix::Missing, false, addr),
        (
            "A, ClusterIP Service, over TCP",
            16,
            Mix::ClusterIp,
            true,
            addr,
        ),
        ("floor: UDP echo, no DNS", 16, Mix::ClusterIp, false, floor),
    ];
    for (label, clients, mix, tcp, to) in rows {
        let cpu = server_cpu();
        let result = client_runtime.block_on(load(to, clients, mix, tcp, window));
        let cpu = server_cpu() - cpu;
        // Includes the warm-up's queries, at the measured rate.
        let queries = result.qps * (window + window / 4).as_secs_f64();
        println!(
            "{:<44} {:>7} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>7.1} µs",
            label,
            clients,
            result.qps,
            result.p50_us,
            result.p99_us,
            result.p999_us,
            cpu.as_secs_f64() * 1e6 / queries
        );
    }
    println!("(server CPU: the server runtime's threads' user + system time per query)");
    drop(client_runtime);

    println!();
    println!("open loop (A of a ClusterIP Service, sent at a fixed rate from 4 sockets)");
    println!(
        "{:<12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "offered/s", "answered/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "lost", "rcvbuf"
    );
    for rate in [10_000, 25_000, 50_000, 75_000] {
        let drops = udp_receive_buffer_errors();
        let r = open_loop(addr, rate, window);
        let drops = udp_receive_buffer_errors().saturating_sub(drops);
        println!(
            "{:<12} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>7} {:>9}",
            rate, r.qps, r.p50_us, r.p99_us, r.p999_us, r.max_us, r.lost, drops
        );
    }
    println!(
        "(lost: no answer within a second; rcvbuf: UDP datagrams the kernel dropped for a full"
    );
    println!(" receive buffer during the row, machine-wide, client or server side)");
    println!();
    println!("machine busy after the run: {:.0}%", busy_percent());
    drop(server_runtime);
}

/// The floor's server: answers every datagram with itself, marked a response with one answer.
async fn echo(socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        buf[2] |= 0x80;
        buf[7] = 1;
        let _ = socket.send_to(&buf[..n], from).await;
    }
}

struct OpenResult {
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    lost: u64,
}

/// Sends `rate` queries a second for a quarter of `window` (warm-up) and then `window`,
/// from 4 sockets, each read by a thread of its own; latency is from each query's send to
/// its answer.
fn open_loop(addr: SocketAddr, rate: u64, window: Duration) -> OpenResult {
    const SOCKETS: usize = 4;
    const IDS: usize = 1 << 16;
    let sockets: Vec<Arc<std::net::UdpSocket>> = (0..SOCKETS)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(addr).unwrap();
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&s, 4 << 20);
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            Arc::new(s)
        })
        .collect();
    // Send time (ns since `start`, 0 = none outstanding) per socket and id.
    let sent: Arc<Vec<AtomicU64>> =
        Arc::new((0..SOCKETS * IDS).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let warm = window / 4;
    let (from_ns, to_ns) = (warm.as_nanos() as u64, (warm + window).as_nanos() as u64);
    let done = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = sockets
        .iter()
        .enumerate()
        .map(|(s, socket)| {
            let (socket, sent, done) = (socket.clone(), sent.clone(), done.clone());
            std::thread::spawn(move || {
                let mut latencies: Vec<u32> = Vec::new();
                let mut buf = [0u8; 4096];
                while !done.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    let now = start.elapsed().as_nanos() as u64;
                    assert!(n >= 12 && buf[3] & 0x0f == 0 && buf[7] > 0, "an answer");
                    let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    let at = sent[s * IDS + id].swap(0, Ordering::Relaxed);
                    if at >= from_ns && at < to_ns {
                        latencies.push(u32::try_from(now - at).unwrap_or(u32::MAX));
                    }
                }
                latencies
            })
        })
        .collect();
    let queries: Vec<Vec<u8>> = (0..256)
        .map(|k| {
            let (name, qtype) = Mix::ClusterIp.query(k * 104_729);
            let mut m = Message::query();
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
            m.to_vec().unwrap()
        })
        .collect();
    let total = rate * (warm + window).as_millis() as u64 / 1000;
    let mut measured_sends = 0u64;
    for i in 0..total {
        let due = Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        let s = (i as usize) % SOCKETS;
        let id = ((i as usize) / SOCKETS) % IDS;
        let mut query = queries[(i as usize) % queries.len()].clone();
        query[..2].copy_from_slice(&(id as u16).to_be_bytes());
        let at = (start.elapsed().as_nanos() as u64).max(1);
        if at >= from_ns && at < to_ns {
            measured_sends += 1;
        }
        sent[s * IDS + id].store(at, Ordering::Relaxed);
        let _ = sockets[s].send(&query);
    }
    std::thread::sleep(Duration::from_secs(1));
    done.store(true, Ordering::Relaxed);
    let mut latencies: Vec<u32> = Vec::new();
    for r in receivers {
        latencies.extend(r.join().unwrap());
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        f64::from(latencies.get(i).copied().unwrap_or(0)) / 1000.0
    };
    OpenResult {
        qps: latencies.len() as f64 / window.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: f64::from(latencies.last().copied().unwrap_or(0)) / 1000.0,
        lost: measured_sends.saturating_sub(latencies.len() as u64),
    }
}

/// The CPU time (user + system) of the server runtime's threads so far.
fn server_cpu() -> Duration {
    // /proc reports clock ticks of USER_HZ, 100 on Linux.
    const TICKS_PER_SECOND: u64 = 100;
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != SERVER_THREAD {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer (`RcvbufErrors`).
fn udp_receive_buffer_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// How busy the machine's CPUs were over the last second, from /proc/stat.
fn busy_percent() -> f64 {
    let read = || -> Vec<u64> {
        std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let a = read();
    std::thread::sleep(Duration::from_secs(1));
    let b = read();
    let d: Vec<u64> = a.iter().zip(&b).map(|(x, y)| y - x).collect();
    let total: u64 = d.iter().sum();
    if total == 0 || d.len() < 5 {
        return 0.0;
    }
    let idle = d[3] + d[4];
    100.0 * (total - idle) as f64 / total as f64
}

#[derive(Clone, Copy)]
enum Mix {
    ClusterIp,
    Headless,
    Srv,
    Missing,
}

impl Mix {
    fn query(self, i: usize) -> (String, RecordType) {
        match self {
            Mix::ClusterIp => (cluster_ip_name(i % CLUSTER_IP_SERVICES), RecordType::A),
            Mix::Headless => (
                format!(
                    "headless-{}.ns-{}.svc.cluster.local.",
                    i % HEADLESS_SERVICES,
                    i % NAMESPACES
                ),
                RecordType::A,
            ),
            Mix::Srv => (
                format!("_http._tcp.{}", cluster_ip_name(i % CLUSTER_IP_SERVICES)),
                RecordType::SRV,
            ),
            Mix::Missing => (
                format!("missing-{i}.ns-{}.svc.cluster.local.", i % NAMESPACES),
                RecordType::A,
            ),
        }
    }

    fn expected_rcode(self) -> u8 {
        match self {
            Mix::Missing => 3,
            _ => 0,
        }
    }
}

fn cluster_ip_name(i: usize) -> String {
    format!("svc-{i}.ns-{}.svc.cluster.local.", i % NAMESPACES)
}

struct Result {
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

/// `clients` closed-loop clients for `window` (after a warm-up of a quarter of it).
async fn load(addr: SocketAddr, clients: usize, mix: Mix, tcp: bool, window: Duration) -> Result {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (measuring, stop) = (measuring.clone(), stop.clone());
            // Each client asks its own rotation of names, encoded once.
            let queries: Vec<Vec<u8>> = (0..256)
                .map(|k| {
                    let (name, qtype) = mix.query(c * 7919 + k * 104_729);
                    let mut m = Message::query();
                    m.metadata.recursion_desired = true;
                    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
                    m.to_vec().unwrap()
                })
                .collect();
            tokio::spawn(client(
                addr,
                queries,
                mix.expected_rcode(),
                tcp,
                measuring,
                stop,
            ))
        })
        .collect();
    tokio::time::sleep(window / 4).await;
    measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::SeqCst);
    let elapsed = start.elapsed();
    let mut latencies: Vec<u32> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        f64::from(latencies.get(i).copied().unwrap_or(0)) / 1000.0
    };
    Result {
        qps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
    }
}

/// One client: latencies in nanoseconds of the queries answered while `measuring`.
async fn client(
    addr: SocketAddr,
    mut queries: Vec<Vec<u8>>,
    rcode: u8,
    tcp: bool,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut buf = vec![0u8; 4096];
    let udp = if tcp {
        None
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(addr).await.unwrap();
        Some(socket)
    };
    let mut stream = if tcp {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Some(s)
    } else {
        None
    };
    let mut id: u16 = 0;
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        id = id.wrapping_add(1);
        let query = &mut queries[k % 256];
        k += 1;
        query[..2].copy_from_slice(&id.to_be_bytes());
        let sent = Instant::now();
        let reply: &[u8] = if let Some(socket) = &udp {
            socket.send(query).await.unwrap();
            let n = match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
            {
                Ok(n) => n.unwrap(),
                Err(_) => panic!("no answer within a second"),
            };
            &buf[..n]
        } else {
            let stream = stream.as_mut().unwrap();
            let mut framed = Vec::with_capacity(query.len() + 2);
            framed.extend_from_slice(&u16::try_from(query.len()).unwrap().to_be_bytes());
            framed.extend_from_slice(query);
            stream.write_all(&framed).await.unwrap();
            let len = usize::from(stream.read_u16().await.unwrap());
            stream.read_exact(&mut buf[..len]).await.unwrap();
            &buf[..len]
        };
        let took = sent.elapsed();
        assert_eq!(&reply[..2], &id.to_be_bytes(), "the answer to this query");
        assert_eq!(reply[3] & 0x0f, rcode, "the expected response code");
        assert!(reply[7] > 0 || rcode != 0, "an answer");
        if measuring.load(Ordering::Relaxed) {
            latencies.push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
        }
    }
    latencies
}

/// 1,000 Services in 10 namespaces, with one 3-endpoint slice per headless Service.
fn objects() -> (Vec<Namespace>, Vec<Service>, Vec<EndpointSlice>) {
    let namespaces = (0..NAMESPACES)
        .map(|n| serde_json::from_value(json!({"metadata": {"name": format!("ns-{n}")}})).unwrap())
        .collect();
    let mut services = Vec::new();
    for i in 0..CLUSTER_IP_SERVICES {
        services.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
                "spec": {
                    "clusterIP": format!("10.43.{}.{}", i / 250, i % 250 + 2),
                    "ports": [
                        {"name": "http", "port": 80, "protocol": "TCP"},
                        {"name": "metrics", "port": 9090, "protocol": "TCP"},
                    ],
                },
            }))
            .unwrap(),
        );
    }
    let mut slices = Vec::new();
    for i in 0..HEADLESS_SERVICES {
        let ns = format!("ns-{}", i % NAMESPACES);
        services.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("headless-{i}"), "namespace": ns},
                "spec": {"clusterIP": "None", "ports": [{"name": "peer", "port": 7000}]},
            }))
            .unwrap(),
        );
        let endpoints: Vec<_> = (0..3)
            .map(|e| {
                json!({
                    "addresses": [format!("10.244.{}.{}", i, e + 2)],
                    "hostname": format!("headless-{i}-{e}"),
                    "conditions": {"ready": true},
                })
            })
            .collect();
        slices.push(
            serde_json::from_value(json!({
                "metadata": {
                    "name": format!("headless-{i}-abcde"),
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": format!("headless-{i}")},
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": [{"name": "peer", "port": 7000, "protocol": "TCP"}],
            }))
            .unwrap(),
        );
    }
    (namespaces, services, slices)
}

fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_string()))
        .unwrap_or_default();
    println!(
        "machine: {model}, {cores} cores available, {memory} memory, Linux {}",
        kernel.trim()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine busy before the run: {:.0}% (load average {})",
        busy_percent(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
