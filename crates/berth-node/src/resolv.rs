//! A pod's `/etc/resolv.conf` by its `dnsPolicy` and `dnsConfig`, as kubelet writes it:
//!
//! - `ClusterFirst` (the default): the cluster DNS server, the search path
//!   `<ns>.svc.<domain> svc.<domain> <domain>` followed by the host's, and `ndots:5`; a
//!   hostNetwork pod gets the host's resolver instead, as in kubelet;
//! - `ClusterFirstWithHostNet`: the cluster DNS server even on the host network;
//! - `Default`: the host's resolver (its nameservers, search path and options);
//! - `None`: only what `dnsConfig` says.
//!
//! `dnsConfig` adds nameservers (at most 3 in all), search domains (deduplicated, at most
//! 32) and options (a later one replaces an earlier one of the same name). Without a cluster
//! DNS server (berth runs without one) `ClusterFirst` falls back to the host's resolver.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// The parts of a resolv.conf.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolver {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`.
    pub options: Vec<String>,
}

impl Resolver {
    /// Reads the lines of a resolv.conf that matter to a pod.
    pub fn parse(text: &str) -> Resolver {
        let mut out = Resolver::default();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => out.nameservers.extend(fields.next().map(str::to_string)),
                Some("search" | "domain") => {
                    out.searches = fields.map(str::to_string).collect();
                }
                Some("options") => out.options.extend(fields.map(str::to_string)),
                _ => {}
            }
        }
        out
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for server in &self.nameservers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The resolv.conf of `pod`, given the cluster DNS server (if berth runs one), the cluster
/// domain and the host's resolv.conf.
pub fn for_pod(pod: &Pod, cluster_dns: Option<IpAddr>, domain: &str, host: &str) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host = Resolver::parse(host);
    let cluster = |dns: IpAddr| {
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        searches.extend(host.searches.iter().cloned());
        Resolver {
            nameservers: vec![dns.to_string()],
            searches,
            options: vec!["ndots:5".into()],
        }
    };
    let mut resolver = match (policy, cluster_dns) {
        ("None", _) => Resolver::default(),
        ("ClusterFirstWithHostNet", Some(dns)) => cluster(dns),
        ("ClusterFirst", Some(dns)) if !host_network => cluster(dns),
        _ => Resolver {
            nameservers: host.nameservers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        resolver
            .nameservers
            .extend(config.nameservers.iter().flatten().cloned());
        resolver
            .searches
            .extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            resolver
                .options
                .retain(|o| o.split(':').next() != Some(name));
            resolver.options.push(match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name.to_string(),
            });
        }
    }
    resolver.nameservers.truncate(MAX_NAMESERVERS);
    let mut seen = std::collections::HashSet::new();
    resolver.searches.retain(|s| seen.insert(s.clone()));
    resolver.searches.truncate(MAX_SEARCHES);
    resolver.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const HOST: &str = "# managed\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    fn pod(policy: Option<&str>, host_network: bool, config: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(str::to_string),
                host_network: Some(host_network),
                dns_config: config,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn dns() -> Option<IpAddr> {
        Some(IpAddr::from([10, 42, 0, 1]))
    }

    #[test]
    fn cluster_first_uses_the_cluster_server_and_search_path() {
        assert_eq!(
            for_pod(&pod(None, false, None), dns(), "cluster.local", HOST),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.42.0.1\noptions ndots:5\n"
        );
        // On the host network ClusterFirst means the host's resolver…
        let host_like = "search corp.example\nnameserver 192.0.2.53\noptions edns0\n";
        assert_eq!(
            for_pod(
                &pod(Some("ClusterFirst"), true, None),
                dns(),
                "cluster.local",
                HOST
            ),
            host_like
        );
        // …unless the pod asks for ClusterFirstWithHostNet.
        assert!(
            for_pod(
                &pod(Some("ClusterFirstWithHostNet"), true, None),
                dns(),
                "cluster.local",
                HOST
            )
            .contains("nameserver 10.42.0.1\n")
        );
        assert_eq!(
            for_pod(
                &pod(Some("Default"), false, None),
                dns(),
                "cluster.local",
                HOST
            ),
            host_like
        );
        // Without a cluster DNS server there is only the host's.
        assert_eq!(
            for_pod(&pod(None, false, None), None, "cluster.local", HOST),
            host_like
        );
    }

    #[test]
    fn dns_config_adds_to_the_policy_and_none_takes_only_it() {
        let config = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "8.8.8.8".into(), "9.9.9.9".into()]),
            searches: Some(vec!["svc.cluster.local".into(), "extra.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("single-request".into()),
                    value: None,
                },
            ]),
        };
        assert_eq!(
            for_pod(
                &pod(None, false, Some(config.clone())),
                dns(),
                "cluster.local",
                HOST
            ),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example extra.example\n\
             nameserver 10.42.0.1\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n\
             options ndots:2 single-request\n"
        );
        assert_eq!(
            for_pod(
                &pod(Some("None"), false, Some(config)),
                dns(),
                "cluster.local",
                HOST
            ),
            "search svc.cluster.local extra.example\n\
             nameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\n\
             options ndots:2 single-request\n"
        );
    }
}
