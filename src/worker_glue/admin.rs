//! The admin API (`/api/v1/…` on admin hostnames only).

use super::db::{BatchError, Db, Start};
use super::service::{batch_err, json_body, not_held, not_held_error, principal, refuse_republished, store_upload, ApiResult, Ctx, PathRow, ReleaseRow, SiteRow};
use super::{error_response, json_response, now_ms, BUCKET_BINDING};
use crate::api::{self, ApiError, Base, Route};
use crate::auth::{self, Scope};
use crate::api::schema_error;
use crate::schema::{self, SchemaState};
use crate::{hostname, store};
use serde::Deserialize;
use serde_json::{json, Value};
use worker::*;

pub async fn handle(req: Request, env: &Env) -> Result<Response> {
    let changes = !matches!(req.method(), Method::Get | Method::Head);
    // The admin API reads and writes the primary; its answers carry the
    // session's bookmark, which a client may send to a tenant hostname
    // (`X-Wharf-Bookmark`) to read at least what it wrote.
    let db = match Db::open(env, Start::Primary) {
        Ok(db) => db,
        Err(e) => return error_response(&e),
    };
    let result = dispatch(req, env, &db).await;
    if changes {
        // An activation, a rollback, a hostname, a site or registry settings
        // may have changed what a hostname serves: this isolate sees it at once.
        super::memory::forget_routes();
    }
    let mut response = match result {
        Ok((204, _)) => Response::builder().with_status(204).empty(),
        Ok((status, body)) => json_response(status, &body)?,
        Err(e) => error_response(&e)?,
    };
    if let Some(b) = db.bookmark() {
        response.headers_mut().set(BOOKMARK_HEADER, &b)?;
    }
    Ok(response)
}

/// Where the admin API gives its D1 bookmark, and where a tenant request may bring one back.
pub(super) const BOOKMARK_HEADER: &str = "x-wharf-bookmark";

/// One entry of a site's mirror cache, as the admin API lists it.
#[derive(Deserialize, serde::Serialize)]
struct CacheRow {
    upstream: String,
    repository: String,
    kind: String,
    reference: String,
    sha256: Option<String>,
    size: Option<f64>,
    content_type: Option<String>,
    checked_at: f64,
}

async fn check_schema(db: &Db) -> std::result::Result<(), ApiError> {
    match schema::check(db.recorded_schema().await.as_deref()) {
        SchemaState::Current => Ok(()),
        s => Err(schema_error(&s)),
    }
}

