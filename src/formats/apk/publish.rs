//! An APK repository's publication, planned without I/O: for each
//! architecture to regenerate, its package files (noarch ones in every
//! architecture) and an `APKINDEX.tar.gz`, signed by the server or left
//! unsigned for the user's signature; the public key under `keys/apk/`.

use super::{index, package, repo};
use crate::formats::Publication;
use rsa::RsaPublicKey;
use std::collections::{BTreeMap, BTreeSet};

pub const APK_TYPE: &str = "application/octet-stream";
pub const INDEX: &str = "APKINDEX.tar.gz";
/// Where the public key is served: `keys/apk/<key name>`, to save under /etc/apk/keys/.
pub const KEYS_DIR: &str = "keys/apk/";

/// A package of the repository, as its member record keeps it.
#[derive(Debug, Clone)]
pub struct Member {
    pub sha256: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The package's APKINDEX record (without the blank line).
    pub record: String,
}

/// Who signs the indexes (the user signs each unsigned index stream: see [`Plan::pending`]).
pub type Signing<'a> = crate::formats::Signing<'a, index::Signer, RsaPublicKey>;

pub struct Input<'a> {
    pub branch: &'a str,
    pub repository: &'a str,
    pub cfg: &'a repo::ApkConfig,
    /// The repository's packages, in path order.
    pub members: &'a [Member],
    /// Architectures whose packages changed since the last publication.
    pub dirty: &'a BTreeSet<String>,
    /// The draft's paths under `<branch>/<repository>/`, with their sha256.
    pub existing: &'a BTreeMap<String, String>,
    /// Regenerate every architecture.
    pub full: bool,
    pub signing: Signing<'a>,
    pub key_name: &'a str,
}

#[derive(Debug)]
pub struct Plan {
    pub architectures: Vec<String>,
    pub regenerated: Vec<String>,
    pub publication: Publication,
    /// Architectures whose unsigned index (sha256) waits for the user's signature.
    pub pending: Vec<(String, String)>,
}

