//! The StatefulSet controller inside `berth up`, driven by the real kubectl as the Kubernetes
//! "StatefulSet Basics" tutorial drives it, with busybox `httpd` in place of nginx: a headless
//! Service `nginx` and a StatefulSet `web` whose pods each serve a file from their own claim.
//! The tests look only at what kubectl shows — pods, their creation order and readiness,
//! claims, the set's status, `kubectl rollout` output — sampling the pods while the
//! controller works, so ordering promises are checked at every moment, not only at the end.

mod common;
mod podkit;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Kubectl, eventually};
use podkit::start;
use serde_json::Value;

/// Long enough for a loaded two-core machine to start several pods one after another.
const WAIT: Duration = Duration::from_secs(180);

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: nginx, labels: {app: nginx}}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports: [{port: 80, name: web}]
"#;

/// StatefulSet `name` selecting app=`app`, serviceName nginx, `replicas` busybox httpd pods
/// (env VERSION=`version`) serving /www; with `claims`, /www is the claim template `www` from
/// the default class and index.html is the pod's hostname, written once. `spec_extra` is YAML
/// added to the spec (indented two spaces), `container_extra` to the container (six).
fn stateful_set(
    name: &str,
    app: &str,
    replicas: u32,
    version: &str,
    claims: bool,
    spec_extra: &str,
    container_extra: &str,
) -> String {
    let (mount, templates) = if claims {
        (
            "        volumeMounts: [{name: www, mountPath: /www}]\n",
            "  volumeClaimTemplates:\n  - metadata: {name: www}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {requests: {storage: 16Mi}}\n",
        )
    } else {
        ("", "")
    };
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: nginx
  replicas: {replicas}
  selector:
    matchLabels: {{app: {app}}}
{spec_extra}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:test
        command: ["sh", "-c", "mkdir -p /www; [ -f /www/index.html ] || hostname > /www/index.html; exec httpd -f -p 80 -h /www"]
        env: [{{name: VERSION, value: "{version}"}}]
{mount}{container_extra}
{templates}"#
    )
}

fn json(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl.ok(&args)).expect("kubectl printed JSON")
}

