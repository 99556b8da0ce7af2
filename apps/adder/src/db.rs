//! The `db` mode: the total in PostgreSQL, one transaction per add, and retries that turn a
//! database restart into a delay instead of an error.
//!
//! # The client
//!
//! [`postgres`] (rust-postgres, the synchronous face of `tokio-postgres`), with no optional
//! features: it is the maintained native PostgreSQL client for Rust, speaks the protocol
//! itself (no libpq), and its blocking API matches [`Store`], whose calls already run on
//! tokio's blocking pool. Its only heavy dependencies are the protocol's (md5/sha2/hmac for
//! SCRAM, stringprep); the async alternatives (`sqlx`, `diesel-async`) bring far more for one
//! `UPDATE`. Each `postgres::Client` drives its connection on a small runtime of its own,
//! which is why closing clients is kept off the async runtime's threads (see [`Drop`]).
//!
//! # The data
//!
//! A single-row table, created when missing (under an advisory lock, so replicas starting
//! together do not race on `CREATE TABLE IF NOT EXISTS`):
//!
//! ```sql
//! CREATE TABLE total (id boolean PRIMARY KEY DEFAULT true CHECK (id), value bigint NOT NULL);
//! ```
//!
//! An add is `BEGIN; UPDATE total SET value = value + $1 RETURNING value, txid_current();
//! COMMIT`. The row lock serializes adds from every replica, so each sees the total left by
//! the one before it: totals are distinct and never lost. A bigint overflow is refused by
//! PostgreSQL (SQLSTATE 22003) and reported as [`StoreError::Overflow`].
//!
//! # Retries
//!
//! Every failure is [`classify`]-ed. Connection-level failures (refused, reset, closed,
//! unreachable, a name that does not resolve while the pod is away, timeouts) and the
//! SQLSTATEs of a server going away or not yet back (`57P01` admin shutdown, `57P02`, `57P03`
//! starting up, class `08`, `53300`, and the rollback class `40`) are retried with bounded,
//! jittered exponential back-off for at most [`RetryPolicy::budget`]; anything else (a missing
//! database or role, bad SQL, an overflow) is answered at once.
//!
//! Retrying an add is safe only if it did not commit. A failure before `COMMIT` was sent
//! cannot have committed (the server rolls back an unfinished transaction when its session
//! ends). A failure *of* the `COMMIT` leaves the outcome unknown, so the store asks the
//! server, on a new connection, what happened to that transaction id
//! (`txid_status`, PostgreSQL ≥ 10, made for exactly this): committed means the add succeeded
//! with the total its `UPDATE` returned; aborted means it is retried; the add is never applied
//! twice. If the server stays away longer than the budget, the answer is an error that says
//! whether the add certainly did not happen ([`StoreError::Unavailable`]) or might have
//! ([`StoreError::Unknown`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

use crate::store::{Store, StoreError};

/// The table holding the total, and making sure it exists.
const SETUP: &str = "\
    SELECT pg_advisory_xact_lock(4242000001);
    CREATE TABLE IF NOT EXISTS total (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        value bigint NOT NULL
    );
    INSERT INTO total (id, value) VALUES (true, 0) ON CONFLICT (id) DO NOTHING;";

const ADD: &str = "UPDATE total SET value = value + $1 RETURNING value, txid_current()";
const READ: &str = "SELECT value FROM total";
const STATUS: &str = "SELECT txid_status($1)";

/// Idle connections kept for reuse (one per concurrent request is made as needed).
const MAX_IDLE: usize = 16;

/// How long and how often to retry while the database is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The longest one request keeps retrying, from its first attempt.
    pub budget: Duration,
    /// The first back-off; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Long enough for a database pod to be deleted, recreated and ready again.
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(60),
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based): exponential, capped, with up to
    /// half of it as jitter (from `seed`) so replicas do not retry in lockstep.
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let doubling = self
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let base = doubling.min(self.max_delay);
        let jitter_range = base.as_millis() as u64 / 2;
        let jitter = if jitter_range == 0 {
            0
        } else {
            seed % (jitter_range + 1)
        };
        base - Duration::from_millis(jitter_range) + Duration::from_millis(jitter)
    }
}

/// What a failed database call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The database is (briefly) unreachable, restarting or starting up: try again later
    /// on a new connection.
    Transient,
    /// An answer that will not change by retrying: report it.
    Permanent,
}

