//! .PKGINFO text and apk's name/version grammar.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::formats::apk::package;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(info) = package::parse_pkginfo(text) {
        let _ = package::index_record(&info, "Q1", 1);
    }
    let _ = package::valid_version(text);
    let _ = package::valid_name(text);
});
