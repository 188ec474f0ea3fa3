//! APK repositories in the admin API: ingest, removal, publishing of signed
//! `APKINDEX.tar.gz` per architecture, and client-side signing.

use super::format_io::{accept_signatures, client_key, pending, settings, Keys};
use super::service::{batch_err, carry_out, json_body, paged_members, paths_under, read_blob_range, ApiResult, Ctx, PathRow, ReleaseRow, SiteRow};
use crate::api::{self, ApiError, Change, Route};
use crate::auth::Scope;
use crate::formats::apk::{index, package, publish, repo};
use crate::formats::{Apk, Format};
use crate::store::{self, apk as sql};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use worker::*;

pub(super) async fn dispatch(ctx: &Ctx<'_>, route: Route, req: &mut Request, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    use Route::*;
    match route {
        ApkPutSettings(s) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            let cfg: repo::ApkConfig = api::parse_json_or_default(&json_body(req).await?)?;
            cfg.validate().map_err(ApiError::bad_request)?;
            ctx.db.run(sql::put_settings(site.id, &serde_json::to_string(&cfg).expect("serialisable"))).await?;
            Ok((200, json!({"settings": cfg})))
        }
        ApkShowSettings(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            Ok((200, json!({"settings": settings::<Apk>(ctx, site.id, "").await?})))
        }
        ApkPutKey(s) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                public_key: String,
            }
            let b: Body = api::parse_json(&json_body(req).await?)?;
            let key = index::read_public(&b.public_key).map_err(|e| ApiError::bad_request(e.0))?;
            let pem = index::public_pem(&key);
            ctx.db.run(sql::put_public_key(site.id, &pem, ctx.now)).await?;
            let cfg = settings::<Apk>(ctx, site.id, "").await?;
            Ok((200, json!({"key_name": repo::key_name(&cfg, &site.name, &key), "public_key": pem})))
        }
        ApkShowKey(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let key = client_key::<Apk>(ctx, site.id).await?.ok_or_else(|| ApiError::not_found("no APK public key registered for this site"))?;
            let cfg = settings::<Apk>(ctx, site.id, "").await?;
            Ok((200, json!({"key_name": repo::key_name(&cfg, &site.name, &key), "public_key": index::public_pem(&key)})))
        }
        ApkAddPackage(s, r, b, repo) => super::format_io::add::<Apk>(ctx, req, &s, r, (b, repo), query).await,
        ApkListPackages(s, r, b, repo) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let rel = ctx.release(site.id, r).await?;
            let list: Vec<Value> = all_members(ctx, &site, &rel, &b, &repo)
                .await?
                .iter()
                .map(|m| json!({"name": m.name, "version": m.version, "arch": m.arch, "identity": m.identity, "sha256": m.sha256, "size": m.size}))
                .collect();
            Ok((200, json!({"branch": b, "repository": repo, "packages": list})))
        }
        ApkRemovePackage(s, r, b, repo, name, version, arch) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            let member = sql::member_path(&b, &repo, &arch, &package::filename(&name, &version));
            if ctx.db.first::<PathRow>(store::release_path(site.id, rel.read_seq(), rel.id, &member)).await?.is_none() {
                return Err(ApiError::not_found(format!("{name}-{version} ({arch}) is not in {b}/{repo}")));
            }
            let changes = [Change { path: member, sha256: None, content_type: None }];
            ctx.db
                .batch(store::apply_changes_with(
                    site.id,
                    rel.id,
                    &changes,
                    store::formats::mark_dirty_many(rel.id, <Apk as Format>::NAME, &[(format!("{b}/{repo}"), arch.clone(), name.clone())]),
                ))
                .await
                .map_err(|e| batch_err(e, &format!("release {r} stopped being a draft")))?;
            Ok((204, Value::Null))
        }
        ApkPublish(s, r, b, repo) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            let full = query("full").map_or(false, |v| v == "1" || v == "true");
            Ok((200, publish_repo(ctx, &site, &rel, &b, &repo, full).await?))
        }
        ApkUnsigned(s, r, b, repo, arch) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let rel = ctx.release(site.id, r).await?;
            let (stream_sha256, stream) = pending::<Apk>(ctx, &rel, &format!("{b}/{repo}"), &arch).await?;
            let cfg = settings::<Apk>(ctx, site.id, "").await?;
            let key = client_key::<Apk>(ctx, site.id).await?.ok_or_else(|| ApiError::conflict("no APK public key registered for this site"))?;
            Ok((
                200,
                json!({"arch": arch, "key_name": repo::key_name(&cfg, &site.name, &key), "stream_sha256": stream_sha256,
                       "stream_base64": base64::engine::general_purpose::STANDARD.encode(&stream)}),
            ))
        }
        ApkSignature(s, r, b, repo, arch) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            let body = api::parse_json(&json_body(req).await?)?;
            accept_signatures::<Apk>(ctx, &site, &rel, &format!("{b}/{repo}"), &arch, body).await?;
            Ok((200, json!({"branch": b, "repository": repo, "arch": arch, "signed": true})))
        }
        _ => Err(ApiError::not_found("no such endpoint")),
    }
}

