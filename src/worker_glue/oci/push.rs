//! Pushes into the registry: blob uploads (monolithic, chunked, unsized,
//! cross-mount), manifests, deletions, and the sweep of abandoned uploads.

use crate::worker_glue::{json_response, BUCKET_BINDING};
use crate::api::Change;
use crate::oci::{self, OciError, Reference};
use crate::store::{self, oci as sql};
use serde::Deserialize;
use worker::*;
use super::context::{all_tags, batch_message, blob_change, commit, content_length_of, empty, find, gone, headers, internal, read_small, store_small, Ctx, R};

pub(super) fn created(location: String, hex: &str) -> R<Response> {
    let h = headers();
    h.set("location", &location).map_err(internal)?;
    h.set("docker-content-digest", &format!("sha256:{hex}")).map_err(internal)?;
    empty(201, h).map_err(internal)
}

pub(super) fn content_length(req: &Request) -> Option<u64> {
    content_length_of(req.headers())
}

/// A digest-checked put that failed: the client's content (400 DIGEST_INVALID)
/// or the store (500), told apart in one place ([`crate::worker_glue::blobs`]).
pub(super) fn digest_error(e: crate::worker_glue::blobs::PutError, digest: &str) -> OciError {
    match e {
        crate::worker_glue::blobs::PutError::Mismatch(m) => OciError::new(400, "DIGEST_INVALID", format!("the uploaded content does not match {digest}: {m}")),
        crate::worker_glue::blobs::PutError::Failed(m) => internal(m),
    }
}

pub(super) fn max_blob(ctx: &Ctx<'_>) -> u64 {
    ctx.env.var("MAX_BLOB_BYTES").ok().and_then(|v| v.to_string().parse().ok()).unwrap_or(crate::worker_glue::service::DEFAULT_MAX_BLOB_BYTES)
}

/// Streams a whole blob (a monolithic upload's body) into R2 under its
/// digest; R2 checks the digest as the bytes pass.
pub(super) async fn put_body(ctx: &Ctx<'_>, req: &mut Request, sha: &str) -> R<u64> {
    let Some(len) = content_length(req) else {
        return Err(OciError::new(411, "SIZE_INVALID", "a monolithic upload needs a Content-Length (or send it as a PATCH)"));
    };
    if len > max_blob(ctx) {
        return Err(OciError::new(413, "SIZE_INVALID", format!("blobs are limited to {} bytes", max_blob(ctx))));
    }
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let data = match req.inner().body() {
        Some(s) if len > 0 => Data::ReadableStream(s),
        _ => Data::Empty,
    };
    match crate::worker_glue::blobs::put_checked(&bucket, &store::blob_key(sha), sha, data).await {
        Ok(_) => Ok(len),
        Err(e) => Err(digest_error(e, &format!("sha256:{sha}"))),
    }
}

/// Part size for bodies of unknown length (R2 wants parts of one size, at least 5 MiB).
pub(super) const PART: u32 = 8 << 20;

/// A body without a Content-Length goes to R2 as a multipart upload of
/// fixed-size parts, so at most two parts are held (one uploading, one
/// filling). Returns its length and sha256 (hex), computed on the way by the
/// runtime.
pub(super) async fn put_unsized_body(ctx: &Ctx<'_>, req: &mut Request, key: &str) -> R<(u64, String)> {
    use crate::worker_glue::streams::{put_unsized, UnsizedError};
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let max = max_blob(ctx);
    match put_unsized(&bucket, key, req.inner().body(), PART, max).await {
        Ok(r) => Ok(r),
        Err(UnsizedError::TooLong) => Err(OciError::new(413, "SIZE_INVALID", format!("blobs are limited to {max} bytes"))),
        Err(UnsizedError::Failed(e)) => Err(internal(e)),
    }
}

/// Streams one chunk of an upload (a PATCH body) into R2 under `key`, and
/// returns its length and sha256 (hex), computed by the runtime's
/// DigestStream (no byte passes through wasm).
pub(super) async fn put_chunk(ctx: &Ctx<'_>, req: &mut Request, key: &str) -> R<(u64, String)> {
    let Some(len) = content_length(req) else { return put_unsized_body(ctx, req, key).await };
    if len > max_blob(ctx) {
        return Err(OciError::new(413, "SIZE_INVALID", format!("blobs are limited to {} bytes", max_blob(ctx))));
    }
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    match req.inner().body() {
        Some(body) if len > 0 => {
            let sha = crate::worker_glue::streams::put_hashing(&bucket, key, body, len).await.map_err(internal)?;
            Ok((len, sha))
        }
        _ => Ok((0, crate::auth::sha256_hex(b""))),
    }
}

