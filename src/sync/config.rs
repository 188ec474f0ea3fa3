//! The declarative mirror's configuration: the `images.yaml` and
//! `charts.yaml` files teams already keep, read as written and checked before
//! anything is stored. Every problem is reported with its file, line, column
//! and path (`images[1].versions`), all of them at once, not the first only.
//!
//! ```yaml
//! images:
//!   - name: 'hashicorp/vault'          # may include a namespace
//!     versions: ['1.19.0', '~1.25', '>=2.0.0 <3']
//!     source_registry: 'docker.io'
//!     platforms: ["linux/amd64", "linux/arm64"]   # optional, default these two
//! charts:
//!   - name: 'vault'
//!     versions: ['0.29.0', '0.30.0']
//!     repo_name: 'hashicorp'
//!     repo_url: 'https://helm.releases.hashicorp.com'
//! ```
//!
//! Beyond those fields: `versions` may hold SemVer constraints (`~1.25`,
//! `^2`, `>=2.0.0 <3`, `1.2.x`, alternatives joined by `||`) besides exact
//! tags; `match` (a regular expression a tag must match whole) and `keep`
//! (the N newest of what the constraints and `match` select); `target` (where
//! it lands on the site; default: the name as written); `credentials`
//! (`username` and the Worker secret holding the password, as the
//! pull-through upstreams take them); `prune: true` (top level or per entry:
//! versions no longer declared leave the site in the next run).
//!
//! The YAML is parsed by `yaml-rust2` into events with their positions; this
//! module only walks them.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Where in the document (`images[1].versions`); empty for the document.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{} ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The platforms an image entry copies when it names none.
pub const DEFAULT_PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// A configuration, checked: what the site keeps mirrored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub images: Vec<Image>,
    pub charts: Vec<Chart>,
}

/// An image repository to keep copied from a source registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The name as written (`hashicorp/vault`, `nginx`).
    pub name: String,
    /// The registry's host as written (`docker.io`, `ghcr.io`, `registry.example:5000`).
    pub source_registry: String,
    /// The repository at the source (Docker Hub's implicit `library/` added).
    pub source_repository: String,
    pub versions: Versions,
    pub platforms: Vec<Platform>,
    /// The repository on the site.
    pub target: String,
    pub credentials: Option<Credentials>,
    pub prune: bool,
}

/// A chart to keep copied from a classic chart repository.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub name: String,
    pub versions: Versions,
    /// The chart repository on the site.
    pub repo_name: String,
    pub repo_url: String,
    /// The chart's name on the site.
    pub target: String,
    pub credentials: Option<Credentials>,
    pub prune: bool,
}

/// Source credentials: a user name and the Worker secret holding the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password_secret: String,
}

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Which versions an entry wants.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    /// Exact tags (or chart versions), as written.
    pub exact: Vec<String>,
    /// SemVer constraints, as written and parsed (alternatives of `||`).
    pub ranges: Vec<(String, Vec<semver::VersionReq>)>,
    /// A regular expression a version must match whole.
    pub pattern: Option<(String, regex_lite::Regex)>,
    /// Keep only the N newest of what `ranges` and `pattern` select.
    pub keep: Option<usize>,
}

impl PartialEq for Versions {
    fn eq(&self, other: &Self) -> bool {
        self.exact == other.exact
            && self.ranges.iter().map(|r| &r.0).eq(other.ranges.iter().map(|r| &r.0))
            && self.pattern.as_ref().map(|p| &p.0) == other.pattern.as_ref().map(|p| &p.0)
            && self.keep == other.keep
    }
}

impl Versions {
    /// Whether `version` (a tag or chart version) is selected by a constraint
    /// or the pattern (exact versions are wanted whether or not they exist).
    /// Whether picking needs the source's list of versions (a constraint or
    /// pattern); exact versions alone are asked for by name.
    pub fn lists(&self) -> bool {
        !self.ranges.is_empty() || self.pattern.is_some()
    }

    pub fn selects(&self, version: &str) -> bool {
        if self.ranges.is_empty() && self.pattern.is_none() {
            return false;
        }
        let by_pattern = self.pattern.as_ref().map_or(true, |(_, re)| re.is_match(version) && whole_match(re, version));
        let by_range = self.ranges.is_empty()
            || lenient_version(version).map_or(false, |v| self.ranges.iter().any(|(_, alts)| alts.iter().any(|r| r.matches(&v))));
        by_pattern && by_range
    }

    /// The versions wanted out of what the source lists: every exact one, and
    /// of those the constraints select the `keep` newest (all without `keep`).
    pub fn pick(&self, available: &[String]) -> Vec<String> {
        let mut chosen: Vec<String> = self.exact.clone();
        let mut selected: Vec<&String> = available.iter().filter(|v| self.selects(v)).collect();
        // Newest first: SemVer order where both parse, else by text.
        selected.sort_by(|a, b| match (lenient_version(a), lenient_version(b)) {
            (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.cmp(a)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => b.cmp(a),
        });
        if let Some(n) = self.keep {
            selected.truncate(n);
        }
        for v in selected {
            if !chosen.contains(v) {
                chosen.push(v.clone());
            }
        }
        chosen
    }
}

fn whole_match(re: &regex_lite::Regex, text: &str) -> bool {
    re.find(text).map_or(false, |m| m.start() == 0 && m.end() == text.len())
}

/// A tag or chart version read as SemVer: a leading `v` and missing minor or
/// patch numbers are allowed (`v1.19` is 1.19.0). None when it is not a version.
pub fn lenient_version(text: &str) -> Option<semver::Version> {
    let t = text.strip_prefix('v').unwrap_or(text);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, rest) = match t.find(['-', '+']) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let mut full = parts.join(".");
    for _ in parts.len()..3 {
        full.push_str(".0");
    }
    semver::Version::parse(&format!("{full}{rest}")).ok()
}

