//! kubelet's atomic writer layout for API-data volumes (configMap, secret, downwardAPI,
//! projected), so a container never sees half of an update:
//!
//! ```text
//! <volume>/..2024_05_01_10_00_00.123456789/   the files of one version (nested paths too)
//! <volume>/..data -> ..2024_05_01_10_00_00.123456789
//! <volume>/key -> ..data/key                  one symlink per top-level name
//! ```
//!
//! An update writes a new timestamped directory, points a temporary `..data_tmp` symlink at
//! it and renames that over `..data` (rename is atomic), then fixes the top-level symlinks and
//! removes the old version. Names starting with `..` belong to the writer, so payload paths
//! may not start with `..`.
//!
//! Nothing is fsynced: the contents are derived from API objects and rewritten whenever they
//! differ, including after the agent restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
/// Linux's limits, which kubelet checks too.
const MAX_PATH_LEN: usize = 4096;
const MAX_NAME_LEN: usize = 255;

/// One file of a volume: its contents and mode bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The files of a volume by relative path.
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError {
    let path = path.to_path_buf();
    move |source| AtomicWriteError::Io { what, path, source }
}

/// Checks a payload path as kubelet does (relative, no `..`, not starting with `..`, within
/// Linux's length limits) and returns it normalized (empty and `.` components dropped).
pub fn normalize_path(path: &str) -> Result<String, AtomicWriteError> {
    let invalid = |reason| AtomicWriteError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.len() > MAX_PATH_LEN {
        return Err(invalid("must not be longer than 4096 characters"));
    }
    if path.contains('\0') {
        return Err(invalid("must not contain NUL"));
    }
    if path.starts_with('/') {
        return Err(invalid("must be a relative path"));
    }
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) => {
                let c = c.to_str().ok_or_else(|| invalid("must be UTF-8"))?;
                if c.len() > MAX_NAME_LEN {
                    return Err(invalid(
                        "must not have a component longer than 255 characters",
                    ));
                }
                parts.push(c);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("must not contain '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("must be a relative path"));
            }
        }
    }
    let Some(first) = parts.first() else {
        return Err(invalid("must not be empty"));
    };
    if first.starts_with("..") {
        return Err(invalid("must not start with '..'"));
    }
    Ok(parts.join("/"))
}

/// Writes `payload` into `dir` with the atomic layout; returns whether anything changed.
/// `dir` must exist and belong to the caller (a volume directory of the agent's).
pub fn write_atomic(dir: &Path, payload: &Payload) -> Result<bool, AtomicWriteError> {
    let mut files = Payload::new();
    for (path, file) in payload {
        files.insert(normalize_path(path)?, file.clone());
    }
    let top_level: BTreeSet<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect();

    let data_link = dir.join(DATA_DIR);
    let old_version = std::fs::read_link(&data_link)
        .ok()
        .filter(|t| t.components().count() == 1);
    let unchanged = match &old_version {
        Some(old) => read_version(&dir.join(old)).is_ok_and(|current| current == files),
        None => false,
    };

    if !unchanged {
        let version = new_version_dir(dir)?;
        let version_path = dir.join(&version);
        for (path, file) in &files {
            write_file(&version_path, path, file)?;
        }
        let tmp = dir.join(DATA_TMP);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &tmp)(e)),
        }
        std::os::unix::fs::symlink(&version, &tmp).map_err(io_err("symlink", &tmp))?;
        std::fs::rename(&tmp, &data_link).map_err(io_err("rename", &data_link))?;
    }

    // Top-level names: create the ones missing, drop the ones no longer in the payload.
    for name in &top_level {
        let link = dir.join(name);
        let want = Path::new(DATA_DIR).join(name);
        match std::fs::read_link(&link) {
            Ok(target) if target == want => continue,
            Ok(_) => std::fs::remove_file(&link).map_err(io_err("remove", &link))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Something that is not a symlink sits there; it was not put there by us.
            Err(e) => return Err(io_err("read link", &link)(e)),
        }
        std::os::unix::fs::symlink(&want, &link).map_err(io_err("symlink", &link))?;
    }
    let current = std::fs::read_link(&data_link).map_err(io_err("read link", &data_link))?;
    for entry in std::fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let entry = entry.map_err(io_err("read dir", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let is_symlink = entry.file_type().is_ok_and(|t| t.is_symlink());
        if let Some(rest) = name.strip_prefix("..") {
            // Old versions and a `..data_tmp` left by a crash; std's remove_dir_all does not
            // follow symlinks.
            if name != DATA_DIR && Path::new(name) != current && !rest.is_empty() {
                let r = if is_symlink {
                    std::fs::remove_file(&path)
                } else {
                    std::fs::remove_dir_all(&path)
                };
                r.map_err(io_err("remove", &path))?;
            }
        } else if is_symlink && !top_level.contains(name) {
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(!unchanged)
}

fn write_file(root: &Path, rel: &str, file: &FileProjection) -> Result<(), AtomicWriteError> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err("create dir", parent))?;
    }
    std::fs::write(&path, &file.data).map_err(io_err("write", &path))?;
    // Set the mode after writing so the umask does not change it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode & 0o7777))
        .map_err(io_err("chmod", &path))
}

