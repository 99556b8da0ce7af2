//! Runs the store conformance suite against every backend in this crate.

mod memory {
    use std::sync::Arc;

    use berth_store::Store;
    use berth_store::memory::MemoryStore;

    async fn make() -> Arc<dyn Store> {
        MemoryStore::new()
    }

    berth_store::conformance_tests!(make);
}

mod sqlite {
    use std::sync::Arc;

    use berth_store::Store;
    use berth_store::sqlite::SqliteStore;

    /// A fresh store in a temporary directory, removed after the case.
    async fn make() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("data")).expect("open");
        (store, dir)
    }

    berth_store::conformance_tests!(make);
}

/// The same suite through `run_all`, as a backend without per-case tests would run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_memory() {
    berth_store::conformance::run_all(|| async { berth_store::memory::MemoryStore::new() }).await;
}
