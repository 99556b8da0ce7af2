//! The cluster DNS as pods see it, asked with busybox `nslookup` from inside a pod under a
//! real `berth up`: a headless Service resolves to exactly its ready pods' addresses and
//! follows readiness as it changes; a pod's `hostname.subdomain` name follows the pod when it
//! is deleted and created again; SRV records of named ports (headless and ClusterIP); NXDOMAIN
//! for names that do not exist; PTR records of a named pod's address and of a ClusterIP.

mod common;
mod podkit;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Kubectl, Run};
use podkit::*;
use serde_json::Value;

/// How long the DNS may take to show a change (it follows the API within about a second).
const FOLLOW: Duration = Duration::from_secs(15);

/// The pod every lookup runs in.
const CLIENT: &str = "client";

/// A pod that sleeps until told to stop (and stops at once on SIGTERM), with `extra` lines
/// in its spec and `container` lines in its one container (both indented to fit).
fn sleeper(name: &str, app: &str, extra: &str, container: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  terminationGracePeriodSeconds: 1
  {extra}
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    {container}
"#
    )
}

/// A pod that is Ready exactly while its /tmp/ready exists (checked every second).
fn probed(name: &str, app: &str) -> String {
    sleeper(
        name,
        app,
        "",
        r#"readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
      failureThreshold: 1"#,
    )
}

/// The headless Service `h`: pods labelled app=h, the named port `http` 8080/TCP.
const HEADLESS_H: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: h}
spec:
  clusterIP: None
  selector: {app: h}
  ports:
  - {name: http, port: 8080, protocol: TCP}
"#;

fn pod_ip(pod: &Value) -> IpAddr {
    let text = pod["status"]["podIP"].as_str().unwrap_or("");
    text.parse()
        .unwrap_or_else(|_| panic!("pod has no IP: {}", pod["status"]))
}

/// Waits for the pod to run and have an IP; returns the IP.
#[track_caller]
fn running(kubectl: &Kubectl, name: &str) -> IpAddr {
    let pod = wait_pod(kubectl, name, T, |p| {
        phase(p) == "Running"
            && p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
    });
    pod_ip(&pod)
}

/// Starts the client pod the lookups run in.
fn start_client(kubectl: &Kubectl) {
    kubectl.apply(&sleeper(CLIENT, "client", "", ""));
    running(kubectl, CLIENT);
}

/// `nslookup <args>` in the client pod.
fn nslookup(kubectl: &Kubectl, args: &[&str]) -> Run {
    let mut command = vec!["exec", CLIENT, "--", "nslookup"];
    command.extend_from_slice(args);
    kubectl.run(&command)
}

/// The addresses an `nslookup` answered: the `Address:` lines after the first `Name:` (the
/// ones before it are the server's, `<ip>:53`).
fn addresses(run: &Run) -> BTreeSet<IpAddr> {
    run.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// The SRV records an `nslookup -type=SRV` answered, as (port, target) pairs:
/// `<name>\tservice = <priority> <weight> <port> <target>`.
fn srv_records(run: &Run) -> BTreeSet<(u16, String)> {
    run.stdout
        .lines()
        .filter_map(|l| l.split_once("service = ").map(|(_, r)| r))
        .filter_map(|rest| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let [_priority, _weight, port, target] = fields[..] else {
                return None;
            };
            Some((port.parse().ok()?, target.trim_end_matches('.').to_string()))
        })
        .collect()
}

/// The names a PTR lookup answered: `<reverse name>\tname = <name>`.
fn ptr_names(run: &Run) -> BTreeSet<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.split_once("name = ").map(|(_, n)| n))
        .map(|n| n.trim().trim_end_matches('.').to_string())
        .collect()
}

/// Whether the lookup says the name does not exist.
fn nxdomain(run: &Run) -> bool {
    run.code != 0 && run.stdout.contains("can't find") && run.stdout.contains("NXDOMAIN")
}

