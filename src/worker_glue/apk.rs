//! APK repositories in the admin API: ingest, removal, publishing of signed
//! `APKINDEX.tar.gz` per architecture, and client-side signing.

use super::format_io::{accept_signatures, client_key, pending, settings, Keys};
use super::service::{batch_err, carry_out, json_body, paged_members, paths_under, ApiResult, Ctx, PathRow, ReleaseRow, SiteRow};
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

/// Regenerates the indexes of a branch/repository in a draft (planned by
/// [`publish::plan`]): reads the members and the draft's paths, stores the
/// planned blobs, commits the changes with the bookkeeping in one batch.
pub(super) async fn publish_repo(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, b: &str, r: &str, full: bool) -> std::result::Result<Value, ApiError> {
    let started = super::now_ms();
    let cfg = settings::<Apk>(ctx, site.id, "").await?;
    let keys = Keys::<Apk>::of(ctx, site, &cfg).await?;
    let public = match &keys {
        Keys::Server(signer) => signer.public_key(),
        Keys::Client(key) => key,
    };
    let name_of_key = repo::key_name(&cfg, &site.name, public);

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

    let input = publish::Input { branch: b, repository: r, cfg: &cfg, members: &members, dirty: &dirty, existing: &existing, full, signing: keys.signing(), key_name: &name_of_key };
    let plan = Apk::plan(&input).map_err(ApiError::conflict)?;
    let planned = super::now_ms();
    let mut extra: Vec<_> = plan.pending.iter().map(|(a, sha)| sql::set_pending(rel.id, b, r, a, Some(sha))).collect();
    extra.extend(sql::clear_dirty(rel.id, b, r));
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
