//! API discovery: the documents that tell a client which groups, versions and resources berth
//! serves, all derived from [`crate::resources::RESOURCES`].
//!
//! Two generations of the protocol are answered:
//! - **aggregated** (`apidiscovery.k8s.io/v2`, and the older `v2beta1`): `GET /api` and `GET /apis`
//!   return everything in two requests. kubectl asks for it first and, when it gets it with the
//!   exact content type, makes no further discovery requests ([`wants_aggregated`] decides);
//! - **legacy**: `GET /api` ([`api_versions`]), `GET /apis` ([`api_group_list`]),
//!   `GET /apis/<group>` ([`api_group`]) and one `APIResourceList` per group-version
//!   ([`api_resource_list`]), which older clients and kube-rs use.
//!
//! The output mirrors kube-apiserver's: resources sorted by name, subresources listed as
//! `pods/status` entries in the legacy form, `scope`/`singularResource`/`responseKind` in the
//! aggregated form. `storageVersionHash` is left out: it is optional and only consumed by the
//! storage-version migrator.

use serde_json::{Map, Value, json};

use crate::resources::{RESOURCES, ResourceInfo, Scope, Subresource};

/// The content type of an aggregated discovery (v2) answer. kubectl treats the body as legacy
/// discovery unless the response carries exactly this type.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The content type of the older aggregated discovery (v2beta1), for clients that ask only for it
/// (kubectl 1.26–1.29 send v2beta1 next to, or instead of, v2).
pub const AGGREGATED_V2BETA1_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Where kube-apiserver places the groups berth serves in `/apis`; clients resolve ambiguous
/// resource names in this order. Groups missing here follow in the resource table's order.
const GROUP_PRIORITY: &[&str] = &[
    "apps",
    "events.k8s.io",
    "autoscaling",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
];

/// `GET /api` with an aggregated-discovery Accept header: one item, the core group (name "").
pub fn aggregated_core() -> Value {
    discovery_list(&[""])
}

/// `GET /apis` with an aggregated-discovery Accept header: every non-core group.
pub fn aggregated_apis() -> Value {
    discovery_list(&named_groups())
}

/// Re-labels an aggregated body built by [`aggregated_core`] or [`aggregated_apis`] for the
/// content type [`wants_aggregated`] chose: v2beta1 has the same shape under another apiVersion.
pub fn for_content_type(mut body: Value, content_type: &str) -> Value {
    if content_type == AGGREGATED_V2BETA1_CONTENT_TYPE
        && let Some(object) = body.as_object_mut()
    {
        object.insert(
            "apiVersion".into(),
            Value::from("apidiscovery.k8s.io/v2beta1"),
        );
    }
    body
}

/// Legacy `GET /api`: the core group's versions.
pub fn api_versions() -> Value {
    // serverAddressByClientCIDRs is required by the type but only meaningful behind a proxy
    // that rewrites addresses; an empty list tells clients to keep using the address they dialled.
    json!({
        "kind": "APIVersions",
        "versions": versions_of(""),
        "serverAddressByClientCIDRs": [],
    })
}

/// Legacy `GET /apis`: every non-core group with its versions and preferred version.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = named_groups()
        .into_iter()
        .map(|group| group_body(group, false))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `GET /apis/<group>`; `None` for a group berth does not serve (and for the core group,
/// which lives at `/api`).
pub fn api_group(group: &str) -> Option<Value> {
    if group.is_empty() {
        return None;
    }
    let group = named_groups().into_iter().find(|g| *g == group)?;
    Some(group_body(group, true))
}

/// Legacy `GET /api/v1` (group "") or `GET /apis/<group>/<version>`: the resources of one
/// group-version, subresources included as `<plural>/<subresource>` entries.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let resources = resources_of(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for r in resources {
        entries.push(legacy_resource(r));
        for sub in sorted_subresources(r) {
            entries.push(legacy_subresource(r, sub));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": entries,
    }))
}

/// Whether an `Accept` header asks for aggregated discovery, and with which content type to answer.
///
/// v2 wins when it is acceptable at all; v2beta1 is chosen only when the client does not accept v2.
/// `q=0` excludes a media range. A plain `application/json` (or `*/*`) is not a request for the
/// aggregated form: such clients get legacy discovery.
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    let mut v2beta1 = false;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        if !media_type.eq_ignore_ascii_case("application/json") {
            continue;
        }
        let (mut g, mut v, mut as_, mut excluded) = (None, None, None, false);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim() {
                "g" => g = Some(value),
                "v" => v = Some(value),
                "as" => as_ = Some(value),
                "q" => excluded = value.parse::<f32>().is_ok_and(|q| q <= 0.0),
                _ => {}
            }
        }
        if excluded || g != Some("apidiscovery.k8s.io") || as_ != Some("APIGroupDiscoveryList") {
            continue;
        }
        match v {
            Some("v2") => return Some(AGGREGATED_CONTENT_TYPE),
            Some("v2beta1") => v2beta1 = true,
            _ => {}
        }
    }
    v2beta1.then_some(AGGREGATED_V2BETA1_CONTENT_TYPE)
}

