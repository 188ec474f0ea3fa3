//! The OCI registry (`/v2/`) on a site's hostname: pull from the site's active
//! release, push into new releases (compare-and-swap, retried), blobs kept in
//! R2 under their digest like every other file.

use super::service::{principal_for_token, ReleaseRow};
use super::db::{BatchError, Db};
use super::{json_response, now_ms, BUCKET_BINDING, DB_BINDING};
use crate::api::Change;
use crate::auth::Scope;
use crate::oci::{self, OciError, OciRoute, Reference};
use crate::store::{self, oci as sql};
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use worker::*;

mod mirror;

type R<T> = std::result::Result<T, OciError>;

fn internal(e: impl std::fmt::Display) -> OciError {
    OciError::new(500, "UNKNOWN", e.to_string())
}

fn respond(e: &OciError) -> Result<Response> {
    let mut r = json_response(e.status, &e.oci_body())?;
    if e.status == 401 {
        r.headers_mut().set("www-authenticate", "Basic realm=\"wharf\"")?;
    }
    Ok(r)
}

#[derive(Deserialize)]
struct Site {
    id: i64,
    name: String,
    created_at: f64,
    active_release_id: Option<i64>,
    seq: Option<i64>,
    /// The registry settings (JSON), if any were stored.
    config: Option<String>,
    /// What the request's path holds, read in the same query.
    sha256: Option<String>,
    size: Option<f64>,
    content_type: Option<String>,
}

#[derive(Deserialize)]
struct Found {
    sha256: Option<String>,
    size: Option<f64>,
    content_type: Option<String>,
}

struct Ctx<'a> {
    env: &'a Env,
    /// For work that outlives the response (storing a mirrored blob).
    worker: &'a Context,
    db: Db,
    host: String,
    site: Site,
    cfg: oci::OciConfig,
    now: i64,
    /// A release path read with the site (a GET or HEAD of a manifest or blob).
    prefetched: Option<(String, Option<(String, u64, String)>)>,
}

impl Ctx<'_> {
    /// What names this site and no other, ever: its id and creation time.
    fn site_key(&self) -> (i64, i64) {
        (self.site.id, self.site.created_at as i64)
    }
}

/// A site's registry settings (defaults when none are stored).
pub(super) async fn settings(db: &Db, site_id: i64) -> std::result::Result<oci::OciConfig, crate::api::ApiError> {
    #[derive(Deserialize)]
    struct C {
        config: String,
    }
    parse_settings(db.first::<C>(sql::settings(site_id)).await?.map(|c| c.config).as_deref())
}

fn parse_settings(stored: Option<&str>) -> std::result::Result<oci::OciConfig, crate::api::ApiError> {
    match stored {
        Some(c) => serde_json::from_str(c).map_err(|e| crate::api::ApiError::internal(format!("stored registry settings are unreadable: {e}"))),
        None => Ok(oci::OciConfig::default()),
    }
}

pub async fn handle(mut req: Request, env: &Env, worker: &Context, host: &str) -> Result<Response> {
    let url = req.url()?;
    let path = match crate::path::percent_decode(url.path()) {
        Ok(p) => p,
        Err(_) => return respond(&OciError::new(400, "NAME_INVALID", "bad percent-encoding")),
    };
    let route = oci::route(&path);
    // A read's path is looked up with the site, in one query.
    let read_path = match (&route, req.method()) {
        (Ok(OciRoute::Manifest { name, reference: Reference::Tag(t) }), Method::Get | Method::Head) => Some(oci::tag_path(name, t)),
        (Ok(OciRoute::Manifest { name, reference: Reference::Digest(d) }), Method::Get | Method::Head) => Some(oci::manifest_path(name, d)),
        (Ok(OciRoute::Blob { name, digest }), Method::Get | Method::Head) => Some(oci::blob_path(name, digest)),
        _ => None,
    };
    let db = Db(env.d1(DB_BINDING)?);
    let site = match db.first::<Site>(sql::site_for_host(host, read_path.as_deref().unwrap_or(""))).await {
        Ok(Some(s)) => s,
        Ok(None) => return respond(&OciError::new(404, "NAME_UNKNOWN", "no registry on this hostname")),
        Err(e) => return respond(&internal(e.message)),
    };
    let cfg = match parse_settings(site.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return respond(&internal(e.message)),
    };
    let prefetched = read_path.map(|p| {
        let found = match (&site.sha256, site.size, &site.content_type) {
            (Some(s), Some(n), Some(t)) => Some((s.clone(), n as u64, t.clone())),
            _ => None,
        };
        (p, found)
    });
    let ctx = Ctx { env, worker, db, host: host.to_string(), site, cfg, now: now_ms(), prefetched };
    let query = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned());
    if path == "/v2/token" {
        return match issue_token(&ctx, &req, &url).await {
            Ok(r) => Ok(r),
            Err(e) => respond(&e),
        };
    }
    let result = match route {
        Ok(route) => dispatch(&ctx, &mut req, route, &query).await,
        // A tag that cannot exist is, to a reader, a manifest that does not.
        Err(e) if e.code == "TAG_INVALID" && matches!(req.method(), Method::Get | Method::Head | Method::Delete) => {
            Err(OciError::new(404, "MANIFEST_UNKNOWN", e.message))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => Ok(r),
        Err(e) => respond(&e),
    }
}

fn headers() -> Headers {
    let h = Headers::new();
    let _ = h.set("docker-distribution-api-version", "registry/2.0");
    h
}

