//! `persistentVolumeClaim` volumes: the claim must be Bound to a PersistentVolume this node can
//! mount, and that volume's storage is bind-mounted into the pod's volume directory.
//!
//! - The claim (in the pod's namespace) must exist, not be terminating, and be Bound
//!   (`status.phase` Bound and `spec.volumeName` set) to a PersistentVolume that exists and
//!   whose `claimRef` names it. Until then setup fails with a FailedMount message and the
//!   worker retries: the pod waits in ContainerCreating, it is not failed.
//! - `local.path` and `hostPath.path` sources are bind-mounted on
//!   `<pod>/volumes/kubernetes.io~local-volume/<volume>` (`…~host-path/…` for hostPath) from a
//!   descriptor opened on the resolved path, so a symlink swapped in after the check cannot
//!   redirect the mount. A missing path is an error and nothing is created on the host
//!   (reliability case H6), except for the hostPath types `DirectoryOrCreate` and
//!   `FileOrCreate`, which say to create it, as in Kubernetes. In Kubernetes only PodSecurity
//!   (not kubelet) polices a PV's hostPath; berth keeps its [`HostPathPolicy`] denial of
//!   sensitive host trees for PersistentVolumes too (a PV is cluster-admin data, but a wrong
//!   one must not expose `/etc` or berth's own state). The one exception is berth's local-path
//!   provisioner's root, `<data>/storage/local-path`, which lies inside the data dir.
//! - `csi` sources go through the [`CsiDriver`] registered under the PV's driver name: the
//!   volume is staged once per node into `<data>/csi/<driver, '/' → '~'>/<volumeHandle>/globalmount`
//!   (kubelet's global mount), then that directory is bind-mounted on
//!   `<pod>/volumes/kubernetes.io~csi/<volume>/mount`; `vol_data.json` beside it records the
//!   driver and handle so teardown needs no API object. A volume is unstaged when the last pod
//!   on this node that uses it is torn down (users are counted from the pod directories on disk,
//!   so a restarted agent counts the pods it adopted).
//! - Read-only when the pod's volume says `readOnly`, the PV's access modes are only
//!   `ReadOnlyMany`, or a CSI source says `readOnly`: the runtime binds it read-only into every
//!   container. The PV's `mountOptions` are ignored: they are options for mounting a
//!   filesystem, and these are bind mounts of one already mounted (a CSI driver applies its
//!   own when staging).
//!
//! Setup is idempotent (an existing mount point is reused), so an agent that adopts running
//! pods after a restart re-establishes nothing twice.

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::MutexGuard;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PersistentVolumeSpec};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::*;

/// The plugin directory of CSI volumes under `<pod>/volumes`.
pub(crate) const CSI_PLUGIN: &str = "kubernetes.io~csi";
/// The file beside a CSI volume's mount that names its driver and handle.
const VOL_DATA: &str = "vol_data.json";
/// The bind-mount target inside a CSI volume's directory.
const CSI_MOUNT: &str = "mount";
/// The directory under the data dir where the local-path provisioner puts its volumes.
pub(crate) const LOCAL_PATH_ROOT: &str = "storage/local-path";

/// A CSI node plugin, in-process: stages a volume on this node and unstages it again
/// (`NodeStageVolume` / `NodeUnstageVolume`). Registered by driver name in
/// `AgentConfig::csi_drivers`.
///
/// Both calls must be idempotent, as CSI requires. `stage` must leave a mount on
/// `staging_dir` (the agent creates the directory first): the agent takes a mount point there
/// as "staged", which is how a restarted agent avoids staging twice. `unstage` must remove
/// that mount; the agent then removes the empty directories.
pub trait CsiDriver: Send + Sync {
    fn stage(&self, volume_handle: &str, staging_dir: &Path) -> Result<(), String>;
    fn unstage(&self, volume_handle: &str, staging_dir: &Path) -> Result<(), String>;
}

impl fmt::Debug for dyn CsiDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsiDriver")
    }
}

/// The CSI drivers of this node, by driver name (`local-ext4.berth.dev`).
pub type CsiDrivers = BTreeMap<String, Arc<dyn CsiDriver>>;

/// A volume handle is a path component of the staging dir: `^[a-z0-9][a-z0-9.-]{0,252}$`, so
/// never `..`, never a `/`.
pub fn valid_volume_handle(handle: &str) -> bool {
    let bytes = handle.as_bytes();
    bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.len() <= 253
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
}

