//! The server fed through kube-rs: a small fake API server on loopback (plain HTTP, list and
//! watch of Namespaces, Services and EndpointSlices, nothing else) stands in for berth's, the
//! DNS server watches it as `berth up` will have it watch the real one, and the test changes
//! objects there and asks over UDP, as a pod would.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_dns::{Config, Server};
use bytes::Bytes;
use common::{Transport, answers, ask, code};
use futures::StreamExt;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A change is answered within a second (the brief's promise).
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// The three collections the DNS server watches: (path, kind, apiVersion).
const RESOURCES: [(&str, &str, &str); 3] = [
    ("/api/v1/namespaces", "Namespace", "v1"),
    ("/api/v1/services", "Service", "v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
];

/// The fake API's state: objects by collection path and `namespace/name`, one revision
/// counter, and a log of every event for watches that resume from a revision.
#[derive(Default)]
struct State {
    revision: u64,
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    log: Vec<(u64, &'static str, Value)>,
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<(u64, &'static str, Value)>,
}

impl FakeApi {
    fn new() -> FakeApi {
        FakeApi {
            state: Arc::default(),
            events: broadcast::channel(1024).0,
        }
    }

    /// Creates or replaces an object (ADDED or MODIFIED).
    fn put(&self, mut object: Value) {
        let (path, kind, api_version) = resource_of(&object);
        let mut state = self.state.lock().unwrap();
        state.revision += 1;
        let revision = state.revision;
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        let key = key_of(&object);
        let existed = state
            .objects
            .entry(path)
            .or_default()
            .insert(key, object.clone())
            .is_some();
        let event = json!({"type": if existed { "MODIFIED" } else { "ADDED" }, "object": object});
        state.log.push((revision, path, event.clone()));
        let _ = self.events.send((revision, path, event));
    }

    /// Deletes an object (DELETED).
    fn delete(&self, object: Value) {
        let (path, _, _) = resource_of(&object);
        let mut state = self.state.lock().unwrap();
        state.revision += 1;
        let revision = state.revision;
        let Some(mut gone) = state
            .objects
            .entry(path)
            .or_default()
            .remove(&key_of(&object))
        else {
            return;
        };
        gone["metadata"]["resourceVersion"] = json!(revision.to_string());
        let event = json!({"type": "DELETED", "object": gone});
        state.log.push((revision, path, event.clone()));
        let _ = self.events.send((revision, path, event));
    }

    async fn serve(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let api = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(&r)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn handle(&self, request: &Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or_default();
        let Some((path, kind, api_version)) = RESOURCES.iter().find(|r| r.0 == path).copied()
        else {
            return json_response(404, &json!({"kind": "Status", "code": 404}));
        };
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(str::to_string)
        };
        if param("watch").is_some_and(|w| w == "true" || w == "1") {
            let from: u64 = param("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // Subscribe before reading the log, so nothing falls between the two.
            let live = self.events.subscribe();
            let replay: Vec<(u64, Value)> = self
                .state
                .lock()
                .unwrap()
                .log
                .iter()
                .filter(|(rev, p, _)| *rev > from && *p == path)
                .map(|(rev, _, e)| (*rev, e.clone()))
                .collect();
            let last = replay.last().map_or(from, |(rev, _)| *rev);
            let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(
                move |event| async move {
                    match event {
                        Ok((rev, p, e)) if rev > last && p == path => Some(e),
                        _ => None,
                    }
                },
            );
            let events = futures::stream::iter(replay.into_iter().map(|(_, e)| e))
                .chain(live)
                .map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{e}\n")))));
            return Response::builder()
                .header("content-type", "application/json")
                .body(BoxBody::new(StreamBody::new(events)))
                .unwrap();
        }
        let state = self.state.lock().unwrap();
        let items: Vec<Value> = state
            .objects
            .get(path)
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default();
        json_response(
            200,
            &json!({
                "kind": format!("{kind}List"),
                "apiVersion": api_version,
                "metadata": {"resourceVersion": state.revision.to_string()},
                "items": items,
            }),
        )
    }
}

fn json_response(status: u16, body: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn resource_of(object: &Value) -> (&'static str, &'static str, &'static str) {
    let kind = object["kind"].as_str().expect("objects name their kind");
    RESOURCES
        .iter()
        .find(|r| r.1 == kind)
        .copied()
        .expect("a watched kind")
}

fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap()
    )
}

/// Asks until `done` holds for the reply, and returns how long that took.
async fn until(
    dns: SocketAddr,
    name: &str,
    qtype: RecordType,
    done: impl Fn(&Message) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let reply = ask(dns, name, qtype, Transport::Udp).await;
        if done(&reply) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} {qtype}: still {:?} {:?}",
            code(&reply),
            answers(&reply)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn service(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
        "spec": spec,
    })
}

fn slice(namespace: &str, service: &str, name: &str, endpoints: Value) -> Value {
    json!({
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_the_api() {
    let api = FakeApi::new();
    for ns in ["default", "kube-system"] {
        api.put(json!({"kind": "Namespace", "metadata": {"name": ns}}));
    }
    api.put(service(
        "default",
        "kubernetes",
        json!({"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443}]}),
    ));
    let url = format!("http://{}", api.clone().serve().await);
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();

    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        client,
        Config {
            upstreams: Some(vec![]),
            ..Config::default()
        },
    )
    .await
    .unwrap();
    let dns = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    // What the API had before the server started.
    until(
        dns,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        |r| answers(r) == ["kubernetes.default.svc.cluster.local. 5 IN A 10.43.0.1"],
    )
    .await;

    // A new Service.
    api.put(service(
        "default",
        "web",
        json!({"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80}]}),
    ));
    let took = until(dns, "web.default.svc.cluster.local.", RecordType::A, |r| {
        answers(r) == ["web.default.svc.cluster.local. 5 IN A 10.43.0.20"]
    })
    .await;
    eprintln!("a new Service answered after {took:?}");
    assert!(took < VISIBLE_WITHIN, "a new Service took {took:?}");

    // A headless Service and its EndpointSlice, one endpoint not ready.
    api.put(service("default", "db", json!({"clusterIP": "None"})));
    let endpoints = |second_ready: bool| {
        json!([
            {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.0.6"], "hostname": "db-1", "conditions": {"ready": second_ready}},
        ])
    };
    api.put(slice("default", "db", "db-abcde", endpoints(false)));
    let took = until(dns, "db.default.svc.cluster.local.", RecordType::A, |r| {
        answers(r) == ["db.default.svc.cluster.local. 5 IN A 10.244.0.5"]
    })
    .await;
    eprintln!("a new EndpointSlice answered after {took:?}");
    assert!(took < VISIBLE_WITHIN, "a new EndpointSlice took {took:?}");

    // The second endpoint becomes ready.
    api.put(slice("default", "db", "db-abcde", endpoints(true)));
    let took = until(
        dns,
        "db-1.db.default.svc.cluster.local.",
        RecordType::A,
        |r| answers(r) == ["db-1.db.default.svc.cluster.local. 5 IN A 10.244.0.6"],
    )
    .await;
    assert!(took < VISIBLE_WITHIN, "a ready endpoint took {took:?}");
    let reply = ask(
        dns,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        Transport::Tcp,
    )
    .await;
    assert_eq!(reply.answers.len(), 2);

    // Deleting the Service removes its name.
    api.delete(service("default", "web", json!({})));
    let took = until(dns, "web.default.svc.cluster.local.", RecordType::A, |r| {
        code(r) == ResponseCode::NXDomain
    })
    .await;
    assert!(took < VISIBLE_WITHIN, "a deleted Service took {took:?}");

    // A namespace that exists without Services is NODATA; one that does not, NXDOMAIN; a
    // namespace created later exists from then on.
    let reply = ask(
        dns,
        "kube-system.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(code(&reply), ResponseCode::NoError);
    let reply = ask(
        dns,
        "later.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(code(&reply), ResponseCode::NXDomain);
    api.put(json!({"kind": "Namespace", "metadata": {"name": "later"}}));
    until(
        dns,
        "10-1-2-3.later.pod.cluster.local.",
        RecordType::A,
        |r| answers(r) == ["10-1-2-3.later.pod.cluster.local. 5 IN A 10.1.2.3"],
    )
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the server stops promptly")
        .unwrap()
        .unwrap();
}
