//! [`Runtime`]: the node agent's handle on containers. It writes bundles, spawns a shim per
//! container, and reads what the shims record; it never links a fork-without-exec code path
//! into the agent's threads (libcontainer runs only in the shim and exec helper processes).
//!
//! Every answer comes from the bundle's files and the live processes they name, so a new
//! `Runtime` on the same root (after berth restarts) sees exactly what the old one saw.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use libcontainer::oci_spec::runtime::{PosixRlimitBuilder, Spec};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::Error;
use crate::cgroup;
use crate::config::{ContainerConfig, ExecRequest, validate_id};
use crate::exec::{ExecProcess, ExecStdin};
use crate::record::{
    self, CONFIG_FILE, EXIT_FILE, ExitRecord, Readiness, SHIM_CONFIG_FILE, SHIM_LOG_FILE,
    STATE_FILE, STDIN_FIFO, ShimConfig, StateRecord,
};
use crate::spec::oci_spec;

/// How long start() waits for the shim's verdict. Creating a container takes tens of
/// milliseconds; this only bounds a hung shim.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long remove() waits for a shim it killed to be gone, in milliseconds.
const SHIM_EXIT_TIMEOUT_MS: u16 = 5000;

/// The runtime's state directory and the binary it re-executes for shims and exec helpers.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    exe: PathBuf,
    /// berth's own cgroup `M`, below which new pods' cgroups go.
    cgroup_base: PathBuf,
    /// The hard `RLIMIT_NOFILE` containers' limits are lowered to, when berth may not raise it.
    nofile_ceiling: Option<u64>,
    /// The shims of containers seen running, by container id: while a shim's pidfd is not
    /// readable its container still runs, so polling state() costs one poll(2), not file reads.
    running: Arc<Mutex<HashMap<String, Watched>>>,
}

/// A running container as state() last read it, and its live shim.
#[derive(Debug)]
struct Watched {
    shim: OwnedFd,
    pid: i32,
    started_at: SystemTime,
}

/// A container that has just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    pub started_at: SystemTime,
}

/// What a container is doing, as kubelet's container statuses need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// The bundle exists and its shim is still starting the container.
    Created,
    /// The bundle exists but its shim died before the container started (the agent that
    /// started it was killed half-way): remove() it and start the container again.
    Abandoned,
    Running {
        pid: i32,
        started_at: SystemTime,
    },
    Exited {
        exit_code: i32,
        signal: Option<i32>,
        /// `Completed`, `Error`, `OOMKilled`, or `Unknown` when the shim died before the
        /// container (the container is then killed and reported with code 137 or 255).
        reason: String,
        message: Option<String>,
        started_at: SystemTime,
        finished_at: SystemTime,
    },
    /// No bundle with this id.
    Gone,
}

/// Which cgroup a pod's containers go to, recorded at its first container so that containers
/// started after berth moved to another cgroup still join their pod.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodRecord {
    cgroup: PathBuf,
}

