//! Keys made by real gpg; signatures checked by real gpgv, and the reverse.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(name: &str) -> Gpg {
        // Tests run in parallel: every keyring gets its own folder.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let home = std::env::temp_dir().join(format!("wharf-gpg-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Gpg { home }
    }
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("gpg is installed");
        child.stdin.take().unwrap().write_all(stdin.unwrap_or(b"")).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
    fn fingerprint(&self) -> String {
        let out = String::from_utf8(self.run(&["--with-colons", "--list-secret-keys"], None)).unwrap();
        out.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string()
    }
    fn secret_armored(&self) -> String {
        String::from_utf8(self.run(&["--armor", "--export-secret-keys"], None)).unwrap()
    }
    fn public_binary(&self) -> Vec<u8> {
        self.run(&["--export"], None)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", &self.home).args(["--kill", "gpg-agent"]).output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn gpgv(keyring: &Path, args: &[&Path]) -> bool {
    Command::new("gpgv").arg("--keyring").arg(keyring).args(args).output().unwrap().status.success()
}

fn ed25519_key() -> Gpg {
    let g = Gpg::new("ed25519");
    g.run(&["--quick-gen-key", "Wharf Test Ed25519 <ed@example.com>", "ed25519", "sign", "never"], None);
    g
}

const RELEASE: &str = "Origin: Wharf\nSuite: stable\nSHA256:\n 0000 1 main/binary-amd64/Packages\n-dash line\nFrom the start\n";

#[test]
fn our_signatures_verify_with_gpgv_rsa4096_signing_subkey_and_ed25519() {
    let rsa = Gpg::new("rsa");
    rsa.run(&["--quick-gen-key", "Wharf Test RSA <rsa@example.com>", "rsa4096", "cert", "never"], None);
    let fpr = rsa.fingerprint();
    rsa.run(&["--quick-add-key", &fpr, "rsa4096", "sign", "never"], None);
    for g in [rsa, ed25519_key()] {
        let signer = Signer::from_armored(&g.secret_armored(), None).unwrap();
        assert_eq!(signer.fingerprint(), g.fingerprint());
        let (binary, armored) = export_public(&signer.public_key()).unwrap();
        assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        // The key we export is what users install as `signed-by`: gpgv must accept it.
        let keyring = g.home.join("exported.gpg");
        std::fs::write(&keyring, &binary).unwrap();
        let inrelease = g.home.join("InRelease");
        std::fs::write(&inrelease, signer.clearsign(RELEASE).unwrap()).unwrap();
        assert!(gpgv(&keyring, &[&inrelease]), "gpgv accepts InRelease");
        let release = g.home.join("Release");
        let sig = g.home.join("Release.gpg");
        std::fs::write(&release, RELEASE).unwrap();
        std::fs::write(&sig, signer.detach_sign(RELEASE.as_bytes()).unwrap()).unwrap();
        assert!(gpgv(&keyring, &[&sig, &release]), "gpgv accepts Release.gpg");
        // and gpg's own export of the public key works as well
        let gpg_keyring = g.home.join("gpg-export.gpg");
        std::fs::write(&gpg_keyring, g.public_binary()).unwrap();
        assert!(gpgv(&gpg_keyring, &[&inrelease]));
        // Tampering is caught by gpgv.
        std::fs::write(&release, RELEASE.replace("stable", "unstable")).unwrap();
        assert!(!gpgv(&keyring, &[&sig, &release]));
    }
}

#[test]
fn verifies_what_users_sign_with_gpg() {
    let g = ed25519_key();
    let other = Gpg::new("other");
    other.run(&["--quick-gen-key", "Other <o@example.com>", "ed25519", "sign", "never"], None);
    let key = read_public(&g.public_binary()).unwrap();
    let armored_key = String::from_utf8(g.run(&["--armor", "--export"], None)).unwrap();
    assert!(read_public(armored_key.as_bytes()).is_ok());

    let inrelease = String::from_utf8(g.run(&["--clearsign", "--digest-algo", "SHA512"], Some(RELEASE.as_bytes()))).unwrap();
    verify_inrelease(&key, &inrelease, RELEASE).unwrap();
    let err = verify_inrelease(&key, &inrelease, &RELEASE.replace("stable", "testing")).unwrap_err();
    assert!(err.0.contains("exactly"), "{err}");
    let foreign = String::from_utf8(other.run(&["--clearsign"], Some(RELEASE.as_bytes()))).unwrap();
    assert!(verify_inrelease(&key, &foreign, RELEASE).is_err());
    assert!(verify_inrelease(&key, "not signed", RELEASE).is_err());

    let detached_armored = g.run(&["--armor", "--detach-sign"], Some(RELEASE.as_bytes()));
    verify_detached(&key, &detached_armored, RELEASE.as_bytes()).unwrap();
    let detached_binary = g.run(&["--detach-sign"], Some(RELEASE.as_bytes()));
    verify_detached(&key, &detached_binary, RELEASE.as_bytes()).unwrap();
    assert!(verify_detached(&key, &detached_binary, b"other bytes").is_err());
    let foreign_sig = other.run(&["--detach-sign"], Some(RELEASE.as_bytes()));
    assert!(verify_detached(&key, &foreign_sig, RELEASE.as_bytes()).is_err());
}

#[test]
fn bad_keys_are_refused_up_front() {
    assert!(Signer::from_armored("not a key", None).is_err());
    let g = ed25519_key();
    let public = String::from_utf8(g.run(&["--armor", "--export"], None)).unwrap();
    assert!(Signer::from_armored(&public, None).is_err(), "a public key cannot sign");
}
