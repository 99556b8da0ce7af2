//! Authentication: bearer tokens. The admin token is made on first start and kept in
//! `<data-dir>/admin.token` (0600). There is no anonymous access to resources.

use std::path::{Path, PathBuf};

use crate::files::write_private;

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

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        constant_time_eq(token.trim().as_bytes(), self.admin_token.as_bytes())
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

    #[test]
    fn tokens_are_made_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::load_or_create(dir.path()).unwrap();
        let again = Authenticator::load_or_create(dir.path()).unwrap();
        assert_eq!(auth.admin_token(), again.admin_token());
        assert!(auth.authenticate(Some(&format!("Bearer {}", auth.admin_token()))));
        assert!(!auth.authenticate(Some("Bearer nope")));
        assert!(!auth.authenticate(None));
        assert!(!auth.authenticate(Some(auth.admin_token())));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(admin_token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
