//! The pull-through mirror: a manifest or blob the site does not hold, under a
//! name an upstream takes, is fetched from the upstream (with its token flow),
//! checked against its digest, kept in R2 and recorded in the site's cache.

use super::context::{batch_message, content_length_of, headers, held_size, internal, reference_text, send, send_manifest, store_small, Ctx, R};
use crate::oci::mirror::{self as m, Upstream};
use crate::worker_glue::upstream::Remote;
use crate::lookup::Mirrored;
use crate::oci::{self, OciError, Reference};
use crate::worker_glue::memory;
use crate::store::{self, oci as sql};
use serde::Deserialize;
use worker::*;

/// A repository of an upstream.
struct Target<'a> {
    up: &'a Upstream,
    repo: String,
}

/// A mirror record as D1 holds it.
#[derive(Deserialize)]
struct Row {
    sha256: Option<String>,
    size: Option<f64>,
    content_type: Option<String>,
    checked_at: f64,
    r2_key: Option<String>,
    r2_offset: Option<f64>,
}

/// What the mirror holds for a reference: digest, size, type and where the
/// bytes lie in R2.
#[derive(Clone)]
struct Content {
    sha256: String,
    size: u64,
    content_type: String,
    place: store::Place,
}

fn content(c: &Mirrored) -> Option<Content> {
    let sha256 = c.sha256.clone()?;
    Some(Content {
        place: store::Place::of(&sha256, c.r2_key.clone(), c.r2_offset),
        size: c.size?,
        content_type: c.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
        sha256,
    })
}

fn memory_key(upstream: &str, repo: &str, kind: &str, reference: &str) -> String {
    format!("{upstream}\0{repo}\0{kind}\0{reference}")
}

/// The site's record for a reference: from the isolate's memory within its
/// window (not when the client brought a bookmark), else from D1.
async fn cached(ctx: &Ctx<'_>, t: &Target<'_>, kind: &str, reference: &str) -> R<Option<std::rc::Rc<Mirrored>>> {
    let key = memory_key(t.up.key(), &t.repo, kind, reference);
    if !ctx.latest {
        if let Some(m) = memory::mirrored(ctx.env, ctx.site.id, &key) {
            return Ok(Some(m));
        }
    }
    let Some(row) = ctx.db.first::<Row>(sql::cached(ctx.site.id, t.up.key(), &t.repo, kind, reference)).await? else { return Ok(None) };
    let record = Mirrored {
        sha256: row.sha256,
        size: row.size.map(|s| s as u64),
        content_type: row.content_type,
        checked_at: row.checked_at as i64,
        r2_key: row.r2_key,
        r2_offset: row.r2_offset.map(|o| o as u64),
    };
    Ok(Some(memory::remember_mirrored(ctx.env, ctx.site.id, &key, record)))
}

async fn remember(ctx: &Ctx<'_>, t: &Target<'_>, kind: &str, reference: &str, content: Option<(&str, u64, &str)>) -> R<()> {
    let (sha, size, ct) = match content {
        Some((s, n, c)) => (Some(s), Some(n as i64), Some(c)),
        None => (None, None, None),
    };
    ctx.db.run(sql::cache(ctx.site.id, t.up.key(), &t.repo, kind, reference, sha, size, ct, ctx.now)).await?;
    // Read again from D1 next time (with where the bytes lie).
    memory::forget_mirrored(ctx.env, ctx.site.id, &memory_key(t.up.key(), &t.repo, kind, reference));
    Ok(())
}

fn remote<'a>(ctx: &Ctx<'a>, t: &Target<'a>) -> Remote<'a> {
    Remote { env: ctx.env, site_id: ctx.site.id, up: t.up, repo: t.repo.clone(), now: ctx.now }
}

fn unavailable(t: &Target<'_>, what: String) -> OciError {
    crate::worker_glue::upstream::unavailable(t.up, &t.repo, what)
}

fn upstream_error(t: &Target<'_>, status: u16) -> OciError {
    crate::worker_glue::upstream::status_error(t.up, &t.repo, status)
}

/// One request to the upstream for the target repository.
async fn call(ctx: &Ctx<'_>, t: &Target<'_>, method: Method, suffix: &str, accept: Option<&str>) -> R<Response> {
    remote(ctx, t).call(method, suffix, accept).await
}

