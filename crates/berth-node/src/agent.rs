//! The agent's top level: its configuration, the context pod workers share, and the loop
//! that keeps one worker per pod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};

use crate::server::{self, PodStreams};
use crate::streams::AgentStreams;
use crate::{Error, env, node, sandbox, volumes, worker};

/// How the agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// The address the node reports and pods see as their host.
    pub node_ip: IpAddr,
    /// The agent's own state: `pods/` (one directory per pod uid) and `run/` (the runtime's
    /// bundles). Kept across restarts so running pods are adopted, not restarted.
    pub state_dir: PathBuf,
    /// The image store (`berth image import` writes it).
    pub image_root: PathBuf,
    /// The berth binary, re-executed as each container's shim.
    pub berth_exe: PathBuf,
    /// The port the agent's streaming server (logs, exec, port-forward) listens on, on
    /// `node_ip`; 0 picks a free one, which the Node then reports.
    pub kubelet_port: u16,
    /// The streaming server's certificate, key and the token the API server presents.
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub server_token: String,
    pub cluster_domain: String,
    /// `pids.max` of each container, so a fork bomb stays inside its pod.
    pub pids_limit: i64,
    /// A container's log is rotated past this size (one rotated file is kept).
    pub log_max_bytes: u64,
    /// How many pods the Node says it can run (kubelet's `--max-pods`).
    pub max_pods: i64,
    /// The pod network: pods get their own network namespace, a veth on this bridge and an
    /// address from this CIDR. `None` runs every pod in the host's network namespace.
    pub pod_network: Option<berth_net::NetworkConfig>,
    /// The cluster DNS server pods' resolv.conf names (dnsPolicy ClusterFirst); `None` gives
    /// them the host's resolver.
    pub cluster_dns: Option<IpAddr>,
    /// Host paths pods may mount even though the default policy denies them (their trees).
    pub allowed_host_paths: Vec<PathBuf>,
    /// The in-process CSI drivers persistentVolumeClaims may use, by the driver name a PV's
    /// `spec.csi.driver` gives (`local-ext4.berth.dev`).
    pub csi_drivers: volumes::CsiDrivers,
}

impl AgentConfig {
    pub fn new(node_name: &str, state_dir: &Path, image_root: &Path, berth_exe: &Path) -> Self {
        AgentConfig {
            node_name: node_name.to_string(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            state_dir: state_dir.to_path_buf(),
            image_root: image_root.to_path_buf(),
            berth_exe: berth_exe.to_path_buf(),
            kubelet_port: 10250,
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            server_token: String::new(),
            cluster_domain: "cluster.local".to_string(),
            pids_limit: 4096,
            log_max_bytes: 10 * 1024 * 1024,
            max_pods: node::DEFAULT_MAX_PODS,
            allowed_host_paths: Vec::new(),
            csi_drivers: volumes::CsiDrivers::new(),
            pod_network: None,
            cluster_dns: None,
        }
    }
}

/// What every pod worker shares.
pub struct Context {
    pub client: Client,
    pub node_name: String,
    pub node_ip: String,
    pub pods_root: PathBuf,
    pub runtime: Arc<berth_runtime::Runtime>,
    pub images: berth_image::ImageStore,
    pub cluster_domain: String,
    pub cluster_dns: Option<IpAddr>,
    pub pids_limit: i64,
    pub log_max_bytes: u64,
    pub allocatable: BTreeMap<String, Quantity>,
    pub objects: Arc<dyn env::ObjectSource>,
    pub volumes: volumes::VolumeManager,
    /// The pod network; `None` when every pod uses the host's network namespace.
    pub network: Option<Arc<berth_net::PodNetwork>>,
    /// Which pod uids hold each identity (`<namespace>/<name>`) on this node: the ones with a
    /// worker, whose processes may still be alive.
    pub identities: Identities,
    /// Pod workers never wait for the API to take an event.
    events: berth_client::EventQueue,
}

/// At most one pod per identity on this node: a pod whose name an earlier pod (another uid)
/// still holds — its processes stopping after a force deletion, say — does not start until
/// that pod's worker has removed everything of it. StatefulSets rely on this: `web-0` must
/// never run twice.
#[derive(Default)]
pub struct Identities {
    holders: std::sync::Mutex<HashMap<String, HashSet<String>>>,
}

impl Identities {
    pub fn key(pod: &Pod) -> String {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    /// Records that the worker of `uid` holds `pod`'s identity.
    pub fn hold(&self, pod: &Pod, uid: &str) {
        if let Ok(mut holders) = self.holders.lock() {
            holders
                .entry(Self::key(pod))
                .or_default()
                .insert(uid.to_string());
        }
    }

    /// Forgets `uid` (its worker is done: nothing of it is left on the node).
    pub fn release(&self, uid: &str) {
        if let Ok(mut holders) = self.holders.lock() {
            holders.retain(|_, uids| {
                uids.remove(uid);
                !uids.is_empty()
            });
        }
    }

    /// The other pods (uids) that hold `pod`'s identity besides `uid`.
    pub fn others(&self, pod: &Pod, uid: &str) -> Vec<String> {
        let Ok(holders) = self.holders.lock() else {
            return Vec::new();
        };
        let mut others: Vec<String> = holders
            .get(&Self::key(pod))
            .map(|uids| uids.iter().filter(|u| *u != uid).cloned().collect())
            .unwrap_or_default();
        others.sort();
        others
    }
}

impl Context {
    /// What env and volume resolution need to know about `pod` besides its spec.
    pub fn pod_context<'a>(&'a self, pod: &'a Pod, pod_ips: &'a [String]) -> env::PodContext<'a> {
        env::PodContext {
            pod,
            pod_ips,
            host_ips: std::slice::from_ref(&self.node_ip),
            node_allocatable: &self.allocatable,
            objects: &*self.objects,
            service_env: &[],
        }
    }
}

