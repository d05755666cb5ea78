//! `ced pairing-mode start|stop`: the detached pairing listener and its
//! pidfile (`<pid>\n<port>\n`, written by the child once it listens).
//!
//! `start` re-executes this binary as `pairing-mode --pairing-child` in its
//! own process group with no stdio, then waits for the pidfile; `stop` sends
//! SIGTERM and waits for the process to go. Both run before any executor, so
//! they may block.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::conf::DispatcherConf;
use crate::dispatcher::{Args, CliError};

/// How long `pairing-mode start`/`stop` wait for the background process.
pub const BACKGROUND_WAIT: Duration = Duration::from_secs(5);

/// The pid and port in the pidfile, if it is there and well formed.
fn read_pidfile(path: &Path) -> Option<(i32, u16)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let port = lines
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    Some((pid, port))
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    // An exited child not yet reaped by its new parent (a slow or absent init
    // in a container) still answers kill(0); it no longer serves.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    !zombie
        && rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// `ced pairing-mode start`: spawns the detached listener and waits for its pidfile.
pub fn start_background(
    a: &Args,
    conf: &DispatcherConf,
    port: u16,
    timeout: u64,
) -> Result<u8, CliError> {
    use std::os::unix::process::CommandExt;
    let pidfile = conf.pairing_pidfile();
    if let Some((pid, _)) = read_pidfile(&pidfile).filter(|(pid, _)| alive(*pid)) {
        crate::outln!("Pairing mode is already running in the background (PID {pid}).")?;
        crate::outln!("Stop it with: ctrl-exec-dispatcher pairing-mode stop")?;
        return Ok(1);
    }
    if !conf.cert.exists() || !conf.key.exists() {
        return Err(CliError::Failed(format!(
            "Cannot start pairing mode: the dispatcher certificate is missing: {}\nRun 'ctrl-exec-dispatcher setup-ctrl-exec' first.",
            conf.cert.display()
        )));
    }
    let _ = std::fs::remove_file(&pidfile);
    let exe = std::env::current_exe().map_err(|e| CliError::Failed(e.to_string()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("ctrl-exec-dispatcher")
        .arg("pairing-mode")
        .arg("--pairing-child")
        .arg("--config")
        .arg(&a.config)
        .arg("--port")
        .arg(port.to_string())
        .arg("--timeout")
        .arg(timeout.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::Failed(format!("Pairing mode failed to start: {e}")))?;
    let deadline = Instant::now() + BACKGROUND_WAIT;
    while Instant::now() < deadline {
        if let Some((pid, bound)) = read_pidfile(&pidfile) {
            crate::outln!("Pairing mode started in the background on port {bound} (PID {pid}).")?;
            crate::outln!("It auto-stops after {timeout}s; stop sooner with:")?;
            crate::outln!("    ctrl-exec-dispatcher pairing-mode stop")?;
            return Ok(0);
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CliError::Failed(
        "Pairing mode failed to start - check the logs.".into(),
    ))
}

/// `ced pairing-mode stop`: SIGTERM to the detached listener, then wait for it to exit.
pub fn stop_background(conf: &DispatcherConf) -> Result<u8, CliError> {
    let pidfile = conf.pairing_pidfile();
    let Some((pid, _)) = read_pidfile(&pidfile) else {
        crate::outln!("No background pairing mode is running.")?;
        return Ok(0);
    };
    if !alive(pid) {
        let _ = std::fs::remove_file(&pidfile);
        crate::outln!("No background pairing mode is running (cleared stale pidfile).")?;
        return Ok(0);
    }
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + BACKGROUND_WAIT;
    while Instant::now() < deadline {
        if !alive(pid) {
            crate::outln!("Pairing mode stopped (was PID {pid}); pairing port closed.")?;
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::outln!("Sent stop to PID {pid} but it has not exited yet - check the logs.")?;
    Ok(1)
}
