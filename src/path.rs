//! Request paths and release paths: one canonical, safe form.
//!
//! A release maps *relative* paths (`dists/stable/InRelease`, no leading slash)
//! to blobs. Requests arrive percent-encoded; they are decoded once, and
//! anything that could escape or alias a path is refused rather than cleaned.

/// Release paths under this prefix are Wharf's own records (package
/// membership, the registry's tags and blobs): never served as files.
pub const INTERNAL_PREFIX: &str = "_wharf/";

/// Longest path accepted, in bytes after decoding.
pub const MAX_PATH: usize = 1024;
/// Longest single segment, in bytes.
pub const MAX_SEGMENT: usize = 255;

#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    Empty,
    TooLong,
    SegmentTooLong,
    BadEscape,
    EncodedSeparator,
    Traversal,
    EmptySegment,
    ControlCharacter,
    Backslash,
}

impl PathError {
    pub fn message(&self) -> &'static str {
        match self {
            PathError::Empty => "the path is empty",
            PathError::TooLong => "the path is longer than 1024 bytes",
            PathError::SegmentTooLong => "a path segment is longer than 255 bytes",
            PathError::BadEscape => "the path has an invalid percent-escape or is not UTF-8",
            PathError::EncodedSeparator => "the path has an encoded '/', '\\' or '.' traversal",
            PathError::Traversal => "the path has a '.' or '..' segment",
            PathError::EmptySegment => "the path has an empty segment ('//')",
            PathError::ControlCharacter => "the path has a NUL or control character",
            PathError::Backslash => "the path has a backslash",
        }
    }
}

/// Checks a decoded relative path (as stored in a release).
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlCharacter);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::Traversal),
            s if s.len() > MAX_SEGMENT => return Err(PathError::SegmentTooLong),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a file name inside a package stays below the root it is unpacked
/// into: not absolute, no `..` segment (`./usr/bin/x` and `usr/bin/x` are fine).
pub fn safe_member_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.starts_with(b"/") && !name.contains(&0) && name.split(|b| *b == b'/').all(|s| s != b"..")
}

/// Turns the raw (still percent-encoded) path of a request URL into the
/// release path it names. `/` and paths ending in `/` name `index.html` below them.
pub fn from_request(raw: &str) -> Result<String, PathError> {
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    if raw.len() > MAX_PATH * 3 {
        return Err(PathError::TooLong);
    }
    let decoded = percent_decode(raw)?;
    let path = if decoded.is_empty() || decoded.ends_with('/') {
        format!("{decoded}index.html")
    } else {
        decoded
    };
    validate(&path)?;
    Ok(path)
}

/// Decodes `%XX` escapes. An escape that would produce a separator or a dot
/// is refused: `%2e%2e` and `%2f` have no business in a package path.
pub fn percent_decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            if matches!(b, b'/' | b'\\' | b'.') {
                return Err(PathError::EncodedSeparator);
            }
            if b == 0 {
                return Err(PathError::ControlCharacter);
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// Encodes a query parameter's value: everything but RFC 3986's unreserved
/// characters as `%XX`.
pub fn percent_encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ordinary_paths() {
        assert_eq!(from_request("/dists/stable/InRelease").unwrap(), "dists/stable/InRelease");
        assert_eq!(from_request("/pool/main/libc%2b%2b_1.0.deb").unwrap(), "pool/main/libc++_1.0.deb");
        assert_eq!(from_request("/").unwrap(), "index.html");
        assert_eq!(from_request("/docs/").unwrap(), "docs/index.html");
        assert_eq!(from_request("/v2/x/blobs/sha256:ab").unwrap(), "v2/x/blobs/sha256:ab");
    }

    #[test]
    fn refuses_traversal_and_tricks() {
        assert_eq!(from_request("/a/../b"), Err(PathError::Traversal));
        assert_eq!(from_request("/a/./b"), Err(PathError::Traversal));
        assert_eq!(from_request("/.."), Err(PathError::Traversal));
        assert_eq!(from_request("/a//b"), Err(PathError::EmptySegment));
        assert_eq!(from_request("//a"), Err(PathError::EmptySegment));
        assert_eq!(from_request("/a/%2e%2e/b"), Err(PathError::EncodedSeparator));
        assert_eq!(from_request("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(from_request("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(from_request("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(from_request("/a%0ab"), Err(PathError::ControlCharacter));
        assert_eq!(from_request("/a\\b"), Err(PathError::Backslash));
        assert_eq!(from_request("/a%zzb"), Err(PathError::BadEscape));
        assert_eq!(from_request("/a%e2"), Err(PathError::BadEscape));
        assert_eq!(from_request(&format!("/{}", "a/".repeat(600))), Err(PathError::TooLong));
        assert_eq!(from_request(&format!("/{}", "a".repeat(256))), Err(PathError::SegmentTooLong));
    }

    #[test]
    fn release_paths_have_no_leading_slash() {
        assert_eq!(validate("/a"), Err(PathError::EmptySegment));
        assert_eq!(validate("a/"), Err(PathError::EmptySegment));
        assert!(validate("a/b.deb").is_ok());
        assert_eq!(validate(""), Err(PathError::Empty));
    }
}
