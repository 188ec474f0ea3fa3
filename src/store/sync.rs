//! The declarative mirror's stored configuration.

use super::{stmt, Stmt, Val};

pub fn config(site_id: i64) -> Stmt {
    stmt("SELECT images_file, images_text, charts_file, charts_text, updated_at FROM mirror_configs WHERE site_id = ?1", vec![site_id.into()])
}

pub fn settings(site_id: i64) -> Stmt {
    stmt("SELECT schedule, schedule_since FROM mirror_configs WHERE site_id = ?1", vec![site_id.into()])
}

/// Sets the schedule (None: by hand only); it counts from `now` when it
/// changes, and keeps counting from where it did when it is set again unchanged.
pub fn put_schedule(site_id: i64, schedule: Option<&str>, now: i64) -> Stmt {
    stmt(
        "INSERT INTO mirror_configs(site_id, updated_at, schedule, schedule_since) VALUES (?1, ?3, ?2, ?3) \
         ON CONFLICT(site_id) DO UPDATE SET \
         schedule_since = CASE WHEN schedule IS ?2 THEN schedule_since ELSE ?3 END, schedule = ?2",
        vec![site_id.into(), schedule.into(), now.into()],
    )
}

/// Stores the images' file (`images`), the charts' file (`charts`) or both;
/// a part given as None keeps what is stored.
pub fn put_config(site_id: i64, images: Option<(&str, &str)>, charts: Option<(&str, &str)>, now: i64) -> Stmt {
    let part = |p: Option<(&str, &str)>| (p.map(|(f, _)| f.to_string()), p.map(|(_, t)| t.to_string()));
    let ((i_file, i_text), (c_file, c_text)) = (part(images), part(charts));
    stmt(
        "INSERT INTO mirror_configs(site_id, images_file, images_text, charts_file, charts_text, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(site_id) DO UPDATE SET \
         images_file = CASE WHEN ?7 THEN excluded.images_file ELSE images_file END, \
         images_text = CASE WHEN ?7 THEN excluded.images_text ELSE images_text END, \
         charts_file = CASE WHEN ?8 THEN excluded.charts_file ELSE charts_file END, \
         charts_text = CASE WHEN ?8 THEN excluded.charts_text ELSE charts_text END, \
         updated_at = excluded.updated_at",
        vec![site_id.into(), i_file.into(), i_text.into(), c_file.into(), c_text.into(), now.into(), i64::from(images.is_some()).into(), i64::from(charts.is_some()).into()],
    )
}

// ---------------------------------------------------------------- runs

/// Sites whose schedule may be due, with the time it counts from.
pub fn schedules() -> Stmt {
    stmt("SELECT site_id, schedule, schedule_since FROM mirror_configs WHERE schedule IS NOT NULL ORDER BY site_id", vec![])
}

/// Moves a schedule's count on to `to`, unless another invocation did first
/// (it still counts from `from`): one scheduled run per due time.
pub fn move_schedule(site_id: i64, from: i64, to: i64) -> Stmt {
    stmt(
        "UPDATE mirror_configs SET schedule_since = ?3 WHERE site_id = ?1 AND schedule_since = ?2",
        vec![site_id.into(), from.into(), to.into()],
    )
}

/// A new run with its entries (`entries`: indexes into the configuration it
/// runs), in one batch; the run is the site's newest.
pub fn create_run(site_id: i64, nonce: &str, trigger: &str, only: Option<&str>, config: &str, entries: &[usize], now: i64) -> Vec<Stmt> {
    let list = serde_json::to_string(entries).unwrap_or_else(|_| "[]".into());
    vec![
        stmt(
            "INSERT INTO mirror_runs(site_id, nonce, trigger, only_name, config, state, entries_pending, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7)",
            vec![site_id.into(), nonce.into(), trigger.into(), only.into(), config.into(), (entries.len() as i64).into(), now.into()],
        ),
        stmt(
            "INSERT INTO mirror_entries(run_id, idx, site_id, state) \
             SELECT (SELECT id FROM mirror_runs WHERE nonce = ?2), value, ?1, 'pending' FROM json_each(?3)",
            vec![site_id.into(), nonce.into(), list.into()],
        ),
    ]
}

