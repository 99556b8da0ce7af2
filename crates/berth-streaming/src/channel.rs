//! The Kubernetes channel protocol over WebSocket binary messages, as kubectl and kube-rs speak it
//! for exec and attach, and the WebSocket subprotocol negotiation for exec, attach and
//! port-forward.
//!
//! Every binary message is one stream-id byte followed by the payload: 0 stdin, 1 stdout,
//! 2 stderr, 3 error (a `metav1.Status` in JSON, the command's outcome), 4 resize
//! (`{"Width":..,"Height":..}`). `v5.channel.k8s.io` adds one message, `[0xff, <stream id>]`,
//! meaning "this stream is closed" (kubectl sends `[0xff, 0]` when its stdin ends); v4 has no way
//! to close one direction, which is why v5 exists.
//!
//! kube-rs's port-forward also uses `v4.channel.k8s.io`, but with its own channel layout: port
//! number i (in the order of the `ports` query parameter) uses channel 2i for data and 2i+1 for
//! errors, and the server's first message on each channel is the port, 2 bytes little-endian
//! (kubelet `portforward/websocket.go`; kube-client `api/portforward.rs` checks it). That layout
//! is [`port_forward_channels`] and [`port_prefix`]; the messages are plain [`split_channel`]
//! bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The stream ids of the remotecommand channel protocol.
pub const STDIN: u8 = 0;
/// Output of the command.
pub const STDOUT: u8 = 1;
/// Error output of the command (absent in tty mode, where kubectl discards it).
pub const STDERR: u8 = 2;
/// The command's outcome as a `metav1.Status`.
pub const ERROR: u8 = 3;
/// Terminal size changes from the client.
pub const RESIZE: u8 = 4;
/// The first byte of a v5 close message.
pub const CLOSE: u8 = 0xff;

/// The WebSocket subprotocols berth speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 plus the close message. What kubectl 1.30+ offers for exec.
    V5Channel,
    /// `v4.channel.k8s.io`: Status JSON on the error stream. kube-rs uses it for port-forward.
    V4Channel,
    /// `SPDY/3.1+portforward.k8s.io`: kubectl's port-forward, SPDY/3.1 bytes inside binary
    /// messages (see [`crate::spdy`]).
    SpdyPortForward,
}

impl Protocol {
    /// The name as it appears in `Sec-WebSocket-Protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V5Channel => "v5.channel.k8s.io",
            Protocol::V4Channel => "v4.channel.k8s.io",
            Protocol::SpdyPortForward => "SPDY/3.1+portforward.k8s.io",
        }
    }

    /// Whether the `[0xff, id]` close message exists in this protocol.
    pub fn supports_close(self) -> bool {
        self == Protocol::V5Channel
    }
}

/// Which kind of streaming request a WebSocket upgrade is for; each accepts different protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `pods/<name>/exec` and `pods/<name>/attach`.
    RemoteCommand,
    /// `pods/<name>/portforward`.
    PortForward,
}

/// Picks the subprotocol to answer with from the client's `Sec-WebSocket-Protocol` header
/// values, or `None` when nothing offered is supported (the server should then refuse the upgrade).
///
/// Each value may itself be a comma-separated list (kube-rs sends one value
/// `v5.channel.k8s.io, v4.channel.k8s.io`). The server's preference wins over the client's
/// order: v5 over v4 for exec and attach; for port-forward kubectl's SPDY tunnel over v4 (the
/// kubelet serves port-forward only as v4, so a v5 offer there is not taken).
pub fn negotiate<'a>(
    endpoint: Endpoint,
    offers: impl IntoIterator<Item = &'a str>,
) -> Option<Protocol> {
    let preference: &[Protocol] = match endpoint {
        Endpoint::RemoteCommand => &[Protocol::V5Channel, Protocol::V4Channel],
        Endpoint::PortForward => &[Protocol::SpdyPortForward, Protocol::V4Channel],
    };
    let offered: Vec<&str> = offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    preference
        .iter()
        .copied()
        .find(|p| offered.contains(&p.as_str()))
}

/// One message of the remotecommand channel protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Client to server: input for the process.
    Stdin(Bytes),
    /// Server to client: the process's output.
    Stdout(Bytes),
    /// Server to client: the process's error output.
    Stderr(Bytes),
    /// Server to client: the outcome, a `metav1.Status` (see [`exit_status`]).
    Error(Value),
    /// Client to server: the terminal's new size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// v5 only: the sender will write no more on this stream id.
    Close(u8),
}

