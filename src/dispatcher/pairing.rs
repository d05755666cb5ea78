//! Pairing on the dispatcher: the listener (`pairing-mode`), the queue
//! (`list-requests`), and the operator's decisions (`approve`, `deny`).
//!
//! The listener and the decision commands are separate processes that meet
//! in the queue directory: the listener writes `<reqid>.json` and keeps the
//! agent's connection open; `approve` writes `<reqid>.approved` (the final
//! message) and the registry record; `deny` writes `<reqid>.denied`; the
//! listener polls for either, sends it, and cleans up. The listener bounds
//! everything an unauthenticated peer controls: per-IP rate, connections,
//! handshake and read deadlines, 32 headers, a 64 KiB body, the queue length.

use std::io::IsTerminal;
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::io::AsyncBufReadExt;
use smol::lock::Semaphore;
use smol::stream::StreamExt;
use smol::Async;

use crate::conf::DispatcherConf;
use crate::control::registry::{self, Registry};
use crate::dispatcher::{load_conf, Args, CliError};
use crate::json::{self, Object, Value};
use crate::net::http::{Conn, HttpError};
use crate::net::limits::Limits;
use crate::net::ratelimit::{Decision, RateLimiter, Rule, DEFAULT_CAPACITY};
use crate::net::server::{self, ServerStream};
use crate::net::tls::{self, Identity};
use crate::{fsx, log, pki, rt, time};

/// Default pairing port.
pub const DEFAULT_PAIRING_PORT: u16 = 7444;
/// Largest pairing request body (the original's 64 KiB).
pub const MAX_PAIRING_BODY_BYTES: usize = 65_536;
/// Concurrent pairing connections (each waits for the operator).
pub const MAX_PAIRING_CONNECTIONS: usize = 64;
/// How long a queued request waits for a decision before it is refused.
pub const REQUEST_TTL: Duration = Duration::from_secs(600);
/// How often a waiting connection looks for the decision.
pub const DECISION_POLL: Duration = Duration::from_millis(500);
/// How long `pairing-mode start`/`stop` wait for the background process.
pub const BACKGROUND_WAIT: Duration = Duration::from_secs(5);

/// Operator overrides given to `approve` and `edit-agent`.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--lookup-by`.
    pub lookup_by: Option<String>,
    /// `--agent-port`.
    pub port: Option<u16>,
    /// `--ip`.
    pub ip: Option<String>,
}

impl Overrides {
    /// Validates the flags.
    pub fn from_args(a: &Args) -> Result<Overrides, CliError> {
        let lookup_by = match a.lookup_by.as_deref() {
            None => None,
            Some(v @ ("ip" | "hostname")) => Some(v.to_string()),
            Some(_) => {
                return Err(CliError::Usage(
                    "--lookup-by must be 'ip' or 'hostname'".into(),
                ))
            }
        };
        let port = match a.agent_port.as_deref() {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(CliError::Usage(
                        "--agent-port must be a port number (1-65535)".into(),
                    ))
                }
            },
        };
        let ip = match a.ip.as_deref() {
            None | Some("") => a.ip.clone(),
            Some(ip) if ip.parse::<IpAddr>().is_ok() => Some(ip.to_string()),
            Some(_) => {
                return Err(CliError::Usage(
                    "--ip must be an IPv4 or IPv6 address".into(),
                ))
            }
        };
        Ok(Overrides {
            lookup_by,
            port,
            ip,
        })
    }
}

fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_hexdigit())
}

fn queue_file(dir: &Path, id: &str, ext: &str) -> PathBuf {
    dir.join(format!("{id}.{ext}"))
}

/// Deletes queued requests older than [`REQUEST_TTL`] that have no decision.
fn purge_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > REQUEST_TTL);
        let decided =
            queue_file(dir, id, "approved").exists() || queue_file(dir, id, "denied").exists();
        if old && !decided {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Pending requests, oldest first.
fn pending(dir: &Path) -> Vec<Object> {
    purge_stale(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Object> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            std::fs::read(e.path())
                .ok()
                .and_then(|b| json::parse_object(&b))
        })
        .filter(|o| {
            let id = json::get_str(o, "id").unwrap_or("");
            valid_request_id(id)
                && !queue_file(dir, id, "approved").exists()
                && !queue_file(dir, id, "denied").exists()
        })
        .collect();
    out.sort_by(|a, b| json::get_str(a, "received").cmp(&json::get_str(b, "received")));
    out
}

