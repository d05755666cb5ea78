//! The agent's trust files: the trusted-dispatcher map and the revocation list.
//!
//! Both are keyed on certificate serials in minimal lowercase hex
//! ([`pki::canonical_serial`]). Matching is on the exact serial: an all-digit
//! serial is hex here, so serials 0x10 and 0x0a never alias (the original read
//! all-digit strings as decimal, which let one certificate pass for another).
//!
//! Files written by the original are read unchanged, with that one
//! difference. An all-digit entry means the same certificate to both when the
//! original compared it against a live serial (it mangled both sides alike);
//! only a short entry with a letter can stand, in a map the original wrote,
//! for a serial whose hex is all digits (`a` for 0x10). Such entries are
//! flagged by `cea self-check` ([`ambiguous_entries`]), and a refused serial
//! that the original would have matched is named in the refusal log
//! ([`original_reading_match`]), so the entry can be corrected by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::conf::AgentConf;
use crate::{fsx, log, pki};

/// Serial -> dispatcher id.
pub type TrustedMap = BTreeMap<String, String>;

/// Whether `id` is a valid dispatcher id (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
pub fn valid_dispatcher_id(id: &str) -> bool {
    crate::proto::DispatcherId::parse(id).is_some()
}

/// Parses the trusted map text; malformed lines are skipped with a warning.
pub fn parse_trusted(text: &str) -> TrustedMap {
    let mut map = TrustedMap::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(2, char::is_whitespace);
        let (serial, id) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").trim(),
        );
        match pki::canonical_serial(serial) {
            Some(s) if valid_dispatcher_id(id) => {
                map.insert(s, id.to_string());
            }
            _ => log::warn(
                "config-warn",
                &[
                    ("ENTRY", line),
                    ("MSG", "malformed trusted-dispatcher line skipped"),
                ],
            ),
        }
    }
    map
}

/// Longest entry, in hex digits, that can be a serial from the original's
/// CA (small sequential integers); ours are 128-bit random values.
const SHORT_SERIAL_DIGITS: usize = 8;

/// The entry a map written by the original holds for `peer_serial` when
/// that serial's hex is all digits: the original wrote such a serial in its
/// decimal reading (0x10 as `a`), an entry this agent reads as another
/// serial. `None` when the peer serial has a letter (the original wrote it
/// as it is) or no entry has that form. Only ever used to word a refusal.
pub fn original_reading_match<'m>(
    map: &'m TrustedMap,
    peer_serial: &str,
) -> Option<(&'m str, &'m str)> {
    if !peer_serial.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let written = pki::perl_serial(peer_serial)?;
    map.get_key_value(&written)
        .filter(|(entry, _)| entry.bytes().any(|c| c.is_ascii_alphabetic()))
        .map(|(e, id)| (e.as_str(), id.as_str()))
}

/// Short entries (at most [`SHORT_SERIAL_DIGITS`] hex digits: serials of the
/// original's CA) that the original read differently: (entry, dispatcher id,
/// the other serial the entry may stand for in a map the original wrote).
/// The exact reading is the one used; this is for `cea self-check`.
pub fn ambiguous_entries(map: &TrustedMap) -> Vec<(String, String, String)> {
    map.iter()
        .filter(|(e, _)| e.len() <= SHORT_SERIAL_DIGITS)
        .filter_map(|(e, id)| {
            let value = u64::from_str_radix(e, 16).ok()?;
            let other = if e.bytes().all(|c| c.is_ascii_digit()) {
                // The original read this as decimal.
                format!("{:x}", e.parse::<u64>().ok()?)
            } else {
                // The original wrote this for the serial whose hex digits are these decimal ones.
                value.to_string()
            };
            (value >= 10 && other != *e).then(|| (e.clone(), id.clone(), other))
        })
        .collect()
}

