//! The data plane: tenant hostname + path → blob, streamed from R2.

use super::db::{Db, Start};
use super::{error_response, BUCKET_BINDING};
use crate::api::ApiError;
use crate::http::{self, Conditions, Entry, Outcome};
use super::memory::Resolved;
use crate::api::schema_error;
use crate::{path, store};
use worker::*;

fn not_found() -> Result<Response> {
    error_response(&ApiError::not_found("not found"))
}


pub async fn handle(req: Request, env: &Env, worker_ctx: &Context, host: &str) -> Result<Response> {
    if let Ok(url) = req.url() {
        if url.path() == "/v2" || url.path().starts_with("/v2/") {
            return super::oci::handle(req, env, worker_ctx, host).await;
        }
    }
    let method = req.method();
    if method != Method::Get && method != Method::Head {
        let mut r = error_response(&ApiError::new(405, "method_not_allowed", "only GET and HEAD are served here"))?;
        r.headers_mut().set("allow", "GET, HEAD")?;
        return Ok(r);
    }
    let url = req.url()?;
    let path = match path::from_request(url.path()) {
        Ok(p) => p,
        Err(e) => return error_response(&ApiError::new(400, "bad_path", e.message())),
    };
    if path.starts_with(store::INTERNAL_PREFIX) {
        return not_found();
    }
    // Reads from the nearest replica, or no earlier than the bookmark the
    // client brings (what an admin API answer gave it).
    let bookmark = req.headers().get(super::admin::BOOKMARK_HEADER)?.filter(|b| super::db::is_bookmark(b));
    let db = match Db::open(env, bookmark.as_deref().map_or(Start::Nearest, Start::After)) {
        Ok(db) => db,
        Err(e) => return error_response(&e),
    };
    let (route, found) = match super::memory::resolve(env, &db, host, &path, bookmark.is_some()).await {
        Ok(Resolved::Site(route, found)) => (route, found),
        Ok(Resolved::NoSite) => return not_found(),
        Ok(Resolved::Schema(state)) => return error_response(&schema_error(&state)),
        Err(e) => return error_response(&e),
    };
    let (Some(found), Some(activated_at)) = (found, route.activated_at) else {
        return not_found();
    };
    let entry = Entry { sha256: found.sha256.clone(), size: found.size, content_type: found.content_type.clone(), activated_at_ms: activated_at as u64 };
    let place = &found.place;
    let h = req.headers();
    let (inm, ims, im, ius, range, if_range) = (
        h.get("if-none-match")?,
        h.get("if-modified-since")?,
        h.get("if-match")?,
        h.get("if-unmodified-since")?,
        h.get("range")?,
        h.get("if-range")?,
    );
    let cond = Conditions {
        if_none_match: inm.as_deref(),
        if_modified_since: ims.as_deref(),
        if_match: im.as_deref(),
        if_unmodified_since: ius.as_deref(),
        range: range.as_deref(),
        if_range: if_range.as_deref(),
    };
    let outcome = http::evaluate(&entry, &cond);

    let headers = Headers::new();
    headers.set("etag", &http::etag(&entry.sha256))?;
    headers.set("last-modified", &http::http_date(entry.activated_at_ms))?;
    headers.set("cache-control", http::cache_control(&path))?;
    headers.set("accept-ranges", "bytes")?;
    headers.set("x-content-type-options", "nosniff")?;
    // Blobs go out byte for byte as stored. `identity` stops the local runtime
    // (and `no-transform` in Cache-Control stops Cloudflare's edge) from
    // compressing on the fly, which would break Content-Length, ranges and speed.
    headers.set("content-encoding", "identity")?;
    let builder = |status: u16| {
        ResponseBuilder::new()
            .with_status(status)
            .with_headers(headers.clone())
            .with_encode_body(EncodeBody::Manual)
    };
    let head = method == Method::Head;
    let (status, r2_range) = match outcome {
        Outcome::NotModified => return Ok(builder(304).empty()),
        Outcome::PreconditionFailed => return Ok(builder(412).empty()),
        Outcome::RangeNotSatisfiable => {
            headers.set("content-range", &format!("bytes */{}", entry.size))?;
            return Ok(builder(416).empty());
        }
        Outcome::Full => (200, None),
        Outcome::Partial { offset, length } => {
            headers.set("content-range", &format!("bytes {}-{}/{}", offset, offset + length - 1, entry.size))?;
            (206, Some((offset, length)))
        }
    };
    let length = r2_range.map_or(entry.size, |(_, l)| l);
    headers.set("content-type", &entry.content_type)?;
    headers.set("content-length", &length.to_string())?;
    if head {
        return Ok(builder(status).empty());
    }
    // Small bodies come from the isolate's memory (read from R2 once).
    match super::memory::small_body(env, &entry.sha256, place, entry.size).await {
        Ok(Some(bytes)) => {
            let (at, n) = r2_range.map_or((0, entry.size), |r| r);
            return Ok(builder(status).fixed(bytes[at as usize..(at + n) as usize].to_vec()));
        }
        Ok(None) => {}
        Err(e) => {
            console_error!("blob {} of {host}/{path}: {}", entry.sha256, e.message);
            return error_response(&e);
        }
    }
    // Whole bodies through the edge cache (a colo's copy, else R2, teed into it).
    if r2_range.is_none() {
        match super::edge::whole_body(env, worker_ctx, &entry.sha256, place, entry.size).await {
            Ok(Some(body)) => return Ok(builder(status).body(body)),
            Ok(None) => {}
            Err(e) => {
                console_error!("blob {} of {host}/{path}: {e}", entry.sha256);
                return error_response(&ApiError::internal("stored content is missing"));
            }
        }
    }
    let bucket = env.bucket(BUCKET_BINDING)?;
    let Some(object) = super::blobs::get(&bucket, place, r2_range, entry.size).execute().await? else {
        console_error!("blob {} is referenced by {host}/{path} but missing from R2", entry.sha256);
        return error_response(&ApiError::internal("stored content is missing"));
    };
    let Some(body) = object.body() else {
        return error_response(&ApiError::internal("stored content has no body"));
    };
    Ok(builder(status).body(body.response_body()?))
}
