//! Runs one child process under bounds: agent scripts and auth hooks.
//!
//! [`run`] executes a program directly (no shell, no `PATH` search, argv[0] is
//! the program path) as the leader of its own process group, writes its stdin
//! under a deadline, drains stdout and stderr concurrently through a cap, and
//! kills the whole group with `SIGKILL` at the run deadline. [`start`] and
//! [`Running::wait`] are the same in two steps, for a caller that records the
//! child's [`Group`] before waiting.
//!
//! Children are started through the internal launcher ([`crate::launch`]) so
//! that they get `SIGKILL` when this process dies, however it dies; an exec
//! failure still reads as [`Exit::SpawnFailed`].
//!
//! Guarantees:
//! - Memory is bounded by the caller's cap plus one fixed read buffer per
//!   stream, however much the child writes; past the cap output is read and
//!   discarded so the child never blocks on a full pipe.
//! - A child that exits without reading stdin does not hurt the caller: Rust
//!   ignores `SIGPIPE`, and the resulting `EPIPE` counts as "stdin closed".
//! - [`run`] returns at most [`EXIT_DRAIN_GRACE`] after the child is reaped,
//!   even if a daemonised grandchild still holds the output pipes open.
//! - The child is always reaped before [`run`] returns. If the future is
//!   dropped part-way, the child's process group is killed (and
//!   async-process reaps the child in the background).
//! - [`kill_all`] reaches the group of every child not yet reaped, for a
//!   process about to exit.
//!
//! On a normal exit, what the child left behind in its group is killed only
//! with [`Leftovers::Kill`] (hooks); a script may legitimately start a daemon
//! ([`Leftovers::Keep`]). The deadline and cancellation always kill the group.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use smol::future;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use smol::process::{Child, ChildStdin, Command};

use crate::launch::{self, LaunchError};
use crate::rt;
use crate::sandbox::Sandbox;

/// How long output pipes are still drained after the child itself has exited.
///
/// Output the child wrote just before exiting is already in the pipe and
/// arrives at once; what keeps a pipe open longer is a grandchild that
/// inherited it (a daemon started by a script). Half a second keeps the tail
/// of a normal run and bounds the wait on such a grandchild.
pub const EXIT_DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Size of the fixed buffer each output stream is read through.
///
/// Matches a typical pipe capacity chunk; with a cap reached, a 100 MiB writer
/// costs this much memory per stream beyond the cap, not 100 MiB.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// `PATH` given to every script: fixed, so the caller cannot steer lookups.
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables copied from the agent's own environment into a script's; nothing
/// else passes (no `LD_*`, `BASH_ENV`, `IFS`, ...).
pub const KEPT_ENV: &[&str] = &["HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME"];

/// A script's whole environment: [`SCRIPT_PATH`] and the [`KEPT_ENV`]
/// variables this process has.
pub fn script_env() -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), SCRIPT_PATH.to_string())];
    for key in KEPT_ENV {
        if let Ok(v) = std::env::var(key) {
            env.push((key.to_string(), v));
        }
    }
    env
}

/// What to run and under which bounds.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Executed directly: argv[0] is this path; no shell, no `PATH` search.
    pub program: PathBuf,
    /// argv[1..], passed byte-exact.
    pub args: Vec<String>,
    /// The child's environment.
    pub env: Env,
    /// Written to the child's stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Time from start to deliver `stdin`; after it stdin is closed, the
    /// child keeps running and the unwritten byte count is reported.
    pub stdin_timeout: Duration,
    /// Run deadline: at this instant the whole process group gets `SIGKILL`.
    pub deadline: Instant,
    /// `Some(cap)`: capture stdout and stderr, each up to `cap` bytes (the
    /// rest is drained and discarded). `None`: both go to `/dev/null`.
    pub capture: Option<usize>,
    /// What happens to processes left in the group when the child exits.
    pub leftovers: Leftovers,
    /// Confinement applied before the program runs (needs root).
    pub sandbox: Option<Sandbox>,
}

/// What happens to the child's process group once the child has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Left running: a script may start a daemon.
    Keep,
    /// Killed with `SIGKILL`: a hook must leave nothing behind.
    Kill,
}

