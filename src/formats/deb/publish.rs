//! A Debian distribution's publication, planned without I/O: the
//! `Packages` indexes (plain, gzip, xz) of the component/architecture pairs to
//! regenerate, each also under `by-hash/SHA256/`, a ledger that keeps the
//! by-hash files of this and `by_hash_keep` earlier generations, the `Release`,
//! and either the server's `InRelease` and `Release.gpg` or a wait for the
//! user's; the archive key, binary and armored.

use super::{index, repo, sign};
use crate::formats::pieces;
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

/// What a regenerated `Packages` index is made from.
#[derive(Debug, Clone)]
pub enum Source {
    /// All its members (its component's packages of its architecture and of `all`).
    Full(Vec<Member>),
    /// The earlier index, its layout, the runs of pieces the changed names
    /// fall in (see [`pieces::affected`]), and the members now within each
    /// run's bounds.
    Splice { layout: pieces::Layout, old: pieces::Files, runs: Vec<(usize, usize)>, fresh: Vec<Vec<Member>> },
}

pub struct Input<'a> {
    pub dist: &'a str,
    pub site_name: &'a str,
    pub cfg: &'a repo::DistConfig,
    /// The architectures each component's members have.
    pub present: &'a BTreeMap<String, BTreeSet<String>>,
    /// What each regenerated (component, architecture) is made from (see [`regeneration`]).
    pub sources: &'a BTreeMap<(String, String), Source>,
    /// The draft's paths under `dists/<dist>/`, with sha256 and size.
    pub existing: &'a BTreeMap<String, (String, u64)>,
    /// The sha256 and size of the plain `Packages` indexes listed in the
    /// Release but not served, by path (from their layouts).
    pub listed: &'a BTreeMap<String, (String, u64)>,
    /// The by-hash paths of earlier generations, newest first.
    pub previous_ledger: &'a [Vec<String>],
    pub now_secs: u64,
    pub signing: Signing<'a>,
}

#[derive(Debug)]
pub struct Plan {
    pub publication: Publication,
    pub regenerated: Vec<(String, String)>,
    /// Per regenerated index: its packages, the pieces rendered now and in all.
    pub counts: Vec<(String, String, u32, usize, usize)>,
    /// The layouts of the new index files: (key, plain sha256, xz sha256,
    /// layout), the key being the sha256 of the gz form (else the xz form,
    /// else the plain one), a form not served ''. See [`layout_key`].
    pub layouts: Vec<(String, String, String, pieces::Layout)>,
    pub ledger: Vec<Vec<String>>,
    pub by_hash_pruned: usize,
    pub release_sha256: String,
    /// The Release text waits for the user's signatures.
    pub waits_for_signatures: bool,
}

/// What a dist's publication records for the next one: the by-hash paths
/// of each generation kept (newest first), and the architectures each
/// component's members had, so the next publication reads only what its
/// changes can have changed. Stored as JSON; a bare list is the by-hash
/// ledger of a publication made before `present` was kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    pub by_hash: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<BTreeMap<String, BTreeSet<String>>>,
}

impl Ledger {
    pub fn parse(text: &str) -> Result<Ledger, String> {
        if let Ok(by_hash) = serde_json::from_str::<Vec<Vec<String>>>(text) {
            return Ok(Ledger { by_hash, present: None });
        }
        serde_json::from_str(text).map_err(|e| format!("stored ledger: {e}"))
    }
}

/// The architectures each component has after changes to `dirty` parts,
/// from what they were and whether each dirty (component, architecture)
/// still has members.
pub fn present_after(
    before: &BTreeMap<String, BTreeSet<String>>,
    dirty: &[((String, String), bool)],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = before.clone();
    for ((c, a), has) in dirty {
        if *has {
            out.entry(c.clone()).or_default().insert(a.clone());
        } else if let Some(archs) = out.get_mut(c) {
            archs.remove(a);
            if archs.is_empty() {
                out.remove(c);
            }
        }
    }
    out
}

