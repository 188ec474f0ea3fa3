//! Indexes kept as pieces, so that publishing a change regenerates what
//! changed and not the whole index.
//!
//! An index (Debian's `Packages`) is a sorted run of records. It is cut into
//! pieces where the content says so: a piece ends after the last record of a
//! name whose SHA-256 is 0 modulo [`AVERAGE`] (so about one name in 64 ends a
//! piece). The cuts depend only on the names present, so a change moves at
//! most the cuts around the changed names, and an index spliced from the
//! pieces of an earlier one is byte for byte the index a full regeneration of
//! the same records gives: both are the same function of the records.
//!
//! Each piece is compressed on its own, and the compressed files are
//! assembled from the pieces:
//! - gzip: one gzip member whose deflate data is the pieces' deflate data,
//!   each ended by a sync flush (so it ends on a byte boundary and makes no
//!   reference outside itself), then an empty final block; its CRC-32 is the
//!   pieces' CRC-32s combined. One member, as every gzip reader expects.
//! - xz: one stream whose blocks are the pieces (each compressed as a
//!   one-block stream, its block taken out), with an index listing them:
//!   liblzma, apt and `xz` read multi-block streams (as `xz -T` writes).
//!
//! What a file's pieces are (names, counts, lengths, CRCs) is its [`Layout`],
//! kept beside it; splicing reads the earlier file's bytes and its layout,
//! renders the pieces around the changed names again, and copies the others.
//!
//! apt needs the SHA-256 of the plain index in `Release` even where only the
//! compressed forms are served (it checks what it decompresses). The layout
//! keeps the SHA-256 state after each piece ([`Midstate`]), so a splice hashes
//! the plain bytes from the first changed piece on, not the whole index.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Write;

/// One name in this many ends a piece, on average.
pub const AVERAGE: u32 = 64;
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final deflate block (fixed Huffman, end of block).
const DEFLATE_END: [u8; 2] = [0x03, 0x00];
const XZ_HEADER_LEN: usize = 12;

/// Whether the records of `name` end a piece.
pub fn ends_piece(name: &str) -> bool {
    let h = Sha256::digest(name.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % AVERAGE == 0
}

/// SHA-256 that can stop after any byte and resume later: the state after
/// the whole 64-byte blocks hashed (sha2's compression function), how many
/// bytes were hashed, and the bytes of the block not yet full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Midstate {
    state: [u32; 8],
    len: u64,
    tail: Vec<u8>,
}

impl Default for Midstate {
    fn default() -> Self {
        Midstate { state: [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19], len: 0, tail: Vec::new() }
    }
}

impl Midstate {
    fn blocks(&mut self, data: &[u8]) {
        use sha2::digest::generic_array::GenericArray;
        let blocks: Vec<GenericArray<u8, sha2::digest::consts::U64>> = data.chunks_exact(64).map(GenericArray::clone_from_slice).collect();
        sha2::compress256(&mut self.state, &blocks);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (64 - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.tail);
            self.blocks(&block);
        }
        let whole = data.len() / 64 * 64;
        self.blocks(&data[..whole]);
        self.tail.extend_from_slice(&data[whole..]);
    }

    /// The digest of everything hashed so far (hex).
    pub fn finish(&self) -> String {
        let mut m = self.clone();
        let bits = m.len.wrapping_mul(8);
        let mut pad = vec![0x80u8];
        while (m.tail.len() + pad.len()) % 64 != 56 {
            pad.push(0);
        }
        pad.extend_from_slice(&bits.to_be_bytes());
        let mut last = std::mem::take(&mut m.tail);
        last.extend_from_slice(&pad);
        m.blocks(&last);
        hex::encode(m.state.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `<state hex>.<length>.<tail hex>`.
    pub fn encode(&self) -> String {
        let state: Vec<u8> = self.state.iter().flat_map(|w| w.to_be_bytes()).collect();
        format!("{}.{}.{}", hex::encode(state), self.len, hex::encode(&self.tail))
    }

    pub fn decode(s: &str) -> Option<Midstate> {
        let mut parts = s.split('.');
        let state = hex::decode(parts.next()?).ok()?;
        let len: u64 = parts.next()?.parse().ok()?;
        let tail = hex::decode(parts.next()?).ok()?;
        if state.len() != 32 || tail.len() >= 64 || len % 64 != tail.len() as u64 % 64 || parts.next().is_some() {
            return None;
        }
        let mut words = [0u32; 8];
        for (w, b) in words.iter_mut().zip(state.chunks_exact(4)) {
            *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        Some(Midstate { state: words, len, tail })
    }
}

/// One piece of an index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The name of its last record.
    pub last: String,
    /// Its records.
    pub count: u32,
    /// Its plain length.
    pub plain: u64,
    /// The CRC-32 of its plain bytes.
    pub crc: u32,
    /// The length of its deflate data.
    pub gz: u64,
    /// The length of its xz block, padded, and unpadded (as the xz index lists it).
    pub xz: u64,
    pub xz_unpadded: u64,
    /// The SHA-256 state of the plain index after this piece ([`Midstate::encode`]).
    #[serde(default)]
    pub sha: String,
}

/// The pieces of an index file, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub pieces: Vec<Piece>,
    /// Where the first piece's deflate data lies in the stored gzip file,
    /// and that file's length (a format may frame the gzip member: APK puts
    /// a signature before it and tar framing around the pieces).
    #[serde(default = "gz_start")]
    pub gz_start: u64,
    #[serde(default)]
    pub gz_len: u64,
}

