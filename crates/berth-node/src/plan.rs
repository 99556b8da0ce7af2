//! Everything about one container attempt that comes from the pod spec rather than from the
//! image or the runtime: its environment and process ([`crate::env`], [`crate::command`]),
//! the user it runs as, its cgroup limits, and its volume mounts. Errors are kubelet's
//! `CreateContainerConfigError` messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_client::quantity;
use berth_runtime::{Mount, MountKind};
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::Context;
use crate::command::{self, ImageConfig};
use crate::env;
use crate::subpath;
use crate::volumes::PreparedVolume;

/// What [`resolve`] decides.
#[derive(Debug)]
pub struct Resolved {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub mounts: Vec<Mount>,
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
}

/// Where a container of a pod is being set up: the pod's directory and address, the
/// container's root.
pub struct Placement<'a> {
    pub pod_dir: &'a Path,
    pub pod_ip: &'a str,
    pub rootfs: &'a Path,
}

pub fn resolve(
    ctx: &Context,
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    volumes: &BTreeMap<String, PreparedVolume>,
    placement: &Placement<'_>,
) -> Result<Resolved, String> {
    let Placement {
        pod_dir,
        pod_ip,
        rootfs,
    } = *placement;
    let ips = [pod_ip.to_string()];
    let pod_ctx = ctx.pod_context(pod, &ips);
    let env = env::resolve_env(&pod_ctx, container).map_err(|e| e.to_string())?;
    let process = command::build_process(container, image, &env).map_err(|e| e.to_string())?;
    let image_user = process
        .image_user
        .as_deref()
        .map(|u| crate::users::resolve(rootfs, u))
        .transpose()
        .map_err(|e| e.to_string())?;
    let (uid, gid, additional_gids) = user(pod, container, image_user);
    let mounts = volume_mounts(ctx, container, &env, volumes, pod_dir)?;
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let memory_limit = limits
        .and_then(|l| l.get("memory"))
        .and_then(|q| quantity::value(&q.0))
        .filter(|v| *v > 0);
    let cpu_limit = limits
        .and_then(|l| l.get("cpu"))
        .and_then(|q| quantity::milli_value(&q.0));
    // A request defaults to the limit (the API server's defaulting does the same).
    let cpu_request = requests
        .and_then(|r| r.get("cpu"))
        .and_then(|q| quantity::milli_value(&q.0))
        .or(cpu_limit);
    Ok(Resolved {
        argv: process.argv,
        env: process.env,
        cwd: process.cwd,
        uid,
        gid,
        additional_gids,
        mounts,
        memory_limit,
        // kubelet's MilliCPUToShares and MilliCPUToQuota (100 ms period, 1 ms minimum).
        cpu_shares: cpu_request.map(|m| ((m * 1024) / 1000).max(2) as u64),
        cpu_quota: cpu_limit.filter(|m| *m > 0).map(|m| (m * 100).max(1000)),
    })
}

/// The container's volumeMounts as runtime mounts (subPaths resolved safely).
fn volume_mounts(
    ctx: &Context,
    container: &Container,
    env: &env::ResolvedEnv,
    volumes: &BTreeMap<String, PreparedVolume>,
    pod_dir: &Path,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let volume = volumes
            .get(&mount.name)
            .ok_or_else(|| format!("volume {:?} is not set up", mount.name))?;
        let source = match subpath::sub_path_for(mount, env).map_err(|e| e.to_string())? {
            Some(sub_path) => subpath::prepare_sub_path(
                ctx.volumes.mounter().as_ref(),
                pod_dir,
                &subpath::SubPathMount {
                    volume_name: &mount.name,
                    volume_path: &volume.host_path,
                    container_name: &container.name,
                    mount_index: index,
                    sub_path: &sub_path,
                },
            )
            .map_err(|e| e.to_string())?,
            None => volume.host_path.clone(),
        };
        mounts.push(Mount {
            destination: PathBuf::from(&mount.mount_path),
            kind: MountKind::Bind {
                source,
                readonly: volume.read_only || mount.read_only.unwrap_or(false),
            },
        });
    }
    Ok(mounts)
}

/// uid, gid and supplementary groups: the container's securityContext, else the pod's, else
/// the image's `User` (resolved to ids by [`crate::users`]), else root.
fn user(
    pod: &Pod,
    container: &Container,
    image_user: Option<(u32, Option<u32>)>,
) -> (u32, u32, Vec<u32>) {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let (image_uid, image_gid) = match image_user {
        Some((uid, gid)) => (Some(uid), gid),
        None => (None, None),
    };
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user))
        .and_then(|u| u32::try_from(u).ok())
        .or(image_uid)
        .unwrap_or(0);
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group))
        .and_then(|g| u32::try_from(g).ok())
        .or(image_gid)
        .unwrap_or(0);
    let mut groups: Vec<u32> = pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    if let Some(fs_group) = pod_sc
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
    {
        groups.push(fs_group);
    }
    groups.sort_unstable();
    groups.dedup();
    (uid, gid, groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};

    #[test]
    fn user_comes_from_container_then_pod_then_image() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(1000),
                    fs_group: Some(2000),
                    supplemental_groups: Some(vec![3000]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut c = Container::default();
        assert_eq!(
            user(&pod, &c, Some((5, Some(6)))),
            (1000, 6, vec![2000, 3000])
        );
        c.security_context = Some(SecurityContext {
            run_as_user: Some(7),
            run_as_group: Some(8),
            ..Default::default()
        });
        assert_eq!(user(&pod, &c, None).0, 7);
        assert_eq!(user(&pod, &c, None).1, 8);
        pod.spec = None;
        assert_eq!(
            user(&pod, &Container::default(), Some((1, None))),
            (1, 0, vec![])
        );
        assert_eq!(user(&pod, &Container::default(), None), (0, 0, vec![]));
    }
}
