//! The agent's errors that are not about one container (those become waiting reasons and
//! events on the pod instead).

/// What can stop the agent or one of its loops; every API error is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Api {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container runtime: {0}")]
    Runtime(String),
    #[error("the image store: {0}")]
    Image(#[from] berth_image::Error),
    #[error("the pod network: {0}")]
    Network(String),
}

impl Error {
    /// `map_err(Error::api("reading node"))`.
    pub fn api(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Api { what, source }
    }

    /// `map_err(Error::io("creating", &path))`.
    pub fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }
}
