//! `adder`: serves the running total over HTTP (see the library's docs for the routes and
//! modes). Flags can also come from the environment, which is how the Kubernetes manifests
//! in `examples/adder/` set them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use adder::http::App;
use adder::{Mode, store::DEFAULT_FILE};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeFlag {
    /// A total in this process's memory (each replica has its own).
    Memory,
    /// A total in the file `--file`, shared by every replica that mounts it.
    File,
    /// A total in the PostgreSQL database `--database-url`.
    Db,
}

/// A tiny HTTP service that adds numbers to a running total.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Where the total lives.
    #[arg(long, env = "ADDER_MODE", value_enum, default_value = "memory")]
    mode: ModeFlag,
    /// The total's file in `file` mode.
    #[arg(long, env = "ADDER_FILE", default_value = DEFAULT_FILE)]
    file: PathBuf,
    /// The database in `db` mode: a libpq-style connection string
    /// (`host=postgres-0.postgres user=adder dbname=adder`) or a `postgresql://` URL.
    #[arg(long, env = "ADDER_DATABASE_URL", required_if_eq("mode", "db"))]
    database_url: Option<String>,
    /// How long one request keeps retrying while the database is unavailable, in seconds.
    #[arg(long, env = "ADDER_DATABASE_RETRY_SECONDS", default_value_t = 60)]
    database_retry_seconds: u64,
    /// The address to listen on.
    #[arg(long, env = "ADDER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mode = match cli.mode {
        ModeFlag::Memory => Mode::Memory,
        ModeFlag::File => Mode::File(cli.file),
        ModeFlag::Db => Mode::Db {
            url: cli.database_url.unwrap_or_default(),
            retry: adder::RetryPolicy {
                budget: std::time::Duration::from_secs(cli.database_retry_seconds),
                ..Default::default()
            },
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(cli.listen, mode))
}

async fn serve(listen: SocketAddr, mode: Mode) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let pod = adder::hostname();
    let store = mode.open().context("opening the store")?;
    println!("adder on {listen} as {pod}, mode {}", mode.describe());
    let app = App::new(store, pod);
    // As PID 1 in a container SIGTERM has no default action; without a handler every pod
    // deletion would wait out the whole grace period.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| adder::http::handle(request, app.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection: {e}");
            }
        });
    }
}
