//! [`EtcdStore`]: the [`Store`] kept in an external etcd cluster (etcd's v3 API over gRPC),
//! chosen with `berth up --store etcd://host:port[,host:port…]`. This module owns the mapping
//! from the trait onto etcd, the parsed endpoint configuration ([`EtcdConfig`]) and the
//! timeouts that turn an unreachable or leaderless etcd into [`StoreError::Unavailable`].
//!
//! # Keys
//! berth's key `k` is stored as etcd key `prefix + k` (bytes of the UTF-8 string), the prefix
//! being `/berth/` unless configured, so one etcd can hold other data: every etcd key berth
//! reads, writes or watches starts with the prefix, and keys outside it are never seen. (With
//! berth's keys starting with `/`, etcdctl shows them as `/berth//registry/…`.)
//!
//! # Revisions
//! Revisions are etcd's own, unmapped: a key's `mod_revision` (the `resourceVersion`) and
//! `create_revision` are etcd's, and the current revision is etcd's header revision. etcd's
//! revision is global, so writes by other users of the same etcd advance it too; the trait only
//! promises that revisions grow, which they do. A fresh etcd starts at revision 1, as the trait
//! does. etcd gives every write of one transaction the same revision (the conformance suite
//! allows that; berth's own backends give one per write op), and rejects a transaction that
//! writes one key twice, or has more operations than the server's `--max-txn-ops` (128 by
//! default), with [`StoreError::Backend`].
//!
//! # Compaction
//! [`Store::compact`] is etcd's compact (not physical: etcd refuses older revisions as soon as
//! the compaction is applied). etcd's "required revision has been compacted" becomes
//! [`StoreError::Compacted`] and "is a future revision" [`StoreError::FutureRevision`], as the
//! SQLite backend reports them; compacting at or below the compacted revision is a no-op. etcd
//! has no call that returns the compacted revision, so the store remembers the highest one it
//! has seen (its own compactions and probes) and checks it with one cheap read at that revision
//! per [`Store::revisions`]: when that read says "compacted", someone compacted further, and a
//! probe watch from revision 1 (which etcd cancels naming the compacted revision) learns by how
//! much. (A compaction at exactly revision 1 by another client is reported as 0; reads and
//! watches behave the same either way.)
//!
//! # Timeouts and failures
//! Every etcd call is bounded by [`EtcdConfig::request_timeout`] and then fails with
//! [`StoreError::Unavailable`], which the API server answers with 503, as it does etcd's own
//! "no leader", "leader changed" and "request timed out". Connections require a leader (etcd
//! refuses requests and ends watches on a member that lost quorum instead of letting them
//! hang), HTTP/2 keepalives notice dead connections, and the client balances over every
//! endpoint. Reads are retried within the timeout when etcd was unreachable or unavailable; a
//! transaction is retried only when the connection could not be made at all (so it was never
//! sent), since a write that reached etcd may have been applied. Retrying "no leader" rides out
//! an election, but once etcd has said "no leader" for [`NO_LEADER_PATIENCE`] with no call
//! succeeding meanwhile, quorum is lost rather than being re-elected, and reads fail at once
//! instead of each holding the whole timeout (clients retrying 503s, as kubectl does ten times,
//! would otherwise wait ten timeouts for an answer).
//!
//! # Watches
//! An etcd watch from `after + 1` with `prev_kv`, after checking `after` against the compacted
//! revision with a read at revision `after` (etcd itself only refuses a start revision below the
//! compacted one, one less strict than the trait). A background task forwards events and keeps
//! the watch alive: when the stream breaks (member down, leader lost, connection reset) it
//! resumes from the last revision it delivered, with backoff, for as long as the caller keeps
//! the stream; if that revision has been compacted meanwhile the stream yields
//! [`StoreError::Compacted`] and ends. Nothing ends a watch silently.
//!
//! Progress items come from etcd's progress requests, sent every
//! [`WatchOptions::progress_interval`]. etcd before 3.4.25 / 3.5.8 (Debian's 3.4.23 included)
//! may answer one before sending events it already has for the watcher, so a progress answer is
//! passed on only one round later, and not while the watch may still be replaying history (until
//! it has delivered the revision current when it was created, or no replay batch has come for
//! [`REPLAY_SETTLE`]; etcd syncs replaying watchers every 100 ms). On newer etcd the answers are
//! exact and this only delays them by one interval.
//!
//! etcd reads an event's `prev_kv` when it sends the event: a watch replaying events whose
//! previous value was compacted meanwhile gets `prev_kv: None`.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client as etcd;
use etcd_client::proto::{PbEvent, PbKeyValue, PbResponseHeader, PbTxnOpResponse};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Compare, Event, EventKind, KeyValue, Op, OpResponse, RangeRequest, RangeResponse, Result,
    Revision, Revisions, Store, StoreError, Txn, TxnResponse, WatchItem, WatchOptions, WatchStream,
};

/// The key prefix when the endpoint URL names none.
pub const DEFAULT_PREFIX: &str = "/berth/";
/// The bound on every etcd call when the endpoint URL sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a watch that was created behind etcd's current revision waits without a replay
/// batch before it trusts etcd's progress answers (see the module doc).
pub const REPLAY_SETTLE: Duration = Duration::from_millis(300);

/// The largest gRPC message accepted (etcd's own client allows `math.MaxInt32`): a list or a
/// watch batch of many large objects must not fail on tonic's 4 MiB default.
const MAX_MESSAGE: usize = i32::MAX as usize;
/// HTTP/2 keepalive ping interval; etcd closes connections that ping more often than every 5 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(25);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Longest pause between attempts to resume a broken watch.
const RESUME_MAX: Duration = Duration::from_secs(2);
/// How long etcd may answer "no leader" (with nothing succeeding) before reads stop retrying:
/// longer than an election with etcd's default timing (1 s to notice, 1–2 s to elect).
pub const NO_LEADER_PATIENCE: Duration = Duration::from_secs(2);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// gRPC status codes etcd answers with when it cannot serve now (by number: tonic is not a
/// direct dependency): Cancelled, Unknown, DeadlineExceeded, ResourceExhausted, Aborted,
/// Unavailable.
const TRANSIENT_CODES: [i32; 6] = [1, 2, 4, 8, 10, 14];
const UNAVAILABLE: i32 = 14;

