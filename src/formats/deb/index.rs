//! Debian index files: `Packages` (+ .gz, .xz) and `Release`, deterministic:
//! the same packages and metadata always give the same bytes.

use sha2::{Digest, Sha256};

/// One package as it appears in a `Packages` file.
#[derive(Debug, Clone)]
pub struct Stanza<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub architecture: &'a str,
    /// The package's control file, rendered (ends with a newline).
    pub control: &'a str,
    /// Pool path, relative to the repository root.
    pub filename: &'a str,
    pub size: u64,
    pub sha256: &'a str,
}

/// The sort order of a `Packages` file: name, version, architecture, file.
pub fn sort(stanzas: &mut [Stanza]) {
    stanzas.sort_by(|a, b| (a.package, a.version, a.architecture, a.filename).cmp(&(b.package, b.version, b.architecture, b.filename)));
}

/// One stanza as a `Packages` file lists it: the control paragraph plus
/// where to get the package (Filename, Size, SHA256), and the blank line
/// that ends it.
pub fn stanza_text(s: &Stanza) -> String {
    let control = s.control.trim_end_matches('\n');
    format!("{control}\nFilename: {}\nSize: {}\nSHA256: {}\n\n", s.filename, s.size, s.sha256)
}

/// A whole `Packages` file: the stanzas sorted, each ended by a blank line.
pub fn packages(stanzas: &mut [Stanza]) -> String {
    sort(stanzas);
    stanzas.iter().map(stanza_text).collect()
}

/// An index file listed in `Release`, path relative to `dists/<dist>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl IndexFile {
    pub fn of(path: String, data: &[u8]) -> IndexFile {
        IndexFile {
            path,
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseMeta {
    pub origin: String,
    pub label: String,
    pub suite: String,
    pub codename: String,
    pub description: Option<String>,
    pub date_secs: u64,
    pub valid_until_secs: Option<u64>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
}

/// RFC 2822 date in UTC as apt-ftparchive writes it.
pub fn release_date(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).replace("GMT", "UTC")
}

/// The `Release` file of a dist. It lists SHA256 only (as Debian's archive
/// lists SHA256 besides MD5Sum): apt fetches `by-hash/<strongest listed>/`,
/// and SHA256 is what Wharf serves by hash.
pub fn release(meta: &ReleaseMeta, files: &[IndexFile]) -> String {
    let mut files: Vec<&IndexFile> = files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = String::new();
    out.push_str(&format!("Origin: {}\nLabel: {}\nSuite: {}\nCodename: {}\n", meta.origin, meta.label, meta.suite, meta.codename));
    if let Some(d) = &meta.description {
        out.push_str(&format!("Description: {d}\n"));
    }
    out.push_str(&format!("Date: {}\n", release_date(meta.date_secs)));
    if let Some(v) = meta.valid_until_secs {
        out.push_str(&format!("Valid-Until: {}\n", release_date(v)));
    }
    out.push_str(&format!("Architectures: {}\nComponents: {}\nAcquire-By-Hash: yes\n", meta.architectures.join(" "), meta.components.join(" ")));
    let width = files.iter().map(|f| f.size.to_string().len()).max().unwrap_or(1);
    out.push_str("SHA256:\n");
    for f in &files {
        out.push_str(&format!(" {} {:>width$} {}\n", f.sha256, f.size, f.path));
    }
    out
}

/// The Packages files of one component and architecture served in `forms`,
/// relative to `dists/<dist>/`, in the order plain, gz, xz.
pub fn served_paths(component: &str, arch: &str, forms: crate::formats::pieces::Forms) -> Vec<String> {
    let [plain, gz, xz] = packages_paths(component, arch);
    [(forms.plain, plain), (forms.gz, gz), (forms.xz, xz)].into_iter().filter(|(on, _)| *on).map(|(_, p)| p).collect()
}

/// The three Packages files of one component and architecture, relative to `dists/<dist>/`.
pub fn packages_paths(component: &str, arch: &str) -> [String; 3] {
    let base = format!("{component}/binary-{arch}/Packages");
    [base.clone(), format!("{base}.gz"), format!("{base}.xz")]
}

/// Whether a path (relative to `dists/<dist>/`) is one of the Packages files
/// of some component and architecture, as [`packages_paths`] names them.
pub fn is_packages_path(path: &str) -> bool {
    let mut parts = path.rsplitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(file), Some(dir), Some(component)) => {
            !component.is_empty()
                && !component.split('/').any(|p| p == "by-hash")
                && dir.len() > "binary-".len()
                && dir.starts_with("binary-")
                && matches!(file, "Packages" | "Packages.gz" | "Packages.xz")
        }
        _ => false,
    }
}