async fn dispatch(mut req: Request, env: &Env, db: &Db) -> ApiResult {
    let url = req.url().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let method = req.method().to_string();
    let route = api::route(&method, url.path())?;
    let now = now_ms();
    if route == Route::Health {
        return health(db).await;
    }
    check_schema(db).await?;
    let who = principal(&req, env, db, now).await?;
    let query = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned());
    let ctx = Ctx { env, db, who, now };
    use Route::*;
    match route {
        Health => unreachable!("handled above"),
        ListSites => list_sites(&ctx).await,
        CreateSite => {
            let b: api::CreateSiteBody = api::parse_json(&json_body(&mut req).await?)?;
            create_site(&ctx, b).await
        }
        ShowSite(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let hostnames: Vec<Value> = ctx.db.all(store::list_hostnames(site.id)).await?;
            let mut j = site.json();
            j["hostnames"] = hostnames.iter().filter_map(|h| h.get("hostname").cloned()).collect();
            Ok((200, j))
        }
        DeleteSite(s) => {
            if !ctx.who.can(Scope::Admin, None) {
                return Err(ApiError::forbidden());
            }
            let site = ctx.site(&s, Scope::Admin).await?;
            ctx.db.batch(store::delete_site(site.id)).await.map_err(|e| batch_err(e, "the site was deleted concurrently"))?;
            Ok((204, Value::Null))
        }
        ListHostnames(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let rows: Vec<Value> = ctx.db.all(store::list_hostnames(site.id)).await?;
            Ok((200, json!({ "hostnames": rows })))
        }
        AddHostname(s, h) => add_hostname(&ctx, &s, &h).await,
        RemoveHostname(s, h) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            let h = hostname::normalize(&h).ok_or_else(|| ApiError::bad_request("invalid hostname"))?;
            if ctx.db.run(store::remove_hostname(&h, site.id)).await? == 0 {
                return Err(ApiError::not_found(format!("{h} is not a hostname of site {s}")));
            }
            Ok((204, Value::Null))
        }
        CreateToken => {
            let b: api::CreateTokenBody = api::parse_json(&json_body(&mut req).await?)?;
            create_token(&ctx, b).await
        }
        ListTokens => list_tokens(&ctx, query("site")).await,
        RevokeToken(id) => revoke_token(&ctx, &id).await,
        PutBlob(sha) => put_blob(&ctx, &mut req, &sha, query("site")).await,
        Whoami => whoami(&ctx).await,
        HeldBlobs(s) => held_blobs(&ctx, &mut req, &s).await,
        ShowBlob(sha) => {
            if !ctx.who.can_on_some_site(Scope::Read) {
                return Err(ApiError::forbidden());
            }
            show_blob(&ctx, &sha).await
        }
        ListReleases(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let before = match query("before") {
                Some(b) => b.parse::<i64>().map_err(|_| ApiError::bad_request("before is a release id"))?,
                None => 0,
            };
            let (_, limit) = api::page(None, query("limit").as_deref(), 1000)?;
            let rows: Vec<ReleaseRow> = ctx.db.all(store::list_releases(site.id, before, limit)).await?;
            let next = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.id)).flatten();
            Ok((200, json!({"releases": rows.iter().map(ReleaseRow::json).collect::<Vec<_>>(), "next_before": next})))
        }
        CreateRelease(s) => {
            let b: api::CreateReleaseBody = api::parse_json_or_default(&json_body(&mut req).await?)?;
            create_release(&ctx, &s, b).await
        }
        ShowRelease(s, r) => {
            let site = ctx.site(&s, Scope::Read).await?;
            Ok((200, ctx.release(site.id, r).await?.json()))
        }
        DeleteRelease(s, r) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.release(site.id, r).await?;
            ctx.db
                .batch(store::delete_draft(site.id, rel.id))
                .await
                .map_err(|e| batch_err(e, format!("release {r} is {}; only drafts can be deleted", rel.state).as_str()))?;
            Ok((204, Value::Null))
        }
        ListPaths(s, r) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let rel = ctx.release(site.id, r).await?;
            let (after, limit) = api::page(query("after").as_deref(), query("limit").as_deref(), 1000)?;
            let rows: Vec<PathRow> = ctx.db.all(store::list_paths(site.id, rel.read_seq(), rel.id, &after, limit)).await?;
            let next = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.path.clone())).flatten();
            let paths: Vec<Value> = rows
                .iter()
                .map(|p| json!({"path": p.path, "sha256": p.sha256, "size": p.size, "content_type": p.content_type}))
                .collect();
            Ok((200, json!({"release": rel.id, "paths": paths, "next_after": next})))
        }
        PutPath(s, r, p) => {
            let b: api::PutPathBody = api::parse_json(&json_body(&mut req).await?)?;
            let change = api::validate_put(p, b.sha256, b.content_type)?;
            apply_changes(&ctx, &s, r, vec![change]).await
        }
        DeletePath(s, r, p) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            let present: Option<PathRow> = ctx.db.first(store::release_path(site.id, rel.read_seq(), rel.id, &p)).await?;
            if present.is_none() {
                return Err(ApiError::not_found(format!("release {r} has no path {p:?}")));
            }
            apply_changes(&ctx, &s, r, vec![api::Change { path: p, sha256: None, content_type: None }]).await
        }
        ApplyChanges(s, r) => {
            let b: api::ChangesBody = api::parse_json(&json_body(&mut req).await?)?;
            let changes = b.validate()?;
            apply_changes(&ctx, &s, r, changes).await
        }
        Diff(s, a, b) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let ra = ctx.release(site.id, a).await?;
            let rb = ctx.release(site.id, b).await?;
            let (after, limit) = api::page(query("after").as_deref(), query("limit").as_deref(), 1000)?;
            let rows: Vec<Value> =
                ctx.db.all(store::diff(site.id, (ra.read_seq(), ra.id), (rb.read_seq(), rb.id), &after, limit)).await?;
            let next = (rows.len() == limit as usize)
                .then(|| rows.last().and_then(|r| r.get("path").cloned()))
                .flatten();
            let changes: Vec<Value> = rows
                .into_iter()
                .map(|r| {
                    let kind = match (r["old_sha256"].is_null(), r["new_sha256"].is_null()) {
                        (true, _) => "added",
                        (_, true) => "removed",
                        _ => "changed",
                    };
                    let side = |p: &str| {
                        (!r[format!("{p}_sha256")].is_null()).then(|| {
                            json!({"sha256": r[format!("{p}_sha256")], "size": r[format!("{p}_size")], "content_type": r[format!("{p}_content_type")]})
                        })
                    };
                    json!({"path": r["path"], "change": kind, "old": side("old"), "new": side("new")})
                })
                .collect();
            Ok((200, json!({"from": a, "to": b, "changes": changes, "next_after": next})))
        }
        Activate(s, r) => {
            let b: api::ActivateBody = api::parse_json_or_default(&json_body(&mut req).await?)?;
            let allow_empty = query("allow_empty").is_some_and(|v| v == "true" || v == "1");
            activate(&ctx, &s, r, b, allow_empty).await
        }
        Rollback(s) => {
            let b: api::RollbackBody = api::parse_json_or_default(&json_body(&mut req).await?)?;
            rollback(&ctx, &s, b).await
        }
        OciPutSettings(s) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            let cfg: crate::oci::OciConfig = api::parse_json_or_default(&json_body(&mut req).await?)?;
            cfg.validate().map_err(ApiError::unprocessable)?;
            ctx.db.run(store::oci::put_settings(site.id, &serde_json::to_string(&cfg).expect("serialisable"))).await?;
            Ok((200, json!({"settings": cfg})))
        }
        OciShowSettings(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            Ok((200, json!({"settings": super::oci::settings(&ctx.db, site.id).await?})))
        }
        OciListCache(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let (after, limit) = api::page(query("after").as_deref(), query("limit").as_deref(), 1000)?;
            let cursor = crate::oci::mirror::parse_cursor(&after).map_err(ApiError::bad_request)?;
            let (upstream, repository) = (query("upstream"), query("repository"));
            let rows: Vec<CacheRow> =
                ctx.db.all(store::oci::cache_page(site.id, upstream.as_deref(), repository.as_deref(), &cursor, limit)).await?;
            let next = (rows.len() as u32 == limit)
                .then(|| rows.last().map(|r| crate::oci::mirror::cursor(&r.upstream, &r.repository, &r.kind, &r.reference)))
                .flatten();
            Ok((200, json!({"entries": rows, "next_after": next})))
        }
        OciPurgeCache(s) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            let (upstream, repository) = (query("upstream"), query("repository"));
            let removed = ctx.db.run(store::oci::purge_cache(site.id, upstream.as_deref(), repository.as_deref())).await?;
            Ok((200, json!({"removed": removed})))
        }
        mirror_route @ (MirrorPutConfig(..) | MirrorShowConfig(..) | MirrorValidate(..) | MirrorPutSettings(..) | MirrorShowSettings(..) | MirrorStartRun(..) | MirrorListRuns(..) | MirrorShowRun(..) | MirrorImages(..)) => super::sync::dispatch(&ctx, mirror_route, &mut req, &query).await,
        DebAddBatch(s, r, d, c) => super::batch::add::<crate::formats::Deb>(&ctx, &mut req, &s, r, (d, c), &query).await,
        ApkAddBatch(s, r, b, repo) => super::batch::add::<crate::formats::Apk>(&ctx, &mut req, &s, r, (b, repo), &query).await,
        HelmAddBatch(s, r, repo) => super::batch::add::<crate::formats::Helm>(&ctx, &mut req, &s, r, repo, &query).await,
        DebPublishBatch(s, d, c) => super::batch::publish::<crate::formats::Deb>(&ctx, &mut req, &s, (d, c), &query).await,
        ApkPublishBatch(s, b, repo) => super::batch::publish::<crate::formats::Apk>(&ctx, &mut req, &s, (b, repo), &query).await,
        HelmPublishBatch(s, repo) => super::batch::publish::<crate::formats::Helm>(&ctx, &mut req, &s, repo, &query).await,
        apk_route @ (ApkPutSettings(..)
        | ApkShowSettings(..)
        | ApkPutKey(..)
        | ApkShowKey(..)
        | ApkAddPackage(..)
        | ApkListPackages(..)
        | ApkRemovePackage(..)
        | ApkPublish(..)
        | ApkUnsigned(..)
        | ApkSignature(..)) => super::apk::dispatch(&ctx, apk_route, &mut req, &query).await,
        helm_route @ (HelmAddChart(..) | HelmListCharts(..) | HelmRemoveChart(..) | HelmPutProvenance(..) | HelmPublish(..)) => {
            super::helm::dispatch(&ctx, helm_route, &mut req, &query).await
        }
        deb_route => super::deb::dispatch(&ctx, deb_route, &mut req, &query).await,
    }
}

