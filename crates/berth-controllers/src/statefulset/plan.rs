//! The decision, without I/O: from a StatefulSet, its pods, the claims of its namespace and
//! its current and update revisions, which pods and claims to create, relabel or delete next
//! and what the status says (upstream's `updateStatefulSet`, its `processReplica` and
//! `processCondemned`, and the rolling update of `updateStatefulSetAfterInvariantEstablished`).
//!
//! The rules, in the order they apply:
//!
//! 1. Every ordinal in `[start, start + replicas)` is a replica slot; pods with other
//!    ordinals are condemned.
//! 2. Replicas in ordinal order: a failed (or succeeded) pod is deleted, and its replacement
//!    is made only once the old object is gone — there is never a second pod of one identity;
//!    a missing pod is created after its claims (never on a claim being deleted or one that a
//!    scaled-down predecessor still owns). Under OrderedReady (monotonic) the pass stops at
//!    the first create, and at the first pod that is terminating, not Running and Ready, or
//!    not yet available for minReadySeconds: so ordinal k+1 is never created while k is not
//!    Ready. Parallel goes on through every slot.
//! 3. Condemned pods from the highest ordinal: under OrderedReady one at a time, only after
//!    every replica is healthy and while the pod itself is Running and Ready (unless it is the
//!    first unhealthy pod, which would otherwise block forever). Their claims first get the
//!    owners the retention policy asks for.
//! 4. OnDelete stops here. RollingUpdate deletes pods not at the update revision from the
//!    highest ordinal down to `partition`, at most `maxUnavailable` unhealthy replicas at a
//!    time; the replacement is created at the update revision by step 2.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::identity::{self, pod_revision};
use super::retention::{self, Policy};
use crate::deployment::util::scaled_value;
use crate::{Error, pods};

/// One revision of the set: its name and the template it restores.
#[derive(Debug, Clone, Copy)]
pub struct Revision<'a> {
    pub name: &'a str,
    pub template: &'a PodTemplateSpec,
}

/// What the plan is made from.
pub struct Observed<'a> {
    pub set: &'a StatefulSet,
    /// The set's pods (members it controls), in any state.
    pub pods: &'a [&'a Pod],
    /// The claims of the set's namespace, by name.
    pub claims: &'a BTreeMap<String, &'a PersistentVolumeClaim>,
    pub current: Revision<'a>,
    pub update: Revision<'a>,
    pub collision_count: i32,
    pub now: Timestamp,
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It failed (or succeeded) and is replaced in place once gone.
    Failed,
    /// Its ordinal is beyond the replicas.
    ScaleDown,
    /// It is not at the update revision.
    Update,
}

/// One write, in the order the plan lists them; the first that fails ends the reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the claims (those missing), then the pod.
    CreatePod {
        pod: Box<Pod>,
        claims: Vec<PersistentVolumeClaim>,
    },
    /// Create the missing claims of a pod that exists but is Pending (they were deleted).
    CreateClaims {
        pod: String,
        claims: Vec<PersistentVolumeClaim>,
    },
    DeletePod {
        name: String,
        uid: String,
        why: Why,
    },
    /// Restore identity labels a pod lost.
    LabelPod {
        name: String,
        uid: String,
        labels: BTreeMap<String, String>,
    },
    /// Replace a claim's owner references (the claim carries its resourceVersion).
    SetClaimOwners {
        claim: Box<PersistentVolumeClaim>,
    },
}

/// The plan of one reconcile.
#[derive(Debug)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: StatefulSetStatus,
    /// When a pod becomes available (minReadySeconds), nothing else wakes the set.
    pub requeue_after: Option<Duration>,
    /// What stopped the pass, for the log.
    pub waiting: Option<String>,
}

/// Running with its Ready condition True.
pub fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && pods::is_ready(pod)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Running, Ready and not being deleted (upstream's `isHealthy`).
pub fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// OrderedReady (the default) is monotonic; Parallel is not.
pub fn monotonic(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        != Some("Parallel")
}

fn on_delete(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete")
}

/// `rollingUpdate.partition`, if the strategy has a rollingUpdate.
fn partition(set: &StatefulSet) -> Option<i32> {
    let rolling = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())?;
    Some(rolling.partition.unwrap_or(0))
}

