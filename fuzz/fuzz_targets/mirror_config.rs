//! The declarative mirror's images.yaml / charts.yaml: any text is either a
//! configuration or a list of located problems, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::sync::config::{self, Part};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for part in [Part::Images, Part::Charts, Part::Both] {
        match config::parse("f.yaml", s, part) {
            Ok(c) => {
                for i in &c.images {
                    let _ = i.versions.pick(&["1.0.0".into(), "latest".into(), "v2".into()]);
                }
            }
            Err(problems) => assert!(!problems.is_empty() && problems.iter().all(|p| p.line >= 1 && p.column >= 1)),
        }
    }
});
