//! core/v1 Events about pods, as kube-scheduler records them (`kubectl describe pod` lists
//! them by `involvedObject`), through the recorder every berth client shares.

use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use crate::error::Error;
use crate::schedule::SCHEDULER_NAME;

/// Writes the scheduler's events; repeats are counted on the event already written.
pub struct Recorder(berth_client::Recorder);

impl Recorder {
    pub fn new(client: Client) -> Recorder {
        Recorder(berth_client::Recorder::new(client, SCHEDULER_NAME, None))
    }

    /// Records `reason`/`message` (type Normal or Warning) against `pod`.
    pub async fn record(
        &mut self,
        pod: &Pod,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let object = berth_client::pod_reference(pod, None);
        self.0
            .record(&object, type_, reason, message)
            .await
            .map_err(Error::Event)
    }

    /// Drops what is remembered about pods for which `keep` is false.
    pub fn retain(&mut self, keep: impl FnMut(&str) -> bool) {
        self.0.retain(keep);
    }
}