// ---------------------------------------------------------------------------------------------
// Configuration

/// Where the etcd cluster is and how to talk to it: the parsed `--store` URL.
///
/// The URL is `etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?timeout=DURATION]` for plain HTTP and
/// `etcds://HOST:PORT[,…][/PREFIX]?ca=FILE[&cert=FILE&key=FILE][&timeout=DURATION]` for TLS:
/// the scheme chooses TLS, so one flag says everything. `PREFIX` is everything from the first
/// `/` on, verbatim (default [`DEFAULT_PREFIX`]). `ca` is the PEM CA bundle etcd's server
/// certificates are checked against (required: no system roots are built in, etcd clusters use
/// their own CA); `cert` and `key` are an optional PEM client certificate and key, for etcd's
/// `--client-cert-auth`. `timeout` (`500ms`, `5s`) bounds every etcd call (default
/// [`DEFAULT_REQUEST_TIMEOUT`]). Hosts are names or IPv4 addresses, or IPv6 ones in brackets.
/// Values are taken verbatim (no percent-decoding), so they cannot contain `&`, `?` or `#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member (no scheme).
    pub endpoints: Vec<String>,
    /// Prepended to every berth key.
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM certificates of the CA that signed etcd's server certificates.
    pub ca: PathBuf,
    /// A client certificate, for etcd's `--client-cert-auth`.
    pub identity: Option<ClientIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM certificate (chain).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl EtcdConfig {
    /// Plain-HTTP endpoints with the default prefix and timeout.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_string(),
            tls: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|endpoint| format!("{scheme}://{endpoint}"))
            .collect()
    }
}

/// Why an etcd store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdConfigError {
    #[error("an etcd store URL starts with etcd:// or etcds:// (got {0:?})")]
    Scheme(String),
    #[error("the etcd store URL names no endpoint (expected etcd://HOST:PORT[,HOST:PORT…])")]
    NoEndpoints,
    #[error("bad etcd endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("etcd endpoint {0:?} is listed twice")]
    DuplicateEndpoint(String),
    #[error("bad etcd key prefix {prefix:?}: {reason}")]
    Prefix { prefix: String, reason: String },
    #[error("bad etcd store option {0:?}: expected NAME=VALUE with a non-empty value")]
    Option(String),
    #[error("unknown etcd store option {0:?} (known: ca, cert, key, timeout)")]
    UnknownOption(String),
    #[error("etcd store option {0:?} is given twice")]
    DuplicateOption(String),
    #[error("etcd store option {0:?} is for TLS: use an etcds:// URL")]
    TlsOptionWithoutTls(String),
    #[error("an etcds:// URL needs ca=FILE, the CA that signed etcd's server certificates")]
    MissingCa,
    #[error("a client certificate needs both cert=FILE and key=FILE")]
    IncompleteIdentity,
    #[error(
        "bad etcd request timeout {0:?}: expected a whole number of ms or s from 1ms to 1h, like 500ms or 5s"
    )]
    Timeout(String),
}

impl FromStr for EtcdConfig {
    type Err = EtcdConfigError;

    fn from_str(url: &str) -> Result<Self, EtcdConfigError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| EtcdConfigError::Scheme(url.to_string()))?;
        let tls = match scheme {
            "etcd" => false,
            "etcds" => true,
            _ => return Err(EtcdConfigError::Scheme(url.to_string())),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (hosts, prefix) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, DEFAULT_PREFIX),
        };
        check_prefix(prefix)?;
        if hosts.is_empty() {
            return Err(EtcdConfigError::NoEndpoints);
        }
        let mut endpoints: Vec<String> = Vec::new();
        for endpoint in hosts.split(',') {
            check_endpoint(endpoint)?;
            if endpoints.iter().any(|seen| seen == endpoint) {
                return Err(EtcdConfigError::DuplicateEndpoint(endpoint.to_string()));
            }
            endpoints.push(endpoint.to_string());
        }

        let (mut ca, mut cert, mut key, mut timeout) = (None, None, None, None);
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            let (name, value) = pair
                .split_once('=')
                .filter(|(_, value)| !value.is_empty() && !value.contains(['#', '?']))
                .ok_or_else(|| EtcdConfigError::Option(pair.to_string()))?;
            let slot = match name {
                "ca" => &mut ca,
                "cert" => &mut cert,
                "key" => &mut key,
                "timeout" => &mut timeout,
                _ => return Err(EtcdConfigError::UnknownOption(name.to_string())),
            };
            if slot.replace(value).is_some() {
                return Err(EtcdConfigError::DuplicateOption(name.to_string()));
            }
            if !tls && name != "timeout" {
                return Err(EtcdConfigError::TlsOptionWithoutTls(name.to_string()));
            }
        }
        let request_timeout = timeout.map_or(Ok(DEFAULT_REQUEST_TIMEOUT), parse_timeout)?;
        let tls = if tls {
            let ca = ca.ok_or(EtcdConfigError::MissingCa)?;
            let identity = match (cert, key) {
                (Some(cert), Some(key)) => Some(ClientIdentity {
                    cert: cert.into(),
                    key: key.into(),
                }),
                (None, None) => None,
                _ => return Err(EtcdConfigError::IncompleteIdentity),
            };
            Some(EtcdTls {
                ca: ca.into(),
                identity,
            })
        } else {
            None
        };
        Ok(EtcdConfig {
            endpoints,
            prefix: prefix.to_string(),
            tls,
            request_timeout,
        })
    }
}

