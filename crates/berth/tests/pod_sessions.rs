//! What a user reads from and types into real pods: `kubectl logs` with its flags, `exec -it`
//! with the terminal's size, `attach`, the downward API as files and termination messages —
//! all against busybox containers run by the real node agent.

mod common;
mod podkit;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Kubectl;
use podkit::*;

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout as they arrive.
fn lines_of(child: &mut Killed) -> mpsc::Receiver<String> {
    let stdout = child.0.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[track_caller]
fn next_line(lines: &mpsc::Receiver<String>, within: Duration) -> String {
    lines
        .recv_timeout(within)
        .unwrap_or_else(|e| panic!("no line within {within:?}: {e}"))
}

#[test]
fn logs_follow_tail_timestamps_since_container_and_previous() {
    let (_berth, kubectl) = start();
    // "main" prints a numbered line a second, then a marker when told to stop through a file;
    // "side" prints one line; both belong to one pod.
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: OnFailure
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo line $i; sleep 0.3; done; echo bye; exit 1"]
  - name: side
    image: busybox:test
    command: ["sh", "-c", "echo from side; sleep 3600"]
"#,
    );
    wait_pod(&kubectl, "talker", T, |p| phase(p) == "Running");

    let mut follow = Killed(
        kubectl
            .command(&["logs", "-f", "talker", "-c", "main"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl logs -f"),
    );
    let lines = lines_of(&mut follow);
    let first = next_line(&lines, T);
    assert!(first.starts_with("line "), "{first}");
    // -f keeps delivering what the container prints after kubectl started.
    let n: u32 = first[5..].parse().expect("a line number");
    let later = next_line(&lines, T);
    assert_eq!(later, format!("line {}", n + 1));

    let tail = kubectl.ok(&["logs", "talker", "-c", "main", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("line ")), "{tail}");
    let stamped = kubectl.ok(&["logs", "talker", "-c", "main", "--tail=1", "--timestamps"]);
    let (stamp, rest) = stamped.trim_end().split_once(' ').expect("timestamp first");
    assert!(stamp.ends_with('Z') && stamp.contains('T'), "{stamped}");
    assert!(rest.starts_with("line "), "{stamped}");
    assert!(
        !kubectl
            .ok(&["logs", "talker", "-c", "main", "--since=1h"])
            .is_empty()
    );
    assert_eq!(kubectl.ok(&["logs", "talker", "-c", "side"]), "from side\n");
    // A pod with two containers needs -c (kubectl picks the default container and says so).
    let run = kubectl.run(&["logs", "talker"]);
    assert!(run.stdout.starts_with("line 1\n"), "{run:?}");

    // The container exits 1 and is restarted (OnFailure): -f ends with the old container, and
    // --previous shows what it printed last.
    kubectl.ok(&["exec", "talker", "-c", "main", "--", "touch", "/tmp/stop"]);
    let deadline = Instant::now() + T;
    loop {
        match lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line == "bye" => break,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("-f ended before 'bye'"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        assert!(Instant::now() < deadline, "no 'bye' from logs -f");
    }
    let deadline = Instant::now() + T;
    while follow.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "logs -f did not end with its container"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_pod(&kubectl, "talker", T, |p| {
        container_status(p, "main")["restartCount"].as_i64() >= Some(1)
    });
    let previous = kubectl.ok(&["logs", "talker", "-c", "main", "--previous"]);
    assert!(previous.ends_with("bye\n"), "{previous}");
}

/// Runs `kubectl <args>` inside script(1) in a terminal of `rows`×`cols`; returns what the
/// terminal showed.
fn kubectl_in_terminal(kubectl: &Kubectl, rows: u16, cols: u16, args: &str) -> String {
    let line = format!(
        "stty rows {rows} cols {cols}; {} --kubeconfig {} --cache-dir {} {args}",
        kubectl.binary.display(),
        kubectl.kubeconfig.display(),
        kubectl.cache.display()
    );
    let mut child = Killed(
        std::process::Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("KUBECONFIG")
            .spawn()
            .expect("script (bsdutils) is required"),
    );
    let mut stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + T;
    while child.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "kubectl in a terminal did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child.0.stdin.take());
    reader.join().expect("reader")
}

#[test]
fn exec_with_a_terminal_sees_the_terminal_size_and_a_tty() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: box}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox:test, command: ["sleep", "3600"]}
"#,
    );
    wait_pod(&kubectl, "box", T, |p| phase(p) == "Running");
    // kubectl sends the terminal's size on the resize channel once connected; stty in the
    // container reads it back from its own pty. (As with any runtime, a command that asks
    // within its first instant may run before the size arrives: this one waits a little.)
    let shown = kubectl_in_terminal(
        &kubectl,
        33,
        101,
        "exec -it box -- sh -c 'sleep 1; stty size; test -t 0 && echo stdin-is-a-tty; exit 7'",
    );
    assert!(shown.contains("33 101"), "{shown:?}");
    assert!(shown.contains("stdin-is-a-tty"), "{shown:?}");
    assert!(shown.contains("exit code 7"), "{shown:?}");
    let shown = kubectl_in_terminal(
        &kubectl,
        50,
        80,
        "exec -it box -- sh -c 'sleep 1; stty size'",
    );
    assert!(shown.contains("50 80"), "{shown:?}");
    // Without -t the command has no terminal.
    let run = kubectl.run(&["exec", "box", "--", "sh", "-c", "test -t 1 || echo no-tty"]);
    assert_eq!(run.stdout, "no-tty\n", "{run:?}");
}

