//! The node lifecycle decisions, without I/O or a clock of their own (the time is passed in):
//! when a Node last showed life, which conditions the controller writes once it has been
//! silent for longer than its grace period, which taints stand for its conditions, whether the
//! cluster is so broken that evicting would do more harm than good, and which pods lose their
//! readiness. Upstream's `tryUpdateNodeHealth`, `doNoScheduleTaintingPass`,
//! `processTaintBaseEviction`, `ComputeZoneState` and `MarkPodsNotReady`, as level-triggered
//! functions of the objects.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The taint of a node whose Ready condition is False (the kubelet says it is not ready).
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (nothing heard from it).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node (`spec.unschedulable`).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// What the controller writes into the conditions of a node it stopped hearing from.
pub const STATUS_UNKNOWN_REASON: &str = "NodeStatusUnknown";
pub const STATUS_UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// … and into conditions the kubelet never posted at all.
pub const NEVER_UPDATED_REASON: &str = "NodeStatusNeverUpdated";
pub const NEVER_UPDATED_MESSAGE: &str = "Kubelet never posted node status.";

/// The conditions the controller turns Unknown (NetworkUnavailable is the network's own).
const MONITORED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Condition (type, status) → the NoSchedule taint that stands for it (upstream's
/// `nodeConditionToTaintKeyStatusMap`, which the scheduler relies on).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

/// A zone is partially disrupted when more than two of its nodes, and at least this share of
/// them, are not Ready (upstream's `--unhealthy-zone-threshold`).
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// A partially disrupted zone of at most this many nodes gets no new NoExecute taints at all
/// (upstream's `--large-cluster-size-threshold`; larger ones are only slowed down there).
const LARGE_CLUSTER_THRESHOLD: usize = 50;

/// How long a node may be silent (upstream's `--node-monitor-grace-period` and
/// `--node-startup-grace-period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// For a node that has posted its Ready condition.
    pub monitor: Duration,
    /// For a node that never has (measured from its creation).
    pub startup: Duration,
}

impl Default for Grace {
    fn default() -> Grace {
        Grace {
            monitor: Duration::from_secs(40),
            startup: Duration::from_secs(60),
        }
    }
}

/// The node's condition of type `type_`, if it has one.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of the node's Ready condition ("True", "False", "Unknown"), if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// When the node last showed life: the newer of its Lease's renewTime and its Ready
/// condition's lastHeartbeatTime (its creation, if it never posted Ready), but never before
/// `since` — when this controller started watching. Upstream measures from when it *observed*
/// a heartbeat, so a controller that has just started gives every node a full grace period;
/// the floor keeps that, so a berth restarted after a long stop does not find its own node
/// silent and evict its pods before the node agent had a chance to renew its Lease.
pub fn last_heartbeat(node: &Node, lease: Option<&Lease>, since: Timestamp) -> Timestamp {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let posted = match condition(node, "Ready") {
        Some(ready) => ready.last_heartbeat_time.as_ref().map(|t| t.0),
        None => node.metadata.creation_timestamp.as_ref().map(|t| t.0),
    };
    [renewed, posted, Some(since)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(since)
}

/// When the node counts as silent if nothing more is heard: its last heartbeat plus the
/// grace period (the startup one while it has never posted Ready).
pub fn deadline(node: &Node, lease: Option<&Lease>, since: Timestamp, grace: Grace) -> Timestamp {
    let period = if condition(node, "Ready").is_some() {
        grace.monitor
    } else {
        grace.startup
    };
    let period = SignedDuration::try_from(period).unwrap_or(SignedDuration::MAX);
    last_heartbeat(node, lease, since)
        .checked_add(period)
        .unwrap_or(Timestamp::MAX)
}

/// The node's conditions as the controller must write them at `now`, or `None` when they
/// stay as they are. Only a node silent past its `deadline` changes: each monitored
/// condition becomes Unknown (reason NodeStatusUnknown, its transition time now, its
/// heartbeat kept); one the kubelet never posted is added as Unknown with reason
/// NodeStatusNeverUpdated and the node's creation as its heartbeat. A condition already
/// Unknown is left alone, so writing twice changes nothing.
pub fn silent_conditions(
    node: &Node,
    deadline: Timestamp,
    now: Timestamp,
) -> Option<Vec<NodeCondition>> {
    if now <= deadline {
        return None;
    }
    let current: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions = current.clone();
    for type_ in MONITORED {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".to_string();
                c.reason = Some(STATUS_UNKNOWN_REASON.to_string());
                c.message = Some(STATUS_UNKNOWN_MESSAGE.to_string());
                c.last_transition_time = Some(Time(now));
            }
            None => conditions.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".to_string(),
                reason: Some(NEVER_UPDATED_REASON.to_string()),
                message: Some(NEVER_UPDATED_MESSAGE.to_string()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    (conditions != current).then_some(conditions)
}

/// How broken a zone is (upstream's zone states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    /// More than two nodes, and at least 55 % of them, are not Ready.
    PartialDisruption,
    /// No node is Ready.
    FullDisruption,
}

/// The zones' states, from every node's Ready status. Evicting pods from nodes that merely
/// lost touch with the control plane would empty a cluster whose own network is what broke,
/// so, as upstream does: when every zone is fully disrupted no node gets a NoExecute taint
/// (and those there are removed); a small partially disrupted zone gets no new ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disruption {
    /// zone → (state, number of nodes).
    zones: BTreeMap<String, (ZoneState, usize)>,
}

