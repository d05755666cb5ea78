//! Messages on the pairing port (7444) and the pairing queue record
//! (protocol.md 5.2, 5.4).

use miniserde::json::{Object, Value};

use crate::proto::json::{Builder, FieldError, Fields};
use crate::proto::read::{read, Kind, Message, ReadError, Val};
use crate::proto::records::LookupBy;

/// The host's `POST /pair` body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairRequest {
    /// The host's name: registry key and certificate CN.
    pub hostname: String,
    /// The CSR, PEM, exactly as sent (the pairing code hashes these bytes).
    pub csr: String,
    /// 32 hex digits, echoed in the approval.
    pub nonce: String,
    /// The host's addressing hint.
    pub lookup_by: Option<LookupBy>,
    /// The host's serve port.
    pub port: Option<u16>,
    /// The host's own address (to survive NAT).
    pub ip: Option<String>,
}

impl PairRequest {
    /// Reads a request as the original controller does, building no
    /// value tree: `csr` and `hostname` must be present, non-empty strings;
    /// `lookup_by` is kept only if `ip`/`hostname`; `port` only if an
    /// integer 1-65535 - **given as a JSON number or, as the Perl host
    /// sends it, a JSON string of digits**; `ip` only if a string. Other
    /// fields are ignored.
    pub fn read(bytes: &[u8]) -> Result<PairRequest, ReadError> {
        let wire = read::<PairWire>(bytes)?;
        let required = |value: Option<String>, field: &'static str| {
            value
                .filter(|s| !s.is_empty())
                .ok_or(ReadError::Field(FieldError {
                    field,
                    expected: "a non-empty string",
                }))
        };
        Ok(PairRequest {
            hostname: required(wire.hostname, "hostname")?,
            csr: required(wire.csr, "csr")?,
            nonce: wire.nonce.unwrap_or_default(),
            lookup_by: wire.lookup_by.as_deref().and_then(LookupBy::parse),
            port: wire
                .port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0),
            ip: wire.ip,
        })
    }

    /// The body as the host sends it (`port` as a number).
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("hostname", &self.hostname)
            .str("csr", &self.csr)
            .str("nonce", &self.nonce)
            .opt_str("lookup_by", self.lookup_by.map(LookupBy::as_str))
            .opt_int("port", self.port.map(i64::from))
            .opt_str("ip", self.ip.as_deref())
            .build()
    }
}

/// The request as it arrives, before the original's rules are applied.
#[derive(Default)]
struct PairWire {
    hostname: Option<String>,
    csr: Option<String>,
    nonce: Option<String>,
    lookup_by: Option<String>,
    port: Option<i64>,
    ip: Option<String>,
}

impl Message for PairWire {
    const FIELDS: &'static [(&'static str, Kind)] = &[
        ("hostname", Kind::Str),
        ("csr", Kind::Str),
        ("nonce", Kind::Str),
        ("lookup_by", Kind::Str),
        ("port", Kind::IntOrDigits),
        ("ip", Kind::Str),
    ];

    fn set(&mut self, field: &'static str, value: Val) {
        match (field, value) {
            ("hostname", Val::Str(s)) => self.hostname = Some(s),
            ("csr", Val::Str(s)) => self.csr = Some(s),
            ("nonce", Val::Str(s)) => self.nonce = Some(s),
            ("lookup_by", Val::Str(s)) => self.lookup_by = Some(s),
            ("port", Val::Int(n)) => self.port = Some(n),
            ("ip", Val::Str(s)) => self.ip = Some(s),
            _ => {}
        }
    }
}

/// The controller's first answer: queued, or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairAck {
    /// `{"status":"pending","reqid":…}`.
    Pending {
        /// The queue id.
        reqid: String,
    },
    /// `{"status":"error","reason":…}`.
    Error {
        /// Why.
        reason: String,
    },
}

impl PairAck {
    /// The body.
    pub fn to_json(&self) -> Value {
        match self {
            PairAck::Pending { reqid } => Builder::new()
                .str("status", "pending")
                .str("reqid", reqid)
                .build(),
            PairAck::Error { reason } => Builder::new()
                .str("status", "error")
                .str("reason", reason)
                .build(),
        }
    }

    /// Reads an ack; anything but a pending ack with a reqid is an error.
    pub fn from_json(o: &Object) -> PairAck {
        let f = Fields(o);
        let text = |k: &'static str| f.str(k).ok().flatten().unwrap_or("").to_string();
        match (text("status").as_str(), text("reqid")) {
            ("pending", reqid) if !reqid.is_empty() => PairAck::Pending { reqid },
            ("error", _) => PairAck::Error {
                reason: text("reason"),
            },
            (other, _) => PairAck::Error {
                reason: format!("unexpected answer (status '{other}')"),
            },
        }
    }
}

/// The controller's final answer; also the content of the queue's
/// `<reqid>.approved` / `<reqid>.denied` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairDecision {
    /// Approved: the signed certificate and what to trust.
    Approved {
        /// The host certificate, PEM.
        cert: String,
        /// The CA certificate, PEM.
        ca: String,
        /// The nonce of the request.
        nonce: String,
        /// The controller certificate's serial (canonical hex).
        dispatcher_serial: String,
        /// The controller's id.
        dispatcher_id: String,
    },
    /// Denied, by the operator or by timeout.
    Denied {
        /// Why.
        reason: String,
    },
}