async fn health(db: &Db) -> ApiResult {
    let recorded = db.recorded_schema().await;
    let state = schema::check(recorded.as_deref());
    let body = json!({
        "status": if state == SchemaState::Current { "ok" } else { "schema_outdated" },
        "schema": {
            "version": schema::SCHEMA_VERSION,
            "sha256": schema::SCHEMA_SHA256,
            "database_version": recorded.and_then(|v| v.parse::<u32>().ok()),
        },
        "worker": env!("CARGO_PKG_VERSION"),
    });
    Ok((if state == SchemaState::Current { 200 } else { 503 }, body))
}

/// The calling token: its id (`root` for the root token), scope and site.
async fn whoami(ctx: &Ctx<'_>) -> ApiResult {
    Ok(match &ctx.who {
        crate::auth::Principal::Root => (200, json!({"token": "root", "scope": "admin", "site": null})),
        crate::auth::Principal::Token { id, site_id, scope } => {
            #[derive(serde::Deserialize)]
            struct N {
                name: String,
            }
            let site = match site_id {
                Some(s) => ctx.db.first::<N>(store::site_by_id(*s)).await?.map(|n| n.name),
                None => None,
            };
            (200, json!({"token": id, "scope": scope.as_str(), "site": site}))
        }
    })
}

/// The digests among `{"sha256": [...]}` (up to 10,000) that the site
/// holds: it can add them by digest without uploading. Whatever the token
/// (a global one could give the site any stored blob, but that is not asked
/// here). Nothing is recorded.
async fn held_blobs(ctx: &Ctx<'_>, req: &mut Request, s: &str) -> ApiResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        sha256: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct H {
        sha256: String,
    }
    let site = ctx.site(s, Scope::Read).await?;
    let b: Body = api::parse_json(&json_body(req).await?)?;
    if b.sha256.len() > 10_000 {
        return Err(ApiError::new(413, "too_large", "at most 10,000 digests a request"));
    }
    let mut digests: Vec<String> = Vec::new();
    for d in b.sha256 {
        let d = d.strip_prefix("sha256:").unwrap_or(&d).to_string();
        if !api::valid_sha256(&d) {
            return Err(ApiError::bad_request(format!("{d:?} is not a sha256 (64 lower-case hex characters)")));
        }
        digests.push(d);
    }
    let refs: Vec<&str> = digests.iter().map(String::as_str).collect();
    let mut held = std::collections::BTreeSet::new();
    for chunk in refs.chunks(90) {
        held.extend(ctx.db.all::<H>(store::site_blobs_among(site.id, chunk)).await?.into_iter().map(|h| h.sha256));
    }
    let held: Vec<&str> = refs.iter().copied().filter(|d| held.contains(*d)).collect();
    Ok((200, json!({"held": held})))
}

