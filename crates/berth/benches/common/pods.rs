//! What the benches that run pods share: cleaning up after the node agent (its shims, the
//! processes of its pods' cgroups, its overlay mounts), a client and a Ready node, and the
//! floor every pod start is compared with — the same process started bare by `unshare`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

use super::{Latencies, kill_pid};

/// What an early exit does before it removes the root, once berth is killed: kills what berth
/// left and detaches the pods' mounts.
pub fn clear_root(root: &Path) {
    let killed = kill_leftovers(root);
    if killed > 0 {
        eprintln!("bench: killed {killed} leftover processes");
    }
    std::thread::sleep(Duration::from_millis(200));
    detach_mounts(root);
}

/// The processes this bench's berth left: shims (their command line names a bundle under
/// `root`) and everything in the cgroups of the pods recorded under `root`.
pub fn leftovers(root: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let root_text = root.to_string_lossy().into_owned();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&root_text) {
                pids.push(pid);
            }
        }
    }
    let records = root.join("data/run/pods");
    for entry in std::fs::read_dir(records).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(cgroup) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["cgroup"].as_str().map(str::to_string))
        else {
            continue;
        };
        let cgroup = cgroup.trim_start_matches('/').to_string();
        for hierarchy in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            collect_cgroup_procs(&Path::new(hierarchy).join(&cgroup), &mut pids);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|p| *p != std::process::id() as i32);
    pids
}

pub fn collect_cgroup_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_cgroup_procs(&entry.path(), pids);
        }
    }
}

/// Kills what [`leftovers`] finds; returns how many.
pub fn kill_leftovers(root: &Path) -> usize {
    let pids = leftovers(root);
    for pid in &pids {
        kill_pid(*pid);
    }
    pids.len()
}

/// Lazily unmounts everything mounted below `root` (the pods' overlays), deepest first.
pub fn detach_mounts(root: &Path) {
    let root_text = root.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&root_text))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
    }
}

pub async fn client(data_dir: &Path) -> anyhow::Result<kube::Client> {
    let config = super::kube_config(data_dir).await?;
    kube::Client::try_from(config).context("kube client")
}

pub async fn wait_node_ready(client: &kube::Client) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in nodes.list(&ListParams::default()).await?.items {
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                return Ok(node.metadata.name.unwrap_or_default());
            }
        }
        if Instant::now() > deadline {
            bail!("no Ready node after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The floor: the same process, bare, in its own namespaces.

/// `unshare --fork --pid --mount --uts --ipc --mount-proc /bin/busybox echo up`, `runs` times:
/// spawn → the first byte on its stdout pipe, and spawn → exit (reaped).
pub fn floor(runs: usize) -> anyhow::Result<(Latencies, Latencies)> {
    let busybox = if Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "/usr/bin/busybox"
    };
    let mut running = Vec::with_capacity(runs);
    let mut exited = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut child = Command::new("unshare")
            .args([
                "--fork",
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                "--mount-proc",
                busybox,
                "echo",
                "up",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn unshare")?;
        let mut stdout = child.stdout.take().context("unshare's stdout")?;
        let mut byte = [0u8; 1];
        let n = stdout.read(&mut byte).context("read unshare's stdout")?;
        let t1 = Instant::now();
        let status = child.wait().context("wait for unshare")?;
        let t2 = Instant::now();
        if n == 0 || !status.success() {
            bail!("unshare failed ({status}); it needs root");
        }
        running.push(t1 - t0);
        exited.push(t2 - t0);
    }
    Ok((Latencies::new(running), Latencies::new(exited)))
}
