//! The garbage collector inside `berth up`: owner references and the three propagation
//! policies, driven by the real kubectl and by kube-rs. Owners and dependents are ConfigMaps
//! and Secrets, which no other controller touches, so what happens to them is the collector's
//! doing alone; one test drives a Deployment through the ReplicaSet controller as well.

mod common;

use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

/// Generous for a loaded two-core machine; the collector normally acts within a second.
const WAIT: Duration = Duration::from_secs(60);

#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The object as JSON, or `None` when the server says it does not exist.
fn get(kubectl: &Kubectl, kind: &str, name: &str, ns: &str) -> Option<Value> {
    let run = kubectl.run(&["get", kind, name, "-n", ns, "-o", "json"]);
    if run.code != 0 {
        assert!(
            run.stderr.contains("NotFound") || run.stderr.contains("not found"),
            "kubectl get {kind} {name}: {}",
            run.stderr
        );
        return None;
    }
    Some(serde_json::from_str(&run.stdout).expect("kubectl prints JSON"))
}

fn uid(kubectl: &Kubectl, kind: &str, name: &str, ns: &str) -> String {
    get(kubectl, kind, name, ns)
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{kind} {name} has a uid"))
}

/// An owner reference to an object (kind ConfigMap or Secret, core v1).
fn owner(kind: &str, name: &str, uid: &str, block: bool) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": block})
}

/// Creates a ConfigMap or Secret in `ns` with these owner references and finalizers.
fn create(
    kubectl: &Kubectl,
    kind: &str,
    name: &str,
    ns: &str,
    owners: &[Value],
    finalizers: &[&str],
) {
    let object = json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "ownerReferences": owners, "finalizers": finalizers},
    });
    let run = kubectl.run_stdin(&["create", "-f", "-"], &object.to_string());
    assert_eq!(run.code, 0, "creating {kind} {name}: {}", run.stderr);
}

fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn background_deletion_removes_the_owner_at_once_and_the_chain_after() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    create(&k, "ConfigMap", "owner", "default", &[], &[]);
    let owner_uid = uid(&k, "configmap", "owner", "default");
    let by_owner = [owner("ConfigMap", "owner", &owner_uid, false)];
    create(&k, "ConfigMap", "child", "default", &by_owner, &[]);
    create(&k, "Secret", "child-secret", "default", &by_owner, &[]);
    let child_uid = uid(&k, "configmap", "child", "default");
    let by_child = [owner("ConfigMap", "child", &child_uid, false)];
    create(&k, "ConfigMap", "grandchild", "default", &by_child, &[]);

    k.ok(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=background",
        "--wait=false",
    ]);
    assert!(
        get(&k, "configmap", "owner", "default").is_none(),
        "background deletion removes the owner at once"
    );
    wait_for("the dependents and the grandchild to be collected", || {
        get(&k, "configmap", "child", "default").is_none()
            && get(&k, "secret", "child-secret", "default").is_none()
            && get(&k, "configmap", "grandchild", "default").is_none()
    });
}

