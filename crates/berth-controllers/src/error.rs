//! What a reconcile can fail with; a failed reconcile is requeued with back-off.

/// A controller's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed (conflicts included: the next reconcile sees the
    /// newer object).
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// An object's label selector cannot be evaluated; the object is left alone.
    #[error("invalid selector on {object}: {message}")]
    Selector { object: String, message: String },
    /// An object lacks what the controller needs (a name, a namespace, a uid).
    #[error("{0} lacks {1}")]
    Incomplete(String, &'static str),
    /// An object the controller cannot act on as it is (it says why); it is left alone
    /// until it changes.
    #[error("{0}")]
    Invalid(String),
    /// A watch stream behind a controller ended with an error.
    #[error("watch failed: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
}
