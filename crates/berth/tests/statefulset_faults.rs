//! StatefulSet safety under faults, on the real `berth up` driven by the real kubectl with
//! busybox pods (issue 7 points 5, 7 and 8; reliability cases H1 and H3):
//!
//! - **At most one**: while 50 random pod deletions (graceful, `--grace-period=1` and
//!   `--force --grace-period=0`) hit a set of three, a watcher samples the host's processes
//!   every ~20 ms and no identity ever has live processes of two pods (two uids) at once.
//! - **H1**: pods append a sequence number and fsync it to their own claim; scaling 3 → 1
//!   stops ordinal 2, then 1; the claims and their files stay; every line a pod reported as
//!   fsynced is in its file, which holds consecutive numbers and no torn line.
//! - **H3**: under OrderedReady a never-Ready `web-1` holds back `web-2`, and (as upstream)
//!   scale-down waits while a remaining pod is unhealthy; only the first unhealthy pod may
//!   itself be scaled away.

mod common;
mod podkit;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Kubectl, eventually};
use podkit::start;
use serde_json::Value;

/// Long enough for a loaded two-core machine to start several pods one after another.
const WAIT: Duration = Duration::from_secs(240);

/// The headless Service the sets name.
const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {tier: web}
  ports: [{port: 80, name: web}]
"#;

/// A StatefulSet `name` of `replicas` busybox pods running `script` (with POD_NAME and
/// POD_UID from the downward API), with the claim template `data` mounted at /data when
/// `claims`. `spec_extra` is YAML for the spec (indented two spaces), `container_extra` for
/// the container (six).
fn stateful_set(
    name: &str,
    replicas: u32,
    grace: u32,
    script: &str,
    claims: bool,
    spec_extra: &str,
    container_extra: &str,
) -> String {
    let script = serde_json::to_string(script).expect("a JSON string");
    let (mount, templates) = if claims {
        (
            "        volumeMounts: [{name: data, mountPath: /data}]\n",
            "  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {requests: {storage: 16Mi}}\n",
        )
    } else {
        ("", "")
    };
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: web
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
{spec_extra}
  template:
    metadata:
      labels: {{app: {name}, tier: web}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
      - name: main
        image: busybox:test
        command: ["sh", "-c", {script}]
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}
{mount}{container_extra}
{templates}"#
    )
}

