//! Pods really run: the real `berth up` (API server, scheduler, node agent) and the real
//! kubectl, with a busybox image built from Debian's busybox-static and imported with
//! `berth image import`. Each test checks what a user sees: status, logs, events, files.

mod common;
mod podkit;

use std::time::{Duration, Instant};

use common::Kubectl;
use podkit::*;

#[test]
fn a_pod_runs_prints_and_exits_with_its_code() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo hello from $(POD_NAME); echo oops >&2; hostname; exit 3"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
"#,
    );
    let pod = wait_pod(&kubectl, "hello", T, |p| phase(p) == "Failed");
    let terminated = &container_state(&pod, "main")["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod}");
    assert_eq!(terminated["reason"], "Error");
    assert!(
        terminated["containerID"]
            .as_str()
            .unwrap_or("")
            .starts_with("berth://")
    );
    assert!(pod["spec"]["nodeName"].as_str().is_some());
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    // stdout and stderr are separate pipes, so only each stream's own order is certain.
    let logs = kubectl.ok(&["logs", "hello"]);
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["hello", "hello from hello", "oops"], "{logs}");
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hello",
        "-o",
        "json",
    ]);
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            events.contains(&format!("\"reason\": \"{reason}\"")),
            "no {reason} event: {events}"
        );
    }
}

#[test]
fn restart_policy_always_restarts_with_crash_loop_back_off() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo run; exit 1"]
"#,
    );
    // The first restart is immediate, the next waits 10 s: CrashLoopBackOff shows in between.
    let pod = wait_pod(&kubectl, "crash", T, |p| {
        container_state(p, "main")["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let status = container_status(&pod, "main");
    assert!(status["restartCount"].as_i64().unwrap_or(0) >= 1, "{pod}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1, "{pod}");
    assert_eq!(phase(&pod), "Running");
    let message = container_state(&pod, "main")["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.starts_with("back-off 10s restarting failed container=main pod=crash_default("),
        "{message}"
    );
    // The delay grows: after the 10 s back-off the next one is 20 s.
    let pod = wait_pod(&kubectl, "crash", T, |p| {
        container_state(p, "main")["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("back-off 20s"))
    });
    assert!(
        container_status(&pod, "main")["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    );
    let previous = kubectl.ok(&["logs", "crash", "--previous"]);
    assert_eq!(previous, "run\n");
}

#[test]
fn init_containers_run_first_and_share_an_empty_dir() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  restartPolicy: Never
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: first
    image: busybox:test
    command: ["sh", "-c", "echo one > /work/log"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: busybox:test
    command: ["sh", "-c", "echo two >> /work/log"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "cat /work/log"]
    volumeMounts: [{name: work, mountPath: /work}]
"#,
    );
    let pod = wait_pod(&kubectl, "init", T, |p| phase(p) == "Succeeded");
    assert_eq!(condition(&pod, "Initialized"), "True");
    assert_eq!(kubectl.ok(&["logs", "init", "-c", "main"]), "one\ntwo\n");
}

#[test]
fn a_failing_init_container_keeps_the_main_one_from_starting() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: gate}
spec:
  restartPolicy: Never
  initContainers:
  - name: check
    image: busybox:test
    command: ["sh", "-c", "exit 5"]
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo should not run"]
"#,
    );
    let pod = wait_pod(&kubectl, "gate", T, |p| phase(p) == "Failed");
    assert_eq!(condition(&pod, "Initialized"), "False");
    assert_eq!(
        container_state(&pod, "main")["waiting"]["reason"],
        "PodInitializing",
        "{pod}"
    );
}

#[test]
fn a_missing_image_waits_with_err_image_pull() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: nope}
spec:
  containers:
  - name: main
    image: example.com/not-there:1
"#,
    );
    let pod = wait_pod(&kubectl, "nope", T, |p| {
        matches!(
            container_state(p, "main")["waiting"]["reason"].as_str(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    });
    assert_eq!(phase(&pod), "Pending");
}

#[test]
fn deleting_a_pod_that_ignores_sigterm_waits_for_its_grace_period() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 1; done"]
"#,
    );
    wait_pod(&kubectl, "stubborn", T, |p| phase(p) == "Running");
    assert!(
        marker_running("trap '' TERM"),
        "the container's process is not visible"
    );
    let started = Instant::now();
    kubectl.ok(&["delete", "pod", "stubborn", "--wait=true", "--timeout=30s"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "killed before its grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "took too long: {took:?}");
    assert!(
        !marker_running("trap '' TERM"),
        "a process of the pod survived"
    );
}

#[test]
fn a_memory_limit_kills_with_oom_killed() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]
    resources:
      limits: {memory: 32Mi}
"#,
    );
    let pod = wait_pod(&kubectl, "hog", T, |p| phase(p) == "Failed");
    let terminated = &container_state(&pod, "main")["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{pod}");
    assert_eq!(terminated["exitCode"], 137);
}

