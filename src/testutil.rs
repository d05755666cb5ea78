//! Test-only helpers: a temporary directory for `openssl` runs and the Perl
//! original's PKI made exactly as it makes it (reference protocol.md 6.2), so
//! tests hold real X.509 v1 certificates. Skipped (with a printed reason)
//! where `openssl` is not installed.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory for one test: name, pid and a counter under the
/// temp dir, so parallel tests and reruns never share one.
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ctrl-exec-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A temporary directory for openssl runs, removed on drop unless a test failed.
pub struct OpensslDir {
    /// The directory.
    pub dir: PathBuf,
}

impl OpensslDir {
    /// A fresh directory, or `None` (the caller skips its test) without `openssl`.
    pub fn new(name: &str) -> Option<OpensslDir> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("openssl not found; skipping {name}");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ctrl-exec-ut-{}-{name}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Some(OpensslDir { dir })
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `openssl req -newkey rsa:<bits>` for CN=web-01.example.com; returns the CSR PEM
    /// (`<name>.csr`, key in `<name>.key`).
    pub fn req_rsa(&self, name: &str, bits: u32, extra: &[&str]) -> String {
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let newkey = format!("rsa:{bits}");
        let mut args = vec![
            "req",
            "-new",
            "-newkey",
            &newkey,
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            "/CN=web-01.example.com",
            "-out",
            &csr,
        ];
        args.extend_from_slice(extra);
        self.openssl(&args);
        self.read(&csr)
    }

    /// The text of a file in the directory.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }

    /// Writes a file in the directory.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    /// Runs openssl in the directory; panics with its output on failure.
    pub fn openssl(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?} failed in {}: {}{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The original's `setup-ca`: `genrsa <bits>`, `req -new -x509 -days 3650
    /// -subj "/CN=ctrl-exec CA"` (CA:TRUE from the distro openssl.cnf),
    /// `ca.serial` initialised to `01`. Writes `<ca>.key`, `<ca>.crt`, `<ca>.serial`.
    pub fn perl_ca(&self, ca: &str, bits: u32) {
        let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
        self.openssl(&["genrsa", "-out", &key, &bits.to_string()]);
        self.openssl(&[
            "req",
            "-new",
            "-x509",
            "-days",
            "3650",
            "-key",
            &key,
            "-subj",
            "/CN=ctrl-exec CA",
            "-out",
            &crt,
        ]);
        self.write(&format!("{ca}.serial"), "01\n");
    }

    /// The original's leaf signing: a fresh RSA key, CSR `/CN=<cn>`, then
    /// `x509 -req -CA … -CAserial … -CAcreateserial -days <days>` with no
    /// extension file (X.509 v1 with OpenSSL 3.0). `extra` is appended to
    /// the `x509` arguments. Writes `<name>.key`, `<name>.csr`, `<name>.crt`.
    pub fn perl_leaf(&self, ca: &str, name: &str, cn: &str, bits: u32, days: u32, extra: &[&str]) {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let (ca_crt, ca_key, ca_serial) = (
            format!("{ca}.crt"),
            format!("{ca}.key"),
            format!("{ca}.serial"),
        );
        self.openssl(&["genrsa", "-out", &key, &bits.to_string()]);
        let subj = format!("/CN={cn}");
        self.openssl(&["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr]);
        let days = days.to_string();
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAserial",
            &ca_serial,
            "-CAcreateserial",
            "-days",
            &days,
            "-out",
            &crt,
        ];
        args.extend_from_slice(extra);
        self.openssl(&args);
    }
}

impl Drop for OpensslDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
