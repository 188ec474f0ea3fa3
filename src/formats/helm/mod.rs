//! Helm chart repositories: chart inspection (`Chart.yaml` from the `.tgz`),
//! the classic `index.yaml`, and the same charts as OCI artifacts.

pub mod chart;
pub mod publish;

use super::{Admission, Format, Rollback};
use crate::release::Change;

/// Helm chart repositories.
pub struct Helm;

impl Format for Helm {
    const NAME: &'static str = "helm";
    const ROLLBACK: Rollback = Rollback::PointerSwitch;
    const REFUSAL: (&'static str, &'static str) = ("invalid_chart", "not a valid Helm chart");
    type Member = chart::Metadata;
    type Inspector = chart::Inspection;
    fn inspector(size: u64) -> chart::Inspection {
        chart::Inspection::new(size)
    }
    type Input<'a> = publish::Input<'a>;
    type Plan = super::Publication;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String> {
        Ok(publish::plan(input))
    }
}

/// The release-map path recording that a chart belongs to a repository:
/// `_wharf/helm/<repo>/<name>-<version>.tgz` → the chart's blob (and
/// `….tgz.prov` → its provenance file).
pub fn member_path(repo: &str, file: &str) -> String {
    format!("{}helm/{repo}/{file}", crate::path::INTERNAL_PREFIX)
}

impl super::Ingest for Helm {
    type Scope = String;
    const RECORDS: (&'static str, &'static [&'static str]) = ("helm_charts", &["sha256", "name", "version", "metadata"]);
    fn admission(meta: &chart::Metadata, sha256: &str, repo: &String) -> Admission {
        admission(meta, sha256, repo)
    }
    fn record(meta: &chart::Metadata, sha256: &str) -> Vec<serde_json::Value> {
        let metadata = serde_json::to_string(meta).unwrap_or_default();
        [sha256, &meta.name, &meta.version, &metadata].iter().map(|v| serde_json::json!(v)).collect()
    }
    fn from_record(row: &serde_json::Map<String, serde_json::Value>) -> Option<chart::Metadata> {
        serde_json::from_str(row.get("metadata")?.as_str()?).ok()
    }
    fn dirty(meta: &chart::Metadata, repo: &String) -> (String, String, String) {
        (repo.clone(), String::new(), meta.name.clone())
    }
    fn describe(meta: &chart::Metadata, sha256: &str, size: u64, repo: &String) -> serde_json::Value {
        serde_json::json!({"name": meta.name, "version": meta.version, "repository": repo, "sha256": sha256, "size": size, "metadata": meta})
    }
}

/// Where an accepted chart goes: its member path (which it takes). Replacing
/// other content removes the provenance file, which signs the old archive.
pub fn admission(meta: &chart::Metadata, sha256: &str, repo: &str) -> Admission {
    let file = chart::filename(&meta.name, &meta.version);
    let member = member_path(repo, &file);
    Admission {
        occupies: member.clone(),
        conflict: format!("{} {} is already in {repo}", meta.name, meta.version),
        changes: vec![Change { path: member.clone(), sha256: Some(sha256.to_string()), content_type: Some(publish::CHART_TYPE.into()) }],
        on_replace: vec![Change { path: format!("{member}.prov"), sha256: None, content_type: None }],
        served: vec![Change { path: format!("{repo}/{file}"), sha256: Some(sha256.to_string()), content_type: None }],
    }
}
