//! Pods really run: the real `berth up` (API server, scheduler, node agent) and the real
//! kubectl, with a busybox image built from Debian's busybox-static and imported with
//! `berth image import`. Each test checks what a user sees: status, logs, events, files.

mod common;
#[path = "../../berth-image/tests/common/mod.rs"]
#[allow(dead_code)]
mod fixtures;

use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use fixtures::E;
use serde_json::Value;

/// The applets the tests' pods use, as symlinks to /bin/busybox.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "ls", "env", "date", "true", "false", "kill", "ps", "mkdir",
    "touch", "rm", "head", "tail", "wc", "grep", "hostname", "id", "ln", "dd", "nc", "httpd",
    "printf", "test", "trap",
];

/// Builds the busybox image tarball once per test binary and imports it into `berth`'s store.
fn import_busybox(berth: &Berth) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let bin = std::fs::read("/bin/busybox")
        .or_else(|_| std::fs::read("/usr/bin/busybox"))
        .expect("busybox is required (apt-get install -y busybox-static)");
    let links: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    let mut entries = vec![
        E::Dir("bin", 0o755),
        E::File("bin/busybox", &bin, 0o755),
        E::Dir("etc", 0o755),
        E::Dir("tmp", 0o1777),
        E::Dir("root", 0o700),
    ];
    for link in &links {
        entries.push(E::Symlink(link, "busybox"));
    }
    let layer = fixtures::layer(&entries);
    let config = fixtures::config(&[&layer], &["sh"]);
    let archive = fixtures::oci_layout("busybox:test", &config, &[fixtures::gzip(&layer)], None);
    let file = fixtures::write(tmp.path(), "busybox.tar", &archive);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["image", "import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(berth.data_dir())
        .output()
        .expect("run berth image import");
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn start() -> (Berth, Kubectl) {
    let berth = Berth::start();
    import_busybox(&berth);
    let kubectl = berth.kubectl();
    (berth, kubectl)
}

fn pod_json(kubectl: &Kubectl, name: &str) -> Value {
    let run = kubectl.run(&["get", "pod", name, "-o", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or(Value::Null)
}

/// Polls the pod until `check` holds; panics with the last pod seen after `timeout`.
#[track_caller]
fn wait_pod(
    kubectl: &Kubectl,
    name: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pod_json(kubectl, name);
        if check(&pod) {
            return pod;
        }
        if Instant::now() > deadline {
            let events = kubectl.run(&["get", "events", "-o", "wide"]).stdout;
            panic!(
                "pod {name} did not reach the expected state in {timeout:?}:\n{}\nevents:\n{events}",
                serde_json::to_string_pretty(&pod["status"]).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn container_state<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .map(|c| &c["state"])
        .unwrap_or(&Value::Null)
}

fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn condition(pod: &Value, type_: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

const T: Duration = Duration::from_secs(30);

#[test]
fn a_pod_runs_prints_and_exits_with_its_code() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo hello from $(POD_NAME); echo oops >&2; hostname; exit 3"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
"#,
    );
    let pod = wait_pod(&kubectl, "hello", T, |p| phase(p) == "Failed");
    let terminated = &container_state(&pod, "main")["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod}");
    assert_eq!(terminated["reason"], "Error");
    assert!(
        terminated["containerID"]
            .as_str()
            .unwrap_or("")
            .starts_with("berth://")
    );
    assert_eq!(pod["spec"]["nodeName"].as_str().is_some(), true);
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    // stdout and stderr are separate pipes, so only each stream's own order is certain.
    let logs = kubectl.ok(&["logs", "hello"]);
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["hello", "hello from hello", "oops"], "{logs}");
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hello",
        "-o",
        "json",
    ]);
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            events.contains(&format!("\"reason\": \"{reason}\"")),
            "no {reason} event: {events}"
        );
    }
}

