//! What each request is judged against, and how it is replaced.
//!
//! A [`Snapshot`] holds the allowlist, sidecars, trusted map, revocations and
//! the TLS configuration built from the certificate files. Reload (SIGHUP)
//! builds a whole new one and swaps it in one step; connections in flight
//! keep the snapshot they started with. A snapshot that fails to build is
//! logged and the old one kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::agent::schema::{self, Sidecar};
use crate::agent::serve::Agent;
use crate::agent::{trust, AgentError};
use crate::conf::{self, AgentConf, Allowlist};
use crate::net::tls::{self, Identity};
use crate::{log, pki, time};

/// Everything a request is judged against; replaced whole on reload.
pub struct Snapshot {
    /// The allowlist.
    pub allowlist: Allowlist,
    /// Schema sidecars by script name.
    pub sidecars: BTreeMap<String, Sidecar>,
    /// Trusted dispatcher serials -> ids.
    pub trusted: trust::TrustedMap,
    /// Revoked serials.
    pub revoked: BTreeSet<String>,
    /// The listener's TLS configuration (certificate files as last read).
    pub tls: Arc<ServerConfig>,
    /// The agent certificate's notAfter in OpenSSL text form.
    pub expiry: String,
}

impl Agent {
    /// The snapshot new connections start with.
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rebuilds the snapshot from the files; keeps the old one on error.
    pub(super) fn reload(&self) {
        match load_snapshot(&self.conf, &self.allowlist_path) {
            Ok(snap) => {
                let scripts = snap.allowlist.scripts.len().to_string();
                let trusted = snap.trusted.len().to_string();
                match self.snapshot.write() {
                    Ok(mut s) => *s = Arc::new(snap),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(snap),
                }
                if let Ok(mut l) = self.limiter.lock() {
                    l.clear();
                }
                log::info("reload", &[("SCRIPTS", &scripts), ("TRUSTED", &trusted)]);
            }
            Err(e) => log::error(
                "reload",
                &[
                    ("ERROR", &e.to_string()),
                    ("RESULT", "kept previous configuration"),
                ],
            ),
        }
    }
}

/// Builds a snapshot from the files as they are now.
pub fn load_snapshot(conf: &AgentConf, allowlist_path: &Path) -> Result<Snapshot, AgentError> {
    let allowlist = conf::load_allowlist(allowlist_path, &conf.script_dirs)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    for w in &allowlist.warnings {
        log::warn("config-warn", &[("MSG", w)]);
    }
    let trusted = trust::load_trusted(&conf.trusted_dispatchers_path).map_err(|e| {
        AgentError::Config(format!("{}: {e}", conf.trusted_dispatchers_path.display()))
    })?;
    let revoked = trust::load_revoked(&conf.revoked_serials)
        .map_err(|e| AgentError::Config(format!("{}: {e}", conf.revoked_serials.display())))?;
    let (cert_pem, key_pem, ca_pem) = read_material(conf)?;
    let ca_der = pki::pem_certs(&ca_pem)
        .into_iter()
        .next()
        .ok_or_else(|| AgentError::Config(format!("{}: no certificate", conf.ca.display())))?;
    let identity =
        Identity::from_pem(&cert_pem, &key_pem).map_err(|e| AgentError::Config(e.to_string()))?;
    let tls =
        tls::mtls_server(&identity, &ca_der).map_err(|e| AgentError::Config(e.to_string()))?;
    let expiry = pki::cert_info_pem(&cert_pem)
        .map(|i| time::openssl_date(i.not_after))
        .unwrap_or_else(|_| "unknown".into());
    let sidecars = schema::load_all(&allowlist);
    Ok(Snapshot {
        allowlist,
        sidecars,
        trusted,
        revoked,
        tls,
        expiry,
    })
}

/// Reads cert, key and CA, naming the first missing file.
pub fn read_material(conf: &AgentConf) -> Result<(String, String, String), AgentError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AgentError::NotPaired(p.display().to_string())
            } else {
                AgentError::Config(format!("cannot read {}: {e}", p.display()))
            }
        })
    };
    Ok((read(&conf.cert)?, read(&conf.key)?, read(&conf.ca)?))
}
