//! The runtime against the real kernel: containers from a busybox-static root file system,
//! started through the test shim binary (which dispatches `__shim` / `__exec` as `berth` does).
//! Needs root; skipped otherwise. Every test removes what it creates (containers, cgroups).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::{ContainerConfig, ContainerState, ExecRequest, Runtime};
use tokio::io::AsyncReadExt;

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

struct Fixture {
    dir: tempfile::TempDir,
    runtime: Runtime,
    rootfs: PathBuf,
    pod: String,
}

impl Fixture {
    /// A fixture for a test that needs root; `None` (the test is skipped, and says so) otherwise.
    fn as_root(name: &str) -> Option<Fixture> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: the runtime tests need root");
            return None;
        }
        Some(Fixture::new(name))
    }

    fn new(name: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("rootfs dir");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "echo", "sleep", "cat", "true", "false", "ls", "hostname", "id", "env", "head",
            "yes", "ps", "stty",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink");
        }
        let runtime = Runtime::new(
            &dir.path().join("run"),
            Path::new(env!("CARGO_BIN_EXE_berth-runtime-test-shim")),
        )
        .expect("runtime");
        let pod = format!("{name}-{}", std::process::id());
        Fixture {
            dir,
            runtime,
            rootfs,
            pod,
        }
    }

    fn config(&self, name: &str, args: &[&str]) -> ContainerConfig {
        let id = format!("{}-{name}", self.pod);
        ContainerConfig {
            log_path: self.dir.path().join("logs").join(format!("{id}.log")),
            id,
            pod_uid: self.pod.clone(),
            rootfs: self.rootfs.clone(),
            args: argv(args),
            hostname: "testhost".into(),
            log_max_bytes: 1 << 20,
            ..Default::default()
        }
    }

    /// Removes the container (checking that its shim did not outlive it) and the pod's
    /// cgroup, and checks nothing is left of either.
    fn cleanup(&self, id: &str) {
        self.remove(id);
        self.remove_pod_cgroup();
    }

    /// Removes the pod's cgroup and checks that nothing is left of it.
    fn remove_pod_cgroup(&self) {
        self.runtime
            .remove_pod_cgroup(&self.pod)
            .expect("remove pod cgroup");
        let leftover = pod_cgroup_dirs(&self.pod);
        assert!(leftover.is_empty(), "cgroups left behind: {leftover:?}");
    }

    /// Removes the container and checks that neither its bundle nor its shim is left.
    fn remove(&self, id: &str) {
        let shim = self.shim(id);
        self.runtime.remove(id).expect("remove");
        assert_eq!(self.runtime.state(id).expect("state"), ContainerState::Gone);
        assert!(!self.runtime.bundle_dir(id).exists());
        assert!(!process_alive(shim), "shim {shim:?} outlived remove()");
    }

    /// The container's shim, as pid and start time, from its bundle.
    fn shim(&self, id: &str) -> (i32, u64) {
        let path = self.runtime.bundle_dir(id).join("state.json");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).expect("state.json")).expect("json");
        let pid = state["shimPid"].as_i64().expect("shimPid");
        let start = state["shimStartTime"].as_u64().expect("shimStartTime");
        (i32::try_from(pid).expect("pid"), start)
    }

    /// Starts a container whose process runs until killed.
    async fn start_sleeper(&self, name: &str) -> ContainerConfig {
        let config = self.config(name, &["sleep", "1000"]);
        self.runtime.start(&config).await.expect("start");
        config
    }

    /// SIGKILLs the container and waits for it to be reported exited.
    async fn kill(&self, id: &str) -> ContainerState {
        self.runtime.signal(id, SIGKILL).await.expect("kill");
        wait_exited(&self.runtime, id, Duration::from_secs(10)).await
    }

    async fn exec(&self, id: &str, request: ExecRequest) -> berth_runtime::ExecProcess {
        self.runtime.exec(id, request).await.expect("exec")
    }
}

