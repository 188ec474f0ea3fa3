//! SQL of the Debian indexer.

use super::{stmt, Stmt, Val};

/// Release-map path recording that a package belongs to a dist and component:
/// `_wharf/deb/<dist>/<component>/<file>` → the .deb's blob.
pub fn member_path(dist: &str, component: &str, filename: &str) -> String {
    format!("{}deb/{dist}/{component}/{filename}", super::INTERNAL_PREFIX)
}

pub fn member_prefix(dist: &str, component: Option<&str>) -> String {
    match component {
        Some(c) => format!("{}deb/{dist}/{c}/", super::INTERNAL_PREFIX),
        None => format!("{}deb/{dist}/", super::INTERNAL_PREFIX),
    }
}

pub fn insert_package(sha256: &str, package: &str, version: &str, arch: &str, source: &str, control: &str, now: i64) -> Stmt {
    stmt(
        "INSERT INTO deb_packages(sha256, package, version, architecture, source, control, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(sha256) DO NOTHING",
        vec![sha256.into(), package.into(), version.into(), arch.into(), source.into(), control.into(), now.into()],
    )
}

/// Members of a dist (or one component) in a release, with their control data,
/// one page at a time: the page holds the next `limit` paths after `after`, in
/// no particular order (sorting 10,000 control texts in SQL doubled the query's
/// time); the next page starts after the page's greatest path.
/// Columns: path, sha256, size, package, version, architecture, source, control.
pub fn members(site_id: i64, read_seq: i64, release_id: i64, prefix: &str, after: &str, limit: u32) -> Stmt {
    let inner = super::list_prefix(site_id, read_seq, release_id, prefix, after, limit);
    stmt(
        format!(
            "SELECT m.path AS path, m.sha256 AS sha256, m.size AS size, p.package AS package, p.version AS version, \
                    p.architecture AS architecture, p.source AS source, p.control AS control \
             FROM ({}) m JOIN deb_packages p ON p.sha256 = m.sha256",
            inner.sql
        ),
        inner.params,
    )
}

/// How many other members of a release (in any dist) are the same file of the
/// same component, so share its pool path. Columns: n.
pub fn pool_sharers(site_id: i64, read_seq: i64, release_id: i64, member: &str, component: &str, filename: &str, sha256: &str) -> Stmt {
    let prefix = format!("{}deb/", super::INTERNAL_PREFIX);
    let suffix = format!("/{component}/{filename}");
    let mut params: Vec<Val> = vec![site_id.into(), read_seq.into(), release_id.into()];
    params.extend([prefix.as_str().into(), super::prefix_end(&prefix).into(), suffix.as_str().into(), member.into(), sha256.into()]);
    stmt(
        format!(
            "SELECT COUNT(*) AS n FROM ({}) WHERE path >= ?4 AND path < ?5 AND substr(path, -length(?6)) = ?6 \
             AND path <> ?7 AND sha256 = ?8",
            super::contents_subquery("?1", "?2", "?3")
        ),
        params,
    )
}

/// Columns: source.
pub fn package_source(sha256: &str) -> Stmt {
    stmt("SELECT source FROM deb_packages WHERE sha256 = ?1", vec![sha256.into()])
}

pub fn dist_config(site_id: i64, dist: &str) -> Stmt {
    stmt("SELECT config FROM deb_dists WHERE site_id = ?1 AND dist = ?2", vec![site_id.into(), dist.into()])
}

pub fn put_dist_config(site_id: i64, dist: &str, config: &str) -> Stmt {
    stmt(
        "INSERT INTO deb_dists(site_id, dist, config) VALUES (?1, ?2, ?3) \
         ON CONFLICT(site_id, dist) DO UPDATE SET config = excluded.config",
        vec![site_id.into(), dist.into(), config.into()],
    )
}

