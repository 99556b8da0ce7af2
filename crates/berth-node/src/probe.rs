//! Container probes (startup, liveness, readiness), as kubelet runs them.
//!
//! This module owns three layers:
//! - the probers: [`run_probe`] runs one `exec` (through [`ExecProber`], which the agent
//!   implements with the runtime's exec), `httpGet` (HTTP, or HTTPS without certificate
//!   verification as kubelet does; 200–399 is success; same-host redirects are followed),
//!   `tcpSocket` (a connect within the timeout) or `grpc` (not supported: always a failure
//!   with a message) and returns a [`ProbeOutcome`] whose text is kubelet's;
//! - the state machine: [`ProbeWorker`] turns outcomes into a published result with the
//!   success/failure thresholds, and [`ContainerProbes`] schedules a container's probes
//!   (initial delay, period, startup gating liveness and readiness) against a clock the caller
//!   passes in, so it is tested without waiting;
//! - the runner: [`spawn_probes`] drives a [`ContainerProbes`] on tokio and sends
//!   [`ProbeEvent`]s (every failure, for `Unhealthy` events, and every change of the
//!   published results, for status and restarts) until it is dropped.
//!
//! A runner belongs to one container instance: when the container restarts the agent drops it
//! and spawns a new one, which is how kubelet's per-container-ID worker state resets.
//!
//! Timing differs from kubelet in one way: kubelet ticks every period from when the worker
//! starts and skips ticks inside the initial delay, so the first probe comes at the first tick
//! after the delay; here the first probe runs when the delay ends.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// kubelet's defaults for unset probe fields.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// How much of a response body or command output a probe keeps (kubelet's 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;
/// The User-Agent kubelet sends (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.33";
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpScheme {
    Http,
    Https,
}

/// What a probe does, with named ports already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Exec {
        command: Vec<String>,
    },
    HttpGet {
        scheme: HttpScheme,
        /// The probe's `host`; `None` means the pod's address the runner was given.
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    TcpSocket {
        host: Option<String>,
        port: u16,
    },
    Grpc {
        port: i32,
    },
    /// A probe that cannot run (no handler, a named port the container does not have): each
    /// attempt is an error, which changes no result, as in kubelet.
    Invalid(String),
}

/// One probe's settings with kubelet's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: Duration) -> Duration {
    match value {
        Some(v) if v > 0 => Duration::from_secs(v.unsigned_abs().into()),
        _ => default,
    }
}

fn count(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| {
                    format!("port {name:?} not found in container {:?}", container.name)
                })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

