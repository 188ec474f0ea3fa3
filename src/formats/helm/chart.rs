//! A chart archive (`<name>-<version>.tgz`) as Helm reads it: a gzip'd tar
//! whose entries all sit under one top folder named after the chart, with
//! `<name>/Chart.yaml` holding its metadata.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Largest chart archive Wharf takes (Helm's own limit on a decompressed chart is 100 MiB).
pub const MAX_CHART_BYTES: u64 = 20 << 20;
/// Helm refuses charts that decompress to more than this.
pub const MAX_DECOMPRESSED: u64 = 100 << 20;
/// Largest `Chart.yaml` read.
const MAX_CHART_YAML: u64 = 1 << 20;

/// `Chart.yaml`, with the fields Helm's `Metadata` has (unknown ones are
/// ignored, as Helm does). Scalars are read as text: `appVersion: 1.10` is "1.10".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintainers: Vec<Maintainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default)]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub chart_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Maintainer {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, rename = "import-values", skip_serializing_if = "Option::is_none")]
    pub import_values: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// A chart name as Helm accepts it, and as an OCI repository component
/// (lower case): letters, digits, `-`, `_`, `.`, starting and ending with a
/// letter or digit.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.as_bytes()[n.len() - 1].is_ascii_alphanumeric()
}

/// A chart version: SemVer 2 (what `helm package` and `helm lint` require).
pub fn parse_version(v: &str) -> Result<semver::Version, String> {
    semver::Version::parse(v).map_err(|e| format!("version {v:?} is not SemVer 2: {e}"))
}

/// Parses and checks `Chart.yaml`.
pub fn parse_metadata(yaml: &str) -> Result<Metadata, String> {
    let m: Metadata = serde_yaml_ng::from_str(yaml).map_err(|e| format!("Chart.yaml: {e}"))?;
    if m.api_version != "v1" && m.api_version != "v2" {
        return Err(format!("Chart.yaml: apiVersion must be v1 or v2, not {:?}", m.api_version));
    }
    if !valid_name(&m.name) {
        return Err(format!("Chart.yaml: name {:?} is not a chart name (lower-case letters, digits, '-', '_', '.')", m.name));
    }
    parse_version(&m.version).map_err(|e| format!("Chart.yaml: {e}"))?;
    if let Some(t) = &m.chart_type {
        if t != "application" && t != "library" {
            return Err(format!("Chart.yaml: type must be application or library, not {t:?}"));
        }
    }
    Ok(m)
}

/// Starts checking a chart archive as it streams past ([`crate::tarcheck`]:
/// the whole gzip'd tar must unpack, no entry may leave the chart's folder,
/// at most [`MAX_DECOMPRESSED`] bytes), keeping what [`from_kept`] reads.
/// `first` is the archive's first bytes (a chart is gzip).
pub fn check(first: &[u8]) -> Result<crate::tarcheck::Check, String> {
    if first.len() < 2 || first[0] != 0x1f || first[1] != 0x8b {
        return Err("a chart is a gzip'd tar (.tgz); this is not gzip".into());
    }
    Ok(crate::tarcheck::Check::new(crate::tarcheck::Compression::Gzip, MAX_DECOMPRESSED).keeping("Chart.yaml", MAX_CHART_YAML))
}

/// The chart's metadata from a checked archive: every entry under one top
/// folder named after the chart, no links, `<name>/Chart.yaml` valid.
pub fn from_kept(kept: crate::tarcheck::Kept) -> Result<Metadata, String> {
    let mut tops = kept.tops.iter();
    let top = tops.next().ok_or("the archive is empty")?.clone();
    if let Some(other) = tops.next() {
        return Err(format!("entries {top:?} and {other:?}: a chart's files all sit under one folder"));
    }
    if let Some(link) = kept.links.first() {
        return Err(format!("entry {link:?} is a link; charts hold files and folders only"));
    }
    let (_, yaml) = kept.files.into_iter().find(|(name, _)| name.trim_start_matches("./") == format!("{top}/Chart.yaml")).ok_or_else(|| format!("no {top}/Chart.yaml in the archive"))?;
    let meta = parse_metadata(&String::from_utf8(yaml).map_err(|_| "Chart.yaml is not UTF-8 text".to_string())?)?;
    if meta.name != top {
        return Err(format!("Chart.yaml names the chart {:?}, but its folder in the archive is {top:?}", meta.name));
    }
    Ok(meta)
}

/// Reads a chart archive held in memory, pushed in pieces as the worker pushes
/// one streamed from R2: the same [`Inspection`].
pub fn inspect(tgz: &[u8]) -> Result<Metadata, String> {
    crate::formats::inspect::in_memory(Inspection::new(tgz.len() as u64), tgz, 64 << 10)
}

/// The inspection of a chart archive of `size` bytes (at most
/// [`MAX_CHART_BYTES`]): its first bytes must be gzip; then the whole archive
/// streams through [`check`], and [`from_kept`] reads what it kept.
pub struct Inspection {
    size: u64,
    state: State,
}

enum State {
    Start,
    First,
    Archive(crate::tarcheck::Check),
    Over,
}

impl Inspection {
    pub fn new(size: u64) -> Inspection {
        Inspection { size, state: State::Start }
    }
}

impl crate::formats::inspect::Inspector for Inspection {
    type Member = Metadata;

