//! Unpacking one layer tarball into one directory, turning OCI whiteouts into overlayfs ones.
//!
//! This module owns the rule that a layer can never write outside its directory. It does not
//! use `tar`'s `unpack_in`: every entry is resolved one component at a time with `openat`
//! and `O_NOFOLLOW` from a descriptor of the layer root, so a symlink unpacked earlier (say
//! `evil -> /tmp`) can never be followed by a later entry (`evil/x` is refused). Paths with
//! `..` or a leading `/` are refused outright, as are hard links that point outside.
//!
//! Whiteouts follow containerd's `AsOverlayWhiteout`: `.wh.<name>` becomes a 0:0 character
//! device `<name>`, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory, and other
//! `.wh..wh.*` entries (aufs bookkeeping) are skipped. Both need root.
//!
//! Sizes are capped per layer ([`Limits`]) so that a small gzip cannot fill the disk.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags, makedev,
};
use rustix::io::Errno;

use crate::error::{Error, Result, errno};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Caps on what one layer may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of file content in one layer (after decompression).
    pub max_layer_bytes: u64,
    /// Number of tar entries in one layer.
    pub max_layer_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_bytes: 16 << 30,
            max_layer_entries: 1_000_000,
        }
    }
}

/// A directory's metadata, applied after all its children are written (writing a child
/// changes the mtime, and a read-only mode would stop the writes for a non-root user).
struct DirMeta {
    components: Vec<Vec<u8>>,
    meta: Meta,
}

#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: Option<Uid>,
    gid: Option<Gid>,
    mtime: i64,
}

struct Unpacker<'a> {
    root: OwnedFd,
    dest: &'a Path,
    layer: &'a str,
    limits: Limits,
    as_root: bool,
    bytes: u64,
    dirs: Vec<DirMeta>,
}

/// Unpacks the (already decompressed) layer tar `reader` into `dest`, an existing directory
/// that is empty. `layer` names the layer in errors. Returns the bytes of content written.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path, layer: &str, limits: Limits) -> Result<u64> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(format!("opening {}", dest.display())))?;
    let mut u = Unpacker {
        root,
        dest,
        layer,
        limits,
        as_root: rustix::process::geteuid().is_root(),
        bytes: 0,
        dirs: Vec::new(),
    };
    let read_err = |e: io::Error| Error::Io {
        context: format!("reading layer {layer}"),
        source: e,
    };
    let mut archive = tar::Archive::new(reader);
    let mut count = 0u64;
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        count += 1;
        if count > limits.max_layer_entries {
            return Err(Error::LimitExceeded {
                layer: layer.to_string(),
                what: "entries",
                limit: limits.max_layer_entries,
            });
        }
        u.entry(entry)?;
    }
    // Deepest first, so that a parent's mtime is set after its children's metadata.
    let mut dirs = std::mem::take(&mut u.dirs);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components.len()));
    for d in &dirs {
        u.apply_dir_meta(d)?;
    }
    Ok(u.bytes)
}

/// Splits an entry path into its components, refusing absolute paths and `..`.
fn components(raw: &[u8]) -> std::result::Result<Vec<Vec<u8>>, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains `..`"),
            c if c.contains(&0) => return Err("path contains NUL"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn p(c: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(c))
}

