//! Packages built by the real `dpkg-deb`, with every control.tar compression.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds a package with dpkg-deb and returns its bytes.
pub(crate) fn build_deb(dir: &Path, control: &str, compression: &str) -> Vec<u8> {
    let root = dir.join(format!("root-{compression}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/doc/t")).unwrap();
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    std::fs::write(root.join("usr/share/doc/t/README"), b"payload\n").unwrap();
    let out = dir.join(format!("pkg-{compression}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--nocheck", &format!("-Z{compression}"), "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .expect("dpkg-deb is installed (apt-get install dpkg-dev)");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    std::fs::read(out).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wharf-deb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const CONTROL: &str = "Package: libhello1\nSource: hello (1.2-3)\nVersion: 1:1.2-3\nArchitecture: amd64\nMaintainer: Test <t@example.com>\nInstalled-Size: 12\nDepends: libc6 (>= 2.36)\nDescription: says hello\n A longer description,\n .\n   with odd indentation kept.\n";

#[test]
fn reads_control_with_every_compression() {
    let dir = tmp("compressions");
    for z in ["gzip", "xz", "zstd", "none"] {
        let deb = build_deb(&dir, CONTROL, z);
        let info = inspect(&deb).unwrap_or_else(|e| panic!("{z}: {e}"));
        assert_eq!(info.package, "libhello1");
        assert_eq!(info.version, "1:1.2-3");
        assert_eq!(info.source, "hello");
        assert_eq!(info.control.render(), CONTROL, "{z}: fields kept exactly");
        assert_eq!(filename(&info), "libhello1_1.2-3_amd64.deb");
        assert_eq!(pool_path("main", &info), "pool/main/h/hello/libhello1_1.2-3_amd64.deb");
    }
}

#[test]
fn lib_prefix_in_pool() {
    let dir = tmp("lib");
    let deb = build_deb(&dir, "Package: libfoo2\nVersion: 2\nArchitecture: all\nMaintainer: T <t@t>\nDescription: x\n", "gzip");
    assert_eq!(pool_path("contrib", &inspect(&deb).unwrap()), "pool/contrib/libf/libfoo2/libfoo2_2_all.deb");
}

#[test]
fn malformed_packages_are_named() {
    let dir = tmp("bad");
    let good = build_deb(&dir, CONTROL, "gzip");
    let e = |bytes: &[u8]| inspect(bytes).unwrap_err().0;
    assert!(e(b"hello world, not a package").contains("no ar archive signature"));
    assert!(e(&good[..100]).contains("truncated"));
    let mut bad_member = good.clone();
    bad_member[8 + 60 + 4..8 + 60 + 4 + 14].copy_from_slice(b"data.tar.gz   ");
    assert!(e(&bad_member).contains("expected control.tar"));
    let mut corrupt = good.clone();
    let m = locate_control(&good[..HEAD_BYTES], good.len() as u64).unwrap();
    for b in &mut corrupt[m.offset as usize + 20..m.offset as usize + 60] {
        *b ^= 0x55;
    }
    assert!(inspect(&corrupt).is_err());
    let no_version = build_deb(&dir, "Package: hello\nArchitecture: all\nMaintainer: T <t@t>\nDescription: x\n", "xz");
    assert!(e(&no_version).contains("no Version"));
}
