use super::*;
use crate::index::IndexOptions;
use crate::name::Domain;
use crate::testing::{self, index};

/// The answer as text: the code, then each section's records as zone-file lines (the SOA
/// serial, a clock reading, as `SERIAL`).
fn ask(index: &Index, name: &str, qtype: RecordType) -> String {
    match index.lookup(&Name::from_ascii(name).unwrap(), qtype) {
        Outcome::Forward => "FORWARD".into(),
        Outcome::Refused => "REFUSED".into(),
        Outcome::Answer(a) => {
            let mut out = format!("{}", a.code);
            for (section, records) in [
                ("an", &a.answers),
                ("ns", &a.authorities),
                ("ar", &a.additionals),
            ] {
                for r in records {
                    let mut line = r.to_string();
                    if let RData::SOA(soa) = &r.data {
                        line = line.replace(&soa.serial.to_string(), "SERIAL");
                    }
                    out.push_str(&format!("\n{section}: {line}"));
                }
            }
            if let Some(target) = a.chase {
                out.push_str(&format!("\nchase: {target}"));
            }
            out
        }
    }
}

const SOA: &str = "ns: cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5";

fn nxdomain() -> String {
    format!("Non-Existent Domain\n{SOA}")
}

fn nodata() -> String {
    format!("No Error\n{SOA}")
}

#[test]
fn cluster_ip_service() {
    let i = index();
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::A),
        "No Error\nan: web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    );
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::AAAA),
        nodata()
    );
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::TXT),
        nodata()
    );
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::CNAME),
        nodata()
    );
}

#[test]
fn dual_stack_service_has_a_and_aaaa() {
    let i = index();
    assert_eq!(
        ask(&i, "dual.default.svc.cluster.local.", RecordType::A),
        "No Error\nan: dual.default.svc.cluster.local. 5 IN A 10.96.0.21"
    );
    assert_eq!(
        ask(&i, "dual.default.svc.cluster.local.", RecordType::AAAA),
        "No Error\nan: dual.default.svc.cluster.local. 5 IN AAAA fd00:96::21"
    );
}

