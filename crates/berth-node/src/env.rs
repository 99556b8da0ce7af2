//! A container's environment, resolved as kubelet resolves it before creating the container.
//!
//! This module owns:
//! - [`expand`]: Kubernetes' `$(VAR)` expansion (the `expansion` package's rules: `$$` is an
//!   escaped `$`, an unknown or unterminated reference is kept as written), used here for env
//!   values and by `command.rs` for command and args;
//! - [`resolve_env`]: `envFrom` then `env` (later entries override earlier ones), with
//!   `valueFrom` sources: the pod's fields (`fieldRef`), its container's resources
//!   (`resourceFieldRef`), and ConfigMap and Secret keys read through [`ObjectSource`];
//! - [`field_ref_value`] and [`resource_field_value`], which the downward API volume shares.
//!
//! The pod's runtime facts (IPs, node allocatable, the objects it refers to) come in a
//! [`PodContext`] so that everything here is pure and tested without a cluster. Errors carry
//! kubelet's messages, which the agent reports as `CreateContainerConfigError`.

mod quantity;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, ResourceFieldSelector,
    Secret,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub(crate) use quantity::Decimal;

/// Where ConfigMaps, Secrets, PersistentVolumeClaims and PersistentVolumes come from. The
/// agent backs it with its reflector caches; it is synchronous because a cache lookup is, and
/// `None` means "not found" (kubelet's NotFound).
pub trait ObjectSource: Send + Sync {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>>;
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>>;
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<PersistentVolumeClaim>>;
    /// PersistentVolumes are cluster-scoped.
    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
}

/// What resolution needs to know about the pod beyond its spec.
#[derive(Clone, Copy)]
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    /// The pod's IPs, primary first (`status.podIP` is the first, `status.podIPs` all of them).
    pub pod_ips: &'a [String],
    /// The node's IPs, primary first (`status.hostIP` / `status.hostIPs`).
    pub host_ips: &'a [String],
    /// The node's allocatable resources: `resourceFieldRef` reports these for a limit the
    /// container does not set, as kubelet does.
    pub node_allocatable: &'a BTreeMap<String, Quantity>,
    pub objects: &'a dyn ObjectSource,
    /// Service environment variables (`enableServiceLinks`); empty until berth has services.
    pub service_env: &'a [(String, String)],
}

impl PodContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Why a container's environment (or a downward API file) could not be made. The `Display`
/// texts are kubelet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { name: String },
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported pod version: {0}")]
    UnsupportedApiVersion(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("invalid quantity {0:?}")]
    BadQuantity(String),
    #[error("container {0:?} not found in the pod")]
    ContainerNotFound(String),
    #[error("no host IP is known for this node")]
    NoHostIp,
}

/// A container's resolved environment, in declaration order (a later definition of a name
/// replaces the value but keeps the first position, so the order is stable between restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedEnv {
    pub vars: Vec<(String, String)>,
    /// Things the agent should report as Warning events (kubelet's
    /// `InvalidEnvironmentVariableNames`), not failures.
    pub warnings: Vec<String>,
}

impl ResolvedEnv {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `K=V` strings, the form the runtime takes.
    pub fn to_strings(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// An insertion-ordered map: the env keeps the order in which names first appear.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }
}

/// Kubernetes' `$(VAR)` expansion with a mapping that sees every reference (`mapping` gets the
/// name between the parentheses and returns the replacement). Rules, as the `expansion`
/// package: `$$` becomes `$`; `$(` without a closing `)` is kept; `$` before any other
/// character, or at the end, is kept.
///
/// One deliberate difference: Go copies the byte after a lone `$` as if it were a Latin-1
/// character, mangling a following multi-byte UTF-8 character; here it is kept intact.
pub fn expand_with(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    cursor += 2;
                }
                b'(' => match input[cursor + 2..].find(')') {
                    Some(len) => {
                        let name = &input[cursor + 2..cursor + 2 + len];
                        out.push_str(&mapping(name));
                        cursor += 2 + len + 1;
                    }
                    None => {
                        // An unterminated reference is text; scanning goes on after the `(`.
                        out.push_str("$(");
                        cursor += 2;
                    }
                },
                _ => {
                    // A `$` that starts nothing; the next character is copied as ordinary text.
                    out.push('$');
                    cursor += 1;
                }
            }
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// [`expand_with`] where unknown names stay as written (`$(NAME)`), as kubelet expands command,
/// args and env values.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    expand_with(input, |name| match lookup(name) {
        Some(v) => v.to_string(),
        None => format!("$({name})"),
    })
}

