//! `agent.conf`: top-level keys, the `[tags]` section and `[profile NAME]`
//! sections. Whole-line `#` comments only; any other line that is not a
//! section header or a key line is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conf::host::system_fqdn;
use crate::conf::names::is_profile_name;
use crate::conf::raw::{
    clip, is_truthy, is_word, parse_uint, read, split_key_value, starts_truthy, Keys, Raw,
};
use crate::conf::{
    ConfError, ConfWarning, IpNet, RateRule, WarningKind, ASYNC_RUNS_DIR, CERT_STAGING_FILE,
    DEFAULT_AGENT_BIND, DEFAULT_AGENT_STATE_DIR, DEFAULT_AUTH_HOOK_TIMEOUT_SECS,
    DEFAULT_MAX_CHILDREN, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_RATE_LIMIT_PROBE,
    DEFAULT_RATE_LIMIT_VOLUME, DEFAULT_REVOKED_SERIALS, DEFAULT_SCRIPT_TIMEOUT_SECS,
    DEFAULT_STDIN_TIMEOUT_SECS, MAX_AUTH_HOOK_TIMEOUT_SECS, MAX_CONCURRENT_SLOTS,
    MAX_OUTPUT_CAP_BYTES, MAX_PROFILES, MAX_PROFILE_CAPS, MAX_PROFILE_WRITABLE, MAX_SCRIPT_DIRS,
    MAX_SCRIPT_TIMEOUT_SECS, MAX_STDIN_TIMEOUT_SECS, TRUSTED_DISPATCHERS_FILE,
};