/// The id of the run created with `nonce`.
pub fn run_by_nonce(nonce: &str) -> Stmt {
    stmt("SELECT id FROM mirror_runs WHERE nonce = ?1", vec![nonce.into()])
}

/// An entry's next try: counted, and the count (none once resolved).
pub fn start_entry(run_id: i64, idx: usize) -> Stmt {
    stmt(
        "UPDATE mirror_entries SET attempts = attempts + 1 WHERE run_id = ?1 AND idx = ?2 AND state = 'pending' RETURNING attempts",
        vec![run_id.into(), (idx as i64).into()],
    )
}

const RUN_COLUMNS: &str = "id, site_id, trigger, only_name, state, entries_pending, units_total, units_done, produced, message, created_at, finished_at";

pub fn run(run_id: i64) -> Stmt {
    stmt(format!("SELECT {RUN_COLUMNS}, config FROM mirror_runs WHERE id = ?1"), vec![run_id.into()])
}

pub fn site_run(site_id: i64, run_id: i64) -> Stmt {
    stmt(format!("SELECT {RUN_COLUMNS} FROM mirror_runs WHERE site_id = ?1 AND id = ?2"), vec![site_id.into(), run_id.into()])
}

/// A site's runs, newest first, with their units counted by state.
pub fn runs(site_id: i64, before: i64, limit: u32) -> Stmt {
    stmt(
        format!(
            "SELECT {RUN_COLUMNS}, \
               (SELECT COUNT(*) FROM mirror_units u WHERE u.run_id = r.id AND u.state = 'copied') AS copied, \
               (SELECT COUNT(*) FROM mirror_units u WHERE u.run_id = r.id AND u.state = 'skipped') AS skipped, \
               (SELECT COUNT(*) FROM mirror_units u WHERE u.run_id = r.id AND u.state = 'failed') AS failed, \
               (SELECT COUNT(*) FROM mirror_units u WHERE u.run_id = r.id AND u.state = 'pruned') AS pruned, \
               (SELECT COALESCE(SUM(bytes), 0) FROM mirror_units u WHERE u.run_id = r.id) AS bytes \
             FROM mirror_runs r WHERE site_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ),
        vec![site_id.into(), before.into(), i64::from(limit).into()],
    )
}

pub fn units(run_id: i64) -> Stmt {
    stmt(
        "SELECT seq, kind, name, target, version, state, source_digest, digest, reason, bytes, blobs_copied, blobs_held, attempts, started_at, finished_at \
         FROM mirror_units WHERE run_id = ?1 ORDER BY seq",
        vec![run_id.into()],
    )
}

/// Entries of a run that resolved into no unit, with the reason.
pub fn entry_failures(run_id: i64) -> Stmt {
    stmt("SELECT idx, reason FROM mirror_entries WHERE run_id = ?1 AND reason IS NOT NULL ORDER BY idx", vec![run_id.into()])
}

pub fn entry_pending(run_id: i64, idx: usize) -> Stmt {
    stmt("SELECT idx FROM mirror_entries WHERE run_id = ?1 AND idx = ?2 AND state = 'pending'", vec![run_id.into(), (idx as i64).into()])
}

/// A unit as an entry resolves it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUnit {
    pub seq: i64,
    pub kind: &'static str,
    pub name: String,
    pub target: String,
    pub version: String,
    /// pending, skipped or failed.
    pub state: &'static str,
    pub source_digest: Option<String>,
    pub source_url: Option<String>,
    pub digest: Option<String>,
    pub reason: Option<String>,
    /// What a unit finished at once changes (a pruned version's removal).
    pub changes: Option<String>,
}