/// A CSI driver name as the API allows it (a DNS subdomain, at most 63 characters); `/` is
/// allowed because it becomes `~` in the path, and `~` is not, so the mapping reverses.
fn valid_driver_name(driver: &str) -> bool {
    driver.len() <= 63
        && driver
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && driver
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// `<csi_root>/<driver with '/' → '~'>/<handle>/globalmount`, or `None` for a name that could
/// not be a single path component.
pub fn csi_staging_dir(csi_root: &Path, driver: &str, handle: &str) -> Option<PathBuf> {
    (valid_driver_name(driver) && valid_volume_handle(handle)).then(|| {
        csi_root
            .join(driver.replace('/', "~"))
            .join(handle)
            .join("globalmount")
    })
}

/// Where a claim's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimSource {
    /// `local.path` (`kind` LocalVolume) or `hostPath.path` (`kind` PvHostPath).
    Path {
        kind: VolumeKind,
        path: String,
        host_path_type: Option<String>,
    },
    Csi {
        driver: String,
        handle: String,
    },
}

/// A Bound claim's volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimedVolume {
    pub pv: String,
    pub source: ClaimSource,
    pub read_only: bool,
}

/// Finds the volume `source`'s claim is bound to; the errors are the FailedMount reasons of a
/// pod that has to wait.
pub(crate) fn resolve_claim(
    ctx: &PodContext<'_>,
    source: &PersistentVolumeClaimVolumeSource,
) -> Result<ClaimedVolume, VolumeErrorReason> {
    let name = &source.claim_name;
    let namespace = namespace(ctx);
    let Some(claim) = ctx.objects.persistent_volume_claim(namespace, name) else {
        return Err(VolumeErrorReason::ClaimNotFound(name.clone()));
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(VolumeErrorReason::ClaimTerminating(name.clone()));
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let (Some("Bound"), Some(pv_name)) = (phase, volume_name) else {
        return Err(VolumeErrorReason::ClaimNotBound(name.clone()));
    };
    let Some(pv) = ctx.objects.persistent_volume(pv_name) else {
        return Err(VolumeErrorReason::VolumeNotFound(pv_name.to_string()));
    };
    let empty = PersistentVolumeSpec::default();
    let spec = pv.spec.as_ref().unwrap_or(&empty);
    // The PV must name this claim back (kubelet checks the uid): a claim whose volumeName
    // points at someone else's volume must not get its data.
    let claim_ref_matches = spec.claim_ref.as_ref().is_some_and(|r| {
        r.name.as_deref() == Some(name.as_str())
            && r.namespace.as_deref().unwrap_or("") == namespace
            && match (r.uid.as_deref(), claim.metadata.uid.as_deref()) {
                (Some(a), Some(b)) if !a.is_empty() => a == b,
                _ => true,
            }
    });
    if !claim_ref_matches {
        return Err(VolumeErrorReason::ClaimRefMismatch {
            pv: pv_name.to_string(),
            claim: name.clone(),
        });
    }
    let block = |mode: Option<&String>| mode.is_some_and(|m| m == "Block");
    if block(spec.volume_mode.as_ref())
        || block(claim.spec.as_ref().and_then(|s| s.volume_mode.as_ref()))
    {
        return Err(VolumeErrorReason::Unsupported("volumeMode Block".into()));
    }
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    let read_only_many = !modes.is_empty() && modes.iter().all(|m| m == "ReadOnlyMany");
    let mut read_only = source.read_only == Some(true) || read_only_many;
    let source = if let Some(local) = &spec.local {
        ClaimSource::Path {
            kind: VolumeKind::LocalVolume,
            path: local.path.clone(),
            host_path_type: None,
        }
    } else if let Some(host) = &spec.host_path {
        ClaimSource::Path {
            kind: VolumeKind::PvHostPath,
            path: host.path.clone(),
            host_path_type: host.type_.clone(),
        }
    } else if let Some(csi) = &spec.csi {
        read_only |= csi.read_only == Some(true);
        ClaimSource::Csi {
            driver: csi.driver.clone(),
            handle: csi.volume_handle.clone(),
        }
    } else {
        return Err(VolumeErrorReason::Unsupported(pv_kind(spec)));
    };
    Ok(ClaimedVolume {
        pv: pv_name.to_string(),
        source,
        read_only,
    })
}

/// The source kind of a PV berth cannot mount, named as in the API (`nfs`, …).
fn pv_kind(spec: &PersistentVolumeSpec) -> String {
    const NOT_SOURCES: &[&str] = &[
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    ];
    serde_json::to_value(spec)
        .ok()
        .and_then(|v| {
            v.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !NOT_SOURCES.contains(&k.as_str()))
                    .cloned()
            })
        })
        .map(|k| format!("persistentVolume source {k}"))
        .unwrap_or_else(|| "persistentVolume without a source".into())
}

