//! The Deployment controller inside `berth up`, driven by the real kubectl: Deployments are
//! created, rolled out, paused, rolled back, restarted and scaled as a user would, and the
//! tests look only at what kubectl shows (the Deployment's status and conditions, its
//! ReplicaSets and their annotations, pods). Watchers sample the pods during rollouts to
//! check what the strategy promises at every moment, not only at the end. Pods run the
//! built-in `berth.dev/host` image.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use serde_json::Value;

/// Long enough for a loaded two-core machine to start several containers.
const WAIT: Duration = Duration::from_secs(120);
const ROLLOUT_TIMEOUT: &str = "--timeout=180s";

/// A Deployment `name` selecting app=`name`, whose container has env VERSION=`version`;
/// `spec_extra` is YAML added to the Deployment's spec (indented two spaces) and
/// `container_extra` to its container (indented six).
fn deployment(
    name: &str,
    replicas: u32,
    version: &str,
    spec_extra: &str,
    container_extra: &str,
) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
{spec_extra}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: berth.dev/host
        command: ["sleep", "3600"]
        env: [{{name: VERSION, value: "{version}"}}]
{container_extra}
"#
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

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn hash_of(object: &Value) -> String {
    object["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Polls `check` until it returns `Some`; panics with `what` and `describe()` after [`WAIT`].
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

fn describe(kubectl: &Kubectl) -> String {
    let run = kubectl.run(&["get", "deploy,rs,pods", "-o", "wide", "--show-labels"]);
    let status = kubectl.run(&["get", "deploy", "-o", "jsonpath={.items[*].status}"]);
    format!("{}{}\nstatus: {}", run.stdout, run.stderr, status.stdout)
}

#[track_caller]
fn rollout_status(kubectl: &Kubectl, name: &str) {
    let run = kubectl.run(&[
        "rollout",
        "status",
        &format!("deploy/{name}"),
        ROLLOUT_TIMEOUT,
    ]);
    assert_eq!(
        run.code,
        0,
        "rollout status failed:\n{}{}\n{}",
        run.stdout,
        run.stderr,
        describe(kubectl)
    );
}

/// The Deployment's ReplicaSets, oldest revision first.
fn replica_sets(kubectl: &Kubectl, app: &str) -> Vec<Value> {
    let mut sets = items(&json(kubectl, &["get", "rs", "-l", &format!("app={app}")]));
    sets.sort_by_key(revision);
    sets
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(-1)
}

fn template_version(object: &Value) -> String {
    object["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Watches the pods of `app` in the background (a kube-rs watch, so every change is seen,
/// however brief) until finished; `check` sees the pods after each change and returns a
/// violation to report.
struct Watcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(usize, Vec<String>)>>,
}

impl Watcher {
    fn start(
        berth: &Berth,
        app: &str,
        check: impl Fn(&[Value]) -> Option<String> + Send + 'static,
    ) -> Watcher {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::watcher::{self, Event};

        let kubeconfig = berth.kubeconfig();
        let selector = format!("app={app}");
        // The watch's first list can come back empty here, so the state starts from what
        // kubectl lists (nothing changes before the caller starts the rollout) and the
        // watch's listing is merged into it.
        let seed: std::collections::BTreeMap<String, Value> =
            items(&json(&berth.kubectl(), &["get", "pods", "-l", &selector]))
                .into_iter()
                .map(|p| (p["metadata"]["name"].as_str().unwrap_or("").to_string(), p))
                .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (live_tx, live_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config = kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .expect("kube config");
                let client = kube::Client::try_from(config).expect("client");
                let api: kube::Api<Pod> = kube::Api::default_namespaced(client);
                let stream = watcher::watcher(api, watcher::Config::default().labels(&selector));
                let mut stream = std::pin::pin!(stream);
                let mut pods = seed;
                let mut listing = std::collections::BTreeMap::new();
                let (mut samples, mut violations) = (0, Vec::new());
                while !stopped.load(Ordering::SeqCst) {
                    let next =
                        tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
                    let event = match next {
                        Ok(Some(Ok(event))) => event,
                        Ok(None) => break,
                        Ok(Some(Err(_))) | Err(_) => continue,
                    };
                    let key = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
                    let value = |p: &Pod| serde_json::to_value(p).expect("pod JSON");
                    match event {
                        Event::Init => listing.clear(),
                        Event::InitApply(p) => {
                            listing.insert(key(&p), value(&p));
                            continue;
                        }
                        Event::InitDone => {
                            pods.extend(std::mem::take(&mut listing));
                            let _ = live_tx.send(());
                        }
                        Event::Apply(p) => {
                            pods.insert(key(&p), value(&p));
                        }
                        Event::Delete(p) => {
                            pods.remove(&key(&p));
                        }
                    }
                    samples += 1;
                    let current: Vec<Value> = pods.values().cloned().collect();
                    if let Some(violation) = check(&current) {
                        violations.push(violation);
                    }
                }
                (samples, violations)
            })
        });
        // The rollout must not start before the watch sees changes.
        live_rx.recv_timeout(WAIT).expect("the pod watch started");
        Watcher {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops watching; returns how many states were checked and the violations seen.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .map(|h| h.join().expect("watcher thread"))
            .unwrap_or_default()
    }
}

#[test]
fn rolling_update_history_undo_restart_and_scale() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    kubectl.apply(&deployment("web", 3, "v1", "", ""));
    rollout_status(&kubectl, "web");

    // kubectl get deploy: READY 3/3, UP-TO-DATE 3, AVAILABLE 3.
    let row = kubectl.ok(&["get", "deploy", "web", "--no-headers"]);
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[..4], ["web", "3/3", "3", "3"], "{row}");
    // A deleted pod is replaced: three ready again, the deleted one not among them.
    let pods = items(&json(&kubectl, &["get", "pods", "-l", "app=web"]));
    let victim = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    kubectl.ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_for(
        "a replacement pod",
        || describe(&kubectl),
        || {
            let pods = items(&json(&kubectl, &["get", "pods", "-l", "app=web"]));
            let ready: Vec<&Value> = pods
                .iter()
                .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            (ready.len() == 3
                && ready
                    .iter()
                    .all(|p| p["metadata"]["name"] != victim.as_str()))
            .then_some(())
        },
    );
    rollout_status(&kubectl, "web");

    let first = replica_sets(&kubectl, "web");
    assert_eq!(first.len(), 1);
    let first_rs = first[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(first_rs, format!("web-{}", hash_of(&first[0])));
    assert_eq!(revision(&first[0]), 1);

    // A new template rolls out with never fewer than 3 - maxUnavailable (25% of 3 = 0)
    // ready pods.
    let watcher = Watcher::start(&berth, "web", |pods| {
        let ready = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
            .count();
        (ready < 3).then(|| format!("only {ready} ready pods"))
    });
    let patch = r#"{"metadata":{"annotations":{"kubernetes.io/change-cause":"version two"}},
        "spec":{"template":{"spec":{"containers":[{"name":"main","image":"berth.dev/host",
        "command":["sleep","3600"],"env":[{"name":"VERSION","value":"v2"}]}]}}}}"#;
    kubectl.ok(&["patch", "deploy", "web", "--type=merge", "-p", patch]);
    rollout_status(&kubectl, "web");
    let (samples, violations) = watcher.finish();
    assert!(samples > 0, "the watcher saw no pods");
    assert!(
        violations.is_empty(),
        "availability dropped: {violations:?}"
    );
    let sets = replica_sets(&kubectl, "web");
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0]["metadata"]["name"], first_rs.as_str());
    assert_eq!(spec_replicas(&sets[0]), 0, "the old replica set ends at 0");
    assert_eq!((revision(&sets[1]), spec_replicas(&sets[1])), (2, 3));
    assert_eq!(template_version(&sets[1]), "v2");
    let events = kubectl.ok(&["get", "events", "-o", "jsonpath={.items[*].message}"]);
    assert!(
        events.contains(&format!("Scaled down replica set {first_rs} from 3 to")),
        "{events}"
    );

    // History lists both revisions with the change cause.
    let history = kubectl.ok(&["rollout", "history", "deploy/web"]);
    let lines: Vec<Vec<&str>> = history
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| w.first().is_some_and(|r| r.parse::<u32>().is_ok()))
        .collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert_eq!(lines[0][0], "1", "{history}");
    assert_eq!(lines[1][..], ["2", "version", "two"], "{history}");

    // Undo goes back to the first template: its replica set, with a new revision.
    kubectl.ok(&["rollout", "undo", "deploy/web"]);
    rollout_status(&kubectl, "web");
    let d = json(&kubectl, &["get", "deploy", "web"]);
    assert_eq!(template_version(&d), "v1");
    let sets = replica_sets(&kubectl, "web");
    assert_eq!(sets.len(), 2, "undo reuses the old replica set");
    let back = sets.last().cloned().unwrap_or_default();
    assert_eq!(back["metadata"]["name"], first_rs.as_str());
    assert_eq!((revision(&back), spec_replicas(&back)), (3, 3));
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );

    // --to-revision picks a given one.
    kubectl.ok(&["rollout", "undo", "deploy/web", "--to-revision=2"]);
    rollout_status(&kubectl, "web");
    let d = json(&kubectl, &["get", "deploy", "web"]);
    assert_eq!(template_version(&d), "v2");

    // Restart makes a new replica set.
    kubectl.ok(&["rollout", "restart", "deploy/web"]);
    rollout_status(&kubectl, "web");
    let sets = replica_sets(&kubectl, "web");
    assert_eq!(sets.len(), 3, "restart adds a replica set");
    assert_eq!((revision(&sets[2]), spec_replicas(&sets[2])), (5, 3));
    assert!(
        sets[..2].iter().all(|rs| spec_replicas(rs) == 0),
        "old replica sets end at 0"
    );

    // The scale subresource.
    kubectl.ok(&["scale", "deploy/web", "--replicas=5"]);
    rollout_status(&kubectl, "web");
    wait_for(
        "5/5 ready",
        || describe(&kubectl),
        || {
            let row = kubectl.ok(&["get", "deploy", "web", "--no-headers"]);
            let columns: Vec<String> = row.split_whitespace().map(str::to_string).collect();
            (columns.get(1..4) == Some(&["5/5".to_string(), "5".into(), "5".into()][..]))
                .then_some(())
        },
    );
    let newest = replica_sets(&kubectl, "web").pop().unwrap_or_default();
    assert_eq!(spec_replicas(&newest), 5);
}

