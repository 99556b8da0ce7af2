//! The names the storage parts share (provisioners, annotations, the finalizer) and the one
//! place a volume's name becomes a path: [`VolumeName`] accepts only `pvc-<uuid>` (the
//! claim's uid, never a user string), and [`Layout`] builds every path from a validated name,
//! so nothing a user writes can reach the file system or climb out of `<data>/storage`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::StorageError;

/// The directory-per-volume provisioner.
pub const LOCAL_PATH: &str = "berth.dev/local-path";
/// The ext4-image-per-volume provisioner; also its CSI driver name.
pub const LOCAL_EXT4: &str = "berth.dev/local-ext4";
/// The CSI driver that stages local-ext4 volumes on the node (`spec.csi.driver` of their
/// PersistentVolumes). CSI driver names are DNS subdomains, so it cannot be the provisioner's
/// name, which has a `/`.
pub const LOCAL_EXT4_DRIVER: &str = "local-ext4.berth.dev";

/// Which provisioner a claim is for (or a volume came from), when it is one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioner {
    LocalPath,
    LocalExt4,
}

impl Provisioner {
    pub fn from_name(name: &str) -> Option<Provisioner> {
        match name {
            LOCAL_PATH => Some(Provisioner::LocalPath),
            LOCAL_EXT4 => Some(Provisioner::LocalExt4),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provisioner::LocalPath => LOCAL_PATH,
            Provisioner::LocalExt4 => LOCAL_EXT4,
        }
    }
}

/// The PV controller's annotation naming the provisioner that should provision a claim.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Its legacy spelling, still written by the PV controller.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The scheduler's annotation naming the node a WaitForFirstConsumer claim goes to.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Which provisioner made a volume.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Held on every provisioned volume until its backing storage is gone (external-provisioner's).
pub const FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
/// The label every berth Node carries, its name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A volume name known to be `pvc-` followed by a lowercase hyphenated UUID, the only shape a
/// path is ever built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    /// Accepts exactly `^pvc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`.
    pub fn parse(name: &str) -> Result<VolumeName, StorageError> {
        let invalid = || StorageError::InvalidName(name.chars().take(80).collect());
        let uuid = name.strip_prefix("pvc-").ok_or_else(invalid)?;
        let groups: Vec<&str> = uuid.split('-').collect();
        let lengths = [8, 4, 4, 4, 12];
        let valid = groups.len() == lengths.len()
            && groups.iter().zip(lengths).all(|(group, len)| {
                group.len() == len
                    && group
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
        if valid {
            Ok(VolumeName(name.to_string()))
        } else {
            Err(invalid())
        }
    }

    /// The volume provisioned for the claim with this uid.
    pub fn for_claim(uid: &str) -> Result<VolumeName, StorageError> {
        VolumeName::parse(&format!("pvc-{uid}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where volumes live under the data dir: `<data>/storage/local-path/<name>/` and
/// `<data>/storage/local-ext4/<name>.img`.
#[derive(Debug, Clone)]
pub struct Layout {
    storage: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Layout {
        Layout {
            storage: data_dir.join("storage"),
        }
    }

    /// `<data>/storage`.
    pub fn root(&self) -> &Path {
        &self.storage
    }

    /// The directory holding every local-path volume.
    pub fn local_path_root(&self) -> PathBuf {
        self.storage.join("local-path")
    }

    /// The directory holding every local-ext4 image.
    pub fn ext4_root(&self) -> PathBuf {
        self.storage.join("local-ext4")
    }

    /// A local-path volume's directory (also its PV's `spec.local.path`).
    pub fn local_path(&self, name: &VolumeName) -> PathBuf {
        self.local_path_root().join(name.as_str())
    }

    /// A local-ext4 volume's image.
    pub fn ext4_image(&self, name: &VolumeName) -> PathBuf {
        self.ext4_root().join(format!("{name}.img"))
    }

    /// An image being made (mkfs runs on this, then it is renamed into place, so a crash never
    /// leaves a half-made image under the real name).
    pub fn ext4_image_partial(&self, name: &VolumeName) -> PathBuf {
        self.ext4_root().join(format!("{name}.img.partial"))
    }

    /// Present while an image has been grown but its file system not yet (done at next stage).
    pub fn ext4_resize_pending(&self, name: &VolumeName) -> PathBuf {
        self.ext4_root().join(format!("{name}.img.resize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Component;

    #[test]
    fn accepts_exactly_the_contract_shape() {
        let good = "pvc-0123abcd-4567-89ef-0a1b-23456789abcd";
        assert_eq!(
            VolumeName::parse(good)
                .map(|n| n.to_string())
                .ok()
                .as_deref(),
            Some(good)
        );
        for bad in [
            "",
            "pvc-",
            "pvc-0123ABCD-4567-89ef-0a1b-23456789abcd",
            "pvc-0123abcd-4567-89ef-0a1b-23456789abc",
            "pvc-0123abcd-4567-89ef-0a1b-23456789abcde",
            "pvc-0123abcd-4567-89ef-0a1b23456789abcd",
            "pvc-0123abcd-4567-89ef-0a1b-23456789abcd/..",
            "../pvc-0123abcd-4567-89ef-0a1b-23456789abcd",
            "pvc-0123abcd-4567-89ef-0a1b-23456789abc/",
            "pvx-0123abcd-4567-89ef-0a1b-23456789abcd",
            "pvc-0123abcd-4567-89ef-0a1b-2345678９abcd",
        ] {
            assert!(VolumeName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(VolumeName::for_claim("0123abcd-4567-89ef-0a1b-23456789abcd").is_ok());
    }

    fn stays_under(path: &Path, root: &Path) -> bool {
        path.strip_prefix(root).is_ok_and(|rest| {
            rest.components().count() == 1
                && rest.components().all(|c| matches!(c, Component::Normal(_)))
        })
    }

    proptest::proptest! {
        /// Whatever string arrives, a path is built only from an accepted name, and every such
        /// path is one plain component directly under its root.
        #[test]
        fn no_string_escapes_the_storage_root(name in "\\PC{0,60}|pvc-[0-9a-f./-]{30,40}") {
            let layout = Layout::new(Path::new("/data"));
            if let Ok(name) = VolumeName::parse(&name) {
                proptest::prop_assert!(stays_under(&layout.local_path(&name), &layout.local_path_root()));
                proptest::prop_assert!(stays_under(&layout.ext4_image(&name), &layout.ext4_root()));
                proptest::prop_assert!(!name.as_str().contains(['/', '.']));
            }
        }

        #[test]
        fn every_uuid_is_accepted(bytes in proptest::array::uniform16(0u8..)) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let uid = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
            proptest::prop_assert!(VolumeName::for_claim(&uid).is_ok());
        }
    }
}
