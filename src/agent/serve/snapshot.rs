//! What each request is judged against, and how it is replaced.
//!
//! A [`Snapshot`] holds the allowlist, sidecars, trusted map, revocations,
//! the TLS configuration built from the certificate files, and the
//! reloadable part of agent.conf ([`Settings`]). Reload (SIGHUP) rereads
//! agent.conf and scripts.conf, builds a whole new snapshot, vets it against
//! the one in use and swaps it in one step; connections in flight keep the
//! snapshot they started with.
//!
//! A reload that fails keeps the previous snapshot and logs one error line,
//! `reload failed, keeping previous configuration: <file>:<line>: ...`.
//! It fails when a file cannot be read or parsed (agent.conf, certificates,
//! trust files), when scripts.conf has a syntax error or would leave no
//! valid entry where there were some, when a script names an undefined
//! profile, or when the auth hook is not executable.
//!
//! Keys that only take effect at start ([`RESTART_KEYS`]: the listener,
//! the connection cap, state paths, logging) are read from
//! [`Agent::conf`], never from a reload: a changed one is logged as
//! `<agent.conf>: <key> changed; restart required` and the rest applies.
//!
//! A renewed certificate (`/renew-complete`) replaces the snapshot the same
//! way: a copy of the one in use with a TLS configuration built from the new
//! certificate ([`Agent::use_certificate`]), so the next handshake presents
//! it and connections in flight keep theirs. Later reloads keep that
//! certificate while it outlives the `cert` file, which the agent usually
//! cannot write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;

use crate::agent::limits::MAX_TRUSTED_DISPATCHERS;
use crate::agent::schema::{self, Sidecar};
use crate::agent::serve::{is_executable, Agent};
use crate::agent::{cert, trust, AgentError};
use crate::conf::{self, AgentConf, Allowlist, IpNet, RateRule};
use crate::hook::Hook;
use crate::net::ratelimit::{RateLimiter, Rule, DEFAULT_CAPACITY};
use crate::net::tls::{self, Identity};
use crate::proto::RotateAction;
use crate::{log, pki, time};

/// Everything a request is judged against; replaced whole on reload.
#[derive(Clone)]
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
    /// The agent certificate being served, as parsed; `None` if it could
    /// not be (the handshake would then fail anyway).
    pub cert: Option<pki::CertInfo>,
    /// The reloadable part of agent.conf.
    pub settings: Settings,
}

/// The part of agent.conf a reload applies.
#[derive(Clone)]
pub struct Settings {
    /// This agent's name (`hostname`), in ping and capabilities replies.
    pub hostname: String,
    /// Directories scripts must resolve into; empty = no restriction.
    pub script_dirs: Vec<PathBuf>,
    /// Peers allowed to connect; `None` = all.
    pub allowed_ips: Option<Vec<IpNet>>,
    /// Connection volume rule.
    pub rate_limit_volume: Option<RateRule>,
    /// Failed-handshake rule.
    pub rate_limit_probe: Option<RateRule>,
    /// The auth hook (`auth_hook`, `auth_hook_timeout`), checked executable.
    pub hook: Option<Hook>,
    /// Time limit for writing the context JSON to a script.
    pub stdin_timeout: Duration,
    /// Script run time limit unless the allowlist entry sets one.
    pub script_timeout: Duration,
    /// Output kept per stream.
    pub max_output_bytes: usize,
    /// `[tags]`, reported by capabilities.
    pub tags: BTreeMap<String, String>,
    /// The privileged executor's socket (restart-only), when scripts run
    /// through it.
    pub executor_socket: Option<PathBuf>,
}

impl Settings {
    /// The reloadable keys of `conf`; refuses an auth hook that is not an
    /// executable file.
    fn from_conf(conf: &AgentConf) -> Result<Settings, AgentError> {
        let hook = conf.auth_hook.as_ref().map(|p| Hook {
            path: p.clone(),
            timeout: conf.auth_hook_timeout,
        });
        if let Some(h) = &hook {
            if !is_executable(&h.path) {
                return Err(AgentError::Config(format!(
                    "auth_hook '{}' is not an executable file",
                    h.path.display()
                )));
            }
        }
        Ok(Settings {
            hostname: conf.hostname.clone(),
            script_dirs: conf.script_dirs.clone(),
            allowed_ips: conf.allowed_ips.clone(),
            rate_limit_volume: conf.rate_limit_volume,
            rate_limit_probe: conf.rate_limit_probe,
            hook,
            stdin_timeout: conf.stdin_timeout,
            script_timeout: conf.script_timeout,
            max_output_bytes: conf.max_output_bytes,
            tags: conf.tags.clone(),
            executor_socket: conf.executor_socket.clone(),
        })
    }