pub fn mark_dirty(release_id: i64, dist: &str, component: &str, arch: &str) -> Stmt {
    stmt(
        "INSERT INTO deb_dirty(release_id, dist, component, architecture) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        vec![release_id.into(), dist.into(), component.into(), arch.into()],
    )
}

/// Columns: dist, component, architecture.
pub fn dirty(release_id: i64) -> Stmt {
    stmt(
        "SELECT dist, component, architecture FROM deb_dirty WHERE release_id = ?1 ORDER BY dist, component, architecture",
        vec![release_id.into()],
    )
}

pub fn clear_dirty(release_id: i64, dist: &str) -> Stmt {
    stmt("DELETE FROM deb_dirty WHERE release_id = ?1 AND dist = ?2", vec![release_id.into(), dist.into()])
}

/// The by-hash ledger of a dist as of a release. Columns: ledger.
pub fn ledger(release_id: i64, dist: &str) -> Stmt {
    stmt("SELECT ledger FROM deb_ledgers WHERE release_id = ?1 AND dist = ?2", vec![release_id.into(), dist.into()])
}

pub fn put_ledger(release_id: i64, dist: &str, ledger: &str) -> Stmt {
    stmt(
        "INSERT INTO deb_ledgers(release_id, dist, ledger) VALUES (?1, ?2, ?3) \
         ON CONFLICT(release_id, dist) DO UPDATE SET ledger = excluded.ledger",
        vec![release_id.into(), dist.into(), ledger.into()],
    )
}

pub fn public_key(site_id: i64) -> Stmt {
    stmt("SELECT public_key, fingerprint FROM deb_keys WHERE site_id = ?1", vec![site_id.into()])
}

pub fn put_public_key(site_id: i64, key_hex: &str, fingerprint: &str, now: i64) -> Stmt {
    stmt(
        "INSERT INTO deb_keys(site_id, public_key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(site_id) DO UPDATE SET public_key = excluded.public_key, fingerprint = excluded.fingerprint, created_at = excluded.created_at",
        vec![site_id.into(), key_hex.into(), fingerprint.into(), now.into()],
    )
}

pub fn set_pending(release_id: i64, dist: &str, release_sha256: Option<&str>) -> Stmt {
    match release_sha256 {
        Some(sha) => stmt(
            "INSERT INTO deb_pending_signatures(release_id, dist, release_sha256) VALUES (?1, ?2, ?3) \
             ON CONFLICT(release_id, dist) DO UPDATE SET release_sha256 = excluded.release_sha256",
            vec![release_id.into(), dist.into(), sha.into()],
        ),
        None => stmt("DELETE FROM deb_pending_signatures WHERE release_id = ?1 AND dist = ?2", vec![release_id.into(), dist.into()]),
    }
}

/// Columns: release_sha256.
pub fn pending(release_id: i64, dist: &str) -> Stmt {
    stmt("SELECT release_sha256 FROM deb_pending_signatures WHERE release_id = ?1 AND dist = ?2", vec![release_id.into(), dist.into()])
}

/// Guard: the dist still waits for signatures over exactly this Release.
pub fn pending_is(release_id: i64, dist: &str, release_sha256: &str) -> Stmt {
    super::guard(
        "EXISTS (SELECT 1 FROM deb_pending_signatures WHERE release_id = ?1 AND dist = ?2 AND release_sha256 = ?3)",
        vec![Val::Int(release_id), dist.into(), release_sha256.into()],
    )
}

/// Dists of a release still waiting for InRelease and Release.gpg. Columns: dist.
pub fn pending_dists(release_id: i64) -> Stmt {
    stmt("SELECT dist FROM deb_pending_signatures WHERE release_id = ?1 ORDER BY dist", vec![release_id.into()])
}

/// Dists a release has published (it has a by-hash ledger for them). Columns: dist.
pub fn published_dists(release_id: i64) -> Stmt {
    stmt("SELECT dist FROM deb_ledgers WHERE release_id = ?1 ORDER BY dist", vec![release_id.into()])
}
