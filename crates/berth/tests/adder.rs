//! The adder story's first two stages, measured from the host as users would see them:
//! `berth image pack` makes images of programs on this machine that pods run; three adder
//! replicas keeping the total in memory (examples/adder/1-memory.yaml) give users totals that
//! disagree and go down; the same replicas sharing one locked file on a ReadWriteMany volume
//! (examples/adder/2-shared-volume.yaml, applied over stage 1) give every user one total that
//! only grows and counts every add; stage 3 (examples/adder/3-database.yaml) moves the total
//! into PostgreSQL run as a StatefulSet, and deleting its pod costs users a delay, never a
//! lost or doubled add.
//!
//! The adder binary comes from `cargo build -p adder` run by the test itself (see
//! [`adder_binary`]); the manifests are the examples' files, with only the load balancer port
//! changed so concurrent test servers on this host do not collide.

mod common;
mod podkit;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use podkit::{T, phase, wait_pod};

/// The adder executable, built with the profile this test was built with.
///
/// The berth crate cannot name another package's binary (`CARGO_BIN_EXE_adder` exists only
/// in adder's own tests), and a file that merely sits in `target/<profile>/` may be stale or
/// absent (`cargo test` does not build a binary only for another package's tests). So the
/// test runs `cargo build -p adder --bin adder` itself — a no-op when `scripts/test`'s
/// `cargo build --workspace --all-targets` already built it — and takes the path cargo
/// reports for the artifact instead of guessing the target directory. The environment
/// (`CARGO_TARGET_DIR`, offline settings) is inherited, so it is the same build as the outer
/// one.
fn adder_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(build_adder).clone()
}

fn build_adder() -> PathBuf {
    let berth = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    // `target/<profile dir>/berth`: `debug` is the dev profile, any other dir is its profile.
    let profile_dir = berth
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let profile = if profile_dir == "debug" {
        "dev"
    } else {
        profile_dir
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "build",
            "-p",
            "adder",
            "--bin",
            "adder",
            "--profile",
            profile,
        ])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("run cargo build -p adder");
    assert!(
        output.status.success(),
        "cargo build -p adder failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "adder")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the adder executable")
}

/// `berth image pack <program> --name <name>` into this server's store; returns its output.
#[track_caller]
fn pack(berth: &Berth, program: &Path, name: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["image", "pack"])
        .arg(program)
        .args(["--name", name, "--data-dir"])
        .arg(berth.data_dir())
        .output()
        .expect("run berth image pack");
    assert!(
        output.status.success(),
        "pack failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_packed_host_program_runs_in_a_pod() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    // Debian's coreutils echo: a dynamic program that needs libc and the loader.
    let echo = ["/usr/bin/echo", "/bin/echo"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("an echo program");
    let printed = pack(&berth, &echo, "echo:packed");
    assert!(
        printed.starts_with("packed docker.io/library/echo:packed ("),
        "{printed}"
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["image", "ls", "--data-dir"])
        .arg(berth.data_dir())
        .output()
        .expect("berth image ls");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("docker.io/library/echo:packed"),
        "{listed:?}"
    );
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  restartPolicy: Never
  containers:
  - name: echo
    image: echo:packed
    imagePullPolicy: IfNotPresent
    args: ["hello from a packed image"]
"#,
    );
    wait_pod(&kubectl, "echo", T, |p| phase(p) == "Succeeded");
    let logs = kubectl.ok(&["logs", "echo"]);
    assert_eq!(logs.trim(), "hello from a packed image");
}

/// One reply of the adder as a client saw it.
#[derive(Debug, Clone)]
struct Reply {
    total: i64,
    pod: String,
}

/// Sends one request on a fresh connection (so the load balancer picks a replica for each).
/// A connection that is refused is retried, since nothing was sent; anything after the
/// request went out is an error, because the add may have happened.
fn request(address: SocketAddr, method: &str, path: &str, body: &str) -> Result<Reply, String> {
    request_within(address, method, path, body, Duration::from_secs(10))
}

