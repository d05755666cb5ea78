//! The agent's route table: `/run`, `/ping`, `/capabilities`, `/result/<id>`.
//!
//! `/run`, `/ping` and `/result/<id>` pass the serial gate first: the peer's
//! exact certificate serial must be in the trusted-dispatcher map.
//! `/capabilities` makes the same check itself, with its own log line.

use crate::agent::jobs;
use crate::agent::serve::handlers::{capabilities, ping, run_script};
use crate::agent::serve::snapshot::Snapshot;
use crate::agent::serve::Agent;
use crate::json::{self, Value};
use crate::log;
use crate::net::http::Request;

/// The authenticated peer of one connection.
pub(super) struct Caller {
    /// The peer IP, canonical, as text.
    pub(super) ip: String,
    /// The client certificate serial (empty when none).
    pub(super) serial: String,
}

/// Routes one request to its handler.
pub(super) async fn route(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    req: Request,
) -> (u16, Value) {
    let method = req.head.method.as_str();
    let target = req.head.target.as_str();
    match (method, target) {
        ("POST", "/run") | ("POST", "/ping") => {
            let body = json::parse_object(&req.body);
            let reqid = body
                .as_ref()
                .and_then(|o| json::get_str(o, "reqid"))
                .unwrap_or("")
                .to_string();
            let Some(dispatcher) = snap.trusted.get(&caller.serial) else {
                log::warn(
                    "serial-reject",
                    &[
                        ("PEER", &caller.ip),
                        ("PEER_SERIAL", &caller.serial),
                        ("REQID", or_none(&reqid)),
                    ],
                );
                return (
                    403,
                    json::object([
                        ("error", json::str("serial mismatch")),
                        ("status", json::str("forbidden")),
                    ]),
                );
            };
            if target == "/ping" {
                return ping(agent, snap, caller, dispatcher, &reqid);
            }
            match body {
                Some(obj) => run_script(agent, snap, caller, dispatcher, obj).await,
                None => (
                    200,
                    json::object([
                        ("exit", json::int(-1)),
                        ("error", json::str("invalid JSON")),
                    ]),
                ),
            }
        }
        ("GET", "/capabilities") => capabilities(agent, snap, caller).await,
        ("GET", path) if path.starts_with("/result/") => {
            let reqid = &path["/result/".len()..];
            if !jobs::valid_reqid(reqid) {
                return (404, error_body("not found"));
            }
            let Some(dispatcher) = snap.trusted.get(&caller.serial) else {
                log::warn(
                    "serial-reject",
                    &[
                        ("PEER", &caller.ip),
                        ("PEER_SERIAL", &caller.serial),
                        ("REQID", reqid),
                    ],
                );
                return (
                    403,
                    json::object([
                        ("error", json::str("serial mismatch")),
                        ("status", json::str("forbidden")),
                    ]),
                );
            };
            agent.jobs.result(dispatcher, reqid, &caller.ip)
        }
        _ => (404, error_body("not found")),
    }
}

/// `s`, or `(none)` when empty, for log fields.
fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}

/// The agent's error body, `{"error": msg}`.
pub(super) fn error_body(msg: &str) -> Value {
    json::object([("error", json::str(msg))])
}
