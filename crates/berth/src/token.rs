//! `berth token create|list|delete`: the bootstrap tokens nodes join with (`berth agent`), as
//! `kubeadm token` manages them: a Secret `kube-system/bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token` per token, written through the API with the admin
//! kubeconfig of the data dir. The API server reads the Secret on every request with the
//! token ([`berth_apiserver::auth`]), so `delete` revokes at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use berth_apiserver::auth::{self, BootstrapToken};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};

use crate::DataDir;

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make a join token and print it, with the `berth agent` command that joins a node with it.
    Create {
        #[command(flatten)]
        data_dir: DataDir,
        /// How long the token is valid, e.g. `24h`, `90m`, `1h30m`; `0` never expires.
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// What the token is for, shown by `berth token list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the join tokens: id, expiry and description (never the secrets).
    List {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Revoke a join token (by its id, or the whole token): every request with it is refused
    /// from now on, those of nodes that joined with it too.
    Delete {
        #[command(flatten)]
        data_dir: DataDir,
        /// The token id (the part before the dot) or the whole token.
        id: String,
    },
}

/// Runs one `berth token` command against the berth on its data dir.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            TokenCommand::Create {
                data_dir,
                ttl,
                description,
            } => {
                let data_dir = data_dir.resolve()?;
                create(&data_dir, ttl, description.as_deref()).await
            }
            TokenCommand::List { data_dir } => list(&data_dir.resolve()?).await,
            TokenCommand::Delete { data_dir, id } => delete(&data_dir.resolve()?, &id).await,
        }
    })
}

/// A duration as Go writes them (`kubeadm token create --ttl`): one or more `<n><unit>` with
/// the units `h`, `m` and `s`, or `0`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 24h, 90m, 1h30m or 0");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(bad());
    }
    // Past ~100 years a timestamp would not be representable; nobody means that.
    if total > 100 * 365 * 24 * 3600 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// RFC 3339, whole seconds, UTC, as Kubernetes writes `expiration`.
