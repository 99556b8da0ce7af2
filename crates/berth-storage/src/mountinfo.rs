//! `/proc/self/mountinfo`, parsed, and the questions the storage layer asks of it: is this
//! directory mounted, and is anything still using a volume's directory (bind-mounted into a
//! pod, or with something mounted inside it). Pure, so it is tested on sample text.

use std::path::{Path, PathBuf};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device of the mounted file system (`major:minor`).
    pub device: (u32, u32),
    /// The directory of that file system shown here (not `/` for bind mounts).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parses mountinfo text; malformed lines are skipped (the kernel writes it, but a line we
/// cannot read must not hide the others).
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount-point options [optional...] - fstype source superopts
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let fs_type = after.split(' ').next()?;
    Some(Mount {
        device: (major.parse().ok()?, minor.parse().ok()?),
        root: PathBuf::from(unescape(fields.get(3)?)),
        mount_point: PathBuf::from(unescape(fields.get(4)?)),
        fs_type: fs_type.to_string(),
    })
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount at exactly `target`, the last one if several are stacked (the one visible).
pub fn mounted_at<'a>(mounts: &'a [Mount], target: &Path) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.mount_point == target)
}

/// Why `dir` (a volume's directory, on the file system of `device`) is in use, if it is:
/// something is mounted on or inside it, or it (or a directory inside it) is the source of a
/// bind mount elsewhere, such as a pod's volume mount.
pub fn uses_of(mounts: &[Mount], dir: &Path, device: (u32, u32)) -> Option<String> {
    if let Some(m) = mounts.iter().find(|m| m.mount_point.starts_with(dir)) {
        return Some(format!("{} is mounted", m.mount_point.display()));
    }
    // The file system's own mount holding `dir`: the deepest mount point above it of the same
    // device. `dir` within that file system is the mount's root joined with the rest.
    let holder = mounts
        .iter()
        .filter(|m| m.device == device && dir.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())?;
    let rest = dir.strip_prefix(&holder.mount_point).ok()?;
    let inside = holder.root.join(rest);
    mounts
        .iter()
        .find(|m| m.device == device && m.root.starts_with(&inside))
        .map(|m| format!("it is mounted at {}", m.mount_point.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /proc rw,nosuid - proc proc rw
41 22 7:3 / /data/csi/local-ext4.berth.dev/pvc-x/globalmount rw,relatime shared:30 - ext4 /dev/loop3 rw
52 22 253:1 /data/storage/local-path/pvc-a /run/pods/p1/volumes/v rw - ext4 /dev/vda1 rw
53 22 253:1 /data/storage/local-path/pvc-b/sub /run/pods/p2/volumes/w rw - ext4 /dev/vda1 rw
60 22 253:2 / /mnt/my\\040disk rw - xfs /dev/vdb rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let mounts = parse(SAMPLE);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[2].device, (7, 3));
        assert_eq!(mounts[2].fs_type, "ext4");
        assert_eq!(mounts[5].mount_point, Path::new("/mnt/my disk"));
        assert!(
            mounted_at(
                &mounts,
                Path::new("/data/csi/local-ext4.berth.dev/pvc-x/globalmount")
            )
            .is_some()
        );
        assert!(mounted_at(&mounts, Path::new("/data/csi")).is_none());
        assert!(parse("garbage\n1 2 x / / rw - ext4 a rw\n").is_empty());
    }

    #[test]
    fn a_bind_mounted_or_mounted_into_directory_is_in_use() {
        let mounts = parse(SAMPLE);
        let dev = (253, 1);
        assert!(uses_of(&mounts, Path::new("/data/storage/local-path/pvc-a"), dev).is_some());
        assert!(
            uses_of(&mounts, Path::new("/data/storage/local-path/pvc-b"), dev).is_some(),
            "a subPath"
        );
        assert!(uses_of(&mounts, Path::new("/data/storage/local-path/pvc-c"), dev).is_none());
        assert!(
            uses_of(
                &mounts,
                Path::new("/data/csi/local-ext4.berth.dev/pvc-x"),
                dev
            )
            .is_some()
        );
    }

    #[test]
    fn bind_sources_are_found_on_a_file_system_mounted_below_the_root() {
        let text = "\
1 0 253:1 / / rw - ext4 /dev/vda1 rw
2 1 8:16 / /var/lib/berth rw - ext4 /dev/sdb rw
3 1 8:16 /storage/local-path/pvc-a /pod/v rw - ext4 /dev/sdb rw
";
        let mounts = parse(text);
        let dir = Path::new("/var/lib/berth/storage/local-path/pvc-a");
        assert!(uses_of(&mounts, dir, (8, 16)).is_some());
        assert!(
            uses_of(
                &mounts,
                Path::new("/var/lib/berth/storage/local-path/pvc-b"),
                (8, 16)
            )
            .is_none()
        );
    }
}
