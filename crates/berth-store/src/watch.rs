//! Watch streams, shared by every backend in this crate: replay history after a revision, then
//! follow the live feed, without gaps or duplicates.
//!
//! A backend supplies two things:
//! - a [`History`] that replays logged events after a revision (from the SQLite log, or the
//!   in-memory event map), chunk by chunk, reporting how far the chunk is complete;
//! - a [`Feed`], a broadcast of committed [`Batch`]es, published in revision order and only
//!   after the batch is durable.
//!
//! [`watch`] subscribes to the feed *before* its first replay, so every batch committed after the
//! replay's snapshot also arrives on the feed. The stream keeps one number, `position`: every
//! matching event with a revision ≤ `position` has been queued for delivery. Feed events at or
//! below it are duplicates of replayed ones and are skipped. A watcher that lags behind the feed
//! (the broadcast dropped batches it had not read) goes back to replaying history from
//! `position`, then continues with the feed.
//!
//! The stream is a plain state machine driven by its consumer's polls: no task is spawned for
//! it, so dropping the stream ends everything (a history read already handed to a blocking
//! thread finishes on its own and returns its connection).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::{Event, Result, Revision, StoreError, WatchItem, WatchOptions, WatchStream};

/// The events of one commit, as published to watchers.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The store's revision after the commit: no event ≤ this revision is still to come.
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// The live feed of committed batches.
pub(crate) type Feed = broadcast::Sender<Arc<Batch>>;

/// How many batches the feed buffers for a slow watcher before it has to re-read history.
pub(crate) const FEED_CAPACITY: usize = 1024;

/// Events per history read, so a watch from far back never loads the whole log at once.
pub(crate) const REPLAY_CHUNK: usize = 1000;

/// A zero interval would make an idle stream spin producing progress items.
const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(1);

pub(crate) fn new_feed() -> Feed {
    broadcast::channel(FEED_CAPACITY).0
}

/// The keys a watch follows: everything starting with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPrefix {
    pub prefix: String,
    /// The smallest byte string above every key with this prefix; `None` = unbounded.
    pub end: Option<Vec<u8>>,
}

impl KeyPrefix {
    pub fn new(prefix: String) -> Self {
        let end = byte_prefix_end(prefix.as_bytes());
        KeyPrefix { prefix, end }
    }

