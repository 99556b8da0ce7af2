//! `kubectl logs`, `exec`, `attach` and `port-forward` (and kube-rs's exec and port-forward)
//! end to end: the real `berth up` proxies them to a node agent server running in this test
//! process, whose [`PodStreams`] is a fake: logs from CRI files the test writes, exec and attach
//! as host processes, and every pod port dialled to a local TCP echo server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_node::logs::LogSource;
use berth_node::server::{
    AgentServer, AttachRequest, ExecRequest, ExecSession, PodStreams, ServerConfig, StreamError,
};
use common::{Berth, Kubectl};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, AttachParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// The pod port whose dial fails (nothing listens), to see the error path.
const CLOSED_PORT: u16 = 81;

struct Fake {
    logs: PathBuf,
    running: watch::Receiver<bool>,
    echo_port: u16,
}

fn known(namespace: &str, pod: &str) -> Result<(), StreamError> {
    if namespace == "default" && (pod == "one" || pod == "two") {
        Ok(())
    } else {
        Err(StreamError::NotFound(format!(
            "pod {namespace}/{pod} not found"
        )))
    }
}

fn spawn_session(
    mut command: tokio::process::Command,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<ExecSession, StreamError> {
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    command
        .stdin(pipe(stdin))
        .stdout(pipe(stdout))
        .stderr(pipe(stderr))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| StreamError::Internal(e.to_string()))?;
    let boxed_read = |r: Option<Box<dyn AsyncRead + Send>>| r.map(Pin::from);
    Ok(ExecSession {
        stdin: child
            .stdin
            .take()
            .map(|s| Box::pin(s) as Pin<Box<dyn AsyncWrite + Send>>),
        stdout: boxed_read(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send>),
        ),
        stderr: boxed_read(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send>),
        ),
        resize: None,
        exit: Box::pin(async move {
            match child.wait().await {
                Ok(status) => status.code().unwrap_or(128),
                Err(_) => 1,
            }
        }),
    })
}

impl PodStreams for Fake {
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogSource, StreamError> {
        known(namespace, pod)?;
        if previous {
            return Ok(LogSource::finished(
                self.logs.join(format!("{pod}-{container}.previous.log")),
            ));
        }
        Ok(LogSource::new(
            self.logs.join(format!("{pod}-{container}.log")),
            self.running.clone(),
        ))
    }

    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        _container: &str,
        request: ExecRequest,
    ) -> BoxFuture<'static, Result<ExecSession, StreamError>> {
        let known = known(namespace, pod);
        Box::pin(async move {
            known?;
            let mut command = if request.tty {
                // A terminal for the command: script(1) runs it on a pty of its own.
                let mut c = tokio::process::Command::new("script");
                c.args(["-q", "-e", "-c", &shell_join(&request.command), "/dev/null"]);
                c
            } else {
                let mut c = tokio::process::Command::new(&request.command[0]);
                c.args(&request.command[1..]);
                c
            };
            command.env("TERM", "dumb");
            spawn_session(command, request.stdin, request.stdout, request.stderr)
        })
    }

    fn attach(
        &self,
        namespace: &str,
        pod: &str,
        _container: &str,
        request: AttachRequest,
    ) -> BoxFuture<'static, Result<ExecSession, StreamError>> {
        let known = known(namespace, pod);
        Box::pin(async move {
            known?;
            // The "main process": greets, echoes its input, and stops when the input ends.
            let mut command = tokio::process::Command::new("sh");
            command.args([
                "-c",
                "echo attached; while read l; do echo \"got $l\"; done; echo bye",
            ]);
            spawn_session(command, request.stdin, request.stdout, request.stderr)
        })
    }

    fn dial(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, StreamError>> {
        let known = known(namespace, pod);
        let echo = self.echo_port;
        Box::pin(async move {
            known?;
            let target = if port == CLOSED_PORT {
                // Bound and closed again: nothing listens there.
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            } else {
                echo
            };
            tokio::net::TcpStream::connect(("127.0.0.1", target))
                .await
                .map_err(|e| StreamError::Internal(e.to_string()))
        })
    }
}

fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// berth, a fake agent registered as node `fake-node`, and the pods `one` (container `main`),
/// `two` (`main`, `sidecar`, init container `setup`), both bound to it and Running, and
/// `pending` (not bound).
struct Cluster {
    berth: Berth,
    runtime: tokio::runtime::Runtime,
    logs: tempfile::TempDir,
    running: watch::Sender<bool>,
    agent_port: u16,
    stop_agent: Option<tokio::sync::oneshot::Sender<()>>,
}

const LOG: &str = "\
2024-05-01T10:00:00.1Z stdout F first line
2024-05-01T10:00:01Z stderr F second line
2024-05-01T10:00:02Z stdout P thi
2024-05-01T10:00:03Z stdout F rd line
";

impl Cluster {
    fn start() -> Cluster {
        let berth = Berth::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let logs = tempfile::tempdir().expect("tempdir");
        std::fs::write(logs.path().join("one-main.log"), LOG).expect("write log");
        std::fs::write(
            logs.path().join("one-main.previous.log"),
            "2024-05-01T09:00:00Z stdout F from before the restart\n",
        )
        .expect("write log");
        std::fs::write(
            logs.path().join("two-sidecar.log"),
            "2024-05-01T10:00:00Z stdout F sidecar says hi\n",
        )
        .expect("write log");
        let (running_tx, running) = watch::channel(true);
        let pki = berth.data_dir().join("pki");
        let read = |name: &str| std::fs::read_to_string(pki.join(name)).expect("agent pki file");
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert_pem: read("agent.crt"),
            key_pem: read("agent.key"),
            token: read("agent.token").trim().to_string(),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let logs_dir = logs.path().to_path_buf();
        let agent_port = runtime.block_on(async {
            let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("echo");
            let echo_port = echo.local_addr().expect("addr").port();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = echo.accept().await {
                    tokio::spawn(async move {
                        let (mut r, mut w) = socket.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
            let fake = Fake {
                logs: logs_dir,
                running,
                echo_port,
            };
            let server = AgentServer::bind(config, Arc::new(fake))
                .await
                .expect("agent");
            let port = server.local_addr().port();
            tokio::spawn(server.serve(async {
                let _ = stop_rx.await;
            }));
            port
        });
        let cluster = Cluster {
            berth,
            runtime,
            logs,
            running: running_tx,
            agent_port,
            stop_agent: Some(stop_tx),
        };
        cluster.register();
        cluster
    }

    fn register(&self) {
        let berth = &self.berth;
        let port = self.agent_port;
        self.runtime.block_on(async {
            let client = berth.client().await;
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": "fake-node"}}))
                        .expect("node"),
                )
                .await
                .expect("create node");
            let status = json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "fake-node"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }});
            nodes
                .patch_status("fake-node", &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("node status");
            let pods: Api<Pod> = Api::namespaced(client, "default");
            let pod = |name: &str, node: Option<&str>, spec: serde_json::Value| {
                let mut spec = spec;
                if let Some(node) = node {
                    spec["nodeName"] = json!(node);
                }
                serde_json::from_value::<Pod>(json!({"metadata": {"name": name}, "spec": spec}))
                    .expect("pod")
            };
            for p in [
                pod(
                    "one",
                    Some("fake-node"),
                    json!({"containers": [{"name": "main", "image": "busybox", "stdin": true}]}),
                ),
                pod(
                    "two",
                    Some("fake-node"),
                    json!({
                        "initContainers": [{"name": "setup", "image": "busybox"}],
                        "containers": [{"name": "main", "image": "busybox"}, {"name": "sidecar", "image": "busybox"}],
                    }),
                ),
                pod(
                    "pending",
                    None,
                    json!({"containers": [{"name": "main", "image": "busybox"}], "nodeSelector": {"nowhere": "true"}}),
                ),
            ] {
                let name = p.metadata.name.clone().expect("name");
                pods.create(&PostParams::default(), &p)
                    .await
                    .expect("create pod");
                if name != "pending" {
                    let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}});
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .expect("pod status");
                }
            }
        });
    }

    fn kubectl(&self) -> Kubectl {
        self.berth.kubectl()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.path().join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_agent.take() {
            let _ = stop.send(());
        }
    }
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log")
        .write_all(text.as_bytes())
        .expect("append");
}