#[test]
fn foreground_deletion_keeps_the_owner_until_its_blocking_dependents_are_gone() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    create(&k, "ConfigMap", "owner", "default", &[], &[]);
    let owner_uid = uid(&k, "configmap", "owner", "default");
    create(
        &k,
        "ConfigMap",
        "child",
        "default",
        &[owner("ConfigMap", "owner", &owner_uid, true)],
        &[],
    );
    let child_uid = uid(&k, "configmap", "child", "default");
    // The grandchild holds on with a finalizer of its own, so the test decides when it goes.
    create(
        &k,
        "Secret",
        "grandchild",
        "default",
        &[owner("ConfigMap", "child", &child_uid, true)],
        &["example.com/hold"],
    );

    k.ok(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=foreground",
        "--wait=false",
    ]);
    wait_for(
        "the grandchild to be deleted (held by its finalizer)",
        || {
            get(&k, "secret", "grandchild", "default")
                .is_some_and(|g| !g["metadata"]["deletionTimestamp"].is_null())
        },
    );
    for name in ["owner", "child"] {
        let object = get(&k, "configmap", name, "default")
            .unwrap_or_else(|| panic!("{name} waits for its dependents"));
        assert!(
            !object["metadata"]["deletionTimestamp"].is_null(),
            "{name} is being deleted"
        );
        assert!(
            finalizers(&object).contains(&"foregroundDeletion".to_string()),
            "{name} carries foregroundDeletion: {object}"
        );
    }
    // Still waiting a moment later: nothing lets the owner go while a blocking dependent is there.
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&k, "configmap", "owner", "default").is_some());

    k.ok(&[
        "patch",
        "secret",
        "grandchild",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    wait_for("the whole chain, owner last, to be gone", || {
        get(&k, "configmap", "owner", "default").is_none()
    });
    assert!(get(&k, "configmap", "child", "default").is_none());
    assert!(get(&k, "secret", "grandchild", "default").is_none());
}

#[test]
fn orphan_deletion_leaves_dependents_without_the_reference() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    create(&k, "ConfigMap", "owner", "default", &[], &[]);
    create(&k, "ConfigMap", "other-owner", "default", &[], &[]);
    let owner_uid = uid(&k, "configmap", "owner", "default");
    let other_uid = uid(&k, "configmap", "other-owner", "default");
    create(
        &k,
        "ConfigMap",
        "a",
        "default",
        &[owner("ConfigMap", "owner", &owner_uid, true)],
        &[],
    );
    create(
        &k,
        "Secret",
        "b",
        "default",
        &[
            owner("ConfigMap", "owner", &owner_uid, false),
            owner("ConfigMap", "other-owner", &other_uid, false),
        ],
        &[],
    );

    // kubectl waits for the owner to be gone, which needs the collector to orphan first.
    k.ok(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    assert!(get(&k, "configmap", "owner", "default").is_none());
    let a = get(&k, "configmap", "a", "default").expect("a is orphaned, not deleted");
    assert!(
        owner_uids(&a).is_empty(),
        "a no longer names its owner: {a}"
    );
    let b = get(&k, "secret", "b", "default").expect("b is orphaned, not deleted");
    assert_eq!(owner_uids(&b), [other_uid], "b keeps only its other owner");
    // And they stay: nothing collects an orphan.
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&k, "configmap", "a", "default").is_some());
    assert!(get(&k, "secret", "b", "default").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_delete_params_choose_the_policy() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    let make = |name: &str, owner: Option<&ConfigMap>, block: bool| -> ConfigMap {
        let refs: Vec<Value> = owner
            .map(|o| {
                vec![json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "blockOwnerDeletion": block,
                    "name": o.metadata.name, "uid": o.metadata.uid,
                })]
            })
            .unwrap_or_default();
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": refs}}))
            .expect("configmap")
    };
    let pp = PostParams::default();
    let gone = |api: &Api<ConfigMap>, name: &'static str| {
        let api = api.clone();
        async move { api.get_opt(name).await.expect("get").is_none() }
    };
    async fn wait_gone(api: &Api<ConfigMap>, names: &[&str]) {
        let start = Instant::now();
        loop {
            let mut all = true;
            for name in names {
                all &= api.get_opt(name).await.expect("get").is_none();
            }
            if all {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {names:?} to go"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Background.
    let owner = api
        .create(&pp, &make("bg", None, false))
        .await
        .expect("create");
    api.create(&pp, &make("bg-dep", Some(&owner), false))
        .await
        .expect("create");
    api.delete("bg", &DeleteParams::background())
        .await
        .expect("delete");
    assert!(gone(&api, "bg").await, "the owner goes at once");
    wait_gone(&api, &["bg-dep"]).await;

    // Foreground: the owner answers the delete still present, held by foregroundDeletion.
    let owner = api
        .create(&pp, &make("fg", None, false))
        .await
        .expect("create");
    api.create(&pp, &make("fg-dep", Some(&owner), true))
        .await
        .expect("create");
    let deleted = api
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete");
    let pending = deleted.left().expect("the owner is not gone yet");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        pending
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "foregroundDeletion"),
        "{:?}",
        pending.metadata.finalizers
    );
    wait_gone(&api, &["fg-dep", "fg"]).await;

    // Orphan.
    let owner = api
        .create(&pp, &make("or", None, false))
        .await
        .expect("create");
    api.create(&pp, &make("or-dep", Some(&owner), true))
        .await
        .expect("create");
    api.delete("or", &DeleteParams::orphan())
        .await
        .expect("delete");
    wait_gone(&api, &["or"]).await;
    let dep = api.get("or-dep").await.expect("the dependent stays");
    assert!(
        dep.metadata.owner_references.unwrap_or_default().is_empty(),
        "the dependent no longer names its owner"
    );
}

