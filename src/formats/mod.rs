//! The package formats (`deb`, `apk`, `helm`), each pure: inspection of an
//! upload, the publication plan, signatures. What every format shares: a publication planned as data (bytes
//! to store, then the path changes of one draft that reference them), which
//! the glue carries out — store the blobs, commit the changes in one batch —
//! and which native tests check without any runtime.

pub mod apk;
pub mod deb;
pub mod helm;

use crate::release::Change;
use crate::auth::sha256_hex;

/// What re-activating an older release needs from a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    /// The pointer switch alone is right.
    PointerSwitch,
    /// Its scopes are published afresh in a new release made from the target
    /// (Debian: apt ignores a Release older than the one it has).
    Republish,
}

/// A package format, as the release lifecycle sees it: its name (in the
/// format-keyed tables and the admin API), what a rollback needs, and its
/// publication planned without I/O from what the glue read.
pub trait Format {
    const NAME: &'static str;
    const ROLLBACK: Rollback;
    /// What publishing one scope reads (members, settings, existing paths, keys).
    type Input<'a>;
    /// The publication, with what the glue records besides it (pending
    /// signatures, ledgers, what was regenerated).
    type Plan;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String>;
}

/// Who signs a format's indexes: the server with its key, or the user, whose
/// public key checks the signatures uploaded for the planned blobs.
pub enum Signing<'a, S, K> {
    Server(&'a S),
    Client(&'a K),
}

/// Debian repositories.
pub struct Deb;
/// APK repositories.
pub struct Apk;
/// Helm chart repositories.
pub struct Helm;

impl Format for Deb {
    const NAME: &'static str = "deb";
    const ROLLBACK: Rollback = Rollback::Republish;
    type Input<'a> = deb::publish::Input<'a>;
    type Plan = deb::publish::Plan;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String> {
        deb::publish::plan(input).map_err(|e| e.0)
    }
}

impl Format for Apk {
    const NAME: &'static str = "apk";
    const ROLLBACK: Rollback = Rollback::PointerSwitch;
    type Input<'a> = apk::publish::Input<'a>;
    type Plan = apk::publish::Plan;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String> {
        apk::publish::plan(input)
    }
}

impl Format for Helm {
    const NAME: &'static str = "helm";
    const ROLLBACK: Rollback = Rollback::PointerSwitch;
    type Input<'a> = helm::publish::Input<'a>;
    type Plan = Publication;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String> {
        Ok(helm::publish::plan(input))
    }
}

/// Bytes a publication writes, stored under their sha256 before the changes
/// that reference them are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob {
    pub sha256: String,
    pub data: Vec<u8>,
}

/// A planned publication: blobs to store first, then path changes, in order
/// (a path is changed at most once).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Publication {
    pub blobs: Vec<NewBlob>,
    pub changes: Vec<Change>,
}

impl Publication {
    /// Stores `data` (once per digest) and returns its sha256, without
    /// placing it at a path.
    pub fn blob(&mut self, data: Vec<u8>) -> String {
        let sha = sha256_hex(&data);
        if !self.blobs.iter().any(|b| b.sha256 == sha) {
            self.blobs.push(NewBlob { sha256: sha.clone(), data });
        }
        sha
    }

    /// Writes `data` at `path`; returns its sha256.
    pub fn write(&mut self, path: impl Into<String>, data: Vec<u8>, content_type: &str) -> String {
        let sha = self.blob(data);
        self.link(path, &sha, content_type);
        sha
    }

    /// Places a blob (one this publication stores, or one the release holds) at `path`.
    pub fn link(&mut self, path: impl Into<String>, sha256: &str, content_type: &str) {
        self.changes.push(Change { path: path.into(), sha256: Some(sha256.to_string()), content_type: Some(content_type.to_string()) });
    }

    /// Removes `path` from the release.
    pub fn remove(&mut self, path: impl Into<String>) {
        self.changes.push(Change { path: path.into(), sha256: None, content_type: None });
    }

    /// Whether a change of `path` is planned already.
    pub fn touches(&self, path: &str) -> bool {
        self.changes.iter().any(|c| c.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_stored_once_and_changes_keep_their_order() {
        let mut p = Publication::default();
        let a = p.write("x/a", b"same".to_vec(), "text/plain");
        let b = p.write("x/by-hash/a", b"same".to_vec(), "text/plain");
        p.remove("x/old");
        assert_eq!(a, b);
        assert_eq!(p.blobs.len(), 1);
        assert_eq!(p.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["x/a", "x/by-hash/a", "x/old"]);
        assert!(p.touches("x/old") && !p.touches("x/new"));
        assert_eq!(p.changes[2].sha256, None);
    }
}