fn s<'a>(o: &'a Object, k: &str) -> &'a str {
    json::get_str(o, k).unwrap_or("")
}

/// `ced list-requests`.
pub fn list_requests(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let reqs = pending(&conf.pairing_dir());
    if reqs.is_empty() {
        println!("No pending pairing requests.");
        return Ok(0);
    }
    println!(
        "{:<16}  {:<24}  {:<16}  {:<28}  CODE",
        "ID", "HOSTNAME", "SOURCE IP", "REVERSE DNS"
    );
    println!("{}", "-".repeat(98));
    for r in &reqs {
        let src = if s(r, "source_ip").is_empty() {
            s(r, "ip")
        } else {
            s(r, "source_ip")
        };
        println!(
            "{:<16}  {:<24}  {:<16}  {:<28}  {}",
            s(r, "id"),
            s(r, "hostname"),
            src,
            "-",
            s(r, "code")
        );
    }
    println!();
    println!("Compare each CODE with the one the agent printed before approving.");
    Ok(0)
}

/// `ced approve <reqid>`.
pub fn approve(a: &Args) -> Result<u8, CliError> {
    let [id] = a.words.as_slice() else {
        return Err(CliError::Usage("Usage: ctrl-exec-dispatcher approve <reqid> [--lookup-by ip|hostname] [--ip <addr>] [--agent-port <n>]".into()));
    };
    let overrides = Overrides::from_args(a)?;
    let conf = load_conf(a)?;
    let (name, lookup_by, addr, port) = approve_request(&conf, id, &overrides)?;
    println!("Approved '{name}' ({id}). Cert delivered on next poll.");
    println!("  Registered:  {name}   lookup_by={lookup_by}   addr={addr}:{port}");
    Ok(0)
}

/// Signs a queued request and records the agent. Returns (name, lookup_by, address, port).
fn approve_request(
    conf: &DispatcherConf,
    id: &str,
    o: &Overrides,
) -> Result<(String, String, String, u16), CliError> {
    let dir = conf.pairing_dir();
    let missing = || CliError::Failed(format!("No pending request '{id}'"));
    if !valid_request_id(id) {
        return Err(missing());
    }
    let req = std::fs::read(queue_file(&dir, id, "json"))
        .ok()
        .and_then(|b| json::parse_object(&b))
        .ok_or_else(missing)?;
    let name = s(&req, "hostname").to_string();
    let csr = pki::check_csr(s(&req, "csr"), Some(&name))
        .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", p.display())))
    };
    let ca_key = read(&conf.ca_key_path())?;
    let ca_cert = read(&conf.ca_cert_path())?;
    let cert_pem = pki::sign_csr(&ca_cert, &ca_key, &csr, conf.cert_days)
        .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    let info = pki::cert_info_pem(&cert_pem).map_err(|e| CliError::Failed(e.to_string()))?;
    let dispatcher_serial = read(&conf.cert)
        .ok()
        .and_then(|pem| pki::cert_info_pem(&pem).ok())
        .map(|i| i.serial)
        .unwrap_or_default();
    if dispatcher_serial.is_empty() {
        eprintln!("WARNING: cannot read the dispatcher certificate serial from {}; the agent will reject every request as 'serial mismatch'. Run 'ctrl-exec-dispatcher setup-ctrl-exec'.", conf.cert.display());
    }
    let approved = json::object([
        ("status", json::str("approved")),
        ("cert", json::str(&cert_pem)),
        ("ca", json::str(&ca_cert)),
        ("nonce", json::str(s(&req, "nonce"))),
        ("dispatcher_serial", json::str(&dispatcher_serial)),
        ("dispatcher_id", json::str(&conf.dispatcher_id)),
    ]);
    let ip = o.ip.clone().unwrap_or_else(|| s(&req, "ip").to_string());
    // No operator flag and no agent hint: address the agent by name only when
    // the name resolves here; otherwise by the IP it paired from.
    let lookup_by = o
        .lookup_by
        .clone()
        .or_else(|| {
            json::get_str(&req, "lookup_by")
                .filter(|l| *l == "ip" || *l == "hostname")
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            if !ip.is_empty() && !resolves(&name) {
                "ip".into()
            } else {
                "hostname".into()
            }
        });
    let port = o
        .port
        .or_else(|| {
            json::get_i64(&req, "port")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
        })
        .unwrap_or(crate::proto::DEFAULT_AGENT_PORT);
    let now = time::iso8601(time::now());
    let record = crate::proto::AgentRecord {
        hostname: name.clone(),
        ip: ip.clone(),
        paired: now.clone(),
        expiry: time::openssl_date(info.not_after),
        reqid: id.to_string(),
        lookup_by: crate::proto::LookupBy::parse(&lookup_by).unwrap_or_default(),
        port,
        tags: Default::default(),
        dispatcher_serial: dispatcher_serial.clone(),
        serial_status: if dispatcher_serial.is_empty() {
            "unknown"
        } else {
            "current"
        }
        .into(),
        serial_broadcast: String::new(),
        serial_confirmed: if dispatcher_serial.is_empty() {
            String::new()
        } else {
            now
        },
        pubkey_sha256: info.spki_sha256.clone(),
    };
    Registry::new(&conf.registry_dir)
        .put(&record)
        .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    fsx::write_atomic(
        &queue_file(&dir, id, "approved"),
        json::to_string(&approved).as_bytes(),
        0o600,
    )
    .map_err(|e| CliError::Failed(format!("Approve failed: {e}")))?;
    log::info(
        "pair-approve",
        &[("AGENT", &name), ("REQID", id), ("SERIAL", &info.serial)],
    );
    let addr = if lookup_by == "ip" && !ip.is_empty() {
        ip
    } else {
        name.clone()
    };
    Ok((name, lookup_by, addr, port))
}

