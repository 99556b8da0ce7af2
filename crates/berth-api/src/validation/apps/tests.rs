//! Workload rules, checked on defaulted fixtures the way the API server sees them.

use super::*;
use crate::defaults::apply_defaults;
use crate::resources::lookup;
use serde_json::{Value, json};

fn messages(errs: &Errors) -> Vec<String> {
    errs.iter().map(FieldError::message).collect()
}

fn defaulted<T: serde::de::DeserializeOwned>(plural: &str, mut v: Value) -> T {
    apply_defaults(lookup("apps", "v1", plural).unwrap(), &mut v);
    serde_json::from_value(v).unwrap()
}

fn deployment_json() -> Value {
    json!({"metadata": {"name": "nginx", "namespace": "default"}, "spec": {
        "selector": {"matchLabels": {"app": "nginx"}},
        "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}
    }})
}

fn deployment(v: Value) -> Deployment {
    defaulted("deployments", v)
}

#[test]
fn good_deployment_passes() {
    assert_eq!(
        messages(&validate_deployment(&deployment(deployment_json()), true)),
        Vec::<String>::new()
    );
}

#[test]
fn selector_must_match_template() {
    let mut v = deployment_json();
    v["spec"]["template"]["metadata"]["labels"] = json!({"app": "web"});
    assert_eq!(
        messages(&validate_deployment(&deployment(v), true)),
        vec![
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
        ]
    );
}

#[test]
fn missing_and_empty_selectors() {
    let mut v = deployment_json();
    v["spec"].as_object_mut().unwrap().remove("selector");
    assert_eq!(
        messages(&validate_deployment(&deployment(v.clone()), true)),
        vec![
            "spec.selector: Required value",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"nginx\"}: `selector` does not match template `labels`",
        ]
    );
    v["spec"]["selector"] = json!({"matchLabels": {}});
    assert_eq!(
        messages(&validate_deployment(&deployment(v), true)),
        vec![
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
        ]
    );
}

#[test]
fn replicas_strategy_and_deadlines() {
    let mut v = deployment_json();
    v["spec"]["replicas"] = json!(-1);
    v["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
    v["spec"]["revisionHistoryLimit"] = json!(-2);
    v["spec"]["minReadySeconds"] = json!(10);
    v["spec"]["progressDeadlineSeconds"] = json!(5);
    v["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(
        messages(&validate_deployment(&deployment(v), true)),
        vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}: may not be 0 when `maxSurge` is 0",
            "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
            "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds",
        ]
    );
}

#[test]
fn recreate_has_no_rolling_update_and_unknown_strategies_are_refused() {
    let mut v = deployment_json();
    v["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    assert_eq!(
        messages(&validate_deployment(&deployment(v.clone()), true)),
        vec![
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
        ]
    );
    v["spec"]["strategy"] = json!({"type": "BlueGreen"});
    assert_eq!(
        messages(&validate_deployment(&deployment(v), true)),
        vec![
            "spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"BlueGreen\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\""
        ]
    );
    let mut v = deployment_json();
    v["spec"]["strategy"] = json!({"rollingUpdate": {"maxUnavailable": "120%", "maxSurge": "x"}});
    assert_eq!(
        messages(&validate_deployment(&deployment(v), true)),
        vec![
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"x\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"120%\"}: must not be greater than 100%",
        ]
    );
}

