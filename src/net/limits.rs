//! Transport bounds: the one home for every size and time limit of the
//! network stack.
//!
//! Each bound is a named constant with its unit in the name and the reason
//! for its value. [`Limits`] gathers them for one listener or client; its
//! `Default` uses the constants. Callers may override fields (from config or,
//! in tests, with tiny values); nothing else in `net` hard-codes a bound.

use std::time::Duration;

/// Header lines allowed after the request or status line.
///
/// 32 is the original implementation's limit: the 33rd line is answered with
/// 431. Real clients send 6 or 7, so this only stops abuse.
pub const MAX_HEADERS: usize = 32;

/// Bytes allowed for a whole message head (start line, headers, blank line).
///
/// 32 header lines of a few hundred bytes each fit easily; anything bigger is
/// not a client of this protocol, and the cap keeps each connection's head
/// buffer small however slowly the bytes arrive.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Bytes allowed for one message body (1 MiB).
///
/// The original refuses a declared `Content-Length` above 1 048 576 with 413;
/// the largest legitimate bodies (script arguments, CSRs, certificates) are a
/// few KiB.
pub const MAX_BODY_BYTES: usize = 1_048_576;

/// Time allowed for the whole head to arrive, from the first read.
///
/// One deadline for the head, not one per read, so a peer dripping a byte at
/// a time cannot hold a connection open (the original had no timeout at all).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for the whole body to arrive once the head is read.
///
/// Longer than the head: up to 1 MiB may come over a slow link.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for a TLS handshake; the TLS library sets none of its own.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed to write and flush one whole message.
///
/// A peer that stops reading must not pin the connection (and its permit)
/// forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause before the next `accept` after the process ran out of descriptors,
/// socket buffers or memory.
///
/// Retrying at once only spins (the backlog stays full and every try fails
/// the same way); 100 ms lets connections in flight finish and free
/// descriptors while costing a legitimate client at most a tenth of a second.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a server keeps reading after its last answer, before it
/// closes.
///
/// Closing a socket with unread bytes makes the kernel send a reset, and a
/// reset can destroy the answer before the peer reads it: a client still
/// sending a body that was refused with 413 would see "connection reset"
/// instead of the 413. The server half-closes, then discards what arrives
/// until the peer closes too, for at most this long.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(1);

/// Most bytes discarded while lingering: one request of the largest size
/// accepted, head and body, so a refused request can be drained whole.
pub const LINGER_BYTES: usize = MAX_BODY_BYTES + MAX_HEAD_BYTES;

/// Shortest gap between two `conn-shed` summary lines of one listener.
///
/// A flood sheds a connection per accept; one line per shed would let the
/// attacker fill the log. One line a second (with the count since the last)
/// tells the operator the same.
pub const SHED_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes requested from the stream per read.
///
/// Buffers grow in steps of this size as bytes arrive, never to a declared
/// length up front, so a peer announcing 1 MiB and sending nothing costs one
/// step, not 1 MiB.
pub const READ_CHUNK_BYTES: usize = 4 * 1024;

/// Peer certificates whose issuer signature one verifier remembers.
///
/// Checking the CA's signature on a peer certificate is a P-256 (or RSA)
/// verification, a fifth of a server's handshake; a peer presents the same
/// bytes on every connection, so the result is kept (validity period and
/// handshake signature are still checked every time). 1024 entries of 64
/// bytes cover a long-lived client's thousand peers in 64 KiB; the oldest
/// entry makes room for a new one.
pub const VERIFIED_LEAF_ENTRIES: usize = 1024;

/// TLS sessions one listener keeps for resumption.
///
/// Each holds the client's certificate chain and secrets (about 1 KiB), so
/// rustls's default of 256 would let a router's listener grow by a quarter
/// of a MiB on sessions a one-shot client never comes back for. 32 serve
/// a few long-lived clients resuming at once; a client that finds its
/// session gone makes a full handshake, nothing worse.
pub const SERVER_SESSIONS: usize = 32;

/// TLS 1.3 session tickets sent after each full or resumed handshake.
///
/// A client resuming in a loop spends one ticket per connection and gets
/// one back; rustls's default of 2 doubles the work and the cache entries
/// for nothing.
pub const TICKETS_PER_HANDSHAKE: usize = 1;

/// The bounds one connection is read and written under.
///
/// # Defaults
///
/// - `max_headers`: [`MAX_HEADERS`] (32 lines)
/// - `max_head_bytes`: [`MAX_HEAD_BYTES`] (16 KiB)
/// - `max_body_bytes`: [`MAX_BODY_BYTES`] (1 MiB, 1 048 576 bytes)
/// - `head_timeout`: [`HEAD_TIMEOUT`] (10 s)
/// - `body_timeout`: [`BODY_TIMEOUT`] (30 s)
/// - `handshake_timeout`: [`HANDSHAKE_TIMEOUT`] (10 s)
/// - `write_timeout`: [`WRITE_TIMEOUT`] (30 s)
#[derive(Clone, Debug)]
pub struct Limits {
    /// Header lines allowed in one head; one more is refused with 431.
    pub max_headers: usize,
    /// Bytes allowed for one head; a longer head is refused with 431.
    pub max_head_bytes: usize,
    /// Bytes allowed for one body; a larger one is refused with 413.
    pub max_body_bytes: usize,
    /// Deadline for the whole head, counted from the start of the read.
    pub head_timeout: Duration,
    /// Deadline for the whole body, counted from the end of the head.
    pub body_timeout: Duration,
    /// Deadline for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Deadline for writing one whole message.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_headers: MAX_HEADERS,
            max_head_bytes: MAX_HEAD_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            head_timeout: HEAD_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}
