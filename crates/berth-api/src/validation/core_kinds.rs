//! The small core/v1 kinds: Namespace, Node, Endpoints, ConfigMap, Secret, Event and
//! ServiceAccount.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, EndpointAddress, Endpoints, Event, Namespace, Node, Secret, ServiceAccount,
};

use super::meta::{self, NameRule};
use super::names;
use super::pod::{dns1123_label, protocol};
use super::render::{self, Raw};
use super::service::non_special_ip;
use super::{Errors, FieldError, Path};

/// The largest ConfigMap or Secret payload.
pub(crate) const MAX_SECRET_SIZE: usize = 1024 * 1024;

fn meta_path() -> Path {
    Path::new("metadata")
}

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

pub(crate) fn validate_namespace(ns: &Namespace) -> Errors {
    let mut errs = meta::validate_object_meta(&ns.metadata, false, NameRule::Label, &meta_path());
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_deref())
        .unwrap_or(&[]);
    let path = Path::new("spec").child("finalizers");
    for f in finalizers {
        for msg in names::is_qualified_name(f) {
            errs.push(FieldError::invalid(&path, f.as_str(), msg));
        }
        errs.extend(meta::kube_finalizer_name(f, &path));
    }
    errs
}

pub(crate) fn validate_namespace_update(new: &Namespace, old: &Namespace) -> Errors {
    meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path())
}

pub(crate) fn validate_namespace_status_update(new: &Namespace, old: &Namespace) -> Errors {
    let mut errs = validate_namespace_update(new, old);
    let phase = new.status.as_ref().map_or("", |st| s(&st.phase));
    let path = Path::new("status").child("Phase");
    if new.metadata.deletion_timestamp.is_none() {
        if phase != "Active" {
            errs.push(FieldError::invalid(
                &path,
                phase,
                "may only be 'Active' if `deletionTimestamp` is empty",
            ));
        }
    } else if phase != "Terminating" {
        errs.push(FieldError::invalid(
            &path,
            phase,
            "may only be 'Terminating' if `deletionTimestamp` is not empty",
        ));
    }
    errs
}

fn node_common(node: &Node) -> Errors {
    let mut errs = Vec::new();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    // Kubernetes reports node taints under metadata.taints.
    let path = meta_path().child("taints");
    let mut unique: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, t) in taints.iter().enumerate() {
        let p = path.index(i);
        errs.extend(meta::validate_label_name(&t.key, &p.child("key")));
        let value = s(&t.value);
        let msgs = names::is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("value"),
                value,
                msgs.join(";"),
            ));
        }
        match t.effect.as_str() {
            "" => errs.push(FieldError::required(&p.child("effect"), "")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(FieldError::not_supported(
                &p.child("effect"),
                other,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
        if !unique
            .entry(t.effect.as_str())
            .or_default()
            .insert(t.key.as_str())
        {
            let mut e = FieldError::duplicate(&p, &Raw(render::json(t)));
            e.detail = "taints must be unique by key and effect pair".to_string();
            errs.push(e);
        }
    }
    let status = node.status.as_ref();
    for (list, name) in [
        (status.and_then(|s| s.capacity.as_ref()), "capacity"),
        (status.and_then(|s| s.allocatable.as_ref()), "allocatable"),
    ] {
        for (k, q) in list.into_iter().flatten() {
            let p = Path::new("status").child(name).child(k);
            let (_, e) = super::pod::quantity_value(k, &q.0, &p);
            errs.extend(e);
        }
    }
    let cidrs = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidrs.as_deref())
        .unwrap_or(&[]);
    let cidr_path = Path::new("spec").child("podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        errs.extend(
            names::is_valid_cidr(c)
                .into_iter()
                .map(|m| FieldError::invalid(&cidr_path.index(i), c.as_str(), m)),
        );
    }
    if cidrs.len() > 1 {
        let v6 = |c: &String| c.contains(':');
        if cidrs.len() > 2 || v6(&cidrs[0]) == v6(&cidrs[1]) {
            errs.push(FieldError::invalid(
                &cidr_path,
                &Raw(render::string_slice(Some(cidrs))),
                "may specify no more than one CIDR for each IP family",
            ));
        }
    }
    errs
}

