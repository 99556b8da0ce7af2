//! discovery.k8s.io EndpointSlices, coordination.k8s.io Leases and events.k8s.io Events.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;

use super::core_kinds::{LegacyEvent, legacy_event_rules};
use super::meta::{self, IMMUTABLE, NameRule};
use super::names;
use super::pod::dns1123_label;
use super::render::{self, Null, Raw};
use super::service::non_special_ip;
use super::{Errors, FieldError, Path};

const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;
const MAX_TOPOLOGY_LABELS: usize = 16;
const MAX_ZONE_HINTS: usize = 8;

fn meta_path() -> Path {
    Path::new("metadata")
}

fn endpoint_slice_body(es: &EndpointSlice) -> Errors {
    let mut errs = Vec::new();
    let address_type = es.address_type.as_str();
    match address_type {
        "" => errs.push(FieldError::required(&Path::new("addressType"), "")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => errs.push(FieldError::not_supported(
            &Path::new("addressType"),
            other,
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    let ep_path = Path::new("endpoints");
    if es.endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many(
            &ep_path,
            es.endpoints.len(),
            MAX_ENDPOINTS,
        ));
    } else {
        for (i, ep) in es.endpoints.iter().enumerate() {
            let p = ep_path.index(i);
            let ap = p.child("addresses");
            if ep.addresses.is_empty() {
                errs.push(FieldError::required(&ap, "must contain at least 1 address"));
            } else if ep.addresses.len() > MAX_ADDRESSES {
                errs.push(FieldError::too_many(&ap, ep.addresses.len(), MAX_ADDRESSES));
            }
            for (j, addr) in ep.addresses.iter().enumerate() {
                let aip = ap.index(j);
                match address_type {
                    "IPv4" => {
                        if addr.parse::<std::net::Ipv4Addr>().is_err() {
                            errs.push(FieldError::invalid(
                                &aip,
                                addr.as_str(),
                                "must be a valid IPv4 address",
                            ));
                        } else {
                            errs.extend(non_special_ip(addr, &aip));
                        }
                    }
                    "IPv6" => {
                        if addr.parse::<std::net::Ipv6Addr>().is_err() {
                            errs.push(FieldError::invalid(
                                &aip,
                                addr.as_str(),
                                "must be a valid IPv6 address",
                            ));
                        } else {
                            errs.extend(non_special_ip(addr, &aip));
                        }
                    }
                    "FQDN" => errs.extend(fqdn(addr, &aip)),
                    _ => {}
                }
            }
            if let Some(n) = &ep.node_name {
                for msg in names::name_is_dns_subdomain(n, false) {
                    errs.push(FieldError::invalid(&p.child("nodeName"), n.as_str(), msg));
                }
            }
            let tp = p.child("deprecatedTopology");
            let topology = ep.deprecated_topology.as_ref();
            let n = topology.map_or(0, |t| t.len());
            if n > MAX_TOPOLOGY_LABELS {
                errs.push(FieldError::too_many(&tp, n, MAX_TOPOLOGY_LABELS));
            }
            errs.extend(meta::validate_labels(topology, &tp));
            if let Some(h) = &ep.hostname {
                errs.extend(dns1123_label(h, &p.child("hostname")));
            }
            if let Some(hints) = &ep.hints {
                let fz = p.child("hints").child("forZones");
                let zones = hints.for_zones.as_deref().unwrap_or(&[]);
                if zones.len() > MAX_ZONE_HINTS {
                    errs.push(FieldError::too_many(&fz, zones.len(), MAX_ZONE_HINTS));
                } else {
                    let mut seen = BTreeSet::new();
                    for (k, z) in zones.iter().enumerate() {
                        let zp = fz.index(k).child("name");
                        if !seen.insert(z.name.as_str()) {
                            errs.push(FieldError::duplicate(&zp, z.name.as_str()));
                        }
                        for msg in names::is_valid_label_value(&z.name) {
                            errs.push(FieldError::invalid(&zp, z.name.as_str(), msg));
                        }
                    }
                }
            }
        }
    }
    let ports = es.ports.as_deref().unwrap_or(&[]);
    let pp = Path::new("ports");
    if ports.len() > MAX_PORTS {
        errs.push(FieldError::too_many(&pp, ports.len(), MAX_PORTS));
        return errs;
    }
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = pp.index(i);
        let name = port.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            errs.extend(dns1123_label(name, &p.child("name")));
        }
        if !seen.insert(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        }
        match &port.protocol {
            None => errs.push(FieldError::required(&p.child("protocol"), "")),
            Some(proto) if !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP") => {
                errs.push(FieldError::not_supported(
                    &p.child("protocol"),
                    proto.as_str(),
                    &["SCTP", "TCP", "UDP"],
                ));
            }
            Some(_) => {}
        }
        if let Some(app) = &port.app_protocol {
            errs.extend(meta::validate_qualified_name(app, &p.child("appProtocol")));
        }
    }
    errs
}

