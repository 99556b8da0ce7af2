//! Importing OCI layouts and docker-archives built in the test, and the layer store they make.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use berth_image::{Error, ImageStore};
use common::*;

#[test]
fn oci_layout_with_whiteouts_and_opaque_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let lower = layer(&[
        E::Dir("etc", 0o755),
        E::File("etc/a", b"A", 0o640),
        E::File("etc/b", b"B", 0o4755),
        E::Dir("d", 0o750),
        E::File("d/old", b"old", 0o644),
        E::Symlink("etc/link", "a"),
        E::Hardlink("etc/hard", "etc/b"),
    ]);
    let upper = layer(&[
        E::Dir("etc", 0o755),
        E::File("etc/.wh.a", b"", 0o644),
        E::Dir("d", 0o750),
        E::File("d/.wh..wh..opq", b"", 0o644),
        E::File("d/new", b"new", 0o600),
    ]);
    let cfg = config(&[&lower, &upper], &["sh"]);
    // The lower layer plain, the upper gzipped: compression is detected per blob.
    let tarball = oci_layout(
        "example.com/test:1",
        &cfg,
        &[lower.clone(), gzip(&upper)],
        None,
    );
    let path = write(tmp.path(), "image.tar", &tarball);

    let result = store.import(&path);
    if !is_root() {
        assert!(matches!(result, Err(Error::NeedsRoot { .. })), "{result:?}");
        return;
    }
    let imported = result.unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].references, ["example.com/test:1"]);
    assert_eq!(imported[0].record.id, digest(&cfg));

    let dirs = store.layer_dirs("example.com/test:1").unwrap();
    let root = tmp.path().join("store/layers");
    assert_eq!(
        dirs,
        [root.join(sha256(&upper)), root.join(sha256(&lower))],
        "top first"
    );
    let (top, bottom) = (&dirs[0], &dirs[1]);

    // Lower layer: content, modes (setuid kept), mtimes, symlink, hard link.
    assert_eq!(fs::read(bottom.join("etc/a")).unwrap(), b"A");
    let b = fs::metadata(bottom.join("etc/b")).unwrap();
    assert_eq!(b.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(b.mtime(), MTIME as i64);
    assert_eq!(
        fs::metadata(bottom.join("d")).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        fs::metadata(bottom.join("d")).unwrap().mtime(),
        MTIME as i64
    );
    assert_eq!(
        fs::read_link(bottom.join("etc/link")).unwrap().to_str(),
        Some("a")
    );
    assert_eq!(
        fs::metadata(bottom.join("etc/hard")).unwrap().ino(),
        b.ino()
    );
    assert_eq!(b.nlink(), 2);

    // Upper layer: `.wh.a` is a 0:0 char device `a`; `d` is opaque.
    let wh = fs::symlink_metadata(top.join("etc/a")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!top.join("etc/.wh.a").exists());
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(top.join("d"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert!(!top.join("d/.wh..wh..opq").exists());
    assert_eq!(fs::read(top.join("d/new")).unwrap(), b"new");
}

#[test]
fn docker_archive_old_and_new_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let l1 = layer(&[
        E::Dir("app", 0o755),
        E::File("app/run", b"#!/bin/sh\n", 0o755),
    ]);
    let l2 = layer(&[E::File("app/data", b"data", 0o644)]);
    let cfg = config(&[&l1, &l2], &["/app/run"]);

    let old = docker_archive(
        &["example.com/app:v1"],
        &cfg,
        &[l1.clone(), l2.clone()],
        false,
    );
    let imported = store.import(&write(tmp.path(), "old.tar", &old)).unwrap();
    assert_eq!(imported[0].references, ["example.com/app:v1"]);
    assert_eq!(imported[0].record.manifest, None);

    // Docker 25: the same image, gzipped layers under blobs/sha256, two tags (one short).
    let new = docker_archive(
        &["app:v2", "example.com/app:v3"],
        &cfg,
        &[gzip(&l1), gzip(&l2)],
        true,
    );
    let imported = store.import(&write(tmp.path(), "new.tar", &new)).unwrap();
    assert_eq!(
        imported[0].references,
        ["docker.io/library/app:v2", "example.com/app:v3"]
    );

    let list = store.list().unwrap();
    let refs: Vec<&str> = list.iter().map(|s| s.reference.as_str()).collect();
    assert_eq!(
        refs,
        [
            "docker.io/library/app:v2",
            "example.com/app:v1",
            "example.com/app:v3"
        ]
    );
    assert!(list.iter().all(|s| s.id == digest(&cfg)));
    assert_eq!(list[0].created.as_deref(), Some("2024-01-02T03:04:05Z"));

    // The pod's short `image:` finds the normalized reference.
    let conf = store.image_config("app:v2").unwrap();
    let cmd = conf.config().as_ref().unwrap().cmd().clone();
    assert_eq!(cmd, Some(vec!["/app/run".to_string()]));
    let dirs = store.layer_dirs("app:v2").unwrap();
    assert_eq!(fs::read(dirs[0].join("app/data")).unwrap(), b"data");
    assert_eq!(fs::read(dirs[1].join("app/run")).unwrap(), b"#!/bin/sh\n");

    // Both layouts share the unpacked layers (same diffIDs); blobs differ (plain vs gzip).
    assert_eq!(
        fs::read_dir(tmp.path().join("store/layers"))
            .unwrap()
            .count(),
        2
    );
    store.remove("example.com/app:v1").unwrap();
    // The old import's plain layer blobs are now unused; the gzipped ones stay.
    let blobs = tmp.path().join("store/blobs/sha256");
    assert!(!blobs.join(sha256(&l1)).exists());
    assert!(blobs.join(sha256(&gzip(&l1))).exists());
    assert!(matches!(
        store.image_config("example.com/app:v1"),
        Err(Error::NotFound(_))
    ));
    // Removing by image ID removes every reference to it, and GC empties the store.
    let removed = store.remove(&digest(&cfg)).unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(fs::read_dir(&blobs).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(tmp.path().join("store/layers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn store_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let l = layer(&[E::File("f", b"x", 0o644)]);
    let cfg = config(&[&l], &["f"]);
    let tarball = docker_archive(&["x"], &cfg, &[l], false);
    store.import(&write(tmp.path(), "x.tar", &tarball)).unwrap();
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("blobs/sha256"), 0o700);
    assert_eq!(mode("layers"), 0o700);
    assert_eq!(mode("images.json"), 0o600);
    assert_eq!(mode(&format!("blobs/sha256/{}", sha256(&cfg))), 0o600);
    // A reopened store sees the same images.
    let again = ImageStore::open(&root).unwrap();
    assert_eq!(again.list().unwrap(), store.list().unwrap());
}
