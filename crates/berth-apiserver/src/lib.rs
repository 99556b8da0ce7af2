//! berth's Kubernetes-compatible API server.
//!
//! A request flows through the modules in this order:
//! [`server`] (TCP + TLS, HTTP/1.1 and HTTP/2) → [`handler`] (authenticate with [`auth`], route
//! with [`request`], read the body with [`body`] — JSON, YAML or [`protobuf`]) → [`registry`]
//! (the object lifecycle on top of `berth_store`, with per-kind rules from `berth_api`) or
//! [`watch`] (store change streams as watch events) → a JSON, Table or stream response; every
//! error is a `metav1.Status` made in [`status`].
//!
//! Services get their cluster IPs and node ports from [`services`] (over the ranges of
//! [`allocator`]), in the same store transaction as the Service itself. Claims and volumes go
//! through kube-apiserver's storage admission plugins in [`storage`] (default StorageClass,
//! protection finalizers, resize), which also holds the built-in StorageClasses.
//!
//! [`ApiServer`] wires these together: it makes the PKI and admin token on first start
//! ([`tls`], [`auth`]), writes the admin kubeconfig, creates the system namespaces, repairs the
//! Service allocations, writes the `kubernetes` Service ([`services::kubernetes`]) and serves.

pub mod allocator;
pub mod auth;
pub mod body;
pub mod files;
pub mod handler;
pub mod protobuf;
pub mod proxy;
pub mod registry;
pub mod request;
pub mod server;
pub mod services;
pub mod status;
pub mod storage;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use berth_api::resources;
use berth_store::Store;
use serde_json::json;

pub use crate::allocator::{NodePortRange, ServiceCidr};
use crate::auth::Authenticator;
use crate::handler::State;
use crate::registry::{Registry, WriteOptions};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the system namespaces: {0}")]
    Bootstrap(status::ApiError),
    #[error("cannot repair the Service IP and port allocations: {0}")]
    Repair(status::ApiError),
}

pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub store: Arc<dyn Store>,
    /// How often history is compacted. Each pass compacts up to the revision seen by the pass
    /// before, so a client always has at least one interval to resume a watch (kube-apiserver's
    /// scheme, 5 minutes by default).
    pub compaction_interval: std::time::Duration,
    /// Where Service cluster IPs come from (`--service-cluster-ip-range`); the first address
    /// is the `kubernetes` Service's. Default 10.43.0.0/16.
    pub service_cidr: ServiceCidr,
    /// Where NodePort and LoadBalancer Services' node ports come from
    /// (`--service-node-port-range`). Default 30000-32767.
    pub service_node_port_range: NodePortRange,
}

impl Config {
    /// A configuration with the defaults for everything but the data dir, the listen address
    /// and the store.
    pub fn new(data_dir: PathBuf, listen: SocketAddr, store: Arc<dyn Store>) -> Config {
        Config {
            data_dir,
            listen,
            store,
            compaction_interval: std::time::Duration::from_secs(300),
            service_cidr: ServiceCidr::default(),
            service_node_port_range: NodePortRange::default(),
        }
    }
}

/// A bound, ready-to-serve API server.
pub struct ApiServer {
    listener: server::Listener,
    state: Arc<State>,
    kubeconfig: PathBuf,
    compaction_interval: std::time::Duration,
}

/// The namespaces every cluster has from its first start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// The admin kubeconfig: the CA inline, the admin token, and `default` as the namespace.
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\nusers:\n- name: berth-admin\n  user:\n    token: {token}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: berth-admin\n    namespace: default\ncurrent-context: berth\n"
    )
}

