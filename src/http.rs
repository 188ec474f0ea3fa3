//! HTTP semantics of the data plane, free of any runtime: byte ranges,
//! conditional requests, cache policy and content types.

use std::time::{Duration, UNIX_EPOCH};

/// What a stored path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    /// When the serving release was activated, in milliseconds since the epoch.
    pub activated_at_ms: u64,
}

/// A request's conditional and range headers.
#[derive(Debug, Default, Clone)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

/// What to send.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with the whole blob.
    Full,
    /// 206 with bytes `offset .. offset + length`.
    Partial { offset: u64, length: u64 },
    /// 304, no body.
    NotModified,
    /// 412, no body.
    PreconditionFailed,
    /// 416 with `Content-Range: bytes */size`.
    RangeNotSatisfiable,
}

/// The strong entity tag of a blob: its digest.
pub fn etag(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// IMF-fixdate for a millisecond timestamp.
pub fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(ms / 1000))
}

fn parse_http_date_secs(s: &str) -> Option<u64> {
    httpdate::parse_http_date(s.trim()).ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Does an If-None-Match / If-Match list name this entity tag? (weak comparison for
/// If-None-Match as RFC 9110 asks; our tags are always strong).
fn etag_list_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// Decides the response for GET/HEAD of `entry` (RFC 9110 §13.2.2 order).
pub fn evaluate(entry: &Entry, cond: &Conditions) -> Outcome {
    let tag = etag(&entry.sha256);
    let modified_secs = entry.activated_at_ms / 1000;
    if let Some(im) = cond.if_match {
        if !im.split(',').map(str::trim).any(|t| t == "*" || t == tag) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(ius) = cond.if_unmodified_since.and_then(parse_http_date_secs) {
        if modified_secs > ius {
            return Outcome::PreconditionFailed;
        }
    }
    if let Some(inm) = cond.if_none_match {
        if etag_list_matches(inm, &tag) {
            return Outcome::NotModified;
        }
    } else if let Some(ims) = cond.if_modified_since.and_then(parse_http_date_secs) {
        if modified_secs <= ims {
            return Outcome::NotModified;
        }
    }
    let Some(range) = cond.range else { return Outcome::Full };
    if let Some(if_range) = cond.if_range {
        let if_range = if_range.trim();
        let still_valid = if if_range.starts_with('"') || if_range.starts_with("W/") {
            if_range == tag
        } else {
            parse_http_date_secs(if_range).map_or(false, |d| d == modified_secs)
        };
        if !still_valid {
            return Outcome::Full;
        }
    }
    match parse_range(range, entry.size) {
        RangeSpec::Ignore => Outcome::Full,
        RangeSpec::Unsatisfiable => Outcome::RangeNotSatisfiable,
        RangeSpec::Bytes { offset, length } => {
            if offset == 0 && length == entry.size {
                Outcome::Full
            } else {
                Outcome::Partial { offset, length }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// Syntactically not a single byte range we serve: answer with the whole body.
    Ignore,
    Unsatisfiable,
    Bytes { offset: u64, length: u64 },
}

/// Parses a `Range` header for a representation of `size` bytes. Only a single
/// range is served as 206; a multi-range request gets the whole body (allowed by RFC 9110).
pub fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeSpec::Ignore };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeSpec::Ignore };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if first.is_empty() {
        // suffix: the last N bytes
        let Some(n) = num(last) else { return RangeSpec::Ignore };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        let n = n.min(size);
        return RangeSpec::Bytes { offset: size - n, length: n };
    }
    let Some(start) = num(first) else { return RangeSpec::Ignore };
    let end = if last.is_empty() {
        None
    } else {
        match num(last) {
            Some(e) if e >= start => Some(e),
            _ => return RangeSpec::Ignore,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    let end = end.map_or(size - 1, |e| e.min(size - 1));
    RangeSpec::Bytes { offset: start, length: end - start + 1 }
}

/// Is this path content-addressed, i.e. can its bytes never change under the same name?
/// Package pool files, by-hash indexes, OCI blobs and package files are; indexes are not.
pub fn is_immutable_path(path: &str) -> bool {
    const PACKAGE_EXTENSIONS: [&str; 7] = [".deb", ".udeb", ".ddeb", ".apk", ".rpm", ".whl", ".crate"];
    path.starts_with("pool/")
        || path.starts_with("blobs/sha256/")
        || path.contains("/by-hash/")
        || path.contains("/blobs/sha256:")
        || PACKAGE_EXTENSIONS.iter().any(|e| path.ends_with(e))
}

/// `Cache-Control` for a served path.
pub fn cache_control(path: &str) -> &'static str {
    if is_immutable_path(path) {
        "public, max-age=31536000, immutable, no-transform"
    } else {
        "public, max-age=60, must-revalidate, no-transform"
    }
}

/// A content type for a path when the publisher gave none.
pub fn guess_content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match (name, ext.as_deref()) {
        ("InRelease", _) | ("Release", _) | ("Packages", _) | ("Sources", _) | ("Contents", _) => "text/plain; charset=utf-8",
        (_, Some("gpg")) | (_, Some("sig")) => "application/pgp-signature",
        (_, Some("asc")) => "application/pgp-keys",
        (_, Some("deb")) | (_, Some("udeb")) | (_, Some("ddeb")) => "application/vnd.debian.binary-package",
        (_, Some("apk")) => "application/vnd.alpine.package",
        (_, Some("rpm")) => "application/x-rpm",
        (_, Some("gz")) | (_, Some("tgz")) => "application/gzip",
        (_, Some("xz")) => "application/x-xz",
        (_, Some("zst")) => "application/zstd",
        (_, Some("bz2")) => "application/x-bzip2",
        (_, Some("tar")) => "application/x-tar",
        (_, Some("zip")) | (_, Some("whl")) => "application/zip",
        (_, Some("json")) => "application/json",
        (_, Some("yaml")) | (_, Some("yml")) => "application/yaml",
        (_, Some("html")) | (_, Some("htm")) => "text/html; charset=utf-8",
        (_, Some("txt")) | (_, Some("md")) => "text/plain; charset=utf-8",
        (_, Some("css")) => "text/css; charset=utf-8",
        (_, Some("js")) => "text/javascript; charset=utf-8",
        (_, Some("svg")) => "image/svg+xml",
        (_, Some("png")) => "image/png",
        _ => "application/octet-stream",
    }
}

/// Is `ct` a syntactically sane media type (type/subtype, optional parameters)?
pub fn valid_content_type(ct: &str) -> bool {
    if ct.len() > 255 || ct.chars().any(|c| c.is_control()) {
        return false;
    }
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((t, s)) = essence.split_once('/') else { return false };
    let token = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    token(t) && token(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry { sha256: "ab".repeat(32), size: 1000, content_type: "text/plain".into(), activated_at_ms: 1_700_000_000_123 }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeSpec::Bytes { offset: 0, length: 100 });
        assert_eq!(parse_range("bytes=900-", 1000), RangeSpec::Bytes { offset: 900, length: 100 });
        assert_eq!(parse_range("bytes=-100", 1000), RangeSpec::Bytes { offset: 900, length: 100 });
        assert_eq!(parse_range("bytes=-5000", 1000), RangeSpec::Bytes { offset: 0, length: 1000 });
        assert_eq!(parse_range("bytes=990-5000", 1000), RangeSpec::Bytes { offset: 990, length: 10 });
        assert_eq!(parse_range("bytes=1000-", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=a-b", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=99999999999999999999-", 1000), RangeSpec::Ignore);
    }

    #[test]
    fn conditionals() {
        let e = entry();
        let tag = etag(&e.sha256);
        assert_eq!(evaluate(&e, &Conditions::default()), Outcome::Full);
        assert_eq!(evaluate(&e, &Conditions { if_none_match: Some(&tag), ..Default::default() }), Outcome::NotModified);
        assert_eq!(evaluate(&e, &Conditions { if_none_match: Some("\"x\", *"), ..Default::default() }), Outcome::NotModified);
        assert_eq!(evaluate(&e, &Conditions { if_none_match: Some("\"x\""), ..Default::default() }), Outcome::Full);
        let lm = http_date(e.activated_at_ms);
        assert_eq!(lm, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(evaluate(&e, &Conditions { if_modified_since: Some(&lm), ..Default::default() }), Outcome::NotModified);
        let before = http_date(e.activated_at_ms - 1000);
        assert_eq!(evaluate(&e, &Conditions { if_modified_since: Some(&before), ..Default::default() }), Outcome::Full);
        // If-None-Match wins over If-Modified-Since
        assert_eq!(
            evaluate(&e, &Conditions { if_none_match: Some("\"x\""), if_modified_since: Some(&lm), ..Default::default() }),
            Outcome::Full
        );
        assert_eq!(evaluate(&e, &Conditions { if_match: Some("\"x\""), ..Default::default() }), Outcome::PreconditionFailed);
        assert_eq!(evaluate(&e, &Conditions { if_unmodified_since: Some(&before), ..Default::default() }), Outcome::PreconditionFailed);
        assert_eq!(evaluate(&e, &Conditions { if_modified_since: Some("garbage"), ..Default::default() }), Outcome::Full);
    }

    #[test]
    fn range_with_if_range() {
        let e = entry();
        let tag = etag(&e.sha256);
        let r = Conditions { range: Some("bytes=10-19"), ..Default::default() };
        assert_eq!(evaluate(&e, &r), Outcome::Partial { offset: 10, length: 10 });
        assert_eq!(evaluate(&e, &Conditions { if_range: Some(&tag), ..r.clone() }), Outcome::Partial { offset: 10, length: 10 });
        assert_eq!(evaluate(&e, &Conditions { if_range: Some("\"old\""), ..r.clone() }), Outcome::Full);
        assert_eq!(evaluate(&e, &Conditions { range: Some("bytes=0-"), ..Default::default() }), Outcome::Full);
        assert_eq!(evaluate(&e, &Conditions { range: Some("bytes=5000-"), ..Default::default() }), Outcome::RangeNotSatisfiable);
    }

    #[test]
    fn cache_policy() {
        assert!(cache_control("pool/main/h/hello/hello_1_all.deb").contains("immutable"));
        assert!(cache_control("dists/stable/main/binary-amd64/by-hash/SHA256/ab").contains("immutable"));
        assert!(cache_control("main/x86_64/foo-1.0-r0.apk").contains("immutable"));
        assert!(!cache_control("dists/stable/InRelease").contains("immutable"));
        assert!(!cache_control("main/x86_64/APKINDEX.tar.gz").contains("immutable"));
    }

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type("dists/x/InRelease"), "text/plain; charset=utf-8");
        assert_eq!(guess_content_type("a/b.deb"), "application/vnd.debian.binary-package");
        assert_eq!(guess_content_type("a/Packages.xz"), "application/x-xz");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
        assert!(valid_content_type("text/plain; charset=utf-8"));
        assert!(valid_content_type("application/vnd.oci.image.manifest.v1+json"));
        assert!(!valid_content_type("text"));
        assert!(!valid_content_type("text/plain\r\nX: y"));
    }
}
