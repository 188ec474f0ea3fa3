//! Every SQL statement Wharf runs, built as plain data so the same text is
//! executed by D1 in the worker and by SQLite in native tests.
//!
//! Release contents are MVCC rows (`path_versions`): a row is valid for the
//! snapshots `from_seq <= s < to_seq` of its site. Activating a draft
//! materialises snapshot `head + 1` by closing and opening rows only for the
//! paths that differ, so a release that changes one path of 100,000 writes two
//! rows. Every multi-statement write is one D1 batch (one transaction) that
//! starts with a guard insert; a failed precondition aborts the whole batch.

/// `to_seq` of a row that is still open (2^53-1: exact as a JavaScript number).
pub const OPEN: i64 = 9_007_199_254_740_991;

/// The error text D1/SQLite returns when a batch guard fails.
pub const GUARD_FAILED: &str = "wharf_guard_failed";

pub use crate::path::INTERNAL_PREFIX;

/// R2 key of a blob.
pub fn blob_key(sha256: &str) -> String {
    format!("blobs/sha256/{sha256}")
}

/// R2 key of a pack: small blobs stored together in one object.
pub fn pack_key(sha256: &str) -> String {
    format!("packs/sha256/{sha256}")
}

/// Where a blob's bytes lie in R2: a whole object (its default key, or where
/// an upload was written), or `size` bytes at `offset` of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub key: String,
    pub offset: Option<u64>,
}

impl Place {
    /// From a `blob_places` row's columns (none: the default key).
    pub fn of(sha256: &str, r2_key: Option<String>, r2_offset: Option<u64>) -> Place {
        match r2_key {
            Some(key) => Place { key, offset: r2_offset },
            None => Place { key: blob_key(sha256), offset: None },
        }
    }

