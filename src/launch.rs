//! The internal launcher applet, and how `proc` starts children through it.
//!
//! `ctrl-exec --launch <parent-pid> <status-fd> <program> [args...]` is not a
//! user-facing role: [`crate::proc`] starts every script and hook through it
//! so the child dies with the process that started it, even on `kill -9`.
//! The crate forbids `unsafe`, so `Command::pre_exec` is out; instead the
//! launcher, already the child, sets its own parent-death signal to `SIGKILL`
//! (`PR_SET_PDEATHSIG`), checks that its parent is still the expected one
//! (the parent may have died before the `prctl`), then replaces itself with
//! the program by `execve`. The death signal survives the exec for programs
//! that are not set-user-ID or set-group-ID; argv (argv[0] is the program
//! path), the environment, the open stdio and the process group the parent
//! gave the launcher are passed on unchanged.
//!
//! An exec failure must still read as "could not start" (exit 127 and the
//! "cannot execute" message on the agent, a denial on a hook), not as a
//! program that exited 127. The parent makes a close-on-exec pipe and passes
//! the number of its read end; on failure the launcher opens
//! `/proc/<parent-pid>/fd/<n>` for writing (a second writer on the same pipe,
//! so no descriptor is ever inherited and nothing leaks into the program),
//! writes `errno:<n>` and exits [`exit::LAUNCH_FAILED`]. After reaping, the
//! parent reads the pipe without blocking: a message there means the program
//! never ran. Without `/proc` the launcher prints the error on stderr
//! instead, and the run reports a plain exit 127.
//!
//! With a sandbox (`--launch <parent-pid> <status-fd> --sandbox <sandbox
//! args> <program> [args...]`, see [`crate::sandbox`]) the launcher opens the
//! status pipe first, while it still may, confines itself, checks that the
//! sandbox's user can execute the program, and only then sets the death
//! signal (a change of user clears it). A confinement failure is reported as
//! `sandbox:<message>` with exit [`exit::LAUNCH_SANDBOX_FAILED`].
//!
//! The death signal is tied to the thread that spawned the launcher: spawn
//! from a thread that lives as long as the process (the executor thread), not
//! from a pool thread that may exit first.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Once, OnceLock};

use rustix::pipe::PipeFlags;
use rustix::process::{Pid, Signal};

use crate::sandbox::Sandbox;
use crate::{exit, log};

/// The first argument that selects the launcher.
pub const FLAG: &str = "--launch";

/// argv[0] the launcher is started with, so the multicall dispatch finds it
/// whatever name the binary is installed under.
pub const ARGV0: &str = "ctrl-exec";

/// The argument that announces sandbox arguments before the program.
const SANDBOX_FLAG: &str = "--sandbox";

/// Prefix of a sandbox failure on the status pipe.
const SANDBOX_PREFIX: &str = "sandbox:";

/// Bytes read from the status pipe: `errno:<n>` or a short text.
const STATUS_MAX_BYTES: usize = 512;

/// The launcher executable, resolved once at startup; `None` until then.
static LAUNCHER: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Resolves the launcher (this executable) once; called by `main` at
/// startup, before any thread starts. Library users and unit tests that
/// never call it spawn children directly.
pub fn init() {
    let _ = LAUNCHER.set(resolve());
}

fn resolve() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let meta = std::fs::metadata(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Ok(exe)
    } else {
        Err(format!("{} is not an executable file", exe.display()))
    }
}

