//! Human output: aligned columns, times as UTC dates.

use serde_json::Value;

/// Prints rows under headers, each column as wide as its widest cell.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(headers, rows));
}

pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON value as a cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC); `-` for null.
pub fn time(v: &Value) -> String {
    let Some(ms) = v.as_i64() else { return "-".into() };
    // The worker's RFC 3339 writer (Helm's `created`), to the second.
    let t = wharf::formats::helm::publish::rfc3339(ms);
    t[..19].replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align() {
        let s = render(&["ID", "NAME"], &[vec!["1".into(), "apt".into()], vec!["12".into(), "x".into()]]);
        assert_eq!(s, "ID  NAME\n1   apt\n12  x\n");
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(time(&json!(1_796_234_400_000i64)), "2026-12-02 18:00:00");
        assert_eq!(time(&json!(951_782_400_000i64)), "2000-02-29 00:00:00");
        assert_eq!(time(&Value::Null), "-");
    }
}
