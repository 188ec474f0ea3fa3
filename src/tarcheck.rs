//! Checking a package's file archive as it streams past, in bounded memory:
//! a push-based decompressor (gzip, xz, zstd or none) feeds a push-based tar
//! walker. The whole archive must decompress (checksums and trailers
//! included), every tar entry must be present to its end, and no file name
//! may leave the directory the package is unpacked into.
//!
//! The worker pushes an R2 body through it chunk by chunk, so a package of any
//! size is checked without holding it; [`check`] does the same for bytes in hand.

use std::io::Write;

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

/// Largest GNU long name or pax header accepted.
const MAX_META: u64 = 1 << 20;

#[derive(Debug)]
enum Collect {
    Skip,
    LongName(Vec<u8>),
    Pax(Vec<u8>),
    /// A file [`Check::keeping`] asked for: its name and content.
    Keep(String, Vec<u8>),
}

/// What a check keeps of the archive besides its verdict, when asked
/// ([`Check::keeping`]): the distinct top-level folders, the entries that are
/// links, and the content of the files named `<top folder>/<file>`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kept {
    pub tops: std::collections::BTreeSet<String>,
    pub links: Vec<String>,
    pub files: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
enum State {
    Header,
    Data { remaining: u64, content: u64, collect: Collect },
    End,
}

/// Walks a tar stream given in pieces.
#[derive(Debug)]
struct Walker {
    block: Vec<u8>,
    state: State,
    next_name: Option<Vec<u8>>,
    entries: u64,
    zero_blocks: u8,
    total: u64,
    limit: u64,
    /// The file name to keep (`<top>/<name>`) and its largest size.
    keep: Option<(String, u64)>,
    kept: Kept,
}

fn pax_path(records: &[u8]) -> Option<Vec<u8>> {
    let mut rest = records;
    let mut path = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > rest.len() {
            return None;
        }
        let record = &rest[space + 1..len - 1];
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            if &record[..eq] == b"path" {
                path = Some(record[eq + 1..].to_vec());
            }
        }
        rest = &rest[len..];
    }
    path
}

impl Walker {
    fn new(limit: u64) -> Walker {
        Walker {
            block: Vec::with_capacity(512),
            state: State::Header,
            next_name: None,
            entries: 0,
            zero_blocks: 0,
            total: 0,
            limit,
            keep: None,
            kept: Kept::default(),
        }
    }

