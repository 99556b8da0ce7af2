//! The PersistentVolume and protection controllers inside `berth up`, driven by the real
//! kubectl: pre-made hostPath volumes and claims created as an administrator and a user
//! would, and only what kubectl shows is read. No pods run (`--disable-agent`): binding,
//! phases and reclaim are the controllers' alone. Every claim names its class explicitly
//! (`""` or one that no StorageClass object backs), so the tests hold whether or not the API
//! server installs a default class.

mod common;

use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use serde_json::Value;

/// Long enough for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

fn start() -> (Berth, Kubectl) {
    let berth = Berth::start_with(&["--disable-agent"]);
    let kubectl = berth.kubectl();
    (berth, kubectl)
}

fn json_of(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl.ok(&args)).expect("kubectl printed JSON")
}

/// The object, or `None` when kubectl says it does not exist.
fn get(kubectl: &Kubectl, kind: &str, name: &str) -> Option<Value> {
    let run = kubectl.run(&["get", kind, name, "-o", "json"]);
    if run.code != 0 {
        assert!(
            run.stderr.contains("NotFound") || run.stderr.contains("not found"),
            "kubectl get {kind} {name}: {}",
            run.stderr
        );
        return None;
    }
    Some(serde_json::from_str(&run.stdout).expect("kubectl printed JSON"))
}

fn describe(kubectl: &Kubectl) -> String {
    let objects = kubectl.run(&["get", "pv,pvc", "-o", "yaml"]);
    let events = kubectl.run(&["get", "events"]);
    format!(
        "objects:\n{}{}\nevents:\n{}",
        objects.stdout, objects.stderr, events.stdout
    )
}

/// Polls `check` until it returns `Some`; panics with `what` and what kubectl shows after
/// [`WAIT`].
#[track_caller]
fn wait_for<T>(kubectl: &Kubectl, what: &str, check: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen:\n{}",
            describe(kubectl)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn phase(kubectl: &Kubectl, kind: &str, name: &str) -> Option<String> {
    get(kubectl, kind, name)?["status"]["phase"]
        .as_str()
        .map(str::to_string)
}

#[track_caller]
fn wait_phase(kubectl: &Kubectl, kind: &str, name: &str, want: &str) -> Value {
    wait_for(kubectl, &format!("{kind} {name} to be {want}"), || {
        let object = get(kubectl, kind, name)?;
        (object["status"]["phase"] == want).then_some(object)
    })
}

/// A hostPath volume; `extra` is appended to its spec (indented by four spaces).
fn volume(name: &str, size: &str, class: &str, reclaim: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
spec:
  capacity:
    storage: {size}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: {reclaim}
  storageClassName: \"{class}\"
  hostPath:
    path: /tmp/berth-storage-binding/{name}
{extra}"
    )
}

/// A claim in `default`; `extra` is appended to its spec.
fn claim(name: &str, size: &str, class: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: \"{class}\"
  resources:
    requests:
      storage: {size}
{extra}"
    )
}

