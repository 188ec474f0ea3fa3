//! The OCI distribution API (registry `/v2/`): request routing (repository
//! names hold `/`, so routes are parsed from the right), names, references,
//! error bodies and manifest inspection. Pure; the glue binds it to D1 and R2.

pub mod mirror;
pub mod name;

pub use name::valid_name;

use crate::api::ApiError;
use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
/// Largest manifest accepted (the spec suggests registries accept at least 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// A registry error is the one error type of Wharf ([`ApiError`]): the
/// registry answers it in the distribution spec's form ([`ApiError::oci_body`]).
pub type OciError = ApiError;

/// The distribution spec's errors.
impl ApiError {
    pub fn name_unknown(name: &str) -> ApiError {
        ApiError::new(404, "NAME_UNKNOWN", format!("repository {name} is not known to this registry"))
    }
    pub fn manifest_unknown(r: &str) -> ApiError {
        ApiError::new(404, "MANIFEST_UNKNOWN", format!("manifest {r} is not known"))
    }
    pub fn blob_unknown(d: &str) -> ApiError {
        ApiError::new(404, "BLOB_UNKNOWN", format!("blob {d} is not known"))
    }
    /// 401 as a registry says it (clients then ask for a token).
    pub fn registry_unauthorized() -> ApiError {
        ApiError::new(401, "UNAUTHORIZED", "authentication required")
    }
    pub fn denied(m: impl Into<String>) -> ApiError {
        ApiError::new(403, "DENIED", m)
    }
    pub fn unsupported(m: impl Into<String>) -> ApiError {
        ApiError::new(405, "UNSUPPORTED", m)
    }
}

/// A site's registry settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// Pull without credentials (default true).
    #[serde(default = "yes")]
    pub anonymous_pull: bool,
    /// DELETE of tags, manifests and blobs (default false: 405 UNSUPPORTED).
    #[serde(default)]
    pub allow_delete: bool,
    /// Upstream registries the site mirrors (pull-through cache).
    #[serde(default)]
    pub upstreams: Vec<mirror::Upstream>,
    /// How long a mirrored tag is served before the upstream is asked again.
    #[serde(default = "tag_ttl")]
    pub tag_ttl_seconds: u64,
    /// How long an upstream's 404 is remembered.
    #[serde(default = "not_found_ttl")]
    pub not_found_ttl_seconds: u64,
}

fn yes() -> bool {
    true
}
fn tag_ttl() -> u64 {
    300
}
fn not_found_ttl() -> u64 {
    60
}

impl Default for OciConfig {
    fn default() -> Self {
        OciConfig {
            anonymous_pull: true,
            allow_delete: false,
            upstreams: Vec::new(),
            tag_ttl_seconds: tag_ttl(),
            not_found_ttl_seconds: not_found_ttl(),
        }
    }
}

impl OciConfig {
    pub fn validate(&self) -> Result<(), String> {
        mirror::validate(&self.upstreams)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(String),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, OciError> {
        if s.contains(':') {
            Ok(Reference::Digest(digest_hex(s)?.to_string()))
        } else if valid_tag(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(OciError::new(400, "TAG_INVALID", format!("invalid tag {s:?}")))
        }
    }
}

/// The hex of a `sha256:<64 hex>` digest.
pub fn digest_hex(d: &str) -> Result<&str, OciError> {
    match d.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) => Ok(hex),
        Some(("sha256", _)) => Err(OciError::new(400, "DIGEST_INVALID", format!("invalid digest {d:?}"))),
        Some((alg, _)) if !alg.is_empty() => Err(OciError::new(400, "DIGEST_INVALID", format!("digest algorithm {alg:?} is not supported (sha256 is)"))),
        _ => Err(OciError::new(400, "DIGEST_INVALID", format!("invalid digest {d:?}"))),
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= 128 && (b[0].is_ascii_alphanumeric() || b[0] == b'_') && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// A registry request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciRoute {
    Base,
    Manifest { name: String, reference: Reference },
    Blob { name: String, digest: String },
    StartUpload { name: String },
    Upload { name: String, id: String },
    Tags { name: String },
    Referrers { name: String, digest: String },
}

