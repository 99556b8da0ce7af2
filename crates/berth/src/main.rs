//! The `berth` binary: a thin command line over the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod agent;
mod demo;
mod store_cli;
mod token;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Kubernetes for one machine that gets state right"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DataDir {
    /// Where berth keeps its state (default: /var/lib/berth as root, else ~/.local/share/berth).
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            // Absolute: container roots and mounts are built from it, and shims run elsewhere.
            return std::path::absolute(dir)
                .with_context(|| format!("cannot resolve the data dir {}", dir.display()));
        }
        if rustix::process::geteuid().is_root() {
            return Ok(PathBuf::from("/var/lib/berth"));
        }
        let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
        Ok(PathBuf::from(home).join(".local/share/berth"))
    }
}

/// How the node agent runs pods (kubelet's flags of the same meaning).
#[derive(clap::Args)]
struct AgentFlags {
    /// The most processes one container may have (its `pids.max`), so a fork bomb stays
    /// inside its pod (kubelet's `--pod-max-pids`).
    #[arg(long, default_value_t = 4096)]
    pod_max_pids: i64,
    /// How many pods this node accepts (kubelet's `--max-pods`).
    #[arg(long, default_value_t = 110)]
    max_pods: i64,
    /// A container's log is rotated when it would grow past this many MiB; one rotated file
    /// is kept (kubelet's `--container-log-max-size`).
    #[arg(long, default_value_t = 10)]
    container_log_max_mib: u64,
    /// A host path (and everything below it) pods may mount with hostPath although the
    /// default policy denies it (`/`, `/etc`, `/proc`, `/sys`, `/dev`, `/boot`, the data
    /// dir). Repeatable.
    #[arg(long = "allow-host-path", value_name = "PATH")]
    allowed_host_paths: Vec<PathBuf>,
    /// The pod network's addresses: each pod gets one, the bridge the first (k3s's
    /// `--cluster-cidr`).
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// The prefix length of each node's share of `--cluster-cidr`, its Node's `spec.podCIDR`
    /// (kube-controller-manager's `--node-cidr-mask-size`): the node of `berth up` takes the
    /// first, the controllers give every other node the lowest free one. A cluster CIDR no
    /// larger than that is one node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// The host bridge pods are plugged into.
    #[arg(long, default_value = "berth0")]
    pod_bridge: String,
    /// Run no service proxy: cluster IPs, node ports and load balancer ports are not
    /// forwarded on this machine (as k3s's `--disable-kube-proxy`).
    #[arg(long)]
    disable_kube_proxy: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the API server on its store (embedded, or etcd with `--store`),
    /// the scheduler, the controllers and the node agent.
    Up {
        #[command(flatten)]
        data_dir: DataDir,
        /// Where the cluster's objects are kept: `sqlite` (the embedded store) or an etcd URL.
        ///
        /// `sqlite`, the default: the embedded store in <data-dir>/store, durable on this
        /// machine's disk, the fastest and nothing to run beside berth. Or an etcd cluster, the
        /// store Kubernetes itself uses:
        /// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?timeout=5s]`, with TLS
        /// `etcds://…?ca=FILE[&cert=FILE&key=FILE]` (keys under PREFIX, default /berth/; every
        /// etcd call bounded by the timeout, then answered with 503). Choose etcd to keep the
        /// state off this machine's disk, replicated, so it survives losing this disk or a
        /// minority of etcd's members, or to let several berths share one store (they take
        /// turns running the controllers). The data dir still holds the certificates, tokens
        /// and pods' files, and is still locked to one berth. `berth store export|import` moves
        /// the objects from one store to another.
        #[arg(long, value_name = "URL", default_value = "sqlite")]
        store: store_cli::StoreUrl,
        /// Address to serve the Kubernetes API on (loopback unless you say otherwise).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Seconds between compactions of the store's history (watches can resume from any
        /// revision newer than the last compaction).
        #[arg(long, default_value_t = 300)]
        compaction_interval_seconds: u64,
        /// Where Services' cluster IPs come from (kube-apiserver's
        /// `--service-cluster-ip-range`; k3s's `--service-cidr`).
        #[arg(long, default_value = "10.43.0.0/16")]
        service_cidr: berth_apiserver::ServiceCidr,
        /// Where NodePort and LoadBalancer Services' ports come from.
        #[arg(long, default_value = "30000-32767")]
        service_node_port_range: berth_apiserver::NodePortRange,
        /// The name this machine registers as a Node (default: its hostname).
        #[arg(long)]
        node_name: Option<String>,
        /// The address this machine's Node reports (kubelet's `--node-ip`), where the API
        /// server and other nodes reach it; default loopback. The node agent's certificate
        /// covers loopback and the `--listen` address, so pass that one.
        #[arg(long)]
        node_ip: Option<std::net::IpAddr>,
        /// Run only the control plane (API server and scheduler), no node agent: this machine
        /// runs no pods (as k3s's `--disable-agent`).
        #[arg(long)]
        disable_agent: bool,
        /// Run no controllers (ReplicaSets, Deployments, garbage collection, namespaces), as
        /// k3s's `--disable-controller-manager`.
        #[arg(long)]
        disable_controller_manager: bool,
        /// Seconds a node may go without heartbeats (Lease renewals, status posts) before the
        /// node lifecycle controller marks it unreachable and taint-based eviction begins
        /// (`--node-monitor-grace-period`). Keep it well above the 10 s at which node agents
        /// renew their Leases.
        #[arg(long, default_value_t = 40)]
        node_monitor_grace_period_seconds: u64,
        /// Do not install the built-in StorageClasses `local-path` (the default class) and
        /// `local-ext4`, as k3s's `--disable local-storage`. Without this flag they are created
        /// once per data dir, on its first start without the flag (a marker file in the data
        /// dir records it), so a class you delete or edit later stays as you left it.
        #[arg(long)]
        disable_storage_classes: bool,
        #[command(flatten)]
        agent: AgentFlags,
    },
    /// Stop every container a previous `berth up` left running on this data dir and remove
    /// the pods' files from this machine (the API objects are kept; `berth up` starts the pods
    /// again). `berth up` itself leaves containers running when it stops, on purpose.
    Down {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Join a running berth as one more node: run only this machine's node agent, pod
    /// network, service proxy and storage node plugin against the API server at `--server`,
    /// with a join token from `berth token create` (as `kubeadm join`).
    Agent(Box<agent::AgentArgs>),
    /// Manage the join tokens nodes use with `berth agent` (bootstrap tokens, as
    /// `kubeadm token`).
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Print the admin kubeconfig.
    Kubeconfig {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Print berth's version and the Kubernetes API version it serves.
    Version,
    /// Move the cluster's objects between stores (the embedded one and etcd).
    ///
    /// An export of every key read at one revision, imported into an empty store: uids and
    /// data unchanged.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Manage the images pods run from (kept in `<data-dir>/images`).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Tell berth's story against a running berth, measured (see examples/adder/).
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Measure workloads against a running berth.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Write every key and value of the store, read at one revision, as JSON lines.
    ///
    /// A header (format, version, revision), one `{"key","value"}` line per key (the stored bytes;
    /// `valueBase64` for bytes that are not UTF-8), a trailer with the count. It holds Secrets
    /// in the clear (the file is made owner-only). Refused on a data dir a `berth up` runs on.
    Export {
        #[command(flatten)]
        data_dir: DataDir,
        /// The store to read: `sqlite` (the data dir's embedded store) or an etcd URL as for
        /// `berth up --store`.
        #[arg(long, value_name = "URL", default_value = "sqlite")]
        store: store_cli::StoreUrl,
        /// Write to FILE instead of stdout.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write an export into an empty store, then read it back to check it.
    ///
    /// A store that holds any key is refused. The keys are written in transactions within
    /// etcd's limits. Refused on a data dir a `berth up` runs on.
    Import {
        #[command(flatten)]
        data_dir: DataDir,
        /// The store to write: `sqlite` (the data dir's embedded store, created if needed) or
        /// an etcd URL as for `berth up --store`.
        #[arg(long, value_name = "URL", default_value = "sqlite")]
        store: store_cli::StoreUrl,
        /// The export (`-` for stdin).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum DemoCommand {
    /// The adder: three replicas keeping a total in memory disagree; a locked file on a
    /// shared volume and then PostgreSQL in a StatefulSet agree; the database's pod comes back
    /// with its name, DNS name and data. Exits non-zero if users see anything else.
    Adder {
        #[command(flatten)]
        data_dir: DataDir,
        #[command(flatten)]
        options: demo::DemoOptions,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Adds per second and latency through the adder's Service in memory, file and database
    /// mode with three replicas, and one replica in memory as the upper bound.
    Adder {
        #[command(flatten)]
        data_dir: DataDir,
        #[command(flatten)]
        options: demo::BenchOptions,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Load an OCI-layout or docker-archive (`docker save`) tarball.
    Import {
        #[command(flatten)]
        data_dir: DataDir,
        /// The tarball.
        file: PathBuf,
    },
    /// Make an image of one program on this machine: the program at /bin/<file name> as the
    /// Entrypoint, with its ELF interpreter and the shared libraries its loader resolves.
    Pack {
        #[command(flatten)]
        data_dir: DataDir,
        /// The reference pods use, e.g. `adder:latest`.
        #[arg(long)]
        name: String,
        /// The program (an ELF executable).
        program: PathBuf,
    },
    /// List the images.
    Ls {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Remove an image by reference or ID; layers no other image uses are deleted.
    Rm {
        #[command(flatten)]
        data_dir: DataDir,
        /// e.g. `busybox`, `docker.io/library/busybox:1.36` or `sha256:…`.
        reference: String,
    },
}

fn main() -> anyhow::Result<()> {
    // The container shim and exec helper fork through libcontainer, so they must run before
    // clap, tokio or any thread exists.
    if let Some(code) = berth_runtime::dispatch_hidden_subcommand() {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            data_dir,
            store,
            listen,
            compaction_interval_seconds,
            service_cidr,
            service_node_port_range,
            node_name,
            node_ip,
            disable_agent,
            disable_controller_manager,
            node_monitor_grace_period_seconds,
            disable_storage_classes,
            agent,
        } => {
            init_tracing();
            let data_dir = data_dir.resolve()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(up(
                data_dir,
                &store,
                listen,
                Duration::from_secs(compaction_interval_seconds.max(1)),
                (service_cidr, service_node_port_range),
                (!disable_controller_manager)
                    .then(|| controllers_config(node_monitor_grace_period_seconds, &agent))
                    .transpose()?,
                !disable_storage_classes,
                (!disable_agent).then(|| {
                    let node_ip = node_ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
                    (node_name.unwrap_or_else(default_node_name), node_ip, agent)
                }),
            ))
        }
        Command::Agent(args) => {
            init_tracing();
            agent::run(*args)
        }
        Command::Token { command } => {
            init_tracing_with("warn");
            token::run(command)
        }
        Command::Kubeconfig { data_dir } => {
            let path = berth_apiserver::kubeconfig_path(&data_dir.resolve()?);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {} (has `berth up` run with this data dir?)",
                    path.display()
                )
            })?;
            print!("{text}");
            Ok(())
        }
        Command::Store { command } => {
            init_tracing_with("warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            match command {
                StoreCommand::Export {
                    data_dir,
                    store,
                    output,
                } => {
                    let data_dir = data_dir.resolve()?;
                    runtime.block_on(store_cli::export(&store, &data_dir, output.as_deref()))
                }
                StoreCommand::Import {
                    data_dir,
                    store,
                    file,
                } => {
                    let data_dir = data_dir.resolve()?;
                    runtime.block_on(store_cli::import(&store, &data_dir, &file))
                }
            }
        }
        Command::Image { command } => image(command),
        Command::Demo {
            command: DemoCommand::Adder { data_dir, options },
        } => {
            let client = story_client(&data_dir, &options.common)?;
            client.block_on(|client| demo::adder(client, options))
        }
        Command::Bench {
            command: BenchCommand::Adder { data_dir, options },
        } => {
            let client = story_client(&data_dir, &options.common)?;
            client.block_on(|client| demo::bench(client, options))
        }
        Command::Down { data_dir } => {
            init_tracing();
            let data_dir = data_dir.resolve()?;
            // Under a running `berth up` this would kill the pods its agent is running.
            let store = data_dir.join("store");
            let _lock = match berth_store::sqlite::lock_dir(&store) {
                Err(berth_store::StoreError::Locked(_)) => {
                    anyhow::bail!(
                        "berth up is running on {}; stop it first",
                        data_dir.display()
                    )
                }
                other => other.ok(),
            };
            let exe = std::env::current_exe().context("cannot find the berth binary")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let drivers = csi_drivers(&Arc::new(berth_storage::Storage::new(&data_dir)));
            let cleaned = runtime.block_on(berth_node::down_with(&data_dir, &exe, &drivers))?;
            // The routes to other nodes' pods (this network namespace's, marked as berth's).
            match berth_net::routes::teardown(&berth_net::routes::Netlink) {
                Ok(0) => {}
                Ok(n) => println!("removed {n} route(s) to other nodes' pods"),
                Err(e) => tracing::debug!(error = %e, "cannot remove routes to other nodes' pods"),
            }
            println!(
                "stopped and removed {cleaned} pod(s) from {}",
                data_dir.display()
            );
            Ok(())
        }
        Command::Version => {
            println!(
                "berth {} (Kubernetes API {})",
                env!("CARGO_PKG_VERSION"),
                berth_apiserver::handler::KUBERNETES_VERSION
            );
            Ok(())
        }
    }
}

fn image_store(data_dir: &DataDir) -> anyhow::Result<berth_image::ImageStore> {
    let dir = data_dir.resolve()?;
    berth_apiserver::files::ensure_private_dir(&dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let root = dir.join("images");
    berth_image::ImageStore::open(&root)
        .with_context(|| format!("cannot open the image store in {}", root.display()))
}

fn image(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Import { data_dir, file } => {
            let store = image_store(&data_dir)?;
            let imported = store
                .import(&file)
                .with_context(|| format!("cannot import {}", file.display()))?;
            for image in imported {
                for reference in &image.references {
                    println!("imported {reference} ({})", short_id(&image.record.id));
                }
            }
        }
        ImageCommand::Pack {
            data_dir,
            name,
            program,
        } => {
            let store = image_store(&data_dir)?;
            let image = berth_image::pack::pack(&store, &program, &name)
                .with_context(|| format!("cannot make the image {name}"))?;
            for reference in &image.references {
                println!("packed {reference} ({})", short_id(&image.record.id));
            }
        }
        ImageCommand::Ls { data_dir } => {
            let store = image_store(&data_dir)?;
            println!(
                "{:<60} {:<14} {:>10}  CREATED",
                "REFERENCE", "IMAGE ID", "SIZE"
            );
            for image in store.list()? {
                println!(
                    "{:<60} {:<14} {:>10}  {}",
                    image.reference,
                    short_id(&image.id),
                    human_size(image.size),
                    image.created.as_deref().unwrap_or("-")
                );
            }
        }
        ImageCommand::Rm {
            data_dir,
            reference,
        } => {
            let store = image_store(&data_dir)?;
            for removed in store.remove(&reference)? {
                println!("removed {removed}");
            }
        }
    }
    Ok(())
}

/// The first 12 hex digits of a digest, as `docker images` shows IDs.
fn short_id(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What `berth demo` and `berth bench` run on: a client of the running berth on this data dir,
/// with the adder packed into its image store first.
struct StoryClient {
    runtime: tokio::runtime::Runtime,
    kubeconfig: PathBuf,
}

impl StoryClient {
    fn block_on<F, Fut>(self, story: F) -> anyhow::Result<()>
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        self.runtime.block_on(async {
            let client = admin_client(&self.kubeconfig).await?;
            client
                .apiserver_version()
                .await
                .context("berth is not answering: start it with `berth up` first")?;
            story(client).await
        })
    }
}

fn story_client(data_dir: &DataDir, common: &demo::Common) -> anyhow::Result<StoryClient> {
    let kubeconfig = berth_apiserver::kubeconfig_path(&data_dir.resolve()?);
    if !kubeconfig.exists() {
        anyhow::bail!(
            "no berth on this data dir ({} is missing): start it with `berth up` first",
            kubeconfig.display()
        );
    }
    let adder = demo::find_adder(common.adder.as_deref())?;
    let store = image_store(data_dir)?;
    let image = berth_image::pack::pack(&store, &adder, "adder:latest")
        .with_context(|| format!("cannot make the image adder:latest of {}", adder.display()))?;
    println!(
        "packed {} ({}) from {}",
        image.references.join(", "),
        short_id(&image.record.id),
        adder.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(StoryClient {
        runtime,
        kubeconfig,
    })
}

fn init_tracing() {
    init_tracing_with("info");
}

/// Logs to stderr at `BERTH_LOG`'s levels, else at `default`.
fn init_tracing_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The machine's hostname as a Node name: lowercase, and `localhost` if it has none.
fn default_node_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().to_lowercase();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

#[allow(clippy::too_many_arguments)]
async fn up(
    data_dir: PathBuf,
    store_url: &store_cli::StoreUrl,
    listen: SocketAddr,
    compaction_interval: Duration,
    (service_cidr, service_node_port_range): (
        berth_apiserver::ServiceCidr,
        berth_apiserver::NodePortRange,
    ),
    controllers: Option<berth_controllers::Config>,
    storage_classes: bool,
    agent: Option<(String, std::net::IpAddr, AgentFlags)>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    berth_apiserver::files::ensure_private_dir(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    // Held until berth stops: the store, and for etcd the data dir's lock.
    let opened = store_cli::open_for_up(store_url, &data_dir).await?;
    let store = opened.store.clone();
    if storage_classes && matches!(store_url, store_cli::StoreUrl::Etcd(_)) {
        store_cli::forget_classes_marker_for_fresh_store(store.as_ref(), &data_dir).await?;
    }
    let config = berth_apiserver::Config {
        data_dir: data_dir.clone(),
        listen,
        store,
        compaction_interval,
        service_cidr,
        service_node_port_range,
    };
    let server = berth_apiserver::ApiServer::bind(config).await?;
    if storage_classes {
        // Before "berth is up", so the first claim already finds the default class.
        berth_apiserver::storage::install_builtin_classes(server.registry(), &data_dir)
            .await
            .context("cannot install the built-in StorageClasses")?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client = admin_client(server.kubeconfig_path()).await?;
    let scheduler = spawn_scheduler(client.clone(), stop_rx.clone());
    let identity = berth_controllers::leader::identity(&default_node_name(), &data_dir);
    let controllers = if let Some(config) = controllers {
        tokio::spawn(berth_controllers::run_with(
            client.clone(),
            identity,
            config,
            stopping(stop_rx.clone()),
        ))
    } else {
        tokio::spawn(async {})
    };
    // Nodes that join with `berth agent` get their serving certificates signed here.
    agent::spawn_serving_signer(client.clone(), &data_dir, stop_rx.clone());
    let agent = match agent {
        Some((node_name, node_ip, flags)) => {
            let services = service_cidr.to_string();
            let cluster = cluster_cidr(&flags)?;
            // The first node subnet, on the Node from its start: no waiting for the controllers.
            let pod_cidr = cluster.first_subnet(flags.node_cidr_mask_size);
            let setup = agent::NodeSetup::control_plane(&data_dir, node_ip, pod_cidr)?;
            spawn_agent(
                client, &data_dir, node_name, flags, &services, setup, stop_rx,
            )
            .await?
        }
        None => tokio::spawn(async {}),
    };
    let kubeconfig = server.kubeconfig_path().display().to_string();
    println!(
        "berth is up: the Kubernetes API is at https://{} (ready in {} ms)",
        server.local_addr(),
        started.elapsed().as_millis()
    );
    println!("kubeconfig: {kubeconfig}");
    println!("try:        kubectl --kubeconfig {kubeconfig} get namespaces");
    server
        .serve(async {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await;
    // The scheduler, the controllers and the agent stop at their next await; a stuck request
    // must not hold up the exit. Containers keep running: the next `berth up` adopts them.
    let stopped = futures::future::join3(scheduler, controllers, agent);
    if tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .is_err()
    {
        tracing::warn!("the scheduler, the controllers or the node agent did not stop in time");
    }
    tracing::info!("berth stopped");
    Ok(())
}

/// A client of the API server over loopback with the admin kubeconfig berth just wrote:
/// the scheduler and the node agent use it exactly as they would from another machine.
async fn admin_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .context("the admin kubeconfig is not usable")?;
    kube::Client::try_from(config).context("cannot build a client of the API server")
}

/// The controllers' settings from `berth up`'s flags.
fn controllers_config(
    node_monitor_grace_period_seconds: u64,
    flags: &AgentFlags,
) -> anyhow::Result<berth_controllers::Config> {
    let mut config = berth_controllers::Config::default();
    config.node_grace.monitor = Duration::from_secs(node_monitor_grace_period_seconds.max(1));
    let range =
        berth_controllers::nodeipam::Range::new(&flags.cluster_cidr, flags.node_cidr_mask_size)
            .map_err(|e| anyhow::anyhow!("--cluster-cidr or --node-cidr-mask-size: {e}"))?;
    config.node_cidrs = Some(range);
    Ok(config)
}

/// `--cluster-cidr`, parsed.
fn cluster_cidr(flags: &AgentFlags) -> anyhow::Result<berth_net::Cidr> {
    flags
        .cluster_cidr
        .parse()
        .with_context(|| format!("--cluster-cidr {}", flags.cluster_cidr))
}

/// Resolves when berth is stopping (or the sender is gone, which also means that).
async fn stopping(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn spawn_scheduler(
    client: kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let scheduler = berth_scheduler::Scheduler::new(client);
    tokio::spawn(async move {
        if let Err(e) = scheduler.run(stopping(stop)).await {
            tracing::error!(error = %e, "the scheduler stopped");
        }
    })
}

/// Starts what runs on every node (of `berth up`, or joined with `berth agent`): the node
/// agent, the pod network, the service proxy and the storage node plugin and provisioner; pods
/// under `<data>/pods`, the runtime's bundles under `<data>/run`, images from `<data>/images`.
async fn spawn_agent(
    client: kube::Client,
    data_dir: &std::path::Path,
    node_name: String,
    flags: AgentFlags,
    service_cidr: &str,
    setup: agent::NodeSetup,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let exe = std::env::current_exe().context("cannot find the berth binary to run shims")?;
    let mut config =
        berth_node::AgentConfig::new(&node_name, data_dir, &data_dir.join("images"), &exe);
    config.node_ip = setup.node_ip;
    config.server_cert_pem = setup.serving.cert_pem;
    config.server_key_pem = setup.serving.key_pem;
    config.server_token = setup.serving.token;
    config.kubelet_port = setup.kubelet_port;
    config.pids_limit = flags.pod_max_pids.max(1);
    config.max_pods = flags.max_pods.max(0);
    config.log_max_bytes = flags.container_log_max_mib.max(1) * 1024 * 1024;
    let cluster_cidr = cluster_cidr(&flags)?;
    config.allowed_host_paths = flags.allowed_host_paths;
    // This node's share of the cluster CIDR: its Node's podCIDR.
    let network = berth_net::NetworkConfig {
        bridge: flags.pod_bridge,
        cidr: setup.pod_cidr,
    };
    if setup.publish_pod_cidr {
        spawn_publish_pod_cidr(&client, &node_name, setup.pod_cidr, stop.clone());
    }
    // Routes to the other nodes' pods; removed when the node stops, so the returned task
    // waits for them.
    let routes = {
        let local = berth_net::routes::Local {
            node_name: node_name.clone(),
            pod_cidr: setup.pod_cidr,
            node_ip: setup.node_ip,
        };
        tokio::spawn(berth_net::routes::run(
            client.clone(),
            local,
            Arc::new(berth_net::routes::Netlink),
            stopping(stop.clone()),
        ))
    };
    let service_cidr: berth_net::Cidr = service_cidr
        .parse()
        .with_context(|| format!("--service-cidr {service_cidr}"))?;
    // The cluster DNS sits behind the kube-dns Service (at .10, as in k3s) when the proxy
    // runs to carry it there.
    let dns_service_ip = (!flags.disable_kube_proxy)
        .then(|| service_cidr.address(10))
        .flatten();
    config.cluster_dns = if setup.serve_dns {
        spawn_cluster_dns(&client, &network, dns_service_ip, stop.clone()).await
    } else {
        // The proxy's rules name the bridge; on `berth up`'s node the DNS server made it.
        use berth_net::Links;
        let (gateway, prefix) = (network.cidr.gateway(), network.cidr.prefix());
        if let Err(e) = berth_net::link::Netlink.ensure_bridge(&network.bridge, gateway, prefix) {
            tracing::warn!(error = %e, bridge = %network.bridge, "cannot make the pod bridge");
        }
        dns_service_ip.map(Into::into)
    };
    if !flags.disable_kube_proxy {
        spawn_proxy(
            &client,
            &node_name,
            &network.bridge,
            cluster_cidr,
            service_cidr,
            stop.clone(),
        );
    }
    config.pod_network = Some(network);
    // The built-in provisioners run beside the agent: their volumes live on this node. One
    // `Storage` serves both, so its per-volume locks cover provisioning and staging.
    let storage = Arc::new(berth_storage::Storage::new(data_dir));
    config.csi_drivers = csi_drivers(&storage);
    {
        let (client, node_name, storage) = (client.clone(), node_name.clone(), storage.clone());
        tokio::spawn(berth_storage::run_with(
            client,
            node_name,
            storage,
            stopping(stop.clone()),
        ));
    }
    let agent = berth_node::Agent::new(client, config);
    Ok(tokio::spawn(async move {
        if let Err(e) = agent.run(stopping(stop)).await {
            tracing::error!(error = %e, "the node agent stopped");
        }
        let _ = routes.await;
    }))
}

/// The CSI drivers of this node: berth's capacity-enforced volumes (`local-ext4.berth.dev`),
/// a loop-mounted ext4 image each, staged by berth-storage.
fn csi_drivers(storage: &Arc<berth_storage::Storage>) -> berth_node::CsiDrivers {
    let driver: Arc<dyn berth_node::CsiDriver> = Arc::new(LocalExt4(storage.clone()));
    [(berth_storage::LOCAL_EXT4_DRIVER.to_string(), driver)].into()
}

struct LocalExt4(Arc<berth_storage::Storage>);

impl berth_node::CsiDriver for LocalExt4 {
    fn stage(&self, handle: &str, staging_dir: &std::path::Path) -> Result<(), String> {
        self.0.stage(handle, staging_dir).map_err(|e| e.to_string())
    }

    fn unstage(&self, handle: &str, staging_dir: &std::path::Path) -> Result<(), String> {
        self.0
            .unstage(handle, staging_dir)
            .map_err(|e| e.to_string())
    }
}

/// Starts the service proxy: nftables rules for every Service, kept current from the API.
fn spawn_proxy(
    client: &kube::Client,
    node_name: &str,
    bridge: &str,
    cluster_cidr: berth_net::Cidr,
    service_cidr: berth_net::Cidr,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // The whole cluster CIDR, not this node's share: traffic from any node's pods is "from a
    // pod".
    let config = berth_net::proxy::ProxyConfig {
        node_name: node_name.to_string(),
        bridge: bridge.to_string(),
        cluster_cidr,
        service_cidr,
        sysctl_root: PathBuf::from("/proc/sys"),
    };
    let proxy = berth_net::proxy::Proxy::new(config, Arc::new(berth_net::proxy::nftables::Kernel));
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = proxy.run(client, stopping(stop)).await {
            tracing::error!(error = %e, "the service proxy stopped; Services are not reachable through their addresses");
        }
    });
}

/// Writes `pod_cidr` into the Node `node_name` once the node agent has registered it without
/// one (with a resourceVersion precondition: podCIDR is written once, then immutable). A
/// different podCIDR already there is reported: this node's pods are then not where the other
/// nodes route that Node's pods.
fn spawn_publish_pod_cidr(
    client: &kube::Client,
    node_name: &str,
    pod_cidr: berth_net::Cidr,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use k8s_openapi::api::core::v1::Node;
    let api = kube::Api::<Node>::all(client.clone());
    let name = node_name.to_string();
    let publish = async move {
        let cidr = pod_cidr.to_string();
        loop {
            match api.get_opt(&name).await {
                Ok(Some(node)) => match berth_controllers::nodeipam::pod_cidr(&node) {
                    Some(have) if have == cidr => return,
                    Some(have) => {
                        tracing::error!(node = %name, %have, want = %cidr, "the Node has another podCIDR than this node's pod network uses");
                        return;
                    }
                    None => {
                        let patch = serde_json::json!({
                            "metadata": {"resourceVersion": node.metadata.resource_version},
                            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                        });
                        let params = kube::api::PatchParams::default();
                        match api
                            .patch(&name, &params, &kube::api::Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => {
                                tracing::info!(node = %name, %cidr, "the Node carries its pod CIDR");
                                return;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot write the Node's podCIDR yet")
                            }
                        }
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "cannot read the Node yet"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            () = publish => {}
            () = stopping(stop) => {}
        }
    });
}

/// Starts the cluster DNS server on the pod bridge's address, port 53, where every pod
/// reaches it, and returns the address pods' resolv.conf names: `service_ip`, where the
/// `kube-system/kube-dns` Service written here leads to the server, else the server's own. Without
/// a server (the bridge cannot be made, the port is taken) pods use the host's resolver and
/// berth says why.
async fn spawn_cluster_dns(
    client: &kube::Client,
    network: &berth_net::NetworkConfig,
    service_ip: Option<std::net::Ipv4Addr>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<std::net::IpAddr> {
    use berth_net::Links;
    let gateway = network.cidr.gateway();
    // The agent makes the bridge too; the DNS server needs its address first.
    if let Err(e) =
        berth_net::link::Netlink.ensure_bridge(&network.bridge, gateway, network.cidr.prefix())
    {
        tracing::warn!(error = %e, "no pod bridge, so no cluster DNS; pods use the host's resolver");
        return None;
    }
    let address = std::net::SocketAddr::from((gateway, 53));
    let config = berth_dns::Config {
        nameservers: vec![service_ip.unwrap_or(gateway).into()],
        ..berth_dns::Config::default()
    };
    let dns = match berth_dns::Server::bind(address, client.clone(), config).await {
        Ok(dns) => dns,
        Err(e) => {
            tracing::warn!(%address, error = %e, "cannot serve cluster DNS; pods use the host's resolver");
            return None;
        }
    };
    tokio::spawn(async move {
        if let Err(e) = dns.run(stopping(stop)).await {
            tracing::error!(error = %e, "the cluster DNS server stopped");
        }
    });
    let Some(service_ip) = service_ip else {
        return Some(gateway.into());
    };
    // The API server starts serving after this returns, so the Service is written meanwhile.
    let client = client.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        loop {
            match berth_dns::service::ensure(&client, service_ip.into(), address).await {
                Ok(()) => return,
                Err(e @ kube::Error::Service(_)) => {
                    tracing::error!(error = %e, "pods' resolv.conf names a kube-dns Service that is not berth's");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "cannot write the kube-dns Service yet"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
    Some(service_ip.into())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers berth still runs; it stops when killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
