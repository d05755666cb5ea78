//! Records on disk on the controller host: the host registry entry
//! (surface.md 4.6), the run store's sync and async records (4.9) and the
//! rotation state (4.10).
//! Each reads the original's files unchanged.

use std::collections::BTreeMap;

use miniserde::json::{Object, Value};

use crate::proto::exec::{string_map, tags_value, JobRecord, JobState, Output};
use crate::proto::json::{Builder, FieldError, Fields};
use crate::proto::results::{HostRun, HostSubmit, Submitted};

/// The default host port.
pub const DEFAULT_AGENT_PORT: u16 = 7443;

/// How the controller reaches an host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LookupBy {
    /// By its registry name, through DNS.
    #[default]
    Hostname,
    /// By its recorded IP.
    Ip,
}

impl LookupBy {
    /// `ip` or `hostname`; anything else is `None`.
    pub fn parse(s: &str) -> Option<LookupBy> {
        match s {
            "ip" => Some(LookupBy::Ip),
            "hostname" => Some(LookupBy::Hostname),
            _ => None,
        }
    }

    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupBy::Hostname => "hostname",
            LookupBy::Ip => "ip",
        }
    }
}

impl std::fmt::Display for LookupBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registered host: `<registry_dir>/<name>.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentRecord {
    /// Registry key and display name.
    pub hostname: String,
    /// Address to use when `lookup_by` is `ip`.
    pub ip: String,
    /// When it was paired (ISO-8601 UTC).
    pub paired: String,
    /// Certificate notAfter (OpenSSL text form).
    pub expiry: String,
    /// The pairing request id.
    pub reqid: String,
    /// How to reach it.
    pub lookup_by: LookupBy,
    /// Serve port.
    pub port: u16,
    /// Tags cached from discovery.
    pub tags: BTreeMap<String, String>,
    /// The controller serial the host was given.
    pub dispatcher_serial: String,
    /// `current`, `pending`, `stale` or `unknown`.
    pub serial_status: String,
    /// Rotation bookkeeping.
    pub serial_broadcast: String,
    /// Rotation bookkeeping.
    pub serial_confirmed: String,
    /// SHA-256 of the host certificate's public key (empty: not pinned;
    /// records written by the original have none).
    pub pubkey_sha256: String,
    /// The host certificate's serial, minimal lowercase hex (additive:
    /// empty in older records, and then not written).
    pub serial: String,
}

impl AgentRecord {
    /// The host to connect to.
    pub fn address(&self) -> &str {
        if self.lookup_by == LookupBy::Ip && !self.ip.is_empty() {
            &self.ip
        } else {
            &self.hostname
        }
    }

    /// The record as stored.
    pub fn to_json(&self) -> Value {
        Builder::new()
            .str("hostname", &self.hostname)
            .str("ip", &self.ip)
            .str("paired", &self.paired)
            .str("expiry", &self.expiry)
            .str("reqid", &self.reqid)
            .str("lookup_by", self.lookup_by.as_str())
            .int("port", i64::from(self.port))
            .value("tags", tags_value(&self.tags))
            .str("dispatcher_serial", &self.dispatcher_serial)
            .str("serial_status", &self.serial_status)
            .str("serial_broadcast", &self.serial_broadcast)
            .str("serial_confirmed", &self.serial_confirmed)
            .str("pubkey_sha256", &self.pubkey_sha256)
            .opt_str(
                "serial",
                Some(self.serial.as_str()).filter(|s| !s.is_empty()),
            )
            .build()
    }

    /// Reads a record as the original does: a `port` outside 1-65535 (or
    /// absent) is 7443, and a `port` written as a JSON string (older Perl
    /// records) is read as its number; `lookup_by` other than `ip` is
    /// `hostname`; non-string tags are dropped; other fields of the wrong
    /// type read as empty rather than hiding the host.
    pub fn from_json(o: &Object) -> AgentRecord {
        let f = Fields(o);
        let s = |k: &'static str| f.str(k).ok().flatten().unwrap_or("").to_string();
        let port = f
            .int("port")
            .ok()
            .flatten()
            .or_else(|| f.str("port").ok().flatten().and_then(|p| p.parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_AGENT_PORT);
        AgentRecord {
            hostname: s("hostname"),
            ip: s("ip"),
            paired: s("paired"),
            expiry: s("expiry"),
            reqid: s("reqid"),
            lookup_by: if s("lookup_by") == "ip" {
                LookupBy::Ip
            } else {
                LookupBy::Hostname
            },
            port,
            tags: f
                .object("tags")
                .ok()
                .flatten()
                .map(string_map)
                .unwrap_or_default(),
            dispatcher_serial: s("dispatcher_serial"),
            serial_status: s("serial_status"),
            serial_broadcast: s("serial_broadcast"),
            serial_confirmed: s("serial_confirmed"),
            pubkey_sha256: s("pubkey_sha256"),
            serial: s("serial"),
        }
    }
}

/// The rotation state, `rotation.json` (surface.md 4.10):
/// `{"current_serial","previous_serial","rotated_at","overlap_expires",
/// "overlap_days"[,"previous_retired"]}`, times ISO-8601 UTC. Once the
/// previous serial is retired, `previous_serial` is written as `null` and
/// `previous_retired` says when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    /// The serial in use since the rotation (minimal lowercase hex).
    pub current_serial: String,
    /// The serial it replaced, while it is still trusted (`None` once
    /// retired, or when there was none).
    pub previous_serial: Option<String>,
    /// When the rotation happened (unix seconds).
    pub rotated_at: i64,
    /// When the overlap ends (unix seconds).
    pub overlap_expires: i64,
    /// The overlap length the rotation was made with.
    pub overlap_days: u32,
    /// When the previous serial was retired (unix seconds).
    pub previous_retired: Option<i64>,
}

