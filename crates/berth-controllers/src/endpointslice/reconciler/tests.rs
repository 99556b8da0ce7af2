use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::endpoints::testing::{labels, named_port, pod, service, terminating, with_port};

fn zones() -> Zones {
    [("node-1".to_string(), Some("zone-a".to_string()))].into()
}

/// What the API server would hold after the plan: deleted slices gone, updated ones
/// replaced (their resourceVersion must be the stored one), created ones named.
fn apply(state: &mut Vec<EndpointSlice>, plan: &Plan, next: &mut u32) {
    for slice in &plan.delete {
        let before = state.len();
        state.retain(|s| s.metadata.uid != slice.metadata.uid);
        assert_eq!(state.len() + 1, before, "deleted a slice that exists");
    }
    for slice in &plan.update {
        let stored = state
            .iter_mut()
            .find(|s| s.metadata.uid == slice.metadata.uid)
            .expect("updated a slice that exists");
        assert_eq!(
            stored.metadata.resource_version,
            slice.metadata.resource_version
        );
        assert_eq!(stored.metadata.name, slice.metadata.name);
        assert_eq!(
            stored.address_type, slice.address_type,
            "addressType is immutable"
        );
        *stored = slice.clone();
        *next += 1;
        stored.metadata.resource_version = Some(next.to_string());
    }
    for slice in &plan.create {
        assert!(slice.metadata.name.is_none());
        *next += 1;
        let mut created = slice.clone();
        let prefix = created
            .metadata
            .generate_name
            .clone()
            .expect("generateName");
        created.metadata.name = Some(format!("{prefix}{next}"));
        created.metadata.uid = Some(format!("slice-uid-{next}"));
        created.metadata.resource_version = Some(next.to_string());
        state.push(created);
    }
}

fn run(service: &Service, pods: &[&Pod], state: &mut Vec<EndpointSlice>, max: usize) -> Plan {
    let existing: Vec<&EndpointSlice> = state.iter().collect();
    let plan = plan(service, pods, &existing, &zones(), max);
    let mut next = state.len() as u32 * 1000 + 1000;
    apply(state, &plan, &mut next);
    plan
}

/// (pod name, ready) of every endpoint, sorted.
fn endpoints(state: &[EndpointSlice]) -> Vec<(String, bool)> {
    let mut all: Vec<(String, bool)> = state
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let name = e
                .target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .unwrap_or_default();
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            (name, ready)
        })
        .collect();
    all.sort();
    all
}

fn counts(plan: &Plan) -> (usize, usize, usize) {
    (plan.create.len(), plan.update.len(), plan.delete.len())
}

#[test]
fn a_service_gets_one_slice_of_its_pods() {
    let svc = service("web", &[("app", "web")]);
    let (a, b, c) = (pod("a", true), pod("b", false), pod("c", true));
    let mut state = Vec::new();
    let plan = run(&svc, &[&a, &b, &c], &mut state, 100);
    assert_eq!(counts(&plan), (1, 0, 0));
    let slice = &state[0];
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(slice.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
    assert!(!labels.contains_key(HEADLESS_LABEL));
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.api_version.as_str()),
        ("Service", "v1")
    );
    assert_eq!(owner.uid, "uid-web");
    assert_eq!(owner.controller, Some(true));
    let ports = slice.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].port, Some(8080));
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(
        endpoints(&state),
        [("a".into(), true), ("b".into(), false), ("c".into(), true)]
    );
    let a_endpoint = &slice.endpoints[0];
    assert_eq!(a_endpoint.addresses, ["10.1.0.1"]);
    assert_eq!(a_endpoint.node_name.as_deref(), Some("node-1"));
    assert_eq!(a_endpoint.zone.as_deref(), Some("zone-a"));
    let conditions = a_endpoint.conditions.clone().unwrap();
    assert_eq!(
        (conditions.ready, conditions.serving, conditions.terminating),
        (Some(true), Some(true), Some(false))
    );

    // Nothing changed: nothing to write.
    assert!(run(&svc, &[&a, &b, &c], &mut state, 100).is_empty());
}