/// Which file of a configuration a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `images:` only.
    Images,
    /// `charts:` only.
    Charts,
    /// Both in one document.
    Both,
}

impl Part {
    /// The part a file name holds: `images.yaml`, `charts.yaml` (or `.yml`),
    /// or `mirror.yaml` for both in one document.
    pub fn of_file(name: &str) -> Option<Part> {
        match name {
            "images.yaml" | "images.yml" => Some(Part::Images),
            "charts.yaml" | "charts.yml" => Some(Part::Charts),
            "mirror.yaml" | "mirror.yml" => Some(Part::Both),
            _ => None,
        }
    }
}

impl Config {
    /// What the configuration declares, as the admin API shows it.
    pub fn summary(&self) -> serde_json::Value {
        let versions = |v: &Versions| {
            serde_json::json!({
                "exact": v.exact,
                "constraints": v.ranges.iter().map(|r| &r.0).collect::<Vec<_>>(),
                "match": v.pattern.as_ref().map(|p| &p.0),
                "keep": v.keep,
            })
        };
        serde_json::json!({
            "images": self.images.iter().map(|i| serde_json::json!({
                "name": i.name, "source_registry": i.source_registry, "source_repository": i.source_repository,
                "target": i.target, "versions": versions(&i.versions),
                "platforms": i.platforms.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "credentials": i.credentials.as_ref().map(|c| serde_json::json!({"username": c.username, "password_secret": c.password_secret})),
                "prune": i.prune,
            })).collect::<Vec<_>>(),
            "charts": self.charts.iter().map(|c| serde_json::json!({
                "name": c.name, "repo_name": c.repo_name, "repo_url": c.repo_url, "target": c.target,
                "versions": versions(&c.versions),
                "credentials": c.credentials.as_ref().map(|k| serde_json::json!({"username": k.username, "password_secret": k.password_secret})),
                "prune": c.prune,
            })).collect::<Vec<_>>(),
        })
    }
}

// ---------------------------------------------------------------------------
// A YAML document as a tree with positions.

#[derive(Debug, Clone)]
enum Node {
    Scalar { text: String, plain: bool, at: Marker },
    Seq { items: Vec<Node>, at: Marker },
    Map { entries: Vec<(Node, Node)>, at: Marker },
    Alias { at: Marker },
}

impl Node {
    fn at(&self) -> Marker {
        match self {
            Node::Scalar { at, .. } | Node::Seq { at, .. } | Node::Map { at, .. } | Node::Alias { at } => *at,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { text, plain: true, .. } if is_null(text) => "nothing (null)",
            Node::Scalar { text, plain: true, .. } if text == "true" || text == "false" => "a boolean",
            Node::Scalar { text, plain: true, .. } if looks_numeric(text) => "a number",
            Node::Scalar { .. } => "a string",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
            Node::Alias { .. } => "an alias",
        }
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn looks_numeric(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    !t.is_empty() && t.parse::<f64>().is_ok() && t.bytes().next().map_or(false, |b| b.is_ascii_digit() || b == b'.')
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    /// Keys waiting for their value, one per open mapping (None: a key comes next).
    keys: Vec<Option<Node>>,
    docs: Vec<Node>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Node::Seq { items, .. }) => items.push(node),
            Some(Node::Map { entries, .. }) => {
                let slot = self.keys.last_mut().expect("a mapping has a key slot");
                match slot.take() {
                    None => *slot = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
            _ => self.docs.push(node),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, style, _, _) => self.push_value(Node::Scalar { text, plain: style == TScalarStyle::Plain, at: mark }),
            Event::Alias(_) => self.push_value(Node::Alias { at: mark }),
            Event::SequenceStart(..) => self.stack.push(Node::Seq { items: Vec::new(), at: mark }),
            Event::MappingStart(..) => {
                self.stack.push(Node::Map { entries: Vec::new(), at: mark });
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(mut node) = self.stack.pop() {
                    if let Node::Map { entries, at } = &mut node {
                        self.keys.pop();
                        // A block mapping starts where its first key does
                        // (the parser marks it at the first `:`).
                        if let Some((k, _)) = entries.first() {
                            *at = k.at();
                        }
                    }
                    self.push_value(node);
                }
            }
            _ => {}
        }
    }
}

