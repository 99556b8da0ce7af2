//! What the server tests share: a DNS client over UDP and TCP made of hickory-proto messages,
//! an upstream resolver to forward to, and Kubernetes objects as the API serves them.
#![allow(dead_code)] // Each test binary uses a different part.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How a test asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// UDP with an EDNS record offering a 1232-byte buffer.
    UdpEdns,
    Tcp,
}

pub fn query_message(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        message.set_edns(e);
    }
    message
}

/// Asks `server` one question and returns the decoded response (checked to answer it).
pub async fn ask(server: SocketAddr, name: &str, qtype: RecordType, how: Transport) -> Message {
    let query = query_message(name, qtype, how == Transport::UdpEdns);
    let bytes = exchange(server, &query.to_vec().unwrap(), how).await;
    let reply = Message::from_vec(&bytes).expect("a decodable response");
    assert_eq!(reply.metadata.id, query.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.queries, query.queries, "the question is echoed");
    reply
}

/// Sends raw bytes and returns the raw response.
pub async fn exchange(server: SocketAddr, bytes: &[u8], how: Transport) -> Vec<u8> {
    tokio::time::timeout(TIMEOUT, async {
        match how {
            Transport::Udp | Transport::UdpEdns => {
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                socket.connect(server).await.unwrap();
                socket.send(bytes).await.unwrap();
                let mut buf = vec![0; 65535];
                let n = socket.recv(&mut buf).await.unwrap();
                buf.truncate(n);
                buf
            }
            Transport::Tcp => {
                let mut stream = TcpStream::connect(server).await.unwrap();
                let len = u16::try_from(bytes.len()).unwrap();
                stream.write_all(&len.to_be_bytes()).await.unwrap();
                stream.write_all(bytes).await.unwrap();
                let len = stream.read_u16().await.unwrap();
                let mut buf = vec![0; usize::from(len)];
                stream.read_exact(&mut buf).await.unwrap();
                buf
            }
        }
    })
    .await
    .expect("the server answers in time")
}

/// The answer section as `name ttl IN TYPE data` lines.
pub fn answers(message: &Message) -> Vec<String> {
    message.answers.iter().map(Record::to_string).collect()
}

pub fn code(message: &Message) -> ResponseCode {
    message.metadata.response_code
}

/// An upstream resolver on loopback (UDP and TCP on one port) that knows `example.com` and
/// `www.example.com` (A 192.0.2.10) and answers NXDOMAIN for everything else. It counts the
/// questions it gets.
pub struct Upstream {
    pub addr: SocketAddr,
    pub asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub async fn upstream() -> Upstream {
    // A free UDP port need not be free for TCP: try again with another until both bind.
    let mut attempts = 0;
    let (udp, tcp, addr) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        match TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, tcp, addr),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 50 => attempts += 1,
            Err(e) => panic!("binding the upstream's TCP port {addr}: {e}"),
        }
    };
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0; 65535];
        loop {
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let reply = upstream_reply(&buf[..n]);
            udp.send_to(&reply, from).await.unwrap();
        }
    });
    let counter = asked.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let len = stream.read_u16().await.unwrap();
                let mut buf = vec![0; usize::from(len)];
                stream.read_exact(&mut buf).await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = upstream_reply(&buf);
                let len = u16::try_from(reply.len()).unwrap();
                stream.write_all(&len.to_be_bytes()).await.unwrap();
                stream.write_all(&reply).await.unwrap();
            });
        }
    });
    Upstream { addr, asked }
}

fn upstream_reply(request: &[u8]) -> Vec<u8> {
    let request = Message::from_vec(request).unwrap();
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(request.queries.clone());
    let query = &request.queries[0];
    let name = query.name().to_lowercase().to_ascii();
    if name == "example.com." || name == "www.example.com." {
        if query.query_type() == RecordType::A {
            reply.add_answer(Record::from_rdata(
                query.name().clone(),
                300,
                RData::A(A::new(192, 0, 2, 10)),
            ));
        }
    } else {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().unwrap()
}

pub fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

pub fn service(namespace: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .unwrap()
}

pub fn slice(
    namespace: &str,
    service: &str,
    name: &str,
    endpoints: Value,
    ports: Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}