/// What `vol_data.json` records about a pod's CSI volume.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct VolData {
    driver: String,
    #[serde(rename = "volumeHandle")]
    handle: String,
    #[serde(rename = "specVolID")]
    pv: String,
}

/// The CSI volume a pod's volume directory records, if it records a valid one.
fn read_vol_data(volume_dir: &Path) -> Option<VolData> {
    let path = volume_dir.join(VOL_DATA);
    // Never follow a link planted there (only the agent writes this directory, but the check
    // costs nothing).
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let data: VolData = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    (valid_driver_name(&data.driver) && valid_volume_handle(&data.handle)).then_some(data)
}

impl VolumeManager {
    pub(super) fn setup_claim(
        &self,
        ctx: &PodContext<'_>,
        pod_dir: &Path,
        volume: &Volume,
        source: &PersistentVolumeClaimVolumeSource,
    ) -> Result<PreparedVolume, VolumeErrorReason> {
        let claimed = resolve_claim(ctx, source)?;
        let host_path = match &claimed.source {
            ClaimSource::Path {
                kind,
                path,
                host_path_type,
            } => self.setup_bound_path(pod_dir, &volume.name, *kind, path, host_path_type)?,
            ClaimSource::Csi { driver, handle } => {
                self.setup_csi(pod_dir, &volume.name, &claimed.pv, driver, handle)?
            }
        };
        let kind = match claimed.source {
            ClaimSource::Path { kind, .. } => kind,
            ClaimSource::Csi { .. } => VolumeKind::Csi,
        };
        Ok(PreparedVolume {
            name: volume.name.clone(),
            kind,
            host_path,
            read_only: claimed.read_only,
        })
    }

