//! Reading a v2 `.apk`: concatenated gzip streams — an optional signature
//! stream (`.SIGN.*` entries), the control stream (`.PKGINFO`, scripts) and
//! the data stream — as abuild writes them and apk-tools 2.14 reads them.
//!
//! Only the head of a package is read: the signature and control streams come
//! first and are small, so the worker fetches [`HEAD_BYTES`] from R2 and never
//! holds the data stream in memory.

use base64::Engine;
use sha1::{Digest, Sha1};
use std::io::Read;

/// Bytes at the start of a package that must hold its signature and control streams.
pub const HEAD_BYTES: u64 = 4 << 20;
/// Largest data stream (decompressed) accepted: a bound on the work a
/// decompression bomb can cause, far above real packages.
const MAX_DATA_TAR: u64 = 64 << 30;
const MAX_CONTROL_TAR: u64 = 16 << 20;
const MAX_PKGINFO: u64 = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub struct ApkError(pub String);

impl std::fmt::Display for ApkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, ApkError> {
    Err(ApkError(m.into()))
}

/// One gzip stream of a package: where its compressed bytes lie and what they hold.
#[derive(Debug)]
pub struct Stream {
    pub offset: usize,
    pub len: usize,
    pub data: Vec<u8>,
}

/// Decompresses the gzip stream starting at `offset`; `None` when the bytes end
/// before the stream does (the caller may fetch more).
pub fn gzip_stream(bytes: &[u8], offset: usize, limit: u64) -> Result<Option<Stream>, ApkError> {
    let mut rest = &bytes[offset..];
    if rest.len() < 2 || rest[..2] != [0x1f, 0x8b] {
        return err(format!("no gzip stream at byte {offset}: not an apk v2 package"));
    }
    let before = rest.len();
    let mut data = Vec::new();
    let mut dec = flate2::bufread::GzDecoder::new(&mut rest);
    match (&mut dec).take(limit + 1).read_to_end(&mut data) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return err(format!("bad gzip stream at byte {offset}: {e}")),
    }
    if data.len() as u64 > limit {
        return err(format!("the gzip stream at byte {offset} unpacks to more than {limit} bytes"));
    }
    drop(dec);
    Ok(Some(Stream { offset, len: before - rest.len(), data }))
}

/// A tar entry's name and contents (regular files only).
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
}

/// The entries of a tar stream that may lack the end-of-archive blocks
/// (abuild cuts them from the signature and control streams).
pub fn tar_entries(tar: &[u8]) -> Result<Vec<Entry>, ApkError> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|e| ApkError(format!("bad tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ApkError(format!("bad tar stream: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut data = Vec::new();
        if entry.header().entry_type().is_file() {
            entry.read_to_end(&mut data).map_err(|e| ApkError(format!("bad tar entry {name}: {e}")))?;
        }
        out.push(Entry { name, data });
    }
    Ok(out)
}

/// Where the streams of a package lie.
#[derive(Debug)]
pub struct Layout {
    /// The signature stream, if the package is signed.
    pub signature: Option<(usize, usize)>,
    /// Offset and length of the control stream's compressed bytes.
    pub control: (usize, usize),
    /// `.PKGINFO`.
    pub pkginfo: String,
}

