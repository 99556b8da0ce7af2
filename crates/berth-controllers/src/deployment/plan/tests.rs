use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DeploymentStrategy, ReplicaSetCondition, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).expect("valid time")
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn template(version: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: labels(&[("app", "web")]),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("berth.dev/host".into()),
                env: Some(vec![EnvVar {
                    name: "VERSION".into(),
                    value: Some(version.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn deployment(replicas: i32, version: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: labels(&[("app", "web")]),
                ..Default::default()
            },
            template: template(version),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        }),
        status: None,
    }
}

fn recreate(mut d: Deployment) -> Deployment {
    if let Some(spec) = d.spec.as_mut() {
        spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
    }
    d
}

fn spec_mut(d: &mut Deployment) -> &mut DeploymentSpec {
    d.spec.as_mut().expect("spec")
}

/// A simulated cluster: the Deployment, its ReplicaSets and a ReplicaSet controller whose
/// pods become available one step after they are asked for.
struct World {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    clock: i64,
    created: usize,
    notes: Vec<Note>,
}

impl World {
    fn new(d: Deployment) -> World {
        World {
            d,
            rss: Vec::new(),
            clock: 0,
            created: 0,
            notes: Vec::new(),
        }
    }

    fn plan(&self, pods: &[&Pod]) -> Plan {
        let namespace: Vec<&ReplicaSet> = self.rss.iter().collect();
        plan(Observed {
            deployment: &self.d,
            owned: self.rss.clone(),
            namespace: &namespace,
            pods,
            now: at(self.clock),
        })
        .expect("plan")
    }

    /// Applies a plan as the API server would.
    fn apply(&mut self, plan: Plan) {
        if let Some(mut rs) = plan.create {
            self.created += 1;
            rs.metadata.uid = Some(format!("rs-uid-{}", self.created));
            rs.metadata.creation_timestamp = Some(Time(at(self.clock)));
            rs.metadata.generation = Some(1);
            self.rss.push(rs);
        }
        for update in plan.updates {
            let name = update.replica_set.metadata.name.clone();
            let slot = self
                .rss
                .iter_mut()
                .find(|r| r.metadata.name == name)
                .expect("updated replica set exists");
            let generation = slot.metadata.generation.unwrap_or(1);
            let status = slot.status.clone();
            *slot = update.replica_set;
            slot.status = status;
            slot.metadata.generation = Some(generation + 1);
        }
        for rs in plan.deletes {
            self.rss.retain(|r| r.metadata.name != rs.metadata.name);
        }
        if let Some(status) = plan.status {
            self.d.status = Some(status);
        }
        if let Some(revision) = plan.revision {
            self.d
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(REVISION.into(), revision);
        }
        self.notes.extend(plan.notes);
    }

    /// The ReplicaSet controller catches up: pods asked for earlier are available now,
    /// newly asked ones exist but are not ready, removed ones are gone.
    fn settle(&mut self, ready: bool) {
        for rs in &mut self.rss {
            let want = rs_replicas(rs);
            let status = rs.status.get_or_insert_with(Default::default);
            let available = if ready {
                status.replicas.min(want)
            } else {
                status.available_replicas.unwrap_or(0).min(want)
            };
            status.replicas = want;
            status.ready_replicas = Some(available);
            status.available_replicas = Some(available);
            status.observed_generation = rs.metadata.generation;
        }
        self.clock += 1;
    }

    fn available(&self) -> i32 {
        self.rss.iter().map(rs_available).sum()
    }

    fn asked(&self) -> i32 {
        self.rss.iter().map(rs_replicas).sum()
    }

    fn by_version(&self, version: &str) -> Option<&ReplicaSet> {
        self.rss.iter().find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template(version)))
        })
    }

    /// Reconciles until nothing is left to write, with pods becoming ready as they come.
    fn converge(&mut self, check: impl Fn(&World)) {
        for _ in 0..100 {
            let plan = self.plan(&[]);
            let idle = plan.create.is_none()
                && plan.updates.is_empty()
                && plan.deletes.is_empty()
                && plan.status.is_none()
                && plan.revision.is_none();
            self.apply(plan);
            check(self);
            let before = self.rss.clone();
            self.settle(true);
            if idle && before == self.rss {
                return;
            }
        }
        panic!("did not converge");
    }

    fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    fn condition(&self, type_: &str) -> Option<DeploymentCondition> {
        condition(&self.status(), type_).cloned()
    }
}

