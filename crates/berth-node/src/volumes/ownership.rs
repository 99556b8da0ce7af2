//! A pod's `securityContext.fsGroup` applied to its writable volumes, as kubelet's
//! `SetVolumeOwnership` does: every file and directory gets the group, read and write for
//! owner and group (directories also search and the setgid bit, so files made later inherit
//! the group), unless `fsGroupChangePolicy: OnRootMismatch` finds the root already right.
//!
//! The walk never follows a symlink: a container owns the volume's contents and could swap a
//! directory for a link to the host mid-walk, so every entry is opened relative to its parent
//! directory's descriptor with `O_NOFOLLOW` and changed through its own descriptor; symlinks,
//! devices, FIFOs and sockets are left alone. Mount points below the root are not crossed.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Dir, FileType, Mode, OFlags, fstat, openat};
use rustix::io::Errno;

/// kubelet's masks: read/write for owner and group; search for directories.
const READ_WRITE: u32 = 0o660;
const SEARCH: u32 = 0o110;
const SET_GID: u32 = 0o2000;

/// `fsGroupChangePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangePolicy {
    Always,
    OnRootMismatch,
}

impl ChangePolicy {
    pub fn from_kubernetes(policy: Option<&str>) -> ChangePolicy {
        match policy {
            Some("OnRootMismatch") => ChangePolicy::OnRootMismatch,
            _ => ChangePolicy::Always,
        }
    }
}

/// Gives everything under `root` (a directory) the group `gid` and group read/write.
pub fn apply(root: &Path, gid: u32, policy: ChangePolicy) -> Result<(), Errno> {
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = fstat(&dir)?;
    if policy == ChangePolicy::OnRootMismatch && root_is_right(stat.st_gid, stat.st_mode, gid) {
        return Ok(());
    }
    let device = stat.st_dev;
    change(&dir, gid, true)?;
    walk(dir, gid, device)
}

fn root_is_right(have_gid: u32, mode: u32, gid: u32) -> bool {
    have_gid == gid && mode & (SET_GID | READ_WRITE | SEARCH) == SET_GID | READ_WRITE | SEARCH
}

fn change(fd: &impl AsFd, gid: u32, directory: bool) -> Result<(), Errno> {
    let stat = fstat(fd)?;
    rustix::fs::fchown(fd, None, Some(rustix::fs::Gid::from_raw(gid)))?;
    let mut wanted = READ_WRITE;
    if directory {
        wanted |= SEARCH | SET_GID;
    }
    // chown clears setgid on some kernels; set the mode after it.
    let mode = (stat.st_mode & 0o7777) | wanted;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
}

fn walk(dir: OwnedFd, gid: u32, device: u64) -> Result<(), Errno> {
    let mut pending = vec![dir];
    while let Some(dir) = pending.pop() {
        let entries = Dir::read_from(&dir)?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let kind = entry.file_type();
            if kind != FileType::RegularFile && kind != FileType::Directory {
                continue;
            }
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let child = match openat(&dir, name, flags, Mode::empty()) {
                Ok(child) => child,
                // Gone meanwhile, or swapped for a symlink: nothing to do.
                Err(Errno::NOENT | Errno::LOOP) => continue,
                Err(e) => return Err(e),
            };
            let stat = fstat(&child)?;
            let file_type = FileType::from_raw_mode(stat.st_mode);
            match file_type {
                FileType::RegularFile => change(&child, gid, false)?,
                FileType::Directory if stat.st_dev == device => {
                    change(&child, gid, true)?;
                    pending.push(child);
                }
                // Another file system mounted inside, or a special file swapped in.
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn gid_and_mode(path: &Path) -> (u32, u32) {
        let meta = std::fs::symlink_metadata(path).expect("stat");
        (meta.gid(), meta.mode() & 0o7777)
    }

    #[test]
    fn the_group_reaches_every_file_but_never_through_a_symlink() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: chown to another group needs root");
            return;
        }
        let outside = tempfile::tempdir().expect("temp dir");
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "x").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let volume = tempfile::tempdir().expect("temp dir");
        let root = volume.path();
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/file"), "data").expect("write");
        std::fs::set_permissions(
            root.join("a/b/file"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::os::unix::fs::symlink(&secret, root.join("a/link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.join("dirlink")).expect("symlink");

        apply(root, 2000, ChangePolicy::Always).expect("apply");
        assert_eq!(gid_and_mode(&root.join("a/b/file")), (2000, 0o660));
        let (gid, mode) = gid_and_mode(&root.join("a/b"));
        assert_eq!(gid, 2000);
        assert_eq!(mode & (SET_GID | 0o070), SET_GID | 0o070);
        assert_eq!(gid_and_mode(root).0, 2000);
        // The targets of the links are untouched.
        assert_eq!(gid_and_mode(&secret), (0, 0o600));
        assert_eq!(gid_and_mode(outside.path()).0, 0);

        // OnRootMismatch: a right root means no walk (a file changed since keeps its group).
        std::os::unix::fs::chown(root.join("a/b/file"), None, Some(0)).expect("chown");
        apply(root, 2000, ChangePolicy::OnRootMismatch).expect("apply");
        assert_eq!(gid_and_mode(&root.join("a/b/file")).0, 0);
        apply(root, 2000, ChangePolicy::Always).expect("apply");
        assert_eq!(gid_and_mode(&root.join("a/b/file")).0, 2000);
    }

    #[test]
    fn a_root_that_is_a_symlink_is_refused() {
        let outside = tempfile::tempdir().expect("temp dir");
        let holder = tempfile::tempdir().expect("temp dir");
        let link = holder.path().join("link");
        std::os::unix::fs::symlink(outside.path(), &link).expect("symlink");
        assert!(apply(&link, 2000, ChangePolicy::Always).is_err());
    }
}
