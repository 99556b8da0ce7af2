//! `berth agent`: a node that joins a running berth from another machine, as `kubeadm join`
//! does. It runs only what is per node — the node agent (kubelet), the pod network (CNI), the
//! service proxy (kube-proxy) and the storage node plugin and local provisioner — against the
//! API server at `--server`, reached with the cluster CA (`--ca-file`) and a bootstrap token
//! (`--token-file`, made by `berth token create`). The API server, scheduler, controllers and
//! cluster DNS stay with `berth up`; nothing here reads the server's data dir.
//!
//! The node's streaming server (logs, exec, attach, port-forward) needs a serving certificate
//! the API server trusts and the token the API server presents to it. The joining node asks
//! for them through the API, the way a kubelet asks for its serving certificate with a CSR: it
//! keeps its key in `<data-dir>/pki/agent.key` and writes a certificate signing request into
//! the Secret `kube-system/berth-agent-serving-<node>` (type `berth.dev/agent-serving`);
//! `berth up` runs [`spawn_serving_signer`], which signs it with the cluster CA for the names
//! and addresses it asks for and answers in the same Secret with `tls.crt` and `token`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::{AgentFlags, DataDir};

/// The Secret type of a node's request for its serving certificate.
pub const SERVING_REQUEST_TYPE: &str = "berth.dev/agent-serving";
/// The namespace of those requests.
const SERVING_REQUEST_NAMESPACE: &str = "kube-system";
/// How long a joining node waits for its certificate.
const SERVING_WAIT: Duration = Duration::from_secs(30);
/// How long a joining node waits for the controllers to give its Node a podCIDR.
const POD_CIDR_WAIT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    data_dir: DataDir,
    /// The API server, as `berth token create` prints it: `https://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    server: String,
    /// A file holding the join token (`berth token create`).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The cluster CA certificate (`<data-dir>/pki/ca.crt` of the `berth up` to join).
    #[arg(long, value_name = "FILE")]
    ca_file: PathBuf,
    /// The name this machine registers as a Node (default: its hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The address the Node reports and its streaming server listens on (kubelet's
    /// `--node-ip`); default: this machine's address on the route to the API server.
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// The streaming server's port (kubelet's `--port`); 0 picks a free one, which the Node
    /// reports.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// The server's Service range (its `berth up --service-cidr`): the proxy and pods' DNS
    /// address need it. Checked against the `kubernetes` Service's cluster IP, which is in it.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// This node's pod addresses (kubelet's `--pod-cidr`), written into its Node if it has
    /// none. Default: the podCIDR the server's controllers give the Node (a subnet of the
    /// server's `--cluster-cidr`), or this agent's `--cluster-cidr` when that is no larger
    /// than `--node-cidr-mask-size`.
    #[arg(long)]
    pod_cidr: Option<String>,
    #[command(flatten)]
    agent: AgentFlags,
}

