//! Builders for test archives: layers, OCI layouts and docker-archives, made with the `tar`
//! crate in the test itself.

#![allow(dead_code)] // Each test file uses a different subset.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const MTIME: u64 = 1_700_000_000;

/// One entry of a layer.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A regular file whose name bytes are written verbatim (bypassing `tar`'s own checks).
    RawFile(&'a [u8], &'a [u8]),
}

pub fn sha256(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256(bytes))
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn raw_name(h: &mut tar::Header, name: &[u8]) {
    let gnu = h.as_gnu_mut().expect("gnu header");
    gnu.name = [0; 100];
    gnu.name[..name.len()].copy_from_slice(name);
}

/// A layer tar (uncompressed).
pub fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(path, mode) => {
                let mut h = header(tar::EntryType::Directory, 0, *mode);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            E::File(path, data, mode) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, *mode);
                b.append_data(&mut h, path, *data).unwrap();
            }
            E::Symlink(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            E::Hardlink(path, target) => {
                let mut h = header(tar::EntryType::Link, 0, 0o644);
                b.append_link(&mut h, path, target).unwrap();
            }
            E::RawFile(name, data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
                raw_name(&mut h, name);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An image config with the given uncompressed layers' diffIDs.
pub fn config(uncompressed_layers: &[&[u8]], cmd: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = uncompressed_layers.iter().map(|l| digest(l)).collect();
    serde_json::to_vec(&json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Appends `data` at `path` to an outer archive.
pub fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
    b.append_data(&mut h, path, data).unwrap();
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(data), "size": data.len()})
}

/// An OCI layout tarball of one image. `layers` are blobs as stored (maybe gzipped);
/// `tamper` replaces the bytes of the blob at that index (0 = config, 1.. = layers) after the
/// digests were computed.
pub fn oci_layout(name: &str, config: &[u8], layers: &[Vec<u8>], tamper: Option<usize>) -> Vec<u8> {
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut md = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    md["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [md]})).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add(&mut b, "index.json", &index);
    add(
        &mut b,
        &format!("blobs/sha256/{}", sha256(&manifest)),
        &manifest,
    );
    let blobs = std::iter::once(config.to_vec()).chain(layers.iter().cloned());
    for (i, blob) in blobs.enumerate() {
        let mut data = blob.clone();
        if tamper == Some(i) {
            data.reverse();
        }
        add(&mut b, &format!("blobs/sha256/{}", sha256(&blob)), &data);
    }
    b.into_inner().unwrap()
}

/// A `docker save` tarball: `new_layout` is Docker ≥ 25 (`blobs/sha256/…`), else the old
/// `<id>/layer.tar` and `<hex>.json` names.
pub fn docker_archive(
    tags: &[&str],
    config: &[u8],
    layers: &[Vec<u8>],
    new_layout: bool,
) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let config_name = if new_layout {
        format!("blobs/sha256/{}", sha256(config))
    } else {
        format!("{}.json", sha256(config))
    };
    add(&mut b, &config_name, config);
    let mut layer_names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = if new_layout {
            format!("blobs/sha256/{}", sha256(l))
        } else {
            format!("{i:064x}/layer.tar")
        };
        add(&mut b, &name, l);
        layer_names.push(name);
    }
    let manifest = json!([{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.into_inner().unwrap()
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
