//! The package formats (`deb`, `apk`, `helm`), each pure: inspection of an
//! upload, the publication plan, signatures. What every format shares: a publication planned as data (bytes
//! to store, then the path changes of one draft that reference them), which
//! the glue carries out — store the blobs, commit the changes in one batch —
//! and which native tests check without any runtime.

pub mod apk;
pub mod batch;
pub mod deb;
pub mod helm;
pub mod inspect;
pub mod pieces;

use crate::auth::sha256_hex;
use crate::release::Change;

pub use apk::Apk;
pub use deb::Deb;
pub use helm::Helm;

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
/// format-keyed tables and the admin API), how an upload is inspected into a
/// member, its publication planned without I/O from what the glue read, and
/// what a rollback needs. Each format implements it in its own folder.
pub trait Format {
    const NAME: &'static str;
    const ROLLBACK: Rollback;
    /// The error code of a refused upload (422), and the words before its reason.
    const REFUSAL: (&'static str, &'static str);
    /// What inspection makes of an accepted upload.
    type Member;
    /// The inspection of one upload of `size` bytes.
    type Inspector: inspect::Inspector<Member = Self::Member>;
    fn inspector(size: u64) -> Self::Inspector;
    /// What publishing one scope reads (members, settings, existing paths, keys).
    type Input<'a>;
    /// The publication, with what the glue records besides it (pending
    /// signatures, ledgers, what was regenerated).
    type Plan;
    fn plan(input: &Self::Input<'_>) -> Result<Self::Plan, String>;
}

/// What adding an inspected upload to a draft records, the same whether it
/// came alone or in a batch: where it goes (its admission), the format's
/// record of it (a row of the format's table, written once per blob), the
/// index part it makes dirty, and how the API describes it.
pub trait Ingest: Format {
    /// The route's scope: Debian (dist, component), APK (branch, repository),
    /// Helm (repository).
    type Scope;
    /// The format's table of records and its columns (sha256 first; `created_at` is added).
    const RECORDS: (&'static str, &'static [&'static str]);
    fn admission(member: &Self::Member, sha256: &str, scope: &Self::Scope) -> Admission;
    /// The record's values, in `RECORDS` column order (sha256 first).
    fn record(member: &Self::Member, sha256: &str) -> Vec<serde_json::Value>;
    /// The member again from a stored record (`RECORDS` columns, by name), so
    /// a blob added by digest is not inspected again: the record was made by
    /// inspecting exactly these bytes. None: inspect again (the record does
    /// not hold all of it).
    fn from_record(_row: &serde_json::Map<String, serde_json::Value>) -> Option<Self::Member> {
        None
    }
    /// The (scope, part) of the index the member makes dirty, and the name
    /// its records are listed under there.
    fn dirty(member: &Self::Member, scope: &Self::Scope) -> (String, String, String);
    fn describe(member: &Self::Member, sha256: &str, size: u64, scope: &Self::Scope) -> serde_json::Value;
}

/// A format whose indexes are signed: by the server, with a key from a Worker
/// secret, or by the user, whose registered public key checks the signatures
/// uploaded for the blobs a publication left waiting.
pub trait Signed: Format {
    /// A site's settings of one settings scope (see [`Signed::settings_scope`]).
    type Settings: serde::Serialize + serde::de::DeserializeOwned + Default;
    type ServerKey;
    type ClientKey;
    /// The body of a signature upload.
    type Signatures: serde::de::DeserializeOwned;
    /// The Worker secret holding the server's key, what it must hold, and the
    /// secret holding its passphrase, if the key can have one.
    const SERVER_SECRET: (&'static str, &'static str, Option<&'static str>);
    /// The settings scope a publication scope reads (Debian: per dist; APK: one per site).
    fn settings_scope(scope: &str) -> &str;
    fn client_signed(settings: &Self::Settings) -> bool;
    fn server_key(secret: &str, passphrase: Option<&str>) -> Result<Self::ServerKey, String>;
    /// A registered client key, from its stored form.
    fn client_key(stored: &str) -> Result<Self::ClientKey, String>;
    /// A path of the release that must still hold the blob waiting to be
    /// signed (Debian: the Release it was published as), if any.
    fn unsigned_path(_scope: &str, _part: &str) -> Option<String> {
        None
    }
    /// Checks the user's signatures over `unsigned` (the blob a part of a
    /// scope waits to have signed) and gives the files they complete.
    fn accept_signatures(
        keys: &SigningKeys<'_, Self::Settings, Self::ClientKey>,
        scope: &str,
        part: &str,
        unsigned: &[u8],
        signatures: Self::Signatures,
    ) -> Result<Vec<SignedFile>, String>;
}

/// What checking a user's signatures sees: the site, its settings for the
/// scope, and its registered key.
pub struct SigningKeys<'a, S, K> {
    pub site_name: &'a str,
    pub settings: &'a S,
    pub key: &'a K,
}

/// A file a user's signature completes, to place in the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFile {
    pub path: String,
    pub data: Vec<u8>,
    pub content_type: &'static str,
}

/// Who signs a format's indexes, as a site's settings say (`"server"`, the
/// default, or `"client"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignedBy {
    #[default]
    Server,
    Client,
}

/// Who signs a format's indexes: the server with its key, or the user, whose
/// public key checks the signatures uploaded for the planned blobs.
pub enum Signing<'a, S, K> {
    Server(&'a S),
    Client(&'a K),
}

/// Where an accepted upload goes in a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The path the upload takes: other content there is a conflict (409)
    /// unless the upload replaces it.
    pub occupies: String,
    /// Where the conflict lies, in words ("hello 1.0 (amd64) is already in the pool").
    pub conflict: String,
    /// The changes that add the member.
    pub changes: Vec<Change>,
    /// The changes made besides when it replaces other content.
    pub on_replace: Vec<Change>,
    /// The paths it will be served at, with its blob: a path published before
    /// as immutable must not get other bytes.
    pub served: Vec<Change>,
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
