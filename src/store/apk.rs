//! SQL of the APK indexer.

use super::{stmt, Stmt};

/// The format's name in the format-keyed tables.
pub const FORMAT: &str = <crate::formats::Apk as crate::formats::Format>::NAME;

pub use crate::formats::apk::member_path;

pub fn member_prefix(branch: &str, repo: &str) -> String {
    format!("{}apk/{branch}/{repo}/", super::INTERNAL_PREFIX)
}

/// The `APKINDEX.tar.gz` files under a repository's directory (one per
/// architecture). Columns: path, sha256.
pub fn index_files(site_id: i64, read_seq: i64, release_id: i64, dir: &str) -> Stmt {
    stmt(
        format!(
            "SELECT m.path AS path, m.sha256 AS sha256 FROM ({}) m WHERE m.path >= ?4 AND m.path < ?5 AND substr(m.path, -16) = '/APKINDEX.tar.gz'",
            super::contents_subquery("?1", "?2", "?3")
        ),
        vec![site_id.into(), read_seq.into(), release_id.into(), dir.into(), super::prefix_end(dir).into()],
    )
}

/// Whether a release has any path under `prefix` (a member directory). Columns: n.
pub fn has_members(site_id: i64, read_seq: i64, release_id: i64, prefix: &str) -> Stmt {
    stmt(
        format!("SELECT 1 AS n FROM ({}) m WHERE m.path >= ?4 AND m.path < ?5 LIMIT 1", super::contents_subquery("?1", "?2", "?3")),
        vec![site_id.into(), read_seq.into(), release_id.into(), prefix.into(), super::prefix_end(prefix).into()],
    )
}

/// The members under one architecture's directory `prefix` whose names lie
/// above `lo` and up to `hi` (unbounded where None), a page at a time by
/// path. Member files are `<name>-<version>.apk` (versions start with a
/// digit), so those names lie in paths above `<prefix><lo>` and below
/// `<prefix><hi>.` ('.' follows '-'); the names are then kept exactly.
/// Columns as [`members`].
#[allow(clippy::too_many_arguments)]
pub fn members_within(site_id: i64, read_seq: i64, release_id: i64, prefix: &str, lo: Option<&str>, hi: Option<&str>, after: &str, limit: u32) -> Stmt {
    let start = lo.map_or_else(|| prefix.to_string(), |lo| format!("{prefix}{lo}"));
    let end = hi.map_or_else(|| super::prefix_end(prefix), |hi| format!("{prefix}{hi}."));
    let after = if after < start.as_str() { start.as_str() } else { after };
    stmt(
        format!(
            "SELECT m.path AS path, m.sha256 AS sha256, m.size AS size, p.name AS name, p.version AS version, \
                    p.arch AS arch, p.identity AS identity, p.record AS record \
             FROM ({}) m JOIN apk_packages p ON p.sha256 = m.sha256 \
             WHERE m.path >= ?4 AND m.path < ?5 AND m.path > ?6 AND (?7 IS NULL OR p.name > ?7) AND (?8 IS NULL OR p.name <= ?8) \
             ORDER BY m.path LIMIT ?9",
            super::contents_subquery("?1", "?2", "?3")
        ),
        vec![
            site_id.into(),
            read_seq.into(),
            release_id.into(),
            prefix.into(),
            end.into(),
            after.into(),
            lo.into(),
            hi.into(),
            (limit as i64).into(),
        ],
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

pub fn put_settings(site_id: i64, config: &str) -> Stmt {
    super::formats::put_settings(site_id, FORMAT, "", config)
}

pub fn put_public_key(site_id: i64, pem: &str, now: i64) -> Stmt {
    super::formats::put_public_key(site_id, FORMAT, pem, None, now)
}

fn scope(branch: &str, repo: &str) -> String {
    format!("{branch}/{repo}")
}

const BRANCH_REPOSITORY: &str = "substr(scope, 1, instr(scope, '/') - 1) AS branch, substr(scope, instr(scope, '/') + 1) AS repository";

pub fn mark_dirty(release_id: i64, branch: &str, repo: &str, arch: &str) -> Stmt {
    super::formats::mark_dirty(release_id, FORMAT, &scope(branch, repo), arch)
}

/// Columns: branch, repository, arch.
pub fn dirty(release_id: i64) -> Stmt {
    stmt(
        format!("SELECT {BRANCH_REPOSITORY}, part AS arch FROM format_dirty WHERE release_id = ?1 AND format = 'apk' ORDER BY scope, part"),
        vec![release_id.into()],
    )
}

pub fn clear_dirty(release_id: i64, branch: &str, repo: &str) -> Vec<Stmt> {
    super::formats::clear_dirty(release_id, FORMAT, &scope(branch, repo))
}

pub fn set_pending(release_id: i64, branch: &str, repo: &str, arch: &str, stream_sha256: Option<&str>) -> Stmt {
    super::formats::set_pending(release_id, FORMAT, &scope(branch, repo), arch, stream_sha256)
}

/// Columns: branch, repository, arch, stream_sha256.
pub fn pending(release_id: i64) -> Stmt {
    stmt(
        format!(
            "SELECT {BRANCH_REPOSITORY}, part AS arch, sha256 AS stream_sha256 FROM format_pending_signatures \
             WHERE release_id = ?1 AND format = 'apk' ORDER BY scope, part"
        ),
        vec![release_id.into()],
    )
}

/// Guard: the index still waits for a signature over exactly this stream.
pub fn pending_is(release_id: i64, branch: &str, repo: &str, arch: &str, stream_sha256: &str) -> Stmt {
    super::formats::pending_is(release_id, FORMAT, &scope(branch, repo), arch, stream_sha256)
}