async fn list_sites(ctx: &Ctx<'_>) -> ApiResult {
    let only = ctx.who.confined_to();
    if only.is_none() && !ctx.who.can(Scope::Read, None) {
        return Err(ApiError::forbidden());
    }
    let rows: Vec<SiteRow> = ctx.db.all(store::list_sites(only)).await?;
    Ok((200, json!({"sites": rows.iter().map(SiteRow::json).collect::<Vec<_>>()})))
}

async fn create_site(ctx: &Ctx<'_>, b: api::CreateSiteBody) -> ApiResult {
    if !ctx.who.can(Scope::Admin, None) {
        return Err(ApiError::forbidden());
    }
    if !api::valid_site_name(&b.name) {
        return Err(ApiError::bad_request("a site name is 1-63 characters of a-z, 0-9 and '-', not starting with '-'"));
    }
    let created: Option<Value> = ctx.db.first(store::create_site(&b.name, ctx.now)).await?;
    if created.is_none() {
        return Err(ApiError::conflict(format!("a site named {} exists", b.name)));
    }
    let site = ctx.site(&b.name, Scope::Admin).await?;
    Ok((201, site.json()))
}

async fn add_hostname(ctx: &Ctx<'_>, s: &str, h: &str) -> ApiResult {
    let site = ctx.site(s, Scope::Admin).await?;
    let h = hostname::normalize(h).ok_or_else(|| ApiError::bad_request("invalid hostname"))?;
    let admin = ctx.env.var("ADMIN_HOSTNAMES").map(|v| hostname::parse_list(&v.to_string())).unwrap_or_default();
    if admin.contains(&h) {
        return Err(ApiError::conflict(format!("{h} is an admin hostname")));
    }
    if ctx.db.run(store::add_hostname(&h, site.id, ctx.now)).await? == 1 {
        return Ok((201, json!({"hostname": h, "site": site.name})));
    }
    #[derive(Deserialize)]
    struct Owner {
        site_id: i64,
    }
    match ctx.db.first::<Owner>(store::hostname_owner(&h)).await? {
        Some(o) if o.site_id == site.id => Ok((200, json!({"hostname": h, "site": site.name}))),
        _ => Err(ApiError::conflict(format!("{h} belongs to another site"))),
    }
}