fn items(value: &Value) -> Vec<Value> {
    value["items"].as_array().cloned().unwrap_or_default()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

fn version_of(pod: &Value) -> String {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "VERSION"))
        .and_then(|e| e["value"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The pods labelled app=`app`, by name.
fn pods(kubectl: &Kubectl, app: &str) -> BTreeMap<String, Value> {
    let selector = format!("app={app}");
    items(&json(kubectl, &["get", "pods", "-l", &selector]))
        .into_iter()
        .map(|p| (name_of(&p), p))
        .collect()
}

/// Waits until exactly `names` run Running and Ready (and nothing else is labelled app=`app`).
#[track_caller]
fn all_ready(kubectl: &Kubectl, app: &str, names: &[&str]) -> BTreeMap<String, Value> {
    let mut last = BTreeMap::new();
    eventually(&format!("{names:?} Running and Ready"), WAIT, || {
        last = pods(kubectl, app);
        let ready: Vec<&str> = last
            .iter()
            .filter(|(_, p)| is_ready(p) && !terminating(p))
            .map(|(n, _)| n.as_str())
            .collect();
        if ready == names && last.len() == names.len() {
            Ok(())
        } else {
            Err(format!(
                "ready {ready:?} of {:?}\n{}",
                last.keys().collect::<Vec<_>>(),
                kubectl
                    .run(&["get", "events", "--sort-by=.lastTimestamp"])
                    .stdout
            ))
        }
    });
    last
}

fn exec(kubectl: &Kubectl, pod: &str, script: &str) -> String {
    kubectl
        .ok(&["exec", pod, "--", "sh", "-c", script])
        .trim()
        .to_string()
}

fn get(kubectl: &Kubectl, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let jsonpath = format!("jsonpath={path}");
    args.extend(["-o", &jsonpath]);
    kubectl.run(&args).stdout.trim().to_string()
}

fn uids(pods: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    pods.iter()
        .map(|(n, p)| {
            (
                n.clone(),
                p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Samples the pods of `app` until `done` holds, recording the order in which the pods that
/// existed at the start were replaced (their original uid gone or terminating), and asserting
/// at every sample that no name has two live pods and, with `ordered`, that no pod exists
/// while a lower ordinal is not Ready (a replacement is allowed to wait for its turn).
fn replacement_order(
    kubectl: &Kubectl,
    app: &str,
    timeout: Duration,
    mut done: impl FnMut(&BTreeMap<String, Value>) -> bool,
) -> Vec<String> {
    let original = uids(&pods(kubectl, app));
    let mut order = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        let now = pods(kubectl, app);
        for (name, uid) in &original {
            let replaced = now.get(name).is_none_or(|p| {
                p["metadata"]["uid"].as_str() != Some(uid.as_str()) || terminating(p)
            });
            if replaced && !order.contains(name) {
                order.push(name.clone());
            }
        }
        if done(&now) {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "not done in {timeout:?}; replaced so far {order:?}; pods {:?}",
            now.iter()
                .map(|(n, p)| (n.clone(), version_of(p), is_ready(p)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// `<pod>.nginx.default.svc.cluster.local` resolves (busybox `nslookup` from the other pod)
/// to each pod's current address, and each pod serves its own file to the other at the
/// short name `<pod>.nginx`.
fn dns_names_resolve(kubectl: &Kubectl, pods: &BTreeMap<String, Value>) {
    for (from, to) in [("web-1", "web-0"), ("web-0", "web-1")] {
        let ip = pods[to]["status"]["podIP"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let fqdn = format!("{to}.nginx.default.svc.cluster.local");
        eventually(
            &format!("{fqdn} resolves to {ip} from {from}"),
            WAIT,
            || {
                let run = kubectl.run(&["exec", from, "--", "nslookup", &fqdn]);
                let answer = run.stdout.split_once("Name:").map_or("", |(_, a)| a);
                answer
                    .contains(&format!("Address: {ip}"))
                    .then_some(())
                    .ok_or(format!("{run:?}"))
            },
        );
        // The tutorial's short name `web-0.nginx`, through the pod's resolv.conf search path:
        // busybox's own nslookup never searches a dotted name (unlike busybox 1.28, which the
        // tutorial uses), so the libc resolver behind wget asks instead.
        let short = format!("http://{to}.nginx/");
        assert_eq!(exec(kubectl, from, &format!("wget -qO- {short}")), to);
    }
}

#[test]
fn statefulset_basics_identity_storage_ordering_recreation_and_scaling() {
    let (_berth, kubectl) = start();
    kubectl.apply(SERVICE);
    // Ordered creation, from a watch (every change, none missed between samples): web-1 may
    // appear only after web-0 was seen Running and Ready.
    let mut watch = kubectl
        .command(&[
            "get",
            "pods",
            "-l",
            "app=nginx",
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(Duration::from_millis(500));
    kubectl.apply(&stateful_set("web", "nginx", 2, "v1", true, "", ""));
    eventually("web-0 then web-1 Running and Ready", WAIT, || {
        let now = pods(&kubectl, "nginx");
        let both = ["web-0", "web-1"]
            .iter()
            .all(|n| now.get(*n).is_some_and(is_ready));
        if both {
            Ok(())
        } else {
            Err(format!("pods {:?}", now.keys().collect::<Vec<_>>()))
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let output = watch.wait_with_output().expect("the watch's output");
    let text = String::from_utf8_lossy(&output.stdout);
    let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .collect();
    let web0_ready = events
        .iter()
        .position(|e| e["object"]["metadata"]["name"] == "web-0" && is_ready(&e["object"]));
    let web1_seen = events
        .iter()
        .position(|e| e["object"]["metadata"]["name"] == "web-1");
    match (web0_ready, web1_seen) {
        (Some(ready), Some(seen)) => assert!(
            ready < seen,
            "web-1 appeared (event {seen}) before web-0 was Ready (event {ready})"
        ),
        other => panic!(
            "the watch missed the pods: {other:?} in {} events",
            events.len()
        ),
    }
    let first = pods(&kubectl, "nginx");
    let ready_at = first["web-0"]["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or("")
        .to_string();
    let created_at = first["web-1"]["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        created_at >= ready_at,
        "web-1 {created_at} before web-0 Ready {ready_at}"
    );

    // Identity: hostname, subdomain, labels; each pod serves its own claim's file.
    for name in ["web-0", "web-1"] {
        assert_eq!(exec(&kubectl, name, "hostname"), name);
        let pod = &first[name];
        assert_eq!(pod["spec"]["subdomain"], "nginx");
        assert_eq!(
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            name
        );
        assert_eq!(
            pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            &name[4..]
        );
        assert!(
            pod["metadata"]["labels"]["controller-revision-hash"]
                .as_str()
                .is_some_and(|h| h.starts_with("web-"))
        );
        assert_eq!(exec(&kubectl, name, "wget -qO- http://localhost/"), name);
        let claim = format!("www-{name}");
        assert_eq!(get(&kubectl, &["pvc", &claim], "{.status.phase}"), "Bound");
        assert_eq!(
            get(&kubectl, &["pvc", &claim], "{.metadata.labels.app}"),
            "nginx"
        );
    }
    // The pods' DNS names resolve through the headless Service, and each serves its file
    // to the other.
    dns_names_resolve(&kubectl, &first);
    // Data written now must survive the pods.
    for name in ["web-0", "web-1"] {
        exec(&kubectl, name, &format!("echo kept-{name} > /www/kept"));
    }
    let status = json(&kubectl, &["get", "sts", "web"])["status"].clone();
    assert_eq!(status["replicas"], 2);
    assert_eq!(status["readyReplicas"], 2);
    assert_eq!(status["availableReplicas"], 2);
    assert_eq!(status["currentReplicas"], 2);
    assert_eq!(status["updatedReplicas"], 2);
    assert_eq!(status["currentRevision"], status["updateRevision"]);
    assert_eq!(status["observedGeneration"], 1);

    // Deleting the pods recreates them with the same names, hostnames and data.
    let before = uids(&first);
    kubectl.ok(&["delete", "pod", "-l", "app=nginx", "--wait=false"]);
    let again = all_ready(&kubectl, "nginx", &["web-0", "web-1"]);
    for name in ["web-0", "web-1"] {
        assert_ne!(uids(&again)[name], before[name], "{name} was recreated");
        assert_eq!(exec(&kubectl, name, "hostname"), name);
        assert_eq!(
            exec(&kubectl, name, "cat /www/kept"),
            format!("kept-{name}")
        );
        assert_eq!(exec(&kubectl, name, "wget -qO- http://localhost/"), name);
    }
    // Same DNS names, new addresses.
    dns_names_resolve(&kubectl, &again);

    // Scale up with kubectl scale, then down: claims are kept.
    kubectl.ok(&["scale", "sts/web", "--replicas=3"]);
    all_ready(&kubectl, "nginx", &["web-0", "web-1", "web-2"]);
    assert_eq!(
        exec(&kubectl, "web-2", "wget -qO- http://localhost/"),
        "web-2"
    );
    kubectl.ok(&["patch", "sts", "web", "-p", r#"{"spec":{"replicas":1}}"#]);
    let order = replacement_order(&kubectl, "nginx", WAIT, |now| {
        now.len() == 1 && now.contains_key("web-0")
    });
    assert_eq!(
        order,
        ["web-2", "web-1"],
        "scale down from the highest ordinal"
    );
    let claims = get(&kubectl, &["pvc"], "{.items[*].metadata.name}");
    assert_eq!(claims, "www-web-0 www-web-1 www-web-2", "claims are kept");

    // Scaling back up reuses the claim and its data.
    kubectl.ok(&["scale", "sts/web", "--replicas=2"]);
    all_ready(&kubectl, "nginx", &["web-0", "web-1"]);
    assert_eq!(exec(&kubectl, "web-1", "cat /www/kept"), "kept-web-1");
}

#[test]
fn rolling_update_partition_on_delete_and_rollout_commands() {
    let (_berth, kubectl) = start();
    kubectl.apply(SERVICE);
    kubectl.apply(&stateful_set("web", "nginx", 3, "v1", false, "", ""));
    all_ready(&kubectl, "nginx", &["web-0", "web-1", "web-2"]);
    kubectl.ok(&["rollout", "status", "sts/web", "--timeout=180s"]);
    let revision1 = get(&kubectl, &["sts", "web"], "{.status.currentRevision}");

    // RollingUpdate: reverse ordinal order, each updated pod Ready before the next goes.
    kubectl.apply(&stateful_set("web", "nginx", 3, "v2", false, "", ""));
    let order = replacement_order(&kubectl, "nginx", WAIT, |now| {
        now.len() == 3 && now.values().all(|p| version_of(p) == "v2" && is_ready(p))
    });
    assert_eq!(order, ["web-2", "web-1", "web-0"]);
    let out = kubectl.ok(&["rollout", "status", "sts/web", "--timeout=180s"]);
    assert!(out.contains("roll out complete"), "{out}");
    let sts = json(&kubectl, &["get", "sts", "web"]);
    assert_eq!(sts["status"]["updatedReplicas"], 3);
    assert_eq!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    assert_ne!(
        sts["status"]["currentRevision"].as_str(),
        Some(revision1.as_str())
    );
    let revisions = get(&kubectl, &["controllerrevisions"], "{.items[*].revision}");
    assert_eq!(revisions, "1 2");

    // rollout history and undo.
    let history = kubectl.ok(&["rollout", "history", "sts/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let one = kubectl.ok(&["rollout", "history", "sts/web", "--revision=1"]);
    assert!(one.contains("v1"), "{one}");
    kubectl.ok(&["rollout", "undo", "sts/web"]);
    let order = replacement_order(&kubectl, "nginx", WAIT, |now| {
        now.len() == 3 && now.values().all(|p| version_of(p) == "v1" && is_ready(p))
    });
    assert_eq!(order, ["web-2", "web-1", "web-0"]);
    kubectl.ok(&["rollout", "status", "sts/web", "--timeout=180s"]);
    assert_eq!(
        get(&kubectl, &["sts", "web"], "{.status.updateRevision}"),
        revision1
    );
    let renumbered = get(&kubectl, &["controllerrevision", &revision1], "{.revision}");
    assert_eq!(renumbered, "3", "a rollback renumbers the old revision");

    // rollout restart: a template annotation, so a new revision rolled out in reverse order.
    let before = uids(&pods(&kubectl, "nginx"));
    kubectl.ok(&["rollout", "restart", "sts/web"]);
    let order = replacement_order(&kubectl, "nginx", WAIT, |now| {
        now.len() == 3
            && now.values().all(|p| {
                is_ready(p)
                    && p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
            })
    });
    assert_eq!(order, ["web-2", "web-1", "web-0"]);
    let after = uids(&pods(&kubectl, "nginx"));
    assert!(
        before.iter().all(|(name, uid)| after[name] != *uid),
        "every pod was replaced: {before:?} -> {after:?}"
    );
    kubectl.ok(&["rollout", "status", "sts/web", "--timeout=180s"]);
    let revisions = get(&kubectl, &["controllerrevisions"], "{.items[*].revision}");
    let mut numbers: Vec<u64> = revisions
        .split_whitespace()
        .filter_map(|r| r.parse().ok())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [2, 3, 4], "the restart is revision 4: {revisions}");

    // Immutable fields: refused with upstream's message; the set is unchanged.
    let generation = get(&kubectl, &["sts", "web"], "{.metadata.generation}");
    for patch in [
        r#"{"spec":{"serviceName":"elsewhere"}}"#,
        r#"{"spec":{"selector":{"matchLabels":{"app":"nginx","extra":"x"}}}}"#,
        r#"{"spec":{"podManagementPolicy":"Parallel"}}"#,
        r#"{"spec":{"volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Mi"}}}}]}}"#,
    ] {
        let run = kubectl.run(&["patch", "sts", "web", "-p", patch]);
        assert_ne!(run.code, 0, "{patch} was accepted");
        assert!(
            run.stderr.contains("The StatefulSet \"web\" is invalid")
                && run.stderr.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
            "{patch}: {}",
            run.stderr
        );
    }
    kubectl.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":5,"minReadySeconds":0}}"#,
    ]);
    assert_eq!(
        get(&kubectl, &["sts", "web"], "{.metadata.generation}"),
        (generation.parse::<u64>().unwrap_or(0) + 1).to_string(),
        "the mutable fields were updated"
    );
    assert_eq!(
        get(&kubectl, &["sts", "web"], "{.spec.serviceName}"),
        "nginx"
    );

    // Partition: only ordinals >= 2 take v3; then the rest once the partition is 0.
    kubectl.apply(&stateful_set(
        "web",
        "nginx",
        3,
        "v3",
        false,
        "  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {partition: 2}\n",
        "",
    ));
    eventually("web-2 staged at v3", WAIT, || {
        let now = pods(&kubectl, "nginx");
        let versions: Vec<String> = now.values().map(version_of).collect();
        (versions == ["v1", "v1", "v3"] && now.values().all(is_ready))
            .then_some(())
            .ok_or(format!("{versions:?}"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let versions: Vec<String> = pods(&kubectl, "nginx").values().map(version_of).collect();
    assert_eq!(versions, ["v1", "v1", "v3"], "the partition holds");
    assert_eq!(
        get(&kubectl, &["sts", "web"], "{.status.updatedReplicas}"),
        "1"
    );
    kubectl.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let order = replacement_order(&kubectl, "nginx", WAIT, |now| {
        now.len() == 3 && now.values().all(|p| version_of(p) == "v3" && is_ready(p))
    });
    assert_eq!(order, ["web-1", "web-0"]);

    // OnDelete: a new template changes nothing until a pod is deleted.
    kubectl.apply(&stateful_set(
        "web",
        "nginx",
        3,
        "v4",
        false,
        "  updateStrategy:\n    type: OnDelete\n    rollingUpdate: null\n",
        "",
    ));
    eventually("the set observes the OnDelete spec", WAIT, || {
        let sts = json(&kubectl, &["get", "sts", "web"]);
        (sts["status"]["observedGeneration"] == sts["metadata"]["generation"])
            .then_some(())
            .ok_or(format!("{:#}", sts["status"]))
    });
    std::thread::sleep(Duration::from_secs(3));
    let versions: Vec<String> = pods(&kubectl, "nginx").values().map(version_of).collect();
    assert_eq!(versions, ["v3", "v3", "v3"], "OnDelete waits for deletions");
    kubectl.ok(&["delete", "pod", "web-1", "--wait=false"]);
    eventually("web-1 recreated at v4", WAIT, || {
        let now = pods(&kubectl, "nginx");
        let versions: Vec<String> = now.values().map(version_of).collect();
        (versions == ["v3", "v4", "v3"] && now.values().all(is_ready))
            .then_some(())
            .ok_or(format!("{versions:?}"))
    });

    // kubectl scale through the scale subresource.
    kubectl.ok(&["scale", "sts/web", "--replicas=1"]);
    all_ready(&kubectl, "nginx", &["web-0"]);
    assert_eq!(get(&kubectl, &["sts", "web"], "{.status.replicas}"), "1");
}

#[test]
fn ordered_ready_halts_behind_an_unready_pod_and_parallel_does_not() {
    let (_berth, kubectl) = start();
    kubectl.apply(SERVICE);
    // Never Ready: the readiness probe always fails.
    let never_ready = "        readinessProbe: {exec: {command: [\"false\"]}, periodSeconds: 1}\n";
    kubectl.apply(&stateful_set(
        "ordered",
        "ordered",
        3,
        "v1",
        false,
        "",
        never_ready,
    ));
    kubectl.apply(&stateful_set(
        "par",
        "par",
        3,
        "v1",
        false,
        "  podManagementPolicy: Parallel\n",
        never_ready,
    ));
    eventually("all Parallel pods Running", WAIT, || {
        let now = pods(&kubectl, "par");
        let running = now
            .values()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == 3)
            .then_some(())
            .ok_or(format!("{running} running"))
    });
    let ordered = pods(&kubectl, "ordered");
    assert_eq!(
        ordered.keys().collect::<Vec<_>>(),
        ["ordered-0"],
        "OrderedReady waits for ordered-0 to be Ready"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pods(&kubectl, "ordered").len(), 1);
    let status = json(&kubectl, &["get", "sts", "par"])["status"].clone();
    assert_eq!(status["replicas"], 3);
    assert_eq!(status["readyReplicas"], 0);

    // Parallel scale-down does not wait for readiness either.
    kubectl.ok(&["scale", "sts/par", "--replicas=0"]);
    eventually("Parallel pods gone", WAIT, || {
        let left = pods(&kubectl, "par").len();
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    });

    // No headless Service named by serviceName: the set runs, with a warning.
    kubectl.apply(
        &stateful_set("lonely", "lonely", 1, "v1", false, "", "")
            .replace("serviceName: nginx", "serviceName: nowhere"),
    );
    all_ready(&kubectl, "lonely", &["lonely-0"]);
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=lonely,type=Warning",
    ]);
    assert!(events.contains("nowhere"), "{events}");
}

#[test]
fn retention_policy_delete_removes_claims_and_orphaning_keeps_pods() {
    let (_berth, kubectl) = start();
    kubectl.apply(SERVICE);
    kubectl.apply(&stateful_set(
        "web",
        "nginx",
        2,
        "v1",
        true,
        "  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}\n",
        "",
    ));
    all_ready(&kubectl, "nginx", &["web-0", "web-1"]);
    let owner = get(
        &kubectl,
        &["pvc", "www-web-0"],
        "{.metadata.ownerReferences[0].kind}",
    );
    assert_eq!(owner, "StatefulSet");

    kubectl.ok(&["scale", "sts/web", "--replicas=1"]);
    eventually("www-web-1 deleted with its scaled-down pod", WAIT, || {
        let claims = get(&kubectl, &["pvc"], "{.items[*].metadata.name}");
        (claims == "www-web-0").then_some(()).ok_or(claims)
    });
    kubectl.ok(&["delete", "sts", "web"]);
    eventually("www-web-0 deleted with the set", WAIT, || {
        let claims = get(&kubectl, &["pvc"], "{.items[*].metadata.name}");
        (claims.is_empty()).then_some(()).ok_or(claims)
    });

    // Default Retain: claims outlive the set; cascade=orphan keeps the pods, unowned.
    kubectl.apply(&stateful_set("keep", "keep", 1, "v1", true, "", ""));
    all_ready(&kubectl, "keep", &["keep-0"]);
    let uid = get(&kubectl, &["pod", "keep-0"], "{.metadata.uid}");
    kubectl.ok(&["delete", "sts", "keep", "--cascade=orphan"]);
    eventually("the set is gone", WAIT, || {
        let run = kubectl.run(&["get", "sts", "keep"]);
        (run.code != 0).then_some(()).ok_or(run.stdout)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(&kubectl, &["pod", "keep-0"], "{.metadata.uid}"), uid);
    assert_eq!(
        get(&kubectl, &["pod", "keep-0"], "{.metadata.ownerReferences}"),
        "",
        "the orphaned pod has no owner"
    );
    assert_eq!(
        get(&kubectl, &["pvc", "www-keep-0"], "{.status.phase}"),
        "Bound"
    );
}
