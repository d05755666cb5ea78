//! Pairing queue files: `<reqid>.json` written by the listener,
//! `<reqid>.approved` / `<reqid>.denied` written by the operator's decision.
//!
//! Owns the file naming, request-id validation, the stale-request purge, the
//! pending list, and writing a validated request into the queue. Every
//! function here touches the file system synchronously: async callers run
//! them through `smol::unblock`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conf::DispatcherConf;
use crate::control::registry;
use crate::proto::json;
use crate::proto::{LookupBy, PairRequest, QueueEntry};
use crate::{fsx, log, pki, time};

/// How long a queued request waits for a decision before it is refused.
pub const REQUEST_TTL: Duration = Duration::from_secs(600);

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
pub fn write_request(
    conf: &DispatcherConf,
    body: &[u8],
    peer: &str,
) -> Result<QueueEntry, &'static str> {
    let req = PairRequest::read(body).map_err(|_| "invalid request")?;
    if !registry::valid_name(&req.hostname) {
        return Err("invalid hostname");
    }
    let dir = conf.pairing_dir();
    if pending(&dir).len() >= conf.pairing_max_queue {
        return Err("pairing queue full");
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
    .map_err(|_| "invalid request")?;
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
