//! The allocations through the registry, on the in-memory store: what each kind of Service
//! gets, the refusals, releases on every path, restarts (repair), and that no sequence of
//! writes leaves the keys and the Services disagreeing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_api::ResourceInfo;
use berth_api::patch::PatchType;
use berth_store::Store;
use berth_store::memory::MemoryStore;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::allocator::{NodePortRange, ServiceCidr};
use crate::registry::{DeleteOptions, Registry, Target, WriteOptions, storage_prefix};

fn services_info() -> &'static ResourceInfo {
    berth_api::resources::lookup("", "v1", "services").unwrap()
}

struct Fixture {
    store: Arc<MemoryStore>,
    registry: Registry,
}

impl Fixture {
    async fn new(cidr: &str, ports: &str) -> Fixture {
        let store = MemoryStore::new();
        let fixture = Fixture::on(store, cidr, ports).await;
        let namespaces = berth_api::resources::lookup("", "v1", "namespaces").unwrap();
        for ns in ["default", "other"] {
            fixture
                .registry
                .create(
                    namespaces,
                    None,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                    &WriteOptions::default(),
                )
                .await
                .unwrap();
        }
        fixture
    }

    /// A registry on `store` after a start: allocations repaired and loaded.
    async fn on(store: Arc<MemoryStore>, cidr: &str, ports: &str) -> Fixture {
        let dyn_store: Arc<dyn Store> = store.clone();
        let registry = Registry::new(
            dyn_store,
            ServiceAllocations::new(cidr.parse().unwrap(), ports.parse().unwrap()),
        );
        registry
            .services()
            .repair(store.as_ref(), &storage_prefix(services_info()))
            .await
            .unwrap();
        Fixture { store, registry }
    }

    async fn create(&self, service: Value) -> Result<Value, ApiError> {
        self.registry
            .create(
                services_info(),
                Some("default"),
                service,
                &WriteOptions::default(),
            )
            .await
            .map(|w| w.object)
    }

    async fn update(&self, name: &str, service: Value) -> Result<Value, ApiError> {
        self.registry
            .update(
                Target::object(services_info(), Some("default"), name),
                service,
                &WriteOptions::default(),
            )
            .await
            .map(|w| w.object)
    }

    async fn patch(&self, name: &str, patch: Value) -> Result<Value, ApiError> {
        self.registry
            .patch(
                Target::object(services_info(), Some("default"), name),
                PatchType::Merge,
                &patch,
                &WriteOptions::default(),
            )
            .await
            .map(|(w, _)| w.object)
    }

    async fn delete(&self, name: &str) {
        self.registry
            .delete(
                services_info(),
                Some("default"),
                name,
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
    }

    async fn services(&self) -> Vec<Value> {
        self.store
            .range(berth_store::RangeRequest::prefix(storage_prefix(
                services_info(),
            )))
            .await
            .unwrap()
            .kvs
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect()
    }

    /// The keys agree with the Services exactly, and no value is held twice.
    async fn assert_consistent(&self) {
        let mut expected = BTreeMap::new();
        for service in self.services().await {
            for claim in held(&service) {
                let previous = expected.insert(claim, Owner::of(&service));
                assert!(previous.is_none(), "{claim} is held twice");
            }
        }
        let stored = ServiceAllocations::stored(self.store.as_ref())
            .await
            .unwrap();
        assert_eq!(stored, expected);
        // The in-memory view agrees too (nothing is in flight between tests' steps).
        let ips = expected
            .keys()
            .filter(|c| matches!(c, Claim::Ip(_)))
            .count() as u32;
        let ports = expected.len() as u32 - ips;
        assert_eq!(self.registry.services().counts(), (ips, ports));
    }
}

fn cluster_ip_service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
    })
}

fn with_spec(name: &str, spec: Value) -> Value {
    let mut service = cluster_ip_service(name);
    for (k, v) in spec.as_object().unwrap() {
        service["spec"][k] = v.clone();
    }
    service
}