#[test]
fn a_readiness_flip_updates_the_slice_in_place() {
    let svc = service("web", &[("app", "web")]);
    let mut state = Vec::new();
    run(&svc, &[&pod("a", true), &pod("b", true)], &mut state, 100);
    let name = state[0].metadata.name.clone();
    let plan = run(&svc, &[&pod("a", true), &pod("b", false)], &mut state, 100);
    assert_eq!(counts(&plan), (0, 1, 0));
    assert_eq!(state[0].metadata.name, name);
    assert_eq!(endpoints(&state), [("a".into(), true), ("b".into(), false)]);
}

#[test]
fn terminating_pods_stay_as_serving_and_terminating_not_ready() {
    let mut svc = service("web", &[("app", "web")]);
    let going = terminating(pod("a", true));
    let mut state = Vec::new();
    run(&svc, &[&going], &mut state, 100);
    let c = state[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );

    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let unready = pod("b", false);
    let plan = run(&svc, &[&going, &unready], &mut state, 100);
    assert_eq!(counts(&plan), (0, 1, 0));
    assert_eq!(endpoints(&state), [("a".into(), true), ("b".into(), true)]);

    let mut done = pod("c", true);
    done.status.as_mut().unwrap().phase = Some("Failed".into());
    run(&svc, &[&done], &mut state, 100);
    assert!(
        endpoints(&state).is_empty(),
        "finished pods are not endpoints"
    );
}

#[test]
fn no_pods_leave_one_placeholder_which_pods_then_fill() {
    let svc = service("web", &[("app", "web")]);
    let mut state = Vec::new();
    let plan = run(&svc, &[], &mut state, 100);
    assert_eq!(counts(&plan), (1, 0, 0));
    assert!(state[0].endpoints.is_empty());
    assert_eq!(state[0].ports, None);
    assert!(run(&svc, &[], &mut state, 100).is_empty());

    let name = state[0].metadata.name.clone();
    let plan = run(&svc, &[&pod("a", true)], &mut state, 100);
    assert_eq!(counts(&plan), (0, 1, 0), "the placeholder is reused");
    assert_eq!(state[0].metadata.name, name);
    assert_eq!(state[0].ports.as_ref().unwrap()[0].port, Some(8080));

    let plan = run(&svc, &[], &mut state, 100);
    assert_eq!(
        counts(&plan),
        (0, 1, 0),
        "and becomes the placeholder again"
    );
    assert_eq!(state.len(), 1);
    assert!(state[0].endpoints.is_empty());
}

#[test]
fn slices_hold_at_most_the_maximum_and_shrink_in_place() {
    let svc = service("web", &[("app", "web")]);
    let pods: Vec<Pod> = (0..250).map(|i| pod(&format!("p{i:03}"), true)).collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let mut state = Vec::new();
    let plan = run(&svc, &refs, &mut state, 100);
    assert_eq!(counts(&plan), (3, 0, 0));
    let mut sizes: Vec<usize> = state.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);

    // Losing 60 pods from the first slice rewrites it; nothing is recreated.
    let fewer: Vec<&Pod> = refs[60..].to_vec();
    let plan = run(&svc, &fewer, &mut state, 100);
    assert_eq!(plan.create.len(), 0);
    assert_eq!(endpoints(&state).len(), 190);

    // New pods go into a slice with room rather than a new one.
    let more: Vec<Pod> = (0..30).map(|i| pod(&format!("q{i:03}"), true)).collect();
    let mut all = fewer.clone();
    all.extend(more.iter());
    let plan = run(&svc, &all, &mut state, 100);
    assert_eq!(plan.create.len(), 0);
    assert_eq!(endpoints(&state).len(), 220);
    assert!(state.iter().all(|s| s.endpoints.len() <= 100));
}

