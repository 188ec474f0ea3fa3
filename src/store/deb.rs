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

/// Marks a component/architecture of a dist dirty, with the package name whose records changed.
pub fn mark_dirty(release_id: i64, dist: &str, component: &str, arch: &str, package: &str) -> Vec<Stmt> {
    super::formats::mark_dirty_many(release_id, FORMAT, &[(dist.to_string(), format!("{component}/{arch}"), package.to_string())])
}

/// The package names whose records changed in a dist. Columns: part (component/arch), name.
pub fn dirty_names(release_id: i64, dist: &str) -> Stmt {
    super::formats::dirty_names(release_id, FORMAT, dist)
}

/// The (component, architecture) pairs a dist's members have. Columns: component, architecture.
pub fn present(site_id: i64, read_seq: i64, release_id: i64, dist: &str) -> Stmt {
    let prefix = member_prefix(dist, None);
    stmt(
        format!(
            "SELECT DISTINCT substr(m.path, ?6, instr(substr(m.path, ?6), '/') - 1) AS component, p.architecture AS architecture \
             FROM ({}) m JOIN deb_packages p ON p.sha256 = m.sha256 WHERE m.path >= ?4 AND m.path < ?5",
            super::contents_subquery("?1", "?2", "?3")
        ),
        vec![
            site_id.into(),
            read_seq.into(),
            release_id.into(),
            prefix.as_str().into(),
            super::prefix_end(&prefix).into(),
            (prefix.len() as i64 + 1).into(),
        ],
    )
}

/// Whether a component of a dist has a member of an architecture (its
/// path ends `_<arch>.deb`). Columns: n.
pub fn has_architecture(site_id: i64, read_seq: i64, release_id: i64, dist: &str, component: &str, arch: &str) -> Stmt {
    let prefix = member_prefix(dist, Some(component));
    stmt(
        format!(
            "SELECT 1 AS n FROM ({}) m WHERE m.path >= ?4 AND m.path < ?5 AND substr(m.path, -length(?6)) = ?6 LIMIT 1",
            super::contents_subquery("?1", "?2", "?3")
        ),
        vec![
            site_id.into(),
            read_seq.into(),
            release_id.into(),
            prefix.as_str().into(),
            super::prefix_end(&prefix).into(),
            format!("_{arch}.deb").into(),
        ],
    )
}

/// The members of one Packages index (a component's packages of `arch` and
/// of `all`) whose names lie above `lo` and up to `hi` (unbounded where
/// None), a page at a time by path. Columns as [`members`].
#[allow(clippy::too_many_arguments)]
pub fn index_members(
    site_id: i64,
    read_seq: i64,
    release_id: i64,
    dist: &str,
    component: &str,
    arch: &str,
    lo: Option<&str>,
    hi: Option<&str>,
    after: &str,
    limit: u32,
) -> Stmt {
    let prefix = member_prefix(dist, Some(component));
    // Member paths end in `<package>_<version>_<arch>.deb`: the packages
    // above `lo` and up to `hi` lie in paths above `<prefix><lo>` and below
    // `<prefix><hi>` followed by the character after `_` (package names use
    // no character between `_` and it), so the query reads that range of the
    // index, then keeps the names exactly.
    let start = lo.map_or_else(|| prefix.clone(), |lo| format!("{prefix}{lo}"));
    let end = hi.map_or_else(|| super::prefix_end(&prefix), |hi| format!("{prefix}{hi}`"));
    let after = if after < start.as_str() { start.as_str() } else { after };
    stmt(
        format!(
            "SELECT m.path AS path, m.sha256 AS sha256, m.size AS size, p.package AS package, p.version AS version, \
                    p.architecture AS architecture, p.source AS source, p.control AS control \
             FROM ({}) m JOIN deb_packages p ON p.sha256 = m.sha256 \
             WHERE m.path >= ?4 AND m.path < ?5 AND m.path > ?6 AND (p.architecture = ?7 OR p.architecture = 'all') \
               AND (?8 IS NULL OR p.package > ?8) AND (?9 IS NULL OR p.package <= ?9) ORDER BY m.path LIMIT ?10",
            super::contents_subquery("?1", "?2", "?3")
        ),
        vec![
            site_id.into(),
            read_seq.into(),
            release_id.into(),
            prefix.as_str().into(),
            end.into(),
            after.into(),
            arch.into(),
            lo.into(),
            hi.into(),
            (limit as i64).into(),
        ],
    )
}

/// Columns: dist, component, architecture.
pub fn dirty(release_id: i64) -> Stmt {
    stmt(
        "SELECT scope AS dist, substr(part, 1, instr(part, '/') - 1) AS component, substr(part, instr(part, '/') + 1) AS architecture \
         FROM format_dirty WHERE release_id = ?1 AND format = 'deb' ORDER BY scope, part",
        vec![release_id.into()],
    )
}

pub fn clear_dirty(release_id: i64, dist: &str) -> Vec<Stmt> {
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
