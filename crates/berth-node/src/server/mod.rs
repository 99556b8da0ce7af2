//! The node agent's HTTPS server: the streaming endpoints the API server proxies `kubectl logs`,
//! `exec`, `attach` and `port-forward` to, named and shaped as the kubelet's.
//!
//! | path | what |
//! |---|---|
//! | `GET /containerLogs/{ns}/{pod}/{container}?follow=&previous=&tailLines=&sinceSeconds=&sinceTime=&timestamps=&limitBytes=` | the log, `text/plain`, streamed ([`crate::logs`]) |
//! | `GET\|POST /exec/{ns}/{pod}/{container}?command=..&command=..&stdin=&stdout=&stderr=&tty=` | WebSocket `v5.channel.k8s.io`/`v4.channel.k8s.io` ([`exec`]) |
//! | `GET\|POST /attach/{ns}/{pod}/{container}?stdin=&stdout=&stderr=&tty=` | the same framing, to the container's main process |
//! | `GET\|POST /portForward/{ns}/{pod}[?ports=..]` | WebSocket `SPDY/3.1+portforward.k8s.io` (kubectl), WebSocket `v4.channel.k8s.io` (kube-rs), or an `Upgrade: SPDY/3.1` connection ([`portforward`]) |
//!
//! A pod's uid may follow its name (`/exec/{ns}/{pod}/{uid}/{container}`), as the kubelet
//! allows; it is ignored. Every request needs `Authorization: Bearer <token>` with the token the
//! server was configured with, or gets 401: only the API server may talk to the agent.
//!
//! The server knows nothing about containers: it asks a [`PodStreams`] for a log file, a process
//! or a socket, and only moves bytes. Errors are `metav1.Status` JSON with the
//! [`StreamError`]'s code, which the API server passes through to the client.

mod exec;
mod portforward;
mod query;
mod spdy_exec;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use crate::logs::LogSource;
use crate::logs::{self, LogOptions};
use query::Query;

/// What the agent's streaming endpoints need from the pods: implemented by the agent core over
/// the container runtime, and by a fake in tests.
pub trait PodStreams: Send + Sync + 'static {
    /// Where a container's CRI-format log lives and whether the container still runs.
    ///
    /// `previous` asks for the container's previous instance (the one before its last restart):
    /// its file, with `running` false. [`LogSource::new`] adds the rotated `<path>.1` when it
    /// exists; [`LogSource::finished`] is for instances that have stopped. Not found pods or
    /// containers are [`StreamError::NotFound`]; `previous` without an earlier instance is
    /// [`StreamError::BadRequest`] (kubelet: `previous terminated container "c" in pod "p" not
    /// found`).
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogSource, StreamError>;

    /// Starts `request.command` in the running container. The session's streams are the ones
    /// `request` asks for (`None` otherwise); with `tty`, stdout carries the terminal's output
    /// and there is no stderr. Dropping the session (the client went away) closes stdin; the
    /// implementation decides whether the process is also killed.
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        request: ExecRequest,
    ) -> BoxFuture<'static, Result<ExecSession, StreamError>>;

    /// Connects to the running container's main process: its output from now on, its stdin if
    /// it was started with `stdin: true`, and resizes of its terminal if it has one. `exit`
    /// resolves when the container stops.
    fn attach(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        request: AttachRequest,
    ) -> BoxFuture<'static, Result<ExecSession, StreamError>>;

    /// Opens a TCP connection to `port` on the pod's loopback (inside its network namespace).
    fn dial(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, StreamError>>;
}

/// An exec: which command, and which streams the client attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The command and its arguments (`command=` repeated in the query), never empty.
    pub command: Vec<String>,
    /// Allocate a terminal: stdout carries its output, there is no stderr, resizes arrive.
    pub tty: bool,
    /// The client sends input.
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr (never with `tty`).
    pub stderr: bool,
}

/// An attach: which streams the client attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachRequest {
    /// The container has a terminal (its spec's `tty`); the client asked for one.
    pub tty: bool,
    /// The client sends input (the container must have `stdin: true`).
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr.
    pub stderr: bool,
}

