//! The registry's pull-through mirror: which upstream a repository name goes
//! to, the upstream's auth challenge and token answer, and when a cached tag
//! or 404 must be asked again. Pure; the glue does the fetching and storing.

use serde::{Deserialize, Serialize};

/// Docker Hub's registry endpoint.
pub const DOCKER_HUB: &str = "https://registry-1.docker.io";

/// One upstream registry a site mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The first name component that selects this upstream
    /// (`/v2/<prefix>/org/image/...`), or none for the default upstream, which
    /// takes every name no prefix claims (a Docker `registry-mirrors` entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The upstream's base URL (`https://ghcr.io`).
    pub url: String,
    /// One-component names get `library/` (Docker Hub's official images).
    /// Default: true for Docker Hub, false otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<bool>,
    /// Credentials for the upstream: a user name and the name of the Worker
    /// secret holding the password or token (none: anonymous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
}

impl Upstream {
    /// The key of this upstream in the cache ('' for the default one).
    pub fn key(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }
    fn library(&self) -> bool {
        self.library.unwrap_or(self.base() == DOCKER_HUB || self.base() == "https://index.docker.io")
    }
}

/// Checks a site's upstream list; the message says what is wrong.
pub fn validate(upstreams: &[Upstream]) -> Result<(), String> {
    let mut defaults = 0;
    let mut prefixes = std::collections::BTreeSet::new();
    for u in upstreams {
        let url = u.base();
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains('?') || url.contains('#') {
            return Err(format!("upstream url {:?} must be an http(s) base URL", u.url));
        }
        match &u.prefix {
            None => defaults += 1,
            Some(p) => {
                if !super::name::valid_name(p) || p.contains('/') {
                    return Err(format!("upstream prefix {p:?} must be one repository name component (e.g. ghcr.io)"));
                }
                if !prefixes.insert(p.clone()) {
                    return Err(format!("upstream prefix {p:?} appears twice"));
                }
            }
        }
        if u.username.is_some() != u.password_secret.is_some() {
            return Err("an upstream's username and password_secret go together".into());
        }
    }
    if defaults > 1 {
        return Err("only one upstream can be the default (no prefix)".into());
    }
    Ok(())
}

/// Where a repository name of the site goes upstream: the upstream and the
/// repository name there.
pub fn resolve<'a>(upstreams: &'a [Upstream], name: &str) -> Option<(&'a Upstream, String)> {
    if let Some((first, rest)) = name.split_once('/') {
        if let Some(u) = upstreams.iter().find(|u| u.prefix.as_deref() == Some(first)) {
            return Some((u, rest.to_string()));
        }
    }
    let u = upstreams.iter().find(|u| u.prefix.is_none())?;
    if u.library() && !name.contains('/') {
        return Some((u, format!("library/{name}")));
    }
    Some((u, name.to_string()))
}

/// An upstream's `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
    Basic,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted values may hold
/// commas) or `Basic …`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = std::collections::BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer { realm: params.remove("realm")?, service: params.remove("service"), scope: params.remove("scope") })
}

/// The token request for a pull of `repository` after a Bearer challenge.
pub fn token_url(realm: &str, service: Option<&str>, repository: &str) -> String {
    let mut url = String::from(realm);
    url.push(if realm.contains('?') { '&' } else { '?' });
    if let Some(s) = service {
        url.push_str(&format!("service={}&", crate::path::percent_encode_component(s)));
    }
    url.push_str(&format!("scope={}", crate::path::percent_encode_component(&format!("repository:{repository}:pull"))));
    url
}

/// A token endpoint's answer: the token and for how long (seconds; 60 when
/// the answer does not say, as the Docker token spec defines).
pub fn parse_token(body: &[u8]) -> Option<(String, u64)> {
    #[derive(Deserialize)]
    struct T {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let t: T = serde_json::from_slice(body).ok()?;
    let token = t.token.or(t.access_token).filter(|t| !t.is_empty())?;
    Some((token, t.expires_in.unwrap_or(60).max(1)))
}

/// Whether a cached entry checked at `checked_at` (ms) still holds at `now`
/// with a TTL in seconds.
pub fn fresh(checked_at: i64, now: i64, ttl_seconds: u64) -> bool {
    now - checked_at < (ttl_seconds as i64).saturating_mul(1000)
}

/// A manifest cache entry, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// A manifest is cached (None: a remembered upstream 404).
    pub has_content: bool,
    pub checked_at: i64,
}

/// Before asking the upstream for a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Serve the cached manifest.
    Serve,
    /// The upstream said 404 recently: say so without asking.
    NotFound,
    /// Ask the upstream (a tag with HEAD first).
    Ask,
}

/// Digests are content, cached for good; a tag is served from the cache for
/// `tag_ttl` seconds; a remembered 404 stands for `not_found_ttl` seconds.
pub fn before_asking(by_digest: bool, entry: Option<Entry>, now: i64, tag_ttl: u64, not_found_ttl: u64) -> Before {
    match entry {
        Some(e) if e.has_content && (by_digest || fresh(e.checked_at, now, tag_ttl)) => Before::Serve,
        Some(e) if !e.has_content && fresh(e.checked_at, now, not_found_ttl) => Before::NotFound,
        _ => Before::Ask,
    }
}

/// What the upstream's answer leads to (`None`: it could not be reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// 200: go on (use the answer).
    Use,
    /// 404: remember it and say so.
    NotFound,
    /// Down, 5xx, 429 or any other refusal with a cached manifest: serve it
    /// (stale-if-error), and remember nothing.
    ServeStale,
    /// The same without a cached manifest: pass the failure on, remember nothing.
    Fail,
}

