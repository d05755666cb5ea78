//! `rotate-cert` and `serial-status`: the dispatcher certificate's
//! rotation (`control::rotation`) as the operator starts and watches it.

use std::fmt::Write;

use miniserde::json::Value;

use crate::control::dispatch::Dispatch;
use crate::control::registry::Registry;
use crate::control::rotation::{self, Rotated};
use crate::dispatcher::{load_conf, output, Args, CliError};
use crate::proto::json::Builder;
use crate::proto::{AgentRecord, HostRotate, RotationRecord};
use crate::rt::FileWork;
use crate::{exit, outln, pki, rt, time};

/// Loads the config, repairs an interrupted rotation install, and sets up
/// the dispatch services (what `rotate-cert` and `maintain` start with).
pub(super) fn dispatch_recovered(a: &Args) -> Result<Dispatch, CliError> {
    let conf = load_conf(a)?;
    if let Some(note) = rotation::recover_locked(&conf).map_err(CliError::Failed)? {
        eprintln!("Note: {note}.");
    }
    Dispatch::new(conf, FileWork::Inline).map_err(CliError::Engine)
}

/// The lines under a rotation's announcement: counts, then the agents that
/// did not confirm and what to do.
fn announcement_lines(results: &[HostRotate]) -> String {
    let mut out = String::new();
    let failed: Vec<&HostRotate> = results.iter().filter(|r| r.reply.is_err()).collect();
    let _ = writeln!(out, "  Updated: {}", results.len() - failed.len());
    let _ = writeln!(out, "  Failed:  {}", failed.len());
    for r in results {
        if let Ok(d) = &r.reply {
            if !d.persisted {
                let _ = writeln!(
                    out,
                    "  {:<30}  updated in memory only, until it restarts: {}",
                    r.label.display(),
                    d.warning.as_deref().unwrap_or("not written")
                );
            }
        }
    }
    if !failed.is_empty() {
        let _ = writeln!(out, "Agents requiring attention:");
        for r in &failed {
            let e = r.reply.as_ref().err().map(String::as_str).unwrap_or("");
            let _ = writeln!(out, "  {:<30}  {e}", r.label.display());
        }
        let _ = writeln!(
            out,
            "They stay 'pending' and are brought up to date with the old certificate the next time"
        );
        let _ = writeln!(
            out,
            "anything reaches them (run, ping, maintain) before the overlap ends; then they become 'stale'."
        );
    }
    out
}

/// The text `rotate-cert` (and `maintain`) print for a rotation.
pub(super) fn rotation_text(r: &Rotated) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "New serial:      {}", r.new_serial);
    let old = if r.old_serial.is_empty() {
        "(none)"
    } else {
        &r.old_serial
    };
    let _ = writeln!(out, "Old serial:      {old}");
    let _ = writeln!(out, "Overlap expires: {}", time::iso8601(r.overlap_expires));
    let _ = writeln!(out, "Agents pending:  {}", r.results.len());
    if !r.results.is_empty() {
        let _ = writeln!(out, "Broadcasting new serial to agents...");
        out.push_str(&announcement_lines(&r.results));
    }
    out
}

/// A rotation as JSON: `{new_serial, old_serial, overlap_expires, results}`.
pub(super) fn rotation_json(r: &Rotated) -> Builder {
    Builder::new()
        .str("new_serial", &r.new_serial)
        .str("old_serial", &r.old_serial)
        .str("overlap_expires", time::iso8601(r.overlap_expires))
        .value(
            "results",
            Value::Array(r.results.iter().map(HostRotate::to_json).collect()),
        )
}

/// `ced rotate-cert [--json]`: rotates now. Exit 0 when every agent
/// confirmed, [`exit::MAINTENANCE_INCOMPLETE`] when some did not (they are
/// caught up later), 1 when the rotation itself failed.
pub fn rotate_cert(a: &Args) -> Result<u8, CliError> {
    if !a.words.is_empty() {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher rotate-cert [--json]".into(),
        ));
    }
    let dispatch = dispatch_recovered(a)?;
    if !a.json {
        outln!("Rotating dispatcher certificate...")?;
    }
    let rotated = rt::block_on(dispatch.rotate(&a.token))
        .map_err(|e| CliError::Failed(format!("Rotation failed: {e}")))?;
    let complete = rotated.results.iter().all(|r| r.reply.is_ok());
    if a.json {
        let o = rotation_json(&rotated).object();
        outln!(
            "{}",
            if complete {
                output::cli_ok(o)
            } else {
                output::cli_err(o)
            }
        )?;
    } else {
        crate::out!("{}", rotation_text(&rotated))?;
    }
    Ok(if complete {
        exit::SUCCESS
    } else {
        exit::MAINTENANCE_INCOMPLETE
    })
}

