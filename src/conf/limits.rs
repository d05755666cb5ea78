//! Upper bounds of config values: every maximum a key is checked against.
//!
//! Each is a named const with its unit in the name and a comment saying why
//! that value. A parser refuses a value above its maximum with a `ConfError`
//! naming the file, line and key and stating the maximum, so no value read from
//! a file can overflow the `Instant`, `Duration` or date arithmetic done with
//! it later (the release build aborts on a panic). The maxima are generous: each
//! sits far above any setting a real deployment uses.

/// Largest config file read (`ctrl-exec.conf`, `agent.conf`, `scripts.conf`):
/// 4 MiB. The biggest real file is an allowlist, and 4 MiB holds tens of
/// thousands of entries; the cap keeps a path pointed at a huge file or a
/// device from exhausting memory.
pub const MAX_CONF_FILE_BYTES: usize = 4 << 20;

/// Characters of a message kept when a config error or allowlist warning is
/// shown: 240. Messages quote the offending line or value, and a
/// multi-megabyte line must not become a multi-megabyte log line; the file,
/// line and key come first, so only the tail of the quote is cut.
pub const MAX_MESSAGE_CHARS: usize = 240;

/// Upper bound of `script_timeout` and of `timeout=` in scripts.conf: 7 days
/// (604 800 s). Covers the longest maintenance job (a full backup or
/// re-index); a run meant to last longer belongs in a service, not a request.
pub const MAX_SCRIPT_TIMEOUT_SECS: u64 = 604_800;

/// Upper bound of `read_timeout` (and its alias `timeout`): 7 days
/// (604 800 s), the same as [`MAX_SCRIPT_TIMEOUT_SECS`], since a sync run
/// waits for the longest script an agent may run.
pub const MAX_READ_TIMEOUT_SECS: u64 = 604_800;

/// Upper bound of `auth_hook_timeout` (dispatcher and agent): 1 hour
/// (3600 s). A hook answers yes or no; an hour covers one that waits on a
/// slow directory service or a person, and each waiting hook holds a request.
pub const MAX_AUTH_HOOK_TIMEOUT_SECS: u64 = 3_600;

/// Upper bound of `stdin_timeout`: 1 hour (3600 s). Writing the request JSON
/// (at most one request body) to a script takes milliseconds; an hour only
/// allows for a script that reads its stdin late.
pub const MAX_STDIN_TIMEOUT_SECS: u64 = 3_600;

/// Upper bound of `pairing_timeout`: 600 s. Pairing mode is meant to be brief,
/// and the agent's interactive `request-pairing` waits a little longer (660 s).
pub const MAX_PAIRING_TIMEOUT_SECS: u64 = 600;

/// Upper bound of `cert_days`: 36 500 days (100 years). Keeps certificate
/// validity arithmetic far from overflow; X.509 dates end in 9999 anyway.
pub const MAX_CERT_DAYS: u32 = 36_500;

/// Upper bound of `cert_check_interval`: 30 days (2 592 000 s). A pairing
/// mode runs at most 600 s, so any longer interval means "at start only".
pub const MAX_CERT_CHECK_INTERVAL_SECS: u64 = 2_592_000;

/// Upper bound of the window of a rate rule (`rate_limit_volume`,
/// `rate_limit_probe`, `pairing_rate_limit_volume`): 7 days (604 800 s). The
/// limiter keeps an IP's event times for the whole window; a longer one counts
/// ordinary traffic as a flood.
pub const MAX_RATE_WINDOW_SECS: u64 = 604_800;

/// Upper bound of the block of a rate rule: 30 days (2 592 000 s). Blocks live
/// in memory and end at a restart, so a longer one would mean nothing.
pub const MAX_RATE_BLOCK_SECS: u64 = 2_592_000;

/// Upper bound of `max_children`, `api_max_children` and `max_parallel`:
/// 1 048 576, Linux's default `fs.nr_open`. Each slot holds a connection, so a
/// process can never use more; the agent also sizes a buffer by `max_children`
/// at shutdown, which a larger value would overflow.
pub const MAX_CONCURRENT_SLOTS: usize = 1 << 20;

/// Largest `max_hosts`: a million targets, each a registry read and a
/// result in memory (about 1 KiB), is the most one process should hold.
pub const MAX_HOSTS_PER_CALL: usize = 1_000_000;

/// Upper bound of `max_output_bytes` (agent.conf, and ctrl-exec.conf where
/// it sizes the largest agent reply read): 64 MiB. Each run keeps up to this
/// much per stream in memory, and the dispatcher reads a reply up to what
/// two such streams take as JSON (`control::engine::max_reply_bytes`).
pub const MAX_OUTPUT_CAP_BYTES: usize = 64 << 20;

