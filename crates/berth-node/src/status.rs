//! A pod's status as kubelet reports it, computed from what the agent knows about each
//! container — pure functions, so every rule (phase, conditions, transition times) is tested
//! without a runtime.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// How a container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Termination {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`, `ContainerStatusUnknown`.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub container_id: Option<String>,
}

/// What one container is doing now.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
        container_id: String,
    },
    Terminated(Termination),
}

/// Everything the status says about one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: Option<String>,
    pub restart_count: i32,
    pub state: State,
    pub last_terminated: Option<Termination>,
    pub ready: bool,
    pub started: bool,
}

impl ContainerView {
    /// A container nothing has happened to yet.
    pub fn new(name: &str, image: &str, reason: &str) -> ContainerView {
        ContainerView {
            name: name.to_string(),
            image: image.to_string(),
            image_id: None,
            restart_count: 0,
            state: State::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_terminated: None,
            ready: false,
            started: false,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }
}

/// kubelet's phase rules (pkg/kubelet's getPhase): init containers gate everything; any
/// container waiting for its first start keeps the pod Pending; a crash-looping container
/// counts as stopped, which keeps an Always/OnFailure pod Running.
pub fn phase(restart_policy: &str, init: &[ContainerView], app: &[ContainerView]) -> &'static str {
    let init_done = init.iter().all(ContainerView::succeeded);
    if !init_done {
        let init_failed = init.iter().any(|c| {
            matches!(&c.state, State::Terminated(t) if t.exit_code != 0)
                || (matches!(c.state, State::Waiting { .. }) && c.last_terminated.is_some())
        });
        if init_failed && restart_policy == "Never" {
            return "Failed";
        }
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in app {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last_terminated.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// The inputs of [`pod_status`] besides the containers.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    pub start_time: Option<Timestamp>,
    pub sandbox_ready: bool,
    pub now: Timestamp,
    /// A phase decided outside the container rules (a pod that must fail as a whole).
    pub phase_override: Option<&'static str>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The whole status kubelet would post.
pub fn pod_status(facts: &PodFacts, init: &[ContainerView], app: &[ContainerView]) -> PodStatus {
    let restart_policy = facts
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let phase = facts
        .phase_override
        .unwrap_or_else(|| phase(restart_policy, init, app));
    let previous = facts
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let transition = previous
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(facts.now));
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: if ok { None } else { reason.map(str::to_string) },
            message: if ok { None } else { message },
            last_transition_time: Some(transition),
            last_probe_time: None,
            observed_generation: None,
        }
    };
    let not_done: Vec<&str> = init
        .iter()
        .filter(|c| !c.succeeded())
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = app
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let terminal_success = phase == "Succeeded";
    let initialized = if terminal_success {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            not_done.is_empty(),
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                not_done.join(" ")
            )),
        )
    };
    let (ready_reason, ready_message) = if terminal_success {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let all_ready = unready.is_empty() && !terminal_success && phase == "Running";
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            facts.sandbox_ready && !matches!(phase, "Succeeded" | "Failed"),
            None,
            None,
        ),
        initialized,
        condition(
            "Ready",
            all_ready,
            Some(ready_reason),
            ready_message.clone(),
        ),
        condition(
            "ContainersReady",
            all_ready,
            Some(ready_reason),
            ready_message,
        ),
    ];
    if let Some(scheduled) = previous.and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled")) {
        conditions.push(scheduled.clone());
    }
    let status_of = |c: &ContainerView| container_status(c);
    let pod_ip = facts.pod_ip.map(str::to_string);
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(facts.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.to_string(),
        }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: facts.start_time.map(Time),
        init_container_statuses: (!init.is_empty()).then(|| init.iter().map(status_of).collect()),
        container_statuses: Some(app.iter().map(status_of).collect()),
        qos_class: Some(qos_class(facts.pod).to_string()),
        reason: facts.reason.clone(),
        message: facts.message.clone(),
        ..Default::default()
    }
}

/// Whether posting `desired` (a status as JSON, sent as a merge patch) would change `current`
/// (the status the API server holds, as JSON): kubelet compares its status with the server's,
/// not with what it posted last, so what others wrote over it (the node lifecycle controller's
/// Ready=False, say) is put back. Objects are compared on `desired`'s keys only, as a merge
/// patch leaves the others alone; `conditions` by type, so a condition someone else owns (a
/// readiness gate's, DisruptionTarget) is no difference; any other list must be equal, as the
/// patch replaces it whole.
pub fn differs(current: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => {
            desired.iter().any(|(key, want)| match current.get(key) {
                None => !want.is_null(),
                Some(have) if key == "conditions" => conditions_differ(have, want),
                Some(have) => differs(have, want),
            })
        }
        (current, desired) => current != desired,
    }
}

