//! Helm chart repositories in the admin API: charts added to a draft's
//! repository (inspected once), provenance files, removal, and publishing
//! (planned by [`crate::formats::helm::publish::plan`]).

use super::service::{batch_err, carry_out, json_body, paged_members, paths_under, read_blob_range, refuse_republished, store_bytes, ApiResult, ApiResultOf, Ctx, PathRow, ReleaseRow, SiteRow};
use crate::api::{ApiError, Change, Route};
use crate::auth::Scope;
use crate::formats::helm::{chart, publish};
use crate::formats::{Format, Helm};
use crate::store::{self, helm as sql};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use worker::*;

/// Largest provenance file taken.
const MAX_PROVENANCE: usize = 1 << 20;

pub(super) async fn dispatch(ctx: &Ctx<'_>, route: Route, req: &mut Request, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    use Route::*;
    match route {
        HelmAddChart(s, r, repo) => super::format_io::add::<Helm>(ctx, req, &s, r, repo, query).await,
        HelmListCharts(s, r, repo) => {
            let site = ctx.site(&s, Scope::Read).await?;
            let rel = ctx.release(site.id, r).await?;
            let list: Vec<Value> = charts(ctx, &site, &rel, &repo)
                .await?
                .iter()
                .map(|m| json!({"name": m.metadata.name, "version": m.metadata.version, "sha256": m.sha256, "size": m.size,
                                "provenance": m.provenance.as_ref().map(|(sha, _)| sha)}))
                .collect();
            Ok((200, json!({"repository": repo, "charts": list})))
        }
        HelmRemoveChart(s, r, repo, name, version) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            let member = sql::member_path(&repo, &chart::filename(&name, &version));
            if ctx.db.first::<PathRow>(store::release_path(site.id, rel.read_seq(), rel.id, &member)).await?.is_none() {
                return Err(ApiError::not_found(format!("{name} {version} is not in {repo}")));
            }
            let changes = [Change { path: format!("{member}.prov"), sha256: None, content_type: None }, Change { path: member, sha256: None, content_type: None }];
            commit(ctx, &site, &rel, &changes, vec![sql::mark_dirty(rel.id, &repo)]).await?;
            Ok((204, Value::Null))
        }
        HelmPutProvenance(s, r, repo, name, version) => add_provenance(ctx, req, &s, r, &repo, &name, &version).await,
        HelmPublish(s, r, repo) => {
            let site = ctx.site(&s, Scope::Publish).await?;
            let rel = ctx.draft(site.id, r).await?;
            Ok((200, publish_repo(ctx, &site, &rel, &repo).await?))
        }
        _ => Err(ApiError::internal("not a Helm route")),
    }
}

async fn commit(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, changes: &[Change], extra: Vec<store::Stmt>) -> ApiResultOf<()> {
    ctx.db
        .batch(store::apply_changes_with(site.id, rel.id, changes, extra))
        .await
        .map_err(|e| batch_err(e, &format!("release {} stopped being a draft", rel.id)))?;
    Ok(())
}

