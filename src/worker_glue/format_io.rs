//! The I/O every package format shares, generic over the pure [`Format`] and
//! [`Signed`] traits: inspecting an upload from R2, admitting it to a draft,
//! settings and keys, and the user's signatures. A format's own glue
//! (`deb.rs`, `apk.rs`, `helm.rs`) adds only its routes and member rows.

use super::service::{batch_err, package_blob, ApiResult, ApiResultOf, Ctx, ReleaseRow, SiteRow, for_each_chunk, format_key, format_settings, read_blob_range, refuse_republished, signing_secret, store_bytes, PackageBlob, PathRow};
use crate::api::{ApiError, Change};
use crate::formats::inspect::{Inspector, Need};
use crate::formats::{self, Admission, Format, Signed, SigningKeys};
use crate::store;
use worker::Request;

/// Inspects a stored upload as format `F` does: answers its inspector from
/// R2 (small ranges whole, long ones streamed chunk by chunk). A refusal is
/// 422 with the format's code and words.
pub(super) async fn inspect<F: Format>(ctx: &Ctx<'_>, sha: &str, size: u64) -> ApiResultOf<F::Member> {
    let refused = |reason: String| ApiError::new(422, F::REFUSAL.0, format!("{}: {reason}", F::REFUSAL.1));
    let mut inspector = F::inspector(size);
    let mut given = None;
    for _ in 0..64 {
        match inspector.step(given.take()).map_err(refused)? {
            Need::Bytes { offset, len } => given = Some(read_blob_range(ctx, sha, offset, len).await?),
            Need::Stream { offset, len } => for_each_chunk(ctx, sha, offset, len, |chunk| inspector.push(chunk)).await?.map_err(refused)?,
            Need::Done(member) => return Ok(member),
        }
    }
    Err(ApiError::internal(format!("the {} inspection did not finish", F::NAME)))
}

/// Adds an accepted upload to a draft: 409 when it would take a path that
/// holds other content (unless `replace`) or give a path published as
/// immutable other bytes; else its changes, the statements that index its
/// blob and the format's `rows` commit in one batch.
pub(super) async fn admit(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, blob: PackageBlob, replace: bool, a: Admission, rows: Vec<store::Stmt>) -> ApiResultOf<()> {
    let mut changes = a.changes;
    if let Some(existing) = ctx.db.first::<PathRow>(store::release_path(site.id, rel.read_seq(), rel.id, &a.occupies)).await? {
        if existing.sha256 != blob.sha {
            if !replace {
                return Err(ApiError::conflict(format!("{} with different content; add ?replace=true to replace it", a.conflict)));
            }
            changes.extend(a.on_replace);
        }
    }
    refuse_republished(ctx, site.id, &a.served).await?;
    let mut stmts = blob.index;
    stmts.extend(store::apply_changes_with(site.id, rel.id, &changes, rows));
    ctx.db.batch(stmts).await.map_err(|e| batch_err(e, &format!("release {} stopped being a draft", rel.id)))?;
    Ok(())
}

/// One upload added to a draft's scope, the same way for every format:
/// stored (or named by digest), inspected, admitted with the format's record
/// and the index part it makes dirty.
pub(super) async fn add<F: crate::formats::Ingest>(ctx: &Ctx<'_>, req: &mut Request, s: &str, r: i64, scope: F::Scope, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    let site = ctx.site(s, crate::auth::Scope::Publish).await?;
    let rel = ctx.draft(site.id, r).await?;
    let replace = query("replace").map_or(false, |v| v == "1" || v == "true");
    let blob = package_blob(ctx, req, &site, query).await?;
    let (sha, size) = (blob.sha.clone(), blob.size);
    let member = inspect::<F>(ctx, &sha, size).await?;
    let (table, columns) = F::RECORDS;
    let mut rows = vec![store::insert_records(table, columns, &[F::record(&member, &sha)], ctx.now)];
    rows.extend(store::formats::mark_dirty_many(rel.id, F::NAME, &[F::dirty(&member, &scope)]));
    admit(ctx, &site, &rel, blob, replace, F::admission(&member, &sha, &scope), rows).await?;
    Ok((201, F::describe(&member, &sha, size, &scope)))
}

/// A site's settings of format `F` for a publication scope.
pub(super) async fn settings<F: Signed>(ctx: &Ctx<'_>, site_id: i64, scope: &str) -> ApiResultOf<F::Settings> {
    format_settings(ctx, site_id, F::NAME, F::settings_scope(scope)).await
}

/// The site's registered client key of format `F`, if any.
pub(super) async fn client_key<F: Signed>(ctx: &Ctx<'_>, site_id: i64) -> ApiResultOf<Option<F::ClientKey>> {
    match format_key(ctx, site_id, F::NAME).await? {
        Some(stored) => F::client_key(&stored).map(Some).map_err(|e| ApiError::internal(format!("the stored {} key is unreadable: {e}", F::NAME))),
        None => Ok(None),
    }
}

