//! The ReplicaSet controller inside `berth up`, driven by the real kubectl: ReplicaSets are
//! created, scaled and disturbed as a user would, and the tests look only at what kubectl
//! shows (pods, their ownerReferences, the ReplicaSet's status and events). Pods run the
//! built-in `berth.dev/host` image, so no image import is needed.

mod common;

use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use serde_json::Value;

/// Long enough for a loaded two-core machine to start several containers.
const WAIT: Duration = Duration::from_secs(90);

/// A ReplicaSet `name` selecting app=`name`; `template_meta` is extra YAML under the
/// template's metadata (indented four spaces).
fn replica_set(name: &str, replicas: u32, template_meta: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
{template_meta}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: berth.dev/host
        command: ["sleep", "3600"]
"#
    )
}

fn json(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl.ok(&args)).expect("kubectl printed JSON")
}

fn all_pods(kubectl: &Kubectl) -> Vec<Value> {
    json(kubectl, &["get", "pods"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Pods not being deleted.
fn live_pods(kubectl: &Kubectl) -> Vec<Value> {
    all_pods(kubectl)
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn name(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The uid of the pod's controller, if it has one.
fn controller_uid(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
        .map(str::to_string)
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Polls `check` until it returns `Some`; panics with `what` and the last `describe` after
/// [`WAIT`].
#[track_caller]
fn wait_for<T>(what: &str, describe: impl Fn() -> String, check: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen:\n{}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until ReplicaSet `rs` has exactly `n` live pods it controls, all ready, and its
/// status says so; returns those pods.
#[track_caller]
fn wait_ready_replicas(kubectl: &Kubectl, rs: &str, n: i64) -> Vec<Value> {
    wait_for(
        &format!("{n} ready replicas of {rs}"),
        || kubectl.ok(&["get", "rs,pods", "-o", "wide"]),
        || {
            let set = json(kubectl, &["get", "rs", rs]);
            let uid = set["metadata"]["uid"].as_str()?.to_string();
            let status = &set["status"];
            let counts_ok = status["replicas"].as_i64().unwrap_or(0) == n
                && status["readyReplicas"].as_i64().unwrap_or(0) == n
                && status["availableReplicas"].as_i64().unwrap_or(0) == n
                && status["fullyLabeledReplicas"].as_i64().unwrap_or(0) == n
                && status["observedGeneration"] == set["metadata"]["generation"];
            let mine: Vec<Value> = live_pods(kubectl)
                .into_iter()
                .filter(|p| controller_uid(p).as_deref() == Some(uid.as_str()))
                .collect();
            (counts_ok && mine.len() == n as usize && mine.iter().all(is_ready)).then_some(mine)
        },
    )
}

fn start() -> (Berth, Kubectl) {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    (berth, kubectl)
}

#[test]
fn a_replica_set_keeps_its_count_replaces_deleted_pods_and_scales_down() {
    let (_berth, kubectl) = start();
    kubectl.apply(&replica_set("web", 3, ""));
    let pods = wait_ready_replicas(&kubectl, "web", 3);
    for pod in &pods {
        assert!(name(pod).starts_with("web-"), "{pod}");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        let reference = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(reference["kind"], "ReplicaSet");
        assert_eq!(reference["name"], "web");
        assert_eq!(reference["blockOwnerDeletion"], true);
    }
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(
        events.contains(&format!("Created pod: {}", name(&pods[0]))),
        "{events}"
    );

    // A deleted pod is replaced.
    let victim = name(&pods[0]);
    kubectl.ok(&["delete", "pod", &victim, "--wait=false"]);
    let after = wait_ready_replicas(&kubectl, "web", 3);
    assert!(after.iter().all(|p| name(p) != victim), "{after:?}");

    // Scaling down leaves one.
    kubectl.ok(&["scale", "rs/web", "--replicas=1"]);
    wait_ready_replicas(&kubectl, "web", 1);
    wait_for(
        "the extra pods to go",
        || kubectl.ok(&["get", "pods"]),
        || (all_pods(&kubectl).len() == 1).then_some(()),
    );
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("SuccessfulDelete"), "{events}");
}

#[test]
fn a_pod_relabelled_out_of_the_selector_is_released_and_replaced() {
    let (_berth, kubectl) = start();
    kubectl.apply(&replica_set("web", 3, ""));
    let pods = wait_ready_replicas(&kubectl, "web", 3);
    let relabelled = name(&pods[1]);
    kubectl.ok(&["label", "pod", &relabelled, "app=other", "--overwrite"]);

    wait_for(
        "the relabelled pod to lose its ownerReference",
        || kubectl.ok(&["get", "pod", &relabelled, "-o", "yaml"]),
        || {
            let pod = json(&kubectl, &["get", "pod", &relabelled]);
            pod["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty)
                .then_some(())
        },
    );
    let replicas = wait_ready_replicas(&kubectl, "web", 3);
    assert!(replicas.iter().all(|p| name(p) != relabelled));
    let matching = json(&kubectl, &["get", "pods", "-l", "app=web"]);
    assert_eq!(matching["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        live_pods(&kubectl).len(),
        4,
        "the released pod keeps running"
    );
}

#[test]
fn an_orphan_pod_that_matches_is_adopted_instead_of_creating_a_third() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: early
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: berth.dev/host
    command: ["sleep", "3600"]
"#,
    );
    kubectl.ok(&["get", "pod", "early"]);
    kubectl.apply(&replica_set("web", 3, ""));
    let replicas = wait_ready_replicas(&kubectl, "web", 3);
    let uid = kubectl.ok(&["get", "rs", "web", "-o", "jsonpath={.metadata.uid}"]);
    let early = replicas
        .iter()
        .find(|p| name(p) == "early")
        .unwrap_or_else(|| panic!("the orphan was not adopted: {replicas:?}"));
    assert_eq!(controller_uid(early).as_deref(), Some(uid.as_str()));
    assert_eq!(all_pods(&kubectl).len(), 3, "only two pods were created");
    let events = json(
        &kubectl,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ],
    );
    let created: Vec<&Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "SuccessfulCreate")
        .collect();
    assert_eq!(created.len(), 2, "{created:?}");
}

#[test]
fn a_template_the_api_server_rejects_for_pods_sets_replica_failure_until_fixed() {
    let (_berth, kubectl) = start();
    // Template finalizers are not validated in a ReplicaSet (as upstream), but a pod's are:
    // a finalizer without a domain must be a standard one.
    kubectl.apply(&replica_set("web", 1, "      finalizers: [not-qualified]"));
    let condition = wait_for(
        "a ReplicaFailure condition",
        || kubectl.ok(&["get", "rs", "web", "-o", "yaml"]),
        || {
            let set = json(&kubectl, &["get", "rs", "web"]);
            set["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "ReplicaFailure")
                .cloned()
        },
    );
    assert_eq!(condition["status"], "True", "{condition}");
    assert_eq!(condition["reason"], "FailedCreate", "{condition}");
    let message = condition["message"].as_str().unwrap_or("");
    assert!(message.contains("not-qualified"), "{condition}");
    assert!(all_pods(&kubectl).is_empty());
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("FailedCreate"), "{events}");
    assert!(events.contains("Error creating:"), "{events}");

    kubectl.ok(&[
        "patch",
        "rs",
        "web",
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/template/metadata/finalizers"}]"#,
    ]);
    wait_ready_replicas(&kubectl, "web", 1);
    wait_for(
        "the ReplicaFailure condition to go",
        || kubectl.ok(&["get", "rs", "web", "-o", "yaml"]),
        || {
            let set = json(&kubectl, &["get", "rs", "web"]);
            let conditions = set["status"]["conditions"].as_array().cloned();
            conditions
                .is_none_or(|cs| cs.iter().all(|c| c["type"] != "ReplicaFailure"))
                .then_some(())
        },
    );
}
