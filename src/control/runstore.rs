//! The run store: `<state_dir>/runs/<reqid>.json` (mode 0640), written
//! atomically. API sync runs and every async run are recorded; async records
//! are refreshed from the agents (`GET /result/<reqid>`) when read.
//! Records older than 24 h (by mtime) are purged. A reqid is validated
//! before any path is built from it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::control::engine::Engine;
use crate::control::registry::{self, Registry};
use crate::fsx;
use crate::json::{self, Object, Value};

/// How long records are kept.
pub const RETENTION: Duration = Duration::from_secs(86_400);

/// Whether `reqid` may name a record (`^[A-Za-z0-9_-]{1,128}$`).
pub fn valid_reqid(reqid: &str) -> bool {
    (1..=128).contains(&reqid.len())
        && reqid
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// The run store directory.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

impl RunStore {
    /// A store rooted at `dir`.
    pub fn new(dir: &Path) -> RunStore {
        RunStore {
            dir: dir.to_path_buf(),
        }
    }

    /// Saves a record; `reqid` must be valid.
    pub fn save(&self, reqid: &str, record: &Object) -> io::Result<()> {
        if !valid_reqid(reqid) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid reqid"));
        }
        fsx::ensure_dir(&self.dir, 0o750)?;
        let bytes = json::to_string(&Value::Object(record.clone()));
        fsx::write_atomic(
            &self.dir.join(format!("{reqid}.json")),
            bytes.as_bytes(),
            0o640,
        )
    }

    /// Loads a record; `Ok(None)` when absent or the reqid is invalid.
    pub fn load(&self, reqid: &str) -> io::Result<Option<Object>> {
        if !valid_reqid(reqid) {
            return Ok(None);
        }
        match std::fs::read(self.dir.join(format!("{reqid}.json"))) {
            Ok(b) => json::parse_object(&b).map(Some).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "record is not a JSON object")
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes records older than [`RETENTION`].
    pub fn purge(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > RETENTION);
            if old && e.file_name().to_string_lossy().ends_with(".json") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Builds the record of an async submission from its per-host results.
pub fn async_record(
    reqid: &str,
    script: &str,
    results: &[Value],
    submitter: Option<Value>,
    now: i64,
) -> Object {
    let mut hosts = Object::new();
    for r in results {
        let Value::Object(r) = r else { continue };
        let mut h = Object::new();
        h.insert(
            "status".into(),
            json::str(json::get_str(r, "status").unwrap_or("error")),
        );
        if let Some(e) = json::get_str(r, "error") {
            h.insert("error".into(), json::str(e));
        }
        hosts.insert(
            json::get_str(r, "host").unwrap_or("").to_string(),
            Value::Object(h),
        );
    }
    let mut rec = Object::new();
    rec.insert("reqid".into(), json::str(reqid));
    rec.insert("script".into(), json::str(script));
    rec.insert("mode".into(), json::str("async"));
    rec.insert("hosts".into(), Value::Object(hosts));
    rec.insert("created".into(), json::int(now));
    if let Some(s) = submitter {
        rec.insert("submitter".into(), s);
    }
    recompute(&mut rec);
    rec
}

/// Builds the record of an API sync run.
pub fn sync_record(
    reqid: &str,
    script: &str,
    hosts: &[String],
    results: &[Value],
    submitter: Option<Value>,
    now: i64,
) -> Object {
    let mut rec = Object::new();
    rec.insert("reqid".into(), json::str(reqid));
    rec.insert("script".into(), json::str(script));
    rec.insert("mode".into(), json::str("sync"));
    rec.insert("hosts".into(), json::str_array(hosts));
    rec.insert(
        "results".into(),
        Value::Array(results.iter().cloned().collect()),
    );
    rec.insert("completed".into(), json::int(now));
    rec.insert("complete".into(), Value::Bool(true));
    if let Some(s) = submitter {
        rec.insert("submitter".into(), s);
    }
    rec
}

fn host_pending(h: &Value) -> bool {
    matches!(h, Value::Object(o) if matches!(json::get_str(o, "status"), Some("accepted" | "running")))
}

/// Recomputes `pending` (sorted) and `complete` of an async record.
pub fn recompute(rec: &mut Object) {
    let pending: Vec<String> = match rec.get("hosts") {
        Some(Value::Object(hosts)) => hosts
            .iter()
            .filter(|(_, h)| host_pending(h))
            .map(|(n, _)| n.clone())
            .collect(),
        _ => Vec::new(),
    };
    rec.insert("complete".into(), Value::Bool(pending.is_empty()));
    rec.insert("pending".into(), json::str_array(&pending));
}

/// Whether a record is an async one.
pub fn is_async(rec: &Object) -> bool {
    json::get_str(rec, "mode") == Some("async")
}

/// Fetches results for every pending host of an async record and updates it
/// in place: `done` with exit/stdout/stderr, `running`, `expired` (the agent
/// no longer knows the reqid), or unchanged with `fetch_error`.
pub async fn refresh(engine: &Arc<Engine>, registry: &Registry, reqid: &str, rec: &mut Object) {
    let Some(Value::Object(hosts)) = rec.get("hosts").cloned() else {
        return;
    };
    let pending: Vec<String> = hosts
        .iter()
        .filter(|(_, h)| host_pending(h))
        .map(|(n, _)| n.clone())
        .collect();
    if pending.is_empty() {
        return;
    }
    let mut updated = hosts.clone();
    let mut targets = Vec::new();
    for name in &pending {
        match registry::resolve(registry, std::slice::from_ref(name), None) {
            Ok(mut t) => targets.append(&mut t),
            Err(_) => {
                let mut h = Object::new();
                h.insert("status".into(), json::str("error"));
                h.insert("error".into(), json::str("agent is no longer registered"));
                updated.insert(name.clone(), Value::Object(h));
            }
        }
    }
    let path = format!("/result/{reqid}");
    let fetched = engine
        .fan_out(&targets, move |eng, t| {
            let path = path.clone();
            async move {
                let reply = eng.call(&t, "GET", &path, None).await;
                json::object([("host", json::str(&t.name)), ("reply", reply_value(reply))])
            }
        })
        .await;
    for f in fetched {
        let Value::Object(f) = f else { continue };
        let name = json::get_str(&f, "host").unwrap_or("").to_string();
        let Some(Value::Object(prev)) = updated.get(&name).cloned() else {
            continue;
        };
        let next = match f.get("reply") {
            Some(Value::Object(r)) => merge_host(prev, r),
            _ => prev,
        };
        updated.insert(name, Value::Object(next));
    }
    rec.insert("hosts".into(), Value::Object(updated));
    recompute(rec);
}

fn reply_value(reply: Result<crate::control::engine::Reply, String>) -> Value {
    match reply {
        Err(e) => json::object([("error", json::str(e))]),
        Ok(r) => {
            let mut o = Object::new();
            o.insert("status_code".into(), json::int(r.status as i64));
            if let Some(b) = r.body {
                o.insert("body".into(), Value::Object(b));
            }
            Value::Object(o)
        }
    }
}

fn merge_host(mut prev: Object, r: &Object) -> Object {
    if let Some(e) = json::get_str(r, "error") {
        prev.insert("fetch_error".into(), json::str(e));
        return prev;
    }
    let code = json::get_i64(r, "status_code").unwrap_or(0);
    let body = match r.get("body") {
        Some(Value::Object(b)) => b.clone(),
        _ => Object::new(),
    };
    let mut h = Object::new();
    match (code, json::get_str(&body, "status")) {
        (404, _) => {
            h.insert("status".into(), json::str("expired"));
        }
        (200, Some("done")) => {
            let lost = json::truthy(&body, "lost");
            h.insert(
                "status".into(),
                json::str(if lost { "lost" } else { "done" }),
            );
            for k in [
                "exit",
                "stdout",
                "stderr",
                "stdout_truncated",
                "stderr_truncated",
                "error",
                "timed_out",
                "signal",
            ] {
                if let Some(v) = body.get(k) {
                    h.insert(k.into(), v.clone());
                }
            }
        }
        (200, Some("running")) => {
            h.insert("status".into(), json::str("running"));
        }
        (c, _) => {
            prev.insert(
                "fetch_error".into(),
                json::str(format!("unexpected answer (HTTP {c})")),
            );
            return prev;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reqids_are_checked_before_paths() {
        for bad in ["", "../x", "a/b", &"a".repeat(10_000), "a.json"] {
            assert!(!valid_reqid(bad), "{bad}");
        }
        assert!(valid_reqid("0123abcd_-X"));
        let store = RunStore::new(Path::new("/nonexistent-dir"));
        assert!(store.load("../../etc/passwd").unwrap().is_none());
    }

    #[test]
    fn pending_and_complete_follow_host_states() {
        let results = vec![
            json::object([("host", json::str("b")), ("status", json::str("accepted"))]),
            json::object([
                ("host", json::str("a")),
                ("status", json::str("busy")),
                ("error", json::str("x")),
            ]),
        ];
        let mut rec = async_record("r1", "s", &results, None, 0);
        assert_eq!(json::to_string(rec.get("pending").unwrap()), r#"["b"]"#);
        assert!(matches!(rec.get("complete"), Some(Value::Bool(false))));
        let done = json::object([
            ("status_code", json::int(200)),
            (
                "body",
                json::object([("status", json::str("done")), ("exit", json::int(0))]),
            ),
        ]);
        let Value::Object(done) = done else {
            unreachable!()
        };
        let Some(Value::Object(hosts)) = rec.get("hosts").cloned() else {
            unreachable!()
        };
        let Some(Value::Object(b)) = hosts.get("b").cloned() else {
            unreachable!()
        };
        let mut hosts = hosts;
        hosts.insert("b".into(), Value::Object(merge_host(b, &done)));
        rec.insert("hosts".into(), Value::Object(hosts));
        recompute(&mut rec);
        assert!(matches!(rec.get("complete"), Some(Value::Bool(true))));
    }
}
