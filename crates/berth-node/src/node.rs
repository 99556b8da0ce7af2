//! This machine as a Node object: what it has (capacity, allocatable, nodeInfo, addresses),
//! registering it, and keeping it alive — a Lease in `kube-node-lease` renewed every 10 s, and
//! the Node's status computed every 10 s and posted when it differs from the server's (someone
//! else, the node lifecycle controller say, wrote over it) or at least every 5 minutes, as
//! kubelet does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::Error;

/// kubelet's defaults: renew the Lease every 10 s, declare it valid for 40 s.
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// kubelet's nodeStatusUpdateFrequency: how often the status is computed and compared with
/// the Node's.
pub const STATUS_UPDATE_INTERVAL: Duration = Duration::from_secs(10);
/// kubelet's nodeStatusReportFrequency: how often the status (conditions' heartbeat) is posted
/// when nothing changed; the Lease is the node's heartbeat.
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// kubelet's default `--max-pods`.
pub const DEFAULT_MAX_PODS: i64 = 110;

/// What the node reports about itself; read once at start from the machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
    pub max_pods: i64,
    pub hostname: String,
    pub address: IpAddr,
    pub kubelet_port: i32,
    pub info: NodeSystemInfo,
}

impl Machine {
    /// Reads this machine: CPUs, memory from /proc/meminfo, disk under `data_dir`, and the
    /// identity files kubelet reports (machine-id, boot_id, os-release, kernel release).
    pub fn probe(data_dir: &Path, address: IpAddr, kubelet_port: u16) -> Machine {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| meminfo_total_bytes(&text))
            .unwrap_or(0);
        let ephemeral_storage_bytes = rustix::fs::statvfs(data_dir)
            .map(|s| (s.f_blocks.saturating_mul(s.f_frsize)) as i64)
            .unwrap_or(0);
        let uname = rustix::system::uname();
        let hostname = uname.nodename().to_string_lossy().into_owned();
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| os_release_pretty_name(&text))
            .unwrap_or_else(|| "Linux".to_string());
        let info = NodeSystemInfo {
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: uname.release().to_string_lossy().into_owned(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: read("/etc/machine-id"),
            operating_system: "linux".to_string(),
            os_image,
            system_uuid: read("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        };
        Machine {
            cpus,
            memory_bytes,
            ephemeral_storage_bytes,
            max_pods: DEFAULT_MAX_PODS,
            hostname,
            address,
            kubelet_port: i32::from(kubelet_port),
            info,
        }
    }

    /// capacity (= allocatable: berth reserves nothing for itself yet).
    pub fn capacity(&self) -> BTreeMap<String, Quantity> {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpus.to_string())),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", self.memory_bytes / 1024)),
            ),
            (
                "ephemeral-storage".to_string(),
                Quantity(format!("{}Ki", self.ephemeral_storage_bytes / 1024)),
            ),
            ("pods".to_string(), Quantity(self.max_pods.to_string())),
        ])
    }
}

/// The version kubelet would report next to the API server berth serves.
pub const KUBELET_VERSION: &str = "v1.33.0";

fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn meminfo_total_bytes(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn os_release_pretty_name(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    let value = line.trim_start_matches("PRETTY_NAME=").trim_matches('"');
    Some(value.to_string())
}

/// The Node's status as this agent reports it at `now`.
pub fn node_status(machine: &Machine, now: Timestamp, previous: Option<&NodeStatus>) -> NodeStatus {
    let capacity = machine.capacity();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        // lastTransitionTime moves only when the status does.
        let transition = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(transition),
        }
    };
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: machine.address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: machine.hostname.clone(),
            },
        ]),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: machine.kubelet_port,
            }),
        }),
        node_info: Some(machine.info.clone()),
        ..Default::default()
    }
}

/// Creates the Node if it does not exist (with the labels kubelet sets), then posts its status.
pub async fn register(client: &Client, name: &str, machine: &Machine) -> Result<Node, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let existing = api
        .get_opt(name)
        .await
        .map_err(Error::api("reading node"))?;
    if existing.is_none() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/hostname".to_string(), name.to_string()),
                    ("kubernetes.io/os".to_string(), "linux".to_string()),
                    (
                        "kubernetes.io/arch".to_string(),
                        machine.info.architecture.clone(),
                    ),
                    (
                        "node-role.kubernetes.io/control-plane".to_string(),
                        String::new(),
                    ),
                ])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: None,
        };
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => tracing::info!(node = name, "registered the node"),
            // Another agent instance raced us; the status post below still applies.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => return Err(Error::api("registering node")(e)),
        }
    }
    post_status(
        client,
        name,
        machine,
        existing.as_ref().and_then(|n| n.status.as_ref()),
    )
    .await
}

/// Posts the Node's status (merge patch of the status subresource).
pub async fn post_status(
    client: &Client,
    name: &str,
    machine: &Machine,
    previous: Option<&NodeStatus>,
) -> Result<Node, Error> {
    let status = node_status(machine, Timestamp::now(), previous);
    patch_status(client, name, &status).await
}

async fn patch_status(client: &Client, name: &str, status: &NodeStatus) -> Result<Node, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::api("posting node status"))
}

