//! The proxy's kernel side: [`Ruleset`] renders the Service ports as one nftables table,
//! the shape kube-proxy's nftables mode uses, and a [`Dataplane`] hands it to the kernel.
//!
//! Packets meet the table at the nat hooks (prerouting for pods and other hosts, output for
//! the host itself). A verdict map keyed by destination address, protocol and port sends a
//! connection to its Service's chain, which picks an endpoint at random (`numgen`), or the
//! one a client is pinned to (sessionAffinity: a timed set per endpoint), and DNATs to it.
//! Conntrack then rewrites the rest of the connection, replies included. The lookup is a hash
//! map, so ten thousand Services cost what one costs.
//!
//! Masquerading (source NAT to the bridge's address) is kept for what needs it: connections
//! from outside the pod network (the host itself, `127.0.0.1:<nodePort>`), and a pod reaching
//! itself through its own Service (a hairpin, which would otherwise arrive from its own
//! address). Traffic to the service CIDR that matched nothing — no such port, no endpoints —
//! is rejected, so it neither hangs nor leaks out of the host's default route.
//!
//! A sync is one `nft -f` transaction, applied atomically: the first replaces the whole table
//! (whatever an earlier berth left), later ones flush and refill the chains and maps and
//! delete what is gone, so the affinity sets of unchanged endpoints keep their clients.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::model::{Endpoint, Protocol, ServicePort};
use crate::{Cidr, NetError};

/// The packet mark that asks the postrouting chain to masquerade (kube-proxy's bit).
const MASQUERADE_MARK: &str = "0x00004000";

/// What the table is built around.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// The table's name (`ip` family), one per berth on a host.
    pub table: String,
    /// The pod bridge: packets from it to 127.0.0.0/8 are dropped unless they were DNATed
    /// there, since route_localnet is on for it.
    pub bridge: String,
    /// Sources inside it are pods and keep their address; others are masqueraded.
    pub cluster_cidr: Cidr,
    /// Destinations inside it that no Service port claims are rejected.
    pub service_cidr: Cidr,
    /// Masquerade every proxied connection: needed when bridged traffic skips the IP hooks
    /// (no br_netfilter), as replies between pods on one bridge would then bypass conntrack.
    pub masquerade_all: bool,
}

/// The rendered state of the table: chains with their rules, sets and map elements.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Chain name → its declaration body (`{ type … }` for base chains, empty otherwise)
    /// and its rules.
    chains: BTreeMap<String, (String, Vec<String>)>,
    /// Affinity set names → their timeout in seconds.
    sets: BTreeMap<String, u32>,
    /// `service-ips` elements: `<ip> . <proto> . <port>` → chain.
    service_ips: BTreeMap<String, String>,
    /// `service-nodeports` elements: `<proto> . <port>` → chain.
    node_ports: BTreeMap<String, String>,
    /// Duplicate claims dropped while rendering (an address and port taken twice).
    pub conflicts: Vec<String>,
}

impl Ruleset {
    /// Renders `ports` (in any order; the result does not depend on it).
    pub fn render(config: &TableConfig, ports: &[ServicePort]) -> Ruleset {
        let mut rules = Ruleset::default();
        rules.add_fixed(config);
        let mut ports: Vec<&ServicePort> = ports.iter().collect();
        ports.sort_by(|a, b| a.key.cmp(&b.key));
        for port in ports {
            rules.add_port(config, port);
        }
        rules
    }

    /// The chains every table has.
    fn add_fixed(&mut self, config: &TableConfig) {
        let base = |hook: &str, kind: &str, priority: &str| {
            format!("{{ type {kind} hook {hook} priority {priority} ; policy accept ; }}")
        };
        let services = "jump services".to_string();
        self.chain(
            "nat-prerouting",
            base("prerouting", "nat", "dstnat"),
            vec![services.clone()],
        );
        self.chain("nat-output", base("output", "nat", "-100"), vec![services]);
        self.chain(
            "nat-postrouting",
            base("postrouting", "nat", "srcnat"),
            vec![format!(
                "meta mark & {MASQUERADE_MARK} == {MASQUERADE_MARK} meta mark set meta mark ^ {MASQUERADE_MARK} masquerade"
            )],
        );
        self.chain(
            "services",
            String::new(),
            vec![
                "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
                "fib daddr type local meta l4proto . th dport vmap @service-nodeports".into(),
            ],
        );
        self.chain(
            "mark-for-masquerade",
            String::new(),
            vec![format!("meta mark set meta mark | {MASQUERADE_MARK}")],
        );
        let reject = format!("ip daddr {} reject", config.service_cidr);
        let bridge = &config.bridge;
        self.chain(
            "filter-input",
            base("input", "filter", "filter"),
            vec![
                format!("iifname \"{bridge}\" ip daddr 127.0.0.0/8 ct status dnat accept"),
                format!("iifname \"{bridge}\" ip daddr 127.0.0.0/8 drop"),
                reject.clone(),
            ],
        );
        self.chain(
            "filter-forward",
            base("forward", "filter", "filter"),
            vec![reject.clone()],
        );
        self.chain(
            "filter-output",
            base("output", "filter", "filter"),
            vec![reject],
        );
    }

