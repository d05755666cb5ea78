//! The multicall entry point: picks a role from argv[0] or the first argument.

use std::process::ExitCode;

use ctrl_exec::{agent, api, dispatcher};

type Entry = fn(Vec<String>) -> ExitCode;

/// The applet table: (names, entry point). The first name is the canonical one.
const ROLES: &[(&[&str], Entry)] = &[
    (&["ctrl-exec-dispatcher", "ced"], dispatcher::main),
    (&["ctrl-exec-agent", "cea"], agent::main),
    (&["ctrl-exec-api"], api::main),
];

const MULTICALL: &str = "ctrl-exec";

fn main() -> ExitCode {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let mut rest: Vec<String> = args.collect();
    let mut name = basename(&argv0);
    if lookup(&name).is_none() {
        // The multicall name (or any unknown link name): the role is the first argument.
        match rest.first().map(String::as_str) {
            Some("--version") => {
                println!("{MULTICALL} {}", ctrl_exec::VERSION);
                return ExitCode::SUCCESS;
            }
            Some(first) if lookup(first).is_some() => name = rest.remove(0),
            None | Some("-h" | "--help") if name == MULTICALL => {
                eprintln!(
                    "usage: {MULTICALL} <role> [args...]\nroles: {}",
                    role_names()
                );
                return ExitCode::from(if rest.is_empty() { 2 } else { 0 });
            }
            _ => {}
        }
    }
    match lookup(&name) {
        Some(entry) => entry(rest),
        None => {
            eprintln!(
                "{MULTICALL}: unknown role '{name}' (roles: {})",
                role_names()
            );
            ExitCode::from(127)
        }
    }
}

fn basename(argv0: &str) -> String {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    base.strip_prefix('-').unwrap_or(base).to_string()
}

fn lookup(name: &str) -> Option<Entry> {
    ROLES
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, entry)| *entry)
}

fn role_names() -> String {
    ROLES
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}
