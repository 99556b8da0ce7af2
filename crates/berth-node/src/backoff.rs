//! kubelet's crash-loop back-off for restarting a container: the first restart is immediate,
//! then 10 s, doubling to 5 min; a container that stays quiet for twice the cap (10 min)
//! starts over from nothing.

use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

/// The back-off of one container of one pod.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    /// The current delay and when it was last moved on.
    entry: Option<(Duration, Instant)>,
}

/// What to do about a container that needs restarting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start it now.
    Restart,
    /// Wait: it is in back-off for `delay`, which ends at `until`.
    Wait { delay: Duration, until: Instant },
}

impl Backoff {
    /// Decides at `now` whether a restart may happen; a `Restart` moves the back-off on, so the
    /// next restart waits longer.
    pub fn decide(&mut self, now: Instant) -> Decision {
        self.decide_with(now, INITIAL, MAX)
    }

    pub fn decide_with(&mut self, now: Instant, initial: Duration, max: Duration) -> Decision {
        match self.entry {
            Some((delay, last)) if now < last + delay => Decision::Wait {
                delay,
                until: last + delay,
            },
            Some((delay, last)) if now.duration_since(last) <= max * 2 => {
                self.entry = Some(((delay * 2).min(max), now));
                Decision::Restart
            }
            _ => {
                self.entry = Some((initial, now));
                Decision::Restart
            }
        }
    }
}

/// Go's rendering of a duration as kubelet's messages show it (`10s`, `2m40s`, `5m0s`).
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_at_once_then_doubles_to_the_cap_and_resets_after_quiet() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.decide(t0), Decision::Restart);
        // Crashes again at once: wait 10 s.
        assert_eq!(
            b.decide(t0 + Duration::from_secs(1)),
            Decision::Wait {
                delay: INITIAL,
                until: t0 + INITIAL
            }
        );
        let mut now = t0 + INITIAL;
        assert_eq!(b.decide(now), Decision::Restart);
        let mut delays = vec![];
        for _ in 0..8 {
            let Decision::Wait { delay, until } = b.decide(now) else {
                panic!("expected a wait");
            };
            delays.push(delay.as_secs());
            now = until;
            assert_eq!(b.decide(now), Decision::Restart);
        }
        assert_eq!(delays, vec![20, 40, 80, 160, 300, 300, 300, 300]);
        // Ten quiet minutes and more: back to an immediate restart then 10 s.
        now += MAX * 2 + MAX + Duration::from_secs(1);
        assert_eq!(b.decide(now), Decision::Restart);
        assert!(matches!(b.decide(now), Decision::Wait { delay, .. } if delay == INITIAL));
    }

    #[test]
    fn durations_render_like_go() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