/// The child's environment.
#[derive(Debug, Clone)]
pub enum Env {
    /// Only these variables; nothing is inherited.
    Clean(Vec<(String, String)>),
    /// The caller's environment plus these variables (these win).
    Inherit(Vec<(String, String)>),
}

/// How the child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status code.
    Code(i32),
    /// Killed by this signal (also after a deadline kill: `Signal(9)`).
    Signal(i32),
    /// Could not be started (or, rarely, not waited for); the I/O error text.
    SpawnFailed(String),
    /// Not started because its sandbox could not be applied; the message.
    SandboxFailed(String),
}

/// What happened to one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How the child ended.
    pub exit: Exit,
    /// Captured stdout. Invariant: `len() <= cap`; empty without capture.
    pub stdout: Vec<u8>,
    /// Captured stderr. Invariant: `len() <= cap`; empty without capture.
    pub stderr: Vec<u8>,
    /// stdout produced more than the cap.
    pub stdout_truncated: bool,
    /// stderr produced more than the cap.
    pub stderr_truncated: bool,
    /// The run deadline passed and the process group was killed.
    pub timed_out: bool,
    /// Bytes of stdin not written before `stdin_timeout`; 0 when all were
    /// written or the child closed its stdin early.
    pub stdin_unwritten: usize,
}

impl Outcome {
    fn spawn_failed(err: &io::Error) -> Outcome {
        Outcome {
            exit: Exit::SpawnFailed(err.to_string()),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            stdin_unwritten: 0,
        }
    }
}

/// Runs the child described by `spec` to completion under its bounds.
///
/// Never panics on anything the child does; a spawn failure is reported in
/// [`Outcome::exit`]. Returns once the child is reaped and its pipes are at
/// EOF, or [`EXIT_DRAIN_GRACE`] after it was reaped, whichever comes first.
pub async fn run(spec: Spec) -> Outcome {
    match start(spec) {
        Ok(running) => running.wait().await,
        Err(failed) => failed,
    }
}

/// Spawns the child described by `spec`; `Err` is the outcome of a spawn
/// that failed. Spawn from the executor thread (see [`crate::launch`]).
pub fn start(spec: Spec) -> Result<Running, Outcome> {
    let (mut std_cmd, launch) = launch::command(&spec.program, &spec.args, spec.sandbox.as_ref());
    match &spec.env {
        Env::Clean(vars) => {
            std_cmd.env_clear().envs(vars.iter().map(|(k, v)| (k, v)));
        }
        Env::Inherit(vars) => {
            std_cmd.envs(vars.iter().map(|(k, v)| (k, v)));
        }
    }
    let (out_io, err_io) = match spec.capture {
        Some(_) => (Stdio::piped(), Stdio::piped()),
        None => (Stdio::null(), Stdio::null()),
    };
    let in_io = if spec.stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    // The child leads a new group whose id is its pid, so one kill reaches
    // everything it forked (unless something calls setsid). Set on the
    // launcher, it is kept across the launcher's exec.
    std_cmd.process_group(0);
    let mut cmd = Command::from(std_cmd);
    // Stdio goes on the async command: the conversion forgets what was set on
    // the std one, and unset means inherit (a hook would read our stdin).
    cmd.stdin(in_io)
        .stdout(out_io)
        .stderr(err_io)
        .kill_on_drop(true);

    let child = cmd.spawn().map_err(|e| Outcome::spawn_failed(&e))?;
    let guard = GroupGuard::new(child.id());
    Ok(Running {
        child,
        guard,
        launch,
        spec,
    })
}

/// A started child, not yet waited for. Dropping it kills its process group.
pub struct Running {
    child: Child,
    guard: GroupGuard,
    /// How the launcher reports an exec failure.
    launch: launch::Status,
    spec: Spec,
}

impl Running {
    /// The child's process group, as it can be found again later (reads
    /// `/proc`, so only callers that record it pay for it).
    pub fn group(&self) -> Option<Group> {
        self.guard
            .pgid
            .map(|p| Group::of_leader(p.as_raw_nonzero().get()))
    }

