//! Times the pure parts of Debian index generation for 10,000 packages.
use std::time::Instant;
use wharf::formats::deb::index;

fn main() {
    let controls: Vec<String> = (0..10_000)
        .map(|i| format!("Package: bench-pkg{i:05}\nVersion: 1.{}-1\nArchitecture: amd64\nMaintainer: Bench <bench@example.com>\nInstalled-Size: 12\nDepends: libc6 (>= 2.36)\nSection: misc\nPriority: optional\nDescription: benchmark package {i}\n Generated for Wharf's benchmark.\n .\n Package number {i} of the set.\n", i % 7))
        .collect();
    let names: Vec<String> = (0..10_000).map(|i| format!("bench-pkg{i:05}")).collect();
    let files: Vec<String> = (0..10_000).map(|i| format!("pool/main/b/bench-pkg{i:05}/bench-pkg{i:05}_1.0-1_amd64.deb")).collect();
    let shas: Vec<String> = (0..10_000u32).map(|i| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(i.to_le_bytes()))).collect();
    let t = Instant::now();
    let mut st: Vec<index::Stanza> = (0..10_000)
        .map(|i| index::Stanza { package: &names[i], version: "1.0", architecture: "amd64", control: &controls[i], filename: &files[i], size: 1234, sha256: &shas[i] })
        .collect();
    let text = index::packages(&mut st);
    if let Ok(p) = std::env::var("DUMP") { std::fs::write(p, &text).unwrap(); }
    println!("Packages: {} bytes in {:?}", text.len(), t.elapsed());
    for level in [1u32, 6, 9] {
        let t = Instant::now();
        let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(level));
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        let out = e.finish().unwrap();
        println!("gzip -{level}: {} bytes in {:?}", out.len(), t.elapsed());
    }
    for (name, f) in [("sha256", 0), ("sha512", 1)] {
        let t = Instant::now();
        let n = if f == 0 { <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()).len() } else { <sha2::Sha512 as sha2::Digest>::digest(text.as_bytes()).len() };
        println!("{name}: {n} in {:?}", t.elapsed());
    }
    for preset in [0u32, 1, 3, 6] {
        let t = Instant::now();
        let mut o = lzma_rust2::XzOptions::with_preset(preset);
        if std::env::var("CRC32").is_ok() { o.set_check_sum_type(lzma_rust2::CheckType::Crc32); }
        if let Ok(n) = std::env::var("NICE") { o.lzma_options.nice_len = n.parse().unwrap(); }
        let mut w = lzma_rust2::XzWriter::new(Vec::new(), o).unwrap();
        std::io::Write::write_all(&mut w, text.as_bytes()).unwrap();
        let out = w.finish().unwrap();
        println!("xz -{preset}: {} bytes in {:?}", out.len(), t.elapsed());
    }
}
