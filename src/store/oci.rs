//! SQL of the OCI registry.

use super::{stmt, Stmt};

pub fn create_upload(id: &str, site_id: i64, name: &str, now: i64) -> Stmt {
    stmt(
        "INSERT INTO oci_uploads(id, site_id, name, size, created_at) VALUES (?1, ?2, ?3, 0, ?4)",
        vec![id.into(), site_id.into(), name.into(), now.into()],
    )
}

/// Columns: id, size, chunks.
pub fn upload(id: &str, site_id: i64, name: &str) -> Stmt {
    stmt("SELECT id, size, chunks FROM oci_uploads WHERE id = ?1 AND site_id = ?2 AND name = ?3", vec![id.into(), site_id.into(), name.into()])
}

/// Records a chunk received, only if the upload still has `from` bytes (a
/// concurrent PATCH of the same upload loses).
pub fn grow_upload(id: &str, from: i64, to: i64, chunks: &str) -> Stmt {
    stmt(
        "UPDATE oci_uploads SET size = ?3, chunks = ?4 WHERE id = ?1 AND size = ?2",
        vec![id.into(), from.into(), to.into(), chunks.into()],
    )
}

pub fn delete_upload(id: &str) -> Stmt {
    stmt("DELETE FROM oci_uploads WHERE id = ?1", vec![id.into()])
}

pub fn settings(site_id: i64) -> Stmt {
    stmt("SELECT config FROM oci_settings WHERE site_id = ?1", vec![site_id.into()])
}

pub fn put_settings(site_id: i64, config: &str) -> Stmt {
    stmt(
        "INSERT INTO oci_settings(site_id, config) VALUES (?1, ?2) ON CONFLICT(site_id) DO UPDATE SET config = excluded.config",
        vec![site_id.into(), config.into()],
    )
}

/// Uploads of a site left unfinished since before `before` (ms). Columns: id, size, chunks.
pub fn stale_uploads(site_id: i64, before: i64, limit: u32) -> Stmt {
    stmt(
        "SELECT id, size, chunks FROM oci_uploads WHERE site_id = ?1 AND created_at < ?2 ORDER BY created_at LIMIT ?3",
        vec![site_id.into(), before.into(), (limit as i64).into()],
    )
}

/// A blob pushed to a repository, owned by the site until a manifest brings
/// it into a release (or it is swept).
pub fn stage_blob(site_id: i64, name: &str, sha256: &str, size: i64, now: i64) -> Stmt {
    stmt(
        "INSERT INTO oci_staged_blobs(site_id, name, sha256, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(site_id, name, sha256) DO UPDATE SET created_at = excluded.created_at",
        vec![site_id.into(), name.into(), sha256.into(), size.into(), now.into()],
    )
}

/// Columns: size.
pub fn staged_blob(site_id: i64, name: &str, sha256: &str) -> Stmt {
    stmt(
        "SELECT size FROM oci_staged_blobs WHERE site_id = ?1 AND name = ?2 AND sha256 = ?3",
        vec![site_id.into(), name.into(), sha256.into()],
    )
}

pub fn unstage_blob(site_id: i64, name: &str, sha256: &str) -> Stmt {
    stmt(
        "DELETE FROM oci_staged_blobs WHERE site_id = ?1 AND name = ?2 AND sha256 = ?3",
        vec![site_id.into(), name.into(), sha256.into()],
    )
}

/// Forgets staged blobs no manifest took up since before `before` (ms).
pub fn sweep_staged_blobs(site_id: i64, before: i64) -> Stmt {
    stmt("DELETE FROM oci_staged_blobs WHERE site_id = ?1 AND created_at < ?2", vec![site_id.into(), before.into()])
}

/// One entry of a site's mirror cache. Columns: sha256, size, content_type, checked_at.
pub fn cached(site_id: i64, upstream: &str, repository: &str, kind: &str, reference: &str) -> Stmt {
    stmt(
        "SELECT c.sha256, c.size, c.content_type, c.checked_at, l.r2_key, l.r2_offset FROM oci_cache c \
         LEFT JOIN blob_places l ON l.sha256 = c.sha256 \
         WHERE c.site_id = ?1 AND c.upstream = ?2 AND c.repository = ?3 AND c.kind = ?4 AND c.reference = ?5",
        vec![site_id.into(), upstream.into(), repository.into(), kind.into(), reference.into()],
    )
}

/// Records what the upstream answered (`sha256` None: it said 404).
#[allow(clippy::too_many_arguments)]
pub fn cache(
    site_id: i64,
    upstream: &str,
    repository: &str,
    kind: &str,
    reference: &str,
    sha256: Option<&str>,
    size: Option<i64>,
    content_type: Option<&str>,
    now: i64,
) -> Stmt {
    stmt(
        "INSERT INTO oci_cache(site_id, upstream, repository, kind, reference, sha256, size, content_type, checked_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT(site_id, upstream, repository, kind, reference) DO UPDATE SET \
         sha256 = excluded.sha256, size = excluded.size, content_type = excluded.content_type, checked_at = excluded.checked_at",
        vec![
            site_id.into(),
            upstream.into(),
            repository.into(),
            kind.into(),
            reference.into(),
            sha256.map(str::to_string).into(),
            size.into(),
            content_type.map(str::to_string).into(),
            now.into(),
        ],
    )
}

/// A page of a site's mirror cache, in key order after `after` (the key's
/// parts joined by NUL). Columns: upstream, repository, kind, reference,
/// sha256, size, content_type, checked_at.
pub fn cache_page(site_id: i64, upstream: Option<&str>, repository: Option<&str>, after: &[String; 4], limit: u32) -> Stmt {
    stmt(
        "SELECT upstream, repository, kind, reference, sha256, size, content_type, checked_at FROM oci_cache \
         WHERE site_id = ?1 AND (?2 IS NULL OR upstream = ?2) AND (?3 IS NULL OR repository = ?3) \
         AND (upstream, repository, kind, reference) > (?4, ?5, ?6, ?7) \
         ORDER BY upstream, repository, kind, reference LIMIT ?8",
        vec![
            site_id.into(),
            upstream.map(str::to_string).into(),
            repository.map(str::to_string).into(),
            after[0].clone().into(),
            after[1].clone().into(),
            after[2].clone().into(),
            after[3].clone().into(),
            (limit as i64).into(),
        ],
    )
}

/// Forgets a site's mirror cache (all of it, one upstream, or one repository).
pub fn purge_cache(site_id: i64, upstream: Option<&str>, repository: Option<&str>) -> Stmt {
    stmt(
        "DELETE FROM oci_cache WHERE site_id = ?1 AND (?2 IS NULL OR upstream = ?2) AND (?3 IS NULL OR repository = ?3)",
        vec![site_id.into(), upstream.map(str::to_string).into(), repository.map(str::to_string).into()],
    )
}
