//! A chart repository's publication, planned without I/O: `<repo>/index.yaml`
//! (apiVersion v1, entries by name, versions newest first by SemVer, each
//! with its `urls`, `digest` and `created`), the archives and provenance files
//! beside it, and each chart as an OCI artifact in the site's registry at
//! `<repo>/<name>:<version>` with Helm's media types.

use super::chart::{self, Metadata};
use crate::formats::Publication;
use crate::oci;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const CHART_TYPE: &str = "application/gzip";
pub const PROV_TYPE: &str = "application/pgp-signature";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
pub const CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub const PROV_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.provenance.v1.prov";
/// Marks the OCI artifacts Wharf makes from uploaded charts, so a publication
/// tells them from charts pushed with `helm push`.
pub const MADE_BY_WHARF: &str = "io.wharf.helm.uploaded";

/// A chart of the repository, as its member record keeps it.
#[derive(Debug, Clone)]
pub struct Member {
    pub sha256: String,
    pub size: u64,
    pub metadata: Metadata,
    /// When the chart was first added (ms): its `created` in the index.
    pub created_ms: i64,
    /// Its provenance file, if one was uploaded (sha256, size).
    pub provenance: Option<(String, u64)>,
    /// Pushed to the registry (`helm push`): its OCI artifact is the pushed one,
    /// left as it is; the classic repository lists it too.
    pub pushed: bool,
}

/// A chart `helm push` put in the registry, as its manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedChart {
    pub config_sha256: String,
    pub config_size: u64,
    pub chart_sha256: String,
    pub chart_size: u64,
}

/// Reads a manifest: a Helm chart's (Helm's config media type and a chart
/// content layer), or None for anything else.
pub fn pushed_chart(manifest: &[u8]) -> Option<PushedChart> {
    let m: Value = serde_json::from_slice(manifest).ok()?;
    if m["config"]["mediaType"] != CONFIG_MEDIA_TYPE || m["annotations"].get(MADE_BY_WHARF).is_some() {
        return None;
    }
    let hex = |d: &Value| d.as_str()?.strip_prefix("sha256:").filter(|h| crate::api::valid_sha256(h)).map(str::to_string);
    let layer = m["layers"].as_array()?.iter().find(|l| l["mediaType"] == CHART_MEDIA_TYPE)?;
    Some(PushedChart { config_sha256: hex(&m["config"]["digest"])?, config_size: m["config"]["size"].as_u64()?, chart_sha256: hex(&layer["digest"])?, chart_size: layer["size"].as_u64()? })
}

/// The chart a pushed artifact holds, from its config (Chart.yaml as JSON),
/// if it is the chart its repository and tag name.
pub fn pushed_metadata(config: &[u8], chart: &str, tag: &str) -> Option<Metadata> {
    let m: Metadata = serde_json::from_slice(config).ok()?;
    (m.name == chart && oci_tag(&m.version) == tag && chart::valid_name(&m.name) && chart::parse_version(&m.version).is_ok()).then_some(m)
}

pub struct Input<'a> {
    pub repository: &'a str,
    pub members: &'a [Member],
    /// The draft's paths under `<repo>/`, with their sha256.
    pub existing: &'a BTreeMap<String, String>,
    /// The publication's time (ms): the index's `generated`.
    pub now_ms: i64,
}

/// RFC 3339 in UTC with milliseconds, as Helm writes `created`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}

/// The OCI tag of a chart version (`+` is not allowed in tags: Helm writes `_`).
pub fn oci_tag(version: &str) -> String {
    version.replace('+', "_")
}

/// The chart's OCI repository in the site's registry.
pub fn oci_name(repository: &str, chart: &str) -> String {
    format!("{repository}/{chart}")
}

/// `index.yaml` of the members: deterministic for the same members and time.
pub fn index_yaml(members: &[Member], now_ms: i64) -> String {
    let mut by_name: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in members {
        by_name.entry(m.metadata.name.as_str()).or_default().push(m);
    }
    let mut entries = Map::new();
    for (name, mut versions) in by_name {
        versions.sort_by(|a, b| {
            let (va, vb) = (chart::parse_version(&a.metadata.version).ok(), chart::parse_version(&b.metadata.version).ok());
            vb.cmp(&va).then_with(|| b.metadata.version.cmp(&a.metadata.version))
        });
        let list: Vec<Value> = versions
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(&m.metadata).expect("serialisable");
                let o = v.as_object_mut().expect("an object");
                o.insert("urls".into(), json!([chart::filename(&m.metadata.name, &m.metadata.version)]));
                o.insert("created".into(), json!(rfc3339(m.created_ms)));
                o.insert("digest".into(), json!(m.sha256));
                v
            })
            .collect();
        entries.insert(name.to_string(), Value::Array(list));
    }
    let doc = json!({"apiVersion": "v1", "entries": entries, "generated": rfc3339(now_ms)});
    serde_yaml_ng::to_string(&doc).expect("YAML of JSON values")
}