#[derive(Deserialize)]
struct Member {
    path: String,
    sha256: String,
    size: i64,
    name: String,
    version: String,
    arch: String,
    identity: String,
    record: String,
}

async fn all_members(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, b: &str, r: &str) -> std::result::Result<Vec<Member>, ApiError> {
    let prefix = sql::member_prefix(b, r);
    paged_members(ctx, |after, limit| sql::members(site.id, rel.read_seq(), rel.id, &prefix, after, limit), |m: &Member| &m.path).await
}

/// The members of one architecture's index (its own packages and the
/// noarch ones) with names above `lo` and up to `hi`.
#[allow(clippy::too_many_arguments)]
async fn index_members(
    ctx: &Ctx<'_>,
    site: &SiteRow,
    rel: &ReleaseRow,
    b: &str,
    r: &str,
    a: &str,
    lo: Option<&str>,
    hi: Option<&str>,
) -> std::result::Result<Vec<publish::Member>, ApiError> {
    let mut out = Vec::new();
    for dir in [a, repo::NOARCH] {
        let prefix = format!("{}{dir}/", sql::member_prefix(b, r));
        let rows: Vec<Member> =
            paged_members(ctx, |after, limit| sql::members_within(site.id, rel.read_seq(), rel.id, &prefix, lo, hi, after, limit), |m: &Member| &m.path)
                .await?;
        out.extend(rows.into_iter().map(|m| publish::Member { sha256: m.sha256, name: m.name, version: m.version, arch: m.arch, record: m.record }));
    }
    Ok(out)
}

