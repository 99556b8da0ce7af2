//! berth on etcd (`berth up --store etcd://…`), driven by the real kubectl: the control plane
//! on a fresh etcd (resourceVersion is etcd's mod revision, keys under the prefix, watches,
//! conflicts, restarts), a 3-member etcd cluster losing one member and then quorum, and
//! `berth store export|import` moving a cluster from the embedded store to etcd and back.
//! Every etcd runs on loopback from Debian's etcd-server (`BERTH_TEST_ETCD` overrides it).

mod common;

use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd_server::EtcdCluster;
use common::{Berth, Kubectl, eventually};
use serde_json::{Value, json};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// An object moved between stores is the same object: uid, creation time, data and spec.
#[track_caller]
fn assert_moved_intact(before: &Value, after: &Value, what: impl std::fmt::Debug) {
    for field in [
        "/metadata/uid",
        "/metadata/creationTimestamp",
        "/data",
        "/spec",
    ] {
        assert_eq!(
            after.pointer(field),
            before.pointer(field),
            "{what:?} {field}"
        );
    }
}

fn object(k: &Kubectl, kind: &str, name: &str) -> Value {
    json(&k.ok(&["get", kind, name, "-o", "json"]))
}

/// `kubectl get cm -w` of the ConfigMaps labelled `watched=yes`, its events as
/// `(type, name)` on a channel; killed when dropped.
struct Watch {
    child: Child,
    events: mpsc::Receiver<(String, String)>,
}

impl Watch {
    fn start(k: &Kubectl) -> Watch {
        let mut child = k
            .command(&[
                "get",
                "cm",
                "-l",
                "watched=yes",
                "-w",
                "--watch-only",
                "-o",
                "json",
                "--output-watch-events",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for event in stream.into_iter::<Value>().map_while(Result::ok) {
                let kind = event["type"].as_str().unwrap_or("").to_string();
                let name = event["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if tx.send((kind, name)).is_err() {
                    return;
                }
            }
        });
        // kubectl has opened the watch once it has listed (nothing, with --watch-only).
        std::thread::sleep(Duration::from_millis(1500));
        Watch { child, events }
    }

    /// Waits for the event `(kind, name)`, skipping others; fails the test if the watch ends
    /// or it does not come within `timeout`.
    #[track_caller]
    fn expect(&mut self, kind: &str, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((k, n)) if k == kind && n == name => return,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the watch did not see {kind} {name} within {timeout:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait();
                    panic!("the watch ended before {kind} {name}: {status:?}")
                }
            }
        }
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the etcd store directly (as berth's backend does), for what kubectl cannot show.
fn etcd_keys(url: &str) -> Vec<berth_store::KeyValue> {
    let config: berth_store::etcd::EtcdConfig = url.parse().expect("etcd URL");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use berth_store::Store;
        // The client's prefix is the root, so berth's prefix shows in the keys.
        let root = berth_store::etcd::EtcdConfig {
            prefix: "/".into(),
            ..config
        };
        let store = berth_store::etcd::connect(&root).await.expect("connect");
        store
            .range(berth_store::RangeRequest::prefix(""))
            .await
            .expect("range")
            .kvs
    })
}

fn berth_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env("BERTH_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    command
}