#[test]
fn env_comes_from_config_maps_secrets_and_the_downward_api() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue, size: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: envy, labels: {app: envy}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo $COLOR $PASSWORD $NS $NODE $MISSING; echo prefixed=$CFG_size"]
    envFrom:
    - prefix: CFG_
      configMapRef: {name: settings}
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: settings, key: color}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: NS
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: MISSING
      valueFrom: {configMapKeyRef: {name: nothing, key: x, optional: true}}
"#,
    );
    let pod = wait_pod(&kubectl, "envy", T, |p| phase(p) == "Succeeded");
    let node = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        kubectl.ok(&["logs", "envy"]),
        format!("blue hunter2 default {node}\nprefixed=3\n")
    );
}

#[test]
fn berth_restarted_under_a_running_pod_leaves_the_same_process_running() {
    let (mut berth, kubectl) = start();
    let marker = format!("sleep {}", 400_000 + std::process::id() % 1000);
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: steady}}
spec:
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "{marker}"]
"#
    ));
    wait_pod(&kubectl, "steady", T, |p| phase(p) == "Running");
    let before: Vec<u32> = host_pids(&marker).collect();
    assert_eq!(before.len(), 1, "expected one container process");
    // `berth down` refuses to run beside `berth up` and kills nothing.
    assert!(!berth.down(), "berth down ran under a live berth up");
    assert_eq!(host_pids(&marker).collect::<Vec<_>>(), before);
    berth.kill();
    berth.restart();
    let pod = wait_pod(&kubectl, "steady", T, |p| phase(p) == "Running");
    assert_eq!(container_status(&pod, "main")["restartCount"], 0, "{pod}");
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<u32> = host_pids(&marker).collect();
    assert_eq!(before, after, "the container was restarted");
    kubectl.ok(&["delete", "pod", "steady", "--grace-period=1", "--wait=true"]);
    assert!(!marker_running(&marker));
}

fn long_runner(kubectl: &Kubectl, name: &str) {
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sleep", "3600"]
"#
    ));
    wait_pod(kubectl, name, T, |p| phase(p) == "Running");
}

