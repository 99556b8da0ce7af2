//! The node agent keeps the API's view of its pods and of its Node true, as kubelet does: what
//! someone else writes over the status it owns (the node lifecycle controller marking a pod
//! NotReady or the Node Ready=Unknown while the node was unreachable; here, kubectl) is put
//! back once the agent sees it, not only when the agent's own view changes. `berth up` runs
//! with a grace period of an hour so the node lifecycle controller does not interfere.

mod common;
mod podkit;

use std::time::{Duration, Instant};

use common::{Berth, Kubectl, eventually};
use podkit::*;
use serde_json::{Value, json};

/// Upstream kubelet computes the node status every 10 s and posts it when it differs from the
/// server's; pods are re-posted as soon as the agent sees the change. Slack for a loaded machine.
const RESTORE: Duration = Duration::from_secs(15);

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sleep", "3600"]
"#;

fn get_json(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl.ok(&args)).expect("kubectl prints JSON")
}

/// Merge-patches the status subresource of `object` (`pod/x`, `node/y`) and returns the result.
fn patch_status(kubectl: &Kubectl, object: &str, status: Value) -> Value {
    let patch = json!({ "status": status }).to_string();
    let out = kubectl.ok(&[
        "patch",
        object,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
        "-o",
        "json",
    ]);
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

/// `object`'s conditions with `type_`'s status, reason and message replaced.
fn with_condition(object: &Value, type_: &str, status: &str, reason: &str) -> Value {
    let mut conditions = object["status"]["conditions"].clone();
    for c in conditions.as_array_mut().expect("conditions") {
        if c["type"] == type_ {
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!("set by the test");
        }
    }
    conditions
}

#[test]
fn the_agent_restores_pod_and_node_status_others_overwrote() {
    let berth = Berth::start_with(&["--node-monitor-grace-period-seconds", "3600"]);
    import_busybox(&berth);
    let kubectl = berth.kubectl();
    kubectl.apply(POD);
    let pod = wait_pod(&kubectl, "steady", T, |p| condition(p, "Ready") == "True");
    let started = container_status(&pod, "main")["state"]["running"]["startedAt"].clone();

    // The pod's Ready condition goes False behind the agent's back, as the node lifecycle
    // controller does to the pods of an unreachable node.
    let patched = patch_status(
        &kubectl,
        "pod/steady",
        json!({"conditions": with_condition(&pod, "Ready", "False", "NodeNotReady")}),
    );
    assert_eq!(condition(&patched, "Ready"), "False", "{patched}");
    let since = Instant::now();
    eventually("the agent posts Ready=True again", RESTORE, || {
        let pod = pod_json(&kubectl, "steady");
        (condition(&pod, "Ready") == "True")
            .then_some(())
            .ok_or_else(|| pod["status"].to_string())
    });
    eprintln!("pod Ready restored after {:?}", since.elapsed());

    // A field whose value the agent decides alone: the container's readiness. An agent that
    // compared only with what it posted itself would never write it again.
    let pod = pod_json(&kubectl, "steady");
    let mut statuses = pod["status"]["containerStatuses"].clone();
    statuses[0]["ready"] = json!(false);
    let patched = patch_status(
        &kubectl,
        "pod/steady",
        json!({"containerStatuses": statuses}),
    );
    assert_eq!(container_status(&patched, "main")["ready"], false);
    eventually("the agent posts the container ready again", RESTORE, || {
        let pod = pod_json(&kubectl, "steady");
        (container_status(&pod, "main")["ready"] == true)
            .then_some(())
            .ok_or_else(|| pod["status"].to_string())
    });
    let pod = pod_json(&kubectl, "steady");
    assert_eq!(
        container_status(&pod, "main")["state"]["running"]["startedAt"],
        started,
        "the container was not restarted: {pod}"
    );

    // The Node's Ready condition goes Unknown, as the controller sets it for a silent node.
    let nodes = get_json(&kubectl, &["get", "nodes"]);
    let node = &nodes["items"][0];
    let name = node["metadata"]["name"].as_str().expect("node name");
    let object = format!("node/{name}");
    let patched = patch_status(
        &kubectl,
        &object,
        json!({"conditions": with_condition(node, "Ready", "Unknown", "NodeStatusUnknown")}),
    );
    assert_eq!(condition(&patched, "Ready"), "Unknown", "{patched}");
    let since = Instant::now();
    let node = eventually("the agent posts the Node Ready=True again", RESTORE, || {
        let node = get_json(&kubectl, &["get", &object]);
        (condition(&node, "Ready") == "True")
            .then_some(node.clone())
            .ok_or_else(|| node["status"]["conditions"].to_string())
    });
    eprintln!("node Ready restored after {:?}", since.elapsed());
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .expect("Ready condition");
    assert_eq!(ready["reason"], "KubeletReady", "{ready}");

    // Once the server agrees, the agent stops writing: neither object changes over more than
    // one node status update (the controller may first lift a taint it set meanwhile).
    let versions = || {
        let node = get_json(&kubectl, &["get", &object]);
        let pod = pod_json(&kubectl, "steady");
        (
            node["spec"]["taints"].as_array().map_or(0, Vec::len),
            node["metadata"]["resourceVersion"].clone(),
            pod["metadata"]["resourceVersion"].clone(),
        )
    };
    eventually("the node has no taints", RESTORE, || {
        let (taints, ..) = versions();
        (taints == 0)
            .then_some(())
            .ok_or(format!("{taints} taints"))
    });
    let before = versions();
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(versions(), before, "(taints, node version, pod version)");
}
