//! What a tenant request resolves to — hostname → site and its active
//! release → path → blob — and what one isolate remembers of it between
//! requests ([`Memory`]; the glue keeps one per isolate).
//!
//! Correctness before speed:
//! - A hostname's route (site, active release, registry settings) is
//!   reused for at most `route_ms` (default 1 s; 0 turns every cache off), so
//!   an activation, a rollback, a hostname's removal or a site's deletion
//!   made elsewhere is seen within that window; the isolate that makes such a
//!   change forgets every route at once ([`Memory::forget_routes`]).
//! - What a path holds in a release is immutable (copy-on-write: a later
//!   release never changes what an earlier one's sequence number sees), so it
//!   is kept by `(site, release sequence, path)` until evicted. Only what was
//!   found is kept: a path missing from the remembered release is asked of
//!   D1, so the paths of a release activated a moment ago never 404.
//! - Small bodies are kept by content digest (the bytes of a digest never
//!   change) and reached only through a path the site's own release maps to
//!   that digest: a digest is never a key a request can name by itself.
//! - A pull-through mirror's records (what an upstream answered for a tag, a
//!   manifest or a blob of a repository, and when) change when the mirror
//!   asks again, so they are reused for the same window as routes, per site;
//!   the isolate that records a new answer forgets its copy at once.
//! - Every cache is bounded: routes, paths and mirror records by entry count
//!   (least recently used goes first), bodies by size each and by their total.

use lru::LruCache;
use std::num::NonZeroUsize;
use std::rc::Rc;

/// A hostname's site with its active release, as one D1 query reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The site's id, name and creation time (id and creation time name this
    /// site and no other, ever).
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub active_release_id: Option<i64>,
    /// The active release's sequence number (what its paths are read at).
    pub seq: Option<i64>,
    pub activated_at: Option<i64>,
    /// The site's registry settings (JSON), if any are stored.
    pub registry_config: Option<String>,
}

/// What a path holds in a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    /// Where the bytes lie in R2 (`blobs/sha256/<hex>` unless recorded elsewhere).
    pub place: crate::store::Place,
}

/// A pull-through mirror's record of an upstream's answer for a reference of
/// a repository (`sha256` None: the upstream said it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub content_type: Option<String>,
    /// When the upstream was last asked (ms).
    pub checked_at: i64,
    /// Where the bytes lie in R2, when recorded elsewhere than under the digest.
    pub r2_key: Option<String>,
    pub r2_offset: Option<u64>,
}

/// The bounds of an isolate's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a route is reused (ms); 0 turns every cache off.
    pub route_ms: u64,
    pub routes: usize,
    pub paths: usize,
    pub mirrored: usize,
    /// Largest body kept, and the most kept in all (bytes).
    pub body_max: u64,
    pub bodies_total: usize,
    /// Whether whole blobs go through the edge cache, and the largest that does.
    pub edge_cache: bool,
    pub edge_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { route_ms: 1000, routes: 1024, paths: 16_384, mirrored: 4096, body_max: 64 << 10, bodies_total: 8 << 20, edge_cache: true, edge_max: 512 << 20 }
    }
}

impl Limits {
    /// The defaults with the Worker's variables applied (`ROUTE_CACHE_MS`,
    /// `PATH_CACHE_ENTRIES`, `BODY_CACHE_BYTES`, `EDGE_CACHE` = `off`,
    /// `EDGE_CACHE_MAX_BYTES`); unreadable values keep the default.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Limits {
        let d = Limits::default();
        let num = |k: &str| var(k).and_then(|v| v.trim().parse::<u64>().ok());
        Limits {
            route_ms: num("ROUTE_CACHE_MS").unwrap_or(d.route_ms),
            paths: num("PATH_CACHE_ENTRIES").map_or(d.paths, |n| n as usize),
            bodies_total: num("BODY_CACHE_BYTES").map_or(d.bodies_total, |n| n as usize),
            edge_cache: var("EDGE_CACHE").map_or(d.edge_cache, |v| v.trim() != "off"),
            edge_max: num("EDGE_CACHE_MAX_BYTES").unwrap_or(d.edge_max),
            ..d
        }
    }

    fn on(&self) -> bool {
        self.route_ms > 0
    }
}