/// Identifier lengths are the wire's (`proto::limits`), not the config's.
pub use crate::proto::limits::{MAX_DISPATCHER_ID_CHARS, MAX_SCRIPT_NAME_CHARS};

/// Most `[profile NAME]` sections in agent.conf: the original's limit (64);
/// a real host needs a handful.
pub const MAX_PROFILES: usize = 64;

/// Most capabilities one profile may list: the original's limit (32), more
/// than any script should hold.
pub const MAX_PROFILE_CAPS: usize = 32;

/// Most `writable` paths one profile may list: the original's limit (32);
/// each is one bind mount per run.
pub const MAX_PROFILE_WRITABLE: usize = 32;

/// Most `script_dirs` entries: the original's limit (32); every run checks
/// its path against each.
pub const MAX_SCRIPT_DIRS: usize = 32;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::conf::{parse_allowlist, AgentConf, DispatcherConf};

    const DCONF: &str = "/etc/ctrl-exec/ctrl-exec.conf";
    const ACONF: &str = "/etc/ctrl-exec-agent/agent.conf";
    // Both set the host name, so `parse` does no lookup; the key under test is line 5.
    const DBASE: &str = "cert = d.crt\nkey = d.key\nca = ca.crt\ndispatcher_id = ced\n";
    const ABASE: &str = "port = 7443\ncert = a.crt\nkey = a.key\nca = ca.crt\nhostname = a\n";

    #[derive(Clone, Copy)]
    enum File {
        Dispatcher,
        Agent,
    }

    fn parse(file: File, key: &str, value: &str) -> Result<(), String> {
        let r = match file {
            File::Dispatcher => {
                DispatcherConf::parse(Path::new(DCONF), &format!("{DBASE}{key} = {value}\n"))
                    .map(drop)
            }
            File::Agent => {
                // Agent keys go on line 6, after `hostname`.
                AgentConf::parse(Path::new(ACONF), &format!("{ABASE}{key} = {value}\n")).map(drop)
            }
        };
        r.map_err(|e| e.to_string())
    }

    /// Every bounded key: (file, key, value with `N` for the number, maximum).
    const BOUNDED: &[(File, &str, &str, u64)] = &[
        (File::Dispatcher, "read_timeout", "N", MAX_READ_TIMEOUT_SECS),
        (File::Dispatcher, "timeout", "N", MAX_READ_TIMEOUT_SECS),
        (
            File::Dispatcher,
            "auth_hook_timeout",
            "N",
            MAX_AUTH_HOOK_TIMEOUT_SECS,
        ),
        (File::Dispatcher, "cert_days", "N", MAX_CERT_DAYS as u64),
        (
            File::Dispatcher,
            "cert_overlap_days",
            "N",
            MAX_CERT_DAYS as u64,
        ),
        (
            File::Dispatcher,
            "dispatcher_cert_days",
            "N",
            MAX_CERT_DAYS as u64,
        ),
        (
            File::Dispatcher,
            "cert_check_interval",
            "N",
            MAX_CERT_CHECK_INTERVAL_SECS,
        ),
        (
            File::Dispatcher,
            "pairing_timeout",
            "N",
            MAX_PAIRING_TIMEOUT_SECS,
        ),
        (
            File::Dispatcher,
            "api_max_children",
            "N",
            MAX_CONCURRENT_SLOTS as u64,
        ),
        (
            File::Dispatcher,
            "max_parallel",
            "N",
            MAX_CONCURRENT_SLOTS as u64,
        ),
        (
            File::Dispatcher,
            "pairing_rate_limit_volume",
            "10/N/300",
            MAX_RATE_WINDOW_SECS,
        ),
        (
            File::Dispatcher,
            "pairing_rate_limit_volume",
            "10/60/N",
            MAX_RATE_BLOCK_SECS,
        ),
        (
            File::Agent,
            "auth_hook_timeout",
            "N",
            MAX_AUTH_HOOK_TIMEOUT_SECS,
        ),
        (File::Agent, "stdin_timeout", "N", MAX_STDIN_TIMEOUT_SECS),
        (File::Agent, "script_timeout", "N", MAX_SCRIPT_TIMEOUT_SECS),
        (
            File::Agent,
            "max_children",
            "N",
            MAX_CONCURRENT_SLOTS as u64,
        ),
        (
            File::Agent,
            "max_output_bytes",
            "N",
            MAX_OUTPUT_CAP_BYTES as u64,
        ),
        (
            File::Agent,
            "rate_limit_volume",
            "10/N/300",
            MAX_RATE_WINDOW_SECS,
        ),
        (
            File::Agent,
            "rate_limit_volume",
            "10/60/N",
            MAX_RATE_BLOCK_SECS,
        ),
        (
            File::Agent,
            "rate_limit_probe",
            "3/N/3600",
            MAX_RATE_WINDOW_SECS,
        ),
        (
            File::Agent,
            "rate_limit_probe",
            "3/600/N",
            MAX_RATE_BLOCK_SECS,
        ),
    ];

    #[test]
    fn every_bounded_key_accepts_its_maximum_and_refuses_one_more() {
        for &(file, key, shape, max) in BOUNDED {
            let at_max = shape.replace('N', &max.to_string());
            assert_eq!(parse(file, key, &at_max), Ok(()), "{key} = {at_max}");

            let over = shape.replace('N', &(max + 1).to_string());
            let msg = parse(file, key, &over).expect_err(&format!("{key} = {over}"));
            let want = match file {
                File::Dispatcher => format!("{DCONF}:5: {key} "),
                File::Agent => format!("{ACONF}:6: {key} "),
            };
            assert!(msg.starts_with(&want), "{key} = {over}: {msg}");
            assert!(msg.contains(&max.to_string()), "{key} = {over}: {msg}");
            assert!(msg.contains(&format!("'{over}'")), "{key} = {over}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn huge_and_negative_values_are_config_errors_not_panics() {
        let huge = [
            "18446744073709551615",
            "18446744073709551616",
            "400000000",
            "-1",
            "+5",
            "1e9",
            "99999999999999999999999999999999999999999999999999",
        ];
        for v in huge {
            for key in [
                "read_timeout",
                "auth_hook_timeout",
                "cert_days",
                "max_parallel",
            ] {
                let e = parse(File::Dispatcher, key, v).expect_err(key);
                assert!(e.starts_with(&format!("{DCONF}:5: {key} must be")), "{e}");
            }
            for key in [
                "script_timeout",
                "stdin_timeout",
                "max_children",
                "max_output_bytes",
            ] {
                let e = parse(File::Agent, key, v).expect_err(key);
                assert!(e.starts_with(&format!("{ACONF}:6: {key} must be")), "{e}");
            }
            let e = parse(File::Agent, "rate_limit_probe", &format!("3/{v}/60")).unwrap_err();
            assert!(
                e.starts_with(&format!("{ACONF}:6: rate_limit_probe ")),
                "{e}"
            );
        }
        assert_eq!(
            parse(File::Dispatcher, "cert_days", "4000000"),
            Err(format!(
                "{DCONF}:5: cert_days must be a number 1-36500, got '4000000'"
            ))
        );
        assert_eq!(
            parse(File::Agent, "script_timeout", "18446744073709551615"),
            Err(format!(
                "{ACONF}:6: script_timeout must be a number 1-604800, got '18446744073709551615'"
            ))
        );
    }

    #[test]
    fn allowlist_timeout_accepts_its_maximum_and_skips_one_more() {
        let text = format!(
            "a = /a.sh timeout={MAX_SCRIPT_TIMEOUT_SECS}\nb = /b.sh timeout={}\nc = /c.sh timeout=18446744073709551616\n",
            MAX_SCRIPT_TIMEOUT_SECS + 1
        );
        let list = parse_allowlist(Path::new("s.conf"), &text, &[]);
        assert_eq!(list.scripts.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            list.warnings,
            [
                "s.conf:2: skipped 'b': timeout must be a number of seconds 1-604800, got '604801'",
                "s.conf:3: skipped 'c': timeout must be a number of seconds 1-604800, got '18446744073709551616'",
            ]
        );
    }

    #[test]
    fn maxima_leave_the_arithmetic_room() {
        use std::time::{Duration, Instant};
        let now = Instant::now();
        for secs in [
            MAX_SCRIPT_TIMEOUT_SECS,
            MAX_READ_TIMEOUT_SECS,
            MAX_AUTH_HOOK_TIMEOUT_SECS,
            MAX_STDIN_TIMEOUT_SECS,
            MAX_RATE_WINDOW_SECS,
            MAX_RATE_BLOCK_SECS,
        ] {
            assert!(now.checked_add(Duration::from_secs(secs)).is_some());
        }
        // Certificate end dates are computed in i64 seconds from now.
        assert!(i64::from(MAX_CERT_DAYS).checked_mul(86_400).is_some());
    }
}
