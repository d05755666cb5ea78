//! The pairing listener (`ced pairing-mode`, port 7444): TLS without client
//! certificates, one request per connection, the connection held open until
//! the operator decides or [`REQUEST_TTL`] passes.
//!
//! It bounds everything an unauthenticated peer controls: per-IP rate,
//! connections, handshake and read deadlines, 32 headers, a 64 KiB body, the
//! queue length and each IP's share of it. A connection holds one of
//! [`MAX_PAIRING_CONNECTIONS`] slots; until it has sent a whole request it
//! may be shed to make room for a newcomer (see `net::slots`), so stalled
//! peers cannot keep a real agent out. The rate limiter counts every
//! connection that sent a byte (a bare connect-and-close, a port check,
//! counts for nothing) and refuses a blocked IP at accept. A queued request
//! lives exactly as long as its connection: when the agent hangs up, the
//! request leaves the queue at once, and the requests still waiting when the
//! session ends leave with it. Refusals are answered with their HTTP status
//! (see `refusal`) and the original's JSON body. The session ends on
//! SIGTERM/SIGINT, `quit` on the console, or the pairing timeout.
//!
//! Alongside, the session looks after the dispatcher certificate
//! (`maintain::cert_upkeep`: rotate when due, announce, expire, retire) at
//! start and every `cert_check_interval`, as the original's background
//! loop did; the listener keeps presenting the certificate it started with
//! (agents only check that it comes from their CA).

use std::collections::HashSet;
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miniserde::json::Value;
use smol::future::FutureExt;
use smol::io::AsyncReadExt;
use smol::stream::StreamExt;
use smol::{Async, Timer};

use crate::conf::DispatcherConf;
use crate::control::dispatch::Dispatch;
use crate::dispatcher::maintain;
use crate::dispatcher::pairing::console;
use crate::dispatcher::pairing::queue::{decided, settle, write_request, REQUEST_TTL};
use crate::dispatcher::pairing::refusal::Refusal;
use crate::dispatcher::CliError;
use crate::net::accept::{self, Incoming, Policy, Work};
use crate::net::http::Conn;
use crate::net::limits::Limits;
use crate::net::ratelimit::{RateLimiter, Rule, DEFAULT_CAPACITY};
use crate::net::server::{self, HandshakeError, ServerStream};
use crate::net::slots::{SlotHandle, SlotTable};
use crate::net::tls::{self, Identity};
use crate::proto::json;
use crate::proto::{PairAck, PairDecision};
use crate::rt::FileWork;
use crate::{fsx, log, pki, rt};

/// Largest pairing request body (the original's 64 KiB).
pub const MAX_PAIRING_BODY_BYTES: usize = 65_536;
/// Concurrent pairing connections (each waits for the operator).
pub const MAX_PAIRING_CONNECTIONS: usize = 64;
/// How often a waiting connection looks for the decision (a closed
/// connection is noticed at once, between looks).
pub const DECISION_POLL: Duration = Duration::from_millis(500);
/// Bytes read at a time while a waiting connection is watched for its
/// close; the agent sends nothing then, so this is only a scratch buffer.
const DRAIN_CHUNK_BYTES: usize = 512;

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
    /// Requests whose connection this session holds; what is left when the
    /// session ends is withdrawn, so no request outlives its listener.
    held: Mutex<HashSet<String>>,
}

