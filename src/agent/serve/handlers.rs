//! The agent's handlers: ping, run (sync or async), capabilities, result,
//! the two steps of certificate renewal, rotate-serial and revoke-serial.
//!
//! Each is called by the route table with the connection's snapshot and
//! authenticated caller, reads its request into a `proto` type, and returns
//! a typed answer.

use std::path::Path;

use crate::agent::cert;
use crate::agent::runner::{self, Bounds, Context};
use crate::agent::serve::routes::{Answer, Caller};
use crate::agent::serve::snapshot::{Revoked, Rotated, Snapshot};
use crate::agent::serve::Agent;
use crate::agent::trust::{self, Persist};
use crate::conf;
use crate::hook::{self, Verdict};
use crate::proto::json::FieldError;
use crate::proto::{
    Capabilities, ErrorReply, PingReply, PingRequest, ReadError, RenewComplete, RenewCompleteReply,
    RenewReply, RenewRequest, ReqId, RevokeSerialReply, RevokeSerialRequest, RotateAction,
    RotateDone, RotateSerialReply, RotateSerialRequest, RunReply, RunRequest, ScriptInfo,
    ScriptName,
};
use crate::{log, pki, time, VERSION};

/// Asks the auth hook, when one is configured, about the request `request`
/// builds (only then); the caller's address, dispatcher id and serial are filled in here. The
/// hook's reason when it denies.
async fn hook_denial(
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    request: impl FnOnce() -> hook::Request,
) -> Option<String> {
    let h = snap.settings.hook.as_ref()?;
    let request = hook::Request {
        source_ip: caller.ip.clone(),
        dispatcher: dispatcher.to_string(),
        dispatcher_serial: caller.serial.clone(),
        ..request()
    };
    match hook::check(h, &request).await {
        Verdict::Deny { reason, .. } => Some(reason),
        Verdict::Allow => None,
    }
}

/// A control-plane body (`/rotate-serial`, `/revoke-serial`), or its 400
/// `{"error":…}` refusal.
fn plain_body<T>(read: Result<T, ReadError>) -> Result<T, ErrorReply> {
    let refuse = |msg: String| ErrorReply::Plain(400, msg);
    match read {
        Ok(r) => Ok(r),
        Err(ReadError::Field(e)) => Err(refuse(e.to_string())),
        Err(ReadError::Json(_)) => Err(refuse("invalid JSON".into())),
    }
}

/// `POST /ping`: the agent's status for a trusted dispatcher.
pub(super) fn ping(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    body: &[u8],
) -> Answer {
    let request = match PingRequest::read(body) {
        Ok(r) => r,
        Err(e) => return Answer::Error(ErrorReply::Plain(400, e.to_string())),
    };
    log::info(
        "ping",
        &[
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("REQID", &request.reqid),
        ],
    );
    Answer::Ping(PingReply {
        status: "ok".into(),
        host: snap.settings.hostname.clone(),
        version: VERSION.into(),
        expiry: snap.expiry(),
        staged: agent.conf.cert_staging_path.exists(),
        reqid: request.reqid,
    })
}

/// `POST /renew` (trusted dispatchers only): a CSR for the agent's existing
/// key with CN = its hostname.
pub(super) async fn renew(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    body: &[u8],
) -> Answer {
    let request = match RenewRequest::read(body) {
        Ok(r) => r,
        Err(e) => return Answer::Error(ErrorReply::Plain(400, e.to_string())),
    };
    let key_path = agent.conf.key.clone();
    let cn = snap.settings.hostname.clone();
    let made = smol::unblock(move || {
        let key = std::fs::read_to_string(&key_path).map_err(|_| "agent key not available")?;
        pki::make_csr(&key, &cn).map_err(|_| "could not generate CSR")
    })
    .await;
    log::info(
        "renew",
        &[
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("REQID", &request.reqid),
            ("RESULT", if made.is_ok() { "csr" } else { "error" }),
        ],
    );
    Answer::Renew(match made {
        Ok(csr) => RenewReply::Csr {
            csr,
            reqid: request.reqid,
        },
        Err(e) => RenewReply::Error(e.into()),
    })
}

