//! The EndpointSlice and Endpoints controllers inside `berth up`, driven by the real kubectl:
//! Services and pods are created as a user would, and the tests read only what kubectl shows
//! (`get endpointslices -l kubernetes.io/service-name=x`, `get endpoints x`).
//!
//! Most tests use pods bound to a Node no agent runs ("ghost", with a zone label) and write
//! the pods' status themselves (IP, phase, Ready), as upstream's integration tests of these
//! controllers do: that pins addresses and readiness exactly and flips them at will. The
//! tests at the end run real pods (`berth.dev/host`, a readiness probe that `kubectl exec`
//! flips); they wait for pod networking, because pods now share the node's IP, 127.0.0.1,
//! and the API server refuses loopback addresses in Endpoints and EndpointSlices (as
//! Kubernetes does).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use serde_json::{Value, json};

/// Long enough for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

fn start() -> (Berth, Kubectl) {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    (berth, kubectl)
}

fn json_of(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl.ok(&args)).expect("kubectl printed JSON")
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Service's EndpointSlices, as `kubectl get endpointslices -l
/// kubernetes.io/service-name=<service>` lists them.
fn slices(kubectl: &Kubectl, service: &str) -> Vec<Value> {
    let selector = format!("kubernetes.io/service-name={service}");
    json_of(kubectl, &["get", "endpointslices", "-l", &selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn show(kubectl: &Kubectl, service: &str) -> String {
    let selector = format!("kubernetes.io/service-name={service}");
    let slices = kubectl.run(&["get", "endpointslices", "-l", &selector, "-o", "yaml"]);
    let endpoints = kubectl.run(&["get", "endpoints", service, "-o", "yaml"]);
    let events = kubectl.run(&["get", "events"]);
    format!(
        "slices:\n{}\nendpoints:\n{}{}\nevents:\n{}",
        slices.stdout, endpoints.stdout, endpoints.stderr, events.stdout
    )
}

/// Each endpoint of the slices: pod name → (ready, serving, terminating).
fn endpoint_states(slices: &[Value]) -> BTreeMap<String, (bool, bool, bool)> {
    let mut states = BTreeMap::new();
    for slice in slices {
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            let name = endpoint["targetRef"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let c = &endpoint["conditions"];
            let flag = |k: &str| c[k].as_bool().unwrap_or(false);
            let previous = states.insert(
                name.clone(),
                (flag("ready"), flag("serving"), flag("terminating")),
            );
            assert!(previous.is_none(), "{name} is listed twice: {slices:?}");
        }
    }
    states
}

/// Pod names and whether each is ready, from the slices.
fn readiness(slices: &[Value]) -> BTreeMap<String, bool> {
    endpoint_states(slices)
        .into_iter()
        .map(|(name, (ready, _, _))| (name, ready))
        .collect()
}

fn expect(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
    pairs.iter().map(|(n, r)| (n.to_string(), *r)).collect()
}

/// The Endpoints object `name`, if there is one.
fn endpoints(kubectl: &Kubectl, name: &str) -> Option<Value> {
    let run = kubectl.run(&["get", "endpoints", name, "-o", "json"]);
    (run.code == 0).then(|| serde_json::from_str(&run.stdout).expect("JSON"))
}

/// The Endpoints' ready and not-ready `ip:port`s, sorted.
fn addresses(endpoints: &Value) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        for (field, out) in [
            ("addresses", &mut ready),
            ("notReadyAddresses", &mut not_ready),
        ] {
            for address in subset[field].as_array().into_iter().flatten() {
                for port in &ports {
                    out.push(format!("{}:{port}", address["ip"].as_str().unwrap_or("")));
                }
            }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The Node the fake pods are bound to: no agent runs it, so their status is the test's.
const GHOST_NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: ghost
  labels: {topology.kubernetes.io/zone: zone-a}
"#;

/// A pod bound to the ghost node, labelled app=`app`; `ports` is YAML for the container's
/// `ports` field (or empty).
fn ghost_pod(name: &str, app: &str, ports: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  nodeName: ghost
  containers:
  - name: main
    image: berth.dev/host
    command: ["sleep", "3600"]
    {ports}
"#
    )
}

/// Writes the pod's status as a node agent would: Running with `ip`, Ready or not.
fn set_status(kubectl: &Kubectl, pod: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    kubectl.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn service(name: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels: {{team: blue}}
spec:
  selector: {{app: {name}}}
  ports:
  - name: http
    port: 80
    targetPort: 8080
{extra_spec}
"#
    )
}

#[test]
fn slices_and_endpoints_list_the_selected_pods_and_follow_their_readiness() {
    let (_berth, kubectl) = start();
    kubectl.apply(GHOST_NODE);
    kubectl.apply(&service("web", ""));
    for (pod, app) in [("a", "web"), ("b", "web"), ("c", "other")] {
        kubectl.apply(&ghost_pod(pod, app, ""));
    }
    set_status(&kubectl, "a", "10.244.0.1", true);
    set_status(&kubectl, "b", "10.244.0.2", false);
    set_status(&kubectl, "c", "10.244.0.3", true);

    let slice = wait_for(
        "one slice listing a (ready) and b (not ready)",
        || show(&kubectl, "web"),
        || {
            let slices = slices(&kubectl, "web");
            (slices.len() == 1 && readiness(&slices) == expect(&[("a", true), ("b", false)]))
                .then(|| slices[0].clone())
        },
    );
    let svc = json_of(&kubectl, &["get", "svc", "web"]);
    let labels = &slice["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/service-name"], "web");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(labels["team"], "blue", "the Service's labels are copied");
    assert_eq!(slice["metadata"]["generateName"], "web-");
    assert!(
        slice["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("web-")
    );
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Service");
    assert_eq!(owner["apiVersion"], "v1");
    assert_eq!(owner["uid"], svc["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    let a = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["targetRef"]["name"] == "a")
        .unwrap();
    assert_eq!(a["addresses"], json!(["10.244.0.1"]));
    assert_eq!(a["nodeName"], "ghost");
    assert_eq!(a["zone"], "zone-a");
    assert_eq!(a["targetRef"]["kind"], "Pod");
    assert_eq!(a["targetRef"]["namespace"], "default");
    assert_eq!(
        a["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );

    // The legacy Endpoints object says the same.
    let ep = wait_for(
        "Endpoints web",
        || show(&kubectl, "web"),
        || endpoints(&kubectl, "web").filter(|e| !e["subsets"].is_null()),
    );
    assert_eq!(
        addresses(&ep),
        (strings(&["10.244.0.1:8080"]), strings(&["10.244.0.2:8080"]))
    );
    assert_eq!(
        ep["subsets"][0]["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(ep["metadata"]["labels"]["team"], "blue");
    let table = kubectl.ok(&["get", "endpoints", "web"]);
    assert!(table.contains("10.244.0.1:8080"), "{table}");
    assert!(
        !table.contains("10.244.0.2"),
        "not-ready addresses are not listed:\n{table}"
    );

    // Readiness flips both ways; the slice is updated in place, and quickly.
    let uid = slice["metadata"]["uid"].clone();
    set_status(&kubectl, "a", "10.244.0.1", false);
    set_status(&kubectl, "b", "10.244.0.2", true);
    let flipped = Instant::now();
    let slices_now = wait_for(
        "a not ready and b ready",
        || show(&kubectl, "web"),
        || {
            let slices = slices(&kubectl, "web");
            (readiness(&slices) == expect(&[("a", false), ("b", true)])).then_some(slices)
        },
    );
    let took = flipped.elapsed();
    eprintln!("the readiness flip showed in the slice after {took:?}");
    assert!(took < Duration::from_secs(5), "the flip took {took:?}");
    assert_eq!(slices_now.len(), 1);
    assert_eq!(
        slices_now[0]["metadata"]["uid"], uid,
        "updated, not recreated"
    );
    wait_for(
        "Endpoints to follow",
        || show(&kubectl, "web"),
        || {
            let ep = endpoints(&kubectl, "web")?;
            (addresses(&ep) == (strings(&["10.244.0.2:8080"]), strings(&["10.244.0.1:8080"])))
                .then_some(())
        },
    );

    // A pod relabelled out of the selector leaves.
    kubectl.ok(&["label", "pod", "a", "app=other", "--overwrite"]);
    wait_for(
        "a to leave",
        || show(&kubectl, "web"),
        || (readiness(&slices(&kubectl, "web")) == expect(&[("b", true)])).then_some(()),
    );
    // A pod being deleted stays in the slice as terminating (no agent confirms the deletion
    // of a ghost pod), and leaves the Endpoints.
    kubectl.ok(&["delete", "pod", "b", "--wait=false"]);
    let states = wait_for(
        "b to be terminating",
        || show(&kubectl, "web"),
        || {
            let states = endpoint_states(&slices(&kubectl, "web"));
            (states.get("b") == Some(&(false, true, true))).then_some(states)
        },
    );
    assert_eq!(states.len(), 1);
    wait_for(
        "Endpoints without subsets",
        || show(&kubectl, "web"),
        || endpoints(&kubectl, "web").filter(|e| e["subsets"].is_null()),
    );
    kubectl.ok(&["delete", "pod", "b", "--grace-period=0", "--force"]);
    let slices_now = wait_for(
        "no endpoints left",
        || show(&kubectl, "web"),
        || {
            let slices = slices(&kubectl, "web");
            readiness(&slices).is_empty().then_some(slices)
        },
    );
    assert_eq!(
        slices_now.len(),
        1,
        "an empty slice stays as the placeholder"
    );
    assert_eq!(slices_now[0]["metadata"]["uid"], uid);
}

#[test]
fn a_named_target_port_resolves_per_pod() {
    let (_berth, kubectl) = start();
    kubectl.apply(GHOST_NODE);
    kubectl.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: named}
spec:
  selector: {app: named}
  ports:
  - name: http
    port: 80
    targetPort: web
"#,
    );
    let web_port = |n: u16| format!("ports: [{{name: web, containerPort: {n}}}]");
    kubectl.apply(&ghost_pod("d", "named", &web_port(8080)));
    kubectl.apply(&ghost_pod("e", "named", &web_port(9090)));
    kubectl.apply(&ghost_pod(
        "f",
        "named",
        "ports: [{name: other, containerPort: 7070}]",
    ));
    set_status(&kubectl, "d", "10.244.1.1", true);
    set_status(&kubectl, "e", "10.244.1.2", true);
    set_status(&kubectl, "f", "10.244.1.3", true);

    let by_port = wait_for(
        "a slice per resolved port",
        || show(&kubectl, "named"),
        || {
            let slices = slices(&kubectl, "named");
            let by_port: BTreeMap<String, Vec<String>> = slices
                .iter()
                .map(|s| {
                    let port = s["ports"][0]["port"].to_string();
                    let mut pods: Vec<String> = s["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| e["targetRef"]["name"].as_str().unwrap_or("").to_string())
                        .collect();
                    pods.sort();
                    (port, pods)
                })
                .collect();
            (by_port.values().flatten().count() == 3).then_some(by_port)
        },
    );
    assert_eq!(by_port["8080"], ["d"]);
    assert_eq!(by_port["9090"], ["e"]);
    assert_eq!(
        by_port["null"],
        ["f"],
        "a pod without the port has a slice without ports"
    );

    let ep = wait_for(
        "Endpoints with both ports",
        || show(&kubectl, "named"),
        || {
            let ep = endpoints(&kubectl, "named")?;
            (addresses(&ep).0.len() == 2).then_some(ep)
        },
    );
    assert_eq!(
        addresses(&ep),
        (strings(&["10.244.1.1:8080", "10.244.1.2:9090"]), Vec::new()),
        "the pod without the port is not in the Endpoints"
    );
}

#[test]
fn publish_not_ready_addresses_makes_every_pod_ready() {
    let (_berth, kubectl) = start();
    kubectl.apply(GHOST_NODE);
    kubectl.apply(&service("eager", "  publishNotReadyAddresses: true"));
    kubectl.apply(&ghost_pod("g", "eager", ""));
    set_status(&kubectl, "g", "10.244.2.1", false);
    let states = wait_for(
        "g in the slice",
        || show(&kubectl, "eager"),
        || {
            let states = endpoint_states(&slices(&kubectl, "eager"));
            (!states.is_empty()).then_some(states)
        },
    );
    assert_eq!(
        states["g"],
        (true, false, false),
        "ready, though not serving"
    );
    let ep = wait_for(
        "Endpoints eager",
        || show(&kubectl, "eager"),
        || endpoints(&kubectl, "eager").filter(|e| !e["subsets"].is_null()),
    );
    assert_eq!(addresses(&ep), (strings(&["10.244.2.1:8080"]), Vec::new()));
}

#[test]
fn a_selectorless_service_keeps_what_its_user_wrote() {
    let (_berth, kubectl) = start();
    kubectl.apply(GHOST_NODE);
    kubectl.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: outside}
subsets:
- addresses: [{ip: 10.9.9.9}]
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: outside-1
  labels:
    kubernetes.io/service-name: outside
    endpointslice.kubernetes.io/managed-by: someone.example.com
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
- addresses: [10.9.9.9]
"#,
    );
    // A selected Service beside it, so the controllers are seen to be working meanwhile.
    kubectl.apply(&service("inside", ""));
    kubectl.apply(&ghost_pod("h", "inside", ""));
    set_status(&kubectl, "h", "10.244.3.1", true);
    let before = endpoints(&kubectl, "outside").expect("the user's Endpoints");
    let slice_before = json_of(&kubectl, &["get", "endpointslice", "outside-1"]);
    wait_for(
        "the other Service's endpoints",
        || show(&kubectl, "inside"),
        || (readiness(&slices(&kubectl, "inside")) == expect(&[("h", true)])).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));

    let after = endpoints(&kubectl, "outside").expect("the user's Endpoints are kept");
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(addresses(&after), (strings(&["10.9.9.9:80"]), Vec::new()));
    let slices = slices(&kubectl, "outside");
    assert_eq!(slices.len(), 1, "no slice of the controller's: {slices:?}");
    assert_eq!(
        slices[0]["metadata"]["resourceVersion"],
        slice_before["metadata"]["resourceVersion"]
    );
}

#[test]
fn deleting_a_service_removes_its_slices_and_endpoints() {
    let (_berth, kubectl) = start();
    kubectl.apply(GHOST_NODE);
    kubectl.apply(&service("gone", ""));
    kubectl.apply(&ghost_pod("i", "gone", ""));
    set_status(&kubectl, "i", "10.244.4.1", true);
    wait_for(
        "slices and Endpoints",
        || show(&kubectl, "gone"),
        || {
            let listed = readiness(&slices(&kubectl, "gone")) == expect(&[("i", true)]);
            let ep = endpoints(&kubectl, "gone").is_some_and(|e| !e["subsets"].is_null());
            (listed && ep).then_some(())
        },
    );
    kubectl.ok(&["delete", "service", "gone"]);
    wait_for(
        "the slices and the Endpoints to go",
        || show(&kubectl, "gone"),
        || {
            (slices(&kubectl, "gone").is_empty() && endpoints(&kubectl, "gone").is_none())
                .then_some(())
        },
    );
    let missing = kubectl.run(&["get", "endpoints", "gone"]);
    assert!(missing.stderr.contains("NotFound"), "{}", missing.stderr);
}

#[test]
fn a_restart_keeps_the_slices_and_endpoints_it_finds() {
    let (mut berth, kubectl) = start();
    kubectl.apply(GHOST_NODE);
    kubectl.apply(&service("kept", ""));
    kubectl.apply(&ghost_pod("j", "kept", ""));
    set_status(&kubectl, "j", "10.244.5.1", true);
    let before = wait_for(
        "slices and Endpoints",
        || show(&kubectl, "kept"),
        || {
            let slices = slices(&kubectl, "kept");
            let ep = endpoints(&kubectl, "kept").filter(|e| !e["subsets"].is_null())?;
            (readiness(&slices) == expect(&[("j", true)])).then_some((slices, ep))
        },
    );
    berth.restart();
    // The controllers have started again once a change is followed.
    kubectl.apply(&ghost_pod("k", "kept", ""));
    set_status(&kubectl, "k", "10.244.5.2", false);
    let after = wait_for(
        "k to be listed",
        || show(&kubectl, "kept"),
        || {
            let slices = slices(&kubectl, "kept");
            (readiness(&slices) == expect(&[("j", true), ("k", false)])).then_some(slices)
        },
    );
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["metadata"]["uid"], before.0[0]["metadata"]["uid"]);
    let ep = wait_for(
        "Endpoints to list k",
        || show(&kubectl, "kept"),
        || endpoints(&kubectl, "kept").filter(|e| addresses(e).1.len() == 1),
    );
    assert_eq!(
        ep["metadata"]["uid"], before.1["metadata"]["uid"],
        "kept, not recreated"
    );
}

// Real pods: these wait for pod networking (see the module docs).

/// A Deployment of `replicas` pods whose readiness `kubectl exec <pod> -- touch /tmp/ready`
/// turns on and `rm` off, with a container port named `web`, and a Service `name` on it.
fn probed_deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: berth.dev/host
        command: ["sleep", "3600"]
        ports: [{{name: web, containerPort: 8080}}]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: web}}]
"#
    )
}

