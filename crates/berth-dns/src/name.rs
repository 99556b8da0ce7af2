//! Reading a query name the way CoreDNS's kubernetes plugin reads it, with no I/O.
//!
//! Under the cluster domain a name has one of these shapes (CoreDNS's `parseRequest`):
//!
//! ```text
//! <service>.<namespace>.svc.<domain>                  a Service
//! <endpoint>.<service>.<namespace>.svc.<domain>       one endpoint of it (hostname or a-b-c-d)
//! _<port>._<protocol>.<service>.<namespace>.svc.<domain>   a named port (SRV)
//! <a-b-c-d>.<namespace>.pod.<domain>                  a pod by address ("pods insecure")
//! <namespace>.svc.<domain>, svc.<domain>, ...         names that exist but hold no records
//! ```
//!
//! plus the zone's own names (`dns-version`, `ns.dns`). Reverse names (`d.c.b.a.in-addr.arpa`,
//! 32 nibbles under `ip6.arpa`) are read as the address they stand for. Anything else under the
//! domain is [`QueryName::Invalid`] (NXDOMAIN); anything outside it is [`QueryName::Outside`]
//! (forwarded). The search list and `ndots` are the client's business: a name is only ever
//! read as the fully qualified name it is.
//!
//! Matching is case-insensitive because [`parse`] reads a [`LowerName`], and labels that are
//! not UTF-8 can never name a Kubernetes object, so they make a name [`QueryName::Invalid`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{LowerName, Name};

/// Whether a name is about Services (`svc`) or pods (`pod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Svc,
    Pod,
}

/// What a query name asks for. Borrowed labels are lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryName<'a> {
    /// Neither under the cluster domain nor a reverse name: forwarded.
    Outside,
    /// The cluster domain itself (SOA, NS).
    Apex,
    /// `dns-version.<domain>`: the TXT record with the schema version.
    DnsVersion,
    /// `dns.<domain>`: exists only as the parent of `ns.dns.<domain>`.
    DnsParent,
    /// `ns.dns.<domain>`: the name server named in the SOA and NS records.
    Nameserver,
    /// `svc.<domain>` or `pod.<domain>`.
    KindApex(Kind),
    /// `<namespace>.svc.<domain>` or `<namespace>.pod.<domain>`.
    Namespace { kind: Kind, namespace: &'a str },
    /// `<service>.<namespace>.svc.<domain>`.
    Service {
        namespace: &'a str,
        service: &'a str,
    },
    /// `<endpoint>.<service>.<namespace>.svc.<domain>`.
    Endpoint {
        namespace: &'a str,
        service: &'a str,
        endpoint: &'a str,
    },
    /// `_<port>._<protocol>.<service>.<namespace>.svc.<domain>`, underscores removed.
    Port {
        namespace: &'a str,
        service: &'a str,
        port: &'a str,
        protocol: &'a str,
    },
    /// `<a-b-c-d>.<namespace>.pod.<domain>`; `ip` is `None` when the label is no address.
    Pod {
        namespace: &'a str,
        ip: Option<IpAddr>,
    },
    /// A complete reverse name (`in-addr.arpa` or `ip6.arpa`) for one address.
    Reverse(IpAddr),
    /// Under the cluster domain, but no name CoreDNS would answer: NXDOMAIN.
    Invalid,
}

/// The cluster domain, as lowercase labels, for [`parse`].
#[derive(Debug, Clone)]
pub struct Domain {
    name: Name,
    labels: Vec<Vec<u8>>,
}

impl Domain {
    /// `cluster.local`, `cluster.local.` or `Cluster.Local` alike.
    pub fn new(domain: &str) -> Result<Domain, hickory_proto::ProtoError> {
        let mut name = Name::from_ascii(domain)?.to_lowercase();
        name.set_fqdn(true);
        if name.is_root() {
            return Err("the cluster domain cannot be the root".into());
        }
        let labels = name.iter().map(<[u8]>::to_vec).collect();
        Ok(Domain { name, labels })
    }

    /// The domain as a fully qualified, lowercase name.
    pub fn name(&self) -> &Name {
        &self.name
    }
}

