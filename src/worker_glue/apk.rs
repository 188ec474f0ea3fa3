//! APK repositories in the admin API: ingest, removal, publishing of signed
//! `APKINDEX.tar.gz` per architecture, and client-side signing.

use super::service::{format_key, format_settings, signing_secret, paged_members, batch_err, carry_out, for_each_chunk, refuse_republished, paths_under, json_body, package_blob, PackageBlob, read_blob_range, store_bytes, ApiResult, Ctx, PathRow, ReleaseRow, SiteRow};
use crate::api::{self, ApiError, Change, Route};
use crate::formats::apk::{index, package, repo};
use crate::auth::Scope;
use crate::store::{self, apk as sql};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use worker::*;

use crate::formats::apk::publish::{self, APK_TYPE, INDEX};

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
            Ok((200, json!({"settings": settings(ctx, site.id).await?})))
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
            let cfg = settings(ctx, site.id).await?;
            Ok((200, json!({"key_name": key_name(&cfg, &site, &key), "public_key": pem})))
        }
        ApkShowKey(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let key = site_key(ctx, site.id).await?.ok_or_else(|| ApiError::not_found("no APK public key registered for this site"))?;
            let cfg = settings(ctx, site.id).await?;
            Ok((200, json!({"key_name": key_name(&cfg, &site, &key), "public_key": index::public_pem(&key)})))
        }
        ApkAddPackage(s, r, b, repo) => add_package(ctx, req, &s, r, &b, &repo, query).await,
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
                .batch(store::apply_changes_with(site.id, rel.id, &changes, vec![sql::mark_dirty(rel.id, &b, &repo, &arch)]))
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
            let p = pending_for(ctx, rel.id, &b, &repo, &arch).await?;
            let stream = read_blob(ctx, &p.stream_sha256).await?;
            let cfg = settings(ctx, site.id).await?;
            let key = site_key(ctx, site.id).await?.ok_or_else(|| ApiError::conflict("no APK public key registered for this site"))?;
            Ok((
                200,
                json!({"arch": arch, "key_name": key_name(&cfg, &site, &key), "stream_sha256": p.stream_sha256,
                       "stream_base64": base64::engine::general_purpose::STANDARD.encode(&stream)}),
            ))
        }
        ApkSignature(s, r, b, repo, arch) => upload_signature(ctx, req, &s, r, &b, &repo, &arch).await,
        _ => Err(ApiError::not_found("no such endpoint")),
    }
}

async fn settings(ctx: &Ctx<'_>, site_id: i64) -> std::result::Result<repo::ApkConfig, ApiError> {
    format_settings(ctx, site_id, sql::FORMAT, "").await
}

async fn site_key(ctx: &Ctx<'_>, site_id: i64) -> std::result::Result<Option<rsa::RsaPublicKey>, ApiError> {
    match format_key(ctx, site_id, sql::FORMAT).await? {
        Some(pem) => Ok(Some(index::read_public(&pem).map_err(|e| ApiError::internal(e.0))?)),
        None => Ok(None),
    }
}

fn key_name(cfg: &repo::ApkConfig, site: &SiteRow, key: &rsa::RsaPublicKey) -> String {
    cfg.key_name.clone().unwrap_or_else(|| index::default_key_name(&site.name, key))
}

fn server_signer(ctx: &Ctx<'_>, site: &SiteRow) -> std::result::Result<index::Signer, ApiError> {
    let pem = signing_secret(ctx, site, "APK_SIGNING_KEY", "an RSA private key in PEM")?;
    index::Signer::from_pem(&pem).map_err(|e| ApiError::internal(format!("the APK signing key is unusable: {}", e.0)))
}

async fn read_blob(ctx: &Ctx<'_>, sha: &str) -> std::result::Result<Vec<u8>, ApiError> {
    #[derive(Deserialize)]
    struct B {
        size: i64,
    }
    let size = ctx.db.first::<B>(store::blob(sha)).await?.ok_or_else(|| ApiError::internal(format!("blob {sha} is missing")))?.size;
    read_blob_range(ctx, sha, 0, size as u64).await
}

fn bad_package(e: package::ApkError) -> ApiError {
    ApiError::new(422, "invalid_package", format!("not a valid apk package: {}", e.0))
}

