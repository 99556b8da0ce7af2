//! Tests through the public entry points: message format, ObjectMeta rules for every kind,
//! and a defaulted good object of every kind passing.

use super::*;
use crate::defaults::apply_defaults;
use crate::resources::{RESOURCES, lookup, lookup_kind};
use serde_json::json;

fn info(api_version: &str, kind: &str) -> &'static ResourceInfo {
    lookup_kind(api_version, kind).unwrap()
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(FieldError::message).collect()
}

fn create(api_version: &str, kind: &str, mut object: Value) -> Vec<String> {
    let info = info(api_version, kind);
    apply_defaults(info, &mut object);
    messages(&validate_create(info, &object))
}

#[test]
fn messages_match_kubernetes_format() {
    let p = Path::new("spec").child("replicas");
    assert_eq!(
        FieldError::invalid(&p, &-1i64, "must be greater than or equal to 0").message(),
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(
        FieldError::required(
            &Path::new("metadata").child("name"),
            "name or generateName is required"
        )
        .message(),
        "metadata.name: Required value: name or generateName is required"
    );
    assert_eq!(
        FieldError::required(&p, "").message(),
        "spec.replicas: Required value"
    );
    assert_eq!(
        FieldError::not_supported(&Path::new("spec").child("foo"), "x", &["a", "b"]).message(),
        "spec.foo: Unsupported value: \"x\": supported values: \"a\", \"b\""
    );
    assert_eq!(
        FieldError::duplicate(&p, "x").message(),
        "spec.replicas: Duplicate value: \"x\""
    );
    assert_eq!(
        FieldError::forbidden(&p, "nope").message(),
        "spec.replicas: Forbidden: nope"
    );
    assert_eq!(
        FieldError::too_long(&Path::new("metadata").child("annotations"), 262144).message(),
        "metadata.annotations: Too long: may not be more than 262144 bytes"
    );
    assert_eq!(
        FieldError::too_many(&p, 5, 3).message(),
        "spec.replicas: Too many: 5: must have at most 3 items"
    );
    assert_eq!(
        FieldError::not_found(&p, "v").message(),
        "spec.replicas: Not found: \"v\""
    );
    assert_eq!(
        FieldError::internal(&p, "boom").message(),
        "spec.replicas: Internal error: boom"
    );
    assert_eq!(
        FieldError::invalid(&p, "", "bad").message(),
        "spec.replicas: Invalid value: \"\": bad"
    );
}

#[test]
fn reasons_match_kubernetes() {
    let p = Path::new("x");
    assert_eq!(FieldError::required(&p, "").reason(), "FieldValueRequired");
    assert_eq!(
        FieldError::invalid(&p, "", "").reason(),
        "FieldValueInvalid"
    );
    assert_eq!(
        FieldError::duplicate(&p, "").reason(),
        "FieldValueDuplicate"
    );
    assert_eq!(
        FieldError::forbidden(&p, "").reason(),
        "FieldValueForbidden"
    );
    assert_eq!(
        FieldError::not_supported(&p, "", &[]).reason(),
        "FieldValueNotSupported"
    );
    assert_eq!(FieldError::not_found(&p, "").reason(), "FieldValueNotFound");
    assert_eq!(FieldError::too_long(&p, 1).reason(), "FieldValueTooLong");
    assert_eq!(FieldError::too_many(&p, 2, 1).reason(), "FieldValueTooMany");
    assert_eq!(FieldError::internal(&p, "").reason(), "InternalError");
}

#[test]
fn a_struct_literal_error_prints_its_value_or_not() {
    // The API server builds errors with a struct literal; `value: None` must not print a value.
    let e = FieldError {
        kind: FieldErrorKind::Forbidden,
        field: "metadata.finalizers".into(),
        value: None,
        detail: "no new finalizers can be added if the object is being deleted".into(),
    };
    assert_eq!(
        e.message(),
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"
    );
}

fn good_objects() -> Vec<(&'static str, &'static str, Value)> {
    let ns = |name: &str| json!({"name": name, "namespace": "default"});
    vec![
        ("v1", "Namespace", json!({"metadata": {"name": "dev"}})),
        (
            "v1",
            "Node",
            json!({"metadata": {"name": "node-1"}, "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}),
        ),
        (
            "v1",
            "Pod",
            json!({"metadata": ns("web-0"), "spec": {"containers": [{"name": "web", "image": "nginx"}]}}),
        ),
        (
            "v1",
            "Service",
            json!({"metadata": ns("web"), "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        ),
        (
            "v1",
            "Endpoints",
            json!({"metadata": ns("web"), "subsets": [{"addresses": [{"ip": "10.1.0.4"}], "ports": [{"port": 80}]}]}),
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": ns("cfg"), "data": {"a": "b"}}),
        ),
        (
            "v1",
            "Secret",
            json!({"metadata": ns("sec"), "stringData": {"password": "hunter2"}}),
        ),
        (
            "v1",
            "Event",
            json!({"metadata": ns("web.1"), "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"}, "reason": "Started"}),
        ),
        ("v1", "ServiceAccount", json!({"metadata": ns("builder")})),
        (
            "v1",
            "PersistentVolume",
            json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data/pv1"}}}),
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            json!({"metadata": ns("data"), "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            json!({"metadata": {"name": "local"}, "provisioner": "berth.dev/local-path"}),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": ns("web"), "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        ),
        (
            "apps/v1",
            "ReplicaSet",
            json!({"metadata": ns("web-abc"), "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"metadata": ns("db"), "spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16",
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
        ),
        (
            "apps/v1",
            "ControllerRevision",
            json!({"metadata": ns("web-1"), "data": {"spec": {}}, "revision": 1}),
        ),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            json!({"metadata": ns("web-x"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.4"]}], "ports": [{"port": 80}]}),
        ),
        (
            "coordination.k8s.io/v1",
            "Lease",
            json!({"metadata": ns("node-1"), "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}),
        ),
        (
            "events.k8s.io/v1",
            "Event",
            json!({"metadata": ns("web.2"), "eventTime": "2024-05-01T10:00:00.000000Z",
            "reportingController": "berth.dev/kubelet", "reportingInstance": "node-1", "action": "Started", "reason": "Started", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "default"}}),
        ),
    ]
}

#[test]
fn defaulted_good_objects_of_every_kind_pass() {
    let objects = good_objects();
    for r in RESOURCES {
        assert!(
            objects
                .iter()
                .any(|(av, k, _)| *av == r.api_version() && *k == r.kind),
            "no good fixture for {}",
            r.kind
        );
    }
    for (api_version, kind, object) in objects {
        assert_eq!(
            create(api_version, kind, object),
            Vec::<String>::new(),
            "{api_version} {kind}"
        );
    }
}

#[test]
fn every_kind_requires_a_valid_name() {
    for (api_version, kind, mut object) in good_objects() {
        object["metadata"]["name"] = json!("");
        assert!(
            create(api_version, kind, object.clone()).contains(
                &"metadata.name: Required value: name or generateName is required".to_string()
            ),
            "{kind}"
        );
        for bad in ["..", ".", "a/b", "Upper", "a\u{0}b", &"a".repeat(254)] {
            object["metadata"]["name"] = json!(bad);
            let errs = create(api_version, kind, object.clone());
            assert!(
                errs.iter()
                    .any(|e| e.starts_with("metadata.name: Invalid value: ")),
                "{kind} {bad:?}: {errs:?}"
            );
        }
    }
}

#[test]
fn namespaced_kinds_require_a_valid_namespace() {
    let mut pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(
        create("v1", "Pod", pod.clone()),
        vec!["metadata.namespace: Required value"]
    );
    pod["metadata"]["namespace"] = json!("Bad_NS");
    assert_eq!(
        create("v1", "Pod", pod),
        vec![
            "metadata.namespace: Invalid value: \"Bad_NS\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
}

#[test]
fn name_formats_per_kind() {
    let cm = json!({"metadata": {"name": "a.b", "namespace": "default"}});
    assert!(create("v1", "ConfigMap", cm).is_empty());
    let ns = json!({"metadata": {"name": "a.b"}});
    assert_eq!(
        create("v1", "Namespace", ns),
        vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );
    let long = "a".repeat(254);
    assert_eq!(
        create(
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": long, "namespace": "default"}})
        ),
        vec![format!(
            "metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
        )]
    );
    assert_eq!(
        create(
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "UP", "namespace": "default"}})
        ),
        vec![
            "metadata.name: Invalid value: \"UP\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ]
    );
}

#[test]
fn generate_name_may_end_in_a_dash() {
    let cm =
        json!({"metadata": {"name": "web-x7k2p", "generateName": "web-", "namespace": "default"}});
    assert!(create("v1", "ConfigMap", cm).is_empty());
    let cm =
        json!({"metadata": {"name": "web-x7k2p", "generateName": "Web-", "namespace": "default"}});
    let errs = create("v1", "ConfigMap", cm);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "metadata.generateName: Invalid value: \"Web-\": a lowercase RFC 1123 subdomain"
        ),
        "{errs:?}"
    );
}

#[test]
fn labels_and_annotations() {
    let cm = json!({"metadata": {"name": "c", "namespace": "default",
        "labels": {"app.kubernetes.io/name": "web", "bad key": "v", "k": "bad value!"},
        "annotations": {"Example.com/Mixed-Case": "ok", "/x": "no"}}});
    assert_eq!(
        create("v1", "ConfigMap", cm),
        vec![
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            "metadata.labels: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            "metadata.annotations: Invalid value: \"/x\": prefix part must be non-empty",
        ]
    );
    let big = "x".repeat(262_144);
    let cm = json!({"metadata": {"name": "c", "namespace": "default", "annotations": {"a": big}}});
    assert_eq!(
        create("v1", "ConfigMap", cm),
        vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
    );
    let long_value = "v".repeat(64);
    let cm =
        json!({"metadata": {"name": "c", "namespace": "default", "labels": {"k": long_value}}});
    assert_eq!(
        create("v1", "ConfigMap", cm),
        vec![format!(
            "metadata.labels: Invalid value: \"{long_value}\": must be no more than 63 characters"
        )]
    );
}

#[test]
fn owner_references_and_finalizers() {
    let cm = json!({"metadata": {"name": "c", "namespace": "default",
        "ownerReferences": [{"apiVersion": "", "kind": "", "name": "", "uid": ""}],
        "finalizers": ["example.com/cleanup", "bad finalizer", "custom"]}});
    assert_eq!(
        create("v1", "ConfigMap", cm),
        vec![
            "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty",
            "metadata.ownerReferences.kind: Invalid value: \"\": kind must not be empty",
            "metadata.ownerReferences.name: Invalid value: \"\": name must not be empty",
            "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty",
            "metadata.finalizers: Invalid value: \"bad finalizer\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            "metadata.finalizers[1]: Invalid value: \"bad finalizer\": name is neither a standard finalizer name nor is it fully qualified",
            "metadata.finalizers[2]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
        ]
    );
}

#[test]
fn metadata_is_immutable_on_update() {
    let cms = lookup("", "v1", "configmaps").unwrap();
    let old = json!({"metadata": {"name": "c", "namespace": "default", "uid": "u1", "creationTimestamp": "2024-01-02T03:04:05Z"}});
    let new = json!({"metadata": {"name": "d", "namespace": "other", "uid": "u2", "creationTimestamp": "2024-01-02T03:04:06Z"}});
    assert_eq!(
        messages(&validate_update(cms, &new, &old)),
        vec![
            "metadata.name: Invalid value: \"d\": field is immutable",
            "metadata.namespace: Invalid value: \"other\": field is immutable",
            "metadata.uid: Invalid value: \"u2\": field is immutable",
            "metadata.creationTimestamp: Invalid value: 2024-01-02 03:04:06 +0000 UTC: field is immutable",
        ]
    );
    // What the server carries over itself may be left out.
    let bare = json!({"metadata": {"name": "c", "namespace": "default"}});
    assert!(validate_update(cms, &bare, &old).is_empty());
}

#[test]
fn no_new_finalizers_while_deleting() {
    let cms = lookup("", "v1", "configmaps").unwrap();
    let old = json!({"metadata": {"name": "c", "namespace": "default", "deletionTimestamp": "2024-01-02T03:04:05Z", "finalizers": ["a.io/x"]}});
    let new = json!({"metadata": {"name": "c", "namespace": "default", "deletionTimestamp": "2024-01-02T03:04:05Z", "finalizers": ["a.io/x", "b.io/y"]}});
    assert_eq!(
        messages(&validate_update(cms, &new, &old)),
        vec![
            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"b.io/y\"}"
        ]
    );
}

#[test]
fn status_updates_check_metadata_only_for_plain_kinds() {
    let deployments = lookup("apps", "v1", "deployments").unwrap();
    let old =
        json!({"metadata": {"name": "web", "namespace": "default"}, "status": {"replicas": 1}});
    let new = json!({"metadata": {"name": "web", "namespace": "default"}, "status": {"replicas": 1, "readyReplicas": 2}});
    assert_eq!(
        messages(&validate_status_update(deployments, &new, &old)),
        vec!["status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas"]
    );
}

#[test]
fn undecodable_objects_are_internal_errors_not_panics() {
    let pods = lookup("", "v1", "pods").unwrap();
    let errs = validate_create(pods, &json!({"spec": {"containers": "nope"}}));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, FieldErrorKind::Internal);
    assert!(validate_update(pods, &json!(5), &json!({})).len() == 1);
}

/// JSON pointers to every leaf of `v`.
fn leaves(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                leaves(
                    child,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                leaves(child, format!("{at}/{i}"), out);
            }
        }
        leaf => out.push((at, leaf.clone())),
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Any leaf of any good fixture replaced by an odd value of the same JSON type never
        /// makes defaulting or validation panic.
        #[test]
        fn odd_leaf_values_never_panic(
            fixture in 0usize..19,
            leaf in any::<prop::sample::Index>(),
            text in "[-a-zA-Z0-9./_:%=@ \\x00\u{e9}]{0,70}",
            number in any::<i64>(),
        ) {
            let objects = good_objects();
            let (api_version, kind, mut object) = objects[fixture % objects.len()].clone();
            let info = info(api_version, kind);
            apply_defaults(info, &mut object);
            let mut all = Vec::new();
            leaves(&object, String::new(), &mut all);
            prop_assume!(!all.is_empty());
            let (pointer, old) = &all[leaf.index(all.len())];
            let replacement = match old {
                Value::String(_) => json!(text),
                Value::Number(_) => json!(number % 100_000),
                Value::Bool(b) => json!(!b),
                other => other.clone(),
            };
            let mut changed = object.clone();
            if let Some(slot) = changed.pointer_mut(pointer) {
                *slot = replacement;
            }
            apply_defaults(info, &mut changed);
            let _ = validate_create(info, &changed);
            let _ = validate_update(info, &changed, &object);
            let _ = validate_update(info, &object, &changed);
            let _ = validate_status_update(info, &changed, &object);
            for e in validate_create(info, &changed) {
                prop_assert!(!e.message().is_empty());
            }
        }

        #[test]
        fn quantities_never_panic(s in any::<String>()) {
            if let Some(q) = quantity::Quantity::parse(&s) {
                let _ = q.cmp(&q);
                let _ = q.is_integer();
            }
        }
    }
}

#[test]
fn host_paths_must_be_absolute_without_backsteps_and_of_a_known_type() {
    let pod = |path: &str, type_: &str| {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "h", "hostPath": {"path": path, "type": type_}}]}})
    };
    assert!(create("v1", "Pod", pod("/srv/data", "DirectoryOrCreate")).is_empty());
    assert_eq!(
        create("v1", "Pod", pod("relative/x", "")),
        ["spec.volumes[0].hostPath.path: Invalid value: \"relative/x\": must be an absolute path"]
    );
    assert_eq!(
        create("v1", "Pod", pod("/srv/../etc", "")),
        ["spec.volumes[0].hostPath.path: Invalid value: \"/srv/../etc\": must not contain '..'"]
    );
    let bad_type = create("v1", "Pod", pod("/srv", "Folder"));
    assert_eq!(bad_type.len(), 1, "{bad_type:?}");
    assert!(
        bad_type[0].starts_with("spec.volumes[0].hostPath.type: Unsupported value: \"Folder\""),
        "{bad_type:?}"
    );
}
