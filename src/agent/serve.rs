//! `cea serve`: the mTLS listener on the agent port.
//!
//! Order of checks per connection: `allowed_ips` and the rate limiter on the
//! raw TCP accept (before any TLS work), the `max_children` cap, the TLS
//! handshake under a deadline with a client certificate chained to `ca`, the
//! revocation list (before a byte of request is read), the bounded request
//! read, then routing, where `/run`, `/ping` and `/capabilities` require the
//! peer's exact serial in the trusted-dispatcher map.
//!
//! Reload (SIGHUP) builds a whole new [`Snapshot`] (allowlist, sidecars,
//! trusted map, revocations, TLS config from the certificate files) and swaps
//! it in one step; connections in flight keep the snapshot they started with.
//! A snapshot that fails to build is logged and the old one kept.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rustls::ServerConfig;
use smol::io::AsyncWriteExt;
use smol::lock::Semaphore;
use smol::stream::StreamExt;
use smol::Async;

use crate::agent::limits::SHUTDOWN_GRACE;
use crate::agent::runner::{self, Bounds, Context};
use crate::agent::schema::{self, Sidecar};
use crate::agent::{jobs, trust, AgentError};
use crate::conf::{self, AgentConf, Allowlist};
use crate::hook::{self, Hook, Verdict};
use crate::json::{self, Object, Value};
use crate::net::http::{Conn, HttpError, Request};
use crate::net::limits::Limits;
use crate::net::ratelimit::{Decision, RateLimiter, Rule, DEFAULT_CAPACITY};
use crate::net::server::{self, ServerStream};
use crate::net::tls::{self, Identity};
use crate::{log, pki, rt, time, VERSION};

/// Everything a request is judged against; replaced whole on reload.
pub struct Snapshot {
    /// The allowlist.
    pub allowlist: Allowlist,
    /// Schema sidecars by script name.
    pub sidecars: BTreeMap<String, Sidecar>,
    /// Trusted dispatcher serials -> ids.
    pub trusted: trust::TrustedMap,
    /// Revoked serials.
    pub revoked: BTreeSet<String>,
    /// The listener's TLS configuration (certificate files as last read).
    pub tls: Arc<ServerConfig>,
    /// The agent certificate's notAfter in OpenSSL text form.
    pub expiry: String,
}

/// The running agent.
pub struct Agent {
    /// agent.conf as loaded at start (not reloaded: port, tags, hook).
    pub conf: AgentConf,
    allowlist_path: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    limiter: Mutex<RateLimiter>,
    hook: Option<Hook>,
    limits: Limits,
    /// Detached jobs.
    pub jobs: jobs::Jobs,
}

impl Agent {
    fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reload(&self) {
        match load_snapshot(&self.conf, &self.allowlist_path) {
            Ok(snap) => {
                let scripts = snap.allowlist.scripts.len().to_string();
                let trusted = snap.trusted.len().to_string();
                match self.snapshot.write() {
                    Ok(mut s) => *s = Arc::new(snap),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(snap),
                }
                if let Ok(mut l) = self.limiter.lock() {
                    l.clear();
                }
                log::info("reload", &[("SCRIPTS", &scripts), ("TRUSTED", &trusted)]);
            }
            Err(e) => log::error(
                "reload",
                &[
                    ("ERROR", &e.to_string()),
                    ("RESULT", "kept previous configuration"),
                ],
            ),
        }
    }
}

/// Builds a snapshot from the files as they are now.
pub fn load_snapshot(conf: &AgentConf, allowlist_path: &Path) -> Result<Snapshot, AgentError> {
    let allowlist = conf::load_allowlist(allowlist_path, &conf.script_dirs)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    for w in &allowlist.warnings {
        log::warn("config-warn", &[("MSG", w)]);
    }
    let trusted = trust::load_trusted(&conf.trusted_dispatchers_path).map_err(|e| {
        AgentError::Config(format!("{}: {e}", conf.trusted_dispatchers_path.display()))
    })?;
    let revoked = trust::load_revoked(&conf.revoked_serials)
        .map_err(|e| AgentError::Config(format!("{}: {e}", conf.revoked_serials.display())))?;
    let (cert_pem, key_pem, ca_pem) = read_material(conf)?;
    let ca_der = pki::pem_certs(&ca_pem)
        .into_iter()
        .next()
        .ok_or_else(|| AgentError::Config(format!("{}: no certificate", conf.ca.display())))?;
    let identity =
        Identity::from_pem(&cert_pem, &key_pem).map_err(|e| AgentError::Config(e.to_string()))?;
    let tls =
        tls::mtls_server(&identity, &ca_der).map_err(|e| AgentError::Config(e.to_string()))?;
    let expiry = pki::cert_info_pem(&cert_pem)
        .map(|i| time::openssl_date(i.not_after))
        .unwrap_or_else(|_| "unknown".into());
    let sidecars = schema::load_all(&allowlist);
    Ok(Snapshot {
        allowlist,
        sidecars,
        trusted,
        revoked,
        tls,
        expiry,
    })
}