/// Runs `berth ARGS` to completion within `timeout` (killing it past that); returns whether it
/// succeeded, its stderr, and how long it took.
fn run_berth(args: &[&str], timeout: Duration) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = berth_command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth");
    let status = loop {
        match child.try_wait().expect("wait for berth") {
            Some(status) => break Some(status),
            None if started.elapsed() > timeout => {
                let _ = child.kill();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let output = child.wait_with_output().expect("berth output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let elapsed = started.elapsed();
    assert!(
        status.is_some(),
        "berth {args:?} did not finish within {timeout:?}: {stderr}"
    );
    (status.is_some_and(|s| s.success()), stderr, elapsed)
}

#[track_caller]
fn berth_ok(args: &[&str]) -> String {
    let (ok, stderr, _) = run_berth(args, Duration::from_secs(60));
    assert!(ok, "berth {args:?} failed: {stderr}");
    stderr
}

#[test]
fn bad_store_urls_and_an_etcd_that_does_not_answer_fail_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("UTF-8 path");
    for (url, says) in [
        ("etcd://127.0.0.1", "expected HOST:PORT"),
        ("postgres://db:5432", "etcd:// or etcds://"),
        ("mysql", "unknown store"),
        ("etcds://127.0.0.1:2379", "ca=FILE"),
    ] {
        let (ok, stderr, _) = run_berth(
            &["up", "--data-dir", data, "--store", url],
            Duration::from_secs(30),
        );
        assert!(!ok, "{url} was accepted");
        assert!(
            stderr.contains("invalid value") && stderr.contains(says),
            "{url}: {stderr}"
        );
    }
    // A port nothing listens on: refused within the request timeout, saying so.
    let closed = common::free_port();
    let url = format!("etcd://127.0.0.1:{closed}?timeout=1s");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let (ok, stderr, took) = run_berth(
        &[
            "up",
            "--data-dir",
            data,
            "--listen",
            &listen,
            "--disable-agent",
            "--store",
            &url,
        ],
        Duration::from_secs(30),
    );
    assert!(!ok, "berth came up without its etcd");
    assert!(
        stderr.contains("cannot use the etcd store") && stderr.contains("unavailable"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn berth_on_etcd_serves_kubectl_and_keeps_objects_across_restarts() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.store_url("/test-berth/");
    let mut berth = Berth::start_with(&["--disable-agent", "--store", &url]);
    let k = berth.kubectl();

    k.ok(&[
        "create",
        "configmap",
        "plain",
        "--from-literal=greeting=hello",
    ]);
    k.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  color: blue\n");
    k.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  color: green\n");
    let applied = object(&k, "cm", "applied");
    assert_eq!(applied["data"]["color"], "green");

    // Keys under the prefix (read through a client whose own prefix is "/", so they show
    // without their first "/"); resourceVersion is etcd's mod revision of the key.
    let keys = etcd_keys(&etcd.store_url(""));
    let key = "test-berth//registry/core/configmaps/default/applied";
    let kv = keys.iter().find(|kv| kv.key == key).unwrap_or_else(|| {
        panic!(
            "no {key} in etcd: {:?}",
            keys.iter().map(|kv| &kv.key).collect::<Vec<_>>()
        )
    });
    assert_eq!(
        applied["metadata"]["resourceVersion"],
        kv.mod_revision.to_string()
    );
    assert!(
        keys.iter()
            .all(|kv| kv.key.starts_with("test-berth//registry/")),
        "a key outside the prefix"
    );
    let stored: Value = serde_json::from_slice(&kv.value).expect("stored JSON");
    assert_eq!(stored["metadata"]["uid"], applied["metadata"]["uid"]);
    assert!(
        stored["metadata"].get("resourceVersion").is_none(),
        "resourceVersion is stored: {stored}"
    );

    // A watch sees changes as they happen.
    let mut watch = Watch::start(&k);
    k.ok(&["create", "configmap", "seen", "--from-literal=a=1"]);
    k.ok(&["label", "cm", "seen", "watched=yes"]);
    watch.expect("ADDED", "seen", Duration::from_secs(20));
    k.ok(&[
        "patch",
        "cm",
        "seen",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    watch.expect("MODIFIED", "seen", Duration::from_secs(20));
    k.ok(&["delete", "cm", "seen"]);
    watch.expect("DELETED", "seen", Duration::from_secs(20));
    drop(watch);

    // An update with a stale resourceVersion is a 409 Conflict.
    k.ok(&[
        "patch",
        "cm",
        "applied",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    let mut stale = applied.clone();
    stale["data"]["color"] = "yellow".into();
    let run = k.run_stdin(&["replace", "-f", "-"], &stale.to_string());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("Conflict") || run.stderr.contains("the object has been modified"),
        "{}",
        run.stderr
    );
    k.ok(&["delete", "cm", "plain"]);
    assert!(
        k.run(&["get", "cm", "plain"]).stderr.contains("NotFound"),
        "plain is still there"
    );

    // A second berth on the same data dir is refused: the data dir stays locked on etcd too.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let data = berth.data_dir();
    let (ok, stderr, _) = run_berth(
        &[
            "up",
            "--data-dir",
            data.to_str().expect("UTF-8 path"),
            "--listen",
            &listen,
            "--disable-agent",
            "--store",
            &url,
        ],
        Duration::from_secs(30),
    );
    assert!(
        !ok && stderr.contains("in use by another berth"),
        "{stderr}"
    );

    // kill -9 and start again: everything is in etcd.
    berth.restart();
    let k = berth.kubectl();
    let again = object(&k, "cm", "applied");
    assert_eq!(again["metadata"]["uid"], applied["metadata"]["uid"]);
    assert_eq!(again["data"]["color"], "red");
    let names = k.ok(&["get", "cm", "-o", "name"]);
    assert!(!names.contains("configmap/plain"), "{names}");
    assert!(!names.contains("configmap/seen"), "{names}");
    let sc = k.ok(&["get", "storageclass", "-o", "name"]);
    assert!(sc.contains("local-path"), "{sc}");

    // Left out, `--store` would mean this data dir's embedded store, which is not where its
    // cluster lives: refused, naming the store to use.
    berth.kill();
    let (ok, stderr, _) = run_berth(
        &[
            "up",
            "--data-dir",
            data.to_str().expect("UTF-8 path"),
            "--listen",
            &listen,
            "--disable-agent",
        ],
        Duration::from_secs(30),
    );
    assert!(
        !ok && stderr.contains(&format!("start it with `--store {url}`")),
        "{stderr}"
    );

    // The same data dir on a fresh, empty etcd: a new cluster, which gets the built-in
    // StorageClasses although this data dir has installed them once already.
    let fresh = EtcdCluster::start(1);
    let position = berth
        .extra_args
        .iter()
        .position(|a| *a == url)
        .expect("the --store argument");
    berth.extra_args[position] = fresh.store_url("");
    berth.restart();
    let k = berth.kubectl();
    assert!(
        k.run(&["get", "cm", "applied"]).stderr.contains("NotFound"),
        "the old etcd's objects are served"
    );
    let sc = k.ok(&["get", "storageclass", "-o", "name"]);
    assert!(sc.contains("local-path"), "{sc}");
    berth.kill();
}

/// What the background writer saw: names whose create was acknowledged (201), and how many
/// attempts failed.
#[derive(Default)]
struct Writes {
    acknowledged: Vec<String>,
    failed: usize,
}

/// Creates ConfigMaps `ack-<n>` one after another through single requests (no client retries)
/// until `stop`, recording which were acknowledged.
fn start_writer(
    berth: &Berth,
    runtime: &tokio::runtime::Runtime,
    writes: Arc<Mutex<Writes>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let raw = runtime.block_on(berth.raw());
    runtime.spawn(async move {
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let name = format!("ack-{n}");
            n += 1;
            let body = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name}, "data": {"n": name},
            });
            let request = raw.post("/api/v1/namespaces/default/configmaps", &body);
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(30), request).await,
                Ok(Ok(reply)) if reply.status == 201
            );
            {
                let mut writes = writes.lock().expect("writes");
                if ok {
                    writes.acknowledged.push(name);
                } else {
                    writes.failed += 1;
                }
            }
            let pause = if ok { 100 } else { 200 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    })
}

fn acknowledged(writes: &Mutex<Writes>) -> usize {
    writes.lock().expect("writes").acknowledged.len()
}

#[test]
fn a_three_member_etcd_keeps_berth_serving_through_one_loss_and_it_recovers_from_two() {
    let mut etcd = EtcdCluster::start(3);
    let url = etcd.store_url("");
    let berth = Berth::start_with(&["--disable-agent", "--store", &url]);
    let k = berth.kubectl();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let writes = Arc::new(Mutex::new(Writes::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = start_writer(&berth, &runtime, writes.clone(), stop.clone());

    let mut watch = Watch::start(&k);
    k.ok(&["create", "configmap", "w-0", "--from-literal=phase=all"]);
    k.ok(&["label", "cm", "w-0", "watched=yes"]);
    watch.expect("ADDED", "w-0", Duration::from_secs(20));

    // One member down (the leader, the hardest one to lose): reads, writes and the running
    // watch carry on. kubectl rides out the election on the 503s' Retry-After.
    let first = eventually("a leader", Duration::from_secs(30), || {
        etcd.leader()
            .ok_or_else(|| "no leader reported".to_string())
    });
    etcd.kill(first);
    let before = acknowledged(&writes);
    k.ok(&[
        "create",
        "configmap",
        "w-1",
        "--from-literal=phase=one-down",
    ]);
    k.ok(&["label", "cm", "w-1", "watched=yes"]);
    watch.expect("ADDED", "w-1", Duration::from_secs(30));
    assert_eq!(object(&k, "cm", "w-0")["data"]["phase"], "all");
    k.ok(&[
        "patch",
        "cm",
        "w-1",
        "--type=merge",
        "-p",
        r#"{"data":{"more":"yes"}}"#,
    ]);
    watch.expect("MODIFIED", "w-1", Duration::from_secs(30));
    eventually(
        "writes acknowledged with one member down",
        Duration::from_secs(60),
        || {
            let now = acknowledged(&writes);
            if now >= before + 5 {
                Ok(())
            } else {
                Err(format!("{} acknowledged since the kill", now - before))
            }
        },
    );

    // Two down: no quorum. A write is answered with 503 within the request timeout (5 s),
    // not left hanging; a read is answered too (503 here, as reads need a leader).
    let second = (0..3)
        .find(|i| *i != first && etcd.running(*i))
        .expect("a live member");
    etcd.kill(second);
    let raw = runtime.block_on(berth.raw());
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "no-quorum"}});
    let started = Instant::now();
    let reply = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                raw.post("/api/v1/namespaces/default/configmaps", &body),
            )
            .await
        })
        .expect("the write was answered within 30 s")
        .expect("an HTTP answer");
    let took = started.elapsed();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        reply.json()["reason"],
        "ServiceUnavailable",
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("etcd"), "{}", reply.text());
    eprintln!("a write without quorum: {} in {took:?}", reply.status);
    assert!(took < Duration::from_secs(10), "the write took {took:?}");
    let started = Instant::now();
    let reply = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                raw.get("/api/v1/namespaces/default/configmaps/w-0"),
            )
            .await
        })
        .expect("the read was answered within 30 s")
        .expect("an HTTP answer");
    let took = started.elapsed();
    assert!(
        reply.status == 503 || reply.status == 200,
        "{} {}",
        reply.status,
        reply.text()
    );
    eprintln!("a read without quorum: {} in {took:?}", reply.status);
    assert!(took < Duration::from_secs(10), "the read took {took:?}");
    // kubectl says why, after its own retries on the 503s' Retry-After (ten of them): reads
    // fail at once too once etcd has been leaderless for a while, so they add up to seconds.
    let started = Instant::now();
    let run = k.run(&["create", "configmap", "no-quorum"]);
    let took = started.elapsed();
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("unavailable") && run.stderr.contains("etcd"),
        "{}",
        run.stderr
    );
    eprintln!(
        "kubectl create without quorum failed in {took:?}: {}",
        run.stderr.trim()
    );
    assert!(took < Duration::from_secs(20), "kubectl took {took:?}");
    let started = Instant::now();
    let run = k.run(&["get", "configmap", "w-0"]);
    let took = started.elapsed();
    eprintln!(
        "kubectl get without quorum: {} in {took:?}: {}",
        run.code,
        run.stderr.trim()
    );
    assert!(
        run.code == 0 || run.stderr.contains("unavailable"),
        "{}",
        run.stderr
    );
    assert!(took < Duration::from_secs(20), "kubectl took {took:?}");

    // One member back: quorum again, and berth recovers by itself.
    etcd.start_member(second);
    eventually(
        "a write after quorum is back",
        Duration::from_secs(90),
        || {
            let run = k.run(&["create", "configmap", "w-2", "--from-literal=phase=back"]);
            match run.code {
                0 => Ok(()),
                _ if run.stderr.contains("AlreadyExists") => Ok(()),
                _ => Err(run.stderr),
            }
        },
    );
    k.ok(&["label", "cm", "w-2", "watched=yes"]);
    watch.expect("ADDED", "w-2", Duration::from_secs(60));
    assert!(watch.still_running(), "the kubectl watch ended");
    let before = acknowledged(&writes);
    eventually("writes acknowledged again", Duration::from_secs(60), || {
        let now = acknowledged(&writes);
        if now > before + 2 {
            Ok(())
        } else {
            Err(format!("{} acknowledged since recovery", now - before))
        }
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    runtime.block_on(writer).expect("the writer task finished");
    etcd.start_member(first);
    etcd.wait_healthy(&[0, 1, 2], Duration::from_secs(60))
        .expect("all members back");

    // No acknowledged write is lost.
    let writes = writes.lock().expect("writes");
    let list = json(&k.ok(&["get", "cm", "-o", "json"]));
    let stored: std::collections::BTreeMap<String, Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|cm| {
            (
                cm["metadata"]["name"].as_str().unwrap_or("").to_string(),
                cm["data"].clone(),
            )
        })
        .collect();
    let missing: Vec<&String> = writes
        .acknowledged
        .iter()
        .filter(|name| stored.get(*name).and_then(|data| data["n"].as_str()) != Some(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?} (of {} acknowledged, {} failed)",
        writes.acknowledged.len(),
        writes.failed
    );
    assert!(writes.failed > 0, "no write failed while quorum was lost");
    for name in ["w-0", "w-1", "w-2"] {
        assert!(stored.contains_key(name), "{name} is missing");
    }
}

