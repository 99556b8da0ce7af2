//! hostPath volumes: kubelet's type checks (`DirectoryOrCreate`, `File`, `Socket`, …) and
//! berth's policy of host paths a pod may not mount (reliability case D6).
//!
//! The policy works on the path with symlinks resolved, so `/tmp/x -> /etc` is judged as
//! `/etc`, and the resolved path is what the runtime binds, so the link cannot be swapped for
//! another between the check and the mount.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Which host paths pods may mount. A path is denied when it lies inside a denied tree or
/// contains one (mounting `/var` would expose `/var/lib/berth`, and `/` contains everything);
/// an allowed tree overrides that for itself and everything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathPolicy {
    pub denied: Vec<PathBuf>,
    pub allowed: Vec<PathBuf>,
}

impl HostPathPolicy {
    /// The default: the kernel's interfaces (`/proc`, `/sys`, `/dev`), the host's
    /// configuration and boot files (`/etc`, `/boot`) and berth's own data directory, and so
    /// also every ancestor of them, `/` included.
    pub fn with_data_dir(data_dir: &Path) -> Self {
        let mut denied: Vec<PathBuf> = ["/proc", "/sys", "/dev", "/etc", "/boot"]
            .iter()
            .map(PathBuf::from)
            .collect();
        denied.push(canonicalize_lenient(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()));
        HostPathPolicy {
            denied,
            allowed: Vec::new(),
        }
    }

    /// Allows `path` and everything below it, whatever the denied list says.
    pub fn allow(mut self, path: impl Into<PathBuf>) -> Self {
        self.allowed.push(path.into());
        self
    }