fn resolves(name: &str) -> bool {
    use std::net::ToSocketAddrs;
    (name, crate::proto::DEFAULT_AGENT_PORT)
        .to_socket_addrs()
        .map(|mut a| a.next().is_some())
        .unwrap_or(false)
}

/// `ced deny <reqid>`.
pub fn deny(a: &Args) -> Result<u8, CliError> {
    let [id] = a.words.as_slice() else {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher deny <reqid>".into(),
        ));
    };
    let conf = load_conf(a)?;
    deny_request(&conf, id)?;
    println!("Denied request '{id}'.");
    Ok(0)
}

fn deny_request(conf: &DispatcherConf, id: &str) -> Result<(), CliError> {
    let dir = conf.pairing_dir();
    if !valid_request_id(id) || !queue_file(&dir, id, "json").exists() {
        return Err(CliError::Failed(format!("No pending request '{id}'")));
    }
    let body = json::object([
        ("status", json::str("denied")),
        ("reason", json::str("rejected by operator")),
    ]);
    fsx::write_atomic(
        &queue_file(&dir, id, "denied"),
        json::to_string(&body).as_bytes(),
        0o600,
    )
    .map_err(|e| CliError::Failed(format!("Deny failed: {e}")))?;
    let _ = std::fs::remove_file(queue_file(&dir, id, "json"));
    log::info("pair-deny", &[("REQID", id)]);
    Ok(())
}

/// `ced pairing-mode [start|stop]`.
pub fn pairing_mode(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let timeout = match &a.timeout {
        None => conf.pairing_timeout,
        Some(t) => {
            let n: u64 = t.parse().map_err(|_| {
                CliError::Usage("Error: --timeout must be an integer number of seconds.".into())
            })?;
            if !(1..=600).contains(&n) {
                return Err(CliError::Usage(
                    "Error: --timeout must be between 1 and 600 seconds.".into(),
                ));
            }
            n
        }
    };
    let port = a.port.unwrap_or(DEFAULT_PAIRING_PORT);
    match a.words.first().map(String::as_str) {
        None if a.pairing_child => session(&conf, port, timeout, Mode::Background),
        None => session(
            &conf,
            port,
            timeout,
            if std::io::stdin().is_terminal() {
                Mode::Interactive
            } else {
                Mode::Quiet
            },
        ),
        Some("start") => start_background(a, &conf, port, timeout),
        Some("stop") => stop_background(&conf),
        Some(_) => Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher pairing-mode [start|stop] [--timeout <1-600>]".into(),
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Interactive,
    Quiet,
    Background,
}

fn read_pidfile(path: &Path) -> Option<(i32, u16)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let port = lines
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    Some((pid, port))
}