fn empty(status: u16, h: Headers) -> Result<Response> {
    Ok(ResponseBuilder::new().with_status(status).with_headers(h).empty())
}

/// Who is asking: a registry token's grant, a Wharf API token, or nobody.
enum Caller {
    Anonymous,
    Grant(oci::Grant),
    Token(crate::auth::Principal),
}

async fn caller(ctx: &Ctx<'_>, req: &Request) -> R<Caller> {
    let Some(header) = req.headers().get("authorization").ok().flatten() else { return Ok(Caller::Anonymous) };
    let token = if let Some(b) = header.strip_prefix("Basic ") {
        basic_password(b).ok_or_else(OciError::registry_unauthorized)?
    } else if let Some(t) = header.strip_prefix("Bearer ") {
        let t = t.trim();
        if let Some(g) = oci::verify_token(&token_key(ctx.env), t, ctx.now) {
            // Another site's token (or a deleted site's whose id came back) is no token here.
            let (id, created) = ctx.site_key();
            return if g.is_for(id, created) { Ok(Caller::Grant(g)) } else { Err(OciError::registry_unauthorized()) };
        }
        t.to_string()
    } else {
        return Err(OciError::registry_unauthorized());
    };
    let who = principal_for_token(&token, ctx.env, &ctx.db, ctx.now).await.map_err(|_| OciError::registry_unauthorized())?;
    Ok(Caller::Token(who))
}

fn basic_password(b64: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

/// The key registry tokens are signed with: the Worker secret
/// REGISTRY_TOKEN_KEY, else one derived from ADMIN_TOKEN.
fn token_key(env: &Env) -> Vec<u8> {
    if let Ok(k) = env.secret("REGISTRY_TOKEN_KEY") {
        return k.to_string().into_bytes();
    }
    let root = env.secret("ADMIN_TOKEN").map(|s| s.to_string()).unwrap_or_default();
    crate::auth::sha256_hex(format!("wharf registry tokens\0{root}").as_bytes()).into_bytes()
}

fn may(ctx: &Ctx<'_>, who: &Caller, name: &str, action: &str) -> bool {
    match who {
        Caller::Anonymous => action == "pull" && ctx.cfg.anonymous_pull,
        Caller::Grant(g) => g.allows(ctx.site_key(), name, action) || (action == "pull" && ctx.cfg.anonymous_pull),
        Caller::Token(p) => {
            p.can(if action == "push" { Scope::Publish } else { Scope::Read }, Some(ctx.site.id)) || (action == "pull" && ctx.cfg.anonymous_pull)
        }
    }
}

fn realm(req: &Request, ctx: &Ctx<'_>) -> (String, String) {
    let scheme = req.url().map(|u| u.scheme().to_string()).unwrap_or_else(|_| "https".into());
    let host = req.headers().get("host").ok().flatten().unwrap_or_else(|| ctx.host.clone());
    (format!("{scheme}://{host}/v2/token"), host)
}

fn challenge(req: &Request, ctx: &Ctx<'_>, scope: Option<String>) -> R<Response> {
    let e = OciError::registry_unauthorized();
    let mut r = json_response(e.status, &e.oci_body()).map_err(internal)?;
    let (realm, service) = realm(req, ctx);
    r.headers_mut().set("www-authenticate", &oci::challenge(&realm, &service, scope.as_deref())).map_err(internal)?;
    r.headers_mut().set("docker-distribution-api-version", "registry/2.0").map_err(internal)?;
    Ok(r)
}

/// The Docker token flow's endpoint: anonymous callers get pull, callers with
/// a `publish` token of the site (as the Basic password) get what they ask.
async fn issue_token(ctx: &Ctx<'_>, req: &Request, url: &Url) -> R<Response> {
    let who = caller(ctx, req).await?;
    let scopes: Vec<String> = url.query_pairs().filter(|(k, _)| k == "scope").map(|(_, v)| v.into_owned()).collect();
    let access = oci::requested_scopes(scopes.iter().map(String::as_str))
        .into_iter()
        .map(|(name, actions)| {
            let granted: Vec<String> = ["pull", "push"]
                .iter()
                .filter(|a| actions.iter().any(|x| x == *a || x == "*") && may(ctx, &who, &name, a))
                .map(|a| a.to_string())
                .collect();
            (name, granted)
        })
        .collect();
    let grant = oci::Grant { site: ctx.site.id, site_created: ctx.site_key().1, access, exp: ctx.now + oci::TOKEN_TTL_MS };
    let token = oci::sign_token(&token_key(ctx.env), &grant);
    json_response(200, &json!({"token": token, "access_token": token, "expires_in": oci::TOKEN_TTL_MS / 1000,
                               "issued_at": js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ctx.now as f64)).to_iso_string().as_string()}))
    .map_err(internal)
}

