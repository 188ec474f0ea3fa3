//! What the registry's handlers and the mirror share: the request context
//! (site, settings, the path read with it), errors, sending stored blobs and
//! manifests, reading and committing the site's registry paths.

use crate::worker_glue::service::ReleaseRow;
use crate::worker_glue::db::{BatchError, Db};
use crate::worker_glue::{json_response, now_ms, BUCKET_BINDING};
use crate::api::Change;
use crate::oci::{self, OciError, Reference};
use crate::store::{self, Place};
use serde::Deserialize;
use worker::*;

pub(super) type R<T> = std::result::Result<T, OciError>;

pub(super) fn internal(e: impl std::fmt::Display) -> OciError {
    OciError::new(500, "UNKNOWN", e.to_string())
}

pub(super) fn respond(e: &OciError) -> Result<Response> {
    let mut r = json_response(e.status, &e.oci_body())?;
    if e.status == 401 {
        r.headers_mut().set("www-authenticate", "Basic realm=\"wharf\"")?;
    }
    Ok(r)
}

/// The hostname's site with its active release and registry settings.
pub(super) type Site = std::rc::Rc<crate::lookup::Route>;

pub(super) struct Ctx<'a> {
    pub(super) env: &'a Env,
    /// For work that outlives the response (storing a mirrored blob).
    pub(super) worker: &'a Context,
    pub(super) db: Db,
    pub(super) host: String,
    pub(super) site: Site,
    pub(super) cfg: oci::OciConfig,
    pub(super) now: i64,
    /// A release path read with the site (a GET or HEAD of a manifest or blob).
    pub(super) prefetched: Option<(String, Option<std::rc::Rc<crate::lookup::Found>>)>,
    /// The client brought a bookmark: paths are read from D1, not from memory.
    pub(super) latest: bool,
}

impl Ctx<'_> {
    /// What names this site and no other, ever: its id and creation time.
    pub(super) fn site_key(&self) -> (i64, i64) {
        (self.site.id, self.site.created_at)
    }
}

pub(super) fn headers() -> Headers {
    let h = Headers::new();
    let _ = h.set("docker-distribution-api-version", "registry/2.0");
    h
}

pub(super) fn empty(status: u16, h: Headers) -> Result<Response> {
    Ok(ResponseBuilder::new().with_status(status).with_headers(h).empty())
}

pub(super) async fn find(ctx: &Ctx<'_>, path: &str) -> R<Option<std::rc::Rc<crate::lookup::Found>>> {
    if let Some((p, found)) = &ctx.prefetched {
        if p == path {
            return Ok(found.clone());
        }
    }
    match crate::worker_glue::memory::resolve(ctx.env, &ctx.db, &ctx.host, path, ctx.latest).await? {
        crate::worker_glue::memory::Resolved::Site(_, found) => Ok(found),
        _ => Ok(None),
    }
}

/// Streams a stored blob (with Range) or answers HEAD. `place`: where its
/// bytes lie in R2, when the caller knows (else it is looked up).
pub(super) async fn send(ctx: &Ctx<'_>, req: &Request, sha: &str, size: u64, content_type: &str, place: Option<&Place>) -> R<Response> {
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
    let place = match place {
        Some(p) => p.clone(),
        None => crate::worker_glue::blobs::locate(&ctx.db, sha).await?,
    };
    // Small bodies (manifests, configs) come from the isolate's memory.
    if let Some(bytes) = crate::worker_glue::memory::small_body(ctx.env, sha, &place, size).await? {
        let (at, n) = r2_range.unwrap_or((0, size));
        return Ok(builder.fixed(bytes[at as usize..(at + n) as usize].to_vec()));
    }
    if r2_range.is_none() {
        if let Some(body) = crate::worker_glue::edge::whole_body(ctx.env, ctx.worker, sha, &place, size).await.map_err(internal)? {
            return Ok(builder.body(body));
        }
    }
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let object = crate::worker_glue::blobs::get(&bucket, &place, r2_range, size).execute().await.map_err(internal)?.ok_or_else(|| internal("stored content is missing"))?;
    let body = object.body().ok_or_else(|| internal("stored content has no body"))?;
    Ok(builder.body(body.response_body().map_err(internal)?))
}

pub(super) fn reference_text(reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => t.clone(),
        Reference::Digest(d) => format!("sha256:{d}"),
    }
}

