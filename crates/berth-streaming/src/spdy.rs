//! A SPDY/3.1 framing codec, enough for `kubectl port-forward` (no SPDY crate exists).
//!
//! This module owns the frame layout and the header compression; it knows nothing of streams'
//! meaning ([`crate::portforward`] does). Layout, as in moby/spdystream `spdy/`:
//!
//! - control frame: `1|version=3 (15 bits)|type (16)|flags (8)|length (24)|payload`;
//! - data frame: `0|stream id (31 bits)|flags (8, FIN=1)|length (24)|data`.
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a u32 count of u32-length-prefixed name and
//! value pairs (several values of one name are NUL-separated), compressed with zlib primed with
//! the SPDY/3 dictionary. The zlib stream is one per direction per connection and every block
//! ends with a sync flush, so a [`Decoder`] and an [`Encoder`] each own one context and must
//! see every frame of their direction, in order. After any [`SpdyError`] the connection is
//! unusable: the compression context may be out of step with the peer's.
//!
//! kubectl tunnels these bytes through WebSocket messages that do not align with frames, so the
//! decoder is incremental: it takes what has arrived and returns a frame only once all of it has.

mod dictionary;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use dictionary::DICTIONARY;

/// The only SPDY version kubectl speaks.
pub const VERSION: u16 = 3;
/// FIN on a data or control frame: the sender's half of the stream is done.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM's UNIDIRECTIONAL flag.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest payload a 24-bit length can describe.
pub const MAX_FRAME_LENGTH: usize = (1 << 24) - 1;
/// The most a header block may inflate to; it bounds what a hostile peer's zlib bomb costs.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (SPDY/3 §2.4.2) that port-forward uses.
pub mod rst {
    /// A malformed frame or stream.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// A frame for a stream that is not open.
    pub const INVALID_STREAM: u32 = 2;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 3;
    /// The stream is no longer needed (kubectl ends a forwarded connection with it).
    pub const CANCEL: u32 = 5;
    /// The endpoint failed.
    pub const INTERNAL_ERROR: u32 = 6;
}

/// A header block: names (lowercase in SPDY/3) and values in order. A value with several parts
/// keeps SPDY's NUL separators.
pub type Headers = Vec<(String, String)>;

/// Looks a header up by (lowercase) name.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One SETTINGS entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The per-entry flags (persist value, persisted).
    pub flags: u8,
    /// The setting id (24 bits).
    pub id: u32,
    /// The value.
    pub value: u32,
}

/// One SPDY/3.1 frame. Stream ids are 31 bits; encoding masks the top bit off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream's id (odd from the client).
        stream_id: u32,
        /// For server push; 0 otherwise.
        associated_to: u32,
        /// 3-bit priority, 0 highest.
        priority: u8,
        /// Credential slot; 0.
        slot: u8,
        /// [`FLAG_FIN`] and [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// The request's headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream accepted.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The reply's headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// The stream aborted.
        stream_id: u32,
        /// Why, one of [`rst`].
        status: u32,
    },
    /// Connection settings (port-forward ignores them, as spdystream does).
    Settings {
        /// 0x01 clears persisted settings.
        flags: u8,
        /// The entries.
        entries: Vec<Setting>,
    },
    /// Liveness; the receiver echoes it back unchanged.
    Ping {
        /// Odd from the client, even from the server.
        id: u32,
    },
    /// The sender will open no more streams.
    GoAway {
        /// The last stream id the sender processed.
        last_good_stream_id: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control (port-forward ignores it, as spdystream does).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// Bytes added to the window (31 bits).
        delta: u32,
    },
    /// Stream data.
    Data {
        /// The stream.
        stream_id: u32,
        /// Whether this is the sender's last frame on the stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
}

/// What can go wrong reading or writing SPDY; all of them end the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A control frame whose payload does not fit its type.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// The frame type.
        kind: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The header block did not inflate (corrupt, or compressed without the dictionary).
    #[error("header block decompression failed: {0}")]
    Decompress(String),
    /// Header compression failed.
    #[error("header block compression failed: {0}")]
    Compress(String),
    /// The inflated header block exceeds [`MAX_HEADER_BLOCK`].
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    /// A header name or value is not UTF-8.
    #[error("header block is not UTF-8")]
    HeaderNotUtf8,
    /// A frame to encode does not fit the 24-bit length.
    #[error("frame payload of {0} bytes exceeds the 24-bit length")]
    FrameTooLarge(usize),
}

fn malformed(kind: &'static str, reason: &'static str) -> SpdyError {
    SpdyError::Malformed { kind, reason }
}

