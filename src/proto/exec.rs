//! Messages on the host port (7443): `/run`, `/ping`, `/capabilities`,
//! `/result/<reqid>`, `/renew`, `/renew-complete`, `/rotate-serial`,
//! `/revoke-serial`, and
//! the host's error bodies (protocol.md 3).
//!
//! The controller builds requests with `to_json` and reads replies with
//! `from_json`; the host does the reverse. Both sides use these types.

use std::collections::BTreeMap;

use miniserde::json::{Object, Value};
use miniserde::Serialize;

use crate::proto::json::{Builder, FieldError, Fields};
use crate::proto::limits::MAX_LIST_ITEMS;
use crate::proto::read::{read, Kind, Message, ReadError, Val};

/// `POST /run`: run one allowlisted script, sync or detached.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRequest {
    /// The allowlist name, as sent; validated by the host (an invalid name
    /// is "not permitted", not a bad request).
    pub script: String,
    /// Arguments, passed to exec as they are.
    pub args: Vec<String>,
    /// The controller's request id, echoed in the reply.
    pub reqid: String,
    /// Advisory identity.
    pub username: String,
    /// Advisory token, for hooks and scripts.
    pub token: String,
    /// `async`: start detached and answer 202.
    pub detach: bool,
}

impl RunRequest {
    /// Reads a request body, building no value tree. Every field is
    /// optional, as in the original; a field of the wrong type is an error
    /// naming it. `async` takes JSON booleans and the numbers 1/0 (what the
    /// original's clients send); the strings and containers that Perl
    /// truthiness would also take are refused, so `"async":"false"` cannot
    /// start a detached run.
    pub fn read(bytes: &[u8]) -> Result<RunRequest, ReadError> {
        read::<RunRequest>(bytes)
    }

    /// The body as sent; `async` only when true, as the original sends it.
    pub fn to_json(&self) -> Value {
        let b = Builder::new()
            .str("script", &self.script)
            .strings("args", &self.args)
            .str("reqid", &self.reqid)
            .str("username", &self.username)
            .str("token", &self.token);
        if self.detach {
            b.bool("async", true).build()
        } else {
            b.build()
        }
    }
}

impl Message for RunRequest {
    const FIELDS: &'static [(&'static str, Kind)] = &[
        ("script", Kind::Str),
        ("args", Kind::Strings(MAX_LIST_ITEMS)),
        ("reqid", Kind::Str),
        ("username", Kind::Str),
        ("token", Kind::Str),
        ("async", Kind::Flag),
    ];

    fn set(&mut self, field: &'static str, value: Val) {
        match (field, value) {
            ("script", Val::Str(s)) => self.script = s,
            ("args", Val::Strings(a)) => self.args = a,
            ("reqid", Val::Str(s)) => self.reqid = s,
            ("username", Val::Str(s)) => self.username = s,
            ("token", Val::Str(s)) => self.token = s,
            ("async", Val::Flag(b)) => self.detach = b,
            _ => {}
        }
    }
}

/// What one script run produced, in the reply's terms. Shared by the sync
/// reply, the job record and the controller's per-host results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// 0-255 exit status; 126 killed by a signal; 127 could not exec; -1
    /// host-side failure or refusal.
    pub exit: i64,
    /// Captured stdout (lossy UTF-8), at most the host's cap.
    pub stdout: String,
    /// Captured stderr (lossy UTF-8), at most the host's cap.
    pub stderr: String,
    /// Stdout went past the cap (additive field).
    pub stdout_truncated: bool,
    /// Stderr went past the cap (additive field).
    pub stderr_truncated: bool,
    /// The signal that ended the script (additive field).
    pub signal: Option<i64>,
    /// Why the run failed on the host side, if it did.
    pub error: Option<String>,
    /// The run deadline killed the script (additive field).
    pub timed_out: bool,
}

