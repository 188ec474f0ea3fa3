//! A control file (and the name/version/architecture checks on it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::formats::deb::{control, package};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = control::Paragraph::parse(text) {
        let _ = p.render();
        let _ = package::check(p);
    }
    let _ = control::valid_version(text);
    let _ = control::valid_package_name(text);
    let _ = control::valid_architecture(text);
});
