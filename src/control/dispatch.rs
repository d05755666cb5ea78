//! The one dispatch path of the dispatcher host: authorise, lock, resolve,
//! fan out, record. `ced` and `ctrl-exec-api` both call it and differ only
//! in how they render its typed results and its [`DispatchError`].
//!
//! File work (registry reads, `flock`, run-store writes) runs where the
//! caller's [`FileWork`] says: on the blocking pool for a long-running
//! server, whose executor must never wait on the disk; inline for `ced`.
//!
//! A run that is recorded (every async run, every API sync run) is recorded
//! before it is submitted: the record is written with every host pending
//! (`accepted`; a sync run's with no results yet) after the locks are taken
//! and before the fan-out, and rewritten with the outcome after it. A run
//! store that cannot take the record (full disk, permissions) refuses the
//! run with [`DispatchError::Record`] and no agent sees it, so a reqid that
//! was handed out can always be looked up. Should the final rewrite fail,
//! the first record stays: `status` then fetches every host's result from
//! its agent, which is logged as `run-store-fail`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use miniserde::json::Object;

use crate::conf::DispatcherConf;
use crate::control::auth::{self, Caller, Front};
use crate::control::engine::{CallError, Engine, EngineError, Reply};
use crate::control::locks::{Held, LockError, Locks};
use crate::control::registry::{self, Registry, RegistryError, ResolveError, Target};
use crate::control::runstore::{self, RunStore};
use crate::hook::Verdict;
use crate::proto::json::{Fields, JsonError};
use crate::proto::{
    AsyncRecord, Capabilities, HostCapabilities, HostLabel, HostPing, HostRevoke, HostRun,
    HostSubmit, Output, PingReply, PingRequest, ReqId, RevokeSerialReply, RevokeSerialRequest, Rtt,
    RunRecord, RunRequest, ScriptName, Submitted, Submitter, SyncRecord,
};
use crate::rt::FileWork;
use crate::{log, time};

/// Why a dispatch did not happen (some hosts failing is a result, not
/// this).
#[derive(Debug)]
pub enum DispatchError {
    /// The script name is not `^[A-Za-z0-9_-]+$`.
    InvalidScript(String),
    /// More hosts than one call may address.
    TooManyHosts {
        /// The limit.
        max: usize,
        /// The config key that sets it.
        key: &'static str,
    },
    /// The auth hook (or the API default) refused.
    Denied {
        /// The hook's exit code.
        code: i32,
        /// Its reason.
        reason: String,
    },
    /// These names are not registered.
    UnknownAgents(Vec<String>),
    /// Another run holds these `host:script` locks.
    Locked(Vec<String>),
    /// A lock file could not be used.
    Lock(LockError),
    /// The registry could not be read.
    Registry(RegistryError),
    /// No run record has that id (or the caller may not see it).
    NotFound(String),
    /// The run store could not be read or written.
    Store(io::Error),
    /// The run could not be recorded, so it was not submitted.
    Record {
        /// The record's path.
        path: PathBuf,
        /// Why the write failed.
        error: io::Error,
    },
}

impl DispatchError {
    /// Whether the failure is a full disk or an exhausted quota (the API
    /// answers 507 for it).
    pub fn out_of_space(&self) -> bool {
        let DispatchError::Record { error, .. } = self else {
            return false;
        };
        error.kind() == io::ErrorKind::StorageFull || error.kind() == io::ErrorKind::QuotaExceeded
    }
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::InvalidScript(s) => write!(
                f,
                "invalid script name '{s}' (letters, digits, '_' and '-' only)"
            ),
            DispatchError::TooManyHosts { max, key } => {
                write!(
                    f,
                    "too many hosts (max {max}; raise {key} in ctrl-exec.conf)"
                )
            }
            DispatchError::Denied { reason, .. } => write!(f, "Denied: {reason}"),
            DispatchError::UnknownAgents(names) => write!(
                f,
                "unknown agent{}: {}",
                if names.len() > 1 { "s" } else { "" },
                names.join(", ")
            ),
            DispatchError::Locked(c) => write!(f, "Locked: already running: {}", c.join(", ")),
            DispatchError::Lock(e) => write!(f, "{e}"),
            DispatchError::Registry(e) => write!(f, "{e}"),
            DispatchError::NotFound(id) => write!(f, "No such request: {id}"),
            DispatchError::Store(e) => write!(f, "cannot read run record: {e}"),
            DispatchError::Record { path, error } => {
                write!(f, "cannot record run: {error} ({})", path.display())
            }
        }
    }
}

