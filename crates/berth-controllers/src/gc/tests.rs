use super::*;

fn info(kind: &str) -> &'static ResourceInfo {
    resources::RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.group.is_empty())
        .expect("a core kind")
}

fn reference(owner: &Node, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: owner.resource.api_version(),
        kind: owner.resource.kind.to_string(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: None,
        block_owner_deletion: block.then_some(true),
    }
}

fn node(kind: &str, namespace: Option<&str>, name: &str, owners: Vec<OwnerReference>) -> Node {
    Node {
        resource: info(kind),
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        uid: format!("uid-{name}"),
        resource_version: Some("1".into()),
        owners,
        finalizers: Vec::new(),
        deleting: false,
    }
}

fn cm(name: &str, owners: Vec<OwnerReference>) -> Node {
    node("ConfigMap", Some("ns"), name, owners)
}

fn deleting(mut n: Node, finalizer: &str) -> Node {
    n.deleting = true;
    n.finalizers.push(finalizer.to_string());
    n
}

fn graph(nodes: &[&Node]) -> Graph {
    let mut g = Graph::default();
    for n in nodes {
        g.upsert((*n).clone());
    }
    g
}

#[test]
fn a_dependent_with_a_live_owner_needs_no_reads() {
    let owner = cm("owner", vec![]);
    let dep = cm("dep", vec![reference(&owner, false)]);
    let g = graph(&[&owner, &dep]);
    assert_eq!(plan(&g, "uid-dep"), Action::Nothing);
    assert_eq!(plan(&g, "uid-owner"), Action::Nothing);
}

#[test]
fn an_owner_the_graph_does_not_show_is_verified_not_assumed_gone() {
    let owner = cm("owner", vec![]);
    let dep = cm("dep", vec![reference(&owner, false)]);
    let g = graph(&[&dep]);
    assert_eq!(plan(&g, "uid-dep"), Action::Verify);
    // Same uid, other name: not the owner the reference names.
    let mut renamed = owner.clone();
    renamed.name = "other".into();
    assert_eq!(plan(&graph(&[&renamed, &dep]), "uid-dep"), Action::Verify);
}

#[test]
fn a_namespaced_owner_in_another_namespace_is_not_an_owner() {
    let owner = node("ConfigMap", Some("elsewhere"), "owner", vec![]);
    let dep = cm("dep", vec![reference(&owner, false)]);
    assert_eq!(plan(&graph(&[&owner, &dep]), "uid-dep"), Action::Verify);
    // A cluster-scoped owner is fine from any namespace.
    let ns = node("Namespace", None, "cluster-owner", vec![]);
    let dep = cm("dep", vec![reference(&ns, false)]);
    assert_eq!(plan(&graph(&[&ns, &dep]), "uid-dep"), Action::Nothing);
}

#[test]
fn a_foreground_owner_waits_for_blocking_dependents_only() {
    let owner = deleting(cm("owner", vec![]), FOREGROUND);
    let blocking = cm("blocking", vec![reference(&owner, true)]);
    let loose = cm("loose", vec![reference(&owner, false)]);
    assert_eq!(
        plan(&graph(&[&owner, &blocking, &loose]), "uid-owner"),
        Action::Nothing
    );
    assert_eq!(
        plan(&graph(&[&owner, &loose]), "uid-owner"),
        Action::RemoveFinalizer(FOREGROUND)
    );
    // Its dependents see an owner waiting for them, which the graph cannot vouch for.
    assert_eq!(plan(&graph(&[&owner, &loose]), "uid-loose"), Action::Verify);
}

#[test]
fn removing_a_blocking_dependent_marks_the_owner_for_a_look() {
    let owner = deleting(cm("owner", vec![]), FOREGROUND);
    let blocking = cm("blocking", vec![reference(&owner, true)]);
    let mut g = graph(&[&owner, &blocking]);
    let dirty = g.remove("uid-blocking");
    assert!(dirty.contains("uid-owner"));
    assert_eq!(plan(&g, "uid-owner"), Action::RemoveFinalizer(FOREGROUND));
    // And an owner starting foreground deletion marks its dependents.
    let mut g = graph(&[&cm("owner", vec![]), &blocking]);
    assert!(g.upsert(owner.clone()).contains("uid-blocking"));
}

