//! The server over real sockets on loopback: records set by hand (no API server), questions
//! asked over UDP and TCP as a stub resolver would, and an upstream resolver of the test's
//! own for the names that are forwarded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use berth_dns::{Config, Records, Server};
use common::{Transport, answers, ask, code, exchange, namespace, service, slice, upstream};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;
use tokio::sync::oneshot;

/// A running server: its address, its records, and how to stop it.
struct Running {
    addr: SocketAddr,
    records: Records,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), berth_dns::Error>>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("the server stops promptly");
        result.unwrap().expect("a clean stop");
    }
}

async fn start(config: Config) -> Running {
    let server = Server::bind_without_watch("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let addr = server.local_addr();
    let records = server.records();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        records,
        stop: Some(stop),
        task,
    }
}

fn fill(records: &Records) {
    records.replace(
        &[namespace("default"), namespace("db")],
        &[
            service(
                "default",
                "web",
                json!({
                    "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                }),
            ),
            service(
                "default",
                "ext",
                json!({"type": "ExternalName", "externalName": "www.example.com"}),
            ),
            service(
                "db",
                "pg",
                json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
            ),
        ],
        &[slice(
            "db",
            "pg",
            "pg-1",
            json!([
                {"addresses": ["10.244.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "hostname": "pg-1", "conditions": {"ready": true}},
            ]),
            json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        )],
    );
}

const ALL: [Transport; 3] = [Transport::Udp, Transport::UdpEdns, Transport::Tcp];

#[tokio::test]
async fn answers_cluster_names_over_udp_and_tcp() {
    let up = upstream().await;
    let server = start(Config {
        upstreams: Some(vec![up.addr]),
        ..Config::default()
    })
    .await;
    fill(&server.records);
    for how in ALL {
        let reply = ask(
            server.addr,
            "web.default.svc.cluster.local.",
            RecordType::A,
            how,
        )
        .await;
        assert_eq!(code(&reply), ResponseCode::NoError, "{how:?}");
        assert!(reply.metadata.authoritative, "{how:?}");
        assert_eq!(
            answers(&reply),
            ["web.default.svc.cluster.local. 5 IN A 10.43.0.20"],
            "{how:?}"
        );
        assert_eq!(
            reply.edns.is_some(),
            how == Transport::UdpEdns,
            "EDNS only when asked"
        );

        let reply = ask(
            server.addr,
            "_pg._tcp.pg.db.svc.cluster.local.",
            RecordType::SRV,
            how,
        )
        .await;
        assert_eq!(
            answers(&reply),
            [
                "_pg._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 50 5432 pg-0.pg.db.svc.cluster.local.",
                "_pg._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 50 5432 pg-1.pg.db.svc.cluster.local.",
            ],
            "{how:?}"
        );
        let extra: Vec<String> = reply.additionals.iter().map(ToString::to_string).collect();
        assert_eq!(
            extra,
            [
                "pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.0.5",
                "pg-1.pg.db.svc.cluster.local. 5 IN A 10.244.0.6",
            ],
            "{how:?}"
        );

        let reply = ask(
            server.addr,
            "pg-1.pg.db.svc.cluster.local.",
            RecordType::A,
            how,
        )
        .await;
        assert_eq!(
            answers(&reply),
            ["pg-1.pg.db.svc.cluster.local. 5 IN A 10.244.0.6"]
        );

        let reply = ask(
            server.addr,
            "20.0.43.10.in-addr.arpa.",
            RecordType::PTR,
            how,
        )
        .await;
        assert_eq!(
            answers(&reply),
            ["20.0.43.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."]
        );

        let reply = ask(
            server.addr,
            "10-1-2-3.db.pod.cluster.local.",
            RecordType::A,
            how,
        )
        .await;
        assert_eq!(
            answers(&reply),
            ["10-1-2-3.db.pod.cluster.local. 5 IN A 10.1.2.3"]
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let server = start(Config {
        upstreams: Some(vec![]),
        ..Config::default()
    })
    .await;
    fill(&server.records);
    for how in ALL {
        let reply = ask(
            server.addr,
            "nope.default.svc.cluster.local.",
            RecordType::A,
            how,
        )
        .await;
        assert_eq!(code(&reply), ResponseCode::NXDomain, "{how:?}");
        assert!(reply.answers.is_empty());
        assert_eq!(reply.authorities.len(), 1);
        assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(reply.authorities[0].name.to_ascii(), "cluster.local.");

        let reply = ask(
            server.addr,
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
            how,
        )
        .await;
        assert_eq!(code(&reply), ResponseCode::NoError, "{how:?}");
        assert!(reply.answers.is_empty());
        assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
    }
    server.stop().await;
}

#[tokio::test]
async fn case_is_echoed_and_ignored() {
    let server = start(Config::default()).await;
    fill(&server.records);
    let reply = ask(
        server.addr,
        "Web.DEFAULT.svc.Cluster.Local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(
        answers(&reply),
        ["Web.DEFAULT.svc.Cluster.Local. 5 IN A 10.43.0.20"]
    );
    server.stop().await;
}

#[tokio::test]
async fn other_names_are_forwarded() {
    let up = upstream().await;
    let server = start(Config {
        upstreams: Some(vec![up.addr]),
        ..Config::default()
    })
    .await;
    fill(&server.records);
    for how in ALL {
        let reply = ask(server.addr, "example.com.", RecordType::A, how).await;
        assert_eq!(code(&reply), ResponseCode::NoError, "{how:?}");
        assert!(!reply.metadata.authoritative);
        assert!(reply.metadata.recursion_available);
        assert_eq!(
            answers(&reply),
            ["example.com. 300 IN A 192.0.2.10"],
            "{how:?}"
        );

        let reply = ask(server.addr, "nowhere.example.", RecordType::A, how).await;
        assert_eq!(code(&reply), ResponseCode::NXDomain, "{how:?}");

        // Reverse names nobody in the cluster has are the upstream's too.
        let reply = ask(server.addr, "9.9.9.9.in-addr.arpa.", RecordType::PTR, how).await;
        assert_eq!(code(&reply), ResponseCode::NXDomain, "{how:?}");
    }
    assert_eq!(up.asked.load(std::sync::atomic::Ordering::SeqCst), 9);
    server.stop().await;
}

#[tokio::test]
async fn external_names_are_followed_upstream() {
    let up = upstream().await;
    let server = start(Config {
        upstreams: Some(vec![up.addr]),
        ..Config::default()
    })
    .await;
    fill(&server.records);
    for how in ALL {
        let reply = ask(
            server.addr,
            "ext.default.svc.cluster.local.",
            RecordType::A,
            how,
        )
        .await;
        assert_eq!(
            answers(&reply),
            [
                "ext.default.svc.cluster.local. 5 IN CNAME www.example.com.",
                "www.example.com. 300 IN A 192.0.2.10",
            ],
            "{how:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn no_upstream_is_servfail_but_cluster_names_still_answer() {
    // Nothing listens on this port: the forward times out.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = start(Config {
        upstreams: Some(vec![dead.local_addr().unwrap()]),
        upstream_timeout: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    fill(&server.records);
    let reply = ask(server.addr, "example.com.", RecordType::A, Transport::Udp).await;
    assert_eq!(code(&reply), ResponseCode::ServFail);
    // The CNAME of an ExternalName is ours even when its target cannot be followed.
    let reply = ask(
        server.addr,
        "ext.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(
        answers(&reply),
        ["ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]
    );
    server.stop().await;
}

#[tokio::test]
async fn never_forwards_to_itself() {
    // A resolv.conf naming the server's own address and port.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let server = Server::bind_without_watch(
        addr,
        Config {
            upstreams: Some(vec![addr, "127.0.0.53:53".parse().unwrap()]),
            ..Config::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(server.upstreams(), &["127.0.0.53:53".parse().unwrap()]);
}

#[tokio::test]
async fn changes_are_visible_at_once() {
    let server = start(Config::default()).await;
    // Before the first list, a missing name may exist: SERVFAIL, not NXDOMAIN.
    let reply = ask(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(code(&reply), ResponseCode::ServFail);

    fill(&server.records);
    let reply = ask(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(
        answers(&reply),
        ["web.default.svc.cluster.local. 5 IN A 10.43.0.20"]
    );

    // The Service gets a new address, and pg loses an endpoint.
    server.records.replace(
        &[namespace("default"), namespace("db")],
        &[
            service(
                "default",
                "web",
                json!({
                    "clusterIP": "10.43.0.99", "ports": [{"name": "http", "port": 80}],
                }),
            ),
            service("db", "pg", json!({"clusterIP": "None"})),
        ],
        &[slice(
            "db",
            "pg",
            "pg-1",
            json!([
                {"addresses": ["10.244.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "hostname": "pg-1", "conditions": {"ready": false}},
            ]),
            json!([]),
        )],
    );
    let reply = ask(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Transport::Tcp,
    )
    .await;
    assert_eq!(
        answers(&reply),
        ["web.default.svc.cluster.local. 5 IN A 10.43.0.99"]
    );
    let reply = ask(
        server.addr,
        "pg.db.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(
        answers(&reply),
        ["pg.db.svc.cluster.local. 5 IN A 10.244.0.5"]
    );
    let reply = ask(
        server.addr,
        "pg-1.pg.db.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(code(&reply), ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let server = start(Config::default()).await;
    let endpoints: Vec<serde_json::Value> = (1..=200)
        .map(|n| json!({"addresses": [format!("10.244.{}.{}", n / 250, n % 250)]}))
        .collect();
    server.records.replace(
        &[namespace("big")],
        &[service("big", "many", json!({"clusterIP": "None"}))],
        &[slice("big", "many", "many-1", json!(endpoints), json!([]))],
    );
    // 200 A records are about 3.2 KB: more than 512 bytes, more than 1232.
    for how in [Transport::Udp, Transport::UdpEdns] {
        let reply = ask(
            server.addr,
            "many.big.svc.cluster.local.",
            RecordType::A,
            how,
        )
        .await;
        assert!(reply.metadata.truncation, "{how:?}");
        assert!(reply.answers.len() < 200, "{how:?}");
    }
    let reply = ask(
        server.addr,
        "many.big.svc.cluster.local.",
        RecordType::A,
        Transport::Tcp,
    )
    .await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 200);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests() {
    let server = start(Config::default()).await;
    fill(&server.records);
    // A header and garbage: FORMERR with the same id.
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 7]);
    let reply = exchange(server.addr, &garbage, Transport::Udp).await;
    assert_eq!(&reply[..2], &[0x12, 0x34]);
    assert_eq!(reply[3] & 0x0f, 1, "FORMERR");
    // Two questions in one query: FORMERR.
    let mut two = common::query_message("web.default.svc.cluster.local.", RecordType::A, false);
    two.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("pg.db.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let reply = exchange(server.addr, &two.to_vec().unwrap(), Transport::Tcp).await;
    assert_eq!(reply[3] & 0x0f, 1, "FORMERR");
    // A zone transfer: REFUSED.
    let reply = ask(
        server.addr,
        "cluster.local.",
        RecordType::AXFR,
        Transport::Tcp,
    )
    .await;
    assert_eq!(code(&reply), ResponseCode::Refused);
    // A response sent to the server is never answered (no reflection); nor are runts.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response =
        common::query_message("web.default.svc.cluster.local.", RecordType::A, false);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    socket
        .send_to(&response.to_vec().unwrap(), server.addr)
        .await
        .unwrap();
    socket.send_to(&[1, 2, 3], server.addr).await.unwrap();
    let mut buf = [0; 512];
    let got = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
    assert!(got.is_err(), "no reply to a response or a runt");
    // And the server still answers.
    let reply = ask(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(code(&reply), ResponseCode::NoError);
    server.stop().await;
}

#[tokio::test]
async fn many_queries_on_one_tcp_connection() {
    let server = start(Config::default()).await;
    fill(&server.records);
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..20 {
        let query = common::query_message("web.default.svc.cluster.local.", RecordType::A, false);
        let bytes = query.to_vec().unwrap();
        stream
            .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let reply = hickory_proto::op::Message::from_vec(&buf).unwrap();
        assert_eq!(reply.metadata.id, query.metadata.id);
        assert_eq!(reply.answers.len(), 1);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_cluster_domain_of_its_own() {
    let server = start(Config {
        cluster_domain: "berth.internal".into(),
        upstreams: Some(vec![]),
        ..Config::default()
    })
    .await;
    fill(&server.records);
    let reply = ask(
        server.addr,
        "web.default.svc.berth.internal.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(
        answers(&reply),
        ["web.default.svc.berth.internal. 5 IN A 10.43.0.20"]
    );
    let reply = ask(
        server.addr,
        "berth.internal.",
        RecordType::SOA,
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.answers[0].record_type(), RecordType::SOA);
    // ns.dns.<domain> is where the server listens.
    let reply = ask(
        server.addr,
        "ns.dns.berth.internal.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(answers(&reply), ["ns.dns.berth.internal. 5 IN A 127.0.0.1"]);
    server.stop().await;
}