#[test]
fn restart_policy_always_restarts_with_crash_loop_back_off() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo run; exit 1"]
"#,
    );
    // The first restart is immediate, the next waits 10 s: CrashLoopBackOff shows in between.
    let pod = wait_pod(&kubectl, "crash", T, |p| {
        container_state(p, "main")["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let status = container_status(&pod, "main");
    assert!(status["restartCount"].as_i64().unwrap_or(0) >= 1, "{pod}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1, "{pod}");
    assert_eq!(phase(&pod), "Running");
    let message = container_state(&pod, "main")["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.starts_with("back-off 10s restarting failed container=main pod=crash_default("),
        "{message}"
    );
    // The delay grows: after the 10 s back-off the next one is 20 s.
    let pod = wait_pod(&kubectl, "crash", T, |p| {
        container_state(p, "main")["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("back-off 20s"))
    });
    assert!(
        container_status(&pod, "main")["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    );
    let previous = kubectl.ok(&["logs", "crash", "--previous"]);
    assert_eq!(previous, "run\n");
}

#[test]
fn init_containers_run_first_and_share_an_empty_dir() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  restartPolicy: Never
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: first
    image: busybox:test
    command: ["sh", "-c", "echo one > /work/log"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: busybox:test
    command: ["sh", "-c", "echo two >> /work/log"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "cat /work/log"]
    volumeMounts: [{name: work, mountPath: /work}]
"#,
    );
    let pod = wait_pod(&kubectl, "init", T, |p| phase(p) == "Succeeded");
    assert_eq!(condition(&pod, "Initialized"), "True");
    assert_eq!(kubectl.ok(&["logs", "init", "-c", "main"]), "one\ntwo\n");
}

#[test]
fn a_failing_init_container_keeps_the_main_one_from_starting() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: gate}
spec:
  restartPolicy: Never
  initContainers:
  - name: check
    image: busybox:test
    command: ["sh", "-c", "exit 5"]
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo should not run"]
"#,
    );
    let pod = wait_pod(&kubectl, "gate", T, |p| phase(p) == "Failed");
    assert_eq!(condition(&pod, "Initialized"), "False");
    assert_eq!(
        container_state(&pod, "main")["waiting"]["reason"],
        "PodInitializing",
        "{pod}"
    );
}

#[test]
fn a_missing_image_waits_with_err_image_pull() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: nope}
spec:
  containers:
  - name: main
    image: example.com/not-there:1
"#,
    );
    let pod = wait_pod(&kubectl, "nope", T, |p| {
        matches!(
            container_state(p, "main")["waiting"]["reason"].as_str(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    });
    assert_eq!(phase(&pod), "Pending");
}

#[test]
fn deleting_a_pod_that_ignores_sigterm_waits_for_its_grace_period() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 1; done"]
"#,
    );
    wait_pod(&kubectl, "stubborn", T, |p| phase(p) == "Running");
    let started = Instant::now();
    kubectl.ok(&["delete", "pod", "stubborn", "--wait=true", "--timeout=30s"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "killed before its grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "took too long: {took:?}");
    assert!(
        !marker_running("trap '' TERM"),
        "a process of the pod survived"
    );
}

/// Whether some process on the host has `needle` in its command line.
fn marker_running(needle: &str) -> bool {
    host_pids(needle).next().is_some()
}

fn host_pids(needle: &str) -> impl Iterator<Item = u32> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle).then_some(pid)
        })
}

#[test]
fn a_memory_limit_kills_with_oom_killed() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]
    resources:
      limits: {memory: 32Mi}
"#,
    );
    let pod = wait_pod(&kubectl, "hog", T, |p| phase(p) == "Failed");
    let terminated = &container_state(&pod, "main")["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{pod}");
    assert_eq!(terminated["exitCode"], 137);
}

#[test]
fn env_comes_from_config_maps_secrets_and_the_downward_api() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue, size: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: envy, labels: {app: envy}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo $COLOR $PASSWORD $NS $NODE $MISSING; echo prefixed=$CFG_size"]
    envFrom:
    - prefix: CFG_
      configMapRef: {name: settings}
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: settings, key: color}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: NS
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: MISSING
      valueFrom: {configMapKeyRef: {name: nothing, key: x, optional: true}}
"#,
    );
    let pod = wait_pod(&kubectl, "envy", T, |p| phase(p) == "Succeeded");
    let node = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        kubectl.ok(&["logs", "envy"]),
        format!("blue hunter2 default {node}\nprefixed=3\n")
    );
}

#[test]
fn berth_restarted_under_a_running_pod_leaves_the_same_process_running() {
    let (mut berth, kubectl) = start();
    let marker = format!("sleep {}", 400_000 + std::process::id() % 1000);
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: steady}}
spec:
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "{marker}"]
"#
    ));
    wait_pod(&kubectl, "steady", T, |p| phase(p) == "Running");
    let before: Vec<u32> = host_pids(&marker).collect();
    assert_eq!(before.len(), 1, "expected one container process");
    berth.kill();
    berth.restart();
    let pod = wait_pod(&kubectl, "steady", T, |p| phase(p) == "Running");
    assert_eq!(container_status(&pod, "main")["restartCount"], 0, "{pod}");
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<u32> = host_pids(&marker).collect();
    assert_eq!(before, after, "the container was restarted");
    kubectl.ok(&["delete", "pod", "steady", "--grace-period=1", "--wait=true"]);
    assert!(!marker_running(&marker));
}
