//! What a reconcile can fail with. The shared error policy ([`crate::runtime`]) requeues a
//! failure with back-off, except the failures that only a change to the object can cure
//! ([`Error::needs_change`]): those wait for that change instead of retrying in vain.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A controller's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed (conflicts included: the next reconcile sees the
    /// newer object).
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// Creating a controller's pods failed; `owner` names the controller. Kept apart from
    /// [`Error::Api`] because it is what the ReplicaFailure condition reports (FailedCreate).
    #[error("creating pods for {owner}: {}", api_message(source))]
    FailedCreate {
        owner: String,
        #[source]
        source: kube::Error,
    },
    /// Deleting a controller's surplus pods failed (FailedDelete in ReplicaFailure).
    #[error("deleting pods of {owner}: {}", api_message(source))]
    FailedDelete {
        owner: String,
        #[source]
        source: kube::Error,
    },
    /// The owner the cache showed is gone, replaced by another object of its name, or being
    /// deleted, as a live read found before adopting: it must adopt nothing.
    #[error("{0} is gone or being deleted; it adopts nothing")]
    OwnerGone(String),
    /// A cache the reconcile reads stopped before it was filled (the controller is stopping).
    #[error("the {0} cache stopped")]
    CacheStopped(&'static str),
    /// A patch could not be encoded.
    #[error("encoding a patch: {0}")]
    Encode(#[from] serde_json::Error),
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
}

impl Error {
    /// Retrying cannot help: the object itself is wrong, and only its next change can make
    /// the reconcile succeed.
    pub fn needs_change(&self) -> bool {
        matches!(
            self,
            Error::Selector { .. } | Error::Incomplete(..) | Error::Invalid(_)
        )
    }

    /// A conflict: the cache was behind the server, and the retry plans from newer data.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api(kube::Error::Api(status)) if status.is_conflict())
    }

    /// Something the reconcile wrote to was deleted meanwhile (usually the object itself);
    /// the retry finds the cache caught up.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api(kube::Error::Api(status)) if status.is_not_found())
    }

    /// What the API server said, as upstream prints a status error (its message alone), for
    /// conditions and events; any other error as it displays.
    pub fn message(&self) -> String {
        match self {
            Error::Api(source)
            | Error::FailedCreate { source, .. }
            | Error::FailedDelete { source, .. } => api_message(source),
            other => other.to_string(),
        }
    }
}

/// A status error's message alone (upstream's `err.Error()` of an API error), else the error.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// The identifying fields of an object as the API server returns it (it always carries them):
/// a missing one is [`Error::Incomplete`] naming the field, never a panic.
pub(crate) struct Stored<'a> {
    kind: &'a str,
    meta: &'a ObjectMeta,
}

impl<'a> Stored<'a> {
    pub(crate) fn new(kind: &'a str, meta: &'a ObjectMeta) -> Self {
        Stored { kind, meta }
    }

    fn field(&self, value: &'a Option<String>, path: &'static str) -> Result<&'a str, Error> {
        value
            .as_deref()
            .ok_or_else(|| Error::Incomplete(self.kind.to_string(), path))
    }

    pub(crate) fn namespace(&self) -> Result<&'a str, Error> {
        self.field(&self.meta.namespace, "metadata.namespace")
    }

    pub(crate) fn name(&self) -> Result<&'a str, Error> {
        self.field(&self.meta.name, "metadata.name")
    }

    pub(crate) fn resource_version(&self) -> Result<&'a str, Error> {
        self.field(&self.meta.resource_version, "metadata.resourceVersion")
    }

    pub(crate) fn uid(&self) -> Result<&'a str, Error> {
        self.field(&self.meta.uid, "metadata.uid")
    }
}
