//! Storage under faults and hostile input (reliability cases H4, H5 and H7), through kubectl
//! on the real `berth up` with busybox pods:
//!
//! - H4: a claim or a volume deleted while in use only turns Terminating (the protection
//!   finalizers) and its data stays; the Delete policy removes the directory only once no
//!   mount of it is left; Retain leaves the volume Released with its data, never re-bound.
//! - H5: `kill -9` of berth while claims are being provisioned (and deleted) leaves exactly
//!   one volume per claim, named from the claim's uid, and no directory or image nobody owns;
//!   a maximal claim name and StorageClass parameters full of `../` change nothing about
//!   where a volume lives.
//! - H7: a pod running as uid 1000 / gid 1000 with fsGroup 2000 can write to a fresh
//!   local-path and a fresh local-ext4 volume.

mod common;
mod podkit;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use podkit::{claim_manifest, import_busybox, phase, pod_json, pod_on_claim, wait_pod};
use serde_json::Value;

/// Long enough for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(90);

fn start() -> (Berth, Kubectl) {
    let berth = Berth::start();
    import_busybox(&berth);
    let kubectl = berth.kubectl();
    (berth, kubectl)
}

/// Polls `check` until it returns `Ok`; panics with `what` and the last error after [`WAIT`].
#[track_caller]
fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    common::eventually(what, WAIT, check)
}

fn get(kubectl: &Kubectl, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let jsonpath = format!("jsonpath={path}");
    args.extend(["-o", &jsonpath]);
    kubectl.run(&args).stdout.trim().to_string()
}

/// The object as JSON, or `None` when kubectl cannot get it (gone).
fn object(kubectl: &Kubectl, kind: &str, name: &str) -> Option<Value> {
    let run = kubectl.run(&["get", kind, name, "-o", "json"]);
    if run.code != 0 {
        return None;
    }
    serde_json::from_str(&run.stdout).ok()
}

/// Every object of `kind` (in the default namespace for namespaced kinds).
fn items(kubectl: &Kubectl, kind: &str) -> Vec<Value> {
    let out = kubectl.ok(&["get", kind, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("kubectl printed JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn describe(kubectl: &Kubectl) -> String {
    let objects = kubectl.run(&["get", "pv,pvc,pods", "-o", "wide"]);
    let events = kubectl.run(&["get", "events"]);
    format!(
        "objects:\n{}{}\nevents:\n{}",
        objects.stdout, objects.stderr, events.stdout
    )
}

fn claim(name: &str, class: Option<&str>, size: &str) -> String {
    claim_manifest(name, class, "ReadWriteOnce", size)
}

fn class(name: &str, provisioner: &str, reclaim: &str, mode: &str, extra: &str) -> String {
    format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {name}}}\nprovisioner: {provisioner}\nreclaimPolicy: {reclaim}\nvolumeBindingMode: {mode}\n{extra}"
    )
}

#[track_caller]
fn running(kubectl: &Kubectl, name: &str) {
    wait_pod(kubectl, name, WAIT, |p| phase(p) == "Running");
}

fn exec(kubectl: &Kubectl, pod: &str, script: &str) -> common::Run {
    kubectl.run(&["exec", pod, "--", "sh", "-c", script])
}

/// The volume bound to `claim` once it is Bound.
#[track_caller]
fn bound_volume(kubectl: &Kubectl, claim: &str) -> String {
    eventually(&format!("claim {claim} is Bound"), || {
        let phase = get(kubectl, &["pvc", claim], "{.status.phase}");
        let volume = get(kubectl, &["pvc", claim], "{.spec.volumeName}");
        if phase == "Bound" && !volume.is_empty() {
            Ok(volume)
        } else {
            Err(describe(kubectl))
        }
    })
}

fn local_path_root(berth: &Berth) -> PathBuf {
    berth.data_dir().join("storage/local-path")
}

fn ext4_root(berth: &Berth) -> PathBuf {
    berth.data_dir().join("storage/local-ext4")
}

/// The names in a directory (none if it does not exist).
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The lines of /proc/self/mountinfo whose root (the mounted subtree) or mount point mentions
/// `needle`: a bind mount of a volume's directory shows its path as the root.
fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.len() > 4 && (fields[3].contains(needle) || fields[4].contains(needle))
        })
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// H4: protection and reclaim
// ---------------------------------------------------------------------------------------------

