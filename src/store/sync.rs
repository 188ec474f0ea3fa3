//! The declarative mirror's stored configuration.

use super::{stmt, Stmt};

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
