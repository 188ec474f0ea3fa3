//! Debian repositories in the admin API: ingest, removal, publishing
//! (Packages, Release, InRelease, Release.gpg, by-hash) and client-side signing.

use super::format_io::{client_key, accept_signatures, settings, Keys};
use super::service::{batch_err, carry_out, json_body, paged_members, paths_under, read_blob_range, ApiResult, Ctx, PathRow, ReleaseRow, SiteRow};
use crate::api::{self, ApiError, Change, Route};
use crate::auth::Scope;
use crate::formats::deb::{index, package, publish, repo, sign};
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
        .batch(store::apply_changes_with(site.id, rel.id, &changes, sql::mark_dirty(rel.id, d, c, arch, name)))
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
            component: component.to_string(),
            sha256: m.sha256,
            size: m.size,
            package: m.package,
            version: m.version,
            architecture: m.architecture,
        });
    }
    Ok(out)
}

/// The ledger the draft starts from: its own (re-publishing: its own
/// earlier by-hash generation is replaced), else the nearest ancestor's.
async fn previous_ledger(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, dist: &str) -> std::result::Result<publish::Ledger, ApiError> {
    #[derive(Deserialize)]
    struct L {
        ledger: String,
    }
    let parse = |l: L| publish::Ledger::parse(&l.ledger).map_err(ApiError::internal);
    if let Some(l) = ctx.db.first::<L>(sql::ledger(rel.id, dist)).await? {
        let mut own = parse(l)?;
        if !own.by_hash.is_empty() {
            own.by_hash.remove(0);
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
    Ok(publish::Ledger::default())
}

/// The architectures each component of a dist has: read whole (the first
/// publication, or a full one), else the previous publication's, with each
/// dirty (component, architecture) asked whether it still has members.
async fn present(
    ctx: &Ctx<'_>,
    site: &SiteRow,
    rel: &ReleaseRow,
    d: &str,
    previous: Option<&BTreeMap<String, BTreeSet<String>>>,
    dirty: &[(String, String)],
) -> std::result::Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    #[derive(Deserialize)]
    struct Pair {
        component: String,
        architecture: String,
    }
    let Some(before) = previous else {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in ctx.db.all::<Pair>(sql::present(site.id, rel.read_seq(), rel.id, d)).await? {
            out.entry(p.component).or_default().insert(p.architecture);
        }
        return Ok(out);
    };
    #[derive(Deserialize)]
    struct Any {
        #[allow(dead_code)]
        n: i64,
    }
    let mut checked = Vec::with_capacity(dirty.len());
    for (c, a) in dirty {
        let has = ctx.db.first::<Any>(sql::has_architecture(site.id, rel.read_seq(), rel.id, d, c, a)).await?.is_some();
        checked.push(((c.clone(), a.clone()), has));
    }
    Ok(publish::present_after(before, &checked))
}

/// The members of one `Packages` index with names above `lo` and up to `hi`.
#[allow(clippy::too_many_arguments)]
async fn index_members(
    ctx: &Ctx<'_>,
    site: &SiteRow,
    rel: &ReleaseRow,
    d: &str,
    c: &str,
    a: &str,
    lo: Option<&str>,
    hi: Option<&str>,
) -> std::result::Result<Vec<publish::Member>, ApiError> {
    let rows: Vec<MemberRow> =
        paged_members(ctx, |after, limit| sql::index_members(site.id, rel.read_seq(), rel.id, d, c, a, lo, hi, after, limit), |m: &MemberRow| &m.path).await?;
    Ok(rows
        .into_iter()
        .map(|m| publish::Member {
            pool: package::pool_path_of(c, &m.source, &m.package, &m.version, &m.architecture),
            component: c.to_string(),
            sha256: m.sha256,
            size: m.size as u64,
            package: m.package,
            version: m.version,
            architecture: m.architecture,
            control: m.control,
        })
        .collect())
}

/// A recorded layout (see [`publish::layout_key`]).
#[derive(Deserialize)]
struct LayoutRow {
    sha256: String,
    plain_sha256: String,
    xz_sha256: String,
    layout: String,
}

/// The recorded layouts of a dist's served indexes, by (component,
/// architecture), and the digests of the plain indexes listed but not served
/// (by path), read from them.
async fn recorded_layouts(
    ctx: &Ctx<'_>,
    site: &SiteRow,
    d: &str,
    existing: &BTreeMap<String, (String, u64)>,
) -> std::result::Result<(BTreeMap<(String, String), LayoutRow>, BTreeMap<String, (String, u64)>), ApiError> {
    use crate::formats::pieces;
    // An index's layout is recorded under its gz form's digest, else its xz form's, else its plain one's.
    let prefix = format!("dists/{d}/");
    let mut keys: BTreeMap<(String, String), (u8, String)> = BTreeMap::new();
    for (path, (sha, _)) in existing.range(prefix.clone()..) {
        let Some(rest) = path.strip_prefix(&prefix) else { break };
        let Some((c, a, file)) = index::packages_path_parts(rest) else { continue };
        let rank = match file {
            "Packages.gz" => 0,
            "Packages.xz" => 1,
            _ => 2,
        };
        let slot = keys.entry((c.to_string(), a.to_string())).or_insert((u8::MAX, String::new()));
        if rank < slot.0 {
            *slot = (rank, sha.clone());
        }
    }
    if keys.is_empty() {
        return Ok((BTreeMap::new(), BTreeMap::new()));
    }
    let wanted: Vec<&str> = keys.values().map(|(_, k)| k.as_str()).collect();
    let mut rows: BTreeMap<String, LayoutRow> = ctx.db.all::<LayoutRow>(store::formats::layouts(site.id, &wanted)).await?.into_iter().map(|r| (r.sha256.clone(), r)).collect();
    let mut by_pair = BTreeMap::new();
    let mut listed = BTreeMap::new();
    for ((c, a), (_, key)) in keys {
        let Some(row) = rows.remove(&key) else { continue };
        let plain_path = format!("{prefix}{c}/binary-{a}/Packages");
        if !existing.contains_key(&plain_path) {
            if let Some(digest) = serde_json::from_str::<pieces::Layout>(&row.layout).ok().and_then(|l| pieces::plain_digest(&l)) {
                listed.insert(plain_path, digest);
            }
        }
        by_pair.insert((c, a), row);
    }
    Ok((by_pair, listed))
}

/// What splicing an index around the changed names needs, when it can be
/// spliced: its three files are the ones a recorded layout describes, every
/// dirty part of it names what changed, the change touches at most half
/// its pieces, and it is served in the forms the settings ask for. Otherwise None: it is regenerated whole.
#[allow(clippy::too_many_arguments)]
async fn splice_source(
    ctx: &Ctx<'_>,
    site: &SiteRow,
    rel: &ReleaseRow,
    cfg: &repo::DistConfig,
    d: &str,
    c: &str,
    a: &str,
    existing: &BTreeMap<String, (String, u64)>,
    recorded: Option<&LayoutRow>,
    changed: &BTreeSet<String>,
) -> std::result::Result<Option<publish::Source>, ApiError> {
    use crate::formats::pieces;
    if changed.is_empty() {
        return Ok(None);
    }
    let forms = cfg.forms();
    // The index as served now: every form the settings ask for, none other.
    let at = |p: &str| existing.get(&format!("dists/{d}/{p}"));
    let [plain, gz, xz] = index::packages_paths(c, a).map(|p| at(&p));
    if [(forms.plain, plain), (forms.gz, gz), (forms.xz, xz)].iter().any(|(on, f)| *on != f.is_some()) {
        return Ok(None);
    }
    let Some(row) = recorded else { return Ok(None) };
    if row.xz_sha256 != xz.map_or("", |(s, _)| s.as_str()) || plain.map_or(false, |(s, _)| *s != row.plain_sha256) {
        return Ok(None);
    }
    let Ok(layout) = serde_json::from_str::<pieces::Layout>(&row.layout) else { return Ok(None) };
    let runs = pieces::affected(&layout, changed);
    let touched: usize = runs.iter().map(|(a, b)| b - a + 1).sum();
    if layout.pieces.is_empty() || touched * 2 > layout.pieces.len() + 1 {
        return Ok(None);
    }
    async fn read(ctx: &Ctx<'_>, f: Option<&(String, u64)>) -> std::result::Result<Vec<u8>, ApiError> {
        match f {
            Some((sha, size)) => read_blob_range(ctx, sha, 0, *size).await,
            None => Ok(vec![]),
        }
    }
    let (plain, gz, xz) = futures_util::future::try_join3(read(ctx, plain), read(ctx, gz), read(ctx, xz)).await?;
    let old = pieces::Files { plain, gz, xz };
    if !pieces::fits(&layout, &old, forms) {
        return Ok(None);
    }
    let mut fresh = Vec::with_capacity(runs.len());
    for &run in &runs {
        let (lo, hi) = pieces::bounds(&layout, run);
        fresh.push(index_members(ctx, site, rel, d, c, a, lo, hi).await?);
    }
    Ok(Some(publish::Source::Splice { layout, old, runs, fresh }))
}

/// Regenerates a distribution's indexes in a draft (planned by
/// [`publish::plan`]): the indexes whose packages changed are spliced
/// around the changed names (or regenerated whole), the others listed as
/// they are; stores the planned blobs, commits the changes with the
/// bookkeeping (ledger, layouts, signatures awaited) in one batch.
pub(super) async fn publish_dist(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, d: &str, full: bool) -> std::result::Result<Value, ApiError> {
    let started = super::now_ms();
    #[derive(Deserialize)]
    struct Dirty {
        dist: String,
        component: String,
        architecture: String,
    }
    #[derive(Deserialize)]
    struct Name {
        part: String,
        name: String,
    }
    // What publishing reads first, asked at once.
    let (cfg, dirty, names, existing, previous) = futures_util::future::try_join5(
        settings::<Deb>(ctx, site.id, d),
        ctx.db.all::<Dirty>(sql::dirty(rel.id)),
        ctx.db.all::<Name>(sql::dirty_names(rel.id, d)),
        paths_under(ctx, site, rel, &format!("dists/{d}/")),
        previous_ledger(ctx, site, rel, d),
    )
    .await?;
    let keys = Keys::<Deb>::of(ctx, site, &cfg).await?;
    let dirty: Vec<(String, String)> = dirty.into_iter().filter(|x| x.dist == d).map(|x| (x.component, x.architecture)).collect();
    let existing: BTreeMap<String, (String, u64)> = existing.into_iter().map(|(path, row)| (path, (row.sha256, row.size as u64))).collect();
    let present = present(ctx, site, rel, d, previous.present.as_ref().filter(|_| !full), &dirty).await?;
    let (recorded, listed) = recorded_layouts(ctx, site, d, &existing).await?;
    let (_, _, regen) = publish::regeneration(d, &cfg, &present, &dirty, &existing, &listed, full);
    let mut sources = BTreeMap::new();
    for (c, a) in regen {
        // The names changed in this index: its own and its component's `all`
        // packages'. A dirty part that names nothing (marked before names were
        // kept) makes the index regenerate whole.
        let parts = [format!("{c}/{a}"), format!("{c}/all")];
        let named = dirty.iter().filter(|(dc, da)| dc == &c && (da == &a || da == "all")).all(|(dc, da)| names.iter().any(|n| n.part == format!("{dc}/{da}")));
        let changed: BTreeSet<String> = names.iter().filter(|n| parts.contains(&n.part)).map(|n| n.name.clone()).collect();
        let spliced = if full || !named { None } else { splice_source(ctx, site, rel, &cfg, d, &c, &a, &existing, recorded.get(&(c.clone(), a.clone())), &changed).await? };
        let source = match spliced {
            Some(s) => s,
            None => publish::Source::Full(index_members(ctx, site, rel, d, &c, &a, None, None).await?),
        };
        sources.insert((c, a), source);
    }
    let read = super::now_ms();

    let input = publish::Input {
        dist: d,
        site_name: &site.name,
        cfg: &cfg,
        present: &present,
        sources: &sources,
        existing: &existing,
        listed: &listed,
        previous_ledger: &previous.by_hash,
        now_secs: (ctx.now / 1000) as u64,
        signing: keys.signing(),
    };
    let plan = Deb::plan(&input).map_err(ApiError::internal)?;
    let planned = super::now_ms();
    let layouts: Vec<(String, String, String, String)> =
        plan.layouts.iter().map(|(gz, plain, xz, l)| (gz.clone(), plain.clone(), xz.clone(), serde_json::to_string(l).expect("serialisable"))).collect();
    let mut extra = sql::clear_dirty(rel.id, d);
    let ledger = publish::Ledger { by_hash: plan.ledger.clone(), present: Some(present.clone()) };
    extra.push(sql::put_ledger(rel.id, d, &serde_json::to_string(&ledger).expect("serialisable")));
    extra.push(sql::set_pending(rel.id, d, plan.waits_for_signatures.then_some(plan.release_sha256.as_str())));
    extra.push(store::formats::put_layouts(site.id, &layouts));
    let changes = carry_out(ctx, site, plan.publication).await?;
    let stored = super::now_ms();
    ctx.db
        .batch(store::apply_changes_with(site.id, rel.id, &changes, extra))
        .await
        .map_err(|e| batch_err(e, &format!("release {} stopped being a draft", rel.id)))?;
    let indexes: Vec<Value> = plan
        .counts
        .iter()
        .map(|(c, a, packages, rendered, pieces)| json!({"index": format!("{c}/binary-{a}"), "packages": packages, "pieces": pieces, "pieces_rendered": rendered}))
        .collect();
    Ok(json!({
        "dist": d,
        "indexes": indexes,
        "regenerated": plan.regenerated.iter().map(|(c, a)| format!("{c}/binary-{a}")).collect::<Vec<String>>(),
        "by_hash_pruned": plan.by_hash_pruned,
        "release_sha256": plan.release_sha256,
        "signing": if plan.waits_for_signatures { "waiting for InRelease and Release.gpg" } else { "signed by the server" },
        "timings_ms": {"read_packages": read - started, "plan": planned - read, "store": stored - planned, "commit": super::now_ms() - stored},
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
