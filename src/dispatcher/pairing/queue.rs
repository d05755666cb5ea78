//! Pairing queue files: `<reqid>.json` written by the listener,
//! `<reqid>.approved` / `<reqid>.denied` written by the operator's decision.
//!
//! Owns the file naming, request-id validation, the stale-request purge, the
//! pending list, writing a validated request into the queue, and the
//! per-request lock that makes a decision exclusive. Every function here
//! touches the file system synchronously: async callers run them through
//! `smol::unblock`.
//!
//! Locks (advisory `flock`, released when the holder exits):
//!
//! - `.queue.lock`: held by the listener while it counts the queue and
//!   writes a request, so concurrent connections cannot overshoot the caps;
//! - `<reqid>.lock`: held by whoever acts on one request - `approve` and
//!   `deny` take it without waiting (a second operator is told the request
//!   is being decided), the listener waits for it before it delivers the
//!   decision or withdraws the request, so it never removes a request that
//!   is halfway through being signed.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conf::DispatcherConf;
use crate::control::registry;
use crate::dispatcher::pairing::refusal::Refusal;
use crate::proto::json;
use crate::proto::{LookupBy, PairDecision, PairRequest, QueueEntry};
use crate::{fsx, log, pki, time};

/// How long a queued request waits for a decision before it is refused.
pub const REQUEST_TTL: Duration = Duration::from_secs(600);

/// Requests one source IP may have pending at once.
///
/// The queue is small (`pairing_max_queue`, default 10) and each entry is
/// held for as long as its connection stays open, up to [`REQUEST_TTL`]:
/// without a share, one host could fill it and keep every other agent from
/// pairing. Two lets a host retry while its first request is still listed;
/// hosts behind one NAT address pair two at a time.
pub const MAX_PENDING_PER_IP: usize = 2;

/// Permission bits of the lock files in the queue directory (the listener
/// and the operator's `ced` may run as different members of the group).
pub const LOCK_MODE: u32 = 0o660;

/// Why a request cannot be claimed for a decision.
#[derive(Debug)]
pub enum ClaimError {
    /// No such request in the queue.
    NotPending,
    /// Another `approve` or `deny` holds the request right now.
    Busy,
    /// The request already has a decision (`"approved"` or `"denied"`).
    Decided(&'static str),
    /// The lock file could not be opened or locked.
    Io(PathBuf, io::Error),
}

/// The exclusive right to decide one request: an `flock` on `<reqid>.lock`,
/// released when dropped (or when the holder dies).
#[derive(Debug)]
pub struct Claim {
    _lock: fsx::FileLock,
}

/// Whether `id` has the shape of a request id (1-64 hex digits).
pub fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_hexdigit())
}

/// `<dir>/<id>.<ext>`; `id` must have passed [`valid_request_id`] or come
/// from [`pki::random_hex`].
pub fn queue_file(dir: &Path, id: &str, ext: &str) -> PathBuf {
    dir.join(format!("{id}.{ext}"))
}

/// Deletes queued requests older than [`REQUEST_TTL`] that have no
/// decision, and lock files older than that whose request is gone.
fn purge_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = || {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > REQUEST_TTL)
        };
        if let Some(id) = name.strip_suffix(".lock").filter(|id| valid_request_id(id)) {
            if !queue_file(dir, id, "json").exists() && old() {
                let _ = std::fs::remove_file(e.path());
            }
            continue;
        }
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if old() && decided(dir, id).is_none() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Pending requests, oldest first.
pub fn pending(dir: &Path) -> Vec<QueueEntry> {
    purge_stale(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<QueueEntry> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            std::fs::read(e.path())
                .ok()
                .and_then(|b| json::parse_object(&b).ok())
                .map(|o| QueueEntry::from_json(&o))
        })
        .filter(|q| valid_request_id(&q.id) && decided(dir, &q.id).is_none())
        .collect();
    out.sort_by(|a, b| a.received.cmp(&b.received));
    out
}

/// Reads a queued request.
pub fn load(dir: &Path, id: &str) -> Option<QueueEntry> {
    if !valid_request_id(id) {
        return None;
    }
    std::fs::read(queue_file(dir, id, "json"))
        .ok()
        .and_then(|b| json::parse_object(&b).ok())
        .map(|o| QueueEntry::from_json(&o))
}

/// Which decision request `id` has on disk (`"approved"` or `"denied"`), if any.
pub fn decided(dir: &Path, id: &str) -> Option<&'static str> {
    ["approved", "denied"]
        .into_iter()
        .find(|ext| queue_file(dir, id, ext).exists())
}

