//! TODO(helper): this controller.

use std::future::Future;

use kube::Client;

use crate::Error;

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) -> Result<(), Error> {
    let _ = client;
    stop.await;
    Ok(())
}
