//! What defaulting fills in, per kind, and that it is safe to run twice.

use super::*;
use crate::resources::lookup_kind;
use serde_json::json;

fn defaulted(api_version: &str, kind: &str, mut v: Value) -> Value {
    apply_defaults(lookup_kind(api_version, kind).unwrap(), &mut v);
    v
}

#[test]
fn pods_get_spec_container_and_admission_defaults() {
    let v = defaulted(
        "v1",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
             "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
             "livenessProbe": {"httpGet": {"port": 80}}},
            {"name": "b", "image": "registry.local:5000/app:1.2"},
            {"name": "c", "image": "app@sha256:abc"},
            {"name": "d", "image": "app:latest"}
        ], "volumes": [{"name": "s", "secret": {"secretName": "x"}}, {"name": "h", "hostPath": {"path": "/x"}}]}}),
    );
    let spec = &v["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(
        spec["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
    let a = &spec["containers"][0];
    assert_eq!(a["imagePullPolicy"], "Always");
    assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(a["terminationMessagePolicy"], "File");
    assert_eq!(a["ports"][0]["protocol"], "TCP");
    assert_eq!(
        a["resources"]["requests"],
        json!({"cpu": "1", "memory": "1Gi"})
    );
    assert_eq!(
        a["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["containers"][1]["resources"], json!({}));
    assert_eq!(spec["containers"][2]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["containers"][3]["imagePullPolicy"], "Always");
    assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 420);
    assert_eq!(spec["volumes"][1]["hostPath"]["type"], "");
    assert_eq!(
        v["status"],
        json!({"phase": "Pending", "qosClass": "Burstable"})
    );
}

#[test]
fn qos_classes() {
    let qos = |resources: Value| {
        let v = defaulted(
            "v1",
            "Pod",
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "a", "image": "i", "resources": resources}]}}),
        );
        v["status"]["qosClass"].as_str().unwrap().to_string()
    };
    assert_eq!(qos(json!({})), "BestEffort");
    assert_eq!(
        qos(json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
        "Guaranteed"
    );
    assert_eq!(qos(json!({"requests": {"cpu": "100m"}})), "Burstable");
}

#[test]
fn defaulting_is_idempotent() {
    let once = defaulted(
        "v1",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "a", "image": "i"}],
            "tolerations": [{"operator": "Exists"}]}}),
    );
    let twice = defaulted("v1", "Pod", once.clone());
    assert_eq!(once, twice);
    // A toleration of everything already covers the default ones.
    assert_eq!(once["spec"]["tolerations"], json!([{"operator": "Exists"}]));
}

#[test]
fn templates_get_pod_spec_defaults_but_not_pod_only_ones() {
    let v = defaulted(
        "apps/v1",
        "Deployment",
        json!({"metadata": {"name": "d", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}),
    );
    let spec = &v["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert!(pod.get("enableServiceLinks").is_none());
    assert!(pod.get("serviceAccountName").is_none());
    assert!(pod.get("tolerations").is_none());
}

#[test]
fn stateful_sets_and_replica_sets() {
    let v = defaulted(
        "apps/v1",
        "StatefulSet",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
    );
    let spec = &v["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["status"],
        json!({"phase": "Pending"})
    );
    let rs = defaulted(
        "apps/v1",
        "ReplicaSet",
        json!({"metadata": {"name": "r", "namespace": "default"}, "spec": {"selector": {}}}),
    );
    assert_eq!(rs["spec"]["replicas"], 1);
}

#[test]
fn services() {
    let v = defaulted(
        "v1",
        "Service",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
    );
    let spec = &v["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(
        spec["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(spec["ports"][1]["targetPort"], "https");
    assert!(spec.get("externalTrafficPolicy").is_none());

    let np = defaulted(
        "v1",
        "Service",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.5", "ports": [{"port": 80}]}}),
    );
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(np["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(np["spec"]["clusterIPs"], json!(["10.0.0.5"]));

    let headless = defaulted(
        "v1",
        "Service",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"clusterIP": "None"}}),
    );
    assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");

    let ext = defaulted(
        "v1",
        "Service",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    );
    assert!(ext["spec"].get("ipFamilies").is_none());
    assert!(ext["spec"].get("internalTrafficPolicy").is_none());

    let sticky = defaulted(
        "v1",
        "Service",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"sessionAffinity": "ClientIP"}}),
    );
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
}

