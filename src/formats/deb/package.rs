//! Reading a `.deb`: the `ar` archive, its `control.tar[.gz|.xz|.zst]` member
//! and the `control` file inside it.
//!
//! Only the control member is ever read: [`locate_control`] needs the first few
//! hundred bytes of the package to say where it is, so the worker fetches just
//! that range from R2 and never holds the package's data in memory.

use super::control::{self, Paragraph};
use std::io::Read;

const AR_MAGIC: &[u8] = b"!<arch>\n";
const AR_HEADER: usize = 60;
/// Bytes of a package that always suffice to locate its control member.
pub const HEAD_BYTES: usize = 8 + AR_HEADER + 16 + AR_HEADER;
/// Largest control member (compressed) and control.tar (decompressed) accepted.
pub const MAX_CONTROL_MEMBER: u64 = 16 << 20;
const MAX_CONTROL_TAR: u64 = 64 << 20;
const MAX_CONTROL_FILE: u64 = 1 << 20;
/// Largest data.tar (decompressed) accepted: a bound on the work a
/// decompression bomb can cause, far above real packages.
pub const MAX_DATA_TAR: u64 = 64 << 30;

#[derive(Debug, PartialEq, Eq)]
pub struct DebError(pub String);

impl std::fmt::Display for DebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, DebError> {
    Err(DebError(m.into()))
}

pub use crate::tarcheck::Compression;

/// Where the control member lies in the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMember {
    pub offset: u64,
    pub size: u64,
    pub compression: Compression,
}

struct ArHeader {
    name: String,
    size: u64,
}

fn ar_header(h: &[u8]) -> Result<ArHeader, DebError> {
    if h.len() < AR_HEADER {
        return err("the package is truncated inside an ar member header");
    }
    if &h[58..60] != b"`\n" {
        return err("not a Debian package: bad ar member header");
    }
    let field = |r: std::ops::Range<usize>| std::str::from_utf8(&h[r]).map(|s| s.trim_end().to_string());
    let name = field(0..16).map_err(|_| DebError("ar member name is not text".into()))?;
    let name = name.strip_suffix('/').unwrap_or(&name).to_string();
    let size = field(48..58)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| DebError("ar member size is not a number".into()))?;
    Ok(ArHeader { name, size })
}

/// The compression of an ar member named `<stem>[.gz|.xz|.zst]`.
fn tar_member(name: &str, stem: &str) -> Option<Compression> {
    match name.strip_prefix(stem)? {
        "" => Some(Compression::None),
        ".gz" => Some(Compression::Gzip),
        ".xz" => Some(Compression::Xz),
        ".zst" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Finds the control member from the start of a package (at least
/// [`HEAD_BYTES`] of it, or all of it if shorter) and its total size.
pub fn locate_control(head: &[u8], total_size: u64) -> Result<ControlMember, DebError> {
    if total_size == 0 {
        return err("the package is empty (0 bytes)");
    }
    if head.len() < AR_MAGIC.len() || &head[..AR_MAGIC.len()] != AR_MAGIC {
        return err("not a Debian package: no ar archive signature");
    }
    let first = ar_header(&head[8..])?;
    if first.name != "debian-binary" {
        return err(format!("not a Debian package: first member is {:?}, not debian-binary", first.name));
    }
    if first.size > 16 {
        return err("debian-binary member is too large");
    }
    let version_start = 8 + AR_HEADER;
    let version = head
        .get(version_start..version_start + first.size as usize)
        .ok_or_else(|| DebError("the package is truncated in debian-binary".into()))?;
    if !version.starts_with(b"2.") {
        return err(format!("unsupported package format version {:?}", String::from_utf8_lossy(version).trim()));
    }
    let second_at = version_start + first.size as usize + (first.size as usize & 1);
    let second = ar_header(head.get(second_at..).unwrap_or(&[]))?;
    let compression = tar_member(&second.name, "control.tar")
        .ok_or_else(|| DebError(format!("second member is {:?}; expected control.tar[.gz|.xz|.zst]", second.name)))?;
    let offset = (second_at + AR_HEADER) as u64;
    if second.size > MAX_CONTROL_MEMBER {
        return err("the control member is larger than 16 MiB");
    }
    if offset + second.size > total_size {
        return err("the package is truncated inside its control member");
    }
    Ok(ControlMember { offset, size: second.size, compression })
}

fn decoder<'a>(member: &'a [u8], compression: Compression, what: &str) -> Result<Box<dyn Read + 'a>, DebError> {
    Ok(match compression {
        Compression::None => Box::new(member),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(member)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(member, true)),
        Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(member).map_err(|e| DebError(format!("{what}.zst is not valid zstd: {e}")))?)
        }
    })
}