fn random_bytes<const N: usize>() -> std::result::Result<[u8; N], ApiError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(b)
}

async fn create_token(ctx: &Ctx<'_>, b: api::CreateTokenBody) -> ApiResult {
    let scope = Scope::parse(&b.scope).ok_or_else(|| ApiError::bad_request("scope is read, publish or admin"))?;
    if b.name.trim().is_empty() || b.name.len() > 200 {
        return Err(ApiError::bad_request("a token needs a name of 1-200 characters"));
    }
    let site_id = match &b.site {
        Some(s) => Some(ctx.site(s, Scope::Admin).await?.id),
        None if ctx.who.can(Scope::Admin, None) => None,
        None => return Err(ApiError::forbidden()),
    };
    let expires_at = match b.expires_in {
        Some(0) => return Err(ApiError::bad_request("expires_in must be at least 1 second")),
        Some(s) if s > 10 * 365 * 86400 => return Err(ApiError::bad_request("expires_in is at most ten years")),
        Some(s) => Some(ctx.now + (s as i64) * 1000),
        None => None,
    };
    let t = auth::new_token(&random_bytes::<38>()?);
    ctx.db.run(store::insert_token(&t.id, &t.secret_sha256, &b.name, site_id, scope.as_str(), ctx.now, expires_at)).await?;
    Ok((
        201,
        json!({"id": t.id, "token": t.token, "name": b.name, "site": b.site, "scope": scope.as_str(), "expires_at": expires_at,
               "note": "the token is shown only now; Wharf keeps only its sha256"}),
    ))
}

