//! The OCI runtime spec for a container: a pure function of [`ContainerConfig`] and the cgroup
//! path, so that what a container gets (namespaces, mounts, capabilities, limits) is checked by
//! unit tests without root.
//!
//! The defaults follow runc's `spec` and Docker/containerd: the standard /proc, /dev, /dev/pts,
//! /dev/shm, /dev/mqueue and read-only /sys mounts, runc's masked and read-only paths, Docker's
//! default capability set, `RLIMIT_NOFILE` 1048576 and a deny-all device cgroup (libcgroups then
//! allows the standard devices). The cgroup file system is not mounted: libcontainer's v1
//! emulation of that mount adds risk for no current user. `hugepageLimits` is never set, because
//! the v1 manager fails on controllers that are not mounted and hugetlb is not mounted here.

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::OciSpecError;
use libcontainer::oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount as OciMount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths,
};

use crate::Error;
use crate::config::{ContainerConfig, MountKind};

/// The `PATH` a container gets when its environment has none (Docker's and containerd's).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Soft and hard `RLIMIT_NOFILE`, as containerd sets it.
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// Docker's default capabilities (moby `oci/caps/defaults.go`, containerd's CRI default).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

fn spec_err(err: OciSpecError) -> Error {
    Error::Runtime(format!("building the OCI spec: {err}"))
}

/// Builds the OCI spec for `config`, with the container in the (absolute) `cgroups_path`.
pub fn oci_spec(config: &ContainerConfig, cgroups_path: &Path) -> Result<Spec, Error> {
    config.validate()?;
    if !cgroups_path.is_absolute() {
        // An empty or relative path would make libcontainer place the container at the
        // hierarchy root (`:youki:<id>`), outside berth's own cgroup.
        return Err(Error::InvalidConfig(format!(
            "cgroups path {} is not absolute",
            cgroups_path.display()
        )));
    }

    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let caps: std::collections::HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(spec_err)?;
    let mut user = UserBuilder::default().uid(config.uid).gid(config.gid);
    if !config.additional_gids.is_empty() {
        user = user.additional_gids(config.additional_gids.clone());
    }
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .args(config.args.clone())
        .env(env)
        .cwd(if config.cwd.is_empty() {
            "/"
        } else {
            config.cwd.as_str()
        })
        .user(user.build().map_err(spec_err)?)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(NOFILE_LIMIT)
                .hard(NOFILE_LIMIT)
                .build()
                .map_err(spec_err)?,
        ])
        .no_new_privileges(false);
    if let Some(adj) = config.oom_score_adj {
        process = process.oom_score_adj(adj);
    }

    let root = RootBuilder::default()
        .path(config.rootfs.clone())
        .readonly(config.readonly_rootfs)
        .build()
        .map_err(spec_err)?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces(config)?)
        .cgroups_path(cgroups_path.to_path_buf())
        .resources(resources(config)?)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()
        .map_err(spec_err)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .hostname(config.hostname.clone())
        .process(process.build().map_err(spec_err)?)
        .mounts(mounts(config)?)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

fn namespace(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> Result<LinuxNamespace, Error> {
    let mut ns = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(path) = path {
        ns = ns.path(path.clone());
    }
    ns.build().map_err(spec_err)
}

/// New PID, mount and UTS namespaces; the pod's IPC namespace (or a new one); the pod's network
/// namespace, or none at all, which keeps the host's.
fn namespaces(config: &ContainerConfig) -> Result<Vec<LinuxNamespace>, Error> {
    let mut out = vec![
        namespace(LinuxNamespaceType::Pid, None)?,
        namespace(LinuxNamespaceType::Mount, None)?,
        namespace(LinuxNamespaceType::Uts, None)?,
        namespace(LinuxNamespaceType::Ipc, config.ipc_namespace.as_ref())?,
    ];
    if let Some(net) = &config.net_namespace {
        out.push(namespace(LinuxNamespaceType::Network, Some(net))?);
    }
    Ok(out)
}

/// The standard mounts (minus the cgroup file system), each replaced by a configured mount of the
/// same destination, then the configured mounts in order.
fn mounts(config: &ContainerConfig) -> Result<Vec<OciMount>, Error> {
    let mut out: Vec<OciMount> = get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .filter(|m| {
            !config
                .mounts
                .iter()
                .any(|c| &c.destination == m.destination())
        })
        .collect();
    for mount in &config.mounts {
        let built = match &mount.kind {
            MountKind::Bind { source, readonly } => MountBuilder::default()
                .destination(mount.destination.clone())
                .typ("bind")
                .source(source.clone())
                .options(vec![
                    "rbind".to_string(),
                    "rprivate".to_string(),
                    if *readonly { "ro" } else { "rw" }.to_string(),
                ]),
            MountKind::Tmpfs { size_bytes, mode } => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                if let Some(size) = size_bytes {
                    options.push(format!("size={size}"));
                }
                options.push(format!("mode={:o}", mode.unwrap_or(0o1777)));
                MountBuilder::default()
                    .destination(mount.destination.clone())
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
            }
        };
        out.push(built.build().map_err(spec_err)?);
    }
    Ok(out)
}