#[test]
fn export_and_import_move_a_cluster_to_etcd_and_back_with_uids_and_data() {
    // A cluster on the embedded store, with objects of several kinds.
    let mut berth = Berth::start_with(&["--disable-agent", "--store", "sqlite"]);
    let k = berth.kubectl();
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=color=blue",
        "--from-literal=size=L",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "--from-literal=key=s3cr3t\u{e9}",
    ]);
    k.ok(&["create", "namespace", "team"]);
    k.ok(&[
        "create",
        "configmap",
        "other",
        "-n",
        "team",
        "--from-literal=x=1",
    ]);
    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let names = [
        ("cm", "settings", "default"),
        ("secret", "token", "default"),
        ("ns", "team", ""),
        ("cm", "other", "team"),
        ("svc", "web", "default"),
    ];
    let get = |k: &Kubectl, (kind, name, ns): (&str, &str, &str)| {
        let mut args = vec!["get", kind, name, "-o", "json"];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        json(&k.ok(&args))
    };
    let originals: Vec<Value> = names.iter().map(|n| get(&k, *n)).collect();
    let data = berth.data_dir();
    let data = data.to_str().expect("UTF-8 path").to_string();
    let export = berth.dir.path().join("cluster.jsonl");
    let export = export.to_str().expect("UTF-8 path").to_string();

    // Not while berth runs on the data dir.
    let (ok, stderr, _) = run_berth(
        &["store", "export", "--data-dir", &data, "-o", &export],
        Duration::from_secs(30),
    );
    assert!(!ok && stderr.contains("berth up is running"), "{stderr}");
    berth.kill();
    berth_ok(&["store", "export", "--data-dir", &data, "-o", &export]);
    let text = std::fs::read_to_string(&export).expect("export");
    let lines: Vec<Value> = text.lines().map(json).collect();
    assert_eq!(lines[0]["format"], "berth-store-export");
    assert_eq!(lines.last().expect("trailer")["keys"], lines.len() - 2);
    assert!(
        lines.iter().any(|l| l["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("/registry/ranges/serviceips/"))),
        "the cluster IP allocation is not exported"
    );

    // Into a fresh etcd; the data dir (certificates, tokens) stays, the store moves.
    let etcd = EtcdCluster::start(1);
    let url = etcd.store_url("");
    berth_ok(&["store", "import", "--store", &url, &export]);
    let (ok, stderr, _) = run_berth(
        &["store", "import", "--store", &url, &export],
        Duration::from_secs(30),
    );
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    let position = berth
        .extra_args
        .iter()
        .position(|a| a == "sqlite")
        .expect("--store sqlite");
    berth.extra_args[position] = url.clone();
    berth.launch();
    let k = berth.kubectl();
    for (original, name) in originals.iter().zip(names) {
        assert_moved_intact(original, &get(&k, name), name);
    }
    // The cluster IP stays allocated to its Service.
    let ip = originals[4]["spec"]["clusterIP"]
        .as_str()
        .expect("cluster IP")
        .to_string();
    let taken = k.run_stdin(
        &["create", "-f", "-"],
        &json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "thief"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
        })
        .to_string(),
    );
    assert_ne!(taken.code, 0, "{taken:?}");
    assert!(
        taken.stderr.contains("already allocated"),
        "{}",
        taken.stderr
    );
    // Imported objects take the new store's revisions and update as any other.
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ]);
    k.ok(&["create", "configmap", "made-on-etcd", "--from-literal=z=26"]);
    let on_etcd: Vec<Value> = names.iter().map(|n| get(&k, *n)).collect();
    let made = object(&k, "cm", "made-on-etcd");
    berth.kill();

    // Back into the embedded store of a new data dir.
    let export_back = berth.dir.path().join("back.jsonl");
    let export_back = export_back.to_str().expect("UTF-8 path");
    berth_ok(&["store", "export", "--store", &url, "-o", export_back]);
    let mut back = Berth::unstarted(&["--disable-agent", "--store", "sqlite"]);
    let back_data = back.data_dir();
    berth_ok(&[
        "store",
        "import",
        "--data-dir",
        back_data.to_str().expect("UTF-8 path"),
        export_back,
    ]);
    back.launch();
    let k = back.kubectl();
    for (before, name) in on_etcd.iter().zip(names) {
        assert_moved_intact(before, &get(&k, name), name);
    }
    assert_eq!(object(&k, "cm", "settings")["data"]["color"], "green");
    assert_eq!(
        object(&k, "cm", "made-on-etcd")["metadata"]["uid"],
        made["metadata"]["uid"]
    );
}
