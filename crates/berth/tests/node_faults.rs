//! The node agent under faults and abuse (reliability cases G4, G5 and D6): berth killed in
//! the middle of starting and of stopping pods, a name deleted and recreated at once, fork
//! bombs, log floods, emptyDirs filled past their limit, and host paths a pod must not
//! mount. Each test checks what is left on the machine, not only what the API says.

mod common;
mod podkit;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use podkit::*;
use serde_json::Value;

fn start_with(args: &[&str]) -> (Berth, Kubectl) {
    let berth = Berth::start_with(args);
    import_busybox(&berth);
    let kubectl = berth.kubectl();
    (berth, kubectl)
}

/// A marker unique to this test run, so concurrent tests never count each other's processes.
fn marker(n: u32) -> String {
    format!("sleep {}", 500_000 + (std::process::id() % 1000) * 100 + n)
}

fn sleeper(name: &str, marker: &str, grace: u32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "{marker}"]
"#
    )
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

#[track_caller]
fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every trace a pod uid may leave on the host: its directory, mounts and cgroups.
fn traces_of(data_dir: &Path, uid: &str) -> Vec<String> {
    let mut found = Vec::new();
    if data_dir.join("pods").join(uid).exists() {
        found.push(format!(
            "pod dir {}",
            data_dir.join("pods").join(uid).display()
        ));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(
        mountinfo
            .lines()
            .filter(|l| l.contains(uid))
            .map(|l| format!("mount {l}")),
    );
    let mut stack = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            if entry.file_name().to_string_lossy().contains(uid) {
                found.push(format!("cgroup {}", entry.path().display()));
            } else if stack.len() < 10_000 {
                stack.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn g4_pods_started_when_berth_is_killed_are_adopted_not_duplicated() {
    let (mut berth, kubectl) = start_with(&[]);
    let pods: Vec<(String, String)> = (0..6).map(|i| (format!("early-{i}"), marker(i))).collect();
    let manifests: Vec<String> = pods.iter().map(|(n, m)| sleeper(n, m, 1)).collect();
    kubectl.apply(&manifests.join("\n---\n"));
    // Kill berth as soon as the first container exists: the others are mid-start.
    wait_until("a first container runs", T, || {
        pods.iter().any(|(_, m)| marker_running(m))
    });
    berth.kill();
    berth.restart();
    for (name, marker) in &pods {
        let pod = wait_pod(&kubectl, name, T, |p| phase(p) == "Running");
        assert_eq!(
            container_status(&pod, "main")["restartCount"],
            0,
            "{name} was restarted: {pod}"
        );
        let pids: Vec<u32> = host_pids(marker).collect();
        assert_eq!(pids.len(), 1, "{name}: processes {pids:?}");
    }
    // A second look, after the agent has settled: still one each.
    std::thread::sleep(Duration::from_secs(2));
    for (name, marker) in &pods {
        assert_eq!(host_pids(marker).count(), 1, "{name} duplicated");
    }
}

#[test]
fn g4_a_termination_interrupted_by_a_crash_restarts_with_the_full_grace_period() {
    let (mut berth, kubectl) = start_with(&[]);
    let marker = marker(10);
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  terminationGracePeriodSeconds: 8
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "trap '' TERM; {marker}; sleep 1"]
"#
    ));
    wait_pod(&kubectl, "stubborn", T, |p| phase(p) == "Running");
    assert!(marker_running(&marker));
    kubectl.ok(&["delete", "pod", "stubborn", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    berth.kill();
    berth.restart();
    let restarted = Instant::now();
    // The new agent starts the termination over with the pod's grace period: the process,
    // which ignores SIGTERM, is still there well into it…
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        marker_running(&marker),
        "killed {:?} after the restart, before its grace period",
        restarted.elapsed()
    );
    // …and gone, with the object, once it has passed.
    wait_until("the pod object is gone", Duration::from_secs(40), || {
        let run = kubectl.run(&["get", "pod", "stubborn"]);
        run.code != 0 && run.stderr.contains("NotFound")
    });
    assert!(!marker_running(&marker), "a process outlived its pod");
}

#[test]
fn g4_a_name_deleted_and_recreated_at_once_gets_a_clean_new_pod() {
    let (berth, kubectl) = start_with(&[]);
    let marker = marker(20);
    let manifest = sleeper("same", &marker, 5);
    kubectl.apply(&manifest);
    let first = wait_pod(&kubectl, "same", T, |p| phase(p) == "Running");
    let old_uid = uid(&first);
    let old_pids: Vec<u32> = host_pids(&marker).collect();
    assert_eq!(old_pids.len(), 1);
    kubectl.ok(&["delete", "pod", "same", "--grace-period=0", "--force"]);
    kubectl.apply(&manifest);
    let second = wait_pod(&kubectl, "same", T, |p| {
        phase(p) == "Running" && uid(p) != old_uid
    });
    let new_uid = uid(&second);
    // The old process is killed even though its object vanished at once (F4), and the new
    // pod has its own.
    wait_until("the old process is gone", T, || {
        old_pids
            .iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    let pids: Vec<u32> = host_pids(&marker).collect();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(!old_pids.contains(&pids[0]));
    wait_until("the old uid leaves no traces", T, || {
        traces_of(&berth.data_dir(), &old_uid).is_empty()
    });
    assert!(
        berth.data_dir().join("pods").join(&new_uid).exists(),
        "the new pod has no directory"
    );
    kubectl.ok(&["delete", "pod", "same", "--grace-period=1", "--wait=true"]);
    wait_until("the new uid leaves no traces", T, || {
        traces_of(&berth.data_dir(), &new_uid).is_empty()
    });
    assert!(!marker_running(&marker));
}

/// The API answers a simple list within `bound`, however busy the machine is.
#[track_caller]
fn assert_responsive(kubectl: &Kubectl, bound: Duration) {
    let started = Instant::now();
    kubectl.ok(&["get", "pods", "-o", "name"]);
    let took = started.elapsed();
    assert!(took < bound, "the API took {took:?} to list pods");
}

#[test]
fn g5_a_fork_bomb_stops_at_pids_max_and_dies_with_its_pod() {
    let (_berth, kubectl) = start_with(&["--pod-max-pids", "64"]);
    let marker = marker(30);
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: bomb}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    # The shell forks until fork fails (then a shell gives up), and PID 1 stays to hold
    # what it made.
    command: ["sh", "-c", "(while true; do {marker} & done) 2>/dev/null; exec sleep 3600"]
"#
    ));
    wait_pod(&kubectl, "bomb", T, |p| phase(p) == "Running");
    wait_until("the bomb has forked a lot", T, || {
        host_pids(&marker).count() >= 50
    });
    std::thread::sleep(Duration::from_secs(2));
    let count = host_pids(&marker).count();
    // pids.max counts every task of the container, the shells included.
    assert!(count < 64, "{count} processes despite pids.max 64");
    assert_eq!(phase(&pod_json(&kubectl, "bomb")), "Running");
    assert_responsive(&kubectl, Duration::from_secs(5));
    // The agent still runs other pods next to it.
    kubectl.apply(&sleeper("neighbour", &marker_of_neighbour(), 1));
    wait_pod(&kubectl, "neighbour", T, |p| phase(p) == "Running");
    kubectl.ok(&["delete", "pod", "bomb", "--wait=true", "--timeout=60s"]);
    assert_eq!(host_pids(&marker).count(), 0, "part of the bomb survived");
}