#[test]
fn a_new_deployment_gets_one_replica_set_with_the_hash_and_a_revision() {
    let mut world = World::new(deployment(3, "v1"));
    let plan = world.plan(&[]);
    let rs = plan.create.clone().expect("a new replica set");
    let hash = pods::template_hash(&template("v1"), None);
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    let hash_label = labels(&[("app", "web"), (TEMPLATE_HASH_LABEL, &hash)]);
    assert_eq!(rs.metadata.labels, hash_label);
    let rs_spec = rs.spec.as_ref().expect("spec");
    assert_eq!(rs_spec.selector.match_labels, hash_label);
    assert_eq!(
        rs_spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone()),
        hash_label
    );
    assert_eq!(rs_spec.replicas, Some(3));
    assert_eq!(annotation(&rs, REVISION), Some("1"));
    assert_eq!(annotation(&rs, DESIRED_REPLICAS), Some("3"));
    assert_eq!(annotation(&rs, MAX_REPLICAS), Some("4"));
    let owner = pods::controller_of(&rs.metadata).expect("controller");
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Deployment", "d-uid")
    );
    assert_eq!(plan.revision.as_deref(), Some("1"));
    let status = plan.status.clone().expect("status");
    let progressing = condition(&status, PROGRESSING).expect("progressing");
    assert_eq!(progressing.reason.as_deref(), Some(NEW_RS_CREATED));
    assert!(
        plan.requeue_after.is_some(),
        "waits for the progress deadline"
    );

    world.apply(plan);
    world.converge(|_| {});
    let status = world.status();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
            status.unavailable_replicas,
            status.observed_generation
        ),
        (Some(3), Some(3), Some(3), Some(3), None, Some(1))
    );
    assert_eq!(
        world.condition(PROGRESSING).and_then(|c| c.reason),
        Some(NEW_RS_AVAILABLE.into())
    );
    assert_eq!(
        world.condition(AVAILABLE).and_then(|c| c.reason),
        Some(MIN_AVAILABLE.into())
    );
    assert_eq!(
        world.plan(&[]).requeue_after,
        None,
        "a finished rollout has no deadline"
    );
}

fn rolled_out(replicas: i32, version: &str) -> World {
    let mut world = World::new(deployment(replicas, version));
    world.converge(|_| {});
    world
}

fn roll(replicas: i32, surge: IntOrString, unavailable: IntOrString) {
    let mut world = rolled_out(replicas, "v1");
    let spec = spec_mut(&mut world.d);
    spec.template = template("v2");
    spec.strategy = Some(DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(surge),
            max_unavailable: Some(unavailable),
        }),
    });
    world.d.metadata.generation = Some(2);
    let (max_surge, max_unavailable) =
        fenceposts(world.d.spec.as_ref().expect("spec")).expect("fenceposts");
    world.converge(|w| {
        assert!(
            w.available() >= replicas - max_unavailable,
            "{} available of {replicas} with maxUnavailable {max_unavailable}",
            w.available()
        );
        assert!(w.asked() <= replicas + max_surge, "{} asked for", w.asked());
    });
    let new = world.by_version("v2").expect("new replica set");
    assert_eq!(rs_replicas(new), replicas);
    assert_eq!(annotation(new, REVISION), Some("2"));
    assert_eq!(
        rs_replicas(world.by_version("v1").expect("old replica set")),
        0
    );
    assert_eq!(
        world
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str),
        Some("2")
    );
    let scaled: Vec<&str> = world.notes.iter().map(|n| n.reason).collect();
    assert!(scaled.iter().all(|r| *r != "SelectingAll"));
}

