//! The real kubectl 1.33 against a throwaway HTTPS listener: its imperative `create` commands
//! POST protobuf, and `protobuf::decode` of each captured body must be the object that
//! `kubectl create ... --dry-run=client -o json` prints for the same command (Go's own JSON of
//! the same struct). Skipped, with a message, where kubectl 1.33 is not installed.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use berth_apiserver::protobuf::{self, MEDIA_TYPE};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// One request the listener saw.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    content_type: String,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn status(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "message": message, "code": code.as_u16()});
    respond(code, &body)
}

fn respond(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(log: Log, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) => return Ok(status(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let response = if method == Method::GET && path == "/version" {
        respond(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                    "gitCommit": "0000000", "gitTreeState": "clean",
                    "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
                    "compiler": "gc", "platform": "linux/amd64"}),
        )
    } else if method == Method::POST {
        match protobuf::decode(&body) {
            Ok(object) => respond(StatusCode::CREATED, &object),
            Err(e) if e.is_unsupported_kind() => {
                status(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e.to_string())
            }
            Err(e) => status(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else {
        // Discovery and OpenAPI: kubectl copes with a server that has neither.
        status(StatusCode::NOT_FOUND, "not found")
    };
    if let Ok(mut seen) = log.lock() {
        seen.push(Seen {
            method,
            path,
            content_type,
            body,
        });
    }
    Ok(response)
}

/// Starts the listener on its own runtime; returns the port and the request log.
fn start_server(runtime: &tokio::runtime::Runtime) -> (u16, Log) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("TLS config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    let log: Log = Arc::default();
    let server_log = log.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let log = server_log.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request| handle(log.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, log)
}

struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        // Global flags first: whatever follows a `--` is the container's command.
        let output = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=30s")
            .args(args)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// The JSON object a `create` command would have sent, from kubectl's own printer.
fn dry_run(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    args.splice(at..at, ["--dry-run=client", "-o", "json"]);
    let (ok, stdout, stderr) = kubectl.run(&args);
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("dry-run prints JSON")
}

/// Runs a `create` command for real and returns the protobuf body it POSTed, decoded.
fn created(kubectl: &Kubectl, log: &Log, args: &[&str]) -> Value {
    let before = log.lock().map(|l| l.len()).unwrap_or(0);
    let (ok, stdout, stderr) = kubectl.run(args);
    let seen: Vec<Seen> = log.lock().map(|l| l[before..].to_vec()).unwrap_or_default();
    assert!(ok, "kubectl {args:?} failed: {stderr}\nrequests: {seen:#?}");
    assert!(stdout.contains("created"), "{stdout}");
    let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::POST).collect();
    assert_eq!(posts.len(), 1, "one POST per create: {seen:#?}");
    let post = posts[0];
    assert_eq!(
        post.content_type, MEDIA_TYPE,
        "kubectl {args:?} sent {}",
        post.content_type
    );
    protobuf::decode(&post.body).unwrap_or_else(|e| panic!("{} {}: {e}", post.method, post.path))
}

/// Compares two objects in full, naming every path that differs.
fn assert_same(what: &str, decoded: &Value, expected: &Value) {
    let mut differences = Vec::new();
    diff(decoded, expected, String::new(), &mut differences);
    assert!(
        differences.is_empty(),
        "{what}: the decoded protobuf body differs from kubectl's JSON at {differences:#?}\n\
         decoded: {decoded:#}\nexpected: {expected:#}"
    );
}

fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(x, y, format!("{path}.{key}"), out),
                    (x, y) => out.push(format!("{path}.{key}: {x:?} vs {y:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                diff(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

#[test]
fn kubectl_create_bodies_decode_to_kubectls_json() {
    if !Path::new(KUBECTL).exists() {
        eprintln!(
            "skipping kubectl_create_bodies_decode_to_kubectls_json: {KUBECTL} is not installed"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (port, log) = start_server(&runtime);

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: t\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: t\n  user:\n    token: test-token\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n    namespace: default\n\
             current-context: t\n"
        ),
    )
    .expect("write kubeconfig");
    let text_file = dir.path().join("settings.conf");
    std::fs::write(&text_file, "mode = fast\n# ünïcödé\n").expect("write file");
    let binary_file = dir.path().join("blob.bin");
    std::fs::write(&binary_file, [0u8, 159, 146, 150, 255]).expect("write file");
    let kubectl = Kubectl {
        kubeconfig,
        home: dir.path().to_owned(),
    };
    let text_arg = format!("--from-file={}", text_file.display());
    let binary_arg = format!("--from-file=blob={}", binary_file.display());

    // ConfigMap: literals, a text file (data) and a binary file (binaryData, base64).
    let args = [
        "create",
        "configmap",
        "cm1",
        "--from-literal=a=b",
        &text_arg,
        &binary_arg,
    ];
    let decoded = created(&kubectl, &log, &args);
    assert_eq!(decoded["kind"], "ConfigMap");
    assert_eq!(decoded["metadata"]["name"], "cm1");
    assert_eq!(decoded["data"]["a"], "b");
    assert_eq!(decoded["data"]["settings.conf"], "mode = fast\n# ünïcödé\n");
    assert_eq!(decoded["binaryData"]["blob"], "AJ+Slv8=");
    assert_same("configmap", &decoded, &dry_run(&kubectl, &args));

    // Secret: data bytes travel raw in protobuf and are base64 in JSON.
    let args = ["create", "secret", "generic", "s1", "--from-literal=k=v"];
    let decoded = created(&kubectl, &log, &args);
    assert_eq!(decoded["data"], json!({"k": "dg=="}));
    assert_same("secret", &decoded, &dry_run(&kubectl, &args));

    let args = ["create", "namespace", "ns1"];
    let decoded = created(&kubectl, &log, &args);
    assert_eq!(decoded["apiVersion"], "v1");
    assert_eq!(decoded["metadata"]["name"], "ns1");
    assert_same("namespace", &decoded, &dry_run(&kubectl, &args));

    let args = [
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
        "--port=8080",
        "--",
        "sleep",
        "3600",
    ];
    let decoded = created(&kubectl, &log, &args);
    assert_eq!(decoded["apiVersion"], "apps/v1");
    let spec = &decoded["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
    assert_eq!(
        spec["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox");
    assert_eq!(container["command"], json!(["sleep", "3600"]));
    assert_eq!(container["ports"], json!([{"containerPort": 8080}]));
    assert_same("deployment", &decoded, &dry_run(&kubectl, &args));

    // A Service carries IntOrString (targetPort) and a non-pointer int (nodePort) left zero.
    let args = ["create", "service", "nodeport", "svc1", "--tcp=80:8080"];
    let decoded = created(&kubectl, &log, &args);
    assert_eq!(decoded["spec"]["ports"][0]["targetPort"], 8080);
    assert_same("service", &decoded, &dry_run(&kubectl, &args));

    let args = ["create", "serviceaccount", "sa1"];
    let decoded = created(&kubectl, &log, &args);
    assert_eq!(decoded["kind"], "ServiceAccount");
    assert_same("serviceaccount", &decoded, &dry_run(&kubectl, &args));

    // A kind berth does not serve is refused with a clear message instead of mangled.
    let (ok, _, stderr) = kubectl.run(&["create", "job", "j1", "--image=busybox"]);
    assert!(!ok);
    assert!(
        stderr.contains("unsupported kind \\\"Job\\\"")
            || stderr.contains("unsupported kind \"Job\""),
        "{stderr}"
    );
}