/// [`request`], waiting up to `timeout` for the answer.
fn request_within(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => return Err(format!("connect: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: adder\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let io = |e: std::io::Error| format!("{method} {path}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.write_all(text.as_bytes()).map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{method} {path}: {response}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{e}: {body:?}"))?;
    match (json["total"].as_i64(), json["pod"].as_str()) {
        (Some(total), Some(pod)) => Ok(Reply {
            total,
            pod: pod.to_string(),
        }),
        _ => Err(format!("unexpected reply {body}")),
    }
}

/// `clients` threads each adding 1 `adds` times through the load balancer; each client's
/// replies in order.
fn run_clients(address: SocketAddr, clients: usize, adds: usize) -> Vec<Vec<Reply>> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                (0..adds)
                    .map(|_| request(address, "POST", "/add", "1"))
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .expect("client thread")
                .unwrap_or_else(|e| panic!("a client's request failed: {e}"))
        })
        .collect()
}

/// An example manifest with the Service's port moved to `port`.
fn stage(file: &str, port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/adder")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("read the example");
    let from = "{name: http, port: 8080, targetPort: http}";
    assert!(text.contains(from), "{} changed shape", path.display());
    text.replace(
        from,
        &format!("{{name: http, port: {port}, targetPort: http}}"),
    )
}

fn adder_pods(kubectl: &Kubectl) -> Vec<(String, bool)> {
    kubectl
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=adder",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}"#,
        ])
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?.to_string();
            let ready = parts.next() == Some("True");
            let deleting = parts.next().is_some();
            Some((name, ready && !deleting))
        })
        .collect()
}

