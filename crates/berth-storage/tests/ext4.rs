//! The local-ext4 volume on the real machine (root): mkfs, loop devices, mounts, ENOSPC at
//! the size, online and offline growth. Skipped (passing) when not root. Every test undoes
//! its mounts and loop devices in a drop guard, so a failing assertion leaves nothing behind.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_storage::host::{Host, Linux};
use berth_storage::{Grown, Storage, StorageError, VolumeName};

const NAME: &str = "pvc-0123abcd-4567-89ef-0a1b-23456789abcd";
const MIB: u64 = 1 << 20;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Unmounts the targets and unbinds the images' loop devices when dropped.
struct Cleanup {
    targets: Vec<PathBuf>,
    images: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for target in &self.targets {
            while rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).is_ok() {}
        }
        for image in &self.images {
            for _ in 0..100 {
                match Linux.loop_device(image) {
                    Ok(Some(device)) => {
                        let _ = Linux.detach(&device);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    _ => break,
                }
            }
        }
    }
}

fn setup() -> Option<(tempfile::TempDir, Storage, VolumeName, PathBuf, Cleanup)> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let storage = Storage::new(data.path());
    let name = VolumeName::parse(NAME).expect("valid");
    let target = data
        .path()
        .join("csi/berth.dev~local-ext4")
        .join(NAME)
        .join("globalmount");
    let cleanup = Cleanup {
        targets: vec![target.clone()],
        images: vec![storage.layout().ext4_image(&name)],
    };
    Some((data, storage, name, target, cleanup))
}

/// Writes 1 MiB chunks into `dir/name` until the file system is full; the bytes written and
/// the error that stopped it.
fn fill(dir: &Path, name: &str, limit: u64) -> (u64, std::io::Error) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("open");
    let chunk = vec![0x5a_u8; MIB as usize];
    let mut written = 0;
    loop {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            return (written, e);
        }
        written += MIB;
        assert!(
            written <= limit,
            "wrote {written} bytes, past the volume's size"
        );
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let stat = rustix::fs::statvfs(dir).expect("statvfs");
    stat.f_bavail * stat.f_frsize
}

#[test]
fn a_volume_is_capped_at_its_size_and_grows_online() {
    let Some((_data, storage, name, target, _cleanup)) = setup() else {
        return;
    };
    storage.create_ext4(&name, 32 * MIB).expect("create");
    storage.create_ext4(&name, 32 * MIB).expect("create again");
    storage.stage(NAME, &target).expect("stage");
    storage.stage(NAME, &target).expect("stage again");

    let mode = std::fs::metadata(&target)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o777, "non-root pods can write (H7)");

    let (written, error) = fill(&target, "a", 32 * MIB);
    assert_eq!(error.raw_os_error(), Some(libc_enospc()), "{error}");
    assert!(written >= 20 * MIB, "only {written} bytes fit");

    assert!(matches!(
        storage.delete_ext4(&name),
        Err(StorageError::Busy { .. })
    ));

    let before = free_bytes(&target);
    if can_resize_online() {
        assert_eq!(storage.grow(&name, 64 * MIB).expect("grow"), Grown::Done);
    } else {
        // ext4 resizes a mounted file system only for CAP_SYS_RESOURCE; without it the
        // resize waits for the next stage.
        assert_eq!(
            storage.grow(&name, 64 * MIB).expect("grow"),
            Grown::AtNextStage
        );
        storage.unstage(NAME, &target).expect("unstage");
        storage.stage(NAME, &target).expect("stage");
    }
    assert!(!storage.resize_pending(&name));
    let after = free_bytes(&target);
    assert!(after >= before + 28 * MIB, "free {before} -> {after}");
    let (more, error) = fill(&target, "b", 64 * MIB);
    assert_eq!(error.raw_os_error(), Some(libc_enospc()), "{error}");
    assert!(more >= 28 * MIB, "only {more} more bytes fit");

    storage.unstage(NAME, &target).expect("unstage");
    storage.unstage(NAME, &target).expect("unstage again");
    let image = storage.layout().ext4_image(&name);
    assert_eq!(
        Linux.loop_device(&image).expect("loop"),
        None,
        "the loop device is freed"
    );
    storage.delete_ext4(&name).expect("delete");
    assert!(!image.exists());
}

#[test]
fn a_volume_grown_while_unstaged_grows_at_next_stage_and_keeps_its_data() {
    let Some((_data, storage, name, target, _cleanup)) = setup() else {
        return;
    };
    storage.create_ext4(&name, 32 * MIB).expect("create");
    storage.stage(NAME, &target).expect("stage");
    std::fs::write(target.join("kept"), "data").expect("write");
    let small = free_bytes(&target);
    storage.unstage(NAME, &target).expect("unstage");

    assert_eq!(
        storage.grow(&name, 96 * MIB).expect("grow"),
        Grown::AtNextStage
    );
    assert!(storage.resize_pending(&name));
    storage.stage(NAME, &target).expect("stage");
    assert!(!storage.resize_pending(&name));
    assert!(free_bytes(&target) >= small + 50 * MIB);
    assert_eq!(
        std::fs::read_to_string(target.join("kept")).expect("read"),
        "data"
    );
    storage.unstage(NAME, &target).expect("unstage");
    storage.delete_ext4(&name).expect("delete");
}

#[test]
fn two_volumes_do_not_share_space() {
    let Some((data, storage, name, target, mut cleanup)) = setup() else {
        return;
    };
    let other = VolumeName::parse("pvc-ffffffff-4567-89ef-0a1b-23456789abcd").expect("valid");
    let other_target = data.path().join("other");
    cleanup.targets.push(other_target.clone());
    cleanup.images.push(storage.layout().ext4_image(&other));
    storage.create_ext4(&name, 32 * MIB).expect("create");
    storage.create_ext4(&other, 32 * MIB).expect("create");
    storage.stage(name.as_str(), &target).expect("stage");
    storage.stage(other.as_str(), &other_target).expect("stage");
    let (_, error) = fill(&target, "a", 32 * MIB);
    assert_eq!(error.raw_os_error(), Some(libc_enospc()));
    std::fs::write(other_target.join("neighbour"), vec![1u8; MIB as usize])
        .expect("the neighbour still writes");
    storage.unstage(name.as_str(), &target).expect("unstage");
    storage
        .unstage(other.as_str(), &other_target)
        .expect("unstage");
}

/// CAP_SYS_RESOURCE (bit 24) is in this process's effective set.
fn can_resize_online() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}