/// `POST /renew-complete` (trusted dispatchers only): checks the renewed
/// certificate against the agent's CA and key, writes it to the staging
/// path and over the live certificate, and makes the listener present it
/// from the next handshake on.
pub(super) async fn renew_complete(
    agent: &Agent,
    caller: &Caller,
    dispatcher: &str,
    body: &[u8],
) -> Answer {
    let request = match RenewComplete::read(body) {
        Ok(r) => r,
        Err(ReadError::Field(e)) => return Answer::Error(ErrorReply::Plain(400, e.to_string())),
        Err(ReadError::Json(_)) => {
            return Answer::Error(ErrorReply::Plain(400, "invalid JSON".into()))
        }
    };
    let reqid = request.reqid.clone();
    let conf = &agent.conf;
    let (ca_path, key_path, live, staged) = (
        conf.ca.clone(),
        conf.key.clone(),
        conf.cert.clone(),
        conf.cert_staging_path.clone(),
    );
    let outcome = smol::unblock(move || -> Result<(String, String, String, bool), String> {
        if request.cert.trim().is_empty() {
            return Err("cert required".into());
        }
        let ca = std::fs::read_to_string(&ca_path)
            .map_err(|_| format!("CA cert not found at '{}'", ca_path.display()))?;
        let key = std::fs::read_to_string(&key_path)
            .map_err(|_| format!("agent key not found at '{}'", key_path.display()))?;
        cert::check(&request.cert, &key, &ca, time::now()).map_err(|r| r.text().to_string())?;
        cert::write(&staged, &request.cert).map_err(|e| format!("could not stage cert: {e}"))?;
        // The live file is a trust file the service user normally cannot
        // write; the staged copy is then promoted at the next start.
        let live_written = match cert::write(&live, &request.cert) {
            Ok(()) => true,
            Err(e) => {
                log::warn(
                    "renew-live-write",
                    &[
                        ("CERT", &live.display().to_string()),
                        ("ERROR", &e.to_string()),
                    ],
                );
                false
            }
        };
        Ok((request.cert, key, ca, live_written))
    })
    .await
    .and_then(|(cert_pem, key, ca, live_written)| {
        agent
            .use_certificate(&cert_pem, &key, &ca)
            .map_err(|e| format!("could not use renewed cert: {e}"))?;
        Ok(live_written)
    });
    let (result, detail) = match &outcome {
        Ok(true) => ("ok", "live"),
        Ok(false) => ("ok", "staged-only"),
        Err(e) => ("error", e.as_str()),
    };
    let log_line = if outcome.is_ok() {
        log::info
    } else {
        log::warn
    };
    log_line(
        "renew-complete",
        &[
            ("DETAIL", detail),
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("REQID", &reqid),
            ("RESULT", result),
        ],
    );
    Answer::RenewComplete(match outcome {
        Ok(_) => RenewCompleteReply::Staged { reqid },
        Err(e) => RenewCompleteReply::Error(e),
    })
}