impl RotationRecord {
    /// The record as stored.
    pub fn to_json(&self) -> Value {
        let previous = match &self.previous_serial {
            Some(s) => Value::String(s.clone()),
            None => Value::Null,
        };
        Builder::new()
            .str("current_serial", &self.current_serial)
            .value("previous_serial", previous)
            .str("rotated_at", crate::time::iso8601(self.rotated_at))
            .str(
                "overlap_expires",
                crate::time::iso8601(self.overlap_expires),
            )
            .int("overlap_days", i64::from(self.overlap_days))
            .opt_str(
                "previous_retired",
                self.previous_retired.map(crate::time::iso8601),
            )
            .build()
    }

    /// Reads a record; a missing `current_serial`, or a time that is not
    /// ISO-8601, is an error naming the field (the state is then corrupt).
    /// An empty `previous_serial` (as the original may leave) is none.
    pub fn from_json(o: &Object) -> Result<RotationRecord, FieldError> {
        let f = Fields(o);
        let time = |key: &'static str| -> Result<Option<i64>, FieldError> {
            match f.str(key)? {
                None | Some("") => Ok(None),
                Some(t) => crate::time::parse_iso8601(t).map(Some).ok_or(FieldError {
                    field: key,
                    expected: "an ISO-8601 UTC time",
                }),
            }
        };
        let required = |key: &'static str| {
            time(key)?.ok_or(FieldError {
                field: key,
                expected: "an ISO-8601 UTC time",
            })
        };
        let current_serial = f.string("current_serial")?;
        if current_serial.is_empty() {
            return Err(FieldError {
                field: "current_serial",
                expected: "a serial",
            });
        }
        let overlap_days = f
            .int("overlap_days")?
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or(0);
        Ok(RotationRecord {
            current_serial,
            previous_serial: f
                .str("previous_serial")
                .ok()
                .flatten()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            rotated_at: required("rotated_at")?,
            overlap_expires: required("overlap_expires")?,
            overlap_days,
            previous_retired: time("previous_retired")?,
        })
    }
}

/// Who submitted a run through the gateway (kept for `status` authorisation,
/// never shown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitter {
    /// Advisory user name.
    pub username: String,
    /// The gateway client's IP.
    pub source_ip: String,
}

impl Submitter {
    fn to_json(&self) -> Value {
        Builder::new()
            .str("username", &self.username)
            .str("source_ip", &self.source_ip)
            .build()
    }

    fn read(o: &Object) -> Submitter {
        let f = Fields(o);
        Submitter {
            username: f.string("username").unwrap_or_default(),
            source_ip: f.string("source_ip").unwrap_or_default(),
        }
    }
}

/// Where one host of an async run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Submitted; no result fetched yet.
    Accepted,
    /// The host reports it running.
    Running,
    /// Finished; output present.
    Done,
    /// The host stopped before the script finished.
    Lost,
    /// The host no longer knows the reqid (its 24 h store expired).
    Expired,
    /// The script was already running there at submission.
    Busy,
    /// It could not be submitted or fetched.
    Error,
}