/// The streaming server's credentials: its certificate and key, and the token the API server
/// presents to it.
pub(crate) struct Serving {
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

/// What sets a node of `berth up` apart from one that joined with `berth agent`.
pub(crate) struct NodeSetup {
    /// The address the Node reports; its streaming server listens there.
    pub node_ip: IpAddr,
    /// The streaming server's port (0: a free one).
    pub kubelet_port: u16,
    pub serving: Serving,
    /// Whether this node serves the cluster DNS (and writes the `kube-dns` Service): only the
    /// node of `berth up` does; other nodes' pods reach it through the Service.
    pub serve_dns: bool,
    /// This node's pod addresses: its Node's podCIDR, a share of the cluster CIDR.
    pub pod_cidr: berth_net::Cidr,
    /// Whether this node writes `pod_cidr` into its Node once the agent registered it (the
    /// node of `berth up`, which chose it itself); a joined node's Node has it already.
    pub publish_pod_cidr: bool,
}

impl NodeSetup {
    /// The node of `berth up`: the credentials the API server wrote into the data dir's PKI,
    /// `node_ip`, a free port (which keeps two berths on one machine apart), the cluster DNS
    /// and `pod_cidr`, which it writes into its Node itself.
    pub fn control_plane(
        data_dir: &Path,
        node_ip: IpAddr,
        pod_cidr: berth_net::Cidr,
    ) -> anyhow::Result<NodeSetup> {
        let pki = berth_apiserver::tls::Pki::new(data_dir);
        Ok(NodeSetup {
            node_ip,
            pod_cidr,
            publish_pod_cidr: true,
            kubelet_port: 0,
            serving: Serving {
                cert_pem: read(&pki.agent_cert())?,
                key_pem: read(&pki.agent_key())?,
                token: read(&pki.agent_token())?.trim().to_string(),
            },
            serve_dns: true,
        })
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs `berth agent` until SIGTERM or SIGINT.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(join(args))
}

async fn join(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.resolve()?;
    berth_apiserver::files::ensure_private_dir(&data_dir.join("store"))
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    // The same lock `berth up` holds: one berth per data dir, and `berth down` waits for it.
    let _lock = match berth_store::sqlite::lock_dir(&data_dir.join("store")) {
        Err(berth_store::StoreError::Locked(_)) => anyhow::bail!(
            "another berth runs on {}; give this agent a data dir of its own",
            data_dir.display()
        ),
        other => other.context("cannot lock the data dir")?,
    };
    let token = read(&args.token_file)?;
    // Never echo the file's content: it may be a token with a stray character.
    let token = berth_apiserver::auth::BootstrapToken::parse(token.trim())
        .with_context(|| format!("{} does not hold a join token", args.token_file.display()))?;
    let ca_pem = read(&args.ca_file)?;
    let client = client_for(&args.server, &ca_pem, &token.expose()).await?;
    client
        .apiserver_version()
        .await
        .with_context(|| format!("cannot reach the API server at {}", args.server))?;
    check_service_cidr(&client, &args.service_cidr).await?;
    let node_name = args.node_name.unwrap_or_else(crate::default_node_name);
    let node_ip = match args.node_ip {
        Some(ip) => ip,
        None => node_ip_towards(&args.server).await?,
    };
    let serving = request_serving(&client, &data_dir, &node_name, node_ip).await?;
    let explicit = match &args.pod_cidr {
        Some(text) => Some(
            text.parse::<berth_net::Cidr>()
                .with_context(|| format!("--pod-cidr {text}"))?,
        ),
        None => {
            let cluster = crate::cluster_cidr(&args.agent)?;
            (cluster.prefix() >= args.agent.node_cidr_mask_size).then_some(cluster)
        }
    };
    let machine = berth_node::node::Machine::probe(&data_dir, node_ip, args.kubelet_port);
    let pod_cidr = node_pod_cidr(&client, &node_name, &machine, explicit).await?;
    let setup = NodeSetup {
        node_ip,
        kubelet_port: args.kubelet_port,
        serving,
        serve_dns: false,
        pod_cidr,
        publish_pod_cidr: false,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = crate::spawn_agent(
        client,
        &data_dir,
        node_name.clone(),
        args.agent,
        &args.service_cidr,
        setup,
        stop_rx,
    )
    .await?;
    println!(
        "berth agent is up: node {node_name} ({node_ip}) joined {}",
        args.server
    );
    crate::shutdown_signal().await;
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .is_err()
    {
        tracing::warn!("the node agent did not stop in time");
    }
    tracing::info!("berth agent stopped");
    Ok(())
}

/// This node's pod CIDR, as its Node carries it. The Node is made here (as the node agent
/// would register it) so that it exists before the pod network does: with `explicit` in its
/// spec, else the controllers give it one, which this waits for.
async fn node_pod_cidr(
    client: &kube::Client,
    node_name: &str,
    machine: &berth_node::node::Machine,
    explicit: Option<berth_net::Cidr>,
) -> anyhow::Result<berth_net::Cidr> {
    use k8s_openapi::api::core::v1::{Node, NodeSpec};
    let api = Api::<Node>::all(client.clone());
    let wanted = explicit.map(|c| c.to_string());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", node_name),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", machine.info.architecture.as_str()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: wanted.clone(),
            pod_cidrs: wanted.clone().map(|c| vec![c]),
            ..NodeSpec::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = node_name, "registered the node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("cannot register this node"),
    }
    let deadline = tokio::time::Instant::now() + POD_CIDR_WAIT;
    loop {
        let node = api
            .get(node_name)
            .await
            .context("cannot read this node's Node")?;
        match (berth_controllers::nodeipam::pod_cidr(&node), &wanted) {
            (Some(have), Some(want)) if have != want => anyhow::bail!(
                "node {node_name} has the podCIDR {have}, not --pod-cidr {want} (a podCIDR cannot change)"
            ),
            (Some(have), _) => {
                return have
                    .parse()
                    .with_context(|| format!("node {node_name}'s podCIDR {have}"));
            }
            (None, Some(want)) => {
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": node.metadata.resource_version},
                    "spec": {"podCIDR": want, "podCIDRs": [want]},
                });
                let params = kube::api::PatchParams::default();
                if let Err(e) = api
                    .patch(node_name, &params, &kube::api::Patch::Merge(&patch))
                    .await
                {
                    tracing::debug!(error = %e, "cannot write this node's podCIDR yet");
                }
            }
            (None, None) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "node {node_name} got no podCIDR from the server's controllers in {} s (is its cluster CIDR exhausted? see its CIDRNotAvailable events); pass --pod-cidr",
                POD_CIDR_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client of `server` trusting `ca_pem`, sending `token`; no kubeconfig file is written.
async fn client_for(server: &str, ca_pem: &str, token: &str) -> anyhow::Result<kube::Client> {
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server} is not a URL"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        anyhow::bail!("--server {server}: expected https://HOST:PORT");
    }
    let text = berth_apiserver::kubeconfig(server, ca_pem, token);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).context("--server or --ca-file")?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .context("--server or --ca-file is not usable")?;
    kube::Client::try_from(config).context("cannot build a client of the API server")
}