/// Finds the signature and control streams in the head of a package of
/// `total` bytes and reads `.PKGINFO`.
pub fn read_head(head: &[u8], total: u64) -> Result<Layout, ApkError> {
    if total == 0 {
        return err("the package is empty (0 bytes)");
    }
    let truncated = || {
        if (head.len() as u64) < total {
            ApkError(format!("the signature and control streams must lie within the first {HEAD_BYTES} bytes"))
        } else {
            ApkError("the package is truncated inside its control stream".into())
        }
    };
    let first = gzip_stream(head, 0, MAX_CONTROL_TAR)?.ok_or_else(truncated)?;
    let first_entries = tar_entries(&first.data)?;
    if first_entries.is_empty() {
        return err("the package's first gzip stream holds no files");
    }
    let signed = first_entries.iter().all(|e| e.name.starts_with(".SIGN."));
    let (signature, control, entries) = if signed {
        let at = first.offset + first.len;
        if at >= head.len() {
            return Err(truncated());
        }
        let second = gzip_stream(head, at, MAX_CONTROL_TAR)?.ok_or_else(truncated)?;
        let entries = tar_entries(&second.data)?;
        (Some((first.offset, first.len)), (second.offset, second.len), entries)
    } else {
        (None, (first.offset, first.len), first_entries)
    };
    let end = control.0 + control.1;
    if (end as u64) >= total {
        return err("the package has no data stream after its control stream");
    }
    if end + 2 <= head.len() && head[end..end + 2] != [0x1f, 0x8b] {
        return err("the data stream after the control stream is not gzip");
    }
    let pkginfo = entries.iter().find(|e| e.name == ".PKGINFO").ok_or_else(|| ApkError("the control stream has no .PKGINFO".into()))?;
    if pkginfo.data.len() as u64 > MAX_PKGINFO {
        return err("the .PKGINFO is larger than 1 MiB");
    }
    let pkginfo = String::from_utf8(pkginfo.data.clone()).map_err(|_| ApkError(".PKGINFO is not UTF-8".into()))?;
    Ok(Layout { signature, control, pkginfo })
}

/// Checks the data stream when the whole package is at hand (`head` is all
/// `total` bytes); the worker streams larger ones through [`DataCheck`].
pub fn check_data(head: &[u8], total: u64, layout: &Layout, info: &PkgInfo) -> Result<(), ApkError> {
    if (head.len() as u64) < total {
        return Ok(());
    }
    let mut check = DataCheck::new();
    check.push(&head[data_offset(layout)..]);
    check.finish(info)
}

/// Where the data stream starts: right after the control stream.
pub fn data_offset(layout: &Layout) -> usize {
    layout.control.0 + layout.control.1
}

/// The data stream checked as it streams past: its sha256 against
/// `.PKGINFO`'s datahash, and its tar (complete, no name leaving the root).
pub struct DataCheck {
    hash: sha2::Sha256,
    tar: crate::tarcheck::Check,
    refused: Option<String>,
}

impl Default for DataCheck {
    fn default() -> Self {
        DataCheck::new()
    }
}

impl DataCheck {
    pub fn new() -> DataCheck {
        DataCheck { hash: sha2::Sha256::new(), tar: crate::tarcheck::Check::new(crate::tarcheck::Compression::Gzip, MAX_DATA_TAR), refused: None }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.hash.update(chunk);
        if self.refused.is_none() {
            self.refused = self.tar.push(chunk).err();
        }
    }

    pub fn finish(self, info: &PkgInfo) -> Result<(), ApkError> {
        if hex::encode(self.hash.finalize()) != info.datahash {
            return err("the data stream does not match the datahash in .PKGINFO (corrupt or tampered package)");
        }
        // The datahash holds, so the stream is what the packager made: it must
        // still unpack whole and stay below the root apk unpacks into.
        let refused = match self.refused {
            Some(e) => Err(e),
            None => self.tar.finish(),
        };
        refused.map_err(|e| ApkError(format!("the data stream is refused: {e}")))
    }
}

/// apk's package identity (`C:`): `Q1` and the base64 of the SHA-1 of the
/// control stream's compressed bytes.
pub fn identity(control_stream: &[u8]) -> String {
    format!("Q1{}", base64::engine::general_purpose::STANDARD.encode(Sha1::digest(control_stream)))
}

/// What an APKINDEX record holds of a package, from its `.PKGINFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkgInfo {
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    pub description: String,
    pub url: String,
    pub license: String,
    pub installed_size: u64,
    pub origin: Option<String>,
    pub maintainer: Option<String>,
    pub build_date: u64,
    pub commit: Option<String>,
    pub provider_priority: u64,
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub install_if: Vec<String>,
    pub replaces: Vec<String>,
    /// SHA-256 (hex) of the data stream's compressed bytes.
    pub datahash: String,
}

fn number(key: &str, v: &str) -> Result<u64, ApkError> {
    v.parse().map_err(|_| ApkError(format!(".PKGINFO: {key} is not a number: {v:?}")))
}