fn json(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl.ok(&args)).expect("kubectl printed JSON")
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn uid_of(object: &Value) -> String {
    object["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// The pods labelled app=`app`, by name.
fn pods(kubectl: &Kubectl, app: &str) -> BTreeMap<String, Value> {
    let selector = format!("app={app}");
    json(kubectl, &["get", "pods", "-l", &selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| (name_of(&p), p))
        .collect()
}

fn get(kubectl: &Kubectl, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let jsonpath = format!("jsonpath={path}");
    args.extend(["-o", &jsonpath]);
    kubectl.run(&args).stdout.trim().to_string()
}

fn events(kubectl: &Kubectl) -> String {
    kubectl
        .run(&["get", "events", "--sort-by=.lastTimestamp"])
        .stdout
}

/// Waits until exactly `names` are labelled app=`app`, all Running, Ready and not
/// terminating.
#[track_caller]
fn all_ready(kubectl: &Kubectl, app: &str, names: &[&str]) -> BTreeMap<String, Value> {
    eventually(&format!("{names:?} Running and Ready"), WAIT, || {
        let now = pods(kubectl, app);
        let ready: Vec<&str> = now
            .iter()
            .filter(|(_, p)| is_ready(p) && !terminating(p))
            .map(|(n, _)| n.as_str())
            .collect();
        if ready == names && now.len() == names.len() {
            Ok(now)
        } else {
            Err(format!(
                "ready {ready:?} of {:?}\n{}",
                now.keys().collect::<Vec<_>>(),
                events(kubectl)
            ))
        }
    })
}

/// Holds for `how_long`, checking `invariant` every 200 ms; panics at the first violation.
#[track_caller]
fn holds_for(what: &str, how_long: Duration, mut invariant: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        if let Err(e) = invariant() {
            panic!("{what}: {e}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A small deterministic generator (xorshift64*), seeded from the clock and printed, so a
/// failing run can be replayed with STS_FAULTS_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("STS_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("random deletions with STS_FAULTS_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A marker unique to this test run: pods put `<prefix><pod name>:<pod uid>` on the command
/// line of their long-running process, so the host's process table says which pod (identity
/// and uid) each process belongs to.
fn marker_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("stsfault:{test}{}x{nanos}:", std::process::id())
}

/// The (pid, identity, uid) of every live process on the host carrying `prefix`.
fn marked_processes(prefix: &str) -> Vec<(u32, String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some((identity, uid)) = marker_of(pid, prefix) {
            found.push((pid, identity, uid));
        }
    }
    found
}

/// The identity and uid in process `pid`'s command line, if it is alive (a zombie has an
/// empty command line) and carries `prefix`.
fn marker_of(pid: u32, prefix: &str) -> Option<(String, String)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline.split(|b| *b == 0).find_map(|arg| {
        let arg = std::str::from_utf8(arg).ok()?;
        let (identity, uid) = arg.strip_prefix(prefix)?.split_once(':')?;
        Some((identity.to_string(), uid.to_string()))
    })
}

/// Identities that have live processes of two uids in one sample. A scan of /proc is not
/// atomic — an old process read early may exit before a new one read later starts — so a
/// suspect pair is confirmed: the earlier-read processes are re-read after the later ones
/// were seen alive; a process that is still there was alive the whole time in between.
fn doubled(prefix: &str, sample: &[(u32, String, String)]) -> Vec<String> {
    let mut by_identity: BTreeMap<&str, Vec<(u32, &str)>> = BTreeMap::new();
    for (pid, identity, uid) in sample {
        by_identity.entry(identity).or_default().push((*pid, uid));
    }
    let mut found = Vec::new();
    for (identity, processes) in by_identity {
        let uids: BTreeSet<&str> = processes.iter().map(|(_, u)| *u).collect();
        if uids.len() < 2 {
            continue;
        }
        let still: BTreeSet<String> = processes
            .iter()
            .filter(|(pid, uid)| {
                marker_of(*pid, prefix) == Some((identity.to_string(), uid.to_string()))
            })
            .map(|(_, uid)| uid.to_string())
            .collect();
        if still.len() >= 2 {
            found.push(format!(
                "{identity}: uids {still:?} (processes {processes:?})"
            ));
        }
    }
    found
}

/// What the process watcher saw.
#[derive(Default)]
struct Watched {
    samples: u64,
    /// The longest time between two samples.
    longest_gap: Duration,
    /// Every (identity, uid) seen with a live process.
    seen: BTreeSet<(String, String)>,
    violations: Vec<String>,
}

/// Samples the host's processes carrying `prefix` every ~20 ms until `stop`.
fn watch_processes(prefix: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Watched> {
    std::thread::spawn(move || {
        let mut watched = Watched::default();
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let sample = marked_processes(&prefix);
            for bad in doubled(&prefix, &sample) {
                if watched.violations.len() < 20 {
                    watched.violations.push(bad);
                }
            }
            for (_, identity, uid) in sample {
                watched.seen.insert((identity, uid));
            }
            watched.samples += 1;
            watched.longest_gap = watched.longest_gap.max(last.elapsed());
            last = Instant::now();
            std::thread::sleep(Duration::from_millis(20));
        }
        watched
    })
}

/// The detector can fail: two host processes marked with one identity and two uids are
/// reported; one alone is not.
fn detector_self_check() {
    let prefix = marker_prefix("selfcheck");
    let spawn = |uid: &str| -> Child {
        Command::new("sh")
            .args(["-c", "sleep 60; true", &format!("{prefix}web-0:{uid}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a marked process")
    };
    let mut first = spawn("uid-a");
    let sample = eventually("the marked process is seen", WAIT, || {
        let sample = marked_processes(&prefix);
        (sample.len() == 1)
            .then_some(sample)
            .ok_or("not yet".into())
    });
    assert!(
        doubled(&prefix, &sample).is_empty(),
        "one process is not two"
    );
    let mut second = spawn("uid-b");
    let found = eventually("the doubled identity is reported", WAIT, || {
        let found = doubled(&prefix, &marked_processes(&prefix));
        (!found.is_empty()).then_some(found).ok_or("not yet".into())
    });
    assert!(found[0].starts_with("web-0"), "{found:?}");
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The watcher sees real pods: two bare pods that both claim one identity (each with its
/// own uid) are reported as that identity running twice.
fn detector_sees_pods(kubectl: &Kubectl) {
    let prefix = marker_prefix("decoy");
    let script = serde_json::to_string(&format!(
        "exec sh -c 'while :; do sleep 1; done' \"{prefix}web-0:$POD_UID\""
    ))
    .expect("a JSON string");
    for name in ["decoy-a", "decoy-b"] {
        kubectl.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox:test\n    command: [\"sh\", \"-c\", {script}]\n    env: [{{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}]\n"
        ));
    }
    let found = eventually("the two decoys are reported as web-0 twice", WAIT, || {
        let found = doubled(&prefix, &marked_processes(&prefix));
        (!found.is_empty()).then_some(found).ok_or("not yet".into())
    });
    assert!(found[0].starts_with("web-0"), "{found:?}");
    kubectl.ok(&["delete", "pod", "decoy-a", "decoy-b", "--wait=false"]);
}

/// Issue 7 point 7's last test: 50 random deletions of the pods of a set of three, sampled
/// on the host; never two pods of one identity alive at once; then all three Running and
/// Ready with their claims.
fn at_most_one_pod_per_identity(set: &str, spec_extra: &str) {
    detector_self_check();
    let (_berth, kubectl) = start();
    detector_sees_pods(&kubectl);
    kubectl.apply(SERVICE);
    let prefix = marker_prefix(set);
    // TERM is ignored (and stays ignored across exec), so every deletion takes its whole
    // grace period: old processes linger while the replacement is being made.
    let script = format!(
        "trap '' TERM; exec sh -c 'while :; do sleep 1; done' \"{prefix}$POD_NAME:$POD_UID\""
    );
    kubectl.apply(&stateful_set(set, 3, 3, &script, true, spec_extra, ""));
    let names: Vec<String> = (0..3).map(|i| format!("{set}-{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let first = all_ready(&kubectl, set, &name_refs);

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_processes(prefix.clone(), stop.clone());
    // The watcher sees the running pods before the first deletion.
    eventually("the watcher sees the pods' processes", WAIT, || {
        let sample = marked_processes(&prefix);
        let running: BTreeSet<(String, String)> =
            sample.into_iter().map(|(_, i, u)| (i, u)).collect();
        let expected: BTreeSet<(String, String)> =
            first.values().map(|p| (name_of(p), uid_of(p))).collect();
        (running == expected)
            .then_some(())
            .ok_or(format!("{running:?} != {expected:?}"))
    });

    let mut rng = Rng::new();
    let mut done = BTreeMap::<&str, u32>::new();
    let mut deleted = 0;
    let deadline = Instant::now() + WAIT * 3;
    while deleted < 50 {
        assert!(
            Instant::now() < deadline,
            "only {deleted} deletions in time: {done:?}"
        );
        let pod = &names[rng.below(3) as usize];
        // A few forced, some with a one-second grace, the rest with the pod's own.
        let (kind, extra): (&str, &[&str]) = match deleted % 10 {
            3 | 8 => ("force", &["--force", "--grace-period=0"]),
            1 | 5 | 7 => ("grace-1", &["--grace-period=1"]),
            _ => ("graceful", &[]),
        };
        let mut args = vec!["delete", "pod", pod.as_str(), "--wait=false"];
        args.extend_from_slice(extra);
        let run = kubectl.run(&args);
        if run.code == 0 {
            deleted += 1;
            *done.entry(kind).or_default() += 1;
        } else {
            // Not recreated yet: the controller waits for the old object to go.
            assert!(run.stderr.contains("NotFound"), "kubectl {args:?}: {run:?}");
        }
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
    }
    eprintln!("deletions: {done:?}");

    // In the end all three run again, Ready, each with its own claim.
    let last = all_ready(&kubectl, set, &name_refs);
    for (name, pod) in &last {
        let claim = format!("data-{name}");
        let volumes = pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            volumes
                .iter()
                .any(|v| v["persistentVolumeClaim"]["claimName"] == claim.as_str()),
            "{name} mounts {claim}: {volumes:?}"
        );
        assert_eq!(get(&kubectl, &["pvc", &claim], "{.status.phase}"), "Bound");
    }
    eventually("the watcher sees the last pods' processes", WAIT, || {
        let sample = marked_processes(&prefix);
        let running: BTreeSet<(String, String)> =
            sample.into_iter().map(|(_, i, u)| (i, u)).collect();
        let expected: BTreeSet<(String, String)> =
            last.values().map(|p| (name_of(p), uid_of(p))).collect();
        (running == expected)
            .then_some(())
            .ok_or(format!("{running:?} != {expected:?}"))
    });
    // Let the watcher take a few more samples of the settled set.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let watched = watcher.join().expect("the watcher");
    let fenced = kubectl
        .run(&[
            "get",
            "events",
            "--field-selector=reason=PreviousPodStopping",
        ])
        .stdout
        .lines()
        .filter(|l| l.contains(set))
        .count();
    eprintln!(
        "{} samples, longest gap {:?}, {} pods seen running, {fenced} PreviousPodStopping events",
        watched.samples,
        watched.longest_gap,
        watched.seen.len()
    );
    assert!(
        watched.violations.is_empty(),
        "an identity ran twice at once:\n{}",
        watched.violations.join("\n")
    );
    // The watcher was not blind: it saw many replacement pods run, and sampled often.
    assert!(
        watched.seen.len() >= 3 + 15,
        "only {} pods seen running: {:?}",
        watched.seen.len(),
        watched.seen
    );
    assert!(watched.samples >= 100, "{} samples", watched.samples);
    for name in &names {
        let uids = watched.seen.iter().filter(|(i, _)| i == name).count();
        assert!(uids >= 2, "{name} was never seen replaced");
    }
}

#[test]
fn at_most_one_pod_per_identity_through_random_deletions_ordered_ready() {
    at_most_one_pod_per_identity("ord", "");
}

#[test]
fn at_most_one_pod_per_identity_through_random_deletions_parallel() {
    at_most_one_pod_per_identity("par", "  podManagementPolicy: Parallel\n");
}

/// Follows `kubectl logs -f` of a pod and keeps the highest `synced <n>` it printed, when it
/// printed `stopping` (its SIGTERM) and when its last `synced` line came.
struct SyncedFollower {
    child: Child,
    synced: Arc<AtomicU64>,
    stopping: Arc<Mutex<Option<Instant>>>,
    last_synced: Arc<Mutex<Option<Instant>>>,
}

impl SyncedFollower {
    fn start(kubectl: &Kubectl, pod: &str) -> SyncedFollower {
        let mut child = kubectl
            .command(&["logs", "-f", pod])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl logs -f");
        let stdout = child.stdout.take().expect("stdout");
        let synced = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(Mutex::new(None));
        let last_synced = Arc::new(Mutex::new(None));
        let (seen, stop, last) = (synced.clone(), stopping.clone(), last_synced.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .strip_prefix("synced ")
                    .and_then(|n| n.trim().parse().ok())
                {
                    seen.fetch_max(n, Ordering::SeqCst);
                    *last.lock().expect("lock") = Some(Instant::now());
                } else if line.trim() == "stopping" {
                    stop.lock().expect("lock").get_or_insert(Instant::now());
                }
            }
        });
        SyncedFollower {
            child,
            synced,
            stopping,
            last_synced,
        }
    }

    fn synced(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> Option<Instant> {
        *self.stopping.lock().expect("lock")
    }

    fn last_synced(&self) -> Option<Instant> {
        *self.last_synced.lock().expect("lock")
    }
}

impl Drop for SyncedFollower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers in a writer's log: every line complete, 1, 2, 3, … with no gap, repeat or
/// torn line; returns the last.
fn consecutive(name: &str, text: &str) -> Result<u64, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!(
            "{name}: the last line is torn: {:?}",
            text.lines().last()
        ));
    }
    let mut expected = 1;
    for line in text.lines() {
        let n: u64 = line
            .parse()
            .map_err(|_| format!("{name}: line {expected} is {line:?}"))?;
        if n != expected {
            return Err(format!("{name}: line {expected} is {n}"));
        }
        expected += 1;
    }
    Ok(expected - 1)
}

/// H1: pods append `seq` + fsync to /data/log (their own claim) without pause; scaling 3 → 1
/// stops ordinal 2, then 1, each only after the one above has completely gone; the claims
/// and files stay; each file holds every number its pod reported fsynced, as consecutive
/// complete lines.
#[test]
fn h1_writers_during_scale_down_stop_in_order_and_keep_every_fsynced_line() {
    let (_berth, kubectl) = start();
    kubectl.apply(SERVICE);
    // Resumes after the last line (a restarted container continues the sequence); prints
    // `synced <n>` only once <n> is fsynced. On TERM it says `stopping` and, as a database
    // flushing on shutdown would, goes on writing 25 more lines (about a second) before it
    // exits, well within its grace period.
    let script = "stop=0; trap 'stop=1; echo stopping' TERM; \
        i=$(tail -n 1 /data/log 2>/dev/null); i=${i:-0}; n=0; \
        while :; do i=$((i+1)); echo $i >> /data/log; busybox sync -d /data/log || exit 1; \
        echo \"synced $i\"; if [ $stop = 1 ]; then n=$((n+1)); [ $n -ge 25 ] && exit 0; fi; \
        sleep 0.02; done";
    kubectl.apply(&stateful_set("web", 3, 5, script, true, "", ""));
    let before = all_ready(&kubectl, "web", &["web-0", "web-1", "web-2"]);
    let followers: BTreeMap<&str, SyncedFollower> = ["web-0", "web-1", "web-2"]
        .into_iter()
        .map(|p| (p, SyncedFollower::start(&kubectl, p)))
        .collect();
    eventually("every pod has fsynced a few lines", WAIT, || {
        let synced: Vec<u64> = followers.values().map(SyncedFollower::synced).collect();
        synced
            .iter()
            .all(|n| *n >= 5)
            .then_some(())
            .ok_or(format!("{synced:?}"))
    });

    kubectl.ok(&["scale", "sts/web", "--replicas=1"]);
    // Sample until only web-0 is left: web-1 may start terminating only once web-2 is gone.
    let mut order: Vec<String> = Vec::new();
    let mut saw_web2_terminating = false;
    eventually("scaled down to web-0", WAIT, || {
        let now = pods(&kubectl, "web");
        let going = |name: &str| now.get(name).is_none_or(terminating);
        for name in ["web-2", "web-1"] {
            if going(name) && !order.iter().any(|n| n == name) {
                order.push(name.to_string());
            }
        }
        saw_web2_terminating |= now.get("web-2").is_some_and(terminating);
        if going("web-1") {
            assert!(
                !now.contains_key("web-2"),
                "web-1 stops while web-2 is still there: {:?}",
                now.iter()
                    .map(|(n, p)| (n, terminating(p)))
                    .collect::<Vec<_>>()
            );
        }
        if now.len() == 1 && now.get("web-0").is_some_and(|p| !terminating(p)) {
            Ok(())
        } else {
            Err(format!("{:?}", now.keys().collect::<Vec<_>>()))
        }
    });
    assert_eq!(
        order,
        ["web-2", "web-1"],
        "scale down from the highest ordinal"
    );
    assert!(saw_web2_terminating, "web-2 was seen stopping gracefully");
    // The writers say the same: web-2 got its TERM and wrote its last line before web-1 got
    // its TERM.
    let (web1, web2) = (&followers["web-1"], &followers["web-2"]);
    eventually("both writers said they were stopping", WAIT, || {
        (web1.stopping().is_some() && web2.stopping().is_some())
            .then_some(())
            .ok_or(format!(
                "web-1 {:?}, web-2 {:?}",
                web1.stopping(),
                web2.stopping()
            ))
    });
    let (web1_stopping, web2_stopping) = (web1.stopping().unwrap(), web2.stopping().unwrap());
    let web2_last = web2.last_synced().expect("web-2 wrote");
    assert!(
        web2_stopping <= web2_last && web2_last < web1_stopping,
        "web-2 stopping at {web2_stopping:?}, its last line at {web2_last:?}, web-1 stopping at {web1_stopping:?}"
    );
    let now = pods(&kubectl, "web");
    assert_eq!(
        uid_of(&now["web-0"]),
        uid_of(&before["web-0"]),
        "web-0 stays"
    );

    // The controller's events say the same: web-2 deleted, then web-1.
    let listed = json(
        &kubectl,
        &[
            "get",
            "events",
            "--field-selector=involvedObject.kind=StatefulSet,reason=SuccessfulDelete",
        ],
    );
    let deletes: Vec<(String, String)> = listed["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let at = e["lastTimestamp"]
                .as_str()
                .or(e["eventTime"].as_str())
                .unwrap_or("")
                .to_string();
            (at, e["message"].as_str().unwrap_or("").to_string())
        })
        .collect();
    let at = |pod: &str| {
        deletes
            .iter()
            .find(|(_, m)| m.contains(&format!("Pod {pod} ")))
            .map(|(at, _)| at.clone())
            .unwrap_or_else(|| panic!("no delete event for {pod}: {deletes:?}"))
    };
    assert!(at("web-2") <= at("web-1"), "{deletes:?}");

    // The stopped writers' claims and files stay; each file has every fsynced number.
    std::thread::sleep(Duration::from_secs(1));
    for name in ["web-0", "web-1", "web-2"] {
        let claim = format!("data-{name}");
        let volume = get(&kubectl, &["pvc", &claim], "{.spec.volumeName}");
        assert_eq!(get(&kubectl, &["pvc", &claim], "{.status.phase}"), "Bound");
        assert_eq!(
            get(&kubectl, &["pvc", &claim], "{.metadata.deletionTimestamp}"),
            ""
        );
        let dir = PathBuf::from(get(&kubectl, &["pv", &volume], "{.spec.local.path}"));
        // Read before the file, so that for web-0 (still writing) it is a lower bound.
        let synced = followers[name].synced();
        let text = std::fs::read_to_string(dir.join("log"))
            .unwrap_or_else(|e| panic!("{name}'s log in {}: {e}", dir.display()));
        let text = if name == "web-0" {
            // Still writing: an unfinished last line is an append in progress.
            &text[..text.rfind('\n').map_or(0, |i| i + 1)]
        } else {
            text.as_str()
        };
        let last = consecutive(name, text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            last >= synced && synced >= 5,
            "{name}: the file ends at {last}, the pod had fsynced {synced}"
        );
        eprintln!("{name}: {last} lines, {synced} reported fsynced");
    }
}

/// H3: under OrderedReady, web-1 never Ready (its readiness probe looks for a file only
/// when the hostname is web-1) holds back web-2; with web-2 running, scale-down to 2 waits
/// while web-1 (a remaining replica) is unhealthy and goes on once it is Ready; as upstream
/// (`processCondemned`), the first unhealthy pod may itself be scaled away.
#[test]
fn h3_ordered_ready_stops_behind_an_unready_pod_and_scale_down_waits_for_it() {
    let (_berth, kubectl) = start();
    kubectl.apply(SERVICE);
    let probe = "        readinessProbe:\n          exec: {command: [\"sh\", \"-c\", \"test \\\"$(hostname)\\\" != web-1 || test -f /tmp/ready\"]}\n          periodSeconds: 1\n";
    kubectl.apply(&stateful_set(
        "web",
        3,
        1,
        "exec sleep 1000000",
        false,
        "",
        probe,
    ));
    let sts_status = |kubectl: &Kubectl| json(kubectl, &["get", "sts", "web"])["status"].clone();

    // web-0 Ready, web-1 Running but never Ready: web-2 is not created.
    eventually("web-0 Ready and web-1 Running, not Ready", WAIT, || {
        let now = pods(&kubectl, "web");
        let ok = now.get("web-0").is_some_and(is_ready)
            && now
                .get("web-1")
                .is_some_and(|p| p["status"]["phase"] == "Running" && !is_ready(p));
        ok.then_some(())
            .ok_or(format!("{:?}", now.keys().collect::<Vec<_>>()))
    });
    holds_for("web-2 waits for web-1", Duration::from_secs(8), || {
        let now = pods(&kubectl, "web");
        if now.contains_key("web-2") {
            return Err("web-2 was created while web-1 is not Ready".into());
        }
        if now.get("web-1").is_some_and(is_ready) {
            return Err("web-1 became Ready".into());
        }
        Ok(())
    });
    let status = sts_status(&kubectl);
    assert_eq!(status["replicas"], 2, "{status}");
    assert_eq!(status["readyReplicas"], 1, "{status}");

    // web-1 Ready: web-2 follows.
    kubectl.ok(&["exec", "web-1", "--", "touch", "/tmp/ready"]);
    let three = all_ready(&kubectl, "web", &["web-0", "web-1", "web-2"]);
    let web2 = uid_of(&three["web-2"]);

    // web-1 unhealthy again, and the controller has seen it.
    kubectl.ok(&["exec", "web-1", "--", "rm", "/tmp/ready"]);
    eventually("the set sees web-1 unready", WAIT, || {
        let status = sts_status(&kubectl);
        (status["readyReplicas"] == 2)
            .then_some(())
            .ok_or(format!("{status}"))
    });
    // Scale-down to 2 waits: web-1, a remaining replica, is unhealthy.
    kubectl.ok(&["scale", "sts/web", "--replicas=2"]);
    eventually("the set observes the scale", WAIT, || {
        let sts = json(&kubectl, &["get", "sts", "web"]);
        (sts["status"]["observedGeneration"] == sts["metadata"]["generation"])
            .then_some(())
            .ok_or(format!("{}", sts["status"]))
    });
    holds_for(
        "scale-down waits while web-1 is unhealthy",
        Duration::from_secs(8),
        || {
            let now = pods(&kubectl, "web");
            match now.get("web-2") {
                Some(p) if uid_of(p) == web2 && !terminating(p) => Ok(()),
                _ => Err("web-2 was scaled down while web-1 is not Ready".into()),
            }
        },
    );
    // web-1 Ready: the scale-down proceeds.
    kubectl.ok(&["exec", "web-1", "--", "touch", "/tmp/ready"]);
    all_ready(&kubectl, "web", &["web-0", "web-1"]);

    // The first unhealthy pod may itself be scaled away: upstream deletes a condemned pod
    // that is not Ready when it is the first unhealthy one, or nothing would ever unblock.
    kubectl.ok(&["exec", "web-1", "--", "rm", "/tmp/ready"]);
    eventually("the set sees web-1 unready", WAIT, || {
        let status = sts_status(&kubectl);
        (status["readyReplicas"] == 1)
            .then_some(())
            .ok_or(format!("{status}"))
    });
    kubectl.ok(&["scale", "sts/web", "--replicas=1"]);
    all_ready(&kubectl, "web", &["web-0"]);
}
