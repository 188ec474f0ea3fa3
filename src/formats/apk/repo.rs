//! A site's APK settings and the plan of what a publish regenerates.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The architecture name of packages that go into every architecture's index.
pub const NOARCH: &str = "noarch";

/// APK settings of a site (all optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApkConfig {
    /// Architectures always indexed (others appear when they have packages);
    /// `noarch` packages are listed in each.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// "server" (default: signed with the Worker's RSA key) or "client" (the
    /// user signs each index stream with the key registered for the site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<crate::formats::SignedBy>,
    /// The key's file name under /etc/apk/keys/ (ends in `.rsa.pub`); by
    /// default `<site>-<8 hex of the key's SHA-256>.rsa.pub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// DESCRIPTION of the indexes (`apk index -d`); by default `<branch>/<repository>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ApkConfig {
    pub fn validate(&self) -> Result<(), String> {
        for a in &self.architectures {
            if !super::package::valid_arch(a) || a == NOARCH {
                return Err(format!("invalid architecture {a:?} (list concrete architectures; noarch packages go into each)"));
            }
        }
        if let Some(k) = &self.key_name {
            if !super::index::valid_key_name(k) {
                return Err(format!("key_name {k:?} must be a file name ending in .rsa.pub (letters, digits, @._+-)"));
            }
        }
        if let Some(d) = &self.description {
            if d.len() > 200 || d.chars().any(|c| c.is_control()) {
                return Err("description is at most 200 characters on one line".into());
            }
        }
        Ok(())
    }

    pub fn client_signed(&self) -> bool {
        self.signing == Some(crate::formats::SignedBy::Client)
    }
}

/// The architectures a repository indexes: configured ones and those its
/// packages have (noarch packages alone give none).
pub fn architectures(cfg: &ApkConfig, present: &BTreeSet<String>) -> Vec<String> {
    let mut all: BTreeSet<String> = cfg.architectures.iter().cloned().collect();
    all.extend(present.iter().filter(|a| a.as_str() != NOARCH).cloned());
    all.into_iter().collect()
}

/// Which architectures to regenerate, from those marked dirty: a changed
/// noarch package changes every index; an index never written is written.
pub fn to_regenerate(archs: &[String], dirty: &BTreeSet<String>, has_index: impl Fn(&str) -> bool) -> Vec<String> {
    archs.iter().filter(|a| dirty.contains(*a) || dirty.contains(NOARCH) || !has_index(a)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn noarch_goes_everywhere_and_alone_gives_no_architecture() {
        let cfg = ApkConfig { architectures: vec!["aarch64".into()], ..Default::default() };
        assert_eq!(architectures(&cfg, &set(&["x86_64", "noarch"])), ["aarch64", "x86_64"]);
        assert!(architectures(&ApkConfig::default(), &set(&["noarch"])).is_empty());
        let archs = vec!["aarch64".to_string(), "x86_64".to_string()];
        assert_eq!(to_regenerate(&archs, &set(&["x86_64"]), |_| true), ["x86_64"]);
        assert_eq!(to_regenerate(&archs, &set(&["noarch"]), |_| true), ["aarch64", "x86_64"]);
        assert_eq!(to_regenerate(&archs, &set(&[]), |a| a == "x86_64"), ["aarch64"]);
    }

    #[test]
    fn config_is_checked() {
        assert!(ApkConfig { architectures: vec!["noarch".into()], ..Default::default() }.validate().is_err());
        assert!(ApkConfig { key_name: Some("../x.rsa.pub".into()), ..Default::default() }.validate().is_err());
        assert!(ApkConfig { key_name: Some("me@example.com-1a2b3c4d.rsa.pub".into()), ..Default::default() }.validate().is_ok());
        assert!(serde_json::from_str::<ApkConfig>(r#"{"signing": "hsm"}"#).is_err());
        assert_eq!(serde_json::to_string(&ApkConfig { signing: Some(crate::formats::SignedBy::Server), ..Default::default() }).unwrap(), r#"{"architectures":[],"signing":"server"}"#);
    }
}

/// The key's file name under /etc/apk/keys/: the configured one, else
/// `<site>-<8 hex of the key's SHA-256>.rsa.pub`.
pub fn key_name(cfg: &ApkConfig, site: &str, key: &rsa::RsaPublicKey) -> String {
    cfg.key_name.clone().unwrap_or_else(|| super::index::default_key_name(site, key))
}
