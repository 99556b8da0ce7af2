//! core/v1 Events about objects, as client-go's recorder writes them (`kubectl describe` lists
//! them by `involvedObject`). A repeat of the same reason and message about the same object
//! (and field path) bumps the count and lastTimestamp of the event already written instead of
//! writing a new one, as client-go's event correlator does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// An event could not be written.
#[derive(Debug, thiserror::Error)]
#[error("recording event {reason} for {object}: {source}")]
pub struct EventError {
    pub object: String,
    pub reason: String,
    #[source]
    pub source: kube::Error,
}

struct Recorded {
    name: String,
    count: i32,
}

/// The identity of a repeat: object uid, field path, type, reason and message.
type RepeatKey = (String, String, String, String, String);

/// Writes events as one component (`kubelet`, `default-scheduler`) on one host, and remembers
/// what it wrote so repeats are counted.
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    written: HashMap<RepeatKey, Recorded>,
}

impl Recorder {
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            written: HashMap::new(),
        }
    }

    /// Records `reason`/`message` (type Normal or Warning) about `object`.
    pub async fn record(
        &mut self,
        object: &ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), EventError> {
        let namespace = object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let object_name = object.name.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let err = |source| EventError {
            object: format!("{namespace}/{object_name}"),
            reason: reason.to_string(),
            source,
        };
        let key = (
            object.uid.clone().unwrap_or_default(),
            object.field_path.clone().unwrap_or_default(),
            type_.to_string(),
            reason.to_string(),
            message.to_string(),
        );

        if let Some(last) = self.written.get_mut(&key) {
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
        let name = format!("{object_name}.{:x}", now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event)
            .await
            .map_err(err)?;
        self.written.insert(key, Recorded { name, count: 1 });
        Ok(())
    }

    /// Forgets what was written about objects for which `keep(uid)` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.written.retain(|(uid, ..), _| keep(uid));
    }
}

/// What [`EventQueue`] sends its recorder task.
enum Queued {
    Record {
        object: Box<ObjectReference>,
        type_: String,
        reason: String,
        message: String,
    },
    /// Forget what was written about objects whose uid is not in the set.
    Retain(std::collections::HashSet<String>),
    Forget(String),
}

/// A [`Recorder`] on a task of its own: `record` queues the event and returns at once, so the
/// caller's work (a scheduling pass, a pod's sync) never waits for an event's durable write.
/// Events are written in the order queued; one that cannot be written is logged and dropped,
/// as client-go's event broadcaster does.
#[derive(Clone)]
pub struct EventQueue(tokio::sync::mpsc::UnboundedSender<Queued>);

impl Recorder {
    /// Moves the recorder onto a task; the task ends when every [`EventQueue`] is dropped.
    pub fn spawn(mut self) -> (EventQueue, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(queued) = rx.recv().await {
                match queued {
                    Queued::Record {
                        object,
                        type_,
                        reason,
                        message,
                    } => {
                        if let Err(error) = self.record(&object, &type_, &reason, &message).await {
                            tracing::debug!(%error, "cannot record an event");
                        }
                    }
                    Queued::Retain(uids) => self.retain(|uid| uids.contains(uid)),
                    Queued::Forget(uid) => self.retain(|u| u != uid),
                }
            }
        });
        (EventQueue(tx), task)
    }
}

impl EventQueue {
    /// Queues `reason`/`message` (type Normal or Warning) about `object`.
    pub fn record(&self, object: ObjectReference, type_: &str, reason: &str, message: &str) {
        // The task is gone only when its owner is shutting down: the event goes with it.
        let _ = self.0.send(Queued::Record {
            object: Box::new(object),
            type_: type_.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        });
    }

    /// Forgets what was written about objects whose uid is not in `uids`.
    pub fn retain(&self, uids: std::collections::HashSet<String>) {
        let _ = self.0.send(Queued::Retain(uids));
    }

    /// Forgets what was written about the object with this uid (it is gone).
    pub fn forget(&self, uid: &str) {
        let _ = self.0.send(Queued::Forget(uid.to_string()));
    }
}

/// A reference to `pod` for an event's involvedObject; `field_path` names a container as
/// kubelet does (`spec.containers{main}`).
pub fn pod_reference(
    pod: &k8s_openapi::api::core::v1::Pod,
    field_path: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}