/// Whether the process (pid, start time) still runs: not gone, not reused, not a zombie.
fn process_alive((pid, start): (i32, u64)) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    fields
        .first()
        .is_some_and(|state| *state != "Z" && *state != "X")
        && fields.get(19).and_then(|t| t.parse().ok()) == Some(start)
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Cleans up after a test that failed half-way: kills and removes its containers, removes
/// the pod's cgroup. (A passing test has removed everything already.)
impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.runtime.list().unwrap_or_default() {
            if let Ok(ContainerState::Running { pid, .. }) = self.runtime.state(&id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(self.runtime.state(&id), Ok(ContainerState::Running { .. }))
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let _ = self.runtime.remove(&id);
        }
        let _ = self.runtime.remove_pod_cgroup(&self.pod);
        let _ = berth_runtime::PodNamespaces::remove(&self.dir.path().join("podns"));
    }
}

/// Every `.../berth/pods/<pod>` directory in any hierarchy.
fn pod_cgroup_dirs(pod: &str) -> Vec<PathBuf> {
    let base = std::fs::read_to_string("/proc/self/cgroup")
        .expect("cgroup")
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            c.split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| "/".into());
    let rel = format!("{}/berth/pods/{pod}", base.trim_start_matches('/'));
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup root")
        .flatten()
    {
        let dir = entry.path().join(&rel);
        if dir.exists() {
            found.push(dir);
        }
    }
    found
}