async fn list_tokens(ctx: &Ctx<'_>, site: Option<String>) -> ApiResult {
    let site_id = match (site, ctx.who.confined_to()) {
        (Some(s), _) => Some(ctx.site(&s, Scope::Admin).await?.id),
        (None, Some(own)) if ctx.who.can(Scope::Admin, Some(own)) => Some(own),
        (None, None) if ctx.who.can(Scope::Admin, None) => None,
        _ => return Err(ApiError::forbidden()),
    };
    let rows: Vec<Value> = ctx.db.all(store::list_tokens(site_id)).await?;
    Ok((200, json!({"tokens": rows})))
}

async fn revoke_token(ctx: &Ctx<'_>, id: &str) -> ApiResult {
    #[derive(Deserialize)]
    struct T {
        site_id: Option<i64>,
    }
    let row: Option<T> = ctx.db.first(store::token_by_id(id)).await?;
    let Some(row) = row else { return Err(ApiError::not_found("no such token")) };
    if !ctx.who.can(Scope::Admin, row.site_id) {
        return Err(if ctx.who.can(Scope::Read, row.site_id) { ApiError::forbidden() } else { ApiError::not_found("no such token") });
    }
    ctx.db.run(store::revoke_token(id, ctx.now)).await?;
    Ok((204, Value::Null))
}

async fn put_blob(ctx: &Ctx<'_>, req: &mut Request, sha: &str, site: Option<String>) -> ApiResult {
    // The site that will hold the blob: the one named, else the token's own.
    // A global token naming none stores it for no site (it can give it to any).
    let site_id = match (site, ctx.who.confined_to()) {
        (Some(s), _) => Some(ctx.site(&s, Scope::Publish).await?.id),
        (None, Some(own)) if ctx.who.can(Scope::Publish, Some(own)) => Some(own),
        (None, None) if ctx.who.can(Scope::Publish, None) => None,
        _ => return Err(ApiError::forbidden()),
    };
    let (size, created) = store_upload(ctx, req, sha, site_id, true).await?;
    Ok((if created { 201 } else { 200 }, json!({"sha256": sha, "size": size, "created": created})))
}

/// A blob as the index (D1) and the store (R2) each see it.
async fn show_blob(ctx: &Ctx<'_>, sha: &str) -> ApiResult {
    #[derive(Deserialize)]
    struct B {
        size: i64,
        created_at: i64,
    }
    // A site's token sees only what its site holds: whether another tenant
    // stored some content is not for it to learn.
    if let Some(own) = ctx.who.confined_to() {
        if ctx.db.first::<B>(store::site_blob(own, sha)).await?.is_none() {
            return Err(ApiError::not_found("no such blob"));
        }
    }
    let row: Option<B> = ctx.db.first(store::blob(sha)).await?;
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(|e| ApiError::internal(e.to_string()))?;
    let place = super::blobs::locate(ctx.db, sha).await?;
    let object = bucket.head(&place.key).await.map_err(|e| ApiError::internal(e.to_string()))?;
    if row.is_none() && object.is_none() {
        return Err(ApiError::not_found("no such blob"));
    }
    // A blob within a pack is stored when the pack holds all of its bytes.
    let stored_size = match (place.offset, &object, &row) {
        (None, Some(o), _) => Some(o.size()),
        (Some(at), Some(o), Some(r)) if o.size() >= at + r.size as u64 => Some(r.size as u64),
        _ => None,
    };
    Ok((
        200,
        json!({"sha256": sha, "size": row.as_ref().map(|r| r.size), "created_at": row.as_ref().map(|r| r.created_at),
               "indexed": row.is_some(), "stored": stored_size.is_some(), "stored_size": stored_size, "packed": place.offset.is_some()}),
    ))
}

