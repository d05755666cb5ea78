//! Upper bounds of config values: every maximum a key is checked against.
//!
//! Each is a named const with its unit in the name and a comment saying why
//! that value. Parsers refuse a value above its maximum with a `ConfError`
//! naming the file, line and key.

/// Upper bound of `pairing_timeout`: pairing mode is meant to be brief.
pub const MAX_PAIRING_TIMEOUT_SECS: u64 = 600;
/// Maximum length of a `dispatcher_id` (it must fit the trusted map's id rule).
pub const MAX_DISPATCHER_ID_CHARS: usize = 64;
/// Maximum length of a script name (a file-name component on most systems).
pub const MAX_SCRIPT_NAME_CHARS: usize = 255;
