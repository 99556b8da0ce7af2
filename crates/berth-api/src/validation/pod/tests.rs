//! Pod and PodSpec rules, checked on defaulted fixtures the way the API server sees them.

use super::*;
use crate::defaults::apply_defaults;
use crate::resources::lookup;
use serde_json::{Value, json};

fn messages(errs: &Errors) -> Vec<String> {
    errs.iter().map(FieldError::message).collect()
}

fn defaulted(mut v: Value) -> Pod {
    apply_defaults(lookup("", "v1", "pods").unwrap(), &mut v);
    serde_json::from_value(v).unwrap()
}

fn pod(spec: Value) -> Pod {
    defaulted(json!({"metadata": {"name": "web-0", "namespace": "default"}, "spec": spec}))
}

fn create(spec: Value) -> Vec<String> {
    messages(&validate_pod_create(&pod(spec)))
}

#[test]
fn good_pod_passes() {
    let spec = json!({
        "containers": [{
            "name": "web", "image": "nginx:1.27",
            "ports": [{"name": "http", "containerPort": 80}],
            "env": [{"name": "MODE", "value": "prod"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "web"}],
            "livenessProbe": {"httpGet": {"port": "http"}},
            "readinessProbe": {"tcpSocket": {"port": 80}}
        }],
        "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "web"}},
                    {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}]
    });
    assert_eq!(create(spec), Vec::<String>::new());
}

#[test]
fn containers_are_required() {
    assert_eq!(
        create(json!({"containers": []})),
        vec!["spec.containers: Required value"]
    );
}

#[test]
fn container_names_images_and_duplicates() {
    let spec = json!({
        "containers": [{"name": "Web", "image": ""}, {"name": "app", "image": " nginx"}],
        "initContainers": [{"name": "app", "image": "busybox"}]
    });
    assert_eq!(
        create(spec),
        vec![
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.containers[0].image: Required value",
            "spec.initContainers[0].name: Duplicate value: \"app\"",
            "spec.containers[1].image: Invalid value: \" nginx\": must not have leading or trailing whitespace",
        ]
    );
}

#[test]
fn ports() {
    let spec = json!({"containers": [{"name": "c", "image": "i", "ports": [
        {"name": "123", "containerPort": 0},
        {"name": "web", "containerPort": 70000, "protocol": "HTTP"},
        {"name": "web", "containerPort": 81, "hostPort": 8080},
    ]}, {"name": "d", "image": "i", "ports": [{"containerPort": 82, "hostPort": 8080}]}]});
    assert_eq!(
        create(spec),
        vec![
            "spec.containers[0].ports[0].name: Invalid value: \"123\": must contain at least one letter (a-z)",
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].ports[2].name: Duplicate value: \"web\"",
            "spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//8080\"",
        ]
    );
}

#[test]
fn policies() {
    let spec = json!({"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Sometimes"}],
        "restartPolicy": "Sometimes", "dnsPolicy": "Google"});
    assert_eq!(
        create(spec),
        vec![
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
        ]
    );
}

#[test]
fn volumes_and_mounts() {
    let spec = json!({
        "containers": [{"name": "c", "image": "i", "volumeMounts": [
            {"name": "missing", "mountPath": "/a"},
            {"name": "data", "mountPath": ""},
            {"name": "data", "mountPath": "/b", "subPath": "../etc"},
            {"name": "data", "mountPath": "/c", "subPath": "/abs"},
            {"name": "data", "mountPath": "/c"}
        ]}],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "data", "emptyDir": {}},
            {"name": "Bad", "hostPath": {"path": "/x/../y", "type": "Weird"}},
            {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}},
            {"name": "hp", "hostPath": {"path": ""}}
        ]
    });
    assert_eq!(
        create(spec),
        vec![
            "spec.volumes[1].name: Duplicate value: \"data\"",
            "spec.volumes[2].hostPath.path: Invalid value: \"/x/../y\": must not contain '..'",
            "spec.volumes[2].hostPath.type: Unsupported value: \"Weird\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"",
            "spec.volumes[2].name: Invalid value: \"Bad\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.volumes[3].hostPath: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[4].hostPath.path: Required value",
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
            "spec.containers[0].volumeMounts[1].mountPath: Required value",
            "spec.containers[0].volumeMounts.subPath: Invalid value: \"../etc\": must not contain '..'",
            "spec.containers[0].volumeMounts.subPath: Invalid value: \"/abs\": must be a relative path",
            "spec.containers[0].volumeMounts[4].mountPath: Invalid value: \"/c\": must be unique",
        ]
    );
}