impl Runtime {
    /// A runtime keeping its state under `root` (for example `<data>/run`) and re-executing
    /// `berth_exe` (which must dispatch [`crate::dispatch_hidden_subcommand`] first thing).
    pub fn new(root: &Path, berth_exe: &Path) -> Result<Runtime, Error> {
        // Owner-only: bundles hold the containers' configuration, environment included.
        for dir in [
            root.to_path_buf(),
            root.join("containers"),
            root.join("pods"),
        ] {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
        Ok(Runtime {
            root,
            exe: berth_exe.to_path_buf(),
            cgroup_base: cgroup::own_base()?,
            nofile_ceiling: nofile_ceiling(),
            running: Arc::default(),
        })
    }

    /// The bundle directory of a container.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// The FIFO whose writes reach the container's stdin (containers started with `stdin`).
    pub fn stdin_path(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join(STDIN_FIFO)
    }

    /// Creates and starts a container; returns once its process runs, or with the reason it
    /// could not start (for example that the executable is not in the image). A failed start
    /// (a hung shim too) leaves nothing behind.
    pub async fn start(&self, config: &ContainerConfig) -> Result<Started, Error> {
        config.validate()?;
        let bundle = self.bundle_dir(&config.id);
        match std::fs::create_dir(&bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(config.id.clone()));
            }
            Err(e) => return Err(Error::io(format!("creating {}", bundle.display()), e)),
        }
        let result = self.start_in(&bundle, config).await;
        if result.is_err()
            && let Err(e) = destroy(&bundle)
        {
            tracing::warn!(container = %config.id, error = %e, "cleaning up a failed start");
        }
        result
    }

    async fn start_in(&self, bundle: &Path, config: &ContainerConfig) -> Result<Started, Error> {
        let cgroups_path = self.pod_cgroup(&config.pod_uid)?.join(&config.id);
        let mut spec = oci_spec(config, &cgroups_path)?;
        if let Some(ceiling) = self.nofile_ceiling {
            lower_rlimits(&mut spec, ceiling);
        }
        spec.save(bundle.join(CONFIG_FILE))
            .map_err(|e| Error::Runtime(format!("writing {CONFIG_FILE}: {e}")))?;
        let shim = ShimConfig {
            id: config.id.clone(),
            cgroups_path,
            log_path: config.log_path.clone(),
            log_max_bytes: config.log_max_bytes,
            tty: config.tty,
            stdin: config.stdin,
        };
        record::write_atomic(bundle, SHIM_CONFIG_FILE, &shim)?;
        let log_path = bundle.join(SHIM_LOG_FILE);
        let shim_log = std::fs::File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;

        let mut child = tokio::process::Command::new(&self.exe)
            .arg(crate::SHIM_SUBCOMMAND)
            .arg(bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", self.exe.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Runtime("shim has no stdout".into()))?;
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let read = tokio::time::timeout(START_TIMEOUT, reader.read_line(&mut line)).await;
        // The process we spawned forks the real shim and exits at once; reap it (and do not
        // wait forever for one that never got that far).
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        let start_err = |message: String| Error::Start {
            id: config.id.clone(),
            message,
        };
        match read {
            Err(_) => return Err(start_err("timed out waiting for the shim".into())),
            Ok(Err(e)) => return Err(start_err(format!("reading from the shim: {e}"))),
            Ok(Ok(_)) => {}
        }
        match serde_json::from_str::<Readiness>(line.trim()) {
            Ok(Readiness::Started {
                pid,
                started_at_unix_nanos,
            }) => Ok(Started {
                pid,
                started_at: record::from_unix_nanos(started_at_unix_nanos),
            }),
            Ok(Readiness::Failed { message }) => Err(start_err(message)),
            Err(_) => {
                let diag = std::fs::read_to_string(&log_path).unwrap_or_default();
                Err(start_err(format!(
                    "the shim exited without reporting: {}",
                    diag.trim()
                )))
            }
        }
    }

    /// The pod's cgroup: the recorded one, or (first container) a new one below `M`.
    fn pod_cgroup(&self, pod_uid: &str) -> Result<PathBuf, Error> {
        validate_id("pod uid", pod_uid)?;
        let dir = self.root.join("pods");
        let name = format!("{pod_uid}.json");
        if let Some(rec) = record::read_optional::<PodRecord>(&dir, &name)? {
            return Ok(rec.cgroup);
        }
        let cgroup = cgroup::pod_path(&self.cgroup_base, pod_uid);
        record::write_atomic(
            &dir,
            &name,
            &PodRecord {
                cgroup: cgroup.clone(),
            },
        )?;
        Ok(cgroup)
    }

    /// The container's state, from its bundle and the processes it names.
    ///
    /// A container is `Running` for as long as its shim lives (the shim records the exit and
    /// cleans up before it exits), so once state() reports anything else, remove() finds no
    /// shim to wait for.
    pub fn state(&self, id: &str) -> Result<ContainerState, Error> {
        validate_id("container id", id)?;
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = running.get(id) {
                if !pidfd_exited(&w.shim) {
                    return Ok(ContainerState::Running {
                        pid: w.pid,
                        started_at: w.started_at,
                    });
                }
                running.remove(id);
            }
        }
        let bundle = self.bundle_dir(id);
        let Some(state) = record::read_optional::<StateRecord>(&bundle, STATE_FILE)? else {
            // The shim has not yet recorded itself (or there is no bundle at all).
            return Ok(if !bundle.is_dir() {
                ContainerState::Gone
            } else if unrecorded_shims(&bundle).is_empty() {
                ContainerState::Abandoned
            } else {
                ContainerState::Created
            });
        };
        match (live_shim(&state), state.init) {
            (Some(shim), Some(init)) => {
                let started_at = record::from_unix_nanos(init.started_at_unix_nanos);
                let watched = Watched {
                    shim,
                    pid: init.pid,
                    started_at,
                };
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                running.insert(id.to_string(), watched);
                Ok(ContainerState::Running {
                    pid: init.pid,
                    started_at,
                })
            }
            (Some(_), None) => Ok(ContainerState::Created),
            (None, init) => {
                if let Some(exit) = record::read_optional::<ExitRecord>(&bundle, EXIT_FILE)? {
                    return Ok(exited(exit));
                }
                match init {
                    Some(init) => Ok(exited(record_lost_shim(&bundle, init)?)),
                    None => Ok(ContainerState::Abandoned),
                }
            }
        }
    }

    /// Sends a signal to the container's init (PID 1 in its PID namespace; SIGKILL of it kills
    /// every process of the container). A container that already exited is left alone.
    ///
    /// The signal goes through a pidfd opened on the recorded pid and checked against the
    /// recorded start time, so a reused pid is never signalled.
    pub async fn signal(&self, id: &str, signal: i32) -> Result<(), Error> {
        validate_id("container id", id)?;
        let sig = Signal::from_named_raw(signal)
            .ok_or_else(|| Error::InvalidConfig(format!("unknown signal {signal}")))?;
        let bundle = self.bundle_dir(id);
        if !bundle.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        if bundle.join(EXIT_FILE).exists() {
            return Ok(());
        }
        let init = record::read_optional::<StateRecord>(&bundle, STATE_FILE)?.and_then(|s| s.init);
        let Some(init) = init else {
            return Err(Error::NotRunning(id.to_string()));
        };
        let Some(pidfd) = open_pidfd(init.pid, init.start_time) else {
            return Ok(());
        };
        match rustix::process::pidfd_send_signal(&pidfd, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::io(format!("signalling container {id}"), e.into())),
        }
    }

    /// Deletes an exited (or never started) container's bundle and any cgroup left behind,
    /// killing a shim that is still starting it. Idempotent; fails with
    /// [`Error::StillRunning`] while the container runs.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        match self.state(id)? {
            ContainerState::Gone => Ok(()),
            ContainerState::Running { .. } => Err(Error::StillRunning(id.to_string())),
            ContainerState::Created | ContainerState::Abandoned | ContainerState::Exited { .. } => {
                destroy(&self.bundle_dir(id))
            }
        }
    }

    /// The ids of all containers with a bundle, running or not (for re-adoption after a
    /// restart).
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let dir = self.root.join("containers");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes the pod's cgroup directories (in every hierarchy, with the now-empty levels
    /// above them) once its containers are removed. Idempotent.
    pub fn remove_pod_cgroup(&self, pod_uid: &str) -> Result<(), Error> {
        validate_id("pod uid", pod_uid)?;
        let dir = self.root.join("pods");
        let name = format!("{pod_uid}.json");
        let cg = match record::read_optional::<PodRecord>(&dir, &name)? {
            Some(rec) => rec.cgroup,
            None => cgroup::pod_path(&self.cgroup_base, pod_uid),
        };
        cgroup::remove_upwards(&cg)?;
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {name}"), e)),
        }
    }

    /// Runs a command in a running container.
    pub async fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecProcess, Error> {
        if request.argv.is_empty() {
            return Err(Error::InvalidConfig("exec needs a command".into()));
        }
        match self.state(id)? {
            ContainerState::Running { .. } => {}
            ContainerState::Gone => return Err(Error::NotFound(id.to_string())),
            _ => return Err(Error::NotRunning(id.to_string())),
        }
        let json = serde_json::to_string(&request).map_err(|e| Error::json("exec request", e))?;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg(crate::EXEC_SUBCOMMAND)
            .arg(self.bundle_dir(id))
            .arg(json)
            .stdin(if request.stdin || request.tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", self.exe.display()), e))?;
        let stdin = child.stdin.take();
        let (stdin, control) = match (stdin, request.tty) {
            (Some(pipe), true) => {
                let shared = Arc::new(tokio::sync::Mutex::new(pipe));
                let handle = request.stdin.then(|| ExecStdin::framed(shared.clone()));
                (handle, Some(shared))
            }
            (Some(pipe), false) => (Some(ExecStdin::raw(pipe)), None),
            (None, _) => (None, None),
        };
        Ok(ExecProcess {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            stdin,
            control,
        })
    }
}