/// A terminal size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// A running exec or attach, as the server drives it.
pub struct ExecSession {
    /// The process's input; `None` when the client did not ask for it. The server shuts it
    /// down (then drops it) when the client closes its stdin.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// The process's output (the terminal's, with `tty`); read until end of file.
    pub stdout: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// The process's error output; `None` with `tty`.
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Where terminal size changes go (`tty` only). The server never blocks on it: a resize
    /// that does not fit is dropped.
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// Resolves with the exit code when the process ends (for attach: when the container
    /// stops). The server then sends what is left of stdout and stderr, the outcome (exec:
    /// `Success` for 0, else `NonZeroExitCode` with the code, which kubectl exits with; attach:
    /// always `Success`), and closes the connection.
    pub exit: BoxFuture<'static, i32>,
}

/// Why a streaming request failed before anything was streamed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// 404: no such pod or container on this node. The text is the message.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request cannot be served as asked (container not running, no previous
    /// instance, stdin not enabled, bad parameters).
    #[error("{0}")]
    BadRequest(String),
    /// 500: anything else (the runtime failed).
    #[error("{0}")]
    Internal(String),
}

impl StreamError {
    /// The HTTP status code.
    pub fn status_code(&self) -> u16 {
        match self {
            StreamError::NotFound(_) => 404,
            StreamError::BadRequest(_) => 400,
            StreamError::Internal(_) => 500,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            StreamError::NotFound(_) => "NotFound",
            StreamError::BadRequest(_) => "BadRequest",
            StreamError::Internal(_) => "InternalError",
        }
    }
}

/// How the agent's server is set up.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen (kubelet's port is 10250; tests use `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The serving certificate chain, PEM (berth-apiserver's `tls::Pki::ensure_agent` makes
    /// one signed by the cluster CA, which the API server trusts).
    pub cert_pem: String,
    /// The certificate's private key, PEM.
    pub key_pem: String,
    /// The bearer token every request must carry (berth-apiserver writes it beside the
    /// certificate).
    pub token: String,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The certificate or key did not load.
    #[error("agent TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound agent server; [`AgentServer::serve`] runs it.
pub struct AgentServer {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
}

struct State {
    token: String,
    streams: Arc<dyn PodStreams>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

impl AgentServer {
    /// Loads the certificate and binds the listening socket.
    pub async fn bind(
        config: ServerConfig,
        streams: Arc<dyn PodStreams>,
    ) -> Result<Self, ServerError> {
        let tls = tls_config(&config.cert_pem, &config.key_pem)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(AgentServer {
            listener,
            tls: tokio_rustls::TlsAcceptor::from(tls),
            state: Arc::new(State {
                token: config.token,
                streams,
            }),
        })
    }

    /// The bound address (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` resolves. Connections in flight (a followed log, an exec) end
    /// with it: each connection task stops when the server's task is dropped or returns.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "agent accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let tls = self.tls.clone();
            let state = self.state.clone();
            connections.spawn(async move {
                let stream = match tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    tls.accept(stream),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    _ => {
                        tracing::debug!(%peer, "agent TLS handshake failed");
                        return;
                    }
                };
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "agent connection ended with an error");
                }
            });
        }
        connections.shutdown().await;
    }
}

fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let bad = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&e))?;
    // HTTP/1.1 only: every streaming protocol here is an HTTP/1.1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A `metav1.Status` error response.
fn status_response(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &StreamError) -> Response<Body> {
    status_response(error.status_code(), error.reason(), &error.to_string())
}

fn bad_request(message: &str) -> Response<Body> {
    status_response(400, "BadRequest", message)
}

