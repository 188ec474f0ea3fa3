//! `wharf deb add`, `wharf apk add`, `wharf helm add`: publish packages in
//! one command, all or nothing.
//!
//! The files are hashed concurrently; the site is asked which of them it
//! holds already (those are added by digest, never uploaded again); files
//! over the batch limit go up on their own (streamed, digest-checked). With
//! server signing and nothing held, one request does everything (the
//! server's one-request publish: stored once, recorded into a release made
//! from the active one, activated, again from the new active release when
//! another publication came first). Otherwise: a draft from the active
//! release, the new files as one streamed tar batch, the held ones by
//! digest, the indexes published (and signed here for a client-signed
//! repository), activated with compare-and-swap; when another publication
//! activated first, a new draft from the new active release gets the same
//! packages by digest (uploaded already), bounded retries. A refused package
//! fails the command before anything is activated, naming the file and the
//! server's reason; the draft is deleted.

use crate::client::{api_failure, Body, Client};
use crate::progress::Progress;
use crate::sign::Signer;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What the batch routes take per file (larger ones are uploaded on their own).
const BATCH_FILE_MAX: u64 = 16 << 20;
/// Digests per JSON batch.
const DIGESTS_PER_REQUEST: usize = 1_000;
const TRIES: u32 = 6;

/// Where packages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Deb { dist: String, component: String },
    Apk { branch: String, repo: String },
    Helm { repo: String },
}

impl Target {
    /// The batch route: into a draft, or (None) published in one request.
    pub fn batch_path(&self, site: &str, release: Option<i64>) -> String {
        let base = match release {
            Some(r) => format!("/sites/{site}/releases/{r}"),
            None => format!("/sites/{site}"),
        };
        match self {
            Target::Deb { dist, component } => format!("{base}/deb/{dist}/{component}/packages/batch"),
            Target::Apk { branch, repo } => format!("{base}/apk/{branch}/{repo}/packages/batch"),
            Target::Helm { repo } => format!("{base}/helm/{repo}/charts/batch"),
        }
    }

    pub fn publish_path(&self, site: &str, release: i64) -> String {
        match self {
            Target::Deb { dist, .. } => format!("/sites/{site}/releases/{release}/deb/{dist}/publish"),
            Target::Apk { branch, repo } => format!("/sites/{site}/releases/{release}/apk/{branch}/{repo}/publish"),
            Target::Helm { repo } => format!("/sites/{site}/releases/{release}/helm/{repo}/publish"),
        }
    }

    pub fn what(&self) -> &'static str {
        match self {
            Target::Helm { .. } => "charts",
            _ => "packages",
        }
    }
}

/// A file to publish, hashed.
#[derive(Debug, Clone)]
pub struct File {
    pub path: PathBuf,
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

pub struct Options {
    pub jobs: usize,
    pub no_activate: bool,
    pub replace: bool,
    pub signer: Option<Signer>,
    pub progress: Progress,
}

/// Hashes the files, `jobs` at a time.
pub fn hash_files(paths: &[PathBuf], jobs: usize, progress: &Progress) -> Result<Vec<File>> {
    for p in paths {
        let m = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if !m.is_file() {
            bail!("{} is not a file", p.display());
        }
    }
    let total: u64 = paths.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let bar = progress.bytes("hashing", total);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<File>>>> = std::sync::Mutex::new((0..paths.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(paths.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = paths.get(i) else { break };
                let r = hash_one(p, &bar);
                results.lock().expect("not poisoned")[i] = Some(r);
            });
        }
    });
    bar.finish();
    results.into_inner().expect("not poisoned").into_iter().map(|r| r.expect("every file hashed")).collect()
}

fn hash_one(p: &Path, bar: &crate::progress::Bar) -> Result<File> {
    let mut f = std::fs::File::open(p).with_context(|| format!("{}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
        bar.inc(n as u64);
    }
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string());
    Ok(File { path: p.to_path_buf(), name, sha256: hex::encode(h.finalize()), size })
}

