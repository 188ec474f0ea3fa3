//! The glue's services shared by the admin API, the formats and the
//! registry: the request context (database, environment, principal), the
//! site, release and path rows, blob storage (uploads streamed to R2 under
//! their digest, bytes in hand, ranged reads) and the release-change helpers
//! every format's I/O uses. Handlers live in `admin`, `deb`, `apk`, `helm`,
//! `oci` and `serve`; none of them imports another handler.

use super::db::{BatchError, Db};
use super::BUCKET_BINDING;
use crate::api::{self, ApiError};
use crate::auth::{self, Principal, Scope};
use crate::store;
use serde::Deserialize;
use serde_json::{json, Value};
use worker::*;

pub(super) type ApiResult = std::result::Result<(u16, Value), ApiError>;
pub(super) type ApiResultOf<T> = std::result::Result<T, ApiError>;

/// Largest JSON body accepted.
pub(super) const MAX_JSON_BODY: usize = 4 * 1024 * 1024;
/// Default largest blob (R2's single-upload limit is 5 GiB; the plan's request body limit applies first).
pub(super) const DEFAULT_MAX_BLOB_BYTES: u64 = 5 * 1024 * 1024 * 1024;

pub(super) struct Ctx<'a> {
    pub env: &'a Env,
    pub db: &'a Db,
    pub who: Principal,
    pub now: i64,
}

#[derive(Deserialize)]
pub(super) struct SiteRow {
    pub id: i64,
    pub name: String,
    pub active_release_id: Option<i64>,
    head_seq: i64,
    created_at: i64,
}

impl SiteRow {
    pub(super) fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "active_release": self.active_release_id, "head_seq": self.head_seq, "created_at": self.created_at})
    }
}

#[derive(Deserialize, Clone)]
pub(super) struct ReleaseRow {
    pub id: i64,
    #[allow(dead_code)]
    site_id: i64,
    pub parent_id: Option<i64>,
    pub parent_seq: i64,
    pub seq: Option<i64>,
    pub state: crate::release::State,
    note: Option<String>,
    created_at: i64,
    activated_at: Option<i64>,
}

impl ReleaseRow {
    pub(super) fn json(&self) -> Value {
        json!({"id": self.id, "parent": self.parent_id, "seq": self.seq, "state": self.state, "note": self.note,
               "created_at": self.created_at, "activated_at": self.activated_at})
    }
    pub fn read_seq(&self) -> i64 {
        store::read_seq(self.seq, self.parent_seq)
    }
}

#[derive(Deserialize)]
pub(super) struct PathRow {
    pub path: String,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
}

pub(super) fn batch_err(e: BatchError, precondition: &str) -> ApiError {
    match e {
        BatchError::Precondition => ApiError::conflict(precondition),
        BatchError::Failed(e) => e,
    }
}

pub(super) async fn principal(req: &Request, env: &Env, db: &Db, now: i64) -> std::result::Result<Principal, ApiError> {
    let header = req.headers().get("authorization").ok().flatten();
    let token = auth::bearer(header.as_deref()).ok_or_else(ApiError::unauthorized)?;
    principal_for_token(token, env, db, now).await
}

/// Who presents `token` (the root token or a stored API token).
pub(super) async fn principal_for_token(token: &str, env: &Env, db: &Db, now: i64) -> std::result::Result<Principal, ApiError> {
    if let Ok(root) = env.secret("ADMIN_TOKEN") {
        if auth::matches_root(token, &root.to_string()) {
            return Ok(Principal::Root);
        }
    }
    let id = auth::token_id(token).ok_or_else(ApiError::unauthorized)?;
    #[derive(Deserialize)]
    struct T {
        id: String,
        secret_sha256: String,
        site_id: Option<i64>,
        scope: String,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
    }
    let row: Option<T> = db.first(store::token_by_id(id)).await?;
    let row = row.ok_or_else(ApiError::unauthorized)?;
    if !auth::matches_hash(token, &row.secret_sha256) || !auth::is_live(row.expires_at, row.revoked_at, now) {
        return Err(ApiError::unauthorized());
    }
    let scope = Scope::parse(&row.scope).ok_or_else(ApiError::unauthorized)?;
    Ok(Principal::Token { id: row.id, site_id: row.site_id, scope })
}

