//! Taint-based eviction (kube-controller-manager's `taint-eviction-controller`, once the
//! NoExecuteTaintManager): a pod bound to a node with a NoExecute taint it does not tolerate
//! is deleted at once; one that tolerates every such taint is deleted when the first of its
//! tolerations' `tolerationSeconds` runs out, counted from the taint's `timeAdded`; one whose
//! tolerations set no `tolerationSeconds` stays. Before the delete the pod gets the condition
//! `DisruptionTarget` (reason DeletionByTaintManager), and a TaintManagerEviction event says
//! "Marking for deletion Pod <namespace>/<name>", as upstream's do.
//!
//! The delete is an ordinary graceful one with the pod's uid as a precondition (a pod of the
//! same name made since is never hit), never a forced one: on a node nobody hears from, the
//! pod object stays Terminating until its node agent confirms the containers are gone, which
//! is what keeps a StatefulSet from starting its identity twice.
//!
//! Shape: the shared run loop over Nodes, with a pod cache; a node's change and its pods'
//! changes wake it. [`decide`] (pure) says when each pod of the node must go; `reconcile`
//! deletes those due and asks to be run again when the next one is. Upstream counts
//! tolerationSeconds from when it first saw the pod on the tainted node, in memory; counting
//! from the taint's `timeAdded` gives the same answer for pods already there, and survives a
//! restart of the controller.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use super::{health, node_of, pods_on, until};
use crate::Error;
use crate::error::Stored;
use crate::runtime::{self, Backoff, Events};

/// The component name on events, as upstream's.
pub const COMPONENT: &str = "taint-eviction-controller";
pub const REASON: &str = "DeletionByTaintManager";
pub const MESSAGE: &str = "Taint manager: deleting due to NoExecute taint";

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Wake this much after a pod's time is up, so the pass that wakes finds it due.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// When a pod must leave its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every NoExecute taint of the node for as long as they last (or there are
    /// none).
    Never,
    /// Now: a taint it does not tolerate, or a toleration whose time is up.
    Now,
    /// When the first of its tolerations runs out.
    At(Timestamp),
}

/// Upstream's `Toleration.ToleratesTaint`: the effect matches (empty matches all), the key
/// matches (empty matches all), and the value is equal, unless the operator is `Exists`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        "Exists" => true,
        _ => false,
    }
}

/// When `pod` must leave a node with `taints`, at `now`. Each NoExecute taint is matched with
/// the first toleration of the pod that tolerates it (upstream's `GetMatchingTolerations`):
/// none means now; `tolerationSeconds` of zero or less means now; else the taint's
/// `timeAdded` (or `since`, when this controller started, for a taint without one) plus
/// the seconds. The earliest of them wins.
pub fn decide(pod: &Pod, taints: &[Taint], since: Timestamp, now: Timestamp) -> Eviction {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == health::NO_EXECUTE) {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        if seconds <= 0 {
            return Eviction::Now;
        }
        let start = taint.time_added.as_ref().map_or(since, |t| t.0);
        let at = start
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MAX);
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    match earliest {
        None => Eviction::Never,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

/// What every reconcile shares.
struct Context {
    client: Client,
    pods: Store<Pod>,
    /// When this controller started (the start of a taint that has no timeAdded).
    since: Timestamp,
    events: Events<Pod>,
}

/// Runs the controller until `stop` resolves.
pub async fn run(client: Client, stop: impl Future<Output = ()>) {
    let (nodes, node_events) = runtime::reflector::<Node>(&client);
    let (pods, pod_events) = runtime::reflector::<Pod>(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        since: Timestamp::now(),
        events: Events::new(client, COMPONENT, pods),
    });
    let triggers = vec![
        runtime::trigger_self(node_events),
        runtime::trigger_mapped(pod_events, |pod: Pod| node_of(&pod)),
    ];
    runtime::run(
        "taint-eviction",
        reconcile,
        context,
        nodes,
        triggers,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        stop,
    )
    .await;
}

