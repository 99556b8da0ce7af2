//! The image's `User` (`name`, `uid`, `name:group`, `uid:gid`, …) as numeric ids, read from the
//! container's own `/etc/passwd` and `/etc/group`, as containerd and runc resolve it.
//!
//! The files are opened with `openat2(RESOLVE_IN_ROOT)` on the container's root, so a symlinked
//! `/etc/passwd` in an image resolves inside the image, never on the host.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Why `User` could not be resolved (kubelet shows it as CreateContainerConfigError).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

/// uid and (when the image says or the passwd entry gives one) gid of `user` in the container
/// whose root directory is `root`. Numeric parts need no files.
pub fn resolve(root: &Path, user: &str) -> Result<(u32, Option<u32>), UserError> {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let (uid, primary_gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let passwd = read_in_root(root, "etc/passwd").unwrap_or_default();
            find_user(&passwd, name).ok_or_else(|| UserError::NoUser(name.to_string()))?
        }
    };
    let gid = match group {
        None | Some("") => primary_gid,
        Some(group) => Some(match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read_in_root(root, "etc/group").unwrap_or_default();
                find_group(&groups, group).ok_or_else(|| UserError::NoGroup(group.to_string()))?
            }
        }),
    };
    Ok((uid, gid))
}

/// `name`'s uid and primary gid in a passwd file (`name:x:uid:gid:…`).
fn find_user(passwd: &str, name: &str) -> Option<(u32, Option<u32>)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        let uid = fields.nth(1)?.parse().ok()?;
        Some((uid, fields.next().and_then(|g| g.parse().ok())))
    })
}

/// `name`'s gid in a group file (`name:x:gid:members`).
fn find_group(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// At most 1 MiB of `relative` under `root`, resolved as if `root` were `/`.
fn read_in_root(root: &Path, relative: &str) -> Option<String> {
    let dir: OwnedFd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file = rustix::fs::openat2(
        &dir,
        relative,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(file)
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\npostgres:x:105:110::/var/lib/postgresql:/bin/sh\nbad:x:nope:1::/:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nssl-cert:x:111:postgres\n",
        )
        .expect("group");
        dir
    }

    #[test]
    fn names_and_numbers_resolve_as_containerd_does() {
        let root = root();
        let r = |u: &str| resolve(root.path(), u);
        assert_eq!(r("postgres"), Ok((105, Some(110))));
        assert_eq!(r("postgres:ssl-cert"), Ok((105, Some(111))));
        assert_eq!(r("postgres:7"), Ok((105, Some(7))));
        assert_eq!(r("1000"), Ok((1000, None)));
        assert_eq!(r("1000:ssl-cert"), Ok((1000, Some(111))));
        assert_eq!(r("nobody"), Err(UserError::NoUser("nobody".into())));
        assert_eq!(r("bad"), Err(UserError::NoUser("bad".into())));
        assert_eq!(r("root:wheel"), Err(UserError::NoGroup("wheel".into())));
    }

    #[test]
    fn a_symlinked_passwd_resolves_inside_the_root() {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join("etc")).expect("etc");
        // On the host this would be the host's passwd file, which has root.
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/passwd")).expect("symlink");
        assert_eq!(
            resolve(root.path(), "root"),
            Err(UserError::NoUser("root".into()))
        );
    }
}
