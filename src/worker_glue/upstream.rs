//! Requests to an upstream registry, as the pull-through mirror and the
//! declared mirror make them: the token flow (or Basic credentials) after a
//! 401, tokens reused per isolate until they expire, redirects to blob
//! storage followed without `Authorization`.

use crate::oci::mirror::{self as m, Challenge, Upstream};
use crate::oci::OciError;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::*;

/// One repository of an upstream, asked on behalf of one site (whose
/// credentials are the ones used).
pub(crate) struct Remote<'a> {
    pub env: &'a Env,
    pub site_id: i64,
    pub up: &'a Upstream,
    pub repo: String,
    pub now: i64,
}

thread_local! {
    /// Upstream `Authorization` values per (site, upstream, credentials,
    /// repository) with their expiry (ms): an isolate reuses a token until it
    /// expires, and never for another site (whose credentials may differ).
    static TOKENS: RefCell<HashMap<String, (String, i64)>> = RefCell::new(HashMap::new());
}

fn internal(e: impl std::fmt::Display) -> OciError {
    OciError::new(500, "UNKNOWN", e.to_string())
}

/// 503 UNAVAILABLE naming the upstream and repository.
pub(crate) fn unavailable(up: &Upstream, repo: &str, what: String) -> OciError {
    OciError::new(503, "UNAVAILABLE", format!("upstream {} for {repo}: {what}", up.base()))
}

/// What an upstream's unexpected status becomes.
pub(crate) fn status_error(up: &Upstream, repo: &str, status: u16) -> OciError {
    if status == 429 {
        return OciError::new(429, "TOOMANYREQUESTS", format!("upstream {} is rate-limiting", up.base()));
    }
    unavailable(up, repo, format!("answered {status}"))
}

/// `Authorization: Basic` for a user name and the password held in the Worker
/// secret named `secret` (`what` names what the credentials are for).
pub(crate) fn basic_auth(env: &Env, user: &str, secret: &str, what: &str) -> std::result::Result<String, String> {
    let password = env.secret(secret).map_err(|_| format!("the Worker secret {secret} ({what} credentials) is not set"))?;
    use base64::Engine;
    Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.to_string()))))
}

impl Remote<'_> {
    pub fn unavailable(&self, what: String) -> OciError {
        unavailable(self.up, &self.repo, what)
    }

    /// The upstream's Basic credentials (`username` and the Worker secret
    /// named by `password_secret`).
    fn basic(&self) -> Result<Option<String>, OciError> {
        let (Some(user), Some(secret)) = (&self.up.username, &self.up.password_secret) else { return Ok(None) };
        basic_auth(self.env, user, secret, "upstream").map(Some).map_err(internal)
    }

    /// After a 401: the `Authorization` the upstream's challenge asks for (its
    /// token endpoint's token, or Basic credentials), with its expiry.
    async fn authenticate(&self, challenge: Option<String>) -> Result<Option<(String, i64)>, OciError> {
        let creds = self.basic()?;
        match challenge.as_deref().and_then(m::parse_challenge) {
            Some(Challenge::Basic) => Ok(creds.map(|c| (c, i64::MAX))),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let url = m::token_url(&realm, service.as_deref(), &self.repo);
                let mut r = fetch(&url, Method::Get, None, creds.as_deref()).await.map_err(|e| self.unavailable(format!("token endpoint: {e}")))?;
                if r.status_code() != 200 {
                    return Err(self.unavailable(format!("token endpoint answered {}", r.status_code())));
                }
                let body = r.bytes().await.map_err(|e| self.unavailable(e.to_string()))?;
                let (token, ttl) = m::parse_token(&body).ok_or_else(|| self.unavailable("the token endpoint's answer has no token".into()))?;
                // A little early, so a token is never sent as it expires.
                Ok(Some((format!("Bearer {token}"), self.now + (ttl as i64) * 1000 - 5_000)))
            }
            None => Ok(None),
        }
    }

    /// One request to the upstream (`/v2/<repo>/<suffix>`): with the cached
    /// token, again after a 401 with a fresh one; redirects (blob storage)
    /// are followed without `Authorization`. Err: the upstream could not be reached.
    pub async fn call(&self, method: Method, suffix: &str, accept: Option<&str>) -> Result<Response, OciError> {
        let url = format!("{}/v2/{}/{}", self.up.base(), self.repo, suffix);
        let key = format!("{}\0{}\0{}\0{}", self.site_id, self.up.base(), self.up.username.as_deref().unwrap_or(""), self.repo);
        let now = self.now;
        let token = TOKENS.with(|c| c.borrow().get(&key).filter(|(_, exp)| *exp > now).map(|(v, _)| v.clone()));
        let net = |e: Error| self.unavailable(e.to_string());
        let mut r = fetch(&url, method.clone(), accept, token.as_deref()).await.map_err(net)?;
        if r.status_code() == 401 {
            if let Some((auth, exp)) = self.authenticate(r.headers().get("www-authenticate").ok().flatten()).await? {
                TOKENS.with(|c| c.borrow_mut().insert(key, (auth.clone(), exp)));
                r = fetch(&url, method.clone(), accept, Some(&auth)).await.map_err(net)?;
            }
        }
        let mut at = Url::parse(&url).map_err(internal)?;
        for _ in 0..5 {
            if !matches!(r.status_code(), 301 | 302 | 303 | 307 | 308) {
                break;
            }
            let location = r.headers().get("location").ok().flatten().ok_or_else(|| self.unavailable("a redirect without Location".into()))?;
            at = at.join(&location).map_err(|e| self.unavailable(format!("redirect to {location}: {e}")))?;
            r = fetch(at.as_str(), method.clone(), None, None).await.map_err(net)?;
        }
        Ok(r)
    }
}

/// GET or HEAD to an upstream; a request whose connection failed is tried
/// once more (both are idempotent, and a pooled connection the upstream
/// closed is the usual cause).
pub(crate) async fn fetch(url: &str, method: Method, accept: Option<&str>, authorization: Option<&str>) -> Result<Response> {
    match fetch_once(url, method.clone(), accept, authorization).await {
        Ok(r) => Ok(r),
        Err(_) => fetch_once(url, method, accept, authorization).await,
    }
}

async fn fetch_once(url: &str, method: Method, accept: Option<&str>, authorization: Option<&str>) -> Result<Response> {
    let h = Headers::new();
    h.set("user-agent", "wharf-mirror")?;
    if let Some(a) = accept {
        h.set("accept", a)?;
    }
    if let Some(a) = authorization {
        h.set("authorization", a)?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(h).with_redirect(RequestRedirect::Manual);
    Fetch::Request(Request::new_with_init(url, &init)?).send().await
}
