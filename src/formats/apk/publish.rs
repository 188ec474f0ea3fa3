//! An APK repository's publication, planned without I/O: for each
//! architecture to regenerate, its package files (noarch ones in every
//! architecture) and an `APKINDEX.tar.gz`, signed by the server or left
//! unsigned for the user's signature; the public key under `keys/apk/`.

use super::{index, package, repo};
use crate::formats::pieces;
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

/// What a regenerated architecture's index is made from.
#[derive(Debug, Clone)]
pub enum Source {
    /// All its members (its architecture's packages and the noarch ones).
    Full(Vec<Member>),
    /// The served index file (server-signed), its layout, the runs of
    /// pieces the changed names fall in, and the members now within each
    /// run's bounds.
    Splice { layout: pieces::Layout, old: Vec<u8>, runs: Vec<(usize, usize)>, fresh: Vec<Vec<Member>> },
}

pub struct Input<'a> {
    pub branch: &'a str,
    pub repository: &'a str,
    pub cfg: &'a repo::ApkConfig,
    /// The architectures the repository's members have (`noarch` among them).
    pub present: &'a BTreeSet<String>,
    /// What each regenerated architecture's index is made from (see [`regeneration`]).
    pub sources: &'a BTreeMap<String, Source>,
    /// The draft's paths under `<branch>/<repository>/` that publishing
    /// looks at, with their sha256: every index file, every path of an
    /// architecture regenerated whole or gone, and those of
    /// [`files_to_check`] for a spliced one.
    pub existing: &'a BTreeMap<String, String>,
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
    /// Per regenerated architecture: its packages, the pieces rendered now and in all.
    pub counts: Vec<(String, u32, usize, usize)>,
    /// The layouts of the new (server-signed) index files, by their sha256.
    pub layouts: Vec<(String, pieces::Layout)>,
}

/// The forms an APKINDEX is made in: one gzip stream, no digest of the text.
pub const FORMS: pieces::Forms = pieces::Forms { plain: false, gz: true, xz: false, digest: false };

/// The repository's architectures and those to regenerate: the dirty ones
/// (a dirty noarch: all), those without an index, or all.
pub fn regeneration(
    branch: &str,
    repository: &str,
    cfg: &repo::ApkConfig,
    present: &BTreeSet<String>,
    dirty: &BTreeSet<String>,
    existing: &BTreeMap<String, String>,
    full: bool,
) -> Result<(Vec<String>, Vec<String>), String> {
    let archs = repo::architectures(cfg, present);
    if archs.is_empty() && !present.is_empty() {
        return Err(format!(
            "{branch}/{repository} has only noarch packages: name its architectures with PUT /sites/{{site}}/apk/settings {{\"architectures\": [...]}}"
        ));
    }
    let dir = format!("{branch}/{repository}/");
    let regen = if full { archs.clone() } else { repo::to_regenerate(&archs, dirty, |a| existing.contains_key(&format!("{dir}{a}/{INDEX}"))) };
    Ok((archs, regen))
}

/// The pieces of members, sorted as `apk index` lists them (name, version, record).
fn render(members: &[Member]) -> Result<Vec<pieces::Rendered>, String> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.version, &a.record).cmp(&(&b.name, &b.version, &b.record)));
    let texts: Vec<String> = sorted.iter().map(|m| format!("{}\n", m.record)).collect();
    let records: Vec<pieces::Record<'_>> = sorted.iter().zip(&texts).map(|(m, t)| pieces::Record { name: &m.name, text: t.as_bytes() }).collect();
    pieces::render(&records, FORMS)
}

/// The package files an index's records name (`P:` and `V:`), as paths in the architecture's directory.
fn files_of_records(text: &str, arch_dir: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for record in text.split("\n\n") {
        let field = |k: &str| record.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
        if let (Some(name), Some(version)) = (field("P:"), field("V:")) {
            out.insert(format!("{arch_dir}{}", package::filename(&name, &version)));
        }
    }
    out
}

