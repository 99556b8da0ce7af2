//! Consensus in a StatefulSet: examples/etcd/etcd.yaml, applied unchanged, runs a 3-member
//! etcd cluster (Debian's etcd through the host-program image) whose members find each other
//! by their stable DNS names (`etcd-N.etcd`, through the headless Service) and keep their data
//! on their own claims. The test writes through one member and reads through the others, then
//! deletes a member's pod while a client keeps writing through another member: the cluster
//! keeps serving on its quorum of two, and the member comes back under the same name, on the
//! same claim and volume, as the same member (same ID) with everything written before and
//! while it was away in its own store.
//!
//! To hold the outage open for as long as the test needs (a replacement pod would otherwise
//! be back within a second or two, racing the writes meant to land while it is away), the
//! node is cordoned before the deletion: the StatefulSet controller makes the new etcd-1 at
//! once, and it stays Pending until the node is uncordoned.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Berth, Kubectl, Run, eventually};
use serde_json::Value;

/// Long enough for a loaded two-core machine running other tests at the same time.
const WAIT: Duration = Duration::from_secs(180);

const MEMBERS: [&str; 3] = ["etcd-0", "etcd-1", "etcd-2"];

/// The example, exactly as users apply it.
fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/etcd/etcd.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `etcdctl` run inside pod `pod`, talking to `member` at its stable DNS name
/// (`etcd-1.etcd`), or to the client Service if `member` is `etcd-client`.
fn etcdctl(kubectl: &Kubectl, pod: &str, member: &str, args: &[&str]) -> Run {
    let host = match member {
        "etcd-client" => member.to_string(),
        _ => format!("{member}.etcd"),
    };
    let endpoints = format!("--endpoints=http://{host}:2379");
    let mut argv = vec![
        "exec",
        pod,
        "--",
        "etcdctl",
        endpoints.as_str(),
        "--command-timeout=5s",
    ];
    argv.extend_from_slice(args);
    kubectl.run(&argv)
}

/// [`etcdctl`] that must succeed; its stdout.
fn etcdctl_ok(kubectl: &Kubectl, pod: &str, member: &str, args: &[&str]) -> Result<String, String> {
    let run = etcdctl(kubectl, pod, member, args);
    if run.code == 0 {
        Ok(run.stdout)
    } else {
        Err(format!("etcdctl {args:?} via {member} in {pod}: {run:?}"))
    }
}

/// One member as `member list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Member {
    name: String,
    id: u64,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The membership as `member` sees it, sorted by name.
fn members(kubectl: &Kubectl, member: &str) -> Result<Vec<Member>, String> {
    let out = etcdctl_ok(kubectl, member, member, &["member", "list", "-w", "json"])?;
    let json: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let mut list: Vec<Member> = json["members"]
        .as_array()
        .ok_or_else(|| format!("no members in {out}"))?
        .iter()
        .map(|m| Member {
            name: m["name"].as_str().unwrap_or("").to_string(),
            id: m["ID"].as_u64().unwrap_or(0),
            peer_urls: strings(&m["peerURLs"]),
            client_urls: strings(&m["clientURLs"]),
        })
        .collect();
    list.sort();
    Ok(list)
}

/// The ID of the member answering at `member`'s own endpoint (`endpoint status`).
fn member_id(kubectl: &Kubectl, member: &str) -> Result<u64, String> {
    let out = etcdctl_ok(
        kubectl,
        member,
        member,
        &["endpoint", "status", "-w", "json"],
    )?;
    let json: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    json[0]["Status"]["header"]["member_id"]
        .as_u64()
        .ok_or_else(|| format!("no member_id in {out}"))
}

