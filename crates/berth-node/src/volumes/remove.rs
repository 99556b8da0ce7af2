//! Removing a pod's volume directories without ever leaving them: every step is relative to
//! an open directory descriptor, nothing is followed through a symlink, and a directory that
//! is a mount point (a tmpfs or bind mount not unmounted, possibly a volume's host data) is
//! refused rather than emptied. This is the guard against kubelet's old bug class where a
//! cleanup deleted through a mount into real data.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, StatxAttributes, StatxFlags};

/// Removes `path` and everything below it. A symlink is removed, never followed; `path` not
/// existing is success.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let st = match rustix::fs::statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.stx_mode.into()) != FileType::Directory {
        return std::fs::remove_file(path);
    }
    if is_mount_root(&st) {
        return Err(refused(path));
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let dev = (st.stx_dev_major, st.stx_dev_minor);
    remove_contents(&fd, dev, path)?;
    std::fs::remove_dir(path)
}

fn is_mount_root(st: &rustix::fs::Statx) -> bool {
    st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
}

fn refused(path: &Path) -> io::Error {
    io::Error::other(format!(
        "refusing to remove {}: it is a mount point",
        path.display()
    ))
}

fn remove_contents(dir: &OwnedFd, dev: (u32, u32), display: &Path) -> io::Result<()> {
    // Read the names first; removing while iterating would disturb the directory stream.
    let mut names: Vec<CString> = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        names.push(name.to_owned());
    }
    for name in names {
        let child = display.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let st = match rustix::fs::statx(
            dir.as_fd(),
            &name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        ) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(st.stx_mode.into()) == FileType::Directory {
            if is_mount_root(&st) || (st.stx_dev_major, st.stx_dev_minor) != dev {
                return Err(refused(&child));
            }
            // O_NOFOLLOW: if the entry was swapped for a symlink since the statx, this fails
            // instead of descending somewhere else.
            let sub = rustix::fs::openat(
                dir.as_fd(),
                &name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            remove_contents(&sub, dev, &child)?;
            rustix::fs::unlinkat(dir.as_fd(), &name, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(dir.as_fd(), &name, AtFlags::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), "keep").unwrap();

        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink("/", tree.join("root")).unwrap();

        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("precious")).unwrap(),
            "keep"
        );

        // A symlink as the top: only the link goes.
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(outside.join("precious").exists());
        remove_tree(&tmp.path().join("missing")).unwrap();
    }
}
