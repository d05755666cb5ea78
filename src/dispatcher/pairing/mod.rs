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

use crate::conf::DispatcherConf;
use crate::dispatcher::{load_conf, Args, CliError};
use crate::pki;

pub use approve::Overrides;

use approve::{approve_request, deny_request, registered, Approved};
use listener::{session, Mode};
use queue::pending;

/// Default pairing port.
pub const DEFAULT_PAIRING_PORT: u16 = 7444;

/// The usage line of `approve`.
const APPROVE_USAGE: &str = "Usage: ctrl-exec-dispatcher approve <reqid>... [--replace] [--lookup-by ip|hostname] [--ip <addr>] [--agent-port <n>]
       ctrl-exec-dispatcher approve --codes-file <file|-> [--replace] [--lookup-by ip|hostname]";

/// `ced list-requests`. A request whose name is already registered gets a
/// `!` line under its row: approving it would replace that agent.
pub fn list_requests(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let reqs = pending(&conf.pairing_dir());
    if a.json {
        let list = reqs
            .iter()
            .map(|r| r.to_listing(registered(&conf, &r.hostname).is_some()))
            .collect();
        crate::outln!(
            "{}",
            crate::proto::json::to_string(&miniserde::json::Value::Array(list))
        )?;
        return Ok(0);
    }
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
    let mut replacing = false;
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
        if let Some(old) = registered(&conf, &r.hostname) {
            replacing = true;
            crate::outln!(
                "  ! '{}' is ALREADY REGISTERED (addr={}:{}, paired {}): approving replaces it",
                r.hostname,
                old.address(),
                old.port,
                old.paired
            )?;
        }
    }
    crate::outln!()?;
    crate::outln!("Compare each CODE with the one the agent printed before approving.")?;
    if replacing {
        crate::outln!("A request marked '!' names a registered agent: 'approve' refuses it unless given --replace (only for that host re-pairing with a new key); otherwise deny it.")?;
    }
    Ok(0)
}

/// `ced approve <reqid>...` and `ced approve --codes-file <file>`. With more
/// than one request, each is approved or refused on its own line, and the
/// exit is 1 when any was refused.
pub fn approve(a: &Args) -> Result<u8, CliError> {
    let one_host_flags = a.ip.is_some() || a.agent_port.is_some();
    match (&a.codes_file, a.words.as_slice()) {
        (None, []) => Err(CliError::Usage(APPROVE_USAGE.into())),
        (Some(_), [_, ..]) => Err(CliError::Usage(format!(
            "give request ids or --codes-file, not both\n{APPROVE_USAGE}"
        ))),
        (None, [id]) => {
            let conf = load_conf(a)?;
            let done = approve_request(&conf, id, &Overrides::from_args(a)?)?;
            print_approved(id, &done)?;
            Ok(0)
        }
        _ if one_host_flags => Err(CliError::Usage(
            "--ip and --agent-port are for one host: approve its request alone".into(),
        )),
        (None, ids) => approve_each(a, &load_conf(a)?, ids, 0),
        (Some(file), []) => {
            let conf = load_conf(a)?;
            let (ids, refused) = matching_codes(&conf, file)?;
            approve_each(a, &conf, &ids, refused)
        }
    }
}

/// Approves `ids` one by one; `refused` counts lines already refused.
fn approve_each(
    a: &Args,
    conf: &DispatcherConf,
    ids: &[String],
    mut refused: usize,
) -> Result<u8, CliError> {
    let overrides = Overrides::from_args(a)?;
    let mut approved = 0;
    for id in ids {
        match approve_request(conf, id, &overrides) {
            Ok(done) => {
                approved += 1;
                print_approved(id, &done)?;
            }
            Err(e) => {
                refused += 1;
                eprintln!("Not approved '{id}': {e}");
            }
        }
    }
    crate::outln!("{approved} approved, {refused} not approved.")?;
    Ok(if refused == 0 { 0 } else { 1 })
}

/// The pending requests whose host name and pairing code are a line of
/// `file` (`<name> <code>`, as each agent printed them). The code is
/// computed again from the queued CSR, so a request is approved only for the
/// key the operator's list vouches for; a name whose code differs, or that
/// has no pending request, is refused on stderr. Returns the ids and the
/// number of refused lines.
fn matching_codes(conf: &DispatcherConf, file: &str) -> Result<(Vec<String>, usize), CliError> {
    let mut wanted = Vec::new();
    for line in crate::dispatcher::hosts::read_lines(file, "code list")? {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(name), Some(code), None)
                if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) =>
            {
                wanted.push((name.to_string(), code.to_string()));
            }
            _ => {
                return Err(CliError::Usage(format!(
                    "code list line '{line}': expected '<hostname> <6-digit code>'"
                )))
            }
        }
    }
    let pending = pending(&conf.pairing_dir());
    let mut ids = Vec::new();
    let mut refused = 0;
    for (name, code) in &wanted {
        let mine: Vec<_> = pending.iter().filter(|q| &q.hostname == name).collect();
        let matched: Vec<_> = mine
            .iter()
            .filter(|q| &pki::pairing_code(q.csr.as_bytes()) == code)
            .collect();
        match (mine.len(), matched.as_slice()) {
            (0, _) => {
                refused += 1;
                eprintln!("Not approved '{name}': no pending request from that host");
            }
            (_, [one]) => ids.push(one.id.clone()),
            (_, []) => {
                refused += 1;
                eprintln!(
                    "Not approved '{name}': no pending request with code {code}; compare the codes again (ced list-requests)"
                );
            }
            (_, _) => {
                refused += 1;
                eprintln!("Not approved '{name}': several pending requests carry that code; approve by id");
            }
        }
    }
    Ok((ids, refused))
}

fn print_approved(id: &str, done: &Approved) -> Result<(), CliError> {
    let (name, lb, addr, port) = (&done.name, done.lookup_by, &done.addr, done.port);
    crate::outln!("Approved '{name}' ({id}). Cert delivered on next poll.")?;
    crate::outln!("  Registered:  {name}   lookup_by={lb}   addr={addr}:{port}")?;
    if let Some(old) = &done.replaced {
        crate::outln!(
            "  Replaced:    the previous registration (addr={}:{}, paired {}); its key is no longer accepted",
            old.address(),
            old.port,
            old.paired
        )?;
    }
    Ok(())
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