fn exited(exit: ExitRecord) -> ContainerState {
    ContainerState::Exited {
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: exit.reason,
        message: exit.message,
        started_at: record::from_unix_nanos(exit.started_at_unix_nanos),
        finished_at: record::from_unix_nanos(exit.finished_at_unix_nanos),
    }
}

/// The shim died without recording an exit: nobody supervises the container any more, so
/// kill what is left of it and record the exit as `Unknown`.
fn record_lost_shim(bundle: &Path, init: record::InitRecord) -> Result<ExitRecord, Error> {
    let killed = match record::read_optional::<ShimConfig>(bundle, SHIM_CONFIG_FILE)? {
        Some(shim) => cgroup::kill_and_remove(&shim.cgroups_path)?,
        None => false,
    };
    let exit = ExitRecord {
        exit_code: if killed { 137 } else { 255 },
        signal: killed.then_some(9),
        reason: "Unknown".into(),
        message: Some(
            "the container's shim exited without recording how the container ended".into(),
        ),
        started_at_unix_nanos: init.started_at_unix_nanos,
        finished_at_unix_nanos: record::unix_nanos(SystemTime::now()),
    };
    record::write_atomic(bundle, EXIT_FILE, &exit)?;
    Ok(exit)
}

/// Deletes a bundle whatever state its container is in: kills a shim still alive (one that
/// is starting the container, or hung) and waits for it to be gone, so that no shim outlives
/// its bundle; then kills what is left in the container's cgroup and removes both.
fn destroy(bundle: &Path) -> Result<(), Error> {
    if let Some(state) = record::read_optional::<StateRecord>(bundle, STATE_FILE)?
        && let Some(shim) = live_shim(&state)
    {
        match rustix::process::pidfd_send_signal(&shim, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(Error::io("killing the shim", e.into())),
        }
        if !exits_within(&shim, SHIM_EXIT_TIMEOUT_MS) {
            return Err(Error::Runtime(format!(
                "shim {} did not exit after SIGKILL",
                state.shim_pid
            )));
        }
    }
    // A shim whose agent died before the shim recorded itself in state.json is known only by
    // its command line; left alive it would go on creating this container beside a new one.
    for pid in unrecorded_shims(bundle) {
        if let Some(shim) = Pid::from_raw(pid)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        {
            let _ = rustix::process::pidfd_send_signal(&shim, Signal::KILL);
            let _ = exits_within(&shim, SHIM_EXIT_TIMEOUT_MS);
        }
    }
    if let Some(shim) = record::read_optional::<ShimConfig>(bundle, SHIM_CONFIG_FILE)? {
        cgroup::kill_and_remove(&shim.cgroups_path)?;
    }
    match std::fs::remove_dir_all(bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", bundle.display()), e)),
    }
}

