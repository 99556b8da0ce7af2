//! `exec` and `attach` over a WebSocket speaking the channel protocol
//! ([`berth_streaming::channel`]): stdin from the client on channel 0 (and, in v5, `[0xff, 0]`
//! when it ends), stdout and stderr to the client on 1 and 2, resizes on 4, and at the end the
//! outcome as a `metav1.Status` on 3, after which the server closes the socket (kubectl waits
//! for that close before it exits).

use std::time::Duration;

use berth_streaming::channel::{self, Endpoint, Frame, Protocol};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::Response;
use http::{HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::query::Query;
use super::spdy_exec;
use super::ws::{self, Socket};
use super::{
    AttachRequest, Body, ExecRequest, ExecSession, State, TerminalSize, bad_request,
    error_response, full,
};

/// How long after the process exits its output may still arrive (a background child can keep
/// the pipes open forever); every chunk that does arrive extends it.
pub(super) const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long to wait for the client's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The largest stdout/stderr message.
const CHUNK: usize = 32 * 1024;

/// The streams a request asks for (`stdin`, `stdout`, `stderr`, `tty` query flags), checked as
/// the kubelet checks them.
fn streams(query: &Query) -> Result<(bool, bool, bool, bool), &'static str> {
    let (stdin, stdout, mut stderr, tty) = (
        query.flag("stdin"),
        query.flag("stdout"),
        query.flag("stderr"),
        query.flag("tty"),
    );
    if !(stdin || stdout || stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr");
    }
    // A terminal has one output; the kubelet drops stderr rather than failing.
    if tty {
        stderr = false;
    }
    Ok((stdin, stdout, stderr, tty))
}

/// How the client wants the connection upgraded.
#[derive(Clone, Copy)]
enum Upgrade {
    WebSocket(Protocol),
    /// `Upgrade: SPDY/3.1`, `v4.channel.k8s.io` ([`super::spdy_exec`]).
    Spdy,
}

/// The upgrade to answer with, or why the request is refused.
fn upgrade_kind(request: &Request<Incoming>) -> Result<Upgrade, &'static str> {
    if ws::is_websocket(request) {
        return ws::protocol(request, Endpoint::RemoteCommand)
            .map(Upgrade::WebSocket)
            .ok_or(
                "unable to upgrade: none of the offered WebSocket subprotocols is supported (v5.channel.k8s.io, v4.channel.k8s.io)",
            );
    }
    if ws::is_spdy(request) {
        return if spdy_exec::offered(request) {
            Ok(Upgrade::Spdy)
        } else {
            Err(
                "unable to upgrade: unable to negotiate protocol: the server supports v4.channel.k8s.io over SPDY",
            )
        };
    }
    Err(
        "Upgrade request required: exec and attach need a WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) or SPDY/3.1 upgrade",
    )
}

/// Answers the upgrade and runs the session on the upgraded connection.
fn start(
    request: &mut Request<Incoming>,
    upgrade: Upgrade,
    session: ExecSession,
    command: Option<Vec<String>>,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut *request);
    match upgrade {
        Upgrade::WebSocket(protocol) => {
            tokio::spawn(async move {
                if let Some(socket) = ws::socket(on_upgrade).await {
                    run(socket, protocol, session, command).await;
                }
            });
            ws::accept(request, protocol)
        }
        Upgrade::Spdy => {
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        spdy_exec::run(TokioIo::new(upgraded), session, command).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "the SPDY upgrade failed"),
                }
            });
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            headers.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(spdy_exec::PROTOCOL),
            );
            response
        }
    }
}

