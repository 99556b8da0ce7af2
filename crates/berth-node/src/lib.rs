//! berth's node agent: runs the pods bound to this node, as kubelet does.
//!
//! Where to start: [`Agent::run`] registers the [`node`], keeps its Lease fresh, watches the
//! pods bound to the node and gives each its own [`worker::PodWorker`] — the one reconcile
//! loop of a pod — which sets up the [`sandbox`] and volumes, starts containers through
//! berth-runtime's shims, runs probes, and posts the status computed by [`status`].
//!
//! The agent is a client of the API server (kube-rs over HTTPS) like any other, so the same
//! code runs beside the API server in `berth up` and on another machine with `berth agent`.

pub mod backoff;
pub mod command;
pub mod env;
mod error;
pub mod exec;
pub mod logs;
pub mod node;
pub mod plan;
pub mod probe;
pub mod resolv;
pub mod rootfs;
pub mod sandbox;
pub mod server;
pub mod status;
pub mod streams;
pub mod subpath;
pub mod users;
pub mod volumes;
pub mod worker;

mod agent;
pub use agent::{Agent, AgentConfig, Context, down, down_with};
pub use error::Error;
pub use volumes::{CsiDriver, CsiDrivers};
