//! Runs of the declared mirror: started by hand, by a changed configuration
//! or by the Cron Trigger; fanned out on the queue (one message per declared
//! entry, which resolves its versions into units, then one per unit); each
//! unit copies one image or chart version from its source into the store;
//! the last unit to finish publishes the run's changes as one release,
//! activated by compare-and-swap. Decisions are `crate::sync`'s; this is I/O.

use super::db::{BatchError, Db, Start};
use super::service::{ApiResultOf, Ctx, ReleaseRow, SiteRow};
use super::upstream::Remote;
use super::{now_ms, BUCKET_BINDING};
use crate::api::{ApiError, Change};
use crate::auth::{Principal, Scope};
use crate::oci;
use crate::store::{self, sync as sql};
use crate::sync::config::{self, Chart, Config, Image, Part};
use crate::sync::plan::{self, Held, Unit};
use crate::sync::run::{self as r, Job, Trigger, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use worker::*;

/// The queue binding (see wrangler.toml).
pub const QUEUE_BINDING: &str = "MIRROR_QUEUE";

/// The configuration a run runs: the files as stored when it started.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct Files {
    pub images_file: Option<String>,
    pub images_text: Option<String>,
    pub charts_file: Option<String>,
    pub charts_text: Option<String>,
}

impl Files {
    /// What the files declare (they were checked when stored).
    pub fn config(&self) -> Result<Config, String> {
        let read = |file: &Option<String>, text: &Option<String>| -> Result<Config, String> {
            match (file, text) {
                (Some(f), Some(t)) => {
                    let part = Part::of_file(f).ok_or_else(|| format!("{f} is not a mirror file"))?;
                    config::parse(f, t, part).map_err(|p| format!("a stored configuration no longer reads: {}", p[0]))
                }
                _ => Ok(Config::default()),
            }
        };
        Ok(Config { images: read(&self.images_file, &self.images_text)?.images, charts: read(&self.charts_file, &self.charts_text)?.charts })
    }
}

/// One declared entry of a configuration by its index (images first).
enum Entry<'a> {
    Image(&'a Image),
    Chart(&'a Chart),
}

fn entry(c: &Config, idx: usize) -> Option<Entry<'_>> {
    match c.images.get(idx) {
        Some(i) => Some(Entry::Image(i)),
        None => c.charts.get(idx - c.images.len()).map(Entry::Chart),
    }
}

/// An entry as a report names it.
fn entry_label(c: &Config, idx: usize) -> String {
    match entry(c, idx) {
        Some(Entry::Image(i)) => format!("image {}", i.name),
        Some(Entry::Chart(ch)) => format!("chart {}", ch.name),
        None => format!("entry {idx}"),
    }
}

fn system_ctx<'a>(env: &'a Env, db: &'a Db, site_id: i64) -> Ctx<'a> {
    Ctx { env, db, who: Principal::Token { id: "mirror".into(), site_id: Some(site_id), scope: Scope::Admin }, now: now_ms() }
}

fn batch_error(e: BatchError) -> ApiError {
    match e {
        BatchError::Precondition => ApiError::conflict("a precondition failed"),
        BatchError::Failed(e) => e,
    }
}

fn queue_error(e: Error) -> ApiError {
    ApiError::internal(format!("the mirror queue ({QUEUE_BINDING}) did not take the run's work: {e}"))
}

/// Starts a run of the site's stored configuration (`only`: the entries of
/// one image or chart name, as declared or as its target). Returns the run's id.
pub(super) async fn start(env: &Env, db: &Db, site_id: i64, trigger: Trigger, only: Option<&str>) -> ApiResultOf<i64> {
    let files: Files = db
        .first(sql::config(site_id))
        .await?
        .ok_or_else(|| ApiError::new(409, "no_config", "the site has no mirror configuration; PUT …/mirror/config first"))?;
    let c = files.config().map_err(ApiError::internal)?;
    let names = c.images.iter().map(|i| (&i.name, &i.target)).chain(c.charts.iter().map(|ch| (&ch.name, &ch.target)));
    let entries: Vec<usize> = names.enumerate().filter(|(_, (n, t))| only.map_or(true, |o| *n == o || *t == o)).map(|(i, _)| i).collect();
    if let (Some(o), true) = (only, entries.is_empty()) {
        return Err(ApiError::not_found(format!("the mirror configuration declares no image or chart named {o}")));
    }
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let text = serde_json::to_string(&files).map_err(|e| ApiError::internal(e.to_string()))?;
    db.batch(sql::create_run(site_id, &nonce, trigger.as_str(), only, &text, &entries, now_ms())).await.map_err(batch_error)?;
    #[derive(Deserialize)]
    struct Id {
        id: i64,
    }
    let run = db.first::<Id>(sql::run_by_nonce(&nonce)).await?.ok_or_else(|| ApiError::internal("the run was not created"))?.id;
    if entries.is_empty() {
        db.run(sql::finish_run(run, "done", None, Some("the configuration declares nothing"), now_ms())).await?;
        return Ok(run);
    }
    let queue = env.queue(QUEUE_BINDING).map_err(queue_error)?;
    let jobs: Vec<Job> = entries.iter().map(|&entry| Job::Entry { run, entry }).collect();
    for chunk in jobs.chunks(100) {
        queue.send_batch(chunk.to_vec()).await.map_err(queue_error)?;
    }
    Ok(run)
}

