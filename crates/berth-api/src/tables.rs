//! `kubectl get` output: the `meta.k8s.io/v1` Table that kube-apiserver returns when a client
//! asks for `as=Table`.
//!
//! kubectl prints the cells verbatim, so this module computes every column the way
//! kube-apiserver's printers (`pkg/printers/internalversion/printers.go`) do, including the pod
//! STATUS summary (`Init:0/1`, `CrashLoopBackOff`, `Terminating`, `Completed` …), RESTARTS with
//! the time of the last restart, and AGE in `duration.HumanDuration` form. Like kube-apiserver,
//! berth always renders the wide columns; kubectl hides those with `priority > 0` unless `-o wide`.
//! A resource without a printer gets Kubernetes' default table (Name, Created At).
//!
//! Objects are read as JSON, not through the k8s-openapi types: a table must render whatever is
//! stored, so a missing or odd field becomes Kubernetes' placeholder (`<none>`, `<unknown>`,
//! `<unset>`) instead of an error.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use crate::resources::ResourceInfo;

/// One column of a Table (`metav1.TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// As kube-apiserver spells it ("Nominated Node"); kubectl upper-cases it for the header.
    pub name: &'static str,
    /// OpenAPI type of the cells: "string", "integer", "boolean", "date".
    pub type_: &'static str,
    /// "name" marks the column kubectl treats as the object's name; usually empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for the default view, 1 for columns shown only with `-o wide`.
    pub priority: i32,
}

impl Column {
    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        priority: 1,
        ..col(name, type_, description)
    }
}

const NAME_COLUMN: Column = Column {
    format: "name",
    ..col("Name", "string", docs::NAME)
};
const AGE_COLUMN: Column = col("Age", "string", docs::CREATION);
const CONTAINERS_COLUMN: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES_COLUMN: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// Which of kube-apiserver's printers renders a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    ReplicaSet,
    Deployment,
    StatefulSet,
    Service,
    PersistentVolumeClaim,
    PersistentVolume,
    StorageClass,
    Namespace,
    Node,
    ConfigMap,
    Secret,
    ServiceAccount,
    Endpoints,
    /// Core v1 and events.k8s.io/v1 Events share one printer upstream (both are stored as the
    /// internal core Event); the flag says which field names to read.
    Event {
        events_api: bool,
    },
    EndpointSlice,
    Lease,
    ControllerRevision,
    /// Kubernetes' default table convertor.
    Default,
}

fn printer(info: &ResourceInfo) -> Printer {
    match (info.group, info.kind) {
        ("", "Pod") => Printer::Pod,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "StatefulSet") => Printer::StatefulSet,
        ("apps", "ControllerRevision") => Printer::ControllerRevision,
        ("", "Service") => Printer::Service,
        ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
        ("", "PersistentVolume") => Printer::PersistentVolume,
        ("storage.k8s.io", "StorageClass") => Printer::StorageClass,
        ("", "Namespace") => Printer::Namespace,
        ("", "Node") => Printer::Node,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "Event") => Printer::Event { events_api: false },
        ("events.k8s.io", "Event") => Printer::Event { events_api: true },
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        _ => Printer::Default,
    }
}

/// The column definitions kube-apiserver sends for a resource, wide columns included.
pub fn columns(info: &ResourceInfo) -> Vec<Column> {
    use docs::*;
    match printer(info) {
        Printer::Pod => vec![
            NAME_COLUMN,
            col(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE_COLUMN,
            wide("IP", "string", POD_IP),
            wide("Node", "string", POD_NODE_NAME),
            wide("Nominated Node", "string", POD_NOMINATED_NODE),
            wide("Readiness Gates", "string", POD_READINESS_GATES),
        ],
        Printer::ReplicaSet => vec![
            NAME_COLUMN,
            col("Desired", "integer", RS_SPEC_REPLICAS),
            col("Current", "integer", RS_STATUS_REPLICAS),
            col("Ready", "integer", RS_READY_REPLICAS),
            AGE_COLUMN,
            CONTAINERS_COLUMN,
            IMAGES_COLUMN,
            wide("Selector", "string", RS_SELECTOR),
        ],
        Printer::Deployment => vec![
            NAME_COLUMN,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "string", DEPLOY_UPDATED),
            col("Available", "string", DEPLOY_AVAILABLE),
            AGE_COLUMN,
            CONTAINERS_COLUMN,
            IMAGES_COLUMN,
            wide("Selector", "string", DEPLOY_SELECTOR),
        ],
        Printer::StatefulSet => vec![
            NAME_COLUMN,
            col("Ready", "string", "Number of the pod with ready state"),
            AGE_COLUMN,
            CONTAINERS_COLUMN,
            IMAGES_COLUMN,
        ],
        Printer::Service => vec![
            NAME_COLUMN,
            col("Type", "string", SVC_TYPE),
            col("Cluster-IP", "string", SVC_CLUSTER_IP),
            col("External-IP", "string", SVC_EXTERNAL_IPS),
            col("Port(s)", "string", SVC_PORTS),
            AGE_COLUMN,
            wide("Selector", "string", SVC_SELECTOR),
        ],
        Printer::PersistentVolumeClaim => vec![
            NAME_COLUMN,
            col("Status", "string", PVC_PHASE),
            col("Volume", "string", PVC_VOLUME_NAME),
            col("Capacity", "string", PVC_CAPACITY),
            col("Access Modes", "string", PVC_ACCESS_MODES),
            col("StorageClass", "string", "StorageClass of the pvc"),
            col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pvc",
            ),
            AGE_COLUMN,
            wide("VolumeMode", "string", PVC_VOLUME_MODE),
        ],
        Printer::PersistentVolume => vec![
            NAME_COLUMN,
            col("Capacity", "string", PV_CAPACITY),
            col("Access Modes", "string", PV_ACCESS_MODES),
            col("Reclaim Policy", "string", PV_RECLAIM_POLICY),
            col("Status", "string", PV_PHASE),
            col("Claim", "string", PV_CLAIM_REF),
            col("StorageClass", "string", "StorageClass of the pv"),
            col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pv",
            ),
            col("Reason", "string", PV_REASON),
            AGE_COLUMN,
            wide("VolumeMode", "string", PV_VOLUME_MODE),
        ],
        Printer::StorageClass => vec![
            NAME_COLUMN,
            col("Provisioner", "string", SC_PROVISIONER),
            col("ReclaimPolicy", "string", SC_RECLAIM_POLICY),
            col("VolumeBindingMode", "string", SC_BINDING_MODE),
            col("AllowVolumeExpansion", "string", SC_EXPANSION),
            AGE_COLUMN,
        ],
        Printer::Namespace => vec![
            NAME_COLUMN,
            col("Status", "string", "The status of the namespace"),
            AGE_COLUMN,
        ],
        Printer::Node => vec![
            NAME_COLUMN,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE_COLUMN,
            col("Version", "string", NODE_KUBELET_VERSION),
            wide("Internal-IP", "string", NODE_ADDRESSES),
            wide("External-IP", "string", NODE_ADDRESSES),
            wide("OS-Image", "string", NODE_OS_IMAGE),
            wide("Kernel-Version", "string", NODE_KERNEL_VERSION),
            wide("Container-Runtime", "string", NODE_CONTAINER_RUNTIME),
        ],
        Printer::ConfigMap => vec![
            NAME_COLUMN,
            col("Data", "string", CONFIGMAP_DATA),
            AGE_COLUMN,
        ],
        Printer::Secret => vec![
            NAME_COLUMN,
            col("Type", "string", SECRET_TYPE),
            col("Data", "string", SECRET_DATA),
            AGE_COLUMN,
        ],
        Printer::ServiceAccount => vec![
            NAME_COLUMN,
            col("Secrets", "string", SA_SECRETS),
            AGE_COLUMN,
        ],
        Printer::Endpoints => vec![
            NAME_COLUMN,
            col("Endpoints", "string", ENDPOINTS_SUBSETS),
            AGE_COLUMN,
        ],
        Printer::Event { .. } => vec![
            col("Last Seen", "string", EVENT_LAST_TIMESTAMP),
            col("Type", "string", EVENT_TYPE),
            col("Reason", "string", EVENT_REASON),
            col("Object", "string", EVENT_INVOLVED_OBJECT),
            wide("Subobject", "string", EVENT_FIELD_PATH),
            wide("Source", "string", EVENT_SOURCE),
            col("Message", "string", EVENT_MESSAGE),
            wide("First Seen", "string", EVENT_FIRST_TIMESTAMP),
            wide("Count", "string", EVENT_COUNT),
            Column {
                priority: 1,
                ..NAME_COLUMN
            },
        ],
        Printer::EndpointSlice => vec![
            NAME_COLUMN,
            col("AddressType", "string", SLICE_ADDRESS_TYPE),
            col("Ports", "string", SLICE_PORTS),
            col("Endpoints", "string", SLICE_ENDPOINTS),
            AGE_COLUMN,
        ],
        Printer::Lease => vec![
            NAME_COLUMN,
            col("Holder", "string", LEASE_HOLDER),
            AGE_COLUMN,
        ],
        Printer::ControllerRevision => vec![
            NAME_COLUMN,
            col("Controller", "string", "Controller of the object"),
            col("Revision", "string", CR_REVISION),
            AGE_COLUMN,
        ],
        Printer::Default => vec![NAME_COLUMN, col("Created At", "date", CREATION)],
    }
}

