//! The operator's decision on a queued request: approve (check the CSR, sign
//! it with the CA, write the registry record, then `<reqid>.approved`) or
//! deny (`<reqid>.denied`, drop the request).
//!
//! A decision is exclusive: both claim the request's lock first (see
//! `queue`), so two operators acting on one request at once get one
//! decision and one "already being decided" error, never two signatures.
//!
//! A request for a name that is already registered would replace that
//! agent's key, address and port: the registered host is cut off and the
//! requester receives its runs. `approve` refuses it unless the operator
//! passes `--replace` (the host re-pairing with a new key); the check and
//! the registry write run under `.approve.lock`, so two requests for one
//! new name cannot both be approved without `--replace` either.
//!
//! Both are synchronous (file reads, signing, a name lookup, the registry
//! lock): the CLI verbs call them directly, async callers through
//! `smol::unblock`.

use std::net::IpAddr;
use std::path::Path;

use crate::conf::DispatcherConf;
use crate::control::registry::Registry;
use crate::dispatcher::pairing::queue::{self, queue_file, Claim, ClaimError};
use crate::dispatcher::{Args, CliError};
use crate::proto::json;
use crate::proto::{AgentRecord, LookupBy, PairDecision, DEFAULT_AGENT_PORT};
use crate::{fsx, log, pki, time};

/// Operator overrides given to `approve` and `edit-agent`.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--lookup-by`.
    pub lookup_by: Option<LookupBy>,
    /// `--agent-port`.
    pub port: Option<u16>,
    /// `--ip`.
    pub ip: Option<String>,
    /// `--replace`: approve even though the name is registered, replacing
    /// the record.
    pub replace: bool,
}

/// What an approval did, for the operator's summary.
#[derive(Debug)]
pub struct Approved {
    /// The registered name.
    pub name: String,
    /// How the dispatcher will address it.
    pub lookup_by: LookupBy,
    /// The address it will use.
    pub addr: String,
    /// The agent's port.
    pub port: u16,
    /// The record this approval replaced (`--replace`).
    pub replaced: Option<AgentRecord>,
}

impl Overrides {
    /// Validates the flags.
    pub fn from_args(a: &Args) -> Result<Overrides, CliError> {
        let lookup_by =
            match a.lookup_by.as_deref() {
                None => None,
                Some(v) => Some(LookupBy::parse(v).ok_or_else(|| {
                    CliError::Usage("--lookup-by must be 'ip' or 'hostname'".into())
                })?),
            };
        let port = match a.agent_port.as_deref() {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(CliError::Usage(
                        "--agent-port must be a port number (1-65535)".into(),
                    ))
                }
            },
        };
        let ip = match a.ip.as_deref() {
            None | Some("") => a.ip.clone(),
            Some(ip) if ip.parse::<IpAddr>().is_ok() => Some(ip.to_string()),
            Some(_) => {
                return Err(CliError::Usage(
                    "--ip must be an IPv4 or IPv6 address".into(),
                ))
            }
        };
        Ok(Overrides {
            lookup_by,
            port,
            ip,
            replace: a.replace,
        })
    }
}

/// The registry record of `name`, if it is already paired (an unreadable
/// registry counts as not registered here; `approve` reports it).
pub fn registered(conf: &DispatcherConf, name: &str) -> Option<AgentRecord> {
    Registry::new(&conf.registry_dir).get(name).ok().flatten()
}

/// Claims request `id` for a decision, worded for the operator.
fn claim(dir: &Path, id: &str) -> Result<Claim, CliError> {
    queue::claim(dir, id).map_err(|e| {
        CliError::Failed(match e {
            ClaimError::NotPending => format!("No pending request '{id}'"),
            ClaimError::Busy => format!(
                "Request '{id}' is already being approved or denied by another command; run 'ctrl-exec-dispatcher list-requests' to see whether it is still pending."
            ),
            ClaimError::Decided(what) => format!(
                "Request '{id}' has already been {what}; the listener delivers that decision."
            ),
            ClaimError::Io(path, e) => format!("cannot lock {}: {e}", path.display()),
        })
    })
}

/// The refusal of an approval that would silently replace `old`.
fn replace_refusal(id: &str, old: &AgentRecord) -> CliError {
    let name = &old.hostname;
    CliError::Failed(format!(
        "Refusing to approve '{id}': an agent named '{name}' is already registered \
         (addr={}:{}, paired {}).\n\
         Approving would replace its key, address and port: the registered agent would be cut off \
         and the requester would receive its runs.\n\
         If this is that host re-pairing (new key), approve with:\n    \
         ctrl-exec-dispatcher approve {id} --replace\n\
         Otherwise deny it:\n    ctrl-exec-dispatcher deny {id}",
        old.address(),
        old.port,
        if old.paired.is_empty() {
            "at an unknown time"
        } else {
            &old.paired
        },
    ))
}