#[test]
fn pause_resume_and_progress_deadline() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    kubectl.apply(&deployment(
        "paused",
        2,
        "v1",
        "  progressDeadlineSeconds: 10",
        "",
    ));
    rollout_status(&kubectl, "paused");

    kubectl.ok(&["rollout", "pause", "deploy/paused"]);
    kubectl.ok(&["set", "env", "deploy/paused", "VERSION=v2"]);
    // Once the controller has seen the change (observedGeneration), nothing moved.
    wait_for(
        "the paused change observed",
        || describe(&kubectl),
        || {
            let d = json(&kubectl, &["get", "deploy", "paused"]);
            let observed = d["status"]["observedGeneration"] == d["metadata"]["generation"];
            let paused = d["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
            });
            (observed && paused).then_some(())
        },
    );
    let sets = replica_sets(&kubectl, "paused");
    assert_eq!(sets.len(), 1, "no new replica set while paused");
    assert_eq!(spec_replicas(&sets[0]), 2);
    assert_eq!(template_version(&sets[0]), "v1");

    kubectl.ok(&["rollout", "resume", "deploy/paused"]);
    rollout_status(&kubectl, "paused");
    let sets = replica_sets(&kubectl, "paused");
    assert_eq!(sets.len(), 2);
    assert_eq!(
        (template_version(&sets[1]), spec_replicas(&sets[1])),
        ("v2".into(), 2)
    );
    assert_eq!(spec_replicas(&sets[0]), 0);

    // A template whose pods never become ready: the rollout stalls and times out.
    let probe = r#"{"spec":{"template":{"spec":{"containers":[{"name":"main",
        "image":"berth.dev/host","command":["sleep","3600"],
        "env":[{"name":"VERSION","value":"never"}],
        "readinessProbe":{"exec":{"command":["false"]},"periodSeconds":1}}]}}}}"#;
    kubectl.ok(&["patch", "deploy", "paused", "--type=merge", "-p", probe]);
    let run = kubectl.run(&["rollout", "status", "deploy/paused", ROLLOUT_TIMEOUT]);
    assert_ne!(run.code, 0, "a never-ready rollout cannot succeed");
    assert!(
        run.stderr.contains("exceeded its progress deadline"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    let d = json(&kubectl, &["get", "deploy", "paused"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing").cloned())
        .unwrap_or_default();
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded", "{d}");
    assert_eq!(progressing["status"], "False");
    // The old pods were never taken away (maxUnavailable of 2 is 0).
    assert_eq!(d["status"]["availableReplicas"], 2, "{d}");
}

#[test]
fn recreate_never_runs_old_and_new_pods_together() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    kubectl.apply(&deployment(
        "once",
        2,
        "v1",
        "  strategy: {type: Recreate}",
        "",
    ));
    rollout_status(&kubectl, "once");
    let old_hash = hash_of(&replica_sets(&kubectl, "once")[0]);

    let watcher = Watcher::start(&berth, "once", |pods| {
        let running: BTreeSet<String> = pods
            .iter()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .map(hash_of)
            .collect();
        (running.len() > 1).then(|| format!("pods of several templates at once: {running:?}"))
    });
    kubectl.ok(&["set", "env", "deploy/once", "VERSION=v2"]);
    rollout_status(&kubectl, "once");
    let (samples, violations) = watcher.finish();
    assert!(samples > 0, "the watcher saw no pods");
    assert!(violations.is_empty(), "{violations:?}");

    let sets = replica_sets(&kubectl, "once");
    assert_eq!(sets.len(), 2);
    assert_eq!(hash_of(&sets[0]), old_hash);
    assert_eq!(spec_replicas(&sets[0]), 0);
    assert_eq!(spec_replicas(&sets[1]), 2);
    let pods = items(&json(&kubectl, &["get", "pods", "-l", "app=once"]));
    let new_hash = hash_of(&sets[1]);
    assert!(
        pods.iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .all(|p| hash_of(p) == new_hash),
        "{pods:?}"
    );
}

#[test]
fn a_deployment_recreated_after_an_orphaning_delete_adopts_its_replica_set() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    kubectl.apply(&deployment("kept", 1, "v1", "", ""));
    rollout_status(&kubectl, "kept");
    let sets = replica_sets(&kubectl, "kept");
    assert_eq!(sets.len(), 1, "{sets:?}");
    let rs_uid = sets[0]["metadata"]["uid"].clone();

    kubectl.ok(&["delete", "deployment", "kept", "--cascade=orphan"]);
    wait_for(
        "the replica set to be orphaned",
        || describe(&kubectl),
        || {
            let sets = replica_sets(&kubectl, "kept");
            (sets.len() == 1 && sets[0]["metadata"]["ownerReferences"].is_null()).then_some(())
        },
    );

    kubectl.apply(&deployment("kept", 1, "v1", "", ""));
    let deployment_uid = json(&kubectl, &["get", "deployment", "kept"])["metadata"]["uid"].clone();
    wait_for(
        "the same replica set to be adopted, not a second one made",
        || describe(&kubectl),
        || {
            let sets = replica_sets(&kubectl, "kept");
            let adopted = sets.len() == 1
                && sets[0]["metadata"]["uid"] == rs_uid
                && sets[0]["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r["uid"] == deployment_uid && r["controller"] == true)
                    });
            adopted.then_some(())
        },
    );
    rollout_status(&kubectl, "kept");
}