impl ProbeSpec {
    /// Reads a container's probe. Liveness and startup probes always have a success threshold
    /// of 1 (the API requires it).
    pub fn from_probe(kind: ProbeKind, probe: &Probe, container: &Container) -> ProbeSpec {
        let action = if let Some(exec) = &probe.exec {
            ProbeAction::Exec {
                command: exec.command.clone().unwrap_or_default(),
            }
        } else if let Some(http) = &probe.http_get {
            match resolve_port(&http.port, container) {
                Ok(port) => {
                    let scheme = if http.scheme.as_deref() == Some("HTTPS") {
                        HttpScheme::Https
                    } else {
                        HttpScheme::Http
                    };
                    ProbeAction::HttpGet {
                        scheme,
                        host: http.host.clone().filter(|h| !h.is_empty()),
                        port,
                        path: http.path.clone().unwrap_or_default(),
                        headers: http
                            .http_headers
                            .iter()
                            .flatten()
                            .map(|h| (h.name.clone(), h.value.clone()))
                            .collect(),
                    }
                }
                Err(e) => ProbeAction::Invalid(e),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            match resolve_port(&tcp.port, container) {
                Ok(port) => ProbeAction::TcpSocket {
                    host: tcp.host.clone().filter(|h| !h.is_empty()),
                    port,
                },
                Err(e) => ProbeAction::Invalid(e),
            }
        } else if let Some(grpc) = &probe.grpc {
            ProbeAction::Grpc { port: grpc.port }
        } else {
            ProbeAction::Invalid("missing probe handler".to_string())
        };
        let success_threshold = match kind {
            ProbeKind::Readiness => count(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        };
        ProbeSpec {
            action,
            initial_delay: match probe.initial_delay_seconds {
                Some(v) if v > 0 => Duration::from_secs(v.unsigned_abs().into()),
                _ => Duration::ZERO,
            },
            period: seconds(probe.period_seconds, DEFAULT_PERIOD),
            timeout: seconds(probe.timeout_seconds, DEFAULT_TIMEOUT),
            success_threshold,
            failure_threshold: count(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
        }
    }
}

/// The result of one probe attempt. Messages are kubelet's probe outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// Success, with something worth a `ProbeWarning` event (a redirect to another host).
    Warning(String),
    Failure(String),
    /// The probe could not be run at all; counts neither way.
    Unknown(String),
}

/// What the agent's exec returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout and stderr together.
    pub output: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecProbeError {
    #[error("timed out")]
    TimedOut,
    /// The command could not be started (no container, runtime error): the attempt is an
    /// error, not a failure.
    #[error("{0}")]
    Failed(String),
}

/// Runs a command in the container, for exec probes. The agent implements it with the
/// runtime's exec; it should kill the command when `timeout` runs out and report
/// [`ExecProbeError::TimedOut`] (the prober also stops waiting shortly after).
pub trait ExecProber: Send + Sync {
    fn exec<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecProbeError>>;
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn truncate(mut data: Vec<u8>) -> String {
    data.truncate(MAX_OUTPUT);
    String::from_utf8_lossy(&data).into_owned()
}

/// Go's wording for a failed dial (`connect: connection refused`).
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    let reason = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::HostUnreachable => "no route to host".to_string(),
        std::io::ErrorKind::NetworkUnreachable => "network is unreachable".to_string(),
        _ => e.to_string(),
    };
    format!("dial tcp {addr}: connect: {reason}")
}

/// Runs one probe attempt against `pod_host` (the pod's address: 127.0.0.1 while pods use the
/// host's network).
pub async fn run_probe(
    action: &ProbeAction,
    pod_host: &str,
    timeout: Duration,
    exec: &dyn ExecProber,
) -> ProbeOutcome {
    match action {
        ProbeAction::Exec { command } => exec_probe(command, timeout, exec).await,
        ProbeAction::TcpSocket { host, port } => {
            let addr = join_host_port(host.as_deref().unwrap_or(pod_host), *port);
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_stream)) => ProbeOutcome::Success,
                Ok(Err(e)) => ProbeOutcome::Failure(dial_error(&addr, &e)),
                Err(_) => ProbeOutcome::Failure(format!("dial tcp {addr}: i/o timeout")),
            }
        }
        ProbeAction::HttpGet {
            scheme,
            host,
            port,
            path,
            headers,
        } => {
            let host = host.as_deref().unwrap_or(pod_host);
            http::probe(*scheme, host, *port, path, headers, timeout).await
        }
        ProbeAction::Grpc { port } => ProbeOutcome::Failure(format!(
            "gRPC probes are not supported by berth yet (port {port})"
        )),
        ProbeAction::Invalid(message) => ProbeOutcome::Unknown(message.clone()),
    }
}

async fn exec_probe(command: &[String], timeout: Duration, exec: &dyn ExecProber) -> ProbeOutcome {
    let timed_out = || ProbeOutcome::Failure(format!("command {:?} timed out", command.join(" ")));
    // A grace second over the timeout: the exec itself should time out first and say so.
    let limit = timeout + Duration::from_secs(1);
    match tokio::time::timeout(limit, exec.exec(command, timeout)).await {
        Ok(Ok(out)) if out.exit_code == 0 => ProbeOutcome::Success,
        Ok(Ok(out)) => ProbeOutcome::Failure(truncate(out.output)),
        Ok(Err(ExecProbeError::TimedOut)) | Err(_) => timed_out(),
        Ok(Err(ExecProbeError::Failed(e))) => ProbeOutcome::Unknown(e),
    }
}

