//! `APKINDEX.tar.gz`: a gzip stream with the signature tar entry (no
//! end-of-archive blocks, as `abuild-tar --cut` leaves it), followed by a gzip
//! stream with `DESCRIPTION` and `APKINDEX` and the end-of-archive blocks.
//! apk-tools 2.14 verifies the RSA PKCS#1 v1.5 signature over the digest of
//! the second stream's compressed bytes (`.SIGN.RSA256.` → SHA-256).

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer as _, Verifier as _};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::io::Write;

const BLOCK: usize = 512;

/// One ustar header and the file's contents padded to a whole block.
pub fn tar_file(name: &str, data: &[u8], mtime: u64) -> Vec<u8> {
    assert!(name.len() < 100, "tar names here are short");
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; BLOCK], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    out
}

/// gzip with no name or timestamp in the header: same input, same bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(9));
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The APKINDEX text: the records, each followed by a blank line, sorted by
/// name, version and identity so the same packages give the same bytes.
pub fn apkindex(records: &mut [(String, String, String)]) -> String {
    records.sort();
    let mut out = String::new();
    for (_, _, record) in records.iter() {
        out.push_str(record);
        out.push('\n');
    }
    out
}

/// The unsigned index stream: gzip of a tar with DESCRIPTION and APKINDEX and
/// the two end-of-archive blocks, as `apk index` writes it.
pub fn index_stream(description: &str, apkindex: &str, mtime: u64) -> Vec<u8> {
    let mut tar = tar_file("DESCRIPTION", description.as_bytes(), mtime);
    tar.extend(tar_file("APKINDEX", apkindex.as_bytes(), mtime));
    tar.extend([0u8; 2 * BLOCK]);
    gzip(&tar)
}

/// The tar around an APKINDEX text of `text_len` bytes: before it the
/// DESCRIPTION entry and the APKINDEX header, after it the padding to a whole
/// block and the two end-of-archive blocks. Gzipped around the text, it is the
/// unsigned index stream as `apk index` writes it.
pub fn index_frame(description: &str, text_len: u64, mtime: u64) -> (Vec<u8>, Vec<u8>) {
    let mut before = tar_file("DESCRIPTION", description.as_bytes(), mtime);
    let header = tar_file("APKINDEX", &[], mtime);
    let mut header = header[..BLOCK].to_vec();
    // The header's size and checksum fields for the real length.
    header[124..136].copy_from_slice(format!("{text_len:011o}\0").as_bytes());
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    before.extend(header);
    let pad = (BLOCK - (text_len as usize % BLOCK)) % BLOCK;
    (before, vec![0u8; pad + 2 * BLOCK])
}

/// The signature stream: gzip of a tar holding `.SIGN.RSA256.<key_name>`, cut
/// before the end-of-archive blocks so apk reads on into the next stream.
pub fn signature_stream(key_name: &str, signature: &[u8], mtime: u64) -> Vec<u8> {
    gzip(&tar_file(&format!(".SIGN.RSA256.{key_name}"), signature, mtime))
}

/// A valid apk key file name: what users save under /etc/apk/keys/.
pub fn valid_key_name(n: &str) -> bool {
    n.ends_with(".rsa.pub")
        && n.len() <= 80
        && !n.starts_with('.')
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || b"@._+-".contains(&c))
}

#[derive(Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

/// The server's RSA signing key.
pub struct Signer {
    key: rsa::pkcs1v15::SigningKey<Sha256>,
    public: RsaPublicKey,
}

impl Signer {
    /// From PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what `openssl genrsa` writes
    /// today) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Signer, KeyError> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem.trim())
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem.trim()))
            .map_err(|e| KeyError(format!("not an RSA private key in PEM (PKCS#8 or PKCS#1): {e}")))?;
        let public = key.to_public_key();
        Ok(Signer { key: rsa::pkcs1v15::SigningKey::new(key), public })
    }

    /// RSA PKCS#1 v1.5 over SHA-256 of `data`, as `openssl dgst -sha256 -sign` makes it.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.key.sign(data).to_vec()
    }

    pub fn public_pem(&self) -> String {
        public_pem(&self.public)
    }

    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }
}

/// A public key as apk reads it from /etc/apk/keys (`BEGIN PUBLIC KEY`).
pub fn public_pem(key: &RsaPublicKey) -> String {
    key.to_public_key_pem(LineEnding::LF).expect("encodable")
}

pub fn read_public(pem: &str) -> Result<RsaPublicKey, KeyError> {
    RsaPublicKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError(format!("not an RSA public key in PEM (BEGIN PUBLIC KEY): {e}")))
}

/// A default key name in Alpine's style: `<site>-<8 hex of the key's SHA-256>.rsa.pub`.
pub fn default_key_name(site: &str, key: &RsaPublicKey) -> String {
    let der = key.to_public_key_der().expect("encodable");
    format!("{site}-{}.rsa.pub", &hex::encode(Sha256::digest(der.as_bytes()))[..8])
}

pub fn verify(key: &RsaPublicKey, data: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(|e| KeyError(format!("malformed signature: {e}")))?;
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
        .verify(data, &sig)
        .map_err(|_| KeyError("the signature does not verify against the site's public key (RSA PKCS#1 v1.5, SHA-256 of the index stream)".into()))
}

#[cfg(test)]
mod tests;