/// The address of this machine on its route to `server`: where the API server can reach it.
async fn node_ip_towards(server: &str) -> anyhow::Result<IpAddr> {
    let uri: http::Uri = server.parse()?;
    let host = uri
        .host()
        .context("--server has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let target = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Connecting a UDP socket sends nothing; it only picks the route and so the source address.
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket
        .connect(target)
        .await
        .with_context(|| format!("no route to {target}; pass --node-ip"))?;
    Ok(socket.local_addr()?.ip())
}

/// Fails unless the `kubernetes` Service's cluster IP is in `service_cidr`: a proxy and pods'
/// DNS address from another range would point nowhere.
async fn check_service_cidr(client: &kube::Client, service_cidr: &str) -> anyhow::Result<()> {
    let cidr: berth_net::Cidr = service_cidr
        .parse()
        .with_context(|| format!("--service-cidr {service_cidr}"))?;
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .context("cannot read the kubernetes Service (is the join token valid?)")?;
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the kubernetes Service has no cluster IP")?;
    let ip: std::net::Ipv4Addr = cluster_ip
        .parse()
        .with_context(|| format!("the kubernetes Service's cluster IP {cluster_ip}"))?;
    if !cidr.contains(ip) {
        anyhow::bail!(
            "the server's Services are not in --service-cidr {service_cidr} (its kubernetes Service is at {ip}): pass the --service-cidr the server was started with"
        );
    }
    Ok(())
}

fn serving_request_name(node_name: &str) -> String {
    format!("berth-agent-serving-{node_name}")
}

fn data_str(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// The certificate signing request of a node's streaming server: its name and `node_ip`.
fn serving_csr(key: &rcgen::KeyPair, node_name: &str, node_ip: IpAddr) -> anyhow::Result<String> {
    let mut params = rcgen::CertificateParams::new(vec![node_name.to_string()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(node_ip));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth-node-agent");
    Ok(params.serialize_request(key)?.pem()?)
}

/// Asks the cluster for this node's serving certificate and the API server's agent token (see
/// the module doc) and waits for the answer.
async fn request_serving(
    client: &kube::Client,
    data_dir: &Path,
    node_name: &str,
    node_ip: IpAddr,
) -> anyhow::Result<Serving> {
    let pki = data_dir.join("pki");
    berth_apiserver::files::ensure_private_dir(&pki)
        .with_context(|| format!("cannot create {}", pki.display()))?;
    let key_path = pki.join("agent.key");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a private key", key_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate()?;
            berth_apiserver::files::write_private(&key_path, key.serialize_pem().as_bytes())
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            key
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_path.display())),
    };
    let csr = serving_csr(&key, node_name, node_ip)?;
    let api = Api::<Secret>::namespaced(client.clone(), SERVING_REQUEST_NAMESPACE);
    let name = serving_request_name(node_name);
    let request = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(SERVING_REQUEST_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        type_: Some(SERVING_REQUEST_TYPE.into()),
        data: Some([("csr".to_string(), ByteString(csr.clone().into_bytes()))].into()),
        ..Secret::default()
    };
    // An earlier request (another key or address) is replaced, answer and all.
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e).context("cannot replace this node's earlier certificate request"),
    }
    api.create(&PostParams::default(), &request)
        .await
        .context("cannot request this node's serving certificate")?;
    let deadline = tokio::time::Instant::now() + SERVING_WAIT;
    loop {
        if let Ok(secret) = api.get(&name).await
            && data_str(&secret, "csr").as_deref() == Some(csr.as_str())
            && let (Some(cert_pem), Some(token)) =
                (data_str(&secret, "tls.crt"), data_str(&secret, "token"))
        {
            return Ok(Serving {
                cert_pem,
                key_pem: key.serialize_pem(),
                token,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "no serving certificate for node {node_name} after {} s: the server's `berth up` signs them (is it this version?)",
                SERVING_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Signs `csr_pem` with the cluster CA as a serving certificate: only the request's public key
/// and its DNS and IP names are taken from it.
fn sign_serving(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    csr_pem: &str,
) -> Result<String, rcgen::Error> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = csr
        .params
        .subject_alt_names
        .into_iter()
        .filter(|n| matches!(n, rcgen::SanType::DnsName(_) | rcgen::SanType::IpAddress(_)))
        .collect();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth-node-agent");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params.signed_by(&csr.public_key, issuer)?.pem())
}

/// Answers nodes' serving certificate requests (see the module doc) with the CA and agent
/// token of `berth up`'s data dir, until `stop`. Without them it says why and signs nothing.
pub(crate) fn spawn_serving_signer(
    client: kube::Client,
    data_dir: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let pki = berth_apiserver::tls::Pki::new(data_dir);
    let loaded = (|| -> anyhow::Result<_> {
        let key = rcgen::KeyPair::from_pem(&read(&pki.dir.join("ca.key"))?)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&read(&pki.ca_cert())?, key)?;
        Ok((issuer, read(&pki.agent_token())?.trim().to_string()))
    })();
    let (issuer, token) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the cluster CA: nodes cannot join");
            return;
        }
    };
    let api = Api::<Secret>::namespaced(client, SERVING_REQUEST_NAMESPACE);
    tokio::spawn(async move {
        let requests = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let answer_all = requests.for_each(|secret| {
            let (api, issuer, token) = (&api, &issuer, &token);
            async move {
                match secret {
                    Ok(secret) => answer(api, issuer, token, secret).await,
                    Err(e) => tracing::debug!(error = %e, "watching certificate requests"),
                }
            }
        });
        tokio::select! {
            () = answer_all => {}
            () = crate::stopping(stop) => {}
        }
    });
}

