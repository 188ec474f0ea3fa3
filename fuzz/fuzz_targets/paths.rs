//! Request paths, release paths, hostnames, admin and registry routes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::{api, hostname, oci, path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = path::from_request(s);
    let _ = path::validate(s);
    let _ = path::percent_decode(s);
    let _ = path::safe_member_name(data);
    let _ = hostname::normalize(s);
    let _ = hostname::parse_list(s);
    for m in ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"] {
        let _ = api::route(m, s);
    }
    let _ = api::release_path(s);
    let _ = oci::route(s);
    let _ = oci::Reference::parse(s);
    let _ = oci::digest_hex(s);
    let _ = oci::valid_name(s);
});