fn conditions_differ(current: &serde_json::Value, desired: &serde_json::Value) -> bool {
    let (Some(current), Some(desired)) = (current.as_array(), desired.as_array()) else {
        return current != desired;
    };
    desired.iter().any(|want| {
        current
            .iter()
            .find(|have| have.get("type") == want.get("type"))
            .is_none_or(|have| have != want)
    })
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(Time),
        finished_at: t.finished_at.map(Time),
        container_id: t.container_id.clone(),
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let (state, container_id) = match &c.state {
        State::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            None,
        ),
        State::Running {
            started_at,
            container_id,
        } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..Default::default()
            },
            Some(container_id.clone()),
        ),
        State::Terminated(t) => (
            ContainerState {
                terminated: Some(terminated(t)),
                ..Default::default()
            },
            t.container_id.clone(),
        ),
    };
    let running = matches!(c.state, State::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone().unwrap_or_default(),
        container_id,
        ready: c.ready && running,
        started: Some(c.started && running),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: c.last_terminated.as_ref().map(terminated),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Guaranteed when every container has equal cpu and memory requests and limits, BestEffort
/// when none has any, Burstable otherwise.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let (mut any, mut guaranteed) = (false, true);
    for c in containers {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        for resource in ["cpu", "memory"] {
            let request = requests.and_then(|m| m.get(resource));
            let limit = limits.and_then(|m| m.get(resource));
            if request.is_some() || limit.is_some() {
                any = true;
            }
            // A limit alone defaults the request to it.
            match (request, limit) {
                (_, None) => guaranteed = false,
                (Some(req), Some(lim)) if req != lim => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn running(name: &str) -> ContainerView {
        ContainerView {
            state: State::Running {
                started_at: ts(10),
                container_id: format!("berth://{name}"),
            },
            started: true,
            ..ContainerView::new(name, "busybox", "")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerView {
        ContainerView {
            state: State::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: Some(ts(10)),
                finished_at: Some(ts(11)),
                container_id: None,
            }),
            ..ContainerView::new(name, "busybox", "")
        }
    }

    fn crash_looping(name: &str) -> ContainerView {
        let last = match exited(name, 1).state {
            State::Terminated(t) => t,
            _ => unreachable!(),
        };
        ContainerView {
            state: State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            last_terminated: Some(last),
            restart_count: 3,
            ..ContainerView::new(name, "busybox", "")
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let creating = ContainerView::new("a", "busybox", "ContainerCreating");
        assert_eq!(
            phase("Always", &[], std::slice::from_ref(&creating)),
            "Pending"
        );
        assert_eq!(phase("Always", &[], &[running("a")]), "Running");
        assert_eq!(phase("Never", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(phase("Never", &[], &[exited("a", 2)]), "Failed");
        assert_eq!(phase("OnFailure", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(phase("Always", &[], &[exited("a", 0)]), "Running");
        assert_eq!(phase("Always", &[], &[crash_looping("a")]), "Running");
        assert_eq!(
            phase("Never", &[], &[running("a"), exited("b", 1)]),
            "Running"
        );
        // Init containers gate the pod.
        assert_eq!(
            phase("Always", &[running("i")], std::slice::from_ref(&creating)),
            "Pending"
        );
        assert_eq!(
            phase("Never", &[exited("i", 1)], std::slice::from_ref(&creating)),
            "Failed"
        );
        assert_eq!(
            phase("Always", &[crash_looping("i")], &[creating]),
            "Pending"
        );
        assert_eq!(
            phase("Always", &[exited("i", 0)], &[running("a")]),
            "Running"
        );
    }

    fn facts(pod: &Pod) -> PodFacts<'_> {
        PodFacts {
            pod,
            host_ip: "127.0.0.1",
            pod_ip: Some("127.0.0.1"),
            start_time: Some(ts(5)),
            sandbox_ready: true,
            now: ts(20),
            phase_override: None,
            reason: None,
            message: None,
        }
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn ready_conditions_name_the_unready_containers_and_keep_transition_times() {
        let pod = Pod::default();
        let mut a = running("a");
        a.ready = true;
        let b = running("b");
        let status = pod_status(&facts(&pod), &[], &[a.clone(), b.clone()]);
        let ready = condition(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(condition(&status, "Initialized").status, "True");
        let statuses = status.container_statuses.clone().unwrap();
        assert!(statuses[0].ready && !statuses[1].ready);
        assert_eq!(statuses[0].container_id.as_deref(), Some("berth://a"));

        // Later, everything ready: Ready flips and gets a new transition time; Initialized
        // keeps its old one.
        let later_pod = Pod {
            status: Some(status),
            ..Default::default()
        };
        let mut f = facts(&later_pod);
        f.now = ts(99);
        let mut b = b;
        b.ready = true;
        let status = pod_status(&f, &[], &[a, b]);
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(
            condition(&status, "Ready").last_transition_time,
            Some(Time(ts(99)))
        );
        assert_eq!(
            condition(&status, "Initialized").last_transition_time,
            Some(Time(ts(20)))
        );
    }

    #[test]
    fn differs_only_where_a_merge_patch_would_change_the_server_status() {
        use serde_json::json;
        let desired = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "a", "ready": true}],
        });
        // Equal, or with more than the agent says (fields and conditions others own).
        assert!(!differs(&desired, &desired));
        let mut current = desired.clone();
        current["nominatedNodeName"] = json!("x");
        current["conditions"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"type": "DisruptionTarget", "status": "True"}));
        assert!(!differs(&current, &desired));
        // Someone else's Ready=False, a container's readiness, a missing field, no status.
        let mut other = current.clone();
        other["conditions"][1]["status"] = json!("False");
        assert!(differs(&other, &desired));
        let mut other = current.clone();
        other["containerStatuses"][0]["ready"] = json!(false);
        assert!(differs(&other, &desired));
        let mut other = current.clone();
        other["containerStatuses"][0]["restartCount"] = json!(0);
        assert!(differs(&other, &desired), "a list is replaced whole");
        let mut other = current.clone();
        other.as_object_mut().unwrap().remove("phase");
        assert!(differs(&other, &desired));
        let mut other = current;
        other["conditions"].as_array_mut().unwrap().remove(1);
        assert!(differs(&other, &desired));
        assert!(differs(&serde_json::Value::Null, &desired));
    }

    #[test]
    fn terminated_and_last_state_are_reported() {
        let pod = Pod::default();
        let status = pod_status(&facts(&pod), &[exited("init", 0)], &[crash_looping("a")]);
        let a = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(a.restart_count, 3);
        assert_eq!(
            a.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            a.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        let init = &status.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            init.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("Completed")
        );
        assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
    }
}