mod http {
    //! The httpGet prober: one HTTP/1.1 GET per hop on a fresh connection.

    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::Request;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncWrite};

    use super::{
        HttpScheme, MAX_OUTPUT, MAX_REDIRECTS, ProbeOutcome, USER_AGENT, dial_error, join_host_port,
    };

    struct Target {
        scheme: HttpScheme,
        host: String,
        port: u16,
        path: String,
    }

    impl Target {
        fn url(&self) -> String {
            let scheme = match self.scheme {
                HttpScheme::Http => "http",
                HttpScheme::Https => "https",
            };
            format!(
                "{scheme}://{}{}",
                join_host_port(&self.host, self.port),
                self.path
            )
        }
    }

    fn normalize_path(path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        }
    }

    pub(super) async fn probe(
        scheme: HttpScheme,
        host: &str,
        port: u16,
        path: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> ProbeOutcome {
        let mut target = Target {
            scheme,
            host: host.to_string(),
            port,
            path: normalize_path(path),
        };
        let first_url = target.url();
        // Go's client timeout covers everything, redirects and body included.
        let run = async {
            for _ in 0..=MAX_REDIRECTS {
                let (status, location, body) = get_once(&target, headers).await?;
                let code = status.as_u16();
                if !(200..400).contains(&code) {
                    return Ok(ProbeOutcome::Failure(format!(
                        "HTTP probe failed with statuscode: {code}"
                    )));
                }
                if code < 300 {
                    return Ok(ProbeOutcome::Success);
                }
                match location.and_then(|l| next_hop(&target, &l)) {
                    Some(next) => target = next,
                    None => {
                        let body = String::from_utf8_lossy(&body).into_owned();
                        return Ok(ProbeOutcome::Warning(format!(
                            "Probe terminated redirects, Response body: {body}"
                        )));
                    }
                }
            }
            Err(format!(
                "Get {:?}: stopped after 10 redirects",
                target.url()
            ))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(message)) => ProbeOutcome::Failure(message),
            Err(_) => ProbeOutcome::Failure(format!(
                "Get {first_url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        }
    }

    /// Where a redirect leads, if kubelet would follow it: only to the same host name.
    fn next_hop(current: &Target, location: &str) -> Option<Target> {
        if location.starts_with('/') {
            return Some(Target {
                scheme: current.scheme,
                host: current.host.clone(),
                port: current.port,
                path: location.to_string(),
            });
        }
        let uri: hyper::Uri = location.parse().ok()?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            // A relative reference: resolve against the current directory.
            let dir = current.path.rsplit_once('/').map_or("", |(d, _)| d);
            return Some(Target {
                scheme: current.scheme,
                host: current.host.clone(),
                port: current.port,
                path: format!("{dir}/{location}"),
            });
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host != current.host {
            return None;
        }
        let scheme = match scheme {
            "http" => HttpScheme::Http,
            "https" => HttpScheme::Https,
            _ => return None,
        };
        let default_port = if scheme == HttpScheme::Https { 443 } else { 80 };
        Some(Target {
            scheme,
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(default_port),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }

    type Response = (hyper::StatusCode, Option<String>, Vec<u8>);

    async fn get_once(target: &Target, headers: &[(String, String)]) -> Result<Response, String> {
        let url = target.url();
        let addr = join_host_port(&target.host, target.port);
        let fail = |e: String| format!("Get {url:?}: {e}");
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| fail(dial_error(&addr, &e)))?;
        match target.scheme {
            HttpScheme::Http => send(tcp, target, headers).await.map_err(fail),
            HttpScheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|e| fail(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(tls_config()?)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                send(tls, target, headers).await.map_err(fail)
            }
        }
    }

    async fn send<S>(
        stream: S,
        target: &Target,
        headers: &[(String, String)],
    ) -> Result<Response, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let mut req = Request::get(target.path.as_str());
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !has("host") {
            req = req.header("Host", join_host_port(&target.host, target.port));
        }
        if !has("user-agent") {
            req = req.header("User-Agent", USER_AGENT);
        }
        if !has("accept") {
            req = req.header("Accept", "*/*");
        }
        req = req.header("Connection", "close");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let location = res
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut body = res.into_body();
        let mut data = Vec::new();
        while data.len() < MAX_OUTPUT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(chunk) = frame.data_ref() {
                        data.extend_from_slice(chunk);
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => break,
            }
        }
        data.truncate(MAX_OUTPUT);
        conn.abort();
        Ok((status, location, data))
    }

    /// kubelet probes HTTPS without verifying the certificate (`InsecureSkipVerify`); the
    /// handshake's signatures are still checked.
    fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
        static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
    }

    #[derive(Debug)]
    struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end_entity: &rustls::pki_types::CertificateDer<'_>,
            _intermediates: &[rustls::pki_types::CertificateDer<'_>],
            _server_name: &rustls::pki_types::ServerName<'_>,
            _ocsp_response: &[u8],
            _now: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn target(path: &str) -> Target {
            Target {
                scheme: HttpScheme::Http,
                host: "127.0.0.1".into(),
                port: 8080,
                path: path.into(),
            }
        }

        #[test]
        fn redirects_stay_on_the_host() {
            let t = target("/a/b");
            assert_eq!(
                next_hop(&t, "/c").map(|t| t.url()).as_deref(),
                Some("http://127.0.0.1:8080/c")
            );
            assert_eq!(
                next_hop(&t, "d").map(|t| t.url()).as_deref(),
                Some("http://127.0.0.1:8080/a/d")
            );
            assert_eq!(
                next_hop(&t, "http://127.0.0.1:9090/x?y=1")
                    .map(|t| t.url())
                    .as_deref(),
                Some("http://127.0.0.1:9090/x?y=1")
            );
            assert!(next_hop(&t, "http://example.com/").is_none());
            assert_eq!(normalize_path(""), "/");
            assert_eq!(normalize_path("healthz"), "/healthz");
        }
    }
}

