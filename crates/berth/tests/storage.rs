//! Storage end to end, through kubectl on the real `berth up`: the default StorageClass
//! provisions a volume for a claim once a pod needs it (WaitForFirstConsumer), the data
//! lives under the data dir named by the claim's uid and survives the pod, a new pod and a
//! restart of berth; the Delete policy removes it with the claim, Retain keeps it; three
//! replicas share one ReadWriteMany claim; a ReadWriteOncePod claim takes one pod; the
//! capacity-enforced class stops writes at the claimed size and grows when the claim does.

mod common;
mod podkit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Berth, Kubectl};
use podkit::*;

#[track_caller]
fn eventually(what: &str, check: impl FnMut() -> Result<(), String>) {
    common::eventually(what, T, check)
}

fn get(kubectl: &Kubectl, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let jsonpath = format!("jsonpath={path}");
    args.extend(["-o", &jsonpath]);
    kubectl.run(&args).stdout.trim().to_string()
}

fn running(kubectl: &Kubectl, name: &str) {
    wait_pod(kubectl, name, T, |p| phase(p) == "Running");
}

fn exec(kubectl: &Kubectl, pod: &str, script: &str) -> common::Run {
    kubectl.run(&["exec", pod, "--", "sh", "-c", script])
}

/// The volume bound to `claim` once it is Bound.
fn bound_volume(kubectl: &Kubectl, claim: &str) -> String {
    let mut volume = String::new();
    eventually(&format!("claim {claim} is Bound"), || {
        let phase = get(kubectl, &["pvc", claim], "{.status.phase}");
        volume = get(kubectl, &["pvc", claim], "{.spec.volumeName}");
        if phase == "Bound" && !volume.is_empty() {
            Ok(())
        } else {
            Err(kubectl.run(&["describe", "pvc", claim]).stdout)
        }
    });
    volume
}

fn local_path_dir(berth: &Berth, volume: &str) -> PathBuf {
    berth.data_dir().join("storage/local-path").join(volume)
}

fn delete_and_wait_gone(kubectl: &Kubectl, what: &[&str]) {
    let mut args = vec!["delete", "--wait=true", "--timeout=60s"];
    args.extend_from_slice(what);
    kubectl.ok(&args);
}

