//! Profiles: where a Wharf admin API is and the token to call it with,
//! kept in `$WHARF_CONFIG` or `<config dir>/wharf/config.toml` (mode 0600),
//! like cargo's credentials or gh's hosts. Flags and environment variables
//! override what a profile says: `--url`/`WHARF_URL`, `WHARF_TOKEN`,
//! `--profile`/`WHARF_PROFILE`, `--site`/`WHARF_SITE`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The profile used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: String,
    pub token: String,
    /// The site commands act on when `--site` is not given (a site token's own site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// What a command runs with, after flags, environment and profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The API's base URL, ending in `/api/v1`.
    pub api: String,
    pub token: Option<String>,
    pub site: Option<String>,
    /// The profile used, if one was.
    pub profile: Option<String>,
}

/// The flags and environment that override a profile.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub profile: Option<String>,
    pub url: Option<String>,
    pub token: Option<String>,
    pub site: Option<String>,
}

pub fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WHARF_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let dir = dirs::config_dir().context("no configuration directory for this user (set WHARF_CONFIG to a file path)")?;
    Ok(dir.join("wharf").join("config.toml"))
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let c: Config = toml::from_str(text)?;
        if let Some(d) = &c.default {
            if !c.profiles.contains_key(d) {
                bail!("the default profile {d:?} is not defined");
            }
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file readable by its owner only (it holds tokens): a new
    /// file is created with mode 0600, an existing one set to it.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self)?;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let mut f = o.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        #[cfg(unix)]
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Adds or replaces a profile; the first one becomes the default.
    pub fn set(&mut self, name: &str, profile: Profile) {
        self.profiles.insert(name.to_string(), profile);
        if self.default.is_none() {
            self.default = Some(name.to_string());
        }
    }

    /// Removes a profile (and the default, if it was that one). False: none by that name.
    pub fn remove(&mut self, name: &str) -> bool {
        let had = self.profiles.remove(name).is_some();
        if self.default.as_deref() == Some(name) {
            self.default = self.profiles.keys().next().cloned();
        }
        had
    }

    /// What to run with: the named profile (an error if it does not exist),
    /// else the default one, with the overrides on top.
    pub fn resolve(&self, o: &Overrides) -> Result<Resolved> {
        let name = o.profile.clone().or_else(|| self.default.clone());
        let profile = match &name {
            Some(n) => match self.profiles.get(n) {
                Some(p) => Some(p),
                None if o.profile.is_some() => bail!("no profile named {n:?} (wharf login --profile {n} --url …)"),
                None => None,
            },
            None => None,
        };
        let url = o.url.clone().or_else(|| profile.map(|p| p.url.clone()));
        let Some(url) = url else {
            bail!("no Wharf URL: run `wharf login --url https://admin.example.com`, or set WHARF_URL")
        };
        Ok(Resolved {
            api: api_base(&url)?,
            token: o.token.clone().or_else(|| profile.map(|p| p.token.clone())),
            site: o.site.clone().or_else(|| profile.and_then(|p| p.site.clone())),
            profile: profile.and(name),
        })
    }
}

/// The API base for a URL as users write it: `https://admin.example.com`,
/// with or without a trailing `/` or `/api/v1`.
pub fn api_base(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() {
        bail!("{url:?} is not an http(s) URL");
    }
    let u = u.strip_suffix("/api/v1").unwrap_or(u);
    Ok(format!("{u}/api/v1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Config {
        let mut c = Config::default();
        c.set("prod", Profile { url: "https://admin.example.com".into(), token: "wharf_p".into(), site: None });
        c.set("ci", Profile { url: "http://localhost:8787/api/v1/".into(), token: "wharf_c".into(), site: Some("apt".into()) });
        c
    }

    #[test]
    fn the_first_profile_is_the_default_and_overrides_win() {
        let c = two();
        assert_eq!(c.default.as_deref(), Some("prod"));
        let r = c.resolve(&Overrides::default()).unwrap();
        assert_eq!(r, Resolved { api: "https://admin.example.com/api/v1".into(), token: Some("wharf_p".into()), site: None, profile: Some("prod".into()) });
        let r = c.resolve(&Overrides { profile: Some("ci".into()), ..Default::default() }).unwrap();
        assert_eq!((r.api.as_str(), r.site.as_deref()), ("http://localhost:8787/api/v1", Some("apt")));
        let r = c.resolve(&Overrides { profile: Some("ci".into()), token: Some("wharf_env".into()), site: Some("other".into()), url: None }).unwrap();
        assert_eq!((r.token.as_deref(), r.site.as_deref()), (Some("wharf_env"), Some("other")));
        let r = Config::default().resolve(&Overrides { url: Some("http://x.test".into()), token: Some("t".into()), ..Default::default() }).unwrap();
        assert_eq!((r.api.as_str(), r.profile), ("http://x.test/api/v1", None));
    }

    #[test]
    fn missing_things_are_named() {
        let e = two().resolve(&Overrides { profile: Some("nope".into()), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("no profile named \"nope\""), "{e}");
        let e = Config::default().resolve(&Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("wharf login"), "{e}");
        assert!(api_base("admin.example.com").is_err());
        assert!(Config::parse("default = \"x\"\n").is_err(), "a default that is not defined");
        assert!(Config::parse("[profiles.a]\nurl = \"u\"\ntoken = \"t\"\ncolour = 1\n").is_err(), "unknown keys");
    }

    #[test]
    fn removing_the_default_picks_another() {
        let mut c = two();
        assert!(c.remove("prod"));
        assert_eq!(c.default.as_deref(), Some("ci"));
        assert!(!c.remove("prod"));
        assert!(c.remove("ci"));
        assert_eq!(c.default, None);
    }

    #[test]
    fn saved_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/config.toml");
        let c = two();
        c.save(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(Config::load(&p).unwrap(), c);
        assert_eq!(Config::load(&dir.path().join("none.toml")).unwrap(), Config::default());
    }
}
