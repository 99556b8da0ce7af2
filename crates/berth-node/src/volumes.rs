//! A pod's volumes on the host: made before its containers start, refreshed while it runs,
//! removed when it is gone.
//!
//! This module owns the volume directories under `<pod dir>/volumes/` (kubelet's layout:
//! `volumes/kubernetes.io~empty-dir/<name>`, `…~configmap/…`, `…~secret/…`,
//! `…~downward-api/…`, `…~projected/…`) and the host paths handed to the runtime to bind:
//!
//! - `emptyDir`: a directory (mode 0777, as kubelet, so any container user can write); medium
//!   `Memory` mounts a tmpfs there, sized by `sizeLimit` when set (otherwise the kernel's
//!   default of half the RAM: the pod's memory limit is not folded in yet).
//! - `hostPath`: kubelet's type checks plus berth's [`HostPathPolicy`] (see `host_path`).
//! - `configMap`, `secret`, `downwardAPI`, `projected`: files written with kubelet's atomic
//!   layout (see `atomic`), always bound read-only. Secret and projected volumes get a tmpfs
//!   of their own when [`VolumeConfig::secrets_in_tmpfs`] is set, as kubelet does, so secrets
//!   never reach the disk; either way their parent directory is 0700.
//! - `persistentVolumeClaim`: the Bound volume's `local`/`hostPath` directory bind-mounted on
//!   `volumes/kubernetes.io~local-volume/<name>` (`…~host-path/…`), or a CSI volume staged once
//!   per node by its [`CsiDriver`] and bind-mounted on `volumes/kubernetes.io~csi/<name>/mount`
//!   (see `claim`). An unbound claim is an error the worker retries: the pod waits.
//! - everything else: an error.
//!
//! Mounts go through [`Mounter`] so all of this is tested without root. Teardown needs no pod
//! spec (the pod may be long gone after a restart): it walks what is on disk, unmounts, and
//! removes with `remove::remove_tree`, which never follows a symlink or crosses a mount.

mod atomic;
mod claim;
mod host_path;
mod mount;
pub mod ownership;
mod remove;
mod usage;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Secret, Volume, VolumeProjection,
};

pub use atomic::{AtomicWriteError, FileProjection, Payload, normalize_path, write_atomic};
pub use claim::{CsiDriver, CsiDrivers, csi_staging_dir, valid_volume_handle};
pub use host_path::{HostPathError, HostPathPolicy};
pub use mount::{HostMounter, MountOp, Mounter, RecordingMounter};
pub use remove::remove_tree;
pub use usage::{disk_usage, empty_dir_over_limit, has_sized_empty_dir};

use crate::env::{
    Decimal, EnvError, PodContext, field_ref_value, find_container, resource_field_value,
};

/// The mode of files in API-data volumes when the spec does not say (the API's default).
pub const DEFAULT_MODE: u32 = 0o644;

/// The directory under the pod directory that holds its volumes.
pub const VOLUMES_DIR: &str = "volumes";

/// What the agent decides about volumes for the whole node.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    pub host_path_policy: HostPathPolicy,
    /// Back secret and projected volumes with a tmpfs, as kubelet does.
    pub secrets_in_tmpfs: bool,
    /// The agent's data dir: pods live in `pods/`, CSI volumes are staged under `csi/`, and
    /// the local-path provisioner's volumes under `storage/local-path/` may be PV paths even
    /// though the host-path policy denies the data dir.
    pub state_dir: PathBuf,
    /// The CSI drivers persistentVolumeClaims may use, by driver name.
    pub csi_drivers: CsiDrivers,
}

/// What kind of volume a prepared path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir,
    /// An emptyDir with medium `Memory`: a tmpfs.
    EmptyDirMemory,
    HostPath,
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
    /// A claim bound to a PV with a `local` source: a bind mount of its path.
    LocalVolume,
    /// A claim bound to a PV with a `hostPath` source: a bind mount of its path.
    PvHostPath,
    /// A claim bound to a CSI PV: a bind mount of the node's staging dir.
    Csi,
}