    /// What to read of the R2 object for `range` (offset, length) of a blob
    /// of `size` bytes, or for all of it (None): an (offset, length) of the
    /// object, or None for the whole object.
    pub fn r2_range(&self, range: Option<(u64, u64)>, size: u64) -> Option<(u64, u64)> {
        match (self.offset, range) {
            (None, r) => r,
            (Some(at), None) => Some((at, size)),
            (Some(at), Some((offset, length))) => Some((at + offset, length)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// One SQL statement with its positional parameters (`?1`, `?2`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub sql: String,
    pub params: Vec<Val>,
}

fn stmt(sql: impl Into<String>, params: Vec<Val>) -> Stmt {
    Stmt { sql: sql.into(), params }
}

/// A batch's first statement: aborts the batch unless `condition` holds.
pub fn guard(condition: &str, params: Vec<Val>) -> Stmt {
    stmt(format!("INSERT INTO batch_guard(ok) SELECT CASE WHEN ({condition}) THEN 1 ELSE 0 END"), params)
}

/// A batch's last statement: leaves the guard table empty.
pub fn guard_clear() -> Stmt {
    stmt("DELETE FROM batch_guard", vec![])
}

// ---------------------------------------------------------------- data plane

/// A tenant request's one query: the schema version, the hostname's site
/// with its active release and registry settings, and what `path` holds in
/// that release (pass "" for no path). One row whenever the schema is
/// applied; the site's columns are NULL for an unknown hostname, the path's
/// for a missing path. Columns: schema_version, site_id, site_name,
/// site_created_at, active_release_id, seq, activated_at, registry_config,
/// sha256, size, content_type, r2_key (NULL: the default key), r2_offset.
pub fn route(hostname: &str, path: &str) -> Stmt {
    stmt(
        "SELECT m.value AS schema_version, s.id AS site_id, s.name AS site_name, s.created_at AS site_created_at, \
                s.active_release_id AS active_release_id, r.seq AS seq, r.activated_at AS activated_at, o.config AS registry_config, \
                v.sha256 AS sha256, v.size AS size, v.content_type AS content_type, l.r2_key AS r2_key, l.r2_offset AS r2_offset \
         FROM schema_meta m \
         LEFT JOIN hostnames h ON h.hostname = ?1 \
         LEFT JOIN sites s ON s.id = h.site_id \
         LEFT JOIN releases r ON r.id = s.active_release_id \
         LEFT JOIN oci_settings o ON o.site_id = s.id \
         LEFT JOIN path_versions v ON v.site_id = s.id AND v.path = ?2 \
                                   AND v.from_seq <= r.seq AND v.to_seq > r.seq \
         LEFT JOIN blob_places l ON l.sha256 = v.sha256 \
         WHERE m.key = 'version'",
        vec![hostname.into(), path.into()],
    )
}

pub fn schema_version() -> Stmt {
    stmt("SELECT value FROM schema_meta WHERE key = 'version'", vec![])
}

// ---------------------------------------------------------------- sites

/// Creates a site with an id above every id ever given (never a deleted site's).
pub fn create_site(name: &str, now: i64) -> Stmt {
    stmt(
        "INSERT INTO sites(id, name, created_at) \
         SELECT MAX(COALESCE((SELECT MAX(id) FROM sites), 0), \
                    COALESCE((SELECT CAST(value AS INTEGER) FROM schema_meta WHERE key = 'site_id_high'), 0)) + 1, ?1, ?2 \
         WHERE true ON CONFLICT(name) DO NOTHING RETURNING id",
        vec![name.into(), now.into()],
    )
}

/// Columns: id, name, active_release_id, head_seq, created_at.
pub fn site_by_name(name: &str) -> Stmt {
    stmt("SELECT id, name, active_release_id, head_seq, created_at FROM sites WHERE name = ?1", vec![name.into()])
}

pub fn site_by_id(id: i64) -> Stmt {
    stmt("SELECT id, name, active_release_id, head_seq, created_at FROM sites WHERE id = ?1", vec![id.into()])
}

pub fn list_sites(only: Option<i64>) -> Stmt {
    stmt(
        "SELECT id, name, active_release_id, head_seq, created_at FROM sites \
         WHERE ?1 IS NULL OR id = ?1 ORDER BY name",
        vec![only.into()],
    )
}

/// Deletes a site and everything that belongs to it, in one batch: the rows
/// of every table with a `release_id` column (of the site's releases), then of
/// every table with a `site_id` column, then the site. The lists come from
/// schema.sql at build time, so a table added later is covered. The site's id
/// is recorded as used, so it is never given to another site.
pub fn delete_site(site_id: i64) -> Vec<Stmt> {
    use crate::schema::{RELEASE_TABLES, SITE_TABLES};
    let p = || vec![Val::Int(site_id)];
    let mut out = vec![guard("EXISTS (SELECT 1 FROM sites WHERE id = ?1)", p())];
    for t in RELEASE_TABLES {
        out.push(stmt(format!("DELETE FROM {t} WHERE release_id IN (SELECT id FROM releases WHERE site_id = ?1)"), p()));
    }
    // `releases` is among them; it goes last so the statements above still find the ids.
    for t in SITE_TABLES.iter().filter(|t| **t != "releases").chain(std::iter::once(&"releases")) {
        out.push(stmt(format!("DELETE FROM {t} WHERE site_id = ?1"), p()));
    }
    out.push(stmt(
        "INSERT INTO schema_meta(key, value) VALUES ('site_id_high', CAST(?1 AS TEXT)) ON CONFLICT(key) DO UPDATE \
         SET value = CAST(MAX(CAST(schema_meta.value AS INTEGER), ?1) AS TEXT)",
        p(),
    ));
    out.push(stmt("DELETE FROM sites WHERE id = ?1", p()));
    out.push(guard_clear());
    out
}

// ---------------------------------------------------------------- hostnames

/// Adds a hostname to a site; a hostname owned by another site is left alone
/// (check `changes`: 0 means it belongs elsewhere, or already here).
pub fn add_hostname(hostname: &str, site_id: i64, now: i64) -> Stmt {
    stmt(
        "INSERT INTO hostnames(hostname, site_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(hostname) DO NOTHING",
        vec![hostname.into(), site_id.into(), now.into()],
    )
}

pub fn hostname_owner(hostname: &str) -> Stmt {
    stmt("SELECT site_id FROM hostnames WHERE hostname = ?1", vec![hostname.into()])
}

pub fn remove_hostname(hostname: &str, site_id: i64) -> Stmt {
    stmt("DELETE FROM hostnames WHERE hostname = ?1 AND site_id = ?2", vec![hostname.into(), site_id.into()])
}

pub fn list_hostnames(site_id: i64) -> Stmt {
    stmt("SELECT hostname, created_at FROM hostnames WHERE site_id = ?1 ORDER BY hostname", vec![site_id.into()])
}

// ---------------------------------------------------------------- tokens

pub fn insert_token(id: &str, secret_sha256: &str, name: &str, site_id: Option<i64>, scope: &str, now: i64, expires_at: Option<i64>) -> Stmt {
    stmt(
        "INSERT INTO tokens(id, secret_sha256, name, site_id, scope, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        vec![id.into(), secret_sha256.into(), name.into(), site_id.into(), scope.into(), now.into(), expires_at.into()],
    )
}

/// Columns: id, secret_sha256, site_id, scope, expires_at, revoked_at.
pub fn token_by_id(id: &str) -> Stmt {
    stmt("SELECT id, secret_sha256, site_id, scope, expires_at, revoked_at FROM tokens WHERE id = ?1", vec![id.into()])
}

/// Columns: id, name, site (name), scope, created_at, expires_at, revoked_at.
pub fn list_tokens(site_id: Option<i64>) -> Stmt {
    stmt(
        "SELECT t.id, t.name, s.name AS site, t.scope, t.created_at, t.expires_at, t.revoked_at \
         FROM tokens t LEFT JOIN sites s ON s.id = t.site_id \
         WHERE ?1 IS NULL OR t.site_id = ?1 ORDER BY t.created_at, t.id",
        vec![site_id.into()],
    )
}

pub fn revoke_token(id: &str, now: i64) -> Stmt {
    stmt("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", vec![id.into(), now.into()])
}

// ---------------------------------------------------------------- blobs

/// Where a blob's bytes lie when not at [`blob_key`] (see [`Place`]).
/// Columns: r2_key, r2_offset.
pub fn blob_location(sha256: &str) -> Stmt {
    stmt("SELECT r2_key, r2_offset FROM blob_places WHERE sha256 = ?1", vec![sha256.into()])
}

/// Records where a blob's bytes lie, unless a location is recorded already
/// (check the changed-row count: 0 means the other location stands).
pub fn locate_blob(sha256: &str, r2_key: &str) -> Stmt {
    stmt("INSERT INTO blob_places(sha256, r2_key) VALUES (?1, ?2) ON CONFLICT(sha256) DO NOTHING", vec![sha256.into(), r2_key.into()])
}

/// Records that blobs lie in pack `r2_key`, each at its offset: one
/// statement for many (sha256, offset) pairs; a blob with a place recorded
/// already keeps it (the bytes are the same).
pub fn place_in_pack(r2_key: &str, blobs: &[(&str, u64)]) -> Stmt {
    let list: Vec<serde_json::Value> = blobs.iter().map(|(sha, at)| serde_json::json!([sha, at])).collect();
    stmt(
        "INSERT INTO blob_places(sha256, r2_key, r2_offset) \
         SELECT json_extract(value, '$[0]'), ?1, json_extract(value, '$[1]') FROM json_each(?2) WHERE true \
         ON CONFLICT(sha256) DO NOTHING",
        vec![r2_key.into(), serde_json::Value::Array(list).to_string().into()],
    )
}

pub fn blob(sha256: &str) -> Stmt {
    stmt("SELECT sha256, size, created_at FROM blobs WHERE sha256 = ?1", vec![sha256.into()])
}

pub fn insert_blob(sha256: &str, size: i64, now: i64) -> Stmt {
    stmt(
        "INSERT INTO blobs(sha256, size, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(sha256) DO NOTHING",
        vec![sha256.into(), size.into(), now.into()],
    )
}

/// Records that a site holds a stored blob (it proved possession, or the
/// worker made the bytes for it). Nothing happens for a digest not stored.
pub fn own_blob(site_id: i64, sha256: &str, now: i64) -> Stmt {
    stmt(
        "INSERT OR IGNORE INTO site_blobs(site_id, sha256, created_at) SELECT ?1, sha256, ?3 FROM blobs WHERE sha256 = ?2",
        vec![site_id.into(), sha256.into(), now.into()],
    )
}

/// Stores a blob's row and records that the site holds it, in one batch.
pub fn insert_owned_blob(site_id: i64, sha256: &str, size: i64, now: i64) -> Vec<Stmt> {
    vec![insert_blob(sha256, size, now), own_blob(site_id, sha256, now)]
}

/// A stored blob the site holds. Columns: sha256, size, created_at.
pub fn site_blob(site_id: i64, sha256: &str) -> Stmt {
    stmt(
        "SELECT b.sha256, b.size, b.created_at FROM site_blobs o JOIN blobs b ON b.sha256 = o.sha256 \
         WHERE o.site_id = ?1 AND o.sha256 = ?2",
        vec![site_id.into(), sha256.into()],
    )
}

/// Which of these digests the site holds (at most 90 per statement: D1 binds 100 parameters). Columns: sha256.
pub fn site_blobs_among(site_id: i64, digests: &[&str]) -> Stmt {
    let marks: Vec<String> = (2..=digests.len() + 1).map(|i| format!("?{i}")).collect();
    let mut params = vec![Val::Int(site_id)];
    params.extend(digests.iter().map(|d| Val::from(*d)));
    stmt(
        format!(
            "SELECT o.sha256 FROM site_blobs o JOIN blobs b ON b.sha256 = o.sha256 WHERE o.site_id = ?1 AND o.sha256 IN ({})",
            marks.join(",")
        ),
        params,
    )
}

/// Sizes of stored blobs. Columns: sha256, size.
pub fn blob_sizes(digests: &[&str]) -> Stmt {
    stmt("SELECT sha256, size FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?1))", vec![json_list(digests).into()])
}

// ---------------------------------------------------------------- releases

const RELEASE_COLUMNS: &str = "id, site_id, parent_id, parent_seq, seq, state, note, created_at, activated_at";

/// Creates a draft based on the site's active release (None: on nothing).
pub fn create_release_from_active(site_id: i64, note: Option<&str>, now: i64) -> Stmt {
    stmt(
        format!(
            "INSERT INTO releases(site_id, parent_id, parent_seq, state, note, created_at) \
             SELECT s.id, r.id, COALESCE(r.seq, 0), 'draft', ?2, ?3 FROM sites s \
             LEFT JOIN releases r ON r.id = s.active_release_id WHERE s.id = ?1 RETURNING {RELEASE_COLUMNS}"
        ),
        vec![site_id.into(), note.into(), now.into()],
    )
}

/// Creates a draft based on an activated (active or retired) release, or on nothing.
pub fn create_release_from(site_id: i64, parent: Option<(i64, i64)>, note: Option<&str>, now: i64) -> Stmt {
    let (pid, pseq) = parent.map_or((Val::Null, 0), |(id, seq)| (Val::Int(id), seq));
    stmt(
        format!(
            "INSERT INTO releases(site_id, parent_id, parent_seq, state, note, created_at) \
             VALUES (?1, ?2, ?3, 'draft', ?4, ?5) RETURNING {RELEASE_COLUMNS}"
        ),
        vec![site_id.into(), pid, pseq.into(), note.into(), now.into()],
    )
}

pub fn release(site_id: i64, release_id: i64) -> Stmt {
    stmt(
        format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE site_id = ?1 AND id = ?2"),
        vec![site_id.into(), release_id.into()],
    )
}

/// Newest first; `before` is a release id cursor (0 = from the newest).
pub fn list_releases(site_id: i64, before: i64, limit: u32) -> Stmt {
    stmt(
        format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE site_id = ?1 AND (?2 = 0 OR id < ?2) \
             ORDER BY id DESC LIMIT ?3"
        ),
        vec![site_id.into(), before.into(), (limit as i64).into()],
    )
}

/// Which of these (path, sha256) puts name a path the site has published
/// (in any activated snapshot) with another blob. The list drives the join
/// (CROSS JOIN keeps SQLite from scanning the site's paths and probing the
/// list: 33 ms against 0.2 ms on a 10,000-package site). Columns: path.
pub fn published_with_other_blob(site_id: i64, puts: &[(&str, &str)]) -> Stmt {
    stmt(
        "SELECT DISTINCT v.path AS path FROM json_each(?2) j \
           CROSS JOIN path_versions v ON v.site_id = ?1 AND v.path = json_extract(j.value, '$[0]') AND v.sha256 <> json_extract(j.value, '$[1]')",
        vec![site_id.into(), json_list(puts).into()],
    )
}

/// How many changes a draft records. Columns: n.
pub fn count_changes(release_id: i64) -> Stmt {
    stmt("SELECT COUNT(*) AS n FROM release_changes WHERE release_id = ?1", vec![release_id.into()])
}

/// Deletes a draft and its changes.
pub fn delete_draft(site_id: i64, release_id: i64) -> Vec<Stmt> {
    let p = || vec![Val::Int(site_id), Val::Int(release_id)];
    let mut out = vec![
        guard("EXISTS (SELECT 1 FROM releases WHERE site_id = ?1 AND id = ?2 AND state = 'draft')", p()),
    ];
    // Every row a release owns (its changes, every format's bookkeeping), read
    // from schema.sql like the site's tables: a new table cannot be forgotten.
    for t in crate::schema::RELEASE_TABLES {
        out.push(stmt(format!("DELETE FROM {t} WHERE release_id = ?2 AND ?1 IS NOT NULL"), p()));
    }
    out.push(stmt("DELETE FROM releases WHERE site_id = ?1 AND id = ?2 AND state = 'draft'", p()));
    out.push(guard_clear());
    out
}

fn draft_guard(site_id: i64, release_id: i64) -> Stmt {
    guard(
        "EXISTS (SELECT 1 FROM releases WHERE site_id = ?1 AND id = ?2 AND state = 'draft')",
        vec![site_id.into(), release_id.into()],
    )
}

/// Records changes in a draft, all or nothing. A put names a stored blob; its
/// size comes from the blobs table. (Callers check the blobs exist first; blobs
/// are never deleted while referenced, so the join below cannot drop a put.)
pub fn apply_changes(site_id: i64, release_id: i64, changes: &[crate::release::Change]) -> Vec<Stmt> {
    apply_changes_with(site_id, release_id, changes, vec![])
}

/// [`apply_changes`] plus more statements in the same transaction.
pub fn apply_changes_with(site_id: i64, release_id: i64, changes: &[crate::release::Change], extra: Vec<Stmt>) -> Vec<Stmt> {
    let mut out = vec![draft_guard(site_id, release_id)];
    for c in changes {
        out.push(match &c.sha256 {
            Some(sha) => stmt(
                "INSERT INTO release_changes(release_id, path, sha256, size, content_type) \
                 SELECT ?1, ?2, b.sha256, b.size, ?3 FROM blobs b WHERE b.sha256 = ?4 \
                 ON CONFLICT(release_id, path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, \
                 content_type = excluded.content_type",
                vec![release_id.into(), (&c.path).into(), c.content_type.clone().into(), sha.into()],
            ),
            None => stmt(
                "INSERT INTO release_changes(release_id, path, sha256, size, content_type) VALUES (?1, ?2, NULL, NULL, NULL) \
                 ON CONFLICT(release_id, path) DO UPDATE SET sha256 = NULL, size = NULL, content_type = NULL",
                vec![release_id.into(), (&c.path).into()],
            ),
        });
    }
    out.extend(extra);
    out.push(guard_clear());
    out
}

/// The contents of a release as a subquery over parameters `?site`, `?seq`
/// (its snapshot, or its parent's while a draft) and `?rel` (its draft
/// changes; none once activated). Columns: path, sha256, size, content_type.
pub(crate) fn contents_subquery(site: &str, seq: &str, rel: &str) -> String {
    format!(
        "SELECT v.path AS path, v.sha256 AS sha256, v.size AS size, v.content_type AS content_type \
           FROM path_versions v WHERE v.site_id = {site} AND v.from_seq <= {seq} AND v.to_seq > {seq} \
           AND NOT EXISTS (SELECT 1 FROM release_changes c WHERE c.release_id = {rel} AND c.path = v.path) \
         UNION ALL \
         SELECT path, sha256, size, content_type FROM release_changes WHERE release_id = {rel} AND sha256 IS NOT NULL"
    )
}

/// The snapshot a release's contents are read from: its own once activated,
/// its parent's while a draft.
pub fn read_seq(seq: Option<i64>, parent_seq: i64) -> i64 {
    seq.unwrap_or(parent_seq)
}

/// One page of a release's contents, by path. Columns: path, sha256, size, content_type.
pub fn list_paths(site_id: i64, read_seq: i64, release_id: i64, after: &str, limit: u32) -> Stmt {
    stmt(
        format!(
            "SELECT path, sha256, size, content_type FROM ({}) WHERE path > ?4 ORDER BY path LIMIT ?5",
            contents_subquery("?1", "?2", "?3")
        ),
        vec![site_id.into(), read_seq.into(), release_id.into(), after.into(), (limit as i64).into()],
    )
}

/// The smallest string greater than every string starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0x7f {
            b.push(last + 1);
            return String::from_utf8(b).expect("ASCII");
        }
    }
    "\u{10FFFF}".to_string()
}

