//! A batch of packages in one request: a tar stream (POSIX ustar, with pax
//! or GNU long names) of package files, read as it arrives. Each regular
//! file comes out whole (a package is inspected from memory), one at a time,
//! so what is held is one package, never the batch; files larger than the
//! limit are refused (they go up on their own). A pax record
//! `WHARF.sha256=<hex>` names the sha256 a file must have.
//!
//! Headers are parsed by the `tar` crate; this is the streaming loop around it.

/// One file of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub data: Vec<u8>,
    /// The sha256 (hex) the sender says it has.
    pub claimed: Option<String>,
}

#[derive(Debug)]
enum State {
    /// Expecting a 512-byte header (or the end).
    Header,
    /// Reading an entry's bytes: what it is, how much is left, then padding.
    Body { kind: Kind, size: u64, pad: u64 },
    /// After the end-of-archive blocks: the rest is ignored.
    End,
}

#[derive(Debug)]
enum Kind {
    File { name: String, claimed: Option<String> },
    Pax { global: bool },
    LongName,
    Skip,
}

/// The tar stream's reader: `push` what arrives, `finish` at its end.
pub struct Splitter {
    limit: u64,
    state: State,
    pending: Vec<u8>,
    body: Vec<u8>,
    next_name: Option<String>,
    next_claim: Option<String>,
    next_size: Option<u64>,
    zero_blocks: u8,
}

const BLOCK: usize = 512;

fn octal_or_binary(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for sizes of 8 GiB and more.
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(*b as u64)?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn checksum_ok(block: &[u8]) -> bool {
    let Some(stored) = octal_or_binary(&block[148..156]) else { return false };
    let sum: u64 = block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { b' ' as u64 } else { *b as u64 }).sum();
    sum == stored
}

impl Splitter {
    /// `limit`: the largest file taken, in bytes.
    pub fn new(limit: u64) -> Splitter {
        Splitter { limit, state: State::Header, pending: Vec::new(), body: Vec::new(), next_name: None, next_claim: None, next_size: None, zero_blocks: 0 }
    }

