//! The cluster's certificate authority and the API server's serving certificate, made on first
//! start (rcgen) and kept in `<data-dir>/pki`, and the rustls configuration that serves them.
//!
//! The node agent's credentials live there too: its serving certificate, signed by the same CA
//! (`agent.crt`, `agent.key`), and the bearer token the API server sends it (`agent.token`).
//! The API server trusts the agent through the CA and authenticates to it with the token; the
//! agent is handed both files and accepts only that token.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{ensure_private_dir, write_private};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot load {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The files of the cluster PKI.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(data_dir: &Path) -> Self {
        Pki {
            dir: data_dir.join("pki"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    fn server_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    fn server_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    fn server_sans(&self) -> PathBuf {
        self.dir.join("apiserver.sans")
    }
    /// The node agent's serving certificate (PEM), signed by the cluster CA.
    pub fn agent_cert(&self) -> PathBuf {
        self.dir.join("agent.crt")
    }
    /// The node agent's private key (PEM).
    pub fn agent_key(&self) -> PathBuf {
        self.dir.join("agent.key")
    }
    /// The bearer token the API server presents to the node agent.
    pub fn agent_token(&self) -> PathBuf {
        self.dir.join("agent.token")
    }
    fn agent_sans(&self) -> PathBuf {
        self.dir.join("agent.sans")
    }

    fn load_ca(&self) -> Result<(KeyPair, String), TlsError> {
        let io = |path: PathBuf| move |source| TlsError::Io { path, source };
        let key_pem = std::fs::read_to_string(self.ca_key()).map_err(io(self.ca_key()))?;
        let cert = std::fs::read_to_string(self.ca_cert()).map_err(io(self.ca_cert()))?;
        Ok((KeyPair::from_pem(&key_pem)?, cert))
    }

    /// Issues the node agent's serving certificate, signed by the CA that [`Pki::ensure`] made,
    /// for `ips` and `dns_names` (plus 127.0.0.1, ::1 and localhost); it is remade only when
    /// that set of names changes. The API server checks the agent's certificate against the
    /// node's address, so every address a Node object may report must be here.
    pub fn ensure_agent(&self, ips: &[IpAddr], dns_names: &[String]) -> Result<(), TlsError> {
        let io = |path: PathBuf| move |source| TlsError::Io { path, source };
        let mut names: Vec<String> = vec!["localhost".to_string()];
        for name in dns_names {
            if !name.is_empty() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        let mut all_ips: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ];
        for ip in ips {
            if !ip.is_unspecified() && !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        let wanted = names
            .iter()
            .cloned()
            .chain(all_ips.iter().map(IpAddr::to_string))
            .collect::<Vec<_>>()
            .join("\n");
        let current = std::fs::read_to_string(self.agent_sans()).unwrap_or_default();
        if current == wanted && self.agent_cert().exists() && self.agent_key().exists() {
            return Ok(());
        }
        let (ca_key, _) = self.load_ca()?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let (cert, key) = issue_serving(&issuer, "berth-node-agent", names, &all_ips)?;
        write_private(&self.agent_key(), key.as_bytes()).map_err(io(self.agent_key()))?;
        write_private(&self.agent_cert(), cert.as_bytes()).map_err(io(self.agent_cert()))?;
        write_private(&self.agent_sans(), wanted.as_bytes()).map_err(io(self.agent_sans()))?;
        Ok(())
    }

    /// The token the API server sends the node agent: made once (32 random bytes, hex) and kept
    /// in [`Pki::agent_token`] with mode 0600.
    pub fn ensure_agent_token(&self) -> Result<String, TlsError> {
        let path = self.agent_token();
        let io = |source| TlsError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
            Ok(_) => Err(io(std::io::Error::other("the agent token file is empty"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = rand::random();
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_private(&path, token.as_bytes()).map_err(io)?;
                Ok(token)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The rustls client configuration for connections to node agents: it trusts only the
    /// cluster CA and speaks HTTP/1.1 (every streaming protocol is an HTTP/1.1 upgrade).
    pub fn agent_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let load = |path: PathBuf| {
            move |e: rustls::pki_types::pem::Error| TlsError::Load {
                path,
                message: e.to_string(),
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_cert()).map_err(load(self.ca_cert()))? {
            roots.add(cert.map_err(load(self.ca_cert()))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Makes the CA (once) and a serving certificate valid for `ips` and the usual names
    /// (remade when the set of addresses changes). Returns the CA certificate in PEM.
    pub fn ensure(&self, ips: &[IpAddr]) -> Result<String, TlsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        ensure_private_dir(&self.dir).map_err(io(&self.dir))?;
        let ca_params = ca_params()?;
        let (ca_key, ca_pem) = if self.ca_key().exists() && self.ca_cert().exists() {
            self.load_ca()?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params.self_signed(&key)?;
            write_private(&self.ca_key(), key.serialize_pem().as_bytes())
                .map_err(io(&self.ca_key()))?;
            write_private(&self.ca_cert(), cert.pem().as_bytes()).map_err(io(&self.ca_cert()))?;
            (key, cert.pem())
        };
        let mut sans: Vec<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut all_ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        for ip in ips {
            if !ip.is_unspecified() && !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        sans.extend(all_ips.iter().map(|ip| ip.to_string()));
        let wanted = sans.join("\n");
        let current = std::fs::read_to_string(self.server_sans()).unwrap_or_default();
        if current != wanted || !self.server_cert().exists() || !self.server_key().exists() {
            let issuer = Issuer::new(ca_params, ca_key);
            let (cert, key) =
                issue_serving(&issuer, "berth-apiserver", sans[..5].to_vec(), &all_ips)?;
            write_private(&self.server_key(), key.as_bytes()).map_err(io(&self.server_key()))?;
            write_private(&self.server_cert(), cert.as_bytes()).map_err(io(&self.server_cert()))?;
            write_private(&self.server_sans(), wanted.as_bytes())
                .map_err(io(&self.server_sans()))?;
        }
        Ok(ca_pem)
    }

    /// The rustls configuration serving the API server's certificate, offering h2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let load = |path: PathBuf| {
            move |e: rustls::pki_types::pem::Error| TlsError::Load {
                path,
                message: e.to_string(),
            }
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(self.server_cert())
            .map_err(load(self.server_cert()))?
            .collect::<Result<_, _>>()
            .map_err(load(self.server_cert()))?;
        let key =
            PrivateKeyDer::from_pem_file(self.server_key()).map_err(load(self.server_key()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A serving certificate for `dns_names` and `ips`, signed by `issuer`: its PEM and its key's.
fn issue_serving(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    dns_names: Vec<String>,
    ips: &[IpAddr],
) -> Result<(String, String), TlsError> {
    let mut params = CertificateParams::new(dns_names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "berth-ca");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    Ok(params)
}