/// The Cron Trigger: a run for every site whose schedule is due (counted
/// from its last scheduled run), and runs left stuck fail what they could not finish.
pub(super) async fn scheduled(env: &Env) -> std::result::Result<(), ApiError> {
    let db = Db::open(env, Start::Primary)?;
    let now = now_ms();
    #[derive(Deserialize)]
    struct S {
        site_id: i64,
        schedule: String,
        schedule_since: Option<f64>,
    }
    for s in db.all::<S>(sql::schedules()).await? {
        let Ok(schedule) = crate::sync::schedule::Schedule::parse(&s.schedule) else { continue };
        let since = s.schedule_since.map_or(0, |v| v as i64);
        if !schedule.due(since, now) {
            continue;
        }
        // One invocation takes the due time; another that read the same row starts nothing.
        if db.run(sql::move_schedule(s.site_id, since, now)).await? == 1 {
            if let Err(e) = start(env, &db, s.site_id, Trigger::Schedule, None).await {
                console_warn!("mirror: the scheduled run of site {} did not start: {}", s.site_id, e.message);
            }
        }
    }
    sweep_stuck(env, &db, now).await
}

/// How long a run may take before the sweep fails what it left unfinished.
const STUCK_AFTER_MS: i64 = 6 * 3600 * 1000;

async fn sweep_stuck(env: &Env, db: &Db, now: i64) -> std::result::Result<(), ApiError> {
    #[derive(Deserialize)]
    struct S {
        id: i64,
        site_id: i64,
    }
    for s in db.all::<S>(sql::stuck_runs(now - STUCK_AFTER_MS)).await? {
        db.batch(sql::fail_unfinished(s.id, "timeout: the run did not finish within 6 hours", now)).await.map_err(batch_error)?;
        publish_if_complete(env, db, s.id, s.site_id).await;
    }
    Ok(())
}

/// The queue consumer: each message is an entry or a unit of a run.
pub(super) async fn consume(batch: MessageBatch<Job>, env: &Env) -> Result<()> {
    let db = Db::open(env, Start::Primary).map_err(|e| Error::RustError(e.message))?;
    for message in batch.iter() {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                console_warn!("mirror: a message that is not a job: {e}");
                continue;
            }
        };
        let outcome = match message.body().clone() {
            Job::Entry { run, entry } => resolve(env, &db, run, entry).await,
            Job::Unit { run, seq } => unit(env, &db, run, seq).await,
        };
        match outcome {
            Ok(None) => message.ack(),
            Ok(Some(delay)) => message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay).build()),
            Err(e) => {
                console_warn!("mirror: {:?} failed: {}", message.body(), e.message);
                message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(5).build());
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct RunRow {
    site_id: i64,
    config: String,
}

async fn run_config(db: &Db, run: i64) -> ApiResultOf<Option<(i64, Config)>> {
    let Some(row) = db.first::<RunRow>(sql::run(run)).await? else { return Ok(None) };
    let files: Files = serde_json::from_str(&row.config).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Some((row.site_id, files.config().map_err(ApiError::internal)?)))
}

/// Why an entry or unit stops short: for now (try again after a pause) or for good.
enum Stop {
    Retry { reason: String, retry_after: Option<u32> },
    Fail(String),
}

/// An upstream's answer to `what`, judged: the response when it is a success.
fn judged(resp: Response, what: &str) -> std::result::Result<Response, Stop> {
    let after = r::retry_after(resp.headers().get("retry-after").ok().flatten().as_deref());
    match r::judge(resp.status_code(), what, after) {
        Verdict::Ok => Ok(resp),
        Verdict::Retry { reason, retry_after } => Err(Stop::Retry { reason, retry_after }),
        Verdict::Fail(reason) => Err(Stop::Fail(reason)),
    }
}

fn content_length(h: &Headers) -> Option<u64> {
    h.get("content-length").ok().flatten().and_then(|l| l.trim().parse().ok())
}

/// An upstream that could not be reached (or a token endpoint that failed): passing.
fn unreachable(e: oci::OciError) -> Stop {
    if e.status == 500 {
        return Stop::Fail(e.message);
    }
    Stop::Retry { reason: e.message, retry_after: None }
}