impl Output {
    /// Adds the output fields to an object being built. `stdout_truncated`
    /// and `stderr_truncated` are always written (readers of this
    /// implementation rely on them); `signal`, `error`, `timed_out` only
    /// when they apply.
    pub fn write(&self, b: Builder) -> Builder {
        b.int("exit", self.exit)
            .str("stdout", &self.stdout)
            .str("stderr", &self.stderr)
            .bool("stdout_truncated", self.stdout_truncated)
            .bool("stderr_truncated", self.stderr_truncated)
            .opt_int("signal", self.signal)
            .opt_str("error", self.error.as_deref())
            .flag("timed_out", self.timed_out)
    }

    /// Reads the output fields; a missing `exit` reads as -1 (a refusal
    /// from an host that sent only an error).
    pub fn read(f: Fields<'_>) -> Result<Output, FieldError> {
        Ok(Output {
            exit: f.int("exit")?.unwrap_or(-1),
            stdout: f.string("stdout")?,
            stderr: f.string("stderr")?,
            stdout_truncated: f.flag("stdout_truncated")?.unwrap_or(false),
            stderr_truncated: f.flag("stderr_truncated")?.unwrap_or(false),
            signal: f.int("signal")?,
            error: f.str("error")?.map(str::to_string),
            timed_out: f.flag("timed_out")?.unwrap_or(false),
        })
    }

    /// A failure before or instead of running: exit -1 with a reason.
    pub fn failed(error: impl Into<String>) -> Output {
        Output {
            exit: -1,
            error: Some(error.into()),
            ..Output::default()
        }
    }
}

/// The host's answer to `POST /run`.
#[derive(Debug, Clone, PartialEq)]
pub enum RunReply {
    /// The script ran (sync): 200 with its output.
    Ran {
        /// The script name as requested.
        script: String,
        /// The request id as sent.
        reqid: String,
        /// What it produced.
        output: Output,
    },
    /// Refused before running: 200 `{script, exit:-1, error, reqid}`
    /// (protocol.md 3.1, steps 3-6).
    Refused {
        /// The script name as requested.
        script: String,
        /// The request id as sent.
        reqid: String,
        /// Why.
        error: String,
    },
    /// The body could not be read: 200 `{"exit":-1,"error":"invalid JSON"}`
    /// with no script or reqid, as the original answers.
    InvalidJson,
    /// A field of the wrong type: 400 `{exit:-1, error, script?, reqid?}`.
    BadField(FieldError),
    /// Detached run started: 202 `{script, status:"accepted", reqid}`.
    Accepted {
        /// The script name.
        script: String,
        /// The request id.
        reqid: String,
    },
    /// The same script is already running detached: 409.
    Busy {
        /// The script name.
        script: String,
        /// The request id.
        reqid: String,
    },
}

impl RunReply {
    /// The HTTP status the reply is sent with.
    pub fn status(&self) -> u16 {
        match self {
            RunReply::Ran { .. } | RunReply::Refused { .. } | RunReply::InvalidJson => 200,
            RunReply::BadField(_) => 400,
            RunReply::Accepted { .. } => 202,
            RunReply::Busy { .. } => 409,
        }
    }

    /// The reply body.
    pub fn to_json(&self) -> Value {
        match self {
            RunReply::Ran {
                script,
                reqid,
                output,
            } => output
                .write(Builder::new())
                .str("script", script)
                .str("reqid", reqid)
                .build(),
            RunReply::Refused {
                script,
                reqid,
                error,
            } => Builder::new()
                .str("script", script)
                .int("exit", -1)
                .str("error", error)
                .str("reqid", reqid)
                .build(),
            RunReply::InvalidJson => Builder::new()
                .int("exit", -1)
                .str("error", "invalid JSON")
                .build(),
            RunReply::BadField(e) => Builder::new()
                .int("exit", -1)
                .str("error", e.to_string())
                .str("field", e.field)
                .build(),
            RunReply::Accepted { script, reqid } => Builder::new()
                .str("script", script)
                .str("status", "accepted")
                .str("reqid", reqid)
                .build(),
            RunReply::Busy { script, reqid } => Builder::new()
                .str("script", script)
                .str("status", "busy")
                .str("reqid", reqid)
                .str("error", "script already running")
                .build(),
        }
    }
}

