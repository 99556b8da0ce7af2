//! Namespaces a pod's containers share, pinned to files so that they outlive any one
//! container: today the IPC namespace (the network namespace comes with networking).
//!
//! A namespace is made on a dedicated short-lived thread (unsharing the IPC namespace affects
//! only the calling thread, and a tokio worker must not end up in it) and bind-mounted from
//! `/proc/thread-self/ns/ipc` onto an empty file; containers join it through the file's path.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::Error;

/// The pinned namespace files of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespaces {
    /// The IPC namespace; pass it as [`crate::ContainerConfig::ipc_namespace`].
    pub ipc: PathBuf,
}

const IPC_FILE: &str = "ipc";

impl PodNamespaces {
    /// Creates a new IPC namespace pinned at `dir/ipc` (`dir` is created if needed).
    pub fn create(dir: &Path) -> Result<PodNamespaces, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ipc = dir.join(IPC_FILE);
        let target = ipc.clone();
        let pinned = std::thread::Builder::new()
            .name("berth-pod-ns".into())
            .spawn(move || pin_new_ipc_namespace(&target))
            .map_err(|e| Error::io("spawning the namespace thread", e))?
            .join()
            .map_err(|_| Error::Runtime("the namespace thread panicked".into()))?;
        pinned?;
        Ok(PodNamespaces { ipc })
    }

    /// Unmounts and deletes the pod's namespace files. Idempotent.
    pub fn remove(dir: &Path) -> Result<(), Error> {
        let ipc = dir.join(IPC_FILE);
        match nix::mount::umount2(&ipc, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("unmounting {}", ipc.display()),
                    io::Error::from(e),
                ));
            }
        }
        match std::fs::remove_file(&ipc) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", ipc.display()), e)),
        }
    }
}

/// Runs on its own thread, which ends right after: the new namespace lives on in the mount.
fn pin_new_ipc_namespace(target: &Path) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWIPC)
        .map_err(|e| Error::io("unshare(CLONE_NEWIPC)", io::Error::from(e)))?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/ipc"),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(target);
        Error::io(
            format!("bind-mounting the IPC namespace on {}", target.display()),
            io::Error::from(e),
        )
    })
}
