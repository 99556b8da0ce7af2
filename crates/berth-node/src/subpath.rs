//! `subPath` and `subPathExpr` of volumeMounts, resolved so that a container cannot make the
//! agent bind something outside the volume (CVE-2017-1002101, CVE-2021-25741, reliability
//! case D7).
//!
//! The volume's contents are the container's to change, so a subPath is never resolved as a
//! path string. Each prefix of it is opened with `openat2(volume_fd, prefix,
//! RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any step (a `..`, an absolute
//! symlink, a relative symlink climbing out) that leaves the volume. Relative symlinks that
//! stay inside are followed, which is what makes the common `subPath: app.conf` on a configMap
//! volume work (`app.conf -> ..data/app.conf`). Absolute symlinks are refused even when they
//! would point back into the volume: under RESOLVE_BENEATH there is no way to tell, and
//! refusing is the safe answer. Missing directories are created (0755) one level at a time
//! beneath descriptors already checked, as kubelet creates them.
//!
//! The resolved descriptor is then bind-mounted through `/proc/self/fd/N` onto a stable path,
//! `<pod dir>/volume-subpaths/<volume>/<container>/<mount index>` (kubelet's layout), and that
//! path is what the runtime binds into the container: the descriptor pins what was checked, so
//! swapping a path component afterwards changes nothing, and the runtime needs no descriptor.
//! [`cleanup_sub_paths`] unmounts and removes them when a container or pod goes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::VolumeMount;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::env::{ResolvedEnv, expand_with};
use crate::volumes::{Mounter, TeardownError, entries, remove_tree, unmount_all};

/// The directory under the pod directory that holds the subPath bind mounts.
pub const SUBPATHS_DIR: &str = "volume-subpaths";

/// Why a subPath cannot be used; the agent fails the container with
/// `CreateContainerConfigError` and this message.
#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    #[error("subPath {sub_path:?} in volume {volume:?} must be a relative path")]
    Absolute { volume: String, sub_path: String },
    #[error("subPath {sub_path:?} in volume {volume:?} must not contain '..'")]
    Backsteps { volume: String, sub_path: String },
    #[error("subPath {sub_path:?} in volume {volume:?} resolves outside the volume")]
    Escape { volume: String, sub_path: String },
    #[error(
        "unable to expand subPathExpr {expr:?} in volume {volume:?}: missing value for {missing}"
    )]
    Expand {
        volume: String,
        expr: String,
        missing: String,
    },
    #[error("invalid name {0:?} for a subPath mount")]
    InvalidName(String),
    #[error("failed to prepare subPath {sub_path:?} in volume {volume:?}: {source}")]
    Io {
        volume: String,
        sub_path: String,
        source: io::Error,
    },
}

/// One volumeMount with a subPath, for [`prepare_sub_path`].
#[derive(Debug, Clone, Copy)]
pub struct SubPathMount<'a> {
    pub volume_name: &'a str,
    /// The volume's host directory (from volumes.rs).
    pub volume_path: &'a Path,
    pub container_name: &'a str,
    /// The volumeMount's index in the container's list: the bind target's name.
    pub mount_index: usize,
    pub sub_path: &'a str,
}

/// The subPath a volumeMount asks for, if any: `subPath` as written, or `subPathExpr` expanded
/// with the container's environment (a reference to a variable that is unset or empty is an
/// error, as in kubelet). The result is checked to be relative and free of `..`.
pub fn sub_path_for(
    mount: &VolumeMount,
    env: &ResolvedEnv,
) -> Result<Option<String>, SubPathError> {
    let sub_path = if let Some(expr) = mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        let mut missing = Vec::new();
        let expanded = expand_with(expr, |name| match env.get(name) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                missing.push(name.to_string());
                String::new()
            }
        });
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(SubPathError::Expand {
                volume: mount.name.clone(),
                expr: expr.to_string(),
                missing: missing.join(", "),
            });
        }
        expanded
    } else if let Some(p) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
        p.to_string()
    } else {
        return Ok(None);
    };
    validate_sub_path(&mount.name, &sub_path)?;
    Ok(Some(sub_path))
}

