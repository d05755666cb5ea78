//! Detached (async) runs: one job per script name, results kept on disk.
//!
//! Records live at `<async_runs_dir>/<dispatcher-id>/<reqid>.json` (mode
//! 0640), written atomically: first `running`, then `done`. A dispatcher can
//! only read its own records; asking for another's looks exactly like asking
//! for one that does not exist. Jobs run as children of the agent; when the
//! agent stops they are killed and their records closed as lost
//! (`status:"done"`, `exit:-1`, `lost:true`), and a record still `running`
//! when the agent starts (a crash) is closed the same way, so a result is
//! never silently dropped. Records older than 24 h are purged on submit.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use smol::Task;

use crate::agent::limits::RESULT_TTL;
use crate::agent::runner::{self, Bounds, Context};
use crate::proto::json;
use crate::proto::{DispatcherId, JobRecord, JobState, Output, ReqId, RunReply};
use crate::{fsx, log, rt, time};

const LOST_MESSAGE: &str = "job lost: the agent stopped before the script finished";

/// The job store and the set of scripts running detached.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Invariant: a script name is here exactly while its job task runs.
    running: Mutex<HashSet<String>>,
    tasks: Mutex<Vec<Task<()>>>,
}

/// Removes the script from the running set however the job task ends.
struct RunningGuard {
    inner: Arc<Inner>,
    script: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut r) = self.inner.running.lock() {
            r.remove(&self.script);
        }
    }
}