/// `GET|POST /exec/{ns}/{pod}/{container}`.
pub(super) async fn exec(
    state: &State,
    mut request: Request<Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Response<Body> {
    let command: Vec<String> = query.all("command").map(str::to_string).collect();
    if command.is_empty() {
        return bad_request("you must specify at least one command for the container");
    }
    let (stdin, stdout, stderr, tty) = match streams(query) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let upgrade = match upgrade_kind(&request) {
        Ok(u) => u,
        Err(message) => return bad_request(message),
    };
    let exec = ExecRequest {
        command: command.clone(),
        tty,
        stdin,
        stdout,
        stderr,
    };
    let session = match state.streams.exec(namespace, pod, container, exec).await {
        Ok(session) => session,
        Err(e) => return error_response(&e),
    };
    start(&mut request, upgrade, session, Some(command))
}

/// `GET|POST /attach/{ns}/{pod}/{container}`.
pub(super) async fn attach(
    state: &State,
    mut request: Request<Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Response<Body> {
    let (stdin, stdout, stderr, tty) = match streams(query) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let upgrade = match upgrade_kind(&request) {
        Ok(u) => u,
        Err(message) => return bad_request(message),
    };
    let attach = AttachRequest {
        tty,
        stdin,
        stdout,
        stderr,
    };
    let session = match state
        .streams
        .attach(namespace, pod, container, attach)
        .await
    {
        Ok(session) => session,
        Err(e) => return error_response(&e),
    };
    start(&mut request, upgrade, session, None)
}

/// What the output pumps tell the session loop.
pub(super) enum Output {
    /// One encoded channel message.
    Message(Vec<u8>),
    /// A stream reached its end.
    Eof,
}

pub(super) async fn pump(
    mut reader: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    id: u8,
    out: mpsc::Sender<Output>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut message = Vec::with_capacity(n + 1);
                message.push(id);
                message.extend_from_slice(&buf[1..=n]);
                if out.send(Output::Message(message)).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out.send(Output::Eof).await;
}

/// Writes stdin; `None` closes it.
pub(super) async fn feed_stdin(
    mut writer: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    mut input: mpsc::UnboundedReceiver<Option<Bytes>>,
) {
    while let Some(item) = input.recv().await {
        match item {
            Some(bytes) => {
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            None => {
                let _ = writer.shutdown().await;
                break;
            }
        }
    }
    // Dropping the writer closes the pipe (or the terminal's input side).
}

/// Drives one session until the process exits and its output is sent, or the client leaves.
/// `command` is the exec's command (its exit code is reported); `None` for attach, which
/// always reports success.
pub(super) async fn run(
    mut socket: Socket,
    protocol: Protocol,
    session: ExecSession,
    command: Option<Vec<String>>,
) {
    let ExecSession {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = session;
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(8);
    let mut open_outputs = 0usize;
    for (reader, id) in [(stdout, channel::STDOUT), (stderr, channel::STDERR)] {
        if let Some(reader) = reader {
            open_outputs += 1;
            tokio::spawn(pump(reader, id, out_tx.clone()));
        }
    }
    let mut stdin_tx = stdin.map(|writer| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(feed_stdin(writer, rx));
        tx
    });
    let mut exit = exit;
    let mut code: Option<i32> = None;
    let mut drain_until = Instant::now();
    loop {
        if code.is_some() && open_outputs == 0 {
            break;
        }
        tokio::select! {
            c = &mut exit, if code.is_none() => {
                code = Some(c);
                drain_until = Instant::now() + DRAIN_AFTER_EXIT;
            }
            _ = tokio::time::sleep_until(drain_until), if code.is_some() => break,
            output = out_rx.recv() => match output {
                Some(Output::Message(message)) => {
                    if socket.send(Message::binary(message)).await.is_err() {
                        return;
                    }
                    if code.is_some() {
                        drain_until = Instant::now() + DRAIN_AFTER_EXIT;
                    }
                }
                Some(Output::Eof) => open_outputs = open_outputs.saturating_sub(1),
                // This loop holds a sender.
                None => {}
            },
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) => match Frame::decode(&data, protocol) {
                    Ok(Frame::Stdin(bytes)) => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(Some(bytes));
                        }
                    }
                    Ok(Frame::Close(channel::STDIN)) => {
                        if let Some(tx) = stdin_tx.take() {
                            let _ = tx.send(None);
                        }
                    }
                    Ok(Frame::Resize { width, height }) => {
                        if let Some(tx) = &resize {
                            let _ = tx.try_send(TerminalSize { width, height });
                        }
                    }
                    // Nothing else is for the server; an undecodable message is skipped, as
                    // client-go skips unknown stream ids.
                    _ => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    // The client is gone: dropping the session closes stdin and the outputs.
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin_tx);
    let status = match &command {
        Some(command) => {
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            channel::exit_status(code.unwrap_or(0), &argv)
        }
        None => channel::exit_status(0, &[]),
    };
    if socket
        .send(Message::binary(Frame::Error(status).encode()))
        .await
        .is_err()
    {
        return;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    // Read until the client's close frame arrives (or it gives up), so the close handshake
    // completes and no output is lost to a reset.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}