pub(crate) fn validate_node(node: &Node) -> Errors {
    let mut errs =
        meta::validate_object_meta(&node.metadata, false, NameRule::Subdomain, &meta_path());
    errs.extend(node_common(node));
    errs
}

/// ValidateNodeUpdate; also what a node status write is checked with, as in Kubernetes.
pub(crate) fn validate_node_update(new: &Node, old: &Node) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(node_common(new));
    let mut seen = BTreeSet::new();
    for (i, a) in new
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .enumerate()
    {
        if !seen.insert((a.type_.as_str(), a.address.as_str())) {
            errs.push(FieldError::duplicate(
                &Path::new("status").child("addresses").index(i),
                &Raw(format!(
                    "core.NodeAddress{{Type:{}, Address:{}}}",
                    render::quote(&a.type_),
                    render::quote(&a.address)
                )),
            ));
        }
    }
    let old_spec = old.spec.clone().unwrap_or_default();
    let new_spec = new.spec.clone().unwrap_or_default();
    let old_cidrs = old_spec.pod_cidrs.unwrap_or_default();
    if !old_cidrs.is_empty() && old_cidrs != new_spec.pod_cidrs.unwrap_or_default() {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("podCIDRs"),
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    if !s(&old_spec.provider_id).is_empty() && old_spec.provider_id != new_spec.provider_id {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("providerID"),
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    if old_spec.external_id != new_spec.external_id {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("externalID"),
            "may not be updated",
        ));
    }
    errs
}

fn endpoint_address(a: &EndpointAddress, path: &Path) -> Errors {
    let mut errs: Errors = names::is_valid_ip(&a.ip)
        .into_iter()
        .map(|m| FieldError::invalid(&path.child("ip"), a.ip.as_str(), m))
        .collect();
    if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
        errs.extend(dns1123_label(h, &path.child("hostname")));
    }
    if let Some(n) = &a.node_name {
        for msg in names::name_is_dns_subdomain(n, false) {
            errs.push(FieldError::invalid(
                &path.child("nodeName"),
                n.as_str(),
                msg,
            ));
        }
    }
    errs.extend(non_special_ip(&a.ip, &path.child("ip")));
    errs
}

fn endpoints_body(ep: &Endpoints) -> Errors {
    let mut errs = Vec::new();
    let path = Path::new("subsets");
    for (i, ss) in ep.subsets.iter().flatten().enumerate() {
        let p = path.index(i);
        let addrs = ss.addresses.as_deref().unwrap_or(&[]);
        let not_ready = ss.not_ready_addresses.as_deref().unwrap_or(&[]);
        if addrs.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            errs.extend(endpoint_address(a, &p.child("addresses").index(j)));
        }
        for (j, a) in not_ready.iter().enumerate() {
            errs.extend(endpoint_address(a, &p.child("notReadyAddresses").index(j)));
        }
        let ports = ss.ports.as_deref().unwrap_or(&[]);
        for (j, port) in ports.iter().enumerate() {
            let pp = p.child("ports").index(j);
            let name = s(&port.name);
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(&pp.child("name"), ""));
            } else if !name.is_empty() {
                errs.extend(dns1123_label(name, &pp.child("name")));
            }
            for msg in names::is_valid_port_num(port.port.into()) {
                errs.push(FieldError::invalid(&pp.child("port"), &port.port, msg));
            }
            errs.extend(protocol(s(&port.protocol), &pp.child("protocol")));
            if let Some(app) = &port.app_protocol {
                errs.extend(meta::validate_qualified_name(app, &pp.child("appProtocol")));
            }
        }
    }
    errs
}

pub(crate) fn validate_endpoints(ep: &Endpoints) -> Errors {
    let mut errs =
        meta::validate_object_meta(&ep.metadata, true, NameRule::Subdomain, &meta_path());
    errs.extend(endpoints_body(ep));
    errs
}

