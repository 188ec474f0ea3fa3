//! Scanner reports attached to mirrored images (OCI referrers whose subject
//! is the mirrored manifest, pushed by a publisher's CI with `oras attach`
//! or a scanner's own upload): what they count, by severity. No scanner runs
//! in the worker; this reads the report a scanner wrote.
//!
//! Read by their content, whatever `artifactType` they came with: Trivy's
//! JSON (`Results[].Vulnerabilities[].Severity`), Grype's JSON
//! (`matches[].vulnerability.severity`), SARIF 2.1 (Trivy's and Grype's SARIF:
//! a result's rule tagged with a severity, else its `security-severity`
//! score in CVSS bands, else the result's level), CycloneDX (`vulnerabilities[].ratings[].severity`,
//! the highest rating; an SBOM without vulnerabilities counts its components)
//! and SPDX (an SBOM: its packages).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest report read.
pub const MAX_REPORT: u64 = 16 << 20;

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scan {
    /// trivy, grype, sarif, cyclonedx or spdx.
    pub format: &'static str,
    /// Findings by severity (critical, high, medium, low, negligible, unknown).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub severities: BTreeMap<String, u64>,
    /// All findings.
    pub findings: u64,
    /// For an SBOM: the components or packages it lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<u64>,
}

/// The severities reports use, as one vocabulary.
fn severity(s: &str) -> String {
    match s.trim().to_ascii_lowercase().as_str() {
        "critical" => "critical",
        "high" | "error" => "high",
        "medium" | "moderate" | "warning" => "medium",
        "low" | "note" => "low",
        "negligible" | "info" | "informational" | "none" => "negligible",
        _ => "unknown",
    }
    .to_string()
}

const ORDER: [&str; 6] = ["critical", "high", "medium", "low", "negligible", "unknown"];

fn rank(s: &str) -> usize {
    ORDER.iter().position(|o| *o == s).unwrap_or(ORDER.len())
}

/// A CVSS score's band (CVSS v3 qualitative ratings).
fn band(score: f64) -> &'static str {
    match score {
        s if s >= 9.0 => "critical",
        s if s >= 7.0 => "high",
        s if s >= 4.0 => "medium",
        s if s > 0.0 => "low",
        _ => "negligible",
    }
}

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "Results")]
    results: Option<Vec<TrivyResult>>,
    matches: Option<Vec<GrypeMatch>>,
    runs: Option<Vec<SarifRun>>,
    #[serde(rename = "bomFormat")]
    bom_format: Option<String>,
    vulnerabilities: Option<Vec<CdxVuln>>,
    components: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(rename = "spdxVersion")]
    spdx_version: Option<String>,
    packages: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct TrivyResult {
    #[serde(rename = "Vulnerabilities")]
    vulnerabilities: Option<Vec<TrivyVuln>>,
}

#[derive(Deserialize)]
struct TrivyVuln {
    #[serde(rename = "Severity")]
    severity: Option<String>,
}

#[derive(Deserialize)]
struct GrypeMatch {
    vulnerability: Option<GrypeVuln>,
}

#[derive(Deserialize)]
struct GrypeVuln {
    severity: Option<String>,
}

#[derive(Deserialize)]
struct SarifRun {
    tool: Option<SarifTool>,
    #[serde(default)]
    results: Vec<SarifResult>,
}

#[derive(Deserialize)]
struct SarifTool {
    driver: Option<SarifDriver>,
}

#[derive(Deserialize)]
struct SarifDriver {
    #[serde(default)]
    rules: Vec<SarifRule>,
}

#[derive(Deserialize)]
struct SarifRule {
    id: Option<String>,
    properties: Option<SarifProps>,
}

#[derive(Deserialize)]
struct SarifProps {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(rename = "security-severity")]
    security_severity: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SarifResult {
    #[serde(rename = "ruleId")]
    rule_id: Option<String>,
    level: Option<String>,
    properties: Option<SarifProps>,
}

#[derive(Deserialize)]
struct CdxVuln {
    #[serde(default)]
    ratings: Vec<CdxRating>,
}

#[derive(Deserialize)]
struct CdxRating {
    severity: Option<String>,
}

fn count<'a>(severities: impl Iterator<Item = Option<&'a str>>) -> (BTreeMap<String, u64>, u64) {
    let mut out = BTreeMap::new();
    let mut n = 0;
    for s in severities {
        *out.entry(severity(s.unwrap_or("unknown"))).or_insert(0) += 1;
        n += 1;
    }
    (out, n)
}

