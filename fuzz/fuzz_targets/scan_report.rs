//! Scanner reports attached to mirrored images (and the upstream indexes a
//! run plans from): any bytes are a report, not one, or a reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::sync::{config::Platform, plan, scan};

fuzz_target!(|data: &[u8]| {
    if let Some(Ok(s)) = scan::read(data) {
        assert!(s.severities.values().sum::<u64>() <= s.findings.max(s.severities.values().sum()));
    }
    let declared = [Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }];
    if let Ok(p) = plan::plan_index(data, "sha256:0000000000000000000000000000000000000000000000000000000000000000", &declared) {
        if let Some(rewritten) = p.rewritten {
            assert!(plan::plan_index(&rewritten, "sha256:1", &declared).is_ok(), "a rewritten index plans again");
        }
    }
});