/// One page of a release's paths under `prefix`. Columns: path, sha256, size, content_type.
pub fn list_prefix(site_id: i64, read_seq: i64, release_id: i64, prefix: &str, after: &str, limit: u32) -> Stmt {
    let after = if after < prefix { prefix } else { after };
    stmt(
        format!(
            "SELECT path, sha256, size, content_type FROM ({}) WHERE path >= ?4 AND path > ?5 AND path < ?6 ORDER BY path LIMIT ?7",
            contents_subquery("?1", "?2", "?3")
        ),
        vec![
            site_id.into(),
            read_seq.into(),
            release_id.into(),
            prefix.into(),
            after.into(),
            prefix_end(prefix).into(),
            (limit as i64).into(),
        ],
    )
}

/// One entry of a release. Columns: path, sha256, size, content_type.
pub fn release_path(site_id: i64, read_seq: i64, release_id: i64, path: &str) -> Stmt {
    stmt(
        format!("SELECT path, sha256, size, content_type FROM ({}) WHERE path = ?4", contents_subquery("?1", "?2", "?3")),
        vec![site_id.into(), read_seq.into(), release_id.into(), path.into()],
    )
}

/// Which of `paths` a release maps, with their blobs (the list drives the
/// join, as in [`published_with_other_blob`]). Columns: path, sha256.
pub fn paths_among(site_id: i64, read_seq: i64, release_id: i64, paths: &[&str]) -> Stmt {
    stmt(
        "SELECT v.path AS path, v.sha256 AS sha256 FROM json_each(?4) j \
           CROSS JOIN path_versions v ON v.site_id = ?1 AND v.path = j.value AND v.from_seq <= ?2 AND v.to_seq > ?2 \
          WHERE NOT EXISTS (SELECT 1 FROM release_changes c WHERE c.release_id = ?3 AND c.path = v.path) \
         UNION ALL \
         SELECT c.path, c.sha256 FROM json_each(?4) j CROSS JOIN release_changes c ON c.release_id = ?3 AND c.path = j.value WHERE c.sha256 IS NOT NULL",
        vec![site_id.into(), read_seq.into(), release_id.into(), json_list(paths).into()],
    )
}

fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Many blobs stored at once, held by the site (`blobs`: sha256 and size).
pub fn insert_owned_blobs(site_id: i64, blobs: &[(&str, u64)], now: i64) -> Vec<Stmt> {
    let list = json_list(blobs);
    vec![
        stmt(
            "INSERT INTO blobs(sha256, size, created_at) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?2 FROM json_each(?1) WHERE true \
             ON CONFLICT(sha256) DO NOTHING",
            vec![list.clone().into(), now.into()],
        ),
        stmt(
            "INSERT INTO site_blobs(site_id, sha256, created_at) SELECT ?1, json_extract(value, '$[0]'), ?3 FROM json_each(?2) WHERE true \
             ON CONFLICT(site_id, sha256) DO NOTHING",
            vec![site_id.into(), list.into(), now.into()],
        ),
    ]
}

/// Many records of a format's table at once (`columns` as the format names
/// them, sha256 first; each row a JSON array in that order), once per blob.
/// A format's stored records of some blobs (every column of `table`, a
/// format's `RECORDS` table).
pub fn records_among(table: &str, digests: &[&str]) -> Stmt {
    stmt(format!("SELECT * FROM {table} WHERE sha256 IN (SELECT value FROM json_each(?1))"), vec![json_list(digests).into()])
}

pub fn insert_records(table: &str, columns: &[&str], rows: &[Vec<serde_json::Value>], now: i64) -> Stmt {
    let values: Vec<String> = (0..columns.len()).map(|i| format!("json_extract(value, '$[{i}]')")).collect();
    stmt(
        format!(
            "INSERT INTO {table}({}, created_at) SELECT {}, ?2 FROM json_each(?1) WHERE true ON CONFLICT(sha256) DO NOTHING",
            columns.join(", "),
            values.join(", ")
        ),
        vec![json_list(rows).into(), now.into()],
    )
}

