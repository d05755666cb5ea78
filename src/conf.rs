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
//! - Every default lives in the `DEFAULT_*` consts below; nothing else in this
//!   module hard-codes a default.
//! - Durations in the files are whole seconds.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Defaults: the one home for every value a config key falls back to.
// ---------------------------------------------------------------------------

/// Agent listen port used in the shipped example (`port` itself is required).
pub const DEFAULT_AGENT_PORT: u16 = 7443;
/// Agent bind address: all IPv4 interfaces, as the original listened.
pub const DEFAULT_AGENT_BIND: &str = "0.0.0.0";
/// Agent state directory (systemd `StateDirectory`).
pub const DEFAULT_AGENT_STATE_DIR: &str = "/var/lib/ctrl-exec-agent";
/// File name of the trusted-dispatcher map inside the agent state directory.
pub const TRUSTED_DISPATCHERS_FILE: &str = "ctrl-exec-dispatchers";
/// Directory name of the async result store inside the agent state directory.
pub const ASYNC_RUNS_DIR: &str = "runs";
/// File name of the renewed-certificate staging file in the agent state directory.
pub const CERT_STAGING_FILE: &str = "agent.crt.staged";
/// Revocation list read by the agent; a missing file means none revoked.
pub const DEFAULT_REVOKED_SERIALS: &str = "/etc/ctrl-exec-agent/revoked-serials";
/// Seconds an auth hook may run before it is killed and the request denied.
pub const DEFAULT_AUTH_HOOK_TIMEOUT_SECS: u64 = 10;
/// Seconds the agent spends writing the context JSON to a script's stdin.
pub const DEFAULT_STDIN_TIMEOUT_SECS: u64 = 10;
/// Agent concurrent handler cap (503 / close beyond it).
pub const DEFAULT_MAX_CHILDREN: usize = 256;
/// Seconds a script may run before its process group is killed. The original
/// had no limit; a hung script would hold a handler slot for ever.
pub const DEFAULT_SCRIPT_TIMEOUT_SECS: u64 = 600;
/// Bytes of stdout (and, separately, stderr) kept per run; the rest is drained
/// and discarded so the child never blocks and the agent's memory stays flat.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Agent volume rule: more than 10 connections a minute from one IP blocks it
/// for five minutes.
pub const DEFAULT_RATE_LIMIT_VOLUME: RateRule = RateRule::secs(10, 60, 300);
/// Agent probe rule: 3 failed handshakes in ten minutes block the IP an hour.
pub const DEFAULT_RATE_LIMIT_PROBE: RateRule = RateRule::secs(3, 600, 3600);
/// Profile a script runs under when scripts.conf names none.
pub const DEFAULT_PROFILE: &str = "default";

/// Dispatcher CA directory (`ca.crt`, `ca.key`, serial state).
pub const DEFAULT_CA_DIR: &str = "/etc/ctrl-exec";
/// Dispatcher state directory (registry, pairing queue, locks, runs).
pub const DEFAULT_DISPATCHER_STATE_DIR: &str = "/var/lib/ctrl-exec";
/// Registry directory name inside the dispatcher state directory.
pub const REGISTRY_DIR: &str = "agents";
/// API bind address: loopback only unless the operator opens it.
pub const DEFAULT_API_BIND: &str = "127.0.0.1";
/// Pairing listener address: all interfaces, since agents connect from the fleet.
pub const DEFAULT_PAIRING_BIND: &str = "0.0.0.0";
/// API port.
pub const DEFAULT_API_PORT: u16 = 7445;
/// API concurrent handler cap (503 beyond it).
pub const DEFAULT_API_MAX_CHILDREN: usize = 64;
/// Seconds the dispatcher waits on an agent's reply.
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 60;
/// Concurrent per-host workers in one fan-out.
pub const DEFAULT_MAX_PARALLEL: usize = 64;
/// Lifetime in days of certificates re-signed at renewal.
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// Pairing session length in seconds; also the maximum allowed.
pub const DEFAULT_PAIRING_TIMEOUT_SECS: u64 = 600;
/// Upper bound of `pairing_timeout`: pairing mode is meant to be brief.
pub const MAX_PAIRING_TIMEOUT_SECS: u64 = 600;
/// Pending pairing requests held at once.
pub const DEFAULT_PAIRING_MAX_QUEUE: usize = 10;
/// Pairing-port volume rule (same shape and default as the agent's).
pub const DEFAULT_PAIRING_RATE_LIMIT: RateRule = RateRule::secs(10, 60, 300);
/// `dispatcher_id` when the configured or host name sanitises to nothing.
pub const FALLBACK_DISPATCHER_ID: &str = "dispatcher";
/// Maximum length of a `dispatcher_id` (it must fit the trusted map's id rule).
pub const MAX_DISPATCHER_ID_CHARS: usize = 64;
/// Maximum length of a script name (a file-name component on most systems).
pub const MAX_SCRIPT_NAME_CHARS: usize = 255;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

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

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "{}:{}: {}", self.path.display(), n, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfError {}

// ---------------------------------------------------------------------------
// ctrl-exec.conf
// ---------------------------------------------------------------------------

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
    /// Hook time limit (`auth_hook_timeout`, default 10 s, at least 1 s).
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
    /// API concurrent handler cap (`api_max_children`, default 64). Invariant: >= 1.
    pub api_max_children: usize,
    /// Agent reply timeout (`read_timeout`, or the deprecated `timeout`; default 60 s).
    pub read_timeout: Duration,
    /// Fan-out worker cap (`max_parallel`, default 64). Invariant: >= 1.
    pub max_parallel: usize,
    /// Certificate lifetime at renewal in days (`cert_days`, default 365). Invariant: >= 1.
    pub cert_days: u32,
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
    pub pairing_rate_limit: Option<RateRule>,
    /// Log to syslog instead of stderr (`syslog`, truthy 1/y/yes/true/on).
    pub syslog: bool,
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
        let mut raw = Raw::new(path);
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            // The original ignores lines starting with `#` or any whitespace.
            if line.is_empty() || line.starts_with('#') || line.starts_with(char::is_whitespace) {
                continue;
            }
            match split_key_value(line) {
                Some((k, v)) if is_word(k) => raw.set(k, v, n),
                _ => return Err(ConfError::at(path, n, format!("malformed line: '{line}'"))),
            }
        }

        let state_dir = raw.path_or("state_dir", DEFAULT_DISPATCHER_STATE_DIR);
        let registry_dir = match raw.path("registry_dir") {
            Some(p) => p,
            None => state_dir.join(REGISTRY_DIR),
        };
        let read_timeout = if raw.get("read_timeout").is_some() {
            raw.secs("read_timeout", DEFAULT_READ_TIMEOUT_SECS, 1)?
        } else {
            raw.secs("timeout", DEFAULT_READ_TIMEOUT_SECS, 1)?
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
            auth_hook_timeout: raw.secs("auth_hook_timeout", DEFAULT_AUTH_HOOK_TIMEOUT_SECS, 1)?,
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
                usize::MAX,
            )?,
            read_timeout,
            max_parallel: raw.num("max_parallel", DEFAULT_MAX_PARALLEL, 1, usize::MAX)?,
            cert_days: raw.num("cert_days", DEFAULT_CERT_DAYS, 1, u32::MAX)?,
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