/// `rollingUpdate.maxUnavailable` of `replicas` (default 1, rounded down, at least 1).
fn max_unavailable(set: &StatefulSet, replicas: i32) -> Result<i32, Error> {
    let value = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    Ok(scaled_value(&value, replicas, false)?.max(1))
}

/// A replica slot: the pod of that ordinal, or the one to create.
enum Slot<'a> {
    Pod(&'a Pod),
    Missing(i32),
}

struct Planner<'a> {
    o: &'a Observed<'a>,
    policy: Policy,
    monotonic: bool,
    actions: Vec<Action>,
    waiting: Option<String>,
}

/// Plans one reconcile of `o.set`.
pub fn plan(o: &Observed<'_>) -> Result<Plan, Error> {
    let mut planner = Planner {
        o,
        policy: Policy::of(o.set),
        monotonic: monotonic(o.set),
        actions: Vec::new(),
        waiting: None,
    };
    planner.run()?;
    let mut status = status(o);
    complete_rolling_update(o.set, &mut status);
    Ok(Plan {
        actions: planner.actions,
        status,
        requeue_after: requeue_after(o),
        waiting: planner.waiting,
    })
}

impl<'a> Planner<'a> {
    fn run(&mut self) -> Result<(), Error> {
        let set = self.o.set;
        let range = identity::ordinal_range(set);
        let by_ordinal: BTreeMap<i32, &Pod> = self
            .o
            .pods
            .iter()
            .filter_map(|p| Some((identity::ordinal(p)?, *p)))
            .collect();
        let replicas: Vec<Slot> = range
            .clone()
            .map(|ord| {
                by_ordinal
                    .get(&ord)
                    .map_or(Slot::Missing(ord), |p| Slot::Pod(p))
            })
            .collect();
        // Highest ordinal first.
        let condemned: Vec<&Pod> = by_ordinal
            .iter()
            .rev()
            .filter(|(ord, _)| !range.contains(ord))
            .map(|(_, p)| *p)
            .collect();
        let slot_healthy = |s: &Slot| matches!(s, Slot::Pod(p) if healthy(p));
        // The unhealthy pod with the lowest ordinal may be scaled down even though it is not
        // Running and Ready; anything else waits for it.
        let first_unhealthy = replicas
            .iter()
            .find(|s| !slot_healthy(s))
            .map(|s| match s {
                Slot::Pod(p) => identity::ordinal(p),
                Slot::Missing(ord) => Some(*ord),
            })
            .or_else(|| {
                condemned
                    .iter()
                    .rev()
                    .find(|p| !healthy(p))
                    .map(|p| identity::ordinal(p))
            })
            .flatten();

        if set.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }

        for slot in &replicas {
            let stop = match slot {
                Slot::Pod(pod) => self.replica(pod)?,
                Slot::Missing(ordinal) => self.missing(*ordinal)?,
            };
            if stop && self.monotonic {
                return Ok(());
            }
        }

        for pod in &condemned {
            self.fix_claims(pod, false)?;
        }
        for pod in &condemned {
            let stop = self.condemned(pod, first_unhealthy);
            if stop && self.monotonic {
                return Ok(());
            }
        }