impl PairDecision {
    /// The body.
    pub fn to_json(&self) -> Value {
        match self {
            PairDecision::Approved {
                cert,
                ca,
                nonce,
                dispatcher_serial,
                dispatcher_id,
            } => Builder::new()
                .str("status", "approved")
                .str("cert", cert)
                .str("ca", ca)
                .str("nonce", nonce)
                .str("dispatcher_serial", dispatcher_serial)
                .str("dispatcher_id", dispatcher_id)
                .build(),
            PairDecision::Denied { reason } => Builder::new()
                .str("status", "denied")
                .str("reason", reason)
                .build(),
        }
    }

    /// Reads a decision; anything but `approved` is a denial with its
    /// reason (default `denied`), as the original host reads it.
    pub fn from_json(o: &Object) -> PairDecision {
        let f = Fields(o);
        let text = |k: &'static str| f.str(k).ok().flatten().unwrap_or("").to_string();
        if text("status") == "approved" {
            PairDecision::Approved {
                cert: text("cert"),
                ca: text("ca"),
                nonce: text("nonce"),
                dispatcher_serial: text("dispatcher_serial"),
                dispatcher_id: text("dispatcher_id"),
            }
        } else {
            let reason = text("reason");
            PairDecision::Denied {
                reason: if reason.is_empty() {
                    "denied".to_string()
                } else {
                    reason
                },
            }
        }
    }
}

/// A pending request in the queue: `<pairing_dir>/<reqid>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueEntry {
    /// The queue id.
    pub id: String,
    /// The host's name.
    pub hostname: String,
    /// The effective address (the host's, else the TCP source).
    pub ip: String,
    /// The TCP source address.
    pub source_ip: String,
    /// The CSR, PEM.
    pub csr: String,
    /// The request's nonce.
    pub nonce: String,
    /// The host's addressing hint, `""` when none.
    pub lookup_by: String,
    /// The host's port, when it sent one.
    pub port: Option<u16>,
    /// Receipt time, ISO-8601 UTC.
    pub received: String,
    /// The 6-digit pairing code.
    pub code: String,
    /// Forward-confirmed reverse DNS name, `""` when none.
    pub reverse_dns: String,
    /// Whether `reverse_dns` resolved back to the source.
    pub reverse_confirmed: bool,
}

impl QueueEntry {
    /// The record as stored (`reverse_confirmed` as 0/1, as the original).
    pub fn to_json(&self) -> Value {
        let b = Builder::new()
            .str("id", &self.id)
            .str("hostname", &self.hostname)
            .str("ip", &self.ip)
            .str("source_ip", &self.source_ip)
            .str("csr", &self.csr)
            .str("nonce", &self.nonce)
            .str("lookup_by", &self.lookup_by)
            .str("received", &self.received)
            .str("code", &self.code)
            .str("reverse_dns", &self.reverse_dns)
            .int("reverse_confirmed", i64::from(self.reverse_confirmed));
        match self.port {
            Some(p) => b.int("port", i64::from(p)).build(),
            None => b.value("port", Value::Null).build(),
        }
    }

    /// The entry as `list-requests --json` shows it: what an operator
    /// compares before approving (no CSR, no nonce), and whether the name
    /// is registered already (approving then needs `--replace`).
    pub fn to_listing(&self, registered: bool) -> Value {
        let b = Builder::new()
            .str("id", &self.id)
            .str("hostname", &self.hostname)
            .str("ip", &self.ip)
            .str("source_ip", &self.source_ip)
            .str("lookup_by", &self.lookup_by)
            .str("received", &self.received)
            .str("code", &self.code)
            .str("reverse_dns", &self.reverse_dns)
            .bool("reverse_confirmed", self.reverse_confirmed)
            .bool("registered", registered);
        match self.port {
            Some(p) => b.int("port", i64::from(p)).build(),
            None => b.value("port", Value::Null).build(),
        }
    }

    /// Reads a record (ours or the original's; its `port` may be a string).
    pub fn from_json(o: &Object) -> QueueEntry {
        let f = Fields(o);
        let text = |k: &'static str| f.str(k).ok().flatten().unwrap_or("").to_string();
        let port = match f.raw("port") {
            Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
            _ => f
                .int("port")
                .ok()
                .flatten()
                .and_then(|p| u16::try_from(p).ok()),
        }
        .filter(|p| *p != 0);
        let confirmed = match f.raw("reverse_confirmed") {
            Some(Value::Bool(b)) => *b,
            _ => f.int("reverse_confirmed").ok().flatten().unwrap_or(0) != 0,
        };
        QueueEntry {
            id: text("id"),
            hostname: text("hostname"),
            ip: text("ip"),
            source_ip: text("source_ip"),
            csr: text("csr"),
            nonce: text("nonce"),
            lookup_by: text("lookup_by"),
            port,
            received: text("received"),
            code: text("code"),
            reverse_dns: text("reverse_dns"),
            reverse_confirmed: confirmed,
        }
    }
}
