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
//! `/rotate-serial` changes the map. The map lives where the agent user
//! (and so every script) cannot write, so the agent usually cannot write it
//! either: a change it cannot write is *staged* in its state directory as
//! the whole map it leads to, plus the certificates of the serials it adds
//! ([`persist`]). A staged map is script-writable, so it is never taken on
//! trust: at every load, and when `cea promote-cert` (root, at start) writes
//! it into the map, only the changes [`apply_staged`] accepts are applied:
//! an added serial needs a certificate issued by the agent's CA for the
//! dispatcher common name, valid now, holding that serial, under an id the
//! map already has; an existing serial never changes owner; removals never
//! empty the map.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::agent::limits::{
    MAX_SERIAL_HEX_DIGITS, MAX_STAGED_TRUST_BYTES, MAX_TRUSTED_DISPATCHERS,
};
use crate::conf::{
    AgentConf, DISPATCHER_COMMON_NAME, TRUST_STAGING_CERTS_FILE, TRUST_STAGING_FILE,
};
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

/// Writes the map file atomically, mode 0644, keeping the owner and group
/// of the file it replaces when this process may (root).
pub fn write_trusted(path: &Path, map: &TrustedMap) -> io::Result<()> {
    let before = std::fs::metadata(path).ok();
    fsx::write_atomic(path, render_trusted(map).as_bytes(), 0o644)?;
    if let Some(m) = before {
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()))?;
        }
    }
    Ok(())
}

/// A serial sent to `/rotate-serial`, canonical; `None` unless it is a
/// form [`pki::canonical_serial`] reads with 1 to
/// [`MAX_SERIAL_HEX_DIGITS`] hex digits.
pub fn rotation_serial(text: &str) -> Option<String> {
    let canonical = pki::canonical_serial(text)?;
    let mut s = text.trim();
    for prefix in ["serial=", "0x"] {
        if s.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        {
            s = &s[prefix.len()..];
        }
    }
    let digits = s.chars().filter(|&c| c != ':').count();
    (digits <= MAX_SERIAL_HEX_DIGITS).then_some(canonical)
}

/// Checks a certificate announced for `serial`: issued by the CA in
/// `ca_pem`, valid at `now`, not a CA, common name the dispatcher's, and
/// holding exactly `serial`. Only a CA key holder can make one, so a
/// serial backed by it is one the CA gave a dispatcher.
pub fn check_announced(cert_pem: &str, serial: &str, ca_pem: &str, now: i64) -> Result<(), String> {
    let (Some(cert), Some(ca)) = (
        pki::pem_certs(cert_pem).into_iter().next(),
        pki::pem_certs(ca_pem).into_iter().next(),
    ) else {
        return Err("no certificate".into());
    };
    let info = pki::cert_info_der(&cert).map_err(|e| e.to_string())?;
    if !pki::verify_issued_by(&cert, &ca) {
        return Err("not issued by this agent's CA".into());
    }
    if !pki::time_valid(&info, now) {
        return Err("not valid now".into());
    }
    if info.is_ca || info.cn != DISPATCHER_COMMON_NAME {
        return Err(format!(
            "not a dispatcher certificate (CN '{}', expected '{DISPATCHER_COMMON_NAME}')",
            info.cn
        ));
    }
    if info.serial != serial {
        return Err(format!("it holds serial {}, not {serial}", info.serial));
    }
    Ok(())
}

/// The staged map and its certificates, in the state directory.
pub fn staged_paths(conf: &AgentConf) -> (PathBuf, PathBuf) {
    (
        conf.state_dir.join(TRUST_STAGING_FILE),
        conf.state_dir.join(TRUST_STAGING_CERTS_FILE),
    )
}

/// Reads a file the agent user may have written, up to
/// [`MAX_STAGED_TRUST_BYTES`]; `None` when it does not exist.
fn read_capped(path: &Path) -> io::Result<Option<String>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_STAGED_TRUST_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_STAGED_TRUST_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_STAGED_TRUST_BYTES} bytes"),
        ));
    }
    Ok(Some(text))
}