    /// Binds a PV's local or hostPath directory (or file) onto the pod's volume path.
    fn setup_bound_path(
        &self,
        pod_dir: &Path,
        name: &str,
        kind: VolumeKind,
        path: &str,
        host_path_type: &Option<String>,
    ) -> Result<PathBuf, VolumeErrorReason> {
        // All checks before anything is made under the pod directory or on the host.
        let resolved = host_path::prepare(&self.pv_path_policy, path, host_path_type.as_deref())?;
        // The provisioner's root holds every claim's data: only one volume below it may be
        // mounted, never all of them.
        if resolved == self.local_path_root {
            return Err(HostPathError::Denied {
                rule: resolved.clone(),
                path: resolved,
            }
            .into());
        }
        let meta = match std::fs::metadata(&resolved) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeErrorReason::PathMissing(path.to_string()));
            }
            Err(e) => return Err(io_reason("stat", &resolved)(e)),
        };
        let target = if meta.is_dir() {
            self.volume_dir(pod_dir, kind, name)?
        } else {
            let target = self.plugin_dir(pod_dir, kind)?.join(name);
            if !target.exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o640)
                    .open(&target)
                    .map_err(io_reason("create", &target))?;
            }
            target
        };
        // Adopted after a restart: the kernel kept the mount, so bind nothing twice.
        if self
            .mounter
            .is_mount_point(&target)
            .map_err(io_reason("check mount", &target))?
        {
            return Ok(target);
        }
        // `resolved` has no symlinks; opening it refusing any means a link swapped in since
        // the policy check fails instead of redirecting the mount.
        let fd = rustix::fs::openat2(
            rustix::fs::CWD,
            &resolved,
            OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        )
        .map_err(|e| io_reason("open", &resolved)(e.into()))?;
        let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        self.mounter
            .bind(&source, &target)
            .map_err(io_reason("bind-mount on", &target))?;
        Ok(target)
    }

    fn csi_lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding it left no state in the mutex itself; the disk is the state.
        self.csi.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stages the CSI volume on the node (first user only) and binds it into the pod.
    fn setup_csi(
        &self,
        pod_dir: &Path,
        name: &str,
        pv: &str,
        driver_name: &str,
        handle: &str,
    ) -> Result<PathBuf, VolumeErrorReason> {
        let Some(driver) = self.config.csi_drivers.get(driver_name) else {
            return Err(VolumeErrorReason::CsiDriverNotFound(
                driver_name.to_string(),
            ));
        };
        if !valid_volume_handle(handle) {
            return Err(VolumeErrorReason::InvalidVolumeHandle(handle.to_string()));
        }
        let Some(staging) = csi_staging_dir(&self.csi_root(), driver_name, handle) else {
            return Err(VolumeErrorReason::CsiDriverNotFound(
                driver_name.to_string(),
            ));
        };
        // One stage/unstage decision at a time on the node, so a teardown counting users
        // cannot miss a pod that is being set up.
        let _guard = self.csi_lock();
        let dir = self.volume_dir(pod_dir, VolumeKind::Csi, name)?;
        // Recorded before staging: from here on this pod counts as a user of the volume.
        let data = VolData {
            driver: driver_name.to_string(),
            handle: handle.to_string(),
            pv: pv.to_string(),
        };
        if read_vol_data(&dir).as_ref() != Some(&data) {
            let bytes = serde_json::to_vec(&data).map_err(|e| VolumeErrorReason::Io {
                what: "encode",
                path: dir.join(VOL_DATA),
                source: io::Error::other(e),
            })?;
            let tmp = dir.join(format!(".{VOL_DATA}.tmp"));
            std::fs::write(&tmp, bytes).map_err(io_reason("write", &tmp))?;
            std::fs::rename(&tmp, dir.join(VOL_DATA)).map_err(io_reason("rename", &tmp))?;
        }
        mkdir(&staging, 0o750)?;
        let staged = self
            .mounter
            .is_mount_point(&staging)
            .map_err(io_reason("check mount", &staging))?;
        if !staged {
            driver
                .stage(handle, &staging)
                .map_err(|message| VolumeErrorReason::CsiStage {
                    driver: driver_name.to_string(),
                    handle: handle.to_string(),
                    message,
                })?;
        }
        let target = dir.join(CSI_MOUNT);
        mkdir(&target, 0o750)?;
        if !self
            .mounter
            .is_mount_point(&target)
            .map_err(io_reason("check mount", &target))?
        {
            self.mounter
                .bind(&staging, &target)
                .map_err(io_reason("bind-mount on", &target))?;
        }
        Ok(target)
    }

    /// `<data>/csi`.
    fn csi_root(&self) -> PathBuf {
        self.config.state_dir.join("csi")
    }

    /// The CSI volumes some pod directory on this node records.
    fn csi_volumes_in_use(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let pods = self.config.state_dir.join("pods");
        for (pod, pod_is_dir) in entries(&pods).unwrap_or_default() {
            if !pod_is_dir {
                continue;
            }
            let plugin = pod.join(VOLUMES_DIR).join(CSI_PLUGIN);
            for (volume, is_dir) in entries(&plugin).unwrap_or_default() {
                if let (true, Some(data)) = (is_dir, read_vol_data(&volume)) {
                    out.insert((data.driver, data.handle));
                }
            }
        }
        out
    }

    /// Unmounts and removes the pod's CSI volumes, then unstages those no other pod on the
    /// node uses. Unstaging problems are logged, not returned: the pod's own mounts are gone,
    /// so its directory may go, and [`VolumeManager::unstage_unused`] retries at the next
    /// start.
    pub(super) fn teardown_csi(&self, pod_dir: &Path) -> Result<(), TeardownError> {
        let plugin = pod_dir.join(VOLUMES_DIR).join(CSI_PLUGIN);
        let volumes = entries(&plugin)?;
        if volumes.is_empty() {
            return Ok(());
        }
        let _guard = self.csi_lock();
        let mut released = BTreeSet::new();
        for (volume, is_dir) in volumes {
            if is_dir {
                if let Some(data) = read_vol_data(&volume) {
                    released.insert((data.driver, data.handle));
                }
                unmount_all(self.mounter.as_ref(), &volume.join(CSI_MOUNT))?;
            }
            remove(&volume)?;
        }
        let in_use = self.csi_volumes_in_use();
        for (driver, handle) in released.difference(&in_use) {
            self.unstage(driver, handle);
        }
        Ok(())
    }

    /// Unstages every staged CSI volume no pod directory records (a crash between a pod's
    /// teardown and the unstage, or a `berth down` without the driver). The agent calls it
    /// once its pods are known.
    pub fn unstage_unused(&self) {
        let _guard = self.csi_lock();
        let in_use = self.csi_volumes_in_use();
        for (driver_dir, is_dir) in entries(&self.csi_root()).unwrap_or_default() {
            let Some(driver) = driver_dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let driver = driver.replace('~', "/");
            if !is_dir || !valid_driver_name(&driver) {
                continue;
            }
            for (handle_dir, is_dir) in entries(&driver_dir).unwrap_or_default() {
                let Some(handle) = handle_dir.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if is_dir
                    && valid_volume_handle(handle)
                    && !in_use.contains(&(driver.clone(), handle.to_string()))
                {
                    self.unstage(&driver, handle);
                }
            }
        }
    }

    /// Asks the driver to unstage, then removes the staging directories if nothing is
    /// mounted there any more (plain `rmdir`: never anything with contents).
    fn unstage(&self, driver_name: &str, handle: &str) {
        let Some(staging) = csi_staging_dir(&self.csi_root(), driver_name, handle) else {
            return;
        };
        let Some(driver) = self.config.csi_drivers.get(driver_name) else {
            tracing::warn!(
                driver = driver_name,
                handle,
                "cannot unstage a CSI volume: its driver is not registered; it stays staged"
            );
            return;
        };
        if let Err(message) = driver.unstage(handle, &staging) {
            tracing::warn!(driver = driver_name, handle, error = %message, "cannot unstage a CSI volume");
            return;
        }
        // A driver may remove the staging directory itself; gone is not mounted.
        let mounted = staging.exists() && self.mounter.is_mount_point(&staging).unwrap_or(true);
        if mounted {
            tracing::warn!(
                driver = driver_name,
                handle,
                "a CSI volume is still mounted after unstaging"
            );
            return;
        }
        let _ = std::fs::remove_dir(&staging);
        if let Some(parent) = staging.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::{FakeObjects, test_pod, with_ctx};
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, HostPathVolumeSource, LocalVolumeSource, ObjectReference,
        PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
        PersistentVolumeClaimStatus, Pod,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A driver that "mounts" a tmpfs on the staging dir through the recording mounter, as
    /// a real one leaves a mount there, and counts its calls.
    struct FakeDriver {
        mounter: Arc<RecordingMounter>,
        calls: Mutex<Vec<String>>,
    }

    impl FakeDriver {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl CsiDriver for FakeDriver {
        fn stage(&self, handle: &str, staging_dir: &Path) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!("stage {handle}"));
            self.mounter
                .mount_tmpfs(staging_dir, None, 0o755)
                .map_err(|e| e.to_string())
        }
        fn unstage(&self, handle: &str, staging_dir: &Path) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!("unstage {handle}"));
            self.mounter
                .unmount(staging_dir)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    struct Node {
        _tmp: tempfile::TempDir,
        state: PathBuf,
        mounter: Arc<RecordingMounter>,
        driver: Arc<FakeDriver>,
        manager: VolumeManager,
    }

    fn node() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let mounter = Arc::new(RecordingMounter::default());
        let driver = Arc::new(FakeDriver {
            mounter: mounter.clone(),
            calls: Mutex::new(Vec::new()),
        });
        let manager = VolumeManager::new(
            VolumeConfig {
                host_path_policy: HostPathPolicy::with_data_dir(&state),
                secrets_in_tmpfs: true,
                state_dir: state.clone(),
                csi_drivers: CsiDrivers::from([(
                    "local-ext4.berth.dev".to_string(),
                    driver.clone() as Arc<dyn CsiDriver>,
                )]),
            },
            mounter.clone(),
        );
        Node {
            _tmp: tmp,
            state,
            mounter,
            driver,
            manager,
        }
    }

    impl Node {
        fn pod_dir(&self, uid: &str) -> PathBuf {
            self.state.join("pods").join(uid)
        }

        fn setup(
            &self,
            objects: &FakeObjects,
            pod: &Pod,
        ) -> Result<BTreeMap<String, PreparedVolume>, VolumeError> {
            let uid = pod.metadata.uid.clone().unwrap();
            with_ctx(pod, objects, |ctx| {
                self.manager.setup(ctx, &self.pod_dir(&uid))
            })
        }
    }

    fn claim_pod(uid: &str, claim: &str, read_only: Option<bool>) -> Pod {
        let mut pod = test_pod();
        pod.metadata.uid = Some(uid.into());
        pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only,
            }),
            ..Default::default()
        }]);
        pod
    }

    fn claim(name: &str, volume: Option<&str>, phase: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                volume_name: volume.map(String::from),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn pv(name: &str, claim: &str, modes: &[&str], spec: PersistentVolumeSpec) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                claim_ref: Some(ObjectReference {
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: Some("ns".into()),
                    name: Some(claim.into()),
                    uid: Some(format!("uid-{claim}")),
                    ..Default::default()
                }),
                ..spec
            }),
            status: None,
        }
    }

    fn local(path: &Path) -> PersistentVolumeSpec {
        PersistentVolumeSpec {
            local: Some(LocalVolumeSource {
                path: path.to_str().unwrap().into(),
                fs_type: None,
            }),
            ..Default::default()
        }
    }

    fn host(path: &Path, type_: Option<&str>) -> PersistentVolumeSpec {
        PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: path.to_str().unwrap().into(),
                type_: type_.map(String::from),
            }),
            ..Default::default()
        }
    }

    fn csi(driver: &str, handle: &str) -> PersistentVolumeSpec {
        PersistentVolumeSpec {
            csi: Some(CSIPersistentVolumeSource {
                driver: driver.into(),
                volume_handle: handle.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_waits_for_its_claim_to_be_bound() {
        let n = node();
        let data = n._tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let pod = claim_pod("p1", "c", None);
        let message = |objects: &FakeObjects| n.setup(objects, &pod).unwrap_err().to_string();
        let prefix = "MountVolume.SetUp failed for volume \"data\" : ";

        let objects = FakeObjects::default();
        assert_eq!(
            message(&objects),
            format!("{prefix}persistentvolumeclaim \"c\" not found")
        );
        let objects = FakeObjects::default().with_claim(claim("c", None, "Pending"));
        assert_eq!(
            message(&objects),
            format!("{prefix}persistentvolumeclaim \"c\" is not bound")
        );
        // volumeName alone (pre-bound, the controller has not finished) is not Bound yet.
        let objects = FakeObjects::default().with_claim(claim("c", Some("pv1"), "Pending"));
        assert!(message(&objects).ends_with("is not bound"));
        let objects = FakeObjects::default().with_claim(claim("c", Some("pv1"), "Bound"));
        assert_eq!(
            message(&objects),
            format!("{prefix}persistentvolume \"pv1\" not found")
        );
        // A volume whose claimRef names another claim is not this claim's.
        let objects = FakeObjects::default()
            .with_claim(claim("c", Some("pv1"), "Bound"))
            .with_volume(pv("pv1", "other", &["ReadWriteOnce"], local(&data)));
        assert!(message(&objects).contains("is not bound to persistentvolumeclaim \"c\""));
        let mut terminating = claim("c", Some("pv1"), "Bound");
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let objects = FakeObjects::default().with_claim(terminating);
        assert!(message(&objects).ends_with("is being deleted"));

        assert!(
            !n.pod_dir("p1").join(VOLUMES_DIR).exists(),
            "nothing made while waiting"
        );
        assert!(n.mounter.ops().is_empty());
    }

    #[test]
    fn local_and_host_path_volumes_are_bind_mounted_once() {
        let n = node();
        let data = n._tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("keep"), "x").unwrap();
        let objects = FakeObjects::default()
            .with_claim(claim("c", Some("pv1"), "Bound"))
            .with_volume(pv("pv1", "c", &["ReadWriteOnce"], local(&data)));
        let pod = claim_pod("p1", "c", None);
        let got = n.setup(&objects, &pod).unwrap();
        let target = n
            .pod_dir("p1")
            .join("volumes/kubernetes.io~local-volume/data");
        assert_eq!(got["data"].host_path, target);
        assert_eq!(got["data"].kind, VolumeKind::LocalVolume);
        assert!(!got["data"].read_only);
        let source = std::fs::canonicalize(&data).unwrap();
        assert_eq!(
            n.mounter.ops(),
            vec![MountOp::Bind {
                source: source.clone(),
                target: target.clone()
            }]
        );
        // An agent adopting the running pod finds the mount and binds nothing again.
        n.setup(&objects, &pod).unwrap();
        assert_eq!(n.mounter.ops().len(), 1);

        n.manager.teardown(&n.pod_dir("p1")).unwrap();
        assert!(n.mounter.mounted().is_empty());
        assert!(!n.pod_dir("p1").join(VOLUMES_DIR).exists());
        assert_eq!(std::fs::read_to_string(data.join("keep")).unwrap(), "x");

        // hostPath PVs the same way, under their own plugin directory.
        let objects = FakeObjects::default()
            .with_claim(claim("h", Some("pv2"), "Bound"))
            .with_volume(pv("pv2", "h", &["ReadWriteMany"], host(&data, None)));
        let got = n.setup(&objects, &claim_pod("p2", "h", None)).unwrap();
        assert_eq!(
            got["data"].host_path,
            n.pod_dir("p2").join("volumes/kubernetes.io~host-path/data")
        );
        assert!(n.mounter.mounted().contains(&got["data"].host_path));
    }

    #[test]
    fn a_missing_path_fails_and_creates_nothing() {
        let n = node();
        let missing = n._tmp.path().join("gone/data");
        for spec in [
            local(&missing),
            host(&missing, None),
            host(&missing, Some("Directory")),
        ] {
            let objects = FakeObjects::default()
                .with_claim(claim("c", Some("pv1"), "Bound"))
                .with_volume(pv("pv1", "c", &["ReadWriteOnce"], spec));
            let err = n.setup(&objects, &claim_pod("p1", "c", None)).unwrap_err();
            assert!(
                err.to_string().contains(&missing.display().to_string()),
                "{err}"
            );
            assert!(!missing.exists() && !missing.parent().unwrap().exists());
            assert!(!n.pod_dir("p1").join(VOLUMES_DIR).exists());
        }
        assert_eq!(
            VolumeErrorReason::PathMissing("/mnt/x".into()).to_string(),
            "path \"/mnt/x\" does not exist"
        );
        // …unless the hostPath type says to create it, as in Kubernetes.
        let objects = FakeObjects::default()
            .with_claim(claim("c", Some("pv1"), "Bound"))
            .with_volume(pv(
                "pv1",
                "c",
                &["ReadWriteOnce"],
                host(&missing, Some("DirectoryOrCreate")),
            ));
        n.setup(&objects, &claim_pod("p1", "c", None)).unwrap();
        assert!(missing.is_dir());
    }

    #[test]
    fn sensitive_paths_are_denied_but_local_path_volumes_are_not() {
        let n = node();
        for path in [
            PathBuf::from("/etc"),
            PathBuf::from("/"),
            n.state.join("pods"),
            n.state.clone(),
            n.state.join("storage/local-path"),
        ] {
            std::fs::create_dir_all(n.state.join("pods")).unwrap();
            std::fs::create_dir_all(n.state.join("storage/local-path")).unwrap();
            let objects = FakeObjects::default()
                .with_claim(claim("c", Some("pv1"), "Bound"))
                .with_volume(pv("pv1", "c", &["ReadWriteOnce"], local(&path)));
            let err = n.setup(&objects, &claim_pod("p1", "c", None)).unwrap_err();
            assert!(
                matches!(
                    err.reason,
                    VolumeErrorReason::HostPath(HostPathError::Denied { .. })
                ),
                "{}: {err}",
                path.display()
            );
        }
        let provisioned = n
            .state
            .join("storage/local-path/pvc-0b7e1d5c-1111-2222-3333-444455556666");
        std::fs::create_dir_all(&provisioned).unwrap();
        let objects = FakeObjects::default()
            .with_claim(claim("c", Some("pv1"), "Bound"))
            .with_volume(pv("pv1", "c", &["ReadWriteOnce"], local(&provisioned)));
        n.setup(&objects, &claim_pod("p1", "c", None)).unwrap();
    }

    #[test]
    fn read_only_from_the_pod_or_read_only_many() {
        let n = node();
        let data = n._tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let cases = [
            (Some(true), &["ReadWriteOnce"][..], true),
            (Some(false), &["ReadOnlyMany"][..], true),
            (None, &["ReadOnlyMany", "ReadWriteOnce"][..], false),
            (None, &["ReadWriteMany"][..], false),
        ];
        for (i, (read_only, modes, want)) in cases.into_iter().enumerate() {
            let objects = FakeObjects::default()
                .with_claim(claim("c", Some("pv1"), "Bound"))
                .with_volume(pv("pv1", "c", modes, local(&data)));
            let got = n
                .setup(&objects, &claim_pod(&format!("p{i}"), "c", read_only))
                .unwrap();
            assert_eq!(got["data"].read_only, want, "{read_only:?} {modes:?}");
        }
    }

    #[test]
    fn csi_volumes_are_staged_once_and_unstaged_after_the_last_pod() {
        let n = node();
        let handle = "pvc-0b7e1d5c-1111-2222-3333-444455556666";
        let objects = FakeObjects::default()
            .with_claim(claim("c", Some("pv1"), "Bound"))
            .with_volume(pv(
                "pv1",
                "c",
                &["ReadWriteOnce"],
                csi("local-ext4.berth.dev", handle),
            ));
        let staging = n
            .state
            .join("csi/local-ext4.berth.dev")
            .join(handle)
            .join("globalmount");
        let a = n.setup(&objects, &claim_pod("a", "c", None)).unwrap();
        let b = n.setup(&objects, &claim_pod("b", "c", Some(true))).unwrap();
        // Adopted again after a restart: still staged once, bound once per pod.
        n.setup(&objects, &claim_pod("a", "c", None)).unwrap();
        assert_eq!(n.driver.calls(), vec![format!("stage {handle}")]);
        let a_mount = n.pod_dir("a").join("volumes/kubernetes.io~csi/data/mount");
        assert_eq!(a["data"].host_path, a_mount);
        assert_eq!(a["data"].kind, VolumeKind::Csi);
        assert!(!a["data"].read_only && b["data"].read_only);
        let binds: Vec<_> = n
            .mounter
            .ops()
            .into_iter()
            .filter(|op| matches!(op, MountOp::Bind { .. }))
            .collect();
        assert_eq!(
            binds,
            vec![
                MountOp::Bind {
                    source: staging.clone(),
                    target: a_mount.clone()
                },
                MountOp::Bind {
                    source: staging.clone(),
                    target: b["data"].host_path.clone()
                },
            ]
        );

        n.manager.teardown(&n.pod_dir("a")).unwrap();
        assert_eq!(n.driver.calls().len(), 1, "b still uses it");
        assert!(!n.mounter.mounted().contains(&a_mount));
        assert!(n.mounter.mounted().contains(&staging));
        n.manager.teardown(&n.pod_dir("b")).unwrap();
        assert_eq!(
            n.driver.calls(),
            vec![format!("stage {handle}"), format!("unstage {handle}")]
        );
        assert!(n.mounter.mounted().is_empty(), "{:?}", n.mounter.mounted());
        assert!(!staging.exists() && !staging.parent().unwrap().exists());
    }

    #[test]
    fn csi_handles_and_drivers_are_checked_before_anything_is_made() {
        let n = node();
        for (driver, handle, want) in [
            (
                "local-ext4.berth.dev",
                "../../etc",
                "invalid CSI volumeHandle",
            ),
            (
                "local-ext4.berth.dev",
                "pvc-1/../../x",
                "invalid CSI volumeHandle",
            ),
            (
                "berth.dev/nope",
                "pvc-1",
                "not found in the list of registered CSI drivers",
            ),
        ] {
            let objects = FakeObjects::default()
                .with_claim(claim("c", Some("pv1"), "Bound"))
                .with_volume(pv("pv1", "c", &["ReadWriteOnce"], csi(driver, handle)));
            let err = n.setup(&objects, &claim_pod("a", "c", None)).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        assert!(n.driver.calls().is_empty());
        assert!(!n.state.join("csi").exists());
        assert!(!n.pod_dir("a").join(VOLUMES_DIR).exists());
    }

    #[test]
    fn a_staged_volume_without_pods_is_unstaged_by_the_sweep() {
        let n = node();
        let handle = "pvc-1";
        let objects = FakeObjects::default()
            .with_claim(claim("c", Some("pv1"), "Bound"))
            .with_volume(pv(
                "pv1",
                "c",
                &["ReadWriteOnce"],
                csi("local-ext4.berth.dev", handle),
            ));
        n.setup(&objects, &claim_pod("a", "c", None)).unwrap();
        n.manager.unstage_unused();
        assert_eq!(n.driver.calls().len(), 1, "in use: kept");
        // A crash lost the pod directory after its mounts were gone but before the unstage.
        n.mounter
            .unmount(&n.pod_dir("a").join("volumes/kubernetes.io~csi/data/mount"))
            .unwrap();
        std::fs::remove_dir_all(n.pod_dir("a")).unwrap();
        n.manager.unstage_unused();
        assert_eq!(
            n.driver.calls().last().unwrap(),
            &format!("unstage {handle}")
        );
        assert!(n.mounter.mounted().is_empty());
    }

    #[test]
    fn handles_and_driver_names_are_single_components() {
        for ok in ["pvc-0b7e", "a", "vol.1-x", &"a".repeat(253)] {
            assert!(valid_volume_handle(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "../etc",
            "A",
            "a b",
            "a\0",
            &"a".repeat(254),
        ] {
            assert!(!valid_volume_handle(bad), "{bad:?}");
        }
        let root = Path::new("/data/csi");
        assert_eq!(
            csi_staging_dir(root, "local-ext4.berth.dev", "pvc-1"),
            Some(PathBuf::from(
                "/data/csi/local-ext4.berth.dev/pvc-1/globalmount"
            ))
        );
        assert_eq!(csi_staging_dir(root, "../x", "pvc-1"), None);
        assert_eq!(csi_staging_dir(root, "a~b", "pvc-1"), None);
        assert_eq!(csi_staging_dir(root, "berth.dev/x", "../../etc"), None);
    }
}