/// The published result of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    Failure,
}

/// One probe's thresholds and published result (kubelet's worker without the timer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeWorker {
    kind: ProbeKind,
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
    published: Option<ProbeResult>,
    on_hold: bool,
}

impl ProbeWorker {
    /// Starts with kubelet's initial results: not ready, alive, startup unknown.
    pub fn new(kind: ProbeKind, spec: &ProbeSpec) -> Self {
        ProbeWorker {
            kind,
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
            last: None,
            run: 0,
            published: match kind {
                ProbeKind::Readiness => Some(ProbeResult::Failure),
                ProbeKind::Liveness => Some(ProbeResult::Success),
                ProbeKind::Startup => None,
            },
            on_hold: false,
        }
    }

    pub fn result(&self) -> Option<ProbeResult> {
        self.published
    }

    /// A liveness or startup probe that failed stops until the container is restarted.
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// Counts one outcome; returns the published result when it changes.
    pub fn observe(&mut self, outcome: &ProbeOutcome) -> Option<ProbeResult> {
        let ok = match outcome {
            ProbeOutcome::Success | ProbeOutcome::Warning(_) => true,
            ProbeOutcome::Failure(_) => false,
            ProbeOutcome::Unknown(_) => return None,
        };
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        if (ok && self.run < self.success_threshold) || (!ok && self.run < self.failure_threshold) {
            return None;
        }
        let result = if ok {
            ProbeResult::Success
        } else {
            ProbeResult::Failure
        };
        if !ok && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            self.on_hold = true;
            self.run = 0;
        }
        let changed = self.published != Some(result);
        self.published = Some(result);
        changed.then_some(result)
    }
}

/// What the agent needs to know about a container from its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The startup probe succeeded (or there is none): `containerStatuses[].started`.
    pub started: bool,
    /// Started and the readiness probe succeeded (or there is none); the agent also requires
    /// the container to be running.
    pub ready: bool,
    /// A liveness or startup probe failed: kill the container and apply its restart policy.
    pub restart: Option<ProbeKind>,
}

/// Something for the agent to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// A failed attempt: a Warning event with reason `Unhealthy` and this message
    /// (`Liveness probe failed: …`).
    Unhealthy { kind: ProbeKind, message: String },
    /// A Warning event with reason `ProbeWarning` (`Readiness probe warning: …`).
    Warning { kind: ProbeKind, message: String },
    /// A probe's published result changed; `status` is the container's new state.
    Changed {
        kind: ProbeKind,
        result: ProbeResult,
        status: ProbeStatus,
    },
}

