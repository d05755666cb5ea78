//! `host:script` locks that actually exclude: a run holds
//! `<locks_dir>/<host>--<script>.lock` (flock) for its whole duration, so a
//! second run of the same script on the same host, from the CLI or the API,
//! is refused with a conflict. The kernel drops the lock when the holder
//! exits, so a crashed holder never leaves one behind. Lock files are opened
//! without following symlinks.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::fsx::{self, FileLock};

/// The locks directory.
#[derive(Debug, Clone)]
pub struct Locks {
    dir: PathBuf,
}

/// Why locks could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another run holds these `host:script` locks.
    Conflict(Vec<String>),
    /// A lock file or the directory could not be used: an I/O failure, not
    /// a conflict.
    Io(PathBuf, io::Error),
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Conflict(c) => write!(f, "already running: {}", c.join(", ")),
            LockError::Io(p, e) => write!(f, "cannot use lock file {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for LockError {}

/// Locks held for one run; released on drop.
#[derive(Debug)]
pub struct Held {
    _locks: Vec<FileLock>,
}

fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Locks {
    /// Locks under `dir`.
    pub fn new(dir: &Path) -> Locks {
        Locks {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, host: &str, script: &str) -> PathBuf {
        self.dir
            .join(format!("{}--{}.lock", sanitise(host), sanitise(script)))
    }

    /// Takes every `host:script` lock or none. A conflict lists the locks
    /// held elsewhere as `host:script`; an I/O failure names the file.
    /// Blocking (`flock`, file writes): servers call it through
    /// `smol::unblock`.
    pub fn acquire(&self, hosts: &[String], script: &str) -> Result<Held, LockError> {
        fsx::ensure_dir(&self.dir, 0o770).map_err(|e| LockError::Io(self.dir.clone(), e))?;
        let mut held = Vec::new();
        let mut conflicts = Vec::new();
        for host in hosts {
            let path = self.path(host, script);
            match fsx::try_lock(&path, 0o660) {
                Ok(Some(lock)) => {
                    let mut f = lock.file();
                    let _ = f.set_len(0).and_then(|_| writeln!(f, "{host}\n{script}"));
                    held.push(lock);
                }
                Ok(None) => conflicts.push(format!("{host}:{script}")),
                Err(e) => return Err(LockError::Io(path, e)),
            }
        }
        if conflicts.is_empty() {
            Ok(Held { _locks: held })
        } else {
            Err(LockError::Conflict(conflicts))
        }
    }

    /// Locks currently held by anyone, as (host, script), sorted.
    pub fn held(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".lock") else {
                continue;
            };
            if !fsx::is_locked(&path) {
                continue;
            }
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines = content.lines();
            let pair = match (lines.next(), lines.next()) {
                (Some(h), Some(s)) => (h.to_string(), s.to_string()),
                _ => match stem.split_once("--") {
                    Some((h, s)) => (h.to_string(), s.to_string()),
                    None => (stem.to_string(), String::new()),
                },
            };
            out.push(pair);
        }
        out.sort();
        out
    }
}
