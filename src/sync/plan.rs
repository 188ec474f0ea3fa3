//! What a run of the declared mirror does for one image repository, decided
//! without I/O from what the source and the site answered: which versions to
//! copy or skip, which children of a multi-platform index to copy, how an
//! index whose platforms are copied only in part is represented, and which
//! tags a `prune: true` entry drops.
//!
//! An index keeps its upstream bytes (and so its digest) when every platform
//! it lists is declared. When only some are, the site gets a new index that
//! lists the copied platforms only (in the upstream's order, with the
//! attestation manifests that describe them), annotated with the upstream
//! index's digest and the platforms left out: `docker pull` and `podman pull
//! --platform` of a copied platform work, one left out fails with "no image
//! for this platform" (not a missing manifest halfway through), and `skopeo
//! copy --all` copies exactly what the site holds.

use super::config::Platform;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The annotation naming the upstream index a partial copy was made from.
pub const SOURCE_DIGEST: &str = "io.wharf.mirror.source-digest";
/// The annotation listing the platforms a partial copy left out.
pub const LEFT_OUT: &str = "io.wharf.mirror.left-out-platforms";

/// A manifest an index lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// `sha256:<hex>`.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// None for entries without a platform, or with `unknown/unknown`
    /// (buildx's attestation manifests).
    pub platform: Option<Platform>,
    /// For an attestation manifest: the digest of the manifest it describes.
    pub describes: Option<String>,
}

/// What to do with an upstream index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPlan {
    /// The children to copy (platform manifests and their attestations).
    pub copy: Vec<Child>,
    /// Declared platforms the index does not list.
    pub missing: Vec<Platform>,
    /// Platforms the index lists that are not declared.
    pub left_out: Vec<Platform>,
    /// The index the site serves when it is not the upstream's (a partial
    /// copy): its bytes. None: the upstream's bytes stand.
    pub rewritten: Option<Vec<u8>>,
}

/// Whether a declared platform takes an index entry's: the same OS and
/// architecture, and the same variant when the declaration names one.
pub fn takes(declared: &Platform, entry: &Platform) -> bool {
    declared.os == entry.os && declared.architecture == entry.architecture && declared.variant.as_ref().map_or(true, |v| entry.variant.as_ref() == Some(v))
}

fn child(d: &Value) -> Result<Child, String> {
    let digest = d.get("digest").and_then(Value::as_str).ok_or("an entry without a digest")?;
    if !digest.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())) {
        return Err(format!("an entry's digest {digest:?} is not sha256"));
    }
    let media_type = d.get("mediaType").and_then(Value::as_str).ok_or("an entry without a mediaType")?;
    let size = d.get("size").and_then(Value::as_u64).ok_or("an entry without a size")?;
    let platform = d.get("platform").and_then(|p| {
        let os = p.get("os").and_then(Value::as_str)?;
        let architecture = p.get("architecture").and_then(Value::as_str)?;
        (os != "unknown" && architecture != "unknown").then(|| Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: p.get("variant").and_then(Value::as_str).map(String::from),
        })
    });
    let describes = d
        .get("annotations")
        .and_then(|a| a.get("vnd.docker.reference.digest"))
        .and_then(Value::as_str)
        .filter(|_| d.get("annotations").and_then(|a| a.get("vnd.docker.reference.type")).and_then(Value::as_str) == Some("attestation-manifest"))
        .map(String::from);
    Ok(Child { digest: digest.into(), media_type: media_type.into(), size, platform, describes })
}

