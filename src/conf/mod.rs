//! Parsers for the three configuration files: `ctrl-exec.conf` (dispatcher and
//! API), `agent.conf` and `scripts.conf` (the agent's allowlist).
//!
//! The formats are those of the Perl tool (same files, drop-in), read a little
//! more strictly where the original silently ignored a mistake: a malformed
//! line, an unparsable number or an `allowed_ips` typo is an error naming the
//! file, line, key and value, never a silent fallback.
//!
//! Invariants and contract:
//! - `parse(path, text)` does no file I/O on the config itself; `path` is used
//!   for messages and to resolve relative paths against the file's directory.
//!   The only lookups are the host name (only when the config does not set it)
//!   and, for the allowlist, the realpath check against `script_dirs`.
//! - `load(path)` reads the file and calls `parse`.
//! - Every default lives in the `DEFAULT_*` consts of `defaults.rs`, every
//!   maximum in `limits.rs`; nothing else in this module hard-codes either.
//! - Durations in the files are whole seconds.
//!
//! Layout: `raw` (the shared line reader and value parsers), one file per
//! format (`dispatcher`, `agent`, `scripts`), and `ipnet`, `rate`, `names`,
//! `host` for the values they share. This file is the facade: callers use the
//! re-exports below, never the submodules.

use std::fmt::{self, Write};
use std::path::{Path, PathBuf};

pub mod account;
mod agent;
mod defaults;
mod dispatcher;
mod host;
mod ipnet;
mod limits;
mod names;
mod rate;
mod raw;
mod scripts;

pub use agent::{AgentConf, Profile};
pub use defaults::{
    ASYNC_RUNS_DIR, CERT_STAGING_FILE, DEFAULT_AGENT_BIND, DEFAULT_AGENT_PORT,
    DEFAULT_AGENT_STATE_DIR, DEFAULT_API_BIND, DEFAULT_API_MAX_CHILDREN, DEFAULT_API_MAX_HOSTS,
    DEFAULT_API_PORT, DEFAULT_AUTH_HOOK_TIMEOUT_SECS, DEFAULT_CA_DIR,
    DEFAULT_CERT_CHECK_INTERVAL_SECS, DEFAULT_CERT_DAYS, DEFAULT_CERT_OVERLAP_DAYS,
    DEFAULT_CERT_RENEWAL_DAYS, DEFAULT_DISPATCHER_CERT_DAYS, DEFAULT_DISPATCHER_STATE_DIR,
    DEFAULT_MAX_CHILDREN, DEFAULT_MAX_HOSTS, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_PARALLEL,
    DEFAULT_PAIRING_BIND, DEFAULT_PAIRING_MAX_QUEUE, DEFAULT_PAIRING_RATE_LIMIT,
    DEFAULT_PAIRING_TIMEOUT_SECS, DEFAULT_PROFILE, DEFAULT_RATE_LIMIT_PROBE,
    DEFAULT_RATE_LIMIT_VOLUME, DEFAULT_READ_TIMEOUT_SECS, DEFAULT_REVOKED_SERIALS,
    DEFAULT_SCRIPT_TIMEOUT_SECS, DEFAULT_STDIN_TIMEOUT_SECS, DISPATCHER_COMMON_NAME,
    FALLBACK_DISPATCHER_ID, REGISTRY_DIR, ROTATION_FILE, TRUSTED_DISPATCHERS_FILE,
    TRUST_STAGING_CERTS_FILE, TRUST_STAGING_FILE,
};
pub use dispatcher::DispatcherConf;
pub use ipnet::IpNet;
pub use limits::{
    MAX_AUTH_HOOK_TIMEOUT_SECS, MAX_CERT_CHECK_INTERVAL_SECS, MAX_CERT_DAYS, MAX_CONCURRENT_SLOTS,
    MAX_CONF_FILE_BYTES, MAX_DISPATCHER_ID_CHARS, MAX_HOSTS_PER_CALL, MAX_MESSAGE_CHARS,
    MAX_OUTPUT_CAP_BYTES, MAX_PAIRING_TIMEOUT_SECS, MAX_PROFILES, MAX_PROFILE_CAPS,
    MAX_PROFILE_WRITABLE, MAX_RATE_BLOCK_SECS, MAX_RATE_WINDOW_SECS, MAX_READ_TIMEOUT_SECS,
    MAX_SCRIPT_DIRS, MAX_SCRIPT_NAME_CHARS, MAX_SCRIPT_TIMEOUT_SECS, MAX_STDIN_TIMEOUT_SECS,
};
pub use names::{sanitise_dispatcher_id, valid_agent_name, valid_script_name};
pub use rate::RateRule;
pub use scripts::{load_allowlist, parse_allowlist, within_script_dirs, Allowlist, ScriptEntry};

