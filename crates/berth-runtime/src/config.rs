//! What the node agent asks for: a container's configuration, its mounts, and exec requests.
//! Plain data with validation; turning it into an OCI spec is `spec.rs`'s job.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Everything needed to run one container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Unique id, `[a-z0-9-_.]+`, at most 128 characters; the agent uses
    /// `<pod-uid>-<name>-<attempt>`.
    pub id: String,
    /// The pod's uid; the container's cgroup is `M/berth/pods/<pod_uid>/<id>`.
    pub pod_uid: String,
    /// The root file system, prepared by the agent (an absolute path).
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    /// argv, already resolved against the image's entrypoint and command.
    pub args: Vec<String>,
    /// `K=V` pairs. A default `PATH` is added when none is given, as Docker and containerd do.
    pub env: Vec<String>,
    /// Absolute working directory inside the container (`/` when empty).
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// Mounts in order, after the standard ones (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue,
    /// /sys). A mount whose destination equals a standard one replaces it.
    pub mounts: Vec<Mount>,
    /// The pod's IPC namespace file (from [`crate::PodNamespaces`]); `None` gives the container
    /// an IPC namespace of its own.
    pub ipc_namespace: Option<PathBuf>,
    /// The pod's network namespace file; `None` means the host's network namespace.
    pub net_namespace: Option<PathBuf>,
    pub memory_limit_bytes: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    pub pids_limit: Option<i64>,
    /// Written by the shim for the container's process (kubelet's per-QoS values); `None`
    /// leaves the inherited score.
    pub oom_score_adj: Option<i32>,
    /// Where the shim writes the CRI-format log.
    pub log_path: PathBuf,
    /// The log is rotated to `<log_path>.1` when it would grow past this (0: never rotate).
    pub log_max_bytes: u64,
    /// Give the container a terminal; its output is then logged as stdout.
    pub tty: bool,
    /// Keep the FIFO `<bundle>/stdin` whose writes reach the container's stdin (for attach).
    pub stdin: bool,
}

/// One mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub kind: MountKind,
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A recursive bind mount of a host path (file or directory).
    Bind { source: PathBuf, readonly: bool },
    /// A fresh tmpfs (emptyDir with medium Memory, /dev/shm of a pod, ...).
    Tmpfs {
        size_bytes: Option<u64>,
        mode: Option<u32>,
    },
}

/// A command to run inside a running container (`kubectl exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// `K=V` pairs added to (or overriding) the container's environment.
    pub env_extra: Vec<String>,
    /// Run under a new terminal; output then arrives on stdout only, and
    /// [`crate::ExecProcess::resize`] works.
    pub tty: bool,
    /// Pass the caller's input through; otherwise the command's stdin is /dev/null.
    pub stdin: bool,
    /// Working directory; `None` uses the container's.
    pub cwd: Option<String>,
}

/// Longest container id the runtime accepts.
pub const MAX_ID_LEN: usize = 128;

/// Checks an id (of a container or a pod) against the characters that are safe in file names
/// and cgroup paths.
pub(crate) fn validate_id(what: &str, id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} {id:?} must be 1-{MAX_ID_LEN} characters of [a-z0-9-_.]"
        )))
    }
}

impl ContainerConfig {
    /// Rejects configurations that would fail later in a less readable way.
    pub fn validate(&self) -> Result<(), Error> {
        validate_id("container id", &self.id)?;
        validate_id("pod uid", &self.pod_uid)?;
        if !self.rootfs.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "rootfs {} is not absolute",
                self.rootfs.display()
            )));
        }
        if self.args.is_empty() {
            return Err(Error::InvalidConfig("args are empty".into()));
        }
        if !self.cwd.is_empty() && !self.cwd.starts_with('/') {
            return Err(Error::InvalidConfig(format!(
                "working directory {:?} is not absolute",
                self.cwd
            )));
        }
        if !self.log_path.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "log path {} is not absolute",
                self.log_path.display()
            )));
        }
        for mount in &self.mounts {
            if !mount.destination.is_absolute() {
                return Err(Error::InvalidConfig(format!(
                    "mount destination {} is not absolute",
                    mount.destination.display()
                )));
            }
            if let MountKind::Bind { source, .. } = &mount.kind
                && !source.is_absolute()
            {
                return Err(Error::InvalidConfig(format!(
                    "bind mount source {} is not absolute",
                    source.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("id", "0a1b-c_d.e").is_ok());
        for bad in ["", ".", "..", "A", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_id("id", bad).is_err(), "{bad:?}");
        }
    }
}