/// Parses `.PKGINFO` (`key = value` lines, `#` comments) as apk-tools does:
/// list fields (depend, provides, install_if, replaces) may repeat and hold
/// several space-separated entries.
pub fn parse_pkginfo(text: &str) -> Result<PkgInfo, ApkError> {
    let mut p = PkgInfo::default();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else { continue };
        let list = |v: &str| v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        match key {
            "pkgname" => p.name = value.to_string(),
            "pkgver" => p.version = value.to_string(),
            "pkgdesc" => p.description = value.to_string(),
            "url" => p.url = value.to_string(),
            "size" => p.installed_size = number(key, value)?,
            "license" => p.license = value.to_string(),
            "arch" => p.arch = Some(value.to_string()),
            "origin" => p.origin = Some(value.to_string()),
            "maintainer" => p.maintainer = Some(value.to_string()),
            "builddate" => p.build_date = number(key, value)?,
            "commit" => p.commit = Some(value.to_string()),
            "provider_priority" => p.provider_priority = number(key, value)?,
            "depend" => p.depends.extend(list(value)),
            "provides" => p.provides.extend(list(value)),
            "install_if" => p.install_if.extend(list(value)),
            "replaces" => p.replaces.extend(list(value)),
            "datahash" => p.datahash = value.to_string(),
            _ => {}
        }
    }
    if p.name.is_empty() {
        return err(".PKGINFO has no pkgname");
    }
    if p.version.is_empty() {
        return err(".PKGINFO has no pkgver");
    }
    if !valid_name(&p.name) {
        return err(format!(".PKGINFO: invalid pkgname {:?}", p.name));
    }
    if !valid_version(&p.version) {
        return err(format!(".PKGINFO: invalid pkgver {:?}", p.version));
    }
    match &p.arch {
        Some(a) if valid_arch(a) => {}
        Some(a) => return err(format!(".PKGINFO: invalid arch {a:?}")),
        None => return err(".PKGINFO has no arch"),
    }
    // apk-tools 2.14 identifies a package by its control stream only when
    // .PKGINFO carries the data stream's hash (`apk index` refuses others).
    if p.datahash.is_empty() {
        return err(".PKGINFO has no datahash (build the package with abuild, which records the data stream's SHA-256)");
    }
    if p.datahash.len() != 64 || !p.datahash.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return err(".PKGINFO: datahash is not 64 lower-case hex characters");
    }
    for (what, v) in [("pkgdesc", &p.description), ("url", &p.url), ("license", &p.license)] {
        if v.contains('\n') {
            return err(format!(".PKGINFO: {what} spans lines"));
        }
    }
    Ok(p)
}

pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes().next().map_or(false, |c| c.is_ascii_alphanumeric() || c == b'_')
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-._".contains(&c))
}

