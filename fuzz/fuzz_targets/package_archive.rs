//! A package's file archive streamed through the check in pieces, with every compression.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::formats::{helm::chart, inspect};
use wharf::tarcheck::{Check, Compression};

fuzz_target!(|data: &[u8]| {
    // A chart archive's inspection: it may refuse, never ask for bytes outside the upload.
    if let Err(e) = inspect::in_memory(chart::Inspection::new(data.len() as u64), data, 4093) {
        assert!(!e.starts_with(inspect::DEFECT), "{e}");
    }
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
