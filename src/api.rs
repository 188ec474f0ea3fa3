//! The admin API's shape: routes, errors and request bodies, free of any runtime.

use crate::path;
use serde::Deserialize;
use serde_json::json;

/// An API error: `{"error":{"code","message"}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// More fields of the admin API's error object (a batch's refused files).
    pub details: Option<Box<serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None }
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "unauthorized", "a valid bearer token is required")
    }
    pub fn forbidden() -> Self {
        Self::new(403, "forbidden", "this token may not do that")
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, "not_found", what)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "unprocessable", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
    /// The admin API's form: `{"error":{"code","message"}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(more), Some(e)) = (self.details.as_deref().and_then(|d| d.as_object()), error.as_object_mut()) {
            for (k, v) in more {
                e.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        json!({"error": error})
    }
    /// The registry's form (distribution spec): `{"errors":[{"code","message","detail"}]}`.
    /// A code outside the spec's upper-case vocabulary (a database failure,
    /// say) is `UNKNOWN` there.
    pub fn oci_body(&self) -> serde_json::Value {
        let code = if self.code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') { self.code } else { "UNKNOWN" };
        json!({"errors": [{"code": code, "message": self.message, "detail": null}]})
    }
}

/// Which release a new draft starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Empty,
    Active,
    Release(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    ListSites,
    CreateSite,
    ShowSite(String),
    DeleteSite(String),
    ListHostnames(String),
    AddHostname(String, String),
    RemoveHostname(String, String),
    CreateToken,
    ListTokens,
    RevokeToken(String),
    PutBlob(String),
    ShowBlob(String),
    /// Which of some digests a site can add by digest (without uploading).
    HeldBlobs(String),
    /// Who the token is: its id, scope and site.
    Whoami,
    ListReleases(String),
    CreateRelease(String),
    ShowRelease(String, i64),
    DeleteRelease(String, i64),
    ListPaths(String, i64),
    PutPath(String, i64, String),
    DeletePath(String, i64, String),
    ApplyChanges(String, i64),
    Diff(String, i64, i64),
    Activate(String, i64),
    Rollback(String),
    OciPutSettings(String),
    OciShowSettings(String),
    OciListCache(String),
    OciPurgeCache(String),
    /// site, file (None: both parts in one document)
    MirrorPutConfig(String, Option<String>),
    MirrorShowConfig(String),
    MirrorValidate(String),
    MirrorPutSettings(String),
    MirrorShowSettings(String),
    MirrorStartRun(String),
    MirrorListRuns(String),
    MirrorShowRun(String, i64),
    MirrorImages(String),
    ApkPutSettings(String),
    ApkShowSettings(String),
    ApkPutKey(String),
    ApkShowKey(String),
    /// site, release, branch, repository
    ApkAddPackage(String, i64, String, String),
    ApkAddBatch(String, i64, String, String),
    /// A batch published in one request: into a new release made from the active one, activated.
    ApkPublishBatch(String, String, String),
    ApkListPackages(String, i64, String, String),
    /// site, release, branch, repository, name, version, arch
    ApkRemovePackage(String, i64, String, String, String, String, String),
    ApkPublish(String, i64, String, String),
    /// site, release, branch, repository, arch
    ApkUnsigned(String, i64, String, String, String),
    ApkSignature(String, i64, String, String, String),
    /// site, release, chart repository
    HelmAddChart(String, i64, String),
    HelmAddBatch(String, i64, String),
    HelmPublishBatch(String, String),
    HelmListCharts(String, i64, String),
    /// site, release, repository, chart name, version
    HelmRemoveChart(String, i64, String, String, String),
    HelmPutProvenance(String, i64, String, String, String),
    HelmPublish(String, i64, String),
    DebPutDist(String, String),
    DebShowDist(String, String),
    DebPutKey(String),
    DebShowKey(String),
    DebAddPackage(String, i64, String, String),
    DebAddBatch(String, i64, String, String),
    DebPublishBatch(String, String, String),
    DebRemovePackage(String, i64, String, String, String, String, String),
    DebListPackages(String, i64, String),
    DebPublish(String, i64, String),
    DebRelease(String, i64, String),
    DebSignatures(String, i64, String),
}