impl VolumeKind {
    /// kubelet's plugin directory name, for the kinds that live under the pod directory.
    fn plugin_dir(self) -> Option<&'static str> {
        match self {
            VolumeKind::EmptyDir | VolumeKind::EmptyDirMemory => Some("kubernetes.io~empty-dir"),
            VolumeKind::HostPath => None,
            VolumeKind::ConfigMap => Some("kubernetes.io~configmap"),
            VolumeKind::Secret => Some("kubernetes.io~secret"),
            VolumeKind::DownwardApi => Some("kubernetes.io~downward-api"),
            VolumeKind::Projected => Some("kubernetes.io~projected"),
            VolumeKind::LocalVolume => Some("kubernetes.io~local-volume"),
            VolumeKind::PvHostPath => Some("kubernetes.io~host-path"),
            VolumeKind::Csi => Some(claim::CSI_PLUGIN),
        }
    }

    /// API data is always mounted read-only (kubelet has done so since 1.9.4); for the other
    /// kinds the volumeMount's `readOnly` decides.
    fn forced_read_only(self) -> bool {
        matches!(
            self,
            VolumeKind::ConfigMap
                | VolumeKind::Secret
                | VolumeKind::DownwardApi
                | VolumeKind::Projected
        )
    }

    fn holds_secrets(self) -> bool {
        matches!(self, VolumeKind::Secret | VolumeKind::Projected)
    }
}

/// A volume ready for the runtime to bind into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    pub name: String,
    pub kind: VolumeKind,
    /// What to bind (a directory, or for a hostPath possibly a file, socket or device).
    pub host_path: PathBuf,
    /// Bind read-only whatever the volumeMount says.
    pub read_only: bool,
}

/// Why a volume could not be set up. `Display` is kubelet's FailedMount event message.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {reason}")]
pub struct VolumeError {
    pub volume: String,
    pub reason: VolumeErrorReason,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeErrorReason {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKeyMissing(String),
    #[error("references non-existent secret key: {0}")]
    SecretKeyMissing(String),
    #[error("invalid volume name {0:?}")]
    InvalidName(String),
    #[error("{0} volumes are not supported yet")]
    Unsupported(String),
    #[error("emptyDir medium {0:?} is not supported")]
    UnsupportedMedium(String),
    #[error("invalid sizeLimit {0:?}")]
    BadSizeLimit(String),
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimNotFound(String),
    #[error("persistentvolumeclaim \"{0}\" is not bound")]
    ClaimNotBound(String),
    #[error("persistentvolumeclaim \"{0}\" is being deleted")]
    ClaimTerminating(String),
    #[error("persistentvolume \"{0}\" not found")]
    VolumeNotFound(String),
    #[error(
        "persistentvolume \"{pv}\" is not bound to persistentvolumeclaim \"{claim}\" (its claimRef names another)"
    )]
    ClaimRefMismatch { pv: String, claim: String },
    #[error("path \"{0}\" does not exist")]
    PathMissing(String),
    #[error("driver name {0} not found in the list of registered CSI drivers")]
    CsiDriverNotFound(String),
    #[error("invalid CSI volumeHandle {0:?}")]
    InvalidVolumeHandle(String),
    #[error("CSI driver {driver} cannot stage volume {handle}: {message}")]
    CsiStage {
        driver: String,
        handle: String,
        message: String,
    },
    #[error(transparent)]
    HostPath(#[from] HostPathError),
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// What a refresh did: the volumes whose files changed, and the ones that could not be
/// refreshed (they keep their previous contents, as in kubelet).
#[derive(Debug, Default)]
pub struct RefreshReport {
    pub changed: Vec<String>,
    pub errors: Vec<VolumeError>,
}

/// Why teardown stopped. Nothing outside the pod directory is ever touched.
#[derive(Debug, thiserror::Error)]
#[error("UnmountVolume.TearDown failed for {}: {source}", path.display())]
pub struct TeardownError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Prepares, refreshes and removes pods' volumes.
pub struct VolumeManager {
    config: VolumeConfig,
    mounter: Arc<dyn Mounter>,
    /// The host-path policy for PersistentVolumes' `local` and `hostPath` sources: the pods'
    /// policy plus the trees below the local-path provisioner's root.
    pv_path_policy: HostPathPolicy,
    /// `<data>/storage/local-path` resolved: its volumes may be mounted, the root itself not.
    local_path_root: PathBuf,
    /// Held while staging or unstaging a CSI volume (see `claim`).
    csi: Mutex<()>,
}

fn io_reason(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeErrorReason {
    let path = path.to_path_buf();
    move |source| VolumeErrorReason::Io { what, path, source }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), VolumeErrorReason> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_reason("create dir", path))?;
    // Set the mode explicitly: the umask would have narrowed it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_reason("chmod", path))
}

