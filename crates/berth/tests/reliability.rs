//! Reliability cases from the study in `/work/shared/reliability-cases.md`, run against the real
//! `berth up` through its HTTPS API: crash recovery (A1, A2, A7), API concurrency, watch and list
//! (C1–C5, C7), bad input (D1–D5), authentication and file modes (E1, E2, E5), and a full or
//! read-only disk under the API (B1, B5). Store-level faults (torn tail, corruption, fsync
//! failure) are tested in `crates/berth-store`.
//!
//! Requests go through [`common::Raw`], so every check sees the exact status code, `reason`,
//! message and headers. Random choices come from one seed per test, printed at its start; set
//! `BERTH_TEST_SEED` to replay one.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Berth, Raw, Reply};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so a failing run can be replayed by its seed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    /// A generator seeded from `BERTH_TEST_SEED` or the clock; prints the seed.
    fn for_test(test: &str) -> Rng {
        let seed = std::env::var("BERTH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: BERTH_TEST_SEED={seed}");
        Rng::new(seed)
    }

    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// An independent generator for a worker.
    fn fork(&mut self, salt: u64) -> Rng {
        Rng::new(self.next() ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[low, high)`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn configmaps(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/configmaps")
}

fn configmap_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/configmaps/{name}")
}

fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// The `metadata.resourceVersion` of an object or list, as a number.
#[track_caller]
fn rv_of(value: &Value) -> i64 {
    value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {value}"))
}

fn name_of(value: &Value) -> String {
    value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Asserts that `reply` is a `metav1.Status` failure with this code and reason; returns its message.
#[track_caller]
fn expect_status(reply: &Reply, code: u16, reason: &str) -> String {
    assert_eq!(
        reply.status,
        code,
        "expected {code} {reason}, got {}: {}",
        reply.status,
        reply.text()
    );
    let status = reply.json();
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["code"], code, "{status}");
    assert_eq!(status["reason"], reason, "{status}");
    status["message"].as_str().unwrap_or("").to_string()
}

#[track_caller]
fn expect_ok(reply: &Reply, code: u16) -> Value {
    assert_eq!(reply.status, code, "{}", reply.text());
    reply.json()
}

async fn create_namespace(raw: &Raw, name: &str) {
    let reply = raw
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await
        .expect("create namespace");
    expect_ok(&reply, 201);
}

/// The names and resourceVersions of the ConfigMaps in a namespace, and the list's revision.
async fn list_configmaps(raw: &Raw, namespace: &str) -> (BTreeMap<String, i64>, i64) {
    let reply = raw.get(&configmaps(namespace)).await.expect("list");
    let list = expect_ok(&reply, 200);
    let items = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| (name_of(item), rv_of(item)))
        .collect();
    (items, rv_of(&list))
}

/// Checks the server still answers: a read and a write.
async fn assert_alive(raw: &Raw) {
    let reply = raw
        .get("/api/v1/namespaces/default")
        .await
        .expect("the server still answers");
    expect_ok(&reply, 200);
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!("alive-{}", COUNT.fetch_add(1, Ordering::Relaxed));
    let reply = raw
        .post(&configmaps("default"), &configmap(&name, json!({})))
        .await
        .expect("the server still takes writes");
    expect_ok(&reply, 201);
}

/// The store's current revision, as a list reports it.
async fn rv_now(raw: &Raw) -> i64 {
    let reply = raw.get(&configmaps("kube-system")).await.expect("list");
    rv_of(&expect_ok(&reply, 200))
}

/// The peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            out.insert(path.strip_prefix(dir).expect("under dir").to_path_buf());
        }
    }
    out
}

/// Runs a blocking call (process control) from async code.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------------------------------------
// A1: kill -9 during a write burst, with a linearizability check
// ---------------------------------------------------------------------------------------------

/// One version of a key: the unique value a write put there and the revision it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Version {
    value: u64,
    rv: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Read,
    Create {
        value: u64,
    },
    /// PUT with `metadata.resourceVersion = expected`.
    Update {
        value: u64,
        expected: i64,
    },
    /// DELETE with `preconditions.resourceVersion = expected`.
    Delete {
        expected: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// 200 with this version, or 404 (`None`).
    Read(Option<Version>),
    /// 201/200 from a create or update, with the new revision.
    Written(i64),
    /// 200 from a delete.
    Deleted,
    /// 409 AlreadyExists.
    AlreadyExists,
    /// 409 Conflict (the precondition did not hold).
    Conflict,
    /// 404 from an update or delete.
    NotFound,
    /// No answer (connection broken, timeout, 5xx): it may or may not have taken effect.
    Unknown,
}

#[derive(Debug, Clone)]
struct Op {
    client: usize,
    key: usize,
    call: Call,
    outcome: Outcome,
    /// Nanoseconds since the test began; an unknown outcome's `response` is when the server was
    /// known to be dead, the latest moment it can have taken effect.
    invoke: u64,
    response: u64,
}

const A1_KEYS: usize = 4;
const A1_CLIENTS: usize = 16;
const A1_NAMESPACE: &str = "a1";

fn a1_name(key: usize) -> String {
    format!("reg-{key}")
}

/// Runs one call; returns its outcome and, for a response the call cannot have, a description.
async fn a1_call(raw: &Raw, key: usize, call: &Call) -> (Outcome, Option<String>) {
    let name = a1_name(key);
    let path = configmap_path(A1_NAMESPACE, &name);
    let request = async {
        match call {
            Call::Read => raw.get(&path).await,
            Call::Create { value } => {
                raw.post(
                    &configmaps(A1_NAMESPACE),
                    &configmap(&name, json!({"v": value.to_string()})),
                )
                .await
            }
            Call::Update { value, expected } => {
                let mut object = configmap(&name, json!({"v": value.to_string()}));
                object["metadata"]["resourceVersion"] = json!(expected.to_string());
                raw.put(&path, &object).await
            }
            Call::Delete { expected } => {
                raw.delete(
                    &path,
                    Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1",
                        "preconditions": {"resourceVersion": expected.to_string()}})),
                )
                .await
            }
        }
    };
    let reply = match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) | Err(_) => return (Outcome::Unknown, None),
    };
    if reply.status >= 500 {
        return (Outcome::Unknown, None);
    }
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let reason = body["reason"].as_str().unwrap_or("");
    let version = |object: &Value| Version {
        value: object
            .pointer("/data/v")
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX),
        rv: rv_of(object),
    };
    let outcome = match (call, reply.status, reason) {
        (Call::Read, 200, _) => Outcome::Read(Some(version(&body))),
        (Call::Read, 404, "NotFound") => Outcome::Read(None),
        (Call::Create { .. }, 201, _) | (Call::Update { .. }, 200, _) => {
            Outcome::Written(rv_of(&body))
        }
        (Call::Create { .. }, 409, "AlreadyExists") => Outcome::AlreadyExists,
        (Call::Update { .. } | Call::Delete { .. }, 409, "Conflict") => Outcome::Conflict,
        (Call::Update { .. } | Call::Delete { .. }, 404, "NotFound") => Outcome::NotFound,
        (Call::Delete { expected }, 200, _) => {
            // The answer is the object as it was: the version the precondition named.
            if rv_of(&body) != *expected {
                return (
                    Outcome::Deleted,
                    Some(format!(
                        "delete with precondition {expected} answered {}",
                        reply.text()
                    )),
                );
            }
            Outcome::Deleted
        }
        _ => {
            return (
                Outcome::Unknown,
                Some(format!("{call:?} got {}: {}", reply.status, reply.text())),
            );
        }
    };
    (outcome, None)
}

/// One client of the burst: read a key, then create it, or update or delete the version read.
async fn a1_client(
    raw: Raw,
    client: usize,
    round: usize,
    mut rng: Rng,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Op>, Vec<String>) {
    let mut history = Vec::new();
    let mut unexpected = Vec::new();
    let mut sequence = 0u64;
    let now = |t0: Instant| t0.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.range(0, A1_KEYS as u64) as usize;
        let mut call = Call::Read;
        // A read, then a write based on what it saw (or on an older read, for more conflicts).
        for _ in 0..2 {
            let invoke = now(t0);
            let (outcome, odd) = a1_call(&raw, key, &call).await;
            let response = now(t0);
            unexpected.extend(odd);
            let next = match &outcome {
                Outcome::Read(seen) => {
                    sequence += 1;
                    // Unique across clients and rounds: a value names the write that made it.
                    let value = (round as u64 + 1) * 1_000_000_000
                        + (client as u64 + 1) * 1_000_000
                        + sequence;
                    let stale = rng.chance(10);
                    Some(match seen {
                        None => Call::Create { value },
                        Some(v) if rng.chance(20) => Call::Delete {
                            expected: if stale { v.rv - 1 } else { v.rv },
                        },
                        Some(v) => Call::Update {
                            value,
                            expected: if stale { v.rv - 1 } else { v.rv },
                        },
                    })
                }
                _ => None,
            };
            let unknown = outcome == Outcome::Unknown;
            history.push(Op {
                client,
                key,
                call: call.clone(),
                outcome,
                invoke,
                response,
            });
            if unknown {
                return (history, unexpected);
            }
            match next {
                Some(next) => call = next,
                None => break,
            }
        }
    }
    (history, unexpected)
}

/// The states a key can be in after `op`, from each state in `states` (a set: the model is
/// nondeterministic because an unknown outcome may or may not have taken effect).
fn a1_step(
    states: &[Option<Version>],
    op: &Op,
    resolved: &HashMap<u64, i64>,
) -> Vec<Option<Version>> {
    let mut out = Vec::new();
    for &state in states {
        let current_rv = state.map(|v| v.rv);
        match (&op.call, &op.outcome) {
            (Call::Read, Outcome::Read(seen)) if state == *seen => out.push(state),
            (Call::Create { value }, Outcome::Written(rv)) if state.is_none() => {
                out.push(Some(Version {
                    value: *value,
                    rv: *rv,
                }))
            }
            (Call::Create { .. }, Outcome::AlreadyExists) if state.is_some() => out.push(state),
            (Call::Update { value, expected }, Outcome::Written(rv))
                if current_rv == Some(*expected) && *rv > *expected =>
            {
                out.push(Some(Version {
                    value: *value,
                    rv: *rv,
                }))
            }
            (Call::Update { expected, .. } | Call::Delete { expected }, Outcome::Conflict)
                if current_rv.is_some_and(|r| r != *expected) =>
            {
                out.push(state)
            }
            (Call::Update { .. } | Call::Delete { .. }, Outcome::NotFound) if state.is_none() => {
                out.push(state)
            }
            (Call::Delete { expected }, Outcome::Deleted) if current_rv == Some(*expected) => {
                out.push(None)
            }
            (call, Outcome::Unknown) => {
                // It may not have happened at all...
                out.push(state);
                // ... or it happened. A write that happened put a value the test knows only if it
                // was seen later (by a read or the final state): its revision comes from there. A
                // write nobody saw cannot have happened and been overwritten, since every later
                // write names the revision it replaces and no client knew that one.
                match call {
                    Call::Create { value } if state.is_none() => {
                        if let Some(rv) = resolved.get(value) {
                            out.push(Some(Version {
                                value: *value,
                                rv: *rv,
                            }));
                        }
                    }
                    Call::Update { value, expected } if current_rv == Some(*expected) => {
                        if let Some(rv) = resolved.get(value).filter(|rv| **rv > *expected) {
                            out.push(Some(Version {
                                value: *value,
                                rv: *rv,
                            }));
                        }
                    }
                    Call::Delete { expected } if current_rv == Some(*expected) => out.push(None),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Wing & Gong's linearizability check with Lowe's memoization, as porcupine does it: a
/// depth-first search for an order of the operations that respects real time (an operation
/// that returned before another was invoked comes first) and that the model accepts. The model
/// is nondeterministic, so its state is the set of states the key can be in.
fn a1_linearizable(
    initial: Option<Version>,
    ops: &[Op],
    resolved: &HashMap<u64, i64>,
) -> Result<(), String> {
    const NIL: usize = usize::MAX;
    let n = ops.len();
    // Events: a call and a return per operation, by time; a call before a return at the same
    // instant (the operations overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        events.push((op.response.max(op.invoke), true, i));
    }
    events.sort();
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut return_of = vec![NIL; n];
    let mut previous = head;
    for (e, &(_, is_return, op)) in events.iter().enumerate() {
        next[previous] = e;
        prev[e] = previous;
        previous = e;
        if is_return {
            return_of[op] = e;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = next[e];
        if next[e] != NIL {
            prev[next[e]] = prev[e];
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = e;
        if next[e] != NIL {
            prev[next[e]] = e;
        }
    };
    let mut state = vec![initial];
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, Vec<Option<Version>>)> = HashSet::new();
    let mut stack: Vec<(usize, Vec<Option<Version>>)> = Vec::new();
    let mut deepest = 0;
    let mut steps = 0u64;
    let mut entry = next[head];
    while next[head] != NIL {
        steps += 1;
        if steps > 20_000_000 {
            return Err(format!(
                "the search gave up after {steps} steps ({n} operations)"
            ));
        }
        let (_, is_return, op) = events[entry];
        if !is_return {
            let after = a1_step(&state, &ops[op], resolved);
            if !after.is_empty() {
                let mut with = linearized.clone();
                with[op / 64] |= 1 << (op % 64);
                if cache.insert((with.clone(), after.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, after)));
                    linearized = with;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, return_of[op]);
                    deepest = deepest.max(stack.len());
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // This operation returned before any order could place it: undo the last choice.
            let Some((call, before)) = stack.pop() else {
                let mut pending: Vec<&Op> = ops
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| linearized[i / 64] & (1 << (i % 64)) == 0)
                    .map(|(_, op)| op)
                    .collect();
                pending.sort_by_key(|op| op.invoke);
                pending.truncate(40);
                return Err(format!(
                    "not linearizable: at most {deepest} of {n} operations can be ordered; \
                     the earliest of the rest: {pending:#?}"
                ));
            };
            let op = events[call].2;
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, return_of[op]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Ok(())
}

/// Checks one round of A1 (the history from one start to the read after the restart that
/// followed the kill): durability of acknowledged writes and deletes, then linearizability per key.
/// Returns how many indeterminate writes turned out to have taken effect.
fn a1_check_round(
    round: usize,
    initial: &[Option<Version>],
    history: &[Op],
    finals: &[Option<Version>],
) -> usize {
    // Every value seen (by a read, or in the final state) with its revision. A value is unique to
    // the write that made it, so it can only ever be seen with one revision.
    let mut resolved: HashMap<u64, i64> = HashMap::new();
    let mut acked: HashMap<u64, i64> = HashMap::new();
    for op in history {
        if let (Call::Create { value } | Call::Update { value, .. }, Outcome::Written(rv)) =
            (&op.call, &op.outcome)
        {
            acked.insert(*value, *rv);
        }
    }
    let seen = history
        .iter()
        .filter_map(|op| match &op.outcome {
            Outcome::Read(Some(v)) => Some(*v),
            _ => None,
        })
        .chain(finals.iter().flatten().copied());
    for v in seen {
        if let Some(rv) = acked.get(&v.value) {
            assert_eq!(
                *rv, v.rv,
                "round {round}: value {} was acknowledged at revision {rv} but read at {}",
                v.value, v.rv
            );
        }
        let previous = resolved.insert(v.value, v.rv);
        assert!(
            previous.is_none_or(|p| p == v.rv),
            "round {round}: value {} read at revisions {previous:?} and {}",
            v.value,
            v.rv
        );
    }
    for key in 0..A1_KEYS {
        let ops: Vec<Op> = history.iter().filter(|op| op.key == key).cloned().collect();
        let last = finals[key];
        // Durability, checked directly for a clear message (the linearizability check below
        // implies all of it).
        for op in &ops {
            match (&op.call, &op.outcome) {
                (Call::Create { value } | Call::Update { value, .. }, Outcome::Written(rv)) => {
                    let overwritten = last.is_some_and(|l| l.rv > *rv);
                    let deleted = last.is_none()
                        && ops.iter().any(|d| {
                            matches!(d.call, Call::Delete { expected } if expected >= *rv)
                                && matches!(d.outcome, Outcome::Deleted | Outcome::Unknown)
                        });
                    assert!(
                        last == Some(Version {
                            value: *value,
                            rv: *rv
                        }) || overwritten
                            || deleted,
                        "round {round}: acknowledged write of {value} at revision {rv} to key {key} \
                         is lost: the key is {last:?} after the restart"
                    );
                }
                (Call::Delete { expected }, Outcome::Deleted) => {
                    assert!(
                        last.is_none_or(|l| l.rv > *expected),
                        "round {round}: acknowledged delete of key {key} at revision {expected} \
                         came back: {last:?}"
                    );
                }
                _ => {}
            }
        }
        let mut with_final = ops.clone();
        let end = history
            .iter()
            .map(|op| op.response)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        with_final.push(Op {
            client: usize::MAX,
            key,
            call: Call::Read,
            outcome: Outcome::Read(last),
            invoke: end,
            response: end,
        });
        if let Err(e) = a1_linearizable(initial[key], &with_final, &resolved) {
            panic!(
                "round {round}, key {key} (starting as {:?}): {e}",
                initial[key]
            );
        }
    }
    history
        .iter()
        .filter(|op| {
            op.outcome == Outcome::Unknown
                && matches!(op.call, Call::Create { value } | Call::Update { value, .. }
                    if resolved.contains_key(&value))
        })
        .count()
}

/// Revisions across the whole test, every round and restart: an acknowledged write's revision is
/// unique, and greater than every revision any operation saw before the write was sent.
fn a1_check_revisions(history: &[Op]) {
    let mut written = HashSet::new();
    for op in history {
        if let Outcome::Written(rv) = op.outcome {
            assert!(written.insert(rv), "revision {rv} was given to two writes");
        }
    }
    let mut observed: Vec<(u64, i64)> = history
        .iter()
        .filter_map(|op| match &op.outcome {
            Outcome::Written(rv) => Some((op.response, *rv)),
            Outcome::Read(Some(v)) => Some((op.response, v.rv)),
            _ => None,
        })
        .collect();
    observed.sort();
    let mut writes: Vec<&Op> = history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Written(_)))
        .collect();
    writes.sort_by_key(|op| op.invoke);
    let mut highest = (0i64, 0u64);
    let mut i = 0;
    for write in writes {
        while i < observed.len() && observed[i].0 < write.invoke {
            if observed[i].1 > highest.0 {
                highest = (observed[i].1, observed[i].0);
            }
            i += 1;
        }
        let Outcome::Written(rv) = write.outcome else {
            unreachable!()
        };
        assert!(
            rv > highest.0,
            "revision went backwards: {write:?} got {rv}, but revision {} was seen before it was sent",
            highest.0
        );
    }
}

/// A1: 16 clients create, update (with a resourceVersion precondition) and delete a few
/// ConfigMaps while the server is killed with SIGKILL at a random moment, three times over.
///
/// Every operation's invocation and response time is recorded; an operation without an answer
/// (connection broken, timeout, 5xx) is *indeterminate*. After each restart the final state of
/// every key is read. Checks:
/// - every acknowledged create/update is present with its resourceVersion unless a later write
///   (or a delete of a version at least as new) replaced it; no acknowledged delete comes back;
/// - resourceVersions are unique and never go backwards, across restarts too: a write's
///   revision is greater than any revision seen before the write was sent;
/// - the history of each key is linearizable. The model is a register with compare-and-set:
///   its state is absent or (value, revision); create needs absent, update and delete need the
///   revision they name (else 409 Conflict, or 404 when absent), a read returns the state. An
///   indeterminate operation may or may not take effect at any point between its invocation and
///   the kill (see [`a1_step`] for what its effect can be); the checker is [`a1_linearizable`].
///   Linearizability is local (Herlihy & Wing), so checking each key alone suffices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_kill_9_during_a_write_burst_keeps_acked_writes_and_linearizability() {
    let mut rng = Rng::for_test("a1");
    let mut berth = Berth::start();
    create_namespace(&berth.raw().await, A1_NAMESPACE).await;
    let t0 = Instant::now();
    let mut initial: Vec<Option<Version>> = vec![None; A1_KEYS];
    let mut everything: Vec<Op> = Vec::new();
    let mut indeterminate = 0;
    let mut acknowledged = 0;
    let mut applied = 0;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for client in 0..A1_CLIENTS {
            let raw = berth.raw().await;
            clients.push(tokio::spawn(a1_client(
                raw,
                client,
                round,
                rng.fork(client as u64),
                t0,
                stop.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1200))).await;
        blocking(|| berth.kill());
        let dead = t0.elapsed().as_nanos() as u64;
        stop.store(true, Ordering::Relaxed);
        let mut history = Vec::new();
        let mut unexpected = Vec::new();
        for client in clients {
            let (ops, odd) = client.await.expect("client");
            history.extend(ops);
            unexpected.extend(odd);
        }
        assert!(
            unexpected.is_empty(),
            "answers the calls cannot have: {unexpected:#?}"
        );
        for op in &mut history {
            if op.outcome == Outcome::Unknown {
                // It can have taken effect any time until the server died, not later.
                op.response = dead.max(op.invoke);
                indeterminate += 1;
            }
            if matches!(op.outcome, Outcome::Written(_) | Outcome::Deleted) {
                acknowledged += 1;
            }
        }
        blocking(|| berth.launch());
        let raw = berth.raw().await;
        let mut finals = Vec::new();
        for key in 0..A1_KEYS {
            let invoke = t0.elapsed().as_nanos() as u64;
            let (outcome, odd) = a1_call(&raw, key, &Call::Read).await;
            let response = t0.elapsed().as_nanos() as u64;
            assert!(odd.is_none(), "{odd:?}");
            let Outcome::Read(last) = outcome.clone() else {
                panic!("cannot read key {key} after the restart: {outcome:?}")
            };
            finals.push(last);
            history.push(Op {
                client: usize::MAX,
                key,
                call: Call::Read,
                outcome,
                invoke,
                response,
            });
        }
        let (finals_only, burst): (Vec<Op>, Vec<Op>) = history
            .iter()
            .cloned()
            .partition(|op| op.client == usize::MAX);
        applied += a1_check_round(round, &initial, &burst, &finals);
        everything.extend(burst);
        everything.extend(finals_only);
        initial = finals;
    }
    a1_check_revisions(&everything);
    // One more write after the last restart: its revision is above everything seen.
    let raw = berth.raw().await;
    let reply = raw
        .post(
            &configmaps(A1_NAMESPACE),
            &configmap("after", json!({"v": "0"})),
        )
        .await
        .expect("create after restart");
    let after = rv_of(&expect_ok(&reply, 201));
    let highest = everything
        .iter()
        .filter_map(|op| match &op.outcome {
            Outcome::Written(rv) => Some(*rv),
            Outcome::Read(Some(v)) => Some(v.rv),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(
        after > highest,
        "revision {after} after the restarts is not above {highest}"
    );
    eprintln!(
        "a1: {} operations, {acknowledged} acknowledged writes, {indeterminate} indeterminate \
         ({applied} indeterminate writes found applied)",
        everything.len()
    );
    assert!(
        acknowledged >= 30,
        "the bursts acknowledged only {acknowledged} writes"
    );
}

/// The checker itself must be able to fail: a lost acknowledged write and a stale read are caught.
#[test]
fn a1_checker_rejects_histories_that_are_not_linearizable() {
    let op = |call, outcome, invoke, response| Op {
        client: 0,
        key: 0,
        call,
        outcome,
        invoke,
        response,
    };
    let resolved = HashMap::new();
    let v = |value, rv| Some(Version { value, rv });
    // Create acknowledged at 10, then a read at 20 that sees nothing: lost write.
    let lost = [
        op(Call::Create { value: 1 }, Outcome::Written(10), 0, 1),
        op(Call::Read, Outcome::Read(None), 2, 3),
    ];
    assert!(a1_linearizable(None, &lost, &resolved).is_err());
    // Update acknowledged, later read returns the old version: stale read.
    let stale = [
        op(
            Call::Update {
                value: 2,
                expected: 5,
            },
            Outcome::Written(11),
            0,
            1,
        ),
        op(Call::Read, Outcome::Read(v(1, 5)), 2, 3),
    ];
    assert!(a1_linearizable(v(1, 5), &stale, &resolved).is_err());
    // Two updates of the same version both succeed: a lost update.
    let both = [
        op(
            Call::Update {
                value: 2,
                expected: 5,
            },
            Outcome::Written(11),
            0,
            10,
        ),
        op(
            Call::Update {
                value: 3,
                expected: 5,
            },
            Outcome::Written(12),
            0,
            10,
        ),
    ];
    assert!(a1_linearizable(v(1, 5), &both, &resolved).is_err());
    // Concurrent operations may be ordered either way; an unknown delete may have happened.
    let fine = [
        op(Call::Read, Outcome::Read(v(2, 11)), 0, 10),
        op(
            Call::Update {
                value: 2,
                expected: 5,
            },
            Outcome::Written(11),
            1,
            9,
        ),
        op(Call::Delete { expected: 11 }, Outcome::Unknown, 11, 20),
        op(Call::Read, Outcome::Read(None), 21, 22),
    ];
    assert_eq!(a1_linearizable(v(1, 5), &fine, &resolved), Ok(()));
    // But an unknown create nobody saw cannot explain a value.
    let unseen = [
        op(Call::Create { value: 7 }, Outcome::Unknown, 0, 5),
        op(Call::Read, Outcome::Read(v(7, 3)), 6, 7),
    ];
    assert!(a1_linearizable(None, &unseen, &resolved).is_err());
    let resolved = HashMap::from([(7, 3)]);
    assert_eq!(a1_linearizable(None, &unseen, &resolved), Ok(()));
}