    /// A fresh rate limiter with these rules.
    pub fn limiter(&self) -> RateLimiter {
        let rule = |r: &Option<RateRule>| {
            r.as_ref().map(|r| Rule {
                limit: r.limit,
                window: r.window,
                block: r.block,
            })
        };
        RateLimiter::new(
            rule(&self.rate_limit_volume),
            rule(&self.rate_limit_probe),
            DEFAULT_CAPACITY,
        )
    }
}

/// agent.conf keys read once at start; a reload that changes one warns
/// that a restart is needed.
pub const RESTART_KEYS: &[&str] = &[
    "port",
    "bind",
    "max_children",
    "state_dir",
    "executor_socket",
    "syslog",
];

/// The [`RESTART_KEYS`] whose values differ between `running` and `new`.
fn restart_required(running: &AgentConf, new: &AgentConf) -> Vec<&'static str> {
    let changed = [
        running.port != new.port,
        running.bind != new.bind,
        running.max_children != new.max_children,
        running.state_dir != new.state_dir
            || running.async_runs_dir != new.async_runs_dir
            || running.cert_staging_path != new.cert_staging_path,
        running.executor_socket != new.executor_socket,
        running.syslog != new.syslog,
    ];
    RESTART_KEYS
        .iter()
        .zip(changed)
        .filter_map(|(k, c)| c.then_some(*k))
        .collect()
}

/// Why a newly built snapshot must not replace the one in use, if it must
/// not: a syntax error in scripts.conf, or an allowlist left with no valid
/// entry where the running one has some.
fn vet(running: &Snapshot, new: &Snapshot, allowlist_path: &Path) -> Result<(), String> {
    if let Some(first) = new.allowlist.syntax_errors.first() {
        let more = new.allowlist.syntax_errors.len() - 1;
        return Err(if more == 0 {
            first.clone()
        } else {
            format!("{first} (and {more} more)")
        });
    }
    let had = running.allowlist.scripts.len();
    if new.allowlist.scripts.is_empty() && had > 0 {
        let why = match new.allowlist.warnings.first() {
            Some(w) => w.clone(),
            None => format!("{}: no entries", allowlist_path.display()),
        };
        return Err(format!(
            "{why}; no valid script would be left (the running allowlist has {had}); restart the agent to run with an empty allowlist"
        ));
    }
    Ok(())
}

/// What a reload logs for a snapshot that could not be built: the problem
/// itself, without the start-up wording of [`AgentError`]'s `Display`.
fn detail(e: &AgentError) -> String {
    match e {
        AgentError::Config(m) | AgentError::Failed(m) => m.clone(),
        AgentError::NotPaired(path) => format!("{path}: missing"),
        other => other.to_string(),
    }
}