/// `POST /ping` body: `{"reqid":"…"}`, optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PingRequest {
    /// Echoed in the reply.
    pub reqid: String,
}

impl PingRequest {
    /// Reads a ping body; the original treats an unreadable body as `{}`,
    /// so only a present `reqid` of the wrong type is an error.
    pub fn read(bytes: &[u8]) -> Result<PingRequest, FieldError> {
        match read::<PingRequest>(bytes) {
            Ok(r) => Ok(r),
            Err(ReadError::Field(e)) => Err(e),
            Err(ReadError::Json(_)) => Ok(PingRequest::default()),
        }
    }

    /// The body as sent.
    pub fn to_json(&self) -> Value {
        Builder::new().str("reqid", &self.reqid).build()
    }
}

impl Message for PingRequest {
    const FIELDS: &'static [(&'static str, Kind)] = &[("reqid", Kind::Str)];

    fn set(&mut self, field: &'static str, value: Val) {
        if let ("reqid", Val::Str(s)) = (field, value) {
            self.reqid = s;
        }
    }
}

/// The host's answer to `/ping`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PingReply {
    /// Always `ok`.
    pub status: String,
    /// The host's own host name.
    pub host: String,
    /// The host's version.
    pub version: String,
    /// Its certificate's notAfter in OpenSSL text form, or `unknown`.
    pub expiry: String,
    /// Whether a renewed certificate is staged.
    pub staged: bool,
    /// The request id as sent.
    pub reqid: String,
}

impl PingReply {
    /// The reply body.
    pub fn to_json(&self) -> Value {
        to_value(self)
    }

    /// Reads a reply; fields a Perl host may leave out default to empty.
    pub fn from_json(o: &Object) -> Result<PingReply, FieldError> {
        let f = Fields(o);
        Ok(PingReply {
            status: f.string("status")?,
            host: f.string("host")?,
            version: f.string("version")?,
            expiry: f.string("expiry")?,
            staged: f.flag("staged")?.unwrap_or(false),
            reqid: f.string("reqid")?,
        })
    }
}

/// `POST /renew` body: `{"reqid":"…"}`, optional (protocol.md 3.6).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenewRequest {
    /// Echoed in the reply.
    pub reqid: String,
}

impl RenewRequest {
    /// Reads a body; as for ping, an unreadable body is `{}` and only a
    /// present `reqid` of the wrong type is an error.
    pub fn read(bytes: &[u8]) -> Result<RenewRequest, FieldError> {
        PingRequest::read(bytes).map(|p| RenewRequest { reqid: p.reqid })
    }

    /// The body as sent.
    pub fn to_json(&self) -> Value {
        Builder::new().str("reqid", &self.reqid).build()
    }
}

/// The host's answer to `/renew`.
#[derive(Debug, Clone, PartialEq)]
pub enum RenewReply {
    /// `{"status":"ok","csr":"<PEM>","reqid"}`: a CSR for the host's
    /// existing key, CN = its host name.
    Csr {
        /// The CSR PEM.
        csr: String,
        /// The request id as sent.
        reqid: String,
    },
    /// `{"status":"error","error":…}`.
    Error(String),
}

impl RenewReply {
    /// The reply body.
    pub fn to_json(&self) -> Value {
        match self {
            RenewReply::Csr { csr, reqid } => Builder::new()
                .str("status", "ok")
                .str("csr", csr)
                .str("reqid", reqid)
                .build(),
            RenewReply::Error(e) => status_error(e),
        }
    }

