//! The less common shapes of the two archive formats: docker's symlinked layers, images with
//! no name, nested OCI indexes, and re-importing a name.

mod common;

use std::fs;

use berth_image::ImageStore;
use common::*;
use serde_json::json;

#[test]
fn docker_archive_symlinked_layer_and_no_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let l = layer(&[E::File("f", b"shared", 0o644)]);
    let cfg = config(&[&l, &l], &["f"]);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, &format!("{}.json", sha256(&cfg)), &cfg);
    add(&mut b, "aaa/layer.tar", &l);
    // Older docker writes a repeated layer as a symlink to the first copy.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "bbb/layer.tar", "../aaa/layer.tar")
        .unwrap();
    let manifest = json!([{"Config": format!("{}.json", sha256(&cfg)), "RepoTags": null,
                          "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let path = write(tmp.path(), "x.tar", &b.into_inner().unwrap());

    let imported = store.import(&path).unwrap();
    // No RepoTags: the image is known by its ID.
    let id = digest(&cfg);
    assert_eq!(imported[0].references, std::slice::from_ref(&id));
    assert_eq!(store.list().unwrap()[0].reference, id);
    let dirs = store.layer_dirs(&id).unwrap();
    assert_eq!(dirs.len(), 2);
    assert_eq!(dirs[0], dirs[1]);
    assert_eq!(fs::read(dirs[0].join("f")).unwrap(), b"shared");
    store.remove(&id).unwrap();
    assert_eq!(fs::read_dir(root.join("layers")).unwrap().count(), 0);
}

#[test]
fn oci_nested_index_picks_this_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let l = layer(&[E::File("arch", b"ours", 0o644)]);
    let cfg = config(&[&l], &["x"]);
    let desc = |mt: &str, data: &[u8]| json!({"mediaType": mt, "digest": digest(data), "size": data.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &cfg),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", &l)],
    }))
    .unwrap();
    let ours = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut theirs = desc("application/vnd.oci.image.manifest.v1+json", b"not stored");
    theirs["platform"] =
        json!({"os": "linux", "architecture": if ours == "s390x" { "amd64" } else { "s390x" }});
    let mut mine = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
    mine["platform"] = json!({"os": "linux", "architecture": ours});
    let nested =
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [theirs, mine]})).unwrap();
    let mut top = desc("application/vnd.oci.image.index.v1+json", &nested);
    top["annotations"] = json!({
        "io.containerd.image.name": "registry.example/multi:2",
        "org.opencontainers.image.ref.name": "2",
    });
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add(&mut b, "index.json", &index);
    for blob in [&nested, &manifest, &cfg, &l] {
        add(&mut b, &format!("blobs/sha256/{}", sha256(blob)), blob);
    }
    let path = write(tmp.path(), "multi.tar", &b.into_inner().unwrap());
    let imported = store.import(&path).unwrap();
    assert_eq!(imported[0].references, ["registry.example/multi:2"]);
    assert_eq!(imported[0].record.manifest, Some(digest(&manifest)));
    let dirs = store.layer_dirs("registry.example/multi:2").unwrap();
    assert_eq!(fs::read(dirs[0].join("arch")).unwrap(), b"ours");
}

#[test]
fn reimporting_a_name_replaces_and_collects_the_old_image() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let v1 = layer(&[E::File("v", b"1", 0o644)]);
    let v2 = layer(&[E::File("v", b"2", 0o644)]);
    for l in [&v1, &v2] {
        let cfg = config(&[l], &["x"]);
        let tarball = docker_archive(&["app:latest"], &cfg, std::slice::from_ref(l), false);
        store
            .import(&write(tmp.path(), "app.tar", &tarball))
            .unwrap();
    }
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, digest(&config(&[&v2], &["x"])));
    assert!(!root.join("layers").join(sha256(&v1)).exists());
    assert!(!root.join("blobs/sha256").join(sha256(&v1)).exists());
    assert!(root.join("layers").join(sha256(&v2)).exists());
    // `app` is how a pod would write it.
    let dirs = store.layer_dirs("app").unwrap();
    assert_eq!(fs::read(dirs[0].join("v")).unwrap(), b"2");
}
