//! A package's file archive streamed through the check in pieces, with every compression.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::tarcheck::{Check, Compression};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    for c in [Compression::None, Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let mut check = Check::new(c, 1 << 24);
        let mut ok = true;
        for piece in rest.chunks(usize::from(split).max(1) * 37) {
            if check.push(piece).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let _ = check.finish();
        }
    }
});
