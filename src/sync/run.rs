//! How a run of the declared mirror is carried out, decided without I/O: the
//! messages its work travels in (one per declared entry, then one per
//! version), where a source registry is reached, what an upstream's answer
//! means for a unit (copy on, retry later, or fail with a reason), and when a
//! run is complete.

use super::config::{is_docker_hub, Image};
use crate::oci::mirror::{Upstream, DOCKER_HUB};
use serde::{Deserialize, Serialize};

/// A piece of a run's work on the queue. An entry resolves the versions of
/// one declared image or chart (`entry`: its index, images first, in the
/// run's copy of the configuration) into units; a unit copies one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "lowercase")]
pub enum Job {
    Entry { run: i64, entry: usize },
    Unit { run: i64, seq: i64 },
}

/// Unit numbers within a run: an entry's units are numbered from its index
/// times this (so entries resolved at once, or twice, never collide).
pub const UNITS_PER_ENTRY: i64 = 100_000;

pub fn unit_seq(entry: usize, i: usize) -> i64 {
    entry as i64 * UNITS_PER_ENTRY + i as i64
}

/// Tries a unit gets for a passing failure (network, 5xx, 429) before it
/// fails for good.
pub const MAX_ATTEMPTS: u32 = 5;

/// The pause before try `attempt + 1` (seconds): 2, 4, 8, 16 … at most 5
/// minutes, or what the upstream asked for with `Retry-After` (at most an hour).
pub fn backoff(attempt: u32, retry_after: Option<u32>) -> u32 {
    match retry_after {
        Some(s) => s.clamp(1, 3600),
        None => 2u32.saturating_pow(attempt.clamp(1, 16)).min(300),
    }
}

/// `Retry-After` in seconds (the delay form; an HTTP date counts as a minute).
pub fn retry_after(header: Option<&str>) -> Option<u32> {
    let h = header?.trim();
    h.parse::<u32>().ok().or_else(|| httpdate::parse_http_date(h).ok().map(|_| 60))
}

/// What an upstream's answer means for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Passing: try again after the pause (`Retry-After` when given).
    Retry { reason: String, retry_after: Option<u32> },
    /// For good: the unit fails with this reason.
    Fail(String),
}

/// Judges an upstream status for `what` (a manifest, a blob, the index).
pub fn judge(status: u16, what: &str, retry_after: Option<u32>) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        404 => Verdict::Fail(format!("upstream 404: {what} not found at the source")),
        401 | 403 => Verdict::Fail(format!("auth: the source refused {what} ({status}); check the entry's credentials")),
        429 => Verdict::Retry { reason: format!("rate-limited by the source (429) for {what}"), retry_after },
        408 | 500..=599 => Verdict::Retry { reason: format!("the source answered {status} for {what}"), retry_after },
        s => Verdict::Fail(format!("the source answered {s} for {what}")),
    }
}

/// Whether `host` is a loopback address, which a registry client reaches
/// over plain HTTP (Docker treats 127.0.0.0/8 and localhost as insecure
/// registries by default).
fn loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.split('.').count() == 4 && name.starts_with("127.") && name.split('.').all(|p| p.parse::<u8>().is_ok())
}

/// The upstream a declared image is copied from: Docker Hub's registry for
/// its names, `https://<host>` otherwise (`http://` for loopback hosts), with
/// the entry's credentials. The repository name is the entry's
/// `source_repository` (with `library/` already), taken as it is.
pub fn upstream_of(image: &Image) -> Upstream {
    let host = image.source_registry.as_str();
    let url = if is_docker_hub(host) {
        DOCKER_HUB.to_string()
    } else if loopback(host) {
        format!("http://{host}")
    } else {
        format!("https://{host}")
    };
    Upstream {
        prefix: None,
        url,
        library: Some(false),
        username: image.credentials.as_ref().map(|c| c.username.clone()),
        password_secret: image.credentials.as_ref().map(|c| c.password_secret.clone()),
    }
}

/// The next page of a tag list, from its `Link` header (`</v2/<name>/tags/list?n=…&last=…>; rel="next"`):
/// the request suffix after `/v2/<name>/` (`tags/list?…`).
pub fn next_tags_page(link: Option<&str>) -> Option<String> {
    let link = link?;
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        if !params.split(';').any(|p| matches!(p.trim().replace(' ', "").as_str(), "rel=\"next\"" | "rel=next")) {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let at = target.find("/tags/list")?;
        Some(target[at + 1..].to_string())
    })
}