#[test]
fn exec_runs_in_the_container_and_reports_its_exit_code() {
    let (_berth, kubectl) = start();
    long_runner(&kubectl, "box");
    let run = kubectl.run(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "out\n");
    assert!(run.stderr.contains("err"), "{}", run.stderr);
    // Its own hostname, /etc/hosts and PID namespace.
    assert_eq!(kubectl.ok(&["exec", "box", "--", "hostname"]), "box\n");
    let hosts = kubectl.ok(&["exec", "box", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file."),
        "{hosts}"
    );
    assert!(hosts.contains("\tbox\n"), "{hosts}");
    let pid1 = kubectl.ok(&["exec", "box", "--", "cat", "/proc/1/cmdline"]);
    assert_eq!(pid1, "sleep\u{0}3600\u{0}");
    let run = kubectl.run_stdin(&["exec", "-i", "box", "--", "cat"], "piped through\n");
    assert_eq!(run.stdout, "piped through\n", "{run:?}");
}

#[test]
fn port_forward_reaches_a_server_in_the_pod() {
    let (_berth, kubectl) = start();
    let port = common::free_port();
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p {port} -h /www"]
    readinessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
"#
    ));
    wait_pod(&kubectl, "web", T, |p| condition(p, "Ready") == "True");
    let mut child = kubectl
        .command(&["port-forward", "pod/web", &format!(":{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).expect("read");
    // kubectl prints a line per connection; a closed pipe would kill it.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let local: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"));
    let response = http_get(local, "/index.html");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        response.starts_with("HTTP/1.") && response.ends_with("served\n"),
        "{response}"
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn a_readiness_probe_flips_ready_both_ways() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    let pod = wait_pod(&kubectl, "probed", T, |p| phase(p) == "Running");
    assert_eq!(condition(&pod, "Ready"), "False");
    kubectl.ok(&["exec", "probed", "--", "touch", "/tmp/ready"]);
    wait_pod(&kubectl, "probed", T, |p| condition(p, "Ready") == "True");
    kubectl.ok(&["exec", "probed", "--", "rm", "/tmp/ready"]);
    let pod = wait_pod(&kubectl, "probed", T, |p| condition(p, "Ready") == "False");
    assert_eq!(container_status(&pod, "main")["restartCount"], 0);
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Unhealthy",
        "-o",
        "json",
    ]);
    assert!(events.contains("Readiness probe failed"), "{events}");
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: lively}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "touch /tmp/alive; exec sleep 3600"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    wait_pod(&kubectl, "lively", T, |p| phase(p) == "Running");
    kubectl.ok(&["exec", "lively", "--", "rm", "/tmp/alive"]);
    // The container is killed and restarted from a fresh root, where /tmp/alive exists again.
    let pod = wait_pod(&kubectl, "lively", T, |p| {
        container_status(p, "main")["restartCount"] == 1
            && container_state(p, "main")["running"].is_object()
    });
    assert!(
        container_status(&pod, "main")["lastState"]["terminated"].is_object(),
        "{pod}"
    );
    let events = kubectl.ok(&["get", "events", "-o", "json"]);
    assert!(
        events.contains("failed liveness probe, will be restarted"),
        "{events}"
    );
}

#[test]
fn an_empty_dir_survives_a_container_restart_but_not_the_pod() {
    let (_berth, kubectl) = start();
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  restartPolicy: OnFailure
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo count=$n; [ $n -ge 2 ]"]
    volumeMounts: [{name: data, mountPath: /data}]
"#;
    kubectl.apply(manifest);
    wait_pod(&kubectl, "counter", T, |p| phase(p) == "Succeeded");
    assert_eq!(kubectl.ok(&["logs", "counter"]), "count=2\n");
    assert_eq!(kubectl.ok(&["logs", "counter", "--previous"]), "count=1\n");
    kubectl.ok(&["delete", "pod", "counter", "--wait=true"]);
    kubectl.apply(manifest);
    // A new pod, a new emptyDir: it counts from 1 again.
    wait_pod(&kubectl, "counter", T, |p| {
        container_status(p, "main")["lastState"]["terminated"]["exitCode"] == 1
            || phase(p) == "Succeeded"
    });
    let first = kubectl.run(&["logs", "counter", "--previous"]);
    assert_eq!(first.stdout, "count=1\n", "{first:?}");
}

#[test]
fn config_map_secret_and_host_path_volumes_show_their_contents() {
    let (berth, kubectl) = start();
    let host_dir = berth.dir.path().join("shared");
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    std::fs::write(host_dir.join("greeting"), "from the host\n").expect("write");
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: conf}}
data: {{app.conf: "level=debug\n", other: "x"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{token: s3cr3t}}
---
apiVersion: v1
kind: Pod
metadata: {{name: vols}}
spec:
  restartPolicy: Never
  volumes:
  - name: conf
    configMap: {{name: conf, items: [{{key: app.conf, path: etc/app.conf}}]}}
  - name: keys
    secret: {{secretName: keys, defaultMode: 0400}}
  - name: host
    hostPath: {{path: {host}, type: Directory}}
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "cat /conf/etc/app.conf /keys/token; echo; cat /host/greeting; echo written > /host/out; ls /conf; touch /conf/x 2>/dev/null || echo read-only"]
    volumeMounts:
    - {{name: conf, mountPath: /conf}}
    - {{name: keys, mountPath: /keys}}
    - {{name: host, mountPath: /host}}