/// The rotation state lines `serial-status` starts with (surface.md 1.18).
fn state_lines(state: Option<&RotationRecord>) -> String {
    let Some(s) = state else {
        return "No rotation has been performed.\n".into();
    };
    let mut out = String::new();
    let _ = writeln!(out, "Current serial:  {}", s.current_serial);
    let _ = writeln!(
        out,
        "Previous serial: {}",
        s.previous_serial.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(out, "Rotated at:      {}", time::iso8601(s.rotated_at));
    let _ = writeln!(out, "Overlap expires: {}", time::iso8601(s.overlap_expires));
    if let Some(r) = s.previous_retired {
        let _ = writeln!(out, "Retired at:      {}", time::iso8601(r));
    }
    out
}

/// The serial, cut to 16 characters plus `...` (surface.md 7.7).
fn short_serial(s: &str) -> String {
    if s.chars().count() > 16 {
        format!("{}...", s.chars().take(16).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The agent table of `serial-status` (surface.md 7.7).
fn agent_table(agents: &[AgentRecord]) -> String {
    let mut out = format!(
        "{:<30}  {:<10}  {:<24}  {}\n",
        "HOSTNAME", "STATUS", "CONFIRMED", "SERIAL"
    );
    out.push_str(&"-".repeat(85));
    out.push('\n');
    for a in agents {
        let confirmed = if a.serial_confirmed.is_empty() {
            "-"
        } else {
            &a.serial_confirmed
        };
        let _ = writeln!(
            out,
            "{:<30}  {:<10}  {:<24}  {}",
            a.hostname,
            rotation::status_of(&a.serial_status),
            confirmed,
            short_serial(&a.dispatcher_serial)
        );
    }
    out
}

/// `ced serial-status [--json]`: the rotation state and where each agent
/// stands (`current`, `pending`, `stale`, `unknown`). With `--json` only
/// the JSON is printed, `{"state":{…}|null,"certificate":{…}|null,
/// "agents":[…]}` (the original printed the text header first).
pub fn serial_status(a: &Args) -> Result<u8, CliError> {
    if !a.words.is_empty() {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher serial-status [--json]".into(),
        ));
    }
    let conf = load_conf(a)?;
    let state = rotation::load_state(&conf).map_err(CliError::Failed)?;
    let mut agents = Registry::new(&conf.registry_dir)
        .list()
        .map_err(CliError::Registry)?;
    for r in &mut agents {
        r.serial_status = rotation::status_of(&r.serial_status).to_string();
    }
    let own = std::fs::read_to_string(&conf.cert)
        .ok()
        .and_then(|p| pki::cert_info_pem(&p).ok());
    let now = time::now();
    if a.json {
        let certificate = match &own {
            Some(i) => Builder::new()
                .str("serial", &i.serial)
                .str("expiry", time::openssl_date(i.not_after))
                .int("days_left", (i.not_after - now).div_euclid(86_400))
                .build(),
            None => Value::Null,
        };
        let body = Builder::new()
            .value(
                "state",
                state.as_ref().map_or(Value::Null, RotationRecord::to_json),
            )
            .value("certificate", certificate)
            .value(
                "agents",
                Value::Array(agents.iter().map(AgentRecord::to_json).collect()),
            );
        outln!("{}", output::cli_ok(body.object()))?;
        return Ok(exit::SUCCESS);
    }
    crate::out!("{}", state_lines(state.as_ref()))?;
    if let Some(i) = &own {
        outln!(
            "Certificate:     {} expires {} ({} days left)",
            i.serial,
            time::openssl_date(i.not_after),
            (i.not_after - now).div_euclid(86_400)
        )?;
    }
    outln!()?;
    if agents.is_empty() {
        outln!("No registered agents.")?;
    } else {
        crate::out!("{}", agent_table(&agents))?;
    }
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_serials_are_cut_to_sixteen_characters() {
        assert_eq!(short_serial("1f"), "1f");
        assert_eq!(short_serial(&"a".repeat(16)), "a".repeat(16));
        assert_eq!(
            short_serial(&"0123456789abcdef0".repeat(2)),
            "0123456789abcdef..."
        );
    }
}