/// apk-tools' version grammar (`apk_version_validate`): digits with
/// `.digits` parts, one optional lower-case letter, any number of
/// `_alpha|_beta|_pre|_rc|_cvs|_svn|_git|_hg|_p` suffixes each with optional
/// digits, an optional `~<hex>` commit hash, an optional `-r<digits>`.
pub fn valid_version(v: &str) -> bool {
    const SUFFIXES: [&str; 9] = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"];
    let b = v.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if v.len() > 128 || !digits(&mut i) {
        return false;
    }
    while i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < b.len() && b[i].is_ascii_lowercase() {
        i += 1;
    }
    while i < b.len() && b[i] == b'_' {
        i += 1;
        let Some(s) = SUFFIXES.iter().filter(|s| v[i..].starts_with(**s)).max_by_key(|s| s.len()) else { return false };
        i += s.len();
        digits(&mut i);
    }
    if i < b.len() && b[i] == b'~' {
        i += 1;
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || (b'a'..=b'f').contains(&b[i])) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if v[i..].starts_with("-r") {
        i += 2;
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

pub fn valid_arch(a: &str) -> bool {
    !a.is_empty() && a.len() <= 32 && a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// An accepted package, as the index and the admin API see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub info: PkgInfo,
    /// The architecture `.PKGINFO` names (required).
    pub arch: String,
    /// apk's `C:` identity.
    pub identity: String,
    /// The package's APKINDEX record.
    pub record: String,
    /// `.PKGINFO` as the package holds it.
    pub pkginfo: String,
    /// Whether the package carries abuild's signature stream.
    pub signed: bool,
}

/// Reads and checks a whole package held in memory (tests, tools), as the
/// worker does one it streams from R2: the same [`Inspection`].
pub fn inspect(apk: &[u8]) -> Result<Accepted, ApkError> {
    crate::formats::inspect::in_memory(Inspection::new(apk.len() as u64), apk, 64 << 10).map_err(ApkError)
}

/// The inspection of an `.apk` of `size` bytes: its head ([`HEAD_BYTES`])
/// holds the signature and control streams; the data stream is checked from
/// the head when the head is the whole package, else streamed through
/// [`DataCheck`].
pub struct Inspection {
    size: u64,
    state: State,
}

enum State {
    Start,
    Head,
    Data(Box<(Accepted, DataCheck)>),
    Over,
}

impl Inspection {
    pub fn new(size: u64) -> Inspection {
        Inspection { size, state: State::Start }
    }
}

impl crate::formats::inspect::Inspector for Inspection {
    type Member = Accepted;

    fn step(&mut self, given: Option<Vec<u8>>) -> Result<crate::formats::inspect::Need<Accepted>, String> {
        use crate::formats::inspect::{given as bytes, Need};
        let size = self.size;
        match std::mem::replace(&mut self.state, State::Over) {
            State::Start => {
                self.state = State::Head;
                Ok(Need::Bytes { offset: 0, len: size.min(HEAD_BYTES) })
            }
            State::Head => {
                let head = bytes(given)?;
                let layout = read_head(&head, size).map_err(|e| e.0)?;
                let info = parse_pkginfo(&layout.pkginfo).map_err(|e| e.0)?;
                let (at, len) = layout.control;
                let identity = identity(&head[at..at + len]);
                let arch = info.arch.clone().ok_or("the .PKGINFO names no arch")?;
                let record = index_record(&info, &identity, size);
                let signed = layout.signature.is_some();
                if (head.len() as u64) >= size {
                    check_data(&head, size, &layout, &info).map_err(|e| e.0)?;
                    let pkginfo = layout.pkginfo;
                    return Ok(Need::Done(Accepted { info, arch, identity, record, pkginfo, signed }));
                }
                let at = data_offset(&layout) as u64;
                let accepted = Accepted { info, arch, identity, record, pkginfo: layout.pkginfo, signed };
                self.state = State::Data(Box::new((accepted, DataCheck::new())));
                Ok(Need::Stream { offset: at, len: size - at })
            }
            State::Data(data) => {
                let (accepted, check) = *data;
                check.finish(&accepted.info).map_err(|e| e.0)?;
                Ok(Need::Done(accepted))
            }
            State::Over => Err("the inspection is over".into()),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        match &mut self.state {
            State::Data(data) => {
                data.1.push(chunk);
                Ok(())
            }
            _ => Err("no stream was asked for".into()),
        }
    }
}

/// The file name of a package in its repository directory.
pub fn filename(name: &str, version: &str) -> String {
    format!("{name}-{version}.apk")
}

/// The APKINDEX record of a package (no trailing blank line), field for field
/// as apk-tools' `apk_pkg_write_index_header` writes it.
pub fn index_record(p: &PkgInfo, identity: &str, size: u64) -> String {
    let mut s = format!("C:{identity}\nP:{}\nV:{}\n", p.name, p.version);
    if let Some(a) = &p.arch {
        s.push_str(&format!("A:{a}\n"));
    }
    s.push_str(&format!("S:{size}\nI:{}\nT:{}\nU:{}\nL:{}\n", p.installed_size, p.description, p.url, p.license));
    if let Some(o) = &p.origin {
        s.push_str(&format!("o:{o}\n"));
    }
    if let Some(m) = &p.maintainer {
        s.push_str(&format!("m:{m}\n"));
    }
    if p.build_date != 0 {
        s.push_str(&format!("t:{}\n", p.build_date));
    }
    if let Some(c) = &p.commit {
        s.push_str(&format!("c:{c}\n"));
    }
    if p.provider_priority != 0 {
        s.push_str(&format!("k:{}\n", p.provider_priority));
    }
    for (field, list) in [("D", &p.depends), ("p", &p.provides), ("i", &p.install_if)] {
        if !list.is_empty() {
            s.push_str(&format!("{field}:{}\n", list.join(" ")));
        }
    }
    s
}

#[cfg(test)]
mod tests;
