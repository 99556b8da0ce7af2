//! Port-forward in its three shapes:
//!
//! - WebSocket `SPDY/3.1+portforward.k8s.io` (kubectl 1.31+): a SPDY/3.1 byte stream inside
//!   binary messages, served by [`berth_streaming::portforward::Server`];
//! - `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io` (older kubectl,
//!   or `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`): the same SPDY stream on the raw connection;
//! - WebSocket `v4.channel.k8s.io` with `?ports=` (kube-rs): port i on channels 2i (data) and
//!   2i+1 (errors), each opened by the port number; one connection per port, made at once.
//!
//! In every shape each forwarded connection is one [`forward`] task that dials the pod through
//! [`PodStreams::dial`] and copies both ways; the session loop owns the socket and the codec.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_streaming::channel::{self, Endpoint, Protocol};
use berth_streaming::portforward::{Event, MAX_DATA_CHUNK, Server};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::query::Query;
use super::ws::{self, Socket};
use super::{Body, PodStreams, State, bad_request};

/// The `X-Stream-Protocol-Version` of SPDY port-forward.
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// `GET|POST /portForward/{ns}/{pod}`.
pub(super) fn port_forward(
    state: &State,
    mut request: Request<Incoming>,
    namespace: &str,
    pod: &str,
    query: &Query,
) -> Response<Body> {
    let target = Target {
        streams: state.streams.clone(),
        namespace: namespace.to_string(),
        pod: pod.to_string(),
    };
    if ws::is_websocket(&request) {
        let Some(protocol) = ws::protocol(&request, Endpoint::PortForward) else {
            return bad_request(
                "unable to upgrade: none of the offered WebSocket subprotocols is supported (SPDY/3.1+portforward.k8s.io, v4.channel.k8s.io)",
            );
        };
        let ports = if protocol == Protocol::V4Channel {
            match ports(query) {
                Ok(ports) => ports,
                Err(message) => return bad_request(&message),
            }
        } else {
            Vec::new()
        };
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Some(socket) = ws::socket(upgrade).await else {
                return;
            };
            if protocol == Protocol::V4Channel {
                channel_session(socket, target, ports).await;
            } else {
                spdy_session(Transport::WebSocket(Box::new(socket)), target).await;
            }
        });
        return ws::accept(&request, protocol);
    }
    if ws::is_spdy(&request) && ws::offers_stream_protocol(&request, PORT_FORWARD_PROTOCOL) {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Some(io) = ws::upgraded(upgrade).await {
                spdy_session(Transport::Raw(io), target).await;
            }
        });
        return ws::accept_spdy(PORT_FORWARD_PROTOCOL);
    }
    bad_request("Upgrade request required: port-forward needs a WebSocket or SPDY/3.1 upgrade")
}

/// The `ports` query parameter: repeated or comma-separated, each 1..=65535.
fn ports(query: &Query) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = query
        .all("ports")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {p:?}"))
        })
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    if channel::port_forward_channels(ports.len() - 1).is_none() {
        return Err("too many ports".into());
    }
    Ok(ports)
}

/// The pod connections are made to.
#[derive(Clone)]
struct Target {
    streams: Arc<dyn PodStreams>,
    namespace: String,
    pod: String,
}

/// The bytes under a SPDY session: WebSocket binary messages, or the raw upgraded connection.
enum Transport {
    WebSocket(Box<Socket>),
    Raw(TokioIo<Upgraded>),
}

impl Transport {
    /// The next bytes from the client; `None` when the connection ended. Cancel-safe.
    async fn recv(&mut self, buf: &mut [u8]) -> Option<Bytes> {
        match self {
            Transport::WebSocket(socket) => loop {
                match socket.next().await {
                    Some(Ok(Message::Binary(bytes))) => return Some(bytes),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            },
            Transport::Raw(io) => match io.read(buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
            },
        }
    }

    async fn send(&mut self, bytes: Bytes) -> bool {
        match self {
            Transport::WebSocket(socket) => socket.send(Message::binary(bytes)).await.is_ok(),
            Transport::Raw(io) => io.write_all(&bytes).await.is_ok() && io.flush().await.is_ok(),
        }
    }
}

/// What a connection's task reports.
enum FromPod {
    /// Bytes the pod sent.
    Data(String, Bytes),
    /// The pod's side ended, with the error text for the client if it failed.
    Closed(String, Option<String>),
}

/// One forwarded connection, as the session loop sees it.
struct Connection {
    /// Bytes for the pod; `None` half-closes the connection towards it.
    to_pod: mpsc::UnboundedSender<Option<Bytes>>,
    task: JoinHandle<()>,
}

impl Connection {
    fn open(target: &Target, port: u16, id: String, from_pod: mpsc::Sender<FromPod>) -> Self {
        let (to_pod, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(forward(target.clone(), port, id, rx, from_pod));
        Connection { to_pod, task }
    }
}

/// Dials `port` in the pod and copies both ways until both are done.
async fn forward(
    target: Target,
    port: u16,
    id: String,
    mut to_pod: mpsc::UnboundedReceiver<Option<Bytes>>,
    from_pod: mpsc::Sender<FromPod>,
) {
    // The kubelet's wording, which kubectl prints.
    let failed = |e: &dyn std::fmt::Display| {
        format!("error forwarding port {port} to pod {}: {e}", target.pod)
    };
    let stream = match target
        .streams
        .dial(&target.namespace, &target.pod, port)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            let _ = from_pod.send(FromPod::Closed(id, Some(failed(&e)))).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let upstream = async move {
        while let Some(Some(bytes)) = to_pod.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        let error = loop {
            match reader.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    let data = FromPod::Data(id.clone(), Bytes::copy_from_slice(&buf[..n]));
                    if from_pod.send(data).await.is_err() {
                        return;
                    }
                }
                Err(e) => break Some(failed(&e)),
            }
        };
        let _ = from_pod.send(FromPod::Closed(id.clone(), error)).await;
    };
    tokio::join!(upstream, downstream);
}

