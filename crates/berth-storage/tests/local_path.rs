//! The local-path volume against real mounts (root): a volume bind-mounted into a pod is
//! refused deletion until the mount is gone. Skipped (passing) when not root.

use berth_storage::{Storage, StorageError, VolumeName};
use rustix::mount::UnmountFlags;

/// Unmounts the bind mount when dropped, so a failing assertion leaves nothing mounted.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, UnmountFlags::DETACH);
    }
}

#[test]
fn a_bind_mounted_volume_is_kept_until_unmounted() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let storage = Storage::new(data.path());
    let name = VolumeName::parse("pvc-0123abcd-4567-89ef-0a1b-23456789abcd").expect("valid");
    let dir = storage.create_local_path(&name).expect("create");
    std::fs::write(dir.join("data"), "x").expect("write");

    let pod = data.path().join("pod-volume");
    std::fs::create_dir(&pod).expect("mkdir");
    rustix::mount::mount_bind(&dir, &pod).expect("bind");
    let guard = Unmount(pod.clone());
    assert_eq!(
        std::fs::read_to_string(pod.join("data")).expect("read"),
        "x"
    );
    assert!(matches!(
        storage.delete_local_path(&name),
        Err(StorageError::Busy { .. })
    ));
    assert!(dir.join("data").exists(), "nothing removed while in use");

    rustix::mount::unmount(&pod, UnmountFlags::empty()).expect("unmount");
    drop(guard);
    storage.delete_local_path(&name).expect("delete");
    assert!(!dir.exists());
}