/// A provenance file (`helm package --sign`) for a chart of the draft: a PGP
/// clear-signed document naming the chart archive's sha256. Helm clients
/// verify its signature with their keyring; Wharf checks it is for this archive.
async fn add_provenance(ctx: &Ctx<'_>, req: &mut Request, s: &str, r: i64, repo: &str, name: &str, version: &str) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    let rel = ctx.draft(site.id, r).await?;
    let file = chart::filename(name, version);
    let member = sql::member_path(repo, &file);
    let chart_row =
        ctx.db.first::<PathRow>(store::release_path(site.id, rel.read_seq(), rel.id, &member)).await?.ok_or_else(|| ApiError::not_found(format!("{name} {version} is not in {repo}")))?;
    let body = json_body(req).await?;
    if body.len() > MAX_PROVENANCE {
        return Err(ApiError::new(413, "too_large", format!("provenance files are limited to {MAX_PROVENANCE} bytes")));
    }
    let text = String::from_utf8(body).map_err(|_| ApiError::new(422, "invalid_provenance", "a provenance file is text"))?;
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") || !text.contains("-----BEGIN PGP SIGNATURE-----") {
        return Err(ApiError::new(422, "invalid_provenance", "a provenance file is a PGP clear-signed document (helm package --sign)"));
    }
    if !text.contains(&format!("{file}: sha256:{}", chart_row.sha256)) {
        return Err(ApiError::new(422, "invalid_provenance", format!("the provenance file does not name {file} with sha256:{}", chart_row.sha256)));
    }
    let sha = store_bytes(ctx, site.id, text.into_bytes()).await?;
    let changes = [Change { path: format!("{member}.prov"), sha256: Some(sha.clone()), content_type: Some(publish::PROV_TYPE.into()) }];
    refuse_republished(ctx, site.id, &[Change { path: format!("{repo}/{file}.prov"), sha256: Some(sha.clone()), content_type: None }]).await?;
    commit(ctx, &site, &rel, &changes, vec![sql::mark_dirty(rel.id, repo)]).await?;
    Ok((200, json!({"name": name, "version": version, "repository": repo, "provenance": sha})))
}

#[derive(Deserialize)]
struct Row {
    path: String,
    sha256: String,
    size: f64,
    metadata: Option<String>,
    created_at: Option<f64>,
}

/// The charts of a repository in a release, with their provenance files.
async fn charts(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, repo: &str) -> ApiResultOf<Vec<publish::Member>> {
    let prefix = sql::member_prefix(repo);
    let rows: Vec<Row> = paged_members(ctx, |after, limit| sql::members(site.id, rel.read_seq(), rel.id, &prefix, after, limit), |r: &Row| &r.path).await?;
    let provenance: BTreeMap<String, (String, u64)> =
        rows.iter().filter_map(|r| Some((r.path.strip_suffix(".prov")?.to_string(), (r.sha256.clone(), r.size as u64)))).collect();
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.path.ends_with(".tgz")) {
        let metadata: chart::Metadata = serde_json::from_str(r.metadata.as_deref().unwrap_or("")).map_err(|e| ApiError::internal(format!("chart {}: {e}", r.path)))?;
        out.push(publish::Member {
            sha256: r.sha256.clone(),
            size: r.size as u64,
            metadata,
            created_ms: r.created_at.unwrap_or(0.0) as i64,
            provenance: provenance.get(&r.path).cloned(),
            pushed: false,
        });
    }
    out.sort_by(|a, b| (&a.metadata.name, &a.metadata.version).cmp(&(&b.metadata.name, &b.metadata.version)));
    Ok(out)
}

/// Publishes a chart repository of a draft: index.yaml, the archives and
/// provenance files, and the OCI artifacts, in one batch.
pub(super) async fn publish_repo(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, repo: &str) -> ApiResultOf<Value> {
    let mut members = charts(ctx, site, rel, repo).await?;
    members.extend(pushed_charts(ctx, site, rel, repo, &members).await?);
    members.sort_by(|a, b| (&a.metadata.name, &a.metadata.version).cmp(&(&b.metadata.name, &b.metadata.version)));
    let existing: BTreeMap<String, String> = paths_under(ctx, site, rel, &format!("{repo}/")).await?.into_iter().map(|(p, row)| (p, row.sha256)).collect();
    let plan = Helm::plan(&publish::Input { repository: repo, members: &members, existing: &existing, now_ms: ctx.now })
        .map_err(ApiError::internal)?;
    let changes = carry_out(ctx, site, plan).await?;
    commit(ctx, site, rel, &changes, sql::clear_dirty(rel.id, repo)).await?;
    Ok(json!({"repository": repo, "charts": members.len(), "index": format!("{repo}/index.yaml")}))
}