impl Jobs {
    /// Opens (creating if needed) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Jobs, String> {
        fsx::ensure_dir(dir, 0o750).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Jobs {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                running: Mutex::new(HashSet::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Starts `ctx.script` detached: 202 accepted, 409 busy, or a 200
    /// refusal in the original's shapes. The record is on disk before the
    /// job starts, so an accepted job is never without one.
    pub async fn submit(&self, path: PathBuf, ctx: Context, bounds: Bounds) -> RunReply {
        let refuse = |error: &str| RunReply::Refused {
            script: ctx.script.clone(),
            reqid: ctx.reqid.clone(),
            error: error.into(),
        };
        let (Some(reqid), Some(owner)) = (
            ReqId::parse(&ctx.reqid),
            DispatcherId::parse(&ctx.dispatcher),
        ) else {
            return refuse("async run requires a valid reqid");
        };
        let owner_dir = self.inner.dir.join(owner.as_str());
        let record_path = owner_dir.join(format!("{reqid}.json"));
        let known = {
            let (jobs, record_path) = (self.clone(), record_path.clone());
            smol::unblock(move || {
                jobs.purge_old();
                record_path.exists()
            })
            .await
        };
        if known {
            return refuse("reqid already used");
        }
        {
            let Ok(mut running) = self.inner.running.lock() else {
                return refuse("could not start async job");
            };
            if running.contains(&ctx.script) {
                log::warn(
                    "run-async-busy",
                    &[
                        ("PEER", &ctx.peer_ip),
                        ("REQID", &ctx.reqid),
                        ("SCRIPT", &ctx.script),
                    ],
                );
                return RunReply::Busy {
                    script: ctx.script.clone(),
                    reqid: ctx.reqid.clone(),
                };
            }
            running.insert(ctx.script.clone());
        }
        let guard = RunningGuard {
            inner: self.inner.clone(),
            script: ctx.script.clone(),
        };
        let mut record = JobRecord {
            reqid: ctx.reqid.clone(),
            state: JobState::Running,
            script: ctx.script.clone(),
            owner: ctx.dispatcher.clone(),
            started: time::iso8601(time::now()),
            finished: None,
            output: None,
            lost: false,
        };
        let written = {
            let (bytes, target) = (json::to_string(&record.to_json()), record_path.clone());
            smol::unblock(move || {
                fsx::ensure_dir(&owner_dir, 0o750)
                    .and_then(|_| fsx::write_atomic(&target, bytes.as_bytes(), 0o640))
            })
            .await
        };
        if let Err(e) = written {
            drop(guard);
            log::error(
                "async-store-fail",
                &[("ERROR", &e.to_string()), ("REQID", &ctx.reqid)],
            );
            return refuse("could not start async job");
        }
        log::info(
            "run-async",
            &[
                ("DISPATCHER", &ctx.dispatcher),
                ("PEER", &ctx.peer_ip),
                ("REQID", &ctx.reqid),
                ("SCRIPT", &ctx.script),
            ],
        );
        let reply = RunReply::Accepted {
            script: ctx.script.clone(),
            reqid: ctx.reqid.clone(),
        };
        let task = rt::spawn(async move {
            let _guard = guard;
            let output = runner::run(&path, &ctx, bounds).await;
            let exit = output.exit;
            record.state = JobState::Done;
            record.finished = Some(time::iso8601(time::now()));
            record.output = Some(output);
            let bytes = json::to_string(&record.to_json()).into_bytes();
            let res = smol::unblock(move || fsx::write_atomic(&record_path, &bytes, 0o640)).await;
            if let Err(e) = res {
                log::error(
                    "async-store-fail",
                    &[("ERROR", &e.to_string()), ("REQID", &ctx.reqid)],
                );
            }
            log::info(
                "run",
                &[
                    ("DISPATCHER", &ctx.dispatcher),
                    ("EXIT", &exit.to_string()),
                    ("MODE", "async"),
                    ("PEER", &ctx.peer_ip),
                    ("REQID", &ctx.reqid),
                    ("SCRIPT", &ctx.script),
                ],
            );
        });
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        reply
    }

    /// `GET /result/<reqid>` for dispatcher `owner`: the record, or `None`
    /// when it does not exist or belongs to another dispatcher (the two
    /// look alike to the caller).
    pub async fn result(&self, owner: &str, reqid: &ReqId, peer: &str) -> Option<JobRecord> {
        let owner_id = DispatcherId::parse(owner)?;
        let (jobs, id, owner) = (self.clone(), reqid.clone(), owner_id.clone());
        let (found, other) = smol::unblock(move || {
            let path = jobs
                .inner
                .dir
                .join(owner.as_str())
                .join(format!("{id}.json"));
            let found = std::fs::read(&path)
                .ok()
                .and_then(|b| json::parse_object(&b).ok())
                .and_then(|o| JobRecord::from_json(&o).ok());
            let other = found.is_none() && jobs.owned_by_other(owner.as_str(), id.as_str());
            (found, other)
        })
        .await;
        let (who, reqid) = (("DISPATCHER", owner_id.as_str()), ("REQID", reqid.as_str()));
        match (&found, other) {
            (Some(_), _) => log::info("result", &[who, ("PEER", peer), reqid]),
            (None, true) => log::warn(
                "result-deny",
                &[who, ("PEER", peer), ("REASON", "not-owner"), reqid],
            ),
            (None, false) => log::info("result-miss", &[who, ("PEER", peer), reqid]),
        }
        found
    }

    fn owned_by_other(&self, owner: &str, reqid: &str) -> bool {
        let Ok(dirs) = std::fs::read_dir(&self.inner.dir) else {
            return false;
        };
        dirs.flatten()
            .filter(|d| d.file_name().to_str() != Some(owner))
            .any(|d| d.path().join(format!("{reqid}.json")).exists())
    }

    /// Closes records left `running` by a previous agent process as lost.
    pub fn recover_lost(&self) {
        for path in self.records() {
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| json::parse_object(&b).ok())
                .and_then(|o| JobRecord::from_json(&o).ok());
            if let Some(rec) = record.filter(|r| r.state == JobState::Running) {
                close_lost(&path, rec);
            }
        }
    }

    /// Stops every running job (killing its process group) and closes its
    /// record as lost. Called when the agent stops.
    pub fn shutdown(&self) {
        let tasks = self
            .inner
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let had_running = tasks.iter().any(|t| !t.is_finished());
        drop(tasks);
        if had_running {
            self.recover_lost();
        }
    }

    fn records(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(owners) = std::fs::read_dir(&self.inner.dir) else {
            return out;
        };
        for owner in owners.flatten() {
            if !owner.path().is_dir() || owner.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Ok(files) = std::fs::read_dir(owner.path()) {
                out.extend(
                    files
                        .flatten()
                        .map(|f| f.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "json")),
                );
            }
        }
        out
    }

    fn purge_old(&self) {
        let now = SystemTime::now();
        for path in self.records() {
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > RESULT_TTL);
            if old {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn close_lost(path: &Path, mut rec: JobRecord) {
    rec.state = JobState::Done;
    rec.output = Some(Output {
        stderr: LOST_MESSAGE.into(),
        ..Output::failed(LOST_MESSAGE)
    });
    rec.lost = true;
    rec.finished = Some(time::iso8601(time::now()));
    let bytes = json::to_string(&rec.to_json());
    match fsx::write_atomic(path, bytes.as_bytes(), 0o640) {
        Ok(()) => log::warn("run-async-lost", &[("REQID", &rec.reqid)]),
        Err(e) => log::error(
            "async-store-fail",
            &[("ERROR", &e.to_string()), ("REQID", &rec.reqid)],
        ),
    }
}
