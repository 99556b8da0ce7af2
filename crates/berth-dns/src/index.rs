//! The in-memory index the lookups read: namespaces, Services with their ready endpoints, and
//! a reverse map from addresses to names, built from Kubernetes objects with no I/O.
//!
//! It is built whole from the reflector caches (or from plain objects, in tests) and then only
//! read; the server swaps in a new one when the caches change, so a lookup always sees one
//! consistent view. Everything a lookup needs is a hash-map probe away: namespace → service →
//! endpoints (and hostname → endpoints), address → names.
//!
//! What goes in, as CoreDNS's kubernetes plugin reads the API:
//!
//! - a Service is ExternalName (a CNAME to `spec.externalName`, unless that is an IP address,
//!   which CoreDNS ignores), headless (`clusterIP: None`), or has its `clusterIPs`;
//! - its endpoints come from the EndpointSlices labelled `kubernetes.io/service-name=<name>`
//!   (address types IPv4 and IPv6): every address of every endpoint whose `ready` condition is
//!   not false, or of every endpoint when the Service has `publishNotReadyAddresses`;
//! - an endpoint is named by its `hostname` (StatefulSet pods) or else by its address with
//!   dashes (`10-244-0-5`), as CoreDNS names it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::name::{Domain, ip_label};

/// The label on an EndpointSlice that names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The TTL of every record, as CoreDNS's kubernetes plugin defaults to.
pub const DEFAULT_TTL: u32 = 5;

/// Everything the lookups read, built by [`Index::build`].
#[derive(Debug)]
pub struct Index {
    pub(crate) domain: Domain,
    pub(crate) ttl: u32,
    /// False until the caches have listed everything once: until then a name that is not
    /// found may exist, so it is SERVFAIL rather than NXDOMAIN (as in CoreDNS).
    pub(crate) synced: bool,
    pub(crate) nameservers: Vec<IpAddr>,
    pub(crate) namespaces: HashMap<String, NamespaceEntry>,
    /// Address → the names it has: a ClusterIP its Service's name, otherwise each endpoint
    /// name with that address.
    pub(crate) reverse: HashMap<IpAddr, Vec<Name>>,
    /// `ns.dns.<domain>`, the name server named by the SOA and NS records.
    pub(crate) ns_name: Name,
    /// The SOA records of the cluster domain, `in-addr.arpa.` and `ip6.arpa.`.
    pub(crate) soa: Soa,
}

#[derive(Debug)]
pub(crate) struct Soa {
    pub(crate) domain: Record,
    pub(crate) in_addr: Record,
    pub(crate) ip6: Record,
}

#[derive(Debug, Default)]
pub(crate) struct NamespaceEntry {
    pub(crate) services: HashMap<String, ServiceEntry>,
}

#[derive(Debug)]
pub(crate) struct ServiceEntry {
    /// `<service>.<namespace>.svc.<domain>.`
    pub(crate) fqdn: Name,
    pub(crate) kind: ServiceKind,
    /// `spec.ports` (what a ClusterIP Service's SRV records use).
    pub(crate) ports: Vec<Port>,
    pub(crate) endpoints: Vec<EndpointEntry>,
    /// Endpoint label (hostname or dashed address) → indexes into `endpoints`.
    pub(crate) by_label: HashMap<String, Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(Name),
}

#[derive(Debug)]
pub(crate) struct EndpointEntry {
    pub(crate) ip: IpAddr,
    /// `<label>.<service>.<namespace>.svc.<domain>.`
    pub(crate) fqdn: Name,
    /// The ports of the slice it came from; empty when the slice lists none.
    pub(crate) ports: Arc<[Port]>,
}

/// A port as DNS sees it: its name and protocol (both lowercase) and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Port {
    pub(crate) name: String,
    pub(crate) protocol: String,
    pub(crate) port: u16,
}

/// How an [`Index`] is built besides the objects.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub domain: Domain,
    pub ttl: u32,
    /// The addresses `ns.dns.<domain>` has (where pods reach this server).
    pub nameservers: Vec<IpAddr>,
    /// Whether the objects are a complete list (see [`Index`]'s `synced`).
    pub synced: bool,
}

impl IndexOptions {
    /// Options for `domain` with CoreDNS's TTL, no name server addresses, synced.
    pub fn new(domain: Domain) -> IndexOptions {
        IndexOptions {
            domain,
            ttl: DEFAULT_TTL,
            nameservers: Vec::new(),
            synced: true,
        }
    }
}

impl Index {
    /// An index with no objects that knows it has not seen the cluster yet.
    pub fn unsynced(options: &IndexOptions) -> Index {
        let mut options = options.clone();
        options.synced = false;
        Index::build(&options, [], [], [])
    }