/// The pod's fsGroup on the volume kinds kubelet manages ownership of and that pods write:
/// emptyDirs and claims on local or CSI volumes (never a hostPath: the host's files are not
/// the pod's to re-own).
fn apply_fs_group(
    pod: &k8s_openapi::api::core::v1::Pod,
    prepared: &PreparedVolume,
) -> Result<(), VolumeErrorReason> {
    let context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let Some(gid) = context
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok())
    else {
        return Ok(());
    };
    let managed = matches!(
        prepared.kind,
        VolumeKind::EmptyDir
            | VolumeKind::EmptyDirMemory
            | VolumeKind::LocalVolume
            | VolumeKind::Csi
    );
    if !managed || prepared.read_only {
        return Ok(());
    }
    let policy = ownership::ChangePolicy::from_kubernetes(
        context.and_then(|c| c.fs_group_change_policy.as_deref()),
    );
    ownership::apply(&prepared.host_path, gid, policy).map_err(|e| VolumeErrorReason::Io {
        what: "apply fsGroup to",
        path: prepared.host_path.clone(),
        source: e.into(),
    })
}

/// A volume name as the API validates it (a DNS label), checked again because it becomes a
/// path component.
fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The kind of a volume that berth does not handle, named as in the API (`nfs`, …).
fn unsupported_kind(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "this kind of".to_string())
}

impl VolumeManager {
    pub fn new(config: VolumeConfig, mounter: Arc<dyn Mounter>) -> Self {
        let local_path = config.state_dir.join(claim::LOCAL_PATH_ROOT);
        let local_path = host_path::canonicalize_lenient(&local_path).unwrap_or(local_path);
        let pv_path_policy = config.host_path_policy.clone().allow(&local_path);
        VolumeManager {
            config,
            mounter,
            pv_path_policy,
            local_path_root: local_path,
            csi: Mutex::new(()),
        }
    }

    pub fn mounter(&self) -> &Arc<dyn Mounter> {
        &self.mounter
    }

