//! The interactive console of a foreground `ced pairing-mode` on a terminal:
//! shows pending requests and takes `a`/`d`/`s`/`list`/`quit` (and `aN`/`dN`
//! when several are pending).
//!
//! A request whose name is already registered is marked; `a` refuses it
//! (approving would replace the registered agent) and says to run
//! `ctrl-exec-dispatcher approve <id> --replace` if that is meant.

use std::path::Path;
use std::sync::Arc;

use smol::io::AsyncBufReadExt;
use smol::stream::StreamExt;

use crate::conf::DispatcherConf;
use crate::dispatcher::pairing::approve::{approve_request, deny_request, registered, Overrides};
use crate::dispatcher::pairing::queue::pending;
use crate::proto::QueueEntry;

/// Prints a console line; a closed terminal is no reason to stop serving
/// the agents that are waiting.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = crate::outln!($($arg)*);
    }};
}

/// The interactive console: a/d/s/list/quit and aN/dN.
pub async fn interactive(conf: &DispatcherConf) {
    let stdin = smol::Unblock::new(std::io::stdin());
    let mut lines = smol::io::BufReader::new(stdin).lines();
    // Every step below scans the queue directory or signs and writes files:
    // all of it runs on the blocking pool, never on the executor that serves
    // the waiting connections.
    let conf = Arc::new(conf.clone());
    let dir = conf.pairing_dir();
    show_off_executor(&conf).await;
    while let Some(Ok(line)) = lines.next().await {
        let cmd = line.trim().to_string();
        let reqs = {
            let dir = dir.clone();
            smol::unblock(move || pending(&dir)).await
        };
        let pick = |n: &str| -> Option<QueueEntry> {
            if n.is_empty() {
                if reqs.len() == 1 {
                    reqs.first().cloned()
                } else {
                    None
                }
            } else {
                n.parse::<usize>()
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| reqs.get(i).cloned())
            }
        };
        match cmd.as_str() {
            "" => {}
            "q" | "quit" => return,
            "l" | "list" => show_off_executor(&conf).await,
            "s" | "skip" => say!("Left pending."),
            c if c.starts_with(['a', 'A', 'd', 'D'])
                && c[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                let Some(r) = pick(&c[1..]) else {
                    say!("No such request. Commands: a/d/s/list/quit or a1/d1 for multiple.");
                    continue;
                };
                let id = r.id.clone();
                let (conf, req) = (conf.clone(), id.clone());
                if c.starts_with(['a', 'A']) {
                    let approved =
                        smol::unblock(move || approve_request(&conf, &req, &Overrides::default()))
                            .await;
                    match approved {
                        Ok(done) => say!(
                            "Approved '{}' ({id}); registered lookup_by={} addr={}:{}",
                            done.name,
                            done.lookup_by,
                            done.addr,
                            done.port
                        ),
                        Err(e) => say!("Approve failed: {e}"),
                    }
                } else {
                    match smol::unblock(move || deny_request(&conf, &req)).await {
                        Ok(()) => say!("Denied request '{id}'."),
                        Err(e) => say!("Deny failed: {e}"),
                    }
                }
                say!("Waiting for next request... (Ctrl-C to exit pairing mode)");
            }
            other => {
                say!("Unknown command '{other}'. Commands: a/d/s/list/quit or a1/d1 for multiple.")
            }
        }
    }
}

/// [`show`] on the blocking pool.
async fn show_off_executor(conf: &Arc<DispatcherConf>) {
    let conf = conf.clone();
    smol::unblock(move || show(&conf)).await;
}

/// The console's note on a request whose name is already registered.
fn registered_note(conf: &DispatcherConf, r: &QueueEntry) -> Option<String> {
    registered(conf, &r.hostname).map(|old| {
        format!(
            "ALREADY REGISTERED (addr={}:{}, paired {}): approving replaces it; 'a' refuses, use 'ctrl-exec-dispatcher approve {} --replace' if this host is re-pairing",
            old.address(),
            old.port,
            old.paired,
            r.id
        )
    })
}

/// Prints the pending requests and the prompt that fits their number
/// (blocking: scans the queue directory and the registry).
fn show(conf: &DispatcherConf) {
    let dir: &Path = &conf.pairing_dir();
    let reqs = pending(dir);
    match reqs.len() {
        0 => say!("No pending pairing requests.\nWaiting... (Commands: list, quit)"),
        1 => {
            let r = &reqs[0];
            say!(
                "Pairing request from {} ({}) - ID: {}",
                r.hostname,
                r.ip,
                r.id
            );
            say!(
                "  Code:     {}   (verify this matches the agent display)",
                r.code
            );
            say!("  Received: {}", r.received);
            say!(
                "  Source IP:     {}   (as this dispatcher saw the connection)",
                r.source_ip
            );
            if let Some(note) = registered_note(conf, r) {
                say!("  Registered:    {note}");
            }
            say!("Accept, Deny, or Skip? [a/d/s]: ");
        }
        n => {
            say!("{n} pending pairing requests:");
            for (i, r) in reqs.iter().enumerate() {
                say!(
                    "  [{}] {:<30}  {:<16}  code: {}  {}",
                    i + 1,
                    r.hostname,
                    r.ip,
                    r.code,
                    r.received
                );
                if let Some(note) = registered_note(conf, r) {
                    say!("      ! {note}");
                }
            }
            say!("Command (a1/d1/a2/d2/list/quit): ");
        }
    }
}