#[test]
fn a_dependent_whose_owner_uid_does_not_exist_is_collected() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    // An owner that never existed.
    create(
        &k,
        "ConfigMap",
        "dangling",
        "default",
        &[owner(
            "ConfigMap",
            "never",
            "9d2a8f0e-0000-4000-8000-000000000000",
            false,
        )],
        &[],
    );
    // An owner with the right name but another uid is not the owner.
    create(&k, "ConfigMap", "reborn", "default", &[], &[]);
    let old_uid = uid(&k, "configmap", "reborn", "default");
    k.ok(&["delete", "configmap", "reborn"]);
    create(&k, "ConfigMap", "reborn", "default", &[], &[]);
    create(
        &k,
        "Secret",
        "of-the-old-one",
        "default",
        &[owner("ConfigMap", "reborn", &old_uid, false)],
        &[],
    );
    // A control that must survive: its owner exists.
    let new_uid = uid(&k, "configmap", "reborn", "default");
    create(
        &k,
        "Secret",
        "of-the-new-one",
        "default",
        &[owner("ConfigMap", "reborn", &new_uid, false)],
        &[],
    );

    wait_for("dependents of absent owners to be collected", || {
        get(&k, "configmap", "dangling", "default").is_none()
            && get(&k, "secret", "of-the-old-one", "default").is_none()
    });
    assert!(get(&k, "secret", "of-the-new-one", "default").is_some());
    assert!(get(&k, "configmap", "reborn", "default").is_some());
}

#[test]
fn a_dependent_with_two_owners_survives_one_and_follows_the_last() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    create(&k, "ConfigMap", "first", "default", &[], &[]);
    create(&k, "Secret", "second", "default", &[], &[]);
    let first = uid(&k, "configmap", "first", "default");
    let second = uid(&k, "secret", "second", "default");
    create(
        &k,
        "ConfigMap",
        "shared",
        "default",
        &[
            owner("ConfigMap", "first", &first, false),
            owner("Secret", "second", &second, false),
        ],
        &[],
    );

    k.ok(&["delete", "configmap", "first"]);
    wait_for("the reference to the deleted owner to be removed", || {
        get(&k, "configmap", "shared", "default")
            .is_some_and(|s| owner_uids(&s) == [second.clone()])
    });
    k.ok(&["delete", "secret", "second"]);
    wait_for("the dependent to follow its last owner", || {
        get(&k, "configmap", "shared", "default").is_none()
    });
}

#[test]
fn an_owner_in_another_namespace_is_absent_and_reported() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    k.ok(&["create", "namespace", "elsewhere"]);
    create(&k, "ConfigMap", "owner", "elsewhere", &[], &[]);
    let owner_uid = uid(&k, "configmap", "owner", "elsewhere");
    create(
        &k,
        "ConfigMap",
        "stray",
        "default",
        &[owner("ConfigMap", "owner", &owner_uid, false)],
        &[],
    );

    wait_for(
        "the dependent of a cross-namespace owner to be collected",
        || get(&k, "configmap", "stray", "default").is_none(),
    );
    assert!(
        get(&k, "configmap", "owner", "elsewhere").is_some(),
        "the owner is untouched"
    );
    wait_for(
        "an OwnerRefInvalidNamespace warning about the dependent",
        || {
            let events = k.ok(&[
                "get",
                "events",
                "-n",
                "default",
                "--field-selector",
                "reason=OwnerRefInvalidNamespace",
                "-o",
                "json",
            ]);
            let events: Value = serde_json::from_str(&events).expect("JSON");
            events["items"].as_array().is_some_and(|items| {
                items.iter().any(|e| {
                    e["type"] == "Warning"
                        && e["involvedObject"]["name"] == "stray"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains(&owner_uid))
                })
            })
        },
    );
}

