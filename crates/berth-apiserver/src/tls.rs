//! The cluster's certificate authority and the API server's serving certificate, made on first
//! start (rcgen) and kept in `<data-dir>/pki`, and the rustls configuration that serves them.

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
            let key_pem = std::fs::read_to_string(self.ca_key()).map_err(io(&self.ca_key()))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let cert = std::fs::read_to_string(self.ca_cert()).map_err(io(&self.ca_cert()))?;
            (key, cert)
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
            let mut params = CertificateParams::new(sans[..5].to_vec())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "berth-apiserver");
            for ip in &all_ips {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&self.server_key(), key.serialize_pem().as_bytes())
                .map_err(io(&self.server_key()))?;
            write_private(&self.server_cert(), cert.pem().as_bytes())
                .map_err(io(&self.server_cert()))?;
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
