//! `ced revoke-dispatcher <serial>`: pushes a revoked dispatcher serial to
//! every registered agent (`POST /revoke-serial`); each refuses that
//! certificate from its next connection on, without reload or restart.

use crate::control::auth::Caller;
use crate::dispatcher::run::{dispatch, report};
use crate::dispatcher::{output, Args, CliError};
use crate::proto::HostRevoke;
use crate::{exit, outln, pki, rt};

/// `ced revoke-dispatcher <serial> [--json]`. Exit 0 when every agent
/// revoked it and wrote it to its revocation list (or had it already), 1
/// otherwise (unreachable, refused, or revoked in memory only).
pub fn revoke_dispatcher(a: &Args) -> Result<u8, CliError> {
    let [raw] = a.words.as_slice() else {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher revoke-dispatcher <serial>".into(),
        ));
    };
    let serial = pki::canonical_serial(raw)
        .ok_or_else(|| CliError::Usage(format!("Invalid serial '{raw}'")))?;
    let dispatch = dispatch(a)?;
    let own = std::fs::read_to_string(&dispatch.conf.cert)
        .ok()
        .and_then(|pem| pki::cert_info_pem(&pem).ok())
        .map(|i| i.serial);
    if own.as_deref() == Some(serial.as_str()) {
        return Err(CliError::Usage(format!(
            "Serial {serial} is this dispatcher's own certificate; agents refuse to revoke the serial of the connection asking. Run revoke-dispatcher from another trusted dispatcher."
        )));
    }
    let caller = Caller::cli(&a.username, &a.token);
    let results =
        rt::block_on(dispatch.revoke_serial(&caller, &serial)).map_err(|e| report(a, e))?;
    let failed = results.iter().filter(|r| r.reply.is_err()).count();
    let unsaved = results
        .iter()
        .filter(|r| r.reply.as_ref().is_ok_and(|r| !r.persisted))
        .count();
    if a.json {
        outln!(
            "{}",
            output::cli_results(results.iter().map(HostRevoke::to_json).collect())
        )?;
    } else if results.is_empty() {
        outln!("No registered agents.")?;
    } else {
        outln!(
            "Revoking dispatcher serial {serial} on {} agent(s):",
            results.len()
        )?;
        for r in &results {
            let what = match &r.reply {
                Ok(reply) if reply.already => "already revoked".to_string(),
                Ok(reply) if !reply.persisted => format!(
                    "revoked in memory only, until the agent restarts: {}",
                    reply.warning.as_deref().unwrap_or("not written")
                ),
                Ok(_) => "revoked".to_string(),
                Err(e) => format!("error: {e}"),
            };
            outln!("  {:<30}  {what}", r.label.display())?;
        }
        if unsaved > 0 {
            outln!("{unsaved} agent(s) could not write it to their revoked_serials file; add {serial} there by hand (as root) before they restart.")?;
        }
        if failed > 0 {
            outln!("{failed} agent(s) did not revoke it; retry when they are reachable, or add {serial} to their revoked_serials file by hand and send SIGHUP.")?;
        }
    }
    if failed > 0 || unsaved > 0 {
        return Err(CliError::Reported(exit::FAILURE));
    }
    Ok(exit::SUCCESS)
}