/// A manifest the site does not hold: from the mirror cache, else upstream.
/// None: no upstream takes this name.
pub(super) async fn manifest(ctx: &Ctx<'_>, req: &Request, name: &str, reference: &Reference) -> R<Option<Response>> {
    let Some((up, repo)) = m::resolve(&ctx.cfg.upstreams, name) else { return Ok(None) };
    let t = Target { up, repo };
    let (kind, r) = match reference {
        Reference::Tag(tag) => ("tag", tag.clone()),
        Reference::Digest(d) => ("manifest", d.clone()),
    };
    let unknown = || OciError::manifest_unknown(&reference_text(reference));
    let entry = cached(ctx, &t, kind, &r).await?;
    let stale = entry.as_deref().and_then(content);
    let serve = |c: Content| async move { send_manifest(ctx, req, reference, &c.sha256, c.size, &c.content_type, Some(&c.place)).await.map(Some) };
    let seen = entry.as_ref().map(|e| m::Entry { has_content: e.sha256.is_some(), checked_at: e.checked_at });
    match m::before_asking(kind == "manifest", seen, ctx.now, ctx.cfg.tag_ttl_seconds, ctx.cfg.not_found_ttl_seconds) {
        m::Before::Serve => return serve(stale.clone().ok_or_else(|| internal("a cached manifest without content"))?).await,
        m::Before::NotFound => return Err(unknown()),
        m::Before::Ask => {}
    }
    let accept = oci::accept_all();
    let path = format!("manifests/{}", if kind == "tag" { r.clone() } else { format!("sha256:{r}") });
    // A tag is asked with HEAD first: when the manifest it points at is
    // cached (unchanged, or seen under another tag or by digest), no manifest
    // is pulled, which is what registries' pull quotas count.
    if kind == "tag" {
        let head = call(ctx, &t, Method::Head, &path, Some(&accept)).await.ok();
        match m::after_answer(head.as_ref().map(|h| h.status_code()), stale.is_some()) {
            m::After::Use => {
                let digest = head.as_ref().and_then(|h| h.headers().get("docker-content-digest").ok().flatten());
                let known = match digest.as_deref().map(oci::digest_hex) {
                    Some(Ok(d)) if stale.as_ref().map_or(false, |c| c.sha256 == d) => stale.clone(),
                    Some(Ok(d)) => cached(ctx, &t, "manifest", d).await?.as_deref().and_then(content),
                    _ => None,
                };
                if let Some(c) = known {
                    remember(ctx, &t, kind, &r, Some((&c.sha256, c.size, &c.content_type))).await?;
                    return serve(c).await;
                }
            }
            m::After::NotFound => {
                remember(ctx, &t, kind, &r, None).await?;
                return Err(unknown());
            }
            m::After::ServeStale => return serve(stale.clone().ok_or_else(|| internal("no stale manifest"))?).await,
            // Not cached: the GET below says what the upstream has to say.
            m::After::Fail => {}
        }
    }
    let got = call(ctx, &t, Method::Get, &path, Some(&accept)).await;
    let status = got.as_ref().ok().map(|r| r.status_code());
    let mut resp = match (m::after_answer(status, stale.is_some()), got) {
        (m::After::Use, Ok(resp)) => resp,
        (m::After::NotFound, _) => {
            remember(ctx, &t, kind, &r, None).await?;
            return Err(unknown());
        }
        (m::After::ServeStale, _) => return serve(stale.clone().ok_or_else(|| internal("no stale manifest"))?).await,
        (_, Err(e)) => return Err(e),
        (_, Ok(resp)) => return Err(upstream_error(&t, resp.status_code())),
    };
    let ct = resp.headers().get("content-type").ok().flatten().unwrap_or_default();
    let ct = ct.split(';').next().unwrap_or("").trim().to_string();
    if !oci::MANIFEST_TYPES.contains(&ct.as_str()) {
        return Err(unavailable(&t, format!("the manifest's media type {ct:?} is not one Wharf serves")));
    }
    if content_length_of(resp.headers()).map_or(false, |l| l as usize > oci::MAX_MANIFEST) {
        return Err(unavailable(&t, "the manifest is larger than 4 MiB".into()));
    }
    let body = resp.bytes().await.map_err(|e| unavailable(&t, e.to_string()))?;
    let hex = crate::auth::sha256_hex(&body);
    let claimed = resp.headers().get("docker-content-digest").ok().flatten();
    let expected = if kind == "manifest" { Some(format!("sha256:{r}")) } else { claimed };
    if expected.as_deref().map_or(false, |d| d != format!("sha256:{hex}")) {
        return Err(OciError::new(
            502,
            "UNKNOWN",
            format!("upstream {} sent a manifest whose digest is sha256:{hex}, not {}; not cached", t.up.base(), expected.unwrap_or_default()),
        ));
    }
    let size = body.len() as u64;
    store_small(ctx, body).await?;
    remember(ctx, &t, "manifest", &hex, Some((&hex, size, &ct))).await?;
    if kind == "tag" {
        remember(ctx, &t, "tag", &r, Some((&hex, size, &ct))).await?;
    }
    send_manifest(ctx, req, reference, &hex, size, &ct, None).await.map(Some)
}

