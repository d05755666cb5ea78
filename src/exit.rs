//! Exit codes, named, as `reference/surface.md` gives them, and the trait
//! every role error implements so `main` can print it once.

use std::fmt;
use std::io;

/// Success.
pub const SUCCESS: u8 = 0;
/// The operation failed, a host failed, a hook denied, a lock conflicted.
pub const FAILURE: u8 = 1;
/// Bad invocation: unknown mode or option, missing argument. `EX_USAGE`
/// (sysexits.h), so it never reads as a `wait` timeout or a pairing
/// timeout, which keep the original's 2 because scripts test for it.
pub const USAGE: u8 = 64;
/// `ced wait`: the run did not complete before `--timeout`.
pub const WAIT_TIMED_OUT: u8 = 2;
/// `cea request-pairing --background`: no decision before `--timeout`.
pub const PAIRING_TIMED_OUT: u8 = 2;
/// `cea request-pairing --background`: the operator denied the request.
pub const PAIRING_DENIED: u8 = 3;
/// `ced maintain` and `ced rotate-cert` did everything they could, but
/// something needs another run or an operator: an agent was unreachable or
/// refused a step, or a phase failed (each is printed and logged).
/// `EX_TEMPFAIL` (sysexits.h): the next timer run retries.
pub const MAINTENANCE_INCOMPLETE: u8 = 75;
/// `ctrl-exec-exec resolve`: its agent.conf or scripts.conf is unusable
/// (the original executor's code, which its callers test for).
pub const EXEC_CONFIG: u8 = 2;
/// `EX_CONFIG` (sysexits.h): configuration unusable; service managers are
/// told not to restart in a loop.
pub const CONFIG: u8 = 78;
/// The multicall binary was invoked under a name that is no role.
pub const UNKNOWN_ROLE: u8 = 127;
/// The internal launcher (`ctrl-exec --launch`) could not execute the
/// program; the error is on its status pipe (see `launch`). The shell's code
/// for "command not found", which is what a parent without the pipe sees.
pub const LAUNCH_FAILED: u8 = 127;
/// The internal launcher could not confine the program as its sandbox
/// says, or the sandbox's user cannot execute it; the program never ran. The
/// shell's code for "found but cannot execute".
pub const LAUNCH_SANDBOX_FAILED: u8 = 126;
/// The internal launcher found its parent gone before the program started,
/// and did not start it.
pub const LAUNCH_ORPHANED: u8 = 1;

/// An error a role's entry point returns: printed once by `main` as
/// `<role>: <message>`, then the process exits with [`Failure::exit_code`].
pub trait Failure: fmt::Display {
    /// The process exit code.
    fn exit_code(&self) -> u8;

    /// Whether to exit without a message (stdout closed by the reader,
    /// as in `ced list-agents | head -1`).
    fn quiet(&self) -> bool {
        false
    }
}

/// What a role's entry point returns.
pub type Outcome = Result<u8, Box<dyn Failure>>;

/// Whether an output error means the reader went away: not worth a
/// message, and not a failure of the command.
pub fn is_closed_output(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}