impl fmt::Display for EtcdConfig {
    /// The URL form, which parses back to the same configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        write!(f, "{scheme}://{}{}", self.endpoints.join(","), self.prefix)?;
        let mut options = Vec::new();
        if let Some(tls) = &self.tls {
            options.push(format!("ca={}", tls.ca.display()));
            if let Some(identity) = &tls.identity {
                options.push(format!("cert={}", identity.cert.display()));
                options.push(format!("key={}", identity.key.display()));
            }
        }
        if self.request_timeout != DEFAULT_REQUEST_TIMEOUT {
            let millis = self.request_timeout.as_millis();
            if millis.is_multiple_of(1000) {
                options.push(format!("timeout={}s", millis / 1000));
            } else {
                options.push(format!("timeout={millis}ms"));
            }
        }
        if !options.is_empty() {
            write!(f, "?{}", options.join("&"))?;
        }
        Ok(())
    }
}

fn check_prefix(prefix: &str) -> Result<(), EtcdConfigError> {
    let bad = |reason: &str| {
        Err(EtcdConfigError::Prefix {
            prefix: prefix.to_string(),
            reason: reason.to_string(),
        })
    };
    if !prefix.starts_with('/') {
        return bad("it must start with /");
    }
    if prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it must not contain spaces or control characters");
    }
    if prefix.contains('#') {
        return bad("it must not contain #");
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<(), EtcdConfigError> {
    let bad = |reason: &str| {
        Err(EtcdConfigError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        })
    };
    if endpoint.is_empty() {
        return bad("empty (a stray comma?)");
    }
    let port = if let Some(bracketed) = endpoint.strip_prefix('[') {
        let Some((address, port)) = bracketed.split_once("]:") else {
            return bad("expected [IPv6]:PORT");
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("not an IPv6 address between the brackets");
        }
        port
    } else {
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            return bad("expected HOST:PORT");
        };
        if host.contains(':') {
            return bad("an IPv6 address needs brackets: [ADDRESS]:PORT");
        }
        if host.is_empty() {
            return bad("the host is empty");
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if host.len() > 253 || !host.split('.').all(label_ok) {
            return bad("the host is not a valid name or IPv4 address");
        }
        port
    };
    match port.parse::<u16>() {
        Ok(number) if number > 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(()),
        _ => bad("the port is not a number from 1 to 65535"),
    }
}

fn parse_timeout(text: &str) -> Result<Duration, EtcdConfigError> {
    let bad = || EtcdConfigError::Timeout(text.to_string());
    let (digits, scale) = if let Some(digits) = text.strip_suffix("ms") {
        (digits, 1)
    } else if let Some(digits) = text.strip_suffix('s') {
        (digits, 1000)
    } else {
        return Err(bad());
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let millis = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(bad)?;
    let timeout = Duration::from_millis(millis);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(bad());
    }
    Ok(timeout)
}

// ---------------------------------------------------------------------------------------------
// Connecting

/// Connects to etcd and checks that it answers (one read, within the request timeout).
///
/// Fails with [`StoreError::Unavailable`] when no member answers in time, and with
/// [`StoreError::Backend`] when the TLS files cannot be read or etcd refuses the client. The
/// store reconnects by itself afterwards: a member coming back needs nothing from the caller.
pub async fn connect(config: &EtcdConfig) -> Result<Arc<EtcdStore>> {
    if config.endpoints.is_empty() {
        return Err(StoreError::Backend(
            EtcdConfigError::NoEndpoints.to_string(),
        ));
    }
    let timeout = config.request_timeout;
    let mut options = etcd::ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_keep_alive(KEEPALIVE_INTERVAL, timeout)
        .with_require_leader(true);
    if let Some(tls) = &config.tls {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|error| {
                StoreError::Backend(format!(
                    "cannot read the etcd {what} {}: {error}",
                    path.display()
                ))
            })
        };
        let mut tls_options = etcd::TlsOptions::new()
            .ca_certificate(etcd::Certificate::from_pem(read(&tls.ca, "CA")?));
        if let Some(identity) = &tls.identity {
            tls_options = tls_options.identity(etcd::Identity::from_pem(
                read(&identity.cert, "client certificate")?,
                read(&identity.key, "client key")?,
            ));
        }
        options = options.with_tls(tls_options);
    }
    let endpoints = config.endpoints.join(",");
    let client =
        match tokio::time::timeout(timeout, etcd::Client::connect(config.urls(), Some(options)))
            .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                return Err(StoreError::Backend(format!(
                    "cannot set up the etcd client for {endpoints}: {error}"
                )));
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd at {endpoints} did not answer within {timeout:?}"
                )));
            }
        };
    let inner = Arc::new(Inner {
        kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
        watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
        prefix: config.prefix.clone().into_bytes(),
        timeout,
        compacted: AtomicI64::new(0),
        no_leader: std::sync::Mutex::new(None),
        endpoints,
    });
    let revisions = inner.revisions().await.map_err(|error| match error {
        StoreError::Unavailable(reason) => StoreError::Unavailable(format!(
            "cannot reach etcd at {}: {reason}",
            inner.endpoints
        )),
        other => other,
    })?;
    tracing::info!(
        endpoints = %inner.endpoints,
        prefix = %config.prefix,
        current = revisions.current,
        compacted = revisions.compacted,
        "etcd store connected"
    );
    Ok(Arc::new(EtcdStore { inner }))
}

// ---------------------------------------------------------------------------------------------
// The store

/// The [`Store`] in etcd; see the module doc. Every call and watch goes over one balanced gRPC
/// channel to the configured members.
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    kv: etcd::KvClient,
    watch: etcd::WatchClient,
    prefix: Vec<u8>,
    timeout: Duration,
    /// The highest compacted revision seen; never above etcd's.
    compacted: AtomicI64,
    /// When etcd first and last answered "no leader" in the current run of such answers with
    /// no call succeeding (see [`NO_LEADER_PATIENCE`]).
    no_leader: std::sync::Mutex<Option<(Instant, Instant)>>,
    /// For messages.
    endpoints: String,
}