/// A child process that is killed when the test lets go of it, pass or fail.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kubectl_logs() {
    let cluster = Cluster::start();
    let kubectl = cluster.kubectl();
    assert_eq!(
        kubectl.ok(&["logs", "pod/one"]),
        "first line\nsecond line\nthird line\n"
    );
    assert_eq!(
        kubectl.ok(&["logs", "pod/one", "--tail=2"]),
        "second line\nthird line\n"
    );
    assert_eq!(
        kubectl.ok(&["logs", "pod/one", "--timestamps", "--tail=2"]),
        "2024-05-01T10:00:01Z second line\n2024-05-01T10:00:02Z third line\n"
    );
    assert_eq!(kubectl.ok(&["logs", "pod/one", "--limit-bytes=5"]), "first");
    assert_eq!(
        kubectl.ok(&["logs", "pod/one", "--previous"]),
        "from before the restart\n"
    );
    // Logs are from 2024: nothing is newer than an hour.
    assert_eq!(kubectl.ok(&["logs", "pod/one", "--since=1h"]), "");
    assert_eq!(
        kubectl.ok(&["logs", "pod/two", "-c", "sidecar"]),
        "sidecar says hi\n"
    );

    // -f: what is there, then appended lines as they come; kubectl exits 0 once the container
    // stops and the file is drained.
    let mut child = Killed(
        kubectl
            .command(&["logs", "-f", "pod/one", "--tail=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl logs -f"),
    );
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "third line\n");
    let path = cluster.log_path("one-main.log");
    append(
        &path,
        "2024-05-01T10:00:04Z stdout F appended while following\n",
    );
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "appended while following\n");
    append(&path, "2024-05-01T10:00:05Z stdout F last words\n");
    let _ = cluster.running.send(false);
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read to end");
    assert_eq!(rest, "last words\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "kubectl logs -f did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "kubectl logs -f: {status}");
}

#[test]
fn kubectl_exec_and_attach() {
    let cluster = Cluster::start();
    let kubectl = cluster.kubectl();
    let run = kubectl.run(&[
        "exec",
        "pod/one",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "out\n");
    assert!(run.stderr.starts_with("err\n"), "{run:?}");
    assert!(
        run.stderr.contains("command terminated with exit code 3"),
        "{run:?}"
    );
    assert_eq!(kubectl.ok(&["exec", "pod/one", "--", "echo", "hi"]), "hi\n");

    // stdin, ended by the v5 close message. kubectl falls back to SPDY when the WebSocket
    // upgrade fails, so its log must show that the WebSocket was what served it.
    let run = kubectl.run_stdin(
        &["-v=7", "exec", "-i", "pod/one", "--", "tr", "a-z", "A-Z"],
        "hello\nworld\n",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "HELLO\nWORLD\n"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("The subprotocol is v5.channel.k8s.io")
            && !run.stderr.to_lowercase().contains("fallback"),
        "{}",
        run.stderr
    );

    // A container of a multi-container pod, picked with -c.
    assert_eq!(
        kubectl.ok(&["exec", "pod/two", "-c", "sidecar", "--", "echo", "side"]),
        "side\n"
    );

    // -it: kubectl needs a terminal of its own to ask for one, so script(1) gives it one.
    let run = kubectl_in_pty(
        &kubectl,
        "exec -it pod/one -- sh -c 'test -t 0 && test -t 1 && echo on-a-tty'",
    );
    assert!(run.contains("on-a-tty"), "{run:?}");

    // attach -i: the main process's output, our input to it.
    let run = kubectl.run_stdin(&["attach", "-i", "pod/one", "-c", "main"], "ping\n");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("attached\n") && run.stdout.contains("got ping\n"),
        "{run:?}"
    );
}

