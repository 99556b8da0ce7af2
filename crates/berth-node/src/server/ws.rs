//! The server half of the upgrade handshakes over hyper's upgrade: WebSocket with its
//! subprotocol choice, and `Upgrade: SPDY/3.1` with its `X-Stream-Protocol-Version`.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use berth_streaming::channel::{Endpoint, Protocol, negotiate};

use super::{Body, full};

/// An upgraded WebSocket connection.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

fn has_token<B>(request: &Request<B>, name: header::HeaderName, token: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether this is a WebSocket upgrade request.
pub(crate) fn is_websocket<B>(request: &Request<B>) -> bool {
    has_token(request, header::UPGRADE, "websocket")
        && has_token(request, header::CONNECTION, "upgrade")
        && request.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

/// Whether this is an `Upgrade: SPDY/3.1` request.
pub(crate) fn is_spdy<B>(request: &Request<B>) -> bool {
    has_token(request, header::UPGRADE, "SPDY/3.1")
        && has_token(request, header::CONNECTION, "upgrade")
}

/// Whether the client offers `version` in `X-Stream-Protocol-Version` (SPDY upgrades).
pub(crate) fn offers_stream_protocol<B>(request: &Request<B>, version: &str) -> bool {
    has_token(request, STREAM_PROTOCOL_VERSION, version)
}

const STREAM_PROTOCOL_VERSION: header::HeaderName =
    header::HeaderName::from_static("x-stream-protocol-version");

/// The best subprotocol the client offers for `endpoint`.
pub(crate) fn protocol<B>(request: &Request<B>, endpoint: Endpoint) -> Option<Protocol> {
    negotiate(
        endpoint,
        request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// The `101 Switching Protocols` answer accepting the WebSocket with `protocol`.
pub(crate) fn accept<B>(request: &Request<B>, protocol: Protocol) -> Response<Body> {
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let mut response = switching_protocols();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(key) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, key);
    }
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.as_str()),
    );
    response
}

/// The `101 Switching Protocols` answer accepting an `Upgrade: SPDY/3.1` with `version`.
pub(crate) fn accept_spdy(version: &'static str) -> Response<Body> {
    let mut response = switching_protocols();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(STREAM_PROTOCOL_VERSION, HeaderValue::from_static(version));
    response
}

fn switching_protocols() -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response
}

/// Waits for hyper to hand over the connection.
pub(crate) async fn upgraded(upgrade: hyper::upgrade::OnUpgrade) -> Option<TokioIo<Upgraded>> {
    match upgrade.await {
        Ok(upgraded) => Some(TokioIo::new(upgraded)),
        Err(e) => {
            tracing::debug!(error = %e, "the upgrade failed");
            None
        }
    }
}

/// Waits for hyper to hand over the connection and wraps it as the server side of a WebSocket.
pub(crate) async fn socket(upgrade: hyper::upgrade::OnUpgrade) -> Option<Socket> {
    let io = upgraded(upgrade).await?;
    Some(WebSocketStream::from_raw_socket(io, Role::Server, Some(WebSocketConfig::default())).await)
}
