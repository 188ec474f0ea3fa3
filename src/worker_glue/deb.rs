//! Debian repositories in the admin API: ingest, removal, publishing
//! (Packages, Release, InRelease, Release.gpg, by-hash) and client-side signing.

use super::format_io::{client_key, accept_signatures, settings, Keys};
use super::service::{batch_err, carry_out, json_body, paged_members, paths_under, read_blob_range, ApiResult, Ctx, PathRow, ReleaseRow, SiteRow};
use crate::api::{self, ApiError, Change, Route};
use crate::auth::Scope;
use crate::formats::deb::{package, publish, repo, sign};
use crate::formats::{Deb, Format};
use crate::store::{self, deb as sql};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use worker::*;

pub(super) async fn dispatch(ctx: &Ctx<'_>, route: Route, req: &mut Request, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    use Route::*;
    match route {
        DebPutDist(s, d) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            let cfg: repo::DistConfig = api::parse_json_or_default(&json_body(req).await?)?;
            cfg.validate().map_err(ApiError::bad_request)?;
            let text = serde_json::to_string(&cfg).expect("serialisable");
            ctx.db.run(sql::put_dist_config(site.id, &d, &text)).await?;
            Ok((200, json!({"dist": d, "config": cfg})))
        }
        DebShowDist(s, d) => {
            let site = ctx.site(&s, Scope::Read).await?;
            Ok((200, json!({"dist": d, "config": settings::<Deb>(ctx, site.id, &d).await?})))
        }
        DebPutKey(s) => {
            let site = ctx.site(&s, Scope::Admin).await?;
            let body = json_body(req).await?;
            let key = sign::read_public(&body).map_err(|e| ApiError::bad_request(e.0))?;
            let (binary, armored) = sign::export_public(&key).map_err(|e| ApiError::bad_request(e.0))?;
            let fpr = fingerprint(&key);
            ctx.db.run(sql::put_public_key(site.id, &hex::encode(&binary), &fpr, ctx.now)).await?;
            Ok((200, json!({"fingerprint": fpr, "armored": armored})))
        }
        DebShowKey(s) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let key = client_key::<Deb>(ctx, site.id).await?.ok_or_else(|| ApiError::not_found("no public key registered for this site"))?;
            let (_, armored) = sign::export_public(&key).map_err(|e| ApiError::internal(e.0))?;
            Ok((200, json!({"fingerprint": fingerprint(&key), "armored": armored})))
        }
        DebAddPackage(s, r, d, c) => super::format_io::add::<Deb>(ctx, req, &s, r, (d, c), query).await,
        DebRemovePackage(s, r, d, c, name, version, arch) => remove_package(ctx, &s, r, &d, &c, &name, &version, &arch).await,
        DebListPackages(s, r, d) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let rel = ctx.release(site.id, r).await?;
            let members = all_members(ctx, &site, &rel, &d).await?;
            let list: Vec<Value> = members
                .iter()
                .map(|m| json!({"component": m.component, "package": m.package, "version": m.version, "architecture": m.architecture, "sha256": m.sha256, "size": m.size}))
                .collect();
            Ok((200, json!({"dist": d, "packages": list})))
        }
        DebPublish(s, r, d) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            let full = query("full").map_or(false, |v| v == "1" || v == "true");
            Ok((200, publish_dist(ctx, &site, &rel, &d, full).await?))
        }
        DebRelease(s, r, d) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let rel = ctx.release(site.id, r).await?;
            let path = format!("dists/{d}/Release");
            let row = path_row(ctx, &site, &rel, &path).await?.ok_or_else(|| ApiError::not_found(format!("release {r} has no {path}: publish the dist first")))?;
            let text = read_text(ctx, &row).await?;
            Ok((200, json!({"dist": d, "sha256": row.sha256, "release": text})))
        }
        DebSignatures(s, r, d) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            let body = api::parse_json(&json_body(req).await?)?;
            accept_signatures::<Deb>(ctx, &site, &rel, &d, "", body).await?;
            Ok((200, json!({"dist": d, "signed": true})))
        }
        _ => Err(ApiError::not_found("no such endpoint")),
    }
}

fn fingerprint(key: &pgp::composed::SignedPublicKey) -> String {
    use pgp::types::KeyDetails;
    hex::encode_upper(key.fingerprint().as_bytes())
}

async fn path_row(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, path: &str) -> std::result::Result<Option<PathRow>, ApiError> {
    ctx.db.first(store::release_path(site.id, rel.read_seq(), rel.id, path)).await
}

async fn read_text(ctx: &Ctx<'_>, row: &PathRow) -> std::result::Result<String, ApiError> {
    let bytes = read_blob_range(ctx, &row.sha256, 0, row.size as u64).await?;
    String::from_utf8(bytes).map_err(|_| ApiError::internal("stored Release is not UTF-8"))
}

