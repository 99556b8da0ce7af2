//! The server side of SPDY port-forward (`kubectl port-forward`) as a sans-I/O state machine.
//!
//! This module owns the stream bookkeeping the kubelet's `portforward/httpstream.go` does: each
//! forwarded TCP connection arrives as two SYN_STREAMs carrying `streamType` (`error` or
//! `data`), `port` and `requestID`; they are paired by request id, each is answered with a
//! SYN_REPLY, and once both are there the caller is told to dial the port. It does not dial,
//! read sockets or time anything out: the caller feeds the bytes from the WebSocket into
//! [`Server::receive`], acts on the [`Event`]s, and writes [`Server::take_output`] back.
//!
//! Flow control is not done, as spdystream does not: kubectl never waits for WINDOW_UPDATE.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::spdy::{self, Decoder, Encoder, Frame, SpdyError};

/// Data frames this server writes are at most this large, so one connection's burst does not
/// hold up the others' frames for long.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;

/// What the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Both streams of a forwarded connection are open: dial `port` in the pod.
    Open {
        /// The client's id for this connection.
        request_id: String,
        /// The pod port to connect to.
        port: u16,
    },
    /// Bytes from the client for the pod.
    Data {
        /// Which connection.
        request_id: String,
        /// The bytes.
        bytes: Bytes,
    },
    /// The client will send no more on this connection (half close: shut down the write side
    /// towards the pod, keep sending its replies).
    Closed {
        /// Which connection.
        request_id: String,
    },
    /// The client abandoned the connection (RST_STREAM); drop it.
    Reset {
        /// Which connection.
        request_id: String,
    },
    /// The client will open no more connections.
    GoAway,
}

/// Why the SPDY session failed; the WebSocket should be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortForwardError {
    /// The byte stream was not valid SPDY/3.1.
    #[error(transparent)]
    Spdy(#[from] SpdyError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamType {
    Error,
    Data,
}

#[derive(Default)]
struct Request {
    port: Option<u16>,
    error_stream: Option<u32>,
    data_stream: Option<u32>,
    /// The server has FINed its side of both streams.
    server_closed: bool,
    /// The client has FINed the data stream.
    client_closed: bool,
}

/// One port-forward session: everything tunnelled through one WebSocket.
#[derive(Default)]
pub struct Server {
    decoder: Decoder,
    encoder: Encoder,
    input: BytesMut,
    output: BytesMut,
    requests: HashMap<String, Request>,
    streams: HashMap<u32, (String, StreamType)>,
}

impl Server {
    /// A session for a freshly upgraded connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes from the client (one WebSocket binary message; it need not hold whole
    /// frames) and returns what happened. Replies (SYN_REPLY, PING echoes, RST_STREAM for
    /// streams it refuses) are queued for [`Server::take_output`].
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Event>, PortForwardError> {
        self.input.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(frame) = self.decoder.decode(&mut self.input)? {
            self.handle(frame, &mut events)?;
        }
        Ok(events)
    }

    /// Bytes to send to the client, in order; empty when there is nothing.
    pub fn take_output(&mut self) -> Bytes {
        self.output.split().freeze()
    }

    /// Queues bytes from the pod for the client. Unknown or closed connections are ignored,
    /// because the client may have reset the connection while the pod was still answering.
    pub fn send_data(
        &mut self,
        request_id: &str,
        mut bytes: Bytes,
    ) -> Result<(), PortForwardError> {
        let Some(stream_id) = self
            .requests
            .get(request_id)
            .filter(|r| !r.server_closed)
            .and_then(|r| r.data_stream)
        else {
            return Ok(());
        };
        while !bytes.is_empty() {
            let chunk = bytes.split_to(bytes.len().min(MAX_DATA_CHUNK));
            self.write(Frame::Data {
                stream_id,
                fin: false,
                data: chunk,
            })?;
        }
        Ok(())
    }