/// The one reconcile: every pod of the node whose time is up is marked and deleted; again
/// when the next one's is.
async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    runtime::synced(&ctx.pods, "pod").await?;
    let name = Stored::new("Node", &node.metadata).name()?.to_string();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    if !taints.iter().any(|t| t.effect == health::NO_EXECUTE) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let mut next: Option<Timestamp> = None;
    let mut failure = None;
    for pod in pods_on(&ctx.pods, &name) {
        // Already on its way out: deleting again changes nothing.
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match decide(&pod, taints, ctx.since, now) {
            Eviction::Never => {}
            Eviction::At(at) => next = Some(next.map_or(at, |n| n.min(at))),
            Eviction::Now => {
                if let Err(e) = evict(&ctx, &pod, now).await {
                    failure.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(match next {
        Some(at) => Action::requeue(until(at, now) + DEADLINE_SLACK),
        None => Action::await_change(),
    })
}

/// Marks `pod` a disruption target and deletes it (gracefully, only that uid).
async fn evict(ctx: &Context, pod: &Pod, now: Timestamp) -> Result<(), Error> {
    let stored = Stored::new("Pod", &pod.metadata);
    let namespace = stored.namespace()?;
    let name = stored.name()?;
    let uid = stored.uid()?;
    let message = format!("Marking for deletion Pod {namespace}/{name}");
    ctx.events
        .record(pod, "Normal", "TaintManagerEviction", &message)
        .await;
    tracing::info!(pod = %format!("{namespace}/{name}"), "evicting: a NoExecute taint of its node");

    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    if !marked(pod) {
        // Conditions merge by type: only DisruptionTarget changes; the uid is a precondition,
        // as in upstream's PatchPodStatus.
        let patch = serde_json::json!({
            "metadata": {"uid": uid},
            "status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": REASON,
                "message": MESSAGE,
                "lastTransitionTime": Time(now),
            }]},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or another pod of that name now.
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The pod already carries the DisruptionTarget condition this controller writes.
fn marked(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "DisruptionTarget"
                    && c.status == "True"
                    && c.reason.as_deref() == Some(REASON)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("a valid time")
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|s| Time(at(s))),
        }
    }

    fn toleration(key: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.to_string()),
            operator: Some("Exists".into()),
            effect: (!effect.is_empty()).then(|| effect.to_string()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What the API server's DefaultTolerationSeconds gives every pod.
    fn defaults() -> Vec<Toleration> {
        vec![
            toleration(health::NOT_READY, "NoExecute", Some(300)),
            toleration(health::UNREACHABLE, "NoExecute", Some(300)),
        ]
    }

    #[test]
    fn untolerated_noexecute_taints_evict_at_once_and_others_do_not_count() {
        let since = at(0);
        let now = at(10);
        let unreachable = [taint(health::UNREACHABLE, "NoExecute", Some(5))];
        assert_eq!(
            decide(&pod(vec![]), &unreachable, since, now),
            Eviction::Now
        );
        // NoSchedule (and PreferNoSchedule) taints never evict.
        let soft = [
            taint(health::UNREACHABLE, "NoSchedule", None),
            taint("x", "PreferNoSchedule", None),
        ];
        assert_eq!(decide(&pod(vec![]), &soft, since, now), Eviction::Never);
        assert_eq!(decide(&pod(vec![]), &[], since, now), Eviction::Never);
        // A toleration of NoSchedule alone does not cover the NoExecute taint.
        let wrong_effect = pod(vec![toleration(health::UNREACHABLE, "NoSchedule", None)]);
        assert_eq!(
            decide(&wrong_effect, &unreachable, since, now),
            Eviction::Now
        );
        // Tolerating one taint but not the other still evicts.
        let both = [
            taint(health::UNREACHABLE, "NoExecute", Some(5)),
            taint("dedicated", "NoExecute", Some(5)),
        ];
        assert_eq!(decide(&pod(defaults()), &both, since, now), Eviction::Now);
    }

    #[test]
    fn toleration_seconds_count_from_the_taints_time_added() {
        let since = at(0);
        let unreachable = [taint(health::UNREACHABLE, "NoExecute", Some(100))];
        let short = pod(vec![toleration(health::UNREACHABLE, "NoExecute", Some(3))]);
        assert_eq!(
            decide(&short, &unreachable, since, at(102)),
            Eviction::At(at(103))
        );
        assert_eq!(decide(&short, &unreachable, since, at(103)), Eviction::Now);
        // The defaults: five minutes.
        assert_eq!(
            decide(&pod(defaults()), &unreachable, since, at(102)),
            Eviction::At(at(400))
        );
        // A taint without timeAdded counts from when the controller started.
        let undated = [taint(health::UNREACHABLE, "NoExecute", None)];
        assert_eq!(
            decide(&short, &undated, at(50), at(51)),
            Eviction::At(at(53))
        );
        // Zero or negative seconds: now.
        let zero = pod(vec![toleration(health::UNREACHABLE, "NoExecute", Some(0))]);
        assert_eq!(decide(&zero, &unreachable, since, at(0)), Eviction::Now);
    }

    #[test]
    fn the_first_matching_toleration_counts_and_the_earliest_deadline_wins() {
        let since = at(0);
        // Tolerations without seconds tolerate forever.
        let forever = pod(vec![toleration("", "", None)]);
        let taints = [
            taint(health::UNREACHABLE, "NoExecute", Some(0)),
            taint(health::NOT_READY, "NoExecute", Some(0)),
        ];
        assert_eq!(decide(&forever, &taints, since, at(1000)), Eviction::Never);
        // The first toleration that matches is the one used, as upstream's.
        let first_wins = pod(vec![
            toleration(health::UNREACHABLE, "NoExecute", None),
            toleration(health::UNREACHABLE, "NoExecute", Some(1)),
            toleration(health::NOT_READY, "", Some(60)),
        ]);
        assert_eq!(
            decide(&first_wins, &taints, since, at(10)),
            Eviction::At(at(60))
        );
        // Each taint from its own timeAdded; the earliest end wins.
        let staggered = [
            taint(health::UNREACHABLE, "NoExecute", Some(0)),
            taint(health::NOT_READY, "NoExecute", Some(50)),
        ];
        let timed = pod(vec![
            toleration(health::UNREACHABLE, "NoExecute", Some(100)),
            toleration(health::NOT_READY, "NoExecute", Some(20)),
        ]);
        assert_eq!(
            decide(&timed, &staggered, since, at(10)),
            Eviction::At(at(70))
        );
    }

    #[test]
    fn tolerations_match_as_upstreams() {
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let equal = |value: &str, op: Option<&str>| Toleration {
            key: Some("k".into()),
            operator: op.map(str::to_string),
            value: Some(value.into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: None,
        };
        assert!(tolerates(&equal("v", None), &t));
        assert!(tolerates(&equal("v", Some("Equal")), &t));
        assert!(!tolerates(&equal("w", Some("Equal")), &t));
        assert!(tolerates(&equal("w", Some("Exists")), &t));
        assert!(!tolerates(&equal("v", Some("Lt")), &t));
        assert!(tolerates(&toleration("", "", None), &t));
        assert!(!tolerates(&toleration("other", "", None), &t));
    }

    #[test]
    fn a_marked_pod_is_not_marked_twice() {
        use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
        let mut p = pod(vec![]);
        assert!(!marked(&p));
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(REASON.into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(marked(&p));
    }
}
