//! Services (`ValidateService`, `ValidateServiceUpdate`, `ValidateServiceStatusUpdate`).
//!
//! Whether a cluster IP or node port is inside its range and free is not validation: as in
//! Kubernetes, the API server's allocator decides it when it allocates the value (only for
//! values a write newly takes, against the configured ranges), with the same wording.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{self, NameRule};
use super::names;
use super::pod::{dns1123_label, dns1123_subdomain, port_num_or_name, protocol};
use super::render::{self, Raw};
use super::{Errors, FieldError, Path};

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

fn is_headless(spec: &ServiceSpec) -> bool {
    matches!(spec.cluster_ips.as_deref(), Some([only]) if only == "None")
}

fn externally_accessible(spec: &ServiceSpec) -> bool {
    let t = s(&spec.type_);
    t == "LoadBalancer"
        || t == "NodePort"
        || (t == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|e| !e.is_empty()))
}

fn needs_health_check(spec: &ServiceSpec) -> bool {
    s(&spec.type_) == "LoadBalancer" && s(&spec.external_traffic_policy) == "Local"
}

/// ValidateService.
pub(crate) fn validate_service(svc: &Service) -> Errors {
    let meta_path = Path::new("metadata");
    let mut errs = meta::validate_object_meta(&svc.metadata, true, NameRule::Dns1035, &meta_path);
    errs.extend(validate_service_spec(svc));
    errs
}

