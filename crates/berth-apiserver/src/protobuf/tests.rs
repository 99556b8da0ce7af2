//! Tests of the protobuf decoder. Bodies are built with the `k8s-pb` prost types, an encoder
//! independent of the table, so the table's wire layout is checked and not just echoed.

use super::schema::{Card, Message, Special, Ty};
use super::*;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use serde_json::json;

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(MEDIA_TYPE.to_owned()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn body<M: prost::Message>(api_version: &str, kind: &str, message: &M) -> Vec<u8> {
    envelope(api_version, kind, message.encode_to_vec())
}

fn meta_named(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    })
}

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[test]
fn config_map_with_maps_and_bytes() {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("cm1"),
            namespace: s("default"),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        }),
        data: [("a".into(), "b".into()), ("empty".into(), String::new())].into(),
        binary_data: [("bin".into(), vec![0u8, 1, 2, 255])].into(),
        immutable: Some(false),
    };
    let got = decode(&body("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm1", "namespace": "default", "labels": {"app": "web"}},
            "data": {"a": "b", "empty": ""},
            "binaryData": {"bin": "AAEC/w=="},
            // *bool: an explicit false is a value.
            "immutable": false,
        })
    );
}

#[test]
fn secret_bytes_are_base64_and_zero_omitempty_scalars_are_dropped() {
    // A Go client writes every non-pointer scalar, zero or not; JSON would not carry them.
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("s1"),
            generate_name: s(""),
            namespace: s(""),
            resource_version: s(""),
            uid: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        data: [("k".into(), b"v".to_vec())].into(),
        r#type: s(""),
        ..Default::default()
    };
    let got = decode(&body("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s1", "creationTimestamp": null},
            "data": {"k": "dg=="},
        })
    );
}

#[test]
fn int_or_string_both_ways_and_pointer_zero_kept() {
    let port = |name: &str, target: IntOrString| core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        port: Some(80),
        target_port: Some(target),
        node_port: Some(0),
        ..Default::default()
    };
    let svc = core::Service {
        metadata: meta_named("svc"),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "a",
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    },
                ),
                port(
                    "b",
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("http"),
                    },
                ),
            ],
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let got = decode(&body("v1", "Service", &svc)).unwrap();
    assert_eq!(
        got["spec"]["ports"],
        // nodePort is a non-pointer omitempty int32: its zero goes.
        json!([
            {"name": "a", "protocol": "TCP", "port": 80, "targetPort": 8080},
            {"name": "b", "protocol": "TCP", "port": 80, "targetPort": "http"},
        ])
    );
    assert_eq!(got["status"], json!({}));

    let bad = core::Service {
        spec: Some(core::ServiceSpec {
            ports: vec![port(
                "c",
                IntOrString {
                    r#type: Some(7),
                    ..Default::default()
                },
            )],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = decode(&body("v1", "Service", &bad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protobuf body of kind \"Service\" is not decodable at spec.ports[0].targetPort: \
         IntOrString type 7 is neither 0 (int) nor 1 (string)"
    );
}

#[test]
fn times_and_micro_times() {
    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: Some(meta::ObjectMeta {
            name: s("l"),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_795_741_323),
                // Go's Time keeps whole seconds.
                nanos: Some(999_999_999),
            }),
            deletion_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: s("me"),
            lease_duration_seconds: Some(0),
            acquire_time: Some(meta::MicroTime {
                seconds: Some(951_782_400),
                nanos: Some(123_456_789),
            }),
            renew_time: Some(meta::MicroTime {
                seconds: Some(-1),
                nanos: Some(1000),
            }),
            ..Default::default()
        }),
    };
    let got = decode(&body("coordination.k8s.io/v1", "Lease", &lease)).unwrap();
    assert_eq!(
        got["metadata"],
        json!({"name": "l", "creationTimestamp": "2026-11-27T01:02:03Z",
               "deletionTimestamp": "1970-01-01T00:00:00Z"})
    );
    assert_eq!(
        got["spec"],
        json!({"holderIdentity": "me", "leaseDurationSeconds": 0,
               "acquireTime": "2000-02-29T00:00:00.123456Z",
               "renewTime": "1969-12-31T23:59:59.000001Z"})
    );
}

#[test]
fn civil_dates_match_known_days() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(-719_162), (1, 1, 1));
    assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
}