/// The keys under `prefix` in `member`'s own store: a serializable read, answered from the
/// member's local data without asking the leader.
fn local_keys(kubectl: &Kubectl, member: &str, prefix: &str) -> Result<BTreeSet<String>, String> {
    let out = etcdctl_ok(
        kubectl,
        member,
        member,
        &["get", prefix, "--prefix", "--keys-only", "--consistency=s"],
    )?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn pod(kubectl: &Kubectl, name: &str) -> Value {
    let run = kubectl.run(&["get", "pod", name, "-o", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or(Value::Null)
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The claim behind the pod's `data` volume.
fn claim_of(pod: &Value) -> String {
    pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "data"))
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .unwrap_or("")
        .to_string()
}

/// A claim's phase and volume.
fn claim(kubectl: &Kubectl, name: &str) -> (String, String) {
    let out = kubectl.ok(&[
        "get",
        "pvc",
        name,
        "-o",
        "jsonpath={.status.phase} {.spec.volumeName}",
    ]);
    let (phase, volume) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    (phase.to_string(), volume.to_string())
}

/// What the pods are doing and what etcd said, for failure messages.
fn diagnose(kubectl: &Kubectl) -> String {
    let mut text = kubectl.run(&["get", "pods,pvc", "-o", "wide"]).stdout;
    for name in MEMBERS {
        let logs = kubectl.run(&["logs", name, "--tail=15"]);
        text.push_str(&format!("--- {name}:\n{}{}", logs.stdout, logs.stderr));
    }
    text.push_str(&kubectl.run(&["get", "events"]).stdout);
    text
}

/// Polls `check` until it gives a value; past [`WAIT`], fails with [`diagnose`] (gathered
/// only then: it runs several kubectl commands, too many for every poll on a busy machine).
#[track_caller]
fn wait_for<T>(kubectl: &Kubectl, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} (waited {WAIT:?}):\n{}",
            diagnose(kubectl)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until the three members run Ready; returns their pods.
fn all_ready(kubectl: &Kubectl) -> Vec<Value> {
    wait_for(kubectl, "etcd-0..2 Running and Ready", || {
        let pods: Vec<Value> = MEMBERS.iter().map(|n| pod(kubectl, n)).collect();
        pods.iter().all(is_ready).then_some(pods)
    })
}

/// One write of the background client.
struct Write {
    key: String,
    done: Instant,
    result: Result<(), String>,
}

/// Sets the flag when dropped, so a failing assertion stops the writer instead of leaving
/// `thread::scope` waiting for it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Writes `during/<n>` through etcd-0 (from inside etcd-0) one after another until `stop`.
fn writer(kubectl: &Kubectl, stop: &AtomicBool, log: &std::sync::Mutex<Vec<Write>>) {
    let give_up = Instant::now() + Duration::from_secs(600);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
        let key = format!("during/{n:05}");
        let value = n.to_string();
        let result = etcdctl_ok(kubectl, "etcd-0", "etcd-0", &["put", &key, &value]).and_then(
            |out| match out.trim() {
                "OK" => Ok(()),
                other => Err(format!("put said {other:?}")),
            },
        );
        log.lock().unwrap().push(Write {
            key,
            done: Instant::now(),
            result,
        });
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Successful writes finished after `since` (and before `until`, if given).
fn succeeded(log: &std::sync::Mutex<Vec<Write>>, since: Instant, until: Option<Instant>) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|w| w.result.is_ok() && w.done > since && until.is_none_or(|u| w.done < u))
        .count()
}

#[test]
fn etcd_in_a_stateful_set_keeps_quorum_and_its_members_identity_across_a_pod_deletion() {
    let started = Instant::now();
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    kubectl.apply(&example());

    // Three members, each on its own bound claim.
    let pods = all_ready(&kubectl);
    let formed = started.elapsed();
    let mut volumes = Vec::new();
    for (name, pod) in MEMBERS.iter().zip(&pods) {
        let claim_name = format!("data-{name}");
        assert_eq!(claim_of(pod), claim_name, "{name}'s data volume");
        let (phase, volume) = claim(&kubectl, &claim_name);
        assert_eq!(phase, "Bound", "{claim_name}");
        assert!(volume.starts_with("pvc-"), "{claim_name} → {volume:?}");
        volumes.push(volume);
    }
    assert_eq!(
        volumes.iter().collect::<BTreeSet<_>>().len(),
        3,
        "a volume each: {volumes:?}"
    );

    // Written through one member, read through the others (and through the client Service).
    let put = etcdctl_ok(&kubectl, "etcd-0", "etcd-0", &["put", "k", "v"]).unwrap();
    assert_eq!(put.trim(), "OK");
    for member in ["etcd-1", "etcd-2"] {
        let got = etcdctl_ok(
            &kubectl,
            member,
            member,
            &["get", "k", "--print-value-only"],
        );
        assert_eq!(got.unwrap().trim(), "v", "k read through {member}");
    }
    let got = etcdctl_ok(&kubectl, "etcd-2", "etcd-client", &["get", "k"]).unwrap();
    assert_eq!(got.trim(), "k\nv", "k read through the etcd-client Service");

    // The members are etcd-0..2, addressed by their stable DNS names.
    let before = members(&kubectl, "etcd-0").unwrap();
    let names: Vec<&str> = before.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, MEMBERS, "{before:?}");
    for m in &before {
        assert_eq!(
            m.peer_urls,
            [format!("http://{}.etcd:2380", m.name)],
            "{m:?}"
        );
        assert_eq!(
            m.client_urls,
            [format!("http://{}.etcd:2379", m.name)],
            "{m:?}"
        );
    }
    assert_eq!(
        before.iter().map(|m| m.id).collect::<BTreeSet<_>>().len(),
        3,
        "three IDs: {before:?}"
    );
    let id = member_id(&kubectl, "etcd-1").unwrap();
    assert_eq!(id, before[1].id, "etcd-1's endpoint is member etcd-1");
    let old_uid = uid(&pods[1]);
    // etcd-1 started on an empty data dir (a new member, from the --initial-cluster flags).
    let first_log = kubectl.ok(&["logs", "etcd-1"]);
    assert!(
        first_log.contains(r#""msg":"starting local member""#)
            && !first_log.contains("server has been already initialized"),
        "etcd-1 bootstrapped: {first_log}"
    );

    let nodes = kubectl.ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    let nodes: Vec<&str> = nodes.split_whitespace().collect();
    let &[node] = nodes.as_slice() else {
        panic!("one node: {nodes:?}");
    };

    let stop = AtomicBool::new(false);
    let log = std::sync::Mutex::new(Vec::new());
    let writer_kubectl = berth.kubectl();
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let writing = Instant::now();
        scope.spawn(|| writer(&writer_kubectl, &stop, &log));
        eventually(
            "writes through etcd-0 before the deletion",
            WAIT,
            || match succeeded(&log, writing, None) {
                n if n >= 2 => Ok(()),
                n => Err(format!("{n} succeeded")),
            },
        );

        // etcd-1 goes away, and its replacement waits on the cordoned node.
        kubectl.ok(&["cordon", node]);
        kubectl.ok(&["delete", "pod", "etcd-1", "--wait=true", "--timeout=180s"]);
        let gone = Instant::now();
        eventually("a new etcd-1, Pending on the cordoned node", WAIT, || {
            let p = pod(&kubectl, "etcd-1");
            let new = !uid(&p).is_empty() && uid(&p) != old_uid;
            if new && p["status"]["phase"] == "Pending" && p["spec"]["nodeName"].is_null() {
                Ok(())
            } else {
                Err(format!("{:#}", p["status"]))
            }
        });
        let health = etcdctl(&kubectl, "etcd-0", "etcd-1", &["endpoint", "health"]);
        assert_ne!(
            health.code, 0,
            "etcd-1 does not answer while away: {health:?}"
        );

        // The other two are a quorum of three: writes through etcd-0 go on.
        eventually(
            "writes through etcd-0 while etcd-1 is away",
            WAIT,
            || match succeeded(&log, gone, None) {
                n if n >= 5 => Ok(()),
                n => Err(format!("{n} succeeded since etcd-1 went away")),
            },
        );
        let still = members(&kubectl, "etcd-2").unwrap();
        assert_eq!(still, before, "etcd-1 is still a member while away");
        let uncordoned = Instant::now();
        kubectl.ok(&["uncordon", node]);
        let during = succeeded(&log, gone, Some(uncordoned));
        let away = uncordoned - gone;

        // etcd-1 is back: a new pod on the same claim and volume.
        let back = wait_for(&kubectl, "etcd-1 back and Ready", || {
            let p = pod(&kubectl, "etcd-1");
            (uid(&p) != old_uid && is_ready(&p)).then_some(p)
        });
        let back_after = uncordoned.elapsed();
        assert_eq!(claim_of(&back), "data-etcd-1");
        // etcd found its data on the claim and restarted the member it holds.
        let second_log = kubectl.ok(&["logs", "etcd-1"]);
        assert!(
            second_log.contains(r#""msg":"server has been already initialized""#)
                && second_log.contains(r#""msg":"restarting local member""#),
            "etcd-1 restarted from its data: {second_log}"
        );
        assert_eq!(
            claim(&kubectl, "data-etcd-1"),
            ("Bound".to_string(), volumes[1].clone()),
            "the same claim and volume"
        );
        // A few more writes with all three members up, then the writer stops.
        let returned = Instant::now();
        eventually(
            "writes through etcd-0 after etcd-1 returned",
            WAIT,
            || match succeeded(&log, returned, None) {
                n if n >= 2 => Ok(()),
                n => Err(format!("{n} succeeded")),
            },
        );
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "cluster formed in {formed:?}; etcd-1 away {away:?} ({during} writes succeeded \
             meanwhile), Ready {back_after:?} after the uncordon"
        );
    });

    // Every write succeeded in the end: none failed for long (a failed write is allowed while
    // a new leader is elected, if etcd-1 led).
    let log = log.into_inner().unwrap();
    let failed: Vec<&String> = log.iter().filter_map(|w| w.result.as_ref().err()).collect();
    let ok: Vec<&Write> = log.iter().filter(|w| w.result.is_ok()).collect();
    let longest = ok
        .windows(2)
        .map(|w| w[1].done - w[0].done)
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_secs(30),
        "writes through etcd-0 kept succeeding: longest gap {longest:?}; failures {failed:?}"
    );
    eprintln!(
        "{} writes succeeded, {} failed (longest gap between successes {longest:?}): {failed:?}",
        ok.len(),
        failed.len()
    );

    // The same member, in a membership of the same three.
    assert_eq!(
        member_id(&kubectl, "etcd-1").unwrap(),
        id,
        "etcd-1's member ID"
    );
    assert_eq!(members(&kubectl, "etcd-1").unwrap(), before);
    assert_eq!(members(&kubectl, "etcd-0").unwrap(), before);

    // etcd-1's own store has the key from before and every write it missed.
    let written: BTreeSet<String> = ok.iter().map(|w| w.key.clone()).collect();
    eventually("etcd-1 caught up in its own store", WAIT, || {
        let k = etcdctl_ok(
            &kubectl,
            "etcd-1",
            "etcd-1",
            &["get", "k", "--print-value-only", "--consistency=s"],
        )?;
        if k.trim() != "v" {
            return Err(format!("k is {k:?}"));
        }
        let keys = local_keys(&kubectl, "etcd-1", "during/")?;
        let missing: Vec<&String> = written.difference(&keys).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    });
}
