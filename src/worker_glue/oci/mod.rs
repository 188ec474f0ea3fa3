//! The OCI registry (`/v2/`) on a site's hostname: pull from the site's active
//! release, push into new releases (compare-and-swap, retried), blobs kept in
//! R2 under their digest like every other file.

use super::service::principal_for_token;
use super::db::{Db, Start};
use super::{json_response, now_ms};
use crate::auth::Scope;
use crate::oci::{self, OciError, OciRoute, Reference};
use crate::store::oci as sql;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use worker::*;

mod context;
mod mirror;
mod push;

use context::{all_tags, find, internal, list_under, read_small, reference_text, repository_exists, respond, send, send_manifest, Ctx, R};
use push::{cancel_upload, delete_blob, delete_manifest, finish_upload, patch_upload, put_manifest, staged_size, start_upload, upload_status};

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
    // Reads (pulls) from the nearest replica or after the client's bookmark;
    // pushes and deletions on the primary. A session's writes always reach
    // the primary, so a pull that fills the mirror's cache writes there too.
    let reads = matches!(req.method(), Method::Get | Method::Head);
    let bookmark = req.headers().get(super::admin::BOOKMARK_HEADER)?.filter(|b| reads && super::db::is_bookmark(b));
    let start = match (&bookmark, reads) {
        (Some(b), _) => Start::After(b),
        (None, true) => Start::Nearest,
        (None, false) => Start::Primary,
    };
    let db = match Db::open(env, start) {
        Ok(db) => db,
        Err(e) => return respond(&e),
    };
    let (site, found) = match super::memory::resolve(env, &db, host, read_path.as_deref().unwrap_or(""), bookmark.is_some()).await {
        Ok(super::memory::Resolved::Site(site, found)) => (site, found),
        Ok(super::memory::Resolved::NoSite) => return respond(&OciError::new(404, "NAME_UNKNOWN", "no registry on this hostname")),
        Ok(super::memory::Resolved::Schema(state)) => return respond(&crate::api::schema_error(&state)),
        Err(e) => return respond(&e),
    };
    let cfg = match parse_settings(site.registry_config.as_deref()) {
        Ok(c) => c,
        Err(e) => return respond(&internal(e.message)),
    };
    let prefetched = read_path.map(|p| (p, found));
    let ctx = Ctx { env, worker, db, host: host.to_string(), site, cfg, now: now_ms(), prefetched, latest: bookmark.is_some() };
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

async fn get_manifest(ctx: &Ctx<'_>, req: &Request, name: &str, reference: &Reference) -> R<Response> {
    let path = match reference {
        Reference::Tag(t) => oci::tag_path(name, t),
        Reference::Digest(d) => oci::manifest_path(name, d),
    };
    match find(ctx, &path).await? {
        Some(f) => send_manifest(ctx, req, reference, &f.sha256, f.size, &f.content_type, Some(&f.place)).await,
        None => match mirror::manifest(ctx, req, name, reference).await? {
            Some(r) => Ok(r),
            None => Err(OciError::manifest_unknown(&reference_text(reference))),
        },
    }
}

async fn get_blob(ctx: &Ctx<'_>, req: &Request, name: &str, hex: &str) -> R<Response> {
    if let Some(f) = find(ctx, &oci::blob_path(name, hex)).await? {
        return send(ctx, req, hex, f.size, "application/octet-stream", Some(&f.place)).await;
    }
    if let Some(size) = staged_size(ctx, name, hex).await? {
        return send(ctx, req, hex, size, "application/octet-stream", None).await;
    }
    match mirror::blob(ctx, req, name, hex).await? {
        Some(r) => Ok(r),
        None => Err(OciError::blob_unknown(&format!("sha256:{hex}"))),
    }
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
