//! `ctrl-exec.conf`, the dispatcher's and API server's config: one
//! `key = value` per line, lines starting with `#` or whitespace ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conf::host::system_hostname;
use crate::conf::raw::{clip, is_truthy, is_word, read, split_key_value, starts_truthy, Keys, Raw};
use crate::conf::{
    sanitise_dispatcher_id, ConfError, ConfWarning, RateRule, DEFAULT_API_BIND,
    DEFAULT_API_MAX_CHILDREN, DEFAULT_API_MAX_HOSTS, DEFAULT_API_PORT,
    DEFAULT_AUTH_HOOK_TIMEOUT_SECS, DEFAULT_CA_DIR, DEFAULT_CERT_CHECK_INTERVAL_SECS,
    DEFAULT_CERT_DAYS, DEFAULT_CERT_OVERLAP_DAYS, DEFAULT_CERT_RENEWAL_DAYS,
    DEFAULT_DISPATCHER_CERT_DAYS, DEFAULT_DISPATCHER_STATE_DIR, DEFAULT_MAX_HOSTS,
    DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_PARALLEL, DEFAULT_PAIRING_BIND,
    DEFAULT_PAIRING_MAX_QUEUE, DEFAULT_PAIRING_RATE_LIMIT, DEFAULT_PAIRING_TIMEOUT_SECS,
    DEFAULT_READ_TIMEOUT_SECS, MAX_AUTH_HOOK_TIMEOUT_SECS, MAX_CERT_CHECK_INTERVAL_SECS,
    MAX_CERT_DAYS, MAX_CONCURRENT_SLOTS, MAX_HOSTS_PER_CALL, MAX_OUTPUT_CAP_BYTES,
    MAX_PAIRING_TIMEOUT_SECS, MAX_READ_TIMEOUT_SECS, REGISTRY_DIR, ROTATION_FILE,
};

/// Every key of ctrl-exec.conf: those read, and those of the original that
/// do nothing here.
static KEYS: Keys = Keys {
    read: &[
        "cert",
        "key",
        "ca",
        "ca_dir",
        "state_dir",
        "registry_dir",
        "auth_hook",
        "auth_hook_timeout",
        "api_auth_default",
        "auth_deny_generic",
        "api_bind",
        "api_port",
        "api_cert",
        "api_key",
        "api_max_children",
        "read_timeout",
        "timeout",
        "max_parallel",
        "max_hosts",
        "api_max_hosts",
        "max_output_bytes",
        "cert_days",
        "dispatcher_cert_days",
        "cert_renewal_days",
        "cert_overlap_days",
        "cert_check_interval",
        "rotation_file",
        "dispatcher_id",
        "pairing_bind",
        "pairing_timeout",
        "pairing_max_queue",
        "pairing_rate_limit_volume",
        "pairing_rate_limit_disable",
        "syslog",
    ],
    inert: &[
        (
            "service_user",
            "keys are written by the user running ced, mode 0600; chown them if another user needs them",
        ),
        (
            "port",
            "the original documented it but never read it; agent ports are in the registry",
        ),
        (
            "pairing_port",
            "the original documented it but never read it; use 'ced pairing-mode --port'",
        ),
    ],
};

