//! Reading image archives: OCI image layout tarballs and `docker save` tarballs.
//!
//! This module owns the archive formats and nothing on disk beyond a staging directory. One
//! pass over the outer tar copies every regular file into the staging directory under a
//! counter name (archive names never become file names) while hashing it, so that afterwards
//! each blob's digest is known and can be checked against the name or descriptor that
//! refers to it. Then the format's JSON (`index.json` or `manifest.json`) is read into a list
//! of [`SourceImage`]s that the store commits.
//!
//! Formats:
//! - OCI layout: `oci-layout`, `index.json`, `blobs/sha256/<hex>`. Names come from the
//!   `io.containerd.image.name` annotation, else `org.opencontainers.image.ref.name`. A nested
//!   index picks the manifest for this machine's platform (else the first).
//! - docker-archive: `manifest.json` `[{Config, RepoTags, Layers}]`, layers as `<id>/layer.tar`
//!   (before Docker 25) or `blobs/sha256/<hex>` (Docker 25 on, which also writes an OCI
//!   `index.json`; `manifest.json` wins because its `RepoTags` are full names).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{ANNOTATION_REF_NAME, Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::reference::is_sha256_hex;

/// containerd's annotation with the image's full name (`ref.name` is often only a tag).
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The JSON documents we read are small; a bigger one is hostile.
const MAX_JSON_BYTES: u64 = 8 << 20;
/// Symlink chains inside the archive (docker writes `<id>/layer.tar -> ../<other>/layer.tar`).
const MAX_LINK_HOPS: usize = 8;

/// A file of the archive, copied into staging and hashed.
#[derive(Debug)]
pub(crate) struct StagedFile {
    /// Where the copy is (a counter name inside the staging directory).
    pub path: PathBuf,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    pub size: u64,
}

/// One image found in an archive, its parts as indices into [`Staged::files`].
#[derive(Debug)]
pub(crate) struct SourceImage {
    /// Names as written in the archive (normalized by the store).
    pub names: Vec<String>,
    /// The OCI manifest, when the archive has one.
    pub manifest: Option<usize>,
    pub config: usize,
    pub layers: Vec<usize>,
}

/// The archive's files, staged.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub files: Vec<StagedFile>,
    by_path: HashMap<String, usize>,
    links: HashMap<String, String>,
}

/// Normalizes an archive-internal path, refusing `..` escapes and absolute paths.
fn clean(raw: &str) -> Result<String> {
    if raw.starts_with('/') {
        return Err(Error::Archive(format!("absolute path {raw:?} in archive")));
    }
    let mut out: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(Error::Archive(format!("path {raw:?} escapes the archive")));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

/// Copies every regular file of the archive at `path` into `staging` (an empty directory).
pub(crate) fn stage(path: &Path, staging: &Path) -> Result<Staged> {
    let file = File::open(path).map_err(|e| Error::Io {
        context: format!("opening {}", path.display()),
        source: e,
    })?;
    let read_err = |e: io::Error| Error::Io {
        context: format!("reading {}", path.display()),
        source: e,
    };
    let mut reader = io::BufReader::new(file);
    let head = io::BufRead::fill_buf(&mut reader).map_err(read_err)?;
    if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // Decompressing it would need a cap on the whole archive too; `docker save` and OCI
        // layouts are plain tar, so say so instead.
        return Err(Error::Unsupported(format!(
            "{} is compressed; decompress it first (image archives are plain tar)",
            path.display()
        )));
    }
    let mut staged = Staged::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        // Outer-archive `..` is never legitimate (docker and OCI write plain relative names).
        if raw.split('/').any(|c| c == "..") || raw.starts_with('/') {
            return Err(Error::UnsafeEntry {
                layer: "(archive)".into(),
                entry: raw,
                reason: "absolute path or `..` in the archive".into(),
            });
        }
        let name = clean(&raw)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = staging.join(staged.files.len().to_string());
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .map_err(|e| Error::Io {
                        context: format!("creating {}", dest.display()),
                        source: e,
                    })?;
                let mut hasher = HashingWriter {
                    inner: &mut out,
                    hasher: Sha256::new(),
                };
                let size = io::copy(&mut entry, &mut hasher).map_err(read_err)?;
                let digest = format!("sha256:{}", hex(&hasher.hasher.finalize()));
                staged.by_path.insert(name, staged.files.len());
                staged.files.push(StagedFile {
                    path: dest,
                    digest,
                    size,
                });
            }
            tar::EntryType::Symlink => {
                if let Some(target) = entry.link_name_bytes() {
                    let target = String::from_utf8_lossy(&target);
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    let resolved = clean(&format!("{dir}/{target}"))?;
                    staged.links.insert(name, resolved);
                }
            }
            tar::EntryType::Link => {
                if let Some(target) = entry.link_name_bytes() {
                    staged
                        .links
                        .insert(name, clean(&String::from_utf8_lossy(&target))?);
                }
            }
            _ => {}
        }
    }
    Ok(staged)
}

