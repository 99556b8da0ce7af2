use super::*;
use proptest::prelude::*;

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// One frame of every type, with kubectl's port-forward headers where there are headers.
fn every_frame() -> Vec<Frame> {
    vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: FLAG_FIN,
            headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            priority: 7,
            slot: 0,
            flags: 0,
            headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: h(&[]),
        },
        Frame::Headers {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: h(&[("x", "a\0b")]),
        },
        Frame::RstStream {
            stream_id: 3,
            status: rst::CANCEL,
        },
        Frame::Settings {
            flags: 1,
            entries: vec![Setting {
                flags: 1,
                id: 7,
                value: 65536,
            }],
        },
        Frame::Settings {
            flags: 0,
            entries: vec![],
        },
        Frame::Ping { id: 1 },
        Frame::GoAway {
            last_good_stream_id: 5,
            status: 0,
        },
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 1 << 20,
        },
        Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
        },
        Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        },
    ]
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut enc = Encoder::new();
    let mut out = BytesMut::new();
    for f in frames {
        enc.encode(f, &mut out).expect("encode");
    }
    out
}

fn decode_all(dec: &mut Decoder, buf: &mut BytesMut) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(buf).expect("decode") {
        frames.push(f);
    }
    frames
}

#[test]
fn dictionary_is_the_spdy3_one() {
    // Its length and ends per the SPDY/3 spec §2.6.10.1, and the Adler-32 zlib writes as the
    // dictionary id into every SPDY/3 header stream (the bytes after the zlib header).
    assert_eq!(DICTIONARY.len(), 1423);
    assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
    assert_eq!(&DICTIONARY[DICTIONARY.len() - 9..], b",*,enq=0.");
    let mut d = Decompress::new(true);
    let mut out = [0u8; 16];
    // A zlib header announcing a dictionary with id e3c6a7c2, which is what Go's
    // compress/zlib writes for this dictionary (first bytes of every kubectl header block).
    let err = d
        .decompress(
            &[0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2],
            &mut out,
            FlushDecompress::Sync,
        )
        .expect_err("needs dictionary");
    assert_eq!(err.needs_dictionary(), Some(0xe3c6_a7c2));
    assert_eq!(d.set_dictionary(&DICTIONARY).ok(), Some(0xe3c6_a7c2));
}

#[test]
fn every_frame_type_round_trips() {
    let frames = every_frame();
    let mut buf = encode_all(&frames);
    let got = decode_all(&mut Decoder::new(), &mut buf);
    assert_eq!(got, frames);
    assert!(buf.is_empty());
}

#[test]
fn exact_bytes_of_fixed_frames() {
    let mut enc = Encoder::new();
    let mut out = BytesMut::new();
    enc.encode(&Frame::Ping { id: 1 }, &mut out).expect("ping");
    assert_eq!(&out[..], [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
    out.clear();
    enc.encode(
        &Frame::RstStream {
            stream_id: 3,
            status: rst::CANCEL,
        },
        &mut out,
    )
    .expect("rst");
    assert_eq!(
        &out[..],
        [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]
    );
    out.clear();
    enc.encode(
        &Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::from_static(b"hi"),
        },
        &mut out,
    )
    .expect("data");
    assert_eq!(&out[..], [0, 0, 0, 1, 1, 0, 0, 2, b'h', b'i']);
    out.clear();
    enc.encode(
        &Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        },
        &mut out,
    )
    .expect("goaway");
    assert_eq!(
        &out[..],
        [0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn syn_stream_header_starts_like_kubectls() {
    // kubectl-wire.md §3.7 saw `80 03 00 01` and a zlib block; the block opens with the zlib
    // header naming the SPDY dictionary.
    let mut out = BytesMut::new();
    Encoder::new()
        .encode(&every_frame()[0], &mut out)
        .expect("encode");
    assert_eq!(&out[..4], [0x80, 0x03, 0x00, 0x01]);
    assert_eq!(out[4], FLAG_FIN);
    assert_eq!(&out[18 + 2..18 + 6], [0xe3, 0xc6, 0xa7, 0xc2]);
}

#[test]
fn header_blocks_share_one_context_per_direction() {
    let blocks = [
        h(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ]),
        h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
        h(&[]),
        h(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "1"),
        ]),
    ];
    let mut c = HeaderCompressor::new();
    let mut d = HeaderDecompressor::new();
    let mut sizes = Vec::new();
    for b in &blocks {
        let z = c.compress(b).expect("compress");
        sizes.push(z.len());
        assert_eq!(&d.decompress(&z).expect("decompress"), b);
    }
    // The later blocks reference the earlier ones, so they are smaller than the first; that is
    // why a fresh decompressor cannot read them.
    assert!(sizes[3] < sizes[0], "{sizes:?}");
    let mut c = HeaderCompressor::new();
    let _first = c.compress(&blocks[0]).expect("compress");
    let second = c.compress(&blocks[1]).expect("compress");
    assert!(HeaderDecompressor::new().decompress(&second).is_err());
}