#[derive(Debug, Clone)]
struct Slot {
    spec: ProbeSpec,
    worker: ProbeWorker,
    /// Time since the container started at which the probe is next due.
    next_due: Duration,
    in_flight: bool,
}

/// A container's probes and their schedule, driven by a clock the caller passes in (the time
/// since the container started).
#[derive(Debug, Clone)]
pub struct ContainerProbes {
    slots: Vec<(ProbeKind, Slot)>,
}

impl ContainerProbes {
    pub fn new(container: &Container) -> Self {
        let mut slots = Vec::new();
        let probes = [
            (ProbeKind::Startup, &container.startup_probe),
            (ProbeKind::Liveness, &container.liveness_probe),
            (ProbeKind::Readiness, &container.readiness_probe),
        ];
        for (kind, probe) in probes {
            if let Some(probe) = probe {
                let spec = ProbeSpec::from_probe(kind, probe, container);
                slots.push((
                    kind,
                    Slot {
                        worker: ProbeWorker::new(kind, &spec),
                        next_due: spec.initial_delay,
                        spec,
                        in_flight: false,
                    },
                ));
            }
        }
        ContainerProbes { slots }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot(&self, kind: ProbeKind) -> Option<&Slot> {
        self.slots.iter().find(|(k, _)| *k == kind).map(|(_, s)| s)
    }

    fn slot_mut(&mut self, kind: ProbeKind) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s)
    }

    pub fn spec(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        self.slot(kind).map(|s| &s.spec)
    }

    pub fn status(&self) -> ProbeStatus {
        let result = |kind| self.slot(kind).map(|s| s.worker.result());
        let started = result(ProbeKind::Startup).is_none_or(|r| r == Some(ProbeResult::Success));
        let ready =
            started && result(ProbeKind::Readiness).is_none_or(|r| r == Some(ProbeResult::Success));
        let restart = [ProbeKind::Startup, ProbeKind::Liveness]
            .into_iter()
            .find(|k| result(*k) == Some(Some(ProbeResult::Failure)));
        ProbeStatus {
            started,
            ready,
            restart,
        }
    }

    /// Whether a probe runs at all now: startup until it succeeds or fails for good; liveness
    /// and readiness once started, liveness until it fails for good.
    fn active(&self, kind: ProbeKind) -> bool {
        let Some(slot) = self.slot(kind) else {
            return false;
        };
        match kind {
            ProbeKind::Startup => slot.worker.result().is_none() && !slot.worker.on_hold(),
            ProbeKind::Liveness => self.status().started && !slot.worker.on_hold(),
            ProbeKind::Readiness => self.status().started,
        }
    }

    /// The probes to start at `now`.
    pub fn due(&self, now: Duration) -> Vec<ProbeKind> {
        self.slots
            .iter()
            .filter(|(kind, slot)| !slot.in_flight && now >= slot.next_due && self.active(*kind))
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// When the next probe is due, if any will be (in-flight ones are waited for instead).
    pub fn next_wakeup(&self) -> Option<Duration> {
        self.slots
            .iter()
            .filter(|(kind, slot)| !slot.in_flight && self.active(*kind))
            .map(|(_, slot)| slot.next_due)
            .min()
    }

    /// Marks `kind` as started at `now`; the next attempt is due a period later.
    pub fn begin(&mut self, kind: ProbeKind, now: Duration) {
        if let Some(slot) = self.slot_mut(kind) {
            slot.in_flight = true;
            slot.next_due = now + slot.spec.period;
        }
    }

    /// Records the outcome of an attempt that finished at `now`.
    pub fn finish(
        &mut self,
        kind: ProbeKind,
        outcome: &ProbeOutcome,
        now: Duration,
    ) -> Vec<ProbeEvent> {
        let mut events = Vec::new();
        let Some(slot) = self.slot_mut(kind) else {
            return events;
        };
        slot.in_flight = false;
        match outcome {
            ProbeOutcome::Failure(message) => events.push(ProbeEvent::Unhealthy {
                kind,
                message: format!("{kind} probe failed: {message}"),
            }),
            ProbeOutcome::Warning(message) => events.push(ProbeEvent::Warning {
                kind,
                message: format!("{kind} probe warning: {message}"),
            }),
            ProbeOutcome::Unknown(message) => {
                tracing::debug!(%kind, %message, "probe errored");
            }
            ProbeOutcome::Success => {}
        }
        let Some(result) = slot.worker.observe(outcome) else {
            return events;
        };
        if kind == ProbeKind::Startup && result == ProbeResult::Success {
            // kubelet runs the other probes right away once the container has started (still
            // respecting their initial delays, counted from the container's start).
            for (other, slot) in &mut self.slots {
                if *other != ProbeKind::Startup {
                    slot.next_due = slot.next_due.min(now.max(slot.spec.initial_delay));
                }
            }
        }
        events.push(ProbeEvent::Changed {
            kind,
            result,
            status: self.status(),
        });
        events
    }
}