fn ip_of(service: &Value) -> String {
    service["spec"]["clusterIP"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn node_ports_of(service: &Value) -> Vec<i64> {
    service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[tokio::test]
async fn services_get_distinct_addresses_from_the_upper_band() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let cidr: ServiceCidr = "10.43.0.0/16".parse().unwrap();
    let mut seen = BTreeSet::new();
    for i in 0..50 {
        let svc = f
            .create(cluster_ip_service(&format!("s{i}")))
            .await
            .unwrap();
        let ip: std::net::Ipv4Addr = ip_of(&svc).parse().unwrap();
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip.to_string()]));
        let offset = cidr.offset_of(ip).expect("in range");
        assert!(offset >= 256, "{ip} is in the band kept for requests");
        assert!(seen.insert(ip));
    }
    f.assert_consistent().await;
}

#[tokio::test]
async fn requested_addresses_are_honoured_or_refused_as_upstream_words_it() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let dns = f
        .create(with_spec("dns", json!({"clusterIP": "10.43.0.10"})))
        .await
        .unwrap();
    assert_eq!(dns["spec"]["clusterIPs"], json!(["10.43.0.10"]));
    let taken = f
        .create(with_spec("dns2", json!({"clusterIP": "10.43.0.10"})))
        .await
        .unwrap_err();
    assert_eq!(taken.code, 422);
    assert_eq!(
        taken.message,
        "Service \"dns2\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.43.0.10\"}: failed to allocate IP 10.43.0.10: provided IP is already allocated"
    );
    let outside = f
        .create(with_spec(
            "far",
            json!({"clusterIPs": ["10.44.0.1"], "clusterIP": "10.44.0.1"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(outside.code, 422);
    assert_eq!(
        outside.message,
        "Service \"far\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.44.0.1\"}: failed to allocate IP 10.44.0.1: the provided IP (10.44.0.1) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
    );
    // The network and broadcast addresses are not in the range either.
    for ip in ["10.43.0.0", "10.43.255.255"] {
        let e = f
            .create(with_spec("edge", json!({"clusterIP": ip})))
            .await
            .unwrap_err();
        assert!(
            e.message.contains("is not in the valid range"),
            "{}",
            e.message
        );
    }
    // A name that exists is AlreadyExists, and takes nothing.
    let again = f
        .create(with_spec("dns", json!({"clusterIP": "10.43.0.11"})))
        .await
        .unwrap_err();
    assert_eq!(again.code, 409);
    f.assert_consistent().await;
    f.create(with_spec("eleven", json!({"clusterIP": "10.43.0.11"})))
        .await
        .unwrap();
    f.assert_consistent().await;
}

#[tokio::test]
async fn headless_and_external_name_services_get_no_address() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let headless = f
        .create(with_spec("db", json!({"clusterIP": "None"})))
        .await
        .unwrap();
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let external = f
        .create(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}
        }))
        .await
        .unwrap();
    assert!(external["spec"].get("clusterIP").is_none());
    f.assert_consistent().await;
    assert_eq!(f.registry.services().counts(), (0, 0));
}

