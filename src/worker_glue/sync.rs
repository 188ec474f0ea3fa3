//! The declarative mirror in the admin API: its configuration files, checked
//! before they are stored (`sync::config`), and checked without storing.

use super::service::{json_body, ApiResult, Ctx};
use crate::api::{self, ApiError, Route};
use crate::auth::Scope;
use crate::store::sync as sql;
use crate::sync::config::{self, Part, Problem};
use crate::sync::run::Trigger;
use crate::sync::schedule::Schedule;
use serde::Deserialize;
use serde_json::json;
use worker::*;

/// The 422 answer: every problem, located.
fn invalid(problems: &[Problem]) -> (u16, serde_json::Value) {
    let first = problems.first().map(|p| p.to_string()).unwrap_or_default();
    let message = match problems.len() {
        1 => first,
        n => format!("{n} problems; the first: {first}"),
    };
    (422, json!({"error": {"code": "invalid_config", "message": message, "problems": problems}}))
}

async fn text(req: &mut Request) -> std::result::Result<String, ApiError> {
    String::from_utf8(json_body(req).await?).map_err(|_| ApiError::bad_request("the configuration is not UTF-8 text"))
}

fn part(file: &str) -> std::result::Result<Part, ApiError> {
    Part::of_file(file).ok_or_else(|| ApiError::bad_request("file is images.yaml, charts.yaml or mirror.yaml (both in one)"))
}

#[derive(Deserialize)]
struct Stored {
    images_file: Option<String>,
    images_text: Option<String>,
    charts_file: Option<String>,
    charts_text: Option<String>,
    updated_at: f64,
}

pub(super) async fn dispatch(ctx: &Ctx<'_>, route: Route, req: &mut Request, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    use Route::*;
    match route {
        MirrorPutConfig(s, file) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            let file = file.unwrap_or_else(|| "mirror.yaml".into());
            let part = part(&file)?;
            let text = text(req).await?;
            let c = match config::parse(&file, &text, part) {
                Ok(c) => c,
                // Nothing is stored: the configuration in place stays.
                Err(problems) => return Ok(invalid(&problems)),
            };
            let this = Some((file.as_str(), text.as_str()));
            let (images, charts) = match part {
                Part::Images => (this, None),
                Part::Charts => (None, this),
                Part::Both => (this, this),
            };
            let before = ctx.db.first::<Stored>(sql::config(site.id)).await?;
            let changed = |old: Option<&Option<String>>, new: Option<(&str, &str)>| new.is_some_and(|(_, t)| old.and_then(|o| o.as_deref()) != Some(t));
            let changed = changed(before.as_ref().map(|b| &b.images_text), images) || changed(before.as_ref().map(|b| &b.charts_text), charts);
            ctx.db.run(sql::put_config(site.id, images, charts, ctx.now)).await?;
            // A changed configuration is carried out at once.
            let run = if changed { Some(super::sync_run::start(ctx.env, ctx.db, site.id, Trigger::Config, None).await?) } else { None };
            Ok((200, json!({"stored": file, "declared": c.summary(), "run": run})))
        }
        MirrorValidate(s) => {
            ctx.site(&s, Scope::Read).await?;
            let file = query("file").unwrap_or_else(|| "mirror.yaml".into());
            let part = part(&file)?;
            let text = text(req).await?;
            match config::parse(&file, &text, part) {
                Ok(c) => Ok((200, json!({"valid": true, "file": file, "declared": c.summary()}))),
                Err(problems) => Ok(invalid(&problems)),
            }
        }
        MirrorShowConfig(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let Some(row) = ctx.db.first::<Stored>(sql::config(site.id)).await? else {
                return Ok((200, json!({"files": {}, "declared": config::Config::default().summary(), "updated_at": null})));
            };
            // What was stored was checked; read it as it was checked.
            let read = |file: &Option<String>, text: &Option<String>| -> std::result::Result<config::Config, ApiError> {
                match (file, text) {
                    (Some(f), Some(t)) => config::parse(f, t, part(f)?).map_err(|p| ApiError::internal(format!("a stored configuration no longer reads: {}", p[0]))),
                    _ => Ok(config::Config::default()),
                }
            };
            let declared = config::Config { images: read(&row.images_file, &row.images_text)?.images, charts: read(&row.charts_file, &row.charts_text)?.charts };
            let mut files = serde_json::Map::new();
            for (f, t) in [(&row.images_file, &row.images_text), (&row.charts_file, &row.charts_text)] {
                if let (Some(f), Some(t)) = (f, t) {
                    files.insert(f.clone(), json!(t));
                }
            }
            Ok((200, json!({"files": files, "declared": declared.summary(), "updated_at": row.updated_at as i64})))
        }
        MirrorPutSettings(s) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                schedule: Option<String>,
            }
            let b: Body = api::parse_json(&json_body(req).await?)?;
            let schedule = b.schedule.as_deref().filter(|s| !s.trim().is_empty()).map(Schedule::parse).transpose().map_err(ApiError::unprocessable)?;
            ctx.db.run(sql::put_schedule(site.id, schedule.as_ref().map(Schedule::as_str), ctx.now)).await?;
            show_settings(ctx, site.id).await
        }
        MirrorShowSettings(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            show_settings(ctx, site.id).await
        }
        MirrorStartRun(s) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Body {
                image: Option<String>,
                chart: Option<String>,
            }
            let body = json_body(req).await?;
            let b: Body = if body.iter().all(u8::is_ascii_whitespace) { Body::default() } else { api::parse_json(&body)? };
            if b.image.is_some() && b.chart.is_some() {
                return Err(ApiError::bad_request("name one image or one chart (or neither, for everything)"));
            }
            let only = b.image.as_deref().or(b.chart.as_deref());
            let run = super::sync_run::start(ctx.env, ctx.db, site.id, Trigger::Manual, only).await?;
            show_run(ctx, site.id, run, 202).await
        }
        MirrorListRuns(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let before = query("before").and_then(|b| b.parse::<i64>().ok()).unwrap_or(i64::MAX);
            let limit = query("limit").and_then(|l| l.parse::<u32>().ok()).unwrap_or(50).clamp(1, 500);
            let rows: Vec<serde_json::Value> = ctx.db.all(sql::runs(site.id, before, limit)).await?;
            let runs: Vec<serde_json::Value> = rows.into_iter().map(run_json).collect();
            Ok((200, json!({"runs": runs})))
        }
        MirrorShowRun(s, id) => {
            let site = ctx.site(&s, Scope::Read).await?;
            show_run(ctx, site.id, id, 200).await
        }
        _ => Err(ApiError::internal("not a mirror route")),
    }
}