#[test]
fn go_zero_time_is_null_and_far_years_are_errors() {
    let zero = meta::Time {
        seconds: Some(-62_135_596_800),
        nanos: None,
    };
    assert_eq!(time(&zero.encode_to_vec(), false).unwrap(), Value::Null);
    let far = meta::Time {
        seconds: Some(i64::MAX),
        nanos: None,
    };
    assert!(time(&far.encode_to_vec(), false).is_err());
    let min = meta::MicroTime {
        seconds: Some(i64::MIN),
        nanos: Some(i32::MIN),
    };
    assert!(time(&min.encode_to_vec(), true).is_err());
}

fn container(name: &str, image: &str) -> core::Container {
    core::Container {
        name: s(name),
        image: s(image),
        command: vec!["sleep".into(), "3600".into()],
        args: vec![String::new()],
        working_dir: s(""),
        ports: vec![
            core::ContainerPort {
                container_port: Some(8080),
                protocol: s("TCP"),
                host_port: Some(0),
                ..Default::default()
            },
            core::ContainerPort {
                name: s("metrics"),
                container_port: Some(9090),
                ..Default::default()
            },
        ],
        env: vec![core::EnvVar {
            name: s("A"),
            value: s(""),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: [("cpu".into(), Quantity { string: s("250m") })].into(),
            requests: [("memory".into(), Quantity::default())].into(),
            ..Default::default()
        }),
        stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

#[test]
fn deployment_with_nested_lists_inline_volumes_and_quantities() {
    use k8s_pb::api::apps::v1 as apps;
    let labels: std::collections::BTreeMap<String, String> = [("app".into(), "web".into())].into();
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            labels: labels.clone(),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: labels.clone(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container("a", "busybox"), container("b", "nginx")],
                    volumes: vec![core::Volume {
                        name: s("cfg"),
                        volume_source: Some(core::VolumeSource {
                            config_map: Some(core::ConfigMapVolumeSource {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: s("cm1"),
                                }),
                                default_mode: Some(0o644),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }],
                    automount_service_account_token: Some(false),
                    host_network: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(Default::default()),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let got = decode(&body("apps/v1", "Deployment", &deployment)).unwrap();
    let container_json = |name: &str, image: &str| {
        json!({
            "name": name, "image": image,
            "command": ["sleep", "3600"], "args": [""],
            "ports": [{"containerPort": 8080, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": 9090}],
            // EnvVar.value has no omitempty... it does: `json:"value,omitempty"`.
            "env": [{"name": "A"}],
            "resources": {"limits": {"cpu": "250m"}, "requests": {"memory": "0"}},
        })
    };
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [container_json("a", "busybox"), container_json("b", "nginx")],
                        "volumes": [{"name": "cfg", "configMap": {"name": "cm1", "defaultMode": 420}}],
                        "automountServiceAccountToken": false,
                    },
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn raw_extension_embeds_json_and_rejects_other_bytes() {
    use k8s_pb::api::apps::v1 as apps;
    let revision = |raw: &[u8]| apps::ControllerRevision {
        metadata: meta_named("rev"),
        data: Some(RawExtension {
            raw: Some(raw.to_vec()),
        }),
        revision: Some(3),
    };
    let got = decode(&body(
        "apps/v1",
        "ControllerRevision",
        &revision(br#"{"spec":{"template":{"$patch":"replace"}}}"#),
    ))
    .unwrap();
    assert_eq!(
        got["data"],
        json!({"spec": {"template": {"$patch": "replace"}}})
    );
    assert_eq!(got["revision"], json!(3));

    let err = decode(&body(
        "apps/v1",
        "ControllerRevision",
        &revision(b"\x01\x02"),
    ))
    .unwrap_err();
    assert!(
        matches!(err, ProtobufError::Malformed { ref path, .. } if path == "data"),
        "{err}"
    );
}

#[test]
fn managed_fields_embed_fields_v1() {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("cm"),
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("v1"),
                time: Some(meta::Time {
                    seconds: Some(1_795_741_323),
                    nanos: None,
                }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:data":{"f:a":{}}}"#.to_vec()),
                }),
                subresource: s(""),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = decode(&body("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        got["metadata"]["managedFields"],
        json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-27T01:02:03Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}}}])
    );
}

#[test]
fn delete_options_under_any_group_version() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        preconditions: Some(meta::Preconditions {
            uid: s("u1"),
            resource_version: None,
        }),
        ..Default::default()
    };
    for api_version in ["meta.k8s.io/v1", "v1", "apps/v1"] {
        let got = decode(&body(api_version, "DeleteOptions", &options)).unwrap();
        assert_eq!(
            got,
            json!({"apiVersion": api_version, "kind": "DeleteOptions",
                   "gracePeriodSeconds": 0, "propagationPolicy": "Foreground",
                   "dryRun": ["All"], "preconditions": {"uid": "u1"}})
        );
    }
}