/// Routes a `/v2/…` path (already percent-decoded) from the right.
pub fn route(path: &str) -> Result<OciRoute, OciError> {
    let rest = path.strip_prefix("/v2").ok_or_else(|| OciError::new(404, "NOT_FOUND", "not a registry path"))?;
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return Ok(OciRoute::Base);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_of = |upto: usize| -> Result<String, OciError> {
        let name = segs[..upto].join("/");
        if valid_name(&name) {
            Ok(name)
        } else {
            Err(OciError::new(400, "NAME_INVALID", format!("invalid repository name {name:?}")))
        }
    };
    let not_found = || OciError::new(404, "NOT_FOUND", format!("no registry endpoint at {path}"));
    if n >= 3 && segs[n - 2] == "manifests" {
        return Ok(OciRoute::Manifest { name: name_of(n - 2)?, reference: Reference::parse(segs[n - 1])? });
    }
    if n >= 3 && segs[n - 2] == "referrers" {
        return Ok(OciRoute::Referrers { name: name_of(n - 2)?, digest: digest_hex(segs[n - 1])?.to_string() });
    }
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(OciRoute::Tags { name: name_of(n - 2)? });
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        if segs[n - 1].is_empty() {
            return Ok(OciRoute::StartUpload { name: name_of(n - 3)? });
        }
        let id = segs[n - 1];
        if id.len() > 64 || !id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(OciError::new(404, "BLOB_UPLOAD_UNKNOWN", "no such upload"));
        }
        return Ok(OciRoute::Upload { name: name_of(n - 3)?, id: id.to_string() });
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(OciRoute::StartUpload { name: name_of(n - 2)? });
    }
    if n >= 3 && segs[n - 2] == "blobs" {
        return Ok(OciRoute::Blob { name: name_of(n - 2)?, digest: digest_hex(segs[n - 1])?.to_string() });
    }
    Err(not_found())
}

/// Where the registry keeps a repository's tags, manifests and blobs in the
/// site's release (internal paths: served only through `/v2/`).
pub fn tag_path(name: &str, tag: &str) -> String {
    format!("{}oci/{name}/_tags/{tag}", crate::store::INTERNAL_PREFIX)
}
/// Everything of one repository (and not of the repositories nested under its
/// name: their components cannot start with `_`).
pub fn repository_prefix(name: &str) -> String {
    format!("{}oci/{name}/_", crate::store::INTERNAL_PREFIX)
}
pub fn tags_prefix(name: &str) -> String {
    format!("{}oci/{name}/_tags/", crate::store::INTERNAL_PREFIX)
}
pub fn manifest_path(name: &str, hex: &str) -> String {
    format!("{}oci/{name}/_manifests/sha256/{hex}", crate::store::INTERNAL_PREFIX)
}
/// A manifest whose `subject` is `subject_hex` is listed here (→ its descriptor as a blob).
pub fn referrer_path(name: &str, subject_hex: &str, hex: &str) -> String {
    format!("{}oci/{name}/_referrers/{subject_hex}/{hex}", crate::store::INTERNAL_PREFIX)
}
pub fn referrers_prefix(name: &str, subject_hex: &str) -> String {
    format!("{}oci/{name}/_referrers/{subject_hex}/", crate::store::INTERNAL_PREFIX)
}
pub fn blob_path(name: &str, hex: &str) -> String {
    format!("{}oci/{name}/_blobs/sha256/{hex}", crate::store::INTERNAL_PREFIX)
}

/// What a manifest refers to, and its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub media_type: String,
    /// Blobs (config and layers) that must exist in the repository.
    pub blobs: Vec<String>,
    /// Manifests (of an index) that must exist in the repository.
    pub manifests: Vec<String>,
    pub subject: Option<String>,
    /// What the referrers API reports: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
}

impl ManifestInfo {
    /// The descriptor of this manifest in a referrers list.
    pub fn descriptor(&self, hex: &str, size: usize) -> Value {
        let mut d = json!({"mediaType": self.media_type, "digest": format!("sha256:{hex}"), "size": size});
        if let Some(a) = &self.artifact_type {
            d["artifactType"] = json!(a);
        }
        if let Some(a) = &self.annotations {
            d["annotations"] = a.clone();
        }
        d
    }
}

/// The referrers response: an OCI index of the descriptors, filtered by artifactType.
pub fn referrers_index(descriptors: Vec<Value>, artifact_type: Option<&str>) -> Value {
    let manifests: Vec<Value> = descriptors
        .into_iter()
        .filter(|d| artifact_type.map_or(true, |t| d.get("artifactType").and_then(Value::as_str) == Some(t)))
        .collect();
    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
}