/// Plans the copy of an upstream index (`body`, whose digest is
/// `source_digest`) for the `declared` platforms.
pub fn plan_index(body: &[u8], source_digest: &str, declared: &[Platform]) -> Result<IndexPlan, String> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| format!("the index is not JSON: {e}"))?;
    let entries = doc.get("manifests").and_then(Value::as_array).ok_or("the index lists no manifests")?.clone();
    let children = entries.iter().map(child).collect::<Result<Vec<_>, _>>()?;
    let platform_of: Vec<Option<&Platform>> = children.iter().map(|c| c.platform.as_ref()).collect();
    let kept: Vec<bool> = platform_of.iter().map(|p| p.is_some_and(|p| declared.iter().any(|d| takes(d, p)))).collect();
    let kept_digests: BTreeSet<&str> = children.iter().zip(&kept).filter(|(_, k)| **k).map(|(c, _)| c.digest.as_str()).collect();
    // Attestations go with what they describe; other unplatformed entries stay out.
    let keep: Vec<bool> = children.iter().zip(&kept).map(|(c, k)| *k || c.describes.as_deref().is_some_and(|d| kept_digests.contains(d))).collect();
    let missing: Vec<Platform> = declared.iter().filter(|d| !platform_of.iter().flatten().any(|p| takes(d, p))).cloned().collect();
    let mut left_out: Vec<Platform> = Vec::new();
    for (p, k) in platform_of.iter().zip(&kept) {
        if let (Some(p), false) = (p, k) {
            if !left_out.contains(p) {
                left_out.push((*p).clone());
            }
        }
    }
    let copy: Vec<Child> = children.iter().zip(&keep).filter(|(_, k)| **k).map(|(c, _)| c.clone()).collect();
    let rewritten = if left_out.is_empty() {
        None
    } else {
        let listed: Vec<Value> = entries.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(e, _)| e).collect();
        doc["manifests"] = Value::Array(listed);
        if !doc.get("annotations").is_some_and(Value::is_object) {
            doc["annotations"] = json!({});
        }
        doc["annotations"][SOURCE_DIGEST] = json!(source_digest);
        doc["annotations"][LEFT_OUT] = json!(left_out.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","));
        Some(serde_json::to_vec(&doc).map_err(|e| e.to_string())?)
    };
    Ok(IndexPlan { copy, missing, left_out, rewritten })
}

/// What the site holds under a tag it mirrors: the digest it serves and the
/// upstream digest that was copied to make it (the same, unless the index was
/// copied in part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub served: String,
    pub source: String,
}

/// What one version of an entry comes to in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// The site already serves what the upstream has under this tag: nothing moves.
    Skip { tag: String, digest: String },
    /// Copy the upstream's manifest (and what it needs) under this tag.
    Copy { tag: String, digest: String },
    /// The upstream could not say (the reason is the upstream's answer).
    Failed { tag: String, reason: String },
}

/// The units of a run for one entry: for each wanted tag, skip when the site
/// already holds the upstream's current digest under it, else copy; a tag
/// the upstream could not resolve fails alone.
pub fn units(wanted: &[String], upstream: &BTreeMap<String, Result<String, String>>, site: &BTreeMap<String, Held>) -> Vec<Unit> {
    wanted
        .iter()
        .map(|tag| match upstream.get(tag) {
            Some(Ok(digest)) if site.get(tag).is_some_and(|h| &h.source == digest) => Unit::Skip { tag: tag.clone(), digest: digest.clone() },
            Some(Ok(digest)) => Unit::Copy { tag: tag.clone(), digest: digest.clone() },
            Some(Err(reason)) => Unit::Failed { tag: tag.clone(), reason: reason.clone() },
            None => Unit::Failed { tag: tag.clone(), reason: "the upstream was not asked".into() },
        })
        .collect()
}