/// Resolves an entry's versions into units, once. Some(delay): try again later.
async fn resolve(env: &Env, db: &Db, run: i64, idx: usize) -> ApiResultOf<Option<u32>> {
    #[derive(Deserialize)]
    struct A {
        attempts: f64,
    }
    let Some(a) = db.first::<A>(sql::start_entry(run, idx)).await? else { return Ok(None) };
    let Some((site_id, c)) = run_config(db, run).await? else { return Ok(None) };
    let now = now_ms();
    let (units, reason) = match entry(&c, idx) {
        None => (vec![], Some("the entry is not in the run's configuration".to_string())),
        Some(e) => match resolve_entry(env, db, site_id, idx, e, now).await? {
            Ok(units) => (units, None),
            Err(Stop::Retry { reason, retry_after }) if (a.attempts as u32) < r::MAX_ATTEMPTS => {
                console_warn!("mirror run {run}: entry {idx}: {reason}; trying again");
                return Ok(Some(r::backoff(a.attempts as u32, retry_after)));
            }
            Err(Stop::Retry { reason, .. }) | Err(Stop::Fail(reason)) => (vec![], Some(format!("{}: {reason}", entry_label(&c, idx)))),
        },
    };
    db.batch(sql::resolve_entry(run, idx, &units, reason.as_deref(), now)).await.map_err(batch_error)?;
    let jobs: Vec<Job> = units.iter().filter(|u| u.state == "pending").map(|u| Job::Unit { run, seq: u.seq }).collect();
    if !jobs.is_empty() {
        let queue = env.queue(QUEUE_BINDING).map_err(queue_error)?;
        for chunk in jobs.chunks(100) {
            queue.send_batch(chunk.to_vec()).await.map_err(queue_error)?;
        }
    }
    publish_if_complete(env, db, run, site_id).await;
    Ok(None)
}

async fn site_row(db: &Db, site_id: i64) -> ApiResultOf<SiteRow> {
    db.first(store::site_by_id(site_id)).await?.ok_or_else(|| ApiError::not_found("the site is gone"))
}

/// The site's active release: every path under `prefix` (the rest of the
/// path after it) with its blob.
async fn active_under(env: &Env, db: &Db, site_id: i64, prefix: &str) -> ApiResultOf<Vec<(String, String)>> {
    let site = site_row(db, site_id).await?;
    let Some(active) = site.active_release_id else { return Ok(vec![]) };
    let ctx = system_ctx(env, db, site_id);
    let rel = ctx.release(site_id, active).await?;
    let paths = super::service::paths_under(&ctx, &site, &rel, prefix).await?;
    Ok(paths.into_iter().map(|(p, row)| (p[prefix.len()..].to_string(), row.sha256)).collect())
}

fn changes_json(changes: &[Change]) -> Option<String> {
    serde_json::to_string(changes).ok()
}

async fn resolve_entry(env: &Env, db: &Db, site_id: i64, idx: usize, e: Entry<'_>, now: i64) -> ApiResultOf<std::result::Result<Vec<sql::NewUnit>, Stop>> {
    match e {
        Entry::Image(i) => resolve_image(env, db, site_id, idx, i, now).await,
        Entry::Chart(c) => resolve_chart(env, db, site_id, idx, c).await,
    }
}