/// The API's lexical rules: relative, no `..` component.
pub fn validate_sub_path(volume: &str, sub_path: &str) -> Result<(), SubPathError> {
    let p = Path::new(sub_path);
    if p.is_absolute() {
        return Err(SubPathError::Absolute {
            volume: volume.to_string(),
            sub_path: sub_path.to_string(),
        });
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(SubPathError::Backsteps {
            volume: volume.to_string(),
            sub_path: sub_path.to_string(),
        });
    }
    Ok(())
}

/// Why [`resolve_beneath`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the path leaves the volume")]
    Escape,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Opens `sub_path` inside `root` (an `O_PATH` descriptor), creating missing directories when
/// `create` is set. Nothing outside `root` is ever opened or created. `sub_path` must already
/// be lexically valid ([`validate_sub_path`]).
pub fn resolve_beneath(root: &Path, sub_path: &str, create: bool) -> Result<OwnedFd, ResolveError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    if Path::new(sub_path).is_absolute() {
        return Err(ResolveError::Escape);
    }
    // `..` is passed to the kernel as it is: RESOLVE_BENEATH refuses it past the root.
    let parts: Vec<&str> = Path::new(sub_path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            Component::ParentDir => Some(".."),
            _ => None,
        })
        .collect();
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let open = |prefix: &str| {
        rustix::fs::openat2(
            root_fd.as_fd(),
            prefix,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
    };
    let mut current = rustix::io::fcntl_dupfd_cloexec(&root_fd, 0).map_err(io::Error::from)?;
    for i in 0..parts.len() {
        let prefix = parts[..=i].join("/");
        let mut result = open(&prefix);
        if create && matches!(result, Err(Errno::NOENT)) {
            // `current` is the already-checked parent; mkdirat never follows the new name, so
            // at worst it meets an existing entry (EEXIST) and the open below judges that.
            match rustix::fs::mkdirat(&current, parts[i], Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
            result = open(&prefix);
        }
        current = match result {
            Ok(fd) => fd,
            // EXDEV: a step left `root`; ELOOP: a magic link or a symlink loop.
            Err(Errno::XDEV | Errno::LOOP) => return Err(ResolveError::Escape),
            Err(e) => return Err(io::Error::from(e).into()),
        };
    }
    Ok(current)
}

/// Container and volume names become path components; the API makes them DNS labels.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name != "."
        && name != ".."
}