/// The largest configuration file taken (bytes).
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Reads one file's text; Err: the YAML itself is broken (one problem).
fn document(file: &str, text: &str) -> Result<Option<Node>, Problem> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, true) {
        let m = e.marker();
        return Err(Problem { file: file.into(), line: m.line(), column: m.col() + 1, path: String::new(), message: format!("YAML syntax: {}", e.info()) });
    }
    if b.docs.len() > 1 {
        let at = b.docs[1].at();
        return Err(Problem { file: file.into(), line: at.line(), column: at.col() + 1, path: String::new(), message: "one YAML document per file, not several".into() });
    }
    Ok(b.docs.pop())
}

// ---------------------------------------------------------------------------
// Checking.

struct Check<'a> {
    file: &'a str,
    problems: Vec<Problem>,
}

impl Check<'_> {
    fn problem(&mut self, at: Marker, path: &str, message: impl Into<String>) {
        self.problems.push(Problem { file: self.file.into(), line: at.line(), column: at.col() + 1, path: path.into(), message: message.into() });
    }

    /// The entries of a mapping, each key a string; reports unknown keys
    /// (those not in `known`), duplicate keys and keys that are not strings.
    fn mapping<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Option<BTreeMap<&'n str, &'n Node>> {
        let Node::Map { entries, .. } = node else {
            self.problem(node.at(), path, format!("expected a mapping, found {}", node.kind()));
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let Node::Scalar { text, .. } = k else {
                self.problem(k.at(), path, "keys are plain names");
                continue;
            };
            let here = join(path, text);
            if !known.contains(&text.as_str()) {
                let hint = closest(text, known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                self.problem(k.at(), &here, format!("unknown field `{text}`{hint}; expected one of: {}", known.join(", ")));
                continue;
            }
            if out.insert(text.as_str(), v).is_some() {
                self.problem(k.at(), &here, format!("`{text}` is given twice"));
            }
        }
        Some(out)
    }

    fn required<'n>(&mut self, m: &BTreeMap<&str, &'n Node>, node: &Node, path: &str, key: &str) -> Option<&'n Node> {
        let v = m.get(key).copied();
        if v.is_none() {
            self.problem(node.at(), path, format!("missing field `{key}`"));
        }
        v
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node {
            Node::Scalar { text, plain, .. } if !*plain || node.kind() == "a string" => {
                if text.trim().is_empty() {
                    self.problem(node.at(), path, "expected a non-empty string");
                    return None;
                }
                Some(text.clone())
            }
            Node::Scalar { text, .. } if node.kind() == "a number" => {
                self.problem(node.at(), path, format!("expected a string, found the number {text} (YAML reads unquoted {text} as a number: write '{text}')"));
                None
            }
            _ => {
                self.problem(node.at(), path, format!("expected a string, found {}", node.kind()));
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node {
            Node::Scalar { text, plain: true, .. } if text == "true" => Some(true),
            Node::Scalar { text, plain: true, .. } if text == "false" => Some(false),
            _ => {
                self.problem(node.at(), path, format!("expected true or false, found {}", node.kind()));
                None
            }
        }
    }

    /// A non-empty list of strings.
    fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<(usize, String, Marker)>> {
        let Node::Seq { items, .. } = node else {
            self.problem(node.at(), path, format!("expected a list of strings, found {}", node.kind()));
            return None;
        };
        if items.is_empty() {
            self.problem(node.at(), path, "expected a non-empty list of strings");
            return None;
        }
        // Items that are not strings are reported; the others are checked on.
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.string(item, &format!("{path}[{i}]")) {
                out.push((i, s, item.at()));
            }
        }
        Some(out)
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match node {
            Node::Seq { items, .. } if !items.is_empty() => Some(items),
            Node::Seq { .. } => {
                self.problem(node.at(), path, "expected a non-empty list");
                None
            }
            _ => {
                self.problem(node.at(), path, format!("expected a list, found {}", node.kind()));
                None
            }
        }
    }

    fn versions(&mut self, m: &BTreeMap<&str, &Node>, node: &Node, path: &str, tag_rules: bool) -> Option<Versions> {
        let before = self.problems.len();
        let mut v = Versions::default();
        let mut ok = true;
        if let Some(p) = m.get("match") {
            let here = join(path, "match");
            if let Some(text) = self.string(p, &here) {
                match regex_lite::Regex::new(&text) {
                    Ok(re) => v.pattern = Some((text, re)),
                    Err(e) => {
                        self.problem(p.at(), &here, format!("not a regular expression: {}", first_line(&e.to_string())));
                        ok = false;
                    }
                }
            } else {
                ok = false;
            }
        }
        match m.get("versions") {
            Some(list) => {
                let here = join(path, "versions");
                match self.strings(list, &here) {
                    Some(items) => {
                        let mut seen = HashSet::new();
                        for (i, text, at) in items {
                            let item_path = format!("{here}[{i}]");
                            if !seen.insert(text.clone()) {
                                self.problem(at, &item_path, format!("`{text}` is listed twice"));
                                ok = false;
                                continue;
                            }
                            if is_constraint(&text) {
                                match constraint(&text) {
                                    Ok(alts) => v.ranges.push((text, alts)),
                                    Err(e) => {
                                        self.problem(at, &item_path, format!("not a version constraint: {e}"));
                                        ok = false;
                                    }
                                }
                            } else if tag_rules && !crate::oci::valid_tag(&text) {
                                self.problem(at, &item_path, format!("`{text}` is neither a tag (letters, digits, `_`, `.`, `-`; at most 128, not starting with `.` or `-`) nor a version constraint"));
                                ok = false;
                            } else if !tag_rules && !valid_chart_version(&text) {
                                self.problem(at, &item_path, format!("`{text}` is neither a chart version nor a version constraint"));
                                ok = false;
                            } else {
                                v.exact.push(text);
                            }
                        }
                    }
                    None => ok = false,
                }
            }
            None if !m.contains_key("match") => {
                self.problem(node.at(), path, "missing field `versions` (or `match`)");
                ok = false;
            }
            None => {}
        }
        if let Some(k) = m.get("keep") {
            let here = join(path, "keep");
            match k {
                Node::Scalar { text, plain: true, .. } if text.parse::<usize>().map_or(false, |n| n > 0) => {
                    if v.ranges.is_empty() && v.pattern.is_none() {
                        self.problem(k.at(), &here, "`keep` picks the newest of what a constraint or `match` selects; this entry has neither");
                        ok = false;
                    } else {
                        v.keep = text.parse().ok();
                    }
                }
                Node::Scalar { text, plain: true, .. } if looks_numeric(text) => {
                    self.problem(k.at(), &here, format!("expected a whole number of versions (1 or more), found {text}"));
                    ok = false;
                }
                _ => {
                    self.problem(k.at(), &here, format!("expected a whole number of versions (1 or more), found {}", k.kind()));
                    ok = false;
                }
            }
        }
        (ok && self.problems.len() == before).then_some(v)
    }

    fn credentials(&mut self, node: &Node, path: &str) -> Option<Credentials> {
        let m = self.mapping(node, path, &["username", "password_secret"])?;
        let user = self.required(&m, node, path, "username").and_then(|n| self.string(n, &join(path, "username")));
        let secret = self.required(&m, node, path, "password_secret").and_then(|n| self.string(n, &join(path, "password_secret")));
        if let Some((s, n)) = secret.as_ref().zip(m.get("password_secret")) {
            if !valid_secret_name(s) {
                self.problem(n.at(), &join(path, "password_secret"), "the name of a Worker secret: letters, digits and `_`, not starting with a digit");
                return None;
            }
        }
        Some(Credentials { username: user?, password_secret: secret? })
    }
}

