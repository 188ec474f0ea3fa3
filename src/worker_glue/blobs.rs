//! The one blob store: every object Wharf keeps under a digest goes into R2
//! through here, with R2 checking the sha256 as the bytes pass, and every
//! caller tells a digest mismatch from any other failure the same way.

use crate::store::Place;
use worker::*;

/// Why a digest-checked put did not store the object.
#[derive(Debug)]
pub enum PutError {
    /// The bytes do not have the sha256 they were sent under (or a stream ended
    /// short of the length it announced): nothing is stored.
    Mismatch(String),
    /// R2 or the binding failed.
    Failed(String),
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::Mismatch(m) | PutError::Failed(m) => f.write_str(m),
        }
    }
}

/// R2 refuses a body whose sha256 is not the one given and says so in the
/// error's text; this is the one place that reads it.
fn classify(e: Error) -> PutError {
    let msg = e.to_string();
    let lower = msg.to_ascii_lowercase();
    if ["sha-256", "sha256", "checksum", "did not match"].iter().any(|k| lower.contains(k)) {
        PutError::Mismatch(msg)
    } else {
        PutError::Failed(msg)
    }
}

/// Stores `data` under `key`, checked against `sha256` (hex) by R2.
pub async fn put_checked(bucket: &Bucket, key: &str, sha256: &str, data: Data) -> std::result::Result<Object, PutError> {
    let digest = hex::decode(sha256).map_err(|_| PutError::Failed(format!("{sha256:?} is not a hex digest")))?;
    match bucket.put(key, data).sha256(digest).execute().await {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(PutError::Failed("R2 returned no object".into())),
        Err(e) => Err(classify(e)),
    }
}

/// Stores a blob (under its content address) from a body, bytes or a stream.
pub async fn put_blob(env: &Env, sha256: &str, data: Data) -> std::result::Result<Object, PutError> {
    let bucket = env.bucket(super::BUCKET_BINDING).map_err(|e| PutError::Failed(e.to_string()))?;
    put_checked(&bucket, &crate::store::blob_key(sha256), sha256, data).await
}

/// Where a stored blob's bytes lie in R2: the place recorded for it (a
/// registry upload kept where it was written, a pack), else `blobs/sha256/<hex>`.
pub(super) async fn locate(db: &super::db::Db, sha256: &str) -> Result<Place, crate::api::ApiError> {
    #[derive(serde::Deserialize)]
    struct L {
        r2_key: String,
        r2_offset: Option<f64>,
    }
    let row = db.first::<L>(crate::store::blob_location(sha256)).await?;
    Ok(match row {
        Some(l) => Place::of(sha256, Some(l.r2_key), l.r2_offset.map(|o| o as u64)),
        None => Place::of(sha256, None, None),
    })
}

/// A read of `range` (offset, length; None: all of it) of a blob of `size`
/// bytes at `place`: the whole object, or the blob's bytes within a pack.
pub(super) fn get<'b>(bucket: &'b Bucket, place: &Place, range: Option<(u64, u64)>, size: u64) -> GetOptionsBuilder<'b> {
    let get = bucket.get(&place.key);
    match place.r2_range(range, size) {
        Some((offset, length)) => get.range(Range::OffsetWithLength { offset, length }),
        None => get,
    }
}
