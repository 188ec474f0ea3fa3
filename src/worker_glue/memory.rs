//! The isolate's memory of tenant lookups ([`crate::lookup::Memory`]): one
//! per isolate, made on first use with the Worker's variables. A tenant
//! request resolves its hostname and path from it, or with one D1 query
//! whose answer it then remembers; small bodies come from it or from R2.

use super::db::Db;
use super::BUCKET_BINDING;
use crate::api::ApiError;
use crate::lookup::{Found, Limits, Memory, Mirrored, Route};
use crate::schema::{self, SchemaState};
use crate::store;
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use worker::*;

thread_local! {
    static MEMORY: RefCell<Option<Memory>> = const { RefCell::new(None) };
}

fn with<T>(env: &Env, f: impl FnOnce(&mut Memory) -> T) -> T {
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        let memory = m.get_or_insert_with(|| Memory::new(Limits::from_vars(|k| env.var(k).ok().map(|v| v.to_string()))));
        f(memory)
    })
}

/// The isolate's limits (read from the Worker's variables once).
pub(super) fn limits(env: &Env) -> Limits {
    with(env, |m| m.limits())
}

/// Forgets every remembered route: this isolate just changed what a hostname
/// serves (an activation, a rollback, a hostname or a site removed), and its
/// next requests must see it.
pub(super) fn forget_routes() {
    MEMORY.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.forget_routes();
        }
    });
}

/// A pull-through mirror's record `key` of the site, if read within the window.
pub(super) fn mirrored(env: &Env, site_id: i64, key: &str) -> Option<Rc<Mirrored>> {
    let now = super::now_ms().max(0) as u64;
    with(env, |m| m.mirrored(site_id, key, now))
}

pub(super) fn remember_mirrored(env: &Env, site_id: i64, key: &str, record: Mirrored) -> Rc<Mirrored> {
    let now = super::now_ms().max(0) as u64;
    with(env, |m| m.remember_mirrored(site_id, key, record, now))
}

/// Forgets a mirror record this isolate just replaced in D1.
pub(super) fn forget_mirrored(env: &Env, site_id: i64, key: &str) {
    with(env, |m| m.forget_mirrored(site_id, key))
}

/// What a tenant request resolved to.
pub(super) enum Resolved {
    /// The schema is missing or of another version.
    Schema(SchemaState),
    /// No site has this hostname.
    NoSite,
    /// The site, and what the path holds in its active release (None: nothing).
    Site(Rc<Route>, Option<Rc<Found>>),
}

#[derive(Deserialize)]
struct Row {
    schema_version: Option<String>,
    site_id: Option<i64>,
    site_name: Option<String>,
    site_created_at: Option<f64>,
    active_release_id: Option<i64>,
    seq: Option<i64>,
    activated_at: Option<f64>,
    registry_config: Option<String>,
    sha256: Option<String>,
    size: Option<f64>,
    content_type: Option<String>,
    r2_key: Option<String>,
    r2_offset: Option<f64>,
}

/// Resolves `host` and `path` ("" for none): from memory when the route is
/// fresh and the path remembered, else with one D1 query (remembered after).
/// `latest`: the client brought a bookmark, so D1 is asked whatever is remembered.
pub(super) async fn resolve(env: &Env, db: &Db, host: &str, path: &str, latest: bool) -> std::result::Result<Resolved, ApiError> {
    let now = super::now_ms().max(0) as u64;
    let remembered = if latest { None } else { with(env, |m| {
        let route = m.route(host, now)?;
        // A path is answered from memory only when remembered; anything
        // else (a path the release lacks, a site with no active release yet)
        // is asked of D1.
        let found = match (path.is_empty(), route.seq) {
            (true, _) => None,
            (false, Some(seq)) => Some(m.path(route.id, seq, path)?),
            (false, None) => return None,
        };
        Some((route, found))
    }) };
    if let Some((route, found)) = remembered {
        return Ok(Resolved::Site(route, found));
    }
    let row: Row = match db.first(store::route(host, path)).await {
        Ok(Some(r)) => r,
        // No schema_meta row, or no table at all: the schema was never applied.
        Ok(None) => return Ok(Resolved::Schema(SchemaState::Outdated { database: None })),
        Err(e) => {
            let state = schema::check(db.recorded_schema().await.as_deref());
            return if state != SchemaState::Current { Ok(Resolved::Schema(state)) } else { Err(e) };
        }
    };
    let state = schema::check(row.schema_version.as_deref());
    if state != SchemaState::Current {
        return Ok(Resolved::Schema(state));
    }
    let (Some(id), Some(name), Some(created_at)) = (row.site_id, row.site_name, row.site_created_at) else { return Ok(Resolved::NoSite) };
    let route = Route {
        id,
        name,
        created_at: created_at as i64,
        active_release_id: row.active_release_id,
        seq: row.seq,
        activated_at: row.activated_at.map(|a| a as i64),
        registry_config: row.registry_config,
    };
    let found = match (row.sha256, row.size, row.content_type) {
        (Some(sha256), Some(size), Some(content_type)) => {
            let place = store::Place::of(&sha256, row.r2_key, row.r2_offset.map(|o| o as u64));
            Some(Found { sha256, size: size as u64, content_type, place })
        }
        _ => None,
    };
    Ok(with(env, |m| {
        let seq = route.seq;
        let route = m.remember_route(host, route, now);
        if let (Some(seq), Some(f)) = (seq, &found) {
            m.remember_path(route.id, seq, path, f.clone());
        }
        Resolved::Site(route, found.map(Rc::new))
    }))
}

/// The whole body of a blob small enough to keep in memory: from memory, or
/// read from R2 once and kept. None when the blob is too large to keep (the
/// caller streams it from R2). Call only with a digest a path of the
/// requesting site resolved to.
pub(super) async fn small_body(env: &Env, sha256: &str, place: &store::Place, size: u64) -> std::result::Result<Option<Rc<[u8]>>, ApiError> {
    if !with(env, |m| m.keeps(size)) {
        return Ok(None);
    }
    if let Some(b) = with(env, |m| m.body(sha256)) {
        return Ok(Some(b));
    }
    let bucket = env.bucket(BUCKET_BINDING).map_err(|e| ApiError::internal(e.to_string()))?;
    let object = super::blobs::get(&bucket, place, None, size)
        .execute()
        .await
        .map_err(|e| ApiError::internal(format!("reading blob {sha256}: {e}")))?
        .ok_or_else(|| ApiError::internal("stored content is missing"))?;
    let bytes = object.body().ok_or_else(|| ApiError::internal("stored content has no body"))?.bytes().await.map_err(|e| ApiError::internal(e.to_string()))?;
    if bytes.len() as u64 != size {
        return Err(ApiError::internal(format!("blob {sha256} holds {} bytes, not {size}", bytes.len())));
    }
    Ok(Some(with(env, |m| m.remember_body(sha256, &bytes))))
}
