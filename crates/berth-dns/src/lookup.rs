//! Answering one question from an [`Index`]: a pure function, tested without a server.
//!
//! The answers are CoreDNS's kubernetes plugin's:
//!
//! - `A`/`AAAA` of a Service: its ClusterIPs, or for a headless Service the address of every
//!   endpoint; of an endpoint name: its address; of a port name: the same addresses, as CoreDNS;
//! - `SRV` of a Service or a port name: one record per port (per endpoint and port when
//!   headless), priority 0, weight `100 / count`, targeting the Service's name (the endpoint's
//!   name when headless), with the targets' addresses in the additional section;
//! - an ExternalName Service is a `CNAME` to its external name, which is followed for the
//!   other types (inside the domain here, outside by [`Answer::chase`]);
//! - `PTR` of a ClusterIP is its Service's name, of an endpoint address the endpoint's names;
//!   an address nobody has is not ours, so it is forwarded;
//! - `<a-b-c-d>.<namespace>.pod.<domain>` is that address if the namespace exists;
//! - the domain's own `SOA` and `NS`, and `dns-version.<domain>` `TXT "1.1.0"`.
//!
//! A name that exists with no records of the asked type is NODATA (NOERROR, no answers); a
//! name that does not exist is NXDOMAIN; both carry the zone's SOA in the authority section
//! for negative caching. A headless Service with no ready endpoints does not exist, and nor
//! does anything in a namespace that does not exist (both as CoreDNS). Until the caches have
//! synced, NXDOMAIN is SERVFAIL, since the name may well exist. Zone transfers are refused.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::index::{EndpointEntry, Index, Port, ServiceEntry, ServiceKind, dedup};
use crate::name::{self, QueryName};

/// The schema version CoreDNS publishes at `dns-version.<domain>`, and its TTL.
const DNS_SCHEMA_VERSION: &str = "1.1.0";
const DNS_VERSION_TTL: u32 = 28800;

/// How many CNAMEs inside the domain are followed, as CoreDNS.
const MAX_CNAME_DEPTH: u8 = 8;

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the index.
    Answer(Answer),
    /// Not a name of ours: ask the host's resolvers.
    Forward,
    /// A zone transfer, which is refused.
    Refused,
}

/// An answer from the index: the response code and the sections of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The target of a CNAME that leaves the cluster domain: its records of the same type are
    /// still to be resolved upstream and appended to `answers`.
    pub chase: Option<Name>,
}

impl Answer {
    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        Answer {
            code: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals,
            chase: None,
        }
    }
}

/// Where a Service name leads: an address, and for SRV a port and the name that has the
/// address.
struct Hit<'a> {
    ip: IpAddr,
    port: Option<u16>,
    target: &'a Name,
}

