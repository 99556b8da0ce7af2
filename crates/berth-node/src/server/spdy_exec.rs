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
use tokio::time::Instant;

use super::TerminalSize;
use super::exec::{DRAIN_AFTER_EXIT, Process};

/// The only remotecommand version served over SPDY.
pub(super) const PROTOCOL: &str = "v4.channel.k8s.io";

/// Drives one session on the upgraded connection; [`super::exec`] has the WebSocket twin.
pub(super) async fn run(mut io: TokioIo<Upgraded>, mut process: Process) {
    let mut decoder = Decoder::new();
    let mut encoder = Encoder::new();
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    // The streams the client must have opened before the outcome can be sent.
    let wanted: Vec<u8> = [channel::ERROR]
        .into_iter()
        .chain(process.channels().iter().copied())
        .collect();
    // Stream ids by channel (error 3, stdin 0, stdout 1, stderr 2, resize 4), and back.
    let mut streams: HashMap<u8, u32> = HashMap::new();
    let mut channels: HashMap<u32, u8> = HashMap::new();
    // Output that arrived before the client opened its stream.
    let mut pending: Vec<(u8, Bytes)> = Vec::new();
    let mut resize_buf: Vec<u8> = Vec::new();
    // Once the process is over: how long the client may still take to open its streams.
    let mut over: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // The process may be done before the client has even opened its streams.
        if over.is_some() && wanted.iter().all(|c| streams.contains_key(c)) {
            break;
        }
        tokio::select! {
            chunk = process.next_output(), if over.is_none() => match chunk {
                Some(chunk) => pending.push(chunk),
                None => over = Some(Instant::now() + DRAIN_AFTER_EXIT),
            },
            () = tokio::time::sleep_until(over.unwrap_or_else(Instant::now)), if over.is_some() => break,
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
                                if !data.is_empty() {
                                    process.write_stdin(data);
                                }
                                if fin {
                                    process.close_stdin();
                                }
                            }
                            Some(&channel::RESIZE) => {
                                resize_buf.extend_from_slice(&data);
                                for size in take_sizes(&mut resize_buf) {
                                    process.resize(size);
                                }
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
    let status = process.finish();
    // Output whose stream never came is dropped; the client did not ask for it.
    pending.retain(|(id, _)| streams.contains_key(id));
    if !flush_pending(&mut pending, &streams, &mut encoder, &mut output) {
        return;
    }
    let mut finish = vec![(
        channel::ERROR,
        Bytes::from(serde_json::to_vec(&status).unwrap_or_default()),
    )];
    finish.extend([channel::STDOUT, channel::STDERR].map(|c| (c, Bytes::new())));
    for (channel, data) in finish {
        if let Some(&stream_id) = streams.get(&channel) {
            let frame = Frame::Data {
                stream_id,
                fin: true,
                data,
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

/// The complete `{"Width":..,"Height":..}` objects at the start of `buf` (the resize stream is
/// a sequence of them), removed from it; an incomplete last one stays for the next data.
fn take_sizes(buf: &mut Vec<u8>) -> Vec<TerminalSize> {
    let mut sizes = Vec::new();
    let mut objects = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut consumed = 0;
    while let Some(Ok(size)) = objects.next() {
        consumed = objects.byte_offset();
        let dim = |k: &str| {
            size.get(k)
                .and_then(serde_json::Value::as_u64)
                .and_then(|v| u16::try_from(v).ok())
        };
        if let (Some(width), Some(height)) = (dim("Width"), dim("Height")) {
            sizes.push(TerminalSize { width, height });
        }
    }
    buf.drain(..consumed);
    sizes
}

/// Encodes the output whose streams the client has opened; `false` if encoding failed.
fn flush_pending(
    pending: &mut Vec<(u8, Bytes)>,
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
                    data,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_objects_are_taken_whole() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":100,"Hei"#.to_vec();
        assert_eq!(
            take_sizes(&mut buf),
            [TerminalSize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(buf, br#"{"Width":100,"Hei"#);
        buf.extend_from_slice(br#"ght":30}"#);
        assert_eq!(
            take_sizes(&mut buf),
            [TerminalSize {
                width: 100,
                height: 30
            }]
        );
        assert!(buf.is_empty());
    }
}
