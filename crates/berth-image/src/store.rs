//! The content-addressed image store on disk, and the operations `berth image` offers.
//!
//! ```text
//! <root>/                 0700
//!   blobs/sha256/<hex>    manifests, configs and compressed layers, exactly as imported
//!   layers/<hex>/         one unpacked layer per diffID (the sha256 of its uncompressed tar)
//!   images.json           reference → image, written atomically (0600)
//!   lock                  flock'd while the store is changed
//!   tmp/                  staging for an import in progress
//! ```
//!
//! Every file and directory name under the root comes from a sha256 digest the store
//! computed or checked, never from a string in an archive. A layer directory is keyed by
//! its diffID rather than its chain ID: with overlayfs whiteouts stored in the layer itself
//! an unpacked layer does not depend on what is below it, so images sharing a layer share the
//! directory. Removing a reference garbage-collects the blobs and layers no image uses.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::archive::{self, HashingReader, SourceImage, Staged};
use crate::error::{Error, Result, errno};
use crate::reference::{Reference, is_sha256_digest, is_sha256_hex};
use crate::unpack::{self, Limits};

const INDEX_FILE: &str = "images.json";

/// An image store rooted at one directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: Limits,
}

/// What the store knows about one image, as kept in `images.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: the digest of its config.
    pub id: String,
    /// The OCI manifest's digest (absent for docker-archive imports, which have none).
    pub manifest: Option<String>,
    /// Digests of the layer blobs as imported (compressed or not), bottom first.
    pub layers: Vec<String>,
    /// The layers' diffIDs, bottom first; each names a directory under `layers/`.
    pub diff_ids: Vec<String>,
    /// Bytes of blobs the image holds (config, manifest, layers).
    pub size: u64,
    /// The config's `created` timestamp.
    pub created: Option<String>,
}

/// One line of `berth image ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The normalized reference, or the image ID for an image imported without a name.
    pub reference: String,
    /// The config digest.
    pub id: String,
    pub size: u64,
    pub created: Option<String>,
}

/// An image ready to run: see [`ImageStore::resolve`].
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub record: ImageRecord,
    pub config: ImageConfiguration,
    /// The unpacked layers, top first (overlayfs's `lowerdir=` order).
    pub layer_dirs: Vec<PathBuf>,
}

/// One image an import stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The normalized references now pointing at it (the image ID if it had no name).
    pub references: Vec<String>,
    pub record: ImageRecord,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

/// Deletes the staging directory however an import ends.
struct StagingDir(PathBuf);

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn io_at(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |source| Error::Io { context, source }
}

fn mkdir_private(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_at("creating", path))
}

