//! Batch ingest, for every format on the `Ingest` trait: one request carries
//! many packages as a tar stream. Each file is taken whole as it arrives (one
//! at a time, at most 16 MiB), hashed, inspected from memory as a single
//! upload would be, and stored in R2 (a few puts in flight, each
//! digest-checked): small files together in packs, larger ones each under its
//! digest. Memory holds a file, the pack being filled and the puts in flight
//! (at most ~40 MiB), never the batch. Then every record, blob row, place
//! and change of the batch goes into the draft in one D1 batch. All or
//! nothing: a bad file is named with its reason, and nothing of the batch is
//! added.

use super::db::BatchError;
use super::service::{batch_err, refuse_republished, ApiResult, ApiResultOf, Ctx, ReleaseRow, SiteRow};
use super::BUCKET_BINDING;
use crate::api::{ApiError, Change};
use crate::auth::Scope;
use crate::formats::{batch::Splitter, inspect, Ingest};
use crate::store;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;
use serde_json::json;
use worker::*;

/// The largest file a batch takes (larger packages go up on their own,
/// streamed): a file is held whole while it is inspected and stored, and the
/// isolate has 128 MB.
pub const MAX_FILE: u64 = 16 << 20;
/// The most files one batch takes.
pub const MAX_FILES: usize = 20_000;
/// Bytes of files being stored at once.
const IN_FLIGHT_BYTES: usize = 16 << 20;
const IN_FLIGHT_PUTS: usize = 8;
/// Files smaller than this are stored together, in packs: one R2 put per
/// pack instead of one per file (a put costs about as much as a small
/// file's whole ingest).
const PACK_FILE_MAX: usize = 1 << 20;
/// A pack is put once it holds this much.
const PACK_BYTES: usize = 8 << 20;

/// A file of the batch that inspection accepted.
struct Accepted<M> {
    name: String,
    sha: String,
    size: u64,
    member: M,
    /// Where it was stored, when in a pack: the pack's key and the offset.
    packed: Option<(std::rc::Rc<str>, u64)>,
}

/// The R2 puts of a batch in flight, bounded by count and bytes; the first
/// failure is kept.
struct Puts<'a> {
    bucket: Bucket,
    running: FuturesUnordered<std::pin::Pin<Box<dyn std::future::Future<Output = (usize, std::result::Result<(), String>)> + 'a>>>,
    bytes: usize,
    failed: Option<String>,
}

impl<'a> Puts<'a> {
    /// Stores `data` under `key` (digest-checked against `sha`), after
    /// waiting for room.
    async fn put(&mut self, key: String, sha: String, data: Vec<u8>) {
        while !self.running.is_empty() && (self.running.len() >= IN_FLIGHT_PUTS || self.bytes + data.len() > IN_FLIGHT_BYTES) {
            self.one_done().await;
        }
        let n = data.len();
        self.bytes += n;
        let bucket = self.bucket.clone();
        self.running.push(Box::pin(async move {
            let r = super::blobs::put_checked(&bucket, &key, &sha, Data::Bytes(data)).await.map(|_| ()).map_err(|e| e.to_string());
            (n, r)
        }));
    }

    async fn one_done(&mut self) {
        if let Some((n, r)) = self.running.next().await {
            self.bytes -= n;
            if let Err(e) = r {
                self.failed.get_or_insert(e);
            }
        }
    }

    async fn finish(&mut self) -> Option<String> {
        while !self.running.is_empty() {
            self.one_done().await;
        }
        self.failed.take()
    }
}

/// Small files gathered into one object. A pack of one file is stored as
/// that file (under its digest).
#[derive(Default)]
struct Pack {
    bytes: Vec<u8>,
    /// Index into the accepted files, with the file's digest and offset.
    members: Vec<(usize, String, u64)>,
}

impl Pack {
    /// Stores the pack (if it holds anything) and notes where its files lie.
    async fn seal<M>(&mut self, puts: &mut Puts<'_>, accepted: &mut [Accepted<M>]) {
        let Pack { bytes, members } = std::mem::take(self);
        match members.len() {
            0 => {}
            1 => puts.put(store::blob_key(&members[0].1), members[0].1.clone(), bytes).await,
            _ => {
                let hex = crate::auth::sha256_hex(&bytes);
                let key: std::rc::Rc<str> = store::pack_key(&hex).into();
                puts.put(key.to_string(), hex, bytes).await;
                for (i, _, at) in members {
                    accepted[i].packed = Some((key.clone(), at));
                }
            }
        }
    }
}