/// [`apply_changes_with`] for many changes: a statement for the puts and one
/// for the removals (JSON lists), whatever their number.
pub fn apply_many(site_id: i64, release_id: i64, changes: &[crate::release::Change], extra: Vec<Stmt>) -> Vec<Stmt> {
    let puts: Vec<_> = changes.iter().filter_map(|c| Some(serde_json::json!([c.path, c.sha256.as_ref()?, c.content_type]))).collect();
    let gone: Vec<&str> = changes.iter().filter(|c| c.sha256.is_none()).map(|c| c.path.as_str()).collect();
    let mut out = vec![draft_guard(site_id, release_id)];
    // A few thousand per statement keeps each JSON parameter well under D1's 2 MB.
    for chunk in puts.chunks(4_000) {
        out.push(stmt(
            "INSERT INTO release_changes(release_id, path, sha256, size, content_type) \
             SELECT ?1, json_extract(j.value, '$[0]'), b.sha256, b.size, json_extract(j.value, '$[2]') \
               FROM json_each(?2) j JOIN blobs b ON b.sha256 = json_extract(j.value, '$[1]') WHERE true \
             ON CONFLICT(release_id, path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, content_type = excluded.content_type",
            vec![release_id.into(), json_list(chunk).into()],
        ));
    }
    for chunk in gone.chunks(4_000) {
        out.push(stmt(
            "INSERT INTO release_changes(release_id, path, sha256, size, content_type) SELECT ?1, value, NULL, NULL, NULL FROM json_each(?2) WHERE true \
             ON CONFLICT(release_id, path) DO UPDATE SET sha256 = NULL, size = NULL, content_type = NULL",
            vec![release_id.into(), json_list(chunk).into()],
        ));
    }
    out.extend(extra);
    out.push(guard_clear());
    out
}