    /// Reads a reply: `status:"ok"` with a `csr`, anything else an error.
    pub fn from_json(o: &Object) -> Result<RenewReply, FieldError> {
        let f = Fields(o);
        match (f.str("status")?, f.str("csr")?) {
            (Some("ok"), Some(csr)) if !csr.is_empty() => Ok(RenewReply::Csr {
                csr: csr.to_string(),
                reqid: f.string("reqid")?,
            }),
            _ => Ok(RenewReply::Error(error_text(f)?)),
        }
    }
}

/// `POST /renew-complete` body: `{"cert","ca","reqid"}` (protocol.md 3.7).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenewComplete {
    /// The renewed certificate PEM.
    pub cert: String,
    /// The controller's CA PEM; sent as the original does, not trusted by
    /// the host, which verifies against its own CA file.
    pub ca: Option<String>,
    /// The request id, echoed.
    pub reqid: String,
}

impl RenewComplete {
    /// Reads a body; a field of the wrong type is an error naming it.
    pub fn read(bytes: &[u8]) -> Result<RenewComplete, ReadError> {
        read::<RenewComplete>(bytes)
    }

    /// The body as sent.
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("cert", &self.cert)
            .opt_str("ca", self.ca.as_deref())
            .str("reqid", &self.reqid)
            .build()
    }
}

impl Message for RenewComplete {
    const FIELDS: &'static [(&'static str, Kind)] =
        &[("cert", Kind::Str), ("ca", Kind::Str), ("reqid", Kind::Str)];

    fn set(&mut self, field: &'static str, value: Val) {
        match (field, value) {
            ("cert", Val::Str(s)) => self.cert = s,
            ("ca", Val::Str(s)) => self.ca = Some(s),
            ("reqid", Val::Str(s)) => self.reqid = s,
            _ => {}
        }
    }
}

/// The host's answer to `/renew-complete`.
#[derive(Debug, Clone, PartialEq)]
pub enum RenewCompleteReply {
    /// `{"status":"ok","reqid","staged":true}`: verified, written and in use.
    Staged {
        /// The request id as sent.
        reqid: String,
    },
    /// `{"status":"error","error":…}`.
    Error(String),
}

impl RenewCompleteReply {
    /// The reply body.
    pub fn to_json(&self) -> Value {
        match self {
            RenewCompleteReply::Staged { reqid } => Builder::new()
                .str("status", "ok")
                .str("reqid", reqid)
                .bool("staged", true)
                .build(),
            RenewCompleteReply::Error(e) => status_error(e),
        }
    }

    /// Reads a reply: only `status:"ok"` with `staged:true` is success.
    pub fn from_json(o: &Object) -> Result<RenewCompleteReply, FieldError> {
        let f = Fields(o);
        match (f.str("status")?, f.flag("staged")?) {
            (Some("ok"), Some(true)) => Ok(RenewCompleteReply::Staged {
                reqid: f.string("reqid")?,
            }),
            _ => Ok(RenewCompleteReply::Error(error_text(f)?)),
        }
    }
}

/// `{"status":"error","error":…}`.
fn status_error(e: &str) -> Value {
    Builder::new()
        .str("status", "error")
        .str("error", e)
        .build()
}

/// The `error` of a reply that is not a success, or a description of it.
fn error_text(f: Fields<'_>) -> Result<String, FieldError> {
    Ok(match (f.str("error")?, f.str("status")?) {
        (Some(e), _) => e.to_string(),
        (None, Some(s)) => format!("status {s:?} without an error"),
        (None, None) => "no status in reply".to_string(),
    })
}

/// `POST /revoke-serial` body (extension): `{"serial":"…","token":"…",
/// "reqid":"…"}`. A trusted controller asks the host to add a controller
/// certificate serial to its revocation list, at once. `serial` is in any
/// form the revocation list takes; `token` is passed only to the hook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RevokeSerialRequest {
    /// The serial to revoke, as sent.
    pub serial: String,
    /// Advisory token, for the hook.
    pub token: String,
    /// Echoed in the reply.
    pub reqid: String,
}