fn rfc3339(at: SystemTime) -> anyhow::Result<String> {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let at = Timestamp::from_second(i64::try_from(seconds)?)?;
    Ok(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The Secret that backs `token`.
fn token_secret(
    token: &BootstrapToken,
    expiration: Option<String>,
    description: Option<&str>,
) -> Secret {
    let mut data: BTreeMap<String, ByteString> = [
        ("token-id", token.id()),
        ("token-secret", token.secret()),
        ("usage-bootstrap-authentication", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    if let Some(expiration) = expiration {
        data.insert("expiration".into(), ByteString(expiration.into_bytes()));
    }
    if let Some(description) = description {
        data.insert(
            "description".into(),
            ByteString(description.as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(token.secret_name()),
            namespace: Some(auth::BOOTSTRAP_TOKEN_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        type_: Some(auth::BOOTSTRAP_TOKEN_SECRET_TYPE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

async fn secrets(data_dir: &Path) -> anyhow::Result<(kube::Api<Secret>, String)> {
    let kubeconfig = berth_apiserver::kubeconfig_path(data_dir);
    if !kubeconfig.exists() {
        anyhow::bail!(
            "no berth on this data dir ({} is missing): start it with `berth up` first",
            kubeconfig.display()
        );
    }
    let client = crate::admin_client(&kubeconfig).await?;
    let server = kube::config::Kubeconfig::read_from(&kubeconfig)
        .ok()
        .and_then(|k| k.clusters.into_iter().next())
        .and_then(|c| c.cluster)
        .and_then(|c| c.server)
        .unwrap_or_default();
    Ok((
        kube::Api::namespaced(client, auth::BOOTSTRAP_TOKEN_NAMESPACE),
        server,
    ))
}

async fn create(data_dir: &Path, ttl: Duration, description: Option<&str>) -> anyhow::Result<()> {
    let (api, server) = secrets(data_dir).await?;
    let expiration = if ttl.is_zero() {
        None
    } else {
        Some(rfc3339(SystemTime::now() + ttl)?)
    };
    let token = BootstrapToken::generate();
    let secret = token_secret(&token, expiration.clone(), description);
    api.create(&PostParams::default(), &secret)
        .await
        .context("cannot create the token's Secret (is `berth up` running on this data dir?)")?;
    let ca = berth_apiserver::tls::Pki::new(data_dir).ca_cert();
    println!("{}", token.expose());
    println!();
    println!(
        "valid {}",
        expiration.map_or("until deleted".to_string(), |e| format!("until {e}"))
    );
    println!(
        "To add a node: copy {} to it as ca.crt, save the token above in a file `token` (mode 0600) there, and run:",
        ca.display()
    );
    println!("  berth agent --server {server} --token-file token --ca-file ca.crt");
    if server.contains("://127.") || server.contains("://[::1]") || server.contains("://localhost")
    {
        println!(
            "(this berth listens on loopback only: other machines need `berth up --listen 0.0.0.0:6443` and the address they reach it at in --server)"
        );
    }
    println!(
        "The node keeps using the token: once it expires or is deleted (berth token delete {}), the node is cut off.",
        token.id()
    );
    Ok(())
}

async fn list(data_dir: &Path) -> anyhow::Result<()> {
    let (api, _) = secrets(data_dir).await?;
    let secrets = api
        .list(&ListParams::default())
        .await
        .context("cannot list the tokens' Secrets")?;
    let now = Timestamp::from_second(i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    )?)?;
    let mut rows = vec![[
        "ID".to_string(),
        "EXPIRES".to_string(),
        "DESCRIPTION".to_string(),
    ]];
    for secret in secrets.items {
        if secret.type_.as_deref() != Some(auth::BOOTSTRAP_TOKEN_SECRET_TYPE) {
            continue;
        }
        let value = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        let Some(id) = value("token-id").filter(|id| auth::is_token_id(id)) else {
            continue;
        };
        let expires = match value("expiration") {
            None => "<never>".to_string(),
            Some(e) => match e.parse::<Timestamp>() {
                Ok(t) if t <= now => format!("{e} (expired)"),
                Ok(_) => e,
                Err(_) => format!("{e} (invalid)"),
            },
        };
        rows.push([id, expires, value("description").unwrap_or_default()]);
    }
    let widths: Vec<usize> = (0..2)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for [id, expires, description] in rows {
        println!(
            "{id:<w0$}   {expires:<w1$}   {description}",
            w0 = widths[0],
            w1 = widths[1]
        );
    }
    Ok(())
}

async fn delete(data_dir: &Path, id_or_token: &str) -> anyhow::Result<()> {
    // The whole token names its id; only the id is ever printed.
    let id = id_or_token.split('.').next().unwrap_or_default();
    if !auth::is_token_id(id) {
        anyhow::bail!("a token id is 6 characters [a-z0-9] (the part of the token before the dot)");
    }
    let (api, _) = secrets(data_dir).await?;
    match api
        .delete(&auth::secret_name(id), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            println!("token {id} deleted");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!("there is no token {id}"),
        Err(e) => Err(e).context("cannot delete the token's Secret"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_as_go_durations() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
        for bad in ["", "h", "24", "1d", "-1h", "1h 2m", "99999999999999999999h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_token_secret_has_the_bootstrap_fields() {
        let token = BootstrapToken::parse("abc123.0123456789abcdef").unwrap();
        let secret = token_secret(&token, Some("2030-01-01T00:00:00Z".into()), Some("n2"));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("bootstrap-token-abc123")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(
            secret.type_.as_deref(),
            Some("bootstrap.kubernetes.io/token")
        );
        let data = secret.data.unwrap();
        let get = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(get("token-id"), "abc123");
        assert_eq!(get("token-secret"), "0123456789abcdef");
        assert_eq!(get("usage-bootstrap-authentication"), "true");
        assert_eq!(get("expiration"), "2030-01-01T00:00:00Z");
        assert_eq!(get("description"), "n2");
        // And the API server's check accepts exactly this Secret.
        let json = serde_json::to_value(Secret {
            data: Some(data),
            ..token_secret(&token, None, None)
        })
        .unwrap();
        let before: Timestamp = "2029-12-31T00:00:00Z".parse().unwrap();
        let after: Timestamp = "2030-01-02T00:00:00Z".parse().unwrap();
        assert!(auth::bootstrap_secret_accepts(&json, &token, before));
        assert!(!auth::bootstrap_secret_accepts(&json, &token, after));
    }

    #[test]
    fn expirations_are_rfc3339_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        assert_eq!(rfc3339(at).unwrap(), "2030-01-01T00:00:00Z");
    }
}