/// What splicing an architecture's index needs, when it can be spliced: a
/// server-signed index with its recorded layout, the changed names known,
/// and at most half its pieces touched. Otherwise None: regenerated whole.
#[allow(clippy::too_many_arguments)]
async fn splice_source(
    ctx: &Ctx<'_>,
    site: &SiteRow,
    rel: &ReleaseRow,
    b: &str,
    r: &str,
    a: &str,
    index_file: Option<&String>,
    changed: &BTreeSet<String>,
) -> std::result::Result<Option<publish::Source>, ApiError> {
    use crate::formats::pieces;
    let Some(sha) = index_file else { return Ok(None) };
    if changed.is_empty() {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct L {
        layout: String,
    }
    let Some(row) = ctx.db.first::<L>(store::formats::layouts(site.id, &[sha.as_str()])).await? else { return Ok(None) };
    let Ok(layout) = serde_json::from_str::<pieces::Layout>(&row.layout) else { return Ok(None) };
    let runs = pieces::affected(&layout, changed);
    let touched: usize = runs.iter().map(|(a, b)| b - a + 1).sum();
    if layout.pieces.is_empty() || touched * 2 > layout.pieces.len() + 1 {
        return Ok(None);
    }
    if layout.gz_len == 0 {
        return Ok(None);
    }
    let old = read_blob_range(ctx, sha, 0, layout.gz_len).await?;
    if !pieces::fits(&layout, &pieces::Files { gz: old.clone(), ..pieces::Files::default() }, publish::FORMS) {
        return Ok(None);
    }
    let mut fresh = Vec::with_capacity(runs.len());
    for &run in &runs {
        let (lo, hi) = pieces::bounds(&layout, run);
        fresh.push(index_members(ctx, site, rel, b, r, a, lo, hi).await?);
    }
    Ok(Some(publish::Source::Splice { layout, old, runs, fresh }))
}

/// Regenerates the indexes of a branch/repository in a draft (planned by
/// [`publish::plan`]): each changed architecture's index spliced around the
/// changed names (server signing) or regenerated whole; stores the planned
/// blobs, commits the changes with the bookkeeping in one batch.
pub(super) async fn publish_repo(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, b: &str, r: &str, full: bool) -> std::result::Result<Value, ApiError> {
    let started = super::now_ms();
    #[derive(Deserialize)]
    struct Dirty {
        branch: String,
        repository: String,
        arch: String,
    }
    #[derive(Deserialize)]
    struct Name {
        part: String,
        name: String,
    }
    let scope = format!("{b}/{r}");
    #[derive(Deserialize)]
    struct File {
        path: String,
        sha256: String,
    }
    let dir = format!("{b}/{r}/");
    let (cfg, dirty, names, index_files) = futures_util::future::try_join4(
        settings::<Apk>(ctx, site.id, ""),
        ctx.db.all::<Dirty>(sql::dirty(rel.id)),
        ctx.db.all::<Name>(store::formats::dirty_names(rel.id, <Apk as Format>::NAME, &scope)),
        ctx.db.all::<File>(sql::index_files(site.id, rel.read_seq(), rel.id, &dir)),
    )
    .await?;
    let keys = Keys::<Apk>::of(ctx, site, &cfg).await?;
    let public = match &keys {
        Keys::Server(signer) => signer.public_key(),
        Keys::Client(key) => key,
    };
    let name_of_key = repo::key_name(&cfg, &site.name, public);
    let dirty: BTreeSet<String> = dirty.into_iter().filter(|d| d.branch == b && d.repository == r).map(|d| d.arch).collect();
    // What publishing looks at of the draft's paths: the index files now;
    // below, the directories regenerated whole or gone, and the files a
    // splice may change.
    let mut existing: BTreeMap<String, String> = index_files.into_iter().map(|f| (f.path, f.sha256)).collect();

    // The architectures the members have: each candidate (configured, dirty,
    // indexed now, noarch) asked whether its member directory has any.
    let mut candidates: BTreeSet<String> = cfg.architectures.iter().cloned().chain(dirty.iter().cloned()).collect();
    candidates.insert(repo::NOARCH.to_string());
    for path in existing.keys() {
        if let Some(a) = path.strip_prefix(&dir).and_then(|rest| rest.strip_suffix(&format!("/{}", publish::INDEX))) {
            candidates.insert(a.to_string());
        }
    }
    #[derive(Deserialize)]
    struct Any {
        #[allow(dead_code)]
        n: i64,
    }
    let mut present = BTreeSet::new();
    for a in candidates {
        let prefix = format!("{}{a}/", sql::member_prefix(b, r));
        if ctx.db.first::<Any>(sql::has_members(site.id, rel.read_seq(), rel.id, &prefix)).await?.is_some() {
            present.insert(a);
        }
    }
    let (archs, regen) = publish::regeneration(b, r, &cfg, &present, &dirty, &existing, full).map_err(ApiError::conflict)?;
    let indexed: Vec<String> =
        existing.keys().filter_map(|p| p.strip_prefix(&dir)?.strip_suffix(&format!("/{}", publish::INDEX)).map(str::to_string)).collect();
    let server = matches!(keys, Keys::Server(_));
    let mut sources = BTreeMap::new();
    for a in regen {
        let named = dirty.iter().filter(|d| *d == &a || d.as_str() == repo::NOARCH).all(|d| names.iter().any(|n| &n.part == d));
        let changed: BTreeSet<String> = names.iter().filter(|n| n.part == a || n.part == repo::NOARCH).map(|n| n.name.clone()).collect();
        let index_file = existing.get(&format!("{dir}{a}/{}", publish::INDEX));
        let spliced = if full || !server || !named { None } else { splice_source(ctx, site, rel, b, r, &a, index_file, &changed).await? };
        let source = match spliced {
            Some(s) => s,
            None => publish::Source::Full(index_members(ctx, site, rel, b, r, &a, None, None).await?),
        };
        let arch_dir = format!("{dir}{a}/");
        match &source {
            publish::Source::Full(_) => existing.extend(paths_under(ctx, site, rel, &arch_dir).await?.into_iter().map(|(p, row)| (p, row.sha256))),
            publish::Source::Splice { .. } => {
                let check: Vec<String> = publish::files_to_check(&source, &arch_dir).map_err(ApiError::internal)?.into_iter().collect();
                let refs: Vec<&str> = check.iter().map(String::as_str).collect();
                #[derive(Deserialize)]
                struct Held {
                    path: String,
                    sha256: String,
                }
                for chunk in refs.chunks(4_000) {
                    existing.extend(ctx.db.all::<Held>(store::paths_among(site.id, rel.read_seq(), rel.id, chunk)).await?.into_iter().map(|h| (h.path, h.sha256)));
                }
            }
        }
        sources.insert(a, source);
    }
    // An architecture indexed now that the repository no longer has: its directory goes.
    for a in indexed.iter().filter(|a| !archs.contains(a)) {
        existing.extend(paths_under(ctx, site, rel, &format!("{dir}{a}/")).await?.into_iter().map(|(p, row)| (p, row.sha256)));
    }
    let read = super::now_ms();

    let input = publish::Input { branch: b, repository: r, cfg: &cfg, present: &present, sources: &sources, existing: &existing, signing: keys.signing(), key_name: &name_of_key };
    let plan = Apk::plan(&input).map_err(ApiError::conflict)?;
    let planned = super::now_ms();
    let mut extra: Vec<_> = plan.pending.iter().map(|(a, sha)| sql::set_pending(rel.id, b, r, a, Some(sha))).collect();
    extra.extend(sql::clear_dirty(rel.id, b, r));
    let layouts: Vec<(String, String, String, String)> =
        plan.layouts.iter().map(|(sha, l)| (sha.clone(), String::new(), String::new(), serde_json::to_string(l).expect("serialisable"))).collect();
    extra.push(store::formats::put_layouts(site.id, &layouts));
    let changes = carry_out(ctx, site, plan.publication).await?;
    let stored = super::now_ms();
    ctx.db
        .batch(store::apply_changes_with(site.id, rel.id, &changes, extra))
        .await
        .map_err(|e| batch_err(e, &format!("release {} stopped being a draft", rel.id)))?;
    let waiting: Vec<&String> = plan.pending.iter().map(|(a, _)| a).collect();
    let indexes: Vec<Value> =
        plan.counts.iter().map(|(a, packages, rendered, pieces)| json!({"arch": a, "packages": packages, "pieces": pieces, "pieces_rendered": rendered})).collect();
    Ok(json!({
        "branch": b,
        "repository": r,
        "indexes": indexes,
        "architectures": plan.architectures,
        "regenerated": plan.regenerated,
        "key_name": name_of_key,
        "signing": if waiting.is_empty() { json!("signed by the server") } else { json!({"waiting_for_signatures": waiting}) },
        "timings_ms": {"read_packages": read - started, "plan": planned - read, "store": stored - planned, "commit": super::now_ms() - stored},
    }))
}

/// Before activation: regenerate what changed (server signing), or explain
/// what a client-signed repository still needs.
pub(super) async fn prepare_activation(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow) -> std::result::Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Dirty {
        branch: String,
        repository: String,
    }
    let repos: BTreeSet<(String, String)> = ctx.db.all::<Dirty>(sql::dirty(rel.id)).await?.into_iter().map(|d| (d.branch, d.repository)).collect();
    if !repos.is_empty() && settings::<Apk>(ctx, site.id, "").await?.client_signed() {
        let (b, r) = repos.iter().next().expect("not empty");
        return Err(ApiError::conflict(format!(
            "{b}/{r} changed and is signed by you: POST …/releases/{}/apk/{b}/{r}/publish, sign each index stream and upload the signatures",
            rel.id
        )));
    }
    for (b, r) in &repos {
        publish_repo(ctx, site, rel, b, r, false).await?;
    }
    #[derive(Deserialize)]
    struct Pending {
        branch: String,
        repository: String,
        arch: String,
    }
    if let Some(p) = ctx.db.all::<Pending>(sql::pending(rel.id)).await?.into_iter().next() {
        return Err(ApiError::conflict(format!(
            "{}/{}/{} waits for its signature: PUT …/releases/{}/apk/{}/{}/{}/signature",
            p.branch, p.repository, p.arch, rel.id, p.branch, p.repository, p.arch
        )));
    }
    Ok(())
}
