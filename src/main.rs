//! The multicall entry point: picks a role from argv[0] or the first
//! argument, runs it, and is the one place a role's error is printed.
//!
//! `ctrl-exec --launch ...` is no role: it is the internal launcher every
//! script and hook is started through (see `ctrl_exec::launch`), handled
//! before the table and before argv is read as UTF-8.

use std::ffi::OsString;
use std::process::ExitCode;

use ctrl_exec::exit::{self, Outcome};
use ctrl_exec::{agent, api, dispatcher, executor, launch};

type Entry = fn(Vec<String>) -> Outcome;

/// The applet table: (names, entry point). The first name is the
/// canonical one; the last is the short name used in error messages.
const ROLES: &[(&[&str], Entry)] = &[
    (&["ctrl-exec-dispatcher", "ced"], dispatcher::main),
    (&["ctrl-exec-agent", "cea"], agent::main),
    (&["ctrl-exec-api"], api::main),
    (&["ctrl-exec-exec", "exec"], executor::main),
];

const MULTICALL: &str = "ctrl-exec";

fn main() -> ExitCode {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let as_multicall = raw
        .first()
        .and_then(|a| a.to_str())
        .is_some_and(|a| basename(a) == MULTICALL);
    if as_multicall && raw.get(1).is_some_and(|a| a == launch::FLAG) {
        return launch::main(&raw[2..]);
    }
    launch::init();
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let mut rest: Vec<String> = args.collect();
    let mut name = basename(&argv0);
    if lookup(&name).is_none() {
        // The multicall name (or any unknown link name): the role is the first argument.
        match rest.first().map(String::as_str) {
            Some("--version") => {
                // A closed stdout is no failure of `--version`.
                let _ = ctrl_exec::outln!("{MULTICALL} {}", ctrl_exec::VERSION);
                return ExitCode::SUCCESS;
            }
            Some(first) if lookup(first).is_some() => name = rest.remove(0),
            None | Some("-h" | "--help") if name == MULTICALL => {
                eprintln!(
                    "usage: {MULTICALL} <role> [args...]\nroles: {}",
                    role_names()
                );
                return ExitCode::from(if rest.is_empty() {
                    exit::USAGE
                } else {
                    exit::SUCCESS
                });
            }
            _ => {}
        }
    }
    match lookup(&name) {
        Some((short, entry)) => finish(short, entry(rest)),
        None => {
            let what = match rest.first() {
                Some(first) if name == MULTICALL => first.clone(),
                _ => name,
            };
            eprintln!(
                "{MULTICALL}: unknown role '{what}' (roles: {})",
                role_names()
            );
            ExitCode::from(exit::UNKNOWN_ROLE)
        }
    }
}

/// Prints a role's error once, as `<role>: <message>`, and exits with its
/// code; a closed stdout ends quietly.
fn finish(role: &str, outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !e.quiet() {
                eprintln!("{role}: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn basename(argv0: &str) -> String {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    base.strip_prefix('-').unwrap_or(base).to_string()
}

fn lookup(name: &str) -> Option<(&'static str, Entry)> {
    ROLES
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(names, entry)| (*names.last().unwrap_or(&MULTICALL), *entry))
}

fn role_names() -> String {
    ROLES
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}
