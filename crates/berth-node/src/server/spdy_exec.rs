//! `exec` and `attach` over an `Upgrade: SPDY/3.1` connection: what kubectl before 1.30 speaks,
//! and what newer ones fall back to (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`). The protocol
//! is `v4.channel.k8s.io` (kubelet's `remotecommand/httpstream.go`): the client opens one SPDY
//! stream per channel, named by its `streamtype` header (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`); the server answers each with a SYN_REPLY, writes output as data on the stdout and
//! stderr streams, reads input (and a FIN when it ends) from stdin, a sequence of
//! `{"Width":..,"Height":..}` objects from resize, and finally writes the outcome Status on the
//! error stream and FINs every stream it writes.

use std::collections::HashMap;
use std::time::Duration;

use berth_streaming::channel;
use berth_streaming::spdy::{Decoder, Encoder, Frame, header};
use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::exec::{DRAIN_AFTER_EXIT, Output, feed_stdin, pump};
use super::{ExecSession, TerminalSize};

/// The only remotecommand version served over SPDY.
pub(super) const PROTOCOL: &str = "v4.channel.k8s.io";

/// Whether the client offers [`PROTOCOL`] in `X-Stream-Protocol-Version`.
pub(super) fn offered<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == PROTOCOL)
}

/// Drives one session on the upgraded connection; see [`super::exec::run`] for the WebSocket
/// twin and the meaning of `command`.
pub(super) async fn run(
    mut io: TokioIo<Upgraded>,
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
    let mut decoder = Decoder::new();
    let mut encoder = Encoder::new();
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(8);
    let mut open_outputs = 0usize;
    // The streams the client must have opened before the outcome can be sent.
    let mut wanted = vec![channel::ERROR];
    for (reader, id) in [(stdout, channel::STDOUT), (stderr, channel::STDERR)] {
        if let Some(reader) = reader {
            open_outputs += 1;
            wanted.push(id);
            tokio::spawn(pump(reader, id, out_tx.clone()));
        }
    }
    let mut stdin_tx = stdin.map(|writer| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(feed_stdin(writer, rx));
        tx
    });
    // Stream ids by channel (error 3, stdin 0, stdout 1, stderr 2, resize 4), and back.
    let mut streams: HashMap<u8, u32> = HashMap::new();
    let mut channels: HashMap<u32, u8> = HashMap::new();
    // Output that arrived before the client opened its stream.
    let mut pending: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut resize_buf: Vec<u8> = Vec::new();
    let mut exit = exit;
    let mut code: Option<i32> = None;
    let mut drain_until = Instant::now();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // The process may be done before the client has even opened its streams.
        if code.is_some() && open_outputs == 0 && wanted.iter().all(|c| streams.contains_key(c)) {
            break;
        }
        tokio::select! {
            c = &mut exit, if code.is_none() => {
                code = Some(c);
                drain_until = Instant::now() + DRAIN_AFTER_EXIT;
            }
            _ = tokio::time::sleep_until(drain_until), if code.is_some() => break,
            out = out_rx.recv() => match out {
                Some(Output::Message(message)) => {
                    if let Some((&id, data)) = message.split_first() {
                        pending.push((id, data.to_vec()));
                    }
                    if code.is_some() {
                        drain_until = Instant::now() + DRAIN_AFTER_EXIT;
                    }
                }
                Some(Output::Eof) => open_outputs = open_outputs.saturating_sub(1),
                None => {}
            },
            read = io.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                input.extend_from_slice(&buf[..n]);
                loop {
                    let frame = match decoder.decode(&mut input) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "exec SPDY session failed");
                            return;
                        }
                    };
                    match frame {
                        Frame::SynStream { stream_id, headers, .. } => {
                            let channel = match header(&headers, "streamtype") {
                                Some("error") => Some(channel::ERROR),
                                Some("stdin") => Some(channel::STDIN),
                                Some("stdout") => Some(channel::STDOUT),
                                Some("stderr") => Some(channel::STDERR),
                                Some("resize") => Some(channel::RESIZE),
                                _ => None,
                            };
                            if let Some(channel) = channel {
                                streams.insert(channel, stream_id);
                                channels.insert(stream_id, channel);
                            }
                            let reply = Frame::SynReply { stream_id, flags: 0, headers: Vec::new() };
                            if encoder.encode(&reply, &mut output).is_err() {
                                return;
                            }
                        }
                        Frame::Data { stream_id, fin, data } => match channels.get(&stream_id) {
                            Some(&channel::STDIN) => {
                                if let Some(tx) = &stdin_tx {
                                    if !data.is_empty() {
                                        let _ = tx.send(Some(data));
                                    }
                                    if fin {
                                        let _ = tx.send(None);
                                        stdin_tx = None;
                                    }
                                }
                            }
                            Some(&channel::RESIZE) => {
                                resize_buf.extend_from_slice(&data);
                                let mut sizes = serde_json::Deserializer::from_slice(&resize_buf)
                                    .into_iter::<serde_json::Value>();
                                let mut consumed = 0;
                                while let Some(Ok(size)) = sizes.next() {
                                    consumed = sizes.byte_offset();
                                    let dim = |k: &str| size.get(k).and_then(serde_json::Value::as_u64).and_then(|v| u16::try_from(v).ok());
                                    if let (Some(width), Some(height), Some(tx)) = (dim("Width"), dim("Height"), &resize) {
                                        let _ = tx.try_send(TerminalSize { width, height });
                                    }
                                }
                                resize_buf.drain(..consumed);
                            }
                            _ => {}
                        },
                        Frame::Ping { id } if encoder.encode(&Frame::Ping { id }, &mut output).is_err() => {
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
        if !flush_pending(&mut pending, &streams, &mut encoder, &mut output) {
            return;
        }
        if !output.is_empty() {
            let bytes = output.split().freeze();
            if io.write_all(&bytes).await.is_err() || io.flush().await.is_err() {
                return;
            }
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
    // Output whose stream never came is dropped; the client did not ask for it.
    pending.retain(|(id, _)| streams.contains_key(id));
    if !flush_pending(&mut pending, &streams, &mut encoder, &mut output) {
        return;
    }
    let mut finish = vec![(
        channel::ERROR,
        serde_json::to_vec(&status).unwrap_or_default(),
    )];
    finish.extend([channel::STDOUT, channel::STDERR].map(|c| (c, Vec::new())));
    for (channel, data) in finish {
        if let Some(&stream_id) = streams.get(&channel) {
            let frame = Frame::Data {
                stream_id,
                fin: true,
                data: Bytes::from(data),
            };
            if encoder.encode(&frame, &mut output).is_err() {
                return;
            }
        }
    }
    let _ = io.write_all(&output).await;
    let _ = io.flush().await;
    // The client closes the connection once it has read everything.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let _ = io.shutdown().await;
}

/// Encodes the output whose streams the client has opened; `false` if encoding failed.
fn flush_pending(
    pending: &mut Vec<(u8, Vec<u8>)>,
    streams: &HashMap<u8, u32>,
    encoder: &mut Encoder,
    output: &mut BytesMut,
) -> bool {
    let mut kept = Vec::new();
    for (id, data) in pending.drain(..) {
        match streams.get(&id) {
            Some(&stream_id) => {
                let frame = Frame::Data {
                    stream_id,
                    fin: false,
                    data: Bytes::from(data),
                };
                if encoder.encode(&frame, output).is_err() {
                    return false;
                }
            }
            None => kept.push((id, data)),
        }
    }
    *pending = kept;
    true
}