fn bad(errors: Vec<serde_json::Value>) -> ApiError {
    let first = errors.first().map(|e| format!("{}: {}", e["file"].as_str().unwrap_or(""), e["reason"].as_str().unwrap_or(""))).unwrap_or_default();
    let n = errors.len();
    let message = if n == 1 { format!("nothing was added: {first}") } else { format!("nothing was added: {n} files were refused; the first: {first}") };
    ApiError::new(422, "invalid_batch", message).with_details(json!({"errors": errors}))
}

pub(super) async fn add<F: Ingest>(ctx: &Ctx<'_>, req: &mut Request, s: &str, r: i64, scope: F::Scope, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    let site = ctx.site(s, Scope::Publish).await?;
    let rel = ctx.draft(site.id, r).await?;
    let replace = query("replace").map_or(false, |v| v == "1" || v == "true");
    let is_json = req.headers().get("content-type").ok().flatten().is_some_and(|t| t.starts_with("application/json"));
    let accepted = if is_json { by_digest::<F>(ctx, req, &site).await? } else { receive::<F>(ctx, req).await? };
    if accepted.is_empty() {
        return Err(ApiError::bad_request("the batch holds no files: send a tar stream of packages"));
    }
    record::<F>(ctx, &site, &rel, &scope, &accepted, replace).await?;
    let described: Vec<serde_json::Value> = accepted.iter().map(|a| F::describe(&a.member, &a.sha, a.size, &scope)).collect();
    Ok((201, json!({"added": accepted.len(), "release": rel.id, "packages": described})))
}

/// The most digests one JSON batch names (each is inspected from R2).
pub const MAX_DIGESTS: usize = 1_000;

/// A batch of blobs the site uploaded before, named by digest
/// (`{"sha256": ["…", …]}`): each inspected from R2; nothing is uploaded.
/// A batch published in one request: the files received and stored once,
/// then recorded into a new release made from the active one and activated.
/// When another publication activates first (the compare-and-swap fails),
/// the same files go into a release made from the new active one, after a
/// short wait, up to `TRIES` times: concurrent publishers all land. A
/// refused batch or a failure leaves no draft behind.
pub(super) async fn publish<F: Ingest>(ctx: &Ctx<'_>, req: &mut Request, s: &str, scope: F::Scope, query: &dyn Fn(&str) -> Option<String>) -> ApiResult {
    const TRIES: u32 = 6;
    let site = ctx.site(s, Scope::Publish).await?;
    let replace = query("replace").map_or(false, |v| v == "1" || v == "true");
    let is_json = req.headers().get("content-type").ok().flatten().is_some_and(|t| t.starts_with("application/json"));
    let started = super::now_ms();
    let accepted = if is_json { by_digest::<F>(ctx, req, &site).await? } else { receive::<F>(ctx, req).await? };
    if accepted.is_empty() {
        return Err(ApiError::bad_request("the batch holds no files: send a tar stream of packages"));
    }
    let received = super::now_ms();
    let note = format!("{} packages published in one request", accepted.len());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let rel: ReleaseRow = ctx
            .db
            .first(store::create_release_from_active(site.id, Some(&note), ctx.now))
            .await?
            .ok_or_else(|| ApiError::internal("the release was not created"))?;
        let made = super::now_ms();
        // Everything of the batch already published as it is: no new release.
        if unchanged::<F>(ctx, &site, &rel, &scope, &accepted).await? {
            let _ = ctx.db.batch(store::delete_draft(site.id, rel.id)).await;
            let described: Vec<serde_json::Value> = accepted.iter().map(|a| F::describe(&a.member, &a.sha, a.size, &scope)).collect();
            return Ok((200, json!({"unchanged": true, "release": rel.parent_id, "added": 0, "attempts": attempt, "packages": described})));
        }
        let mut recorded = made;
        let outcome = async {
            record::<F>(ctx, &site, &rel, &scope, &accepted, replace).await?;
            recorded = super::now_ms();
            super::admin::activate_draft(ctx, &site, &rel).await
        }
        .await;
        match outcome {
            Ok((_, mut activated)) => {
                let described: Vec<serde_json::Value> = accepted.iter().map(|a| F::describe(&a.member, &a.sha, a.size, &scope)).collect();
                activated["added"] = json!(accepted.len());
                activated["attempts"] = json!(attempt);
                activated["packages"] = json!(described);
                activated["timings_ms"] =
                    json!({"receive": received - started, "release": made - received, "record": recorded - made, "publish_and_activate": super::now_ms() - recorded});
                return Ok((201, activated));
            }
            Err(e) => {
                // The draft goes: nothing half-published stays behind.
                let _ = ctx.db.batch(store::delete_draft(site.id, rel.id)).await;
                if e.code != "stale_release" || attempt == TRIES {
                    return Err(e);
                }
                let pause = 20 * (1u64 << attempt) + (js_sys::Math::random() * 20.0) as u64;
                worker::Delay::from(std::time::Duration::from_millis(pause)).await;
            }
        }
    }
}

