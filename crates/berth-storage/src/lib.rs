//! berth's built-in storage: the `berth.dev/local-path` and `berth.dev/local-ext4`
//! provisioners, as issue 6's storage contract fixes them with the PV controller, the
//! scheduler and the node agent (names, data layout, the PV they make, the protocol).
//!
//! Where to start: [`run`] runs the three controllers of this node; [`Storage`] is the disk
//! side they drive, and its [`Storage::stage`] / [`Storage::unstage`] are what the node
//! agent's CSI driver for `local-ext4.berth.dev` calls.
//!
//! - [`names`]: provisioner and annotation names, volume names and the paths made from them;
//! - [`local`]: the volumes on disk (directories, ext4 images, staging, growing);
//! - [`host`]: the machine effects (tools, loop devices, mounts) behind a trait with a fake;
//! - [`mountinfo`]: which mounts exist and what they use;
//! - [`provisioner`], [`deleter`], [`resizer`]: one reconcile each, over reflector caches
//!   ([`runtime`]);
//! - [`error`]: what all of it fails with.

pub mod deleter;
pub mod error;
pub mod host;
pub mod local;
pub mod mountinfo;
pub mod names;
pub mod provisioner;
pub mod resizer;
pub mod runtime;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

pub use error::StorageError;
pub use local::{Grown, Storage};
pub use names::{LOCAL_EXT4, LOCAL_EXT4_DRIVER, LOCAL_PATH, Provisioner, VolumeName};

/// Runs this node's provisioner, deleter and resizer for berth's built-in provisioners, with
/// volumes under `data_dir`, until `stop` resolves. Each retries its own failures with
/// back-off; none of them ends on an error.
pub async fn run(
    client: kube::Client,
    node_name: String,
    data_dir: PathBuf,
    stop: impl Future<Output = ()>,
) {
    let storage = Arc::new(Storage::new(&data_dir));
    run_with(client, node_name, storage, stop).await;
}

/// [`run`] over a [`Storage`] the caller shares (with the node agent's staging, say, so the
/// per-volume locks cover both).
pub async fn run_with(
    client: kube::Client,
    node_name: String,
    storage: Arc<Storage>,
    stop: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let controllers = async {
        tokio::join!(
            provisioner::run(
                client.clone(),
                node_name.clone(),
                storage.clone(),
                stopped(stop_rx.clone())
            ),
            deleter::run(
                client.clone(),
                node_name.clone(),
                storage.clone(),
                stopped(stop_rx.clone())
            ),
            resizer::run(
                client.clone(),
                node_name.clone(),
                storage.clone(),
                stopped(stop_rx.clone())
            ),
        );
    };
    tokio::pin!(controllers);
    tokio::select! {
        () = stop => {
            let _ = stop_tx.send(true);
            controllers.await;
        }
        () = &mut controllers => {}
    }
}
