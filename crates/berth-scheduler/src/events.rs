//! core/v1 Events about pods, as kube-scheduler records them (`kubectl describe pod` lists
//! them by `involvedObject`). A repeat of the same reason and message for the same pod bumps
//! the count and lastTimestamp of the event already written instead of writing a new one, as
//! client-go's event correlator does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::error::Error;
use crate::schedule::SCHEDULER_NAME;

struct Recorded {
    name: String,
    reason: String,
    message: String,
    count: i32,
}

/// Writes events and remembers, per pod uid, the last one so repeats are counted.
pub struct Recorder {
    client: Client,
    last: HashMap<String, Recorded>,
}

impl Recorder {
    pub fn new(client: Client) -> Recorder {
        Recorder {
            client,
            last: HashMap::new(),
        }
    }

    /// Records `reason`/`message` (type Normal or Warning) against `pod`.
    pub async fn record(
        &mut self,
        pod: &Pod,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let err = |source| Error::Event {
            pod: format!("{namespace}/{pod_name}"),
            reason: reason.to_string(),
            source,
        };

        if let Some(last) = self
            .last
            .get_mut(&uid)
            .filter(|l| l.reason == reason && l.message == message)
        {
            let patch = serde_json::json!({
                "count": last.count + 1,
                "lastTimestamp": Time(now),
            });
            match api
                .patch(&last.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    last.count += 1;
                    return Ok(());
                }
                // Someone deleted it (or events expired): write a fresh one below.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(err(e)),
            }
        }

        // client-go names events <object>.<hex nanoseconds>.
        let name = format!("{pod_name}.{:x}", now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(uid.clone()),
                resource_version: pod.metadata.resource_version.clone(),
                ..Default::default()
            },
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(SCHEDULER_NAME.into()),
                host: None,
            }),
            reporting_component: Some(SCHEDULER_NAME.into()),
            reporting_instance: Some(SCHEDULER_NAME.into()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event)
            .await
            .map_err(err)?;
        self.last.insert(
            uid,
            Recorded {
                name,
                reason: reason.into(),
                message: message.into(),
                count: 1,
            },
        );
        Ok(())
    }

    /// Drops what is remembered about pods for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.last.retain(|uid, _| keep(uid));
    }
}