/// The launcher applet: `args` are what follows [`FLAG`]. Returns only when
/// the program could not be executed (or the parent is already gone).
pub fn main(args: &[OsString]) -> ExitCode {
    let Some(req) = parse(args) else {
        eprintln!("{ARGV0}: {FLAG} is internal: {ARGV0} {FLAG} <parent-pid> <status-fd> [{SANDBOX_FLAG} ...] <program> [args...]");
        return ExitCode::from(exit::USAGE);
    };
    // Opened before a change of user takes away the right to open it.
    let mut status = req.sandbox.as_ref().and_then(|_| open_status(&req));
    if let Some(sandbox) = &req.sandbox {
        let confined = sandbox.apply().and_then(|()| {
            rustix::fs::access(req.program, rustix::fs::Access::EXEC_OK).map_err(|_| {
                io::Error::other(format!(
                    "'{}' is not executable by the profile's run_as user (uid {})",
                    Path::new(req.program).display(),
                    sandbox.uid
                ))
            })
        });
        if let Err(e) = confined {
            report(&req, status.as_mut(), &format!("{SANDBOX_PREFIX}{e}"), &e);
            return ExitCode::from(exit::LAUNCH_SANDBOX_FAILED);
        }
    }
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        return fail(&req, status.as_mut(), &io::Error::from(e));
    }
    // The parent may have died between fork and the prctl above; then the
    // signal will never come, and nobody waits for this program.
    if rustix::process::getppid() != Some(req.parent) {
        return ExitCode::from(exit::LAUNCH_ORPHANED);
    }
    let err = Command::new(req.program).args(req.args).exec();
    fail(&req, status.as_mut(), &err)
}

/// A parsed launcher invocation.
struct Request<'a> {
    parent: Pid,
    status_fd: i32,
    sandbox: Option<Sandbox>,
    program: &'a OsStr,
    args: &'a [OsString],
}

fn parse(args: &[OsString]) -> Option<Request<'_>> {
    let number = |a: &OsString| a.to_str().and_then(|s| s.parse::<i32>().ok());
    let parent = args
        .first()
        .and_then(number)
        .filter(|n| *n > 0)
        .and_then(Pid::from_raw)?;
    let status_fd = args.get(1).and_then(number).filter(|n| *n >= 0)?;
    let mut at = 2;
    let sandbox = if args.get(at).is_some_and(|a| a == SANDBOX_FLAG) {
        let (sandbox, used) = Sandbox::parse(&args[at + 1..])?;
        at += 1 + used;
        Some(sandbox)
    } else {
        None
    };
    let program = args.get(at)?;
    Some(Request {
        parent,
        status_fd,
        sandbox,
        program,
        args: &args[at + 1..],
    })
}

/// Opens the parent's status pipe for writing (see the module doc).
fn open_status(req: &Request<'_>) -> Option<std::fs::File> {
    let pipe = format!("/proc/{}/fd/{}", req.parent.as_raw_nonzero(), req.status_fd);
    OpenOptions::new().write(true).open(pipe).ok()
}

/// Writes `message` on the status pipe (`status`, else opened now); prints
/// `err` on stderr when there is no pipe.
fn report(req: &Request<'_>, status: Option<&mut std::fs::File>, message: &str, err: &io::Error) {
    let reported = match status {
        Some(f) => f.write_all(message.as_bytes()),
        None => match open_status(req) {
            Some(mut f) => f.write_all(message.as_bytes()),
            None => Err(io::ErrorKind::NotFound.into()),
        },
    };
    if reported.is_err() {
        eprintln!(
            "{ARGV0}: cannot execute '{}': {err}",
            Path::new(req.program).display()
        );
    }
}

/// Reports an exec failure and exits [`exit::LAUNCH_FAILED`].
fn fail(req: &Request<'_>, status: Option<&mut std::fs::File>, err: &io::Error) -> ExitCode {
    let message = match err.raw_os_error() {
        Some(n) => format!("errno:{n}"),
        None => err.to_string(),
    };
    report(req, status, &message, err);
    ExitCode::from(exit::LAUNCH_FAILED)
}

/// A command for `program` with `args`, through the launcher when there is
/// one, and the status of that launch; the caller adds environment, stdio
/// and the process group, then spawns it.
pub fn command(program: &Path, args: &[String], sandbox: Option<&Sandbox>) -> (Command, Status) {
    if let Some(exe) = launcher() {
        match rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) {
            Ok((read, write)) => {
                // Only the launcher's own open of /proc/<us>/fd/<n> writes here.
                drop(write);
                let mut cmd = Command::new(exe);
                cmd.arg0(ARGV0)
                    .arg(FLAG)
                    .arg(std::process::id().to_string())
                    .arg(read.as_raw_fd().to_string());
                if let Some(sandbox) = sandbox {
                    cmd.arg(SANDBOX_FLAG).args(sandbox.to_args());
                }
                cmd.arg(program).args(args);
                return (cmd, Status(Some(read)));
            }
            Err(e) => warn_fallback(&format!("cannot create status pipe: {e}")),
        }
    }
    if sandbox.is_some() {
        // Never run a program unconfined that was meant to be confined.
        let mut cmd = Command::new("/nonexistent/ctrl-exec-launcher-unavailable");
        cmd.arg0(program);
        return (cmd, Status(None));
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    (cmd, Status(None))
}