pub fn after_answer(status: Option<u16>, have_stale: bool) -> After {
    match status {
        Some(200) => After::Use,
        Some(404) => After::NotFound,
        _ if have_stale => After::ServeStale,
        _ => After::Fail,
    }
}

/// The admin API's cursor for the cache listing: the key of the last entry.
pub fn cursor(upstream: &str, repository: &str, kind: &str, reference: &str) -> String {
    format!("{upstream}|{repository}|{kind}|{reference}")
}

pub fn parse_cursor(after: &str) -> Result<[String; 4], String> {
    if after.is_empty() {
        return Ok(Default::default());
    }
    let parts: Vec<&str> = after.split('|').collect();
    match parts.as_slice() {
        [u, r, k, t] => Ok([u.to_string(), r.to_string(), k.to_string(), t.to_string()]),
        _ => Err("after is the next_after of a previous page".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(prefix: Option<&str>, url: &str) -> Upstream {
        Upstream { prefix: prefix.map(str::to_string), url: url.into(), library: None, username: None, password_secret: None }
    }

    #[test]
    fn the_cache_policy_serves_digests_for_good_tags_for_their_ttl_and_stale_on_any_failure() {
        let cached = |at| Some(Entry { has_content: true, checked_at: at });
        let gone = |at| Some(Entry { has_content: false, checked_at: at });
        let now = 1_000_000;
        assert_eq!(before_asking(true, cached(0), now, 0, 0), Before::Serve, "a digest, however old");
        assert_eq!(before_asking(false, cached(now - 5_000), now, 10, 0), Before::Serve);
        assert_eq!(before_asking(false, cached(now - 15_000), now, 10, 0), Before::Ask, "a tag past its TTL");
        assert_eq!(before_asking(false, cached(now), now, 0, 0), Before::Ask, "TTL 0: always revalidated");
        assert_eq!(before_asking(false, gone(now - 5_000), now, 0, 10), Before::NotFound);
        assert_eq!(before_asking(true, gone(now - 15_000), now, 0, 10), Before::Ask);
        assert_eq!(before_asking(false, None, now, 3600, 3600), Before::Ask);
        assert_eq!(after_answer(Some(200), true), After::Use);
        assert_eq!(after_answer(Some(404), true), After::NotFound);
        for failure in [None, Some(500), Some(503), Some(429), Some(401), Some(302)] {
            assert_eq!(after_answer(failure, true), After::ServeStale, "{failure:?}");
            assert_eq!(after_answer(failure, false), After::Fail, "{failure:?}");
        }
    }

    #[test]
    fn names_go_to_the_upstream_their_prefix_names() {
        let ups = vec![up(None, DOCKER_HUB), up(Some("ghcr.io"), "https://ghcr.io")];
        let (u, r) = resolve(&ups, "ghcr.io/org/image").unwrap();
        assert_eq!((u.key(), r.as_str()), ("ghcr.io", "org/image"));
        let (u, r) = resolve(&ups, "alpine").unwrap();
        assert_eq!((u.key(), r.as_str()), ("", "library/alpine"));
        let (u, r) = resolve(&ups, "library/alpine").unwrap();
        assert_eq!((u.key(), r.as_str()), ("", "library/alpine"));
        // A prefix-like first component no upstream claims goes to the default.
        assert_eq!(resolve(&ups, "quay.io/x").unwrap().1, "quay.io/x");
        // Only Docker Hub gets library/ unless told.
        let plain = vec![up(None, "http://127.0.0.1:5000")];
        assert_eq!(resolve(&plain, "app").unwrap().1, "app");
        assert!(resolve(&[up(Some("ghcr.io"), "https://ghcr.io")], "alpine").is_none());
    }

    #[test]
    fn upstream_lists_are_checked() {
        assert!(validate(&[up(None, DOCKER_HUB), up(Some("ghcr.io"), "https://ghcr.io")]).is_ok());
        assert!(validate(&[up(None, DOCKER_HUB), up(None, "https://ghcr.io")]).is_err());
        assert!(validate(&[up(Some("a"), "https://a"), up(Some("a"), "https://b")]).is_err());
        assert!(validate(&[up(Some("a/b"), "https://a")]).is_err());
        assert!(validate(&[up(Some("Bad"), "https://a")]).is_err());
        assert!(validate(&[up(None, "ftp://a")]).is_err());
        let mut half = up(None, DOCKER_HUB);
        half.username = Some("u".into());
        assert!(validate(&[half]).is_err());
    }

    #[test]
    fn challenges_and_tokens() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(
            token_url("https://auth.docker.io/token", Some("registry.docker.io"), "library/alpine"),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull"
        );
        assert_eq!(token_url("https://h/t?a=b", None, "x"), "https://h/t?a=b&scope=repository%3Ax%3Apull");
        assert_eq!(parse_token(br#"{"token":"abc","expires_in":300}"#), Some(("abc".into(), 300)));
        assert_eq!(parse_token(br#"{"access_token":"abc"}"#), Some(("abc".into(), 60)));
        assert_eq!(parse_token(br#"{"token":""}"#), None);
    }

    #[test]
    fn freshness() {
        assert!(fresh(1_000, 1_999, 1));
        assert!(!fresh(1_000, 2_000, 1));
        assert!(!fresh(1_000, 1_000, 0));
    }
}
