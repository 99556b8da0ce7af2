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
    ConfigMap, EmptyDirVolumeSource, Pod, PodSpec, Secret, SecretVolumeSource, Volume,
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