fn resources(
    config: &ContainerConfig,
) -> Result<libcontainer::oci_spec::runtime::LinuxResources, Error> {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(spec_err)?;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![deny_all]);
    if let Some(limit) = config.memory_limit_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(spec_err)?,
        );
    }
    if config.cpu_shares.is_some() || config.cpu_quota_us.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(shares) = config.cpu_shares {
            cpu = cpu.shares(shares);
        }
        if let Some(quota) = config.cpu_quota_us {
            cpu = cpu.quota(quota);
            cpu = cpu.period(config.cpu_period_us.unwrap_or(100_000));
        }
        resources = resources.cpu(cpu.build().map_err(spec_err)?);
    }
    if let Some(limit) = config.pids_limit {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(spec_err)?,
        );
    }
    resources.build().map_err(spec_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mount;

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "pod1-app-0".into(),
            pod_uid: "pod1".into(),
            rootfs: "/var/lib/berth/rootfs/x".into(),
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["A=1".into()],
            hostname: "web-0".into(),
            log_path: "/var/log/pods/x/0.log".into(),
            ..Default::default()
        }
    }

    fn cg() -> PathBuf {
        PathBuf::from("/m/berth/pods/pod1/pod1-app-0")
    }

    fn ns_types(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    #[test]
    fn process_and_root() {
        let mut c = config();
        c.uid = 1000;
        c.gid = 2000;
        c.additional_gids = vec![3000];
        c.readonly_rootfs = true;
        c.cwd = "/work".into();
        let spec = oci_spec(&c, &cg()).expect("spec");
        let process = spec.process().as_ref().expect("process");
        assert_eq!(process.args().as_deref(), Some(&c.args[..]));
        let env = process.env().clone().unwrap_or_default();
        assert_eq!(env, vec![DEFAULT_PATH.to_string(), "A=1".to_string()]);
        assert_eq!(process.cwd(), Path::new("/work"));
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().gid(), 2000);
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[3000][..])
        );
        assert_eq!(process.no_new_privileges(), Some(false));
        assert_eq!(process.terminal(), Some(false));
        let rlimits = process.rlimits().clone().unwrap_or_default();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!(
            (rlimits[0].soft(), rlimits[0].hard()),
            (NOFILE_LIMIT, NOFILE_LIMIT)
        );
        let caps = process.capabilities().as_ref().expect("caps");
        let bounding = caps.bounding().clone().unwrap_or_default();
        assert_eq!(bounding.len(), 14);
        assert!(bounding.contains(&Capability::NetBindService));
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.permitted(), caps.bounding());
        assert!(caps.ambient().clone().unwrap_or_default().is_empty());
        let root = spec.root().as_ref().expect("root");
        assert_eq!(root.path(), &c.rootfs);
        assert_eq!(root.readonly(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    }

    #[test]
    fn path_from_config_is_kept() {
        let mut c = config();
        c.env = vec!["PATH=/opt/bin".into()];
        let spec = oci_spec(&c, &cg()).expect("spec");
        let env = spec.process().as_ref().and_then(|p| p.env().clone());
        assert_eq!(env, Some(vec!["PATH=/opt/bin".to_string()]));
    }

    #[test]
    fn namespaces_default_to_host_network() {
        let spec = oci_spec(&config(), &cg()).expect("spec");
        assert_eq!(
            ns_types(&spec),
            vec![
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Uts, None),
                (LinuxNamespaceType::Ipc, None),
            ]
        );
    }

    #[test]
    fn namespaces_join_pod_ipc_and_network() {
        let mut c = config();
        c.ipc_namespace = Some("/run/berth/pods/p/ipc".into());
        c.net_namespace = Some("/run/berth/pods/p/net".into());
        let spec = oci_spec(&c, &cg()).expect("spec");
        let ns = ns_types(&spec);
        assert!(ns.contains(&(
            LinuxNamespaceType::Ipc,
            Some("/run/berth/pods/p/ipc".into())
        )));
        assert!(ns.contains(&(
            LinuxNamespaceType::Network,
            Some("/run/berth/pods/p/net".into())
        )));
        assert!(!ns.iter().any(|(t, _)| *t == LinuxNamespaceType::Cgroup));
    }

    #[test]
    fn mounts_standard_then_configured() {
        let mut c = config();
        c.mounts = vec![
            Mount {
                destination: "/etc/hosts".into(),
                kind: MountKind::Bind {
                    source: "/var/lib/berth/pods/p/hosts".into(),
                    readonly: true,
                },
            },
            Mount {
                destination: "/dev/shm".into(),
                kind: MountKind::Tmpfs {
                    size_bytes: Some(1 << 20),
                    mode: None,
                },
            },
        ];
        let spec = oci_spec(&c, &cg()).expect("spec");
        let mounts = spec.mounts().clone().unwrap_or_default();
        let dests: Vec<_> = mounts.iter().map(|m| m.destination().clone()).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/etc/hosts",
                "/dev/shm"
            ]
            .map(PathBuf::from)
        );
        let hosts = &mounts[5];
        assert_eq!(hosts.typ().as_deref(), Some("bind"));
        assert_eq!(
            hosts.options().clone().unwrap_or_default(),
            ["rbind", "rprivate", "ro"].map(String::from)
        );
        let shm = &mounts[6];
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            shm.options().clone().unwrap_or_default(),
            ["nosuid", "nodev", "size=1048576", "mode=1777"].map(String::from)
        );
        let sys = &mounts[4];
        assert!(
            sys.options()
                .clone()
                .unwrap_or_default()
                .contains(&"ro".to_string())
        );
        let linux = spec.linux().as_ref().expect("linux");
        assert!(
            linux
                .masked_paths()
                .clone()
                .unwrap_or_default()
                .contains(&"/proc/kcore".into())
        );
        assert!(
            linux
                .readonly_paths()
                .clone()
                .unwrap_or_default()
                .contains(&"/proc/sys".into())
        );
    }

    #[test]
    fn resources_and_cgroup_path() {
        let mut c = config();
        c.memory_limit_bytes = Some(32 << 20);
        c.cpu_shares = Some(512);
        c.cpu_quota_us = Some(50_000);
        c.pids_limit = Some(100);
        let spec = oci_spec(&c, &cg()).expect("spec");
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(linux.cgroups_path().as_deref(), Some(cg().as_path()));
        let res = linux.resources().as_ref().expect("resources");
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(32 << 20)
        );
        let cpu = res.cpu().as_ref().expect("cpu");
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(512), Some(50_000), Some(100_000))
        );
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(100));
        assert!(res.hugepage_limits().is_none());
        let devices = res.devices().clone().unwrap_or_default();
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].allow());
    }

    #[test]
    fn no_limits_no_resource_sections() {
        let spec = oci_spec(&config(), &cg()).expect("spec");
        let res = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .expect("res");
        assert!(res.memory().is_none() && res.cpu().is_none() && res.pids().is_none());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(oci_spec(&config(), Path::new("relative/cg")).is_err());
        let mut c = config();
        c.args.clear();
        assert!(oci_spec(&c, &cg()).is_err());
        let mut c = config();
        c.id = "Bad/Id".into();
        assert!(oci_spec(&c, &cg()).is_err());
        let mut c = config();
        c.cwd = "rel".into();
        assert!(oci_spec(&c, &cg()).is_err());
    }

    #[test]
    fn tty_sets_terminal() {
        let mut c = config();
        c.tty = true;
        let spec = oci_spec(&c, &cg()).expect("spec");
        assert_eq!(
            spec.process().as_ref().and_then(|p| p.terminal()),
            Some(true)
        );
    }
}
