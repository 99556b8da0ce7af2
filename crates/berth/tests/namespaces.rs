//! Namespace deletion inside `berth up`, driven by the real kubectl: a deleted namespace is
//! Terminating, takes no new objects, is emptied (a running pod ends gracefully) and then
//! goes; the namespaces the system needs cannot be deleted.

mod common;

use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::Value;

/// Generous for a loaded two-core machine that also has to start and stop a container.
const WAIT: Duration = Duration::from_secs(120);

#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn namespace(k: &Kubectl, name: &str) -> Option<Value> {
    let run = k.run(&["get", "namespace", name, "-o", "json"]);
    if run.code != 0 {
        assert!(
            run.stderr.contains("NotFound"),
            "kubectl get namespace: {}",
            run.stderr
        );
        return None;
    }
    Some(serde_json::from_str(&run.stdout).expect("JSON"))
}

fn condition<'a>(ns: &'a Value, type_: &str) -> Option<&'a Value> {
    ns["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn names(k: &Kubectl, kind: &str, ns: &str) -> Vec<String> {
    k.ok(&["get", kind, "-n", ns, "-o", "name"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_is_emptied_then_removed() {
    let berth = Berth::start();
    let k = berth.kubectl();
    k.ok(&["create", "namespace", "doomed"]);
    k.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: doomed}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: held, namespace: doomed, finalizers: [example.com/hold]}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: doomed}
stringData: {t: x}
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper, namespace: doomed}
spec:
  terminationGracePeriodSeconds: 5
  containers: [{name: main, image: berth.dev/host, command: [sleep, "3600"]}]
"#,
    );
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/sleeper",
        "-n",
        "doomed",
        "--timeout=120s",
    ]);

    k.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    let ns = namespace(&k, "doomed").expect("a ConfigMap with a finalizer holds the namespace");
    assert_eq!(ns["status"]["phase"], "Terminating");

    // Nothing new may be created in it, as Kubernetes refuses it.
    let refused = k.run(&["create", "configmap", "late", "-n", "doomed"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(
            "unable to create new content in namespace doomed because it is being terminated"
        ),
        "{}",
        refused.stderr
    );
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "doomed");
    let late: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "late"}})).expect("cm");
    match api.create(&PostParams::default(), &late).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert_eq!(status.reason, "Forbidden");
        }
        other => panic!("creating in a Terminating namespace: {other:?}"),
    }

    // Everything without a finalizer goes; the pod ends gracefully through the node agent.
    wait_for("the pod, the secret and the plain configmap to go", || {
        names(&k, "pods", "doomed").is_empty()
            && names(&k, "secrets", "doomed").is_empty()
            && names(&k, "configmaps", "doomed") == ["configmap/held"]
    });
    wait_for("the namespace's conditions to name what is left", || {
        let Some(ns) = namespace(&k, "doomed") else {
            return false;
        };
        let remaining = condition(&ns, "NamespaceContentRemaining");
        let finalizers = condition(&ns, "NamespaceFinalizersRemaining");
        remaining.is_some_and(|c| {
            c["status"] == "True"
                && c["reason"] == "SomeResourcesRemain"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("configmaps. has 1 resource instances"))
        }) && finalizers.is_some_and(|c| {
            c["status"] == "True"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("example.com/hold in 1 resource instances"))
        })
    });
    assert!(
        namespace(&k, "doomed").is_some(),
        "still held by the finalizer"
    );

    k.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "doomed",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    wait_for("the namespace to go", || namespace(&k, "doomed").is_none());
    assert!(names(&k, "configmaps", "doomed").is_empty());
}

#[test]
fn system_namespaces_cannot_be_deleted() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let k = berth.kubectl();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let run = k.run(&["delete", "namespace", name, "--wait=false"]);
        assert_ne!(run.code, 0, "deleting {name} must be refused");
        assert!(
            run.stderr.contains("Forbidden") || run.stderr.contains("forbidden"),
            "{}",
            run.stderr
        );
        let ns = namespace(&k, name).unwrap_or_else(|| panic!("{name} still exists"));
        assert_eq!(ns["status"]["phase"], "Active", "{name}");
        assert!(ns["metadata"]["deletionTimestamp"].is_null(), "{name}");
    }
}