fn alive(pid: i32) -> bool {
    // An exited child not yet reaped by its new parent (a slow or absent init
    // in a container) still answers kill(0); it no longer serves.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    !zombie
        && rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

fn start_background(
    a: &Args,
    conf: &DispatcherConf,
    port: u16,
    timeout: u64,
) -> Result<u8, CliError> {
    use std::os::unix::process::CommandExt;
    let pidfile = conf.pairing_pidfile();
    if let Some((pid, _)) = read_pidfile(&pidfile).filter(|(pid, _)| alive(*pid)) {
        println!("Pairing mode is already running in the background (PID {pid}).");
        println!("Stop it with: ctrl-exec-dispatcher pairing-mode stop");
        return Ok(1);
    }
    if !conf.cert.exists() || !conf.key.exists() {
        return Err(CliError::Failed(format!(
            "Cannot start pairing mode: the dispatcher certificate is missing: {}\nRun 'ctrl-exec-dispatcher setup-ctrl-exec' first.",
            conf.cert.display()
        )));
    }
    let _ = std::fs::remove_file(&pidfile);
    let exe = std::env::current_exe().map_err(|e| CliError::Failed(e.to_string()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("ctrl-exec-dispatcher")
        .arg("pairing-mode")
        .arg("--pairing-child")
        .arg("--config")
        .arg(&a.config)
        .arg("--port")
        .arg(port.to_string())
        .arg("--timeout")
        .arg(timeout.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::Failed(format!("Pairing mode failed to start: {e}")))?;
    let deadline = Instant::now() + BACKGROUND_WAIT;
    while Instant::now() < deadline {
        if let Some((pid, bound)) = read_pidfile(&pidfile) {
            println!("Pairing mode started in the background on port {bound} (PID {pid}).");
            println!("It auto-stops after {timeout}s; stop sooner with:");
            println!("    ctrl-exec-dispatcher pairing-mode stop");
            return Ok(0);
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CliError::Failed(
        "Pairing mode failed to start - check the logs.".into(),
    ))
}

fn stop_background(conf: &DispatcherConf) -> Result<u8, CliError> {
    let pidfile = conf.pairing_pidfile();
    let Some((pid, _)) = read_pidfile(&pidfile) else {
        println!("No background pairing mode is running.");
        return Ok(0);
    };
    if !alive(pid) {
        let _ = std::fs::remove_file(&pidfile);
        println!("No background pairing mode is running (cleared stale pidfile).");
        return Ok(0);
    }
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + BACKGROUND_WAIT;
    while Instant::now() < deadline {
        if !alive(pid) {
            println!("Pairing mode stopped (was PID {pid}); pairing port closed.");
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("Sent stop to PID {pid} but it has not exited yet - check the logs.");
    Ok(1)
}

/// Shared state of one pairing session.
struct Session {
    conf: DispatcherConf,
    limiter: Mutex<RateLimiter>,
    limits: Limits,
    quiet: bool,
}

fn session(conf: &DispatcherConf, port: u16, timeout: u64, mode: Mode) -> Result<u8, CliError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            CliError::Failed(format!("Cannot start pairing mode: {}: {e}", p.display()))
        })
    };
    let ca_pem = read(&conf.ca_cert_path()).or_else(|_| read(&conf.ca))?;
    let ca_der = pki::pem_certs(&ca_pem)
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed("no CA certificate".into()))?;
    let identity = Identity::from_pem(&read(&conf.cert)?, &read(&conf.key)?)
        .map_err(|e| CliError::Failed(format!("Cannot start pairing mode: {e}")))?
        .with_extra(ca_der.clone());
    let tls_config = tls::plain_server(&identity).map_err(|e| CliError::Failed(e.to_string()))?;
    let dir = conf.pairing_dir();
    fsx::ensure_dir(&dir, 0o770)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let listener = server::bind(&conf.pairing_bind, port)
        .map_err(|e| CliError::Failed(format!("Cannot listen on port {port}: {e}")))?;
    let bound = server::local_addr(&listener)
        .map_err(|e| CliError::Failed(e.to_string()))?
        .port();
    let pidfile = conf.pairing_pidfile();
    if mode == Mode::Background {
        fsx::write_atomic(
            &pidfile,
            format!("{}\n{bound}\n", std::process::id()).as_bytes(),
            0o644,
        )
        .map_err(|e| CliError::Failed(e.to_string()))?;
    }
    let rule = conf.pairing_rate_limit.as_ref().map(|r| Rule {
        limit: r.limit,
        window: r.window,
        block: r.block,
    });
    let limits = Limits {
        max_body_bytes: MAX_PAIRING_BODY_BYTES,
        ..Limits::default()
    };
    let state = Arc::new(Session {
        conf: conf.clone(),
        limiter: Mutex::new(RateLimiter::new(rule, None, DEFAULT_CAPACITY)),
        limits,
        quiet: mode == Mode::Background,
    });
    log::info("pairing-mode-start", &[("PORT", &bound.to_string())]);
    if mode != Mode::Background {
        let how = if mode == Mode::Interactive {
            "Ctrl-C or 'quit' to stop."
        } else {
            "Ctrl-C to stop."
        };
        println!("Pairing mode active on port {bound} (auto-stops in {timeout}s). {how}");
        println!("CA fingerprint: sha256:{}", pki::sha256_hex(&ca_der));
        if mode == Mode::Interactive {
            println!("Waiting for pairing requests...");
        } else {
            println!("Use 'ctrl-exec-dispatcher list-requests' to see pending requests.");
        }
    }
    let outcome = rt::block_on(run_session(
        state,
        listener,
        tls_config,
        Duration::from_secs(timeout),
        mode,
    ));
    if mode == Mode::Background {
        let _ = std::fs::remove_file(&pidfile);
    }
    match outcome {
        End::TimedOut => {
            log::info("pairing-mode-timeout", &[]);
            if mode != Mode::Background {
                println!("Pairing mode timed out after {timeout}s. Stopped.");
            }
        }
        End::Stopped => {
            log::info("pairing-mode-stop", &[]);
            if mode != Mode::Background {
                println!("Pairing mode stopped.");
            }
        }
    }
    Ok(0)
}

enum End {
    TimedOut,
    Stopped,
}

async fn run_session(
    state: Arc<Session>,
    listener: Async<std::net::TcpListener>,
    tls_config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    mode: Mode,
) -> End {
    let slots = Arc::new(Semaphore::new(MAX_PAIRING_CONNECTIONS));
    let accept = {
        let state = state.clone();
        async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let ip = server::canonical_ip(peer.ip());
                let decision = state
                    .limiter
                    .lock()
                    .map(|mut l| l.connection(ip, Instant::now()))
                    .unwrap_or(Decision::Allow);
                match decision {
                    Decision::Allow => {}
                    Decision::Blocked => continue,
                    Decision::NewlyBlocked(r) => {
                        log::warn(
                            "rate-block",
                            &[("PEER", &ip.to_string()), ("REASON", r.as_str())],
                        );
                        continue;
                    }
                }
                let Some(slot) = slots.try_acquire_arc() else {
                    continue;
                };
                let (state, cfg) = (state.clone(), tls_config.clone());
                rt::spawn(async move {
                    handle(&state, cfg, tcp, ip).await;
                    drop(slot);
                })
                .detach();
            }
        }
    };
    let signals = async {
        match async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) {
            Ok(mut s) => {
                s.next().await;
            }
            Err(_) => smol::future::pending::<()>().await,
        }
        End::Stopped
    };
    let console = async {
        if mode == Mode::Interactive {
            interactive(&state).await;
            End::Stopped
        } else {
            smol::future::pending().await
        }
    };
    let timer = async {
        rt::sleep(timeout).await;
        End::TimedOut
    };
    smol::future::or(
        accept,
        smol::future::or(signals, smol::future::or(console, timer)),
    )
    .await
}

