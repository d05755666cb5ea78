//! The run store: `<state_dir>/runs/<reqid>.json` (mode 0640), written
//! atomically. API sync runs and every async run are recorded; async records
//! are refreshed from the agents (`GET /result/<reqid>`) when read.
//! Records older than 24 h (by mtime) are purged. Paths are built only from
//! a validated [`ReqId`].
//!
//! Every method does blocking file I/O; servers call them through
//! `smol::unblock`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use miniserde::json::Value;

use crate::control::engine::{CallError, Engine, Reply};
use crate::control::registry::{self, Registry};
use crate::fsx;
use crate::proto::json::{self, Fields};
use crate::proto::{AsyncRecord, HostState, HostStatus, JobRecord, ReqId, RunRecord};

/// How long records are kept.
pub const RETENTION: Duration = Duration::from_secs(86_400);

/// Least time between two purges by one process: `ced wait` and the API
/// read a record on every poll, and a directory scan per poll would cost
/// more than the poll itself on a store of many records.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The run store directory.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
    /// When this process last purged (shared by clones).
    purged: Arc<Mutex<Option<Instant>>>,
}

impl RunStore {
    /// A store rooted at `dir`.
    pub fn new(dir: &Path) -> RunStore {
        RunStore {
            dir: dir.to_path_buf(),
            purged: Arc::new(Mutex::new(None)),
        }
    }

    fn path(&self, reqid: &ReqId) -> PathBuf {
        self.dir.join(format!("{reqid}.json"))
    }

    /// Where the record of `reqid` is (or would be) kept, for messages; the
    /// directory itself when `reqid` is not a valid id.
    pub fn path_of(&self, reqid: &str) -> PathBuf {
        match ReqId::parse(reqid) {
            Some(id) => self.path(&id),
            None => self.dir.clone(),
        }
    }

    /// Saves a record.
    pub fn save(&self, record: &RunRecord) -> io::Result<()> {
        let reqid = ReqId::parse(record.reqid())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid reqid"))?;
        fsx::ensure_dir(&self.dir, 0o750)?;
        let bytes = json::to_string(&Value::Object(record.to_json(true)));
        fsx::write_atomic(&self.path(&reqid), bytes.as_bytes(), 0o640)
    }

    /// Loads a record; `Ok(None)` when absent.
    pub fn load(&self, reqid: &ReqId) -> io::Result<Option<RunRecord>> {
        let bytes = match std::fs::read(self.path(reqid)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let o = json::parse_object(&bytes).map_err(|e| invalid(format!("run record: {e}")))?;
        RunRecord::from_json(&o)
            .map(Some)
            .map_err(|e| invalid(format!("run record: {e}")))
    }

    /// Deletes records older than [`RETENTION`], at most once per
    /// [`PURGE_INTERVAL`] per process.
    pub fn purge(&self) {
        let now = Instant::now();
        if let Ok(mut last) = self.purged.lock() {
            if last.is_some_and(|t| now.duration_since(t) < PURGE_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
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

/// Fetches results for every pending host of an async record and updates it
/// in place: `done`/`lost` with the output, `running`, `expired` (the agent
/// no longer knows the reqid), or unchanged with `fetch_error`.
pub async fn refresh(engine: &Arc<Engine>, registry: &Registry, rec: &mut AsyncRecord) {
    let pending = rec.pending();
    if pending.is_empty() {
        return;
    }
    let resolved = {
        let registry = registry.clone();
        let names = pending.clone();
        smol::unblock(move || {
            names
                .iter()
                .map(|n| registry::resolve(&registry, std::slice::from_ref(n), None).ok())
                .collect::<Vec<_>>()
        })
        .await
    };
    let mut targets = Vec::new();
    for (name, found) in pending.iter().zip(resolved) {
        match found {
            Some(mut t) => targets.append(&mut t),
            None => {
                rec.hosts.insert(
                    name.clone(),
                    HostStatus::new(
                        HostState::Error,
                        Some("agent is no longer registered".into()),
                    ),
                );
            }
        }
    }
    let path = format!("/result/{}", rec.reqid);
    let fetched = engine
        .fan_out(&targets, move |eng, t| {
            let path = path.clone();
            async move {
                let reply = eng.call(&t, "GET", &path, None).await;
                (t.name, reply)
            }
        })
        .await;
    for (name, reply) in fetched {
        if let Some(prev) = rec.hosts.get_mut(&name) {
            *prev = merge_host(prev.clone(), reply);
        }
    }
}

fn merge_host(mut prev: HostStatus, reply: Result<Reply, CallError>) -> HostStatus {
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            prev.fetch_error = Some(e.to_string());
            return prev;
        }
    };
    if reply.status == 404 {
        return HostStatus::new(HostState::Expired, None);
    }
    let job = match (&reply.body, reply.status) {
        (Ok(body), 200) => JobRecord::from_json(body).map_err(|e| e.to_string()),
        (Ok(body), code) => Err(Fields(body)
            .str("error")
            .ok()
            .flatten()
            .map(str::to_string)
            .unwrap_or_else(|| format!("unexpected answer (HTTP {code})"))),
        (Err(e), _) => Err(format!("invalid answer: {e}")),
    };
    match job {
        Ok(job) => HostStatus::from_job(&job),
        Err(e) => {
            prev.fetch_error = Some(e);
            prev
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SyncRecord;

    #[test]
    fn purge_removes_old_records_at_most_once_per_interval() {
        let dir = crate::testutil::scratch_dir("runstore-purge");
        let old = |name: &str| {
            let path = dir.join(name);
            let f = std::fs::File::create(&path).unwrap();
            f.set_modified(SystemTime::now() - RETENTION - Duration::from_secs(60))
                .unwrap();
            path
        };
        let store = RunStore::new(&dir);
        let first = old("aaaa.json");
        store.purge();
        assert!(!first.exists());
        let second = old("bbbb.json");
        store.clone().purge();
        assert!(
            second.exists(),
            "a second purge within the interval scanned again"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_round_trip_through_the_store() {
        let dir = std::env::temp_dir().join(format!("runstore-{}", std::process::id()));
        let store = RunStore::new(&dir);
        let rec = RunRecord::Sync(SyncRecord {
            reqid: "abc123".into(),
            script: "s".into(),
            hosts: vec!["a".into()],
            results: Vec::new(),
            completed: 7,
            submitter: None,
        });
        store.save(&rec).unwrap();
        let id = ReqId::parse("abc123").unwrap();
        assert_eq!(store.load(&id).unwrap(), Some(rec));
        assert_eq!(store.load(&ReqId::parse("nope").unwrap()).unwrap(), None);
        std::fs::write(dir.join("bad.json"), b"[").unwrap();
        assert!(store.load(&ReqId::parse("bad").unwrap()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_with_an_invalid_reqid_is_not_saved() {
        let store = RunStore::new(Path::new("/nonexistent"));
        let rec = RunRecord::Sync(SyncRecord {
            reqid: "../x".into(),
            script: "s".into(),
            hosts: Vec::new(),
            results: Vec::new(),
            completed: 0,
            submitter: None,
        });
        assert_eq!(
            store.save(&rec).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
