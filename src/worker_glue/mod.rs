//! The thin layer between the pure modules and the Workers runtime (wasm32 only).

mod admin;
mod batch;
mod blobs;
mod db;
mod edge;
mod apk;
mod deb;
mod format_io;
mod formats;
mod helm;
mod memory;
mod oci;
mod serve;
mod service;
mod streams;
mod sync;
mod sync_run;
mod upstream;

use crate::{api::ApiError, hostname};
use worker::*;

/// Binding names (see wrangler.toml).
pub const DB_BINDING: &str = "DB";
pub const BUCKET_BINDING: &str = "BLOBS";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let host = req.headers().get("host")?.and_then(|h| hostname::normalize(&h));
    let admin_hosts = env.var("ADMIN_HOSTNAMES").map(|v| hostname::parse_list(&v.to_string())).unwrap_or_default();
    match host {
        Some(h) if admin_hosts.contains(&h) => admin::handle(req, &env).await,
        Some(h) => serve::handle(req, &env, &ctx, &h).await,
        None => error_response(&ApiError::bad_request("missing or invalid Host header")),
    }
}

/// The declared mirror's queue: entries and units of its runs.
#[event(queue)]
async fn queue(batch: MessageBatch<crate::sync::run::Job>, env: Env, _ctx: Context) -> Result<()> {
    sync_run::consume(batch, &env).await
}

/// The Cron Trigger: declared mirrors whose schedule is due start a run.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    if let Err(e) = sync_run::scheduled(&env).await {
        console_warn!("mirror schedule: {}", e.message);
    }
}

/// Stores bytes in hand (an index, a signature, a manifest) under their
/// sha256 unless the store has them (R2 checks the digest), and records that
/// the site holds them. Returns a message on failure.
pub(crate) async fn store_owned_bytes(env: &Env, db: &db::Db, site_id: i64, data: Vec<u8>, sha: &str, now: i64) -> std::result::Result<(), String> {
    use crate::store;
    let len = data.len() as i64;
    if db.first::<serde_json::Value>(store::blob(sha)).await.map_err(|e| e.message)?.is_none() {
        blobs::put_blob(env, sha, Data::Bytes(data)).await.map_err(|e| e.to_string())?;
        db.batch(store::insert_owned_blob(site_id, sha, len, now)).await.map_err(|e| match e {
            db::BatchError::Precondition => "a precondition failed".to_string(),
            db::BatchError::Failed(e) => e.message,
        })?;
    } else {
        db.run(store::own_blob(site_id, sha, now)).await.map_err(|e| e.message)?;
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

pub fn json_response(status: u16, value: &serde_json::Value) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::builder()
        .with_status(status)
        .with_headers(headers)
        .fixed(serde_json::to_vec(value).map_err(|e| Error::RustError(e.to_string()))?))
}

pub fn error_response(e: &ApiError) -> Result<Response> {
    json_response(e.status, &e.body())
}
