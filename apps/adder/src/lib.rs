//! The adder: the stateful service of berth's story. `POST /add` with a number returns the
//! running total and the name of the pod that answered; `GET /total` reads it; `/healthz` is
//! for probes.
//!
//! Where the total lives is the whole point of the story, so it is a [`Mode`]:
//! - `memory`: each process keeps its own total. Scale it to three replicas behind a Service
//!   and users see three different totals, and a total that goes down.
//! - `file`: one file on a shared (ReadWriteMany) volume, each add under an exclusive
//!   `flock`: every replica sees one total and no add is lost.
//! - `db`: one row in PostgreSQL (a StatefulSet in the story), one transaction per add,
//!   retried while the database restarts so users see a delay instead of an error.
//!
//! Modules: [`store`] (the total in memory or a file), [`db`] (the total in PostgreSQL),
//! [`http`] (the routes). The binary (`src/main.rs`) reads the flags and serves.

pub mod db;
pub mod http;
pub mod store;

use std::path::PathBuf;

pub use db::{DbStore, RetryPolicy};
pub use store::{FileStore, MemoryStore, Store, StoreError};

/// Where the total lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A process-local total.
    Memory,
    /// The total in the file at this path, shared by every process that opens it.
    File(PathBuf),
    /// The total in the PostgreSQL database this connection string names
    /// (`host=postgres-0.postgres user=adder dbname=adder`), retried for up to the
    /// policy's budget while it is unavailable.
    Db { url: String, retry: RetryPolicy },
}

impl Mode {
    /// The store for this mode. Only a malformed database connection string fails here;
    /// nothing is connected yet.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Mode::Memory => Box::new(MemoryStore::new()),
            Mode::File(path) => Box::new(FileStore::new(path)),
            Mode::Db { url, retry } => Box::new(DbStore::new(url, *retry)?),
        })
    }

    /// The mode for logs (a connection string may hold a password, so it is not shown).
    pub fn describe(&self) -> String {
        match self {
            Mode::Memory => "memory".into(),
            Mode::File(path) => format!("file {}", path.display()),
            Mode::Db { url, retry } => match DbStore::new(url, *retry) {
                Ok(store) => format!("db ({}, retries for {:?})", store.target(), retry.budget),
                Err(e) => format!("db ({e})"),
            },
        }
    }
}

/// This machine's (in a pod: the pod's) host name, which is what Kubernetes sets to the pod
/// name, so replies say which replica answered.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