/// A configuration error, naming the file and (when one is to blame) the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// The file being read.
    pub path: PathBuf,
    /// 1-based line number, when the error is about one line.
    pub line: Option<usize>,
    /// Lower-case description naming the key and the bad value.
    pub message: String,
}

impl ConfError {
    fn at(path: &Path, line: usize, message: impl Into<String>) -> Self {
        ConfError {
            path: path.to_path_buf(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn file(path: &Path, message: impl Into<String>) -> Self {
        ConfError {
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }
}

/// `<file>:<line>: <message>`, or `<file>: <message>` when no line is to blame.
/// Always one line: the message is cut to [`MAX_MESSAGE_CHARS`] and control
/// characters (a stray CR, an escape sequence quoted from the file) are
/// written escaped.
impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display().to_string();
        write_escaped(f, &path)?;
        if let Some(n) = self.line {
            write!(f, ":{n}")?;
        }
        f.write_str(": ")?;
        write_escaped(f, &raw::clip(&self.message))
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

impl std::error::Error for ConfError {}

/// A line of a config file that is accepted but does nothing: an unknown key
/// (a typo such as `read_timout`), a key of the original that has no effect
/// here, or an ignored section. Loading never fails for one; `serve` and
/// every `ced` command log it, `cea self-check` and `ced check-config` fail
/// on an unknown key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfWarning {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number (the last line setting the key).
    pub line: usize,
    /// The key (or section name).
    pub key: String,
    /// What is wrong with it.
    pub kind: WarningKind,
}

/// Why a config line does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// No such key: most likely a typo.
    Unknown,
    /// A key the original accepted (or documented) that has no effect; the
    /// text says why.
    Inert(&'static str),
    /// A `[section]` whose keys are ignored.
    IgnoredSection,
}

impl ConfWarning {
    pub(crate) fn new(path: &Path, line: usize, key: &str, kind: WarningKind) -> Self {
        ConfWarning {
            path: path.to_path_buf(),
            line,
            key: key.to_string(),
            kind,
        }
    }

    /// Whether this is an unknown key (an error for the check commands).
    pub fn is_unknown(&self) -> bool {
        self.kind == WarningKind::Unknown
    }

    /// Logs it as `ACTION=config-warn FILE= LINE= KEY= MSG=`.
    pub fn log(&self) {
        crate::log::warn(
            "config-warn",
            &[
                ("FILE", &self.path.display().to_string()),
                ("LINE", &self.line.to_string()),
                ("KEY", &self.key),
                ("MSG", &self.message()),
            ],
        );
    }

    /// The message without the file and line.
    pub fn message(&self) -> String {
        let key = raw::clip(&self.key);
        match self.kind {
            WarningKind::Unknown => format!("unknown key '{key}' (ignored)"),
            WarningKind::Inert(why) => format!("'{key}' does nothing: {why}"),
            WarningKind::IgnoredSection => {
                format!("section [{key}] is not used; its keys are ignored")
            }
        }
    }
}

/// `<file>:<line>: <message>`, on one line like [`ConfError`].
impl fmt::Display for ConfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.path.display().to_string())?;
        write!(f, ":{}: ", self.line)?;
        write_escaped(f, &self.message())
    }
}

/// Helpers shared by the submodules' tests.
#[cfg(test)]
mod test_support {
    use std::fs;
    use std::path::PathBuf;
    use std::time::Duration;