#[test]
fn a_volume_without_a_source_becomes_an_empty_dir() {
    let p =
        pod(json!({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "scratch"}]}));
    assert!(validate_pod_create(&p).is_empty());
    let vol = &p.spec.unwrap().volumes.unwrap()[0];
    assert!(vol.empty_dir.is_some());
}

#[test]
fn env_vars() {
    let spec = json!({"containers": [{"name": "c", "image": "i", "env": [
        {"name": ""},
        {"name": "A=B"},
        {"name": "X", "valueFrom": {}},
        {"name": "Y", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "Z", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
        {"name": "W", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "bad key"}}}
    ]}]});
    assert_eq!(
        create(spec),
        vec![
            "spec.containers[0].env[0].name: Required value",
            "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].env[2].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            "spec.containers[0].env[3].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
            "spec.containers[0].env[4].valueFrom.fieldRef.fieldPath: Invalid value: \"spec.bogus\": error converting fieldPath: field label not supported: spec.bogus",
            "spec.containers[0].env[5].valueFrom.fieldRef.fieldPath: Unsupported value: \"status.phase\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"",
            "spec.containers[0].env[6].valueFrom.secretKeyRef.key: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        ]
    );
}

#[test]
fn resources() {
    let spec = json!({"containers": [{"name": "c", "image": "i", "resources": {
        "requests": {"cpu": "2", "memory": "-1"},
        "limits": {"cpu": "1", "memory": "lots", "example.com/gpu": "500m"}
    }}]});
    assert_eq!(
        create(spec),
        vec![
            "spec.containers[0].resources.limits[example.com/gpu]: Invalid value: \"500m\": must be an integer",
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            "spec.containers[0].resources.requests[example.com/gpu]: Invalid value: \"500m\": must be an integer",
            "spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0",
        ]
    );
    let spec =
        json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"gpu": "1"}}}]});
    assert_eq!(
        create(spec),
        vec![
            "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
            "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
            "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
            "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
        ]
    );
}