/// The package files a splice may place or remove in an architecture's
/// directory: those of the members now in the changed runs, and those the
/// runs' old records name. (A full regeneration looks at the whole directory.)
pub fn files_to_check(source: &Source, arch_dir: &str) -> Result<BTreeSet<String>, String> {
    let Source::Splice { layout, old, runs, fresh } = source else { return Ok(BTreeSet::new()) };
    let old_files = pieces::Files { gz: old.clone(), ..pieces::Files::default() };
    let mut out: BTreeSet<String> = fresh.iter().flatten().map(|m| format!("{arch_dir}{}", package::filename(&m.name, &m.version))).collect();
    for &(first, last) in runs {
        for i in first..=last {
            let text = pieces::old_piece_text(layout, i, &old_files, FORMS)?;
            out.extend(files_of_records(&String::from_utf8_lossy(&text), arch_dir));
        }
    }
    Ok(out)
}

pub fn plan(input: &Input<'_>) -> Result<Plan, String> {
    let (b, r) = (input.branch, input.repository);
    let archs = repo::architectures(input.cfg, input.present);
    let dir = format!("{b}/{r}/");
    let existing = input.existing;
    let mut p = Publication::default();
    let (mut pending, mut counts, mut layouts, mut regenerated) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let description = input.cfg.description.clone().unwrap_or_else(|| format!("{b}/{r}"));
    for (a, source) in input.sources {
        let arch_dir = format!("{dir}{a}/");
        // The package files: those of the members now (all, or those of the
        // changed runs) against those there were (all, or those the runs'
        // old records name).
        let (now, before): (Vec<&Member>, BTreeSet<String>) = match source {
            Source::Full(members) => {
                (members.iter().collect(), existing.keys().filter(|p| p.starts_with(&arch_dir) && p.ends_with(".apk")).cloned().collect())
            }
            Source::Splice { fresh, .. } => (fresh.iter().flatten().collect(), files_to_check(source, &arch_dir)?),
        };
        let want: BTreeMap<String, &Member> = now.iter().map(|m| (format!("{arch_dir}{}", package::filename(&m.name, &m.version)), *m)).collect();
        for (path, m) in &want {
            if existing.get(path).map_or(true, |sha| sha != &m.sha256) {
                p.link(path.clone(), &m.sha256, APK_TYPE);
            }
        }
        for path in before {
            if !want.contains_key(&path) && existing.contains_key(&path) {
                p.remove(path);
            }
        }
        // The index: the tar's headers, the records in pieces, the tar's end.
        let (rendered, old_layout, old_files, sources_of): (Vec<Vec<pieces::Rendered>>, pieces::Layout, pieces::Files, Option<&Vec<(usize, usize)>>) =
            match source {
                Source::Full(members) => (vec![render(members)?], pieces::Layout::default(), pieces::Files::default(), None),
                Source::Splice { layout, old, runs, fresh } => {
                    let rendered = fresh.iter().map(|m| render(m)).collect::<Result<Vec<_>, _>>()?;
                    (rendered, layout.clone(), pieces::Files { gz: old.clone(), ..pieces::Files::default() }, Some(runs))
                }
            };
        let sources = match sources_of {
            None => rendered[0].iter().map(pieces::Source::New).collect(),
            Some(runs) => {
                if !pieces::fits(&old_layout, &old_files, FORMS) {
                    return Err(format!("the index of {a} does not fit its layout"));
                }
                pieces::splice(&old_layout, runs, &rendered)
            }
        };
        let text_len: u64 = sources
            .iter()
            .map(|s| match s {
                pieces::Source::New(r) => r.piece.plain,
                pieces::Source::Old(i) => old_layout.pieces[*i].plain,
            })
            .sum();
        let (before_text, after_text) = index::index_frame(&description, text_len, 0);
        let (files, mut layout) = pieces::assemble_framed(&sources, &old_layout, &old_files, FORMS, &before_text, &after_text)?;
        let stream = files.gz;
        counts.push((a.clone(), layout.pieces.iter().map(|x| x.count).sum(), rendered.iter().map(Vec::len).sum(), layout.pieces.len()));
        let index_path = format!("{arch_dir}{INDEX}");
        match input.signing {
            Signing::Server(signer) => {
                let mut file = index::signature_stream(input.key_name, &signer.sign(&stream), 0);
                layout.gz_start += file.len() as u64;
                file.extend_from_slice(&stream);
                layout.gz_len = file.len() as u64;
                let sha = p.write(index_path, file, "application/gzip");
                layouts.push((sha, layout));
            }
            Signing::Client(_) => {
                let sha = p.blob(stream);
                if existing.contains_key(&index_path) {
                    p.remove(index_path);
                }
                pending.push((a.clone(), sha));
            }
        }
        regenerated.push(a.clone());
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
    Ok(Plan { architectures: archs, regenerated, publication: p, pending, counts, layouts })
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
    /// The glue's part for a test: present architectures and every regenerated one made from all its members.
    fn full_sources(cfg: &repo::ApkConfig, members: &[Member], dirty: &BTreeSet<String>, existing: &BTreeMap<String, String>, full: bool)
        -> Result<(BTreeSet<String>, BTreeMap<String, Source>), String> {
        let present: BTreeSet<String> = members.iter().map(|m| m.arch.clone()).collect();
        let (_, regen) = regeneration("v3.20", "main", cfg, &present, dirty, existing, full)?;
        let sources = regen
            .into_iter()
            .map(|a| {
                let of: Vec<Member> = members.iter().filter(|m| m.arch == a || m.arch == repo::NOARCH).cloned().collect();
                (a, Source::Full(of))
            })
            .collect();
        Ok((present, sources))
    }

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
        let (present, sources) = full_sources(&cfg, &members, &none, &existing, false).unwrap();
        let input = Input { branch: "v3.20", repository: "main", cfg: &cfg, present: &present, sources: &sources, existing: &existing,
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
        // The index stream is the tar `apk index` writes (its bytes uncompressed): DESCRIPTION, APKINDEX, the end blocks.
        let mut streams = Vec::new();
        MultiGzDecoder::new(&file[..]).read_to_end(&mut streams).unwrap();
        let text = format!("{}\n{}\n{}\n", members[3].record, members[0].record, members[2].record);
        let mut tar = index::tar_file("DESCRIPTION", b"v3.20/main", 0);
        tar.extend(index::tar_file("APKINDEX", text.as_bytes(), 0));
        tar.extend([0u8; 1024]);
        assert!(streams.ends_with(&tar));
        let again = super::plan(&input).unwrap();
        assert_eq!(again.publication, plan.publication);
    }

    const GOLDEN: [(&str, &str); 3] = [
        ("v3.20/main/aarch64/APKINDEX.tar.gz", "255e9f7326d5038fc11fbb4c58e3e9f063348b85edb425349833f48c0786cd08"),
        ("v3.20/main/x86_64/APKINDEX.tar.gz", "0791ca3d60d6a6437e8d7de19df730b10dd7986fb975518b905f8951157dc55e"),
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
        let (present, sources) = full_sources(&cfg, &members, &dirty, &existing, false).unwrap();
        let input = Input { branch: "v3.20", repository: "main", cfg: &cfg, present: &present, sources: &sources, existing: &existing,
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
        let (present, sources) = full_sources(&cfg, &members, &none, &existing, true).unwrap();
        let input = Input { branch: "v3.20", repository: "main", cfg: &cfg, present: &present, sources: &sources, existing: &existing,
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
        let err = full_sources(&bare, &noarch, &none, &existing, true).unwrap_err();
        assert!(err.contains("only noarch"), "{err}");
    }


    #[test]
    fn an_index_spliced_around_a_change_is_the_full_regeneration_and_apk_reads_it() {
        let signer = index::Signer::from_pem(KEY).unwrap();
        let cfg = cfg();
        let many: Vec<Member> = (0..1200).map(|i| member(&format!("pkg{i:04}"), "1.0-r0", if i % 9 == 0 { "noarch" } else { "x86_64" })).collect();
        let none = BTreeSet::new();
        let empty = BTreeMap::new();
        let (present, sources) = full_sources(&cfg, &many, &none, &empty, true).unwrap();
        let first = plan(&Input { branch: "v3.20", repository: "main", cfg: &cfg, present: &present, sources: &sources, existing: &empty,
                                  signing: Signing::Server(&signer), key_name: "test.rsa.pub" }).unwrap();
        let x86 = first.layouts.iter().find(|(sha, _)| first.publication.changes.iter().any(|c| c.path == "v3.20/main/x86_64/APKINDEX.tar.gz" && c.sha256.as_ref() == Some(sha))).unwrap();
        let (old_sha, layout) = x86.clone();
        let old = first.publication.blobs.iter().find(|b| b.sha256 == old_sha).unwrap().data.clone();
        let mut existing: BTreeMap<String, String> = first.publication.changes.iter().filter_map(|c| Some((c.path.clone(), c.sha256.clone()?))).collect();
        existing.retain(|p, _| p.starts_with("v3.20/"));
        // Add one, remove one (its file goes), a new version of another.
        let mut now: Vec<Member> = many.iter().filter(|m| m.name != "pkg0301").cloned().collect();
        now.push(member("pkg0700b", "2.0-r0", "x86_64"));
        now.push(member("pkg1100", "1.1-r0", "x86_64"));
        let changed: BTreeSet<String> = ["pkg0301", "pkg0700b", "pkg1100"].map(String::from).into();
        let runs = pieces::affected(&layout, &changed);
        let fresh: Vec<Vec<Member>> = runs
            .iter()
            .map(|&run| {
                let (lo, hi) = pieces::bounds(&layout, run);
                now.iter()
                    .filter(|m| (m.arch == "x86_64" || m.arch == "noarch") && lo.map_or(true, |lo| m.name.as_str() > lo) && hi.map_or(true, |hi| m.name.as_str() <= hi))
                    .cloned()
                    .collect()
            })
            .collect();
        let spliced: BTreeMap<String, Source> = [("x86_64".to_string(), Source::Splice { layout: layout.clone(), old, runs, fresh })].into();
        let base = Input { branch: "v3.20", repository: "main", cfg: &cfg, present: &present, sources: &spliced, existing: &existing,
                           signing: Signing::Server(&signer), key_name: "test.rsa.pub" };
        let by_splice = plan(&base).unwrap();
        let whole: BTreeMap<String, Source> =
            [("x86_64".to_string(), Source::Full(now.iter().filter(|m| m.arch == "x86_64" || m.arch == "noarch").cloned().collect()))].into();
        let by_full = plan(&Input { sources: &whole, ..base }).unwrap();
        let index = |p: &Plan| p.publication.changes.iter().find(|c| c.path == "v3.20/main/x86_64/APKINDEX.tar.gz").and_then(|c| c.sha256.clone()).unwrap();
        assert_eq!(index(&by_splice), index(&by_full), "byte for byte a full regeneration");
        assert_eq!(by_splice.layouts, by_full.layouts);
        let (_, packages, rendered, total) = by_splice.counts[0].clone();
        assert_eq!(packages, 1200 + 2 - 1 - 0);
        assert!(rendered <= 6 && total > 10, "{rendered} of {total}");
        // The package files follow: the new ones placed, the removed one's file gone, the rest untouched.
        let paths: Vec<(&str, bool)> = by_splice.publication.changes.iter().filter(|c| c.path.ends_with(".apk")).map(|c| (c.path.as_str(), c.sha256.is_some())).collect();
        assert_eq!(paths, [("v3.20/main/x86_64/pkg0700b-2.0-r0.apk", true), ("v3.20/main/x86_64/pkg1100-1.1-r0.apk", true), ("v3.20/main/x86_64/pkg0301-1.0-r0.apk", false)]);
        // What apk reads: the records of the signed file.
        let file = &by_splice.publication.blobs.iter().find(|b| b.sha256 == index(&by_splice)).unwrap().data;
        let text = apkindex_of(file);
        assert!(text.contains("P:pkg0700b\n") && !text.contains("P:pkg0301\n") && text.contains("V:1.1-r0\n"));
    }
}
