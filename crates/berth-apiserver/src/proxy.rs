//! The pod subresources a node agent serves — `log`, `exec`, `attach`, `portforward` — proxied
//! to the agent of the pod's node, as kube-apiserver proxies them to the kubelet.
//!
//! This module decides *where* (the pod's container, its node's address and agent port) and
//! moves bytes; it never parses the streaming protocols. For a plain request (`log`) the agent's
//! response streams through as it comes (`follow` stays live). For an upgrade (`Connection:
//! Upgrade` with `websocket` or `SPDY/3.1`) the request goes to the agent with its handshake
//! headers, the agent's `101` comes back with its headers, and once both sides have switched
//! protocols the two connections are spliced. Any other answer of the agent (an error Status)
//! is passed through.
//!
//! The agent is trusted through the cluster CA (its certificate is issued by
//! [`crate::tls::Pki::ensure_agent`]) and authenticated to with the agent token
//! ([`crate::tls::Pki::ensure_agent_token`]).

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_api::resources;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::handler::{Body, State};
use crate::request::{ResourceRequest, Verb};
use crate::status::{ApiError, ApiResult};
use crate::tls::{Pki, TlsError};

/// How long connecting to an agent (TCP and TLS) may take before the request fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent may take to answer (the headers; a followed log may then stream forever).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The kubelet's port, for nodes that do not report one.
pub const DEFAULT_AGENT_PORT: u16 = 10250;

/// Headers of an upgrade handshake that go to the agent and back.
const HANDSHAKE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "x-stream-protocol-version",
];

/// How the API server reaches node agents: TLS trusting the cluster CA, and the token.
pub struct Agents {
    tls: tokio_rustls::TlsConnector,
    token: String,
}

impl Agents {
    /// Agents reached with `tls` and authenticated to with `token`.
    pub fn new(tls: Arc<rustls::ClientConfig>, token: String) -> Self {
        Agents {
            tls: tokio_rustls::TlsConnector::from(tls),
            token,
        }
    }

    /// The credentials in the data dir's PKI (the agent token is made on first use).
    pub fn from_pki(pki: &Pki) -> Result<Self, TlsError> {
        Ok(Self::new(
            pki.agent_client_config()?,
            pki.ensure_agent_token()?,
        ))
    }
}

/// Whether a request is one of the subresources this module serves.
pub fn is_proxied(request: &ResourceRequest) -> bool {
    request.info.group.is_empty()
        && request.info.plural == "pods"
        && request.name.is_some()
        && matches!(
            request.subresource.as_deref(),
            Some("log" | "exec" | "attach" | "portforward")
        )
}

/// Serves `pods/<name>/{log,exec,attach,portforward}`.
pub async fn serve<B>(
    state: &State,
    resource: ResourceRequest,
    mut request: Request<B>,
) -> ApiResult<Response<Body>>
where
    B: Send + 'static,
{
    let subresource = resource.subresource.as_deref().unwrap_or("");
    let allowed = match subresource {
        "log" => resource.verb == Verb::Get,
        _ => matches!(resource.verb, Verb::Get | Verb::Create),
    };
    if !allowed {
        return Err(ApiError::method_not_supported(
            resource.info,
            resource.verb.as_str(),
        ));
    }
    let namespace = resource.namespace.as_deref().unwrap_or("default");
    let name = resource.name.as_deref().unwrap_or("");
    let pod = state
        .registry
        .get(resource.info, Some(namespace), name)
        .await?;
    let container = match subresource {
        "portforward" => None,
        _ => Some(container(&pod, name, resource.query.get("container"))?),
    };
    let Some(node_name) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        if subresource == "log" {
            // kube-apiserver answers a log request for an unscheduled pod with nothing.
            return Ok(Response::new(Empty::new().boxed_unsync()));
        }
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let nodes = resources::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let node = state.registry.get(nodes, None, node_name).await?;
    let (host, port) = agent_address(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name} has no address")))?;
    let query = request.uri().query().unwrap_or("");
    // The agent has the container in the path.
    let without_container = || query_where(query, |key| key != "container");
    let path = match (subresource, &container) {
        ("log", Some(c)) => format!(
            "/containerLogs/{namespace}/{name}/{c}{}",
            query_where(query, |key| LOG_PARAMETERS.contains(&key))
        ),
        ("portforward", _) => format!("/portForward/{namespace}/{name}{}", without_container()),
        (sub, Some(c)) => format!("/{sub}/{namespace}/{name}/{c}{}", without_container()),
        _ => return Err(ApiError::no_route()),
    };
    let upgrade = is_upgrade(request.headers());
    let mut outgoing = Request::builder()
        .method(request.method().clone())
        .uri(path.as_str())
        .header(header::HOST, authority(&host, port))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", state.agents.token),
        );
    if upgrade {
        for name in HANDSHAKE_HEADERS {
            for value in request.headers().get_all(*name) {
                outgoing = outgoing.header(*name, value);
            }
        }
    }
    let outgoing = outgoing
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(format!("cannot build the agent request: {e}")))?;
    let response = send(&state.agents, &host, port, outgoing).await?;
    if upgrade && response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let mut reply = Response::new(Empty::new().boxed_unsync());
        *reply.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        for name in HANDSHAKE_HEADERS {
            for value in response.headers().get_all(*name) {
                reply.headers_mut().append(*name, value.clone());
            }
        }
        let client_side = hyper::upgrade::on(&mut request);
        let agent_side = hyper::upgrade::on(response);
        tokio::spawn(async move {
            match tokio::join!(client_side, agent_side) {
                (Ok(client), Ok(agent)) => {
                    let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
                }
                (client, agent) => tracing::debug!(
                    client_ok = client.is_ok(),
                    agent_ok = agent.is_ok(),
                    "a proxied upgrade did not complete"
                ),
            }
        });
        return Ok(reply);
    }
    let (parts, body) = response.into_parts();
    let mut reply = Response::new(EndOnError(body).boxed_unsync());
    *reply.status_mut() = parts.status;
    for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        if let Some(value) = parts.headers.get(&name) {
            reply.headers_mut().insert(name, value.clone());
        }
    }
    if !reply.headers().contains_key(header::CONTENT_TYPE) {
        reply
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    Ok(reply)
}

