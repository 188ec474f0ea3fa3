//! OpenPGP for apt: clearsigned `InRelease`, detached `Release.gpg`, and
//! checking signatures that users make with their own keys.
//!
//! Uses rpgp (pure Rust; builds for wasm32 with its `wasm` feature). Keys are
//! the ones users make with gpg: RSA 4096 or Ed25519, with or without a
//! signing subkey (a signing-capable subkey is preferred, as gpg does).

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password, SigningKey};

#[derive(Debug)]
pub struct SignError(pub String);

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn e(context: &str) -> impl Fn(pgp::errors::Error) -> SignError + '_ {
    move |err| SignError(format!("{context}: {err}"))
}

pub struct Signer {
    key: SignedSecretKey,
    password: Password,
}

impl Signer {
    /// Reads an armored secret key (`gpg --armor --export-secret-keys`).
    pub fn from_armored(armored: &str, passphrase: Option<&str>) -> Result<Signer, SignError> {
        let (key, _) = SignedSecretKey::from_string(armored).map_err(e("the signing key is not an armored OpenPGP secret key"))?;
        let password = passphrase.map_or_else(Password::empty, Password::from);
        let signer = Signer { key, password };
        // Fail now, not at publish time, if the key cannot sign (wrong passphrase, no secret).
        signer.clearsign("probe\n")?;
        Ok(signer)
    }

    fn signing_key(&self) -> Box<&dyn SigningKey> {
        for sub in &self.key.secret_subkeys {
            if sub.signatures.iter().any(|s| s.key_flags().sign()) {
                return Box::new(&sub.key as &dyn SigningKey);
            }
        }
        Box::new(&self.key.primary_key as &dyn SigningKey)
    }

    /// `InRelease`: the text, clearsigned.
    pub fn clearsign(&self, text: &str) -> Result<String, SignError> {
        let msg = CleartextSignedMessage::sign(rand::rngs::OsRng, text, &self.signing_key(), &self.password)
            .map_err(e("clearsigning failed"))?;
        msg.to_armored_string(ArmorOptions::default()).map_err(e("armoring failed"))
    }

    /// `Release.gpg`: an armored detached signature over the bytes.
    pub fn detach_sign(&self, data: &[u8]) -> Result<String, SignError> {
        let sig = DetachedSignature::sign_binary_data(rand::rngs::OsRng, &self.signing_key(), &self.password, HashAlgorithm::Sha512, data)
            .map_err(e("signing failed"))?;
        sig.to_armored_string(ArmorOptions::default()).map_err(e("armoring failed"))
    }

    pub fn public_key(&self) -> SignedPublicKey {
        self.key.to_public_key()
    }

    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.key.fingerprint().as_bytes())
    }
}

/// A public key as users install it: binary (for `signed-by` .gpg keyrings) and armored (.asc).
pub fn export_public(key: &SignedPublicKey) -> Result<(Vec<u8>, String), SignError> {
    use pgp::ser::Serialize;
    let binary = key.to_bytes().map_err(e("serialising the public key failed"))?;
    let armored = key.to_armored_string(ArmorOptions::default()).map_err(e("armoring the public key failed"))?;
    Ok((binary, armored))
}

/// Reads a public key, armored or binary.
pub fn read_public(data: &[u8]) -> Result<SignedPublicKey, SignError> {
    if let Ok(text) = std::str::from_utf8(data) {
        if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            return SignedPublicKey::from_string(text).map(|(k, _)| k).map_err(e("not an armored OpenPGP public key"));
        }
    }
    SignedPublicKey::from_bytes(data).map_err(e("not an OpenPGP public key"))
}

/// Does any key of the certificate (primary or subkey) pass `check`?
macro_rules! verifies {
    ($key:expr, |$k:ident| $check:expr) => {{
        let key = $key;
        let primary = {
            let $k = &key.primary_key;
            $check
        };
        primary
            || key.public_subkeys.iter().any(|s| {
                let $k = &s.key;
                $check
            })
    }};
}

/// Checks that `inrelease` is a clearsigned message, signed by `key`, whose
/// signed text is exactly `expected` (the Release Wharf generated).
pub fn verify_inrelease(key: &SignedPublicKey, inrelease: &str, expected: &str) -> Result<(), SignError> {
    let (msg, _) = CleartextSignedMessage::from_string(inrelease).map_err(e("InRelease is not a clearsigned OpenPGP message"))?;
    // The cleartext framework signs lines with CRLF endings and without the
    // final line break; compare in that form, byte for byte otherwise.
    let canonical = |t: &str| t.replace("\r\n", "\n").trim_end_matches('\n').to_string();
    if canonical(&msg.signed_text()) != canonical(expected) {
        return Err(SignError("InRelease does not sign exactly the Release that Wharf generated".into()));
    }
    if msg.signatures().is_empty() || !verifies!(key, |k| msg.verify(k).is_ok()) {
        return Err(SignError("the InRelease signature does not verify against the site's public key".into()));
    }
    Ok(())
}

/// Checks a detached signature (armored or binary) over `data`.
pub fn verify_detached(key: &SignedPublicKey, signature: &[u8], data: &[u8]) -> Result<(), SignError> {
    let sig = match std::str::from_utf8(signature) {
        Ok(t) if t.contains("-----BEGIN PGP SIGNATURE-----") => {
            DetachedSignature::from_string(t).map(|(s, _)| s).map_err(e("Release.gpg is not an OpenPGP signature"))?
        }
        _ => DetachedSignature::from_bytes(signature).map_err(e("Release.gpg is not an OpenPGP signature"))?,
    };
    if !verifies!(key, |k| sig.verify(k, data).is_ok()) {
        return Err(SignError("the Release.gpg signature does not verify against the site's public key".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