/// Whether every change the batch would make is in the release already
/// (the same blob at every path): publishing it again would change nothing.
async fn unchanged<F: Ingest>(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, scope: &F::Scope, accepted: &[Accepted<F::Member>]) -> ApiResultOf<bool> {
    #[derive(Deserialize)]
    struct P {
        path: String,
        sha256: String,
    }
    let mut wanted: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for a in accepted {
        for c in F::admission(&a.member, &a.sha, scope).changes {
            match c.sha256 {
                Some(sha) => wanted.insert(c.path, sha),
                None => return Ok(false),
            };
        }
    }
    let paths: Vec<&str> = wanted.keys().map(String::as_str).collect();
    let mut same = 0;
    for chunk in paths.chunks(4_000) {
        for p in ctx.db.all::<P>(store::paths_among(site.id, rel.read_seq(), rel.id, chunk)).await? {
            if wanted.get(&p.path) == Some(&p.sha256) {
                same += 1;
            }
        }
    }
    Ok(same == wanted.len())
}

async fn by_digest<F: Ingest>(ctx: &Ctx<'_>, req: &mut Request, site: &SiteRow) -> ApiResultOf<Vec<Accepted<F::Member>>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        sha256: Vec<String>,
    }
    let b: Body = crate::api::parse_json(&super::service::json_body(req).await?)?;
    let mut digests: Vec<String> = Vec::new();
    for d in b.sha256 {
        let d = d.strip_prefix("sha256:").unwrap_or(&d).to_string();
        if !crate::api::valid_sha256(&d) {
            return Err(ApiError::bad_request(format!("{d:?} is not a sha256 (64 lower-case hex characters)")));
        }
        if !digests.contains(&d) {
            digests.push(d);
        }
    }
    if digests.len() > MAX_DIGESTS {
        return Err(ApiError::new(413, "too_large", format!("a batch names at most {MAX_DIGESTS} digests; send a tar stream for more")));
    }
    let refs: Vec<&str> = digests.iter().map(String::as_str).collect();
    let missing = super::service::not_held(ctx, site.id, &refs).await?;
    if !missing.is_empty() {
        return Err(super::service::not_held_error(&site.name, &missing));
    }
    #[derive(Deserialize)]
    struct S {
        sha256: String,
        size: f64,
    }
    let sizes: std::collections::BTreeMap<String, u64> =
        ctx.db.all::<S>(store::blob_sizes(&refs)).await?.into_iter().map(|s| (s.sha256, s.size as u64)).collect();
    let mut accepted = Vec::new();
    let mut errors = Vec::new();
    // What inspection made of these bytes before (the format's records, content-addressed) ...
    let mut known: std::collections::BTreeMap<String, F::Member> = std::collections::BTreeMap::new();
    for chunk in refs.chunks(500) {
        for row in ctx.db.all::<serde_json::Map<String, serde_json::Value>>(store::records_among(F::RECORDS.0, chunk)).await? {
            if let (Some(sha), Some(member)) = (row.get("sha256").and_then(|s| s.as_str()), F::from_record(&row)) {
                known.insert(sha.to_string(), member);
            }
        }
    }
    // ... else inspected from R2, a few at a time, in the order named.
    let sizes = &sizes;
    let mut inspected = futures_util::stream::iter(digests.into_iter().map(|sha| {
        let before = known.remove(&sha);
        async move {
            let size = *sizes.get(&sha).ok_or_else(|| ApiError::internal(format!("blob {sha} has no size")))?;
            let r = match before {
                Some(member) => Ok(member),
                None => super::format_io::inspect::<F>(ctx, &sha, size).await,
            };
            Ok::<_, ApiError>((sha, size, r))
        }
    }))
    .buffered(IN_FLIGHT_PUTS);
    while let Some(one) = inspected.next().await {
        let (sha, size, r) = one?;
        let name = format!("sha256:{sha}");
        match r {
            Ok(member) => accepted.push(Accepted { name, sha, size, member, packed: None }),
            Err(e) if e.status == 422 => errors.push(json!({"file": name, "reason": e.message})),
            Err(e) => return Err(e),
        }
    }
    if !errors.is_empty() {
        return Err(bad(errors));
    }
    Ok(accepted)
}

