//! API tokens: format, hashing, scopes and what each principal may do.
//!
//! A token reads `wharf_<id>_<secret>`: `id` (12 hex) is public and finds the
//! row; only sha256 of the whole token is stored, and it is compared in
//! constant time. The root token is a Worker secret and may do everything.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_PREFIX: &str = "wharf_";
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Publish,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "publish" => Some(Scope::Publish),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Root,
    Token { id: String, site_id: Option<i64>, scope: Scope },
}

impl Principal {
    /// May this principal act with `needed` on `site` (None = global operations)?
    pub fn can(&self, needed: Scope, site: Option<i64>) -> bool {
        match self {
            Principal::Root => true,
            Principal::Token { site_id: None, scope, .. } => *scope >= needed,
            Principal::Token { site_id: Some(own), scope, .. } => site == Some(*own) && *scope >= needed,
        }
    }
    /// May this principal act with `needed` on at least one site (content-addressed blobs)?
    pub fn can_on_some_site(&self, needed: Scope) -> bool {
        match self {
            Principal::Root => true,
            Principal::Token { scope, .. } => *scope >= needed,
        }
    }
    /// The site this principal is confined to, if any.
    pub fn confined_to(&self) -> Option<i64> {
        match self {
            Principal::Token { site_id, .. } => *site_id,
            Principal::Root => None,
        }
    }
}

/// A freshly made token: the string shown once, and what is stored.
pub struct NewToken {
    pub id: String,
    pub token: String,
    pub secret_sha256: String,
}

/// Makes a token from 38 random bytes (6 for the id, 32 for the secret).
pub fn new_token(random: &[u8; 38]) -> NewToken {
    let id = hex::encode(&random[..6]);
    let token = format!("{TOKEN_PREFIX}{id}_{}", hex::encode(&random[6..]));
    let secret_sha256 = sha256_hex(token.as_bytes());
    NewToken { id, token, secret_sha256 }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The bearer token of an `Authorization` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = rest.trim();
    (!t.is_empty()).then_some(t)
}

/// The public id inside a well-formed token, or None.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (hexy(id, ID_HEX) && hexy(secret, SECRET_HEX)).then_some(id)
}

/// Constant-time check of a presented token against a stored sha256 (hex).
pub fn matches_hash(presented: &str, stored_sha256_hex: &str) -> bool {
    let got = Sha256::digest(presented.as_bytes());
    match hex::decode(stored_sha256_hex) {
        Ok(want) if want.len() == 32 => bool::from(got.as_slice().ct_eq(&want)),
        _ => false,
    }
}

/// Constant-time check of a presented token against the root secret. Both
/// sides are hashed first so the comparison does not leak the secret's length.
pub fn matches_root(presented: &str, root: &str) -> bool {
    if root.len() < 16 {
        return false; // a root token this short is a configuration error; refuse it
    }
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(root.as_bytes());
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Is a stored token usable at `now_ms`?
pub fn is_live(expires_at: Option<i64>, revoked_at: Option<i64>, now_ms: i64) -> bool {
    revoked_at.is_none() && expires_at.map_or(true, |e| e > now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_roundtrip() {
        let t = new_token(&[7u8; 38]);
        assert_eq!(t.id, "070707070707");
        assert_eq!(token_id(&t.token), Some("070707070707"));
        assert!(matches_hash(&t.token, &t.secret_sha256));
        assert!(!matches_hash(&format!("{}0", t.token), &t.secret_sha256));
        assert!(!matches_hash(&t.token, "zz"));
        assert_eq!(token_id("wharf_0707_abc"), None);
        assert_eq!(token_id("other"), None);
        assert_eq!(token_id(&t.token.to_uppercase()), None);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer   abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn root() {
        assert!(matches_root("a-long-enough-root-token", "a-long-enough-root-token"));
        assert!(!matches_root("a-long-enough-root-tokeN", "a-long-enough-root-token"));
        assert!(!matches_root("short", "short"));
    }

    #[test]
    fn permissions() {
        let site_pub = Principal::Token { id: "x".into(), site_id: Some(1), scope: Scope::Publish };
        assert!(site_pub.can(Scope::Read, Some(1)));
        assert!(site_pub.can(Scope::Publish, Some(1)));
        assert!(!site_pub.can(Scope::Admin, Some(1)));
        assert!(!site_pub.can(Scope::Read, Some(2)));
        assert!(!site_pub.can(Scope::Read, None));
        assert!(site_pub.can_on_some_site(Scope::Publish));
        let global_read = Principal::Token { id: "y".into(), site_id: None, scope: Scope::Read };
        assert!(global_read.can(Scope::Read, Some(5)));
        assert!(global_read.can(Scope::Read, None));
        assert!(!global_read.can(Scope::Publish, Some(5)));
        assert!(!global_read.can_on_some_site(Scope::Publish));
        assert!(Principal::Root.can(Scope::Admin, None));
    }

    #[test]
    fn liveness() {
        assert!(is_live(None, None, 10));
        assert!(is_live(Some(11), None, 10));
        assert!(!is_live(Some(10), None, 10));
        assert!(!is_live(None, Some(1), 10));
    }
}
