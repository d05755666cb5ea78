//! Schema sidecars: `<script-path>.schema.json`, transported, never interpreted.
//!
//! A sidecar is read only for allowlisted scripts, at that exact path, when it
//! is a regular file (not a symlink) of at most [`MAX_SIDECAR_BYTES`] holding a
//! JSON object; anything else is skipped with `schema-skip`. Its
//! `schema_version` is the body's own `version` when that is a plain token,
//! else `sha256:` + 12 hex of SHA-256 over the canonical JSON (sorted keys,
//! compact), as the original derives it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::conf::Allowlist;
use miniserde::json::{Number, Value};

use crate::proto::json;
use crate::{log, pki};

/// The largest sidecar read (the original's 64 KiB).
pub const MAX_SIDECAR_BYTES: u64 = 65_536;

/// One loaded sidecar.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// The body, verbatim as parsed.
    pub schema: Value,
    /// The derived or declared version.
    pub version: String,
}

/// Loads the sidecars of every allowlisted script, keyed by script name.
pub fn load_all(allowlist: &Allowlist) -> BTreeMap<String, Sidecar> {
    let mut out = BTreeMap::new();
    for (name, entry) in &allowlist.scripts {
        let mut path = entry.path.clone().into_os_string();
        path.push(".schema.json");
        match load(Path::new(&path)) {
            Ok(Some(s)) => {
                out.insert(name.clone(), s);
            }
            Ok(None) => {}
            Err(reason) => log::warn(
                "schema-skip",
                &[
                    ("SCRIPT", name),
                    ("PATH", &Path::new(&path).display().to_string()),
                    ("REASON", reason),
                ],
            ),
        }
    }
    out
}

fn load(path: &Path) -> Result<Option<Sidecar>, &'static str> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    if !meta.file_type().is_file() {
        return Err("not a regular file");
    }
    if meta.len() > MAX_SIDECAR_BYTES {
        return Err("larger than 65536 bytes");
    }
    let bytes = std::fs::read(path).map_err(|_| "unreadable")?;
    if bytes.len() as u64 > MAX_SIDECAR_BYTES {
        return Err("larger than 65536 bytes");
    }
    let Ok(Value::Object(obj)) = json::parse(&bytes) else {
        return Err("not a JSON object");
    };
    let schema = Value::Object(obj);
    let version = schema_version(&schema);
    Ok(Some(Sidecar { schema, version }))
}

/// The `schema_version` of a sidecar body.
pub fn schema_version(schema: &Value) -> String {
    if let Value::Object(obj) = schema {
        let declared = match obj.get("version") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(Number::U64(n))) => Some(n.to_string()),
            Some(Value::Number(Number::I64(n))) => Some(n.to_string()),
            _ => None,
        };
        if let Some(v) = declared.filter(|v| valid_version(v)) {
            return v;
        }
    }
    let canonical = json::to_string(schema);
    format!("sha256:{}", &pki::sha256_hex(canonical.as_bytes())[..12])
}

fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && !v.starts_with("sha256:")
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_version_matches_reference_vector() {
        let v = json::parse(br#"{"b":1,"a":"x"}"#).unwrap();
        assert_eq!(schema_version(&v), "sha256:cdab067e9f3b");
    }

    #[test]
    fn declared_version_wins_unless_it_claims_a_hash() {
        let v = json::parse(br#"{"version":"2"}"#).unwrap();
        assert_eq!(schema_version(&v), "2");
        let v = json::parse(br#"{"version":"sha256:abc"}"#).unwrap();
        assert!(schema_version(&v).starts_with("sha256:") && schema_version(&v) != "sha256:abc");
    }
}
