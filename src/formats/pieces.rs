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
}

/// The pieces of an index file, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub pieces: Vec<Piece>,
}

/// A piece with its bytes in every form.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub piece: Piece,
    pub plain: Vec<u8>,
    pub gz: Vec<u8>,
    pub xz: Vec<u8>,
}

/// A record of an index: its name (which decides the cuts) and its bytes.
pub struct Record<'a> {
    pub name: &'a str,
    pub text: &'a [u8],
}

/// Cuts sorted records into pieces and renders them.
pub fn render(records: &[Record<'_>]) -> Result<Vec<Rendered>, String> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..records.len() {
        let last_of_name = i + 1 == records.len() || records[i + 1].name != records[i].name;
        if (last_of_name && ends_piece(records[i].name)) || i + 1 == records.len() {
            out.push(render_one(&records[start..=i])?);
            start = i + 1;
        }
    }
    Ok(out)
}

fn render_one(records: &[Record<'_>]) -> Result<Rendered, String> {
    let plain: Vec<u8> = records.iter().flat_map(|r| r.text.iter().copied()).collect();
    let gz = deflate_piece(&plain)?;
    let (xz, xz_unpadded) = xz_block(&plain)?;
    let piece = Piece {
        last: records.last().map(|r| r.name.to_string()).unwrap_or_default(),
        count: records.len() as u32,
        plain: plain.len() as u64,
        crc: crc32fast::hash(&plain),
        gz: gz.len() as u64,
        xz: xz.len() as u64,
        xz_unpadded,
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
    let (mut p, mut g, mut x) = (0usize, GZIP_HEADER.len(), XZ_HEADER_LEN);
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

/// Whether `old` holds the files `layout` describes (lengths add up).
pub fn fits(layout: &Layout, old: &Files) -> bool {
    let plain: u64 = layout.pieces.iter().map(|p| p.plain).sum();
    let gz: u64 = layout.pieces.iter().map(|p| p.gz).sum::<u64>() + (GZIP_HEADER.len() + DEFLATE_END.len() + 8) as u64;
    let xz: u64 = layout.pieces.iter().map(|p| p.xz).sum::<u64>() + XZ_HEADER_LEN as u64;
    old.plain.len() as u64 == plain && old.gz.len() as u64 == gz && old.xz.len() as u64 > xz && old.xz.starts_with(&xz_header())
}

/// Assembles the three forms from pieces (copied from `old`, described by
/// `old_layout`, or rendered now), with the new layout.
pub fn assemble(sources: &[Source<'_>], old_layout: &Layout, old: &Files) -> (Files, Layout) {
    let at = offsets(old_layout);
    let mut files = Files::default();
    let mut layout = Layout::default();
    files.gz.extend_from_slice(&GZIP_HEADER);
    files.xz.extend_from_slice(&xz_header());
    let mut crc = crc32fast::Hasher::new();
    for s in sources {
        let piece = match s {
            Source::New(r) => {
                files.plain.extend_from_slice(&r.plain);
                files.gz.extend_from_slice(&r.gz);
                files.xz.extend_from_slice(&r.xz);
                &r.piece
            }
            Source::Old(i) => {
                let (p, (a, g, x)) = (&old_layout.pieces[*i], at[*i]);
                files.plain.extend_from_slice(&old.plain[a..a + p.plain as usize]);
                files.gz.extend_from_slice(&old.gz[g..g + p.gz as usize]);
                files.xz.extend_from_slice(&old.xz[x..x + p.xz as usize]);
                p
            }
        };
        crc.combine(&crc32fast::Hasher::new_with_initial_len(piece.crc, piece.plain));
        layout.pieces.push(piece.clone());
    }
    // gzip: the final block, CRC-32 and length of the whole.
    files.gz.extend_from_slice(&DEFLATE_END);
    files.gz.extend_from_slice(&crc.finalize().to_le_bytes());
    files.gz.extend_from_slice(&(files.plain.len() as u32).to_le_bytes());
    // xz: the index of the blocks, then the footer.
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
    files.xz.extend_from_slice(&index);
    let mut tail = backward.to_le_bytes().to_vec();
    tail.extend_from_slice(&header[6..8]);
    files.xz.extend_from_slice(&crc32fast::hash(&tail).to_le_bytes());
    files.xz.extend_from_slice(&tail);
    files.xz.extend_from_slice(b"YZ");
    (files, layout)
}

/// The whole files of sorted records, rendered afresh.
pub fn full(records: &[Record<'_>]) -> Result<(Files, Layout), String> {
    let rendered = render(records)?;
    let sources: Vec<Source<'_>> = rendered.iter().map(Source::New).collect();
    Ok(assemble(&sources, &Layout::default(), &Files::default()))
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

    /// What publishing does: the changed names' runs, read again within their bounds, spliced.
    fn incremental(old_state: &[(String, String)], new_state: &[(String, String)], changed: &BTreeSet<String>) -> (Files, Layout) {
        let (old, layout) = full(&records(old_state)).unwrap();
        assert!(fits(&layout, &old));
        let runs = affected(&layout, changed);
        let fresh: Vec<Vec<Rendered>> = runs
            .iter()
            .map(|&run| {
                let (lo, hi) = bounds(&layout, run);
                let within: Vec<(String, String)> =
                    new_state.iter().filter(|(n, _)| lo.map_or(true, |lo| n.as_str() > lo) && hi.map_or(true, |hi| n.as_str() <= hi)).cloned().collect();
                render(&records(&within)).unwrap()
            })
            .collect();
        let sources = splice(&layout, &runs, &fresh);
        assemble(&sources, &layout, &old)
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
        let (files, layout) = full(&records(&s)).unwrap();
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
        let (files, layout) = full(&[]).unwrap();
        assert!(layout.pieces.is_empty() && files.plain.is_empty());
        assert!(gunzip(&files.gz).is_empty());
        assert!(unxz(&files.xz).is_empty());
        assert!(fits(&layout, &files));
    }

    #[test]
    fn splicing_equals_a_full_regeneration_after_adds_removes_and_replaces() {
        let base = names(3000);
        let old = state(&base);
        let (first_full, first_layout) = full(&records(&old)).unwrap();
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
            let (whole, whole_layout) = full(&records(&new)).unwrap();
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
        let (_, layout) = full(&records(&state(&names(10_000)))).unwrap();
        let runs = affected(&layout, &BTreeSet::from(["pkg05000x".to_string()]));
        let touched: usize = runs.iter().map(|(a, b)| b - a + 1).sum();
        assert!(touched <= 2, "{runs:?}");
        assert!(layout.pieces.len() > 100);
    }

    #[test]
    fn stored_files_that_do_not_fit_their_layout_are_noticed() {
        let (mut files, layout) = full(&records(&state(&names(300)))).unwrap();
        assert!(fits(&layout, &files));
        files.gz.push(0);
        assert!(!fits(&layout, &files));
    }
}