#[tokio::test]
async fn node_ports_for_node_port_and_load_balancer_services() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let np = f
        .create(with_spec(
            "np",
            json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 443}]}),
        ))
        .await
        .unwrap();
    let ports = node_ports_of(&np);
    assert_eq!(ports.len(), 2);
    assert!(
        ports.iter().all(|p| (30086..=32767).contains(p)),
        "{ports:?}"
    );
    assert_ne!(ports[0], ports[1]);

    // TCP and UDP of one port number share one node port.
    let dns = f
        .create(with_spec(
            "dns",
            json!({"type": "NodePort", "ports": [
                {"name": "tcp", "port": 53, "protocol": "TCP"},
                {"name": "udp", "port": 53, "protocol": "UDP"}
            ]}),
        ))
        .await
        .unwrap();
    let shared = node_ports_of(&dns);
    assert_eq!(shared.len(), 2);
    assert_eq!(shared[0], shared[1]);

    let lb = f
        .create(with_spec(
            "lb",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
        ))
        .await
        .unwrap();
    assert_eq!(node_ports_of(&lb).len(), 1);
    let hc = lb["spec"]["healthCheckNodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&hc));
    assert!(!node_ports_of(&lb).contains(&hc));

    let no_ports = f
        .create(with_spec(
            "lb2",
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false}),
        ))
        .await
        .unwrap();
    assert!(node_ports_of(&no_ports).is_empty());
    assert!(no_ports["spec"].get("healthCheckNodePort").is_none());
    f.assert_consistent().await;

    // Requested ports: honoured, refused when taken, refused outside the range.
    f.create(with_spec(
        "fixed",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    ))
    .await
    .unwrap();
    let taken = f
        .create(with_spec(
            "fixed2",
            json!({"type": "NodePort", "ports": [{"name": "x", "port": 81}, {"name": "y", "port": 80, "nodePort": 30080}]}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        taken.message,
        "Service \"fixed2\" is invalid: spec.ports[1].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let outside = f
        .create(with_spec(
            "low",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        outside.message,
        "Service \"low\" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"
    );
    let hc_taken = f
        .create(with_spec(
            "lb3",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30080}),
        ))
        .await
        .unwrap_err();
    assert_eq!(hc_taken.code, 500);
    assert_eq!(
        hc_taken.message,
        "Internal error occurred: failed to allocate requested HealthCheck NodePort 30080: provided port is already allocated"
    );
    f.assert_consistent().await;
}

#[tokio::test]
async fn deleting_frees_everything_for_reuse() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let svc = f
        .create(with_spec(
            "web",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "10.43.0.20",
                   "ports": [{"port": 80, "nodePort": 30100}], "healthCheckNodePort": 30101}),
        ))
        .await
        .unwrap();
    assert_eq!(node_ports_of(&svc), vec![30100]);
    f.delete("web").await;
    f.assert_consistent().await;
    assert_eq!(f.registry.services().counts(), (0, 0));
    f.create(with_spec(
        "web2",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "10.43.0.20",
               "ports": [{"port": 80, "nodePort": 30100}], "healthCheckNodePort": 30101}),
    ))
    .await
    .unwrap();
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_finalizer_holds_the_allocations_until_it_is_removed() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let mut svc = with_spec("held", json!({"clusterIP": "10.43.0.30"}));
    svc["metadata"]["finalizers"] = json!(["example.com/hold"]);
    f.create(svc).await.unwrap();
    f.delete("held").await;
    // Being deleted, still holding its address.
    assert!(
        f.create(with_spec("other", json!({"clusterIP": "10.43.0.30"})))
            .await
            .is_err()
    );
    f.patch("held", json!({"metadata": {"finalizers": null}}))
        .await
        .unwrap();
    assert!(
        f.services()
            .await
            .iter()
            .all(|s| s["metadata"]["name"] != "held")
    );
    f.assert_consistent().await;
    f.create(with_spec("other", json!({"clusterIP": "10.43.0.30"})))
        .await
        .unwrap();
}

