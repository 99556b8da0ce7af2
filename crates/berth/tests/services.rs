//! Service cluster IPs and node ports inside `berth up`, driven by the real kubectl and kube-rs:
//! addresses from 10.43.0.0/16 without duplicates (also under 100 concurrent creates),
//! requested ones honoured or refused with Kubernetes' words, none for headless Services, node
//! ports for NodePort and LoadBalancer Services, everything freed on delete (directly, by the
//! garbage collector, by a namespace deletion), kept across a kill -9, and the `kubernetes`
//! Service with its endpoints, and the ServiceLB controller's load-balancer ingress (the node's
//! address) on LoadBalancer Services without a class. The allocation keys in the store are
//! checked against the Services after 1,000 create/delete cycles.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{Berth, Kubectl};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// No node agent (so no service proxy), and Kubernetes' default ranges, which these tests
/// name literally.
const CONTROL_PLANE_WITH_DEFAULT_RANGES: &[&str] = &[
    "--disable-agent",
    "--service-cidr",
    "10.43.0.0/16",
    "--service-node-port-range",
    "30000-32767",
];

#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn service_json(k: &Kubectl, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", "svc", name, "-o", "json"])).expect("JSON")
}

fn cluster_ip(k: &Kubectl, name: &str) -> String {
    k.ok(&["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"])
}

fn in_service_cidr(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let [a, b, c, d] = ip.octets();
    (a, b) == (10, 43) && (c, d) != (0, 0) && (c, d) != (255, 255)
}

fn manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n{spec}"
    )
}

/// Fails with the differences (not two maps of a thousand entries) unless the allocation keys
/// and what the Services hold agree.
#[track_caller]
fn assert_same(keys: &BTreeMap<String, String>, held: &BTreeMap<String, String>) {
    let extra: Vec<_> = keys
        .iter()
        .filter(|(k, v)| held.get(*k) != Some(*v))
        .take(10)
        .collect();
    let missing: Vec<_> = held
        .iter()
        .filter(|(k, v)| keys.get(*k) != Some(*v))
        .take(10)
        .collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{} keys, {} held; keys no Service holds (first 10): {extra:?}; held without a key (first 10): {missing:?}",
        keys.len(),
        held.len()
    );
}

/// Every allocation key in the stopped server's store, and every Service's allocations.
async fn store_allocations(berth: &Berth) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    use berth_store::Store;
    let store = berth_store::sqlite::SqliteStore::open(&berth.data_dir().join("store"))
        .expect("open the store");
    let mut keys = BTreeMap::new();
    for prefix in [
        berth_apiserver::services::SERVICE_IPS_PREFIX,
        berth_apiserver::services::SERVICE_NODE_PORTS_PREFIX,
    ] {
        for kv in store
            .range(berth_store::RangeRequest::prefix(prefix))
            .await
            .expect("range")
            .kvs
        {
            let owner: Value = serde_json::from_slice(&kv.value).expect("JSON");
            keys.insert(
                kv.key.clone(),
                format!(
                    "{}/{}",
                    owner["namespace"].as_str().unwrap(),
                    owner["name"].as_str().unwrap()
                ),
            );
        }
    }
    let mut held = BTreeMap::new();
    for kv in store
        .range(berth_store::RangeRequest::prefix(
            "/registry/core/services/",
        ))
        .await
        .expect("range")
        .kvs
    {
        let service: Value = serde_json::from_slice(&kv.value).expect("JSON");
        let owner = format!(
            "{}/{}",
            service["metadata"]["namespace"].as_str().unwrap(),
            service["metadata"]["name"].as_str().unwrap()
        );
        for claim in berth_apiserver::services::held(&service) {
            assert!(
                held.insert(claim.key(), owner.clone()).is_none(),
                "{claim} is held twice"
            );
        }
    }
    (keys, held)
}

