//! The node lifecycle controller and taint-based eviction inside `berth up`, driven by the real
//! kubectl: beside this machine's node runs a Node "ghost" that no agent serves — the test
//! plays its kubelet, renewing its Lease and then going silent. With a grace period of 20 s
//! the test checks that ghost goes Ready=Unknown and gets the unreachable taints only after
//! the grace period while the real node stays Ready; that ghost's pods lose their readiness;
//! that a Deployment's pod tolerating unreachable for 3 s is marked for deletion after about
//! 3 s and replaced on the real node; that a pod with only the default tolerations (300 s)
//! stays; that a StatefulSet's evicted pod stays Terminating with no second pod of its
//! identity; and that a revived ghost loses the taints.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Berth, Kubectl, eventually};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// Generous: pods start and controllers react on a loaded machine.
const WAIT: Duration = Duration::from_secs(90);
/// The grace period `berth up` runs with here: short, but well above the 10 s at which this
/// machine's node agent renews its Lease (as upstream's 40 s default is above kubelet's 10 s),
/// or the real node would go Unknown between two renewals.
const GRACE_SECONDS: u64 = 20;
const POOL_LABEL: &str = "berth.test/pool";

/// Now, to the second, as an API Time.
fn now_time() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// Now, as an API MicroTime.
fn now_micro_time() -> String {
    now_time().replace('Z', ".000000Z")
}

fn ghost_node() -> String {
    let now = now_time();
    format!(
        r#"
apiVersion: v1
kind: Node
metadata:
  name: ghost
  labels: {{kubernetes.io/hostname: ghost, {POOL_LABEL}: lifecycle}}
status:
  capacity: {{cpu: "4", memory: 8Gi, pods: "110"}}
  allocatable: {{cpu: "4", memory: 8Gi, pods: "110"}}
  conditions:
  - {{type: Ready, status: "True", reason: KubeletReady, message: the test plays its kubelet,
     lastHeartbeatTime: "{now}", lastTransitionTime: "{now}"}}
"#
    )
}

fn ghost_lease() -> String {
    format!(
        r#"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: ghost, namespace: kube-node-lease}}
spec: {{holderIdentity: ghost, leaseDurationSeconds: 40, renewTime: "{}"}}
"#,
        now_micro_time()
    )
}

/// A Deployment whose pod goes where the pool label is (at first only ghost) and tolerates an
/// unreachable node for 3 s.
const ROAMER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: roamer}
spec:
  replicas: 1
  selector: {matchLabels: {app: roamer}}
  template:
    metadata: {labels: {app: roamer}}
    spec:
      nodeSelector: {berth.test/pool: lifecycle}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 3}
      terminationGracePeriodSeconds: 2
      containers:
      - {name: main, image: berth.dev/host, command: [sleep, "3600"]}
"#;

/// A pod on ghost with nothing but the tolerations every pod gets (300 s).
const STEADY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: steady, labels: {app: steady}}
spec:
  nodeName: ghost
  containers:
  - {name: main, image: berth.dev/host, command: [sleep, "3600"]}
"#;

/// A StatefulSet whose one pod is on ghost and tolerates an unreachable node for 1 s.
const KEEPER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: keeper}
spec:
  clusterIP: None
  selector: {app: keeper}
  ports: [{port: 80, name: web}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: keeper}
spec:
  serviceName: keeper
  replicas: 1
  selector: {matchLabels: {app: keeper}}
  template:
    metadata: {labels: {app: keeper}}
    spec:
      nodeName: ghost
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}
      containers:
      - {name: main, image: berth.dev/host, command: [sleep, "3600"]}
"#;

