//! The agent's connections: admission on the raw TCP accept, then per
//! connection the TLS handshake, the revocation check, the bounded request
//! read, routing, and the answer.
//!
//! Order of checks: `allowed_ips` and the rate limiter before any TLS work,
//! the `max_children` cap, the handshake under a deadline with a client
//! certificate chained to `ca`, the revocation list before a byte of request
//! is read, then the bounded read.

use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use miniserde::json::Value;
use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use smol::lock::Semaphore;
use smol::stream::StreamExt;
use smol::Async;

use crate::agent::limits::SHUTDOWN_GRACE;
use crate::agent::serve::routes::{route, Caller};
use crate::agent::serve::Agent;
use crate::agent::AgentError;
use crate::net::accept::{self, Incoming, Policy, Work};
use crate::net::http::{Conn, HttpError};
use crate::net::limits::Limits;
use crate::net::ratelimit::Decision;
use crate::net::server::{self, ServerStream};
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
    let max = agent.conf.max_children;
    let slots = Arc::new(Semaphore::new(max));
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
    let _ = rt::timeout(Some(SHUTDOWN_GRACE), async {
        let mut held = Vec::with_capacity(max);
        for _ in 0..max {
            held.push(slots.acquire_arc().await);
        }
    })
    .await;
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
        async move { handle(&self, conn.tcp, conn.peer).await }.boxed()
    }

    /// No room: close at once, logged (`max_children` bounds the live
    /// connections and the runs they carry).
    fn full(self: Arc<Self>, conn: Incoming) -> Option<Work> {
        log::warn(
            "overload",
            &[
                ("LIVE", &self.conf.max_children.to_string()),
                ("PEER", &conn.peer.to_string()),
            ],
        );
        None
    }
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

/// Serves one connection; its errors end it and are logged with the peer.
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

/// Writes the answer and closes, under the write deadline.
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
    Some((
        e.status(),
        ErrorReply::Plain(e.status(), msg.into()).to_json(),
    ))
}
