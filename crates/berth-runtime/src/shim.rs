//! The per-container shim, `berth __shim <bundle>`: the one process that creates a container,
//! owns it while it runs, and records how it ended.
//!
//! libcontainer forks without exec, so it must run in a single-threaded process; the shim is
//! dispatched before `berth` starts any runtime or thread. It forks once so that it is not the
//! spawning agent's child (the agent reaps the short-lived parent) and calls setsid, so it
//! outlives the agent and all of berth; a restarted agent finds it through the bundle.
//!
//! Life of a shim:
//! 0. record itself in `state.json`, so that no client can remove the bundle and miss it;
//! 1. create the container (libcontainer `as_init`, `with_systemd(false)`, an absolute cgroups
//!    path) with its stdout/stderr on pipes the shim holds, then start it;
//! 2. add the container's init to `state.json` and tell the spawning client "started" (or the error, e.g. that the
//!    executable is not in the image) on the shim's stdout, a pipe the client reads;
//! 3. copy the container's output into the CRI log until its init exits, which a pidfd reports;
//! 4. reap the init, check the memory cgroup for an OOM kill, delete the container (its state
//!    and cgroups), write `exit.json`, and exit.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::crilog::{CriLogWriter, Stream};
use crate::error::chain;
use crate::record::{
    self, EXIT_FILE, ExitRecord, InitRecord, LIBCONTAINER_ROOT, Readiness, SHIM_CONFIG_FILE,
    STATE_FILE, STDIN_FIFO, ShimConfig, StateRecord,
};

/// How long the shim keeps copying output after the init exited, for the last lines still in
/// the pipes (every other process of the container dies with its init, closing them).
const DRAIN_TIME: Duration = Duration::from_millis(500);

const CONSOLE_SOCKET: &str = "console.sock";

/// Entry point of `__shim`. Returns the process exit code.
pub(crate) fn main(bundle: &Path) -> i32 {
    // SAFETY: called from `main` before any other thread exists, so the child is a complete
    // copy of a single-threaded process.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&Readiness::Failed {
                message: format!("shim: fork: {e}"),
            });
            return 1;
        }
    }
    // A session of its own: no controlling terminal, and no signals meant for the agent's
    // process group. No PDEATHSIG either: the container must outlive the agent.
    let _ = nix::unistd::setsid();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("shim: PR_SET_CHILD_SUBREAPER: {e}");
    }
    let _ = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) };

    let me = std::process::id() as i32;
    let shim = StateRecord {
        shim_pid: me,
        shim_start_time: record::process_start_time(me).unwrap_or(0),
        init: None,
    };
    let started = match record::write_atomic(bundle, STATE_FILE, &shim)
        .map_err(|e| e.to_string())
        .and_then(|()| start(bundle, shim))
    {
        Ok(started) => started,
        Err(message) => {
            eprintln!("shim: {message}");
            report(&Readiness::Failed { message });
            return 1;
        }
    };
    report(&Readiness::Started {
        pid: started.pid.as_raw(),
        started_at_unix_nanos: record::unix_nanos(started.started_at),
    });
    // Nobody reads the readiness pipe any more; later writes must not hit a closed pipe.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    supervise(bundle, started)
}

