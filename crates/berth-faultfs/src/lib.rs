//! A FUSE file system over a directory that behaves like a disk under a page cache, with
//! switchable faults: berth's durability tests put a data dir on it (reliability cases A4, B3,
//! B4 in `/work/shared/reliability-cases.md`).
//!
//! Writes and truncations land in an in-memory cache and reach the backing directory only when
//! the file is fsync'd, as with a kernel page cache over a disk. [`FaultFs::power_cut`] throws the
//! cache away: whatever was written but not synced is lost, which is what LazyFS does. The disk
//! under the cache can be switched, as dm-flakey switches a device table ([`Device`]):
//! `ErrorWrites` fails every sync, and the data that sync should have written is lost: it stays
//! readable from the cache, but once the device works again a later fsync reports success
//! without writing it (Linux marks pages clean after a failed writeback). `DropWrites` reports
//! every sync as done and writes no data.
//!
//! Names and attributes (create, mkdir, rename, unlink, chmod, chown) go straight to the backing
//! directory, and fail with EIO under `ErrorWrites`: only file contents and sizes are cached. That
//! is kinder than a real disk, where a new name is durable only once its directory is synced
//! (and a lying device would drop it too); the faults tested here are about data. The model is
//! also all-or-nothing: a power cut loses every unsynced page and no synced one, never a torn or
//! reordered subset. A file unlinked while open cannot be read through its open descriptor any
//! more.
//!
//! Only root can mount it (the pure-Rust mount path opens `/dev/fuse` itself).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::OFlags;

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    SessionACL, TimeOrNow, WriteFlags,
};

/// The cache's unit: a page, as the kernel's.
const PAGE: u64 = 4096;

/// Attributes are never cached by the kernel: every stat sees the cache's current size.
const TTL: Duration = Duration::ZERO;

/// What the disk under the cache does with writes, as dm-flakey's tables do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// Syncs write the cached data to the backing directory.
    Healthy,
    /// Every sync fails with EIO and the data it should have written is lost; changes to names
    /// and attributes fail with EIO too.
    ErrorWrites,
    /// Every sync reports success and writes no data (a disk that lies, then loses power).
    DropWrites,
}

/// What happened to cached data, so a test can show that a fault really struck.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes written to the backing directory by syncs.
    pub synced_bytes: u64,
    /// Bytes of pages written by a program and then lost (by a failed or dropped sync, a power
    /// cut, or the file's removal before a sync), counted by the page up to the file's size.
    pub lost_bytes: u64,
    /// Syncs answered with EIO.
    pub failed_syncs: u64,
    /// Syncs answered with success that wrote nothing.
    pub dropped_syncs: u64,
}

/// A cached page.
struct Page {
    data: Box<[u8]>,
    /// Written since the last sync.
    dirty: bool,
}

/// A file's cached contents: everything written since its last successful sync, and pages a
/// failed or dropped sync lost, which stay readable until the power goes (Linux keeps pages whose
/// writeback failed in its cache, marked clean).
struct Cached {
    /// Whole pages by index; bytes past `size` are zero.
    pages: BTreeMap<u64, Page>,
    /// The file's size as programs see it.
    size: u64,
    /// Bytes of the backing file at or past this offset are stale: the file was truncated below
    /// them since the last sync.
    valid: u64,
    /// The size changed since the last sync.
    resized: bool,
    /// Some pages hold data the disk never got, so the cache cannot be let go after a sync.
    diverged: bool,
}

impl Cached {
    fn dirty_bytes(&self) -> u64 {
        self.pages
            .iter()
            .filter(|(_, page)| page.dirty)
            .map(|(index, _)| PAGE.min(self.size.saturating_sub(index * PAGE)))
            .sum()
    }

    fn is_dirty(&self) -> bool {
        self.resized || self.pages.values().any(|page| page.dirty)
    }

