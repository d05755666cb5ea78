//! The auth hook runner shared by the dispatcher CLI, the API and the agent.
//!
//! An operator-supplied executable decides whether a request is authorised
//! (surface.md section 5). [`check`] runs it directly with no arguments, hands
//! it the request twice (a JSON object on stdin and `ENVEXEC_*` variables on
//! top of the caller's environment), discards its output, and maps its exit
//! status to a [`Verdict`].
//!
//! Invariants:
//! - Every failure mode denies: a missing or non-executable hook, a failed
//!   start, a timeout, and death by a signal (the original fails open on a
//!   signal; we do not).
//! - The hook timeout covers writing stdin and waiting, measured from start;
//!   on expiry the hook's whole process group is killed and reaped.
//! - A hook leaves nothing behind: when it exits, whatever it forked and left
//!   in its process group is killed, and it dies with the process that ran it
//!   (it is started through the launcher, see `crate::launch`).
//! - Every decision is logged as `ACTION=auth`; the token never is.
//!
//! Callers decide what "no hook configured" means; this module only runs one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use miniserde::json::Value;

use crate::proc::{self, Env, Exit, Leftovers, Spec};
use crate::proto::json::{self, Builder};
use crate::{log, time};

/// A configured auth hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The executable, run directly (argv[0] = this path, no arguments).
    pub path: PathBuf,
    /// Bound on the whole call (stdin delivery and run), from its start.
    pub timeout: Duration,
}

/// Who submitted the original request (API `/status` lookups).
pub use crate::proto::Submitter;

/// What is being authorised. Fields that do not apply are empty strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `run`, `ping`, `api`, `status`, `discovery` or `rotate`.
    pub action: String,
    /// Script name for `run`.
    pub script: String,
    /// Target hosts (empty on the agent).
    pub hosts: Vec<String>,
    /// Script arguments (for `rotate`: `[action, serial]`).
    pub args: Vec<String>,
    /// Claimed user.
    pub username: String,
    /// Advisory token; passed to the hook, never logged.
    pub token: String,
    /// The requesting peer's address.
    pub source_ip: String,
    /// Dispatcher id (agent side).
    pub dispatcher: String,
    /// Dispatcher certificate serial (agent side).
    pub dispatcher_serial: String,
    /// Request id (`status` lookups).
    pub reqid: String,
    /// The original submitter (`status` lookups), else `None` (JSON `null`).
    pub submitter: Option<Submitter>,
    /// HTTP method of an API request (extension; empty elsewhere).
    pub method: String,
    /// HTTP path of an API request (extension; empty elsewhere).
    pub path: String,
}

/// The hook's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authorised.
    Allow,
    /// Refused, with the code reported to the client and a reason.
    Deny {
        /// 1 denied, 2 bad credentials, 3 insufficient privilege, or the
        /// hook's own exit code.
        code: i32,
        /// Human-readable reason (see [`reason_for_exit`]).
        reason: String,
    },
}

impl Verdict {
    /// A denial with `code` and `reason`.
    pub fn deny(code: i32, reason: impl Into<String>) -> Verdict {
        Verdict::Deny {
            code,
            reason: reason.into(),
        }
    }
}

