//! The httpGet and tcpSocket probers against real local servers.

use std::sync::Arc;
use std::time::Duration;

use berth_node::probe::{
    ExecOutput, ExecProbeError, ExecProber, HttpScheme, ProbeAction, ProbeOutcome, run_probe,
};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct NoExec;

impl ExecProber for NoExec {
    fn exec<'a>(
        &'a self,
        _argv: &'a [String],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecProbeError>> {
        Box::pin(async { Err(ExecProbeError::Failed("no exec here".into())) })
    }
}

/// A tiny HTTP/1.1 server: each request line's path picks the canned response; the request
/// head is sent back on a channel so tests can look at the headers.
async fn server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                let _ = tx.send(head);
                let (status, extra, body) = match path.as_str() {
                    "/ok" => ("200 OK", String::new(), "fine"),
                    "/fail" => ("500 Internal Server Error", String::new(), "bad"),
                    "/elsewhere" => (
                        "302 Found",
                        "Location: http://example.invalid/\r\n".into(),
                        "moved",
                    ),
                    "/here" => ("302 Found", "Location: /fail\r\n".into(), ""),
                    "/hang" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => ("404 Not Found", String::new(), ""),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, rx)
}

fn http(port: u16, path: &str, headers: &[(&str, &str)]) -> ProbeAction {
    ProbeAction::HttpGet {
        scheme: HttpScheme::Http,
        host: None,
        port,
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

async fn run(action: &ProbeAction, timeout: Duration) -> ProbeOutcome {
    run_probe(action, "127.0.0.1", timeout, &NoExec).await
}

#[tokio::test]
async fn http_status_codes_and_headers() {
    let (port, mut heads) = server().await;
    let t = Duration::from_secs(2);
    assert_eq!(
        run(&http(port, "/ok", &[("X-Probe", "1")]), t).await,
        ProbeOutcome::Success
    );
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET /ok HTTP/1.1\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("user-agent: kube-probe/1.33"), "{head}");
    assert!(lower.contains("x-probe: 1"), "{head}");
    assert!(lower.contains(&format!("host: 127.0.0.1:{port}")), "{head}");

    assert_eq!(
        run(&http(port, "/fail", &[]), t).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    // A same-host redirect is followed (to the 500); another host's is a warning.
    assert_eq!(
        run(&http(port, "/here", &[]), t).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        run(&http(port, "/elsewhere", &[]), t).await,
        ProbeOutcome::Warning("Probe terminated redirects, Response body: moved".into())
    );
    // A custom Host header replaces the default.
    run(&http(port, "ok", &[("Host", "example.com")]), t).await;
    while let Ok(head) = heads.try_recv() {
        if head.starts_with("GET /ok") {
            assert!(
                head.to_ascii_lowercase().contains("host: example.com"),
                "{head}"
            );
        }
    }
}

#[tokio::test]
async fn http_timeouts_and_refused_connections() {
    let (port, _heads) = server().await;
    let out = run(&http(port, "/hang", &[]), Duration::from_millis(300)).await;
    assert_eq!(
        out,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/hang\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );
    let closed = closed_port().await;
    let out = run(&http(closed, "/", &[]), Duration::from_secs(1)).await;
    assert_eq!(
        out,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
}

/// A port nothing listens on: bind, note the port, close.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn tcp_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let action = ProbeAction::TcpSocket { host: None, port };
    assert_eq!(
        run(&action, Duration::from_secs(1)).await,
        ProbeOutcome::Success
    );
    drop(listener);
    let closed = closed_port().await;
    assert_eq!(
        run(
            &ProbeAction::TcpSocket {
                host: None,
                port: closed
            },
            Duration::from_secs(1)
        )
        .await,
        ProbeOutcome::Failure(format!(
            "dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
}

#[tokio::test]
async fn https_without_verification() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = [0u8; 2048];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let action = ProbeAction::HttpGet {
        scheme: HttpScheme::Https,
        host: None,
        port,
        path: "/".into(),
        headers: vec![],
    };
    assert_eq!(
        run(&action, Duration::from_secs(2)).await,
        ProbeOutcome::Success
    );
}