    /// Sets up every volume of the pod under `pod_dir` (`<data>/pods/<uid>`). Idempotent: the
    /// agent calls it again after a failure or a restart, and what exists is reused.
    pub fn setup(
        &self,
        ctx: &PodContext<'_>,
        pod_dir: &Path,
    ) -> Result<BTreeMap<String, PreparedVolume>, VolumeError> {
        let mut out = BTreeMap::new();
        for volume in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let prepared = self
                .setup_one(ctx, pod_dir, volume)
                .and_then(|prepared| {
                    apply_fs_group(ctx.pod, &prepared)?;
                    Ok(prepared)
                })
                .map_err(|reason| VolumeError {
                    volume: volume.name.clone(),
                    reason,
                })?;
            out.insert(volume.name.clone(), prepared);
        }
        Ok(out)
    }

    /// Rewrites the configMap, secret, downwardAPI and projected volumes whose source changed
    /// (labels, annotations, the objects). Each update is atomic.
    pub fn refresh(&self, ctx: &PodContext<'_>, pod_dir: &Path) -> RefreshReport {
        let mut report = RefreshReport::default();
        for volume in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(kind) = api_data_kind(volume) else {
                continue;
            };
            let result = self.write_api_data(ctx, pod_dir, volume, kind);
            match result {
                Ok((_, true)) => report.changed.push(volume.name.clone()),
                Ok((_, false)) => {}
                Err(reason) => report.errors.push(VolumeError {
                    volume: volume.name.clone(),
                    reason,
                }),
            }
        }
        report
    }

    fn setup_one(
        &self,
        ctx: &PodContext<'_>,
        pod_dir: &Path,
        volume: &Volume,
    ) -> Result<PreparedVolume, VolumeErrorReason> {
        if !valid_volume_name(&volume.name) {
            return Err(VolumeErrorReason::InvalidName(volume.name.clone()));
        }
        let prepared = |kind: VolumeKind, host_path: PathBuf| PreparedVolume {
            name: volume.name.clone(),
            kind,
            host_path,
            read_only: kind.forced_read_only(),
        };
        if let Some(empty) = &volume.empty_dir {
            let memory = match empty.medium.as_deref().unwrap_or("") {
                "" => false,
                "Memory" => true,
                other => return Err(VolumeErrorReason::UnsupportedMedium(other.to_string())),
            };
            let kind = if memory {
                VolumeKind::EmptyDirMemory
            } else {
                VolumeKind::EmptyDir
            };
            let dir = self.volume_dir(pod_dir, kind, &volume.name)?;
            if memory {
                let size = match &empty.size_limit {
                    Some(q) => Some(
                        Decimal::parse(&q.0)
                            .and_then(Decimal::value_ceil)
                            .and_then(|v| u64::try_from(v).ok())
                            .filter(|v| *v > 0)
                            .ok_or_else(|| VolumeErrorReason::BadSizeLimit(q.0.clone()))?,
                    ),
                    None => None,
                };
                self.ensure_tmpfs(&dir, size, 0o777)?;
            }
            return Ok(prepared(kind, dir));
        }
        if let Some(host) = &volume.host_path {
            let path = host_path::prepare(
                &self.config.host_path_policy,
                &host.path,
                host.type_.as_deref(),
            )?;
            return Ok(prepared(VolumeKind::HostPath, path));
        }
        if let Some(kind) = api_data_kind(volume) {
            let (dir, _) = self.write_api_data(ctx, pod_dir, volume, kind)?;
            return Ok(prepared(kind, dir));
        }
        if let Some(source) = &volume.persistent_volume_claim {
            return self.setup_claim(ctx, pod_dir, volume, source);
        }
        Err(VolumeErrorReason::Unsupported(unsupported_kind(volume)))
    }

    /// Makes `<pod>/volumes/<plugin>/<name>`; the plugin directory of secret-holding kinds is
    /// 0700 so other host users cannot read through it. An emptyDir's own directory is 0777.
    fn volume_dir(
        &self,
        pod_dir: &Path,
        kind: VolumeKind,
        name: &str,
    ) -> Result<PathBuf, VolumeErrorReason> {
        let dir = self.plugin_dir(pod_dir, kind)?.join(name);
        // A mounted tmpfs keeps the mode it was mounted with; chmod only a plain directory.
        let mounted = self.mounter.is_mount_point(&dir).unwrap_or(false);
        if !mounted {
            let mode = match kind {
                VolumeKind::EmptyDir | VolumeKind::EmptyDirMemory => 0o777,
                _ => 0o755,
            };
            mkdir(&dir, mode)?;
        }
        Ok(dir)
    }

    /// Makes `<pod>/volumes/<plugin>`; 0700 for the kinds that hold secrets.
    fn plugin_dir(&self, pod_dir: &Path, kind: VolumeKind) -> Result<PathBuf, VolumeErrorReason> {
        let Some(plugin) = kind.plugin_dir() else {
            return Err(VolumeErrorReason::Unsupported(format!("{kind:?}")));
        };
        let volumes = pod_dir.join(VOLUMES_DIR);
        mkdir(&volumes, 0o750)?;
        let plugin_dir = volumes.join(plugin);
        mkdir(
            &plugin_dir,
            if kind.holds_secrets() { 0o700 } else { 0o750 },
        )?;
        Ok(plugin_dir)
    }

    fn ensure_tmpfs(
        &self,
        dir: &Path,
        size: Option<u64>,
        mode: u32,
    ) -> Result<(), VolumeErrorReason> {
        let mounted = self
            .mounter
            .is_mount_point(dir)
            .map_err(io_reason("check mount", dir))?;
        if !mounted {
            self.mounter
                .mount_tmpfs(dir, size, mode)
                .map_err(io_reason("mount tmpfs on", dir))?;
        }
        Ok(())
    }

    /// Computes and writes an API-data volume; returns its directory and whether it changed.
    fn write_api_data(
        &self,
        ctx: &PodContext<'_>,
        pod_dir: &Path,
        volume: &Volume,
        kind: VolumeKind,
    ) -> Result<(PathBuf, bool), VolumeErrorReason> {
        // The payload first: a missing object fails before anything is made on disk.
        let payload = payload_for(ctx, volume)?;
        let dir = self.volume_dir(pod_dir, kind, &volume.name)?;
        if kind.holds_secrets() && self.config.secrets_in_tmpfs {
            self.ensure_tmpfs(&dir, None, 0o755)?;
        }
        let changed = write_atomic(&dir, &payload)?;
        Ok((dir, changed))
    }

    /// Unmounts and removes everything under `<pod>/volumes` and `<pod>/volume-subpaths`.
    /// Never follows a symlink and never removes through a mount point: if something is still
    /// mounted after unmounting, teardown stops with an error and the agent retries later.
    pub fn teardown(&self, pod_dir: &Path) -> Result<(), TeardownError> {
        crate::subpath::cleanup_sub_paths(self.mounter.as_ref(), pod_dir, None).map_err(
            |source| TeardownError {
                path: pod_dir.join(crate::subpath::SUBPATHS_DIR),
                source,
            },
        )?;
        // CSI volumes first: their mounts sit one level deeper, and unstaging needs what
        // their directories record.
        self.teardown_csi(pod_dir)?;
        let volumes = pod_dir.join(VOLUMES_DIR);
        for (plugin, plugin_is_dir) in entries(&volumes)? {
            if plugin_is_dir {
                for (volume, _) in entries(&plugin)? {
                    unmount_all(self.mounter.as_ref(), &volume)?;
                    remove(&volume)?;
                }
            }
            remove(&plugin)?;
        }
        remove(&volumes)
    }
}