/// The key that signs a publication of format `F`: the server's (from its
/// Worker secret) or the user's registered one (409 saying how to register
/// it when there is none).
pub(super) enum Keys<F: Signed> {
    Server(F::ServerKey),
    Client(F::ClientKey),
}

impl<F: Signed> Keys<F> {
    pub(super) async fn of(ctx: &Ctx<'_>, site: &SiteRow, settings: &F::Settings) -> ApiResultOf<Keys<F>> {
        if F::client_signed(settings) {
            let key = client_key::<F>(ctx, site.id).await?;
            return key.map(Keys::Client).ok_or_else(|| ApiError::conflict(format!("client-side signing needs a public key: PUT /sites/{{site}}/{}/key", F::NAME)));
        }
        let (name, what, passphrase) = F::SERVER_SECRET;
        let secret = signing_secret(ctx, site, name, what)?;
        let passphrase = passphrase.and_then(|p| ctx.env.secret(p).ok()).map(|s| s.to_string());
        F::server_key(&secret, passphrase.as_deref()).map(Keys::Server).map_err(|e| ApiError::internal(format!("the {} signing key is unusable: {e}", F::NAME)))
    }

    pub(super) fn signing(&self) -> formats::Signing<'_, F::ServerKey, F::ClientKey> {
        match self {
            Keys::Server(k) => formats::Signing::Server(k),
            Keys::Client(k) => formats::Signing::Client(k),
        }
    }
}

/// The blob a part of a scope of a draft waits to have signed (409 when it
/// waits for nothing).
pub(super) async fn pending<F: Signed>(ctx: &Ctx<'_>, rel: &ReleaseRow, scope: &str, part: &str) -> ApiResultOf<(String, Vec<u8>)> {
    #[derive(serde::Deserialize)]
    struct P {
        sha256: String,
    }
    let waiting = [scope, part].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("/");
    let p = ctx
        .db
        .first::<P>(store::formats::pending(rel.id, F::NAME, scope, part))
        .await?
        .ok_or_else(|| ApiError::conflict(format!("{waiting} of release {} is not waiting for signatures: publish it first", rel.id)))?;
    #[derive(serde::Deserialize)]
    struct B {
        size: i64,
    }
    let size = ctx.db.first::<B>(store::blob(&p.sha256)).await?.ok_or_else(|| ApiError::internal(format!("blob {} is missing", p.sha256)))?.size;
    let bytes = read_blob_range(ctx, &p.sha256, 0, size as u64).await?;
    Ok((p.sha256, bytes))
}

/// Takes the user's signatures for what a part of a scope waits to have
/// signed: checked against the site's registered key (422 `bad_signature`),
/// then the files they complete replace the wait, in one batch that holds
/// only while the part still waits for the same blob.
pub(super) async fn accept_signatures<F: Signed>(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, scope: &str, part: &str, body: F::Signatures) -> ApiResultOf<()> {
    let (sha, unsigned) = pending::<F>(ctx, rel, scope, part).await?;
    if let Some(path) = F::unsigned_path(scope, part) {
        let row = ctx.db.first::<PathRow>(store::release_path(site.id, rel.read_seq(), rel.id, &path)).await?;
        if row.map(|r| r.sha256) != Some(sha.clone()) {
            return Err(ApiError::conflict(format!("{path} changed since it was published; publish again")));
        }
    }
    let key = client_key::<F>(ctx, site.id).await?.ok_or_else(|| ApiError::conflict(format!("no {} public key registered for this site", F::NAME)))?;
    let settings = settings::<F>(ctx, site.id, scope).await?;
    let keys = SigningKeys { site_name: &site.name, settings: &settings, key: &key };
    let files = F::accept_signatures(&keys, scope, part, &unsigned, body).map_err(|e| ApiError::new(422, "bad_signature", e))?;
    let mut changes = Vec::with_capacity(files.len());
    for f in files {
        let sha = store_bytes(ctx, site.id, f.data).await?;
        changes.push(Change { path: f.path, sha256: Some(sha), content_type: Some(f.content_type.to_string()) });
    }
    let mut stmts = vec![store::formats::pending_is(rel.id, F::NAME, scope, part, &sha)];
    stmts.extend(store::apply_changes_with(site.id, rel.id, &changes, vec![store::formats::set_pending(rel.id, F::NAME, scope, part, None)]));
    ctx.db.batch(stmts).await.map_err(|e| batch_err(e, "it was published again meanwhile; fetch it and sign again"))?;
    Ok(())
}
