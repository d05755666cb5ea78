//! The agent's connections: admission on the raw TCP accept, then per
//! connection the TLS handshake, the revocation check, the bounded request
//! read, routing, and the answer.
//!
//! Order of checks: `allowed_ips` before any TLS work, a slot among
//! `max_children` (a full table sheds its oldest unauthenticated connection,
//! see `net::slots`), the handshake under a deadline with a client
//! certificate chained to `ca`, the revocation list before a byte of request
//! is read, then the bounded read.
//!
//! A connection is established (never shed) once its handshake proves a
//! trusted, unrevoked serial. The rate limiter sees only what is known to
//! be unauthenticated: a failed handshake (probe and volume rules), a
//! stalled one, or a certificate with no trusted serial (volume); a
//! connection closed without a byte counts for nothing. A blocked IP is not
//! refused at accept (a trusted dispatcher may share it): its connections
//! get [`PROBATION_HANDSHAKE_TIMEOUT`] and are closed unless they prove a
//! trusted serial, so nothing an unauthenticated peer does locks the
//! dispatcher out.

use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use miniserde::json::Value;
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::Async;

use crate::agent::limits::{
    OVERLOAD_HANDSHAKE_TIMEOUT, PROBATION_HANDSHAKE_TIMEOUT, SHUTDOWN_GRACE,
};
use crate::agent::serve::routes::{route, Caller};
use crate::agent::serve::Agent;
use crate::agent::AgentError;
use crate::net::accept::{self, Incoming, Policy, Work};
use crate::net::http::{Conn, HttpError};
use crate::net::limits::Limits;
use crate::net::ratelimit::Reason;
use crate::net::server::{self, HandshakeError, ServerStream};
use crate::net::slots::{SlotHandle, SlotTable};
use crate::proto::json;
use crate::proto::ErrorReply;
use crate::{log, pki, proc, rt};

/// Accepts until SIGTERM/SIGINT (SIGHUP reloads); then kills the detached
/// jobs and closes their records, waits up to [`SHUTDOWN_GRACE`] for
/// connections in flight, and kills the process group of any script still
/// running, so nothing the agent started outlives it.
pub async fn run(
    agent: Arc<Agent>,
    listener: Async<std::net::TcpListener>,
) -> Result<(), AgentError> {
    let slots = SlotTable::new(agent.conf.max_children);
    let mut signals = async_signal::Signals::new([
        async_signal::Signal::Hup,
        async_signal::Signal::Term,
        async_signal::Signal::Int,
    ])
    .map_err(|e| AgentError::Failed(format!("cannot install signal handlers: {e}")))?;
    let recovering = agent.clone();
    smol::unblock(move || recovering.jobs.recover_lost()).await;
    // The stop future of the accept loop: it reloads on SIGHUP (off the
    // executor: the reload reads and parses files) while the loop goes on
    // accepting, and completes on SIGTERM/SIGINT.
    let signalled = async {
        while let Some(Ok(async_signal::Signal::Hup)) = signals.next().await {
            let reloading = agent.clone();
            smol::unblock(move || reloading.reload()).await;
        }
    };
    accept::serve(&listener, &slots, agent.clone(), signalled).await;
    log::info("stop", &[]);
    drop(listener);
    agent.jobs.shutdown().await;
    let _ = rt::timeout(Some(SHUTDOWN_GRACE), slots.drained()).await;
    let killed = proc::kill_all();
    if killed > 0 {
        log::warn("stop-kill", &[("GROUPS", &killed.to_string())]);
    }
    Ok(())
}

/// The accept loop's rules for the agent port.
impl Policy for Agent {
    fn admit(&self, peer: IpAddr) -> bool {
        admit(self, peer)
    }

    fn serve(self: Arc<Self>, conn: Incoming) -> Work {
        async move { handle(&self, conn.tcp, conn.peer, conn.slot).await }.boxed()
    }

    /// No room (every slot carries a trusted dispatcher's request): while
    /// the small overflow pool has room, finish the handshake and answer 503
    /// "overloaded", so the dispatcher can say why; beyond it, close at once.
    /// Logged either way (`max_children` bounds the live connections and the
    /// runs they carry).
    fn full(self: Arc<Self>, conn: Incoming) -> Option<Work> {
        log::warn(
            "overload",
            &[
                ("LIVE", &self.conf.max_children.to_string()),
                ("PEER", &conn.peer.to_string()),
            ],
        );
        let place = self.overflow.try_acquire_arc()?;
        Some(
            async move {
                overloaded(&self, conn.tcp).await;
                drop(place);
            }
            .boxed(),
        )
    }
}