/// A blob stored under its digest (checked) becomes the repository's: staged
/// until the manifest that references it brings it into a release.
pub(super) async fn adopt(ctx: &Ctx<'_>, name: &str, hex: &str, size: u64) -> R<Response> {
    let mut stmts = store::insert_owned_blob(ctx.site.id, hex, size as i64, ctx.now);
    stmts.push(sql::stage_blob(ctx.site.id, name, hex, size as i64, ctx.now));
    ctx.db.batch(stmts).await.map_err(|e| internal(batch_message(e)))?;
    created(format!("/v2/{name}/blobs/sha256:{hex}"), hex)
}

/// A blob the repository has pushed but no manifest references yet.
pub(super) async fn staged_size(ctx: &Ctx<'_>, name: &str, hex: &str) -> R<Option<u64>> {
    #[derive(Deserialize)]
    struct S {
        size: f64,
    }
    Ok(ctx.db.first::<S>(sql::staged_blob(ctx.site.id, name, hex)).await?.map(|s| s.size as u64))
}

/// The size of a blob the repository owns: in its release, or staged.
pub(super) async fn owned_blob(ctx: &Ctx<'_>, name: &str, hex: &str) -> R<Option<(u64, bool)>> {
    if let Some(f) = find(ctx, &oci::blob_path(name, hex)).await? {
        return Ok(Some((f.size, true)));
    }
    Ok(staged_size(ctx, name, hex).await?.map(|s| (s, false)))
}

