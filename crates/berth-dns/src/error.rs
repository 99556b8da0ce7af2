//! The crate's one error type.

use std::net::SocketAddr;

/// What can stop the DNS server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the cluster domain {domain:?} is not a valid domain name: {source}")]
    Domain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("binding the DNS server to {addr} ({protocol}): {source}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the DNS server stopped: {0}")]
    Serve(String),
}