/// An etcd call's failure, before the caller adds the revisions a [`StoreError`] names.
enum Failure {
    Compacted,
    Future,
    Other(StoreError),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Other(error)
    }
}

fn failure_error(failure: Failure) -> StoreError {
    match failure {
        Failure::Compacted => {
            StoreError::Backend("etcd: required revision has been compacted".into())
        }
        Failure::Future => {
            StoreError::Backend("etcd: required revision is a future revision".into())
        }
        Failure::Other(error) => error,
    }
}

#[derive(Clone, Copy)]
enum Retry {
    /// Retry anything transient: the call changes nothing.
    Read,
    /// Retry only when the request never left (no connection could be made).
    Write,
}

fn classify(error: &etcd::Error) -> Failure {
    match error {
        etcd::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                Failure::Compacted
            } else if message.contains("required revision is a future revision") {
                Failure::Future
            } else if message.contains("database space exceeded") {
                Failure::Other(StoreError::NoSpace(format!("etcd: {message}")))
            } else {
                // The message, then the sources (tonic puts a connection error there).
                let text = chain(
                    status.message().to_string(),
                    std::error::Error::source(status),
                );
                let text = format!("etcd: {text}");
                if TRANSIENT_CODES.contains(&i32::from(status.code())) {
                    Failure::Other(StoreError::Unavailable(text))
                } else {
                    Failure::Other(StoreError::Backend(text))
                }
            }
        }
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => Failure::Other(
            StoreError::Unavailable(format!("etcd: {}", error_chain(error))),
        ),
        other => Failure::Other(StoreError::Backend(format!("etcd: {other}"))),
    }
}

/// An error with its sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    chain(error.to_string(), error.source())
}

