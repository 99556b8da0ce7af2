//! How much disk an emptyDir uses, and whether a pod's emptyDirs stay within their
//! `sizeLimit` — kubelet's local-storage eviction for emptyDir. A disk-backed emptyDir is a
//! plain directory, so nothing stops a container from writing past its limit; kubelet (and
//! berth) notice and evict the pod instead. (Memory-backed ones are a tmpfs of that size.)

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::{PreparedVolume, VolumeKind};
use crate::env::Decimal;

/// Bytes allocated under `dir` (as `du` counts them: blocks, each inode once, symlinks not
/// followed, other filesystems not entered). Unreadable entries count as nothing.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let device = top.dev();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != device || !seen.insert(meta.ino()) {
            continue;
        }
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// kubelet's eviction message for the first disk-backed emptyDir of `pod` whose usage (by
/// `usage`) is over its `sizeLimit`, if any.
pub fn empty_dir_over_limit(
    pod: &Pod,
    prepared: &BTreeMap<String, PreparedVolume>,
    usage: impl Fn(&Path) -> u64,
) -> Option<String> {
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(limit) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        else {
            continue;
        };
        let Some(dir) = prepared.get(&volume.name) else {
            continue;
        };
        if dir.kind != VolumeKind::EmptyDir {
            continue;
        }
        let Some(bytes) = Decimal::parse(&limit.0)
            .and_then(Decimal::value_ceil)
            .and_then(|v| u64::try_from(v).ok())
        else {
            continue;
        };
        if usage(&dir.host_path) > bytes {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                volume.name, limit.0
            ));
        }
    }
    None
}

/// True when the pod has a disk-backed emptyDir with a size limit, so its usage must be
/// watched.
pub fn has_sized_empty_dir(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.empty_dir.as_ref())
        .any(|e| e.size_limit.is_some() && e.medium.as_deref().unwrap_or("").is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, Volume};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::path::PathBuf;

    fn pod(limit: Option<&str>, medium: Option<&str>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "scratch".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        size_limit: limit.map(|l| Quantity(l.into())),
                        medium: medium.map(str::to_string),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn prepared(kind: VolumeKind) -> BTreeMap<String, PreparedVolume> {
        [(
            "scratch".to_string(),
            PreparedVolume {
                name: "scratch".into(),
                kind,
                host_path: PathBuf::from("/pods/x/volumes/scratch"),
                read_only: false,
            },
        )]
        .into()
    }

    #[test]
    fn only_disk_empty_dirs_over_their_limit_evict() {
        let limited = pod(Some("1Mi"), None);
        assert!(has_sized_empty_dir(&limited));
        let disk = prepared(VolumeKind::EmptyDir);
        assert_eq!(empty_dir_over_limit(&limited, &disk, |_| 1 << 20), None);
        assert_eq!(
            empty_dir_over_limit(&limited, &disk, |_| (1 << 20) + 1).as_deref(),
            Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ")
        );
        assert!(!has_sized_empty_dir(&pod(None, None)));
        assert_eq!(
            empty_dir_over_limit(&pod(None, None), &disk, |_| u64::MAX),
            None
        );
        let memory = prepared(VolumeKind::EmptyDirMemory);
        let tmpfs = pod(Some("1Mi"), Some("Memory"));
        assert!(!has_sized_empty_dir(&tmpfs));
        assert_eq!(empty_dir_over_limit(&tmpfs, &memory, |_| u64::MAX), None);
    }

    #[test]
    fn disk_usage_counts_allocated_blocks_once() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let empty = disk_usage(dir.path());
        std::fs::write(dir.path().join("a"), vec![1u8; 256 * 1024])?;
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b"))?;
        std::os::unix::fs::symlink("/usr", dir.path().join("usr"))?;
        let used = disk_usage(dir.path()) - empty;
        assert!((256 * 1024..300 * 1024).contains(&used), "{used}");
        Ok(())
    }
}
