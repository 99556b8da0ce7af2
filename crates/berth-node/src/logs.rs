//! Container logs as `kubectl logs` reads them: CRI-format log files rendered with the options
//! of `GET /containerLogs/...` (kubelet's `pkg/kubelet/kuberuntime/logs/logs.go`).
//!
//! A CRI log file has one record per line: `<RFC3339Nano timestamp> <stdout|stderr> <tag>
//! <content>\n`. The tag is `F` (the record ends a line) or `P` (partial: the runtime split a
//! long line, and the next record continues it); a tag may carry more `:`-separated parts, of
//! which only the first counts. Records are joined into logical lines here, and each option
//! works on logical lines:
//!
//! - `timestamps`: each line is prefixed with its first record's time (RFC 3339, nanoseconds
//!   with trailing zeros dropped, as Go's `RFC3339Nano`) and a space;
//! - `sinceSeconds`/`sinceTime`: lines older than the cut-off are left out;
//! - `tailLines`: only the last N lines (after the `since` filter), counted across the rotated
//!   file and the current one;
//! - `limitBytes`: output stops after that many bytes (the last line may be cut);
//! - `follow`: after what is there, new lines are streamed as they are appended; the file being
//!   renamed away (rotation) is noticed by its inode, the old file is drained, the new one read
//!   from its start. Following ends once the container is no longer running and the file is
//!   drained.
//!
//! Lines that are not CRI records are skipped, as the kubelet skips them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

/// How often a followed file is checked for new data (the kubelet uses inotify; a short poll is
/// simpler and costs little for the few followers one machine has).
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Where a container's log is, as the node agent's [`crate::server::PodStreams`] tells it.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// The container's current CRI log file. It need not exist yet (nothing logged so far).
    pub path: PathBuf,
    /// Older files of the same container instance, oldest first, read before `path` (usually
    /// the rotated `<path>.1`, see [`LogSource::new`]).
    pub rotated: Vec<PathBuf>,
    /// `true` while the container runs. A follower stops once this is `false` and the file is
    /// drained; a dropped sender counts as `false`.
    pub running: watch::Receiver<bool>,
}

impl LogSource {
    /// `path` and, if it exists, its rotated predecessor `<path>.1`.
    pub fn new(path: PathBuf, running: watch::Receiver<bool>) -> Self {
        let mut rotated_name = path.clone().into_os_string();
        rotated_name.push(".1");
        let rotated_path = PathBuf::from(rotated_name);
        let rotated = if rotated_path.exists() {
            vec![rotated_path]
        } else {
            Vec::new()
        };
        LogSource {
            path,
            rotated,
            running,
        }
    }

    /// A finished container's log (`previous=true`, or a container that has exited): no
    /// follower waits for more.
    pub fn finished(path: PathBuf) -> Self {
        let (_, running) = watch::channel(false);
        Self::new(path, running)
    }
}

/// The query options of a log request (kubelet's `PodLogOptions`, after validation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Stream new lines as they are written.
    pub follow: bool,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<u64>,
    /// Only lines at or after this time.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// The previous instance of the container (the [`LogSource`] provider picks its file).
    pub previous: bool,
}

/// A log request's options that are not valid; the text is the 400 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidLogOptions(pub String);

impl LogOptions {
    /// Parses the query parameters (`name`, `value` pairs, decoded) as the kubelet does:
    /// `follow`, `previous`, `timestamps`, `tailLines` (≥ 0), `sinceSeconds` (≥ 1) or
    /// `sinceTime` (RFC 3339, not both), `limitBytes` (≥ 1). `now` anchors `sinceSeconds`.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Timestamp,
    ) -> Result<Self, InvalidLogOptions> {
        let bad = |s: String| InvalidLogOptions(s);
        let flag = |v: &str| matches!(v, "true" | "1" | "True" | "TRUE" | "t" | "T");
        let mut options = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (key, value) in pairs {
            match key {
                "follow" => options.follow = flag(value),
                "previous" => options.previous = flag(value),
                "timestamps" => options.timestamps = flag(value),
                "tailLines" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| bad(format!("invalid tailLines {value:?}")))?;
                    // kubectl sends -1 for "all" (--tail=-1 is its default when not set).
                    options.tail_lines = u64::try_from(n).ok();
                }
                "sinceSeconds" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| bad(format!("invalid sinceSeconds {value:?}")))?;
                    if n < 1 {
                        return Err(bad(
                            "sinceSeconds: Invalid value: must be greater than 0".into()
                        ));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t: Timestamp = value
                        .parse()
                        .map_err(|_| bad(format!("invalid sinceTime {value:?}")))?;
                    since_time = Some(t);
                }
                "limitBytes" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| bad(format!("invalid limitBytes {value:?}")))?;
                    if n < 1 {
                        return Err(bad(
                            "limitBytes: Invalid value: must be greater than 0".into()
                        ));
                    }
                    options.limit_bytes = Some(n.unsigned_abs());
                }
                _ => {}
            }
        }
        options.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
                ));
            }
            (Some(seconds), None) => now.checked_sub(SignedDuration::from_secs(seconds)).ok(),
            (None, time) => time,
        };
        Ok(options)
    }
}

