//! `wharf keys show`: for each format a site serves (read from its active
//! release), what a user pastes to use it: the apt keyring line and a deb822
//! source with `Signed-By`, the APK key and `/etc/apk/repositories` line, the
//! Helm repository, and the registry's `docker login` / `registry-mirrors` /
//! `registries.conf` entries.

use crate::client::Client;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What a release's paths say the site serves.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub deb_keyring: bool,
    /// dist → components.
    pub dists: BTreeMap<String, BTreeSet<String>>,
    pub apk_keys: Vec<String>,
    /// branch/repository.
    pub apk_repos: BTreeSet<String>,
    pub helm_repos: BTreeSet<String>,
    /// Registry repositories with content pushed or mirrored into the release.
    pub oci_repos: BTreeSet<String>,
}

impl Served {
    pub fn add(&mut self, path: &str) {
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["keys", "wharf-archive-keyring.gpg"] => self.deb_keyring = true,
            ["keys", "apk", name] => self.apk_keys.push(name.to_string()),
            ["dists", dist, component, arch, index] if arch.starts_with("binary-") && index.starts_with("Packages") => {
                self.dists.entry(dist.to_string()).or_default().insert(component.to_string());
            }
            [branch, repo, _arch, "APKINDEX.tar.gz"] => {
                self.apk_repos.insert(format!("{branch}/{repo}"));
            }
            ["_wharf", "oci", rest @ ..] => {
                if let Some(i) = rest.iter().position(|c| c.starts_with('_')) {
                    self.oci_repos.insert(rest[..i].join("/"));
                }
            }
            [.., "index.yaml"] if parts.len() >= 2 => {
                self.helm_repos.insert(parts[..parts.len() - 1].join("/"));
            }
            _ => {}
        }
    }
}

/// The text a user pastes, per format.
pub fn snippets(site: &str, host: &str, s: &Served, oci_settings: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    let keyring = format!("/usr/share/keyrings/{site}-archive-keyring.gpg");
    if s.deb_keyring || !s.dists.is_empty() {
        let mut t = format!("curl -fsSL https://{host}/keys/wharf-archive-keyring.gpg | sudo tee {keyring} >/dev/null\n");
        for (dist, components) in &s.dists {
            let comps: Vec<&str> = components.iter().map(String::as_str).collect();
            t.push_str(&format!(
                "sudo tee /etc/apt/sources.list.d/{site}.sources >/dev/null <<'EOF'\nTypes: deb\nURIs: https://{host}/\nSuites: {dist}\nComponents: {}\nSigned-By: {keyring}\nEOF\n",
                comps.join(" ")
            ));
            t.push_str(&format!("# or, one line: deb [signed-by={keyring}] https://{host}/ {dist} {}\n", comps.join(" ")));
        }
        t.push_str("sudo apt-get update\n");
        out.push(("apt".to_string(), t));
    }
    if !s.apk_keys.is_empty() || !s.apk_repos.is_empty() {
        let mut t = String::new();
        for k in &s.apk_keys {
            t.push_str(&format!("wget -P /etc/apk/keys/ https://{host}/keys/apk/{k}\n"));
        }
        for r in &s.apk_repos {
            t.push_str(&format!("echo \"https://{host}/{r}\" >> /etc/apk/repositories\n"));
        }
        t.push_str("apk update\n");
        out.push(("apk".to_string(), t));
    }
    if !s.helm_repos.is_empty() {
        let mut t = String::new();
        for r in &s.helm_repos {
            let name = r.rsplit('/').next().unwrap_or(r);
            t.push_str(&format!("helm repo add {site}-{name} https://{host}/{r}\n"));
        }
        out.push(("helm".to_string(), t));
    }
    let upstreams = oci_settings["upstreams"].as_array().cloned().unwrap_or_default();
    if !s.oci_repos.is_empty() || !upstreams.is_empty() {
        let mut t = String::new();
        if oci_settings["anonymous_pull"] == json!(false) || !s.oci_repos.is_empty() {
            t.push_str(&format!("docker login {host} --username <name> --password-stdin <<< \"$WHARF_TOKEN\"   # a read (pull) or publish (push) token of {site}\n"));
        }
        for r in s.oci_repos.iter().take(5) {
            t.push_str(&format!("docker pull {host}/{r}:<tag>\n"));
        }
        let default_hub = upstreams.iter().any(|u| u["prefix"].is_null() && u["url"].as_str().is_some_and(|url| url.contains("docker.io")));
        if default_hub {
            t.push_str(&format!("# /etc/docker/daemon.json (Docker uses mirrors for Docker Hub only):\n{{ \"registry-mirrors\": [\"https://{host}\"] }}\n"));
        }
        let mut conf = String::new();
        for u in &upstreams {
            let (prefix, location) = match u["prefix"].as_str() {
                Some(p) => (p.to_string(), format!("{host}/{p}")),
                None if default_hub => ("docker.io".to_string(), host.to_string()),
                None => continue,
            };
            conf.push_str(&format!("[[registry]]\nprefix = \"{prefix}\"\nlocation = \"{prefix}\"\n[[registry.mirror]]\nlocation = \"{location}\"\n\n"));
        }
        if !conf.is_empty() {
            t.push_str("# /etc/containers/registries.conf (podman, skopeo, buildah):\n");
            t.push_str(conf.trim_end());
            t.push('\n');
        }
        out.push(("registry".to_string(), t));
    }
    out
}

