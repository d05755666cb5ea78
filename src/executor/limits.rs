//! The executor's limits, each with its unit and the reason for its value.

use std::time::Duration;

/// Requests served at once; beyond, a connection is answered `executor:
/// busy`. Above the agent's default concurrency, so a busy agent is never
/// refused by its own executor, yet bounded: each request may hold up to a
/// 16 MiB frame.
pub const MAX_CONNECTIONS: usize = 64;

/// Time for a peer to deliver its whole request frame, in seconds: a local
/// front-end writes it at once; a stalled peer must not hold a slot.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time for the front-end to take the response, in seconds.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a hung-up check read at a time (the front-end sends nothing
/// after its request; anything it does send is discarded).
pub const HANGUP_PROBE_BYTES: usize = 64;
