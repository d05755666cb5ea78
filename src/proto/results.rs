//! Per-host results of a fan-out, as the gateway returns them, `ced --json`
//! prints them and the run store keeps them (surface.md 3.3: RunResult,
//! AsyncSubmitResult, PingResult, HostCapabilities).

use std::time::Duration;

use miniserde::json::{Object, Value};

use crate::proto::exec::{Capabilities, Output, PingReply, RevokeSerialReply, RotateDone};
use crate::proto::json::{Builder, FieldError, Fields};

/// A round-trip time, written as the original does (`"42ms"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rtt(pub Duration);

impl Rtt {
    /// `"<n>ms"`.
    pub fn text(&self) -> String {
        format!("{:.0}ms", self.0.as_secs_f64() * 1000.0)
    }

    fn parse(s: &str) -> Rtt {
        let ms = s
            .strip_suffix("ms")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        Rtt(Duration::from_millis(ms))
    }
}

/// Who a result is from: the registry name, and the name the host
/// reported when it differs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLabel {
    /// Registry name: results are keyed by it.
    pub host: String,
    /// The host's own name, when it differs from the registry's.
    pub reported: Option<String>,
}

impl HostLabel {
    /// A label for `host`, keeping `reported` only when it differs.
    pub fn new(host: &str, reported: &str) -> HostLabel {
        HostLabel {
            host: host.to_string(),
            reported: (!reported.is_empty() && reported != host).then(|| reported.to_string()),
        }
    }

    fn write(&self, b: Builder) -> Builder {
        b.str("host", &self.host)
            .opt_str("reported_hostname", self.reported.as_deref())
    }

    fn read(f: Fields<'_>) -> Result<HostLabel, FieldError> {
        Ok(HostLabel {
            host: f.string("host")?,
            reported: f.str("reported_hostname")?.map(str::to_string),
        })
    }

    /// `name` or `name (reported)`.
    pub fn display(&self) -> String {
        match &self.reported {
            Some(r) => format!("{} ({r})", self.host),
            None => self.host.clone(),
        }
    }
}

/// One host's answer to a pushed serial revocation.
#[derive(Debug, Clone)]
pub struct HostRevoke {
    /// Which host.
    pub label: HostLabel,
    /// Round trip.
    pub rtt: Rtt,
    /// The host's reply, or why there is none.
    pub reply: Result<RevokeSerialReply, String>,
}

impl HostRevoke {
    /// The result as JSON: `{host, status:"ok", serial, already, rtt}` or
    /// `{host, status:"error", error, rtt}`.
    pub fn to_json(&self) -> Value {
        let b = match &self.reply {
            Ok(r) => Builder::new()
                .str("status", "ok")
                .str("serial", &r.serial)
                .bool("already", r.already)
                .bool("persisted", r.persisted)
                .opt_str("warning", r.warning.as_deref())
                .str("reqid", &r.reqid),
            Err(e) => Builder::new().str("status", "error").str("error", e),
        };
        self.label.write(b).str("rtt", self.rtt.text()).build()
    }
}

/// One host's answer to a `/rotate-serial` announcement or retirement.
#[derive(Debug, Clone)]
pub struct HostRotate {
    /// Which host.
    pub label: HostLabel,
    /// Round trip.
    pub rtt: Rtt,
    /// The host's reply, or why there is none.
    pub reply: Result<RotateDone, String>,
}

impl HostRotate {
    /// The result as JSON: `{host, status:"ok", action, serial, already,
    /// persisted, staged, warning?, rtt}` or `{host, status:"error", error,
    /// rtt}`.
    pub fn to_json(&self) -> Value {
        let b = match &self.reply {
            Ok(r) => Builder::new()
                .str("status", "ok")
                .str("action", &r.action)
                .str("serial", &r.serial)
                .bool("already", r.already)
                .bool("persisted", r.persisted)
                .bool("staged", r.staged)
                .opt_str("warning", r.warning.as_deref()),
            Err(e) => Builder::new().str("status", "error").str("error", e),
        };
        self.label.write(b).str("rtt", self.rtt.text()).build()
    }
}

