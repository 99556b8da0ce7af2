//! The mount system calls volumes, subPaths and container roots need, behind [`Mounter`] so
//! that the logic around them is tested without root: [`HostMounter`] makes the real calls,
//! [`RecordingMounter`] remembers what would have been mounted.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
use rustix::mount::{MountFlags, UnmountFlags};

/// Mounting and unmounting on the host.
pub trait Mounter: Send + Sync {
    /// Mounts a fresh tmpfs on `target` (`nosuid,nodev`), with the root directory's mode and,
    /// when given, a size limit.
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>, mode: u32) -> io::Result<()>;
    /// Bind-mounts `source` (a path, possibly `/proc/self/fd/N`) on `target`.
    fn bind(&self, source: &Path, target: &Path) -> io::Result<()>;
    /// Mounts an overlay of `lower` (top first) under the writable `upper` on `target`.
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> io::Result<()>;
    /// Detaches the topmost mount on `target` without following a symlink there; `Ok(false)`
    /// when nothing is mounted there.
    fn unmount(&self, target: &Path) -> io::Result<bool>;
    /// Whether `path` (not followed if a symlink) is the root of a mount.
    fn is_mount_point(&self, path: &Path) -> io::Result<bool>;
}

/// The real mounts, through rustix. Needs root (CAP_SYS_ADMIN).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostMounter;

impl Mounter for HostMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>, mode: u32) -> io::Result<()> {
        let mut data = format!("mode={mode:o}");
        if let Some(size) = size_bytes {
            data.push_str(&format!(",size={size}"));
        }
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        rustix::mount::mount(
            "tmpfs",
            target,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            data.as_c_str(),
        )?;
        Ok(())
    }

    fn bind(&self, source: &Path, target: &Path) -> io::Result<()> {
        rustix::mount::mount_bind(source, target)?;
        Ok(())
    }

    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> io::Result<()> {
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
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )?;
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<bool> {
        match rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => Ok(true),
            // EINVAL: not a mount point; ENOENT: nothing there at all.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn is_mount_point(&self, path: &Path) -> io::Result<bool> {
        // STATX_ATTR_MOUNT_ROOT (Linux 5.8) answers exactly, including for bind mounts from
        // the same filesystem, which a device-number comparison cannot see.
        let st = rustix::fs::statx(
            CWD,
            path,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        )?;
        if !st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel does not report STATX_ATTR_MOUNT_ROOT",
            ));
        }
        Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
    }
}

/// One call a [`RecordingMounter`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    Tmpfs {
        target: PathBuf,
        size_bytes: Option<u64>,
        mode: u32,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
    },
    Overlay {
        lower: Vec<PathBuf>,
        target: PathBuf,
    },
    Unmount {
        target: PathBuf,
    },
}

/// A fake [`Mounter`] for tests: records every call and keeps the set of mount points, so
/// code that asks "is this mounted?" sees its own earlier mounts. Nothing is mounted; a bind
/// of `/proc/self/fd/N` records the path the descriptor named at the time.
#[derive(Debug, Default)]
pub struct RecordingMounter {
    state: Mutex<(Vec<MountOp>, Vec<PathBuf>)>,
}

impl RecordingMounter {
    pub fn ops(&self) -> Vec<MountOp> {
        self.lock().0.clone()
    }

    /// The mount points currently "mounted", in order.
    pub fn mounted(&self) -> BTreeSet<PathBuf> {
        self.lock().1.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<MountOp>, Vec<PathBuf>)> {
        // A test that panicked while holding the lock has failed already; keep the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Mounter for RecordingMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>, mode: u32) -> io::Result<()> {
        let mut s = self.lock();
        s.0.push(MountOp::Tmpfs {
            target: target.to_path_buf(),
            size_bytes,
            mode,
        });
        s.1.push(target.to_path_buf());
        Ok(())
    }

    fn bind(&self, source: &Path, target: &Path) -> io::Result<()> {
        // Resolve /proc/self/fd/N now, while the descriptor is open, so tests can check it.
        let source = std::fs::read_link(source).unwrap_or_else(|_| source.to_path_buf());
        let mut s = self.lock();
        s.0.push(MountOp::Bind {
            source,
            target: target.to_path_buf(),
        });
        s.1.push(target.to_path_buf());
        Ok(())
    }

    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> io::Result<()> {
        let mut s = self.lock();
        s.0.push(MountOp::Overlay {
            lower: lower.to_vec(),
            target: target.to_path_buf(),
        });
        s.1.push(target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<bool> {
        let mut s = self.lock();
        let Some(i) = s.1.iter().rposition(|p| p == target) else {
            return Ok(false);
        };
        s.1.remove(i);
        s.0.push(MountOp::Unmount {
            target: target.to_path_buf(),
        });
        Ok(true)
    }

    fn is_mount_point(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock().1.iter().any(|p| p == path))
    }
}