fn hex_of(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| is_sha256_hex(h))
        .ok_or_else(|| Error::Unsupported(format!("digest {digest:?} (only sha256)")))
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in ["blobs/sha256", "layers", "tmp"] {
            mkdir_private(&root.join(dir))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            limits: Limits::default(),
        })
    }

    /// Replaces the per-layer unpack limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(hex_of(diff_id)?))
    }

    /// Takes the store's lock (released when the file is dropped), so that two `berth`
    /// processes never interleave an import and a garbage collection.
    fn lock(&self) -> Result<File> {
        let path = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at("opening", &path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(errno(format!("locking {}", path.display())))?;
        Ok(f)
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.root.join(INDEX_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Json {
                context: format!("parsing {}", path.display()),
                source: e,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_at("reading", &path)(e)),
        }
    }

    /// Writes the index to a temporary file, syncs it and renames it over the old one, so a
    /// crash leaves either the old or the new index, never a torn one.
    fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.root.join(INDEX_FILE);
        let tmp = self.root.join(format!("{INDEX_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| Error::Json {
            context: "encoding the image index".into(),
            source: e,
        })?;
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_at("creating", &tmp))?;
        f.write_all(&bytes).map_err(io_at("writing", &tmp))?;
        f.sync_all().map_err(io_at("syncing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_at("replacing", &path))?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io_at("syncing", &self.root))
    }

    /// Imports every image in the OCI-layout or docker-archive tarball at `path`.
    ///
    /// Either every image of the archive is stored or none is: on failure the blobs already
    /// moved into place are collected again before the error is returned.
    pub fn import(&self, path: &Path) -> Result<Vec<ImportedImage>> {
        let _lock = self.lock()?;
        let result = self.import_locked(path);
        if result.is_err() {
            let index = self.read_index()?;
            if let Err(e) = self.collect_garbage(&index) {
                tracing::warn!(error = %e, "cleaning up after a failed import");
            }
        }
        result
    }

    fn import_locked(&self, path: &Path) -> Result<Vec<ImportedImage>> {
        let staging = StagingDir(
            self.root
                .join("tmp")
                .join(format!("import-{}", std::process::id())),
        );
        let _ = fs::remove_dir_all(&staging.0);
        mkdir_private(&staging.0)?;
        let staged = archive::stage(path, &staging.0)?;
        let sources = staged.images()?;
        if sources.is_empty() {
            return Err(Error::Archive("the archive holds no images".into()));
        }
        // Names are checked before anything is stored.
        let mut names = Vec::new();
        for source in &sources {
            let refs = source
                .names
                .iter()
                .map(|n| Reference::parse(n).map(|r| r.to_string()))
                .collect::<Result<Vec<_>>>()?;
            names.push(refs);
        }
        let mut index = self.read_index()?;
        let mut imported = Vec::new();
        for (source, mut references) in sources.iter().zip(names) {
            let record = self.commit(&staged, source)?;
            if references.is_empty() {
                references.push(record.id.clone());
            }
            for r in &references {
                tracing::info!(reference = r, id = record.id, "imported image");
                index.images.insert(r.clone(), record.clone());
            }
            imported.push(ImportedImage { references, record });
        }
        self.write_index(&index)?;
        // A re-imported name may have left its old image unreferenced.
        self.collect_garbage(&index)?;
        Ok(imported)
    }

    /// Moves one image's blobs into place and unpacks its layers.
    fn commit(&self, staged: &Staged, source: &SourceImage) -> Result<ImageRecord> {
        let config_file = &staged.files[source.config];
        let config_bytes =
            fs::read(&config_file.path).map_err(io_at("reading", &config_file.path))?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::Json {
                context: format!("parsing image config {}", config_file.digest),
                source: e,
            })?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != source.layers.len() {
            return Err(Error::Archive(format!(
                "image config {} lists {} diff_ids for {} layers",
                config_file.digest,
                diff_ids.len(),
                source.layers.len()
            )));
        }
        let mut size = 0;
        let parts = std::iter::once(source.config)
            .chain(source.manifest)
            .chain(source.layers.iter().copied());
        for i in parts {
            let f = &staged.files[i];
            let dest = self.blob_path(&f.digest)?;
            // A rename within the store's filesystem. A blob already stored (by an earlier
            // image, or listed twice in this one) is left alone: same digest, same bytes.
            if !dest.exists() {
                fs::rename(&f.path, &dest).map_err(io_at("storing", &dest))?;
            }
            size += f.size;
        }
        let layers: Vec<String> = source
            .layers
            .iter()
            .map(|&i| staged.files[i].digest.clone())
            .collect();
        for (blob, diff_id) in layers.iter().zip(&diff_ids) {
            self.unpack(blob, diff_id)?;
        }
        Ok(ImageRecord {
            id: config_file.digest.clone(),
            manifest: source.manifest.map(|i| staged.files[i].digest.clone()),
            layers,
            diff_ids,
            size,
            created: config.created().clone(),
        })
    }

    /// Unpacks the layer blob `blob` into `layers/<diff_id>` unless it is there already,
    /// checking that the uncompressed tar hashes to `diff_id`.
    fn unpack(&self, blob: &str, diff_id: &str) -> Result<()> {
        let dest = self.layer_path(diff_id)?;
        if dest.is_dir() {
            return Ok(());
        }
        let tmp = self
            .root
            .join("layers")
            .join(format!(".tmp-{}", hex_of(diff_id)?));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(io_at("creating", &tmp))?;
        let guard = StagingDir(tmp.clone());
        let blob_path = self.blob_path(blob)?;
        let file = File::open(&blob_path).map_err(io_at("opening", &blob_path))?;
        let mut reader = HashingReader {
            inner: unpack::decompressed(file, blob)?,
            hasher: Sha256::new(),
            read: 0,
            // Content plus generous room for headers and padding: past this the stream is a
            // bomb, whatever its tar entries claim.
            limit: self
                .limits
                .max_layer_bytes
                .saturating_add(self.limits.max_layer_entries.saturating_mul(4096))
                .saturating_add(1 << 20),
        };
        let result = unpack::unpack_layer(&mut reader, &tmp, blob, self.limits).and_then(|_| {
            // The tar reader stops at the end-of-archive blocks; the diffID covers all bytes.
            io::copy(&mut reader, &mut io::sink()).map_err(|e| Error::Io {
                context: format!("reading layer {blob}"),
                source: e,
            })
        });
        if let Err(e) = result {
            if reader.read > reader.limit {
                return Err(Error::LimitExceeded {
                    layer: blob.to_string(),
                    what: "bytes (decompressed)",
                    limit: reader.limit,
                });
            }
            return Err(e);
        }
        let actual = format!("sha256:{}", archive::hex(&reader.hasher.finalize()));
        if actual != diff_id {
            return Err(Error::DigestMismatch {
                expected: diff_id.to_string(),
                actual,
            });
        }
        fs::rename(&tmp, &dest).map_err(io_at("storing", &dest))?;
        std::mem::forget(guard);
        Ok(())
    }

    /// Every stored image, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        Ok(self
            .read_index()?
            .images
            .into_iter()
            .map(|(reference, r)| ImageSummary {
                reference,
                id: r.id,
                size: r.size,
                created: r.created,
            })
            .collect())
    }

    /// The references `reference` selects: the normalized reference itself, or, for an image
    /// ID (`sha256:<hex>`), every reference to that image.
    fn select(index: &Index, reference: &str) -> Result<Vec<String>> {
        let found: Vec<String> = if is_sha256_digest(reference) {
            index
                .images
                .iter()
                .filter(|(_, r)| r.id == reference)
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            let normalized = Reference::parse(reference)?.to_string();
            index
                .images
                .contains_key(&normalized)
                .then_some(normalized)
                .into_iter()
                .collect()
        };
        if found.is_empty() {
            return Err(Error::NotFound(reference.to_string()));
        }
        Ok(found)
    }

    /// The record of the image `reference` (a pod's `image:` string, or an image ID) names.
    pub fn inspect(&self, reference: &str) -> Result<ImageRecord> {
        let index = self.read_index()?;
        let key = Self::select(&index, reference)?;
        key.first()
            .and_then(|k| index.images.get(k))
            .cloned()
            .ok_or_else(|| Error::NotFound(reference.to_string()))
    }

    /// Removes `reference` (or, for an image ID, every reference to it), then deletes the
    /// blobs and layers no remaining image uses. Returns the references removed.
    pub fn remove(&self, reference: &str) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let removed = Self::select(&index, reference)?;
        for r in &removed {
            index.images.remove(r);
        }
        self.write_index(&index)?;
        self.collect_garbage(&index)?;
        Ok(removed)
    }

    /// Deletes every blob and layer directory the index does not reference, and anything
    /// left in `tmp/` and `layers/.tmp-*` by an interrupted import. Caller holds the lock.
    fn collect_garbage(&self, index: &Index) -> Result<()> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for r in index.images.values() {
            blobs.insert(hex_of(&r.id)?.to_string());
            if let Some(m) = &r.manifest {
                blobs.insert(hex_of(m)?.to_string());
            }
            for l in &r.layers {
                blobs.insert(hex_of(l)?.to_string());
            }
            for d in &r.diff_ids {
                layers.insert(hex_of(d)?.to_string());
            }
        }
        let sweep = |dir: PathBuf, keep: &BTreeSet<String>| -> Result<()> {
            for entry in fs::read_dir(&dir).map_err(io_at("listing", &dir))? {
                let entry = entry.map_err(io_at("listing", &dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    continue;
                }
                let path = entry.path();
                tracing::debug!(path = %path.display(), "garbage-collecting");
                let is_dir = entry.file_type().map_err(io_at("stat", &path))?.is_dir();
                // remove_dir_all does not follow symlinks inside the layer.
                if is_dir {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                }
                .map_err(io_at("removing", &path))?;
            }
            Ok(())
        };
        sweep(self.root.join("blobs/sha256"), &blobs)?;
        sweep(self.root.join("layers"), &layers)?;
        sweep(self.root.join("tmp"), &BTreeSet::new())
    }

    /// Everything a container needs from the image `reference` names, from one read of the
    /// index: its record, its config, and its unpacked layer directories top first.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage> {
        let record = self.inspect(reference)?;
        let path = self.blob_path(&record.id)?;
        let bytes = fs::read(&path).map_err(io_at("reading", &path))?;
        let config = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            context: format!("parsing image config {}", record.id),
            source: e,
        })?;
        let layer_dirs = record
            .diff_ids
            .iter()
            .rev()
            .map(|d| self.layer_path(d))
            .collect::<Result<_>>()?;
        Ok(ResolvedImage {
            record,
            config,
            layer_dirs,
        })
    }

    /// The image config (Entrypoint, Cmd, Env, WorkingDir, User under `config()`), from
    /// which the node agent builds a container's command by Kubernetes' rules.
    pub fn image_config(&self, reference: &str) -> Result<ImageConfiguration> {
        Ok(self.resolve(reference)?.config)
    }

    /// The unpacked layer directories of the image, **top layer first** — the order of
    /// overlayfs's `lowerdir=` option, so the result can be joined with `:` as is.
    pub fn layer_dirs(&self, reference: &str) -> Result<Vec<PathBuf>> {
        Ok(self.resolve(reference)?.layer_dirs)
    }
}
