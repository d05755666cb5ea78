//! Pairing queue files: `<reqid>.json` written by the listener,
//! `<reqid>.approved` / `<reqid>.denied` written by the operator's decision.
//!
//! Owns the file naming, request-id validation, the stale-request purge, the
//! pending list, and writing a validated request into the queue. Every
//! function here touches the file system synchronously: async callers run
//! them through `smol::unblock`.
//!
//! The listener holds `.queue.lock` (advisory `flock`, released when the
//! holder exits) while it counts the queue and writes a request, so
//! concurrent connections cannot overshoot the caps.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conf::DispatcherConf;
use crate::control::registry;
use crate::dispatcher::pairing::refusal::Refusal;
use crate::proto::json;
use crate::proto::{LookupBy, PairRequest, QueueEntry};
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
const LOCK_MODE: u32 = 0o660;

/// Whether `id` has the shape of a request id (1-64 hex digits).
pub fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_hexdigit())
}

/// `<dir>/<id>.<ext>`; `id` must have passed [`valid_request_id`] or come
/// from [`pki::random_hex`].
pub fn queue_file(dir: &Path, id: &str, ext: &str) -> PathBuf {
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
        .filter(|q| {
            valid_request_id(&q.id)
                && !queue_file(dir, &q.id, "approved").exists()
                && !queue_file(dir, &q.id, "denied").exists()
        })
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
    let req = json::parse_object(body)
        .ok()
        .and_then(|o| PairRequest::from_json(&o).ok())
        .ok_or(Refusal::InvalidRequest)?;
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
