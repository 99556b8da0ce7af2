//! The volumes on this machine: what each provisioner makes under `<data>/storage`, and the
//! node-side staging of local-ext4 volumes. [`Storage`] owns it all; every path comes from a
//! [`VolumeName`] through [`Layout`], every machine effect goes through a [`Host`].
//!
//! - local-path: a directory `<name>/` with mode 0777 (as k3s's local-path provisioner makes
//!   them, so non-root pods can write without fsGroup, which hostPath-style volumes ignore).
//! - local-ext4: a sparse image `<name>.img` of the requested size holding ext4 (root
//!   directory 0777 for the same reason), loop-mounted at a staging directory; the pod cannot
//!   write past its size (ENOSPC).
//!
//! Every operation is idempotent (doing it again after success, or after a crash halfway,
//! finishes the job and changes nothing more), refuses anything it did not make (a symlink
//! or a file where a volume directory belongs is left alone, never followed), and refuses to
//! delete what is in use. Operations on one volume are serialized by a per-volume lock; they
//! block, so async callers run them with `spawn_blocking`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::StorageError;
use crate::host::{Host, Linux, LoopDevice};
use crate::mountinfo;
use crate::names::{Layout, Provisioner, VolumeName};

/// Images are at least this big: ext4 with a journal needs room for it, and mkfs picks odd
/// layouts for tiny devices. The PV still reports the claim's request.
pub const MIN_IMAGE_BYTES: u64 = 16 << 20;

/// What [`Storage::grow`] got done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grown {
    /// The image and its file system have the new size (online, the volume being staged).
    Done,
    /// The image has the new size; its file system grows when the volume is next staged.
    AtNextStage,
}

/// The volumes under one data dir.
pub struct Storage {
    layout: Layout,
    host: Arc<dyn Host>,
    locks: Mutex<HashMap<VolumeName, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// The volumes under `data_dir`, on the real machine.
    pub fn new(data_dir: &Path) -> Storage {
        Storage::with_host(data_dir, Arc::new(Linux))
    }