#[test]
fn logs_and_port_forward_reach_a_deployment_by_its_name_and_its_service() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    // Pods share the host's network until pod networking lands: a free port for the server.
    let port = common::free_port();
    kubectl.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: www}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: www}}}}
  template:
    metadata: {{labels: {{app: www}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: berth.dev/host
        command: ["sh", "-c", "echo hello-from-www > /tmp/index.html; echo serving; exec busybox httpd -f -p {port} -h /tmp"]
"#
    ));
    rollout_status(&kubectl, "www");
    kubectl.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: www}}\nspec:\n  selector: {{app: www}}\n  ports: [{{port: 80, targetPort: {port}}}]\n"
    ));
    // `logs deploy/x` picks one of the Deployment's pods.
    wait_for(
        "logs deploy/www",
        || describe(&kubectl),
        || {
            let run = kubectl.run(&["logs", "deploy/www"]);
            (run.code == 0 && run.stdout.contains("serving")).then_some(())
        },
    );
    // `port-forward svc/x` resolves the Service to a pod and its targetPort.
    let local = common::free_port();
    let mut forward = kubectl
        .command(&["port-forward", "svc/www", &format!("{local}:80")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let page = wait_for(
        "a page through svc/www",
        || describe(&kubectl),
        || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", local)).ok()?;
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).ok()?;
            reply.contains("hello-from-www").then_some(reply)
        },
    );
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
}