/// Non-core groups in kube-apiserver's order.
fn named_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = crate::resources::groups()
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect();
    // A stable sort keeps the table's order among groups that have no known priority.
    groups.sort_by_key(|g| {
        GROUP_PRIORITY
            .iter()
            .position(|p| p == g)
            .unwrap_or(GROUP_PRIORITY.len())
    });
    groups
}

/// The versions of a group, preferred (first listed in the table) first.
fn versions_of(group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        if !versions.contains(&r.version) {
            versions.push(r.version);
        }
    }
    versions
}

/// The resources of one group-version, sorted by plural as kube-apiserver lists them.
fn resources_of(group: &str, version: &str) -> Vec<&'static ResourceInfo> {
    let mut resources: Vec<&'static ResourceInfo> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    resources.sort_by_key(|r| r.plural);
    resources
}

fn sorted_subresources(r: &ResourceInfo) -> Vec<&'static Subresource> {
    let mut subs: Vec<&'static Subresource> = r.subresources.iter().collect();
    subs.sort_by_key(|s| s.name);
    subs
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Namespaced => "Namespaced",
        Scope::Cluster => "Cluster",
    }
}

/// (group, version, kind) a subresource answers with; the table leaves the group and version
/// empty for subresources that return the parent's own kind (`status`).
fn subresource_gvk<'a>(r: &'a ResourceInfo, sub: &'a Subresource) -> (&'a str, &'a str, &'a str) {
    if sub.kind.is_empty() {
        (r.group, r.version, r.kind)
    } else if sub.version.is_empty() {
        (r.group, r.version, sub.kind)
    } else {
        (sub.group, sub.version, sub.kind)
    }
}

fn discovery_list(groups: &[&str]) -> Value {
    let items: Vec<Value> = groups.iter().map(|g| group_discovery(g)).collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn group_discovery(group: &str) -> Value {
    let versions: Vec<Value> = versions_of(group)
        .into_iter()
        .map(|version| {
            let resources: Vec<Value> = resources_of(group, version)
                .into_iter()
                .map(resource_discovery)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group}, "versions": versions})
}

fn resource_discovery(r: &ResourceInfo) -> Value {
    let mut out = Map::new();
    out.insert("resource".into(), r.plural.into());
    out.insert(
        "responseKind".into(),
        json!({"group": r.group, "version": r.version, "kind": r.kind}),
    );
    out.insert("scope".into(), scope_name(r.scope).into());
    out.insert("singularResource".into(), r.singular.into());
    out.insert("verbs".into(), r.verbs.into());
    // Go's omitempty: absent lists are left out rather than sent empty.
    if !r.short_names.is_empty() {
        out.insert("shortNames".into(), r.short_names.into());
    }
    if !r.categories.is_empty() {
        out.insert("categories".into(), r.categories.into());
    }
    let subresources: Vec<Value> = sorted_subresources(r)
        .into_iter()
        .map(|sub| {
            let (group, version, kind) = subresource_gvk(r, sub);
            json!({
                "subresource": sub.name,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": sub.verbs,
            })
        })
        .collect();
    if !subresources.is_empty() {
        out.insert("subresources".into(), subresources.into());
    }
    Value::Object(out)
}

fn group_body(group: &str, with_kind: bool) -> Value {
    let versions: Vec<Value> = versions_of(group)
        .into_iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    let mut body = json!({"name": group, "versions": versions, "preferredVersion": preferred});
    if with_kind && let Some(object) = body.as_object_mut() {
        object.insert("kind".into(), "APIGroup".into());
        object.insert("apiVersion".into(), "v1".into());
    }
    body
}

fn legacy_resource(r: &ResourceInfo) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), r.plural.into());
    out.insert("singularName".into(), r.singular.into());
    out.insert("namespaced".into(), r.namespaced().into());
    out.insert("kind".into(), r.kind.into());
    out.insert("verbs".into(), r.verbs.into());
    if !r.short_names.is_empty() {
        out.insert("shortNames".into(), r.short_names.into());
    }
    if !r.categories.is_empty() {
        out.insert("categories".into(), r.categories.into());
    }
    Value::Object(out)
}

