//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong in a runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot describe a container (bad id, relative path, empty argv, ...).
    #[error("invalid container config: {0}")]
    InvalidConfig(String),
    /// A container with this id already has a bundle.
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    /// No bundle (or no started process) for this id.
    #[error("container {0:?} not found")]
    NotFound(String),
    /// The operation needs an exited container, and this one still runs.
    #[error("container {0:?} is still running")]
    StillRunning(String),
    /// The operation needs a running container.
    #[error("container {0:?} is not running")]
    NotRunning(String),
    /// The container could not be created or started; `message` is the runtime's explanation
    /// (for example that the executable was not found).
    #[error("failed to start container {id:?}: {message}")]
    Start { id: String, message: String },
    /// The pod's cgroup still has containers in it.
    #[error("cgroup {0} still has children")]
    CgroupBusy(PathBuf),
    /// A file system or system call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A record in a bundle could not be read or written.
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// libcontainer or oci-spec rejected something.
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Error {
        Error::Json {
            context: context.into(),
            source,
        }
    }
}

/// Formats an error with its whole `source()` chain, because libcontainer's useful detail
/// (for example "executable 'foo' not found in $PATH") sits several levels down.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = source.source();
    }
    out
}
