//! Nodes that join: `berth token create|list|delete` against the real `berth up`, its bootstrap
//! tokens used by the real kubectl, and `berth agent` run on this same machine as a second node
//! (its own data dir, pod bridge, pod CIDR and image store) that registers, renews its Lease,
//! runs a pod and serves its logs through the API server.

mod common;
mod podkit;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Berth, eventually, kubectl_binary, unique_pod_network};
use podkit::{T, import_busybox, phase, pod_json, wait_pod};
use serde_json::Value;

fn berth_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_LOG", "warn")
        .output()
        .expect("run berth")
}

#[track_caller]
fn berth_ok(args: &[&str]) -> String {
    let output = berth_cli(args);
    assert!(
        output.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `berth token create` on `berth`'s data dir; returns the token (the first line) and all it
/// printed.
fn create_token(berth: &Berth, description: &str) -> (String, String) {
    let data = berth.data_dir();
    let out = berth_ok(&[
        "token",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--ttl",
        "1h",
        "--description",
        description,
    ]);
    let token = out.lines().next().unwrap_or_default().trim().to_string();
    (token, out)
}

/// kubectl with no kubeconfig credentials: only the server, the CA and `token`.
fn kubectl_with_token(berth: &Berth, dir: &Path, token: &str, args: &[&str]) -> Output {
    let empty = dir.join("empty.kubeconfig");
    std::fs::write(&empty, "").expect("write an empty kubeconfig");
    let ca = berth.data_dir().join("pki/ca.crt");
    Command::new(kubectl_binary())
        .arg("--kubeconfig")
        .arg(&empty)
        .arg("--server")
        .arg(berth.url())
        .arg("--certificate-authority")
        .arg(&ca)
        .arg("--token")
        .arg(token)
        .arg("--cache-dir")
        .arg(dir.join("kubectl-cache"))
        .args(args)
        .output()
        .expect("run kubectl")
}

/// The HTTP status the API server answers `GET /api/v1/nodes` with `token`.
fn status_with(berth: &Berth, token: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let raw = berth.raw_with(Some(format!("Bearer {token}"))).await;
        let reply = raw.get("/api/v1/nodes").await.expect("request");
        if reply.status == 401 {
            let status = reply.json();
            assert_eq!(status["kind"], "Status", "{status}");
            assert_eq!(status["reason"], "Unauthorized", "{status}");
        }
        reply.status
    })
}

