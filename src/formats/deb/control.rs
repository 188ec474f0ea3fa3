//! Debian control paragraphs (RFC 822 style), kept exactly as written.

use std::fmt;

/// One paragraph: fields in their original order, values exactly as written
/// (continuation lines keep their leading space; the first line is trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph {
    fields: Vec<(String, String)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ControlError(pub String);

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Paragraph {
    /// Parses a single paragraph (a control file). Comments (`#`) are dropped.
    pub fn parse(text: &str) -> Result<Paragraph, ControlError> {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut seen_blank_after_fields = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with('#') {
                continue;
            }
            if line.trim().is_empty() {
                if !fields.is_empty() {
                    seen_blank_after_fields = true;
                }
                continue;
            }
            if seen_blank_after_fields {
                return Err(ControlError(format!("line {}: a control file has one paragraph; found a second", n + 1)));
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                let Some(last) = fields.last_mut() else {
                    return Err(ControlError(format!("line {}: continuation line before any field", n + 1)));
                };
                last.1.push('\n');
                last.1.push_str(line);
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(ControlError(format!("line {}: expected `Field: value`", n + 1)));
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') || name.starts_with('-') {
                return Err(ControlError(format!("line {}: invalid field name {name:?}", n + 1)));
            }
            if fields.iter().any(|(f, _)| f.eq_ignore_ascii_case(name)) {
                return Err(ControlError(format!("line {}: field {name} appears twice", n + 1)));
            }
            fields.push((name.to_string(), value.trim().to_string()));
        }
        if fields.is_empty() {
            return Err(ControlError("the control file is empty".into()));
        }
        Ok(Paragraph { fields })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(f, _)| f.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(f, v)| (f.as_str(), v.as_str()))
    }

    /// Adds or replaces a field (placed last when new).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(f, _)| f.eq_ignore_ascii_case(name)) {
            Some(f) => f.1 = value.to_string(),
            None => self.fields.push((name.to_string(), value.to_string())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(f, _)| !f.eq_ignore_ascii_case(name));
    }

    /// The paragraph as text, each field on its line, ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (f, v) in &self.fields {
            out.push_str(f);
            out.push(':');
            if !v.is_empty() && !v.starts_with('\n') {
                out.push(' ');
            }
            out.push_str(v);
            out.push('\n');
        }
        out
    }
}

/// Debian package names: `[a-z0-9][a-z0-9+.-]+`.
pub fn valid_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
}

/// Debian versions: `[epoch:]upstream[-revision]` with the allowed characters.
pub fn valid_version(v: &str) -> bool {
    if v.is_empty() || v.len() > 256 {
        return false;
    }
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, v),
    };
    if let Some(e) = epoch {
        if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    let ok_up = |s: &str| {
        !s.is_empty()
            && s.as_bytes()[0].is_ascii_digit()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b))
            && (epoch.is_some() || !s.contains(':'))
    };
    let ok_rev = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.~".contains(&b));
    ok_up(upstream) && revision.map_or(true, ok_rev)
}

/// Architecture names: `all`, `any`-free concrete names like `amd64`, `arm64`, `musl-linux-arm64`.
pub fn valid_architecture(a: &str) -> bool {
    !a.is_empty() && a.len() <= 64 && a != "any" && a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: &str = "Package: hello\nVersion: 1:2.10-3\nArchitecture: amd64\nMaintainer: A <a@b>\nDepends: libc6 (>= 2.34)\nDescription: greet\n a longer\n .\n  description kept exactly\n";

    #[test]
    fn parses_and_renders_exactly() {
        let p = Paragraph::parse(CONTROL).unwrap();
        assert_eq!(p.get("package"), Some("hello"));
        assert_eq!(p.get("Description"), Some("greet\n a longer\n .\n  description kept exactly"));
        assert_eq!(p.render(), CONTROL);
    }

    #[test]
    fn refuses_malformed() {
        assert!(Paragraph::parse("").is_err());
        assert!(Paragraph::parse(" continuation first\n").is_err());
        assert!(Paragraph::parse("Package hello\n").is_err());
        assert!(Paragraph::parse("Package: a\nPackage: b\n").is_err());
        assert!(Paragraph::parse("Package: a\n\nPackage: b\n").is_err());
        assert!(Paragraph::parse("Package: a\n\n\n").is_ok());
    }

    #[test]
    fn names_and_versions() {
        assert!(valid_package_name("libstdc++6"));
        assert!(!valid_package_name("Hello"));
        assert!(!valid_package_name("a"));
        assert!(valid_version("1:2.10-3"));
        assert!(valid_version("2.10"));
        assert!(valid_version("1.0~rc1+dfsg-2ubuntu1"));
        assert!(!valid_version("a1.0"));
        assert!(!valid_version("1.0-"));
        assert!(!valid_version("x:1.0"));
        assert!(!valid_version("1.0 2"));
        assert!(valid_architecture("amd64") && valid_architecture("all"));
        assert!(!valid_architecture("any") && !valid_architecture("AMD64"));
    }
}
