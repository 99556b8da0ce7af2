//! ARCHITECTURE.md cannot go stale: every path it names must exist in the repository.

use std::path::Path;

#[test]
fn every_path_named_in_architecture_md_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut named = Vec::new();
    for (i, part) in text.split('`').enumerate() {
        // Odd parts are inside backticks.
        let looks_like_path = i % 2 == 1
            && part.contains('/')
            && !part.contains(' ')
            && !part.starts_with('/')
            && !part.contains("://")
            && (part.starts_with("crates/")
                || part.starts_with("docs/")
                || part.starts_with("examples/")
                || part.starts_with("scripts/")
                || part.starts_with(".ci/"));
        if looks_like_path {
            named.push(part.to_string());
        }
    }
    assert!(
        named.len() >= 10,
        "ARCHITECTURE.md names too few paths to be a map: {named:?}"
    );
    let missing: Vec<&String> = named.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}