async fn resolve_image(env: &Env, db: &Db, site_id: i64, idx: usize, image: &Image, now: i64) -> ApiResultOf<std::result::Result<Vec<sql::NewUnit>, Stop>> {
    let up = r::upstream_of(image);
    let remote = Remote { env, site_id, up: &up, repo: image.source_repository.clone(), now };
    // The versions: by name, or chosen from the source's tags.
    let wanted = if image.versions.lists() {
        #[derive(Deserialize)]
        struct List {
            tags: Option<Vec<String>>,
        }
        let mut available = Vec::new();
        let mut page = Some("tags/list?n=1000".to_string());
        let mut pages = 0;
        while let Some(suffix) = page.take().filter(|_| pages < r::MAX_TAG_PAGES) {
            pages += 1;
            let resp = match remote.call(Method::Get, &suffix, None).await {
                Ok(resp) => resp,
                Err(e) => return Ok(Err(unreachable(e))),
            };
            let mut resp = match judged(resp, &format!("the tags of {}", image.source_repository)) {
                Ok(resp) => resp,
                Err(stop) => return Ok(Err(stop)),
            };
            page = r::next_tags_page(resp.headers().get("link").ok().flatten().as_deref());
            match resp.json::<List>().await {
                Ok(l) => available.extend(l.tags.unwrap_or_default()),
                Err(e) => return Ok(Err(Stop::Fail(format!("the source's tag list does not read: {e}")))),
            }
        }
        image.versions.pick(&available)
    } else {
        image.versions.exact.clone()
    };
    // What the site serves under the target's tags, and what it was copied from.
    let tags = active_under(env, db, site_id, &oci::tags_prefix(&image.target)).await?;
    let served: Vec<String> = tags.iter().map(|(_, d)| d.clone()).collect();
    #[derive(Deserialize)]
    struct Src {
        served: String,
        source: String,
    }
    let sources: BTreeMap<String, String> = db.all::<Src>(sql::sources_of(site_id, &served)).await?.into_iter().map(|s| (s.served, s.source)).collect();
    let held: BTreeMap<String, Held> = tags
        .into_iter()
        .map(|(tag, d)| {
            let source = sources.get(&d).cloned().unwrap_or_else(|| d.clone());
            (tag, Held { served: format!("sha256:{d}"), source: format!("sha256:{source}") })
        })
        .collect();
    // Each wanted tag at the source, with HEAD (what pull quotas do not count).
    let accept = oci::accept_all();
    let mut upstream: BTreeMap<String, std::result::Result<String, String>> = BTreeMap::new();
    for tag in &wanted {
        let answer = match remote.call(Method::Head, &format!("manifests/{tag}"), Some(&accept)).await {
            Ok(resp) => match judged(resp, &format!("{}:{tag}", image.source_repository)) {
                Ok(resp) => match resp.headers().get("docker-content-digest").ok().flatten() {
                    Some(d) if oci::digest_hex(&d).is_ok() => Ok(d),
                    _ => Err(format!("the source gave no Docker-Content-Digest for {tag}")),
                },
                Err(Stop::Fail(reason)) => Err(reason),
                Err(stop) => return Ok(Err(stop)),
            },
            Err(e) => return Ok(Err(unreachable(e))),
        };
        upstream.insert(tag.clone(), answer);
    }
    let mut units = Vec::new();
    for (i, u) in plan::units(&wanted, &upstream, &held).into_iter().enumerate() {
        let seq = r::unit_seq(idx, i);
        units.push(match u {
            Unit::Skip { tag, digest } => sql::NewUnit {
                source_digest: Some(digest[7..].to_string()),
                digest: held.get(&tag).map(|h| h.served[7..].to_string()),
                reason: Some("exists: the site serves this digest under the tag".into()),
                ..sql::NewUnit::new(seq, "image", &image.name, &image.target, &tag, "skipped")
            },
            Unit::Copy { tag, digest } => sql::NewUnit { source_digest: Some(digest[7..].to_string()), ..sql::NewUnit::new(seq, "image", &image.name, &image.target, &tag, "pending") },
            Unit::Failed { tag, reason } => sql::NewUnit { reason: Some(reason), ..sql::NewUnit::new(seq, "image", &image.name, &image.target, &tag, "failed") },
        });
    }
    let failed: Vec<String> = upstream.iter().filter(|(_, a)| a.is_err()).map(|(t, _)| t.clone()).collect();
    let site_tags: BTreeMap<String, Held> = held.into_iter().filter(|(t, _)| !failed.contains(t)).collect();
    for (j, tag) in plan::pruned(image.prune, &wanted, &site_tags).into_iter().enumerate() {
        let gone = [Change { path: oci::tag_path(&image.target, &tag), sha256: None, content_type: None }];
        units.push(sql::NewUnit {
            changes: changes_json(&gone),
            reason: Some("pruned: no longer declared".into()),
            ..sql::NewUnit::new(r::unit_seq(idx, wanted.len() + j), "image", &image.name, &image.target, &tag, "pruned")
        });
    }
    Ok(Ok(units))
}

/// A chart repository's index.yaml, read for one chart.
async fn chart_index(env: &Env, chart: &Chart) -> std::result::Result<Vec<crate::sync::charts::Listed>, Stop> {
    let url = format!("{}/index.yaml", chart.repo_url.trim_end_matches('/'));
    let auth = chart_auth(env, chart).map_err(Stop::Fail)?;
    let resp = super::upstream::fetch(&url, Method::Get, None, auth.as_deref()).await.map_err(|e| Stop::Retry { reason: format!("{url}: {e}"), retry_after: None })?;
    let mut resp = judged(resp, &url)?;
    let text = resp.text().await.map_err(|e| Stop::Retry { reason: format!("{url}: {e}"), retry_after: None })?;
    crate::sync::charts::listed(&text, &chart.repo_url, &chart.name).map_err(Stop::Fail)
}

fn chart_auth(env: &Env, chart: &Chart) -> std::result::Result<Option<String>, String> {
    let Some(c) = &chart.credentials else { return Ok(None) };
    super::upstream::basic_auth(env, &c.username, &c.password_secret, "chart repository").map(Some)
}