#[allow(clippy::too_many_arguments)]
#[allow(clippy::too_many_arguments)]
async fn remove_package(ctx: &Ctx<'_>, s: &str, r: i64, d: &str, c: &str, name: &str, version: &str, arch: &str) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    let rel = ctx.draft(site.id, r).await?;
    let filename = package::filename_of(name, version, arch);
    let member = sql::member_path(d, c, &filename);
    let Some(row) = path_row(ctx, &site, &rel, &member).await? else {
        return Err(ApiError::not_found(format!("{name} {version} ({arch}) is not in {d}/{c}")));
    };
    let mut changes = vec![Change { path: member.clone(), sha256: None, content_type: None }];
    // The pool file goes too unless another dist of this release still lists it.
    #[derive(Deserialize)]
    struct N {
        n: i64,
    }
    let sharers = ctx.db.first::<N>(sql::pool_sharers(site.id, rel.read_seq(), rel.id, &member, c, &filename, &row.sha256)).await?.map_or(0, |x| x.n);
    if sharers == 0 {
        #[derive(Deserialize)]
        struct Source {
            source: String,
        }
        let source = ctx.db.first::<Source>(sql::package_source(&row.sha256)).await?.map_or_else(|| name.to_string(), |x| x.source);
        changes.push(Change { path: package::pool_path_of(c, &source, name, version, arch), sha256: None, content_type: None });
    }
    ctx.db
        .batch(store::apply_changes_with(site.id, rel.id, &changes, vec![sql::mark_dirty(rel.id, d, c, arch)]))
        .await
        .map_err(|e| batch_err(e, &format!("release {r} stopped being a draft")))?;
    Ok((204, Value::Null))
}

#[derive(Deserialize)]
struct MemberRow {
    path: String,
    sha256: String,
    size: i64,
    package: String,
    version: String,
    architecture: String,
    source: String,
    control: String,
}

struct Member {
    component: String,
    sha256: String,
    size: i64,
    package: String,
    version: String,
    architecture: String,
    control: String,
    pool: String,
}

async fn all_members_under(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, prefix: &str) -> std::result::Result<Vec<MemberRow>, ApiError> {
    paged_members(ctx, |after, limit| sql::members(site.id, rel.read_seq(), rel.id, prefix, after, limit), |m: &MemberRow| &m.path).await
}

async fn all_members(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, dist: &str) -> std::result::Result<Vec<Member>, ApiError> {
    let prefix = sql::member_prefix(dist, None);
    let rows = all_members_under(ctx, site, rel, &prefix).await?;
    let mut out = Vec::with_capacity(rows.len());
    for m in rows {
        let rest = &m.path[prefix.len()..];
        let Some((component, _)) = rest.split_once('/') else { continue };
        out.push(Member {
            pool: package::pool_path_of(component, &m.source, &m.package, &m.version, &m.architecture),
            component: component.to_string(),
            sha256: m.sha256,
            size: m.size,
            package: m.package,
            version: m.version,
            architecture: m.architecture,
            control: m.control,
        });
    }
    Ok(out)
}

/// The by-hash ledger the draft starts from: its own (re-publishing), else the
/// nearest ancestor's.
async fn previous_ledger(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, dist: &str) -> std::result::Result<Vec<Vec<String>>, ApiError> {
    #[derive(Deserialize)]
    struct L {
        ledger: String,
    }
    let parse = |l: L| serde_json::from_str::<Vec<Vec<String>>>(&l.ledger).map_err(|e| ApiError::internal(e.to_string()));
    if let Some(l) = ctx.db.first::<L>(sql::ledger(rel.id, dist)).await? {
        let mut own = parse(l)?;
        if !own.is_empty() {
            own.remove(0); // this draft's own earlier generation is replaced
        }
        return Ok(own);
    }
    let mut parent = rel.parent_id;
    for _ in 0..64 {
        let Some(p) = parent else { break };
        if let Some(l) = ctx.db.first::<L>(sql::ledger(p, dist)).await? {
            return parse(l);
        }
        parent = ctx.release(site.id, p).await.ok().and_then(|r| r.parent_id);
    }
    Ok(vec![])
}

