//! The control plane driven by kube-rs, the Rust client berth's own controllers use: paging,
//! watch resumption, 410 Gone after compaction, and durability across kill -9.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Berth;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"test": "kube"}},
        "data": {"value": value}
    }))
    .expect("configmap")
}

async fn create_many(api: &Api<ConfigMap>, prefix: &str, count: usize) {
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i:04}");
            async move {
                api.create(&PostParams::default(), &configmap(&name, "x"))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_over_a_thousand_objects_is_consistent() {
    let berth = Berth::start();
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    create_many(&api, "page", 1000).await;
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut revisions = BTreeSet::new();
    let mut pages = 0;
    loop {
        let mut params = ListParams::default().limit(100);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api.list(&params).await.expect("list page");
        pages += 1;
        revisions.insert(page.metadata.resource_version.clone().unwrap_or_default());
        names.extend(
            page.items
                .iter()
                .map(|c| c.metadata.name.clone().unwrap_or_default()),
        );
        // A write between pages must not show up in later pages.
        if pages == 3 {
            api.create(&PostParams::default(), &configmap("page-9999-late", "x"))
                .await
                .expect("late create");
        }
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    assert_eq!(pages, 10);
    assert_eq!(names.len(), 1000);
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>().len(),
        1000,
        "no duplicates across pages"
    );
    assert!(
        !names.iter().any(|n| n.ends_with("late")),
        "pages share one revision"
    );
    assert_eq!(
        revisions.len(),
        1,
        "every page is served at the first page's revision: {revisions:?}"
    );
    let selected = api
        .list(&ListParams::default().labels("test=kube").limit(7))
        .await
        .expect("selector list");
    assert_eq!(selected.items.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_without_missing_or_repeating_events() {
    let berth = Berth::start();
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    let start = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .unwrap_or_default();
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                api.create(
                    &PostParams::default(),
                    &configmap(&format!("w-{i:03}"), "x"),
                )
                .await
                .expect("create");
            }
        })
    };
    let mut seen = Vec::new();
    let mut resume_from = start;
    // Watch in short sessions, resuming each from the last resourceVersion seen.
    while seen.len() < 60 {
        let stream = api
            .watch(&WatchParams::default(), &resume_from)
            .await
            .expect("watch");
        let mut stream = stream.boxed();
        let mut taken = 0;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_secs(10), stream.next()).await
        {
            match event.expect("event") {
                WatchEvent::Added(cm) => {
                    resume_from = cm.metadata.resource_version.clone().unwrap_or_default();
                    seen.push(cm.metadata.name.clone().unwrap_or_default());
                    taken += 1;
                    // Bookmarks keep an idle watch alive, so stop once everything is seen
                    // rather than wait for a quiet spell that may never come.
                    if taken == 7 || seen.len() == 60 {
                        break;
                    }
                }
                WatchEvent::Bookmark(b) => resume_from = b.metadata.resource_version,
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    writer.await.expect("writer");
    let expected: Vec<String> = (0..60).map(|i| format!("w-{i:03}")).collect();
    assert_eq!(seen, expected, "every create exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_gets_410() {
    let berth = Berth::start_with(&["--compaction-interval-seconds", "1"]);
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    api.create(&PostParams::default(), &configmap("old", "1"))
        .await
        .expect("create");
    let old = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .unwrap_or_default();
    for i in 0..5 {
        api.create(&PostParams::default(), &configmap(&format!("new-{i}"), "1"))
            .await
            .expect("create");
    }
    // Two compaction passes: the second compacts past everything the first saw.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .expect("watch")
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event")
        .expect("not ended");
    match first.expect("event") {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410, "{e:?}");
            assert_eq!(e.reason, "Expired", "{e:?}");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // A fresh list and watch from its revision works.
    let fresh = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api
        .watch(&WatchParams::default(), &fresh)
        .await
        .expect("watch")
        .boxed();
    api.create(&PostParams::default(), &configmap("after", "1"))
        .await
        .expect("create");
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event")
        .expect("not ended");
    assert!(
        matches!(event.expect("event"), WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("after"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_kill_9() {
    let mut berth = Berth::start();
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("d-{w}-{i}");
                match api
                    .create(&PostParams::default(), &configmap(&name, "v"))
                    .await
                {
                    Ok(cm) => {
                        let rv = cm
                            .metadata
                            .resource_version
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(0);
                        acked.lock().unwrap().push((name, rv));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    berth.kill();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the burst acknowledged only {} writes",
        acked.len()
    );
    berth.launch();
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    let listed = api
        .list(&ListParams::default())
        .await
        .expect("list after restart");
    let present: BTreeSet<String> = listed
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !present.contains(*n))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    for (name, rv) in &acked {
        let cm = api.get(name).await.expect("get");
        assert_eq!(
            cm.metadata
                .resource_version
                .and_then(|r| r.parse::<i64>().ok()),
            Some(*rv),
            "{name} kept its revision"
        );
    }
    let max_acked = acked.iter().map(|(_, rv)| *rv).max().unwrap_or(0);
    let next = api
        .create(&PostParams::default(), &configmap("after-restart", "v"))
        .await
        .expect("create after restart");
    let next_rv: i64 = next
        .metadata
        .resource_version
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    assert!(
        next_rv > max_acked,
        "revision went backwards: {next_rv} <= {max_acked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_watches_see_objects_leave_and_enter() {
    let berth = Berth::start();
    let client = berth.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let other_ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    other_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "other"}}))
                .expect("ns"),
        )
        .await
        .expect("namespace");
    let elsewhere: Api<ConfigMap> = Api::namespaced(client, "other");
    let start = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api
        .watch(&WatchParams::default().labels("tier=web"), &start)
        .await
        .expect("watch")
        .boxed();

    let mut cm = configmap("c1", "1");
    cm.metadata.labels = Some([("tier".to_string(), "web".to_string())].into());
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create matching");
    api.create(&PostParams::default(), &configmap("c2", "1"))
        .await
        .expect("create non-matching");
    elsewhere
        .create(&PostParams::default(), &cm)
        .await
        .expect("create in another namespace");
    // Relabel c1 out of the selector, then c2 into it.
    let patch =
        kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"tier": "db"}}}));
    api.patch("c1", &kube::api::PatchParams::default(), &patch)
        .await
        .expect("relabel c1");
    let patch =
        kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"tier": "web"}}}));
    api.patch("c2", &kube::api::PatchParams::default(), &patch)
        .await
        .expect("relabel c2");
    api.delete("c2", &Default::default())
        .await
        .expect("delete c2");

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event")
            .expect("open");
        match event.expect("event") {
            WatchEvent::Added(c) => {
                seen.push(format!("ADDED {}", c.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Modified(c) => {
                seen.push(format!("MODIFIED {}", c.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Deleted(c) => {
                seen.push(format!("DELETED {}", c.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED c1", "DELETED c1", "ADDED c2", "DELETED c2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_one_store_seen_through_both_apis() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let berth = Berth::start();
    let client = berth.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = cms
        .create(&PostParams::default(), &configmap("watched", "1"))
        .await
        .expect("configmap");
    let uid = cm.metadata.uid.clone().unwrap_or_default();
    // Recorded the way kube-runtime's Recorder does, through events.k8s.io/v1.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let recorded: Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "watched.1", "namespace": "default"},
        "eventTime": "2026-11-27T03:00:00.000000Z",
        "regarding": {"kind": "ConfigMap", "name": "watched", "namespace": "default", "uid": uid, "apiVersion": "v1"},
        "note": "saw the configmap", "reason": "Observed", "type": "Normal", "action": "Observe",
        "reportingController": "berth.dev/test", "reportingInstance": "test-1"
    }))
    .expect("event");
    events
        .create(&PostParams::default(), &recorded)
        .await
        .expect("create events.k8s.io event");
    // The same object through core v1, found by the field selectors kubectl describe uses.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let selector = format!(
        "involvedObject.name=watched,involvedObject.uid={uid},involvedObject.namespace=default"
    );
    let found = core
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("core list");
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].message.as_deref(), Some("saw the configmap"));
    assert_eq!(
        found.items[0].reporting_component.as_deref(),
        Some("berth.dev/test")
    );
    let describe = berth.kubectl().ok(&["describe", "cm", "watched"]);
    assert!(
        describe.contains("Observed") && describe.contains("saw the configmap"),
        "{describe}"
    );
    // And a core event is readable through events.k8s.io.
    let legacy: CoreEvent = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "watched.2", "namespace": "default"},
        "involvedObject": {"kind": "ConfigMap", "name": "watched", "namespace": "default", "uid": uid},
        "message": "legacy", "reason": "Legacy", "type": "Warning", "count": 2,
        "firstTimestamp": "2026-11-27T03:00:00Z", "lastTimestamp": "2026-11-27T03:00:09Z",
        "source": {"component": "old-controller"}
    }))
    .expect("core event");
    core.create(&PostParams::default(), &legacy)
        .await
        .expect("create core event");
    let seen = events
        .get("watched.2")
        .await
        .expect("read through events.k8s.io");
    assert_eq!(seen.note.as_deref(), Some("legacy"));
    assert_eq!(seen.deprecated_count, Some(2));
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_sets_the_node_once_and_only_for_the_same_pod() {
    use k8s_openapi::api::core::v1::Pod;
    let berth = Berth::start();
    let pods: Api<Pod> = Api::namespaced(berth.client().await, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bind-me"},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod");
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let binding = |uid: &str, node: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "bind-me", "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
        })
    };
    let wrong = pods
        .create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            "bind-me",
            &PostParams::default(),
            &binding("other-uid", "n1"),
        )
        .await;
    assert!(
        matches!(wrong, Err(kube::Error::Api(ref e)) if e.code == 409),
        "{wrong:?}"
    );
    pods.create_subresource::<serde_json::Value, serde_json::Value>(
        "binding",
        "bind-me",
        &PostParams::default(),
        &binding(&uid, "n1"),
    )
    .await
    .expect("bind");
    let bound = pods.get("bind-me").await.expect("get");
    assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));
    let scheduled = bound.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        scheduled
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True"),
        "{scheduled:?}"
    );
    let again = pods
        .create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            "bind-me",
            &PostParams::default(),
            &binding(&uid, "n2"),
        )
        .await;
    assert!(
        matches!(again, Err(kube::Error::Api(ref e)) if e.code == 409 && e.message.contains("already assigned")),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_in_an_update_or_patch_is_a_precondition() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let api: Api<ConfigMap> = Api::namespaced(berth.client().await, "default");
    let created = api
        .create(&PostParams::default(), &configmap("pinned", "1"))
        .await
        .expect("create");
    let uid = created.metadata.uid.clone().expect("uid");
    let stranger = "00000000-0000-0000-0000-000000000000";
    let expect_conflict = |result: Result<ConfigMap, kube::Error>| match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(
                status.message.contains(&format!(
                    "Precondition failed: UID in precondition: {stranger}, UID in object meta: {uid}"
                )),
                "{status:?}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    };
    let patch = serde_json::json!({"metadata": {"uid": stranger, "labels": {"x": "y"}}});
    expect_conflict(
        api.patch(
            "pinned",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await,
    );
    let mut replaced = created.clone();
    replaced.metadata.uid = Some(stranger.into());
    expect_conflict(
        api.replace("pinned", &PostParams::default(), &replaced)
            .await,
    );
    // The same uid (or none) is fine, and nothing above changed the object.
    let same = serde_json::json!({"metadata": {"uid": uid, "labels": {"x": "z"}}});
    let patched = api
        .patch(
            "pinned",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&same),
        )
        .await
        .expect("patch with the right uid");
    assert_eq!(
        patched
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("x"))
            .map(String::as_str),
        Some("z")
    );
}