impl RevokeSerialRequest {
    /// Reads a request body; every field is optional here, the host refuses
    /// an empty `serial`.
    pub fn read(bytes: &[u8]) -> Result<RevokeSerialRequest, ReadError> {
        read::<RevokeSerialRequest>(bytes)
    }

    /// The body as sent.
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("serial", &self.serial)
            .str("token", &self.token)
            .str("reqid", &self.reqid)
            .build()
    }
}

impl Message for RevokeSerialRequest {
    const FIELDS: &'static [(&'static str, Kind)] = &[
        ("serial", Kind::Str),
        ("token", Kind::Str),
        ("reqid", Kind::Str),
    ];

    fn set(&mut self, field: &'static str, value: Val) {
        match (field, value) {
            ("serial", Val::Str(s)) => self.serial = s,
            ("token", Val::Str(s)) => self.token = s,
            ("reqid", Val::Str(s)) => self.reqid = s,
            _ => {}
        }
    }
}

/// The host's answer to `/revoke-serial`:
/// `{"status":"ok","host":…,"serial":…,"already":…,"persisted":…,
/// "warning"?:…,"dispatcher_id":…,"reqid":…}`.
/// Refusals are [`ErrorReply::Plain`] bodies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RevokeSerialReply {
    /// The host's own host name.
    pub host: String,
    /// The serial now revoked, minimal lowercase hex.
    pub serial: String,
    /// It was revoked already (nothing was written).
    pub already: bool,
    /// It is in the host's revocation list file (false: in memory only,
    /// until the host restarts).
    pub persisted: bool,
    /// Why it is not persisted, when it is not.
    pub warning: Option<String>,
    /// The id of the controller that asked, from its certificate.
    pub by: String,
    /// The request id as sent.
    pub reqid: String,
}

impl RevokeSerialReply {
    /// The reply body.
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("status", "ok")
            .str("host", &self.host)
            .str("serial", &self.serial)
            .bool("already", self.already)
            .bool("persisted", self.persisted)
            .opt_str("warning", self.warning.as_deref())
            .str("dispatcher_id", &self.by)
            .str("reqid", &self.reqid)
            .build()
    }

    /// Reads a reply; anything but `status:"ok"` is an error naming the
    /// status field.
    pub fn from_json(o: &Object) -> Result<RevokeSerialReply, FieldError> {
        let f = Fields(o);
        if f.str("status")? != Some("ok") {
            return Err(FieldError {
                field: "status",
                expected: "\"ok\"",
            });
        }
        Ok(RevokeSerialReply {
            host: f.string("host")?,
            serial: f.string("serial")?,
            already: f.flag("already")?.unwrap_or(false),
            persisted: f.flag("persisted")?.unwrap_or(false),
            warning: f.str("warning")?.map(str::to_string),
            by: f.string("dispatcher_id")?,
            reqid: f.string("reqid")?,
        })
    }
}

/// What `/rotate-serial` does with its serial (protocol.md 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateAction {
    /// Trust the serial, under the caller's identity.
    Add,
    /// Stop trusting the serial (only the caller's own identity's).
    Remove,
}

impl RotateAction {
    /// `add` or `remove`; an absent or empty action is `add`, as in the
    /// original; anything else is `None`.
    pub fn parse(s: &str) -> Option<RotateAction> {
        match s {
            "" | "add" => Some(RotateAction::Add),
            "remove" => Some(RotateAction::Remove),
            _ => None,
        }
    }

    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            RotateAction::Add => "add",
            RotateAction::Remove => "remove",
        }
    }
}