async fn resolve_chart(env: &Env, db: &Db, site_id: i64, idx: usize, chart: &Chart) -> ApiResultOf<std::result::Result<Vec<sql::NewUnit>, Stop>> {
    let listed = match chart_index(env, chart).await {
        Ok(l) => l,
        Err(stop) => return Ok(Err(stop)),
    };
    let available: Vec<String> = listed.iter().map(|l| l.version.clone()).collect();
    let wanted = if chart.versions.lists() { chart.versions.pick(&available) } else { chart.versions.exact.clone() };
    // What the site's chart repository holds of this chart: version → archive digest.
    let prefix = crate::formats::helm::member_path(&chart.repo_name, "");
    let file_prefix = format!("{}-", chart.name);
    let held: BTreeMap<String, String> = active_under(env, db, site_id, &prefix)
        .await?
        .into_iter()
        .filter_map(|(file, sha)| Some((file.strip_prefix(&file_prefix)?.strip_suffix(".tgz")?.to_string(), sha)))
        .collect();
    let mut units = Vec::new();
    for (i, version) in wanted.iter().enumerate() {
        let seq = r::unit_seq(idx, i);
        let base = sql::NewUnit::new(seq, "chart", &chart.name, &chart.repo_name, version, "pending");
        let Some(l) = listed.iter().find(|l| &l.version == version) else {
            units.push(sql::NewUnit { state: "failed", reason: Some(format!("upstream 404: {} {version} is not in {}/index.yaml", chart.name, chart.repo_url)), ..base });
            continue;
        };
        let Some(digest) = l.digest.clone() else {
            units.push(sql::NewUnit { state: "failed", reason: Some(format!("{}/index.yaml gives no digest for {} {version} to check the archive against", chart.repo_url, chart.name)), ..base });
            continue;
        };
        if held.get(version) == Some(&digest) {
            units.push(sql::NewUnit { state: "skipped", digest: Some(digest.clone()), source_digest: Some(digest), reason: Some("exists: the repository holds this archive".into()), ..base });
        } else {
            units.push(sql::NewUnit { source_digest: Some(digest), source_url: Some(l.url.clone()), ..base });
        }
    }
    if chart.prune {
        let mut j = wanted.len();
        for version in held.keys().filter(|v| !wanted.contains(v)) {
            let member = crate::formats::helm::member_path(&chart.repo_name, &crate::formats::helm::chart::filename(&chart.name, version));
            let gone = [Change { path: format!("{member}.prov"), sha256: None, content_type: None }, Change { path: member, sha256: None, content_type: None }];
            units.push(sql::NewUnit { changes: changes_json(&gone), reason: Some("pruned: no longer declared".into()), ..sql::NewUnit::new(r::unit_seq(idx, j), "chart", &chart.name, &chart.repo_name, version, "pruned") });
            j += 1;
        }
    }
    Ok(Ok(units))
}

/// What one unit moved.
#[derive(Default)]
struct Tally {
    bytes: i64,
    copied: i64,
    held: i64,
}

/// Carries out one unit. Some(delay): try again later.
async fn unit(env: &Env, db: &Db, run: i64, seq: i64) -> ApiResultOf<Option<u32>> {
    #[derive(Deserialize)]
    struct U {
        kind: String,
        entry: f64,
        version: String,
        source_digest: Option<String>,
        source_url: Option<String>,
        attempts: f64,
    }
    let now = now_ms();
    let Some(u) = db.first::<U>(sql::start_unit(run, seq, now)).await? else { return Ok(None) };
    let Some((site_id, c)) = run_config(db, run).await? else { return Ok(None) };
    let source = u.source_digest.clone().unwrap_or_default();
    let mut tally = Tally::default();
    let result = match (entry(&c, u.entry as usize), u.kind.as_str()) {
        (Some(Entry::Image(i)), "image") => copy_image(env, db, site_id, i, &u.version, &source, &mut tally, now).await?,
        (Some(Entry::Chart(ch)), "chart") => copy_chart(env, db, site_id, ch, &source, u.source_url.as_deref().unwrap_or(""), &mut tally, now).await?,
        _ => Err(Stop::Fail("the unit's entry is not in the run's configuration".into())),
    };
    let f = match result {
        Ok((served, changes)) => sql::Finished {
            state: "copied",
            digest: Some(served),
            changes: changes_json(&changes),
            bytes: tally.bytes,
            blobs_copied: tally.copied,
            blobs_held: tally.held,
            reason: None,
        },
        Err(Stop::Retry { reason, retry_after }) if (u.attempts as u32) < r::MAX_ATTEMPTS => {
            console_warn!("mirror run {run}: unit {seq}: {reason}; trying again");
            return Ok(Some(r::backoff(u.attempts as u32, retry_after)));
        }
        Err(Stop::Retry { reason, .. }) => sql::Finished { state: "failed", reason: Some(format!("{reason} (after {} tries)", u.attempts as u32)), bytes: tally.bytes, ..Default::default() },
        Err(Stop::Fail(reason)) => sql::Finished { state: "failed", reason: Some(reason), bytes: tally.bytes, ..Default::default() },
    };
    db.batch(sql::finish_unit(run, seq, &f, now_ms())).await.map_err(batch_error)?;
    publish_if_complete(env, db, run, site_id).await;
    Ok(None)
}