fn remove(path: &Path) -> Result<(), TeardownError> {
    remove_tree(path).map_err(|source| TeardownError {
        path: path.to_path_buf(),
        source,
    })
}

/// Unmounts every mount stacked on `path`.
pub(crate) fn unmount_all(mounter: &dyn Mounter, path: &Path) -> Result<(), TeardownError> {
    // Bounded: a path cannot legitimately carry more than a few stacked mounts.
    for _ in 0..16 {
        let unmounted = mounter.unmount(path).map_err(|source| TeardownError {
            path: path.to_path_buf(),
            source,
        })?;
        if !unmounted {
            return Ok(());
        }
    }
    Err(TeardownError {
        path: path.to_path_buf(),
        source: io::Error::other("still mounted after 16 unmounts"),
    })
}

/// The entries of `dir` (which may not exist), each with whether it is a real directory (not
/// a symlink to one) that may be descended into; anything else is only ever unlinked. Only
/// the agent writes at these levels (containers see the volume directories' contents, which
/// `remove_tree` handles with descriptors), so checking with lstat first is enough here.
pub(crate) fn entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>, TeardownError> {
    let err = |source| TeardownError {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let is_dir = entry.file_type().map_err(err)?.is_dir();
        out.push((entry.path(), is_dir));
    }
    out.sort();
    Ok(out)
}

fn api_data_kind(volume: &Volume) -> Option<VolumeKind> {
    if volume.config_map.is_some() {
        Some(VolumeKind::ConfigMap)
    } else if volume.secret.is_some() {
        Some(VolumeKind::Secret)
    } else if volume.downward_api.is_some() {
        Some(VolumeKind::DownwardApi)
    } else if volume.projected.is_some() {
        Some(VolumeKind::Projected)
    } else {
        None
    }
}

/// A mode from the API (an i32 that validation keeps within 0..=0o777).
fn mode_of(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map(|m| m & 0o7777)
        .unwrap_or(default)
}

/// The files of an API-data volume.
fn payload_for(ctx: &PodContext<'_>, volume: &Volume) -> Result<Payload, VolumeErrorReason> {
    let mut payload = Payload::new();
    if let Some(src) = &volume.config_map {
        let mode = mode_of(src.default_mode, DEFAULT_MODE);
        add_config_map(
            ctx,
            &mut payload,
            &src.name,
            src.items.as_deref(),
            src.optional,
            mode,
        )?;
    } else if let Some(src) = &volume.secret {
        let mode = mode_of(src.default_mode, DEFAULT_MODE);
        let name = src.secret_name.as_deref().unwrap_or("");
        add_secret(
            ctx,
            &mut payload,
            name,
            src.items.as_deref(),
            src.optional,
            mode,
        )?;
    } else if let Some(src) = &volume.downward_api {
        let mode = mode_of(src.default_mode, DEFAULT_MODE);
        add_downward_api(ctx, &mut payload, src.items.as_deref(), mode)?;
    } else if let Some(src) = &volume.projected {
        let mode = mode_of(src.default_mode, DEFAULT_MODE);
        for source in src.sources.iter().flatten() {
            add_projection(ctx, &mut payload, source, mode)?;
        }
    }
    Ok(payload)
}

fn add_projection(
    ctx: &PodContext<'_>,
    payload: &mut Payload,
    source: &VolumeProjection,
    mode: u32,
) -> Result<(), VolumeErrorReason> {
    if let Some(cm) = &source.config_map {
        add_config_map(
            ctx,
            payload,
            &cm.name,
            cm.items.as_deref(),
            cm.optional,
            mode,
        )?;
    }
    if let Some(s) = &source.secret {
        add_secret(ctx, payload, &s.name, s.items.as_deref(), s.optional, mode)?;
    }
    if let Some(d) = &source.downward_api {
        add_downward_api(ctx, payload, d.items.as_deref(), mode)?;
    }
    if source.service_account_token.is_some() {
        // TODO(service accounts): needs the TokenRequest API; until then the token file is
        // left out and the rest of the projection is written.
        tracing::debug!("serviceAccountToken projection skipped: not supported yet");
    }
    if source.cluster_trust_bundle.is_some() {
        tracing::debug!("clusterTrustBundle projection skipped: not supported");
    }
    Ok(())
}