async fn create_release(ctx: &Ctx<'_>, s: &str, b: api::CreateReleaseBody) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    let note = b.note.as_deref();
    if note.map_or(false, |n| n.len() > 1000) {
        return Err(ApiError::bad_request("a note is at most 1000 bytes"));
    }
    let stmt = match b.base()? {
        Base::Active => store::create_release_from_active(site.id, note, ctx.now),
        Base::Empty => store::create_release_from(site.id, None, note, ctx.now),
        Base::Release(id) => {
            let parent = ctx.release(site.id, id).await?;
            let Some(seq) = parent.seq else {
                return Err(ApiError::conflict(format!("release {id} is a draft; a release is made from an activated one")));
            };
            store::create_release_from(site.id, Some((parent.id, seq)), note, ctx.now)
        }
    };
    let rel: Option<ReleaseRow> = ctx.db.first(stmt).await?;
    let rel = rel.ok_or_else(|| ApiError::internal("the release was not created"))?;
    Ok((201, rel.json()))
}

async fn apply_changes(ctx: &Ctx<'_>, s: &str, r: i64, changes: Vec<api::Change>) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    ctx.draft(site.id, r).await?;
    // Every put must name a blob the site holds.
    let mut digests: Vec<&str> = changes.iter().filter_map(|c| c.sha256.as_deref()).collect();
    digests.sort_unstable();
    digests.dedup();
    let missing = not_held(ctx, site.id, &digests).await?;
    if !missing.is_empty() {
        return Err(not_held_error(&site.name, &missing));
    }
    refuse_republished(ctx, site.id, &changes).await?;
    ctx.db
        .batch(store::apply_changes(site.id, r, &changes))
        .await
        .map_err(|e| batch_err(e, &format!("release {r} stopped being a draft")))?;
    Ok((200, json!({"release": r, "changed": changes.len()})))
}

async fn activate(ctx: &Ctx<'_>, s: &str, r: i64, b: api::ActivateBody, allow_empty: bool) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    let rel = ctx.release(site.id, r).await?;
    if rel.state != crate::release::State::Draft {
        return Err(ApiError::conflict(format!("release {r} is {}; use rollback to re-activate an earlier release", rel.state)));
    }
    let expected = b.expected_active.unwrap_or(rel.parent_id);
    for f in super::formats::ALL {
        f.prepare_activation(ctx, &site, &rel).await?;
    }
    // A draft that changes nothing on top of the active release is almost
    // always a mistake (an upload that failed before it): say so.
    if !allow_empty && rel.parent_id == site.active_release_id {
        #[derive(Deserialize)]
        struct N {
            n: i64,
        }
        if ctx.db.first::<N>(store::count_changes(rel.id)).await?.map_or(0, |n| n.n) == 0 {
            return Err(ApiError::new(
                422,
                "empty_release",
                format!("release {r} changes nothing on top of the active release; add files first, or activate with ?allow_empty=true"),
            ));
        }
    }
    activate_prepared(ctx, &site, r, expected).await
}

/// Activates a draft made from the active release: every indexer prepares
/// it, then the compare-and-swap against its parent.
pub(super) async fn activate_draft(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow) -> ApiResult {
    for f in super::formats::ALL {
        f.prepare_activation(ctx, site, rel).await?;
    }
    activate_prepared(ctx, site, rel.id, rel.parent_id).await
}

/// The compare-and-swap itself, once every indexer has prepared the draft.
pub(super) async fn activate_prepared(ctx: &Ctx<'_>, site: &SiteRow, r: i64, expected: Option<i64>) -> ApiResult {
    match ctx.db.batch(store::activate(site.id, r, expected, ctx.now)).await {
        Ok(changes) => {
            let rel = ctx.release(site.id, r).await?;
            let mut j = rel.json();
            j["rows_closed"] = json!(changes.get(store::ACTIVATE_CLOSED));
            j["rows_opened"] = json!(changes.get(store::ACTIVATE_OPENED));
            Ok((200, j))
        }
        Err(BatchError::Precondition) => Err(stale(ctx, &site.name, expected, "activate").await),
        Err(BatchError::Failed(e)) => Err(e),
    }
}

