//! The exec helper, `berth __exec <bundle> <request-json>`: runs one command inside a running
//! container for `kubectl exec`, as a short-lived single-threaded process (libcontainer's
//! tenant builder forks without exec, which the agent's threaded runtime must never do).
//!
//! The helper joins the container's namespaces and cgroup with libcontainer's `as_tenant()`,
//! using the container's own process settings (user, capabilities, rlimits, environment) with
//! the requested argv. Without a terminal the command gets the helper's stdout and stderr
//! directly, and its stdin (or /dev/null). With a terminal libcontainer sends the pty master
//! over a console socket and the helper relays: its stdin carries frames (see
//! [`crate::exec`]) of input and window sizes, its stdout gets the terminal's output. The
//! helper exits with the command's exit code, 128 + the signal if one killed it; if the command
//! could not be started, it prints why on stderr and exits 126 (127 when the executable was
//! not found), as runc-based runtimes do.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::config::ExecRequest;
use crate::error::chain;
use crate::exec::{FRAME_CLOSE, FRAME_DATA, FRAME_HEADER, FRAME_RESIZE};
use crate::record::{self, CONFIG_FILE, LIBCONTAINER_ROOT, SHIM_CONFIG_FILE, ShimConfig};
use crate::shim::{exit_code, pidfd_open, receive_pty_master, write_all};

/// Entry point of `__exec`. Returns the process exit code.
pub(crate) fn main(bundle: &Path, request: &str) -> i32 {
    match run(bundle, request) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("exec failed: {message}");
            if message.contains("not found") {
                127
            } else {
                126
            }
        }
    }
}

fn run(bundle: &Path, request: &str) -> Result<i32, String> {
    let request: ExecRequest =
        serde_json::from_str(request).map_err(|e| format!("bad exec request: {e}"))?;
    if request.argv.is_empty() {
        return Err("no command given".into());
    }
    let shim: ShimConfig = record::read_optional(bundle, SHIM_CONFIG_FILE)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "container not found".to_string())?;
    let spec = Spec::load(bundle.join(CONFIG_FILE)).map_err(|e| chain(&e))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| "container spec has no process".to_string())?;
    process.set_args(Some(request.argv.clone()));
    process.set_terminal(Some(request.tty));
    process.set_console_size(None);
    let mut env = process.env().clone().unwrap_or_default();
    for extra in &request.env_extra {
        let key = extra.split('=').next().unwrap_or(extra);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(extra.clone());
    }
    process.set_env(Some(env));
    if let Some(cwd) = &request.cwd {
        process.set_cwd(PathBuf::from(cwd));
    }

    nix::unistd::chdir(bundle).map_err(|e| format!("chdir {}: {e}", bundle.display()))?;
    let me = std::process::id();
    let process_file = bundle.join(format!("exec-{me}.json"));
    let bytes = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    std::fs::write(&process_file, bytes).map_err(|e| format!("writing process.json: {e}"))?;
    let _cleanup = RemoveOnDrop(vec![
        process_file.clone(),
        bundle.join(format!("exec-{me}.sock")),
    ]);

    let mut builder = ContainerBuilder::new(shim.id.clone(), SyscallType::default())
        .with_root_path(bundle.join(LIBCONTAINER_ROOT))
        .map_err(|e| chain(&e))?;
    let listener = if request.tty {
        let name = format!("exec-{me}.sock");
        let listener = UnixListener::bind(&name).map_err(|e| format!("console socket: {e}"))?;
        builder = builder.with_console_socket(Some(bundle.join(&name)));
        Some(listener)
    } else {
        let stdin = if request.stdin {
            dup_cloexec(0)?
        } else {
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| format!("open /dev/null: {e}"))?
        };
        // Copies above 2: libcontainer dup2()s each onto 0/1/2 and then closes the original.
        builder = builder
            .with_stdin(stdin)
            .with_stdout(dup_cloexec(1)?)
            .with_stderr(dup_cloexec(2)?);
        None
    };

    // The command inherits signal dispositions through the fork; an ignored SIGPIPE would
    // survive its exec.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let built = builder
        .as_tenant()
        .with_process(Some(&process_file))
        .with_detach(request.tty)
        .build();
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    let pid = built.map_err(|e| chain(&e))?;

    if let Some(listener) = listener {
        let master = receive_pty_master(&listener)?;
        drop(listener);
        relay_terminal(pid, &master)?;
    }
    let status = loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|e| format!("waitpid: {e}"))?,
        }
    };
    Ok(exit_code(status).0)
}

struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn dup_cloexec(fd: i32) -> Result<OwnedFd, String> {
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(|e| format!("dup {fd}: {e}"))?;
    // SAFETY: fcntl just returned this new descriptor and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}

/// Relays between the helper's stdio and the terminal until the command exits (its pidfd
/// becomes readable), then copies what output is left.
fn relay_terminal(pid: Pid, master: &OwnedFd) -> Result<(), String> {
    let pidfd = pidfd_open(pid)?;
    let stdin = std::io::stdin();
    let stdin_fd = stdin.as_fd();
    let stdout = dup_cloexec(1)?;
    // Always read: besides input, the frames carry window sizes.
    let mut stdin_open = true;
    let mut frames: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let mut exited = false;
    loop {
        let mut fds = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (exit_ready, out_ready, in_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if out_ready {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => break,
                Ok(n) => {
                    let _ = write_all(&stdout, &buf[..n]);
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(format!("reading terminal: {e}")),
            }
        }
        if in_ready {
            match nix::unistd::read(stdin_fd.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    frames.extend_from_slice(&buf[..n]);
                    stdin_open &= apply_frames(&mut frames, master);
                }
            }
        }
        if exit_ready {
            exited = true;
            break;
        }
    }
    if exited {
        // The command exited; other holders of the terminal may keep it open, so copy only
        // what is already buffered, briefly.
        let flags = fcntl(master.as_raw_fd(), FcntlArg::F_GETFL).unwrap_or(0);
        let _ = fcntl(
            master.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO | nix::errno::Errno::EAGAIN) => break,
                Ok(n) => {
                    let _ = write_all(&stdout, &buf[..n]);
                }
                Err(_) => break,
            }
        }
    }
    Ok(())
}

/// Applies the complete frames at the front of `frames` to the terminal and drops them.
/// Returns false once the client closed its input.
fn apply_frames(frames: &mut Vec<u8>, master: &OwnedFd) -> bool {
    let mut open = true;
    let mut used = 0;
    while frames.len() - used >= FRAME_HEADER {
        let head = &frames[used..used + FRAME_HEADER];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if frames.len() - used < FRAME_HEADER + len {
            break;
        }
        let kind = head[0];
        let payload = &frames[used + FRAME_HEADER..used + FRAME_HEADER + len];
        match kind {
            FRAME_DATA => {
                let _ = write_all(master, payload);
            }
            FRAME_RESIZE if payload.len() == 4 => {
                let size = libc::winsize {
                    ws_col: u16::from_be_bytes([payload[0], payload[1]]),
                    ws_row: u16::from_be_bytes([payload[2], payload[3]]),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            }
            FRAME_CLOSE => open = false,
            _ => {}
        }
        used += FRAME_HEADER + len;
    }
    frames.drain(..used);
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::frame;

    #[test]
    fn frames_are_applied_whole() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut buf = frame(FRAME_DATA, b"hello ");
        buf.extend(frame(FRAME_DATA, b"world"));
        let partial = frame(FRAME_DATA, b"later");
        buf.extend_from_slice(&partial[..3]);
        assert!(apply_frames(&mut buf, &w));
        assert_eq!(buf, partial[..3]);
        buf.extend_from_slice(&partial[3..]);
        buf.extend(frame(FRAME_CLOSE, &[]));
        assert!(!apply_frames(&mut buf, &w));
        assert!(buf.is_empty());
        drop(w);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).expect("read");
        assert_eq!(out, "hello worldlater");
    }
}