impl Context {
    /// Queues an event about `pod` (`field_path` names a container as kubelet does).
    pub fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        self.events.record(
            berth_client::pod_reference(pod, field_path),
            type_,
            reason,
            message,
        );
    }

    /// Drops what the event recorder remembers about pod `uid` (it is gone).
    pub fn forget_events(&self, uid: &str) {
        self.events.forget(uid);
    }
}

/// ConfigMaps, Secrets, claims and volumes from the agent's reflector caches.
struct CachedObjects {
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
}

impl env::ObjectSource for CachedObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps
            .get(&ObjectRef::new(name).within(namespace))
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(namespace))
    }
    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.get(&ObjectRef::new(name))
    }
}

/// The node agent.
pub struct Agent {
    client: Client,
    config: AgentConfig,
}

impl Agent {
    pub fn new(client: Client, config: AgentConfig) -> Agent {
        Agent { client, config }
    }

    /// Registers the node and runs its pods until `stop` resolves. Containers keep running
    /// when the agent stops; the next agent adopts them.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), Error> {
        let Agent { client, config } = self;
        let pods_root = config.state_dir.join("pods");
        let run_root = config.state_dir.join("run");
        for dir in [&pods_root, &run_root] {
            create_private_dir(dir)?;
        }
        let runtime = berth_runtime::Runtime::new(&run_root, &config.berth_exe)
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let images = berth_image::ImageStore::open(&config.image_root)?;
        let (pods, pod_writer) = reflector::store::<Pod>();
        let mut machine =
            node::Machine::probe(&config.state_dir, config.node_ip, config.kubelet_port);
        machine.max_pods = config.max_pods;
        let (config_maps, cm_writer) = reflector::store();
        let (secrets, secret_writer) = reflector::store();
        let (claims, claim_writer) = reflector::store();
        let (pvs, pv_writer) = reflector::store();
        let caches = tokio::spawn({
            let cms = reflector::reflector(
                cm_writer,
                watcher(
                    Api::<ConfigMap>::all(client.clone()),
                    watcher::Config::default(),
                ),
            );
            let secrets = reflector::reflector(
                secret_writer,
                watcher(
                    Api::<Secret>::all(client.clone()),
                    watcher::Config::default(),
                ),
            );
            let claims = reflector::reflector(
                claim_writer,
                watcher(
                    Api::<PersistentVolumeClaim>::all(client.clone()),
                    watcher::Config::default(),
                ),
            );
            let pvs = reflector::reflector(
                pv_writer,
                watcher(
                    Api::<PersistentVolume>::all(client.clone()),
                    watcher::Config::default(),
                ),
            );
            async move {
                let cms = cms.for_each(|_| async {});
                let secrets = secrets.for_each(|_| async {});
                let claims = claims.for_each(|_| async {});
                let pvs = pvs.for_each(|_| async {});
                futures::join!(cms, secrets, claims, pvs);
            }
        });

        let (events, recorder) =
            berth_client::Recorder::new(client.clone(), "kubelet", Some(&config.node_name)).spawn();

        let network = match &config.pod_network {
            Some(network) => Some(Arc::new(
                berth_net::PodNetwork::open(
                    network.clone(),
                    &config.state_dir.join("network"),
                    Arc::new(berth_net::link::Netlink),
                )
                .map_err(|e| Error::Network(e.to_string()))?,
            )),
            None => None,
        };
        let ctx = Arc::new(Context {
            network,
            identities: Identities::default(),
            client: client.clone(),
            node_name: config.node_name.clone(),
            node_ip: config.node_ip.to_string(),
            pods_root: pods_root.clone(),
            runtime: Arc::new(runtime),
            images,
            cluster_domain: config.cluster_domain.clone(),
            cluster_dns: config.cluster_dns,
            pids_limit: config.pids_limit,
            log_max_bytes: config.log_max_bytes,
            allocatable: machine.capacity(),
            objects: Arc::new(CachedObjects {
                config_maps: config_maps.clone(),
                secrets: secrets.clone(),
                claims: claims.clone(),
                volumes: pvs.clone(),
            }),
            volumes: volume_manager(
                &config.state_dir,
                &config.allowed_host_paths,
                &config.csi_drivers,
            ),
            events,
        });

