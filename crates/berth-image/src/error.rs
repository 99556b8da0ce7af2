//! The crate's one error type. Every failure names what it was about (the file, the blob, the
//! archive entry) so that `berth image import` can print it as is.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The archive is not a well-formed OCI layout or docker-archive.
    #[error("invalid image archive: {0}")]
    Archive(String),
    /// A blob's content does not hash to the digest it is named or referenced by.
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// A layer entry would write outside the layer directory, or is otherwise refused.
    #[error("refusing entry {entry:?} in layer {layer}: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    /// A layer is larger (bytes or entries) than the configured limit.
    #[error("layer {layer} exceeds the limit of {limit} {what}")]
    LimitExceeded {
        layer: String,
        what: &'static str,
        limit: u64,
    },
    /// Whiteouts need privileges (a 0:0 device node, a `trusted.` xattr).
    #[error("{what} at {path} needs root (CAP_SYS_ADMIN/CAP_MKNOD): {source}")]
    NeedsRoot {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something the store recognises but does not handle (zstd layers, foreign digests).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An image reference that is not valid in the docker/containerd grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// No image is stored under this reference.
    #[error("image {0} not found")]
    NotFound(String),
    /// `berth image pack` cannot make an image of this program.
    #[error("cannot pack {program}: {reason}")]
    Pack { program: PathBuf, reason: String },
    /// A JSON document (index, manifest, config, the store's own index) did not parse.
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Converts a `rustix` errno the same way.
pub(crate) fn errno(context: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> Error {
    let context = context.into();
    move |e| Error::Io {
        context,
        source: e.into(),
    }
}