/// The dispatcher's (and API server's) `ctrl-exec.conf`.
///
/// Relative paths in the file are resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConf {
    /// Dispatcher certificate (required, `cert`).
    pub cert: PathBuf,
    /// Dispatcher private key (required, `key`).
    pub key: PathBuf,
    /// CA certificate used to verify agents (required, `ca`).
    pub ca: PathBuf,
    /// CA directory (`ca_dir`, default [`DEFAULT_CA_DIR`]).
    pub ca_dir: PathBuf,
    /// State directory (`state_dir`, default [`DEFAULT_DISPATCHER_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// Agent registry directory (`registry_dir`, default `<state_dir>/agents`).
    pub registry_dir: PathBuf,
    /// Auth hook program (`auth_hook`), unset = no hook.
    pub auth_hook: Option<PathBuf>,
    /// Hook time limit (`auth_hook_timeout`, default 10 s). Invariant: 1 s to
    /// [`MAX_AUTH_HOOK_TIMEOUT_SECS`].
    pub auth_hook_timeout: Duration,
    /// API allows requests when no hook is set: true only for `api_auth_default = allow`.
    pub api_auth_default_allow: bool,
    /// Generic 403 bodies (`auth_deny_generic` starting with 1/y/Y).
    pub auth_deny_generic: bool,
    /// API bind address (`api_bind`, default [`DEFAULT_API_BIND`]).
    pub api_bind: String,
    /// API port (`api_port`, default 7445; 0 = ephemeral).
    pub api_port: u16,
    /// API TLS certificate (`api_cert`).
    pub api_cert: Option<PathBuf>,
    /// API TLS key (`api_key`).
    pub api_key: Option<PathBuf>,
    /// API concurrent handler cap (`api_max_children`, default 64). Invariant: 1 to
    /// [`MAX_CONCURRENT_SLOTS`].
    pub api_max_children: usize,
    /// Agent reply timeout (`read_timeout`, or the deprecated `timeout`; default 60 s).
    /// Invariant: 1 s to [`MAX_READ_TIMEOUT_SECS`].
    pub read_timeout: Duration,
    /// Fan-out worker cap (`max_parallel`, default 64). Invariant: 1 to
    /// [`MAX_CONCURRENT_SLOTS`].
    pub max_parallel: usize,
    /// Most hosts one `ced` call may address (`max_hosts`, default
    /// 10000). Invariant: 1 to [`MAX_HOSTS_PER_CALL`].
    pub max_hosts: usize,
    /// Most hosts one API request may address (`api_max_hosts`, default 500,
    /// the original's fixed limit). Invariant: 1 to `max_hosts`.
    pub api_max_hosts: usize,
    /// The largest `max_output_bytes` of the agents this dispatcher drives
    /// (`max_output_bytes`, default 1 MiB, the agents' default): agent
    /// replies are read up to what two streams of that size can take as
    /// JSON, and no further. Invariant: 1 to [`MAX_OUTPUT_CAP_BYTES`].
    pub max_output_bytes: usize,
    /// Certificate lifetime at renewal in days (`cert_days`, default 365).
    /// Invariant: 1 to [`MAX_CERT_DAYS`].
    pub cert_days: u32,
    /// Lifetime in days of the dispatcher's own certificate at setup and
    /// rotation (`dispatcher_cert_days`, default 825). Invariant: 1 to
    /// [`MAX_CERT_DAYS`] and more than `cert_renewal_days`, so a fresh
    /// certificate is never due for rotation at once.
    pub dispatcher_cert_days: u32,
    /// Rotate the dispatcher certificate when at most this many days are left
    /// (`cert_renewal_days`, default 90). Invariant: 1 to [`MAX_CERT_DAYS`].
    pub cert_renewal_days: u32,
    /// Days after a rotation during which the previous serial stays trusted
    /// and agents that missed the announcement are brought up to date with it
    /// (`cert_overlap_days`, default 30; 0 retires it at the next
    /// `ced maintain`). Invariant: 0 to [`MAX_CERT_DAYS`].
    pub cert_overlap_days: u32,
    /// How often a running pairing mode checks the dispatcher certificate
    /// (`cert_check_interval`, default 14 400 s; it also checks at start).
    /// Invariant: 1 s to [`MAX_CERT_CHECK_INTERVAL_SECS`].
    pub cert_check_interval: Duration,
    /// Rotation state (`rotation_file`, default `<state_dir>/rotation.json`).
    pub rotation_file: PathBuf,
    /// Sanitised identity sent to agents (`dispatcher_id`, default the host name).
    /// Invariant: matches `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
    pub dispatcher_id: String,
    /// Pairing listener address (`pairing_bind`, default [`DEFAULT_PAIRING_BIND`]).
    pub pairing_bind: String,
    /// Pairing session length in seconds (`pairing_timeout`). Invariant: 1-600.
    pub pairing_timeout: u64,
    /// Pending pairing requests held (`pairing_max_queue`, default 10). Invariant: >= 1.
    pub pairing_max_queue: usize,
    /// Pairing-port volume rule; `None` when disabled or its limit is 0.
    /// Invariant: window and block within [`MAX_RATE_WINDOW_SECS`](crate::conf::MAX_RATE_WINDOW_SECS) and
    /// [`MAX_RATE_BLOCK_SECS`](crate::conf::MAX_RATE_BLOCK_SECS).
    pub pairing_rate_limit: Option<RateRule>,
    /// Log to syslog instead of stderr (`syslog`, truthy 1/y/yes/true/on).
    pub syslog: bool,
    /// Keys that do nothing (unknown, or inert here), in line order.
    pub warnings: Vec<ConfWarning>,
}