pub fn plan(input: &Input<'_>) -> Result<Plan, String> {
    let (b, r) = (input.branch, input.repository);
    let present: BTreeSet<String> = input.members.iter().map(|m| m.arch.clone()).collect();
    let archs = repo::architectures(input.cfg, &present);
    if archs.is_empty() && !input.members.is_empty() {
        return Err(format!("{b}/{r} has only noarch packages: name its architectures with PUT /sites/{{site}}/apk/settings {{\"architectures\": [...]}}"));
    }
    let dir = format!("{b}/{r}/");
    let existing = input.existing;
    let regen =
        if input.full { archs.clone() } else { repo::to_regenerate(&archs, input.dirty, |a| existing.contains_key(&format!("{dir}{a}/{INDEX}"))) };
    let mut p = Publication::default();
    let mut pending = Vec::new();
    let description = input.cfg.description.clone().unwrap_or_else(|| format!("{b}/{r}"));
    for a in &regen {
        let pkgs: Vec<&Member> = input.members.iter().filter(|m| &m.arch == a || m.arch == repo::NOARCH).collect();
        let mut want: BTreeMap<String, &Member> = BTreeMap::new();
        for m in &pkgs {
            want.insert(format!("{dir}{a}/{}", package::filename(&m.name, &m.version)), m);
        }
        for (path, m) in &want {
            if existing.get(path).map_or(true, |sha| sha != &m.sha256) {
                p.link(path.clone(), &m.sha256, APK_TYPE);
            }
        }
        for path in existing.keys().filter(|p| p.starts_with(&format!("{dir}{a}/")) && p.ends_with(".apk")) {
            if !want.contains_key(path) {
                p.remove(path.clone());
            }
        }
        let mut records: Vec<(String, String, String)> = pkgs.iter().map(|m| (m.name.clone(), m.version.clone(), m.record.clone())).collect();
        let text = index::apkindex(&mut records);
        let stream = index::index_stream(&description, &text, 0);
        let index_path = format!("{dir}{a}/{INDEX}");
        match input.signing {
            Signing::Server(signer) => {
                let mut file = index::signature_stream(input.key_name, &signer.sign(&stream), 0);
                file.extend_from_slice(&stream);
                p.write(index_path, file, "application/gzip");
            }
            Signing::Client(_) => {
                let sha = p.blob(stream);
                if existing.contains_key(&index_path) {
                    p.remove(index_path);
                }
                pending.push((a.clone(), sha));
            }
        }
    }
    // An architecture the repository no longer has loses its directory.
    let kept: BTreeSet<String> = archs.iter().map(|a| format!("{dir}{a}/")).collect();
    for path in existing.keys() {
        let Some((arch_dir, _)) = path[dir.len()..].split_once('/') else { continue };
        if !kept.contains(&format!("{dir}{arch_dir}/")) {
            p.remove(path.clone());
        }
    }
    let public = match input.signing {
        Signing::Server(s) => s.public_key(),
        Signing::Client(k) => k,
    };
    p.write(format!("{KEYS_DIR}{}", input.key_name), index::public_pem(public).into_bytes(), "application/x-pem-file");
    Ok(Plan { architectures: archs, regenerated: regen, publication: p, pending })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    const KEY: &str = include_str!("../../../tests/fixtures/apk-test-key.pem");

    fn member(name: &str, version: &str, arch: &str) -> Member {
        let sha = crate::auth::sha256_hex(format!("{name}-{version}-{arch}").as_bytes());
        let record = format!("C:Q1{name}=\nP:{name}\nV:{version}\nA:{arch}\nS:100\nI:200\nT:{name} package\nU:https://example.com\nL:MIT\n");
        Member { sha256: sha, name: name.into(), version: version.into(), arch: arch.into(), record }
    }

    fn members() -> Vec<Member> {
        vec![member("hello", "1.0-r0", "x86_64"), member("hello", "1.0-r0", "aarch64"), member("hello-doc", "1.0-r0", "noarch"), member("abc", "2.1-r3", "x86_64")]
    }

    fn cfg() -> repo::ApkConfig {
        serde_json::from_value(serde_json::json!({"architectures": ["x86_64", "aarch64"]})).unwrap()
    }

    /// The index's text once the signature stream and the gzip are taken off.
    fn apkindex_of(file: &[u8]) -> String {
        let mut all = Vec::new();
        MultiGzDecoder::new(file).read_to_end(&mut all).unwrap();
        let text = String::from_utf8_lossy(&all).to_string();
        let start = text.find("C:Q1").unwrap();
        text[start..].trim_end_matches('\0').to_string()
    }

    #[test]
    fn a_signed_repository_is_planned_byte_for_byte() {
        let signer = index::Signer::from_pem(KEY).unwrap();
        let (cfg, members, none) = (cfg(), members(), BTreeSet::new());
        let existing = BTreeMap::new();
        let input = Input { branch: "v3.20", repository: "main", cfg: &cfg, members: &members, dirty: &none, existing: &existing, full: false,
                            signing: Signing::Server(&signer), key_name: "test.rsa.pub" };
        let plan = plan(&input).unwrap();
        assert_eq!(plan.architectures, ["aarch64", "x86_64"]);
        assert_eq!(plan.regenerated, ["aarch64", "x86_64"]);
        assert!(plan.pending.is_empty());
        let paths: Vec<&str> = plan.publication.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, [
            "v3.20/main/aarch64/hello-1.0-r0.apk",
            "v3.20/main/aarch64/hello-doc-1.0-r0.apk",
            "v3.20/main/aarch64/APKINDEX.tar.gz",
            "v3.20/main/x86_64/abc-2.1-r3.apk",
            "v3.20/main/x86_64/hello-1.0-r0.apk",
            "v3.20/main/x86_64/hello-doc-1.0-r0.apk",
            "v3.20/main/x86_64/APKINDEX.tar.gz",
            "keys/apk/test.rsa.pub",
        ]);
        let x86 = &plan.publication.changes[6];
        let file = &plan.publication.blobs.iter().find(|b| Some(&b.sha256) == x86.sha256.as_ref()).unwrap().data;
        assert_eq!(apkindex_of(file), format!("{}\n{}\n{}\n", members[3].record, members[0].record, members[2].record));
        // Golden digests: the same inputs give these bytes (RSA PKCS#1 v1.5 signatures are deterministic).
        let digests: Vec<(&str, &str)> =
            plan.publication.changes.iter().filter(|c| !c.path.ends_with(".apk")).map(|c| (c.path.as_str(), c.sha256.as_deref().unwrap())).collect();
        assert_eq!(digests, GOLDEN);
        let again = super::plan(&input).unwrap();
        assert_eq!(again.publication, plan.publication);
    }

    const GOLDEN: [(&str, &str); 3] = [
        ("v3.20/main/aarch64/APKINDEX.tar.gz", "07c2dbf636ac7cd1d396ca4dd67735afc6ebd30991e1f48a9e0bed3381b8ae5f"),
        ("v3.20/main/x86_64/APKINDEX.tar.gz", "d412cdfbcf2327ddaba393cb588f4fca5e79b31308bc13a5268bac529e337db9"),
        ("keys/apk/test.rsa.pub", "f44f13ca2d5d941309cd1446284c3d04af6ca1d4980b912c32453fffd4276013"),
    ];

    #[test]
    fn only_what_changed_is_regenerated_and_gone_architectures_lose_their_directory() {
        let signer = index::Signer::from_pem(KEY).unwrap();
        let (cfg, members) = (cfg(), members());
        let dirty: BTreeSet<String> = ["x86_64".to_string()].into();
        let existing: BTreeMap<String, String> = [
            ("v3.20/main/aarch64/APKINDEX.tar.gz", "a"),
            ("v3.20/main/x86_64/APKINDEX.tar.gz", "b"),
            ("v3.20/main/x86_64/gone-1-r0.apk", "c"),
            ("v3.20/main/x86_64/abc-2.1-r3.apk", members[3].sha256.as_str()),
            ("v3.20/main/armv7/APKINDEX.tar.gz", "d"),
        ]
        .into_iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
        let input = Input { branch: "v3.20", repository: "main", cfg: &cfg, members: &members, dirty: &dirty, existing: &existing, full: false,
                            signing: Signing::Server(&signer), key_name: "test.rsa.pub" };
        let plan = plan(&input).unwrap();
        assert_eq!(plan.regenerated, ["x86_64"]);
        let changes: Vec<(&str, bool)> = plan.publication.changes.iter().map(|c| (c.path.as_str(), c.sha256.is_some())).collect();
        assert_eq!(changes, [
            ("v3.20/main/x86_64/hello-1.0-r0.apk", true),
            ("v3.20/main/x86_64/hello-doc-1.0-r0.apk", true),
            ("v3.20/main/x86_64/gone-1-r0.apk", false),
            ("v3.20/main/x86_64/APKINDEX.tar.gz", true),
            ("v3.20/main/armv7/APKINDEX.tar.gz", false),
            ("keys/apk/test.rsa.pub", true),
        ]);
    }

    #[test]
    fn client_signing_leaves_unsigned_streams_pending_and_noarch_alone_is_refused() {
        let signer = index::Signer::from_pem(KEY).unwrap();
        let public = signer.public_key().clone();
        let (cfg, members, none) = (cfg(), members(), BTreeSet::new());
        let existing: BTreeMap<String, String> = [("v3.20/main/x86_64/APKINDEX.tar.gz".to_string(), "old".to_string())].into();
        let input = Input { branch: "v3.20", repository: "main", cfg: &cfg, members: &members, dirty: &none, existing: &existing, full: true,
                            signing: Signing::Client(&public), key_name: "test.rsa.pub" };
        let plan = plan(&input).unwrap();
        assert_eq!(plan.pending.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(), ["aarch64", "x86_64"]);
        assert!(plan.publication.changes.iter().any(|c| c.path == "v3.20/main/x86_64/APKINDEX.tar.gz" && c.sha256.is_none()));
        for (_, sha) in &plan.pending {
            let stream = &plan.publication.blobs.iter().find(|b| &b.sha256 == sha).unwrap().data;
            assert!(!String::from_utf8_lossy(stream).contains(".SIGN."), "unsigned");
        }
        let noarch = vec![member("doc", "1-r0", "noarch")];
        let bare: repo::ApkConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let input = Input { cfg: &bare, members: &noarch, ..input };
        assert!(plan_err(&input).contains("only noarch"));
    }

    fn plan_err(input: &Input<'_>) -> String {
        super::plan(input).err().unwrap()
    }
}