        if on_delete(set) {
            return Ok(());
        }
        let max_unavailable = max_unavailable(set, identity::replicas(set))?;
        let unavailable = replicas.iter().filter(|s| !slot_healthy(s)).count();
        let Ok(unavailable) = i32::try_from(unavailable) else {
            return Ok(());
        };
        if unavailable >= max_unavailable {
            self.wait(format!(
                "{unavailable} unavailable pods, maxUnavailable {max_unavailable}"
            ));
            return Ok(());
        }
        let update_min = usize::try_from(partition(set).unwrap_or(0)).unwrap_or(0);
        let mut budget = max_unavailable - unavailable;
        for slot in replicas.iter().skip(update_min).rev() {
            if budget == 0 {
                break;
            }
            if let Slot::Pod(pod) = slot
                && pod_revision(pod) != self.o.update.name
                && !terminating(pod)
            {
                self.delete(pod, Why::Update);
                budget -= 1;
            }
        }
        Ok(())
    }

    fn wait(&mut self, why: String) {
        self.waiting.get_or_insert(why);
    }

    fn delete(&mut self, pod: &Pod, why: Why) {
        if let (Some(name), Some(uid)) = (&pod.metadata.name, &pod.metadata.uid) {
            self.actions.push(Action::DeletePod {
                name: name.clone(),
                uid: uid.clone(),
                why,
            });
        }
    }

    /// A replica that exists; true when a monotonic pass must stop at it.
    fn replica(&mut self, pod: &Pod) -> Result<bool, Error> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if finished(pod) {
            if !terminating(pod) {
                self.delete(pod, Why::Failed);
            }
            self.wait(format!("pod {name} failed and is replaced once it is gone"));
            return Ok(true);
        }
        if phase(pod) == "Pending"
            && let Some(ordinal) = identity::ordinal(pod)
        {
            let missing = self.missing_claims(ordinal)?;
            if !missing.is_empty() {
                self.actions.push(Action::CreateClaims {
                    pod: name.clone(),
                    claims: missing,
                });
            }
        }
        if self.monotonic && terminating(pod) {
            self.wait(format!("pod {name} is terminating"));
            return Ok(true);
        }
        if self.monotonic && !running_and_ready(pod) {
            self.wait(format!("pod {name} is not Running and Ready"));
            return Ok(true);
        }
        if self.monotonic && !pods::is_available(pod, min_ready_seconds(self.o.set), self.o.now) {
            self.wait(format!("pod {name} is not available yet"));
            return Ok(true);
        }
        let labels = identity::identity_fix(pod);
        if !labels.is_empty()
            && let Some(uid) = &pod.metadata.uid
        {
            self.actions.push(Action::LabelPod {
                name,
                uid: uid.clone(),
                labels,
            });
        }
        if !terminating(pod) {
            self.fix_claims(pod, true)?;
        }
        Ok(false)
    }

    /// The claims of `ordinal` that do not exist, owned as a claim of a pod in range is.
    fn missing_claims(&self, ordinal: i32) -> Result<Vec<PersistentVolumeClaim>, Error> {
        let owners = retention::owners_at_creation(self.o.set, self.policy)?;
        Ok(identity::claims_for(self.o.set, ordinal)
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| {
                !c.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| self.o.claims.contains_key(n))
            })
            .map(|mut c| {
                c.metadata.owner_references = (!owners.is_empty()).then(|| owners.clone());
                c
            })
            .collect())
    }

    /// A replica with no pod: create it (after its claims); true when a monotonic pass
    /// stops here, which it always does.
    fn missing(&mut self, ordinal: i32) -> Result<bool, Error> {
        let set = self.o.set;
        let name = identity::pod_name(set, ordinal);
        for (_, claim) in identity::claims_for(set, ordinal) {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            let Some(existing) = self.o.claims.get(&claim_name) else {
                continue;
            };
            if existing.metadata.deletion_timestamp.is_some() {
                self.wait(format!("claim {claim_name} of pod {name} is being deleted"));
                return Ok(true);
            }
            if self.policy.delete_when_scaled && retention::is_stale(existing, &name, None) {
                self.wait(format!(
                    "claim {claim_name} still belongs to a scaled-down pod {name}"
                ));
                return Ok(true);
            }
        }
        let revision = self.revision_for(ordinal);
        let pod = identity::new_pod(set, revision.template, ordinal, revision.name)?;
        let claims = self.missing_claims(ordinal)?;
        self.actions.push(Action::CreatePod {
            pod: Box::new(pod),
            claims,
        });
        self.wait(format!("pod {name} was just created"));
        Ok(true)
    }

    /// The revision a new pod of `ordinal` is made at (upstream's
    /// `newVersionedStatefulSetPod`, with Go's operator precedence): the current revision
    /// below the partition, or — for a RollingUpdate without a rollingUpdate — below the
    /// current replicas; else the update revision.
    fn revision_for(&self, ordinal: i32) -> Revision<'a> {
        let set = self.o.set;
        let index = ordinal - identity::start_ordinal(set);
        let rolling_update = set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .is_none_or(|s| s.type_.as_deref().is_none_or(|t| t == "RollingUpdate"));
        let current_replicas = set
            .status
            .as_ref()
            .and_then(|s| s.current_replicas)
            .unwrap_or(0);
        let below_current = match partition(set) {
            Some(partition) => index < partition,
            None => rolling_update && index < current_replicas,
        };
        if below_current {
            self.o.current
        } else {
            self.o.update
        }
    }

    /// Sets the owners of `pod`'s existing claims as the retention policy asks.
    fn fix_claims(&mut self, pod: &Pod, in_range: bool) -> Result<(), Error> {
        let Some(ordinal) = identity::ordinal(pod) else {
            return Ok(());
        };
        for (_, claim) in identity::claims_for(self.o.set, ordinal) {
            let Some(existing) = claim
                .metadata
                .name
                .as_ref()
                .and_then(|n| self.o.claims.get(n))
            else {
                continue;
            };
            if existing.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(owners) =
                retention::owners_for(existing, self.o.set, &pod.metadata, in_range, self.policy)?
            {
                let mut fixed = (*existing).clone();
                fixed.metadata.owner_references = Some(owners);
                self.actions.push(Action::SetClaimOwners {
                    claim: Box::new(fixed),
                });
            }
        }
        Ok(())
    }

    /// A condemned pod; true when a monotonic pass stops at it.
    fn condemned(&mut self, pod: &Pod, first_unhealthy: Option<i32>) -> bool {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if terminating(pod) {
            self.wait(format!("pod {name} is terminating before scale down"));
            return true;
        }
        let first = identity::ordinal(pod) == first_unhealthy;
        if self.monotonic && !first && !running_and_ready(pod) {
            self.wait(format!(
                "pod {name} must be Running and Ready to scale down"
            ));
            return true;
        }
        if self.monotonic
            && !first
            && !pods::is_available(pod, min_ready_seconds(self.o.set), self.o.now)
        {
            self.wait(format!("pod {name} must be available to scale down"));
            return true;
        }
        self.delete(pod, Why::ScaleDown);
        true
    }
}

