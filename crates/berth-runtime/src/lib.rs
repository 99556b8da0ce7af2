//! berth's container runtime: it turns a [`ContainerConfig`] into a running container and
//! reports how it is doing, over youki's libcontainer. This is the only crate that links
//! libcontainer.
//!
//! Start with [`Runtime`] (the async API the node agent uses). libcontainer forks without
//! exec, so it never runs in the agent's threaded process: each container is owned by a shim,
//! the berth binary re-executed as `berth __shim <bundle>`, and `kubectl exec` runs through
//! `berth __exec`. Both are dispatched by [`dispatch_hidden_subcommand`], which `berth`'s
//! `main` calls before it parses arguments or starts a thread.
//!
//! Modules:
//! - `config`: [`ContainerConfig`], [`Mount`], [`ExecRequest`];
//! - `spec`: `oci_spec`, the pure config → OCI spec function;
//! - `runtime`: [`Runtime`], the client side (bundles, shims, state, signals, removal);
//! - `shim`: the per-container shim process;
//! - `exec` and `exec_helper`: [`ExecProcess`] and the `__exec` helper process;
//! - `crilog`: the CRI-format log writer with size rotation;
//! - `record`: the bundle's files and how they are written;
//! - `cgroup`: cgroup placement, OOM detection and cleanup;
//! - `pod`: [`PodNamespaces`], namespaces shared by a pod's containers.

mod cgroup;
mod config;
mod crilog;
mod error;
mod exec;
mod exec_helper;
mod pod;
mod record;
mod runtime;
mod shim;
mod spec;

pub use config::{ContainerConfig, ExecRequest, Mount, MountKind};
pub use error::Error;
pub use exec::{ExecProcess, ExecStdin, Resizer};
pub use pod::PodNamespaces;
pub use runtime::{ContainerState, Runtime, Started};

pub(crate) const SHIM_SUBCOMMAND: &str = "__shim";
pub(crate) const EXEC_SUBCOMMAND: &str = "__exec";

/// Runs the hidden `__shim` / `__exec` subcommands if this process was started as one, and
/// returns its exit code; returns `None` for every other command line.
///
/// Call it first thing in `main`, before any thread or async runtime exists: both
/// subcommands fork through libcontainer, which is only safe in a single-threaded process.
pub fn dispatch_hidden_subcommand() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    let sub = args.next()?;
    if sub == SHIM_SUBCOMMAND {
        let bundle = args.next().and_then(|a| a.into_string().ok());
        return Some(match shim::bundle_arg(bundle) {
            Some(bundle) => shim::main(&bundle),
            None => {
                eprintln!("usage: berth {SHIM_SUBCOMMAND} <absolute bundle dir>");
                2
            }
        });
    }
    if sub == EXEC_SUBCOMMAND {
        let bundle = args.next().and_then(|a| a.into_string().ok());
        let request = args.next().and_then(|a| a.into_string().ok());
        return Some(match (shim::bundle_arg(bundle), request) {
            (Some(bundle), Some(request)) => exec_helper::main(&bundle, &request),
            _ => {
                eprintln!("usage: berth {EXEC_SUBCOMMAND} <absolute bundle dir> <request json>");
                2
            }
        });
    }
    None
}
