use super::*;
use std::process::Command;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wharf-apkidx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sh(dir: &std::path::Path, cmd: &str) -> std::process::Output {
    Command::new("bash").arg("-c").arg(cmd).current_dir(dir).output().unwrap()
}

#[test]
fn tar_headers_read_back_with_gnu_tar() {
    let dir = tmp("tar");
    let mut t = tar_file("DESCRIPTION", b"v3.20 main", 1700000000);
    t.extend(tar_file("APKINDEX", b"C:Q1x\nP:a\n\n", 1700000000));
    t.extend([0u8; 1024]);
    std::fs::write(dir.join("t.tar"), &t).unwrap();
    let out = sh(&dir, "tar -tvf t.tar && tar -xOf t.tar APKINDEX");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("root/root") && text.contains("DESCRIPTION") && text.ends_with("C:Q1x\nP:a\n\n"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn signatures_verify_with_openssl_and_openssl_signatures_verify_here() {
    let dir = tmp("sig");
    assert!(sh(&dir, "openssl genrsa -out key.pem 2048 2>/dev/null && openssl rsa -in key.pem -pubout -out pub.pem 2>/dev/null").status.success());
    let signer = Signer::from_pem(&std::fs::read_to_string(dir.join("key.pem")).unwrap()).unwrap();
    assert_eq!(read_public(&std::fs::read_to_string(dir.join("pub.pem")).unwrap()).unwrap(), *signer.public_key());
    let stream = index_stream("desc", "C:Q1x\nP:a\nV:1\n\n", 0);
    assert_eq!(stream, index_stream("desc", "C:Q1x\nP:a\nV:1\n\n", 0), "deterministic");
    std::fs::write(dir.join("idx.gz"), &stream).unwrap();
    std::fs::write(dir.join("ours.sig"), signer.sign(&stream)).unwrap();
    let ok = sh(&dir, "openssl dgst -sha256 -verify pub.pem -signature ours.sig idx.gz");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(sh(&dir, "openssl dgst -sha256 -sign key.pem -out theirs.sig idx.gz").status.success());
    let theirs = std::fs::read(dir.join("theirs.sig")).unwrap();
    verify(signer.public_key(), &stream, &theirs).unwrap();
    assert!(verify(signer.public_key(), b"other bytes", &theirs).is_err());
    // A PKCS#1 PEM key (older `openssl genrsa`) is read too.
    assert!(sh(&dir, "openssl rsa -in key.pem -traditional -out key1.pem 2>/dev/null").status.success());
    let pkcs1 = std::fs::read_to_string(dir.join("key1.pem")).unwrap();
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
    assert_eq!(Signer::from_pem(&pkcs1).unwrap().sign(&stream), signer.sign(&stream));
    assert!(Signer::from_pem("nope").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn key_names_and_index_order() {
    assert!(valid_key_name("alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"));
    assert!(!valid_key_name("x.pem") && !valid_key_name("../a.rsa.pub") && !valid_key_name(".rsa.pub"));
    let mut recs = vec![("b".into(), "1".into(), "P:b\n".into()), ("a".into(), "2".into(), "P:a\n".into())];
    assert_eq!(apkindex(&mut recs), "P:a\n\nP:b\n\n");
}
