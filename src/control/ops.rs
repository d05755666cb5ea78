//! The operations both front ends perform through the engine: run a script,
//! ping, ask for capabilities. Each returns per-host results in target order.

use std::sync::Arc;

use crate::control::engine::{self, Engine};
use crate::control::registry::Target;
use crate::json::{self, Object, Value};
use crate::log;

/// Sends `/run` to every target; sync results or async submissions.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    eng: &Arc<Engine>,
    targets: &[Target],
    script: &str,
    args: &[String],
    reqid: &str,
    username: &str,
    token: &str,
    detach: bool,
) -> Vec<Value> {
    let mut body = Object::new();
    body.insert("script".into(), json::str(script));
    body.insert("args".into(), json::str_array(args));
    body.insert("reqid".into(), json::str(reqid));
    body.insert("username".into(), json::str(username));
    body.insert("token".into(), json::str(token));
    if detach {
        body.insert("async".into(), Value::Bool(true));
    }
    let body = Arc::new(Value::Object(body));
    let (script, reqid) = (script.to_string(), reqid.to_string());
    eng.fan_out(targets, move |eng, t| {
        let (body, script, reqid) = (body.clone(), script.clone(), reqid.clone());
        async move {
            let reply = eng.call(&t, "POST", "/run", Some(&body)).await;
            let target = format!("{}:{}", t.host, t.port);
            match &reply {
                Ok(r) => log::info(
                    "run",
                    &[
                        ("REQID", &reqid),
                        ("RTT", &engine::rtt(r.rtt)),
                        ("SCRIPT", &script),
                        ("STATUS", &r.status.to_string()),
                        ("TARGET", &target),
                    ],
                ),
                Err(e) => log::warn(
                    "run",
                    &[
                        ("ERROR", e),
                        ("REQID", &reqid),
                        ("SCRIPT", &script),
                        ("TARGET", &target),
                    ],
                ),
            }
            if detach {
                engine::submit_result(&t, &script, &reqid, reply)
            } else {
                engine::run_result(&t, &script, &reqid, reply)
            }
        }
    })
    .await
}

/// Pings every target.
pub async fn ping(eng: &Arc<Engine>, targets: &[Target], reqid: &str) -> Vec<Value> {
    let body = Arc::new(json::object([("reqid", json::str(reqid))]));
    let reqid = reqid.to_string();
    eng.fan_out(targets, move |eng, t| {
        let (body, reqid) = (body.clone(), reqid.clone());
        async move {
            let reply = eng.call(&t, "POST", "/ping", Some(&body)).await;
            let mut v = engine::status_result(&t, reply);
            if let Value::Object(o) = &mut v {
                if json::get_str(o, "status") == Some("ok") {
                    o.insert("reqid".into(), json::str(&reqid));
                }
                log::info(
                    "ping",
                    &[
                        ("REQID", &reqid),
                        ("RESULT", json::get_str(o, "status").unwrap_or("")),
                        ("TARGET", &format!("{}:{}", t.host, t.port)),
                    ],
                );
            }
            v
        }
    })
    .await
}

/// Asks every target for its capabilities; returns (registry name, result).
pub async fn capabilities(eng: &Arc<Engine>, targets: &[Target]) -> Vec<(String, Value)> {
    let results = eng
        .fan_out(targets, move |eng, t| async move {
            let reply = eng.call(&t, "GET", "/capabilities", None).await;
            let v = engine::status_result(&t, reply);
            if let Value::Object(o) = &v {
                let scripts = match o.get("scripts") {
                    Some(Value::Array(a)) => a.len().to_string(),
                    _ => String::new(),
                };
                log::info(
                    "capabilities",
                    &[
                        ("SCRIPTS", &scripts),
                        ("TARGET", &format!("{}:{}", t.host, t.port)),
                    ],
                );
            }
            v
        })
        .await;
    targets
        .iter()
        .map(|t| t.name.clone())
        .zip(results)
        .collect()
}