/// Whether kubelet accepts `name` from an `envFrom` source: the API's relaxed rule (printable
/// ASCII other than `=`, not empty), which berth-api validates `env` names with too.
pub fn is_valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// A per-call cache so a container that names one ConfigMap many times sees one version of it.
struct Fetched<'c, 'a> {
    ctx: &'c PodContext<'a>,
    config_maps: HashMap<String, Option<Arc<ConfigMap>>>,
    secrets: HashMap<String, Option<Arc<Secret>>>,
}

impl<'c, 'a> Fetched<'c, 'a> {
    fn new(ctx: &'c PodContext<'a>) -> Self {
        Fetched {
            ctx,
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    fn config_map(&mut self, name: &str) -> Option<Arc<ConfigMap>> {
        let ctx = self.ctx;
        self.config_maps
            .entry(name.to_string())
            .or_insert_with(|| ctx.objects.config_map(ctx.namespace(), name))
            .clone()
    }

    fn secret(&mut self, name: &str) -> Option<Arc<Secret>> {
        let ctx = self.ctx;
        self.secrets
            .entry(name.to_string())
            .or_insert_with(|| ctx.objects.secret(ctx.namespace(), name))
            .clone()
    }
}

/// A Secret's entries as text: `data`, then `stringData` over it (the API server normally has
/// merged `stringData` already; doing it again is harmless). Values that are not UTF-8 are
/// converted lossily, because the runtime takes environment variables as strings.
fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Resolves `container`'s environment: `envFrom` sources first, then `env` in order, each
/// value expanded against the variables defined before it and the service variables; service
/// variables not otherwise defined come last.
pub fn resolve_env(ctx: &PodContext<'_>, container: &Container) -> Result<ResolvedEnv, EnvError> {
    let namespace = ctx.namespace().to_string();
    let mut fetched = Fetched::new(ctx);
    let mut env = OrderedEnv::default();
    let mut warnings = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, entries) = if let Some(cm_ref) = &from.config_map_ref {
            let optional = cm_ref.optional == Some(true);
            match fetched.config_map(&cm_ref.name) {
                Some(cm) => (
                    "configMap",
                    &cm_ref.name,
                    cm.data.clone().unwrap_or_default(),
                ),
                None if optional => continue,
                None => {
                    return Err(EnvError::ConfigMapNotFound {
                        name: cm_ref.name.clone(),
                    });
                }
            }
        } else if let Some(secret_ref) = &from.secret_ref {
            let optional = secret_ref.optional == Some(true);
            match fetched.secret(&secret_ref.name) {
                Some(secret) => ("secret", &secret_ref.name, secret_strings(&secret)),
                None if optional => continue,
                None => {
                    return Err(EnvError::SecretNotFound {
                        name: secret_ref.name.clone(),
                    });
                }
            }
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (key, value) in entries {
            let name = format!("{prefix}{key}");
            if is_valid_env_name(&name) {
                env.set(name, value);
            } else {
                invalid.push(name);
            }
        }
        if !invalid.is_empty() {
            // BTreeMap iteration already sorted them, as kubelet sorts them.
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or("");
        let value = if !literal.is_empty() {
            expand(literal, |name| {
                env.get(name).or_else(|| {
                    ctx.service_env
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                })
            })
        } else if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                field_ref_value(ctx, field.api_version.as_deref(), &field.field_path)?
            } else if let Some(resource) = &source.resource_field_ref {
                resource_field_value(ctx, container, resource)?
            } else if let Some(key_ref) = &source.config_map_key_ref {
                let optional = key_ref.optional == Some(true);
                let Some(cm) = fetched.config_map(&key_ref.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound {
                        name: key_ref.name.clone(),
                    });
                };
                match cm.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: key_ref.key.clone(),
                            namespace,
                            name: key_ref.name.clone(),
                        });
                    }
                }
            } else if let Some(key_ref) = &source.secret_key_ref {
                let optional = key_ref.optional == Some(true);
                let Some(secret) = fetched.secret(&key_ref.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound {
                        name: key_ref.name.clone(),
                    });
                };
                match secret_strings(&secret).remove(&key_ref.key) {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: key_ref.key.clone(),
                            namespace,
                            name: key_ref.name.clone(),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }

    let mut vars = env.vars;
    for (k, v) in ctx.service_env {
        if !vars.iter().any(|(name, _)| name == k) {
            vars.push((k.clone(), v.clone()));
        }
    }
    Ok(ResolvedEnv { vars, warnings })
}