async fn answer(
    api: &Api<Secret>,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    token: &str,
    mut secret: Secret,
) {
    if secret.type_.as_deref() != Some(SERVING_REQUEST_TYPE)
        || secret.metadata.deletion_timestamp.is_some()
        || data_str(&secret, "tls.crt").is_some()
    {
        return;
    }
    let name = secret.metadata.name.clone().unwrap_or_default();
    let Some(csr) = data_str(&secret, "csr") else {
        return;
    };
    let cert = match sign_serving(issuer, &csr) {
        Ok(cert) => cert,
        Err(e) => {
            tracing::warn!(request = %name, error = %e, "cannot sign a node's serving certificate");
            return;
        }
    };
    let data = secret.data.get_or_insert_default();
    data.insert("tls.crt".into(), ByteString(cert.into_bytes()));
    data.insert("token".into(), ByteString(token.as_bytes().to_vec()));
    // The resourceVersion read makes this a compare-and-swap: a newer request is answered
    // when the watch delivers it.
    match api.replace(&name, &PostParams::default(), &secret).await {
        Ok(_) => tracing::info!(request = %name, "signed a node's serving certificate"),
        Err(e) => {
            tracing::debug!(request = %name, error = %e, "cannot answer a certificate request yet")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_request_is_signed_for_its_names_only() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();

        let key = rcgen::KeyPair::generate().unwrap();
        let ip = IpAddr::from([192, 0, 2, 7]);
        let csr = serving_csr(&key, "second", ip).unwrap();
        let cert = sign_serving(&issuer, &csr).unwrap();
        // As the API server's proxy checks it: chained to the CA, valid for the node's address.
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let verify = |name: ServerName<'static>| {
            verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        };
        assert!(verify(ServerName::IpAddress(ip.into())).is_ok());
        assert!(verify(ServerName::try_from("second").unwrap()).is_ok());
        assert!(verify(ServerName::IpAddress(IpAddr::from([192, 0, 2, 8]).into())).is_err());
        assert!(sign_serving(&issuer, "not a request").is_err());
    }
}