/// A page of what differs from release A to release B. Columns: path,
/// old_sha256, old_size, old_content_type, new_sha256, new_size, new_content_type
/// (old_* NULL: added; new_* NULL: removed).
pub fn diff(site_id: i64, a: (i64, i64), b: (i64, i64), after: &str, limit: u32) -> Stmt {
    stmt(
        format!(
            "WITH a AS ({}), b AS ({}) \
             SELECT * FROM ( \
               SELECT a.path AS path, a.sha256 AS old_sha256, a.size AS old_size, a.content_type AS old_content_type, \
                      b.sha256 AS new_sha256, b.size AS new_size, b.content_type AS new_content_type \
                 FROM a LEFT JOIN b ON b.path = a.path \
                WHERE b.path IS NULL OR b.sha256 <> a.sha256 OR b.content_type <> a.content_type \
               UNION ALL \
               SELECT b.path, NULL, NULL, NULL, b.sha256, b.size, b.content_type \
                 FROM b LEFT JOIN a ON a.path = b.path WHERE a.path IS NULL \
             ) WHERE path > ?6 ORDER BY path LIMIT ?7",
            contents_subquery("?1", "?2", "?3"),
            contents_subquery("?1", "?4", "?5")
        ),
        vec![site_id.into(), a.0.into(), a.1.into(), b.0.into(), b.1.into(), after.into(), (limit as i64).into()],
    )
}

