//! Bounds on what the wire may carry, independent of any listener.

/// Deepest JSON nesting accepted from a peer or read from a record.
///
/// The original's messages are at most four levels deep (a capabilities
/// reply: object, `scripts` array, script entry, `schema`); a schema sidecar
/// adds its own nesting, and real JSON Schemas stay well under 20. 64 leaves
/// room for both while keeping every later walk of the value (clone,
/// comparison, printing) far from the stack's limit: a 100 000-deep reply is
/// refused at parse time instead of overflowing a thread later.
pub const MAX_JSON_DEPTH: usize = 64;

/// Longest request id accepted (`^[A-Za-z0-9_-]{1,128}$`): ids become file
/// names in the run store and the host's job store.
pub const MAX_REQID_CHARS: usize = 128;

/// Longest script name accepted; the original has no limit, 255 keeps it a
/// valid file-name component for lock files.
pub const MAX_SCRIPT_NAME_CHARS: usize = 255;

/// Longest host name: a DNS name is at most 253 characters, and the name is
/// the certificate CN and the registry file name.
pub const MAX_AGENT_NAME_CHARS: usize = 253;

/// Longest controller id, as the original truncates it (protocol.md 5.6).
pub const MAX_DISPATCHER_ID_CHARS: usize = 64;

/// Longest serial accepted, in hex digits: RFC 5280 allows 20 octets; the
/// original's `openssl` serials are shorter. 64 leaves room for colon forms
/// written by hand.
pub const MAX_SERIAL_HEX_DIGITS: usize = 64;

/// Most items read into one list field of a request (`hosts`, `args`):
/// bounds what a body can make the reader keep. Far above any real fan-out
/// or argument list; the dispatch path applies its own, smaller host limit.
pub const MAX_LIST_ITEMS: usize = 10_000;