#[test]
fn packed_and_unpacked_repeated_scalars_and_unknown_fields() {
    // PodSecurityContext.supplementalGroups (field 4) is `repeated int64`; proto2 sends it
    // unpacked, but packed must be read too. Field 99 is unknown and skipped with each wire type.
    let mut raw = Vec::new();
    let mut spec = Vec::new();
    let mut sc = vec![0x20, 1, 0x20, 2]; // 4: 1, 4: 2 (unpacked)
    sc.extend([0x22, 3, 3, 0x80, 0x01]); // 4: [3, 128] (packed)
    sc.extend([0x98, 0x06, 5]); // 99 varint
    sc.extend([0x99, 0x06, 0, 0, 0, 0, 0, 0, 0, 0]); // 99 fixed64
    sc.extend([0x9a, 0x06, 1, b'x']); // 99 bytes
    sc.extend([0x9d, 0x06, 0, 0, 0, 0]); // 99 fixed32
    spec.push(0x72); // PodSpec.securityContext = 14
    spec.push(sc.len() as u8);
    spec.extend(sc);
    raw.push(0x12); // Pod.spec = 2
    raw.push(spec.len() as u8);
    raw.extend(spec);
    let got = decode(&envelope("v1", "Pod", raw)).unwrap();
    assert_eq!(
        got["spec"],
        json!({"securityContext": {"supplementalGroups": [1, 2, 3, 128]}})
    );
}

#[test]
fn repeated_singular_messages_merge_and_scalars_last_wins() {
    // Two `metadata` occurrences merge, as protobuf specifies; the second name wins.
    let first = meta::ObjectMeta {
        name: s("one"),
        labels: [("a".into(), "1".into())].into(),
        ..Default::default()
    };
    let second = meta::ObjectMeta {
        name: s("two"),
        labels: [("b".into(), "2".into())].into(),
        ..Default::default()
    };
    let mut raw = Vec::new();
    for m in [first, second] {
        let bytes = m.encode_to_vec();
        raw.push(0x0a);
        raw.push(bytes.len() as u8);
        raw.extend(bytes);
    }
    let got = decode(&envelope("v1", "ConfigMap", raw)).unwrap();
    assert_eq!(
        got["metadata"],
        json!({"name": "two", "labels": {"a": "1", "b": "2"}})
    );
}

#[test]
fn envelope_errors_are_clear() {
    assert!(matches!(decode(b""), Err(ProtobufError::BadMagic)));
    assert!(matches!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::BadMagic)
    ));
    assert!(matches!(
        decode(b"k8s\0\x0a\x05"),
        Err(ProtobufError::Envelope(_))
    ));
    assert!(matches!(
        decode(&envelope("", "Pod", vec![])),
        Err(ProtobufError::MissingKind)
    ));
    let err = decode(&envelope("batch/v1", "Job", vec![])).unwrap_err();
    assert!(err.is_unsupported_kind());
    assert_eq!(
        err.to_string(),
        "unsupported kind \"Job\" (apiVersion \"batch/v1\") in protobuf; send it as application/json"
    );
    // Same kind name, wrong group: not served either.
    assert!(
        decode(&envelope("apps/v1beta1", "Deployment", vec![]))
            .unwrap_err()
            .is_unsupported_kind()
    );
    let mut gzipped = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("Pod"),
        }),
        raw: Some(vec![0x1f, 0x8b]),
        content_encoding: s("gzip"),
        content_type: None,
    }
    .encode_to_vec();
    gzipped.splice(0..0, MAGIC.iter().copied());
    assert!(matches!(
        decode(&gzipped),
        Err(ProtobufError::ContentEncoding(e)) if e == "gzip"
    ));
    // An empty object is still an object.
    assert_eq!(
        decode(&envelope("v1", "Namespace", vec![])).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace"})
    );
}