impl DispatcherConf {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        Self::parse(path, &read(path)?)
    }

    /// Parses the text of `path`. No file I/O, except that the system host name
    /// is read when `dispatcher_id` is not set.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfError> {
        Self::parse_with(path, text, &system_hostname)
    }

    fn parse_with(
        path: &Path,
        text: &str,
        hostname: &dyn Fn() -> String,
    ) -> Result<Self, ConfError> {
        let mut raw = Raw::new(path, &KEYS);
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            // The original ignores lines starting with `#` or any whitespace.
            if line.is_empty() || line.starts_with('#') || line.starts_with(char::is_whitespace) {
                continue;
            }
            match split_key_value(line) {
                Some((k, v)) if is_word(k) => raw.set(k, v, n),
                _ => {
                    return Err(ConfError::at(
                        path,
                        n,
                        format!("malformed line: '{}'", clip(line)),
                    ))
                }
            }
        }

        let state_dir = raw.path_or("state_dir", DEFAULT_DISPATCHER_STATE_DIR);
        let registry_dir = match raw.path("registry_dir") {
            Some(p) => p,
            None => state_dir.join(REGISTRY_DIR),
        };
        let max_hosts = raw.num("max_hosts", DEFAULT_MAX_HOSTS, 1, MAX_HOSTS_PER_CALL)?;
        let rotation_file = match raw.path("rotation_file") {
            Some(p) => p,
            None => state_dir.join(ROTATION_FILE),
        };
        let cert_renewal_days = raw.num(
            "cert_renewal_days",
            DEFAULT_CERT_RENEWAL_DAYS,
            1,
            MAX_CERT_DAYS,
        )?;
        let dispatcher_cert_days = raw.num(
            "dispatcher_cert_days",
            DEFAULT_DISPATCHER_CERT_DAYS,
            1,
            MAX_CERT_DAYS,
        )?;
        if dispatcher_cert_days <= cert_renewal_days {
            let line = raw
                .get_at("cert_renewal_days")
                .or_else(|| raw.get_at("dispatcher_cert_days"))
                .map(|(_, n)| n);
            let message = format!(
                "dispatcher_cert_days ({dispatcher_cert_days}) must be more than cert_renewal_days ({cert_renewal_days}), or every check would rotate the dispatcher certificate again"
            );
            return Err(match line {
                Some(n) => ConfError::at(path, n, message),
                None => ConfError::file(path, message),
            });
        }
        let read_timeout = if raw.get("read_timeout").is_some() {
            raw.secs(
                "read_timeout",
                DEFAULT_READ_TIMEOUT_SECS,
                1,
                MAX_READ_TIMEOUT_SECS,
            )?
        } else {
            raw.secs(
                "timeout",
                DEFAULT_READ_TIMEOUT_SECS,
                1,
                MAX_READ_TIMEOUT_SECS,
            )?
        };
        let dispatcher_id = sanitise_dispatcher_id(&match raw.get("dispatcher_id") {
            Some(v) => v.to_string(),
            None => hostname(),
        });
        let pairing_rate_limit = if raw
            .get("pairing_rate_limit_disable")
            .is_some_and(starts_truthy)
        {
            None
        } else {
            raw.rule("pairing_rate_limit_volume", DEFAULT_PAIRING_RATE_LIMIT)?
        };

        Ok(DispatcherConf {
            cert: raw.required_path("cert")?,
            key: raw.required_path("key")?,
            ca: raw.required_path("ca")?,
            ca_dir: raw.path_or("ca_dir", DEFAULT_CA_DIR),
            registry_dir,
            state_dir,
            auth_hook: raw.path("auth_hook"),
            auth_hook_timeout: raw.secs(
                "auth_hook_timeout",
                DEFAULT_AUTH_HOOK_TIMEOUT_SECS,
                1,
                MAX_AUTH_HOOK_TIMEOUT_SECS,
            )?,
            api_auth_default_allow: raw.get("api_auth_default") == Some("allow"),
            auth_deny_generic: raw.get("auth_deny_generic").is_some_and(starts_truthy),
            api_bind: raw.get("api_bind").unwrap_or(DEFAULT_API_BIND).to_string(),
            api_port: raw.num("api_port", DEFAULT_API_PORT, 0, u16::MAX)?,
            api_cert: raw.path("api_cert"),
            api_key: raw.path("api_key"),
            api_max_children: raw.num(
                "api_max_children",
                DEFAULT_API_MAX_CHILDREN,
                1,
                MAX_CONCURRENT_SLOTS,
            )?,
            read_timeout,
            max_parallel: raw.num(
                "max_parallel",
                DEFAULT_MAX_PARALLEL,
                1,
                MAX_CONCURRENT_SLOTS,
            )?,
            max_hosts,
            api_max_hosts: raw.num(
                "api_max_hosts",
                DEFAULT_API_MAX_HOSTS.min(max_hosts),
                1,
                max_hosts,
            )?,
            max_output_bytes: raw.num(
                "max_output_bytes",
                DEFAULT_MAX_OUTPUT_BYTES,
                1,
                MAX_OUTPUT_CAP_BYTES,
            )?,
            cert_days: raw.num("cert_days", DEFAULT_CERT_DAYS, 1, MAX_CERT_DAYS)?,
            dispatcher_cert_days,
            cert_renewal_days,
            cert_overlap_days: raw.num(
                "cert_overlap_days",
                DEFAULT_CERT_OVERLAP_DAYS,
                0,
                MAX_CERT_DAYS,
            )?,
            cert_check_interval: raw.secs(
                "cert_check_interval",
                DEFAULT_CERT_CHECK_INTERVAL_SECS,
                1,
                MAX_CERT_CHECK_INTERVAL_SECS,
            )?,
            rotation_file,
            dispatcher_id,
            pairing_bind: raw
                .get("pairing_bind")
                .unwrap_or(DEFAULT_PAIRING_BIND)
                .to_string(),
            pairing_timeout: raw.num(
                "pairing_timeout",
                DEFAULT_PAIRING_TIMEOUT_SECS,
                1,
                MAX_PAIRING_TIMEOUT_SECS,
            )?,
            pairing_max_queue: raw.num(
                "pairing_max_queue",
                DEFAULT_PAIRING_MAX_QUEUE,
                1,
                usize::MAX,
            )?,
            pairing_rate_limit,
            syslog: raw.get("syslog").is_some_and(is_truthy),
            warnings: raw.warnings(),
        })
    }

    /// Pairing queue directory, `<state_dir>/pairing`.
    pub fn pairing_dir(&self) -> PathBuf {
        self.state_dir.join("pairing")
    }

    /// Lock directory, `<state_dir>/locks`.
    pub fn locks_dir(&self) -> PathBuf {
        self.state_dir.join("locks")
    }

    /// Run store directory, `<state_dir>/runs`.
    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir.join("runs")
    }

    /// Revoked agent serials and keys, `<state_dir>/revoked-agents`
    /// (`ced unpair --revoke`; see `control::revoked`).
    pub fn revoked_agents_path(&self) -> PathBuf {
        self.state_dir.join("revoked-agents")
    }

    /// The previous dispatcher certificate during a rotation's overlap,
    /// `<cert>.previous` (agents that missed the announcement still trust
    /// it; removed when its serial is retired).
    pub fn previous_cert_path(&self) -> PathBuf {
        with_suffix(&self.cert, ".previous")
    }

    /// The previous dispatcher key, `<key>.previous`.
    pub fn previous_key_path(&self) -> PathBuf {
        with_suffix(&self.key, ".previous")
    }

    /// The next dispatcher certificate while a rotation installs it,
    /// `<cert>.next`.
    pub fn next_cert_path(&self) -> PathBuf {
        with_suffix(&self.cert, ".next")
    }

    /// The next dispatcher key, `<key>.next`.
    pub fn next_key_path(&self) -> PathBuf {
        with_suffix(&self.key, ".next")
    }

    /// Lock serialising rotations, `<state_dir>/rotation.lock`.
    pub fn rotation_lock_path(&self) -> PathBuf {
        self.state_dir.join("rotation.lock")
    }

    /// Pid file of a running pairing mode, `<state_dir>/pairing-mode.pid`.
    pub fn pairing_pidfile(&self) -> PathBuf {
        self.state_dir.join("pairing-mode.pid")
    }

    /// CA certificate, `<ca_dir>/ca.crt`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca_dir.join("ca.crt")
    }

    /// CA private key, `<ca_dir>/ca.key`.
    pub fn ca_key_path(&self) -> PathBuf {
        self.ca_dir.join("ca.key")
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::test_support::secs;

    const DCONF: &str = "/etc/ctrl-exec/ctrl-exec.conf";
    const DBASE: &str = "cert = d.crt\nkey = /k/d.key\nca = ca.crt\n";

    fn dparse(text: &str) -> Result<DispatcherConf, ConfError> {
        DispatcherConf::parse_with(Path::new(DCONF), text, &|| "test host!".to_string())
    }

    #[test]
    fn dispatcher_defaults() {
        let c = dparse(DBASE).unwrap();
        assert_eq!(c.cert, PathBuf::from("/etc/ctrl-exec/d.crt"));
        assert_eq!(c.key, PathBuf::from("/k/d.key"));
        assert_eq!(c.ca, PathBuf::from("/etc/ctrl-exec/ca.crt"));
        assert_eq!(c.ca_dir, PathBuf::from("/etc/ctrl-exec"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/ctrl-exec"));
        assert_eq!(c.registry_dir, PathBuf::from("/var/lib/ctrl-exec/agents"));
        assert_eq!(c.auth_hook, None);
        assert_eq!(c.auth_hook_timeout, secs(10));
        assert!(!c.api_auth_default_allow);
        assert!(!c.auth_deny_generic);
        assert_eq!(c.api_bind, "127.0.0.1");
        assert_eq!(c.api_port, 7445);
        assert_eq!((c.api_cert.clone(), c.api_key.clone()), (None, None));
        assert_eq!(c.api_max_children, 64);
        assert_eq!(c.read_timeout, secs(60));
        assert_eq!(c.max_parallel, 64);
        assert_eq!(c.cert_days, 365);
        assert_eq!(c.dispatcher_cert_days, 825);
        assert_eq!(c.cert_renewal_days, 90);
        assert_eq!(c.cert_overlap_days, 30);
        assert_eq!(c.cert_check_interval, secs(14_400));
        assert_eq!(
            c.rotation_file,
            PathBuf::from("/var/lib/ctrl-exec/rotation.json")
        );
        assert_eq!(c.dispatcher_id, "test-host-");
        assert_eq!(c.pairing_bind, "0.0.0.0");
        assert_eq!(c.pairing_timeout, 600);
        assert_eq!(c.pairing_max_queue, 10);
        assert_eq!(c.pairing_rate_limit, Some(RateRule::secs(10, 60, 300)));
        assert!(!c.syslog);
        assert_eq!(c.pairing_dir(), PathBuf::from("/var/lib/ctrl-exec/pairing"));
        assert_eq!(c.locks_dir(), PathBuf::from("/var/lib/ctrl-exec/locks"));
        assert_eq!(c.runs_dir(), PathBuf::from("/var/lib/ctrl-exec/runs"));
        assert_eq!(
            c.pairing_pidfile(),
            PathBuf::from("/var/lib/ctrl-exec/pairing-mode.pid")
        );
        assert_eq!(c.ca_cert_path(), PathBuf::from("/etc/ctrl-exec/ca.crt"));
        assert_eq!(c.ca_key_path(), PathBuf::from("/etc/ctrl-exec/ca.key"));
        assert_eq!(
            c.previous_cert_path(),
            PathBuf::from("/etc/ctrl-exec/d.crt.previous")
        );
        assert_eq!(c.next_key_path(), PathBuf::from("/k/d.key.next"));
    }

    #[test]
    fn dispatcher_keys_override_defaults() {
        let text = format!(
            "{DBASE}state_dir = /s\nca_dir = cadir\nauth_hook = hook\nauth_hook_timeout = 3\n\
             api_auth_default = allow\nauth_deny_generic = Yes\napi_bind = 0.0.0.0\napi_port = 0\n\
             api_cert = a.crt\napi_key = /a.key\napi_max_children = 1\ntimeout = 5\nmax_parallel = 2\n\
             cert_days = 30\ndispatcher_id = --ced.01\npairing_bind = ::\npairing_timeout = 1\npairing_max_queue = 3\n\
             pairing_rate_limit_volume = 5/10/20\nsyslog = on\nunknown_key = whatever\n"
        );
        let c = dparse(&text).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/s"));
        assert_eq!(c.registry_dir, PathBuf::from("/s/agents"));
        assert_eq!(c.ca_dir, PathBuf::from("/etc/ctrl-exec/cadir"));
        assert_eq!(c.auth_hook, Some(PathBuf::from("/etc/ctrl-exec/hook")));
        assert_eq!(c.auth_hook_timeout, secs(3));
        assert!(c.api_auth_default_allow && c.auth_deny_generic && c.syslog);
        assert_eq!((c.api_bind.as_str(), c.api_port), ("0.0.0.0", 0));
        assert_eq!(c.api_cert, Some(PathBuf::from("/etc/ctrl-exec/a.crt")));
        assert_eq!(c.api_key, Some(PathBuf::from("/a.key")));
        assert_eq!(
            (c.api_max_children, c.max_parallel, c.cert_days),
            (1, 2, 30)
        );
        assert_eq!(c.read_timeout, secs(5));
        assert_eq!(c.dispatcher_id, "ced.01");
        assert_eq!(c.pairing_bind, "::");
        assert_eq!((c.pairing_timeout, c.pairing_max_queue), (1, 3));
        assert_eq!(c.pairing_rate_limit, Some(RateRule::secs(5, 10, 20)));
    }

    #[test]
    fn dispatcher_rotation_keys() {
        let text = format!(
            "{DBASE}state_dir = /s\ncert_renewal_days = 10\ncert_overlap_days = 0\n\
             dispatcher_cert_days = 11\ncert_check_interval = 60\n"
        );
        let c = dparse(&text).unwrap();
        assert_eq!((c.cert_renewal_days, c.cert_overlap_days), (10, 0));
        assert_eq!(c.dispatcher_cert_days, 11);
        assert_eq!(c.cert_check_interval, secs(60));
        assert_eq!(c.rotation_file, PathBuf::from("/s/rotation.json"));
        let c = dparse(&format!("{DBASE}rotation_file = r.json\n")).unwrap();
        assert_eq!(c.rotation_file, PathBuf::from("/etc/ctrl-exec/r.json"));
    }

    #[test]
    fn dispatcher_cert_must_outlive_the_renewal_threshold() {
        for (lines, line) in [
            ("cert_renewal_days = 825\n", Some(4)),
            ("dispatcher_cert_days = 90\n", Some(4)),
            (
                "dispatcher_cert_days = 30\ncert_renewal_days = 30\n",
                Some(5),
            ),
        ] {
            let e = dparse(&format!("{DBASE}{lines}")).unwrap_err();
            assert_eq!(e.line, line, "{lines}");
            assert!(
                e.to_string()
                    .contains("must be more than cert_renewal_days"),
                "{e}"
            );
        }
    }

    #[test]
    fn dispatcher_read_timeout_beats_deprecated_alias() {
        let c = dparse(&format!("{DBASE}read_timeout = 7\ntimeout = 5\n")).unwrap();
        assert_eq!(c.read_timeout, secs(7));
        let c = dparse(&format!("timeout = 5\n{DBASE}read_timeout = 9\n")).unwrap();
        assert_eq!(c.read_timeout, secs(9));
    }

    #[test]
    fn dispatcher_flags() {
        let cases: &[(&str, bool, bool, bool)] = &[
            // line, api_auth_default_allow, auth_deny_generic, pairing rate limit disabled
            ("api_auth_default = Allow", false, false, false),
            ("api_auth_default = deny", false, false, false),
            ("auth_deny_generic = 1", false, true, false),
            ("auth_deny_generic = no", false, false, false),
            ("pairing_rate_limit_disable = yes", false, false, true),
            ("pairing_rate_limit_disable = 0", false, false, false),
            ("pairing_rate_limit_volume = 0/60/300", false, false, true),
        ];
        for &(line, allow, generic, disabled) in cases {
            let c = dparse(&format!("{DBASE}{line}\n")).unwrap();
            assert_eq!(c.api_auth_default_allow, allow, "{line}");
            assert_eq!(c.auth_deny_generic, generic, "{line}");
            assert_eq!(c.pairing_rate_limit.is_none(), disabled, "{line}");
        }
    }

    #[test]
    fn dispatcher_comments_whitespace_and_duplicates() {
        let text = "# comment\n\n   \n  indented = ignored\n\tcert = nope\ncert = first\nkey = k\nca = c\ncert=second\n";
        let c = dparse(text).unwrap();
        assert_eq!(c.cert, PathBuf::from("/etc/ctrl-exec/second"));
    }

    #[test]
    fn dispatcher_errors() {
        let cases: &[(&str, &str)] = &[
            ("api_port = x", "api_port must be a number 0-65535, got 'x'"),
            (
                "api_port = 65536",
                "api_port must be a number 0-65535, got '65536'",
            ),
            ("api_port = -1", "got '-1'"),
            (
                "api_max_children = 0",
                "api_max_children must be a number 1-1048576, got '0'",
            ),
            (
                "max_parallel = 0",
                "max_parallel must be a number 1-1048576",
            ),
            (
                "read_timeout = soon",
                "read_timeout must be a number 1-604800, got 'soon'",
            ),
            ("auth_hook_timeout = 0", "auth_hook_timeout must be"),
            ("cert_days = 1.5", "cert_days must be"),
            (
                "pairing_timeout = 0",
                "pairing_timeout must be a number 1-600, got '0'",
            ),
            (
                "pairing_timeout = 601",
                "pairing_timeout must be a number 1-600, got '601'",
            ),
            ("pairing_max_queue = many", "pairing_max_queue must be"),
            (
                "pairing_rate_limit_volume = 10/60",
                "pairing_rate_limit_volume must be limit/window/block",
            ),
            (
                "this is not a key line",
                "malformed line: 'this is not a key line'",
            ),
            ("bad-key = 1", "malformed line: 'bad-key = 1'"),
            ("empty =", "malformed line: 'empty ='"),
        ];
        for &(line, want) in cases {
            let e = dparse(&format!("{DBASE}{line}\n")).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.line, Some(4), "{line}");
            assert!(msg.starts_with(&format!("{DCONF}:4: ")), "{msg}");
            assert!(msg.contains(want), "{line}: {msg}");
        }
    }

    #[test]
    fn dispatcher_required_keys() {
        for (text, key) in [
            ("key = k\nca = c\n", "cert"),
            ("cert = c\nca = c\n", "key"),
            ("cert = c\nkey = k\n", "ca"),
        ] {
            let e = dparse(text).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{DCONF}: missing required key '{key}'")
            );
        }
    }
}
