//! The three config parsers on arbitrary file text: `DispatcherConf::parse`,
//! `AgentConf::parse` and `conf::parse_allowlist`. The file reader refuses
//! invalid UTF-8 before parsing, so the input is taken as UTF-8 when it is
//! and lossily otherwise. Nothing may panic; an error prints on one line
//! (as ConfError promises); parsing is deterministic; every allowlisted
//! entry obeys the entry invariants; and a `script_dirs` check only ever
//! removes names (not entries: a later duplicate line that fails the check
//! is skipped, so an earlier definition of the name stays in force).
#![no_main]

use std::path::{Path, PathBuf};

use ctrl_exec::conf::{
    parse_allowlist, valid_script_name, AgentConf, ConfError, DispatcherConf,
    MAX_SCRIPT_TIMEOUT_SECS,
};
use libfuzzer_sys::fuzz_target;

fn check_error(e: &ConfError) {
    let s = e.to_string();
    assert!(!s.contains(['\n', '\r']), "error not on one line: {s:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/ctrl-exec/fuzz.conf");

    let d = DispatcherConf::parse(path, &text);
    match &d {
        Ok(c) => {
            let _ = format!("{c:?}");
            let _ = (c.pairing_dir(), c.runs_dir(), c.ca_cert_path());
        }
        Err(e) => check_error(e),
    }
    assert_eq!(d, DispatcherConf::parse(path, &text), "not deterministic");

    match AgentConf::parse(path, &text) {
        Ok(c) => {
            let _ = format!("{c:?}");
        }
        Err(e) => check_error(&e),
    }

    let list = parse_allowlist(path, &text, &[]);
    for (name, entry) in &list.scripts {
        assert_eq!(name, &entry.name);
        assert!(valid_script_name(name), "invalid name {name:?} allowed");
        assert!(entry.path.is_absolute(), "relative path {:?}", entry.path);
        if let Some(t) = entry.timeout {
            assert!((1..=MAX_SCRIPT_TIMEOUT_SECS).contains(&t.as_secs()));
        }
    }
    // With script_dirs every kept name is also kept without them.
    let dirs = [PathBuf::from("/usr/bin")];
    let checked = parse_allowlist(path, &text, &dirs);
    for (name, entry) in &checked.scripts {
        assert!(
            list.scripts.contains_key(name),
            "{name} only with script_dirs"
        );
        assert!(entry.path.is_absolute());
    }
});