/// What one isolate remembers between requests.
pub struct Memory {
    limits: Limits,
    routes: LruCache<String, (Rc<Route>, u64)>,
    paths: LruCache<(i64, i64, String), Rc<Found>>,
    mirrored: LruCache<(i64, String), (Rc<Mirrored>, u64)>,
    bodies: LruCache<String, Rc<[u8]>>,
    body_bytes: usize,
}

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).expect("at least 1")
}

impl Memory {
    pub fn new(limits: Limits) -> Memory {
        Memory {
            limits,
            routes: LruCache::new(cap(limits.routes)),
            paths: LruCache::new(cap(limits.paths)),
            mirrored: LruCache::new(cap(limits.mirrored)),
            bodies: LruCache::unbounded(),
            body_bytes: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The route of `host` if it was read less than `route_ms` ago.
    pub fn route(&mut self, host: &str, now_ms: u64) -> Option<Rc<Route>> {
        let (route, at) = self.routes.get(host)?;
        if now_ms.saturating_sub(*at) < self.limits.route_ms && now_ms >= *at {
            return Some(route.clone());
        }
        self.routes.pop(host);
        None
    }

    pub fn remember_route(&mut self, host: &str, route: Route, now_ms: u64) -> Rc<Route> {
        let route = Rc::new(route);
        if self.limits.on() {
            self.routes.put(host.to_string(), (route.clone(), now_ms));
        }
        route
    }

    /// Forgets every route and mirror record: this isolate changed what some
    /// hostname serves (or purged a mirror's records).
    pub fn forget_routes(&mut self) {
        self.routes.clear();
        self.mirrored.clear();
    }

    /// The mirror record `key` of `site_id` if it was read less than
    /// `route_ms` ago.
    pub fn mirrored(&mut self, site_id: i64, key: &str, now_ms: u64) -> Option<Rc<Mirrored>> {
        let k = (site_id, key.to_string());
        let (record, at) = self.mirrored.get(&k)?;
        if now_ms.saturating_sub(*at) < self.limits.route_ms && now_ms >= *at {
            return Some(record.clone());
        }
        self.mirrored.pop(&k);
        None
    }

    pub fn remember_mirrored(&mut self, site_id: i64, key: &str, record: Mirrored, now_ms: u64) -> Rc<Mirrored> {
        let record = Rc::new(record);
        if self.limits.on() {
            self.mirrored.put((site_id, key.to_string()), (record.clone(), now_ms));
        }
        record
    }

    /// Forgets one mirror record (this isolate just recorded a new answer).
    pub fn forget_mirrored(&mut self, site_id: i64, key: &str) {
        self.mirrored.pop(&(site_id, key.to_string()));
    }

    /// What `path` holds in the release of `site` at sequence `seq`, if remembered.
    pub fn path(&mut self, site_id: i64, seq: i64, path: &str) -> Option<Rc<Found>> {
        // The key is owned; a lookup builds one (cheap next to any I/O it saves).
        self.paths.get(&(site_id, seq, path.to_string())).cloned()
    }

    pub fn remember_path(&mut self, site_id: i64, seq: i64, path: &str, found: Found) {
        if self.limits.on() {
            self.paths.put((site_id, seq, path.to_string()), Rc::new(found));
        }
    }

    /// Whether a body of `size` bytes is small enough to keep.
    pub fn keeps(&self, size: u64) -> bool {
        self.limits.on() && size <= self.limits.body_max && size as usize <= self.limits.bodies_total
    }

    /// The bytes of `sha256`, if kept. Call only with a digest a path of the
    /// requesting site resolved to.
    pub fn body(&mut self, sha256: &str) -> Option<Rc<[u8]>> {
        self.bodies.get(sha256).cloned()
    }

    /// Keeps the bytes of `sha256` (the caller read them under that digest),
    /// evicting the least recently used until the total fits.
    pub fn remember_body(&mut self, sha256: &str, bytes: &[u8]) -> Rc<[u8]> {
        let bytes: Rc<[u8]> = Rc::from(bytes);
        if !self.keeps(bytes.len() as u64) || self.bodies.contains(sha256) {
            return bytes;
        }
        while self.body_bytes + bytes.len() > self.limits.bodies_total {
            match self.bodies.pop_lru() {
                Some((_, old)) => self.body_bytes -= old.len(),
                None => break,
            }
        }
        self.body_bytes += bytes.len();
        self.bodies.put(sha256.to_string(), bytes.clone());
        bytes
    }

    /// Entries held: routes, paths, bodies, body bytes.
    pub fn held(&self) -> (usize, usize, usize, usize) {
        (self.routes.len(), self.paths.len(), self.bodies.len(), self.body_bytes)
    }

    /// Mirror records held.
    pub fn held_mirrored(&self) -> usize {
        self.mirrored.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(site_id: i64, seq: i64) -> Route {
        Route { id: site_id, name: format!("s{site_id}"), created_at: 1, active_release_id: Some(seq), seq: Some(seq), activated_at: Some(5), registry_config: None }
    }

    fn found(sha: &str) -> Found {
        Found { sha256: sha.into(), size: 3, content_type: "text/plain".into(), place: crate::store::Place::of(sha, None, None) }
    }

    #[test]
    fn a_route_is_reused_within_its_window_only() {
        let mut m = Memory::new(Limits { route_ms: 1000, ..Limits::default() });
        m.remember_route("a.test", route(1, 7), 10_000);
        assert_eq!(m.route("a.test", 10_000).unwrap().seq, Some(7));
        assert_eq!(m.route("a.test", 10_999).unwrap().seq, Some(7));
        assert!(m.route("a.test", 11_000).is_none(), "stale at the window's end");
        assert!(m.route("a.test", 10_500).is_none(), "and forgotten once stale");
        m.remember_route("a.test", route(1, 8), 20_000);
        assert!(m.route("a.test", 19_000).is_none(), "a clock that went back does not stretch the window");
        assert!(m.route("b.test", 20_000).is_none());
        m.forget_routes();
        assert!(m.route("a.test", 20_000).is_none());
    }

    fn mirrored(sha: Option<&str>, at: i64) -> Mirrored {
        Mirrored { sha256: sha.map(String::from), size: sha.map(|_| 3), content_type: None, checked_at: at, r2_key: None, r2_offset: None }
    }

    #[test]
    fn mirror_records_are_per_site_reused_within_the_window_and_bounded() {
        let mut m = Memory::new(Limits { route_ms: 1000, mirrored: 50, ..Limits::default() });
        m.remember_mirrored(1, "up\0lib/a\0tag\0v1", mirrored(Some("aa"), 5), 10_000);
        assert_eq!(m.mirrored(1, "up\0lib/a\0tag\0v1", 10_999).unwrap().sha256.as_deref(), Some("aa"));
        assert!(m.mirrored(2, "up\0lib/a\0tag\0v1", 10_000).is_none(), "another site's record is its own");
        assert!(m.mirrored(1, "up\0lib/a\0tag\0v1", 11_000).is_none(), "stale at the window's end");
        assert!(m.mirrored(1, "up\0lib/a\0tag\0v1", 10_500).is_none(), "and forgotten once stale");
        m.remember_mirrored(1, "k", mirrored(None, 5), 20_000);
        m.forget_mirrored(1, "k");
        assert!(m.mirrored(1, "k", 20_000).is_none(), "a record this isolate replaced is read again");
        m.remember_mirrored(1, "k", mirrored(None, 5), 20_000);
        m.forget_routes();
        assert!(m.mirrored(1, "k", 20_000).is_none(), "forgotten with the routes");
        for i in 0..500 {
            m.remember_mirrored(i, "k", mirrored(None, 5), 30_000);
        }
        assert_eq!(m.held_mirrored(), 50, "bounded by entry count");
        let mut off = Memory::new(Limits { route_ms: 0, ..Limits::default() });
        off.remember_mirrored(1, "k", mirrored(None, 5), 0);
        assert!(off.mirrored(1, "k", 0).is_none() && off.held_mirrored() == 0);
    }

    #[test]
    fn zero_turns_every_cache_off() {
        let mut m = Memory::new(Limits { route_ms: 0, ..Limits::default() });
        m.remember_route("a.test", route(1, 7), 0);
        m.remember_path(1, 7, "x", found("aa"));
        m.remember_body("aa", b"abc");
        assert!(m.route("a.test", 0).is_none());
        assert!(m.path(1, 7, "x").is_none());
        assert!(m.body("aa").is_none());
        assert_eq!(m.held(), (0, 0, 0, 0));
    }

    #[test]
    fn paths_are_kept_per_site_and_release_and_bounded() {
        let mut m = Memory::new(Limits { paths: 100, routes: 10, ..Limits::default() });
        m.remember_path(1, 7, "index", found("aa"));
        m.remember_path(2, 7, "index", found("bb"));
        assert_eq!(m.path(1, 7, "index").unwrap().sha256, "aa");
        assert_eq!(m.path(2, 7, "index").unwrap().sha256, "bb", "another site's entry is its own");
        assert!(m.path(1, 8, "index").is_none(), "another release of the site is asked afresh");
        for i in 0..1000 {
            m.remember_path(3, 1, &format!("p{i}"), found("cc"));
            m.remember_route(&format!("h{i}.test"), route(i, 1), 0);
        }
        let (routes, paths, _, _) = m.held();
        assert_eq!((routes, paths), (10, 100), "bounded by entry count");
        assert!(m.path(3, 1, "p999").is_some() && m.path(3, 1, "p0").is_none(), "the least recently used went first");
    }

    #[test]
    fn bodies_are_bounded_each_and_in_total() {
        let mut m = Memory::new(Limits { body_max: 10, bodies_total: 25, ..Limits::default() });
        assert!(!m.keeps(11) && m.keeps(10));
        m.remember_body("big", &[0; 11]);
        assert!(m.body("big").is_none(), "too large to keep");
        m.remember_body("a", &[1; 10]);
        m.remember_body("b", &[2; 10]);
        assert_eq!(&*m.body("a").unwrap(), &[1; 10]); // a is now the most recent
        m.remember_body("c", &[3; 10]);
        assert!(m.body("b").is_none(), "b was the least recently used");
        assert!(m.body("a").is_some() && m.body("c").is_some());
        assert_eq!(m.held().3, 20);
        for i in 0..100 {
            m.remember_body(&format!("k{i}"), &[i as u8; 7]);
            assert!(m.held().3 <= 25);
        }
    }

    #[test]
    fn limits_come_from_the_workers_variables() {
        let vars = |k: &str| match k {
            "ROUTE_CACHE_MS" => Some("0".to_string()),
            "PATH_CACHE_ENTRIES" => Some("50".to_string()),
            "BODY_CACHE_BYTES" => Some("nonsense".to_string()),
            "EDGE_CACHE" => Some("off".to_string()),
            "EDGE_CACHE_MAX_BYTES" => Some("1024".to_string()),
            _ => None,
        };
        let l = Limits::from_vars(vars);
        assert_eq!((l.route_ms, l.paths, l.bodies_total), (0, 50, Limits::default().bodies_total));
        assert_eq!((l.edge_cache, l.edge_max), (false, 1024));
        assert!(Limits::from_vars(|k| (k == "EDGE_CACHE").then(|| "on".to_string())).edge_cache);
        assert_eq!(Limits::from_vars(|_| None), Limits::default());
    }
}
