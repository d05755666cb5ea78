//! The agent registry: one JSON record per paired agent,
//! `<registry_dir>/<name>.json` (mode 0644), written atomically; updates are
//! serialised with a registry-wide lock on `.registry.lock`.
//!
//! Records carry the original's fields plus `pubkey_sha256`, the SHA-256 of
//! the agent certificate's public key recorded at pairing: the engine refuses
//! a TLS peer whose key differs from the entry it meant to reach.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsx;
use crate::proto::json;
use crate::proto::{AgentName, AgentRecord, HostCapabilities, DEFAULT_AGENT_PORT};

/// Registry failures.
#[derive(Debug)]
pub enum RegistryError {
    /// No record with that name.
    NotFound(String),
    /// The name cannot be a registry key.
    InvalidName(String),
    /// The target name is taken.
    Exists(String),
    /// Permission or other I/O failure.
    Io(PathBuf, io::Error),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::NotFound(n) => write!(f, "No registry entry for '{n}'"),
            RegistryError::InvalidName(n) => write!(
                f,
                "invalid agent name '{n}' (use letters, digits, '.', '-', '_')"
            ),
            RegistryError::Exists(n) => write!(f, "agent '{n}' already exists"),
            RegistryError::Io(p, e) if e.kind() == io::ErrorKind::PermissionDenied => {
                write!(
                    f,
                    "Cannot access agent registry: permission denied ({})",
                    p.display()
                )
            }
            RegistryError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for RegistryError {}

/// Whether `name` can be a registry key ([`AgentName`]).
pub fn valid_name(name: &str) -> bool {
    AgentName::parse(name).is_some()
}

/// The registry directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// A registry rooted at `dir`.
    pub fn new(dir: &Path) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn io(&self, e: io::Error) -> RegistryError {
        RegistryError::Io(self.dir.clone(), e)
    }

