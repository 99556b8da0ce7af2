//! Archives that try to escape, lie about digests, or explode: each is refused with a clear
//! error, and nothing is left behind.

mod common;

use std::fs;
use std::path::Path;

use berth_image::{Error, ImageStore, Limits};
use common::*;

fn import_layer(store: &ImageStore, dir: &Path, l: Vec<u8>) -> Result<(), Error> {
    let cfg = config(&[&l], &["x"]);
    let tarball = oci_layout("hostile", &cfg, &[l], None);
    store
        .import(&write(dir, "hostile.tar", &tarball))
        .map(|_| ())
}

/// The store holds no images, no layers, no blobs and no staging after a refused import.
fn assert_clean(root: &Path) {
    for d in ["layers", "tmp", "blobs/sha256"] {
        let left: Vec<_> = fs::read_dir(root.join(d)).unwrap().collect();
        assert!(left.is_empty(), "{d} not clean: {left:?}");
    }
    assert!(ImageStore::open(root).unwrap().list().unwrap().is_empty());
}

#[test]
fn dotdot_entry_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let err = import_layer(
        &store,
        tmp.path(),
        layer(&[E::RawFile(b"../../escaped", b"x")]),
    )
    .unwrap_err();
    assert!(matches!(&err, Error::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains(".."), "{err}");
    assert!(!tmp.path().join("escaped").exists());
    assert_clean(&root);
}

#[test]
fn absolute_entry_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let target = tmp.path().join("abs-target");
    let err = import_layer(
        &store,
        tmp.path(),
        layer(&[E::RawFile(target.to_str().unwrap().as_bytes(), b"x")]),
    )
    .unwrap_err();
    assert!(matches!(&err, Error::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains("absolute"), "{err}");
    assert!(!target.exists());
    assert_clean(&root);
}

#[test]
fn symlink_parent_escape_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    for target in [outside.to_str().unwrap(), "../../../../../../../../tmp"] {
        let l = layer(&[
            E::Symlink("evil", target),
            E::File("evil/x", b"pwned", 0o644),
        ]);
        let err = import_layer(&store, tmp.path(), l).unwrap_err();
        assert!(matches!(&err, Error::UnsafeEntry { .. }), "{err}");
        assert!(err.to_string().contains("symlink"), "{err}");
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/tmp/x").exists() || fs::read("/tmp/x").unwrap() != b"pwned");
    assert_clean(&root);
}

#[test]
fn hardlink_outside_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.as_gnu_mut().unwrap().linkname[..11].copy_from_slice(b"/etc/passwd");
    b.append_data(&mut h, "passwd", &[][..]).unwrap();
    let err = import_layer(&store, tmp.path(), b.into_inner().unwrap()).unwrap_err();
    assert!(matches!(&err, Error::UnsafeEntry { .. }), "{err}");
}

#[test]
fn digest_mismatch_names_the_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let l = layer(&[E::File("f", b"content", 0o644)]);
    let cfg = config(&[&l], &["f"]);
    let tarball = oci_layout("x", &cfg, std::slice::from_ref(&l), Some(1));
    let err = store
        .import(&write(tmp.path(), "bad.tar", &tarball))
        .unwrap_err();
    assert!(matches!(&err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&sha256(&l)), "{err}");
    assert_clean(&root);

    // A layer whose content is not the diffID the config promises.
    let other = layer(&[E::File("f", b"other", 0o644)]);
    let cfg = config(&[&other], &["f"]);
    let tarball = docker_archive(&["x"], &cfg, &[l], false);
    let err = store
        .import(&write(tmp.path(), "bad2.tar", &tarball))
        .unwrap_err();
    assert!(matches!(&err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&sha256(&other)), "{err}");
    assert_clean(&root);
}

#[test]
fn gzip_bomb_is_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let limits = Limits {
        max_layer_bytes: 1 << 20,
        max_layer_entries: 100,
    };
    let store = ImageStore::open(&root).unwrap().with_limits(limits);
    let zeros = vec![0u8; 32 << 20];
    let bomb = gzip(&layer(&[E::File("zeros", &zeros, 0o644)]));
    // A bomb: the archive is smaller than the cap its content blows through 32 times over
    // (how much smaller depends on flate2's backend).
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    let err = import_layer(&store, tmp.path(), bomb).unwrap_err();
    assert!(
        matches!(&err, Error::LimitExceeded { what: "bytes", .. }),
        "{err}"
    );
    assert_clean(&root);

    // Many empty entries hit the entry cap.
    let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    let entries: Vec<E<'_>> = names.iter().map(|n| E::File(n, b"", 0o644)).collect();
    let err = import_layer(&store, tmp.path(), layer(&entries)).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::LimitExceeded {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
    assert_clean(&root);
}

#[test]
fn outer_archive_escape_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../index.json");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let tarball = b.into_inner().unwrap();
    let err = store
        .import(&write(tmp.path(), "bad.tar", &tarball))
        .unwrap_err();
    assert!(matches!(&err, Error::UnsafeEntry { .. }), "{err}");
}

#[test]
fn compressed_outer_archive_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let l = layer(&[E::File("f", b"x", 0o644)]);
    let cfg = config(&[&l], &["f"]);
    let tarball = gzip(&docker_archive(&["x"], &cfg, &[l], false));
    let err = store
        .import(&write(tmp.path(), "x.tar.gz", &tarball))
        .unwrap_err();
    assert!(err.to_string().contains("decompress it first"), "{err}");
}

#[test]
fn not_an_image_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let tarball = layer(&[E::File("hello", b"x", 0o644)]);
    let err = store
        .import(&write(tmp.path(), "x.tar", &tarball))
        .unwrap_err();
    assert!(matches!(&err, Error::Archive(_)), "{err}");
}
