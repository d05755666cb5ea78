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
use crate::json::{self, Object, Value};
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
pub fn pending(dir: &Path) -> Vec<Object> {
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

/// The string field `k` of a queued request, or "" when absent.
pub fn s<'a>(o: &'a Object, k: &str) -> &'a str {
    json::get_str(o, k).unwrap_or("")
}

/// Validates a pairing request and queues it; returns (id, hostname, code).
pub fn write_request(
    conf: &DispatcherConf,
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
    let dir = conf.pairing_dir();
    if pending(&dir).len() >= conf.pairing_max_queue {
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