fn get_json(kubectl: &Kubectl, args: &[&str]) -> Result<Value, String> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let run = kubectl.run(&all);
    if run.code != 0 {
        return Err(format!("kubectl {args:?}: {}", run.stderr));
    }
    serde_json::from_str(&run.stdout).map_err(|e| format!("kubectl {args:?} output: {e}"))
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_status(object: &Value, type_: &str) -> String {
    condition(object, type_)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The node's taints as `key:effect`, sorted.
fn taints(node: &Value) -> Vec<String> {
    let mut taints: Vec<String> = node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    taints.sort();
    taints
}

fn pods_with(kubectl: &Kubectl, app: &str) -> Result<Vec<Value>, String> {
    let list = get_json(kubectl, &["get", "pods", "-l", &format!("app={app}")])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("").to_string()
}

/// Plays ghost's kubelet: renews its Lease every second until stopped; remembers when the
/// last renewal was stamped.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Instant>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(berth: &Berth) -> Heartbeat {
        let kubectl = berth.kubectl();
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(Instant::now()));
        let (stop_flag, stamped) = (stop.clone(), last.clone());
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                let patch = json!({"spec": {"renewTime": now_micro_time()}}).to_string();
                let run = kubectl.run(&[
                    "-n",
                    "kube-node-lease",
                    "patch",
                    "lease",
                    "ghost",
                    "--type=merge",
                    "-p",
                    &patch,
                ]);
                if run.code == 0 {
                    *stamped.lock().unwrap_or_else(|e| e.into_inner()) = at;
                }
                std::thread::sleep(Duration::from_millis(1000));
            }
        });
        Heartbeat {
            stop,
            last,
            thread: Some(thread),
        }
    }

    /// Stops renewing; returns when the last renewal was stamped.
    fn stop(mut self) -> Instant {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[test]
fn a_silent_node_is_tainted_and_its_pods_leave_by_their_tolerations_but_no_identity_twice() {
    let berth = Berth::start_with(&[
        "--node-monitor-grace-period-seconds",
        &GRACE_SECONDS.to_string(),
    ]);
    let kubectl = berth.kubectl();

    // This machine's node registers itself and is Ready.
    let real = eventually("this machine's node is Ready", WAIT, || {
        let nodes = get_json(&kubectl, &["get", "nodes"])?;
        nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| condition_status(n, "Ready") == "True")
            .map(|n| text(&n["metadata"]["name"]))
            .ok_or_else(|| format!("no Ready node: {nodes}"))
    });

    // ghost: a Node that says it is Ready and a Lease the test keeps renewing.
    let ghost_created = Instant::now();
    kubectl.apply(&ghost_node());
    kubectl.apply(&ghost_lease());
    let heartbeat = Heartbeat::start(&berth);

    kubectl.apply(ROAMER);
    kubectl.apply(STEADY);
    kubectl.apply(KEEPER);
    let roamer = eventually("the Deployment's pod is bound to ghost", WAIT, || {
        let pods = pods_with(&kubectl, "roamer")?;
        match pods.as_slice() {
            [pod] if pod["spec"]["nodeName"] == "ghost" => Ok(pod.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    let roamer_name = text(&roamer["metadata"]["name"]);
    let keeper = eventually("the StatefulSet's pod keeper-0 exists", WAIT, || {
        get_json(&kubectl, &["get", "pod", "keeper-0"])
    });
    let keeper_uid = text(&keeper["metadata"]["uid"]);
    // The tolerations every pod gets unless it says otherwise (DefaultTolerationSeconds).
    let steady = get_json(&kubectl, &["get", "pod", "steady"]).expect("steady");
    let defaults = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    ]);
    assert_eq!(steady["spec"]["tolerations"], defaults);
    // As ghost's kubelet would: steady runs and is Ready.
    let status = json!({"status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    kubectl.ok(&[
        "patch",
        "pod",
        "steady",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    // The replacement may go to the real node from now on.
    kubectl.ok(&["label", "node", &real, &format!("{POOL_LABEL}=lifecycle")]);

    // While ghost renews its Lease, nothing happens to it, well past one grace period after
    // its status was last posted (at its creation).
    let past_grace = ghost_created + Duration::from_secs(GRACE_SECONDS + 2);
    std::thread::sleep(past_grace.saturating_duration_since(Instant::now()));
    let alive = get_json(&kubectl, &["get", "node", "ghost"]).expect("ghost");
    assert_eq!(condition_status(&alive, "Ready"), "True", "{alive}");
    assert_eq!(taints(&alive), Vec::<String>::new(), "{alive}");
    let steady = get_json(&kubectl, &["get", "pod", "steady"]).expect("steady");
    assert_eq!(condition_status(&steady, "Ready"), "True", "{steady}");

    // ghost goes silent: Unknown and tainted once the grace period has passed, not before.
    let last_beat = heartbeat.stop();
    let ghost = eventually(
        "ghost goes Unknown with the unreachable taints",
        WAIT,
        || {
            let node = get_json(&kubectl, &["get", "node", "ghost"])?;
            let tainted = taints(&node)
                == [
                    "node.kubernetes.io/unreachable:NoExecute",
                    "node.kubernetes.io/unreachable:NoSchedule",
                ];
            if condition_status(&node, "Ready") == "Unknown" && tainted {
                Ok(node)
            } else {
                Err(node.to_string())
            }
        },
    );
    let silent_for = last_beat.elapsed();
    // The renewal's time is to the second, so the deadline may come up to 1 s early.
    assert!(
        silent_for >= Duration::from_secs(GRACE_SECONDS - 1),
        "tainted only {silent_for:?} after the last heartbeat"
    );
    let tainted_at = Instant::now();
    let ready = condition(&ghost, "Ready").expect("Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ghost}");
    assert_eq!(
        ready["message"], "Kubelet stopped posting node status.",
        "{ghost}"
    );
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition_status(&ghost, type_), "Unknown", "{ghost}");
    }
    let no_execute = ghost["spec"]["taints"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["effect"] == "NoExecute"))
        .expect("a NoExecute taint");
    assert!(no_execute["timeAdded"].is_string(), "{ghost}");

    // The real node is untouched.
    let node = get_json(&kubectl, &["get", "node", &real]).expect("real node");
    assert_eq!(condition_status(&node, "Ready"), "True", "{node}");
    assert_eq!(taints(&node), Vec::<String>::new(), "{node}");

    // ghost's pods lose their readiness.
    eventually("steady is marked not ready", WAIT, || {
        let pod = get_json(&kubectl, &["get", "pod", "steady"])?;
        (condition_status(&pod, "Ready") == "False")
            .then_some(())
            .ok_or_else(|| pod.to_string())
    });

    // The Deployment's pod: marked for deletion once its 3 s are up, and replaced on the
    // real node, where it runs.
    let evicted = eventually(
        "the Deployment's pod on ghost is marked for deletion",
        WAIT,
        || {
            let pod = get_json(&kubectl, &["get", "pod", &roamer_name])?;
            terminating(&pod)
                .then_some(pod.clone())
                .ok_or_else(|| pod.to_string())
        },
    );
    let after = tainted_at.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "evicted {after:?} after the taint, before its 3 s toleration ran out"
    );
    let disruption = condition(&evicted, "DisruptionTarget").expect("DisruptionTarget");
    assert_eq!(disruption["reason"], "DeletionByTaintManager", "{evicted}");
    eventually("a TaintManagerEviction event for the pod", WAIT, || {
        let events = get_json(&kubectl, &["get", "events"])?;
        let message = format!("Marking for deletion Pod default/{roamer_name}");
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "TaintManagerEviction" && e["message"] == message.as_str())
            .then_some(())
            .ok_or_else(|| "no such event".to_string())
    });
    eventually("the replacement runs on the real node", WAIT, || {
        let pods = pods_with(&kubectl, "roamer")?;
        pods.iter()
            .find(|p| {
                p["metadata"]["name"] != roamer_name.as_str()
                    && !terminating(p)
                    && p["spec"]["nodeName"] == real.as_str()
                    && p["status"]["phase"] == "Running"
            })
            .map(|_| ())
            .ok_or_else(|| format!("{pods:?}"))
    });

    // The StatefulSet's pod: marked for deletion, and then it stays Terminating — nothing
    // confirms its containers are gone — and no second pod of its identity appears.
    eventually("keeper-0 is marked for deletion", WAIT, || {
        let pod = get_json(&kubectl, &["get", "pod", "keeper-0"])?;
        terminating(&pod)
            .then_some(())
            .ok_or_else(|| pod.to_string())
    });
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(8) {
        let pods = pods_with(&kubectl, "keeper").expect("keeper pods");
        assert_eq!(
            pods.len(),
            1,
            "one pod of the StatefulSet at most: {pods:?}"
        );
        let pod = &pods[0];
        assert_eq!(pod["metadata"]["name"], "keeper-0", "{pod}");
        assert_eq!(
            text(&pod["metadata"]["uid"]),
            keeper_uid,
            "keeper-0 was replaced while it may still run: {pod}"
        );
        assert!(terminating(pod), "{pod}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // steady tolerates 300 s: well after the taint, it is still there.
    let steady = get_json(&kubectl, &["get", "pod", "steady"]).expect("steady");
    assert!(
        !terminating(&steady),
        "steady was evicted {:?} after the taint: {steady}",
        tainted_at.elapsed()
    );
    let node = get_json(&kubectl, &["get", "node", &real]).expect("real node");
    assert_eq!(condition_status(&node, "Ready"), "True", "{node}");

    // ghost comes back: it renews its Lease and posts Ready=True; the taints go.
    let now = now_time();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "message": "the test plays its kubelet",
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    kubectl.ok(&[
        "-n",
        "kube-node-lease",
        "patch",
        "lease",
        "ghost",
        "--type=merge",
        "-p",
        &json!({"spec": {"renewTime": now_micro_time()}}).to_string(),
    ]);
    kubectl.ok(&[
        "patch",
        "node",
        "ghost",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    let heartbeat = Heartbeat::start(&berth);
    eventually("a revived ghost loses the taints", WAIT, || {
        let node = get_json(&kubectl, &["get", "node", "ghost"])?;
        (condition_status(&node, "Ready") == "True" && taints(&node).is_empty())
            .then_some(())
            .ok_or_else(|| node.to_string())
    });
    heartbeat.stop();
}
