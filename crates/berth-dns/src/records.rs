//! The published index: what every lookup reads, swapped whole when the cluster changes.

use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::index::{Index, IndexOptions};

/// A handle on the server's current [`Index`]. Cloning it is cheap; every clone sees and
/// replaces the same index. A lookup takes the current index (an `Arc`) and reads it without
/// holding any lock, so a rebuild never waits for lookups nor lookups for a rebuild.
#[derive(Clone)]
pub struct Records {
    current: Arc<RwLock<Arc<Index>>>,
    options: IndexOptions,
}

impl Records {
    /// An empty, unsynced index for `options` (names that are not found are SERVFAIL until
    /// the first [`Records::replace`]).
    pub fn new(options: IndexOptions) -> Records {
        Records {
            current: Arc::new(RwLock::new(Arc::new(Index::unsynced(&options)))),
            options,
        }
    }

    /// The index as it is now.
    pub fn current(&self) -> Arc<Index> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the index from a complete list of the cluster's objects and publishes it.
    /// This is how the kube watch keeps it current, and how tests and benchmarks fill a
    /// server without an API server.
    pub fn replace<'a>(
        &self,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        services: impl IntoIterator<Item = &'a Service>,
        endpoint_slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) {
        let index = Index::build(&self.options, namespaces, services, endpoint_slices);
        self.publish(index);
    }

    /// Publishes `index` as the current one.
    pub fn publish(&self, index: Index) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
    }

    /// What indexes are built with.
    pub fn options(&self) -> &IndexOptions {
        &self.options
    }
}