#[test]
fn wire_errors_name_the_path() {
    // spec.template.spec.containers[1] holds `name` (1) as a varint instead of a string.
    let good = core::Container {
        name: s("a"),
        ..Default::default()
    }
    .encode_to_vec();
    let bad = vec![0x08, 0x01];
    let mut pod_spec = Vec::new();
    for c in [good, bad] {
        pod_spec.push(0x12); // PodSpec.containers = 2
        pod_spec.push(c.len() as u8);
        pod_spec.extend(c);
    }
    let mut template = vec![0x12, pod_spec.len() as u8];
    template.extend(pod_spec);
    let mut spec = vec![0x1a, template.len() as u8]; // DeploymentSpec.template = 3
    spec.extend(template);
    let mut raw = vec![0x12, spec.len() as u8];
    raw.extend(spec);
    let err = decode(&envelope("apps/v1", "Deployment", raw)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protobuf body of kind \"Deployment\" is not decodable at \
         spec.template.spec.containers[1].name: wire type 0 where a length-delimited field (2) \
         was expected"
    );

    let truncated = decode(&envelope("v1", "ConfigMap", vec![0x12, 0x05, 0x0a])).unwrap_err();
    assert_eq!(
        truncated.to_string(),
        "protobuf body of kind \"ConfigMap\" is not decodable at data: \
         length 5 runs past the end of the message (1 bytes left)"
    );
    let map_err = decode(&envelope(
        "v1",
        "ConfigMap",
        vec![0x12, 0x05, 0x0a, 0x01, b'k', 0x10, 0x01],
    ))
    .unwrap_err();
    assert_eq!(
        map_err.to_string(),
        "protobuf body of kind \"ConfigMap\" is not decodable at data[\"k\"]: \
         wire type 0 where a length-delimited field (2) was expected"
    );
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    let raw = vec![0x0a, 0x03, 0x0a, 0x01, 0xff]; // metadata.name = "\xff"
    let got = decode(&envelope("v1", "Namespace", raw)).unwrap();
    assert_eq!(got["metadata"]["name"], "\u{fffd}");
}

// ------------------------------------------------------------------------------------------
// The table against k8s-pb and k8s-openapi, for every kind