#[test]
fn kubectl_exec_over_spdy() {
    let cluster = Cluster::start();
    let kubectl = cluster.kubectl();
    // What kubectl before 1.30 speaks, and what newer ones fall back to.
    let spdy = |args: &[&str], stdin: &str| {
        let mut command = kubectl.command(args);
        command
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("kubectl output");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = spdy(
        &[
            "exec",
            "pod/one",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        "",
    );
    assert_eq!((code, stdout.as_str()), (3, "out\n"), "{stderr}");
    assert!(stderr.starts_with("err\n"), "{stderr}");
    let (code, stdout, stderr) = spdy(
        &["exec", "-i", "pod/one", "--", "tr", "a-z", "A-Z"],
        "spdy\n",
    );
    assert_eq!((code, stdout.as_str()), (0, "SPDY\n"), "{stderr}");

    // kubectl 1.29 speaks only SPDY for exec.
    let old = PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.29");
    if old.exists() {
        let kubectl = Kubectl {
            binary: old,
            ..cluster.kubectl()
        };
        let run = kubectl.run(&["exec", "pod/one", "--", "sh", "-c", "echo old; exit 4"]);
        assert_eq!((run.code, run.stdout.as_str()), (4, "old\n"), "{run:?}");
    }
}

/// Runs `kubectl <args>` inside script(1), so that its stdin and stdout are a terminal; returns
/// what the terminal showed.
fn kubectl_in_pty(kubectl: &Kubectl, args: &str) -> String {
    let line = format!(
        "{} --kubeconfig {} --cache-dir {} {args}",
        kubectl.binary.display(),
        kubectl.kubeconfig.display(),
        kubectl.cache.display()
    );
    let mut child = Killed(
        std::process::Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("KUBECONFIG")
            .spawn()
            .expect("script"),
    );
    let mut out = String::new();
    let mut stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "kubectl in a pty did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Our end of script's input stays open until here, so script does not stop early.
    drop(child.0.stdin.take());
    reader.join().expect("reader")
}

/// A running `kubectl -v=7 port-forward pod/one <target>`: the local port it forwards, and
/// its log (stderr), read all along so that kubectl never blocks on a full pipe.
struct PortForward {
    child: Killed,
    port: u16,
    log: std::thread::JoinHandle<String>,
}

impl PortForward {
    /// Starts it with `env` set and waits until it listens.
    fn start(kubectl: &Kubectl, target: &str, env: &[(&str, &str)]) -> PortForward {
        let mut command = kubectl.command(&["-v=7", "port-forward", "pod/one", target]);
        command
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Killed(command.spawn().expect("kubectl port-forward"));
        let mut stderr = child.0.stderr.take().expect("stderr");
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
            log
        });
        let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        // "Forwarding from 127.0.0.1:NNNN -> 80"
        let port = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        PortForward { child, port, log }
    }

    /// Stops kubectl and returns its log.
    fn stop(mut self) -> String {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.log.join().expect("log reader")
    }
}

fn echo_round_trip(port: u16, message: &[u8]) {
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    socket.write_all(message).expect("write");
    let mut got = vec![0; message.len()];
    socket.read_exact(&mut got).expect("echo");
    assert_eq!(got, message);
}

#[test]
fn kubectl_port_forward() {
    let cluster = Cluster::start();
    let kubectl = cluster.kubectl();
    let forward = PortForward::start(&kubectl, ":80", &[]);
    let port = forward.port;
    echo_round_trip(port, b"hello through SPDY in a WebSocket");
    // Two connections at once, each a pair of SPDY streams of the same session.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let threads: Vec<_> = [big.clone(), b"second".to_vec()]
        .into_iter()
        .map(|message| std::thread::spawn(move || echo_round_trip(port, &message)))
        .collect();
    for t in threads {
        t.join().expect("round trip");
    }
    echo_round_trip(port, b"and again");
    // kubectl falls back to plain SPDY when the WebSocket upgrade fails: it must not have.
    let log = forward.stop();
    assert!(
        log.contains("Sec-Websocket-Protocol: SPDY/3.1+portforward.k8s.io")
            && !log.to_lowercase().contains("fallback"),
        "{log}"
    );

    // A port nothing listens on: kubectl reports the agent's error and the connection closes.
    let forward = PortForward::start(&kubectl, &format!(":{CLOSED_PORT}"), &[]);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", forward.port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert_eq!(socket.read(&mut buf).expect("closed, not timed out"), 0);
    drop(socket);
    let log = forward.stop();
    assert!(
        log.contains(&format!("error forwarding port {CLOSED_PORT} to pod one")),
        "{log}"
    );
}

#[test]
fn kubectl_port_forward_over_plain_spdy() {
    let cluster = Cluster::start();
    let forward = PortForward::start(
        &cluster.kubectl(),
        ":80",
        &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")],
    );
    echo_round_trip(forward.port, b"hello over an Upgrade: SPDY/3.1 connection");
    let log = forward.stop();
    assert!(
        log.contains("X-Stream-Protocol-Version: portforward.k8s.io"),
        "{log}"
    );
}