/// Signs a queued request and records the agent.
///
/// Refused when another command holds the request, when it is already
/// decided, and when its name is registered unless `o.replace`.
pub fn approve_request(
    conf: &DispatcherConf,
    id: &str,
    o: &Overrides,
) -> Result<Approved, CliError> {
    let dir = conf.pairing_dir();
    let _claim = claim(&dir, id)?;
    let req = queue::load(&dir, id)
        .ok_or_else(|| CliError::Failed(format!("No pending request '{id}'")))?;
    let name = req.hostname.clone();
    let names_lock = dir.join(".approve.lock");
    let _names = fsx::lock(&names_lock, queue::LOCK_MODE)
        .map_err(|e| CliError::Failed(format!("cannot lock {}: {e}", names_lock.display())))?;
    let registry = Registry::new(&conf.registry_dir);
    let replaced = registry
        .get(&name)
        .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    if let Some(old) = &replaced {
        if !o.replace {
            return Err(replace_refusal(id, old));
        }
    }
    let csr = pki::check_csr(&req.csr, Some(&name))
        .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", p.display())))
    };
    let ca_key = read(&conf.ca_key_path())?;
    let ca_cert = read(&conf.ca_cert_path())?;
    let cert_pem = pki::sign_csr(&ca_cert, &ca_key, &csr, conf.cert_days)
        .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    let info = pki::cert_info_pem(&cert_pem).map_err(|e| CliError::Failed(e.to_string()))?;
    let dispatcher_serial = read(&conf.cert)
        .ok()
        .and_then(|pem| pki::cert_info_pem(&pem).ok())
        .map(|i| i.serial)
        .unwrap_or_default();
    if dispatcher_serial.is_empty() {
        eprintln!("WARNING: cannot read the dispatcher certificate serial from {}; the agent will reject every request as 'serial mismatch'. Run 'ctrl-exec-dispatcher setup-ctrl-exec'.", conf.cert.display());
    }
    let approved = PairDecision::Approved {
        cert: cert_pem.clone(),
        ca: ca_cert.clone(),
        nonce: req.nonce.clone(),
        dispatcher_serial: dispatcher_serial.clone(),
        dispatcher_id: conf.dispatcher_id.clone(),
    };
    let ip = o.ip.clone().unwrap_or_else(|| req.ip.clone());
    // No operator flag and no agent hint: address the agent by name only when
    // the name resolves here; otherwise by the IP it paired from.
    let lookup_by = o
        .lookup_by
        .or_else(|| LookupBy::parse(&req.lookup_by))
        .unwrap_or_else(|| {
            if !ip.is_empty() && !resolves(&name) {
                LookupBy::Ip
            } else {
                LookupBy::Hostname
            }
        });
    let port = o.port.or(req.port).unwrap_or(DEFAULT_AGENT_PORT);
    let now = time::iso8601(time::now());
    let record = AgentRecord {
        hostname: name.clone(),
        ip: ip.clone(),
        paired: now.clone(),
        expiry: time::openssl_date(info.not_after),
        reqid: id.to_string(),
        lookup_by,
        port,
        tags: Default::default(),
        dispatcher_serial: dispatcher_serial.clone(),
        serial_status: if dispatcher_serial.is_empty() {
            "unknown"
        } else {
            "current"
        }
        .into(),
        serial_broadcast: String::new(),
        serial_confirmed: if dispatcher_serial.is_empty() {
            String::new()
        } else {
            now
        },
        pubkey_sha256: info.spki_sha256.clone(),
        serial: info.serial.clone(),
    };
    registry
        .put(&record)
        .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    fsx::write_atomic(
        &queue_file(&dir, id, "approved"),
        json::to_string(&approved.to_json()).as_bytes(),
        0o600,
    )
    .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    match &replaced {
        None => log::info(
            "pair-approve",
            &[("AGENT", &name), ("REQID", id), ("SERIAL", &info.serial)],
        ),
        // A replaced registration is worth an operator's look: warning.
        Some(old) => log::warn(
            "pair-approve",
            &[
                ("AGENT", &name),
                ("REQID", id),
                ("SERIAL", &info.serial),
                ("REPLACED", old.address()),
                ("REPLACED_REQID", &old.reqid),
            ],
        ),
    }
    let addr = record.address().to_string();
    Ok(Approved {
        name,
        lookup_by,
        addr,
        port,
        replaced,
    })
}

/// Whether `name` resolves here (a blocking name lookup).
fn resolves(name: &str) -> bool {
    use std::net::ToSocketAddrs;
    (name, DEFAULT_AGENT_PORT)
        .to_socket_addrs()
        .map(|mut a| a.next().is_some())
        .unwrap_or(false)
}

/// Writes `<reqid>.denied` for a queued request and removes the request.
pub fn deny_request(conf: &DispatcherConf, id: &str) -> Result<(), CliError> {
    let dir = conf.pairing_dir();
    let _claim = claim(&dir, id)?;
    let body = PairDecision::Denied {
        reason: "rejected by operator".into(),
    };
    fsx::write_atomic(
        &queue_file(&dir, id, "denied"),
        json::to_string(&body.to_json()).as_bytes(),
        0o600,
    )
    .map_err(|e| CliError::Failed(format!("Deny failed: {e}")))?;
    let _ = std::fs::remove_file(queue_file(&dir, id, "json"));
    log::info("pair-deny", &[("REQID", id)]);
    Ok(())
}
