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
//!
//! How the writes are carried out ([`Plan::batches`]): OrderedReady one after another, in
//! the order listed; Parallel as upstream's `runForAll` does with `slowStartBatch`: the pods
//! of one stage (replicas, condemned claims, scale-down, update) concurrently, in batches of
//! 1, 2, 4, … that each start once the one before has finished without a failure, each pod's
//! own writes in order (its claims before it), and the stages one after another.

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

/// The part of the pass an action comes from: stages run one after another, and under
/// Parallel the pods of one stage concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Replica slots: replace, create or fix each pod (rule 2).
    Replicas,
    /// The claims of condemned pods get the owners the retention policy asks for.
    CondemnedClaims,
    /// Condemned pods are deleted (rule 3).
    ScaleDown,
    /// Pods not at the update revision are deleted (rule 4).
    Update,
}

/// Whom an action is for: its stage and the pod it concerns. The actions of one unit make
/// one sequence of writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub stage: Stage,
    pub pod: String,
}

/// Writes to carry out: batches one after another, the sequences of one batch concurrently,
/// the actions of one sequence in order.
pub type Batches = Vec<Vec<Vec<Action>>>;

/// The plan of one reconcile.
#[derive(Debug)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Per action (as many as `actions`): its stage and pod.
    pub units: Vec<Unit>,
    /// OrderedReady: the actions run one after another ([`Plan::batches`]).
    pub monotonic: bool,
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
    stage: Stage,
    actions: Vec<Action>,
    units: Vec<Unit>,
    waiting: Option<String>,
}