#[test]
fn the_default_class_provisions_for_the_first_consumer_and_the_data_outlives_pods_and_restarts() {
    let (mut berth, kubectl) = start();
    kubectl.apply(&claim_manifest("data", None, "ReadWriteOnce", "64Mi"));
    assert_eq!(
        get(&kubectl, &["pvc", "data"], "{.spec.storageClassName}"),
        "local-path"
    );
    // WaitForFirstConsumer: nothing is provisioned while no pod needs the claim.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        get(&kubectl, &["pvc", "data"], "{.status.phase}"),
        "Pending"
    );
    assert_eq!(get(&kubectl, &["pv"], "{.items[*].metadata.name}"), "");
    let events = kubectl.ok(&["get", "events", "--field-selector=involvedObject.name=data"]);
    assert!(events.contains("WaitForFirstConsumer"), "{events}");

    kubectl.apply(&pod_on_claim("writer", "data", "echo kept > /data/note"));
    running(&kubectl, "writer");
    let volume = bound_volume(&kubectl, "data");
    let uid = get(&kubectl, &["pvc", "data"], "{.metadata.uid}");
    assert_eq!(volume, format!("pvc-{uid}"));
    let node = get(&kubectl, &["nodes"], "{.items[0].metadata.name}");
    assert_eq!(
        get(
            &kubectl,
            &["pvc", "data"],
            r"{.metadata.annotations.volume\.kubernetes\.io/selected-node}"
        ),
        node
    );
    assert_eq!(
        get(
            &kubectl,
            &["pv", &volume],
            r"{.metadata.annotations.pv\.kubernetes\.io/provisioned-by}"
        ),
        "berth.dev/local-path"
    );
    assert_eq!(
        get(
            &kubectl,
            &["pv", &volume],
            "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ),
        node
    );
    assert_eq!(
        get(
            &kubectl,
            &["pv", &volume],
            "{.spec.persistentVolumeReclaimPolicy}"
        ),
        "Delete"
    );
    assert_eq!(
        get(&kubectl, &["pvc", "data"], "{.status.capacity.storage}"),
        "64Mi"
    );
    let dir = local_path_dir(&berth, &volume);
    eventually("the note is on the host", || {
        let text = std::fs::read_to_string(dir.join("note")).unwrap_or_default();
        if text == "kept\n" {
            Ok(())
        } else {
            Err(format!("{text:?}"))
        }
    });

    // A new pod sees what the first one wrote.
    delete_and_wait_gone(&kubectl, &["pod", "writer"]);
    kubectl.apply(&pod_on_claim("reader", "data", "true"));
    running(&kubectl, "reader");
    assert_eq!(exec(&kubectl, "reader", "cat /data/note").stdout, "kept\n");

    // berth restarts: the running pod keeps its volume, and a pod made after sees the data.
    berth.restart();
    assert_eq!(exec(&kubectl, "reader", "cat /data/note").stdout, "kept\n");
    exec(&kubectl, "reader", "echo again >> /data/note");
    delete_and_wait_gone(&kubectl, &["pod", "reader"]);
    kubectl.apply(&pod_on_claim("again", "data", "true"));
    running(&kubectl, "again");
    assert_eq!(
        exec(&kubectl, "again", "cat /data/note").stdout,
        "kept\nagain\n"
    );

    // Delete: the claim takes the volume and its data with it.
    delete_and_wait_gone(&kubectl, &["pod", "again"]);
    delete_and_wait_gone(&kubectl, &["pvc", "data"]);
    eventually("the volume and its directory are gone", || {
        let left = get(&kubectl, &["pv"], "{.items[*].metadata.name}");
        if left.is_empty() && !dir.exists() {
            Ok(())
        } else {
            Err(format!("volumes {left:?}, dir exists: {}", dir.exists()))
        }
    });
}

#[test]
fn a_retain_class_keeps_the_volume_and_its_data_after_the_claim_goes() {
    let (berth, kubectl) = start();
    kubectl.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: keep}\nprovisioner: berth.dev/local-path\nreclaimPolicy: Retain\nvolumeBindingMode: Immediate\n",
    );
    kubectl.apply(&claim_manifest(
        "kept",
        Some("keep"),
        "ReadWriteOnce",
        "16Mi",
    ));
    // Immediate: provisioned without a pod.
    let volume = bound_volume(&kubectl, "kept");
    kubectl.apply(&pod_on_claim(
        "writer",
        "kept",
        "echo precious > /data/file",
    ));
    running(&kubectl, "writer");
    assert_eq!(
        exec(&kubectl, "writer", "cat /data/file").stdout,
        "precious\n"
    );
    delete_and_wait_gone(&kubectl, &["pod", "writer"]);
    delete_and_wait_gone(&kubectl, &["pvc", "kept"]);
    eventually("the volume is Released", || {
        let phase = get(&kubectl, &["pv", &volume], "{.status.phase}");
        if phase == "Released" {
            Ok(())
        } else {
            Err(phase)
        }
    });
    // It stays Released, with the data, and a new claim does not take it.
    kubectl.apply(&claim_manifest(
        "other",
        Some("keep"),
        "ReadWriteOnce",
        "16Mi",
    ));
    let other = bound_volume(&kubectl, "other");
    assert_ne!(other, volume);
    assert_eq!(
        get(&kubectl, &["pv", &volume], "{.status.phase}"),
        "Released"
    );
    let file = local_path_dir(&berth, &volume).join("file");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap_or_default(),
        "precious\n"
    );
}

#[test]
fn three_replicas_share_one_read_write_many_claim() {
    let (_berth, kubectl) = start();
    kubectl.apply(&claim_manifest("shared", None, "ReadWriteMany", "32Mi"));
    kubectl.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: sharers}