#[tokio::test]
async fn updates_keep_allocations_and_type_changes_allocate_and_release() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let svc = f
        .create(with_spec("web", json!({"type": "NodePort"})))
        .await
        .unwrap();
    let ip = ip_of(&svc);
    let node_port = node_ports_of(&svc)[0];

    // A PUT of the original manifest (no clusterIP, no nodePort) keeps both.
    let mut replace = with_spec("web", json!({"type": "NodePort"}));
    replace["spec"]["ports"][0]["name"] = json!("");
    let replaced = f.update("web", replace).await.unwrap();
    assert_eq!(ip_of(&replaced), ip);
    assert_eq!(node_ports_of(&replaced), vec![node_port]);

    // The cluster IP is immutable.
    let mut moved = replaced.clone();
    moved["spec"]["clusterIP"] = json!("10.43.0.99");
    moved["spec"]["clusterIPs"] = json!(["10.43.0.99"]);
    let e = f.update("web", moved).await.unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("may not change once set"),
        "{}",
        e.message
    );

    // NodePort -> ClusterIP gives the node port back.
    let cluster = f
        .patch("web", json!({"spec": {"type": "ClusterIP"}}))
        .await
        .unwrap();
    assert!(node_ports_of(&cluster).is_empty());
    assert_eq!(ip_of(&cluster), ip);
    f.assert_consistent().await;

    // -> ExternalName gives the address back; -> ClusterIP takes a new one.
    let external = f
        .patch(
            "web",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com", "clusterIP": null, "clusterIPs": null, "selector": null}}),
        )
        .await
        .unwrap();
    assert!(external["spec"].get("clusterIP").is_none(), "{external}");
    f.assert_consistent().await;
    assert_eq!(f.registry.services().counts(), (0, 0));
    let back = f
        .patch(
            "web",
            json!({"spec": {"type": "ClusterIP", "externalName": null, "clusterIP": "10.43.0.40"}}),
        )
        .await
        .unwrap();
    assert_eq!(ip_of(&back), "10.43.0.40");
    f.assert_consistent().await;

    // -> LoadBalancer with Local takes node ports and a health check port; -> Cluster gives
    // the health check port back.
    let lb = f
        .patch(
            "web",
            json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}}),
        )
        .await
        .unwrap();
    assert_eq!(node_ports_of(&lb).len(), 1);
    assert!(lb["spec"]["healthCheckNodePort"].as_i64().unwrap() > 0);
    f.assert_consistent().await;
    let cluster_policy = f
        .patch("web", json!({"spec": {"externalTrafficPolicy": "Cluster"}}))
        .await
        .unwrap();
    assert!(cluster_policy["spec"].get("healthCheckNodePort").is_none());
    f.assert_consistent().await;

    // Adding a port with a taken node port is refused and changes nothing.
    f.create(with_spec(
        "fixed",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}),
    ))
    .await
    .unwrap();
    let mut more = cluster_policy.clone();
    more["spec"]["ports"].as_array_mut().unwrap().push(
        json!({"name": "b", "port": 81, "protocol": "TCP", "targetPort": 81, "nodePort": 31000}),
    );
    more["spec"]["ports"][0]["name"] = json!("a");
    let e = f.update("web", more).await.unwrap_err();
    assert_eq!(
        e.message,
        "Service \"web\" is invalid: spec.ports[1].nodePort: Invalid value: 31000: provided port is already allocated"
    );
    f.assert_consistent().await;
}

#[tokio::test]
async fn dry_runs_take_nothing_but_say_what_would_happen() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    f.create(with_spec("a", json!({"clusterIP": "10.43.0.10"})))
        .await
        .unwrap();
    let dry = WriteOptions {
        dry_run: true,
        ..WriteOptions::default()
    };
    let planned = f
        .registry
        .create(
            services_info(),
            Some("default"),
            with_spec("b", json!({"type": "NodePort"})),
            &dry,
        )
        .await
        .unwrap();
    assert!(!ip_of(&planned.object).is_empty());
    assert_eq!(node_ports_of(&planned.object).len(), 1);
    let refused = f
        .registry
        .create(
            services_info(),
            Some("default"),
            with_spec("c", json!({"clusterIP": "10.43.0.10"})),
            &dry,
        )
        .await
        .unwrap_err();
    assert!(refused.message.contains("provided IP is already allocated"));
    f.assert_consistent().await;
    assert_eq!(f.registry.services().counts(), (1, 0));
}