/// The files of one version directory, to compare with a new payload.
fn read_version(root: &Path) -> io::Result<Payload> {
    let mut out = Payload::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 name in a volume")
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                stack.push((entry.path(), rel));
            } else {
                let data = std::fs::read(entry.path())?;
                out.insert(
                    rel,
                    FileProjection {
                        data,
                        mode: meta.permissions().mode() & 0o7777,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Makes `..YYYY_MM_DD_HH_MM_SS.<unique>` (UTC), kubelet's naming, mode 0755.
fn new_version_dir(dir: &Path) -> Result<String, AtomicWriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = format_utc(now.as_secs());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("..{stamp}.{}{n}", now.subsec_nanos());
        let path = dir.join(&name);
        match std::fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &path))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create dir", &path)(e)),
        }
    }
}

/// `2006_01_02_15_04_05` for a Unix time, UTC (days-to-civil from Howard Hinnant's algorithm).
fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn formats_dates() {
        assert_eq!(format_utc(0), "1970_01_01_00_00_00");
        assert_eq!(format_utc(951_782_400), "2000_02_29_00_00_00");
        assert_eq!(format_utc(1_714_557_600), "2024_05_01_10_00_00");
    }

    #[test]
    fn layout_update_and_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut payload = Payload::from([
            ("a".to_string(), file("1", 0o644)),
            ("sub/b".to_string(), file("2", 0o600)),
        ]);
        assert!(write_atomic(dir, &payload).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        let mode = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Same payload: nothing changes.
        assert!(!write_atomic(dir, &payload).unwrap());
        assert_eq!(std::fs::read_link(dir.join(DATA_DIR)).unwrap(), first);

        // New contents and a removed key: a new version, the old one gone, `sub` unlinked.
        payload.remove("sub/b");
        payload.insert("a".into(), file("3", 0o644));
        assert!(write_atomic(dir, &payload).unwrap());
        let second = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        assert_ne!(first, second);
        assert!(!dir.join(&first).exists());
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        let names: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn bad_paths_are_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "..data",
            "",
            ".",
            "..x/y",
        ] {
            let payload = Payload::from([(bad.to_string(), file("x", 0o644))]);
            assert!(write_atomic(tmp.path(), &payload).is_err(), "{bad:?}");
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    proptest! {
        /// A normalized path is relative, has no `..` component and stays below the root.
        #[test]
        fn normalized_paths_stay_inside(path in "[a-z./]{0,20}") {
            if let Ok(p) = normalize_path(&path) {
                prop_assert!(!p.starts_with('/'));
                prop_assert!(!p.starts_with(".."));
                prop_assert!(p.split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
            }
        }
    }
}