spec:
  replicas: 3
  selector: {matchLabels: {app: sharers}}
  template:
    metadata: {labels: {app: sharers}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:test
        command: ["sh", "-c", "hostname >> /data/names; exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: shared}
"#,
    );
    let mut pods = Vec::new();
    eventually("three replicas run", || {
        let out = get(
            &kubectl,
            &[
                "pods",
                "-l",
                "app=sharers",
                "--field-selector=status.phase=Running",
            ],
            "{.items[*].metadata.name}",
        );
        pods = out.split_whitespace().map(str::to_string).collect();
        if pods.len() == 3 { Ok(()) } else { Err(out) }
    });
    for pod in &pods {
        eventually(&format!("{pod} sees every replica's line"), || {
            let names = exec(&kubectl, pod, "cat /data/names").stdout;
            if pods.iter().all(|p| names.lines().any(|l| l == p)) {
                Ok(())
            } else {
                Err(names)
            }
        });
    }
}

#[test]
fn a_read_write_once_pod_claim_admits_a_single_pod() {
    let (_berth, kubectl) = start();
    kubectl.apply(&claim_manifest("solo", None, "ReadWriteOncePod", "16Mi"));
    kubectl.apply(&pod_on_claim("first", "solo", "true"));
    running(&kubectl, "first");
    kubectl.apply(&pod_on_claim("second", "solo", "true"));
    eventually("the second pod is refused with the reason", || {
        let events = kubectl
            .run(&[
                "get",
                "events",
                "--field-selector=involvedObject.name=second",
            ])
            .stdout;
        if events.contains("ReadWriteOncePod") {
            Ok(())
        } else {
            Err(events)
        }
    });
    assert_eq!(phase(&pod_json(&kubectl, "second")), "Pending");
    // Once the first is gone, the second gets the claim.
    delete_and_wait_gone(&kubectl, &["pod", "first"]);
    running(&kubectl, "second");
}