#[tokio::test]
async fn a_thousand_create_delete_cycles_leak_nothing() {
    // A /28: 14 addresses; 10 node ports.
    let f = Fixture::new("10.9.0.0/28", "31000-31009").await;
    for i in 0..1000 {
        let name = format!("s{}", i % 7);
        let spec = match i % 3 {
            0 => json!({}),
            1 => json!({"type": "NodePort"}),
            _ => json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
        };
        f.create(with_spec(&name, spec)).await.unwrap();
        if i % 7 == 6 {
            for j in 0..7 {
                f.delete(&format!("s{j}")).await;
            }
        }
    }
    f.assert_consistent().await;
    for j in 0..7 {
        if f.services()
            .await
            .iter()
            .any(|s| s["metadata"]["name"] == format!("s{j}"))
        {
            f.delete(&format!("s{j}")).await;
        }
    }
    f.assert_consistent().await;
    assert_eq!(f.registry.services().counts(), (0, 0));
    // The whole range is free again: 14 Services get the 14 addresses, the 15th none.
    let mut ips = BTreeSet::new();
    for i in 0..14 {
        ips.insert(ip_of(
            &f.create(cluster_ip_service(&format!("fill{i}")))
                .await
                .unwrap(),
        ));
    }
    assert_eq!(ips.len(), 14);
    let full = f
        .create(cluster_ip_service("one-too-many"))
        .await
        .unwrap_err();
    assert_eq!(full.code, 500);
    assert_eq!(
        full.message,
        "Internal error occurred: failed to allocate a serviceIP: range is full"
    );
    f.assert_consistent().await;
}

#[test]
fn concurrent_creates_never_share_an_address() {
    rt().block_on(async {
        let f = Arc::new(Fixture::new("10.9.0.0/26", "30000-32767").await);
        // 62 addresses, 80 Services: 62 succeed with distinct addresses, 18 find the range full.
        let mut tasks = Vec::new();
        for i in 0..80 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                f.create(cluster_ip_service(&format!("s{i}"))).await
            }));
        }
        let mut ips = BTreeSet::new();
        let mut full = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(svc) => assert!(ips.insert(ip_of(&svc)), "duplicate"),
                Err(e) => {
                    assert!(e.message.contains("range is full"), "{}", e.message);
                    full += 1;
                }
            }
        }
        assert_eq!((ips.len(), full), (62, 18));
        f.assert_consistent().await;

        // Concurrent requests for one address: exactly one gets it.
        for i in 0..80 {
            let _ = f
                .registry
                .delete(
                    services_info(),
                    Some("default"),
                    &format!("s{i}"),
                    &DeleteOptions::default(),
                )
                .await;
        }
        f.assert_consistent().await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                f.create(with_spec(
                    &format!("want{i}"),
                    json!({"clusterIP": "10.9.0.5"}),
                ))
                .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(e) => assert!(
                    e.message.contains("provided IP is already allocated"),
                    "{}",
                    e.message
                ),
            }
        }
        assert_eq!(won, 1);
        f.assert_consistent().await;
    });
}

