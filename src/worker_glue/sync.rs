//! The declarative mirror in the admin API: its configuration files, checked
//! before they are stored (`sync::config`), and checked without storing.

use super::service::{json_body, ApiResult, Ctx};
use crate::api::{self, ApiError, Route};
use crate::auth::Scope;
use crate::store::sync as sql;
use crate::sync::config::{self, Part, Problem};
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
            ctx.db.run(sql::put_config(site.id, images, charts, ctx.now)).await?;
            Ok((200, json!({"stored": file, "declared": c.summary()})))
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
        _ => Err(ApiError::internal("not a mirror route")),
    }
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