/// `POST /run`: typed body, allowlist, auth hook, then run (or start
/// detached).
pub(super) async fn run_script(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    body: &[u8],
) -> RunReply {
    let req = match RunRequest::read(body) {
        Ok(r) => r,
        Err(ReadError::Field(e)) => return RunReply::BadField(e),
        Err(ReadError::Json(_)) => return RunReply::InvalidJson,
    };
    if req.args.iter().any(|a| a.contains('\0')) {
        return RunReply::BadField(FieldError {
            field: "args",
            expected: "an array of strings without NUL bytes",
        });
    }
    let refuse = |error: String| RunReply::Refused {
        script: req.script.clone(),
        reqid: req.reqid.clone(),
        error,
    };
    let entry = ScriptName::parse(&req.script)
        .and_then(|name| snap.allowlist.scripts.get(name.as_str()))
        .filter(|e| {
            snap.settings.script_dirs.is_empty()
                || conf::within_script_dirs(&e.path, &snap.settings.script_dirs)
        });
    let Some(entry) = entry else {
        log::warn(
            "deny",
            &[
                ("PEER", &caller.ip),
                ("REQID", &req.reqid),
                ("SCRIPT", &req.script),
            ],
        );
        return refuse("script not permitted".into());
    };
    let asked = || hook::Request {
        action: "run".into(),
        script: req.script.clone(),
        args: req.args.clone(),
        username: req.username.clone(),
        token: req.token.clone(),
        reqid: req.reqid.clone(),
        ..Default::default()
    };
    if let Some(reason) = hook_denial(snap, caller, dispatcher, asked).await {
        log::warn(
            "deny",
            &[
                ("PEER", &caller.ip),
                ("REASON", &reason),
                ("REQID", &req.reqid),
                ("SCRIPT", &req.script),
            ],
        );
        return refuse(format!("not authorised: {reason}"));
    }
    let bounds = Bounds {
        executor: snap.settings.executor_socket.clone(),
        stdin_timeout: snap.settings.stdin_timeout,
        run_timeout: entry.timeout.unwrap_or(snap.settings.script_timeout),
        max_output: snap.settings.max_output_bytes,
    };
    let detach = req.detach;
    let ctx = Context {
        script: req.script,
        args: req.args,
        reqid: req.reqid,
        username: req.username,
        token: req.token,
        peer_ip: caller.ip.clone(),
        dispatcher: dispatcher.to_string(),
    };
    if detach {
        return agent.jobs.submit(entry.path.clone(), ctx, bounds).await;
    }
    let started = runner::start(&entry.path, &ctx, bounds);
    let mark = agent.jobs.mark_sync(started.group(), &ctx);
    let output = started.finish().await;
    drop(mark);
    log::info(
        "run",
        &[
            ("DISPATCHER", dispatcher),
            ("EXIT", &output.exit.to_string()),
            ("PEER", &caller.ip),
            ("REQID", &ctx.reqid),
            ("SCRIPT", &ctx.script),
        ],
    );
    RunReply::Ran {
        script: ctx.script,
        reqid: ctx.reqid,
        output,
    }
}