#[tokio::test]
async fn a_restart_repairs_leaks_and_missing_keys_and_keeps_allocations() {
    let store = MemoryStore::new();
    {
        let f = Fixture::on(store.clone(), "10.43.0.0/16", "30000-32767").await;
        let namespaces = berth_api::resources::lookup("", "v1", "namespaces").unwrap();
        f.registry
            .create(
                namespaces,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        f.create(with_spec("kept", json!({"clusterIP": "10.43.0.10", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30010}]})))
            .await
            .unwrap();
    }
    // Damage of the kinds repair fixes: a key whose Service is gone, a Service without its key,
    // a key naming another Service, and a Service outside the range.
    let services = storage_prefix(services_info());
    let owner = |name: &str, uid: &str| {
        Owner {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
        }
        .encode()
    };
    let leaked = Claim::Ip("10.43.7.7".parse().unwrap());
    berth_store::ops::create(store.as_ref(), &leaked.key(), owner("gone", "u-gone"))
        .await
        .unwrap();
    let legacy = json!({"metadata": {"name": "legacy", "namespace": "default", "uid": "u-legacy"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.50", "clusterIPs": ["10.43.0.50"], "ports": [{"port": 80}]}});
    berth_store::ops::create(
        store.as_ref(),
        &format!("{services}default/legacy"),
        Bytes::from(serde_json::to_vec(&legacy).unwrap()),
    )
    .await
    .unwrap();
    let stolen = Claim::Ip("10.43.0.60".parse().unwrap());
    berth_store::ops::create(store.as_ref(), &stolen.key(), owner("legacy2", "u-other"))
        .await
        .unwrap();
    let legacy2 = json!({"metadata": {"name": "legacy2", "namespace": "default", "uid": "u-legacy2"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.60", "clusterIPs": ["10.43.0.60"], "ports": [{"port": 80}]}});
    berth_store::ops::create(
        store.as_ref(),
        &format!("{services}default/legacy2"),
        Bytes::from(serde_json::to_vec(&legacy2).unwrap()),
    )
    .await
    .unwrap();
    let outside = json!({"metadata": {"name": "outside", "namespace": "default", "uid": "u-outside"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [{"port": 80}]}});
    berth_store::ops::create(
        store.as_ref(),
        &format!("{services}default/outside"),
        Bytes::from(serde_json::to_vec(&outside).unwrap()),
    )
    .await
    .unwrap();

    let dyn_store: Arc<dyn Store> = store.clone();
    let registry = Registry::new(
        dyn_store,
        ServiceAllocations::new(ServiceCidr::default(), NodePortRange::default()),
    );
    let report = registry
        .services()
        .repair(store.as_ref(), &services)
        .await
        .unwrap();
    assert_eq!(report.freed, vec![stolen, leaked]);
    assert_eq!(
        report.repaired,
        vec![Claim::Ip("10.43.0.50".parse().unwrap()), stolen]
    );
    assert_eq!(report.out_of_range.len(), 1);
    assert!(report.duplicates.is_empty());
    let f = Fixture { store, registry };
    // The allocations held across the restart: the address and port are still taken.
    let e = f
        .create(with_spec("thief", json!({"clusterIP": "10.43.0.10"})))
        .await
        .unwrap_err();
    assert!(e.message.contains("provided IP is already allocated"));
    let e = f
        .create(with_spec(
            "thief",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30010}]}),
        ))
        .await
        .unwrap_err();
    assert!(e.message.contains("provided port is already allocated"));
    for ip in ["10.43.0.50", "10.43.0.60"] {
        assert!(
            f.create(with_spec("thief", json!({"clusterIP": ip})))
                .await
                .is_err()
        );
    }
    // The leaked one is free again.
    f.create(with_spec("finder", json!({"clusterIP": "10.43.7.7"})))
        .await
        .unwrap();
    // The out-of-range Service keeps its address without a key; deleting it is fine.
    f.delete("outside").await;
    f.assert_consistent().await;
    // A second repair finds nothing to do.
    let again = f
        .registry
        .services()
        .repair(f.store.as_ref(), &services)
        .await
        .unwrap();
    assert_eq!(again, RepairReport::default());
}

#[derive(Debug, Clone)]
enum Step {
    Create {
        name: usize,
        kind: usize,
        ip: Option<u8>,
    },
    Delete {
        name: usize,
    },
    Retype {
        name: usize,
        kind: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..6usize, 0..5usize, proptest::option::of(1u8..15)).prop_map(|(name, kind, ip)| Step::Create { name, kind, ip }),
        2 => (0..6usize).prop_map(|name| Step::Delete { name }),
        2 => (0..6usize, 0..5usize).prop_map(|(name, kind)| Step::Retype { name, kind }),
    ]
}