type Copied = std::result::Result<(String, Vec<Change>), Stop>;

/// A manifest from the source by digest, checked against it.
async fn manifest(remote: &Remote<'_>, hex: &str) -> std::result::Result<(Vec<u8>, oci::ManifestInfo), Stop> {
    let what = format!("manifest sha256:{hex} of {}", remote.repo);
    let resp = remote.call(Method::Get, &format!("manifests/sha256:{hex}"), Some(&oci::accept_all())).await.map_err(unreachable)?;
    let mut resp = judged(resp, &what)?;
    if content_length(resp.headers()).is_some_and(|l| l as usize > oci::MAX_MANIFEST) {
        return Err(Stop::Fail(format!("{what} is larger than {} bytes", oci::MAX_MANIFEST)));
    }
    let ct = resp.headers().get("content-type").ok().flatten();
    let body = resp.bytes().await.map_err(|e| Stop::Retry { reason: format!("{what}: {e}"), retry_after: None })?;
    let got = crate::auth::sha256_hex(&body);
    if got != hex {
        return Err(Stop::Fail(format!("digest mismatch: the source sent {what} with sha256:{got}")));
    }
    let info = oci::inspect_manifest(&body, ct.as_deref()).map_err(|e| Stop::Fail(format!("{what}: {}", e.message)))?;
    Ok((body, info))
}

/// Copies a blob from the source into the store (R2 checks the digest as it
/// stores it) unless the site holds it already.
async fn copy_blob(env: &Env, db: &Db, remote: &Remote<'_>, site_id: i64, hex: &str, tally: &mut Tally, now: i64) -> ApiResultOf<std::result::Result<(), Stop>> {
    if db.first::<serde_json::Value>(store::site_blob(site_id, hex)).await?.is_some() {
        tally.held += 1;
        return Ok(Ok(()));
    }
    let what = format!("blob sha256:{hex} of {}", remote.repo);
    let resp = match remote.call(Method::Get, &format!("blobs/sha256:{hex}"), None).await {
        Ok(resp) => resp,
        Err(e) => return Ok(Err(unreachable(e))),
    };
    let resp = match judged(resp, &what) {
        Ok(resp) => resp,
        Err(stop) => return Ok(Err(stop)),
    };
    Ok(keep_download(env, db, site_id, resp, hex, &what, tally, now).await?.map(|_| ()))
}

/// Streams a source's answer into the store under `hex` (R2 checks the
/// sha256 as it stores it) and records that the site holds it. Returns its size.
#[allow(clippy::too_many_arguments)]
async fn keep_download(env: &Env, db: &Db, site_id: i64, resp: Response, hex: &str, what: &str, tally: &mut Tally, now: i64) -> ApiResultOf<std::result::Result<u64, Stop>> {
    let Some(size) = content_length(resp.headers()) else { return Ok(Err(Stop::Fail(format!("the source sent {what} without a Content-Length")))) };
    let max = env.var("MAX_BLOB_BYTES").ok().and_then(|v| v.to_string().parse().ok()).unwrap_or(super::service::DEFAULT_MAX_BLOB_BYTES);
    if size > max {
        return Ok(Err(Stop::Fail(format!("{what} is {size} bytes; blobs are limited to {max}"))));
    }
    let ResponseBody::Stream(body) = resp.body() else { return Ok(Err(Stop::Fail(format!("{what} has no body")))) };
    let bucket = env.bucket(BUCKET_BINDING).map_err(|e| ApiError::internal(e.to_string()))?;
    let data = if size == 0 { Data::Empty } else { Data::ReadableStream(body.clone()) };
    match super::blobs::put_checked(&bucket, &store::blob_key(hex), hex, data).await {
        Ok(_) => {}
        Err(super::blobs::PutError::Mismatch(m)) => return Ok(Err(Stop::Fail(format!("digest mismatch: {what} is not sha256:{hex} ({m})")))),
        Err(super::blobs::PutError::Failed(m)) => return Ok(Err(Stop::Retry { reason: format!("{what}: {m}"), retry_after: None })),
    }
    db.batch(store::insert_owned_blob(site_id, hex, size as i64, now)).await.map_err(batch_error)?;
    tally.bytes += size as i64;
    tally.copied += 1;
    Ok(Ok(size))
}

