//! The decision, without I/O: from a Deployment, the ReplicaSets it controls and (for
//! Recreate) their pods, what to write next. It follows upstream's sync loop step by step —
//! paused and scaling events, rolling and recreate rollouts, revision bookkeeping, history
//! clean-up, status and conditions — on working copies of the ReplicaSets, as if every
//! write succeeded; [`Plan`] is the difference between the copies and what was observed.
//! A write that fails makes the reconcile fail, and the next one plans again from what the
//! cache shows then.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::util::{self, *};
use crate::Error;
use crate::pods::{self, TEMPLATE_HASH_LABEL};

/// What the reconcile sees.
pub struct Observed<'a> {
    pub deployment: &'a Deployment,
    /// The ReplicaSets the Deployment controls (after adoption and release).
    pub owned: Vec<ReplicaSet>,
    /// Every ReplicaSet of the namespace, to tell a name collision from our own.
    pub namespace: &'a [&'a ReplicaSet],
    /// Pods controlled by the owned ReplicaSets (only Recreate looks at them).
    pub pods: &'a [&'a Pod],
    pub now: Timestamp,
}

/// A change of an existing ReplicaSet (the whole object, with the resourceVersion it was
/// read at), and its scale before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub replica_set: ReplicaSet,
    pub from: i32,
    pub to: i32,
}

/// An event about the Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// What to write, in this order.
#[derive(Debug, Default)]
pub struct Plan {
    /// The new ReplicaSet to create.
    pub create: Option<ReplicaSet>,
    /// Scale-ups first, then the rest, so a rollout never dips below what it planned.
    pub updates: Vec<Update>,
    /// Old ReplicaSets beyond revisionHistoryLimit.
    pub deletes: Vec<ReplicaSet>,
    /// The Deployment's new status, when it differs from what is stored.
    pub status: Option<DeploymentStatus>,
    /// The Deployment's revision annotation, when it differs.
    pub revision: Option<String>,
    pub notes: Vec<Note>,
    /// When to look again without a change: the progress deadline.
    pub requeue_after: Option<Duration>,
}

struct Working {
    observed: Option<ReplicaSet>,
    rs: ReplicaSet,
}

struct Planner<'a> {
    d: &'a Deployment,
    spec: &'a DeploymentSpec,
    now: Timestamp,
    status: DeploymentStatus,
    revision: Option<String>,
    rss: Vec<Working>,
    deletes: Vec<usize>,
    notes: Vec<Note>,
    namespace: &'a [&'a ReplicaSet],
}

/// The new ReplicaSet (if any) and the old ones, as indexes into the working copies.
type NewAndOld = (Option<usize>, Vec<usize>);

/// Plans one reconcile of a Deployment.
pub fn plan(observed: Observed<'_>) -> Result<Plan, Error> {
    let d = observed.deployment;
    let name = d.metadata.name.clone().unwrap_or_default();
    let spec = d
        .spec
        .as_ref()
        .ok_or_else(|| Error::Incomplete(format!("deployment {name}"), "spec"))?;
    // Conditions are written with whole seconds, as they read back.
    let now = Timestamp::from_second(observed.now.as_second()).unwrap_or(observed.now);
    let mut p = Planner {
        d,
        spec,
        now,
        status: d.status.clone().unwrap_or_default(),
        revision: d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned(),
        rss: observed
            .owned
            .into_iter()
            .map(|rs| Working {
                observed: Some(rs.clone()),
                rs,
            })
            .collect(),
        deletes: Vec::new(),
        notes: Vec::new(),
        namespace: observed.namespace,
    };
    p.sync(observed.pods)?;
    Ok(p.finish())
}