#[test]
fn deployment_template_is_validated_as_a_pod_spec() {
    let mut v = deployment_json();
    v["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 0}]);
    assert_eq!(
        messages(&validate_deployment(&deployment(v), true)),
        vec!["spec.template.spec.containers[0].ports[0].containerPort: Required value"]
    );
}

#[test]
fn deployment_selector_is_immutable() {
    let old = deployment(deployment_json());
    let mut v = deployment_json();
    v["spec"]["selector"] = json!({"matchLabels": {"app": "nginx", "tier": "web"}});
    v["spec"]["template"]["metadata"]["labels"] = json!({"app": "nginx", "tier": "web"});
    assert_eq!(
        messages(&validate_deployment_update(&deployment(v), &old)),
        vec![
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"nginx\", \"tier\":\"web\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        ]
    );
    let mut scaled = deployment_json();
    scaled["spec"]["replicas"] = json!(3);
    assert!(validate_deployment_update(&deployment(scaled), &old).is_empty());
}

#[test]
fn replica_sets() {
    let v = json!({"metadata": {"name": "web-abc", "namespace": "default"}, "spec": {
        "replicas": -1,
        "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let rs: ReplicaSet = defaulted("replicasets", v);
    assert_eq!(
        messages(&validate_replica_set(&rs, true)),
        vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`",
        ]
    );
}

fn sts_json() -> Value {
    json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {
        "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

#[test]
fn stateful_sets() {
    let good: StatefulSet = defaulted("statefulsets", sts_json());
    assert_eq!(
        messages(&validate_stateful_set(&good, true)),
        Vec::<String>::new()
    );
    let mut v = sts_json();
    v["metadata"]["name"] = json!("db.main");
    v["spec"]["podManagementPolicy"] = json!("Random");
    v["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": -1}});
    v["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = json!([]);
    let bad: StatefulSet = defaulted("statefulsets", v);
    assert_eq!(
        messages(&validate_stateful_set(&bad, true)),
        vec![
            "metadata.name: Invalid value: \"db.main\": must not contain dots",
            "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
            "spec.updateStrategy.rollingUpdate.partition: Invalid value: -1: must be greater than or equal to 0",
            "spec.volumeClaimTemplates[0].spec.accessModes: Required value: at least 1 access mode is required",
        ]
    );
}

#[test]
fn stateful_set_updates() {
    let old: StatefulSet = defaulted("statefulsets", sts_json());
    let mut v = sts_json();
    v["spec"]["replicas"] = json!(3);
    v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:17");
    v["spec"]["revisionHistoryLimit"] = json!(3);
    assert!(validate_stateful_set_update(&defaulted("statefulsets", v), &old).is_empty());
    let mut v = sts_json();
    v["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert_eq!(
        messages(&validate_stateful_set_update(
            &defaulted("statefulsets", v),
            &old
        )),
        vec![
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        ]
    );
}

#[test]
fn controller_revisions() {
    let cr: ControllerRevision = serde_json::from_value(
        json!({"metadata": {"name": "web-1", "namespace": "default"}, "revision": -1}),
    )
    .unwrap();
    assert_eq!(
        messages(&validate_controller_revision(&cr, true)),
        vec![
            "data: Required value: data is mandatory",
            "revision: Invalid value: -1: must be greater than or equal to 0"
        ]
    );
    let old: ControllerRevision = serde_json::from_value(json!({"metadata": {"name": "web-1", "namespace": "default"}, "revision": 1, "data": {"a": 1}})).unwrap();
    let new: ControllerRevision = serde_json::from_value(json!({"metadata": {"name": "web-1", "namespace": "default"}, "revision": 1, "data": {"a": 2}})).unwrap();
    assert_eq!(
        messages(&validate_controller_revision_update(&new, &old)),
        vec!["data: Invalid value: {\"a\":2}: field is immutable"]
    );
}

#[test]
fn workload_status_updates() {
    let old: StatefulSet = defaulted("statefulsets", sts_json());
    let mut v = serde_json::to_value(&old).unwrap();
    v["status"] =
        json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 2, "collisionCount": 1});
    let mut with_collisions = v.clone();
    with_collisions["status"]["collisionCount"] = json!(3);
    let old: StatefulSet = serde_json::from_value(with_collisions).unwrap();
    let new: StatefulSet = serde_json::from_value(v).unwrap();
    assert_eq!(
        messages(&validate_stateful_set_status_update(&new, &old)),
        vec![
            "status.availableReplicas: Invalid value: 2: cannot be greater than status.replicas",
            "status.availableReplicas: Invalid value: 2: cannot be greater than status.readyReplicas",
            "status.collisionCount: Invalid value: 1: cannot be decremented",
        ]
    );
}
