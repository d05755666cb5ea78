//! The dispatcher host's list of revoked agents: `<state_dir>/revoked-agents`.
//!
//! `ced unpair --revoke <name>` adds the agent certificate's serial and the
//! SHA-256 of its public key; the engine refuses a TLS peer presenting
//! either before any request is sent, whatever the registry says. The file
//! has one entry per line:
//!
//! ```text
//! # comment (whole-line or trailing)
//! serial <serial in any form pki::canonical_serial accepts>
//! key <lowercase hex SHA-256 of the SubjectPublicKeyInfo DER>
//! ```
//!
//! Unparsable lines are skipped with a warning. A missing file revokes
//! nothing; a file that exists but cannot be read refuses every call (fail
//! closed). Writes replace the file atomically (mode 0644).

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use crate::{fsx, log, pki};

/// Revoked agent serials and public keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedAgents {
    /// Certificate serials, minimal lowercase hex.
    pub serials: BTreeSet<String>,
    /// Public-key fingerprints, lowercase hex SHA-256 of the SPKI.
    pub keys: BTreeSet<String>,
}

/// Whether `s` is 64 lowercase or uppercase hex digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RevokedAgents {
    /// Parses the file text.
    pub fn parse(text: &str) -> RevokedAgents {
        let mut out = RevokedAgents::default();
        for raw in text.lines() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let entry = match (parts.next(), parts.next(), parts.next()) {
                (Some("serial"), Some(v), None) => pki::canonical_serial(v)
                    .map(|s| out.serials.insert(s))
                    .is_some(),
                (Some("key"), Some(v), None) if is_sha256_hex(v) => {
                    out.keys.insert(v.to_ascii_lowercase());
                    true
                }
                _ => false,
            };
            if !entry {
                log::warn(
                    "config-warn",
                    &[
                        ("ENTRY", line),
                        ("MSG", "malformed revoked-agents line skipped"),
                    ],
                );
            }
        }
        out
    }

    /// The file text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# ctrl-exec revoked agents: 'serial <hex>' or 'key <sha256 of the public key>', one per line.\n# Written by 'ced unpair --revoke'.\n",
        );
        for s in &self.serials {
            out.push_str(&format!("serial {s}\n"));
        }
        for k in &self.keys {
            out.push_str(&format!("key {k}\n"));
        }
        out
    }

    /// Reads the list; a missing file revokes nothing.
    pub fn load(path: &Path) -> io::Result<RevokedAgents> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(RevokedAgents::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RevokedAgents::default()),
            Err(e) => Err(e),
        }
    }

    /// Adds a serial (when given and valid) and a key (when given) to the
    /// file at `path`, rewriting it atomically. Returns what was added.
    pub fn add(path: &Path, serial: Option<&str>, key: Option<&str>) -> io::Result<RevokedAgents> {
        let mut list = RevokedAgents::load(path)?;
        let mut added = RevokedAgents::default();
        if let Some(s) = serial.and_then(pki::canonical_serial) {
            list.serials.insert(s.clone());
            added.serials.insert(s);
        }
        if let Some(k) = key.filter(|k| is_sha256_hex(k)) {
            list.keys.insert(k.to_ascii_lowercase());
            added.keys.insert(k.to_ascii_lowercase());
        }
        if let Some(dir) = path.parent() {
            fsx::ensure_dir(dir, 0o750)?;
        }
        fsx::write_atomic(path, list.render().as_bytes(), 0o644)?;
        Ok(added)
    }

    /// Whether a certificate with this serial and public-key fingerprint is
    /// revoked.
    pub fn refuses(&self, serial: &str, spki_sha256: &str) -> bool {
        self.serials.contains(serial) || self.keys.contains(spki_sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_garbage() {
        let key = "ab".repeat(32);
        let text = format!(
            "# c\nserial 0A\nserial AA:BB # trailing\nkey {}\nkey short\nbogus line\nserial\n",
            key.to_uppercase()
        );
        let list = RevokedAgents::parse(&text);
        assert!(list.serials.contains("a") && list.serials.contains("aabb"));
        assert_eq!(list.serials.len(), 2);
        assert!(list.keys.contains(&key));
        assert_eq!(list.keys.len(), 1);
        assert_eq!(RevokedAgents::parse(&list.render()), list);
        assert!(list.refuses("a", ""));
        assert!(list.refuses("ff", &key));
        assert!(!list.refuses("10", "00"));
    }

    #[test]
    fn add_writes_atomically_and_keeps_entries() {
        let dir = std::env::temp_dir().join(format!("revoked-agents-{}", std::process::id()));
        let path = dir.join("revoked-agents");
        let key = "cd".repeat(32);
        RevokedAgents::add(&path, Some("1f"), None).unwrap();
        let added = RevokedAgents::add(&path, None, Some(&key)).unwrap();
        assert!(added.serials.is_empty() && added.keys.contains(&key));
        let list = RevokedAgents::load(&path).unwrap();
        assert!(list.serials.contains("1f") && list.keys.contains(&key));
        assert_eq!(
            RevokedAgents::load(&dir.join("none")).unwrap(),
            RevokedAgents::default()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