/// The counts of the observed pods (upstream's `computeReplicaStatus`), the revisions and the
/// generation they answer; conditions are kept as they are.
pub fn status(o: &Observed<'_>) -> StatefulSetStatus {
    let min_ready = min_ready_seconds(o.set);
    let count = |f: &dyn Fn(&Pod) -> bool| -> i32 {
        i32::try_from(o.pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let live = |p: &Pod| !terminating(p);
    StatefulSetStatus {
        replicas: count(&|_| true),
        ready_replicas: Some(count(&running_and_ready)),
        available_replicas: Some(count(&|p| {
            running_and_ready(p) && pods::is_available(p, min_ready, o.now)
        })),
        current_replicas: Some(count(&|p| live(p) && pod_revision(p) == o.current.name)),
        updated_replicas: Some(count(&|p| live(p) && pod_revision(p) == o.update.name)),
        current_revision: Some(o.current.name.to_string()),
        update_revision: Some(o.update.name.to_string()),
        observed_generation: o.set.metadata.generation,
        collision_count: Some(o.collision_count),
        conditions: o.set.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

/// A RollingUpdate with every pod updated and ready is complete: the update revision becomes
/// the current one (upstream's `completeRollingUpdate`).
pub fn complete_rolling_update(set: &StatefulSet, status: &mut StatefulSetStatus) {
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    if !on_delete(set) && updated == status.replicas && ready == status.replicas {
        status.current_replicas = Some(updated);
        status.current_revision = status.update_revision.clone();
    }
}

/// The status differs from what the set shows (upstream's `inconsistentStatus`, plus the
/// collision count).
pub fn status_changed(set: &StatefulSet, status: &StatefulSetStatus) -> bool {
    let old = set.status.clone().unwrap_or_default();
    let zero = |v: Option<i32>| v.unwrap_or(0);
    status.observed_generation.unwrap_or(0) > old.observed_generation.unwrap_or(0)
        || status.replicas != old.replicas
        || zero(status.current_replicas) != zero(old.current_replicas)
        || zero(status.ready_replicas) != zero(old.ready_replicas)
        || zero(status.updated_replicas) != zero(old.updated_replicas)
        || zero(status.available_replicas) != zero(old.available_replicas)
        || status.current_revision != old.current_revision
        || status.update_revision != old.update_revision
        || zero(status.collision_count) != zero(old.collision_count)
}

/// The soonest a Ready pod becomes available, when minReadySeconds makes one wait.
fn requeue_after(o: &Observed<'_>) -> Option<Duration> {
    let min_ready = min_ready_seconds(o.set);
    if min_ready <= 0 {
        return None;
    }
    o.pods
        .iter()
        .filter(|p| running_and_ready(p))
        .filter_map(|p| pods::until_available(p, min_ready, o.now))
        .min()
}

#[cfg(test)]
#[path = "plan/tests.rs"]
mod tests;
