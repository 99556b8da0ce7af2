//! Pods have their own network: an address from the cluster CIDR on `eth0` in their own
//! network namespace, reachable from other pods and the host; two pods can listen on one port;
//! hostNetwork pods keep the host's; addresses and links go away with their pods and stay put
//! across a restart of berth.

mod common;
mod podkit;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Kubectl;
use podkit::*;
use serde_json::Value;

fn server(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  {extra}
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"].as_str().unwrap_or("").to_string()
}

fn link_names() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /` on `<ip>:8080` from inside `from`.
fn fetch(kubectl: &Kubectl, from: &str, ip: &str) -> String {
    let run = kubectl.run(&[
        "exec",
        from,
        "--",
        "sh",
        "-c",
        &format!("nc {ip} 8080 <<EOF\nGET / HTTP/1.0\n\nEOF\n"),
    ]);
    run.stdout
}

#[test]
fn pods_get_their_own_addresses_and_reach_each_other() {
    let (mut berth, kubectl) = start();
    kubectl.apply(&server("one", ""));
    kubectl.apply(&server("two", ""));
    let one = wait_pod(&kubectl, "one", T, |p| {
        phase(p) == "Running" && !pod_ip(p).is_empty()
    });
    let two = wait_pod(&kubectl, "two", T, |p| {
        phase(p) == "Running" && !pod_ip(p).is_empty()
    });
    let (ip_one, ip_two) = (pod_ip(&one), pod_ip(&two));
    assert_ne!(ip_one, ip_two);
    for ip in [&ip_one, &ip_two] {
        assert!(ip.starts_with("10."), "{ip} is not from the cluster CIDR");
        assert_ne!(ip, "127.0.0.1");
    }
    assert_eq!(one["status"]["podIPs"][0]["ip"], ip_one.as_str());
    // Each has eth0 with its address, in a namespace of its own.
    let addresses = kubectl.ok(&["exec", "one", "--", "ip", "-4", "addr", "show", "eth0"]);
    assert!(
        addresses.contains(&format!("inet {ip_one}/")),
        "{addresses}"
    );
    // Both listen on 8080, and each reaches the other by address.
    let deadline = Instant::now() + T;
    loop {
        let page = fetch(&kubectl, "one", &ip_two);
        if page.contains("two") {
            break;
        }
        assert!(Instant::now() < deadline, "one never reached two: {page:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(fetch(&kubectl, "two", &ip_one).contains("one"));
    // The host reaches them over the bridge.
    let mut stream =
        std::net::TcpStream::connect((ip_one.as_str(), 8080)).expect("the host reaches pod one");
    use std::io::{Read, Write};
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("response");
    assert!(page.contains("one"), "{page}");
    // /etc/hosts names the pod by its address.
    let hosts = kubectl.ok(&["exec", "one", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{ip_one}\tone")), "{hosts}");

    // A restart of berth keeps the pods' addresses.
    berth.kill();
    berth.restart();
    let again = wait_pod(&kubectl, "one", T, |p| phase(p) == "Running");
    assert_eq!(pod_ip(&again), ip_one);
    assert!(fetch(&kubectl, "two", &ip_one).contains("one"));

    // Deleting a pod removes its link; its address can be handed out again later.
    let uid = one["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let veth = berth_net::host_interface(&uid);
    assert!(link_names().contains(&veth), "no host veth {veth}");
    kubectl.ok(&["delete", "pod", "one", "--wait=true"]);
    let deadline = Instant::now() + T;
    while link_names().contains(&veth) {
        assert!(Instant::now() < deadline, "{veth} outlived its pod");
        std::thread::sleep(Duration::from_millis(100));
    }
    let allocations = berth.data_dir().join("network");
    assert!(
        !Path::new(&allocations.join(&ip_one)).exists(),
        "{ip_one} is still allocated"
    );
}

#[test]
fn host_network_pods_keep_the_host_namespace() {
    let (_berth, kubectl) = start();
    let port = common::free_port();
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hosted}}
spec:
  terminationGracePeriodSeconds: 1
  hostNetwork: true
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "mkdir -p /www && echo on-the-host > /www/index.html && exec httpd -f -p {port} -h /www"]
"#
    ));
    let pod = wait_pod(&kubectl, "hosted", T, |p| phase(p) == "Running");
    assert_eq!(pod_ip(&pod), "127.0.0.1");
    let deadline = Instant::now() + T;
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            stream
                .write_all(b"GET / HTTP/1.0\r\n\r\n")
                .expect("request");
            let mut page = String::new();
            let _ = stream.read_to_string(&mut page);
            if page.contains("on-the-host") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing on the host's 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_thousand_address_cycles_leak_nothing() {
    // Through the library the agent uses, against the kernel: what the agent does per pod.
    let state = tempfile::tempdir().expect("temp dir");
    let (bridge, cidr) = common::unique_pod_network();
    let network = berth_net::PodNetwork::open(
        berth_net::NetworkConfig {
            bridge: bridge.clone(),
            cidr: cidr.parse().expect("valid CIDR"),
        },
        state.path(),
        std::sync::Arc::new(berth_net::link::Recording::default()),
    )
    .expect("open");
    // Ten pods live at any time while a thousand come and go through a /24 (253 addresses,
    // so addresses are reused several times over).
    let mut live = std::collections::VecDeque::new();
    for i in 0..1000 {
        let uid = format!("cycle-{i}");
        let ip = network
            .attach(&uid, Path::new("/nonexistent"))
            .expect("an address");
        assert!(
            live.iter().all(|(_, other)| *other != ip),
            "{ip} handed out twice"
        );
        live.push_back((uid, ip));
        if live.len() > 10 {
            let (old, _) = live.pop_front().expect("a live pod");
            network.detach(&old).expect("release");
        }
    }
    for (uid, _) in live.drain(..) {
        network.detach(&uid).expect("release");
    }
    let left: Vec<_> = std::fs::read_dir(state.path())
        .expect("state dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    assert!(left.is_empty(), "leaked {left:?}");
}

#[test]
fn pods_resolve_services_through_the_cluster_dns() {
    let (_berth, kubectl) = start();
    kubectl.apply(&server("named", ""));
    let pod = wait_pod(&kubectl, "named", T, |p| phase(p) == "Running");
    assert!(!pod_ip(&pod).is_empty());
    // ClusterFirst: the kube-dns Service (carried by the service proxy, UDP and TCP, to the
    // cluster DNS on the pod bridge), the cluster search path, ndots:5.
    let dns = kubectl.ok(&[
        "get",
        "svc",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let resolv = kubectl.ok(&["exec", "named", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {}\n", dns.trim())),
        "{resolv}"
    );
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    // The kubernetes Service resolves to its ClusterIP; a Service made now appears at once.
    let lookup = |name: &str| kubectl.run(&["exec", "named", "--", "nslookup", name]);
    let api = kubectl.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let found = lookup("kubernetes.default.svc.cluster.local");
    assert!(found.stdout.contains(api.trim()), "{found:?}");
    kubectl.ok(&["create", "service", "clusterip", "shop", "--tcp=80:8080"]);
    let ip = kubectl.ok(&["get", "svc", "shop", "-o", "jsonpath={.spec.clusterIP}"]);
    let deadline = Instant::now() + T;
    loop {
        let found = lookup("shop.default.svc.cluster.local");
        if found.stdout.contains(ip.trim()) {
            break;
        }
        assert!(Instant::now() < deadline, "shop never resolved: {found:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let missing = lookup("nothing.default.svc.cluster.local");
    assert_ne!(missing.code, 0, "{missing:?}");
}