/// Reads `name` (already lowercase, as every [`LowerName`] is) against the cluster `domain`.
/// Allocates nothing: the labels are read in place.
pub fn parse<'a>(name: &'a LowerName, domain: &Domain) -> QueryName<'a> {
    let labels = name.iter();
    let count = labels.len();
    let zone = domain.labels.len();
    let under_domain = count >= zone
        && name
            .iter()
            .skip(count - zone)
            .zip(&domain.labels)
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    if !under_domain {
        return match reverse(name) {
            Some(ip) => QueryName::Reverse(ip),
            None => QueryName::Outside,
        };
    }
    // At most five labels before the domain make a name of ours (`_port._proto.svc.ns.svc`).
    let mut base = [""; 5];
    let base_len = count - zone;
    if base_len > base.len() {
        return QueryName::Invalid;
    }
    for (slot, label) in base.iter_mut().zip(labels.take(base_len)) {
        let Ok(label) = std::str::from_utf8(label) else {
            return QueryName::Invalid;
        };
        *slot = label;
    }
    let base = &base[..base_len];
    // Labels from the right: kind, namespace, service, then endpoint or port and protocol.
    let kind = match base.last() {
        None => return QueryName::Apex,
        Some(&"svc") => Kind::Svc,
        Some(&"pod") => Kind::Pod,
        Some(_) => return zone_name(base),
    };
    match (kind, &base[..base.len() - 1]) {
        (_, []) => QueryName::KindApex(kind),
        (_, [namespace]) => QueryName::Namespace { kind, namespace },
        (Kind::Svc, [service, namespace]) => QueryName::Service { namespace, service },
        (Kind::Svc, [endpoint, service, namespace]) => QueryName::Endpoint {
            namespace,
            service,
            endpoint,
        },
        (Kind::Svc, [port, protocol, service, namespace]) => QueryName::Port {
            namespace,
            service,
            port: strip_underscore(port),
            protocol: strip_underscore(protocol),
        },
        (Kind::Pod, [pod, namespace]) => QueryName::Pod {
            namespace,
            ip: dashed_ip(pod),
        },
        _ => QueryName::Invalid,
    }
}

/// The zone's own names: `dns-version`, `dns`, `ns.dns`.
fn zone_name(base: &[&str]) -> QueryName<'static> {
    match base {
        ["dns-version"] => QueryName::DnsVersion,
        ["dns"] => QueryName::DnsParent,
        ["ns", "dns"] => QueryName::Nameserver,
        _ => QueryName::Invalid,
    }
}

fn strip_underscore(label: &str) -> &str {
    label.strip_prefix('_').unwrap_or(label)
}

/// The address a pod label stands for, as CoreDNS reads it: exactly three dashes and no
/// `--` is IPv4 (`10-244-0-5`), anything else is IPv6 with `-` for `:` (`fd00--5`).
pub fn dashed_ip(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4)
    } else {
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }
}