pub(crate) fn validate_endpoints_update(new: &Endpoints, old: &Endpoints) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(endpoints_body(new));
    errs
}

fn config_map_body(cm: &ConfigMap) -> Errors {
    let mut errs = Vec::new();
    let mut total = 0usize;
    let binary = cm.binary_data.as_ref();
    for (k, v) in cm.data.iter().flatten() {
        let p = Path::new("data").key(k);
        for msg in names::is_config_map_key(k) {
            errs.push(FieldError::invalid(&p, k.as_str(), msg));
        }
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                &p,
                k.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total = total.saturating_add(v.len());
    }
    for (k, v) in binary.into_iter().flatten() {
        for msg in names::is_config_map_key(k) {
            errs.push(FieldError::invalid(
                &Path::new("binaryData").key(k),
                k.as_str(),
                msg,
            ));
        }
        total = total.saturating_add(v.0.len());
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(&Path::new(""), MAX_SECRET_SIZE));
    }
    errs
}

pub(crate) fn validate_config_map(cm: &ConfigMap) -> Errors {
    let mut errs =
        meta::validate_object_meta(&cm.metadata, true, NameRule::Subdomain, &meta_path());
    errs.extend(config_map_body(cm));
    errs
}

/// A ConfigMap or Secret whose old `immutable` is true may not unset it, nor change any field
/// of `changed` (its name, and whether it differs from the old object).
fn frozen_when_immutable(new: Option<bool>, old: Option<bool>, changed: &[(&str, bool)]) -> Errors {
    const FROZEN: &str = "field is immutable when `immutable` is set";
    let mut errs = Vec::new();
    if old != Some(true) {
        return errs;
    }
    if new != Some(true) {
        errs.push(FieldError::forbidden(&Path::new("immutable"), FROZEN));
    }
    for &(field, differs) in changed {
        if differs {
            errs.push(FieldError::forbidden(&Path::new(field), FROZEN));
        }
    }
    errs
}

pub(crate) fn validate_config_map_update(new: &ConfigMap, old: &ConfigMap) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(frozen_when_immutable(
        new.immutable,
        old.immutable,
        &[
            ("data", new.data != old.data),
            ("binaryData", new.binary_data != old.binary_data),
        ],
    ));
    errs.extend(config_map_body(new));
    errs
}