/// Sanitises a dispatcher id (protocol.md 5.6): characters outside
/// `[A-Za-z0-9._-]` become `-`, leading non-alphanumerics are stripped, the
/// result is cut to 64 characters, and an empty result becomes `dispatcher`.
pub fn sanitise_dispatcher_id(s: &str) -> String {
    let replaced: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id: String = replaced
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(MAX_DISPATCHER_ID_CHARS)
        .collect();
    if id.is_empty() {
        FALLBACK_DISPATCHER_ID.to_string()
    } else {
        id
    }
}

// ---------------------------------------------------------------------------
// Rate rules and IP networks
// ---------------------------------------------------------------------------

/// A rate-limit rule: `limit` events within `window` block the peer for `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    /// Event count that triggers the block.
    pub limit: u32,
    /// Sliding window the events are counted in.
    pub window: Duration,
    /// How long a triggered peer stays blocked.
    pub block: Duration,
}

impl RateRule {
    const fn secs(limit: u32, window: u64, block: u64) -> Self {
        RateRule {
            limit,
            window: Duration::from_secs(window),
            block: Duration::from_secs(block),
        }
    }

    /// Parses `limit/window/block` (whole numbers, window and block in seconds).
    pub fn parse(s: &str) -> Option<RateRule> {
        let mut parts = s.trim().split('/').map(str::trim);
        let limit = parse_uint(parts.next()?)?;
        let window = parse_uint(parts.next()?)?;
        let block = parse_uint(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(RateRule::secs(limit, window, block))
    }
}

/// An IP network from `allowed_ips`: an address and a prefix length
/// (32 or 128 for a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Address as written (host bits are ignored when matching).
    pub addr: IpAddr,
    /// Prefix length. Invariant: <= 32 for IPv4, <= 128 for IPv6.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `a.b.c.d`, `a.b.c.d/N` (0-32), an IPv6 address or `addr/N`
    /// (0-128). IPv4 octets with leading zeros (`010.0.0.1`) read as decimal,
    /// as the original canonicalised them.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = match parse_ipv4_lenient(addr) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => parse_uint::<u8>(p).filter(|&p| p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 peer
    /// (`::ffff:10.0.0.1`) is compared as the IPv4 address it carries, and an
    /// IPv4 peer against an IPv6 entry as its mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => v4_match(net, peer, self.prefix),
            (IpAddr::V4(net), IpAddr::V6(peer)) => peer
                .to_ipv4_mapped()
                .is_some_and(|p| v4_match(net, p, self.prefix)),
            (IpAddr::V6(net), IpAddr::V6(peer)) => v6_match(net, peer, self.prefix),
            (IpAddr::V6(net), IpAddr::V4(peer)) => {
                v6_match(net, peer.to_ipv6_mapped(), self.prefix)
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn v4_match(net: Ipv4Addr, peer: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(net) & mask == u32::from(peer) & mask
}

fn v6_match(net: Ipv6Addr, peer: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(net) & mask == u128::from(peer) & mask
}

/// Dotted quad whose octets may carry leading zeros; std's parser refuses them.
fn parse_ipv4_lenient(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        // Bound the digit count before parsing; "0000000010" is not an octet.
        if p.len() > 3 {
            return None;
        }
        *o = parse_uint(p)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

// ---------------------------------------------------------------------------
// agent.conf
// ---------------------------------------------------------------------------

/// The agent's `agent.conf`.
///
/// Relative paths in the file are resolved against the file's directory;
/// `script_dirs` and profile `writable` entries must be absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConf {
    /// mTLS listen port (required; 0 = ephemeral).
    pub port: u16,
    /// Listen address (`bind`, default [`DEFAULT_AGENT_BIND`]).
    pub bind: String,
    /// Agent certificate (required).
    pub cert: PathBuf,
    /// Agent private key (required).
    pub key: PathBuf,
    /// CA certificate (required).
    pub ca: PathBuf,
    /// State directory (`state_dir`, default [`DEFAULT_AGENT_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// Trusted-dispatcher map (default `<state_dir>/ctrl-exec-dispatchers`).
    pub trusted_dispatchers_path: PathBuf,
    /// Async result store (default `<state_dir>/runs`).
    pub async_runs_dir: PathBuf,
    /// Renewed-certificate staging file (default `<state_dir>/agent.crt.staged`).
    pub cert_staging_path: PathBuf,
    /// Revoked serial list (default [`DEFAULT_REVOKED_SERIALS`]).
    pub revoked_serials: PathBuf,
    /// This agent's name (`hostname`, default the host's FQDN).
    pub hostname: String,
    /// Directories scripts must resolve into; empty = no restriction.
    /// Invariant: every entry is absolute.
    pub script_dirs: Vec<PathBuf>,
    /// Auth hook program (`auth_hook`).
    pub auth_hook: Option<PathBuf>,
    /// Hook time limit (`auth_hook_timeout`, default 10 s).
    pub auth_hook_timeout: Duration,
    /// Peers allowed to connect; `None` = all. Invariant: `Some` is non-empty.
    pub allowed_ips: Option<Vec<IpNet>>,
    /// Connection volume rule; `None` when disabled or its limit is 0.
    pub rate_limit_volume: Option<RateRule>,
    /// Failed-handshake rule; `None` when disabled or its limit is 0.
    pub rate_limit_probe: Option<RateRule>,
    /// Privileged executor socket (`executor_socket`).
    pub executor_socket: Option<PathBuf>,
    /// Time limit for writing the context JSON to a script (default 10 s).
    pub stdin_timeout: Duration,
    /// Concurrent handler cap (`max_children`, default 256). Invariant: >= 1.
    pub max_children: usize,
    /// Script run time limit (`script_timeout`, default 600 s). Invariant: > 0.
    pub script_timeout: Duration,
    /// Output kept per stream (`max_output_bytes`, default 1 MiB). Invariant: >= 1.
    pub max_output_bytes: usize,
    /// Log to syslog instead of stderr (`syslog`, truthy 1/y/yes/true/on).
    pub syslog: bool,
    /// `[tags]` section, returned in `/capabilities`.
    pub tags: BTreeMap<String, String>,
    /// `[profile NAME]` sections by name.
    pub profiles: BTreeMap<String, Profile>,
}

/// One `[profile NAME]` section: how the executor runs a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// User name or numeric uid to run as; `None` = the executor's default.
    pub run_as: Option<String>,
    /// Capabilities kept (`CAP_*` names).
    pub caps: Vec<String>,
    /// Absolute paths left writable.
    pub writable: Vec<PathBuf>,
    /// Set `no_new_privs` (default true).
    pub no_new_privileges: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            run_as: None,
            caps: Vec::new(),
            writable: Vec::new(),
            no_new_privileges: true,
        }
    }
}

