//! Pods mount PersistentVolumeClaims: the real `berth up` and kubectl, busybox pods, and a
//! pre-made PersistentVolume on a directory the test owns (the Kubernetes task "Configure a Pod
//! to Use a PersistentVolume for Storage"). Each test checks what a user sees: the data on the
//! host, what the pod can and cannot write, FailedMount events, and that nothing stays
//! mounted once the pods are gone.
//!
//! The claims are pre-bound from both sides (`spec.volumeName` and the volume's `claimRef`),
//! so the PV controller only has to confirm the binding.

mod common;
mod podkit;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Kubectl;
use podkit::*;

#[track_caller]
fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_name(kubectl: &Kubectl) -> String {
    kubectl.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
}

/// Creates claim `claim` (no class, `volumeName` = `pv`) and volume `pv` with `source` (YAML
/// lines under `spec:`) and a `claimRef` naming the claim, then waits for the PV controller
/// to bind them.
fn bound_claim(kubectl: &Kubectl, claim: &str, pv: &str, modes: &str, source: &str) {
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}}}
spec:
  storageClassName: ""
  volumeName: {pv}
  accessModes: {modes}
  resources: {{requests: {{storage: 1Gi}}}}
"#
    ));
    let uid = kubectl.ok(&["get", "pvc", claim, "-o", "jsonpath={.metadata.uid}"]);
    assert!(!uid.is_empty(), "claim {claim} has no uid");
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv}}}
spec:
  storageClassName: ""
  capacity: {{storage: 1Gi}}
  accessModes: {modes}
  persistentVolumeReclaimPolicy: Retain
  claimRef: {{kind: PersistentVolumeClaim, apiVersion: v1, namespace: default, name: {claim}, uid: {uid}}}
{source}
"#
    ));
    let phase = || {
        kubectl
            .run(&["get", "pvc", claim, "-o", "jsonpath={.status.phase}"])
            .stdout
    };
    wait_until(&format!("{claim} is Bound"), T, || phase() == "Bound");
}

/// A pod with claim `claim` at `/data` running `script`.
fn claim_pod(name: &str, claim: &str, read_only: bool, restart: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}, readOnly: {read_only}}}
"#
    )
}

/// The mounts (lines of /proc/self/mountinfo) under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .map(String::from)
        .collect()
}

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