async fn handle(
    state: &Session,
    cfg: Arc<rustls::ServerConfig>,
    tcp: Async<TcpStream>,
    ip: IpAddr,
) {
    let peer = ip.to_string();
    let stream = match server::handshake(cfg, tcp, state.limits.handshake_timeout).await {
        Ok(s) => s,
        Err(e) => {
            log::info(
                "tls-failure",
                &[("PEER", &peer), ("REASON", &e.to_string())],
            );
            return;
        }
    };
    let mut conn = Conn::new(stream);
    let req = match conn.read_request(&state.limits).await {
        Ok(r) => r,
        Err(e) => {
            let reason = match e {
                HttpError::BodyTooLarge { .. } => "request too large",
                HttpError::TimedOut(_) | HttpError::Closed | HttpError::Io(_) => return,
                _ => "invalid request",
            };
            log::warn("pair-reject", &[("IP", &peer), ("REASON", reason)]);
            reply(&mut conn, &state.limits, &error(reason)).await;
            return;
        }
    };
    let queued = match queue(state, &req.body, &peer) {
        Ok(q) => q,
        Err(reason) => {
            log::warn("pair-reject", &[("IP", &peer), ("REASON", reason)]);
            reply(&mut conn, &state.limits, &error(reason)).await;
            return;
        }
    };
    let (id, hostname, code) = queued;
    if !state.quiet {
        println!("Pairing request queued: {hostname} ({peer}) - ID: {id}  code: {code}");
    }
    if !reply(
        &mut conn,
        &state.limits,
        &json::object([("status", json::str("pending")), ("reqid", json::str(&id))]),
    )
    .await
    {
        return;
    }
    let dir = state.conf.pairing_dir();
    let deadline = Instant::now() + REQUEST_TTL;
    let decision = loop {
        if let Some(v) = ["approved", "denied"].iter().find_map(|ext| {
            std::fs::read(queue_file(&dir, &id, ext))
                .ok()
                .and_then(|b| json::parse(&b))
        }) {
            break v;
        }
        if Instant::now() >= deadline {
            log::info("pair-timeout", &[("REQID", &id)]);
            break json::object([
                ("status", json::str("denied")),
                ("reason", json::str("approval timeout")),
            ]);
        }
        rt::sleep(DECISION_POLL).await;
    };
    reply(&mut conn, &state.limits, &decision).await;
    for ext in ["approved", "denied", "json"] {
        let _ = std::fs::remove_file(queue_file(&dir, &id, ext));
    }
}

