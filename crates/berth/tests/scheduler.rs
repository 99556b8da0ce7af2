//! The scheduler inside `berth up`, driven by the real kubectl: nodes and pods are created as a
//! user would, and the tests look only at what kubectl shows (spec.nodeName, conditions, events).

mod common;

use std::time::{Duration, Instant};

use common::{Berth, Kubectl};

/// Long enough for a loaded two-core machine; the scheduler normally answers in milliseconds.
const WAIT: Duration = Duration::from_secs(20);

fn node(name: &str, memory: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{kubernetes.io/hostname: {name}{labels}}}
status:
  capacity: {{cpu: "4", memory: {memory}, pods: "110"}}
  allocatable: {{cpu: "4", memory: {memory}, pods: "110"}}
"#
    )
}

fn create(kubectl: &Kubectl, manifest: &str) {
    let run = kubectl.run_stdin(&["create", "-f", "-"], manifest);
    assert_eq!(run.code, 0, "kubectl create failed: {}", run.stderr);
}

/// A pod with `extra` appended to its spec (YAML, indented two spaces).
fn pod(name: &str, memory: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: busybox:1.36
    resources:
      requests: {{cpu: 100m, memory: {memory}}}
{extra}"#
    )
}

fn node_name(kubectl: &Kubectl, pod: &str) -> String {
    kubectl.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

/// Polls until the pod is bound; returns its node, or panics after [`WAIT`].
#[track_caller]
fn wait_bound(kubectl: &Kubectl, pod: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let node = node_name(kubectl, pod);
        if !node.is_empty() {
            return node;
        }
        assert!(Instant::now() < deadline, "pod {pod} was not scheduled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `kubectl describe pod` until it contains every one of `needles`; returns it.
#[track_caller]
fn wait_described(kubectl: &Kubectl, pod: &str, needles: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = kubectl.ok(&["describe", "pod", pod]);
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "describe pod {pod} never showed {needles:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn two_nodes(kubectl: &Kubectl) {
    create(kubectl, &node("node-a", "8Gi", ", disk: hdd"));
    create(kubectl, &node("node-b", "8Gi", ", disk: ssd"));
}

#[test]
fn node_selector_and_required_affinity_choose_the_node() {
    // Only the test's own nodes: no node agent registering this machine.
    let berth = Berth::start_with(&["--disable-agent"]);
    let kubectl = berth.kubectl();
    two_nodes(&kubectl);

    create(
        &kubectl,
        &pod("wants-ssd", "64Mi", "  nodeSelector: {disk: ssd}\n"),
    );
    assert_eq!(wait_bound(&kubectl, "wants-ssd"), "node-b");

    let affinity = r#"  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: kubernetes.io/hostname, operator: In, values: [node-a]}
"#;
    create(&kubectl, &pod("wants-a", "64Mi", affinity));
    assert_eq!(wait_bound(&kubectl, "wants-a"), "node-a");

    let describe = wait_described(&kubectl, "wants-a", &["Scheduled"]);
    assert!(
        describe.contains("Successfully assigned default/wants-a to node-a"),
        "{describe}"
    );
}

#[test]
fn a_pod_that_fits_nowhere_waits_and_is_scheduled_when_a_node_fits() {
    // Only the test's own nodes: no node agent registering this machine.
    let berth = Berth::start_with(&["--disable-agent"]);
    let kubectl = berth.kubectl();
    two_nodes(&kubectl);

    create(&kubectl, &pod("big", "64Gi", ""));
    let describe = wait_described(
        &kubectl,
        "big",
        &[
            "FailedScheduling",
            "0/2 nodes are available",
            "2 Insufficient memory",
        ],
    );
    assert!(describe.contains("Pending"), "{describe}");
    assert_eq!(node_name(&kubectl, "big"), "");
    let condition = kubectl.ok(&[
        "get",
        "pod",
        "big",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    ]);
    assert_eq!(condition, "Unschedulable");

    // Level-triggered: a node that fits makes the waiting pod schedulable.
    create(&kubectl, &node("node-c", "128Gi", ""));
    assert_eq!(wait_bound(&kubectl, "big"), "node-c");
}

#[test]
fn taints_keep_untolerating_pods_off_and_cordoned_nodes_get_no_new_pods() {
    // Only the test's own nodes: no node agent registering this machine.
    let berth = Berth::start_with(&["--disable-agent"]);
    let kubectl = berth.kubectl();
    two_nodes(&kubectl);
    kubectl.ok(&["taint", "nodes", "node-a", "dedicated=db:NoSchedule"]);

    // Two untolerating pods: both go to node-b, however the scores fall.
    create(&kubectl, &pod("plain-1", "64Mi", ""));
    create(&kubectl, &pod("plain-2", "64Mi", ""));
    assert_eq!(wait_bound(&kubectl, "plain-1"), "node-b");
    assert_eq!(wait_bound(&kubectl, "plain-2"), "node-b");

    // A tolerating pod may land on the tainted node (it is the emptier one).
    let toleration = r#"  tolerations:
  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}
"#;
    create(&kubectl, &pod("tolerant", "64Mi", toleration));
    assert_eq!(wait_bound(&kubectl, "tolerant"), "node-a");

    // Cordoned node-b and tainted node-a: an untolerating pod has nowhere to go.
    kubectl.ok(&["cordon", "node-b"]);
    create(&kubectl, &pod("after-cordon", "64Mi", ""));
    wait_described(
        &kubectl,
        "after-cordon",
        &[
            "FailedScheduling",
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable.",
        ],
    );
    assert_eq!(node_name(&kubectl, "after-cordon"), "");

    // Uncordoning lets it through.
    kubectl.ok(&["uncordon", "node-b"]);
    assert_eq!(wait_bound(&kubectl, "after-cordon"), "node-b");
}