/// Resolves the subPath safely and bind-mounts it on
/// `<pod_dir>/volume-subpaths/<volume>/<container>/<index>`, which it returns for the runtime
/// to bind into the container. Called again for a restarted container, it replaces the old
/// bind.
pub fn prepare_sub_path(
    mounter: &dyn Mounter,
    pod_dir: &Path,
    mount: &SubPathMount<'_>,
) -> Result<PathBuf, SubPathError> {
    for name in [mount.volume_name, mount.container_name] {
        if !valid_name(name) {
            return Err(SubPathError::InvalidName(name.to_string()));
        }
    }
    validate_sub_path(mount.volume_name, mount.sub_path)?;
    let io_error = |source: io::Error| SubPathError::Io {
        volume: mount.volume_name.to_string(),
        sub_path: mount.sub_path.to_string(),
        source,
    };
    let fd = resolve_beneath(mount.volume_path, mount.sub_path, true).map_err(|e| match e {
        ResolveError::Escape => SubPathError::Escape {
            volume: mount.volume_name.to_string(),
            sub_path: mount.sub_path.to_string(),
        },
        ResolveError::Io(e) => io_error(e),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_error(e.into()))?;
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;

    let parent = pod_dir
        .join(SUBPATHS_DIR)
        .join(mount.volume_name)
        .join(mount.container_name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&parent)
        .map_err(io_error)?;
    let target = parent.join(mount.mount_index.to_string());
    unmount_all(mounter, &target).map_err(|e| io_error(e.source))?;
    // Whatever is left (the other type, from an earlier run) goes; remove_tree never follows
    // links and refuses mount points.
    let keep = match std::fs::symlink_metadata(&target) {
        Ok(m) => m.is_dir() == is_dir && !m.file_type().is_symlink(),
        Err(_) => false,
    };
    if !keep {
        remove_tree(&target).map_err(io_error)?;
        if is_dir {
            std::fs::DirBuilder::new()
                .mode(0o750)
                .create(&target)
                .map_err(io_error)?;
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&target)
                .map_err(io_error)?;
        }
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mounter.bind(&source, &target).map_err(io_error)?;
    Ok(target)
}

/// Unmounts and removes the subPath binds of one container (`Some(name)`) or of the whole pod
/// (`None`); never follows a symlink, never removes through a mount.
pub fn cleanup_sub_paths(
    mounter: &dyn Mounter,
    pod_dir: &Path,
    container: Option<&str>,
) -> io::Result<()> {
    let base = pod_dir.join(SUBPATHS_DIR);
    let err = |e: TeardownError| io::Error::other(e.to_string());
    for (volume_dir, volume_is_dir) in entries(&base).map_err(err)? {
        if volume_is_dir {
            for (container_dir, container_is_dir) in entries(&volume_dir).map_err(err)? {
                let name = container_dir.file_name().and_then(|n| n.to_str());
                if container.is_some_and(|c| Some(c) != name) {
                    continue;
                }
                if container_is_dir {
                    for (target, _) in entries(&container_dir).map_err(err)? {
                        unmount_all(mounter, &target).map_err(err)?;
                        remove_tree(&target)?;
                    }
                }
                remove_tree(&container_dir)?;
            }
        }
        // Only an emptied volume directory goes (another container may still use its binds).
        if !volume_is_dir || std::fs::read_dir(&volume_dir)?.next().is_none() {
            remove_tree(&volume_dir)?;
        }
    }
    if container.is_none() {
        remove_tree(&base)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::{MountOp, RecordingMounter};
    use proptest::prelude::*;

    fn vm(sub_path: Option<&str>, expr: Option<&str>) -> VolumeMount {
        VolumeMount {
            name: "vol".into(),
            mount_path: "/m".into(),
            sub_path: sub_path.map(String::from),
            sub_path_expr: expr.map(String::from),
            ..Default::default()
        }
    }

    fn env(vars: &[(&str, &str)]) -> ResolvedEnv {
        ResolvedEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            warnings: vec![],
        }
    }

    #[test]
    fn sub_path_and_expr() {
        let e = env(&[("POD", "web-0"), ("EMPTY", "")]);
        assert_eq!(sub_path_for(&vm(None, None), &e).unwrap(), None);
        assert_eq!(
            sub_path_for(&vm(Some("a/b"), None), &e).unwrap().as_deref(),
            Some("a/b")
        );
        assert_eq!(
            sub_path_for(&vm(None, Some("logs/$(POD)")), &e)
                .unwrap()
                .as_deref(),
            Some("logs/web-0")
        );
        let err = sub_path_for(&vm(None, Some("$(NOPE)/$(EMPTY)")), &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to expand subPathExpr \"$(NOPE)/$(EMPTY)\" in volume \"vol\": missing value for EMPTY, NOPE"
        );
        let err = sub_path_for(&vm(Some("../../etc"), None), &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subPath \"../../etc\" in volume \"vol\" must not contain '..'"
        );
        let err = sub_path_for(&vm(Some("/abs"), None), &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subPath \"/abs\" in volume \"vol\" must be a relative path"
        );
        // An expression cannot smuggle `..` in through a variable either.
        let e = env(&[("X", "..")]);
        assert!(sub_path_for(&vm(None, Some("$(X)/etc")), &e).is_err());
    }

    /// The escape cases need no root: resolution never gets as far as mounting.
    #[test]
    fn symlinks_out_of_the_volume_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::os::unix::fs::symlink("/", vol.join("door")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("up")).unwrap();
        std::fs::create_dir(vol.join("inner")).unwrap();
        std::os::unix::fs::symlink("inner", vol.join("inner-link")).unwrap();
        // The configMap layout: `key -> ..data/key`, `..data -> ..<version>`.
        std::fs::create_dir(vol.join("..v1")).unwrap();
        std::fs::write(vol.join("..v1/app.conf"), "x").unwrap();
        std::os::unix::fs::symlink("..v1", vol.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/app.conf", vol.join("app.conf")).unwrap();
        std::os::unix::fs::symlink("../vol/inner", vol.join("out-and-back")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", vol.join("magic")).unwrap();
        // A link that leaves and comes back is refused too: the kernel judges each step.
        for bad in [
            "door",
            "door/etc",
            "up",
            "up/etc",
            "magic",
            "inner/../door",
            "inner/../..",
            "out-and-back",
        ] {
            let r = resolve_beneath(&vol, bad, true);
            assert!(matches!(r, Err(ResolveError::Escape)), "{bad}: {r:?}");
        }
        // Nothing was created outside (or inside, for the refused paths).
        assert!(!Path::new("/etc/etc").exists());
        assert!(resolve_beneath(&vol, "inner-link", false).is_ok());
        assert!(resolve_beneath(&vol, "app.conf", false).is_ok());
        assert!(resolve_beneath(&vol, "new/deep/dir", true).is_ok());
        assert!(vol.join("new/deep/dir").is_dir());
        assert!(matches!(
            resolve_beneath(&vol, "absent", false),
            Err(ResolveError::Io(_))
        ));
    }

    #[test]
    fn prepare_binds_the_checked_descriptor() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::os::unix::fs::symlink("/", vol.join("door")).unwrap();
        std::fs::write(vol.join("file"), "x").unwrap();
        let pod = tmp.path().join("pod");
        let mounter = RecordingMounter::default();
        let mount = |sub_path, mount_index| SubPathMount {
            volume_name: "vol",
            volume_path: &vol,
            container_name: "app",
            mount_index,
            sub_path,
        };
        let err = prepare_sub_path(&mounter, &pod, &mount("door", 0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subPath \"door\" in volume \"vol\" resolves outside the volume"
        );
        let target = prepare_sub_path(&mounter, &pod, &mount("data/x", 1)).unwrap();
        assert_eq!(target, pod.join("volume-subpaths/vol/app/1"));
        assert!(target.is_dir());
        let file_target = prepare_sub_path(&mounter, &pod, &mount("file", 2)).unwrap();
        assert!(file_target.is_file());
        let real_vol = std::fs::canonicalize(&vol).unwrap();
        assert_eq!(
            mounter.ops(),
            vec![
                MountOp::Bind {
                    source: real_vol.join("data/x"),
                    target: target.clone()
                },
                MountOp::Bind {
                    source: real_vol.join("file"),
                    target: file_target.clone()
                },
            ]
        );
        // Preparing again (a restarted container) replaces the old bind.
        prepare_sub_path(&mounter, &pod, &mount("data/x", 1)).unwrap();
        assert_eq!(mounter.mounted().len(), 2);

        cleanup_sub_paths(&mounter, &pod, Some("app")).unwrap();
        assert!(mounter.mounted().is_empty());
        assert!(!pod.join("volume-subpaths/vol").exists());
        cleanup_sub_paths(&mounter, &pod, None).unwrap();
        assert!(!pod.join("volume-subpaths").exists());
    }

    proptest! {
        /// Whatever the subPath, resolution in a volume holding escaping symlinks never yields
        /// a descriptor outside the volume.
        #[test]
        fn resolution_stays_inside(parts in proptest::collection::vec(
            prop_oneof![Just("door"), Just("up"), Just("in"), Just("a"), Just(".."), Just(".")], 1..5)) {
            let tmp = tempfile::tempdir().unwrap();
            let vol = tmp.path().join("vol");
            std::fs::create_dir(&vol).unwrap();
            std::os::unix::fs::symlink("/", vol.join("door")).unwrap();
            std::os::unix::fs::symlink("..", vol.join("up")).unwrap();
            std::os::unix::fs::symlink(".", vol.join("in")).unwrap();
            let sub_path = parts.join("/");
            // Even without the lexical check (`..` included), the kernel keeps it inside.
            if let Ok(fd) = resolve_beneath(&vol, &sub_path, true) {
                let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
                let root = std::fs::canonicalize(&vol).unwrap();
                prop_assert!(real.starts_with(&root), "{} -> {}", sub_path, real.display());
            }
        }
    }
}
