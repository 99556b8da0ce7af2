//! core/v1 Events about pods, as kube-scheduler records them (`kubectl describe pod` lists
//! them by `involvedObject`), through the recorder every berth client shares.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use crate::schedule::SCHEDULER_NAME;

/// Writes the scheduler's events on a task of its own, so a pass never waits for an event's
/// durable write before binding the next pod; repeats are counted on the event already written.
pub struct Recorder(berth_client::EventQueue);

impl Recorder {
    /// Needs a Tokio runtime: the writing task starts here, and ends with the recorder.
    pub fn new(client: Client) -> Recorder {
        let (queue, _task) = berth_client::Recorder::new(client, SCHEDULER_NAME, None).spawn();
        Recorder(queue)
    }

    /// Queues `reason`/`message` (type Normal or Warning) against `pod`.
    pub fn record(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        self.0.record(
            berth_client::pod_reference(pod, None),
            type_,
            reason,
            message,
        );
    }

    /// Forgets what was written about pods whose uid is not in `uids`.
    pub fn retain(&self, uids: HashSet<String>) {
        self.0.retain(uids);
    }
}