/// Reads the trusted map; a missing file is an empty map (every gated
/// endpoint then answers 403: fail closed).
pub fn load_trusted(path: &Path) -> io::Result<TrustedMap> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_trusted(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TrustedMap::new()),
        Err(e) => Err(e),
    }
}

/// Renders the map in the original's file format.
pub fn render_trusted(map: &TrustedMap) -> String {
    let mut out = String::from(
        "# ctrl-exec trusted dispatchers: <serial> <id>, one per line.\n# Managed by pairing - do not edit by hand.\n",
    );
    for (serial, id) in map {
        out.push_str(&format!("{serial} {id}\n"));
    }
    out
}

/// Adds or updates one entry, writing the file atomically (mode 0644).
pub fn add_trusted(path: &Path, serial: &str, id: &str) -> io::Result<()> {
    let mut map = load_trusted(path)?;
    map.insert(serial.to_string(), id.to_string());
    if let Some(dir) = path.parent() {
        fsx::ensure_dir(dir, 0o750)?;
    }
    fsx::write_atomic(path, render_trusted(&map).as_bytes(), 0o644)
}

/// Parses the revocation list: one serial per line in any accepted form,
/// `#` comments (whole-line or trailing). Unparsable lines are skipped with
/// a warning.
pub fn parse_revoked(text: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match pki::canonical_serial(line) {
            Some(s) => {
                set.insert(s);
            }
            None => log::warn(
                "config-warn",
                &[
                    ("ENTRY", line),
                    ("MSG", "unparsable revoked serial skipped"),
                ],
            ),
        }
    }
    set
}

/// Reads the revocation list; a missing file revokes nothing.
pub fn load_revoked(path: &Path) -> io::Result<BTreeSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_revoked(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::info(
                "revoked-serials-absent",
                &[
                    ("PATH", &path.display().to_string()),
                    ("REASON", "no such file"),
                ],
            );
            Ok(BTreeSet::new())
        }
        Err(e) => Err(e),
    }
}

/// The files that decide whom the agent trusts and who it is: the trusted
/// map, the revocation list, its certificate, key and CA.
pub fn trust_files(conf: &AgentConf) -> [&Path; 5] {
    [
        &conf.trusted_dispatchers_path,
        &conf.revoked_serials,
        &conf.cert,
        &conf.key,
        &conf.ca,
    ]
}

/// Who a check is for: the user (and group) the agent, and so every
/// script it starts without a profile, runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunsAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// The trust files (and directories holding them) that `who` could
/// replace: an existing file it owns or may write, or whose directory it
/// owns or may write (so it could rename another file over it). Missing
/// optional files (no revocation list) are judged by their directory.
/// Root is not judged: as root, scripts can do anything anyway.
pub fn replaceable_by(conf: &AgentConf, who: RunsAs) -> Vec<PathBuf> {
    if who.uid == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for file in trust_files(conf) {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for path in [file, dir] {
            if writable_by(path, who) && !out.iter().any(|p: &PathBuf| p == path) {
                out.push(path.to_path_buf());
            }
        }
    }
    out
}