#[test]
fn cluster_ips_come_from_the_service_cidr_and_headless_gets_none() {
    let berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let k = berth.kubectl();
    let mut ips = BTreeSet::new();
    for name in ["a", "b", "c", "d", "e"] {
        k.ok(&["create", "service", "clusterip", name, "--tcp=80:8080"]);
        let ip = cluster_ip(&k, name);
        assert!(in_service_cidr(&ip), "{name} got {ip}");
        assert_ne!(ip, "10.43.0.1", "the kubernetes Service's address");
        assert!(ips.insert(ip));
        let svc = service_json(&k, name);
        assert_eq!(svc["spec"]["clusterIPs"], json!([svc["spec"]["clusterIP"]]));
    }
    k.ok(&["create", "service", "clusterip", "db", "--clusterip=None"]);
    assert_eq!(cluster_ip(&k, "db"), "None");
    let table = k.ok(&["get", "svc", "db"]);
    assert!(table.lines().nth(1).unwrap().contains("None"), "{table}");
    k.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=db.example.com",
    ]);
    assert_eq!(cluster_ip(&k, "ext"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_creates_get_a_hundred_addresses() {
    let berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let client = berth.client().await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let creates = (0..100).map(|i| {
        let api = api.clone();
        async move {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": format!("s{i}")},
                "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}
            }))
            .unwrap();
            api.create(&PostParams::default(), &svc).await
        }
    });
    let created = futures::future::join_all(creates).await;
    let mut ips = BTreeSet::new();
    for svc in created {
        let svc = svc.expect("create");
        let ip = svc.spec.unwrap().cluster_ip.unwrap();
        assert!(in_service_cidr(&ip), "{ip}");
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
    }
    assert_eq!(ips.len(), 100);
}

#[test]
fn requested_addresses_are_honoured_and_taken_ones_refused() {
    let berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let k = berth.kubectl();
    k.apply(&manifest("dns", "  clusterIP: 10.43.0.10\n"));
    assert_eq!(cluster_ip(&k, "dns"), "10.43.0.10");
    let taken = k.run_stdin(
        &["apply", "-f", "-"],
        &manifest("dns2", "  clusterIP: 10.43.0.10\n"),
    );
    assert_ne!(taken.code, 0);
    assert!(
        taken.stderr.contains(
            "The Service \"dns2\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.43.0.10\"}: failed to allocate IP 10.43.0.10: provided IP is already allocated"
        ),
        "{}",
        taken.stderr
    );
    let outside = k.run_stdin(
        &["apply", "-f", "-"],
        &manifest("far", "  clusterIP: 10.96.0.10\n"),
    );
    assert_ne!(outside.code, 0);
    assert!(
        outside.stderr.contains(
            "The Service \"far\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: the provided IP (10.96.0.10) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
        ),
        "{}",
        outside.stderr
    );
    // The kubernetes Service has 10.43.0.1.
    let first = k.run_stdin(
        &["apply", "-f", "-"],
        &manifest("first", "  clusterIP: 10.43.0.1\n"),
    );
    assert!(
        first.stderr.contains("provided IP is already allocated"),
        "{}",
        first.stderr
    );

    // The address is immutable.
    let moved = k.run(&[
        "patch",
        "svc",
        "dns",
        "--type=merge",
        "-p",
        r#"{"spec": {"clusterIP": "10.43.0.11", "clusterIPs": ["10.43.0.11"]}}"#,
    ]);
    assert_ne!(moved.code, 0);
    assert!(
        moved.stderr.contains("may not change once set"),
        "{}",
        moved.stderr
    );

    // Deleting frees it: the same address can be asked for again.
    k.ok(&["delete", "svc", "dns"]);
    k.apply(&manifest("dns2", "  clusterIP: 10.43.0.10\n"));
    assert_eq!(cluster_ip(&k, "dns2"), "10.43.0.10");

    // Re-applying the manifest (no clusterIP in it) keeps the address.
    k.apply(&manifest("web", ""));
    let ip = cluster_ip(&k, "web");
    k.apply(&manifest("web", "  sessionAffinity: ClientIP\n"));
    assert_eq!(cluster_ip(&k, "web"), ip);
    let replaced = k.run_stdin(&["replace", "-f", "-"], &manifest("web", ""));
    assert_eq!(replaced.code, 0, "{}", replaced.stderr);
    assert_eq!(cluster_ip(&k, "web"), ip);
}

