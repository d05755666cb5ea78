//! The man pages in `man/`: each one renders without a single warning, and
//! `ced.1` and `cea.8` have an item for every mode the binary's own `--help`
//! lists, so the pages cannot silently fall behind the command line.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ctrl-exec");

const PAGES: &[&str] = &[
    "ced.1",
    "cea.8",
    "ctrl-exec-api.8",
    "ctrl-exec-exec.8",
    "ctrl-exec.conf.5",
    "agent.conf.5",
];

fn page(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "man", name].iter().collect()
}

#[test]
fn every_page_renders_without_warnings() {
    for name in PAGES {
        let run = Command::new("man")
            .args(["--warnings", "-l", "-E", "UTF-8"])
            .arg(page(name))
            .env("MANWIDTH", "80")
            .stdin(Stdio::null())
            .output();
        let out = match run {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("skipped: man not installed");
                return;
            }
            Err(e) => panic!("cannot run man: {e}"),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "man {name}: {}\n{stderr}",
            out.status
        );
    }
}

#[test]
fn ced_and_cea_pages_document_every_mode() {
    for (role, name, first, last) in [
        ("ced", "ced.1", "run", "maintain"),
        ("cea", "cea.8", "serve", "promote-cert"),
    ] {
        let out = Command::new(BIN).args([role, "--help"]).output().unwrap();
        assert!(out.status.success(), "{role} --help: {}", out.status);
        let modes = listed_modes(&String::from_utf8(out.stdout).unwrap());
        // Guards the parser: a change of layout must not make it find nothing.
        assert!(
            modes.contains(&first.to_string()) && modes.contains(&last.to_string()),
            "{role} --help parsed as {modes:?}"
        );
        let items = item_names(&std::fs::read_to_string(page(name)).unwrap());
        let missing: Vec<&String> = modes.iter().filter(|m| !items.contains(*m)).collect();
        assert!(
            missing.is_empty(),
            "man/{name} has no item for the {role} mode(s) {missing:?}"
        );
    }
}

/// The modes under `Modes:` in a role's `--help`, up to the first blank
/// line. Each line holds columns separated by two or more spaces; a column
/// is either a mode's synopsis (`run <host> [--json]`, `paired | cert-staged`,
/// `request-pairing --dispatcher <host>`) or a description, which is skipped.
fn listed_modes(help: &str) -> Vec<String> {
    let block = help
        .split_once("Modes:\n")
        .expect("no 'Modes:' in --help")
        .1;
    block
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .flat_map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()))
        .flat_map(synopsis_names)
        .collect()
}

/// The names a synopsis column starts with: once `[...]` and `<...>` groups
/// are dropped, it is `name [| name ...]` followed only by `--options`.
/// Anything else (prose) yields none.
fn synopsis_names(column: &str) -> Vec<String> {
    let mut depth = 0i32;
    let bare: String = column
        .chars()
        .filter(|&c| match c {
            '[' | '<' => {
                depth += 1;
                false
            }
            ']' | '>' => {
                depth -= 1;
                false
            }
            _ => depth == 0,
        })
        .collect();
    let words: Vec<&str> = bare.split_whitespace().collect();
    let end = words
        .iter()
        .position(|w| w.starts_with("--"))
        .unwrap_or(words.len());
    let (names, options) = words.split_at(end);
    let is_name = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_lowercase())
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let alternated = names.len() % 2 == 1
        && names.iter().enumerate().all(|(i, w)| match i % 2 {
            0 => is_name(w),
            _ => *w == "|",
        });
    if !alternated || !options.iter().all(|w| w.starts_with("--")) {
        return Vec::new();
    }
    names.iter().step_by(2).map(|w| w.to_string()).collect()
}

/// The first word of every `.TP` item's tag line, with font escapes and
/// `\-` undone: `\fBrun\fR \fIhost\fR ...` and `.B self\-check` give `run`
/// and `self-check`.
fn item_names(roff: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = roff.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[0].trim_end() == ".TP")
        .filter_map(|pair| {
            let mut tag = pair[1].replace("\\-", "-").replace('"', "");
            for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
                tag = tag.replace(font, "");
            }
            let mut words = tag.split_whitespace();
            let first = words.next()?;
            match first.starts_with('.') {
                true => words.next(),
                false => Some(first),
            }
            .map(str::to_string)
        })
        .collect()
}
