//! When the declared mirror runs by itself: a cron expression in the site's
//! mirror settings (five fields, minute to weekday, in UTC, as Cloudflare's
//! Cron Triggers take them; `@hourly`, `@daily` and the like too). The
//! worker's own Cron Trigger wakes it up; a site's run is due when its
//! schedule had an occurrence after the site's last scheduled run.

use std::str::FromStr;

/// A site's schedule, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Schedule {
    /// Reads a cron expression; Err says what is wrong with it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        let fields = t.split_whitespace().count();
        if !t.starts_with('@') && fields != 5 {
            return Err(format!("`{t}` has {fields} fields; a schedule has five: minute hour day-of-month month day-of-week (e.g. `0 */6 * * *`)"));
        }
        if t.starts_with('@') && matches!(t, "@reboot") {
            return Err("`@reboot` is not a schedule".into());
        }
        let cron = croner::Cron::from_str(t).map_err(|e| format!("`{t}` is not a cron expression: {e}"))?;
        Ok(Schedule { text: t.to_string(), cron })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time (ms) the schedule fires after `after_ms`, if any.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        // From the whole second (croner keeps the fraction in what it returns).
        let t = chrono::DateTime::from_timestamp_millis(after_ms - after_ms.rem_euclid(1000))?;
        self.cron.find_next_occurrence(&t, false).ok().map(|d| d.timestamp_millis())
    }

    /// Whether a run is due at `now_ms` for a site whose last scheduled run
    /// started at `last_ms` (or whose schedule was set then).
    pub fn due(&self, last_ms: i64, now_ms: i64) -> bool {
        self.next_after(last_ms).is_some_and(|next| next <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn a_schedule_fires_after_the_last_run_and_not_before() {
        let s = Schedule::parse("0 */6 * * *").unwrap();
        assert_eq!(s.next_after(ms("2026-12-02T05:59:00Z")), Some(ms("2026-12-02T06:00:00Z")));
        assert_eq!(s.next_after(ms("2026-12-02T06:00:00Z")), Some(ms("2026-12-02T12:00:00Z")), "strictly after");
        assert_eq!(s.next_after(ms("2026-12-02T05:59:59.343Z")), Some(ms("2026-12-02T06:00:00Z")), "on the minute, whatever the fraction");
        assert!(!s.due(ms("2026-12-02T06:00:00Z"), ms("2026-12-02T11:59:59Z")));
        assert!(s.due(ms("2026-12-02T06:00:00Z"), ms("2026-12-02T12:00:00Z")));
        assert!(s.due(ms("2026-12-01T00:00:00Z"), ms("2026-12-02T12:30:00Z")), "missed occurrences make one run");
        let weekly = Schedule::parse("30 3 * * MON").unwrap();
        assert_eq!(weekly.next_after(ms("2026-12-02T00:00:00Z")), Some(ms("2026-12-07T03:30:00Z")));
        assert_eq!(Schedule::parse("@daily").unwrap().next_after(ms("2026-12-02T10:00:00Z")), Some(ms("2026-12-03T00:00:00Z")));
    }

    #[test]
    fn what_is_not_a_schedule_is_refused_with_a_reason() {
        for (text, why) in [
            ("0 */6 * *", "has 4 fields"),
            ("0 0 */6 * * *", "has 6 fields"),
            ("61 * * * *", "not a cron expression"),
            ("* * * * FUNDAY", "not a cron expression"),
            ("", "has 0 fields"),
            ("@reboot", "not a schedule"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