/// The tags a `prune: true` entry drops: those the site mirrors for it that
/// are no longer wanted. Tags that failed this run are kept (a failure never
/// removes what the site serves), and so is everything when pruning is off.
pub fn pruned(prune: bool, wanted: &[String], site: &BTreeMap<String, Held>) -> Vec<String> {
    if !prune {
        return Vec::new();
    }
    site.keys().filter(|t| !wanted.contains(t)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        let parts: Vec<&str> = s.split('/').collect();
        Platform { os: parts[0].into(), architecture: parts[1].into(), variant: parts.get(2).map(|v| v.to_string()) }
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// An index as buildx writes it: three platforms, each with an attestation manifest.
    fn index() -> Vec<u8> {
        let entry = |c: char, plat: Value| json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(c), "size": 100, "platform": plat});
        let att = |c: char, of: char| {
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(c), "size": 50,
                   "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": d(of)}})
        };
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                entry('a', json!({"os": "linux", "architecture": "amd64"})),
                entry('b', json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
                entry('c', json!({"os": "linux", "architecture": "s390x"})),
                att('1', 'a'), att('2', 'b'), att('3', 'c'),
            ],
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
        }))
        .unwrap()
    }

    #[test]
    fn an_index_whose_platforms_are_all_declared_keeps_its_bytes() {
        let plan = plan_index(&index(), &d('f'), &[p("linux/amd64"), p("linux/arm64"), p("linux/s390x")]).unwrap();
        assert_eq!(plan.rewritten, None);
        assert_eq!(plan.copy.iter().map(|c| c.digest.clone()).collect::<Vec<_>>(), [d('a'), d('b'), d('c'), d('1'), d('2'), d('3')]);
        assert!(plan.missing.is_empty() && plan.left_out.is_empty());
    }

    #[test]
    fn a_partial_copy_is_a_new_index_of_the_copied_platforms() {
        let plan = plan_index(&index(), &d('f'), &[p("linux/amd64"), p("linux/arm64")]).unwrap();
        assert_eq!(plan.copy.iter().map(|c| c.digest.clone()).collect::<Vec<_>>(), [d('a'), d('b'), d('1'), d('2')], "attestations go with their platform");
        assert_eq!(plan.left_out, [p("linux/s390x")]);
        let new: Value = serde_json::from_slice(plan.rewritten.as_ref().unwrap()).unwrap();
        let listed: Vec<&str> = new["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
        assert_eq!(listed, [d('a'), d('b'), d('1'), d('2')]);
        assert_eq!(new["annotations"][SOURCE_DIGEST], json!(d('f')));
        assert_eq!(new["annotations"][LEFT_OUT], json!("linux/s390x"));
        assert_eq!(new["annotations"]["org.opencontainers.image.created"], json!("2026-01-01T00:00:00Z"), "the upstream's annotations stay");
        assert_eq!(new["mediaType"], json!("application/vnd.oci.image.index.v1+json"));
        // The same plan twice gives the same bytes (the new digest is stable).
        assert_eq!(plan_index(&index(), &d('f'), &[p("linux/arm64"), p("linux/amd64")]).unwrap().rewritten, plan.rewritten);
    }

    #[test]
    fn a_declared_platform_the_index_lacks_is_reported_and_variants_match_as_docker_does() {
        let plan = plan_index(&index(), &d('f'), &[p("linux/arm64/v8"), p("linux/arm/v7"), p("windows/amd64")]).unwrap();
        assert_eq!(plan.missing, [p("linux/arm/v7"), p("windows/amd64")]);
        assert_eq!(plan.copy.iter().map(|c| c.digest.clone()).collect::<Vec<_>>(), [d('b'), d('2')]);
        assert!(takes(&p("linux/arm64"), &p("linux/arm64/v8")) && !takes(&p("linux/arm64/v8"), &p("linux/arm64")));
        assert!(!takes(&p("linux/arm/v6"), &p("linux/arm/v7")));
    }

    #[test]
    fn malformed_indexes_are_refused_with_a_reason() {
        for (body, why) in [
            (&b"{"[..], "not JSON"),
            (br#"{"schemaVersion":2}"#, "lists no manifests"),
            (br#"{"manifests":[{"mediaType":"x","size":1}]}"#, "without a digest"),
            (br#"{"manifests":[{"digest":"sha256:AB","mediaType":"x","size":1}]}"#, "is not sha256"),
            (br#"{"manifests":[{"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","mediaType":"x"}]}"#, "without a size"),
        ] {
            let e = plan_index(body, &d('f'), &[p("linux/amd64")]).unwrap_err();
            assert!(e.contains(why), "{e} / {why}");
        }
    }

    #[test]
    fn units_skip_what_the_site_holds_and_fail_alone() {
        let wanted: Vec<String> = ["1.0", "1.1", "2.0", "3.0"].map(String::from).to_vec();
        let upstream = BTreeMap::from([
            ("1.0".to_string(), Ok(d('a'))),
            ("1.1".to_string(), Ok(d('b'))),
            ("2.0".to_string(), Err("upstream 404".to_string())),
        ]);
        let site = BTreeMap::from([
            ("1.0".to_string(), Held { served: d('9'), source: d('a') }), // a partial copy of the same upstream index
            ("1.1".to_string(), Held { served: d('c'), source: d('c') }), // the tag moved upstream
            ("0.9".to_string(), Held { served: d('e'), source: d('e') }),
        ]);
        assert_eq!(units(&wanted, &upstream, &site), [
            Unit::Skip { tag: "1.0".into(), digest: d('a') },
            Unit::Copy { tag: "1.1".into(), digest: d('b') },
            Unit::Failed { tag: "2.0".into(), reason: "upstream 404".into() },
            Unit::Failed { tag: "3.0".into(), reason: "the upstream was not asked".into() },
        ]);
        assert_eq!(pruned(true, &wanted, &site), ["0.9"]);
        assert!(pruned(false, &wanted, &site).is_empty());
    }
}