/// Which part of agent.conf the following key lines belong to.
enum Section {
    Top,
    Tags,
    Profile(String),
    Other,
}

impl AgentConf {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        Self::parse(path, &read(path)?)
    }

    /// Parses the text of `path`. No file I/O, except that the host name is
    /// looked up when `hostname` is not set.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfError> {
        Self::parse_with(path, text, &system_fqdn)
    }

    fn parse_with(path: &Path, text: &str, fqdn: &dyn Fn() -> String) -> Result<Self, ConfError> {
        let mut raw = Raw::new(path);
        let mut tags = BTreeMap::new();
        let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
        let mut section = Section::Top;

        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(inner) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = parse_section(inner)
                    .map_err(|m| ConfError::at(path, n, m))?
                    .ok_or_else(|| ConfError::at(path, n, format!("malformed line: '{line}'")))?;
                if let Section::Profile(name) = &section {
                    profiles.entry(name.clone()).or_default();
                }
                continue;
            }
            let (k, v) = split_key_value(line)
                .filter(|(k, _)| is_agent_key(k))
                .ok_or_else(|| ConfError::at(path, n, format!("malformed line: '{line}'")))?;
            match &section {
                Section::Top => raw.set(k, v, n),
                Section::Tags => {
                    tags.insert(k.to_string(), v.to_string());
                }
                Section::Profile(name) => {
                    let profile = profiles.entry(name.clone()).or_default();
                    set_profile_key(profile, name, k, v).map_err(|m| ConfError::at(path, n, m))?;
                }
                Section::Other => {}
            }
        }

        let port = match raw.get_at("port") {
            None => return Err(ConfError::file(path, "missing required key 'port'")),
            Some((v, n)) => match parse_uint::<u16>(v) {
                Some(p) => p,
                None => {
                    return Err(ConfError::at(
                        path,
                        n,
                        format!("port must be a number 0-65535, got '{v}'"),
                    ))
                }
            },
        };
        let state_dir = raw.path_or("state_dir", DEFAULT_AGENT_STATE_DIR);
        let script_dirs = match raw.get_at("script_dirs") {
            None => Vec::new(),
            Some((v, n)) => {
                absolute_list("script_dirs", v).map_err(|m| ConfError::at(path, n, m))?
            }
        };
        let allowed_ips = match raw.get_at("allowed_ips") {
            None => None,
            Some((v, n)) => Some(parse_allowed_ips(v).map_err(|m| ConfError::at(path, n, m))?),
        };
        let disabled = raw.get("rate_limit_disable").is_some_and(starts_truthy);
        let (rate_limit_volume, rate_limit_probe) = if disabled {
            (None, None)
        } else {
            (
                raw.rule("rate_limit_volume", DEFAULT_RATE_LIMIT_VOLUME)?,
                raw.rule("rate_limit_probe", DEFAULT_RATE_LIMIT_PROBE)?,
            )
        };

        Ok(AgentConf {
            port,
            bind: raw.get("bind").unwrap_or(DEFAULT_AGENT_BIND).to_string(),
            cert: raw.required_path("cert")?,
            key: raw.required_path("key")?,
            ca: raw.required_path("ca")?,
            trusted_dispatchers_path: raw
                .path("trusted_dispatchers_path")
                .unwrap_or_else(|| state_dir.join(TRUSTED_DISPATCHERS_FILE)),
            async_runs_dir: raw
                .path("async_runs_dir")
                .unwrap_or_else(|| state_dir.join(ASYNC_RUNS_DIR)),
            cert_staging_path: raw
                .path("cert_staging_path")
                .unwrap_or_else(|| state_dir.join(CERT_STAGING_FILE)),
            state_dir,
            revoked_serials: raw.path_or("revoked_serials", DEFAULT_REVOKED_SERIALS),
            hostname: match raw.get("hostname") {
                Some(h) => h.to_string(),
                None => fqdn(),
            },
            script_dirs,
            auth_hook: raw.path("auth_hook"),
            auth_hook_timeout: raw.secs("auth_hook_timeout", DEFAULT_AUTH_HOOK_TIMEOUT_SECS, 1)?,
            allowed_ips,
            rate_limit_volume,
            rate_limit_probe,
            executor_socket: raw.path("executor_socket"),
            stdin_timeout: raw.secs("stdin_timeout", DEFAULT_STDIN_TIMEOUT_SECS, 1)?,
            max_children: raw.num("max_children", DEFAULT_MAX_CHILDREN, 1, usize::MAX)?,
            script_timeout: raw.secs("script_timeout", DEFAULT_SCRIPT_TIMEOUT_SECS, 1)?,
            max_output_bytes: raw.num(
                "max_output_bytes",
                DEFAULT_MAX_OUTPUT_BYTES,
                1,
                usize::MAX,
            )?,
            syslog: raw.get("syslog").is_some_and(is_truthy),
            tags,
            profiles,
        })
    }
}

/// The inside of a `[...]` header: `Ok(None)` when it is not a header at all.
fn parse_section(inner: &str) -> Result<Option<Section>, String> {
    let mut words = inner.split_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let arg = words.next();
    if words.next().is_some() || !is_word(name) {
        return Ok(None);
    }
    let name = name.to_ascii_lowercase();
    Ok(Some(match (name.as_str(), arg) {
        ("profile", None) => return Err("[profile] needs a name: [profile NAME]".to_string()),
        ("profile", Some(p)) if is_profile_name(p) => Section::Profile(p.to_string()),
        ("profile", Some(p)) => return Err(format!("invalid profile name '{p}'")),
        (_, Some(_)) => Section::Other,
        ("tags", None) => Section::Tags,
        (_, None) => Section::Other,
    }))
}

