//! The API server's storage admission and the built-in StorageClasses, through the real
//! kubectl: the default class given to claims that name none, the protection finalizers,
//! upstream's resize and immutability refusals, and `berth up`'s one-time install of
//! `local-path` and `local-ext4` (or none, with `--disable-storage-classes`).
//!
//! The servers run without the node agent and without controllers, so that nothing but the
//! API server touches the claims (a PV controller would bind or annotate them) and a test can
//! set a claim's status itself.

mod common;

use common::{Berth, Kubectl};
use serde_json::Value;

const ARGS: &[&str] = &["--disable-agent", "--disable-controller-manager"];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn claim(name: &str, class: Option<&str>) -> String {
    let class = match class {
        Some(c) => format!("  storageClassName: \"{c}\"\n"),
        None => String::new(),
    };
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n{class}  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n"
    )
}

fn get(k: &Kubectl, what: &str, name: &str) -> Value {
    json(&k.ok(&["get", what, name, "-o", "json"]))
}

/// The words of one `kubectl get sc` row, the `(default)` marker kept with the name.
fn class_row(table: &str, name: &str) -> Option<Vec<String>> {
    table.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        (words.first() == Some(&name)).then(|| words.iter().map(|w| w.to_string()).collect())
    })
}

/// Makes a claim look bound with `capacity` through the status subresource, as the PV
/// controller would.
fn mark_bound(k: &Kubectl, name: &str, capacity: &str) {
    let status =
        format!(r#"{{"status":{{"phase":"Bound","capacity":{{"storage":"{capacity}"}}}}}}"#);
    k.ok(&[
        "patch",
        "pvc",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

fn resize(k: &Kubectl, name: &str, size: &str) -> common::Run {
    let patch = format!(r#"{{"spec":{{"resources":{{"requests":{{"storage":"{size}"}}}}}}}}"#);
    k.run(&["patch", "pvc", name, "--type=merge", "-p", &patch])
}

#[test]
fn builtin_classes_and_the_default_class() {
    let berth = Berth::start_with(ARGS);
    let k = berth.kubectl();

    let table = k.ok(&["get", "sc"]);
    assert_eq!(
        class_row(&table, "local-path").map(|w| w[..6].to_vec()),
        Some(
            [
                "local-path",
                "(default)",
                "berth.dev/local-path",
                "Delete",
                "WaitForFirstConsumer",
                "false"
            ]
            .map(String::from)
            .to_vec()
        ),
        "{table}"
    );
    assert_eq!(
        class_row(&table, "local-ext4").map(|w| w[..5].to_vec()),
        Some(
            [
                "local-ext4",
                "berth.dev/local-ext4",
                "Delete",
                "WaitForFirstConsumer",
                "true"
            ]
            .map(String::from)
            .to_vec()
        ),
        "{table}"
    );
    let path = get(&k, "sc", "local-path");
    assert_eq!(
        path["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(path["allowVolumeExpansion"], false);
    let ext4 = get(&k, "sc", "local-ext4");
    assert_eq!(ext4["metadata"].get("annotations"), None, "{ext4}");
    assert_eq!(ext4["allowVolumeExpansion"], true);

    // A claim that names no class gets the default; one that asks for "" keeps "".
    k.apply(&claim("plain", None));
    let plain = get(&k, "pvc", "plain");
    assert_eq!(plain["spec"]["storageClassName"], "local-path");
    assert_eq!(
        plain["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pvc-protection"])
    );
    k.apply(&claim("classless", Some("")));
    assert_eq!(get(&k, "pvc", "classless")["spec"]["storageClassName"], "");
    k.apply(&claim("chosen", Some("local-ext4")));
    assert_eq!(
        get(&k, "pvc", "chosen")["spec"]["storageClassName"],
        "local-ext4"
    );

    // Moving the default applies to new claims only.
    k.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: fast\nprovisioner: berth.dev/local-path\nvolumeBindingMode: Immediate\n",
    );
    k.ok(&[
        "annotate",
        "sc",
        "fast",
        "storageclass.kubernetes.io/is-default-class=true",
    ]);
    k.ok(&[
        "annotate",
        "sc",
        "local-path",
        "storageclass.kubernetes.io/is-default-class-",
    ]);
    let table = k.ok(&["get", "sc"]);
    assert!(
        class_row(&table, "fast").is_some_and(|w| w[1] == "(default)"),
        "{table}"
    );
    assert!(
        class_row(&table, "local-path").is_some_and(|w| w[1] != "(default)"),
        "{table}"
    );
    k.apply(&claim("later", None));
    assert_eq!(get(&k, "pvc", "later")["spec"]["storageClassName"], "fast");
    assert_eq!(
        get(&k, "pvc", "plain")["spec"]["storageClassName"],
        "local-path"
    );

    // With no default at all, a claim stays without a class.
    k.ok(&[
        "annotate",
        "sc",
        "fast",
        "storageclass.kubernetes.io/is-default-class-",
    ]);
    k.apply(&claim("orphan", None));
    assert_eq!(
        get(&k, "pvc", "orphan")["spec"].get("storageClassName"),
        None
    );

    // New volumes get pv-protection.
    k.apply(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: manual\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  hostPath: {path: /tmp/berth-manual-pv}\n",
    );
    assert_eq!(
        get(&k, "pv", "manual")["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pv-protection"])
    );

    // A StorageClass's provisioner settings are fixed at creation.
    let changed = k.run(&[
        "patch",
        "sc",
        "local-ext4",
        "--type=merge",
        "-p",
        r#"{"parameters":{"fs":"xfs"},"reclaimPolicy":"Retain"}"#,
    ]);
    assert_eq!(changed.code, 1, "{changed:?}");
    assert!(
        changed.stderr.contains(
            "The StorageClass \"local-ext4\" is invalid: \n* parameters: Forbidden: updates to parameters are forbidden.\n* reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden."
        ),
        "{}",
        changed.stderr
    );
    let moved = k.run(&[
        "patch",
        "sc",
        "local-path",
        "--type=merge",
        "-p",
        r#"{"volumeBindingMode":"Immediate"}"#,
    ]);
    assert!(
        moved.stderr.contains(
            "The StorageClass \"local-path\" is invalid: volumeBindingMode: Invalid value: \"Immediate\": field is immutable"
        ),
        "{}",
        moved.stderr
    );
}

#[test]
fn claims_grow_only_when_bound_and_expandable_and_never_shrink() {
    let berth = Berth::start_with(ARGS);
    let k = berth.kubectl();
    k.apply(&claim("dir", Some("local-path")));
    k.apply(&claim("image", Some("local-ext4")));
    k.apply(&claim("waiting", Some("local-ext4")));
    mark_bound(&k, "dir", "1Gi");
    mark_bound(&k, "image", "1Gi");

    // local-path does not allow expansion.
    let refused = resize(&k, "dir", "2Gi");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(
            "Error from server (Forbidden): persistentvolumeclaims \"dir\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
        ),
        "{}",
        refused.stderr
    );

    // local-ext4 does; the claim's request grows.
    let grown = resize(&k, "image", "2Gi");
    assert_eq!(grown.code, 0, "{grown:?}");
    assert_eq!(
        get(&k, "pvc", "image")["spec"]["resources"]["requests"]["storage"],
        "2Gi"
    );

    // Back down to the capacity it has (or below) is refused...
    let shrunk = resize(&k, "image", "1Gi");
    assert_eq!(shrunk.code, 1, "{shrunk:?}");
    assert!(
        shrunk.stderr.contains(
            "The PersistentVolumeClaim \"image\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
        ),
        "{}",
        shrunk.stderr
    );
    // ...while a smaller request still above it is allowed, to recover from a failed expansion
    // (RecoverVolumeExpansionFailure, on by default in Kubernetes 1.33).
    let recovered = resize(&k, "image", "1536Mi");
    assert_eq!(recovered.code, 0, "{recovered:?}");

    // A claim that is not bound cannot change its request at all.
    let pending = resize(&k, "waiting", "2Gi");
    assert_eq!(pending.code, 1, "{pending:?}");
    assert!(
        pending.stderr.contains(
            "The PersistentVolumeClaim \"waiting\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
        ),
        "{}",
        pending.stderr
    );
}

#[test]
fn builtin_classes_are_installed_once_per_data_dir() {
    let mut berth = Berth::start_with(ARGS);
    let k = berth.kubectl();
    k.ok(&["delete", "sc", "local-ext4"]);
    berth.restart();
    let table = k.ok(&["get", "sc"]);
    assert!(class_row(&table, "local-path").is_some(), "{table}");
    assert!(class_row(&table, "local-ext4").is_none(), "{table}");
}

#[test]
fn disable_storage_classes_starts_without_them() {
    let args: Vec<&str> = ARGS
        .iter()
        .copied()
        .chain(["--disable-storage-classes"])
        .collect();
    let berth = Berth::start_with(&args);
    let k = berth.kubectl();
    let none = k.run(&["get", "sc"]);
    assert_eq!(none.code, 0, "{none:?}");
    assert_eq!(none.stdout, "");
    assert!(
        none.stderr.contains("No resources found"),
        "{}",
        none.stderr
    );
    k.apply(&claim("plain", None));
    assert_eq!(
        get(&k, "pvc", "plain")["spec"].get("storageClassName"),
        None
    );
}