/// Reads the tar stream: every file hashed, inspected and stored, or every
/// refusal collected (then nothing is recorded). Small files are stored
/// together in packs of up to `PACK_BYTES`; the others one by one.
async fn receive<F: Ingest>(ctx: &Ctx<'_>, req: &mut Request) -> ApiResultOf<Vec<Accepted<F::Member>>> {
    let Some(body) = req.inner().body() else { return Ok(vec![]) };
    let reader: web_sys::ReadableStreamDefaultReader = wasm_bindgen::JsCast::unchecked_into(body.get_reader());
    let bucket = ctx.env.bucket(BUCKET_BINDING).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut splitter = Splitter::new(MAX_FILE);
    let mut accepted: Vec<Accepted<F::Member>> = Vec::new();
    let mut errors: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut puts = Puts { bucket, running: FuturesUnordered::new(), bytes: 0, failed: None };
    let mut pack = Pack::default();
    loop {
        let chunk = super::streams::next_chunk(&reader).await.map_err(|e| ApiError::bad_request(format!("the batch body: {e}")))?;
        let files = match &chunk {
            Some(c) => splitter.push(&c.to_vec()).map_err(|e| ApiError::new(400, "invalid_batch", format!("the batch is not a tar stream Wharf reads: {e}")))?,
            None => vec![],
        };
        for f in files {
            if accepted.len() + errors.len() >= MAX_FILES {
                return Err(ApiError::new(413, "too_large", format!("a batch takes at most {MAX_FILES} files")));
            }
            let sha = crate::auth::sha256_hex(&f.data);
            if let Some(claimed) = f.claimed.as_deref().filter(|c| *c != sha) {
                errors.push(json!({"file": f.name, "reason": format!("its sha256 is {sha}, not the {claimed} it was sent with")}));
                continue;
            }
            let size = f.data.len() as u64;
            match inspect::in_memory(F::inspector(size), &f.data, 1 << 20) {
                Err(reason) => errors.push(json!({"file": f.name, "reason": format!("{}: {reason}", F::REFUSAL.1)})),
                Ok(member) => {
                    accepted.push(Accepted { name: f.name, sha: sha.clone(), size, member, packed: None });
                    // Stored once per digest, and only while the batch can still land.
                    if !errors.is_empty() || !seen.insert(sha.clone()) {
                        continue;
                    }
                    if f.data.is_empty() || f.data.len() >= PACK_FILE_MAX {
                        puts.put(store::blob_key(&sha), sha, f.data).await;
                        continue;
                    }
                    if pack.bytes.len() + f.data.len() > PACK_BYTES {
                        pack.seal(&mut puts, &mut accepted).await;
                    }
                    pack.members.push((accepted.len() - 1, sha, pack.bytes.len() as u64));
                    pack.bytes.extend_from_slice(&f.data);
                }
            }
        }
        if chunk.is_none() {
            break;
        }
    }
    splitter.finish().map_err(|e| ApiError::new(400, "invalid_batch", format!("the batch is not a tar stream Wharf reads: {e}")))?;
    if errors.is_empty() {
        pack.seal(&mut puts, &mut accepted).await;
    }
    let put_failed = puts.finish().await;
    if !errors.is_empty() {
        return Err(bad(errors));
    }
    if let Some(e) = put_failed {
        return Err(ApiError::internal(format!("storing the batch: {e}")));
    }
    Ok(accepted)
}