async fn dispatch(ctx: &Ctx<'_>, req: &mut Request, route: OciRoute, query: &dyn Fn(&str) -> Option<String>) -> R<Response> {
    let m = req.method();
    let who = match caller(ctx, req).await {
        Ok(w) => w,
        Err(_) => return challenge(req, ctx, None),
    };
    let repo = match &route {
        OciRoute::Base => None,
        OciRoute::Manifest { name, .. }
        | OciRoute::Blob { name, .. }
        | OciRoute::StartUpload { name }
        | OciRoute::Upload { name, .. }
        | OciRoute::Tags { name }
        | OciRoute::Referrers { name, .. } => {
            Some(name.clone())
        }
    };
    match (&route, &repo) {
        // Clients learn how to authenticate from the base endpoint's challenge.
        (OciRoute::Base, _) if matches!(who, Caller::Anonymous) => return challenge(req, ctx, None),
        // Another site's API token is no login here (docker login must fail).
        (OciRoute::Base, _) if matches!(&who, Caller::Token(p) if !p.can(Scope::Read, Some(ctx.site.id))) => return challenge(req, ctx, None),
        (_, Some(name)) => {
            let action = if matches!(m, Method::Get | Method::Head) { "pull" } else { "push" };
            if !may(ctx, &who, name, action) {
                if matches!(&who, Caller::Token(_)) {
                    return Err(OciError::denied(format!("this token may not {action} here")));
                }
                let scope = if action == "pull" { format!("repository:{name}:pull") } else { format!("repository:{name}:pull,push") };
                return challenge(req, ctx, Some(scope));
            }
        }
        _ => {}
    }
    let out = match (route, m) {
        (OciRoute::Base, Method::Get | Method::Head) => {
            let mut r = json_response(200, &json!({})).map_err(internal)?;
            r.headers_mut().set("docker-distribution-api-version", "registry/2.0").map_err(internal)?;
            Ok(r)
        }
        (OciRoute::Manifest { name, reference }, Method::Get | Method::Head) => get_manifest(ctx, req, &name, &reference).await,
        (OciRoute::Manifest { name, reference }, Method::Put) => put_manifest(ctx, req, &name, &reference).await,
        (OciRoute::Blob { name, digest }, Method::Get | Method::Head) => get_blob(ctx, req, &name, &digest).await,
        (OciRoute::StartUpload { name }, Method::Post) => start_upload(ctx, req, &name, query).await,
        (OciRoute::Upload { name, id }, Method::Patch) => patch_upload(ctx, req, &name, &id).await,
        (OciRoute::Upload { name, id }, Method::Put) => finish_upload(ctx, req, &name, &id, query).await,
        (OciRoute::Upload { name, id }, Method::Get) => upload_status(ctx, &name, &id).await,
        (OciRoute::Tags { name }, Method::Get) => tags(ctx, &name, query).await,
        (OciRoute::Upload { name, id }, Method::Delete) => cancel_upload(ctx, &name, &id).await,
        (OciRoute::Referrers { name, digest }, Method::Get) => referrers(ctx, &name, &digest, query).await,
        (OciRoute::Manifest { name, reference }, Method::Delete) if ctx.cfg.allow_delete => delete_manifest(ctx, &name, &reference).await,
        (OciRoute::Blob { name, digest }, Method::Delete) if ctx.cfg.allow_delete => delete_blob(ctx, &name, &digest).await,
        (OciRoute::Manifest { .. } | OciRoute::Blob { .. }, Method::Delete) => {
            Err(OciError::unsupported("deletion is off for this site (PUT /api/v1/sites/{site}/oci/settings {\"allow_delete\": true})"))
        }
        _ => Err(OciError::unsupported("this method is not supported here")),
    };
    out
}

async fn find(ctx: &Ctx<'_>, path: &str) -> R<Option<(String, u64, String)>> {
    if let Some((p, found)) = &ctx.prefetched {
        if p == path {
            return Ok(found.clone());
        }
    }
    let f: Option<Found> = ctx.db.first(store::lookup(&ctx.host, path)).await?;
    Ok(f.and_then(|f| match (f.sha256, f.size, f.content_type) {
        (Some(s), Some(n), Some(t)) => Some((s, n as u64, t)),
        _ => None,
    }))
}

/// Streams a stored blob (with Range) or answers HEAD.
async fn send(ctx: &Ctx<'_>, req: &Request, sha: &str, size: u64, content_type: &str) -> R<Response> {
    let h = headers();
    let set = |k: &str, v: &str| h.set(k, v).map_err(internal);
    set("docker-content-digest", &format!("sha256:{sha}"))?;
    set("etag", &format!("\"sha256:{sha}\""))?;
    set("content-type", content_type)?;
    set("accept-ranges", "bytes")?;
    set("content-encoding", "identity")?;
    let range = req.headers().get("range").ok().flatten();
    let entry = crate::http::Entry { sha256: sha.to_string(), size, content_type: content_type.to_string(), activated_at_ms: 0 };
    let cond = crate::http::Conditions { range: range.as_deref(), ..Default::default() };
    let (status, r2_range) = match crate::http::evaluate(&entry, &cond) {
        crate::http::Outcome::Partial { offset, length } => {
            set("content-range", &format!("bytes {}-{}/{}", offset, offset + length - 1, size))?;
            (206, Some((offset, length)))
        }
        crate::http::Outcome::RangeNotSatisfiable => {
            set("content-range", &format!("bytes */{size}"))?;
            return empty(416, h).map_err(internal);
        }
        _ => (200, None),
    };
    set("content-length", &r2_range.map_or(size, |(_, l)| l).to_string())?;
    let builder = ResponseBuilder::new().with_status(status).with_headers(h.clone()).with_encode_body(EncodeBody::Manual);
    if req.method() == Method::Head {
        return Ok(builder.empty());
    }
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let mut get = bucket.get(store::blob_key(sha));
    if let Some((offset, length)) = r2_range {
        get = get.range(Range::OffsetWithLength { offset, length });
    }
    let object = get.execute().await.map_err(internal)?.ok_or_else(|| internal("stored content is missing"))?;
    let body = object.body().ok_or_else(|| internal("stored content has no body"))?;
    Ok(builder.body(body.response_body().map_err(internal)?))
}