/// Runs one pairing session on `port` until stopped or `timeout` seconds pass.
pub fn session(conf: &DispatcherConf, port: u16, timeout: u64, mode: Mode) -> Result<u8, CliError> {
    if let Err(e) = crate::control::rotation::recover_locked(conf) {
        log::warn("cert-rotation-recover", &[("ERROR", &e)]);
    }
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
        held: Mutex::new(HashSet::new()),
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
        state.clone(),
        listener,
        Duration::from_secs(timeout),
        mode,
    ));
    // The connections still waiting end with this process: their requests
    // would otherwise hold queue places for REQUEST_TTL.
    let left: Vec<String> = state
        .held
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    for id in left {
        let _ = settle(&dir, &id);
        log::info(
            "pair-withdrawn",
            &[("REASON", "session-end"), ("REQID", &id)],
        );
    }
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
    let slots = SlotTable::new(MAX_PAIRING_CONNECTIONS);
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
    let upkeep = async {
        cert_upkeep_loop(&state.conf, mode).await;
        smol::future::pending::<End>().await
    };
    // Signals first: `or` prefers its first future. The upkeep never ends
    // the session; it stops with it.
    let stop = smol::future::or(
        signals,
        smol::future::or(console, smol::future::or(timer, upkeep)),
    );
    accept::serve(&listener, &slots, state.clone(), stop).await
}

/// Runs the certificate upkeep now and every `cert_check_interval`, logging
/// (and, on a terminal, printing) what it did. Without a usable dispatcher
/// identity it logs why and does nothing more.
async fn cert_upkeep_loop(conf: &DispatcherConf, mode: Mode) {
    let dispatch = match Dispatch::new(conf.clone(), FileWork::Offloaded) {
        Ok(d) => d,
        Err(e) => {
            log::warn("cert-check", &[("ERROR", &e.to_string())]);
            return;
        }
    };
    loop {
        let up = maintain::cert_upkeep(&dispatch, "", &[]).await;
        if let (Some(r), false) = (&up.rotated, mode == Mode::Background) {
            let pending = r.results.iter().filter(|h| h.reply.is_err()).count();
            let _ = crate::outln!(
                "Dispatcher certificate rotated: new serial {} ({} agent(s) updated, {pending} pending).",
                r.new_serial,
                r.results.len() - pending
            );
        }
        rt::sleep(conf.cert_check_interval).await;
    }
}

/// The accept loop's rules for the pairing port.
impl Policy for Session {
    /// A blocked IP is refused before the handshake.
    fn admit(&self, peer: IpAddr) -> bool {
        !self
            .limiter
            .lock()
            .map(|mut l| l.blocked(peer, Instant::now()))
            .unwrap_or(false)
    }

    fn serve(self: Arc<Self>, conn: Incoming) -> Work {
        async move { handle(self, conn.tcp, conn.peer, conn.slot).await }.boxed()
    }

    /// No room (every slot holds a whole request waiting for the
    /// operator): close at once (each may wait for minutes, so a queue
    /// would only grow).
    fn full(self: Arc<Self>, _conn: Incoming) -> Option<Work> {
        None
    }
}

/// Serves one pairing connection: handshake, read, queue, wait, answer.
/// Queue files are read and written off the executor.
async fn handle(state: Arc<Session>, tcp: Async<TcpStream>, ip: IpAddr, slot: SlotHandle) {
    let peer = ip.to_string();
    let cfg = state.tls.clone();
    let stream = match server::handshake(cfg, tcp, state.limits.handshake_timeout).await {
        Ok(s) => s,
        Err(HandshakeError::Closed) => return,
        Err(e) => {
            log::info(
                "tls-failure",
                &[("PEER", &peer), ("REASON", &e.to_string())],
            );
            state.count(ip);
            return;
        }
    };
    state.count(ip);
    let mut conn = Conn::new(stream);
    let req = match conn.read_request(&state.limits).await {
        Ok(r) => {
            slot.establish();
            r
        }
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
    let _held = Held::new(&state, &id);
    if !state.quiet {
        // The console's reader may be gone; the agent is still served.
        let _ = crate::outln!(
            "Pairing request queued: {} ({peer}) - ID: {id}  code: {}",
            entry.hostname,
            entry.code
        );
    }
    let dir = state.conf.pairing_dir();
    let ack = PairAck::Pending { reqid: id.clone() };
    let outcome = if reply(&mut conn, &state.limits, 200, &ack.to_json()).await {
        wait_for_decision(&mut conn.io, &dir, &id, Instant::now() + REQUEST_TTL).await
    } else {
        Wait::PeerGone
    };
    // Under the request's lock: an approval in progress finishes first, and
    // none can start once the files are gone.
    let settled = {
        let (dir, id) = (dir.clone(), id.clone());
        smol::unblock(move || settle(&dir, &id)).await
    };
    let found = settled.unwrap_or_else(|e| {
        log::error(
            "pair-settle-fail",
            &[
                ("REQID", &id),
                ("DIR", &dir.display().to_string()),
                ("ERROR", &e.to_string()),
            ],
        );
        None
    });
    if outcome == Wait::PeerGone {
        let decided = match &found {
            Some(PairDecision::Approved { .. }) => "approved",
            Some(PairDecision::Denied { .. }) => "denied",
            None => "none",
        };
        log::info(
            "pair-withdrawn",
            &[
                ("AGENT", &entry.hostname),
                ("DECISION", decided),
                ("IP", &peer),
                ("REQID", &id),
            ],
        );
        return;
    }
    let decision = found.unwrap_or_else(|| {
        log::info("pair-timeout", &[("REQID", &id)]);
        PairDecision::Denied {
            reason: "approval timeout".into(),
        }
    });
    reply(&mut conn, &state.limits, 200, &decision.to_json()).await;
}

/// How the wait for the operator ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `<reqid>.approved` or `<reqid>.denied` appeared.
    Decided,
    /// [`REQUEST_TTL`] passed without a decision.
    Expired,
    /// The agent closed the connection (or it failed): nobody is left to
    /// receive a decision.
    PeerGone,
}

