//! Messages of the HTTP gateway on 7445 (surface.md 3.3): request bodies of
//! `/run`, `/ping`, `/discovery`, and the error, health and index bodies.
//! Per-host results are in [`crate::proto::results`].

use miniserde::json::{Object, Value};
use miniserde::Serialize;

use crate::proto::exec::to_value;
use crate::proto::json::{Builder, FieldError, Fields};

/// Who is asking and with what token, as the body carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Advisory user name (`username`).
    pub username: String,
    /// The token (`token`); empty when the body has none.
    pub token: String,
}

impl Credentials {
    fn read(f: Fields<'_>) -> Result<Credentials, FieldError> {
        Ok(Credentials {
            username: f.string("username")?,
            token: f.string("token")?,
        })
    }
}

fn required_hosts(f: Fields<'_>) -> Result<Vec<String>, FieldError> {
    let wrong = FieldError {
        field: "hosts",
        expected: "a non-empty array of strings",
    };
    match f.strings("hosts") {
        Ok(Some(h)) if !h.is_empty() => Ok(h),
        _ => Err(wrong),
    }
}

/// `POST /run`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunBody {
    /// Registry names (optionally `name:port`).
    pub hosts: Vec<String>,
    /// The script name, as sent (validated by the dispatch path).
    pub script: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Identity.
    pub credentials: Credentials,
    /// `async`: submit detached. JSON booleans and the numbers 1/0 only
    /// (docs/gateway.md).
    pub detach: bool,
}

impl RunBody {
    /// Reads a body; the first field of the wrong type is the error.
    pub fn from_json(o: &Object) -> Result<RunBody, FieldError> {
        let f = Fields(o);
        let hosts = required_hosts(f)?;
        let script = f.string("script")?;
        Ok(RunBody {
            hosts,
            script,
            args: f.strings("args")?.unwrap_or_default(),
            credentials: Credentials::read(f)?,
            detach: f.flag("async")?.unwrap_or(false),
        })
    }
}

/// `POST /ping`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PingBody {
    /// Registry names.
    pub hosts: Vec<String>,
    /// Identity.
    pub credentials: Credentials,
}

impl PingBody {
    /// Reads a body.
    pub fn from_json(o: &Object) -> Result<PingBody, FieldError> {
        let f = Fields(o);
        Ok(PingBody {
            hosts: required_hosts(f)?,
            credentials: Credentials::read(f)?,
        })
    }
}

/// `GET|POST /discovery`: every field optional; no `hosts` means all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryBody {
    /// Registry names; empty means every registered host.
    pub hosts: Vec<String>,
    /// Identity.
    pub credentials: Credentials,
}

impl DiscoveryBody {
    /// Reads a body.
    pub fn from_json(o: &Object) -> Result<DiscoveryBody, FieldError> {
        let f = Fields(o);
        Ok(DiscoveryBody {
            hosts: f.strings("hosts")?.unwrap_or_default(),
            credentials: Credentials::read(f)?,
        })
    }
}

/// `{"ok":false,"error":…[,"detail":…][,"code":…]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error class (`bad request`, `not found`, …) or a hook's reason.
    pub error: String,
    /// Detail for the caller.
    pub detail: Option<String>,
    /// A hook's exit code or the lock-conflict code 4.
    pub code: Option<i64>,
    /// Conflicting `host:script` locks.
    pub conflicts: Vec<String>,
}

impl ErrorBody {
    /// An error with a detail.
    pub fn new(error: &str, detail: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.to_string(),
            detail: Some(detail.into()),
            code: None,
            conflicts: Vec::new(),
        }
    }

    /// The body.
    pub fn to_json(&self) -> Value {
        let b = Builder::new()
            .bool("ok", false)
            .str("error", &self.error)
            .opt_str("detail", self.detail.as_deref())
            .opt_int("code", self.code);
        if self.conflicts.is_empty() {
            b.build()
        } else {
            b.strings("conflicts", &self.conflicts).build()
        }
    }
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Always true.
    pub ok: bool,
    /// The server's version.
    pub version: String,
}

impl Health {
    /// The body.
    pub fn to_json(&self) -> Value {
        to_value(self)
    }
}

/// One route listed by `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// HTTP method.
    pub method: String,
    /// Path template.
    pub path: String,
}

/// `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Index {
    /// `the gateway`.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// Path of the static spec.
    pub spec: String,
    /// Path of the live spec.
    pub live_spec: String,
    /// Every route.
    pub endpoints: Vec<Endpoint>,
}

impl Index {
    /// The body.
    pub fn to_json(&self) -> Value {
        to_value(self)
    }
}