impl Index {
    /// The answer to `qname`/`qtype`. Case and a trailing dot do not matter.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Outcome {
        self.lookup_at(&LowerName::new(qname), qname, qtype, 0)
    }

    /// [`Index::lookup`] for a name whose lowercase form the caller already has (as a
    /// decoded request does).
    pub(crate) fn lookup_lower(
        &self,
        lower: &LowerName,
        qname: &Name,
        qtype: RecordType,
    ) -> Outcome {
        self.lookup_at(lower, qname, qtype, 0)
    }

    fn lookup_at(&self, lower: &LowerName, qname: &Name, qtype: RecordType, depth: u8) -> Outcome {
        let parsed = name::parse(lower, &self.domain);
        let mut owner = qname.clone();
        owner.set_fqdn(true);
        let answer = match parsed {
            QueryName::Outside => return Outcome::Forward,
            QueryName::Reverse(ip) => {
                let Some(names) = self.reverse.get(&ip) else {
                    return Outcome::Forward;
                };
                if qtype != RecordType::PTR {
                    let soa = match ip {
                        IpAddr::V4(_) => &self.soa.in_addr,
                        IpAddr::V6(_) => &self.soa.ip6,
                    };
                    return Outcome::Answer(negative(ResponseCode::NoError, soa));
                }
                let records = names
                    .iter()
                    .map(|n| self.record(&owner, RData::PTR(PTR(n.clone()))))
                    .collect();
                Answer::records(records, Vec::new())
            }
            _ if matches!(qtype, RecordType::AXFR | RecordType::IXFR) => return Outcome::Refused,
            QueryName::Apex => match qtype {
                RecordType::SOA => Answer::records(vec![self.soa.domain.clone()], Vec::new()),
                RecordType::NS => Answer::records(
                    vec![self.record(&owner, RData::NS(NS(self.ns_name.clone())))],
                    self.nameservers
                        .iter()
                        .map(|ip| self.record(&self.ns_name, address(*ip)))
                        .collect(),
                ),
                _ => self.nodata(),
            },
            QueryName::DnsVersion => match qtype {
                RecordType::TXT => Answer::records(
                    vec![Record::from_rdata(
                        owner,
                        DNS_VERSION_TTL,
                        RData::TXT(TXT::new(vec![DNS_SCHEMA_VERSION.into()])),
                    )],
                    Vec::new(),
                ),
                _ => self.nodata(),
            },
            QueryName::DnsParent | QueryName::KindApex(_) => self.nodata(),
            QueryName::Nameserver => self.addresses(&owner, qtype, &self.nameservers),
            QueryName::Namespace { namespace, .. } => {
                if self.namespace_exists(namespace) {
                    self.nodata()
                } else {
                    self.nxdomain()
                }
            }
            QueryName::Pod { namespace, ip } => match ip {
                Some(ip) if self.namespace_exists(namespace) => {
                    self.addresses(&owner, qtype, &[ip])
                }
                _ => self.nxdomain(),
            },
            QueryName::Service { namespace, service } => match self.service(namespace, service) {
                None => self.nxdomain(),
                Some(svc) => match &svc.kind {
                    ServiceKind::ExternalName(target) => self.cname(&owner, target, qtype, depth),
                    ServiceKind::ClusterIp(ips) => {
                        let hits = cluster_ip_hits(svc, ips, |_| true);
                        self.hits(&owner, qtype, !svc.ports.is_empty(), &hits)
                    }
                    ServiceKind::Headless => {
                        let hits = endpoint_hits(svc.endpoints.iter(), |_| true);
                        self.hits(&owner, qtype, !hits.is_empty(), &hits)
                    }
                },
            },
            QueryName::Endpoint {
                namespace,
                service,
                endpoint,
            } => match self.service(namespace, service) {
                Some(svc) if !matches!(svc.kind, ServiceKind::ExternalName(_)) => {
                    let endpoints = svc
                        .by_label
                        .get(endpoint)
                        .into_iter()
                        .flatten()
                        .map(|i| &svc.endpoints[*i]);
                    let hits = endpoint_hits(endpoints, |_| true);
                    self.hits(&owner, qtype, !hits.is_empty(), &hits)
                }
                _ => self.nxdomain(),
            },
            QueryName::Port {
                namespace,
                service,
                port,
                protocol,
            } => {
                let matches = |p: &Port| {
                    (port.is_empty() || p.name == port)
                        && (protocol.is_empty() || p.protocol == protocol)
                };
                match self.service(namespace, service) {
                    Some(svc) => match &svc.kind {
                        ServiceKind::ExternalName(_) => self.nxdomain(),
                        ServiceKind::ClusterIp(ips) => {
                            let exists = svc.ports.iter().any(matches);
                            let hits = cluster_ip_hits(svc, ips, matches);
                            self.hits(&owner, qtype, exists, &hits)
                        }
                        ServiceKind::Headless => {
                            let hits = endpoint_hits(svc.endpoints.iter(), matches);
                            let hits: Vec<Hit<'_>> =
                                hits.into_iter().filter(|h| h.port.is_some()).collect();
                            self.hits(&owner, qtype, !hits.is_empty(), &hits)
                        }
                    },
                    None => self.nxdomain(),
                }
            }
            QueryName::Invalid => self.nxdomain(),
        };
        Outcome::Answer(answer)
    }

    fn service(&self, namespace: &str, service: &str) -> Option<&ServiceEntry> {
        self.namespaces.get(namespace)?.services.get(service)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    fn record(&self, owner: &Name, data: RData) -> Record {
        Record::from_rdata(owner.clone(), self.ttl, data)
    }

    fn nodata(&self) -> Answer {
        negative(ResponseCode::NoError, &self.soa.domain)
    }

    fn nxdomain(&self) -> Answer {
        if self.synced {
            negative(ResponseCode::NXDomain, &self.soa.domain)
        } else {
            Answer {
                code: ResponseCode::ServFail,
                answers: Vec::new(),
                authorities: Vec::new(),
                additionals: Vec::new(),
                chase: None,
            }
        }
    }

    /// The A or AAAA records of `ips` (NODATA for other types, or when none has the family).
    fn addresses(&self, owner: &Name, qtype: RecordType, ips: &[IpAddr]) -> Answer {
        let records: Vec<Record> = ips
            .iter()
            .filter(|ip| family_matches(qtype, **ip))
            .map(|ip| self.record(owner, address(*ip)))
            .collect();
        if records.is_empty() {
            self.nodata()
        } else {
            Answer::records(records, Vec::new())
        }
    }

    /// The answer for a Service, endpoint or port name that leads to `hits`.
    fn hits(&self, owner: &Name, qtype: RecordType, exists: bool, hits: &[Hit<'_>]) -> Answer {
        if !exists {
            return self.nxdomain();
        }
        match qtype {
            RecordType::A | RecordType::AAAA => {
                let mut ips: Vec<IpAddr> = hits.iter().map(|h| h.ip).collect();
                dedup(&mut ips);
                self.addresses(owner, qtype, &ips)
            }
            RecordType::SRV => {
                let mut srv: Vec<(&Name, u16)> = hits
                    .iter()
                    .filter_map(|h| Some((h.target, h.port?)))
                    .collect();
                dedup(&mut srv);
                if srv.is_empty() {
                    return self.nodata();
                }
                // CoreDNS: every record has weight 100, normalised to sum to about 100.
                let weight = u16::try_from(100 / srv.len()).unwrap_or(0).max(1);
                let answers = srv
                    .iter()
                    .map(|(target, port)| {
                        let data = SRV::new(0, weight, *port, (*target).clone());
                        self.record(owner, RData::SRV(data))
                    })
                    .collect();
                let mut extra: Vec<(&Name, IpAddr)> = hits
                    .iter()
                    .filter(|h| h.port.is_some())
                    .map(|h| (h.target, h.ip))
                    .collect();
                dedup(&mut extra);
                let additionals = extra
                    .into_iter()
                    .map(|(target, ip)| self.record(target, address(ip)))
                    .collect();
                Answer::records(answers, additionals)
            }
            _ => self.nodata(),
        }
    }

    /// `owner CNAME target`, followed for any other type than CNAME: inside the domain here,
    /// outside by the server ([`Answer::chase`]).
    fn cname(&self, owner: &Name, target: &Name, qtype: RecordType, depth: u8) -> Answer {
        let mut answer = Answer::records(
            vec![self.record(owner, RData::CNAME(CNAME(target.clone())))],
            Vec::new(),
        );
        if qtype == RecordType::CNAME {
            return answer;
        }
        let lower = LowerName::new(target);
        let inside = !matches!(
            name::parse(&lower, &self.domain),
            QueryName::Outside | QueryName::Reverse(_)
        );
        if !inside {
            answer.chase = Some(target.clone());
        } else if depth < MAX_CNAME_DEPTH
            && let Outcome::Answer(next) = self.lookup_at(&lower, target, qtype, depth + 1)
        {
            answer.answers.extend(next.answers);
            answer.additionals.extend(next.additionals);
            answer.chase = next.chase;
        }
        answer
    }
}

/// Every (ClusterIP, port) of a Service, for the ports `matches` keeps.
fn cluster_ip_hits<'a>(
    svc: &'a ServiceEntry,
    ips: &[IpAddr],
    matches: impl Fn(&Port) -> bool,
) -> Vec<Hit<'a>> {
    svc.ports
        .iter()
        .filter(|p| matches(p))
        .flat_map(|p| {
            ips.iter().map(|ip| Hit {
                ip: *ip,
                port: Some(p.port),
                target: &svc.fqdn,
            })
        })
        .collect()
}

/// Every (endpoint, port) for the ports `matches` keeps; an endpoint whose slice has no
/// ports still has its address (CoreDNS's port -1 sentinel).
fn endpoint_hits<'a>(
    endpoints: impl Iterator<Item = &'a EndpointEntry>,
    matches: impl Fn(&Port) -> bool,
) -> Vec<Hit<'a>> {
    let mut hits = Vec::new();
    for endpoint in endpoints {
        if endpoint.ports.is_empty() {
            hits.push(Hit {
                ip: endpoint.ip,
                port: None,
                target: &endpoint.fqdn,
            });
            continue;
        }
        for port in endpoint.ports.iter().filter(|p| matches(p)) {
            hits.push(Hit {
                ip: endpoint.ip,
                port: Some(port.port),
                target: &endpoint.fqdn,
            });
        }
    }
    hits
}

fn negative(code: ResponseCode, soa: &Record) -> Answer {
    Answer {
        code,
        answers: Vec::new(),
        authorities: vec![soa.clone()],
        additionals: Vec::new(),
        chase: None,
    }
}

fn family_matches(qtype: RecordType, ip: IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
    )
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

#[cfg(test)]
mod tests;