    /// One record, if present.
    pub fn get(&self, name: &str) -> Result<Option<AgentRecord>, RegistryError> {
        if !valid_name(name) {
            return Ok(None);
        }
        match std::fs::read(self.path(name)) {
            // A record that is not a JSON object is skipped, as the original
            // skips what it cannot decode.
            Ok(bytes) => Ok(json::parse_object(&bytes).ok().map(|o| {
                let mut a = AgentRecord::from_json(&o);
                a.hostname = name.to_string();
                a
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Every record, sorted by name.
    pub fn list(&self) -> Result<Vec<AgentRecord>, RegistryError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io(e))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json") {
                if let Some(a) = self.get(name)? {
                    out.push(a);
                }
            }
        }
        out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(out)
    }

    /// Replaces each answering agent's cached tags with its live ones
    /// (the discovery side effect); names no longer registered are skipped.
    pub fn refresh_tags(&self, caps: &[HostCapabilities]) {
        for c in caps {
            if let Ok(live) = &c.reply {
                let tags = live.tags.clone();
                let _ = self.update(&c.label.host, |a| a.tags = tags);
            }
        }
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> Result<Vec<String>, RegistryError> {
        Ok(self.list()?.into_iter().map(|a| a.hostname).collect())
    }

    fn lock(&self) -> Result<fsx::FileLock, RegistryError> {
        fsx::ensure_dir(&self.dir, 0o770).map_err(|e| self.io(e))?;
        fsx::lock(&self.dir.join(".registry.lock"), 0o660).map_err(|e| self.io(e))
    }

    fn write(&self, agent: &AgentRecord) -> Result<(), RegistryError> {
        let bytes = json::to_string(&agent.to_json());
        fsx::write_atomic(&self.path(&agent.hostname), bytes.as_bytes(), 0o644)
            .map_err(|e| self.io(e))
    }

    /// Writes (creates or replaces) a record.
    pub fn put(&self, agent: &AgentRecord) -> Result<(), RegistryError> {
        if !valid_name(&agent.hostname) {
            return Err(RegistryError::InvalidName(agent.hostname.clone()));
        }
        let _lock = self.lock()?;
        self.write(agent)
    }

    /// Read-modify-write of one record under the registry lock.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut AgentRecord),
    ) -> Result<AgentRecord, RegistryError> {
        let _lock = self.lock()?;
        let mut agent = self
            .get(name)?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        change(&mut agent);
        self.write(&agent)?;
        Ok(agent)
    }

    /// Renames a record (writes the new file, then removes the old one).
    pub fn rename(&self, old: &str, new: &str) -> Result<AgentRecord, RegistryError> {
        if !valid_name(new) {
            return Err(RegistryError::InvalidName(new.to_string()));
        }
        let _lock = self.lock()?;
        let mut agent = self
            .get(old)?
            .ok_or_else(|| RegistryError::NotFound(old.to_string()))?;
        if self.path(new).exists() {
            return Err(RegistryError::Exists(new.to_string()));
        }
        agent.hostname = new.to_string();
        self.write(&agent)?;
        std::fs::remove_file(self.path(old)).map_err(|e| self.io(e))?;
        Ok(agent)
    }

    /// Deletes a record, returning it.
    pub fn remove(&self, name: &str) -> Result<AgentRecord, RegistryError> {
        let _lock = self.lock()?;
        let agent = self
            .get(name)?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        std::fs::remove_file(self.path(name)).map_err(|e| self.io(e))?;
        Ok(agent)
    }
}

/// A resolved destination for one host argument.
#[derive(Debug, Clone)]
pub struct Target {
    /// Registry name (results are keyed by it).
    pub name: String,
    /// Address to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// Expected public-key fingerprint (empty: not pinned).
    pub pubkey_sha256: String,
    /// Where the agent stands in a dispatcher rotation (`current`,
    /// `pending`, `stale`, `unknown`), as the registry says.
    pub serial_status: String,
}

/// Resolves `name` or `name:port` arguments through the registry; every name
/// must be registered. Duplicates are dropped (first wins). `Err` lists the
/// unknown names.
pub fn resolve(
    registry: &Registry,
    args: &[String],
    default_port: Option<u16>,
) -> Result<Vec<Target>, ResolveError> {
    let mut targets: Vec<Target> = Vec::new();
    let mut unknown = Vec::new();
    for arg in args {
        let (name, port) = split_port(arg);
        if targets.iter().any(|t| t.name == name) {
            continue;
        }
        match registry.get(name).map_err(ResolveError::Registry)? {
            Some(a) => {
                let stored = a.port;
                let port = port.unwrap_or(if stored == DEFAULT_AGENT_PORT {
                    default_port.unwrap_or(stored)
                } else {
                    stored
                });
                targets.push(Target {
                    name: name.to_string(),
                    host: a.address().to_string(),
                    port,
                    pubkey_sha256: a.pubkey_sha256,
                    serial_status: a.serial_status,
                });
            }
            None => unknown.push(name.to_string()),
        }
    }
    if unknown.is_empty() {
        Ok(targets)
    } else {
        Err(ResolveError::Unknown(unknown))
    }
}

/// Why host arguments did not resolve.
#[derive(Debug)]
pub enum ResolveError {
    /// These names are not registered.
    Unknown(Vec<String>),
    /// The registry could not be read.
    Registry(RegistryError),
}

fn split_port(arg: &str) -> (&str, Option<u16>) {
    if let Some((name, port)) = arg.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit()) {
            if let Ok(p) = port.parse::<u16>() {
                if p > 0 {
                    return (name, Some(p));
                }
            }
        }
    }
    (arg, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_normalises() {
        let o = json::parse_object(
            br#"{"hostname":"a","lookup_by":"dns","port":99999,"tags":{"env":"prod","n":1}}"#,
        )
        .unwrap();
        let a = AgentRecord::from_json(&o);
        assert_eq!(
            (a.lookup_by.as_str(), a.port),
            ("hostname", DEFAULT_AGENT_PORT)
        );
        assert_eq!(a.tags.len(), 1);
        let back = AgentRecord::from_json(match &a.to_json() {
            miniserde::json::Value::Object(o) => o,
            _ => unreachable!(),
        });
        assert_eq!(back, a);
    }

    #[test]
    fn port_suffix() {
        assert_eq!(split_port("web:8443"), ("web", Some(8443)));
        assert_eq!(split_port("web"), ("web", None));
        assert_eq!(split_port("web:x"), ("web:x", None));
    }

    #[test]
    fn names() {
        assert!(valid_name("web-01.example.com"));
        for bad in ["", ".hidden", "../../etc/x", "a/b", "name\n", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