#[test]
fn header_block_from_another_zlib_inflates() {
    // A block deflated by a different implementation (miniz_oxide would not do; build one with
    // flate2's raw API at another level) decodes: zlib streams are interoperable.
    let raw = encode_header_block(&h(&[("port", "80")])).expect("block");
    let mut c = Compress::new(Compression::best(), true);
    c.set_dictionary(&DICTIONARY).expect("dict");
    let mut z = vec![0u8; 256];
    c.compress(&raw, &mut z, FlushCompress::Sync)
        .expect("compress");
    z.truncate(c.total_out() as usize);
    assert_eq!(
        HeaderDecompressor::new().decompress(&z),
        Ok(h(&[("port", "80")]))
    );
}

#[test]
fn large_header_blocks_and_data() {
    let big = "v".repeat(20_000);
    let frames = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: h(&[("x", &big)]),
        },
        Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![7u8; 100_000]),
        },
    ];
    let mut buf = encode_all(&frames);
    assert_eq!(decode_all(&mut Decoder::new(), &mut buf), frames);
}

#[test]
fn incomplete_input_waits_and_leaves_the_buffer() {
    let mut buf = encode_all(&every_frame()[..1]);
    let whole = buf.clone();
    let mut part = buf.split_to(whole.len() - 1);
    let mut dec = Decoder::new();
    assert_eq!(dec.decode(&mut part), Ok(None));
    assert_eq!(part.len(), whole.len() - 1);
    part.unsplit(buf);
    assert!(matches!(
        dec.decode(&mut part),
        Ok(Some(Frame::SynStream { .. }))
    ));
}

#[test]
fn malformed_frames_are_errors() {
    let mut dec = Decoder::new();
    let mut wrong_version = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
    assert_eq!(
        dec.decode(&mut wrong_version),
        Err(SpdyError::UnsupportedVersion(2))
    );
    let mut short_ping = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 1][..]);
    assert!(matches!(
        Decoder::new().decode(&mut short_ping),
        Err(SpdyError::Malformed { kind: "PING", .. })
    ));
    let mut lying_settings = BytesMut::from(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9][..]);
    assert!(matches!(
        Decoder::new().decode(&mut lying_settings),
        Err(SpdyError::Malformed {
            kind: "SETTINGS",
            ..
        })
    ));
    // An uncompressed header block is not zlib.
    let mut plain = BytesMut::from(&[0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0][..]);
    assert!(matches!(
        Decoder::new().decode(&mut plain),
        Err(SpdyError::Decompress(_))
    ));
}

#[test]
fn unknown_control_frames_are_skipped() {
    // Type 5 (SPDY/2 NOOP) with a 1-byte payload, then a PING.
    let mut buf = BytesMut::from(&[0x80, 3, 0, 5, 0, 0, 0, 1, 0xaa][..]);
    buf.extend_from_slice(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 9]);
    assert_eq!(
        Decoder::new().decode(&mut buf),
        Ok(Some(Frame::Ping { id: 9 }))
    );
}

