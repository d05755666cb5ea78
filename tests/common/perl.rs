//! The Perl original's PKI, made as it makes it (reference protocol.md 6.2)
//! with the `openssl` command line: an RSA-4096 CA from `req -new -x509`,
//! leaves from `x509 -req` with no extension file, which OpenSSL 3.0 makes
//! X.509 v1 with no SAN or EKU. Tests that need it skip, saying why, when
//! `openssl` is not installed.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory holding a Perl-style CA and the leaves signed by it.
pub struct PerlPki {
    /// Where every file is.
    pub dir: PathBuf,
}

impl PerlPki {
    /// `setup-ca` in `dir`: `ca.key` (RSA-4096), `ca.crt`, `ca.serial` = `01`.
    /// `None` (and a line on stderr) without openssl.
    pub fn new(dir: &Path) -> Option<PerlPki> {
        let pki = PerlPki::without_ca(dir)?;
        pki.openssl(&["genrsa", "-out", "ca.key", "4096"]);
        pki.openssl(&[
            "req",
            "-new",
            "-x509",
            "-days",
            "3650",
            "-key",
            "ca.key",
            "-subj",
            "/CN=ctrl-exec CA",
            "-out",
            "ca.crt",
        ]);
        fs::write(pki.path("ca.serial"), "01\n").expect("write ca.serial");
        Some(pki)
    }

    /// The directory alone, for a Perl agent's key and CSR; `None` without openssl.
    pub fn without_ca(dir: &Path) -> Option<PerlPki> {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("openssl not found; skipping this test (make test installs it as root)");
            return None;
        }
        fs::create_dir_all(dir).expect("create the Perl PKI dir");
        Some(PerlPki {
            dir: dir.to_path_buf(),
        })
    }

    /// A Perl agent's pairing key and CSR: `genrsa 4096`, `req -new -subj
    /// /CN=<cn>` (no extensions, SHA-256). Returns the CSR PEM.
    pub fn agent_csr(&self, name: &str, cn: &str) -> String {
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        self.openssl(&["genrsa", "-out", &key, "4096"]);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ]);
        self.read(&csr)
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file's text.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name))
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.path(name).display()))
    }

    /// Runs openssl in the directory; fails the test with its output otherwise.
    pub fn openssl(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed in {}:\n{}{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets the serial the next certificate gets (openssl increments
    /// `ca.serial` before use, so this writes `serial - 1`).
    pub fn next_serial(&self, serial: u32) {
        fs::write(self.path("ca.serial"), format!("{:02X}\n", serial - 1))
            .expect("write ca.serial");
    }

    /// A leaf the original's way: `genrsa 4096`, `req -new -subj /CN=<cn>`,
    /// `x509 -req -CA ca.crt -CAkey ca.key -CAserial ca.serial -CAcreateserial
    /// -days <days>` (no extension file). Writes `<name>.key`, `<name>.csr`,
    /// `<name>.crt` and checks that the certificate is X.509 v1.
    pub fn leaf(&self, name: &str, cn: &str, days: i32) {
        let (csr, crt) = (format!("{name}.csr"), format!("{name}.crt"));
        self.agent_csr(name, cn);
        self.sign(&csr, &crt, days);
        let text = self.openssl(&["x509", "-in", &crt, "-noout", "-text"]);
        assert!(
            text.contains("Version: 1 (0x0)") && !text.contains("X509v3"),
            "openssl x509 -req did not make a v1 certificate without extensions:\n{text}"
        );
    }

    /// Signs `csr` into `crt` with the CA, as the original's `sign_csr` does.
    pub fn sign(&self, csr: &str, crt: &str, days: i32) {
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAserial",
            "ca.serial",
            "-CAcreateserial",
            "-days",
            &days.to_string(),
            "-out",
            crt,
        ]);
    }

    /// The serial of `<name>.crt` as `openssl x509 -serial` prints it (hex).
    pub fn serial(&self, name: &str) -> String {
        let out = self.openssl(&["x509", "-in", &format!("{name}.crt"), "-noout", "-serial"]);
        out.trim().trim_start_matches("serial=").to_string()
    }
}