pub(super) async fn json_body(req: &mut Request) -> std::result::Result<Vec<u8>, ApiError> {
    if let Some(len) = req.headers().get("content-length").ok().flatten().and_then(|l| l.parse::<usize>().ok()) {
        if len > MAX_JSON_BODY {
            return Err(ApiError::new(413, "too_large", "JSON bodies are limited to 4 MiB"));
        }
    }
    let body = req.bytes().await.map_err(|e| ApiError::bad_request(format!("unreadable body: {e}")))?;
    if body.len() > MAX_JSON_BODY {
        return Err(ApiError::new(413, "too_large", "JSON bodies are limited to 4 MiB"));
    }
    Ok(body)
}

impl Ctx<'_> {
    /// The named site, if this principal may act on it with `scope`. A site the
    /// principal is confined away from is reported as missing.
    pub async fn site(&self, name: &str, scope: Scope) -> std::result::Result<SiteRow, ApiError> {
        let site: Option<SiteRow> = self.db.first(store::site_by_name(name)).await?;
        let missing = || ApiError::not_found(format!("no site named {name}"));
        let site = site.ok_or_else(missing)?;
        if !self.who.can(Scope::Read, Some(site.id)) {
            return Err(missing());
        }
        if !self.who.can(scope, Some(site.id)) {
            return Err(ApiError::forbidden());
        }
        Ok(site)
    }

    pub async fn release(&self, site_id: i64, id: i64) -> std::result::Result<ReleaseRow, ApiError> {
        self.db.first(store::release(site_id, id)).await?.ok_or_else(|| ApiError::not_found(format!("no release {id} on this site")))
    }

    pub async fn draft(&self, site_id: i64, id: i64) -> std::result::Result<ReleaseRow, ApiError> {
        let r = self.release(site_id, id).await?;
        if r.state != crate::release::State::Draft {
            return Err(ApiError::conflict(format!("release {id} is {}; an activated release never changes", r.state)));
        }
        Ok(r)
    }
}