pub const API_PREFIX: &str = "/api/v1";

/// Maps a method and a raw (percent-encoded) URL path to a route.
pub fn route(method: &str, raw_path: &str) -> Result<Route, ApiError> {
    let Some(rest) = raw_path.strip_prefix(API_PREFIX) else {
        return Err(ApiError::not_found("no such endpoint"));
    };
    let segs: Vec<&str> = rest.split('/').skip(1).collect();
    let m = method;
    let not_allowed = || ApiError::new(405, "method_not_allowed", format!("{m} is not allowed here"));
    let id = |s: &str| -> Result<i64, ApiError> {
        s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::not_found("no such release"))
    };
    let site = |s: &str| -> Result<String, ApiError> {
        valid_site_name(s).then(|| s.to_string()).ok_or_else(|| ApiError::not_found("no such site"))
    };
    let name = |s: &str| -> Result<String, ApiError> {
        valid_dist_name(s).then(|| s.to_string()).ok_or_else(|| ApiError::bad_request(format!("invalid dist or component name {s:?}")))
    };
    use Route::*;
    let r = match (m, segs.as_slice()) {
        ("GET", ["health"]) => Health,
        (_, ["health"]) => return Err(not_allowed()),
        ("GET", ["whoami"]) => Whoami,
        (_, ["whoami"]) => return Err(not_allowed()),
        ("POST", ["sites", s, "blobs", "held"]) => HeldBlobs(site(s)?),
        (_, ["sites", _, "blobs", "held"]) => return Err(not_allowed()),
        ("GET", ["sites"]) => ListSites,
        ("POST", ["sites"]) => CreateSite,
        (_, ["sites"]) => return Err(not_allowed()),
        ("GET", ["sites", s]) => ShowSite(site(s)?),
        ("DELETE", ["sites", s]) => DeleteSite(site(s)?),
        (_, ["sites", _]) => return Err(not_allowed()),
        ("GET", ["sites", s, "hostnames"]) => ListHostnames(site(s)?),
        (_, ["sites", _, "hostnames"]) => return Err(not_allowed()),
        ("PUT", ["sites", s, "hostnames", h]) => AddHostname(site(s)?, h.to_string()),
        ("DELETE", ["sites", s, "hostnames", h]) => RemoveHostname(site(s)?, h.to_string()),
        (_, ["sites", _, "hostnames", _]) => return Err(not_allowed()),
        ("POST", ["tokens"]) => CreateToken,
        ("GET", ["tokens"]) => ListTokens,
        (_, ["tokens"]) => return Err(not_allowed()),
        ("DELETE", ["tokens", t]) => RevokeToken(t.to_string()),
        (_, ["tokens", _]) => return Err(not_allowed()),
        ("PUT", ["blobs", "sha256", h]) => PutBlob(digest(h)?),
        ("GET" | "HEAD", ["blobs", "sha256", h]) => ShowBlob(digest(h)?),
        (_, ["blobs", "sha256", _]) => return Err(not_allowed()),
        ("GET", ["sites", s, "releases"]) => ListReleases(site(s)?),
        ("POST", ["sites", s, "releases"]) => CreateRelease(site(s)?),
        (_, ["sites", _, "releases"]) => return Err(not_allowed()),
        ("GET", ["sites", s, "releases", r]) => ShowRelease(site(s)?, id(r)?),
        ("DELETE", ["sites", s, "releases", r]) => DeleteRelease(site(s)?, id(r)?),
        (_, ["sites", _, "releases", _]) => return Err(not_allowed()),
        ("GET", ["sites", s, "releases", r, "paths"]) => ListPaths(site(s)?, id(r)?),
        (_, ["sites", _, "releases", _, "paths"]) => return Err(not_allowed()),
        (_, ["sites", s, "releases", r, "paths", p @ ..]) if !p.is_empty() => {
            let p = release_path(&p.join("/"))?;
            match m {
                "PUT" => PutPath(site(s)?, id(r)?, p),
                "DELETE" => DeletePath(site(s)?, id(r)?, p),
                _ => return Err(not_allowed()),
            }
        }
        ("POST", ["sites", s, "releases", r, "changes"]) => ApplyChanges(site(s)?, id(r)?),
        (_, ["sites", _, "releases", _, "changes"]) => return Err(not_allowed()),
        ("GET", ["sites", s, "releases", a, "diff", b]) => Diff(site(s)?, id(a)?, id(b)?),
        (_, ["sites", _, "releases", _, "diff", _]) => return Err(not_allowed()),
        ("POST", ["sites", s, "releases", r, "activate"]) => Activate(site(s)?, id(r)?),
        (_, ["sites", _, "releases", _, "activate"]) => return Err(not_allowed()),
        ("PUT", ["sites", s, "deb", "dists", d]) => DebPutDist(site(s)?, name(d)?),
        ("GET", ["sites", s, "deb", "dists", d]) => DebShowDist(site(s)?, name(d)?),
        (_, ["sites", _, "deb", "dists", _]) => return Err(not_allowed()),
        ("PUT", ["sites", s, "deb", "key"]) => DebPutKey(site(s)?),
        ("GET", ["sites", s, "deb", "key"]) => DebShowKey(site(s)?),
        (_, ["sites", _, "deb", "key"]) => return Err(not_allowed()),
        ("POST", ["sites", s, "releases", r, "deb", d, c, "packages"]) => DebAddPackage(site(s)?, id(r)?, name(d)?, name(c)?),
        ("POST", ["sites", s, "releases", r, "deb", d, c, "packages", "batch"]) => DebAddBatch(site(s)?, id(r)?, name(d)?, name(c)?),
        ("POST", ["sites", s, "deb", d, c, "packages", "batch"]) => DebPublishBatch(site(s)?, name(d)?, name(c)?),
        (_, ["sites", _, "releases", _, "deb", _, _, "packages"]) => return Err(not_allowed()),
        ("DELETE", ["sites", s, "releases", r, "deb", d, c, "packages", p, v, a]) => {
            let v = path::percent_decode(v).map_err(|_| ApiError::bad_request("invalid version"))?;
            DebRemovePackage(site(s)?, id(r)?, name(d)?, name(c)?, p.to_string(), v, a.to_string())
        }
        ("GET", ["sites", s, "releases", r, "deb", d, "packages"]) => DebListPackages(site(s)?, id(r)?, name(d)?),
        ("POST", ["sites", s, "releases", r, "deb", d, "publish"]) => DebPublish(site(s)?, id(r)?, name(d)?),
        ("GET", ["sites", s, "releases", r, "deb", d, "Release"]) => DebRelease(site(s)?, id(r)?, name(d)?),
        ("PUT", ["sites", s, "releases", r, "deb", d, "signatures"]) => DebSignatures(site(s)?, id(r)?, name(d)?),
        ("PUT", ["sites", s, "oci", "settings"]) => OciPutSettings(site(s)?),
        ("GET", ["sites", s, "oci", "settings"]) => OciShowSettings(site(s)?),
        (_, ["sites", _, "oci", "settings"]) => return Err(not_allowed()),
        ("GET", ["sites", s, "oci", "cache"]) => OciListCache(site(s)?),
        ("DELETE", ["sites", s, "oci", "cache"]) => OciPurgeCache(site(s)?),
        (_, ["sites", _, "oci", "cache"]) => return Err(not_allowed()),
        ("PUT", ["sites", s, "mirror", "config"]) => MirrorPutConfig(site(s)?, None),
        ("GET", ["sites", s, "mirror", "config"]) => MirrorShowConfig(site(s)?),
        (_, ["sites", _, "mirror", "config"]) => return Err(not_allowed()),
        ("PUT", ["sites", s, "mirror", "config", f]) => {
            if crate::sync::config::Part::of_file(f).is_none() {
                return Err(ApiError::not_found("the mirror's files are images.yaml, charts.yaml and mirror.yaml (both in one)"));
            }
            MirrorPutConfig(site(s)?, Some(f.to_string()))
        }
        (_, ["sites", _, "mirror", "config", _]) => return Err(not_allowed()),
        ("POST", ["sites", s, "mirror", "validate"]) => MirrorValidate(site(s)?),
        ("PUT", ["sites", s, "mirror", "settings"]) => MirrorPutSettings(site(s)?),
        ("GET", ["sites", s, "mirror", "settings"]) => MirrorShowSettings(site(s)?),
        ("POST", ["sites", s, "mirror", "runs"]) => MirrorStartRun(site(s)?),
        ("GET", ["sites", s, "mirror", "runs"]) => MirrorListRuns(site(s)?),
        ("GET", ["sites", s, "mirror", "runs", r]) => MirrorShowRun(site(s)?, id(r)?),
        ("GET", ["sites", s, "mirror", "images"]) => MirrorImages(site(s)?),
        (_, ["sites", _, "mirror", "settings"]) => return Err(not_allowed()),
        (_, ["sites", _, "mirror", "validate"]) => return Err(not_allowed()),
        ("PUT", ["sites", s, "apk", "settings"]) => ApkPutSettings(site(s)?),
        ("GET", ["sites", s, "apk", "settings"]) => ApkShowSettings(site(s)?),
        (_, ["sites", _, "apk", "settings"]) => return Err(not_allowed()),
        ("PUT", ["sites", s, "apk", "key"]) => ApkPutKey(site(s)?),
        ("GET", ["sites", s, "apk", "key"]) => ApkShowKey(site(s)?),
        (_, ["sites", _, "apk", "key"]) => return Err(not_allowed()),
        ("POST", ["sites", s, "releases", r, "helm", repo, "charts"]) => HelmAddChart(site(s)?, id(r)?, name(repo)?),
        ("POST", ["sites", s, "releases", r, "helm", repo, "charts", "batch"]) => HelmAddBatch(site(s)?, id(r)?, name(repo)?),
        ("POST", ["sites", s, "helm", repo, "charts", "batch"]) => HelmPublishBatch(site(s)?, name(repo)?),
        ("GET", ["sites", s, "releases", r, "helm", repo, "charts"]) => HelmListCharts(site(s)?, id(r)?, name(repo)?),
        ("DELETE", ["sites", s, "releases", r, "helm", repo, "charts", c, v]) => HelmRemoveChart(site(s)?, id(r)?, name(repo)?, c.to_string(), v.to_string()),
        ("PUT", ["sites", s, "releases", r, "helm", repo, "charts", c, v, "provenance"]) => {
            HelmPutProvenance(site(s)?, id(r)?, name(repo)?, c.to_string(), v.to_string())
        }
        ("POST", ["sites", s, "releases", r, "helm", repo, "publish"]) => HelmPublish(site(s)?, id(r)?, name(repo)?),
        ("POST", ["sites", s, "releases", r, "apk", b, repo, "packages"]) => ApkAddPackage(site(s)?, id(r)?, name(b)?, name(repo)?),
        ("POST", ["sites", s, "releases", r, "apk", b, repo, "packages", "batch"]) => ApkAddBatch(site(s)?, id(r)?, name(b)?, name(repo)?),
        ("POST", ["sites", s, "apk", b, repo, "packages", "batch"]) => ApkPublishBatch(site(s)?, name(b)?, name(repo)?),
        ("GET", ["sites", s, "releases", r, "apk", b, repo, "packages"]) => ApkListPackages(site(s)?, id(r)?, name(b)?, name(repo)?),
        (_, ["sites", _, "releases", _, "apk", _, _, "packages"]) => return Err(not_allowed()),
        ("DELETE", ["sites", s, "releases", r, "apk", b, repo, "packages", p, v, a]) => {
            ApkRemovePackage(site(s)?, id(r)?, name(b)?, name(repo)?, p.to_string(), v.to_string(), a.to_string())
        }
        ("POST", ["sites", s, "releases", r, "apk", b, repo, "publish"]) => ApkPublish(site(s)?, id(r)?, name(b)?, name(repo)?),
        ("GET", ["sites", s, "releases", r, "apk", b, repo, a, "unsigned"]) => {
            ApkUnsigned(site(s)?, id(r)?, name(b)?, name(repo)?, a.to_string())
        }
        ("PUT", ["sites", s, "releases", r, "apk", b, repo, a, "signature"]) => {
            ApkSignature(site(s)?, id(r)?, name(b)?, name(repo)?, a.to_string())
        }
        ("POST", ["sites", s, "rollback"]) => Rollback(site(s)?),
        (_, ["sites", _, "rollback"]) => return Err(not_allowed()),
        _ => return Err(ApiError::not_found("no such endpoint")),
    };
    Ok(r)
}