/// A run as the API shows it (numbers as integers, the release it produced).
fn run_json(mut row: serde_json::Value) -> serde_json::Value {
    if let Some(o) = row.as_object_mut() {
        for v in o.values_mut() {
            if let Some(f) = v.as_f64() {
                *v = json!(f as i64);
            }
        }
        if let Some(p) = o.remove("produced") {
            o.insert("release".into(), p);
        }
        if let Some(n) = o.remove("only_name") {
            o.insert("only".into(), n);
        }
        o.remove("site_id");
    }
    row
}

/// A run with every unit: copied, skipped (exists), failed (with the
/// reason), pruned; bytes, blobs and times.
async fn show_run(ctx: &Ctx<'_>, site_id: i64, id: i64, status: u16) -> ApiResult {
    let row: serde_json::Value = ctx.db.first(sql::site_run(site_id, id)).await?.ok_or_else(|| ApiError::not_found(format!("no mirror run {id}")))?;
    let mut run = run_json(row);
    let units: Vec<serde_json::Value> = ctx.db.all(sql::units(id)).await?;
    let units: Vec<serde_json::Value> = units
        .into_iter()
        .map(|u| {
            let mut u = run_json(u);
            if let (Some(a), Some(b)) = (u["started_at"].as_i64(), u["finished_at"].as_i64()) {
                u["duration_ms"] = json!(b - a);
            }
            u
        })
        .collect();
    let mut count = std::collections::BTreeMap::<String, i64>::new();
    let mut bytes = 0;
    for u in &units {
        *count.entry(u["state"].as_str().unwrap_or("").to_string()).or_default() += 1;
        bytes += u["bytes"].as_i64().unwrap_or(0);
    }
    let entries: Vec<serde_json::Value> = ctx.db.all::<serde_json::Value>(sql::entry_failures(id)).await?.into_iter().map(run_json).collect();
    run["counts"] = json!(count);
    run["bytes"] = json!(bytes);
    run["units"] = json!(units);
    run["entry_failures"] = json!(entries);
    Ok((status, run))
}

/// The mirror's settings: the schedule, and when it next fires.
async fn show_settings(ctx: &Ctx<'_>, site_id: i64) -> ApiResult {
    #[derive(Deserialize)]
    struct Row {
        schedule: Option<String>,
        schedule_since: Option<f64>,
    }
    let row = ctx.db.first::<Row>(sql::settings(site_id)).await?;
    let (schedule, since) = row.map_or((None, None), |r| (r.schedule, r.schedule_since.map(|s| s as i64)));
    let next = schedule.as_deref().and_then(|s| Schedule::parse(s).ok()).and_then(|s| s.next_after(since.unwrap_or(ctx.now)));
    Ok((200, json!({"settings": {"schedule": schedule}, "next_run_at": next})))
}