/// A running set of probes for one container; dropping it stops them.
pub struct ProbeRunner {
    pub events: mpsc::Receiver<ProbeEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProbeRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `probes` for a container that started at `started_at`, probing `pod_host` (the pod's
/// address) where a probe names no host.
pub fn spawn_probes(
    probes: ContainerProbes,
    started_at: Instant,
    pod_host: String,
    exec: Arc<dyn ExecProber>,
) -> ProbeRunner {
    let (tx, events) = mpsc::channel(32);
    let task = tokio::spawn(drive(probes, started_at, pod_host, exec, tx));
    ProbeRunner { events, task }
}

async fn drive(
    mut probes: ContainerProbes,
    started_at: Instant,
    pod_host: String,
    exec: Arc<dyn ExecProber>,
    tx: mpsc::Sender<ProbeEvent>,
) {
    let pod_host: Arc<str> = pod_host.into();
    let mut in_flight: FuturesUnordered<BoxFuture<'static, (ProbeKind, ProbeOutcome)>> =
        FuturesUnordered::new();
    loop {
        let now = Instant::now().saturating_duration_since(started_at);
        for kind in probes.due(now) {
            let Some(spec) = probes.spec(kind).cloned() else {
                continue;
            };
            probes.begin(kind, now);
            let (exec, host) = (exec.clone(), pod_host.clone());
            in_flight.push(Box::pin(async move {
                let outcome = run_probe(&spec.action, &host, spec.timeout, exec.as_ref()).await;
                (kind, outcome)
            }));
        }
        let wakeup = probes.next_wakeup();
        if wakeup.is_none() && in_flight.is_empty() {
            // Nothing will run again (e.g. liveness failed): wait to be dropped.
            tx.closed().await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started_at + wakeup.unwrap_or_default()), if wakeup.is_some() => {}
            Some((kind, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                let now = Instant::now().saturating_duration_since(started_at);
                for event in probes.finish(kind, &outcome, now) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction, TCPSocketAction};
    use std::sync::Mutex;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn exec_probe(period: i32, success: i32, failure: i32, delay: i32) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["check".into()]),
            }),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            initial_delay_seconds: Some(delay),
            ..Default::default()
        }
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::Failure("boom".into())
    }

    #[test]
    fn defaults_and_named_ports() {
        let container = Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("/healthz".into()),
                ..Default::default()
            }),
            success_threshold: Some(5),
            ..Default::default()
        };
        let spec = ProbeSpec::from_probe(ProbeKind::Liveness, &probe, &container);
        assert_eq!(spec.period, S(10));
        assert_eq!(spec.timeout, S(1));
        assert_eq!(spec.success_threshold, 1, "liveness is always 1");
        assert_eq!(spec.failure_threshold, 3);
        assert_eq!(spec.initial_delay, Duration::ZERO);
        assert!(matches!(
            spec.action,
            ProbeAction::HttpGet { port: 8080, .. }
        ));

        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("nope".into()),
                host: None,
            }),
            ..Default::default()
        };
        let spec = ProbeSpec::from_probe(ProbeKind::Readiness, &probe, &container);
        assert_eq!(
            spec.action,
            ProbeAction::Invalid("port \"nope\" not found in container \"app\"".into())
        );
    }

    #[test]
    fn thresholds() {
        let spec = ProbeSpec::from_probe(
            ProbeKind::Readiness,
            &exec_probe(10, 2, 3, 0),
            &Container::default(),
        );
        let mut w = ProbeWorker::new(ProbeKind::Readiness, &spec);
        assert_eq!(w.result(), Some(ProbeResult::Failure));
        assert_eq!(w.observe(&ProbeOutcome::Success), None);
        assert_eq!(
            w.observe(&ProbeOutcome::Unknown("x".into())),
            None,
            "errors don't count"
        );
        assert_eq!(
            w.observe(&ProbeOutcome::Success),
            Some(ProbeResult::Success)
        );
        assert_eq!(w.observe(&ProbeOutcome::Success), None);
        assert_eq!(w.observe(&fail()), None);
        assert_eq!(w.observe(&fail()), None);
        assert_eq!(
            w.observe(&ProbeOutcome::Success),
            None,
            "a success resets the run"
        );
        assert_eq!(w.observe(&fail()), None);
        assert_eq!(w.observe(&fail()), None);
        assert_eq!(w.observe(&fail()), Some(ProbeResult::Failure));
        assert!(!w.on_hold(), "readiness keeps probing");

        let spec = ProbeSpec::from_probe(
            ProbeKind::Liveness,
            &exec_probe(10, 1, 2, 0),
            &Container::default(),
        );
        let mut w = ProbeWorker::new(ProbeKind::Liveness, &spec);
        assert_eq!(w.result(), Some(ProbeResult::Success));
        assert_eq!(w.observe(&fail()), None);
        assert_eq!(w.observe(&fail()), Some(ProbeResult::Failure));
        assert!(w.on_hold());
    }

    fn container(
        startup: Option<Probe>,
        liveness: Option<Probe>,
        readiness: Option<Probe>,
    ) -> Container {
        Container {
            name: "app".into(),
            startup_probe: startup,
            liveness_probe: liveness,
            readiness_probe: readiness,
            ..Default::default()
        }
    }

    #[test]
    fn schedule_with_a_fake_clock() {
        let c = container(None, None, Some(exec_probe(5, 1, 3, 3)));
        let mut p = ContainerProbes::new(&c);
        assert_eq!(
            p.status(),
            ProbeStatus {
                started: true,
                ready: false,
                restart: None
            }
        );
        assert!(p.due(S(2)).is_empty(), "initial delay");
        assert_eq!(p.next_wakeup(), Some(S(3)));
        assert_eq!(p.due(S(3)), vec![ProbeKind::Readiness]);
        p.begin(ProbeKind::Readiness, S(3));
        assert!(p.due(S(9)).is_empty(), "in flight");
        let events = p.finish(ProbeKind::Readiness, &ProbeOutcome::Success, S(4));
        assert_eq!(
            events,
            vec![ProbeEvent::Changed {
                kind: ProbeKind::Readiness,
                result: ProbeResult::Success,
                status: ProbeStatus {
                    started: true,
                    ready: true,
                    restart: None
                },
            }]
        );
        assert_eq!(p.next_wakeup(), Some(S(8)));
        assert!(p.due(S(7)).is_empty());
        assert_eq!(p.due(S(8)), vec![ProbeKind::Readiness]);
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        let c = container(
            Some(exec_probe(1, 1, 2, 0)),
            Some(exec_probe(10, 1, 3, 0)),
            Some(exec_probe(10, 1, 3, 0)),
        );
        let mut p = ContainerProbes::new(&c);
        assert_eq!(
            p.status(),
            ProbeStatus {
                started: false,
                ready: false,
                restart: None
            }
        );
        assert_eq!(p.due(S(0)), vec![ProbeKind::Startup]);
        p.begin(ProbeKind::Startup, S(0));
        let events = p.finish(ProbeKind::Startup, &fail(), S(0));
        assert_eq!(
            events,
            vec![ProbeEvent::Unhealthy {
                kind: ProbeKind::Startup,
                message: "Startup probe failed: boom".into()
            }]
        );
        assert_eq!(
            p.due(S(1)),
            vec![ProbeKind::Startup],
            "others wait for startup"
        );
        p.begin(ProbeKind::Startup, S(1));
        p.finish(ProbeKind::Startup, &ProbeOutcome::Success, S(1));
        assert!(p.status().started);
        assert!(!p.status().ready);
        assert_eq!(p.due(S(1)), vec![ProbeKind::Liveness, ProbeKind::Readiness]);

        // Liveness failing three times asks for a restart, then stops.
        for t in [1, 11, 21] {
            p.begin(ProbeKind::Liveness, S(t));
            p.finish(ProbeKind::Liveness, &fail(), S(t));
        }
        assert_eq!(p.status().restart, Some(ProbeKind::Liveness));
        assert!(!p.due(S(100)).contains(&ProbeKind::Liveness));
    }

    #[test]
    fn startup_failure_restarts() {
        let c = container(Some(exec_probe(1, 1, 2, 0)), None, None);
        let mut p = ContainerProbes::new(&c);
        for t in [0, 1] {
            p.begin(ProbeKind::Startup, S(t));
            p.finish(ProbeKind::Startup, &fail(), S(t));
        }
        assert_eq!(p.status().restart, Some(ProbeKind::Startup));
        assert_eq!(p.next_wakeup(), None);
    }

    /// An exec prober scripted with outcomes, recording when it was called.
    struct Scripted {
        outcomes: Mutex<Vec<Result<ExecOutput, ExecProbeError>>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl ExecProber for Scripted {
        fn exec<'a>(
            &'a self,
            _argv: &'a [String],
            _timeout: Duration,
        ) -> BoxFuture<'a, Result<ExecOutput, ExecProbeError>> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(Instant::now());
                let mut o = self.outcomes.lock().unwrap();
                if o.is_empty() {
                    Ok(ExecOutput {
                        exit_code: 0,
                        output: vec![],
                    })
                } else {
                    o.remove(0)
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn runner_reports_failures_and_transitions() {
        let exec = Arc::new(Scripted {
            outcomes: Mutex::new(vec![
                Ok(ExecOutput {
                    exit_code: 1,
                    output: b"not yet".to_vec(),
                }),
                Err(ExecProbeError::TimedOut),
                Ok(ExecOutput {
                    exit_code: 2,
                    output: b"dead".to_vec(),
                }),
            ]),
            calls: Mutex::new(vec![]),
        });
        let c = container(None, Some(exec_probe(10, 1, 3, 5)), None);
        let start = Instant::now();
        let mut runner = spawn_probes(
            ContainerProbes::new(&c),
            start,
            "127.0.0.1".into(),
            exec.clone(),
        );
        let mut got = Vec::new();
        while let Some(ev) = runner.events.recv().await {
            let done = matches!(ev, ProbeEvent::Changed { .. });
            got.push(ev);
            if done {
                break;
            }
        }
        let messages: Vec<String> = got
            .iter()
            .map(|e| match e {
                ProbeEvent::Unhealthy { message, .. } | ProbeEvent::Warning { message, .. } => {
                    message.clone()
                }
                ProbeEvent::Changed { status, .. } => format!("{status:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            vec![
                "Liveness probe failed: not yet".to_string(),
                "Liveness probe failed: command \"check\" timed out".to_string(),
                "Liveness probe failed: dead".to_string(),
                "ProbeStatus { started: true, ready: true, restart: Some(Liveness) }".to_string(),
            ]
        );
        let times: Vec<Duration> = exec
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - start)
            .collect();
        assert_eq!(times, vec![S(5), S(15), S(25)]);
    }

    #[tokio::test]
    async fn grpc_and_invalid_probes() {
        let exec = Scripted {
            outcomes: Mutex::new(vec![]),
            calls: Mutex::new(vec![]),
        };
        let out = run_probe(&ProbeAction::Grpc { port: 9 }, "127.0.0.1", S(1), &exec).await;
        assert!(matches!(out, ProbeOutcome::Failure(m) if m.contains("gRPC")));
        let out = run_probe(&ProbeAction::Invalid("x".into()), "127.0.0.1", S(1), &exec).await;
        assert_eq!(out, ProbeOutcome::Unknown("x".into()));
    }
}