/// `live` with the changes of `staged` that check out, and a note for each
/// change refused. An added serial needs a certificate in `certs_pem` that
/// passes [`check_announced`] and an id `live` already has; a serial `live`
/// maps to one id is never given to another; a removal that would leave
/// no entry is not applied; a staged map over [`MAX_TRUSTED_DISPATCHERS`]
/// entries is ignored whole.
pub fn apply_staged(
    live: &TrustedMap,
    staged: &TrustedMap,
    certs_pem: &str,
    ca_pem: &str,
    now: i64,
) -> (TrustedMap, Vec<String>) {
    let mut notes = Vec::new();
    if staged.len() > MAX_TRUSTED_DISPATCHERS {
        notes.push(format!(
            "staged map has {} entries (at most {MAX_TRUSTED_DISPATCHERS}); ignored",
            staged.len()
        ));
        return (live.clone(), notes);
    }
    let certs = pem_blocks(certs_pem);
    let ids: BTreeSet<&String> = live.values().collect();
    let mut out = live.clone();
    for (serial, id) in staged {
        match live.get(serial) {
            Some(owner) if owner == id => {}
            Some(owner) => notes.push(format!(
                "{serial}: staged for '{id}' but owned by '{owner}'; kept"
            )),
            None if !ids.contains(id) => notes.push(format!(
                "{serial}: staged for '{id}', which this map does not trust; ignored"
            )),
            None => match certs
                .iter()
                .map(|c| check_announced(c, serial, ca_pem, now))
                .find(Result::is_ok)
            {
                Some(_) => {
                    out.insert(serial.clone(), id.clone());
                }
                None => notes.push(format!(
                    "{serial}: no valid dispatcher certificate staged for it; ignored"
                )),
            },
        }
    }
    let removed: Vec<String> = live
        .keys()
        .filter(|s| !staged.contains_key(*s))
        .cloned()
        .collect();
    if !removed.is_empty() {
        let mut after = out.clone();
        for s in &removed {
            after.remove(s);
        }
        if after.is_empty() {
            notes.push("staged map would trust no dispatcher; removals ignored".into());
        } else {
            out = after;
        }
    }
    (out, notes)
}

/// The text of each `CERTIFICATE` PEM block in `text`, in order (at most
/// [`MAX_TRUSTED_DISPATCHERS`]), so staged certificates can be checked one
/// by one and written back as they were.
fn pem_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        let stop = b + e + END.len();
        out.push(format!("{}\n", &rest[b..stop]));
        rest = &rest[stop..];
        if out.len() == MAX_TRUSTED_DISPATCHERS {
            break;
        }
    }
    out
}

/// The map the agent uses: the map file, with the staged changes that
/// check out ([`apply_staged`]; refused ones are logged as `trust-staged`).
/// An unreadable staged file is logged and ignored; an unreadable map is an
/// error.
pub fn load_effective(conf: &AgentConf, ca_pem: &str, now: i64) -> io::Result<TrustedMap> {
    let live = load_trusted(&conf.trusted_dispatchers_path)?;
    let (map_path, certs_path) = staged_paths(conf);
    let staged = match read_capped(&map_path) {
        Ok(Some(text)) => parse_trusted(&text),
        Ok(None) => return Ok(live),
        Err(e) => {
            log::warn(
                "trust-staged",
                &[
                    ("ERROR", &e.to_string()),
                    ("PATH", &map_path.display().to_string()),
                ],
            );
            return Ok(live);
        }
    };
    let certs = read_capped(&certs_path).ok().flatten().unwrap_or_default();
    let (map, notes) = apply_staged(&live, &staged, &certs, ca_pem, now);
    for n in &notes {
        log::warn(
            "trust-staged",
            &[("MSG", n), ("PATH", &map_path.display().to_string())],
        );
    }
    Ok(map)
}

/// Where a trust change was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// Into the map file.
    Written,
    /// Staged in the state directory (the map file could not be written:
    /// why), for the next load and `promote-cert`.
    Staged(String),
    /// Nowhere (why).
    Failed(String),
}