#[test]
fn an_orphaning_owner_releases_every_dependent() {
    let owner = deleting(cm("owner", vec![]), ORPHAN);
    let a = cm("a", vec![reference(&owner, true)]);
    let b = cm("b", vec![reference(&owner, false)]);
    let Action::Orphan { mut dependents } = plan(&graph(&[&owner, &a, &b]), "uid-owner") else {
        panic!("orphaning");
    };
    dependents.sort();
    assert_eq!(dependents, ["uid-a", "uid-b"]);
    assert_eq!(
        plan(&graph(&[&owner]), "uid-owner"),
        Action::Orphan { dependents: vec![] }
    );
}

#[test]
fn a_dependent_goes_only_when_every_owner_is_gone() {
    let dep = cm("dep", vec![]);
    let delete = |policy| Action::Delete {
        policy,
        unblock: vec![],
    };
    let states = |s: &[OwnerState]| -> Vec<(String, OwnerState)> {
        s.iter()
            .enumerate()
            .map(|(i, s)| (format!("o{i}"), *s))
            .collect()
    };
    use OwnerState::*;
    assert_eq!(
        decide(&dep, &states(&[Dangling]), false, false),
        delete(PolicyChoice::Background)
    );
    assert_eq!(
        decide(&dep, &states(&[Dangling, Dangling]), false, false),
        delete(PolicyChoice::Background)
    );
    assert_eq!(
        decide(&dep, &states(&[Solid]), false, false),
        Action::Nothing
    );
    assert_eq!(
        decide(
            &dep,
            &states(&[Solid, Dangling, WaitingForDependents]),
            false,
            false
        ),
        Action::RemoveOwners(vec!["o1".into(), "o2".into()])
    );
    assert_eq!(
        decide(&dep, &states(&[Dangling, Unresolvable]), false, false),
        Action::Nothing,
        "an unresolvable reference is never taken as absent"
    );
    let mut terminating = dep.clone();
    terminating.deleting = true;
    assert_eq!(
        decide(&terminating, &states(&[Dangling]), false, false),
        Action::Nothing
    );
}

#[test]
fn a_dependent_of_a_foreground_owner_cascades_in_the_foreground() {
    let owner = cm("owner", vec![]);
    let dep = cm("dep", vec![reference(&owner, true)]);
    let waiting = [("uid-owner".to_string(), OwnerState::WaitingForDependents)];
    assert_eq!(
        decide(&dep, &waiting, true, false),
        Action::Delete {
            policy: PolicyChoice::Foreground,
            unblock: vec![]
        }
    );
    assert_eq!(
        decide(&dep, &waiting, false, false),
        Action::Delete {
            policy: PolicyChoice::Background,
            unblock: vec![]
        },
        "a leaf is deleted with its own policy"
    );
    assert_eq!(
        decide(&dep, &waiting, true, true),
        Action::Delete {
            policy: PolicyChoice::Foreground,
            unblock: vec!["uid-owner".into()]
        },
        "a possible cycle unblocks the owner"
    );
    let orphaning = deleting(dep.clone(), ORPHAN);
    let mut orphaning_live = orphaning.clone();
    orphaning_live.deleting = false;
    assert_eq!(
        decide(
            &orphaning_live,
            &[("uid-owner".into(), OwnerState::Dangling)],
            false,
            false
        ),
        Action::Delete {
            policy: PolicyChoice::Orphan,
            unblock: vec![]
        },
        "a dependent's own finalizers choose its policy"
    );
}

#[test]
fn backoff_doubles_and_a_change_overrides_it() {
    let mut q = Queue::new();
    q.retry("a".into());
    q.retry("a".into());
    let due = q.next_due().expect("queued");
    assert!(due > Instant::now() + FIRST_BACKOFF);
    q.add("a".into());
    assert_eq!(q.take_due(Instant::now() + Duration::from_millis(1)), ["a"]);
    assert!(q.next_due().is_none());
}