/// What a layout is recorded under: the sha256 of the index's gz form as
/// served, else its xz form, else its plain form; with the plain index's
/// sha256 (served or not) and the xz form's ('' when not served).
pub fn layout_key(plain: &str, gz: Option<&str>, xz: Option<&str>) -> (String, String, String) {
    let key = gz.or(xz).unwrap_or(plain);
    (key.to_string(), plain.to_string(), xz.unwrap_or_default().to_string())
}

/// The dist's components and architectures, and the (component,
/// architecture) indexes to regenerate: the dirty ones (a dirty `all` means
/// every architecture of its component), those not served in the forms the
/// settings ask for (new, or the forms changed), or all.
pub fn regeneration(
    dist: &str,
    cfg: &repo::DistConfig,
    present: &BTreeMap<String, BTreeSet<String>>,
    dirty: &[(String, String)],
    existing: &BTreeMap<String, (String, u64)>,
    listed: &BTreeMap<String, (String, u64)>,
    full: bool,
) -> (Vec<String>, Vec<String>, BTreeSet<(String, String)>) {
    let (components, archs) = repo::layout(cfg, present);
    let regen = if full {
        components.iter().flat_map(|c| archs.iter().map(move |a| (c.clone(), a.clone()))).collect()
    } else {
        let forms = cfg.forms();
        repo::to_regenerate(&components, &archs, dirty, |c, a| {
            let served = index::served_paths(c, a, forms);
            let [plain, ..] = index::packages_paths(c, a);
            index::packages_paths(c, a).iter().all(|p| existing.contains_key(&format!("dists/{dist}/{p}")) == served.contains(p))
                && (forms.plain || listed.contains_key(&format!("dists/{dist}/{plain}")))
        })
    };
    (components, archs, regen)
}

/// The pieces of members, sorted as a `Packages` file lists them.
fn render(members: &[Member], forms: pieces::Forms) -> Result<Vec<pieces::Rendered>, String> {
    let mut stanzas: Vec<index::Stanza> = members
        .iter()
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
    index::sort(&mut stanzas);
    let texts: Vec<String> = stanzas.iter().map(index::stanza_text).collect();
    let records: Vec<pieces::Record<'_>> = stanzas.iter().zip(&texts).map(|(s, t)| pieces::Record { name: s.package, text: t.as_bytes() }).collect();
    pieces::render(&records, forms)
}

/// A regenerated index's three files, their layout, and how many pieces were rendered.
fn index_files(source: &Source, forms: pieces::Forms) -> Result<(pieces::Files, pieces::Layout, usize), String> {
    match source {
        Source::Full(members) => {
            let rendered = render(members, forms)?;
            let sources: Vec<pieces::Source<'_>> = rendered.iter().map(pieces::Source::New).collect();
            let (files, layout) = pieces::assemble(&sources, &pieces::Layout::default(), &pieces::Files::default(), forms)?;
            Ok((files, layout, rendered.len()))
        }
        Source::Splice { layout, old, runs, fresh } => {
            if !pieces::fits(layout, old, forms) || runs.len() != fresh.len() {
                return Err("the earlier index does not fit its layout".into());
            }
            let rendered: Vec<Vec<pieces::Rendered>> = fresh.iter().map(|m| render(m, forms)).collect::<Result<_, _>>()?;
            let sources = pieces::splice(layout, runs, &rendered);
            let (files, new_layout) = pieces::assemble(&sources, layout, old, forms)?;
            Ok((files, new_layout, rendered.iter().map(Vec::len).sum()))
        }
    }
}