#[test]
fn node_port_and_load_balancer_services_get_node_ports() {
    let berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let k = berth.kubectl();
    k.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "--tcp=443:8443",
    ]);
    let np = service_json(&k, "np");
    let ports: Vec<i64> = np["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["nodePort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports.len(), 2);
    assert!(
        ports.iter().all(|p| (30000..=32767).contains(p)),
        "{ports:?}"
    );
    assert_ne!(ports[0], ports[1]);
    assert!(in_service_cidr(np["spec"]["clusterIP"].as_str().unwrap()));
    let table = k.ok(&["get", "svc", "np"]);
    assert!(table.contains(&format!("80:{}/TCP", ports[0])), "{table}");

    k.ok(&["create", "service", "loadbalancer", "lb", "--tcp=80:8080"]);
    let lb = service_json(&k, "lb");
    let lb_port = lb["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&lb_port));
    assert!(!ports.contains(&lb_port));

    k.apply(&manifest(
        "local",
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n",
    ));
    let local = service_json(&k, "local");
    let hc = local["spec"]["healthCheckNodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&hc));

    // A requested node port: honoured, then refused to the next Service.
    k.apply(&manifest(
        "fixed",
        "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n",
    ));
    let again = k.run_stdin(
        &["apply", "-f", "-"],
        &manifest(
            "fixed2",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n",
        ),
    );
    assert!(
        again.stderr.contains(
            "The Service \"fixed2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        ),
        "{}",
        again.stderr
    );
    let low = k.run_stdin(
        &["apply", "-f", "-"],
        &manifest(
            "low",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 8080}]\n",
        ),
    );
    assert!(
        low.stderr.contains(
            "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"
        ),
        "{}",
        low.stderr
    );
    // Turning it into a ClusterIP Service gives the port back.
    k.ok(&[
        "patch",
        "svc",
        "fixed",
        "--type=merge",
        "-p",
        r#"{"spec": {"type": "ClusterIP"}}"#,
    ]);
    k.apply(&manifest(
        "fixed2",
        "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n",
    ));
}

