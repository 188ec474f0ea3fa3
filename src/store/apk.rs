//! SQL of the APK indexer.

use super::{stmt, Stmt, Val};

/// Release-map path recording that a package belongs to a branch/repository:
/// `_wharf/apk/<branch>/<repository>/<arch>/<file>` → the .apk's blob.
pub fn member_path(branch: &str, repo: &str, arch: &str, filename: &str) -> String {
    format!("{}apk/{branch}/{repo}/{arch}/{filename}", super::INTERNAL_PREFIX)
}

pub fn member_prefix(branch: &str, repo: &str) -> String {
    format!("{}apk/{branch}/{repo}/", super::INTERNAL_PREFIX)
}

#[allow(clippy::too_many_arguments)]
pub fn insert_package(sha256: &str, name: &str, version: &str, arch: &str, identity: &str, record: &str, pkginfo: &str, now: i64) -> Stmt {
    stmt(
        "INSERT INTO apk_packages(sha256, name, version, arch, identity, record, pkginfo, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(sha256) DO NOTHING",
        vec![sha256.into(), name.into(), version.into(), arch.into(), identity.into(), record.into(), pkginfo.into(), now.into()],
    )
}

/// Members of a branch/repository in a release, one page at a time (paths
/// after `after`, in no particular order). Columns: path, sha256, size, name,
/// version, arch, identity, record.
pub fn members(site_id: i64, read_seq: i64, release_id: i64, prefix: &str, after: &str, limit: u32) -> Stmt {
    let inner = super::list_prefix(site_id, read_seq, release_id, prefix, after, limit);
    stmt(
        format!(
            "SELECT m.path AS path, m.sha256 AS sha256, m.size AS size, p.name AS name, p.version AS version, \
                    p.arch AS arch, p.identity AS identity, p.record AS record \
             FROM ({}) m JOIN apk_packages p ON p.sha256 = m.sha256",
            inner.sql
        ),
        inner.params,
    )
}

pub fn settings(site_id: i64) -> Stmt {
    stmt("SELECT config FROM apk_settings WHERE site_id = ?1", vec![site_id.into()])
}

pub fn put_settings(site_id: i64, config: &str) -> Stmt {
    stmt(
        "INSERT INTO apk_settings(site_id, config) VALUES (?1, ?2) ON CONFLICT(site_id) DO UPDATE SET config = excluded.config",
        vec![site_id.into(), config.into()],
    )
}

pub fn public_key(site_id: i64) -> Stmt {
    stmt("SELECT public_key FROM apk_keys WHERE site_id = ?1", vec![site_id.into()])
}

pub fn put_public_key(site_id: i64, pem: &str, now: i64) -> Stmt {
    stmt(
        "INSERT INTO apk_keys(site_id, public_key, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(site_id) DO UPDATE SET public_key = excluded.public_key, created_at = excluded.created_at",
        vec![site_id.into(), pem.into(), now.into()],
    )
}

pub fn mark_dirty(release_id: i64, branch: &str, repo: &str, arch: &str) -> Stmt {
    stmt(
        "INSERT INTO apk_dirty(release_id, branch, repository, arch) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        vec![release_id.into(), branch.into(), repo.into(), arch.into()],
    )
}

/// Columns: branch, repository, arch.
pub fn dirty(release_id: i64) -> Stmt {
    stmt("SELECT branch, repository, arch FROM apk_dirty WHERE release_id = ?1 ORDER BY branch, repository, arch", vec![release_id.into()])
}

pub fn clear_dirty(release_id: i64, branch: &str, repo: &str) -> Stmt {
    stmt(
        "DELETE FROM apk_dirty WHERE release_id = ?1 AND branch = ?2 AND repository = ?3",
        vec![release_id.into(), branch.into(), repo.into()],
    )
}

pub fn set_pending(release_id: i64, branch: &str, repo: &str, arch: &str, stream_sha256: Option<&str>) -> Stmt {
    match stream_sha256 {
        Some(sha) => stmt(
            "INSERT INTO apk_pending_signatures(release_id, branch, repository, arch, stream_sha256) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(release_id, branch, repository, arch) DO UPDATE SET stream_sha256 = excluded.stream_sha256",
            vec![release_id.into(), branch.into(), repo.into(), arch.into(), sha.into()],
        ),
        None => stmt(
            "DELETE FROM apk_pending_signatures WHERE release_id = ?1 AND branch = ?2 AND repository = ?3 AND arch = ?4",
            vec![release_id.into(), branch.into(), repo.into(), arch.into()],
        ),
    }
}

/// Columns: branch, repository, arch, stream_sha256.
pub fn pending(release_id: i64) -> Stmt {
    stmt(
        "SELECT branch, repository, arch, stream_sha256 FROM apk_pending_signatures WHERE release_id = ?1 ORDER BY branch, repository, arch",
        vec![release_id.into()],
    )
}

/// Guard: the index still waits for a signature over exactly this stream.
pub fn pending_is(release_id: i64, branch: &str, repo: &str, arch: &str, stream_sha256: &str) -> Stmt {
    super::guard(
        "EXISTS (SELECT 1 FROM apk_pending_signatures WHERE release_id = ?1 AND branch = ?2 AND repository = ?3 AND arch = ?4 \
         AND stream_sha256 = ?5)",
        vec![Val::Int(release_id), branch.into(), repo.into(), arch.into(), stream_sha256.into()],
    )
}