impl HostState {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Accepted => "accepted",
            HostState::Running => "running",
            HostState::Done => "done",
            HostState::Lost => "lost",
            HostState::Expired => "expired",
            HostState::Busy => "busy",
            HostState::Error => "error",
        }
    }

    fn parse(s: &str) -> HostState {
        match s {
            "accepted" => HostState::Accepted,
            "running" => HostState::Running,
            "done" => HostState::Done,
            "lost" => HostState::Lost,
            "expired" => HostState::Expired,
            "busy" => HostState::Busy,
            _ => HostState::Error,
        }
    }

    /// Whether a result may still come.
    pub fn pending(self) -> bool {
        matches!(self, HostState::Accepted | HostState::Running)
    }
}

/// One host of an async record.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// Where it stands.
    pub state: HostState,
    /// The run's output, once done or lost.
    pub output: Option<Output>,
    /// Why it failed, for `busy` and `error`.
    pub error: Option<String>,
    /// The last fetch failed for this reason; the host stays pending.
    pub fetch_error: Option<String>,
}

impl HostStatus {
    /// A host in `state` with nothing else known.
    pub fn new(state: HostState, error: Option<String>) -> HostStatus {
        HostStatus {
            state,
            output: None,
            error,
            fetch_error: None,
        }
    }

    /// The state after the host answered a result fetch with `job`.
    pub fn from_job(job: &JobRecord) -> HostStatus {
        match (job.state, &job.output) {
            (JobState::Done, Some(out)) => HostStatus {
                state: if job.lost {
                    HostState::Lost
                } else {
                    HostState::Done
                },
                output: Some(out.clone()),
                error: None,
                fetch_error: None,
            },
            _ => HostStatus::new(HostState::Running, None),
        }
    }

    fn to_json(&self) -> Value {
        let b = Builder::new().str("status", self.state.as_str());
        let b = match &self.output {
            Some(out) => out.write(b),
            None => b.opt_str("error", self.error.as_deref()),
        };
        b.opt_str("fetch_error", self.fetch_error.as_deref())
            .build()
    }

    fn from_json(v: &Value) -> Result<HostStatus, FieldError> {
        let Value::Object(o) = v else {
            return Err(FieldError {
                field: "hosts",
                expected: "an object of host objects",
            });
        };
        let f = Fields(o);
        let state = HostState::parse(f.str("status")?.unwrap_or(""));
        let output = match state {
            HostState::Done | HostState::Lost => Some(Output::read(f)?),
            _ => None,
        };
        Ok(HostStatus {
            state,
            error: match output {
                Some(_) => None,
                None => f.str("error")?.map(str::to_string),
            },
            output,
            fetch_error: f.str("fetch_error")?.map(str::to_string),
        })
    }
}

/// An gateway sync run, recorded when it finished.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRecord {
    /// The run's request id.
    pub reqid: String,
    /// The script name.
    pub script: String,
    /// The hosts as requested.
    pub hosts: Vec<String>,
    /// Per-host results.
    pub results: Vec<HostRun>,
    /// When it finished (Unix seconds).
    pub completed: i64,
    /// Who submitted it.
    pub submitter: Option<Submitter>,
}

/// An async run: submissions, then results fetched as they are asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncRecord {
    /// The run's request id.
    pub reqid: String,
    /// The script name.
    pub script: String,
    /// Per-host state, by registry name.
    pub hosts: BTreeMap<String, HostStatus>,
    /// When it was submitted (Unix seconds).
    pub created: i64,
    /// Who submitted it (gateway runs).
    pub submitter: Option<Submitter>,
}

impl AsyncRecord {
    /// The record of a submission, from its per-host results.
    pub fn submitted(
        reqid: &str,
        script: &str,
        results: &[HostSubmit],
        submitter: Option<Submitter>,
        created: i64,
    ) -> AsyncRecord {
        let hosts = results
            .iter()
            .map(|r| {
                let state = match r.status {
                    Submitted::Accepted => HostState::Accepted,
                    Submitted::Busy => HostState::Busy,
                    Submitted::Error => HostState::Error,
                };
                (r.host.clone(), HostStatus::new(state, r.error.clone()))
            })
            .collect();
        AsyncRecord {
            reqid: reqid.to_string(),
            script: script.to_string(),
            hosts,
            created,
            submitter,
        }
    }