/// Whether `desired` says something the server's `current` status does not, heartbeat times
/// aside (they move at every computation).
pub fn status_changed(current: Option<&NodeStatus>, desired: &NodeStatus) -> bool {
    let without_heartbeats = |status: Option<&NodeStatus>| {
        let mut value = status
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_default();
        if let Some(conditions) = value
            .get_mut("conditions")
            .and_then(serde_json::Value::as_array_mut)
        {
            for condition in conditions.iter_mut().filter_map(|c| c.as_object_mut()) {
                condition.remove("lastHeartbeatTime");
            }
        }
        value
    };
    crate::status::differs(
        &without_heartbeats(current),
        &without_heartbeats(Some(desired)),
    )
}

/// One of kubelet's node status updates: reads the Node, computes its status, and posts it
/// when it differs from the server's or when `report_due`. Returns whether it posted.
pub async fn update_status(
    client: &Client,
    name: &str,
    machine: &Machine,
    report_due: bool,
) -> Result<bool, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api.get(name).await.map_err(Error::api("reading node"))?;
    let desired = node_status(machine, Timestamp::now(), node.status.as_ref());
    if !report_due && !status_changed(node.status.as_ref(), &desired) {
        return Ok(false);
    }
    patch_status(client, name, &desired).await?;
    Ok(true)
}

/// Creates or renews the node's Lease in `kube-node-lease`.
pub async fn renew_lease(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(Timestamp::now());
    match api
        .get_opt(name)
        .await
        .map_err(Error::api("reading lease"))?
    {
        Some(_) => {
            let patch = serde_json::json!({
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}
            });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("renewing lease"))?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some("kube-node-lease".to_string()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.to_string()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(e) => return Err(Error::api("creating lease")(e)),
            }
        }
    }
    Ok(())
}

/// Keeps the node alive until `stop` resolves: Lease renewals every 10 s, and every 10 s a
/// status update that posts when the server's status differs or 5 minutes have passed since
/// the last post. Failures are logged and retried at the next tick; the node goes NotReady
/// only in the eyes of a node controller that sees the Lease expire.
pub async fn heartbeat(client: Client, name: String, machine: Machine) {
    let mut lease_tick = tokio::time::interval(LEASE_RENEW_INTERVAL);
    let mut status_tick = tokio::time::interval(STATUS_UPDATE_INTERVAL);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Both intervals fire at once; registration just posted the status.
    status_tick.tick().await;
    let mut reported = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = renew_lease(&client, &name).await {
                    tracing::warn!(error = %e, "cannot renew the node lease");
                }
            }
            _ = status_tick.tick() => {
                let due = reported.elapsed() >= STATUS_REPORT_INTERVAL;
                match update_status(&client, &name, &machine, due).await {
                    Ok(true) => reported = tokio::time::Instant::now(),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot update the node status"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 10 * 1024 * 1024 * 1024,
            max_pods: 110,
            hostname: "box".into(),
            address: "127.0.0.1".parse().unwrap(),
            kubelet_port: 10250,
            info: NodeSystemInfo::default(),
        }
    }

    #[test]
    fn meminfo_and_os_release_parse() {
        assert_eq!(
            meminfo_total_bytes("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
        assert_eq!(meminfo_total_bytes("garbage"), None);
        assert_eq!(
            os_release_pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn status_changes_only_when_the_servers_differs_beyond_heartbeats() {
        let posted = node_status(&machine(), Timestamp::from_second(1000).unwrap(), None);
        // Computed again later: only the heartbeats moved.
        let later = node_status(
            &machine(),
            Timestamp::from_second(1010).unwrap(),
            Some(&posted),
        );
        assert!(!status_changed(Some(&posted), &later));
        // The node lifecycle controller set Ready=Unknown: the next computation differs.
        let mut unknown = posted.clone();
        for c in unknown.conditions.iter_mut().flatten() {
            if c.type_ == "Ready" {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
            }
        }
        let later = node_status(
            &machine(),
            Timestamp::from_second(1020).unwrap(),
            Some(&unknown),
        );
        assert!(status_changed(Some(&unknown), &later));
        // Capacity changed, or no status at all.
        let mut smaller = posted.clone();
        smaller
            .capacity
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("1".into()));
        assert!(status_changed(Some(&smaller), &posted));
        assert!(status_changed(None, &posted));
    }

    #[test]
    fn status_reports_capacity_and_keeps_transition_times() {
        let first = node_status(&machine(), Timestamp::from_second(1000).unwrap(), None);
        let capacity = first.capacity.clone().unwrap();
        assert_eq!(capacity["cpu"].0, "2");
        assert_eq!(capacity["memory"].0, "4194304Ki");
        assert_eq!(capacity["pods"].0, "110");
        assert_eq!(first.allocatable, first.capacity);
        let later = node_status(
            &machine(),
            Timestamp::from_second(2000).unwrap(),
            Some(&first),
        );
        let ready = |s: &NodeStatus| {
            s.conditions
                .clone()
                .unwrap()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
        };
        assert_eq!(ready(&later).status, "True");
        assert_eq!(
            ready(&later).last_transition_time,
            ready(&first).last_transition_time
        );
        assert_ne!(
            ready(&later).last_heartbeat_time,
            ready(&first).last_heartbeat_time
        );
        assert_eq!(
            later
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
    }
}