/// Whether `who` owns `path` (and so may chmod it) or may write it by its
/// mode; false when it does not exist.
fn writable_by(path: &Path, who: RunsAs) -> bool {
    let Ok(st) = rustix::fs::stat(path) else {
        return false;
    };
    let mode = st.st_mode;
    st.st_uid == who.uid || (mode & 0o002 != 0) || (mode & 0o020 != 0 && st.st_gid == who.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_files_in_a_directory_the_agent_user_owns_are_replaceable() {
        let dir = std::env::temp_dir().join(format!("trust-owned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            "port = 7443\ncert = {d}/a.crt\nkey = {d}/a.key\nca = {d}/ca.crt\nstate_dir = {d}\n",
            d = dir.display()
        );
        let conf = AgentConf::parse(&dir.join("agent.conf"), &text).unwrap();
        if rustix::process::geteuid().is_root() {
            // Root is never judged; hand the directory to a service user.
            let user = Some(rustix::process::Uid::from_raw(4321));
            let group = Some(rustix::process::Gid::from_raw(4321));
            rustix::fs::chown(&dir, user, group).unwrap();
        }
        let me = rustix::fs::stat(&dir).unwrap();
        let owner = RunsAs {
            uid: me.st_uid,
            gid: me.st_gid,
        };
        assert!(replaceable_by(&conf, owner).contains(&dir));
        let stranger = RunsAs {
            uid: 54_321,
            gid: 54_321,
        };
        assert!(replaceable_by(&conf, stranger).is_empty() || me.st_mode & 0o002 != 0);
        assert!(replaceable_by(&conf, RunsAs { uid: 0, gid: 0 }).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn trusted_map_round_trips_and_skips_garbage() {
        let map = parse_trusted("# c\n0A dispatcher-1\nzz bad\n10 other # note\n ff \n");
        assert_eq!(map.get("a").map(String::as_str), Some("dispatcher-1"));
        assert_eq!(map.get("10").map(String::as_str), Some("other"));
        assert_eq!(map.len(), 2);
        assert_eq!(parse_trusted(&render_trusted(&map)), map);
    }

    #[test]
    fn serials_never_alias() {
        let map = parse_trusted("10 d1\n");
        assert!(map.contains_key("10"));
        assert!(!map.contains_key("a"), "0x10 must not match 0x0a");
    }

    #[test]
    fn revocation_forms() {
        let set = parse_revoked("0A\nAA:BB\n0x1f\nserial=10\n26 # trailing comment\n");
        for s in ["a", "aabb", "1f", "10", "26"] {
            assert!(set.contains(s), "{s}");
        }
        assert!(!set.contains("1a"));
    }

    #[test]
    fn a_perl_written_map_is_read_exactly_and_its_ambiguities_named() {
        // The original's own file for a dispatcher of serial 2, one of serial 0x10 (written
        // as `a`) and an all-digit entry added by hand.
        let text = "# ctrl-exec trusted dispatchers: <serial> <id>, one per line.\n\
                    # Managed by pairing - do not edit by hand.\n2 perl-1\na perl-2\n20 by-hand\n";
        let map = parse_trusted(text);
        assert_eq!(map.get("2").map(String::as_str), Some("perl-1"));
        assert_eq!(map.get("a").map(String::as_str), Some("perl-2"));
        assert_eq!(map.get("20").map(String::as_str), Some("by-hand"));
        // The true serial 0x10 is not trusted (that would let 0x0a in too) but is named.
        assert!(!map.contains_key("10"));
        assert_eq!(original_reading_match(&map, "10"), Some(("a", "perl-2")));
        assert_eq!(original_reading_match(&map, "2"), None);
        assert_eq!(original_reading_match(&map, "3"), None);
        // An all-digit entry is never "corrected" towards its decimal reading.
        assert_eq!(original_reading_match(&parse_trusted("10 d\n"), "a"), None);
        assert_eq!(
            ambiguous_entries(&map),
            vec![
                ("20".to_string(), "by-hand".to_string(), "14".to_string()),
                ("a".to_string(), "perl-2".to_string(), "10".to_string()),
            ]
        );
        // Our 128-bit serials are never flagged.
        let ours = parse_trusted("3f0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e rust-1\n");
        assert!(ambiguous_entries(&ours).is_empty());
        // What we write, the original reads back (comment lines, `<serial> <id>`).
        assert!(render_trusted(&map).starts_with("# ctrl-exec trusted dispatchers: <serial> <id>, one per line.\n# Managed by pairing - do not edit by hand.\n"));
    }

    #[test]
    fn dispatcher_ids() {
        assert!(valid_dispatcher_id("ctrl-1.example_x"));
        assert!(!valid_dispatcher_id("-x"));
        assert!(!valid_dispatcher_id(""));
        assert!(!valid_dispatcher_id(&"a".repeat(65)));
    }
}