/// Where the data member's ar header lies: right after the control member (padded to an even offset).
pub fn data_header_offset(control: &ControlMember) -> u64 {
    control.offset + control.size + (control.size & 1)
}

/// Where the data member lies, from the bytes at [`data_header_offset`]
/// (up to one ar header's worth; fewer when the package ends there). A
/// package whose data member is missing or shorter than its header says is
/// refused.
pub fn locate_data(header: &[u8], at: u64, total_size: u64) -> Result<ControlMember, DebError> {
    if header.is_empty() {
        return err("the package has no data.tar member after its control member");
    }
    let h = ar_header(header)?;
    let compression =
        tar_member(&h.name, "data.tar").ok_or_else(|| DebError(format!("third member is {:?}; expected data.tar[.gz|.xz|.zst]", h.name)))?;
    let offset = at + AR_HEADER as u64;
    let present = total_size.saturating_sub(offset);
    if h.size > present {
        return err(format!("the package is truncated inside its data member ({present} of {} bytes)", h.size));
    }
    Ok(ControlMember { offset, size: h.size, compression })
}

/// Reads the whole data member held in memory: the compressed stream must be
/// complete and valid, every tar entry present to its end, and no file name
/// may leave the directory the package is unpacked into. The worker streams
/// the member through [`crate::tarcheck::Check`] instead, to the same effect.
pub fn check_data(member: &[u8], compression: Compression) -> Result<(), DebError> {
    crate::tarcheck::check(member, compression, MAX_DATA_TAR).map_err(data_error)
}

/// A data member refused by the check, as the reason the package is refused.
pub fn data_error(e: String) -> DebError {
    DebError(format!("data.tar is refused: {e}"))
}