impl Disruption {
    /// From each node's zone and whether its Ready condition is True.
    pub fn of<'a>(nodes: impl IntoIterator<Item = (String, bool)> + 'a) -> Disruption {
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (zone, ready) in nodes {
            let (ready_count, not_ready) = counts.entry(zone).or_default();
            if ready {
                *ready_count += 1;
            } else {
                *not_ready += 1;
            }
        }
        let zones = counts
            .into_iter()
            .map(|(zone, (ready, not_ready))| {
                #[allow(clippy::cast_precision_loss)] // Node counts are far below 2^52.
                let share = not_ready as f64 / (ready + not_ready) as f64;
                let state = if ready == 0 && not_ready > 0 {
                    ZoneState::FullDisruption
                } else if not_ready > 2 && share >= UNHEALTHY_ZONE_THRESHOLD {
                    ZoneState::PartialDisruption
                } else {
                    ZoneState::Normal
                };
                (zone, (state, ready + not_ready))
            })
            .collect();
        Disruption { zones }
    }

    /// Every zone is fully disrupted (upstream's "master disruption mode").
    pub fn everything_down(&self) -> bool {
        !self.zones.is_empty()
            && self
                .zones
                .values()
                .all(|(s, _)| *s == ZoneState::FullDisruption)
    }

    /// A node of `zone` may get a NoExecute taint it does not have yet.
    pub fn may_taint(&self, zone: &str) -> bool {
        if self.everything_down() {
            return false;
        }
        !matches!(
            self.zones.get(zone),
            Some((ZoneState::PartialDisruption, size)) if *size <= LARGE_CLUSTER_THRESHOLD
        )
    }

    pub fn state(&self, zone: &str) -> Option<ZoneState> {
        self.zones.get(zone).map(|(s, _)| *s)
    }
}

/// The node's zone, as upstream's `GetZoneKey` makes it: region and zone labels (the
/// topology ones, else the deprecated failure-domain ones); empty when it has neither.
pub fn zone(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let label = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| labels.and_then(|l| l.get(*n)))
            .cloned()
            .unwrap_or_default()
    };
    let region = label([
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    ]);
    let zone = label([
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    ]);
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\0:{zone}")
    }
}

/// The taints this controller owns: the NoSchedule ones standing for conditions and cordon,
/// and the NoExecute not-ready and unreachable ones.
fn managed(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        NO_SCHEDULE => {
            taint.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == taint.key)
        }
        NO_EXECUTE => taint.key == NOT_READY || taint.key == UNREACHABLE,
        _ => false,
    }
}

