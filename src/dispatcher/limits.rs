//! Limits of the dispatcher CLI (`ced`), each with its unit and the reason
//! for its value. Limits shared with the API live in `conf` (ctrl-exec.conf
//! keys such as `max_hosts`) and in `net::limits`.

/// Largest list read from a file or stdin (hosts for `--hosts-file`, names
/// and pairing codes for `approve --codes-file`), in bytes: a million names
/// of 16 bytes on average, far above any `max_hosts` worth setting.
pub const MAX_LIST_FILE_BYTES: u64 = 16 << 20;