/// `POST /rotate-serial` body (protocol.md 3.5):
/// `{"serial","action":"add"|"remove","token","reqid"?,"cert"?}`. The
/// caller's identity comes from its certificate, never from the body.
/// `cert` is additive: the PEM of the certificate whose serial is added,
/// so the host can check it was issued by its CA and can keep the change
/// across restarts (the original sends none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RotateSerialRequest {
    /// The serial, as sent.
    pub serial: String,
    /// `add`, `remove`, or empty (`add`); checked by the host.
    pub action: String,
    /// Advisory token, for the hook.
    pub token: String,
    /// Echoed in the reply.
    pub reqid: String,
    /// The certificate holding `serial` (`add` only).
    pub cert: Option<String>,
}

impl RotateSerialRequest {
    /// Reads a request body; a field of the wrong type is an error naming it.
    pub fn read(bytes: &[u8]) -> Result<RotateSerialRequest, ReadError> {
        read::<RotateSerialRequest>(bytes)
    }

    /// The body as sent.
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("serial", &self.serial)
            .str("action", &self.action)
            .str("token", &self.token)
            .str("reqid", &self.reqid)
            .opt_str("cert", self.cert.as_deref())
            .build()
    }
}

impl Message for RotateSerialRequest {
    const FIELDS: &'static [(&'static str, Kind)] = &[
        ("serial", Kind::Str),
        ("action", Kind::Str),
        ("token", Kind::Str),
        ("reqid", Kind::Str),
        ("cert", Kind::Str),
    ];

    fn set(&mut self, field: &'static str, value: Val) {
        match (field, value) {
            ("serial", Val::Str(s)) => self.serial = s,
            ("action", Val::Str(s)) => self.action = s,
            ("token", Val::Str(s)) => self.token = s,
            ("reqid", Val::Str(s)) => self.reqid = s,
            ("cert", Val::Str(s)) => self.cert = Some(s),
            _ => {}
        }
    }
}

/// The host's answer to `/rotate-serial`.
#[derive(Debug, Clone, PartialEq)]
pub enum RotateSerialReply {
    /// `{"status":"ok","action","serial","dispatcher",...}`: the original's
    /// four keys, then (additive) `host`, `already`, `persisted`, `staged`,
    /// `warning`?, `reqid`.
    Done(RotateDone),
    /// `{"status":"error","error":…}` (the original answers these with 200).
    Error(String),
}

/// A `/rotate-serial` the host carried out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RotateDone {
    /// `add` or `remove`.
    pub action: String,
    /// The serial as sent.
    pub serial: String,
    /// The caller's identity, from its certificate.
    pub by: String,
    /// The host's own host name.
    pub host: String,
    /// Nothing changed: added under the caller already, or not there to remove.
    pub already: bool,
    /// The change is in the host's trust file (or staged for it, checked
    /// again at the host's next start); false: in memory only, until the
    /// host restarts.
    pub persisted: bool,
    /// The change waits, in the host's state directory, to be written into
    /// the trust file at the host's next start (it holds meanwhile).
    pub staged: bool,
    /// Why it is not persisted, when it is not.
    pub warning: Option<String>,
    /// The request id as sent.
    pub reqid: String,
}

impl RotateSerialReply {
    /// The reply body.
    pub fn to_json(&self) -> Value {
        match self {
            RotateSerialReply::Done(d) => Builder::new()
                .str("status", "ok")
                .str("action", &d.action)
                .str("serial", &d.serial)
                .str("dispatcher", &d.by)
                .str("host", &d.host)
                .bool("already", d.already)
                .bool("persisted", d.persisted)
                .bool("staged", d.staged)
                .opt_str("warning", d.warning.as_deref())
                .str("reqid", &d.reqid)
                .build(),
            RotateSerialReply::Error(e) => status_error(e),
        }
    }