fn set_profile_key(p: &mut Profile, profile: &str, key: &str, value: &str) -> Result<(), String> {
    match key {
        "run_as" => {
            if !valid_run_as(value) {
                return Err(format!(
                    "run_as must be a user name ([A-Za-z_][A-Za-z0-9_-]*) or a uid 0-4294967295, got '{value}'"
                ));
            }
            p.run_as = Some(value.to_string());
        }
        "caps" => {
            let mut caps = Vec::new();
            for tok in value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
            {
                if tok.starts_with('#') {
                    return Err(
                        "inline comments are not supported: put comments on their own line"
                            .to_string(),
                    );
                }
                if !valid_cap(tok) {
                    return Err(format!("caps must be CAP_* names, got '{tok}'"));
                }
                caps.push(tok.to_string());
            }
            p.caps = caps;
        }
        "writable" => p.writable = absolute_list("writable", value)?,
        "no_new_privileges" => p.no_new_privileges = is_truthy(value),
        // A typo in a sandbox definition must not silently widen it.
        _ => return Err(format!("unknown key '{key}' in [profile {profile}]")),
    }
    Ok(())
}

fn valid_run_as(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_digit() => parse_uint::<u32>(s).is_some(),
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')),
        _ => false,
    }
}

fn valid_cap(s: &str) -> bool {
    s.strip_prefix("CAP_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
    })
}

fn parse_allowed_ips(v: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    // Empty items (a trailing comma) are harmless; a bad item is an error so a
    // typo never leaves the agent open to everyone.
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match IpNet::parse(item) {
            Some(net) => nets.push(net),
            None => return Err(format!("allowed_ips: invalid address or network '{item}'")),
        }
    }
    if nets.is_empty() {
        return Err(format!(
            "allowed_ips must list at least one address, got '{v}'"
        ));
    }
    Ok(nets)
}

fn absolute_list(key: &str, v: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for item in v.split(':').map(str::trim).filter(|s| !s.is_empty()) {
        if !item.starts_with('/') {
            return Err(format!(
                "{key} entries must be absolute paths, got '{item}'"
            ));
        }
        out.push(PathBuf::from(item));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// scripts.conf
// ---------------------------------------------------------------------------

/// The loaded allowlist: scripts by name, plus warnings for skipped lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Allowed scripts by name.
    pub scripts: BTreeMap<String, ScriptEntry>,
    /// One message per skipped line or ignored annotation (`file:line: ...`).
    pub warnings: Vec<String>,
}

/// One allowlisted script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    /// Name requests use. Invariant: [`valid_script_name`].
    pub name: String,
    /// Absolute script path as written.
    pub path: PathBuf,
    /// Profile name (`profile=`, default [`DEFAULT_PROFILE`]).
    pub profile: String,
    /// Per-script run time limit (`timeout=`), overriding `script_timeout`.
    pub timeout: Option<Duration>,
}

/// Reads and parses an allowlist; only an unreadable file is an error.
pub fn load_allowlist(path: &Path, script_dirs: &[PathBuf]) -> Result<Allowlist, ConfError> {
    Ok(parse_allowlist(path, &read(path)?, script_dirs))
}

/// Parses allowlist text. Bad lines are skipped with a warning, never fatal.
/// When `script_dirs` is non-empty each path is resolved (realpath) and must lie
/// under one of them; a path that cannot be resolved is skipped too.
pub fn parse_allowlist(path: &Path, text: &str, script_dirs: &[PathBuf]) -> Allowlist {
    let mut list = Allowlist::default();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let Some((name, value)) = split_key_value(line).filter(|(k, _)| valid_script_name(k))
        else {
            list.warnings
                .push(format!("{at}: skipped malformed line: '{trimmed}'"));
            continue;
        };
        match parse_entry(name, value, script_dirs, &at, &mut list.warnings) {
            Ok(entry) => {
                list.scripts.insert(name.to_string(), entry);
            }
            Err(reason) => list
                .warnings
                .push(format!("{at}: skipped '{name}': {reason}")),
        }
    }
    list
}

fn parse_entry(
    name: &str,
    value: &str,
    script_dirs: &[PathBuf],
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<ScriptEntry, String> {
    let mut profile = DEFAULT_PROFILE.to_string();
    let mut timeout = None;
    let mut paths = Vec::new();
    for tok in value.split_whitespace() {
        let Some((k, v)) = annotation(tok) else {
            paths.push(tok);
            continue;
        };
        match k {
            "profile" if is_profile_name(v) => profile = v.to_string(),
            "profile" => return Err(format!("invalid profile name '{v}'")),
            "timeout" => match parse_uint::<u64>(v).filter(|&s| s > 0) {
                Some(s) => timeout = Some(Duration::from_secs(s)),
                None => {
                    return Err(format!(
                        "timeout must be a positive number of seconds, got '{v}'"
                    ))
                }
            },
            _ => warnings.push(format!(
                "{at}: '{name}': ignoring unknown annotation '{tok}'"
            )),
        }
    }
    let path = match paths.as_slice() {
        [] => return Err("no script path".to_string()),
        [p] => PathBuf::from(p),
        _ => return Err(format!("more than one path: {}", paths.join(" "))),
    };
    if !path.is_absolute() {
        return Err(format!("path is not absolute: '{}'", path.display()));
    }
    if !script_dirs.is_empty() {
        if let Err(e) = fs::canonicalize(&path) {
            return Err(format!(
                "cannot resolve '{}' to check script_dirs: {e}",
                path.display()
            ));
        }
        if !within_script_dirs(&path, script_dirs) {
            return Err(format!("'{}' is outside script_dirs", path.display()));
        }
    }
    Ok(ScriptEntry {
        name: name.to_string(),
        path,
        profile,
        timeout,
    })
}

/// `key=value` when `tok` is an annotation (`^[a-z_]+=`).
fn annotation(tok: &str) -> Option<(&str, &str)> {
    let (k, v) = tok.split_once('=')?;
    (!k.is_empty() && k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')).then_some((k, v))
}

/// Whether `name` can name an agent: its certificate CN, its registry key and
/// registry file name (`^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 253 bytes).
pub fn valid_agent_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// Whether `name` is a valid script name: `^[A-Za-z0-9_-]+$`, at most 255 chars.
pub fn valid_script_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SCRIPT_NAME_CHARS
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

/// Whether the realpath of `path` lies under the realpath of one of
/// `script_dirs` (so symlink and `..` escapes fail). False when `path` cannot be
/// resolved or `script_dirs` is empty; callers treat an empty list as "no
/// restriction" themselves.
pub fn within_script_dirs(path: &Path, script_dirs: &[PathBuf]) -> bool {
    let Ok(real) = fs::canonicalize(path) else {
        return false;
    };
    script_dirs
        .iter()
        .filter_map(|d| fs::canonicalize(d).ok())
        .any(|d| real.starts_with(d))
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Top-level `key = value` pairs with the line each came from; later wins.
struct Raw<'a> {
    path: &'a Path,
    map: BTreeMap<String, (String, usize)>,
}

impl<'a> Raw<'a> {
    fn new(path: &'a Path) -> Self {
        Raw {
            path,
            map: BTreeMap::new(),
        }
    }

    fn set(&mut self, key: &str, value: &str, line: usize) {
        self.map.insert(key.to_string(), (value.to_string(), line));
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|(v, _)| v.as_str())
    }

    fn get_at(&self, key: &str) -> Option<(&str, usize)> {
        self.map.get(key).map(|(v, n)| (v.as_str(), *n))
    }

    /// Resolves a path value against the config file's directory.
    fn path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(|v| resolve(self.path, v))
    }

    fn path_or(&self, key: &str, default: &str) -> PathBuf {
        self.path(key).unwrap_or_else(|| PathBuf::from(default))
    }

    fn required_path(&self, key: &str) -> Result<PathBuf, ConfError> {
        self.path(key)
            .ok_or_else(|| ConfError::file(self.path, format!("missing required key '{key}'")))
    }

    /// A whole number in `min..=max`, or `default` when the key is absent.
    fn num<T>(&self, key: &str, default: T, min: T, max: T) -> Result<T, ConfError>
    where
        T: FromStr + PartialOrd + Copy + fmt::Display + Bounded,
    {
        let Some((v, n)) = self.get_at(key) else {
            return Ok(default);
        };
        match parse_uint::<T>(v) {
            Some(x) if x >= min && x <= max => Ok(x),
            _ if T::OPEN_ENDED && max == T::MAX => Err(ConfError::at(
                self.path,
                n,
                format!("{key} must be a number of at least {min}, got '{v}'"),
            )),
            _ => Err(ConfError::at(
                self.path,
                n,
                format!("{key} must be a number {min}-{max}, got '{v}'"),
            )),
        }
    }

    fn secs(&self, key: &str, default: u64, min: u64) -> Result<Duration, ConfError> {
        self.num(key, default, min, u64::MAX)
            .map(Duration::from_secs)
    }

    /// A rate rule; `None` when its limit is 0 (that rule is off).
    fn rule(&self, key: &str, default: RateRule) -> Result<Option<RateRule>, ConfError> {
        let rule = match self.get_at(key) {
            None => default,
            Some((v, n)) => RateRule::parse(v).ok_or_else(|| {
                ConfError::at(
                    self.path,
                    n,
                    format!("{key} must be limit/window/block in whole seconds, got '{v}'"),
                )
            })?,
        };
        Ok((rule.limit > 0).then_some(rule))
    }
}