/// Waits until request `id` is decided, `deadline` passes, or the peer goes
/// away. Between looks at the queue directory it reads the connection: the
/// agent sends nothing after its request, so the read only returns when the
/// peer closes (any stray bytes are discarded).
async fn wait_for_decision(io: &mut ServerStream, dir: &Path, id: &str, deadline: Instant) -> Wait {
    let mut scratch = [0u8; DRAIN_CHUNK_BYTES];
    loop {
        let found = {
            let (dir, id) = (dir.to_path_buf(), id.to_string());
            smol::unblock(move || decided(&dir, &id).is_some()).await
        };
        if found {
            return Wait::Decided;
        }
        let now = Instant::now();
        if now >= deadline {
            return Wait::Expired;
        }
        let next_look = now + DECISION_POLL.min(deadline - now);
        let gone = async {
            peer_closed(io, &mut scratch).await;
            true
        }
        .or(async {
            Timer::at(next_look).await;
            false
        })
        .await;
        if gone {
            return Wait::PeerGone;
        }
    }
}

impl Session {
    /// Records a connection from `ip` that sent bytes; logs a block it
    /// starts.
    fn count(&self, ip: IpAddr) {
        let started = self
            .limiter
            .lock()
            .ok()
            .and_then(|mut l| l.unauthenticated(ip, Instant::now()));
        if let Some(r) = started {
            log::warn(
                "rate-block",
                &[("PEER", &ip.to_string()), ("REASON", r.as_str())],
            );
        }
    }
}

/// Completes when the peer closes the connection or it fails; bytes the
/// peer sends meanwhile are read and dropped. Cancel-safe: dropping it
/// between reads loses nothing the listener needs.
async fn peer_closed(io: &mut ServerStream, scratch: &mut [u8]) {
    loop {
        match io.read(scratch).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A request this session holds a connection for; on drop it leaves the
/// session's list, whose leftovers are withdrawn when the session ends.
struct Held {
    state: Arc<Session>,
    id: String,
}

impl Held {
    fn new(state: &Arc<Session>, id: &str) -> Held {
        if let Ok(mut held) = state.held.lock() {
            held.insert(id.to_string());
        }
        Held {
            state: state.clone(),
            id: id.to_string(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut held) = self.state.held.lock() {
            held.remove(&self.id);
        }
    }
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
    // A refusal ends the connection: half-close and drain, so a peer still
    // sending (an oversized body) reads the answer instead of a reset.
    conn.respond_and_close(refusal.status(), json::to_string(&body).as_bytes(), limits)
        .await;
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