/// The node's taints as they should be at `now`, or `None` when they are right:
///
/// - NoSchedule, always: `not-ready` for Ready=False, `unreachable` for Ready=Unknown, the
///   pressure and network-unavailable taints for those conditions True, `unschedulable` for
///   a cordoned node;
/// - NoExecute: `not-ready` for Ready=False, `unreachable` for Ready=Unknown (never both),
///   with `timeAdded` when it was added, which is what tolerationSeconds count from; none
///   while the Ready condition is True or missing, or when every zone is down; in a zone
///   that may not get new ones, a node keeps (or swaps) the one it has but gets none.
///
/// Every other taint stays as it is, in its place; taints that stay keep their timeAdded.
pub fn taints(node: &Node, disruption: &Disruption, now: Timestamp) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut wanted: Vec<(&str, &str)> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, status, _)| condition(node, type_).is_some_and(|c| c.status == *status))
        .map(|(_, _, key)| (*key, NO_SCHEDULE))
        .collect();
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        wanted.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    let no_execute = match ready_status(node) {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    };
    let has_no_execute = current
        .iter()
        .any(|t| t.effect == NO_EXECUTE && (t.key == NOT_READY || t.key == UNREACHABLE));
    if let Some(key) = no_execute
        && !disruption.everything_down()
        && (has_no_execute || disruption.may_taint(&zone(node)))
    {
        wanted.push((key, NO_EXECUTE));
    }

    let is_wanted = |t: &Taint| wanted.contains(&(t.key.as_str(), t.effect.as_str()));
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || is_wanted(t))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !taints.iter().any(|t| t.key == key && t.effect == effect) {
            taints.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                value: None,
                time_added: (effect == NO_EXECUTE).then_some(Time(now)),
            });
        }
    }
    (taints != current).then_some(taints)
}

