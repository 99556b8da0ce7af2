//! The files in a container's bundle that the shim and its clients share, and how they are
//! written (atomically: a temporary file renamed over the name, so a reader sees all or nothing).
//!
//! ```text
//! <root>/containers/<id>/        the bundle
//!   config.json                  OCI spec (written by Runtime::start)
//!   shim.json                    ShimConfig: what the shim needs beyond the spec
//!   shim.log                     the shim's own stderr (diagnostics)
//!   state.json                   StateRecord: the shim at once, the container's init once it runs
//!   exit.json                    ExitRecord, once it has exited and been cleaned up
//!   stdin                        FIFO to the container's stdin (only with `stdin: true`)
//!   youki/<id>/                  libcontainer's state (removed by the shim on exit)
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const SHIM_CONFIG_FILE: &str = "shim.json";
pub(crate) const SHIM_LOG_FILE: &str = "shim.log";
pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const EXIT_FILE: &str = "exit.json";
pub(crate) const STDIN_FIFO: &str = "stdin";
pub(crate) const LIBCONTAINER_ROOT: &str = "youki";

/// What the shim needs besides the OCI spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShimConfig {
    pub id: String,
    pub cgroups_path: PathBuf,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub tty: bool,
    pub stdin: bool,
}

/// Written by the shim first thing (naming the shim, so that a client can always find it and
/// [`crate::Runtime::remove`] never leaves it behind), and again once the container runs.
///
/// A start time is in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid it
/// names one process, even after the pid is reused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StateRecord {
    pub shim_pid: i32,
    pub shim_start_time: u64,
    /// The container's init, once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitRecord>,
}

/// The container's init process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InitRecord {
    pub pid: i32,
    pub start_time: u64,
    pub started_at_unix_nanos: u64,
}

/// Written by the shim after the container's init exited and the container was deleted (or by
/// a client that found the shim gone).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, or `Unknown` when the shim died first.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at_unix_nanos: u64,
    pub finished_at_unix_nanos: u64,
}

/// The shim's one message to the client that spawned it, a JSON line on the shim's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Readiness {
    Started {
        pid: i32,
        started_at_unix_nanos: u64,
    },
    Failed {
        message: String,
    },
}

/// Writes `value` as JSON to `dir/name` through a temporary file and a rename.
pub(crate) fn write_atomic<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| Error::json(format!("encoding {name}"), e))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// Reads `dir/name`, or `None` if it does not exist.
pub(crate) fn read_optional<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, Error> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::json(format!("reading {}", path.display()), e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_unix_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// Formats a time as RFC 3339 in UTC with nanoseconds (`2023-11-14T22:13:20.000000005Z`),
/// which Go's `time.RFC3339Nano` parser (kubelet's) reads.
pub(crate) fn rfc3339_nanos(t: SystemTime) -> String {
    let t = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{t:.9}")
}

/// A process's start time (clock ticks since boot), or `None` if it does not exist.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards; start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(951_827_696, 123_456_789);
        assert_eq!(rfc3339_nanos(t), "2000-02-29T12:34:56.123456789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339_nanos(t), "2099-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn start_times_name_processes() {
        let me = process_start_time(std::process::id() as i32).expect("own start time");
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let theirs = process_start_time(pid).expect("child start time");
        assert!(theirs >= me, "{theirs} < {me}");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(process_start_time(pid), None);
    }

    #[test]
    fn records_round_trip() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            reason: "OOMKilled".into(),
            message: None,
            started_at_unix_nanos: 1,
            finished_at_unix_nanos: 2,
        };
        write_atomic(dir.path(), EXIT_FILE, &rec)?;
        let back: Option<ExitRecord> = read_optional(dir.path(), EXIT_FILE)?;
        let back = back.expect("exit record");
        assert_eq!(
            (back.exit_code, back.signal, back.reason.as_str()),
            (137, Some(9), "OOMKilled")
        );
        let missing: Option<ExitRecord> = read_optional(dir.path(), "nope.json")?;
        assert!(missing.is_none());
        Ok(())
    }
}
