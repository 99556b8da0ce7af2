//! The table of resources berth serves, as Kubernetes defines them.

/// Whether a resource lives in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// A subresource and the verbs it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// (group, version, kind) of what the subresource returns.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL path segment, e.g. "deployments".
    pub plural: &'static str,
    pub singular: &'static str,
    pub scope: Scope,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// "apps/v1", or "v1" for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// "deployments.apps", or "pods" for the core group: how Kubernetes names a resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// The store key prefix for all objects of this resource.
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/core/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}{}/{}", self.key_prefix(), ns, name),
            _ => format!("{}{}", self.key_prefix(), name),
        }
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const STATUS: Subresource = Subresource {
    name: "status",
    group: "",
    version: "",
    kind: "",
    verbs: &["get", "patch", "update"],
};
const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: &["get", "patch", "update"],
};

const fn status_of(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        group,
        version,
        kind,
        ..STATUS
    }
}

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $scope:ident, [$($short:expr),*], [$($cat:expr),*], [$($sub:expr),*]) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            scope: Scope::$scope,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            verbs: ALL_VERBS,
            subresources: &[$($sub),*],
        }
    };
}

/// Every resource berth serves.
pub static RESOURCES: &[ResourceInfo] = &[
    resource!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        Cluster,
        ["ns"],
        [],
        [status_of("", "v1", "Namespace")]
    ),
    resource!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        Cluster,
        ["no"],
        [],
        [status_of("", "v1", "Node")]
    ),
    resource!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        Namespaced,
        ["po"],
        ["all"],
        [
            status_of("", "v1", "Pod"),
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"]
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"]
            },
            Subresource {
                name: "exec",
                group: "",
                version: "v1",
                kind: "PodExecOptions",
                verbs: &["create", "get"]
            },
            Subresource {
                name: "attach",
                group: "",
                version: "v1",
                kind: "PodAttachOptions",
                verbs: &["create", "get"]
            },
            Subresource {
                name: "portforward",
                group: "",
                version: "v1",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"]
            }
        ]
    ),
    resource!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        Namespaced,
        ["svc"],
        ["all"],
        [status_of("", "v1", "Service")]
    ),
    resource!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        Namespaced,
        ["ep"],
        [],
        []
    ),
    resource!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        Namespaced,
        ["cm"],
        [],
        []
    ),
    resource!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        Namespaced,
        [],
        [],
        []
    ),
    resource!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        Namespaced,
        ["ev"],
        [],
        []
    ),
    resource!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        Namespaced,
        ["sa"],
        [],
        []
    ),
    resource!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        Cluster,
        ["pv"],
        [],
        [status_of("", "v1", "PersistentVolume")]
    ),
    resource!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        Namespaced,
        ["pvc"],
        [],
        [status_of("", "v1", "PersistentVolumeClaim")]
    ),
    resource!(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        Cluster,
        ["sc"],
        [],
        []
    ),
    resource!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        Namespaced,
        ["deploy"],
        ["all"],
        [status_of("apps", "v1", "Deployment"), SCALE]
    ),
    resource!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        Namespaced,
        ["rs"],
        ["all"],
        [status_of("apps", "v1", "ReplicaSet"), SCALE]
    ),
    resource!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        Namespaced,
        ["sts"],
        ["all"],
        [status_of("apps", "v1", "StatefulSet"), SCALE]
    ),
    resource!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        Namespaced,
        [],
        [],
        []
    ),
    resource!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        Namespaced,
        [],
        [],
        []
    ),
    resource!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        Namespaced,
        [],
        [],
        []
    ),
    resource!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        Namespaced,
        ["ev"],
        [],
        []
    ),
];

/// The resource served at `/{group}/{version}/{plural}`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource for an object's apiVersion and kind.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// ("apps", "v1") from "apps/v1"; ("", "v1") from "v1".
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// The API groups berth serves, in the order discovery lists them (core first).
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_and_found() {
        for r in RESOURCES {
            assert_eq!(lookup(r.group, r.version, r.plural), Some(r));
            assert_eq!(lookup_kind(&r.api_version(), r.kind), Some(r));
        }
    }

    #[test]
    fn keys_are_per_scope() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web-0"),
            "/registry/core/pods/default/web-0"
        );
        let sc = lookup("storage.k8s.io", "v1", "storageclasses").unwrap();
        assert_eq!(
            sc.key(None, "local-path"),
            "/registry/storage.k8s.io/storageclasses/local-path"
        );
        assert_eq!(pods.group_resource(), "pods");
        assert_eq!(
            lookup("apps", "v1", "deployments")
                .unwrap()
                .group_resource(),
            "deployments.apps"
        );
    }
}