/// One host's sync run result (RunResult).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostRun {
    /// Which host.
    pub label: HostLabel,
    /// The script name.
    pub script: String,
    /// The run's request id.
    pub reqid: String,
    /// Round trip.
    pub rtt: Rtt,
    /// What the run produced; `exit:-1` with `error` for a failure on the
    /// way (transport, refusal, bad reply).
    pub output: Output,
}

impl HostRun {
    /// Whether the script ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.output.exit == 0
    }

    /// The result as JSON.
    pub fn to_json(&self) -> Value {
        let b = self
            .label
            .write(Builder::new())
            .str("script", &self.script)
            .str("reqid", &self.reqid)
            .str("rtt", self.rtt.text());
        self.output.write(b).build()
    }

    /// Reads a stored result.
    pub fn from_json(v: &Value) -> Result<HostRun, FieldError> {
        let o = as_object(v, "results")?;
        let f = Fields(o);
        Ok(HostRun {
            label: HostLabel::read(f)?,
            script: f.string("script")?,
            reqid: f.string("reqid")?,
            rtt: Rtt::parse(f.str("rtt")?.unwrap_or("")),
            output: Output::read(f)?,
        })
    }
}

/// How an async submission went on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// The host started the job.
    Accepted,
    /// The script was already running detached there.
    Busy,
    /// It could not be submitted.
    Error,
}

impl Submitted {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Submitted::Accepted => "accepted",
            Submitted::Busy => "busy",
            Submitted::Error => "error",
        }
    }
}

/// One host's async submission result (AsyncSubmitResult).
#[derive(Debug, Clone, PartialEq)]
pub struct HostSubmit {
    /// Which host.
    pub host: String,
    /// The script name.
    pub script: String,
    /// The run's request id.
    pub reqid: String,
    /// Round trip.
    pub rtt: Rtt,
    /// Outcome.
    pub status: Submitted,
    /// Why, unless accepted.
    pub error: Option<String>,
}

impl HostSubmit {
    /// The result as JSON.
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("host", &self.host)
            .str("script", &self.script)
            .str("status", self.status.as_str())
            .opt_str("error", self.error.as_deref())
            .str("reqid", &self.reqid)
            .str("rtt", self.rtt.text())
            .build()
    }
}

/// One host's ping result (PingResult).
#[derive(Debug, Clone, PartialEq)]
pub struct HostPing {
    /// Which host.
    pub label: HostLabel,
    /// Round trip.
    pub rtt: Rtt,
    /// The host's reply, or why there is none.
    pub reply: Result<PingReply, String>,
}

impl HostPing {
    /// The result as JSON: the host's reply keyed by registry name, or
    /// `{host, status:"error", error, rtt}`.
    pub fn to_json(&self) -> Value {
        let b = match &self.reply {
            Ok(p) => Builder::new()
                .str("status", &p.status)
                .str("version", &p.version)
                .str("expiry", &p.expiry)
                .bool("staged", p.staged)
                .str("reqid", &p.reqid),
            Err(e) => Builder::new().str("status", "error").str("error", e),
        };
        self.label.write(b).str("rtt", self.rtt.text()).build()
    }
}

/// One host's capabilities result (HostCapabilities).
#[derive(Debug, Clone)]
pub struct HostCapabilities {
    /// Which host.
    pub label: HostLabel,
    /// Round trip.
    pub rtt: Rtt,
    /// The host's reply, or why there is none.
    pub reply: Result<Capabilities, String>,
}

impl HostCapabilities {
    /// The result as JSON.
    pub fn to_json(&self) -> Value {
        let mut o = match &self.reply {
            Ok(c) => match c.to_json() {
                Value::Object(o) => o,
                _ => Object::new(),
            },
            Err(e) => Builder::new()
                .str("status", "error")
                .str("error", e)
                .object(),
        };
        o.remove("host");
        let b = self.label.write(Builder::new()).str("rtt", self.rtt.text());
        let mut out = b.object();
        out.extend(o);
        Value::Object(out)
    }
}

pub(crate) fn as_object<'a>(v: &'a Value, field: &'static str) -> Result<&'a Object, FieldError> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(FieldError {
            field,
            expected: "an array of objects",
        }),
    }
}