impl ApiServer {
    /// Prepares the data dir (PKI, token, kubeconfig), creates the system namespaces and binds.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ServerError::Io { path, source }
        };
        files::ensure_private_dir(&config.data_dir).map_err(io(&config.data_dir))?;
        let pki = tls::Pki::new(&config.data_dir);
        let ca_pem = pki.ensure(&[config.listen.ip()])?;
        // The node agent's serving certificate and token, which `berth up` hands to the agent;
        // the API server trusts the one and presents the other when it proxies to the agent.
        pki.ensure_agent(
            &[config.listen.ip()],
            &local_hostname().into_iter().collect::<Vec<_>>(),
        )?;
        let agents = proxy::Agents::from_pki(&pki)?;
        let auth = Authenticator::load_or_create(&config.data_dir).map_err(io(&config.data_dir))?;
        let listener = server::Listener::bind(config.listen, pki.server_config()?)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let url = if addr.is_ipv6() {
            format!("https://[{host}]:{}", addr.port())
        } else {
            format!("https://{host}:{}", addr.port())
        };
        let kubeconfig = kubeconfig_path(&config.data_dir);
        files::write_private(
            &kubeconfig,
            self::kubeconfig(&url, &ca_pem, auth.admin_token()).as_bytes(),
        )
        .map_err(io(&kubeconfig))?;
        let registry = Registry::new(
            config.store,
            services::ServiceAllocations::new(config.service_cidr, config.service_node_port_range),
        );
        bootstrap(&registry).await.map_err(ServerError::Bootstrap)?;
        repair_services(&registry)
            .await
            .map_err(ServerError::Repair)?;
        if let Err(e) =
            services::kubernetes::ensure(&registry, config.service_cidr.first(), addr).await
        {
            // Clients outside the cluster do not need it; the next start tries again.
            tracing::warn!(error = %e, "cannot write the kubernetes Service and its endpoints");
        }
        Ok(ApiServer {
            listener,
            state: Arc::new(State {
                registry,
                auth,
                agents,
            }),
            kubeconfig,
            compaction_interval: config.compaction_interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The registry this server serves, for objects `berth up` writes itself before serving
    /// (the built-in StorageClasses, [`storage::install_builtin_classes`]).
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let compactor = tokio::spawn(compact_periodically(
            self.state.registry.store().clone(),
            self.compaction_interval,
        ));
        self.listener.serve(self.state, shutdown).await;
        compactor.abort();
    }
}

/// This machine's host name, for the node agent's certificate.
fn local_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Creates the system namespaces that do not exist yet.
async fn bootstrap(registry: &Registry) -> Result<(), status::ApiError> {
    let namespaces = resources::lookup("", "v1", "namespaces")
        .ok_or_else(|| status::ApiError::internal("no namespaces resource"))?;
    for name in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry
            .create(namespaces, None, object, &WriteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Upstream's repair loops, once before serving: frees allocations whose Service is gone and
/// records the ones Services hold without a key.
async fn repair_services(registry: &Registry) -> Result<(), status::ApiError> {
    let services = resources::lookup("", "v1", "services")
        .ok_or_else(|| status::ApiError::internal("no services resource"))?;
    let report = registry
        .services()
        .repair(
            registry.store().as_ref(),
            &registry::storage_prefix(services),
        )
        .await?;
    if report != services::RepairReport::default() {
        tracing::info!(
            freed = report.freed.len(),
            repaired = report.repaired.len(),
            duplicates = report.duplicates.len(),
            out_of_range = report.out_of_range.len(),
            "repaired the Service IP and port allocations"
        );
    }
    Ok(())
}

/// Compacts the store's history every `interval`, up to the revision the previous pass saw.
async fn compact_periodically(store: Arc<dyn Store>, interval: std::time::Duration) {
    let mut previous: Option<berth_store::Revision> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let revisions = match store.revisions().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store's revision for compaction");
                continue;
            }
        };
        if let Some(target) = previous.filter(|t| *t > revisions.compacted)
            && let Err(e) = store.compact(target).await
        {
            tracing::warn!(error = %e, revision = target, "compaction failed");
        }
        previous = Some(revisions.current);
    }
}