    /// Builds the index from the objects as they are now. Objects in any order; the answer
    /// order follows slice name, then position in the slice.
    pub fn build<'a>(
        options: &IndexOptions,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        services: impl IntoIterator<Item = &'a Service>,
        endpoint_slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Index {
        let domain = options.domain.clone();
        let svc_zone = Name::from_ascii("svc")
            .expect("a valid label")
            .append_domain(domain.name())
            .expect("the cluster domain is short enough");

        let mut index_namespaces: HashMap<String, NamespaceEntry> = namespaces
            .into_iter()
            .filter_map(|ns| ns.metadata.name.clone())
            .map(|name| (name, NamespaceEntry::default()))
            .collect();

        // Slices by (namespace, service), sorted by slice name for a stable answer order.
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in endpoint_slices {
            let (Some(namespace), Some(service)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            slices.entry((namespace, service)).or_default().push(slice);
        }
        for list in slices.values_mut() {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }

        let mut reverse_services: HashMap<IpAddr, Vec<Name>> = HashMap::new();
        let mut reverse_endpoints: HashMap<IpAddr, Vec<Name>> = HashMap::new();
        for service in services {
            let (Some(namespace), Some(name)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let Some(fqdn) = child(&svc_zone, &[name, namespace]) else {
                continue;
            };
            let empty = Vec::new();
            let entry = service_entry(
                service,
                fqdn,
                slices.get(&(namespace, name)).unwrap_or(&empty),
            );
            let services = &mut index_namespaces
                .entry(namespace.to_string())
                .or_default()
                .services;
            let Some(entry) = entry else {
                continue;
            };
            if let ServiceKind::ClusterIp(ips) = &entry.kind {
                for ip in ips {
                    reverse_services
                        .entry(*ip)
                        .or_default()
                        .push(entry.fqdn.clone());
                }
            }
            for endpoint in &entry.endpoints {
                reverse_endpoints
                    .entry(endpoint.ip)
                    .or_default()
                    .push(endpoint.fqdn.clone());
            }
            services.insert(name.to_string(), entry);
        }

        // A ClusterIP names its Service (one, as CoreDNS answers the first it finds);
        // otherwise an address names every endpoint that has it.
        let mut reverse = reverse_endpoints;
        for (ip, mut names) in reverse_services {
            names.sort();
            names.truncate(1);
            reverse.insert(ip, names);
        }
        for names in reverse.values_mut() {
            dedup(names);
        }

        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let ns_name = child(domain.name(), &["ns", "dns"]).expect("ns.dns.<domain> is valid");
        let soa = Soa {
            domain: soa_record(domain.name(), options.ttl, serial),
            in_addr: soa_record(
                &Name::from_ascii("in-addr.arpa.").expect("valid"),
                options.ttl,
                serial,
            ),
            ip6: soa_record(
                &Name::from_ascii("ip6.arpa.").expect("valid"),
                options.ttl,
                serial,
            ),
        };
        Index {
            domain,
            ttl: options.ttl,
            synced: options.synced,
            nameservers: options.nameservers.clone(),
            namespaces: index_namespaces,
            reverse,
            ns_name,
            soa,
        }
    }

    /// The cluster domain this index answers for.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// How many Services the index holds (for logs and tests).
    pub fn service_count(&self) -> usize {
        self.namespaces.values().map(|ns| ns.services.len()).sum()
    }

    /// Whether the index was built from complete caches.
    pub fn is_synced(&self) -> bool {
        self.synced
    }
}

/// The entry of one Service, or `None` when CoreDNS would never answer for it (an
/// ExternalName that is an address or not a name).
fn service_entry(service: &Service, fqdn: Name, slices: &[&EndpointSlice]) -> Option<ServiceEntry> {
    let spec = service.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref().unwrap_or_default();
        if target.is_empty() || target.parse::<IpAddr>().is_ok() {
            return None;
        }
        let mut target = Name::from_ascii(target).ok()?;
        target.set_fqdn(true);
        ServiceKind::ExternalName(target)
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        dedup(&mut ips);
        ServiceKind::ClusterIp(ips)
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                protocol: protocol(p.protocol.as_deref()),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();

    let mut entry = ServiceEntry {
        fqdn,
        kind,
        ports,
        endpoints: Vec::new(),
        by_label: HashMap::new(),
    };
    if matches!(entry.kind, ServiceKind::ExternalName(_)) {
        return Some(entry);
    }
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports: Arc<[Port]> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(Port {
                    name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                    protocol: protocol(p.protocol.as_deref()),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        for endpoint in &slice.endpoints {
            // A missing `ready` means unknown, which consumers are to treat as ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let label = endpoint
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| ip_label(ip))
                    .to_ascii_lowercase();
                let Some(endpoint_fqdn) = child(&entry.fqdn, &[&label]) else {
                    continue;
                };
                entry
                    .by_label
                    .entry(label)
                    .or_default()
                    .push(entry.endpoints.len());
                entry.endpoints.push(EndpointEntry {
                    ip,
                    fqdn: endpoint_fqdn,
                    ports: ports.clone(),
                });
            }
        }
    }
    Some(entry)
}

/// A port's protocol, lowercase, TCP when unset (the API's default).
fn protocol(protocol: Option<&str>) -> String {
    protocol.unwrap_or("TCP").to_ascii_lowercase()
}

/// `labels` (most specific first) prepended to `parent`; `None` if that is no valid name.
pub(crate) fn child(parent: &Name, labels: &[&str]) -> Option<Name> {
    let mut name = Name::from_labels(labels.iter().map(|l| l.as_bytes())).ok()?;
    name.set_fqdn(false);
    name.append_domain(parent).ok()
}

fn soa_record(zone: &Name, ttl: u32, serial: u32) -> Record {
    let mname = child(zone, &["ns", "dns"]).expect("valid");
    let rname = child(zone, &["hostmaster"]).expect("valid");
    Record::from_rdata(
        zone.clone(),
        ttl,
        RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, ttl)),
    )
}

/// Removes later duplicates, keeping the first of each, in linear time.
pub(crate) fn dedup<T: std::hash::Hash + Eq + Clone>(items: &mut Vec<T>) {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.retain(|item| seen.insert(item.clone()));
}