pub fn show(client: &Client, site: &str, host: Option<&str>, json_out: bool) -> Result<()> {
    let s = client.get(&format!("/sites/{site}"))?;
    let host = match host {
        Some(h) => h.to_string(),
        None => client.get(&format!("/sites/{site}/hostnames"))?["hostnames"]
            .as_array()
            .and_then(|h| h.first())
            .and_then(|h| h["hostname"].as_str())
            .map(String::from)
            .context("the site has no hostname: add one (wharf host add) or give --host")?,
    };
    let mut served = Served::default();
    if let Some(active) = s["active_release"].as_i64() {
        for p in client.all_pages(&format!("/sites/{site}/releases/{active}/paths"), "paths")? {
            if let Some(path) = p["path"].as_str() {
                served.add(path);
            }
        }
    }
    let oci = client.get(&format!("/sites/{site}/oci/settings")).unwrap_or(Value::Null);
    let oci = oci.get("settings").cloned().unwrap_or(oci);
    let out = snippets(site, &host, &served, &oci);
    if json_out {
        let m: serde_json::Map<String, Value> = out.into_iter().map(|(k, v)| (k, json!(v))).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"site": site, "host": host, "setup": m}))?);
    } else if out.is_empty() {
        println!("{site} serves nothing yet");
    } else {
        for (i, (what, text)) in out.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("# {what}\n{text}", text = text.trim_end());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_release_serves_is_read_from_its_paths() {
        let mut s = Served::default();
        for p in [
            "keys/wharf-archive-keyring.gpg",
            "keys/apk/apk-1a2b3c4d.rsa.pub",
            "dists/stable/InRelease",
            "dists/stable/main/binary-amd64/Packages.xz",
            "dists/stable/contrib/binary-all/Packages.gz",
            "dists/stable/main/binary-amd64/by-hash/SHA256/ab",
            "pool/main/h/hello/hello_1.0_amd64.deb",
            "v3.20/main/x86_64/APKINDEX.tar.gz",
            "v3.20/main/x86_64/hello-1.0-r0.apk",
            "charts/stable/index.yaml",
            "_wharf/oci/team/app/_tags/v1",
            "_wharf/oci/team/app/_manifests/sha256/ab",
        ] {
            s.add(p);
        }
        assert!(s.deb_keyring);
        assert_eq!(s.dists["stable"].iter().collect::<Vec<_>>(), ["contrib", "main"]);
        assert_eq!(s.apk_keys, ["apk-1a2b3c4d.rsa.pub"]);
        assert_eq!(s.apk_repos.iter().collect::<Vec<_>>(), ["v3.20/main"]);
        assert_eq!(s.helm_repos.iter().collect::<Vec<_>>(), ["charts/stable"]);
        assert_eq!(s.oci_repos.iter().collect::<Vec<_>>(), ["team/app"]);
        let out = snippets("apt", "apt.example.com", &s, &json!({"upstreams": [{"url": "https://registry-1.docker.io"}, {"prefix": "ghcr.io", "url": "https://ghcr.io"}]}));
        let kinds: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["apt", "apk", "helm", "registry"]);
        assert!(out[0].1.contains("Signed-By: /usr/share/keyrings/apt-archive-keyring.gpg") && out[0].1.contains("Components: contrib main"));
        assert!(out[1].1.contains("echo \"https://apt.example.com/v3.20/main\" >> /etc/apk/repositories"));
        assert!(out[3].1.contains("\"registry-mirrors\": [\"https://apt.example.com\"]"));
        assert!(out[3].1.contains("prefix = \"ghcr.io\"\nlocation = \"ghcr.io\"\n[[registry.mirror]]\nlocation = \"apt.example.com/ghcr.io\""));
        assert!(snippets("x", "x.test", &Served::default(), &Value::Null).is_empty());
    }
}