/// Waits until the Deployment's rollout is done, exactly three adder pods exist (the old
/// ones are gone) and all are ready; returns their names.
fn wait_three_ready(kubectl: &Kubectl) -> BTreeSet<String> {
    let run = kubectl.run(&["rollout", "status", "deploy/adder", "--timeout=120s"]);
    assert_eq!(run.code, 0, "rollout: {run:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = adder_pods(kubectl);
        if pods.len() == 3 && pods.iter().all(|(_, ready)| *ready) {
            return pods.into_iter().map(|(name, _)| name).collect();
        }
        assert!(
            Instant::now() < deadline,
            "three ready adder pods: {pods:?}\n{}",
            kubectl.run(&["get", "pods", "-o", "wide"]).stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the load balancer reaches every one of `pods` and only them (the proxy
/// follows the EndpointSlice shortly after the pods are ready); returns the totals each
/// replica reported last.
fn wait_balanced(address: SocketAddr, pods: &BTreeSet<String>) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeMap::new();
    loop {
        let mut strangers = Vec::new();
        for _ in 0..30 {
            match request(address, "GET", "/total", "") {
                Ok(reply) if pods.contains(&reply.pod) => drop(seen.insert(reply.pod, reply.total)),
                Ok(reply) => strangers.push(reply.pod),
                Err(_) => {}
            }
        }
        if strangers.is_empty() && seen.len() == pods.len() {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the load balancer reaches {pods:?}: saw {seen:?} and old pods {strangers:?}"
        );
        if !strangers.is_empty() {
            seen.clear();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const CLIENTS: usize = 4;
const ADDS: usize = 25;

/// Whether some client saw a total lower than one it had seen before.
fn someone_saw_it_go_down(clients: &[Vec<Reply>]) -> bool {
    clients.iter().any(|replies| {
        replies
            .iter()
            .scan(i64::MIN, |max, r| {
                let down = r.total < *max;
                *max = (*max).max(r.total);
                Some(down)
            })
            .any(|down| down)
    })
}

#[test]
fn the_adder_story_memory_disagrees_and_a_shared_locked_file_agrees() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    pack(&berth, &adder_binary(), "adder:latest");
    let port = common::free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));

    // Stage 1: a total in each replica's memory.
    kubectl.apply(&stage("1-memory.yaml", port));
    let pods = wait_three_ready(&kubectl);
    wait_balanced(address, &pods);
    let mut attempts = Vec::new();
    let stage1_ok = (0..3).any(|_| {
        let clients = run_clients(address, CLIENTS, ADDS);
        let replies: Vec<&Reply> = clients.iter().flatten().collect();
        assert!(replies.iter().all(|r| pods.contains(&r.pod)), "{replies:?}");
        // What each replica said the total was, last.
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &replies {
            let t = last.entry(r.pod.as_str()).or_insert(r.total);
            *t = (*t).max(r.total);
        }
        let totals: BTreeSet<i64> = last.values().copied().collect();
        let disagree = totals.len() > 1;
        let went_down = someone_saw_it_go_down(&clients);
        attempts.push(format!(
            "replicas' totals {last:?}, someone saw it go down: {went_down}"
        ));
        disagree && went_down
    });
    eprintln!("stage 1 (memory): {attempts:#?}");
    assert!(
        stage1_ok,
        "memory mode should show disagreeing totals and a total going down: {attempts:#?}"
    );

    // Stage 2: the total in one file on a shared volume, applied over stage 1.
    kubectl.apply(&stage("2-shared-volume.yaml", port));
    let claim = kubectl.ok(&[
        "get",
        "pvc",
        "adder-total",
        "-o",
        "jsonpath={.spec.accessModes[0]} {.spec.storageClassName}",
    ]);
    assert_eq!(claim.trim(), "ReadWriteMany local-path");
    let pods = wait_three_ready(&kubectl);
    let before = wait_balanced(address, &pods);
    assert!(before.values().all(|&t| t == 0), "a fresh file: {before:?}");
    let clients = run_clients(address, CLIENTS, ADDS);
    let n = assert_one_growing_total(&clients, &pods, 0);
    // Every total distinct: with 100 adds of 1, exactly 1..=100, each returned once.
    assert_eq!(n, (CLIENTS * ADDS) as i64);
    eprintln!("stage 2 (shared file): totals 1..={n}, each once");
    let after = wait_balanced(address, &pods);
    assert!(
        after.values().all(|&t| t == n),
        "every replica says {n}: {after:?}"
    );
}

/// Checks what `clients` saw after adding 1 each time to a total that was `start`: every
/// total distinct and exactly `start+1..=start+n`, each client's growing, and more than one
/// replica answering; returns `n`.
#[track_caller]
fn assert_one_growing_total(clients: &[Vec<Reply>], pods: &BTreeSet<String>, start: i64) -> i64 {
    let mut all: Vec<i64> = Vec::new();
    let mut answered = BTreeSet::new();
    for replies in clients {
        let totals: Vec<i64> = replies.iter().map(|r| r.total).collect();
        assert!(
            totals.windows(2).all(|w| w[0] < w[1]),
            "a client's totals only grow: {totals:?}"
        );
        all.extend(&totals);
        answered.extend(replies.iter().map(|r| r.pod.clone()));
    }
    assert!(answered.is_subset(pods), "{answered:?} of {pods:?}");
    assert!(
        answered.len() > 1,
        "the adds went through several replicas: {answered:?}"
    );
    all.sort_unstable();
    let n = all.len() as i64;
    assert_eq!(all, (start + 1..=start + n).collect::<Vec<_>>());
    n
}

/// postgres-0 as kubectl shows it: uid, pod IP, and whether it is ready and not deleting.
fn postgres_pod(kubectl: &Kubectl) -> Option<(String, String, bool)> {
    let run = kubectl.run(&[
        "get",
        "pod",
        "postgres-0",
        "-o",
        r#"jsonpath={.metadata.uid} {.status.podIP} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}"#,
    ]);
    if run.code != 0 {
        return None;
    }
    let parts: Vec<&str> = run.stdout.split_whitespace().collect();
    match parts.as_slice() {
        [uid, ip, ready] => Some((uid.to_string(), ip.to_string(), *ready == "True")),
        [uid, ..] => Some((uid.to_string(), String::new(), false)),
        [] => None,
    }
}

/// Waits until postgres-0 is ready and is not the pod `not_uid`; returns its uid and IP.
fn wait_postgres(kubectl: &Kubectl, not_uid: Option<&str>) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some((uid, ip, true)) = postgres_pod(kubectl)
            && Some(uid.as_str()) != not_uid
        {
            return (uid, ip);
        }
        assert!(
            Instant::now() < deadline,
            "postgres-0 ready: {:?}\n{}\n{}",
            postgres_pod(kubectl),
            kubectl.run(&["describe", "pod", "postgres-0"]).stdout,
            kubectl.run(&["logs", "postgres-0"]).stdout
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The claim postgres-0 uses: `<phase> <class> <volume>`.
fn postgres_claim(kubectl: &Kubectl) -> String {
    let claim = kubectl.ok(&[
        "get",
        "pod",
        "postgres-0",
        "-o",
        "jsonpath={.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}",
    ]);
    assert_eq!(claim.trim(), "data-postgres-0");
    kubectl
        .ok(&[
            "get",
            "pvc",
            "data-postgres-0",
            "-o",
            "jsonpath={.status.phase} {.spec.storageClassName} {.spec.volumeName}",
        ])
        .trim()
        .to_string()
}

/// Waits until postgres-0's stable DNS name (the short one, through the search path, as the
/// adders use it) resolves to `ip` inside the pod.
fn wait_dns(kubectl: &Kubectl, ip: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = kubectl.run(&[
            "exec",
            "postgres-0",
            "--",
            "getent",
            "hosts",
            "postgres-0.postgres",
        ]);
        let answer = run
            .stdout
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        if answer == ip {
            assert!(
                run.stdout
                    .contains("postgres-0.postgres.default.svc.cluster.local"),
                "{run:?}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "postgres-0.postgres resolves to {ip}: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The total as PostgreSQL itself has it, through psql in postgres-0.
fn total_in_postgres(kubectl: &Kubectl) -> i64 {
    let out = kubectl.ok(&[
        "exec",
        "postgres-0",
        "--",
        "sh",
        "-c",
        r#"exec "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/psql" -X -At -h /tmp/postgresql -U postgres -d adder -c 'SELECT value FROM total'"#,
    ]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("psql said {out:?}"))
}

/// One add sent while the database may be away: the reply, or the error, and how long it took.
struct OutageAdd {
    result: Result<i64, String>,
    took: Duration,
}

#[test]
fn the_adder_story_database_in_a_stateful_set_survives_its_pod_restarting() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    pack(&berth, &adder_binary(), "adder:latest");
    let port = common::free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));

    // Stage 3: PostgreSQL in a StatefulSet, the adders in db mode.
    kubectl.apply(&stage("3-database.yaml", port));
    let (uid, ip) = wait_postgres(&kubectl, None);
    let claim = postgres_claim(&kubectl);
    assert!(claim.starts_with("Bound local-path pvc-"), "{claim}");
    wait_dns(&kubectl, &ip);
    let pods = wait_three_ready(&kubectl);
    let before = wait_balanced(address, &pods);
    assert!(
        before.values().all(|&t| t == 0),
        "a fresh database: {before:?}"
    );
    let clients = run_clients(address, CLIENTS, ADDS);
    let n = assert_one_growing_total(&clients, &pods, 0);
    assert_eq!(n, (CLIENTS * ADDS) as i64);
    assert_eq!(total_in_postgres(&kubectl), n);
    eprintln!("stage 3 (database): totals 1..={n}, each once; postgres-0 is {uid} at {ip}");

    // Delete the database's pod while users keep adding.
    let total_before = request(address, "GET", "/total", "").expect("total").total;
    assert_eq!(total_before, n);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outage_clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut adds = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    let result =
                        request_within(address, "POST", "/add", "1", Duration::from_secs(90))
                            .map(|r| r.total);
                    adds.push(OutageAdd {
                        result,
                        took: sent.elapsed(),
                    });
                    std::thread::sleep(Duration::from_millis(100));
                }
                adds
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let deleted = Instant::now();
    kubectl.ok(&["delete", "pod", "postgres-0", "--wait=false"]);
    let (new_uid, new_ip) = wait_postgres(&kubectl, Some(&uid));
    let back_after = deleted.elapsed();
    // Same name (it is postgres-0 by construction), a new pod, the same claim and volume.
    assert_ne!(new_uid, uid);
    assert_eq!(postgres_claim(&kubectl), claim, "the same claim and volume");
    wait_dns(&kubectl, &new_ip);
    // Let the users' adds run on the new pod for a moment, then stop them.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outage: Vec<Vec<OutageAdd>> = outage_clients
        .into_iter()
        .map(|t| t.join().expect("outage client"))
        .collect();

    let mut succeeded: Vec<i64> = Vec::new();
    let mut failed = Vec::new();
    let mut slowest = Duration::ZERO;
    for adds in &outage {
        let totals: Vec<i64> = adds.iter().filter_map(|a| a.result.clone().ok()).collect();
        assert!(
            totals.windows(2).all(|w| w[0] < w[1]),
            "a client's totals only grow across the restart: {totals:?}"
        );
        succeeded.extend(&totals);
        for a in adds {
            slowest = slowest.max(a.took);
            if let Err(e) = &a.result {
                failed.push(e.clone());
            }
        }
    }
    succeeded.sort_unstable();
    let s = succeeded.len() as i64;
    let unknown = failed
        .iter()
        .filter(|e| e.contains("may or may not"))
        .count() as i64;
    eprintln!(
        "postgres-0 back as {new_uid} at {new_ip} after {back_after:?}; {s} adds succeeded during \
         and after it (slowest {slowest:?}), {} failed: {failed:?}",
        failed.len()
    );
    // Every add that succeeded got a total of its own, right after the ones before it.
    assert_eq!(succeeded, (n + 1..=n + s).collect::<Vec<_>>());
    // A failure is a clean 503 saying so, never a wrong total.
    assert!(
        failed.iter().all(|e| e.contains("503")),
        "failures during the outage are clean 503s: {failed:?}"
    );
    assert!(
        slowest > Duration::from_millis(200),
        "some add waited for the database: slowest {slowest:?}"
    );
    // The total survived the pod: what it was before the deletion plus exactly the adds
    // that succeeded (an add whose outcome was reported unknown may be in it).
    let after = request(address, "GET", "/total", "").expect("total").total;
    assert!(
        (total_before + s..=total_before + s + unknown).contains(&after),
        "before {total_before}, {s} adds succeeded, {unknown} unknown, now {after}"
    );
    assert_eq!(total_in_postgres(&kubectl), after);
    let replicas = wait_balanced(address, &pods);
    assert!(
        replicas.values().all(|&t| t == after),
        "every replica says {after}: {replicas:?}"
    );
}

/// `berth demo adder --data-dir <this server's> --adder <built adder> --port <port> <extra>`.
fn demo(berth: &Berth, port: u16, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["demo", "adder", "--data-dir"])
        .arg(berth.data_dir())
        .arg("--adder")
        .arg(adder_binary())
        .args(["--port", &port.to_string()])
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run berth demo adder")
}

/// The number after `prefix` on the first line of `text` that has it.
fn number_after(text: &str, prefix: &str) -> Option<i64> {
    let at = text.find(prefix)? + prefix.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn berth_demo_adder_tells_the_story_and_fails_when_it_does_not_hold() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    let port = common::free_port();

    // One replica in memory cannot show the bug: the demo says so and exits non-zero.
    let single = demo(&berth, port, &["--replicas", "1", "--adds", "5"]);
    let stdout = String::from_utf8_lossy(&single.stdout);
    let stderr = String::from_utf8_lossy(&single.stderr);
    assert!(!single.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("expected users to see different totals and a total going down"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Stage 1 — memory"), "{stdout}");
    assert!(
        !stdout.contains("Stage 2"),
        "it stops at the first broken promise"
    );

    // The whole story.
    let run = demo(&berth, port, &[]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stdout}");
    assert!(run.status.success(), "{stdout}\n{stderr}");
    for line in [
        "✔ as the story says: each replica counts only the adds it served",
        "claim adder-total: Bound, volume pvc-",
        "postgres-0.postgres.default.svc.cluster.local → ",
        "The story held at every stage.",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // What it printed matches the cluster: the database's total, its pod and its claim.
    let total = number_after(&stdout, "✔ the same total: ").expect("the final total");
    assert_eq!(total_in_postgres(&kubectl), total);
    let uid = kubectl.ok(&["get", "pod", "postgres-0", "-o", "jsonpath={.metadata.uid}"]);
    assert!(
        stdout.contains(&format!("a new pod (uid {})", uid.trim())),
        "{stdout}"
    );
    let volume = kubectl.ok(&[
        "get",
        "pvc",
        "data-postgres-0",
        "-o",
        "jsonpath={.spec.volumeName}",
    ]);
    assert!(
        stdout.contains(&format!("data-postgres-0 (Bound) → {}", volume.trim())),
        "{stdout}"
    );
    // Each consistent stage added what its users sent, 4 users × 25 adds of 1 to 9.
    assert_eq!(stdout.matches("✔ total ").count(), 2, "{stdout}");
}