    pub(super) fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A fresh directory under the temp dir, removed on drop.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("ctrl-exec-conf-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_is_one_bounded_line() {
        let e = ConfError {
            path: PathBuf::from("/c/a.conf"),
            line: Some(3),
            message: "malformed line: 'a\rb\u{1b}[31m\tc'".to_string(),
        };
        assert_eq!(
            e.to_string(),
            "/c/a.conf:3: malformed line: 'a\\rb\\u{1b}[31m\\tc'"
        );

        let long = format!("{} = 1", "k-".repeat(100_000));
        let e = DispatcherConf::parse(Path::new("/c/d.conf"), &long).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with("/c/d.conf:1: malformed line: 'k-k-"),
            "{shown}"
        );
        assert!(shown.ends_with("..."), "{shown}");
        assert!(shown.chars().count() <= "/c/d.conf:1: ".len() + MAX_MESSAGE_CHARS + 3);
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn unknown_and_inert_keys_are_warnings_naming_file_and_line() {
        let text = "cert = d.crt\nkey = d.key\nca = ca.crt\nread_timout = 5\nport = 7443\ncert_days = 30\n";
        let c = DispatcherConf::parse(Path::new("/c/ctrl-exec.conf"), text).unwrap();
        let shown: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            shown,
            [
                "/c/ctrl-exec.conf:4: unknown key 'read_timout' (ignored)",
                "/c/ctrl-exec.conf:5: 'port' does nothing: the original documented it but never read it; agent ports are in the registry",
            ]
        );
        assert!(c.warnings[0].is_unknown() && !c.warnings[1].is_unknown());
        // Every key of the reference's table, set at once: none is unknown.
        let all = "cert = a\nkey = b\nca = c\nauth_hook = h\nauth_hook_timeout = 10\napi_auth_default = deny\n\
                   auth_deny_generic = 0\napi_bind = 127.0.0.1\napi_port = 7445\napi_cert = x\napi_key = y\n\
                   api_max_children = 64\nread_timeout = 60\ntimeout = 60\nmax_parallel = 64\ncert_days = 365\n\
                   cert_renewal_days = 90\ncert_overlap_days = 30\ncert_check_interval = 14400\n\
                   dispatcher_id = d\nservice_user = ctrl-exec\npairing_timeout = 600\npairing_max_queue = 10\n\
                   pairing_rate_limit_volume = 10/60/300\npairing_rate_limit_disable = 0\nca_dir = /etc/ctrl-exec\n\
                   rotation_file = /var/lib/ctrl-exec/rotation.json\nregistry_dir = /var/lib/ctrl-exec/agents\n\
                   port = 7443\npairing_port = 7444\n";
        let c = DispatcherConf::parse(Path::new("/c/ctrl-exec.conf"), all).unwrap();
        assert!(
            c.warnings.iter().all(|w| !w.is_unknown()),
            "{:?}",
            c.warnings
        );
        // service_user, port and pairing_port do nothing here.
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);

        let agent = "port = 7443\ncert = a\nkey = b\nca = c\nhostname = h\nsandbox = 1\n\
                     disable_rate_limit = 1\nkey_type = rsa\n[tags]\nenv = prod\n[misc]\nx = 1\n";
        let a = AgentConf::parse(Path::new("/a/agent.conf"), agent).unwrap();
        assert_eq!(a.key_type, crate::pki::KeyType::Rsa(2048));
        let shown: Vec<String> = a.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            shown,
            [
                "/a/agent.conf:6: 'sandbox' does nothing: removed in ctrl-exec 0.10; use [profile NAME] sections",
                "/a/agent.conf:7: 'disable_rate_limit' does nothing: the key is 'rate_limit_disable' (the original ignored this spelling too)",
                "/a/agent.conf:11: section [misc] is not used; its keys are ignored",
            ]
        );
        assert!(
            a.rate_limit_volume.is_some(),
            "the misspelt key disables nothing"
        );
        let e = AgentConf::parse(
            Path::new("/a/agent.conf"),
            "port = 1\ncert = a\nkey = b\nca = c\nhostname = h\nkey_type = dsa\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/a/agent.conf:6: key_type must be one of"),
            "{e}"
        );
    }

    #[test]
    fn load_reports_unreadable_file() {
        let e = DispatcherConf::load(Path::new("/nonexistent/ctrl-exec.conf")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/ctrl-exec.conf: cannot read: "),
            "{e}"
        );
        assert!(AgentConf::load(Path::new("/nonexistent/a.conf")).is_err());
        assert!(load_allowlist(Path::new("/nonexistent/s.conf"), &[]).is_err());
    }
}
