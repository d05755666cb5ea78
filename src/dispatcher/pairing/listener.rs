//! The pairing listener (`ced pairing-mode`, port 7444): TLS without client
//! certificates, one request per connection, the connection held open until
//! the operator decides or [`REQUEST_TTL`] passes.
//!
//! It bounds everything an unauthenticated peer controls: per-IP rate,
//! connections, handshake and read deadlines, 32 headers, a 64 KiB body, the
//! queue length and each IP's share of it. Refusals are answered with their
//! HTTP status (see `refusal`) and the original's JSON body. The session ends on SIGTERM/SIGINT, `quit` on the console,
//! or the pairing timeout.

use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miniserde::json::Value;
use smol::future::FutureExt;
use smol::lock::Semaphore;
use smol::stream::StreamExt;
use smol::Async;

use crate::conf::DispatcherConf;
use crate::dispatcher::pairing::console;
use crate::dispatcher::pairing::queue::{queue_file, write_request, REQUEST_TTL};
use crate::dispatcher::pairing::refusal::Refusal;
use crate::dispatcher::CliError;
use crate::net::accept::{self, Incoming, Policy, Work};
use crate::net::http::Conn;
use crate::net::limits::Limits;
use crate::net::ratelimit::{Decision, RateLimiter, Rule, DEFAULT_CAPACITY};
use crate::net::server::{self, ServerStream};
use crate::net::tls::{self, Identity};
use crate::proto::json;
use crate::proto::{PairAck, PairDecision};
use crate::{fsx, log, pki, rt};

/// Largest pairing request body (the original's 64 KiB).
pub const MAX_PAIRING_BODY_BYTES: usize = 65_536;
/// Concurrent pairing connections (each waits for the operator).
pub const MAX_PAIRING_CONNECTIONS: usize = 64;
/// How often a waiting connection looks for the decision.
pub const DECISION_POLL: Duration = Duration::from_millis(500);

/// How the session talks to the operator.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Foreground on a terminal: banner, notices and the console.
    Interactive,
    /// Foreground without a terminal: banner and notices, no console.
    Quiet,
    /// The detached child of `pairing-mode start`: logs only, a pidfile.
    Background,
}

/// Shared state of one pairing session.
struct Session {
    conf: DispatcherConf,
    tls: Arc<rustls::ServerConfig>,
    limiter: Mutex<RateLimiter>,
    limits: Limits,
    quiet: bool,
}

/// Runs one pairing session on `port` until stopped or `timeout` seconds pass.
pub fn session(conf: &DispatcherConf, port: u16, timeout: u64, mode: Mode) -> Result<u8, CliError> {
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
        tls: tls_config,
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
        crate::outln!("Pairing mode active on port {bound} (auto-stops in {timeout}s). {how}")?;
        crate::outln!("CA fingerprint: sha256:{}", pki::sha256_hex(&ca_der))?;
        if mode == Mode::Interactive {
            crate::outln!("Waiting for pairing requests...")?;
        } else {
            crate::outln!("Use 'ctrl-exec-dispatcher list-requests' to see pending requests.")?;
        }
    }
    let outcome = rt::block_on(run_session(
        state,
        listener,
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
                crate::outln!("Pairing mode timed out after {timeout}s. Stopped.")?;
            }
        }
        End::Stopped => {
            log::info("pairing-mode-stop", &[]);
            if mode != Mode::Background {
                crate::outln!("Pairing mode stopped.")?;
            }
        }
    }
    Ok(0)
}

/// Why a session ended.
enum End {
    TimedOut,
    Stopped,
}

/// Runs the accept loop until a stop signal, `quit` on the console or the
/// timeout.
async fn run_session(
    state: Arc<Session>,
    listener: Async<std::net::TcpListener>,
    timeout: Duration,
    mode: Mode,
) -> End {
    let slots = Arc::new(Semaphore::new(MAX_PAIRING_CONNECTIONS));
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
            console::interactive(&state.conf).await;
            End::Stopped
        } else {
            smol::future::pending().await
        }
    };
    let timer = async {
        rt::sleep(timeout).await;
        End::TimedOut
    };
    // Signals first: `or` prefers its first future.
    let stop = smol::future::or(signals, smol::future::or(console, timer));
    accept::serve(&listener, &slots, state.clone(), stop).await
}