/// Plans one reconcile of `o.set`.
pub fn plan(o: &Observed<'_>) -> Result<Plan, Error> {
    let mut planner = Planner {
        o,
        policy: Policy::of(o.set),
        monotonic: monotonic(o.set),
        stage: Stage::Replicas,
        actions: Vec::new(),
        units: Vec::new(),
        waiting: None,
    };
    planner.run()?;
    let mut status = status(o);
    complete_rolling_update(o.set, &mut status);
    Ok(Plan {
        actions: planner.actions,
        units: planner.units,
        monotonic: planner.monotonic,
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

        self.stage = Stage::CondemnedClaims;
        for pod in &condemned {
            self.fix_claims(pod, false)?;
        }
        self.stage = Stage::ScaleDown;
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
        self.stage = Stage::Update;
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

    /// Lists `action`, for `pod` in the current stage.
    fn push(&mut self, pod: &str, action: Action) {
        self.actions.push(action);
        self.units.push(Unit {
            stage: self.stage,
            pod: pod.to_string(),
        });
    }

    fn delete(&mut self, pod: &Pod, why: Why) {
        if let (Some(name), Some(uid)) = (&pod.metadata.name, &pod.metadata.uid) {
            let action = Action::DeletePod {
                name: name.clone(),
                uid: uid.clone(),
                why,
            };
            self.push(name, action);
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
                let action = Action::CreateClaims {
                    pod: name.clone(),
                    claims: missing,
                };
                self.push(&name, action);
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
            let action = Action::LabelPod {
                name: name.clone(),
                uid: uid.clone(),
                labels,
            };
            self.push(&name, action);
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
        self.push(
            &name,
            Action::CreatePod {
                pod: Box::new(pod),
                claims,
            },
        );
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
                let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
                self.push(
                    pod_name,
                    Action::SetClaimOwners {
                        claim: Box::new(fixed),
                    },
                );
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

impl Plan {
    /// Takes the actions out of the plan in the batches the writer carries them out in.
    pub fn take_batches(&mut self) -> Batches {
        batches(
            std::mem::take(&mut self.actions),
            std::mem::take(&mut self.units),
            self.monotonic,
        )
    }
}

/// The writes in order (upstream's `runForAll`). Monotonic: one batch of one sequence, every
/// action in the order listed, so the first failure stops the rest. Otherwise the listed
/// actions of one pod in one stage make a sequence, and each stage's sequences go in
/// slow-start batches (1, 2, 4, …, upstream's `slowStartBatch`); a batch never spans two
/// stages, so a stage starts only once the one before it has gone through.
pub fn batches(actions: Vec<Action>, units: Vec<Unit>, monotonic: bool) -> Batches {
    if actions.is_empty() {
        return Vec::new();
    }
    if monotonic {
        return vec![vec![actions]];
    }
    // (stage, sequences) in the order listed; consecutive actions of one unit join.
    type Sequences = Vec<(String, Vec<Action>)>;
    let mut stages: Vec<(Stage, Sequences)> = Vec::new();
    for (action, unit) in actions.into_iter().zip(units) {
        if stages.last().is_none_or(|(stage, _)| *stage != unit.stage) {
            stages.push((unit.stage, Vec::new()));
        }
        let Some((_, sequences)) = stages.last_mut() else {
            continue;
        };
        match sequences.last_mut() {
            Some((pod, sequence)) if *pod == unit.pod => sequence.push(action),
            _ => sequences.push((unit.pod, vec![action])),
        }
    }
    let mut out = Vec::new();
    for (_, sequences) in stages {
        let mut sequences = sequences.into_iter().map(|(_, s)| s);
        for size in slow_start(sequences.len()) {
            out.push(sequences.by_ref().take(size).collect());
        }
    }
    out
}

/// Batch sizes 1, 2, 4, … adding up to `count`.
fn slow_start(count: usize) -> Vec<usize> {
    crate::replicaset::decide::slow_start(count)
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

#[cfg(test)]
mod batch_tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

    use super::super::testing::*;
    use super::*;

    fn parallel(mut set: StatefulSet) -> StatefulSet {
        set.spec.as_mut().expect("spec").pod_management_policy = Some("Parallel".into());
        set
    }

    fn plan_of(set: &StatefulSet, pods: &[Pod]) -> Plan {
        let pods: Vec<&Pod> = pods.iter().collect();
        let claims: BTreeMap<String, &PersistentVolumeClaim> = BTreeMap::new();
        let template = set.spec.as_ref().expect("spec").template.clone();
        let revision = Revision {
            name: V1,
            template: &template,
        };
        plan(&Observed {
            set,
            pods: &pods,
            claims: &claims,
            current: revision,
            update: revision,
            collision_count: 0,
            now: t(100),
        })
        .expect("plan")
    }

    /// Each batch as the pods its sequences are for, a sequence as "<verb> <pod>, …".
    fn shape(batches: &Batches) -> Vec<Vec<String>> {
        let word = |a: &Action| match a {
            Action::CreatePod { pod, .. } => {
                format!("create {}", pod.metadata.name.as_deref().unwrap_or(""))
            }
            Action::CreateClaims { pod, .. } => format!("claims {pod}"),
            Action::DeletePod { name, .. } => format!("delete {name}"),
            Action::LabelPod { name, .. } => format!("label {name}"),
            Action::SetClaimOwners { claim } => {
                format!("own {}", claim.metadata.name.as_deref().unwrap_or(""))
            }
        };
        batches
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .map(|s| s.iter().map(word).collect::<Vec<_>>().join(", "))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn parallel_creates_in_slow_start_batches() {
        let set = parallel(stateful_set(10));
        let mut plan = plan_of(&set, &[]);
        let batches = plan.take_batches();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 2, 4, 3]);
        assert_eq!(shape(&batches)[0], ["create web-0"]);
        assert_eq!(shape(&batches)[1], ["create web-1", "create web-2"]);
        assert_eq!(
            shape(&batches)[3],
            ["create web-7", "create web-8", "create web-9"]
        );
        assert!(plan.actions.is_empty() && plan.units.is_empty(), "taken");
    }

    #[test]
    fn a_hundred_parallel_creates_take_seven_batches() {
        let set = parallel(stateful_set(100));
        let batches = plan_of(&set, &[]).take_batches();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 37]);
        assert!(batches.iter().flatten().all(|s| s.len() == 1));
    }

    #[test]
    fn ordered_ready_writes_one_after_another() {
        let set = stateful_set(3);
        // web-0 Ready but missing an identity label, web-1 to create: one sequence, in order.
        let mut first = ready(pod(&set, 0));
        if let Some(labels) = first.metadata.labels.as_mut() {
            labels.remove(identity::POD_NAME_LABEL);
        }
        let batches = plan_of(&set, &[first]).take_batches();
        assert_eq!(
            shape(&batches),
            [vec!["label web-0, create web-1".to_string()]]
        );
    }

    #[test]
    fn parallel_scale_down_deletes_in_batches_from_the_highest_ordinal() {
        let set = parallel(stateful_set(1));
        let pods: Vec<Pod> = (0..8).map(|i| ready(pod(&set, i))).collect();
        let batches = plan_of(&set, &pods).take_batches();
        assert_eq!(
            shape(&batches),
            [
                vec!["delete web-7"],
                vec!["delete web-6", "delete web-5"],
                vec![
                    "delete web-4",
                    "delete web-3",
                    "delete web-2",
                    "delete web-1"
                ],
            ]
        );
    }

    #[test]
    fn stages_never_share_a_batch() {
        // web-1 and web-2 to create, web-3 and web-4 condemned.
        let set = parallel(stateful_set(3));
        let pods = vec![
            ready(pod(&set, 0)),
            ready(pod(&set, 3)),
            ready(pod(&set, 4)),
        ];
        let batches = plan_of(&set, &pods).take_batches();
        assert_eq!(
            shape(&batches),
            [
                vec!["create web-1"],
                vec!["create web-2"],
                vec!["delete web-4"],
                vec!["delete web-3"],
            ]
        );
    }

    #[test]
    fn one_pods_actions_in_a_stage_make_one_sequence() {
        let unit = |stage, pod: &str| Unit {
            stage,
            pod: pod.to_string(),
        };
        let delete = |name: &str| Action::DeletePod {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            why: Why::Failed,
        };
        let label = |name: &str| Action::LabelPod {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::new(),
        };
        let actions = vec![
            label("a"),
            delete("a"),
            label("b"),
            delete("b"),
            delete("c"),
        ];
        let units = vec![
            unit(Stage::Replicas, "a"),
            unit(Stage::Replicas, "a"),
            unit(Stage::Replicas, "b"),
            unit(Stage::Update, "b"),
            unit(Stage::Update, "c"),
        ];
        let parallel = batches(actions.clone(), units.clone(), false);
        assert_eq!(
            shape(&parallel),
            [
                vec!["label a, delete a"],
                vec!["label b"],
                vec!["delete b"],
                vec!["delete c"],
            ]
        );
        let ordered = batches(actions.clone(), units, true);
        assert_eq!(ordered, vec![vec![actions]]);
        assert!(batches(Vec::new(), Vec::new(), false).is_empty());
    }
}