/// Does this route need the principal to have been authenticated? (All but health.)
pub fn needs_auth(r: &Route) -> bool {
    !matches!(r, Route::Health)
}

fn digest(h: &str) -> Result<String, ApiError> {
    if valid_sha256(h) {
        Ok(h.to_string())
    } else {
        Err(ApiError::bad_request("a blob digest is 64 lower-case hex characters"))
    }
}

pub fn valid_sha256(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Site names: 1–63 of `a-z 0-9 -`, starting with a letter or digit.
pub fn valid_site_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// Dist and component names: 1–64 of `a-z 0-9 . + _ -`, starting with a letter or digit.
pub fn valid_dist_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".+_-".contains(&b))
}

/// A release path from a raw URL tail or a JSON body: decoded and validated.
pub fn release_path(raw: &str) -> Result<String, ApiError> {
    let p = path::percent_decode(raw).map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.message())))?;
    check_release_path(&p)?;
    Ok(p)
}

/// A release path is refused, never cleaned: `.` and `..` segments are 422
/// (the path is well-formed but names no file a release can hold), other
/// malformed paths 400.
pub fn check_release_path(p: &str) -> Result<(), ApiError> {
    path::validate(p).map_err(|e| {
        let m = format!("invalid path {p:?}: {}", e.message());
        if e == path::PathError::Traversal {
            ApiError::unprocessable(m)
        } else {
            ApiError::bad_request(m)
        }
    })?;
    if p.starts_with(crate::path::INTERNAL_PREFIX) {
        return Err(ApiError::bad_request(format!("paths under {} are reserved for Wharf", crate::path::INTERNAL_PREFIX)));
    }
    Ok(())
}

