//! Services carry traffic: a cluster IP spreads connections over the ready replicas, drops a
//! replica whose readiness fails and follows scaling; node ports and load balancer ports
//! answer on the host's 127.0.0.1; sessionAffinity ClientIP pins a client; the kubernetes
//! Service leads pods to the API server; DNS reaches pods over UDP through the kube-dns
//! Service; and the rules stay in place while berth restarts and follow changes after it.

mod common;
mod podkit;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Kubectl;
use podkit::*;

/// A Deployment of `replicas` busybox web servers answering `GET /` with their pod's name,
/// ready while /tmp/unready does not exist.
fn web(name: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox:test
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          exec: {{command: ["sh", "-c", "test ! -f /tmp/unready"]}}
          periodSeconds: 1
          failureThreshold: 1
"#
    )
}

fn service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n{spec}"
    )
}

const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sleep", "3600"]
"#;

fn cluster_ip(kubectl: &Kubectl, service: &str) -> String {
    kubectl
        .ok(&["get", "svc", service, "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string()
}

/// The pod names that answer `count` requests to `url` from inside the client pod (one
/// `kubectl exec` for all of them). (This busybox's `wget -T` crashes, so there is no
/// timeout: the proxy refuses what it cannot carry rather than letting it hang.)
fn answers_from_pod(kubectl: &Kubectl, url: &str, count: u32) -> Vec<String> {
    let script = format!(
        "i=0; while [ $i -lt {count} ]; do wget -q -O - {url} || echo FAILED; i=$((i+1)); done"
    );
    let run = kubectl.run(&["exec", "client", "--", "sh", "-c", &script]);
    run.stdout.lines().map(str::to_string).collect()
}

/// `GET /` on `address` from the host; the body (the answering pod's name).
fn get_from_host(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.trim().to_string())
}

fn ready_pods(kubectl: &Kubectl, app: &str) -> BTreeSet<String> {
    let out = kubectl.ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|l| l.strip_suffix(" True"))
        .map(str::to_string)
        .collect()
}

/// Polls until `check` holds; if it never does, fails with what its last attempt said.
#[track_caller]
fn eventually(what: &str, check: impl FnMut() -> Result<(), String>) {
    common::eventually(what, T, check)
}

/// `Ok` if `holds`, else `Err(describe())`.
fn holds(holds: bool, describe: impl FnOnce() -> String) -> Result<(), String> {
    if holds { Ok(()) } else { Err(describe()) }
}

fn wait_ready(kubectl: &Kubectl, app: &str, count: usize) -> BTreeSet<String> {
    eventually(&format!("{count} ready {app} pods"), || {
        let ok = ready_pods(kubectl, app).len() == count && all_pods(kubectl, app).len() == count;
        holds(ok, || kubectl.run(&["get", "pods", "-o", "wide"]).stdout)
    });
    ready_pods(kubectl, app)
}

fn all_pods(kubectl: &Kubectl, app: &str) -> BTreeSet<String> {
    kubectl
        .ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect()
}

