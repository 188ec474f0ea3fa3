//! A Debian distribution's publication, planned without I/O: the
//! `Packages` indexes (plain, gzip, xz) of the component/architecture pairs to
//! regenerate, each also under `by-hash/SHA256/`, a ledger that keeps the
//! by-hash files of this and `by_hash_keep` earlier generations, the `Release`,
//! and either the server's `InRelease` and `Release.gpg` or a wait for the
//! user's; the archive key, binary and armored.

use super::{index, repo, sign};
use crate::formats::Publication;
use pgp::composed::SignedPublicKey;
use std::collections::{BTreeMap, BTreeSet};

/// Where the archive key is served, binary (for `signed-by`) and armored.
pub const KEYRING_GPG: &str = "keys/wharf-archive-keyring.gpg";
pub const KEYRING_ASC: &str = "keys/wharf-archive-keyring.asc";
const TEXT: &str = "text/plain; charset=utf-8";

/// A package of the distribution, as its member record keeps it.
#[derive(Debug, Clone)]
pub struct Member {
    pub component: String,
    pub sha256: String,
    pub size: u64,
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// The control stanza as the package has it.
    pub control: String,
    /// Its path in the pool (`Filename:`).
    pub pool: String,
}

/// Who signs the Release (the user uploads InRelease and Release.gpg for the planned Release).
pub type Signing<'a> = crate::formats::Signing<'a, sign::Signer, SignedPublicKey>;

pub struct Input<'a> {
    pub dist: &'a str,
    pub site_name: &'a str,
    pub cfg: &'a repo::DistConfig,
    pub members: &'a [Member],
    /// (component, architecture) pairs whose packages changed.
    pub dirty: &'a [(String, String)],
    /// The draft's paths under `dists/<dist>/`, with sha256 and size.
    pub existing: &'a BTreeMap<String, (String, u64)>,
    /// The by-hash paths of earlier generations, newest first.
    pub previous_ledger: &'a [Vec<String>],
    pub now_secs: u64,
    /// Regenerate every pair.
    pub full: bool,
    pub signing: Signing<'a>,
}

#[derive(Debug)]
pub struct Plan {
    pub publication: Publication,
    pub regenerated: Vec<(String, String)>,
    pub ledger: Vec<Vec<String>>,
    pub by_hash_pruned: usize,
    pub release_sha256: String,
    /// The Release text waits for the user's signatures.
    pub waits_for_signatures: bool,
}

