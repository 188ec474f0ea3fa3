//! SQL of the bookkeeping every package format keeps the same way, keyed by
//! the format's name (see "Formats" in schema.sql): settings and keys per
//! site, dirty indexes, pending signatures and ledgers per release.

use super::{guard, stmt, Stmt, Val};

/// Columns: config.
pub fn settings(site_id: i64, format: &str, scope: &str) -> Stmt {
    stmt("SELECT config FROM format_settings WHERE site_id = ?1 AND format = ?2 AND scope = ?3", vec![site_id.into(), format.into(), scope.into()])
}

pub fn put_settings(site_id: i64, format: &str, scope: &str, config: &str) -> Stmt {
    stmt(
        "INSERT INTO format_settings(site_id, format, scope, config) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(site_id, format, scope) DO UPDATE SET config = excluded.config",
        vec![site_id.into(), format.into(), scope.into(), config.into()],
    )
}

/// Columns: public_key, fingerprint.
pub fn public_key(site_id: i64, format: &str) -> Stmt {
    stmt("SELECT public_key, fingerprint FROM format_keys WHERE site_id = ?1 AND format = ?2", vec![site_id.into(), format.into()])
}

pub fn put_public_key(site_id: i64, format: &str, key: &str, fingerprint: Option<&str>, now: i64) -> Stmt {
    stmt(
        "INSERT INTO format_keys(site_id, format, public_key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(site_id, format) DO UPDATE SET public_key = excluded.public_key, fingerprint = excluded.fingerprint, \
         created_at = excluded.created_at",
        vec![site_id.into(), format.into(), key.into(), fingerprint.into(), now.into()],
    )
}

/// Many index parts dirty at once (`parts`: scope and part).
/// Marks index parts dirty, each with the name whose records changed
/// (scope, part, name): two statements.
pub fn mark_dirty_many(release_id: i64, format: &str, parts: &[(String, String, String)]) -> Vec<Stmt> {
    let list = serde_json::to_string(parts).unwrap_or_else(|_| "[]".into());
    vec![
        stmt(
            "INSERT INTO format_dirty(release_id, format, scope, part) \
             SELECT DISTINCT ?1, ?2, json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?3) WHERE true ON CONFLICT DO NOTHING",
            vec![release_id.into(), format.into(), list.clone().into()],
        ),
        stmt(
            "INSERT INTO format_dirty_names(release_id, format, scope, part, name) \
             SELECT ?1, ?2, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(?3) WHERE true \
             ON CONFLICT DO NOTHING",
            vec![release_id.into(), format.into(), list.into()],
        ),
    ]
}

/// Marks an index part dirty (without a name: it is regenerated whole).
pub fn mark_dirty(release_id: i64, format: &str, scope: &str, part: &str) -> Stmt {
    stmt(
        "INSERT INTO format_dirty(release_id, format, scope, part) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        vec![release_id.into(), format.into(), scope.into(), part.into()],
    )
}

/// The names whose records changed in a scope's dirty parts. Columns: part, name.
pub fn dirty_names(release_id: i64, format: &str, scope: &str) -> Stmt {
    stmt(
        "SELECT part, name FROM format_dirty_names WHERE release_id = ?1 AND format = ?2 AND scope = ?3",
        vec![release_id.into(), format.into(), scope.into()],
    )
}

/// Clears a scope's dirty parts and their names: two statements.
pub fn clear_dirty(release_id: i64, format: &str, scope: &str) -> Vec<Stmt> {
    let p = || vec![release_id.into(), format.into(), scope.into()];
    vec![
        stmt("DELETE FROM format_dirty WHERE release_id = ?1 AND format = ?2 AND scope = ?3", p()),
        stmt("DELETE FROM format_dirty_names WHERE release_id = ?1 AND format = ?2 AND scope = ?3", p()),
    ]
}

/// The layouts of published index files, by their gzip form's sha256.
/// Columns: sha256, plain_sha256, xz_sha256, layout.
pub fn layouts(site_id: i64, gz_sha256: &[&str]) -> Stmt {
    stmt(
        "SELECT sha256, plain_sha256, xz_sha256, layout FROM format_layouts WHERE site_id = ?1 AND sha256 IN (SELECT value FROM json_each(?2))",
        vec![site_id.into(), serde_json::to_string(gz_sha256).unwrap_or_else(|_| "[]".into()).into()],
    )
}

/// Records layouts: (gz sha256, plain sha256, xz sha256, layout JSON).
pub fn put_layouts(site_id: i64, rows: &[(String, String, String, String)]) -> Stmt {
    stmt(
        "INSERT INTO format_layouts(site_id, sha256, plain_sha256, xz_sha256, layout) \
         SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]') \
         FROM json_each(?2) WHERE true ON CONFLICT DO NOTHING",
        vec![site_id.into(), serde_json::to_string(rows).unwrap_or_else(|_| "[]".into()).into()],
    )
}

/// Columns: ledger.
pub fn ledger(release_id: i64, format: &str, scope: &str) -> Stmt {
    stmt("SELECT ledger FROM format_ledgers WHERE release_id = ?1 AND format = ?2 AND scope = ?3", vec![release_id.into(), format.into(), scope.into()])
}

pub fn put_ledger(release_id: i64, format: &str, scope: &str, ledger: &str) -> Stmt {
    stmt(
        "INSERT INTO format_ledgers(release_id, format, scope, ledger) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(release_id, format, scope) DO UPDATE SET ledger = excluded.ledger",
        vec![release_id.into(), format.into(), scope.into(), ledger.into()],
    )
}

/// Records (Some) or clears (None) the blob a part waits to have signed.
pub fn set_pending(release_id: i64, format: &str, scope: &str, part: &str, sha256: Option<&str>) -> Stmt {
    match sha256 {
        Some(sha) => stmt(
            "INSERT INTO format_pending_signatures(release_id, format, scope, part, sha256) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(release_id, format, scope, part) DO UPDATE SET sha256 = excluded.sha256",
            vec![release_id.into(), format.into(), scope.into(), part.into(), sha.into()],
        ),
        None => stmt(
            "DELETE FROM format_pending_signatures WHERE release_id = ?1 AND format = ?2 AND scope = ?3 AND part = ?4",
            vec![release_id.into(), format.into(), scope.into(), part.into()],
        ),
    }
}

/// Guard: the part still waits for signatures over exactly this blob.
pub fn pending_is(release_id: i64, format: &str, scope: &str, part: &str, sha256: &str) -> Stmt {
    guard(
        "EXISTS (SELECT 1 FROM format_pending_signatures WHERE release_id = ?1 AND format = ?2 AND scope = ?3 AND part = ?4 AND sha256 = ?5)",
        vec![Val::Int(release_id), format.into(), scope.into(), part.into(), sha256.into()],
    )
}

/// The condition (SQL, release id in `?2`) that a release has nothing left to
/// regenerate and no signature to wait for, in any format: what activation needs.
pub const SETTLED: &str = "NOT EXISTS (SELECT 1 FROM format_dirty WHERE release_id = ?2) \
     AND NOT EXISTS (SELECT 1 FROM format_pending_signatures WHERE release_id = ?2)";

/// The blob a part of a scope waits to have signed. Columns: sha256.
pub fn pending(release_id: i64, format: &str, scope: &str, part: &str) -> Stmt {
    stmt(
        "SELECT sha256 FROM format_pending_signatures WHERE release_id = ?1 AND format = ?2 AND scope = ?3 AND part = ?4",
        vec![release_id.into(), format.into(), scope.into(), part.into()],
    )
}
