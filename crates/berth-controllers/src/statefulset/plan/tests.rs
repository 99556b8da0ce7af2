use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use proptest::prelude::*;

use super::super::testing::terminating;
use super::super::testing::*;
use super::*;

const V2: &str = "web-v2";

struct World {
    set: StatefulSet,
    pods: Vec<Pod>,
    claims: Vec<PersistentVolumeClaim>,
    update: &'static str,
    template: PodTemplateSpec,
}

impl World {
    fn new(set: StatefulSet, pods: Vec<Pod>) -> World {
        let template = set.spec.as_ref().expect("spec").template.clone();
        World {
            set,
            pods,
            claims: Vec::new(),
            update: V1,
            template,
        }
    }

    fn plan(&self) -> Plan {
        let pods: Vec<&Pod> = self.pods.iter().collect();
        let claims: BTreeMap<String, &PersistentVolumeClaim> = self
            .claims
            .iter()
            .map(|c| (c.metadata.name.clone().expect("name"), c))
            .collect();
        plan(&Observed {
            set: &self.set,
            pods: &pods,
            claims: &claims,
            current: Revision {
                name: V1,
                template: &self.template,
            },
            update: Revision {
                name: self.update,
                template: &self.template,
            },
            collision_count: 0,
            now: t(100),
        })
        .expect("plan")
    }
}

fn created(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::CreatePod { pod, .. } => pod.metadata.name.clone(),
            _ => None,
        })
        .collect()
}

fn deleted(plan: &Plan) -> Vec<(String, Why)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod { name, why, .. } => Some((name.clone(), *why)),
            _ => None,
        })
        .collect()
}

#[test]
fn ordered_ready_creates_one_pod_after_its_predecessors_are_ready() {
    let set = stateful_set(3);
    let mut world = World::new(set.clone(), vec![]);
    let plan = world.plan();
    assert_eq!(created(&plan), ["web-0"]);
    let Action::CreatePod { claims, .. } = &plan.actions[0] else {
        panic!("a create");
    };
    assert_eq!(claims[0].metadata.name.as_deref(), Some("www-web-0"));

    world.pods = vec![pod(&set, 0)];
    assert!(created(&world.plan()).is_empty(), "web-0 is Pending");
    world.pods = vec![running_not_ready(pod(&set, 0))];
    assert!(created(&world.plan()).is_empty(), "web-0 is not Ready");
    world.pods = vec![ready(pod(&set, 0))];
    assert_eq!(created(&world.plan()), ["web-1"]);
    world.pods = vec![ready(pod(&set, 0)), ready(pod(&set, 1))];
    assert_eq!(created(&world.plan()), ["web-2"]);
}

#[test]
fn min_ready_seconds_holds_the_next_pod_until_the_previous_is_available() {
    let mut set = stateful_set(2);
    set.spec.as_mut().expect("spec").min_ready_seconds = Some(200);
    let world = World::new(set.clone(), vec![ready(pod(&set, 0))]);
    let plan = world.plan();
    assert!(created(&plan).is_empty());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(100)));
    assert_eq!(plan.status.available_replicas, Some(0));
    assert_eq!(plan.status.ready_replicas, Some(1));
}

#[test]
fn parallel_creates_every_missing_pod_at_once() {
    let mut set = stateful_set(3);
    set.spec.as_mut().expect("spec").pod_management_policy = Some("Parallel".into());
    let world = World::new(set.clone(), vec![pod(&set, 1)]);
    assert_eq!(created(&world.plan()), ["web-0", "web-2"]);
}

#[test]
fn ordinals_start_where_spec_says() {
    let mut set = stateful_set(2);
    set.spec.as_mut().expect("spec").ordinals =
        Some(k8s_openapi::api::apps::v1::StatefulSetOrdinals { start: Some(3) });
    let world = World::new(set.clone(), vec![]);
    assert_eq!(created(&world.plan()), ["web-3"]);
}