#[test]
fn h4_a_volume_and_claim_in_use_stay_terminating_and_the_directory_goes_only_after_the_unmount() {
    let (berth, kubectl) = start();
    kubectl.apply(&claim("held", None, "16Mi"));
    kubectl.apply(&pod_on_claim("user", "held", "echo precious > /data/note"));
    running(&kubectl, "user");
    let volume = bound_volume(&kubectl, "held");
    let uid = get(&kubectl, &["pvc", "held"], "{.metadata.uid}");
    assert_eq!(volume, format!("pvc-{uid}"));
    assert_eq!(
        get(
            &kubectl,
            &["pv", &volume],
            "{.spec.persistentVolumeReclaimPolicy}"
        ),
        "Delete"
    );
    let dir = local_path_root(&berth).join(&volume);
    let note = dir.join("note");
    eventually("the note is on the host", || {
        let text = std::fs::read_to_string(&note).unwrap_or_default();
        (text == "precious\n").then_some(()).ok_or(text)
    });
    // The pod's bind mount of the directory is visible here, so its absence later means
    // something.
    assert!(
        !mounts_mentioning(&volume).is_empty(),
        "no mount of {} while the pod runs",
        dir.display()
    );

    // The volume, deleted directly while Bound: it only turns Terminating.
    let run = kubectl.run(&["delete", "pv", &volume, "--wait=false"]);
    assert_eq!(run.code, 0, "{run:?}");
    // The claim, deleted while the pod uses it: `kubectl delete` returns, the claim stays.
    let run = kubectl.run(&["delete", "pvc", "held", "--wait=false"]);
    assert_eq!(run.code, 0, "{run:?}");
    eventually("both are marked for deletion", || {
        let pvc = object(&kubectl, "pvc", "held").ok_or("the claim is gone")?;
        let pv = object(&kubectl, "pv", &volume).ok_or("the volume is gone")?;
        if pvc["metadata"]["deletionTimestamp"].is_string()
            && pv["metadata"]["deletionTimestamp"].is_string()
        {
            Ok(())
        } else {
            Err(format!("{pvc}\n{pv}"))
        }
    });
    // Held for as long as the pod runs: look a few times over some seconds.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let pvc = object(&kubectl, "pvc", "held").expect("the claim in use is still there");
        assert!(
            finalizers(&pvc).contains(&"kubernetes.io/pvc-protection".to_string()),
            "{pvc}"
        );
        assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
        let pv = object(&kubectl, "pv", &volume).expect("the bound volume is still there");
        assert!(
            finalizers(&pv).contains(&"kubernetes.io/pv-protection".to_string()),
            "{pv}"
        );
        assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
        assert!(dir.is_dir(), "the directory went while in use");
    }
    let table = kubectl.ok(&["get", "pvc", "held"]);
    assert!(table.contains("Terminating"), "{table}");
    let table = kubectl.ok(&["get", "pv", &volume]);
    assert!(table.contains("Terminating"), "{table}");
    // The data is intact and still writable from the pod.
    let read = exec(
        &kubectl,
        "user",
        "cat /data/note && echo more >> /data/note",
    );
    assert_eq!(
        (read.code, read.stdout.as_str()),
        (0, "precious\n"),
        "{read:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&note).unwrap_or_default(),
        "precious\nmore\n"
    );

    // The pod goes: then the claim, the volume and (after the unmount) the directory.
    kubectl.ok(&["delete", "pod", "user", "--wait=false"]);
    let deadline = Instant::now() + WAIT;
    let mut saw_mount_after_delete = false;
    loop {
        // Read the mounts before the directory: a directory gone while a mount of it was
        // still there shows up as gone-with-mounts here.
        let mounts = mounts_mentioning(&volume);
        let exists = dir.exists();
        if !exists {
            assert!(
                mounts.is_empty(),
                "the directory was removed while still mounted:\n{}",
                mounts.join("\n")
            );
            break;
        }
        saw_mount_after_delete |= !mounts.is_empty();
        assert!(
            Instant::now() < deadline,
            "the directory {} is still there; mounts: {mounts:?}\n{}",
            dir.display(),
            describe(&kubectl)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the pod's mount was seen after the pod's deletion: {saw_mount_after_delete}");
    assert!(mounts_mentioning(&volume).is_empty());
    eventually("the claim and the volume are gone", || {
        let pvc = object(&kubectl, "pvc", "held");
        let pv = object(&kubectl, "pv", &volume);
        if pvc.is_none() && pv.is_none() {
            Ok(())
        } else {
            Err(describe(&kubectl))
        }
    });
    assert_eq!(
        entries(&local_path_root(&berth)),
        BTreeSet::new(),
        "nothing is left under local-path"
    );
}

#[test]
fn h4_retain_keeps_a_released_volume_with_its_data_and_never_rebinds_it() {
    let (berth, kubectl) = start();
    kubectl.apply(&class(
        "keep",
        "berth.dev/local-path",
        "Retain",
        "WaitForFirstConsumer",
        "",
    ));
    kubectl.apply(&claim("kept", Some("keep"), "16Mi"));
    kubectl.apply(&pod_on_claim(
        "writer",
        "kept",
        "echo precious > /data/file",
    ));
    running(&kubectl, "writer");
    let volume = bound_volume(&kubectl, "kept");
    let uid = get(&kubectl, &["pvc", "kept"], "{.metadata.uid}");
    let file = local_path_root(&berth).join(&volume).join("file");
    eventually("the file is on the host", || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        (text == "precious\n").then_some(()).ok_or(text)
    });

    // Deleted in use: Terminating until the pod goes.
    kubectl.ok(&["delete", "pvc", "kept", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(2));
    let pvc = object(&kubectl, "pvc", "kept").expect("the claim in use is still there");
    assert!(pvc["metadata"]["deletionTimestamp"].is_string(), "{pvc}");
    assert_eq!(
        exec(&kubectl, "writer", "cat /data/file").stdout,
        "precious\n"
    );
    kubectl.ok(&["delete", "pod", "writer", "--wait=false"]);
    eventually("the claim is gone and the volume Released", || {
        let phase = get(&kubectl, &["pv", &volume], "{.status.phase}");
        if object(&kubectl, "pvc", "kept").is_none() && phase == "Released" {
            Ok(())
        } else {
            Err(describe(&kubectl))
        }
    });

    // A new claim of the same class and size gets a volume of its own; the released one stays
    // Released with its data and its old claimRef.
    kubectl.apply(&claim("next", Some("keep"), "16Mi"));
    kubectl.apply(&pod_on_claim("reader", "next", "ls /data > /dev/null"));
    running(&kubectl, "reader");
    let next = bound_volume(&kubectl, "next");
    assert_ne!(next, volume, "the new claim took the released volume");
    assert_eq!(
        exec(&kubectl, "reader", "ls /data").stdout,
        "",
        "the new claim sees old data"
    );
    // Later looks (the PV controller resyncs) change nothing.
    std::thread::sleep(Duration::from_secs(3));
    let pv = object(&kubectl, "pv", &volume).expect("the retained volume is still there");
    assert_eq!(pv["status"]["phase"], "Released", "{pv}");
    assert_eq!(pv["spec"]["claimRef"]["uid"], uid.as_str(), "{pv}");
    assert!(pv["metadata"]["deletionTimestamp"].is_null(), "{pv}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap_or_default(),
        "precious\n"
    );
}

// ---------------------------------------------------------------------------------------------
// H5: provisioner crash and hostile input
// ---------------------------------------------------------------------------------------------

/// Checks that every claim is Bound to `pvc-<its uid>`, that there is exactly one volume per
/// claim and no other, and that the backing storage on disk is exactly the volumes' (no
/// orphans). `Err` describes the first difference.
fn one_volume_per_claim_and_no_orphans(berth: &Berth, kubectl: &Kubectl) -> Result<(), String> {
    let claims = items(kubectl, "pvc");
    let volumes = items(kubectl, "pv");
    let mut wanted = BTreeSet::new();
    for claim in &claims {
        let name = claim["metadata"]["name"].as_str().unwrap_or_default();
        let uid = claim["metadata"]["uid"].as_str().unwrap_or_default();
        let volume = format!("pvc-{uid}");
        if claim["status"]["phase"] != "Bound" || claim["spec"]["volumeName"] != volume.as_str() {
            return Err(format!(
                "claim {name} is {} to {:?}, not Bound to {volume}",
                claim["status"]["phase"], claim["spec"]["volumeName"]
            ));
        }
        wanted.insert(volume);
    }
    let mut seen = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let mut images = BTreeSet::new();
    for volume in &volumes {
        let name = volume["metadata"]["name"].as_str().unwrap_or_default();
        let claim_uid = volume["spec"]["claimRef"]["uid"]
            .as_str()
            .unwrap_or_default();
        if name != format!("pvc-{claim_uid}") {
            return Err(format!("volume {name} is for claim uid {claim_uid:?}"));
        }
        if !seen.insert(name.to_string()) {
            return Err(format!("two volumes named {name}"));
        }
        if volume["spec"]["local"].is_object() {
            let path = volume["spec"]["local"]["path"].as_str().unwrap_or_default();
            let expected = local_path_root(berth).join(name);
            if Path::new(path) != expected {
                return Err(format!("volume {name} has path {path}"));
            }
            dirs.insert(name.to_string());
        } else {
            images.insert(format!("{name}.img"));
        }
    }
    if seen != wanted {
        return Err(format!("volumes {seen:?}, claims want {wanted:?}"));
    }
    let on_disk = entries(&local_path_root(berth));
    if on_disk != dirs {
        return Err(format!(
            "directories under local-path {on_disk:?}, volumes {dirs:?}"
        ));
    }
    let on_disk = entries(&ext4_root(berth));
    if on_disk != images {
        return Err(format!(
            "files under local-ext4 {on_disk:?}, volumes {images:?}"
        ));
    }
    Ok(())
}

#[test]
fn h5_kill_9_while_provisioning_and_deleting_leaves_one_volume_per_claim_and_no_orphans() {
    let mut berth = Berth::start();
    let kubectl = berth.kubectl();
    kubectl.apply(&class(
        "now",
        "berth.dev/local-path",
        "Delete",
        "Immediate",
        "",
    ));
    kubectl.apply(&class(
        "now-ext4",
        "berth.dev/local-ext4",
        "Delete",
        "Immediate",
        "",
    ));
    // Rounds of claims made in one go, berth killed at once or a moment later.
    let mut made = 0;
    for (round, delay_ms) in [(0, 0u64), (1, 300), (2, 800)] {
        let mut manifest = String::new();
        for i in 0..10 {
            manifest.push_str("---\n");
            manifest.push_str(&claim(&format!("r{round}-path-{i}"), Some("now"), "8Mi"));
        }
        for i in 0..2 {
            manifest.push_str("---\n");
            manifest.push_str(&claim(
                &format!("r{round}-ext4-{i}"),
                Some("now-ext4"),
                "16Mi",
            ));
        }
        kubectl.apply(&manifest);
        made += 12;
        std::thread::sleep(Duration::from_millis(delay_ms));
        berth.kill();
        // For the record: how far provisioning got before the crash.
        eprintln!(
            "round {round}: killed with {} directories and {:?} under local-ext4",
            entries(&local_path_root(&berth)).len(),
            entries(&ext4_root(&berth)),
        );
        berth.launch();
    }
    eventually(
        "every claim has exactly its own volume after the crashes",
        || one_volume_per_claim_and_no_orphans(&berth, &kubectl),
    );
    assert_eq!(items(&kubectl, "pvc").len(), made);
    assert_eq!(items(&kubectl, "pv").len(), made);

    // Deleting them all, killed halfway: after the restart nothing is left.
    kubectl.ok(&["delete", "pvc", "--all", "--wait=false"]);
    std::thread::sleep(Duration::from_millis(500));
    berth.kill();
    berth.launch();
    eventually("every claim, volume, directory and image is gone", || {
        let claims = items(&kubectl, "pvc").len();
        let volumes = items(&kubectl, "pv").len();
        let dirs = entries(&local_path_root(&berth));
        let images = entries(&ext4_root(&berth));
        if claims == 0 && volumes == 0 && dirs.is_empty() && images.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{claims} claims, {volumes} volumes, dirs {dirs:?}, images {images:?}"
            ))
        }
    });
}

