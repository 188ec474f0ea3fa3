//! Manifest and index inspection, with every content type a client may send.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::oci;

fuzz_target!(|data: &[u8]| {
    let _ = oci::inspect_manifest(data, None);
    for ct in oci::MANIFEST_TYPES {
        if let Ok(info) = oci::inspect_manifest(data, Some(ct)) {
            let _ = info.descriptor("0", data.len());
        }
    }
});