#[test]
fn header_bombs_are_bounded() {
    let huge = "a".repeat(MAX_HEADER_BLOCK + 1);
    let z = HeaderCompressor::new()
        .compress(&h(&[("x", &huge)]))
        .expect("compress");
    assert!(z.len() < 4096, "compresses well: {}", z.len());
    assert_eq!(
        HeaderDecompressor::new().decompress(&z),
        Err(SpdyError::HeaderBlockTooLarge)
    );
}

#[test]
fn header_block_counts_cannot_reserve_memory() {
    let mut raw = Vec::new();
    raw.put_u32(u32::MAX);
    assert!(parse_header_block(&raw).is_err());
    assert_eq!(parse_header_block(&[0, 0, 0, 0]), Ok(vec![]));
    assert!(parse_header_block(&[0, 0, 0, 0, 1]).is_err());
    assert_eq!(
        parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0]),
        Err(SpdyError::HeaderNotUtf8)
    );
}

fn arb_headers() -> impl Strategy<Value = Headers> {
    proptest::collection::vec(("[a-z-]{1,12}", "[ -~]{0,20}"), 0..5)
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let id = 1u32..0x7fff_ffff;
    prop_oneof![
        (id.clone(), 0u8..8, 0u8..4, arb_headers()).prop_map(
            |(stream_id, priority, flags, headers)| {
                Frame::SynStream {
                    stream_id,
                    associated_to: 0,
                    priority,
                    slot: 0,
                    flags,
                    headers,
                }
            }
        ),
        (id.clone(), 0u8..2, arb_headers()).prop_map(|(stream_id, flags, headers)| {
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
        }),
        (id.clone(), 1u32..12)
            .prop_map(|(stream_id, status)| Frame::RstStream { stream_id, status }),
        any::<u32>().prop_map(|id| Frame::Ping { id }),
        (
            id.clone(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(stream_id, fin, data)| Frame::Data {
                stream_id,
                fin,
                data: Bytes::from(data)
            }),
        (id, 0u32..0x7fff_ffff)
            .prop_map(|(stream_id, delta)| Frame::WindowUpdate { stream_id, delta }),
    ]
}

proptest! {
    #[test]
    fn any_split_decodes_to_the_same_frames(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let bytes = encode_all(&frames).freeze();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort_unstable();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        for p in points {
            buf.extend_from_slice(&bytes[at..p]);
            at = p;
            while let Some(f) = dec.decode(&mut buf).expect("decode") {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
        let _ = HeaderDecompressor::new().decompress(&bytes);
    }

    #[test]
    fn corrupted_valid_streams_never_panic(
        frames in proptest::collection::vec(arb_frame(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_all(&frames).to_vec();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
}

/// The WebSocket messages kubectl 1.32.4 sent when a connection reached `kubectl port-forward
/// pod/x 28081:80` (captured from a fake API server): its error stream's SYN_STREAM, cut into
/// eight messages that ignore frame boundaries.
const KUBECTL_SYN_STREAM: [&str; 8] = [
    "8003",
    "0001",
    "0000003d",
    "00000001",
    "00000000",
    "00",
    "00",
    "78f9e3c6a7c202253a48f95b044aab4c16060c0c0c9c4590d8ca04a5624603703a2c294a4dcc851635aca9a08800000000ffff",
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn decodes_kubectls_syn_stream_as_it_arrives() {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for message in KUBECTL_SYN_STREAM {
        buf.extend_from_slice(&unhex(message));
        while let Some(f) = dec.decode(&mut buf).expect("decode") {
            got.push(f);
        }
    }
    assert_eq!(
        got,
        [Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: h(&[("port", "80"), ("requestid", "0"), ("streamtype", "error")]),
        }]
    );
}
