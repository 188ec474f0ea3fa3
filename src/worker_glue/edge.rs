//! The edge cache (the Workers Cache API, `caches.default`) in front of R2
//! for whole blob bodies: keyed by content digest under a hostname no client
//! can send, so a hit is reachable only after a path of the requesting site
//! resolved to that digest. In production each Cloudflare colo keeps its own
//! copies, so repeated downloads near users stop reading R2; locally it is
//! workerd's cache simulation. `EDGE_CACHE=off` turns it off;
//! `EDGE_CACHE_MAX_BYTES` (default 512 MiB, the largest object most plans'
//! caches keep) bounds what is put.

use super::BUCKET_BINDING;
use worker::*;

/// The key host: a reserved name (RFC 2606) that no request reaches the worker with.
const KEY_HOST: &str = "blob-cache.wharf.invalid";

fn enabled(env: &Env, size: u64) -> bool {
    let limits = super::memory::limits(env);
    limits.edge_cache && size <= limits.edge_max
}

/// The whole body of blob `sha256` (`size` bytes, at `place` in R2), as a stream: from the edge
/// cache, else from R2 — teed, one branch to the client, one into the cache
/// after the response (`waitUntil`). None when the edge cache is off or the
/// blob too large for it (the caller reads R2 itself); an error when R2 has
/// no such blob.
pub(super) async fn whole_body(env: &Env, worker: &Context, sha256: &str, place: &crate::store::Place, size: u64) -> Result<Option<ResponseBody>> {
    if !enabled(env, size) {
        return Ok(None);
    }
    let key = format!("https://{KEY_HOST}/sha256/{sha256}");
    let cache = Cache::default();
    // A cache failure is never the client's problem: R2 answers instead.
    if let Ok(Some(hit)) = cache.get(key.as_str(), false).await {
        let (_, body) = hit.into_parts();
        if let ResponseBody::Stream(_) = body {
            return Ok(Some(body));
        }
    }
    let missing = || Error::RustError(format!("blob {sha256} is missing from R2"));
    let bucket = env.bucket(BUCKET_BINDING)?;
    let object = super::blobs::get(&bucket, place, None, size).execute().await?.ok_or_else(missing)?;
    let body = object.body().ok_or_else(missing)?;
    let headers = Headers::new();
    headers.set("content-length", &size.to_string())?;
    headers.set("cache-control", "public, max-age=31536000, immutable")?;
    let mut to_client = ResponseBuilder::new().with_headers(headers).with_encode_body(EncodeBody::Manual).body(body.response_body()?);
    let to_cache = to_client.cloned()?;
    worker.wait_until(async move {
        if let Err(e) = Cache::default().put(key.as_str(), to_cache).await {
            console_warn!("edge cache: {key} was not stored: {e}");
        }
    });
    Ok(Some(to_client.into_parts().1))
}
