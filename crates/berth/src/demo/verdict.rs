//! What users saw, judged: the adder story's expectations as pure functions over the replies
//! the demo's clients received, so they are unit-tested without a cluster.
//!
//! - In memory mode the story expects the bug: replicas' totals disagree and some user sees
//!   a total lower than one they saw before.
//! - With the total in one shared place (a locked file, a database) it expects the fix:
//!   every returned total distinct, each user's totals only growing, and the totals forming
//!   one chain from the starting total in which each step is exactly one add's number — so
//!   the final total is the starting total plus the sum of everything sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One add as a user saw it: the number sent, the total returned and the replica that
/// answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub amount: i64,
    pub total: i64,
    pub pod: String,
}

/// The first moment some user saw the total go down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WentDown {
    pub client: usize,
    pub seen: i64,
    pub then: i64,
}

/// What the in-memory stage showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Each replica's highest total, as its answers showed it.
    pub replicas: BTreeMap<String, i64>,
    pub went_down: Option<WentDown>,
}

impl Divergence {
    /// The bug the story expects: more than one total, and a user saw one go down.
    pub fn shows_the_bug(&self) -> bool {
        let distinct: BTreeSet<i64> = self.replicas.values().copied().collect();
        distinct.len() > 1 && self.went_down.is_some()
    }
}

/// Reads the in-memory stage's replies (`clients[i]` is client i's adds in order).
pub fn divergence(clients: &[Vec<Add>]) -> Divergence {
    let mut replicas: BTreeMap<String, i64> = BTreeMap::new();
    for add in clients.iter().flatten() {
        let total = replicas.entry(add.pod.clone()).or_insert(add.total);
        *total = (*total).max(add.total);
    }
    let went_down = clients.iter().enumerate().find_map(|(client, adds)| {
        let mut highest = i64::MIN;
        adds.iter().find_map(|add| {
            let down = (add.total < highest).then_some(WentDown {
                client,
                seen: highest,
                then: add.total,
            });
            highest = highest.max(add.total);
            down
        })
    });
    Divergence {
        replicas,
        went_down,
    }
}

/// What a consistent stage showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub adds: usize,
    pub sum: i64,
    pub start: i64,
    pub end: i64,
    /// How many adds each replica answered.
    pub answered_by: BTreeMap<String, usize>,
}

/// Why a stage that should be consistent was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inconsistency {
    Repeated {
        total: i64,
    },
    WentDown(WentDown),
    /// Sorted by total, an add's total is not the previous total plus its own number: an
    /// add was lost or counted twice.
    Broken {
        previous: i64,
        amount: i64,
        total: i64,
    },
    FinalTotal {
        expected: i64,
        found: i64,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inconsistency::Repeated { total } => {
                write!(f, "the total {total} was returned to more than one add")
            }
            Inconsistency::WentDown(w) => write!(
                f,
                "client {} saw the total go down from {} to {}",
                w.client + 1,
                w.seen,
                w.then
            ),
            Inconsistency::Broken {
                previous,
                amount,
                total,
            } => write!(
                f,
                "after the total {previous}, an add of {amount} returned {total}, not {}",
                previous + amount
            ),
            Inconsistency::FinalTotal { expected, found } => write!(
                f,
                "the final total is {found}, but the starting total plus everything sent is \
                 {expected}"
            ),
        }
    }
}

/// Checks a consistent stage: `start` is the total before the clients began, `end` the total
/// read after they finished. Amounts must be positive (every add moves the total).
pub fn agreement(clients: &[Vec<Add>], start: i64, end: i64) -> Result<Agreement, Inconsistency> {
    let divergence = divergence(clients);
    if let Some(down) = divergence.went_down {
        return Err(Inconsistency::WentDown(down));
    }
    let mut all: Vec<&Add> = clients.iter().flatten().collect();
    all.sort_by_key(|add| add.total);
    if let Some(pair) = all.windows(2).find(|w| w[0].total == w[1].total) {
        return Err(Inconsistency::Repeated {
            total: pair[0].total,
        });
    }
    let mut previous = start;
    for add in &all {
        if previous + add.amount != add.total {
            return Err(Inconsistency::Broken {
                previous,
                amount: add.amount,
                total: add.total,
            });
        }
        previous = add.total;
    }
    let sum: i64 = all.iter().map(|add| add.amount).sum();
    if start + sum != end {
        return Err(Inconsistency::FinalTotal {
            expected: start + sum,
            found: end,
        });
    }
    let mut answered_by = BTreeMap::new();
    for add in &all {
        *answered_by.entry(add.pod.clone()).or_insert(0) += 1;
    }
    Ok(Agreement {
        adds: all.len(),
        sum,
        start,
        end,
        answered_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(amount: i64, total: i64, pod: &str) -> Add {
        Add {
            amount,
            total,
            pod: pod.into(),
        }
    }

    #[test]
    fn memory_replicas_that_disagree_and_a_total_going_down_show_the_bug() {
        let clients = vec![
            vec![add(1, 1, "a"), add(1, 2, "a"), add(1, 1, "b")],
            vec![add(1, 2, "b"), add(1, 1, "c")],
        ];
        let seen = divergence(&clients);
        assert_eq!(
            seen.replicas,
            BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 1)])
        );
        assert_eq!(
            seen.went_down,
            Some(WentDown {
                client: 0,
                seen: 2,
                then: 1
            })
        );
        assert!(seen.shows_the_bug());
    }

    #[test]
    fn one_replica_in_memory_does_not_show_the_bug() {
        let clients = vec![vec![add(1, 1, "a"), add(1, 3, "a")], vec![add(1, 2, "a")]];
        let seen = divergence(&clients);
        assert_eq!(seen.went_down, None);
        assert!(!seen.shows_the_bug());
    }

    #[test]
    fn a_consistent_chain_from_the_start_agrees() {
        let clients = vec![
            vec![add(2, 12, "a"), add(3, 18, "b")],
            vec![add(1, 13, "b"), add(2, 15, "c")],
        ];
        let found = agreement(&clients, 10, 18).expect("consistent");
        assert_eq!(found.adds, 4);
        assert_eq!(found.sum, 8);
        assert_eq!(
            found.answered_by,
            BTreeMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 1)])
        );
    }

    #[test]
    fn lost_doubled_and_missing_adds_are_named() {
        let lost = vec![vec![add(2, 12, "a"), add(3, 14, "a")]];
        assert_eq!(
            agreement(&lost, 10, 14),
            Err(Inconsistency::Broken {
                previous: 12,
                amount: 3,
                total: 14
            })
        );
        let repeated = vec![vec![add(1, 11, "a")], vec![add(1, 11, "b")]];
        assert_eq!(
            agreement(&repeated, 10, 11),
            Err(Inconsistency::Repeated { total: 11 })
        );
        let down = vec![vec![add(1, 12, "a"), add(1, 11, "b")]];
        assert!(matches!(
            agreement(&down, 10, 12),
            Err(Inconsistency::WentDown(_))
        ));
        let short = vec![vec![add(1, 11, "a")]];
        assert_eq!(
            agreement(&short, 10, 12),
            Err(Inconsistency::FinalTotal {
                expected: 11,
                found: 12
            })
        );
        assert_eq!(
            Inconsistency::FinalTotal {
                expected: 11,
                found: 12
            }
            .to_string(),
            "the final total is 12, but the starting total plus everything sent is 11"
        );
    }
}