/// Explains a failed compare-and-swap.
async fn stale(ctx: &Ctx<'_>, s: &str, expected: Option<i64>, what: &str) -> ApiError {
    let now_active = match ctx.db.first::<SiteRow>(store::site_by_name(s)).await {
        Ok(Some(site)) => site.active_release_id,
        _ => None,
    };
    let show = |v: Option<i64>| v.map_or("none".to_string(), |v| v.to_string());
    ApiError::new(
        409,
        "stale_release",
        format!(
            "cannot {what}: expected the active release to be {}, but it is {} (or the release changed state); start again from the active release",
            show(expected),
            show(now_active)
        ),
    )
}

async fn rollback(ctx: &Ctx<'_>, s: &str, b: api::RollbackBody) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    let to = match b.to {
        Some(t) => t,
        None => {
            #[derive(Deserialize)]
            struct Id {
                id: i64,
            }
            ctx.db
                .first::<Id>(store::previous_release(site.id))
                .await?
                .map(|r| r.id)
                .ok_or_else(|| ApiError::conflict("there is no earlier release to roll back to"))?
        }
    };
    let target = ctx.release(site.id, to).await?;
    if target.state != crate::release::State::Retired {
        return Err(ApiError::conflict(format!("release {to} is {}; only a retired release can be re-activated", target.state)));
    }
    let expected = b.expected_active.unwrap_or(site.active_release_id);
    let mut fresh = Vec::new();
    for f in super::formats::ALL {
        let scopes = f.rollback_scopes(ctx, &site, &target).await?;
        if !scopes.is_empty() {
            fresh.push((f, scopes));
        }
    }
    if !fresh.is_empty() {
        return republish_for_rollback(ctx, &site, &target, expected, &fresh).await;
    }
    match ctx.db.batch(store::rollback(site.id, to, expected, ctx.now)).await {
        Ok(_) => Ok((200, ctx.release(site.id, to).await?.json())),
        Err(BatchError::Precondition) => Err(stale(ctx, s, expected, "roll back").await),
        Err(BatchError::Failed(e)) => Err(e),
    }
}

/// Re-activates `target` through a new release made from it, in which the
/// formats that need it publish their scopes afresh (Debian: a newer Release,
/// since apt ignores an older one), activated by compare-and-swap; the new
/// release is deleted if that fails.
async fn republish_for_rollback(
    ctx: &Ctx<'_>,
    site: &SiteRow,
    target: &ReleaseRow,
    expected: Option<i64>,
    fresh: &[(super::formats::Format, Vec<String>)],
) -> ApiResult {
    let seq = target.seq.ok_or_else(|| ApiError::conflict("only an activated release can be rolled back to"))?;
    let note = format!("rollback to release {}", target.id);
    let draft: ReleaseRow = ctx
        .db
        .first(store::create_release_from(site.id, Some((target.id, seq)), Some(&note), ctx.now))
        .await?
        .ok_or_else(|| ApiError::internal("the rollback release was not created"))?;
    let mut result = Ok(());
    'all: for (f, scopes) in fresh {
        for scope in scopes {
            if let Err(e) = f.republish(ctx, site, &draft, scope).await {
                result = Err(e);
                break 'all;
            }
        }
    }
    let activated = match result {
        Ok(()) => activate_prepared(ctx, site, draft.id, expected).await,
        Err(e) => Err(e),
    };
    match activated {
        Ok((status, mut body)) => {
            body["rolled_back_to"] = json!(target.id);
            Ok((status, body))
        }
        Err(e) => {
            let _ = ctx.db.batch(store::delete_draft(site.id, draft.id)).await;
            Err(e)
        }
    }
}
