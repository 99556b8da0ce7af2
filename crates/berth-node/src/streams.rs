//! The agent's side of `kubectl logs`, `exec`, `attach` and `port-forward`: finds the pod's
//! containers on this machine for the streaming server ([`crate::server`]).
//!
//! A container's current instance is the highest attempt with a log file under the pod's
//! directory (see [`crate::sandbox`]); its runtime id is `<uid>-<name>-<attempt>`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::ContainerState;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, watch};

use crate::Context;
use crate::logs::{LogSource, LogStream, parse_record};
use crate::sandbox::{PodDir, container_id};
use crate::server::{
    AttachRequest, ExecRequest, ExecSession, PodStreams, StreamError, TerminalSize,
};

/// How often a followed log checks whether its container still runs.
const RUNNING_POLL: Duration = Duration::from_millis(200);

pub struct AgentStreams {
    pub ctx: Arc<Context>,
    pub pods: Store<Pod>,
}

/// One container instance of a pod on this machine.
struct Instance {
    id: String,
    log: PathBuf,
}

impl AgentStreams {
    fn pod(&self, namespace: &str, name: &str) -> Result<Arc<Pod>, StreamError> {
        self.pods
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or_else(|| StreamError::NotFound(format!("pod \"{name}\" not found on this node")))
    }

    /// The attempts of `container` with a log, newest first.
    fn instances(&self, pod: &Pod, container: &str) -> Vec<Instance> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = PodDir::new(&self.ctx.pods_root, &uid);
        let logs = dir.root().join("logs").join(container);
        let mut attempts: Vec<u32> = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        attempts.sort_unstable_by(|a, b| b.cmp(a));
        attempts
            .into_iter()
            .map(|a| Instance {
                id: container_id(&uid, container, a),
                log: dir.log(container, a),
            })
            .collect()
    }

    fn is_running(&self, id: &str) -> bool {
        matches!(
            self.ctx.runtime.state(id),
            Ok(ContainerState::Running { .. } | ContainerState::Created)
        )
    }

    /// A receiver that turns false once container `id` is no longer running.
    fn running_watch(&self, id: &str) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(self.is_running(id));
        let runtime = self.ctx.runtime.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(RUNNING_POLL) => {}
                }
                let running = matches!(
                    runtime.state(&id),
                    Ok(ContainerState::Running { .. } | ContainerState::Created)
                );
                if !running {
                    let _ = tx.send(false);
                    return;
                }
            }
        });
        rx
    }

    fn running_instance(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Instance, StreamError> {
        let pod_obj = self.pod(namespace, pod)?;
        let current = self
            .instances(&pod_obj, container)
            .into_iter()
            .next()
            .filter(|i| self.is_running(&i.id))
            .ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "container {container} is not running in pod {pod}"
                ))
            })?;
        Ok(current)
    }
}