/// Reads the `control` file out of the (compressed) control member.
pub fn read_control(member: &[u8], compression: Compression) -> Result<Paragraph, DebError> {
    let reader = decoder(member, compression, "control.tar")?;
    let mut archive = tar::Archive::new(reader.take(MAX_CONTROL_TAR));
    let entries = archive.entries().map_err(|e| DebError(format!("control.tar is unreadable: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| DebError(format!("control.tar is corrupt: {e}")))?;
        let path = entry.path().map_err(|e| DebError(format!("control.tar has a bad path: {e}")))?.into_owned();
        let name = path.to_string_lossy();
        if name == "./control" || name == "control" {
            if entry.header().entry_type() != tar::EntryType::Regular {
                return err("control in control.tar is not a regular file");
            }
            if entry.header().size().map_or(true, |n| n > MAX_CONTROL_FILE) {
                return err(format!("the control file is larger than {MAX_CONTROL_FILE} bytes"));
            }
            let mut text = String::new();
            entry
                .by_ref()
                .take(MAX_CONTROL_FILE + 1)
                .read_to_string(&mut text)
                .map_err(|e| DebError(format!("the control file is not UTF-8 text: {e}")))?;
            if text.len() as u64 > MAX_CONTROL_FILE {
                return err(format!("the control file is larger than {MAX_CONTROL_FILE} bytes"));
            }
            return Paragraph::parse(&text).map_err(|e| DebError(format!("control file: {e}")));
        }
    }
    err("control.tar has no control file")
}

/// What a package says about itself, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    pub control: Paragraph,
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Source package name (the package's own name when no Source field).
    pub source: String,
}

pub fn check(control: Paragraph) -> Result<DebInfo, DebError> {
    let field = |n: &str| control.get(n).map(str::to_string).ok_or_else(|| DebError(format!("control file has no {n} field")));
    let package = field("Package")?;
    let version = field("Version")?;
    let architecture = field("Architecture")?;
    if !control::valid_package_name(&package) {
        return err(format!("invalid package name {package:?}"));
    }
    if !control::valid_version(&version) {
        return err(format!("invalid version {version:?}"));
    }
    if !control::valid_architecture(&architecture) {
        return err(format!("invalid architecture {architecture:?}"));
    }
    for f in ["Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512"] {
        if control.get(f).is_some() {
            return err(format!("control file must not carry the archive field {f}"));
        }
    }
    let source = match control.get("Source") {
        Some(s) => {
            let name = s.split_whitespace().next().unwrap_or("").to_string();
            if !control::valid_package_name(&name) {
                return err(format!("invalid Source field {s:?}"));
            }
            name
        }
        None => package.clone(),
    };
    Ok(DebInfo { control, package, version, architecture, source })
}

/// Reads and checks a whole package held in memory (tests, tools), as the
/// worker does one it streams from R2: the same [`Inspection`].
pub fn inspect(deb: &[u8]) -> Result<DebInfo, DebError> {
    crate::formats::inspect::in_memory(Inspection::new(deb.len() as u64), deb, 64 << 10).map_err(DebError)
}

/// The inspection of a `.deb` of `size` bytes: its head locates the control
/// member; the control member (read whole) gives the checked [`DebInfo`]; the
/// data member's ar header locates it; the data member streams through
/// [`crate::tarcheck::Check`].
pub struct Inspection {
    size: u64,
    state: State,
}

enum State {
    Start,
    Head,
    Control(ControlMember),
    DataHeader(DebInfo, u64),
    Data(DebInfo, crate::tarcheck::Check),
    Over,
}

impl Inspection {
    pub fn new(size: u64) -> Inspection {
        Inspection { size, state: State::Start }
    }
}

impl crate::formats::inspect::Inspector for Inspection {
    type Member = DebInfo;

    fn step(&mut self, given: Option<Vec<u8>>) -> Result<crate::formats::inspect::Need<DebInfo>, String> {
        use crate::formats::inspect::{given as bytes, Need};
        let size = self.size;
        let (state, need) = match std::mem::replace(&mut self.state, State::Over) {
            State::Start => (State::Head, Need::Bytes { offset: 0, len: size.min(HEAD_BYTES as u64) }),
            State::Head => {
                let m = locate_control(&bytes(given)?, size).map_err(|e| e.0)?;
                (State::Control(m), Need::Bytes { offset: m.offset, len: m.size })
            }
            State::Control(m) => {
                let info = check(read_control(&bytes(given)?, m.compression).map_err(|e| e.0)?).map_err(|e| e.0)?;
                let at = data_header_offset(&m).min(size);
                (State::DataHeader(info, at), Need::Bytes { offset: at, len: (size - at).min(AR_HEADER as u64) })
            }
            State::DataHeader(info, at) => {
                let d = locate_data(&bytes(given)?, at, size).map_err(|e| e.0)?;
                (State::Data(info, crate::tarcheck::Check::new(d.compression, MAX_DATA_TAR)), Need::Stream { offset: d.offset, len: d.size })
            }
            State::Data(info, check) => {
                check.finish().map_err(|e| data_error(e).0)?;
                (State::Over, Need::Done(info))
            }
            State::Over => return Err("the inspection is over".into()),
        };
        self.state = state;
        Ok(need)
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        match &mut self.state {
            State::Data(_, check) => check.push(chunk).map_err(|e| data_error(e).0),
            _ => Err("no stream was asked for".into()),
        }
    }
}

/// `<package>_<version without epoch>_<arch>.deb`
pub fn filename(info: &DebInfo) -> String {
    filename_of(&info.package, &info.version, &info.architecture)
}

pub fn filename_of(package: &str, version: &str, arch: &str) -> String {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    format!("{package}_{version}_{arch}.deb")
}

/// `pool/<component>/<prefix>/<source>/<file>`, prefix `libx` for lib* sources.
pub fn pool_path(component: &str, info: &DebInfo) -> String {
    pool_path_of(component, &info.source, &info.package, &info.version, &info.architecture)
}

pub fn pool_path_of(component: &str, source: &str, package: &str, version: &str, arch: &str) -> String {
    let prefix = if source.starts_with("lib") && source.len() > 3 { &source[..4] } else { &source[..1] };
    format!("pool/{component}/{prefix}/{source}/{}", filename_of(package, version, arch))
}

#[cfg(test)]
mod tests;