/// Records an accepted batch in the draft: conflicts checked first (all of
/// them), then one D1 batch.
async fn record<F: Ingest>(ctx: &Ctx<'_>, site: &SiteRow, rel: &ReleaseRow, scope: &F::Scope, accepted: &[Accepted<F::Member>], replace: bool) -> ApiResultOf<()> {
    let admissions: Vec<_> = accepted.iter().map(|a| F::admission(&a.member, &a.sha, scope)).collect();
    // Two files of the batch taking one place with different bytes.
    let mut places = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    for (a, adm) in accepted.iter().zip(&admissions) {
        if let Some((other, sha)) = places.insert(adm.occupies.clone(), (a.name.clone(), a.sha.clone())) {
            if sha != a.sha {
                errors.push(json!({"file": a.name, "reason": format!("{} (as {other} of this batch)", adm.conflict)}));
            }
        }
    }
    if !errors.is_empty() {
        return Err(bad(errors));
    }
    // What the draft holds at those places.
    #[derive(Deserialize)]
    struct P {
        path: String,
        sha256: String,
    }
    let mut held = std::collections::BTreeMap::new();
    let occupied: Vec<&str> = admissions.iter().map(|a| a.occupies.as_str()).collect();
    for chunk in occupied.chunks(4_000) {
        for p in ctx.db.all::<P>(store::paths_among(site.id, rel.read_seq(), rel.id, chunk)).await? {
            held.insert(p.path, p.sha256);
        }
    }
    let mut changes: Vec<Change> = Vec::new();
    let mut served: Vec<Change> = Vec::new();
    let mut conflicts = Vec::new();
    for (a, adm) in accepted.iter().zip(admissions) {
        if held.get(&adm.occupies).is_some_and(|sha| *sha != a.sha) {
            if !replace {
                conflicts.push(json!({"file": a.name, "reason": format!("{} with different content; add ?replace=true to replace it", adm.conflict)}));
                continue;
            }
            changes.extend(adm.on_replace);
        }
        changes.extend(adm.changes);
        served.extend(adm.served);
    }
    if !conflicts.is_empty() {
        let mut e = bad(conflicts);
        e.status = 409;
        return Err(e);
    }
    refuse_republished(ctx, site.id, &served).await?;
    // One D1 batch: blob rows, the format's records, the changes, the dirty parts.
    let mut sizes: Vec<(&str, u64)> = accepted.iter().map(|a| (a.sha.as_str(), a.size)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (table, columns) = F::RECORDS;
    let mut extra = Vec::new();
    for chunk in sizes.chunks(2_000) {
        extra.extend(store::insert_owned_blobs(site.id, chunk, ctx.now));
    }
    // Where the packed files lie: one statement per pack (at most
    // PACK_BYTES / a few hundred bytes of files, well under D1's limits).
    let mut packs: std::collections::BTreeMap<&str, Vec<(&str, u64)>> = std::collections::BTreeMap::new();
    for a in accepted {
        if let Some((key, at)) = &a.packed {
            packs.entry(key).or_default().push((a.sha.as_str(), *at));
        }
    }
    for (key, members) in &packs {
        for chunk in members.chunks(4_000) {
            extra.push(store::place_in_pack(key, chunk));
        }
    }
    let mut rows = Vec::new();
    let mut bytes = 0;
    for a in accepted {
        let row = F::record(&a.member, &a.sha);
        bytes += row.iter().map(|v| v.to_string().len()).sum::<usize>();
        rows.push(row);
        if bytes > 512 << 10 {
            extra.push(store::insert_records(table, columns, &std::mem::take(&mut rows), ctx.now));
            bytes = 0;
        }
    }
    if !rows.is_empty() {
        extra.push(store::insert_records(table, columns, &rows, ctx.now));
    }
    let mut dirty: Vec<(String, String, String)> = accepted.iter().map(|a| F::dirty(&a.member, scope)).collect();
    dirty.sort();
    dirty.dedup();
    extra.extend(store::formats::mark_dirty_many(rel.id, F::NAME, &dirty));
    // Blob rows first: the changes name blobs by the rows they join.
    let mut stmts = Vec::new();
    let changes_stmts = store::apply_many(site.id, rel.id, &changes, vec![]);
    let (guard, rest) = changes_stmts.split_first().expect("a guard");
    stmts.push(guard.clone());
    stmts.extend(extra);
    stmts.extend(rest.iter().cloned());
    ctx.db.batch(stmts).await.map_err(|e| match e {
        BatchError::Precondition => batch_err(BatchError::Precondition, &format!("release {} stopped being a draft", rel.id)),
        other => batch_err(other, ""),
    })?;
    Ok(())
}
