//! The resource types the garbage collector and the namespace controller act on, and kube's
//! dynamic API for each. Both work on every kind berth serves rather than on typed structs,
//! so both read the API server's own resource table (`berth_api::resources`) and must agree
//! on what it contains: this module is that one agreement.

use berth_api::resources::{self, ResourceInfo};
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};

/// Every resource type that can be listed, watched and deleted. A resource that is only
/// another shape of one already listed (events.k8s.io Events are core Events) is left out, so
/// each object is seen once.
pub fn collectable() -> Vec<&'static ResourceInfo> {
    resources::RESOURCES
        .iter()
        .filter(|r| {
            ["list", "watch", "delete"]
                .iter()
                .all(|v| r.verbs.contains(v))
        })
        .filter(|r| std::ptr::eq(berth_api::conversion::storage_resource(r), *r))
        .collect()
}

/// kube's dynamic description of a resource in berth's table.
pub fn api_resource(info: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: info.group.to_string(),
        version: info.version.to_string(),
        api_version: info.api_version(),
        kind: info.kind.to_string(),
        plural: info.plural.to_string(),
    }
}

/// The dynamic API of `info`, in `namespace` when it is namespaced.
pub fn dynamic_api(
    client: &Client,
    info: &ResourceInfo,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let ar = api_resource(info);
    match namespace {
        Some(ns) if info.namespaced() => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_covered_resources_are_listable_and_each_seen_once() {
        let kinds = collectable();
        assert!(kinds.iter().any(|r| r.plural == "configmaps"));
        assert!(kinds.iter().any(|r| r.plural == "namespaces"));
        let events = kinds.iter().filter(|r| r.plural == "events").count();
        assert_eq!(events, 1, "events.k8s.io Events are core Events");
    }
}