impl Agent {
    /// The snapshot new connections start with.
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rereads agent.conf and scripts.conf and swaps in the new snapshot;
    /// keeps the old one and logs why when it cannot be used.
    pub(super) fn reload(&self) {
        let built = AgentConf::load(&self.conf_path)
            .map_err(|e| e.to_string())
            .and_then(|conf| {
                let renewed = self.renewed_cert();
                let mut snap = load_snapshot(&conf, &self.allowlist_path, renewed.as_deref())
                    .map_err(|e| detail(&e))?;
                snap.revoked.extend(self.pushed());
                self.apply_pushed_trust(&mut snap.trusted);
                vet(&self.snapshot(), &snap, &self.allowlist_path)?;
                Ok((conf, snap))
            });
        let (conf, snap) = match built {
            Ok(b) => b,
            Err(e) => {
                log::error(
                    "reload",
                    &[(
                        "ERROR",
                        &format!("reload failed, keeping previous configuration: {e}"),
                    )],
                );
                return;
            }
        };
        let scripts = snap.allowlist.scripts.len().to_string();
        let trusted = snap.trusted.len().to_string();
        let limiter = snap.settings.limiter();
        let warnings = snap.allowlist.warnings.clone();
        match self.snapshot.write() {
            Ok(mut s) => *s = Arc::new(snap),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(snap),
        }
        match self.limiter.lock() {
            Ok(mut l) => *l = limiter,
            Err(poisoned) => *poisoned.into_inner() = limiter,
        }
        for w in &warnings {
            log::warn("config-warn", &[("MSG", w)]);
        }
        for key in restart_required(&self.conf, &conf) {
            log::warn(
                "config-warn",
                &[(
                    "MSG",
                    &format!(
                        "{}: {key} changed; restart required",
                        self.conf_path.display()
                    ),
                )],
            );
        }
        log::info("reload", &[("SCRIPTS", &scripts), ("TRUSTED", &trusted)]);
        crate::agent::cert::log_lifetime(self.snapshot().cert.as_ref());
    }
}

impl Snapshot {
    /// The served certificate's notAfter in OpenSSL text form, `unknown`
    /// when it could not be parsed.
    pub fn expiry(&self) -> String {
        self.cert
            .as_ref()
            .map(|i| time::openssl_date(i.not_after))
            .unwrap_or_else(|| "unknown".into())
    }
}

