//! The agent's fixed bounds and defaults, in one place. Configurable ones
//! (script timeout, output cap, `max_children`, `stdin_timeout`) have their
//! defaults in `conf`; transport bounds are in `net::limits`.

use std::time::Duration;

/// How long `self-ping` waits for its own agent.
pub const SELF_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `request-pairing` waits for the TCP connection to the listener.
pub const PAIRING_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an interactive `request-pairing` waits for the operator (the
/// listener gives up after 600 s; this is a little longer).
pub const PAIRING_WAIT: Duration = Duration::from_secs(660);

/// Default wait of `request-pairing --background`.
pub const PAIRING_BACKGROUND_DEFAULT: Duration = Duration::from_secs(30);

/// Upper bound of `request-pairing --background --timeout`.
pub const PAIRING_BACKGROUND_MAX_SECS: u64 = 600;

/// Async job records older than this are purged.
pub const RESULT_TTL: Duration = Duration::from_secs(86_400);

/// How long SIGTERM waits for requests in flight before exiting.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Handshake deadline for a connection from an IP the rate limiter has
/// blocked. A blocked IP is still let in, because a trusted dispatcher may
/// share it with whatever tripped the block (a port scanner on the
/// dispatcher host, say), but only a handshake that proves a trusted serial
/// goes on; a real dispatcher finishes in milliseconds, so 3 s is ample
/// even for a slow router and keeps the blocked peer's hold short.
pub const PROBATION_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// First wait before retrying a finished job's record the disk refused (a
/// full state dir); doubles up to [`RECORD_RETRY_MAX`].
pub const RECORD_RETRY_FIRST: Duration = Duration::from_secs(1);

/// Longest wait between retries of an unwritten record: an operator who
/// frees space sees the record on disk within about a minute.
pub const RECORD_RETRY_MAX: Duration = Duration::from_secs(60);

/// Finished records held in memory because the disk refused them. At this
/// many, new async runs are refused (their results could not be kept either)
/// rather than evicting a result; jobs already running may still add theirs,
/// so the count stays below this plus one per allowlisted script.
pub const MAX_UNWRITTEN_RECORDS: usize = 64;

/// How long the agent, at start, waits for a killed leftover process group
/// of a job from before a crash to be gone. Past it the script stays busy
/// (409) until the group is gone, rather than run twice.
pub const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(2);

/// Connections answered at once with 503 "overloaded" when every one of the
/// `max_children` slots carries a trusted dispatcher's request. Beyond this
/// a connection is closed without a word. Small: each costs a handshake
/// while the agent is already at its limit, and 4 is enough for the
/// dispatcher of a busy fan-out to learn why, not only that, it failed.
pub const OVERLOAD_ANSWERS: usize = 4;

/// Handshake deadline for a connection answered "overloaded": a trusted
/// dispatcher finishes in milliseconds, and a slow peer must not hold one of
/// the few [`OVERLOAD_ANSWERS`] places.
pub const OVERLOAD_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The agent warns (`ACTION=cert-expiry`, at start and at every reload)
/// when its certificate has fewer days left than this: the dispatcher
/// renews it at half of its `cert_days` (182 days by default), so a month
/// left means nothing has renewed it.
pub const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

/// Most entries the trusted-dispatcher map may hold: `/rotate-serial add`
/// beyond it is refused, so a trusted dispatcher cannot grow the map (and
/// every load of it) without bound. A fleet has a handful of dispatchers,
/// each with at most two serials during a rotation.
pub const MAX_TRUSTED_DISPATCHERS: usize = 256;

/// Most hex digits in a serial sent to `/rotate-serial`: X.509 serials are
/// at most 20 octets (RFC 5280 4.1.2.2).
pub const MAX_SERIAL_HEX_DIGITS: usize = 40;

/// Largest staged trust file read (the staged map, or its certificates):
/// the agent user can write them, so they are read through a cap. 256
/// entries of a few hundred bytes, or 256 certificates of a few KiB, fit.
pub const MAX_STAGED_TRUST_BYTES: u64 = 1 << 20;

/// Time to connect to the executor's socket: it is local, so a slow connect
/// means it is down or wedged, which must be a prompt per-run error.
pub const EXECUTOR_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time the executor gets beyond a script's own timeout to answer: it kills
/// the script at the timeout itself; this only covers a wedged executor.
pub const EXECUTOR_ANSWER_GRACE: Duration = Duration::from_secs(15);

/// Bytes an executor response may carry beyond two capped output streams:
/// the framing and the executor's own error text.
pub const EXECUTOR_RESPONSE_SLACK_BYTES: usize = 64 * 1024;