/// A tar stream of the files (pax `WHARF.sha256` on each, checked by the
/// server), made as it is read: a thread writes it into a pipe.
fn tar_stream(files: Vec<File>) -> Result<(impl Read + Send, std::thread::JoinHandle<Result<()>>)> {
    let (reader, writer) = std::io::pipe()?;
    let handle = std::thread::spawn(move || -> Result<()> {
        // Headers are 512-byte writes: gathered, so the pipe carries large pieces.
        let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(CHUNK, writer));
        b.mode(tar::HeaderMode::Deterministic);
        for f in &files {
            b.append_pax_extensions([("WHARF.sha256", f.sha256.as_bytes())])?;
            let mut h = tar::Header::new_ustar();
            h.set_size(f.size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            let data = std::fs::File::open(&f.path).with_context(|| format!("{}", f.path.display()))?;
            b.append_data(&mut h, &f.name, data.take(f.size))?;
        }
        use std::io::Write;
        b.into_inner()?.flush()?;
        Ok(())
    });
    Ok((Gather(reader), handle))
}

/// What one read of the request body returns at least (unless the stream
/// ends): each read becomes one chunk on the wire, and the worker handles a
/// few large chunks much faster than many small ones.
const CHUNK: usize = 256 << 10;

/// Fills each read as far as the buffer (up to `CHUNK`) before returning.
struct Gather<R>(R);

impl<R: Read> Read for Gather<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(CHUNK);
        let mut got = 0;
        while got < want {
            match self.0.read(&mut buf[got..want]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
}

/// What a publication did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub release: Option<i64>,
    pub activated: bool,
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub by_digest: usize,
    pub attempts: u32,
    /// Everything was published already as it is: no new release.
    pub unchanged: bool,
    /// The packages as the server described them.
    pub packages: Vec<Value>,
    pub answer: Value,
}

pub fn add(client: &Client, site: &str, target: &Target, paths: &[PathBuf], opts: &Options) -> Result<Outcome> {
    if paths.is_empty() {
        bail!("no files given");
    }
    let files = hash_files(paths, opts.jobs, &opts.progress)?;
    // The same bytes named twice are sent once.
    let mut seen = BTreeSet::new();
    let files: Vec<File> = files.into_iter().filter(|f| seen.insert(f.sha256.clone())).collect();
    let digests: Vec<String> = files.iter().map(|f| f.sha256.clone()).collect();
    let mut held = held(client, site, &digests)?;
    let mut out = Outcome::default();
    // Files the batch routes do not take go up on their own (streamed).
    let big: Vec<&File> = files.iter().filter(|f| f.size > BATCH_FILE_MAX && !held.contains(&f.sha256)).collect();
    for f in big {
        upload_one(client, site, f, &opts.progress)?;
        held.insert(f.sha256.clone());
        out.uploaded += 1;
        out.uploaded_bytes += f.size;
    }
    let new: Vec<File> = files.iter().filter(|f| !held.contains(&f.sha256)).cloned().collect();
    let old: Vec<String> = files.iter().filter(|f| held.contains(&f.sha256)).map(|f| f.sha256.clone()).collect();
    let replace = if opts.replace { "?replace=true" } else { "" };

    // One request: server signing, activation wanted, one kind of body.
    if !opts.no_activate && opts.signer.is_none() && (old.is_empty() || (new.is_empty() && old.len() <= DIGESTS_PER_REQUEST)) {
        let path = format!("{}{replace}", target.batch_path(site, None));
        let r = if old.is_empty() {
            let bytes: u64 = new.iter().map(|f| f.size).sum();
            send_tar(client, &path, new.clone(), bytes, &opts.progress)
        } else {
            client.json("POST", &path, &json!({"sha256": old}))
        };
        match r {
            Ok(answer) => {
                if old.is_empty() {
                    out.uploaded += new.len();
                    out.uploaded_bytes += new.iter().map(|f| f.size).sum::<u64>();
                } else {
                    out.by_digest = old.len();
                }
                out.unchanged = answer["unchanged"] == json!(true);
                out.release = if out.unchanged { answer["release"].as_i64() } else { answer["id"].as_i64() };
                out.activated = !out.unchanged;
                out.attempts = answer["attempts"].as_u64().unwrap_or(1) as u32;
                out.packages = answer["packages"].as_array().cloned().unwrap_or_default();
                out.answer = answer;
                return Ok(out);
            }
            // Others kept activating first through all the server's tries:
            // the files are stored and held now; go on by digest below.
            Err(e) if api_failure(&e).is_some_and(|f| f.code == "stale_release") => {
                opts.progress.line("other publications kept activating first; trying again from the newest release");
                out.uploaded += new.len();
                out.uploaded_bytes += new.iter().map(|f| f.size).sum::<u64>();
                return by_drafts(client, site, target, &[], &digests, opts, replace, out);
            }
            Err(e) => return Err(e),
        }
    }
    out.uploaded += new.len();
    out.uploaded_bytes += new.iter().map(|f| f.size).sum::<u64>();
    by_drafts(client, site, target, &new, &old, opts, replace, out)
}