async fn get_manifest(ctx: &Ctx<'_>, req: &Request, name: &str, reference: &Reference) -> R<Response> {
    let path = match reference {
        Reference::Tag(t) => oci::tag_path(name, t),
        Reference::Digest(d) => oci::manifest_path(name, d),
    };
    match find(ctx, &path).await? {
        Some((sha, size, ct)) => send_manifest(ctx, req, reference, &sha, size, &ct).await,
        None => match mirror::manifest(ctx, req, name, reference).await? {
            Some(r) => Ok(r),
            None => Err(OciError::manifest_unknown(&reference_text(reference))),
        },
    }
}

fn reference_text(reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => t.clone(),
        Reference::Digest(d) => format!("sha256:{d}"),
    }
}

/// Serves a manifest if the client's Accept takes its media type.
async fn send_manifest(ctx: &Ctx<'_>, req: &Request, reference: &Reference, sha: &str, size: u64, ct: &str) -> R<Response> {
    let accept: Vec<String> = req.headers().entries().filter(|(k, _)| k.eq_ignore_ascii_case("accept")).map(|(_, v)| v).collect();
    if !oci::accepts(accept.iter().map(String::as_str), ct) {
        return Err(OciError::new(
            404,
            "MANIFEST_UNKNOWN",
            format!("{} is a {ct}, which this client does not accept", reference_text(reference)),
        ));
    }
    send(ctx, req, sha, size, ct).await
}

async fn get_blob(ctx: &Ctx<'_>, req: &Request, name: &str, hex: &str) -> R<Response> {
    if let Some((size, _)) = owned_blob(ctx, name, hex).await? {
        return send(ctx, req, hex, size, "application/octet-stream").await;
    }
    match mirror::blob(ctx, req, name, hex).await? {
        Some(r) => Ok(r),
        None => Err(OciError::blob_unknown(&format!("sha256:{hex}"))),
    }
}

/// Applies changes to the site in a new release: a draft from the active one,
/// activated on top of whatever is active when the swap runs (re-based in the
/// same transaction), so concurrent pushes to one site all land. The draft is
/// made once; should it vanish (deleted through the admin API), a new one is
/// made after a jittered, growing pause, until a deadline.
async fn commit(ctx: &Ctx<'_>, changes: &[Change], note: &str) -> R<()> {
    let deadline = now_ms() + 30_000;
    let mut pause_ms = 20u64;
    loop {
        let draft: ReleaseRow = ctx
            .db
            .first(store::create_release_from_active(ctx.site.id, Some(note), ctx.now))
            .await
            ?
            .ok_or_else(|| internal("no draft was created"))?;
        match ctx.db.batch(store::apply_changes(ctx.site.id, draft.id, changes)).await {
            Ok(_) => match ctx.db.batch(store::activate_rebased(ctx.site.id, draft.id, now_ms())).await {
                Ok(_) => return Ok(()),
                Err(BatchError::Precondition) => {}
                Err(BatchError::Failed(e)) => return Err(internal(e.message)),
            },
            Err(BatchError::Precondition) => {}
            Err(BatchError::Failed(e)) => return Err(internal(e.message)),
        }
        let _ = ctx.db.batch(store::delete_draft(ctx.site.id, draft.id)).await;
        if now_ms() > deadline {
            return Err(OciError::new(503, "UNAVAILABLE", "the site kept changing; try again"));
        }
        super::service::back_off(&mut pause_ms, 2_000).await;
    }
}

fn batch_message(e: BatchError) -> String {
    match e {
        BatchError::Precondition => "a precondition failed".into(),
        BatchError::Failed(e) => e.message,
    }
}

fn blob_change(name: &str, hex: &str) -> Change {
    Change { path: oci::blob_path(name, hex), sha256: Some(hex.to_string()), content_type: Some("application/octet-stream".into()) }
}

fn created(location: String, hex: &str) -> R<Response> {
    let h = headers();
    h.set("location", &location).map_err(internal)?;
    h.set("docker-content-digest", &format!("sha256:{hex}")).map_err(internal)?;
    empty(201, h).map_err(internal)
}

/// The size of a stored blob this site holds (see `site_blobs`).
async fn held_size(ctx: &Ctx<'_>, hex: &str) -> R<Option<u64>> {
    #[derive(Deserialize)]
    struct B {
        size: f64,
    }
    Ok(ctx.db.first::<B>(store::site_blob(ctx.site.id, hex)).await?.map(|b| b.size as u64))
}

fn content_length(req: &Request) -> Option<u64> {
    content_length_of(req.headers())
}

/// A digest-checked put that failed: the client's content (400 DIGEST_INVALID)
/// or the store (500), told apart in one place ([`super::blobs`]).
fn digest_error(e: super::blobs::PutError, digest: &str) -> OciError {
    match e {
        super::blobs::PutError::Mismatch(m) => OciError::new(400, "DIGEST_INVALID", format!("the uploaded content does not match {digest}: {m}")),
        super::blobs::PutError::Failed(m) => internal(m),
    }
}

fn content_length_of(h: &Headers) -> Option<u64> {
    h.get("content-length").ok().flatten().and_then(|l| l.trim().parse().ok())
}

fn max_blob(ctx: &Ctx<'_>) -> u64 {
    ctx.env.var("MAX_BLOB_BYTES").ok().and_then(|v| v.to_string().parse().ok()).unwrap_or(super::service::DEFAULT_MAX_BLOB_BYTES)
}

