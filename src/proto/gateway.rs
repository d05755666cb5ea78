//! Messages of the HTTP gateway on 7445 (surface.md 3.3): request bodies of
//! `/run`, `/ping`, `/discovery`, and the error, health and index bodies.
//! Per-host results are in [`crate::proto::results`]. Request bodies are
//! read field by field ([`crate::proto::read`]), never as a value tree.

use miniserde::json::Value;
use miniserde::Serialize;

use crate::proto::exec::to_value;
use crate::proto::json::{Builder, FieldError};
use crate::proto::limits::MAX_LIST_ITEMS;
use crate::proto::read::{read, Kind, Message, ReadError, Val};

/// Who is asking and with what token, as the body carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Advisory user name (`username`).
    pub username: String,
    /// The token (`token`); empty when the body has none.
    pub token: String,
}

impl Credentials {
    /// Stores `username` or `token`; false for any other field.
    fn set(&mut self, field: &'static str, value: &Val) -> bool {
        match (field, value) {
            ("username", Val::Str(s)) => self.username = s.clone(),
            ("token", Val::Str(s)) => self.token = s.clone(),
            _ => return false,
        }
        true
    }
}

/// The token alone, for the gateway's pre-route check (the rest of the
/// body is skipped unread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenOnly {
    /// The body's `token`, empty when none.
    pub token: String,
}

impl TokenOnly {
    /// Reads the token from any body; anything unreadable has none.
    pub fn read(bytes: &[u8]) -> TokenOnly {
        read::<TokenOnly>(bytes).unwrap_or_default()
    }
}

impl Message for TokenOnly {
    const FIELDS: &'static [(&'static str, Kind)] = &[("token", Kind::Str)];

    fn set(&mut self, field: &'static str, value: Val) {
        if let ("token", Val::Str(s)) = (field, value) {
            self.token = s;
        }
    }
}

/// `hosts` is required and non-empty where a body must name hosts.
fn require_hosts(hosts: &[String]) -> Result<(), ReadError> {
    if hosts.is_empty() {
        return Err(ReadError::Field(FieldError {
            field: "hosts",
            expected: "a non-empty array of strings",
        }));
    }
    Ok(())
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
    /// `async`: submit detached. JSON booleans and the numbers 1/0 only.
    pub detach: bool,
}

impl RunBody {
    /// Reads a body; the first field of the wrong type is the error.
    pub fn read(bytes: &[u8]) -> Result<RunBody, ReadError> {
        let body = read::<RunBody>(bytes)?;
        require_hosts(&body.hosts)?;
        Ok(body)
    }
}

impl Message for RunBody {
    const FIELDS: &'static [(&'static str, Kind)] = &[
        ("hosts", Kind::Strings(MAX_LIST_ITEMS)),
        ("script", Kind::Str),
        ("args", Kind::Strings(MAX_LIST_ITEMS)),
        ("username", Kind::Str),
        ("token", Kind::Str),
        ("async", Kind::Flag),
    ];

    fn set(&mut self, field: &'static str, value: Val) {
        if self.credentials.set(field, &value) {
            return;
        }
        match (field, value) {
            ("hosts", Val::Strings(h)) => self.hosts = h,
            ("script", Val::Str(s)) => self.script = s,
            ("args", Val::Strings(a)) => self.args = a,
            ("async", Val::Flag(b)) => self.detach = b,
            _ => {}
        }
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
    pub fn read(bytes: &[u8]) -> Result<PingBody, ReadError> {
        let body = read::<PingBody>(bytes)?;
        require_hosts(&body.hosts)?;
        Ok(body)
    }
}

impl Message for PingBody {
    const FIELDS: &'static [(&'static str, Kind)] = &[
        ("hosts", Kind::Strings(MAX_LIST_ITEMS)),
        ("username", Kind::Str),
        ("token", Kind::Str),
    ];

    fn set(&mut self, field: &'static str, value: Val) {
        if self.credentials.set(field, &value) {
            return;
        }
        if let ("hosts", Val::Strings(h)) = (field, value) {
            self.hosts = h;
        }
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
    /// Reads a body: the fields of `/ping`, every one optional. The
    /// original treats an unreadable body as `{}`; a readable one with a
    /// field of the wrong type is still an error.
    pub fn read(bytes: &[u8]) -> Result<DiscoveryBody, FieldError> {
        match read::<PingBody>(bytes) {
            Ok(b) => Ok(DiscoveryBody {
                hosts: b.hosts,
                credentials: b.credentials,
            }),
            Err(ReadError::Field(e)) => Err(e),
            Err(ReadError::Json(_)) => Ok(DiscoveryBody::default()),
        }
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