/// Regenerates a distribution's indexes in a draft (planned by
/// [`publish::plan`]): reads the members, the draft's paths and the by-hash
/// ledger, stores the planned blobs, commits the changes with the
/// bookkeeping in one batch.
pub(super) async fn publish_dist(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, d: &str, full: bool) -> std::result::Result<Value, ApiError> {
    let cfg = settings::<Deb>(ctx, site.id, d).await?;
    let keys = Keys::<Deb>::of(ctx, site, &cfg).await?;

    let started = super::now_ms();
    let members: Vec<publish::Member> = all_members(ctx, site, rel, d)
        .await?
        .into_iter()
        .map(|m| publish::Member {
            component: m.component,
            sha256: m.sha256,
            size: m.size as u64,
            package: m.package,
            version: m.version,
            architecture: m.architecture,
            control: m.control,
            pool: m.pool,
        })
        .collect();
    #[derive(Deserialize)]
    struct Dirty {
        dist: String,
        component: String,
        architecture: String,
    }
    let dirty: Vec<(String, String)> = ctx
        .db
        .all::<Dirty>(sql::dirty(rel.id))
        .await?
        .into_iter()
        .filter(|x| x.dist == d)
        .map(|x| (x.component, x.architecture))
        .collect();
    let existing: BTreeMap<String, (String, u64)> =
        paths_under(ctx, site, rel, &format!("dists/{d}/")).await?.into_iter().map(|(path, row)| (path, (row.sha256, row.size as u64))).collect();
    let previous = previous_ledger(ctx, site, rel, d).await?;
    let listed = super::now_ms();

    let input = publish::Input {
        dist: d,
        site_name: &site.name,
        cfg: &cfg,
        members: &members,
        dirty: &dirty,
        existing: &existing,
        previous_ledger: &previous,
        now_secs: (ctx.now / 1000) as u64,
        full,
        signing: keys.signing(),
    };
    let plan = Deb::plan(&input).map_err(ApiError::internal)?;
    let planned = super::now_ms();
    let extra = vec![
        sql::clear_dirty(rel.id, d),
        sql::put_ledger(rel.id, d, &serde_json::to_string(&plan.ledger).expect("serialisable")),
        sql::set_pending(rel.id, d, plan.waits_for_signatures.then_some(plan.release_sha256.as_str())),
    ];
    let changes = carry_out(ctx, site, plan.publication).await?;
    let stored = super::now_ms();
    ctx.db
        .batch(store::apply_changes_with(site.id, rel.id, &changes, extra))
        .await
        .map_err(|e| batch_err(e, &format!("release {} stopped being a draft", rel.id)))?;
    let regenerated: Vec<String> = plan.regenerated.iter().map(|(c, a)| format!("{c}/binary-{a}")).collect();
    Ok(json!({
        "dist": d,
        "packages": members.len(),
        "regenerated": regenerated,
        "by_hash_pruned": plan.by_hash_pruned,
        "release_sha256": plan.release_sha256,
        "signing": if plan.waits_for_signatures { "waiting for InRelease and Release.gpg" } else { "signed by the server" },
        "timings_ms": {"read_packages": listed - started, "plan": planned - listed, "store": stored - planned, "commit": super::now_ms() - stored},
    }))
}

/// Before activation: regenerate what changed (server-signed dists), or
/// explain what a client-signed dist still needs.
pub(super) async fn prepare_activation(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow) -> std::result::Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Dirty {
        dist: String,
    }
    let dists: BTreeSet<String> = ctx.db.all::<Dirty>(sql::dirty(rel.id)).await?.into_iter().map(|d| d.dist).collect();
    for d in dists {
        if settings::<Deb>(ctx, site.id, &d).await?.client_signed() {
            return Err(ApiError::conflict(format!(
                "dist {d} changed and is signed by you: POST …/releases/{}/deb/{d}/publish, sign its Release and upload the signatures",
                rel.id
            )));
        }
        publish_dist(ctx, site, rel, &d, false).await?;
    }
    #[derive(Deserialize)]
    struct Pending {
        dist: String,
    }
    if let Some(p) = ctx.db.first::<Pending>(sql::pending_dists(rel.id)).await? {
        return Err(ApiError::conflict(format!("dist {} waits for InRelease and Release.gpg: PUT …/releases/{}/deb/{}/signatures", p.dist, rel.id, p.dist)));
    }
    Ok(())
}

/// apt ignores a Release older (by Date) than the one it has: a replay
/// guard. So re-activating a release that published Debian dists needs those
/// dists published afresh (new dates, new signatures) in a new release made
/// from it: these are they. A client-signed dist cannot be re-signed here:
/// the user is told how to do it.
pub(super) async fn rollback_scopes(ctx: &Ctx<'_>, site: &SiteRow, target: &ReleaseRow) -> std::result::Result<Vec<String>, ApiError> {
    #[derive(Deserialize)]
    struct D {
        dist: String,
    }
    let dists: Vec<String> = ctx.db.all::<D>(sql::published_dists(target.id)).await?.into_iter().map(|d| d.dist).collect();
    for d in &dists {
        if settings::<Deb>(ctx, site.id, d).await?.client_signed() {
            return Err(ApiError::conflict(format!(
                "dist {d} is signed by you, and apt ignores an older Release: create a release from {} (\"from\": {}), publish, sign and activate it",
                target.id, target.id
            )));
        }
    }
    Ok(dists)
}
