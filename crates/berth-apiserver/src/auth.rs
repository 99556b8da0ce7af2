//! Authentication: bearer tokens. There is no anonymous access to resources.
//!
//! Two kinds of token authenticate:
//!
//! - The admin token, made on first start and kept in `<data-dir>/admin.token` (0600).
//! - Bootstrap tokens, as kube-apiserver's `--enable-bootstrap-token-auth` accepts them:
//!   `<id>.<secret>` (`[a-z0-9]{6}\.[a-z0-9]{16}`), each backed by a Secret
//!   `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` whose
//!   `token-id` and `token-secret` match, whose `usage-bootstrap-authentication` is `"true"`
//!   and whose `expiration` (RFC 3339), if any, is in the future. The Secret is read on every
//!   request that carries such a token, so deleting it revokes the token at once. `berth token
//!   create` writes these Secrets; nodes join with them (`berth agent`).
//!
//! berth has no authorization yet: every authenticated request may do anything, so a bootstrap
//! token is as powerful as the admin token. (Upstream puts it in `system:bootstrappers`, which
//! RBAC lets only create certificate signing requests.)

use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::files::write_private;
use crate::registry::Registry;

/// The namespace bootstrap token Secrets live in.
pub const BOOTSTRAP_TOKEN_NAMESPACE: &str = "kube-system";
/// The Secret type the bootstrap authenticator reads.
pub const BOOTSTRAP_TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// A bootstrap token's Secret is named this followed by the token id.
pub const BOOTSTRAP_TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A token that is not `[a-z0-9]{6}.[a-z0-9]{16}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a bootstrap token has the form [a-z0-9]{{6}}.[a-z0-9]{{16}} (id.secret)")]
pub struct MalformedToken;

/// A bootstrap token: a public id and a secret. Its `Debug` shows only the id, so a token that
/// ends up in a log line does not leak.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn is_token_part(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| ALPHABET.contains(&b))
}

/// Whether `id` is a bootstrap token id (`[a-z0-9]{6}`).
pub fn is_token_id(id: &str) -> bool {
    is_token_part(id, ID_LEN)
}

impl BootstrapToken {
    /// Parses `id.secret`; nothing else (no surrounding space, no upper case) is accepted.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let (id, secret) = text.split_once('.').ok_or(MalformedToken)?;
        if !is_token_part(id, ID_LEN) || !is_token_part(secret, SECRET_LEN) {
            return Err(MalformedToken);
        }
        Ok(BootstrapToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A new random token (from the operating system's generator, via `rand`).
    pub fn generate() -> Self {
        let pick = |len: usize| -> String {
            (0..len)
                .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
                .collect()
        };
        BootstrapToken {
            id: pick(ID_LEN),
            secret: pick(SECRET_LEN),
        }
    }

    /// The public part.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The private part.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The whole token, `id.secret`, as a client sends it.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The name of the Secret that backs this token.
    pub fn secret_name(&self) -> String {
        secret_name(&self.id)
    }
}

/// The name of the Secret that backs the token with this id.
pub fn secret_name(id: &str) -> String {
    format!("{BOOTSTRAP_TOKEN_SECRET_PREFIX}{id}")
}

/// One value of a Secret's `data` (base64) or, for an object stored unmerged, `stringData`.
pub fn secret_value(secret: &Value, key: &str) -> Option<String> {
    if let Some(encoded) = secret.pointer("/data").and_then(|d| d.get(key)) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str()?)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    secret
        .pointer("/stringData")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether `secret` (a Secret object as JSON) lets `token` authenticate at `now`: the
/// bootstrap token type, the matching id and secret, authentication usage, and no expiration
/// in the past (an expiration that does not parse makes the token invalid, as upstream).
pub fn bootstrap_secret_accepts(secret: &Value, token: &BootstrapToken, now: Timestamp) -> bool {
    if secret.get("type").and_then(Value::as_str) != Some(BOOTSTRAP_TOKEN_SECRET_TYPE) {
        return false;
    }
    if secret.pointer("/metadata/name").and_then(Value::as_str) != Some(&token.secret_name()) {
        return false;
    }
    if secret
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return false;
    }
    if secret_value(secret, "token-id").as_deref() != Some(token.id()) {
        return false;
    }
    let Some(stored) = secret_value(secret, "token-secret") else {
        return false;
    };
    if !constant_time_eq(stored.as_bytes(), token.secret().as_bytes()) {
        return false;
    }
    if secret_value(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return false;
    }
    match secret_value(secret, "expiration") {
        None => true,
        Some(expiration) => expiration
            .parse::<Timestamp>()
            .is_ok_and(|expires| now < expires),
    }
}

/// The tokens the server accepts.
#[derive(Clone)]
pub struct Authenticator {
    admin_token: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// What an `Authorization` header holds, before any lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// The admin token.
    Admin,
    /// A token of the bootstrap token's shape, still to be checked against its Secret.
    Bootstrap(BootstrapToken),
    /// No bearer token, or one that cannot be valid.
    Invalid,
}

impl Authenticator {
    /// Loads the admin token, making one on first start.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = admin_token_path(data_dir);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let bytes: [u8; 32] = rand::random();
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_private(&path, token.as_bytes())?;
                token
            }
        };
        Ok(Authenticator { admin_token: token })
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Sorts an `Authorization` header value without looking anything up.
    pub fn credential(&self, authorization: Option<&str>) -> Credential {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Credential::Invalid;
        };
        let token = token.trim();
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Credential::Admin;
        }
        match BootstrapToken::parse(token) {
            Ok(token) => Credential::Bootstrap(token),
            Err(MalformedToken) => Credential::Invalid,
        }
    }

    /// Checks an `Authorization` header value: the admin token, or a bootstrap token whose
    /// Secret in `registry` accepts it now.
    pub async fn authenticate(&self, registry: &Registry, authorization: Option<&str>) -> bool {
        match self.credential(authorization) {
            Credential::Admin => true,
            Credential::Invalid => false,
            Credential::Bootstrap(token) => {
                let Some(secrets) = berth_api::resources::lookup("", "v1", "secrets") else {
                    return false;
                };
                match registry
                    .get(
                        secrets,
                        Some(BOOTSTRAP_TOKEN_NAMESPACE),
                        &token.secret_name(),
                    )
                    .await
                {
                    Ok(secret) => {
                        bootstrap_secret_accepts(&secret, &token, berth_api::tables::now())
                    }
                    Err(e) => {
                        if e.code != 404 {
                            tracing::warn!(token_id = token.id(), error = %e, "cannot read a bootstrap token's Secret");
                        }
                        false
                    }
                }
            }
        }
    }
}

/// Compares without an early exit, so response timing does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn tokens_are_made_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::load_or_create(dir.path()).unwrap();
        let again = Authenticator::load_or_create(dir.path()).unwrap();
        assert_eq!(auth.admin_token(), again.admin_token());
        let admin = format!("Bearer {}", auth.admin_token());
        assert_eq!(auth.credential(Some(&admin)), Credential::Admin);
        assert_eq!(auth.credential(Some("Bearer nope")), Credential::Invalid);
        assert_eq!(auth.credential(None), Credential::Invalid);
        assert_eq!(
            auth.credential(Some(auth.admin_token())),
            Credential::Invalid
        );
        assert_eq!(
            auth.credential(Some("Bearer abcdef.0123456789abcdef")),
            Credential::Bootstrap(BootstrapToken::parse("abcdef.0123456789abcdef").unwrap())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(admin_token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_parser_takes_exactly_the_bootstrap_token_shape() {
        let token = BootstrapToken::parse("abc123.0123456789abcdef").unwrap();
        assert_eq!(token.id(), "abc123");
        assert_eq!(token.secret(), "0123456789abcdef");
        assert_eq!(token.secret_name(), "bootstrap-token-abc123");
        for bad in [
            "",
            ".",
            "abc123",
            "abc123.",
            "abc123.0123456789abcde",
            "abc123.0123456789abcdef0",
            "abc12.0123456789abcdef",
            "ABC123.0123456789abcdef",
            "abc123.0123456789ABCDEF",
            "abc-23.0123456789abcdef",
            "abc123:0123456789abcdef",
            " abc123.0123456789abcdef",
            "abc123.0123456789abcdef\n",
            "abc123.0123.56789abcdef",
            "abc123.0123456789abcdéf",
        ] {
            assert_eq!(BootstrapToken::parse(bad), Err(MalformedToken), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = BootstrapToken::parse("abc123.0123456789abcdef").unwrap();
        let shown = format!("{token:?}");
        assert!(shown.contains("abc123"));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = BootstrapToken::generate();
        let b = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&a.expose()), Ok(a.clone()));
        assert_ne!(a, b);
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn secret_for(token: &BootstrapToken, expiration: Option<&str>) -> Value {
        let mut data = json!({
            "token-id": b64(token.id()),
            "token-secret": b64(token.secret()),
            "usage-bootstrap-authentication": b64("true"),
        });
        if let Some(expiration) = expiration {
            data["expiration"] = json!(b64(expiration));
        }
        json!({
            "metadata": {"name": token.secret_name(), "namespace": "kube-system"},
            "type": BOOTSTRAP_TOKEN_SECRET_TYPE,
            "data": data,
        })
    }

    #[test]
    fn a_secret_accepts_its_token_until_it_expires() {
        let token = BootstrapToken::parse("abc123.0123456789abcdef").unwrap();
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        assert!(bootstrap_secret_accepts(
            &secret_for(&token, None),
            &token,
            now
        ));
        let later = secret_for(&token, Some("2030-01-01T00:00:01Z"));
        assert!(bootstrap_secret_accepts(&later, &token, now));
        let past = secret_for(&token, Some("2029-12-31T23:59:59Z"));
        assert!(!bootstrap_secret_accepts(&past, &token, now));
        let exactly = secret_for(&token, Some("2030-01-01T00:00:00Z"));
        assert!(!bootstrap_secret_accepts(&exactly, &token, now));
        let garbage = secret_for(&token, Some("tomorrow"));
        assert!(!bootstrap_secret_accepts(&garbage, &token, now));
    }

    #[test]
    fn a_secret_rejects_anything_that_does_not_match() {
        let token = BootstrapToken::parse("abc123.0123456789abcdef").unwrap();
        let now = berth_api::tables::now();
        let wrong_secret = BootstrapToken::parse("abc123.0123456789abcdee").unwrap();
        assert!(!bootstrap_secret_accepts(
            &secret_for(&token, None),
            &wrong_secret,
            now
        ));
        let mut opaque = secret_for(&token, None);
        opaque["type"] = json!("Opaque");
        assert!(!bootstrap_secret_accepts(&opaque, &token, now));
        let mut no_usage = secret_for(&token, None);
        no_usage["data"]["usage-bootstrap-authentication"] = json!(b64("false"));
        assert!(!bootstrap_secret_accepts(&no_usage, &token, now));
        let mut other_id = secret_for(&token, None);
        other_id["data"]["token-id"] = json!(b64("zzz999"));
        assert!(!bootstrap_secret_accepts(&other_id, &token, now));
        let mut other_name = secret_for(&token, None);
        other_name["metadata"]["name"] = json!("bootstrap-token-zzz999");
        assert!(!bootstrap_secret_accepts(&other_name, &token, now));
        let mut no_secret = secret_for(&token, None);
        no_secret["data"]
            .as_object_mut()
            .unwrap()
            .remove("token-secret");
        assert!(!bootstrap_secret_accepts(&no_secret, &token, now));
        let mut deleting = secret_for(&token, None);
        deleting["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        assert!(!bootstrap_secret_accepts(&deleting, &token, now));
        let string_data = json!({
            "metadata": {"name": token.secret_name()},
            "type": BOOTSTRAP_TOKEN_SECRET_TYPE,
            "stringData": {"token-id": "abc123", "token-secret": "0123456789abcdef",
                "usage-bootstrap-authentication": "true"},
        });
        assert!(bootstrap_secret_accepts(&string_data, &token, now));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            let _ = BootstrapToken::parse(&text);
        }

        #[test]
        fn well_formed_tokens_round_trip(id in "[a-z0-9]{6}", secret in "[a-z0-9]{16}") {
            let text = format!("{id}.{secret}");
            let token = BootstrapToken::parse(&text).unwrap();
            prop_assert_eq!(token.id(), id.as_str());
            prop_assert_eq!(token.secret(), secret.as_str());
            prop_assert_eq!(token.expose(), text);
        }

        #[test]
        fn whatever_parses_is_well_formed(text in "[a-z0-9.A-Z-]{20,26}") {
            if let Ok(token) = BootstrapToken::parse(&text) {
                prop_assert_eq!(token.expose(), text.clone());
                prop_assert!(is_token_id(token.id()));
                prop_assert_eq!(token.secret().len(), 16);
                prop_assert!(token.secret().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            }
        }
    }
}