/// Keeps a manifest's bytes in the store as the site's.
async fn keep_manifest(env: &Env, db: &Db, site_id: i64, body: Vec<u8>, now: i64) -> ApiResultOf<String> {
    let hex = crate::auth::sha256_hex(&body);
    super::store_owned_bytes(env, db, site_id, body, &hex, now).await.map_err(ApiError::internal)?;
    Ok(hex)
}

/// Copies one image version: its manifest (or index and the declared
/// platforms' manifests) and their blobs. Returns what the site serves under
/// the tag and the paths the run's release gets.
#[allow(clippy::too_many_arguments)]
async fn copy_image(env: &Env, db: &Db, site_id: i64, image: &Image, tag: &str, source: &str, tally: &mut Tally, now: i64) -> ApiResultOf<Copied> {
    let up = r::upstream_of(image);
    let remote = Remote { env, site_id, up: &up, repo: image.source_repository.clone(), now };
    let target = &image.target;
    let (body, info) = match manifest(&remote, source).await {
        Ok(m) => m,
        Err(stop) => return Ok(Err(stop)),
    };
    let mut changes = Vec::new();
    let blob_changes = |blobs: &[String], changes: &mut Vec<Change>| {
        for b in blobs {
            let c = Change { path: oci::blob_path(target, b), sha256: Some(b.clone()), content_type: Some("application/octet-stream".into()) };
            if !changes.contains(&c) {
                changes.push(c);
            }
        }
    };
    let served_body = if info.manifests.is_empty() {
        for b in &info.blobs {
            if let Err(stop) = copy_blob(env, db, &remote, site_id, b, tally, now).await? {
                return Ok(Err(stop));
            }
        }
        blob_changes(&info.blobs, &mut changes);
        body
    } else {
        let p = match plan::plan_index(&body, &format!("sha256:{source}"), &image.platforms) {
            Ok(p) => p,
            Err(e) => return Ok(Err(Stop::Fail(format!("the index of {tag}: {e}")))),
        };
        if !p.missing.is_empty() {
            let list: Vec<String> = p.missing.iter().map(|m| m.to_string()).collect();
            return Ok(Err(Stop::Fail(format!("platform missing at the source: {tag} has no {}", list.join(", ")))));
        }
        for child in &p.copy {
            let hex = &child.digest[7..];
            let (cbody, cinfo) = match manifest(&remote, hex).await {
                Ok(m) => m,
                Err(stop) => return Ok(Err(stop)),
            };
            if !cinfo.manifests.is_empty() {
                return Ok(Err(Stop::Fail(format!("the index of {tag} lists another index (sha256:{hex}); nested indexes are not copied"))));
            }
            for b in &cinfo.blobs {
                if let Err(stop) = copy_blob(env, db, &remote, site_id, b, tally, now).await? {
                    return Ok(Err(stop));
                }
            }
            blob_changes(&cinfo.blobs, &mut changes);
            let kept = keep_manifest(env, db, site_id, cbody, now).await?;
            changes.push(Change { path: oci::manifest_path(target, &kept), sha256: Some(kept.clone()), content_type: Some(cinfo.media_type.clone()) });
        }
        p.rewritten.unwrap_or(body)
    };
    let served = keep_manifest(env, db, site_id, served_body, now).await?;
    if served != source {
        db.run(sql::record_source(site_id, &served, source)).await?;
    }
    changes.push(Change { path: oci::manifest_path(target, &served), sha256: Some(served.clone()), content_type: Some(info.media_type.clone()) });
    changes.push(Change { path: oci::tag_path(target, tag), sha256: Some(served.clone()), content_type: Some(info.media_type.clone()) });
    Ok(Ok((served, changes)))
}

