//! The control plane driven by the real kubectl: every command a user types, against a berth
//! started on a temporary data dir.

mod common;

use common::Berth;
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
"#;

const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:16
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"#;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 5432
    targetPort: 5432
"#;

const PVC: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
"#;

const STORAGECLASS: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: fast
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: berth.dev/local-path
volumeBindingMode: WaitForFirstConsumer
"#;

const CONFIGMAP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn apply_creates_then_patches_every_kind() {
    let berth = Berth::start();
    let k = berth.kubectl();
    for (manifest, created) in [
        (DEPLOYMENT, "deployment.apps/web created"),
        (STATEFULSET, "statefulset.apps/db created"),
        (SERVICE, "service/web created"),
        (PVC, "persistentvolumeclaim/data created"),
        (STORAGECLASS, "storageclass.storage.k8s.io/fast created"),
        (CONFIGMAP, "configmap/settings created"),
    ] {
        let out = k.apply(manifest);
        assert!(out.contains(created), "{out}");
    }
    // Re-applying the same files changes nothing.
    assert!(k.apply(CONFIGMAP).contains("configmap/settings unchanged"));

    // A changed file is patched, and the last-applied annotation follows it.
    let changed = [
        (
            DEPLOYMENT
                .replace("replicas: 1", "replicas: 3")
                .replace("busybox:1.36", "busybox:1.37"),
            "deployment.apps/web configured",
        ),
        (
            STATEFULSET.replace("postgres:16", "postgres:17"),
            "statefulset.apps/db configured",
        ),
        (
            SERVICE.replace("port: 5432\n", "port: 5433\n"),
            "service/web configured",
        ),
        (
            PVC.replace("name: data\n", "name: data\n  labels: {tier: db}\n"),
            "persistentvolumeclaim/data configured",
        ),
        (
            CONFIGMAP.replace("blue", "green"),
            "configmap/settings configured",
        ),
    ];
    for (manifest, configured) in &changed {
        let out = k.apply(manifest);
        assert!(out.contains(configured), "{out}");
    }
    let deploy = json(&k.ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    assert_eq!(deploy["metadata"]["generation"], 2);
    let last_applied =
        deploy["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("last-applied annotation kept");
    assert!(last_applied.contains("busybox:1.37"), "{last_applied}");
    let svc = json(&k.ok(&["get", "svc", "web", "-o", "json"]));
    let ports = svc["spec"]["ports"].as_array().unwrap();
    assert_eq!(
        ports.len(),
        1,
        "the old port was deleted by the strategic merge patch: {ports:?}"
    );
    assert_eq!(ports[0]["port"], 5433);
    let sts = json(&k.ok(&["get", "sts", "db", "-o", "json"]));
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "postgres:17"
    );
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    let cm = json(&k.ok(&["get", "cm", "settings", "-o", "json"]));
    assert_eq!(cm["data"]["color"], "green");
    let pvc = json(&k.ok(&["get", "pvc", "data", "-o", "json"]));
    assert_eq!(pvc["metadata"]["labels"]["tier"], "db");
    let resized = k.run_stdin(&["apply", "-f", "-"], &PVC.replace("1Gi", "2Gi"));
    assert_eq!(resized.code, 1);
    assert!(
        resized.stderr.contains("spec is immutable after creation"),
        "{}",
        resized.stderr
    );
}

#[test]
fn get_prints_tables_and_every_output_format() {
    let berth = Berth::start();
    let k = berth.kubectl();
    k.apply(DEPLOYMENT);
    k.apply(STORAGECLASS);
    k.apply(SERVICE);
    let table = k.ok(&["get", "deploy"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().starts_with("web "), "{table}");
    let wide = k.ok(&["get", "deploy", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("CONTAINERS"),
        "{wide}"
    );
    assert!(wide.contains("busybox:1.36"), "{wide}");
    let sc = k.ok(&["get", "sc"]);
    assert!(sc.contains("fast (default)"), "{sc}");
    assert!(sc.contains("WaitForFirstConsumer"), "{sc}");
    let svc = k.ok(&["get", "svc", "web"]);
    assert!(svc.lines().next().unwrap().contains("CLUSTER-IP"), "{svc}");
    assert!(svc.contains("5432/TCP"), "{svc}");
    let all_ns = k.ok(&["get", "deploy", "-A"]);
    assert!(
        all_ns.lines().nth(1).unwrap().starts_with("default "),
        "namespace column from row metadata: {all_ns}"
    );
    let labels = k.ok(&["get", "deploy", "--show-labels"]);
    assert!(labels.contains("app=web"), "{labels}");

    let as_json = json(&k.ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(as_json["kind"], "Deployment");
    assert!(
        as_json["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(as_json["metadata"]["resourceVersion"].as_str().is_some());
    assert!(as_json["metadata"]["creationTimestamp"].as_str().is_some());
    let yaml = k.ok(&["get", "deploy", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") || yaml.contains("kind: DeploymentList"),
        "{yaml}"
    );
    assert!(yaml.contains("name: web"), "{yaml}");
    let path = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(path, "busybox:1.36");
    let names = k.ok(&["get", "deploy,svc", "-o", "name"]);
    assert!(
        names.contains("deployment.apps/web") && names.contains("service/web"),
        "{names}"
    );
    let missing = k.run(&["get", "deploy", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{}",
        missing.stderr
    );
    let ns = k.ok(&["get", "ns"]);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(name), "{ns}");
    }
}

#[test]
fn imperative_creates_send_protobuf() {
    let berth = Berth::start();
    let k = berth.kubectl();
    assert!(
        k.ok(&["create", "configmap", "cm1", "--from-literal=a=b"])
            .contains("configmap/cm1 created")
    );
    assert!(
        k.ok(&[
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=password=hunter2"
        ])
        .contains("secret/s1 created")
    );
    assert!(
        k.ok(&["create", "namespace", "team-a"])
            .contains("namespace/team-a created")
    );
    assert!(
        k.ok(&[
            "create",
            "deployment",
            "hello",
            "--image=busybox",
            "--replicas=2"
        ])
        .contains("deployment.apps/hello created")
    );
    let cm = json(&k.ok(&["get", "cm", "cm1", "-o", "json"]));
    assert_eq!(cm["data"]["a"], "b");
    let secret = json(&k.ok(&["get", "secret", "s1", "-o", "json"]));
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert_eq!(secret["type"], "Opaque");
    let deploy = json(&k.ok(&["get", "deploy", "hello", "-o", "json"]));
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    assert_eq!(deploy["spec"]["selector"]["matchLabels"]["app"], "hello");
    k.ok(&["get", "ns", "team-a"]);
    // A second create of the same name is refused.
    let again = k.run(&["create", "configmap", "cm1", "--from-literal=a=c"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("configmaps \"cm1\" already exists"),
        "{}",
        again.stderr
    );
}

#[test]
fn describe_scale_patch_and_delete() {
    let berth = Berth::start();
    let k = berth.kubectl();
    k.apply(DEPLOYMENT);
    k.apply(STATEFULSET);
    k.apply(SERVICE);
    k.apply(PVC);
    for what in [
        ["deploy", "web"],
        ["sts", "db"],
        ["svc", "web"],
        ["pvc", "data"],
        ["ns", "default"],
    ] {
        let out = k.ok(&["describe", what[0], what[1]]);
        assert!(out.contains("Name:") && out.contains(what[1]), "{out}");
    }

    assert!(
        k.ok(&["scale", "deploy/web", "--replicas=4"])
            .contains("scaled")
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    k.ok(&["scale", "sts/db", "--replicas=3"]);
    assert_eq!(
        k.ok(&["get", "sts", "db", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let current = k.ok(&["get", "sts", "db", "-o", "jsonpath={.spec.replicas}"]);
    let stale = k.run(&["scale", "sts/db", "--replicas=5", "--current-replicas=1"]);
    assert_ne!(
        stale.code, 0,
        "a failed precondition must fail: {stale:?} (replicas {current})"
    );

    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"metadata":{"labels":{"tier":"front"}}}"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/revisionHistoryLimit","value":3}]"#,
    ]);
    let deploy = json(&k.ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(deploy["metadata"]["labels"]["tier"], "front");
    assert_eq!(deploy["spec"]["minReadySeconds"], 5);
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 3);
    let failed = k.run(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":99}]"#,
    ]);
    assert_eq!(failed.code, 1);
    assert!(
        failed.stderr.contains("The Deployment \"web\" is invalid"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("value did not match"),
        "the reason is shown: {}",
        failed.stderr
    );

    k.ok(&["label", "svc", "web", "tier=db"]);
    k.ok(&["annotate", "svc", "web", "owner=me"]);
    let svc = json(&k.ok(&["get", "svc", "web", "-o", "json"]));
    assert_eq!(svc["metadata"]["labels"]["tier"], "db");
    assert_eq!(svc["metadata"]["annotations"]["owner"], "me");

    assert!(
        k.ok(&["delete", "deploy", "web"])
            .contains("deployment.apps \"web\" deleted")
    );
    let gone = k.run(&["get", "deploy", "web"]);
    assert!(gone.stderr.contains("NotFound"), "{gone:?}");
    let run = k.run_stdin(&["delete", "-f", "-"], SERVICE);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("service \"web\" deleted"), "{run:?}");
}

#[test]
fn stale_and_invalid_writes_are_refused_clearly() {
    let berth = Berth::start();
    let k = berth.kubectl();
    k.apply(CONFIGMAP);
    let cm = json(&k.ok(&["get", "cm", "settings", "-o", "json"]));
    // Someone else changes it, then our copy is stale.
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    let mut stale = cm.clone();
    stale["data"]["color"] = "yellow".into();
    let run = k.run_stdin(&["replace", "-f", "-"], &stale.to_string());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "Operation cannot be fulfilled on configmaps \"settings\": the object has been modified"
        ),
        "{}",
        run.stderr
    );

    let bad = DEPLOYMENT.replace("replicas: 1", "replicas: -1");
    let run = k.run_stdin(&["apply", "-f", "-"], &bad);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("spec.replicas"), "{}", run.stderr);
    assert!(run.stderr.contains("is invalid"), "{}", run.stderr);
    let bad_name = CONFIGMAP.replace("name: settings", "name: Bad_Name");
    let run = k.run_stdin(&["create", "-f", "-"], &bad_name);
    assert!(run.stderr.contains("metadata.name"), "{}", run.stderr);
    let unknown = CONFIGMAP.replace("data:", "bogusField: 1\ndata:");
    let run = k.run_stdin(&["create", "-f", "-"], &unknown);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown field \"bogusField\""),
        "{}",
        run.stderr
    );
}

