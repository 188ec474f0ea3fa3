//! Debian repositories: package inspection, index generation, signing.

pub mod control;
pub mod index;
pub mod package;
pub mod publish;
pub mod repo;
pub mod sign;

use super::{Admission, Format, Rollback, Signed, SignedFile, SigningKeys};
use crate::release::Change;
use pgp::composed::SignedPublicKey;

/// Debian repositories.
pub struct Deb;

/// The media type of a `.deb`.
pub const DEB_TYPE: &str = "application/vnd.debian.binary-package";

impl Format for Deb {
    const NAME: &'static str = "deb";
    const ROLLBACK: Rollback = Rollback::Republish;
    const REFUSAL: (&'static str, &'static str) = ("invalid_package", "not a valid Debian package");
    type Member = package::DebInfo;
    type Inspector = package::Inspection;
    fn inspector(size: u64) -> package::Inspection {
        package::Inspection::new(size)
    }
    type Input<'a> = publish::Input<'a>;
    type Plan = publish::Plan;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String> {
        publish::plan(input).map_err(|e| e.0)
    }
}

/// The release-map path recording that a package belongs to a dist and
/// component: `_wharf/deb/<dist>/<component>/<file>` → the .deb's blob.
pub fn member_path(dist: &str, component: &str, filename: &str) -> String {
    format!("{}deb/{dist}/{component}/{filename}", crate::path::INTERNAL_PREFIX)
}

/// Where an accepted package goes: its pool file (which it takes: other bytes
/// there conflict) and its member path in the dist and component.
impl super::Ingest for Deb {
    type Scope = (String, String);
    const RECORDS: (&'static str, &'static [&'static str]) = ("deb_packages", &["sha256", "package", "version", "architecture", "source", "control"]);
    fn admission(info: &package::DebInfo, sha256: &str, (dist, component): &Self::Scope) -> Admission {
        admission(info, sha256, dist, component)
    }
    fn record(info: &package::DebInfo, sha256: &str) -> Vec<serde_json::Value> {
        [sha256, &info.package, &info.version, &info.architecture, &info.source, &info.control.render()].iter().map(|v| serde_json::json!(v)).collect()
    }
    fn from_record(row: &serde_json::Map<String, serde_json::Value>) -> Option<package::DebInfo> {
        let control = control::Paragraph::parse(row.get("control")?.as_str()?).ok()?;
        package::check(control).ok()
    }
    fn dirty(info: &package::DebInfo, (dist, component): &Self::Scope) -> (String, String, String) {
        (dist.clone(), format!("{component}/{}", info.architecture), info.package.clone())
    }
    fn describe(info: &package::DebInfo, sha256: &str, size: u64, (dist, component): &Self::Scope) -> serde_json::Value {
        serde_json::json!({"package": info.package, "version": info.version, "architecture": info.architecture, "dist": dist, "component": component,
               "filename": package::pool_path(component, info), "sha256": sha256, "size": size})
    }
}

pub fn admission(info: &package::DebInfo, sha256: &str, dist: &str, component: &str) -> Admission {
    let pool = package::pool_path(component, info);
    let put = |path: String| Change { path, sha256: Some(sha256.to_string()), content_type: Some(DEB_TYPE.into()) };
    Admission {
        occupies: pool.clone(),
        conflict: format!("{} {} ({}) is already in the pool", info.package, info.version, info.architecture),
        changes: vec![put(pool.clone()), put(member_path(dist, component, &package::filename(info)))],
        on_replace: vec![],
        served: vec![put(pool)],
    }
}

/// The body of a signature upload: InRelease (clear-signed Release) and
/// Release.gpg (detached signature of Release), both armored.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signatures {
    pub inrelease: String,
    pub release_gpg: String,
}

impl Signed for Deb {
    type Settings = repo::DistConfig;
    type ServerKey = sign::Signer;
    type ClientKey = SignedPublicKey;
    type Signatures = Signatures;
    const SERVER_SECRET: (&'static str, &'static str, Option<&'static str>) =
        ("DEB_SIGNING_KEY", "an armored OpenPGP secret key", Some("DEB_SIGNING_KEY_PASSPHRASE"));
    fn settings_scope(scope: &str) -> &str {
        scope
    }
    fn client_signed(settings: &repo::DistConfig) -> bool {
        settings.client_signed()
    }
    fn server_key(secret: &str, passphrase: Option<&str>) -> Result<sign::Signer, String> {
        sign::Signer::from_armored(secret, passphrase).map_err(|e| e.0)
    }
    /// Stored as the hex of the binary key.
    fn client_key(stored: &str) -> Result<SignedPublicKey, String> {
        let bytes = hex::decode(stored).map_err(|_| "the stored key is not hex".to_string())?;
        sign::read_public(&bytes).map_err(|e| e.0)
    }
    fn unsigned_path(dist: &str, _part: &str) -> Option<String> {
        Some(format!("dists/{dist}/Release"))
    }
    fn accept_signatures(
        keys: &SigningKeys<'_, repo::DistConfig, SignedPublicKey>,
        dist: &str,
        _part: &str,
        release: &[u8],
        s: Signatures,
    ) -> Result<Vec<SignedFile>, String> {
        let text = std::str::from_utf8(release).map_err(|_| "the stored Release is not UTF-8".to_string())?;
        sign::verify_inrelease(keys.key, &s.inrelease, text).map_err(|e| e.0)?;
        sign::verify_detached(keys.key, s.release_gpg.as_bytes(), release).map_err(|e| e.0)?;
        Ok(vec![
            SignedFile { path: format!("dists/{dist}/InRelease"), data: s.inrelease.into_bytes(), content_type: "text/plain; charset=utf-8" },
            SignedFile { path: format!("dists/{dist}/Release.gpg"), data: s.release_gpg.into_bytes(), content_type: "application/pgp-signature" },
        ])
    }
}