fn legacy_subresource(r: &ResourceInfo, sub: &Subresource) -> Value {
    let (group, version, kind) = subresource_gvk(r, sub);
    let mut out = Map::new();
    out.insert("name".into(), format!("{}/{}", r.plural, sub.name).into());
    // kube-apiserver leaves singularName empty for subresources.
    out.insert("singularName".into(), "".into());
    out.insert("namespaced".into(), r.namespaced().into());
    // group and version are only set when they differ from the list's group-version (scale).
    if (group, version) != (r.group, r.version) {
        out.insert("group".into(), group.into());
        out.insert("version".into(), version.into());
    }
    out.insert("kind".into(), kind.into());
    out.insert("verbs".into(), sub.verbs.into());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        APIGroup, APIGroupList, APIResourceList, APIVersions,
    };
    use serde::Deserialize;

    // apidiscovery.k8s.io/v2 is not in k8s-openapi; these mirror the Go types field for field
    // (k8s.io/api/apidiscovery/v2) and refuse anything else, so a misspelt field fails the test.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct GroupDiscoveryList {
        kind: String,
        api_version: String,
        metadata: Value,
        items: Vec<GroupDiscovery>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GroupDiscovery {
        metadata: Meta,
        versions: Vec<VersionDiscovery>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Meta {
        name: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VersionDiscovery {
        version: String,
        resources: Vec<ResourceDiscovery>,
        freshness: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct ResourceDiscovery {
        resource: String,
        response_kind: Gvk,
        scope: String,
        singular_resource: String,
        verbs: Vec<String>,
        #[serde(default)]
        short_names: Vec<String>,
        #[serde(default)]
        categories: Vec<String>,
        #[serde(default)]
        subresources: Vec<SubresourceDiscovery>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct SubresourceDiscovery {
        subresource: String,
        response_kind: Gvk,
        verbs: Vec<String>,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Gvk {
        group: String,
        version: String,
        kind: String,
    }

    fn parse(value: Value) -> GroupDiscoveryList {
        serde_json::from_value(value).expect("aggregated discovery has the apidiscovery/v2 shape")
    }

    fn resource<'a>(list: &'a GroupDiscoveryList, plural: &str) -> &'a ResourceDiscovery {
        list.items
            .iter()
            .flat_map(|g| &g.versions)
            .flat_map(|v| &v.resources)
            .find(|r| r.resource == plural)
            .expect("resource listed")
    }

    #[test]
    fn aggregated_core_is_one_unnamed_group() {
        let list = parse(aggregated_core());
        assert_eq!(list.kind, "APIGroupDiscoveryList");
        assert_eq!(list.api_version, "apidiscovery.k8s.io/v2");
        assert_eq!(list.metadata, json!({}));
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].metadata.name, "");
        assert_eq!(list.items[0].versions[0].version, "v1");
        assert_eq!(list.items[0].versions[0].freshness, "Current");

        let pods = resource(&list, "pods");
        assert_eq!(pods.scope, "Namespaced");
        assert_eq!(pods.singular_resource, "pod");
        assert_eq!(
            pods.verbs,
            [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ]
        );
        assert_eq!(pods.short_names, ["po"]);
        assert_eq!(pods.categories, ["all"]);
        assert_eq!(
            pods.response_kind,
            Gvk {
                group: "".into(),
                version: "v1".into(),
                kind: "Pod".into()
            }
        );
        let subs: Vec<&str> = pods
            .subresources
            .iter()
            .map(|s| s.subresource.as_str())
            .collect();
        assert_eq!(
            subs,
            ["attach", "binding", "exec", "log", "portforward", "status"]
        );
        let exec = &pods.subresources[2];
        assert_eq!(exec.response_kind.kind, "PodExecOptions");
        assert_eq!(exec.verbs, ["create", "get"]);
        let status = &pods.subresources[5];
        assert_eq!(status.response_kind.kind, "Pod");
        assert_eq!(status.verbs, ["get", "patch", "update"]);

        let pvs = resource(&list, "persistentvolumes");
        assert_eq!(pvs.scope, "Cluster");
        let cms = resource(&list, "configmaps");
        assert!(cms.categories.is_empty() && cms.subresources.is_empty());
        assert_eq!(resource(&list, "events").short_names, ["ev"]);
    }

    #[test]
    fn aggregated_apis_lists_every_named_group_with_scale() {
        let list = parse(aggregated_apis());
        let names: Vec<&str> = list
            .items
            .iter()
            .map(|g| g.metadata.name.as_str())
            .collect();
        assert_eq!(names[0], "apps");
        assert!(!names.contains(&""));
        for group in crate::resources::groups()
            .into_iter()
            .filter(|g| !g.is_empty())
        {
            assert!(names.contains(&group), "{group} missing");
        }
        let sts = resource(&list, "statefulsets");
        assert_eq!(sts.short_names, ["sts"]);
        assert_eq!(sts.categories, ["all"]);
        let scale = sts
            .subresources
            .iter()
            .find(|s| s.subresource == "scale")
            .expect("scale advertised");
        assert_eq!(
            scale.response_kind,
            Gvk {
                group: "autoscaling".into(),
                version: "v1".into(),
                kind: "Scale".into()
            }
        );
        // Both Event kinds carry upstream's `ev` short name.
        let events = list
            .items
            .iter()
            .find(|g| g.metadata.name == "events.k8s.io")
            .expect("events.k8s.io served");
        assert_eq!(events.versions[0].resources[0].short_names, ["ev"]);
        assert_eq!(events.versions[0].resources[0].response_kind.kind, "Event");
    }

    #[test]
    fn v2beta1_relabels_the_same_body() {
        let body = for_content_type(aggregated_apis(), AGGREGATED_V2BETA1_CONTENT_TYPE);
        assert_eq!(body["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let body = for_content_type(aggregated_apis(), AGGREGATED_CONTENT_TYPE);
        assert_eq!(body["apiVersion"], "apidiscovery.k8s.io/v2");
    }

    #[test]
    fn legacy_documents_parse_as_k8s_types() {
        let versions: APIVersions = serde_json::from_value(api_versions()).expect("APIVersions");
        assert_eq!(versions.versions, ["v1"]);

        let groups: APIGroupList = serde_json::from_value(api_group_list()).expect("APIGroupList");
        let apps = groups
            .groups
            .iter()
            .find(|g| g.name == "apps")
            .expect("apps listed");
        assert_eq!(
            apps.preferred_version
                .as_ref()
                .map(|v| v.group_version.as_str()),
            Some("apps/v1")
        );
        assert!(groups.groups.iter().all(|g| !g.name.is_empty()));

        let group: APIGroup =
            serde_json::from_value(api_group("storage.k8s.io").expect("served")).expect("APIGroup");
        assert_eq!(group.versions[0].group_version, "storage.k8s.io/v1");
        assert!(api_group("").is_none());
        assert!(api_group("batch").is_none());
    }

    #[test]
    fn legacy_resource_lists_carry_subresources_as_entries() {
        let core: APIResourceList =
            serde_json::from_value(api_resource_list("", "v1").expect("core served"))
                .expect("APIResourceList");
        assert_eq!(core.group_version, "v1");
        let names: Vec<&str> = core.resources.iter().map(|r| r.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "kube-apiserver lists resources by name");
        let pods = core
            .resources
            .iter()
            .find(|r| r.name == "pods")
            .expect("pods");
        assert!(pods.namespaced);
        assert_eq!(pods.singular_name, "pod");
        assert_eq!(pods.short_names.as_deref(), Some(&["po".to_string()][..]));
        assert_eq!(pods.categories.as_deref(), Some(&["all".to_string()][..]));
        let log = core
            .resources
            .iter()
            .find(|r| r.name == "pods/log")
            .expect("pods/log");
        assert_eq!(log.kind, "Pod");
        assert_eq!(log.verbs, ["get"]);
        assert!(
            !core
                .resources
                .iter()
                .find(|r| r.name == "nodes")
                .expect("nodes")
                .namespaced
        );

        let apps: APIResourceList =
            serde_json::from_value(api_resource_list("apps", "v1").expect("apps served"))
                .expect("APIResourceList");
        assert_eq!(apps.group_version, "apps/v1");
        let scale = apps
            .resources
            .iter()
            .find(|r| r.name == "deployments/scale")
            .expect("scale entry");
        assert_eq!(scale.group.as_deref(), Some("autoscaling"));
        assert_eq!(scale.version.as_deref(), Some("v1"));
        assert_eq!(scale.kind, "Scale");
        let status = apps
            .resources
            .iter()
            .find(|r| r.name == "deployments/status")
            .expect("status entry");
        assert_eq!(
            (status.group.as_deref(), status.kind.as_str()),
            (None, "Deployment")
        );

        assert!(api_resource_list("apps", "v1beta1").is_none());
        assert!(api_resource_list("nope", "v1").is_none());
    }

    #[test]
    fn accept_headers_choose_the_aggregated_version() {
        // kubectl's exact DISC header.
        let disc = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(wants_aggregated(disc), Some(AGGREGATED_CONTENT_TYPE));
        assert_eq!(
            wants_aggregated(
                "application/json; as=APIGroupDiscoveryList; v=v2beta1; g=apidiscovery.k8s.io"
            ),
            Some(AGGREGATED_V2BETA1_CONTENT_TYPE)
        );
        assert_eq!(
            wants_aggregated(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            ),
            Some(AGGREGATED_V2BETA1_CONTENT_TYPE)
        );
        assert_eq!(wants_aggregated("application/json, */*"), None);
        assert_eq!(wants_aggregated(""), None);
        assert_eq!(
            wants_aggregated(
                "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"
            ),
            None
        );
    }
}