/// Streams a request body into R2 under its digest (R2 checks the sha256 as
/// the bytes pass, and refuses a mismatch) and indexes it; `site` then holds
/// it. The body is skipped only when `site` holds the blob already (or, with
/// no site, when the store has it): a site that does not must send the bytes,
/// even for a digest the store has, so a digest alone never makes content
/// reachable in a site. Returns the size and whether the blob is new to the
/// site (to the store, without a site). With `index` false, new bytes are
/// stored but not indexed: the caller indexes them with
/// [`store::insert_owned_blob`] once it has accepted them (a package), and
/// bytes it refuses stay in R2 unindexed, never served nor referenceable.
pub(super) async fn store_upload(ctx: &Ctx<'_>, req: &mut Request, sha: &str, site: Option<i64>, index: bool) -> std::result::Result<(u64, bool), ApiError> {
    let length: u64 = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| ApiError::new(411, "length_required", "an upload needs a Content-Length"))?;
    let max = ctx
        .env
        .var("MAX_BLOB_BYTES")
        .ok()
        .and_then(|v| v.to_string().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_BLOB_BYTES);
    if length > max {
        return Err(ApiError::new(413, "too_large", format!("blobs are limited to {max} bytes")));
    }
    #[derive(Deserialize)]
    struct B {
        size: i64,
    }
    let held = match site {
        Some(id) => ctx.db.first::<B>(store::site_blob(id, sha)).await?,
        None => ctx.db.first::<B>(store::blob(sha)).await?,
    };
    if let Some(existing) = held {
        // Content-addressed: the stored bytes are already right; never rewritten.
        return Ok((existing.size as u64, false));
    }
    let stored_before = site.is_some() && ctx.db.first::<Value>(store::blob(sha)).await?.is_some();
    let data = match req.inner().body() {
        Some(stream) if length > 0 => Data::ReadableStream(stream),
        _ => Data::Empty,
    };
    // R2 computes sha256 as the body streams through and refuses the object on a
    // mismatch, so nothing is stored under a wrong digest (and a stored object
    // is only ever rewritten with the same bytes).
    let object = match super::blobs::put_blob(ctx.env, sha, data).await {
        Ok(o) => o,
        Err(super::blobs::PutError::Mismatch(_)) => {
            return Err(ApiError::new(400, "digest_mismatch", format!("the uploaded bytes do not have sha256 {sha}")));
        }
        Err(super::blobs::PutError::Failed(e)) => return Err(ApiError::internal(format!("storing the blob failed: {e}"))),
    };
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(|e| ApiError::internal(e.to_string()))?;
    if object.size() != length {
        if !stored_before {
            let _ = bucket.delete(store::blob_key(sha)).await;
        }
        return Err(ApiError::bad_request(format!("received {} bytes, Content-Length said {length}", object.size())));
    }
    match site {
        _ if !index => {}
        Some(id) => {
            ctx.db.batch(store::insert_owned_blob(id, sha, length as i64, ctx.now)).await.map_err(|e| batch_err(e, "storing the blob"))?;
        }
        None => {
            ctx.db.run(store::insert_blob(sha, length as i64, ctx.now)).await?;
        }
    }
    Ok((length, true))
}

/// The digests among `digests` that the site does not hold (see
/// `site_blobs` in schema.sql). A global token (the operator) may give a
/// site any stored blob by digest: that is recorded first.
pub(super) async fn not_held(ctx: &Ctx<'_>, site_id: i64, digests: &[&str]) -> std::result::Result<Vec<String>, ApiError> {
    #[derive(Deserialize)]
    struct H {
        sha256: String,
    }
    let mut missing = vec![];
    for chunk in digests.chunks(90) {
        if ctx.who.confined_to().is_none() {
            ctx.db
                .batch(chunk.iter().map(|d| store::own_blob(site_id, d, ctx.now)).collect())
                .await
                .map_err(|e| batch_err(e, "recording the site's blobs"))?;
        }
        let held: Vec<H> = ctx.db.all(store::site_blobs_among(site_id, chunk)).await?;
        missing.extend(chunk.iter().filter(|d| !held.iter().any(|h| h.sha256 == **d)).map(|d| d.to_string()));
    }
    Ok(missing)
}

/// The I/O of a planned publication up to its commit: refused (409) if it
/// would give a path a release published as immutable other bytes, else its
/// blobs are stored; returns the changes for the caller's one batch.
pub(super) async fn carry_out(ctx: &Ctx<'_>, site: &SiteRow, p: crate::formats::Publication) -> std::result::Result<Vec<api::Change>, ApiError> {
    refuse_republished(ctx, site.id, &p.changes).await?;
    store_generated(ctx, site.id, p.blobs).await?;
    Ok(p.changes)
}