fn gz_start() -> u64 {
    GZIP_HEADER.len() as u64
}

impl Default for Layout {
    fn default() -> Self {
        Layout { pieces: vec![], gz_start: gz_start(), gz_len: 0 }
    }
}

/// A piece with its bytes in the forms asked for (the plain bytes always:
/// they are hashed).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub piece: Piece,
    pub plain: Vec<u8>,
    pub gz: Vec<u8>,
    pub xz: Vec<u8>,
}

/// Which forms of an index are made (the plain lengths and CRCs are kept
/// in any case: the gzip trailer and the xz index need them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forms {
    pub plain: bool,
    pub gz: bool,
    pub xz: bool,
    /// Whether the plain index's SHA-256 is kept ([`plain_digest`]).
    pub digest: bool,
}

impl Forms {
    pub const ALL: Forms = Forms { plain: true, gz: true, xz: true, digest: true };
}

/// A record of an index: its name (which decides the cuts) and its bytes.
pub struct Record<'a> {
    pub name: &'a str,
    pub text: &'a [u8],
}

/// Cuts sorted records into pieces and renders them in `forms`.
pub fn render(records: &[Record<'_>], forms: Forms) -> Result<Vec<Rendered>, String> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..records.len() {
        let last_of_name = i + 1 == records.len() || records[i + 1].name != records[i].name;
        if (last_of_name && ends_piece(records[i].name)) || i + 1 == records.len() {
            out.push(render_one(&records[start..=i], forms)?);
            start = i + 1;
        }
    }
    Ok(out)
}

fn render_one(records: &[Record<'_>], forms: Forms) -> Result<Rendered, String> {
    let plain: Vec<u8> = records.iter().flat_map(|r| r.text.iter().copied()).collect();
    let gz = if forms.gz { deflate_piece(&plain)? } else { vec![] };
    let (xz, xz_unpadded) = if forms.xz { xz_block(&plain)? } else { (vec![], 0) };
    let piece = Piece {
        last: records.last().map(|r| r.name.to_string()).unwrap_or_default(),
        count: records.len() as u32,
        plain: plain.len() as u64,
        crc: crc32fast::hash(&plain),
        gz: gz.len() as u64,
        xz: xz.len() as u64,
        xz_unpadded,
        sha: String::new(),
    };
    Ok(Rendered { piece, plain, gz, xz })
}

/// Deflate data of `data` from a fresh compressor (level 6, as gzip(1)
/// defaults to), ended by a sync flush: byte-aligned, not final.
fn deflate_piece(data: &[u8]) -> Result<Vec<u8>, String> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let at = c.total_in() as usize;
        c.compress_vec(&data[at..], &mut out, FlushCompress::Sync).map_err(|e| format!("deflate: {e}"))?;
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64));
    }
}

/// One xz block of `data` (preset 0, as the whole-file xz was) and its unpadded size.
fn xz_block(data: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(0)).map_err(|e| format!("xz: {e}"))?;
    w.write_all(data).map_err(|e| format!("xz: {e}"))?;
    let stream = w.finish().map_err(|e| format!("xz: {e}"))?;
    let (blocks, index) = split_xz(&stream)?;
    match index.as_slice() {
        [(unpadded, uncompressed)] if *uncompressed == data.len() as u64 => Ok((blocks.to_vec(), *unpadded)),
        _ => Err(format!("xz: expected one block, the encoder wrote {}", index.len())),
    }
}