/// `POST /rotate-serial` (protocol.md 3.5): a trusted dispatcher announces
/// a serial of its own (`add`, the new certificate of a rotation) or
/// retires one (`remove`), always under the identity its certificate maps
/// to. In effect from the next connection, without a reload; written to the
/// trusted map, or staged when the agent cannot write it (see
/// `agent::trust`). The auth hook is asked as `rotate` with args
/// `[action, serial]`. Refusals of the body are 200
/// `{"status":"error","error":…}` as in the original; a hook denial is 403.
pub(super) async fn rotate_serial(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    body: &[u8],
) -> Answer {
    let plain = |status: u16, msg: String| Answer::Error(ErrorReply::Plain(status, msg));
    let req = match plain_body(RotateSerialRequest::read(body)) {
        Ok(r) => r,
        Err(refusal) => return Answer::Error(refusal),
    };
    let fail = |reason: &str, serial: &str| {
        log::warn(
            "rotate-fail",
            &[
                ("DISPATCHER", dispatcher),
                ("PEER", &caller.ip),
                ("REASON", reason),
                ("REQID", &req.reqid),
                ("SERIAL", serial),
                ("SERIAL_ACTION", &req.action),
            ],
        );
        Answer::Rotated(RotateSerialReply::Error(reason.to_string()))
    };
    if req.serial.trim().is_empty() {
        return fail("serial required", "");
    }
    let Some(action) = RotateAction::parse(&req.action) else {
        return fail(&format!("invalid action '{}'", req.action), &req.serial);
    };
    let Some(serial) = trust::rotation_serial(&req.serial) else {
        return fail(&format!("invalid serial '{}'", req.serial), &req.serial);
    };
    let cert = match (action, &req.cert) {
        (RotateAction::Add, Some(pem)) => {
            let ca_path = agent.conf.ca.clone();
            let (pem2, serial2) = (pem.clone(), serial.clone());
            let checked = smol::unblock(move || {
                let ca = std::fs::read_to_string(&ca_path)
                    .map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
                trust::check_announced(&pem2, &serial2, &ca, time::now())
            })
            .await;
            if let Err(e) = checked {
                return fail(&format!("certificate refused: {e}"), &serial);
            }
            Some(pem.as_str())
        }
        _ => None,
    };
    let asked = || hook::Request {
        action: "rotate".into(),
        args: vec![action.as_str().into(), serial.clone()],
        token: req.token.clone(),
        reqid: req.reqid.clone(),
        ..Default::default()
    };
    if let Some(reason) = hook_denial(snap, caller, dispatcher, asked).await {
        log::warn(
            "rotate-deny",
            &[
                ("DISPATCHER", dispatcher),
                ("PEER", &caller.ip),
                ("REASON", &reason),
                ("REQID", &req.reqid),
                ("SERIAL", &serial),
                ("SERIAL_ACTION", action.as_str()),
            ],
        );
        return plain(403, format!("not authorised: {reason}"));
    }
    let done = match agent.rotate_serial(action, &serial, dispatcher, &caller.serial, cert) {
        Ok(r) => r,
        Err(e) => return fail(&e, &serial),
    };
    let Rotated { already, persist } = done;
    // An add without a certificate cannot be checked again at the next
    // load, so staging does not keep it across a restart.
    let unbacked = action == RotateAction::Add && cert.is_none();
    let (persisted, staged, warning) = match persist {
        Persist::Written => (true, false, None),
        Persist::Staged(why) if unbacked => (
            false,
            true,
            Some(format!(
                "{why}; announced without a certificate, so held in memory until the agent restarts"
            )),
        ),
        Persist::Staged(_) => (true, true, None),
        Persist::Failed(why) => (false, false, Some(why)),
    };
    let log_line = if persisted { log::info } else { log::warn };
    log_line(
        "rotate",
        &[
            ("ALREADY", if already { "1" } else { "0" }),
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("PERSISTED", if persisted { "1" } else { "0" }),
            ("REQID", &req.reqid),
            ("SERIAL", &serial),
            ("SERIAL_ACTION", action.as_str()),
            ("STAGED", if staged { "1" } else { "0" }),
        ],
    );
    Answer::Rotated(RotateSerialReply::Done(RotateDone {
        action: action.as_str().into(),
        serial: req.serial.clone(),
        by: dispatcher.to_string(),
        host: snap.settings.hostname.clone(),
        already,
        persisted,
        staged,
        warning,
        reqid: req.reqid.clone(),
    }))
}

/// `POST /revoke-serial` (extension): a trusted dispatcher revokes a
/// dispatcher serial on this agent, effective for the next connection. The
/// serial of the connection asking is refused (a dispatcher cannot lock
/// itself out, and so cannot revoke the last trusted dispatcher this agent
/// has: the one asking stays). The auth hook is asked as `rotate` with args
/// `["revoke", <serial>]`.
pub(super) async fn revoke_serial(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    body: &[u8],
) -> Answer {
    let plain = |status: u16, msg: String| Answer::Error(ErrorReply::Plain(status, msg));
    let req = match plain_body(RevokeSerialRequest::read(body)) {
        Ok(r) => r,
        Err(refusal) => return Answer::Error(refusal),
    };
    if req.serial.trim().is_empty() {
        return plain(400, "serial required".into());
    }
    let Some(serial) = pki::canonical_serial(&req.serial) else {
        return plain(400, format!("invalid serial '{}'", req.serial));
    };
    let deny = |reason: &str| {
        log::warn(
            "revoke-serial-deny",
            &[
                ("DISPATCHER", dispatcher),
                ("PEER", &caller.ip),
                ("REASON", reason),
                ("REQID", &req.reqid),
                ("SERIAL", &serial),
            ],
        );
    };
    if serial == caller.serial {
        deny("own-serial");
        return plain(
            403,
            "refusing to revoke the serial of the connection asking; revoke it from another trusted dispatcher".into(),
        );
    }
    let asked = || hook::Request {
        action: "rotate".into(),
        args: vec!["revoke".into(), serial.clone()],
        token: req.token.clone(),
        reqid: req.reqid.clone(),
        ..Default::default()
    };
    if let Some(reason) = hook_denial(snap, caller, dispatcher, asked).await {
        deny(&reason);
        return plain(403, format!("not authorised: {reason}"));
    }
    let note = format!(
        "revoked by {dispatcher} (serial {}) at {}",
        caller.serial,
        time::iso8601(time::now())
    );
    let (already, warning) = match agent.revoke_serial(&serial, &note) {
        Revoked::Already => (true, None),
        Revoked::Written => (false, None),
        Revoked::MemoryOnly(e) => {
            log::error(
                "revoke-serial-unsaved",
                &[
                    ("ERROR", &e),
                    ("REASON", "revoked in memory until restart"),
                    ("SERIAL", &serial),
                ],
            );
            (false, Some(e))
        }
    };
    log::info(
        "revoke-serial",
        &[
            ("ALREADY", if already { "1" } else { "0" }),
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("REQID", &req.reqid),
            ("SERIAL", &serial),
        ],
    );
    Answer::Revoked(RevokeSerialReply {
        host: snap.settings.hostname.clone(),
        serial,
        already,
        persisted: warning.is_none(),
        warning,
        by: dispatcher.to_string(),
        reqid: req.reqid,
    })
}