/// Streams the request body into R2 under `key`; with `sha`, R2 checks the digest.
async fn put_body(ctx: &Ctx<'_>, req: &mut Request, key: &str, sha: Option<&str>) -> R<u64> {
    let Some(len) = content_length(req) else {
        // podman and docker send a layer they compress on the fly without a length.
        return match sha {
            None => put_unsized_body(ctx, req, key).await,
            Some(_) => Err(OciError::new(411, "SIZE_INVALID", "a monolithic upload needs a Content-Length (or send it as a PATCH)")),
        };
    };
    if len > max_blob(ctx) {
        return Err(OciError::new(413, "SIZE_INVALID", format!("blobs are limited to {} bytes", max_blob(ctx))));
    }
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let data = match req.inner().body() {
        Some(s) if len > 0 => Data::ReadableStream(s),
        _ => Data::Empty,
    };
    let Some(sha) = sha else {
        bucket.put(key, data).execute().await.map_err(internal)?;
        return Ok(len);
    };
    match super::blobs::put_checked(&bucket, key, sha, data).await {
        Ok(_) => Ok(len),
        Err(e) => Err(digest_error(e, &format!("sha256:{sha}"))),
    }
}

/// Part size for bodies of unknown length (R2 wants parts of one size, at least 5 MiB).
const PART: usize = 8 << 20;

/// A body without a Content-Length goes to R2 as a multipart upload of
/// fixed-size parts, so at most one part is held in memory.
async fn put_unsized_body(ctx: &Ctx<'_>, req: &mut Request, key: &str) -> R<u64> {
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let upload = bucket.create_multipart_upload(key).execute().await.map_err(internal)?;
    let mut body = req.stream().map_err(internal)?;
    let (mut buf, mut parts, mut total) = (Vec::with_capacity(PART), Vec::new(), 0u64);
    let max = max_blob(ctx);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(internal)?;
        total += chunk.len() as u64;
        if total > max {
            let _ = upload.abort().await;
            return Err(OciError::new(413, "SIZE_INVALID", format!("blobs are limited to {max} bytes")));
        }
        buf.extend_from_slice(&chunk);
        while buf.len() >= PART {
            let rest = buf.split_off(PART);
            let part = std::mem::replace(&mut buf, rest);
            parts.push(upload.upload_part(parts.len() as u16 + 1, part).await.map_err(internal)?);
        }
    }
    if total == 0 {
        let _ = upload.abort().await;
        return Ok(0);
    }
    if !buf.is_empty() {
        parts.push(upload.upload_part(parts.len() as u16 + 1, buf).await.map_err(internal)?);
    }
    upload.complete(parts).await.map_err(internal)?;
    Ok(total)
}

/// A blob stored under its digest (checked) becomes the repository's: staged
/// until the manifest that references it brings it into a release.
async fn adopt(ctx: &Ctx<'_>, name: &str, hex: &str, size: u64) -> R<Response> {
    let mut stmts = store::insert_owned_blob(ctx.site.id, hex, size as i64, ctx.now);
    stmts.push(sql::stage_blob(ctx.site.id, name, hex, size as i64, ctx.now));
    ctx.db.batch(stmts).await.map_err(|e| internal(batch_message(e)))?;
    created(format!("/v2/{name}/blobs/sha256:{hex}"), hex)
}

/// A blob the repository has pushed but no manifest references yet.
async fn staged_size(ctx: &Ctx<'_>, name: &str, hex: &str) -> R<Option<u64>> {
    #[derive(Deserialize)]
    struct S {
        size: f64,
    }
    Ok(ctx.db.first::<S>(sql::staged_blob(ctx.site.id, name, hex)).await?.map(|s| s.size as u64))
}

/// The size of a blob the repository owns: in its release, or staged.
async fn owned_blob(ctx: &Ctx<'_>, name: &str, hex: &str) -> R<Option<(u64, bool)>> {
    if let Some((_, size, _)) = find(ctx, &oci::blob_path(name, hex)).await? {
        return Ok(Some((size, true)));
    }
    Ok(staged_size(ctx, name, hex).await?.map(|s| (s, false)))
}

async fn start_upload(ctx: &Ctx<'_>, req: &mut Request, name: &str, query: &dyn Fn(&str) -> Option<String>) -> R<Response> {
    // Cross-repository mount within the site.
    if let (Some(mount), Some(from)) = (query("mount"), query("from")) {
        let hex = oci::digest_hex(&mount)?.to_string();
        if oci::valid_name(&from) {
            if let Some((size, _)) = owned_blob(ctx, &from, &hex).await? {
                return adopt(ctx, name, &hex, size).await;
            }
        }
    }
    // Monolithic: POST with the digest and the whole body. The body is stored
    // (and checked) even when the store holds the digest already: owning a
    // blob takes having its bytes, not only its name.
    if let Some(d) = query("digest") {
        let hex = oci::digest_hex(&d)?.to_string();
        let size = put_body(ctx, req, &store::blob_key(&hex), Some(&hex)).await?;
        return adopt(ctx, name, &hex, size).await;
    }
    sweep_abandoned(ctx).await;
    let id = hex::encode(rand::random::<[u8; 16]>());
    ctx.db.run(sql::create_upload(&id, ctx.site.id, name, ctx.now)).await?;
    let h = headers();
    h.set("location", &format!("/v2/{name}/blobs/uploads/{id}")).map_err(internal)?;
    h.set("docker-upload-uuid", &id).map_err(internal)?;
    h.set("range", "0-0").map_err(internal)?;
    h.set("content-length", "0").map_err(internal)?;
    empty(202, h).map_err(internal)
}

#[derive(Deserialize)]
struct Upload {
    id: String,
    size: f64,
    chunks: String,
}