impl Check<'_> {
    /// An entry's `credentials` (None: none given) and `prune` (default: the
    /// file's); the outer None: the field is wrong (reported).
    fn access(&mut self, m: &BTreeMap<&str, &Node>, path: &str, prune_all: bool) -> (Option<Option<Credentials>>, Option<bool>) {
        let credentials = match m.get("credentials") {
            None => Some(None),
            Some(n) => self.credentials(n, &join(path, "credentials")).map(Some),
        };
        let prune = match m.get("prune") {
            None => Some(prune_all),
            Some(n) => self.boolean(n, &join(path, "prune")),
        };
        (credentials, prune)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// The known name closest to an unknown one (a typo), if close enough.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known.iter().map(|k| (distance(name, k), *k)).filter(|(d, k)| *d <= 2.max(k.len() / 4)).min().map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Whether a `versions` item is a constraint rather than an exact version.
fn is_constraint(text: &str) -> bool {
    let t = text.trim();
    t.starts_with(['~', '^', '<', '>', '=']) || t.contains(' ') || t.contains("||") || t.contains(',') || t == "*"
        || t.split('.').any(|p| p == "x" || p == "X" || p == "*")
}

/// A constraint as SemVer requirements, one per `||` alternative;
/// comparators may be separated by spaces (`>=2.0.0 <3`) or commas.
fn constraint(text: &str) -> Result<Vec<semver::VersionReq>, String> {
    text.split("||")
        .map(|alt| {
            let alt = alt.trim();
            if alt.is_empty() {
                return Err("an empty alternative".to_string());
            }
            // `>= 2.0` is one comparator: glue operators to their version, then
            // split on spaces.
            let mut glued = String::new();
            let mut pending_op = false;
            for word in alt.split([' ', ',']).filter(|w| !w.is_empty()) {
                if !glued.is_empty() && !pending_op {
                    glued.push_str(", ");
                }
                glued.push_str(word);
                pending_op = word.chars().all(|c| "<>=~^".contains(c));
            }
            semver::VersionReq::parse(&glued).map_err(|e| format!("`{alt}`: {e}"))
        })
        .collect()
}

fn valid_chart_version(t: &str) -> bool {
    !t.is_empty() && t.len() <= 128 && t.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-+".contains(&c))
}

fn valid_secret_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && !b[0].is_ascii_digit() && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A registry host as written in `source_registry`: a DNS name or IP address
/// with an optional port, no scheme, no path.
pub fn valid_registry_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (h, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |n| n == 0) {
            return false;
        }
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty() && b.len() <= 63 && b[0] != b'-' && b[b.len() - 1] != b'-' && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// Docker Hub's names for its registry.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com")
}

