//! Pairing on the dispatcher: the listener (`pairing-mode`), the queue
//! (`list-requests`), and the operator's decisions (`approve`, `deny`).
//!
//! The listener and the decision commands are separate processes that meet
//! in the queue directory: the listener writes `<reqid>.json` and keeps the
//! agent's connection open; `approve` writes `<reqid>.approved` (the final
//! message) and the registry record; `deny` writes `<reqid>.denied`; the
//! listener polls for either, sends it, and cleans up.
//!
//! This file holds the CLI verbs; `queue` owns the queue files, `approve` the
//! decisions, `listener` the 7444 listener, `console` the interactive prompt,
//! `background` the detached listener and its pidfile.

mod approve;
mod background;
mod console;
mod listener;
mod queue;
mod refusal;

use std::io::IsTerminal;

use crate::dispatcher::{load_conf, Args, CliError};

pub use approve::Overrides;

use approve::{approve_request, deny_request};
use listener::{session, Mode};
use queue::pending;

/// Default pairing port.
pub const DEFAULT_PAIRING_PORT: u16 = 7444;

/// `ced list-requests`.
pub fn list_requests(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let reqs = pending(&conf.pairing_dir());
    if reqs.is_empty() {
        crate::outln!("No pending pairing requests.")?;
        return Ok(0);
    }
    crate::outln!(
        "{:<16}  {:<24}  {:<16}  {:<28}  CODE",
        "ID",
        "HOSTNAME",
        "SOURCE IP",
        "REVERSE DNS"
    )?;
    crate::outln!("{}", "-".repeat(98))?;
    for r in &reqs {
        let src = if r.source_ip.is_empty() {
            &r.ip
        } else {
            &r.source_ip
        };
        crate::outln!(
            "{:<16}  {:<24}  {:<16}  {:<28}  {}",
            r.id,
            r.hostname,
            src,
            "-",
            r.code
        )?;
    }
    crate::outln!()?;
    crate::outln!("Compare each CODE with the one the agent printed before approving.")?;
    Ok(0)
}

/// `ced approve <reqid>`.
pub fn approve(a: &Args) -> Result<u8, CliError> {
    let [id] = a.words.as_slice() else {
        return Err(CliError::Usage("Usage: ctrl-exec-dispatcher approve <reqid> [--lookup-by ip|hostname] [--ip <addr>] [--agent-port <n>]".into()));
    };
    let overrides = Overrides::from_args(a)?;
    let conf = load_conf(a)?;
    let (name, lookup_by, addr, port) = approve_request(&conf, id, &overrides)?;
    crate::outln!("Approved '{name}' ({id}). Cert delivered on next poll.")?;
    crate::outln!("  Registered:  {name}   lookup_by={lookup_by}   addr={addr}:{port}")?;
    Ok(0)
}

/// `ced deny <reqid>`.
pub fn deny(a: &Args) -> Result<u8, CliError> {
    let [id] = a.words.as_slice() else {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher deny <reqid>".into(),
        ));
    };
    let conf = load_conf(a)?;
    deny_request(&conf, id)?;
    crate::outln!("Denied request '{id}'.")?;
    Ok(0)
}

/// `ced pairing-mode [start|stop]`.
pub fn pairing_mode(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let timeout = match &a.timeout {
        None => conf.pairing_timeout,
        Some(t) => {
            let n: u64 = t.parse().map_err(|_| {
                CliError::Usage("Error: --timeout must be an integer number of seconds.".into())
            })?;
            if !(1..=600).contains(&n) {
                return Err(CliError::Usage(
                    "Error: --timeout must be between 1 and 600 seconds.".into(),
                ));
            }
            n
        }
    };
    let port = a.port.unwrap_or(DEFAULT_PAIRING_PORT);
    match a.words.first().map(String::as_str) {
        None if a.pairing_child => session(&conf, port, timeout, Mode::Background),
        None => session(
            &conf,
            port,
            timeout,
            if std::io::stdin().is_terminal() {
                Mode::Interactive
            } else {
                Mode::Quiet
            },
        ),
        Some("start") => background::start_background(a, &conf, port, timeout),
        Some("stop") => background::stop_background(&conf),
        Some(_) => Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher pairing-mode [start|stop] [--timeout <1-600>]".into(),
        )),
    }
}