/// A blob the site does not hold: from the mirror cache, else streamed from
/// the upstream to the client while R2 stores a copy (checked against the
/// digest; a mismatch is never cached). None: no upstream takes this name.
pub(super) async fn blob(ctx: &Ctx<'_>, req: &Request, name: &str, hex: &str) -> R<Option<Response>> {
    let Some((up, repo)) = m::resolve(&ctx.cfg.upstreams, name) else { return Ok(None) };
    let t = Target { up, repo };
    let unknown = || OciError::blob_unknown(&format!("sha256:{hex}"));
    let entry = cached(ctx, &t, "blob", hex).await?;
    if let Some(c) = entry.as_deref().and_then(content) {
        return send(ctx, req, &c.sha256, c.size, "application/octet-stream", Some(&c.place)).await.map(Some);
    }
    if entry.as_ref().map_or(false, |e| m::fresh(e.checked_at, ctx.now, ctx.cfg.not_found_ttl_seconds)) {
        return Err(unknown());
    }
    let path = format!("blobs/sha256:{hex}");
    // Held by this site already (pushed, or fetched for another repository or
    // upstream): the upstream only has to confirm this repository has it. A
    // blob only another site holds is never adopted on an upstream's word:
    // it is downloaded (and checked) like any other, and a HEAD answers with
    // what the upstream said, nothing from the store.
    let known = held_size(ctx, hex).await?;
    if known.is_some() || req.method() == Method::Head {
        let h = call(ctx, &t, Method::Head, &path, None).await?;
        return match h.status_code() {
            200 => match known {
                Some(size) => {
                    remember(ctx, &t, "blob", hex, Some((hex, size, "application/octet-stream"))).await?;
                    send(ctx, req, hex, size, "application/octet-stream", None).await.map(Some)
                }
                None => {
                    let size = content_length_of(h.headers()).ok_or_else(|| unavailable(&t, "HEAD without Content-Length".into()))?;
                    blob_headers(hex, size).map(|hd| Some(ResponseBuilder::new().with_status(200).with_headers(hd).empty()))
                }
            },
            404 => {
                remember(ctx, &t, "blob", hex, None).await?;
                Err(unknown())
            }
            s => Err(upstream_error(&t, s)),
        };
    }
    let resp = call(ctx, &t, Method::Get, &path, None).await?;
    match resp.status_code() {
        200 => {}
        404 => {
            remember(ctx, &t, "blob", hex, None).await?;
            return Err(unknown());
        }
        s => return Err(upstream_error(&t, s)),
    }
    let size = content_length_of(resp.headers());
    let ResponseBody::Stream(body) = resp.body() else { return Err(unavailable(&t, "the blob has no body".into())) };
    let body = body.clone();
    let Some(size) = size else {
        // Without a length R2 cannot take it as a stream; pass it on uncached.
        let hd = blob_headers(hex, 0)?;
        let _ = hd.delete("content-length");
        return Ok(Some(ResponseBuilder::new().with_status(200).with_headers(hd).with_encode_body(EncodeBody::Manual).stream(body)));
    };
    let client = crate::worker_glue::streams::fixed(size).map_err(internal)?;
    let job = keep(ctx.env.clone(), ctx.site.id, t.up.key().to_string(), t.repo.clone(), hex.to_string(), size, body, client.writable, ctx.now);
    ctx.worker.wait_until(job);
    Ok(Some(
        ResponseBuilder::new().with_status(200).with_headers(blob_headers(hex, size)?).with_encode_body(EncodeBody::Manual).stream(client.readable),
    ))
}