pub(super) async fn start_upload(ctx: &Ctx<'_>, req: &mut Request, name: &str, query: &dyn Fn(&str) -> Option<String>) -> R<Response> {
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
        let size = put_body(ctx, req, &hex).await?;
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
pub(super) struct Upload {
    id: String,
    size: f64,
    chunks: String,
}

/// A chunk of an upload as its row records it: its offset, and its sha256
/// when computed as it arrived (rows written before that have offsets only).
#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(untagged)]
pub(super) enum Chunk {
    At(u64),
    Hashed(u64, String),
}

impl Chunk {
    fn offset(&self) -> u64 {
        match self {
            Chunk::At(o) | Chunk::Hashed(o, _) => *o,
        }
    }
}

impl Upload {
    pub(super) fn chunks(&self) -> R<Vec<Chunk>> {
        serde_json::from_str(&self.chunks).map_err(internal)
    }

    pub(super) fn offsets(&self) -> R<Vec<u64>> {
        Ok(self.chunks()?.iter().map(Chunk::offset).collect())
    }

    /// The sha256 of the whole upload when it arrived as one chunk whose
    /// digest was computed on the way.
    fn single_digest(&self) -> Option<String> {
        match self.chunks().ok()?.as_slice() {
            [Chunk::Hashed(0, sha)] => Some(sha.clone()),
            _ => None,
        }
    }
}

pub(super) fn chunk_key(id: &str, offset: u64) -> String {
    format!("uploads/{id}/{offset:020}")
}

pub(super) async fn upload_row(ctx: &Ctx<'_>, name: &str, id: &str) -> R<Upload> {
    ctx.db
        .first::<Upload>(sql::upload(id, ctx.site.id, name))
        .await
        ?
        .ok_or_else(|| OciError::new(404, "BLOB_UPLOAD_UNKNOWN", "no such upload"))
}

pub(super) fn accepted(name: &str, id: &str, size: u64) -> R<Response> {
    let h = headers();
    h.set("location", &format!("/v2/{name}/blobs/uploads/{id}")).map_err(internal)?;
    h.set("docker-upload-uuid", id).map_err(internal)?;
    h.set("range", &format!("0-{}", size.saturating_sub(1))).map_err(internal)?;
    h.set("content-length", "0").map_err(internal)?;
    empty(202, h).map_err(internal)
}

/// Stores a chunk of an upload in R2 (`uploads/<id>/<offset>`) and records it.
pub(super) async fn add_chunk(ctx: &Ctx<'_>, req: &mut Request, up: &Upload) -> R<u64> {
    let size = up.size as u64;
    let key = chunk_key(&up.id, size);
    let (len, sha) = put_chunk(ctx, req, &key).await?;
    if len == 0 {
        return Ok(size);
    }
    let mut chunks = up.chunks()?;
    chunks.push(Chunk::Hashed(size, sha));
    let changed = ctx
        .db
        .run(sql::grow_upload(&up.id, size as i64, (size + len) as i64, &serde_json::to_string(&chunks).map_err(internal)?))
        .await
        ?;
    if changed == 0 {
        return Err(OciError::new(416, "BLOB_UPLOAD_INVALID", "another chunk of this upload arrived meanwhile"));
    }
    Ok(size + len)
}

/// A chunk (one PATCH; Content-Range, when sent, must start where the upload
/// stands, else 416 with the current Range).
pub(super) async fn patch_upload(ctx: &Ctx<'_>, req: &mut Request, name: &str, id: &str) -> R<Response> {
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

pub(super) async fn upload_status(ctx: &Ctx<'_>, name: &str, id: &str) -> R<Response> {
    let up = upload_row(ctx, name, id).await?;
    let h = headers();
    h.set("location", &format!("/v2/{name}/blobs/uploads/{id}")).map_err(internal)?;
    h.set("docker-upload-uuid", id).map_err(internal)?;
    h.set("range", &format!("0-{}", (up.size as u64).saturating_sub(1))).map_err(internal)?;
    empty(204, h).map_err(internal)
}

pub(super) async fn finish_upload(ctx: &Ctx<'_>, req: &mut Request, name: &str, id: &str, query: &dyn Fn(&str) -> Option<String>) -> R<Response> {
    let mut up = upload_row(ctx, name, id).await?;
    let d = query("digest").ok_or_else(|| OciError::new(400, "DIGEST_INVALID", "the closing PUT names the digest"))?;
    let hex = oci::digest_hex(&d)?.to_string();
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    let body_len = content_length(req).unwrap_or(0);
    // The chunks are checked against the digest even when the store holds it
    // already: owning a blob takes having its bytes.
    let size = if up.size as u64 == 0 {
        // POST then PUT with the whole body: straight to its digest.
        put_body(ctx, req, &hex).await?
    } else {
        if body_len > 0 {
            add_chunk(ctx, req, &up).await?;
            up = upload_row(ctx, name, id).await?;
        }
        let total = up.size as u64;
        if let Some(sha) = up.single_digest() {
            // One chunk, hashed as it arrived: it stays where it is and
            // becomes the blob (R2 has no rename; a copy would write every
            // byte again). Another location recorded first wins, and this
            // chunk goes.
            if sha != hex {
                return Err(OciError::new(400, "DIGEST_INVALID", format!("the uploaded content has sha256:{sha}, not {d}")));
            }
            let key = chunk_key(&up.id, 0);
            if ctx.db.run(store::locate_blob(&hex, &key)).await? == 0 {
                let _ = bucket.delete(key).await;
            }
            ctx.db.run(sql::delete_upload(&up.id)).await?;
            return adopt(ctx, name, &hex, total).await;
        }
        // Concatenate the chunks in R2; R2 checks the digest as it stores it.
        let keys: Vec<String> = up.offsets()?.into_iter().map(|o| chunk_key(&up.id, o)).collect();
        crate::worker_glue::streams::concatenate(&bucket, &keys, total, &store::blob_key(&hex), &hex).await.map_err(|e| digest_error(e, &d))?;
        total
    };
    for o in up.offsets()? {
        let _ = bucket.delete(chunk_key(&up.id, o)).await;
    }
    ctx.db.run(sql::delete_upload(&up.id)).await?;
    adopt(ctx, name, &hex, size).await
}

pub(super) async fn put_manifest(ctx: &Ctx<'_>, req: &mut Request, name: &str, reference: &Reference) -> R<Response> {
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
            if let Err(e) = crate::worker_glue::helm::republish_after_push(ctx.env, &ctx.site.name, repo).await {
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

pub(super) async fn cancel_upload(ctx: &Ctx<'_>, name: &str, id: &str) -> R<Response> {
    let up = upload_row(ctx, name, id).await?;
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(internal)?;
    for o in up.offsets()? {
        let _ = bucket.delete(chunk_key(&up.id, o)).await;
    }
    ctx.db.run(sql::delete_upload(&up.id)).await?;
    empty(204, headers()).map_err(internal)
}

/// A tag goes alone; a manifest by digest goes with every tag pointing at it.
pub(super) async fn delete_manifest(ctx: &Ctx<'_>, name: &str, reference: &Reference) -> R<Response> {
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

pub(super) async fn delete_blob(ctx: &Ctx<'_>, name: &str, hex: &str) -> R<Response> {
    let (_, in_release) = owned_blob(ctx, name, hex).await?.ok_or_else(|| OciError::blob_unknown(&format!("sha256:{hex}")))?;
    ctx.db.run(sql::unstage_blob(ctx.site.id, name, hex)).await?;
    if in_release {
        commit(ctx, &[gone(oci::blob_path(name, hex))], &format!("delete blob from {name}")).await?;
    }
    empty(202, headers()).map_err(internal)
}

/// How long an unfinished upload is kept: `UPLOAD_TTL_SECONDS`, default a day.
pub(super) fn upload_ttl_ms(ctx: &Ctx<'_>) -> i64 {
    ctx.env.var("UPLOAD_TTL_SECONDS").ok().and_then(|v| v.to_string().parse::<i64>().ok()).unwrap_or(86_400) * 1000
}

/// Abandoned uploads of the site (older than the TTL) lose their chunks and
/// their row; a few at a time, whenever an upload starts.
pub(super) async fn sweep_abandoned(ctx: &Ctx<'_>) {
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
