//! A .deb as the worker reads it: the head, the control member, the data member.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::formats::deb::package;

fuzz_target!(|data: &[u8]| {
    // The worker's inspection, step by step, in odd chunks: it may refuse, but
    // never ask for bytes outside the upload.
    if let Err(e) = wharf::formats::inspect::in_memory(package::Inspection::new(data.len() as u64), data, 4093) {
        assert!(!e.starts_with(wharf::formats::inspect::DEFECT), "{e}");
    }
    // The worker's path: a head of at most HEAD_BYTES and a claimed total size.
    let head = &data[..data.len().min(package::HEAD_BYTES)];
    if let Ok(m) = package::locate_control(head, data.len() as u64) {
        let at = package::data_header_offset(&m);
        let header = data.get(at as usize..).unwrap_or(&[]);
        let _ = package::locate_data(&header[..header.len().min(60)], at, data.len() as u64);
    }
    for c in [package::Compression::None, package::Compression::Gzip, package::Compression::Xz, package::Compression::Zstd] {
        let _ = package::read_control(data, c);
        let _ = package::check_data(data, c);
    }
});