/// Protobuf bytes of `message` with every field set, recursively: each repeated field and map
/// gets one element. String values are the field's JSON name, so mismatches read well.
fn populated(message: &'static Message) -> Vec<u8> {
    let mut out = Vec::new();
    match message.special {
        Special::Time => {
            put_varint(&mut out, 1, 1_795_741_323);
        }
        Special::MicroTime => {
            put_varint(&mut out, 1, 1_795_741_323);
            put_varint(&mut out, 2, 123_456_000);
        }
        Special::IntOrString => {
            put_varint(&mut out, 1, 1);
            put_bytes(&mut out, 3, b"named-port");
        }
        Special::Quantity => put_bytes(&mut out, 1, b"250m"),
        Special::RawExtension => put_bytes(&mut out, 1, br#"{"a":[1,"b",null]}"#),
        Special::FieldsV1 => put_bytes(&mut out, 1, br#"{"f:metadata":{"f:name":{}}}"#),
        Special::None => {
            for field in message.fields {
                let value = |ty: Ty, json: &str| -> (bool, Vec<u8>, u64) {
                    match ty {
                        Ty::Str => (true, json.as_bytes().to_vec(), 0),
                        Ty::Bytes => (true, vec![0, 0xff, b'b'], 0),
                        Ty::Bool => (false, vec![], 1),
                        Ty::I32 => (false, vec![], 7),
                        Ty::I64 => (false, vec![], 1 << 40),
                        Ty::Msg(m) => (true, populated(m), 0),
                    }
                };
                let (len, bytes, int) = value(field.ty, field.json);
                match field.card {
                    Card::One | Card::Many | Card::Inline => {
                        if len {
                            put_bytes(&mut out, field.tag, &bytes);
                        } else {
                            put_varint(&mut out, field.tag, int);
                        }
                    }
                    Card::Map => {
                        let mut entry = Vec::new();
                        put_bytes(&mut entry, 1, b"key");
                        if len {
                            put_bytes(&mut entry, 2, &bytes);
                        } else {
                            put_varint(&mut entry, 2, int);
                        }
                        put_bytes(&mut out, field.tag, &entry);
                    }
                }
            }
        }
    }
    out
}

fn put_raw_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, tag: u32, v: u64) {
    put_raw_varint(out, u64::from(tag) << 3);
    put_raw_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_raw_varint(out, (u64::from(tag) << 3) | 2);
    put_raw_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Checks one kind: (1) the fully populated body survives a decode/encode through the k8s-pb
/// prost type unchanged in meaning, so every table row has the number and wire type k8s-pb
/// has; (2) its JSON survives a round trip through the k8s-openapi type unchanged, so every
/// JSON name and value shape is one that berth's typed codec knows.
fn check_kind<P, O>(api_version: &str, kind: &str) -> usize
where
    P: prost::Message + Default,
    O: serde::de::DeserializeOwned + serde::Serialize,
{
    let message = lookup(api_version, kind).unwrap();
    let raw = populated(message);
    let json = decode(&envelope(api_version, kind, raw.clone())).unwrap();

    let through_pb = P::decode(raw.as_slice())
        .unwrap_or_else(|e| panic!("{kind}: k8s-pb cannot decode the table's layout: {e}"))
        .encode_to_vec();
    let json_pb = decode(&envelope(api_version, kind, through_pb)).unwrap();
    if json_pb != json {
        let mut lost = Vec::new();
        diff(&json, &json_pb, String::new(), &mut lost);
        panic!("{kind}: k8s-pb disagrees with the table at {lost:?}");
    }

    let typed: O = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{kind}: k8s-openapi rejects the JSON: {e}"));
    let back = serde_json::to_value(typed).unwrap();
    let mut lost = Vec::new();
    diff(&json, &back, String::new(), &mut lost);
    // k8s-openapi writes apiVersion and kind into every embedded resource type (a StatefulSet's
    // volumeClaimTemplates); Go leaves them out, and protobuf has no field for them.
    lost.retain(|d| {
        !(d.ends_with(".apiVersion only in the second") || d.ends_with(".kind only in the second"))
    });
    assert!(
        lost.is_empty(),
        "{kind}: k8s-openapi disagrees with the table at {lost:?}"
    );
    count_leaves(&json)
}

fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(x, y, child, out),
                    (Some(_), None) => out.push(format!("{child} only in the first")),
                    (None, Some(_)) => out.push(format!("{child} only in the second")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

fn count_leaves(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.values().map(count_leaves).sum(),
        Value::Array(items) => items.iter().map(count_leaves).sum(),
        _ => 1,
    }
}

#[test]
fn every_kind_agrees_with_k8s_pb_and_k8s_openapi() {
    use k8s_openapi::api as oa;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as oa_meta;
    use k8s_pb::api as pb;

    macro_rules! kinds {
        ($($v:literal $k:literal => $pb:ty, $oa:ty;)*) => {
            vec![$( ($v, $k, check_kind::<$pb, $oa>($v, $k)), )*]
        };
    }
    let checked = kinds! {
        "v1" "Namespace" => pb::core::v1::Namespace, oa::core::v1::Namespace;
        "v1" "Node" => pb::core::v1::Node, oa::core::v1::Node;
        "v1" "Pod" => pb::core::v1::Pod, oa::core::v1::Pod;
        "v1" "Service" => pb::core::v1::Service, oa::core::v1::Service;
        "v1" "Endpoints" => pb::core::v1::Endpoints, oa::core::v1::Endpoints;
        "v1" "ConfigMap" => pb::core::v1::ConfigMap, oa::core::v1::ConfigMap;
        "v1" "Secret" => pb::core::v1::Secret, oa::core::v1::Secret;
        "v1" "Event" => pb::core::v1::Event, oa::core::v1::Event;
        "v1" "ServiceAccount" => pb::core::v1::ServiceAccount, oa::core::v1::ServiceAccount;
        "v1" "PersistentVolume" => pb::core::v1::PersistentVolume, oa::core::v1::PersistentVolume;
        "v1" "PersistentVolumeClaim" =>
            pb::core::v1::PersistentVolumeClaim, oa::core::v1::PersistentVolumeClaim;
        "v1" "Binding" => pb::core::v1::Binding, oa::core::v1::Binding;
        "storage.k8s.io/v1" "StorageClass" =>
            pb::storage::v1::StorageClass, oa::storage::v1::StorageClass;
        "apps/v1" "Deployment" => pb::apps::v1::Deployment, oa::apps::v1::Deployment;
        "apps/v1" "ReplicaSet" => pb::apps::v1::ReplicaSet, oa::apps::v1::ReplicaSet;
        "apps/v1" "StatefulSet" => pb::apps::v1::StatefulSet, oa::apps::v1::StatefulSet;
        "apps/v1" "ControllerRevision" =>
            pb::apps::v1::ControllerRevision, oa::apps::v1::ControllerRevision;
        "discovery.k8s.io/v1" "EndpointSlice" =>
            pb::discovery::v1::EndpointSlice, oa::discovery::v1::EndpointSlice;
        "coordination.k8s.io/v1" "Lease" => pb::coordination::v1::Lease, oa::coordination::v1::Lease;
        "events.k8s.io/v1" "Event" => pb::events::v1::Event, oa::events::v1::Event;
        "autoscaling/v1" "Scale" => pb::autoscaling::v1::Scale, oa::autoscaling::v1::Scale;
        "meta.k8s.io/v1" "DeleteOptions" =>
            k8s_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions, oa_meta::DeleteOptions;
    };
    let listed: Vec<(&str, &str)> = checked.iter().map(|(v, k, _)| (*v, *k)).collect();
    let table: Vec<(&str, &str)> = table::KINDS.iter().map(|(v, k, _)| (*v, *k)).collect();
    assert_eq!(listed, table, "every kind in the table is cross-checked");
    // A Pod populated this way has over 900 leaves; a table that lost its nesting
    // would still "agree" with itself, so make sure the check saw real objects.
    let pod = checked.iter().find(|(_, k, _)| *k == "Pod").map(|c| c.2);
    assert!(pod.unwrap_or(0) > 900, "{pod:?}");
}

#[test]
fn table_rows_are_well_formed() {
    fn visit(message: &'static Message, seen: &mut Vec<&'static str>) {
        if seen.contains(&message.name) {
            return;
        }
        seen.push(message.name);
        if message.special != Special::None {
            assert!(message.fields.is_empty(), "{}", message.name);
        }
        for pair in message.fields.windows(2) {
            assert!(pair[0].tag < pair[1].tag, "{} tags sorted", message.name);
        }
        for field in message.fields {
            let inline = field.card == Card::Inline;
            assert_eq!(
                field.json.is_empty(),
                inline,
                "{}.{}",
                message.name,
                field.json
            );
            if field.zero == Zero::Omit {
                assert!(
                    field.card == Card::One && !matches!(field.ty, Ty::Msg(_)),
                    "{}.{}",
                    message.name,
                    field.json
                );
            }
            if let Ty::Msg(child) = field.ty {
                if inline {
                    assert_eq!(child.special, Special::None);
                }
                visit(child, seen);
            }
        }
    }
    let mut seen = Vec::new();
    for (_, _, message) in table::KINDS {
        visit(message, &mut seen);
    }
    assert!(seen.len() > 200, "{}", seen.len());
}

#[test]
fn schema_is_acyclic_and_well_inside_the_depth_limit() {
    // Nesting levels below `message`; panics on a cycle, which MAX_DEPTH would turn into an
    // error for real bodies of that shape.
    fn levels(message: &'static Message, stack: &mut Vec<&'static str>) -> usize {
        assert!(
            !stack.contains(&message.name),
            "cycle: {stack:?} -> {}",
            message.name
        );
        stack.push(message.name);
        let below = message
            .fields
            .iter()
            .filter_map(|f| match f.ty {
                Ty::Msg(child) => Some(1 + levels(child, stack)),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        stack.pop();
        below
    }
    let deepest = table::KINDS
        .iter()
        .map(|(_, _, m)| levels(m, &mut Vec::new()))
        .max()
        .unwrap_or(0);
    assert!(deepest * 2 < MAX_DEPTH, "schema nests {deepest} levels");
}

// ------------------------------------------------------------------------------------------
// No input panics

fn kinds() -> impl Strategy<Value = (&'static str, &'static str)> {
    proptest::sample::select(
        table::KINDS
            .iter()
            .map(|(v, k, _)| (*v, *k))
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let mut prefixed = MAGIC.to_vec();
        prefixed.extend(&bytes);
        let _ = decode(&prefixed);
    }

    #[test]
    fn arbitrary_objects_never_panic(
        (api_version, kind) in kinds(),
        raw in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = decode(&envelope(api_version, kind, raw));
    }

    /// Corrupting a fully populated object reaches every decoder path, deep ones included.
    #[test]
    fn corrupted_objects_never_panic(
        (api_version, kind) in kinds(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut raw = populated(lookup(api_version, kind).unwrap());
        for (at, byte) in edits {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        let len = cut.index(raw.len() + 1);
        raw.truncate(len.max(raw.len() / 2));
        let _ = decode(&envelope(api_version, kind, raw));
    }
}
