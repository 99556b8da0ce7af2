//! The container log file in the CRI format kubelet and `kubectl logs` read:
//! `<RFC3339Nano time> <stdout|stderr> <F|P> <content>\n`, one line per line of output.
//!
//! As containerd does, a line longer than [`MAX_LINE`] is split into `P` (partial) pieces with the
//! last piece `F`, and output still without a newline when the stream ends is written as `F`.
//! When the file would grow past its maximum size it is renamed to `<log>.1` (replacing the
//! previous one) and a new file is started, so a chatty container cannot fill the disk; the
//! node agent reads both files for `kubectl logs`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::record::rfc3339_nanos;

/// Longest piece of a line written as one log entry (containerd's default
/// `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the container's streams some output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Writes a container's output as CRI log lines, rotating by size.
pub struct CriLogWriter {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
    /// Output of each stream since its last newline.
    partial: [Vec<u8>; 2],
    /// Formatted lines not yet written, so one read of output costs one write.
    pending: Vec<u8>,
}

impl CriLogWriter {
    /// Opens (appending to) or creates the log. `max_bytes` 0 means never rotate.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<CriLogWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(CriLogWriter {
            path: path.to_path_buf(),
            max_bytes,
            file,
            size,
            partial: [Vec::new(), Vec::new()],
            pending: Vec::new(),
        })
    }

    /// Takes a chunk of a stream's output, as read from its pipe.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: SystemTime) -> io::Result<()> {
        let stamp = rfc3339_nanos(now);
        let mut buf = std::mem::take(&mut self.partial[stream.index()]);
        buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) if nl <= MAX_LINE => {
                    let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
                    self.line(&stamp, stream, 'F', line)?;
                    start += nl + 1;
                }
                _ if rest.len() >= MAX_LINE => {
                    self.line(&stamp, stream, 'P', &rest[..MAX_LINE])?;
                    start += MAX_LINE;
                }
                _ => break,
            }
        }
        buf.drain(..start);
        self.partial[stream.index()] = buf;
        self.flush()
    }

    /// The stream has ended: what is left without a newline becomes a full line.
    pub fn finish(&mut self, stream: Stream, now: SystemTime) -> io::Result<()> {
        let rest = std::mem::take(&mut self.partial[stream.index()]);
        if !rest.is_empty() {
            self.line(&rfc3339_nanos(now), stream, 'F', &rest)?;
        }
        self.flush()
    }

    fn line(&mut self, stamp: &str, stream: Stream, tag: char, content: &[u8]) -> io::Result<()> {
        let len = (stamp.len() + stream.name().len() + content.len() + 5) as u64;
        let written = self.size + self.pending.len() as u64;
        if self.max_bytes > 0 && written > 0 && written + len > self.max_bytes {
            self.flush()?;
            self.rotate()?;
        }
        self.pending.extend_from_slice(stamp.as_bytes());
        self.pending.push(b' ');
        self.pending.extend_from_slice(stream.name().as_bytes());
        self.pending.push(b' ');
        self.pending.push(tag as u8);
        self.pending.push(b' ');
        self.pending.extend_from_slice(content);
        self.pending.push(b'\n');
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.size += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        std::fs::rename(&self.path, &rotated)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn t() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_700_000_000, 5)
    }

    const TS: &str = "2023-11-14T22:13:20.000000005Z";

    #[test]
    fn full_and_partial_lines() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("0.log");
        let mut log = CriLogWriter::open(&path, 0)?;
        log.write(Stream::Stdout, b"hello\nwor", t())?;
        log.write(Stream::Stderr, b"oops\r\n", t())?;
        log.write(Stream::Stdout, b"ld\n", t())?;
        log.write(Stream::Stdout, b"no newline", t())?;
        log.finish(Stream::Stdout, t())?;
        log.finish(Stream::Stderr, t())?;
        assert_eq!(
            std::fs::read_to_string(&path)?,
            format!(
                "{TS} stdout F hello\n{TS} stderr F oops\n{TS} stdout F world\n{TS} stdout F no newline\n"
            )
        );
        Ok(())
    }

    #[test]
    fn long_lines_are_split() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("0.log");
        let mut log = CriLogWriter::open(&path, 0)?;
        let mut data = vec![b'a'; MAX_LINE * 2 + 10];
        data.push(b'\n');
        log.write(Stream::Stdout, &data[..100], t())?;
        log.write(Stream::Stdout, &data[100..], t())?;
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(&format!("{TS} stdout P aaaa")));
        assert_eq!(lines[0].len(), TS.len() + 10 + MAX_LINE);
        assert!(lines[1].starts_with(&format!("{TS} stdout P ")));
        assert_eq!(lines[2], format!("{TS} stdout F {}", "a".repeat(10)));
        Ok(())
    }

    #[test]
    fn rotates_by_size() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("0.log");
        let line_len = TS.len() + " stdout F ".len() + 4 + 1;
        let mut log = CriLogWriter::open(&path, (line_len * 3) as u64)?;
        for i in 0..7 {
            log.write(Stream::Stdout, format!("l{i:03}\n").as_bytes(), t())?;
        }
        let current = std::fs::read_to_string(&path)?;
        let previous = std::fs::read_to_string(dir.path().join("0.log.1"))?;
        assert_eq!(current, format!("{TS} stdout F l006\n"));
        assert_eq!(
            previous,
            format!("{TS} stdout F l003\n{TS} stdout F l004\n{TS} stdout F l005\n")
        );
        // Reopening continues the current file and counts what is already there.
        drop(log);
        let mut log = CriLogWriter::open(&path, (line_len * 3) as u64)?;
        log.write(Stream::Stderr, b"e000\ne001\ne002\n", t())?;
        assert_eq!(
            std::fs::read_to_string(dir.path().join("0.log.1"))?,
            format!("{TS} stdout F l006\n{TS} stderr F e000\n{TS} stderr F e001\n")
        );
        assert_eq!(
            std::fs::read_to_string(&path)?,
            format!("{TS} stderr F e002\n")
        );
        Ok(())
    }
}
