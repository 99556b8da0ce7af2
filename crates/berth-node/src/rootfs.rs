//! A container's root filesystem: the image's unpacked layers composed with overlayfs under a
//! fresh writable layer (so a restarted container starts from the image again, as a new
//! container does in Kubernetes), or — for the built-in host-program image — an empty root
//! with the host's programs and libraries bind-mounted read-only.
//!
//! The host-program image is the reference [`HOST_IMAGE`] (`berth.dev/host`, any tag): it runs
//! programs installed on this machine (`/usr/lib/postgresql/15/bin/postgres`, `etcd`, …) with
//! the host's `/usr`, `/bin`, `/sbin`, `/lib*` and `/etc` read-only, and the pod's own
//! `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, a private `/tmp`, `/run` and `/var`, and
//! its volumes. There is nothing to import for it.

use std::path::{Path, PathBuf};

use berth_image::ImageStore;
use berth_runtime::{Mount, MountKind};

use crate::Error;
use crate::command::ImageConfig;
use crate::volumes::Mounter;

/// The built-in image that runs host programs (see the module docs).
pub const HOST_IMAGE: &str = "berth.dev/host";

/// Whether `image` (a pod's `image:` string) names the host-program image.
pub fn is_host_image(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        // A colon after the last slash separates a tag; one before it is a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    name == HOST_IMAGE
}

/// A root filesystem ready for the runtime.
#[derive(Debug)]
pub struct PreparedRoot {
    pub rootfs: PathBuf,
    pub readonly: bool,
    /// Mounts the root needs besides the pod's (the host directories for the host image).
    pub mounts: Vec<Mount>,
    pub defaults: ImageConfig,
    /// `imageID` as kubelet reports it.
    pub image_id: String,
}

/// Why a root could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The image is not in the store (kubelet's ErrImagePull).
    #[error("image {0} is not in the image store")]
    NotFound(String),
    #[error(transparent)]
    Other(#[from] Error),
}

/// Prepares the root of one container attempt in `dir` (`containers/<name>/<attempt>`).
pub fn prepare(
    images: &ImageStore,
    mounter: &dyn Mounter,
    image: &str,
    dir: &Path,
) -> Result<PreparedRoot, RootError> {
    if is_host_image(image) {
        let rootfs = create(dir, "rootfs")?;
        return Ok(PreparedRoot {
            rootfs,
            readonly: true,
            mounts: host_mounts(),
            defaults: ImageConfig {
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                ..Default::default()
            },
            image_id: format!("{HOST_IMAGE}@host"),
        });
    }
    let resolved = match images.resolve(image) {
        Ok(resolved) => resolved,
        Err(berth_image::Error::NotFound(name)) => return Err(RootError::NotFound(name)),
        Err(e) => return Err(Error::from(e).into()),
    };
    let rootfs = create(dir, "rootfs")?;
    let upper = create(dir, "upper")?;
    let work = create(dir, "work")?;
    let mounted = mounter
        .is_mount_point(&rootfs)
        .map_err(Error::io("inspecting", &rootfs))?;
    if !mounted {
        mounter
            .mount_overlay(&resolved.layer_dirs, &upper, &work, &rootfs)
            .map_err(Error::io("mounting the overlay root on", &rootfs))?;
    }
    let defaults = resolved
        .config
        .config()
        .as_ref()
        .map(|c| ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        })
        .unwrap_or_default();
    Ok(PreparedRoot {
        rootfs,
        readonly: false,
        mounts: Vec::new(),
        defaults,
        image_id: resolved.record.id,
    })
}

fn create(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).map_err(Error::io("creating", &path))?;
    Ok(path)
}

/// Unmounts and deletes a container attempt's root (idempotent). The unmount is lazy: a
/// process that still holds a file there (it is being killed) must not make the clean-up
/// fail; the kernel lets go when it exits.
pub fn release(mounter: &dyn Mounter, dir: &Path) -> Result<(), Error> {
    let rootfs = dir.join("rootfs");
    mounter
        .unmount(&rootfs)
        .map_err(Error::io("unmounting", &rootfs))?;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", dir)(e)),
        _ => Ok(()),
    }
}

/// The host directories the host-program image shows, read-only, and its private scratch.
fn host_mounts() -> Vec<Mount> {
    let mut mounts: Vec<Mount> = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
    ]
    .iter()
    .filter(|dir| Path::new(dir).exists())
    .map(|dir| Mount {
        destination: PathBuf::from(dir),
        kind: MountKind::Bind {
            source: PathBuf::from(dir),
            readonly: true,
        },
    })
    .collect();
    for dir in ["/tmp", "/run", "/var"] {
        mounts.push(Mount {
            destination: PathBuf::from(dir),
            kind: MountKind::Tmpfs {
                size_bytes: Some(256 * 1024 * 1024),
                mode: Some(0o1777),
            },
        });
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_come_from_the_store_or_the_host_and_are_released() {
        let tmp = tempfile::tempdir().unwrap();
        let images = ImageStore::open(&tmp.path().join("images")).unwrap();
        let mounter = crate::volumes::RecordingMounter::default();
        let dir = tmp.path().join("c/0");
        let missing = prepare(&images, &mounter, "busybox:nope", &dir);
        assert!(
            matches!(missing, Err(RootError::NotFound(_))),
            "{missing:?}"
        );
        let host = prepare(&images, &mounter, "berth.dev/host", &dir).unwrap();
        assert!(host.readonly && host.rootfs.ends_with("rootfs"));
        assert!(
            host.mounts
                .iter()
                .any(|m| m.destination == Path::new("/usr"))
        );
        assert!(
            mounter.ops().is_empty(),
            "the host image mounts nothing itself"
        );
        release(&mounter, &dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn host_image_is_recognised_with_any_tag() {
        assert!(is_host_image("berth.dev/host"));
        assert!(is_host_image("berth.dev/host:latest"));
        assert!(is_host_image("berth.dev/host:15"));
        assert!(!is_host_image("busybox"));
        assert!(!is_host_image("berth.dev/hostile"));
        assert!(!is_host_image("registry:5000/berth.dev/host"));
    }
}
