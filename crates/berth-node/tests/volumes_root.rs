//! Volumes and subPaths with real mounts (reliability cases D7, G5's emptyDir limit). These
//! need root; without it they print a note and pass.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_node::env::{ObjectSource, PodContext};
use berth_node::subpath::{SubPathError, SubPathMount, cleanup_sub_paths, prepare_sub_path};
use berth_node::volumes::{HostMounter, HostPathPolicy, Mounter, VolumeConfig, VolumeManager};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, EmptyDirVolumeSource, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, Secret,
    SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root for mounts");
            return;
        }
    };
}

struct Objects;

impl ObjectSource for Objects {
    fn config_map(&self, _: &str, _: &str) -> Option<Arc<ConfigMap>> {
        None
    }
    fn persistent_volume_claim(&self, _: &str, _: &str) -> Option<Arc<PersistentVolumeClaim>> {
        None
    }
    fn persistent_volume(&self, _: &str) -> Option<Arc<PersistentVolume>> {
        None
    }
    fn secret(&self, _: &str, name: &str) -> Option<Arc<Secret>> {
        (name == "creds").then(|| {
            Arc::new(Secret {
                data: Some(BTreeMap::from([(
                    "password".to_string(),
                    ByteString(b"hunter2".to_vec()),
                )])),
                ..Default::default()
            })
        })
    }
}

fn pod(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("u".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

fn setup(
    manager: &VolumeManager,
    pod: &Pod,
    pod_dir: &Path,
) -> BTreeMap<String, berth_node::volumes::PreparedVolume> {
    let allocatable = BTreeMap::new();
    let ctx = PodContext {
        pod,
        pod_ips: &[],
        host_ips: &[],
        node_allocatable: &allocatable,
        objects: &Objects,
        service_env: &[],
    };
    manager.setup(&ctx, pod_dir).expect("setup")
}

fn manager() -> VolumeManager {
    VolumeManager::new(
        VolumeConfig {
            host_path_policy: HostPathPolicy::with_data_dir(Path::new("/var/lib/berth")),
            secrets_in_tmpfs: true,
            state_dir: "/var/lib/berth".into(),
            csi_drivers: Default::default(),
        },
        Arc::new(HostMounter),
    )
}

fn empty_dir(name: &str, medium: Option<&str>, size: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(String::from),
            size_limit: size.map(|s| Quantity(s.into())),
        }),
        ..Default::default()
    }
}

/// CVE-2017-1002101: an init container leaves `door -> /` in a shared volume and the next
/// container mounts `subPath: door`. The host's `/` must never be bound.
#[test]
fn subpath_symlink_escape_is_refused() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let m = manager();
    let vols = setup(&m, &pod(vec![empty_dir("vol", None, None)]), &pod_dir);
    let vol = &vols["vol"].host_path;
    std::os::unix::fs::symlink("/", vol.join("door")).unwrap();
    std::fs::create_dir(vol.join("inner")).unwrap();
    std::os::unix::fs::symlink("../inner/../../../..", vol.join("inner/climb")).unwrap();

    let mounter = HostMounter;
    let req = |sub_path, mount_index| SubPathMount {
        volume_name: "vol",
        volume_path: vol,
        container_name: "main",
        mount_index,
        sub_path,
    };
    for (i, bad) in ["door", "door/etc", "inner/climb", "inner/climb/etc"]
        .iter()
        .enumerate()
    {
        let err = prepare_sub_path(&mounter, &pod_dir, &req(bad, i)).unwrap_err();
        assert!(matches!(err, SubPathError::Escape { .. }), "{bad}: {err}");
        assert_eq!(
            err.to_string(),
            format!("subPath \"{bad}\" in volume \"vol\" resolves outside the volume")
        );
    }
    assert!(!Path::new("/etc/etc").exists());

    // A normal subPath is created and really bound.
    let target = prepare_sub_path(&mounter, &pod_dir, &req("data/logs", 7)).unwrap();
    assert_eq!(target, pod_dir.join("volume-subpaths/vol/main/7"));
    assert!(mounter.is_mount_point(&target).unwrap());
    std::fs::write(target.join("written"), "through the bind").unwrap();
    assert_eq!(
        std::fs::read_to_string(vol.join("data/logs/written")).unwrap(),
        "through the bind"
    );

    // Swapping the checked path for a symlink afterwards changes nothing: the bind holds the
    // directory that was checked.
    std::fs::rename(vol.join("data/logs"), vol.join("data/old")).unwrap();
    std::os::unix::fs::symlink("/", vol.join("data/logs")).unwrap();
    assert!(target.join("written").exists());
    assert!(!target.join("etc").exists());

    // A file subPath binds the file.
    std::fs::write(vol.join("app.conf"), "conf").unwrap();
    let file_target = prepare_sub_path(&mounter, &pod_dir, &req("app.conf", 8)).unwrap();
    assert_eq!(std::fs::read_to_string(&file_target).unwrap(), "conf");

    cleanup_sub_paths(&mounter, &pod_dir, Some("main")).unwrap();
    assert!(!target.exists());
    m.teardown(&pod_dir).unwrap();
    assert!(!pod_dir.join("volumes").exists());
    assert!(Path::new("/etc").is_dir());
}