/// Upper bound of the integer types config numbers parse into.
trait Bounded {
    const MAX: Self;
    /// Whether `MAX` is too large to be worth printing as a range end.
    const OPEN_ENDED: bool = true;
}

impl Bounded for u16 {
    const MAX: Self = u16::MAX;
    const OPEN_ENDED: bool = false;
}
impl Bounded for u32 {
    const MAX: Self = u32::MAX;
}
impl Bounded for u64 {
    const MAX: Self = u64::MAX;
}
impl Bounded for usize {
    const MAX: Self = usize::MAX;
}

fn read(path: &Path) -> Result<String, ConfError> {
    fs::read_to_string(path).map_err(|e| ConfError::file(path, format!("cannot read: {e}")))
}

fn resolve(conf: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match conf.parent() {
        Some(dir) => dir.join(p),
        None => p.to_path_buf(),
    }
}

/// Splits `key = value` at the first `=`, trimming both; the value must be non-empty.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once('=')?;
    let (k, v) = (k.trim(), v.trim());
    (!k.is_empty() && !v.is_empty()).then_some((k, v))
}

/// `\w+` (ASCII).
fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `\w+[\w-]*`: a word character first, then word characters or dashes.
fn is_agent_key(s: &str) -> bool {
    s.as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

/// `[\w.-]+`.
fn is_profile_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Digits only (no sign, no spaces), in range for `T`.
fn parse_uint<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The original's flag test: the value starts with `1` or `y` (any case).
fn starts_truthy(v: &str) -> bool {
    matches!(v.as_bytes().first(), Some(b'1' | b'y' | b'Y'))
}

/// `1`, `y`, `yes`, `true` or `on` (any case).
fn is_truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "y" | "yes" | "true" | "on"
    )
}