fn marker_of_neighbour() -> String {
    marker(31)
}

#[test]
fn g5_a_log_flood_is_capped_by_rotation() {
    let (berth, kubectl) = start_with(&["--container-log-max-mib", "1"]);
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "while true; do echo 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; done"]
"#,
    );
    let pod = wait_pod(&kubectl, "chatty", T, |p| phase(p) == "Running");
    let logs = berth
        .data_dir()
        .join("pods")
        .join(uid(&pod))
        .join("logs")
        .join("main");
    let size = || -> u64 {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let rotated = || {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".1"))
    };
    wait_until("the log has rotated", Duration::from_secs(60), rotated);
    // Keep flooding a while: the total stays at about two files of 1 MiB.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        let total = size();
        assert!(
            total <= 2 * 1024 * 1024 + 64 * 1024,
            "logs hold {total} bytes"
        );
    }
    let tail = kubectl.ok(&["logs", "chatty", "--tail=1"]);
    assert!(tail.starts_with("0123456789abcdef"), "{tail}");
    assert_responsive(&kubectl, Duration::from_secs(5));
}

#[test]
fn g5_an_empty_dir_filled_past_its_size_limit_evicts_the_pod() {
    let (_berth, kubectl) = start_with(&[]);
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: filler}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/big bs=1M count=4; sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
  - name: scratch
    emptyDir: {sizeLimit: 1Mi}
"#,
    );
    let pod = wait_pod(&kubectl, "filler", Duration::from_secs(60), |p| {
        phase(p) == "Failed"
    });
    assert_eq!(pod["status"]["reason"], "Evicted", "{pod}");
    let message = pod["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\""),
        "{message}"
    );
    assert!(
        container_state(&pod, "main")["terminated"].is_object(),
        "{pod}"
    );
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=filler,reason=Evicted",
        "-o",
        "name",
    ]);
    assert!(!events.is_empty(), "no Evicted event");
    // An evicted pod is not run again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(phase(&pod_json(&kubectl, "filler")), "Failed");
}

/// The FailedMount events of `pod`, as one text.
fn failed_mounts(kubectl: &Kubectl, pod: &str) -> String {
    kubectl
        .run(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=FailedMount"),
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .stdout
}

fn host_path_pod(name: &str, path: &str, read_only: bool) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sleep", "3600"]
    volumeMounts: [{{name: host, mountPath: /host, readOnly: {read_only}}}]
  volumes:
  - name: host
    hostPath: {{path: "{path}"}}
"#
    )
}

