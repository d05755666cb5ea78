//! `serve <socket> <agent.conf> <scripts.conf> <peer-user>`: the executor's
//! accept loop on its unix socket.
//!
//! Each accepted connection is checked by `SO_PEERCRED` (the agent user or
//! root only), then served on its own thread: one framed request, one
//! framed response. The executor trusts nothing in the request but the
//! script *name*, stdin and args: it re-reads agent.conf and scripts.conf
//! for every request and resolves path and profile itself. A malformed
//! frame ends that connection only. A front-end that hangs up while its
//! script runs gets the script's process group killed.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use smol::io::AsyncReadExt;

use super::limits::{
    HANGUP_PROBE_BYTES, MAX_CONNECTIONS, REQUEST_READ_TIMEOUT, RESPONSE_WRITE_TIMEOUT,
};
use super::{lookup, Deny, ExecError};
use crate::conf::account::{self, Account};
use crate::conf::{self, AgentConf};
use crate::proc::{self, Env, Exit, Leftovers, Spec};
use crate::proto::frame::{
    ExecRequest, ExecResponse, FLAG_SIGNAL_SHIFT, FLAG_STDERR_TRUNCATED, FLAG_STDOUT_TRUNCATED,
    FLAG_TIMED_OUT,
};
use crate::sandbox::{self, Sandbox};
use crate::{log, rt};

/// Set (to anything) to let `serve` start without root: for tests of the
/// protocol only, since no profile can be applied then.
pub const ALLOW_UNPRIVILEGED_ENV: &str = "CTRL_EXEC_EXEC_ALLOW_UNPRIV";

/// Where the executor reads its configuration, once per request.
struct Config {
    agent_conf: PathBuf,
    scripts: PathBuf,
    peer_uid: u32,
    active: AtomicUsize,
}

/// Runs the executor until SIGTERM or SIGINT.
/// What `serve` checks before it listens (`ctrl-exec-exec check`, for init
/// scripts): both files load and the peer user exists. Later errors are
/// per request.
pub fn check(
    agent_conf: &Path,
    scripts: &Path,
    peer_user: &str,
) -> Result<(AgentConf, Account), ExecError> {
    let conf = AgentConf::load(agent_conf).map_err(|e| ExecError::Startup(e.to_string()))?;
    conf::load_allowlist(scripts, &[]).map_err(|e| ExecError::Startup(e.to_string()))?;
    let peer = account::lookup(peer_user).map_err(ExecError::Startup)?;
    Ok((conf, peer))
}

pub fn serve(
    socket: &Path,
    agent_conf: &Path,
    scripts: &Path,
    peer_user: &str,
) -> Result<(), ExecError> {
    if !rustix::process::geteuid().is_root() && std::env::var_os(ALLOW_UNPRIVILEGED_ENV).is_none() {
        return Err(ExecError::Failed(
            "serve must run as root (it changes users and capabilities)".into(),
        ));
    }
    let (conf, peer) = check(agent_conf, scripts, peer_user)?;
    let listener = listen(socket, &peer)?;
    log::init(
        "ctrl-exec-exec",
        if conf.syslog {
            log::Target::Syslog
        } else {
            log::Target::Stderr
        },
    );
    let config = Arc::new(Config {
        agent_conf: agent_conf.to_path_buf(),
        scripts: scripts.to_path_buf(),
        peer_uid: peer.uid,
        active: AtomicUsize::new(0),
    });
    log::info(
        "executor-start",
        &[
            ("PEER_UID", &peer.uid.to_string()),
            ("SOCKET", &socket.display().to_string()),
        ],
    );
    std::thread::spawn(move || accept_loop(&listener, &config));
    // Scripts and operators wait for this line, as for the other roles.
    let _ = crate::outln!("ctrl-exec-exec listening on {}", socket.display());
    let signal = rt::block_on(stop_signal()).map_err(|e| ExecError::Failed(e.to_string()))?;
    let killed = proc::kill_all();
    let _ = std::fs::remove_file(socket);
    log::info(
        "executor-stop",
        &[("KILLED", &killed.to_string()), ("SIGNAL", signal)],
    );
    Ok(())
}

async fn stop_signal() -> io::Result<&'static str> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    Ok(match signals.next().await {
        Some(Ok(Signal::Int)) => "INT",
        _ => "TERM",
    })
}

