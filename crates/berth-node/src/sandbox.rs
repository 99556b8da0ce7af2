//! A pod's place on this machine: its directory and the files every container of the pod shares
//! (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`), named after kubelet's.
//!
//! Layout under `<data>/pods/<pod-uid>/` (the uid, never the name, so a pod recreated under
//! the same name never meets its predecessor's files):
//!
//! ```text
//! etc-hosts  etc-hostname  resolv.conf
//! ns/ipc                          the pod's pinned IPC namespace
//! volumes/…                       see crate::volumes
//! containers/<name>/<attempt>/    rootfs (overlay upper, work, merged), termination-log
//! logs/<name>/<attempt>.log       CRI-format logs, rotated to <attempt>.log.1
//! ```

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::Error;

/// The paths of one pod's directory.
#[derive(Clone, Debug)]
pub struct PodDir {
    root: PathBuf,
}

impl PodDir {
    pub fn new(pods_root: &Path, uid: &str) -> PodDir {
        PodDir {
            root: pods_root.join(uid),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn hosts(&self) -> PathBuf {
        self.root.join("etc-hosts")
    }
    pub fn hostname(&self) -> PathBuf {
        self.root.join("etc-hostname")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
    pub fn namespaces(&self) -> PathBuf {
        self.root.join("ns")
    }
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn container(&self, name: &str, attempt: u32) -> PathBuf {
        self.root
            .join("containers")
            .join(name)
            .join(attempt.to_string())
    }
    pub fn log(&self, name: &str, attempt: u32) -> PathBuf {
        self.root
            .join("logs")
            .join(name)
            .join(format!("{attempt}.log"))
    }
}

/// The runtime id of attempt `attempt` of container `name` of pod `uid`: the one name that
/// ties a running container back to its pod after the agent restarts.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("{uid}-{name}-{attempt}")
}

/// The parts of a [`container_id`]: pod uid, container name, attempt. Pod uids are UUIDs
/// (36 characters) and the attempt is the last dash-separated field, so names with dashes
/// parse.
pub fn parse_container_id(id: &str) -> Option<(&str, &str, u32)> {
    let uid = id.get(..36)?;
    let rest = id.get(36..)?.strip_prefix('-')?;
    let (name, attempt) = rest.rsplit_once('-')?;
    Some((uid, name, attempt.parse().ok()?))
}

/// The pod's hostname and, with a subdomain, its fully qualified name — what kubelet puts in
/// `/etc/hostname` and `/etc/hosts`.
pub fn hostname(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    // A DNS label holds 63 characters; kubelet truncates longer pod names the same way.
    let mut hostname: String = name.chars().take(63).collect();
    while hostname.ends_with(['-', '.']) {
        hostname.pop();
    }
    let fqdn = spec
        .and_then(|s| s.subdomain.clone())
        .filter(|s| !s.is_empty())
        .map(|subdomain| {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}")
        });
    (hostname, fqdn)
}

/// `/etc/hosts` as kubelet writes it for a pod with its own network namespace.
pub fn hosts_file(pod: &Pod, pod_ip: &str, cluster_domain: &str) -> String {
    let (hostname, fqdn) = hostname(pod, cluster_domain);
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    match fqdn {
        Some(fqdn) => out.push_str(&format!("{pod_ip}\t{fqdn}\t{hostname}\n")),
        None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten();
    let mut wrote_header = false;
    for alias in aliases {
        let names = alias.hostnames.clone().unwrap_or_default();
        if names.is_empty() {
            continue;
        }
        if !wrote_header {
            out.push_str("\n# Entries added by HostAliases.\n");
            wrote_header = true;
        }
        out.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
    }
    out
}

/// Writes the pod's shared files (idempotent: rewriting gives the same content).
pub fn write_files(
    dir: &PodDir,
    pod: &Pod,
    pod_ip: &str,
    cluster_domain: &str,
    cluster_dns: Option<std::net::IpAddr>,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir.root()).map_err(Error::io("creating", dir.root()))?;
    let (hostname, _) = hostname(pod, cluster_domain);
    write_atomically(
        &dir.hosts(),
        hosts_file(pod, pod_ip, cluster_domain).as_bytes(),
    )?;
    write_atomically(&dir.hostname(), format!("{hostname}\n").as_bytes())?;
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = crate::resolv::for_pod(pod, cluster_dns, cluster_domain, &host);
    write_atomically(&dir.resolv_conf(), resolv.as_bytes())?;
    Ok(())
}

/// Replaces `path` with `bytes` so a reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("renaming", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, hostname: Option<&str>, subdomain: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("db".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                hostname: hostname.map(Into::into),
                subdomain: subdomain.map(Into::into),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn container_ids_round_trip() {
        let uid = "0da70f19-5547-4b2e-9a61-574552ae1a7f";
        let id = container_id(uid, "side-car-2", 7);
        assert_eq!(parse_container_id(&id), Some((uid, "side-car-2", 7)));
        assert_eq!(parse_container_id("short-main-0"), None);
        assert_eq!(parse_container_id(&format!("{uid}-main-x")), None);
    }

    #[test]
    fn hostname_is_the_pod_name_or_spec_hostname_with_subdomain() {
        assert_eq!(
            hostname(&pod("web-0", None, None), "cluster.local"),
            ("web-0".into(), None)
        );
        assert_eq!(
            hostname(&pod("x", Some("pg-0"), Some("pg")), "cluster.local"),
            (
                "pg-0".into(),
                Some("pg-0.pg.db.svc.cluster.local".to_string())
            )
        );
        let long = "a".repeat(62) + "-b";
        assert_eq!(hostname(&pod(&long, None, None), "c").0, "a".repeat(62));
    }

    #[test]
    fn hosts_file_has_the_pod_and_its_aliases() {
        let mut p = pod("pg-0", None, Some("pg"));
        p.spec.as_mut().unwrap().host_aliases = Some(vec![HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
        }]);
        let hosts = hosts_file(&p, "10.42.0.5", "cluster.local");
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("10.42.0.5\tpg-0.pg.db.svc.cluster.local\tpg-0\n"));
        assert!(
            hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
        );
    }
}