pub fn plan(input: &Input<'_>) -> Result<Plan, sign::SignError> {
    let (d, cfg, existing) = (input.dist, input.cfg, input.existing);
    let dists_prefix = format!("dists/{d}/");
    let (components, archs) = repo::layout(cfg, input.present);
    let forms = cfg.forms();

    let mut p = Publication::default();
    let mut files: Vec<index::IndexFile> = Vec::new();
    let (mut regenerated, mut counts, mut layouts) = (Vec::new(), Vec::new(), Vec::new());
    for c in &components {
        for a in &archs {
            if let Some(source) = input.sources.get(&(c.clone(), a.clone())) {
                let (built, layout, rendered) = index_files(source, forms).map_err(sign::SignError)?;
                let mut shas: [Option<String>; 3] = Default::default();
                let all_forms = [(forms.plain, built.plain, TEXT), (forms.gz, built.gz, "application/gzip"), (forms.xz, built.xz, "application/x-xz")];
                for (i, (path, (on, data, ct))) in index::packages_paths(c, a).into_iter().zip(all_forms).enumerate() {
                    let full_path = format!("{dists_prefix}{path}");
                    if !on {
                        if existing.contains_key(&full_path) {
                            p.remove(full_path);
                        }
                        continue;
                    }
                    let file = index::IndexFile::of(path.clone(), &data);
                    let sha = p.write(full_path, data, ct);
                    p.link(format!("{dists_prefix}{}", index::by_hash_path(&path, &sha)), &sha, ct);
                    files.push(file);
                    shas[i] = Some(sha);
                }
                // Listed even when not served: apt checks what it decompresses against it.
                let (plain_sha, plain_size) = pieces::plain_digest(&layout).ok_or_else(|| sign::SignError("a layout without its plain digest".into()))?;
                if !forms.plain {
                    files.push(index::IndexFile { path: index::packages_paths(c, a)[0].clone(), size: plain_size, sha256: plain_sha.clone() });
                }
                counts.push((c.clone(), a.clone(), layout.pieces.iter().map(|x| x.count).sum(), rendered, layout.pieces.len()));
                let (key, plain, xz) = layout_key(&plain_sha, shas[1].as_deref(), shas[2].as_deref());
                layouts.push((key, plain, xz, layout));
                regenerated.push((c.clone(), a.clone()));
            } else {
                let served = index::served_paths(c, a, forms);
                for (i, path) in index::packages_paths(c, a).iter().enumerate() {
                    let full_path = format!("{dists_prefix}{path}");
                    let found = if served.contains(path) { existing.get(&full_path) } else if i == 0 { input.listed.get(&full_path) } else { continue };
                    let Some((sha256, size)) = found else {
                        return Err(sign::SignError(format!("{c}/binary-{a} is neither regenerated nor published")));
                    };
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
        regenerated,
        counts,
        layouts,
        ledger,
        by_hash_pruned: pruned,
        release_sha256,
        waits_for_signatures: matches!(input.signing, Signing::Client(_)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sha256_hex;

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

    /// What the glue reads for a plan: the present pairs, and every pair to
    /// regenerate made from all its members.
    fn full_sources(
        cfg: &repo::DistConfig,
        members: &[Member],
        dirty: &[(String, String)],
        existing: &BTreeMap<String, (String, u64)>,
        full: bool,
    ) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<(String, String), Source>) {
        let mut present: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in members {
            present.entry(m.component.clone()).or_default().insert(m.architecture.clone());
        }
        let (_, _, regen) = regeneration("stable", cfg, &present, dirty, existing, &BTreeMap::new(), full);
        let sources = regen
            .into_iter()
            .map(|(c, a)| {
                let of: Vec<Member> = members.iter().filter(|m| m.component == c && (m.architecture == a || m.architecture == "all")).cloned().collect();
                ((c, a), Source::Full(of))
            })
            .collect();
        (present, sources)
    }

    /// The plain indexes a plan listed without serving them, as the glue reads them from their layouts.
    fn listed_of(plan: &Plan) -> BTreeMap<String, (String, u64)> {
        plan.regenerated
            .iter()
            .zip(&plan.layouts)
            .map(|((c, a), (_, _, _, layout))| (format!("dists/stable/{c}/binary-{a}/Packages"), pieces::plain_digest(layout).unwrap()))
            .collect()
    }

    fn blob<'a>(p: &'a Publication, path: &str) -> &'a [u8] {
        let sha = p.changes.iter().find(|c| c.path == path).and_then(|c| c.sha256.clone()).unwrap();
        &p.blobs.iter().find(|b| b.sha256 == sha).unwrap().data
    }

    #[test]
    fn packages_and_release_are_planned_byte_for_byte() {
        let signer = sign::Signer::from_armored(KEY, None).unwrap();
        let key = signer.public_key();
        let (cfg, members, existing) = (cfg(serde_json::json!({"origin": "Test", "signing": "client", "compressions": ["none", "gz", "xz"]})), members(), BTreeMap::new());
        let (present, sources) = full_sources(&cfg, &members, &[], &existing, true);
        let input = Input { dist: "stable", site_name: "site", cfg: &cfg, present: &present, sources: &sources, existing: &existing, listed: &BTreeMap::new(), previous_ledger: &[],
                            now_secs: NOW, signing: Signing::Client(&key) };
        let plan = plan(&input).unwrap();
        let p = &plan.publication;
        assert_eq!(plan.regenerated, [("main".to_string(), "amd64".to_string()), ("main".to_string(), "arm64".to_string())]);
        assert!(plan.waits_for_signatures);
        let amd64 = String::from_utf8(blob(p, "dists/stable/main/binary-amd64/Packages").to_vec()).unwrap();
        let m = &members;
        let stanza = |m: &Member| format!("{}Filename: {}\nSize: {}\nSHA256: {}\n", m.control, m.pool, m.size, m.sha256);
        assert_eq!(amd64, format!("{}\n{}\n{}\n", stanza(&m[1]), stanza(&m[2]), stanza(&m[0])));
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

    const GOLDEN_RELEASE: &str = "fad91145dc67449a75a42169d2a21daa2eca97e31ca6e880171a650745c62314";

    #[test]
    fn the_server_signs_what_it_plans() {
        let signer = sign::Signer::from_armored(KEY, None).unwrap();
        let (cfg, members, existing) = (cfg(serde_json::json!({})), members(), BTreeMap::new());
        let (present, sources) = full_sources(&cfg, &members, &[], &existing, true);
        let input = Input { dist: "stable", site_name: "site", cfg: &cfg, present: &present, sources: &sources, existing: &existing, listed: &BTreeMap::new(), previous_ledger: &[],
                            now_secs: NOW, signing: Signing::Server(&signer) };
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
        let none = BTreeMap::new();
        let (present, sources) = full_sources(&cfg, &members, &[], &none, true);
        let first = Input { dist: "stable", site_name: "site", cfg: &cfg, present: &present, sources: &sources, existing: &none, listed: &none,
                            previous_ledger: &[], now_secs: NOW, signing: Signing::Server(&signer) };
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
        let listed = listed_of(&one);
        let mut present2: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in &newer {
            present2.entry(m.component.clone()).or_default().insert(m.architecture.clone());
        }
        let (_, _, regen) = regeneration("stable", &cfg, &present2, &dirty, &existing, &listed, false);
        let sources2: BTreeMap<(String, String), Source> = regen
            .into_iter()
            .map(|(c, a)| {
                let of: Vec<Member> = newer.iter().filter(|m| m.component == c && (m.architecture == a || m.architecture == "all")).cloned().collect();
                ((c, a), Source::Full(of))
            })
            .collect();
        let second = Input { present: &present2, sources: &sources2, existing: &existing, listed: &listed, previous_ledger: &one.ledger, now_secs: NOW + 60, ..first };
        let two = plan(&second).unwrap();
        assert_eq!(two.regenerated, [("main".to_string(), "arm64".to_string())]);
        let p = &two.publication;
        assert!(!p.touches("dists/stable/main/binary-amd64/Packages.gz"));
        assert!(p.changes.iter().any(|c| c.path == "dists/stable/contrib/binary-amd64/Packages" && c.sha256.is_none()));
        let release = String::from_utf8(blob(p, "dists/stable/Release").to_vec()).unwrap();
        assert!(release.contains(&format!(" {} ", existing["dists/stable/main/binary-amd64/Packages.gz"].0)));
        assert!(release.contains(&format!(" {} ", listed["dists/stable/main/binary-amd64/Packages"].0)), "the unserved plain index is listed");
        assert!(!p.touches("dists/stable/main/binary-amd64/Packages") && !existing.contains_key("dists/stable/main/binary-amd64/Packages"),
                "not served uncompressed by default");
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
        let (present3, sources3) = full_sources(&cfg, &newest, &dirty, &existing3, false);
        let third = Input { present: &present3, sources: &sources3, existing: &existing3, previous_ledger: &two.ledger, now_secs: NOW + 120, ..second };
        let three = plan(&third).unwrap();
        assert_eq!(three.by_hash_pruned, 2, "the first generation's arm64 Packages.gz and .xz by hash");
    }

    #[test]
    fn an_index_spliced_around_a_change_is_the_full_regeneration_of_the_same_packages() {
        let signer = sign::Signer::from_armored(KEY, None).unwrap();
        let cfg = cfg(serde_json::json!({}));
        let many: Vec<Member> = (0..1500).map(|i| member(&format!("pkg{i:04}"), "1.0", if i % 7 == 0 { "all" } else { "amd64" })).collect();
        let none = BTreeMap::new();
        let (present, sources) = full_sources(&cfg, &many, &[], &none, true);
        let first = plan(&Input { dist: "stable", site_name: "site", cfg: &cfg, present: &present, sources: &sources, existing: &none, listed: &none,
                                  previous_ledger: &[], now_secs: NOW, signing: Signing::Server(&signer) }).unwrap();
        let (gz, plain, xz, layout) = first.layouts[0].clone();
        let old = pieces::Files { plain: vec![],
                                  gz: blob(&first.publication, "dists/stable/main/binary-amd64/Packages.gz").to_vec(),
                                  xz: blob(&first.publication, "dists/stable/main/binary-amd64/Packages.xz").to_vec() };
        assert_eq!([gz, xz], [sha256_hex(&old.gz), sha256_hex(&old.xz)]);
        assert_eq!(plain, pieces::plain_digest(&layout).unwrap().0);
        // Add one (all), remove one, replace one.
        let mut now: Vec<Member> = many.iter().filter(|m| m.package != "pkg0300").cloned().collect();
        now.push(member("pkg0700b", "2.0", "all"));
        now.iter_mut().find(|m| m.package == "pkg1200").unwrap().size += 1;
        let changed: BTreeSet<String> = ["pkg0300", "pkg0700b", "pkg1200"].map(String::from).into();
        let runs = pieces::affected(&layout, &changed);
        let fresh: Vec<Vec<Member>> = runs
            .iter()
            .map(|&run| {
                let (lo, hi) = pieces::bounds(&layout, run);
                now.iter().filter(|m| lo.map_or(true, |lo| m.package.as_str() > lo) && hi.map_or(true, |hi| m.package.as_str() <= hi)).cloned().collect()
            })
            .collect();
        let spliced: BTreeMap<(String, String), Source> =
            [(("main".to_string(), "amd64".to_string()), Source::Splice { layout: layout.clone(), old, runs, fresh })].into();
        let base = Input { dist: "stable", site_name: "site", cfg: &cfg, present: &present, sources: &spliced, existing: &none, listed: &none,
                           previous_ledger: &[], now_secs: NOW + 60, signing: Signing::Server(&signer) };
        let by_splice = plan(&base).unwrap();
        let (_, whole) = full_sources(&cfg, &now, &[], &none, true);
        let by_full = plan(&Input { sources: &whole, ..base }).unwrap();
        assert_eq!(by_splice.release_sha256, by_full.release_sha256, "the same Release, so the same index files");
        assert_eq!(by_splice.layouts, by_full.layouts);
        let (_, _, _, rendered, total) = by_splice.counts[0].clone();
        assert!(rendered <= 6 && total > 15, "rendered {rendered} of {total} pieces");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(blob(&by_splice.publication, "dists/stable/main/binary-amd64/Packages.gz")), &mut text).unwrap();
        assert!(text.contains("Package: pkg0700b\n") && !text.contains("Package: pkg0300\n"));
    }
}
