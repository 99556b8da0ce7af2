//! What the proxy enforces, free of Kubernetes types and of nftables: one [`ServicePort`] per
//! port of each proxied Service, with the endpoints traffic may go to. [`super::services`]
//! builds it from Services and EndpointSlices; [`super::nftables`] renders it.

use std::fmt;
use std::net::Ipv4Addr;

/// A transport protocol a Service port can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The Service's spelling (`TCP`, the default when absent).
    pub fn from_kubernetes(name: Option<&str>) -> Option<Protocol> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    /// nftables' spelling, also used in chain names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// One address and port a Service port's traffic can be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// One port of one Service, as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `<namespace>/<service>/<protocol>/<port name or number>`: unique, and a valid part of
    /// an nftables chain name (namespace, Service and port names are DNS labels).
    pub key: String,
    pub protocol: Protocol,
    /// spec.port.
    pub port: u16,
    /// The cluster IPs and spec.externalIPs: destinations rewritten wherever traffic comes from.
    pub virtual_ips: Vec<Ipv4Addr>,
    /// spec.ports[].nodePort: rewritten on every local address of the host.
    pub node_port: Option<u16>,
    /// A LoadBalancer Service without a loadBalancerClass: `port` on every local address of
    /// the host (what k3s's ServiceLB exposes).
    pub load_balancer: bool,
    /// Endpoints for traffic to the cluster IPs (internalTrafficPolicy applied).
    pub endpoints: Vec<Endpoint>,
    /// Endpoints for traffic through the node port and load balancer (externalTrafficPolicy
    /// applied); equal to `endpoints` in the common case.
    pub external_endpoints: Vec<Endpoint>,
    /// sessionAffinity ClientIP: a client keeps its endpoint for this many seconds.
    pub affinity_seconds: Option<u32>,
}