#[test]
fn a_named_target_port_groups_pods_by_the_port_they_resolve() {
    let mut svc = service("web", &[("app", "web")]);
    svc.spec.as_mut().unwrap().ports = Some(vec![named_port("http", "web")]);
    let a = with_port(pod("a", true), "web", 8080);
    let b = with_port(pod("b", true), "web", 9090);
    let c = with_port(pod("c", true), "web", 8080);
    let none = pod("d", true);
    let mut state = Vec::new();
    run(&svc, &[&a, &b, &c, &none], &mut state, 100);
    assert_eq!(state.len(), 3);
    let by_port: BTreeMap<Option<i32>, Vec<String>> = state
        .iter()
        .map(|s| {
            let port = s.ports.iter().flatten().next().and_then(|p| p.port);
            let names = s
                .endpoints
                .iter()
                .map(|e| e.target_ref.as_ref().unwrap().name.clone().unwrap())
                .collect();
            (port, names)
        })
        .collect();
    assert_eq!(by_port[&Some(8080)], ["a", "c"]);
    assert_eq!(by_port[&Some(9090)], ["b"]);
    assert_eq!(
        by_port[&None],
        ["d"],
        "a pod without the port is in a slice without ports"
    );

    // b's port changes to 8080: it moves to that slice, and its own slice goes.
    let b = with_port(pod("b", true), "web", 8080);
    let plan = run(&svc, &[&a, &b, &c, &none], &mut state, 100);
    assert_eq!(counts(&plan), (0, 1, 1));
    assert_eq!(state.len(), 2);
}

#[test]
fn slices_of_an_earlier_service_of_the_name_are_replaced() {
    let svc = service("web", &[("app", "web")]);
    let mut state = Vec::new();
    run(&svc, &[&pod("a", true)], &mut state, 100);
    let mut recreated = svc.clone();
    recreated.metadata.uid = Some("uid-web-2".into());
    let plan = run(&recreated, &[&pod("a", true)], &mut state, 100);
    assert_eq!(counts(&plan), (1, 0, 1));
    assert_eq!(state.len(), 1);
    let owner = &state[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, "uid-web-2");
}

#[test]
fn a_service_changing_family_gets_slices_of_the_new_address_type() {
    let svc = service("web", &[("app", "web")]);
    let mut state = Vec::new();
    run(&svc, &[&pod("a", true)], &mut state, 100);
    let mut v6 = svc.clone();
    v6.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    let plan = run(&v6, &[&pod("a", true)], &mut state, 100);
    assert_eq!(
        counts(&plan),
        (1, 0, 1),
        "addressType is immutable: delete and create"
    );
    assert_eq!(state[0].address_type, "IPv6");
    assert!(state[0].endpoints.is_empty(), "the pod has no IPv6 address");
}

#[test]
fn pods_on_unknown_nodes_wait_unless_every_address_is_published() {
    let mut svc = service("web", &[("app", "web")]);
    let mut stray = pod("b", true);
    stray.spec.as_mut().unwrap().node_name = Some("node-9".into());
    let existing: Vec<&EndpointSlice> = Vec::new();
    let plan = plan(&svc, &[&pod("a", true), &stray], &existing, &zones(), 100);
    assert_eq!(plan.unknown_nodes, ["b"]);
    assert_eq!(plan.create[0].endpoints.len(), 1);

    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let plan = super::plan(&svc, &[&pod("a", true), &stray], &existing, &zones(), 100);
    assert!(plan.unknown_nodes.is_empty());
    assert_eq!(plan.create[0].endpoints.len(), 2);
    assert_eq!(plan.create[0].endpoints[1].zone, None);
}

#[test]
fn service_labels_follow_and_headless_services_are_labelled() {
    let mut svc = service("web", &[("app", "web")]);
    let mut state = Vec::new();
    run(&svc, &[&pod("a", true)], &mut state, 100);
    svc.metadata.labels = Some(labels(&[("team", "blue"), (SERVICE_NAME_LABEL, "x")]));
    svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let plan = run(&svc, &[&pod("a", true)], &mut state, 100);
    assert_eq!(counts(&plan), (0, 1, 0));
    let got = state[0].metadata.labels.clone().unwrap();
    assert_eq!(got["team"], "blue");
    assert_eq!(
        got[SERVICE_NAME_LABEL], "web",
        "reserved labels are the controller's"
    );
    assert_eq!(got[HEADLESS_LABEL], "");
}