#[test]
fn rolling_updates_stay_within_surge_and_unavailability() {
    let pct = |s: &str| IntOrString::String(s.into());
    roll(3, pct("25%"), pct("25%"));
    roll(10, pct("25%"), pct("25%"));
    roll(4, IntOrString::Int(0), IntOrString::Int(1));
    roll(5, IntOrString::Int(2), IntOrString::Int(0));
    roll(1, pct("0%"), pct("100%"));
}

#[test]
fn going_back_to_an_old_template_reuses_its_replica_set_with_a_new_revision() {
    let mut world = rolled_out(3, "v1");
    spec_mut(&mut world.d).template = template("v2");
    world.converge(|_| {});
    spec_mut(&mut world.d).template = template("v1");
    world.converge(|_| {});
    assert_eq!(world.rss.len(), 2, "no third replica set");
    let v1 = world.by_version("v1").expect("v1");
    assert_eq!(rs_replicas(v1), 3);
    assert_eq!(annotation(v1, REVISION), Some("3"));
    assert_eq!(annotation(v1, REVISION_HISTORY), Some("1"));
    assert_eq!(rs_replicas(world.by_version("v2").expect("v2")), 0);
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_out() {
    let mut world = rolled_out(3, "v1");
    let spec = spec_mut(&mut world.d);
    spec.paused = Some(true);
    spec.template = template("v2");
    world.converge(|_| {});
    assert_eq!(world.rss.len(), 1, "no new replica set while paused");
    assert_eq!(
        world.condition(PROGRESSING).and_then(|c| c.reason),
        Some(PAUSED.into())
    );
    spec_mut(&mut world.d).replicas = Some(5);
    world.converge(|_| {});
    assert_eq!(rs_replicas(world.by_version("v1").expect("v1")), 5);

    spec_mut(&mut world.d).paused = Some(false);
    let plan = world.plan(&[]);
    assert!(plan.create.is_some(), "resuming continues the rollout");
    world.apply(plan);
    world.converge(|_| {});
    assert_eq!(rs_replicas(world.by_version("v2").expect("v2")), 5);
    assert_eq!(
        world.condition(PROGRESSING).and_then(|c| c.reason),
        Some(NEW_RS_AVAILABLE.into())
    );
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    let mut world = rolled_out(10, "v1");
    spec_mut(&mut world.d).template = template("v2");
    // One step: the new replica set gets the surge (3), the old one drops by 2.
    let plan = world.plan(&[]);
    world.apply(plan);
    world.settle(false);
    let plan = world.plan(&[]);
    world.apply(plan);
    world.settle(false);
    let (old, new) = (
        rs_replicas(world.by_version("v1").expect("v1")),
        rs_replicas(world.by_version("v2").expect("v2")),
    );
    assert_eq!((old, new), (8, 5), "surge 3 and 2 unavailable");
    spec_mut(&mut world.d).replicas = Some(20);
    let plan = world.plan(&[]);
    world.apply(plan);
    let (old2, new2) = (
        rs_replicas(world.by_version("v1").expect("v1")),
        rs_replicas(world.by_version("v2").expect("v2")),
    );
    // 20 + 5 surge = 25 spread by the sizes at 13 max replicas: 8·25/13 ≈ 15, 5·25/13 ≈ 10.
    assert_eq!((old2, new2), (15, 10));
    for rs in &world.rss {
        assert_eq!(annotation(rs, DESIRED_REPLICAS), Some("20"));
        assert_eq!(annotation(rs, MAX_REPLICAS), Some("25"));
    }
}

#[test]
fn recreate_waits_for_old_pods_before_creating_the_new_replica_set() {
    let mut world = World::new(recreate(deployment(2, "v1")));
    world.converge(|_| {});
    let old_uid = world.rss[0].metadata.uid.clone().expect("uid");
    spec_mut(&mut world.d).template = template("v2");

    let plan = world.plan(&[]);
    assert!(plan.create.is_none());
    assert_eq!(plan.updates.len(), 1);
    assert_eq!((plan.updates[0].from, plan.updates[0].to), (2, 0));
    world.apply(plan);
    world.settle(true);

    // The old replica set reports no pods, but one still terminates.
    let terminating = Pod {
        metadata: ObjectMeta {
            name: Some("web-old".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "old".into(),
                uid: old_uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            deletion_timestamp: Some(Time(at(0))),
            ..Default::default()
        },
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let plan = world.plan(&[&terminating]);
    assert!(plan.create.is_none(), "old pods still run");
    world.apply(plan);

    let plan = world.plan(&[]);
    let created = plan
        .create
        .clone()
        .expect("the new replica set once old pods are gone");
    assert_eq!(rs_replicas(&created), 2);
    world.apply(plan);
    world.converge(|_| {});
    assert_eq!(rs_replicas(world.by_version("v2").expect("v2")), 2);
}

#[test]
fn a_stalled_rollout_exceeds_its_progress_deadline() {
    let mut world = rolled_out(2, "v1");
    let spec = spec_mut(&mut world.d);
    spec.template = template("v2");
    spec.progress_deadline_seconds = Some(10);
    let plan = world.plan(&[]);
    world.apply(plan);
    // The new pods never become ready.
    for _ in 0..3 {
        world.settle(false);
        let plan = world.plan(&[]);
        assert!(
            plan.requeue_after
                .is_some_and(|d| d <= Duration::from_secs(11))
        );
        world.apply(plan);
    }
    assert_ne!(
        world.condition(PROGRESSING).and_then(|c| c.reason),
        Some(TIMED_OUT.into())
    );
    world.clock += 20;
    let plan = world.plan(&[]);
    world.apply(plan);
    let progressing = world.condition(PROGRESSING).expect("progressing");
    assert_eq!(progressing.reason.as_deref(), Some(TIMED_OUT));
    assert_eq!(progressing.status, "False");
    assert_eq!(world.plan(&[]).requeue_after, None);
}

#[test]
fn history_beyond_the_limit_is_deleted_oldest_first() {
    let mut world = rolled_out(1, "v0");
    spec_mut(&mut world.d).revision_history_limit = Some(2);
    for v in 1..=4 {
        spec_mut(&mut world.d).template = template(&format!("v{v}"));
        world.converge(|_| {});
    }
    let mut revisions: Vec<i64> = world.rss.iter().map(revision).collect();
    revisions.sort_unstable();
    assert_eq!(revisions, [3, 4, 5]);
}

#[test]
fn a_name_taken_by_another_template_bumps_the_collision_count() {
    let world = World::new(deployment(1, "v1"));
    let hash = pods::template_hash(&template("v1"), None);
    let squatter = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("web-{hash}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            template: Some(template("other")),
            ..Default::default()
        }),
        status: None,
    };
    let namespace = [&squatter];
    let plan = plan(Observed {
        deployment: &world.d,
        owned: Vec::new(),
        namespace: &namespace,
        pods: &[],
        now: at(0),
    })
    .expect("plan");
    assert!(plan.create.is_none());
    assert_eq!(plan.status.and_then(|s| s.collision_count), Some(1));
}

#[test]
fn replica_failures_are_copied_and_an_unchanged_world_plans_nothing() {
    let mut world = rolled_out(2, "v1");
    let failure = ReplicaSetCondition {
        type_: REPLICA_FAILURE.into(),
        status: "True".into(),
        reason: Some("FailedCreate".into()),
        message: Some("quota".into()),
        last_transition_time: Some(Time(at(0))),
    };
    world.rss[0].status = Some(ReplicaSetStatus {
        conditions: Some(vec![failure]),
        ..world.rss[0].status.clone().unwrap_or_default()
    });
    let plan = world.plan(&[]);
    world.apply(plan);
    let copied = world.condition(REPLICA_FAILURE).expect("copied");
    assert_eq!(copied.reason.as_deref(), Some("FailedCreate"));
    let again = world.plan(&[]);
    assert!(again.status.is_none() && again.updates.is_empty() && again.create.is_none());
}
