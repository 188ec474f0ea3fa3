//! Admin API tokens, registry tokens and token-request scopes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::{auth, oci};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = auth::bearer(Some(s));
    let _ = auth::token_id(s);
    let _ = auth::matches_hash(s, &"ab".repeat(32));
    let _ = auth::matches_root(s, "root");
    let _ = auth::Scope::parse(s);
    let _ = oci::verify_token(b"key", s, 0);
    let _ = oci::requested_scopes(s.split('&'));
});