impl NewUnit {
    /// A unit with nothing recorded yet besides where it stands.
    pub fn new(seq: i64, kind: &'static str, name: &str, target: &str, version: &str, state: &'static str) -> NewUnit {
        NewUnit {
            seq,
            kind,
            name: name.into(),
            target: target.into(),
            version: version.into(),
            state,
            source_digest: None,
            source_url: None,
            digest: None,
            reason: None,
            changes: None,
        }
    }
}

/// An entry resolved into `units` (those not pending are already finished),
/// or into none with `reason`: once, however often its message comes.
pub fn resolve_entry(run_id: i64, idx: usize, units: &[NewUnit], reason: Option<&str>, now: i64) -> Vec<Stmt> {
    let pending = "EXISTS (SELECT 1 FROM mirror_entries WHERE run_id = ?1 AND idx = ?2 AND state = 'pending')";
    let (run, i) = (Val::from(run_id), Val::from(idx as i64));
    let site = format!("(SELECT site_id FROM mirror_runs WHERE id = {run_id})");
    let mut out = Vec::new();
    for u in units {
        out.push(stmt(
            format!(
                "INSERT OR IGNORE INTO mirror_units(run_id, seq, site_id, kind, entry, name, target, version, state, source_digest, source_url, digest, reason, changes, started_at, finished_at) \
                 SELECT ?1, ?3, {site}, ?4, ?2, ?5, ?6, ?7, ?8, ?9, ?13, ?10, ?11, ?14, ?12, CASE WHEN ?8 = 'pending' THEN NULL ELSE ?12 END WHERE {pending}"
            ),
            vec![
                run.clone(),
                i.clone(),
                u.seq.into(),
                u.kind.into(),
                (&u.name).into(),
                (&u.target).into(),
                (&u.version).into(),
                u.state.into(),
                u.source_digest.clone().into(),
                u.digest.clone().into(),
                u.reason.clone().into(),
                now.into(),
                u.source_url.clone().into(),
                u.changes.clone().into(),
            ],
        ));
    }
    let finished = units.iter().filter(|u| u.state != "pending").count() as i64;
    out.push(stmt(
        format!("UPDATE mirror_runs SET entries_pending = entries_pending - 1, units_total = units_total + ?3, units_done = units_done + ?4 WHERE id = ?1 AND {pending}"),
        vec![run.clone(), i.clone(), (units.len() as i64).into(), finished.into()],
    ));
    out.push(stmt("UPDATE mirror_entries SET state = 'resolved', reason = ?3 WHERE run_id = ?1 AND idx = ?2 AND state = 'pending'", vec![run, i, reason.into()]));
    out
}

/// A unit's next try: counted, and its row (None once it has finished).
pub fn start_unit(run_id: i64, seq: i64, now: i64) -> Stmt {
    stmt(
        "UPDATE mirror_units SET attempts = attempts + 1, started_at = COALESCE(started_at, ?3) \
         WHERE run_id = ?1 AND seq = ?2 AND state = 'pending' RETURNING kind, entry, name, target, version, source_digest, source_url, attempts",
        vec![run_id.into(), seq.into(), now.into()],
    )
}

/// How a unit ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Finished {
    /// copied, skipped or failed.
    pub state: &'static str,
    pub digest: Option<String>,
    pub reason: Option<String>,
    pub bytes: i64,
    pub blobs_copied: i64,
    pub blobs_held: i64,
    /// JSON list of the changes it makes.
    pub changes: Option<String>,
}

