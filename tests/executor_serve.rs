//! `ctrl-exec-exec serve` through the real binary: the framed protocol on
//! its unix socket, refusals, profile application (as root) and the agent
//! front-end running sync and async jobs through it.
//!
//! The profile tests need root (they change users, capabilities and
//! mounts); they skip with a printed reason otherwise. Their files live in
//! /var/tmp, not /tmp, because a `writable` profile replaces /tmp.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{jint, jstr, Fixture};
use ctrl_exec::proto::frame::{ExecRequest, ExecResponse, MAX_REQUEST_BYTES};

const BIN: &str = env!("CARGO_BIN_EXE_ctrl-exec");

/// Time for one exchange with the executor in these tests.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn skip_unless_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipped {what}: needs root to change users, capabilities and mounts");
    true
}

/// A running executor with its own files; killed and cleaned up on drop.
struct Executor {
    dir: PathBuf,
    socket: PathBuf,
    agent_conf: PathBuf,
    scripts: PathBuf,
    child: Child,
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Executor {
    /// Writes agent.conf (with `profiles`) and scripts.conf (`scripts`, `@`
    /// standing for the directory) and starts `serve` for `peer`.
    fn start(name: &str, profiles: &str, scripts: &str, peer: &str) -> Executor {
        let dir = PathBuf::from(format!("/var/tmp/ce_execsrv_{name}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["etc", "state", "s", "run"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let agent_conf = dir.join("etc/agent.conf");
        fs::write(
            &agent_conf,
            format!(
                "port = 0\ncert = {0}/etc/a.crt\nkey = {0}/etc/a.key\nca = {0}/etc/ca.crt\n\
                 state_dir = {0}/state\nscript_dirs = {0}/s\nscript_timeout = 5\n{profiles}",
                dir.display()
            ),
        )
        .unwrap();
        let scripts_conf = dir.join("etc/scripts.conf");
        fs::write(
            &scripts_conf,
            scripts.replace('@', &dir.display().to_string()),
        )
        .unwrap();
        let socket = dir.join("run/exec.sock");
        let mut child = Command::new(BIN)
            .arg("exec")
            .arg("serve")
            .arg(&socket)
            .arg(&agent_conf)
            .arg(&scripts_conf)
            .arg(peer)
            .env("CTRL_EXEC_EXEC_ALLOW_UNPRIV", "1")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.join("exec.log")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("listening on"),
            "executor did not start: {line:?}"
        );
        Executor {
            dir,
            socket,
            agent_conf,
            scripts: scripts_conf,
            child,
        }
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.join("s").join(name);
        common::write_script(&path, body);
        path
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("exec.log")).unwrap_or_default()
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(EXCHANGE_TIMEOUT)).unwrap();
        s
    }

    /// Sends raw bytes, half-closes and reads the answer to end of stream.
    fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        // A refused frame may be answered before all of it is written.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    fn run(&self, script: &str, args: &[&str]) -> ExecResponse {
        let req = ExecRequest {
            reqid: b"r1".to_vec(),
            dispatcher_id: b"ctl".to_vec(),
            stdin: b"{}".to_vec(),
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            ..request(script)
        };
        // No half-close: the executor takes end of stream for a front-end
        // that hung up, and kills the run.
        let mut s = self.connect();
        s.write_all(&req.encode()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        ExecResponse::decode(&out)
            .unwrap_or_else(|e| panic!("bad response {out:?}: {e}\n{}", self.log()))
    }
}

/// A request for `script` with every other field empty.
fn request(script: &str) -> ExecRequest {
    ExecRequest {
        script: script.as_bytes().to_vec(),
        ..ExecRequest::default()
    }
}

/// Asserts that `answer`'s stderr holds `needle`.
fn assert_stderr_has(answer: &ExecResponse, needle: &str) {
    let stderr = text(&answer.stderr);
    assert!(stderr.contains(needle), "{stderr}");
}

