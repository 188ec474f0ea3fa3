//! An .apk as the worker reads it: gzip streams, tar entries, .PKGINFO, the data stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::formats::apk::package;

fuzz_target!(|data: &[u8]| {
    // The worker's inspection: it may refuse, never ask for bytes outside the upload.
    if let Err(e) = wharf::formats::inspect::in_memory(package::Inspection::new(data.len() as u64), data, 4093) {
        assert!(!e.starts_with(wharf::formats::inspect::DEFECT), "{e}");
    }
    if let Ok(layout) = package::read_head(data, data.len() as u64) {
        if let Ok(info) = package::parse_pkginfo(&layout.pkginfo) {
            let _ = package::check_data(data, data.len() as u64, &layout, &info);
            let (at, len) = layout.control;
            let id = package::identity(&data[at..at + len]);
            let _ = package::index_record(&info, &id, data.len() as u64);
        }
    }
    // A head cut short of the whole package.
    let _ = package::read_head(&data[..data.len() / 2], data.len() as u64);
    let _ = package::tar_entries(data);
});
