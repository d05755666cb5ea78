//! `scripts.conf`, the agent's allowlist: `name = /absolute/path [key=value ...]`
//! per line. A bad line is skipped with a warning, never fatal at start, so
//! one typo does not take every other script away. Lines that are not
//! `name = value` at all are also listed as syntax errors: a reload refuses
//! a file with any, or one left with no valid entry, and keeps the previous
//! allowlist (an editor's half-written file never empties it).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conf::names::is_profile_name;
use crate::conf::raw::{clip, parse_uint, read, split_key_value};
use crate::conf::{valid_script_name, ConfError, DEFAULT_PROFILE, MAX_SCRIPT_TIMEOUT_SECS};

/// The loaded allowlist: scripts by name, plus warnings for skipped lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Allowed scripts by name.
    pub scripts: BTreeMap<String, ScriptEntry>,
    /// One message per skipped line or ignored annotation (`file:line: ...`).
    pub warnings: Vec<String>,
    /// One message per line that is not `name = value` with a valid name
    /// (`file:line: malformed line: '...'`); each is also a warning.
    pub syntax_errors: Vec<String>,
}

/// One allowlisted script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    /// Name requests use. Invariant: [`valid_script_name`].
    pub name: String,
    /// Absolute script path as written.
    pub path: PathBuf,
    /// Profile name (`profile=`, default [`DEFAULT_PROFILE`]).
    pub profile: String,
    /// Per-script run time limit (`timeout=`), overriding `script_timeout`.
    /// Invariant: 1 s to [`MAX_SCRIPT_TIMEOUT_SECS`].
    pub timeout: Option<Duration>,
}

/// Reads and parses an allowlist; only an unreadable file is an error.
pub fn load_allowlist(path: &Path, script_dirs: &[PathBuf]) -> Result<Allowlist, ConfError> {
    Ok(parse_allowlist(path, &read(path)?, script_dirs))
}

/// Parses allowlist text. Bad lines are skipped with a warning, never fatal.
/// When `script_dirs` is non-empty each path is resolved (realpath) and must lie
/// under one of them; a path that cannot be resolved is skipped too.
pub fn parse_allowlist(path: &Path, text: &str, script_dirs: &[PathBuf]) -> Allowlist {
    let mut list = Allowlist::default();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let Some((name, value)) = split_key_value(line).filter(|(k, _)| valid_script_name(k))
        else {
            list.warnings
                .push(format!("{at}: skipped malformed line: '{}'", clip(trimmed)));
            list.syntax_errors
                .push(format!("{at}: malformed line: '{}'", clip(trimmed)));
            continue;
        };
        match parse_entry(name, value, script_dirs, &at, &mut list.warnings) {
            Ok(entry) => {
                list.scripts.insert(name.to_string(), entry);
            }
            Err(reason) => list
                .warnings
                .push(format!("{at}: skipped '{name}': {reason}")),
        }
    }
    list
}