impl Agent {
    /// The certificate `/renew-complete` took over since the start, if any.
    fn renewed_cert(&self) -> Option<String> {
        match self.renewed.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a copy of the current snapshot whose TLS configuration
    /// presents `cert_pem` (with the agent key `key_pem`, trusting `ca_pem`).
    /// The copy is made under the write lock, so a reload swapping at the
    /// same moment is not undone.
    pub(super) fn use_certificate(
        &self,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<(), String> {
        let ca_der = pki::pem_certs(ca_pem)
            .into_iter()
            .next()
            .ok_or_else(|| "no CA certificate".to_string())?;
        let identity = Identity::from_pem(cert_pem, key_pem).map_err(|e| e.to_string())?;
        let tls = tls::mtls_server(&identity, &ca_der).map_err(|e| e.to_string())?;
        let cert = pki::cert_info_pem(cert_pem).ok();
        match self.renewed.lock() {
            Ok(mut r) => *r = Some(cert_pem.to_string()),
            Err(poisoned) => *poisoned.into_inner() = Some(cert_pem.to_string()),
        }
        let mut slot = match self.snapshot.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = Snapshot::clone(&slot);
        next.tls = tls;
        next.cert = cert;
        *slot = Arc::new(next);
        Ok(())
    }
}

/// How a `/revoke-serial` was applied.
pub(super) enum Revoked {
    /// It was revoked already; nothing was written.
    Already,
    /// Appended to the revocation list file and in effect.
    Written,
    /// In effect (and kept across reloads) until the agent restarts, but the
    /// file could not be written (the reason).
    MemoryOnly(String),
}

impl Agent {
    /// Revokes `serial` (canonical) at once: appends it to the
    /// `revoked_serials` file (rewritten atomically, its comments kept) and
    /// swaps in a snapshot that differs from the one in use only by the
    /// serial, so no reload is needed and nothing else changes. The serial is
    /// also remembered, so a reload keeps it revoked even when the file could
    /// not be written. The write lock on the snapshot is held throughout, so
    /// two revocations cannot lose each other's line.
    pub(super) fn revoke_serial(&self, serial: &str, note: &str) -> Revoked {
        let mut guard = match self.snapshot.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.revoked.contains(serial) {
            return Revoked::Already;
        }
        match self.pushed_revocations.lock() {
            Ok(mut p) => p.insert(serial.to_string()),
            Err(poisoned) => poisoned.into_inner().insert(serial.to_string()),
        };
        let path = &self.conf.revoked_serials;
        let written = append_revoked(path, serial, note)
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
        let mut next = Snapshot::clone(&guard);
        next.revoked.insert(serial.to_string());
        *guard = Arc::new(next);
        match written {
            Ok(()) => Revoked::Written,
            Err(e) => Revoked::MemoryOnly(e),
        }
    }

    /// The serials revoked through `/revoke-serial` since start.
    fn pushed(&self) -> BTreeSet<String> {
        match self.pushed_revocations.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// How a `/rotate-serial` was applied (it is in effect in every case).
pub(super) struct Rotated {
    /// Nothing changed (added under the caller already, or not there).
    pub(super) already: bool,
    /// Where the change was written.
    pub(super) persist: trust::Persist,
}

impl Agent {
    /// Applies a `/rotate-serial` from the dispatcher `id`, whose
    /// connection presented `caller_serial`: `add` maps `serial` to `id`
    /// (never taking a serial another id owns, nor a revoked one, nor
    /// growing the map past [`MAX_TRUSTED_DISPATCHERS`]); `remove` drops it
    /// (only `id`'s own, never the connection's own serial). The change
    /// takes effect for the next connection at once (a snapshot that
    /// differs only by the map), is remembered for reloads, and is written
    /// to the map or staged ([`trust::persist`], with `cert` backing an
    /// added serial). The write lock on the snapshot is held throughout, so
    /// two changes cannot lose each other. `Err` is the refusal's wording.
    pub(super) fn rotate_serial(
        &self,
        action: RotateAction,
        serial: &str,
        id: &str,
        caller_serial: &str,
        cert: Option<&str>,
    ) -> Result<Rotated, String> {
        let mut guard = match self.snapshot.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let owner = guard.trusted.get(serial).cloned();
        let mut next = guard.trusted.clone();
        // Even a change already in effect is written again: an earlier one
        // may have been held in memory only (a full disk), and the reply
        // says where it is now.
        match action {
            RotateAction::Add => {
                if guard.revoked.contains(serial) {
                    return Err(format!("serial {serial} is revoked on this agent"));
                }
                match owner.as_deref() {
                    Some(o) if o == id => {}
                    Some(o) => return Err(format!("serial owned by '{o}'")),
                    None if next.len() >= MAX_TRUSTED_DISPATCHERS => {
                        return Err(format!(
                            "trusted map full ({MAX_TRUSTED_DISPATCHERS} entries)"
                        ))
                    }
                    None => {
                        next.insert(serial.to_string(), id.to_string());
                    }
                }
            }
            RotateAction::Remove => match owner.as_deref() {
                None => {}
                Some(o) if o != id => return Err(format!("serial not owned by '{id}'")),
                Some(_) if serial == caller_serial => {
                    return Err("refusing to remove the serial of the connection asking".into())
                }
                Some(_) => {
                    next.remove(serial);
                }
            },
        }
        let already = next == guard.trusted;
        let change = match action {
            RotateAction::Add => Some(id.to_string()),
            RotateAction::Remove => None,
        };
        match self.pushed_trust.lock() {
            Ok(mut p) => p.insert(serial.to_string(), change),
            Err(poisoned) => poisoned.into_inner().insert(serial.to_string(), change),
        };
        let persist = trust::persist(&self.conf, &next, cert);
        let mut snap = Snapshot::clone(&guard);
        snap.trusted = next;
        *guard = Arc::new(snap);
        Ok(Rotated { already, persist })
    }

    /// Applies the `/rotate-serial` changes made since start to a map read
    /// from the files, so a reload keeps them when they could not be
    /// written; an added serial another id owns in the files stays theirs.
    fn apply_pushed_trust(&self, map: &mut trust::TrustedMap) {
        let pushed = match self.pushed_trust.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for (serial, change) in pushed {
            match change {
                Some(id) => {
                    map.entry(serial).or_insert(id);
                }
                None => {
                    if map.len() > 1 {
                        map.remove(&serial);
                    }
                }
            }
        }
    }
}

/// Appends `serial` with a trailing comment to the revocation list file,
/// keeping what is there; a missing file is created (mode 0644).
fn append_revoked(path: &Path, serial: &str, note: &str) -> std::io::Result<()> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if trust::parse_revoked(&text).contains(serial) {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{serial} # {note}\n"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsx::ensure_dir(dir, 0o750)?;
    }
    crate::fsx::write_atomic(path, text.as_bytes(), 0o644)
}

/// Builds a snapshot from `conf` and the files as they are now. Nothing is
/// logged: the caller logs the allowlist's warnings once it uses the
/// snapshot. `renewed` is a certificate taken over by `/renew-complete`
/// since the start: it is used instead of the `cert` file when it still
/// checks out and outlives it (the agent usually cannot write the live
/// file, so a reload must not go back to the old certificate).
pub fn load_snapshot(
    conf: &AgentConf,
    allowlist_path: &Path,
    renewed: Option<&str>,
) -> Result<Snapshot, AgentError> {
    let settings = Settings::from_conf(conf)?;
    let allowlist = conf::load_allowlist(allowlist_path, &conf.script_dirs)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    check_profiles(conf, &allowlist)?;
    let (mut cert_pem, key_pem, ca_pem) = read_material(conf)?;
    let trusted = trust::load_effective(conf, &ca_pem, time::now()).map_err(|e| {
        AgentError::Config(format!("{}: {e}", conf.trusted_dispatchers_path.display()))
    })?;
    let revoked = trust::load_revoked(&conf.revoked_serials)
        .map_err(|e| AgentError::Config(format!("{}: {e}", conf.revoked_serials.display())))?;
    if let Some(r) = renewed {
        let file_ends = pki::cert_info_pem(&cert_pem).map(|i| i.not_after).ok();
        match cert::check(r, &key_pem, &ca_pem, time::now()) {
            Ok(ends) if file_ends.is_none_or(|f| ends > f) => cert_pem = r.to_string(),
            _ => {}
        }
    }
    let ca_der = pki::pem_certs(&ca_pem)
        .into_iter()
        .next()
        .ok_or_else(|| AgentError::Config(format!("{}: no certificate", conf.ca.display())))?;
    let identity =
        Identity::from_pem(&cert_pem, &key_pem).map_err(|e| AgentError::Config(e.to_string()))?;
    let tls =
        tls::mtls_server(&identity, &ca_der).map_err(|e| AgentError::Config(e.to_string()))?;
    let cert = pki::cert_info_pem(&cert_pem).ok();
    let sidecars = schema::load_all(&allowlist);
    Ok(Snapshot {
        allowlist,
        sidecars,
        trusted,
        revoked,
        tls,
        cert,
        settings,
    })
}

/// Refuses an allowlist naming a profile agent.conf does not define. With
/// the executor every script's profile must be defined, `default`
/// included, and each profile must be one the executor can apply (a known
/// `run_as` user, known capabilities); without it, profiles have no effect
/// and only an explicitly annotated, undefined one is refused.
fn check_profiles(conf: &AgentConf, allowlist: &Allowlist) -> Result<(), AgentError> {
    let executor = conf.executor_socket.is_some();
    let missing: Vec<String> = allowlist
        .scripts
        .values()
        .filter(|s| (executor || s.profile != "default") && !conf.profiles.contains_key(&s.profile))
        .map(|s| format!("{} -> {}", s.name, s.profile))
        .collect();
    if !missing.is_empty() {
        return Err(AgentError::Config(format!(
            "undefined profile(s) referenced: {}{}",
            missing.join(", "),
            if executor {
                " (with executor_socket set, every script's profile must be defined, [profile default] included)"
            } else {
                ""
            }
        )));
    }
    if executor {
        for (name, profile) in &conf.profiles {
            let bad = |why: String| AgentError::Config(format!("[profile {name}]: {why}"));
            crate::sandbox::cap_mask(&profile.caps).map_err(bad)?;
            crate::conf::account::lookup(profile.run_as.as_deref().unwrap_or("root"))
                .map_err(bad)?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_revoked_keeps_the_file_and_adds_one_line() {
        let dir = crate::testutil::scratch_dir("append-revoked");
        let path = dir.join("revoked-serials");
        std::fs::write(&path, "# operator note\n0A").unwrap();
        append_revoked(&path, "1f", "by test").unwrap();
        append_revoked(&path, "1f", "again").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "# operator note\n0A\n1f # by test\n");
        assert!(append_revoked(Path::new("/dev/null/revoked"), "1f", "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