fn validate_service_spec(svc: &Service) -> Errors {
    let mut errs = Vec::new();
    let default_spec = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let spec_path = Path::new("spec");
    let type_ = s(&spec.type_);
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let headless = is_headless(spec);

    let annotations = svc.metadata.annotations.as_ref();
    let hints = annotations.and_then(|a| a.get("service.kubernetes.io/topology-aware-hints"));
    let mode = annotations.and_then(|a| a.get("service.kubernetes.io/topology-mode"));
    if let (Some(h), Some(m)) = (hints, mode)
        && h != m
    {
        errs.push(FieldError::invalid(
            &meta_path_annotations().key("service.kubernetes.io/topology-mode"),
            m.as_str(),
            "must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
        ));
    }

    if ports.is_empty() && !headless && type_ != "ExternalName" {
        errs.push(FieldError::required(&spec_path.child("ports"), ""));
    }
    let first_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .map(String::as_str)
        .unwrap_or("");
    match type_ {
        "LoadBalancer" if headless => errs.push(FieldError::invalid(
            &spec_path.child("clusterIPs").index(0),
            first_ip,
            "may not be set to 'None' for LoadBalancer services",
        )),
        "NodePort" if headless => errs.push(FieldError::invalid(
            &spec_path.child("clusterIPs").index(0),
            first_ip,
            "may not be set to 'None' for NodePort services",
        )),
        "ExternalName" => {
            if spec.cluster_ips.as_ref().is_some_and(|c| !c.is_empty()) {
                errs.push(FieldError::forbidden(
                    &spec_path.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
                errs.push(FieldError::forbidden(
                    &spec_path.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden(
                    &spec_path.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let cname = s(&spec.external_name);
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required(&spec_path.child("externalName"), ""));
            } else {
                errs.extend(dns1123_subdomain(cname, &spec_path.child("externalName")));
            }
        }
        _ => {}
    }

    let mut port_names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            port,
            ports.len() > 1,
            &mut port_names,
            &spec_path.child("ports").index(i),
        ));
    }
    if let Some(sel) = &spec.selector {
        errs.extend(meta::validate_labels(
            Some(sel),
            &spec_path.child("selector"),
        ));
    }
    let affinity = s(&spec.session_affinity);
    match affinity {
        "" => errs.push(FieldError::required(
            &spec_path.child("sessionAffinity"),
            "",
        )),
        "ClientIP" | "None" => {}
        other => errs.push(FieldError::not_supported(
            &spec_path.child("sessionAffinity"),
            other,
            &["ClientIP", "None"],
        )),
    }
    let config_path = spec_path.child("sessionAffinityConfig");
    if affinity == "ClientIP" {
        match spec
            .session_affinity_config
            .as_ref()
            .map(|c| c.client_ip.as_ref())
        {
            None => errs.push(FieldError::required(
                &config_path,
                "when session affinity type is ClientIP",
            )),
            Some(None) => errs.push(FieldError::required(
                &config_path.child("clientIP"),
                "when session affinity type is ClientIP",
            )),
            Some(Some(c)) => match c.timeout_seconds {
                None => errs.push(FieldError::required(
                    &config_path.child("clientIP").child("timeoutSeconds"),
                    "when session affinity type is ClientIP",
                )),
                Some(t) if t <= 0 || t > 86400 => errs.push(FieldError::invalid(
                    &config_path.child("clientIP").child("timeoutSeconds"),
                    &t,
                    "must be greater than 0 and less than 86400",
                )),
                Some(_) => {}
            },
        }
    } else if affinity == "None" && spec.session_affinity_config.is_some() {
        errs.push(FieldError::forbidden(
            &config_path,
            "must not be set when session affinity is None",
        ));
    }

    errs.extend(cluster_ips_related(spec));

    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        let p = spec_path.child("externalIPs").index(i);
        let msgs = names::is_valid_ip(ip);
        if msgs.is_empty() {
            errs.extend(non_special_ip(ip, &p));
        } else {
            errs.extend(
                msgs.into_iter()
                    .map(|m| FieldError::invalid(&p, ip.as_str(), m)),
            );
        }
    }

    match type_ {
        "" => errs.push(FieldError::required(&spec_path.child("type"), "")),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        other => errs.push(FieldError::not_supported(
            &spec_path.child("type"),
            other,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    if type_ == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if port.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    &spec_path.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let np = port.node_port.unwrap_or(0);
        if np == 0 {
            continue;
        }
        let p = spec_path.child("ports").index(i).child("nodePort");
        if !node_ports.insert((s(&port.protocol), np)) {
            errs.push(FieldError::duplicate(&p, &np));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        if !seen.insert((s(&port.protocol), port.port)) {
            errs.push(FieldError::duplicate(
                &spec_path.child("ports").index(i),
                &Raw(format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:{}, NodePort:0}}",
                    render::quote(s(&port.protocol)),
                    port.port,
                    render::int_or_string(None)
                )),
            ));
        }
    }

    let ranges = spec.load_balancer_source_ranges.as_deref().unwrap_or(&[]);
    if !ranges.is_empty() {
        let p = spec_path.child("LoadBalancerSourceRanges");
        if type_ != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            errs.extend(
                names::is_valid_cidr(r)
                    .into_iter()
                    .map(|m| FieldError::invalid(&p.index(i), r, m)),
            );
        }
    } else if let Some(val) =
        annotations.and_then(|a| a.get("service.beta.kubernetes.io/load-balancer-source-ranges"))
    {
        let p =
            meta_path_annotations().key("service.beta.kubernetes.io/load-balancer-source-ranges");
        if type_ != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        let val = val.trim();
        if !val.is_empty() {
            for r in val.split(',') {
                let r = r.trim();
                errs.extend(
                    names::is_valid_cidr(r)
                        .into_iter()
                        .map(|m| FieldError::invalid(&p, r, m)),
                );
            }
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && type_ != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            &spec_path.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if type_ == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        // Kubernetes names this field without its `spec.` prefix.
        errs.push(FieldError::required(
            &Path::new("allocateLoadBalancerNodePorts"),
            "",
        ));
    }
    if let Some(class) = &spec.load_balancer_class {
        if type_ == "LoadBalancer" {
            errs.extend(meta::validate_qualified_name(
                class,
                &spec_path.child("loadBalancerClass"),
            ));
        } else {
            errs.push(FieldError::forbidden(
                &spec_path.child("loadBalancerClass"),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }

    let etp = s(&spec.external_traffic_policy);
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                &spec_path.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(
            &spec_path.child("externalTrafficPolicy"),
            "",
        ));
    } else if etp != "Cluster" && etp != "Local" {
        errs.push(FieldError::not_supported(
            &spec_path.child("externalTrafficPolicy"),
            etp,
            &["Cluster", "Local"],
        ));
    }
    let hc = spec.health_check_node_port.unwrap_or(0);
    if !needs_health_check(spec) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                &spec_path.child("healthCheckNodePort"),
                &hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc != 0 {
        // Kubernetes also requires the port here, but it validates after its allocator has
        // filled it in; berth's API server validates first and then allocates a missing one,
        // so a missing port is not an error at this point.
        for msg in names::is_valid_port_num(hc.into()) {
            errs.push(FieldError::invalid(
                &spec_path.child("healthCheckNodePort"),
                &hc,
                msg,
            ));
        }
    }
    match &spec.internal_traffic_policy {
        None if matches!(type_, "NodePort" | "LoadBalancer" | "ClusterIP") => {
            errs.push(FieldError::required(
                &spec_path.child("internalTrafficPolicy"),
                "",
            ));
        }
        Some(p) if p != "Cluster" && p != "Local" => {
            errs.push(FieldError::not_supported(
                &spec_path.child("internalTrafficPolicy"),
                p.as_str(),
                &["Cluster", "Local"],
            ));
        }
        _ => {}
    }
    errs.extend(FieldError::unless_supported(
        &spec_path.child("trafficDistribution"),
        spec.traffic_distribution.as_deref(),
        &["PreferClose"],
    ));
    errs
}

fn meta_path_annotations() -> Path {
    Path::new("metadata").child("annotations")
}

fn validate_service_port(
    sp: &ServicePort,
    require_name: bool,
    names_seen: &mut BTreeSet<String>,
    path: &Path,
) -> Errors {
    let mut errs = Vec::new();
    let name = s(&sp.name);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(dns1123_label(name, &path.child("name")));
        if !names_seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&path.child("name"), name));
        }
    }
    for msg in names::is_valid_port_num(sp.port.into()) {
        errs.push(FieldError::invalid(&path.child("port"), &sp.port, msg));
    }
    errs.extend(protocol(s(&sp.protocol), &path.child("protocol")));
    let target = sp.target_port.clone().unwrap_or(IntOrString::Int(0));
    errs.extend(port_num_or_name(&target, &path.child("targetPort")));
    if let Some(app) = &sp.app_protocol {
        errs.extend(meta::validate_qualified_name(
            app,
            &path.child("appProtocol"),
        ));
    }
    errs
}