    /// Ends the connection from the pod's side: FIN on the data stream, and FIN on the error
    /// stream carrying `error` if there is one (kubectl prints it and waits for this FIN).
    pub fn close(&mut self, request_id: &str, error: Option<&str>) -> Result<(), PortForwardError> {
        let Some(request) = self.requests.get_mut(request_id) else {
            return Ok(());
        };
        if request.server_closed {
            return Ok(());
        }
        request.server_closed = true;
        let (data, err) = (request.data_stream, request.error_stream);
        let finished = request.client_closed;
        if let Some(stream_id) = err {
            self.write(Frame::Data {
                stream_id,
                fin: true,
                data: Bytes::copy_from_slice(error.unwrap_or_default().as_bytes()),
            })?;
        }
        if let Some(stream_id) = data {
            self.write(Frame::Data {
                stream_id,
                fin: true,
                data: Bytes::new(),
            })?;
        }
        if finished {
            self.forget(request_id);
        }
        Ok(())
    }

    /// Request ids of the connections still tracked.
    pub fn open_requests(&self) -> impl Iterator<Item = &str> {
        self.requests.keys().map(String::as_str)
    }

    fn write(&mut self, frame: Frame) -> Result<(), PortForwardError> {
        self.encoder.encode(&frame, &mut self.output)?;
        Ok(())
    }

    fn forget(&mut self, request_id: &str) {
        if let Some(r) = self.requests.remove(request_id) {
            for id in [r.error_stream, r.data_stream].into_iter().flatten() {
                self.streams.remove(&id);
            }
        }
    }