#[test]
fn the_garbage_collector_and_namespace_deletion_free_allocations() {
    let berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let k = berth.kubectl();
    // A Service owned by a ConfigMap: the GC deletes it when the owner goes.
    k.ok(&["create", "configmap", "owner"]);
    let uid = k.ok(&[
        "get",
        "configmap",
        "owner",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    k.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: owned\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}]\nspec:\n  type: NodePort\n  clusterIP: 10.43.0.40\n  ports: [{{port: 80, nodePort: 30040}}]\n"
    ));
    k.ok(&["delete", "configmap", "owner"]);
    wait_for("the GC to delete the Service", || {
        k.run(&["get", "svc", "owned"]).code != 0
    });
    k.apply(&manifest(
        "reuse1",
        "  type: NodePort\n  clusterIP: 10.43.0.40\n  ports: [{port: 80, nodePort: 30040}]\n",
    ));

    // Services in a namespace being deleted.
    k.ok(&["create", "namespace", "doomed"]);
    let doomed = manifest(
        "svc",
        "  type: NodePort\n  clusterIP: 10.43.0.41\n  ports: [{port: 80, nodePort: 30041}]\n",
    );
    let run = k.run_stdin(&["apply", "-n", "doomed", "-f", "-"], &doomed);
    assert_eq!(run.code, 0, "{}", run.stderr);
    k.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    wait_for("the namespace to go", || {
        k.run(&["get", "namespace", "doomed"]).code != 0
    });
    k.apply(&manifest(
        "reuse2",
        "  type: NodePort\n  clusterIP: 10.43.0.41\n  ports: [{port: 80, nodePort: 30041}]\n",
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_hold_across_a_kill_and_restart() {
    let mut berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let k = berth.kubectl();
    k.ok(&["create", "service", "clusterip", "random", "--tcp=80:80"]);
    let random = cluster_ip(&k, "random");
    k.apply(&manifest(
        "asked",
        "  type: NodePort\n  clusterIP: 10.43.0.50\n  ports: [{port: 80, nodePort: 30050}]\n",
    ));
    k.ok(&["create", "service", "clusterip", "gone", "--tcp=80:80"]);
    let gone = cluster_ip(&k, "gone");
    k.ok(&["delete", "svc", "gone"]);

    berth.kill();
    berth.restart();
    let k = berth.kubectl();
    assert_eq!(cluster_ip(&k, "random"), random);
    for (name, spec) in [
        ("thief1", format!("  clusterIP: {random}\n")),
        ("thief2", "  clusterIP: 10.43.0.50\n".to_string()),
    ] {
        let run = k.run_stdin(&["apply", "-f", "-"], &manifest(name, &spec));
        assert!(
            run.stderr.contains("provided IP is already allocated"),
            "{name}: {}",
            run.stderr
        );
    }
    let run = k.run_stdin(
        &["apply", "-f", "-"],
        &manifest(
            "thief3",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 30050}]\n",
        ),
    );
    assert!(
        run.stderr.contains("provided port is already allocated"),
        "{}",
        run.stderr
    );
    // What was freed before the crash is free after it.
    k.apply(&manifest("finder", &format!("  clusterIP: {gone}\n")));

    berth.kill();
    let (keys, held) = store_allocations(&berth).await;
    assert_same(&keys, &held);
    assert_eq!(keys.len(), 5, "{keys:?}"); // kubernetes, random, asked (IP + port), finder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_points_at_the_api_server() {
    let mut berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let k = berth.kubectl();
    let table = k.ok(&["get", "svc", "kubernetes"]);
    let row = table.lines().nth(1).expect("a row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["kubernetes", "ClusterIP", "10.43.0.1", "<none>"],
        "{table}"
    );
    assert_eq!(cells[4], "443/TCP", "{table}");
    let svc = service_json(&k, "kubernetes");
    assert_eq!(svc["spec"]["ports"][0]["name"], "https");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], berth.port);
    assert_eq!(svc["metadata"]["labels"]["component"], "apiserver");

    let endpoints = k.ok(&["get", "endpoints", "kubernetes"]);
    assert!(
        endpoints.contains(&format!("127.0.0.1:{}", berth.port)),
        "{endpoints}"
    );
    let slice: Value =
        serde_json::from_str(&k.ok(&["get", "endpointslice", "kubernetes", "-o", "json"])).unwrap();
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["127.0.0.1"]));
    assert_eq!(slice["ports"][0]["port"], berth.port);
    let uid = svc["metadata"]["uid"].clone();

    // Restarted on another port: corrected, the same objects.
    berth.kill();
    berth.port = common::free_port();
    berth.launch();
    let k = berth.kubectl();
    let svc = service_json(&k, "kubernetes");
    assert_eq!(svc["metadata"]["uid"], uid);
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], berth.port);
    let endpoints = k.ok(&["get", "endpoints", "kubernetes"]);
    assert!(
        endpoints.contains(&format!("127.0.0.1:{}", berth.port)),
        "{endpoints}"
    );
    let slice: Value =
        serde_json::from_str(&k.ok(&["get", "endpointslice", "kubernetes", "-o", "json"])).unwrap();
    assert_eq!(slice["ports"][0]["port"], berth.port);

    // Deleted, it comes back at the next start.
    k.ok(&["delete", "svc", "kubernetes"]);
    berth.restart();
    assert_eq!(cluster_ip(&berth.kubectl(), "kubernetes"), "10.43.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_create_delete_cycles_leak_nothing() {
    let mut berth = Berth::start_with(CONTROL_PLANE_WITH_DEFAULT_RANGES);
    let client = berth.client().await;
    let api: Api<Service> = Api::namespaced(client, "default");
    // Eight workers, 125 cycles each, mixing ClusterIP, NodePort and LoadBalancer (Local).
    let workers = (0..8).map(|w| {
        let api = api.clone();
        async move {
            for i in 0..125 {
                let name = format!("w{w}-{}", i % 3);
                let spec = match i % 3 {
                    0 => json!({"selector": {"app": "x"}, "ports": [{"port": 80}]}),
                    1 => json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
                    _ => json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
                };
                let svc: Service =
                    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
                        .unwrap();
                api.create(&PostParams::default(), &svc)
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
                api.delete(&name, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("delete {name}: {e}"));
            }
        }
    });
    futures::future::join_all(workers).await;
    let left = api.list(&Default::default()).await.unwrap();
    let names: Vec<String> = left
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["kubernetes"]);

    berth.kill();
    let (keys, held) = store_allocations(&berth).await;
    assert_same(&keys, &held);
    assert_eq!(
        keys,
        BTreeMap::from([(
            format!("{}10.43.0.1", berth_apiserver::services::SERVICE_IPS_PREFIX),
            "default/kubernetes".to_string()
        )])
    );
}