impl Upload {
    fn offsets(&self) -> R<Vec<u64>> {
        serde_json::from_str(&self.chunks).map_err(internal)
    }
}

fn chunk_key(id: &str, offset: u64) -> String {
    format!("uploads/{id}/{offset:020}")
}

async fn upload_row(ctx: &Ctx<'_>, name: &str, id: &str) -> R<Upload> {
    ctx.db
        .first::<Upload>(sql::upload(id, ctx.site.id, name))
        .await
        ?
        .ok_or_else(|| OciError::new(404, "BLOB_UPLOAD_UNKNOWN", "no such upload"))
}

fn accepted(name: &str, id: &str, size: u64) -> R<Response> {
    let h = headers();
    h.set("location", &format!("/v2/{name}/blobs/uploads/{id}")).map_err(internal)?;
    h.set("docker-upload-uuid", id).map_err(internal)?;
    h.set("range", &format!("0-{}", size.saturating_sub(1))).map_err(internal)?;
    h.set("content-length", "0").map_err(internal)?;
    empty(202, h).map_err(internal)
}

/// Stores a chunk of an upload in R2 (`uploads/<id>/<offset>`) and records it.
async fn add_chunk(ctx: &Ctx<'_>, req: &mut Request, up: &Upload) -> R<u64> {
    let size = up.size as u64;
    let key = chunk_key(&up.id, size);
    let len = put_body(ctx, req, &key, None).await?;
    if len == 0 {
        return Ok(size);
    }
    let mut offsets = up.offsets()?;
    offsets.push(size);
    let changed = ctx
        .db
        .run(sql::grow_upload(&up.id, size as i64, (size + len) as i64, &serde_json::to_string(&offsets).map_err(internal)?))
        .await
        ?;
    if changed == 0 {
        return Err(OciError::new(416, "BLOB_UPLOAD_INVALID", "another chunk of this upload arrived meanwhile"));
    }
    Ok(size + len)
}

/// A chunk (one PATCH; Content-Range, when sent, must start where the upload
/// stands, else 416 with the current Range).
async fn patch_upload(ctx: &Ctx<'_>, req: &mut Request, name: &str, id: &str) -> R<Response> {
    let up = upload_row(ctx, name, id).await?;
    if let Some(range) = req.headers().get("content-range").ok().flatten() {
        let start = range.trim().trim_start_matches("bytes").trim_start_matches([' ', '=']).split('-').next().and_then(|s| s.trim().parse::<u64>().ok());
        if start != Some(up.size as u64) {
            let h = headers();
            h.set("location", &format!("/v2/{name}/blobs/uploads/{id}")).map_err(internal)?;
            h.set("range", &format!("0-{}", (up.size as u64).saturating_sub(1))).map_err(internal)?;
            let e = OciError::new(416, "BLOB_UPLOAD_INVALID", format!("chunk {range} does not start at byte {}", up.size as u64));
            let mut r = json_response(416, &e.oci_body()).map_err(internal)?;
            for (k, v) in h.entries() {
                r.headers_mut().set(&k, &v).map_err(internal)?;
            }
            return Ok(r);
        }
    }
    let size = add_chunk(ctx, req, &up).await?;
    accepted(name, &up.id, size)
}

async fn upload_status(ctx: &Ctx<'_>, name: &str, id: &str) -> R<Response> {
    let up = upload_row(ctx, name, id).await?;
    let h = headers();
    h.set("location", &format!("/v2/{name}/blobs/uploads/{id}")).map_err(internal)?;
    h.set("docker-upload-uuid", id).map_err(internal)?;
    h.set("range", &format!("0-{}", (up.size as u64).saturating_sub(1))).map_err(internal)?;
    empty(204, h).map_err(internal)
}

async fn finish_upload(ctx: &Ctx<'_>, req: &mut Request, name: &str, id: &str, query: &dyn Fn(&str) -> Option<String>) -> R<Response> {
    let mut up = upload_row(ctx, name, id).await?;
    let d = query("digest").ok_or_else(|| OciError::new(400, "DIGEST_INVALID", "the closing PUT names the digest"))?;
    let hex = oci::digest_hex(&d)?.to_string();
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let body_len = content_length(req).unwrap_or(0);
    // The chunks are checked against the digest even when the store holds it
    // already: owning a blob takes having its bytes.
    let size = if up.size as u64 == 0 {
        // POST then PUT with the whole body: straight to its digest.
        put_body(ctx, req, &store::blob_key(&hex), Some(&hex)).await?
    } else {
        if body_len > 0 {
            add_chunk(ctx, req, &up).await?;
            up = upload_row(ctx, name, id).await?;
        }
        // Concatenate the chunks in R2; R2 checks the digest as it stores it.
        let total = up.size as u64;
        let keys: Vec<String> = up.offsets()?.into_iter().map(|o| chunk_key(&up.id, o)).collect();
        super::streams::concatenate(&bucket, &keys, total, &store::blob_key(&hex), &hex).await.map_err(|e| digest_error(e, &d))?;
        total
    };
    for o in up.offsets()? {
        let _ = bucket.delete(chunk_key(&up.id, o)).await;
    }
    ctx.db.run(sql::delete_upload(&up.id)).await?;
    adopt(ctx, name, &hex, size).await
}