fn spec_of_kind(kind: usize) -> Value {
    match kind {
        0 => json!({"type": "ClusterIP"}),
        1 => json!({"type": "NodePort"}),
        2 => json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
        3 => json!({"type": "ExternalName", "externalName": "example.com", "selector": null}),
        _ => json!({"type": "ClusterIP", "clusterIP": "None"}),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the sequence of creates, deletes and type changes (on a range small enough to
    /// fill), and whichever of them fail, the keys always match what the Services hold, no
    /// value is held twice, and a restart (repair) finds nothing to fix.
    #[test]
    fn keys_always_match_the_services(steps in proptest::collection::vec(step(), 1..40)) {
        rt().block_on(async {
            let f = Fixture::new("10.9.0.0/28", "31000-31007").await;
            for step in steps {
                match step {
                    Step::Create { name, kind, ip } => {
                        let mut spec = spec_of_kind(kind);
                        if let Some(ip) = ip.filter(|_| kind < 3) {
                            spec["clusterIP"] = json!(format!("10.9.0.{ip}"));
                        }
                        let _ = f.create(with_spec(&format!("s{name}"), spec)).await;
                    }
                    Step::Delete { name } => {
                        let _ = f.registry.delete(services_info(), Some("default"), &format!("s{name}"), &DeleteOptions::default()).await;
                    }
                    Step::Retype { name, kind } => {
                        let mut patch = spec_of_kind(kind);
                        if kind == 3 {
                            patch["clusterIP"] = Value::Null;
                            patch["clusterIPs"] = Value::Null;
                        } else {
                            patch["externalName"] = Value::Null;
                        }
                        let _ = f.patch(&format!("s{name}"), json!({"spec": patch})).await;
                    }
                }
                f.assert_consistent().await;
            }
            let report = f.registry.services().repair(f.store.as_ref(), &storage_prefix(services_info())).await.unwrap();
            assert_eq!(report, RepairReport::default());
        });
    }
}

#[tokio::test]
async fn the_kubernetes_service_is_written_once_and_corrected_when_the_port_changes() {
    let f = Fixture::new("10.43.0.0/16", "30000-32767").await;
    let first = "127.0.0.1:6443".parse().unwrap();
    kubernetes::ensure(&f.registry, "10.43.0.1".parse().unwrap(), first)
        .await
        .unwrap();
    let svc = f
        .registry
        .get(services_info(), Some("default"), "kubernetes")
        .await
        .unwrap();
    assert_eq!(svc["spec"]["clusterIPs"], json!(["10.43.0.1"]));
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}])
    );
    let endpoints_info = berth_api::resources::lookup("", "v1", "endpoints").unwrap();
    let slices_info =
        berth_api::resources::lookup("discovery.k8s.io", "v1", "endpointslices").unwrap();
    let endpoints = f
        .registry
        .get(endpoints_info, Some("default"), "kubernetes")
        .await
        .unwrap();
    assert_eq!(
        endpoints["subsets"],
        json!([{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}])
    );
    let slice = f
        .registry
        .get(slices_info, Some("default"), "kubernetes")
        .await
        .unwrap();
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["127.0.0.1"]));

    // A start with nothing to correct writes nothing.
    let before = f.store.revisions().await.unwrap().current;
    kubernetes::ensure(&f.registry, "10.43.0.1".parse().unwrap(), first)
        .await
        .unwrap();
    assert_eq!(f.store.revisions().await.unwrap().current, before);

    // Another port (and every address: the loopback one is named) is corrected in place.
    kubernetes::ensure(
        &f.registry,
        "10.43.0.1".parse().unwrap(),
        "0.0.0.0:7443".parse().unwrap(),
    )
    .await
    .unwrap();
    let moved = f
        .registry
        .get(services_info(), Some("default"), "kubernetes")
        .await
        .unwrap();
    assert_eq!(moved["metadata"]["uid"], svc["metadata"]["uid"]);
    assert_eq!(moved["spec"]["ports"][0]["targetPort"], 7443);
    assert_eq!(moved["spec"]["clusterIP"], "10.43.0.1");
    let endpoints = f
        .registry
        .get(endpoints_info, Some("default"), "kubernetes")
        .await
        .unwrap();
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 7443);
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    f.assert_consistent().await;
}