/// How many pages of a tag list a run reads at most.
pub const MAX_TAG_PAGES: usize = 50;

/// A run is complete when every entry has been resolved and every unit has
/// finished (copied, skipped or failed).
pub fn complete(entries_pending: i64, units_done: i64, units_total: i64) -> bool {
    entries_pending == 0 && units_done >= units_total
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `POST …/mirror/runs`.
    Manual,
    /// The site's schedule, from the Cron Trigger.
    Schedule,
    /// A changed configuration was stored.
    Config,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Config => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::config::{parse, Part};

    fn image(yaml: &str) -> Image {
        parse("images.yaml", yaml, Part::Images).unwrap().images.remove(0)
    }

    #[test]
    fn sources_are_reached_as_registry_clients_reach_them() {
        let hub = upstream_of(&image("images:\n  - {name: nginx, versions: ['1'], source_registry: docker.io}\n"));
        assert_eq!((hub.url.as_str(), hub.library), (DOCKER_HUB, Some(false)));
        let ghcr = upstream_of(&image(
            "images:\n  - {name: o/a, versions: ['1'], source_registry: ghcr.io, credentials: {username: bot, password_secret: GHCR_TOKEN}}\n",
        ));
        assert_eq!(ghcr.url, "https://ghcr.io");
        assert_eq!((ghcr.username.as_deref(), ghcr.password_secret.as_deref()), (Some("bot"), Some("GHCR_TOKEN")));
        for (host, url) in [("127.0.0.1:5000", "http://127.0.0.1:5000"), ("localhost:5000", "http://localhost:5000"), ("127.0.0.1.example:5000", "https://127.0.0.1.example:5000"), ("registry.example:5000", "https://registry.example:5000")] {
            let i = image(&format!("images:\n  - {{name: a, versions: ['1'], source_registry: '{host}'}}\n"));
            assert_eq!(upstream_of(&i).url, url, "{host}");
        }
    }

    #[test]
    fn answers_are_judged_retry_or_fail_with_a_reason() {
        assert_eq!(judge(200, "x", None), Verdict::Ok);
        assert!(matches!(judge(404, "manifest sha256:1", None), Verdict::Fail(r) if r.starts_with("upstream 404")));
        assert!(matches!(judge(401, "x", None), Verdict::Fail(r) if r.starts_with("auth")));
        assert_eq!(judge(429, "x", Some(7)), Verdict::Retry { reason: "rate-limited by the source (429) for x".into(), retry_after: Some(7) });
        assert!(matches!(judge(503, "x", None), Verdict::Retry { .. }));
        assert!(matches!(judge(400, "x", None), Verdict::Fail(_)));
        assert_eq!(retry_after(Some(" 30 ")), Some(30));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), Some(60));
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!([1, 2, 3, 9, 40].map(|a| backoff(a, None)), [2, 4, 8, 300, 300]);
        assert_eq!((backoff(1, Some(0)), backoff(1, Some(90)), backoff(1, Some(99_999))), (1, 90, 3600));
    }

    #[test]
    fn tag_lists_are_followed_page_by_page() {
        assert_eq!(next_tags_page(Some(r#"</v2/library/nginx/tags/list?n=100&last=1.25>; rel="next""#)).as_deref(), Some("tags/list?n=100&last=1.25"));
        assert_eq!(next_tags_page(Some(r#"<https://ghcr.io/v2/o/a/tags/list?last=x&n=50>; rel=next"#)).as_deref(), Some("tags/list?last=x&n=50"));
        assert_eq!(next_tags_page(Some(r#"</v2/a/tags/list?n=1>; rel="prev""#)), None);
        assert_eq!(next_tags_page(None), None);
    }

    #[test]
    fn a_run_completes_when_every_entry_and_unit_has() {
        assert!(!complete(1, 0, 0));
        assert!(!complete(0, 2, 3));
        assert!(complete(0, 3, 3) && complete(0, 0, 0));
        assert_eq!(unit_seq(2, 5), 200_005);
        let j: Job = serde_json::from_str(r#"{"job":"unit","run":4,"seq":7}"#).unwrap();
        assert_eq!(j, Job::Unit { run: 4, seq: 7 });
        assert_eq!(serde_json::to_string(&Job::Entry { run: 1, entry: 0 }).unwrap(), r#"{"job":"entry","run":1,"entry":0}"#);
    }
}
