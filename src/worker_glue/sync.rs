//! The declarative mirror in the admin API: its configuration files, checked
//! before they are stored (`sync::config`), and checked without storing.

use super::service::{json_body, paths_under, read_blob_range, ApiResult, Ctx, ReleaseRow, SiteRow};
use super::sync_run::Files;
use crate::sync::scan;
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
    #[serde(flatten)]
    files: Files,
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
            let changed = changed(before.as_ref().map(|b| &b.files.images_text), images) || changed(before.as_ref().map(|b| &b.files.charts_text), charts);
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
            let declared = row.files.config().map_err(ApiError::internal)?;
            let f = &row.files;
            let mut files = serde_json::Map::new();
            for (f, t) in [(&f.images_file, &f.images_text), (&f.charts_file, &f.charts_text)] {
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
        MirrorImages(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            images(ctx, site.id).await
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
    // Scanner reports attached to what the units serve (in the active release).
    let mut units = units;
    let mut totals = std::collections::BTreeMap::new();
    if let Some(at) = active(ctx, site_id).await? {
        for u in units.iter_mut().filter(|u| u["kind"] == "image" && (u["state"] == "copied" || u["state"] == "skipped")) {
            let (Some(target), Some(digest)) = (u["target"].as_str().map(String::from), u["digest"].as_str().map(String::from)) else { continue };
            let found = scans(ctx, &at, &target, &digest).await?;
            found.iter().for_each(|s| add_counts(&mut totals, s));
            u["scans"] = json!(found);
        }
    }
    run["counts"] = json!(count);
    run["bytes"] = json!(bytes);
    run["severities"] = json!(totals);
    run["units"] = json!(units);
    run["entry_failures"] = json!(entries);
    Ok((status, run))
}

/// The site's active release (None while it has none).
async fn active(ctx: &Ctx<'_>, site_id: i64) -> std::result::Result<Option<(SiteRow, ReleaseRow)>, ApiError> {
    let site: SiteRow = ctx.db.first(crate::store::site_by_id(site_id)).await?.ok_or_else(|| ApiError::not_found("the site is gone"))?;
    let Some(a) = site.active_release_id else { return Ok(None) };
    let rel = ctx.release(site_id, a).await?;
    Ok(Some((site, rel)))
}

/// The scanner reports attached (as referrers) to a manifest the site
/// serves: what each counts (`sync::scan`), in the active release.
async fn scans(ctx: &Ctx<'_>, at: &(SiteRow, ReleaseRow), target: &str, digest: &str) -> std::result::Result<Vec<serde_json::Value>, ApiError> {
    let (site, rel) = at;
    let mut out = Vec::new();
    for (_, row) in paths_under(ctx, site, rel, &crate::oci::referrers_prefix(target, digest)).await?.into_iter().take(20) {
        let Ok(desc) = serde_json::from_slice::<serde_json::Value>(&read_blob_range(ctx, &row.sha256, 0, row.size as u64).await?) else { continue };
        let referrer = desc["digest"].as_str().unwrap_or_default().to_string();
        let mut entry = json!({"referrer": referrer, "artifact_type": desc["artifactType"]});
        let Some(hex) = referrer.strip_prefix("sha256:") else { continue };
        let size = desc["size"].as_u64().unwrap_or(0).min(crate::oci::MAX_MANIFEST as u64);
        let manifest: serde_json::Value = serde_json::from_slice(&read_blob_range(ctx, hex, 0, size).await?).unwrap_or_default();
        let layer = &manifest["layers"][0];
        match (layer["digest"].as_str().and_then(|d| d.strip_prefix("sha256:")), layer["size"].as_u64()) {
            (Some(l), Some(n)) if n <= scan::MAX_REPORT => match scan::read(&read_blob_range(ctx, l, 0, n).await?) {
                Some(Ok(report)) => {
                    if let (Some(o), serde_json::Value::Object(r)) = (entry.as_object_mut(), json!(report)) {
                        o.extend(r);
                    }
                }
                Some(Err(e)) => entry["error"] = json!(e),
                None => {}
            },
            (Some(_), Some(n)) => entry["error"] = json!(format!("the report is {n} bytes; reports over {} are not read", scan::MAX_REPORT)),
            _ => {}
        }
        out.push(entry);
    }
    Ok(out)
}

/// Adds one report's counts into a total.
fn add_counts(total: &mut std::collections::BTreeMap<String, u64>, scan: &serde_json::Value) {
    if let Some(sev) = scan["severities"].as_object() {
        for (k, v) in sev {
            *total.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
        }
    }
}

/// What the site serves of each declared image: its tags with the digest
/// served, the source digest it was copied from, and attached scan reports.
async fn images(ctx: &Ctx<'_>, site_id: i64) -> ApiResult {
    let Some(files) = ctx.db.first::<Files>(sql::config(site_id)).await? else {
        return Ok((200, json!({"images": []})));
    };
    let config = files.config().map_err(ApiError::internal)?;
    let at = active(ctx, site_id).await?;
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for image in &config.images {
        if !seen.insert(image.target.clone()) {
            continue;
        }
        let mut tags = Vec::new();
        if let Some(at) = &at {
            let prefix = crate::oci::tags_prefix(&image.target);
            for (path, row) in paths_under(ctx, &at.0, &at.1, &prefix).await? {
                let source = ctx.db.first::<serde_json::Value>(sql::sources_of(site_id, &[row.sha256.clone()])).await?;
                let scans = scans(ctx, at, &image.target, &row.sha256).await?;
                let mut totals = std::collections::BTreeMap::new();
                scans.iter().for_each(|s| add_counts(&mut totals, s));
                tags.push(json!({
                    "tag": &path[prefix.len()..],
                    "digest": format!("sha256:{}", row.sha256),
                    "source_digest": format!("sha256:{}", source.as_ref().and_then(|s| s["source"].as_str()).unwrap_or(&row.sha256)),
                    "media_type": row.content_type,
                    "scans": scans,
                    "severities": totals,
                }));
            }
        }
        out.push(json!({"name": image.name, "target": image.target, "source": format!("{}/{}", image.source_registry, image.source_repository), "tags": tags}));
    }
    Ok((200, json!({"images": out})))
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
