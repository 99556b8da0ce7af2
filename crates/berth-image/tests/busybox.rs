//! A real image: Debian's static busybox packaged as an OCI layout, imported, run, removed.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_image::ImageStore;
use common::*;

fn busybox() -> Vec<u8> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(bytes) = fs::read(p) {
            return bytes;
        }
    }
    panic!("busybox is required (apt-get install -y busybox-static)");
}

#[test]
fn busybox_image_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let bin = busybox();
    let rootfs = layer(&[
        E::Dir("bin", 0o755),
        E::File("bin/busybox", &bin, 0o755),
        E::Symlink("bin/sh", "busybox"),
        E::Dir("tmp", 0o1777),
    ]);
    let cfg = config(&[&rootfs], &["sh"]);
    let tarball = oci_layout("busybox:1.35", &cfg, &[gzip(&rootfs)], None);
    let imported = store
        .import(&write(tmp.path(), "busybox.tar", &tarball))
        .unwrap();
    assert_eq!(imported[0].references, ["docker.io/library/busybox:1.35"]);

    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reference, "docker.io/library/busybox:1.35");
    assert_eq!(list[0].id, digest(&cfg));
    assert!(
        list[0].size > bin.len() as u64 / 4,
        "size counts the layer blob"
    );

    let conf = store
        .image_config("docker.io/library/busybox:1.35")
        .unwrap();
    let c = conf.config().as_ref().unwrap();
    assert_eq!(c.cmd().as_deref(), Some(&["sh".to_string()][..]));
    assert_eq!(c.working_dir().as_deref(), Some("/"));
    assert!(c.env().as_ref().unwrap()[0].starts_with("PATH="));

    let dirs = store.layer_dirs("busybox:1.35").unwrap();
    assert_eq!(dirs.len(), 1);
    let exe = dirs[0].join("bin/busybox");
    assert_eq!(
        fs::metadata(&exe).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::metadata(dirs[0].join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    let out = Command::new(&exe).args(["echo", "hello"]).output().unwrap();
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(
        fs::read_link(dirs[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    assert_eq!(
        store.remove("busybox:1.35").unwrap(),
        ["docker.io/library/busybox:1.35"]
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(root.join("blobs/sha256")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert!(!dirs[0].exists());
}
