//! Detached (async) runs: one job per script name, results kept on disk.
//!
//! Records live at `<async_runs_dir>/<dispatcher-id>/<reqid>.json` (mode
//! 0640), written atomically: first `running` (then again with the script's
//! process group), then `done`. A dispatcher can only read its own records;
//! asking for another's looks exactly like asking for one that does not
//! exist. Records older than 24 h are purged on submit.
//!
//! Jobs run as children of the agent and never outlive it:
//! - on SIGTERM ([`Jobs::shutdown`]) each running job's process group is
//!   killed and its record closed as lost (`status:"done"`, `exit:-1`,
//!   `lost:true`);
//! - on a crash the script itself gets `SIGKILL` from the kernel (see
//!   `crate::launch`), and at the next start ([`Jobs::recover_lost`]) a record
//!   still `running` has what is left of its process group killed, if that
//!   group still exists and is the recorded one, before it is closed as lost.
//!   A group that will not die keeps its script busy, so one job per script
//!   holds across restarts.
//!
//! Sync runs leave a mark too: while one runs, `<async_runs_dir>/.sync/<pgid>.json`
//! names its process group (see [`Jobs::mark_sync`]), so that what a sync
//! script forked is killed at the next start after a crash, as for a job.
//!
//! A finished record the disk refuses (a full state dir) is kept in memory,
//! served from there by [`Jobs::result`], and written again on a backing-off
//! timer until it lands; so nothing shows `running` for a job that ended.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use smol::Task;

use crate::agent::limits::{
    LEFTOVER_KILL_WAIT, MAX_UNWRITTEN_RECORDS, RECORD_RETRY_FIRST, RECORD_RETRY_MAX, RESULT_TTL,
};
use crate::agent::runner::{self, Bounds, Context};
use crate::proc::Group;
use crate::proto::json;
use crate::proto::{DispatcherId, JobRecord, JobState, Output, ReqId, RunReply};
use crate::{fsx, log, rt, time};

/// Subdirectory of the store holding the marks of running sync scripts
/// (dot-named: never taken for a dispatcher's records).
const SYNC_MARKS: &str = ".sync";

const LOST_MESSAGE: &str = "job lost: the agent stopped before the script finished";

/// The job store and the set of scripts running detached.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Invariant: a script name is here exactly while its job's script runs.
    running: Mutex<HashMap<String, Live>>,
    /// Groups of jobs from an earlier agent process that did not die when
    /// killed at start, by script name: that script is busy while one lives.
    leftovers: Mutex<HashMap<String, Group>>,
    /// Finished records the disk has not taken yet, by record path.
    /// Invariant: an entry here is newer than the file and is served first.
    unwritten: Mutex<HashMap<PathBuf, JobRecord>>,
    tasks: Mutex<Vec<Task<()>>>,
}