/// Runs `hook` for `req` and returns its verdict; logs the decision.
///
/// Never fails: anything that keeps the hook from answering is a denial with
/// code 1. Returns within about `hook.timeout` plus
/// [`proc::EXIT_DRAIN_GRACE`].
pub async fn check(hook: &Hook, req: &Request) -> Verdict {
    if !is_executable_file(&hook.path) {
        let reason = format!(
            "auth hook not found or not executable: {}",
            hook.path.display()
        );
        // Operators alert on this exact token (security.md 3.3).
        log_decision(req, "hook-not-executable", false, Some(&hook.path));
        return Verdict::deny(1, reason);
    }

    let timestamp = time::iso8601(time::now());
    let started = Instant::now();
    let spec = Spec {
        program: hook.path.clone(),
        args: Vec::new(),
        env: Env::Inherit(env_vars(req, &timestamp)),
        stdin: stdin_json(req, &timestamp).into_bytes(),
        stdin_timeout: hook.timeout,
        deadline: started + hook.timeout,
        capture: None,
        leftovers: Leftovers::Kill,
        sandbox: None,
    };
    let out = proc::run(spec).await;

    let verdict = if out.timed_out {
        log::warn("auth-hook-timeout", &[("TIMEOUT", &seconds(hook.timeout))]);
        Verdict::deny(1, "auth hook timed out")
    } else {
        match out.exit {
            Exit::Code(0) => Verdict::Allow,
            Exit::Code(code) => Verdict::deny(code, reason_for_exit(code)),
            Exit::Signal(sig) => Verdict::deny(1, format!("hook killed by signal {sig}")),
            Exit::SpawnFailed(err) | Exit::SandboxFailed(err) => {
                Verdict::deny(1, format!("auth hook failed to start: {err}"))
            }
        }
    };
    match &verdict {
        Verdict::Allow => log_decision(req, "authorised", true, None),
        Verdict::Deny { reason, .. } => log_decision(req, reason, false, None),
    }
    verdict
}

/// The reason text for a hook exit code: 1 `denied`, 2 `bad credentials`,
/// 3 `insufficient privilege`, any other N `hook exited N`.
pub fn reason_for_exit(code: i32) -> String {
    match code {
        1 => "denied".to_string(),
        2 => "bad credentials".to_string(),
        3 => "insufficient privilege".to_string(),
        n => format!("hook exited {n}"),
    }
}

/// The stdin object, compact and without a trailing newline. Keys come out
/// sorted; the original's order is random, so no hook can depend on it.
fn stdin_json(req: &Request, timestamp: &str) -> String {
    let submitter = match &req.submitter {
        Some(s) => Builder::new()
            .str("username", &s.username)
            .str("source_ip", &s.source_ip)
            .build(),
        None => Value::Null,
    };
    let b = Builder::new()
        .str("action", &req.action)
        .str("script", &req.script)
        .strings("hosts", &req.hosts)
        .strings("args", &req.args)
        .str("username", &req.username)
        .str("token", &req.token)
        .str("source_ip", &req.source_ip)
        .str("dispatcher", &req.dispatcher)
        .str("dispatcher_serial", &req.dispatcher_serial)
        .str("reqid", &req.reqid)
        .value("submitter", submitter)
        .str("timestamp", timestamp);
    let b = if req.method.is_empty() {
        b
    } else {
        b.str("method", &req.method).str("path", &req.path)
    };
    json::to_string(&b.build())
}

