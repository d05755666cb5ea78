//! Registry and lock views: `list-agents`, `edit-agent`, `unpair`,
//! `list-locks`.

use crate::control::locks::Locks;
use crate::control::registry::{Registry, RegistryError};
use crate::control::revoked::RevokedAgents;
use crate::dispatcher::{load_conf, output, pairing, Args, CliError};
use miniserde::json::{Object, Value};

use crate::proto::json;
use crate::{log, time};

/// `ced list-agents`.
pub fn list_agents(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let filter = match &a.tags {
        Some(spec) => Some(
            crate::dispatcher::hosts::parse_tag_filter(spec)
                .map_err(|e| CliError::Usage(format!("Invalid --tags filter: {e}")))?,
        ),
        None => None,
    };
    let agents = Registry::new(&conf.registry_dir).list().map_err(|e| match e {
        RegistryError::Io(_, ref io) if io.kind() == std::io::ErrorKind::PermissionDenied => CliError::Failed(
            "Cannot access agent registry: permission denied.\nTry: sudo ctrl-exec-dispatcher list-agents".into(),
        ),
        other => CliError::Failed(other.to_string()),
    })?;
    if agents.is_empty() && !a.json {
        crate::outln!("No registered agents.")?;
        return Ok(0);
    }
    let agents: Vec<_> = agents
        .into_iter()
        .filter(|ag| {
            filter
                .as_ref()
                .is_none_or(|f| f.iter().all(|(k, v)| ag.tags.get(k) == Some(v)))
        })
        .collect();
    if agents.is_empty() && !a.json {
        crate::outln!("No agents match the tag filter.")?;
        return Ok(0);
    }
    if a.json {
        crate::outln!(
            "{}",
            json::to_string(&Value::Array(
                agents.iter().map(|ag| ag.to_json()).collect()
            ))
        )?;
        return Ok(0);
    }
    crate::outln!(
        "{:<30}  {:<16}  {:<5}  {:<8}  {:<22}  {:<24}  DAYS LEFT",
        "HOSTNAME",
        "IP",
        "PORT",
        "LOOKUP",
        "PAIRED",
        "CERT EXPIRY"
    )?;
    crate::outln!("{}", "-".repeat(112))?;
    let now = time::now();
    // The column stays a bare number (negative once expired), as scripts
    // parse it; what it means is said on stderr after the table.
    let mut notes = Vec::new();
    for ag in &agents {
        let days = match time::parse_openssl_date(&ag.expiry) {
            None => "?".to_string(),
            Some(t) => {
                let left = (t - now).div_euclid(86_400);
                if t <= now {
                    notes.push(format!(
                        "{}: certificate expired; pair it again (cea request-pairing)",
                        ag.hostname
                    ));
                } else if crate::control::renew::in_window(t, conf.cert_days, now) {
                    notes.push(format!(
                        "{}: renewal due ({left} days left); 'ced maintain' or 'ced ping' renews it",
                        ag.hostname
                    ));
                }
                left.to_string()
            }
        };
        let q = |s: &str| {
            if s.is_empty() {
                "?".to_string()
            } else {
                s.to_string()
            }
        };
        crate::outln!(
            "{:<30}  {:<16}  {:<5}  {:<8}  {:<22}  {:<24}  {}",
            ag.hostname,
            q(&ag.ip),
            ag.port,
            ag.lookup_by,
            q(&ag.paired),
            q(&ag.expiry),
            days
        )?;
    }
    for note in notes {
        eprintln!("Note: {note}.");
    }
    Ok(0)
}