#[test]
fn srv_of_named_ports_targets_the_service() {
    let i = index();
    assert_eq!(
        ask(
            &i,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        "No Error\n\
         an: _http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.\n\
         ar: web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    );
    assert_eq!(
        ask(
            &i,
            "_dns._udp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        "No Error\n\
         an: _dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local.\n\
         ar: web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    );
    // The port exists only over UDP, and there is no port "https".
    assert_eq!(
        ask(
            &i,
            "_dns._tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        nxdomain()
    );
    assert_eq!(
        ask(
            &i,
            "_https._tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        nxdomain()
    );
    // The port name also answers A, as in CoreDNS.
    assert_eq!(
        ask(
            &i,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::A
        ),
        "No Error\nan: _http._tcp.web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    );
    // SRV of the Service itself: every port.
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::SRV),
        "No Error\n\
         an: web.default.svc.cluster.local. 5 IN SRV 0 50 80 web.default.svc.cluster.local.\n\
         an: web.default.svc.cluster.local. 5 IN SRV 0 50 53 web.default.svc.cluster.local.\n\
         ar: web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    );
}

#[test]
fn headless_service_is_its_ready_endpoints() {
    let i = index();
    assert_eq!(
        ask(&i, "pg.db.svc.cluster.local.", RecordType::A),
        "No Error\n\
         an: pg.db.svc.cluster.local. 5 IN A 10.244.0.5\n\
         an: pg.db.svc.cluster.local. 5 IN A 10.244.0.7"
    );
    // publishNotReadyAddresses: the not-ready endpoint too.
    assert_eq!(
        ask(&i, "pg-all.db.svc.cluster.local.", RecordType::A),
        "No Error\nan: pg-all.db.svc.cluster.local. 5 IN A 10.244.1.5"
    );
    // No ready endpoints: the name does not exist (CoreDNS).
    assert_eq!(
        ask(&i, "nobody.db.svc.cluster.local.", RecordType::A),
        nxdomain()
    );
    // An IPv6 endpoint whose slice lists no ports.
    assert_eq!(ask(&i, "v6.db.svc.cluster.local.", RecordType::A), nodata());
    assert_eq!(
        ask(&i, "v6.db.svc.cluster.local.", RecordType::AAAA),
        "No Error\nan: v6.db.svc.cluster.local. 5 IN AAAA fd00:244::9"
    );
}

#[test]
fn endpoints_by_hostname_or_address() {
    let i = index();
    assert_eq!(
        ask(&i, "pg-0.pg.db.svc.cluster.local.", RecordType::A),
        "No Error\nan: pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.0.5"
    );
    assert_eq!(
        ask(&i, "10-244-0-7.pg.db.svc.cluster.local.", RecordType::A),
        "No Error\nan: 10-244-0-7.pg.db.svc.cluster.local. 5 IN A 10.244.0.7"
    );
    assert_eq!(
        ask(&i, "fd00-244--9.v6.db.svc.cluster.local.", RecordType::AAAA),
        "No Error\nan: fd00-244--9.v6.db.svc.cluster.local. 5 IN AAAA fd00:244::9"
    );
    // Not ready, so not published; and an endpoint with a hostname is not named by address.
    assert_eq!(
        ask(&i, "pg-1.pg.db.svc.cluster.local.", RecordType::A),
        nxdomain()
    );
    assert_eq!(
        ask(&i, "10-244-0-5.pg.db.svc.cluster.local.", RecordType::A),
        nxdomain()
    );
    assert_eq!(
        ask(&i, "pg-0.pg.db.svc.cluster.local.", RecordType::AAAA),
        nodata()
    );
    // Endpoints of a ClusterIP Service have names too.
    assert_eq!(
        ask(
            &i,
            "10-244-2-1.web.default.svc.cluster.local.",
            RecordType::A
        ),
        "No Error\nan: 10-244-2-1.web.default.svc.cluster.local. 5 IN A 10.244.2.1"
    );
    // SRV of an endpoint: its ports, targeting itself.
    assert_eq!(
        ask(&i, "pg-0.pg.db.svc.cluster.local.", RecordType::SRV),
        "No Error\n\
         an: pg-0.pg.db.svc.cluster.local. 5 IN SRV 0 100 5432 pg-0.pg.db.svc.cluster.local.\n\
         ar: pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.0.5"
    );
}

#[test]
fn headless_srv_targets_each_endpoint() {
    let i = index();
    assert_eq!(
        ask(&i, "_pg._tcp.pg.db.svc.cluster.local.", RecordType::SRV),
        "No Error\n\
         an: _pg._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 50 5432 pg-0.pg.db.svc.cluster.local.\n\
         an: _pg._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 50 5432 10-244-0-7.pg.db.svc.cluster.local.\n\
         ar: pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.0.5\n\
         ar: 10-244-0-7.pg.db.svc.cluster.local. 5 IN A 10.244.0.7"
    );
    assert_eq!(
        ask(&i, "_pg._udp.pg.db.svc.cluster.local.", RecordType::SRV),
        nxdomain()
    );
    // A slice without ports has no SRV records, and no port names.
    assert_eq!(
        ask(&i, "v6.db.svc.cluster.local.", RecordType::SRV),
        nodata()
    );
    assert_eq!(
        ask(&i, "_x._tcp.v6.db.svc.cluster.local.", RecordType::SRV),
        nxdomain()
    );
}

#[test]
fn srv_weight_is_at_least_one() {
    let endpoints: Vec<serde_json::Value> = (0..150)
        .map(|n| serde_json::json!({"addresses": [format!("10.1.{}.{}", n / 200, n % 200 + 1)]}))
        .collect();
    let index = Index::build(
        &IndexOptions::new(Domain::new("cluster.local").unwrap()),
        &[testing::namespace("big")],
        &[testing::service(
            "big",
            "many",
            serde_json::json!({"clusterIP": "None"}),
        )],
        &[testing::slice(
            "big",
            "many",
            "many-1",
            serde_json::Value::Array(endpoints),
            serde_json::json!([{"name": "p", "port": 1}]),
        )],
    );
    let answer = ask(
        &index,
        "_p._tcp.many.big.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(answer.matches(" IN SRV 0 1 1 ").count(), 150, "{answer}");
}

#[test]
fn external_name_is_a_cname() {
    let i = index();
    assert_eq!(
        ask(&i, "ext.default.svc.cluster.local.", RecordType::CNAME),
        "No Error\nan: ext.default.svc.cluster.local. 5 IN CNAME example.com."
    );
    // Other types follow the CNAME; outside the domain that is the server's job.
    assert_eq!(
        ask(&i, "ext.default.svc.cluster.local.", RecordType::A),
        "No Error\nan: ext.default.svc.cluster.local. 5 IN CNAME example.com.\nchase: example.com."
    );
    // Inside the domain the index follows it itself.
    assert_eq!(
        ask(&i, "alias.default.svc.cluster.local.", RecordType::A),
        "No Error\n\
         an: alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.\n\
         an: web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    );
    // An ExternalName that is an address is ignored (CoreDNS), and an ExternalName has no
    // endpoints or ports.
    assert_eq!(
        ask(&i, "ipext.default.svc.cluster.local.", RecordType::A),
        nxdomain()
    );
    assert_eq!(
        ask(&i, "x.ext.default.svc.cluster.local.", RecordType::A),
        nxdomain()
    );
    assert_eq!(
        ask(
            &i,
            "_a._tcp.ext.default.svc.cluster.local.",
            RecordType::SRV
        ),
        nxdomain()
    );
}

#[test]
fn cname_loops_end() {
    let index = Index::build(
        &IndexOptions::new(Domain::new("cluster.local").unwrap()),
        &[testing::namespace("a")],
        &[
            testing::service(
                "a",
                "x",
                serde_json::json!({"type": "ExternalName", "externalName": "y.a.svc.cluster.local"}),
            ),
            testing::service(
                "a",
                "y",
                serde_json::json!({"type": "ExternalName", "externalName": "x.a.svc.cluster.local"}),
            ),
        ],
        &[],
    );
    let answer = ask(&index, "x.a.svc.cluster.local.", RecordType::A);
    assert_eq!(answer.matches("CNAME").count(), 9, "{answer}");
}

#[test]
fn reverse_lookups() {
    let i = index();
    assert_eq!(
        ask(&i, "20.0.96.10.in-addr.arpa.", RecordType::PTR),
        "No Error\nan: 20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."
    );
    assert_eq!(
        ask(&i, "5.0.244.10.in-addr.arpa.", RecordType::PTR),
        "No Error\nan: 5.0.244.10.in-addr.arpa. 5 IN PTR pg-0.pg.db.svc.cluster.local."
    );
    assert_eq!(
        ask(&i, "1.2.244.10.in-addr.arpa.", RecordType::PTR),
        "No Error\nan: 1.2.244.10.in-addr.arpa. 5 IN PTR 10-244-2-1.web.default.svc.cluster.local."
    );
    let v6 = name::reverse_name("fd00:96::21".parse().unwrap()).to_ascii();
    assert_eq!(
        ask(&i, &v6, RecordType::PTR),
        format!("No Error\nan: {v6} 5 IN PTR dual.default.svc.cluster.local.")
    );
    // Not-ready endpoints have no PTR; unknown addresses are someone else's.
    assert_eq!(
        ask(&i, "6.0.244.10.in-addr.arpa.", RecordType::PTR),
        "FORWARD"
    );
    assert_eq!(
        ask(&i, "1.1.168.192.in-addr.arpa.", RecordType::PTR),
        "FORWARD"
    );
    assert_eq!(ask(&i, "168.192.in-addr.arpa.", RecordType::PTR), "FORWARD");
    // A known address asked another type: NODATA with the reverse zone's SOA.
    assert_eq!(
        ask(&i, "20.0.96.10.in-addr.arpa.", RecordType::A),
        "No Error\nns: in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. SERIAL 7200 1800 86400 5"
    );
}

#[test]
fn pods_insecure() {
    let i = index();
    assert_eq!(
        ask(&i, "10-244-0-9.default.pod.cluster.local.", RecordType::A),
        "No Error\nan: 10-244-0-9.default.pod.cluster.local. 5 IN A 10.244.0.9"
    );
    assert_eq!(
        ask(&i, "fd00--9.default.pod.cluster.local.", RecordType::AAAA),
        "No Error\nan: fd00--9.default.pod.cluster.local. 5 IN AAAA fd00::9"
    );
    assert_eq!(
        ask(
            &i,
            "10-244-0-9.default.pod.cluster.local.",
            RecordType::AAAA
        ),
        nodata()
    );
    assert_eq!(
        ask(&i, "10-244-0-9.nowhere.pod.cluster.local.", RecordType::A),
        nxdomain()
    );
    assert_eq!(
        ask(&i, "10-244-0-999.default.pod.cluster.local.", RecordType::A),
        nxdomain()
    );
    assert_eq!(
        ask(&i, "web.default.pod.cluster.local.", RecordType::A),
        nxdomain()
    );
}

#[test]
fn nxdomain_and_nodata() {
    let i = index();
    // Names that do not exist.
    for name in [
        "nope.default.svc.cluster.local.",
        "web.nowhere.svc.cluster.local.",
        "nowhere.svc.cluster.local.",
        "nope.web.default.svc.cluster.local.",
        "a.b.web.default.svc.cluster.local.",
        "x.cluster.local.",
        "web.default.cluster.local.",
    ] {
        assert_eq!(ask(&i, name, RecordType::A), nxdomain(), "{name}");
        assert_eq!(ask(&i, name, RecordType::AAAA), nxdomain(), "{name}");
    }
    // Names that exist with no records of the type.
    for name in [
        "cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
        "default.svc.cluster.local.",
        "empty.svc.cluster.local.",
        "default.pod.cluster.local.",
        "dns.cluster.local.",
        "ns.dns.cluster.local.",
        "dns-version.cluster.local.",
    ] {
        assert_eq!(ask(&i, name, RecordType::A), nodata(), "{name}");
    }
}

#[test]
fn the_zone_itself() {
    let i = Index::build(
        &IndexOptions {
            nameservers: vec!["10.96.0.10".parse().unwrap()],
            ..IndexOptions::new(Domain::new("cluster.local").unwrap())
        },
        [],
        [],
        [],
    );
    assert_eq!(
        ask(&i, "cluster.local.", RecordType::SOA),
        format!("No Error\n{}", SOA.replace("ns: ", "an: "))
    );
    assert_eq!(
        ask(&i, "cluster.local.", RecordType::NS),
        "No Error\n\
         an: cluster.local. 5 IN NS ns.dns.cluster.local.\n\
         ar: ns.dns.cluster.local. 5 IN A 10.96.0.10"
    );
    assert_eq!(
        ask(&i, "ns.dns.cluster.local.", RecordType::A),
        "No Error\nan: ns.dns.cluster.local. 5 IN A 10.96.0.10"
    );
    assert_eq!(
        ask(&i, "dns-version.cluster.local.", RecordType::TXT),
        "No Error\nan: dns-version.cluster.local. 28800 IN TXT 1.1.0"
    );
    assert_eq!(ask(&i, "cluster.local.", RecordType::AXFR), "REFUSED");
    assert_eq!(ask(&i, "cluster.local.", RecordType::IXFR), "REFUSED");
}

#[test]
fn case_does_not_matter_and_is_kept() {
    let i = index();
    assert_eq!(
        ask(&i, "WEB.Default.SVC.Cluster.LOCAL.", RecordType::A),
        "No Error\nan: WEB.Default.SVC.Cluster.LOCAL. 5 IN A 10.96.0.20"
    );
    assert_eq!(
        ask(&i, "PG-0.pg.DB.svc.cluster.local.", RecordType::A),
        "No Error\nan: PG-0.pg.DB.svc.cluster.local. 5 IN A 10.244.0.5"
    );
    assert_eq!(
        ask(
            &i,
            "_HTTP._TCP.web.default.svc.cluster.local.",
            RecordType::SRV
        )
        .lines()
        .count(),
        3
    );
}

#[test]
fn trailing_dot_does_not_matter() {
    let i = index();
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local", RecordType::A),
        ask(&i, "web.default.svc.cluster.local.", RecordType::A)
    );
    assert_eq!(
        ask(&i, "nope.default.svc.cluster.local", RecordType::A),
        nxdomain()
    );
}

#[test]
fn names_outside_the_domain_are_forwarded() {
    let i = index();
    assert_eq!(ask(&i, "example.com.", RecordType::A), "FORWARD");
    // Search lists and ndots are the client's job: a short name is not expanded here...
    assert_eq!(ask(&i, "web.default.", RecordType::A), "FORWARD");
    assert_eq!(ask(&i, "web.", RecordType::A), "FORWARD");
    // ...and a name the client over-expanded does not exist.
    assert_eq!(
        ask(&i, "example.com.default.svc.cluster.local.", RecordType::A),
        nxdomain()
    );
    // A zone transfer of someone else's zone is theirs to refuse.
    assert_eq!(ask(&i, "example.com.", RecordType::AXFR), "FORWARD");
}

#[test]
fn another_cluster_domain() {
    let (namespaces, services, slices) = testing::cluster();
    let i = Index::build(
        &IndexOptions::new(Domain::new("berth.internal").unwrap()),
        &namespaces,
        &services,
        &slices,
    );
    assert_eq!(
        ask(&i, "web.default.svc.berth.internal.", RecordType::A),
        "No Error\nan: web.default.svc.berth.internal. 5 IN A 10.96.0.20"
    );
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::A),
        "FORWARD"
    );
}

#[test]
fn before_the_caches_sync_a_missing_name_is_servfail() {
    let i = Index::unsynced(&IndexOptions::new(Domain::new("cluster.local").unwrap()));
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::A),
        "Server Failure"
    );
    // Names that exist whatever the cluster holds still answer.
    assert_eq!(ask(&i, "svc.cluster.local.", RecordType::A), nodata());
}

#[test]
fn a_service_without_a_namespace_object_still_answers() {
    // Objects listed before their namespace (or tests that leave namespaces out).
    let (_, services, slices) = testing::cluster();
    let i = Index::build(
        &IndexOptions::new(Domain::new("cluster.local").unwrap()),
        [],
        &services,
        &slices,
    );
    assert_eq!(
        ask(&i, "web.default.svc.cluster.local.", RecordType::A),
        "No Error\nan: web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    );
    assert_eq!(
        ask(&i, "empty.svc.cluster.local.", RecordType::A),
        nxdomain()
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [RecordType; 9] = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::TXT,
        RecordType::PTR,
        RecordType::CNAME,
        RecordType::MX,
        RecordType::NS,
        RecordType::SOA,
    ];

    /// Names made of the labels the fixture uses, so that many of them exist.
    fn names() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec![
            "web",
            "pg",
            "pg-0",
            "pg-1",
            "10-244-0-7",
            "10-244-0-9",
            "_http",
            "_pg",
            "_tcp",
            "_udp",
            "default",
            "db",
            "empty",
            "svc",
            "pod",
            "dns",
            "ns",
            "ext",
            "alias",
            "x",
        ]);
        (prop::collection::vec(label, 0..6), any::<bool>()).prop_map(|(labels, in_zone)| {
            let mut name = labels.join(".");
            if in_zone {
                name = if name.is_empty() {
                    "cluster.local.".into()
                } else {
                    format!("{name}.cluster.local.")
                };
            } else if name.is_empty() {
                name = ".".into();
            } else {
                name.push('.');
            }
            name
        })
    }

    proptest! {
        /// Whether a name exists does not depend on the type asked: a name is NXDOMAIN for
        /// every type or for none, and a name that is forwarded is forwarded for every type.
        #[test]
        fn existence_does_not_depend_on_the_type(name in names()) {
            let i = index();
            let qname = Name::from_ascii(&name).unwrap();
            let verdicts: Vec<&str> = TYPES
                .iter()
                .map(|t| match i.lookup(&qname, *t) {
                    Outcome::Forward => "forward",
                    Outcome::Refused => "refused",
                    Outcome::Answer(a) if a.code == ResponseCode::NXDomain => "nxdomain",
                    Outcome::Answer(a) => {
                        // Every answer is NOERROR or NXDOMAIN once synced, and negative
                        // answers carry the SOA.
                        assert_eq!(a.code, ResponseCode::NoError);
                        if a.answers.is_empty() {
                            assert_eq!(a.authorities.len(), 1, "{name}");
                        }
                        "exists"
                    }
                })
                .collect();
            prop_assert!(verdicts.iter().all(|v| *v == verdicts[0]), "{}: {:?}", name, verdicts);
        }

        /// Every record in an answer is owned by the question's name or, after a CNAME, by
        /// its target; and a lookup never panics, whatever the name.
        #[test]
        fn answers_are_owned_by_the_question(name in names(), t in prop::sample::select(TYPES.to_vec())) {
            let i = index();
            let qname = Name::from_ascii(&name).unwrap();
            if let Outcome::Answer(a) = i.lookup(&qname, t) {
                let mut owners = vec![qname.clone()];
                for r in &a.answers {
                    prop_assert!(owners.iter().any(|o| o.eq_ignore_root(&r.name)), "{}: {}", name, r);
                    if let RData::CNAME(target) = &r.data {
                        owners.push(target.0.clone());
                    }
                }
            }
        }
    }
}
