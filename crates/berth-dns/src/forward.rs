//! Forwarding names outside the cluster domain to the host's resolvers, as CoreDNS's
//! `forward . /etc/resolv.conf`.
//!
//! Each forwarded question is asked afresh (a new query with a random id from a new socket,
//! so a new source port, and a 1232-byte EDNS buffer), and the reply is checked against it
//! (id and question) before it is believed. Upstreams are tried in the order the resolver
//! configuration lists them until one answers; any answer, SERVFAIL included, is passed on
//! (CoreDNS's forward plugin does the same). A client that asked over TCP is forwarded over
//! TCP; a truncated UDP reply is passed on truncated, so the client retries over TCP.
//!
//! The server must never forward to itself: an upstream that is this server's own address
//! and port (or any address of this host, when it listens on a wildcard address) is left out.
//! A loop through another resolver (the host's resolver forwarding back to berth) is not
//! visible that way; the cap on forwards in flight bounds what it costs.
//!
//! There is no cache: a forwarded answer is only as fast as the upstream (CoreDNS's default
//! configuration adds `cache 30`; see the crate docs).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// The EDNS buffer size asked of upstreams (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// The host's resolvers and how to ask them.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

/// Why a question could not be forwarded; the client gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers are configured")]
    NoUpstreams,
    #[error("too many forwarded queries in flight")]
    Busy,
    #[error("no upstream answered: {0}")]
    Failed(String),
}

impl Forwarder {
    /// Forwards to `upstreams`, except any that is `local` (this server) itself.
    pub fn new(
        upstreams: Vec<SocketAddr>,
        local: SocketAddr,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Forwarder {
        let (ourselves, upstreams): (Vec<_>, Vec<_>) = upstreams
            .into_iter()
            .partition(|upstream| is_ourselves(*upstream, local));
        for upstream in ourselves {
            tracing::warn!(%upstream, "not forwarding to this DNS server itself");
        }
        if upstreams.is_empty() {
            tracing::warn!("no upstream resolvers: names outside the cluster domain get SERVFAIL");
        }
        Forwarder {
            upstreams,
            timeout,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
    }

    /// The upstreams in use.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Asks the upstreams `name`/`qtype`/`class`, over TCP if `tcp`. The reply is returned
    /// as received, its id that of the query sent upstream.
    pub async fn forward(
        &self,
        name: &Name,
        qtype: RecordType,
        class: DNSClass,
        tcp: bool,
    ) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| ForwardError::Busy)?;
        let mut query = Query::query(name.clone(), qtype);
        query.set_query_class(class);
        let mut errors = Vec::new();
        for upstream in &self.upstreams {
            let mut message = Message::query();
            message.metadata.recursion_desired = true;
            message.add_query(query.clone());
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            message.set_edns(edns);
            let asked = if tcp {
                tokio::time::timeout(self.timeout, ask_tcp(*upstream, &message)).await
            } else {
                tokio::time::timeout(self.timeout, ask_udp(*upstream, &message)).await
            };
            match asked {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) => errors.push(format!("{upstream}: {e}")),
                Err(_) => errors.push(format!("{upstream}: timed out")),
            }
        }
        Err(ForwardError::Failed(errors.join("; ")))
    }
}

/// One UDP exchange: replies that are not the answer to `query` (wrong id or question,
/// undecodable) are ignored until the caller's timeout.
async fn ask_udp(upstream: SocketAddr, query: &Message) -> io::Result<Message> {
    let any: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).await?;
    socket.connect(upstream).await?;
    socket
        .send(&query.to_vec().map_err(io::Error::other)?)
        .await?;
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Ok(reply) = Message::from_vec(&buf[..n])
            && answers(&reply, query)
        {
            return Ok(reply);
        }
    }
}

/// One TCP exchange (two-byte length prefix each way).
async fn ask_tcp(upstream: SocketAddr, query: &Message) -> io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let bytes = query.to_vec().map_err(io::Error::other)?;
    let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf).map_err(io::Error::other)?;
    if !answers(&reply, query) {
        return Err(io::Error::other("the reply does not answer the query"));
    }
    Ok(reply)
}

/// Whether `reply` is the response to `query`: same id, a response, same question.
fn answers(reply: &Message, query: &Message) -> bool {
    reply.metadata.id == query.metadata.id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == query.queries.len()
        && reply.queries.iter().zip(&query.queries).all(|(a, b)| {
            a.name().eq_ignore_root(b.name())
                && a.query_type() == b.query_type()
                && a.query_class() == b.query_class()
        })
}

/// The `nameserver` addresses of a resolv.conf, in order, on port 53. IPv6 zone ids
/// (`fe80::1%eth0`) cannot be expressed in a `SocketAddr` without the interface index, so
/// such entries are skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The upstreams of the resolv.conf at `path`; none (with a warning) if it cannot be read.
pub fn read_resolv_conf(path: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_resolv_conf(&text),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the host's resolvers");
            Vec::new()
        }
    }
}

/// Whether `upstream` is this server, listening on `local`: the same address and port, or,
/// on a wildcard address, the same port on any address of this host.
pub fn is_ourselves(upstream: SocketAddr, local: SocketAddr) -> bool {
    if upstream.port() != local.port() {
        return false;
    }
    if upstream.ip() == local.ip() {
        return true;
    }
    local.ip().is_unspecified() && is_local_address(upstream.ip())
}

/// Whether `ip` is an address of this host: loopback, or one a socket can bind to.
fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# generated\n\
                    search example.com\n\
                    nameserver 127.0.0.53\n\
                    nameserver   2001:db8::1  \n\
                    nameserver fe80::1%eth0\n\
                    nameserver not-an-ip\n\
                    options edns0 trust-ad\n\
                    ;nameserver 9.9.9.9\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[2001:db8::1]:53".parse().unwrap()
            ]
        );
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn a_missing_resolv_conf_is_no_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_resolv_conf(&dir.path().join("missing")).is_empty());
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 10.0.0.2\n").unwrap();
        assert_eq!(
            read_resolv_conf(&path),
            vec!["10.0.0.2:53".parse().unwrap()]
        );
    }

    #[test]
    fn never_ourselves() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        // The same address and port.
        assert!(is_ourselves(at("10.96.0.10:53"), at("10.96.0.10:53")));
        assert!(!is_ourselves(at("10.96.0.10:53"), at("10.96.0.10:5353")));
        // Another address: someone else, even on this host (systemd-resolved's stub).
        assert!(!is_ourselves(at("127.0.0.53:53"), at("127.0.0.1:53")));
        assert!(!is_ourselves(at("8.8.8.8:53"), at("10.96.0.10:53")));
        // Listening everywhere: every address of this host is us, others are not.
        assert!(is_ourselves(at("127.0.0.53:53"), at("0.0.0.0:53")));
        assert!(is_ourselves(at("127.0.0.1:53"), at("[::]:53")));
        assert!(!is_ourselves(at("192.0.2.1:53"), at("0.0.0.0:53")));
    }

    #[test]
    fn ourselves_is_left_out() {
        let forwarder = Forwarder::new(
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap(),
            ],
            "127.0.0.1:5353".parse().unwrap(),
            Duration::from_secs(1),
            1,
        );
        assert_eq!(forwarder.upstreams(), &["127.0.0.53:53".parse().unwrap()]);
    }
}