/// Adds `entries` (all keys when `items` is empty) to the payload; an item naming a missing
/// key is an error unless the source is optional.
fn add_items(
    payload: &mut Payload,
    entries: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: u32,
    missing_key: fn(String) -> VolumeErrorReason,
) -> Result<(), VolumeErrorReason> {
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, data) in entries {
                payload.insert(
                    key.clone(),
                    FileProjection {
                        data: data.clone(),
                        mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = entries.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing_key(item.key.clone()));
                };
                payload.insert(
                    normalize_path(&item.path)?,
                    FileProjection {
                        data: data.clone(),
                        mode: mode_of(item.mode, mode),
                    },
                );
            }
        }
    }
    Ok(())
}

fn config_map_entries(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

fn secret_entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    out
}

fn namespace<'a>(ctx: &'a PodContext<'_>) -> &'a str {
    ctx.pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn add_config_map(
    ctx: &PodContext<'_>,
    payload: &mut Payload,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<(), VolumeErrorReason> {
    let optional = optional == Some(true);
    let Some(cm) = ctx.objects.config_map(namespace(ctx), name) else {
        if optional {
            return Ok(());
        }
        return Err(VolumeErrorReason::ConfigMapNotFound(name.to_string()));
    };
    add_items(
        payload,
        &config_map_entries(&cm),
        items,
        optional,
        mode,
        VolumeErrorReason::ConfigMapKeyMissing,
    )
}

fn add_secret(
    ctx: &PodContext<'_>,
    payload: &mut Payload,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<(), VolumeErrorReason> {
    let optional = optional == Some(true);
    let Some(secret) = ctx.objects.secret(namespace(ctx), name) else {
        if optional {
            return Ok(());
        }
        return Err(VolumeErrorReason::SecretNotFound(name.to_string()));
    };
    add_items(
        payload,
        &secret_entries(&secret),
        items,
        optional,
        mode,
        VolumeErrorReason::SecretKeyMissing,
    )
}

fn add_downward_api(
    ctx: &PodContext<'_>,
    payload: &mut Payload,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: u32,
) -> Result<(), VolumeErrorReason> {
    for item in items.unwrap_or_default() {
        let value = if let Some(field) = &item.field_ref {
            field_ref_value(ctx, field.api_version.as_deref(), &field.field_path)?
        } else if let Some(resource) = &item.resource_field_ref {
            let container_name = resource.container_name.as_deref().unwrap_or("");
            let container = find_container(ctx.pod, container_name)
                .ok_or_else(|| EnvError::ContainerNotFound(container_name.to_string()))?;
            resource_field_value(ctx, container, resource)?
        } else {
            continue;
        };
        payload.insert(
            normalize_path(&item.path)?,
            FileProjection {
                data: value.into_bytes(),
                mode: mode_of(item.mode, mode),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::{FakeObjects, test_pod, with_ctx};
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection, DownwardAPIVolumeSource,
        EmptyDirVolumeSource, HostPathVolumeSource, NFSVolumeSource, ObjectFieldSelector,
        ProjectedVolumeSource, ResourceFieldSelector, SecretVolumeSource,
        ServiceAccountTokenProjection,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn manager(mounter: Arc<RecordingMounter>) -> VolumeManager {
        VolumeManager::new(
            VolumeConfig {
                host_path_policy: HostPathPolicy::with_data_dir(Path::new("/var/lib/berth")),
                secrets_in_tmpfs: true,
                state_dir: PathBuf::from("/var/lib/berth"),
                csi_drivers: CsiDrivers::new(),
            },
            mounter,
        )
    }

    fn volume(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    fn pod_with(volumes: Vec<Volume>) -> k8s_openapi::api::core::v1::Pod {
        let mut pod = test_pod();
        pod.spec.as_mut().unwrap().volumes = Some(volumes);
        pod
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn empty_dirs_disk_and_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let mounter = Arc::new(RecordingMounter::default());
        let m = manager(mounter.clone());
        let pod = pod_with(vec![
            Volume {
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..volume("scratch")
            },
            Volume {
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity("64Mi".into())),
                }),
                ..volume("mem")
            },
        ]);
        let objects = FakeObjects::default();
        let got = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        let scratch = &got["scratch"];
        assert_eq!(scratch.kind, VolumeKind::EmptyDir);
        assert_eq!(
            scratch.host_path,
            tmp.path().join("volumes/kubernetes.io~empty-dir/scratch")
        );
        assert!(!scratch.read_only);
        let mode = std::fs::metadata(&scratch.host_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);
        let mem = &got["mem"];
        assert_eq!(
            mounter.ops(),
            vec![MountOp::Tmpfs {
                target: mem.host_path.clone(),
                size_bytes: Some(64 << 20),
                mode: 0o777
            }]
        );
        // Idempotent: a second setup mounts nothing new.
        with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        assert_eq!(mounter.ops().len(), 1);

        m.teardown(tmp.path()).unwrap();
        assert!(!tmp.path().join("volumes").exists());
        assert!(mounter.mounted().is_empty());
    }

    #[test]
    fn config_map_items_modes_and_updates() {
        let tmp = tempfile::tempdir().unwrap();
        let m = manager(Arc::new(RecordingMounter::default()));
        let pod = pod_with(vec![Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                default_mode: Some(0o600),
                items: Some(vec![
                    KeyToPath {
                        key: "a".into(),
                        path: "dir/a.conf".into(),
                        mode: Some(0o400),
                    },
                    KeyToPath {
                        key: "b".into(),
                        path: "b".into(),
                        mode: None,
                    },
                ]),
                optional: None,
            }),
            ..volume("config")
        }]);
        let objects =
            FakeObjects::default().with_config_map("ns", "cfg", &[("a", "1"), ("b", "2")]);
        let got = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        let dir = &got["config"].host_path;
        assert!(got["config"].read_only);
        assert_eq!(read(&dir.join("dir/a.conf")), "1");
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("dir/a.conf"), 0o400);
        assert_eq!(mode("b"), 0o600);

        let objects =
            FakeObjects::default().with_config_map("ns", "cfg", &[("a", "1"), ("b", "3")]);
        let report = with_ctx(&pod, &objects, |ctx| m.refresh(ctx, tmp.path()));
        assert_eq!(report.changed, vec!["config".to_string()]);
        assert_eq!(read(&dir.join("b")), "3");
        let report = with_ctx(&pod, &objects, |ctx| m.refresh(ctx, tmp.path()));
        assert!(report.changed.is_empty() && report.errors.is_empty());

        // A missing key is FailedMount, with kubelet's message.
        let objects = FakeObjects::default().with_config_map("ns", "cfg", &[("b", "3")]);
        let report = with_ctx(&pod, &objects, |ctx| m.refresh(ctx, tmp.path()));
        assert_eq!(
            report.errors[0].to_string(),
            "MountVolume.SetUp failed for volume \"config\" : configmap references non-existent config key: a"
        );
        assert_eq!(read(&dir.join("b")), "3", "old contents stay");
    }

    #[test]
    fn missing_objects_and_optional() {
        let tmp = tempfile::tempdir().unwrap();
        let m = manager(Arc::new(RecordingMounter::default()));
        let objects = FakeObjects::default();
        let pod = pod_with(vec![Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("creds".into()),
                ..Default::default()
            }),
            ..volume("creds")
        }]);
        let err = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"creds\" : secret \"creds\" not found"
        );
        assert!(
            !tmp.path().join("volumes").exists(),
            "nothing made on failure"
        );

        let pod = pod_with(vec![Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "absent".into(),
                optional: Some(true),
                ..Default::default()
            }),
            ..volume("opt")
        }]);
        let got = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        assert!(got["opt"].host_path.join("..data").exists());
    }

    #[test]
    fn secrets_get_a_tmpfs_and_a_private_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let mounter = Arc::new(RecordingMounter::default());
        let m = manager(mounter.clone());
        let objects =
            FakeObjects::default().with_secret("ns", "s", &[("token", b"\x00\xffsecret")]);
        let pod = pod_with(vec![Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("s".into()),
                ..Default::default()
            }),
            ..volume("s")
        }]);
        let got = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        let dir = &got["s"].host_path;
        assert_eq!(std::fs::read(dir.join("token")).unwrap(), b"\x00\xffsecret");
        assert!(mounter.mounted().contains(dir));
        let parent = std::fs::metadata(dir.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent & 0o777, 0o700);
        m.teardown(tmp.path()).unwrap();
        assert!(mounter.mounted().is_empty());
        assert!(!dir.exists());
    }

    #[test]
    fn downward_api_and_projected() {
        let tmp = tempfile::tempdir().unwrap();
        let m = manager(Arc::new(RecordingMounter::default()));
        let objects = FakeObjects::default().with_config_map("ns", "ca", &[("ca.crt", "PEM")]);
        let field = |path: &str| ObjectFieldSelector {
            api_version: None,
            field_path: path.into(),
        };
        let items = vec![
            DownwardAPIVolumeFile {
                path: "labels".into(),
                field_ref: Some(field("metadata.labels")),
                ..Default::default()
            },
            DownwardAPIVolumeFile {
                path: "name".into(),
                field_ref: Some(field("metadata.name")),
                ..Default::default()
            },
            DownwardAPIVolumeFile {
                path: "cpu".into(),
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some("app".into()),
                    resource: "limits.cpu".into(),
                    divisor: Some(Quantity("1m".into())),
                }),
                ..Default::default()
            },
        ];
        let pod = pod_with(vec![
            Volume {
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(items),
                    ..Default::default()
                }),
                ..volume("info")
            },
            Volume {
                projected: Some(ProjectedVolumeSource {
                    default_mode: Some(0o444),
                    sources: Some(vec![
                        VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                path: "token".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: "ca".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            downward_api: Some(DownwardAPIProjection {
                                items: Some(vec![DownwardAPIVolumeFile {
                                    path: "namespace".into(),
                                    field_ref: Some(field("metadata.namespace")),
                                    ..Default::default()
                                }]),
                            }),
                            ..Default::default()
                        },
                    ]),
                }),
                ..volume("kube-api-access")
            },
        ]);
        let got = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        let info = &got["info"].host_path;
        assert_eq!(
            read(&info.join("labels")),
            "app=\"web\"\ntier=\"a \\\"b\\\"\\n\""
        );
        assert_eq!(read(&info.join("name")), "web");
        assert_eq!(read(&info.join("cpu")), "2000");
        let api = &got["kube-api-access"].host_path;
        assert_eq!(read(&api.join("ca.crt")), "PEM");
        assert_eq!(read(&api.join("namespace")), "ns");
        assert!(!api.join("token").exists());
        let mode = std::fs::metadata(api.join("ca.crt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);

        // A label change reaches the file on refresh.
        let mut pod = pod;
        pod.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("app".into(), "api".into());
        let report = with_ctx(&pod, &objects, |ctx| m.refresh(ctx, tmp.path()));
        assert_eq!(report.changed, vec!["info".to_string()]);
        assert!(read(&info.join("labels")).starts_with("app=\"api\""));
    }

    #[test]
    fn item_paths_must_not_escape() {
        let tmp = tempfile::tempdir().unwrap();
        let m = manager(Arc::new(RecordingMounter::default()));
        let objects = FakeObjects::default().with_config_map("ns", "cfg", &[("a", "1")]);
        for bad in ["../../etc/x", "/etc/x", "..data/a"] {
            let pod = pod_with(vec![Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: "cfg".into(),
                    items: Some(vec![KeyToPath {
                        key: "a".into(),
                        path: bad.into(),
                        mode: None,
                    }]),
                    ..Default::default()
                }),
                ..volume("c")
            }]);
            let err = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap_err();
            assert!(
                matches!(err.reason, VolumeErrorReason::Write(_)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn host_paths_and_unsupported_kinds() {
        let tmp = tempfile::tempdir().unwrap();
        let m = manager(Arc::new(RecordingMounter::default()));
        let objects = FakeObjects::default();
        let host = |path: &str, type_: Option<&str>| Volume {
            host_path: Some(HostPathVolumeSource {
                path: path.into(),
                type_: type_.map(String::from),
            }),
            ..volume("h")
        };
        let ok = tmp.path().join("data");
        let pod = pod_with(vec![host(ok.to_str().unwrap(), Some("DirectoryOrCreate"))]);
        let got = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        assert_eq!(got["h"].host_path, std::fs::canonicalize(&ok).unwrap());
        assert!(!got["h"].read_only);

        for denied in ["/", "/etc", "/proc", "/var/lib/berth"] {
            let pod = pod_with(vec![host(denied, None)]);
            let err = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap_err();
            assert!(
                matches!(
                    err.reason,
                    VolumeErrorReason::HostPath(HostPathError::Denied { .. })
                ),
                "{denied}: {err}"
            );
        }

        let pod = pod_with(vec![Volume {
            nfs: Some(NFSVolumeSource {
                server: "nas".into(),
                path: "/x".into(),
                read_only: None,
            }),
            ..volume("p")
        }]);
        let err = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap_err();
        assert_eq!(err.reason.to_string(), "nfs volumes are not supported yet");
    }

    #[test]
    fn teardown_refuses_to_remove_through_a_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep").unwrap();
        let m = manager(Arc::new(RecordingMounter::default()));
        let pod = pod_with(vec![Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..volume("e")
        }]);
        let objects = FakeObjects::default();
        let got = with_ctx(&pod, &objects, |ctx| m.setup(ctx, tmp.path())).unwrap();
        // A container left a symlink to the host in its emptyDir: teardown removes the link only.
        std::os::unix::fs::symlink(outside.path(), got["e"].host_path.join("escape")).unwrap();
        m.teardown(tmp.path()).unwrap();
        assert_eq!(read(&outside.path().join("precious")), "keep");
        assert!(!tmp.path().join("volumes").exists());
    }
}