/// Memory emptyDirs and secrets are tmpfs mounts with the size limit; teardown unmounts.
#[test]
fn tmpfs_volumes_mount_and_unmount() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let m = manager();
    let secret = Volume {
        name: "creds".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = pod(vec![empty_dir("mem", Some("Memory"), Some("1Mi")), secret]);
    let vols = setup(&m, &p, &pod_dir);
    let mem = &vols["mem"].host_path;
    assert!(HostMounter.is_mount_point(mem).unwrap());
    let st = rustix::fs::statvfs(mem).unwrap();
    assert_eq!(st.f_blocks * st.f_frsize, 1 << 20);
    // Writing past the limit fails instead of filling the host's memory (G5).
    let big = vec![0u8; 2 << 20];
    assert!(std::fs::write(mem.join("big"), &big).is_err());

    let creds = &vols["creds"].host_path;
    assert!(HostMounter.is_mount_point(creds).unwrap());
    assert_eq!(
        std::fs::read_to_string(creds.join("password")).unwrap(),
        "hunter2"
    );

    // Setting up again (agent restart) mounts nothing twice: one unmount clears it.
    setup(&m, &p, &pod_dir);
    assert!(HostMounter.unmount(mem).unwrap());
    assert!(!HostMounter.is_mount_point(mem).unwrap());
    assert!(!HostMounter.unmount(mem).unwrap());
    setup(&m, &p, &pod_dir);
    assert!(HostMounter.is_mount_point(mem).unwrap());

    m.teardown(&pod_dir).unwrap();
    assert!(!pod_dir.join("volumes").exists());
}

/// A mount nobody knows about inside a volume (leaked by a crash) stops teardown instead of
/// letting it delete the mounted data.
#[test]
fn teardown_never_deletes_through_a_mount() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let precious = tmp.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("data"), "keep").unwrap();
    let m = manager();
    let vols = setup(&m, &pod(vec![empty_dir("vol", None, None)]), &pod_dir);
    let inside = vols["vol"].host_path.join("mnt");
    std::fs::create_dir(&inside).unwrap();
    HostMounter.bind(&precious, &inside).unwrap();

    let err = m.teardown(&pod_dir).unwrap_err();
    assert!(err.to_string().contains("mount point"), "{err}");
    assert_eq!(
        std::fs::read_to_string(precious.join("data")).unwrap(),
        "keep"
    );

    HostMounter.unmount(&inside).unwrap();
    m.teardown(&pod_dir).unwrap();
    assert_eq!(
        std::fs::read_to_string(precious.join("data")).unwrap(),
        "keep"
    );
}

/// Claims and volumes for the PVC tests: claim `c` in `default` Bound to `pv` with `spec`.
struct Claims {
    spec: k8s_openapi::api::core::v1::PersistentVolumeSpec,
}

impl ObjectSource for Claims {
    fn config_map(&self, _: &str, _: &str) -> Option<Arc<ConfigMap>> {
        None
    }
    fn secret(&self, _: &str, _: &str) -> Option<Arc<Secret>> {
        None
    }
    fn persistent_volume_claim(&self, _: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, PersistentVolumeClaimStatus};
        (name == "c").then(|| {
            Arc::new(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("c".into()),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    volume_name: Some("pv".into()),
                    ..Default::default()
                }),
                status: Some(PersistentVolumeClaimStatus {
                    phase: Some("Bound".into()),
                    ..Default::default()
                }),
            })
        })
    }
    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        (name == "pv").then(|| {
            Arc::new(PersistentVolume {
                metadata: ObjectMeta {
                    name: Some("pv".into()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::core::v1::PersistentVolumeSpec {
                    claim_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                        namespace: Some("default".into()),
                        name: Some("c".into()),
                        ..Default::default()
                    }),
                    ..self.spec.clone()
                }),
                status: None,
            })
        })
    }
}

/// Stages with a real tmpfs on the staging dir, as the ext4 driver stages a loop mount.
struct TmpfsDriver;