impl Planner<'_> {
    /// upstream's syncDeployment, from the selector check on.
    fn sync(&mut self, pods: &[&Pod]) -> Result<(), Error> {
        let selector = &self.spec.selector;
        if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty())
        {
            self.notes.push(Note {
                type_: "Warning",
                reason: "SelectingAll",
                message: "This deployment is selecting all pods. A non-empty selector is required."
                    .into(),
            });
            let generation = self.d.metadata.generation.unwrap_or(0);
            if self.status.observed_generation.unwrap_or(0) < generation {
                self.status.observed_generation = Some(generation);
            }
            return Ok(());
        }
        if self.d.metadata.deletion_timestamp.is_some() {
            let Some((new, old)) = self.new_and_old(false)? else {
                return Ok(());
            };
            self.status = self.calculate_status(new, &old)?;
            return Ok(());
        }
        self.check_paused_conditions();
        if self.spec.paused == Some(true) {
            return self.sync_scale();
        }
        if self.is_scaling_event()? {
            return self.sync_scale();
        }
        if util::is_rolling(self.spec) {
            self.rollout_rolling()
        } else {
            self.rollout_recreate(pods)
        }
    }

    fn desired(&self) -> i32 {
        util::desired(self.spec)
    }

    fn rs(&self, i: usize) -> &ReplicaSet {
        &self.rss[i].rs
    }

    fn replicas(&self, i: usize) -> i32 {
        rs_replicas(self.rs(i))
    }

    fn total_replicas(&self, set: &[usize]) -> i32 {
        set.iter().map(|&i| self.replicas(i)).sum()
    }

    fn active(&self, set: &[usize]) -> Vec<usize> {
        set.iter()
            .copied()
            .filter(|&i| self.replicas(i) > 0)
            .collect()
    }

    fn sort_by(
        &self,
        set: &mut [usize],
        order: fn(&ReplicaSet, &ReplicaSet) -> std::cmp::Ordering,
    ) {
        set.sort_by(|&a, &b| order(self.rs(a), self.rs(b)));
    }

    fn all(new: Option<usize>, old: &[usize]) -> Vec<usize> {
        old.iter().copied().chain(new).collect()
    }

    /// upstream's checkPausedConditions: pausing and resuming are recorded in the Progressing
    /// condition, so time spent paused never counts against the progress deadline.
    fn check_paused_conditions(&mut self) {
        if progress_deadline(self.spec).is_none() {
            return;
        }
        let reason = condition(&self.status, PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return;
        }
        let paused_recorded = reason.as_deref() == Some(PAUSED);
        let paused = self.spec.paused == Some(true);
        if paused && !paused_recorded {
            let c = new_condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                self.now,
            );
            set_condition(&mut self.status, c);
        } else if !paused && paused_recorded {
            let c = new_condition(
                PROGRESSING,
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
                self.now,
            );
            set_condition(&mut self.status, c);
        }
    }

    /// upstream's isScalingEvent: an active ReplicaSet was sized for another replica count.
    fn is_scaling_event(&mut self) -> Result<bool, Error> {
        let Some((new, old)) = self.new_and_old(false)? else {
            return Ok(false);
        };
        let desired = self.desired();
        Ok(self
            .active(&Self::all(new, &old))
            .into_iter()
            .any(|i| desired_annotation(self.rs(i)).is_some_and(|a| a != desired)))
    }

    /// upstream's sync: scaling (proportionally during a rollout) and status, no rollout.
    fn sync_scale(&mut self) -> Result<(), Error> {
        let Some((new, old)) = self.new_and_old(false)? else {
            return Ok(());
        };
        self.scale(new, &old)?;
        if self.spec.paused == Some(true) {
            self.cleanup(&old);
        }
        self.status = self.calculate_status(new, &old)?;
        Ok(())
    }

    fn rollout_rolling(&mut self) -> Result<(), Error> {
        let Some((new, old)) = self.new_and_old(true)? else {
            return Ok(());
        };
        let Some(new) = new else {
            return Ok(());
        };
        if self.reconcile_new(new, &old)? {
            return self.sync_rollout_status(Some(new), &old);
        }
        if self.reconcile_old(new, &old)? {
            return self.sync_rollout_status(Some(new), &old);
        }
        if complete(self.d, self.spec, &self.status) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(Some(new), &old)
    }

    fn rollout_recreate(&mut self, pods: &[&Pod]) -> Result<(), Error> {
        // No new ReplicaSet yet: creating it would scale it up before the old pods are gone.
        let Some((mut new, mut old)) = self.new_and_old(false)? else {
            return Ok(());
        };
        let mut scaled_down = false;
        for i in self.active(&old) {
            scaled_down |= self.scale_and_record(i, 0)?;
        }
        if scaled_down || self.old_pods_running(new, &old, pods) {
            return self.sync_rollout_status(new, &old);
        }
        if new.is_none() {
            let Some(created) = self.new_and_old(true)? else {
                return Ok(());
            };
            (new, old) = created;
        }
        if let Some(new) = new {
            self.scale_and_record(new, self.desired())?;
        }
        if complete(self.d, self.spec, &self.status) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(new, &old)
    }

    /// Old ReplicaSets still report pods, or any of their pods has not finished (a
    /// terminating pod still runs).
    fn old_pods_running(&self, new: Option<usize>, old: &[usize], pods: &[&Pod]) -> bool {
        if old
            .iter()
            .map(|&i| rs_status_replicas(self.rs(i)))
            .sum::<i32>()
            > 0
        {
            return true;
        }
        let new_uid = new.and_then(|i| self.rs(i).metadata.uid.as_deref());
        let old_uids: HashSet<&str> = old
            .iter()
            .filter_map(|&i| self.rs(i).metadata.uid.as_deref())
            .collect();
        pods.iter().any(|pod| {
            let owner = pods::controller_of(&pod.metadata).map(|r| r.uid.as_str());
            owner.is_some_and(|uid| old_uids.contains(uid) && Some(uid) != new_uid)
                && !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
    }

    /// upstream's getAllReplicaSetsAndSyncRevision: finds the new ReplicaSet (the oldest whose
    /// template is the Deployment's), brings its annotations and revision up to date or
    /// creates it, and records the revision on the Deployment. `None` when a name collision
    /// was found: the bumped collisionCount is all this reconcile writes.
    fn new_and_old(&mut self, create: bool) -> Result<Option<NewAndOld>, Error> {
        let mut candidates: Vec<usize> = (0..self.rss.len())
            .filter(|i| !self.deletes.contains(i))
            .collect();
        self.sort_by(&mut candidates, by_creation);
        let template = &self.spec.template;
        let new = candidates.iter().copied().find(|&i| {
            self.rs(i)
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, template))
        });
        let old: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| Some(i) != new)
            .collect();
        let new_revision = old.iter().map(|&i| revision(self.rs(i))).max().unwrap_or(0) + 1;

        if let Some(i) = new {
            let min_ready = self.spec.min_ready_seconds;
            let rs = &mut self.rss[i].rs;
            set_new_rs_annotations(self.d, self.spec, rs, new_revision, true)?;
            let rs_spec = rs.spec.get_or_insert_with(Default::default);
            if rs_spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0) {
                rs_spec.min_ready_seconds = min_ready;
            }
            if let Some(revision) = annotation(&self.rss[i].rs, REVISION) {
                self.revision = Some(revision.to_string());
            }
            if progress_deadline(self.spec).is_some()
                && condition(&self.status, PROGRESSING).is_none()
            {
                let message = format!("Found new replica set {:?}", self.name_of(i));
                let c = new_condition(PROGRESSING, "True", FOUND_NEW_RS, message, self.now);
                set_condition(&mut self.status, c);
            }
            return Ok(Some((Some(i), old)));
        }
        if !create {
            return Ok(Some((None, old)));
        }

        let mut rs = self.new_replica_set()?;
        let rs_name = rs.metadata.name.clone().unwrap_or_default();
        if let Some(existing) = self
            .namespace
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(rs_name.as_str()))
        {
            let ours = pods::controller_of(&existing.metadata)
                .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
            let same = existing
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, template));
            if !(ours && same) {
                // Another template (or another owner) has this name: hash again with a
                // higher collision count on the next reconcile.
                let count = self.status.collision_count.unwrap_or(0);
                self.status.collision_count = Some(count.saturating_add(1));
            }
            // Ours but not claimed (being deleted, or relabelled): wait until it settles.
            return Ok(None);
        }
        self.rss.push(Working {
            observed: None,
            rs: rs.clone(),
        });
        let i = self.rss.len() - 1;
        let all = Self::all(Some(i), &old);
        let replicas = self.new_rs_replicas(i, &all)?;
        set_rs_replicas(&mut rs, replicas);
        set_new_rs_annotations(self.d, self.spec, &mut rs, new_revision, false)?;
        self.rss[i].rs = rs;
        self.revision = Some(new_revision.to_string());
        if progress_deadline(self.spec).is_some() {
            let message = format!("Created new replica set {rs_name:?}");
            let c = new_condition(PROGRESSING, "True", NEW_RS_CREATED, message, self.now);
            set_condition(&mut self.status, c);
        }
        Ok(Some((Some(i), old)))
    }

    fn name_of(&self, i: usize) -> String {
        self.rs(i).metadata.name.clone().unwrap_or_default()
    }

    /// The ReplicaSet for the Deployment's template: `<deployment>-<hash>`, the hash label on
    /// its labels, selector and template, controlled by the Deployment, 0 replicas.
    fn new_replica_set(&self) -> Result<ReplicaSet, Error> {
        let hash = pods::template_hash(&self.spec.template, self.status.collision_count);
        let mut template: PodTemplateSpec = self.spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(Default::default);
        template_meta
            .labels
            .get_or_insert_with(Default::default)
            .insert(TEMPLATE_HASH_LABEL.to_string(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector = self.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(TEMPLATE_HASH_LABEL.to_string(), hash.clone());
        let name = self.d.metadata.name.clone().unwrap_or_default();
        Ok(ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{hash}")),
                namespace: self.d.metadata.namespace.clone(),
                labels,
                owner_references: Some(vec![pods::controller_reference(
                    &self.d.metadata,
                    "apps/v1",
                    "Deployment",
                )?]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        })
    }

    /// upstream's NewRSNewReplicas: Recreate takes every replica at once; a rolling update
    /// grows the new ReplicaSet while the total stays within replicas + maxSurge.
    fn new_rs_replicas(&self, new: usize, all: &[usize]) -> Result<i32, Error> {
        if !util::is_rolling(self.spec) {
            return Ok(self.desired());
        }
        let current = self.total_replicas(all);
        let max_total = self.desired() + max_surge(self.spec)?;
        let new_replicas = self.replicas(new);
        if current >= max_total {
            return Ok(new_replicas);
        }
        let up = (max_total - current).min(self.desired() - new_replicas);
        Ok(new_replicas + up)
    }

    /// upstream's reconcileNewReplicaSet.
    fn reconcile_new(&mut self, new: usize, old: &[usize]) -> Result<bool, Error> {
        let desired = self.desired();
        let replicas = self.replicas(new);
        if replicas == desired {
            return Ok(false);
        }
        if replicas > desired {
            return self.scale_and_record(new, desired);
        }
        let count = self.new_rs_replicas(new, &Self::all(Some(new), old))?;
        self.scale_and_record(new, count)
    }

    /// upstream's reconcileOldReplicaSets: scale old ReplicaSets down as far as
    /// maxUnavailable allows, unhealthy replicas first.
    fn reconcile_old(&mut self, new: usize, old: &[usize]) -> Result<bool, Error> {
        let active_old = self.active(old);
        if self.total_replicas(&active_old) == 0 {
            return Ok(false);
        }
        let all = Self::all(Some(new), &active_old);
        let all_pods = self.total_replicas(&all);
        let min_available = self.desired() - max_unavailable(self.spec)?;
        let new_unavailable = self.replicas(new) - rs_dependable(self.rs(new));
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self.cleanup_unhealthy(&active_old, max_scaled_down)?;
        let scaled = self.scale_down_old_for_rolling(new, &active_old)?;
        Ok(cleaned + scaled > 0)
    }

    /// Scales down old replicas that are not available, oldest ReplicaSet first: they do not
    /// count towards availability, so removing them costs nothing.
    fn cleanup_unhealthy(&mut self, old: &[usize], max_cleanup: i32) -> Result<i32, Error> {
        let mut old = old.to_vec();
        self.sort_by(&mut old, by_creation);
        let mut total = 0;
        for i in old {
            if total >= max_cleanup {
                break;
            }
            let replicas = self.replicas(i);
            let available = rs_dependable(self.rs(i));
            if replicas == 0 || replicas == available {
                continue;
            }
            let down = (max_cleanup - total).min(replicas - available);
            self.scale_and_record(i, replicas - down)?;
            total += down;
        }
        Ok(total)
    }

    /// Scales down old ReplicaSets, oldest first, by what is available above
    /// replicas − maxUnavailable.
    fn scale_down_old_for_rolling(&mut self, new: usize, old: &[usize]) -> Result<i32, Error> {
        let min_available = self.desired() - max_unavailable(self.spec)?;
        let available: i32 = Self::all(Some(new), old)
            .iter()
            .map(|&i| rs_dependable(self.rs(i)))
            .sum();
        if available <= min_available {
            return Ok(0);
        }
        let mut old = old.to_vec();
        self.sort_by(&mut old, by_creation);
        let target = available - min_available;
        let mut total = 0;
        for i in old {
            if total >= target {
                break;
            }
            let replicas = self.replicas(i);
            if replicas == 0 {
                continue;
            }
            let down = replicas.min(target - total);
            self.scale_and_record(i, replicas - down)?;
            total += down;
        }
        Ok(total)
    }

    /// upstream's scale: one active ReplicaSet takes the new size; a saturated new one makes
    /// the old ones 0; otherwise a rolling update spreads the difference over the active
    /// ReplicaSets in proportion to their size.
    fn scale(&mut self, new: Option<usize>, old: &[usize]) -> Result<(), Error> {
        let desired = self.desired();
        if let Some(only) = self.active_or_latest(new, old) {
            if self.replicas(only) != desired {
                self.scale_and_record(only, desired)?;
            }
            return Ok(());
        }
        if new.is_some_and(|i| self.saturated(i)) {
            for i in self.active(old) {
                self.scale_and_record(i, 0)?;
            }
            return Ok(());
        }
        if !util::is_rolling(self.spec) {
            return Ok(());
        }
        let mut all = self.active(&Self::all(new, old));
        let current = self.total_replicas(&all);
        let allowed = if desired > 0 {
            desired + max_surge(self.spec)?
        } else {
            0
        };
        let to_add = allowed - current;
        if to_add > 0 {
            // Larger first; among equals the newer grows first.
            all.sort_by(|&a, &b| {
                self.replicas(b)
                    .cmp(&self.replicas(a))
                    .then_with(|| by_creation(self.rs(b), self.rs(a)))
            });
        } else if to_add < 0 {
            // Larger first; among equals the older shrinks first.
            all.sort_by(|&a, &b| {
                self.replicas(b)
                    .cmp(&self.replicas(a))
                    .then_with(|| by_creation(self.rs(a), self.rs(b)))
            });
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for &i in &all {
            let proportion = if to_add == 0 {
                0
            } else {
                self.proportion(i, to_add, added)?
            };
            sizes.push(self.replicas(i) + proportion);
            added += proportion;
        }
        if let Some(first) = sizes.first_mut()
            && to_add != 0
        {
            // The rounding leftovers go to the largest.
            *first = (*first + to_add - added).max(0);
        }
        for (&i, size) in all.iter().zip(sizes) {
            self.scale_rs(i, size)?;
        }
        Ok(())
    }

    fn active_or_latest(&self, new: Option<usize>, old: &[usize]) -> Option<usize> {
        let mut old = old.to_vec();
        self.sort_by(&mut old, |a, b| by_creation(b, a));
        let active = self.active(&Self::all(new, &old));
        match active.as_slice() {
            [] => new.or_else(|| old.first().copied()),
            [only] => Some(*only),
            _ => None,
        }
    }

    fn saturated(&self, i: usize) -> bool {
        let rs = self.rs(i);
        let desired = self.desired();
        desired_annotation(rs) == Some(desired)
            && rs_replicas(rs) == desired
            && rs_available(rs) == desired
    }

    /// How many replicas ReplicaSet `i` gains (or loses) of `to_add`, `added` of which are
    /// already handed out: its share by the size it had when the Deployment had
    /// max-replicas, never beyond what is left.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> Result<i32, Error> {
        let replicas = self.replicas(i);
        if replicas == 0 || to_add == added {
            return Ok(0);
        }
        let fraction = if self.desired() == 0 {
            -replicas
        } else {
            let total = self.desired() + max_surge(self.spec)?;
            let annotated = max_replicas_annotation(self.rs(i))
                .unwrap_or_else(|| self.status.replicas.unwrap_or(0));
            if annotated <= 0 {
                0
            } else {
                let size = f64::from(replicas) * f64::from(total) / f64::from(annotated);
                size.round() as i32 - replicas
            }
        };
        let allowed = to_add - added;
        Ok(if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        })
    }

    /// upstream's scaleReplicaSetAndRecordEvent: nothing when the size is right.
    fn scale_and_record(&mut self, i: usize, to: i32) -> Result<bool, Error> {
        if self.replicas(i) == to {
            return Ok(false);
        }
        self.scale_rs(i, to)
    }

    /// Sets the size and the replica annotations; true when the size changed.
    fn scale_rs(&mut self, i: usize, to: i32) -> Result<bool, Error> {
        let desired = self.desired();
        let max = desired + max_surge(self.spec)?;
        let rs = &mut self.rss[i].rs;
        let changed = rs_replicas(rs) != to;
        set_replicas_annotations(rs, desired, max);
        set_rs_replicas(rs, to);
        Ok(changed)
    }

    /// revisionHistoryLimit: deletes the oldest revisions beyond the limit that have no
    /// replicas, asked or running.
    fn cleanup(&mut self, old: &[usize]) {
        let Some(limit) = self.spec.revision_history_limit.filter(|l| *l != i32::MAX) else {
            return;
        };
        let mut alive: Vec<usize> = old
            .iter()
            .copied()
            .filter(|&i| {
                self.rss[i].observed.is_some() && self.rs(i).metadata.deletion_timestamp.is_none()
            })
            .collect();
        let excess = alive.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return;
        }
        self.sort_by(&mut alive, by_revision);
        for &i in alive.iter().take(excess as usize) {
            let rs = self.rs(i);
            let settled = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0)
                >= rs.metadata.generation.unwrap_or(0);
            if rs_status_replicas(rs) != 0 || rs_replicas(rs) != 0 || !settled {
                continue;
            }
            if !self.deletes.contains(&i) {
                self.deletes.push(i);
            }
        }
    }

    /// upstream's calculateStatus: counts over the ReplicaSets and the Available condition.
    fn calculate_status(
        &self,
        new: Option<usize>,
        old: &[usize],
    ) -> Result<DeploymentStatus, Error> {
        let all = Self::all(new, old);
        let sum = |f: fn(&ReplicaSet) -> i32| -> i32 { all.iter().map(|&i| f(self.rs(i))).sum() };
        let available = sum(rs_available);
        let total = sum(rs_replicas);
        let nonzero = |v: i32| (v != 0).then_some(v);
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation.filter(|g| *g != 0),
            replicas: nonzero(sum(rs_status_replicas)),
            updated_replicas: nonzero(new.map_or(0, |i| rs_status_replicas(self.rs(i)))),
            ready_replicas: nonzero(sum(rs_ready)),
            available_replicas: nonzero(available),
            unavailable_replicas: nonzero((total - available).max(0)),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
            terminating_replicas: None,
        };
        let condition = if available >= self.desired() - max_unavailable(self.spec)? {
            new_condition(
                AVAILABLE,
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            new_condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        set_condition(&mut status, condition);
        Ok(status)
    }

    /// upstream's syncRolloutStatus: the status plus the Progressing condition (created,
    /// progressing, complete or timed out) and ReplicaFailure copied from a ReplicaSet.
    fn sync_rollout_status(&mut self, new: Option<usize>, old: &[usize]) -> Result<(), Error> {
        let mut status = self.calculate_status(new, old)?;
        let deadline = progress_deadline(self.spec);
        if deadline.is_none() {
            remove_condition(&mut status, PROGRESSING);
        }
        let current = condition(&self.status, PROGRESSING).cloned();
        let finished = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        if deadline.is_some() && !finished {
            let new_name = new.map(|i| self.name_of(i)).unwrap_or_default();
            if complete(self.d, self.spec, &status) {
                let message = format!("ReplicaSet {new_name:?} has successfully progressed.");
                let c = new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, self.now);
                set_condition(&mut status, c);
            } else if util::progressing(&self.status, &status) {
                let message = if new.is_some() {
                    format!("ReplicaSet {new_name:?} is progressing.")
                } else {
                    format!(
                        "Deployment {:?} is progressing.",
                        self.d.metadata.name.clone().unwrap_or_default()
                    )
                };
                // Progress refreshes lastUpdateTime even when the reason stays, which
                // set_condition alone would not do.
                let mut c = new_condition(PROGRESSING, "True", RS_UPDATED, message, self.now);
                if let Some(current) = &current {
                    if current.status == "True" {
                        c.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, PROGRESSING);
                }
                set_condition(&mut status, c);
            } else if timed_out(self.spec, &status, self.now) {
                let message = format!("ReplicaSet {new_name:?} has timed out progressing.");
                let c = new_condition(PROGRESSING, "False", TIMED_OUT, message, self.now);
                set_condition(&mut status, c);
            }
        }
        match self.replica_failure(new, old) {
            Some(failure) => set_condition(&mut status, failure),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        self.status = status;
        Ok(())
    }

    /// The ReplicaFailure condition of the new ReplicaSet, else of an old one.
    fn replica_failure(&self, new: Option<usize>, old: &[usize]) -> Option<DeploymentCondition> {
        new.into_iter().chain(old.iter().copied()).find_map(|i| {
            let rs = self.rs(i);
            let c = rs
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == REPLICA_FAILURE)?;
            Some(DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
        })
    }

    /// When a rollout that is neither finished nor timed out would time out: the reconcile
    /// must look again then, since nothing else will change to wake it.
    fn requeue_after(&self) -> Option<Duration> {
        let deadline = progress_deadline(self.spec)?;
        let current = condition(&self.status, PROGRESSING)?;
        if complete(self.d, self.spec, &self.status) || current.reason.as_deref() == Some(TIMED_OUT)
        {
            return None;
        }
        let updated = current.last_update_time.as_ref()?.0.as_second();
        let left = updated + i64::from(deadline) - self.now.as_second();
        Some(if left < 1 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(left as u64 + 1)
        })
    }

    fn finish(self) -> Plan {
        let requeue_after = self.requeue_after();
        let mut plan = Plan {
            requeue_after,
            notes: self.notes,
            ..Default::default()
        };
        let stored = self.d.status.clone().unwrap_or_default();
        if self.status != stored {
            plan.status = Some(self.status);
        }
        let stored_revision = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if self.revision.is_some() && self.revision.as_ref() != stored_revision {
            plan.revision = self.revision;
        }
        let mut ups = Vec::new();
        let mut downs = Vec::new();
        for (i, w) in self.rss.into_iter().enumerate() {
            if self.deletes.contains(&i) {
                plan.deletes.push(w.rs);
                continue;
            }
            match w.observed {
                None => plan.create = Some(w.rs),
                Some(observed) if observed != w.rs => {
                    let update = Update {
                        from: rs_replicas(&observed),
                        to: rs_replicas(&w.rs),
                        replica_set: w.rs,
                    };
                    if update.to > update.from {
                        ups.push(update);
                    } else {
                        downs.push(update);
                    }
                }
                Some(_) => {}
            }
        }
        plan.updates = ups.into_iter().chain(downs).collect();
        plan
    }
}

#[cfg(test)]
mod tests;