#[test]
fn a_service_being_deleted_gets_no_new_slices() {
    let mut svc = service("web", &[("app", "web")]);
    svc.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let existing: Vec<&EndpointSlice> = Vec::new();
    let plan = plan(&svc, &[&pod("a", true)], &existing, &zones(), 100);
    assert!(plan.is_empty());
}

#[test]
fn an_endpoint_listed_twice_is_kept_once() {
    let svc = service("web", &[("app", "web")]);
    let mut state = Vec::new();
    run(&svc, &[&pod("a", true), &pod("b", true)], &mut state, 100);
    let mut copy = state[0].clone();
    copy.metadata.name = Some("web-copy".into());
    copy.metadata.uid = Some("copy-uid".into());
    state.push(copy);
    run(&svc, &[&pod("a", true), &pod("b", true)], &mut state, 100);
    assert_eq!(endpoints(&state), [("a".into(), true), ("b".into(), true)]);
    assert_eq!(state.len(), 1);
}

/// One random pod: (ready, terminating, finished, has an IP, web port: none / 8080 / 9090).
fn arbitrary_pod() -> impl Strategy<Value = (bool, bool, bool, bool, u8)> {
    (
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        0u8..3,
    )
}

fn build(i: usize, (ready, going, done, ip, port): (bool, bool, bool, bool, u8)) -> Pod {
    let mut p = pod(&format!("p{i:03}"), ready);
    if going {
        p = terminating(p);
    }
    if done {
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
    }
    if !ip {
        p.status.as_mut().unwrap().pod_ip = None;
        p.status.as_mut().unwrap().pod_ips = None;
    }
    match port {
        1 => with_port(p, "web", 8080),
        2 => with_port(p, "web", 9090),
        _ => p,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Over a series of pod sets, each reconcile leaves slices that hold every published pod
    /// exactly once, with its readiness and its own ports, none over the maximum; and a
    /// second reconcile of the same pods writes nothing.
    #[test]
    fn slices_cover_exactly_the_published_pods_once(
        rounds in prop::collection::vec(prop::collection::vec(arbitrary_pod(), 0..40), 1..5),
        named in any::<bool>(),
        publish_not_ready in any::<bool>(),
        max in 1usize..8,
    ) {
        let mut svc = service("web", &[("app", "web")]);
        if named {
            svc.spec.as_mut().unwrap().ports = Some(vec![named_port("http", "web")]);
        }
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(publish_not_ready);
        let mut state: Vec<EndpointSlice> = Vec::new();
        let mut next = 0u32;
        for round in rounds {
            let pods: Vec<Pod> = round.into_iter().enumerate().map(|(i, p)| build(i, p)).collect();
            let refs: Vec<&Pod> = pods.iter().collect();
            let existing: Vec<&EndpointSlice> = state.iter().collect();
            let decided = plan(&svc, &refs, &existing, &zones(), max);
            apply(&mut state, &decided, &mut next);

            let mut expected: Vec<(String, bool)> = pods
                .iter()
                .filter(|p| addresses::should_publish(p, true))
                .map(|p| {
                    let ready = publish_not_ready
                        || (addresses::is_ready(p) && !addresses::is_terminating(p));
                    (p.metadata.name.clone().unwrap(), ready)
                })
                .collect();
            expected.sort();
            prop_assert_eq!(endpoints(&state), expected, "every published pod once");
            prop_assert!(!state.is_empty(), "a placeholder at least");
            for slice in &state {
                prop_assert!(slice.endpoints.len() <= max);
                for endpoint in &slice.endpoints {
                    let name = endpoint.target_ref.as_ref().unwrap().name.as_deref();
                    let pod = pods.iter().find(|p| p.metadata.name.as_deref() == name).unwrap();
                    let ports = endpoint_ports(&svc, pod);
                    prop_assert_eq!(slice.ports.clone().unwrap_or_default(), ports);
                }
            }
            let existing: Vec<&EndpointSlice> = state.iter().collect();
            let again = plan(&svc, &refs, &existing, &zones(), max);
            prop_assert!(again.is_empty(), "a second pass writes nothing: {:?}", again);
        }
    }
}
