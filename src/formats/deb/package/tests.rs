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

/// An ar member: header and body (padded to an even length).
fn ar_member(name: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", name, 0, 0, 0, 100644, body.len()).into_bytes();
    out.extend_from_slice(body);
    if body.len() % 2 == 1 {
        out.push(b'\n');
    }
    out
}

/// A .deb whose data.tar (uncompressed) holds one file under `name`, exactly as written.
fn deb_with_data_name(good: &[u8], name: &[u8]) -> Vec<u8> {
    let m = locate_control(&good[..HEAD_BYTES], good.len() as u64).unwrap();
    let mut deb = good[..data_header_offset(&m) as usize].to_vec();
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(b"root");
    tar.resize(512 * 2 + 1024, 0);
    deb.extend(ar_member("data.tar", &tar));
    deb
}

#[test]
fn broken_packages_are_refused_whole() {
    let dir = tmp("whole");
    let e = |bytes: &[u8]| inspect(bytes).unwrap_err().0;
    for z in ["gzip", "xz", "zstd", "none"] {
        let good = build_deb(&dir, CONTROL, z);
        inspect(&good).unwrap();
        // dpkg-deb -c fails on these; so must Wharf.
        for cut in [2, 60, good.len() / 3] {
            let m = locate_control(&good[..HEAD_BYTES], good.len() as u64).unwrap();
            let short = &good[..good.len() - cut];
            if (short.len() as u64) < m.offset + m.size {
                continue;
            }
            assert!(e(short).contains("truncated"), "{z} cut by {cut}: {}", e(short));
        }
        // A data member that is complete in length but corrupt inside.
        let m = locate_control(&good[..HEAD_BYTES], good.len() as u64).unwrap();
        let at = data_header_offset(&m) as usize + 60;
        let mut corrupt = good.clone();
        let mid = at + (good.len() - at) / 2;
        for b in &mut corrupt[mid..mid + 8] {
            *b ^= 0xa5;
        }
        if z != "none" {
            assert!(inspect(&corrupt).is_err(), "{z}: corrupt data member accepted");
        }
    }
    assert_eq!(e(b""), "the package is empty (0 bytes)");
    let good = build_deb(&dir, CONTROL, "gzip");
    let no_data = &good[..data_header_offset(&locate_control(&good[..HEAD_BYTES], good.len() as u64).unwrap()) as usize];
    assert!(e(no_data).contains("no data.tar member"), "{}", e(no_data));
    inspect(&deb_with_data_name(&good, b"./usr/share/doc/t/README")).unwrap();
    for evil in [&b"../../etc/passwd"[..], b"./usr/../../etc/shadow", b"/etc/passwd"] {
        assert!(e(&deb_with_data_name(&good, evil)).contains("leaves the package root"), "{:?}", String::from_utf8_lossy(evil));
    }
    // A control file over 1 MiB is refused, not cut.
    let long = format!("{CONTROL} {}\n", "x".repeat(1 << 20));
    let big = build_deb(&dir, &long, "xz");
    assert!(e(&big).contains("control file is larger"), "{}", e(&big));
}

#[test]
fn the_inspection_reads_three_small_ranges_and_streams_the_data_member_in_any_chunks() {
    use crate::formats::inspect::{in_memory, Inspector, Need};
    let dir = tmp("inspect");
    let deb = build_deb(&dir, CONTROL, "xz");
    let n = deb.len() as u64;
    // Step by step, as the worker does: head, control member, data header, data stream.
    let mut i = Inspection::new(n);
    let Ok(Need::Bytes { offset: 0, len }) = i.step(None) else { panic!("the head first") };
    assert_eq!(len, n.min(HEAD_BYTES as u64));
    let Ok(Need::Bytes { offset, len }) = i.step(Some(deb[..len as usize].to_vec())) else { panic!("the control member next") };
    let m = locate_control(&deb, n).unwrap();
    assert_eq!((offset, len), (m.offset, m.size));
    let Ok(Need::Bytes { offset, len }) = i.step(Some(deb[offset as usize..(offset + len) as usize].to_vec())) else { panic!("the data header next") };
    assert_eq!((offset, len), (data_header_offset(&m), 60));
    let Ok(Need::Stream { offset, len }) = i.step(Some(deb[offset as usize..(offset + len) as usize].to_vec())) else { panic!("the data stream last") };
    assert_eq!(offset + len, n, "the data member runs to the end");
    assert!(i.push(&deb[offset as usize..]).is_ok());
    let Ok(Need::Done(info)) = i.step(None) else { panic!("then the verdict") };
    assert_eq!(info, inspect(&deb).unwrap());
    for chunk in [1, 3, 511, 4096] {
        assert_eq!(in_memory(Inspection::new(n), &deb, chunk).unwrap(), info, "chunks of {chunk}");
    }
    // Out of order or over: an error, never a panic.
    assert!(Inspection::new(n).push(b"x").is_err());
    assert!(i.step(None).is_err());
}

/// A package added by digest is rebuilt from its stored record, not inspected
/// again: the record gives back what inspection made.
#[test]
fn the_stored_record_gives_back_the_inspection() {
    use crate::formats::Ingest;
    let deb = build_deb(&tmp("record"), CONTROL, "gzip");
    let info = inspect(&deb).unwrap();
    let columns = crate::formats::Deb::RECORDS.1;
    let row: serde_json::Map<String, serde_json::Value> =
        columns.iter().map(|c| c.to_string()).zip(crate::formats::Deb::record(&info, "ab")).collect();
    assert_eq!(crate::formats::Deb::from_record(&row), Some(info));
    let mut broken = row.clone();
    broken.insert("control".into(), serde_json::json!("not a control file"));
    assert_eq!(crate::formats::Deb::from_record(&broken), None, "what does not read back is inspected again");
}