/// Writes `next` as the trusted map: into the map file when this process
/// may (removing what was staged, now superseded), otherwise staged in the
/// state directory with the certificates its added serials need (those
/// staged before, and `cert`).
pub fn persist(conf: &AgentConf, next: &TrustedMap, cert: Option<&str>) -> Persist {
    let path = &conf.trusted_dispatchers_path;
    let (map_path, certs_path) = staged_paths(conf);
    let map_error = match write_trusted(path, next) {
        Ok(()) => {
            for p in [&map_path, &certs_path] {
                let _ = std::fs::remove_file(p);
            }
            return Persist::Written;
        }
        Err(e) => format!("cannot write {}: {e}", path.display()),
    };
    let live = load_trusted(path).unwrap_or_default();
    let needed: BTreeSet<&String> = next.keys().filter(|s| !live.contains_key(*s)).collect();
    let mut certs: BTreeMap<String, String> = BTreeMap::new();
    let before = read_capped(&certs_path).ok().flatten().unwrap_or_default();
    for pem in pem_blocks(&before)
        .into_iter()
        .chain(cert.map(|c| c.trim_end().to_string() + "\n"))
    {
        if let Ok(info) = pki::cert_info_pem(&pem) {
            if needed.contains(&info.serial) {
                certs.insert(info.serial, pem);
            }
        }
    }
    let staged = (|| {
        fsx::ensure_dir(&conf.state_dir, 0o750)?;
        let text: String = certs.values().map(String::as_str).collect();
        fsx::write_atomic(&certs_path, text.as_bytes(), 0o640)?;
        fsx::write_atomic(&map_path, render_trusted(next).as_bytes(), 0o640)
    })();
    match staged {
        Ok(()) => Persist::Staged(map_error),
        Err(e) => Persist::Failed(format!(
            "{map_error}; cannot stage it in {}: {e}",
            conf.state_dir.display()
        )),
    }
}