"#,
        host = host_dir.display()
    ));
    wait_pod(&kubectl, "vols", T, |p| phase(p) == "Succeeded");
    assert_eq!(
        kubectl.ok(&["logs", "vols"]),
        "level=debug\ns3cr3t\nfrom the host\netc\nread-only\n"
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("out")).expect("written by the pod"),
        "written\n"
    );
}

#[test]
fn a_sub_path_that_escapes_its_volume_through_a_symlink_is_refused() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: escape}
spec:
  restartPolicy: Never
  volumes: [{name: vol, emptyDir: {}}]
  initContainers:
  - name: plant
    image: busybox:test
    command: ["ln", "-s", "/", "/vol/door"]
    volumeMounts: [{name: vol, mountPath: /vol}]
  containers:
  - name: main
    image: busybox:test
    command: ["ls", "/mnt/etc"]
    volumeMounts: [{name: vol, mountPath: /mnt, subPath: door}]
"#,
    );
    let pod = wait_pod(&kubectl, "escape", T, |p| {
        container_state(p, "main")["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let message = container_state(&pod, "main")["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains("outside the volume"), "{message}");
    assert_ne!(phase(&pod), "Succeeded");
}

#[test]
fn pid_one_without_a_term_handler_is_killed_at_the_end_of_its_grace_period() {
    let (_berth, kubectl) = start();
    let marker = format!("sleep {}", 500_000 + std::process::id() % 1000);
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: pid1}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox:test
    command: [{args}]
"#,
        args = marker
            .split(' ')
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    wait_pod(&kubectl, "pid1", T, |p| phase(p) == "Running");
    assert!(
        marker_running(&marker),
        "the container's process is not visible"
    );
    let started = Instant::now();
    kubectl.ok(&["delete", "pod", "pid1", "--wait=true", "--timeout=30s"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "killed before its grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "took too long: {took:?}");
    assert!(!marker_running(&marker), "the container process survived");
}

#[test]
fn a_finished_pod_is_not_run_again_after_berth_down_and_up() {
    let (mut berth, kubectl) = start();
    let out = berth.dir.path().join("runs");
    std::fs::create_dir_all(&out).expect("mkdir");
    kubectl.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: once}}
spec:
  restartPolicy: Never
  volumes: [{{name: out, hostPath: {{path: {out}, type: Directory}}}}]
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "echo ran >> /out/runs"]
    volumeMounts: [{{name: out, mountPath: /out}}]
"#,
        out = out.display()
    ));
    wait_pod(&kubectl, "once", T, |p| phase(p) == "Succeeded");
    berth.kill();
    assert!(berth.down(), "berth down failed");
    berth.launch();
    // Once a new pod runs, the restarted agent has been through every pod it has.
    long_runner(&kubectl, "later");
    let pod = pod_json(&kubectl, "once");
    assert_eq!(phase(&pod), "Succeeded", "{pod}");
    assert_eq!(
        container_state(&pod, "main")["terminated"]["exitCode"],
        0,
        "{pod}"
    );
    let runs = std::fs::read_to_string(out.join("runs")).expect("runs");
    assert_eq!(runs, "ran\n", "the finished pod ran again");
}

#[test]
fn probes_keep_running_for_containers_adopted_after_a_restart() {
    let (mut berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "touch /tmp/ready; exec sleep 3600"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
"#,
    );
    wait_pod(&kubectl, "probed", T, |p| condition(p, "Ready") == "True");
    berth.kill();
    berth.restart();
    // The adopted container's readiness is probed again: it comes back Ready…
    wait_pod(&kubectl, "probed", T, |p| {
        condition(p, "Ready") == "True" && container_status(p, "main")["restartCount"] == 0
    });
    // …and follows the probe both ways.
    kubectl.ok(&["exec", "probed", "--", "rm", "/tmp/ready"]);
    wait_pod(&kubectl, "probed", T, |p| condition(p, "Ready") == "False");
    kubectl.ok(&["exec", "probed", "--", "touch", "/tmp/ready"]);
    wait_pod(&kubectl, "probed", T, |p| condition(p, "Ready") == "True");
}