/// Asserts that `answer`'s stderr starts with `prefix`.
fn assert_stderr_starts(answer: &ExecResponse, prefix: &str) {
    let stderr = text(&answer.stderr);
    assert!(stderr.starts_with(prefix), "{stderr}");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn current_user() -> String {
    if is_root() {
        "root".into()
    } else {
        rustix::process::getuid().as_raw().to_string()
    }
}

#[test]
fn hostile_frames_end_their_connection_only() {
    let ex = Executor::start(
        "frames",
        "[profile default]\n",
        "hello = @/s/hello.sh\n",
        &current_user(),
    );
    ex.script("hello.sh", "echo hi");
    let malformed = |bytes: &[u8], what: &str| {
        let out = ex.raw(bytes);
        let answer = ExecResponse::decode(&out).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(answer.exit, -1, "{what}");
        assert_eq!(
            text(&answer.stderr),
            "executor: malformed request",
            "{what}"
        );
    };
    malformed(&0u32.to_be_bytes(), "zero length");
    malformed(
        &((MAX_REQUEST_BYTES + 1024 * 1024) as u32).to_be_bytes(),
        "17 MiB length",
    );
    malformed(&[0, 0, 0, 20, 0, 0, 0, 2, b'r'], "truncated body");
    let mut argc = request("hello").encode();
    let n = argc.len();
    argc[n - 4..].copy_from_slice(&9999u32.to_be_bytes());
    malformed(&argc, "argc 9999");
    let mut overrun = ExecRequest::default().encode();
    overrun[4..8].copy_from_slice(&1000u32.to_be_bytes());
    malformed(&overrun, "field length overrun");
    // A 17 MiB frame actually sent, not only announced.
    let mut big = ((MAX_REQUEST_BYTES + 1) as u32).to_be_bytes().to_vec();
    big.resize(17 * 1024 * 1024, b'x');
    malformed(&big, "17 MiB frame");
    // A peer that connects and goes away.
    drop(UnixStream::connect(&ex.socket).unwrap());

    let denied = ex.run("nope", &[]);
    assert_eq!(
        (denied.exit, text(&denied.stderr).as_str()),
        (-1, "executor: script not permitted")
    );
    if is_root() {
        let ok = ex.run("hello", &[]);
        assert_eq!(
            (ok.exit, text(&ok.stdout).as_str()),
            (0, "hi\n"),
            "{}",
            ex.log()
        );
    }
    assert!(
        ex.log().contains("ACTION=executor-malformed"),
        "{}",
        ex.log()
    );
}

#[test]
fn the_executor_decides_from_its_own_files() {
    let ex = Executor::start(
        "decide",
        "[profile default]\n",
        "inside = @/s/inside.sh\noutside = /bin/echo\nghost = @/s/inside.sh profile=ghost\n",
        &current_user(),
    );
    ex.script("inside.sh", "echo in");
    for (name, want) in [
        ("outside", "executor: script not in script_dirs"),
        ("ghost", "executor: undefined profile"),
        ("../s/inside.sh", "executor: script not permitted"),
    ] {
        let answer = ex.run(name, &[]);
        assert_eq!(
            (answer.exit, text(&answer.stderr).as_str()),
            (-1, want),
            "{name}"
        );
    }
    // Edited between two requests: the next request sees the new allowlist.
    fs::write(&ex.scripts, "").unwrap();
    let answer = ex.run("inside", &[]);
    assert_eq!(text(&answer.stderr), "executor: script not permitted");
    fs::write(&ex.agent_conf, "this is not a config\n").unwrap();
    let answer = ex.run("inside", &[]);
    assert_eq!(
        (answer.exit, text(&answer.stderr).as_str()),
        (-1, "executor: config error")
    );
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    if skip_unless_root("a_peer_with_another_uid_is_refused") {
        return;
    }
    let ex = Executor::start(
        "peer",
        "[profile default]\n",
        "hello = @/s/hello.sh\n",
        "root",
    );
    ex.script("hello.sh", "echo hi");
    let mode = fs::metadata(&ex.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is private to its peer user");
    // Opened up by hand, so the connect succeeds and SO_PEERCRED decides.
    fs::set_permissions(&ex.socket, fs::Permissions::from_mode(0o666)).unwrap();
    let hex: String = request("hello")
        .encode()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(10)\n\
             s.connect({:?})\nd=b''\n\
             try:\n  s.sendall(bytes.fromhex('{hex}'))\n  while True:\n    c=s.recv(65536)\n    if not c: break\n    d+=c\nexcept (ConnectionResetError, BrokenPipeError): pass\nprint(len(d))",
            ex.socket.display().to_string()
        ))
        .uid(65534)
        .gid(65534)
        .output();
    let Ok(out) = out else {
        eprintln!("skipped the other-uid connection: no python3");
        return;
    };
    assert_eq!(
        text(&out.stdout).trim(),
        "0",
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        ex.log().contains("ACTION=executor-peer-refused UID=65534"),
        "{}",
        ex.log()
    );
    assert_eq!(ex.run("hello", &[]).exit, 0, "root is still served");
}

