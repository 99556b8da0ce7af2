//! The lean HTTPS client of the API benches and the fixed-count loads they drive with it: one
//! HTTP/1.1 keep-alive connection per simulated client (hyper's client connection over
//! tokio-rustls, bearer token from the data dir), so the client's own CPU cost, which shares
//! the machine with the server, stays small.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use super::{Latencies, ms};

/// No single request may take longer than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A server to connect to: its port, the admin token and its CA.
#[derive(Clone)]
pub struct Target {
    port: u16,
    auth: HeaderValue,
    tls: TlsConnector,
}

impl Target {
    /// Reads the admin token and the CA `berth up` wrote into `data_dir`.
    pub fn load(data_dir: &Path, port: u16) -> anyhow::Result<Target> {
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .context("read admin.token")?
            .trim()
            .to_string();
        if token.is_empty() {
            bail!("admin.token is empty");
        }
        let mut roots = rustls::RootCertStore::empty();
        let ca = data_dir.join("pki/ca.crt");
        for cert in CertificateDer::pem_file_iter(&ca).context("read pki/ca.crt")? {
            roots
                .add(cert.context("parse pki/ca.crt")?)
                .context("add CA")?;
        }
        if roots.is_empty() {
            bail!("no certificate in pki/ca.crt yet");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target {
            port,
            auth: HeaderValue::from_str(&format!("Bearer {token}")).context("token header")?,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .await
            .context("TCP connect")?;
        tcp.set_nodelay(true).context("nodelay")?;
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = self.tls.connect(name, tcp).await.context("TLS handshake")?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            auth: self.auth.clone(),
        })
    }
}

/// One keep-alive connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    auth: HeaderValue,
}

impl Conn {
    /// Sends a request; the response's body is the caller's to read (a watch streams it).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<http::Response<Incoming>> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1")
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .context("build request")?;
        self.sender.ready().await.context("connection not ready")?;
        self.sender
            .send_request(request)
            .await
            .context("send request")
    }

    /// One request and its whole response, within [`REQUEST_TIMEOUT`].
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let work = async {
            let response = self.send(method, path, body).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .context("read response body")?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .context("request timed out")?
    }

    /// [`Conn::call`], an error unless the status is `want`.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        want: StatusCode,
    ) -> anyhow::Result<Bytes> {
        let (status, bytes) = self.call(method.clone(), path, body).await?;
        if status != want {
            bail!(
                "{method} {path}: got {status}, want {want}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed-count loads

/// `n` with thousands separators: 12,345.
pub fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a fixed-count load run measured.
pub struct Load {
    pub count: usize,
    pub wall: Duration,
    pub latencies: Latencies,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.wall.as_secs_f64()
    }

    pub fn summary(&self) -> String {
        format!(
            "{}/s  (p50 {}, p99 {}, max {}; {} in {:.2} s)",
            thousands(self.rate()),
            ms(self.latencies.median()),
            ms(self.latencies.pct(99.0)),
            ms(self.latencies.max()),
            thousands(self.count as f64),
            self.wall.as_secs_f64()
        )
    }
}

/// One request of a load: method, path, body and the status it must get.
pub type Call = (Method, String, Option<Bytes>, StatusCode);

/// One keep-alive connection per client. Connection setup is not timed.
pub async fn connect_all(target: &Target, clients: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(target.connect().await?);
    }
    Ok(conns)
}

/// Waits for the tasks of a load of `total` requests started at `started`, and gathers their
/// latencies.
pub async fn gather(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
    total: usize,
    started: Instant,
    what: &str,
) -> anyhow::Result<Load> {
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(
            task.await
                .with_context(|| format!("{what} task panicked"))??,
        );
    }
    Ok(Load {
        count: total,
        wall: started.elapsed(),
        latencies: Latencies::new(all),
    })
}

/// Closed loop: runs `total` requests over `clients` connections (each client takes the next
/// index until none is left). `make(i)` gives the request. Connection setup is not timed.
pub async fn load<F>(target: &Target, clients: usize, total: usize, make: F) -> anyhow::Result<Load>
where
    F: Fn(usize) -> Call + Send + Sync + 'static,
{
    let conns = connect_all(target, clients).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let next = next.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total / clients + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (method, path, body, want) = make(i);
                let t = Instant::now();
                conn.expect(method, &path, body, want).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    gather(tasks, total, started, "load").await
}

// ---------------------------------------------------------------------------------------------
// Objects

/// The benches' ConfigMap: two short data entries (about 300 bytes of JSON).
pub fn configmap(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"bench":"creates"}}}},"data":{{"greeting":"hello","payload":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}}}"#
    ))
}

/// The request that creates the ConfigMap `<prefix>-NNNNNN` (NNNNNN = `i`) at `path`.
pub fn post_configmap(
    path: &'static str,
    prefix: &'static str,
) -> impl Fn(usize) -> Call + Send + Sync + 'static {
    move |i| {
        (
            Method::POST,
            path.to_string(),
            Some(configmap(&format!("{prefix}-{i:06}"))),
            StatusCode::CREATED,
        )
    }
}

pub async fn create_namespace(conn: &mut Conn, name: &str) -> anyhow::Result<()> {
    let body =
        format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
    conn.expect(
        Method::POST,
        "/api/v1/namespaces",
        Some(Bytes::from(body)),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}