/// The raw-TCP check: `allowed_ips`, as of the current snapshot. The rate
/// limiter is consulted once the connection has a slot (see the module
/// documentation).
fn admit(agent: &Agent, ip: IpAddr) -> bool {
    if let Some(nets) = &agent.snapshot().settings.allowed_ips {
        if !nets.iter().any(|n| n.contains(ip)) {
            log::warn("ip-block", &[("PEER", &ip.to_string())]);
            return false;
        }
    }
    true
}

/// Records an unauthenticated connection from `ip` (and, for a failed
/// handshake, a probe failure); logs a block it starts.
fn count_unauthenticated(agent: &Agent, ip: IpAddr, tls_failure: bool) {
    let now = Instant::now();
    let started: Option<Reason> = match agent.limiter.lock() {
        Ok(mut l) => {
            let probe = if tls_failure {
                l.failure(ip, now)
            } else {
                None
            };
            let volume = l.unauthenticated(ip, now);
            probe.or(volume)
        }
        Err(_) => None,
    };
    if let Some(r) = started {
        log::warn(
            "rate-block",
            &[("PEER", &ip.to_string()), ("REASON", r.as_str())],
        );
    }
}

/// Serves one connection; its errors end it and are logged with the peer.
async fn handle(agent: &Agent, tcp: Async<TcpStream>, ip: IpAddr, slot: SlotHandle) {
    let snap = agent.snapshot();
    let peer = ip.to_string();
    let probation = agent
        .limiter
        .lock()
        .map(|mut l| l.blocked(ip, Instant::now()))
        .unwrap_or(false);
    let deadline = if probation {
        PROBATION_HANDSHAKE_TIMEOUT.min(agent.limits.handshake_timeout)
    } else {
        agent.limits.handshake_timeout
    };
    let stream = match server::handshake(snap.tls.clone(), tcp, deadline).await {
        Ok(s) => s,
        // A port check or health probe: nothing to log or count.
        Err(HandshakeError::Closed) => return,
        Err(e) => {
            // A blocked peer's failures are not logged one by one: the
            // block was logged when it began.
            if !probation {
                log::warn(
                    "tls-failure",
                    &[("PEER", &peer), ("REASON", &e.to_string())],
                );
            }
            count_unauthenticated(agent, ip, e.is_tls_failure());
            return;
        }
    };
    let serial = server::peer_certificate(&stream)
        .and_then(|der| pki::cert_info_der(&der).ok())
        .map(|i| i.serial)
        .unwrap_or_default();
    if snap.trusted.contains_key(&serial) && !snap.revoked.contains(&serial) {
        // A trusted dispatcher: its connection is never shed, and it is
        // never counted by the rate limiter.
        slot.establish();
    } else {
        count_unauthenticated(agent, ip, false);
        if probation {
            return;
        }
    }
    let mut conn = Conn::new(stream);
    let (status, body) = if snap.revoked.contains(&serial) {
        log::warn("revoked-cert", &[("PEER", &peer), ("SERIAL", &serial)]);
        let refusal = ErrorReply::Plain(403, "certificate revoked".into());
        (refusal.status(), refusal.to_json())
    } else {
        match conn.read_request(&agent.limits).await {
            Ok(req) => {
                let caller = Caller {
                    ip: peer.clone(),
                    serial,
                };
                route(agent, &snap, &caller, req).await.into_wire()
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

/// Answers a connection that found no slot: 503 with the agent's limit in
/// words, to a peer that completes the handshake with a certificate from our
/// CA (nothing is read, nothing is counted).
async fn overloaded(agent: &Agent, tcp: Async<TcpStream>) {
    let snap = agent.snapshot();
    let Ok(stream) = server::handshake(snap.tls.clone(), tcp, OVERLOAD_HANDSHAKE_TIMEOUT).await
    else {
        return;
    };
    let refusal = ErrorReply::Plain(
        503,
        format!(
            "agent overloaded: all {} connection slots (max_children) are busy - retry later",
            agent.conf.max_children
        ),
    );
    respond(
        &mut Conn::new(stream),
        refusal.status(),
        &refusal.to_json(),
        &agent.limits,
    )
    .await;
}

/// Writes the answer and closes, under the write deadline.
async fn respond(conn: &mut Conn<ServerStream>, status: u16, body: &Value, limits: &Limits) {
    conn.respond_and_close(status, json::to_string(body).as_bytes(), limits)
        .await;
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
    Some((
        e.status(),
        ErrorReply::Plain(e.status(), msg.into()).to_json(),
    ))
}