/// Every path under `dir` (not following symlinks), relative to it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            out.push(path.strip_prefix(dir).unwrap_or(&path).to_path_buf());
        }
    }
    out
}

#[test]
fn h5_a_maximal_claim_name_and_path_like_class_parameters_stay_under_the_storage_root() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    let etc_before = entries(Path::new("/etc"));
    let parent = berth.dir.path().parent().expect("a parent").to_path_buf();
    let parent_before = entries(&parent);
    // Parameters a path-templating provisioner would use to place the volume.
    let hostile = "parameters:\n  nodePath: ../../etc\n  path: ../../../../etc/berth-escape\n  pathPattern: \"{{ .PVC.Namespace }}/../../../{{ .PVC.Name }}\"\n";
    kubectl.apply(&class(
        "hostile",
        "berth.dev/local-path",
        "Delete",
        "Immediate",
        hostile,
    ));
    kubectl.apply(&class(
        "hostile-ext4",
        "berth.dev/local-ext4",
        "Delete",
        "Immediate",
        hostile,
    ));
    // The longest name a claim may have (a DNS subdomain: 253 characters).
    let long = format!("etc.passwd.{}", "z".repeat(242));
    assert_eq!(long.len(), 253);
    let long_ext4 = format!("etc.shadow.{}", "y".repeat(242));
    kubectl.apply(&claim(&long, Some("hostile"), "8Mi"));
    kubectl.apply(&claim(&long_ext4, Some("hostile-ext4"), "16Mi"));
    // Names that are paths are refused outright.
    for bad in ["..", "../../etc", "a/b"] {
        let run = kubectl.run_stdin(&["apply", "-f", "-"], &claim(bad, Some("hostile"), "8Mi"));
        assert_ne!(run.code, 0, "a claim named {bad:?} was accepted: {run:?}");
    }

    let volume = bound_volume(&kubectl, &long);
    let uid = get(&kubectl, &["pvc", &long], "{.metadata.uid}");
    assert_eq!(volume, format!("pvc-{uid}"));
    let dir = local_path_root(&berth).join(&volume);
    assert_eq!(
        get(&kubectl, &["pv", &volume], "{.spec.local.path}"),
        dir.display().to_string()
    );
    assert!(dir.is_dir(), "{} was not made", dir.display());
    let ext4_volume = bound_volume(&kubectl, &long_ext4);
    let ext4_uid = get(&kubectl, &["pvc", &long_ext4], "{.metadata.uid}");
    assert_eq!(ext4_volume, format!("pvc-{ext4_uid}"));
    assert_eq!(
        get(&kubectl, &["pv", &ext4_volume], "{.spec.csi.volumeHandle}"),
        ext4_volume
    );
    eventually("exactly the two volumes' storage exists", || {
        one_volume_per_claim_and_no_orphans(&berth, &kubectl)
    });

    // Nothing was made outside <data>/storage that names the claims or the parameters.
    let storage = berth.data_dir().join("storage");
    let strays: Vec<PathBuf> = walk(berth.dir.path())
        .into_iter()
        .filter(|p| !berth.dir.path().join(p).starts_with(&storage))
        .filter(|p| {
            let text = p.to_string_lossy();
            text.contains("etc.passwd")
                || text.contains("etc.shadow")
                || text.contains("berth-escape")
                || text.contains("PVC")
                || text.contains(&volume)
                || text.contains(&ext4_volume)
        })
        .collect();
    assert!(
        strays.is_empty(),
        "made outside the storage root: {strays:?}"
    );
    let storage_paths: Vec<PathBuf> = walk(&storage);
    let expected: BTreeSet<PathBuf> = [
        PathBuf::from("local-path"),
        PathBuf::from("local-path").join(&volume),
        PathBuf::from("local-ext4"),
        PathBuf::from("local-ext4").join(format!("{ext4_volume}.img")),
    ]
    .into();
    let found: BTreeSet<PathBuf> = storage_paths.into_iter().collect();
    assert_eq!(
        found, expected,
        "the storage root holds more than the volumes"
    );
    let etc_after = entries(Path::new("/etc"));
    let new_in_etc: Vec<_> = etc_after.difference(&etc_before).collect();
    assert!(
        new_in_etc
            .iter()
            .all(|n| !n.contains("berth") && !n.starts_with("pvc-")),
        "new in /etc: {new_in_etc:?}"
    );
    let parent_after = entries(&parent);
    let new_in_parent: Vec<_> = parent_after
        .difference(&parent_before)
        .filter(|n| n.starts_with("pvc-") || n.contains("etc") || n.contains("berth-escape"))
        .collect();
    assert!(
        new_in_parent.is_empty(),
        "new beside the data dir: {new_in_parent:?}"
    );

    // And deleting them removes exactly that.
    kubectl.ok(&["delete", "pvc", "--all", "--wait=false"]);
    eventually("the volumes and their storage are gone", || {
        let volumes = items(&kubectl, "pv").len();
        let dirs = entries(&local_path_root(&berth));
        let images = entries(&ext4_root(&berth));
        if volumes == 0 && dirs.is_empty() && images.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{volumes} volumes, dirs {dirs:?}, images {images:?}"
            ))
        }
    });
}

