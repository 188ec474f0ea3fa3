//! SQL of the Debian indexer.

use super::{stmt, Stmt, Val};

/// The format's name in the format-keyed tables.
pub const FORMAT: &str = <crate::formats::Deb as crate::formats::Format>::NAME;

pub use crate::formats::deb::member_path;

pub fn member_prefix(dist: &str, component: Option<&str>) -> String {
    match component {
        Some(c) => format!("{}deb/{dist}/{c}/", super::INTERNAL_PREFIX),
        None => format!("{}deb/{dist}/", super::INTERNAL_PREFIX),
    }
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

pub fn put_dist_config(site_id: i64, dist: &str, config: &str) -> Stmt {
    super::formats::put_settings(site_id, FORMAT, dist, config)
}

pub fn mark_dirty(release_id: i64, dist: &str, component: &str, arch: &str) -> Stmt {
    super::formats::mark_dirty(release_id, FORMAT, dist, &format!("{component}/{arch}"))
}

/// Columns: dist, component, architecture.
pub fn dirty(release_id: i64) -> Stmt {
    stmt(
        "SELECT scope AS dist, substr(part, 1, instr(part, '/') - 1) AS component, substr(part, instr(part, '/') + 1) AS architecture \
         FROM format_dirty WHERE release_id = ?1 AND format = 'deb' ORDER BY scope, part",
        vec![release_id.into()],
    )
}

pub fn clear_dirty(release_id: i64, dist: &str) -> Stmt {
    super::formats::clear_dirty(release_id, FORMAT, dist)
}

/// The by-hash ledger of a dist as of a release. Columns: ledger.
pub fn ledger(release_id: i64, dist: &str) -> Stmt {
    super::formats::ledger(release_id, FORMAT, dist)
}

pub fn put_ledger(release_id: i64, dist: &str, ledger: &str) -> Stmt {
    super::formats::put_ledger(release_id, FORMAT, dist, ledger)
}

pub fn put_public_key(site_id: i64, key_hex: &str, fingerprint: &str, now: i64) -> Stmt {
    super::formats::put_public_key(site_id, FORMAT, key_hex, Some(fingerprint), now)
}

pub fn set_pending(release_id: i64, dist: &str, release_sha256: Option<&str>) -> Stmt {
    super::formats::set_pending(release_id, FORMAT, dist, "", release_sha256)
}

/// Columns: release_sha256.
pub fn pending(release_id: i64, dist: &str) -> Stmt {
    stmt(
        "SELECT sha256 AS release_sha256 FROM format_pending_signatures WHERE release_id = ?1 AND format = 'deb' AND scope = ?2 AND part = ''",
        vec![release_id.into(), dist.into()],
    )
}

/// Guard: the dist still waits for signatures over exactly this Release.
pub fn pending_is(release_id: i64, dist: &str, release_sha256: &str) -> Stmt {
    super::formats::pending_is(release_id, FORMAT, dist, "", release_sha256)
}

/// Dists of a release still waiting for InRelease and Release.gpg. Columns: dist.
pub fn pending_dists(release_id: i64) -> Stmt {
    stmt(
        "SELECT DISTINCT scope AS dist FROM format_pending_signatures WHERE release_id = ?1 AND format = 'deb' ORDER BY scope",
        vec![release_id.into()],
    )
}

/// Dists a release has published (it has a by-hash ledger for them). Columns: dist.
pub fn published_dists(release_id: i64) -> Stmt {
    stmt("SELECT scope AS dist FROM format_ledgers WHERE release_id = ?1 AND format = 'deb' ORDER BY scope", vec![release_id.into()])
}