/// One direction's zlib inflate context for header blocks.
pub struct HeaderDecompressor {
    inner: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context, as at the start of a connection.
    pub fn new() -> Self {
        HeaderDecompressor {
            inner: Decompress::new(true),
        }
    }

    /// Inflates one compressed header block (ending in a sync flush) and parses it.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(block)?;
        parse_header_block(&raw)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut consumed = 0usize;
        loop {
            let before_in = self.inner.total_in();
            let before_out = self.inner.total_out();
            let result =
                self.inner
                    .decompress(&block[consumed..], &mut chunk, FlushDecompress::Sync);
            // total_in and total_out only grow, and by at most the slice lengths given.
            let read = usize::try_from(self.inner.total_in() - before_in).unwrap_or(usize::MAX);
            let wrote = usize::try_from(self.inner.total_out() - before_out).unwrap_or(usize::MAX);
            consumed = consumed.saturating_add(read).min(block.len());
            out.extend_from_slice(chunk.get(..wrote).unwrap_or(&chunk));
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlockTooLarge);
            }
            match result {
                // zlib asks for the dictionary once, after reading the stream header that names
                // it; the first block of every connection goes this way.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inner
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| SpdyError::Decompress(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Decompress(e.to_string())),
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::Decompress("zlib stream ended".into()));
                }
                Ok(_) => {
                    // Done when all input is in and the output did not fill the chunk (so
                    // nothing is left buffered inside zlib).
                    if consumed >= block.len() && wrote < chunk.len() {
                        return Ok(out);
                    }
                    if read == 0 && wrote == 0 {
                        return Err(SpdyError::Decompress("no progress".into()));
                    }
                }
            }
        }
    }
}

/// One direction's zlib deflate context for header blocks.
pub struct HeaderCompressor {
    inner: Compress,
    primed: bool,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    /// A fresh context, as at the start of a connection.
    pub fn new() -> Self {
        HeaderCompressor {
            inner: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    /// Serialises and compresses one header block, ending it with a sync flush so the peer can
    /// inflate it without waiting for more.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        if !self.primed {
            // Must precede the first deflate call, which writes the dictionary id.
            self.inner
                .set_dictionary(&DICTIONARY)
                .map_err(|e| SpdyError::Compress(e.to_string()))?;
            self.primed = true;
        }
        let raw = encode_header_block(headers)?;
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut chunk = [0u8; 4096];
        let mut consumed = 0usize;
        loop {
            let before_in = self.inner.total_in();
            let before_out = self.inner.total_out();
            self.inner
                .compress(&raw[consumed..], &mut chunk, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compress(e.to_string()))?;
            let read = usize::try_from(self.inner.total_in() - before_in).unwrap_or(usize::MAX);
            let wrote = usize::try_from(self.inner.total_out() - before_out).unwrap_or(usize::MAX);
            consumed = consumed.saturating_add(read).min(raw.len());
            out.extend_from_slice(chunk.get(..wrote).unwrap_or(&chunk));
            if consumed >= raw.len() && wrote < chunk.len() {
                return Ok(out);
            }
        }
    }
}

fn encode_header_block(headers: &Headers) -> Result<Vec<u8>, SpdyError> {
    let too_large = || SpdyError::FrameTooLarge(usize::MAX);
    let mut out = Vec::new();
    out.put_u32(u32::try_from(headers.len()).map_err(|_| too_large())?);
    for (name, value) in headers {
        for part in [name.as_bytes(), value.as_bytes()] {
            out.put_u32(u32::try_from(part.len()).map_err(|_| too_large())?);
            out.put_slice(part);
        }
    }
    Ok(out)
}

fn parse_header_block(mut raw: &[u8]) -> Result<Headers, SpdyError> {
    let bad = |reason| malformed("header block", reason);
    if raw.remaining() < 4 {
        return Err(bad("truncated count"));
    }
    let count = raw.get_u32();
    // Each pair needs at least 8 bytes, so a larger count is a lie; checking first keeps a
    // hostile count from reserving memory.
    if u64::from(count) * 8 > raw.remaining() as u64 {
        return Err(bad("count exceeds block"));
    }
    let mut headers = Vec::with_capacity(count as usize);
    let take = |raw: &mut &[u8]| -> Result<String, SpdyError> {
        if raw.remaining() < 4 {
            return Err(bad("truncated length"));
        }
        let len = raw.get_u32() as usize;
        if raw.remaining() < len {
            return Err(bad("truncated string"));
        }
        let (s, rest) = raw.split_at(len);
        *raw = rest;
        String::from_utf8(s.to_vec()).map_err(|_| SpdyError::HeaderNotUtf8)
    };
    for _ in 0..count {
        let name = take(&mut raw)?;
        let value = take(&mut raw)?;
        headers.push((name, value));
    }
    if raw.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(headers)
}

