//! Turns an HTTP method, path and query into a plain [`Request`]: which resource, which object,
//! which verb. Nothing here touches the store; `handler` executes what this module parses.

use std::collections::HashMap;

use berth_api::ResourceInfo;
use berth_api::resources;

use crate::status::ApiError;

/// The verbs of the Kubernetes API, as RBAC names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// A request for a resource, after routing.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRequest {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: Verb,
    pub query: Query,
}

/// Non-resource paths.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Resource(ResourceRequest),
    Version,
    Health(&'static str),
    /// `/api` (core) or `/apis`.
    DiscoveryRoot {
        core: bool,
    },
    /// `/apis/<group>`.
    DiscoveryGroup(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    DiscoveryGroupVersion {
        group: String,
        version: String,
    },
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`.
    OpenApiGroupVersion(String),
}

/// Decoded query parameters (the last value wins, as in Go's `url.Values.Get`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    values: HashMap<String, Vec<String>>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            values
                .entry(percent_decode(key))
                .or_default()
                .push(percent_decode(value));
        }
        Query { values }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    pub fn all(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }
}

/// Decodes `%XX` escapes and `+` (as Go's `url.ParseQuery` does); invalid escapes stay as they are.
pub fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Routes a request.
pub fn route(method: &http::Method, path: &str, query: Option<&str>) -> Result<Route, ApiError> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz"] | ["healthz", ..] => return Ok(Route::Health("healthz")),
        ["livez"] | ["livez", ..] => return Ok(Route::Health("livez")),
        ["readyz"] | ["readyz", ..] => return Ok(Route::Health("readyz")),
        ["api"] => return Ok(Route::DiscoveryRoot { core: true }),
        ["apis"] => return Ok(Route::DiscoveryRoot { core: false }),
        ["api", version] => {
            return Ok(Route::DiscoveryGroupVersion {
                group: String::new(),
                version: version.to_string(),
            });
        }
        ["apis", group] => return Ok(Route::DiscoveryGroup(group.to_string())),
        ["apis", group, version] => {
            return Ok(Route::DiscoveryGroupVersion {
                group: group.to_string(),
                version: version.to_string(),
            });
        }
        ["openapi", "v3"] => return Ok(Route::OpenApiRoot),
        ["openapi", "v3", rest @ ..] if !rest.is_empty() => {
            return Ok(Route::OpenApiGroupVersion(rest.join("/")));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    let query = Query::parse(query);
    // `/watch/...` is the deprecated watch form that some clients still use.
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, resource, name, subresource) = match rest {
        // The namespace object itself and its subresources: /api/v1/namespaces/x[/status|/finalize].
        ["namespaces"] => (None, "namespaces", None, None),
        ["namespaces", ns] => (None, "namespaces", Some(*ns), None),
        ["namespaces", ns, sub] if group.is_empty() && (*sub == "status" || *sub == "finalize") => {
            (None, "namespaces", Some(*ns), Some(*sub))
        }
        ["namespaces", ns, resource] => (Some(*ns), *resource, None, None),
        ["namespaces", ns, resource, name] => (Some(*ns), *resource, Some(*name), None),
        ["namespaces", ns, resource, name, sub] => (Some(*ns), *resource, Some(*name), Some(*sub)),
        [resource] => (None, *resource, None, None),
        [resource, name] => (None, *resource, Some(*name), None),
        [resource, name, sub] => (None, *resource, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_route()),
    };
    let info = resources::lookup(group, version, resource).ok_or_else(ApiError::no_route)?;
    if !info.namespaced() && namespace.is_some() {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = subresource
        && info.subresource(sub).is_none()
        && !(info.plural == "namespaces" && sub == "finalize")
    {
        return Err(ApiError::no_route());
    }
    let watch = legacy_watch || query.flag("watch");
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", _) if watch => Verb::Watch,
        ("GET", true) => Verb::Get,
        ("GET", false) => Verb::List,
        ("POST", _) if subresource.is_some() => Verb::Create,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        (other, _) => {
            return Err(ApiError::method_not_supported(info, &other.to_lowercase()));
        }
    };
    // An object's name and namespace become its store key: refuse the ones no object can have,
    // as kube-apiserver's key function does (400, before the store is asked).
    if let Some(name) = name {
        check_path_segment("Name", name)?;
        if let Some(namespace) = namespace {
            check_path_segment("Namespace", namespace)?;
        }
    }
    Ok(Route::Resource(ResourceRequest {
        info,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
        verb,
        query,
    }))
}

/// Kubernetes' `IsValidPathSegmentName`: a name in a URL may not be `.` or `..`, nor contain `/`
/// or `%` (even percent-encoded). The error is the one kube-apiserver's `NamespaceKeyFunc` gives.
fn check_path_segment(what: &str, value: &str) -> Result<(), ApiError> {
    let problems: Vec<String> = if value == "." || value == ".." {
        vec![format!("may not be '{value}'")]
    } else {
        ["/", "%"]
            .iter()
            .filter(|c| value.contains(*c))
            .map(|c| format!("may not contain '{c}'"))
            .collect()
    };
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "{what} parameter invalid: {value:?}: {}",
        problems.join(";")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn resource(method: Method, path: &str, query: Option<&str>) -> ResourceRequest {
        match route(&method, path, query).unwrap() {
            Route::Resource(r) => r,
            other => panic!("not a resource route: {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths() {
        let r = resource(Method::GET, "/api/v1/namespaces/default/pods/web-0", None);
        assert_eq!(
            (
                r.info.plural,
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.verb
            ),
            ("pods", Some("default"), Some("web-0"), Verb::Get)
        );
        let r = resource(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments",
            Some("watch=true&resourceVersion=5"),
        );
        assert_eq!(r.verb, Verb::Watch);
        assert_eq!(r.query.get("resourceVersion"), Some("5"));
        let r = resource(
            Method::PATCH,
            "/apis/apps/v1/namespaces/default/statefulsets/web/scale",
            None,
        );
        assert_eq!(
            (r.verb, r.subresource.as_deref()),
            (Verb::Patch, Some("scale"))
        );
        let r = resource(
            Method::POST,
            "/api/v1/namespaces/default/pods/web-0/binding",
            None,
        );
        assert_eq!(
            (r.verb, r.subresource.as_deref()),
            (Verb::Create, Some("binding"))
        );
    }

    #[test]
    fn namespaces_and_cluster_scope() {
        let r = resource(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (r.info.plural, r.namespace, r.name.as_deref()),
            ("namespaces", None, Some("kube-system"))
        );
        let r = resource(Method::PUT, "/api/v1/namespaces/x/finalize", None);
        assert_eq!(
            (r.info.plural, r.subresource.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let r = resource(Method::GET, "/api/v1/pods", Some("labelSelector=app%3Dweb"));
        assert_eq!((r.namespace, r.verb), (None, Verb::List));
        assert_eq!(r.query.get("labelSelector"), Some("app=web"));
        assert!(
            route(
                &Method::GET,
                "/api/v1/namespaces/default/persistentvolumes",
                None
            )
            .is_err()
        );
        assert!(route(&Method::GET, "/api/v1/namespaces/default/foos", None).is_err());
        assert!(
            route(
                &Method::GET,
                "/api/v1/namespaces/default/pods/x/bogus",
                None
            )
            .is_err()
        );
    }

    #[test]
    fn legacy_watch_prefix() {
        let r = resource(Method::GET, "/api/v1/watch/namespaces/default/pods", None);
        assert_eq!(r.verb, Verb::Watch);
    }

    #[test]
    fn names_that_are_not_path_segments_are_refused() {
        for (path, message) in [
            (
                "/api/v1/namespaces/default/configmaps/..",
                r#"Name parameter invalid: "..": may not be '..'"#,
            ),
            (
                "/api/v1/namespaces/default/configmaps/.",
                r#"Name parameter invalid: ".": may not be '.'"#,
            ),
            (
                "/api/v1/namespaces/default/configmaps/a%2Fb",
                r#"Name parameter invalid: "a/b": may not contain '/'"#,
            ),
            (
                "/api/v1/namespaces/default/configmaps/a%25b",
                r#"Name parameter invalid: "a%b": may not contain '%'"#,
            ),
            (
                "/api/v1/namespaces/../configmaps/x",
                r#"Namespace parameter invalid: "..": may not be '..'"#,
            ),
            (
                "/api/v1/namespaces/..",
                r#"Name parameter invalid: "..": may not be '..'"#,
            ),
        ] {
            let error = route(&Method::GET, path, None).unwrap_err();
            assert_eq!(
                (error.code, error.message.as_str()),
                (400, message),
                "{path}"
            );
        }
        assert!(
            route(
                &Method::GET,
                "/api/v1/namespaces/default/configmaps/a.b",
                None
            )
            .is_ok()
        );
        // A list names no object; its namespace is only a key prefix.
        assert!(route(&Method::GET, "/api/v1/namespaces/default/configmaps", None).is_ok());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Db%2Cc"), "a=b,c");
        assert_eq!(percent_decode("%zz%"), "%zz%");
        assert_eq!(percent_decode("a+b"), "a b");
    }
}
