//! Namespaces a pod's containers share, pinned to files so that they outlive any one
//! container: the IPC namespace, and the network namespace unless the pod uses the host's.
//!
//! A namespace is made on a dedicated short-lived thread (unsharing affects only the calling
//! thread, and a tokio worker must not end up in it) and bind-mounted from
//! `/proc/thread-self/ns/<kind>` onto an empty file; containers join it through the file's
//! path, and the pod network configures the network one through it (as CNI is handed one).

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
    /// The network namespace, when the pod has its own; pass it as
    /// [`crate::ContainerConfig::net_namespace`].
    pub net: Option<PathBuf>,
}

const IPC_FILE: &str = "ipc";
const NET_FILE: &str = "net";

impl PodNamespaces {
    /// Creates a new IPC namespace pinned at `dir/ipc` and, with `network`, a new network
    /// namespace at `dir/net` (`dir` is created if needed). A namespace already pinned there
    /// is kept: the pod's running containers are in it.
    pub fn create(dir: &Path, network: bool) -> Result<PodNamespaces, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ipc = pin(dir, IPC_FILE, CloneFlags::CLONE_NEWIPC)?;
        let net = if network {
            Some(pin(dir, NET_FILE, CloneFlags::CLONE_NEWNET)?)
        } else {
            None
        };
        Ok(PodNamespaces { ipc, net })
    }

    /// The network namespace file of the pod in `dir`, if it has one pinned.
    pub fn network_of(dir: &Path) -> Option<PathBuf> {
        let net = dir.join(NET_FILE);
        is_pinned(&net).then_some(net)
    }

    /// Unmounts and deletes the pod's namespace files. Idempotent.
    pub fn remove(dir: &Path) -> Result<(), Error> {
        for file in [IPC_FILE, NET_FILE] {
            let path = dir.join(file);
            match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("unmounting {}", path.display()),
                        io::Error::from(e),
                    ));
                }
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
        }
        Ok(())
    }
}

/// A namespace file is pinned when a namespace is mounted on it: it then lives on another
/// file system (nsfs) than the directory holding it.
fn is_pinned(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(file), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    file.dev() != parent.dev()
}

/// Pins a new namespace of `kind` at `dir/file`, unless one is pinned there already.
fn pin(dir: &Path, file: &str, kind: CloneFlags) -> Result<PathBuf, Error> {
    let path = dir.join(file);
    if is_pinned(&path) {
        return Ok(path);
    }
    let target = path.clone();
    let proc_name = file.to_string();
    std::thread::Builder::new()
        .name("berth-pod-ns".into())
        .spawn(move || pin_on_this_thread(&target, &proc_name, kind))
        .map_err(|e| Error::io("spawning the namespace thread", e))?
        .join()
        .map_err(|_| Error::Runtime("the namespace thread panicked".into()))??;
    Ok(path)
}

/// Runs on its own thread, which ends right after: the new namespace lives on in the mount.
fn pin_on_this_thread(target: &Path, proc_name: &str, kind: CloneFlags) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
    nix::sched::unshare(kind)
        .map_err(|e| Error::io(format!("unshare({kind:?})"), io::Error::from(e)))?;
    nix::mount::mount(
        Some(Path::new("/proc/thread-self/ns").join(proc_name).as_path()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(target);
        Error::io(
            format!(
                "bind-mounting the {proc_name} namespace on {}",
                target.display()
            ),
            io::Error::from(e),
        )
    })
}