pub fn plan(input: &Input<'_>) -> Result<Plan, sign::SignError> {
    let (d, cfg, existing) = (input.dist, input.cfg, input.existing);
    let mut present: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in input.members {
        present.entry(m.component.clone()).or_default().insert(m.architecture.clone());
    }
    let (components, archs) = repo::layout(cfg, &present);
    let dists_prefix = format!("dists/{d}/");
    let regen: BTreeSet<(String, String)> = if input.full {
        components.iter().flat_map(|c| archs.iter().map(move |a| (c.clone(), a.clone()))).collect()
    } else {
        repo::to_regenerate(&components, &archs, input.dirty, |c, a| {
            index::packages_paths(c, a).iter().all(|p| existing.contains_key(&format!("{dists_prefix}{p}")))
        })
    };

    let mut p = Publication::default();
    let mut files: Vec<index::IndexFile> = Vec::new();
    for c in &components {
        for a in &archs {
            let paths = index::packages_paths(c, a);
            if regen.contains(&(c.clone(), a.clone())) {
                let mut stanzas: Vec<index::Stanza> = input
                    .members
                    .iter()
                    .filter(|m| &m.component == c && (&m.architecture == a || m.architecture == "all"))
                    .map(|m| index::Stanza {
                        package: &m.package,
                        version: &m.version,
                        architecture: &m.architecture,
                        control: &m.control,
                        filename: &m.pool,
                        size: m.size,
                        sha256: &m.sha256,
                    })
                    .collect();
                let plain = index::packages(&mut stanzas).into_bytes();
                let gz = index::gzip(&plain);
                let xz = index::xz(&plain);
                for ((data, ct), path) in [(plain, TEXT), (gz, "application/gzip"), (xz, "application/x-xz")].into_iter().zip(paths.iter()) {
                    let file = index::IndexFile::of(path.clone(), &data);
                    let sha = p.write(format!("{dists_prefix}{path}"), data, ct);
                    p.link(format!("{dists_prefix}{}", index::by_hash_path(path, &sha)), &sha, ct);
                    files.push(file);
                }
            } else {
                for path in &paths {
                    let (sha256, size) = &existing[&format!("{dists_prefix}{path}")];
                    files.push(index::IndexFile { path: path.clone(), size: *size, sha256: sha256.clone() });
                }
            }
        }
    }

    // Indexes of a component or architecture the dist no longer has go away
    // (their by-hash files age out of the ledger like any other).
    let listed: BTreeSet<String> =
        components.iter().flat_map(|c| archs.iter().flat_map(move |a| index::packages_paths(c, a))).map(|p| format!("{dists_prefix}{p}")).collect();
    for path in existing.keys() {
        if index::is_packages_path(&path[dists_prefix.len()..]) && !listed.contains(path) {
            p.remove(path.clone());
        }
    }

    // by-hash: keep the files of this generation and `keep` earlier ones.
    let current: Vec<String> = files.iter().map(|f| format!("{dists_prefix}{}", index::by_hash_path(&f.path, &f.sha256))).collect();
    let ledger = index::roll_by_hash(input.previous_ledger, current, cfg.by_hash_keep());
    let kept: BTreeSet<&String> = ledger.iter().flatten().collect();
    let mut pruned = 0;
    for path in existing.keys() {
        if path.contains("/by-hash/") && !kept.contains(path) && !p.touches(path) {
            p.remove(path.clone());
            pruned += 1;
        }
    }

    let now = input.now_secs;
    let meta = index::ReleaseMeta {
        origin: cfg.origin.clone().unwrap_or_else(|| input.site_name.to_string()),
        label: cfg.label.clone().or_else(|| cfg.origin.clone()).unwrap_or_else(|| input.site_name.to_string()),
        suite: cfg.suite.clone().unwrap_or_else(|| d.to_string()),
        codename: cfg.codename.clone().unwrap_or_else(|| d.to_string()),
        description: cfg.description.clone(),
        date_secs: now,
        valid_until_secs: cfg.valid_until_days.map(|days| now + days as u64 * 86400),
        architectures: archs.clone(),
        components: components.clone(),
    };
    let release_text = index::release(&meta, &files);
    let release_sha256 = p.write(format!("{dists_prefix}Release"), release_text.clone().into_bytes(), TEXT);

    let public = match input.signing {
        Signing::Server(signer) => {
            let inrelease = signer.clearsign(&release_text)?;
            let detached = signer.detach_sign(release_text.as_bytes())?;
            p.write(format!("{dists_prefix}InRelease"), inrelease.into_bytes(), TEXT);
            p.write(format!("{dists_prefix}Release.gpg"), detached.into_bytes(), "application/pgp-signature");
            signer.public_key()
        }
        Signing::Client(key) => {
            // Signatures of an earlier Release no longer fit: they come back with the user's upload.
            for stale in ["InRelease", "Release.gpg"] {
                let path = format!("{dists_prefix}{stale}");
                if existing.contains_key(&path) {
                    p.remove(path);
                }
            }
            key.clone()
        }
    };
    let (binary, armored) = sign::export_public(&public)?;
    p.write(KEYRING_GPG, binary, "application/pgp-keys");
    p.write(KEYRING_ASC, armored.into_bytes(), "application/pgp-keys");
    Ok(Plan {
        publication: p,
        regenerated: regen.into_iter().collect(),
        ledger,
        by_hash_pruned: pruned,
        release_sha256,
        waits_for_signatures: matches!(input.signing, Signing::Client(_)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = include_str!("../../../tests/fixtures/deb-test-key.asc");
    /// 2026-01-02 03:04:05 UTC.
    const NOW: u64 = 1_767_323_045;

    fn member(package: &str, version: &str, arch: &str) -> Member {
        let pool = format!("pool/main/{}/{package}/{package}_{version}_{arch}.deb", &package[..1]);
        Member {
            component: "main".into(),
            sha256: crate::auth::sha256_hex(pool.as_bytes()),
            size: 1000 + package.len() as u64,
            package: package.into(),
            version: version.into(),
            architecture: arch.into(),
            control: format!("Package: {package}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: T <t@example.com>\nDescription: {package}\n"),
            pool,
        }
    }

    fn members() -> Vec<Member> {
        vec![member("zed", "1.0", "amd64"), member("alpha", "2.0-1", "amd64"), member("docs", "1", "all"), member("alpha", "2.0-1", "arm64")]
    }

    fn cfg(json: serde_json::Value) -> repo::DistConfig {
        serde_json::from_value(json).unwrap()
    }

    fn blob<'a>(p: &'a Publication, path: &str) -> &'a [u8] {
        let sha = p.changes.iter().find(|c| c.path == path).and_then(|c| c.sha256.clone()).unwrap();
        &p.blobs.iter().find(|b| b.sha256 == sha).unwrap().data
    }

    #[test]
    fn packages_and_release_are_planned_byte_for_byte() {
        let signer = sign::Signer::from_armored(KEY, None).unwrap();
        let key = signer.public_key();
        let (cfg, members, existing) = (cfg(serde_json::json!({"origin": "Test", "signing": "client"})), members(), BTreeMap::new());
        let input = Input { dist: "stable", site_name: "site", cfg: &cfg, members: &members, dirty: &[], existing: &existing, previous_ledger: &[],
                            now_secs: NOW, full: true, signing: Signing::Client(&key) };
        let plan = plan(&input).unwrap();
        let p = &plan.publication;
        assert_eq!(plan.regenerated, [("main".to_string(), "amd64".to_string()), ("main".to_string(), "arm64".to_string())]);
        assert!(plan.waits_for_signatures);
        let amd64 = String::from_utf8(blob(p, "dists/stable/main/binary-amd64/Packages").to_vec()).unwrap();
        let m = &members;
        let stanza = |m: &Member| format!("{}Filename: {}\nSize: {}\nSHA256: {}\n", m.control, m.pool, m.size, m.sha256);
        assert_eq!(amd64, format!("{}\n{}\n{}", stanza(&m[1]), stanza(&m[2]), stanza(&m[0])));
        let release = String::from_utf8(blob(p, "dists/stable/Release").to_vec()).unwrap();
        let head = "Origin: Test\nLabel: Test\nSuite: stable\nCodename: stable\nDate: Fri, 02 Jan 2026 03:04:05 UTC\n\
                    Architectures: amd64 arm64\nComponents: main\nAcquire-By-Hash: yes\nSHA256:\n";
        assert!(release.starts_with(head), "{release}");
        let listed: Vec<&str> = release[head.len()..].lines().map(|l| l.split_whitespace().last().unwrap()).collect();
        assert_eq!(listed, [
            "main/binary-amd64/Packages", "main/binary-amd64/Packages.gz", "main/binary-amd64/Packages.xz",
            "main/binary-arm64/Packages", "main/binary-arm64/Packages.gz", "main/binary-arm64/Packages.xz",
        ]);
        // Every listed index is written, under its name and by hash, with the digest the Release gives.
        for line in release[head.len()..].lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let data = blob(p, &format!("dists/stable/{}", f[2]));
            assert_eq!((crate::auth::sha256_hex(data).as_str(), data.len().to_string().as_str()), (f[0], f[1]));
            assert_eq!(blob(p, &format!("dists/stable/{}", index::by_hash_path(f[2], f[0]))), data);
        }
        assert_eq!(crate::auth::sha256_hex(release.as_bytes()), plan.release_sha256);
        // Golden: the Release (and so every index it lists) is exactly these bytes.
        assert_eq!(plan.release_sha256, GOLDEN_RELEASE);
        assert!(!p.touches("dists/stable/InRelease"));
        assert!(p.touches(KEYRING_GPG) && p.touches(KEYRING_ASC));
    }

    const GOLDEN_RELEASE: &str = "d83ce910cd0a44f38f8acda47ce40fc6b55704ced842b8b57eff83445712de0a";

    #[test]
    fn the_server_signs_what_it_plans() {
        let signer = sign::Signer::from_armored(KEY, None).unwrap();
        let (cfg, members, existing) = (cfg(serde_json::json!({})), members(), BTreeMap::new());
        let input = Input { dist: "stable", site_name: "site", cfg: &cfg, members: &members, dirty: &[], existing: &existing, previous_ledger: &[],
                            now_secs: NOW, full: true, signing: Signing::Server(&signer) };
        let plan = plan(&input).unwrap();
        let p = &plan.publication;
        let release = String::from_utf8(blob(p, "dists/stable/Release").to_vec()).unwrap();
        assert!(release.starts_with("Origin: site\nLabel: site\n"));
        let key = sign::read_public(blob(p, KEYRING_GPG)).unwrap();
        sign::verify_inrelease(&key, std::str::from_utf8(blob(p, "dists/stable/InRelease")).unwrap(), &release).unwrap();
        sign::verify_detached(&key, blob(p, "dists/stable/Release.gpg"), release.as_bytes()).unwrap();
        assert!(!plan.waits_for_signatures);
    }

    #[test]
    fn only_dirty_pairs_are_regenerated_and_by_hash_files_age_out() {
        let signer = sign::Signer::from_armored(KEY, None).unwrap();
        let (cfg, members) = (cfg(serde_json::json!({"by_hash_keep": 1})), members());
        let first = Input { dist: "stable", site_name: "site", cfg: &cfg, members: &members, dirty: &[], existing: &BTreeMap::new(),
                            previous_ledger: &[], now_secs: NOW, full: true, signing: Signing::Server(&signer) };
        let one = plan(&first).unwrap();
        let mut existing: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for c in one.publication.changes.iter().filter(|c| c.path.starts_with("dists/")) {
            let data = blob(&one.publication, &c.path);
            existing.insert(c.path.clone(), (crate::auth::sha256_hex(data), data.len() as u64));
        }
        existing.insert("dists/stable/contrib/binary-amd64/Packages".into(), ("x".into(), 1));
        // arm64 changed: only it is regenerated; amd64's indexes are listed as they are.
        let mut newer = members.clone();
        newer.push(member("beta", "1", "arm64"));
        let dirty = [("main".to_string(), "arm64".to_string())];
        let second = Input { members: &newer, dirty: &dirty, existing: &existing, previous_ledger: &one.ledger, now_secs: NOW + 60, full: false, ..first };
        let two = plan(&second).unwrap();
        assert_eq!(two.regenerated, [("main".to_string(), "arm64".to_string())]);
        let p = &two.publication;
        assert!(!p.touches("dists/stable/main/binary-amd64/Packages"));
        assert!(p.changes.iter().any(|c| c.path == "dists/stable/contrib/binary-amd64/Packages" && c.sha256.is_none()));
        let release = String::from_utf8(blob(p, "dists/stable/Release").to_vec()).unwrap();
        assert!(release.contains(&format!(" {} ", existing["dists/stable/main/binary-amd64/Packages"].0)));
        // With by_hash_keep 1, the first generation's arm64 by-hash files stay (one earlier generation kept)...
        assert_eq!(two.by_hash_pruned, 0);
        assert_eq!(two.ledger.len(), 2);
        // ...and go with the next one.
        let mut existing3 = existing.clone();
        for c in p.changes.iter().filter(|c| c.path.starts_with("dists/") && c.sha256.is_some()) {
            let data = blob(p, &c.path);
            existing3.insert(c.path.clone(), (crate::auth::sha256_hex(data), data.len() as u64));
        }
        let mut newest = newer.clone();
        newest.push(member("gamma", "1", "arm64"));
        let third = Input { members: &newest, existing: &existing3, previous_ledger: &two.ledger, now_secs: NOW + 120, ..second };
        let three = plan(&third).unwrap();
        assert_eq!(three.by_hash_pruned, 3, "the first generation's arm64 Packages, .gz and .xz by hash");
    }
}