/// `cea promote-cert`, trust part (root, at start): writes the staged map's
/// changes that check out into the map file and removes the staged files.
/// Never fails: every outcome is logged as `trust-promote`.
pub fn promote_staged(conf: &AgentConf) {
    let (map_path, certs_path) = staged_paths(conf);
    let where_ = map_path.display().to_string();
    let staged = match read_capped(&map_path) {
        Ok(Some(text)) => parse_trusted(&text),
        Ok(None) => return,
        Err(e) => {
            log::warn(
                "trust-promote",
                &[
                    ("ERROR", &e.to_string()),
                    ("RESULT", "error"),
                    ("STAGED", &where_),
                ],
            );
            return;
        }
    };
    let path = &conf.trusted_dispatchers_path;
    let live = match load_trusted(path) {
        Ok(m) => m,
        Err(e) => {
            log::warn(
                "trust-promote",
                &[
                    ("ERROR", &format!("cannot read {}: {e}", path.display())),
                    ("RESULT", "error"),
                ],
            );
            return;
        }
    };
    let ca = std::fs::read_to_string(&conf.ca).unwrap_or_default();
    let certs = read_capped(&certs_path).ok().flatten().unwrap_or_default();
    let (map, notes) = apply_staged(&live, &staged, &certs, &ca, crate::time::now());
    for n in &notes {
        log::warn("trust-promote", &[("MSG", n), ("STAGED", &where_)]);
    }
    if map != live {
        if let Err(e) = write_trusted(path, &map) {
            // The staged files stay for the next start.
            log::warn(
                "trust-promote",
                &[
                    ("ERROR", &format!("cannot write {}: {e}", path.display())),
                    ("RESULT", "error"),
                ],
            );
            return;
        }
    }
    for p in [&map_path, &certs_path] {
        let _ = std::fs::remove_file(p);
    }
    log::info(
        "trust-promote",
        &[
            ("ENTRIES", &map.len().to_string()),
            ("MAP", &path.display().to_string()),
            ("RESULT", if map != live { "promoted" } else { "unchanged" }),
        ],
    );
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
        let dir = crate::testutil::scratch_dir("trust-owned");
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
    fn rotation_serials_take_one_to_forty_hex_digits() {
        assert_eq!(rotation_serial("0A:1F"), Some("a1f".into()));
        assert_eq!(rotation_serial("serial=02"), Some("2".into()));
        assert_eq!(rotation_serial(&"f".repeat(40)), Some("f".repeat(40)));
        for bad in ["", "zzz", "1 2", &"a".repeat(41)] {
            assert_eq!(rotation_serial(bad), None, "{bad:?}");
        }
    }

    fn dispatcher_cert(ca: &(String, String), cn: &str) -> (String, String) {
        let (cert, _) = pki::issue_key_and_cert(&ca.0, &ca.1, cn, 30).unwrap();
        let serial = pki::cert_info_pem(&cert).unwrap().serial;
        (cert, serial)
    }

    #[test]
    fn staged_changes_are_taken_only_when_they_check_out() {
        let ca = pki::create_ca(30).unwrap();
        let other_ca = pki::create_ca(30).unwrap();
        let now = crate::time::now();
        let live = parse_trusted("aa d1\nbb d2\n");
        let (good, good_serial) = dispatcher_cert(&ca, DISPATCHER_COMMON_NAME);
        let (foreign, foreign_serial) = dispatcher_cert(&other_ca, DISPATCHER_COMMON_NAME);
        let (host, host_serial) = dispatcher_cert(&ca, "web-01");
        let certs = format!("{good}{foreign}{host}");
        let staged = parse_trusted(&format!(
            "aa d1\nbb d1\n{good_serial} d1\n{foreign_serial} d1\n{host_serial} d2\ncc d1\n"
        ));
        let (map, notes) = apply_staged(&live, &staged, &certs, &ca.0, now);
        // The CA-issued dispatcher certificate's serial is added under d1;
        // bb keeps its owner; the rest has no valid certificate.
        assert_eq!(
            map,
            parse_trusted(&format!("aa d1\nbb d2\n{good_serial} d1\n"))
        );
        assert_eq!(notes.len(), 4, "{notes:?}");
        // An id the live map does not have is never introduced.
        let (map, _) = apply_staged(
            &live,
            &parse_trusted(&format!("aa d1\nbb d2\n{good_serial} intruder\n")),
            &certs,
            &ca.0,
            now,
        );
        assert_eq!(map, live);
        // Removals apply, but never down to nothing.
        let (map, _) = apply_staged(&live, &parse_trusted("aa d1\n"), "", &ca.0, now);
        assert_eq!(map, parse_trusted("aa d1\n"));
        let (map, notes) = apply_staged(&live, &TrustedMap::new(), "", &ca.0, now);
        assert_eq!(map, live, "{notes:?}");
        // An expired certificate does not count.
        let (map, _) = apply_staged(
            &live,
            &parse_trusted(&format!("aa d1\nbb d2\n{good_serial} d1\n")),
            &good,
            &ca.0,
            now + 40 * 86_400,
        );
        assert_eq!(map, live);
    }

    #[test]
    fn pem_blocks_keep_each_certificate() {
        let ca = pki::create_ca(30).unwrap();
        let (a, sa) = dispatcher_cert(&ca, DISPATCHER_COMMON_NAME);
        let (b, sb) = dispatcher_cert(&ca, DISPATCHER_COMMON_NAME);
        let blocks = pem_blocks(&format!(
            "junk\n{a}\n{b}trailing -----BEGIN CERTIFICATE-----"
        ));
        assert_eq!(blocks.len(), 2);
        assert_eq!(pki::cert_info_pem(&blocks[0]).unwrap().serial, sa);
        assert_eq!(pki::cert_info_pem(&blocks[1]).unwrap().serial, sb);
    }

    #[test]
    fn dispatcher_ids() {
        assert!(valid_dispatcher_id("ctrl-1.example_x"));
        assert!(!valid_dispatcher_id("-x"));
        assert!(!valid_dispatcher_id(""));
        assert!(!valid_dispatcher_id(&"a".repeat(65)));
    }
}
