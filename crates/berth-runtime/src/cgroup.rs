//! Where containers' cgroups go and how they are cleaned up, for cgroup v1, hybrid and v2.
//!
//! berth places every container at `M/berth/pods/<pod-uid>/<id>`, where `M` is berth's own
//! memory cgroup (v1) or unified cgroup (v2) from `/proc/self/cgroup`, so pods stay inside
//! whatever memory limit berth itself runs under. On v1 libcontainer creates the same path in
//! every other hierarchy too (mirrors of `M` that nobody else uses); the container's leaf is
//! removed by libcontainer, and the levels above it by [`remove_upwards`] once the pod is gone.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

/// Where the cgroup file systems are mounted.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Picks `M` from the text of `/proc/self/cgroup`: the v1 memory line, else the v2 `0::` line.
pub(crate) fn parse_base(text: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(PathBuf::from(path));
        }
        if controllers.is_empty() {
            unified = Some(PathBuf::from(path));
        }
    }
    unified
}

/// berth's own cgroup `M` (see the module docs).
pub(crate) fn own_base() -> Result<PathBuf, Error> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| Error::io("reading /proc/self/cgroup", e))?;
    parse_base(&text)
        .ok_or_else(|| Error::Runtime("no memory or unified line in /proc/self/cgroup".into()))
}

/// The directory of the pod's cgroup below `base`.
pub(crate) fn pod_path(base: &Path, pod_uid: &str) -> PathBuf {
    base.join("berth").join("pods").join(pod_uid)
}

/// The mounted hierarchies a cgroup path can exist in: `/sys/fs/cgroup` itself when it is
/// cgroup2, else each hierarchy directory below it (controller symlinks such as `cpu,cpuacct`
/// are skipped, since they name a directory already listed).
pub(crate) fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `cg`'s directory in `hierarchy`.
pub(crate) fn in_hierarchy(hierarchy: &Path, cg: &Path) -> PathBuf {
    hierarchy.join(cg.strip_prefix("/").unwrap_or(cg))
}

/// Whether the kernel's OOM killer killed a process in the cgroup `cg` (v1
/// `memory.oom_control`, v2 `memory.events`, both report `oom_kill <n>`).
pub(crate) fn oom_killed(cg: &Path) -> bool {
    let root = Path::new(CGROUP_ROOT);
    let candidates = [
        in_hierarchy(&root.join("memory"), cg).join("memory.oom_control"),
        in_hierarchy(root, cg).join("memory.events"),
    ];
    candidates.iter().any(|file| {
        std::fs::read_to_string(file)
            .map(|text| oom_kill_count(&text) > 0)
            .unwrap_or(false)
    })
}

fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn read_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process in `cg` (in every hierarchy), waits for them to leave, and removes
/// the cgroup's directories. Returns whether any process was found. Used when a container's
/// shim is gone and nobody else will clean up.
pub(crate) fn kill_and_remove(cg: &Path) -> Result<bool, Error> {
    let mut found = false;
    for hierarchy in hierarchies() {
        let dir = in_hierarchy(&hierarchy, cg);
        if !dir.is_dir() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = read_procs(&dir);
            if procs.is_empty() {
                break;
            }
            found = true;
            for pid in procs {
                // The pid was read from the cgroup this instant; a process that already exited
                // makes kill fail with ESRCH, which is fine.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if Instant::now() > deadline {
                return Err(Error::Runtime(format!(
                    "processes in {} did not die",
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        rmdir_retry(&dir)?;
    }
    Ok(found)
}

/// Removes a cgroup directory, retrying while the kernel still counts exiting tasks in it.
fn rmdir_retry(dir: &Path) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
        }
    }
}

/// Removes the pod cgroup `cg` in every hierarchy, then each parent that is left empty (the
/// `berth/pods` levels and, on v1, the mirrors of `M` libcontainer created), stopping at the
/// first one still in use. Fails with [`Error::CgroupBusy`] if the pod still has containers.
pub(crate) fn remove_upwards(cg: &Path) -> Result<(), Error> {
    for hierarchy in hierarchies() {
        let dir = in_hierarchy(&hierarchy, cg);
        if !dir.is_dir() {
            continue;
        }
        let has_children = std::fs::read_dir(&dir)
            .map(|mut it| it.any(|e| e.map(|e| e.path().is_dir()).unwrap_or(false)))
            .unwrap_or(false);
        if has_children {
            return Err(Error::CgroupBusy(dir));
        }
        rmdir_retry(&dir)?;
        let mut parent = dir.parent().map(Path::to_path_buf);
        while let Some(p) = parent {
            // A cgroup that is not empty (or is ours) refuses rmdir; that is where to stop.
            if p == hierarchy || std::fs::remove_dir(&p).is_err() {
                break;
            }
            parent = p.parent().map(Path::to_path_buf);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_prefers_memory_line() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        assert_eq!(parse_base(hybrid), Some(PathBuf::from("/process_api/abc")));
        let joined = "3:cpu,memory:/x\n0::/y\n";
        assert_eq!(parse_base(joined), Some(PathBuf::from("/x")));
        let v2 = "0::/user.slice/berth.service\n";
        assert_eq!(
            parse_base(v2),
            Some(PathBuf::from("/user.slice/berth.service"))
        );
        assert_eq!(parse_base("garbage"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(
            pod_path(Path::new("/m"), "u1"),
            PathBuf::from("/m/berth/pods/u1")
        );
        assert_eq!(
            in_hierarchy(Path::new("/sys/fs/cgroup/memory"), Path::new("/m/x")),
            PathBuf::from("/sys/fs/cgroup/memory/m/x")
        );
    }

    #[test]
    fn oom_kill_lines() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(oom_kill_count(v1), 2);
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v2), 0);
    }
}
