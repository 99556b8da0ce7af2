//! The etcd backend over TLS with a client certificate (`etcds://…?ca=&cert=&key=`), against a
//! real etcd that requires client certificates: with its certificate the store reads and
//! writes; with only the CA, etcd turns the connection away and the store says it is
//! unavailable within its timeout instead of hanging.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_store::conformance::put;
use berth_store::etcd::EtcdConfig;
use berth_store::{StoreError, ops};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

/// An etcd process, killed when dropped.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes `ca.pem`, `server.pem`/`server-key.pem` (for 127.0.0.1) and `client.pem`/
/// `client-key.pem` into `dir`, all signed by one fresh CA.
fn certificates(dir: &Path) {
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "etcd-test-ca");
    let ca_key = KeyPair::generate().expect("CA key");
    write("ca.pem", ca.self_signed(&ca_key).expect("CA").pem());
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    server
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().expect("key");
    write(
        "server.pem",
        server
            .signed_by(&server_key, &issuer)
            .expect("server")
            .pem(),
    );
    write("server-key.pem", server_key.serialize_pem());

    let mut client = CertificateParams::new(Vec::<String>::new()).expect("params");
    client.distinguished_name.push(DnType::CommonName, "berth");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("key");
    write(
        "client.pem",
        client
            .signed_by(&client_key, &issuer)
            .expect("client")
            .pem(),
    );
    write("client-key.pem", client_key.serialize_pem());
}

fn start_etcd(dir: &Path, client_port: u16) -> Etcd {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let client = format!("https://127.0.0.1:{client_port}");
    let file = |name: &str| dir.join(name).display().to_string();
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log");
    let child = Command::new("/usr/bin/etcd")
        .arg(format!("--data-dir={}", file("data")))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=default={peer}"))
        .arg(format!("--cert-file={}", file("server.pem")))
        .arg(format!("--key-file={}", file("server-key.pem")))
        .arg(format!("--trusted-ca-file={}", file("ca.pem")))
        .arg("--client-cert-auth")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("etcd is required (apt-get install etcd-server)");
    Etcd(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_requiring_client_certificates_is_used_over_etcds() {
    let dir = tempfile::tempdir().expect("temp dir");
    certificates(dir.path());
    let port = free_port();
    let _etcd = start_etcd(dir.path(), port);
    let file = |name: &str| dir.path().join(name).display().to_string();
    let url = format!(
        "etcds://127.0.0.1:{port}/tls/?ca={}&cert={}&key={}&timeout=2s",
        file("ca.pem"),
        file("client.pem"),
        file("client-key.pem")
    );
    let config: EtcdConfig = url.parse().expect("an etcds URL");

    // etcd takes a moment to serve; connect until it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = loop {
        match berth_store::etcd::connect(&config).await {
            Ok(store) => break store,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "no TLS etcd within 30 s: {e}\n{}",
                std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default()
            ),
        }
    };
    let written = put(store.as_ref(), "/over/tls", "secret").await;
    let (kv, _) = ops::get(store.as_ref(), "/over/tls").await.expect("get");
    let kv = kv.expect("the key is there");
    assert_eq!(kv.value.as_ref(), b"secret");
    assert_eq!(kv.mod_revision, written);

    // The CA alone (no client certificate): etcd refuses the handshake, and the store says
    // so as unavailable within its timeout.
    let without_identity = format!(
        "etcds://127.0.0.1:{port}/tls/?ca={}&timeout=2s",
        file("ca.pem")
    );
    let config: EtcdConfig = without_identity.parse().expect("an etcds URL");
    let started = Instant::now();
    let refused = match berth_store::etcd::connect(&config).await {
        Err(e) => e,
        Ok(store) => ops::get(store.as_ref(), "/over/tls")
            .await
            .expect_err("etcd requires a client certificate"),
    };
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // It was the missing certificate, not a dead etcd: with it, the same etcd still answers.
    let (kv, _) = ops::get(store.as_ref(), "/over/tls")
        .await
        .expect("etcd still serves the client with a certificate");
    assert_eq!(kv.expect("the key is there").value.as_ref(), b"secret");
}