    /// Takes the next bytes of the stream; returns the files they complete.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<File>, String> {
        let mut out = Vec::new();
        loop {
            let done = match &mut self.state {
                State::End => return Ok(out),
                State::Header => {
                    if chunk.is_empty() {
                        return Ok(out);
                    }
                    let take = (BLOCK - self.pending.len()).min(chunk.len());
                    self.pending.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.pending.len() == BLOCK {
                        let block = std::mem::take(&mut self.pending);
                        self.header(&block)?;
                    }
                    false
                }
                State::Body { kind, size, pad } => {
                    let left = if matches!(kind, Kind::Skip) { *size } else { *size - self.body.len() as u64 };
                    if left > 0 {
                        if chunk.is_empty() {
                            return Ok(out);
                        }
                        let take = (left.min(chunk.len() as u64)) as usize;
                        if matches!(kind, Kind::Skip) {
                            *size -= take as u64;
                        } else {
                            self.body.extend_from_slice(&chunk[..take]);
                        }
                        chunk = &chunk[take..];
                        false
                    } else if *pad > 0 {
                        if chunk.is_empty() {
                            return Ok(out);
                        }
                        let take = (*pad).min(chunk.len() as u64) as usize;
                        *pad -= take as u64;
                        chunk = &chunk[take..];
                        false
                    } else {
                        true
                    }
                }
            };
            if done {
                if let Some(f) = self.entry_done()? {
                    out.push(f);
                }
            }
        }
    }

    /// The stream ended: it must end between entries.
    pub fn finish(self) -> Result<(), String> {
        match self.state {
            State::End => Ok(()),
            State::Header if self.pending.is_empty() && self.next_name.is_none() => Ok(()),
            State::Header => Err("the tar stream ends inside a header".into()),
            State::Body { kind: Kind::File { name, .. }, .. } => Err(format!("the tar stream ends inside {name}")),
            State::Body { .. } => Err("the tar stream ends inside an entry".into()),
        }
    }

    fn header(&mut self, block: &[u8]) -> Result<(), String> {
        if block.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.state = State::End;
            }
            return Ok(());
        }
        if self.zero_blocks > 0 {
            return Err("a header after an end-of-archive block".into());
        }
        if !checksum_ok(block) {
            return Err("a tar header's checksum does not match: not a tar stream, or a damaged one".into());
        }
        let header = tar::Header::from_byte_slice(block);
        let size = octal_or_binary(&block[124..136]).ok_or("a tar header's size does not read")?;
        let size = self.next_size.take().unwrap_or(size);
        let typeflag = block[156];
        let kind = match typeflag {
            b'0' | 0 | b'7' => {
                let name = match self.next_name.take() {
                    Some(n) => n,
                    None => String::from_utf8_lossy(&header.path_bytes()).into_owned(),
                };
                if size > self.limit {
                    return Err(format!("{name} is {size} bytes; a batch takes files of up to {} bytes (add larger ones on their own)", self.limit));
                }
                Kind::File { name, claimed: self.next_claim.take() }
            }
            b'x' | b'g' => {
                if size > 1 << 20 {
                    return Err("a pax header larger than 1 MiB".into());
                }
                Kind::Pax { global: typeflag == b'g' }
            }
            b'L' => {
                if size > 64 << 10 {
                    return Err("a GNU long name longer than 64 KiB".into());
                }
                Kind::LongName
            }
            // Directories and the like carry nothing for a batch.
            b'5' | b'3' | b'4' | b'6' => {
                self.next_name = None;
                self.next_claim = None;
                Kind::Skip
            }
            b'1' | b'2' => {
                let name = self.next_name.take().unwrap_or_else(|| String::from_utf8_lossy(&header.path_bytes()).into_owned());
                return Err(format!("{name} is a link; a batch takes regular files"));
            }
            other => return Err(format!("a tar entry of type {:?} is not taken", other as char)),
        };
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.body.clear();
        self.state = State::Body { kind, size, pad };
        Ok(())
    }

    fn entry_done(&mut self) -> Result<Option<File>, String> {
        let state = std::mem::replace(&mut self.state, State::Header);
        let data = std::mem::take(&mut self.body);
        let State::Body { kind, .. } = state else { return Ok(None) };
        match kind {
            Kind::File { name, claimed } => Ok(Some(File { name, data, claimed })),
            Kind::Pax { global } => {
                if !global {
                    for ext in tar::PaxExtensions::new(&data) {
                        let ext = ext.map_err(|_| "a pax header does not read".to_string())?;
                        let value = ext.value().map_err(|_| "a pax value is not UTF-8".to_string())?;
                        match ext.key().map_err(|_| "a pax key is not UTF-8".to_string())? {
                            "path" => self.next_name = Some(value.to_string()),
                            "size" => self.next_size = Some(value.parse().map_err(|_| format!("a pax size {value:?} does not read"))?),
                            "WHARF.sha256" => self.next_claim = Some(value.trim().to_ascii_lowercase()),
                            _ => {}
                        }
                    }
                }
                Ok(None)
            }
            Kind::LongName => {
                self.next_name = Some(String::from_utf8_lossy(&data).trim_end_matches('\0').to_string());
                Ok(None)
            }
            Kind::Skip => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])], claim: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_cksum();
        b.append_data(&mut dir, "pool/", &[][..]).unwrap();
        for (name, data) in files {
            if claim {
                let sha = crate::auth::sha256_hex(data);
                b.append_pax_extensions([("WHARF.sha256", sha.as_bytes())]).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Long names go as GNU long-name entries (set by append_data).
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn split(bytes: &[u8], piece: usize, limit: u64) -> Result<Vec<File>, String> {
        let mut s = Splitter::new(limit);
        let mut out = Vec::new();
        for c in bytes.chunks(piece.max(1)) {
            out.extend(s.push(c)?);
        }
        s.finish()?;
        Ok(out)
    }

    #[test]
    fn files_come_out_whole_however_the_stream_is_cut() {
        let long = format!("{}/hello_1.0_amd64.deb", "d".repeat(120));
        let big = vec![7u8; 1500];
        let files: Vec<(&str, &[u8])> = vec![("a.deb", b"first"), (long.as_str(), &big), ("empty.apk", b""), ("c.tgz", &[1u8; 512])];
        for claim in [false, true] {
            let bytes = tar_of(&files, claim);
            for piece in [1, 7, 511, 512, 513, 4096, bytes.len()] {
                let got = split(&bytes, piece, 1 << 20).unwrap();
                assert_eq!(got.iter().map(|f| (f.name.as_str(), f.data.as_slice())).collect::<Vec<_>>(), files, "piece {piece}");
                assert!(got.iter().all(|f| f.claimed.is_some() == claim));
                if claim {
                    assert_eq!(got[1].claimed.as_deref(), Some(crate::auth::sha256_hex(&big).as_str()));
                }
            }
        }
    }

    #[test]
    fn what_is_not_a_batch_is_refused_with_a_reason() {
        let bytes = tar_of(&[("a.deb", b"first"), ("b.deb", &[0u8; 2000])], false);
        assert!(split(&bytes, 100, 1000).unwrap_err().contains("b.deb is 2000 bytes"));
        assert!(split(&bytes[..bytes.len() - 1500], 100, 1 << 20).unwrap_err().contains("ends inside b.deb"));
        let mut junk = vec![b'x'; 512];
        junk[0] = b'a';
        assert!(split(&junk, 512, 100).unwrap_err().contains("checksum"));
        let mut link = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        link.append_link(&mut h, "evil.deb", "/etc/passwd").unwrap();
        assert!(split(&link.into_inner().unwrap(), 512, 100).unwrap_err().contains("evil.deb is a link"));
        assert!(split(&[], 1, 100).unwrap().is_empty(), "an empty body is an empty batch");
    }
}