fn error(reason: &str) -> Value {
    json::object([
        ("status", json::str("error")),
        ("reason", json::str(reason)),
    ])
}

async fn reply(conn: &mut Conn<ServerStream>, limits: &Limits, body: &Value) -> bool {
    conn.write_response(
        200,
        json::to_string(body).as_bytes(),
        Instant::now() + limits.write_timeout,
    )
    .await
    .is_ok()
}

/// Validates a pairing request and queues it; returns (id, hostname, code).
fn queue(
    state: &Session,
    body: &[u8],
    peer: &str,
) -> Result<(String, String, String), &'static str> {
    let req = json::parse_object(body).ok_or("invalid request")?;
    let hostname = json::get_str(&req, "hostname").unwrap_or("");
    let csr = json::get_str(&req, "csr").unwrap_or("");
    if hostname.is_empty() || csr.is_empty() {
        return Err("invalid request");
    }
    if !registry::valid_name(hostname) {
        return Err("invalid hostname");
    }
    let dir = state.conf.pairing_dir();
    if pending(&dir).len() >= state.conf.pairing_max_queue {
        return Err("pairing queue full");
    }
    let id = pki::random_hex(8);
    let code = pki::pairing_code(csr.as_bytes());
    let ip = json::get_str(&req, "ip")
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
        .unwrap_or(peer);
    let mut rec = Object::new();
    rec.insert("id".into(), json::str(&id));
    rec.insert("hostname".into(), json::str(hostname));
    rec.insert("ip".into(), json::str(ip));
    rec.insert("source_ip".into(), json::str(peer));
    rec.insert("csr".into(), json::str(csr));
    rec.insert(
        "nonce".into(),
        json::str(json::get_str(&req, "nonce").unwrap_or("")),
    );
    if let Some(lb) = json::get_str(&req, "lookup_by").filter(|l| *l == "ip" || *l == "hostname") {
        rec.insert("lookup_by".into(), json::str(lb));
    }
    if let Some(p) = json::get_i64(&req, "port").filter(|p| (1..=65535).contains(p)) {
        rec.insert("port".into(), json::int(p));
    }
    rec.insert("received".into(), json::str(time::iso8601(time::now())));
    rec.insert("code".into(), json::str(&code));
    rec.insert("reverse_dns".into(), json::str(""));
    rec.insert("reverse_confirmed".into(), json::int(0));
    fsx::write_atomic(
        &queue_file(&dir, &id, "json"),
        json::to_string(&Value::Object(rec)).as_bytes(),
        0o644,
    )
    .map_err(|_| "invalid request")?;
    log::info(
        "pair-request",
        &[
            ("AGENT", hostname),
            ("IP", peer),
            ("REQID", &id),
            ("STATUS", "pending"),
        ],
    );
    Ok((id, hostname.to_string(), code))
}