#[test]
fn a_cluster_ip_spreads_over_ready_replicas_and_follows_readiness_and_scale() {
    let (_berth, kubectl) = start();
    kubectl.apply(&web("web", 3));
    kubectl.apply(&service("web", ""));
    kubectl.apply(CLIENT);
    wait_pod(&kubectl, "client", T, |p| phase(p) == "Running");
    let replicas = wait_ready(&kubectl, "web", 3);
    let ip = cluster_ip(&kubectl, "web");

    // Every replica answers some of 45 connections through the cluster IP, and by name.
    let mut seen = BTreeSet::new();
    eventually("all three replicas answer through the Service", || {
        seen.extend(answers_from_pod(&kubectl, &format!("http://{ip}/"), 45));
        holds(seen.is_superset(&replicas), || {
            format!("{seen:?} of {replicas:?}")
        })
    });
    assert!(seen.is_subset(&replicas), "{seen:?}");
    let by_name = answers_from_pod(&kubectl, "http://web/", 3);
    assert!(by_name.iter().all(|n| replicas.contains(n)), "{by_name:?}");

    // A replica whose readiness fails gets no more connections.
    let unready = replicas.iter().next().cloned().unwrap_or_default();
    kubectl.ok(&["exec", &unready, "--", "touch", "/tmp/unready"]);
    eventually("the failing replica leaves the Service", || {
        let gone = !ready_pods(&kubectl, "web").contains(&unready);
        holds(gone, || kubectl.run(&["get", "pods"]).stdout)
    });
    // The proxy follows the EndpointSlice within a second.
    std::thread::sleep(Duration::from_secs(1));
    let answers = answers_from_pod(&kubectl, &format!("http://{ip}/"), 30);
    assert_eq!(answers.len(), 30, "{answers:?}");
    assert!(!answers.contains(&unready), "{answers:?}");
    assert!(!answers.iter().any(|a| a == "FAILED"), "{answers:?}");

    // Scaled to one, only that one answers.
    kubectl.ok(&["scale", "deployment/web", "--replicas=1"]);
    let mut left = BTreeSet::new();
    eventually("one replica left", || {
        left = all_pods(&kubectl, "web");
        holds(left.len() == 1, || kubectl.run(&["get", "pods"]).stdout)
    });
    kubectl.ok(&[
        "exec",
        left.iter().next().map(String::as_str).unwrap_or_default(),
        "--",
        "rm",
        "-f",
        "/tmp/unready",
    ]);
    let only = wait_ready(&kubectl, "web", 1);
    eventually("only the remaining replica answers", || {
        let answers: BTreeSet<String> = answers_from_pod(&kubectl, &format!("http://{ip}/"), 10)
            .into_iter()
            .collect();
        holds(answers == only, || format!("{answers:?} vs {only:?}"))
    });

    // A Service without endpoints refuses at once instead of hanging.
    kubectl.apply(&service("nobody", ""));
    let empty = cluster_ip(&kubectl, "nobody");
    let started = Instant::now();
    let answers = answers_from_pod(&kubectl, &format!("http://{empty}/"), 1);
    assert_eq!(answers, ["FAILED"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The kubernetes Service leads pods to the API server (TCP through the proxy).
    let api = cluster_ip(&kubectl, "kubernetes");
    let connect = kubectl.run(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        &format!("echo | nc -w 2 {api} 443 && echo connected"),
    ]);
    assert!(connect.stdout.contains("connected"), "{connect:?}");
}

#[test]
fn node_ports_and_load_balancers_answer_on_the_host() {
    let (_berth, kubectl) = start();
    kubectl.apply(&web("edge", 2));
    let lb_port = common::free_port();
    kubectl.apply(&service("edge", "  type: NodePort\n"));
    kubectl.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: edge-lb}}\nspec:\n  type: LoadBalancer\n  selector: {{app: edge}}\n  ports: [{{name: http, port: {lb_port}, targetPort: 8080}}]\n"
    ));
    let replicas = wait_ready(&kubectl, "edge", 2);
    let node_port = kubectl.ok(&[
        "get",
        "svc",
        "edge",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let node_port: u16 = node_port.trim().parse().expect("a node port");

    let mut seen = BTreeSet::new();
    for (what, port) in [("node port", node_port), ("load balancer", lb_port)] {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        eventually(&format!("the {what} answers on 127.0.0.1"), || {
            let mut last = None;
            for _ in 0..20 {
                match get_from_host(address) {
                    Ok(name) => drop(seen.insert(name)),
                    Err(e) => last = Some(e),
                }
            }
            holds(seen.is_superset(&replicas), || {
                format!("{seen:?} of {replicas:?}, {last:?}")
            })
        });
        seen.clear();
    }
    // The cluster IP answers the host too.
    let ip: std::net::Ipv4Addr = cluster_ip(&kubectl, "edge").parse().expect("cluster IP");
    let name = get_from_host(SocketAddr::from((ip, 80))).expect("the cluster IP from the host");
    assert!(replicas.contains(&name), "{name}");

    // The load balancer's status names the node's address, where it answers too.
    let mut ingress = String::new();
    eventually("the load balancer gets an ingress address", || {
        ingress = kubectl.ok(&[
            "get",
            "svc",
            "edge-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        holds(!ingress.trim().is_empty(), || {
            kubectl.run(&["get", "svc", "edge-lb", "-o", "yaml"]).stdout
        })
    });
    let ingress: std::net::Ipv4Addr = ingress.trim().parse().expect("an IPv4 ingress");
    let name = get_from_host(SocketAddr::from((ingress, lb_port))).expect("the ingress address");
    assert!(replicas.contains(&name), "{name}");
}

#[test]
fn session_affinity_pins_a_client_to_one_replica() {
    let (_berth, kubectl) = start();
    kubectl.apply(&web("sticky", 3));
    kubectl.apply(&service("sticky", "  sessionAffinity: ClientIP\n"));
    kubectl.apply(CLIENT);
    wait_pod(&kubectl, "client", T, |p| phase(p) == "Running");
    wait_ready(&kubectl, "sticky", 3);
    let ip = cluster_ip(&kubectl, "sticky");
    let mut answers = Vec::new();
    eventually("the sticky Service answers", || {
        answers = answers_from_pod(&kubectl, &format!("http://{ip}/"), 20);
        holds(!answers.iter().any(|a| a == "FAILED"), || {
            format!("{answers:?}")
        })
    });
    let distinct: BTreeSet<&String> = answers.iter().collect();
    assert_eq!(distinct.len(), 1, "{answers:?}");
}

#[test]
fn services_stay_reachable_while_berth_restarts_and_follow_changes_after() {
    let (mut berth, kubectl) = start();
    kubectl.apply(&web("steady", 2));
    kubectl.apply(&service("steady", ""));
    let replicas = wait_ready(&kubectl, "steady", 2);
    let ip: std::net::Ipv4Addr = cluster_ip(&kubectl, "steady").parse().expect("cluster IP");
    let address = SocketAddr::from((ip, 80));
    eventually("the Service answers", || {
        let answer = get_from_host(address);
        let ok = answer.as_ref().is_ok_and(|n| replicas.contains(n));
        holds(ok, || format!("{answer:?}"))
    });
    // While berth is down the kernel's rules and the pods carry on.
    berth.kill();
    let name = get_from_host(address).expect("reachable while berth is down");
    assert!(replicas.contains(&name), "{name}");
    berth.restart();
    let name = get_from_host(address).expect("reachable after the restart");
    assert!(replicas.contains(&name), "{name}");
    // The restarted proxy follows a change.
    kubectl.ok(&["scale", "deployment/steady", "--replicas=3"]);
    let grown = wait_ready(&kubectl, "steady", 3);
    let mut seen = BTreeSet::new();
    eventually("the new replica answers after the restart", || {
        for _ in 0..20 {
            if let Ok(name) = get_from_host(address) {
                seen.insert(name);
            }
        }
        holds(seen == grown, || format!("{seen:?} of {grown:?}"))
    });
    // Deleting the Service takes its rules away (and nothing else of it stays in the table).
    kubectl.ok(&["delete", "svc", "steady"]);
    eventually("the deleted Service's rules go", || {
        let answer = get_from_host(address);
        holds(answer.is_err(), || format!("{answer:?}"))
    });
    let bridge = berth
        .up_command()
        .get_args()
        .skip_while(|a| *a != "--pod-bridge")
        .nth(1)
        .map(|a| a.to_string_lossy().to_string())
        .expect("the test's bridge");
    let table = std::process::Command::new("nft")
        .args(["list", "table", "ip", &bridge])
        .output()
        .expect("nft");
    let listing = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{listing}");
    assert!(!listing.contains("default/steady/"), "{listing}");
    // `berth down` removes the table.
    berth.kill();
    assert!(berth.down());
    let gone = std::process::Command::new("nft")
        .args(["list", "table", "ip", &bridge])
        .output()
        .expect("nft");
    assert!(!gone.status.success());
}