async fn put_manifest(ctx: &Ctx<'_>, req: &mut Request, name: &str, reference: &Reference) -> R<Response> {
    if content_length(req).map_or(false, |l| l as usize > oci::MAX_MANIFEST) {
        return Err(OciError::new(413, "SIZE_INVALID", format!("manifests are limited to {} bytes", oci::MAX_MANIFEST)));
    }
    let body = req.bytes().await.map_err(internal)?;
    let ct = req.headers().get("content-type").ok().flatten();
    let info = oci::inspect_manifest(&body, ct.as_deref())?;
    let hex = crate::auth::sha256_hex(&body);
    if let Reference::Digest(d) = reference {
        if *d != hex {
            return Err(OciError::new(400, "DIGEST_INVALID", format!("the manifest's digest is sha256:{hex}, not sha256:{d}")));
        }
    }
    let mut joining = Vec::new(); // staged blobs this manifest brings into the release
    for b in &info.blobs {
        match owned_blob(ctx, name, b).await? {
            Some((_, true)) => {}
            Some((_, false)) => {
                if !joining.contains(b) {
                    joining.push(b.clone());
                }
            }
            None => return Err(OciError::new(400, "MANIFEST_BLOB_UNKNOWN", format!("blob sha256:{b} is not in {name}"))),
        }
    }
    for m in &info.manifests {
        if find(ctx, &oci::manifest_path(name, m)).await?.is_none() {
            return Err(OciError::new(400, "MANIFEST_BLOB_UNKNOWN", format!("manifest sha256:{m} is not in {name}")));
        }
    }
    store_small(ctx, body.to_vec()).await?;
    let mut changes =
        vec![Change { path: oci::manifest_path(name, &hex), sha256: Some(hex.clone()), content_type: Some(info.media_type.clone()) }];
    changes.extend(joining.iter().map(|b| blob_change(name, b)));
    if let Reference::Tag(t) = reference {
        changes.push(Change { path: oci::tag_path(name, t), sha256: Some(hex.clone()), content_type: Some(info.media_type.clone()) });
    }
    if let Some(subject) = &info.subject {
        let desc = serde_json::to_vec(&info.descriptor(&hex, body.len())).map_err(internal)?;
        let desc_hex = store_small(ctx, desc).await?;
        changes.push(Change { path: oci::referrer_path(name, subject, &hex), sha256: Some(desc_hex), content_type: Some("application/json".into()) });
    }
    commit(ctx, &changes, &format!("push manifest to {name}")).await?;
    for b in &joining {
        let _ = ctx.db.run(sql::unstage_blob(ctx.site.id, name, b)).await; // else swept later
    }
    // `helm push` to `<repo>/<chart>`: the classic repository lists it too.
    if let (Some(_), Some((repo, chart))) = (crate::formats::helm::publish::pushed_chart(&body), name.split_once('/')) {
        if crate::api::valid_dist_name(repo) && !chart.contains('/') {
            if let Err(e) = super::helm::republish_after_push(ctx.env, &ctx.site.name, repo).await {
                console_warn!("helm push to {name}: {repo}/index.yaml waits for the next publication: {}", e.message);
            }
        }
    }
    let mut r = created(format!("/v2/{name}/manifests/sha256:{hex}"), &hex)?;
    if let Some(s) = info.subject {
        r.headers_mut().set("oci-subject", &format!("sha256:{s}")).map_err(internal)?;
    }
    Ok(r)
}

async fn tags(ctx: &Ctx<'_>, name: &str, query: &dyn Fn(&str) -> Option<String>) -> R<Response> {
    let mut all: Vec<String> = all_tags(ctx, name).await?.into_iter().map(|(t, _)| t).collect();
    if all.is_empty() && !repository_exists(ctx, name).await? {
        return match mirror::tags(ctx, name, query).await? {
            Some(r) => Ok(r),
            None => Err(OciError::name_unknown(name)),
        };
    }
    all.sort();
    let n = query("n").map(|n| n.parse::<usize>().map_err(|_| OciError::new(400, "PAGINATION_NUMBER_INVALID", "n is a number"))).transpose()?;
    let last = query("last");
    let (page, more) = oci::tags_page(&all, n, last.as_deref());
    let mut r = json_response(200, &json!({"name": name, "tags": page})).map_err(internal)?;
    if more {
        if let (Some(n), Some(l)) = (n, page.last()) {
            r.headers_mut().set("link", &format!("</v2/{name}/tags/list?n={n}&last={l}>; rel=\"next\"")).map_err(internal)?;
        }
    }
    Ok(r)
}

async fn cancel_upload(ctx: &Ctx<'_>, name: &str, id: &str) -> R<Response> {
    let up = upload_row(ctx, name, id).await?;
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    for o in up.offsets()? {
        let _ = bucket.delete(chunk_key(&up.id, o)).await;
    }
    ctx.db.run(sql::delete_upload(&up.id)).await?;
    empty(204, headers()).map_err(internal)
}