/// Reads cert, key and CA, naming the first missing file.
pub fn read_material(conf: &AgentConf) -> Result<(String, String, String), AgentError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AgentError::NotPaired(p.display().to_string())
            } else {
                AgentError::Config(format!("cannot read {}: {e}", p.display()))
            }
        })
    };
    Ok((read(&conf.cert)?, read(&conf.key)?, read(&conf.ca)?))
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn serve(conf: AgentConf, allowlist_path: PathBuf) -> Result<(), AgentError> {
    if let Some(sock) = &conf.executor_socket {
        return Err(AgentError::Config(format!(
            "executor_socket = {} is set, but this agent has no privileged executor; remove the key to run scripts as the agent user",
            sock.display()
        )));
    }
    let snap = load_snapshot(&conf, &allowlist_path)?;
    check_profiles(&conf, &snap.allowlist)?;
    let hook = conf.auth_hook.as_ref().map(|p| Hook {
        path: p.clone(),
        timeout: conf.auth_hook_timeout,
    });
    if let Some(h) = &hook {
        if !is_executable(&h.path) {
            return Err(AgentError::Config(format!(
                "auth_hook '{}' is not an executable file",
                h.path.display()
            )));
        }
    }
    let rule = |r: &Option<conf::RateRule>| {
        r.as_ref().map(|r| Rule {
            limit: r.limit,
            window: r.window,
            block: r.block,
        })
    };
    let limiter = RateLimiter::new(
        rule(&conf.rate_limit_volume),
        rule(&conf.rate_limit_probe),
        DEFAULT_CAPACITY,
    );
    let listener = server::bind(&conf.bind, conf.port).map_err(|e| {
        AgentError::Failed(format!("cannot listen on {}:{}: {e}", conf.bind, conf.port))
    })?;
    let addr = server::local_addr(&listener).map_err(|e| AgentError::Failed(e.to_string()))?;
    let jobs = jobs::Jobs::open(&conf.async_runs_dir).map_err(AgentError::Failed)?;
    let agent = Arc::new(Agent {
        allowlist_path,
        snapshot: RwLock::new(Arc::new(snap)),
        limiter: Mutex::new(limiter),
        hook,
        limits: Limits::default(),
        jobs,
        conf,
    });
    log::info(
        "start",
        &[("PORT", &addr.port().to_string()), ("VERSION", VERSION)],
    );
    println!("ctrl-exec-agent listening on {addr}");
    rt::block_on(run(agent, listener))
}

fn check_profiles(conf: &AgentConf, allowlist: &Allowlist) -> Result<(), AgentError> {
    let missing: Vec<String> = allowlist
        .scripts
        .values()
        .filter(|s| s.profile != "default" && !conf.profiles.contains_key(&s.profile))
        .map(|s| format!("{} -> {}", s.name, s.profile))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AgentError::Config(format!(
            "undefined profile(s) referenced: {}",
            missing.join(", ")
        )))
    }
}

async fn run(agent: Arc<Agent>, listener: Async<std::net::TcpListener>) -> Result<(), AgentError> {
    let max = agent.conf.max_children;
    let slots = Arc::new(Semaphore::new(max));
    let mut signals = async_signal::Signals::new([
        async_signal::Signal::Hup,
        async_signal::Signal::Term,
        async_signal::Signal::Int,
    ])
    .map_err(|e| AgentError::Failed(format!("cannot install signal handlers: {e}")))?;
    agent.jobs.recover_lost();
    loop {
        enum Event {
            Conn(std::io::Result<(Async<TcpStream>, std::net::SocketAddr)>),
            Signal(Option<std::io::Result<async_signal::Signal>>),
        }
        let event = smol::future::or(async { Event::Conn(listener.accept().await) }, async {
            Event::Signal(signals.next().await)
        })
        .await;
        match event {
            Event::Signal(Some(Ok(async_signal::Signal::Hup))) => agent.reload(),
            Event::Signal(_) => break,
            Event::Conn(Err(e)) => {
                log::warn("accept-fatal", &[("REASON", &e.to_string())]);
                rt::sleep(std::time::Duration::from_millis(100)).await;
            }
            Event::Conn(Ok((tcp, peer))) => {
                let ip = server::canonical_ip(peer.ip());
                if !admit(&agent, ip) {
                    continue;
                }
                let Some(slot) = slots.try_acquire_arc() else {
                    log::warn(
                        "overload",
                        &[("LIVE", &max.to_string()), ("PEER", &ip.to_string())],
                    );
                    continue;
                };
                let agent = agent.clone();
                rt::spawn(async move {
                    handle(&agent, tcp, ip).await;
                    drop(slot);
                })
                .detach();
            }
        }
    }
    log::info("stop", &[]);
    drop(listener);
    agent.jobs.shutdown();
    let _ = rt::timeout(Some(SHUTDOWN_GRACE), async {
        let mut held = Vec::with_capacity(max);
        for _ in 0..max {
            held.push(slots.acquire_arc().await);
        }
    })
    .await;
    Ok(())
}