    /// After a sync that failed or was dropped: no page is dirty any more, and the disk lacks
    /// what they held. A pending size change stays pending (a later sync applies it), so bytes
    /// a truncation removed never come back.
    fn forget_writes(&mut self) {
        for page in self.pages.values_mut() {
            page.dirty = false;
        }
        self.diverged = true;
    }
}

struct Inner {
    root: PathBuf,
    /// Inode number to path relative to `root` (the root itself is the empty path).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_inode: u64,
    cache: HashMap<u64, Cached>,
    device: Device,
    /// After a power cut every operation fails: the "machine" is off until the next mount.
    cut: bool,
    counters: Counters,
}

/// A mounted fault file system. Dropping it unmounts it as [`FaultFs::unmount`] does.
pub struct FaultFs {
    state: Arc<Mutex<Inner>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    /// The FUSE connection's number in fusectl (the mount's minor device number).
    connection: u32,
}

impl FaultFs {
    /// Mounts a fault file system on `mountpoint` that keeps its data in `backing`, with a
    /// healthy device and an empty cache.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<FaultFs> {
        let mut paths = HashMap::new();
        let mut inodes = HashMap::new();
        paths.insert(INodeNo::ROOT.0, PathBuf::new());
        inodes.insert(PathBuf::new(), INodeNo::ROOT.0);
        let state = Arc::new(Mutex::new(Inner {
            root: backing.canonicalize()?,
            paths,
            inodes,
            next_inode: INodeNo::ROOT.0 + 1,
            cache: HashMap::new(),
            device: Device::Healthy,
            cut: false,
            counters: Counters::default(),
        }));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("berth-faultfs".into()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        config.acl = SessionACL::All;
        let session = fuser::spawn_mount(Fs(state.clone()), mountpoint, &config)?;
        let mountpoint = mountpoint.canonicalize()?;
        let connection = rustix::fs::minor(fs::metadata(&mountpoint)?.dev());
        Ok(FaultFs {
            state,
            session: Some(session),
            mountpoint,
            connection,
        })
    }

    /// Switches the disk under the cache.
    pub fn set_device(&self, device: Device) {
        lock(&self.state).device = device;
    }

    pub fn counters(&self) -> Counters {
        lock(&self.state).counters
    }

    /// Bytes written and not yet synced.
    pub fn dirty_bytes(&self) -> u64 {
        lock(&self.state)
            .cache
            .values()
            .map(Cached::dirty_bytes)
            .sum()
    }

    /// Power fails: the cache is lost and the file system is gone. What survives is what the
    /// backing directory holds; mount again to "boot". Kill the programs using it first.
    pub fn power_cut(mut self) -> Counters {
        let counters = {
            let mut inner = lock(&self.state);
            inner.cut = true;
            let lost: u64 = inner.cache.values().map(Cached::dirty_bytes).sum();
            inner.cache.clear();
            inner.counters.lost_bytes += lost;
            inner.counters
        };
        self.detach();
        counters
    }

    /// A clean unmount: the cache is written back first (through the current device), as
    /// unmounting syncs a file system.
    pub fn unmount(mut self) -> io::Result<Counters> {
        let result = lock(&self.state).sync_then_stop();
        self.detach();
        result.map(|()| lock(&self.state).counters)
    }

    /// Ends the mount even while programs hold files on it (they get ENOTCONN from then on):
    /// the connection is aborted, the mount detached, and the session thread joined.
    fn detach(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let aborted = abort_connection(self.connection).is_ok();
        // Fails only if the mount is already gone.
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
        if aborted {
            // The session thread reads ENODEV from an aborted connection and ends.
            let _ = session.join();
        } else {
            // Without the abort a program holding a file keeps the connection alive and a join
            // could wait for ever: the thread ends with the last such file.
            drop(session);
        }
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = lock(&self.state).sync_then_stop();
            self.detach();
        }
    }
}

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// fusectl's file system magic (`FUSE_CTL_SUPER_MAGIC`).
const FUSECTL_MAGIC: u64 = 0x6573_5543;

