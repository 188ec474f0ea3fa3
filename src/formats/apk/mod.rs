//! APK repositories (Alpine, Wolfi): package inspection, APKINDEX generation, signing.

pub mod index;
pub mod package;
pub mod publish;
pub mod repo;

use super::{Admission, Format, Rollback, Signed, SignedFile, SigningKeys};
use crate::release::Change;
use base64::Engine;
use rsa::RsaPublicKey;

/// APK repositories.
pub struct Apk;

impl Format for Apk {
    const NAME: &'static str = "apk";
    const ROLLBACK: Rollback = Rollback::PointerSwitch;
    const REFUSAL: (&'static str, &'static str) = ("invalid_package", "not a valid apk package");
    type Member = package::Accepted;
    type Inspector = package::Inspection;
    fn inspector(size: u64) -> package::Inspection {
        package::Inspection::new(size)
    }
    type Input<'a> = publish::Input<'a>;
    type Plan = publish::Plan;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String> {
        publish::plan(input)
    }
}

/// The release-map path recording that a package belongs to a
/// branch/repository: `_wharf/apk/<branch>/<repository>/<arch>/<file>` → the .apk's blob.
pub fn member_path(branch: &str, repo: &str, arch: &str, filename: &str) -> String {
    format!("{}apk/{branch}/{repo}/{arch}/{filename}", crate::path::INTERNAL_PREFIX)
}

/// Where an accepted package goes: its member path (which it takes). The
/// file served of an arch-specific package is known now (a noarch one's are
/// checked when publishing places them in every architecture).
impl super::Ingest for Apk {
    type Scope = (String, String);
    const RECORDS: (&'static str, &'static [&'static str]) = ("apk_packages", &["sha256", "name", "version", "arch", "identity", "record", "pkginfo"]);
    fn admission(p: &package::Accepted, sha256: &str, (branch, repo): &Self::Scope) -> Admission {
        admission(p, sha256, branch, repo)
    }
    fn record(p: &package::Accepted, sha256: &str) -> Vec<serde_json::Value> {
        [sha256, &p.info.name, &p.info.version, &p.arch, &p.identity, &p.record, &p.pkginfo].iter().map(|v| serde_json::json!(v)).collect()
    }
    fn dirty(p: &package::Accepted, (branch, repo): &Self::Scope) -> (String, String, String) {
        (format!("{branch}/{repo}"), p.arch.clone(), p.info.name.clone())
    }
    fn describe(p: &package::Accepted, sha256: &str, size: u64, (branch, repo): &Self::Scope) -> serde_json::Value {
        serde_json::json!({"name": p.info.name, "version": p.info.version, "arch": p.arch, "branch": branch, "repository": repo,
               "identity": p.identity, "signed": p.signed, "sha256": sha256, "size": size})
    }
}

pub fn admission(p: &package::Accepted, sha256: &str, branch: &str, repo: &str) -> Admission {
    let file = package::filename(&p.info.name, &p.info.version);
    let member = member_path(branch, repo, &p.arch, &file);
    Admission {
        occupies: member.clone(),
        conflict: format!("{}-{} ({}) is already in {branch}/{repo}", p.info.name, p.info.version, p.arch),
        changes: vec![Change { path: member, sha256: Some(sha256.to_string()), content_type: Some(publish::APK_TYPE.into()) }],
        on_replace: vec![],
        served: vec![Change { path: format!("{branch}/{repo}/{}/{file}", p.arch), sha256: Some(sha256.to_string()), content_type: None }],
    }
}

/// The body of a signature upload: the RSA PKCS#1 v1.5 signature (SHA-256)
/// of the index stream, base64.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signatures {
    pub signature_base64: String,
}

impl Signed for Apk {
    type Settings = repo::ApkConfig;
    type ServerKey = index::Signer;
    type ClientKey = RsaPublicKey;
    type Signatures = Signatures;
    const SERVER_SECRET: (&'static str, &'static str, Option<&'static str>) = ("APK_SIGNING_KEY", "an RSA private key in PEM", None);
    /// One settings document per site.
    fn settings_scope(_scope: &str) -> &str {
        ""
    }
    fn client_signed(settings: &repo::ApkConfig) -> bool {
        settings.client_signed()
    }
    fn server_key(secret: &str, _passphrase: Option<&str>) -> Result<index::Signer, String> {
        index::Signer::from_pem(secret).map_err(|e| e.0)
    }
    /// Stored as PEM.
    fn client_key(stored: &str) -> Result<RsaPublicKey, String> {
        index::read_public(stored).map_err(|e| e.0)
    }
    /// `part` is the architecture; `stream` the unsigned index stream.
    fn accept_signatures(
        keys: &SigningKeys<'_, repo::ApkConfig, RsaPublicKey>,
        scope: &str,
        arch: &str,
        stream: &[u8],
        s: Signatures,
    ) -> Result<Vec<SignedFile>, String> {
        let signature = base64::engine::general_purpose::STANDARD.decode(s.signature_base64.trim()).map_err(|_| "signature_base64 is not base64".to_string())?;
        index::verify(keys.key, stream, &signature).map_err(|e| e.0)?;
        let mut data = index::signature_stream(&repo::key_name(keys.settings, keys.site_name, keys.key), &signature, 0);
        data.extend_from_slice(stream);
        Ok(vec![SignedFile { path: format!("{scope}/{arch}/{}", publish::INDEX), data, content_type: "application/gzip" }])
    }
}