/// Validates a pushed manifest: JSON, a known media type (from the body's
/// `mediaType`, else the request's Content-Type), well-formed descriptors.
pub fn inspect_manifest(body: &[u8], content_type: Option<&str>) -> Result<ManifestInfo, OciError> {
    let invalid = |m: String| OciError::new(400, "MANIFEST_INVALID", m);
    if body.len() > MAX_MANIFEST {
        return Err(OciError::new(413, "SIZE_INVALID", format!("manifests are limited to {MAX_MANIFEST} bytes")));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let declared = v.get("mediaType").and_then(Value::as_str);
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim()).filter(|c| !c.is_empty());
    if let (Some(d), Some(h)) = (declared, header) {
        if d != h {
            return Err(invalid(format!("mediaType {d} does not match Content-Type {h}")));
        }
    }
    let media_type = declared.or(header).ok_or_else(|| invalid("no mediaType and no Content-Type".into()))?.to_string();
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!("unsupported manifest media type {media_type}")));
    }
    if v.get("schemaVersion").and_then(Value::as_i64) != Some(2) {
        return Err(invalid("schemaVersion must be 2".into()));
    }
    let descriptor = |d: &Value, what: &str| -> Result<String, OciError> {
        let digest = d.get("digest").and_then(Value::as_str).ok_or_else(|| invalid(format!("{what} has no digest")))?;
        if d.get("size").and_then(Value::as_i64).map_or(true, |s| s < 0) {
            return Err(invalid(format!("{what} has no valid size")));
        }
        if d.get("mediaType").and_then(Value::as_str).is_none() {
            return Err(invalid(format!("{what} has no mediaType")));
        }
        Ok(digest_hex(digest).map_err(|e| invalid(format!("{what}: {}", e.message)))?.to_string())
    };
    let artifact_type = v
        .get("artifactType")
        .and_then(Value::as_str)
        .or_else(|| v.get("config").and_then(|c| c.get("mediaType")).and_then(Value::as_str))
        .map(str::to_string);
    let annotations = v.get("annotations").filter(|a| a.is_object()).cloned();
    let mut info = ManifestInfo { media_type: media_type.clone(), blobs: vec![], manifests: vec![], subject: None, artifact_type, annotations };
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        for (i, m) in v.get("manifests").and_then(Value::as_array).ok_or_else(|| invalid("an index needs manifests".into()))?.iter().enumerate() {
            info.manifests.push(descriptor(m, &format!("manifests[{i}]"))?);
        }
    } else {
        info.blobs.push(descriptor(v.get("config").ok_or_else(|| invalid("no config".into()))?, "config")?);
        for (i, l) in v.get("layers").and_then(Value::as_array).ok_or_else(|| invalid("no layers".into()))?.iter().enumerate() {
            info.blobs.push(descriptor(l, &format!("layers[{i}]"))?);
        }
    }
    if let Some(s) = v.get("subject") {
        info.subject = Some(descriptor(s, "subject")?);
    }
    Ok(info)
}

/// One page of a sorted tag list: `n` tags after `last`.
pub fn tags_page(tags: &[String], n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    let start = last.map_or(0, |l| tags.partition_point(|t| t.as_str() <= l));
    let rest = &tags[start..];
    match n {
        Some(n) if n < rest.len() => (rest[..n].to_vec(), true),
        _ => (rest.to_vec(), false),
    }
}

/// What a registry token allows: `pull` and/or `push` on repositories of one site.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub site: i64,
    /// When the site was created (ms): with the id, names this site and no
    /// other, so a token minted before a deletion is refused afterwards.
    pub site_created: i64,
    /// (repository, actions) pairs; actions are "pull" and "push".
    pub access: Vec<(String, Vec<String>)>,
    /// Expiry, milliseconds since the epoch.
    pub exp: i64,
}

impl Grant {
    /// Whether the grant is for the site (id, created_at) that is asking.
    pub fn is_for(&self, site: i64, site_created: i64) -> bool {
        self.site == site && self.site_created == site_created
    }

    pub fn allows(&self, site: (i64, i64), name: &str, action: &str) -> bool {
        self.is_for(site.0, site.1) && self.access.iter().any(|(n, a)| n == name && a.iter().any(|x| x == action))
    }
}

/// How long a registry token lives (the Docker token flow asks for at least 60 s).
pub const TOKEN_TTL_MS: i64 = 300_000;

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// `<base64url(JSON grant)>.<base64url(HMAC-SHA256)>`.
pub fn sign_token(key: &[u8], grant: &Grant) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = b64.encode(serde_json::to_vec(grant).expect("serialisable"));
    let sig = b64.encode(mac(key, body.as_bytes()));
    format!("{body}.{sig}")
}