    /// Hosts still waiting for a result, sorted.
    pub fn pending(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.state.pending())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether every host has a final state.
    pub fn complete(&self) -> bool {
        self.hosts.values().all(|h| !h.state.pending())
    }
}

/// A run store record.
#[derive(Debug, Clone, PartialEq)]
pub enum RunRecord {
    /// An gateway sync run.
    Sync(SyncRecord),
    /// An async run (CLI or gateway).
    Async(AsyncRecord),
}

impl RunRecord {
    /// The request id.
    pub fn reqid(&self) -> &str {
        match self {
            RunRecord::Sync(r) => &r.reqid,
            RunRecord::Async(r) => &r.reqid,
        }
    }

    /// Who submitted it.
    pub fn submitter(&self) -> Option<&Submitter> {
        match self {
            RunRecord::Sync(r) => r.submitter.as_ref(),
            RunRecord::Async(r) => r.submitter.as_ref(),
        }
    }

    /// Whether every host has a final result.
    pub fn complete(&self) -> bool {
        match self {
            RunRecord::Sync(_) => true,
            RunRecord::Async(r) => r.complete(),
        }
    }

    /// Whether any host failed (not done, or a non-zero exit).
    pub fn any_failed(&self) -> bool {
        match self {
            RunRecord::Sync(r) => r.results.iter().any(|h| !h.succeeded()),
            RunRecord::Async(r) => r.hosts.values().any(|h| {
                h.state != HostState::Done || h.output.as_ref().is_none_or(|o| o.exit != 0)
            }),
        }
    }

    /// The record as stored; `with_submitter: false` gives the shape shown
    /// to clients, which never includes the submitter.
    pub fn to_json(&self, with_submitter: bool) -> Object {
        let (b, submitter) = match self {
            RunRecord::Sync(r) => (
                Builder::new()
                    .str("reqid", &r.reqid)
                    .str("script", &r.script)
                    .str("mode", "sync")
                    .strings("hosts", &r.hosts)
                    .value(
                        "results",
                        Value::Array(r.results.iter().map(HostRun::to_json).collect()),
                    )
                    .int("completed", r.completed)
                    .bool("complete", true),
                &r.submitter,
            ),
            RunRecord::Async(r) => (
                Builder::new()
                    .str("reqid", &r.reqid)
                    .str("script", &r.script)
                    .str("mode", "async")
                    .value(
                        "hosts",
                        Value::Object(
                            r.hosts
                                .iter()
                                .map(|(k, h)| (k.clone(), h.to_json()))
                                .collect(),
                        ),
                    )
                    .int("created", r.created)
                    .strings("pending", &r.pending())
                    .bool("complete", r.complete()),
                &r.submitter,
            ),
        };
        match submitter {
            Some(s) if with_submitter => b.value("submitter", s.to_json()).object(),
            _ => b.object(),
        }
    }

    /// Reads a stored record (ours or the original's).
    pub fn from_json(o: &Object) -> Result<RunRecord, FieldError> {
        let f = Fields(o);
        let submitter = f.object("submitter")?.map(Submitter::read);
        let reqid = f.string("reqid")?;
        let script = f.string("script")?;
        match f.str("mode")? {
            Some("async") => {
                let hosts = f
                    .object("hosts")?
                    .map(|h| {
                        h.iter()
                            .map(|(k, v)| Ok((k.clone(), HostStatus::from_json(v)?)))
                            .collect::<Result<BTreeMap<_, _>, FieldError>>()
                    })
                    .transpose()?
                    .unwrap_or_default();
                Ok(RunRecord::Async(AsyncRecord {
                    reqid,
                    script,
                    hosts,
                    created: f.int("created")?.unwrap_or(0),
                    submitter,
                }))
            }
            _ => {
                let results = match f.raw("results") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(HostRun::from_json)
                        .collect::<Result<_, _>>()?,
                    _ => Vec::new(),
                };
                Ok(RunRecord::Sync(SyncRecord {
                    reqid,
                    script,
                    hosts: f.strings("hosts")?.unwrap_or_default(),
                    results,
                    completed: f.int("completed")?.unwrap_or(0),
                    submitter,
                }))
            }
        }
    }
}