impl PodStreams for AgentStreams {
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogSource, StreamError> {
        let pod_obj = self.pod(namespace, pod)?;
        let instances = self.instances(&pod_obj, container);
        if previous {
            return instances
                .into_iter()
                .nth(1)
                .map(|i| LogSource::finished(i.log))
                .ok_or_else(|| {
                    StreamError::BadRequest(format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ))
                });
        }
        let current = instances.into_iter().next().ok_or_else(|| {
            StreamError::BadRequest(format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ))
        })?;
        let running = self.running_watch(&current.id);
        Ok(LogSource::new(current.log, running))
    }

    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        request: ExecRequest,
    ) -> BoxFuture<'static, Result<ExecSession, StreamError>> {
        let instance = self.running_instance(namespace, pod, container);
        let runtime = self.ctx.runtime.clone();
        Box::pin(async move {
            let instance = instance?;
            let mut process = runtime
                .exec(
                    &instance.id,
                    berth_runtime::ExecRequest {
                        argv: request.command,
                        tty: request.tty,
                        stdin: request.stdin,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| StreamError::Internal(e.to_string()))?;
            let stdin = process.stdin.take().map(stdin_writer);
            let resize = process.resizer().map(|resizer| {
                let (tx, mut rx) = mpsc::channel::<TerminalSize>(8);
                tokio::spawn(async move {
                    while let Some(size) = rx.recv().await {
                        let _ = resizer.resize(size.width, size.height).await;
                    }
                });
                tx
            });
            let stdout = process
                .stdout
                .take()
                .filter(|_| request.stdout || request.tty)
                .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>);
            let stderr = process
                .stderr
                .take()
                .filter(|_| request.stderr && !request.tty)
                .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>);
            let exit = Box::pin(async move { process.wait().await.unwrap_or(1) });
            Ok(ExecSession {
                stdin,
                stdout,
                stderr,
                resize,
                exit,
            })
        })
    }

    fn attach(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        request: AttachRequest,
    ) -> BoxFuture<'static, Result<ExecSession, StreamError>> {
        let instance = self.running_instance(namespace, pod, container);
        let running = instance.as_ref().ok().map(|i| self.running_watch(&i.id));
        let stdin_path = instance
            .as_ref()
            .ok()
            .map(|i| self.ctx.runtime.stdin_path(&i.id));
        Box::pin(async move {
            let instance = instance?;
            let mut running = running.ok_or_else(|| StreamError::Internal("no watch".into()))?;
            let (out_w, out_r) = tokio::io::duplex(64 * 1024);
            let (err_w, err_r) = tokio::io::duplex(64 * 1024);
            tokio::spawn(follow_log(
                instance.log.clone(),
                out_w,
                err_w,
                running.clone(),
            ));
            let stdin = match (request.stdin, stdin_path) {
                (true, Some(path)) if path.exists() => {
                    let fifo = tokio::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .await
                        .map_err(|e| StreamError::Internal(format!("opening stdin: {e}")))?;
                    Some(Box::pin(fifo) as Pin<Box<dyn AsyncWrite + Send>>)
                }
                _ => None,
            };
            let exit = Box::pin(async move {
                let _ = running.wait_for(|r| !*r).await;
                0
            });
            Ok(ExecSession {
                stdin,
                stdout: request
                    .stdout
                    .then(|| Box::pin(out_r) as Pin<Box<dyn AsyncRead + Send>>),
                stderr: (request.stderr && !request.tty)
                    .then(|| Box::pin(err_r) as Pin<Box<dyn AsyncRead + Send>>),
                resize: None,
                exit,
            })
        })
    }

    fn dial(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, StreamError>> {
        // The pod's own address (reachable from the host over the pod network's bridge), or
        // the node's for a hostNetwork pod or before the pod reported one.
        let found = self.pod(namespace, pod).map(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| self.ctx.node_ip.clone())
        });
        Box::pin(async move {
            let address = format!("{}:{port}", found?);
            tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| StreamError::Internal(format!("dial {address}: {e}")))
        })
    }
}

/// An AsyncWrite whose bytes go to the exec's stdin, closing it at EOF.
fn stdin_writer(mut stdin: berth_runtime::ExecStdin) -> Pin<Box<dyn AsyncWrite + Send>> {
    let (writer, mut reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = stdin.close().await;
    });
    Box::pin(writer)
}

/// Copies what the container writes from now on (its CRI log, split back into stdout and
/// stderr) until it stops.
async fn follow_log(
    path: PathBuf,
    mut out: tokio::io::DuplexStream,
    mut err: tokio::io::DuplexStream,
    running: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return;
    };
    let _ = file.seek(std::io::SeekFrom::End(0)).await;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = file.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            if !*running.borrow() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(record) = parse_record(&line) else {
                continue;
            };
            let mut bytes = record.content.to_vec();
            if !record.partial {
                bytes.push(b'\n');
            }
            let target = match record.stream {
                LogStream::Stderr => &mut err,
                LogStream::Stdout => &mut out,
            };
            if target.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}