/// Every top-level key of agent.conf: those read, and those of the original
/// that do nothing (reference surface.md 4.2).
static KEYS: Keys = Keys {
    read: &[
        "port",
        "bind",
        "cert",
        "key",
        "ca",
        "state_dir",
        "trusted_dispatchers_path",
        "async_runs_dir",
        "cert_staging_path",
        "revoked_serials",
        "hostname",
        "script_dirs",
        "auth_hook",
        "auth_hook_timeout",
        "allowed_ips",
        "rate_limit_volume",
        "rate_limit_probe",
        "rate_limit_disable",
        "executor_socket",
        "stdin_timeout",
        "max_children",
        "script_timeout",
        "max_output_bytes",
        "syslog",
        "key_type",
    ],
    inert: &[
        (
            "pairing_port",
            "the original documented it but never read it; use 'request-pairing --port'",
        ),
        (
            "dispatcher_serial_path",
            "removed in ctrl-exec 0.9; the trusted-dispatcher map replaced it",
        ),
        (
            "sandbox",
            "removed in ctrl-exec 0.10; use [profile NAME] sections",
        ),
        (
            "writable_paths",
            "removed in ctrl-exec 0.10; use 'writable' in a [profile NAME] section",
        ),
        (
            "disable_rate_limit",
            "the key is 'rate_limit_disable' (the original ignored this spelling too)",
        ),
    ],
};

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
    /// Trusted-dispatcher map (default `ctrl-exec-dispatchers` beside
    /// agent.conf, where the agent user, and so its scripts, cannot replace
    /// it; the original kept it in the state dir).
    pub trusted_dispatchers_path: PathBuf,
    /// Where the original kept the map (`<state_dir>/ctrl-exec-dispatchers`),
    /// when the path is the default: [`AgentConf::load`] falls back to it
    /// when only that file exists.
    pub legacy_trusted_dispatchers_path: Option<PathBuf>,
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
    /// Hook time limit (`auth_hook_timeout`, default 10 s). Invariant: 1 s to
    /// [`MAX_AUTH_HOOK_TIMEOUT_SECS`].
    pub auth_hook_timeout: Duration,
    /// Peers allowed to connect; `None` = all. Invariant: `Some` is non-empty.
    pub allowed_ips: Option<Vec<IpNet>>,
    /// Connection volume rule; `None` when disabled or its limit is 0.
    /// Invariant: window and block within [`MAX_RATE_WINDOW_SECS`](crate::conf::MAX_RATE_WINDOW_SECS) and
    /// [`MAX_RATE_BLOCK_SECS`](crate::conf::MAX_RATE_BLOCK_SECS).
    pub rate_limit_volume: Option<RateRule>,
    /// Failed-handshake rule; `None` when disabled or its limit is 0. Same bounds.
    pub rate_limit_probe: Option<RateRule>,
    /// Privileged executor socket (`executor_socket`).
    pub executor_socket: Option<PathBuf>,
    /// Time limit for writing the context JSON to a script (`stdin_timeout`,
    /// default 10 s). Invariant: 1 s to [`MAX_STDIN_TIMEOUT_SECS`].
    pub stdin_timeout: Duration,
    /// Concurrent handler cap (`max_children`, default 256). Invariant: 1 to
    /// [`MAX_CONCURRENT_SLOTS`].
    pub max_children: usize,
    /// Script run time limit (`script_timeout`, default 600 s). Invariant: 1 s to
    /// [`MAX_SCRIPT_TIMEOUT_SECS`].
    pub script_timeout: Duration,
    /// Output kept per stream (`max_output_bytes`, default 1 MiB). Invariant: 1 to
    /// [`MAX_OUTPUT_CAP_BYTES`].
    pub max_output_bytes: usize,
    /// Log to syslog instead of stderr (`syslog`, truthy 1/y/yes/true/on).
    pub syslog: bool,
    /// `[tags]` section, returned in `/capabilities`.
    pub tags: BTreeMap<String, String>,
    /// `[profile NAME]` sections by name.
    pub profiles: BTreeMap<String, Profile>,
    /// The kind of key `request-pairing` makes (`key_type`, default EC P-256;
    /// `rsa` to pair with a Perl dispatcher, whose CSR check refuses EC keys).
    pub key_type: crate::pki::KeyType,
    /// Keys and sections that do nothing (unknown, or inert here), in line order.
    pub warnings: Vec<ConfWarning>,
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
        let mut conf = Self::parse(path, &read(path)?)?;
        // A deployment from before the map moved out of the state dir keeps
        // working: its map is used where it is (and `cea self-check` and
        // `serve` say it can be replaced by the scripts there).
        if let Some(legacy) = conf.legacy_trusted_dispatchers_path.take() {
            if !conf.trusted_dispatchers_path.exists() && legacy.exists() {
                conf.trusted_dispatchers_path = legacy;
            }
        }
        Ok(conf)
    }

    /// Parses the text of `path`. No file I/O, except that the host name is
    /// looked up when `hostname` is not set.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfError> {
        Self::parse_with(path, text, &system_fqdn)
    }

    fn parse_with(path: &Path, text: &str, fqdn: &dyn Fn() -> String) -> Result<Self, ConfError> {
        let mut raw = Raw::new(path, &KEYS);
        let mut ignored_sections = Vec::new();
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
                    .ok_or_else(|| {
                        ConfError::at(path, n, format!("malformed line: '{}'", clip(line)))
                    })?;
                match &section {
                    Section::Profile(name) => {
                        profiles.entry(name.clone()).or_default();
                        if profiles.len() > MAX_PROFILES {
                            return Err(ConfError::at(
                                path,
                                n,
                                format!("more than {MAX_PROFILES} [profile] sections"),
                            ));
                        }
                    }
                    Section::Other => ignored_sections.push(ConfWarning::new(
                        path,
                        n,
                        inner.trim(),
                        WarningKind::IgnoredSection,
                    )),
                    _ => {}
                }
                continue;
            }
            let (k, v) = split_key_value(line)
                .filter(|(k, _)| is_agent_key(k))
                .ok_or_else(|| {
                    ConfError::at(path, n, format!("malformed line: '{}'", clip(line)))
                })?;
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
            Some((v, n)) => absolute_list("script_dirs", v)
                .and_then(|dirs| match dirs.len() > MAX_SCRIPT_DIRS {
                    true => Err(format!(
                        "script_dirs lists more than {MAX_SCRIPT_DIRS} directories"
                    )),
                    false => Ok(dirs),
                })
                .map_err(|m| ConfError::at(path, n, m))?,
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

        let key_type = match raw.get_at("key_type") {
            None => crate::pki::KeyType::default(),
            Some((v, n)) => crate::pki::KeyType::parse(v).ok_or_else(|| {
                ConfError::at(
                    path,
                    n,
                    format!(
                        "key_type must be one of {}, got '{v}'",
                        crate::pki::KeyType::NAMES
                    ),
                )
            })?,
        };
        let mut warnings = raw.warnings();
        warnings.extend(ignored_sections);
        warnings.sort_by_key(|w| w.line);
        let conf_dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(AgentConf {
            port,
            bind: raw.get("bind").unwrap_or(DEFAULT_AGENT_BIND).to_string(),
            cert: raw.required_path("cert")?,
            key: raw.required_path("key")?,
            ca: raw.required_path("ca")?,
            trusted_dispatchers_path: raw
                .path("trusted_dispatchers_path")
                .unwrap_or_else(|| conf_dir.join(TRUSTED_DISPATCHERS_FILE)),
            legacy_trusted_dispatchers_path: raw
                .path("trusted_dispatchers_path")
                .is_none()
                .then(|| state_dir.join(TRUSTED_DISPATCHERS_FILE)),
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
            auth_hook_timeout: raw.secs(
                "auth_hook_timeout",
                DEFAULT_AUTH_HOOK_TIMEOUT_SECS,
                1,
                MAX_AUTH_HOOK_TIMEOUT_SECS,
            )?,
            allowed_ips,
            rate_limit_volume,
            rate_limit_probe,
            executor_socket: raw.path("executor_socket"),
            stdin_timeout: raw.secs(
                "stdin_timeout",
                DEFAULT_STDIN_TIMEOUT_SECS,
                1,
                MAX_STDIN_TIMEOUT_SECS,
            )?,
            max_children: raw.num(
                "max_children",
                DEFAULT_MAX_CHILDREN,
                1,
                MAX_CONCURRENT_SLOTS,
            )?,
            script_timeout: raw.secs(
                "script_timeout",
                DEFAULT_SCRIPT_TIMEOUT_SECS,
                1,
                MAX_SCRIPT_TIMEOUT_SECS,
            )?,
            max_output_bytes: raw.num(
                "max_output_bytes",
                DEFAULT_MAX_OUTPUT_BYTES,
                1,
                MAX_OUTPUT_CAP_BYTES,
            )?,
            syslog: raw.get("syslog").is_some_and(is_truthy),
            tags,
            profiles,
            key_type,
            warnings,
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
            if caps.len() > MAX_PROFILE_CAPS {
                return Err(format!(
                    "caps lists more than {MAX_PROFILE_CAPS} capabilities"
                ));
            }
            p.caps = caps;
        }
        "writable" => {
            p.writable = absolute_list("writable", value)?;
            if p.writable.len() > MAX_PROFILE_WRITABLE {
                return Err(format!(
                    "writable lists more than {MAX_PROFILE_WRITABLE} paths"
                ));
            }
        }
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

/// `\w+[\w-]*`: a word character first, then word characters or dashes.
fn is_agent_key(s: &str) -> bool {
    s.as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::conf::test_support::{secs, TempDir};

    const ACONF: &str = "/etc/ctrl-exec-agent/agent.conf";
    const ABASE: &str = "port = 7443\ncert = agent.crt\nkey = agent.key\nca = /x/ca.crt\n";

    fn aparse(text: &str) -> Result<AgentConf, ConfError> {
        AgentConf::parse_with(Path::new(ACONF), text, &|| "agent.example.org".to_string())
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
            PathBuf::from("/etc/ctrl-exec-agent/ctrl-exec-dispatchers")
        );
        assert_eq!(
            c.legacy_trusted_dispatchers_path,
            Some(PathBuf::from(
                "/var/lib/ctrl-exec-agent/ctrl-exec-dispatchers"
            ))
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
                "script_timeout must be a number 1-604800, got '0'",
            ),
            (
                "max_output_bytes = 0",
                "max_output_bytes must be a number 1-67108864",
            ),
            (
                "max_children = 0",
                "max_children must be a number 1-1048576",
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
    fn agent_conf_loads_from_file() {
        let t = TempDir::new("agentload");
        let file = t.0.join("agent.conf");
        fs::write(&file, format!("{ABASE}hostname = h\n")).unwrap();
        let c = AgentConf::load(&file).unwrap();
        assert_eq!(c.cert, t.0.join("agent.crt"));
    }
}
