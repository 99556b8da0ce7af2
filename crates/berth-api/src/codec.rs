//! Decoding request bodies into the k8s-openapi types.
//!
//! Every object goes through its typed struct once on the way in: that is what makes a wrong
//! type (`"replicas": "three"`) a clear 400, and comparing what went in with what came back out
//! is how unknown fields are found for `fieldValidation=Strict|Warn`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::resources::ResourceInfo;

/// An object after its typed round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub object: Value,
    /// Paths (`spec.bogusField`, `spec.containers[0].foo`) present in the input that the type lacks.
    pub unknown_fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} in version \"{version}\" cannot be handled as a {kind}: {message}")]
pub struct DecodeError {
    pub kind: String,
    pub version: String,
    pub message: String,
}

/// Runs `value` through the k8s-openapi type of `info` and back.
pub fn decode(info: &ResourceInfo, value: Value) -> Result<Decoded, DecodeError> {
    let error = |message: String| DecodeError {
        kind: info.kind.to_string(),
        version: info.version.to_string(),
        message,
    };
    if !value.is_object() {
        return Err(error(format!(
            "expected a JSON object, got {}",
            json_type(&value)
        )));
    }
    let object = roundtrip(info, &value).map_err(|e| error(e.to_string()))?;
    let mut unknown_fields = Vec::new();
    find_unknown(&value, &object, String::new(), &mut unknown_fields);
    Ok(Decoded {
        object,
        unknown_fields,
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(value.clone())?;
    serde_json::to_value(typed)
}

fn roundtrip(info: &ResourceInfo, value: &Value) -> Result<Value, serde_json::Error> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coordination, core::v1 as core};
    use k8s_openapi::api::{
        discovery::v1 as discovery, events::v1 as events, storage::v1 as storage,
    };
    match (info.group, info.kind) {
        ("", "Namespace") => typed::<core::Namespace>(value),
        ("", "Node") => typed::<core::Node>(value),
        ("", "Pod") => typed::<core::Pod>(value),
        ("", "Service") => typed::<core::Service>(value),
        ("", "Endpoints") => typed::<core::Endpoints>(value),
        ("", "ConfigMap") => typed::<core::ConfigMap>(value),
        ("", "Secret") => typed::<core::Secret>(value),
        ("", "Event") => typed::<core::Event>(value),
        ("", "ServiceAccount") => typed::<core::ServiceAccount>(value),
        ("", "PersistentVolume") => typed::<core::PersistentVolume>(value),
        ("", "PersistentVolumeClaim") => typed::<core::PersistentVolumeClaim>(value),
        ("", "Binding") => typed::<core::Binding>(value),
        ("storage.k8s.io", "StorageClass") => typed::<storage::StorageClass>(value),
        ("apps", "Deployment") => typed::<apps::Deployment>(value),
        ("apps", "ReplicaSet") => typed::<apps::ReplicaSet>(value),
        ("apps", "StatefulSet") => typed::<apps::StatefulSet>(value),
        ("apps", "ControllerRevision") => typed::<apps::ControllerRevision>(value),
        ("discovery.k8s.io", "EndpointSlice") => typed::<discovery::EndpointSlice>(value),
        ("coordination.k8s.io", "Lease") => typed::<coordination::Lease>(value),
        ("events.k8s.io", "Event") => typed::<events::Event>(value),
        ("autoscaling", "Scale") => typed::<k8s_openapi::api::autoscaling::v1::Scale>(value),
        // Every resource in the table is listed above; an unlisted one passes through untyped.
        _ => Ok(value.clone()),
    }
}

/// Collects the paths of fields in `input` that did not survive into `output`.
fn find_unknown(input: &Value, output: &Value, path: String, found: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => {
            object_unknown(input, output, &path, found)
        }
        (Value::Array(input), Value::Array(output)) => {
            for (i, (a, b)) in input.iter().zip(output.iter()).enumerate() {
                find_unknown(a, b, format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn object_unknown(
    input: &Map<String, Value>,
    output: &Map<String, Value>,
    path: &str,
    found: &mut Vec<String>,
) {
    for (key, value) in input {
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match output.get(key) {
            Some(out) => find_unknown(value, out, child, found),
            // An explicit null is the same as an absent field.
            None if value.is_null() => {}
            None => found.push(child),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_by_path() {
        let pods = lookup("", "v1", "pods").unwrap();
        let decoded = decode(
            pods,
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},
                   "spec":{"bogus":1,"containers":[{"name":"a","image":"b","nope":true}]}}),
        )
        .unwrap();
        assert_eq!(
            decoded.unknown_fields,
            vec![
                "spec.bogus".to_string(),
                "spec.containers[0].nope".to_string()
            ]
        );
        assert_eq!(decoded.object["spec"]["containers"][0]["image"], "b");
    }

    #[test]
    fn wrong_types_are_errors_naming_the_kind() {
        let deployments = lookup("apps", "v1", "deployments").unwrap();
        let err = decode(
            deployments,
            json!({"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":"three"}}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment:"),
            "{err}"
        );
    }

    #[test]
    fn nulls_are_not_unknown() {
        let cms = lookup("", "v1", "configmaps").unwrap();
        let decoded =
            decode(cms, json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","labels":null},"data":{"a":"b"}}))
                .unwrap();
        assert!(decoded.unknown_fields.is_empty());
    }
}