/// Writes the one readiness line to stdout, the pipe the spawning client reads.
fn report(readiness: &Readiness) {
    if let Ok(mut line) = serde_json::to_vec(readiness) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

/// A started container and what the shim holds of it.
struct Started {
    config: ShimConfig,
    container: Container,
    pid: Pid,
    pidfd: OwnedFd,
    started_at: SystemTime,
    log: CriLogWriter,
    io: Io,
}

/// The container's output (and, with a terminal, its input) as the shim sees it.
enum Io {
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal {
        master: OwnedFd,
        stdin: Option<OwnedFd>,
    },
}

fn start(bundle: &Path, shim: StateRecord) -> Result<Started, String> {
    let config: ShimConfig = record::read_optional(bundle, SHIM_CONFIG_FILE)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} has no {SHIM_CONFIG_FILE}", bundle.display()))?;
    // Short relative socket names from here on (sun_path holds only 108 bytes).
    nix::unistd::chdir(bundle).map_err(|e| format!("chdir {}: {e}", bundle.display()))?;
    let log = CriLogWriter::open(&config.log_path, config.log_max_bytes)
        .map_err(|e| format!("opening log {}: {e}", config.log_path.display()))?;

    let stdin: OwnedFd = if config.stdin {
        nix::unistd::mkfifo(STDIN_FIFO, Mode::from_bits_truncate(0o600))
            .map_err(|e| format!("mkfifo stdin: {e}"))?;
        // Read-write, so the container never reads EOF while no client is attached.
        open_fd(STDIN_FIFO, true)?
    } else {
        open_fd("/dev/null", false)?
    };

    let spec = libcontainer::oci_spec::runtime::Spec::load(bundle.join(record::CONFIG_FILE))
        .map_err(|e| chain(&e))?;
    let cwd = spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    ensure_cwd(&rootfs, &cwd);

    let root = bundle.join(LIBCONTAINER_ROOT);
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let mut builder = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&root)
        .map_err(|e| chain(&e))?;
    let (io_pending, console) = if config.tty {
        let listener =
            UnixListener::bind(CONSOLE_SOCKET).map_err(|e| format!("console socket: {e}"))?;
        builder = builder.with_console_socket(Some(bundle.join(CONSOLE_SOCKET)));
        (PendingIo::Terminal(stdin), Some(listener))
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        builder = builder
            .with_stdin(stdin)
            .with_stdout(out_w)
            .with_stderr(err_w);
        (
            PendingIo::Pipes {
                stdout: out_r,
                stderr: err_r,
            },
            None,
        )
    };

    // The container's processes inherit signal dispositions through the fork, and an ignored
    // SIGPIPE (Rust's default for the shim) would stay ignored across their exec.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let built = builder
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    let mut container = built.map_err(|e| {
        let message = chain(&e);
        // Say it as kubelet users know it from runc.
        if let Some(start) = message.find("executable '")
            && message.ends_with("not found in $PATH")
        {
            let name = message[start + "executable '".len()..]
                .rsplit_once("' not found")
                .map(|(name, _)| name)
                .unwrap_or_default();
            return format!("exec: \"{name}\": executable file not found in $PATH");
        }
        // libcontainer reports a failed chdir only as "failed to unix syscall".
        if !rootfs.join(cwd.strip_prefix("/").unwrap_or(&cwd)).is_dir() {
            format!(
                "chdir to cwd ({}) failed: not a directory in the container: {message}",
                cwd.display()
            )
        } else {
            message
        }
    })?;

    let result = (|| {
        let pid = container
            .pid()
            .ok_or_else(|| "libcontainer recorded no pid".to_string())?;
        // The init is our child and not yet reaped, so this pidfd names it for sure.
        let pidfd = pidfd_open(pid)?;
        let io = match (io_pending, &console) {
            (PendingIo::Terminal(stdin), Some(listener)) => Io::Terminal {
                master: receive_pty_master(listener)?,
                stdin: config.stdin.then_some(stdin),
            },
            (PendingIo::Pipes { stdout, stderr }, _) => Io::Pipes { stdout, stderr },
            (PendingIo::Terminal(_), None) => return Err("no console socket".to_string()),
        };
        container.start().map_err(|e| chain(&e))?;
        Ok((pid, pidfd, io))
    })();
    let _ = std::fs::remove_file(CONSOLE_SOCKET);
    let (pid, pidfd, io) = match result {
        Ok(v) => v,
        Err(message) => {
            let _ = container.delete(true);
            return Err(message);
        }
    };

    let started_at = SystemTime::now();
    let state = StateRecord {
        init: Some(InitRecord {
            pid: pid.as_raw(),
            start_time: record::process_start_time(pid.as_raw()).unwrap_or(0),
            started_at_unix_nanos: record::unix_nanos(started_at),
        }),
        ..shim
    };
    if let Err(e) = record::write_atomic(bundle, STATE_FILE, &state) {
        let _ = container.delete(true);
        return Err(e.to_string());
    }
    Ok(Started {
        config,
        container,
        pid,
        pidfd,
        started_at,
        log,
        io,
    })
}

enum PendingIo {
    Pipes { stdout: OwnedFd, stderr: OwnedFd },
    Terminal(OwnedFd),
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn open_fd(path: &str, write: bool) -> Result<OwnedFd, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| format!("open {path}: {e}"))
}

/// A pidfd on a child of ours that is not yet reaped (so the pid names it for sure).
pub(crate) fn pidfd_open(pid: Pid) -> Result<OwnedFd, String> {
    let pid = rustix::process::Pid::from_raw(pid.as_raw()).ok_or("pidfd_open: no pid")?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| format!("pidfd_open: {e}"))
}

/// An exit status as kubelet reports it: the code, or 128 + the signal, and the signal.
pub(crate) fn exit_code(status: WaitStatus) -> (i32, Option<i32>) {
    match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    }
}