/// Aborts a FUSE connection through fusectl (mounting fusectl if nobody has).
fn abort_connection(connection: u32) -> io::Result<()> {
    let mounted = rustix::fs::statfs(FUSECTL).is_ok_and(|s| s.f_type as u64 == FUSECTL_MAGIC);
    if !mounted {
        rustix::mount::mount(
            "fusectl",
            FUSECTL,
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None::<&std::ffi::CStr>,
        )?;
    }
    fs::write(
        Path::new(FUSECTL)
            .join(connection.to_string())
            .join("abort"),
        "1",
    )
}

fn lock(state: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves the cache as consistent as any crash would.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn errno(error: io::Error) -> Errno {
    Errno::from(error)
}

/// Reads as much of `buf` as the file has at `offset`; the rest stays as it was (zero).
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Page `index` as the backing file has it, with bytes at or past `valid` zeroed.
fn disk_page(file: Option<&File>, index: u64, valid: u64) -> io::Result<Box<[u8]>> {
    let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
    let start = index * PAGE;
    if let Some(file) = file
        && start < valid
    {
        let len = PAGE.min(valid - start) as usize;
        read_up_to(file, &mut page[..len], start)?;
    }
    Ok(page)
}

fn system_time(seconds: i64, nanos: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nanos.clamp(0, 999_999_999) as u64);
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64) + nanos
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(seconds.unsigned_abs()))
            .map_or(UNIX_EPOCH, |t| t + nanos)
    }
}

/// New files belong to whoever made them, as on any file system (the daemon runs as root).
fn owned_by(path: &Path, req: &Request) -> Result<(), Errno> {
    std::os::unix::fs::lchown(path, Some(req.uid()), Some(req.gid())).map_err(errno)
}

fn kind(file_type: fs::FileType) -> FileType {
    FileType::from_std(file_type).unwrap_or(FileType::RegularFile)
}

impl Inner {
    fn path(&self, inode: INodeNo) -> Result<PathBuf, Errno> {
        self.paths
            .get(&inode.0)
            .map(|relative| self.root.join(relative))
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        let parent = self.paths.get(&parent.0).ok_or(Errno::ENOENT)?;
        Ok(parent.join(name))
    }

    fn inode_of(&mut self, relative: &Path) -> u64 {
        if let Some(inode) = self.inodes.get(relative) {
            return *inode;
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(relative.to_path_buf(), inode);
        self.paths.insert(inode, relative.to_path_buf());
        inode
    }

    fn forget_path(&mut self, relative: &Path) {
        if let Some(inode) = self.inodes.remove(relative) {
            self.paths.remove(&inode);
            if let Some(cached) = self.cache.remove(&inode) {
                self.counters.lost_bytes += cached.dirty_bytes();
            }
        }
    }

    fn attr(&self, inode: u64, meta: &fs::Metadata) -> FileAttr {
        let size = self
            .cache
            .get(&inode)
            .map(|cached| cached.size)
            .unwrap_or(meta.len());
        FileAttr {
            ino: INodeNo(inode),
            size,
            blocks: size.div_ceil(512),
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: system_time(meta.mtime(), meta.mtime_nsec()),
            ctime: system_time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind(meta.file_type()),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: PAGE as u32,
            flags: 0,
        }
    }

    fn attr_of(&mut self, relative: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.root.join(relative)).map_err(errno)?;
        let inode = self.inode_of(relative);
        Ok(self.attr(inode, &meta))
    }

    fn live(&self) -> Result<(), Errno> {
        if self.cut { Err(Errno::EIO) } else { Ok(()) }
    }

