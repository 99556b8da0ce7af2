//! Two nodes on one machine, the second as if on another host: `berth up` (node `first`) in
//! this network namespace, `berth agent` (node `second`) in a network namespace of its own
//! with its own address, the two joined by a veth pair (a shared L2 link, as two hosts on one
//! switch). Checks per-node pod CIDRs, pods reaching each other across nodes by pod IP
//! (host-gw routes), a Service balancing over both nodes' pods, cluster DNS from the second
//! node, a local volume pinning its pods to the node with the data, and a node that stops
//! heartbeating: Unknown, tainted, a Deployment's pod replaced on the other node, a
//! StatefulSet's left Terminating with no second pod of its name. Needs root; everything it makes (namespace, veth, bridges, nft tables,
//! routes, processes, pods) is removed when it ends, pass or fail.

mod common;
mod podkit;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Berth, Kubectl, eventually};
use podkit::{T, import_busybox, wait_pod};
use serde_json::Value;

fn berth_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_LOG", "warn")
        .output()
        .expect("run berth")
}

#[track_caller]
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The second "host": a network namespace and the veth pair to it. Dropped last: deleting the
/// namespace removes everything in it (its end of the veth, its bridge, nft tables and
/// routes); deleting the veth removes the routes through it.
struct Host {
    netns: String,
    veth: String,
}

impl Host {
    /// `bn<pid>`, reached over `bnr<pid>` (here, `root_ip/30`) and `bnn<pid>` (there,
    /// `ns_ip/30`), with loopback up.
    fn create(root_ip: &str, ns_ip: &str) -> Host {
        let pid = std::process::id();
        let host = Host {
            netns: format!("bn{pid}"),
            veth: format!("bnr{pid}"),
        };
        let peer = format!("bnn{pid}");
        // Left over from an earlier run with this pid.
        host.remove();
        ip(&["netns", "add", &host.netns]);
        ip(&[
            "link",
            "add",
            &host.veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &host.netns,
        ]);
        ip(&["addr", "add", &format!("{root_ip}/30"), "dev", &host.veth]);
        ip(&["link", "set", &host.veth, "up"]);
        let ns = host.netns.as_str();
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", ns, "link", "set", &peer, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        host
    }

    /// A command run inside the namespace. Only the network namespace is entered (`ip netns
    /// exec` would also mount a /sys of its own, without the cgroup file system pods need).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        command
    }

    fn remove(&self) {
        for args in [
            vec!["netns", "del", self.netns.as_str()],
            vec!["link", "del", self.veth.as_str()],
        ] {
            let _ = Command::new("ip")
                .args(&args)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `berth agent` in the namespace: stopped (SIGTERM, then SIGKILL) when dropped, then `berth
/// down` on its data dir inside the namespace (its pods, their links, its routes).
struct Agent<'a> {
    child: Child,
    host: &'a Host,
    data_dir: PathBuf,
}

impl Agent<'_> {
    fn stop(&mut self) {
        // Already reaped (killed by the test): its pid may belong to another process now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        self.stop();
        let _ = self
            .host
            .command(env!("CARGO_BIN_EXE_berth"))
            .arg("down")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Lines a child prints on stdout, read on a thread.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[track_caller]
fn wait_line(lines: &std::sync::mpsc::Receiver<String>, prefix: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return,
            Ok(_) => {}
            Err(e) => panic!("no line {prefix:?} in {timeout:?}: {e}"),
        }
    }
}

fn log_level() -> String {
    std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into())
}

fn node_json(kubectl: &Kubectl, name: &str) -> Value {
    let run = kubectl.run(&["get", "node", name, "-o", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or(Value::Null)
}

fn ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

/// A pod pinned to `node` that sleeps: where requests are made from.
fn client_pod(name: &str, node: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},
        "spec":{{"nodeName":"{node}","terminationGracePeriodSeconds":1,
        "containers":[{{"name":"c","image":"busybox:test","command":["sleep","3600"]}}]}}}}"#
    )
}