#[test]
fn scale_down_deletes_from_the_highest_ordinal_one_at_a_time() {
    let set = stateful_set(1);
    let pods = (0..3).map(|i| ready(pod(&set, i))).collect();
    let mut world = World::new(set.clone(), pods);
    assert_eq!(deleted(&world.plan()), [("web-2".into(), Why::ScaleDown)]);
    world.pods[2] = terminating(world.pods[2].clone());
    assert!(deleted(&world.plan()).is_empty(), "waits for web-2 to go");
    world.pods.truncate(2);
    assert_eq!(deleted(&world.plan()), [("web-1".into(), Why::ScaleDown)]);
}

#[test]
fn scale_down_halts_while_a_replica_is_unhealthy() {
    let set = stateful_set(1);
    let world = World::new(
        set.clone(),
        vec![running_not_ready(pod(&set, 0)), ready(pod(&set, 1))],
    );
    assert!(deleted(&world.plan()).is_empty());
}

#[test]
fn the_first_unhealthy_condemned_pod_may_go_but_nothing_waits_behind_it() {
    let set = stateful_set(1);
    let world = World::new(
        set.clone(),
        vec![ready(pod(&set, 0)), running_not_ready(pod(&set, 1))],
    );
    assert_eq!(deleted(&world.plan()), [("web-1".into(), Why::ScaleDown)]);
}

#[test]
fn a_failed_pod_is_deleted_and_replaced_only_once_it_is_gone() {
    let set = stateful_set(2);
    let mut world = World::new(set.clone(), vec![failed(pod(&set, 0)), ready(pod(&set, 1))]);
    let plan = world.plan();
    assert_eq!(deleted(&plan), [("web-0".into(), Why::Failed)]);
    assert!(created(&plan).is_empty());
    world.pods[0] = terminating(world.pods[0].clone());
    let plan = world.plan();
    assert!(deleted(&plan).is_empty() && created(&plan).is_empty());
    world.pods.remove(0);
    assert_eq!(created(&world.plan()), ["web-0"]);
}

#[test]
fn existing_claims_are_reused_and_claims_being_deleted_are_waited_for() {
    let set = stateful_set(1);
    let mut world = World::new(set.clone(), vec![]);
    world.claims = vec![claim(&set, 0)];
    let plan = world.plan();
    let Action::CreatePod { claims, .. } = &plan.actions[0] else {
        panic!("a create");
    };
    assert!(claims.is_empty(), "the claim exists and is reused");
    world.claims[0].metadata.deletion_timestamp = world.pods.first().and(None).or(Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(1)),
    ));
    assert!(created(&world.plan()).is_empty());
}

#[test]
fn rolling_update_goes_from_the_highest_ordinal_and_waits_for_each() {
    let set = stateful_set(3);
    let pods: Vec<Pod> = (0..3).map(|i| ready(pod(&set, i))).collect();
    let mut world = World::new(set.clone(), pods);
    world.update = V2;
    assert_eq!(deleted(&world.plan()), [("web-2".into(), Why::Update)]);
    // web-2 recreated at v2 but not Ready yet: wait.
    world.pods[2] = at_revision(running_not_ready(pod(&set, 2)), V2);
    assert!(deleted(&world.plan()).is_empty());
    world.pods[2] = at_revision(ready(pod(&set, 2)), V2);
    assert_eq!(deleted(&world.plan()), [("web-1".into(), Why::Update)]);
    let plan = world.plan();
    assert_eq!(plan.status.updated_replicas, Some(1));
    assert_eq!(plan.status.current_replicas, Some(2));
    assert_eq!(plan.status.current_revision.as_deref(), Some(V1));
}