fn logs_when_done(kubectl: &Kubectl, pod: &str) -> String {
    let done = wait_pod(kubectl, pod, T, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    assert_eq!(phase(&done), "Succeeded", "{}", kubectl.ok(&["logs", pod]));
    kubectl.ok(&["logs", pod])
}

#[test]
fn pods_share_a_claim_on_a_host_path_volume_and_read_only_mounts_refuse_writes() {
    let (mut berth, kubectl) = start();
    let host = tempfile::tempdir().expect("temp dir");
    let dir = host.path().to_str().expect("utf-8 path");
    bound_claim(
        &kubectl,
        "shared",
        "pv-shared",
        "[ReadWriteOnce]",
        &format!("  hostPath: {{path: {dir:?}}}"),
    );

    // A pod writes through the claim; the file is on the host.
    kubectl.apply(&claim_pod(
        "writer",
        "shared",
        false,
        "Never",
        "echo hello > /data/file && sync",
    ));
    logs_when_done(&kubectl, "writer");
    assert_eq!(
        std::fs::read_to_string(host.path().join("file")).expect("the pod's file on the host"),
        "hello\n"
    );

    // A second pod reads it.
    kubectl.apply(&claim_pod(
        "reader",
        "shared",
        false,
        "Never",
        "cat /data/file",
    ));
    assert_eq!(logs_when_done(&kubectl, "reader"), "hello\n");

    // readOnly on the pod's claim: reads work, writes are refused.
    kubectl.apply(&claim_pod(
        "viewer",
        "shared",
        true,
        "Never",
        "cat /data/file; if touch /data/new 2>/dev/null; then echo writable; else echo refused; fi",
    ));
    assert_eq!(logs_when_done(&kubectl, "viewer"), "hello\nrefused\n");
    assert!(!host.path().join("new").exists());

    // A running pod keeps its mount across a restart of berth, and the adopting agent does
    // not mount it a second time.
    kubectl.apply(&claim_pod(
        "sleeper",
        "shared",
        false,
        "Always",
        "echo up > /data/sleeper; sleep 3600",
    ));
    let pod = wait_pod(&kubectl, "sleeper", T, |p| phase(p) == "Running");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let pod_dir = berth.data_dir().join("pods").join(&uid);
    let volume = pod_dir.join("volumes/kubernetes.io~host-path/data");
    assert_eq!(
        mounts_under(&volume).len(),
        1,
        "{:?}",
        mounts_under(&volume)
    );
    wait_until("the sleeper wrote", T, || {
        host.path().join("sleeper").exists()
    });
    berth.restart();
    let kubectl = berth.kubectl();
    // Give the new agent time to adopt the pod and set its volumes up again.
    std::thread::sleep(Duration::from_secs(3));
    let pod = wait_pod(&kubectl, "sleeper", T, |p| phase(p) == "Running");
    assert_eq!(pod["metadata"]["uid"], uid.as_str());
    assert_eq!(
        container_status(&pod, "main")["restartCount"],
        0,
        "the container was not restarted"
    );
    assert_eq!(
        mounts_under(&volume).len(),
        1,
        "{:?}",
        mounts_under(&volume)
    );
    kubectl.ok(&[
        "exec",
        "sleeper",
        "--",
        "sh",
        "-c",
        "echo after > /data/after",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("after")).expect("written after the restart"),
        "after\n"
    );

    // Once the pods are gone nothing under the pods' directories is mounted, and the data
    // stays on the host.
    kubectl.ok(&[
        "delete", "pod", "writer", "reader", "viewer", "sleeper", "--wait",
    ]);
    let pods = berth.data_dir().join("pods");
    wait_until("no mounts are left under the pods' dirs", T, || {
        mounts_under(&pods).is_empty()
    });
    assert!(!pod_dir.exists());
    assert_eq!(
        std::fs::read_to_string(host.path().join("file")).expect("data kept"),
        "hello\n"
    );
}

#[test]
fn h6_a_missing_local_path_is_a_failed_mount_and_the_pod_waits() {
    let (berth, kubectl) = start();
    let host = tempfile::tempdir().expect("temp dir");
    let missing = host.path().join("disk");
    let node = node_name(&kubectl);
    bound_claim(
        &kubectl,
        "local",
        "pv-local",
        "[ReadWriteOnce]",
        &format!(
            r#"  local: {{path: {:?}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]"#,
            missing.display().to_string()
        ),
    );
    kubectl.apply(&claim_pod(
        "waiter",
        "local",
        false,
        "Never",
        "cat /data/ready",
    ));
    let expected = format!("path \"{}\" does not exist", missing.display());
    wait_until("a FailedMount event names the missing path", T, || {
        failed_mounts(&kubectl, "waiter").contains(&expected)
    });
    let pod = pod_json(&kubectl, "waiter");
    assert_eq!(phase(&pod), "Pending", "{pod}");
    let waiting = &container_state(&pod, "main")["waiting"]["reason"];
    assert!(waiting.is_null() || waiting == "ContainerCreating", "{pod}");
    // Nothing was made on the host for it: not the path, not a volume mount (the sandbox's
    // pinned namespaces are mounted under the pod's directory, its volumes are not).
    assert!(!missing.exists());
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let volumes = berth.data_dir().join("pods").join(uid).join("volumes");
    assert!(
        mounts_under(&volumes).is_empty(),
        "{:?}",
        mounts_under(&volumes)
    );

    // The disk appears: the waiting pod mounts it and runs (the worker retries).
    std::fs::create_dir(&missing).expect("create the disk dir");
    std::fs::write(missing.join("ready"), "ready\n").expect("write");
    assert_eq!(logs_when_done(&kubectl, "waiter"), "ready\n");

    kubectl.ok(&["delete", "pod", "waiter", "--wait"]);
    wait_until("no mounts are left under the pods' dirs", T, || {
        mounts_under(&berth.data_dir().join("pods")).is_empty()
    });
}