/// The draft flow: a draft from the active release, `new` as a tar batch,
/// `old` by digest, publish (signing here if asked), activate; on a lost
/// compare-and-swap, again from the new active release with everything by digest.
#[allow(clippy::too_many_arguments)]
fn by_drafts(client: &Client, site: &str, target: &Target, new: &[File], old: &[String], opts: &Options, replace: &str, mut out: Outcome) -> Result<Outcome> {
    let mut new: Vec<File> = new.to_vec();
    let mut old: Vec<String> = old.to_vec();
    for attempt in 1..=TRIES {
        out.attempts = attempt;
        let rel = client.json("POST", &format!("/sites/{site}/releases"), &json!({"note": format!("wharf {} add", target.what())}))?;
        let rel = rel["id"].as_i64().context("the new release has no id")?;
        let mut packages = vec![];
        let filled = (|| -> Result<Option<Value>> {
            if !new.is_empty() {
                let bytes = new.iter().map(|f| f.size).sum();
                let a = send_tar(client, &format!("{}{replace}", target.batch_path(site, Some(rel))), new.clone(), bytes, &opts.progress)?;
                packages.extend(a["packages"].as_array().cloned().unwrap_or_default());
            }
            for chunk in old.chunks(DIGESTS_PER_REQUEST) {
                let a = client.json("POST", &format!("{}{replace}", target.batch_path(site, Some(rel))), &json!({"sha256": chunk}))?;
                packages.extend(a["packages"].as_array().cloned().unwrap_or_default());
            }
            if opts.no_activate {
                return Ok(None);
            }
            if let Some(signer) = &opts.signer {
                crate::sign::publish_and_sign(client, site, rel, target, signer)?;
            }
            match client.json("POST", &format!("/sites/{site}/releases/{rel}/activate"), &json!({})) {
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(e),
            }
        })();
        match filled {
            Ok(None) => {
                out.release = Some(rel);
                out.by_digest = old.len();
                out.packages = packages;
                return Ok(out);
            }
            Ok(Some(answer)) => {
                out.release = Some(rel);
                out.activated = true;
                out.by_digest = old.len();
                out.packages = packages;
                out.answer = answer;
                return Ok(out);
            }
            Err(e) => {
                let _ = client.call("DELETE", &format!("/sites/{site}/releases/{rel}"), Body::None);
                if !api_failure(&e).is_some_and(|f| f.code == "stale_release") || attempt == TRIES {
                    return Err(e);
                }
                // Uploaded once: from now on everything goes by digest.
                old.extend(new.drain(..).map(|f| f.sha256));
                let pause = 50u64 << attempt.min(6);
                opts.progress.line(&format!("another publication activated first; again from the new active release (try {})", attempt + 1));
                std::thread::sleep(std::time::Duration::from_millis(pause + rand_ms(50)));
            }
        }
    }
    unreachable!("the loop returns")
}

fn rand_ms(max: u64) -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0);
    (t ^ std::process::id() as u64 * 2654435761) % max.max(1)
}

fn send_tar(client: &Client, path: &str, files: Vec<File>, bytes: u64, progress: &Progress) -> Result<Value> {
    let n = files.len();
    let bar = progress.bytes(&format!("uploading {n} file{}", if n == 1 { "" } else { "s" }), bytes);
    let (reader, writer) = tar_stream(files)?;
    let counted = bar.reader(reader);
    let r = client.call("POST", path, Body::Reader(Box::new(counted), "application/x-tar"));
    bar.finish();
    // The writer's error (a file that went away) explains a cut-off stream best.
    match writer.join() {
        Ok(Err(e)) => return Err(e.context("making the tar stream")),
        Err(_) => bail!("the tar writer stopped"),
        Ok(Ok(())) => {}
    }
    r
}