#[test]
fn get_watch_sees_added_modified_deleted() {
    let berth = Berth::start();
    let k = berth.kubectl();
    let mut watcher = k
        .command(&["get", "cm", "-w", "-o", "json", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    k.apply(CONFIGMAP);
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    k.ok(&["delete", "cm", "settings"]);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let _ = watcher.kill();
    let output = watcher.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&output.stdout);
    let stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let events: Vec<(String, String)> = stream
        .filter_map(Result::ok)
        .filter(|e| e["object"]["metadata"]["name"] == "settings")
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["data"]["color"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("ADDED".into(), "blue".into()),
            ("MODIFIED".into(), "red".into()),
            ("DELETED".into(), "red".into())
        ],
        "{text}"
    );
}

#[test]
fn wait_for_jsonpath() {
    let berth = Berth::start();
    let k = berth.kubectl();
    k.apply(CONFIGMAP);
    let waiter = k
        .command(&[
            "wait",
            "cm/settings",
            "--for=jsonpath={.data.color}=purple",
            "--timeout=20s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl wait");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"purple"}}"#,
    ]);
    let output = waiter.wait_with_output().expect("wait output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("condition met"));
}

#[test]
fn explain_and_api_resources() {
    let berth = Berth::start();
    let k = berth.kubectl();
    let explain = k.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explain.contains("KIND:") && explain.contains("Pod"),
        "{explain}"
    );
    assert!(explain.contains("image"), "{explain}");
    let resources = k.ok(&["api-resources"]);
    for short in [
        "po", "svc", "deploy", "sts", "pvc", "pv", "sc", "ns", "cm", "ep", "rs", "no", "ev",
    ] {
        assert!(
            resources
                .split_whitespace()
                .any(|w| w == short || w.split(',').any(|s| s == short)),
            "{short} missing:\n{resources}"
        );
    }
    k.apply(DEPLOYMENT);
    k.apply(SERVICE);
    let all = k.ok(&["get", "all"]);
    assert!(
        all.contains("deployment.apps/web") && all.contains("service/web"),
        "{all}"
    );
}

