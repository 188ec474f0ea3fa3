//! What an upstream registry sends: WWW-Authenticate challenges and token bodies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::oci::mirror;

fuzz_target!(|data: &[u8]| {
    let _ = mirror::parse_token(data);
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = mirror::parse_challenge(s);
    let _ = mirror::parse_cursor(s);
});
