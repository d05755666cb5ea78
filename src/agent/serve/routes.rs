//! The agent's route table: `/run`, `/ping`, `/capabilities`, `/result/<id>`,
//! `/renew`, `/renew-complete`, `/rotate-serial`, `/revoke-serial`.
//!
//! `/run`, `/ping`, `/renew`, `/renew-complete` and `/result/<id>` pass the
//! serial gate first: the peer's exact certificate serial must be in the
//! trusted-dispatcher map (the original leaves the renewal endpoints open).
//! `/capabilities` makes the same check itself, with its own log line.
//! Handlers return typed answers; [`Answer::into_wire`] is the one place
//! they become a status and a JSON body.

use miniserde::json::Value;

use crate::agent::serve::handlers::{
    capabilities, ping, renew, renew_complete, result, revoke_serial, rotate_serial, run_script,
};
use crate::agent::serve::snapshot::Snapshot;
use crate::agent::serve::Agent;
use crate::agent::trust;
use crate::log;
use crate::net::http::Request;
use crate::proto::{
    Capabilities, ErrorReply, JobRecord, PingReply, PingRequest, RenewCompleteReply, RenewReply,
    ReqId, RevokeSerialReply, RotateSerialReply, RunReply,
};

/// The authenticated peer of one connection.
pub(super) struct Caller {
    /// The peer IP, canonical, as text.
    pub(super) ip: String,
    /// The client certificate serial (empty when none).
    pub(super) serial: String,
}

/// What a handler answers.
pub(super) enum Answer {
    /// `/run`.
    Run(RunReply),
    /// `/ping`.
    Ping(PingReply),
    /// `/capabilities`.
    Capabilities(Capabilities),
    /// `/result/<id>`.
    Job(JobRecord),
    /// `/renew`.
    Renew(RenewReply),
    /// `/renew-complete`.
    RenewComplete(RenewCompleteReply),
    /// `/revoke-serial`.
    Revoked(RevokeSerialReply),
    /// `/rotate-serial` (its refusals of the body too: 200, as the original).
    Rotated(RotateSerialReply),
    /// Any refusal.
    Error(ErrorReply),
}

impl Answer {
    /// The status and body sent.
    pub(super) fn into_wire(self) -> (u16, Value) {
        match self {
            Answer::Run(r) => (r.status(), r.to_json()),
            Answer::Ping(p) => (200, p.to_json()),
            Answer::Capabilities(c) => (200, c.to_json()),
            Answer::Job(j) => (200, j.to_json()),
            Answer::Renew(r) => (200, r.to_json()),
            Answer::RenewComplete(r) => (200, r.to_json()),
            Answer::Revoked(r) => (200, r.to_json()),
            Answer::Rotated(r) => (200, r.to_json()),
            Answer::Error(e) => (e.status(), e.to_json()),
        }
    }
}

/// Routes one request to its handler.
pub(super) async fn route(agent: &Agent, snap: &Snapshot, caller: &Caller, req: Request) -> Answer {
    let method = req.head.method.as_str();
    let target = req.head.target.as_str();
    match (method, target) {
        ("POST", "/run" | "/ping" | "/renew" | "/renew-complete") => {
            // Only `reqid`, for the refusal's log line; nothing else of an
            // unauthorised body is read.
            let reqid = PingRequest::read(&req.body).unwrap_or_default().reqid;
            let Some(dispatcher) = trusted(snap, caller, &reqid) else {
                return Answer::Error(ErrorReply::SerialMismatch);
            };
            match target {
                "/ping" => ping(agent, snap, caller, dispatcher, &req.body),
                "/renew" => renew(agent, snap, caller, dispatcher, &req.body).await,
                "/renew-complete" => renew_complete(agent, caller, dispatcher, &req.body).await,
                _ => Answer::Run(run_script(agent, snap, caller, dispatcher, &req.body).await),
            }
        }
        ("GET", "/capabilities") => capabilities(snap, caller).await,
        ("GET", path) if path.starts_with("/result/") => {
            let raw = &path["/result/".len()..];
            let Some(reqid) = ReqId::parse(raw) else {
                return Answer::Error(ErrorReply::Plain(404, "not found".into()));
            };
            let Some(dispatcher) = trusted(snap, caller, raw) else {
                return Answer::Error(ErrorReply::SerialMismatch);
            };
            result(agent, dispatcher, &reqid, &caller.ip).await
        }
        ("POST", "/revoke-serial" | "/rotate-serial") => {
            let reqid = PingRequest::read(&req.body).unwrap_or_default().reqid;
            let Some(dispatcher) = trusted(snap, caller, &reqid) else {
                return Answer::Error(ErrorReply::SerialMismatch);
            };
            match target {
                "/rotate-serial" => rotate_serial(agent, snap, caller, dispatcher, &req.body).await,
                _ => revoke_serial(agent, snap, caller, dispatcher, &req.body).await,
            }
        }
        _ => Answer::Error(ErrorReply::Plain(404, "not found".into())),
    }
}

/// The caller's dispatcher id, if its serial is trusted; logs a refusal.
fn trusted<'s>(snap: &'s Snapshot, caller: &Caller, reqid: &str) -> Option<&'s str> {
    let found = snap.trusted.get(&caller.serial).map(String::as_str);
    if found.is_none() {
        let mut fields = vec![
            ("PEER", caller.ip.clone()),
            ("PEER_SERIAL", caller.serial.clone()),
            (
                "REQID",
                if reqid.is_empty() { "(none)" } else { reqid }.to_string(),
            ),
        ];
        // A map written by the original may hold this serial in its decimal
        // reading: say which entry, never accept it (that reading collides).
        if let Some((entry, id)) = trust::original_reading_match(&snap.trusted, &caller.serial) {
            fields.push((
                "HINT",
                format!(
                    "entry '{entry} {id}' in the trusted map matches only under the original's decimal reading; if this is {id}, change the entry to '{} {id}'",
                    caller.serial
                ),
            ));
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        log::warn("serial-reject", &fields);
    }
    found
}
