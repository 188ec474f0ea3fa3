//! Host header → the canonical hostname a site is looked up by.

/// Longest hostname DNS allows.
const MAX_HOSTNAME: usize = 253;

/// Lower-cases, strips the port and a trailing dot, and checks the characters.
/// Returns `None` for anything that is not a plausible DNS name or IP literal.
pub fn normalize(host: &str) -> Option<String> {
    let host = host.trim();
    if host.is_empty() {
        return None;
    }
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        let (v6, after) = (&rest[..end], &rest[end + 1..]);
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return None;
        }
        return Some(format!("[{}]", v6.to_ascii_lowercase()));
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => {
                if !valid_port(port) {
                    return None;
                }
                name
            }
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_HOSTNAME {
        return None;
    }
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
    }
    Some(name)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().map_or(false, |n| n <= 65535)
}

/// Parses a comma- or space-separated list of hostnames (configuration).
pub fn parse_list(list: &str) -> Vec<String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(normalize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_strips_port_and_dot() {
        assert_eq!(normalize("Apt.Example.COM:8443").as_deref(), Some("apt.example.com"));
        assert_eq!(normalize("apt.example.com.").as_deref(), Some("apt.example.com"));
        assert_eq!(normalize("localhost").as_deref(), Some("localhost"));
        assert_eq!(normalize("127.0.0.1:8787").as_deref(), Some("127.0.0.1"));
        assert_eq!(normalize("[::1]:8787").as_deref(), Some("[::1]"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", ":80", "a..b", "-a.com", "a.com:99999", "a.com:x", "a b", "a/b", "é.com", "[::1", "[zz]"] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        assert_eq!(normalize(&"a".repeat(64)), None);
    }

    #[test]
    fn list() {
        assert_eq!(parse_list("Admin.example, localhost 127.0.0.1:8787"), vec!["admin.example", "localhost", "127.0.0.1"]);
    }
}