fn blob_headers(hex: &str, size: u64) -> R<Headers> {
    let h = headers();
    let set = |k: &str, v: &str| h.set(k, v).map_err(internal);
    set("docker-content-digest", &format!("sha256:{hex}"))?;
    set("content-type", "application/octet-stream")?;
    set("content-length", &size.to_string())?;
    set("content-encoding", "identity")?;
    Ok(h)
}

/// Streams a mirrored blob from the upstream to the client and, in the same
/// pass, to R2 (which checks the digest), then records it in the site's cache.
/// Runs after the response is returned (`waitUntil`); the client going away
/// does not stop the copy to R2.
#[allow(clippy::too_many_arguments)]
async fn keep(
    env: Env,
    site: i64,
    upstream: String,
    repo: String,
    hex: String,
    size: u64,
    body: web_sys::ReadableStream,
    client: web_sys::WritableStream,
    now: i64,
) {
    let result: Result<()> = async {
        let bucket = env.bucket(crate::worker_glue::BUCKET_BINDING)?;
        let store = crate::worker_glue::streams::fixed(size)?;
        let key = store::blob_key(&hex);
        let put = crate::worker_glue::blobs::put_checked(&bucket, &key, &hex, Data::ReadableStream(store.readable));
        let copy = crate::worker_glue::streams::copy_to_both(body, &client, &store.writable);
        let (stored, (_to_client, to_store)) = futures_util::future::join(put, copy).await;
        to_store?;
        stored.map_err(|e| Error::RustError(e.to_string()))?;
        let db = crate::worker_glue::db::Db::open(&env, crate::worker_glue::db::Start::Primary).map_err(|e| Error::RustError(e.message))?;
        let mut stmts = store::insert_owned_blob(site, &hex, size as i64, now);
        stmts.push(sql::cache(site, &upstream, &repo, "blob", &hex, Some(&hex), Some(size as i64), Some("application/octet-stream"), now));
        db.batch(stmts).await.map_err(|e| Error::RustError(batch_message(e)))?;
        memory::forget_mirrored(&env, site, &memory_key(&upstream, &repo, "blob", &hex));
        Ok(())
    }
    .await;
    if let Err(e) = result {
        console_warn!("mirror: sha256:{hex} from {upstream}/{repo} was not cached: {e}");
    }
}

/// Tags of a mirrored repository: the upstream's list (not cached), under the
/// site's name for it.
pub(super) async fn tags(ctx: &Ctx<'_>, name: &str, query: &dyn Fn(&str) -> Option<String>) -> R<Option<Response>> {
    let Some((up, repo)) = m::resolve(&ctx.cfg.upstreams, name) else { return Ok(None) };
    let t = Target { up, repo };
    let mut suffix = "tags/list".to_string();
    let params: Vec<String> = ["n", "last"]
        .iter()
        .filter_map(|k| query(k).map(|v| format!("{k}={}", crate::path::percent_encode_component(&v))))
        .collect();
    if !params.is_empty() {
        suffix = format!("{suffix}?{}", params.join("&"));
    }
    let mut resp = call(ctx, &t, Method::Get, &suffix, None).await?;
    match resp.status_code() {
        200 => {}
        404 => return Err(OciError::name_unknown(name)),
        s => return Err(upstream_error(&t, s)),
    }
    #[derive(Deserialize)]
    struct List {
        tags: Option<Vec<String>>,
    }
    let list: List = resp.json().await.map_err(|e| unavailable(&t, e.to_string()))?;
    let tags = list.tags.unwrap_or_default();
    let mut r = crate::worker_glue::json_response(200, &serde_json::json!({"name": name, "tags": tags})).map_err(internal)?;
    if resp.headers().get("link").ok().flatten().is_some() {
        if let (Some(n), Some(l)) = (query("n"), tags.last()) {
            r.headers_mut().set("link", &format!("</v2/{name}/tags/list?n={n}&last={l}>; rel=\"next\"")).map_err(internal)?;
        }
    }
    Ok(Some(r))
}