/// Operating systems and architectures of the OCI image index spec
/// (Go's `GOOS`/`GOARCH` values that images are built for).
const OSES: &[&str] = &["linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix", "android", "dragonfly", "plan9", "js", "wasip1"];
const ARCHES: &[&str] = &["amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64", "mipsle", "mips", "loong64", "wasm"];

fn platform(text: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = text.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{text}` is not a platform: write os/arch or os/arch/variant (linux/amd64, linux/arm/v7)"));
    }
    if !OSES.contains(&parts[0]) {
        return Err(format!("unknown operating system `{}` (one of: {})", parts[0], OSES.join(", ")));
    }
    if !ARCHES.contains(&parts[1]) {
        return Err(format!("unknown architecture `{}` (one of: {})", parts[1], ARCHES.join(", ")));
    }
    let variant = parts.get(2).map(|v| v.to_string());
    if let Some(v) = &variant {
        if !matches!(v.as_str(), "v5" | "v6" | "v7" | "v8" | "v1" | "v2" | "v3" | "v4") {
            return Err(format!("unknown variant `{v}` (v5, v6, v7 or v8 for arm; v1–v4 for amd64)"));
        }
    }
    Ok(Platform { os: parts[0].into(), architecture: parts[1].into(), variant })
}

fn chart_url(text: &str) -> Result<(), String> {
    let (scheme, rest) = text.split_once("://").ok_or("expected an http:// or https:// URL")?;
    if scheme != "https" && scheme != "http" {
        return Err(format!("expected an http:// or https:// URL, not {scheme}://"));
    }
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host_port.contains('@') {
        return Err("credentials do not belong in the URL: use `credentials`".into());
    }
    if !valid_registry_host(host_port) {
        return Err(format!("`{host_port}` is not a host name"));
    }
    if rest.contains(['?', '#']) {
        return Err("a chart repository URL has no query or fragment".into());
    }
    Ok(())
}

const IMAGE_FIELDS: &[&str] = &["name", "versions", "source_registry", "platforms", "match", "keep", "target", "credentials", "prune"];
const CHART_FIELDS: &[&str] = &["name", "versions", "repo_name", "repo_url", "match", "keep", "target", "credentials", "prune"];

/// Reads and checks one file (`file` names it in problems). An empty file is
/// an empty configuration.
pub fn parse(file: &str, text: &str, part: Part) -> Result<Config, Vec<Problem>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![Problem { file: file.into(), line: 1, column: 1, path: String::new(), message: format!("larger than {} bytes", MAX_FILE_BYTES) }]);
    }
    let doc = document(file, text).map_err(|p| vec![p])?;
    let mut c = Check { file, problems: Vec::new() };
    let mut config = Config::default();
    let Some(doc) = doc else { return Ok(config) };
    if matches!(&doc, Node::Scalar { text, plain: true, .. } if is_null(text)) {
        return Ok(config);
    }
    let known: &[&str] = match part {
        Part::Images => &["images", "prune"],
        Part::Charts => &["charts", "prune"],
        Part::Both => &["images", "charts", "prune"],
    };
    let Some(top) = c.mapping(&doc, "", known) else { return Err(c.problems) };
    // (sorted below with the rest)
    let prune_all = top.get("prune").and_then(|n| c.boolean(n, "prune")).unwrap_or(false);
    if !top.contains_key("images") && !top.contains_key("charts") {
        let want = match part {
            Part::Images => "`images`",
            Part::Charts => "`charts`",
            Part::Both => "`images` or `charts`",
        };
        c.problem(doc.at(), "", format!("missing field {want}"));
    }
    if let Some(list) = top.get("images").and_then(|n| c.list(n, "images")) {
        let mut targets: BTreeMap<String, usize> = BTreeMap::new();
        for (i, node) in list.iter().enumerate() {
            let path = format!("images[{i}]");
            if let Some(img) = image(&mut c, node, &path, prune_all) {
                if let Some(first) = targets.insert(img.target.clone(), i) {
                    c.problem(node.at(), &path, format!("lands in `{}` as images[{first}] does: give one of them another `target`, or merge their versions", img.target));
                    continue;
                }
                config.images.push(img);
            }
        }
    }
    if let Some(list) = top.get("charts").and_then(|n| c.list(n, "charts")) {
        let mut targets: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (i, node) in list.iter().enumerate() {
            let path = format!("charts[{i}]");
            if let Some(ch) = chart(&mut c, node, &path, prune_all) {
                if let Some(first) = targets.insert((ch.repo_name.clone(), ch.target.clone()), i) {
                    c.problem(node.at(), &path, format!("lands in `{}/{}` as charts[{first}] does: give one of them another `target`, or merge their versions", ch.repo_name, ch.target));
                    continue;
                }
                config.charts.push(ch);
            }
        }
    }
    if c.problems.is_empty() {
        Ok(config)
    } else {
        // In the order of the file, as an editor shows them.
        c.problems.sort_by_key(|p| (p.line, p.column));
        Err(c.problems)
    }
}

fn image(c: &mut Check<'_>, node: &Node, path: &str, prune_all: bool) -> Option<Image> {
    let m = c.mapping(node, path, IMAGE_FIELDS)?;
    let before = c.problems.len();
    let name = c.required(&m, node, path, "name").and_then(|n| {
        let here = join(path, "name");
        let s = c.string(n, &here)?;
        if !crate::oci::name::valid_name(&s) {
            c.problem(n.at(), &here, format!("`{s}` is not a repository name (lower-case letters, digits and `._-` in `/`-separated parts)"));
            return None;
        }
        Some(s)
    });
    let registry = c.required(&m, node, path, "source_registry").and_then(|n| {
        let here = join(path, "source_registry");
        let s = c.string(n, &here)?;
        if s.contains("://") || s.contains('/') {
            c.problem(n.at(), &here, format!("`{s}` is not a registry host: write the host (and port) only, e.g. docker.io or ghcr.io"));
            return None;
        }
        if !valid_registry_host(&s) {
            c.problem(n.at(), &here, format!("`{s}` is not a registry host name"));
            return None;
        }
        Some(s.to_ascii_lowercase())
    });
    let versions = c.versions(&m, node, path, true);
    let platforms = match m.get("platforms") {
        None => Some(DEFAULT_PLATFORMS.iter().map(|p| platform(p).expect("the defaults are platforms")).collect()),
        Some(n) => {
            let here = join(path, "platforms");
            c.strings(n, &here).and_then(|items| {
                let mut out: Vec<Platform> = Vec::new();
                let mut ok = true;
                for (i, text, at) in items {
                    match platform(&text) {
                        Ok(p) if out.contains(&p) => {
                            c.problem(at, &format!("{here}[{i}]"), format!("`{text}` is listed twice"));
                            ok = false;
                        }
                        Ok(p) => out.push(p),
                        Err(e) => {
                            c.problem(at, &format!("{here}[{i}]"), e);
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            })
        }
    };
    let target = match m.get("target") {
        None => name.clone(),
        Some(n) => {
            let here = join(path, "target");
            c.string(n, &here).and_then(|s| {
                if crate::oci::name::valid_name(&s) {
                    Some(s)
                } else {
                    c.problem(n.at(), &here, format!("`{s}` is not a repository name"));
                    None
                }
            })
        }
    };
    let (credentials, prune) = c.access(&m, path, prune_all);
    if c.problems.len() > before {
        return None;
    }
    let (name, registry) = (name?, registry?);
    let source_repository = if is_docker_hub(&registry) && !name.contains('/') { format!("library/{name}") } else { name.clone() };
    Some(Image { source_repository, name, source_registry: registry, versions: versions?, platforms: platforms?, target: target?, credentials: credentials?, prune: prune? })
}

fn chart(c: &mut Check<'_>, node: &Node, path: &str, prune_all: bool) -> Option<Chart> {
    let m = c.mapping(node, path, CHART_FIELDS)?;
    let before = c.problems.len();
    let chart_name = |c: &mut Check<'_>, n: &Node, here: &str| -> Option<String> {
        let s = c.string(n, here)?;
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.') || s.starts_with(['.', '-']) {
            c.problem(n.at(), here, format!("`{s}` is not a chart name (lower-case letters, digits, `-`, `_`, `.`)"));
            return None;
        }
        Some(s)
    };
    let name = c.required(&m, node, path, "name").and_then(|n| chart_name(c, n, &join(path, "name")));
    let repo_name = c.required(&m, node, path, "repo_name").and_then(|n| chart_name(c, n, &join(path, "repo_name")));
    let repo_url = c.required(&m, node, path, "repo_url").and_then(|n| {
        let here = join(path, "repo_url");
        let s = c.string(n, &here)?;
        match chart_url(&s) {
            Ok(()) => Some(s.trim_end_matches('/').to_string()),
            Err(e) => {
                c.problem(n.at(), &here, e);
                None
            }
        }
    });
    let versions = c.versions(&m, node, path, false);
    let target = match m.get("target") {
        None => name.clone(),
        Some(n) => chart_name(c, n, &join(path, "target")),
    };
    let (credentials, prune) = c.access(&m, path, prune_all);
    if c.problems.len() > before {
        return None;
    }
    Some(Chart { name: name?, versions: versions?, repo_name: repo_name?, repo_url: repo_url?, target: target?, credentials: credentials?, prune: prune? })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = "images:
  - name: 'hashicorp/vault'          # may include a namespace
    versions: ['1.19.0', '1.19.5', 'latest']
    source_registry: 'docker.io'      # host of the source registry
    platforms: [\"linux/amd64\", \"linux/arm64\"]   # optional, default these two
charts:
  - name: 'vault'
    versions: ['0.29.0', '0.30.0']
    repo_name: 'hashicorp'            # becomes the chart repository name on the site
    repo_url: 'https://helm.releases.hashicorp.com'
";

    fn problems(file: &str, text: &str, part: Part) -> Vec<String> {
        parse(file, text, part).expect_err("problems").iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_files_people_write_are_taken_as_they_are() {
        let c = parse("mirror.yaml", ISSUE_EXAMPLE, Part::Both).expect("valid");
        let [img] = &c.images[..] else { panic!("{c:?}") };
        assert_eq!((img.name.as_str(), img.source_repository.as_str(), img.target.as_str()), ("hashicorp/vault", "hashicorp/vault", "hashicorp/vault"));
        assert_eq!(img.versions.exact, ["1.19.0", "1.19.5", "latest"]);
        assert_eq!(img.platforms.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
        assert!(!img.prune && img.credentials.is_none());
        let [ch] = &c.charts[..] else { panic!("{c:?}") };
        assert_eq!((ch.name.as_str(), ch.repo_name.as_str(), ch.repo_url.as_str()), ("vault", "hashicorp", "https://helm.releases.hashicorp.com"));
        assert_eq!(ch.versions.exact, ["0.29.0", "0.30.0"]);
        // Each file on its own.
        let (images, charts) = ISSUE_EXAMPLE.split_at(ISSUE_EXAMPLE.find("charts:").unwrap());
        assert_eq!(parse("images.yaml", images, Part::Images).unwrap().images, c.images);
        assert_eq!(parse("charts.yaml", charts, Part::Charts).unwrap().charts, c.charts);
        assert_eq!(problems("images.yaml", charts, Part::Images), ["images.yaml:1:1 charts: unknown field `charts`; expected one of: images, prune", "images.yaml:1:1 missing field `images`"]);
        assert_eq!(parse("images.yaml", "", Part::Images).unwrap(), Config::default());
        assert_eq!(parse("images.yaml", "# nothing yet\n", Part::Images).unwrap(), Config::default());
    }

    #[test]
    fn docker_hub_names_get_their_implicit_library_and_targets_default_to_the_name() {
        let c = parse("images.yaml", "images:
  - {name: nginx, versions: ['1.27'], source_registry: docker.io}
  - {name: bitnami/redis, versions: ['7'], source_registry: registry-1.docker.io, target: cache/redis, platforms: [linux/arm/v7]}
  - {name: distroless/static, versions: [latest], source_registry: 'gcr.io'}
", Part::Images).unwrap();
        let got: Vec<_> = c.images.iter().map(|i| (i.source_registry.as_str(), i.source_repository.as_str(), i.target.as_str())).collect();
        assert_eq!(got, [("docker.io", "library/nginx", "nginx"), ("registry-1.docker.io", "bitnami/redis", "cache/redis"), ("gcr.io", "distroless/static", "distroless/static")]);
        assert_eq!(c.images[1].platforms, [Platform { os: "linux".into(), architecture: "arm".into(), variant: Some("v7".into()) }]);
    }

    #[test]
    fn a_wrong_type_is_located_at_its_value() {
        let text = "images:
  - name: 'hashicorp/vault'
    versions: ['1.19.0']
    source_registry: 'docker.io'
  - name: nginx
    source_registry: docker.io
    versions: latest
";
        assert_eq!(problems("images.yaml", text, Part::Images), ["images.yaml:7:15 images[1].versions: expected a list of strings, found a string"]);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_place() {
        let text = "images:
  - name: Hashicorp/Vault
    versions: []
    source_registry: https://docker.io
    platforms: [linux/amd64, linux, plan10/amd64, linux/arm64/v9]
  - name: nginx
    versoins: ['1']
    source_registry: docker.io
  - name: app
    versions: [1.20, '~1.25', '>=2.0.0 <3', '>=x', latest, latest]
    source_registry: 'ghcr.io:99999'
    keep: 0
    credentials: {username: bot}
  - name: ok
    versions: ['1']
    source_registry: ghcr.io
    target: app
  - name: app2
    versions: ['1']
    source_registry: ghcr.io
    target: app
    prune: yes
charts:
  - name: vault
    versions: ['0.29.0']
    repo_name: hashicorp
    repo_url: ftp://helm.example
  - name: vault
    match: '^0\\.(30'
    repo_name: hashicorp
    repo_url: https://user:pw@helm.example/charts
";
        let got = problems("mirror.yaml", text, Part::Both);
        let expected = [
            "mirror.yaml:2:11 images[0].name: `Hashicorp/Vault` is not a repository name (lower-case letters, digits and `._-` in `/`-separated parts)",
            "mirror.yaml:3:15 images[0].versions: expected a non-empty list of strings",
            "mirror.yaml:4:22 images[0].source_registry: `https://docker.io` is not a registry host: write the host (and port) only, e.g. docker.io or ghcr.io",
            "mirror.yaml:5:30 images[0].platforms[1]: `linux` is not a platform: write os/arch or os/arch/variant (linux/amd64, linux/arm/v7)",
            "mirror.yaml:5:37 images[0].platforms[2]: unknown operating system `plan10` (one of: linux, windows, darwin, freebsd, netbsd, openbsd, solaris, illumos, aix, android, dragonfly, plan9, js, wasip1)",
            "mirror.yaml:5:51 images[0].platforms[3]: unknown variant `v9` (v5, v6, v7 or v8 for arm; v1–v4 for amd64)",
            "mirror.yaml:6:5 images[1]: missing field `versions` (or `match`)",
            "mirror.yaml:7:5 images[1].versoins: unknown field `versoins` (did you mean `versions`?); expected one of: name, versions, source_registry, platforms, match, keep, target, credentials, prune",
            "mirror.yaml:10:16 images[2].versions[0]: expected a string, found the number 1.20 (YAML reads unquoted 1.20 as a number: write '1.20')",
            "mirror.yaml:10:45 images[2].versions[3]: not a version constraint: `>=x`: unexpected character 'x' while parsing major version number",
            "mirror.yaml:10:60 images[2].versions[5]: `latest` is listed twice",
            "mirror.yaml:11:22 images[2].source_registry: `ghcr.io:99999` is not a registry host name",
            "mirror.yaml:12:11 images[2].keep: expected a whole number of versions (1 or more), found 0",
            "mirror.yaml:13:19 images[2].credentials: missing field `password_secret`",
            "mirror.yaml:22:12 images[4].prune: expected true or false, found a string",
            "mirror.yaml:27:15 charts[0].repo_url: expected an http:// or https:// URL, not ftp://",
            "mirror.yaml:29:12 charts[1].match: not a regular expression: found open group without closing ')'",
            "mirror.yaml:31:15 charts[1].repo_url: credentials do not belong in the URL: use `credentials`",
        ];
        assert_eq!(got, expected, "\n{}", got.join("\n"));
    }

    #[test]
    fn two_entries_landing_in_one_place_are_refused_at_the_second() {
        let text = "images:
  - {name: app, versions: ['1'], source_registry: ghcr.io}
  - {name: other/app, versions: ['2'], source_registry: quay.io, target: app}
charts:
  - {name: vault, versions: ['1.0.0'], repo_name: hashicorp, repo_url: 'https://a.example'}
  - {name: vault, versions: ['2.0.0'], repo_name: hashicorp, repo_url: 'https://b.example'}
  - {name: vault, versions: ['2.0.0'], repo_name: other, repo_url: 'https://b.example'}
";
        assert_eq!(problems("mirror.yaml", text, Part::Both), [
            "mirror.yaml:3:6 images[1]: lands in `app` as images[0] does: give one of them another `target`, or merge their versions",
            "mirror.yaml:6:6 charts[1]: lands in `hashicorp/vault` as charts[0] does: give one of them another `target`, or merge their versions",
        ]);
    }

    #[test]
    fn broken_yaml_is_located() {
        let got = problems("images.yaml", "images:\n  - name: 'unterminated\n    versions: [1\n", Part::Images);
        assert_eq!(got, ["images.yaml:2:11 YAML syntax: invalid indentation in quoted scalar"]);
        let got = problems("images.yaml", "images: [\n", Part::Images);
        assert!(got[0].starts_with("images.yaml:2:1 YAML syntax: "), "{got:?}");
        assert_eq!(problems("images.yaml", "images: []\n---\nimages: []\n", Part::Images), ["images.yaml:3:1 one YAML document per file, not several"]);
        assert_eq!(problems("images.yaml", "- a\n", Part::Images), ["images.yaml:1:1 expected a mapping, found a list"]);
        assert_eq!(problems("images.yaml", "images: {}\n", Part::Images), ["images.yaml:1:9 images: expected a list, found a mapping"]);
    }

    #[test]
    fn constraints_pick_the_newest_versions_the_source_has() {
        let c = parse("images.yaml", "images:
  - name: app
    source_registry: ghcr.io
    versions: ['stable', '~1.25', '>=2.0.0 <3 || ^4.1']
    keep: 3
  - name: tools
    source_registry: ghcr.io
    match: 'v[0-9]+\\.[0-9]+-alpine'
", Part::Images).unwrap();
        let available: Vec<String> = ["1.24.9", "1.25.0", "1.25.3", "v1.26.0", "2.0.0", "2.5.1", "3.0.0", "4.0.0", "4.2.0", "latest", "stable"].map(String::from).to_vec();
        assert_eq!(c.images[0].versions.pick(&available), ["stable", "4.2.0", "2.5.1", "2.0.0"]);
        let mut v = c.images[0].versions.clone();
        v.keep = None;
        assert_eq!(v.pick(&available), ["stable", "4.2.0", "2.5.1", "2.0.0", "1.25.3", "1.25.0"]);
        let tools: Vec<String> = ["v1.2-alpine", "v1.10-alpine", "v1.2-alpine-debug", "x-v1.3-alpine", "v1.3"].map(String::from).to_vec();
        assert_eq!(c.images[1].versions.pick(&tools), ["v1.10-alpine", "v1.2-alpine"]);
        assert_eq!(lenient_version("v1.19").unwrap().to_string(), "1.19.0");
        assert_eq!(lenient_version("1.2.3-rc.1").unwrap().to_string(), "1.2.3-rc.1");
        assert_eq!(lenient_version("7-alpine").unwrap().to_string(), "7.0.0-alpine");
        assert!(lenient_version("latest").is_none() && lenient_version("1.2.3.4").is_none());
    }

    #[test]
    fn nothing_in_the_input_panics() {
        for text in ["", ":", "[", "{", "images:", "images: ~", "images: [~]", "images: [[]]", "images: [{name: [a]}]", "*a", "&a x", "images: *a",
                     "images: [{name: a, versions: ['>', '||', ' || ', '~', '^', '1.x || *']}]", "\u{feff}images: []", "images: [{name: a, keep: 99999999999999999999999}]"] {
            let _ = parse("f.yaml", text, Part::Both);
        }
    }
}