/// The name of the volume a Bound claim is bound to, after checking the claim shows the
/// volume's capacity and access modes and both sides point at each other.
#[track_caller]
fn bound_pair(kubectl: &Kubectl, claim: &str) -> String {
    let pvc = wait_phase(kubectl, "pvc", claim, "Bound");
    let volume = pvc["spec"]["volumeName"]
        .as_str()
        .expect("a Bound claim names its volume")
        .to_string();
    let pv = wait_phase(kubectl, "pv", &volume, "Bound");
    assert_eq!(pv["spec"]["claimRef"]["name"], claim);
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "default");
    assert_eq!(pv["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"]);
    assert_eq!(pvc["status"]["capacity"], pv["spec"]["capacity"]);
    assert_eq!(pvc["status"]["accessModes"], pv["spec"]["accessModes"]);
    assert_eq!(
        pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    volume
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

/// The reasons of the events about `name` (of `kind`), in any namespace.
fn event_reasons(kubectl: &Kubectl, kind: &str, name: &str) -> Vec<String> {
    json_of(kubectl, &["get", "events", "-A"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

#[track_caller]
fn wait_event(kubectl: &Kubectl, kind: &str, name: &str, reason: &str) {
    wait_for(kubectl, &format!("event {reason} on {kind} {name}"), || {
        event_reasons(kubectl, kind, name)
            .iter()
            .any(|r| r == reason)
            .then_some(())
    });
}

#[test]
fn a_claim_binds_to_the_smallest_volume_of_its_class() {
    let (_berth, kubectl) = start();
    for manifest in [
        volume("small", "1Gi", "", "Retain", ""),
        volume("medium", "2Gi", "", "Retain", ""),
        volume("large", "5Gi", "", "Retain", ""),
        volume("manual", "3Gi", "manual", "Retain", ""),
        volume("labelled", "4Gi", "", "Retain", ""),
    ] {
        kubectl.apply(&manifest);
    }
    kubectl.ok(&["label", "pv", "labelled", "tier=gold"]);
    for name in ["small", "medium", "large", "manual", "labelled"] {
        wait_phase(&kubectl, "pv", name, "Available");
    }

    // 1500Mi does not fit in 1Gi; of the rest, 2Gi is the smallest without a class.
    kubectl.apply(&claim("web", "1500Mi", "", ""));
    assert_eq!(bound_pair(&kubectl, "web"), "medium");
    let pv = get(&kubectl, "pv", "medium").expect("pv");
    assert_eq!(
        annotation(&pv, "pv.kubernetes.io/bound-by-controller"),
        Some("yes")
    );

    // A class only matches volumes of that class, even smaller ones without.
    kubectl.apply(&claim("db", "1Gi", "manual", ""));
    assert_eq!(bound_pair(&kubectl, "db"), "manual");

    // A selector only matches volumes with its labels.
    kubectl.apply(&claim(
        "gold",
        "1Gi",
        "",
        "  selector:\n    matchLabels:\n      tier: gold\n",
    ));
    assert_eq!(bound_pair(&kubectl, "gold"), "labelled");

    kubectl.apply(&claim("cache", "1Gi", "", ""));
    assert_eq!(bound_pair(&kubectl, "cache"), "small");

    // Nothing left that fits: Pending, with an event saying why.
    kubectl.apply(&claim("huge", "10Gi", "", ""));
    wait_event(&kubectl, "PersistentVolumeClaim", "huge", "FailedBinding");
    assert_eq!(phase(&kubectl, "pvc", "huge").as_deref(), Some("Pending"));
    assert!(get(&kubectl, "pvc", "huge").expect("pvc")["spec"]["volumeName"].is_null());
    // A class no StorageClass backs has nothing to provision with: Pending too.
    kubectl.apply(&claim("nowhere", "1Gi", "manual", ""));
    wait_event(
        &kubectl,
        "PersistentVolumeClaim",
        "nowhere",
        "ProvisioningFailed",
    );
    assert_eq!(
        phase(&kubectl, "pvc", "nowhere").as_deref(),
        Some("Pending")
    );
    assert_eq!(phase(&kubectl, "pv", "large").as_deref(), Some("Available"));

    // What an administrator sees.
    let table = kubectl.ok(&["get", "pv,pvc"]);
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{table}"))
            .to_string()
    };
    let pv_line = line("persistentvolume/medium");
    assert!(
        pv_line.contains("2Gi") && pv_line.contains("Bound") && pv_line.contains("default/web"),
        "{pv_line}"
    );
    let pvc_line = line("persistentvolumeclaim/web");
    assert!(
        pvc_line.contains("Bound") && pvc_line.contains("medium") && pvc_line.contains("2Gi"),
        "{pvc_line}"
    );
    let pending = line("persistentvolumeclaim/huge");
    assert!(pending.contains("Pending"), "{pending}");
}

#[test]
fn pre_binding_from_either_side() {
    let (_berth, kubectl) = start();
    kubectl.apply(&volume("tiny", "1Gi", "", "Retain", ""));
    kubectl.apply(&volume("chosen", "5Gi", "", "Retain", ""));
    kubectl.apply(&volume(
        "reserved",
        "8Gi",
        "",
        "Retain",
        "  claimRef:\n    namespace: default\n    name: mine\n",
    ));
    for name in ["tiny", "chosen", "reserved"] {
        wait_phase(&kubectl, "pv", name, "Available");
    }

    // The claim names its volume: that one, though a smaller one fits.
    kubectl.apply(&claim("named", "1Gi", "", "  volumeName: chosen\n"));
    assert_eq!(bound_pair(&kubectl, "named"), "chosen");
    let pvc = get(&kubectl, "pvc", "named").expect("pvc");
    assert_eq!(
        annotation(&pvc, "pv.kubernetes.io/bound-by-controller"),
        None
    );
    let pv = get(&kubectl, "pv", "chosen").expect("pv");
    assert_eq!(
        annotation(&pv, "pv.kubernetes.io/bound-by-controller"),
        Some("yes")
    );

    // The volume names the claim: no other claim gets it, and its claim gets it.
    kubectl.apply(&claim("other", "2Gi", "", ""));
    wait_event(&kubectl, "PersistentVolumeClaim", "other", "FailedBinding");
    assert_eq!(phase(&kubectl, "pvc", "other").as_deref(), Some("Pending"));
    kubectl.apply(&claim("mine", "1Gi", "", ""));
    assert_eq!(bound_pair(&kubectl, "mine"), "reserved");
    let pvc = get(&kubectl, "pvc", "mine").expect("pvc");
    assert_eq!(
        annotation(&pvc, "pv.kubernetes.io/bound-by-controller"),
        Some("yes")
    );
    let pv = get(&kubectl, "pv", "reserved").expect("pv");
    assert_eq!(
        annotation(&pv, "pv.kubernetes.io/bound-by-controller"),
        None
    );
    assert_eq!(phase(&kubectl, "pv", "tiny").as_deref(), Some("Available"));
}

#[test]
fn retain_releases_and_clearing_the_claim_ref_makes_the_volume_available() {
    let (_berth, kubectl) = start();
    kubectl.apply(&volume("keep", "1Gi", "", "Retain", ""));
    wait_phase(&kubectl, "pv", "keep", "Available");
    kubectl.apply(&claim("data", "1Gi", "", ""));
    assert_eq!(bound_pair(&kubectl, "data"), "keep");

    kubectl.ok(&["delete", "pvc", "data", "--timeout=60s"]);
    let pv = wait_phase(&kubectl, "pv", "keep", "Released");
    // Released keeps the claimRef: no new claim gets the old claim's data.
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    kubectl.apply(&claim("again", "1Gi", "", ""));
    wait_event(&kubectl, "PersistentVolumeClaim", "again", "FailedBinding");
    assert_eq!(phase(&kubectl, "pvc", "again").as_deref(), Some("Pending"));

    // The administrator's decision: clear the claimRef, and it is Available — and taken.
    kubectl.ok(&[
        "patch",
        "pv",
        "keep",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/claimRef"}]"#,
    ]);
    assert_eq!(bound_pair(&kubectl, "again"), "keep");
}

#[test]
fn recycle_and_delete_without_a_deleter_fail_with_an_event() {
    let (_berth, kubectl) = start();
    kubectl.apply(&volume("recycled", "1Gi", "", "Recycle", ""));
    kubectl.apply(&volume("deleted", "2Gi", "", "Delete", ""));
    wait_phase(&kubectl, "pv", "recycled", "Available");
    wait_phase(&kubectl, "pv", "deleted", "Available");
    kubectl.apply(&claim("a", "1Gi", "", "  volumeName: recycled\n"));
    kubectl.apply(&claim("b", "1Gi", "", "  volumeName: deleted\n"));
    bound_pair(&kubectl, "a");
    bound_pair(&kubectl, "b");

    kubectl.ok(&["delete", "pvc", "a", "b", "--timeout=60s"]);
    let pv = wait_phase(&kubectl, "pv", "recycled", "Failed");
    assert!(
        pv["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deprecated")),
        "{pv}"
    );
    wait_event(
        &kubectl,
        "PersistentVolume",
        "recycled",
        "VolumeFailedRecycle",
    );
    // hostPath has no deleter in berth (only its provisioners' volumes are deleted).
    wait_phase(&kubectl, "pv", "deleted", "Failed");
    wait_event(
        &kubectl,
        "PersistentVolume",
        "deleted",
        "VolumeFailedDelete",
    );
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

#[test]
fn protection_holds_a_used_claim_and_a_bound_volume() {
    let (_berth, kubectl) = start();
    kubectl.apply(&volume("guarded", "1Gi", "", "Retain", ""));
    wait_phase(&kubectl, "pv", "guarded", "Available");
    kubectl.apply(&claim("used", "1Gi", "", ""));
    assert_eq!(bound_pair(&kubectl, "used"), "guarded");

    let pvc = get(&kubectl, "pvc", "used").expect("pvc");
    let pv = get(&kubectl, "pv", "guarded").expect("pv");
    let claim_protected = finalizers(&pvc)
        .iter()
        .any(|f| f == "kubernetes.io/pvc-protection");
    let volume_protected = finalizers(&pv)
        .iter()
        .any(|f| f == "kubernetes.io/pv-protection");
    if !claim_protected || !volume_protected {
        println!(
            "SKIPPED: the API server did not add the protection finalizers \
             (claim: {claim_protected}, volume: {volume_protected}); nothing to test"
        );
        return;
    }

    // A pod that uses the claim (never scheduled: no agent runs) holds it while it has not
    // terminated.
    kubectl.apply(
        "apiVersion: v1
kind: Pod
metadata:
  name: user
  namespace: default
spec:
  containers:
  - name: c
    image: busybox
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: used
",
    );
    kubectl.ok(&["delete", "pvc", "used", "--wait=false"]);
    kubectl.ok(&["delete", "pv", "guarded", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(2));
    let pvc = get(&kubectl, "pvc", "used").expect("the claim is still there");
    assert!(pvc["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(finalizers(&pvc), ["kubernetes.io/pvc-protection"]);
    let pv = get(&kubectl, "pv", "guarded").expect("the volume is still there");
    assert!(pv["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(pv["status"]["phase"], "Bound");
    let table = kubectl.ok(&["get", "pvc", "used"]);
    assert!(table.contains("Terminating"), "{table}");

    // The pod terminates: the claim goes, so the volume is Released and goes too.
    kubectl.ok(&[
        "patch",
        "pod",
        "user",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]);
    wait_for(&kubectl, "the claim to be gone", || {
        get(&kubectl, "pvc", "used").is_none().then_some(())
    });
    wait_for(&kubectl, "the volume to be gone", || {
        get(&kubectl, "pv", "guarded").is_none().then_some(())
    });
}

#[test]
fn a_claim_made_without_a_default_class_gets_the_one_that_appears_later() {
    let berth = Berth::start_with(&["--disable-agent", "--disable-storage-classes"]);
    let kubectl = berth.kubectl();
    kubectl.apply(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: early}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    let class = |kubectl: &Kubectl| {
        kubectl
            .ok(&[
                "get",
                "pvc",
                "early",
                "-o",
                "jsonpath={.spec.storageClassName}",
            ])
            .trim()
            .to_string()
    };
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(class(&kubectl), "", "no default class exists yet");
    kubectl.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: later\n  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}\nprovisioner: example.com/none\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    wait_for(&kubectl, "the claim gets the new default class", || {
        (class(&kubectl) == "later").then_some(())
    });
    // A claim that chose "no class" keeps that choice.
    kubectl.apply(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: classless}\nspec:\n  storageClassName: \"\"\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    std::thread::sleep(Duration::from_secs(1));
    let chosen = kubectl.ok(&[
        "get",
        "pvc",
        "classless",
        "-o",
        "jsonpath={.spec.storageClassName}",
    ]);
    assert_eq!(chosen.trim(), "");
}