        let server = server::AgentServer::bind(
            server::ServerConfig {
                listen: std::net::SocketAddr::new(config.node_ip, config.kubelet_port),
                cert_pem: config.server_cert_pem.clone(),
                key_pem: config.server_key_pem.clone(),
                token: config.server_token.clone(),
            },
            Arc::new(AgentStreams {
                ctx: ctx.clone(),
                pods,
            }) as Arc<dyn PodStreams>,
        )
        .await
        .map_err(|e| Error::Runtime(format!("cannot start the streaming server: {e}")))?;
        machine.kubelet_port = i32::from(server.local_addr().port());
        let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async move {
            let _ = server_stop_rx.await;
        }));
        node::register(&client, &config.node_name, &machine).await?;
        node::renew_lease(&client, &config.node_name).await?;
        let heartbeat = tokio::spawn(node::heartbeat(
            client.clone(),
            config.node_name.clone(),
            machine.clone(),
        ));

        // Containers that read ConfigMaps and Secrets, and pods with claims, should not fail
        // (or wait a retry) for a cold cache.
        let caches_ready = futures::future::join4(
            config_maps.wait_until_ready(),
            secrets.wait_until_ready(),
            claims.wait_until_ready(),
            pvs.wait_until_ready(),
        );
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), caches_ready).await;
        let result = tokio::select! {
            r = run_pods(ctx, &config.node_name, pod_writer) => r,
            () = stop => Ok(()),
        };
        let _ = server_stop_tx.send(());
        serving.abort();
        heartbeat.abort();
        caches.abort();
        recorder.abort();
        result
    }
}

/// Watches the pods bound to the node and keeps one worker per pod uid.
async fn run_pods(
    ctx: Arc<Context>,
    node_name: &str,
    writer: reflector::store::Writer<Pod>,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={node_name}");
    let mut stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().fields(&selector)),
    )
    .boxed();
    let mut workers: HashMap<String, watch::Sender<worker::PodUpdate>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut listing: Option<HashSet<String>> = None;
    let mut orphans_checked = false;

    let spawn = |uid: String,
                 initial: worker::PodUpdate,
                 workers: &mut HashMap<String, watch::Sender<worker::PodUpdate>>| {
        if let Some(pod) = &initial {
            ctx.identities.hold(pod, &uid);
        }
        let (tx, rx) = watch::channel(initial);
        let w = worker::PodWorker::new(ctx.clone(), uid.clone(), rx, done_tx.clone());
        tokio::spawn(w.run());
        workers.insert(uid, tx);
    };

    loop {
        tokio::select! {
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                ctx.identities.release(&uid);
            }
            event = stream.next() => {
                let Some(event) = event else { return Ok(()) };
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "the pod watch failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                match event {
                    watcher::Event::Init => listing = Some(HashSet::new()),
                    watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        if let Some(seen) = listing.as_mut() {
                            seen.insert(uid.clone());
                        }
                        let pod = Some(Arc::new(pod));
                        match workers.get(&uid) {
                            Some(tx) => { let _ = tx.send(pod); }
                            None => spawn(uid, pod, &mut workers),
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = tx.send(None);
                        }
                    }
                    watcher::Event::InitDone => {
                        let seen = listing.take().unwrap_or_default();
                        for (uid, tx) in &workers {
                            if !seen.contains(uid) {
                                let _ = tx.send(None);
                            }
                        }
                        if !orphans_checked {
                            orphans_checked = true;
                            // Addresses of pods with nothing left here (a crash between a
                            // pod's removal and the release of its address).
                            if let Some(network) = &ctx.network {
                                let local = local_pod_uids(&ctx);
                                match network.retain(|uid| local.contains(uid) || seen.contains(uid)) {
                                    Ok(0) => {}
                                    Ok(freed) => tracing::info!(freed, "released leaked pod addresses"),
                                    Err(e) => tracing::warn!(error = %e, "cannot release leaked pod addresses"),
                                }
                            }
                            for uid in local_pod_uids(&ctx) {
                                if !seen.contains(&uid) && !workers.contains_key(&uid) {
                                    tracing::info!(pod = %uid, "cleaning up a pod the API no longer has");
                                    spawn(uid, None, &mut workers);
                                }
                            }
                            // CSI volumes left staged with no pod directory recording them
                            // (a crash between a teardown and its unstage). Pods being set
                            // up or torn down meanwhile are safe: staging decisions are
                            // serialized with this sweep.
                            let sweeper = ctx.clone();
                            tokio::task::spawn_blocking(move || sweeper.volumes.unstage_unused());
                        }
                    }
                }
            }
        }
    }
}

