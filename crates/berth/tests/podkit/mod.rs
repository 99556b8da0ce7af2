//! What tests of running pods share: the busybox image (Debian's static busybox with the
//! applets the tests use, packed as an OCI layout with the image fixtures' builders and
//! imported with `berth image import`), a berth with it, and readers of pod status.
#![allow(dead_code)] // Each test binary uses a different part.

#[path = "../../../berth-image/tests/common/mod.rs"]
mod fixtures;

use fixtures::E;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Berth, Kubectl};

/// The applets the tests' pods use, as symlinks to /bin/busybox.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "ls", "env", "date", "true", "false", "kill", "ps", "mkdir",
    "touch", "rm", "head", "tail", "wc", "grep", "hostname", "id", "ln", "dd", "nc", "httpd",
    "printf", "test", "trap", "ip", "wget", "nslookup", "df",
];

/// Builds the busybox image tarball once per test binary and imports it into `berth`'s store.
pub fn import_busybox(berth: &Berth) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let bin = std::fs::read("/bin/busybox")
        .or_else(|_| std::fs::read("/usr/bin/busybox"))
        .expect("busybox is required (apt-get install -y busybox-static)");
    let links: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    let mut entries = vec![
        E::Dir("bin", 0o755),
        E::File("bin/busybox", &bin, 0o755),
        E::Dir("etc", 0o755),
        E::Dir("tmp", 0o1777),
        E::Dir("root", 0o700),
    ];
    for link in &links {
        entries.push(E::Symlink(link, "busybox"));
    }
    let layer = fixtures::layer(&entries);
    let config = fixtures::config(&[&layer], &["sh"]);
    let archive = fixtures::oci_layout("busybox:test", &config, &[fixtures::gzip(&layer)], None);
    let file = fixtures::write(tmp.path(), "busybox.tar", &archive);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["image", "import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(berth.data_dir())
        .output()
        .expect("run berth image import");
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn start() -> (Berth, Kubectl) {
    let berth = Berth::start();
    import_busybox(&berth);
    let kubectl = berth.kubectl();
    (berth, kubectl)
}

pub fn pod_json(kubectl: &Kubectl, name: &str) -> Value {
    let run = kubectl.run(&["get", "pod", name, "-o", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or(Value::Null)
}

/// Polls the pod until `check` holds; panics with the last pod seen after `timeout`.
#[track_caller]
pub fn wait_pod(
    kubectl: &Kubectl,
    name: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pod_json(kubectl, name);
        if check(&pod) {
            return pod;
        }
        if Instant::now() > deadline {
            let events = kubectl.run(&["get", "events", "-o", "wide"]).stdout;
            panic!(
                "pod {name} did not reach the expected state in {timeout:?}:\n{}\nevents:\n{events}",
                serde_json::to_string_pretty(&pod["status"]).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

pub fn container_state<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .map(|c| &c["state"])
        .unwrap_or(&Value::Null)
}

pub fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

pub fn condition(pod: &Value, type_: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

pub const T: Duration = Duration::from_secs(30);

/// Whether some process on the host has `needle` in its command line.
pub fn marker_running(needle: &str) -> bool {
    host_pids(needle).next().is_some()
}

pub fn host_pids(needle: &str) -> impl Iterator<Item = u32> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle).then_some(pid)
        })
}

/// A PersistentVolumeClaim manifest (`class` None: the default class).
pub fn claim_manifest(name: &str, class: Option<&str>, mode: &str, size: &str) -> String {
    let class = class.map_or(String::new(), |c| format!("  storageClassName: {c}\n"));
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name:?}}}\nspec:\n{class}  accessModes: [{mode}]\n  resources: {{requests: {{storage: {size}}}}}\n"
    )
}

/// A busybox pod mounting `claim` at /data and running `script`, then sleeping so it stays
/// Running.
pub fn pod_on_claim(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim:?}}}
"#,
        script = format!("{script}; exec sleep 3600")
    )
}