/// The read end of a launch's status pipe (see the module doc); empty when
/// the program was spawned directly.
#[derive(Debug)]
pub struct Status(Option<OwnedFd>);

impl Status {
    /// After the child was reaped with exit code `code`: the error the
    /// launcher reported when it could not execute the program, if any.
    pub fn exec_error(&self, code: i32) -> Option<LaunchError> {
        if code != i32::from(exit::LAUNCH_FAILED) && code != i32::from(exit::LAUNCH_SANDBOX_FAILED)
        {
            return None;
        }
        let fd = self.0.as_ref()?;
        let mut buf = [0u8; STATUS_MAX_BYTES];
        // Non-blocking: empty means the program itself ran and exited 126/127.
        let n = rustix::io::read(fd, &mut buf).ok().filter(|n| *n > 0)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(why) = text.strip_prefix(SANDBOX_PREFIX) {
            return Some(LaunchError::Sandbox(why.to_string()));
        }
        Some(LaunchError::Exec(
            match text.strip_prefix("errno:").and_then(|n| n.parse().ok()) {
                Some(errno) => io::Error::from_raw_os_error(errno).to_string(),
                None => text.into_owned(),
            },
        ))
    }
}

/// Why the launcher did not run the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// `execve` failed (the error text).
    Exec(String),
    /// The sandbox could not be applied (the message).
    Sandbox(String),
}

/// The launcher path, or `None` (direct spawn): not initialised, or it could
/// not be resolved (logged once).
fn launcher() -> Option<&'static Path> {
    match LAUNCHER.get()? {
        Ok(exe) => Some(exe),
        Err(why) => {
            warn_fallback(why);
            None
        }
    }
}

/// Logs once that children are spawned directly and so may outlive us.
fn warn_fallback(why: &str) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        log::warn(
            "launcher-unavailable",
            &[
                (
                    "EFFECT",
                    "children are spawned directly and may outlive this process",
                ),
                ("REASON", why),
            ],
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn launcher_arguments_parse_or_refuse() {
        let args = os(&["42", "7", "/bin/echo", "a", "b c"]);
        let req = parse(&args).unwrap();
        assert_eq!(req.parent.as_raw_nonzero().get(), 42);
        assert_eq!(req.status_fd, 7);
        assert_eq!(req.program, "/bin/echo");
        assert_eq!(req.args, &os(&["a", "b c"])[..]);
        for bad in [
            &["0", "7", "/bin/echo"][..],
            &["-1", "7", "/bin/echo"],
            &["x", "7", "/bin/echo"],
            &["42", "-7", "/bin/echo"],
            &["42", "7"],
            &[],
        ] {
            assert!(parse(&os(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn exec_error_reads_the_errno_only_after_exit_127() {
        let (read, write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).unwrap();
        let launch = Status(Some(read));
        assert_eq!(
            launch.exec_error(127),
            None,
            "an empty pipe is a real exit 127"
        );
        rustix::io::write(&write, b"errno:2").unwrap();
        assert_eq!(launch.exec_error(1), None);
        match launch.exec_error(127).unwrap() {
            LaunchError::Exec(err) => assert!(err.contains("No such file"), "{err}"),
            other => panic!("{other:?}"),
        }
        rustix::io::write(&write, b"sandbox:setuid 7: EPERM").unwrap();
        assert_eq!(
            launch.exec_error(126),
            Some(LaunchError::Sandbox("setuid 7: EPERM".into()))
        );
    }
}