    /// The volumes under `data_dir`, with machine effects through `host`.
    pub fn with_host(data_dir: &Path, host: Arc<dyn Host>) -> Storage {
        Storage {
            layout: Layout::new(data_dir),
            host,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs `f` holding `name`'s lock, so two operations on one volume never interleave.
    fn locked<T>(&self, name: &VolumeName, f: impl FnOnce() -> T) -> T {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Forget locks nobody holds, so the map does not grow with every volume ever seen.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(name.clone()).or_default().clone()
        };
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    /// Makes the backing storage of a volume of `provisioner` with `bytes` of capacity.
    pub fn create(
        &self,
        provisioner: Provisioner,
        name: &VolumeName,
        bytes: u64,
    ) -> Result<(), StorageError> {
        match provisioner {
            Provisioner::LocalPath => self.create_local_path(name).map(drop),
            Provisioner::LocalExt4 => self.create_ext4(name, bytes).map(drop),
        }
    }

    /// Removes the backing storage of a volume of `provisioner`, refusing while it is in use.
    pub fn delete(&self, provisioner: Provisioner, name: &VolumeName) -> Result<(), StorageError> {
        match provisioner {
            Provisioner::LocalPath => self.delete_local_path(name),
            Provisioner::LocalExt4 => self.delete_ext4(name),
        }
    }

    // ---- local-path ----

    /// The volume's directory, made (mode 0777) if missing.
    pub fn create_local_path(&self, name: &VolumeName) -> Result<PathBuf, StorageError> {
        self.locked(name, || {
            let root = self.layout.local_path_root();
            ensure_dir(self.layout.root(), 0o711)?;
            ensure_dir(&root, 0o711)?;
            let dir = self.layout.local_path(name);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(refused(&dir, "not a directory")),
                Err(e) if e.kind() == ErrorKind::NotFound => match fs::create_dir(&dir) {
                    Ok(()) => sync_dir(&root)?,
                    Err(e) => return Err(StorageError::io("creating", &dir)(e)),
                },
                Err(e) => return Err(StorageError::io("inspecting", &dir)(e)),
            }
            // Set explicitly: mkdir's mode is cut by the umask.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                .map_err(StorageError::io("setting the mode of", &dir))?;
            Ok(dir)
        })
    }

    /// Removes the volume's directory and everything in it (never following a symlink),
    /// unless it is mounted somewhere or something is mounted inside it.
    pub fn delete_local_path(&self, name: &VolumeName) -> Result<(), StorageError> {
        self.locked(name, || {
            let dir = self.layout.local_path(name);
            let meta = match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => meta,
                Ok(_) => return Err(refused(&dir, "not a directory")),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StorageError::io("inspecting", &dir)(e)),
            };
            let resolved = dir
                .canonicalize()
                .map_err(StorageError::io("resolving", &dir))?;
            let device = (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()));
            if let Some(why) = mountinfo::uses_of(&self.host.mounts()?, &resolved, device) {
                return Err(StorageError::Busy {
                    volume: name.to_string(),
                    why,
                });
            }
            // remove_dir_all removes symlinks inside rather than following them.
            fs::remove_dir_all(&dir).map_err(StorageError::io("removing", &dir))?;
            sync_dir(&self.layout.local_path_root())
        })
    }

    // ---- local-ext4 ----

    /// The volume's image: a sparse file of at least `bytes` holding a fresh ext4 whose root
    /// directory is 0777. An image already there of at least that size is kept as it is.
    pub fn create_ext4(&self, name: &VolumeName, bytes: u64) -> Result<PathBuf, StorageError> {
        self.locked(name, || {
            let root = self.layout.ext4_root();
            ensure_dir(self.layout.root(), 0o711)?;
            ensure_dir(&root, 0o700)?;
            let image = self.layout.ext4_image(name);
            let size = image_size(bytes);
            match fs::symlink_metadata(&image) {
                Ok(meta) if meta.is_file() && meta.len() >= size => return Ok(image),
                // A smaller one can only be a claim whose request grew before its volume was
                // made; make it its size (the file system follows at stage).
                Ok(meta) if meta.is_file() => {
                    self.grow_locked(name, bytes)?;
                    return Ok(image);
                }
                Ok(_) => return Err(refused(&image, "not a regular file")),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("inspecting", &image)(e)),
            }
            // Made under another name and renamed into place: a crash halfway leaves only a
            // partial image, which the next attempt replaces.
            let partial = self.layout.ext4_image_partial(name);
            remove_file_if_present(&partial)?;
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)
                .map_err(StorageError::io("creating", &partial))?;
            file.set_len(size)
                .map_err(StorageError::io("sizing", &partial))?;
            drop(file);
            // -m 0: no blocks reserved for root, so every pod gets the capacity it claimed.
            // lazy_*_init=0: initialize everything now rather than in a kernel thread writing
            // behind the pod's back after the first mount.
            self.tool(
                "mkfs.ext4",
                &[
                    "-F".as_ref(),
                    "-q".as_ref(),
                    "-m".as_ref(),
                    "0".as_ref(),
                    "-E".as_ref(),
                    "lazy_itable_init=0,lazy_journal_init=0".as_ref(),
                    partial.as_os_str(),
                ],
                0,
            )?;
            // The file system's root directory writable by any user (H7), as local-path's is.
            self.tool(
                "debugfs",
                &[
                    "-w".as_ref(),
                    "-R".as_ref(),
                    "sif / mode 040777".as_ref(),
                    partial.as_os_str(),
                ],
                0,
            )?;
            fs::rename(&partial, &image).map_err(StorageError::io("renaming", &partial))?;
            sync_dir(&root)?;
            Ok(image)
        })
    }

    /// Removes the volume's image, refusing while it is bound to a loop device.
    pub fn delete_ext4(&self, name: &VolumeName) -> Result<(), StorageError> {
        self.locked(name, || {
            let image = self.layout.ext4_image(name);
            match fs::symlink_metadata(&image) {
                Ok(meta) if meta.is_file() => {
                    if let Some(device) = self.host.loop_device(&image)? {
                        return Err(StorageError::Busy {
                            volume: name.to_string(),
                            why: format!("attached to {}", device.path.display()),
                        });
                    }
                    fs::remove_file(&image).map_err(StorageError::io("removing", &image))?;
                }
                Ok(_) => return Err(refused(&image, "not a regular file")),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("inspecting", &image)(e)),
            }
            remove_file_if_present(&self.layout.ext4_image_partial(name))?;
            remove_file_if_present(&self.layout.ext4_resize_pending(name))?;
            sync_dir(&self.layout.ext4_root())
        })
    }

    /// Mounts the local-ext4 volume `handle` (its PV's `volumeHandle`, the volume name) at
    /// `target`, made if missing: a loop device for its image, ext4 mounted there. Already
    /// staged there: nothing to do. A file-system resize left for this moment is done first.
    pub fn stage(&self, handle: &str, target: &Path) -> Result<(), StorageError> {
        let name = VolumeName::parse(handle)?;
        self.locked(&name, || {
            let image = self.existing_image(&name)?;
            fs::create_dir_all(target).map_err(StorageError::io("creating", target))?;
            let target = target
                .canonicalize()
                .map_err(StorageError::io("resolving", target))?;
            let mounts = self.host.mounts()?;
            let device = self.host.loop_device(&image)?;
            if let Some(mounted) = mountinfo::mounted_at(&mounts, &target) {
                return if device.as_ref().is_some_and(|d| d.device == mounted.device) {
                    Ok(())
                } else {
                    Err(refused(&target, "something else is mounted there"))
                };
            }
            if let Some(device) = device {
                if let Some(elsewhere) = mounts.iter().find(|m| m.device == device.device) {
                    // Mounting it twice would be safe, but a volume staged twice means two
                    // owners; the node must unstage the other first.
                    return Err(StorageError::Busy {
                        volume: name.to_string(),
                        why: format!("mounted at {}", elsewhere.mount_point.display()),
                    });
                }
                // Bound but not mounted: a leftover (a crash between bind and mount of a
                // kernel without autoclear on close). A second binding of one image would
                // corrupt it, so drop this one first.
                self.host.detach(&device)?;
            }
            if self.layout.ext4_resize_pending(&name).exists() {
                self.resize_offline(&name, &image)?;
            }
            self.host.attach_and_mount(&image, &target)
        })
    }

    /// Unmounts the local-ext4 volume `handle` from `target` and frees its loop device.
    /// Not staged: nothing to do.
    pub fn unstage(&self, handle: &str, target: &Path) -> Result<(), StorageError> {
        let name = VolumeName::parse(handle)?;
        self.locked(&name, || {
            let image = self.layout.ext4_image(&name);
            match target.canonicalize() {
                Ok(target) => {
                    if mountinfo::mounted_at(&self.host.mounts()?, &target).is_some() {
                        self.host.unmount(&target)?;
                    }
                    // kubelet removes the staging directory too; a non-empty one (something
                    // written while unmounted) stays for someone to look at.
                    let _ = fs::remove_dir(&target);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("resolving", target)(e)),
            }
            self.release_device(&name, &image)
        })
    }

    /// After the last unmount autoclear frees the loop device; make sure it did (and free one
    /// nobody mounts), waiting briefly, since the kernel may finish the release just after
    /// the unmount returns.
    fn release_device(&self, name: &VolumeName, image: &Path) -> Result<(), StorageError> {
        for attempt in 0..50 {
            let Some(device) = self.host.loop_device(image)? else {
                return Ok(());
            };
            if let Some(mount) = self
                .host
                .mounts()?
                .iter()
                .find(|m| m.device == device.device)
            {
                return Err(StorageError::Busy {
                    volume: name.to_string(),
                    why: format!("still mounted at {}", mount.mount_point.display()),
                });
            }
            if attempt > 0 {
                self.host.detach(&device)?;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(StorageError::Busy {
            volume: name.to_string(),
            why: "its loop device is not released".into(),
        })
    }

    /// Grows the local-ext4 volume's image to at least `bytes`; if it is staged, its file
    /// system too (online), else at its next stage. Never shrinks.
    pub fn grow(&self, name: &VolumeName, bytes: u64) -> Result<Grown, StorageError> {
        self.locked(name, || self.grow_locked(name, bytes))
    }

    fn grow_locked(&self, name: &VolumeName, bytes: u64) -> Result<Grown, StorageError> {
        let image = self.existing_image(name)?;
        let pending = self.layout.ext4_resize_pending(name);
        let size = image_size(bytes);
        let len = fs::metadata(&image)
            .map_err(StorageError::io("inspecting", &image))?
            .len();
        if len < size {
            // The marker first: a crash after the image grew still leaves the file system
            // to be grown at the next stage.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pending)
                .and_then(|f| f.sync_all())
                .map_err(StorageError::io("creating", &pending))?;
            sync_dir(&self.layout.ext4_root())?;
            let file = OpenOptions::new()
                .write(true)
                .open(&image)
                .map_err(StorageError::io("opening", &image))?;
            file.set_len(size)
                .map_err(StorageError::io("growing", &image))?;
            file.sync_all()
                .map_err(StorageError::io("syncing", &image))?;
        }
        if !pending.exists() {
            return Ok(Grown::Done);
        }
        let Some(device) = self.staged_device(&image)? else {
            return Ok(Grown::AtNextStage);
        };
        self.host.refresh_capacity(&device)?;
        // Online resize needs CAP_SYS_RESOURCE and a clean file system; without them the
        // offline resize at next stage still gets there, so this is not a failure.
        if let Err(error) = self.tool("resize2fs", &[device.path.as_os_str()], 0) {
            tracing::warn!(volume = %name, %error, "online resize failed; the file system grows at next stage");
            return Ok(Grown::AtNextStage);
        }
        fs::remove_file(&pending).map_err(StorageError::io("removing", &pending))?;
        Ok(Grown::Done)
    }

    /// The image has been grown but its file system not yet (it will be at next stage).
    pub fn resize_pending(&self, name: &VolumeName) -> bool {
        self.layout.ext4_resize_pending(name).exists()
    }

    /// The loop device of `image` if it is mounted somewhere.
    fn staged_device(&self, image: &Path) -> Result<Option<LoopDevice>, StorageError> {
        let Some(device) = self.host.loop_device(image)? else {
            return Ok(None);
        };
        let mounted = self
            .host
            .mounts()?
            .iter()
            .any(|m| m.device == device.device);
        Ok(mounted.then_some(device))
    }

    fn resize_offline(&self, name: &VolumeName, image: &Path) -> Result<(), StorageError> {
        // resize2fs insists on a freshly checked file system; e2fsck exits 1 or 2 when it
        // fixed something, which is still fine to resize.
        self.tool(
            "e2fsck",
            &["-f".as_ref(), "-y".as_ref(), image.as_os_str()],
            2,
        )?;
        self.tool("resize2fs", &[image.as_os_str()], 0)?;
        let pending = self.layout.ext4_resize_pending(name);
        fs::remove_file(&pending).map_err(StorageError::io("removing", &pending))
    }

    fn existing_image(&self, name: &VolumeName) -> Result<PathBuf, StorageError> {
        let image = self.layout.ext4_image(name);
        match fs::symlink_metadata(&image) {
            Ok(meta) if meta.is_file() => Ok(image),
            Ok(_) => Err(refused(&image, "not a regular file")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(StorageError::Missing(name.to_string()))
            }
            Err(e) => Err(StorageError::io("inspecting", &image)(e)),
        }
    }

    /// Runs an e2fsprogs tool; an exit code above `ok_up_to` is a failure.
    fn tool(&self, program: &str, args: &[&OsStr], ok_up_to: i32) -> Result<(), StorageError> {
        let outcome = self.host.run(program, args)?;
        if (0..=ok_up_to).contains(&outcome.code) {
            Ok(())
        } else {
            Err(StorageError::Tool {
                program: program.into(),
                status: format!("exit code {}", outcome.code),
                output: outcome.output,
            })
        }
    }
}

/// The image size for a request: at least [`MIN_IMAGE_BYTES`], whole 4 KiB blocks.
fn image_size(bytes: u64) -> u64 {
    bytes
        .max(MIN_IMAGE_BYTES)
        .div_ceil(4096)
        .saturating_mul(4096)
}

fn refused(path: &Path, why: &str) -> StorageError {
    StorageError::Refused {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// `dir` is a real directory (made with `mode` if missing), never a symlink that could send
/// volumes elsewhere.
fn ensure_dir(dir: &Path, mode: u32) -> Result<(), StorageError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(refused(dir, "not a directory")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).map_err(StorageError::io("creating", parent))?;
            }
            match fs::create_dir(dir) {
                Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                    .map_err(StorageError::io("setting the mode of", dir)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => ensure_dir(dir, mode),
                Err(e) => Err(StorageError::io("creating", dir)(e)),
            }
        }
        Err(e) => Err(StorageError::io("inspecting", dir)(e)),
    }
}

