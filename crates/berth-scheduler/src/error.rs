//! The scheduler's one error type.

/// What can go wrong talking to the API server; every case is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding pod {pod} to node {node}: {source}")]
    Bind {
        pod: String,
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the PodScheduled condition of pod {pod}: {source}")]
    Status {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the selected node {node} into claim {claim}: {source}")]
    SelectNode {
        claim: String,
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("the {0} watch ended before its cache was ready")]
    CacheNotReady(&'static str),
}