fn secret_body(secret: &Secret) -> Errors {
    let mut errs = Vec::new();
    let data_path = Path::new("data");
    let data = secret.data.clone().unwrap_or_default();
    let mut total = 0usize;
    for (k, v) in &data {
        for msg in names::is_config_map_key(k) {
            errs.push(FieldError::invalid(&data_path.key(k), k.as_str(), msg));
        }
        total = total.saturating_add(v.0.len());
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(&data_path, MAX_SECRET_SIZE));
    }
    let annotations = secret.metadata.annotations.as_ref();
    let json_ok = |key: &str| -> Option<Result<(), String>> {
        data.get(key).map(|v| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&v.0)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    match s(&secret.type_) {
        "kubernetes.io/service-account-token"
            if annotations
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_none_or(String::is_empty) =>
        {
            errs.push(FieldError::required(
                &meta_path()
                    .child("annotations")
                    .key("kubernetes.io/service-account.name"),
                "",
            ));
        }
        "kubernetes.io/dockercfg" => match json_ok(".dockercfg") {
            None => errs.push(FieldError::required(&data_path.key(".dockercfg"), "")),
            Some(Err(e)) => errs.push(FieldError::invalid(
                &data_path.key(".dockercfg"),
                "<secret contents redacted>",
                e,
            )),
            Some(Ok(())) => {}
        },
        "kubernetes.io/dockerconfigjson" => match json_ok(".dockerconfigjson") {
            None => errs.push(FieldError::required(
                &data_path.key(".dockerconfigjson"),
                "",
            )),
            Some(Err(e)) => errs.push(FieldError::invalid(
                &data_path.key(".dockerconfigjson"),
                "<secret contents redacted>",
                e,
            )),
            Some(Ok(())) => {}
        },
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            errs.push(FieldError::required(&data_path.key("username"), ""));
            errs.push(FieldError::required(&data_path.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            errs.push(FieldError::required(&data_path.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            if !data.contains_key("tls.crt") {
                errs.push(FieldError::required(&data_path.key("tls.crt"), ""));
            }
            if !data.contains_key("tls.key") {
                errs.push(FieldError::required(&data_path.key("tls.key"), ""));
            }
        }
        _ => {}
    }
    errs
}

pub(crate) fn validate_secret(secret: &Secret) -> Errors {
    let mut errs =
        meta::validate_object_meta(&secret.metadata, true, NameRule::Subdomain, &meta_path());
    errs.extend(secret_body(secret));
    errs
}

pub(crate) fn validate_secret_update(new: &Secret, old: &Secret) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    meta::immutable_str(&mut errs, s(&new.type_), s(&old.type_), &Path::new("type"));
    errs.extend(frozen_when_immutable(
        new.immutable,
        old.immutable,
        &[("data", new.data != old.data)],
    ));
    errs.extend(secret_body(new));
    errs
}

pub(crate) fn validate_service_account(sa: &ServiceAccount) -> Errors {
    meta::validate_object_meta(&sa.metadata, true, NameRule::Subdomain, &meta_path())
}

pub(crate) fn validate_service_account_update(
    new: &ServiceAccount,
    old: &ServiceAccount,
) -> Errors {
    meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path())
}

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// The fields legacyValidateEvent reads. A core/v1 Event and an events.k8s.io/v1 one hold them
/// under different names; both are checked by [`legacy_event_rules`] and reported under the
/// core names, as Kubernetes does.
pub(crate) struct LegacyEvent<'a> {
    pub(crate) namespace: &'a str,
    /// involvedObject.namespace (events.k8s.io: regarding.namespace).
    pub(crate) involved_namespace: &'a str,
    pub(crate) has_event_time: bool,
    /// reportingComponent (events.k8s.io: reportingController).
    pub(crate) reporting_controller: &'a str,
    pub(crate) reporting_instance: &'a str,
    pub(crate) action: &'a str,
    pub(crate) reason: &'a str,
    /// message (events.k8s.io: note).
    pub(crate) message: &'a str,
}