    /// Drives the child to completion under the bounds of its spec; see [`run`].
    pub async fn wait(self) -> Outcome {
        let Running {
            mut child,
            guard: mut group,
            launch,
            spec,
        } = self;
        let cap = spec.capture.unwrap_or(0);
        let mut out = Capture::new(cap);
        let mut err = Capture::new(cap);
        // Shared cells, not captured `&mut`s: the I/O future may be cut off at the
        // grace or the deadline, and what it learnt so far must survive it.
        // Atomics rather than `Cell` keep the future `Send` for `rt::spawn`.
        let stdin_unwritten = AtomicUsize::new(0);
        let stdin_deadline = Instant::now() + spec.stdin_timeout;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());

        let mut timed_out = false;
        let status = {
            let io_done = AtomicBool::new(false);
            let mut io = pin!(async {
                let feed = async {
                    stdin_unwritten.store(
                        feed(stdin, &spec.stdin, stdin_deadline).await,
                        Ordering::Relaxed,
                    )
                };
                let drains = future::zip(out.drain(stdout), err.drain(stderr));
                future::zip(feed, drains).await;
                io_done.store(true, Ordering::Relaxed);
            });

            // Phase 1: drive the I/O while waiting for the child, up to the deadline.
            let waited = rt::deadline(spec.deadline, async {
                let io_then_idle = async {
                    io.as_mut().await;
                    future::pending::<io::Result<ExitStatus>>().await
                };
                future::or(child.status(), io_then_idle).await
            })
            .await;
            let status = match waited {
                Ok(status) => status,
                Err(rt::TimedOut) => {
                    timed_out = true;
                    group.kill();
                    child.status().await
                }
            };
            if spec.leftovers == Leftovers::Kill {
                // The leader is reaped, but its id stays reserved while any
                // member lives, so this reaches only what it left behind (an
                // empty group answers ESRCH).
                group.kill();
            }
            group.disarm();

            // Phase 2: the child is reaped; keep draining only for a short grace.
            if !io_done.load(Ordering::Relaxed) {
                let _ = rt::deadline(Instant::now() + EXIT_DRAIN_GRACE, io.as_mut()).await;
            }
            status
        };

        let exit = match status {
            Ok(status) => match exit_of(status) {
                Exit::Code(code) => match launch.exec_error(code) {
                    Some(LaunchError::Exec(e)) => Exit::SpawnFailed(e),
                    Some(LaunchError::Sandbox(e)) => Exit::SandboxFailed(e),
                    None => Exit::Code(code),
                },
                other => other,
            },
            Err(e) => Exit::SpawnFailed(format!("wait failed: {e}")),
        };
        Outcome {
            exit,
            stdout: out.kept,
            stderr: err.kept,
            stdout_truncated: out.truncated,
            stderr_truncated: err.truncated,
            timed_out,
            stdin_unwritten: stdin_unwritten.into_inner(),
        }
    }
}

/// Kills (`SIGKILL`) the process group of every child started here and not
/// yet reaped; for a process about to exit, so nothing it started outlives
/// it. Returns how many groups were signalled.
pub fn kill_all() -> usize {
    let live = LIVE
        .lock()
        .map(|l| l.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    live.iter()
        .filter(|&&pgid| {
            Pid::from_raw(pgid)
                .is_some_and(|p| rustix::process::kill_process_group(p, Signal::KILL).is_ok())
        })
        .count()
}

/// Process groups of children not yet reaped (see [`GroupGuard`]).
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// A process group as another process can find it again: its id and its
/// leader's start (boot id and start time), so a later agent process can tell
/// its own old group from an unrelated one that reuses the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group id: the leader's pid.
    pub pgid: i32,
    /// `<boot id>/<leader start in clock ticks since boot>`, from `/proc`;
    /// `None` when it could not be read (the group is then never killed later).
    pub started: Option<String>,
}

impl Group {
    /// The group led by the live process `pid`.
    pub fn of_leader(pid: i32) -> Group {
        let started = match (boot_id(), stat(pid)) {
            (Some(boot), Some(st)) => Some(format!("{boot}/{}", st.start)),
            _ => None,
        };
        Group { pgid: pid, started }
    }