fn chain(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Whether etcd answered that the member has no leader (an election, or quorum lost).
fn is_no_leader(error: &etcd::Error) -> bool {
    matches!(error, etcd::Error::GRpcStatus(status) if status.message().contains("no leader"))
}

/// Whether the request surely never reached etcd: the connection could not be made.
fn never_sent(error: &etcd::Error) -> bool {
    let text = match error {
        etcd::Error::GRpcStatus(status) if i32::from(status.code()) == UNAVAILABLE => chain(
            status.message().to_string(),
            std::error::Error::source(status),
        ),
        etcd::Error::TransportError(_) => error_chain(error),
        _ => return false,
    };
    let text = text.to_ascii_lowercase();
    [
        "connection refused",
        "tcp connect error",
        "error trying to connect",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn header_revision(header: Option<&PbResponseHeader>) -> Result<Revision> {
    header
        .map(|header| header.revision)
        .ok_or_else(|| StoreError::Backend("etcd answered without a response header".into()))
}

impl Inner {
    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn unprefix(&self, key: Vec<u8>) -> Result<String> {
        let Some(rest) = key.strip_prefix(self.prefix.as_slice()) else {
            return Err(StoreError::Backend(format!(
                "etcd returned key {:?} outside the prefix {:?}",
                String::from_utf8_lossy(&key),
                String::from_utf8_lossy(&self.prefix)
            )));
        };
        String::from_utf8(rest.to_vec()).map_err(|_| {
            StoreError::Backend(format!(
                "etcd key {:?} under berth's prefix is not UTF-8",
                String::from_utf8_lossy(&key)
            ))
        })
    }

    fn key_value(&self, kv: PbKeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.unprefix(kv.key)?,
            value: Bytes::from(kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        })
    }

    fn timed_out(&self, what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "etcd at {} did not answer {what} within {:?}",
            self.endpoints, self.timeout
        ))
    }

    /// Runs one etcd call (built afresh per attempt) within the request timeout.
    async fn call<T, F, Fut>(&self, what: &str, retry: Retry, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut(etcd::KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = RETRY_MIN;
        loop {
            let error = match tokio::time::timeout_at(deadline, attempt(self.kv.clone())).await {
                Ok(Ok(value)) => {
                    self.leader_answered();
                    return Ok(value);
                }
                Ok(Err(error)) => error,
                Err(_) => return Err(self.timed_out(what).into()),
            };
            let failure = classify(&error);
            let leaderless_for = is_no_leader(&error).then(|| self.no_leader_answered());
            let transient = match retry {
                Retry::Read => {
                    matches!(failure, Failure::Other(StoreError::Unavailable(_)))
                        && leaderless_for.is_none_or(|lasted| lasted < NO_LEADER_PATIENCE)
                }
                Retry::Write => never_sent(&error),
            };
            if !transient || Instant::now() + backoff >= deadline {
                return Err(failure);
            }
            tracing::debug!(%error, what, "etcd call failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    /// Records a "no leader" answer; returns how long etcd has been leaderless as far as berth
    /// can tell: since the first of a run of such answers, each within [`NO_LEADER_PATIENCE`]
    /// of the one before, with no call succeeding in between.
    fn no_leader_answered(&self) -> Duration {
        let now = Instant::now();
        let mut run = self
            .no_leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = match *run {
            Some((first, last)) if now.duration_since(last) <= NO_LEADER_PATIENCE => first,
            _ => now,
        };
        *run = Some((first, now));
        now.duration_since(first)
    }

    /// A call succeeded: etcd has a leader.
    fn leader_answered(&self) {
        let mut run = self
            .no_leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if run.is_some() {
            *run = None;
        }
    }

    /// A count-only read of the prefix key at `revision` (0 = latest): cheap, and it answers
    /// whether `revision` is compacted or in the future, with the current revision.
    async fn probe_read(&self, what: &str, revision: Revision) -> Result<Revision, Failure> {
        let key = self.prefix.clone();
        let response = self
            .call(what, Retry::Read, |mut kv| {
                let options = etcd::GetOptions::new()
                    .with_revision(revision)
                    .with_count_only();
                let key = key.clone();
                async move { kv.get(key, Some(options)).await }
            })
            .await?;
        Ok(header_revision(response.0.header.as_ref())?)
    }

    async fn current(&self) -> Result<Revision> {
        self.probe_read("a read of the current revision", 0)
            .await
            .map_err(failure_error)
    }

    /// etcd's compacted revision, learned from a watch from revision 1, which etcd cancels
    /// naming it. Only called when etcd has said a revision above the known one is compacted,
    /// so that answer comes (within etcd's 100 ms watcher sync).
    async fn learn_compacted(&self) -> Result<Revision> {
        let probe = async {
            let mut client = self.watch.clone();
            let options = etcd::WatchOptions::new()
                .with_start_revision(1)
                .with_filters([
                    etcd::WatchFilterType::NoPut,
                    etcd::WatchFilterType::NoDelete,
                ]);
            let mut stream = client
                .watch(self.prefix.clone(), Some(options))
                .await
                .map_err(|error| failure_error(classify(&error)))?;
            loop {
                match stream.message().await {
                    Ok(Some(response)) if response.0.compact_revision > 0 => {
                        return Ok(response.0.compact_revision);
                    }
                    Ok(Some(response)) if response.0.canceled => {
                        return Err(StoreError::Unavailable(format!(
                            "etcd canceled a watch: {}",
                            response.0.cancel_reason
                        )));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(StoreError::Unavailable("etcd closed a watch".into()));
                    }
                    Err(error) => return Err(failure_error(classify(&error))),
                }
            }
        };
        let compacted = tokio::time::timeout(self.timeout, probe)
            .await
            .map_err(|_| self.timed_out("a probe of the compacted revision"))??;
        self.compacted.fetch_max(compacted, Ordering::SeqCst);
        Ok(self.compacted.load(Ordering::SeqCst))
    }

    async fn revisions(&self) -> Result<Revisions> {
        for _ in 0..3 {
            let known = self.compacted.load(Ordering::SeqCst);
            match self
                .probe_read("a read of the revisions", known.max(1))
                .await
            {
                Ok(current) => {
                    return Ok(Revisions {
                        current,
                        compacted: known,
                    });
                }
                Err(Failure::Compacted) => {
                    self.learn_compacted().await?;
                }
                Err(Failure::Future) => {
                    return Err(StoreError::Corrupt(format!(
                        "etcd's revision is below the compacted revision {known} berth saw: \
                         was the etcd cluster replaced?"
                    )));
                }
                Err(Failure::Other(error)) => return Err(error),
            }
        }
        Err(StoreError::Unavailable(
            "etcd's compacted revision kept moving while it was read".into(),
        ))
    }

    /// Maps a failure of a read, compaction or watch at `requested`.
    async fn at_revision_error(&self, requested: Revision, failure: Failure) -> StoreError {
        match failure {
            Failure::Compacted => match self.learn_compacted().await {
                Ok(compacted) => StoreError::Compacted {
                    requested,
                    compacted,
                },
                Err(error) => error,
            },
            Failure::Future => match self.current().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(error) => error,
            },
            Failure::Other(error) => error,
        }
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let key = self.key(&request.key);
        let mut options = etcd::GetOptions::new();
        if let Some(end) = &request.range_end {
            options = options.with_range(self.key(end));
        }
        let at = request.revision.filter(|revision| *revision > 0);
        if let Some(revision) = at {
            options = options.with_revision(revision);
        }
        match request.limit {
            Some(0) => options = options.with_count_only(),
            Some(limit) => options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
            None => {}
        }
        let response = self
            .call("a range read", Retry::Read, |mut kv| {
                let (key, options) = (key.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            })
            .await;
        let response = match response {
            Ok(response) => response.0,
            Err(failure) => return Err(self.at_revision_error(at.unwrap_or(0), failure).await),
        };
        let revision = match at {
            Some(revision) => revision,
            None => header_revision(response.header.as_ref())?,
        };
        let more = if request.limit == Some(0) {
            response.count > 0
        } else {
            response.more
        };
        let kvs = response
            .kvs
            .into_iter()
            .map(|kv| self.key_value(kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeResponse {
            kvs,
            revision,
            more,
        })
    }

    fn txn_op(&self, op: &Op) -> etcd::TxnOp {
        match op {
            Op::Put { key, value } => etcd::TxnOp::put(
                self.key(key),
                value.to_vec(),
                Some(etcd::PutOptions::new().with_prev_key()),
            ),
            Op::Delete { key } => etcd::TxnOp::delete(
                self.key(key),
                Some(etcd::DeleteOptions::new().with_prev_key()),
            ),
            Op::Get { key } => etcd::TxnOp::get(self.key(key), None),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let compares: Vec<etcd::Compare> = txn
            .compares
            .iter()
            .map(|compare| match compare {
                // A missing key compares as mod_revision 0 in etcd too.
                Compare::ModRevisionEquals { key, revision } => {
                    etcd::Compare::mod_revision(self.key(key), etcd::CompareOp::Equal, *revision)
                }
            })
            .collect();
        let success: Vec<etcd::TxnOp> = txn.success.iter().map(|op| self.txn_op(op)).collect();
        let failure: Vec<etcd::TxnOp> = txn.failure.iter().map(|op| self.txn_op(op)).collect();
        let request = etcd::Txn::new()
            .when(compares)
            .and_then(success)
            .or_else(failure);
        let response = self
            .call("a transaction", Retry::Write, |mut kv| {
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await
            .map_err(failure_error)?
            .0;
        let revision = header_revision(response.header.as_ref())?;
        let ops = if response.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        if ops.len() != response.responses.len() {
            return Err(StoreError::Backend(format!(
                "etcd answered {} operations with {} responses",
                ops.len(),
                response.responses.len()
            )));
        }
        let first = |kvs: Vec<PbKeyValue>| {
            kvs.into_iter()
                .next()
                .map(|kv| self.key_value(kv))
                .transpose()
        };
        let mut responses = Vec::with_capacity(ops.len());
        for (op, answer) in ops.iter().zip(response.responses) {
            let response = match (op, answer.response) {
                (Op::Put { .. }, Some(PbTxnOpResponse::ResponsePut(put))) => OpResponse::Put {
                    // etcd gives every write of a txn the txn's revision.
                    revision,
                    prev: put.prev_kv.map(|kv| self.key_value(kv)).transpose()?,
                },
                (Op::Delete { .. }, Some(PbTxnOpResponse::ResponseDeleteRange(delete))) => {
                    OpResponse::Delete {
                        revision,
                        prev: first(delete.prev_kvs)?,
                    }
                }
                (Op::Get { .. }, Some(PbTxnOpResponse::ResponseRange(range))) => OpResponse::Get {
                    kv: first(range.kvs)?,
                },
                (op, other) => {
                    return Err(StoreError::Backend(format!(
                        "etcd answered {op:?} with {other:?}"
                    )));
                }
            };
            responses.push(response);
        }
        Ok(TxnResponse {
            succeeded: response.succeeded,
            revision,
            responses,
        })
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= self.compacted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let result = self
            .call("a compaction", Retry::Read, |mut kv| async move {
                kv.compact(revision, None).await
            })
            .await;
        match result {
            // Compacting at or below the compacted revision changes nothing.
            Ok(_) | Err(Failure::Compacted) => {
                self.compacted.fetch_max(revision, Ordering::SeqCst);
                Ok(())
            }
            Err(failure) => Err(self.at_revision_error(revision, failure).await),
        }
    }

    /// Fails with [`StoreError::Compacted`] when a watch after `after` would miss history.
    async fn check_watchable(&self, after: Revision) -> Result<()> {
        let known = self.compacted.load(Ordering::SeqCst);
        if after < known {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: known,
            });
        }
        match self
            .probe_read("a check of the watch revision", after.max(1))
            .await
        {
            // Watching from the future is allowed: the events come when etcd gets there.
            Ok(_) | Err(Failure::Future) => Ok(()),
            Err(failure) => Err(self.at_revision_error(after, failure).await),
        }
    }

    /// Opens an etcd watch of `[key, end)` for the events after `after`, returning it with the
    /// revision etcd was at when it created the watch.
    async fn open_watch(
        &self,
        key: &[u8],
        end: &[u8],
        after: Revision,
    ) -> Result<(etcd::WatchStream, Revision)> {
        self.check_watchable(after).await?;
        let open = async {
            let mut client = self.watch.clone();
            let options = etcd::WatchOptions::new()
                .with_range(end.to_vec())
                .with_start_revision(after.max(0) + 1)
                .with_prev_key();
            let mut stream = client
                .watch(key.to_vec(), Some(options))
                .await
                .map_err(|error| failure_error(classify(&error)))?;
            loop {
                let response = match stream.message().await {
                    Ok(Some(response)) => response.0,
                    Ok(None) => {
                        return Err(StoreError::Unavailable(
                            "etcd closed a new watch stream".into(),
                        ));
                    }
                    Err(error) => return Err(failure_error(classify(&error))),
                };
                if response.compact_revision > 0 {
                    self.compacted
                        .fetch_max(response.compact_revision, Ordering::SeqCst);
                    return Err(StoreError::Compacted {
                        requested: after,
                        compacted: response.compact_revision,
                    });
                }
                if response.canceled {
                    return Err(StoreError::Unavailable(format!(
                        "etcd refused the watch: {}",
                        response.cancel_reason
                    )));
                }
                if response.created {
                    let created = header_revision(response.header.as_ref())?;
                    return Ok((stream, created));
                }
            }
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| self.timed_out("a watch request"))?
    }

    fn event(&self, event: PbEvent) -> Result<Event> {
        let kind = match event.r#type {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => {
                return Err(StoreError::Backend(format!(
                    "etcd sent an event of unknown type {other}"
                )));
            }
        };
        let kv = event
            .kv
            .ok_or_else(|| StoreError::Backend("etcd sent an event without a key".into()))?;
        let mut kv = self.key_value(kv)?;
        if kind == EventKind::Delete {
            kv.value = Bytes::new();
            kv.create_revision = 0;
        }
        Ok(Event {
            kind,
            kv,
            prev_kv: event.prev_kv.map(|kv| self.key_value(kv)).transpose()?,
        })
    }
}

impl Store for EtcdStore {
    fn range(&self, request: RangeRequest) -> BoxFuture<'_, Result<RangeResponse>> {
        self.inner.range(request).boxed()
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        self.inner.txn(txn).boxed()
    }

    fn watch(
        &self,
        prefix: String,
        after: Revision,
        options: WatchOptions,
    ) -> BoxFuture<'_, Result<WatchStream>> {
        async move {
            let key = self.inner.key(&prefix);
            let end = self.inner.key(&crate::prefix_end(&prefix));
            let (stream, created) = self.inner.open_watch(&key, &end, after).await?;
            let (tx, rx) = mpsc::channel(256);
            let watcher = Watcher {
                inner: self.inner.clone(),
                key,
                end,
                interval: options.progress_interval.max(Duration::from_millis(1)),
                delivered: after,
                tx,
            };
            tokio::spawn(watcher.run(stream, created));
            Ok(Box::pin(ReceiverStream::new(rx)) as WatchStream)
        }
        .boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        self.inner.compact(revision).boxed()
    }

    fn revisions(&self) -> BoxFuture<'_, Result<Revisions>> {
        self.inner.revisions().boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Watches

/// The task behind one [`WatchStream`]: forwards etcd's events and resumes broken watches.
struct Watcher {
    inner: Arc<Inner>,
    key: Vec<u8>,
    end: Vec<u8>,
    interval: Duration,
    /// Every event with a revision up to this one has been delivered.
    delivered: Revision,
    tx: mpsc::Sender<Result<WatchItem>>,
}

enum Ended {
    /// The caller dropped the stream.
    Dropped,
    /// The stream has been ended with an error.
    Failed,
    /// The etcd stream broke; resume it.
    Lost(String),
}

impl Watcher {
    async fn run(mut self, mut stream: etcd::WatchStream, mut created: Revision) {
        loop {
            match self.follow(&mut stream, created).await {
                Ended::Dropped | Ended::Failed => return,
                Ended::Lost(reason) => tracing::warn!(
                    %reason,
                    from = self.delivered,
                    key = %String::from_utf8_lossy(&self.key),
                    "etcd watch broke; resuming"
                ),
            }
            let mut pause = RETRY_MIN;
            (stream, created) = loop {
                tokio::select! {
                    _ = self.tx.closed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                match self
                    .inner
                    .open_watch(&self.key, &self.end, self.delivered)
                    .await
                {
                    Ok(opened) => break opened,
                    Err(error @ StoreError::Compacted { .. }) => {
                        let _ = self.tx.send(Err(error)).await;
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "etcd watch not resumed yet");
                        pause = (pause * 2).min(RESUME_MAX);
                    }
                }
            };
            tracing::info!(from = self.delivered, "etcd watch resumed");
        }
    }

    async fn send(&self, item: Result<WatchItem>) -> bool {
        self.tx.send(item).await.is_ok()
    }

    /// Follows one etcd watch stream until it breaks or the caller goes away. `created` is
    /// etcd's revision when the watch was created: history up to it comes from etcd's replay.
    async fn follow(&mut self, stream: &mut etcd::WatchStream, created: Revision) -> Ended {
        let mut last_batch = Instant::now();
        let mut ticker = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A progress answer waiting for the next one to confirm it.
        let mut unconfirmed: Option<Revision> = None;
        // When the outstanding progress request was sent (or events last came while waiting).
        let mut requested: Option<Instant> = None;
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return Ended::Dropped,
                _ = ticker.tick() => {
                    match requested {
                        Some(at) if at.elapsed() > self.inner.timeout => {
                            return Ended::Lost(format!(
                                "no answer to a progress request within {:?}",
                                self.inner.timeout
                            ));
                        }
                        Some(_) => {}
                        None => {
                            if let Err(error) = stream.request_progress().await {
                                return Ended::Lost(error.to_string());
                            }
                            requested = Some(Instant::now());
                        }
                    }
                    continue;
                }
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response.0,
                Ok(None) => return Ended::Lost("etcd closed the watch stream".into()),
                Err(error) => return Ended::Lost(error.to_string()),
            };
            if response.compact_revision > 0 {
                self.inner
                    .compacted
                    .fetch_max(response.compact_revision, Ordering::SeqCst);
                let error = StoreError::Compacted {
                    requested: self.delivered,
                    compacted: response.compact_revision,
                };
                self.send(Err(error)).await;
                return Ended::Failed;
            }
            if response.canceled {
                return Ended::Lost(format!(
                    "etcd canceled the watch: {}",
                    response.cancel_reason
                ));
            }
            if response.created {
                continue;
            }
            if !response.events.is_empty() {
                last_batch = Instant::now();
                if requested.is_some() {
                    // Busy, not stuck: give the progress answer more time.
                    requested = Some(last_batch);
                }
                for event in response.events {
                    let event = match self.inner.event(event) {
                        Ok(event) => event,
                        Err(error) => {
                            self.send(Err(error)).await;
                            return Ended::Failed;
                        }
                    };
                    let revision = event.kv.mod_revision;
                    if !self.send(Ok(WatchItem::Event(event))).await {
                        return Ended::Dropped;
                    }
                    self.delivered = self.delivered.max(revision);
                }
                continue;
            }
            // No events: the answer to a progress request.
            requested = None;
            let Some(revision) = response.header.as_ref().map(|header| header.revision) else {
                continue;
            };
            let replayed = self.delivered >= created || last_batch.elapsed() >= REPLAY_SETTLE;
            if let Some(previous) = unconfirmed.take()
                && replayed
            {
                let through = previous.max(self.delivered);
                if !self.send(Ok(WatchItem::Progress(through))).await {
                    return Ended::Dropped;
                }
                self.delivered = through;
            }
            unconfirmed = Some(revision);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests of the URL parser (the store itself is tested against a real etcd in tests/etcd.rs)

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(url: &str) -> Result<EtcdConfig, EtcdConfigError> {
        url.parse()
    }

    #[test]
    fn plain_endpoints_with_defaults() {
        assert_eq!(
            parse("etcd://127.0.0.1:2379"),
            Ok(EtcdConfig::new(["127.0.0.1:2379"]))
        );
        let config = parse("etcd://a.example:2379,b-1.example:2379,[::1]:2380/k8s?timeout=750ms")
            .expect("parses");
        assert_eq!(
            config.endpoints,
            ["a.example:2379", "b-1.example:2379", "[::1]:2380"]
        );
        assert_eq!(config.prefix, "/k8s");
        assert_eq!(config.request_timeout, Duration::from_millis(750));
        assert_eq!(config.tls, None);
        assert_eq!(
            config.urls(),
            [
                "http://a.example:2379",
                "http://b-1.example:2379",
                "http://[::1]:2380"
            ]
        );
        assert_eq!(
            parse("etcd://h:1/").map(|config| config.prefix),
            Ok("/".into())
        );
    }

    #[test]
    fn tls_options() {
        let config =
            parse("etcds://h:2379/berth/?ca=/etc/ca.pem&cert=/c.pem&key=/k.pem&timeout=2s")
                .expect("parses");
        assert_eq!(
            config.tls,
            Some(EtcdTls {
                ca: "/etc/ca.pem".into(),
                identity: Some(ClientIdentity {
                    cert: "/c.pem".into(),
                    key: "/k.pem".into()
                })
            })
        );
        assert_eq!(config.request_timeout, Duration::from_secs(2));
        assert_eq!(config.urls(), ["https://h:2379"]);
        let config = parse("etcds://h:2379?ca=ca.pem").expect("parses");
        assert_eq!(config.tls.map(|tls| tls.identity), Some(None));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        use EtcdConfigError as E;
        type Check = fn(&EtcdConfigError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("127.0.0.1:2379", |e| matches!(e, E::Scheme(_))),
            ("http://127.0.0.1:2379", |e| matches!(e, E::Scheme(_))),
            ("etcd://", |e| matches!(e, E::NoEndpoints)),
            ("etcd:///berth", |e| matches!(e, E::NoEndpoints)),
            ("etcd://h", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://h:0", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://h:65536", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://h:+1", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://:2379", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://h:1,,g:2", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://h:1,", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://::1:2379", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://[zz]:2379", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://h_x:2379", |e| matches!(e, E::Endpoint { .. })),
            ("etcd://h:1,h:1", |e| matches!(e, E::DuplicateEndpoint(_))),
            ("etcd://h:1/a b", |e| matches!(e, E::Prefix { .. })),
            ("etcd://h:1/a#b", |e| matches!(e, E::Prefix { .. })),
            ("etcd://h:1?timeout", |e| matches!(e, E::Option(_))),
            ("etcd://h:1?timeout=", |e| matches!(e, E::Option(_))),
            ("etcd://h:1?", |e| matches!(e, E::Option(_))),
            ("etcd://h:1?colour=red", |e| {
                matches!(e, E::UnknownOption(_))
            }),
            ("etcd://h:1?timeout=1s&timeout=2s", |e| {
                matches!(e, E::DuplicateOption(_))
            }),
            ("etcd://h:1?ca=/ca.pem", |e| {
                matches!(e, E::TlsOptionWithoutTls(_))
            }),
            ("etcds://h:1", |e| matches!(e, E::MissingCa)),
            ("etcds://h:1?ca=a&cert=c", |e| {
                matches!(e, E::IncompleteIdentity)
            }),
            ("etcds://h:1?ca=a&key=k", |e| {
                matches!(e, E::IncompleteIdentity)
            }),
            ("etcd://h:1?timeout=5", |e| matches!(e, E::Timeout(_))),
            ("etcd://h:1?timeout=0s", |e| matches!(e, E::Timeout(_))),
            ("etcd://h:1?timeout=-1s", |e| matches!(e, E::Timeout(_))),
            ("etcd://h:1?timeout=2h", |e| matches!(e, E::Timeout(_))),
            ("etcd://h:1?timeout=3601s", |e| matches!(e, E::Timeout(_))),
        ];
        for (url, expected) in cases {
            match parse(url) {
                Ok(config) => panic!("{url} parsed as {config:?}"),
                Err(error) => {
                    assert!(expected(&error), "{url}: unexpected error {error:?}");
                    assert!(!error.to_string().is_empty());
                }
            }
        }
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,6}){0,3}",
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        ]
    }

    fn config() -> impl Strategy<Value = EtcdConfig> {
        let endpoints = proptest::collection::btree_set(
            (host(), 1u16..).prop_map(|(host, port)| format!("{host}:{port}")),
            1..4,
        );
        let prefix = "/[a-zA-Z0-9/._-]{0,12}";
        let path = "/?[a-z0-9./_-]{1,16}";
        let tls = proptest::option::of((path, proptest::option::of((path, path))));
        let timeout = prop_oneof![
            Just(DEFAULT_REQUEST_TIMEOUT),
            (1u64..=3_600_000).prop_map(Duration::from_millis),
        ];
        (endpoints, prefix, tls, timeout).prop_map(|(endpoints, prefix, tls, timeout)| EtcdConfig {
            endpoints: endpoints.into_iter().collect(),
            prefix,
            tls: tls.map(|(ca, identity)| EtcdTls {
                ca: ca.into(),
                identity: identity.map(|(cert, key)| ClientIdentity {
                    cert: cert.into(),
                    key: key.into(),
                }),
            }),
            request_timeout: timeout,
        })
    }

    proptest! {
        /// Every configuration prints as a URL that parses back to it.
        #[test]
        fn display_parses_back(config in config()) {
            let url = config.to_string();
            prop_assert_eq!(parse(&url), Ok(config), "{}", url);
        }

        /// Arbitrary text never panics the parser, and what it accepts is well-formed and
        /// prints back to itself.
        #[test]
        fn parser_never_panics(text in "(etcds?://)?[a-z0-9:\\[\\],./?&=_ #-]{0,40}") {
            if let Ok(config) = parse(&text) {
                prop_assert!(!config.endpoints.is_empty());
                prop_assert!(config.prefix.starts_with('/'));
                prop_assert!(!config.request_timeout.is_zero());
                prop_assert_eq!(parse(&config.to_string()), Ok(config));
            }
        }

        /// Dropping the port from any endpoint is refused, naming that endpoint.
        #[test]
        fn endpoint_without_port_is_refused(
            config in config(),
            index in any::<prop::sample::Index>(),
        ) {
            let mut config = config;
            let i = index.index(config.endpoints.len());
            let broken = config.endpoints[i]
                .rsplit_once(':')
                .map(|(host, _)| host.to_string())
                .unwrap_or_default();
            config.endpoints[i] = broken.clone();
            let parsed = parse(&config.to_string());
            prop_assert!(
                matches!(&parsed, Err(EtcdConfigError::Endpoint { endpoint, .. }) if *endpoint == broken),
                "{:?}",
                parsed
            );
        }
    }
}