/// Parses `?after=&limit=` style pagination.
pub fn page(after: Option<&str>, limit: Option<&str>, max: u32) -> Result<(String, u32), ApiError> {
    let limit = match limit {
        None => max.min(1000),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={max}")))?,
    };
    Ok((after.unwrap_or("").to_string(), limit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSiteBody {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    pub name: String,
    pub scope: String,
    #[serde(default)]
    pub site: Option<String>,
    /// Lifetime in seconds from now.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateReleaseBody {
    /// "active" (default), "empty", or a release id.
    #[serde(default)]
    pub from: Option<serde_json::Value>,
    #[serde(default)]
    pub note: Option<String>,
}

impl CreateReleaseBody {
    pub fn base(&self) -> Result<Base, ApiError> {
        match &self.from {
            None => Ok(Base::Active),
            Some(serde_json::Value::String(s)) if s == "active" => Ok(Base::Active),
            Some(serde_json::Value::String(s)) if s == "empty" => Ok(Base::Empty),
            Some(serde_json::Value::Number(n)) if n.as_i64().map_or(false, |i| i > 0) => Ok(Base::Release(n.as_i64().unwrap())),
            Some(_) => Err(ApiError::bad_request("`from` is \"active\", \"empty\" or a release id")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutPathBody {
    pub sha256: String,
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutChange {
    pub path: String,
    pub sha256: String,
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesBody {
    #[serde(default)]
    pub put: Vec<PutChange>,
    #[serde(default)]
    pub delete: Vec<String>,
}

/// Most changes one request may carry (each is one statement in one D1 batch).
pub const MAX_CHANGES: usize = 1000;

pub use crate::release::Change;

impl ChangesBody {
    /// Validates every change; a path may appear only once.
    pub fn validate(self) -> Result<Vec<Change>, ApiError> {
        let total = self.put.len() + self.delete.len();
        if total == 0 {
            return Err(ApiError::bad_request("no changes given"));
        }
        if total > MAX_CHANGES {
            return Err(ApiError::new(413, "too_many_changes", format!("at most {MAX_CHANGES} changes per request")));
        }
        let mut out = Vec::with_capacity(total);
        for p in self.put {
            out.push(validate_put(p.path, p.sha256, p.content_type)?);
        }
        for d in self.delete {
            check_release_path(&d)?;
            out.push(Change { path: d, sha256: None, content_type: None });
        }
        let mut seen = std::collections::HashSet::new();
        for c in &out {
            if !seen.insert(c.path.as_str()) {
                return Err(ApiError::bad_request(format!("path {:?} appears more than once", c.path)));
            }
        }
        Ok(out)
    }
}

pub fn validate_put(path: String, sha256: String, content_type: Option<String>) -> Result<Change, ApiError> {
    check_release_path(&path)?;
    let sha256 = sha256.strip_prefix("sha256:").map(str::to_string).unwrap_or(sha256);
    if !valid_sha256(&sha256) {
        return Err(ApiError::bad_request(format!("invalid sha256 for {path:?}")));
    }
    let ct = match content_type {
        Some(ct) if crate::http::valid_content_type(&ct) => ct,
        Some(ct) => return Err(ApiError::bad_request(format!("invalid content type {ct:?}"))),
        None => crate::http::guess_content_type(&path).to_string(),
    };
    Ok(Change { path, sha256: Some(sha256), content_type: Some(ct) })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// The release the caller believes is active now (null = none). Defaults
    /// to the release the draft was made from.
    #[serde(default, deserialize_with = "present")]
    pub expected_active: Option<Option<i64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The release to re-activate; defaults to the one active before the current one.
    #[serde(default)]
    pub to: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    pub expected_active: Option<Option<i64>>,
}

/// Distinguishes a field set to null from a missing one.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Ok(Some(Option::<i64>::deserialize(d)?))
}

/// Parses a JSON body, or reports clearly why it is not acceptable.
pub fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Like [`parse_json`] but an empty body means the default.
pub fn parse_json_or_default<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// 503 when the database schema does not match this worker.
pub fn schema_error(state: &crate::schema::SchemaState) -> ApiError {
    let have = match state {
        crate::schema::SchemaState::Outdated { database: Some(v) } | crate::schema::SchemaState::Newer { database: v } => v.to_string(),
        _ => "none".into(),
    };
    ApiError::new(
        503,
        "schema_outdated",
        format!(
            "the database schema is version {have} but this worker needs version {}: apply schema.sql (wrangler d1 execute … --file schema.sql)",
            crate::schema::SCHEMA_VERSION
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/api/v1/health"), Ok(Route::Health));
    assert_eq!(route("GET", "/api/v1/whoami"), Ok(Route::Whoami));
    assert_eq!(route("POST", "/api/v1/sites/apt/blobs/held"), Ok(Route::HeldBlobs("apt".into())));
    assert_eq!(route("GET", "/api/v1/sites/apt/blobs/held").map_err(|e| e.status), Err(405));
        assert_eq!(route("POST", "/api/v1/sites"), Ok(Route::CreateSite));
        assert_eq!(route("PUT", "/api/v1/sites/a/hostnames/apt.example.com"), Ok(Route::AddHostname("a".into(), "apt.example.com".into())));
        assert_eq!(
            route("PUT", "/api/v1/sites/a/releases/3/paths/dists/stable/InRelease"),
            Ok(Route::PutPath("a".into(), 3, "dists/stable/InRelease".into()))
        );
        assert_eq!(route("PUT", "/api/v1/sites/a/releases/3/paths/a%2b%2b"), Ok(Route::PutPath("a".into(), 3, "a++".into())));
        assert_eq!(route("GET", "/api/v1/sites/a/releases/3/diff/4"), Ok(Route::Diff("a".into(), 3, 4)));
        assert_eq!(route("POST", "/api/v1/sites/a/rollback"), Ok(Route::Rollback("a".into())));
        assert_eq!(
            route("POST", "/api/v1/sites/a/releases/2/deb/bookworm/main/packages"),
            Ok(Route::DebAddPackage("a".into(), 2, "bookworm".into(), "main".into()))
        );
        assert_eq!(
            route("POST", "/api/v1/sites/a/releases/2/apk/v3.20/main/packages"),
            Ok(Route::ApkAddPackage("a".into(), 2, "v3.20".into(), "main".into()))
        );
        assert_eq!(
            route("PUT", "/api/v1/sites/a/releases/2/apk/edge/community/x86_64/signature"),
            Ok(Route::ApkSignature("a".into(), 2, "edge".into(), "community".into(), "x86_64".into()))
        );
        assert_eq!(
            route("DELETE", "/api/v1/sites/a/releases/2/deb/stable/main/packages/hello/1%3a2.0-1/amd64"),
            Ok(Route::DebRemovePackage("a".into(), 2, "stable".into(), "main".into(), "hello".into(), "1:2.0-1".into(), "amd64".into()))
        );
        assert_eq!(route("POST", "/api/v1/sites/a/releases/2/deb/Bad/publish").unwrap_err().status, 400);
        assert_eq!(route("PUT", "/api/v1/sites/a/releases/2/paths/_wharf/deb/x").unwrap_err().status, 400);
        assert_eq!(route("DELETE", "/api/v1/sites").unwrap_err().status, 405);
        assert_eq!(route("GET", "/api/v1/nope").unwrap_err().status, 404);
        assert_eq!(route("GET", "/api/v2/sites").unwrap_err().status, 404);
        assert_eq!(route("GET", "/api/v1/sites/A_B").unwrap_err().status, 404);
        assert_eq!(route("GET", "/api/v1/sites/a/releases/0").unwrap_err().status, 404);
        assert_eq!(route("PUT", "/api/v1/blobs/sha256/xyz").unwrap_err().status, 400);
        assert_eq!(route("PUT", "/api/v1/sites/a/releases/3/paths/a/../b").unwrap_err().status, 422);
        assert_eq!(route("PUT", "/api/v1/sites/a/releases/3/paths/a%2f..").unwrap_err().status, 400);
        assert_eq!(route("PUT", "/api/v1/sites/a/releases/3/paths/a//b").unwrap_err().status, 400);
    }

    #[test]
    fn changes_are_validated() {
        let ok: ChangesBody = parse_json(br#"{"put":[{"path":"a/b.deb","sha256":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}],"delete":["c"]}"#).unwrap();
        let v = ok.validate().unwrap();
        assert_eq!(v[0].content_type.as_deref(), Some("application/vnd.debian.binary-package"));
        assert_eq!(v[0].sha256.as_deref(), Some(&*"a".repeat(64)));
        assert_eq!(v[1].sha256, None);
        let dup: ChangesBody = parse_json(br#"{"put":[{"path":"c","sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}],"delete":["c"]}"#).unwrap();
        assert_eq!(dup.validate().unwrap_err().status, 400);
        let empty: ChangesBody = parse_json(b"{}").unwrap();
        assert_eq!(empty.validate().unwrap_err().status, 400);
        assert!(parse_json::<ChangesBody>(br#"{"bogus":1}"#).is_err());
        let bad: ChangesBody = parse_json(br#"{"delete":["../x"]}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().status, 422);
    }

    #[test]
    fn activate_body_distinguishes_null() {
        let a: ActivateBody = parse_json_or_default(b"").unwrap();
        assert_eq!(a.expected_active, None);
        let a: ActivateBody = parse_json(br#"{"expected_active":null}"#).unwrap();
        assert_eq!(a.expected_active, Some(None));
        let a: ActivateBody = parse_json(br#"{"expected_active":4}"#).unwrap();
        assert_eq!(a.expected_active, Some(Some(4)));
    }

    #[test]
    fn release_bases() {
        let b: CreateReleaseBody = parse_json(br#"{"from":"empty"}"#).unwrap();
        assert_eq!(b.base(), Ok(Base::Empty));
        let b: CreateReleaseBody = parse_json(br#"{"from":7}"#).unwrap();
        assert_eq!(b.base(), Ok(Base::Release(7)));
        let b: CreateReleaseBody = parse_json(br#"{"from":"x"}"#).unwrap();
        assert!(b.base().is_err());
    }
}