/// The log options kube-apiserver passes on to the kubelet.
const LOG_PARAMETERS: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "limitBytes",
];

/// The raw query's pairs whose (decoded) key passes `keep`, as `?...`, or nothing.
fn query_where(query: &str, keep: impl Fn(&str) -> bool) -> String {
    let pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && keep(&crate::request::percent_decode(key))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// Every container of the pod, in kube-apiserver's order: init, regular, ephemeral.
fn container_names(pod: &Value) -> Vec<&str> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| {
            pod.pointer(&format!("/spec/{field}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect()
}

/// kube-apiserver's `validateContainer`: the container asked for, or the only one.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    match asked.filter(|c| !c.is_empty()) {
        Some(container) => {
            if container_names(pod).contains(&container) {
                Ok(container.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {container} is not valid for pod {name}"
                )))
            }
        }
        None => {
            let regular: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            match regular.as_slice() {
                [only] => Ok(only.to_string()),
                [] => Err(ApiError::bad_request(format!(
                    "pod {name} does not have a container"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    container_names(pod).join(" ")
                ))),
            }
        }
    }
}

/// The node's agent: its InternalIP (else its Hostname address) and
/// `status.daemonEndpoints.kubeletEndpoint.Port` (else 10250).
fn agent_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    let of_type = |kind: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .filter(|a| !a.is_empty())
    };
    let host = of_type("InternalIP").or_else(|| of_type("Hostname"))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some((host.to_string(), port))
}

fn authority(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

fn is_upgrade(headers: &http::HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(header::CONNECTION, "upgrade") && headers.contains_key(header::UPGRADE)
}

/// Connects to the agent (TCP, TLS, HTTP/1.1) and sends one request.
async fn send(
    agents: &Agents,
    host: &str,
    port: u16,
    request: Request<Empty<Bytes>>,
) -> ApiResult<Response<Incoming>> {
    let address = authority(host, port);
    let failed = |what: String| ApiError::internal(format!("error dialing backend: {what}"));
    let server_name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|e| failed(format!("invalid node address {host:?}: {e}")))?,
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| failed(format!("dial tcp {address}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        agents
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| failed(format!("tls with the node agent at {address}: {e}")))
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            failed(format!(
                "dial tcp {address}: timed out after {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })??;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| failed(format!("{address}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "the connection to a node agent ended with an error");
        }
    });
    tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| {
            ApiError::internal(format!(
                "the node agent at {address} did not answer within {}s",
                RESPONSE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| ApiError::internal(format!("the node agent at {address} failed: {e}")))
}

/// The agent's response body, ending (instead of failing) if the agent's connection breaks:
/// what was streamed so far stays with the client, and the response ends there.
struct EndOnError(Incoming);

impl hyper::body::Body for EndOnError {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "a proxied response from a node agent broke off");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "main"}, {"name": "sidecar"}],
            "ephemeralContainers": [{"name": "debug"}],
        }})
    }

    #[test]
    fn container_choice_and_kube_apiserver_messages() {
        let one = json!({"spec": {"containers": [{"name": "main"}]}});
        assert_eq!(container(&one, "x", None).unwrap(), "main");
        assert_eq!(container(&one, "x", Some("")).unwrap(), "main");
        assert_eq!(container(&pod(), "x", Some("init")).unwrap(), "init");
        assert_eq!(container(&pod(), "x", Some("debug")).unwrap(), "debug");
        let e = container(&pod(), "x", None).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                400,
                "a container name must be specified for pod x, choose one of: [init main sidecar debug]"
            )
        );
        let e = container(&pod(), "x", Some("nope")).unwrap_err();
        assert_eq!(e.message, "container nope is not valid for pod x");
        let e = container(&json!({"spec": {}}), "x", None).unwrap_err();
        assert_eq!(e.message, "pod x does not have a container");
    }

    #[test]
    fn agent_address_prefers_internal_ip() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "box"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}},
        }});
        assert_eq!(agent_address(&node), Some(("10.0.0.2".into(), 12345)));
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "box"}]}});
        assert_eq!(agent_address(&node), Some(("box".into(), 10250)));
        assert_eq!(agent_address(&json!({"status": {}})), None);
        assert_eq!(authority("::1", 5), "[::1]:5");
    }

    #[test]
    fn queries_forwarded_to_the_agent() {
        let log = |query| query_where(query, |key| LOG_PARAMETERS.contains(&key));
        assert_eq!(
            log("container=main&follow=true&tailLines=2&insecureSkipTLSVerifyBackend=true"),
            "?follow=true&tailLines=2"
        );
        assert_eq!(log("container=main"), "");
        let without_container = |query| query_where(query, |key| key != "container");
        assert_eq!(
            without_container("command=sh&command=-c&container=main&stdout=true"),
            "?command=sh&command=-c&stdout=true"
        );
        assert_eq!(without_container(""), "");
    }
}