    fn header(&mut self) -> Result<(), String> {
        let block = std::mem::take(&mut self.block);
        if block.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.state = State::End;
            }
            return Ok(());
        }
        self.zero_blocks = 0;
        let h = tar::Header::from_byte_slice(&block);
        let stored = h.cksum().map_err(|_| "a tar header has an unreadable checksum".to_string())?;
        let sum: u32 = block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(*b) }).sum();
        if stored != sum {
            return Err("a tar header's checksum is wrong".into());
        }
        let content = h.entry_size().map_err(|_| "a tar header has an unreadable size".to_string())?;
        let remaining = content.checked_add(511).ok_or("a tar entry is too large")? / 512 * 512;
        let collect = match h.entry_type() {
            tar::EntryType::GNULongName if content <= MAX_META => Collect::LongName(Vec::new()),
            tar::EntryType::XHeader if content <= MAX_META => Collect::Pax(Vec::new()),
            tar::EntryType::GNULongName | tar::EntryType::XHeader => return Err("a tar long name or pax header is too large".into()),
            tar::EntryType::GNULongLink | tar::EntryType::XGlobalHeader => Collect::Skip,
            _ => {
                let name = match self.next_name.take() {
                    Some(n) => n,
                    None => h.path_bytes().into_owned(),
                };
                if !crate::path::safe_member_name(&name) {
                    return Err(format!("a file name leaves the package root: {:?}", String::from_utf8_lossy(&name)));
                }
                self.entries += 1;
                match &self.keep {
                    Some((file, max)) => {
                        let name = String::from_utf8_lossy(&name).to_string();
                        let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
                        // What is kept stays bounded whatever the archive holds: two
                        // top folders tell "more than one", the first link tells "a
                        // link", and the file is kept once.
                        if let Some(top) = parts.first() {
                            if self.kept.tops.len() < 2 {
                                self.kept.tops.insert(top.to_string());
                            }
                        }
                        let kind = h.entry_type();
                        if (kind.is_symlink() || kind.is_hard_link()) && self.kept.links.is_empty() {
                            self.kept.links.push(name.clone());
                        }
                        if parts.len() == 2 && parts[1] == file && kind.is_file() {
                            if content > *max {
                                return Err(format!("{name} is larger than {max} bytes"));
                            }
                            if !self.kept.files.is_empty() {
                                return Err(format!("the archive holds {file} more than once"));
                            }
                            Collect::Keep(name, Vec::new())
                        } else {
                            Collect::Skip
                        }
                    }
                    None => Collect::Skip,
                }
            }
        };
        self.state = State::Data { remaining, content, collect };
        Ok(())
    }

    fn push(&mut self, mut data: &[u8]) -> Result<(), String> {
        self.total += data.len() as u64;
        if self.total > self.limit {
            return Err(format!("it unpacks to more than {} bytes", self.limit));
        }
        while !data.is_empty() {
            match &mut self.state {
                // What follows the end-of-archive blocks (record padding) is not read.
                State::End => return Ok(()),
                State::Header => {
                    let n = (512 - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.block.len() == 512 {
                        self.header()?;
                    }
                }
                State::Data { remaining, content, collect } => {
                    let n = (*remaining).min(data.len() as u64) as usize;
                    let wanted = (*content).min(n as u64) as usize;
                    match collect {
                        Collect::LongName(v) | Collect::Pax(v) | Collect::Keep(_, v) => v.extend_from_slice(&data[..wanted]),
                        Collect::Skip => {}
                    }
                    *content -= wanted as u64;
                    *remaining -= n as u64;
                    data = &data[n..];
                    if *remaining == 0 {
                        match std::mem::replace(&mut self.state, State::Header) {
                            State::Data { collect: Collect::LongName(mut v), .. } => {
                                while v.last() == Some(&0) {
                                    v.pop();
                                }
                                self.next_name = Some(v);
                            }
                            State::Data { collect: Collect::Pax(v), .. } => {
                                if let Some(p) = pax_path(&v) {
                                    self.next_name = Some(p);
                                }
                            }
                            State::Data { collect: Collect::Keep(name, v), .. } => self.kept.files.push((name, v)),
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        match self.state {
            State::End if self.entries > 0 => Ok(()),
            State::End => Err("it holds no files".into()),
            // Some tools end the stream right after the last entry.
            State::Header if self.block.is_empty() && self.entries > 0 => Ok(()),
            State::Header if self.block.is_empty() => Err("it holds no files".into()),
            _ => Err("it ends inside a tar entry (truncated)".into()),
        }
    }
}

/// The walker as the decompressors' output.
struct Sink(Walker, Option<String>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Err(e) = self.0.push(buf) {
            self.1.get_or_insert(e);
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "tar"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    None(Sink),
    Gzip(Box<flate2::write::GzDecoder<Sink>>),
    Xz(Box<lzma_rust2::XzStream>, Sink),
    /// Input kept until a whole zstd block is at hand (at most 128 KiB and a header).
    Zstd(Box<ruzstd::decoding::FrameDecoder>, Vec<u8>, bool, Sink),
}

/// A package archive being checked as it streams past.
pub struct Check {
    decoder: Decoder,
    out: Vec<u8>,
}

/// Largest zstd block with its header.
const ZSTD_BLOCK: usize = (128 << 10) + 3 + 18;

impl Check {
    /// `limit`: the most bytes the archive may unpack to.
    pub fn new(compression: Compression, limit: u64) -> Check {
        let sink = Sink(Walker::new(limit), None);
        let decoder = match compression {
            Compression::None => Decoder::None(sink),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::write::GzDecoder::new(sink))),
            Compression::Xz => Decoder::Xz(Box::new(lzma_rust2::XzStream::new(true)), sink),
            Compression::Zstd => Decoder::Zstd(Box::new(ruzstd::decoding::FrameDecoder::new()), Vec::new(), false, sink),
        };
        Check { decoder, out: vec![0; 64 << 10] }
    }

    fn sink(&mut self) -> &mut Sink {
        match &mut self.decoder {
            Decoder::None(s) | Decoder::Xz(_, s) | Decoder::Zstd(_, _, _, s) => s,
            Decoder::Gzip(g) => g.get_mut(),
        }
    }

    /// What went wrong: the walker's own word, else the decompressor's.
    fn error(&mut self, e: impl std::fmt::Display) -> String {
        self.sink().1.take().unwrap_or_else(|| format!("it does not decompress: {e}"))
    }

    /// The next piece of the compressed archive.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        let r: Result<(), String> = match &mut self.decoder {
            Decoder::None(s) => s.write_all(chunk).map_err(|e| e.to_string()),
            Decoder::Gzip(g) => g.write_all(chunk).map_err(|e| e.to_string()),
            Decoder::Xz(..) => self.xz(chunk),
            Decoder::Zstd(..) => self.zstd(chunk, false),
        };
        r.map_err(|e| self.error(e))
    }

    fn xz(&mut self, mut input: &[u8]) -> Result<(), String> {
        let Decoder::Xz(x, s) = &mut self.decoder else { unreachable!("xz decoder") };
        loop {
            let r = x.process(input, &mut self.out, lzma_rust2::Action::Run).map_err(|e| e.to_string())?;
            input = &input[r.bytes_consumed..];
            s.write_all(&self.out[..r.bytes_produced]).map_err(|e| e.to_string())?;
            if input.is_empty() && r.bytes_produced < self.out.len() {
                return Ok(());
            }
            if r.bytes_consumed == 0 && r.bytes_produced == 0 {
                return Err("the xz stream makes no progress".into());
            }
        }
    }

    fn xz_finish(&mut self) -> Result<(), String> {
        let Decoder::Xz(x, s) = &mut self.decoder else { unreachable!("xz decoder") };
        loop {
            let r = x.process(&[], &mut self.out, lzma_rust2::Action::Finish).map_err(|e| e.to_string())?;
            s.write_all(&self.out[..r.bytes_produced]).map_err(|e| e.to_string())?;
            if r.status == lzma_rust2::Status::StreamEnd {
                return Ok(());
            }
            if r.bytes_produced == 0 {
                return Err("the xz stream is truncated".into());
            }
        }
    }

    fn zstd(&mut self, chunk: &[u8], last: bool) -> Result<(), String> {
        let Decoder::Zstd(frame, pending, started, sink) = &mut self.decoder else { unreachable!("zstd decoder") };
        pending.extend_from_slice(chunk);
        loop {
            if !last && pending.len() < ZSTD_BLOCK {
                return Ok(());
            }
            if pending.is_empty() {
                return Ok(());
            }
            if *started && frame.is_finished() {
                check_zstd_frame(frame)?;
                // The next frame (zstd streams may hold several).
                **frame = ruzstd::decoding::FrameDecoder::new();
                *started = false;
            }
            let (read, written) = frame.decode_from_to(pending, &mut self.out).map_err(|e| e.to_string())?;
            if read > pending.len() {
                // ruzstd counts a frame checksum it did not get as read.
                return Err("the zstd stream is truncated".into());
            }
            *started = true;
            sink.write_all(&self.out[..written]).map_err(|e| e.to_string())?;
            pending.drain(..read);
            // Drain what the frame decoded but could not hand out yet.
            while frame.can_collect() > 0 {
                let (_, w) = frame.decode_from_to(&[], &mut self.out).map_err(|e| e.to_string())?;
                if w == 0 {
                    break;
                }
                sink.write_all(&self.out[..w]).map_err(|e| e.to_string())?;
            }
            if read == 0 {
                return if last { Err("the zstd stream is truncated".into()) } else { Ok(()) };
            }
        }
    }

    /// Also keeps the distinct top-level folders, the links, and the content
    /// of every file named `<top folder>/<file>` (refused above `max` bytes):
    /// see [`Check::finish_keeping`].
    pub fn keeping(mut self, file: &str, max: u64) -> Check {
        self.sink().0.keep = Some((file.to_string(), max));
        self
    }

    /// [`Check::finish`], returning what [`Check::keeping`] asked to keep.
    pub fn finish_keeping(mut self) -> Result<Kept, String> {
        self.end()?;
        self.sink().0.finish()?;
        Ok(std::mem::take(&mut self.sink().0.kept))
    }

    /// The archive has ended: the compressed stream must be complete, and the tar with it.
    pub fn finish(mut self) -> Result<(), String> {
        self.end()?;
        self.sink().0.finish()
    }

    fn end(&mut self) -> Result<(), String> {
        let r: Result<(), String> = match &mut self.decoder {
            Decoder::None(_) => Ok(()),
            Decoder::Gzip(g) => g.try_finish().map_err(|e| e.to_string()),
            Decoder::Xz(..) => self.xz_finish(),
            Decoder::Zstd(..) => self.zstd(&[], true).and_then(|_| match &self.decoder {
                Decoder::Zstd(frame, _, _, _) if frame.is_finished() => check_zstd_frame(frame),
                _ => Err("the zstd stream is truncated".into()),
            }),
        };
        r.map_err(|e| self.error(e))
    }
}

/// A finished zstd frame's content checksum, when it has one, matches what was decoded.
fn check_zstd_frame(frame: &ruzstd::decoding::FrameDecoder) -> Result<(), String> {
    match (frame.get_checksum_from_data(), frame.get_calculated_checksum()) {
        (Some(stored), Some(computed)) if stored != computed => Err("the zstd content checksum does not match".into()),
        _ => Ok(()),
    }
}

/// Checks an archive held in memory, pushed in pieces as the worker would.
pub fn check(bytes: &[u8], compression: Compression, limit: u64) -> Result<(), String> {
    let mut c = Check::new(compression, limit);
    for piece in bytes.chunks(64 << 10) {
        c.push(piece)?;
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wharf-tarcheck-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/usr/share/doc/t")).unwrap();
        d
    }

    /// GNU tar's output for the tree under `root`, with extra options.
    fn gnu_tar(dir: &std::path::Path, options: &[&str]) -> Vec<u8> {
        let out = Command::new("tar").args(["--owner=0", "--group=0", "-C"]).arg(dir.join("root")).args(options).args(["-cf", "-", "."]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
        match c {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut w = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
                w.write_all(tar).unwrap();
                w.finish().unwrap()
            }
            Compression::Zstd => ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest),
        }
    }

    const ALL: [Compression; 4] = [Compression::None, Compression::Gzip, Compression::Xz, Compression::Zstd];

    #[test]
    fn whole_archives_pass_in_any_piece_size_and_cut_ones_do_not() {
        let dir = tmp("whole");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        std::fs::write(dir.join("root/usr/share/doc/t/big.bin"), &big).unwrap();
        std::fs::write(dir.join("root/usr/share/doc/t/README"), b"hello\n").unwrap();
        let long = format!("usr/share/doc/t/{}", "n".repeat(150));
        std::fs::write(dir.join("root").join(&long), b"long name\n").unwrap();
        for format in ["gnu", "posix"] {
            let tar = gnu_tar(&dir, &[&format!("--format={format}")]);
            for c in ALL {
                let bytes = compress(&tar, c);
                check(&bytes, c, 1 << 30).unwrap_or_else(|e| panic!("{format} {c:?}: {e}"));
                // Pieces of odd sizes, as a network stream delivers them.
                let mut k = Check::new(c, 1 << 30);
                for piece in bytes.chunks(7919) {
                    k.push(piece).unwrap();
                }
                k.finish().unwrap();
                // (An uncompressed tar may lose record padding after its end blocks unharmed.)
                let cuts = if c == Compression::None { vec![bytes.len() / 2] } else { vec![1, 100, bytes.len() / 2] };
                for cut in cuts {
                    let short = &bytes[..bytes.len() - cut];
                    assert!(check(short, c, 1 << 30).is_err(), "{format} {c:?} cut by {cut} passed");
                }
                let mut corrupt = bytes.clone();
                let mid = corrupt.len() / 2;
                for b in &mut corrupt[mid..mid + 16] {
                    *b ^= 0x5a;
                }
                if c != Compression::None {
                    assert!(check(&corrupt, c, 1 << 30).is_err(), "{format} {c:?}: corrupt passed");
                }
                assert!(check(&bytes, c, 1000).unwrap_err().contains("more than 1000 bytes"));
            }
        }
    }

    #[test]
    fn names_that_leave_the_root_are_refused_in_every_header_form() {
        let dir = tmp("names");
        std::fs::write(dir.join("root/usr/share/doc/t/README"), b"x\n").unwrap();
        let long_evil = format!("s,^./usr/share/doc/t/README,../../{}/passwd,", "d".repeat(120));
        for (what, opts) in [
            ("ustar ..", vec!["--format=ustar", "-P", "--transform", "s,^./usr/share/doc/t/README,../../etc/passwd,"]),
            ("absolute", vec!["--format=gnu", "-P", "--transform", "s,^./usr/share/doc/t/README,/etc/passwd,"]),
            ("gnu long name", vec!["--format=gnu", "-P", "--transform", long_evil.as_str()]),
            ("pax path", vec!["--format=posix", "-P", "--transform", long_evil.as_str()]),
        ] {
            let tar = gnu_tar(&dir, &opts);
            for c in ALL {
                let e = check(&compress(&tar, c), c, 1 << 30).unwrap_err();
                assert!(e.contains("leaves the package root"), "{what} {c:?}: {e}");
            }
        }
        assert_eq!(check(&[0u8; 1024], Compression::None, 1 << 20).unwrap_err(), "it holds no files");
        assert!(check(b"", Compression::Gzip, 1 << 20).is_err());
    }
}