const WEB: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
"spec":{"replicas":4,"selector":{"matchLabels":{"app":"web"}},
"template":{"metadata":{"labels":{"app":"web"}},"spec":{"terminationGracePeriodSeconds":1,
"containers":[{"name":"httpd","image":"busybox:test",
"command":["sh","-c","mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
"resources":{"requests":{"cpu":"100m","memory":"16Mi"}}}]}}}}"#;

const WEB_SERVICE: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},
"spec":{"selector":{"app":"web"},"ports":[{"port":80,"targetPort":8080}]}}"#;

/// What `wget` from inside `pod` fetches from `url`.
fn fetch(kubectl: &Kubectl, pod: &str, url: &str) -> Result<String, String> {
    // This busybox's `wget -T` crashes: the shell bounds it instead.
    let script = format!("wget -q -O - {url} & p=$!; (sleep 5; kill $p) 2>/dev/null & wait $p");
    let run = kubectl.run(&["exec", pod, "--", "sh", "-c", &script]);
    if run.code == 0 {
        Ok(run.stdout.trim().to_string())
    } else {
        Err(format!("{}{}", run.stdout, run.stderr))
    }
}

#[test]
fn two_nodes_on_a_shared_link_run_pods_that_reach_each_other() {
    let pid = std::process::id();
    let link = format!("10.{}.{}", 100 + pid % 50, (pid / 50) % 256);
    let (root_ip, ns_ip) = (format!("{link}.1"), format!("{link}.2"));
    let cluster_cidr = format!("10.{}.0.0/16", 50 + pid % 50);
    let host = Host::create(&root_ip, &ns_ip);

    // Node `first`: `berth up` serving on the link's address, so the other host reaches it.
    let first_bridge = format!("bm{}a", pid % 100_000);
    let mut first = Berth::unstarted(&[
        "--cluster-cidr",
        &cluster_cidr,
        "--pod-bridge",
        &first_bridge,
        "--node-name",
        "first",
        "--node-ip",
        &root_ip,
        "--node-monitor-grace-period-seconds",
        "20",
    ]);
    std::fs::create_dir_all(first.data_dir()).expect("data dir");
    import_busybox(&first);
    let server = format!("https://{root_ip}:{}", first.port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("up")
        .arg("--data-dir")
        .arg(first.data_dir())
        .arg("--listen")
        .arg(format!("{root_ip}:{}", first.port))
        .args(&first.extra_args)
        .env("BERTH_LOG", log_level())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start berth up");
    let lines = lines_of(&mut child);
    // Dropping `first` kills it and runs `berth down` on its data dir.
    first.child = Some(child);
    wait_line(&lines, "berth is up", Duration::from_secs(30));
    let kubectl = first.kubectl();
    // kubectl from this host uses the kubeconfig, which names the link's address.
    let kubeconfig = std::fs::read_to_string(first.kubeconfig()).expect("kubeconfig");
    assert!(kubeconfig.contains(&server), "{kubeconfig}");
    kubectl.ok(&["get", "namespaces"]);

    // Node `second`: `berth agent` inside the namespace, with its own data dir and images.
    let token = berth_cli(&[
        "token",
        "create",
        "--data-dir",
        first.data_dir().to_str().unwrap(),
        "--ttl",
        "1h",
    ]);
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8_lossy(&token.stdout);
    let token = token.lines().next().unwrap_or_default().trim().to_string();
    let tmp = tempfile::tempdir().expect("temp dir");
    let token_file = common::write_file(tmp.path(), "token", &format!("{token}\n"));
    let ca_file = tmp.path().join("ca.crt");
    std::fs::copy(first.data_dir().join("pki/ca.crt"), &ca_file).expect("copy the CA");
    let second_dir = Berth::unstarted(&["--store", "sqlite"]);
    let second_data = second_dir.data_dir();
    std::fs::create_dir_all(&second_data).expect("second data dir");
    import_busybox(&second_dir);
    let service_cidr = first
        .extra_args
        .iter()
        .position(|a| a == "--service-cidr")
        .map(|i| first.extra_args[i + 1].clone())
        .expect("a service CIDR");
    let mut child = host
        .command(env!("CARGO_BIN_EXE_berth"))
        .arg("agent")
        .args(["--server", &server])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(&ca_file)
        .args(["--node-name", "second", "--node-ip", &ns_ip])
        .arg("--data-dir")
        .arg(&second_data)
        .args(["--pod-bridge", &format!("bm{}b", pid % 100_000)])
        .args(["--cluster-cidr", &cluster_cidr])
        .args(["--service-cidr", &service_cidr])
        .env("BERTH_LOG", log_level())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start berth agent");
    let lines = lines_of(&mut child);
    let mut agent = Agent {
        child,
        host: &host,
        data_dir: second_data.clone(),
    };
    wait_line(&lines, "berth agent is up", Duration::from_secs(90));

    // Both Ready, each with its own share of the cluster CIDR.
    let prefix = cluster_cidr.trim_end_matches(".0.0/16");
    for (name, cidr) in [("first", "0"), ("second", "1")] {
        let node = eventually(&format!("node {name} is Ready"), T, || {
            let node = node_json(&kubectl, name);
            ready(&node).then_some(node.clone()).ok_or(node.to_string())
        });
        let want = format!("{prefix}.{cidr}.0/24");
        assert_eq!(node["spec"]["podCIDR"], want.as_str(), "{node}");
        assert_eq!(
            node["spec"]["podCIDRs"],
            serde_json::json!([want]),
            "{node}"
        );
    }
    // Written once: the API server refuses to change it.
    let change = kubectl.run(&[
        "patch",
        "node",
        "second",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"podCIDR":"{prefix}.9.0/24","podCIDRs":["{prefix}.9.0/24"]}}}}"#),
    ]);
    assert_ne!(change.code, 0, "{change:?}");
    assert!(
        change.stderr.contains("may not change podCIDR"),
        "refused for the podCIDR: {change:?}"
    );
    let kept = node_json(&kubectl, "second");
    assert_eq!(
        kept["spec"]["podCIDR"],
        format!("{prefix}.1.0/24").as_str(),
        "{kept}"
    );

    // A Deployment spread over both nodes (the least allocated node gets each next pod).
    kubectl.apply(WEB);
    let web = eventually(
        "4 web pods run with addresses",
        Duration::from_secs(60),
        || {
            let run = kubectl.run(&["get", "pods", "-l", "app=web", "-o", "json"]);
            let list: Value = serde_json::from_str(&run.stdout).map_err(|_| run.stderr.clone())?;
            let pods: Vec<(String, String, String)> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
                .map(|p| {
                    (
                        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                        p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            (pods.len() == 4).then_some(pods).ok_or(list.to_string())
        },
    );
    let nodes: BTreeSet<&str> = web.iter().map(|(_, node, _)| node.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["first", "second"]), "{web:?}");
    for (_, node, ip) in &web {
        let share = if node == "first" { "0" } else { "1" };
        assert!(ip.starts_with(&format!("{prefix}.{share}.")), "{web:?}");
    }

    // From a pod on each node to a pod on the other, by pod IP.
    for (client, node) in [("client-first", "first"), ("client-second", "second")] {
        kubectl.run_stdin(&["apply", "-f", "-"], &client_pod(client, node));
        wait_pod(&kubectl, client, T, |p| p["status"]["phase"] == "Running");
    }
    for (client, other) in [("client-first", "second"), ("client-second", "first")] {
        let (name, _, ip) = web
            .iter()
            .find(|(_, n, _)| n == other)
            .expect("a pod there");
        let answer = eventually(&format!("{client} reaches {name} at {ip}"), T, || {
            fetch(&kubectl, client, &format!("http://{ip}:8080/"))
        });
        assert_eq!(answer, *name);
    }

    // A Service over both nodes' pods: reachable from either node, answered from both.
    kubectl.apply(WEB_SERVICE);
    let cluster_ip = kubectl
        .ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    let node_of = |pod: &str| {
        web.iter()
            .find(|(name, _, _)| name == pod)
            .map(|(_, node, _)| node.clone())
    };
    for client in ["client-first", "client-second"] {
        let mut answered = BTreeSet::new();
        eventually(
            &format!("{client} gets answers from both nodes through the Service"),
            Duration::from_secs(60),
            || {
                let answer = fetch(&kubectl, client, &format!("http://{cluster_ip}/"))?;
                answered.extend(node_of(&answer));
                (answered.len() == 2)
                    .then_some(())
                    .ok_or(format!("{answered:?}"))
            },
        );
    }

    // Cluster DNS from both nodes: pods' resolver is the kube-dns Service, whose server is on
    // the first node's bridge (reached from the second through the proxy and the route).
    for client in ["client-first", "client-second"] {
        for name in [
            "kubernetes.default.svc.cluster.local",
            "web.default.svc.cluster.local",
        ] {
            let answer = eventually(&format!("{name} resolves in {client}"), T, || {
                let run = kubectl.run(&["exec", client, "--", "nslookup", name]);
                (run.code == 0)
                    .then(|| run.stdout.clone())
                    .ok_or(format!("{}{}", run.stdout, run.stderr))
            });
            if name.starts_with("web") {
                assert!(answer.contains(&cluster_ip), "{answer}");
            }
        }
    }
    let answer = eventually("http://web/ from second", T, || {
        fetch(&kubectl, "client-second", "http://web/")
    });
    assert!(node_of(&answer).is_some(), "{answer}");

    // The routes are berth's, one per other node, in each namespace.
    let routes = |command: &mut Command| {
        let output = command
            .args(["route", "show", "proto", "211"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let here = routes(&mut Command::new("ip"));
    assert!(
        here.contains(&format!("{prefix}.1.0/24 via {ns_ip}")),
        "{here}"
    );
    let there = routes(&mut host.command("ip"));
    assert!(
        there.contains(&format!("{prefix}.0.0/24 via {root_ip} dev bnn{pid}")),
        "{there}"
    );
    assert_eq!(there.trim().lines().count(), 1, "{there}");

    // A local volume pins its pods to the node that holds its data.
    kubectl.apply(
        r#"{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"data"},
        "spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"16Mi"}}}}"#,
    );
    let keeper = |pinned: bool| {
        let selector = if pinned {
            r#""nodeSelector":{"kubernetes.io/hostname":"second"},"#
        } else {
            ""
        };
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"keeper"}},
            "spec":{{{selector}"terminationGracePeriodSeconds":1,
            "containers":[{{"name":"c","image":"busybox:test",
            "command":["sh","-c","echo kept >> /data/log; cat /data/log; sleep 3600"],
            "volumeMounts":[{{"name":"d","mountPath":"/data"}}]}}],
            "volumes":[{{"name":"d","persistentVolumeClaim":{{"claimName":"data"}}}}]}}}}"#
        )
    };
    kubectl.apply(&keeper(true));
    let pod = wait_pod(&kubectl, "keeper", T, |p| p["status"]["phase"] == "Running");
    assert_eq!(pod["spec"]["nodeName"], "second");
    let volume = kubectl
        .ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"])
        .trim()
        .to_string();
    let affinity = kubectl.ok(&[
        "get",
        "pv",
        &volume,
        "-o",
        "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms}",
    ]);
    assert!(affinity.contains("\"second\""), "{affinity}");
    kubectl.ok(&["delete", "pod", "keeper", "--wait=true"]);
    kubectl.apply(&keeper(false));
    let pod = wait_pod(&kubectl, "keeper", T, |p| p["status"]["phase"] == "Running");
    assert_eq!(pod["spec"]["nodeName"], "second", "the data is there");
    // The second pod appended to what the first wrote: the same volume, on the same node.
    eventually("the keeper's log shows both writes", T, || {
        let log = kubectl.run(&["logs", "keeper"]).stdout;
        (log == "kept\nkept\n").then_some(()).ok_or(log)
    });
    kubectl.ok(&["delete", "pod", "keeper", "--wait=true"]);

    // A node that stops heartbeating: Unknown, tainted, its pods evicted by their
    // tolerations. A Deployment's pod is replaced elsewhere; a StatefulSet's is not while it
    // may still run there (at most one pod of its identity).
    let toleration = r#""tolerations":[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":2}],"#;
    let container =
        r#""containers":[{"name":"c","image":"busybox:test","command":["sleep","3600"]}]"#;
    kubectl.ok(&["cordon", "first"]);
    kubectl.apply(&format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"mover"}},
        "spec":{{"replicas":1,"selector":{{"matchLabels":{{"app":"mover"}}}},
        "template":{{"metadata":{{"labels":{{"app":"mover"}}}},"spec":{{{toleration}"terminationGracePeriodSeconds":1,{container}}}}}}}}}"#
    ));
    kubectl.apply(&format!(
        r#"{{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{{"name":"db"}},
        "spec":{{"replicas":1,"serviceName":"db","selector":{{"matchLabels":{{"app":"db"}}}},
        "template":{{"metadata":{{"labels":{{"app":"db"}}}},"spec":{{{toleration}"terminationGracePeriodSeconds":1,{container}}}}}}}}}"#
    ));
    let running_on = |selector: &str| -> Vec<(String, String, bool)> {
        let run = kubectl.run(&["get", "pods", "-l", selector, "-o", "json"]);
        let list: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["metadata"]["deletionTimestamp"].is_string(),
                )
            })
            .collect()
    };
    for selector in ["app=mover", "app=db"] {
        eventually(&format!("{selector} runs on second"), T, || {
            let run = kubectl.run(&["get", "pods", "-l", selector, "-o", "json"]);
            let list: Value = serde_json::from_str(&run.stdout).map_err(|_| run.stderr.clone())?;
            let on_second = list["items"].as_array().is_some_and(|items| {
                items.len() == 1
                    && items[0]["spec"]["nodeName"] == "second"
                    && items[0]["status"]["phase"] == "Running"
            });
            on_second.then_some(()).ok_or(list.to_string())
        });
    }
    kubectl.ok(&["uncordon", "first"]);
    let db_uid = kubectl.ok(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"]);
    // SIGKILL: no goodbye, and its pods' processes keep running there.
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    eventually(
        "second goes Unknown and tainted",
        Duration::from_secs(60),
        || {
            let node = node_json(&kubectl, "second");
            let unknown = node["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "Unknown");
            let tainted = node["spec"]["taints"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
                })
            });
            (unknown && tainted).then_some(()).ok_or(node.to_string())
        },
    );
    eventually(
        "mover is replaced on first",
        Duration::from_secs(60),
        || {
            let pods = running_on("app=mover");
            pods.iter()
                .any(|(_, node, deleting)| node == "first" && !deleting)
                .then_some(())
                .ok_or(format!("{pods:?}"))
        },
    );
    eventually("db-0 is Terminating", T, || {
        let pods = running_on("app=db");
        (pods == [("db-0".to_string(), "second".to_string(), true)])
            .then_some(())
            .ok_or(format!("{pods:?}"))
    });
    std::thread::sleep(Duration::from_secs(5));
    let pods = running_on("app=db");
    assert_eq!(pods, [("db-0".to_string(), "second".to_string(), true)]);
    let uid = kubectl.ok(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(uid, db_uid, "no second db-0");

    // `berth down` there removes its pods and its routes.
    drop(agent);
    let there = routes(&mut host.command("ip"));
    assert_eq!(there.trim(), "", "{there}");
    drop(second_dir);
    drop(first);
}