    fn chain(&mut self, name: &str, declaration: String, rules: Vec<String>) {
        self.chains.insert(name.to_string(), (declaration, rules));
    }

    fn add_port(&mut self, config: &TableConfig, port: &ServicePort) {
        if port.endpoints.is_empty() && port.external_endpoints.is_empty() {
            // Nothing to send to: traffic to the cluster IPs is rejected by the filter chains.
            return;
        }
        let key = &port.key;
        let affinity = port.affinity_seconds;
        let mut endpoint_chains = BTreeSet::new();
        endpoint_chains.extend(port.endpoints.iter().copied());
        endpoint_chains.extend(port.external_endpoints.iter().copied());
        for endpoint in &endpoint_chains {
            self.add_endpoint(key, port.protocol, *endpoint, affinity);
        }

        let service_chain = format!("svc-{key}");
        if !port.endpoints.is_empty() {
            let mut rules = vec![if config.masquerade_all {
                "jump mark-for-masquerade".to_string()
            } else {
                format!(
                    "ip saddr != {} jump mark-for-masquerade",
                    config.cluster_cidr
                )
            }];
            rules.extend(choose(key, &port.endpoints, affinity));
            self.chain(&service_chain, String::new(), rules);
            for ip in &port.virtual_ips {
                let element = format!("{ip} . {} . {}", port.protocol, port.port);
                self.claim_ip(element, &service_chain, key);
            }
        }

        if port.node_port.is_none() && !port.load_balancer {
            return;
        }
        let external_chain = format!("ext-{key}");
        let mut rules = vec!["jump mark-for-masquerade".to_string()];
        if port.external_endpoints == port.endpoints {
            rules.push(format!("goto {service_chain}"));
        } else if port.external_endpoints.is_empty() {
            // externalTrafficPolicy Local with no local endpoint: dropped, as kube-proxy does.
            rules.push("drop".into());
        } else {
            rules.extend(choose(key, &port.external_endpoints, affinity));
        }
        self.chain(&external_chain, String::new(), rules);
        let mut local_ports = Vec::new();
        local_ports.extend(port.node_port);
        if port.load_balancer {
            local_ports.push(port.port);
        }
        for local in local_ports {
            let element = format!("{} . {local}", port.protocol);
            self.claim_node_port(element, &external_chain, key);
        }
    }

    fn add_endpoint(
        &mut self,
        key: &str,
        protocol: Protocol,
        endpoint: Endpoint,
        affinity: Option<u32>,
    ) {
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", endpoint.ip)];
        if let Some(seconds) = affinity {
            let set = affinity_set(key, endpoint, seconds);
            rules.push(format!("update @{set} {{ ip saddr }}"));
            self.sets.insert(set, seconds);
        }
        rules.push(format!("meta l4proto {protocol} dnat to {endpoint}"));
        self.chain(&endpoint_chain(key, endpoint), String::new(), rules);
    }

    fn claim_ip(&mut self, element: String, chain: &str, key: &str) {
        if let Some(owner) = self.service_ips.get(&element) {
            self.conflicts
                .push(format!("{element} is {owner}'s; {key} does not get it"));
            return;
        }
        self.service_ips.insert(element, chain.to_string());
    }

    fn claim_node_port(&mut self, element: String, chain: &str, key: &str) {
        if let Some(owner) = self.node_ports.get(&element) {
            self.conflicts
                .push(format!("{element} is {owner}'s; {key} does not get it"));
            return;
        }
        self.node_ports.insert(element, chain.to_string());
    }