/// The blocks of a one-stream xz file and its index records (unpadded, uncompressed).
fn split_xz(stream: &[u8]) -> Result<(&[u8], Vec<(u64, u64)>), String> {
    let bad = || "xz: malformed stream".to_string();
    if stream.len() < 2 * XZ_HEADER_LEN || &stream[stream.len() - 2..] != b"YZ" {
        return Err(bad());
    }
    let footer = &stream[stream.len() - 12..];
    let backward = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as usize;
    let index_len = (backward + 1) * 4;
    let index_at = stream.len().checked_sub(12 + index_len).filter(|&a| a >= XZ_HEADER_LEN).ok_or_else(bad)?;
    let index = &stream[index_at..stream.len() - 12];
    let mut at = 1;
    let varint = |at: &mut usize| -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..63).step_by(7) {
            let b = *index.get(*at).ok_or_else(bad)?;
            *at += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad())
    };
    if index.first() != Some(&0) {
        return Err(bad());
    }
    let n = varint(&mut at)?;
    let mut records = Vec::new();
    for _ in 0..n {
        records.push((varint(&mut at)?, varint(&mut at)?));
    }
    Ok((&stream[XZ_HEADER_LEN..index_at], records))
}

/// The xz stream header and the two stream flag bytes (check type) the encoder writes.
fn xz_header() -> [u8; XZ_HEADER_LEN] {
    let mut h = [0u8; XZ_HEADER_LEN];
    let w = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(0)).expect("xz options");
    let s = w.finish().expect("writing to memory");
    h.copy_from_slice(&s[..XZ_HEADER_LEN]);
    h
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An xz stream's index of the layout's blocks and its footer.
fn xz_trailer(layout: &Layout) -> Vec<u8> {
    let header = xz_header();
    let mut index = vec![0u8];
    put_varint(&mut index, layout.pieces.len() as u64);
    for p in &layout.pieces {
        put_varint(&mut index, p.xz_unpadded);
        put_varint(&mut index, p.plain);
    }
    while index.len() % 4 != 0 {
        index.push(0);
    }
    index.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
    let backward = ((index.len() / 4) - 1) as u32;
    let mut out = index;
    let mut tail = backward.to_le_bytes().to_vec();
    tail.extend_from_slice(&header[6..8]);
    out.extend_from_slice(&crc32fast::hash(&tail).to_le_bytes());
    out.extend_from_slice(&tail);
    out.extend_from_slice(b"YZ");
    out
}

/// An index file's three forms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    pub plain: Vec<u8>,
    pub gz: Vec<u8>,
    pub xz: Vec<u8>,
}

/// Where a piece's bytes come from: rendered now, or the earlier files.
pub enum Source<'a> {
    New(&'a Rendered),
    /// The `i`th piece of the earlier layout.
    Old(usize),
}

/// Offsets of each piece in each form of a file of `layout`.
fn offsets(layout: &Layout) -> Vec<(usize, usize, usize)> {
    let (mut p, mut g, mut x) = (0usize, layout.gz_start as usize, XZ_HEADER_LEN);
    layout
        .pieces
        .iter()
        .map(|piece| {
            let at = (p, g, x);
            p += piece.plain as usize;
            g += piece.gz as usize;
            x += piece.xz as usize;
            at
        })
        .collect()
}

/// Whether `old` holds the files in `forms` that `layout` describes (lengths add up).
pub fn fits(layout: &Layout, old: &Files, forms: Forms) -> bool {
    let plain: u64 = layout.pieces.iter().map(|p| p.plain).sum();
    let gz_end = layout.gz_start + layout.pieces.iter().map(|p| p.gz).sum::<u64>();
    let xz: u64 = layout.pieces.iter().map(|p| p.xz).sum::<u64>() + XZ_HEADER_LEN as u64;
    (!forms.plain || old.plain.len() as u64 == plain)
        && (!forms.gz || (old.gz.len() as u64 == layout.gz_len && gz_end <= layout.gz_len && layout.pieces.iter().all(|p| p.gz > 0)))
        && (!forms.xz || (old.xz.len() as u64 > xz && old.xz.starts_with(&xz_header()) && layout.pieces.iter().all(|p| p.xz > 0)))
}