/// Processes running `berth __shim <bundle>` for this bundle.
fn unrecorded_shims(bundle: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let bundle = bundle.as_os_str().as_encoded_bytes();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            let _exe = args.next()?;
            (args.next()? == crate::SHIM_SUBCOMMAND.as_bytes() && args.next()? == bundle)
                .then_some(pid)
        })
        .collect()
}

/// A pidfd on process `pid` if it is still the one that started at `start_time` (checked after
/// opening, so the pidfd cannot name a process that reused the pid).
fn open_pidfd(pid: i32, start_time: u64) -> Option<OwnedFd> {
    let pidfd =
        rustix::process::pidfd_open(Pid::from_raw(pid)?, rustix::process::PidfdFlags::empty())
            .ok()?;
    (record::process_start_time(pid) == Some(start_time)).then_some(pidfd)
}

/// A pidfd on the shim that wrote `state`, if it has not exited.
fn live_shim(state: &StateRecord) -> Option<OwnedFd> {
    open_pidfd(state.shim_pid, state.shim_start_time).filter(|fd| !pidfd_exited(fd))
}

/// Whether the process behind a pidfd has exited (a pidfd is readable from then on).
fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    exits_within(pidfd, 0)
}

/// Waits up to `ms` milliseconds for the process behind a pidfd to exit; returns whether it
/// did.
fn exits_within(pidfd: &OwnedFd, ms: u16) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    loop {
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => {}
            // A pidfd that cannot be polled names nothing left to wait for.
            Err(_) => return true,
        }
    }
}

/// The hard `RLIMIT_NOFILE` a container may get, if lower than what the spec asks for: raising
/// a hard limit needs CAP_SYS_RESOURCE, which berth may lack (in a container, or a sandbox like
/// CI's), and libcontainer would then fail to create every container with EPERM.
fn nofile_ceiling() -> Option<u64> {
    let caps = rustix::thread::capabilities(None).ok()?;
    if caps
        .effective
        .contains(rustix::thread::CapabilitySet::SYS_RESOURCE)
    {
        return None;
    }
    rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum
}

/// Lowers the spec's rlimits to at most `ceiling`.
fn lower_rlimits(spec: &mut Spec, ceiling: u64) {
    if let Some(process) = spec.process_mut()
        && let Some(mut rlimits) = process.rlimits().clone()
    {
        for limit in &mut rlimits {
            if limit.hard() > ceiling
                && let Ok(lowered) = PosixRlimitBuilder::default()
                    .typ(limit.typ())
                    .hard(ceiling)
                    .soft(limit.soft().min(ceiling))
                    .build()
            {
                *limit = lowered;
            }
        }
        process.set_rlimits(Some(rlimits));
    }
}