/// Creates a missing working directory in the root file system, as runc does (Docker and
/// Kubernetes users rely on `workingDir` being created). Only real directories are walked: a
/// symbolic link in the image could point the creation outside the root file system, so then
/// nothing is created and the container's own chdir decides.
fn ensure_cwd(rootfs: &Path, cwd: &Path) {
    let mut dir = rootfs.to_path_buf();
    for part in cwd.components() {
        let std::path::Component::Normal(name) = part else {
            continue;
        };
        dir.push(name);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::create_dir(&dir).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Accepts libcontainer's connection on the console socket and takes the pty master it sends.
pub(crate) fn receive_pty_master(listener: &UnixListener) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("console socket accept: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("console socket recvmsg: {e}"))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| format!("console socket cmsg: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS installed this descriptor in our table just now.
            return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
    Err("console socket: no pty master received".into())
}

/// Copies output until the init exits, then cleans up and records the exit. Returns the
/// shim's exit code.
fn supervise(bundle: &Path, mut s: Started) -> i32 {
    let mut status: Option<(WaitStatus, SystemTime)> = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    // Which sources are still open: stdout-or-master, stderr, stdin FIFO.
    // The container's output (the terminal with one), its stderr (none with a terminal), and
    // the stdin FIFO relayed to the terminal.
    let (out_fd, err_fd, in_fd): (BorrowedFd, Option<BorrowedFd>, Option<BorrowedFd>) = match &s.io
    {
        Io::Pipes { stdout, stderr } => (stdout.as_fd(), Some(stderr.as_fd()), None),
        Io::Terminal { master, stdin } => (master.as_fd(), None, stdin.as_ref().map(|f| f.as_fd())),
    };
    let (mut out_open, mut err_open, mut in_open) = (true, err_fd.is_some(), in_fd.is_some());
    loop {
        if status.is_some()
            && (!out_open && !err_open || drain_until.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        let mut fds = Vec::with_capacity(4);
        let mut kinds = Vec::with_capacity(4);
        if status.is_none() {
            fds.push(PollFd::new(s.pidfd.as_fd(), PollFlags::POLLIN));
            kinds.push(Source::Exit);
        }
        if out_open {
            fds.push(PollFd::new(out_fd, PollFlags::POLLIN));
            kinds.push(Source::Out);
        }
        if err_open && let Some(fd) = err_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            kinds.push(Source::Err);
        }
        if in_open
            && status.is_none()
            && let Some(fd) = in_fd
        {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            kinds.push(Source::In);
        }
        let timeout = match drain_until {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::from(u16::try_from(left).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("shim: poll: {e}");
                break;
            }
        }
        let ready: Vec<Source> = fds
            .iter()
            .zip(&kinds)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, k)| *k)
            .collect();
        drop(fds);
        for source in ready {
            match source {
                Source::Exit => {
                    match waitpid(s.pid, None) {
                        Ok(st) => status = Some((st, SystemTime::now())),
                        Err(e) => {
                            eprintln!("shim: waitpid: {e}");
                            status = Some((WaitStatus::StillAlive, SystemTime::now()));
                        }
                    }
                    drain_until = Some(Instant::now() + DRAIN_TIME);
                }
                Source::Out | Source::Err => {
                    let (fd, stream) = match (source, err_fd) {
                        (Source::Err, Some(err_fd)) => (err_fd, Stream::Stderr),
                        _ => (out_fd, Stream::Stdout),
                    };
                    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                        Ok(0) | Err(nix::errno::Errno::EIO) => {
                            // EIO: the terminal's last holder closed it.
                            let _ = s.log.finish(stream, SystemTime::now());
                            if source == Source::Out {
                                out_open = false;
                            } else {
                                err_open = false;
                            }
                        }
                        Ok(n) => {
                            if let Err(e) = s.log.write(stream, &buf[..n], SystemTime::now()) {
                                eprintln!("shim: writing log: {e}");
                            }
                        }
                        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                        Err(e) => {
                            eprintln!("shim: reading output: {e}");
                            if source == Source::Out {
                                out_open = false;
                            } else {
                                err_open = false;
                            }
                        }
                    }
                }
                Source::In => {
                    if let Some(stdin) = in_fd {
                        match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                            Ok(0) | Err(_) => in_open = false,
                            Ok(n) => {
                                let _ = write_all(out_fd, &buf[..n]);
                            }
                        }
                    }
                }
            }
        }
    }
    let _ = s.log.finish(Stream::Stdout, SystemTime::now());
    let _ = s.log.finish(Stream::Stderr, SystemTime::now());

    let (wait, finished_at) = status.unwrap_or((WaitStatus::StillAlive, SystemTime::now()));
    let (exit_code, signal) = exit_code(wait);
    let oom = crate::cgroup::oom_killed(&s.config.cgroups_path);
    // Deleting kills whatever is left in the cgroup and removes the cgroup in every hierarchy
    // and libcontainer's state.
    let mut message = None;
    if let Err(e) = s.container.delete(true) {
        eprintln!("shim: deleting container: {}", chain(&e));
        message = Some(format!("cleanup failed: {}", chain(&e)));
    }
    reap_orphans();
    let reason = if oom {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let exit = ExitRecord {
        exit_code,
        signal,
        reason: reason.to_string(),
        message,
        started_at_unix_nanos: record::unix_nanos(s.started_at),
        finished_at_unix_nanos: record::unix_nanos(finished_at),
    };
    match record::write_atomic(bundle, EXIT_FILE, &exit) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shim: {e}");
            1
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Exit,
    Out,
    Err,
    In,
}

pub(crate) fn write_all(fd: impl AsFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd.as_fd(), data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reaps processes of the container re-parented to the shim (a subreaper) when its init died.
fn reap_orphans() {
    while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

/// The bundle path from `__shim`'s arguments.
pub(crate) fn bundle_arg(arg: Option<String>) -> Option<PathBuf> {
    arg.map(PathBuf::from).filter(|p| p.is_absolute())
}
