//! The agent's handlers: ping, run (sync or async), capabilities.
//!
//! Each is called by the route table with the connection's snapshot and
//! authenticated caller, and returns a status and a JSON body.

use std::path::Path;

use crate::agent::runner::{self, Bounds, Context};
use crate::agent::serve::routes::{error_body, Caller};
use crate::agent::serve::snapshot::Snapshot;
use crate::agent::serve::Agent;
use crate::conf;
use crate::hook::{self, Verdict};
use crate::json::{self, Object, Value};
use crate::{log, VERSION};

/// `POST /ping`: the agent's status for a trusted dispatcher.
pub(super) fn ping(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    reqid: &str,
) -> (u16, Value) {
    log::info(
        "ping",
        &[
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("REQID", reqid),
        ],
    );
    (
        200,
        json::object([
            ("status", json::str("ok")),
            ("host", json::str(&agent.conf.hostname)),
            ("version", json::str(VERSION)),
            ("expiry", json::str(&snap.expiry)),
            ("staged", Value::Bool(agent.conf.cert_staging_path.exists())),
            ("reqid", json::str(reqid)),
        ]),
    )
}

/// `POST /run`: allowlist, auth hook, then run (or queue, when async).
pub(super) async fn run_script(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    body: Object,
) -> (u16, Value) {
    let reqid = json::get_str(&body, "reqid").unwrap_or("").to_string();
    let script = json::get_str(&body, "script").unwrap_or("").to_string();
    let refuse = |status: u16, error: &str| {
        (
            status,
            json::object([
                ("script", json::str(&script)),
                ("exit", json::int(-1)),
                ("error", json::str(error)),
                ("reqid", json::str(&reqid)),
            ]),
        )
    };
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(_)) => match json::get_str_array(&body, "args") {
            Ok(a) => a,
            Err(()) => return refuse(400, "args must be an array of strings"),
        },
        Some(_) => return refuse(200, "args must be an array"),
    };
    if args.iter().any(|a| a.contains('\0')) {
        return refuse(400, "args must not contain NUL bytes");
    }
    let entry = conf::valid_script_name(&script)
        .then(|| snap.allowlist.scripts.get(&script))
        .flatten()
        .filter(|e| {
            agent.conf.script_dirs.is_empty()
                || conf::within_script_dirs(&e.path, &agent.conf.script_dirs)
        });
    let Some(entry) = entry else {
        log::warn(
            "deny",
            &[("PEER", &caller.ip), ("REQID", &reqid), ("SCRIPT", &script)],
        );
        return refuse(200, "script not permitted");
    };
    let username = json::get_str(&body, "username").unwrap_or("").to_string();
    let token = json::get_str(&body, "token").unwrap_or("").to_string();
    if let Some(h) = &agent.hook {
        let request = hook::Request {
            action: "run".into(),
            script: script.clone(),
            hosts: Vec::new(),
            args: args.clone(),
            username: username.clone(),
            token: token.clone(),
            source_ip: caller.ip.clone(),
            dispatcher: dispatcher.to_string(),
            dispatcher_serial: caller.serial.clone(),
            reqid: reqid.clone(),
            submitter: None,
            ..Default::default()
        };
        if let Verdict::Deny { reason, .. } = hook::check(h, &request).await {
            log::warn(
                "deny",
                &[
                    ("PEER", &caller.ip),
                    ("REASON", &reason),
                    ("REQID", &reqid),
                    ("SCRIPT", &script),
                ],
            );
            return refuse(200, &format!("not authorised: {reason}"));
        }
    }
    let ctx = Context {
        script: script.clone(),
        args,
        reqid: reqid.clone(),
        username,
        token,
        peer_ip: caller.ip.clone(),
        dispatcher: dispatcher.to_string(),
    };
    let bounds = Bounds {
        stdin_timeout: agent.conf.stdin_timeout,
        run_timeout: entry.timeout.unwrap_or(agent.conf.script_timeout),
        max_output: agent.conf.max_output_bytes,
    };
    if json::truthy(&body, "async") {
        return agent.jobs.submit(entry.path.clone(), ctx, bounds);
    }
    let out = runner::run(&entry.path, &ctx, bounds).await;
    log::info(
        "run",
        &[
            ("DISPATCHER", dispatcher),
            ("EXIT", &out.exit.to_string()),
            ("PEER", &caller.ip),
            ("REQID", &reqid),
            ("SCRIPT", &script),
        ],
    );
    let mut reply: Object = out
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    reply.insert("script".into(), json::str(&script));
    reply.insert("reqid".into(), json::str(&reqid));
    (200, Value::Object(reply))
}

/// `GET /capabilities`: the allowlist as this dispatcher may see it.
pub(super) async fn capabilities(agent: &Agent, snap: &Snapshot, caller: &Caller) -> (u16, Value) {
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
        return (403, error_body("forbidden"));
    };
    if let Some(h) = &agent.hook {
        let request = hook::Request {
            action: "discovery".into(),
            script: String::new(),
            hosts: Vec::new(),
            args: Vec::new(),
            username: String::new(),
            token: String::new(),
            source_ip: caller.ip.clone(),
            dispatcher: dispatcher.clone(),
            dispatcher_serial: caller.serial.clone(),
            reqid: String::new(),
            submitter: None,
            ..Default::default()
        };
        if let Verdict::Deny { reason, .. } = hook::check(h, &request).await {
            log::warn(
                "capabilities-deny",
                &[("PEER", &caller.ip), ("REASON", &reason)],
            );
            return (403, error_body("not authorised"));
        }
    }
    let scripts: Vec<Value> = snap
        .allowlist
        .scripts
        .values()
        .map(|s| {
            let mut o = Object::new();
            o.insert("name".into(), json::str(&s.name));
            o.insert("path".into(), json::str(s.path.display().to_string()));
            o.insert("executable".into(), Value::Bool(is_executable(&s.path)));
            o.insert("profile".into(), json::str(&s.profile));
            if let Some(sc) = snap.sidecars.get(&s.name) {
                o.insert("schema".into(), sc.schema.clone());
                o.insert("schema_version".into(), json::str(&sc.version));
            }
            Value::Object(o)
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
    let tags: Object = agent
        .conf
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), json::str(v)))
        .collect();
    (
        200,
        json::object([
            ("status", json::str("ok")),
            ("host", json::str(&agent.conf.hostname)),
            ("version", json::str(VERSION)),
            ("scripts", Value::Array(scripts.into_iter().collect())),
            ("tags", Value::Object(tags)),
        ]),
    )
}

/// Whether `path` is a regular file this process may execute.
pub fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}