#[test]
fn join_tokens_authenticate_until_deleted_or_expired() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = berth.data_dir();
    let (token, printed) = create_token(&berth, "for the test");
    let (id, secret) = token.split_once('.').expect("id.secret");
    assert_eq!((id.len(), secret.len()), (6, 16), "{printed}");
    assert!(
        printed.contains(&format!(
            "berth agent --server {} --token-file token --ca-file ca.crt",
            berth.url()
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&data.join("pki/ca.crt").display().to_string()),
        "{printed}"
    );

    // kubectl with only the token works.
    let nodes = kubectl_with_token(&berth, tmp.path(), &token, &["get", "nodes"]);
    assert!(
        nodes.status.success(),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    assert_eq!(status_with(&berth, &token), 200);

    // list shows the id, expiry and description, never the secret.
    let listed = berth_ok(&["token", "list", "--data-dir", data.to_str().unwrap()]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
    assert!(row.contains("for the test"), "{listed}");
    assert!(!listed.contains(secret), "the secret is listed: {listed}");

    // A wrong secret, a malformed token and an unknown id are refused.
    let wrong = format!("{id}.{}", "0".repeat(16));
    assert_eq!(status_with(&berth, &wrong), 401);
    assert_eq!(status_with(&berth, &token.to_uppercase()), 401);
    assert_eq!(status_with(&berth, &format!("{token}x")), 401);
    assert_eq!(status_with(&berth, "zzzzzz.zzzzzzzzzzzzzzzz"), 401);

    // Deleting revokes at once.
    let deleted = berth_ok(&["token", "delete", id, "--data-dir", data.to_str().unwrap()]);
    assert!(deleted.contains(id), "{deleted}");
    assert_eq!(status_with(&berth, &token), 401);
    let refused = kubectl_with_token(&berth, tmp.path(), &token, &["get", "nodes"]);
    assert!(!refused.status.success());
    let again = berth_cli(&["token", "delete", id, "--data-dir", data.to_str().unwrap()]);
    assert!(!again.status.success(), "deleting twice succeeded");

    // A token whose Secret has expired is refused; the same one with a later expiry works.
    let expiring = |expiration: &str| {
        format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{name: bootstrap-token-exp123, namespace: kube-system}}
type: bootstrap.kubernetes.io/token
stringData:
  token-id: exp123
  token-secret: 0123456789abcdef
  usage-bootstrap-authentication: "true"
  expiration: "{expiration}"
"#
        )
    };
    let kubectl = berth.kubectl();
    kubectl.apply(&expiring("2020-01-01T00:00:00Z"));
    assert_eq!(status_with(&berth, "exp123.0123456789abcdef"), 401);
    kubectl.apply(&expiring("2999-01-01T00:00:00Z"));
    assert_eq!(status_with(&berth, "exp123.0123456789abcdef"), 200);
    let listed = berth_ok(&["token", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(listed.contains("exp123"), "{listed}");
}

/// A running `berth agent`: killed (SIGTERM, then SIGKILL) when dropped.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn nft_table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_second_node_joins_with_a_token_runs_a_pod_and_serves_its_logs() {
    let berth = Berth::start();
    let kubectl = berth.kubectl();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (token, _) = create_token(&berth, "second node");
    // What the other machine is given: the token in a file and a copy of the CA.
    let token_file = common::write_file(tmp.path(), "token", &format!("{token}\n"));
    let ca_file: PathBuf = tmp.path().join("ca.crt");
    std::fs::copy(berth.data_dir().join("pki/ca.crt"), &ca_file).expect("copy the CA");

    // The second node's data dir, with its own image store; dropping it runs `berth down`
    // there (after the agent, declared later, is stopped).
    let second = Berth::unstarted(&["--store", "sqlite"]);
    let second_data = second.data_dir();
    std::fs::create_dir_all(&second_data).expect("second data dir");
    import_busybox(&second);
    let (bridge, cidr) = unique_pod_network();
    let service_cidr = arg_after(&berth.extra_args, "--service-cidr").to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("agent")
        .arg("--server")
        .arg(berth.url())
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(&ca_file)
        .args(["--node-name", "second", "--kubelet-port", "0"])
        .arg("--data-dir")
        .arg(&second_data)
        .args(["--pod-bridge", &bridge, "--cluster-cidr", &cidr])
        .args(["--service-cidr", &service_cidr])
        .env(
            "BERTH_LOG",
            std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start berth agent");
    let stdout = child.stdout.take().expect("stdout");
    let agent = AgentProcess(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let up = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("berth agent did not say it is up");
    assert!(up.starts_with("berth agent is up"), "{up}");

    // The Node registers with its own streaming port and goes Ready.
    let node = eventually("node second is Ready", T, || {
        let run = kubectl.run(&["get", "node", "second", "-o", "json"]);
        let node: Value = serde_json::from_str(&run.stdout).map_err(|_| run.stderr.clone())?;
        let ready = node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True");
        ready.then_some(node.clone()).ok_or(node.to_string())
    });
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(0);
    assert!(port != 0 && port != 10250, "{node}");
    assert!(
        node["status"]["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["address"] == "127.0.0.1")),
        "{node}"
    );

    // Its Lease is renewed.
    let renew_time = || {
        let run = kubectl.run(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "second",
            "-o",
            "json",
        ]);
        serde_json::from_str::<Value>(&run.stdout).unwrap_or(Value::Null)["spec"]["renewTime"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let first = renew_time();
    assert!(!first.is_empty(), "no lease for node second");
    eventually(
        "the lease of node second is renewed",
        Duration::from_secs(30),
        || {
            let now = renew_time();
            (now != first).then_some(()).ok_or(now)
        },
    );

    // A pod bound to it runs from its own image store, on its pod network, and its logs come
    // through the API server from its streaming server.
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: on-second}
spec:
  nodeName: second
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo hello from $(hostname); sleep 3600"]
"#,
    );
    let pod = wait_pod(&kubectl, "on-second", T, |p| phase(p) == "Running");
    let pod_ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    let prefix = cidr.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
    assert!(pod_ip.starts_with(&format!("{prefix}.")), "{pod}");
    let logs = eventually("the pod's logs", T, || {
        let run = kubectl.run(&["logs", "on-second"]);
        run.stdout
            .contains("hello from on-second")
            .then(|| run.stdout.clone())
            .ok_or(format!("{}{}", run.stdout, run.stderr))
    });
    assert!(logs.contains("hello from on-second"), "{logs}");
    assert!(link_exists(&bridge), "no bridge {bridge}");
    // Its service proxy runs: its table (named after its bridge) carries the Services.
    eventually("the second node's proxy rules", T, || {
        nft_table_exists(&bridge)
            .then_some(())
            .ok_or(format!("no nft table {bridge}"))
    });

    // Stopped, and `berth down` on its data dir removes its pod, bridge and rules.
    drop(agent);
    let down = berth_cli(&["down", "--data-dir", second_data.to_str().unwrap()]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!link_exists(&bridge), "bridge {bridge} is left");
    assert!(!nft_table_exists(&bridge), "nft table {bridge} is left");
    let _ = pod_json(&kubectl, "on-second");
}