#[test]
fn a_missing_pod_is_made_at_the_update_revision_above_the_partition() {
    let mut set = stateful_set(3);
    set.spec
        .as_mut()
        .expect("spec")
        .update_strategy
        .as_mut()
        .expect("strategy")
        .rolling_update
        .as_mut()
        .expect("rolling")
        .partition = Some(2);
    let mut world = World::new(set.clone(), vec![ready(pod(&set, 0)), ready(pod(&set, 1))]);
    world.update = V2;
    let plan = world.plan();
    let Action::CreatePod { pod: new, .. } = &plan.actions[0] else {
        panic!("a create");
    };
    assert_eq!(identity::pod_revision(new), V2);
    // Below the partition nothing is updated.
    world.pods.push(at_revision(ready(pod(&set, 2)), V2));
    assert!(deleted(&world.plan()).is_empty());
    world.pods.remove(1);
    let plan = world.plan();
    let Action::CreatePod { pod: new, .. } = &plan.actions[0] else {
        panic!("a create");
    };
    assert_eq!(new.metadata.name.as_deref(), Some("web-1"));
    assert_eq!(identity::pod_revision(new), V1);
}

#[test]
fn max_unavailable_updates_several_pods_at_once() {
    let mut set = stateful_set(4);
    set.spec
        .as_mut()
        .expect("spec")
        .update_strategy
        .as_mut()
        .expect("strategy")
        .rolling_update
        .as_mut()
        .expect("rolling")
        .max_unavailable = Some(IntOrString::Int(2));
    let pods = (0..4).map(|i| ready(pod(&set, i))).collect();
    let mut world = World::new(set, pods);
    world.update = V2;
    let names: Vec<String> = deleted(&world.plan()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["web-3", "web-2"]);
}

#[test]
fn on_delete_never_deletes_for_an_update() {
    let mut set = stateful_set(2);
    set.spec.as_mut().expect("spec").update_strategy =
        Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
    let mut world = World::new(set.clone(), vec![ready(pod(&set, 0))]);
    world.update = V2;
    let plan = world.plan();
    let Action::CreatePod { pod: new, .. } = &plan.actions[0] else {
        panic!("a create");
    };
    assert_eq!(
        identity::pod_revision(new),
        V2,
        "new pods are at the update revision"
    );
    world.pods.push(at_revision(ready(pod(&set, 1)), V2));
    let plan = world.plan();
    assert!(plan.actions.is_empty());
    assert_eq!(plan.status.current_revision.as_deref(), Some(V1));
}

#[test]
fn a_complete_rolling_update_makes_the_update_revision_current() {
    let set = stateful_set(2);
    let pods = (0..2)
        .map(|i| at_revision(ready(pod(&set, i)), V2))
        .collect();
    let mut world = World::new(set, pods);
    world.update = V2;
    let plan = world.plan();
    assert_eq!(plan.status.current_revision.as_deref(), Some(V2));
    assert_eq!(plan.status.current_replicas, Some(2));
    assert_eq!(plan.status.updated_replicas, Some(2));
    assert_eq!(plan.status.replicas, 2);
    assert_eq!(plan.status.observed_generation, Some(1));
}

#[test]
fn scaled_down_claims_get_the_pod_as_owner_before_the_pod_goes() {
    let set = with_policy(stateful_set(1), false, true);
    let mut world = World::new(set.clone(), vec![ready(pod(&set, 0)), ready(pod(&set, 1))]);
    world.claims = vec![claim(&set, 0), claim(&set, 1)];
    let plan = world.plan();
    let Action::SetClaimOwners { claim } = &plan.actions[0] else {
        panic!("claim owners first: {:?}", plan.actions);
    };
    assert_eq!(claim.metadata.name.as_deref(), Some("www-web-1"));
    let owner = &claim.metadata.owner_references.as_ref().expect("owners")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Pod", "uid-web-1")
    );
    assert_eq!(deleted(&plan), [("web-1".into(), Why::ScaleDown)]);

    // Scaled up again before the collector deleted the claim: wait for it.
    world.pods.truncate(1);
    world.set.spec.as_mut().expect("spec").replicas = Some(2);
    world.claims[1] = *claim.clone();
    assert!(created(&world.plan()).is_empty());
}

#[test]
fn when_deleted_delete_makes_the_set_own_new_claims() {
    let set = with_policy(stateful_set(1), true, false);
    let world = World::new(set, vec![]);
    let plan = world.plan();
    let Action::CreatePod { claims, .. } = &plan.actions[0] else {
        panic!("a create");
    };
    let owner = &claims[0]
        .metadata
        .owner_references
        .as_ref()
        .expect("owners")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("StatefulSet", "set-uid")
    );
}