/// The current time as a [`Timestamp`] (jiff's `now` needs its `std` feature, which
/// k8s-openapi does not turn on).
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    SignedDuration::try_from(since_epoch)
        .ok()
        .and_then(|d| Timestamp::from_duration(d).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

/// One record (one line of a CRI log file).
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// When the runtime wrote it.
    pub time: Timestamp,
    /// The stream.
    pub stream: LogStream,
    /// `P`: the next record continues this line.
    pub partial: bool,
    /// The content, without the file's line ending.
    pub content: &'a [u8],
}

/// Parses one CRI log line (with or without its trailing `\n`); `None` when it is not one.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = match fields.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let tag = fields.next()?;
    let partial = match tag.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    // A record with empty content has no trailing space in some writers.
    let content = fields.next().unwrap_or(b"");
    Some(Record {
        time,
        stream,
        partial,
        content,
    })
}

/// A logical line: records joined until one that is not partial.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The time of its first record.
    pub time: Timestamp,
    /// The content, ending in `\n` unless the log ended inside a partial line.
    pub content: Vec<u8>,
}

impl LogLine {
    /// The bytes `kubectl logs` prints for this line.
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        if !timestamps {
            return self.content.clone();
        }
        let mut out = format!("{} ", self.time).into_bytes();
        out.extend_from_slice(&self.content);
        out
    }
}

/// Joins records into [`LogLine`]s. Partial records of stdout and stderr are joined
/// separately, as the runtime splits each stream's lines on its own.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: [Option<LogLine>; 2],
}

impl Joiner {
    /// Adds one record; returns the line it completes, if any.
    pub fn push(&mut self, record: &Record<'_>) -> Option<LogLine> {
        let slot = &mut self.pending[record.stream as usize];
        let line = slot.get_or_insert_with(|| LogLine {
            time: record.time,
            content: Vec::new(),
        });
        line.content.extend_from_slice(record.content);
        if record.partial {
            return None;
        }
        line.content.push(b'\n');
        slot.take()
    }

    /// Adds every complete CRI line of `data` (lines that do not parse are skipped) and returns
    /// the completed lines.
    pub fn push_bytes(&mut self, data: &[u8]) -> Vec<LogLine> {
        data.split_inclusive(|b| *b == b'\n')
            .filter_map(parse_record)
            .filter_map(|r| self.push(&r))
            .collect()
    }

    /// The partial lines still waiting for their end, oldest first (at the end of a log that
    /// will not grow, they are printed as they are).
    pub fn flush(&mut self) -> Vec<LogLine> {
        let mut lines: Vec<LogLine> = self.pending.iter_mut().filter_map(Option::take).collect();
        lines.sort_by_key(|l| l.time);
        lines
    }
}

/// Applies `since`, `tailLines`, `timestamps` and `limitBytes` to whole lines, in order.
/// Returns the bytes and whether `limitBytes` was reached (nothing more may be written).
pub fn render(lines: &[LogLine], options: &LogOptions) -> (Vec<u8>, bool) {
    let kept: Vec<&LogLine> = lines
        .iter()
        .filter(|l| options.since.is_none_or(|since| l.time >= since))
        .collect();
    let skip = match options.tail_lines {
        Some(n) => kept
            .len()
            .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
        None => 0,
    };
    emit(
        kept[skip..].iter().copied(),
        options.timestamps,
        &mut Limit(options.limit_bytes),
    )
}

