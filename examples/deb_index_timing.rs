//! Times the pure parts of Debian index generation for 10,000 packages.
use std::time::Instant;
use wharf::deb::index;

fn main() {
    let controls: Vec<String> = (0..10_000)
        .map(|i| format!("Package: bench-pkg{i:05}\nVersion: 1.{}-1\nArchitecture: amd64\nMaintainer: Bench <bench@example.com>\nInstalled-Size: 12\nDepends: libc6 (>= 2.36)\nSection: misc\nPriority: optional\nDescription: benchmark package {i}\n Generated for Wharf's benchmark.\n .\n Package number {i} of the set.\n", i % 7))
        .collect();
    let names: Vec<String> = (0..10_000).map(|i| format!("bench-pkg{i:05}")).collect();
    let files: Vec<String> = (0..10_000).map(|i| format!("pool/main/b/bench-pkg{i:05}/bench-pkg{i:05}_1.0-1_amd64.deb")).collect();
    let t = Instant::now();
    let mut st: Vec<index::Stanza> = (0..10_000)
        .map(|i| index::Stanza { package: &names[i], version: "1.0", architecture: "amd64", control: &controls[i], filename: &files[i], size: 1234, sha256: "ab" })
        .collect();
    let text = index::packages(&mut st);
    println!("Packages: {} bytes in {:?}", text.len(), t.elapsed());
    for level in [6u32, 9] {
        let t = Instant::now();
        let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(level));
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        let out = e.finish().unwrap();
        println!("gzip -{level}: {} bytes in {:?}", out.len(), t.elapsed());
    }
    for preset in [1u32, 3, 6] {
        let t = Instant::now();
        let mut w = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(preset)).unwrap();
        std::io::Write::write_all(&mut w, text.as_bytes()).unwrap();
        let out = w.finish().unwrap();
        println!("xz -{preset}: {} bytes in {:?}", out.len(), t.elapsed());
    }
}