    pub fn matches(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` if
/// there is none (the prefix is empty or all 0xff). Works on bytes rather than on `str` (unlike
/// [`crate::prefix_end`]) so prefixes ending in non-ASCII characters get a correct bound too.
pub(crate) fn byte_prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One history read.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Matching events with revisions in `(after, through]`, in revision order.
    pub events: Vec<Event>,
    /// Every matching event up to this revision is in `events`.
    pub through: Revision,
    /// `through` is the store's revision at the time of the read (nothing more to replay).
    pub caught_up: bool,
}

/// Replays logged events.
pub(crate) trait History: Send + Sync + 'static {
    /// Up to `limit` events matching `prefix` with revisions above `after`, read from one
    /// consistent snapshot. Fails with [`StoreError::Compacted`] if `after` is older than the
    /// compacted revision.
    fn replay(
        &self,
        prefix: Arc<KeyPrefix>,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Replay>>;
}

/// Starts a watch. Fails immediately (not inside the stream) when `after` is compacted.
pub(crate) async fn watch(
    history: Arc<dyn History>,
    feed: &Feed,
    prefix: String,
    after: Revision,
    options: WatchOptions,
) -> Result<WatchStream> {
    // Subscribe before reading history: whatever commits after the read's snapshot is then
    // guaranteed to be on this receiver.
    let receiver = feed.subscribe();
    let prefix = Arc::new(KeyPrefix::new(prefix));
    let first = history.replay(prefix.clone(), after, REPLAY_CHUNK).await?;
    let interval = options.progress_interval.max(MIN_PROGRESS_INTERVAL);
    let mut state = WatchState {
        history,
        receiver,
        prefix,
        position: after,
        pending: VecDeque::new(),
        caught_up: false,
        finished: false,
        interval,
        deadline: Instant::now() + interval,
    };
    state.absorb(first);
    let stream = futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    });
    Ok(Box::pin(stream))
}

struct WatchState {
    history: Arc<dyn History>,
    receiver: broadcast::Receiver<Arc<Batch>>,
    prefix: Arc<KeyPrefix>,
    /// Every matching event with a revision ≤ this is in `pending` or already delivered.
    position: Revision,
    pending: VecDeque<Event>,
    /// False while history must be read before the feed can be trusted (at start, after lag).
    caught_up: bool,
    /// Set after a terminal error: the stream ends once `pending` is drained.
    finished: bool,
    interval: Duration,
    /// When to send a progress item if nothing else is delivered before then.
    deadline: Instant,
}

impl WatchState {
    fn absorb(&mut self, replay: Replay) {
        self.pending.extend(replay.events);
        self.position = self.position.max(replay.through);
        self.caught_up = replay.caught_up;
    }

    fn apply(&mut self, batch: &Batch) {
        for event in &batch.events {
            if event.kv.mod_revision > self.position && self.prefix.matches(&event.kv.key) {
                self.pending.push_back(event.clone());
            }
        }
        self.position = self.position.max(batch.revision);
    }

    async fn next_item(&mut self) -> Option<Result<WatchItem>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.deadline = Instant::now() + self.interval;
                return Some(Ok(WatchItem::Event(event)));
            }
            if self.finished {
                return None;
            }
            if !self.caught_up {
                match self
                    .history
                    .replay(self.prefix.clone(), self.position, REPLAY_CHUNK)
                    .await
                {
                    Ok(replay) => self.absorb(replay),
                    Err(error) => {
                        self.finished = true;
                        return Some(Err(error));
                    }
                }
                continue;
            }
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(batch) => self.apply(&batch),
                    // Batches were dropped before we read them; they are in the history.
                    Err(RecvError::Lagged(_)) => self.caught_up = false,
                    Err(RecvError::Closed) => {
                        self.finished = true;
                        return Some(Err(StoreError::Unavailable("the store was closed".to_string())));
                    }
                },
                () = tokio::time::sleep_until(self.deadline) => {
                    self.deadline = Instant::now() + self.interval;
                    return Some(Ok(WatchItem::Progress(self.position)));
                }
            }
        }
    }
}

/// Replay the events of `events` (ordered by revision) that match, after `after`, at most `limit`.
/// Shared by backends that keep their history as an in-memory list.
pub(crate) fn replay_from_slice<'a>(
    events: impl Iterator<Item = &'a Event>,
    prefix: &KeyPrefix,
    after: Revision,
    current: Revision,
    limit: usize,
) -> Replay {
    let mut out = Vec::new();
    for event in events {
        if !prefix.matches(&event.kv.key) {
            continue;
        }
        if out.len() == limit {
            let through = out.last().map_or(after, |e: &Event| e.kv.mod_revision);
            return Replay {
                events: out,
                through,
                caught_up: false,
            };
        }
        out.push(event.clone());
    }
    Replay {
        events: out,
        through: current,
        caught_up: true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use futures::{FutureExt, StreamExt};

    use super::*;
    use crate::{EventKind, KeyValue};

    #[test]
    fn byte_prefix_end_bounds_every_extension() {
        assert_eq!(byte_prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(byte_prefix_end(b""), None);
        assert_eq!(byte_prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(byte_prefix_end(b"\xff\xff"), None);
        // A non-ASCII last character still gets a bound above its extensions.
        let end = byte_prefix_end("é".as_bytes()).unwrap_or_default();
        assert!("éz".as_bytes() < end.as_slice());
        assert_eq!(end, "ê".as_bytes());
    }

    fn event(revision: Revision, key: &str) -> Event {
        let kv = KeyValue {
            key: key.to_string(),
            value: Bytes::new(),
            create_revision: revision,
            mod_revision: revision,
        };
        Event {
            kind: EventKind::Put,
            kv,
            prev_kv: None,
        }
    }

    /// A history the test appends to by hand, with a count of replays.
    #[derive(Default)]
    struct FakeHistory {
        events: Mutex<Vec<Event>>,
        replays: Mutex<usize>,
    }

    impl FakeHistory {
        fn push(&self, event: Event) {
            self.events.lock().unwrap().push(event);
        }
    }

    impl History for FakeHistory {
        fn replay(
            &self,
            prefix: Arc<KeyPrefix>,
            after: Revision,
            limit: usize,
        ) -> BoxFuture<'static, Result<Replay>> {
            *self.replays.lock().unwrap() += 1;
            let events = self.events.lock().unwrap();
            let current = events.last().map_or(0, |e| e.kv.mod_revision);
            let later = events.iter().filter(|e| e.kv.mod_revision > after);
            futures::future::ready(Ok(replay_from_slice(later, &prefix, after, current, limit)))
                .boxed()
        }
    }

    /// The next stream item; a broken stream fails the test instead of hanging it.
    async fn next(stream: &mut WatchStream) -> Option<Result<WatchItem>> {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watch stalled")
    }

    /// The next event, skipping progress items (for at most a few seconds).
    async fn next_event(stream: &mut WatchStream) -> Revision {
        let skip_progress = async {
            loop {
                match next(stream).await {
                    Some(Ok(WatchItem::Event(event))) => return event.kv.mod_revision,
                    Some(Ok(WatchItem::Progress(_))) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), skip_progress)
            .await
            .expect("no event")
    }

    async fn progress(stream: &mut WatchStream) -> Revision {
        match next(stream).await {
            Some(Ok(WatchItem::Progress(revision))) => revision,
            other => panic!("expected progress, got {other:?}"),
        }
    }

    fn options() -> WatchOptions {
        WatchOptions {
            progress_interval: Duration::from_millis(5),
        }
    }

    /// A batch committed before the replay's snapshot but published after the watcher
    /// subscribed is on both paths; it must be delivered once.
    #[tokio::test]
    async fn feed_events_covered_by_the_replay_are_skipped() {
        let history = Arc::new(FakeHistory::default());
        for revision in 1..=5 {
            history.push(event(revision, "/a"));
        }
        let feed = new_feed();
        let mut stream = watch(history.clone(), &feed, "/".to_string(), 2, options())
            .await
            .unwrap();
        feed.send(Arc::new(Batch {
            revision: 5,
            events: vec![event(4, "/a"), event(5, "/a")],
        }))
        .unwrap();
        feed.send(Arc::new(Batch {
            revision: 7,
            events: vec![event(6, "/a"), event(7, "/a")],
        }))
        .unwrap();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(next_event(&mut stream).await);
        }
        assert_eq!(seen, [3, 4, 5, 6, 7]);
        assert_eq!(progress(&mut stream).await, 7);
    }

    /// Progress follows batches that carry no matching event.
    #[tokio::test]
    async fn progress_covers_unrelated_batches() {
        let history = Arc::new(FakeHistory::default());
        let feed = new_feed();
        let mut stream = watch(history.clone(), &feed, "/a".to_string(), 0, options())
            .await
            .unwrap();
        assert_eq!(progress(&mut stream).await, 0);
        feed.send(Arc::new(Batch {
            revision: 3,
            events: vec![event(3, "/b")],
        }))
        .unwrap();
        let mut latest = 0;
        for _ in 0..1000 {
            latest = progress(&mut stream).await;
            if latest == 3 {
                break;
            }
        }
        assert_eq!(latest, 3);
    }

    /// A watcher that misses feed batches re-reads history from where it was, then continues
    /// with the feed: no gap, no duplicate.
    #[tokio::test]
    async fn lagging_watcher_replays_the_gap() {
        let history = Arc::new(FakeHistory::default());
        let (feed, _keep) = broadcast::channel(2);
        let mut stream = watch(history.clone(), &feed, "/".to_string(), 0, options())
            .await
            .unwrap();
        for revision in 1..=6 {
            history.push(event(revision, "/a"));
            feed.send(Arc::new(Batch {
                revision,
                events: vec![event(revision, "/a")],
            }))
            .unwrap();
        }
        let replays_before = *history.replays.lock().unwrap();
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(next_event(&mut stream).await);
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
        assert!(
            *history.replays.lock().unwrap() > replays_before,
            "the lag was not noticed"
        );
        history.push(event(7, "/a"));
        feed.send(Arc::new(Batch {
            revision: 7,
            events: vec![event(7, "/a")],
        }))
        .unwrap();
        assert_eq!(next_event(&mut stream).await, 7);
        assert_eq!(progress(&mut stream).await, 7);
    }

    /// Replays longer than a chunk come in several reads, still complete and in order.
    #[tokio::test]
    async fn long_replays_are_chunked() {
        let history = Arc::new(FakeHistory::default());
        let total = REPLAY_CHUNK as Revision * 2 + 10;
        for revision in 1..=total {
            history.push(event(revision, if revision % 2 == 0 { "/a" } else { "/b" }));
        }
        let feed = new_feed();
        let mut stream = watch(history.clone(), &feed, "/a".to_string(), 0, options())
            .await
            .unwrap();
        for expected in (2..=total).step_by(2) {
            assert_eq!(next_event(&mut stream).await, expected);
        }
        assert_eq!(progress(&mut stream).await, total);
        assert!(*history.replays.lock().unwrap() >= 2);
    }

    /// Closing the feed (the store went away) ends the stream after an error.
    #[tokio::test]
    async fn closed_feed_ends_the_stream() {
        let history = Arc::new(FakeHistory::default());
        let feed = new_feed();
        let mut stream = watch(history, &feed, "/".to_string(), 0, options())
            .await
            .unwrap();
        drop(feed);
        // Progress items may come first, but only a bounded number of them.
        for _ in 0..1000 {
            match next(&mut stream).await {
                Some(Ok(WatchItem::Progress(_))) => {}
                Some(Err(StoreError::Unavailable(_))) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(next(&mut stream).await.is_none());
    }
}