/// Binds `socket` (replacing a stale socket, never another kind of file),
/// mode 0600, owned by the peer user.
fn listen(socket: &Path, peer: &Account) -> Result<UnixListener, ExecError> {
    let failed =
        |what: &str, e: io::Error| ExecError::Failed(format!("{what} {}: {e}", socket.display()));
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(socket).map_err(|e| failed("cannot remove stale socket", e))?
        }
        Ok(_) => {
            return Err(ExecError::Failed(format!(
                "{} exists and is not a socket; refusing to replace it",
                socket.display()
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(socket).map_err(|e| failed("cannot listen on", e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed("cannot chmod", e))?;
    std::os::unix::fs::chown(socket, Some(peer.uid), Some(peer.gid))
        .map_err(|e| failed("cannot chown", e))?;
    Ok(listener)
}

fn accept_loop(listener: &UnixListener, config: &Arc<Config>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let uid = match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(cred) => cred.uid.as_raw(),
            Err(e) => {
                log::warn("executor-peer-unknown", &[("ERROR", &e.to_string())]);
                continue;
            }
        };
        if uid != config.peer_uid && uid != 0 {
            log::warn("executor-peer-refused", &[("UID", &uid.to_string())]);
            continue;
        }
        if config.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            config.active.fetch_sub(1, Ordering::AcqRel);
            answer(&stream, &refusal("executor: busy"));
            continue;
        }
        let config = Arc::clone(config);
        let spawned = std::thread::Builder::new().spawn(move || {
            handle(stream, &config);
            config.active.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            log::error("executor-thread-fail", &[]);
        }
    }
}

/// An answer with no output: `exit` and the message as its stderr.
fn failure(exit: i32, message: impl Into<Vec<u8>>) -> ExecResponse {
    ExecResponse {
        exit,
        stderr: message.into(),
        ..ExecResponse::default()
    }
}

/// A request refused before anything ran (exit -1, as the original).
fn refusal(message: &str) -> ExecResponse {
    failure(-1, message)
}

fn answer(mut stream: &UnixStream, response: &ExecResponse) {
    let _ = stream.set_write_timeout(Some(RESPONSE_WRITE_TIMEOUT));
    let _ = stream.write_all(&response.encode());
}

/// Reads one request frame; `Ok(None)` when the peer sent nothing at all.
fn read_request(mut stream: &UnixStream) -> Result<Option<ExecRequest>, String> {
    stream
        .set_read_timeout(Some(REQUEST_READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match stream.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("truncated length".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let total = ExecRequest::total(prefix).map_err(|e| e.to_string())?;
    // Grows with what actually arrives, never reserved from the length.
    let mut body = Vec::new();
    stream
        .take(total as u64)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() < total {
        return Err(format!(
            "frame truncated at {} of {total} bytes",
            body.len()
        ));
    }
    ExecRequest::decode_body(&body)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn handle(stream: UnixStream, config: &Config) {
    let request = match read_request(&stream) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(why) => {
            log::warn("executor-malformed", &[("ERROR", &why)]);
            answer(&stream, &refusal("executor: malformed request"));
            return;
        }
    };
    let script = String::from_utf8_lossy(&request.script).into_owned();
    let reqid = String::from_utf8_lossy(&request.reqid).into_owned();
    let prepared = match prepare(config, &script, request) {
        Ok(p) => p,
        Err(response) => {
            log::warn(
                "executor-deny",
                &[
                    ("REASON", &String::from_utf8_lossy(&response.stderr)),
                    ("REQID", &reqid),
                    ("SCRIPT", &script),
                ],
            );
            answer(&stream, &response);
            return;
        }
    };
    let path = prepared.program.display().to_string();
    let Some(outcome) = run_watching(&stream, prepared) else {
        log::warn(
            "executor-peer-gone",
            &[("REQID", &reqid), ("SCRIPT", &script)],
        );
        return;
    };
    let response = response_of(outcome, &path);
    log::info(
        "executor-run",
        &[
            ("EXIT", &response.exit.to_string()),
            ("REQID", &reqid),
            ("SCRIPT", &script),
        ],
    );
    answer(&stream, &response);
}

/// Resolves `script` from the executor's own files and builds its run.
fn prepare(config: &Config, script: &str, request: ExecRequest) -> Result<Spec, ExecResponse> {
    let conf_error = |what: &str, e: &dyn std::fmt::Display| {
        log::error("executor-config", &[("ERROR", &format!("{what}: {e}"))]);
        refusal("executor: config error")
    };
    let agent_conf =
        AgentConf::load(&config.agent_conf).map_err(|e| conf_error("agent.conf", &e))?;
    let scripts =
        conf::load_allowlist(&config.scripts, &[]).map_err(|e| conf_error("scripts.conf", &e))?;
    let resolved = lookup(&agent_conf, &scripts, script).map_err(|d| {
        refusal(match d {
            Deny::NotAllowlisted => "executor: script not permitted",
            Deny::NotInScriptDirs => "executor: script not in script_dirs",
            Deny::UndefinedProfile => "executor: undefined profile",
        })
    })?;
    let profile = &resolved.profile;
    let cannot_apply = |why: String| {
        failure(
            126,
            format!(
                "executor: cannot apply profile '{}': {why}",
                resolved.entry.profile
            ),
        )
    };
    let who = account::lookup(profile.run_as.as_deref().unwrap_or("root")).map_err(cannot_apply)?;
    let caps = sandbox::cap_mask(&profile.caps).map_err(cannot_apply)?;
    let read_only = agent_dirs(&config.agent_conf, &agent_conf);
    let timeout = resolved.entry.timeout.unwrap_or(agent_conf.script_timeout);
    Ok(Spec {
        program: resolved.entry.path.clone(),
        args: request
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        env: Env::Clean(account_env(&who)),
        stdin: request.stdin,
        stdin_timeout: agent_conf.stdin_timeout,
        deadline: Instant::now() + timeout,
        capture: Some(agent_conf.max_output_bytes),
        leftovers: Leftovers::Keep,
        sandbox: Some(Sandbox {
            uid: who.uid,
            gid: who.gid,
            groups: who.groups,
            caps,
            no_new_privs: profile.no_new_privileges,
            read_only,
            writable: profile.writable.clone(),
        }),
    })
}

/// The clean script environment, with `HOME`, `USER` and `LOGNAME` those
/// of the account the script runs as, not the executor's.
fn account_env(who: &Account) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = proc::script_env()
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "HOME" | "USER" | "LOGNAME"))
        .collect();
    for (key, value) in [
        ("HOME", &who.home),
        ("USER", &who.name),
        ("LOGNAME", &who.name),
    ] {
        env.push((key.to_string(), value.clone()));
    }
    env
}

/// What a script must never write, whatever its profile: the agent's config
/// dir and everything the agent writes (state, job records, the staged
/// certificate), since what the agent reads back from there it trusts.
fn agent_dirs(agent_conf_path: &Path, agent_conf: &AgentConf) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let candidates = [
        agent_conf_path.parent(),
        Some(agent_conf.state_dir.as_path()),
        Some(agent_conf.async_runs_dir.as_path()),
        agent_conf.cert_staging_path.parent(),
    ];
    for dir in candidates.into_iter().flatten() {
        // A dir inside one already listed is covered by its bind.
        if !dir.as_os_str().is_empty() && !dirs.iter().any(|d| dir.starts_with(d)) {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs
}

/// Runs `spec` unless the front-end hangs up first (`None`: the run was
/// dropped, which kills its process group).
fn run_watching(stream: &UnixStream, spec: Spec) -> Option<proc::Outcome> {
    let watch = stream.try_clone().and_then(smol::Async::new).ok();
    let outcome = rt::block_on(smol::future::or(
        async { Some(proc::run(spec).await) },
        async {
            let Some(mut watch) = watch else {
                return std::future::pending().await;
            };
            let mut probe = [0u8; HANGUP_PROBE_BYTES];
            loop {
                match watch.read(&mut probe).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        },
    ));
    // The watcher shares the socket's file description and made it
    // non-blocking; the answer is written with a blocking timeout.
    let _ = stream.set_nonblocking(false);
    outcome
}

fn response_of(out: proc::Outcome, path: &str) -> ExecResponse {
    let mut flags = 0;
    if out.stdout_truncated {
        flags |= FLAG_STDOUT_TRUNCATED;
    }
    if out.stderr_truncated {
        flags |= FLAG_STDERR_TRUNCATED;
    }
    let mut stderr = out.stderr;
    let exit = match out.exit {
        _ if out.timed_out => {
            flags |= FLAG_TIMED_OUT;
            -1
        }
        Exit::Code(c) => c,
        Exit::Signal(s) => {
            flags |= (s as u32 & 0xff) << FLAG_SIGNAL_SHIFT;
            128 + s
        }
        Exit::SpawnFailed(e) => {
            stderr.extend_from_slice(format!("executor: exec '{path}' failed: {e}").as_bytes());
            127
        }
        Exit::SandboxFailed(e) => {
            stderr.extend_from_slice(format!("executor: {e}").as_bytes());
            126
        }
    };
    ExecResponse {
        exit,
        stdout: out.stdout,
        stderr,
        flags: Some(flags),
    }
}