#[test]
fn load_balancer_services_get_the_node_address_as_ingress() {
    // With the node agent: the ingress is the Node's InternalIP, and only a Ready Node counts.
    let berth = Berth::start();
    let k = berth.kubectl();
    let nodes = |path: &str| {
        k.run(&[
            "get",
            "nodes",
            "-o",
            &format!("jsonpath={{.items[*]{path}}}"),
        ])
        .stdout
    };
    wait_for("the node to be Ready", || {
        nodes(r#".status.conditions[?(@.type=="Ready")].status"#) == "True"
    });
    let node_ip = nodes(r#".status.addresses[?(@.type=="InternalIP")].address"#);
    assert!(node_ip.parse::<std::net::IpAddr>().is_ok(), "{node_ip:?}");
    let ingress = |name: &str, field: &str| {
        k.ok(&[
            "get",
            "svc",
            name,
            "-o",
            &format!("jsonpath={{.status.loadBalancer.ingress[*].{field}}}"),
        ])
    };

    k.ok(&["create", "service", "loadbalancer", "x", "--tcp=80:8080"]);
    k.apply(&manifest(
        "other",
        "  type: LoadBalancer\n  loadBalancerClass: example.com/other\n",
    ));
    wait_for("the node's address as ingress", || {
        ingress("x", "ip") == node_ip
    });
    assert_eq!(ingress("x", "ipMode"), "VIP");
    let table = k.ok(&["get", "svc", "x"]);
    let cells: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(&cells[..2], ["x", "LoadBalancer"], "{table}");
    assert_eq!(cells[3], node_ip, "EXTERNAL-IP\n{table}");

    // Another implementation's class: left alone (the first one has long had its ingress).
    for _ in 0..8 {
        assert_eq!(ingress("other", "ip"), "");
        std::thread::sleep(Duration::from_millis(250));
    }
    let table = k.ok(&["get", "svc", "other"]);
    assert!(table.contains("<pending>"), "{table}");

    // No longer a LoadBalancer (its node port goes by itself): the ingress goes too.
    k.ok(&[
        "patch",
        "svc",
        "x",
        "--type=merge",
        "-p",
        r#"{"spec": {"type": "ClusterIP"}}"#,
    ]);
    wait_for("the ingress to go", || ingress("x", "ip").is_empty());
    let svc = service_json(&k, "x");
    assert_eq!(svc["status"]["loadBalancer"], json!({}), "{svc}");
    assert!(svc["spec"]["ports"][0].get("nodePort").is_none(), "{svc}");
}