/// The cells of one row, in [`columns`] order, computed as of `now`.
pub fn cells(info: &ResourceInfo, object: &Value, now: Timestamp) -> Vec<Value> {
    match printer(info) {
        Printer::Pod => pod_cells(object, now),
        Printer::ReplicaSet => replica_set_cells(object, now),
        Printer::Deployment => deployment_cells(object, now),
        Printer::StatefulSet => stateful_set_cells(object, now),
        Printer::Service => service_cells(object, now),
        Printer::PersistentVolumeClaim => pvc_cells(object, now),
        Printer::PersistentVolume => pv_cells(object, now),
        Printer::StorageClass => storage_class_cells(object, now),
        Printer::Namespace => vec![
            name(object).into(),
            text(object, &["status", "phase"]).into(),
            age(object, now).into(),
        ],
        Printer::Node => node_cells(object, now),
        Printer::ConfigMap => {
            let data = count_of(object, &["data"]) + count_of(object, &["binaryData"]);
            vec![name(object).into(), data.into(), age(object, now).into()]
        }
        Printer::Secret => secret_cells(object, now),
        Printer::ServiceAccount => vec![
            name(object).into(),
            count_of(object, &["secrets"]).into(),
            age(object, now).into(),
        ],
        Printer::Endpoints => vec![
            name(object).into(),
            format_endpoints(object).into(),
            age(object, now).into(),
        ],
        Printer::Event { events_api } => event_cells(object, events_api, now),
        Printer::EndpointSlice => endpoint_slice_cells(object, now),
        Printer::Lease => vec![
            name(object).into(),
            text(object, &["spec", "holderIdentity"]).into(),
            age(object, now).into(),
        ],
        Printer::ControllerRevision => vec![
            name(object).into(),
            controller_of(object).into(),
            int(object, &["revision"]).into(),
            age(object, now).into(),
        ],
        Printer::Default => {
            // The default convertor prints the timestamp itself, in UTC RFC 3339; Go's zero time
            // when there is none.
            let created = timestamp(at(object, &["metadata", "creationTimestamp"])).map_or_else(
                || "0001-01-01T00:00:00Z".to_string(),
                |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
            vec![name(object).into(), created.into()]
        }
    }
}

/// A whole Table: column definitions plus one row per object, each row carrying the object's
/// metadata as a `PartialObjectMetadata` (kubectl reads NAMESPACE and `--show-labels` from it).
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    now: Timestamp,
) -> Value {
    let column_definitions: Vec<Value> = columns(info).into_iter().map(Column::to_json).collect();
    let rows: Vec<Value> = objects.iter().map(|o| row(info, o, now)).collect();
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), resource_version.into());
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), token.into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

fn row(info: &ResourceInfo, object: &Value, now: Timestamp) -> Value {
    let metadata = match at(object, &["metadata"]) {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    let mut row = json!({
        "cells": cells(info, object, now),
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
        },
    });
    // Finished pods carry a Completed row condition, as upstream marks them.
    if printer(info) == Printer::Pod {
        let condition = match text(object, &["status", "phase"]) {
            "Succeeded" => Some(("Succeeded", "The pod has completed successfully.")),
            "Failed" => Some(("Failed", "The pod failed.")),
            _ => None,
        };
        if let (Some((reason, message)), Some(row)) = (condition, row.as_object_mut()) {
            row.insert(
                "conditions".into(),
                json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]),
            );
        }
    }
    row
}

// ---- reading JSON objects ------------------------------------------------------------------

static NULL: Value = Value::Null;

/// The value at `path`, or null when any step is missing.
fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .unwrap_or(&NULL)
}

/// The string at `path`, or "" (Go's zero value) when missing or not a string.
fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path).as_str().unwrap_or_default()
}

/// The integer at `path`, or 0.
fn int(value: &Value, path: &[&str]) -> i64 {
    at(value, path).as_i64().unwrap_or_default()
}

/// The integer at `path`, or the value Kubernetes defaults it to.
fn int_or(value: &Value, path: &[&str], default: i64) -> i64 {
    at(value, path).as_i64().unwrap_or(default)
}

