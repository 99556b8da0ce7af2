//! `exec` and `attach` over a WebSocket speaking the channel protocol
//! ([`berth_streaming::channel`]): stdin from the client on channel 0 (and, in v5, `[0xff, 0]`
//! when it ends), stdout and stderr to the client on 1 and 2, resizes on 4, and at the end the
//! outcome as a `metav1.Status` on 3, after which the server closes the socket (kubectl waits
//! for that close before it exits).

use std::time::Duration;

use berth_streaming::channel::{self, Endpoint, Frame, Protocol};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;
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
    AttachRequest, Body, ExecRequest, ExecSession, State, TerminalSize, bad_request, error_response,
};

/// How long after the process exits its output may still arrive (a background child can keep
/// the pipes open forever); every chunk that does arrive extends it.
pub(super) const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long to wait for the client's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The largest stdout/stderr message.
const CHUNK: usize = 32 * 1024;

/// What an exec or attach request asks for: its streams (`stdin`, `stdout`, `stderr`, `tty`
/// query flags, checked as the kubelet checks them) and its upgrade.
struct Asked {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    upgrade: Upgrade,
}

fn asked(query: &Query, request: &Request<Incoming>) -> Result<Asked, &'static str> {
    let (stdin, stdout, stderr, tty) = (
        query.flag("stdin"),
        query.flag("stdout"),
        query.flag("stderr"),
        query.flag("tty"),
    );
    if !(stdin || stdout || stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr");
    }
    Ok(Asked {
        stdin,
        stdout,
        // A terminal has one output; the kubelet drops stderr rather than failing.
        stderr: stderr && !tty,
        tty,
        upgrade: upgrade_kind(request)?,
    })
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
        return if ws::offers_stream_protocol(request, spdy_exec::PROTOCOL) {
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
    let process = Process::start(session, command);
    match upgrade {
        Upgrade::WebSocket(protocol) => {
            tokio::spawn(async move {
                if let Some(socket) = ws::socket(on_upgrade).await {
                    run(socket, protocol, process).await;
                }
            });
            ws::accept(request, protocol)
        }
        Upgrade::Spdy => {
            tokio::spawn(async move {
                if let Some(io) = ws::upgraded(on_upgrade).await {
                    spdy_exec::run(io, process).await;
                }
            });
            ws::accept_spdy(spdy_exec::PROTOCOL)
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
    let asked = match asked(query, &request) {
        Ok(asked) => asked,
        Err(message) => return bad_request(message),
    };
    let exec = ExecRequest {
        command: command.clone(),
        tty: asked.tty,
        stdin: asked.stdin,
        stdout: asked.stdout,
        stderr: asked.stderr,
    };
    match state.streams.exec(namespace, pod, container, exec).await {
        Ok(session) => start(&mut request, asked.upgrade, session, Some(command)),
        Err(e) => error_response(&e),
    }
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
    let asked = match asked(query, &request) {
        Ok(asked) => asked,
        Err(message) => return bad_request(message),
    };
    let attach = AttachRequest {
        tty: asked.tty,
        stdin: asked.stdin,
        stdout: asked.stdout,
        stderr: asked.stderr,
    };
    match state
        .streams
        .attach(namespace, pod, container, attach)
        .await
    {
        Ok(session) => start(&mut request, asked.upgrade, session, None),
        Err(e) => error_response(&e),
    }
}

/// The process side of an exec or attach, whichever transport carries it: its output as
/// `(channel, bytes)` chunks, its input and terminal size, and its outcome. Both session loops
/// ([`run`], [`spdy_exec::run`]) drive one.
pub(super) struct Process {
    /// Output chunks from the pumps; it ends when every pump has.
    output: mpsc::Receiver<(u8, Bytes)>,
    /// The channels of the outputs the session has (stdout, stderr).
    channels: Vec<u8>,
    /// Set once no more output will be taken: every pump ended, or the drain deadline passed.
    output_done: bool,
    /// Input for the process; dropping it closes the process's stdin.
    stdin: Option<mpsc::UnboundedSender<Bytes>>,
    resize: Option<mpsc::Sender<TerminalSize>>,
    exit: BoxFuture<'static, i32>,
    code: Option<i32>,
    /// After the exit: when output stops being waited for (each chunk extends it).
    drain_until: Instant,
    /// The exec's command (a non-zero exit's Status names it); `None` for attach, which always
    /// reports success.
    command: Option<Vec<String>>,
}

impl Process {
    /// Starts the output pumps and the stdin writer of `session`.
    pub(super) fn start(session: ExecSession, command: Option<Vec<String>>) -> Self {
        let (out_tx, output) = mpsc::channel(8);
        let mut channels = Vec::new();
        for (reader, id) in [
            (session.stdout, channel::STDOUT),
            (session.stderr, channel::STDERR),
        ] {
            if let Some(reader) = reader {
                channels.push(id);
                tokio::spawn(pump(reader, id, out_tx.clone()));
            }
        }
        let stdin = session.stdin.map(|writer| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(feed_stdin(writer, rx));
            tx
        });
        Process {
            output,
            channels,
            output_done: false,
            stdin,
            resize: session.resize,
            exit: session.exit,
            code: None,
            drain_until: Instant::now(),
            command,
        }
    }

    /// The channels of the outputs this session has.
    pub(super) fn channels(&self) -> &[u8] {
        &self.channels
    }

    /// The next output chunk, or `None` once the session is over: the process has exited and
    /// its output has ended, or has stopped arriving for [`DRAIN_AFTER_EXIT`] (a background
    /// child can keep the pipes open forever). Cancel-safe, and `None` again once over.
    pub(super) async fn next_output(&mut self) -> Option<(u8, Bytes)> {
        loop {
            if self.code.is_some() && self.output_done {
                return None;
            }
            tokio::select! {
                code = &mut self.exit, if self.code.is_none() => {
                    self.code = Some(code);
                    self.drain_until = Instant::now() + DRAIN_AFTER_EXIT;
                }
                () = tokio::time::sleep_until(self.drain_until), if self.code.is_some() => {
                    self.output_done = true;
                }
                chunk = self.output.recv(), if !self.output_done => match chunk {
                    Some(chunk) => {
                        if self.code.is_some() {
                            self.drain_until = Instant::now() + DRAIN_AFTER_EXIT;
                        }
                        return Some(chunk);
                    }
                    None => self.output_done = true,
                },
            }
        }
    }

    /// Input from the client; dropped when stdin was not asked for or is closed.
    pub(super) fn write_stdin(&self, bytes: Bytes) {
        if let Some(tx) = &self.stdin {
            let _ = tx.send(bytes);
        }
    }

    /// The client's stdin ended.
    pub(super) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// A terminal size from the client; never blocks (a resize that does not fit is dropped).
    pub(super) fn resize(&self, size: TerminalSize) {
        if let Some(tx) = &self.resize {
            let _ = tx.try_send(size);
        }
    }

    /// The outcome to send once [`Process::next_output`] returned `None`; closes stdin.
    pub(super) fn finish(self) -> Value {
        match &self.command {
            Some(command) => {
                let argv: Vec<&str> = command.iter().map(String::as_str).collect();
                channel::exit_status(self.code.unwrap_or(0), &argv)
            }
            None => channel::exit_status(0, &[]),
        }
    }
}

/// Copies `reader` into `out` as chunks of channel `id` until it ends.
async fn pump(
    mut reader: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    id: u8,
    out: mpsc::Sender<(u8, Bytes)>,
) {
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if out.send((id, buf.split().freeze())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes the client's input until it closes, then shuts the writer down and drops it, which
/// closes the pipe (or the terminal's input side).
async fn feed_stdin(
    mut writer: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    mut input: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(bytes) = input.recv().await {
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Drives one session over a WebSocket until the process exits and its output is sent, or the
/// client leaves.
async fn run(mut socket: Socket, protocol: Protocol, mut process: Process) {
    loop {
        tokio::select! {
            output = process.next_output() => {
                let Some((id, bytes)) = output else { break };
                let mut message = Vec::with_capacity(bytes.len() + 1);
                message.push(id);
                message.extend_from_slice(&bytes);
                if socket.send(Message::binary(message)).await.is_err() {
                    return;
                }
            }
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) => match Frame::decode(&data, protocol) {
                    Ok(Frame::Stdin(bytes)) => process.write_stdin(bytes),
                    Ok(Frame::Close(channel::STDIN)) => process.close_stdin(),
                    Ok(Frame::Resize { width, height }) => {
                        process.resize(TerminalSize { width, height });
                    }
                    // Nothing else is for the server; an undecodable message is skipped, as
                    // client-go skips unknown stream ids.
                    _ => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    // The client is gone: dropping the process closes stdin and the outputs.
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let status = process.finish();
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