#[test]
fn kube_rs_exec_and_port_forward() {
    let cluster = Cluster::start();
    cluster.runtime.block_on(async {
        let pods: Api<Pod> = Api::namespaced(cluster.berth.client().await, "default");

        let mut forwarder = pods
            .portforward("one", &[80, 8080])
            .await
            .expect("portforward");
        for port in [80, 8080] {
            let mut stream = forwarder.take_stream(port).expect("stream");
            let message = format!("hello port {port}");
            stream.write_all(message.as_bytes()).await.expect("write");
            let mut got = vec![0; message.len()];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
                .await
                .expect("in time")
                .expect("read");
            assert_eq!(got, message.as_bytes());
        }
        forwarder.abort();

        let params = AttachParams::default().stdout(true).stderr(true);
        let mut process = pods
            .exec("one", ["sh", "-c", "echo from kube-rs; exit 7"], &params)
            .await
            .expect("exec");
        let mut stdout = process.stdout().expect("stdout");
        let status = process.take_status().expect("status");
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "from kube-rs\n");
        let status = status.await.expect("a status");
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        let code = status
            .details
            .and_then(|d| d.causes)
            .and_then(|c| {
                c.into_iter()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
            })
            .and_then(|c| c.message);
        assert_eq!(code.as_deref(), Some("7"));
        process.join().await.expect("join");

        let params = AttachParams::default()
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let mut process = pods.exec("one", ["cat"], &params).await.expect("exec");
        let mut stdin = process.stdin().expect("stdin");
        let mut stdout = process.stdout().expect("stdout");
        stdin.write_all(b"echoed by cat\n").await.expect("write");
        let mut got = vec![0; 14];
        stdout.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"echoed by cat\n");
        drop(stdin);
        process.abort();
    });
}

#[test]
fn errors() {
    let cluster = Cluster::start();
    let kubectl = cluster.kubectl();
    let run = kubectl.run(&["logs", "pod/nope"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("(NotFound): pods \"nope\" not found"),
        "{run:?}"
    );
    let run = kubectl.run(&["exec", "pod/pending", "--", "true"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("pod pending does not have a host assigned"),
        "{run:?}"
    );
    let run = kubectl.run(&["logs", "pod/one", "-c", "nope"]);
    assert!(
        run.stderr
            .contains("container nope is not valid for pod one"),
        "{run:?}"
    );
    cluster.runtime.block_on(async {
        let raw = cluster.berth.raw().await;
        let reply = raw
            .get("/api/v1/namespaces/default/pods/two/log")
            .await
            .expect("request");
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert_eq!(
            reply.json()["message"],
            "a container name must be specified for pod two, choose one of: [setup main sidecar]"
        );
        let reply = raw
            .get("/api/v1/namespaces/default/pods/pending/portforward")
            .await
            .expect("request");
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.json()["message"],
            "pod pending does not have a host assigned"
        );
        // A node whose agent does not answer: a clear error, not a hang.
        let client = cluster.berth.client().await;
        let nodes: Api<Node> = Api::all(client.clone());
        let dead_port = common::free_port();
        nodes
            .patch_status(
                "fake-node",
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": dead_port}}}})),
            )
            .await
            .expect("patch");
        let reply = raw
            .get("/api/v1/namespaces/default/pods/one/log")
            .await
            .expect("request");
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains("error dialing backend"),
            "{}",
            reply.text()
        );
    });

    // The agent itself: 401 without its token, even with the admin token.
    let ca = cluster.berth.data_dir().join("pki/ca.crt");
    let url = format!(
        "https://127.0.0.1:{}/containerLogs/default/one/main",
        cluster.agent_port
    );
    let curl = |auth: Option<String>| {
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .arg(&url);
        if let Some(auth) = auth {
            c.args(["-H", &auth]);
        }
        String::from_utf8(c.output().expect("curl").stdout).expect("utf8")
    };
    assert_eq!(curl(None), "401");
    assert_eq!(
        curl(Some(format!(
            "Authorization: Bearer {}",
            cluster.berth.token()
        ))),
        "401"
    );
    let agent_token =
        std::fs::read_to_string(cluster.berth.data_dir().join("pki/agent.token")).expect("token");
    assert_eq!(
        curl(Some(format!(
            "Authorization: Bearer {}",
            agent_token.trim()
        ))),
        "200"
    );
}