/// legacyValidateEvent: what every Event must satisfy, in either API group.
pub(crate) fn legacy_event_rules(e: &LegacyEvent<'_>) -> Errors {
    let mut errs = Vec::new();
    let namespace = e.namespace;
    let involved_ns = e.involved_namespace;
    let ns_path = Path::new("involvedObject").child("namespace");
    if !e.has_event_time {
        if involved_ns.is_empty() {
            if !namespace.is_empty() && namespace != "default" {
                errs.push(FieldError::invalid(
                    &ns_path,
                    involved_ns,
                    "does not match event.namespace",
                ));
            }
        } else if namespace != involved_ns {
            errs.push(FieldError::invalid(
                &ns_path,
                involved_ns,
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            errs.push(FieldError::invalid(
                &ns_path,
                involved_ns,
                "does not match event.namespace",
            ));
        }
        let controller = e.reporting_controller;
        if controller.is_empty() {
            errs.push(FieldError::required(&Path::new("reportingController"), ""));
        }
        for msg in names::is_qualified_name(controller) {
            errs.push(FieldError::invalid(
                &Path::new("reportingController"),
                controller,
                msg,
            ));
        }
        for (value, name, limit) in [
            (
                e.reporting_instance,
                "reportingInstance",
                REPORTING_INSTANCE_LIMIT,
            ),
            (e.action, "action", ACTION_LIMIT),
            (e.reason, "reason", REASON_LIMIT),
        ] {
            if value.is_empty() {
                errs.push(FieldError::required(&Path::new(name), ""));
            }
            if value.len() > limit {
                errs.push(FieldError::invalid(
                    &Path::new(name),
                    "",
                    format!("can have at most {limit} characters"),
                ));
            }
        }
        if e.message.len() > NOTE_LIMIT {
            errs.push(FieldError::invalid(
                &Path::new("message"),
                "",
                format!("can have at most {NOTE_LIMIT} characters"),
            ));
        }
    }
    for msg in names::is_dns1123_subdomain(namespace) {
        errs.push(FieldError::invalid(&Path::new("namespace"), namespace, msg));
    }
    errs
}

/// legacyValidateEvent for a core/v1 Event.
fn legacy_event(e: &Event) -> Errors {
    legacy_event_rules(&LegacyEvent {
        namespace: s(&e.metadata.namespace),
        involved_namespace: s(&e.involved_object.namespace),
        has_event_time: e.event_time.is_some(),
        reporting_controller: s(&e.reporting_component),
        reporting_instance: s(&e.reporting_instance),
        action: s(&e.action),
        reason: s(&e.reason),
        message: s(&e.message),
    })
}

/// A core/v1 Event: ObjectMeta plus the legacy rules. Kubernetes skips the ObjectMeta checks
/// for this version; berth keeps them so a nameless event cannot be stored.
pub(crate) fn validate_event(e: &Event, with_meta: bool) -> Errors {
    let mut errs = meta::validate_object_meta_if(with_meta, &e.metadata, true, NameRule::Subdomain);
    errs.extend(legacy_event(e));
    errs
}

pub(crate) fn validate_event_update(new: &Event, old: &Event) -> Errors {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &meta_path());
    errs.extend(legacy_event(new));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errs: &Errors) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn cm(v: serde_json::Value) -> ConfigMap {
        serde_json::from_value(v).unwrap()
    }

    fn secret(v: serde_json::Value) -> Secret {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn config_maps() {
        let good =
            json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a.txt": "x"}});
        assert!(validate_config_map(&cm(good.clone())).is_empty());
        let bad = json!({"metadata": {"name": "cfg", "namespace": "default"},
            "data": {"bad key": "x", "dup": "y"}, "binaryData": {"dup": "eQ=="}});
        assert_eq!(
            messages(&validate_config_map(&cm(bad))),
            vec![
                "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData",
            ]
        );
        let big = json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "x".repeat(MAX_SECRET_SIZE + 1)}});
        assert_eq!(
            messages(&validate_config_map(&cm(big))),
            vec!["[]: Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn immutable_config_maps_stay_put() {
        let old = cm(
            json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "1"}, "immutable": true}),
        );
        let new =
            cm(json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "2"}}));
        assert_eq!(
            messages(&validate_config_map_update(&new, &old)),
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
    }

    #[test]
    fn secrets() {
        let good = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert!(validate_secret(&secret(good.clone())).is_empty());
        let tls = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "dg=="}});
        assert_eq!(
            messages(&validate_secret(&secret(tls))),
            vec!["data[tls.key]: Required value"]
        );
        let mut changed = good.clone();
        changed["type"] = json!("kubernetes.io/basic-auth");
        changed["data"] = json!({"username": "dg=="});
        assert_eq!(
            messages(&validate_secret_update(&secret(changed), &secret(good))),
            vec!["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
        );
    }

    #[test]
    fn namespaces() {
        let ns: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "a.b"}, "spec": {"finalizers": ["kubernetes", "weird"]}}),
        )
        .unwrap();
        assert_eq!(
            messages(&validate_namespace(&ns)),
            vec![
                "metadata.name: Invalid value: \"a.b\": must not contain dots",
                "spec.finalizers: Invalid value: \"weird\": name is neither a standard finalizer name nor is it fully qualified",
            ]
        );
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "dev", "namespace": "x"}})).unwrap();
        assert_eq!(
            messages(&validate_namespace(&ns)),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
    }

    #[test]
    fn events_need_matching_namespaces() {
        let e: Event = serde_json::from_value(json!({
            "metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}
        }))
        .unwrap();
        assert_eq!(
            messages(&validate_event(&e, true)),
            vec![
                "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
            ]
        );
    }

    #[test]
    fn endpoints() {
        let ep: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 80, "protocol": "TCP"}]}]
        }))
        .unwrap();
        assert_eq!(
            messages(&validate_endpoints(&ep)),
            vec![
                "subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
            ]
        );
    }
}