/// Classifies by SQLSTATE: the codes a restarting or overloaded server sends.
pub fn classify_sqlstate(code: &str) -> Class {
    match code {
        // admin_shutdown (fast shutdown), crash_shutdown, cannot_connect_now (starting up
        // or shutting down), too_many_connections, idle session timeouts.
        "57P01" | "57P02" | "57P03" | "53300" | "25P03" | "57P05" => Class::Transient,
        // Class 08: connection exceptions; class 40: the transaction was rolled back
        // (serialization failure, deadlock), so it did not happen.
        c if c.starts_with("08") || c.starts_with("40") => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Classifies an error of the client: a server error by its SQLSTATE; anything on the way
/// there (connecting, resolving the name, the socket, a closed connection, a timeout) is
/// transient, since an unreachable server is what a restart looks like from here. Errors of
/// the client's own making (a bad connection string, a type mismatch) are permanent.
pub fn classify(error: &postgres::Error) -> Class {
    if let Some(code) = error.code() {
        return classify_sqlstate(code.code());
    }
    if error.is_closed() || io_cause(error).is_some() {
        return Class::Transient;
    }
    // Connect and timeout errors without an io cause (all addresses failed, connect_timeout).
    let text = error.to_string();
    if text.starts_with("error connecting to server") || text.starts_with("timeout") {
        Class::Transient
    } else {
        Class::Permanent
    }
}

fn io_cause(error: &postgres::Error) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// The error and its causes on one line (the client's own Display is only "db error").
pub fn describe(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The total in PostgreSQL.
pub struct DbStore {
    config: Config,
    /// What the connection string names (without any password), for messages.
    target: String,
    policy: RetryPolicy,
    idle: Mutex<Vec<Client>>,
    ready: AtomicBool,
}

impl std::fmt::Debug for DbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbStore")
            .field("target", &self.target)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    /// Did not happen; retry (the message says why).
    Retry(String),
}

/// What an attempt at an add left behind when its COMMIT failed.
struct InDoubt {
    txid: i64,
    total: i64,
}

impl DbStore {
    /// A store for the connection string `url` (`host=... user=... dbname=...` or a
    /// `postgresql://` URL). Nothing is connected until the first request.
    pub fn new(url: &str, policy: RetryPolicy) -> Result<Self, StoreError> {
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            StoreError::Database(format!("ADDER_DATABASE_URL: {}", describe(&e)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        // A peer that vanished without closing (its pod's network gone) must not hold a
        // request until the kernel gives up after minutes.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(10));
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("adder");
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let target = format!(
            "postgres {} db {} as {}",
            hosts.join(","),
            config.get_dbname().unwrap_or("(default)"),
            config.get_user().unwrap_or("(default)")
        );
        Ok(DbStore {
            config,
            target,
            policy,
            idle: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
        })
    }

    /// What the store connects to, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// An open connection on which the table exists.
    fn client(&self) -> Result<Client, postgres::Error> {
        let pooled = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let mut client = match pooled {
            Some(client) => client,
            None => self.config.connect(NoTls)?,
        };
        if !self.ready.load(Ordering::Acquire) {
            let mut tx = client.transaction()?;
            tx.batch_execute(SETUP)?;
            tx.commit()?;
            self.ready.store(true, Ordering::Release);
        }
        Ok(client)
    }

    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(client);
        } else {
            // Requests run on the blocking pool, where a client may be dropped.
            drop(idle);
            drop(client);
        }
    }

    /// Runs `attempt` until it is done, fails permanently, or `deadline` passes.
    /// `unknown` says whether giving up leaves the outcome unknown (an add whose COMMIT
    /// could not be confirmed) rather than certainly not applied.
    fn with_retries<T>(
        &self,
        start: Instant,
        deadline: Instant,
        unknown: bool,
        mut attempt: impl FnMut(&Self) -> Result<Attempt<T>, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tries = 0u32;
        loop {
            tries += 1;
            let why = match attempt(self)? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Retry(why) => why,
            };
            let seed = u64::from(Instant::now().duration_since(start).subsec_nanos())
                ^ u64::from(std::process::id());
            let delay = self.policy.delay(tries, seed);
            if Instant::now() + delay > deadline {
                let waited = start.elapsed();
                let message = format!("{}: {why}", self.target);
                return Err(if unknown {
                    StoreError::Unknown { waited, message }
                } else {
                    StoreError::Unavailable {
                        attempts: tries,
                        waited,
                        message,
                    }
                });
            }
            if tries == 1 || tries.is_power_of_two() {
                eprintln!(
                    "{}: retrying in {delay:?} (attempt {tries}): {why}",
                    self.target
                );
            }
            std::thread::sleep(delay);
        }
    }

    /// One attempt at an add. `Err(InDoubt)` inside `Ok(Err)`: the COMMIT failed.
    fn try_add(&self, amount: i64) -> Result<Attempt<Result<i64, InDoubt>>, StoreError> {
        let mut client = match self.client() {
            Ok(client) => client,
            Err(e) => return self.failed(e),
        };
        if let Err(e) = client.batch_execute("BEGIN") {
            return self.failed(e);
        }
        let (total, txid): (i64, i64) = match client.query_one(ADD, &[&amount]) {
            Ok(row) => (row.get(0), row.get(1)),
            Err(e) => {
                if e.code().map(|c| c.code()) == Some("22003") {
                    // bigint out of range: the add is refused, the total stays.
                    let total = client
                        .batch_execute("ROLLBACK")
                        .and_then(|()| client.query_one(READ, &[]))
                        .map(|row| row.get(0));
                    if let Ok(total) = total {
                        self.give_back(client);
                        return Err(StoreError::Overflow { total, amount });
                    }
                    return Err(StoreError::Database(format!(
                        "adding {amount} would overflow the total"
                    )));
                }
                // Not committed: the server rolls the transaction back when the session ends.
                drop(client);
                return self.failed(e);
            }
        };
        match client.batch_execute("COMMIT") {
            Ok(()) => {
                self.give_back(client);
                Ok(Attempt::Done(Ok(total)))
            }
            Err(e) => {
                eprintln!(
                    "{}: COMMIT of transaction {txid} failed ({}); asking the server what happened to it",
                    self.target,
                    describe(&e)
                );
                drop(client);
                Ok(Attempt::Done(Err(InDoubt { txid, total })))
            }
        }
    }

    /// A failed call: retry if transient, else the error.
    fn failed<T>(&self, e: postgres::Error) -> Result<Attempt<T>, StoreError> {
        match classify(&e) {
            Class::Transient => Ok(Attempt::Retry(describe(&e))),
            Class::Permanent => Err(StoreError::Database(format!(
                "{}: {}",
                self.target,
                describe(&e)
            ))),
        }
    }

    /// What became of transaction `txid`: `Some(true)` committed, `Some(false)` aborted.
    fn try_status(&self, txid: i64) -> Result<Attempt<bool>, StoreError> {
        let mut client = match self.client() {
            Ok(client) => client,
            Err(e) => return self.failed(e),
        };
        let status: Option<String> = match client.query_one(STATUS, &[&txid]) {
            Ok(row) => row.get(0),
            Err(e) => return self.failed(e),
        };
        self.give_back(client);
        match status.as_deref() {
            Some("committed") => Ok(Attempt::Done(true)),
            Some("aborted") => Ok(Attempt::Done(false)),
            // Its old session has not ended yet.
            Some("in progress") => Ok(Attempt::Retry(format!(
                "transaction {txid} is still in progress"
            ))),
            other => Err(StoreError::Unknown {
                waited: Duration::ZERO,
                message: format!("{}: transaction {txid} has status {other:?}", self.target),
            }),
        }
    }
}

impl Store for DbStore {
    fn add(&self, amount: i64) -> Result<i64, StoreError> {
        let start = Instant::now();
        let deadline = start + self.policy.budget;
        loop {
            let InDoubt { txid, total } =
                match self.with_retries(start, deadline, false, |s| s.try_add(amount))? {
                    Ok(total) => return Ok(total),
                    Err(in_doubt) => in_doubt,
                };
            // However late the COMMIT failed, take a few back-offs to find out.
            let settle = deadline.max(Instant::now() + self.policy.max_delay * 5);
            if self.with_retries(start, settle, true, |s| s.try_status(txid))? {
                return Ok(total);
            }
            eprintln!(
                "{}: transaction {txid} was rolled back; adding again",
                self.target
            );
            if Instant::now() > deadline {
                return Err(StoreError::Unavailable {
                    attempts: 0,
                    waited: start.elapsed(),
                    message: format!("{}: transaction {txid} was rolled back", self.target),
                });
            }
        }
    }

    fn total(&self) -> Result<i64, StoreError> {
        let start = Instant::now();
        self.with_retries(start, start + self.policy.budget, false, |s| {
            let mut client = match s.client() {
                Ok(client) => client,
                Err(e) => return s.failed(e),
            };
            match client.query_one(READ, &[]) {
                Ok(row) => {
                    let total = row.get(0);
                    s.give_back(client);
                    Ok(Attempt::Done(total))
                }
                Err(e) => s.failed(e),
            }
        })
    }
}

/// Closes clients on a thread of its own: each owns a small tokio runtime, which must not
/// be dropped on (or block) a thread of the server's async runtime, where the store itself
/// may be dropped.
fn close(clients: Vec<Client>) {
    if !clients.is_empty() {
        let _ = std::thread::spawn(move || drop(clients)).join();
    }
}

impl Drop for DbStore {
    fn drop(&mut self) {
        close(std::mem::take(
            self.idle.get_mut().unwrap_or_else(|p| p.into_inner()),
        ));
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_server_is_transient() {
        for code in [
            "57P01", "57P02", "57P03", "08006", "08001", "53300", "40001", "40P01",
        ] {
            assert_eq!(classify_sqlstate(code), Class::Transient, "{code}");
        }
    }

    #[test]
    fn answers_that_retrying_cannot_change_are_permanent() {
        // undefined table, missing database, bad password, no such role, overflow, syntax.
        for code in [
            "42P01", "3D000", "28P01", "28000", "22003", "42601", "23505",
        ] {
            assert_eq!(classify_sqlstate(code), Class::Permanent, "{code}");
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn connect_error(url: &str) -> postgres::Error {
        match url.parse::<Config>().unwrap().connect(NoTls) {
            Ok(_) => panic!("{url} connected"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_refused_connection_is_transient() {
        let url = format!(
            "host=127.0.0.1 port={} user=adder dbname=adder",
            free_port()
        );
        let e = connect_error(&url);
        assert_eq!(classify(&e), Class::Transient, "{}", describe(&e));
        assert!(describe(&e).contains("refused"), "{}", describe(&e));
    }

    #[test]
    fn a_name_that_does_not_resolve_is_transient() {
        // While a StatefulSet pod is away its DNS name does not resolve.
        let e =
            connect_error("host=no-such-host.invalid user=adder dbname=adder connect_timeout=2");
        assert_eq!(classify(&e), Class::Transient, "{}", describe(&e));
    }

    #[test]
    fn a_reset_or_closed_connection_is_transient() {
        // A server that accepts and hangs up at once (as a dying backend does).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            drop(stream);
        });
        let e = connect_error(&format!(
            "host=127.0.0.1 port={port} user=adder dbname=adder"
        ));
        server.join().unwrap();
        assert_eq!(classify(&e), Class::Transient, "{}", describe(&e));
    }

    #[test]
    fn a_bad_connection_string_is_refused_up_front() {
        let err = DbStore::new("host=x port=notaport", RetryPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("ADDER_DATABASE_URL"), "{err}");
    }

    #[test]
    fn back_off_doubles_up_to_the_cap_with_bounded_jitter() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(10),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for seed in [0, 1, 7, 12345, u64::MAX] {
            for (attempt, base) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (40, 1000),
            ] {
                let d = policy.delay(attempt, seed).as_millis() as u64;
                assert!(
                    base / 2 <= d && d <= base,
                    "attempt {attempt}: {d} of {base}"
                );
            }
        }
    }

    #[test]
    fn an_unreachable_database_fails_after_the_budget_and_says_so() {
        let url = format!(
            "host=127.0.0.1 port={} user=adder dbname=adder",
            free_port()
        );
        let policy = RetryPolicy {
            budget: Duration::from_millis(600),
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        };
        let store = DbStore::new(&url, policy).unwrap();
        let start = Instant::now();
        let err = store.add(1).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(400), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5), "{err}");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(matches!(store.total(), Err(StoreError::Unavailable { .. })));
    }
}