fn first_line(path: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Short host name: the kernel's, else /etc/hostname, else `dispatcher`.
fn system_hostname() -> String {
    first_line("/proc/sys/kernel/hostname")
        .or_else(|| first_line("/etc/hostname"))
        .unwrap_or_else(|| FALLBACK_DISPATCHER_ID.to_string())
}

/// The host's FQDN: the kernel host name if it has a dot, else a dotted alias
/// of it from /etc/hosts, else the short name.
fn system_fqdn() -> String {
    let short = first_line("/proc/sys/kernel/hostname")
        .or_else(|| first_line("/etc/hostname"))
        .unwrap_or_else(|| "localhost".to_string());
    if short.contains('.') {
        return short;
    }
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    fqdn_from_hosts(&short, &hosts).unwrap_or(short)
}

/// First dotted name on an /etc/hosts line whose names include `short`.
fn fqdn_from_hosts(short: &str, hosts: &str) -> Option<String> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if names.contains(&short) {
            names
                .iter()
                .find(|n| n.contains('.'))
                .map(|n| n.to_string())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DCONF: &str = "/etc/ctrl-exec/ctrl-exec.conf";
    const ACONF: &str = "/etc/ctrl-exec-agent/agent.conf";
    const DBASE: &str = "cert = d.crt\nkey = /k/d.key\nca = ca.crt\n";
    const ABASE: &str = "port = 7443\ncert = agent.crt\nkey = agent.key\nca = /x/ca.crt\n";

    fn dparse(text: &str) -> Result<DispatcherConf, ConfError> {
        DispatcherConf::parse_with(Path::new(DCONF), text, &|| "test host!".to_string())
    }

    fn aparse(text: &str) -> Result<AgentConf, ConfError> {
        AgentConf::parse_with(Path::new(ACONF), text, &|| "agent.example.org".to_string())
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
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
                "api_max_children must be a number of at least 1, got '0'",
            ),
            (
                "max_parallel = 0",
                "max_parallel must be a number of at least 1",
            ),
            (
                "read_timeout = soon",
                "read_timeout must be a number of at least 1, got 'soon'",
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

    #[test]
    fn dispatcher_id_sanitising() {
        let cases = [
            ("ced01", "ced01"),
            ("ced 01/x", "ced-01-x"),
            ("..-_x.y", "x.y"),
            ("---", "dispatcher"),
            ("", "dispatcher"),
            ("héllo", "h-llo"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitise_dispatcher_id(input), want, "{input}");
        }
        assert_eq!(sanitise_dispatcher_id(&"a".repeat(100)).len(), 64);
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

    #[test]
    fn rate_rule_parse() {
        let cases: &[(&str, Option<RateRule>)] = &[
            ("10/60/300", Some(RateRule::secs(10, 60, 300))),
            (" 0 / 1 / 2 ", Some(RateRule::secs(0, 1, 2))),
            ("10/60", None),
            ("10/60/300/1", None),
            ("a/b/c", None),
            ("-1/60/300", None),
            ("", None),
        ];
        for &(s, want) in cases {
            assert_eq!(RateRule::parse(s), want, "{s}");
        }
    }

    #[test]
    fn agent_defaults() {
        let c = aparse(ABASE).unwrap();
        assert_eq!(c.port, 7443);
        assert_eq!(c.bind, "0.0.0.0");
        assert_eq!(c.cert, PathBuf::from("/etc/ctrl-exec-agent/agent.crt"));
        assert_eq!(c.key, PathBuf::from("/etc/ctrl-exec-agent/agent.key"));
        assert_eq!(c.ca, PathBuf::from("/x/ca.crt"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/ctrl-exec-agent"));
        assert_eq!(
            c.trusted_dispatchers_path,
            PathBuf::from("/var/lib/ctrl-exec-agent/ctrl-exec-dispatchers")
        );
        assert_eq!(
            c.async_runs_dir,
            PathBuf::from("/var/lib/ctrl-exec-agent/runs")
        );
        assert_eq!(
            c.cert_staging_path,
            PathBuf::from("/var/lib/ctrl-exec-agent/agent.crt.staged")
        );
        assert_eq!(
            c.revoked_serials,
            PathBuf::from("/etc/ctrl-exec-agent/revoked-serials")
        );
        assert_eq!(c.hostname, "agent.example.org");
        assert!(c.script_dirs.is_empty());
        assert_eq!(c.auth_hook, None);
        assert_eq!(c.auth_hook_timeout, secs(10));
        assert_eq!(c.allowed_ips, None);
        assert_eq!(c.rate_limit_volume, Some(RateRule::secs(10, 60, 300)));
        assert_eq!(c.rate_limit_probe, Some(RateRule::secs(3, 600, 3600)));
        assert_eq!(c.executor_socket, None);
        assert_eq!(c.stdin_timeout, secs(10));
        assert_eq!(c.max_children, 256);
        assert_eq!(c.script_timeout, secs(600));
        assert_eq!(c.max_output_bytes, 1_048_576);
        assert!(!c.syslog);
        assert!(c.tags.is_empty() && c.profiles.is_empty());
    }

    #[test]
    fn agent_keys_override_defaults() {
        let text = format!(
            "{ABASE}bind = 127.0.0.1\nstate_dir = /st\nhostname = web1\nscript_dirs = /opt/a:/opt/b\n\
             auth_hook = hook\nauth_hook_timeout = 2\nallowed_ips = 10.0.0.0/8, 192.168.1.5,\n\
             rate_limit_volume = 0/60/300\nrate_limit_probe = 1/2/3\nexecutor_socket = /run/x.sock\n\
             stdin_timeout = 4\nmax_children = 1\nscript_timeout = 5\nmax_output_bytes = 1\nsyslog = TRUE\n\
             trusted_dispatchers_path = td\nsome-new-key = 1\n"
        );
        let c = aparse(&text).unwrap();
        assert_eq!(c.bind, "127.0.0.1");
        assert_eq!(c.state_dir, PathBuf::from("/st"));
        assert_eq!(c.async_runs_dir, PathBuf::from("/st/runs"));
        assert_eq!(c.cert_staging_path, PathBuf::from("/st/agent.crt.staged"));
        assert_eq!(
            c.trusted_dispatchers_path,
            PathBuf::from("/etc/ctrl-exec-agent/td")
        );
        assert_eq!(c.hostname, "web1");
        assert_eq!(
            c.script_dirs,
            vec![PathBuf::from("/opt/a"), PathBuf::from("/opt/b")]
        );
        assert_eq!(
            c.auth_hook,
            Some(PathBuf::from("/etc/ctrl-exec-agent/hook"))
        );
        assert_eq!(c.auth_hook_timeout, secs(2));
        assert_eq!(c.allowed_ips.as_ref().map(Vec::len), Some(2));
        assert_eq!(c.rate_limit_volume, None);
        assert_eq!(c.rate_limit_probe, Some(RateRule::secs(1, 2, 3)));
        assert_eq!(c.executor_socket, Some(PathBuf::from("/run/x.sock")));
        assert_eq!((c.stdin_timeout, c.script_timeout), (secs(4), secs(5)));
        assert_eq!((c.max_children, c.max_output_bytes), (1, 1));
        assert!(c.syslog);
    }

    #[test]
    fn agent_rate_limit_disable() {
        for (v, disabled) in [
            ("1", true),
            ("yes", true),
            ("Y", true),
            ("0", false),
            ("no", false),
        ] {
            let c = aparse(&format!("{ABASE}rate_limit_disable = {v}\n")).unwrap();
            assert_eq!(
                c.rate_limit_volume.is_none() && c.rate_limit_probe.is_none(),
                disabled,
                "{v}"
            );
        }
    }

    #[test]
    fn agent_port_edges() {
        for (v, want) in [
            ("0", Some(0)),
            ("65535", Some(65535)),
            ("65536", None),
            ("x", None),
            ("+1", None),
        ] {
            let text = format!("port = {v}\ncert = c\nkey = k\nca = a\n");
            match (aparse(&text), want) {
                (Ok(c), Some(p)) => assert_eq!(c.port, p),
                (Err(e), None) => {
                    assert_eq!(
                        e.to_string(),
                        format!("{ACONF}:1: port must be a number 0-65535, got '{v}'")
                    )
                }
                (r, _) => panic!("{v}: {r:?}"),
            }
        }
    }

    #[test]
    fn agent_required_keys() {
        for key in ["port", "cert", "key", "ca"] {
            let text: String = ABASE
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = aparse(&text).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{ACONF}: missing required key '{key}'")
            );
        }
    }

    #[test]
    fn agent_errors() {
        let cases: &[(&str, &str)] = &[
            ("what is this", "malformed line: 'what is this'"),
            ("-key = 1", "malformed line: '-key = 1'"),
            ("key =", "malformed line: 'key ='"),
            ("[profile]", "[profile] needs a name"),
            ("[profile a/b]", "invalid profile name 'a/b'"),
            ("[]", "malformed line: '[]'"),
            ("[a b c]", "malformed line: '[a b c]'"),
            (
                "script_dirs = opt/scripts",
                "script_dirs entries must be absolute paths, got 'opt/scripts'",
            ),
            (
                "allowed_ips = 10.0.0.1, 10.0.0.300",
                "allowed_ips: invalid address or network '10.0.0.300'",
            ),
            (
                "allowed_ips = ,",
                "allowed_ips must list at least one address, got ','",
            ),
            (
                "rate_limit_volume = lots",
                "rate_limit_volume must be limit/window/block",
            ),
            (
                "rate_limit_probe = 1/2",
                "rate_limit_probe must be limit/window/block",
            ),
            (
                "script_timeout = 0",
                "script_timeout must be a number of at least 1, got '0'",
            ),
            (
                "max_output_bytes = 0",
                "max_output_bytes must be a number of at least 1",
            ),
            (
                "max_children = 0",
                "max_children must be a number of at least 1",
            ),
            ("stdin_timeout = x", "stdin_timeout must be"),
            ("auth_hook_timeout = -2", "auth_hook_timeout must be"),
        ];
        for &(line, want) in cases {
            let e = aparse(&format!("{ABASE}{line}\n")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{ACONF}:5: ")), "{line}: {msg}");
            assert!(msg.contains(want), "{line}: {msg}");
        }
    }

    #[test]
    fn agent_comments_whitespace_and_duplicates() {
        let text = format!("# top\n\n   # indented comment\n{ABASE}  port  =  8443  \nbind = 1.2.3.4 # not a comment\n");
        let c = aparse(&text).unwrap();
        assert_eq!(c.port, 8443);
        assert_eq!(c.bind, "1.2.3.4 # not a comment");
    }

    #[test]
    fn agent_tags_and_profiles() {
        let text = format!(
            "{ABASE}[tags]\nrole = web\nenv = prod eu\n[Other]\nport = x\n[something else]\nignored = 1\n\
             [profile default]\nrun_as = nobody\n[profile backup.v2]\nrun_as = 0\ncaps = CAP_DAC_READ_SEARCH, CAP_CHOWN CAP_NET_BIND_SERVICE\n\
             writable = /var/backups:/tmp\nno_new_privileges = off\n[profile empty]\n"
        );
        let c = aparse(&text).unwrap();
        assert_eq!(
            c.port, 7443,
            "keys after a section header do not touch the top level"
        );
        assert_eq!(c.tags.get("role").map(String::as_str), Some("web"));
        assert_eq!(c.tags.get("env").map(String::as_str), Some("prod eu"));
        assert_eq!(c.tags.len(), 2);
        let d = &c.profiles["default"];
        assert_eq!(d.run_as.as_deref(), Some("nobody"));
        assert!(d.no_new_privileges && d.caps.is_empty() && d.writable.is_empty());
        let b = &c.profiles["backup.v2"];
        assert_eq!(b.run_as.as_deref(), Some("0"));
        assert_eq!(
            b.caps,
            ["CAP_DAC_READ_SEARCH", "CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
        );
        assert_eq!(
            b.writable,
            [PathBuf::from("/var/backups"), PathBuf::from("/tmp")]
        );
        assert!(!b.no_new_privileges);
        assert_eq!(c.profiles["empty"], Profile::default());
    }

    #[test]
    fn profile_values() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("run_as = nobody", Ok(())),
            ("run_as = _svc-1", Ok(())),
            ("run_as = 4294967295", Ok(())),
            ("run_as = 0", Ok(())),
            ("run_as = 4294967296", Err("run_as must be a user name")),
            ("run_as = -1", Err("got '-1'")),
            ("run_as = root;x", Err("got 'root;x'")),
            ("run_as = 1abc", Err("got '1abc'")),
            (
                "caps = CAP_NET_RAW # network",
                Err("inline comments are not supported: put comments on their own line"),
            ),
            (
                "caps = CAP_NET_RAW,#x",
                Err("inline comments are not supported"),
            ),
            (
                "caps = cap_net_raw",
                Err("caps must be CAP_* names, got 'cap_net_raw'"),
            ),
            ("caps = CAP_", Err("got 'CAP_'")),
            (
                "writable = /a:tmp",
                Err("writable entries must be absolute paths, got 'tmp'"),
            ),
            (
                "run-as = nobody",
                Err("unknown key 'run-as' in [profile p]"),
            ),
        ];
        for (line, want) in cases {
            let r = aparse(&format!("{ABASE}[profile p]\n{line}\n"));
            match (r, want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(w)) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(&format!("{ACONF}:6: ")), "{line}: {msg}");
                    assert!(msg.contains(w), "{line}: {msg}");
                }
                (r, _) => panic!("{line}: {r:?}"),
            }
        }
    }

    #[test]
    fn no_new_privileges_values() {
        for (v, want) in [
            ("1", true),
            ("y", true),
            ("Yes", true),
            ("true", true),
            ("ON", true),
            ("0", false),
            ("no", false),
        ] {
            let c = aparse(&format!("{ABASE}[profile p]\nno_new_privileges = {v}\n")).unwrap();
            assert_eq!(c.profiles["p"].no_new_privileges, want, "{v}");
        }
    }

    #[test]
    fn fqdn_lookup_in_hosts() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.1 web1.commented.org web1\n127.0.1.1 web1.example.org web1 # x\n";
        assert_eq!(
            fqdn_from_hosts("web1", hosts).as_deref(),
            Some("web1.example.org")
        );
        assert_eq!(fqdn_from_hosts("db1", hosts), None);
        assert_eq!(fqdn_from_hosts("web1", "127.0.1.1 web1\n"), None);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipnet_table() {
        // entry, peer, contains; entry None = must not parse
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("192.168.1.7/32", "192.168.1.7", true),
            ("192.168.1.7/32", "192.168.1.8", false),
            ("192.168.0.0/23", "192.168.1.200", true),
            ("010.000.000.001", "10.0.0.1", true),
            ("10.0.0.1", "::ffff:10.0.0.1", true),
            ("10.0.0.0/8", "::ffff:10.9.9.9", true),
            ("10.0.0.1", "::10.0.0.1", false),
            ("2001:db8::1", "2001:db8::1", true),
            ("2001:db8::/32", "2001:db8:ffff::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("::/0", "fe80::1", true),
            ("::/0", "10.0.0.1", true),
            ("::ffff:10.0.0.1", "10.0.0.1", true),
            ("2001:db8::1", "10.0.0.1", false),
        ];
        for &(entry, peer, want) in cases {
            let net = IpNet::parse(entry).unwrap_or_else(|| panic!("{entry} should parse"));
            assert_eq!(net.contains(ip(peer)), want, "{entry} contains {peer}");
        }
        assert_eq!(
            IpNet::parse("010.0.0.1/8"),
            Some(IpNet {
                addr: ip("10.0.0.1"),
                prefix: 8
            })
        );
        assert_eq!(IpNet::parse("::1").map(|n| n.prefix), Some(128));
        for bad in [
            "",
            "garbage",
            "10.0.0",
            "10.0.0.1.5",
            "256.0.0.1",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "0010.0.0.1",
            "10.0.0.1/8/8",
            "::1/129",
            "2001:db8::g",
            " 10.0.0.1",
        ] {
            assert_eq!(IpNet::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn script_names() {
        for (name, ok) in [
            ("backup", true),
            ("a-b_C9", true),
            ("", false),
            ("a.b", false),
            ("a b", false),
            ("../x", false),
            ("é", false),
        ] {
            assert_eq!(valid_script_name(name), ok, "{name:?}");
        }
        assert!(valid_script_name(&"a".repeat(255)));
        assert!(!valid_script_name(&"a".repeat(256)));
    }

    fn allow(text: &str) -> Allowlist {
        parse_allowlist(Path::new("/etc/s.conf"), text, &[])
    }

    #[test]
    fn allowlist_entries() {
        let text = "# comment\n\n  # indented\n\
                    plain = /opt/s/plain.sh\n\
                    a1 = profile=backup timeout=30 /opt/s/a.sh\n\
                    a2 = /opt/s/a.sh timeout=5 profile=web.v2\n\
                    a3 =   timeout=7   /opt/s/a.sh   profile=x  \n\
                    odd = /opt/s/a.sh color=blue\n\
                    dup = /opt/s/one.sh\n\
                    dup = /opt/s/two.sh\n";
        let a = allow(text);
        let e = |n: &str| {
            a.scripts
                .get(n)
                .unwrap_or_else(|| panic!("{n} missing: {:?}", a.warnings))
        };
        assert_eq!(e("plain").path, PathBuf::from("/opt/s/plain.sh"));
        assert_eq!(
            (e("plain").profile.as_str(), e("plain").timeout),
            ("default", None)
        );
        assert_eq!(
            (e("a1").profile.as_str(), e("a1").timeout),
            ("backup", Some(secs(30)))
        );
        assert_eq!(
            (e("a2").profile.as_str(), e("a2").timeout),
            ("web.v2", Some(secs(5)))
        );
        assert_eq!(
            (e("a3").profile.as_str(), e("a3").timeout),
            ("x", Some(secs(7)))
        );
        assert_eq!(e("a3").name, "a3");
        assert_eq!(e("odd").path, PathBuf::from("/opt/s/a.sh"));
        assert_eq!(e("dup").path, PathBuf::from("/opt/s/two.sh"));
        assert_eq!(a.scripts.len(), 6);
        assert_eq!(
            a.warnings,
            ["/etc/s.conf:8: 'odd': ignoring unknown annotation 'color=blue'"]
        );
    }

    #[test]
    fn allowlist_skips_bad_lines() {
        let cases: &[(&str, &str)] = &[
            ("not an entry", "skipped malformed line: 'not an entry'"),
            ("bad.name = /x.sh", "skipped malformed line"),
            ("empty =", "skipped malformed line"),
            ("nopath = profile=x", "skipped 'nopath': no script path"),
            (
                "two = /a.sh /b.sh",
                "skipped 'two': more than one path: /a.sh /b.sh",
            ),
            (
                "rel = scripts/a.sh",
                "skipped 'rel': path is not absolute: 'scripts/a.sh'",
            ),
            (
                "t0 = /a.sh timeout=0",
                "skipped 't0': timeout must be a positive number of seconds, got '0'",
            ),
            ("tx = /a.sh timeout=soon", "got 'soon'"),
            (
                "pe = /a.sh profile=",
                "skipped 'pe': invalid profile name ''",
            ),
        ];
        for &(line, want) in cases {
            let a = allow(&format!("ok = /ok.sh\n{line}\n"));
            assert_eq!(a.scripts.keys().collect::<Vec<_>>(), ["ok"], "{line}");
            assert_eq!(a.warnings.len(), 1, "{line}: {:?}", a.warnings);
            assert!(
                a.warnings[0].starts_with("/etc/s.conf:2: "),
                "{:?}",
                a.warnings
            );
            assert!(a.warnings[0].contains(want), "{line}: {:?}", a.warnings);
        }
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
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

    #[test]
    fn allowlist_enforces_script_dirs_through_symlinks() {
        let t = TempDir::new("scriptdirs");
        let scripts = t.0.join("scripts");
        let outside = t.0.join("outside");
        fs::create_dir_all(&scripts).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(scripts.join("good.sh"), "#!/bin/sh\n").unwrap();
        fs::write(outside.join("evil.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(outside.join("evil.sh"), scripts.join("link.sh")).unwrap();
        std::os::unix::fs::symlink(scripts.join("good.sh"), outside.join("in.sh")).unwrap();
        // A sibling whose name merely starts with the allowed dir's name.
        let sibling = t.0.join("scripts2");
        fs::create_dir_all(&sibling).unwrap();
        fs::write(sibling.join("s.sh"), "").unwrap();

        let text = format!(
            "good = {s}/good.sh\nlink = {s}/link.sh\ndotdot = {s}/../outside/evil.sh\nin = {o}/in.sh\n\
             missing = {s}/missing.sh\nsib = {sib}/s.sh\n",
            s = scripts.display(),
            o = outside.display(),
            sib = sibling.display(),
        );
        let dirs = [scripts.clone()];
        let a = parse_allowlist(Path::new("s.conf"), &text, &dirs);
        assert_eq!(
            a.scripts.keys().collect::<Vec<_>>(),
            ["good", "in"],
            "{:?}",
            a.warnings
        );
        assert_eq!(a.warnings.len(), 4, "{:?}", a.warnings);
        assert!(
            a.warnings[0].starts_with("s.conf:2: skipped 'link': ")
                && a.warnings[0].contains("outside script_dirs")
        );
        assert!(a.warnings[1].starts_with("s.conf:3: skipped 'dotdot': "));
        assert!(a.warnings[2].starts_with("s.conf:5: skipped 'missing': cannot resolve"));
        assert!(a.warnings[3].starts_with("s.conf:6: skipped 'sib': "));

        assert!(within_script_dirs(&scripts.join("good.sh"), &dirs));
        assert!(!within_script_dirs(&scripts.join("link.sh"), &dirs));
        assert!(!within_script_dirs(&scripts.join("good.sh"), &[]));
        // Without script_dirs nothing is resolved, so a missing file is fine.
        let a = parse_allowlist(Path::new("s.conf"), &text, &[]);
        assert_eq!(a.scripts.len(), 6);

        let file = t.0.join("scripts.conf");
        fs::write(&file, &text).unwrap();
        assert_eq!(load_allowlist(&file, &dirs).unwrap().scripts.len(), 2);
    }

    #[test]
    fn agent_conf_loads_from_file() {
        let t = TempDir::new("agentload");
        let file = t.0.join("agent.conf");
        fs::write(&file, format!("{ABASE}hostname = h\n")).unwrap();
        let c = AgentConf::load(&file).unwrap();
        assert_eq!(c.cert, t.0.join("agent.crt"));
    }
}