/// The activation time recorded for a release (?1 site, ?3 now in ms): now,
/// but always in a later second than any earlier activation of the site.
/// Last-Modified has one-second resolution, so two switches within one second
/// would otherwise look unmodified to a client's If-Modified-Since.
const ACTIVATION_TIME: &str =
    "MAX(?3, (COALESCE((SELECT MAX(activated_at) FROM releases WHERE site_id = ?1), -1000) / 1000 + 1) * 1000)";

/// Activates a draft: compare-and-swap on the site's active release.
///
/// Materialises snapshot n = head + 1 as (parent snapshot p) + (draft changes).
/// Rows are written only for paths whose blob differs from the head snapshot h:
/// the draft's changes, plus — only when the draft was based on an older
/// snapshot than the head (after a rollback) — the paths that differ between p and h.
/// Statement 6 closes rows and statement 7 opens rows (their `changes` are the
/// rows written for contents).
pub fn activate(site_id: i64, release_id: i64, expected_active: Option<i64>, now: i64) -> Vec<Stmt> {
    activate_when(site_id, release_id, "s.active_release_id IS ?3", expected_active.into(), now)
}

/// Activates a draft on top of whatever release is active at that moment, in
/// one transaction: the draft is first re-based on the active release, so the
/// swap cannot be lost to a concurrent one. Only for drafts whose changes
/// stand on their own whatever they land on (a registry push: these paths
/// get these blobs), never for drafts with generated indexes. The statement
/// indexes of [`activate`] are one higher.
pub fn activate_rebased(site_id: i64, release_id: i64, now: i64) -> Vec<Stmt> {
    let mut out = vec![stmt(
        "UPDATE releases SET parent_id = (SELECT active_release_id FROM sites WHERE id = ?1), \
         parent_seq = COALESCE((SELECT r.seq FROM sites s JOIN releases r ON r.id = s.active_release_id WHERE s.id = ?1), 0) \
         WHERE id = ?2 AND site_id = ?1 AND state = 'draft'",
        vec![site_id.into(), release_id.into()],
    )];
    out.extend(activate_when(site_id, release_id, "s.active_release_id IS r.parent_id AND ?3 IS NULL", Val::Null, now));
    out
}