    /// Reads a reply: `status:"ok"` is done, anything else an error. A host
    /// of the original sends only the first four keys and always writes its
    /// trust file, so a missing `persisted` reads as true.
    pub fn from_json(o: &Object) -> Result<RotateSerialReply, FieldError> {
        let f = Fields(o);
        if f.str("status")? != Some("ok") {
            return Ok(RotateSerialReply::Error(error_text(f)?));
        }
        Ok(RotateSerialReply::Done(RotateDone {
            action: f.string("action")?,
            serial: f.string("serial")?,
            by: f.string("dispatcher")?,
            host: f.string("host")?,
            already: f.flag("already")?.unwrap_or(false),
            persisted: f.flag("persisted")?.unwrap_or(true),
            staged: f.flag("staged")?.unwrap_or(false),
            warning: f.str("warning")?.map(str::to_string),
            reqid: f.string("reqid")?,
        }))
    }
}

/// One allowlisted script as `/capabilities` describes it.
#[derive(Debug, Clone, Default)]
pub struct ScriptInfo {
    /// Allowlist name.
    pub name: String,
    /// Path on the host.
    pub path: String,
    /// Whether the host user may execute it.
    pub executable: bool,
    /// Profile named in scripts.conf (`default` when none).
    pub profile: String,
    /// The schema sidecar, transported and never interpreted.
    pub schema: Option<Value>,
    /// The sidecar's version.
    pub schema_version: Option<String>,
}

impl ScriptInfo {
    fn to_json(&self) -> Value {
        let b = Builder::new()
            .str("name", &self.name)
            .str("path", &self.path)
            .bool("executable", self.executable)
            .str("profile", &self.profile)
            .opt_str("schema_version", self.schema_version.as_deref());
        match &self.schema {
            Some(s) => b.value("schema", s.clone()).build(),
            None => b.build(),
        }
    }

    fn from_json(v: &Value) -> Result<ScriptInfo, FieldError> {
        let Value::Object(o) = v else {
            return Err(FieldError {
                field: "scripts",
                expected: "an array of objects",
            });
        };
        let f = Fields(o);
        Ok(ScriptInfo {
            name: f.string("name")?,
            path: f.string("path")?,
            executable: f.flag("executable")?.unwrap_or(false),
            profile: f.str("profile")?.unwrap_or("default").to_string(),
            schema: f.raw("schema").cloned(),
            schema_version: f.str("schema_version")?.map(str::to_string),
        })
    }
}

/// The host's answer to `GET /capabilities`.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// The host's own host name.
    pub host: String,
    /// The host's version.
    pub version: String,
    /// The allowlist, sorted by name.
    pub scripts: Vec<ScriptInfo>,
    /// The host's `[tags]`.
    pub tags: BTreeMap<String, String>,
}

impl Capabilities {
    /// The reply body (`status:"ok"` included).
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("status", "ok")
            .str("host", &self.host)
            .str("version", &self.version)
            .value(
                "scripts",
                Value::Array(self.scripts.iter().map(ScriptInfo::to_json).collect()),
            )
            .value("tags", tags_value(&self.tags))
            .build()
    }

    /// Reads a reply. Tag values that are not strings are dropped, as the
    /// registry keeps only string tags.
    pub fn from_json(o: &Object) -> Result<Capabilities, FieldError> {
        let f = Fields(o);
        let scripts = match f.raw("scripts") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(ScriptInfo::from_json)
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(FieldError {
                    field: "scripts",
                    expected: "an array of objects",
                })
            }
        };
        Ok(Capabilities {
            host: f.string("host")?,
            version: f.string("version")?,
            scripts,
            tags: f.object("tags")?.map(string_map).unwrap_or_default(),
        })
    }
}

/// State of a detached job in the host's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Still running.
    Running,
    /// Finished (or closed as lost).
    Done,
}