    /// Whether this group still has a live (non-zombie) member and is the same
    /// group that was recorded: same boot, and a leader, if one is left, with
    /// the recorded start. Reads `/proc`; blocking, but only memory.
    pub fn alive(&self) -> bool {
        let Some((boot, ticks)) = self
            .started
            .as_deref()
            .and_then(|s| s.split_once('/'))
            .and_then(|(b, t)| Some((b, t.parse::<u64>().ok()?)))
        else {
            return false;
        };
        if boot_id().as_deref() != Some(boot) {
            return false;
        }
        if let Some(leader) = stat(self.pgid) {
            // The id is a live process again: ours only if it is the leader we
            // recorded, still leading its group.
            if leader.start != ticks || leader.pgrp != self.pgid {
                return false;
            }
        }
        // No leader left: a group id is not reused while a member lives, so a
        // live member means the recorded group.
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return false;
        };
        procs
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter_map(stat)
            .any(|st| st.pgrp == self.pgid && st.state != 'Z')
    }

    /// Kills the group (`SIGKILL`) if it is still [`alive`](Group::alive),
    /// then waits up to `within` for it to be gone. True when it is gone.
    pub fn kill_and_wait(&self, within: Duration) -> bool {
        if !self.alive() {
            return true;
        }
        if let Some(pgid) = Pid::from_raw(self.pgid) {
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
        let end = Instant::now() + within;
        let mut pause = Duration::from_millis(5);
        while self.alive() {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        true
    }
}

/// The fields of `/proc/<pid>/stat` a [`Group`] needs.
struct Stat {
    state: char,
    pgrp: i32,
    /// Start time in clock ticks since boot.
    start: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold anything: split after the last `)`.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on; pgrp is field 5, starttime field 22.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        // Neither code nor signal (stopped/continued) cannot come from a wait
        // for termination; report it as a failure rather than guess.
        (None, None) => Exit::SpawnFailed(format!("unexpected wait status {status:?}")),
    }
}

/// Writes `data` to the child's stdin until `until`, then closes it.
/// Returns the number of bytes left unwritten at the deadline.
async fn feed(stdin: Option<ChildStdin>, data: &[u8], until: Instant) -> usize {
    let Some(mut pipe) = stdin else { return 0 };
    let mut written = 0;
    while written < data.len() {
        match rt::deadline(until, pipe.write(&data[written..])).await {
            Ok(Ok(0)) => return 0,
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            // EPIPE (SIGPIPE is ignored by Rust) or any other write error:
            // the child closed its stdin early, which is its right.
            Ok(Err(_)) => return 0,
            Err(rt::TimedOut) => return data.len() - written,
        }
    }
    // Dropping the pipe closes it: the child sees EOF.
    drop(pipe);
    0
}

