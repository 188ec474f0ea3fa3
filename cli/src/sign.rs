//! Signing on the publisher's machine: the server generates the unsigned
//! Release (Debian) or index stream (APK), the signatures are made here and
//! uploaded, the server verifies them against the site's registered key.
//! Keys never leave this machine.
//!
//! Debian: through the user's `gpg` (`--sign-with KEYID`: gpg-agent,
//! smartcards and HSMs work as they do for the user), or in-process from an
//! armored secret key file (`--sign-key FILE`, passphrase in
//! `WHARF_SIGN_PASSPHRASE`) with the same OpenPGP code the worker signs with.
//! APK: RSA PKCS#1 v1.5 over SHA-256 of the index stream from a PEM private
//! key (`--sign-key key.rsa`, as abuild keys are).

use crate::client::Client;
use crate::publish::Target;
use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

pub enum Signer {
    /// `gpg --local-user KEYID`.
    Gpg(String),
    /// An armored OpenPGP secret key.
    OpenPgp(Box<wharf::formats::deb::sign::Signer>),
    /// An RSA private key (PEM), for APK.
    Rsa(Box<wharf::formats::apk::index::Signer>),
}

impl Signer {
    /// `--sign-with` / `--sign-key` for a Debian dist.
    pub fn for_deb(sign_with: Option<&str>, sign_key: Option<&std::path::Path>) -> Result<Option<Signer>> {
        match (sign_with, sign_key) {
            (Some(_), Some(_)) => bail!("give --sign-with or --sign-key, not both"),
            (Some(id), None) => Ok(Some(Signer::Gpg(id.to_string()))),
            (None, Some(p)) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                let pass = std::env::var("WHARF_SIGN_PASSPHRASE").ok();
                let s = wharf::formats::deb::sign::Signer::from_armored(&text, pass.as_deref())
                    .map_err(|e| anyhow::anyhow!("{}: {e:?} (a passphrase goes in WHARF_SIGN_PASSPHRASE)", p.display()))?;
                Ok(Some(Signer::OpenPgp(Box::new(s))))
            }
            (None, None) => Ok(None),
        }
    }

    /// `--sign-key` for an APK repository.
    pub fn for_apk(sign_key: Option<&std::path::Path>) -> Result<Option<Signer>> {
        let Some(p) = sign_key else { return Ok(None) };
        let pem = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let s = wharf::formats::apk::index::Signer::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {}", p.display(), e.0))?;
        Ok(Some(Signer::Rsa(Box::new(s))))
    }

    /// InRelease and Release.gpg (armored) for a Release text.
    pub fn sign_release(&self, release: &str) -> Result<(String, String)> {
        match self {
            Signer::Gpg(id) => Ok((gpg(id, &["--clearsign"], release.as_bytes())?, gpg(id, &["--armor", "--detach-sign"], release.as_bytes())?)),
            Signer::OpenPgp(s) => Ok((
                s.clearsign(release).map_err(|e| anyhow::anyhow!("clearsigning: {e:?}"))?,
                s.detach_sign(release.as_bytes()).map_err(|e| anyhow::anyhow!("signing: {e:?}"))?,
            )),
            Signer::Rsa(_) => bail!("an RSA key signs APK indexes, not a Debian Release (give --sign-with KEYID or an OpenPGP --sign-key)"),
        }
    }

    /// The signature (base64) of an APK index stream.
    pub fn sign_apk(&self, stream: &[u8]) -> Result<String> {
        match self {
            Signer::Rsa(s) => Ok(base64::engine::general_purpose::STANDARD.encode(s.sign(stream))),
            _ => bail!("APK indexes are signed with an RSA key (--sign-key key.rsa)"),
        }
    }
}

/// Runs the user's gpg over `input` with their key.
fn gpg(key: &str, args: &[&str], input: &[u8]) -> Result<String> {
    let gpg = std::env::var("WHARF_GPG").unwrap_or_else(|_| "gpg".into());
    let mut child = Command::new(&gpg)
        .args(["--batch", "--yes", "--local-user", key])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {gpg} (is GnuPG installed?)"))?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{gpg} could not sign with {key}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).context("gpg's output is not text")
}

/// Publishes a draft's indexes and uploads signatures made here for each
/// index that waits for one. Returns the publish answer.
pub fn publish_and_sign(client: &Client, site: &str, release: i64, target: &Target, signer: &Signer) -> Result<Value> {
    let published = client.json("POST", &target.publish_path(site, release), &json!({}))?;
    match target {
        Target::Deb { dist, .. } => sign_deb(client, site, release, dist, signer)?,
        Target::Apk { branch, repo } => {
            let waiting: Vec<String> =
                published["signing"]["waiting_for_signatures"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
            for arch in waiting {
                sign_apk(client, site, release, branch, repo, &arch, signer)?;
            }
        }
        Target::Helm { .. } => bail!("Helm repositories are not signed this way (provenance files go with each chart)"),
    }
    Ok(published)
}

pub fn sign_deb(client: &Client, site: &str, release: i64, dist: &str, signer: &Signer) -> Result<()> {
    let r = client.get(&format!("/sites/{site}/releases/{release}/deb/{dist}/Release"))?;
    let text = r["release"].as_str().context("the answer has no Release text")?;
    let (inrelease, release_gpg) = signer.sign_release(text)?;
    client.json("PUT", &format!("/sites/{site}/releases/{release}/deb/{dist}/signatures"), &json!({"inrelease": inrelease, "release_gpg": release_gpg}))?;
    Ok(())
}

pub fn sign_apk(client: &Client, site: &str, release: i64, branch: &str, repo: &str, arch: &str, signer: &Signer) -> Result<()> {
    let r = client.get(&format!("/sites/{site}/releases/{release}/apk/{branch}/{repo}/{arch}/unsigned"))?;
    let stream = base64::engine::general_purpose::STANDARD
        .decode(r["stream_base64"].as_str().context("the answer has no stream_base64")?)
        .context("stream_base64 is not base64")?;
    let signature = signer.sign_apk(&stream)?;
    client.json("PUT", &format!("/sites/{site}/releases/{release}/apk/{branch}/{repo}/{arch}/signature"), &json!({"signature_base64": signature}))?;
    Ok(())
}