/// `<name>-<version>` split where the rest is SemVer and the name a chart
/// name (names may hold `-<digit>`, versions `-rc-1`: the first split that
/// reads both).
pub fn split_filename(stem: &str) -> Option<(&str, &str)> {
    stem.match_indices('-').map(|(i, _)| (&stem[..i], &stem[i + 1..])).find(|(n, v)| chart::valid_name(n) && chart::parse_version(v).is_ok())
}

pub fn plan(input: &Input<'_>) -> Publication {
    let repo = input.repository;
    let mut p = Publication::default();
    let mut want: BTreeSet<String> = BTreeSet::new();
    for m in input.members {
        let (name, version) = (&m.metadata.name, &m.metadata.version);
        let file = format!("{repo}/{}", chart::filename(name, version));
        let mut changed = input.existing.get(&file) != Some(&m.sha256);
        if changed {
            p.link(file.clone(), &m.sha256, CHART_TYPE);
        }
        want.insert(file.clone());
        if let Some((prov, _)) = &m.provenance {
            let path = format!("{file}.prov");
            if input.existing.get(&path) != Some(prov) {
                p.link(path.clone(), prov, PROV_TYPE);
                changed = true;
            }
            want.insert(path);
        }
        if !changed || m.pushed {
            // Published as it is, or pushed: its OCI artifact is in the release already.
            continue;
        }
        // The OCI artifact: config (Chart.yaml as JSON), the chart, its provenance.
        let oci_repo = oci_name(repo, name);
        let config = serde_json::to_vec(&m.metadata).expect("serialisable");
        let config_sha = p.blob(config.clone());
        let mut layers = vec![json!({"mediaType": CHART_MEDIA_TYPE, "digest": format!("sha256:{}", m.sha256), "size": m.size})];
        p.link(oci::blob_path(&oci_repo, &config_sha), &config_sha, "application/octet-stream");
        p.link(oci::blob_path(&oci_repo, &m.sha256), &m.sha256, "application/octet-stream");
        if let Some((prov, size)) = &m.provenance {
            layers.push(json!({"mediaType": PROV_MEDIA_TYPE, "digest": format!("sha256:{prov}"), "size": size}));
            p.link(oci::blob_path(&oci_repo, prov), prov, "application/octet-stream");
        }
        let mut annotations = Map::new();
        annotations.insert("org.opencontainers.image.title".into(), json!(name));
        annotations.insert("org.opencontainers.image.version".into(), json!(version));
        annotations.insert("org.opencontainers.image.created".into(), json!(rfc3339(m.created_ms)));
        annotations.insert(MADE_BY_WHARF.into(), json!("true"));
        if let Some(d) = &m.metadata.description {
            annotations.insert("org.opencontainers.image.description".into(), json!(d));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": format!("sha256:{config_sha}"), "size": config.len()},
            "layers": layers,
            "annotations": annotations,
        });
        let manifest_sha = p.blob(serde_json::to_vec(&manifest).expect("serialisable"));
        p.link(oci::manifest_path(&oci_repo, &manifest_sha), &manifest_sha, oci::OCI_MANIFEST);
        p.link(oci::tag_path(&oci_repo, &oci_tag(version)), &manifest_sha, oci::OCI_MANIFEST);
    }
    // A chart version no longer in the repository: its files and its tag go.
    for path in input.existing.keys() {
        if !path.ends_with(".tgz") && !path.ends_with(".tgz.prov") || want.contains(path) {
            continue;
        }
        p.remove(path.clone());
        let Some(file) = path.strip_prefix(&format!("{repo}/")).and_then(|f| f.strip_suffix(".tgz")) else { continue };
        if let Some((name, version)) = split_filename(file) {
            p.remove(oci::tag_path(&oci_name(repo, name), &oci_tag(version)));
        }
    }
    p.write(format!("{repo}/index.yaml"), index_yaml(input.members, input.now_ms).into_bytes(), "application/x-yaml");
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::helm::chart::{inspect, tests::chart};

    fn member(name: &str, version: &str, created_ms: i64) -> Member {
        let tgz = chart(name, version);
        Member { sha256: crate::auth::sha256_hex(&tgz), size: tgz.len() as u64, metadata: inspect(&tgz).unwrap(), created_ms, provenance: None, pushed: false }
    }

    #[test]
    fn a_pushed_chart_is_read_from_its_manifest_and_config_and_listed_without_a_new_artifact() {
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": format!("sha256:{}", "c".repeat(64)), "size": 10},
            "layers": [{"mediaType": CHART_MEDIA_TYPE, "digest": format!("sha256:{}", "d".repeat(64)), "size": 123}]});
        let pushed = pushed_chart(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!((pushed.config_sha256, pushed.chart_sha256, pushed.chart_size), ("c".repeat(64), "d".repeat(64), 123));
        let image = serde_json::json!({"config": {"mediaType": "application/vnd.oci.image.config.v1+json"}, "layers": []});
        let mut ours = manifest.clone();
        ours["annotations"] = serde_json::json!({MADE_BY_WHARF: "true"});
        assert_eq!(pushed_chart(&serde_json::to_vec(&ours).unwrap()), None, "made from an upload");
        assert_eq!(pushed_chart(&serde_json::to_vec(&image).unwrap()), None);
        let config = br#"{"apiVersion":"v2","name":"web","version":"1.0.0+b.1"}"#;
        assert!(pushed_metadata(config, "web", "1.0.0_b.1").is_some());
        assert!(pushed_metadata(config, "web", "1.0.0").is_none(), "another tag");
        assert!(pushed_metadata(config, "api", "1.0.0_b.1").is_none(), "another repository");
        let mut m = member("web", "1.0.0", 1_000);
        m.pushed = true;
        let p = plan(&Input { repository: "charts", members: &[m.clone()], existing: &BTreeMap::new(), now_ms: 2_000 });
        assert_eq!(p.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["charts/web-1.0.0.tgz", "charts/index.yaml"]);
    }

    #[test]
    fn dates_and_file_names() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_323_045_123), "2026-01-02T03:04:05.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(split_filename("web-1.0.0-rc-1"), Some(("web", "1.0.0-rc-1")));
        assert_eq!(split_filename("foo-2-1.0.0"), Some(("foo-2", "1.0.0")));
        assert_eq!(split_filename("nope"), None);
        assert_eq!(oci_tag("1.0.0+build.1"), "1.0.0_build.1");
    }

    #[test]
    fn the_index_lists_names_in_order_and_versions_newest_first_byte_for_byte() {
        let members = vec![member("web", "1.10.0", 1_000), member("web", "1.9.0", 2_000), member("api", "0.1.0", 3_000), member("web", "1.10.0-rc.1", 4_000)];
        let text = index_yaml(&members, 1_767_323_045_000);
        let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["generated"], "2026-01-02T03:04:05.000Z");
        let names: Vec<&String> = doc["entries"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["api", "web"]);
        let web: Vec<&str> = doc["entries"]["web"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
        assert_eq!(web, ["1.10.0", "1.10.0-rc.1", "1.9.0"]);
        let first = &doc["entries"]["web"][0];
        assert_eq!(first["digest"], members[0].sha256.as_str());
        assert_eq!(first["urls"][0], "web-1.10.0.tgz");
        assert_eq!(first["created"], "1970-01-01T00:00:01.000Z");
        assert_eq!(first["appVersion"], "1.10");
        assert_eq!(first["apiVersion"], "v2");
        assert_eq!(index_yaml(&members, 1_767_323_045_000), text, "deterministic");
        assert!(text.starts_with("apiVersion: v1\nentries:\n  api:\n  - apiVersion: v2\n    appVersion: '1.10'\n"), "{text}");
        assert_eq!(crate::auth::sha256_hex(text.as_bytes()), GOLDEN_INDEX);
    }

    const GOLDEN_INDEX: &str = "3bbc11a4d3a56a4debcbe468d1a6213fe48a03607549745a6ad686b0def959b4";

    #[test]
    fn each_chart_is_also_an_oci_artifact_and_removed_versions_lose_files_and_tag() {
        let members = vec![member("web", "1.0.0+b.1", 1_000)];
        let existing: BTreeMap<String, String> = [("charts/old-2.0.0.tgz".to_string(), "x".to_string()), ("charts/old-2.0.0.tgz.prov".to_string(), "y".to_string())].into();
        let p = plan(&Input { repository: "charts", members: &members, existing: &existing, now_ms: 5_000 });
        let blob = |sha: &str| p.blobs.iter().find(|b| b.sha256 == sha).map(|b| b.data.clone());
        let tag = p.changes.iter().find(|c| c.path == oci::tag_path("charts/web", "1.0.0_b.1")).expect("tagged");
        let manifest: serde_json::Value = serde_json::from_slice(&blob(tag.sha256.as_ref().unwrap()).unwrap()).unwrap();
        assert_eq!(manifest["mediaType"], oci::OCI_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["mediaType"], CHART_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{}", members[0].sha256));
        assert_eq!(manifest["annotations"]["org.opencontainers.image.version"], "1.0.0+b.1");
        let config_sha = manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let config: serde_json::Value = serde_json::from_slice(&blob(config_sha).unwrap()).unwrap();
        assert_eq!((config["name"].as_str(), config["version"].as_str()), (Some("web"), Some("1.0.0+b.1")));
        for path in [oci::blob_path("charts/web", config_sha), oci::blob_path("charts/web", &members[0].sha256), "charts/web-1.0.0+b.1.tgz".into(), "charts/index.yaml".into()] {
            assert!(p.touches(&path), "{path}");
        }
        let removed: Vec<&str> = p.changes.iter().filter(|c| c.sha256.is_none()).map(|c| c.path.as_str()).collect();
        assert_eq!(removed, ["charts/old-2.0.0.tgz", &oci::tag_path("charts/old", "2.0.0"), "charts/old-2.0.0.tgz.prov"]);
        // Published again unchanged: only the index is written.
        let published: BTreeMap<String, String> = [("charts/web-1.0.0+b.1.tgz".to_string(), members[0].sha256.clone())].into();
        let again = plan(&Input { repository: "charts", members: &members, existing: &published, now_ms: 6_000 });
        assert_eq!(again.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["charts/index.yaml"]);
    }
}