/// A unit finished: counted once in its run.
pub fn finish_unit(run_id: i64, seq: i64, f: &Finished, now: i64) -> Vec<Stmt> {
    let pending = "EXISTS (SELECT 1 FROM mirror_units WHERE run_id = ?1 AND seq = ?2 AND state = 'pending')";
    vec![
        stmt(format!("UPDATE mirror_runs SET units_done = units_done + 1 WHERE id = ?1 AND {pending}"), vec![run_id.into(), seq.into()]),
        stmt(
            "UPDATE mirror_units SET state = ?3, digest = COALESCE(?4, digest), reason = ?5, bytes = ?6, blobs_copied = ?7, blobs_held = ?8, \
             changes = ?9, finished_at = ?10 WHERE run_id = ?1 AND seq = ?2 AND state = 'pending'",
            vec![
                run_id.into(),
                seq.into(),
                f.state.into(),
                f.digest.clone().into(),
                f.reason.clone().into(),
                f.bytes.into(),
                f.blobs_copied.into(),
                f.blobs_held.into(),
                f.changes.clone().into(),
                now.into(),
            ],
        ),
    ]
}

/// Takes the run's publication, once: when every entry and unit is done.
pub fn claim_publication(run_id: i64) -> Stmt {
    stmt(
        "UPDATE mirror_runs SET state = 'publishing' WHERE id = ?1 AND state = 'running' AND entries_pending = 0 AND units_done >= units_total",
        vec![run_id.into()],
    )
}

pub fn finish_run(run_id: i64, state: &str, produced: Option<i64>, message: Option<&str>, now: i64) -> Stmt {
    stmt(
        "UPDATE mirror_runs SET state = ?2, produced = ?3, message = ?4, finished_at = ?5 WHERE id = ?1",
        vec![run_id.into(), state.into(), produced.into(), message.into(), now.into()],
    )
}

/// What the run's copied and pruned units change, in unit order.
pub fn run_changes(run_id: i64) -> Stmt {
    stmt("SELECT changes FROM mirror_units WHERE run_id = ?1 AND state IN ('copied', 'pruned') AND changes IS NOT NULL ORDER BY seq", vec![run_id.into()])
}

/// The chart repositories the run changes (published again in its release).
pub fn chart_repositories(run_id: i64) -> Stmt {
    stmt("SELECT DISTINCT target FROM mirror_units WHERE run_id = ?1 AND kind = 'chart' AND state IN ('copied', 'pruned') ORDER BY target", vec![run_id.into()])
}

/// The source digest a served index was made from.
pub fn sources_of(site_id: i64, served: &[String]) -> Stmt {
    stmt(
        "SELECT served, source FROM mirror_sources WHERE site_id = ?1 AND served IN (SELECT value FROM json_each(?2))",
        vec![site_id.into(), serde_json::to_string(served).unwrap_or_else(|_| "[]".into()).into()],
    )
}

pub fn record_source(site_id: i64, served: &str, source: &str) -> Stmt {
    stmt(
        "INSERT INTO mirror_sources(site_id, served, source) VALUES (?1, ?2, ?3) ON CONFLICT(site_id, served) DO UPDATE SET source = excluded.source",
        vec![site_id.into(), served.into(), source.into()],
    )
}

/// Runs of any site still running, started before `before` (stuck: a
/// message lost, an invocation killed).
pub fn stuck_runs(before: i64) -> Stmt {
    stmt("SELECT id, site_id FROM mirror_runs WHERE state IN ('running', 'publishing') AND created_at < ?1 LIMIT 20", vec![before.into()])
}

/// A stuck run's unfinished work fails with `reason` (each counted once).
pub fn fail_unfinished(run_id: i64, reason: &str, now: i64) -> Vec<Stmt> {
    vec![
        stmt(
            "UPDATE mirror_runs SET units_done = units_done + (SELECT COUNT(*) FROM mirror_units WHERE run_id = ?1 AND state = 'pending'), \
             entries_pending = 0 WHERE id = ?1",
            vec![run_id.into()],
        ),
        stmt("UPDATE mirror_units SET state = 'failed', reason = ?2, finished_at = ?3 WHERE run_id = ?1 AND state = 'pending'", vec![run_id.into(), reason.into(), now.into()]),
        stmt("UPDATE mirror_entries SET state = 'resolved', reason = ?2 WHERE run_id = ?1 AND state = 'pending'", vec![run_id.into(), reason.into()]),
    ]
}