    fn handle(&mut self, frame: Frame, events: &mut Vec<Event>) -> Result<(), PortForwardError> {
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => self.open_stream(stream_id, &headers, events)?,
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let Some((request_id, kind)) = self.streams.get(&stream_id).cloned() else {
                    // Late data for a stream already forgotten; nothing to deliver it to.
                    return Ok(());
                };
                // The client sends nothing but a FIN on the error stream.
                if kind == StreamType::Data {
                    if !data.is_empty() {
                        events.push(Event::Data {
                            request_id: request_id.clone(),
                            bytes: data,
                        });
                    }
                    if fin {
                        events.push(Event::Closed {
                            request_id: request_id.clone(),
                        });
                        if let Some(r) = self.requests.get_mut(&request_id) {
                            r.client_closed = true;
                            if r.server_closed {
                                self.forget(&request_id);
                            }
                        }
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some((request_id, _)) = self.streams.get(&stream_id).cloned() {
                    self.forget(&request_id);
                    events.push(Event::Reset { request_id });
                }
            }
            Frame::Ping { id } => self.write(Frame::Ping { id })?,
            Frame::GoAway { .. } => events.push(Event::GoAway),
            // Ignored as spdystream ignores them: no flow control, no settings to honour, and
            // the client never sends these on port-forward streams.
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. } => {}
        }
        Ok(())
    }

    fn open_stream(
        &mut self,
        stream_id: u32,
        headers: &spdy::Headers,
        events: &mut Vec<Event>,
    ) -> Result<(), PortForwardError> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let kind = match get("streamType") {
            Some("error") => Some(StreamType::Error),
            Some("data") => Some(StreamType::Data),
            _ => None,
        };
        let port = get("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0);
        let (Some(kind), Some(port)) = (kind, port) else {
            return self.refuse(stream_id);
        };
        if self.streams.contains_key(&stream_id) {
            return self.refuse(stream_id);
        }
        // Clients older than requestID pair streams by id: error stream n, data stream n+2
        // (the kubelet's httpstream.go does the same).
        let request_id = match get("requestID") {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => match kind {
                StreamType::Error => stream_id.to_string(),
                StreamType::Data => stream_id.saturating_sub(2).to_string(),
            },
        };
        let request = self.requests.entry(request_id.clone()).or_default();
        let slot = match kind {
            StreamType::Error => &mut request.error_stream,
            StreamType::Data => &mut request.data_stream,
        };
        if slot.is_some() || request.port.is_some_and(|p| p != port) {
            return self.refuse(stream_id);
        }
        *slot = Some(stream_id);
        request.port = Some(port);
        let open = request.error_stream.is_some() && request.data_stream.is_some();
        self.streams.insert(stream_id, (request_id.clone(), kind));
        // The client's CreateStream blocks until this reply.
        self.write(Frame::SynReply {
            stream_id,
            flags: 0,
            headers: Vec::new(),
        })?;
        if open {
            events.push(Event::Open { request_id, port });
        }
        Ok(())
    }

    fn refuse(&mut self, stream_id: u32) -> Result<(), PortForwardError> {
        self.write(Frame::RstStream {
            stream_id,
            status: spdy::rst::PROTOCOL_ERROR,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client half of the session, built from the same codec.
    struct Client {
        encoder: Encoder,
        decoder: Decoder,
        input: BytesMut,
    }

    impl Client {
        fn new() -> Self {
            Client {
                encoder: Encoder::new(),
                decoder: Decoder::new(),
                input: BytesMut::new(),
            }
        }

        fn send(&mut self, frame: Frame) -> Vec<u8> {
            let mut out = BytesMut::new();
            self.encoder.encode(&frame, &mut out).expect("encode");
            out.to_vec()
        }

        fn syn(
            &mut self,
            stream_id: u32,
            kind: &str,
            port: &str,
            request_id: Option<&str>,
        ) -> Vec<u8> {
            let mut headers = vec![
                ("port".to_string(), port.to_string()),
                ("streamtype".to_string(), kind.to_string()),
            ];
            if let Some(id) = request_id {
                headers.push(("requestid".to_string(), id.to_string()));
            }
            self.send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers,
            })
        }

        fn read(&mut self, bytes: Bytes) -> Vec<Frame> {
            self.input.extend_from_slice(&bytes);
            let mut frames = Vec::new();
            while let Some(f) = self.decoder.decode(&mut self.input).expect("decode") {
                frames.push(f);
            }
            frames
        }
    }

    fn reply(stream_id: u32) -> Frame {
        Frame::SynReply {
            stream_id,
            flags: 0,
            headers: vec![],
        }
    }

    fn open(server: &mut Server, client: &mut Client, request_id: &str, error: u32, data: u32) {
        let syn = client.syn(error, "error", "80", Some(request_id));
        assert_eq!(server.receive(&syn), Ok(vec![]));
        assert_eq!(client.read(server.take_output()), [reply(error)]);
        let syn = client.syn(data, "data", "80", Some(request_id));
        assert_eq!(
            server.receive(&syn),
            Ok(vec![Event::Open {
                request_id: request_id.into(),
                port: 80
            }])
        );
        assert_eq!(client.read(server.take_output()), [reply(data)]);
    }

    #[test]
    fn a_forwarded_connection_from_open_to_close() {
        let mut server = Server::new();
        let mut client = Client::new();
        open(&mut server, &mut client, "0", 1, 3);
        // kubectl FINs the error stream at once; that is not the connection closing.
        let fin = client.send(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        });
        assert_eq!(server.receive(&fin), Ok(vec![]));

        let get = client.send(Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"GET /"),
        });
        // Split across two messages, as the WebSocket tunnel may.
        assert_eq!(server.receive(&get[..5]), Ok(vec![]));
        assert_eq!(
            server.receive(&get[5..]),
            Ok(vec![Event::Data {
                request_id: "0".into(),
                bytes: Bytes::from_static(b"GET /")
            }])
        );

        server
            .send_data("0", Bytes::from(vec![b'x'; MAX_DATA_CHUNK + 1]))
            .expect("send");
        let frames = client.read(server.take_output());
        assert_eq!(frames.len(), 2);
        assert!(
            matches!(&frames[1], Frame::Data { stream_id: 3, fin: false, data } if data.len() == 1)
        );

        let fin = client.send(Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::new(),
        });
        assert_eq!(
            server.receive(&fin),
            Ok(vec![Event::Closed {
                request_id: "0".into()
            }])
        );
        server.close("0", None).expect("close");
        assert_eq!(
            client.read(server.take_output()),
            [
                Frame::Data {
                    stream_id: 1,
                    fin: true,
                    data: Bytes::new()
                },
                Frame::Data {
                    stream_id: 3,
                    fin: true,
                    data: Bytes::new()
                },
            ]
        );
        assert_eq!(server.open_requests().count(), 0);
    }

    #[test]
    fn errors_go_on_the_error_stream_and_reset_forgets() {
        let mut server = Server::new();
        let mut client = Client::new();
        open(&mut server, &mut client, "7", 5, 7);
        server
            .close("7", Some("dial tcp 127.0.0.1:80: connection refused"))
            .expect("close");
        let frames = client.read(server.take_output());
        assert!(
            matches!(&frames[0], Frame::Data { stream_id: 5, fin: true, data } if data.starts_with(b"dial tcp"))
        );
        // After the server closed, data for the pod is dropped.
        server
            .send_data("7", Bytes::from_static(b"late"))
            .expect("send");
        assert!(server.take_output().is_empty());
        let rst = client.send(Frame::RstStream {
            stream_id: 7,
            status: spdy::rst::CANCEL,
        });
        assert_eq!(
            server.receive(&rst),
            Ok(vec![Event::Reset {
                request_id: "7".into()
            }])
        );
        assert_eq!(server.open_requests().count(), 0);
    }

    #[test]
    fn pings_are_echoed_and_goaway_reported() {
        let mut server = Server::new();
        let mut client = Client::new();
        let mut bytes = client.send(Frame::Ping { id: 1 });
        bytes.extend(client.send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        }));
        assert_eq!(server.receive(&bytes), Ok(vec![Event::GoAway]));
        assert_eq!(client.read(server.take_output()), [Frame::Ping { id: 1 }]);
    }

    #[test]
    fn streams_without_request_id_pair_by_stream_id() {
        let mut server = Server::new();
        let mut client = Client::new();
        let syn = client.syn(1, "error", "8080", None);
        assert_eq!(server.receive(&syn), Ok(vec![]));
        let syn = client.syn(3, "data", "8080", None);
        assert_eq!(
            server.receive(&syn),
            Ok(vec![Event::Open {
                request_id: "1".into(),
                port: 8080
            }])
        );
    }

    #[test]
    fn bad_streams_are_refused() {
        let mut server = Server::new();
        let mut client = Client::new();
        let refused = |stream_id| Frame::RstStream {
            stream_id,
            status: spdy::rst::PROTOCOL_ERROR,
        };
        for (id, kind, port) in [(1, "stdin", "80"), (3, "data", "0"), (5, "data", "http")] {
            let syn = client.syn(id, kind, port, Some("r"));
            assert_eq!(server.receive(&syn), Ok(vec![]));
            assert_eq!(client.read(server.take_output()), [refused(id)]);
        }
        // A second data stream for one request, or a different port, is refused too.
        open(&mut server, &mut client, "a", 7, 9);
        let syn = client.syn(11, "data", "80", Some("a"));
        assert_eq!(server.receive(&syn), Ok(vec![]));
        assert_eq!(client.read(server.take_output()), [refused(11)]);
        let syn = client.syn(13, "error", "81", Some("b"));
        server.receive(&syn).expect("receive");
        let syn = client.syn(15, "data", "82", Some("b"));
        server.receive(&syn).expect("receive");
        assert_eq!(client.read(server.take_output()), [reply(13), refused(15)]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut server = Server::new();
        assert!(matches!(
            server.receive(&[0x80, 0x02, 0, 1, 0, 0, 0, 0]),
            Err(PortForwardError::Spdy(SpdyError::UnsupportedVersion(2)))
        ));
    }
}