/// The raw-TCP checks: `allowed_ips`, then the rate limiter.
fn admit(agent: &Agent, ip: IpAddr) -> bool {
    if let Some(nets) = &agent.conf.allowed_ips {
        if !nets.iter().any(|n| n.contains(ip)) {
            log::warn("ip-block", &[("PEER", &ip.to_string())]);
            return false;
        }
    }
    let decision = match agent.limiter.lock() {
        Ok(mut l) => l.connection(ip, Instant::now()),
        Err(_) => Decision::Allow,
    };
    match decision {
        Decision::Allow => true,
        Decision::Blocked => false,
        Decision::NewlyBlocked(r) => {
            log::warn(
                "rate-block",
                &[("PEER", &ip.to_string()), ("REASON", r.as_str())],
            );
            false
        }
    }
}

async fn handle(agent: &Agent, tcp: Async<TcpStream>, ip: IpAddr) {
    let snap = agent.snapshot();
    let peer = ip.to_string();
    let stream =
        match server::handshake(snap.tls.clone(), tcp, agent.limits.handshake_timeout).await {
            Ok(s) => s,
            Err(e) => {
                log::warn(
                    "tls-failure",
                    &[("PEER", &peer), ("REASON", &e.to_string())],
                );
                let blocked = agent
                    .limiter
                    .lock()
                    .ok()
                    .and_then(|mut l| l.failure(ip, Instant::now()));
                if let Some(r) = blocked {
                    log::warn("rate-block", &[("PEER", &peer), ("REASON", r.as_str())]);
                }
                return;
            }
        };
    let serial = server::peer_certificate(&stream)
        .and_then(|der| pki::cert_info_der(&der).ok())
        .map(|i| i.serial)
        .unwrap_or_default();
    if snap.trusted.contains_key(&serial) && !snap.revoked.contains(&serial) {
        // A trusted dispatcher's bursts (fan-outs, polling) must not trip the
        // volume rule, which exists for unauthenticated floods.
        if let Ok(mut l) = agent.limiter.lock() {
            l.forgive(ip);
        }
    }
    let mut conn = Conn::new(stream);
    let (status, body) = if snap.revoked.contains(&serial) {
        log::warn("revoked-cert", &[("PEER", &peer), ("SERIAL", &serial)]);
        (403, error_body("certificate revoked"))
    } else {
        match conn.read_request(&agent.limits).await {
            Ok(req) => {
                let caller = Caller {
                    ip: peer.clone(),
                    serial,
                };
                route(agent, &snap, &caller, req).await
            }
            Err(e) => match reply_for(&e) {
                Some(reply) => {
                    log::warn(
                        "bad-request",
                        &[("PEER", &peer), ("REASON", &e.to_string())],
                    );
                    reply
                }
                None => {
                    log::info(
                        "request-abandoned",
                        &[("PEER", &peer), ("REASON", &e.to_string())],
                    );
                    return;
                }
            },
        }
    };
    respond(&mut conn, status, &body, &agent.limits).await;
}

async fn respond(conn: &mut Conn<ServerStream>, status: u16, body: &Value, limits: &Limits) {
    let deadline = Instant::now() + limits.write_timeout;
    if conn
        .write_response(status, json::to_string(body).as_bytes(), deadline)
        .await
        .is_ok()
    {
        let _ = rt::deadline(deadline, conn.io.close()).await;
    }
}

/// The agent's wire answer to a request that could not be read; `None`
/// means the peer went away or stalled, and gets no answer.
fn reply_for(e: &HttpError) -> Option<(u16, Value)> {
    let msg = match e {
        HttpError::TimedOut(_) | HttpError::Closed | HttpError::Io(_) => return None,
        HttpError::Empty => "empty request",
        HttpError::TooManyHeaders | HttpError::HeadTooLarge => "too many headers",
        HttpError::BodyTooLarge { .. } => "request too large",
        HttpError::BadLength => "invalid content-length",
        HttpError::Unsupported(_) => "transfer-encoding not supported",
        HttpError::Malformed(_) => "malformed request",
    };
    Some((e.status(), error_body(msg)))
}