/// IsFullyQualifiedDomainName.
fn fqdn(name: &str, path: &Path) -> Errors {
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let msgs = names::is_dns1123_subdomain(name);
    if !msgs.is_empty() {
        return vec![FieldError::invalid(path, name, msgs.join(","))];
    }
    if name.split('.').count() < 2 {
        return vec![FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let msgs = names::is_dns1123_label(label);
        if !msgs.is_empty() {
            return vec![FieldError::invalid(path, label, msgs.join(","))];
        }
    }
    Vec::new()
}

pub(crate) fn validate_endpoint_slice(es: &EndpointSlice, with_meta: bool) -> Errors {
    let mut errs =
        meta::validate_object_meta_if(with_meta, &es.metadata, true, NameRule::Subdomain);
    errs.extend(endpoint_slice_body(es));
    errs
}

/// ValidateEndpointSliceUpdate: addressType is fixed.
pub(crate) fn validate_endpoint_slice_update(new: &EndpointSlice, old: &EndpointSlice) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(validate_endpoint_slice(new, false));
    meta::immutable_str(
        &mut errs,
        &new.address_type,
        &old.address_type,
        &Path::new("addressType"),
    );
    errs
}

fn lease_spec(lease: &Lease) -> Errors {
    let mut errs = Vec::new();
    let Some(spec) = &lease.spec else {
        return errs;
    };
    let path = Path::new("spec");
    if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            &path.child("leaseDurationSeconds"),
            &d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.lease_transitions.filter(|t| *t < 0) {
        errs.push(FieldError::invalid(
            &path.child("leaseTransitions"),
            &t,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(strategy) = &spec.strategy
        && strategy != "OldestEmulationVersion"
    {
        errs.push(FieldError::not_supported(
            &path.child("strategy"),
            strategy.as_str(),
            &["OldestEmulationVersion"],
        ));
    }
    if spec
        .preferred_holder
        .as_deref()
        .is_some_and(|p| !p.is_empty())
        && spec.strategy.as_deref().unwrap_or("").is_empty()
    {
        errs.push(FieldError::forbidden(
            &path.child("preferredHolder"),
            "may only be specified if `strategy` is defined",
        ));
    }
    errs
}

pub(crate) fn validate_lease(lease: &Lease, with_meta: bool) -> Errors {
    let mut errs =
        meta::validate_object_meta_if(with_meta, &lease.metadata, true, NameRule::Subdomain);
    errs.extend(lease_spec(lease));
    errs
}

pub(crate) fn validate_lease_update(new: &Lease, old: &Lease) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(lease_spec(new));
    errs
}

/// The legacy rules Kubernetes applies to every Event, in events.k8s.io terms (regarding =
/// involvedObject, note = message); field names are the core ones, as Kubernetes reports them.
fn legacy(e: &Event) -> Errors {
    fn s(o: &Option<String>) -> &str {
        o.as_deref().unwrap_or("")
    }
    legacy_event_rules(&LegacyEvent {
        namespace: s(&e.metadata.namespace),
        involved_namespace: e
            .regarding
            .as_ref()
            .and_then(|r| r.namespace.as_deref())
            .unwrap_or(""),
        has_event_time: e.event_time.is_some(),
        reporting_controller: s(&e.reporting_controller),
        reporting_instance: s(&e.reporting_instance),
        action: s(&e.action),
        reason: s(&e.reason),
        message: s(&e.note),
    })
}

fn series(e: &Event) -> Errors {
    let mut errs = Vec::new();
    if let Some(s) = &e.series
        && s.count < 2
    {
        errs.push(FieldError::invalid(
            &Path::new("series.count"),
            "",
            "should be at least 2",
        ));
    }
    errs
}

/// ValidateEventCreate for events.k8s.io/v1: the legacy rules plus the strict ones.
pub(crate) fn validate_events_event(e: &Event, with_meta: bool) -> Errors {
    let mut errs = legacy(e);
    errs.extend(meta::validate_object_meta_if(
        with_meta,
        &e.metadata,
        true,
        NameRule::Subdomain,
    ));
    errs.extend(series(e));
    if e.event_time.is_none() {
        errs.push(FieldError::required(&Path::new("eventTime"), ""));
    }
    let type_ = e.type_.as_deref().unwrap_or("");
    if type_ != "Normal" && type_ != "Warning" {
        errs.push(FieldError::invalid(
            &Path::new("type"),
            "",
            format!("has invalid value: {type_}"),
        ));
    }
    for (set, name) in [
        (e.deprecated_first_timestamp.is_some(), "firstTimestamp"),
        (e.deprecated_last_timestamp.is_some(), "lastTimestamp"),
        (e.deprecated_count.is_some_and(|c| c != 0), "count"),
        (
            e.deprecated_source.as_ref().is_some_and(|s| {
                s.component.as_deref().is_some_and(|c| !c.is_empty())
                    || s.host.as_deref().is_some_and(|h| !h.is_empty())
            }),
            "source",
        ),
    ] {
        if set {
            errs.push(FieldError::invalid(
                &Path::new(name),
                "",
                "needs to be unset",
            ));
        }
    }
    errs
}

/// ValidateEventUpdate for events.k8s.io/v1: what happened may not be rewritten.
pub(crate) fn validate_events_event_update(new: &Event, old: &Event) -> Errors {
    let mut errs = legacy(new);
    errs.extend(meta::validate_object_meta_update(
        &new.metadata,
        &old.metadata,
        &meta_path(),
    ));
    if new.series != old.series {
        errs.extend(series(new));
    }
    let mut immutable = |changed: bool, name: &str, value: Raw| {
        if changed {
            errs.push(FieldError::invalid(&Path::new(name), &value, IMMUTABLE));
        }
    };
    let opt = |v: &Option<String>| Raw(render::opt_str(v.as_deref()));
    immutable(
        new.regarding != old.regarding,
        "involvedObject",
        Raw(render::json(&new.regarding)),
    );
    immutable(new.reason != old.reason, "reason", opt(&new.reason));
    immutable(new.note != old.note, "message", opt(&new.note));
    immutable(
        new.deprecated_source != old.deprecated_source,
        "source",
        Raw(render::json(&new.deprecated_source)),
    );
    immutable(
        new.deprecated_first_timestamp != old.deprecated_first_timestamp,
        "firstTimestamp",
        Raw(new
            .deprecated_first_timestamp
            .as_ref()
            .map_or_else(|| super::GoValue::go(&Null), render::time)),
    );
    immutable(
        new.deprecated_last_timestamp != old.deprecated_last_timestamp,
        "lastTimestamp",
        Raw(new
            .deprecated_last_timestamp
            .as_ref()
            .map_or_else(|| super::GoValue::go(&Null), render::time)),
    );
    immutable(
        new.deprecated_count != old.deprecated_count,
        "count",
        Raw(new.deprecated_count.unwrap_or(0).to_string()),
    );
    immutable(new.type_ != old.type_, "type", opt(&new.type_));
    immutable(
        new.event_time != old.event_time,
        "eventTime",
        Raw(render::json(&new.event_time)),
    );
    immutable(new.action != old.action, "action", opt(&new.action));
    immutable(
        new.related != old.related,
        "related",
        Raw(render::json(&new.related)),
    );
    immutable(
        new.reporting_controller != old.reporting_controller,
        "reportingController",
        opt(&new.reporting_controller),
    );
    immutable(
        new.reporting_instance != old.reporting_instance,
        "reportingInstance",
        opt(&new.reporting_instance),
    );
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errs: &Errors) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn endpoint_slices() {
        let good = json!({"metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.5"]}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
        assert!(validate_endpoint_slice(&slice(good.clone()), true).is_empty());
        let bad = json!({"metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["fe80::1"]}, {"addresses": []}]});
        assert_eq!(
            messages(&validate_endpoint_slice(&slice(bad), true)),
            vec![
                "endpoints[0].addresses[0]: Invalid value: \"fe80::1\": must be a valid IPv4 address",
                "endpoints[1].addresses: Required value: must contain at least 1 address",
            ]
        );
        let mut v6 = good.clone();
        v6["addressType"] = json!("IPv6");
        v6["endpoints"] = json!([{"addresses": ["2001:db8::5"]}]);
        assert_eq!(
            messages(&validate_endpoint_slice_update(&slice(v6), &slice(good))),
            vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
        );
    }

    #[test]
    fn leases() {
        let l: Lease = serde_json::from_value(
            json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"},
            "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}}),
        )
        .unwrap();
        assert_eq!(
            messages(&validate_lease(&l, true)),
            vec![
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn events_k8s_io() {
        let e: Event =
            serde_json::from_value(json!({"metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "berth.dev/kubelet",
            "reportingInstance": "node-1", "action": "Pulled", "reason": "Pulled", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}}))
            .unwrap();
        assert_eq!(
            messages(&validate_events_event(&e, true)),
            Vec::<String>::new()
        );
        let mut bad = e.clone();
        bad.type_ = Some("Info".to_string());
        bad.action = None;
        assert_eq!(
            messages(&validate_events_event(&bad, true)),
            vec![
                "action: Required value",
                "type: Invalid value: \"\": has invalid value: Info"
            ]
        );
    }
}