/// Why a channel message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// A message must carry at least the stream id byte.
    #[error("empty channel message")]
    Empty,
    /// The stream id is not one of 0..=4 (or 0xff in v5).
    #[error("unknown stream id {0}")]
    UnknownStream(u8),
    /// A v5 close message must be exactly `[0xff, id]`.
    #[error("malformed close message of {0} bytes")]
    MalformedClose(usize),
    /// The error or resize payload was not the JSON it must be.
    #[error("malformed {stream} payload: {reason}")]
    MalformedJson {
        /// Which stream carried it.
        stream: &'static str,
        /// serde_json's description.
        reason: String,
    },
}

/// The resize payload; Go's field names, hence the capitals.
#[derive(Serialize, Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

impl Frame {
    /// The message bytes: stream id, then payload.
    pub fn encode(&self) -> Vec<u8> {
        let (id, payload): (u8, Vec<u8>) = match self {
            Frame::Stdin(b) => (STDIN, b.to_vec()),
            Frame::Stdout(b) => (STDOUT, b.to_vec()),
            Frame::Stderr(b) => (STDERR, b.to_vec()),
            // Serialising a Value cannot fail (its map keys are strings).
            Frame::Error(v) => (ERROR, serde_json::to_vec(v).unwrap_or_default()),
            Frame::Resize { width, height } => (
                RESIZE,
                serde_json::to_vec(&TerminalSize {
                    width: *width,
                    height: *height,
                })
                .unwrap_or_default(),
            ),
            Frame::Close(stream) => (CLOSE, vec![*stream]),
        };
        let mut out = Vec::with_capacity(1 + payload.len());
        out.push(id);
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes one binary message under `protocol` (which decides whether close exists).
    pub fn decode(message: &[u8], protocol: Protocol) -> Result<Frame, ChannelError> {
        let (&id, payload) = message.split_first().ok_or(ChannelError::Empty)?;
        let bytes = || Bytes::copy_from_slice(payload);
        match id {
            STDIN => Ok(Frame::Stdin(bytes())),
            STDOUT => Ok(Frame::Stdout(bytes())),
            STDERR => Ok(Frame::Stderr(bytes())),
            ERROR => serde_json::from_slice(payload)
                .map(Frame::Error)
                .map_err(|e| ChannelError::MalformedJson {
                    stream: "error",
                    reason: e.to_string(),
                }),
            RESIZE => serde_json::from_slice::<TerminalSize>(payload)
                .map(|s| Frame::Resize {
                    width: s.width,
                    height: s.height,
                })
                .map_err(|e| ChannelError::MalformedJson {
                    stream: "resize",
                    reason: e.to_string(),
                }),
            CLOSE if protocol.supports_close() => match payload {
                [stream] => Ok(Frame::Close(*stream)),
                _ => Err(ChannelError::MalformedClose(message.len())),
            },
            other => Err(ChannelError::UnknownStream(other)),
        }
    }
}

/// The `metav1.Status` to send on the error stream when the command exits with `code`.
///
/// client-go (`remotecommand` errorDecoderV4, used by v4 and v5) returns success when `status`
/// is `Success`; otherwise, when `reason` is `NonZeroExitCode`, it looks for the cause whose
/// `reason` is `ExitCode` and parses its `message` as the code (as a uint8, so only 1..=255 make
/// kubectl exit with that code), printing `command terminated with exit code N`. The message
/// follows the kubelet's wording, naming the command.
pub fn exit_status(code: i32, command: &[&str]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// Splits a channel message into its channel number and payload, for layouts other than
/// remotecommand's (kube-rs port-forward). `None` for an empty message.
pub fn split_channel(message: &[u8]) -> Option<(u8, &[u8])> {
    message.split_first().map(|(c, rest)| (*c, rest))
}

/// The (data, error) channels of the port at `index` in kube-rs's WebSocket port-forward, or
/// `None` when the index does not fit in a channel byte.
pub fn port_forward_channels(index: usize) -> Option<(u8, u8)> {
    let data = u8::try_from(index.checked_mul(2)?).ok()?;
    Some((data, data.checked_add(1)?))
}

/// The first message the server sends on each port-forward channel: the channel byte, then the
/// port, little-endian (kube-rs rejects anything but exactly these 3 bytes).
pub fn port_prefix(channel: u8, port: u16) -> [u8; 3] {
    let [lo, hi] = port.to_le_bytes();
    [channel, lo, hi]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            Frame::Stdin(Bytes::from_static(b"ls\n")),
            Frame::Stdout(Bytes::from_static(b"hi\n")),
            Frame::Stderr(Bytes::new()),
            Frame::Error(exit_status(3, &["sh", "-c", "exit 3"])),
            Frame::Resize {
                width: 80,
                height: 24,
            },
            Frame::Close(STDIN),
        ];
        for f in frames {
            assert_eq!(Frame::decode(&f.encode(), Protocol::V5Channel), Ok(f));
        }
    }

