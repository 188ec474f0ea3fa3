//! SQL of the Helm indexer.

use super::{stmt, Stmt};

/// The format's name in the format-keyed tables.
pub const FORMAT: &str = <crate::formats::Helm as crate::formats::Format>::NAME;

pub use crate::formats::helm::member_path;

pub fn member_prefix(repo: &str) -> String {
    format!("{}helm/{repo}/", super::INTERNAL_PREFIX)
}

/// Members of a repository in a release (charts, with their metadata, and
/// provenance files, whose metadata is null), one page at a time (paths
/// after `after`). Columns: path, sha256, size, metadata, created_at.
pub fn members(site_id: i64, read_seq: i64, release_id: i64, prefix: &str, after: &str, limit: u32) -> Stmt {
    let inner = super::list_prefix(site_id, read_seq, release_id, prefix, after, limit);
    stmt(
        format!(
            "SELECT m.path AS path, m.sha256 AS sha256, m.size AS size, c.metadata AS metadata, c.created_at AS created_at \
             FROM ({}) m LEFT JOIN helm_charts c ON c.sha256 = m.sha256",
            inner.sql
        ),
        inner.params,
    )
}

pub fn mark_dirty(release_id: i64, repo: &str) -> Stmt {
    super::formats::mark_dirty(release_id, FORMAT, repo, "")
}

/// Columns: repository.
pub fn dirty(release_id: i64) -> Stmt {
    stmt("SELECT DISTINCT scope AS repository FROM format_dirty WHERE release_id = ?1 AND format = 'helm' ORDER BY scope", vec![release_id.into()])
}

pub fn clear_dirty(release_id: i64, repo: &str) -> Vec<Stmt> {
    super::formats::clear_dirty(release_id, FORMAT, repo)
}