/// `ced edit-agent`.
pub fn edit_agent(a: &Args) -> Result<u8, CliError> {
    let [name] = a.words.as_slice() else {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher edit-agent <name> [--rename <new>] [--ip <addr>] [--agent-port <n>] [--lookup-by ip|hostname]".into(),
        ));
    };
    if a.rename.is_none() && a.ip.is_none() && a.agent_port.is_none() && a.lookup_by.is_none() {
        return Err(CliError::Usage(
            "Nothing to change. Pass at least one of --rename, --ip, --agent-port, --lookup-by."
                .into(),
        ));
    }
    let overrides = pairing::Overrides::from_args(a)?;
    if a.ip.as_deref() == Some("") {
        return Err(CliError::Usage("--ip must not be empty".into()));
    }
    let conf = load_conf(a)?;
    let registry = Registry::new(&conf.registry_dir);
    let edit_err = |e: RegistryError| CliError::Failed(format!("Edit failed: {e}"));
    let mut current = name.clone();
    if let Some(new) = &a.rename {
        registry.rename(name, new).map_err(edit_err)?;
        current = new.clone();
    }
    let agent = registry
        .update(&current, |ag| {
            if let Some(ip) = &overrides.ip {
                ag.ip = ip.clone();
            }
            if let Some(p) = overrides.port {
                ag.port = p;
            }
            if let Some(lb) = overrides.lookup_by {
                ag.lookup_by = lb;
            }
        })
        .map_err(edit_err)?;
    log::info("edit-agent", &[("AGENT", &agent.hostname)]);
    if a.json {
        crate::outln!("{}", json::to_string(&agent.to_json()))?;
    } else {
        crate::outln!("Updated agent '{}'.", agent.hostname)?;
        if current != *name {
            crate::outln!("  renamed from: {name}")?;
        }
        crate::outln!("  ip:        {}", agent.ip)?;
        crate::outln!("  port:      {}", agent.port)?;
        crate::outln!("  lookup_by: {}", agent.lookup_by)?;
    }
    Ok(0)
}

/// `ced unpair [--revoke]`. With `--revoke`, the agent certificate's
/// serial (when the record has one) and pinned key are added to the
/// dispatcher's revocation list first, so a failed write leaves the record
/// in place to retry.
pub fn unpair(a: &Args) -> Result<u8, CliError> {
    let [name] = a.words.as_slice() else {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher unpair <hostname> [--revoke]".into(),
        ));
    };
    let conf = load_conf(a)?;
    let registry = Registry::new(&conf.registry_dir);
    let revoked = if a.revoke {
        let fail = |m: String| CliError::Failed(format!("Unpair failed: {m}"));
        let record = registry
            .get(name)
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("No registry entry for '{name}'")))?;
        if record.serial.is_empty() && record.pubkey_sha256.is_empty() {
            return Err(fail(format!(
                "the record of '{name}' has neither a certificate serial nor a pinned key to revoke; add its serial to the agents' revocation lists by hand, then unpair without --revoke"
            )));
        }
        let path = conf.revoked_agents_path();
        let added = RevokedAgents::add(
            &path,
            Some(record.serial.as_str()).filter(|s| !s.is_empty()),
            Some(record.pubkey_sha256.as_str()).filter(|k| !k.is_empty()),
        )
        .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        Some(added)
    } else {
        None
    };
    let agent = registry
        .remove(name)
        .map_err(|e| CliError::Failed(format!("Unpair failed: {e}")))?;
    log::info("unpair", &[("AGENT", name), ("EXPIRY", &agent.expiry)]);
    crate::outln!("Unregistered '{name}'.")?;
    match revoked {
        Some(added) => {
            for s in &added.serials {
                crate::outln!("Revoked agent certificate serial {s}.")?;
            }
            for k in &added.keys {
                crate::outln!("Revoked agent public key sha256 {k}.")?;
            }
            log::info(
                "revoke-agent",
                &[
                    ("AGENT", name),
                    ("KEY", &agent.pubkey_sha256),
                    ("SERIAL", &agent.serial),
                ],
            );
            crate::outln!(
                "This dispatcher now refuses that certificate even if the agent is paired again with it."
            )?;
        }
        None => {
            crate::outln!(
                "WARNING: Agent certificate remains valid until: {}",
                agent.expiry
            )?;
            crate::outln!(
                "Decommission the agent promptly or add its serial to the revocation list."
            )?;
        }
    }
    Ok(0)
}

/// `ced list-locks`.
pub fn list_locks(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let held = Locks::new(&conf.locks_dir()).held();
    if held.is_empty() && !a.json {
        crate::outln!("No locks currently held.")?;
        return Ok(0);
    }
    if a.json {
        let locks: Vec<Value> = held
            .iter()
            .map(|(h, s)| json::Builder::new().str("host", h).str("script", s).build())
            .collect();
        let mut o = Object::new();
        o.insert("locks".into(), Value::Array(locks.into_iter().collect()));
        crate::outln!("{}", output::cli_ok(o))?;
    } else {
        crate::outln!("{:<30}  SCRIPT", "HOST")?;
        crate::outln!("{}", "-".repeat(50))?;
        for (h, s) in held {
            crate::outln!("{h:<30}  {s}")?;
        }
    }
    Ok(0)
}
