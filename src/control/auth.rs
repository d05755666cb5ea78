//! The authorisation decision shared by `ced` and `ctrl-exec-api`: run the
//! auth hook when one is configured; otherwise the CLI passes (the operator
//! already has the dispatcher's key) and the API applies `api_auth_default`.

use crate::conf::DispatcherConf;
use crate::hook::{self, Hook, Verdict};
use crate::log;

/// Which front end a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The `ced` command line.
    Cli,
    /// The HTTP API.
    Api,
}

/// Who is asking, as the hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The front end.
    pub front: Front,
    /// The client's address (`127.0.0.1` for the CLI).
    pub source_ip: String,
    /// Advisory user name.
    pub username: String,
    /// The token.
    pub token: String,
    /// HTTP method (API only).
    pub method: String,
    /// HTTP path (API only).
    pub path: String,
}

impl Caller {
    /// The operator at the command line.
    pub fn cli(username: &str, token: &str) -> Caller {
        Caller {
            front: Front::Cli,
            source_ip: "127.0.0.1".into(),
            username: username.into(),
            token: token.into(),
            method: String::new(),
            path: String::new(),
        }
    }

    /// A hook request for `action` with this caller's identity; callers
    /// fill in what else applies.
    pub fn request(&self, action: &str) -> hook::Request {
        hook::Request {
            action: action.to_string(),
            username: self.username.clone(),
            token: self.token.clone(),
            source_ip: self.source_ip.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            ..hook::Request::default()
        }
    }
}

/// Decides `req` for `caller` under `conf`.
pub async fn authorise(conf: &DispatcherConf, caller: &Caller, req: &hook::Request) -> Verdict {
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
        None if caller.front == Front::Cli => {
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