/// Serves one SPDY port-forward session until the client goes away.
async fn spdy_session(mut transport: Transport, target: Target) {
    let mut server = Server::new();
    let (from_pod_tx, mut from_pod) = mpsc::channel::<FromPod>(64);
    let mut connections: HashMap<String, Connection> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let result = tokio::select! {
            incoming = transport.recv(&mut buf) => {
                let Some(bytes) = incoming else { break };
                server.receive(&bytes).map(|events| {
                    for event in events {
                        match event {
                            Event::Open { request_id, port } => {
                                let connection = Connection::open(
                                    &target,
                                    port,
                                    request_id.clone(),
                                    from_pod_tx.clone(),
                                );
                                if let Some(old) = connections.insert(request_id, connection) {
                                    old.task.abort();
                                }
                            }
                            Event::Data { request_id, bytes } => {
                                if let Some(c) = connections.get(&request_id) {
                                    let _ = c.to_pod.send(Some(bytes));
                                }
                            }
                            Event::Closed { request_id } => {
                                if let Some(c) = connections.get(&request_id) {
                                    let _ = c.to_pod.send(None);
                                }
                            }
                            Event::Reset { request_id } => {
                                if let Some(c) = connections.remove(&request_id) {
                                    c.task.abort();
                                }
                            }
                            Event::GoAway => {}
                        }
                    }
                })
            }
            // This loop holds a sender, so the channel never ends.
            Some(message) = from_pod.recv() => match message {
                FromPod::Data(id, bytes) => server.send_data(&id, bytes),
                FromPod::Closed(id, error) => server.close(&id, error.as_deref()),
            },
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "port-forward SPDY session failed");
            break;
        }
        let output = server.take_output();
        if !output.is_empty() && !transport.send(output).await {
            break;
        }
    }
    for connection in connections.values() {
        connection.task.abort();
    }
}

/// How long to wait for the client's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Serves kube-rs's WebSocket port-forward: one connection per requested port, the port at
/// index i on channels 2i (data) and 2i+1 (errors); the connection's id is its index.
async fn channel_session(mut socket: Socket, target: Target, ports: Vec<u16>) {
    let (from_pod_tx, mut from_pod) = mpsc::channel::<FromPod>(64);
    let mut connections = Vec::with_capacity(ports.len());
    for (index, port) in ports.iter().enumerate() {
        // `ports` checked that every index has its channels.
        let Some((data, error)) = channel::port_forward_channels(index) else {
            return;
        };
        for ch in [data, error] {
            let prefix = channel::port_prefix(ch, *port);
            if socket.send(Message::binary(prefix.to_vec())).await.is_err() {
                return;
            }
        }
        connections.push(Connection::open(
            &target,
            *port,
            index.to_string(),
            from_pod_tx.clone(),
        ));
    }
    // The channel of a message from the pod: its connection's data or error channel.
    let channel_of = |id: &str, error: bool| {
        let index = id.parse::<usize>().ok().filter(|i| *i < ports.len())?;
        let (data, error_channel) = channel::port_forward_channels(index)?;
        Some(if error { error_channel } else { data })
    };
    let mut open = ports.len();
    while open > 0 {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(&ch) = bytes.first()
                        && ch % 2 == 0
                        && let Some(c) = connections.get(usize::from(ch / 2))
                    {
                        let _ = c.to_pod.send(Some(bytes.slice(1..)));
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            // This loop holds a sender, so the channel never ends.
            Some(message) = from_pod.recv() => {
                let (ch, payload) = match message {
                    FromPod::Data(id, bytes) => (channel_of(&id, false), Some(bytes)),
                    FromPod::Closed(id, error) => {
                        open -= 1;
                        (channel_of(&id, true), error.map(Bytes::from))
                    }
                };
                if let (Some(ch), Some(payload)) = (ch, payload) {
                    let mut m = Vec::with_capacity(payload.len() + 1);
                    m.push(ch);
                    m.extend_from_slice(&payload);
                    if socket.send(Message::binary(m)).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    for connection in &connections {
        connection.task.abort();
    }
    if open == 0 {
        let _ = socket.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    }
}