impl std::error::Error for DispatchError {}

/// Called with each host's result of a sync run as it arrives, in the
/// order hosts finish (for live output); the run's outcome still lists
/// every result in host order.
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(&HostRun) + Send + Sync>);

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// What to run where.
#[derive(Debug, Clone, Default)]
pub struct RunOrder {
    /// Registry names, optionally `name:port`.
    pub hosts: Vec<String>,
    /// The script name, as given.
    pub script: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Submit detached.
    pub detach: bool,
    /// Port for hosts whose record carries the default port (`ced --port`).
    pub port: Option<u16>,
    /// Live per-host results of a sync run.
    pub progress: Option<Progress>,
}

/// One host's part of a fan-out, as its task ends.
enum Done {
    Ran(HostRun),
    Submitted(HostSubmit),
}

/// What a run produced.
#[derive(Debug)]
pub enum RunOutcome {
    /// A sync run: one result per host.
    Ran {
        /// The run's id.
        reqid: ReqId,
        /// Per host, in request order.
        results: Vec<HostRun>,
    },
    /// An async submission.
    Submitted {
        /// The run's id (give it to `status`).
        reqid: ReqId,
        /// Per host, in request order.
        results: Vec<HostSubmit>,
    },
}

/// The dispatcher host's services, set up once per process.
pub struct Dispatch {
    /// ctrl-exec.conf.
    pub conf: Arc<DispatcherConf>,
    engine: Arc<Engine>,
    registry: Registry,
    store: RunStore,
    locks: Locks,
    files: FileWork,
}