/// Copies one chart version: the archive from the URL its repository's
/// index gives, checked against the index's digest as R2 stores it, and
/// inspected as the Helm format inspects an upload.
#[allow(clippy::too_many_arguments)]
async fn copy_chart(env: &Env, db: &Db, site_id: i64, chart: &Chart, digest: &str, url: &str, tally: &mut Tally, now: i64) -> ApiResultOf<Copied> {
    let what = format!("{} archive {url}", chart.name);
    let have = db.first::<serde_json::Value>(store::site_blob(site_id, digest)).await?.is_some();
    let size = if have {
        tally.held += 1;
        #[derive(Deserialize)]
        struct B {
            size: f64,
        }
        db.first::<B>(store::blob(digest)).await?.map_or(0, |b| b.size as u64)
    } else {
        let auth = match chart_auth(env, chart) {
            Ok(a) => a,
            Err(m) => return Ok(Err(Stop::Fail(m))),
        };
        // Credentials go only to the repository's own host.
        let same_host = |a: &str, b: &str| a.split('/').nth(2) == b.split('/').nth(2);
        let auth = auth.filter(|_| same_host(url, &chart.repo_url));
        let resp = match super::upstream::fetch(url, Method::Get, None, auth.as_deref()).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(Stop::Retry { reason: format!("{what}: {e}"), retry_after: None })),
        };
        let resp = match judged(resp, &what) {
            Ok(r) => r,
            Err(stop) => return Ok(Err(stop)),
        };
        match keep_download(env, db, site_id, resp, digest, &what, tally, now).await? {
            Ok(size) => size,
            Err(stop) => return Ok(Err(stop)),
        }
    };
    let ctx = system_ctx(env, db, site_id);
    let meta = match super::format_io::inspect::<crate::formats::Helm>(&ctx, digest, size).await {
        Ok(m) => m,
        Err(e) if e.status == 422 => return Ok(Err(Stop::Fail(e.message))),
        Err(e) => return Err(e),
    };
    if meta.name != chart.name {
        return Ok(Err(Stop::Fail(format!("the archive holds chart {}, not {}", meta.name, chart.name))));
    }
    use crate::formats::{Helm, Ingest};
    let (table, columns) = Helm::RECORDS;
    db.run(store::insert_records(table, columns, &[Helm::record(&meta, digest)], now)).await?;
    let admission = Helm::admission(&meta, digest, &chart.repo_name);
    Ok(Ok((digest.to_string(), admission.changes)))
}

/// When the run's last entry and unit are done: its changes become one
/// release, activated by compare-and-swap (planned again on top of whatever
/// landed first). Errors end the run as failed, with the reason.
async fn publish_if_complete(env: &Env, db: &Db, run: i64, site_id: i64) {
    match db.run(sql::claim_publication(run)).await {
        Ok(1) => {}
        Ok(_) => return,
        Err(e) => {
            console_warn!("mirror run {run}: {}", e.message);
            return;
        }
    }
    let (state, produced, message) = match publish(env, db, run, site_id).await {
        Ok(Some(rel)) => ("done", Some(rel), None),
        Ok(None) => ("done", None, Some("nothing changed: no release".to_string())),
        Err(e) => ("failed", None, Some(format!("the run's release was not activated: {}", e.message))),
    };
    if let Err(e) = db.run(sql::finish_run(run, state, produced, message.as_deref(), now_ms())).await {
        console_warn!("mirror run {run}: {}", e.message);
    }
}

async fn publish(env: &Env, db: &Db, run: i64, site_id: i64) -> ApiResultOf<Option<i64>> {
    #[derive(Deserialize)]
    struct C {
        changes: String,
    }
    let mut changes: Vec<Change> = Vec::new();
    for c in db.all::<C>(sql::run_changes(run)).await? {
        #[derive(Deserialize)]
        struct One {
            path: String,
            sha256: Option<String>,
            content_type: Option<String>,
        }
        let list: Vec<One> = serde_json::from_str(&c.changes).map_err(|e| ApiError::internal(e.to_string()))?;
        changes.extend(list.into_iter().map(|o| Change { path: o.path, sha256: o.sha256, content_type: o.content_type }));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct Repo {
        target: String,
    }
    let repos: Vec<String> = db.all::<Repo>(sql::chart_repositories(run)).await?.into_iter().map(|r| r.target).collect();
    let ctx = system_ctx(env, db, site_id);
    let site = site_row(db, site_id).await?;
    let note = format!("mirror run {run}");
    let mut pause_ms = 50u64;
    for _ in 0..8 {
        let draft: ReleaseRow = db.first(store::create_release_from_active(site_id, Some(&note), now_ms())).await?.ok_or_else(|| ApiError::internal("no draft was created"))?;
        let outcome = async {
            for (i, chunk) in changes.chunks(50).enumerate() {
                let extra = if i == 0 { repos.iter().map(|r| crate::store::helm::mark_dirty(draft.id, r)).collect() } else { vec![] };
                db.batch(store::apply_changes_with(site_id, draft.id, chunk, extra)).await?;
            }
            for f in super::formats::ALL {
                f.prepare_activation(&ctx, &site, &draft).await.map_err(BatchError::Failed)?;
            }
            db.batch(store::activate(site_id, draft.id, draft.parent_id, now_ms())).await
        }
        .await;
        match outcome {
            Ok(_) => {
                super::memory::forget_routes();
                return Ok(Some(draft.id));
            }
            Err(BatchError::Precondition) => {
                let _ = db.batch(store::delete_draft(site_id, draft.id)).await;
                super::service::back_off(&mut pause_ms, 2_000).await;
            }
            Err(BatchError::Failed(e)) => {
                let _ = db.batch(store::delete_draft(site_id, draft.id)).await;
                return Err(e);
            }
        }
    }
    Err(ApiError::new(503, "busy", "the site kept changing"))
}