/// The label CoreDNS makes for an endpoint without a hostname: its address with `-` for `.`
/// or `:` (`10-244-0-5`, `fd00--5`).
pub fn ip_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address of a complete reverse name: four decimal labels under `in-addr.arpa`, or 32
/// hex nibbles under `ip6.arpa`, least significant first. Partial names are not addresses.
fn reverse(name: &Name) -> Option<IpAddr> {
    let count = name.iter().len();
    let suffix = |expected: [&str; 2]| {
        name.iter()
            .skip(count - 2)
            .zip(expected)
            .all(|(l, e)| l.eq_ignore_ascii_case(e.as_bytes()))
    };
    if count == 6 && suffix(["in-addr", "arpa"]) {
        let mut octets = [0u8; 4];
        for (octet, label) in octets.iter_mut().rev().zip(name.iter()) {
            // `u8::from_str` takes "010" and "+5"; a reverse name has plain decimal octets.
            if label.is_empty()
                || !label.iter().all(u8::is_ascii_digit)
                || (label.len() > 1 && label[0] == b'0')
            {
                return None;
            }
            *octet = std::str::from_utf8(label).ok()?.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if count == 34 && suffix(["ip6", "arpa"]) {
        let mut value: u128 = 0;
        for (i, label) in name.iter().take(32).enumerate() {
            let [nibble] = label else { return None };
            let digit = (*nibble as char).to_digit(16)?;
            value |= u128::from(digit) << (4 * i);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

/// The reverse name of `ip`: `5.0.244.10.in-addr.arpa.` or 32 nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut text = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                text.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            text.push_str("ip6.arpa.");
            text
        }
    };
    Name::from_ascii(text).expect("a reverse name is always valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(name: &str) -> String {
        let domain = Domain::new("cluster.local").unwrap();
        let lower = LowerName::new(&Name::from_ascii(name).unwrap());
        format!("{:?}", parse(&lower, &domain))
    }

    #[test]
    fn shapes() {
        assert_eq!(
            parsed("web.default.svc.cluster.local."),
            r#"Service { namespace: "default", service: "web" }"#
        );
        assert_eq!(
            parsed("web-0.web.default.svc.cluster.local."),
            r#"Endpoint { namespace: "default", service: "web", endpoint: "web-0" }"#
        );
        assert_eq!(
            parsed("_http._tcp.web.default.svc.cluster.local."),
            r#"Port { namespace: "default", service: "web", port: "http", protocol: "tcp" }"#
        );
        assert_eq!(
            parsed("10-244-0-5.default.pod.cluster.local."),
            r#"Pod { namespace: "default", ip: Some(10.244.0.5) }"#
        );
        assert_eq!(
            parsed("fd00--5.default.pod.cluster.local."),
            r#"Pod { namespace: "default", ip: Some(fd00::5) }"#
        );
        assert_eq!(
            parsed("nope.default.pod.cluster.local."),
            r#"Pod { namespace: "default", ip: None }"#
        );
        assert_eq!(
            parsed("default.svc.cluster.local."),
            r#"Namespace { kind: Svc, namespace: "default" }"#
        );
        assert_eq!(
            parsed("default.pod.cluster.local."),
            r#"Namespace { kind: Pod, namespace: "default" }"#
        );
        assert_eq!(parsed("svc.cluster.local."), "KindApex(Svc)");
        assert_eq!(parsed("pod.cluster.local."), "KindApex(Pod)");
        assert_eq!(parsed("cluster.local."), "Apex");
        assert_eq!(parsed("dns-version.cluster.local."), "DnsVersion");
        assert_eq!(parsed("ns.dns.cluster.local."), "Nameserver");
        assert_eq!(parsed("dns.cluster.local."), "DnsParent");
        assert_eq!(parsed("x.cluster.local."), "Invalid");
        assert_eq!(parsed("a.b.c.d.default.svc.cluster.local."), "Invalid");
        assert_eq!(parsed("x.10-0-0-1.default.pod.cluster.local."), "Invalid");
        assert_eq!(parsed("example.com."), "Outside");
        assert_eq!(parsed("local."), "Outside");
        assert_eq!(parsed("5.0.244.10.in-addr.arpa."), "Reverse(10.244.0.5)");
        assert_eq!(parsed("0.244.10.in-addr.arpa."), "Outside");
        assert_eq!(parsed("05.0.244.10.in-addr.arpa."), "Outside");
        assert_eq!(parsed("256.0.244.10.in-addr.arpa."), "Outside");
    }

    #[test]
    fn reverse_octets_are_plain_decimal() {
        let domain = Domain::new("cluster.local").unwrap();
        let labels: [&[u8]; 6] = [b"+5", b"0", b"244", b"10", b"in-addr", b"arpa"];
        let name = LowerName::new(&Name::from_labels(labels).unwrap());
        assert_eq!(parse(&name, &domain), QueryName::Outside);
    }

    #[test]
    fn case_and_trailing_dot_do_not_matter() {
        let want = parsed("web.default.svc.cluster.local.");
        assert_eq!(parsed("WEB.Default.SVC.Cluster.LOCAL."), want);
        assert_eq!(parsed("web.default.svc.cluster.local"), want);
        assert_eq!(parsed("5.0.244.10.IN-ADDR.ARPA"), "Reverse(10.244.0.5)");
    }

    #[test]
    fn search_list_expansion_is_not_undone() {
        // A client that appended its search domain to a fully qualified name asks for a name
        // that does not exist; the server does not guess.
        assert_eq!(
            parsed("web.default.svc.cluster.local.default.svc.cluster.local."),
            "Invalid"
        );
        // And a short name is outside the domain: the client should have expanded it.
        assert_eq!(parsed("web.default."), "Outside");
    }

    #[test]
    fn reverse_names_round_trip() {
        for ip in [
            "10.96.0.10",
            "0.0.0.0",
            "255.255.255.255",
            "fd00::5",
            "2001:db8::1:2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = LowerName::new(&reverse_name(ip));
            let domain = Domain::new("cluster.local").unwrap();
            assert_eq!(parse(&name, &domain), QueryName::Reverse(ip), "{ip}");
        }
    }

    #[test]
    fn ip_labels_round_trip() {
        for ip in ["10.244.0.5", "fd00::5", "2001:db8:1:2:3:4:5:6"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(dashed_ip(&ip_label(ip)), Some(ip), "{ip}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            Domain::new("Cluster.Local.").unwrap().name().to_ascii(),
            "cluster.local."
        );
        assert!(Domain::new(".").is_err());
        let domain = Domain::new("berth.internal").unwrap();
        let lower = LowerName::new(&Name::from_ascii("a.b.svc.berth.internal").unwrap());
        assert_eq!(
            parse(&lower, &domain),
            QueryName::Service {
                namespace: "b",
                service: "a"
            }
        );
        let lower = LowerName::new(&Name::from_ascii("a.b.svc.cluster.local").unwrap());
        assert_eq!(parse(&lower, &domain), QueryName::Outside);
    }

    /// A Kubernetes-style label: what namespaces, services and hostnames are made of.
    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
    }

    /// Randomly upper-cases ASCII letters.
    fn mixed_case(s: &str, mask: u64) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    fn parse_str<'a>(lower: &'a LowerName, domain: &Domain) -> QueryName<'a> {
        parse(lower, domain)
    }

    proptest! {
        /// Every shape a name is built in reads back as that shape, whatever the case of its
        /// letters and with or without the trailing dot.
        #[test]
        fn names_read_back(
            ns in label(), svc in label(), ep in label(), port in label(),
            proto in prop::sample::select(vec!["tcp", "udp", "sctp"]),
            domain in prop::sample::select(vec!["cluster.local", "berth.internal", "a.b.c"]),
            ip in any::<u32>(), mask in any::<u64>(), dot in any::<bool>(),
        ) {
            let d = Domain::new(domain).unwrap();
            let ipv4 = IpAddr::V4(Ipv4Addr::from(ip));
            let cases: Vec<(String, QueryName<'_>)> = vec![
                (format!("{svc}.{ns}.svc.{domain}"), QueryName::Service { namespace: &ns, service: &svc }),
                (format!("{ep}.{svc}.{ns}.svc.{domain}"), QueryName::Endpoint { namespace: &ns, service: &svc, endpoint: &ep }),
                (format!("_{port}._{proto}.{svc}.{ns}.svc.{domain}"), QueryName::Port { namespace: &ns, service: &svc, port: &port, protocol: proto }),
                (format!("{}.{ns}.pod.{domain}", ip_label(ipv4)), QueryName::Pod { namespace: &ns, ip: Some(ipv4) }),
                (format!("{ns}.svc.{domain}"), QueryName::Namespace { kind: Kind::Svc, namespace: &ns }),
                (domain.to_string(), QueryName::Apex),
            ];
            for (text, want) in cases {
                let text = format!("{}{}", mixed_case(&text, mask), if dot { "." } else { "" });
                let lower = LowerName::new(&Name::from_ascii(&text).unwrap());
                prop_assert_eq!(parse_str(&lower, &d), want, "{}", text);
            }
        }

        /// Any name at all parses without panicking, and a name outside the domain is never
        /// read as one inside it.
        #[test]
        fn any_name_parses(labels in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..8)) {
            let d = Domain::new("cluster.local").unwrap();
            if let Ok(name) = Name::from_labels(labels.iter().map(Vec::as_slice)) {
                let lower = LowerName::new(&name);
                let parsed = parse(&lower, &d);
                let inside = d.name().zone_of(&name.to_lowercase());
                match parsed {
                    QueryName::Outside | QueryName::Reverse(_) => prop_assert!(!inside),
                    _ => prop_assert!(inside),
                }
            }
        }

        /// Reverse names of every address read back as that address.
        #[test]
        fn reverse_round_trip(v4 in any::<u32>(), v6 in any::<u128>()) {
            let d = Domain::new("cluster.local").unwrap();
            for ip in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                let name = LowerName::new(&reverse_name(ip));
                prop_assert_eq!(parse(&name, &d), QueryName::Reverse(ip));
            }
        }
    }
}