/// The bytes of `lines` (with `timestamps`) up to what is left of `limit`, and whether the
/// limit is used up.
fn emit<'a>(
    lines: impl Iterator<Item = &'a LogLine>,
    timestamps: bool,
    limit: &mut Limit,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for line in lines {
        if limit.take(&line.render(timestamps), &mut out) {
            return (out, true);
        }
    }
    (out, false)
}

/// What is left of `limitBytes`.
struct Limit(Option<u64>);

impl Limit {
    /// Appends `bytes` (cut to what is left); returns `true` once the limit is used up.
    fn take(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        match &mut self.0 {
            None => {
                out.extend_from_slice(bytes);
                false
            }
            Some(left) => {
                let n = bytes
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&bytes[..n]);
                *left -= n as u64;
                *left == 0
            }
        }
    }
}

/// Reads a whole file, or nothing when it does not exist.
async fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(data) => Ok(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The file being followed: an open handle, the bytes read past the last full line, and the
/// inode, to notice rotation.
struct Followed {
    file: tokio::fs::File,
    inode: u64,
    carry: Vec<u8>,
}

impl Followed {
    async fn open(path: &Path) -> std::io::Result<Option<Followed>> {
        match tokio::fs::File::open(path).await {
            Ok(file) => {
                let inode = file.metadata().await?.ino();
                Ok(Some(Followed {
                    file,
                    inode,
                    carry: Vec::new(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads what has been appended; returns the complete lines' bytes.
    async fn read_new(&mut self) -> std::io::Result<Vec<u8>> {
        let mut chunk = Vec::new();
        self.file.read_to_end(&mut chunk).await?;
        self.carry.extend_from_slice(&chunk);
        let end = self
            .carry
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let rest = self.carry.split_off(end);
        Ok(std::mem::replace(&mut self.carry, rest))
    }

    /// Whether `path` now names another file (or none): the followed one was rotated away.
    async fn rotated(&self, path: &Path) -> bool {
        match tokio::fs::metadata(path).await {
            Ok(meta) => meta.ino() != self.inode,
            Err(_) => false,
        }
    }
}

/// Streams a container's log into `out` with `options`, as chunks of whole lines. Returns when
/// everything asked for was sent, the client went away (`out` closed), or reading failed.
pub async fn stream(
    mut source: LogSource,
    options: LogOptions,
    out: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut joiner = Joiner::default();
    let mut lines = Vec::new();
    for path in &source.rotated {
        lines.extend(joiner.push_bytes(&read_all(path).await?));
    }
    // The current file is opened, not just read, so that following continues exactly where
    // this first read stopped.
    let mut followed = Followed::open(&source.path).await?;
    if let Some(f) = followed.as_mut() {
        lines.extend(joiner.push_bytes(&f.read_new().await?));
    }
    if !options.follow {
        if let Some(f) = followed.as_mut() {
            // An unterminated last record is still a record.
            let rest = std::mem::take(&mut f.carry);
            lines.extend(joiner.push_bytes(&rest));
        }
        lines.extend(joiner.flush());
    }
    let (first, done) = render(&lines, &options);
    let mut limit = Limit(
        options
            .limit_bytes
            .map(|l| l.saturating_sub(first.len() as u64)),
    );
    if !first.is_empty() && out.send(Bytes::from(first)).await.is_err() {
        return Ok(());
    }
    if done || !options.follow {
        return Ok(());
    }
    loop {
        let running = *source.running.borrow_and_update();
        let mut new = Vec::new();
        if let Some(f) = followed.as_mut() {
            new.extend(joiner.push_bytes(&f.read_new().await?));
            if f.rotated(&source.path).await {
                // Drain the renamed file (the writer may have finished its last line after
                // our read), then start on the new one from its beginning.
                new.extend(joiner.push_bytes(&f.read_new().await?));
                new.extend(joiner.push_bytes(&std::mem::take(&mut f.carry)));
                followed = None;
            }
        }
        if followed.is_none() {
            followed = Followed::open(&source.path).await?;
            if let Some(f) = followed.as_mut() {
                new.extend(joiner.push_bytes(&f.read_new().await?));
            }
        }
        // `running` was read before this pass's reads: when it was already false, this pass
        // drained everything the container wrote.
        let finished = !running;
        if finished {
            if let Some(f) = followed.as_mut() {
                new.extend(joiner.push_bytes(&std::mem::take(&mut f.carry)));
            }
            new.extend(joiner.flush());
        }
        let since = new
            .iter()
            .filter(|l| options.since.is_none_or(|s| l.time >= s));
        let (chunk, done) = emit(since, options.timestamps, &mut limit);
        if !chunk.is_empty() && out.send(Bytes::from(chunk)).await.is_err() {
            return Ok(());
        }
        if done || finished {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = source.running.changed() => {}
            _ = out.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const LOG: &str = "\
2024-05-01T10:00:00.100000000Z stdout F one
2024-05-01T10:00:01Z stderr F two
garbage line
2024-05-01T10:00:02.5Z stdout P thr
2024-05-01T10:00:03Z stdout F ee
2024-05-01T10:00:04.000000001Z stdout F four
";

    fn lines(data: &str) -> Vec<LogLine> {
        let mut j = Joiner::default();
        let mut l = j.push_bytes(data.as_bytes());
        l.extend(j.flush());
        l
    }

    fn rendered(options: LogOptions) -> String {
        String::from_utf8(render(&lines(LOG), &options).0).expect("utf8")
    }

    #[test]
    fn parses_records() {
        let r = parse_record(b"2016-10-06T00:17:09.669794202Z stdout F log content here\n")
            .expect("record");
        assert_eq!(r.stream, LogStream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content, b"log content here");
        assert_eq!(r.time, ts("2016-10-06T00:17:09.669794202Z"));
        let r = parse_record(b"2016-10-06T00:17:09Z stderr P:x partial").expect("record");
        assert!(r.partial);
        assert_eq!(r.stream, LogStream::Stderr);
        let r = parse_record(b"2016-10-06T00:17:09Z stdout F").expect("empty record");
        assert_eq!(r.content, b"");
        assert!(parse_record(b"2016-10-06T00:17:09Z stdin F x").is_none());
        assert!(parse_record(b"yesterday stdout F x").is_none());
        assert!(parse_record(b"2016-10-06T00:17:09Z stdout X x").is_none());
        assert!(parse_record(b"").is_none());
    }

    #[test]
    fn plain_output_joins_partial_records() {
        assert_eq!(rendered(LogOptions::default()), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn timestamps_prefix_each_line_with_its_first_record_time() {
        let out = rendered(LogOptions {
            timestamps: true,
            ..Default::default()
        });
        assert_eq!(
            out,
            "2024-05-01T10:00:00.1Z one\n2024-05-01T10:00:01Z two\n2024-05-01T10:00:02.5Z three\n2024-05-01T10:00:04.000000001Z four\n"
        );
    }

    #[test]
    fn tail_counts_joined_lines() {
        let tail = |n| {
            rendered(LogOptions {
                tail_lines: Some(n),
                ..Default::default()
            })
        };
        assert_eq!(tail(2), "three\nfour\n");
        assert_eq!(tail(0), "");
        assert_eq!(tail(100), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn since_filters_by_time_before_tail() {
        let out = rendered(LogOptions {
            since: Some(ts("2024-05-01T10:00:01Z")),
            tail_lines: Some(5),
            ..Default::default()
        });
        assert_eq!(out, "two\nthree\nfour\n");
    }

    #[test]
    fn limit_bytes_cuts_the_output() {
        let (out, done) = render(
            &lines(LOG),
            &LogOptions {
                limit_bytes: Some(6),
                ..Default::default()
            },
        );
        assert_eq!((out.as_slice(), done), (&b"one\ntw"[..], true));
    }

    #[test]
    fn query_options() {
        let now = ts("2024-05-01T10:00:10Z");
        let o = LogOptions::from_query(
            [
                ("follow", "true"),
                ("tailLines", "10"),
                ("timestamps", "true"),
                ("sinceSeconds", "5"),
                ("limitBytes", "7"),
                ("container", "main"),
            ],
            now,
        )
        .expect("valid");
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                timestamps: true,
                tail_lines: Some(10),
                since: Some(ts("2024-05-01T10:00:05Z")),
                limit_bytes: Some(7),
                previous: false,
            }
        );
        let o = LogOptions::from_query([("tailLines", "-1")], now).expect("valid");
        assert_eq!(o.tail_lines, None);
        for bad in [
            vec![("sinceSeconds", "0")],
            vec![("limitBytes", "0")],
            vec![("tailLines", "x")],
            vec![("sinceTime", "yesterday")],
            vec![("sinceSeconds", "1"), ("sinceTime", "2024-05-01T10:00:00Z")],
        ] {
            assert!(LogOptions::from_query(bad.clone(), now).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reads_the_rotated_file_first_and_tails_across_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        std::fs::write(
            dir.path().join("0.log.1"),
            "2024-05-01T10:00:00Z stdout F a\n2024-05-01T10:00:01Z stdout P b\n",
        )
        .expect("write");
        std::fs::write(
            &path,
            "2024-05-01T10:00:02Z stdout F b\n2024-05-01T10:00:03Z stdout F c\n",
        )
        .expect("write");
        let source = LogSource::finished(path);
        assert_eq!(source.rotated.len(), 1);
        let (tx, mut rx) = mpsc::channel(16);
        stream(
            source,
            LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
            tx,
        )
        .await
        .expect("stream");
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        assert_eq!(out, b"bb\nc\n");
    }

    #[tokio::test]
    async fn follow_streams_appends_survives_rotation_and_ends_when_stopped() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-05-01T10:00:00Z stdout F first\n").expect("write");
        let (running_tx, running) = watch::channel(true);
        let (tx, mut rx) = mpsc::channel(16);
        let source = LogSource::new(path.clone(), running);
        let task = tokio::spawn(stream(
            source,
            LogOptions {
                follow: true,
                ..Default::default()
            },
            tx,
        ));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"first\n"[..]));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        // Half a record is not sent until its line is complete.
        file.write_all(b"2024-05-01T10:00:01Z stdout F sec")
            .expect("append");
        file.flush().expect("flush");
        tokio::time::sleep(FOLLOW_POLL * 2).await;
        file.write_all(b"ond\n").expect("append");
        assert_eq!(rx.recv().await.as_deref(), Some(&b"second\n"[..]));
        // Rotation: the writer finishes the old file, renames it and starts a new one.
        file.write_all(b"2024-05-01T10:00:02Z stdout F third\n")
            .expect("append");
        drop(file);
        std::fs::rename(&path, dir.path().join("0.log.1")).expect("rotate");
        std::fs::write(&path, "2024-05-01T10:00:03Z stdout F fourth\n").expect("write");
        let mut got = Vec::new();
        while got != b"third\nfourth\n" {
            let chunk = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("in time")
                .expect("open");
            got.extend_from_slice(&chunk);
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"2024-05-01T10:00:04Z stdout F last\n")
            .expect("append");
        running_tx.send(false).expect("send");
        let mut rest = Vec::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the stream ends in time")
        {
            rest.extend_from_slice(&chunk);
        }
        assert_eq!(rest, b"last\n");
        task.await.expect("join").expect("stream");
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_record(&bytes);
            let mut j = Joiner::default();
            let _ = j.push_bytes(&bytes);
        }

        #[test]
        fn records_round_trip(
            secs in 0i64..4_000_000_000,
            nanos in 0i32..1_000_000_000,
            stderr: bool,
            partial: bool,
            content in "[^\n]{0,40}",
        ) {
            let time = Timestamp::new(secs, nanos).expect("in range");
            let line = format!(
                "{time} {} {} {content}\n",
                if stderr { "stderr" } else { "stdout" },
                if partial { "P" } else { "F" },
            );
            let r = parse_record(line.as_bytes()).expect("parses");
            prop_assert_eq!(r.time, time);
            prop_assert_eq!(r.partial, partial);
            prop_assert_eq!(r.stream, if stderr { LogStream::Stderr } else { LogStream::Stdout });
            prop_assert_eq!(r.content, content.as_bytes());
        }

        #[test]
        fn tail_is_a_suffix_of_the_whole(n in 0u64..10, count in 0usize..8) {
            let data: String = (0..count)
                .map(|i| format!("2024-05-01T10:00:0{i}Z stdout F line{i}\n"))
                .collect();
            let all = lines(&data);
            let whole = render(&all, &LogOptions::default()).0;
            let tail = render(&all, &LogOptions { tail_lines: Some(n), ..Default::default() }).0;
            prop_assert!(whole.ends_with(&tail));
            let expect = count.min(n as usize);
            prop_assert_eq!(tail.iter().filter(|b| **b == b'\n').count(), expect);
        }
    }
}