/// ValidateNonSpecialIP.
pub(crate) fn non_special_ip(ip: &str, path: &Path) -> Errors {
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return vec![FieldError::invalid(path, ip, "must be a valid IP address")];
    };
    let mut errs = Vec::new();
    if addr.is_unspecified() {
        errs.push(FieldError::invalid(
            path,
            ip,
            format!("may not be unspecified ({ip})"),
        ));
    }
    if addr.is_loopback() {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    let link_local = match addr {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    let link_local_multicast = match addr {
        std::net::IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    };
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// ValidateServiceClusterIPsRelatedFields.
fn cluster_ips_related(spec: &ServiceSpec) -> Errors {
    let mut errs = Vec::new();
    if s(&spec.type_) == "ExternalName" {
        return errs;
    }
    let spec_path = Path::new("spec");
    let ips_path = spec_path.child("clusterIPs");
    let cluster_ip = s(&spec.cluster_ip);
    let ips = spec.cluster_ips.as_deref().unwrap_or(&[]);
    let ips_rendered = || Raw(render::string_slice(spec.cluster_ips.as_deref()));
    if !cluster_ip.is_empty() {
        match ips.first() {
            None => errs.push(FieldError::required(&ips_path, "")),
            Some(first) if first != cluster_ip => {
                errs.push(FieldError::invalid(
                    &ips_path,
                    &ips_rendered(),
                    "first value must match `clusterIP`",
                ));
            }
            Some(_) => {}
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            &ips_path,
            &ips_rendered(),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let families = spec.ip_families.as_deref().unwrap_or(&[]);
    let mut seen = BTreeSet::new();
    for (i, f) in families.iter().enumerate() {
        let p = spec_path.child("ipFamilies").index(i);
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(&p, f.as_str(), &["IPv4", "IPv6"]));
        }
        if !seen.insert(f.as_str()) {
            errs.push(FieldError::duplicate(&p, f.as_str()));
        }
    }
    if let Some(policy) = &spec.ip_family_policy
        && !matches!(
            policy.as_str(),
            "SingleStack" | "PreferDualStack" | "RequireDualStack"
        )
    {
        errs.push(FieldError::not_supported(
            &spec_path.child("ipFamilyPolicy"),
            policy.as_str(),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        ));
    }
    let mut invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                invalid = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    &ips_rendered(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let msgs = names::is_valid_ip(ip);
        invalid |= !msgs.is_empty();
        errs.extend(
            msgs.into_iter()
                .map(|m| FieldError::invalid(&ips_path.index(i), ip.as_str(), m)),
        );
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            &ips_rendered(),
            "may only hold up to 2 values",
        ));
    }
    if invalid {
        return errs;
    }
    if ips.len() > 1 {
        let v6 = |ip: &String| ip.parse::<std::net::Ipv6Addr>().is_ok();
        if v6(&ips[0]) == v6(&ips[1]) {
            errs.push(FieldError::invalid(
                &ips_path,
                &ips_rendered(),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) {
        for (i, (ip, family)) in ips.iter().zip(families).enumerate() {
            let is_v6 = ip.parse::<std::net::Ipv6Addr>().is_ok();
            if family == "IPv4" && is_v6 {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if family == "IPv6" && !is_v6 {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// ValidateServiceUpdate. Kubernetes copies allocated values (cluster IPs, node ports) from the
/// stored Service into an update that leaves them out before validating; an absent value is
/// therefore treated as unchanged here, and the server is expected to carry it over.
pub(crate) fn validate_service_update(new: &Service, old: &Service) -> Errors {
    let mut errs =
        meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    let default_spec = ServiceSpec::default();
    let old_spec = old.spec.as_ref().unwrap_or(&default_spec);
    let mut effective = new.clone();
    {
        let spec = effective.spec.get_or_insert_with(Default::default);
        let same_kind =
            (s(&spec.type_) == "ExternalName") == (s(&old_spec.type_) == "ExternalName");
        if same_kind
            && s(&spec.cluster_ip).is_empty()
            && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty)
        {
            spec.cluster_ip.clone_from(&old_spec.cluster_ip);
            spec.cluster_ips.clone_from(&old_spec.cluster_ips);
        }
        if same_kind && spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            spec.ip_families.clone_from(&old_spec.ip_families);
        }
        // Node ports and the health check port only while the Service keeps needing them
        // (upstream's patchAllocatedValues): a NodePort turned ClusterIP gives them up.
        let node_port_type =
            |s: &ServiceSpec| matches!(s.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let keeps_node_ports = node_port_type(spec) && node_port_type(old_spec);
        for port in spec.ports.iter_mut().flatten().filter(|_| keeps_node_ports) {
            if port.node_port.unwrap_or(0) == 0
                && let Some(o) = old_spec
                    .ports
                    .iter()
                    .flatten()
                    .find(|o| o.port == port.port && o.protocol == port.protocol)
            {
                port.node_port = o.node_port;
            }
        }
        if spec.health_check_node_port.unwrap_or(0) == 0
            && needs_health_check(spec)
            && needs_health_check(old_spec)
        {
            spec.health_check_node_port = old_spec.health_check_node_port;
        }
    }
    let new_spec = effective.spec.as_ref().unwrap_or(&default_spec);
    errs.extend(upgrade_downgrade_cluster_ips(old_spec, new_spec));
    errs.extend(upgrade_downgrade_ip_families(old_spec, new_spec));
    if s(&old_spec.type_) == "LoadBalancer"
        && s(&new_spec.type_) == "LoadBalancer"
        && old_spec.load_balancer_class != new_spec.load_balancer_class
    {
        errs.push(FieldError::invalid(
            &Path::new("spec").child("loadBalancerClass"),
            &Raw(render::opt_str(new_spec.load_balancer_class.as_deref())),
            "may not change once set",
        ));
    }
    if needs_health_check(old_spec)
        && needs_health_check(new_spec)
        && old_spec.health_check_node_port != new_spec.health_check_node_port
    {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("healthCheckNodePort"),
            "field is immutable",
        ));
    }
    errs.extend(validate_service_spec(&effective));
    errs
}

fn upgrade_downgrade_cluster_ips(old: &ServiceSpec, new: &ServiceSpec) -> Errors {
    let mut errs = Vec::new();
    if s(&new.type_) == "ExternalName" || s(&old.type_) == "ExternalName" {
        return errs;
    }
    if is_headless(old) && is_headless(new) {
        return errs;
    }
    let o = old.cluster_ips.as_deref().unwrap_or(&[]);
    let n = new.cluster_ips.as_deref().unwrap_or(&[]);
    let path = Path::new("spec").child("clusterIPs");
    let rendered = Raw(render::string_slice(new.cluster_ips.as_deref()));
    if o.len() == n.len() {
        for (i, ip) in o.iter().enumerate() {
            if ip != &n[i] {
                errs.push(FieldError::invalid(
                    &path.index(i),
                    &rendered,
                    "may not change once set",
                ));
            }
        }
    } else if o.len() > n.len() {
        if n.is_empty() {
            errs.push(FieldError::invalid(
                &path.index(0),
                &rendered,
                "primary clusterIP can not be unset",
            ));
        }
        if !o.is_empty() && !n.is_empty() && n[0] != o[0] {
            errs.push(FieldError::invalid(
                &path.index(0),
                &rendered,
                "may not change once set",
            ));
        }
        if n.len() == 1 && s(&new.ip_family_policy) != "SingleStack" {
            errs.push(FieldError::invalid(
                &Path::new("spec").child("ipFamilyPolicy"),
                &Raw(render::opt_str(new.ip_family_policy.as_deref())),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if !o.is_empty() && n[0] != o[0] {
        errs.push(FieldError::invalid(
            &path.index(0),
            &rendered,
            "may not change once set",
        ));
    }
    errs
}

fn upgrade_downgrade_ip_families(old: &ServiceSpec, new: &ServiceSpec) -> Errors {
    let mut errs = Vec::new();
    if s(&new.type_) == "ExternalName" || s(&old.type_) == "ExternalName" {
        return errs;
    }
    if is_headless(old) != is_headless(new) || is_headless(new) {
        return errs;
    }
    let o = old.ip_families.as_deref().unwrap_or(&[]);
    let n = new.ip_families.as_deref().unwrap_or(&[]);
    let path = Path::new("spec").child("ipFamilies").index(0);
    if o.len() == n.len() {
        if o != n {
            errs.push(FieldError::invalid(
                &path,
                &Raw(render::string_slice(Some(n))),
                "may not change once set",
            ));
        }
    } else if o.len() > n.len() {
        if !n.is_empty() && n[0] != o[0] {
            errs.push(FieldError::invalid(
                &path,
                &Raw(render::string_slice(new.cluster_ips.as_deref())),
                "may not change once set",
            ));
        }
        if n.len() == 1 && s(&new.ip_family_policy) != "SingleStack" {
            errs.push(FieldError::invalid(
                &Path::new("spec").child("ipFamilyPolicy"),
                &Raw(render::opt_str(new.ip_family_policy.as_deref())),
                "must be set to 'SingleStack' when releasing the secondary ipFamily",
            ));
        }
    } else if !o.is_empty() && n[0] != o[0] {
        errs.push(FieldError::invalid(
            &path,
            &Raw(render::string_slice(new.cluster_ips.as_deref())),
            "may not change once set",
        ));
    }
    errs
}

/// ValidateServiceStatusUpdate.
pub(crate) fn validate_service_status_update(new: &Service, old: &Service) -> Errors {
    let mut errs =
        meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    let type_ = new
        .spec
        .as_ref()
        .map(|s| s.type_.as_deref().unwrap_or(""))
        .unwrap_or("");
    let ingress = new
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or(&[]);
    let path = Path::new("status").child("loadBalancer").child("ingress");
    if type_ != "LoadBalancer" && !ingress.is_empty() {
        errs.push(FieldError::forbidden(
            &path,
            "may only be used when `spec.type` is 'LoadBalancer'",
        ));
        return errs;
    }
    for (i, ing) in ingress.iter().enumerate() {
        let p = path.index(i);
        let ip = s(&ing.ip);
        if !ip.is_empty() {
            errs.extend(
                names::is_valid_ip(ip)
                    .into_iter()
                    .map(|m| FieldError::invalid(&p.child("ip"), ip, m)),
            );
        }
        match (&ing.ip_mode, ip.is_empty()) {
            (None, false) => errs.push(FieldError::required(
                &p.child("ipMode"),
                "must be specified when `ip` is set",
            )),
            (Some(_), true) => errs.push(FieldError::forbidden(
                &p.child("ipMode"),
                "may not be specified when `ip` is not set",
            )),
            (Some(m), false) if m != "VIP" && m != "Proxy" => {
                errs.push(FieldError::not_supported(
                    &p.child("ipMode"),
                    m.as_str(),
                    &["Proxy", "VIP"],
                ));
            }
            _ => {}
        }
        let host = s(&ing.hostname);
        if !host.is_empty() {
            errs.extend(dns1123_subdomain(host, &p.child("hostname")));
            if host.parse::<std::net::IpAddr>().is_ok() {
                errs.push(FieldError::invalid(
                    &p.child("hostname"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn messages(errs: &Errors) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn good() -> serde_json::Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]
            }
        })
    }

    #[test]
    fn good_service_passes() {
        assert_eq!(
            messages(&validate_service(&svc(good()))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_fields_are_reported_like_kubernetes() {
        let mut v = good();
        v["metadata"]["name"] = json!("1web");
        v["spec"]["ports"] = json!([
            {"name": "a", "port": 70000, "protocol": "TCP", "targetPort": 80},
            {"port": 81, "protocol": "HTTP", "targetPort": 80}
        ]);
        v["spec"]["type"] = json!("Bogus");
        v["spec"]["sessionAffinity"] = json!("Sticky");
        assert_eq!(
            messages(&validate_service(&svc(v))),
            vec![
                "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Required value",
                "spec.ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
                "spec.type: Unsupported value: \"Bogus\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            ]
        );
    }

    #[test]
    fn ports_required_unless_headless_or_external_name() {
        let mut v = good();
        v["spec"]["ports"] = json!([]);
        assert_eq!(
            messages(&validate_service(&svc(v.clone()))),
            vec!["spec.ports: Required value"]
        );
        v["spec"]["clusterIP"] = json!("None");
        v["spec"]["clusterIPs"] = json!(["None"]);
        assert!(validate_service(&svc(v)).is_empty());
        let ext = json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"}});
        assert!(validate_service(&svc(ext)).is_empty());
    }

    #[test]
    fn duplicate_ports_and_node_ports() {
        let mut v = good();
        v["spec"]["type"] = json!("NodePort");
        v["spec"]["externalTrafficPolicy"] = json!("Cluster");
        v["spec"]["ports"] = json!([
            {"name": "a", "port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30080},
            {"name": "b", "port": 80, "protocol": "TCP", "targetPort": 80},
            {"name": "c", "port": 81, "protocol": "TCP", "targetPort": 80, "nodePort": 30080}
        ]);
        assert_eq!(
            messages(&validate_service(&svc(v))),
            vec![
                "spec.ports[2].nodePort: Duplicate value: 30080",
                "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
            ]
        );
    }

    #[test]
    fn node_port_forbidden_for_cluster_ip() {
        let mut v = good();
        v["spec"]["ports"][0]["nodePort"] = json!(30080);
        assert_eq!(
            messages(&validate_service(&svc(v))),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
    }

    #[test]
    fn cluster_ip_is_immutable_but_may_be_omitted() {
        let mut old = good();
        old["spec"]["clusterIP"] = json!("10.96.0.10");
        old["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.11");
        new["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
        assert_eq!(
            messages(&validate_service_update(&svc(new), &svc(old.clone()))),
            vec![
                "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"
            ]
        );
        let mut omitted = old.clone();
        omitted["spec"].as_object_mut().unwrap().remove("clusterIP");
        omitted["spec"]
            .as_object_mut()
            .unwrap()
            .remove("clusterIPs");
        assert!(validate_service_update(&svc(omitted), &svc(old)).is_empty());
    }

    #[test]
    fn mismatched_cluster_ips() {
        let mut v = good();
        v["spec"]["clusterIP"] = json!("10.0.0.1");
        v["spec"]["clusterIPs"] = json!(["10.0.0.2"]);
        assert_eq!(
            messages(&validate_service(&svc(v))),
            vec![
                "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: first value must match `clusterIP`"
            ]
        );
    }

    #[test]
    fn load_balancer_status_only_for_load_balancers() {
        let old = svc(good());
        let mut new = good();
        new["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}});
        assert_eq!(
            messages(&validate_service_status_update(&svc(new), &old)),
            vec![
                "status.loadBalancer.ingress: Forbidden: may only be used when `spec.type` is 'LoadBalancer'"
            ]
        );
    }
}
