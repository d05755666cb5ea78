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
use crate::agent::trust::valid_dispatcher_id;
use crate::json::{self, Object, Value};
use crate::{fsx, log, rt, time};

const LOST_MESSAGE: &str = "job lost: the agent stopped before the script finished";

/// Whether `reqid` is acceptable as a file name (`^[A-Za-z0-9_-]{1,128}$`).
pub fn valid_reqid(reqid: &str) -> bool {
    (1..=128).contains(&reqid.len())
        && reqid
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

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

    /// Starts `ctx.script` detached; the reply is 202 accepted, 409 busy or a
    /// 200 refusal in the original's shapes.
    pub fn submit(&self, path: PathBuf, ctx: Context, bounds: Bounds) -> (u16, Value) {
        let reply = |status: u16, fields: Vec<(&str, Value)>| {
            let mut o = Object::new();
            o.insert("script".into(), json::str(&ctx.script));
            o.insert("reqid".into(), json::str(&ctx.reqid));
            for (k, v) in fields {
                o.insert(k.into(), v);
            }
            (status, Value::Object(o))
        };
        let refuse = |msg: &str| {
            reply(
                200,
                vec![("exit", json::int(-1)), ("error", json::str(msg))],
            )
        };
        if !valid_reqid(&ctx.reqid) || !valid_dispatcher_id(&ctx.dispatcher) {
            return refuse("async run requires a valid reqid");
        }
        self.purge_old();
        let owner_dir = self.inner.dir.join(&ctx.dispatcher);
        let record_path = owner_dir.join(format!("{}.json", ctx.reqid));
        if record_path.exists() {
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
                return reply(
                    409,
                    vec![
                        ("status", json::str("busy")),
                        ("error", json::str("script already running")),
                    ],
                );
            }
            running.insert(ctx.script.clone());
        }
        let guard = RunningGuard {
            inner: self.inner.clone(),
            script: ctx.script.clone(),
        };
        let started = time::iso8601(time::now());
        let running_record = record(&ctx, "running", &started, Vec::new());
        let written = fsx::ensure_dir(&owner_dir, 0o750).and_then(|_| {
            fsx::write_atomic(
                &record_path,
                json::to_string(&running_record).as_bytes(),
                0o640,
            )
        });
        if let Err(e) = written {
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
        let job_ctx = ctx.clone();
        let task = rt::spawn(async move {
            let _guard = guard;
            let out = runner::run(&path, &job_ctx, bounds).await;
            let mut fields: Vec<(&str, Value)> = out.fields();
            fields.push(("finished", json::str(time::iso8601(time::now()))));
            let done = record(&job_ctx, "done", &started, fields);
            let bytes = json::to_string(&done).into_bytes();
            let target = record_path.clone();
            let res = smol::unblock(move || fsx::write_atomic(&target, &bytes, 0o640)).await;
            if let Err(e) = res {
                log::error(
                    "async-store-fail",
                    &[("ERROR", &e.to_string()), ("REQID", &job_ctx.reqid)],
                );
            }
            log::info(
                "run",
                &[
                    ("DISPATCHER", &job_ctx.dispatcher),
                    ("EXIT", &out.exit.to_string()),
                    ("MODE", "async"),
                    ("PEER", &job_ctx.peer_ip),
                    ("REQID", &job_ctx.reqid),
                    ("SCRIPT", &job_ctx.script),
                ],
            );
        });
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        reply(202, vec![("status", json::str("accepted"))])
    }

    /// `GET /result/<reqid>` for dispatcher `owner`.
    pub fn result(&self, owner: &str, reqid: &str, peer: &str) -> (u16, Value) {
        let unknown = (
            404,
            json::object([
                ("status", json::str("unknown")),
                ("reqid", json::str(reqid)),
            ]),
        );
        if !valid_reqid(reqid) || !valid_dispatcher_id(owner) {
            return unknown;
        }
        let path = self.inner.dir.join(owner).join(format!("{reqid}.json"));
        match std::fs::read(&path).ok().and_then(|b| json::parse(&b)) {
            Some(rec) => {
                log::info(
                    "result",
                    &[("DISPATCHER", owner), ("PEER", peer), ("REQID", reqid)],
                );
                (200, rec)
            }
            None => {
                if self.owned_by_other(owner, reqid) {
                    log::warn(
                        "result-deny",
                        &[
                            ("DISPATCHER", owner),
                            ("PEER", peer),
                            ("REASON", "not-owner"),
                            ("REQID", reqid),
                        ],
                    );
                } else {
                    log::info(
                        "result-miss",
                        &[("DISPATCHER", owner), ("PEER", peer), ("REQID", reqid)],
                    );
                }
                unknown
            }
        }
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
            let Some(Value::Object(rec)) = std::fs::read(&path).ok().and_then(|b| json::parse(&b))
            else {
                continue;
            };
            if json::get_str(&rec, "status") == Some("running") {
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

fn record(ctx: &Context, status: &str, started: &str, extra: Vec<(&str, Value)>) -> Value {
    let mut o = Object::new();
    o.insert("reqid".into(), json::str(&ctx.reqid));
    o.insert("status".into(), json::str(status));
    o.insert("script".into(), json::str(&ctx.script));
    o.insert("owner".into(), json::str(&ctx.dispatcher));
    o.insert("started".into(), json::str(started));
    for (k, v) in extra {
        o.insert(k.into(), v);
    }
    Value::Object(o)
}

fn close_lost(path: &Path, mut rec: Object) {
    rec.insert("status".into(), json::str("done"));
    rec.insert("exit".into(), json::int(-1));
    rec.insert("stdout".into(), json::str(""));
    rec.insert("stderr".into(), json::str(LOST_MESSAGE));
    rec.insert("error".into(), json::str(LOST_MESSAGE));
    rec.insert("lost".into(), Value::Bool(true));
    rec.insert("finished".into(), json::str(time::iso8601(time::now())));
    let reqid = json::get_str(&rec, "reqid").unwrap_or("").to_string();
    match fsx::write_atomic(path, json::to_string(&Value::Object(rec)).as_bytes(), 0o640) {
        Ok(()) => log::warn("run-async-lost", &[("REQID", &reqid)]),
        Err(e) => log::error(
            "async-store-fail",
            &[("ERROR", &e.to_string()), ("REQID", &reqid)],
        ),
    }
}
