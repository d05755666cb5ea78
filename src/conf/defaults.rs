//! Defaults: the one home for every value a config key falls back to, and the
//! fixed file and directory names the parsers derive paths from.

use crate::conf::RateRule;

/// Agent listen port used in the shipped example (`port` itself is required).
pub const DEFAULT_AGENT_PORT: u16 = 7443;
/// Agent bind address: all IPv4 interfaces, as the original listened.
pub const DEFAULT_AGENT_BIND: &str = "0.0.0.0";
/// Agent state directory (systemd `StateDirectory`).
pub const DEFAULT_AGENT_STATE_DIR: &str = "/var/lib/ctrl-exec-agent";
/// File name of the trusted-dispatcher map inside the agent state directory.
pub const TRUSTED_DISPATCHERS_FILE: &str = "ctrl-exec-dispatchers";
/// Trusted-map changes the agent could not write into the map itself
/// (`/rotate-serial`), kept in its state directory: the whole map they
/// lead to. Checked again at every load; `promote-cert` (root, at start)
/// writes them into the map.
pub const TRUST_STAGING_FILE: &str = "ctrl-exec-dispatchers.staged";
/// The certificates of the serials a staged map adds (PEM), which the
/// checks of a staged map need.
pub const TRUST_STAGING_CERTS_FILE: &str = "ctrl-exec-dispatchers.staged.pem";
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
/// Agent volume rule: the 10th unauthenticated connection within a minute from
/// one IP blocks it for five minutes (trusted dispatchers are not counted).
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
/// Hosts one `ced` call may address: room for a fleet of thousands, while a
/// runaway host list (a glob over the wrong file) still stops before the
/// dispatcher opens ten thousand connections.
pub const DEFAULT_MAX_HOSTS: usize = 10_000;
/// Hosts one API request may address: the original's fixed limit, since
/// the API faces other programs.
pub const DEFAULT_API_MAX_HOSTS: usize = 500;
/// Lifetime in days of certificates re-signed at renewal.
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// Lifetime in days of the dispatcher's own certificate, at setup and at
/// rotation (the original's 825).
pub const DEFAULT_DISPATCHER_CERT_DAYS: u32 = 825;
/// The dispatcher certificate is rotated when at most this many days are left.
pub const DEFAULT_CERT_RENEWAL_DAYS: u32 = 90;
/// Days after a rotation during which agents still accept the previous
/// dispatcher serial and can be brought up to date with it.
pub const DEFAULT_CERT_OVERLAP_DAYS: u32 = 30;
/// Seconds between certificate checks in a running pairing mode.
pub const DEFAULT_CERT_CHECK_INTERVAL_SECS: u64 = 14_400;
/// File name of the rotation state inside the dispatcher state directory.
pub const ROTATION_FILE: &str = "rotation.json";
/// Common name of every dispatcher certificate (protocol.md 6.2): what an
/// agent requires of a certificate announced to it by `/rotate-serial`.
pub const DISPATCHER_COMMON_NAME: &str = "ctrl-exec-dispatcher";
/// Pairing session length in seconds; also the maximum allowed.
pub const DEFAULT_PAIRING_TIMEOUT_SECS: u64 = 600;
/// Pending pairing requests held at once.
pub const DEFAULT_PAIRING_MAX_QUEUE: usize = 10;
/// Pairing-port volume rule (same shape and default as the agent's).
pub const DEFAULT_PAIRING_RATE_LIMIT: RateRule = RateRule::secs(10, 60, 300);
/// `dispatcher_id` when the configured or host name sanitises to nothing.
pub const FALLBACK_DISPATCHER_ID: &str = "dispatcher";