fn error_body(msg: &str) -> Value {
    json::object([("error", json::str(msg))])
}

/// The authenticated peer of one connection.
struct Caller {
    ip: String,
    serial: String,
}

async fn route(agent: &Agent, snap: &Snapshot, caller: &Caller, req: Request) -> (u16, Value) {
    let method = req.head.method.as_str();
    let target = req.head.target.as_str();
    match (method, target) {
        ("POST", "/run") | ("POST", "/ping") => {
            let body = json::parse_object(&req.body);
            let reqid = body
                .as_ref()
                .and_then(|o| json::get_str(o, "reqid"))
                .unwrap_or("")
                .to_string();
            let Some(dispatcher) = snap.trusted.get(&caller.serial) else {
                log::warn(
                    "serial-reject",
                    &[
                        ("PEER", &caller.ip),
                        ("PEER_SERIAL", &caller.serial),
                        ("REQID", or_none(&reqid)),
                    ],
                );
                return (
                    403,
                    json::object([
                        ("error", json::str("serial mismatch")),
                        ("status", json::str("forbidden")),
                    ]),
                );
            };
            if target == "/ping" {
                return ping(agent, snap, caller, dispatcher, &reqid);
            }
            match body {
                Some(obj) => run_script(agent, snap, caller, dispatcher, obj).await,
                None => (
                    200,
                    json::object([
                        ("exit", json::int(-1)),
                        ("error", json::str("invalid JSON")),
                    ]),
                ),
            }
        }
        ("GET", "/capabilities") => capabilities(agent, snap, caller).await,
        ("GET", path) if path.starts_with("/result/") => {
            let reqid = &path["/result/".len()..];
            if !jobs::valid_reqid(reqid) {
                return (404, error_body("not found"));
            }
            let Some(dispatcher) = snap.trusted.get(&caller.serial) else {
                log::warn(
                    "serial-reject",
                    &[
                        ("PEER", &caller.ip),
                        ("PEER_SERIAL", &caller.serial),
                        ("REQID", reqid),
                    ],
                );
                return (
                    403,
                    json::object([
                        ("error", json::str("serial mismatch")),
                        ("status", json::str("forbidden")),
                    ]),
                );
            };
            agent.jobs.result(dispatcher, reqid, &caller.ip)
        }
        _ => (404, error_body("not found")),
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}

fn ping(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    reqid: &str,
) -> (u16, Value) {
    log::info(
        "ping",
        &[
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("REQID", reqid),
        ],
    );
    (
        200,
        json::object([
            ("status", json::str("ok")),
            ("host", json::str(&agent.conf.hostname)),
            ("version", json::str(VERSION)),
            ("expiry", json::str(&snap.expiry)),
            ("staged", Value::Bool(agent.conf.cert_staging_path.exists())),
            ("reqid", json::str(reqid)),
        ]),
    )
}

async fn run_script(
    agent: &Agent,
    snap: &Snapshot,
    caller: &Caller,
    dispatcher: &str,
    body: Object,
) -> (u16, Value) {
    let reqid = json::get_str(&body, "reqid").unwrap_or("").to_string();
    let script = json::get_str(&body, "script").unwrap_or("").to_string();
    let refuse = |status: u16, error: &str| {
        (
            status,
            json::object([
                ("script", json::str(&script)),
                ("exit", json::int(-1)),
                ("error", json::str(error)),
                ("reqid", json::str(&reqid)),
            ]),
        )
    };
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(_)) => match json::get_str_array(&body, "args") {
            Ok(a) => a,
            Err(()) => return refuse(400, "args must be an array of strings"),
        },
        Some(_) => return refuse(200, "args must be an array"),
    };
    if args.iter().any(|a| a.contains('\0')) {
        return refuse(400, "args must not contain NUL bytes");
    }
    let entry = conf::valid_script_name(&script)
        .then(|| snap.allowlist.scripts.get(&script))
        .flatten()
        .filter(|e| {
            agent.conf.script_dirs.is_empty()
                || conf::within_script_dirs(&e.path, &agent.conf.script_dirs)
        });
    let Some(entry) = entry else {
        log::warn(
            "deny",
            &[("PEER", &caller.ip), ("REQID", &reqid), ("SCRIPT", &script)],
        );
        return refuse(200, "script not permitted");
    };
    let username = json::get_str(&body, "username").unwrap_or("").to_string();
    let token = json::get_str(&body, "token").unwrap_or("").to_string();
    if let Some(h) = &agent.hook {
        let request = hook::Request {
            action: "run".into(),
            script: script.clone(),
            hosts: Vec::new(),
            args: args.clone(),
            username: username.clone(),
            token: token.clone(),
            source_ip: caller.ip.clone(),
            dispatcher: dispatcher.to_string(),
            dispatcher_serial: caller.serial.clone(),
            reqid: reqid.clone(),
            submitter: None,
            ..Default::default()
        };
        if let Verdict::Deny { reason, .. } = hook::check(h, &request).await {
            log::warn(
                "deny",
                &[
                    ("PEER", &caller.ip),
                    ("REASON", &reason),
                    ("REQID", &reqid),
                    ("SCRIPT", &script),
                ],
            );
            return refuse(200, &format!("not authorised: {reason}"));
        }
    }
    let ctx = Context {
        script: script.clone(),
        args,
        reqid: reqid.clone(),
        username,
        token,
        peer_ip: caller.ip.clone(),
        dispatcher: dispatcher.to_string(),
    };
    let bounds = Bounds {
        stdin_timeout: agent.conf.stdin_timeout,
        run_timeout: entry.timeout.unwrap_or(agent.conf.script_timeout),
        max_output: agent.conf.max_output_bytes,
    };
    if json::truthy(&body, "async") {
        return agent.jobs.submit(entry.path.clone(), ctx, bounds);
    }
    let out = runner::run(&entry.path, &ctx, bounds).await;
    log::info(
        "run",
        &[
            ("DISPATCHER", dispatcher),
            ("EXIT", &out.exit.to_string()),
            ("PEER", &caller.ip),
            ("REQID", &reqid),
            ("SCRIPT", &script),
        ],
    );
    let mut reply: Object = out
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    reply.insert("script".into(), json::str(&script));
    reply.insert("reqid".into(), json::str(&reqid));
    (200, Value::Object(reply))
}