impl berth_node::volumes::CsiDriver for TmpfsDriver {
    fn stage(&self, _: &str, staging_dir: &Path) -> Result<(), String> {
        HostMounter
            .mount_tmpfs(staging_dir, Some(1 << 20), 0o755)
            .map_err(|e| e.to_string())
    }
    fn unstage(&self, _: &str, staging_dir: &Path) -> Result<(), String> {
        HostMounter
            .unmount(staging_dir)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn mounts_under(dir: &Path) -> usize {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .count()
}

fn claim_pod(uid: &str) -> Pod {
    let mut p = pod(vec![Volume {
        name: "data".into(),
        persistent_volume_claim: Some(
            k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                claim_name: "c".into(),
                read_only: None,
            },
        ),
        ..Default::default()
    }]);
    p.metadata.uid = Some(uid.into());
    p
}

fn claim_setup(manager: &VolumeManager, objects: &Claims, pod_dir: &Path) -> std::path::PathBuf {
    let allocatable = BTreeMap::new();
    let pod = claim_pod("u");
    let ctx = PodContext {
        pod: &pod,
        pod_ips: &[],
        host_ips: &[],
        node_allocatable: &allocatable,
        objects,
        service_env: &[],
    };
    manager.setup(&ctx, pod_dir).expect("setup")["data"]
        .host_path
        .clone()
}

/// Two pods share one CSI volume staged once; data written through one is seen through the
/// other and in the staging dir; after both teardowns nothing is mounted under the state dir.
#[test]
fn csi_volumes_stage_once_bind_into_pods_and_leave_no_mounts() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let manager = VolumeManager::new(
        VolumeConfig {
            host_path_policy: HostPathPolicy::with_data_dir(&state),
            secrets_in_tmpfs: true,
            state_dir: state.clone(),
            csi_drivers: BTreeMap::from([(
                "berth.dev/test".to_string(),
                Arc::new(TmpfsDriver) as Arc<dyn berth_node::volumes::CsiDriver>,
            )]),
        },
        Arc::new(HostMounter),
    );
    let objects = Claims {
        spec: k8s_openapi::api::core::v1::PersistentVolumeSpec {
            csi: Some(k8s_openapi::api::core::v1::CSIPersistentVolumeSource {
                driver: "berth.dev/test".into(),
                volume_handle: "pvc-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let (a, b) = (state.join("pods/a"), state.join("pods/b"));
    let in_a = claim_setup(&manager, &objects, &a);
    let in_b = claim_setup(&manager, &objects, &b);
    // Set up again (an adopting agent): no second mount anywhere.
    claim_setup(&manager, &objects, &a);
    assert_eq!(mounts_under(&state), 3, "staging + one bind per pod");
    std::fs::write(in_a.join("f"), "shared").unwrap();
    assert_eq!(std::fs::read_to_string(in_b.join("f")).unwrap(), "shared");
    let staging = state.join("csi/berth.dev~test/pvc-1/globalmount");
    assert!(staging.join("f").exists());

    manager.teardown(&a).unwrap();
    assert_eq!(mounts_under(&state), 2, "b still uses the staged volume");
    manager.teardown(&b).unwrap();
    assert_eq!(mounts_under(&state), 0);
    assert!(!staging.exists());
}

/// A local PV's directory is bind-mounted for real; a symlink to /etc is refused; teardown
/// unmounts and keeps the data.
#[test]
fn local_volumes_bind_the_checked_directory() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let manager = VolumeManager::new(
        VolumeConfig {
            host_path_policy: HostPathPolicy::with_data_dir(&state),
            secrets_in_tmpfs: true,
            state_dir: state.clone(),
            csi_drivers: BTreeMap::new(),
        },
        Arc::new(HostMounter),
    );
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let local = |path: &Path| Claims {
        spec: k8s_openapi::api::core::v1::PersistentVolumeSpec {
            local: Some(k8s_openapi::api::core::v1::LocalVolumeSource {
                path: path.display().to_string(),
                fs_type: None,
            }),
            ..Default::default()
        },
    };
    let pod_dir = state.join("pods/u");
    let target = claim_setup(&manager, &local(&disk), &pod_dir);
    claim_setup(&manager, &local(&disk), &pod_dir);
    assert_eq!(mounts_under(&pod_dir), 1);
    std::fs::write(target.join("f"), "x").unwrap();
    assert_eq!(std::fs::read_to_string(disk.join("f")).unwrap(), "x");
    manager.teardown(&pod_dir).unwrap();
    assert_eq!(mounts_under(&pod_dir), 0);
    assert_eq!(std::fs::read_to_string(disk.join("f")).unwrap(), "x");

    let link = tmp.path().join("sneaky");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let allocatable = BTreeMap::new();
    let pod = claim_pod("u");
    let objects = local(&link);
    let ctx = PodContext {
        pod: &pod,
        pod_ips: &[],
        host_ips: &[],
        node_allocatable: &allocatable,
        objects: &objects,
        service_env: &[],
    };
    let err = manager.setup(&ctx, &pod_dir).unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    assert_eq!(mounts_under(&pod_dir), 0);
}