fn remove_file_if_present(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(StorageError::io("removing", path)(e)),
        _ => Ok(()),
    }
}

/// Makes a directory's entries (a new volume, a removal) durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Recording;

    const NAME: &str = "pvc-0123abcd-4567-89ef-0a1b-23456789abcd";

    fn setup() -> (tempfile::TempDir, Arc<Recording>, Storage, VolumeName) {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Arc::new(Recording::default());
        let storage = Storage::with_host(dir.path(), host.clone());
        (dir, host, storage, VolumeName::parse(NAME).expect("valid"))
    }

    fn device_of(path: &Path) -> (u32, u32) {
        let dev = fs::metadata(path).expect("stat").dev();
        (rustix::fs::major(dev), rustix::fs::minor(dev))
    }

    #[test]
    fn local_path_is_made_0777_once_and_removed_once() {
        let (data, _, storage, name) = setup();
        let dir = storage.create_local_path(&name).expect("create");
        assert_eq!(dir, data.path().join("storage/local-path").join(NAME));
        let mode = fs::metadata(&dir).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o777);
        fs::write(dir.join("data"), "kept").expect("write");
        storage.create_local_path(&name).expect("again");
        assert_eq!(
            fs::read_to_string(dir.join("data")).ok().as_deref(),
            Some("kept")
        );

        storage.delete_local_path(&name).expect("delete");
        assert!(!dir.exists());
        storage
            .delete_local_path(&name)
            .expect("deleting again is fine");
    }

    #[test]
    fn local_path_refuses_symlinks_and_files_and_never_follows_them() {
        let (data, _, storage, name) = setup();
        let outside = data.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("precious"), "x").expect("write");
        let root = data.path().join("storage/local-path");
        fs::create_dir_all(&root).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join(NAME)).expect("symlink");
        assert!(matches!(
            storage.create_local_path(&name),
            Err(StorageError::Refused { .. })
        ));
        assert!(matches!(
            storage.delete_local_path(&name),
            Err(StorageError::Refused { .. })
        ));
        assert!(outside.join("precious").exists());

        // A symlink inside the volume is removed, not followed.
        fs::remove_file(root.join(NAME)).expect("unlink");
        let dir = storage.create_local_path(&name).expect("create");
        std::os::unix::fs::symlink(&outside, dir.join("link")).expect("symlink");
        storage.delete_local_path(&name).expect("delete");
        assert!(outside.join("precious").exists());

        fs::write(root.join(NAME), "file").expect("write");
        assert!(matches!(
            storage.delete_local_path(&name),
            Err(StorageError::Refused { .. })
        ));
    }

    #[test]
    fn local_path_in_use_is_kept() {
        let (_data, host, storage, name) = setup();
        let dir = storage.create_local_path(&name).expect("create");
        let resolved = dir.canonicalize().expect("resolve");
        let device = device_of(&dir);
        // The file system holding the data dir, then a pod's bind mount of the volume.
        host.mount_bind(Path::new("/"), device, Path::new("/"));
        host.mount_bind(&resolved, device, Path::new("/pods/p/volumes/v"));
        assert!(matches!(
            storage.delete_local_path(&name),
            Err(StorageError::Busy { .. })
        ));
        assert!(dir.exists());
    }

    #[test]
    fn ext4_create_makes_a_sparse_image_with_mkfs_once() {
        let (data, host, storage, name) = setup();
        let image = storage.create_ext4(&name, 64 << 20).expect("create");
        assert_eq!(
            image,
            data.path()
                .join("storage/local-ext4")
                .join(format!("{NAME}.img"))
        );
        let meta = fs::metadata(&image).expect("stat");
        assert_eq!(meta.len(), 64 << 20);
        assert!(meta.blocks() * 512 < 1 << 20, "sparse");
        let calls = host.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(
            calls[0].starts_with("mkfs.ext4 -F -q -m 0 -E lazy_itable_init=0,lazy_journal_init=0 ")
        );
        assert!(
            calls[0].ends_with(".img.partial"),
            "made under a temporary name"
        );
        assert!(calls[1].starts_with("debugfs -w -R sif / mode 040777 "));

        storage.create_ext4(&name, 64 << 20).expect("again");
        assert_eq!(host.calls().len(), 2, "nothing more to do");
    }

    #[test]
    fn ext4_create_failure_leaves_no_image_and_small_requests_round_up() {
        let (data, host, storage, name) = setup();
        host.fail("mkfs.ext4", 1);
        assert!(matches!(
            storage.create_ext4(&name, 1 << 20),
            Err(StorageError::Tool { .. })
        ));
        assert!(
            !data
                .path()
                .join("storage/local-ext4")
                .join(format!("{NAME}.img"))
                .exists()
        );
        let partial = storage.layout().ext4_image_partial(&name);
        assert_eq!(
            fs::metadata(partial).expect("partial").len(),
            MIN_IMAGE_BYTES
        );
    }

    #[test]
    fn ext4_stage_unstage_are_idempotent_and_delete_waits_for_unstage() {
        let (data, host, storage, name) = setup();
        let image = storage.create_ext4(&name, 32 << 20).expect("create");
        let target = data
            .path()
            .join("csi/local-ext4.berth.dev")
            .join(NAME)
            .join("globalmount");
        storage.stage(NAME, &target).expect("stage");
        storage.stage(NAME, &target).expect("stage again");
        let target = target.canonicalize().expect("made");
        let attaches: Vec<_> = host
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("attach"))
            .collect();
        assert_eq!(
            attaches,
            [format!(
                "attach+mount {} {}",
                image.display(),
                target.display()
            )]
        );

        assert!(matches!(
            storage.delete_ext4(&name),
            Err(StorageError::Busy { .. })
        ));
        assert!(matches!(
            storage.stage(NAME, &data.path().join("elsewhere")),
            Err(StorageError::Busy { .. })
        ));

        storage.unstage(NAME, &target).expect("unstage");
        storage.unstage(NAME, &target).expect("unstage again");
        assert_eq!(
            host.calls()
                .iter()
                .filter(|c| c.starts_with("unmount"))
                .count(),
            1
        );
        assert!(!target.exists(), "the empty staging dir is removed");
        storage.delete_ext4(&name).expect("delete");
        assert!(!image.exists());
        storage.delete_ext4(&name).expect("delete again");
    }

    #[test]
    fn stage_rejects_bad_handles_and_missing_images() {
        let (data, _, storage, _) = setup();
        let target = data.path().join("t");
        assert!(matches!(
            storage.stage("../../etc", &target),
            Err(StorageError::InvalidName(_))
        ));
        assert!(matches!(
            storage.stage(NAME, &target),
            Err(StorageError::Missing(_))
        ));
        assert!(matches!(
            storage.unstage("pvc-x", &target),
            Err(StorageError::InvalidName(_))
        ));
    }

    #[test]
    fn a_leftover_binding_is_dropped_before_staging() {
        let (data, host, storage, name) = setup();
        let image = storage.create_ext4(&name, 32 << 20).expect("create");
        host.bind_unmounted(&image);
        storage.stage(NAME, &data.path().join("t")).expect("stage");
        let calls = host.calls();
        let detach = calls.iter().position(|c| c.starts_with("detach"));
        let attach = calls.iter().position(|c| c.starts_with("attach"));
        assert!(detach.is_some() && detach < attach, "{calls:?}");
    }

    #[test]
    fn grow_online_when_staged() {
        let (data, host, storage, name) = setup();
        let image = storage.create_ext4(&name, 32 << 20).expect("create");
        storage.stage(NAME, &data.path().join("t")).expect("stage");
        assert_eq!(storage.grow(&name, 64 << 20).expect("grow"), Grown::Done);
        assert_eq!(fs::metadata(&image).expect("stat").len(), 64 << 20);
        let calls = host.calls();
        let tail: Vec<&str> = calls[calls.len() - 2..]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(tail, ["refresh /dev/loop0", "resize2fs /dev/loop0"]);
        assert!(!storage.resize_pending(&name));
        // Asking again changes nothing.
        assert_eq!(storage.grow(&name, 64 << 20).expect("again"), Grown::Done);
        assert_eq!(host.calls().len(), calls.len());
    }

    #[test]
    fn grow_offline_finishes_at_next_stage() {
        let (data, host, storage, name) = setup();
        let image = storage.create_ext4(&name, 32 << 20).expect("create");
        assert_eq!(
            storage.grow(&name, 48 << 20).expect("grow"),
            Grown::AtNextStage
        );
        assert!(storage.resize_pending(&name));
        assert_eq!(
            storage.grow(&name, 48 << 20).expect("again"),
            Grown::AtNextStage
        );
        storage.stage(NAME, &data.path().join("t")).expect("stage");
        let calls = host.calls();
        let image = image.display();
        let tail: Vec<&str> = calls[calls.len() - 3..]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(tail[0], format!("e2fsck -f -y {image}"));
        assert_eq!(tail[1], format!("resize2fs {image}"));
        assert!(tail[2].starts_with("attach+mount"));
        assert!(!storage.resize_pending(&name));
    }

    #[test]
    fn a_failed_online_resize_is_left_for_next_stage() {
        let (data, host, storage, name) = setup();
        storage.create_ext4(&name, 32 << 20).expect("create");
        storage.stage(NAME, &data.path().join("t")).expect("stage");
        host.fail("resize2fs", 1);
        assert_eq!(
            storage.grow(&name, 64 << 20).expect("grow"),
            Grown::AtNextStage
        );
        assert!(storage.resize_pending(&name));
    }

    #[test]
    fn grow_never_shrinks() {
        let (_data, _, storage, name) = setup();
        let image = storage.create_ext4(&name, 64 << 20).expect("create");
        assert_eq!(storage.grow(&name, 32 << 20).expect("grow"), Grown::Done);
        assert_eq!(fs::metadata(&image).expect("stat").len(), 64 << 20);
    }
}