/// One output stream kept up to a cap.
struct Capture {
    /// Invariant: `kept.len() <= cap`.
    kept: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capture {
    fn new(cap: usize) -> Capture {
        Capture {
            kept: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Reads `pipe` to EOF through a fixed buffer, keeping up to the cap and
    /// discarding the rest. A read error ends the stream like EOF.
    async fn drain<R: AsyncRead + Unpin>(&mut self, pipe: Option<R>) {
        let Some(mut pipe) = pipe else { return };
        // On the heap: the future stays small however it is nested.
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => self.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap - self.kept.len();
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        if take < bytes.len() {
            self.truncated = true;
        }
    }
}

/// Kills the child's process group with `SIGKILL` when dropped while armed.
///
/// Covers cancellation: if [`run`]'s future is dropped, `kill_on_drop` only
/// reaches the direct child; this reaches everything in its group.
struct GroupGuard {
    /// Invariant: `Some` only while the group leader is not yet reaped, so the
    /// id cannot have been reused.
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn new(pid: u32) -> GroupGuard {
        let pgid = i32::try_from(pid).ok().and_then(Pid::from_raw);
        if let (Some(p), Ok(mut live)) = (pgid, LIVE.lock()) {
            live.push(p.as_raw_nonzero().get());
        }
        GroupGuard { pgid }
    }

    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already gone) is the outcome we want anyway.
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
    }

    fn disarm(&mut self) {
        if let (Some(p), Ok(mut live)) = (self.pgid.take(), LIVE.lock()) {
            let raw = p.as_raw_nonzero().get();
            live.retain(|&g| g != raw);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
        self.disarm();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    pub(crate) use crate::testutil::scratch_dir as fixture_dir;

    /// Writes an executable `/bin/sh` script.
    pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Polls `cond` with short backoff until `limit`; true if it held.
    pub(crate) fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        let mut pause = Duration::from_millis(5);
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// True when `pid` no longer runs (gone, or a zombie awaiting its reaper).
    pub(crate) fn process_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    fn read_pid(path: &Path) -> i32 {
        let mut text = String::new();
        assert!(
            eventually(Duration::from_secs(5), || {
                text = std::fs::read_to_string(path).unwrap_or_default();
                text.ends_with('\n')
            }),
            "no pid in {}",
            path.display()
        );
        text.trim().parse().unwrap()
    }

    fn spec(program: impl Into<PathBuf>, args: &[&str]) -> Spec {
        Spec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Env::Clean(vec![("PATH".into(), "/usr/bin:/bin".into())]),
            stdin: Vec::new(),
            stdin_timeout: Duration::from_secs(5),
            deadline: Instant::now() + Duration::from_secs(20),
            capture: Some(1024 * 1024),
            leftovers: Leftovers::Keep,
            sandbox: None,
        }
    }

    /// Runs a spec, retrying a spawn that hit ETXTBSY: another test thread may
    /// have forked while our script file was still open for writing.
    pub(crate) fn run_blocking(spec: Spec) -> Outcome {
        for _ in 0..50 {
            let out = rt::block_on(run(spec.clone()));
            match &out.exit {
                Exit::SpawnFailed(e) if e.contains("busy") => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return out,
            }
        }
        rt::block_on(run(spec))
    }

    #[test]
    fn run_future_is_send_for_spawning() {
        fn assert_send<T: Send>(_: &T) {}
        let fut = run(spec("/bin/true", &[]));
        assert_send(&fut);
    }

    #[test]
    fn exit_code_is_reported() {
        let dir = fixture_dir("exit-code");
        let s = script(&dir, "s", "echo out; echo err >&2; exit 42");
        let out = run_blocking(spec(s, &[]));
        assert_eq!(out.exit, Exit::Code(42));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(!out.timed_out && !out.stdout_truncated && !out.stderr_truncated);
    }

    #[test]
    fn death_by_signal_is_reported() {
        let dir = fixture_dir("signal");
        let s = script(&dir, "s", "kill -KILL $$");
        assert_eq!(run_blocking(spec(s, &[])).exit, Exit::Signal(9));
    }

    #[test]
    fn args_arrive_byte_exact() {
        let dir = fixture_dir("args");
        let s = script(&dir, "s", r#"for a in "$@"; do printf '%s\0' "$a"; done"#);
        let args = [
            "a b",
            "\"q'",
            "line1\nline2",
            "$(touch x)",
            "",
            "ünïcødé ✓",
            "*",
            "-n",
        ];
        let out = run_blocking(spec(s, &args));
        assert_eq!(out.exit, Exit::Code(0));
        let mut want = Vec::new();
        for a in args {
            want.extend_from_slice(a.as_bytes());
            want.push(0);
        }
        assert_eq!(out.stdout, want);
        assert!(!dir.join("x").exists());
    }

    #[test]
    fn clean_env_holds_only_what_was_given() {
        let given = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("BASH_ENV".into(), "/tmp/x".into()),
        ];
        let mut s = spec("/usr/bin/env", &[]);
        s.env = Env::Clean(given.clone());
        let out = run_blocking(s.clone());
        assert_eq!(out.exit, Exit::Code(0));
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, ["BASH_ENV=/tmp/x", "PATH=/usr/bin:/bin"]);

        // Inherit keeps the caller's variables and adds the given ones.
        let (key, value) = std::env::vars()
            .find(|(k, _)| k != "PATH" && k != "BASH_ENV")
            .unwrap();
        s.env = Env::Inherit(given);
        let text = String::from_utf8(run_blocking(s).stdout).unwrap();
        assert!(text.lines().any(|l| l == "BASH_ENV=/tmp/x"));
        assert!(
            text.lines().any(|l| l == format!("{key}={value}")),
            "{key} missing"
        );
    }

    #[test]
    fn stdin_is_delivered_then_closed() {
        let mut s = spec("/bin/cat", &[]);
        s.stdin = b"{\"k\":\"v\"}\nsecond line".to_vec();
        let out = run_blocking(s);
        assert_eq!(out.exit, Exit::Code(0));
        assert_eq!(out.stdout, b"{\"k\":\"v\"}\nsecond line");
        assert_eq!(out.stdin_unwritten, 0);
    }

    #[test]
    fn stdin_timeout_closes_stdin_and_the_child_still_completes() {
        let dir = fixture_dir("stdin-timeout");
        let s = script(&dir, "s", "sleep 1; exit 7");
        let mut sp = spec(s, &[]);
        sp.stdin = vec![b'x'; 1024 * 1024];
        sp.stdin_timeout = Duration::from_millis(200);
        let out = run_blocking(sp);
        assert_eq!(out.exit, Exit::Code(7));
        assert!(
            out.stdin_unwritten > 0 && out.stdin_unwritten < 1024 * 1024,
            "{}",
            out.stdin_unwritten
        );
        assert!(!out.timed_out);
    }

    #[test]
    fn stdin_shortfall_survives_a_grandchild_holding_stdout() {
        let dir = fixture_dir("stdin-grandchild");
        let pidfile = dir.join("pid");
        let s = script(&dir, "s", r#"(sleep 30 & echo $! > "$1"); sleep 1; exit 4"#);
        let mut sp = spec(s, &[pidfile.to_str().unwrap()]);
        sp.stdin = vec![b'x'; 1024 * 1024];
        sp.stdin_timeout = Duration::from_millis(200);
        let out = run_blocking(sp);
        assert_eq!(out.exit, Exit::Code(4));
        assert!(out.stdin_unwritten > 0);
        if let Some(pid) = Pid::from_raw(read_pid(&pidfile)) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }

    #[test]
    fn child_exiting_without_reading_stdin_is_harmless() {
        let dir = fixture_dir("stdin-epipe");
        let s = script(&dir, "s", "exit 3");
        let mut sp = spec(s, &[]);
        sp.stdin = vec![b'x'; 1024 * 1024];
        let out = run_blocking(sp);
        assert_eq!(out.exit, Exit::Code(3));
        assert_eq!(out.stdin_unwritten, 0);
    }

    #[test]
    fn huge_output_is_capped_and_flagged() {
        let cap = 1024 * 1024;
        let mut sp = spec("/usr/bin/head", &["-c", "104857600", "/dev/zero"]);
        sp.capture = Some(cap);
        let started = Instant::now();
        let out = run_blocking(sp);
        assert_eq!(out.exit, Exit::Code(0));
        assert_eq!(out.stdout.len(), cap);
        assert!(out.stdout_truncated && !out.stderr_truncated);
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn no_capture_sends_output_to_dev_null() {
        let dir = fixture_dir("no-capture");
        let s = script(&dir, "s", "echo out; echo err >&2; exit 0");
        let mut sp = spec(s, &[]);
        sp.capture = None;
        let out = run_blocking(sp);
        assert_eq!(out.exit, Exit::Code(0));
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
    }

    #[test]
    fn deadline_kills_the_whole_process_group() {
        let dir = fixture_dir("deadline");
        let pidfile = dir.join("pid");
        let s = script(&dir, "s", r#"sleep 30 & echo $! > "$1"; sleep 30; wait"#);
        let mut sp = spec(s, &[pidfile.to_str().unwrap()]);
        sp.deadline = Instant::now() + Duration::from_millis(300);
        let started = Instant::now();
        let out = run_blocking(sp);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(out.timed_out);
        assert_eq!(out.exit, Exit::Signal(9));
        let grandchild = read_pid(&pidfile);
        assert!(
            eventually(Duration::from_secs(5), || process_dead(grandchild)),
            "grandchild {grandchild} survived"
        );
    }

    #[test]
    fn daemonised_grandchild_holding_stdout_does_not_hang_the_run() {
        let dir = fixture_dir("grandchild");
        let pidfile = dir.join("pid");
        let s = script(
            &dir,
            "s",
            r#"(sleep 30 & echo $! > "$1"); echo done; exit 5"#,
        );
        let started = Instant::now();
        let out = run_blocking(spec(s, &[pidfile.to_str().unwrap()]));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out.exit, Exit::Code(5));
        assert_eq!(out.stdout, b"done\n");
        assert!(!out.timed_out);
        // Not killed on a normal exit (a script may start a daemon); clean up.
        let grandchild = read_pid(&pidfile);
        assert!(!process_dead(grandchild));
        if let Some(pid) = Pid::from_raw(grandchild) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }

    #[test]
    fn dropping_the_run_kills_the_process_group() {
        let dir = fixture_dir("cancel");
        let pidfile = dir.join("pid");
        let s = script(&dir, "s", r#"sleep 30 & echo $! > "$1"; sleep 30; wait"#);
        let sp = spec(s, &[pidfile.to_str().unwrap()]);
        let grandchild = rt::block_on(async {
            let pid_ready = async {
                while !std::fs::read_to_string(&pidfile)
                    .unwrap_or_default()
                    .ends_with('\n')
                {
                    rt::sleep(Duration::from_millis(10)).await;
                }
            };
            let raced = future::or(async { Some(run(sp).await) }, async {
                pid_ready.await;
                None
            });
            assert!(
                rt::deadline(Instant::now() + Duration::from_secs(10), raced)
                    .await
                    .unwrap()
                    .is_none()
            );
            read_pid(&pidfile)
        });
        assert!(
            eventually(Duration::from_secs(5), || process_dead(grandchild)),
            "grandchild {grandchild} survived"
        );
    }

    #[test]
    fn leftovers_kill_reaches_what_the_child_left_in_its_group() {
        let dir = fixture_dir("leftovers");
        let pidfile = dir.join("pid");
        let s = script(&dir, "s", r#"sleep 30 & echo $! > "$1"; exit 0"#);
        let mut sp = spec(s, &[pidfile.to_str().unwrap()]);
        sp.leftovers = Leftovers::Kill;
        let out = run_blocking(sp);
        assert_eq!(out.exit, Exit::Code(0));
        assert!(!out.timed_out);
        let grandchild = read_pid(&pidfile);
        assert!(
            eventually(Duration::from_secs(5), || process_dead(grandchild)),
            "grandchild {grandchild} survived"
        );
    }

    #[test]
    fn group_identity_tells_its_own_group_from_a_reused_id() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let group = Group::of_leader(pid);
        assert!(group.started.is_some(), "{group:?}");
        assert!(group.alive());
        // Same id, another leader start: an unrelated group reusing the id.
        let (boot, _) = group.started.as_deref().unwrap().split_once('/').unwrap();
        let other = Group {
            pgid: pid,
            started: Some(format!("{boot}/1")),
        };
        assert!(!other.alive());
        assert!(other.kill_and_wait(Duration::from_millis(10)));
        assert!(!process_dead(pid), "a foreign group must not be killed");
        // Another boot, or nothing recorded: never ours.
        let unverifiable = Group {
            pgid: pid,
            started: None,
        };
        assert!(!unverifiable.alive());
        assert!(group.kill_and_wait(Duration::from_secs(5)));
        let _ = child.wait();
        assert!(!group.alive());
    }

    #[test]
    fn missing_program_is_a_spawn_failure() {
        let out = run_blocking(spec("/nonexistent/ctrl-exec-test", &[]));
        assert!(
            matches!(&out.exit, Exit::SpawnFailed(e) if e.contains("No such file")),
            "{:?}",
            out.exit
        );
    }
}