/// Reads frames from one direction of a connection.
#[derive(Default)]
pub struct Decoder {
    headers: HeaderDecompressor,
}

impl Decoder {
    /// A decoder for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next whole frame off the front of `buf`, or `Ok(None)` when `buf` does not yet
    /// hold one (it is left untouched then; append more and call again). Control frames of
    /// unknown types are skipped, as SPDY/3 §2.2.1 requires.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        loop {
            let Some(head) = buf.get(..8) else {
                return Ok(None);
            };
            let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let flags = head[4];
            let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            if buf.len() < 8 + length {
                return Ok(None);
            }
            buf.advance(8);
            let payload = buf.split_to(length).freeze();
            if first & 0x8000_0000 == 0 {
                return Ok(Some(Frame::Data {
                    stream_id: first,
                    fin: flags & FLAG_FIN != 0,
                    data: payload,
                }));
            }
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(SpdyError::UnsupportedVersion(version));
            }
            let kind = (first & 0xffff) as u16;
            if let Some(frame) = self.control(kind, flags, payload)? {
                return Ok(Some(frame));
            }
        }
    }

    fn control(&mut self, kind: u16, flags: u8, mut p: Bytes) -> Result<Option<Frame>, SpdyError> {
        let need = |name, n: usize, p: &Bytes| {
            if p.len() < n {
                Err(malformed(name, "payload too short"))
            } else {
                Ok(())
            }
        };
        let exact = |name, n: usize, p: &Bytes| {
            if p.len() != n {
                Err(malformed(name, "wrong payload length"))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need("SYN_STREAM", 10, &p)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    headers: self.headers.decompress(&p)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need("SYN_REPLY", 4, &p)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.headers.decompress(&p)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                exact("RST_STREAM", 8, &p)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need("SETTINGS", 4, &p)?;
                let count = p.get_u32() as usize;
                if count.checked_mul(8) != Some(p.len()) {
                    return Err(malformed("SETTINGS", "count does not match length"));
                }
                let entries = (0..count)
                    .map(|_| {
                        let flag_id = p.get_u32();
                        Setting {
                            flags: (flag_id >> 24) as u8,
                            id: flag_id & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                exact("PING", 4, &p)?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                exact("GOAWAY", 8, &p)?;
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                exact("WINDOW_UPDATE", 8, &p)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }
}

/// Writes frames for one direction of a connection.
#[derive(Default)]
pub struct Encoder {
    headers: HeaderCompressor,
}

impl Encoder {
    /// An encoder for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `frame`'s bytes to `out`. On error nothing is appended, but a failed header
    /// compression leaves the context unusable.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        let mut payload = Vec::new();
        let (kind, flags) = match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let length = frame_length(data.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(u32::from(u8::from(*fin)) << 24 | length);
                out.put_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(associated_to & 0x7fff_ffff);
                payload.put_u8((priority & 0x07) << 5);
                payload.put_u8(*slot);
                payload.extend(self.headers.compress(headers)?);
                (TYPE_SYN_STREAM, *flags)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.extend(self.headers.compress(headers)?);
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                (kind, *flags)
            }
            Frame::RstStream { stream_id, status } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(*status);
                (TYPE_RST_STREAM, 0)
            }
            Frame::Settings { flags, entries } => {
                payload.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
                for s in entries {
                    payload.put_u32(u32::from(s.flags) << 24 | (s.id & 0x00ff_ffff));
                    payload.put_u32(s.value);
                }
                (TYPE_SETTINGS, *flags)
            }
            Frame::Ping { id } => {
                payload.put_u32(*id);
                (TYPE_PING, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                payload.put_u32(last_good_stream_id & 0x7fff_ffff);
                payload.put_u32(*status);
                (TYPE_GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(delta & 0x7fff_ffff);
                (TYPE_WINDOW_UPDATE, 0)
            }
        };
        let length = frame_length(payload.len())?;
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u32(u32::from(flags) << 24 | length);
        out.put_slice(&payload);
        Ok(())
    }
}

fn frame_length(len: usize) -> Result<u32, SpdyError> {
    if len > MAX_FRAME_LENGTH {
        return Err(SpdyError::FrameTooLarge(len));
    }
    // Fits: checked just above.
    Ok(len as u32)
}

#[cfg(test)]
mod tests;