/// The accept loop's rules for the pairing port.
impl Policy for Session {
    /// The per-IP rate limit, before the handshake.
    fn admit(&self, peer: IpAddr) -> bool {
        let decision = self
            .limiter
            .lock()
            .map(|mut l| l.connection(peer, Instant::now()))
            .unwrap_or(Decision::Allow);
        match decision {
            Decision::Allow => true,
            Decision::Blocked => false,
            Decision::NewlyBlocked(r) => {
                log::warn(
                    "rate-block",
                    &[("PEER", &peer.to_string()), ("REASON", r.as_str())],
                );
                false
            }
        }
    }

    fn serve(self: Arc<Self>, conn: Incoming) -> Work {
        async move { handle(self, conn.tcp, conn.peer).await }.boxed()
    }

    /// No room: close at once (each connection may wait for the operator
    /// for minutes, so a queue would only grow).
    fn full(self: Arc<Self>, _conn: Incoming) -> Option<Work> {
        None
    }
}

/// Serves one pairing connection: handshake, read, queue, wait, answer.
/// Queue files are read and written off the executor.
async fn handle(state: Arc<Session>, tcp: Async<TcpStream>, ip: IpAddr) {
    let peer = ip.to_string();
    let cfg = state.tls.clone();
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
            if let Some(refusal) = Refusal::from_http(&e) {
                refuse(&mut conn, &state.limits, &peer, &refusal).await;
            }
            return;
        }
    };
    let entry = {
        let (state, peer) = (state.clone(), peer.clone());
        smol::unblock(move || write_request(&state.conf, &req.body, &peer)).await
    };
    let entry = match entry {
        Ok(q) => q,
        Err(refusal) => {
            refuse(&mut conn, &state.limits, &peer, &refusal).await;
            return;
        }
    };
    let id = entry.id.clone();
    if !state.quiet {
        // The console's reader may be gone; the agent is still served.
        let _ = crate::outln!(
            "Pairing request queued: {} ({peer}) - ID: {id}  code: {}",
            entry.hostname,
            entry.code
        );
    }
    let ack = PairAck::Pending { reqid: id.clone() };
    if !reply(&mut conn, &state.limits, 200, &ack.to_json()).await {
        return;
    }
    let dir = state.conf.pairing_dir();
    let deadline = Instant::now() + REQUEST_TTL;
    let decision = loop {
        let found = {
            let (dir, id) = (dir.clone(), id.clone());
            smol::unblock(move || read_decision(&dir, &id)).await
        };
        if let Some(v) = found {
            break v;
        }
        if Instant::now() >= deadline {
            log::info("pair-timeout", &[("REQID", &id)]);
            break PairDecision::Denied {
                reason: "approval timeout".into(),
            };
        }
        rt::sleep(DECISION_POLL).await;
    };
    reply(&mut conn, &state.limits, 200, &decision.to_json()).await;
    smol::unblock(move || {
        for ext in ["approved", "denied", "json"] {
            let _ = std::fs::remove_file(queue_file(&dir, &id, ext));
        }
    })
    .await;
}

/// The operator's decision on request `id`, once `approve` or `deny` wrote
/// it (blocking: reads the queue directory).
fn read_decision(dir: &Path, id: &str) -> Option<PairDecision> {
    ["approved", "denied"].iter().find_map(|ext| {
        std::fs::read(queue_file(dir, id, ext))
            .ok()
            .and_then(|b| json::parse_object(&b).ok())
            .map(|o| PairDecision::from_json(&o))
    })
}

/// Logs a refusal with its token and answers it with its status and the
/// pairing wire's error body.
async fn refuse(conn: &mut Conn<ServerStream>, limits: &Limits, peer: &str, refusal: &Refusal) {
    let detail = refusal.detail();
    let mut fields = vec![("IP", peer), ("REASON", refusal.token())];
    if let Some(d) = &detail {
        fields.push(("DETAIL", d));
    }
    log::warn("pair-reject", &fields);
    let body = PairAck::Error {
        reason: refusal.reason().into(),
    }
    .to_json();
    reply(conn, limits, refusal.status(), &body).await;
}

/// Writes one answer; false when the peer is gone.
async fn reply(conn: &mut Conn<ServerStream>, limits: &Limits, status: u16, body: &Value) -> bool {
    conn.write_response(
        status,
        json::to_string(body).as_bytes(),
        Instant::now() + limits.write_timeout,
    )
    .await
    .is_ok()
}