/// Stores a publication's generated files: the ones not stored yet go to R2
/// at once (R2 checks each digest), then one batch records them as the
/// site's (a blob another site stored is the same bytes, generated here: it
/// becomes this site's too).
async fn store_generated(ctx: &Ctx<'_>, site_id: i64, blobs: Vec<crate::formats::NewBlob>) -> std::result::Result<(), ApiError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    if blobs.is_empty() {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Held {
        sha256: String,
    }
    let digests: Vec<&str> = blobs.iter().map(|b| b.sha256.as_str()).collect();
    let held: std::collections::BTreeSet<String> = ctx.db.all::<Held>(store::blob_sizes(&digests)).await?.into_iter().map(|h| h.sha256).collect();
    let sizes: Vec<(String, u64)> = blobs.iter().map(|b| (b.sha256.clone(), b.data.len() as u64)).collect();
    let mut puts: FuturesUnordered<_> = blobs
        .into_iter()
        .filter(|b| !held.contains(&b.sha256))
        .map(|b| async move { super::blobs::put_blob(ctx.env, &b.sha256, Data::Bytes(b.data)).await.map_err(|e| (b.sha256, e)) })
        .collect();
    while let Some(put) = puts.next().await {
        put.map_err(|(sha, e)| ApiError::internal(format!("storing generated file {sha} failed: {e}")))?;
    }
    let rows: Vec<(&str, u64)> = sizes.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    ctx.db.batch(store::insert_owned_blobs(site_id, &rows, ctx.now)).await.map_err(|e| batch_err(e, "storing generated files"))?;
    Ok(())
}

/// Paths served as immutable (`http::is_immutable_path`: pool files, package
/// files, by-hash and registry blobs) are cached for a year by clients and
/// CDNs, so once a release of the site published one, it never gets other
/// bytes: a put of other bytes there is refused (409), as Debian's archive
/// never reuses a pool file name. Publish new content under a new version.
pub(super) async fn refuse_republished(ctx: &Ctx<'_>, site_id: i64, changes: &[api::Change]) -> std::result::Result<(), ApiError> {
    #[derive(Deserialize)]
    struct P {
        path: String,
    }
    let puts: Vec<(&str, &str)> = changes
        .iter()
        .filter_map(|c| Some((c.path.as_str(), c.sha256.as_deref()?)))
        .filter(|(p, _)| !p.starts_with(store::INTERNAL_PREFIX) && crate::http::is_immutable_path(p))
        .collect();
    for chunk in puts.chunks(4_000) {
        let clash: Vec<P> = ctx.db.all(store::published_with_other_blob(site_id, chunk)).await?;
        if let Some(p) = clash.first() {
            return Err(ApiError::new(
                409,
                "immutable_path",
                format!(
                    "{} was published with other bytes and is served as immutable (clients and CDNs keep it for a year); \
                     publish the new content under a new version or name",
                    p.path
                ),
            ));
        }
    }
    Ok(())
}

/// The refusal for digests a site does not hold. It reads the same whether
/// another site stored the bytes or nobody did.
pub(super) fn not_held_error(site: &str, missing: &[String]) -> ApiError {
    ApiError::unprocessable(format!(
        "site {site} holds no blob with sha256 {}: upload the bytes first (PUT /api/v1/blobs/sha256/<hex>?site={site})",
        missing.join(", ")
    ))
}

