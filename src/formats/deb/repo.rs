//! A dist's settings and the plan of what a publish regenerates.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Settings of one dist (all optional; defaults are filled in at publish).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DistConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Components always listed (others appear when they have packages).
    #[serde(default)]
    pub components: Vec<String>,
    /// Architectures always listed (others appear when they have packages).
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_days: Option<u32>,
    /// How many earlier generations of by-hash files stay reachable (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_hash_keep: Option<u32>,
    /// "server" (default: signed with the Worker's key) or "client" (the user
    /// uploads InRelease and Release.gpg made with the key registered for the site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<crate::formats::SignedBy>,
    /// The forms each `Packages` index is served in: any of "xz", "gz" and
    /// "none" (uncompressed). Default ["xz", "gz"], as Debian's archive
    /// serves them (apt fetches `.xz` first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressions: Option<Vec<Compression>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gz,
    Xz,
}

pub const DEFAULT_BY_HASH_KEEP: u32 = 3;

impl DistConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [("origin", &self.origin), ("label", &self.label), ("suite", &self.suite), ("codename", &self.codename), ("description", &self.description)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > 200 || v.chars().any(|c| c.is_control()) {
                    return Err(format!("{what} must be 1-200 characters on one line"));
                }
            }
        }
        for c in &self.components {
            if !crate::api::valid_dist_name(c) {
                return Err(format!("invalid component {c:?}"));
            }
        }
        for a in &self.architectures {
            if !super::control::valid_architecture(a) || a == "all" {
                return Err(format!("invalid architecture {a:?} (list concrete architectures; `all` packages go into each)"));
            }
        }
        if self.by_hash_keep.map_or(false, |k| k > 50) {
            return Err("by_hash_keep is at most 50".into());
        }
        if let Some(c) = &self.compressions {
            let distinct: BTreeSet<String> = c.iter().map(|x| format!("{x:?}")).collect();
            if c.is_empty() || distinct.len() != c.len() {
                return Err("compressions lists each of \"xz\", \"gz\" and \"none\" at most once, and at least one".into());
            }
        }
        if self.valid_until_days.map_or(false, |d| d == 0 || d > 3650) {
            return Err("valid_until_days is 1..=3650".into());
        }
        Ok(())
    }

    pub fn client_signed(&self) -> bool {
        self.signing == Some(crate::formats::SignedBy::Client)
    }

    /// The forms `Packages` indexes are served in.
    pub fn forms(&self) -> crate::formats::pieces::Forms {
        match &self.compressions {
            None => crate::formats::pieces::Forms { plain: false, gz: true, xz: true, digest: true },
            Some(c) => crate::formats::pieces::Forms { plain: c.contains(&Compression::None), gz: c.contains(&Compression::Gz), xz: c.contains(&Compression::Xz), digest: true },
        }
    }

    pub fn by_hash_keep(&self) -> usize {
        self.by_hash_keep.unwrap_or(DEFAULT_BY_HASH_KEEP) as usize
    }
}

/// Which (component, architecture) indexes a dist has, from its settings and
/// the packages it holds: every concrete architecture gets the `all` packages.
pub fn layout(config: &DistConfig, present: &BTreeMap<String, BTreeSet<String>>) -> (Vec<String>, Vec<String>) {
    let mut components: BTreeSet<String> = config.components.iter().cloned().collect();
    components.extend(present.keys().cloned());
    let mut archs: BTreeSet<String> = config.architectures.iter().cloned().collect();
    for a in present.values().flatten() {
        if a != "all" {
            archs.insert(a.clone());
        }
    }
    if archs.is_empty() {
        archs.insert("amd64".to_string()); // only `all` packages: publish them for the common architecture
    }
    if components.is_empty() {
        components.insert("main".to_string());
    }
    (components.into_iter().collect(), archs.into_iter().collect())
}

/// Which indexes to regenerate: the dirty (component, arch) pairs, where a
/// dirty `all` means every architecture of that component, plus any index
/// that does not exist yet.
pub fn to_regenerate(
    components: &[String],
    archs: &[String],
    dirty: &[(String, String)],
    exists: impl Fn(&str, &str) -> bool,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for c in components {
        for a in archs {
            let is_dirty = dirty.iter().any(|(dc, da)| dc == c && (da == a || da == "all"));
            if is_dirty || !exists(c, a) {
                out.insert((c.clone(), a.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_regeneration() {
        let mut present = BTreeMap::new();
        present.insert("main".to_string(), BTreeSet::from(["all".to_string(), "arm64".to_string()]));
        let cfg = DistConfig { architectures: vec!["amd64".into()], ..Default::default() };
        let (c, a) = layout(&cfg, &present);
        assert_eq!(c, vec!["main"]);
        assert_eq!(a, vec!["amd64", "arm64"]);
        let (c, a) = layout(&DistConfig::default(), &BTreeMap::new());
        assert_eq!((c, a), (vec!["main".to_string()], vec!["amd64".to_string()]));

        let dirty = vec![("main".to_string(), "arm64".to_string())];
        let r = to_regenerate(&["main".into(), "contrib".into()], &["amd64".into(), "arm64".into()], &dirty, |c, _| c == "main");
        assert_eq!(r, BTreeSet::from([("main".into(), "arm64".into()), ("contrib".into(), "amd64".into()), ("contrib".into(), "arm64".into())]));
        let all = vec![("main".to_string(), "all".to_string())];
        assert_eq!(to_regenerate(&["main".into()], &["amd64".into(), "arm64".into()], &all, |_, _| true).len(), 2);
    }

    #[test]
    fn config_validation() {
        assert!(DistConfig::default().validate().is_ok());
        assert!(serde_json::from_str::<DistConfig>(r#"{"signing": "nobody"}"#).is_err());
        assert_eq!(serde_json::from_str::<DistConfig>(r#"{"signing": "client"}"#).unwrap().signing, Some(crate::formats::SignedBy::Client));
        assert!(DistConfig { architectures: vec!["all".into()], ..Default::default() }.validate().is_err());
        assert!(DistConfig { origin: Some("a\nb".into()), ..Default::default() }.validate().is_err());
        assert!(serde_json::from_str::<DistConfig>(r#"{"bogus": 1}"#).is_err());
    }
}