/// Splits `metadata.labels['key']` into (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    Some((base, key))
}

/// A map rendered as the downward API renders labels and annotations: `key="value"` lines,
/// sorted by key, values quoted as Go's `%q` does.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`: printable characters as they are, the usual backslash escapes, other
/// control characters as `\xNN` (ASCII) or `\uNNNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `fieldRef` (env and downward API volumes). Kubernetes validation limits env
/// to the single-key forms of labels and annotations; the whole maps are for volumes, and are
/// accepted here in both places, as kubelet's resolver accepts them.
pub fn field_ref_value(
    ctx: &PodContext<'_>,
    api_version: Option<&str>,
    field_path: &str,
) -> Result<String, EnvError> {
    if let Some(v) = api_version.filter(|v| !v.is_empty() && *v != "v1") {
        return Err(EnvError::UnsupportedApiVersion(v.to_string()));
    }
    let meta = &ctx.pod.metadata;
    let spec = ctx.pod.spec.as_ref();
    if let Some((base, key)) = split_subscript(field_path) {
        let map = match base {
            "metadata.labels" => meta.labels.as_ref(),
            "metadata.annotations" => meta.annotations.as_ref(),
            _ => return Err(EnvError::UnsupportedFieldPath(field_path.to_string())),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    let value = match field_path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => ctx.namespace().to_string(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref().unwrap_or(&BTreeMap::new())),
        "metadata.annotations" => format_map(meta.annotations.as_ref().unwrap_or(&BTreeMap::new())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        "status.hostIP" => ctx.host_ips.first().cloned().ok_or(EnvError::NoHostIp)?,
        "status.hostIPs" => {
            if ctx.host_ips.is_empty() {
                return Err(EnvError::NoHostIp);
            }
            ctx.host_ips.join(",")
        }
        _ => return Err(EnvError::UnsupportedFieldPath(field_path.to_string())),
    };
    Ok(value)
}

/// Finds a container of the pod by name (app, init or ephemeral), for downward API volumes'
/// `resourceFieldRef.containerName`.
pub fn find_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// The value of a `resourceFieldRef` for `container`: the quantity divided by the divisor
/// (default 1) and rounded up, in millicores for CPU and in units for everything else. A
/// limit the container does not set reads as the node's allocatable amount, as in kubelet.
pub fn resource_field_value(
    ctx: &PodContext<'_>,
    container: &Container,
    selector: &ResourceFieldSelector,
) -> Result<String, EnvError> {
    let resource = selector.resource.as_str();
    let (section, name) = resource
        .split_once('.')
        .ok_or_else(|| EnvError::UnsupportedResource(resource.to_string()))?;
    let supported =
        matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !supported || !matches!(section, "limits" | "requests") {
        return Err(EnvError::UnsupportedResource(resource.to_string()));
    }
    let resources = container.resources.as_ref();
    let own = match section {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        _ => resources.and_then(|r| r.requests.as_ref()),
    }
    .and_then(|m| m.get(name));
    // kubelet defaults only cpu, memory and ephemeral-storage limits to allocatable.
    let defaulted = if own.is_none()
        && section == "limits"
        && matches!(name, "cpu" | "memory" | "ephemeral-storage")
    {
        ctx.node_allocatable.get(name)
    } else {
        own
    };
    let parse = |q: &str| Decimal::parse(q).ok_or_else(|| EnvError::BadQuantity(q.to_string()));
    let value = match defaulted {
        Some(q) => parse(&q.0)?,
        None => parse("0")?,
    };
    let divisor = match selector.divisor.as_ref().filter(|d| !d.0.is_empty()) {
        Some(d) => parse(&d.0)?,
        None => parse("1")?,
    };
    let bad = || EnvError::BadQuantity(selector.divisor.clone().unwrap_or_default().0);
    let (v, d) = if name == "cpu" {
        (value.milli_ceil(), divisor.milli_ceil())
    } else {
        (value.value_ceil(), divisor.value_ceil())
    };
    let (v, d) = (v.ok_or_else(bad)?, d.ok_or_else(bad)?);
    let out = quantity::ceil_div_checked(v, d).ok_or_else(bad)?;
    Ok(out.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceRequirements, SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proptest::prelude::*;

    /// An in-memory [`ObjectSource`] for tests (here and in volumes.rs).
    #[derive(Default)]
    pub(crate) struct FakeObjects {
        pub config_maps: BTreeMap<(String, String), Arc<ConfigMap>>,
        pub secrets: BTreeMap<(String, String), Arc<Secret>>,
        pub claims: BTreeMap<(String, String), Arc<PersistentVolumeClaim>>,
        pub volumes: BTreeMap<String, Arc<PersistentVolume>>,
    }

    impl FakeObjects {
        pub(crate) fn with_config_map(
            mut self,
            ns: &str,
            name: &str,
            data: &[(&str, &str)],
        ) -> Self {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                data: Some(
                    data.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            };
            self.config_maps
                .insert((ns.into(), name.into()), Arc::new(cm));
            self
        }

        pub(crate) fn with_secret(mut self, ns: &str, name: &str, data: &[(&str, &[u8])]) -> Self {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                data: Some(
                    data.iter()
                        .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                        .collect(),
                ),
                ..Default::default()
            };
            self.secrets.insert((ns.into(), name.into()), Arc::new(s));
            self
        }

        /// Adds a claim (keyed by its own namespace and name).
        pub(crate) fn with_claim(mut self, claim: PersistentVolumeClaim) -> Self {
            let key = (
                claim.metadata.namespace.clone().unwrap_or_default(),
                claim.metadata.name.clone().unwrap_or_default(),
            );
            self.claims.insert(key, Arc::new(claim));
            self
        }

        pub(crate) fn with_volume(mut self, pv: PersistentVolume) -> Self {
            self.volumes
                .insert(pv.metadata.name.clone().unwrap_or_default(), Arc::new(pv));
            self
        }
    }

    impl ObjectSource for FakeObjects {
        fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
            self.config_maps
                .get(&(namespace.into(), name.into()))
                .cloned()
        }
        fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
            self.secrets.get(&(namespace.into(), name.into())).cloned()
        }
        fn persistent_volume_claim(
            &self,
            namespace: &str,
            name: &str,
        ) -> Option<Arc<PersistentVolumeClaim>> {
            self.claims.get(&(namespace.into(), name.into())).cloned()
        }
        fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
            self.volumes.get(name).cloned()
        }
    }

    pub(crate) fn test_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "web".into()),
                    ("tier".into(), "a \"b\"\n".into()),
                ])),
                annotations: Some(BTreeMap::from([("note".into(), "hi".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                service_account_name: Some("sa".into()),
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn with_ctx<R>(
        pod: &Pod,
        objects: &FakeObjects,
        f: impl FnOnce(&PodContext<'_>) -> R,
    ) -> R {
        let pod_ips = vec!["10.0.0.5".to_string(), "fd00::5".to_string()];
        let host_ips = vec!["192.168.1.2".to_string()];
        let allocatable = BTreeMap::from([
            ("cpu".to_string(), Quantity("2".into())),
            ("memory".to_string(), Quantity("4Gi".into())),
        ]);
        let ctx = PodContext {
            pod,
            pod_ips: &pod_ips,
            host_ips: &host_ips,
            node_allocatable: &allocatable,
            objects,
            service_env: &[],
        };
        f(&ctx)
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    fn field(path: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..Default::default()
        }
    }

    fn lookup_map<'m>(map: &'m HashMap<String, String>) -> impl Fn(&str) -> Option<&'m str> + 'm {
        move |k| map.get(k).map(String::as_str)
    }

    #[test]
    fn expansion_matches_kubernetes_cases() {
        let vars: HashMap<String, String> = [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
            ("$(VAR_EMPTY)", ""),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("$$(VAR_B)", "$(VAR_B)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$(VAR_A", "$(VAR_A"),
            ("$VAR_A", "$VAR_A"),
            ("VAR_A)", "VAR_A)"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$()", "$()"),
            ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
            ("$$", "$"),
            ("f$é$(VAR_A)", "f$éA"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, lookup_map(&vars)), want, "{input:?}");
        }
    }

    proptest! {
        /// Text without `$` is never changed.
        #[test]
        fn expansion_without_dollar_is_identity(s in "[^$]*") {
            let map = HashMap::new();
            prop_assert_eq!(expand(&s, lookup_map(&map)), s);
        }

        /// Outside references (no `(` here), expanding is the identity except that `$$`
        /// becomes `$`.
        #[test]
        fn escapes_collapse(s in "[a-z)$ ]{0,40}") {
            let map = HashMap::new();
            let got = expand(&s, lookup_map(&map));
            let mut want = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek() == Some(&'$') {
                    chars.next();
                }
                want.push(c);
            }
            prop_assert_eq!(got, want);
        }

        /// With no known names, references (even malformed ones) come out as written.
        #[test]
        fn unknown_references_are_kept(parts in proptest::collection::vec("[a-z ]{0,5}|\\$\\([a-z ]{0,5}\\)|\\$\\(", 0..6)) {
            let s: String = parts.concat();
            let map = HashMap::new();
            prop_assert_eq!(expand(&s, lookup_map(&map)), s);
        }

        /// Escaping each `$` as `$$` round-trips any string.
        #[test]
        fn escaped_text_round_trips(s in "\\PC{0,40}") {
            let escaped = s.replace('$', "$$");
            let map: HashMap<String, String> = HashMap::from([("X".into(), "y".into())]);
            prop_assert_eq!(expand(&escaped, lookup_map(&map)), s);
        }

        /// A reference to a defined name is replaced by its value, wherever it sits.
        #[test]
        fn known_references_are_replaced(pre in "[a-z ]{0,10}", post in "[a-z ]{0,10}", val in "\\PC{0,10}") {
            let map: HashMap<String, String> = HashMap::from([("NAME".into(), val.clone())]);
            let got = expand(&format!("{pre}$(NAME){post}"), lookup_map(&map));
            prop_assert_eq!(got, format!("{pre}{val}{post}"));
        }
    }

    #[test]
    fn env_from_then_env_with_expansion() {
        let objects = FakeObjects::default()
            .with_config_map("ns", "cfg", &[("A", "from-cm"), ("B", "b"), ("1bad=", "x")])
            .with_secret("ns", "sec", &[("PASS", b"hunter2")]);
        let mut pod = test_pod();
        let c = &mut pod.spec.as_mut().unwrap().containers[0];
        c.env_from = Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            EnvFromSource {
                prefix: Some("S_".into()),
                secret_ref: Some(SecretEnvSource {
                    name: "sec".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "absent".into(),
                    optional: Some(true),
                }),
                ..Default::default()
            },
        ]);
        c.env = Some(vec![
            var("A", "override"),
            var("C", "$(A)-$(B)-$(D)-$$(A)"),
            var("D", "d"),
            from("NAME", field("metadata.name")),
            from("IP", field("status.podIP")),
            from("IPS", field("status.podIPs")),
            from("HOST", field("status.hostIP")),
            from("APP", field("metadata.labels['app']")),
            from("NOPE", field("metadata.labels['nope']")),
            from(
                "KEY",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cfg".into(),
                        key: "B".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ),
            from(
                "OPT",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "sec".into(),
                        key: "missing".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ),
        ]);
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let env = with_ctx(&pod, &objects, |ctx| resolve_env(ctx, &c)).unwrap();
        let got: Vec<(&str, &str)> = env
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A", "override"),
                ("B", "b"),
                ("S_PASS", "hunter2"),
                ("C", "override-b-$(D)-$(A)"),
                ("D", "d"),
                ("NAME", "web"),
                ("IP", "10.0.0.5"),
                ("IPS", "10.0.0.5,fd00::5"),
                ("HOST", "192.168.1.2"),
                ("APP", "web"),
                ("NOPE", ""),
                ("KEY", "b"),
            ]
        );
        assert_eq!(
            env.warnings,
            vec![
                "Keys [1bad=] from the EnvFrom configMap ns/cfg were skipped since they are considered invalid environment variable names."
            ]
        );
    }

    #[test]
    fn missing_sources_are_kubelet_errors() {
        let objects = FakeObjects::default().with_config_map("ns", "cfg", &[("A", "a")]);
        let pod = test_pod();
        let run = |env: Vec<EnvVar>| {
            let c = Container {
                name: "app".into(),
                env: Some(env),
                ..Default::default()
            };
            with_ctx(&pod, &objects, |ctx| resolve_env(ctx, &c))
        };
        let cm_key = |name: &str, key: &str| {
            from(
                "X",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: name.into(),
                        key: key.into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            run(vec![cm_key("cfg", "K")]).unwrap_err().to_string(),
            "couldn't find key K in ConfigMap ns/cfg"
        );
        assert_eq!(
            run(vec![cm_key("x", "K")]).unwrap_err().to_string(),
            "configmap \"x\" not found"
        );
        let secret = from(
            "X",
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "s".into(),
                    key: "K".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            run(vec![secret]).unwrap_err().to_string(),
            "secret \"s\" not found"
        );
        assert_eq!(
            run(vec![from("X", field("spec.hostname"))])
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: spec.hostname"
        );
    }

    #[test]
    fn resource_fields_with_divisors_and_allocatable() {
        let objects = FakeObjects::default();
        let pod = test_pod();
        let c = Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".into(),
                    Quantity("129Mi".into()),
                )])),
                requests: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("250m".into())),
                    ("memory".into(), Quantity("64Mi".into())),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let get = |resource: &str, divisor: Option<&str>| {
            let sel = ResourceFieldSelector {
                container_name: None,
                resource: resource.into(),
                divisor: divisor.map(|d| Quantity(d.into())),
            };
            with_ctx(&pod, &objects, |ctx| resource_field_value(ctx, &c, &sel))
        };
        assert_eq!(get("requests.cpu", None).unwrap(), "1");
        assert_eq!(get("requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(get("limits.cpu", None).unwrap(), "2");
        assert_eq!(get("limits.cpu", Some("1m")).unwrap(), "2000");
        assert_eq!(get("limits.memory", Some("1Mi")).unwrap(), "129");
        assert_eq!(get("limits.memory", Some("1Gi")).unwrap(), "1");
        assert_eq!(
            get("requests.memory", None).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(get("requests.ephemeral-storage", None).unwrap(), "0");
        assert_eq!(
            get("limits.gpu", None).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn labels_render_sorted_and_quoted() {
        let objects = FakeObjects::default();
        let pod = test_pod();
        let got = with_ctx(&pod, &objects, |ctx| {
            field_ref_value(ctx, None, "metadata.labels")
        })
        .unwrap();
        assert_eq!(got, "app=\"web\"\ntier=\"a \\\"b\\\"\\n\"");
    }
}