/// The `ENVEXEC_*` variables added to the caller's environment.
fn env_vars(req: &Request, timestamp: &str) -> Vec<(String, String)> {
    let (submitter, submitter_ip) = match &req.submitter {
        Some(s) => (s.username.as_str(), s.source_ip.as_str()),
        None => ("", ""),
    };
    [
        ("ENVEXEC_ACTION", req.action.clone()),
        ("ENVEXEC_SCRIPT", req.script.clone()),
        ("ENVEXEC_HOSTS", req.hosts.join(",")),
        ("ENVEXEC_ARGS", req.args.join(" ")),
        (
            "ENVEXEC_ARGS_JSON",
            json::to_string(&json::strings(&req.args)),
        ),
        ("ENVEXEC_USERNAME", req.username.clone()),
        ("ENVEXEC_TOKEN", req.token.clone()),
        ("ENVEXEC_SOURCE_IP", req.source_ip.clone()),
        ("ENVEXEC_DISPATCHER", req.dispatcher.clone()),
        ("ENVEXEC_DISPATCHER_SERIAL", req.dispatcher_serial.clone()),
        ("ENVEXEC_REQID", req.reqid.clone()),
        ("ENVEXEC_SUBMITTER", submitter.to_string()),
        ("ENVEXEC_SUBMITTER_IP", submitter_ip.to_string()),
        ("ENVEXEC_TIMESTAMP", timestamp.to_string()),
        ("ENVEXEC_METHOD", req.method.clone()),
        ("ENVEXEC_PATH", req.path.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A regular file (after following links) that we may execute.
fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.permissions().mode() & 0o111 != 0
        && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}

/// Logs one decision: `info` for a pass, `warn` for a deny, `error` when the
/// hook itself is unusable (`hook` names it). Never includes the token.
fn log_decision(req: &Request, reason: &str, pass: bool, hook: Option<&Path>) {
    let hook_text = hook.map(|p| p.display().to_string());
    let fields = decision_fields(req, reason, pass, hook_text.as_deref());
    if hook_text.is_some() {
        log::error("auth", &fields);
    } else if pass {
        log::info("auth", &fields);
    } else {
        log::warn("auth", &fields);
    }
}

/// The fields of an `auth` line: RESULT REASON AUTHACTION USER IP, plus
/// DISPATCHER and HOOK when known. The token is deliberately absent.
fn decision_fields<'a>(
    req: &'a Request,
    reason: &'a str,
    pass: bool,
    hook: Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    let result = match (pass, hook) {
        (true, _) => "pass",
        // A hook that could not be consulted is an error, not a verdict.
        (false, Some(_)) => "error",
        (false, None) => "deny",
    };
    let mut fields = vec![
        ("RESULT", result),
        ("REASON", reason),
        ("AUTHACTION", req.action.as_str()),
        ("USER", req.username.as_str()),
        ("IP", req.source_ip.as_str()),
    ];
    if !req.dispatcher.is_empty() {
        fields.push(("DISPATCHER", req.dispatcher.as_str()));
    }
    if let Some(h) = hook {
        fields.push(("HOOK", h));
    }
    fields
}

/// A duration as whole seconds when it is whole, else with a fraction.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.3}", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::proc::tests::{fixture_dir, script};
    use crate::rt;

    fn hook(path: PathBuf, timeout: Duration) -> Hook {
        Hook { path, timeout }
    }

    fn request() -> Request {
        Request {
            action: "run".into(),
            script: "backup".into(),
            hosts: vec!["web1".into(), "web2".into()],
            args: vec!["a b".into(), "c\nd".into()],
            username: "alice".into(),
            token: "canary-token-123".into(),
            source_ip: "127.0.0.1".into(),
            ..Request::default()
        }
    }

    /// Runs `check`, retrying when a concurrent fork in another test thread
    /// still held our fresh script open for writing (ETXTBSY).
    fn check_blocking(hook: &Hook, req: &Request) -> Verdict {
        for _ in 0..50 {
            match rt::block_on(check(hook, req)) {
                Verdict::Deny { reason, .. } if reason.contains("busy") => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                v => return v,
            }
        }
        rt::block_on(check(hook, req))
    }

    #[test]
    fn exit_codes_map_to_verdicts() {
        let dir = fixture_dir("hook-codes");
        let cases = [
            (0, Verdict::Allow),
            (1, Verdict::deny(1, "denied")),
            (2, Verdict::deny(2, "bad credentials")),
            (3, Verdict::deny(3, "insufficient privilege")),
            (4, Verdict::deny(4, "hook exited 4")),
            (255, Verdict::deny(255, "hook exited 255")),
        ];
        for (code, want) in cases {
            let path = script(&dir, &format!("h{code}"), &format!("exit {code}"));
            assert_eq!(
                check_blocking(&hook(path, Duration::from_secs(10)), &request()),
                want,
                "exit {code}"
            );
        }
    }

    #[test]
    fn hook_killed_by_a_signal_denies() {
        let dir = fixture_dir("hook-signal");
        for (name, sig, num) in [("kill", "KILL", 9), ("segv", "SEGV", 11)] {
            let path = script(&dir, name, &format!("kill -{sig} $$"));
            let v = check_blocking(&hook(path, Duration::from_secs(10)), &request());
            assert_eq!(v, Verdict::deny(1, format!("hook killed by signal {num}")));
        }
    }

    #[test]
    fn slow_hook_is_killed_and_denied_at_the_timeout() {
        let dir = fixture_dir("hook-timeout");
        let path = script(&dir, "h", "sleep 30");
        let started = Instant::now();
        let v = check_blocking(&hook(path, Duration::from_secs(1)), &request());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(v, Verdict::deny(1, "auth hook timed out"));
    }

    #[test]
    fn hook_sees_the_request_in_env_and_stdin() {
        let dir = fixture_dir("hook-contract");
        let body = format!("env > '{0}/env'; cat > '{0}/stdin'; exit 0", dir.display());
        let path = script(&dir, "h", &body);
        let mut req = request();
        req.submitter = Some(Submitter {
            username: "bob".into(),
            source_ip: "10.0.0.9".into(),
        });
        assert_eq!(
            check_blocking(&hook(path, Duration::from_secs(10)), &req),
            Verdict::Allow
        );

        let env = std::fs::read_to_string(dir.join("env")).unwrap();
        let var = |k: &str| {
            let prefix = format!("{k}=");
            env.lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        };
        // The JSON array holds "c\nd" escaped, so it sits on one env line.
        assert_eq!(
            var("ENVEXEC_ARGS_JSON").as_deref(),
            Some(r#"["a b","c\nd"]"#)
        );
        assert_eq!(var("ENVEXEC_ACTION").as_deref(), Some("run"));
        assert_eq!(var("ENVEXEC_HOSTS").as_deref(), Some("web1,web2"));
        assert_eq!(var("ENVEXEC_SOURCE_IP").as_deref(), Some("127.0.0.1"));
        assert_eq!(var("ENVEXEC_TOKEN").as_deref(), Some("canary-token-123"));
        assert_eq!(var("ENVEXEC_SUBMITTER").as_deref(), Some("bob"));
        assert_eq!(var("ENVEXEC_SUBMITTER_IP").as_deref(), Some("10.0.0.9"));
        assert_eq!(var("ENVEXEC_REQID").as_deref(), Some(""));
        assert!(var("ENVEXEC_TIMESTAMP").is_some_and(|t| t.len() == 20 && t.ends_with('Z')));
        // The caller's environment is inherited.
        if let Ok(path) = std::env::var("PATH") {
            assert_eq!(var("PATH"), Some(path));
        }

        let stdin = std::fs::read(dir.join("stdin")).unwrap();
        assert_ne!(stdin.last(), Some(&b'\n'));
        let obj = json::parse_object(&stdin).unwrap();
        let f = json::Fields(&obj);
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut want = [
            "action",
            "args",
            "dispatcher",
            "dispatcher_serial",
            "hosts",
            "reqid",
            "script",
            "source_ip",
            "submitter",
            "timestamp",
            "token",
            "username",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(f.strings("args").unwrap().unwrap(), ["a b", "c\nd"]);
        assert_eq!(f.str("token").unwrap(), Some("canary-token-123"));
        match obj.get("submitter") {
            Some(Value::Object(s)) => {
                assert_eq!(json::Fields(s).str("username").unwrap(), Some("bob"))
            }
            other => panic!("submitter {other:?}"),
        }
    }

    #[test]
    fn hook_that_forks_and_exits_leaves_nothing_behind() {
        let dir = fixture_dir("hook-fork");
        let pidfile = dir.join("child.pid");
        let body = format!("sleep 1000 & echo $! > '{}'; exit 0", pidfile.display());
        let path = script(&dir, "h", &body);
        assert_eq!(
            check_blocking(&hook(path, Duration::from_secs(10)), &request()),
            Verdict::Allow
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            crate::proc::tests::eventually(Duration::from_secs(5), || {
                crate::proc::tests::process_dead(pid)
            }),
            "the hook's child {pid} survived"
        );
    }

    #[test]
    fn absent_submitter_is_null_on_stdin() {
        let text = stdin_json(&request(), "2026-03-09T14:30:00Z");
        assert!(text.contains(r#""submitter":null"#), "{text}");
        assert!(text.contains(r#""timestamp":"2026-03-09T14:30:00Z""#));
    }

    #[test]
    fn hook_exiting_without_reading_stdin_is_harmless() {
        let dir = fixture_dir("hook-epipe");
        let path = script(&dir, "h", "exit 2");
        let mut req = request();
        // Past a pipe buffer (so the write hits EPIPE) yet under Linux's
        // 128 KiB limit on one environment string.
        req.args = vec!["x".repeat(120_000)];
        let v = check_blocking(&hook(path, Duration::from_secs(10)), &req);
        assert_eq!(v, Verdict::deny(2, "bad credentials"));
    }

    #[test]
    fn megabyte_args_deny_without_crashing() {
        let dir = fixture_dir("hook-huge");
        let path = script(&dir, "h", "exit 0");
        let mut req = request();
        req.args = vec!["x".repeat(1024 * 1024)];
        // ENVEXEC_ARGS cannot carry 1 MiB through exec (E2BIG): fail closed.
        match check_blocking(&hook(path, Duration::from_secs(10)), &req) {
            Verdict::Deny { code: 1, reason } => {
                assert!(reason.starts_with("auth hook failed to start"), "{reason}")
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn flooding_hook_does_not_deadlock() {
        let dir = fixture_dir("hook-flood");
        let path = script(
            &dir,
            "h",
            "head -c 10000000 /dev/zero; head -c 10000000 /dev/zero >&2; exit 0",
        );
        assert_eq!(
            check_blocking(&hook(path, Duration::from_secs(10)), &request()),
            Verdict::Allow
        );
    }

    #[test]
    fn missing_or_non_executable_hook_denies() {
        let dir = fixture_dir("hook-missing");
        let missing = dir.join("nope");
        let v = check_blocking(&hook(missing.clone(), Duration::from_secs(1)), &request());
        assert_eq!(
            v,
            Verdict::deny(
                1,
                format!(
                    "auth hook not found or not executable: {}",
                    missing.display()
                )
            )
        );

        let plain = dir.join("plain");
        std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let v = check_blocking(&hook(plain.clone(), Duration::from_secs(1)), &request());
        assert_eq!(
            v,
            Verdict::deny(
                1,
                format!("auth hook not found or not executable: {}", plain.display())
            )
        );

        // A directory is not a regular file, even with x bits.
        let v = check_blocking(&hook(dir.clone(), Duration::from_secs(1)), &request());
        assert!(matches!(v, Verdict::Deny { code: 1, .. }));
    }

    #[test]
    fn check_future_is_send_for_spawning() {
        fn assert_send<T: Send>(_: &T) {}
        let (h, req) = (
            hook(PathBuf::from("/bin/true"), Duration::from_secs(1)),
            request(),
        );
        assert_send(&check(&h, &req));
    }

    #[test]
    fn reasons_follow_the_contract() {
        assert_eq!(reason_for_exit(1), "denied");
        assert_eq!(reason_for_exit(2), "bad credentials");
        assert_eq!(reason_for_exit(3), "insufficient privilege");
        assert_eq!(reason_for_exit(42), "hook exited 42");
    }

    #[test]
    fn decision_log_line_never_carries_the_token() {
        let mut req = request();
        req.dispatcher = "ctrl-exec-primary".into();
        let line = crate::log::line(
            "auth",
            &decision_fields(&req, "hook-not-executable", false, Some("/etc/hook")),
        );
        assert_eq!(
            line,
            "ACTION=auth AUTHACTION=run DISPATCHER=ctrl-exec-primary HOOK=/etc/hook IP=127.0.0.1 \
             REASON=hook-not-executable RESULT=error USER=alice"
        );
        assert!(!line.contains("canary"));
    }

    #[test]
    fn timeout_is_logged_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(10)), "10");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
    }
}