    /// The `nft -f` transaction that turns the table from `previous` (None: unknown, so
    /// replace it whole) into this ruleset.
    pub fn transaction(&self, table: &str, previous: Option<&Ruleset>) -> String {
        let empty = Ruleset::default();
        let mut out = String::new();
        let t = format!("ip {table}");
        let _ = writeln!(out, "add table {t}");
        if previous.is_none() {
            let _ = writeln!(out, "delete table {t}");
            let _ = writeln!(out, "add table {t}");
        }
        let previous = previous.unwrap_or(&empty);
        let _ = writeln!(
            out,
            "add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}"
        );
        let _ = writeln!(
            out,
            "add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}"
        );
        let _ = writeln!(out, "flush map {t} service-ips");
        let _ = writeln!(out, "flush map {t} service-nodeports");
        let stale_chains: Vec<&String> = previous
            .chains
            .keys()
            .filter(|name| !self.chains.contains_key(*name))
            .collect();
        // Nothing may still jump to a chain when it is deleted: empty the stale ones first.
        for name in &stale_chains {
            let _ = writeln!(out, "flush chain {t} {name}");
        }
        for (name, seconds) in &self.sets {
            let _ = writeln!(
                out,
                "add set {t} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {seconds}s ; }}"
            );
        }
        for (name, (declaration, _)) in &self.chains {
            let _ = writeln!(out, "add chain {t} {name} {declaration}");
            let _ = writeln!(out, "flush chain {t} {name}");
        }
        for (name, (_, rules)) in &self.chains {
            for rule in rules {
                let _ = writeln!(out, "add rule {t} {name} {rule}");
            }
        }
        for (map, elements) in [
            ("service-ips", &self.service_ips),
            ("service-nodeports", &self.node_ports),
        ] {
            for (element, chain) in elements {
                let _ = writeln!(out, "add element {t} {map} {{ {element} : goto {chain} }}");
            }
        }
        for name in stale_chains {
            let _ = writeln!(out, "delete chain {t} {name}");
        }
        for name in previous.sets.keys() {
            if !self.sets.contains_key(name) {
                let _ = writeln!(out, "delete set {t} {name}");
            }
        }
        out
    }
}

/// The rules that pick one of `endpoints`: the pinned one if the client has one, else one
/// at random.
fn choose(key: &str, endpoints: &[Endpoint], affinity: Option<u32>) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(seconds) = affinity {
        for endpoint in endpoints {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(key, *endpoint, seconds),
                endpoint_chain(key, *endpoint)
            ));
        }
    }
    match endpoints {
        [] => {}
        [only] => rules.push(format!("goto {}", endpoint_chain(key, *only))),
        many => {
            let arms: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{i} : goto {}", endpoint_chain(key, *e)))
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                many.len(),
                arms.join(", ")
            ));
        }
    }
    rules
}

fn endpoint_chain(key: &str, endpoint: Endpoint) -> String {
    format!("ep-{key}/{}_{}", endpoint.ip, endpoint.port)
}

/// The timeout is part of the name: a set's timeout cannot be changed in place.
fn affinity_set(key: &str, endpoint: Endpoint, seconds: u32) -> String {
    format!("aff-{seconds}-{key}/{}_{}", endpoint.ip, endpoint.port)
}

/// Where rulesets go: the kernel, or a recording for tests.
pub trait Dataplane: Send + Sync {
    /// Applies one nftables transaction atomically: all of it or, on error, none of it.
    fn apply(&self, transaction: &str) -> Result<(), NetError>;

    /// Forgets the UDP flows to `destination:port` that were sent on to `endpoint`: UDP has
    /// no end, so without this a client keeps talking to an endpoint that is gone.
    fn forget_udp_flows(
        &self,
        destination: Ipv4Addr,
        port: u16,
        endpoint: Ipv4Addr,
    ) -> Result<(), NetError>;
}

/// The kernel through Debian's `nft` (fed the transaction on stdin, as kube-proxy's
/// knftables does) and `conntrack` commands.
pub struct Kernel;

impl Kernel {
    fn run(program: &str, args: &[&str], input: &str) -> Result<std::process::Output, NetError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetError::Io(format!("running {program} (is it installed?)"), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| NetError::Io(format!("writing to {program}"), e))?;
        }
        child
            .wait_with_output()
            .map_err(|e| NetError::Io(format!("waiting for {program}"), e))
    }
}

