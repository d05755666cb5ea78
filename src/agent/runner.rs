//! Runs one allowlisted script: no shell, a clean environment, the request
//! context as JSON on stdin, both output streams drained concurrently through
//! a cap, and a run deadline that kills the script's whole process group.
//! [`start`] and [`Started::finish`] split a run for detached jobs, which
//! record the script's process group before waiting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::limits::{KEPT_ENV, SCRIPT_PATH};
use crate::proc::{self, Env, Exit, Group, Leftovers, Spec};
use crate::proto::json::Builder;
use crate::proto::Output;
use crate::{log, time};

/// Who asked for a run, and with what.
#[derive(Debug, Clone)]
pub struct Context {
    /// The allowlist name.
    pub script: String,
    /// Arguments, passed to exec as they are.
    pub args: Vec<String>,
    /// The dispatcher's request id.
    pub reqid: String,
    /// Advisory identity forwarded by the dispatcher.
    pub username: String,
    /// Advisory token forwarded by the dispatcher (scripts receive it on stdin).
    pub token: String,
    /// The dispatcher's IP.
    pub peer_ip: String,
    /// The dispatcher id from the trusted map.
    pub dispatcher: String,
}

impl Context {
    /// The JSON written to the script's stdin.
    pub fn stdin_json(&self) -> String {
        let context = Builder::new()
            .str("script", &self.script)
            .strings("args", &self.args)
            .str("reqid", &self.reqid)
            .str("peer_ip", &self.peer_ip)
            .str("username", &self.username)
            .str("token", &self.token)
            .str("dispatcher", &self.dispatcher)
            .str("timestamp", time::iso8601(time::now()))
            .build();
        crate::proto::json::to_string(&context)
    }
}

/// Bounds for one run.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Time to deliver the stdin context before closing stdin.
    pub stdin_timeout: Duration,
    /// Run time before the process group is killed.
    pub run_timeout: Duration,
    /// Bytes kept per output stream.
    pub max_output: usize,
}

/// Starts `path` for `ctx` under `bounds`; a spawn failure shows in
/// [`Started::finish`]. Dropping the result kills the script's group.
pub fn start(path: &Path, ctx: &Context, bounds: Bounds) -> Started {
    let mut env = vec![("PATH".to_string(), SCRIPT_PATH.to_string())];
    for key in KEPT_ENV {
        if let Ok(v) = std::env::var(key) {
            env.push((key.to_string(), v));
        }
    }
    let spec = Spec {
        program: path.to_path_buf(),
        args: ctx.args.clone(),
        env: Env::Clean(env),
        stdin: ctx.stdin_json().into_bytes(),
        stdin_timeout: bounds.stdin_timeout,
        deadline: Instant::now() + bounds.run_timeout,
        capture: Some(bounds.max_output),
        leftovers: Leftovers::Keep,
    };
    Started {
        path: path.to_path_buf(),
        reqid: ctx.reqid.clone(),
        script: ctx.script.clone(),
        run_timeout: bounds.run_timeout,
        run: proc::start(spec),
    }
}

/// A started script, not yet waited for.
pub struct Started {
    path: PathBuf,
    reqid: String,
    script: String,
    run_timeout: Duration,
    run: Result<proc::Running, proc::Outcome>,
}

impl Started {
    /// The script's process group; `None` when it did not start.
    pub fn group(&self) -> Option<Group> {
        self.run.as_ref().ok().and_then(proc::Running::group)
    }

    /// Waits for the script and maps what happened to the wire's `Output`.
    pub async fn finish(self) -> Output {
        let out = match self.run {
            Ok(running) => running.wait().await,
            Err(failed) => failed,
        };
        output_of(out, &self.path, &self.reqid, &self.script, self.run_timeout)
    }
}

fn output_of(
    out: proc::Outcome,
    path: &Path,
    reqid: &str,
    script: &str,
    run_timeout: Duration,
) -> Output {
    if out.stdin_unwritten > 0 {
        log::warn(
            "stdin-timeout",
            &[
                ("BYTES", &out.stdin_unwritten.to_string()),
                ("REQID", reqid),
                ("SCRIPT", script),
            ],
        );
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (exit, signal) = match out.exit {
        _ if out.timed_out => (-1, None),
        Exit::Code(c) => (c as i64, None),
        Exit::Signal(s) => (126, Some(s)),
        Exit::SpawnFailed(e) => {
            stderr.push_str(&format!("cannot execute '{}': {e}\n", path.display()));
            (127, None)
        }
    };
    Output {
        exit,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
        signal: signal.map(i64::from),
        timed_out: out.timed_out,
        error: out.timed_out.then(|| {
            format!(
                "script timed out after {}s and was killed",
                run_timeout.as_secs()
            )
        }),
    }
}
