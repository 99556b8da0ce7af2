//! Resources served in more than one shape from one stored object.
//!
//! Kubernetes keeps one Event: `events.k8s.io/v1` Events and core `v1` Events are two views of
//! the same stored objects, so an event a controller records through `events.k8s.io` is the one
//! `kubectl describe` lists through core `v1`. berth stores the core shape and converts
//! `events.k8s.io/v1` on the way in and out. Every other resource is stored as served.

use serde_json::{Map, Value, json};

use crate::resources::{self, ResourceInfo};

/// The resource whose store keys and stored shape `info` shares.
pub fn storage_resource(info: &ResourceInfo) -> &ResourceInfo {
    match (info.group, info.kind) {
        ("events.k8s.io", "Event") => resources::lookup("", "v1", "events").unwrap_or(info),
        _ => info,
    }
}

/// Fields renamed between the two Event shapes: (events.k8s.io/v1, core/v1).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields with the same name and meaning in both shapes.
const EVENT_SHARED: &[&str] = &[
    "metadata",
    "eventTime",
    "series",
    "related",
    "action",
    "reason",
    "type",
    "reportingInstance",
];

fn rename(
    object: &Value,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(source) = object.as_object() else {
        return out;
    };
    for name in EVENT_SHARED {
        if let Some(v) = source.get(*name) {
            out.insert((*name).to_string(), v.clone());
        }
    }
    for (from, to) in pairs {
        if let Some(v) = source.get(from) {
            out.insert(to.to_string(), v.clone());
        }
    }
    out
}

/// The stored shape of an object served as `info`.
pub fn to_storage(info: &ResourceInfo, object: Value) -> Value {
    match (info.group, info.kind) {
        ("events.k8s.io", "Event") => {
            let mut core = rename(&object, EVENT_FIELDS.iter().map(|(v1, core)| (*v1, *core)));
            core.insert("apiVersion".into(), json!("v1"));
            core.insert("kind".into(), json!("Event"));
            Value::Object(core)
        }
        _ => object,
    }
}

/// An object served as `info` from its stored shape.
pub fn from_storage(info: &ResourceInfo, object: Value) -> Value {
    match (info.group, info.kind) {
        ("events.k8s.io", "Event") => {
            let mut v1 = rename(&object, EVENT_FIELDS.iter().map(|(v1, core)| (*core, *v1)));
            // events.k8s.io requires eventTime; events recorded through core v1 often lack it.
            // Kubernetes falls back to the first time the event was seen.
            if v1.get("eventTime").is_none_or(Value::is_null) {
                let seen = object
                    .get("firstTimestamp")
                    .or_else(|| object.pointer("/metadata/creationTimestamp"))
                    .and_then(Value::as_str)
                    .map(|t| match t.strip_suffix('Z') {
                        Some(seconds) if !seconds.contains('.') => format!("{seconds}.000000Z"),
                        _ => t.to_string(),
                    });
                if let Some(seen) = seen {
                    v1.insert("eventTime".into(), json!(seen));
                }
            }
            v1.insert("apiVersion".into(), json!("events.k8s.io/v1"));
            v1.insert("kind".into(), json!("Event"));
            Value::Object(v1)
        }
        _ => object,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_v1() -> &'static ResourceInfo {
        resources::lookup("events.k8s.io", "v1", "events").unwrap()
    }

    #[test]
    fn events_round_trip_between_shapes() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2026-11-27T03:00:00.000000Z",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default", "uid": "u"},
            "note": "Started container", "reason": "Started", "type": "Normal", "action": "Start",
            "reportingController": "berth/node", "reportingInstance": "node-1",
            "series": {"count": 2, "lastObservedTime": "2026-11-27T03:00:01.000000Z"}
        });
        let core = to_storage(events_v1(), v1.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "Started container");
        assert_eq!(core["reportingComponent"], "berth/node");
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(from_storage(events_v1(), core), v1);
        // The stored shape decodes as the core type, the served one as events.k8s.io's.
        let stored = to_storage(events_v1(), v1.clone());
        serde_json::from_value::<k8s_openapi::api::core::v1::Event>(stored).unwrap();
    }

    #[test]
    fn core_events_without_event_time_get_one() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "reason": "Scheduled",
            "firstTimestamp": "2026-11-27T03:00:00Z", "lastTimestamp": "2026-11-27T03:00:05Z", "count": 3,
            "source": {"component": "default-scheduler"}
        });
        let v1 = from_storage(events_v1(), core);
        assert_eq!(v1["eventTime"], "2026-11-27T03:00:00.000000Z");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["deprecatedSource"]["component"], "default-scheduler");
        serde_json::from_value::<k8s_openapi::api::events::v1::Event>(v1).unwrap();
    }

    #[test]
    fn other_resources_are_stored_as_served() {
        let pods = resources::lookup("", "v1", "pods").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        assert_eq!(to_storage(pods, pod.clone()), pod);
        assert_eq!(from_storage(pods, pod.clone()), pod);
        assert_eq!(storage_resource(pods), pods);
        assert_eq!(storage_resource(events_v1()).group, "");
    }
}