#[test]
fn requests_without_a_valid_token_get_401() {
    let berth = Berth::start();
    let k = berth.kubectl();
    let run = k.run(&["--token", "wrong", "get", "pods"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("You must be logged in to the server"),
        "{}",
        run.stderr
    );
    use std::os::unix::fs::PermissionsExt;
    for file in [
        "admin.kubeconfig",
        "admin.token",
        "pki/ca.key",
        "pki/apiserver.key",
    ] {
        let mode = std::fs::metadata(berth.data_dir().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let mode = std::fs::metadata(berth.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn finalizers_hold_deletion_and_terminating_namespaces_refuse_content() {
    let berth = Berth::start();
    let k = berth.kubectl();
    let held = CONFIGMAP.replace(
        "name: settings\n",
        "name: settings\n  finalizers: [example.com/hold]\n",
    );
    k.apply(&held);
    k.ok(&["delete", "cm", "settings", "--wait=false"]);
    let cm = json(&k.ok(&["get", "cm", "settings", "-o", "json"]));
    assert!(cm["metadata"]["deletionTimestamp"].is_string(), "{cm}");
    // No new finalizers once deletion has started.
    let add = k.run(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]"#,
    ]);
    assert_eq!(add.code, 1);
    assert!(
        add.stderr
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        add.stderr
    );
    // Removing the last finalizer completes the deletion.
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let gone = k.run(&["get", "cm", "settings"]);
    assert!(gone.stderr.contains("NotFound"), "{gone:?}");

    // A held object keeps the namespace Terminating (the namespace controller empties and
    // removes it once nothing is left).
    k.ok(&["create", "namespace", "doomed"]);
    k.apply(&held.replace("name: settings\n", "name: settings\n  namespace: doomed\n"));
    k.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    assert_eq!(
        k.ok(&["get", "ns", "doomed", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    let refused = k.run(&[
        "create",
        "configmap",
        "late",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("because it is being terminated"),
        "{}",
        refused.stderr
    );
    let system = k.run(&["delete", "namespace", "kube-system", "--wait=false"]);
    assert_eq!(system.code, 1);
    assert!(system.stderr.contains("Forbidden"), "{}", system.stderr);
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "doomed",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    k.ok(&["wait", "--for=delete", "namespace/doomed", "--timeout=60s"]);
}

#[test]
fn server_side_apply_and_table_watch() {
    let berth = Berth::start();
    let k = berth.kubectl();
    let run = k.run_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("deployment.apps/web serverside-applied"),
        "{run:?}"
    );
    let run = k.run_stdin(
        &["apply", "--server-side", "-f", "-"],
        &DEPLOYMENT.replace("replicas: 1", "replicas: 2"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );

    // `get -w` in table form: each event is a one-row Table.
    let mut watcher = k
        .command(&["get", "deploy", "-w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    k.ok(&["scale", "deploy/web", "--replicas=5"]);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let _ = watcher.kill();
    let output = watcher.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY"),
        "{text}"
    );
    assert!(lines.len() >= 3, "the initial row and the change: {text}");
    assert!(
        lines.iter().skip(1).all(|l| l.starts_with("web ")),
        "{text}"
    );
}