async fn capabilities(agent: &Agent, snap: &Snapshot, caller: &Caller) -> (u16, Value) {
    let Some(dispatcher) = snap.trusted.get(&caller.serial) else {
        let reason = if snap.trusted.is_empty() {
            "no trusted dispatchers stored"
        } else {
            "serial-mismatch"
        };
        log::warn(
            "capabilities-deny",
            &[
                ("PEER", &caller.ip),
                ("PEER_SERIAL", &caller.serial),
                ("REASON", reason),
            ],
        );
        return (403, error_body("forbidden"));
    };
    if let Some(h) = &agent.hook {
        let request = hook::Request {
            action: "discovery".into(),
            script: String::new(),
            hosts: Vec::new(),
            args: Vec::new(),
            username: String::new(),
            token: String::new(),
            source_ip: caller.ip.clone(),
            dispatcher: dispatcher.clone(),
            dispatcher_serial: caller.serial.clone(),
            reqid: String::new(),
            submitter: None,
            ..Default::default()
        };
        if let Verdict::Deny { reason, .. } = hook::check(h, &request).await {
            log::warn(
                "capabilities-deny",
                &[("PEER", &caller.ip), ("REASON", &reason)],
            );
            return (403, error_body("not authorised"));
        }
    }
    let scripts: Vec<Value> = snap
        .allowlist
        .scripts
        .values()
        .map(|s| {
            let mut o = Object::new();
            o.insert("name".into(), json::str(&s.name));
            o.insert("path".into(), json::str(s.path.display().to_string()));
            o.insert("executable".into(), Value::Bool(is_executable(&s.path)));
            o.insert("profile".into(), json::str(&s.profile));
            if let Some(sc) = snap.sidecars.get(&s.name) {
                o.insert("schema".into(), sc.schema.clone());
                o.insert("schema_version".into(), json::str(&sc.version));
            }
            Value::Object(o)
        })
        .collect();
    log::info(
        "capabilities",
        &[
            ("DISPATCHER", dispatcher),
            ("PEER", &caller.ip),
            ("SCRIPTS", &scripts.len().to_string()),
        ],
    );
    let tags: Object = agent
        .conf
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), json::str(v)))
        .collect();
    (
        200,
        json::object([
            ("status", json::str("ok")),
            ("host", json::str(&agent.conf.hostname)),
            ("version", json::str(VERSION)),
            ("scripts", Value::Array(scripts.into_iter().collect())),
            ("tags", Value::Object(tags)),
        ]),
    )
}

/// Whether `path` is a regular file this process may execute.
pub fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}
