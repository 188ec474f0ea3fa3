//! A classic chart repository's `index.yaml`, read for one chart: its
//! versions, where each archive is and the digest it must have. Indexes of
//! big repositories run to tens of MiB; only the named chart's entries are
//! kept while the rest is read past.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// One version of a chart as the repository lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub version: String,
    /// Absolute URL of the archive.
    pub url: String,
    /// sha256 (hex) of the archive, when the index gives one.
    pub digest: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    version: Option<String>,
    #[serde(default)]
    urls: Vec<String>,
    digest: Option<String>,
}

/// `entries`, keeping the named chart's list only.
struct Entries<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for Entries<'_> {
    type Value = Option<Vec<Entry>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = Option<Vec<Entry>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of chart names to their versions")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == self.0 && found.is_none() {
                found = Some(map.next_value::<Vec<Entry>>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The document, keeping `entries[chart]` only.
struct Index<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for Index<'_> {
    type Value = Option<Vec<Entry>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Index<'_> {
    type Value = Option<Vec<Entry>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chart repository index (apiVersion, entries)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut seen_entries = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "entries" && !seen_entries {
                seen_entries = true;
                found = map.next_value_seed(Entries(self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !seen_entries {
            return Err(serde::de::Error::custom("no `entries`: not a chart repository index"));
        }
        Ok(found)
    }
}

/// Where an archive URL of the index points: absolute URLs as they are,
/// others relative to the repository URL (as Helm resolves them against the
/// index's location).
pub fn resolve(repo_url: &str, url: &str) -> Option<String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        return Some(url.to_string());
    }
    if url.contains("://") || url.is_empty() {
        return None;
    }
    let base = repo_url.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix('/') {
        let (scheme, after) = base.split_once("://")?;
        let host = after.split('/').next()?;
        return Some(format!("{scheme}://{host}/{rest}"));
    }
    Some(format!("{base}/{}", url.trim_start_matches("./")))
}

/// The versions of `chart` that the index at `repo_url` lists (empty when it
/// lists none). Entries without a version or a usable URL are left out; a
/// digest that is not sha256 hex is treated as absent.
pub fn listed(index_yaml: &str, repo_url: &str, chart: &str) -> Result<Vec<Listed>, String> {
    let de = serde_yaml_ng::Deserializer::from_str(index_yaml);
    let entries = Index(chart).deserialize(de).map_err(|e| format!("index.yaml: {e}"))?;
    Ok(entries
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let version = e.version?;
            let url = e.urls.iter().find_map(|u| resolve(repo_url, u))?;
            let digest = e.digest.map(|d| d.to_ascii_lowercase()).filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
            Some(Listed { version, url, digest })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"apiVersion: v1
entries:
  consul:
  - name: consul
    version: 1.5.0
    urls: [https://helm.releases.hashicorp.com/consul-1.5.0.tgz]
  vault:
  - annotations: {artifacthub.io/license: MPL-2.0}
    apiVersion: v2
    appVersion: 1.18.1
    created: "2024-11-05T20:55:49.062Z"
    digest: 0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0
    name: vault
    urls:
    - https://helm.releases.hashicorp.com/vault-0.29.0.tgz
    version: 0.29.0
  - name: vault
    version: 0.30.0
    urls: [charts/vault-0.30.0.tgz]
    digest: not-a-digest
  - name: vault
    version: 0.28.0
    urls: [/archive/vault-0.28.0.tgz, ./vault-0.28.0.tgz]
  - name: vault
    urls: [vault-x.tgz]
  - name: vault
    version: 0.27.0
    urls: []
generated: "2024-11-05T20:55:49Z"
"#;

    #[test]
    fn one_charts_versions_with_their_archives_and_digests() {
        let got = listed(INDEX, "https://helm.releases.hashicorp.com/", "vault").unwrap();
        assert_eq!(got, [
            Listed { version: "0.29.0".into(), url: "https://helm.releases.hashicorp.com/vault-0.29.0.tgz".into(),
                     digest: Some("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".into()) },
            Listed { version: "0.30.0".into(), url: "https://helm.releases.hashicorp.com/charts/vault-0.30.0.tgz".into(), digest: None },
            Listed { version: "0.28.0".into(), url: "https://helm.releases.hashicorp.com/archive/vault-0.28.0.tgz".into(), digest: None },
        ]);
        assert_eq!(listed(INDEX, "https://helm.releases.hashicorp.com", "consul").unwrap().len(), 1);
        assert!(listed(INDEX, "https://x.example", "nomad").unwrap().is_empty());
        assert_eq!(resolve("http://h.example:8080/sub/", "/a.tgz").as_deref(), Some("http://h.example:8080/a.tgz"));
        assert_eq!(resolve("http://h.example/sub", "ftp://x/a.tgz"), None);
    }

    #[test]
    fn what_is_not_an_index_is_refused() {
        assert!(listed("apiVersion: v1\n", "https://x.example", "a").unwrap_err().contains("no `entries`"));
        assert!(listed("entries: [1, 2]\n", "https://x.example", "a").is_err());
        assert!(listed("entries: {a: [{version: [1]}]}\n", "https://x.example", "a").is_err());
        assert!(listed("{{{", "https://x.example", "a").is_err());
        // Another chart's malformed entries are read past, not refused.
        assert_eq!(listed("entries: {b: {weird: true}, a: [{version: '1.0.0', urls: [a.tgz]}]}\n", "https://x.example", "a").unwrap().len(), 1);
    }
}