/// The interactive console: a/d/s/list/quit and aN/dN.
async fn interactive(state: &Session) {
    let stdin = smol::Unblock::new(std::io::stdin());
    let mut lines = smol::io::BufReader::new(stdin).lines();
    let dir = state.conf.pairing_dir();
    show(&dir);
    while let Some(Ok(line)) = lines.next().await {
        let cmd = line.trim().to_string();
        let reqs = pending(&dir);
        let pick = |n: &str| -> Option<Object> {
            if n.is_empty() {
                if reqs.len() == 1 {
                    reqs.first().cloned()
                } else {
                    None
                }
            } else {
                n.parse::<usize>()
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| reqs.get(i).cloned())
            }
        };
        match cmd.as_str() {
            "" => {}
            "q" | "quit" => return,
            "l" | "list" => show(&dir),
            "s" | "skip" => println!("Left pending."),
            c if c.starts_with(['a', 'A', 'd', 'D'])
                && c[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                let Some(r) = pick(&c[1..]) else {
                    println!("No such request. Commands: a/d/s/list/quit or a1/d1 for multiple.");
                    continue;
                };
                let id = s(&r, "id").to_string();
                if c.starts_with(['a', 'A']) {
                    match approve_request(&state.conf, &id, &Overrides::default()) {
                        Ok((name, lb, addr, port)) => println!("Approved '{name}' ({id}); registered lookup_by={lb} addr={addr}:{port}"),
                        Err(e) => println!("Approve failed: {e}"),
                    }
                } else {
                    match deny_request(&state.conf, &id) {
                        Ok(()) => println!("Denied request '{id}'."),
                        Err(e) => println!("Deny failed: {e}"),
                    }
                }
                println!("Waiting for next request... (Ctrl-C to exit pairing mode)");
            }
            other => println!(
                "Unknown command '{other}'. Commands: a/d/s/list/quit or a1/d1 for multiple."
            ),
        }
    }
}

fn show(dir: &Path) {
    let reqs = pending(dir);
    match reqs.len() {
        0 => println!("No pending pairing requests.\nWaiting... (Commands: list, quit)"),
        1 => {
            let r = &reqs[0];
            println!(
                "Pairing request from {} ({}) - ID: {}",
                s(r, "hostname"),
                s(r, "ip"),
                s(r, "id")
            );
            println!(
                "  Code:     {}   (verify this matches the agent display)",
                s(r, "code")
            );
            println!("  Received: {}", s(r, "received"));
            println!(
                "  Source IP:     {}   (as this dispatcher saw the connection)",
                s(r, "source_ip")
            );
            println!("Accept, Deny, or Skip? [a/d/s]: ");
        }
        n => {
            println!("{n} pending pairing requests:");
            for (i, r) in reqs.iter().enumerate() {
                println!(
                    "  [{}] {:<30}  {:<16}  code: {}  {}",
                    i + 1,
                    s(r, "hostname"),
                    s(r, "ip"),
                    s(r, "code"),
                    s(r, "received")
                );
            }
            println!("Command (a1/d1/a2/d2/list/quit): ");
        }
    }
}