    fn step(&mut self, given: Option<Vec<u8>>) -> Result<crate::formats::inspect::Need<Metadata>, String> {
        use crate::formats::inspect::{given as bytes, Need};
        let size = self.size;
        let (state, need) = match std::mem::replace(&mut self.state, State::Over) {
            State::Start if size > MAX_CHART_BYTES => return Err(format!("{size} bytes; charts are limited to {} MiB", MAX_CHART_BYTES >> 20)),
            State::Start => (State::First, Need::Bytes { offset: 0, len: size.min(2) }),
            State::First => (State::Archive(check(&bytes(given)?)?), Need::Stream { offset: 0, len: size }),
            State::Archive(c) => (State::Over, Need::Done(from_kept(c.finish_keeping()?)?)),
            State::Over => return Err("the inspection is over".into()),
        };
        self.state = state;
        Ok(need)
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        match &mut self.state {
            State::Archive(c) => c.push(chunk),
            _ => Err("no stream was asked for".into()),
        }
    }
}

/// The archive's file name in a repository.
pub fn filename(name: &str, version: &str) -> String {
    format!("{name}-{version}.tgz")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A chart archive as `helm package` lays it out.
    pub(crate) fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            // The name is written as is (tar-rs would refuse `..`, which the tests need).
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    pub(crate) fn chart(name: &str, version: &str) -> Vec<u8> {
        let yaml = format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: 1.10\ndescription: A chart\ntype: application\n");
        tgz(&[(&format!("{name}/Chart.yaml"), yaml.as_bytes()), (&format!("{name}/values.yaml"), b"replicas: 1\n"), (&format!("{name}/templates/a.yaml"), b"kind: ConfigMap\n")])
    }

    #[test]
    fn a_packaged_chart_is_read_with_its_metadata_as_text() {
        let m = inspect(&chart("web", "1.2.3-rc.1+build.5")).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str(), m.app_version.as_deref()), ("web", "1.2.3-rc.1+build.5", Some("1.10")));
        assert_eq!(m.api_version, "v2");
        let full = "apiVersion: v2\nname: full\nversion: 0.1.0\nkeywords: [a, b]\nmaintainers:\n  - name: M\n    email: m@example.com\n\
                    annotations:\n  category: db\ndependencies:\n  - name: redis\n    version: ~17\n    repository: oci://r.example.com/charts\n    import-values: [{child: a, parent: b}]\n\
                    kubeVersion: '>=1.25'\ndeprecated: true\nicon: https://example.com/i.png\nunknownField: kept out\n";
        let m = inspect(&tgz(&[("full/Chart.yaml", full.as_bytes())])).unwrap();
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(j["dependencies"][0]["import-values"][0]["child"], "a");
        assert_eq!(j["kubeVersion"], ">=1.25");
        assert_eq!(j["maintainers"][0]["email"], "m@example.com");
        assert!(j.get("unknownField").is_none() && j["deprecated"] == true);
    }

    #[test]
    fn the_stored_record_gives_back_the_inspection() {
        use crate::formats::Ingest;
        let m = inspect(&chart("web", "1.2.3")).unwrap();
        let columns = crate::formats::Helm::RECORDS.1;
        let row: serde_json::Map<String, serde_json::Value> = columns.iter().map(|c| c.to_string()).zip(crate::formats::Helm::record(&m, "ab")).collect();
        assert_eq!(crate::formats::Helm::from_record(&row), Some(m));
    }

    #[test]
    fn the_check_keeps_at_most_two_top_folders() {
        let many: Vec<(String, &[u8])> = (0..500).map(|i| (format!("top{i}/x"), &b"x"[..])).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let data = tgz(&many);
        let mut c = check(&data).unwrap();
        c.push(&data).unwrap();
        assert_eq!(c.finish_keeping().unwrap().tops.len(), 2);
    }

    #[test]
    fn malformed_charts_are_refused_with_the_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04 not gzip".to_vec(), "not gzip"),
            (tgz(&[("web/values.yaml", b"a: 1\n")]), "no web/Chart.yaml"),
            (tgz(&[("web/Chart.yaml", b"apiVersion: v2\nname: other\nversion: 1.0.0\n")]), "folder in the archive is \"web\""),
            (tgz(&[("web/Chart.yaml", b"apiVersion: v2\nname: web\nversion: 1.0\n")]), "not SemVer 2"),
            (tgz(&[("web/Chart.yaml", b"apiVersion: v3\nname: web\nversion: 1.0.0\n")]), "apiVersion must be v1 or v2"),
            (tgz(&[("web/Chart.yaml", b"name: [unclosed\n")]), "Chart.yaml:"),
            (tgz(&[("web/Chart.yaml", b"apiVersion: v2\nname: web\nversion: 1.0.0\n"), ("web/../../etc/passwd", b"x")]), "leaves the package root"),
            (tgz(&[("web/Chart.yaml", b"apiVersion: v2\nname: web\nversion: 1.0.0\n"), ("other/x", b"x")]), "one folder"),
            (tgz(&[("Web/Chart.yaml", b"apiVersion: v2\nname: Web\nversion: 1.0.0\n")]), "not a chart name"),
        ];
        // A link entry.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "web/link", "/etc/passwd").unwrap();
        let mut y = tar::Header::new_gnu();
        let yaml = b"apiVersion: v2\nname: web\nversion: 1.0.0\n";
        y.set_size(yaml.len() as u64);
        y.set_mode(0o644);
        b.append_data(&mut y, "web/Chart.yaml", &yaml[..]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
        let mut cases = cases;
        cases.push((gz.finish().unwrap(), "is a link"));
        // Whatever the archive holds, what the check keeps stays small: a second
        // Chart.yaml is refused, and many top folders are told apart by two.
        let yaml: &[u8] = b"apiVersion: v2\nname: web\nversion: 1.0.0\n";
        cases.push((tgz(&[("web/Chart.yaml", yaml), ("other/Chart.yaml", yaml)]), "Chart.yaml more than once"));
        let many: Vec<(String, &[u8])> = (0..500).map(|i| (format!("top{i}/x"), &b"x"[..])).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        cases.push((tgz(&many), "one folder"));
        for (data, want) in cases {
            let err = inspect(&data).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