/// The operator's decision on request `id`, once `approve` or `deny` wrote it.
pub fn decision(dir: &Path, id: &str) -> Option<PairDecision> {
    ["approved", "denied"].iter().find_map(|ext| {
        std::fs::read(queue_file(dir, id, ext))
            .ok()
            .and_then(|b| json::parse_object(&b).ok())
            .map(|o| PairDecision::from_json(&o))
    })
}

/// Claims request `id` for a decision without waiting: it must be queued,
/// undecided and not held by another `approve` or `deny`.
pub fn claim(dir: &Path, id: &str) -> Result<Claim, ClaimError> {
    if !valid_request_id(id) || !queue_file(dir, id, "json").exists() {
        return Err(ClaimError::NotPending);
    }
    let path = queue_file(dir, id, "lock");
    let lock = fsx::try_lock(&path, LOCK_MODE)
        .map_err(|e| ClaimError::Io(path.clone(), e))?
        .ok_or(ClaimError::Busy)?;
    // Looked at again under the lock: the listener may have withdrawn the
    // request, or another operator decided it, while we opened the file.
    if !queue_file(dir, id, "json").exists() {
        let _ = std::fs::remove_file(&path);
        return Err(ClaimError::NotPending);
    }
    if let Some(what) = decided(dir, id) {
        return Err(ClaimError::Decided(what));
    }
    Ok(Claim { _lock: lock })
}

/// Settles request `id` for the listener: waits for any `approve` or `deny`
/// in progress, then removes every file of the request and returns the
/// decision that was on disk, if any. After this, `approve` and `deny`
/// answer "no pending request".
pub fn settle(dir: &Path, id: &str) -> io::Result<Option<PairDecision>> {
    if !valid_request_id(id) {
        return Ok(None);
    }
    let path = queue_file(dir, id, "lock");
    let _lock = fsx::lock(&path, LOCK_MODE)?;
    let found = decision(dir, id);
    for ext in ["approved", "denied", "json", "lock"] {
        let _ = std::fs::remove_file(queue_file(dir, id, ext));
    }
    Ok(found)
}

/// Validates a pairing request and queues it; returns the queued entry.
///
/// Refused when the queue holds `pairing_max_queue` requests, or `peer`
/// already has [`MAX_PENDING_PER_IP`] of them. The count and the write run
/// under the queue lock, so concurrent connections cannot overshoot either.
pub fn write_request(
    conf: &DispatcherConf,
    body: &[u8],
    peer: &str,
) -> Result<QueueEntry, Refusal> {
    let req = PairRequest::read(body).map_err(|_| Refusal::InvalidRequest)?;
    if !registry::valid_name(&req.hostname) {
        return Err(Refusal::InvalidHostname);
    }
    let dir = conf.pairing_dir();
    let _queue = fsx::lock(&dir.join(".queue.lock"), LOCK_MODE).map_err(Refusal::Store)?;
    let queued = pending(&dir);
    if queued.len() >= conf.pairing_max_queue {
        return Err(Refusal::QueueFull {
            max: conf.pairing_max_queue,
        });
    }
    let mine = queued.iter().filter(|q| q.source_ip == peer).count();
    if mine >= MAX_PENDING_PER_IP {
        return Err(Refusal::QueueShare {
            pending: mine,
            share: MAX_PENDING_PER_IP,
        });
    }
    let ip = req
        .ip
        .as_deref()
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
        .unwrap_or(peer);
    let entry = QueueEntry {
        id: pki::random_hex(8),
        hostname: req.hostname.clone(),
        ip: ip.to_string(),
        source_ip: peer.to_string(),
        code: pki::pairing_code(req.csr.as_bytes()),
        csr: req.csr,
        nonce: req.nonce,
        lookup_by: req
            .lookup_by
            .map(LookupBy::as_str)
            .unwrap_or("")
            .to_string(),
        port: req.port,
        received: time::iso8601(time::now()),
        reverse_dns: String::new(),
        reverse_confirmed: false,
    };
    fsx::write_atomic(
        &queue_file(&dir, &entry.id, "json"),
        json::to_string(&entry.to_json()).as_bytes(),
        0o644,
    )
    .map_err(Refusal::Store)?;
    log::info(
        "pair-request",
        &[
            ("AGENT", &entry.hostname),
            ("IP", peer),
            ("REQID", &entry.id),
            ("STATUS", "pending"),
        ],
    );
    Ok(entry)
}