/// A detached job's record: `<async_runs_dir>/<dispatcher_id>/<reqid>.json`
/// on the host, and the body of `GET /result/<reqid>` (protocol.md 3.4).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The request id.
    pub reqid: String,
    /// Running or done.
    pub state: JobState,
    /// The script name.
    pub script: String,
    /// The controller id that started it.
    pub owner: String,
    /// Start time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    /// End time, once done.
    pub finished: Option<String>,
    /// What the run produced, once done.
    pub output: Option<Output>,
    /// Closed because the host stopped before the script finished.
    pub lost: bool,
    /// While running, on disk only: the script's process group, so a host
    /// restarted after a crash can kill what is left of it (extension).
    pub pgid: Option<i64>,
    /// With `pgid`: the group leader's start, `<boot id>/<clock ticks>`, which
    /// tells that group from a later one reusing the id (extension).
    pub pgid_started: Option<String>,
}

impl JobRecord {
    /// The record as stored and sent.
    pub fn to_json(&self) -> Value {
        let b = Builder::new()
            .str("reqid", &self.reqid)
            .str(
                "status",
                match self.state {
                    JobState::Running => "running",
                    JobState::Done => "done",
                },
            )
            .str("script", &self.script)
            .str("owner", &self.owner)
            .str("started", &self.started)
            .opt_str("finished", self.finished.as_deref())
            .flag("lost", self.lost)
            .opt_int("pgid", self.pgid)
            .opt_str("pgid_started", self.pgid_started.as_deref());
        match &self.output {
            Some(out) => out.write(b).build(),
            None => b.build(),
        }
    }

    /// Reads a record (ours or the original's).
    pub fn from_json(o: &Object) -> Result<JobRecord, FieldError> {
        let f = Fields(o);
        let state = match f.str("status")? {
            Some("running") => JobState::Running,
            Some("done") => JobState::Done,
            _ => {
                return Err(FieldError {
                    field: "status",
                    expected: "\"running\" or \"done\"",
                })
            }
        };
        Ok(JobRecord {
            reqid: f.string("reqid")?,
            state,
            script: f.string("script")?,
            owner: f.string("owner")?,
            started: f.string("started")?,
            finished: f.str("finished")?.map(str::to_string),
            output: match state {
                JobState::Done => Some(Output::read(f)?),
                JobState::Running => None,
            },
            lost: f.flag("lost")?.unwrap_or(false),
            pgid: f.int("pgid")?,
            pgid_started: f.str("pgid_started")?.map(str::to_string),
        })
    }
}

/// The host's error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorReply {
    /// The peer's serial is not a trusted controller's:
    /// 403 `{"error":"serial mismatch","status":"forbidden"}`.
    SerialMismatch,
    /// A plain `{"error":…}` with the given status.
    Plain(u16, String),
    /// `GET /result/<reqid>` for a job the caller does not own or that does
    /// not exist: 404 `{"status":"unknown","reqid":…}`.
    UnknownJob(String),
}

impl ErrorReply {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ErrorReply::SerialMismatch => 403,
            ErrorReply::Plain(status, _) => *status,
            ErrorReply::UnknownJob(_) => 404,
        }
    }

    /// The body.
    pub fn to_json(&self) -> Value {
        match self {
            ErrorReply::SerialMismatch => Builder::new()
                .str("error", "serial mismatch")
                .str("status", "forbidden")
                .build(),
            ErrorReply::Plain(_, msg) => Builder::new().str("error", msg).build(),
            ErrorReply::UnknownJob(reqid) => Builder::new()
                .str("status", "unknown")
                .str("reqid", reqid)
                .build(),
        }
    }
}

/// Tags as a JSON object of strings.
pub fn tags_value(tags: &BTreeMap<String, String>) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The string-valued entries of an object.
pub fn string_map(o: &Object) -> BTreeMap<String, String> {
    o.iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// A derived `Serialize` as a dynamic value.
pub(crate) fn to_value<T: Serialize>(v: &T) -> Value {
    // Invariant: miniserde writes valid JSON of shallow derived structs, so
    // reading it back cannot fail; `Null` is unreachable.
    miniserde::json::from_str(&miniserde::json::to_string(v)).unwrap_or(Value::Null)
}