/// Repeats `nslookup <args>` until `done` holds for its answer; returns that answer. Panics
/// with the last answer (and `what` it was waiting for) after `timeout`.
#[track_caller]
fn wait_lookup(
    kubectl: &Kubectl,
    args: &[&str],
    timeout: Duration,
    what: &str,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let deadline = Instant::now() + timeout;
    loop {
        let run = nslookup(kubectl, args);
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "nslookup {args:?}: not {what} within {timeout:?}; last answer: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `name` resolves to exactly `want`.
#[track_caller]
fn wait_addresses(kubectl: &Kubectl, name: &str, want: &BTreeSet<IpAddr>) {
    wait_lookup(
        kubectl,
        &[name],
        FOLLOW,
        &format!("exactly {want:?}"),
        |run| addresses(run) == *want,
    );
}

fn set<const N: usize>(ips: [IpAddr; N]) -> BTreeSet<IpAddr> {
    ips.into_iter().collect()
}

/// `<a-b-c-d>.<service>.default.svc.cluster.local`: the DNS name of an endpoint with no
/// hostname.
fn dashed(ip: IpAddr, service: &str) -> String {
    format!(
        "{}.{service}.default.svc.cluster.local",
        ip.to_string().replace(['.', ':'], "-")
    )
}

/// A berth with the client pod, the headless Service `h`, and its pods h-0, h-1 (made ready)
/// and h-2 (not ready). Returns the three pods' addresses.
fn headless_over_three_pods() -> (common::Berth, Kubectl, [IpAddr; 3]) {
    let (berth, kubectl) = start();
    start_client(&kubectl);
    kubectl.apply(HEADLESS_H);
    for name in ["h-0", "h-1", "h-2"] {
        kubectl.apply(&probed(name, "h"));
    }
    let ips = ["h-0", "h-1", "h-2"].map(|name| running(&kubectl, name));
    for name in ["h-0", "h-1"] {
        kubectl.ok(&["exec", name, "--", "touch", "/tmp/ready"]);
    }
    for name in ["h-0", "h-1"] {
        wait_pod(&kubectl, name, T, |p| condition(p, "Ready") == "True");
    }
    let h2 = pod_json(&kubectl, "h-2");
    assert_eq!(condition(&h2, "Ready"), "False", "{}", h2["status"]);
    (berth, kubectl, ips)
}

#[test]
fn a_headless_service_resolves_to_its_ready_pods_only() {
    let (_berth, kubectl, [ip0, ip1, ip2]) = headless_over_three_pods();
    let name = "h.default.svc.cluster.local";
    wait_addresses(&kubectl, name, &set([ip0, ip1]));

    // The third becomes ready: it appears.
    kubectl.ok(&["exec", "h-2", "--", "touch", "/tmp/ready"]);
    wait_addresses(&kubectl, name, &set([ip0, ip1, ip2]));

    // One stops being ready: it disappears, the others stay.
    kubectl.ok(&["exec", "h-0", "--", "rm", "/tmp/ready"]);
    wait_addresses(&kubectl, name, &set([ip1, ip2]));
    let h0 = pod_json(&kubectl, "h-0");
    assert_eq!(condition(&h0, "Ready"), "False", "{}", h0["status"]);

    // A ready pod's own endpoint name resolves to it; a not-ready one's does not exist.
    let found = nslookup(&kubectl, &[&dashed(ip1, "h")]);
    assert_eq!(addresses(&found), set([ip1]), "{found:?}");
    let gone = nslookup(&kubectl, &[&dashed(ip0, "h")]);
    assert!(nxdomain(&gone), "{gone:?}");

    // With no ready pod left, the headless Service does not exist (as in CoreDNS).
    for pod in ["h-1", "h-2"] {
        kubectl.ok(&["exec", pod, "--", "rm", "/tmp/ready"]);
    }
    wait_lookup(&kubectl, &[name], FOLLOW, "NXDOMAIN", nxdomain);
}

#[test]
fn a_pods_hostname_in_its_subdomain_follows_the_pod() {
    let (_berth, kubectl) = start();
    start_client(&kubectl);
    kubectl.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports:
  - {name: http, port: 80}
"#,
    );
    let web = sleeper("web-0", "nginx", "hostname: web-0\n  subdomain: nginx", "");
    kubectl.apply(&web);
    let first = running(&kubectl, "web-0");
    let name = "web-0.nginx.default.svc.cluster.local";
    wait_addresses(&kubectl, name, &set([first]));

    // Gone with the pod.
    kubectl.ok(&["delete", "pod", "web-0", "--wait=true"]);
    wait_lookup(&kubectl, &[name], FOLLOW, "NXDOMAIN", nxdomain);

    // The same pod again gets another address (the IPAM goes round-robin, and a pod in
    // between takes the next one anyway), and the name follows it within seconds.
    kubectl.apply(&sleeper("spacer", "spacer", "", ""));
    running(&kubectl, "spacer");
    kubectl.apply(&web);
    let second = running(&kubectl, "web-0");
    assert_ne!(first, second, "the new pod got the old pod's address");
    wait_addresses(&kubectl, name, &set([second]));
    // The Service name too: one address, the new one.
    let service = nslookup(&kubectl, &["nginx.default.svc.cluster.local"]);
    assert_eq!(addresses(&service), set([second]), "{service:?}");
}

#[test]
fn srv_records_list_named_ports_and_their_targets() {
    let (_berth, kubectl, [ip0, ip1, _ip2]) = headless_over_three_pods();
    // Headless: one record per ready endpoint, the port's number and the endpoint's name.
    let want: BTreeSet<(u16, String)> = [(8080, dashed(ip0, "h")), (8080, dashed(ip1, "h"))]
        .into_iter()
        .collect();
    let srv = wait_lookup(
        &kubectl,
        &["-type=SRV", "_http._tcp.h.default.svc.cluster.local"],
        FOLLOW,
        &format!("{want:?}"),
        |run| srv_records(run) == want,
    );
    assert_eq!(srv.code, 0, "{srv:?}");
    // Each target resolves to its endpoint.
    for ip in [ip0, ip1] {
        let found = nslookup(&kubectl, &[&dashed(ip, "h")]);
        assert_eq!(addresses(&found), set([ip]), "{found:?}");
    }
    // A port the Service does not have, or the wrong protocol, does not exist.
    for missing in [
        "_web._tcp.h.default.svc.cluster.local",
        "_http._udp.h.default.svc.cluster.local",
    ] {
        let run = nslookup(&kubectl, &["-type=SRV", missing]);
        assert!(nxdomain(&run), "{missing}: {run:?}");
    }

    // ClusterIP: the Service's own port (not the target port), targeting the Service.
    kubectl.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: c}
spec:
  selector: {app: h}
  ports:
  - {name: web, port: 80, targetPort: 8080, protocol: TCP}
  - {name: metrics, port: 9090, protocol: TCP}
"#,
    );
    let target = "c.default.svc.cluster.local".to_string();
    let web: BTreeSet<(u16, String)> = [(80, target.clone())].into_iter().collect();
    wait_lookup(
        &kubectl,
        &["-type=SRV", "_web._tcp.c.default.svc.cluster.local"],
        FOLLOW,
        &format!("{web:?}"),
        |run| srv_records(run) == web,
    );
    let metrics = nslookup(
        &kubectl,
        &["-type=SRV", "_metrics._tcp.c.default.svc.cluster.local"],
    );
    let want: BTreeSet<(u16, String)> = [(9090, target.clone())].into_iter().collect();
    assert_eq!(srv_records(&metrics), want, "{metrics:?}");
    // The Service's own name lists every port.
    let all = nslookup(&kubectl, &["-type=SRV", &target]);
    let want: BTreeSet<(u16, String)> = [(80, target.clone()), (9090, target.clone())]
        .into_iter()
        .collect();
    assert_eq!(srv_records(&all), want, "{all:?}");
    // And the target is the ClusterIP.
    let cluster_ip: IpAddr = kubectl
        .ok(&["get", "svc", "c", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .parse()
        .expect("a ClusterIP");
    let found = nslookup(&kubectl, &[&target]);
    assert_eq!(addresses(&found), set([cluster_ip]), "{found:?}");
}

#[test]
fn missing_names_are_nxdomain_and_addresses_have_ptr_names() {
    let (_berth, kubectl) = start();
    start_client(&kubectl);

    // Names that do not exist, in a namespace that does and in one that does not.
    for missing in [
        "nothing.default.svc.cluster.local",
        "nothing.nowhere.svc.cluster.local",
        "web-0.nothing.default.svc.cluster.local",
    ] {
        let run = nslookup(&kubectl, &[missing]);
        assert!(nxdomain(&run), "{missing}: {run:?}");
        assert!(addresses(&run).is_empty(), "{missing}: {run:?}");
    }

    // A pod named by hostname and subdomain: its address's PTR is that name.
    kubectl.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports:
  - {name: http, port: 80}
"#,
    );
    kubectl.apply(&sleeper(
        "web-0",
        "nginx",
        "hostname: web-0\n  subdomain: nginx",
        "",
    ));
    let ip = running(&kubectl, "web-0").to_string();
    let want: BTreeSet<String> = ["web-0.nginx.default.svc.cluster.local".to_string()].into();
    let run = wait_lookup(&kubectl, &[&ip], FOLLOW, &format!("{want:?}"), |run| {
        ptr_names(run) == want
    });
    assert_eq!(run.code, 0, "{run:?}");

    // A ClusterIP's PTR is its Service's name; the kubernetes Service's too.
    kubectl.ok(&["create", "service", "clusterip", "shop", "--tcp=80:8080"]);
    let cluster_ip = kubectl.ok(&["get", "svc", "shop", "-o", "jsonpath={.spec.clusterIP}"]);
    let want: BTreeSet<String> = ["shop.default.svc.cluster.local".to_string()].into();
    wait_lookup(
        &kubectl,
        &[cluster_ip.trim()],
        FOLLOW,
        &format!("{want:?}"),
        |run| ptr_names(run) == want,
    );
    let kubernetes_ip = kubectl.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let run = nslookup(&kubectl, &[kubernetes_ip.trim()]);
    let want: BTreeSet<String> = ["kubernetes.default.svc.cluster.local".to_string()].into();
    assert_eq!(ptr_names(&run), want, "{run:?}");
}