use std::os::unix::process::CommandExt;

/// Runs the script `body` under `profile` through a fresh executor.
fn run_profile(name: &str, profile: &str, body: &str) -> (ExecResponse, Executor) {
    let ex = Executor::start(
        name,
        &format!("[profile default]\n{profile}\n"),
        "probe = @/s/probe.sh\n",
        "root",
    );
    ex.script("probe.sh", body);
    let answer = ex.run("probe", &[]);
    (answer, ex)
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn run_as_and_caps_are_exactly_the_profiles() {
    if skip_unless_root("run_as_and_caps_are_exactly_the_profiles") {
        return;
    }
    let (answer, ex) = run_profile(
        "caps",
        "run_as = nobody\ncaps = CAP_NET_BIND_SERVICE",
        "id -u; id -g; cat /proc/self/status; echo \"env:$HOME:$USER:$LOGNAME\"",
    );
    let out = text(&answer.stdout);
    assert_eq!(answer.exit, 0, "{}\n{}", text(&answer.stderr), ex.log());
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("65534"));
    let gid = lines.next().unwrap_or("");
    assert_eq!(
        gid,
        Command::new("id")
            .args(["-g", "nobody"])
            .output()
            .map(|o| text(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    for key in ["CapBnd", "CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(status_field(&out, key), "0000000000000400", "{key}\n{out}");
    }
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert_eq!(status_field(&out, "CapInh"), "0000000000000400");
    let home = fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("nobody:")
                .map(|r| r.split(':').nth(4).unwrap_or("").to_string())
        })
        .unwrap_or_default();
    assert!(
        out.contains(&format!("env:{home}:nobody:nobody")),
        "HOME, USER and LOGNAME are the account's\n{out}"
    );
}

#[test]
fn a_profile_capability_decides_whether_port_80_binds() {
    if skip_unless_root("a_profile_capability_decides_whether_port_80_binds") {
        return;
    }
    let bind = "exec python3 -c 'import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind((\"127.0.0.1\", 80))\nprint(\"bound\")'";
    let (with, ex) = run_profile(
        "bind80",
        "run_as = nobody\ncaps = CAP_NET_BIND_SERVICE",
        bind,
    );
    if text(&with.stderr).contains("python3: not found") {
        eprintln!("skipped: no python3");
        return;
    }
    assert_eq!(
        (with.exit, text(&with.stdout).as_str()),
        (0, "bound\n"),
        "{}\n{}",
        text(&with.stderr),
        ex.log()
    );
    let (without, _) = run_profile("bind80no", "run_as = nobody", bind);
    assert_ne!(without.exit, 0);
    assert_stderr_has(&without, "Permission denied");
}

#[test]
fn no_new_privileges_stops_a_setuid_binary() {
    if skip_unless_root("no_new_privileges_stops_a_setuid_binary") {
        return;
    }
    let suid = PathBuf::from(format!("/var/tmp/ce_suid_id_{}", std::process::id()));
    fs::copy("/usr/bin/id", &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let body = format!("{} -u", suid.display());
    let (open, _) = run_profile("nnp0", "run_as = nobody\nno_new_privileges = no", &body);
    let (closed, ex) = run_profile("nnp1", "run_as = nobody", &body);
    let _ = fs::remove_file(&suid);
    if text(&open.stdout).trim() != "0" {
        eprintln!("skipped: setuid does not take effect on /var/tmp here (nosuid?)");
        return;
    }
    assert_eq!(text(&closed.stdout).trim(), "65534", "{}", ex.log());
}

#[test]
fn writable_leaves_only_its_paths_and_a_private_tmp() {
    if skip_unless_root("writable_leaves_only_its_paths_and_a_private_tmp") {
        return;
    }
    let base = PathBuf::from(format!("/var/tmp/ce_writable_{}", std::process::id()));
    let inside = base.join("in");
    let under_tmp = PathBuf::from(format!("/tmp/ce_writable_x_{}", std::process::id()));
    fs::create_dir_all(&inside).unwrap();
    fs::create_dir_all(&under_tmp).unwrap();
    let marker = format!("/tmp/ce_private_tmp_{}", std::process::id());
    let body = format!(
        "echo a > {i}/file && echo inside-ok\n\
         echo b > {b}/outside 2>/dev/null || echo outside-refused\n\
         echo c > {m} && echo tmp-ok\n\
         echo d > {t}/file && echo tmp-path-ok\n\
         echo e > /etc/ce_should_not_exist 2>/dev/null || echo etc-refused",
        i = inside.display(),
        b = base.display(),
        m = marker,
        t = under_tmp.display(),
    );
    let (answer, ex) = run_profile(
        "writable",
        &format!(
            "run_as = root\nwritable = {}:{}",
            inside.display(),
            under_tmp.display()
        ),
        &body,
    );
    let out = text(&answer.stdout);
    let seen = (
        inside.join("file").exists(),
        under_tmp.join("file").exists(),
        base.join("outside").exists(),
        Path::new(&marker).exists(),
        Path::new("/etc/ce_should_not_exist").exists(),
    );
    let _ = fs::remove_dir_all(&base);
    let _ = fs::remove_dir_all(&under_tmp);
    let _ = fs::remove_file(&marker);
    assert_eq!(
        out,
        "inside-ok\noutside-refused\ntmp-ok\ntmp-path-ok\netc-refused\n",
        "{}\n{}",
        text(&answer.stderr),
        ex.log()
    );
    // The writable paths are the real ones; nothing else was written, and
    // /tmp was private.
    assert_eq!(seen, (true, true, false, false, false));
}

#[test]
fn config_and_state_dirs_are_read_only_even_for_root() {
    if skip_unless_root("config_and_state_dirs_are_read_only_even_for_root") {
        return;
    }
    let ex = Executor::start(
        "rodirs",
        "[profile default]\nrun_as = root\n",
        "probe = @/s/probe.sh\n",
        "root",
    );
    let body = format!(
        "touch {0}/etc/x 2>&1; touch {0}/state/x 2>&1; echo done",
        ex.dir.display()
    );
    ex.script("probe.sh", &body);
    let answer = ex.run("probe", &[]);
    let out = text(&answer.stdout);
    assert_eq!(
        out.matches("Read-only file system").count(),
        2,
        "{out}\n{}",
        ex.log()
    );
    assert!(!ex.dir.join("etc/x").exists() && !ex.dir.join("state/x").exists());
}

#[test]
fn a_profile_that_cannot_apply_is_126_and_exec_failure_127() {
    if skip_unless_root("a_profile_that_cannot_apply_is_126_and_exec_failure_127") {
        return;
    }
    let ex = Executor::start(
        "fail",
        "[profile default]\nrun_as = nobody\n[profile ghostuser]\nrun_as = no_such_user_x\n\
         [profile badpath]\nwritable = /nonexistent/ce\n",
        "private = @/s/private.sh\nbadexec = @/s/badexec.sh\nghost = @/s/private.sh profile=ghostuser\n\
         nowhere = @/s/private.sh profile=badpath\n",
        "root",
    );
    let private = ex.script("private.sh", "echo never");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let answer = ex.run("private", &[]);
    assert_eq!(answer.exit, 126, "{}", text(&answer.stderr));
    assert_stderr_has(&answer, "is not executable by the profile's run_as user");
    let bad = ex.dir.join("s/badexec.sh");
    fs::write(&bad, "#!/nonexistent/interpreter\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
    let answer = ex.run("badexec", &[]);
    assert_eq!(answer.exit, 127, "{}", text(&answer.stderr));
    assert_stderr_starts(&answer, "executor: exec '");
    for name in ["ghost", "nowhere"] {
        let answer = ex.run(name, &[]);
        assert_eq!(answer.exit, 126, "{name}: {}", text(&answer.stderr));
        assert_stderr_starts(&answer, "executor: ");
    }
}

#[test]
fn a_front_end_that_hangs_up_gets_its_script_killed() {
    if skip_unless_root("a_front_end_that_hangs_up_gets_its_script_killed") {
        return;
    }
    let ex = Executor::start(
        "hangup",
        "[profile default]\n",
        "slow = @/s/slow.sh\n",
        "root",
    );
    let pidfile = ex.dir.join("s/pid");
    ex.script(
        "slow.sh",
        &format!("echo $$ > {}\nexec sleep 30", pidfile.display()),
    );
    let mut s = UnixStream::connect(&ex.socket).unwrap();
    s.write_all(&request("slow").encode()).unwrap();
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let pid = loop {
        if let Ok(p) = fs::read_to_string(&pidfile) {
            if let Ok(p) = p.trim().parse::<u32>() {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "script never started: {}",
            ex.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(s);
    common::eventually(
        "the script to die with its front-end",
        EXCHANGE_TIMEOUT,
        || {
            let dead = !Path::new(&format!("/proc/{pid}")).exists()
                || fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true);
            if dead {
                Ok(())
            } else {
                Err(format!("script {pid} still running\n{}", ex.log()))
            }
        },
    );
}

#[test]
fn the_agent_runs_sync_and_async_jobs_through_the_executor() {
    if skip_unless_root("the_agent_runs_sync_and_async_jobs_through_the_executor") {
        return;
    }
    let f = Fixture::new("exec_agent");
    f.dispatcher("");
    let dir = PathBuf::from(format!("/var/tmp/ce_exec_agent_{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("exec.sock");
    let forge = format!(
        "for f in $(find {0} -name '*.json'); do echo forged > \"$f\"; done 2>&1\n\
         mkdir {0}/forged 2>&1; echo tried",
        f.path("agents/web1/state").display()
    );
    let mut agent = f.agent_files(
        "web1",
        &[
            ("who", "id -u; cat >/dev/null"),
            ("slow", "sleep 1; echo late"),
            ("forge profile=root", &forge),
        ],
        &format!(
            "executor_socket = {}\n[profile default]\nrun_as = nobody\n[profile root]\nrun_as = root\n",
            socket.display()
        ),
    );
    f.pair(&agent);
    f.serve(&mut agent);
    let mut exec = Command::new(BIN);
    exec.arg("exec")
        .arg("serve")
        .arg(&socket)
        .arg(&agent.conf)
        .arg(&agent.allowlist)
        .arg("root");
    let (exec_pid, _) = f.daemon("executor", exec, &dir.join("exec.log"), "listening on");

    let out = f.ced_ok(&["run", "web1", "who", "--json"]);
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(0), "{}", out.stdout);
    assert_eq!(
        jstr(&v, "results.0.stdout"),
        Some("65534\n"),
        "the profile's run_as applies"
    );

    let out = f.ced_ok(&["run", "web1", "slow", "--async", "--json"]);
    let reqid = jstr(&out.json(), "reqid").unwrap_or_default().to_string();
    let waited = f.ced(&["wait", &reqid, "--timeout", "30", "--json"]);
    assert!(
        waited.stdout.contains("late"),
        "{}\n{}",
        waited.stdout,
        waited.stderr
    );

    // A script cannot rewrite the agent's job records, even as root: the
    // async result is the script's own, and self-check says why.
    let out = f.ced_ok(&["run", "web1", "slow", "--async", "--json"]);
    let reqid = jstr(&out.json(), "reqid").unwrap_or_default().to_string();
    let out = f.ced_ok(&["run", "web1", "forge", "--json"]);
    let forged = jstr(&out.json(), "results.0.stdout")
        .unwrap_or("")
        .to_string();
    assert!(
        forged.contains("Read-only file system") && forged.ends_with("tried\n"),
        "{}",
        out.stdout
    );
    let waited = f.ced(&["wait", &reqid, "--timeout", "30", "--json"]);
    assert!(
        waited.stdout.contains("late") && !waited.stdout.contains("forged"),
        "{}\n{}",
        waited.stdout,
        waited.stderr
    );
    let check = f.self_check(&agent);
    assert!(check.stdout.contains("Job records OK"), "{check}");

    f.kill(exec_pid);
    let out = f.ced(&["run", "web1", "who", "--json"]);
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(-1));
    let stderr = jstr(&v, "results.0.stderr").unwrap_or("");
    assert!(
        stderr.starts_with("executor unreachable: "),
        "{}",
        out.stdout
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn with_the_executor_every_profile_must_be_defined() {
    let f = Fixture::new("exec_profiles");
    f.dispatcher("");
    let agent = f.agent_files(
        "web1",
        &[("hello", "echo hi")],
        "executor_socket = /run/ctrl-exec-agent/exec.sock\n",
    );
    let out = f.run(f.cea_for(&agent, "serve"));
    assert_eq!(out.code(), Some(78), "{}", out.stderr);
    assert!(
        out.stderr.contains("hello -> default") && out.stderr.contains("[profile default]"),
        "{}",
        out.stderr
    );
}