/// [`activate`] with the compare-and-swap's condition (on `s`, the site, and
/// `r`, the draft; ?3 is `expected`).
fn activate_when(site_id: i64, release_id: i64, swap_condition: &str, expected: Val, now: i64) -> Vec<Stmt> {
    let sr = || vec![Val::Int(site_id), Val::Int(release_id)];
    // ?1 site, ?2 release
    let p = "(SELECT parent_seq FROM releases WHERE id = ?2)";
    let h = "((SELECT head_seq FROM sites WHERE id = ?1) - 1)";
    let n = "(SELECT head_seq FROM sites WHERE id = ?1)";
    vec![
        // 0: precondition: a draft of this site, and the active release is the expected one
        guard(
            &format!(
                "EXISTS (SELECT 1 FROM releases r JOIN sites s ON s.id = r.site_id \
                 WHERE r.id = ?2 AND s.id = ?1 AND r.state = 'draft' AND {swap_condition}) AND {}",
                formats::SETTLED
            ),
            vec![site_id.into(), release_id.into(), expected],
        ),
        // 1: allocate snapshot n
        stmt("UPDATE sites SET head_seq = head_seq + 1 WHERE id = ?1", vec![site_id.into()]),
        // 2: the draft's own changes
        stmt(
            "INSERT INTO activation_plan(release_id, path, sha256, size, content_type) \
             SELECT release_id, path, sha256, size, content_type FROM release_changes WHERE release_id = ?2 AND ?1 IS NOT NULL",
            sr(),
        ),
        // 3: paths valid at p but closed by h: restore p's version (unless the draft changed them)
        stmt(
            format!(
                "INSERT OR IGNORE INTO activation_plan(release_id, path, sha256, size, content_type) \
                 SELECT ?2, path, sha256, size, content_type FROM path_versions \
                 WHERE site_id = ?1 AND to_seq > {p} AND to_seq <= {h} AND from_seq <= {p}"
            ),
            sr(),
        ),
        // 4: paths opened after p and still open at h: absent at p unless step 3 restored them
        stmt(
            format!(
                "INSERT OR IGNORE INTO activation_plan(release_id, path, sha256, size, content_type) \
                 SELECT ?2, path, NULL, NULL, NULL FROM path_versions \
                 WHERE site_id = ?1 AND from_seq > {p} AND +to_seq = {OPEN}"
            ),
            sr(),
        ),
        // 5: drop plan entries that would change nothing at the head
        stmt(
            format!(
                "DELETE FROM activation_plan WHERE release_id = ?2 AND ( \
                   (sha256 IS NOT NULL AND EXISTS (SELECT 1 FROM path_versions v WHERE v.site_id = ?1 \
                      AND v.path = activation_plan.path AND +v.to_seq = {OPEN} \
                      AND v.sha256 = activation_plan.sha256 AND v.content_type = activation_plan.content_type)) \
                OR (sha256 IS NULL AND NOT EXISTS (SELECT 1 FROM path_versions v WHERE v.site_id = ?1 \
                      AND v.path = activation_plan.path AND +v.to_seq = {OPEN})))"
            ),
            sr(),
        ),
        // 6: close the head rows of changed paths
        stmt(
            format!(
                "UPDATE path_versions SET to_seq = {n} WHERE site_id = ?1 AND +to_seq = {OPEN} \
                 AND path IN (SELECT path FROM activation_plan WHERE release_id = ?2)"
            ),
            sr(),
        ),
        // 7: open rows for the new versions
        stmt(
            format!(
                "INSERT INTO path_versions(site_id, path, from_seq, to_seq, sha256, size, content_type) \
                 SELECT ?1, path, {n}, {OPEN}, sha256, size, content_type FROM activation_plan \
                 WHERE release_id = ?2 AND sha256 IS NOT NULL"
            ),
            sr(),
        ),
        stmt("DELETE FROM activation_plan WHERE release_id = ?2 AND ?1 IS NOT NULL", sr()),
        stmt("DELETE FROM release_changes WHERE release_id = ?2 AND ?1 IS NOT NULL", sr()),
        stmt("UPDATE releases SET state = 'retired' WHERE id = (SELECT active_release_id FROM sites WHERE id = ?1)", vec![site_id.into()]),
        stmt(
            format!("UPDATE releases SET state = 'active', seq = {n}, activated_at = {ACTIVATION_TIME} WHERE id = ?2 AND site_id = ?1"),
            vec![site_id.into(), release_id.into(), now.into()],
        ),
        stmt("UPDATE sites SET active_release_id = ?2 WHERE id = ?1", sr()),
        guard_clear(),
    ]
}

/// Index of the statements in [`activate`] whose `changes` count rows closed and opened.
pub const ACTIVATE_CLOSED: usize = 6;
pub const ACTIVATE_OPENED: usize = 7;

/// Re-activates an earlier (retired) release: compare-and-swap on the active release.
pub fn rollback(site_id: i64, to: i64, expected_active: Option<i64>, now: i64) -> Vec<Stmt> {
    vec![
        guard(
            "EXISTS (SELECT 1 FROM releases r JOIN sites s ON s.id = r.site_id \
             WHERE r.id = ?2 AND s.id = ?1 AND r.state = 'retired' AND r.seq IS NOT NULL AND s.active_release_id IS ?3)",
            vec![site_id.into(), to.into(), expected_active.into()],
        ),
        stmt("UPDATE releases SET state = 'retired' WHERE id = (SELECT active_release_id FROM sites WHERE id = ?1)", vec![site_id.into()]),
        stmt(
            format!("UPDATE releases SET state = 'active', activated_at = {ACTIVATION_TIME} WHERE id = ?2 AND site_id = ?1"),
            vec![site_id.into(), to.into(), now.into()],
        ),
        stmt("UPDATE sites SET active_release_id = ?2 WHERE id = ?1", vec![site_id.into(), to.into()]),
        guard_clear(),
    ]
}

/// The release a rollback goes back to by default: the newest retired release
/// older than the active one.
pub fn previous_release(site_id: i64) -> Stmt {
    stmt(
        "SELECT r.id FROM releases r JOIN sites s ON s.id = r.site_id \
         JOIN releases cur ON cur.id = s.active_release_id \
         WHERE r.site_id = ?1 AND r.state = 'retired' AND r.seq < cur.seq ORDER BY r.seq DESC LIMIT 1",
        vec![site_id.into()],
    )
}

pub mod apk;
pub mod deb;
pub mod formats;
pub mod helm;
pub mod oci;
pub mod sync;

#[cfg(test)]
mod tests;