/// `GET /result/<reqid>`: a detached job's record, for its owner only.
pub(super) async fn result(agent: &Agent, dispatcher: &str, reqid: &ReqId, peer: &str) -> Answer {
    match agent.jobs.result(dispatcher, reqid, peer).await {
        Some(job) => Answer::Job(job),
        None => Answer::Error(ErrorReply::UnknownJob(reqid.to_string())),
    }
}

/// `GET /capabilities`: the allowlist with schemas, and the agent's tags.
pub(super) async fn capabilities(snap: &Snapshot, caller: &Caller) -> Answer {
    let Some(dispatcher) = snap.trusted.get(&caller.serial) else {
        let reason = if snap.trusted.is_empty() {
            "no trusted dispatchers stored"
        } else {
            "serial-mismatch"
        };
        log::warn(
            "capabilities-deny",
            &[
                ("PEER", &caller.ip),
                ("PEER_SERIAL", &caller.serial),
                ("REASON", reason),
            ],
        );
        return Answer::Error(ErrorReply::Plain(403, "forbidden".into()));
    };
    let asked = || hook::Request {
        action: "discovery".into(),
        ..Default::default()
    };
    if let Some(reason) = hook_denial(snap, caller, dispatcher, asked).await {
        log::warn(
            "capabilities-deny",
            &[("PEER", &caller.ip), ("REASON", &reason)],
        );
        return Answer::Error(ErrorReply::Plain(403, "not authorised".into()));
    }
    let entries: Vec<(String, std::path::PathBuf, String)> = snap
        .allowlist
        .scripts
        .values()
        .map(|s| (s.name.clone(), s.path.clone(), s.profile.clone()))
        .collect();
    // `access(2)` on every script is file-system work: off the executor.
    let executable: Vec<bool> = smol::unblock(move || {
        entries
            .iter()
            .map(|(_, path, _)| is_executable(path))
            .collect()
    })
    .await;
    let scripts: Vec<ScriptInfo> = snap
        .allowlist
        .scripts
        .values()
        .zip(executable)
        .map(|(s, executable)| {
            let sidecar = snap.sidecars.get(&s.name);
            ScriptInfo {
                name: s.name.clone(),
                path: s.path.display().to_string(),
                executable,
                profile: s.profile.clone(),
                schema: sidecar.map(|sc| sc.schema.clone()),
                schema_version: sidecar.map(|sc| sc.version.clone()),
            }
        })
        .collect();
    log::info(
        "capabilities",
        &[
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("SCRIPTS", &scripts.len().to_string()),
        ],
    );
    Answer::Capabilities(Capabilities {
        host: snap.settings.hostname.clone(),
        version: VERSION.into(),
        scripts,
        tags: snap.settings.tags.clone(),
    })
}

/// Whether `path` is a regular file this process may execute.
pub fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}