/// Pod uids with something on this machine: a directory or a container.
fn local_pod_uids(ctx: &Context) -> HashSet<String> {
    let mut uids = HashSet::new();
    if let Ok(entries) = std::fs::read_dir(&ctx.pods_root) {
        for entry in entries.flatten() {
            uids.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    for id in ctx.runtime.list().unwrap_or_default() {
        if let Some((uid, ..)) = sandbox::parse_container_id(&id) {
            uids.insert(uid.to_string());
        }
    }
    uids
}

fn volume_manager(
    state_dir: &Path,
    allowed_host_paths: &[PathBuf],
    csi_drivers: &volumes::CsiDrivers,
) -> volumes::VolumeManager {
    let policy = allowed_host_paths
        .iter()
        .fold(volumes::HostPathPolicy::with_data_dir(state_dir), |p, a| {
            p.allow(a)
        });
    volumes::VolumeManager::new(
        volumes::VolumeConfig {
            host_path_policy: policy,
            secrets_in_tmpfs: true,
            state_dir: state_dir.to_path_buf(),
            csi_drivers: csi_drivers.clone(),
        },
        Arc::new(volumes::HostMounter),
    )
}

/// `berth down`: stops every container the agent of `state_dir` started (SIGKILL; the agent
/// is not running, so there is no grace to honour) and removes what the pods left on this
/// machine. The API objects are untouched: a later `berth up` starts the pods again.
/// Returns how many pods were cleaned up.
pub async fn down(state_dir: &Path, berth_exe: &Path) -> Result<usize, Error> {
    down_with(state_dir, berth_exe, &volumes::CsiDrivers::new()).await
}

/// [`down`] with the node's CSI drivers, so the CSI volumes staged for the pods are unstaged
/// too (without them they stay staged until the next start's sweep).
pub async fn down_with(
    state_dir: &Path,
    berth_exe: &Path,
    csi_drivers: &volumes::CsiDrivers,
) -> Result<usize, Error> {
    let run_root = state_dir.join("run");
    let pods_root = state_dir.join("pods");
    if !run_root.exists() && !pods_root.exists() && !state_dir.join("network").exists() {
        return Ok(0);
    }
    let runtime = berth_runtime::Runtime::new(&run_root, berth_exe)
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let ids = runtime.list().map_err(|e| Error::Runtime(e.to_string()))?;
    let stops = ids
        .iter()
        .map(|id| worker::stop_container(&runtime, id, std::time::Duration::ZERO));
    futures::future::join_all(stops).await;
    // Teardown never consults the host-path policy.
    let volumes = volume_manager(state_dir, &[], csi_drivers);
    let mut cleaned = 0;
    let mut uids: HashSet<String> = std::fs::read_dir(&pods_root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    uids.extend(
        ids.iter()
            .filter_map(|id| sandbox::parse_container_id(id).map(|(uid, ..)| uid.to_string())),
    );
    for uid in uids {
        let dir = sandbox::PodDir::new(&pods_root, &uid);
        match worker::remove_pod(&runtime, &volumes, None, &dir, &uid) {
            Ok(()) => cleaned += 1,
            Err(e) => tracing::warn!(pod = %uid, error = %e, "cannot clean up the pod"),
        }
    }
    // CSI volumes still staged with no pod left (an earlier crash mid-teardown).
    volumes.unstage_unused();
    // Every pod's link and address, the bridge and the Services' rules.
    let network = state_dir.join("network");
    let kernel = berth_net::proxy::nftables::Kernel;
    if let Err(e) = berth_net::teardown(&network, &berth_net::link::Netlink, &kernel) {
        tracing::warn!(error = %e, "cannot remove the pod network");
    }
    Ok(cleaned)
}

/// Creates `dir` owner-only (0700): pods' files include their secrets.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io("restricting", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("default".into());
        pod.metadata.name = Some(name.into());
        pod
    }

    #[test]
    fn an_identity_is_held_until_every_earlier_worker_is_done() {
        let identities = Identities::default();
        identities.hold(&pod("web-0"), "old");
        identities.hold(&pod("web-0"), "new");
        identities.hold(&pod("web-1"), "other");
        assert_eq!(identities.others(&pod("web-0"), "new"), ["old"]);
        assert!(identities.others(&pod("web-1"), "other").is_empty());
        identities.release("old");
        assert!(identities.others(&pod("web-0"), "new").is_empty());
        identities.release("new");
        identities.release("new");
        assert!(identities.others(&pod("web-0"), "x").is_empty());
    }
}