async fn wait_exited(runtime: &Runtime, id: &str, within: Duration) -> ContainerState {
    let deadline = Instant::now() + within;
    loop {
        let state = runtime.state(id).expect("state");
        if matches!(state, ContainerState::Exited { .. }) {
            return state;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {state:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .expect("log")
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let _ts = parts.next().expect("ts");
            (
                parts.next().expect("stream").to_string(),
                parts.next().expect("tag").to_string(),
                parts.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn exit_code_and_logs() {
    let Some(f) = Fixture::as_root("exit") else {
        return;
    };
    let config = f.config(
        "c",
        &["sh", "-c", "echo hi; echo err >&2; hostname; exit 7"],
    );
    let started = f.runtime.start(&config).await.expect("start");
    assert!(started.pid > 0);
    let state = wait_exited(&f.runtime, &config.id, Duration::from_secs(10)).await;
    let ContainerState::Exited {
        exit_code,
        signal,
        reason,
        started_at,
        finished_at,
        ..
    } = state
    else {
        unreachable!()
    };
    assert_eq!((exit_code, signal, reason.as_str()), (7, None, "Error"));
    assert!(finished_at >= started_at);
    let mut lines = log_lines(&config.log_path);
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("stderr".into(), "F".into(), "err".into()),
            ("stdout".into(), "F".into(), "hi".into()),
            ("stdout".into(), "F".into(), "testhost".into()),
        ]
    );
    f.cleanup(&config.id);
}

#[tokio::test]
async fn signals_and_readoption() {
    let Some(f) = Fixture::as_root("sig") else {
        return;
    };
    let config = f.config("c", &["sleep", "1000"]);
    let started = f.runtime.start(&config).await.expect("start");
    let shim = f.shim(&config.id);
    assert!(matches!(
        f.runtime.state(&config.id).expect("state"),
        ContainerState::Running { pid, .. } if pid == started.pid
    ));
    assert!(matches!(
        f.runtime.remove(&config.id),
        Err(berth_runtime::Error::StillRunning(_))
    ));

    // PID 1 without a handler ignores SIGTERM.
    f.runtime
        .signal(&config.id, SIGTERM)
        .await
        .expect("sigterm");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        f.runtime.state(&config.id).expect("state"),
        ContainerState::Running { .. }
    ));

    // A new Runtime on the same root (berth restarted) sees and controls the container.
    let again = Runtime::new(
        &f.dir.path().join("run"),
        Path::new(env!("CARGO_BIN_EXE_berth-runtime-test-shim")),
    )
    .expect("runtime");
    assert_eq!(again.list().expect("list"), vec![config.id.clone()]);
    assert!(matches!(
        again.state(&config.id).expect("state"),
        ContainerState::Running { pid, .. } if pid == started.pid
    ));
    again.signal(&config.id, SIGKILL).await.expect("sigkill");
    let state = wait_exited(&again, &config.id, Duration::from_secs(10)).await;
    assert!(
        matches!(&state, ContainerState::Exited { exit_code: 137, signal: Some(9), reason, .. } if reason == "Error"),
        "{state:?}"
    );
    // Signalling an exited container is a no-op.
    again
        .signal(&config.id, SIGKILL)
        .await
        .expect("signal after exit");
    assert!(
        !Path::new(&format!("/proc/{}", started.pid)).exists() || {
            // The pid may have been reused by an unrelated process; it must not be our sleep.
            std::fs::read_to_string(format!("/proc/{}/cmdline", started.pid))
                .map(|c| !c.starts_with("sleep"))
                .unwrap_or(true)
        }
    );
    // Exited is reported only once the shim is gone.
    assert!(!process_alive(shim));
    f.cleanup(&config.id);
    f.runtime.remove(&config.id).expect("remove is idempotent");
}

#[tokio::test]
async fn oom_killed() {
    let Some(f) = Fixture::as_root("oom") else {
        return;
    };
    let mut config = f.config("c", &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    config.memory_limit_bytes = Some(32 << 20);
    f.runtime.start(&config).await.expect("start");
    let state = wait_exited(&f.runtime, &config.id, Duration::from_secs(30)).await;
    assert!(
        matches!(&state, ContainerState::Exited { reason, exit_code: 137, .. } if reason == "OOMKilled"),
        "{state:?}"
    );
    f.cleanup(&config.id);
}

async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut out = String::new();
    r.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn exec_commands() {
    let Some(f) = Fixture::as_root("exec") else {
        return;
    };
    let mut config = f.config("c", &["sleep", "1000"]);
    config.env = vec!["GREETING=hello".into()];
    f.runtime.start(&config).await.expect("start");

    let mut p = f
        .exec(
            &config.id,
            ExecRequest {
                argv: argv(&["sh", "-c", "echo $GREETING; echo $EXTRA >&2; hostname"]),
                env_extra: vec!["EXTRA=more".into()],
                ..Default::default()
            },
        )
        .await;
    let (out, err) = (
        p.stdout.take().expect("stdout"),
        p.stderr.take().expect("stderr"),
    );
    let (out, err) = tokio::join!(read_all(out), read_all(err));
    assert_eq!(p.wait().await.expect("wait"), 0);
    assert_eq!(out, "hello\ntesthost\n");
    assert_eq!(err, "more\n");

    let mut p = f
        .exec(
            &config.id,
            ExecRequest {
                argv: argv(&["sh", "-c", "exit 3"]),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(p.wait().await.expect("wait"), 3);

    // stdin is passed through and closes.
    let mut p = f
        .exec(
            &config.id,
            ExecRequest {
                argv: argv(&["cat"]),
                stdin: true,
                ..Default::default()
            },
        )
        .await;
    let mut stdin = p.stdin.take().expect("stdin");
    stdin.write_all(b"piped input").await.expect("write");
    stdin.close().await.expect("close");
    let out = read_all(p.stdout.take().expect("stdout")).await;
    assert_eq!(p.wait().await.expect("wait"), 0);
    assert_eq!(out, "piped input");

    // A command that is not there.
    let mut p = f
        .exec(
            &config.id,
            ExecRequest {
                argv: argv(&["nonexistent-command"]),
                ..Default::default()
            },
        )
        .await;
    let err = read_all(p.stderr.take().expect("stderr")).await;
    let code = p.wait().await.expect("wait");
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("nonexistent-command"), "{err}");

    f.kill(&config.id).await;
    f.cleanup(&config.id);
}

#[tokio::test]
async fn exec_with_terminal() {
    let Some(f) = Fixture::as_root("tty") else {
        return;
    };
    let config = f.start_sleeper("c").await;
    let mut p = f
        .exec(
            &config.id,
            ExecRequest {
                argv: argv(&["sh"]),
                tty: true,
                stdin: true,
                ..Default::default()
            },
        )
        .await;
    p.resize(123, 45).await.expect("resize");
    let mut stdin = p.stdin.take().expect("stdin");
    stdin
        .write_all(b"[ -t 0 ] && echo IS-A-TTY; stty size; exit 5\n")
        .await
        .expect("write");
    let out = read_all(p.stdout.take().expect("stdout")).await;
    assert_eq!(p.wait().await.expect("wait"), 5);
    assert!(out.contains("IS-A-TTY\r\n"), "{out:?}");
    assert!(out.contains("45 123\r\n"), "{out:?}");
    drop(stdin);

    f.kill(&config.id).await;
    f.cleanup(&config.id);
}

#[tokio::test]
async fn start_errors_come_back() {
    let Some(f) = Fixture::as_root("err") else {
        return;
    };
    let config = f.config("c", &["no-such-command"]);
    let t0 = Instant::now();
    let err = f.runtime.start(&config).await.expect_err("must fail");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let text = err.to_string();
    eprintln!("start error: {text}");
    assert!(
        text.contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{text}"
    );
    assert_eq!(
        f.runtime.state(&config.id).expect("state"),
        ContainerState::Gone
    );

    // A working directory that is a file cannot be entered.
    let mut config = f.config("d", &["true"]);
    config.cwd = "/bin/busybox".into();
    let err = f.runtime.start(&config).await.expect_err("must fail");
    assert!(
        err.to_string().contains("chdir to cwd (/bin/busybox)"),
        "{err}"
    );
    assert_eq!(
        f.runtime.state(&config.id).expect("state"),
        ContainerState::Gone
    );

    // A missing one is created, as runc does.
    let mut config = f.config("e", &["sh", "-c", "pwd"]);
    config.cwd = "/work/dir".into();
    f.runtime.start(&config).await.expect("start");
    wait_exited(&f.runtime, &config.id, Duration::from_secs(10)).await;
    assert_eq!(
        log_lines(&config.log_path),
        vec![("stdout".into(), "F".into(), "/work/dir".into())]
    );
    f.cleanup(&config.id);
}

#[tokio::test]
async fn lost_shim_is_reported_and_cleaned() {
    let Some(f) = Fixture::as_root("lost") else {
        return;
    };
    let config = f.start_sleeper("c").await;
    // Seen running first, so that the runtime watches the shim it then loses.
    assert!(matches!(
        f.runtime.state(&config.id).expect("state"),
        ContainerState::Running { .. }
    ));
    let (shim, _) = f.shim(&config.id);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::SIGKILL)
        .expect("kill shim");
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = loop {
        let s = f.runtime.state(&config.id).expect("state");
        if !matches!(s, ContainerState::Running { .. }) || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        matches!(&state, ContainerState::Exited { reason, exit_code: 137, .. } if reason == "Unknown"),
        "{state:?}"
    );
    f.cleanup(&config.id);
}

#[tokio::test]
async fn stdin_fifo_and_log_rotation() {
    let Some(f) = Fixture::as_root("fifo") else {
        return;
    };
    let mut config = f.config("c", &["sh", "-c", "while read l; do echo got-$l; done"]);
    config.stdin = true;
    config.log_max_bytes = 200;
    f.runtime.start(&config).await.expect("start");
    {
        use std::io::Write;
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(f.runtime.stdin_path(&config.id))
            .expect("open stdin fifo");
        for i in 0..10 {
            writeln!(fifo, "line{i}").expect("write");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&config.log_path).unwrap_or_default();
        if text.contains("got-line9") {
            break;
        }
        assert!(Instant::now() < deadline, "log: {text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let current = std::fs::metadata(&config.log_path).expect("log").len();
    assert!(current <= 200, "{current}");
    let mut rotated = config.log_path.clone().into_os_string();
    rotated.push(".1");
    assert!(Path::new(&rotated).exists());
    f.kill(&config.id).await;
    f.cleanup(&config.id);
}

#[tokio::test]
async fn pod_ipc_and_network_namespaces_are_shared() {
    let Some(f) = Fixture::as_root("ipc") else {
        return;
    };
    let dir = f.dir.path().join("podns");
    let ns = berth_runtime::PodNamespaces::create(&dir, true).expect("ns");
    assert_eq!(berth_runtime::PodNamespaces::network_of(&dir), ns.net);
    // Creating again keeps the pinned namespaces (an adopted pod's containers are in them).
    assert_eq!(
        berth_runtime::PodNamespaces::create(&dir, true).expect("again"),
        ns
    );
    let show = ["sh", "-c", "ls -l /proc/self/ns/ipc /proc/self/ns/net"];
    let mut a = f.config("a", &show);
    a.ipc_namespace = Some(ns.ipc.clone());
    a.net_namespace = ns.net.clone();
    let mut b = f.config("b", &show);
    b.ipc_namespace = Some(ns.ipc.clone());
    b.net_namespace = ns.net.clone();
    f.runtime.start(&a).await.expect("start a");
    f.runtime.start(&b).await.expect("start b");
    wait_exited(&f.runtime, &a.id, Duration::from_secs(10)).await;
    wait_exited(&f.runtime, &b.id, Duration::from_secs(10)).await;
    let ns_of = |c: &ContainerConfig, kind: &str| {
        let text = std::fs::read_to_string(&c.log_path).expect("log");
        text.split(&format!("{kind}:["))
            .nth(1)
            .expect("ns id")
            .split(']')
            .next()
            .expect("id")
            .to_string()
    };
    for kind in ["ipc", "net"] {
        assert_eq!(ns_of(&a, kind), ns_of(&b, kind), "{kind}");
        let own = std::fs::read_link(format!("/proc/self/ns/{kind}")).expect("own ns");
        assert_ne!(
            format!("{kind}:[{}]", ns_of(&a, kind)),
            own.to_string_lossy()
        );
    }
    f.remove(&a.id);
    f.cleanup(&b.id);
    berth_runtime::PodNamespaces::remove(&dir).expect("remove ns");
    berth_runtime::PodNamespaces::remove(&dir).expect("idempotent");
    assert_eq!(berth_runtime::PodNamespaces::network_of(&dir), None);
}

#[tokio::test]
async fn start_latency() {
    let Some(f) = Fixture::as_root("lat") else {
        return;
    };
    let mut samples = Vec::new();
    for i in 0..20 {
        let t0 = Instant::now();
        let config = f.start_sleeper(&format!("c{i}")).await;
        samples.push(t0.elapsed());
        f.kill(&config.id).await;
        f.remove(&config.id);
    }
    samples.sort();
    eprintln!(
        "start latency over {} runs: min {:?} p50 {:?} p90 {:?} max {:?}",
        samples.len(),
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1]
    );
    f.remove_pod_cgroup();
}

#[tokio::test]
async fn terminal_container_and_mounts() {
    let Some(f) = Fixture::as_root("mnt") else {
        return;
    };
    let host = f.dir.path().join("host-data");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("file"), "from-host").expect("host file");
    let mut config = f.config(
        "c",
        &[
            "sh",
            "-c",
            "[ -t 1 ] && echo tty-yes; cat /data/file; echo; \
             touch /data/x 2>/dev/null || echo data-ro; \
             touch /scratch/x && echo scratch-rw; \
             touch /x 2>/dev/null || echo root-ro",
        ],
    );
    config.tty = true;
    config.readonly_rootfs = true;
    config.mounts = vec![
        berth_runtime::Mount {
            destination: "/data".into(),
            kind: berth_runtime::MountKind::Bind {
                source: host.clone(),
                readonly: true,
            },
        },
        berth_runtime::Mount {
            destination: "/scratch".into(),
            kind: berth_runtime::MountKind::Tmpfs {
                size_bytes: Some(1 << 20),
                mode: None,
            },
        },
    ];
    f.runtime.start(&config).await.expect("start");
    let state = wait_exited(&f.runtime, &config.id, Duration::from_secs(10)).await;
    assert!(
        matches!(state, ContainerState::Exited { exit_code: 0, .. }),
        "{state:?}"
    );
    let lines: Vec<String> = log_lines(&config.log_path)
        .into_iter()
        .map(|(stream, _, text)| format!("{stream} {text}"))
        .collect();
    assert_eq!(
        lines,
        [
            "stdout tty-yes",
            "stdout from-host",
            "stdout data-ro",
            "stdout scratch-rw",
            "stdout root-ro"
        ]
    );
    assert!(!host.join("x").exists());
    f.cleanup(&config.id);
}

/// `berth down`'s sequence: SIGKILL, wait until the container no longer runs, remove. No shim
/// may outlive its bundle.
#[tokio::test]
async fn removed_after_stop_leaves_no_shim() {
    let Some(f) = Fixture::as_root("down") else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(f.start_sleeper(&format!("c{i}")).await.id);
    }
    for id in &ids {
        f.runtime.signal(id, SIGKILL).await.expect("kill");
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(f.runtime.state(id), Ok(ContainerState::Running { .. })) {
            assert!(Instant::now() < deadline, "{id} still runs");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        f.remove(id);
    }
    f.remove_pod_cgroup();
}

/// A shim that hangs while starting its container (here opening a log that is a FIFO nobody
/// reads) leaves the container `Created`; remove() kills the shim with the bundle, and the
/// start fails.
#[tokio::test]
async fn remove_kills_a_shim_still_starting() {
    let Some(f) = Fixture::as_root("hung") else {
        return;
    };
    let config = f.config("c", &["true"]);
    let logs = config.log_path.parent().expect("log dir");
    std::fs::create_dir_all(logs).expect("log dir");
    nix::unistd::mkfifo(&config.log_path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let start = tokio::spawn({
        let (runtime, config) = (f.runtime.clone(), config.clone());
        async move { runtime.start(&config).await }
    });
    let state_file = f.runtime.bundle_dir(&config.id).join("state.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state_file.exists() {
        assert!(Instant::now() < deadline, "the shim did not record itself");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(process_alive(f.shim(&config.id)));
    assert_eq!(
        f.runtime.state(&config.id).expect("state"),
        ContainerState::Created
    );
    f.remove(&config.id);
    let err = start.await.expect("join").expect_err("start must fail");
    assert!(matches!(err, berth_runtime::Error::Start { .. }), "{err}");
    assert_eq!(
        f.runtime.state(&config.id).expect("state"),
        ContainerState::Gone
    );
    f.remove_pod_cgroup();
}

#[tokio::test]
async fn a_bundle_whose_shim_died_before_starting_is_abandoned() {
    let Some(f) = Fixture::as_root("abandoned") else {
        return;
    };
    // What an agent killed between creating the bundle and the shim recording itself leaves.
    let id = "abandoned-0";
    std::fs::create_dir_all(f.runtime.bundle_dir(id)).expect("bundle");
    assert_eq!(
        f.runtime.state(id).expect("state"),
        ContainerState::Abandoned
    );
    // And one whose shim recorded itself and died before the container's init.
    std::fs::write(
        f.runtime.bundle_dir(id).join("state.json"),
        r#"{"shimPid": 999999, "shimStartTime": 1, "init": null}"#,
    )
    .expect("state.json");
    assert_eq!(
        f.runtime.state(id).expect("state"),
        ContainerState::Abandoned
    );
    f.runtime.remove(id).expect("remove");
    assert_eq!(f.runtime.state(id).expect("state"), ContainerState::Gone);
}