fn display(comps: &[Vec<u8>]) -> String {
    let joined: Vec<_> = comps.iter().map(|c| String::from_utf8_lossy(c)).collect();
    joined.join("/")
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn path_of(&self, comps: &[Vec<u8>]) -> PathBuf {
        comps
            .iter()
            .fold(self.dest.to_path_buf(), |p_, c| p_.join(p(c)))
    }

    /// Opens the directory `comps` under the root, one component at a time, never following a
    /// symlink. Missing directories are created (0755) when `create`, as docker does for
    /// layers that omit parent entries.
    fn open_dir(&self, entry: &str, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur = rustix::io::dup(&self.root).map_err(errno("dup"))?;
        for (i, c) in comps.iter().enumerate() {
            let mut attempt = rustix::fs::openat(&cur, p(c), flags, Mode::empty());
            if matches!(attempt, Err(Errno::NOENT)) && create {
                match rustix::fs::mkdirat(&cur, p(c), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(errno(format!("creating {}", display(&comps[..=i])))(e));
                    }
                }
                attempt = rustix::fs::openat(&cur, p(c), flags, Mode::empty());
            }
            cur = match attempt {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(self.refuse(
                        entry,
                        format!(
                            "parent {} is a symlink or not a directory",
                            display(&comps[..=i])
                        ),
                    ));
                }
                Err(e) => return Err(errno(format!("opening {}", display(&comps[..=i])))(e)),
            };
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `dir` (a previous entry of this layer with the same
    /// name), so that the new entry replaces it as tar semantics require.
    fn clear(&self, dir: &OwnedFd, name: &[u8], keep_dir: bool) -> Result<bool> {
        match rustix::fs::statat(dir, p(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(errno("stat")(e)),
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if is_dir && keep_dir {
                    return Ok(true);
                }
                let flags = if is_dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rustix::fs::unlinkat(dir, p(name), flags).map_err(errno(format!(
                    "replacing {}",
                    String::from_utf8_lossy(name)
                )))?;
                Ok(false)
            }
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let comps = components(&raw).map_err(|r| self.refuse(&shown, r))?;
        let header = entry.header();
        let kind = header.entry_type();
        let meta = self.meta(header, &shown)?;
        let Some((name, parents)) = comps.split_last() else {
            // The layer root itself (`./`): only its metadata matters.
            if kind.is_dir() {
                self.dirs.push(DirMeta {
                    components: Vec::new(),
                    meta,
                });
            }
            return Ok(());
        };
        let parent = self.open_dir(&shown, parents, true)?;

        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&parent, parents, name);
        }

        match kind {
            tar::EntryType::Directory => {
                if !self.clear(&parent, name, true)? {
                    rustix::fs::mkdirat(&parent, p(name), Mode::from_raw_mode(0o700))
                        .map_err(errno(format!("creating {shown}")))?;
                }
                // Refuse to treat a symlink as a directory later: open_dir checks each use.
                self.dirs.push(DirMeta {
                    components: comps.clone(),
                    meta,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&parent, name, false)?;
                let fd = rustix::fs::openat(
                    &parent,
                    p(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(errno(format!("creating {shown}")))?;
                let mut file = File::from(fd);
                let budget = self.limits.max_layer_bytes.saturating_sub(self.bytes);
                let written = io::copy(&mut (&mut entry).take(budget.saturating_add(1)), &mut file)
                    .map_err(|e| Error::Io {
                        context: format!("writing {shown} from layer {}", self.layer),
                        source: e,
                    })?;
                if written > budget {
                    return Err(Error::LimitExceeded {
                        layer: self.layer.to_string(),
                        what: "bytes",
                        limit: self.limits.max_layer_bytes,
                    });
                }
                self.bytes += written;
                // chown before chmod: chown clears setuid/setgid bits.
                if self.as_root {
                    rustix::fs::fchown(&file, meta.uid, meta.gid)
                        .map_err(errno(format!("chown {shown}")))?;
                }
                rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
                    .map_err(errno(format!("chmod {shown}")))?;
                rustix::fs::futimens(&file, &times(meta.mtime))
                    .map_err(errno(format!("setting mtime of {shown}")))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&shown, "symlink without a target"))?
                    .into_owned();
                self.clear(&parent, name, false)?;
                // The target is stored as is: nothing in this module ever follows it.
                rustix::fs::symlinkat(p(&target), &parent, p(name))
                    .map_err(errno(format!("creating symlink {shown}")))?;
                self.link_meta(&parent, name, &shown, meta)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&shown, "hard link without a target"))?
                    .into_owned();
                let tcomps = components(&target)
                    .map_err(|r| self.refuse(&shown, format!("hard link target: {r}")))?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(self.refuse(&shown, "hard link to the layer root"));
                };
                let tdir = self.open_dir(&shown, tparents, false)?;
                self.clear(&parent, name, false)?;
                // linkat without AT_SYMLINK_FOLLOW links the symlink itself, never its target.
                rustix::fs::linkat(&tdir, p(tname), &parent, p(name), AtFlags::empty()).map_err(
                    errno(format!(
                        "hard-linking {shown} to {}",
                        String::from_utf8_lossy(&target)
                    )),
                )?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if file_type != FileType::Fifo && !self.as_root {
                    tracing::debug!(
                        layer = self.layer,
                        entry = shown,
                        "skipping device node (not root)"
                    );
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.clear(&parent, name, false)?;
                rustix::fs::mknodat(
                    &parent,
                    p(name),
                    file_type,
                    Mode::from_raw_mode(meta.mode),
                    makedev(major, minor),
                )
                .map_err(errno(format!("creating node {shown}")))?;
                self.link_meta(&parent, name, &shown, meta)?;
            }
            other => {
                // Pax global headers and the like carry nothing to write.
                tracing::debug!(layer = self.layer, entry = shown, kind = ?other, "skipping entry");
            }
        }
        Ok(())
    }

    fn meta(&self, header: &tar::Header, shown: &str) -> Result<Meta> {
        let bad = |what: &str| self.refuse(shown, format!("unreadable {what} in header"));
        let mode = header.mode().map_err(|_| bad("mode"))? & 0o7777;
        // -1 means "unchanged" to chown; any id that does not fit is left as is.
        let id = |v: u64| u32::try_from(v).ok().filter(|&v| v != u32::MAX);
        let uid = id(header.uid().map_err(|_| bad("uid"))?).map(Uid::from_raw);
        let gid = id(header.gid().map_err(|_| bad("gid"))?).map(Gid::from_raw);
        let mtime = i64::try_from(header.mtime().map_err(|_| bad("mtime"))?).unwrap_or(0);
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
        })
    }

    /// Ownership and mtime of a symlink or node, without following it.
    fn link_meta(&self, parent: &OwnedFd, name: &[u8], shown: &str, meta: Meta) -> Result<()> {
        if self.as_root {
            rustix::fs::chownat(
                parent,
                p(name),
                meta.uid,
                meta.gid,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno(format!("chown {shown}")))?;
        }
        rustix::fs::utimensat(
            parent,
            p(name),
            &times(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno(format!("setting mtime of {shown}")))
    }

    fn whiteout(&self, parent: &OwnedFd, parents: &[Vec<u8>], name: &[u8]) -> Result<()> {
        let dir_path = self.path_of(parents);
        if name == WHITEOUT_OPAQUE {
            return rustix::fs::fsetxattr(parent, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(
                |e| privileged("opaque-directory xattr trusted.overlay.opaque", dir_path, e),
            );
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(());
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if matches!(target, b"" | b"." | b"..") {
            return Err(self.refuse(
                &String::from_utf8_lossy(name),
                "whiteout of no name, `.` or `..`",
            ));
        }
        self.clear(parent, target, false)?;
        rustix::fs::mknodat(
            parent,
            p(target),
            FileType::CharacterDevice,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(|e| privileged("whiteout device", dir_path.join(p(target)), e))
    }

    fn apply_dir_meta(&self, d: &DirMeta) -> Result<()> {
        let shown = display(&d.components);
        let fd = self.open_dir(&shown, &d.components, false)?;
        if self.as_root {
            rustix::fs::fchown(&fd, d.meta.uid, d.meta.gid)
                .map_err(errno(format!("chown {shown}/")))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.meta.mode))
            .map_err(errno(format!("chmod {shown}/")))?;
        rustix::fs::futimens(fd.as_fd(), &times(d.meta.mtime))
            .map_err(errno(format!("setting mtime of {shown}/")))
    }
}

/// Wraps a layer blob in the right decompressor, chosen by its first bytes as containerd does
/// (`1f 8b` gzip, `28 b5 2f fd` zstd, anything else plain tar); media types are not trusted.
pub(crate) fn decompressed<R: Read + 'static>(reader: R, layer: &str) -> Result<Box<dyn Read>> {
    let mut reader = io::BufReader::new(reader);
    let head = io::BufRead::fill_buf(&mut reader).map_err(|e| Error::Io {
        context: format!("reading layer {layer}"),
        source: e,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(Error::Unsupported(format!("zstd-compressed layer {layer}")))
    } else {
        Ok(Box::new(reader))
    }
}

fn privileged(what: &'static str, path: PathBuf, e: Errno) -> Error {
    if e == Errno::PERM || e == Errno::ACCESS {
        Error::NeedsRoot {
            what,
            path,
            source: e.into(),
        }
    } else {
        Error::Io {
            context: format!("{what} at {}", path.display()),
            source: e.into(),
        }
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_errors_say_root() {
        let e = privileged("whiteout device", PathBuf::from("/x"), Errno::PERM);
        assert!(matches!(e, Error::NeedsRoot { .. }));
        assert!(e.to_string().contains("needs root"), "{e}");
        let e = privileged("whiteout device", PathBuf::from("/x"), Errno::NOSPC);
        assert!(matches!(e, Error::Io { .. }));
    }

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(
            components(b"./a//b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../b").is_err());
        assert!(components(b"..").is_err());
        assert!(components(b"./").unwrap().is_empty());
    }
}