/// Charts pushed to the registry under `<repo>/<name>:<tag>` (`helm push
/// oci://host/<repo>`) that the repository does not have as uploads: listed
/// in its index.yaml too, their archives served beside it.
async fn pushed_charts(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, repo: &str, uploaded: &[publish::Member]) -> ApiResultOf<Vec<publish::Member>> {
    let prefix = format!("{}oci/{repo}/", store::INTERNAL_PREFIX);
    let have: std::collections::BTreeSet<(String, String)> =
        uploaded.iter().map(|m| (m.metadata.name.clone(), publish::oci_tag(&m.metadata.version))).collect();
    let mut out = Vec::new();
    for (path, row) in paths_under(ctx, site, rel, &prefix).await? {
        let Some((chart_name, tag)) = path[prefix.len()..].split_once("/_tags/") else { continue };
        if chart_name.contains('/') || have.contains(&(chart_name.to_string(), tag.to_string())) || row.size as usize > crate::oci::MAX_MANIFEST {
            continue;
        }
        let manifest = read_blob_range(ctx, &row.sha256, 0, row.size as u64).await?;
        let Some(pushed) = publish::pushed_chart(&manifest).filter(|p| p.config_size <= 1 << 20) else { continue };
        let config = read_blob_range(ctx, &pushed.config_sha256, 0, pushed.config_size).await?;
        let Some(metadata) = publish::pushed_metadata(&config, chart_name, tag) else { continue };
        out.push(publish::Member {
            sha256: pushed.chart_sha256,
            size: pushed.chart_size,
            metadata,
            created_ms: ctx.now,
            provenance: None,
            pushed: true,
        });
    }
    Ok(out)
}

/// Before activation: every repository whose charts changed is published.
pub(super) async fn prepare_activation(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow) -> ApiResultOf<()> {
    #[derive(Deserialize)]
    struct Dirty {
        repository: String,
    }
    for d in ctx.db.all::<Dirty>(sql::dirty(rel.id)).await? {
        publish_repo(ctx, site, rel, &d.repository).await?;
    }
    Ok(())
}

/// After `helm push` put a chart in the registry at `<repo>/<chart>`: the
/// classic repository `<repo>` is published again in a new release made from
/// the active one (its index.yaml then lists the chart), activated by
/// compare-and-swap and planned again when another change landed first. The
/// push has landed whatever happens here; on failure the chart waits for the
/// repository's next publication.
pub(super) async fn republish_after_push(env: &Env, site_name: &str, repo: &str) -> ApiResultOf<()> {
    let db = super::db::Db::open(env, super::db::Start::Primary)?;
    let site: SiteRow = db.first(store::site_by_name(site_name)).await?.ok_or_else(|| ApiError::not_found("the site is gone"))?;
    let who = crate::auth::Principal::Token { id: "helm-push".into(), site_id: Some(site.id), scope: Scope::Publish };
    let ctx = Ctx { env, db: &db, who, now: super::now_ms() };
    let note = format!("helm push: publish {repo}/index.yaml");
    let mut pause_ms = 20u64;
    for _ in 0..6 {
        let draft: ReleaseRow = ctx
            .db
            .first(store::create_release_from_active(site.id, Some(&note), super::now_ms()))
            .await?
            .ok_or_else(|| ApiError::internal("no draft was created"))?;
        let published = publish_repo(&ctx, &site, &draft, repo).await;
        let activated = match published {
            Ok(_) => ctx.db.batch(store::activate(site.id, draft.id, draft.parent_id, super::now_ms())).await.map(|_| super::memory::forget_routes()),
            Err(e) => Err(super::db::BatchError::Failed(e)),
        };
        match activated {
            Ok(()) => return Ok(()),
            Err(super::db::BatchError::Precondition) => {
                // Another release landed first: plan again on top of it.
                let _ = ctx.db.batch(store::delete_draft(site.id, draft.id)).await;
                super::service::back_off(&mut pause_ms, 1_000).await;
            }
            Err(super::db::BatchError::Failed(e)) => {
                let _ = ctx.db.batch(store::delete_draft(site.id, draft.id)).await;
                return Err(e);
            }
        }
    }
    Err(ApiError::new(503, "busy", "the site kept changing"))
}