#[test]
fn probes() {
    let spec = json!({"containers": [{"name": "c", "image": "i",
        "livenessProbe": {"exec": {"command": ["true"]}, "httpGet": {"port": 80}, "successThreshold": 2},
        "readinessProbe": {"initialDelaySeconds": -1},
        "startupProbe": {"tcpSocket": {"port": 0}}
    }]});
    assert_eq!(
        create(spec),
        vec![
            "spec.containers[0].livenessProbe.httpGet: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
            "spec.containers[0].readinessProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.containers[0].startupProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ]
    );
    let spec = json!({"containers": [{"name": "c", "image": "i"}],
        "initContainers": [{"name": "init", "image": "i", "livenessProbe": {"exec": {"command": ["true"]}}}]});
    assert_eq!(
        create(spec),
        vec![
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"
        ]
    );
}

#[test]
fn scheduling_fields() {
    let spec = json!({"containers": [{"name": "c", "image": "i"}],
        "nodeSelector": {"disk": "ssd!"},
        "tolerations": [{"operator": "Equal", "value": "x"}, {"key": "k", "effect": "Sometimes"}],
        "activeDeadlineSeconds": 0,
        "serviceAccountName": "Bad SA",
        "hostname": "a.b"
    });
    let errs = create(spec);
    assert_eq!(
        errs,
        vec![
            "spec.nodeSelector: Invalid value: \"ssd!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            "spec.serviceAccountName: Invalid value: \"Bad SA\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
            "spec.hostname: Invalid value: \"a.b\": must not contain dots",
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[1].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
        ]
    );
}

#[test]
fn ephemeral_containers_cannot_be_created() {
    let spec = json!({"containers": [{"name": "c", "image": "i"}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox"}]});
    assert_eq!(
        create(spec),
        vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"]
    );
}

fn update(old: &Pod, f: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = serde_json::to_value(old).unwrap();
    f(&mut v);
    let new = defaulted(v);
    messages(&validate_pod_update(&new, old))
}

#[test]
fn pod_updates_may_change_images_deadline_and_add_tolerations() {
    let old = pod(
        json!({"containers": [{"name": "c", "image": "nginx:1"}], "activeDeadlineSeconds": 100}),
    );
    assert!(
        update(&old, |v| v["spec"]["containers"][0]["image"] =
            json!("nginx:2"))
        .is_empty()
    );
    assert!(update(&old, |v| v["spec"]["activeDeadlineSeconds"] = json!(50)).is_empty());
    assert_eq!(
        update(&old, |v| v["spec"]["activeDeadlineSeconds"] = json!(200)),
        vec![
            "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
        ]
    );
    assert!(
        update(&old, |v| {
            v["spec"]["tolerations"]
                .as_array_mut()
                .unwrap()
                .push(json!({"key": "k", "operator": "Exists"}));
        })
        .is_empty()
    );
    let tolerant = pod(json!({"containers": [{"name": "c", "image": "nginx:1"}],
        "tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
    assert_eq!(
        update(&tolerant, |v| {
            v["spec"]["tolerations"].as_array_mut().unwrap().remove(0);
        }),
        vec![
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        ]
    );
    // A binding sets the node once.
    assert!(update(&old, |v| v["spec"]["nodeName"] = json!("node-1")).is_empty());
}

#[test]
fn other_pod_spec_changes_are_forbidden() {
    let old = pod(json!({"containers": [{"name": "c", "image": "nginx:1"}]}));
    let errs = update(&old, |v| v["spec"]["restartPolicy"] = json!("Never"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"),
        "{errs:?}"
    );
    assert!(errs[0].contains("restartPolicy: \"Always\""), "{errs:?}");
    assert_eq!(
        update(&old, |v| {
            v["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "d", "image": "x"}));
        }),
        vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
    );
    let bound =
        pod(json!({"containers": [{"name": "c", "image": "nginx:1"}], "nodeName": "node-1"}));
    let errs = update(&bound, |v| v["spec"]["nodeName"] = json!("node-2"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("spec: Forbidden: pod updates may not change fields other than"));
}

#[test]
fn pod_status_updates() {
    let old = pod(json!({"containers": [{"name": "c", "image": "i"}], "nodeName": "node-1"}));
    let mut v = serde_json::to_value(&old).unwrap();
    v["spec"]["nodeName"] = json!("node-2");
    v["status"]["podIPs"] = json!([{"ip": "10.1.0.5"}, {"ip": "10.1.0.6"}]);
    let new: Pod = serde_json::from_value(v).unwrap();
    assert_eq!(
        messages(&validate_pod_status_update(&new, &old)),
        vec![
            "status.nodeName: Forbidden: may not be changed directly",
            "status.podIPs: Invalid value: []core.PodIP{{IP:\"10.1.0.5\"}, {IP:\"10.1.0.6\"}}: may specify no more than one IP for each IP family",
        ]
    );
}

#[test]
fn template_specs_use_their_own_paths() {
    let t: PodTemplateSpec = serde_json::from_value(json!({"spec": {"containers": [{"name": "c"}],
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30}})).unwrap();
    assert_eq!(
        messages(&validate_pod_template_spec(
            &t,
            &Path::new("spec").child("template")
        )),
        vec![
            "spec.template.spec.containers[0].image: Required value",
            "spec.template.spec.containers[0].terminationMessagePolicy: Required value",
            "spec.template.spec.containers[0].imagePullPolicy: Required value",
        ]
    );
}

#[test]
fn dns_config() {
    let spec = json!({"containers": [{"name": "c", "image": "i"}], "dnsPolicy": "None"});
    assert_eq!(
        create(spec),
        vec!["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]
    );
    let spec = json!({"containers": [{"name": "c", "image": "i"}], "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["1.1.1.1", "not-an-ip"], "searches": ["_srv.example.com.", "Bad.example"]}});
    assert_eq!(
        create(spec),
        vec![
            "spec.dnsConfig.nameservers[1]: Invalid value: \"not-an-ip\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "spec.dnsConfig.searches[1]: Invalid value: \"Bad.example\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '_', '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ]
    );
}
