//! The authorisation decision shared by `ced` and `ctrl-exec-api`: run the
//! auth hook when one is configured; otherwise the CLI passes (the operator
//! already has the dispatcher's key) and the API applies `api_auth_default`.

use crate::conf::DispatcherConf;
use crate::hook::{self, Hook, Verdict};
use crate::log;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The `ced` command line.
    Cli,
    /// The HTTP API.
    Api,
}

/// Decides `req` for `caller` under `conf`.
pub async fn authorise(conf: &DispatcherConf, caller: Caller, req: &hook::Request) -> Verdict {
    match &conf.auth_hook {
        Some(path) => {
            hook::check(
                &Hook {
                    path: path.clone(),
                    timeout: conf.auth_hook_timeout,
                },
                req,
            )
            .await
        }
        None if caller == Caller::Cli => {
            log::info(
                "auth",
                &[
                    ("AUTHACTION", &req.action),
                    ("IP", &req.source_ip),
                    ("REASON", "no-hook-cli"),
                    ("RESULT", "pass"),
                    ("USER", &req.username),
                ],
            );
            Verdict::Allow
        }
        None if conf.api_auth_default_allow => Verdict::Allow,
        None => {
            log::warn(
                "auth",
                &[
                    ("AUTHACTION", &req.action),
                    ("IP", &req.source_ip),
                    ("REASON", "no-hook"),
                    ("RESULT", "deny"),
                    ("USER", &req.username),
                ],
            );
            Verdict::deny(1, "no auth hook configured")
        }
    }
}

/// A request with every field empty but `action`, `source_ip` and the given
/// identity; callers fill in what applies.
pub fn request(action: &str, source_ip: &str, username: &str, token: &str) -> hook::Request {
    hook::Request {
        action: action.to_string(),
        script: String::new(),
        hosts: Vec::new(),
        args: Vec::new(),
        username: username.to_string(),
        token: token.to_string(),
        source_ip: source_ip.to_string(),
        dispatcher: String::new(),
        dispatcher_serial: String::new(),
        reqid: String::new(),
        submitter: None,
        method: String::new(),
        path: String::new(),
    }
}