/// Stores bytes made by the worker (indexes, signatures) as a blob; returns its sha256.
/// Every path of a release under `prefix`, by path.
pub(super) async fn paths_under(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, prefix: &str) -> std::result::Result<std::collections::BTreeMap<String, PathRow>, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    let mut after = String::new();
    loop {
        let page: Vec<PathRow> = ctx.db.all(store::list_prefix(site.id, rel.read_seq(), rel.id, prefix, &after, 1000)).await?;
        let n = page.len();
        for p in page {
            after = p.path.clone();
            out.insert(p.path.clone(), p);
        }
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// A package being added: its digest and size, and the statements that
/// index its bytes for the site (empty when the site held them already).
/// They go into the batch that adds the package, so a refused package leaves
/// no blob row (its raw bytes, when new, stay in R2 unindexed).
pub(super) struct PackageBlob {
    pub sha: String,
    pub size: u64,
    pub index: Vec<store::Stmt>,
}

/// A package being added: a raw body streams to R2 under the `?sha256=` it
/// names (R2 checks it while the bytes pass through), or JSON `{"sha256"}`
/// names a blob the site holds.
pub(super) async fn package_blob(ctx: &Ctx<'_>, req: &mut Request, site: &SiteRow, query: &dyn Fn(&str) -> Option<String>) -> std::result::Result<PackageBlob, ApiError> {
    let is_json = req.headers().get("content-type").ok().flatten().map_or(false, |t| t.starts_with("application/json"));
    let sha = if is_json {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ByDigest {
            sha256: String,
        }
        let b: ByDigest = api::parse_json(&json_body(req).await?)?;
        b.sha256.strip_prefix("sha256:").unwrap_or(&b.sha256).to_string()
    } else {
        query("sha256").ok_or_else(|| {
            ApiError::bad_request("a raw package upload names its digest: ?sha256=<hex> (or send JSON {\"sha256\"} for an uploaded blob)")
        })?
    };
    if !api::valid_sha256(&sha) {
        return Err(ApiError::bad_request("sha256 is 64 lower-case hex characters"));
    }
    if !is_json {
        let (size, new) = store_upload(ctx, req, &sha, Some(site.id), false).await?;
        let index = if new { store::insert_owned_blob(site.id, &sha, size as i64, ctx.now) } else { vec![] };
        return Ok(PackageBlob { sha, size, index });
    }
    let missing = not_held(ctx, site.id, &[sha.as_str()]).await?;
    if !missing.is_empty() {
        return Err(not_held_error(&site.name, &missing));
    }
    #[derive(Deserialize)]
    struct B {
        size: i64,
    }
    let size = ctx.db.first::<B>(store::site_blob(site.id, &sha)).await?.ok_or_else(|| not_held_error(&site.name, std::slice::from_ref(&sha)))?.size;
    Ok(PackageBlob { sha, size: size as u64, index: vec![] })
}

pub(super) async fn store_bytes(ctx: &Ctx<'_>, site_id: i64, data: Vec<u8>) -> std::result::Result<String, ApiError> {
    let sha = crate::auth::sha256_hex(&data);
    store_hashed_bytes(ctx, site_id, data, sha).await
}

/// [`store_bytes`] for bytes whose sha256 (hex) the caller already computed.
/// The site holds what the worker made for it.
pub(super) async fn store_hashed_bytes(ctx: &Ctx<'_>, site_id: i64, data: Vec<u8>, sha: String) -> std::result::Result<String, ApiError> {
    super::store_owned_bytes(ctx.env, &ctx.db, site_id, data, &sha, ctx.now)
        .await
        .map_err(|e| ApiError::internal(format!("storing a generated file failed: {e}")))?;
    Ok(sha)
}

/// Reads `length` bytes at `offset` of a stored blob.
pub(super) async fn read_blob_range(ctx: &Ctx<'_>, sha: &str, offset: u64, length: u64) -> std::result::Result<Vec<u8>, ApiError> {
    if length == 0 {
        return Ok(vec![]);
    }
    let object = blob_range(ctx, sha, offset, length).await?;
    let body = object.body().ok_or_else(|| ApiError::internal("blob has no body"))?;
    body.bytes().await.map_err(|e| ApiError::internal(format!("reading blob {sha}: {e}")))
}

/// `length` bytes at `offset` of a stored blob, from R2.
pub(super) async fn blob_range(ctx: &Ctx<'_>, sha: &str, offset: u64, length: u64) -> std::result::Result<Object, ApiError> {
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(|e| ApiError::internal(e.to_string()))?;
    let place = super::blobs::locate(ctx.db, sha).await?;
    super::blobs::get(&bucket, &place, Some((offset, length)), offset + length)
        .execute()
        .await
        .map_err(|e| ApiError::internal(format!("reading blob {sha}: {e}")))?
        .ok_or_else(|| ApiError::internal(format!("blob {sha} is missing from R2")))
}

/// Streams `length` bytes at `offset` of a stored blob through `f`, a chunk
/// at a time (never the whole range in memory). Stops at `f`'s first error,
/// which is returned inside the Ok.
pub(super) async fn for_each_chunk<E>(
    ctx: &Ctx<'_>,
    sha: &str,
    offset: u64,
    length: u64,
    mut f: impl FnMut(&[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<std::result::Result<(), E>, ApiError> {
    use futures_util::StreamExt;
    if length == 0 {
        return Ok(Ok(()));
    }
    let object = blob_range(ctx, sha, offset, length).await?;
    let mut stream = object.body().ok_or_else(|| ApiError::internal("blob has no body"))?.stream().map_err(|e| ApiError::internal(e.to_string()))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::internal(format!("reading blob {sha}: {e}")))?;
        if let Err(e) = f(&chunk) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}


/// Every row of a member query (a format's packages or charts under a
/// prefix), read in pages of 1000 after the greatest path so far, sorted by
/// path. `query(after, limit)` makes one page's statement.
pub(super) async fn paged_members<T: serde::de::DeserializeOwned>(
    ctx: &Ctx<'_>,
    query: impl Fn(&str, u32) -> store::Stmt,
    path: impl Fn(&T) -> &str,
) -> std::result::Result<Vec<T>, ApiError> {
    const PAGE: u32 = 1000;
    let mut out: Vec<T> = Vec::new();
    let mut after = String::new();
    loop {
        let page: Vec<T> = ctx.db.all(query(&after, PAGE)).await?;
        let n = page.len();
        if let Some(last) = page.iter().map(&path).max() {
            after = last.to_string();
        }
        out.extend(page);
        if n < PAGE as usize {
            out.sort_by(|a, b| path(a).cmp(path(b)));
            return Ok(out);
        }
    }
}

/// A site's settings of a format for a scope, as stored (JSON), or the
/// format's defaults when none are.
pub(super) async fn format_settings<T: serde::de::DeserializeOwned + Default>(ctx: &Ctx<'_>, site_id: i64, format: &str, scope: &str) -> ApiResultOf<T> {
    #[derive(Deserialize)]
    struct C {
        config: String,
    }
    match ctx.db.first::<C>(store::formats::settings(site_id, format, scope)).await? {
        Some(c) => serde_json::from_str(&c.config).map_err(|e| ApiError::internal(format!("stored {format} settings are unreadable: {e}"))),
        None => Ok(T::default()),
    }
}

/// A site's registered client-signing key of a format, in the format's own
/// encoding, if one is registered.
pub(super) async fn format_key(ctx: &Ctx<'_>, site_id: i64, format: &str) -> ApiResultOf<Option<String>> {
    #[derive(Deserialize)]
    struct K {
        public_key: String,
    }
    Ok(ctx.db.first::<K>(store::formats::public_key(site_id, format)).await?.map(|k| k.public_key))
}

/// The server's signing key for a format: the Worker secret `<NAME>_<SITE>`
/// (site name upper-cased, `-` as `_`), else `<NAME>`; 409 saying how to set
/// one when neither is.
pub(super) fn signing_secret(ctx: &Ctx<'_>, site: &SiteRow, name: &str, what: &str) -> ApiResultOf<String> {
    let site_secret = format!("{name}_{}", site.name.to_ascii_uppercase().replace('-', "_"));
    ctx.env.secret(&site_secret).or_else(|_| ctx.env.secret(name)).map(|s| s.to_string()).map_err(|_| {
        ApiError::conflict(format!("no signing key: set the Worker secret {name} (or {site_secret}) to {what}, or use client-side signing"))
    })
}

/// The pause between tries of a compare-and-swap that lost to another
/// change: jittered around `pause_ms`, which then doubles up to `max_ms`.
pub(super) async fn back_off(pause_ms: &mut u64, max_ms: u64) {
    worker::Delay::from(std::time::Duration::from_millis(*pause_ms / 2 + rand::random::<u64>() % *pause_ms)).await;
    *pause_ms = (*pause_ms * 2).min(max_ms);
}