/// Streams one file to `PUT /blobs/sha256/{hex}?site=` (the server checks the digest).
fn upload_one(client: &Client, site: &str, f: &File, progress: &Progress) -> Result<()> {
    let bar = progress.bytes(&format!("uploading {}", f.name), f.size);
    let file = std::fs::File::open(&f.path).with_context(|| format!("{}", f.path.display()))?;
    let r = client.put_file(&format!("/blobs/sha256/{}?site={site}", f.sha256), bar.reader(file), f.size);
    bar.finish();
    r.with_context(|| format!("uploading {}", f.name)).map(|_| ())
}

/// The digests the site can add without uploading them.
pub fn held(client: &Client, site: &str, digests: &[String]) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for chunk in digests.chunks(10_000) {
        let v = client.json("POST", &format!("/sites/{site}/blobs/held"), &json!({"sha256": chunk}))?;
        out.extend(v["held"].as_array().into_iter().flatten().filter_map(|d| d.as_str().map(String::from)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = Target::Deb { dist: "stable".into(), component: "main".into() };
        assert_eq!(d.batch_path("apt", None), "/sites/apt/deb/stable/main/packages/batch");
        assert_eq!(d.batch_path("apt", Some(7)), "/sites/apt/releases/7/deb/stable/main/packages/batch");
        assert_eq!(d.publish_path("apt", 7), "/sites/apt/releases/7/deb/stable/publish");
        let a = Target::Apk { branch: "v3.20".into(), repo: "main".into() };
        assert_eq!(a.batch_path("x", None), "/sites/x/apk/v3.20/main/packages/batch");
        assert_eq!(a.publish_path("x", 2), "/sites/x/releases/2/apk/v3.20/main/publish");
        let h = Target::Helm { repo: "stable".into() };
        assert_eq!(h.batch_path("x", Some(3)), "/sites/x/releases/3/helm/stable/charts/batch");
    }

    #[test]
    fn the_tar_stream_names_each_file_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = vec![];
        for (name, body) in [("a_1.0_all.deb".to_string(), b"first".to_vec()), ("a-long-name-".repeat(12) + ".deb", vec![7u8; 70_000])] {
            let p = dir.path().join(&name);
            std::fs::write(&p, &body).unwrap();
            paths.push(p);
        }
        let files = hash_files(&paths, 2, &Progress::quiet()).unwrap();
        assert_eq!(files[0].sha256, hex::encode(Sha256::digest(b"first")));
        let (mut r, w) = tar_stream(files.clone()).unwrap();
        let mut bytes = vec![];
        r.read_to_end(&mut bytes).unwrap();
        w.join().unwrap().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = vec![];
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let pax: Vec<(String, String)> = e
                .pax_extensions()
                .unwrap()
                .expect("a pax header")
                .map(|x| x.unwrap())
                .map(|x| (x.key().unwrap().to_string(), x.value().unwrap().to_string()))
                .collect();
            let mut data = vec![];
            e.read_to_end(&mut data).unwrap();
            seen.push((e.path().unwrap().to_string_lossy().into_owned(), pax, hex::encode(Sha256::digest(&data))));
        }
        assert_eq!(seen.len(), 2);
        for (s, f) in seen.iter().zip(&files) {
            assert_eq!(s.0, f.name);
            assert!(s.1.contains(&("WHARF.sha256".to_string(), f.sha256.clone())), "{:?}", s.1);
            assert_eq!(s.2, f.sha256);
        }
        // The server's own splitter reads it, digests checked.
        let mut sp = wharf::formats::batch::Splitter::new(16 << 20);
        let got = sp.push(&bytes).unwrap();
        sp.finish().unwrap();
        assert_eq!(got.iter().map(|f| (f.name.clone(), f.claimed.clone())).collect::<Vec<_>>(),
                   files.iter().map(|f| (f.name.clone(), Some(f.sha256.clone()))).collect::<Vec<_>>());
    }
}