    /// Checks a resolved (absolute, symlink-free) path; the error names the rule.
    pub fn check(&self, resolved: &Path) -> Result<(), HostPathError> {
        if self.allowed.iter().any(|a| resolved.starts_with(a)) {
            return Ok(());
        }
        match self
            .denied
            .iter()
            .find(|d| resolved.starts_with(d) || d.starts_with(resolved))
        {
            Some(rule) => Err(HostPathError::Denied {
                path: resolved.to_path_buf(),
                rule: rule.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("hostPath {0:?} must be an absolute path without '..'")]
    InvalidPath(String),
    #[error("invalid HostPathType {0:?}")]
    InvalidType(String),
    #[error("hostPath {} is not allowed on this node (it is or contains {})", path.display(), rule.display())]
    Denied { path: PathBuf, rule: PathBuf },
    #[error("hostPath type check failed: {} is not {what}", path.display())]
    TypeCheck { path: PathBuf, what: &'static str },
    #[error("hostPath {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// `path` with symlinks resolved; the part that does not exist yet is appended as written
/// (it has no `..`, which was checked before).
pub(crate) fn canonicalize_lenient(path: &Path) -> io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut resolved) => {
                for part in rest.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(e);
                };
                rest.push(name);
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks (and for the `…OrCreate` types makes) a hostPath, then returns its resolved path.
pub fn prepare(
    policy: &HostPathPolicy,
    path: &str,
    type_: Option<&str>,
) -> Result<PathBuf, HostPathError> {
    let p = Path::new(path);
    let lexically_ok = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !lexically_ok {
        return Err(HostPathError::InvalidPath(path.to_string()));
    }
    let io = |source| HostPathError::Io {
        path: p.to_path_buf(),
        source,
    };
    let resolved = canonicalize_lenient(p).map_err(io)?;
    policy.check(&resolved)?;

    let type_ = type_.unwrap_or("");
    let meta = match std::fs::metadata(&resolved) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let fail = |what| HostPathError::TypeCheck {
        path: p.to_path_buf(),
        what,
    };
    let ft = meta.as_ref().map(|m| m.file_type());
    match type_ {
        "" => {}
        "DirectoryOrCreate" => match ft {
            Some(ft) if !ft.is_dir() => return Err(fail("a directory")),
            Some(_) => {}
            None => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&resolved)
                .map_err(io)?,
        },
        "Directory" => {
            if !ft.is_some_and(|ft| ft.is_dir()) {
                return Err(fail("a directory"));
            }
        }
        "FileOrCreate" => match ft {
            Some(ft) if !ft.is_file() => return Err(fail("a file")),
            Some(_) => {}
            None => {
                if let Some(parent) = resolved.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(parent)
                        .map_err(io)?;
                }
                // No truncate: if it appeared meanwhile, its contents stay.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    .open(&resolved)
                    .map_err(io)?;
            }
        },
        "File" => {
            if !ft.is_some_and(|ft| ft.is_file()) {
                return Err(fail("a file"));
            }
        }
        "Socket" => {
            if !ft.is_some_and(|ft| ft.is_socket()) {
                return Err(fail("a socket file"));
            }
        }
        "CharDevice" => {
            if !ft.is_some_and(|ft| ft.is_char_device()) {
                return Err(fail("a character device"));
            }
        }
        "BlockDevice" => {
            if !ft.is_some_and(|ft| ft.is_block_device()) {
                return Err(fail("a block device"));
            }
        }
        other => return Err(HostPathError::InvalidType(other.to_string())),
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(data: &Path) -> HostPathPolicy {
        HostPathPolicy::with_data_dir(data)
    }

    #[test]
    fn default_policy_denies_sensitive_roots_and_their_ancestors() {
        let p = policy(Path::new("/var/lib/berth"));
        for denied in [
            "/",
            "/proc",
            "/proc/1/root",
            "/sys/fs/cgroup",
            "/dev",
            "/etc",
            "/etc/shadow",
            "/var",
            "/var/lib",
            "/var/lib/berth/pods",
        ] {
            assert!(p.check(Path::new(denied)).is_err(), "{denied}");
        }
        for ok in ["/tmp/x", "/var/log", "/srv/data", "/home"] {
            assert!(p.check(Path::new(ok)).is_ok(), "{ok}");
        }
        let p = p.allow("/etc/ssl/certs");
        assert!(p.check(Path::new("/etc/ssl/certs/ca.pem")).is_ok());
        assert!(p.check(Path::new("/etc/ssl")).is_err());
    }

    #[test]
    fn symlinks_are_judged_by_their_target() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("sneaky");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let err = prepare(
            &policy(Path::new("/var/lib/berth")),
            link.to_str().unwrap(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, HostPathError::Denied { .. }), "{err}");
    }

    #[test]
    fn bad_paths_and_types() {
        let p = policy(Path::new("/var/lib/berth"));
        for bad in ["relative", "/tmp/../etc", "../x", ""] {
            assert!(
                matches!(prepare(&p, bad, None), Err(HostPathError::InvalidPath(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            prepare(&p, "/tmp", Some("Bogus")),
            Err(HostPathError::InvalidType(_))
        ));
    }

    #[test]
    fn type_checks_and_creation() {
        let tmp = tempfile::tempdir().unwrap();
        let p = policy(Path::new("/var/lib/berth"));
        let base = tmp.path().to_str().unwrap().to_string();
        let file = format!("{base}/f");
        std::fs::write(&file, "x").unwrap();

        let err = prepare(&p, &file, Some("Directory")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("hostPath type check failed: {file} is not a directory")
        );
        assert!(prepare(&p, &file, Some("File")).is_ok());
        assert!(prepare(&p, &file, Some("Socket")).is_err());
        assert!(prepare(&p, &file, Some("CharDevice")).is_err());
        assert!(prepare(&p, &format!("{base}/missing"), Some("Directory")).is_err());
        // Missing and type "" is not checked, and nothing is created (H6).
        assert!(prepare(&p, &format!("{base}/missing"), None).is_ok());
        assert!(!Path::new(&format!("{base}/missing")).exists());

        let made = prepare(&p, &format!("{base}/new/dir"), Some("DirectoryOrCreate")).unwrap();
        assert!(made.is_dir());
        let made = prepare(&p, &format!("{base}/new2/file"), Some("FileOrCreate")).unwrap();
        assert!(made.is_file());
        assert!(prepare(&p, &format!("{base}/new/dir"), Some("FileOrCreate")).is_err());
    }
}