fn list<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path).as_array().map_or(&[], Vec::as_slice)
}

/// The number of entries of the list or map at `path`.
fn count_of(value: &Value, path: &[&str]) -> i64 {
    let n = match at(value, path) {
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn name(object: &Value) -> &str {
    text(object, &["metadata", "name"])
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    at(object, &["metadata", "annotations", key]).as_str()
}

fn is_deleting(object: &Value) -> bool {
    !at(object, &["metadata", "deletionTimestamp"]).is_null()
}

fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() { placeholder } else { s }.to_string()
}

// ---- time ----------------------------------------------------------------------------------

/// The current time, for the `now` of [`cells`] and [`table`]. (k8s-openapi builds jiff without
/// its `std` feature, so `Timestamp::now` may not exist.)
pub fn now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    SignedDuration::try_from(since_epoch)
        .ok()
        .and_then(|d| Timestamp::from_duration(d).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A `metav1.Time`/`MicroTime`; `None` when absent, unparseable or Go's zero time, all of which
/// Kubernetes prints as `<unknown>`.
fn timestamp(value: &Value) -> Option<Timestamp> {
    /// 0001-01-01T00:00:00Z, which Go serializes for an unset time.Time.
    const GO_ZERO_TIME: i64 = -62_135_596_800;
    let t: Timestamp = value.as_str()?.parse().ok()?;
    (t.as_second() != GO_ZERO_TIME).then_some(t)
}

/// `translateTimestampSince`: how long ago `value` was, or `<unknown>`.
fn since(value: &Value, now: Timestamp) -> String {
    timestamp(value).map_or_else(
        || "<unknown>".to_string(),
        |t| human_duration(now.duration_since(t)),
    )
}

fn age(object: &Value, now: Timestamp) -> String {
    since(at(object, &["metadata", "creationTimestamp"]), now)
}

/// k8s.io/apimachinery/pkg/util/duration.HumanDuration: about 2–3 significant figures, e.g.
/// `45s`, `3m20s`, `15m`, `5h12m`, `3d4h`, `2y31d`. Up to a second in the future counts as now.
pub fn human_duration(d: SignedDuration) -> String {
    // Whole seconds, truncated toward zero like Go's int(d.Seconds()).
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

// ---- pods ----------------------------------------------------------------------------------

/// `printPod`: READY counts ready containers (restartable init containers — sidecars — included),
/// STATUS is the most specific reason any container gives, RESTARTS adds when the last one was.
fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let spec_init = list(pod, &["spec", "initContainers"]);
    let is_sidecar = |container_name: &str| {
        spec_init.iter().any(|c| {
            text(c, &["name"]) == container_name && text(c, &["restartPolicy"]) == "Always"
        })
    };
    let conditions = list(pod, &["status", "conditions"]);
    let condition_true = |type_: &str| {
        conditions
            .iter()
            .any(|c| text(c, &["type"]) == type_ && text(c, &["status"]) == "True")
    };

    let total = list(pod, &["spec", "containers"]).len()
        + spec_init
            .iter()
            .filter(|c| text(c, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let phase = text(pod, &["status", "phase"]);
    let mut reason = match text(pod, &["status", "reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if conditions
        .iter()
        .any(|c| text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }

    let mut initializing = false;
    for (i, status) in list(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int(status, &["restartCount"]);
        let finished = timestamp(at(status, &["lastState", "terminated", "finishedAt"]));
        restarts += count;
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(text(status, &["name"]));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = at(status, &["state", "terminated"]);
        let waiting_reason = text(status, &["state", "waiting", "reason"]);
        if terminated.is_object() && int(terminated, &["exitCode"]) == 0 {
            continue;
        }
        if sidecar && at(status, &["started"]).as_bool() == Some(true) {
            if at(status, &["ready"]).as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if terminated.is_object() {
            match text(terminated, &["reason"]) {
                "" => match int(terminated, &["signal"]) {
                    0 => format!("Init:ExitCode:{}", int(terminated, &["exitCode"])),
                    signal => format!("Init:Signal:{signal}"),
                },
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", spec_init.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true("Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Backwards, so the first container's reason wins, as upstream.
        for status in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(status, &["restartCount"]);
            last_restart = later(
                last_restart,
                timestamp(at(status, &["lastState", "terminated", "finishedAt"])),
            );
            let waiting_reason = text(status, &["state", "waiting", "reason"]);
            let terminated = at(status, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if terminated.is_object() {
                reason = match text(terminated, &["reason"]) {
                    "" => match int(terminated, &["signal"]) {
                        0 => format!("ExitCode:{}", int(terminated, &["exitCode"])),
                        signal => format!("Signal:{signal}"),
                    },
                    r => r.to_string(),
                };
            } else if at(status, &["ready"]).as_bool() == Some(true)
                && at(status, &["state", "running"]).is_object()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A container still running means the pod is not done although another completed.
        if reason == "Completed" && has_running {
            reason = if condition_true("Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .into();
        }
    }

    if is_deleting(pod) && text(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if is_deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", human_duration(now.duration_since(t)))
        }
        _ => restarts.to_string(),
    };

    let pod_ip = list(pod, &["status", "podIPs"])
        .first()
        .map(|ip| text(ip, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, &["status", "podIP"]));
    let gates = list(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        // Only the first condition of each type counts, as upstream.
        let true_count = gates
            .iter()
            .filter(|gate| {
                let type_ = text(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| text(c, &["type"]) == type_)
                    .is_some_and(|c| text(c, &["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };

    vec![
        name(pod).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        age(pod, now).into(),
        or_placeholder(pod_ip, "<none>").into(),
        or_placeholder(text(pod, &["spec", "nodeName"]), "<none>").into(),
        or_placeholder(text(pod, &["status", "nominatedNodeName"]), "<none>").into(),
        readiness_gates.into(),
    ]
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

// ---- workloads -----------------------------------------------------------------------------

/// `layoutContainerCells`: the template's container names and images, comma-joined.
fn containers_and_images(object: &Value) -> (String, String) {
    let containers = list(object, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

fn replica_set_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(rs);
    // metav1.FormatLabelSelector.
    let selector = match label_selector(at(rs, &["spec", "selector"])) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    };
    vec![
        name(rs).into(),
        int_or(rs, &["spec", "replicas"], 1).into(),
        int(rs, &["status", "replicas"]).into(),
        int(rs, &["status", "readyReplicas"]).into(),
        age(rs, now).into(),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

fn deployment_cells(deploy: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(deploy);
    // LabelSelectorAsSelector(...).String(), which stays empty for an empty selector.
    let selector = label_selector(at(deploy, &["spec", "selector"]))
        .unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name(deploy).into(),
        format!(
            "{}/{}",
            int(deploy, &["status", "readyReplicas"]),
            int_or(deploy, &["spec", "replicas"], 1)
        )
        .into(),
        int(deploy, &["status", "updatedReplicas"]).into(),
        int(deploy, &["status", "availableReplicas"]).into(),
        age(deploy, now).into(),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

fn stateful_set_cells(sts: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(sts);
    vec![
        name(sts).into(),
        format!(
            "{}/{}",
            int(sts, &["status", "readyReplicas"]),
            int_or(sts, &["spec", "replicas"], 1)
        )
        .into(),
        age(sts, now).into(),
        containers.into(),
        images.into(),
    ]
}

fn controller_of(object: &Value) -> String {
    let Some(owner) = list(object, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| at(o, &["controller"]).as_bool() == Some(true))
    else {
        return "<none>".into();
    };
    let owner_name = text(owner, &["name"]);
    let kind = text(owner, &["kind"]);
    // schema.GroupKind.String(): "statefulset.apps", or just the kind for the core group.
    let group = match text(owner, &["apiVersion"]).rsplit_once('/') {
        Some((group, _version)) => group,
        None => "",
    };
    match (kind, group) {
        ("", "") => owner_name.to_string(),
        (kind, "") => format!("{}/{owner_name}", kind.to_lowercase()),
        (kind, group) => format!("{}/{owner_name}", format!("{kind}.{group}").to_lowercase()),
    }
}

/// `metav1.LabelSelectorAsSelector(selector).String()`: requirements sorted by key,
/// `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-joined; "" for a missing or empty
/// selector. `Err` where Kubernetes would reject the selector.
fn label_selector(selector: &Value) -> Result<String, ()> {
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = at(selector, &["matchLabels"]).as_object() {
        for (key, value) in labels {
            requirements.push((key.clone(), format!("{key}={}", value.as_str().ok_or(())?)));
        }
    }
    for expression in list(selector, &["matchExpressions"]) {
        let key = text(expression, &["key"]);
        let mut values: Vec<&str> = list(expression, &["values"])
            .iter()
            .map(|v| v.as_str().ok_or(()))
            .collect::<Result<_, _>>()?;
        values.sort_unstable();
        let operator = text(expression, &["operator"]);
        let requirement = match operator {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, or `<none>`.
fn format_labels(map: &Value) -> String {
    let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

// ---- services and endpoints ------------------------------------------------------------------

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    // An unset type is what the API server defaults to ClusterIP.
    let type_ = match text(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = list(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(svc, &["spec", "clusterIP"]));
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let protocol = match text(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match int(p, &["nodePort"]) {
                node_port if node_port > 0 => {
                    format!("{}:{node_port}/{protocol}", int(p, &["port"]))
                }
                _ => format!("{}/{protocol}", int(p, &["port"])),
            }
        })
        .collect();
    vec![
        name(svc).into(),
        type_.into(),
        or_placeholder(cluster_ip, "<none>").into(),
        external_ip(svc, type_).into(),
        or_placeholder(&ports.join(","), "<none>").into(),
        age(svc, now).into(),
        format_labels(at(svc, &["spec", "selector"])).into(),
    ]
}

/// `getServiceExternalIP`, wide (untruncated) as the server renders it.
fn external_ip(svc: &Value, type_: &str) -> String {
    let external: Vec<&str> = list(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match type_ {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".into(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            // A sorted set of ingress IPs (or hostnames when there is no IP).
            let mut ingress: Vec<&str> = list(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| match text(i, &["ip"]) {
                    "" => text(i, &["hostname"]),
                    ip => ip,
                })
                .filter(|s| !s.is_empty())
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external);
            if ingress.is_empty() {
                "<pending>".into()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).into(),
        _ => "<unknown>".into(),
    }
}

/// `formatEndpoints`: up to three `ip:port` (bare IPs for port-less subsets, as headless
/// services have) and how many more there are.
fn format_endpoints(endpoints: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut count = 0usize;
    for subset in subsets {
        let addresses = list(subset, &["addresses"]);
        let ports = list(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for address in addresses.iter().take(MAX.saturating_sub(shown.len())) {
                shown.push(text(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int(port, &["port"]);
            for address in addresses.iter().take(MAX.saturating_sub(shown.len())) {
                shown.push(join_host_port(text(address, &["ip"]), port));
            }
        }
    }
    let joined = shown.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Go's net.JoinHostPort: IPv6 addresses go in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn endpoint_slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = list(slice, &["ports"])
        .iter()
        .map(
            |p| match (at(p, &["port"]).as_i64(), at(p, &["name"]).as_str()) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            },
        )
        .collect();
    let addresses: Vec<String> = list(slice, &["endpoints"])
        .iter()
        .flat_map(|e| list(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    vec![
        name(slice).into(),
        text(slice, &["addressType"]).into(),
        list_with_more(&ports).into(),
        list_with_more(&addresses).into(),
        age(slice, now).into(),
    ]
}

/// `listWithMoreString`: the first three, `+ N more...`, or `<unset>` for none.
fn list_with_more(items: &[String]) -> String {
    const MAX: usize = 3;
    if items.is_empty() {
        return "<unset>".into();
    }
    let joined = items[..items.len().min(MAX)].join(",");
    if items.len() > MAX {
        format!("{joined} + {} more...", items.len() - MAX)
    } else {
        joined
    }
}

// ---- storage -------------------------------------------------------------------------------

/// `GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order, each once.
fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|m| m.as_str() == Some(mode));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .into_iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| short)
    .collect::<Vec<_>>()
    .join(",")
}

/// A Quantity as stored, or "0" (the zero Quantity) when missing.
fn quantity(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".into(),
    }
}

/// The beta annotation still overrides `storageClassName`, as upstream.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

fn pvc_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if is_deleting(pvc) {
        "Terminating"
    } else {
        text(pvc, &["status", "phase"])
    };
    let volume = text(pvc, &["spec", "volumeName"]);
    // Capacity and access modes are the bound volume's, so only shown once bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(at(pvc, &["status", "capacity", "storage"])),
            access_modes(list(pvc, &["status", "accessModes"])),
        )
    };
    let class = annotation(pvc, BETA_STORAGE_CLASS)
        .unwrap_or_else(|| text(pvc, &["spec", "storageClassName"]));
    vec![
        name(pvc).into(),
        phase.into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        class.into(),
        unset(at(pvc, &["spec", "volumeAttributesClassName"])).into(),
        age(pvc, now).into(),
        unset(at(pvc, &["spec", "volumeMode"])).into(),
    ]
}

fn pv_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match at(pv, &["spec", "claimRef"]) {
        claim @ Value::Object(_) => {
            format!("{}/{}", text(claim, &["namespace"]), text(claim, &["name"]))
        }
        _ => String::new(),
    };
    let phase = if is_deleting(pv) {
        "Terminating"
    } else {
        text(pv, &["status", "phase"])
    };
    let class = annotation(pv, BETA_STORAGE_CLASS)
        .unwrap_or_else(|| text(pv, &["spec", "storageClassName"]));
    vec![
        name(pv).into(),
        quantity(at(pv, &["spec", "capacity", "storage"])).into(),
        access_modes(list(pv, &["spec", "accessModes"])).into(),
        text(pv, &["spec", "persistentVolumeReclaimPolicy"]).into(),
        phase.into(),
        claim.into(),
        class.into(),
        unset(at(pv, &["spec", "volumeAttributesClassName"])).into(),
        text(pv, &["status", "reason"]).into(),
        age(pv, now).into(),
        unset(at(pv, &["spec", "volumeMode"])).into(),
    ]
}

/// An optional string field, `<unset>` when absent.
fn unset(value: &Value) -> String {
    value.as_str().unwrap_or("<unset>").to_string()
}

fn storage_class_cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|key| annotation(sc, key) == Some("true"));
    let display_name = if is_default {
        format!("{} (default)", name(sc))
    } else {
        name(sc).to_string()
    };
    let or_default = |path: &[&str], default: &'static str| match text(sc, path) {
        "" => default,
        value => value,
    };
    vec![
        display_name.into(),
        text(sc, &["provisioner"]).into(),
        or_default(&["reclaimPolicy"], "Delete").into(),
        or_default(&["volumeBindingMode"], "Immediate").into(),
        at(sc, &["allowVolumeExpansion"])
            .as_bool()
            .unwrap_or_default()
            .into(),
        age(sc, now).into(),
    ]
}

// ---- cluster objects -----------------------------------------------------------------------

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let ready = list(node, &["status", "conditions"])
        .iter()
        .rev() // the last condition of a type wins, as upstream's map does
        .find(|c| text(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if text(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if at(node, &["spec", "unschedulable"]).as_bool() == Some(true) {
        status.push("SchedulingDisabled");
    }
    // Roles from node-role.kubernetes.io/<role> labels and the kubernetes.io/role label.
    let mut roles: Vec<&str> = at(node, &["metadata", "labels"])
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then_some(role)
            } else if key == "kubernetes.io/role" {
                value.as_str().filter(|v| !v.is_empty())
            } else {
                None
            }
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    let address = |type_: &str| {
        list(node, &["status", "addresses"])
            .iter()
            .find(|a| text(a, &["type"]) == type_)
            .map_or("<none>", |a| text(a, &["address"]))
            .to_string()
    };
    let info =
        |field: &str| or_placeholder(text(node, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        name(node).into(),
        status.join(",").into(),
        or_placeholder(&roles.join(","), "<none>").into(),
        age(node, now).into(),
        text(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    // stringData is merged into data on write; count the union in case it was stored unmerged.
    let mut keys: Vec<&String> = ["data", "stringData"]
        .iter()
        .filter_map(|field| at(secret, &[field]).as_object())
        .flat_map(|m| m.keys())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let type_ = match text(secret, &["type"]) {
        "" => "Opaque",
        t => t,
    };
    vec![
        name(secret).into(),
        type_.into(),
        i64::try_from(keys.len()).unwrap_or(i64::MAX).into(),
        age(secret, now).into(),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

/// `printEvent`, for core v1 Events and — through the field names events.k8s.io/v1 gives the
/// same data — for events.k8s.io Events.
fn event_cells(event: &Value, events_api: bool, now: Timestamp) -> Vec<Value> {
    let field = |core: &'static str, events: &'static str| if events_api { events } else { core };
    let first_seen = match timestamp(at(
        event,
        &[field("firstTimestamp", "deprecatedFirstTimestamp")],
    )) {
        Some(t) => human_duration(now.duration_since(t)),
        None => since(at(event, &["eventTime"]), now),
    };
    let mut last_seen = match timestamp(at(
        event,
        &[field("lastTimestamp", "deprecatedLastTimestamp")],
    )) {
        Some(t) => human_duration(now.duration_since(t)),
        None => first_seen.clone(),
    };
    let mut count = int(event, &[field("count", "deprecatedCount")]);
    let series = at(event, &["series"]);
    if series.is_object() {
        last_seen = since(at(series, &["lastObservedTime"]), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        // Singleton events have no count in the new API.
        count = 1;
    }
    let regarding = at(event, &[field("involvedObject", "regarding")]);
    let kind = text(regarding, &["kind"]).to_lowercase();
    let target = match text(regarding, &["name"]) {
        "" => kind,
        object_name => format!("{kind}/{object_name}"),
    };
    let source = at(event, &[field("source", "deprecatedSource")]);
    let component = first_non_empty(
        text(source, &["component"]),
        text(event, &[field("reportingComponent", "reportingController")]),
    );
    let instance = first_non_empty(text(source, &["host"]), text(event, &["reportingInstance"]));
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_seen.into(),
        text(event, &["type"]).into(),
        text(event, &["reason"]).into(),
        target.into(),
        text(regarding, &["fieldPath"]).into(),
        source.into(),
        text(event, &[field("message", "note")]).trim().into(),
        first_seen.into(),
        count.into(),
        name(event).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RESOURCES, Scope, lookup};

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().expect("valid timestamp")
    }

    /// An RFC 3339 time `seconds` before [`now`].
    fn ago(seconds: i64) -> String {
        let t = now() - SignedDuration::from_secs(seconds);
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .expect("resource in the table")
    }

    fn row(group: &str, plural: &str, object: Value) -> Vec<Value> {
        cells(info(group, plural), &object, now())
    }

    /// The cells kubectl shows without `-o wide`.
    fn narrow(group: &str, plural: &str, object: Value) -> Vec<Value> {
        let columns = columns(info(group, plural));
        row(group, plural, object)
            .into_iter()
            .zip(columns)
            .filter(|(_, c)| c.priority == 0)
            .map(|(cell, _)| cell)
            .collect()
    }

    #[test]
    fn human_duration_matches_apimachinery() {
        let cases = [
            (-3, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (76 * 3600, "3d4h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (761 * 86400, "2y31d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                human_duration(SignedDuration::from_secs(seconds)),
                expected,
                "{seconds}s"
            );
        }
        // Fractions truncate toward zero, like Go's int(d.Seconds()).
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(59_900)), "59s");
    }

    #[test]
    fn every_resource_has_as_many_cells_as_columns() {
        let sample = json!({"metadata": {"name": "x", "creationTimestamp": ago(5)}});
        for r in RESOURCES {
            let n = columns(r).len();
            assert_eq!(cells(r, &sample, now()).len(), n, "{}", r.plural);
            assert_eq!(cells(r, &json!({}), now()).len(), n, "{}", r.plural);
            assert_eq!(cells(r, &Value::Null, now()).len(), n, "{}", r.plural);
            let named = columns(r).iter().filter(|c| c.format == "name").count();
            assert_eq!(named, 1, "{} has one name column", r.plural);
        }
    }

    #[test]
    fn now_is_the_system_clock() {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let diff = super::now().as_second() - i64::try_from(unix).expect("fits");
        assert!((0..=1).contains(&diff), "{diff}");
    }

    #[test]
    fn age_is_unknown_without_creation_timestamp() {
        let cms = narrow(
            "",
            "configmaps",
            json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}),
        );
        assert_eq!(cms, [json!("c"), json!(3), json!("<unknown>")]);
        let cms = narrow(
            "",
            "configmaps",
            json!({"metadata": {"name": "c", "creationTimestamp": "0001-01-01T00:00:00Z"}}),
        );
        assert_eq!(cms[2], "<unknown>");
        let cms = narrow(
            "",
            "configmaps",
            json!({"metadata": {"name": "c", "creationTimestamp": ago(200)}}),
        );
        assert_eq!(cms[2], "3m20s");
    }

    #[test]
    fn running_pod_with_restarts() {
        let pod = json!({
            "metadata": {"name": "web-0", "creationTimestamp": ago(3600)},
            "spec": {"nodeName": "berth", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}},
                    {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        });
        assert_eq!(
            row("", "pods", pod),
            [
                json!("web-0"),
                json!("2/2"),
                json!("Running"),
                json!("2 (5m ago)"),
                json!("60m"),
                json!("10.244.0.5"),
                json!("berth"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pending_pod_without_status() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        assert_eq!(
            row("", "pods", pod),
            [
                json!("p"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    fn pod_status(status: Value) -> String {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "init"}],
                "containers": [{"name": "a"}]
            },
            "status": status,
        });
        row("", "pods", pod)[2]
            .as_str()
            .expect("status is a string")
            .to_string()
    }

    #[test]
    fn pod_status_summaries() {
        // Waiting reasons of app containers.
        assert_eq!(
            pod_status(
                json!({"phase": "Running", "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})
            ),
            "CrashLoopBackOff"
        );
        // Init containers still to run.
        assert_eq!(
            pod_status(
                json!({"phase": "Pending", "initContainerStatuses": [{"name": "init", "state": {"running": {}}}],
                "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]})
            ),
            "Init:0/1"
        );
        assert_eq!(
            pod_status(
                json!({"phase": "Pending", "initContainerStatuses": [{"name": "init", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]})
            ),
            "Init:ImagePullBackOff"
        );
        assert_eq!(
            pod_status(
                json!({"phase": "Pending", "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 3}}}]})
            ),
            "Init:ExitCode:3"
        );
        assert_eq!(
            pod_status(
                json!({"phase": "Pending", "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]})
            ),
            "Init:Signal:9"
        );
        assert_eq!(
            pod_status(
                json!({"phase": "Pending", "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]})
            ),
            "Init:Error"
        );
        // Terminated app containers.
        assert_eq!(
            pod_status(
                json!({"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]})
            ),
            "Completed"
        );
        assert_eq!(
            pod_status(
                json!({"phase": "Failed", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 2}}}]})
            ),
            "ExitCode:2"
        );
        assert_eq!(
            pod_status(json!({"phase": "Failed", "reason": "Evicted"})),
            "Evicted"
        );
        assert_eq!(
            pod_status(
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]})
            ),
            "SchedulingGated"
        );
    }

    #[test]
    fn completed_container_next_to_a_running_one() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "state": {"running": {}}},
                    {"name": "b", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                ]}
        });
        let cells = row("", "pods", pod);
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "NotReady");
    }

    #[test]
    fn terminating_pod_and_sidecar() {
        let pod = json!({
            "metadata": {"name": "p", "deletionTimestamp": ago(1)},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "a"}],
                "readinessGates": [{"conditionType": "example.com/ready"}]
            },
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "example.com/ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                    "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(90)}}}],
                "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}]}
        });
        let cells = row("", "pods", pod);
        assert_eq!(cells[1], "2/2");
        assert_eq!(cells[2], "Terminating");
        assert_eq!(cells[3], "1 (90s ago)");
        assert_eq!(cells[8], "1/1");
        let pod = json!({"metadata": {"name": "p", "deletionTimestamp": ago(1)}, "status": {"phase": "Running", "reason": "NodeLost"}});
        assert_eq!(row("", "pods", pod)[2], "Unknown");
        let pod = json!({"metadata": {"name": "p", "deletionTimestamp": ago(1)}, "status": {"phase": "Succeeded"}});
        assert_eq!(row("", "pods", pod)[2], "Succeeded");
    }

    #[test]
    fn deployments_replicasets_statefulsets() {
        let template = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}});
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(45)},
            "spec": {"replicas": 3, "template": template,
                "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}, {"key": "canary", "operator": "DoesNotExist"}]}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            row("apps", "deployments", deploy),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("45s"),
                json!("web,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web,!canary,tier in (a,b)")
            ]
        );
        let rs = json!({"metadata": {"name": "web-abc"}, "spec": {"template": template, "selector": {}}, "status": {"replicas": 1}});
        assert_eq!(
            row("apps", "replicasets", rs),
            [
                json!("web-abc"),
                json!(1),
                json!(1),
                json!(0),
                json!("<unknown>"),
                json!("web,log"),
                json!("nginx:1.27,busybox"),
                json!("<none>")
            ]
        );
        let bad = json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}});
        assert_eq!(row("apps", "replicasets", bad.clone())[7], "<error>");
        assert_eq!(row("apps", "deployments", bad)[7], "<invalid>");
        let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": template}, "status": {"readyReplicas": 1}});
        assert_eq!(
            narrow("apps", "statefulsets", sts),
            [json!("db"), json!("1/3"), json!("<unknown>")]
        );
    }

    #[test]
    fn services() {
        let svc = |spec: Value, status: Value| json!({"metadata": {"name": "s"}, "spec": spec, "status": status});
        let cells = row(
            "",
            "services",
            svc(
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"b": "2", "a": "1"},
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}),
                json!({}),
            ),
        );
        assert_eq!(
            cells,
            [
                json!("s"),
                json!("ClusterIP"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,53/UDP"),
                json!("<unknown>"),
                json!("a=1,b=2")
            ]
        );
        let cells = row(
            "",
            "services",
            svc(
                json!({"type": "NodePort", "clusterIP": "10.96.0.11", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
                json!({}),
            ),
        );
        assert_eq!(cells[2], "10.96.0.11");
        assert_eq!(cells[4], "80:30080/TCP");
        assert_eq!(cells[6], "<none>");
        let cells = row(
            "",
            "services",
            svc(
                json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "ports": [{"port": 443, "nodePort": 31443}]}),
                json!({}),
            ),
        );
        assert_eq!(cells[3], "<pending>");
        assert_eq!(cells[4], "443:31443/TCP");
        let cells = row(
            "",
            "services",
            svc(
                json!({"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]}),
                json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.9"}, {"hostname": "lb.example"}]}}),
            ),
        );
        assert_eq!(cells[3], "192.168.1.9,lb.example,1.2.3.4");
        assert_eq!(cells[4], "<none>");
        let cells = row(
            "",
            "services",
            svc(
                json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
                json!({}),
            ),
        );
        assert_eq!(
            &cells[1..5],
            [
                json!("ClusterIP"),
                json!("None"),
                json!("<none>"),
                json!("5432/TCP")
            ]
        );
        let cells = row(
            "",
            "services",
            svc(
                json!({"type": "ExternalName", "externalName": "db.example"}),
                json!({}),
            ),
        );
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[3], "db.example");
    }

    #[test]
    fn volumes_and_storage_classes() {
        let pvc = json!({
            "metadata": {"name": "data-db-0"},
            "spec": {"storageClassName": "local-path", "volumeName": "pvc-123", "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "capacity": {"storage": "1Gi"}}
        });
        assert_eq!(
            row("", "persistentvolumeclaims", pvc),
            [
                json!("data-db-0"),
                json!("Bound"),
                json!("pvc-123"),
                json!("1Gi"),
                json!("RWO,RWX"),
                json!("local-path"),
                json!("<unset>"),
                json!("<unknown>"),
                json!("<unset>")
            ]
        );
        let pending = json!({"metadata": {"name": "c", "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {"storageClassName": "new", "volumeMode": "Filesystem"}, "status": {"phase": "Pending"}});
        let cells = row("", "persistentvolumeclaims", pending);
        assert_eq!(
            &cells[1..6],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("old")
            ]
        );
        assert_eq!(cells[8], "Filesystem");

        let pv = json!({
            "metadata": {"name": "pvc-123", "deletionTimestamp": ago(1)},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOncePod", "ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                "claimRef": {"namespace": "default", "name": "data-db-0"}},
            "status": {"phase": "Bound"}
        });
        assert_eq!(
            row("", "persistentvolumes", pv),
            [
                json!("pvc-123"),
                json!("1Gi"),
                json!("ROX,RWOP"),
                json!("Delete"),
                json!("Terminating"),
                json!("default/data-db-0"),
                json!("local-path"),
                json!("<unset>"),
                json!(""),
                json!("<unknown>"),
                json!("<unset>")
            ]
        );
        assert_eq!(row("", "persistentvolumes", json!({}))[1], "0");

        let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "berth.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            row("storage.k8s.io", "storageclasses", sc),
            [
                json!("local-path (default)"),
                json!("berth.dev/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false),
                json!("<unknown>")
            ]
        );
        let sc = json!({"metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "false"}},
            "provisioner": "p", "reclaimPolicy": "Retain", "allowVolumeExpansion": true});
        assert_eq!(
            &row("storage.k8s.io", "storageclasses", sc)[..5],
            [
                json!("fast"),
                json!("p"),
                json!("Retain"),
                json!("Immediate"),
                json!(true)
            ]
        );
    }

    #[test]
    fn nodes_namespaces_and_small_kinds() {
        let node = json!({
            "metadata": {"name": "berth", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker", "node-role.kubernetes.io/": "x"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "berth"}, {"type": "InternalIP", "address": "192.168.1.2"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-berth", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0", "containerRuntimeVersion": ""}}
        });
        assert_eq!(
            row("", "nodes", node),
            [
                json!("berth"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("<unknown>"),
                json!("v1.33.0-berth"),
                json!("192.168.1.2"),
                json!("<none>"),
                json!("Debian GNU/Linux 12"),
                json!("6.1.0"),
                json!("<unknown>")
            ]
        );
        assert_eq!(
            &row("", "nodes", json!({}))[1..3],
            [json!("Unknown"), json!("<none>")]
        );
        let node = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(row("", "nodes", node)[1], "NotReady");

        assert_eq!(
            row(
                "",
                "namespaces",
                json!({"metadata": {"name": "default", "creationTimestamp": ago(86400 * 3)}, "status": {"phase": "Active"}})
            ),
            [json!("default"), json!("Active"), json!("3d")]
        );
        assert_eq!(
            row(
                "",
                "secrets",
                json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}, "stringData": {"tls.key": "x", "ca.crt": "y"}})
            ),
            [
                json!("s"),
                json!("kubernetes.io/tls"),
                json!(3),
                json!("<unknown>")
            ]
        );
        assert_eq!(row("", "secrets", json!({}))[1], "Opaque");
        assert_eq!(
            row(
                "",
                "serviceaccounts",
                json!({"metadata": {"name": "default"}, "secrets": [{"name": "t"}]})
            ),
            [json!("default"), json!(1), json!("<unknown>")]
        );
        assert_eq!(
            row(
                "coordination.k8s.io",
                "leases",
                json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "berth_1"}})
            ),
            [json!("l"), json!("berth_1"), json!("<unknown>")]
        );
        let revision = json!({"metadata": {"name": "db-5d8f", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "other", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "2", "controller": true}]}, "revision": 4});
        assert_eq!(
            row("apps", "controllerrevisions", revision),
            [
                json!("db-5d8f"),
                json!("statefulset.apps/db"),
                json!(4),
                json!("<unknown>")
            ]
        );
        assert_eq!(row("apps", "controllerrevisions", json!({}))[1], "<none>");
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}
        ]});
        assert_eq!(
            row("", "endpoints", ep)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more..."
        );
        let ep = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}, {"addresses": [{"ip": "10.0.0.9"}]}]});
        assert_eq!(row("", "endpoints", ep)[1], "[fd00::1]:8080,10.0.0.9");
        assert_eq!(row("", "endpoints", json!({}))[1], "<none>");

        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "named"}, {}, {"port": 9}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            row("discovery.k8s.io", "endpointslices", slice),
            [
                json!("web-abc"),
                json!("IPv4"),
                json!("80,named,* + 1 more..."),
                json!("10.0.0.1,10.0.0.2"),
                json!("<unknown>")
            ]
        );
        assert_eq!(
            &row("discovery.k8s.io", "endpointslices", json!({}))[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn core_and_events_api_events() {
        let core = json!({
            "metadata": {"name": "web-0.17c", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "type": "Normal", "message": "  Container image pulled \n",
            "source": {"component": "kubelet", "host": "berth"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3
        });
        assert_eq!(
            row("", "events", core),
            [
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-0"),
                json!("spec.containers{web}"),
                json!("kubelet, berth"),
                json!("Container image pulled"),
                json!("10m"),
                json!(3),
                json!("web-0.17c")
            ]
        );
        let new_style = json!({
            "metadata": {"name": "e"},
            "regarding": {"kind": "Deployment", "name": "web"},
            "reason": "ScalingReplicaSet", "type": "Normal", "note": "Scaled up",
            "reportingController": "deployment-controller", "eventTime": "2025-06-01T11:59:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2025-06-01T11:59:50.000000Z"}
        });
        assert_eq!(
            row("events.k8s.io", "events", new_style),
            [
                json!("10s"),
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller"),
                json!("Scaled up"),
                json!("60s"),
                json!(4),
                json!("e")
            ]
        );
        let bare = row("", "events", json!({"involvedObject": {"kind": "Node"}}));
        assert_eq!(bare[0], "<unknown>");
        assert_eq!(bare[3], "node");
        assert_eq!(bare[8], 1);
    }

    #[test]
    fn table_wraps_rows_with_partial_object_metadata() {
        let pods = lookup("", "v1", "pods").expect("pods");
        let objects = [
            json!({"metadata": {"name": "a", "namespace": "default", "labels": {"app": "x"}, "uid": "u1"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Succeeded"}}),
            json!({"metadata": {"name": "b", "namespace": "other"}}),
        ];
        let full = table(pods, &objects, "1014", Some("next"), now());
        assert_eq!(full["kind"], "Table");
        assert_eq!(full["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            full["metadata"],
            json!({"resourceVersion": "1014", "continue": "next"})
        );
        let definitions = full["columnDefinitions"].as_array().expect("columns");
        assert_eq!(definitions.len(), 9);
        assert_eq!(definitions[0]["name"], "Name");
        assert_eq!(definitions[0]["format"], "name");
        assert_eq!(
            definitions[5],
            json!({"name": "IP", "type": "string", "format": "", "description": docs::POD_IP, "priority": 1})
        );
        let rows = full["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["cells"][0], "a");
        assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(rows[0]["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(rows[0]["object"]["metadata"], objects[0]["metadata"]);
        assert_eq!(rows[0]["conditions"][0]["reason"], "Succeeded");
        assert!(rows[1].get("conditions").is_none());
        assert_eq!(rows[1]["object"]["metadata"]["namespace"], "other");

        let empty = table(pods, &[], "", None, now());
        assert_eq!(empty["metadata"], json!({}));
        assert_eq!(empty["rows"], json!([]));
    }

    #[test]
    fn resources_without_a_printer_get_the_default_table() {
        let widgets = ResourceInfo {
            group: "example.com",
            version: "v1",
            kind: "Widget",
            plural: "widgets",
            singular: "widget",
            scope: Scope::Namespaced,
            short_names: &[],
            categories: &[],
            verbs: &[],
            subresources: &[],
        };
        let names: Vec<&str> = columns(&widgets).iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Created At"]);
        assert_eq!(
            cells(
                &widgets,
                &json!({"metadata": {"name": "w", "creationTimestamp": "2025-06-01T11:00:00Z"}}),
                now()
            ),
            [json!("w"), json!("2025-06-01T11:00:00Z")]
        );
        assert_eq!(
            cells(&widgets, &json!({}), now())[1],
            "0001-01-01T00:00:00Z"
        );
    }
}

/// Column descriptions: the API field documentation kube-apiserver attaches (from the
/// k8s-openapi v1.33 schemas, which carry the same text as the Go SwaggerDoc()).
mod docs {
    pub const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
    pub const CREATION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
    pub const POD_IP: &str = "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
    pub const POD_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
    pub const POD_NOMINATED_NODE: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
    pub const POD_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
    pub const RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
    pub const RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
    pub const RS_READY_REPLICAS: &str =
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
    pub const RS_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
    pub const SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
    pub const SVC_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
    pub const SVC_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
    pub const SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
    pub const SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
    pub const ENDPOINTS_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
    pub const NODE_KUBELET_VERSION: &str = "Kubelet Version reported by the node.";
    pub const NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
    pub const NODE_OS_IMAGE: &str =
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
    pub const NODE_KERNEL_VERSION: &str =
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
    pub const NODE_CONTAINER_RUNTIME: &str = "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
    pub const EVENT_LAST_TIMESTAMP: &str =
        "The time at which the most recent occurrence of this event was recorded.";
    pub const EVENT_TYPE: &str =
        "Type of this event (Normal, Warning), new types could be added in the future";
    pub const EVENT_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
    pub const EVENT_INVOLVED_OBJECT: &str = "The object that this event is about.";
    pub const EVENT_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
    pub const EVENT_SOURCE: &str =
        "The component reporting this event. Should be a short machine understandable string.";
    pub const EVENT_MESSAGE: &str = "A human-readable description of the status of this operation.";
    pub const EVENT_FIRST_TIMESTAMP: &str =
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
    pub const EVENT_COUNT: &str = "The number of times this event has occurred.";
    pub const SECRET_TYPE: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
    pub const SECRET_DATA: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
    pub const SA_SECRETS: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";
    pub const PV_CAPACITY: &str = "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity";
    pub const PV_ACCESS_MODES: &str = "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes";
    pub const PV_RECLAIM_POLICY: &str = "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming";
    pub const PV_PHASE: &str = "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase";
    pub const PV_CLAIM_REF: &str = "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding";
    pub const PV_REASON: &str = "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.";
    pub const PV_VOLUME_MODE: &str = "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.";
    pub const PVC_PHASE: &str = "phase represents the current phase of PersistentVolumeClaim.";
    pub const PVC_VOLUME_NAME: &str =
        "volumeName is the binding reference to the PersistentVolume backing this claim.";
    pub const PVC_CAPACITY: &str =
        "capacity represents the actual resources of the underlying volume.";
    pub const PVC_ACCESS_MODES: &str = "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1";
    pub const PVC_VOLUME_MODE: &str = "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.";
    pub const DEPLOY_UPDATED: &str = "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
    pub const DEPLOY_AVAILABLE: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
    pub const DEPLOY_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.";
    pub const CONFIGMAP_DATA: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
    pub const LEASE_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
    pub const SC_PROVISIONER: &str = "provisioner indicates the type of the provisioner.";
    pub const SC_RECLAIM_POLICY: &str = "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.";
    pub const SC_BINDING_MODE: &str = "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.";
    pub const SC_EXPANSION: &str =
        "allowVolumeExpansion shows whether the storage class allow volume expand.";
    pub const CR_REVISION: &str =
        "Revision indicates the revision of the state represented by Data.";
    pub const SLICE_ADDRESS_TYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.";
    pub const SLICE_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.";
    pub const SLICE_ENDPOINTS: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";
}
