//! `berth image import | ls | rm`: the real binary on a temporary data dir, with archives built
//! by berth-image's own test builders.

#[path = "../../berth-image/tests/common/mod.rs"]
mod fixtures;

use std::process::Command;

use fixtures::E;

fn berth(data_dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("image")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run berth image");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn import_list_and_remove_images() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let layer = fixtures::layer(&[
        E::Dir("bin", 0o755),
        E::File("bin/hello", b"#!/bin/sh\necho hi\n", 0o755),
    ]);
    let config = fixtures::config(&[&layer], &["/bin/hello"]);
    let archive = fixtures::oci_layout(
        "example.com/hello:1.0",
        &config,
        &[fixtures::gzip(&layer)],
        None,
    );
    let file = fixtures::write(tmp.path(), "hello.tar", &archive);

    let (code, out, err) = berth(&data, &["import", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{err}");
    let id = fixtures::sha256(&config);
    assert!(out.contains("imported example.com/hello:1.0"), "{out}");
    assert!(out.contains(&id[..12]), "{out}");

    let (code, out, err) = berth(&data, &["ls"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("REFERENCE"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].starts_with("example.com/hello:1.0 ") && lines[1].contains(&id[..12]),
        "{out}"
    );

    // A tampered archive is refused with the digest named, and nothing is added.
    let bad = fixtures::oci_layout(
        "example.com/bad:1",
        &config,
        &[fixtures::gzip(&layer)],
        Some(1),
    );
    let bad_file = fixtures::write(tmp.path(), "bad.tar", &bad);
    let (code, _, err) = berth(&data, &["import", bad_file.to_str().expect("utf-8 path")]);
    assert_ne!(code, 0);
    assert!(err.contains("sha256:"), "{err}");
    assert_eq!(berth(&data, &["ls"]).1.lines().count(), 2);

    let (code, out, err) = berth(&data, &["rm", "example.com/hello:1.0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed example.com/hello:1.0"), "{out}");
    assert_eq!(
        berth(&data, &["ls"]).1.lines().count(),
        1,
        "only the header is left"
    );
    let blobs = std::fs::read_dir(data.join("images/blobs/sha256"))
        .expect("blobs dir")
        .count();
    assert_eq!(blobs, 0, "garbage-collected");
    let (code, _, err) = berth(&data, &["rm", "example.com/hello:1.0"]);
    assert_ne!(code, 0);
    assert!(err.contains("hello"), "{err}");
}