impl Dispatch {
    /// Loads the dispatcher's identity and opens its state directories;
    /// `files` says where file work runs (see [`FileWork`]).
    pub fn new(conf: DispatcherConf, files: FileWork) -> Result<Dispatch, EngineError> {
        let engine = Engine::new(&conf, files)?;
        Ok(Dispatch {
            files,
            registry: Registry::new(&conf.registry_dir),
            store: RunStore::new(&conf.runs_dir()),
            locks: Locks::new(&conf.locks_dir()),
            conf: Arc::new(conf),
            engine,
        })
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The engine (for `control::renew`).
    pub(super) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Deletes run records older than the retention (`ced maintain`).
    pub async fn purge_runs(&self) {
        let store = self.store.clone();
        self.files.run(move || store.purge()).await
    }

    /// Resolves host arguments as the dispatch operations do (for
    /// `control::renew`).
    pub(super) async fn resolve_targets(
        &self,
        hosts: &[String],
        port: Option<u16>,
    ) -> Result<Vec<Target>, DispatchError> {
        self.resolve(Front::Cli, hosts, port).await
    }

    async fn authorise(
        &self,
        caller: &Caller,
        req: crate::hook::Request,
    ) -> Result<(), DispatchError> {
        match auth::authorise(&self.conf, caller, &req).await {
            Verdict::Allow => Ok(()),
            Verdict::Deny { code, reason } => Err(DispatchError::Denied { code, reason }),
        }
    }

    async fn resolve(
        &self,
        front: Front,
        hosts: &[String],
        port: Option<u16>,
    ) -> Result<Vec<Target>, DispatchError> {
        let max = match front {
            Front::Cli => self.conf.max_hosts,
            Front::Api => self.conf.api_max_hosts,
        };
        if hosts.len() > max {
            return Err(DispatchError::TooManyHosts {
                max,
                key: match front {
                    Front::Cli => "max_hosts",
                    Front::Api => "api_max_hosts",
                },
            });
        }
        let registry = self.registry.clone();
        let hosts = hosts.to_vec();
        self.files
            .run(move || registry::resolve(&registry, &hosts, port))
            .await
            .map_err(|e| match e {
                ResolveError::Unknown(names) => DispatchError::UnknownAgents(names),
                ResolveError::Registry(e) => DispatchError::Registry(e),
            })
    }

    /// Resolves hosts, then brings those the registry shows `pending` in a
    /// rotation up to date before anything else is sent to them
    /// ([`Dispatch::catch_up`]): the first contact after the announcement
    /// was missed, whatever the operation.
    async fn resolve_live(
        &self,
        caller: &Caller,
        hosts: &[String],
        port: Option<u16>,
    ) -> Result<Vec<Target>, DispatchError> {
        let targets = self.resolve(caller.front, hosts, port).await?;
        self.catch_up(&targets, &caller.token).await;
        Ok(targets)
    }

    async fn lock(&self, targets: &[Target], script: &ScriptName) -> Result<Held, DispatchError> {
        let locks = self.locks.clone();
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let script = script.to_string();
        self.files
            .run(move || locks.acquire(&names, &script))
            .await
            .map_err(|e| match e {
                LockError::Conflict(c) => {
                    log::warn("lock-conflict", &[("CONFLICTS", &c.join(","))]);
                    DispatchError::Locked(c)
                }
                io => DispatchError::Lock(io),
            })
    }

    /// Writes the first record of a run, before anything is submitted; a
    /// failure refuses the run.
    async fn record(&self, record: RunRecord) -> Result<(), DispatchError> {
        let store = self.store.clone();
        let reqid = record.reqid().to_string();
        self.files
            .run(move || {
                let path = store.path_of(record.reqid());
                store
                    .save(&record)
                    .map_err(|error| DispatchError::Record { path, error })
            })
            .await
            .inspect_err(|e| {
                log::error(
                    "run-store-fail",
                    &[("ERROR", &e.to_string()), ("REQID", &reqid)],
                )
            })
    }

    async fn save(&self, record: RunRecord) {
        let store = self.store.clone();
        let reqid = record.reqid().to_string();
        if let Err(e) = self.files.run(move || store.save(&record)).await {
            log::warn(
                "run-store-fail",
                &[("ERROR", &e.to_string()), ("REQID", &reqid)],
            );
        }
    }

    /// Runs a script: authorise, resolve, lock, record, fan out, record the
    /// outcome. API sync runs and every async run are recorded, and refused
    /// with [`DispatchError::Record`] before the fan-out when the record
    /// cannot be written; the locks are held until every host answered.
    pub async fn run(&self, caller: &Caller, order: RunOrder) -> Result<RunOutcome, DispatchError> {
        let script = ScriptName::parse(&order.script)
            .ok_or_else(|| DispatchError::InvalidScript(order.script.clone()))?;
        let mut req = caller.request("run");
        req.script = script.to_string();
        req.hosts = order.hosts.clone();
        req.args = order.args.clone();
        self.authorise(caller, req).await?;
        let targets = self.resolve_live(caller, &order.hosts, order.port).await?;
        let held = self.lock(&targets, &script).await?;
        let reqid = ReqId::random();
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        log::info(
            "dispatch",
            &[
                ("HOSTS", &names.join(",")),
                ("MODE", if order.detach { "async" } else { "sync" }),
                ("REQID", reqid.as_str()),
                ("SCRIPT", script.as_str()),
            ],
        );
        let submitter = (caller.front == Front::Api).then(|| Submitter {
            username: caller.username.clone(),
            source_ip: caller.source_ip.clone(),
        });
        if order.detach {
            let pending: Vec<HostSubmit> = targets
                .iter()
                .map(|t| HostSubmit {
                    host: t.name.clone(),
                    script: script.to_string(),
                    reqid: reqid.to_string(),
                    rtt: Rtt::default(),
                    status: Submitted::Accepted,
                    error: None,
                })
                .collect();
            self.record(RunRecord::Async(AsyncRecord::submitted(
                reqid.as_str(),
                script.as_str(),
                &pending,
                submitter.clone(),
                time::now(),
            )))
            .await?;
        } else if submitter.is_some() {
            self.record(RunRecord::Sync(SyncRecord {
                reqid: reqid.to_string(),
                script: script.to_string(),
                hosts: order.hosts.clone(),
                results: Vec::new(),
                completed: time::now(),
                submitter: submitter.clone(),
            }))
            .await?;
        }
        let request = Arc::new(
            RunRequest {
                script: script.to_string(),
                args: order.args,
                reqid: reqid.to_string(),
                username: caller.username.clone(),
                token: caller.token.clone(),
                detach: order.detach,
            }
            .to_json(),
        );
        let done = {
            let (script, reqid, detach) = (script.clone(), reqid.clone(), order.detach);
            let progress = order.progress.clone();
            self.engine
                .fan_out(&targets, move |eng, t| {
                    let (request, script, reqid) = (request.clone(), script.clone(), reqid.clone());
                    let progress = progress.clone();
                    async move {
                        let reply = eng.call(&t, "POST", "/run", Some(&request)).await;
                        log_call("run", &t, reqid.as_str(), script.as_str(), &reply);
                        if detach {
                            return Done::Submitted(submit_result(&t, &script, &reqid, reply));
                        }
                        let result = run_result(&t, &script, &reqid, reply);
                        if let Some(Progress(show)) = &progress {
                            show(&result);
                        }
                        Done::Ran(result)
                    }
                })
                .await
        };
        drop(held);
        if order.detach {
            let results: Vec<HostSubmit> = done
                .into_iter()
                .filter_map(|d| match d {
                    Done::Submitted(s) => Some(s),
                    Done::Ran(_) => None,
                })
                .collect();
            self.save(RunRecord::Async(AsyncRecord::submitted(
                reqid.as_str(),
                script.as_str(),
                &results,
                submitter,
                time::now(),
            )))
            .await;
            return Ok(RunOutcome::Submitted { reqid, results });
        }
        let results: Vec<HostRun> = done
            .into_iter()
            .filter_map(|d| match d {
                Done::Ran(r) => Some(r),
                Done::Submitted(_) => None,
            })
            .collect();
        if submitter.is_some() {
            self.save(RunRecord::Sync(SyncRecord {
                reqid: reqid.to_string(),
                script: script.to_string(),
                hosts: order.hosts,
                results: results.clone(),
                completed: time::now(),
                submitter,
            }))
            .await;
        }
        Ok(RunOutcome::Ran { reqid, results })
    }

    /// Pings hosts (authorised as `ping`).
    pub async fn ping(
        &self,
        caller: &Caller,
        hosts: &[String],
        port: Option<u16>,
    ) -> Result<Vec<HostPing>, DispatchError> {
        let mut req = caller.request("ping");
        req.hosts = hosts.to_vec();
        self.authorise(caller, req).await?;
        let targets = self.resolve_live(caller, hosts, port).await?;
        Ok(self.ping_targets(&targets).await)
    }

    /// Pings every registered agent without asking the auth hook (`ced
    /// maintain`, which the reference runs hook-free as root), after
    /// bringing agents pending in a rotation up to date; returns the names
    /// and the results, in registry order.
    pub async fn ping_every(
        &self,
        token: &str,
    ) -> Result<(Vec<String>, Vec<HostPing>), DispatchError> {
        let registry = self.registry.clone();
        let names = self
            .files
            .run(move || registry.names())
            .await
            .map_err(DispatchError::Registry)?;
        let targets = self.resolve(Front::Cli, &names, None).await?;
        self.catch_up(&targets, token).await;
        Ok((names, self.ping_targets(&targets).await))
    }

    async fn ping_targets(&self, targets: &[Target]) -> Vec<HostPing> {
        let reqid = ReqId::random().into_string();
        let body = Arc::new(
            PingRequest {
                reqid: reqid.clone(),
            }
            .to_json(),
        );
        self.engine
            .fan_out(targets, move |eng, t| {
                let (body, reqid) = (body.clone(), reqid.clone());
                async move {
                    let reply = eng.call(&t, "POST", "/ping", Some(&body)).await;
                    let result = ping_result(&t, &reqid, reply);
                    log::info(
                        "ping",
                        &[
                            ("REQID", &reqid),
                            ("RESULT", if result.reply.is_ok() { "ok" } else { "error" }),
                            ("TARGET", &format!("{}:{}", t.host, t.port)),
                        ],
                    );
                    result
                }
            })
            .await
    }

    /// Pushes a revoked dispatcher serial (canonical) to every registered
    /// agent (`POST /revoke-serial`), authorised as `rotate` with args
    /// `["revoke", <serial>]`; one result per host.
    pub async fn revoke_serial(
        &self,
        caller: &Caller,
        serial: &str,
    ) -> Result<Vec<HostRevoke>, DispatchError> {
        let mut req = caller.request("rotate");
        req.args = vec!["revoke".into(), serial.to_string()];
        self.authorise(caller, req).await?;
        let registry = self.registry.clone();
        let names = self
            .files
            .run(move || registry.names())
            .await
            .map_err(DispatchError::Registry)?;
        let targets = self.resolve_live(caller, &names, None).await?;
        let reqid = ReqId::random().into_string();
        let body = Arc::new(
            RevokeSerialRequest {
                serial: serial.to_string(),
                token: caller.token.clone(),
                reqid: reqid.clone(),
            }
            .to_json(),
        );
        Ok(self
            .engine
            .fan_out(&targets, move |eng, t| {
                let (body, reqid) = (body.clone(), reqid.clone());
                async move {
                    let reply = eng.call(&t, "POST", "/revoke-serial", Some(&body)).await;
                    log_call("revoke-serial", &t, &reqid, "", &reply);
                    let (rtt, reply) = status_reply(reply, RevokeSerialReply::from_json);
                    let reported = reply.as_ref().map(|r| r.host.clone()).unwrap_or_default();
                    HostRevoke {
                        label: HostLabel::new(&t.name, &reported),
                        rtt,
                        reply,
                    }
                }
            })
            .await)
    }

    /// Asks hosts for their capabilities (authorised as `ping`); no hosts
    /// means every registered agent. Live tags replace the cached ones.
    pub async fn discovery(
        &self,
        caller: &Caller,
        hosts: Vec<String>,
    ) -> Result<Vec<HostCapabilities>, DispatchError> {
        let hosts = if hosts.is_empty() {
            let registry = self.registry.clone();
            self.files
                .run(move || registry.names())
                .await
                .map_err(DispatchError::Registry)?
        } else {
            hosts
        };
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let mut req = caller.request("ping");
        req.hosts = hosts.clone();
        self.authorise(caller, req).await?;
        let targets = self.resolve_live(caller, &hosts, None).await?;
        Ok(self.capabilities(&targets).await)
    }

    /// Capabilities of every registered agent, for the live OpenAPI
    /// document (the caller passed the gateway's own check already).
    pub async fn survey(&self) -> Result<(Vec<String>, Vec<HostCapabilities>), DispatchError> {
        let registry = self.registry.clone();
        let (names, targets) = self
            .files
            .run(move || {
                let names = registry.names()?;
                let targets = registry::resolve(&registry, &names, None).unwrap_or_default();
                Ok::<_, RegistryError>((names, targets))
            })
            .await
            .map_err(DispatchError::Registry)?;
        Ok((names, self.capabilities(&targets).await))
    }

    async fn capabilities(&self, targets: &[Target]) -> Vec<HostCapabilities> {
        let caps = self
            .engine
            .fan_out(targets, |eng, t| async move {
                let reply = eng.call(&t, "GET", "/capabilities", None).await;
                let result = capabilities_result(&t, reply);
                let scripts = match &result.reply {
                    Ok(c) => c.scripts.len().to_string(),
                    Err(_) => String::new(),
                };
                log::info(
                    "capabilities",
                    &[
                        ("SCRIPTS", &scripts),
                        ("TARGET", &format!("{}:{}", t.host, t.port)),
                    ],
                );
                result
            })
            .await;
        let registry = self.registry.clone();
        let live: Vec<HostCapabilities> =
            caps.iter().filter(|c| c.reply.is_ok()).cloned().collect();
        self.files.run(move || registry.refresh_tags(&live)).await;
        caps
    }

    /// Loads a run record, purging old ones first. The API authorises it
    /// as `status` with the record's submitter, and a refusal looks like an
    /// unknown id; the CLI reads it as the operator. An async record is
    /// refreshed from its agents when `refresh` is set, and saved.
    pub async fn status(
        &self,
        caller: &Caller,
        reqid: &str,
        refresh: bool,
    ) -> Result<RunRecord, DispatchError> {
        let not_found = || DispatchError::NotFound(reqid.chars().take(64).collect());
        let id = ReqId::parse(reqid).ok_or_else(not_found)?;
        let store = self.store.clone();
        let loaded = self
            .files
            .run(move || {
                store.purge();
                store.load(&id)
            })
            .await
            .map_err(DispatchError::Store)?;
        let mut record = loaded.ok_or_else(not_found)?;
        if caller.front == Front::Api {
            let mut req = caller.request("status");
            req.reqid = reqid.to_string();
            req.submitter = record.submitter().cloned();
            if self.authorise(caller, req).await.is_err() {
                return Err(not_found());
            }
        }
        if let (RunRecord::Async(rec), true) = (&mut record, refresh) {
            // Hosts that missed a rotation are brought up to date before
            // their results are fetched (unknown names are reported by
            // the refresh itself).
            if let Ok(targets) = self.resolve(caller.front, &rec.pending(), None).await {
                self.catch_up(&targets, &caller.token).await;
            }
            runstore::refresh(&self.engine, &self.registry, rec).await;
            self.save(record.clone()).await;
        }
        Ok(record)
    }
}

pub(super) fn log_call(
    action: &str,
    t: &Target,
    reqid: &str,
    script: &str,
    reply: &Result<Reply, CallError>,
) {
    let target = format!("{}:{}", t.host, t.port);
    match reply {
        Ok(r) => log::info(
            action,
            &[
                ("REQID", reqid),
                ("RTT", &r.rtt.text()),
                ("SCRIPT", script),
                ("STATUS", &r.status.to_string()),
                ("TARGET", &target),
            ],
        ),
        Err(e) => log::warn(
            action,
            &[
                ("ERROR", &e.to_string()),
                ("REQID", reqid),
                ("SCRIPT", script),
                ("TARGET", &target),
            ],
        ),
    }
}

/// The agent's `error`, if its body has one.
fn agent_error(body: &Result<Object, JsonError>) -> Option<String> {
    body.as_ref()
        .ok()
        .and_then(|b| Fields(b).str("error").ok().flatten())
        .map(str::to_string)
}

/// Words an unreadable body for an operator.
fn invalid_body(e: &JsonError) -> String {
    match e {
        JsonError::TooDeep { limit } => {
            format!("invalid JSON response: nested deeper than {limit} levels")
        }
        _ => "invalid JSON response".to_string(),
    }
}

/// The per-host result of a sync run.
fn run_result(
    t: &Target,
    script: &ScriptName,
    reqid: &ReqId,
    reply: Result<Reply, CallError>,
) -> HostRun {
    let (rtt, output) = match reply {
        Err(e) => (Rtt::default(), Output::failed(e.to_string())),
        Ok(r) => {
            let output = match (r.status, &r.body) {
                (403, b) => {
                    Output::failed(format!("forbidden: {}", agent_error(b).unwrap_or_default()))
                }
                (413, _) => Output::failed("request too large"),
                (_, Err(e)) => Output::failed(invalid_body(e)),
                // An agent at its limit says so in an `error` and no output.
                (status @ 500.., b) => Output::failed(
                    agent_error(b).unwrap_or_else(|| format!("agent answered HTTP {status}")),
                ),
                (status, Ok(body)) => match Output::read(Fields(body)) {
                    Ok(mut out) => {
                        if status != 200 && out.error.is_none() {
                            out.error = Some(format!("agent answered HTTP {status}"));
                        }
                        out
                    }
                    Err(e) => Output::failed(format!("invalid response: {e}")),
                },
            };
            (r.rtt, output)
        }
    };
    HostRun {
        label: HostLabel::new(&t.name, ""),
        script: script.to_string(),
        reqid: reqid.to_string(),
        rtt,
        output,
    }
}

/// The per-host result of an async submission.
fn submit_result(
    t: &Target,
    script: &ScriptName,
    reqid: &ReqId,
    reply: Result<Reply, CallError>,
) -> HostSubmit {
    let (status, error, rtt) = match reply {
        Err(e) => (Submitted::Error, Some(e.to_string()), Rtt::default()),
        Ok(r) => {
            let error = agent_error(&r.body);
            match r.status {
                202 => (Submitted::Accepted, None, r.rtt),
                409 => (
                    Submitted::Busy,
                    Some(error.unwrap_or_else(|| "script already running".into())),
                    r.rtt,
                ),
                403 => (
                    Submitted::Error,
                    Some(format!("forbidden: {}", error.unwrap_or_default())),
                    r.rtt,
                ),
                _ => (
                    Submitted::Error,
                    Some(error.unwrap_or_else(|| "submit failed".into())),
                    r.rtt,
                ),
            }
        }
    };
    HostSubmit {
        host: t.name.clone(),
        script: script.to_string(),
        reqid: reqid.to_string(),
        rtt,
        status,
        error,
    }
}

/// Reads a 200 body with `parse`, or words why there is none.
pub(super) fn status_reply<T>(
    reply: Result<Reply, CallError>,
    parse: impl Fn(&Object) -> Result<T, crate::proto::FieldError>,
) -> (Rtt, Result<T, String>) {
    let r = match reply {
        Err(e) => return (Rtt::default(), Err(e.to_string())),
        Ok(r) => r,
    };
    let result = match (r.status, &r.body) {
        (200, Ok(body)) => parse(body).map_err(|e| format!("invalid response: {e}")),
        (403, b) => Err(format!("forbidden: {}", agent_error(b).unwrap_or_default())),
        (_, Err(e)) => Err(invalid_body(e)),
        (s, b) => Err(agent_error(b).unwrap_or_else(|| format!("agent answered HTTP {s}"))),
    };
    (r.rtt, result)
}

fn ping_result(t: &Target, reqid: &str, reply: Result<Reply, CallError>) -> HostPing {
    let (rtt, reply) = status_reply(reply, PingReply::from_json);
    let reported = reply.as_ref().map(|p| p.host.clone()).unwrap_or_default();
    HostPing {
        label: HostLabel::new(&t.name, &reported),
        rtt,
        reply: reply.map(|mut p| {
            p.reqid = reqid.to_string();
            p
        }),
    }
}

fn capabilities_result(t: &Target, reply: Result<Reply, CallError>) -> HostCapabilities {
    let (rtt, reply) = status_reply(reply, Capabilities::from_json);
    let reported = reply.as_ref().map(|c| c.host.clone()).unwrap_or_default();
    HostCapabilities {
        label: HostLabel::new(&t.name, &reported),
        rtt,
        reply,
    }
}
