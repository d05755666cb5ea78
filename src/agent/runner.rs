//! Runs one allowlisted script: no shell, a clean environment, the request
//! context as JSON on stdin, both output streams drained concurrently through
//! a cap, and a run deadline that kills the script's whole process group.
//! [`start`] and [`Started::finish`] split a run for detached jobs, which
//! record the script's process group before waiting.
//!
//! With `executor_socket` set, the run goes to the privileged executor
//! instead, which applies the script's profile ([`crate::agent::executor_client`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::executor_client;
use crate::agent::limits::EXECUTOR_ANSWER_GRACE;
use crate::proc::{self, Env, Exit, Group, Leftovers, Spec};
use crate::proto::frame::{
    ExecRequest, ExecResponse, FLAG_SIGNAL_SHIFT, FLAG_STDERR_TRUNCATED, FLAG_STDOUT_TRUNCATED,
    FLAG_TIMED_OUT,
};
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
#[derive(Debug, Clone)]
pub struct Bounds {
    /// The executor's socket: `Some` runs the script through it.
    pub executor: Option<PathBuf>,
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
    let stdin = ctx.stdin_json().into_bytes();
    let run = match &bounds.executor {
        // Connected in `finish`: a run dropped before it never starts.
        Some(socket) => Backend::Executor {
            socket: socket.clone(),
            request: ExecRequest {
                reqid: ctx.reqid.clone().into_bytes(),
                dispatcher_id: ctx.dispatcher.clone().into_bytes(),
                script: ctx.script.clone().into_bytes(),
                stdin,
                args: ctx.args.iter().map(|a| a.clone().into_bytes()).collect(),
            },
        },
        None => Backend::Direct(proc::start(Spec {
            program: path.to_path_buf(),
            args: ctx.args.clone(),
            env: Env::Clean(proc::script_env()),
            stdin,
            stdin_timeout: bounds.stdin_timeout,
            deadline: Instant::now() + bounds.run_timeout,
            capture: Some(bounds.max_output),
            leftovers: Leftovers::Keep,
            sandbox: None,
        })),
    };
    Started {
        path: path.to_path_buf(),
        reqid: ctx.reqid.clone(),
        script: ctx.script.clone(),
        bounds,
        run,
    }
}

/// A started script, not yet waited for.
pub struct Started {
    path: PathBuf,
    reqid: String,
    script: String,
    bounds: Bounds,
    run: Backend,
}

enum Backend {
    /// Spawned here.
    Direct(Result<proc::Running, proc::Outcome>),
    /// To be sent to the executor.
    Executor {
        socket: PathBuf,
        request: ExecRequest,
    },
}

impl Started {
    /// The script's process group; `None` when it did not start here.
    pub fn group(&self) -> Option<Group> {
        match &self.run {
            Backend::Direct(run) => run.as_ref().ok().and_then(proc::Running::group),
            Backend::Executor { .. } => None,
        }
    }

    /// Waits for the script and maps what happened to the wire's `Output`.
    pub async fn finish(self) -> Output {
        let run_timeout = self.bounds.run_timeout;
        match self.run {
            Backend::Direct(run) => {
                let out = match run {
                    Ok(running) => running.wait().await,
                    Err(failed) => failed,
                };
                output_of(out, &self.path, &self.reqid, &self.script, run_timeout)
            }
            Backend::Executor { socket, request } => {
                let wait = run_timeout + self.bounds.stdin_timeout + EXECUTOR_ANSWER_GRACE;
                match executor_client::exchange(&socket, &request, wait, self.bounds.max_output)
                    .await
                {
                    Ok(answer) => output_of_executor(answer, run_timeout),
                    Err(why) => {
                        log::error(
                            "executor-fail",
                            &[
                                ("ERROR", &why),
                                ("REQID", &self.reqid),
                                ("SCRIPT", &self.script),
                            ],
                        );
                        // In stderr too, where the original's front-end puts it.
                        Output {
                            stderr: why.clone(),
                            ..Output::failed(why)
                        }
                    }
                }
            }
        }
    }
}

/// Maps the executor's answer to the wire's `Output`: bytes are converted
/// to text once, here.
fn output_of_executor(answer: ExecResponse, run_timeout: Duration) -> Output {
    let flags = answer.flags.unwrap_or(0);
    let timed_out = flags & FLAG_TIMED_OUT != 0;
    let signal = (flags >> FLAG_SIGNAL_SHIFT) & 0xff;
    let (exit, signal) = match signal {
        0 => (i64::from(answer.exit), None),
        // As the direct path reports a signal death.
        s => (126, Some(i64::from(s))),
    };
    Output {
        exit,
        stdout: String::from_utf8_lossy(&answer.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&answer.stderr).into_owned(),
        stdout_truncated: flags & FLAG_STDOUT_TRUNCATED != 0,
        stderr_truncated: flags & FLAG_STDERR_TRUNCATED != 0,
        signal,
        timed_out,
        error: timed_out.then(|| timeout_message(run_timeout)),
    }
}

fn timeout_message(run_timeout: Duration) -> String {
    format!(
        "script timed out after {}s and was killed",
        run_timeout.as_secs()
    )
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
        // The direct path never sets a sandbox; kept for completeness.
        Exit::SandboxFailed(e) => {
            stderr.push_str(&format!("cannot confine '{}': {e}\n", path.display()));
            (126, None)
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
        error: out.timed_out.then(|| timeout_message(run_timeout)),
    }
}