/// Needs the ReplicaSet and Deployment controllers as well as the collector.
#[test]
fn deployments_cascade_to_replicasets_and_pods_by_policy() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    let deployment = |name: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: main, image: berth.dev/host, command: [sleep, "3600"]}}]
"#
        )
    };
    let count = |kind: &str, app: &str| -> usize {
        let out = k.ok(&["get", kind, "-l", &format!("app={app}"), "-o", "name"]);
        out.lines().filter(|l| !l.trim().is_empty()).count()
    };
    for name in ["orphan", "foreground", "background"] {
        k.apply(&deployment(name));
    }
    for name in ["orphan", "foreground", "background"] {
        wait_for("each deployment's ReplicaSet and pods", || {
            count("replicasets", name) == 1 && count("pods", name) == 2
        });
    }

    k.ok(&[
        "delete",
        "deploy",
        "orphan",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    let rs = k.ok(&["get", "rs", "-l", "app=orphan", "-o", "json"]);
    let rs: Value = serde_json::from_str(&rs).expect("JSON");
    let items = rs["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "the ReplicaSet is orphaned, not deleted");
    assert!(
        owner_uids(&items[0]).is_empty(),
        "it no longer names the Deployment"
    );
    assert_eq!(count("pods", "orphan"), 2, "its pods stay");

    k.ok(&[
        "delete",
        "deploy",
        "foreground",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    // kubectl returned once the Deployment was gone, which foreground allows only after
    // its ReplicaSet (and that ReplicaSet's pods) are gone.
    assert_eq!(count("replicasets", "foreground"), 0);
    assert_eq!(count("pods", "foreground"), 0);

    k.ok(&["delete", "deploy", "background", "--cascade=background"]);
    wait_for(
        "the ReplicaSet and pods of a background-deleted Deployment to go",
        || count("replicasets", "background") == 0 && count("pods", "background") == 0,
    );
}

/// Reliability case F3: berth killed -9 in the middle of a cascade of a thousand dependents
/// finishes it after the restart, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_a_cascade_cut_by_kill_9_completes_after_the_restart() {
    let mut berth = Berth::start_with(&["--disable-agent"]);
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    let owner_cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "big-owner"}})).expect("configmap");
    let owner_uid = api
        .create(&PostParams::default(), &owner_cm)
        .await
        .expect("create the owner")
        .metadata
        .uid
        .expect("uid");
    let dependents = 1000;
    futures::stream::iter(0..dependents)
        .map(|i| {
            let api = api.clone();
            let object: ConfigMap = serde_json::from_value(json!({"metadata": {
                "name": format!("dep-{i:04}"),
                "labels": {"cascade": "f3"},
                "ownerReferences": [owner("ConfigMap", "big-owner", &owner_uid, false)],
            }}))
            .expect("configmap");
            async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("create the dependents");
    let labelled = kube::api::ListParams::default().labels("cascade=f3");
    api.delete("big-owner", &DeleteParams::background())
        .await
        .expect("delete the owner");
    // Kill berth once the collector has started but not finished.
    let started = Instant::now();
    loop {
        let left = api.list(&labelled).await.expect("list").items.len();
        if left < dependents {
            break;
        }
        assert!(started.elapsed() < WAIT, "the collector never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    berth.kill();
    berth.restart();
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    let started = Instant::now();
    loop {
        let left = api.list(&labelled).await.expect("list").items.len();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{left} dependents left after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        api.get_opt("big-owner").await.expect("get").is_none(),
        "the owner came back"
    );
}