#[test]
fn d6_host_paths_are_checked_and_sensitive_ones_denied_unless_allowed() {
    let shared = tempfile::tempdir().expect("temp dir");
    std::fs::write(shared.path().join("data"), "shared\n").expect("write");
    let allowed = tempfile::tempdir().expect("temp dir");
    let (berth, kubectl) = start_with(&[
        "--allow-host-path",
        allowed.path().to_str().expect("utf-8 path"),
    ]);

    // Malformed paths and types never become objects.
    for (path, type_, expect) in [
        ("relative/x", "", "must be an absolute path"),
        ("/srv/../etc", "", "must not contain '..'"),
        ("/srv", "Folder", "Unsupported value: \"Folder\""),
    ] {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n  containers: [{{name: c, image: busybox:test}}]\n  volumes: [{{name: h, hostPath: {{path: \"{path}\", type: \"{type_}\"}}}}]\n"
        );
        let run = kubectl.run_stdin(&["apply", "-f", "-"], &manifest);
        assert_ne!(run.code, 0, "{path} was accepted");
        assert!(run.stderr.contains(expect), "{path}: {}", run.stderr);
    }
    assert!(kubectl.run(&["get", "pod", "bad"]).code != 0);

    // Sensitive host trees are refused by the node; the pod never starts.
    let data_dir = berth.data_dir();
    let sensitive = ["/", "/etc", "/proc", data_dir.to_str().expect("utf-8 path")];
    for (i, path) in sensitive.iter().enumerate() {
        let name = format!("sensitive-{i}");
        kubectl.apply(&host_path_pod(&name, path, true));
        wait_until(&format!("{path} is refused"), T, || {
            failed_mounts(&kubectl, &name).contains("is not allowed on this node")
        });
        let pod = pod_json(&kubectl, &name);
        assert_eq!(phase(&pod), "Pending", "{pod}");
    }
    // A symlink to a denied tree is judged by where it leads.
    let link = shared.path().join("to-etc");
    std::os::unix::fs::symlink("/etc", &link).expect("symlink");
    kubectl.apply(&host_path_pod(
        "via-link",
        link.to_str().expect("utf-8"),
        true,
    ));
    wait_until("the link to /etc is refused", T, || {
        failed_mounts(&kubectl, "via-link").contains("is not allowed on this node")
    });

    // An ordinary directory mounts; readOnly is enforced inside the container.
    kubectl.apply(&host_path_pod(
        "reader",
        shared.path().to_str().expect("utf-8"),
        true,
    ));
    wait_pod(&kubectl, "reader", T, |p| phase(p) == "Running");
    assert_eq!(
        kubectl.ok(&["exec", "reader", "--", "cat", "/host/data"]),
        "shared\n"
    );
    let run = kubectl.run(&["exec", "reader", "--", "touch", "/host/new"]);
    assert_ne!(run.code, 0, "wrote to a read-only hostPath");
    assert!(
        run.stderr.contains("Read-only file system"),
        "{}",
        run.stderr
    );
    assert!(!shared.path().join("new").exists());

    // The explicit allow-list overrides the policy for its own tree, writable.
    kubectl.apply(&host_path_pod(
        "allowed",
        allowed.path().to_str().expect("utf-8"),
        false,
    ));
    wait_pod(&kubectl, "allowed", T, |p| phase(p) == "Running");
    kubectl.ok(&["exec", "allowed", "--", "touch", "/host/new"]);
    assert!(allowed.path().join("new").exists());
}

/// A pod whose process ignores SIGTERM, so stopping it takes the whole grace period.
fn stubborn(name: &str, marker: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "trap '' TERM; exec {marker}"]
"#
    )
}

#[test]
fn a_force_deleted_pods_name_is_not_run_twice_at_once() {
    let (_berth, kubectl) = start_with(&[]);
    let (old, new) = (marker(51), marker(52));
    kubectl.apply(&stubborn("solo", &old));
    wait_until("the first pod runs", T, || marker_running(&old));
    // Force deletion removes the object at once; its process still has to be stopped (it
    // ignores SIGTERM, so that takes kubelet's minimum grace). The new pod of the same name
    // must not start meanwhile.
    kubectl.ok(&["delete", "pod", "solo", "--grace-period=0", "--force"]);
    kubectl.apply(&stubborn("solo", &new));
    let deadline = Instant::now() + T;
    loop {
        let (a, b) = (marker_running(&old), marker_running(&new));
        assert!(!(a && b), "two pods named solo ran at once");
        if b && !a {
            break;
        }
        assert!(Instant::now() < deadline, "the new pod never started alone");
        std::thread::sleep(Duration::from_millis(20));
    }
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector=reason=PreviousPodStopping",
    ]);
    assert!(events.contains("solo"), "{events}");
}