    /// Changes to names and attributes are refused by a failing device.
    fn writable(&self) -> Result<(), Errno> {
        self.live()?;
        if self.device == Device::ErrorWrites {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn cached_mut(&mut self, inode: u64) -> Result<&mut Cached, Errno> {
        if !self.cache.contains_key(&inode) {
            let path = self.path(INodeNo(inode))?;
            let size = fs::metadata(&path).map_err(errno)?.len();
            self.cache.insert(
                inode,
                Cached {
                    pages: BTreeMap::new(),
                    size,
                    valid: size,
                    resized: false,
                    diverged: false,
                },
            );
        }
        self.cache.get_mut(&inode).ok_or(Errno::EIO)
    }

    fn read(&mut self, inode: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.live()?;
        let path = self.path(INodeNo(inode))?;
        let file = File::open(&path).map_err(errno)?;
        let Some(cached) = self.cache.get(&inode) else {
            let mut buf = vec![0u8; size as usize];
            let n = read_up_to(&file, &mut buf, offset).map_err(errno)?;
            buf.truncate(n);
            return Ok(buf);
        };
        let end = cached.size.min(offset.saturating_add(u64::from(size)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let len = (PAGE - at % PAGE).min(end - at) as usize;
            match cached.pages.get(&index) {
                Some(page) => out.extend_from_slice(&page.data[within..within + len]),
                None => {
                    let data = disk_page(Some(&file), index, cached.valid).map_err(errno)?;
                    out.extend_from_slice(&data[within..within + len]);
                }
            }
            at += len as u64;
        }
        Ok(out)
    }

    /// Page `index` of `inode`, cached (loaded from the backing file if it was not).
    fn page_mut(&mut self, inode: u64, index: u64) -> Result<&mut Page, Errno> {
        let path = self.path(INodeNo(inode))?;
        let cached = self.cached_mut(inode)?;
        if !cached.pages.contains_key(&index) {
            let file = File::open(&path).ok();
            let data = disk_page(file.as_ref(), index, cached.valid).map_err(errno)?;
            cached.pages.insert(index, Page { data, dirty: false });
        }
        cached.pages.get_mut(&index).ok_or(Errno::EIO)
    }

    fn write(&mut self, inode: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        self.live()?;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let len = (PAGE - at % PAGE).min(end - at) as usize;
            let page = self.page_mut(inode, index)?;
            let from = (at - offset) as usize;
            page.data[within..within + len].copy_from_slice(&data[from..from + len]);
            page.dirty = true;
            at += len as u64;
        }
        let cached = self.cached_mut(inode)?;
        if end > cached.size {
            cached.size = end;
            cached.resized = true;
        }
        Ok(())
    }

    fn truncate(&mut self, inode: u64, size: u64) -> Result<(), Errno> {
        self.live()?;
        let cached = self.cached_mut(inode)?;
        if size == cached.size {
            return Ok(());
        }
        if size < cached.size {
            if !size.is_multiple_of(PAGE) {
                let page = self.page_mut(inode, size / PAGE)?;
                page.data[(size % PAGE) as usize..].fill(0);
                page.dirty = true;
            }
            let cached = self.cached_mut(inode)?;
            cached.pages.retain(|index, _| index * PAGE < size);
            cached.valid = cached.valid.min(size);
        }
        let cached = self.cached_mut(inode)?;
        cached.size = size;
        cached.resized = true;
        Ok(())
    }

    /// fsync: the file's dirty pages go to the device, which may fail or drop them.
    fn sync(&mut self, inode: u64, datasync: bool) -> Result<(), Errno> {
        self.live()?;
        let device = self.device;
        let path = self.path(INodeNo(inode));
        let Some(cached) = self.cache.get_mut(&inode).filter(|c| c.is_dirty()) else {
            // Even with nothing to write a sync flushes the device, which a failing one refuses.
            if device == Device::ErrorWrites {
                self.counters.failed_syncs += 1;
                return Err(Errno::EIO);
            }
            return Ok(());
        };
        let bytes = cached.dirty_bytes();
        let written = match device {
            Device::Healthy => {
                path.and_then(|path| write_back(&path, cached, datasync).map_err(errno))
            }
            Device::ErrorWrites => Err(Errno::EIO),
            Device::DropWrites => Ok(()),
        };
        match (device, written) {
            (Device::Healthy, Ok(())) => {
                for page in cached.pages.values_mut() {
                    page.dirty = false;
                }
                if cached.resized {
                    // write_back cut the disk's stale bytes off and set the size.
                    cached.valid = cached.size;
                    cached.resized = false;
                }
                if !cached.diverged {
                    // The disk has it all: reads can go there again.
                    self.cache.remove(&inode);
                }
                self.counters.synced_bytes += bytes;
                Ok(())
            }
            (Device::DropWrites, Ok(())) => {
                cached.forget_writes();
                self.counters.lost_bytes += bytes;
                self.counters.dropped_syncs += 1;
                Ok(())
            }
            (_, result) => {
                cached.forget_writes();
                self.counters.lost_bytes += bytes;
                self.counters.failed_syncs += 1;
                result.and(Err(Errno::EIO))
            }
        }
    }

    /// A clean unmount's last act: write the cache back, then refuse everything.
    fn sync_then_stop(&mut self) -> io::Result<()> {
        let result = self.sync_all();
        self.cut = true;
        result
    }

    fn sync_all(&mut self) -> io::Result<()> {
        if self.cut {
            return Ok(());
        }
        let inodes: Vec<u64> = self.cache.keys().copied().collect();
        let mut result = Ok(());
        for inode in inodes {
            if let Err(e) = self.sync(inode, false) {
                result = Err(io::Error::from_raw_os_error(e.code()));
            }
        }
        result
    }
}

/// Writes a file's dirty pages and size to the backing file and syncs it.
fn write_back(path: &Path, cached: &Cached, datasync: bool) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    if cached.resized && cached.valid < file.metadata()?.len() {
        file.set_len(cached.valid)?;
    }
    for (index, page) in cached.pages.iter().filter(|(_, page)| page.dirty) {
        let start = index * PAGE;
        let len = PAGE.min(cached.size.saturating_sub(start)) as usize;
        file.write_all_at(&page.data[..len], start)?;
    }
    if cached.resized {
        file.set_len(cached.size)?;
    }
    if datasync {
        file.sync_data()
    } else {
        file.sync_all()
    }
}

/// The FUSE side: every operation takes the one lock (the session runs on one thread anyway).
struct Fs(Arc<Mutex<Inner>>);

impl Fs {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.0)
    }

    /// unlink and rmdir: `remove` the name on the backing directory and forget its inode.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        remove: fn(&Path) -> io::Result<()>,
        reply: ReplyEmpty,
    ) {
        let mut inner = self.inner();
        let result = (|| {
            inner.writable()?;
            let relative = inner.child(parent, name)?;
            remove(&inner.root.join(&relative)).map_err(errno)?;
            inner.forget_path(&relative);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl fuser::Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut inner = self.inner();
        let result = inner
            .live()
            .and_then(|()| inner.child(parent, name))
            .and_then(|relative| inner.attr_of(&relative));
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, inode: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let inner = self.inner();
        let result = inner.live().and_then(|()| {
            let meta = fs::symlink_metadata(inner.path(inode)?).map_err(errno)?;
            Ok(inner.attr(inode.0, &meta))
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        inode: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut inner = self.inner();
        let result = (|| {
            inner.live()?;
            let path = inner.path(inode)?;
            if mode.is_some() || uid.is_some() || gid.is_some() {
                inner.writable()?;
            }
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
            }
            if let Some(size) = size {
                inner.truncate(inode.0, size)?;
            }
            let meta = fs::symlink_metadata(&path).map_err(errno)?;
            Ok(inner.attr(inode.0, &meta))
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, inode: INodeNo, reply: ReplyData) {
        let inner = self.inner();
        let result = inner
            .live()
            .and_then(|()| fs::read_link(inner.path(inode)?).map_err(errno));
        match result {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut inner = self.inner();
        let result = (|| {
            inner.writable()?;
            let relative = inner.child(parent, name)?;
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(inner.root.join(&relative))
                .map_err(errno)?;
            owned_by(&inner.root.join(&relative), req)?;
            inner.attr_of(&relative)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |path| fs::remove_file(path), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |path| fs::remove_dir(path), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut inner = self.inner();
        let result = (|| {
            inner.writable()?;
            let relative = inner.child(parent, link_name)?;
            std::os::unix::fs::symlink(target, inner.root.join(&relative)).map_err(errno)?;
            owned_by(&inner.root.join(&relative), req)?;
            inner.attr_of(&relative)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut inner = self.inner();
        let result = (|| {
            inner.writable()?;
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = inner.child(parent, name)?;
            let to = inner.child(new_parent, new_name)?;
            fs::rename(inner.root.join(&from), inner.root.join(&to)).map_err(errno)?;
            // The replaced name's file is gone; the moved one keeps its inode (and its cache),
            // and so does everything under it if it is a directory.
            inner.forget_path(&to);
            let moved: Vec<(PathBuf, u64)> = inner
                .inodes
                .iter()
                .filter(|(path, _)| path.starts_with(&from))
                .map(|(path, inode)| (path.clone(), *inode))
                .collect();
            for (old, inode) in moved {
                let suffix = old.strip_prefix(&from).map_err(|_| Errno::EIO)?;
                // `join` of an empty path would add a trailing slash.
                let new = if suffix.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(suffix)
                };
                inner.inodes.remove(&old);
                inner.inodes.insert(new.clone(), inode);
                inner.paths.insert(inode, new);
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, inode: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut inner = self.inner();
        let result = inner.live().and_then(|()| inner.path(inode)).and_then(|_| {
            // The kernel sends O_TRUNC as a setattr unless atomic_o_trunc is negotiated (it is
            // not); honour it here too in case it ever is.
            if flags.0 & OFlags::TRUNC.bits() as i32 != 0 {
                inner.truncate(inode.0, 0)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut inner = self.inner();
        let result = (|| {
            inner.writable()?;
            let relative = inner.child(parent, name)?;
            let mut options = OpenOptions::new();
            options.write(true).mode(mode & !umask & 0o7777);
            if flags & OFlags::EXCL.bits() as i32 != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            options.open(inner.root.join(&relative)).map_err(errno)?;
            owned_by(&inner.root.join(&relative), req)?;
            let attr = inner.attr_of(&relative)?;
            if flags & OFlags::TRUNC.bits() as i32 != 0 {
                inner.truncate(attr.ino.0, 0)?;
            }
            inner.attr_of(&relative)
        })();
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.inner().read(inode.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.inner().write(inode.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _inode: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) does not sync.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.inner().sync(inode.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut inner = self.inner();
        let result = (|| {
            inner.live()?;
            let relative = inner.paths.get(&inode.0).cloned().ok_or(Errno::ENOENT)?;
            let parent = relative
                .parent()
                .map(|parent| inner.inode_of(parent))
                .unwrap_or(INodeNo::ROOT.0);
            let mut entries = vec![
                (inode.0, FileType::Directory, ".".into()),
                (parent, FileType::Directory, "..".into()),
            ];
            let mut children: Vec<(std::ffi::OsString, FileType)> =
                fs::read_dir(inner.root.join(&relative))
                    .map_err(errno)?
                    .filter_map(Result::ok)
                    .map(|entry| {
                        let file_type =
                            entry.file_type().map(kind).unwrap_or(FileType::RegularFile);
                        (entry.file_name(), file_type)
                    })
                    .collect();
            children.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, file_type) in children {
                let child = inner.inode_of(&relative.join(&name));
                entries.push((child, file_type, name));
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (child, file_type, name)) in
                    entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(child), (i + 1) as u64, file_type, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _inode: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names already are on the backing directory; only a failing device refuses the flush.
        match self.inner().writable() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _inode: INodeNo, reply: ReplyStatfs) {
        let root = {
            let inner = self.inner();
            if let Err(e) = inner.live() {
                return reply.error(e);
            }
            inner.root.clone()
        };
        match rustix::fs::statvfs(&root) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }
}