/// A running job, as shutdown needs it.
#[derive(Clone)]
struct Live {
    path: PathBuf,
    record: JobRecord,
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

/// The mark of a running sync script's process group; removed when dropped,
/// that is when the run ends however it ends.
pub struct SyncMark {
    path: PathBuf,
}

impl Drop for SyncMark {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Jobs {
    /// Opens (creating if needed) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Jobs, String> {
        for d in [dir.to_path_buf(), dir.join(SYNC_MARKS)] {
            fsx::ensure_dir(&d, 0o750)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        Ok(Jobs {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                running: Mutex::new(HashMap::new()),
                leftovers: Mutex::new(HashMap::new()),
                unwritten: Mutex::new(HashMap::new()),
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
        let leftover = self
            .inner
            .leftovers
            .lock()
            .ok()
            .and_then(|l| l.get(&ctx.script).cloned());
        let (known, leftover_alive) = {
            let (jobs, record_path) = (self.clone(), record_path.clone());
            let leftover = leftover.clone();
            smol::unblock(move || {
                jobs.purge_old();
                (record_path.exists(), leftover.is_some_and(|g| g.alive()))
            })
            .await
        };
        if known || self.unwritten(&record_path).is_some() {
            return refuse("reqid already used");
        }
        if leftover.is_some() && !leftover_alive {
            if let Ok(mut l) = self.inner.leftovers.lock() {
                l.remove(&ctx.script);
            }
        }
        let held = self.inner.unwritten.lock().map(|u| u.len()).unwrap_or(0);
        if held >= MAX_UNWRITTEN_RECORDS {
            log::error(
                "async-store-full",
                &[
                    ("HELD", &held.to_string()),
                    ("REQID", &ctx.reqid),
                    ("SCRIPT", &ctx.script),
                ],
            );
            return refuse("could not start async job");
        }
        let mut record = running_record(&ctx);
        {
            let Ok(mut running) = self.inner.running.lock() else {
                return refuse("could not start async job");
            };
            if leftover_alive || running.contains_key(&ctx.script) {
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
            let live = Live {
                path: record_path.clone(),
                record: record.clone(),
            };
            running.insert(ctx.script.clone(), live);
        }
        let guard = RunningGuard {
            inner: self.inner.clone(),
            script: ctx.script.clone(),
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
        // Started here, on the executor thread, and handed to the task with
        // no `.await` between: a cancelled submit cannot leave it unowned.
        let started = runner::start(&path, &ctx, bounds);
        let jobs = self.clone();
        let task = rt::spawn(async move {
            if let Some(group) = started.group() {
                // The group on disk, for the next agent process after a crash.
                record.pgid = Some(i64::from(group.pgid));
                record.pgid_started = group.started;
                let (bytes, target) = (json::to_string(&record.to_json()), record_path.clone());
                if let Err(e) =
                    smol::unblock(move || fsx::write_atomic(&target, bytes.as_bytes(), 0o640)).await
                {
                    log::error(
                        "async-store-fail",
                        &[("ERROR", &e.to_string()), ("REQID", &ctx.reqid)],
                    );
                }
            }
            let output = started.finish().await;
            let exit = output.exit;
            record.state = JobState::Done;
            record.finished = Some(time::iso8601(time::now()));
            record.output = Some(output);
            record.pgid = None;
            record.pgid_started = None;
            // In memory before the script's slot is freed and before the disk
            // is tried: from here on the job reads as done.
            jobs.hold(&record_path, &record);
            drop(guard);
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
            jobs.store_done(record_path, record).await;
        });
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        reply
    }

    /// Writes a finished record held in memory, retrying on a backing-off
    /// timer while the disk refuses it; drops it from memory once written, or
    /// after [`RESULT_TTL`] (by then the file would be purged anyway).
    async fn store_done(&self, path: PathBuf, record: JobRecord) {
        let bytes = json::to_string(&record.to_json()).into_bytes();
        let since = Instant::now();
        let mut pause = RECORD_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let (target, data) = (path.clone(), bytes.clone());
            match smol::unblock(move || fsx::write_atomic(&target, &data, 0o640)).await {
                Ok(()) => {
                    if failures > 0 {
                        log::info(
                            "async-store-recovered",
                            &[
                                ("ATTEMPTS", &(failures + 1).to_string()),
                                ("REQID", &record.reqid),
                            ],
                        );
                    }
                    break;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        log::error(
                            "async-store-fail",
                            &[
                                ("ERROR", &e.to_string()),
                                ("REQID", &record.reqid),
                                ("RESULT", "kept in memory, retrying"),
                            ],
                        );
                    }
                    if since.elapsed() >= RESULT_TTL {
                        log::error(
                            "async-store-giveup",
                            &[("ERROR", &e.to_string()), ("REQID", &record.reqid)],
                        );
                        break;
                    }
                }
            }
            rt::sleep(pause).await;
            pause = (pause * 2).min(RECORD_RETRY_MAX);
        }
        if let Ok(mut u) = self.inner.unwritten.lock() {
            u.remove(&path);
        }
    }

    fn hold(&self, path: &Path, record: &JobRecord) {
        if let Ok(mut u) = self.inner.unwritten.lock() {
            u.insert(path.to_path_buf(), record.clone());
        }
    }

    fn unwritten(&self, path: &Path) -> Option<JobRecord> {
        self.inner
            .unwritten
            .lock()
            .ok()
            .and_then(|u| u.get(path).cloned())
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
            let found = jobs.unwritten(&path).or_else(|| read_record(&path));
            let other = found.is_none() && jobs.owned_by_other(owner.as_str(), id.as_str());
            (found, other)
        })
        .await;
        // The process group is for this agent's own recovery, not the wire.
        let found = found.map(|rec| JobRecord {
            pgid: None,
            pgid_started: None,
            ..rec
        });
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

    /// Marks the process group of a sync run on disk while it runs, so a
    /// restart after a crash kills what the script forked. Not synced: the
    /// mark only has to outlive the agent process, not the machine. A mark
    /// the disk refuses is logged and the run goes on (it is the caller's
    /// result; only the clean-up after a crash is lost).
    pub fn mark_sync(&self, group: Option<Group>, ctx: &Context) -> Option<SyncMark> {
        let group = group?;
        let record = JobRecord {
            pgid: Some(i64::from(group.pgid)),
            pgid_started: group.started,
            ..running_record(ctx)
        };
        let path = self
            .inner
            .dir
            .join(SYNC_MARKS)
            .join(format!("{}.json", group.pgid));
        let bytes = json::to_string(&record.to_json());
        match fsx::write_unsynced(&path, bytes.as_bytes(), 0o640) {
            Ok(()) => Some(SyncMark { path }),
            Err(e) => {
                log::warn(
                    "sync-mark-fail",
                    &[("ERROR", &e.to_string()), ("REQID", &ctx.reqid)],
                );
                None
            }
        }
    }

    /// At start: kills what is left of the process group of each sync run a
    /// previous agent process left marked (if that group still exists and is
    /// the recorded one), and removes the marks. Blocking.
    fn recover_sync(&self) {
        let Ok(marks) = std::fs::read_dir(self.inner.dir.join(SYNC_MARKS)) else {
            return;
        };
        for mark in marks.flatten() {
            let path = mark.path();
            if let Some(rec) = read_record(&path) {
                kill_leftover(&rec, "sync");
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// At start: for each record left `running` by a previous agent process,
    /// kills what is left of its process group (if it still exists and is
    /// the recorded one) and closes the record as lost; sync marks are
    /// handled the same way first. A group still alive
    /// after [`LEFTOVER_KILL_WAIT`] keeps its script busy. Blocking.
    pub fn recover_lost(&self) {
        self.recover_sync();
        for path in self.records() {
            let Some(rec) = read_record(&path).filter(|r| r.state == JobState::Running) else {
                continue;
            };
            if let Some(group) = kill_leftover(&rec, "async") {
                if let Ok(mut l) = self.inner.leftovers.lock() {
                    l.insert(rec.script.clone(), group);
                }
            }
            close_lost(&path, rec);
        }
    }

    /// Stops every job and closes its record; called when the agent stops
    /// (SIGTERM). Each running job's task is cancelled, which kills its
    /// process group (`proc` kills the group of a dropped run), and its record
    /// is closed as lost; a finished record still in memory gets one last
    /// write.
    pub async fn shutdown(&self) {
        let live: Vec<Live> = self
            .inner
            .running
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        let tasks = self
            .inner
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for task in tasks {
            task.cancel().await;
        }
        let jobs = self.clone();
        smol::unblock(move || jobs.close_after_stop(live)).await;
    }

    fn close_after_stop(&self, live: Vec<Live>) {
        let held: Vec<(PathBuf, JobRecord)> = self
            .inner
            .unwritten
            .lock()
            .map(|mut u| u.drain().collect())
            .unwrap_or_default();
        for (path, rec) in &held {
            let bytes = json::to_string(&rec.to_json());
            if let Err(e) = fsx::write_atomic(path, bytes.as_bytes(), 0o640) {
                // Left `running` on disk: the next start closes it as lost.
                log::error(
                    "async-store-fail",
                    &[("ERROR", &e.to_string()), ("REQID", &rec.reqid)],
                );
            }
        }
        for job in live {
            if held.iter().any(|(p, _)| *p == job.path) {
                continue;
            }
            // A job that finished while the others were being cancelled has
            // its done record on disk already.
            let still_running = read_record(&job.path).is_none_or(|r| r.state == JobState::Running);
            if still_running {
                close_lost(&job.path, job.record);
            }
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

fn read_record(path: &Path) -> Option<JobRecord> {
    std::fs::read(path)
        .ok()
        .and_then(|b| json::parse_object(&b).ok())
        .and_then(|o| JobRecord::from_json(&o).ok())
}

/// A `running` record for `ctx`, started now, with no process group yet.
fn running_record(ctx: &Context) -> JobRecord {
    JobRecord {
        reqid: ctx.reqid.clone(),
        state: JobState::Running,
        script: ctx.script.clone(),
        owner: ctx.dispatcher.clone(),
        started: time::iso8601(time::now()),
        finished: None,
        output: None,
        lost: false,
        pgid: None,
        pgid_started: None,
    }
}

/// Kills what is left of the process group `rec` names, if that group
/// still exists and is the recorded one, and logs it as a `kind` run
/// (`run-<kind>-killed`, or `run-<kind>-leftover` for a group still alive
/// after [`LEFTOVER_KILL_WAIT`]). The group that would not die, if any.
fn kill_leftover(rec: &JobRecord, kind: &str) -> Option<Group> {
    let group = group_of(rec).filter(Group::alive)?;
    let pgid = group.pgid.to_string();
    let fields = [
        ("PGID", pgid.as_str()),
        ("REQID", &rec.reqid),
        ("SCRIPT", &rec.script),
    ];
    if group.kill_and_wait(LEFTOVER_KILL_WAIT) {
        log::warn(&format!("run-{kind}-killed"), &fields);
        None
    } else {
        log::error(&format!("run-{kind}-leftover"), &fields);
        Some(group)
    }
}

/// The process group a running record names, if it names one.
fn group_of(rec: &JobRecord) -> Option<Group> {
    let pgid = rec
        .pgid
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)?;
    Some(Group {
        pgid,
        started: rec.pgid_started.clone(),
    })
}

fn close_lost(path: &Path, mut rec: JobRecord) {
    rec.state = JobState::Done;
    rec.pgid = None;
    rec.pgid_started = None;
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
