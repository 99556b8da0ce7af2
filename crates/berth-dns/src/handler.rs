//! One request in, one response out: decoding with hickory-server's request type, the
//! [`Index`](crate::Index) lookup or the forwarder, and encoding with hickory-server's
//! response builder (which truncates to what the client can take over UDP and sets TC).
//!
//! Answering is split in two so the UDP loop never waits on an upstream: [`Handler::start`]
//! is synchronous and answers everything the index can; only a forward (or an ExternalName
//! whose target is outside the domain) comes back as [`Step::Upstream`], which the caller
//! finishes with [`Handler::finish`] on a task of its own.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use crate::Records;
use crate::forward::Forwarder;
use crate::lookup::{Answer, Outcome};

/// The EDNS buffer size this server advertises, and the most it sends over UDP.
const UDP_PAYLOAD: u16 = 1232;

/// Answers requests from the published index, forwarding what is not ours.
pub(crate) struct Handler {
    pub(crate) records: Records,
    pub(crate) forwarder: Forwarder,
}

/// Where a request stands after [`Handler::start`].
pub(crate) enum Step {
    /// The encoded response, ready to send.
    Done(Vec<u8>),
    /// An upstream has to be asked first.
    Upstream(Box<Pending>),
}

/// A request waiting on an upstream.
pub(crate) struct Pending {
    request: Request,
    wait: Wait,
}

enum Wait {
    /// The whole question goes upstream.
    Forward,
    /// The index answered with a CNAME whose target's records are upstream's.
    Chase { answer: Box<Answer>, target: Name },
}

impl Handler {
    /// Answers `raw` from `src` if the index can; `None` when nothing should be sent back (not
    /// a DNS query at all, or a response, which is never answered, against reflection).
    pub(crate) fn start(&self, raw: Vec<u8>, src: SocketAddr, protocol: Protocol) -> Option<Step> {
        let header = Header::read(&mut BinDecoder::new(&raw)).ok()?;
        if header.metadata.message_type != MessageType::Query {
            return None;
        }
        let request = match Request::from_bytes(raw, src, protocol) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%src, %error, "undecodable DNS request");
                return Some(Step::Done(format_error(&header.metadata)));
            }
        };
        if request.metadata.op_code != OpCode::Query {
            return Some(Step::Done(error(&request, ResponseCode::NotImp)));
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Some(Step::Done(error(&request, ResponseCode::BADVERS)));
        }
        let [query] = request.queries.queries() else {
            return Some(Step::Done(error(&request, ResponseCode::FormErr)));
        };
        let index = self.records.current();
        match index.lookup_lower(query.name(), query.original().name(), query.query_type()) {
            Outcome::Refused => Some(Step::Done(error(&request, ResponseCode::Refused))),
            Outcome::Forward => Some(Step::Upstream(Box::new(Pending {
                request,
                wait: Wait::Forward,
            }))),
            Outcome::Answer(mut answer) => match answer.chase.take() {
                None => Some(Step::Done(local(&request, &answer))),
                Some(target) => Some(Step::Upstream(Box::new(Pending {
                    request,
                    wait: Wait::Chase {
                        answer: Box::new(answer),
                        target,
                    },
                }))),
            },
        }
    }

    /// Asks the upstream a pending request needs and returns the encoded response.
    pub(crate) async fn finish(&self, pending: Box<Pending>) -> Vec<u8> {
        let Pending { request, wait } = *pending;
        let [query] = request.queries.queries() else {
            unreachable!("start only lets single questions through");
        };
        let tcp = request.protocol() == Protocol::Tcp;
        match wait {
            Wait::Forward => {
                let original = query.original();
                let reply = self
                    .forwarder
                    .forward(
                        original.name(),
                        original.query_type(),
                        original.query_class(),
                        tcp,
                    )
                    .await;
                match reply {
                    Ok(reply) => {
                        let mut metadata = Metadata::response_from_request(&request.metadata);
                        metadata.response_code = reply.metadata.response_code;
                        metadata.truncation = reply.metadata.truncation;
                        metadata.recursion_available = true;
                        encode(
                            &request,
                            metadata,
                            &reply.answers,
                            &reply.authorities,
                            &reply.additionals,
                        )
                    }
                    Err(e) => {
                        tracing::debug!(name = %original.name(), error = %e, "forwarding failed");
                        error(&request, ResponseCode::ServFail)
                    }
                }
            }
            Wait::Chase { mut answer, target } => {
                let reply = self
                    .forwarder
                    .forward(&target, query.query_type(), query.query_class(), tcp)
                    .await;
                match reply {
                    Ok(reply) if reply.metadata.response_code == ResponseCode::NoError => {
                        answer.answers.extend(reply.answers);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%target, error = %e, "following a CNAME failed"),
                }
                local(&request, &answer)
            }
        }
    }
}

/// The response for an answer from the index: authoritative, with recursion available (the
/// server forwards everything else).
fn local(request: &Request, answer: &Answer) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    metadata.recursion_available = true;
    metadata.response_code = answer.code;
    encode(
        request,
        metadata,
        &answer.answers,
        &answer.authorities,
        &answer.additionals,
    )
}

fn error(request: &Request, code: ResponseCode) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    metadata.recursion_available = true;
    encode(request, metadata, &[], &[], &[])
}

/// FORMERR for a request whose header is all that could be read.
fn format_error(request: &Metadata) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = ResponseCode::FormErr;
    let no_queries = Queries::read(&mut BinDecoder::new(&[]), 0).expect("zero queries");
    let response =
        MessageResponseBuilder::new(&no_queries, None).build(metadata, &[], &[], &[], &[]);
    emit(response, 512, request.id)
}

/// Encodes a response to `request`: with an EDNS record when the request had one, and, over
/// UDP, no larger than the client can take (the rest cut, TC set).
fn encode(
    request: &Request,
    metadata: Metadata,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
) -> Vec<u8> {
    let edns = request.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        edns.set_version(0);
        edns
    });
    let max_size = match request.protocol() {
        Protocol::Udp => request.max_payload().min(UDP_PAYLOAD),
        _ => u16::MAX,
    };
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        metadata,
        answers,
        authorities,
        &[],
        additionals,
    );
    emit(response, max_size, request.metadata.id)
}

fn emit<'q, 'a>(
    response: hickory_server::zone_handler::MessageResponse<
        'q,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max_size: u16,
    id: u16,
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    match response.destructive_emit(&mut encoder) {
        Ok(_) => bytes,
        Err(error) => {
            tracing::warn!(%error, "encoding a DNS response failed");
            let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            let mut bytes = Vec::with_capacity(12);
            let header = Header {
                metadata,
                counts: hickory_proto::op::HeaderCounts::default(),
            };
            let mut encoder = BinEncoder::new(&mut bytes);
            match hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut encoder) {
                Ok(()) => bytes,
                Err(_) => Vec::new(),
            }
        }
    }
}