impl Dataplane for Kernel {
    fn apply(&self, transaction: &str) -> Result<(), NetError> {
        let output = Kernel::run("nft", &["-f", "-"], transaction)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NetError::Nftables(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ))
        }
    }

    fn forget_udp_flows(
        &self,
        destination: Ipv4Addr,
        port: u16,
        endpoint: Ipv4Addr,
    ) -> Result<(), NetError> {
        let (destination, port, endpoint) = (
            destination.to_string(),
            port.to_string(),
            endpoint.to_string(),
        );
        let args = [
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            &destination,
            "--orig-port-dst",
            &port,
            "--reply-src",
            &endpoint,
        ];
        // conntrack exits 1 when no flow matched, which is the usual case.
        let output = Kernel::run("conntrack", &args, "")?;
        match output.status.code() {
            Some(0 | 1) => Ok(()),
            _ => Err(NetError::Nftables(format!(
                "conntrack -D: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }
}

/// Removes berth's table `table` from the kernel, if it is there: what `berth down` does.
pub fn delete_table(dataplane: &dyn Dataplane, table: &str) -> Result<(), NetError> {
    dataplane.apply(&format!("add table ip {table}\ndelete table ip {table}\n"))
}

/// Remembers what it was asked to do instead of doing it.
#[derive(Default)]
pub struct Recording {
    calls: Mutex<Vec<String>>,
}

impl Recording {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn record(&self, call: String) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

impl Dataplane for Recording {
    fn apply(&self, transaction: &str) -> Result<(), NetError> {
        self.record(transaction.to_string());
        Ok(())
    }

    fn forget_udp_flows(
        &self,
        destination: Ipv4Addr,
        port: u16,
        endpoint: Ipv4Addr,
    ) -> Result<(), NetError> {
        self.record(format!("forget udp {destination}:{port} via {endpoint}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TableConfig {
        TableConfig {
            table: "berth0".into(),
            bridge: "berth0".into(),
            cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
            service_cidr: "10.43.0.0/16".parse().expect("cidr"),
            masquerade_all: false,
        }
    }

    fn endpoint(last: u8, port: u16) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::new(10, 42, 0, last),
            port,
        }
    }

    fn web(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            key: "default/web/tcp/http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            virtual_ips: vec![Ipv4Addr::new(10, 43, 0, 5)],
            node_port: None,
            load_balancer: false,
            external_endpoints: endpoints.clone(),
            endpoints,
            affinity_seconds: None,
        }
    }

    fn rules_of<'a>(rules: &'a Ruleset, chain: &str) -> &'a [String] {
        &rules.chains.get(chain).expect(chain).1
    }

    #[test]
    fn a_service_balances_at_random_over_its_endpoints() {
        let port = web(vec![endpoint(2, 8080), endpoint(3, 8080)]);
        let rules = Ruleset::render(&config(), &[port]);
        assert_eq!(
            rules_of(&rules, "svc-default/web/tcp/http"),
            [
                "ip saddr != 10.42.0.0/16 jump mark-for-masquerade",
                "numgen random mod 2 vmap { 0 : goto ep-default/web/tcp/http/10.42.0.2_8080, 1 : goto ep-default/web/tcp/http/10.42.0.3_8080 }",
            ]
        );
        assert_eq!(
            rules_of(&rules, "ep-default/web/tcp/http/10.42.0.3_8080"),
            [
                "ip saddr 10.42.0.3 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.42.0.3:8080",
            ]
        );
        assert_eq!(
            rules
                .service_ips
                .get("10.43.0.5 . tcp . 80")
                .map(String::as_str),
            Some("svc-default/web/tcp/http")
        );
        assert!(rules.node_ports.is_empty());
    }

    #[test]
    fn a_service_without_endpoints_gets_no_chain_and_is_rejected() {
        let rules = Ruleset::render(&config(), &[web(vec![])]);
        assert!(!rules.chains.contains_key("svc-default/web/tcp/http"));
        assert!(rules.service_ips.is_empty());
        assert!(
            rules_of(&rules, "filter-forward")
                .contains(&"ip daddr 10.43.0.0/16 reject".to_string())
        );
        assert!(
            rules_of(&rules, "filter-output").contains(&"ip daddr 10.43.0.0/16 reject".to_string())
        );
    }

    #[test]
    fn affinity_pins_a_client_with_a_timed_set_per_endpoint() {
        let mut port = web(vec![endpoint(2, 8080), endpoint(3, 8080)]);
        port.affinity_seconds = Some(60);
        let rules = Ruleset::render(&config(), &[port]);
        let service = rules_of(&rules, "svc-default/web/tcp/http");
        assert_eq!(
            service[1],
            "ip saddr @aff-60-default/web/tcp/http/10.42.0.2_8080 goto ep-default/web/tcp/http/10.42.0.2_8080"
        );
        assert!(
            rules_of(&rules, "ep-default/web/tcp/http/10.42.0.2_8080").contains(
                &"update @aff-60-default/web/tcp/http/10.42.0.2_8080 { ip saddr }".to_string()
            )
        );
        assert_eq!(rules.sets.len(), 2);
    }

    #[test]
    fn node_ports_and_load_balancers_masquerade_and_reuse_the_service_chain() {
        let mut port = web(vec![endpoint(2, 8080)]);
        port.node_port = Some(30080);
        port.load_balancer = true;
        let rules = Ruleset::render(&config(), &[port]);
        assert_eq!(
            rules_of(&rules, "ext-default/web/tcp/http"),
            ["jump mark-for-masquerade", "goto svc-default/web/tcp/http"]
        );
        assert_eq!(
            rules.node_ports.keys().collect::<Vec<_>>(),
            ["tcp . 30080", "tcp . 80"]
        );
        // externalTrafficPolicy Local without a local endpoint drops external traffic.
        let mut local = web(vec![endpoint(2, 8080)]);
        local.node_port = Some(30080);
        local.external_endpoints.clear();
        let rules = Ruleset::render(&config(), &[local]);
        assert_eq!(
            rules_of(&rules, "ext-default/web/tcp/http"),
            ["jump mark-for-masquerade", "drop"]
        );
    }

    #[test]
    fn a_second_claim_on_an_address_and_port_is_refused_not_fatal() {
        let first = web(vec![endpoint(2, 8080)]);
        let mut second = web(vec![endpoint(3, 8080)]);
        second.key = "default/zzz/tcp/http".into();
        let rules = Ruleset::render(&config(), &[second, first]);
        assert_eq!(
            rules
                .service_ips
                .get("10.43.0.5 . tcp . 80")
                .map(String::as_str),
            Some("svc-default/web/tcp/http")
        );
        assert_eq!(rules.conflicts.len(), 1, "{:?}", rules.conflicts);
    }

    #[test]
    fn udp_endpoints_dnat_udp() {
        let mut port = web(vec![endpoint(2, 53)]);
        port.protocol = Protocol::Udp;
        port.key = "kube-system/dns/udp/dns".into();
        let rules = Ruleset::render(&config(), &[port]);
        assert!(
            rules_of(&rules, "ep-kube-system/dns/udp/dns/10.42.0.2_53")
                .contains(&"meta l4proto udp dnat to 10.42.0.2:53".to_string())
        );
    }

    #[test]
    fn the_first_sync_replaces_the_table_and_later_ones_delete_what_went() {
        let before = Ruleset::render(&config(), &[web(vec![endpoint(2, 8080)])]);
        let first = before.transaction("berth0", None);
        assert!(
            first.starts_with("add table ip berth0\ndelete table ip berth0\nadd table ip berth0\n")
        );
        let after = Ruleset::render(&config(), &[web(vec![endpoint(3, 8080)])]);
        let next = after.transaction("berth0", Some(&before));
        assert!(!next.contains("delete table"));
        let flush = next
            .find("flush chain ip berth0 ep-default/web/tcp/http/10.42.0.2_8080")
            .expect("stale chain flushed");
        let delete = next
            .find("delete chain ip berth0 ep-default/web/tcp/http/10.42.0.2_8080")
            .expect("stale chain deleted");
        let element = next
            .find("add element ip berth0 service-ips { 10.43.0.5 . tcp . 80 : goto svc-default/web/tcp/http }")
            .expect("element");
        assert!(flush < element && element < delete, "{next}");
        // Rendering is independent of input order.
        let a = web(vec![endpoint(2, 8080)]);
        let mut b = web(vec![endpoint(3, 8080)]);
        b.key = "default/other/tcp/80".into();
        b.virtual_ips = vec![Ipv4Addr::new(10, 43, 0, 6)];
        assert_eq!(
            Ruleset::render(&config(), &[a.clone(), b.clone()]),
            Ruleset::render(&config(), &[b, a])
        );
    }
}
