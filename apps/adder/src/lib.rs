//! The adder: the stateful service of berth's story. `POST /add` with a number returns the
//! running total and the name of the pod that answered; `GET /total` reads it; `/healthz` is
//! for probes.
//!
//! Where the total lives is the whole point of the story, so it is a [`Mode`]:
//! - `memory`: each process keeps its own total. Scale it to three replicas behind a Service
//!   and users see three different totals, and a total that goes down.
//! - `file`: one file on a shared (ReadWriteMany) volume, each add under an exclusive
//!   `flock`: every replica sees one total and no add is lost.
//!
//! A `db` mode (PostgreSQL in a StatefulSet) is one more [`store::Store`] implementation and
//! one more [`Mode`] variant; the HTTP layer does not change.
//!
//! Modules: [`store`] (the total), [`http`] (the routes). The binary (`src/main.rs`) reads
//! the flags and serves.

pub mod http;
pub mod store;

use std::path::PathBuf;

pub use store::{FileStore, MemoryStore, Store, StoreError};

/// Where the total lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A process-local total.
    Memory,
    /// The total in the file at this path, shared by every process that opens it.
    File(PathBuf),
}

impl Mode {
    /// The store for this mode.
    pub fn open(&self) -> Box<dyn Store> {
        match self {
            Mode::Memory => Box::new(MemoryStore::new()),
            Mode::File(path) => Box::new(FileStore::new(path)),
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