#[test]
fn attach_reaches_the_running_process_stdin_and_stdout() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: echoer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    stdin: true
    command: ["sh", "-c", "echo ready; while read line; do echo got $line; done"]
"#,
    );
    wait_pod(&kubectl, "echoer", T, |p| phase(p) == "Running");
    let mut attach = Killed(
        kubectl
            .command(&["attach", "-i", "echoer"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl attach"),
    );
    let lines = lines_of(&mut attach);
    let mut stdin = attach.0.stdin.take().expect("stdin piped");
    // Until kubectl is connected what it is given may arrive early or late; keep saying it
    // until the answer comes.
    let deadline = Instant::now() + T;
    loop {
        stdin.write_all(b"hello\n").expect("write to kubectl");
        stdin.flush().expect("flush");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(500))
            && line == "got hello"
        {
            break;
        }
        assert!(Instant::now() < deadline, "attach never echoed");
    }
    // The process is the container's own: its output also went to the container log.
    let logs = kubectl.ok(&["logs", "echoer"]);
    assert!(logs.starts_with("ready\n"), "{logs}");
    assert!(logs.contains("got hello\n"), "{logs}");
}

#[test]
fn downward_api_and_projected_volumes_show_the_pod() {
    let (_berth, kubectl) = start();
    kubectl.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
    ]);
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: self-aware
  labels: {app: web, tier: front}
  annotations: {note: hello}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sleep", "3600"]
    resources: {limits: {memory: 64Mi}}
    volumeMounts:
    - {name: info, mountPath: /etc/info}
    - {name: all, mountPath: /etc/all}
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: note, fieldRef: {fieldPath: "metadata.annotations['note']"}}
      - {path: mem, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}
  - name: all
    projected:
      sources:
      - configMap: {name: settings, items: [{key: mode, path: mode}]}
      - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
"#,
    );
    wait_pod(&kubectl, "self-aware", T, |p| phase(p) == "Running");
    let cat = |path: &str| kubectl.ok(&["exec", "self-aware", "--", "cat", path]);
    assert_eq!(cat("/etc/info/name"), "self-aware");
    assert_eq!(cat("/etc/info/labels"), "app=\"web\"\ntier=\"front\"");
    assert_eq!(cat("/etc/info/note"), "hello");
    assert_eq!(cat("/etc/info/mem"), "64");
    assert_eq!(cat("/etc/all/mode"), "fast");
    assert_eq!(cat("/etc/all/ns"), "default");
    // Label changes reach the file (kubelet refreshes downward API volumes).
    kubectl.ok(&["label", "pod", "self-aware", "tier=back", "--overwrite"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cat("/etc/info/labels").contains("tier=\"back\"") {
        assert!(
            Instant::now() < deadline,
            "the labels file never showed the new label"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn termination_messages_come_from_the_file_or_the_log() {
    let (_berth, kubectl) = start();
    kubectl.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: last-words}
spec:
  restartPolicy: Never
  containers:
  - name: file
    image: busybox:test
    command: ["sh", "-c", "echo 'disk on fire' > /dev/termination-log; exit 2"]
  - name: custom
    image: busybox:test
    terminationMessagePath: /tmp/why
    command: ["sh", "-c", "echo -n 'custom path' > /tmp/why; exit 0"]
  - name: fallback
    image: busybox:test
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo first; echo 'the last line'; exit 3"]
"#,
    );
    let pod = wait_pod(&kubectl, "last-words", T, |p| phase(p) == "Failed");
    let message = |name: &str| {
        container_state(&pod, name)["terminated"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(message("file"), "disk on fire\n");
    assert_eq!(message("custom"), "custom path");
    assert_eq!(message("fallback"), "first\nthe last line\n");
    assert_eq!(container_state(&pod, "file")["terminated"]["exitCode"], 2);
    let described = kubectl.ok(&["describe", "pod", "last-words"]);
    assert!(described.contains("disk on fire"), "{described}");
}