/// Whether `pod` must lose its readiness because it is on a node whose Ready condition is
/// not True (upstream's `MarkPodsNotReady`, done for every pod of such a node): its Ready
/// condition is there and not False yet. Endpoints then stop sending it traffic.
pub fn marks_not_ready(node: &Node, pod: &Pod) -> bool {
    let Some(ready) = ready_status(node) else {
        return false;
    };
    let on_node =
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == node.metadata.name.as_deref();
    let pod_ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    on_node && ready != "True" && pod_ready.is_some_and(|s| s != "False")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("a valid time")
    }

    fn cond(type_: &str, status: &str, heartbeat: i64) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some("KubeletSaysSo".into()),
            message: Some("kubelet message".into()),
            last_heartbeat_time: Some(Time(at(heartbeat))),
            last_transition_time: Some(Time(at(0))),
        }
    }

    fn node(name: &str, conditions: Vec<NodeCondition>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(at(-1000))),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(conditions),
                ..Default::default()
            }),
        }
    }

    fn lease(renewed: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(at(renewed))),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|s| Time(at(s))),
        }
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    const GRACE: Grace = Grace {
        monitor: Duration::from_secs(40),
        startup: Duration::from_secs(60),
    };

    #[test]
    fn the_heartbeat_is_the_newer_of_lease_and_status_but_never_before_the_controller_started() {
        let n = node("a", vec![cond("Ready", "True", 100)]);
        let since = at(0);
        assert_eq!(last_heartbeat(&n, None, since), at(100));
        assert_eq!(last_heartbeat(&n, Some(&lease(130)), since), at(130));
        assert_eq!(last_heartbeat(&n, Some(&lease(50)), since), at(100));
        // A controller that started later measures from its start.
        assert_eq!(last_heartbeat(&n, Some(&lease(130)), at(500)), at(500));
        assert_eq!(deadline(&n, Some(&lease(130)), since, GRACE), at(170));
        // Never posted Ready: from its creation, with the startup grace period.
        let fresh = node("b", vec![]);
        assert_eq!(last_heartbeat(&fresh, None, at(-5000)), at(-1000));
        assert_eq!(deadline(&fresh, None, at(-5000), GRACE), at(-940));
        // …unless its Lease is renewed.
        assert_eq!(deadline(&fresh, Some(&lease(10)), at(-5000), GRACE), at(70));
    }

    #[test]
    fn a_silent_node_goes_unknown_once_and_conditions_never_posted_are_added() {
        let n = node(
            "a",
            vec![
                cond("Ready", "True", 100),
                cond("MemoryPressure", "False", 100),
                cond("NetworkUnavailable", "False", 100),
            ],
        );
        let deadline = at(140);
        assert_eq!(silent_conditions(&n, deadline, at(140)), None);
        let written = silent_conditions(&n, deadline, at(141)).expect("it went silent");
        let by_type = |t: &str| {
            written
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .expect("present")
        };
        let ready = by_type("Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(100))));
        assert_eq!(ready.last_transition_time, Some(Time(at(141))));
        assert_eq!(by_type("MemoryPressure").status, "Unknown");
        // The network's own condition is not the kubelet's to vouch for.
        assert_eq!(by_type("NetworkUnavailable").status, "False");
        let disk = by_type("DiskPressure");
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("Unknown", Some("NodeStatusNeverUpdated"))
        );
        assert_eq!(disk.last_heartbeat_time, Some(Time(at(-1000))));
        assert_eq!(written.len(), 5);

        // Written once: the next pass changes nothing, transition times included.
        let mut again = n.clone();
        again.status.as_mut().expect("status").conditions = Some(written);
        assert_eq!(silent_conditions(&again, deadline, at(200)), None);
    }

    #[test]
    fn zone_states_follow_upstreams_thresholds() {
        let d = Disruption::of([("".to_string(), true), ("".to_string(), false)]);
        assert_eq!(d.state(""), Some(ZoneState::Normal));
        assert!(d.may_taint("") && !d.everything_down());

        // Three of four not ready: partial; a small zone gets no new NoExecute taints.
        let d = Disruption::of(
            [true, false, false, false]
                .into_iter()
                .map(|r| ("z".to_string(), r)),
        );
        assert_eq!(d.state("z"), Some(ZoneState::PartialDisruption));
        assert!(!d.may_taint("z"));
        // Two of two not ready in one zone while another is fine: full there, yet tainted.
        let d = Disruption::of([
            ("a".to_string(), false),
            ("a".to_string(), false),
            ("b".to_string(), true),
        ]);
        assert_eq!(d.state("a"), Some(ZoneState::FullDisruption));
        assert!(d.may_taint("a") && !d.everything_down());
        // Nothing Ready anywhere: nothing is evicted.
        let d = Disruption::of([("a".to_string(), false), ("b".to_string(), false)]);
        assert!(d.everything_down() && !d.may_taint("a"));
    }

    #[test]
    fn zones_come_from_region_and_zone_labels() {
        let mut n = node("a", vec![]);
        assert_eq!(zone(&n), "");
        n.metadata.labels = Some(
            [
                ("topology.kubernetes.io/region".to_string(), "r".to_string()),
                (
                    "failure-domain.beta.kubernetes.io/zone".to_string(),
                    "z".to_string(),
                ),
            ]
            .into(),
        );
        assert_eq!(zone(&n), "r:\0:z");
    }

    #[test]
    fn an_unreachable_node_gets_both_taints_and_loses_them_when_ready_again() {
        let normal = Disruption::of([("".to_string(), true), ("".to_string(), false)]);
        let mut n = node("a", vec![cond("Ready", "Unknown", 100)]);
        n.spec.as_mut().expect("spec").taints = Some(vec![taint("dedicated", NO_SCHEDULE, None)]);
        let tainted = taints(&n, &normal, at(200)).expect("tainted");
        assert_eq!(
            keys(&tainted),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(tainted[1].time_added, None);
        assert_eq!(tainted[2].time_added, Some(Time(at(200))));

        // Level-triggered: once there, they stay as they are (timeAdded too).
        n.spec.as_mut().expect("spec").taints = Some(tainted);
        assert_eq!(taints(&n, &normal, at(300)), None);

        // Ready=False swaps unreachable for not-ready, with a new timeAdded.
        n.status.as_mut().expect("status").conditions = Some(vec![cond("Ready", "False", 300)]);
        let swapped = taints(&n, &normal, at(310)).expect("swapped");
        assert_eq!(
            keys(&swapped),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        assert_eq!(swapped[2].time_added, Some(Time(at(310))));

        // Ready again: only the user's taint is left.
        n.spec.as_mut().expect("spec").taints = Some(swapped);
        n.status.as_mut().expect("status").conditions = Some(vec![cond("Ready", "True", 400)]);
        assert_eq!(
            keys(&taints(&n, &normal, at(400)).expect("untainted")),
            ["dedicated:NoSchedule"]
        );
    }

    #[test]
    fn pressure_and_cordon_taints_follow_their_conditions() {
        let normal = Disruption::default();
        let mut n = node(
            "a",
            vec![
                cond("Ready", "True", 0),
                cond("MemoryPressure", "True", 0),
                cond("DiskPressure", "False", 0),
            ],
        );
        n.spec.as_mut().expect("spec").unschedulable = Some(true);
        assert_eq!(
            keys(&taints(&n, &normal, at(0)).expect("tainted")),
            [
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
        // A healthy node with no taints of ours: nothing to write.
        assert_eq!(
            taints(&node("b", vec![cond("Ready", "True", 0)]), &normal, at(0)),
            None
        );
        // No Ready condition yet: no NoExecute taint (the startup grace period runs first).
        assert_eq!(taints(&node("c", vec![]), &normal, at(0)), None);
    }

    #[test]
    fn disruption_holds_back_noexecute_but_not_noschedule() {
        let down = Disruption::of([("".to_string(), false)]);
        let mut n = node("a", vec![cond("Ready", "Unknown", 0)]);
        assert_eq!(
            keys(&taints(&n, &down, at(0)).expect("tainted")),
            ["node.kubernetes.io/unreachable:NoSchedule"]
        );
        // Entering it removes the NoExecute taint a node has.
        n.spec.as_mut().expect("spec").taints = Some(vec![
            taint(UNREACHABLE, NO_SCHEDULE, None),
            taint(UNREACHABLE, NO_EXECUTE, Some(0)),
        ]);
        assert_eq!(
            keys(&taints(&n, &down, at(5)).expect("untainted")),
            ["node.kubernetes.io/unreachable:NoSchedule"]
        );
        // A partially disrupted small zone keeps the one there is but adds none.
        let partial = Disruption::of(
            [true, false, false, false]
                .into_iter()
                .map(|r| (String::new(), r)),
        );
        assert_eq!(taints(&n, &partial, at(5)), None);
        n.spec.as_mut().expect("spec").taints = Some(vec![taint(UNREACHABLE, NO_SCHEDULE, None)]);
        assert_eq!(taints(&n, &partial, at(5)), None);
    }

    fn pod(node: &str, ready: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta::default(),
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                conditions: ready.map(|s| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pods_of_a_node_that_is_not_ready_lose_their_readiness() {
        let unknown = node("a", vec![cond("Ready", "Unknown", 0)]);
        let ready = node("a", vec![cond("Ready", "True", 0)]);
        let fresh = node("a", vec![]);
        assert!(marks_not_ready(&unknown, &pod("a", Some("True"))));
        assert!(marks_not_ready(
            &node("a", vec![cond("Ready", "False", 0)]),
            &pod("a", Some("True"))
        ));
        assert!(!marks_not_ready(&unknown, &pod("a", Some("False"))));
        assert!(!marks_not_ready(&unknown, &pod("a", None)));
        assert!(!marks_not_ready(&unknown, &pod("b", Some("True"))));
        assert!(!marks_not_ready(&ready, &pod("a", Some("True"))));
        assert!(!marks_not_ready(&fresh, &pod("a", Some("True"))));
    }
}