/// The component, architecture and file name of a `Packages` index path
/// (relative to `dists/<dist>/`).
pub fn packages_path_parts(path: &str) -> Option<(&str, &str, &str)> {
    if !is_packages_path(path) {
        return None;
    }
    let mut parts = path.rsplitn(3, '/');
    let (file, dir, component) = (parts.next()?, parts.next()?, parts.next()?);
    Some((component, &dir["binary-".len()..], file))
}

/// Where apt fetches an index by its hash (`Acquire-By-Hash: yes`).
pub fn by_hash_path(index_path: &str, sha256: &str) -> String {
    let dir = index_path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{dir}/by-hash/SHA256/{sha256}")
}

/// Keeps the by-hash files of the newest `keep + 1` generations (the current
/// one and `keep` before it): returns the new ledger, newest first.
pub fn roll_by_hash(previous: &[Vec<String>], current: Vec<String>, keep: usize) -> Vec<Vec<String>> {
    let mut out = vec![current];
    out.extend(previous.iter().take(keep).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza<'a>(p: &'a str, v: &'a str, a: &'a str, control: &'a str) -> Stanza<'a> {
        Stanza { package: p, version: v, architecture: a, control, filename: "pool/main/x/x.deb", size: 10, sha256: "ab" }
    }

    #[test]
    fn packages_paths_are_recognised() {
        for p in packages_paths("main", "amd64").into_iter().chain(packages_paths("updates/main", "arm64")) {
            assert!(is_packages_path(&p), "{p}");
        }
        for p in ["main/binary-amd64/by-hash/SHA256/ab", "Release", "main/binary-/Packages", "main/binary-amd64/Packages.bz2", "main/source/Sources"] {
            assert!(!is_packages_path(p), "{p}");
        }
    }

    #[test]
    fn packages_is_sorted_and_deterministic() {
        let cb = "Package: b\nVersion: 1\nArchitecture: all\nDescription: x\n multi\n";
        let ca = "Package: a\nVersion: 2\nArchitecture: amd64\n";
        let mut one = vec![stanza("b", "1", "all", cb), stanza("a", "2", "amd64", ca)];
        let mut two = vec![stanza("a", "2", "amd64", ca), stanza("b", "1", "all", cb)];
        let text = packages(&mut one);
        assert_eq!(text, packages(&mut two));
        assert_eq!(
            text,
            "Package: a\nVersion: 2\nArchitecture: amd64\nFilename: pool/main/x/x.deb\nSize: 10\nSHA256: ab\n\n\
             Package: b\nVersion: 1\nArchitecture: all\nDescription: x\n multi\nFilename: pool/main/x/x.deb\nSize: 10\nSHA256: ab\n\n"
        );
        assert_eq!(packages(&mut []), "");
    }

    #[test]
    fn release_file() {
        let meta = ReleaseMeta {
            origin: "Wharf".into(),
            label: "Wharf".into(),
            suite: "stable".into(),
            codename: "bookworm".into(),
            description: None,
            date_secs: 1_700_000_000,
            valid_until_secs: Some(1_700_604_800),
            architectures: vec!["amd64".into(), "arm64".into()],
            components: vec!["main".into()],
        };
        let files = vec![IndexFile::of("main/binary-amd64/Packages".into(), b"x"), IndexFile::of("main/binary-amd64/Packages.gz".into(), b"yy")];
        let r = release(&meta, &files);
        assert!(r.starts_with("Origin: Wharf\nLabel: Wharf\nSuite: stable\nCodename: bookworm\nDate: Tue, 14 Nov 2023 22:13:20 UTC\nValid-Until: Tue, 21 Nov 2023 22:13:20 UTC\n"));
        assert!(r.contains("Architectures: amd64 arm64\nComponents: main\nAcquire-By-Hash: yes\nSHA256:\n"));
        assert!(r.contains(" 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881 1 main/binary-amd64/Packages\n"));
        // Only what is served by hash is listed: apt asks by-hash for the strongest hash listed.
        assert!(!r.contains("SHA512") && !r.contains("MD5Sum"));
    }

    #[test]
    fn by_hash() {
        assert_eq!(by_hash_path("main/binary-amd64/Packages.xz", "ab"), "main/binary-amd64/by-hash/SHA256/ab");
        let ledger = roll_by_hash(&[vec!["b".into()], vec!["c".into()], vec!["d".into()], vec!["e".into()]], vec!["a".into()], 3);
        assert_eq!(ledger, vec![vec!["a".to_string()], vec!["b".into()], vec!["c".into()], vec!["d".into()]]);
    }
}