/// Compares the bearer token without leaking where it differs through timing.
fn authorized<B>(state: &State, request: &Request<B>) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), state.token.as_bytes());
    a.len() == b.len() && !b.is_empty() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Where a request goes, from its path.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'a> {
    Logs {
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    Exec {
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    Attach {
        namespace: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    PortForward {
        namespace: &'a str,
        pod: &'a str,
    },
}

fn route(path: &str) -> Option<Endpoint<'_>> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    Some(match segments.as_slice() {
        ["containerLogs", namespace, pod, container] => Endpoint::Logs {
            namespace,
            pod,
            container,
        },
        ["exec", namespace, pod, container] | ["exec", namespace, pod, _, container] => {
            Endpoint::Exec {
                namespace,
                pod,
                container,
            }
        }
        ["attach", namespace, pod, container] | ["attach", namespace, pod, _, container] => {
            Endpoint::Attach {
                namespace,
                pod,
                container,
            }
        }
        ["portForward", namespace, pod] | ["portForward", namespace, pod, _] => {
            Endpoint::PortForward { namespace, pod }
        }
        _ => return None,
    })
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    if !authorized(&state, &request) {
        return status_response(401, "Unauthorized", "Unauthorized");
    }
    let path = query::percent_decode(request.uri().path());
    let query = Query::parse(request.uri().query());
    let Some(endpoint) = route(&path) else {
        return status_response(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let method = request.method().clone();
    let allowed = match endpoint {
        Endpoint::Logs { .. } => method == http::Method::GET,
        _ => method == http::Method::GET || method == http::Method::POST,
    };
    if !allowed {
        return status_response(405, "MethodNotAllowed", "method not allowed");
    }
    match endpoint {
        Endpoint::Logs {
            namespace,
            pod,
            container,
        } => container_logs(&state, namespace, pod, container, &query),
        Endpoint::Exec {
            namespace,
            pod,
            container,
        } => exec::exec(&state, request, namespace, pod, container, &query).await,
        Endpoint::Attach {
            namespace,
            pod,
            container,
        } => exec::attach(&state, request, namespace, pod, container, &query).await,
        Endpoint::PortForward { namespace, pod } => {
            portforward::port_forward(&state, request, namespace, pod, &query)
        }
    }
}

fn container_logs(
    state: &State,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Response<Body> {
    let now = logs::now();
    let options = match LogOptions::from_query(query.pairs(), now) {
        Ok(options) => options,
        Err(e) => return bad_request(&e.0),
    };
    let source = match state
        .streams
        .logs(namespace, pod, container, options.previous)
    {
        Ok(source) => source,
        Err(e) => return error_response(&e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (namespace, pod, container) = (
        namespace.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    tokio::spawn(async move {
        if let Err(e) = logs::stream(source, options, tx).await {
            tracing::warn!(%namespace, %pod, %container, error = %e, "reading a container log failed");
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_kubelet_paths() {
        assert_eq!(
            route("/containerLogs/default/web/main"),
            Some(Endpoint::Logs {
                namespace: "default",
                pod: "web",
                container: "main"
            })
        );
        assert_eq!(
            route("/exec/default/web/uid-1/main"),
            Some(Endpoint::Exec {
                namespace: "default",
                pod: "web",
                container: "main"
            })
        );
        assert_eq!(
            route("/portForward/default/web"),
            Some(Endpoint::PortForward {
                namespace: "default",
                pod: "web"
            })
        );
        assert_eq!(route("/containerLogs/default/web"), None);
        assert_eq!(route("/pods"), None);
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        struct Nothing;
        impl PodStreams for Nothing {
            fn logs(&self, _: &str, _: &str, _: &str, _: bool) -> Result<LogSource, StreamError> {
                Err(StreamError::NotFound("no".into()))
            }
            fn exec(
                &self,
                _: &str,
                _: &str,
                _: &str,
                _: ExecRequest,
            ) -> BoxFuture<'static, Result<ExecSession, StreamError>> {
                Box::pin(async { Err(StreamError::NotFound("no".into())) })
            }
            fn attach(
                &self,
                _: &str,
                _: &str,
                _: &str,
                _: AttachRequest,
            ) -> BoxFuture<'static, Result<ExecSession, StreamError>> {
                Box::pin(async { Err(StreamError::NotFound("no".into())) })
            }
            fn dial(
                &self,
                _: &str,
                _: &str,
                _: u16,
            ) -> BoxFuture<'static, Result<tokio::net::TcpStream, StreamError>> {
                Box::pin(async { Err(StreamError::NotFound("no".into())) })
            }
        }
        let state = State {
            token: "secret".into(),
            streams: Arc::new(Nothing),
        };
        let request = |auth: Option<&str>| {
            let mut r = Request::builder().uri("/exec/a/b/c");
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            r.body(()).expect("request")
        };
        assert!(authorized(&state, &request(Some("Bearer secret"))));
        assert!(!authorized(&state, &request(Some("Bearer secreT"))));
        assert!(!authorized(&state, &request(Some("Bearer secret2"))));
        assert!(!authorized(&state, &request(Some("Basic secret"))));
        assert!(!authorized(&state, &request(None)));
    }
}
