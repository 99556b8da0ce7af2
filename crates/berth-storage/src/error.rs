//! What the storage layer and its controllers fail with, and which failures are worth
//! retrying (the controllers back off on everything except what only a change of the object
//! can cure).

use std::path::PathBuf;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A volume name (or handle) that is not `pvc-<uuid>`; nothing is built from it.
    #[error("invalid volume name {0:?}: must be pvc-<lowercase uuid>")]
    InvalidName(String),
    /// The volume is in use (mounted, attached); the caller retries later.
    #[error("volume {volume} is in use: {why}")]
    Busy { volume: String, why: String },
    /// What is at a volume's path is not what berth made there (a symlink, a file where a
    /// directory belongs); it is left alone rather than followed or removed.
    #[error("refusing {}: {why}", path.display())]
    Refused { path: PathBuf, why: String },
    /// The volume's backing storage does not exist.
    #[error("volume {0} has no backing storage")]
    Missing(String),
    /// A system call or file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An e2fsprogs tool failed (or could not be started).
    #[error("{program} failed ({status}): {output}")]
    Tool {
        program: String,
        status: String,
        output: String,
    },
    /// A claim, class or volume lacks what is needed to act on it, or asks for something this
    /// provisioner cannot do; it is left alone until it changes.
    #[error("{0}")]
    Invalid(String),
    /// A call to the API server failed.
    #[error("API request failed: {}", api_message(.0))]
    Api(#[from] kube::Error),
    /// A patch could not be encoded.
    #[error("encoding a patch: {0}")]
    Encode(#[from] serde_json::Error),
    /// A cache the reconcile reads stopped before it was filled (the controller is stopping).
    #[error("the {0} cache stopped")]
    CacheStopped(&'static str),
    /// A blocking storage task panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
}

impl StorageError {
    /// Shorthand for an [`StorageError::Io`].
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StorageError::Io { op, path, source }
    }

    /// Retrying cannot help: only a change of the object can.
    pub fn needs_change(&self) -> bool {
        matches!(
            self,
            StorageError::Invalid(_) | StorageError::InvalidName(_)
        )
    }

    /// A conflict or a vanished object: the cache was behind, the retry sees newer data.
    pub fn is_stale(&self) -> bool {
        matches!(self, StorageError::Api(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found())
    }
}

/// A status error's message alone (as upstream prints an API error), else the error.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}