#[test]
fn services_drop_what_their_type_cannot_have() {
    // What a patch from NodePort to ClusterIP leaves behind.
    let v = defaulted(
        "v1",
        "Service",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.5",
            "externalTrafficPolicy": "Cluster", "ports": [{"port": 80, "nodePort": 30080}]}}),
    );
    assert!(v["spec"]["ports"][0].get("nodePort").is_none());
    assert!(v["spec"].get("externalTrafficPolicy").is_none());
    let ext = defaulted(
        "v1",
        "Service",
        json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "db.example.com",
            "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}}),
    );
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        assert!(ext["spec"].get(field).is_none(), "{field}");
    }
    let services = lookup_kind("v1", "Service").unwrap();
    assert!(crate::validation::validate_create(services, &ext).is_empty());
}

#[test]
fn storage_kinds() {
    let pv = defaulted(
        "v1",
        "PersistentVolume",
        json!({"metadata": {"name": "pv", "namespace": "stray"}, "spec": {"hostPath": {"path": "/x"}}}),
    );
    assert!(pv["metadata"].get("namespace").is_none());
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["status"]["phase"], "Pending");
    let pvc = defaulted(
        "v1",
        "PersistentVolumeClaim",
        json!({"metadata": {"name": "c", "namespace": "default"}, "spec": {}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let sc = defaulted(
        "storage.k8s.io/v1",
        "StorageClass",
        json!({"metadata": {"name": "sc"}, "provisioner": "x.io/y"}),
    );
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(sc["volumeBindingMode"], "Immediate");
}

#[test]
fn secrets_namespaces_nodes_endpoints() {
    let s = defaulted(
        "v1",
        "Secret",
        json!({"metadata": {"name": "s", "namespace": "default"}, "data": {"a": "YQ=="}, "stringData": {"b": "hi"}}),
    );
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"], json!({"a": "YQ==", "b": "aGk="}));
    assert!(s.get("stringData").is_none());

    let ns = defaulted("v1", "Namespace", json!({"metadata": {"name": "dev"}}));
    assert_eq!(ns["spec"], json!({"finalizers": ["kubernetes"]}));
    assert_eq!(ns["status"], json!({"phase": "Active"}));
    let deleting = json!({"metadata": {"name": "dev", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {}, "status": {"phase": "Terminating"}});
    let after = defaulted("v1", "Namespace", deleting.clone());
    assert_eq!(
        (&after["spec"], &after["status"]),
        (&deleting["spec"], &deleting["status"])
    );

    let node = defaulted(
        "v1",
        "Node",
        json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2"}}}),
    );
    assert_eq!(node["status"]["allocatable"], json!({"cpu": "2"}));

    let ep = defaulted(
        "v1",
        "Endpoints",
        json!({"metadata": {"name": "e", "namespace": "default"}, "subsets": [{"ports": [{"port": 80}]}]}),
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

    let es = defaulted(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        json!({"metadata": {"name": "e", "namespace": "default"}, "addressType": "IPv4", "endpoints": [], "ports": [{"port": 80}]}),
    );
    assert_eq!(
        es["ports"][0],
        json!({"name": "", "port": 80, "protocol": "TCP"})
    );
}

#[test]
fn undecodable_objects_are_left_alone() {
    let mut v = json!({"spec": {"containers": "nope"}});
    let before = v.clone();
    apply_defaults(lookup_kind("v1", "Pod").unwrap(), &mut v);
    assert_eq!(v, before);
}

#[test]
fn pull_policy_follows_the_tag() {
    use super::pod::pull_policy_for;
    assert_eq!(pull_policy_for("nginx"), "Always");
    assert_eq!(pull_policy_for("nginx:latest"), "Always");
    assert_eq!(pull_policy_for("nginx:1.27"), "IfNotPresent");
    assert_eq!(pull_policy_for("localhost:5000/nginx"), "Always");
    assert_eq!(pull_policy_for("localhost:5000/nginx:2"), "IfNotPresent");
    assert_eq!(pull_policy_for("nginx@sha256:0123"), "IfNotPresent");
}