/// A SARIF rule's or result's severity: a severity tag, else the
/// `security-severity` score's band.
fn sarif_severity(p: &SarifProps) -> Option<String> {
    if let Some(t) = p.tags.iter().find(|t| ["critical", "high", "medium", "low", "negligible", "unknown"].contains(&t.to_ascii_lowercase().as_str())) {
        return Some(severity(t));
    }
    let score = match p.security_severity.as_ref()? {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    Some(band(score).to_string())
}

/// Reads a report. None: not a report Wharf reads (the referrer is listed
/// without counts); Err: it claims a known format but does not read.
pub fn read(body: &[u8]) -> Option<Result<Scan, String>> {
    let doc: Doc = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(e) if body.first().is_some_and(|b| *b == b'{') => return Some(Err(format!("the report is not the JSON it starts as: {e}"))),
        Err(_) => return None,
    };
    if let Some(results) = doc.results {
        let (severities, findings) = count(results.iter().flat_map(|r| r.vulnerabilities.iter().flatten()).map(|v| v.severity.as_deref()));
        return Some(Ok(Scan { format: "trivy", severities, findings, components: None }));
    }
    if let Some(matches) = doc.matches {
        let (severities, findings) = count(matches.iter().map(|m| m.vulnerability.as_ref().and_then(|v| v.severity.as_deref())));
        return Some(Ok(Scan { format: "grype", severities, findings, components: None }));
    }
    if let Some(runs) = doc.runs {
        let mut all = Vec::new();
        for run in &runs {
            let rules: BTreeMap<&str, &SarifRule> = run
                .tool
                .as_ref()
                .and_then(|t| t.driver.as_ref())
                .map(|d| d.rules.iter().filter_map(|r| Some((r.id.as_deref()?, r))).collect())
                .unwrap_or_default();
            for res in &run.results {
                let from_result = res.properties.as_ref().and_then(sarif_severity);
                let from_rule = res.rule_id.as_deref().and_then(|id| rules.get(id)).and_then(|r| r.properties.as_ref()).and_then(sarif_severity);
                all.push(from_result.or(from_rule).or_else(|| res.level.as_deref().map(severity)));
            }
        }
        let (severities, findings) = count(all.iter().map(|s| s.as_deref()));
        return Some(Ok(Scan { format: "sarif", severities, findings, components: None }));
    }
    if doc.bom_format.as_deref().is_some_and(|f| f.eq_ignore_ascii_case("cyclonedx")) {
        let highest = doc.vulnerabilities.unwrap_or_default().into_iter().map(|v| {
            v.ratings.iter().filter_map(|r| r.severity.as_deref()).map(severity).min_by_key(|s| rank(s)).unwrap_or_else(|| "unknown".into())
        });
        let mut severities = BTreeMap::new();
        let mut findings = 0;
        for s in highest {
            *severities.entry(s).or_insert(0) += 1;
            findings += 1;
        }
        return Some(Ok(Scan { format: "cyclonedx", severities, findings, components: doc.components.map(|c| c.len() as u64) }));
    }
    if doc.spdx_version.is_some() {
        return Some(Ok(Scan { format: "spdx", severities: BTreeMap::new(), findings: 0, components: Some(doc.packages.map_or(0, |p| p.len() as u64)) }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn counts(v: serde_json::Value) -> Scan {
        read(&serde_json::to_vec(&v).unwrap()).unwrap().unwrap()
    }

    fn sev(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn trivy_and_grype_reports_count_by_severity() {
        let trivy = counts(json!({"SchemaVersion": 2, "ArtifactName": "x", "Results": [
            {"Target": "os", "Vulnerabilities": [{"VulnerabilityID": "CVE-1", "Severity": "CRITICAL"}, {"Severity": "HIGH"}, {"Severity": "HIGH"}]},
            {"Target": "lang"},
            {"Target": "jar", "Vulnerabilities": [{"Severity": "UNKNOWN"}, {"Severity": "LOW"}]}]}));
        assert_eq!((trivy.format, trivy.findings), ("trivy", 5));
        assert_eq!(trivy.severities, sev(&[("critical", 1), ("high", 2), ("low", 1), ("unknown", 1)]));
        let clean = counts(json!({"Results": []}));
        assert_eq!((clean.findings, clean.severities.len()), (0, 0));
        let grype = counts(json!({"matches": [{"vulnerability": {"id": "CVE-2", "severity": "Medium"}}, {"vulnerability": {"severity": "Negligible"}}, {}]}));
        assert_eq!((grype.format, grype.severities), ("grype", sev(&[("medium", 1), ("negligible", 1), ("unknown", 1)])));
    }

    #[test]
    fn sarif_takes_the_rule_tag_then_the_score_then_the_level() {
        let s = counts(json!({"version": "2.1.0", "runs": [{
            "tool": {"driver": {"name": "Trivy", "rules": [
                {"id": "CVE-1", "properties": {"tags": ["vulnerability", "security", "CRITICAL"], "security-severity": "9.8"}},
                {"id": "CVE-2", "properties": {"security-severity": "7.5"}},
                {"id": "CVE-3", "properties": {"security-severity": 5.0}}]}},
            "results": [{"ruleId": "CVE-1", "level": "error"}, {"ruleId": "CVE-2"}, {"ruleId": "CVE-3"}, {"ruleId": "other", "level": "note"}, {"ruleId": "x"}]}]}));
        assert_eq!(s.format, "sarif");
        assert_eq!(s.severities, sev(&[("critical", 1), ("high", 1), ("medium", 1), ("low", 1), ("unknown", 1)]));
    }

    #[test]
    fn sboms_count_components_and_cyclonedx_vulnerabilities_their_highest_rating() {
        let cdx = counts(json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [{}, {}, {}],
            "vulnerabilities": [{"id": "CVE-1", "ratings": [{"severity": "medium"}, {"severity": "high"}]}, {"id": "CVE-2"}]}));
        assert_eq!((cdx.format, cdx.components, cdx.findings), ("cyclonedx", Some(3), 2));
        assert_eq!(cdx.severities, sev(&[("high", 1), ("unknown", 1)]));
        let spdx = counts(json!({"spdxVersion": "SPDX-2.3", "packages": [{}, {}]}));
        assert_eq!((spdx.format, spdx.components, spdx.findings), ("spdx", Some(2), 0));
    }

    #[test]
    fn what_is_not_a_report_is_left_alone_and_a_broken_one_says_so() {
        assert!(read(b"plain text").is_none());
        assert!(read(br#"{"something": "else"}"#).is_none());
        assert!(read(br#"{"Results": 5}"#).unwrap().is_err());
        assert!(read(b"{").unwrap().is_err());
    }
}