/// Every path under `prefix` in the active release (the rest of the path after
/// the prefix) with the blob it points at.
async fn list_under(ctx: &Ctx<'_>, prefix: &str) -> R<Vec<(String, String)>> {
    let (Some(rel), Some(seq)) = (ctx.site.active_release_id, ctx.site.seq) else { return Ok(vec![]) };
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        #[derive(Deserialize)]
        struct P {
            path: String,
            sha256: String,
        }
        let page: Vec<P> = ctx.db.all(store::list_prefix(ctx.site.id, seq, rel, prefix, &after, 1000)).await?;
        let n = page.len();
        for p in page {
            out.push((p.path[prefix.len()..].to_string(), p.sha256));
            after = p.path;
        }
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// Whether the site holds anything (a blob, a manifest) of the repository:
/// one whose tags were all deleted still lists, with no tags.
async fn repository_exists(ctx: &Ctx<'_>, name: &str) -> R<bool> {
    let (Some(rel), Some(seq)) = (ctx.site.active_release_id, ctx.site.seq) else { return Ok(false) };
    let prefix = oci::repository_prefix(name);
    #[derive(Deserialize)]
    struct P {
        #[allow(dead_code)]
        path: String,
    }
    let any: Vec<P> = ctx.db.all(store::list_prefix(ctx.site.id, seq, rel, &prefix, "", 1)).await?;
    Ok(!any.is_empty())
}

/// Every tag of a repository with the manifest digest it points at.
async fn all_tags(ctx: &Ctx<'_>, name: &str) -> R<Vec<(String, String)>> {
    list_under(ctx, &oci::tags_prefix(name)).await
}

fn gone(path: String) -> Change {
    Change { path, sha256: None, content_type: None }
}

/// A tag goes alone; a manifest by digest goes with every tag pointing at it.
async fn delete_manifest(ctx: &Ctx<'_>, name: &str, reference: &Reference) -> R<Response> {
    let changes = match reference {
        Reference::Tag(t) => {
            find(ctx, &oci::tag_path(name, t)).await?.ok_or_else(|| OciError::manifest_unknown(t))?;
            vec![gone(oci::tag_path(name, t))]
        }
        Reference::Digest(d) => {
            find(ctx, &oci::manifest_path(name, d)).await?.ok_or_else(|| OciError::manifest_unknown(&format!("sha256:{d}")))?;
            let mut c = vec![gone(oci::manifest_path(name, d))];
            let body = read_small(ctx, d).await?;
            if let Ok(info) = oci::inspect_manifest(&body, None) {
                if let Some(subject) = info.subject {
                    c.push(gone(oci::referrer_path(name, &subject, d)));
                }
            }
            c.extend(all_tags(ctx, name).await?.into_iter().filter(|(_, sha)| sha == d).map(|(t, _)| gone(oci::tag_path(name, &t))));
            c
        }
    };
    commit(ctx, &changes, &format!("delete from {name}")).await?;
    empty(202, headers()).map_err(internal)
}

async fn delete_blob(ctx: &Ctx<'_>, name: &str, hex: &str) -> R<Response> {
    let (_, in_release) = owned_blob(ctx, name, hex).await?.ok_or_else(|| OciError::blob_unknown(&format!("sha256:{hex}")))?;
    ctx.db.run(sql::unstage_blob(ctx.site.id, name, hex)).await?;
    if in_release {
        commit(ctx, &[gone(oci::blob_path(name, hex))], &format!("delete blob from {name}")).await?;
    }
    empty(202, headers()).map_err(internal)
}

/// Stores small bytes in hand (a manifest, a referrer descriptor) under their
/// digest; the site holds them.
async fn store_small(ctx: &Ctx<'_>, data: Vec<u8>) -> R<String> {
    let hex = crate::auth::sha256_hex(&data);
    super::store_owned_bytes(ctx.env, &ctx.db, ctx.site.id, data, &hex, ctx.now).await.map_err(internal)?;
    Ok(hex)
}

async fn read_small(ctx: &Ctx<'_>, hex: &str) -> R<Vec<u8>> {
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let object = bucket.get(store::blob_key(hex)).execute().await.map_err(internal)?.ok_or_else(|| internal("stored content is missing"))?;
    object.body().ok_or_else(|| internal("no body"))?.bytes().await.map_err(internal)
}

/// The referrers API: manifests of the repository whose subject is `hex`.
async fn referrers(ctx: &Ctx<'_>, name: &str, hex: &str, query: &dyn Fn(&str) -> Option<String>) -> R<Response> {
    let mut descriptors = Vec::new();
    for (_, desc) in list_under(ctx, &oci::referrers_prefix(name, hex)).await? {
        descriptors.push(serde_json::from_slice::<serde_json::Value>(&read_small(ctx, &desc).await?).map_err(internal)?);
    }
    let filter = query("artifactType");
    let body = oci::referrers_index(descriptors, filter.as_deref());
    let mut r = json_response(200, &body).map_err(internal)?;
    r.headers_mut().set("content-type", oci::OCI_INDEX).map_err(internal)?;
    if filter.is_some() {
        r.headers_mut().set("oci-filters-applied", "artifactType").map_err(internal)?;
    }
    Ok(r)
}

/// How long an unfinished upload is kept: `UPLOAD_TTL_SECONDS`, default a day.
fn upload_ttl_ms(ctx: &Ctx<'_>) -> i64 {
    ctx.env.var("UPLOAD_TTL_SECONDS").ok().and_then(|v| v.to_string().parse::<i64>().ok()).unwrap_or(86_400) * 1000
}

/// Abandoned uploads of the site (older than the TTL) lose their chunks and
/// their row; a few at a time, whenever an upload starts.
async fn sweep_abandoned(ctx: &Ctx<'_>) {
    let _ = ctx.db.run(sql::sweep_staged_blobs(ctx.site.id, ctx.now - upload_ttl_ms(ctx))).await;
    let Ok(stale) = ctx.db.all::<Upload>(sql::stale_uploads(ctx.site.id, ctx.now - upload_ttl_ms(ctx), 10)).await else { return };
    let Ok(bucket) = ctx.env.bucket(BUCKET_BINDING) else { return };
    for up in stale {
        for o in up.offsets().unwrap_or_default() {
            let _ = bucket.delete(chunk_key(&up.id, o)).await;
        }
        let _ = ctx.db.run(sql::delete_upload(&up.id)).await;
    }
}