/// The grant of a token this registry signed, if it is intact and unexpired.
pub fn verify_token(key: &[u8], token: &str, now_ms: i64) -> Option<Grant> {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (body, sig) = token.split_once('.')?;
    let sig = b64.decode(sig).ok()?;
    if !bool::from(mac(key, body.as_bytes()).ct_eq(&sig)) {
        return None;
    }
    let grant: Grant = serde_json::from_slice(&b64.decode(body).ok()?).ok()?;
    (grant.exp > now_ms).then_some(grant)
}

/// The repositories and actions a token request asks for
/// (`scope=repository:<name>:pull,push`, repeatable); others are ignored.
pub fn requested_scopes<'a>(scopes: impl Iterator<Item = &'a str>) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for s in scopes {
        for one in s.split(' ') {
            let mut parts = one.splitn(3, ':');
            let (Some("repository"), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if !valid_name(name) {
                continue;
            }
            let actions: Vec<String> = actions.split(',').filter(|a| matches!(*a, "pull" | "push" | "*")).map(str::to_string).collect();
            out.push((name.to_string(), actions));
        }
    }
    out
}

/// Accept negotiation for a stored manifest: whether a client that sent these
/// `Accept` headers can take `media_type`. No Accept (or a wildcard) takes
/// anything. A client that lists manifest types but not the stored index or
/// list type cannot use it (an old client that knows single manifests only);
/// a single manifest is served anyway, as registries do, since a client that
/// can parse none of the types gains nothing from a 404.
pub fn accepts<'a>(accept: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let listed: Vec<&str> =
        accept.into_iter().flat_map(|h| h.split(',')).map(|v| v.split(';').next().unwrap_or("").trim()).filter(|v| !v.is_empty()).collect();
    if listed.is_empty() || listed.iter().any(|v| *v == "*/*" || *v == "application/*" || v.eq_ignore_ascii_case(media_type)) {
        return true;
    }
    !(media_type == OCI_INDEX || media_type == DOCKER_LIST)
}

/// The `Accept` an upstream is asked with: every manifest type Wharf serves,
/// so what is cached is the richest answer and negotiation happens here.
pub fn accept_all() -> String {
    MANIFEST_TYPES.join(", ")
}