/// Serves a manifest if the client's Accept takes its media type.
pub(super) async fn send_manifest(ctx: &Ctx<'_>, req: &Request, reference: &Reference, sha: &str, size: u64, ct: &str, place: Option<&Place>) -> R<Response> {
    let accept: Vec<String> = req.headers().entries().filter(|(k, _)| k.eq_ignore_ascii_case("accept")).map(|(_, v)| v).collect();
    if !oci::accepts(accept.iter().map(String::as_str), ct) {
        return Err(OciError::new(
            404,
            "MANIFEST_UNKNOWN",
            format!("{} is a {ct}, which this client does not accept", reference_text(reference)),
        ));
    }
    send(ctx, req, sha, size, ct, place).await
}

/// Applies changes to the site in a new release: a draft from the active one,
/// activated on top of whatever is active when the swap runs (re-based in the
/// same transaction), so concurrent pushes to one site all land. The draft is
/// made once; should it vanish (deleted through the admin API), a new one is
/// made after a jittered, growing pause, until a deadline.
pub(super) async fn commit(ctx: &Ctx<'_>, changes: &[Change], note: &str) -> R<()> {
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
                Ok(_) => {
                    crate::worker_glue::memory::forget_routes();
                    return Ok(());
                }
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
        crate::worker_glue::service::back_off(&mut pause_ms, 2_000).await;
    }
}

pub(super) fn batch_message(e: BatchError) -> String {
    match e {
        BatchError::Precondition => "a precondition failed".into(),
        BatchError::Failed(e) => e.message,
    }
}

pub(super) fn blob_change(name: &str, hex: &str) -> Change {
    Change { path: oci::blob_path(name, hex), sha256: Some(hex.to_string()), content_type: Some("application/octet-stream".into()) }
}

/// The size of a stored blob this site holds (see `site_blobs`).
pub(super) async fn held_size(ctx: &Ctx<'_>, hex: &str) -> R<Option<u64>> {
    #[derive(Deserialize)]
    struct B {
        size: f64,
    }
    Ok(ctx.db.first::<B>(store::site_blob(ctx.site.id, hex)).await?.map(|b| b.size as u64))
}

pub(super) fn content_length_of(h: &Headers) -> Option<u64> {
    h.get("content-length").ok().flatten().and_then(|l| l.trim().parse().ok())
}

/// Every path under `prefix` in the active release (the rest of the path after
/// the prefix) with the blob it points at.
pub(super) async fn list_under(ctx: &Ctx<'_>, prefix: &str) -> R<Vec<(String, String)>> {
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
pub(super) async fn repository_exists(ctx: &Ctx<'_>, name: &str) -> R<bool> {
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
pub(super) async fn all_tags(ctx: &Ctx<'_>, name: &str) -> R<Vec<(String, String)>> {
    list_under(ctx, &oci::tags_prefix(name)).await
}

pub(super) fn gone(path: String) -> Change {
    Change { path, sha256: None, content_type: None }
}

/// Stores small bytes in hand (a manifest, a referrer descriptor) under their
/// digest; the site holds them.
pub(super) async fn store_small(ctx: &Ctx<'_>, data: Vec<u8>) -> R<String> {
    let hex = crate::auth::sha256_hex(&data);
    crate::worker_glue::store_owned_bytes(ctx.env, &ctx.db, ctx.site.id, data, &hex, ctx.now).await.map_err(internal)?;
    Ok(hex)
}

pub(super) async fn read_small(ctx: &Ctx<'_>, hex: &str) -> R<Vec<u8>> {
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let place = crate::worker_glue::blobs::locate(&ctx.db, hex).await?;
    // The whole object, or the blob's bytes within a pack (its size unknown here: the place's range is read).
    let object = match place.offset {
        None => bucket.get(&place.key),
        Some(_) => {
            #[derive(Deserialize)]
            struct B {
                size: f64,
            }
            let size = ctx.db.first::<B>(store::blob(hex)).await?.ok_or_else(|| internal("stored content is missing"))?.size as u64;
            crate::worker_glue::blobs::get(&bucket, &place, None, size)
        }
    }
    .execute().await.map_err(internal)?.ok_or_else(|| internal("stored content is missing"))?;
    object.body().ok_or_else(|| internal("no body"))?.bytes().await.map_err(internal)
}