    #[test]
    fn exact_bytes_of_simple_frames() {
        assert_eq!(Frame::Stdout(Bytes::from_static(b"hi")).encode(), b"\x01hi");
        assert_eq!(Frame::Close(0).encode(), [0xff, 0]);
        assert_eq!(
            Frame::Resize {
                width: 0,
                height: 0
            }
            .encode(),
            b"\x04{\"Width\":0,\"Height\":0}"
        );
        // What kubectl -it sent (kubectl-wire.md §3.7).
        assert_eq!(
            Frame::decode(b"\x04{\"Width\":120,\"Height\":40}", Protocol::V5Channel),
            Ok(Frame::Resize {
                width: 120,
                height: 40
            })
        );
    }

    #[test]
    fn success_status_is_exactly_what_kubectl_reads() {
        assert_eq!(
            Frame::Error(exit_status(0, &["true"])).encode(),
            b"\x03{\"metadata\":{},\"status\":\"Success\"}"
        );
    }

    #[test]
    fn exit_code_status_has_the_fields_client_go_parses() {
        let want: Value = serde_json::from_str(
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
        )
        .expect("literal");
        let got = exit_status(3, &["sh", "-c", "exit 3"]);
        assert_eq!(got, want);
        // The encoded message is the stream id and that JSON (key order is serde_json's;
        // client-go decodes by name).
        let wire = Frame::Error(got).encode();
        assert_eq!(wire[0], ERROR);
        assert_eq!(
            serde_json::from_slice::<Value>(&wire[1..]).expect("json"),
            want
        );
    }

    #[test]
    fn close_is_v5_only_and_exactly_two_bytes() {
        assert_eq!(
            Frame::decode(&[0xff, 0], Protocol::V4Channel),
            Err(ChannelError::UnknownStream(0xff))
        );
        assert_eq!(
            Frame::decode(&[0xff], Protocol::V5Channel),
            Err(ChannelError::MalformedClose(1))
        );
        assert_eq!(
            Frame::decode(&[0xff, 0, 0], Protocol::V5Channel),
            Err(ChannelError::MalformedClose(3))
        );
        assert_eq!(
            Frame::decode(&[], Protocol::V5Channel),
            Err(ChannelError::Empty)
        );
        assert_eq!(
            Frame::decode(&[7, 1], Protocol::V5Channel),
            Err(ChannelError::UnknownStream(7))
        );
        assert!(matches!(
            Frame::decode(b"\x04{\"Width\":-1}", Protocol::V5Channel),
            Err(ChannelError::MalformedJson {
                stream: "resize",
                ..
            })
        ));
    }

    #[test]
    fn negotiation_prefers_the_server_order() {
        use Endpoint::*;
        assert_eq!(
            negotiate(RemoteCommand, ["v5.channel.k8s.io"]),
            Some(Protocol::V5Channel)
        );
        assert_eq!(
            negotiate(RemoteCommand, ["v4.channel.k8s.io, v5.channel.k8s.io"]),
            Some(Protocol::V5Channel)
        );
        assert_eq!(
            negotiate(RemoteCommand, ["channel.k8s.io", "v4.channel.k8s.io"]),
            Some(Protocol::V4Channel)
        );
        assert_eq!(negotiate(RemoteCommand, ["base64.channel.k8s.io"]), None);
        assert_eq!(
            negotiate(RemoteCommand, ["SPDY/3.1+portforward.k8s.io"]),
            None
        );
        assert_eq!(
            negotiate(PortForward, ["SPDY/3.1+portforward.k8s.io"]),
            Some(Protocol::SpdyPortForward)
        );
        // kube-rs offers its exec list for port-forward too.
        assert_eq!(
            negotiate(PortForward, ["v5.channel.k8s.io, v4.channel.k8s.io"]),
            Some(Protocol::V4Channel)
        );
        assert_eq!(negotiate(PortForward, [] as [&str; 0]), None);
    }

    #[test]
    fn port_forward_layout() {
        assert_eq!(port_forward_channels(0), Some((0, 1)));
        assert_eq!(port_forward_channels(3), Some((6, 7)));
        assert_eq!(port_forward_channels(127), Some((254, 255)));
        assert_eq!(port_forward_channels(128), None);
        assert_eq!(port_forward_channels(usize::MAX), None);
        assert_eq!(port_prefix(2, 8080), [2, 0x90, 0x1f]);
        assert_eq!(split_channel(&[3, 9]), Some((3, &[9u8][..])));
        assert_eq!(split_channel(&[]), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Frame::decode(&bytes, Protocol::V5Channel);
            let _ = Frame::decode(&bytes, Protocol::V4Channel);
        }

        #[test]
        fn byte_streams_round_trip(id in 0u8..3, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let data = Bytes::from(data);
            let f = match id { 0 => Frame::Stdin(data), 1 => Frame::Stdout(data), _ => Frame::Stderr(data) };
            prop_assert_eq!(Frame::decode(&f.encode(), Protocol::V4Channel), Ok(f));
        }
    }
}