/// Free space of /data inside `pod`, in KiB (busybox `df -k`).
fn free_kib(kubectl: &Kubectl, pod: &str) -> u64 {
    let out = exec(kubectl, pod, "df -k /data | tail -n 1").stdout;
    out.split_whitespace()
        .nth(1)
        .and_then(|size| size.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_capacity_class_stops_writes_at_the_claimed_size_and_grows_with_the_claim() {
    let (berth, kubectl) = start();
    kubectl.apply(&claim_manifest(
        "small",
        Some("local-ext4"),
        "ReadWriteOnce",
        "32Mi",
    ));
    kubectl.apply(&claim_manifest(
        "neighbour",
        Some("local-ext4"),
        "ReadWriteOnce",
        "32Mi",
    ));
    kubectl.apply(&pod_on_claim("filler", "small", "true"));
    kubectl.apply(&pod_on_claim("next", "neighbour", "true"));
    running(&kubectl, "filler");
    running(&kubectl, "next");
    let volume = bound_volume(&kubectl, "small");
    assert!(
        Path::new(&berth.data_dir())
            .join(format!("storage/local-ext4/{volume}.img"))
            .exists()
    );
    // ext4's journal and inode tables take a few MiB of the image.
    let size = free_kib(&kubectl, "filler");
    assert!(
        (20_000..=33_000).contains(&size),
        "a 32 MiB filesystem, not {size} KiB"
    );

    // Writing past the size fails inside the pod; the neighbour still writes.
    let full = exec(
        &kubectl,
        "filler",
        "dd if=/dev/zero of=/data/big bs=1M count=48 2>&1",
    );
    assert_ne!(full.code, 0, "{full:?}");
    assert!(full.stdout.contains("No space left"), "{full:?}");
    let neighbour = exec(
        &kubectl,
        "next",
        "dd if=/dev/zero of=/data/some bs=1M count=8 2>&1",
    );
    assert_eq!(neighbour.code, 0, "{neighbour:?}");

    // Growing the claim grows the filesystem (online, or when the volume is next staged).
    exec(&kubectl, "filler", "rm -f /data/big");
    kubectl.ok(&[
        "patch",
        "pvc",
        "small",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"64Mi"}}}}"#,
    ]);
    eventually("the volume grows", || {
        let capacity = get(&kubectl, &["pv", &volume], "{.spec.capacity.storage}");
        if capacity == "64Mi" {
            Ok(())
        } else {
            Err(capacity)
        }
    });
    if free_kib(&kubectl, "filler") < 52_000 {
        // No online resize here: the next staging of the volume finishes it.
        delete_and_wait_gone(&kubectl, &["pod", "filler"]);
        kubectl.apply(&pod_on_claim("filler", "small", "true"));
        running(&kubectl, "filler");
    }
    let grown = free_kib(&kubectl, "filler");
    assert!(grown >= 52_000, "a 64 MiB filesystem, not {grown} KiB");
    eventually("the claim reports the new capacity", || {
        let capacity = get(&kubectl, &["pvc", "small"], "{.status.capacity.storage}");
        if capacity == "64Mi" {
            Ok(())
        } else {
            Err(capacity)
        }
    });
    let fits = exec(
        &kubectl,
        "filler",
        "dd if=/dev/zero of=/data/big bs=1M count=48 2>&1",
    );
    assert_eq!(fits.code, 0, "{fits:?}");
    // Once no pod uses them, the volumes are unstaged and nothing is left of their staging.
    delete_and_wait_gone(&kubectl, &["pod", "filler", "next"]);
    let staging = berth.data_dir().join("csi/local-ext4.berth.dev");
    eventually("the staging directories are gone", || {
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

#[test]
fn the_readme_example_keeps_its_notes_across_pods() {
    let (_berth, kubectl) = start();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/notes.yaml");
    kubectl.ok(&["apply", "-f", example]);
    running(&kubectl, "notes");
    eventually("the first line", || {
        let log = exec(&kubectl, "notes", "cat /data/log").stdout;
        if log.lines().count() == 1 {
            Ok(())
        } else {
            Err(log)
        }
    });
    delete_and_wait_gone(&kubectl, &["pod", "notes", "--grace-period=1"]);
    kubectl.ok(&["apply", "-f", example]);
    running(&kubectl, "notes");
    eventually("the second pod adds a line to the first one's", || {
        let log = exec(&kubectl, "notes", "cat /data/log").stdout;
        if log.lines().count() == 2 {
            Ok(())
        } else {
            Err(log)
        }
    });
}

#[test]
fn a_pod_waits_for_its_unbound_immediate_claim_and_its_volumes_node() {
    let (_berth, kubectl) = start();
    // A class nobody provisions for: its Immediate claim stays unbound, so the pod waits.
    kubectl.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: nobody}\nprovisioner: example.com/nobody\nvolumeBindingMode: Immediate\n",
    );
    kubectl.apply(&claim_manifest(
        "stuck",
        Some("nobody"),
        "ReadWriteOnce",
        "16Mi",
    ));
    kubectl.apply(&pod_on_claim("waiting", "stuck", "true"));
    eventually("the pod is unschedulable for its claim", || {
        let events = kubectl
            .run(&[
                "get",
                "events",
                "--field-selector=involvedObject.name=waiting",
            ])
            .stdout;
        if events.contains("pod has unbound immediate PersistentVolumeClaims") {
            Ok(())
        } else {
            Err(events)
        }
    });
    assert_eq!(phase(&pod_json(&kubectl, "waiting")), "Pending");
    // A volume pinned to a node that does not exist keeps its claim's pod off this node.
    kubectl.apply(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: elsewhere}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  local: {path: /tmp}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [another-node]}]\n",
    );
    kubectl.apply(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: far}\nspec:\n  storageClassName: \"\"\n  volumeName: elsewhere\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    bound_volume(&kubectl, "far");
    kubectl.apply(&pod_on_claim("distant", "far", "true"));
    eventually("the pod is kept off this node", || {
        let events = kubectl
            .run(&[
                "get",
                "events",
                "--field-selector=involvedObject.name=distant",
            ])
            .stdout;
        if events.contains("volume node affinity conflict") {
            Ok(())
        } else {
            Err(events)
        }
    });
    assert_eq!(phase(&pod_json(&kubectl, "distant")), "Pending");
}