async fn add_package(ctx: &Ctx<'_>, req: &mut Request, s: &str, r: i64, b: &str, repo_name: &str, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    let rel = ctx.draft(site.id, r).await?;
    let replace = query("replace").map_or(false, |v| v == "1" || v == "true");
    let PackageBlob { sha, size, index } = package_blob(ctx, req, &site, query).await?;
    let head = read_blob_range(ctx, &sha, 0, size.min(package::HEAD_BYTES)).await?;
    let layout = package::read_head(&head, size).map_err(bad_package)?;
    let info = package::parse_pkginfo(&layout.pkginfo).map_err(bad_package)?;
    if (head.len() as u64) < size {
        // Not all at hand: the data stream is streamed from R2 through the same check.
        let at = package::data_offset(&layout) as u64;
        let mut check = package::DataCheck::new();
        for_each_chunk(ctx, &sha, at, size - at, |chunk| {
            check.push(chunk);
            Ok::<(), ()>(())
        })
        .await?
        .ok();
        check.finish(&info).map_err(bad_package)?;
    } else {
        package::check_data(&head, size, &layout, &info).map_err(bad_package)?;
    }
    let (at, len) = layout.control;
    let identity = package::identity(&head[at..at + len]);
    let record = package::index_record(&info, &identity, size);
    let arch = info.arch.clone().expect("checked by parse_pkginfo");
    let member = sql::member_path(b, repo_name, &arch, &package::filename(&info.name, &info.version));
    if let Some(existing) = ctx.db.first::<PathRow>(store::release_path(site.id, rel.read_seq(), rel.id, &member)).await? {
        if existing.sha256 != sha && !replace {
            return Err(ApiError::conflict(format!(
                "{}-{} ({arch}) is already in {b}/{repo_name} with different content; add ?replace=true to replace it",
                info.name, info.version
            )));
        }
    }
    // The served file of an arch-specific package is known now (a noarch one's
    // are checked when publishing places them in every architecture).
    let served = Change { path: format!("{b}/{repo_name}/{arch}/{}", package::filename(&info.name, &info.version)), sha256: Some(sha.clone()), content_type: None };
    refuse_republished(ctx, site.id, std::slice::from_ref(&served)).await?;
    let changes = [Change { path: member, sha256: Some(sha.clone()), content_type: Some(APK_TYPE.into()) }];
    let extra = vec![
        sql::insert_package(&sha, &info.name, &info.version, &arch, &identity, &record, &layout.pkginfo, ctx.now),
        sql::mark_dirty(rel.id, b, repo_name, &arch),
    ];
    let mut stmts = index;
    stmts.extend(store::apply_changes_with(site.id, rel.id, &changes, extra));
    ctx.db.batch(stmts).await.map_err(|e| batch_err(e, &format!("release {r} stopped being a draft")))?;
    Ok((
        201,
        json!({"name": info.name, "version": info.version, "arch": arch, "branch": b, "repository": repo_name,
               "identity": identity, "signed": layout.signature.is_some(), "sha256": sha, "size": size}),
    ))
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

/// Regenerates the indexes of a branch/repository in a draft (planned by
/// [`publish::plan`]): reads the members and the draft's paths, stores the
/// planned blobs, commits the changes with the bookkeeping in one batch.
pub(super) async fn publish_repo(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, b: &str, r: &str, full: bool) -> std::result::Result<Value, ApiError> {
    let started = super::now_ms();
    let cfg = settings(ctx, site.id).await?;
    let (signer, client_key) = if cfg.client_signed() {
        (None, Some(site_key(ctx, site.id).await?.ok_or_else(|| ApiError::conflict("client-side signing needs a public key: PUT /sites/{site}/apk/key"))?))
    } else {
        (Some(server_signer(ctx, site)?), None)
    };
    let signing = match (&signer, &client_key) {
        (Some(s), _) => publish::Signing::Server(s),
        (None, Some(k)) => publish::Signing::Client(k),
        (None, None) => return Err(ApiError::internal("no signer and no client key")),
    };
    let public = signer.as_ref().map(|s| s.public_key()).or(client_key.as_ref()).ok_or_else(|| ApiError::internal("no key"))?;
    let name_of_key = key_name(&cfg, site, public);

    let members: Vec<publish::Member> = all_members(ctx, site, rel, b, r)
        .await?
        .into_iter()
        .map(|m| publish::Member { sha256: m.sha256, name: m.name, version: m.version, arch: m.arch, record: m.record })
        .collect();
    #[derive(Deserialize)]
    struct Dirty {
        branch: String,
        repository: String,
        arch: String,
    }
    let dirty: BTreeSet<String> =
        ctx.db.all::<Dirty>(sql::dirty(rel.id)).await?.into_iter().filter(|d| d.branch == b && d.repository == r).map(|d| d.arch).collect();
    let existing: BTreeMap<String, String> =
        paths_under(ctx, site, rel, &format!("{b}/{r}/")).await?.into_iter().map(|(path, row)| (path, row.sha256)).collect();
    let listed = super::now_ms();

    let input = publish::Input { branch: b, repository: r, cfg: &cfg, members: &members, dirty: &dirty, existing: &existing, full, signing, key_name: &name_of_key };
    let plan = <crate::formats::Apk as crate::formats::Format>::plan(&input).map_err(ApiError::conflict)?;
    let planned = super::now_ms();
    let mut extra: Vec<_> = plan.pending.iter().map(|(a, sha)| sql::set_pending(rel.id, b, r, a, Some(sha))).collect();
    extra.push(sql::clear_dirty(rel.id, b, r));
    let changes = carry_out(ctx, site, plan.publication).await?;
    let stored = super::now_ms();
    ctx.db
        .batch(store::apply_changes_with(site.id, rel.id, &changes, extra))
        .await
        .map_err(|e| batch_err(e, &format!("release {} stopped being a draft", rel.id)))?;
    let waiting: Vec<&String> = plan.pending.iter().map(|(a, _)| a).collect();
    Ok(json!({
        "branch": b,
        "repository": r,
        "packages": members.len(),
        "architectures": plan.architectures,
        "regenerated": plan.regenerated,
        "key_name": name_of_key,
        "signing": if waiting.is_empty() { json!("signed by the server") } else { json!({"waiting_for_signatures": waiting}) },
        "timings_ms": {"read_packages": listed - started, "plan": planned - listed, "store": stored - planned, "commit": super::now_ms() - stored},
    }))
}

#[derive(Deserialize)]
struct Pending {
    branch: String,
    repository: String,
    arch: String,
    stream_sha256: String,
}

async fn pending_for(ctx: &Ctx<'_>, release_id: i64, b: &str, r: &str, a: &str) -> std::result::Result<Pending, ApiError> {
    ctx.db
        .all::<Pending>(sql::pending(release_id))
        .await?
        .into_iter()
        .find(|p| p.branch == b && p.repository == r && p.arch == a)
        .ok_or_else(|| ApiError::conflict(format!("{b}/{r}/{a} of release {release_id} is not waiting for a signature: publish it first")))
}

#[allow(clippy::too_many_arguments)]
async fn upload_signature(ctx: &Ctx<'_>, req: &mut Request, s: &str, r: i64, b: &str, repo_name: &str, a: &str) -> ApiResult {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        signature_base64: String,
    }
    let site = ctx.site(s, Scope::Publish).await?;
    let rel = ctx.draft(site.id, r).await?;
    let body: Body = api::parse_json(&json_body(req).await?)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(body.signature_base64.trim())
        .map_err(|_| ApiError::bad_request("signature_base64 is not base64"))?;
    let p = pending_for(ctx, rel.id, b, repo_name, a).await?;
    let key = site_key(ctx, site.id).await?.ok_or_else(|| ApiError::conflict("no APK public key registered for this site"))?;
    let stream = read_blob(ctx, &p.stream_sha256).await?;
    index::verify(&key, &stream, &signature).map_err(|e| ApiError::new(422, "bad_signature", e.0))?;
    let cfg = settings(ctx, site.id).await?;
    let mut file = index::signature_stream(&key_name(&cfg, &site, &key), &signature, 0);
    file.extend_from_slice(&stream);
    let sha = store_bytes(ctx, site.id, file).await?;
    let changes = [Change { path: format!("{b}/{repo_name}/{a}/{INDEX}"), sha256: Some(sha), content_type: Some("application/gzip".into()) }];
    let mut stmts = vec![sql::pending_is(rel.id, b, repo_name, a, &p.stream_sha256)];
    stmts.extend(store::apply_changes_with(site.id, rel.id, &changes, vec![sql::set_pending(rel.id, b, repo_name, a, None)]));
    ctx.db.batch(stmts).await.map_err(|e| batch_err(e, "the index was published again meanwhile; fetch it and sign again"))?;
    Ok((200, json!({"branch": b, "repository": repo_name, "arch": a, "signed": true})))
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
    if !repos.is_empty() && settings(ctx, site.id).await?.client_signed() {
        let (b, r) = repos.iter().next().expect("not empty");
        return Err(ApiError::conflict(format!(
            "{b}/{r} changed and is signed by you: POST …/releases/{}/apk/{b}/{r}/publish, sign each index stream and upload the signatures",
            rel.id
        )));
    }
    for (b, r) in &repos {
        publish_repo(ctx, site, rel, b, r, false).await?;
    }
    if let Some(p) = ctx.db.all::<Pending>(sql::pending(rel.id)).await?.into_iter().next() {
        return Err(ApiError::conflict(format!(
            "{}/{}/{} waits for its signature: PUT …/releases/{}/apk/{}/{}/{}/signature",
            p.branch, p.repository, p.arch, rel.id, p.branch, p.repository, p.arch
        )));
    }
    Ok(())
}