impl Staged {
    /// The staged file at archive path `name`, following the archive's own links.
    fn lookup(&self, name: &str) -> Option<usize> {
        let mut name = clean(name).ok()?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(&i) = self.by_path.get(&name) {
                return Some(i);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    fn has(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// The file at `name`; if `name` is `blobs/sha256/<hex>` its content must hash to that.
    fn file(&self, name: &str) -> Result<usize> {
        let i = self
            .lookup(name)
            .ok_or_else(|| Error::Archive(format!("the archive has no file {name:?}")))?;
        let cleaned = clean(name)?;
        if let Some(rest) = cleaned.strip_prefix("blobs/") {
            let (alg, hex) = rest.split_once('/').unwrap_or((rest, ""));
            if alg != "sha256" || !is_sha256_hex(hex) {
                return Err(Error::Unsupported(format!(
                    "blob {cleaned:?} (only sha256)"
                )));
            }
            self.check(i, &format!("sha256:{hex}"))?;
        }
        Ok(i)
    }

    /// The blob a descriptor points at, checked against the descriptor's digest and size.
    fn blob(&self, d: &Descriptor) -> Result<usize> {
        let digest = d.digest();
        let alg = digest.algorithm().as_ref().to_string();
        let hex = digest.digest();
        if alg != "sha256" || !is_sha256_hex(hex) {
            return Err(Error::Unsupported(format!("digest {digest} (only sha256)")));
        }
        let i = self.file(&format!("blobs/sha256/{hex}"))?;
        if self.files[i].size != d.size() {
            return Err(Error::Archive(format!(
                "blob {digest} is {} bytes, its descriptor says {}",
                self.files[i].size,
                d.size()
            )));
        }
        Ok(i)
    }

    fn check(&self, i: usize, expected: &str) -> Result<()> {
        let actual = &self.files[i].digest;
        if actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.clone(),
            });
        }
        Ok(())
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, i: usize, what: &str) -> Result<T> {
        let f = &self.files[i];
        if f.size > MAX_JSON_BYTES {
            return Err(Error::Archive(format!(
                "{what} is larger than {MAX_JSON_BYTES} bytes"
            )));
        }
        let bytes = std::fs::read(&f.path).map_err(|e| Error::Io {
            context: format!("reading staged {what}"),
            source: e,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            context: format!("parsing {what}"),
            source: e,
        })
    }

    /// Reads the archive's images, whichever format it is.
    pub(crate) fn images(&self) -> Result<Vec<SourceImage>> {
        if self.has("manifest.json") {
            self.docker_images()
        } else if self.has("index.json") {
            self.oci_images()
        } else {
            Err(Error::Archive(
                "neither manifest.json (docker-archive) nor index.json (OCI layout) found".into(),
            ))
        }
    }

    fn docker_images(&self) -> Result<Vec<SourceImage>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = self.read_json(self.file("manifest.json")?, "manifest.json")?;
        let mut out = Vec::new();
        for e in entries {
            let config = self.file(&e.config)?;
            // Old archives name the config `<hex>.json`: its content must hash to that.
            if let Some(hex) = clean(&e.config)?.strip_suffix(".json")
                && is_sha256_hex(hex)
            {
                self.check(config, &format!("sha256:{hex}"))?;
            }
            let layers = e
                .layers
                .iter()
                .map(|l| self.file(l))
                .collect::<Result<Vec<_>>>()?;
            out.push(SourceImage {
                names: e.repo_tags.unwrap_or_default(),
                manifest: None,
                config,
                layers,
            });
        }
        Ok(out)
    }

    fn oci_images(&self) -> Result<Vec<SourceImage>> {
        if let Some(i) = self.lookup("oci-layout") {
            #[derive(Deserialize)]
            struct Layout {
                #[serde(rename = "imageLayoutVersion")]
                version: String,
            }
            let layout: Layout = self.read_json(i, "oci-layout")?;
            if layout.version != "1.0.0" {
                return Err(Error::Unsupported(format!(
                    "OCI layout version {}",
                    layout.version
                )));
            }
        }
        let index: ImageIndex = self.read_json(self.file("index.json")?, "index.json")?;
        let mut out: Vec<SourceImage> = Vec::new();
        for d in index.manifests() {
            let names: Vec<String> = d
                .annotations()
                .as_ref()
                .and_then(|a| {
                    a.get(ANNOTATION_CONTAINERD_NAME)
                        .or(a.get(ANNOTATION_REF_NAME))
                })
                .cloned()
                .into_iter()
                .collect();
            let manifest_desc = match d.media_type() {
                MediaType::ImageIndex => self.pick_platform(d)?,
                _ => d.clone(),
            };
            let manifest = self.blob(&manifest_desc)?;
            // The same manifest listed twice (two names) is one image with two names.
            if let Some(existing) = out.iter_mut().find(|s| {
                s.manifest
                    .is_some_and(|m| self.files[m].digest == self.files[manifest].digest)
            }) {
                existing.names.extend(names);
                continue;
            }
            let m: ImageManifest = self.read_json(manifest, "image manifest")?;
            let config = self.blob(m.config())?;
            let layers = m
                .layers()
                .iter()
                .map(|l| self.blob(l))
                .collect::<Result<Vec<_>>>()?;
            out.push(SourceImage {
                names,
                manifest: Some(manifest),
                config,
                layers,
            });
        }
        Ok(out)
    }

    /// From a nested index, the manifest for linux on this machine's architecture.
    fn pick_platform(&self, d: &Descriptor) -> Result<Descriptor> {
        let nested: ImageIndex = self.read_json(self.blob(d)?, "nested image index")?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let ours = nested.manifests().iter().find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == arch
            })
        });
        ours.or(nested.manifests().first())
            .cloned()
            .ok_or_else(|| Error::Archive(format!("index {} lists no manifests", d.digest())))
    }
}

struct HashingWriter<'a, W> {
    inner: &'a mut W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (and counts) what passes through it: the diffID of a layer is the
/// sha256 of its uncompressed tar. It stops with an error past `limit` bytes, which is what
/// stops a decompression bomb whose tar stream never ends.
pub(crate) struct HashingReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub read: u64,
    pub limit: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(
                "decompressed layer exceeds the size limit",
            ));
        }
        Ok(n)
    }
}

/// Lower-case hex of a hash.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./a/b/../c").unwrap(), "a/c");
        assert!(clean("../x").is_err());
        assert!(clean("/x").is_err());
    }
}