/// The `WWW-Authenticate` challenge sending clients to the token endpoint.
pub fn challenge(realm: &str, service: &str, scope: Option<&str>) -> String {
    match scope {
        Some(s) => format!("Bearer realm=\"{realm}\",service=\"{service}\",scope=\"{s}\""),
        None => format!("Bearer realm=\"{realm}\",service=\"{service}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_grant_and_nothing_else() {
        let g = Grant { site: 3, site_created: 77, access: vec![("team/app".into(), vec!["pull".into(), "push".into()])], exp: 1_000 };
        let t = sign_token(b"key", &g);
        assert_eq!(verify_token(b"key", &t, 999), Some(g.clone()));
        assert_eq!(verify_token(b"key", &t, 1_000), None, "expired");
        assert_eq!(verify_token(b"other key", &t, 0), None);
        let (body, sig) = t.split_once('.').unwrap();
        let forged = format!("{}x.{sig}", body);
        assert_eq!(verify_token(b"key", &forged, 0), None);
        assert!(g.allows((3, 77), "team/app", "push") && !g.allows((4, 77), "team/app", "pull") && !g.allows((3, 77), "team/other", "pull"));
        assert!(!g.allows((3, 78), "team/app", "pull"), "a site made later under the same id is another site");
        assert_eq!(
            requested_scopes(["repository:team/app:pull,push", "repository:Bad:pull registry:catalog:*"].into_iter()),
            vec![("team/app".to_string(), vec!["pull".to_string(), "push".to_string()])]
        );
        assert_eq!(challenge("https://h/v2/token", "h", Some("repository:a:pull")), "Bearer realm=\"https://h/v2/token\",service=\"h\",scope=\"repository:a:pull\"");
    }

    #[test]
    fn routes_parse_from_the_right() {
        let h = "a".repeat(64);
        assert_eq!(route("/v2/"), Ok(OciRoute::Base));
        assert_eq!(route("/v2"), Ok(OciRoute::Base));
        assert_eq!(
            route("/v2/org/team/app/manifests/v1.2"),
            Ok(OciRoute::Manifest { name: "org/team/app".into(), reference: Reference::Tag("v1.2".into()) })
        );
        assert_eq!(
            route(&format!("/v2/a/manifests/sha256:{h}")),
            Ok(OciRoute::Manifest { name: "a".into(), reference: Reference::Digest(h.clone()) })
        );
        // A repository may itself be called "manifests" or "blobs".
        assert_eq!(route(&format!("/v2/blobs/blobs/sha256:{h}")), Ok(OciRoute::Blob { name: "blobs".into(), digest: h.clone() }));
        assert_eq!(route("/v2/a/b/blobs/uploads/"), Ok(OciRoute::StartUpload { name: "a/b".into() }));
        assert_eq!(route("/v2/a/b/blobs/uploads"), Ok(OciRoute::StartUpload { name: "a/b".into() }));
        assert_eq!(route("/v2/a/blobs/uploads/0f-12"), Ok(OciRoute::Upload { name: "a".into(), id: "0f-12".into() }));
        assert_eq!(route("/v2/a/tags/list"), Ok(OciRoute::Tags { name: "a".into() }));
        assert_eq!(route(&format!("/v2/a/referrers/sha256:{h}")), Ok(OciRoute::Referrers { name: "a".into(), digest: h.clone() }));
        assert_eq!(route("/v2/A/tags/list").unwrap_err().code, "NAME_INVALID");
        assert_eq!(route("/v2/a/blobs/sha256:zz").unwrap_err().code, "DIGEST_INVALID");
        assert_eq!(route("/v2/a/blobs/md5:abc").unwrap_err().code, "DIGEST_INVALID");
        assert_eq!(route("/v2/a/manifests/-bad").unwrap_err().code, "TAG_INVALID");
        assert_eq!(route("/v2/a/other").unwrap_err().status, 404);
    }

    #[test]
    fn names_and_tags() {
        for ok in ["a", "library/ubuntu", "my-org/my_app/x.y", "a__b", "a---b", "0/1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "a.-b", "a___b", "-a", "a_", &"a".repeat(256)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_tag("latest") && valid_tag("_x") && valid_tag("v1.0-rc.1"));
        assert!(!valid_tag(".x") && !valid_tag("") && !valid_tag(&"t".repeat(129)) && !valid_tag("a/b"));
    }

    #[test]
    fn manifests_are_checked() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d('a'), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 3}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d('c'), "size": 4}});
        let info = inspect_manifest(image.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(info.blobs, vec!["a".repeat(64), "b".repeat(64)]);
        assert_eq!(info.subject, Some("c".repeat(64)));
        assert_eq!(info.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        let desc = info.descriptor("f", 10);
        assert_eq!(referrers_index(vec![desc.clone()], Some("application/vnd.oci.image.config.v1+json"))["manifests"], json!([desc]));
        assert_eq!(referrers_index(vec![desc], Some("other/type"))["manifests"], json!([]));
        let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": d('e'), "size": 9}]});
        assert_eq!(inspect_manifest(index.to_string().as_bytes(), Some(OCI_INDEX)).unwrap().manifests, vec!["e".repeat(64)]);
        let err = |v: Value, ct: Option<&str>| inspect_manifest(v.to_string().as_bytes(), ct).unwrap_err().code;
        assert_eq!(err(index.clone(), None), "MANIFEST_INVALID");
        assert_eq!(err(image.clone(), Some(OCI_INDEX)), "MANIFEST_INVALID");
        assert_eq!(err(json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST}), None), "MANIFEST_INVALID");
        assert_eq!(inspect_manifest(b"{", None).unwrap_err().code, "MANIFEST_INVALID");
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts([], OCI_INDEX));
        assert!(accepts(["*/*"], OCI_INDEX));
        assert!(accepts([&format!("{DOCKER_MANIFEST}, {OCI_INDEX};q=0.5")[..]], OCI_INDEX));
        assert!(accepts([DOCKER_MANIFEST, OCI_INDEX], OCI_INDEX));
        assert!(!accepts([DOCKER_MANIFEST], OCI_INDEX));
        assert!(!accepts([OCI_MANIFEST], DOCKER_LIST));
        assert!(accepts([DOCKER_MANIFEST], OCI_MANIFEST));
        assert_eq!(accept_all().split(", ").count(), 4);
    }

    #[test]
    fn tag_pages() {
        let tags: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(tags_page(&tags, Some(2), None), (vec!["a".into(), "b".into()], true));
        assert_eq!(tags_page(&tags, Some(2), Some("b")), (vec!["c".into(), "d".into()], false));
        assert_eq!(tags_page(&tags, None, Some("c")), (vec!["d".into()], false));
        assert_eq!(tags_page(&tags, Some(0), None), (vec![], true));
    }
}
