//! Range and conditional headers against an entry of any size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::http;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let size = data.len() as u64 * 977;
    let _ = http::parse_range(s, size);
    let _ = http::parse_range(s, 0);
    let _ = http::parse_range(s, u64::MAX);
    let parts: Vec<&str> = s.splitn(6, '\n').collect();
    let at = |i: usize| parts.get(i).copied();
    let entry = http::Entry { sha256: "ab".repeat(32), size, content_type: "text/plain".into(), activated_at_ms: 1_700_000_000_000 };
    let cond = http::Conditions { if_none_match: at(0), if_modified_since: at(1), if_match: at(2), if_unmodified_since: at(3), range: at(4), if_range: at(5) };
    let _ = http::evaluate(&entry, &cond);
    let _ = http::valid_content_type(s);
});