// ---------------------------------------------------------------------------------------------
// H7: non-root pods
// ---------------------------------------------------------------------------------------------

/// A pod that runs once as uid 1000, gid 1000, fsGroup 2000 on `claim` and reports what it
/// could do.
fn non_root_pod(name: &str, claim: &str) -> String {
    let script = "id; ls -lnd /data; \
                  echo hello > /data/mine && echo WROTE; \
                  mkdir /data/sub && echo hi > /data/sub/f && echo MKDIR; \
                  ls -ln /data";
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000}}
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

#[test]
fn h7_a_non_root_pod_with_fs_group_writes_to_fresh_local_path_and_local_ext4_volumes() {
    let (berth, kubectl) = start();
    kubectl.apply(&claim("plain", None, "16Mi"));
    kubectl.apply(&claim("sized", Some("local-ext4"), "32Mi"));
    kubectl.apply(&non_root_pod("plain-writer", "plain"));
    kubectl.apply(&non_root_pod("sized-writer", "sized"));
    for (pod, claim) in [("plain-writer", "plain"), ("sized-writer", "sized")] {
        let done = wait_pod(&kubectl, pod, WAIT, |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        });
        let logs = kubectl.run(&["logs", pod]).stdout;
        // What the pod ran as and the ownership it found and made, for the record.
        eprintln!("{pod} on claim {claim}:\n{logs}");
        let id = logs.lines().next().unwrap_or_default();
        assert!(
            id.contains("uid=1000") && id.contains("gid=1000") && id.contains("2000"),
            "{pod} did not run as uid 1000 with group 2000:\n{logs}"
        );
        assert!(
            logs.contains("WROTE") && logs.contains("MKDIR"),
            "a non-root pod could not write to its fresh {claim} volume (ls -ln in the log):\n{logs}\n{}",
            serde_json::to_string_pretty(&pod_json(&kubectl, pod)["status"]).unwrap_or_default()
        );
        assert_eq!(phase(&done), "Succeeded", "{logs}");
        // The file it made is its own: owner 1000.
        let mine = logs
            .lines()
            .find(|l| l.ends_with(" mine"))
            .unwrap_or_default();
        assert_eq!(
            mine.split_whitespace().nth(2),
            Some("1000"),
            "ownership of the new file: {mine:?}\n{logs}"
        );
        // fsGroup: the volume's root is the group's (setgid), so new files are too.
        assert_eq!(
            mine.split_whitespace().nth(3),
            Some("2000"),
            "group of the new file: {mine:?}\n{logs}"
        );
    }
    // On the host: the local-path directory is 0777 (as k3s makes them) plus fsGroup's
    // setgid and group; the file is the pod's user's and the fsGroup's.
    let volume = bound_volume(&kubectl, "plain");
    let dir = local_path_root(&berth).join(&volume);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&dir).expect("the volume directory");
    assert_eq!(meta.mode() & 0o7777, 0o2777, "mode of {}", dir.display());
    assert_eq!(meta.gid(), 2000);
    let file = std::fs::metadata(dir.join("mine")).expect("the pod's file");
    assert_eq!((file.uid(), file.gid()), (1000, 2000));
}