fn parse_entry(
    name: &str,
    value: &str,
    script_dirs: &[PathBuf],
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<ScriptEntry, String> {
    let mut profile = DEFAULT_PROFILE.to_string();
    let mut timeout = None;
    let mut paths = Vec::new();
    for tok in value.split_whitespace() {
        let Some((k, v)) = annotation(tok) else {
            paths.push(tok);
            continue;
        };
        match k {
            "profile" if is_profile_name(v) => profile = v.to_string(),
            "profile" => return Err(format!("invalid profile name '{v}'")),
            "timeout" => {
                match parse_uint::<u64>(v).filter(|s| (1..=MAX_SCRIPT_TIMEOUT_SECS).contains(s)) {
                    Some(s) => timeout = Some(Duration::from_secs(s)),
                    None => {
                        return Err(format!(
                        "timeout must be a number of seconds 1-{MAX_SCRIPT_TIMEOUT_SECS}, got '{}'",
                        clip(v)
                    ))
                    }
                }
            }
            _ => warnings.push(format!(
                "{at}: '{name}': ignoring unknown annotation '{tok}'"
            )),
        }
    }
    let path = match paths.as_slice() {
        [] => return Err("no script path".to_string()),
        [p] => PathBuf::from(p),
        _ => return Err(format!("more than one path: {}", paths.join(" "))),
    };
    if !path.is_absolute() {
        return Err(format!("path is not absolute: '{}'", path.display()));
    }
    if !script_dirs.is_empty() {
        if let Err(e) = fs::canonicalize(&path) {
            return Err(format!(
                "cannot resolve '{}' to check script_dirs: {e}",
                path.display()
            ));
        }
        if !within_script_dirs(&path, script_dirs) {
            return Err(format!("'{}' is outside script_dirs", path.display()));
        }
    }
    Ok(ScriptEntry {
        name: name.to_string(),
        path,
        profile,
        timeout,
    })
}

/// `key=value` when `tok` is an annotation (`^[a-z_]+=`).
fn annotation(tok: &str) -> Option<(&str, &str)> {
    let (k, v) = tok.split_once('=')?;
    (!k.is_empty() && k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')).then_some((k, v))
}

/// Whether the realpath of `path` lies under the realpath of one of
/// `script_dirs` (so symlink and `..` escapes fail). False when `path` cannot be
/// resolved or `script_dirs` is empty; callers treat an empty list as "no
/// restriction" themselves.
pub fn within_script_dirs(path: &Path, script_dirs: &[PathBuf]) -> bool {
    let Ok(real) = fs::canonicalize(path) else {
        return false;
    };
    script_dirs
        .iter()
        .filter_map(|d| fs::canonicalize(d).ok())
        .any(|d| real.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::test_support::{secs, TempDir};

    fn allow(text: &str) -> Allowlist {
        parse_allowlist(Path::new("/etc/s.conf"), text, &[])
    }

    #[test]
    fn allowlist_entries() {
        let text = "# comment\n\n  # indented\n\
                    plain = /opt/s/plain.sh\n\
                    a1 = profile=backup timeout=30 /opt/s/a.sh\n\
                    a2 = /opt/s/a.sh timeout=5 profile=web.v2\n\
                    a3 =   timeout=7   /opt/s/a.sh   profile=x  \n\
                    odd = /opt/s/a.sh color=blue\n\
                    dup = /opt/s/one.sh\n\
                    dup = /opt/s/two.sh\n";
        let a = allow(text);
        let e = |n: &str| {
            a.scripts
                .get(n)
                .unwrap_or_else(|| panic!("{n} missing: {:?}", a.warnings))
        };
        assert_eq!(e("plain").path, PathBuf::from("/opt/s/plain.sh"));
        assert_eq!(
            (e("plain").profile.as_str(), e("plain").timeout),
            ("default", None)
        );
        assert_eq!(
            (e("a1").profile.as_str(), e("a1").timeout),
            ("backup", Some(secs(30)))
        );
        assert_eq!(
            (e("a2").profile.as_str(), e("a2").timeout),
            ("web.v2", Some(secs(5)))
        );
        assert_eq!(
            (e("a3").profile.as_str(), e("a3").timeout),
            ("x", Some(secs(7)))
        );
        assert_eq!(e("a3").name, "a3");
        assert_eq!(e("odd").path, PathBuf::from("/opt/s/a.sh"));
        assert_eq!(e("dup").path, PathBuf::from("/opt/s/two.sh"));
        assert_eq!(a.scripts.len(), 6);
        assert_eq!(
            a.warnings,
            ["/etc/s.conf:8: 'odd': ignoring unknown annotation 'color=blue'"]
        );
    }

    #[test]
    fn allowlist_skips_bad_lines() {
        let cases: &[(&str, &str)] = &[
            ("not an entry", "skipped malformed line: 'not an entry'"),
            ("bad.name = /x.sh", "skipped malformed line"),
            ("empty =", "skipped malformed line"),
            ("nopath = profile=x", "skipped 'nopath': no script path"),
            (
                "two = /a.sh /b.sh",
                "skipped 'two': more than one path: /a.sh /b.sh",
            ),
            (
                "rel = scripts/a.sh",
                "skipped 'rel': path is not absolute: 'scripts/a.sh'",
            ),
            (
                "t0 = /a.sh timeout=0",
                "skipped 't0': timeout must be a number of seconds 1-604800, got '0'",
            ),
            ("tx = /a.sh timeout=soon", "got 'soon'"),
            (
                "pe = /a.sh profile=",
                "skipped 'pe': invalid profile name ''",
            ),
        ];
        for &(line, want) in cases {
            let a = allow(&format!("ok = /ok.sh\n{line}\n"));
            assert_eq!(a.scripts.keys().collect::<Vec<_>>(), ["ok"], "{line}");
            let malformed = want.starts_with("skipped malformed line");
            assert_eq!(a.syntax_errors.len(), usize::from(malformed), "{line}");
            if malformed {
                assert!(
                    a.syntax_errors[0].starts_with("/etc/s.conf:2: malformed line: "),
                    "{:?}",
                    a.syntax_errors
                );
            }
            assert_eq!(a.warnings.len(), 1, "{line}: {:?}", a.warnings);
            assert!(
                a.warnings[0].starts_with("/etc/s.conf:2: "),
                "{:?}",
                a.warnings
            );
            assert!(a.warnings[0].contains(want), "{line}: {:?}", a.warnings);
        }
    }

    #[test]
    fn allowlist_enforces_script_dirs_through_symlinks() {
        let t = TempDir::new("scriptdirs");
        let scripts = t.0.join("scripts");
        let outside = t.0.join("outside");
        fs::create_dir_all(&scripts).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(scripts.join("good.sh"), "#!/bin/sh\n").unwrap();
        fs::write(outside.join("evil.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(outside.join("evil.sh"), scripts.join("link.sh")).unwrap();
        std::os::unix::fs::symlink(scripts.join("good.sh"), outside.join("in.sh")).unwrap();
        // A sibling whose name merely starts with the allowed dir's name.
        let sibling = t.0.join("scripts2");
        fs::create_dir_all(&sibling).unwrap();
        fs::write(sibling.join("s.sh"), "").unwrap();

        let text = format!(
            "good = {s}/good.sh\nlink = {s}/link.sh\ndotdot = {s}/../outside/evil.sh\nin = {o}/in.sh\n\
             missing = {s}/missing.sh\nsib = {sib}/s.sh\n",
            s = scripts.display(),
            o = outside.display(),
            sib = sibling.display(),
        );
        let dirs = [scripts.clone()];
        let a = parse_allowlist(Path::new("s.conf"), &text, &dirs);
        assert_eq!(
            a.scripts.keys().collect::<Vec<_>>(),
            ["good", "in"],
            "{:?}",
            a.warnings
        );
        assert_eq!(a.warnings.len(), 4, "{:?}", a.warnings);
        assert!(
            a.warnings[0].starts_with("s.conf:2: skipped 'link': ")
                && a.warnings[0].contains("outside script_dirs")
        );
        assert!(a.warnings[1].starts_with("s.conf:3: skipped 'dotdot': "));
        assert!(a.warnings[2].starts_with("s.conf:5: skipped 'missing': cannot resolve"));
        assert!(a.warnings[3].starts_with("s.conf:6: skipped 'sib': "));

        assert!(within_script_dirs(&scripts.join("good.sh"), &dirs));
        assert!(!within_script_dirs(&scripts.join("link.sh"), &dirs));
        assert!(!within_script_dirs(&scripts.join("good.sh"), &[]));
        // Without script_dirs nothing is resolved, so a missing file is fine.
        let a = parse_allowlist(Path::new("s.conf"), &text, &[]);
        assert_eq!(a.scripts.len(), 6);

        let file = t.0.join("scripts.conf");
        fs::write(&file, &text).unwrap();
        assert_eq!(load_allowlist(&file, &dirs).unwrap().scripts.len(), 2);
    }
}