/// Assembles the forms from pieces (copied from `old`, described by
/// `old_layout`, or rendered now), with the new layout. Each source must
/// have the forms asked for (rendered in them, or checked by [`fits`]).
pub fn assemble(sources: &[Source<'_>], old_layout: &Layout, old: &Files, forms: Forms) -> Result<(Files, Layout), String> {
    assemble_framed(sources, old_layout, old, forms, b"", b"")
}

/// [`assemble`], with plain bytes before and after the pieces in the gzip
/// form (APK: the tar headers before the index text, the tar's end after it),
/// each deflated on its own.
pub fn assemble_framed(sources: &[Source<'_>], old_layout: &Layout, old: &Files, forms: Forms, before: &[u8], after: &[u8]) -> Result<(Files, Layout), String> {
    let at = offsets(old_layout);
    let mut files = Files::default();
    let mut layout = Layout::default();
    files.gz.extend_from_slice(&GZIP_HEADER);
    files.xz.extend_from_slice(&xz_header());
    let mut crc = crc32fast::Hasher::new();
    if forms.gz && !before.is_empty() {
        files.gz.extend(deflate_piece(before)?);
        crc.update(before);
    }
    layout.gz_start = files.gz.len() as u64;
    // The plain SHA-256: the states of the earlier file's pieces hold while
    // they come first and in their place; from the first other piece on, the
    // plain bytes are hashed.
    let mut hash = Midstate::default();
    let mut same_so_far = true;
    for (pos, s) in sources.iter().enumerate() {
        let kept = match s {
            Source::Old(i) if same_so_far && *i == pos => Midstate::decode(&old_layout.pieces[*i].sha),
            _ => None,
        };
        let sha = match kept {
            Some(state) => {
                hash = state;
                None
            }
            None if !forms.digest => None,
            None => {
                same_so_far = false;
                match s {
                    Source::New(r) => hash.update(&r.plain),
                    Source::Old(i) => hash.update(&old_plain(old_layout, *i, at[*i], old, forms)?),
                }
                Some(hash.encode())
            }
        };
        let piece = match s {
            Source::New(r) => {
                if forms.plain {
                    files.plain.extend_from_slice(&r.plain);
                }
                files.gz.extend_from_slice(&r.gz);
                files.xz.extend_from_slice(&r.xz);
                &r.piece
            }
            Source::Old(i) => {
                let (p, (a, g, x)) = (&old_layout.pieces[*i], at[*i]);
                if forms.plain {
                    files.plain.extend_from_slice(range(&old.plain, a, p.plain)?);
                }
                if forms.gz {
                    files.gz.extend_from_slice(range(&old.gz, g, p.gz)?);
                }
                if forms.xz {
                    files.xz.extend_from_slice(range(&old.xz, x, p.xz)?);
                }
                p
            }
        };
        crc.combine(&crc32fast::Hasher::new_with_initial_len(piece.crc, piece.plain));
        let mut piece = piece.clone();
        if let Some(sha) = sha {
            piece.sha = sha;
        }
        layout.pieces.push(piece);
    }
    let plain_len: u64 = layout.pieces.iter().map(|p| p.plain).sum();
    if forms.gz && !after.is_empty() {
        let d = deflate_piece(after)?;
        files.gz.extend(d);
        crc.combine(&crc32fast::Hasher::new_with_initial_len(crc32fast::hash(after), after.len() as u64));
    }
    let gz_plain = if forms.gz { before.len() + after.len() } else { 0 } as u64 + plain_len;
    // gzip: the final block, CRC-32 and length of the whole.
    files.gz.extend_from_slice(&DEFLATE_END);
    files.gz.extend_from_slice(&crc.finalize().to_le_bytes());
    files.gz.extend_from_slice(&(gz_plain as u32).to_le_bytes());
    layout.gz_len = files.gz.len() as u64;
    files.xz.extend(xz_trailer(&layout));
    for (made, bytes) in [(forms.plain, &mut files.plain), (forms.gz, &mut files.gz), (forms.xz, &mut files.xz)] {
        if !made {
            bytes.clear();
        }
    }
    Ok((files, layout))
}

/// The plain bytes of a piece of the earlier file: from its plain form, or
/// its deflate data (each piece inflates on its own), or its xz block.
/// `len` bytes at `at` of an earlier file, or why they are not there (a
/// stored file that does not fit its layout is refused, never read past).
fn range(bytes: &[u8], at: usize, len: u64) -> Result<&[u8], String> {
    usize::try_from(len).ok().and_then(|n| bytes.get(at..at.checked_add(n)?)).ok_or_else(|| "a piece lies outside the earlier file".to_string())
}

fn old_plain(layout: &Layout, i: usize, (a, g, x): (usize, usize, usize), old: &Files, forms: Forms) -> Result<Vec<u8>, String> {
    let p = &layout.pieces[i];
    let out = if forms.plain {
        range(&old.plain, a, p.plain)?.to_vec()
    } else if forms.gz {
        let mut d = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(p.plain as usize);
        d.decompress_vec(range(&old.gz, g, p.gz)?, &mut out, flate2::FlushDecompress::Sync).map_err(|e| format!("inflating a piece: {e}"))?;
        out
    } else {
        let one = Layout { pieces: vec![p.clone()], ..Layout::default() };
        let stream = assemble_xz_of(range(&old.xz, x, p.xz)?, &one);
        let mut out = Vec::with_capacity(p.plain as usize);
        std::io::Read::read_to_end(&mut lzma_rust2::XzReader::new(&stream[..], false), &mut out).map_err(|e| format!("reading a piece's xz block: {e}"))?;
        out
    };
    if out.len() as u64 != p.plain || crc32fast::hash(&out) != p.crc {
        return Err("a piece of the earlier index is not what its layout says".into());
    }
    Ok(out)
}

/// The plain bytes of the `i`th piece of an earlier file (checked against
/// its length and CRC-32).
pub fn old_piece_text(layout: &Layout, i: usize, old: &Files, forms: Forms) -> Result<Vec<u8>, String> {
    if i >= layout.pieces.len() {
        return Err("no such piece".into());
    }
    let at = offsets(layout)[i];
    old_plain(layout, i, at, old, forms)
}

/// A one-block xz stream of a piece's block.
fn assemble_xz_of(block: &[u8], one: &Layout) -> Vec<u8> {
    let mut out = xz_header().to_vec();
    out.extend_from_slice(block);
    out.extend(xz_trailer(one));
    out
}

/// The SHA-256 and length of the plain index a layout describes.
pub fn plain_digest(layout: &Layout) -> Option<(String, u64)> {
    let len = layout.pieces.iter().map(|p| p.plain).sum();
    match layout.pieces.last() {
        None => Some((Midstate::default().finish(), 0)),
        Some(p) => Midstate::decode(&p.sha).filter(|m| m.len() == len).map(|m| (m.finish(), len)),
    }
}

/// The whole files of sorted records, rendered afresh.
pub fn full(records: &[Record<'_>], forms: Forms) -> Result<(Files, Layout), String> {
    let rendered = render(records, forms)?;
    let sources: Vec<Source<'_>> = rendered.iter().map(Source::New).collect();
    assemble(&sources, &Layout::default(), &Files::default(), forms)
}

/// The runs of pieces (first, last; inclusive) that records named in
/// `changed` may fall in: a name belongs to the first piece whose last name
/// is not below it (past the end: the final piece), and a piece whose last
/// name changed takes the next piece with it (that name may be gone, and
/// with it the cut).
pub fn affected(layout: &Layout, changed: &BTreeSet<String>) -> Vec<(usize, usize)> {
    let n = layout.pieces.len();
    if n == 0 {
        return vec![];
    }
    let mut hit = vec![false; n];
    for name in changed {
        let k = layout.pieces.partition_point(|p| p.last.as_str() < name.as_str()).min(n - 1);
        hit[k] = true;
        if layout.pieces[k].last == *name && k + 1 < n {
            hit[k + 1] = true;
        }
    }
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (k, &h) in hit.iter().enumerate() {
        if !h {
            continue;
        }
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == k => *last = k,
            _ => runs.push((k, k)),
        }
    }
    runs
}

/// The names a run of pieces covers: above the previous piece's last name
/// (if any), up to its own last piece's (unless it is the final piece).
pub fn bounds(layout: &Layout, run: (usize, usize)) -> (Option<&str>, Option<&str>) {
    let lo = run.0.checked_sub(1).map(|k| layout.pieces[k].last.as_str());
    let hi = (run.1 + 1 < layout.pieces.len()).then(|| layout.pieces[run.1].last.as_str());
    (lo, hi)
}

/// The earlier file's pieces with the runs replaced by `fresh` (the records
/// now in each run's bounds, rendered; one entry per run, in order).
pub fn splice<'a>(layout: &Layout, runs: &[(usize, usize)], fresh: &'a [Vec<Rendered>]) -> Vec<Source<'a>> {
    let mut out = Vec::new();
    let mut k = 0;
    for (run, rendered) in runs.iter().zip(fresh) {
        while k < run.0 {
            out.push(Source::Old(k));
            k += 1;
        }
        out.extend(rendered.iter().map(Source::New));
        k = run.1 + 1;
    }
    while k < layout.pieces.len() {
        out.push(Source::Old(k));
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn text(name: &str, v: u32) -> String {
        format!("Package: {name}\nVersion: {v}\nDescription: {}\n\n", "x".repeat((v % 40) as usize))
    }

    /// (name, text) sorted, as an index lists its records.
    fn state(names: &[(String, u32)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = names.iter().map(|(n, x)| (n.clone(), text(n, *x))).collect();
        v.sort();
        v
    }

    fn records(s: &[(String, String)]) -> Vec<Record<'_>> {
        s.iter().map(|(n, t)| Record { name: n, text: t.as_bytes() }).collect()
    }

    /// Each run's records of `new_state`, read within the run's bounds and rendered, as publishing does.
    fn rerender(layout: &Layout, runs: &[(usize, usize)], new_state: &[(String, String)], forms: Forms) -> Vec<Vec<Rendered>> {
        runs.iter()
            .map(|&run| {
                let (lo, hi) = bounds(layout, run);
                let within: Vec<(String, String)> =
                    new_state.iter().filter(|(n, _)| lo.map_or(true, |lo| n.as_str() > lo) && hi.map_or(true, |hi| n.as_str() <= hi)).cloned().collect();
                render(&records(&within), forms).unwrap()
            })
            .collect()
    }

    /// What publishing does: the changed names' runs, read again within their bounds, spliced.
    fn incremental(old_state: &[(String, String)], new_state: &[(String, String)], changed: &BTreeSet<String>) -> (Files, Layout) {
        let (old, layout) = full(&records(old_state), Forms::ALL).unwrap();
        assert!(fits(&layout, &old, Forms::ALL));
        let runs = affected(&layout, changed);
        let fresh = rerender(&layout, &runs, new_state, Forms::ALL);
        let sources = splice(&layout, &runs, &fresh);
        assemble(&sources, &layout, &old, Forms::ALL).unwrap()
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
        out
    }

    fn unxz(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rust2::XzReader::new(b, false).read_to_end(&mut out).unwrap();
        out
    }

    fn names(n: u32) -> Vec<(String, u32)> {
        (0..n).map(|i| (format!("pkg{i:05}"), i)).collect()
    }

    #[test]
    fn files_decompress_to_the_plain_text_with_real_tools() {
        let s = state(&names(2000));
        let (files, layout) = full(&records(&s), Forms::ALL).unwrap();
        let plain: String = s.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(files.plain, plain.as_bytes());
        assert!(layout.pieces.len() > 10 && layout.pieces.len() < 100, "{} pieces", layout.pieces.len());
        assert_eq!(gunzip(&files.gz), files.plain);
        assert_eq!(unxz(&files.xz), files.plain);
        let dir = std::env::temp_dir().join(format!("wharf-pieces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes, tool) in [("p.gz", &files.gz, "gzip"), ("p.xz", &files.xz, "xz")] {
            std::fs::write(dir.join(name), bytes).unwrap();
            if let Ok(out) = std::process::Command::new(tool).args(["-dc", dir.join(name).to_str().unwrap()]).output() {
                assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(out.stdout, files.plain, "{tool}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_index_is_valid_in_every_form() {
        let (files, layout) = full(&[], Forms::ALL).unwrap();
        assert!(layout.pieces.is_empty() && files.plain.is_empty());
        assert!(gunzip(&files.gz).is_empty());
        assert!(unxz(&files.xz).is_empty());
        assert!(fits(&layout, &files, Forms::ALL));
    }

    #[test]
    fn splicing_equals_a_full_regeneration_after_adds_removes_and_replaces() {
        let base = names(3000);
        let old = state(&base);
        let (first_full, first_layout) = full(&records(&old), Forms::ALL).unwrap();
        // Every kind of change, including the names that end pieces (the cut
        // goes with them) and names before the first and after the last.
        let cuts: Vec<String> = first_layout.pieces.iter().map(|p| p.last.clone()).collect();
        let cases: Vec<(Vec<(String, u32)>, Vec<String>)> = vec![
            // add one in the middle, one before all, one after all
            ([base.clone(), vec![("pkg01500a".into(), 7), ("a".into(), 1), ("zzz".into(), 2)]].concat(), vec!["pkg01500a".into(), "a".into(), "zzz".into()]),
            // remove a piece's last name (its cut goes), and the very last name
            (base.iter().filter(|(n, _)| n != &cuts[3] && n != "pkg02999").cloned().collect(), vec![cuts[3].clone(), "pkg02999".into()]),
            // replace (same name, other text), and add a second version
            (base.iter().map(|(n, v)| if n == "pkg00010" { (n.clone(), v + 1) } else { (n.clone(), *v) }).chain([("pkg00777".to_string(), 99)]).collect(),
             vec!["pkg00010".into(), "pkg00777".into()]),
            // remove everything of one run of pieces, and the first name
            (base.iter().filter(|(n, _)| !(n.as_str() > cuts[5].as_str() && n.as_str() <= cuts[8].as_str()) && n != "pkg00000").cloned().collect(),
             base.iter().filter(|(n, _)| (n.as_str() > cuts[5].as_str() && n.as_str() <= cuts[8].as_str()) || n == "pkg00000").map(|(n, _)| n.clone()).collect()),
            // nothing changed
            (base.clone(), vec![]),
        ];
        for (i, (new_names, changed)) in cases.into_iter().enumerate() {
            let new = state(&new_names);
            let changed: BTreeSet<String> = changed.into_iter().collect();
            let (spliced, layout) = incremental(&old, &new, &changed);
            let (whole, whole_layout) = full(&records(&new), Forms::ALL).unwrap();
            assert_eq!(layout, whole_layout, "case {i}: layout");
            assert!(spliced == whole, "case {i}: spliced files differ from a full regeneration");
            assert_eq!(gunzip(&spliced.gz), spliced.plain, "case {i}");
            assert_eq!(unxz(&spliced.xz), spliced.plain, "case {i}");
            if changed.is_empty() {
                assert_eq!(spliced, first_full);
            }
        }
    }

    #[test]
    fn a_change_touches_few_pieces() {
        let (_, layout) = full(&records(&state(&names(10_000))), Forms::ALL).unwrap();
        let runs = affected(&layout, &BTreeSet::from(["pkg05000x".to_string()]));
        let touched: usize = runs.iter().map(|(a, b)| b - a + 1).sum();
        assert!(touched <= 2, "{runs:?}");
        assert!(layout.pieces.len() > 100);
    }

    #[test]
    fn stored_files_that_do_not_fit_their_layout_are_noticed() {
        let (mut files, layout) = full(&records(&state(&names(300))), Forms::ALL).unwrap();
        assert!(fits(&layout, &files, Forms::ALL));
        files.gz.push(0);
        assert!(!fits(&layout, &files, Forms::ALL));
    }

    #[test]
    fn only_the_forms_asked_for_are_made_and_spliced() {
        let gz_only = Forms { plain: false, gz: true, xz: false, digest: true };
        let s = state(&names(1000));
        let (files, layout) = full(&records(&s), gz_only).unwrap();
        assert!(files.plain.is_empty() && files.xz.is_empty());
        let (all, _) = full(&records(&s), Forms::ALL).unwrap();
        assert_eq!(files.gz, all.gz);
        assert!(fits(&layout, &files, gz_only) && !fits(&layout, &files, Forms::ALL));
        let sources: Vec<Source<'_>> = (0..layout.pieces.len()).map(Source::Old).collect();
        assert_eq!(assemble(&sources, &layout, &files, gz_only).unwrap().0, files);
    }

    #[test]
    fn a_midstate_resumes_where_it_stopped_and_digests_as_sha2_does() {
        let data: Vec<u8> = (0..1000u32).flat_map(|i| (i * 7919).to_le_bytes()).collect();
        for cuts in [vec![], vec![0], vec![1, 63, 64, 65], vec![100, 128, 1000, 3999], vec![55, 56, 57, 119, 120]] {
            let mut m = Midstate::default();
            let mut at = 0;
            for c in cuts.iter().copied().chain([data.len()]) {
                m.update(&data[at..c]);
                m = Midstate::decode(&m.encode()).expect("round trip");
                assert_eq!(m.finish(), hex::encode(Sha256::digest(&data[..c])), "prefix {c}");
                at = c;
            }
        }
        assert_eq!(Midstate::default().finish(), hex::encode(Sha256::digest(b"")));
        for bad in ["", "00.0.", "zz.1.00", &format!("{}.3.00", "0".repeat(64))] {
            assert!(Midstate::decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_plain_digest_is_kept_through_splices_whatever_forms_are_served() {
        for forms in [Forms::ALL, Forms { plain: false, gz: true, xz: false, digest: true }, Forms { plain: false, gz: false, xz: true, digest: true }] {
            let old_state = state(&names(2000));
            let (old, layout) = full(&records(&old_state), forms).unwrap();
            let plain: String = old_state.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(plain_digest(&layout), Some((hex::encode(Sha256::digest(plain.as_bytes())), plain.len() as u64)));
            let mut new_names = names(2000);
            new_names[700].1 += 1;
            new_names.push(("pkg00100z".into(), 5));
            let new_state = state(&new_names);
            let changed: BTreeSet<String> = ["pkg00700", "pkg00100z"].map(String::from).into();
            let runs = affected(&layout, &changed);
            let fresh = rerender(&layout, &runs, &new_state, forms);
            let (files, spliced) = assemble(&splice(&layout, &runs, &fresh), &layout, &old, forms).unwrap();
            let (whole_files, whole) = full(&records(&new_state), forms).unwrap();
            assert_eq!(spliced, whole);
            assert_eq!(files, whole_files);
            let plain: String = new_state.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(plain_digest(&spliced).unwrap().0, hex::encode(Sha256::digest(plain.as_bytes())));
        }
    }

    #[test]
    fn a_framed_gzip_member_holds_the_frame_around_the_pieces_and_splices_alike() {
        let forms = Forms { plain: false, gz: true, xz: false, digest: false };
        let s1 = state(&names(1500));
        let (before, after) = (b"HEAD\n".repeat(40), vec![0u8; 1500]);
        let rendered = render(&records(&s1), forms).unwrap();
        let sources: Vec<Source<'_>> = rendered.iter().map(Source::New).collect();
        let (files, layout) = assemble_framed(&sources, &Layout::default(), &Files::default(), forms, &before, &after).unwrap();
        let plain: Vec<u8> = s1.iter().flat_map(|(_, t)| t.bytes()).collect();
        assert_eq!(gunzip(&files.gz), [before.clone(), plain, after.clone()].concat());
        assert_eq!(layout.gz_len, files.gz.len() as u64);
        // Stored behind other bytes (a signature): the layout says where.
        let mut stored = b"SIGNATURE".to_vec();
        stored.extend_from_slice(&files.gz);
        let mut moved = layout.clone();
        moved.gz_start += 9;
        moved.gz_len = stored.len() as u64;
        let old = Files { gz: stored, ..Files::default() };
        assert!(fits(&moved, &old, forms));
        let kept: Vec<Source<'_>> = (0..moved.pieces.len()).map(Source::Old).collect();
        let (again, _) = assemble_framed(&kept, &moved, &old, forms, &before, &after).unwrap();
        assert_eq!(again.gz, files.gz);
        assert!(layout.pieces.iter().all(|p| p.sha.is_empty()), "no digest asked for");
    }

    #[test]
    fn a_stored_file_shorter_than_its_layout_is_refused_not_read_past() {
        let forms = Forms::ALL;
        let (mut files, layout) = full(&records(&state(&names(500))), forms).unwrap();
        files.gz.truncate(files.gz.len() / 2);
        files.plain.truncate(10);
        let kept: Vec<Source<'_>> = (0..layout.pieces.len()).map(Source::Old).collect();
        assert!(assemble(&kept, &layout, &files, forms).is_err());
        assert!(old_piece_text(&layout, layout.pieces.len() - 1, &files, Forms { plain: false, gz: true, xz: false, digest: false }).is_err());
        assert!(old_piece_text(&layout, layout.pieces.len(), &files, forms).is_err());
    }
}