#[test]
fn a_set_being_deleted_only_reports_status() {
    let mut set = stateful_set(2);
    set.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(1)));
    let world = World::new(set.clone(), vec![ready(pod(&set, 0))]);
    let plan = world.plan();
    assert!(plan.actions.is_empty());
    assert_eq!(plan.status.replicas, 1);
}

#[derive(Debug, Clone, Copy)]
enum State {
    Missing,
    Pending,
    RunningNotReady,
    Ready,
    Terminating,
    Failed,
}

fn arb_state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Missing),
        Just(State::Pending),
        Just(State::RunningNotReady),
        Just(State::Ready),
        Just(State::Terminating),
        Just(State::Failed),
    ]
}

fn world_of(set: &StatefulSet, states: &[(State, bool)]) -> World {
    let pods = states
        .iter()
        .enumerate()
        .filter_map(|(i, (state, updated))| {
            let base = pod(set, i as i32);
            let base = if *updated {
                at_revision(base, V2)
            } else {
                base
            };
            match state {
                State::Missing => None,
                State::Pending => Some(base),
                State::RunningNotReady => Some(running_not_ready(base)),
                State::Ready => Some(ready(base)),
                State::Terminating => Some(terminating(ready(base))),
                State::Failed => Some(failed(base)),
            }
        })
        .collect();
    let mut world = World::new(set.clone(), pods);
    world.update = V2;
    world
}

proptest! {
    #[test]
    fn ordered_ready_never_outruns_an_unready_predecessor(
        replicas in 0i32..6,
        states in proptest::collection::vec((arb_state(), any::<bool>()), 0..8),
    ) {
        let set = stateful_set(replicas);
        let world = world_of(&set, &states);
        let plan = world.plan();
        let pods: BTreeMap<i32, &Pod> =
            world.pods.iter().filter_map(|p| Some((identity::ordinal(p)?, p))).collect();
        let creates = created(&plan);
        let deletes = deleted(&plan);
        // One write to pods at a time, and never a create and a delete together.
        prop_assert!(creates.len() + deletes.len() <= 1, "{creates:?} {deletes:?}");
        for name in &creates {
            let (_, k) = identity::parent_and_ordinal(name).expect("ordinal");
            prop_assert!(!pods.contains_key(&k), "{name} already has a pod object");
            for j in 0..k {
                let p = pods.get(&j);
                prop_assert!(
                    p.is_some_and(|p| healthy(p)),
                    "created {name} while web-{j} is not Running and Ready"
                );
            }
        }
        for (name, why) in &deletes {
            if *why == Why::ScaleDown {
                // Every replica is healthy before anything is scaled down.
                for j in 0..replicas {
                    prop_assert!(pods.get(&j).is_some_and(|p| healthy(p)));
                }
                let (_, k) = identity::parent_and_ordinal(name).expect("ordinal");
                prop_assert!(pods.keys().all(|o| *o <= k || pods[o].metadata.deletion_timestamp.is_some()));
            }
        }
    }

    #[test]
    fn parallel_never_makes_a_second_pod_of_one_identity(
        replicas in 0i32..6,
        states in proptest::collection::vec((arb_state(), any::<bool>()), 0..8),
    ) {
        let mut set = stateful_set(replicas);
        set.spec.as_mut().expect("spec").pod_management_policy = Some("Parallel".into());
        let world = world_of(&set, &states);
        let plan = world.plan();
        let existing: Vec<String> =
            world.pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
        for name in created(&plan) {
            prop_assert!(!existing.contains(&name), "{name} exists");
        }
        let mut touched: Vec<String> = deleted(&plan).into_iter().map(|(n, _)| n).collect();
        let before = touched.len();
        touched.sort();
        touched.dedup();
        prop_assert_eq!(before, touched.len());
    }
}