#[test]
fn real_pods_move_between_ready_and_not_ready_with_their_probe() {
    let (_berth, kubectl) = start();
    kubectl.apply(&probed_deployment("probed", 2));
    let pods = wait_for(
        "two running pods, listed not ready",
        || show(&kubectl, "probed"),
        || {
            let states = readiness(&slices(&kubectl, "probed"));
            (states.len() == 2 && states.values().all(|r| !r)).then_some(states)
        },
    );
    let first = pods.keys().next().unwrap().clone();
    kubectl.ok(&["exec", &first, "--", "touch", "/tmp/ready"]);
    let touched = Instant::now();
    wait_for(
        "the touched pod to be ready",
        || show(&kubectl, "probed"),
        || {
            readiness(&slices(&kubectl, "probed"))
                .get(&first)
                .copied()
                .filter(|r| *r)
        },
    );
    assert!(
        touched.elapsed() < Duration::from_secs(10),
        "took {:?}",
        touched.elapsed()
    );
    let slice = &slices(&kubectl, "probed")[0];
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    let ep = wait_for(
        "Endpoints with one ready address",
        || show(&kubectl, "probed"),
        || endpoints(&kubectl, "probed").filter(|e| addresses(e).0.len() == 1),
    );
    assert_eq!(addresses(&ep).1.len(), 1);
    let table = kubectl.ok(&["get", "endpoints", "probed"]);
    assert!(table.contains(":8080"), "{table}");

    kubectl.ok(&["exec", &first, "--", "rm", "/tmp/ready"]);
    wait_for(
        "the pod to be not ready again",
        || show(&kubectl, "probed"),
        || {
            readiness(&slices(&kubectl, "probed"))
                .get(&first)
                .copied()
                .filter(|r| !*r)
        },
    );

    kubectl.ok(&["delete", "service", "probed"]);
    wait_for(
        "the slices and the Endpoints to go",
        || show(&kubectl, "probed"),
        || {
            (slices(&kubectl, "probed").is_empty() && endpoints(&kubectl, "probed").is_none())
                .then_some(())
        },
    );
}
