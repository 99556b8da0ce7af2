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

/// Prepares the root of one container attempt in `dir` (`containers/<name>/<attempt>`).
pub fn prepare(images: &ImageStore, image: &str, dir: &Path) -> Result<PreparedRoot, Error> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(Error::io("creating", &rootfs))?;
    if is_host_image(image) {
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
    let record = images.inspect(image)?;
    let config = images.image_config(image)?;
    let lower = images.layer_dirs(image)?;
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(Error::io("creating", d))?;
    }
    if !is_mounted(&rootfs) {
        mount_overlay(&lower, &upper, &work, &rootfs)?;
    }
    let defaults = config
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
        image_id: record.id,
    })
}

/// Unmounts and deletes a container attempt's root (idempotent).
pub fn release(dir: &Path) -> Result<(), Error> {
    let rootfs = dir.join("rootfs");
    if is_mounted(&rootfs) {
        // Lazy: a process that still holds a file there (it is being killed) must not make
        // the clean-up fail; the kernel lets go when it exits.
        rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH)
            .map_err(|e| Error::io("unmounting", &rootfs)(e.into()))?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(Error::io("removing", dir))?;
    }
    Ok(())
}

fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), Error> {
    // An image with one layer still needs two lowerdirs or an upper; it has an upper.
    let lowerdir = lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let data = std::ffi::CString::new(data)
        .map_err(|e| Error::io("mounting the overlay root on", target)(std::io::Error::other(e)))?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(|e| Error::io("mounting the overlay root on", target)(e.into()))
}

/// Whether something is mounted at `path` (its device differs from its parent's).
pub fn is_mounted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent)
        .map(|p| p.dev() != meta.dev())
        .unwrap_or(false)
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
    fn host_image_is_recognised_with_any_tag() {
        assert!(is_host_image("berth.dev/host"));
        assert!(is_host_image("berth.dev/host:latest"));
        assert!(is_host_image("berth.dev/host:15"));
        assert!(!is_host_image("busybox"));
        assert!(!is_host_image("berth.dev/hostile"));
        assert!(!is_host_image("registry:5000/berth.dev/host"));
    }
}
