//! The integration-test harness: one fixture directory per test, the real
//! binary behind `ced`, `cea` and `ctrl-exec-api` links, real pairing, servers
//! on port 0 read back from their stdout, daemons killed on drop.
//!
//! Nothing here sleeps to synchronise: [`eventually`] polls a condition with
//! short backoff until a deadline and reports the last state it saw.

#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ctrl_exec::net::http::{Conn, Response};
use ctrl_exec::net::limits::Limits;
use ctrl_exec::net::{client, server, tls};
use ctrl_exec::{pki, rt};
use json::{Number, Value};

pub mod perl;

/// JSON helpers for tests, over the crate's bounded parser.
pub mod json {
    pub use ctrl_exec::proto::json::{to_string, Number, Object, Value};

    /// Parses bytes as JSON; `None` when they are not.
    pub fn parse(bytes: &[u8]) -> Option<Value> {
        ctrl_exec::proto::json::parse(bytes).ok()
    }

    /// Parses bytes as a JSON object; `None` when they are not one.
    #[allow(dead_code)]
    pub fn parse_object(bytes: &[u8]) -> Option<Object> {
        ctrl_exec::proto::json::parse_object(bytes).ok()
    }

    /// The string at `key`.
    #[allow(dead_code)]
    pub fn get_str<'a>(o: &'a Object, key: &str) -> Option<&'a str> {
        match o.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }
}

/// The multicall binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ctrl-exec");

/// How long a one-shot command may take before the test fails.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

// ------------------------------------------------------------------------------------------
// Polling

/// Writes an executable `/bin/sh` script at `path` from a child process.
/// Written from this process, the file's write descriptor would be in every
/// child another test thread forks meanwhile, until that child execs, and an
/// exec of the script in that window fails with "Text file busy" (127).
pub fn write_script(path: &Path, body: &str) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$0\" && chmod 0755 \"$0\"")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh to write a script");
    child
        .stdin
        .take()
        .expect("script stdin")
        .write_all(format!("#!/bin/sh\n{body}\n").as_bytes())
        .expect("write script");
    let status = child.wait().expect("wait for sh");
    assert!(status.success(), "cannot write {}", path.display());
}

/// Polls `probe` with short backoff until it returns `Ok` or `within` passes;
/// on timeout panics with `what` and the last state the probe reported.
pub fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let deadline = start + within;
    let mut pause = Duration::from_millis(5);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => {
                let now = Instant::now();
                if now >= deadline {
                    panic!(
                        "timed out after {within:?} waiting for {what}; last state seen:\n{last}"
                    );
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Command output

/// A finished command with everything a failure report needs.
pub struct Out {
    /// The command line, quoted.
    pub cmd: String,
    /// The directory it ran in.
    pub cwd: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Out {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout parsed as one JSON value; panics with the report when it is not.
    pub fn json(&self) -> Value {
        json::parse(self.stdout.trim().as_bytes())
            .unwrap_or_else(|| panic!("stdout is not JSON\n{self}"))
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\ncwd:     {}\nstatus:  {} (after {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.cmd, self.cwd, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

fn cwd_of(cmd: &Command) -> String {
    cmd.get_current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| ".".into())
}

fn describe(cmd: &Command) -> String {
    let mut s = shell_quote(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(&a.to_string_lossy()));
    }
    s
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Sends `signal` (e.g. `HUP`, `KILL`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(st.success(), "kill -{signal} {pid} failed: {st}");
}

/// Peak resident set (VmHWM, KiB) of a live process.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{text}"))
}

// ------------------------------------------------------------------------------------------
// Fixture

/// A daemon the fixture started and kills on drop.
struct Daemon {
    what: String,
    child: Child,
}

/// One agent: its files, and once serving, its port and pid.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The agent's hostname (its registry name).
    pub name: String,
    /// Its directory inside the fixture.
    pub dir: PathBuf,
    /// agent.conf.
    pub conf: PathBuf,
    /// scripts.conf.
    pub allowlist: PathBuf,
    /// The directory its scripts live in (its only script_dir).
    pub scripts_dir: PathBuf,
    /// Its state_dir.
    pub state_dir: PathBuf,
    /// Its revoked_serials file.
    pub revoked: PathBuf,
    /// Where `cea serve` writes its log (stderr).
    pub log: PathBuf,
    /// The bound port once serving (0 before).
    pub port: u16,
    /// The serving process id once serving (0 before).
    pub pid: u32,
}

impl Agent {
    /// The trusted-dispatcher map pairing writes: beside agent.conf, out of
    /// the state dir that the agent user (and its scripts) can write.
    pub fn trusted_map(&self) -> PathBuf {
        self.conf
            .parent()
            .expect("agent.conf has a directory")
            .join("ctrl-exec-dispatchers")
    }

    /// What the agent has logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes `<scripts_dir>/<name>.sh` and appends its allowlist line.
    /// `name` may carry annotations after a space (`"slow timeout=1"`).
    pub fn add_script(&self, name: &str, body: &str) {
        let (bare, annotations) = name.split_once(' ').unwrap_or((name, ""));
        let path = self.scripts_dir.join(format!("{bare}.sh"));
        write_script(&path, body);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.allowlist)
            .expect("open allowlist");
        writeln!(f, "{bare} = {} {annotations}", path.display()).expect("append allowlist");
    }

    /// How many log lines carry `ACTION=<action>`.
    pub fn log_count(&self, action: &str) -> usize {
        let word = format!("ACTION={action}");
        self.log_text()
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == word))
            .count()
    }
}

/// One test's world: a directory with links to the binary, a dispatcher, its
/// agents and daemons. Kept on failure, removed on success.
pub struct Fixture {
    /// The test's name.
    pub name: String,
    /// The fixture directory.
    pub dir: PathBuf,
    /// The dispatcher's ctrl-exec.conf.
    pub conf: PathBuf,
    daemons: Mutex<Vec<Daemon>>,
    pairing_port: Mutex<Option<u16>>,
    ca_fingerprint: Mutex<String>,
}

impl Fixture {
    /// Creates `<tmp>/ctrl-exec-it/<name>-<pid>-<n>` with `bin/{ced,cea,ctrl-exec-api}`.
    pub fn new(name: &str) -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir()
            .join("ctrl-exec-it")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).expect("create fixture dir");
        for link in ["ced", "cea", "ctrl-exec-api"] {
            symlink(BIN, dir.join("bin").join(link)).expect("link binary");
        }
        Fixture {
            name: name.to_string(),
            conf: dir.join("dispatcher").join("ctrl-exec.conf"),
            dir,
            daemons: Mutex::new(Vec::new()),
            pairing_port: Mutex::new(None),
            ca_fingerprint: Mutex::new(String::new()),
        }
    }

    /// A path inside the fixture.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// A command for one of the links (`ced`, `cea`, `ctrl-exec-api`), run in
    /// the fixture directory with a predictable environment.
    pub fn cmd(&self, role: &str) -> Command {
        let mut c = Command::new(self.dir.join("bin").join(role));
        c.current_dir(&self.dir)
            .env_remove("ENVEXEC_TOKEN")
            .env("USER", "tester")
            .stdin(Stdio::null());
        c
    }

    /// Runs `cmd` to completion (at most `CMD_TIMEOUT`), capturing its output.
    pub fn run(&self, cmd: Command) -> Out {
        self.run_within(cmd, CMD_TIMEOUT)
    }

    /// Runs `cmd` to completion within `limit`; kills it and fails the test past that.
    pub fn run_within(&self, cmd: Command, limit: Duration) -> Out {
        self.spawn_and_wait(cmd, limit, false)
    }

    /// Runs `cmd` with stdout a pipe whose read end is closed at once, so
    /// every write the child makes to stdout fails with `EPIPE`; captures
    /// stderr (stdout is reported empty).
    pub fn run_with_stdout_closed(&self, cmd: Command) -> Out {
        self.spawn_and_wait(cmd, CMD_TIMEOUT, true)
    }

    /// Spawns `cmd` with piped output (the stdout read end closed at once
    /// when `close_stdout`), waits up to `limit`, kills it and fails the
    /// test past that.
    fn spawn_and_wait(&self, mut cmd: Command, limit: Duration, close_stdout: bool) -> Out {
        let desc = describe(&cmd);
        let desc = if close_stdout {
            format!("{desc} (stdout closed)")
        } else {
            desc
        };
        let cwd = cwd_of(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        if close_stdout {
            drop(child.stdout.take());
        }
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(limit) {
            Ok(Ok(o)) => Out {
                cmd: desc,
                cwd,
                status: o.status,
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                elapsed: start.elapsed(),
            },
            Ok(Err(e)) => panic!("waiting for {desc} failed: {e}"),
            Err(_) => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                panic!("{desc} did not finish within {limit:?}\n{}", self.report());
            }
        }
    }

    /// `ced --config <conf> <args>`.
    pub fn ced(&self, args: &[&str]) -> Out {
        let mut c = self.cmd("ced");
        c.arg("--config").arg(&self.conf).args(args);
        self.run(c)
    }

    /// Like [`Fixture::ced`], failing the test unless it exits 0.
    pub fn ced_ok(&self, args: &[&str]) -> Out {
        let out = self.ced(args);
        self.expect_success(&out);
        out
    }

    /// Fails the test with the full report unless `out` exited 0.
    pub fn expect_success(&self, out: &Out) {
        if !out.status.success() {
            panic!("command failed\n{out}\n{}", self.report());
        }
    }

    /// The fixture listing and the tail of every log in it.
    pub fn report(&self) -> String {
        let mut s = format!("fixture: {}\n", self.dir.display());
        let mut files = Vec::new();
        walk(&self.dir, &mut files);
        for f in &files {
            s.push_str(&format!(
                "  {}\n",
                f.strip_prefix(&self.dir).unwrap_or(f).display()
            ));
        }
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log" || e == "out"))
        {
            let text = fs::read_to_string(f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            s.push_str(&format!(
                "--- tail of {} ---\n{}\n",
                f.display(),
                tail.join("\n")
            ));
        }
        s
    }

    // --------------------------------------------------------------------------------------
    // Dispatcher

    /// Writes ctrl-exec.conf (everything inside the fixture, listeners on
    /// 127.0.0.1 port 0, plus `extra` lines) and runs `setup-ca` and
    /// `setup-ctrl-exec`.
    pub fn dispatcher(&self, extra: &str) {
        let d = self.dir.join("dispatcher");
        fs::create_dir_all(&d).expect("create dispatcher dir");
        let conf = format!(
            "cert = {d}/ctrl-exec.crt\nkey = {d}/ctrl-exec.key\nca = {d}/ca.crt\nca_dir = {d}\n\
             state_dir = {d}/state\npairing_bind = 127.0.0.1\napi_bind = 127.0.0.1\napi_port = 0\n\
             dispatcher_id = it-dispatcher\n{extra}\n",
            d = d.display()
        );
        fs::write(&self.conf, conf).expect("write ctrl-exec.conf");
        let out = self.ced_ok(&["setup-ca"]);
        let fp = out
            .stdout
            .split_whitespace()
            .find(|w| w.starts_with("sha256:") && w.len() == 71)
            .unwrap_or_else(|| panic!("no CA fingerprint in setup-ca output\n{out}"))
            .to_string();
        *self.ca_fingerprint.lock().unwrap() = fp;
        self.ced_ok(&["setup-ctrl-exec"]);
    }

    /// Appends `line` to ctrl-exec.conf (each `ced` run and a newly started API reads it).
    pub fn append_conf(&self, line: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.conf)
            .expect("open ctrl-exec.conf");
        writeln!(f, "{line}").expect("append to ctrl-exec.conf");
    }

    /// Writes an executable `sh` script at `rel` inside the fixture; returns its path.
    pub fn script(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create script dir");
        }
        write_script(&path, body);
        path
    }

    /// The CA fingerprint `setup-ca` printed (`sha256:<hex>`).
    pub fn ca_fingerprint(&self) -> String {
        self.ca_fingerprint.lock().unwrap().clone()
    }

    /// The dispatcher's CA certificate PEM.
    pub fn ca_pem(&self) -> String {
        read(&self.dir.join("dispatcher/ca.crt"))
    }

    /// The dispatcher's CA key PEM.
    pub fn ca_key_pem(&self) -> String {
        read(&self.dir.join("dispatcher/ca.key"))
    }

    /// The dispatcher's own certificate and key PEM.
    pub fn dispatcher_identity(&self) -> (String, String) {
        (
            read(&self.dir.join("dispatcher/ctrl-exec.crt")),
            read(&self.dir.join("dispatcher/ctrl-exec.key")),
        )
    }

    /// The dispatcher's registry directory (`<state_dir>/agents`).
    pub fn registry_dir(&self) -> PathBuf {
        self.dir.join("dispatcher/state/agents")
    }

    /// Writes a registry record for `name` by hand (no pairing, no key pin),
    /// pointing at 127.0.0.1:`port`.
    pub fn write_registry_record(&self, name: &str, port: u16) {
        let dir = self.registry_dir();
        fs::create_dir_all(&dir).expect("create registry dir");
        let record = format!(
            r#"{{"hostname":{n},"ip":"127.0.0.1","paired":"2026-01-01T00:00:00Z","expiry":"Jun  7 16:28:00 2028 GMT","reqid":"0000000000000000","lookup_by":"ip","port":{port},"tags":{{}},"dispatcher_serial":"","serial_status":"current","serial_broadcast":"","serial_confirmed":"","pubkey_sha256":""}}"#,
            n = jquote(name)
        );
        fs::write(dir.join(format!("{name}.json")), record).expect("write registry record");
    }

    /// The pairing port, starting background pairing mode on first use.
    pub fn pairing_port(&self) -> u16 {
        let mut port = self.pairing_port.lock().unwrap();
        if let Some(p) = *port {
            return p;
        }
        let out = self.ced_ok(&["pairing-mode", "start", "--port", "0", "--timeout", "120"]);
        let p = out
            .stdout
            .split("on port ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("no 'on port N' in pairing-mode output\n{out}"));
        *port = Some(p);
        p
    }

    // --------------------------------------------------------------------------------------
    // Agents

    /// Writes an agent's files without pairing it: agent.conf (`port = 0`,
    /// `bind = 127.0.0.1`, every path inside the fixture, the limiter off
    /// unless `extra_conf` says otherwise, plus `extra_conf`) and its scripts.
    /// Script names may carry allowlist annotations after a space.
    pub fn agent_files(&self, name: &str, scripts: &[(&str, &str)], extra_conf: &str) -> Agent {
        let dir = self.dir.join("agents").join(sanitise(name));
        let scripts_dir = dir.join("scripts");
        fs::create_dir_all(&scripts_dir).expect("create agent dir");
        let a = Agent {
            name: name.to_string(),
            conf: dir.join("agent.conf"),
            allowlist: dir.join("scripts.conf"),
            state_dir: dir.join("state"),
            revoked: dir.join("revoked-serials"),
            log: dir.join("agent.log"),
            scripts_dir,
            dir,
            port: 0,
            pid: 0,
        };
        let limiter = if extra_conf.contains("rate_limit_disable") {
            ""
        } else {
            "rate_limit_disable = 1\n"
        };
        let conf = format!(
            "port = 0\nbind = 127.0.0.1\nhostname = {name}\ncert = {d}/agent.crt\nkey = {d}/agent.key\n\
             ca = {d}/ca.crt\nstate_dir = {d}/state\nrevoked_serials = {d}/revoked-serials\n\
             script_dirs = {s}\n{limiter}{extra_conf}\n",
            d = a.dir.display(),
            s = a.scripts_dir.display(),
        );
        fs::write(&a.conf, conf).expect("write agent.conf");
        fs::write(&a.allowlist, "").expect("write scripts.conf");
        for (script, body) in scripts {
            a.add_script(script, body);
        }
        a
    }

    /// `cea --config <agent.conf> request-pairing --dispatcher 127.0.0.1 --port <pairing port> <extra>`.
    pub fn request_pairing_cmd(&self, agent: &Agent, extra: &[&str]) -> Command {
        let port = self.pairing_port();
        let mut c = self.cmd("cea");
        c.arg("--config")
            .arg(&agent.conf)
            .args(["request-pairing", "--dispatcher", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(extra);
        c
    }

    /// Pairs `agent` for real: background request (pinned to the CA), approve,
    /// wait until its trusted map is written.
    pub fn pair(&self, agent: &Agent) {
        let fp = self.ca_fingerprint();
        let mut c = self.request_pairing_cmd(
            agent,
            &["--ca-fingerprint", &fp, "--background", "--timeout", "60"],
        );
        // The detached child inherits stderr: a file, so nothing waits on its pipe.
        let errlog = agent.dir.join("request-pairing.log");
        c.stderr(fs::File::create(&errlog).expect("create pairing log"));
        let desc = describe(&c);
        let cwd = cwd_of(&c);
        let start = Instant::now();
        let o = c
            .stdout(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
        let out = Out {
            cmd: desc,
            cwd,
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: read(&errlog),
            elapsed: start.elapsed(),
        };
        self.expect_success(&out);
        let reqid = out.stdout.trim().to_string();
        assert!(
            reqid.len() == 16 && reqid.bytes().all(|c| c.is_ascii_hexdigit()),
            "background request-pairing did not print a request id\n{out}"
        );
        self.ced_ok(&["approve", &reqid]);
        let map = agent.trusted_map();
        eventually(
            "the agent's trusted map",
            Duration::from_secs(30),
            || match fs::read_to_string(&map) {
                Ok(t) if t.contains("it-dispatcher") => Ok(()),
                Ok(t) => Err(format!("{} holds {t:?}", map.display())),
                Err(e) => Err(format!(
                    "{}: {e}; pairing log: {}",
                    map.display(),
                    read(&errlog)
                )),
            },
        );
    }

    /// `cea --config <conf> --allowlist <allowlist> <subcommand>` for `agent`.
    pub fn cea_for(&self, agent: &Agent, subcommand: &str) -> Command {
        let mut c = self.cmd("cea");
        c.arg("--config")
            .arg(&agent.conf)
            .arg("--allowlist")
            .arg(&agent.allowlist)
            .arg(subcommand);
        c
    }

    /// Runs `cea self-check` with `agent`'s config and allowlist.
    pub fn self_check(&self, agent: &Agent) -> Out {
        self.run(self.cea_for(agent, "self-check"))
    }

    /// Starts `cea serve` for `agent` and reads its bound port, touching no
    /// registry; returns the port.
    pub fn serve_unregistered(&self, agent: &mut Agent) -> u16 {
        let (pid, addr) = self.daemon(
            &format!("agent {}", agent.name),
            self.cea_for(agent, "serve"),
            &agent.log,
            "ctrl-exec-agent listening on ",
        );
        agent.pid = pid;
        agent.port = port_of(&addr);
        agent.port
    }

    /// Starts `cea serve` for `agent`, reads its bound port and records it in
    /// the dispatcher's registry with `ced edit-agent --agent-port`.
    pub fn serve(&self, agent: &mut Agent) {
        self.serve_unregistered(agent);
        self.ced_ok(&[
            "edit-agent",
            &agent.name,
            "--agent-port",
            &agent.port.to_string(),
        ]);
    }

    /// Writes, pairs and serves an agent: the usual way a test gets one.
    pub fn agent(&self, name: &str, scripts: &[(&str, &str)], extra_conf: &str) -> Agent {
        let mut a = self.agent_files(name, scripts, extra_conf);
        self.pair(&a);
        self.serve(&mut a);
        a
    }

    /// Pairs an agent called `name` for real (so the registry pins its key),
    /// then serves its certificate from a fake agent instead of `cea`: every
    /// request gets `status` and `body`. The registry points at the fake.
    pub fn fake_agent(&self, name: &str, status: u16, body: Vec<u8>) -> FakeAgent {
        let a = self.agent_files(name, &[], "");
        self.pair(&a);
        let id = tls::Identity::from_pem(
            &read(&a.dir.join("agent.crt")),
            &read(&a.dir.join("agent.key")),
        )
        .expect("agent identity");
        let ca_der = pki::pem_certs(&self.ca_pem()).remove(0);
        let config = tls::mtls_server(&id, &ca_der).expect("fake agent TLS config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake agent");
        let port = listener.local_addr().expect("fake agent address").port();
        let fake = FakeAgent {
            name: name.to_string(),
            port,
            hits: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (hits, stop, body) = (fake.hits.clone(), fake.stop.clone(), Arc::new(body));
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let (config, hits, body) = (config.clone(), hits.clone(), body.clone());
                std::thread::spawn(move || fake_answer(config, tcp, status, &body, &hits));
            }
        });
        self.ced_ok(&["edit-agent", name, "--agent-port", &port.to_string()]);
        fake
    }

    /// Sends SIGHUP and waits until the agent logged one more reload.
    pub fn reload(&self, agent: &Agent) {
        let before = agent.log_count("reload");
        signal(agent.pid, "HUP");
        eventually(
            "the agent to log its reload",
            Duration::from_secs(10),
            || {
                let n = agent.log_count("reload");
                if n > before {
                    Ok(())
                } else {
                    Err(format!("{n} reloads logged:\n{}", agent.log_text()))
                }
            },
        );
    }

    // --------------------------------------------------------------------------------------
    // API

    /// Starts `ctrl-exec-api` and returns its port.
    pub fn api(&self) -> u16 {
        self.api_process().1
    }

    /// Starts `ctrl-exec-api` and returns its pid and port; it logs to
    /// `api.log` in the fixture.
    pub fn api_process(&self) -> (u32, u16) {
        let mut c = self.cmd("ctrl-exec-api");
        c.arg("--config").arg(&self.conf);
        let log = self.dir.join("api.log");
        let (pid, addr) = self.daemon("api", c, &log, "ctrl-exec API listening on ");
        (pid, port_of(&addr))
    }

    // --------------------------------------------------------------------------------------
    // Daemons

    /// Spawns a daemon (stdout piped, stderr to `log`), kept for `Drop`, and
    /// returns its pid and the word after `marker` in its stdout.
    pub fn daemon(&self, what: &str, mut cmd: Command, log: &Path, marker: &str) -> (u32, String) {
        let desc = describe(&cmd);
        cmd.stdout(Stdio::piped())
            .stderr(fs::File::create(log).expect("create daemon log"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        self.daemons.lock().unwrap().push(Daemon {
            what: what.to_string(),
            child,
        });
        let (tx, rx) = mpsc::channel::<String>();
        // Reads every line (so the daemon never blocks on a full pipe) and
        // forwards them while anyone listens.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split(marker).nth(1) {
                        let word = rest.split_whitespace().next().unwrap_or("").to_string();
                        return (pid, word);
                    }
                    seen.push(line);
                }
                Err(e) => panic!(
                    "{what} ({desc}) printed no '{marker}' line within {START_TIMEOUT:?} ({e:?}); stdout so far: {seen:?}\n--- log ---\n{}\n{}",
                    read(log),
                    self.report()
                ),
            }
        }
    }

    /// Kills the daemon with `pid` now (SIGKILL) and reaps it.
    pub fn kill(&self, pid: u32) {
        let mut ds = self.daemons.lock().unwrap();
        if let Some(i) = ds.iter().position(|d| d.child.id() == pid) {
            let mut d = ds.remove(i);
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }

    /// Whether the daemon `pid` is still running (its exit status if not).
    pub fn exited(&self, pid: u32) -> Option<ExitStatus> {
        let mut ds = self.daemons.lock().unwrap();
        ds.iter_mut()
            .find(|d| d.child.id() == pid)
            .and_then(|d| d.child.try_wait().ok().flatten())
    }

    // --------------------------------------------------------------------------------------
    // Talking to an agent directly over TLS

    /// One request to an agent's port over TLS as `client` (see
    /// [`ClientCert`]), verifying the agent against the fixture's CA.
    pub fn agent_request(
        &self,
        port: u16,
        client: &ClientCert,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        let ca_der = pki::pem_certs(&self.ca_pem()).remove(0);
        let config = match client {
            ClientCert::None => tls::pairing_client(Arc::new(tls::PairingVerifier::new(None))),
            ClientCert::Pem { cert, key } => {
                let id = tls::Identity::from_pem(cert, key).map_err(|e| e.to_string())?;
                tls::mtls_client(&id, &ca_der)
            }
        }
        .map_err(|e| e.to_string())?;
        tls_request(config, port, method, path, body)
    }

    /// Raw bytes to an agent's port over TLS as the dispatcher; the reply.
    pub fn agent_raw(&self, port: u16, bytes: &[u8]) -> Result<Response, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ca_der = pki::pem_certs(&self.ca_pem()).remove(0);
        let (cert, key) = self.dispatcher_identity();
        let id = tls::Identity::from_pem(&cert, &key).map_err(|e| e.to_string())?;
        let config = tls::mtls_client(&id, &ca_der).map_err(|e| e.to_string())?;
        rt::block_on(async {
            let stream = client::connect_tls("127.0.0.1", port, config, deadline)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut conn = Conn::new(stream);
            conn.write_raw(bytes, deadline)
                .await
                .map_err(|e| format!("write: {e}"))?;
            conn.read_response(&Limits::default(), deadline)
                .await
                .map_err(|e| format!("read: {e}"))
        })
    }

    /// A second dispatcher identity minted from the fixture's CA, trusted
    /// by `agent` as `id` (its trusted map gains the serial, then a reload):
    /// the certificate and its serial.
    pub fn second_dispatcher(&self, agent: &Agent, id: &str) -> (ClientCert, String) {
        let (cert, key) = pki::issue_key_and_cert(&self.ca_pem(), &self.ca_key_pem(), id, 30)
            .expect("mint a second dispatcher certificate");
        let serial = pki::cert_info_pem(&cert).expect("read its serial").serial;
        let map = agent.trusted_map();
        let mut text = fs::read_to_string(&map).unwrap_or_default();
        text.push_str(&format!("{serial} {id}\n"));
        fs::write(&map, text).expect("extend the trusted map");
        self.reload(agent);
        (ClientCert::Pem { cert, key }, serial)
    }

    /// The dispatcher's identity as a [`ClientCert`].
    pub fn dispatcher_cert(&self) -> ClientCert {
        let (cert, key) = self.dispatcher_identity();
        ClientCert::Pem { cert, key }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let daemons = std::mem::take(&mut *self.daemons.lock().unwrap_or_else(|p| p.into_inner()));
        for mut d in daemons {
            let _ = d.child.kill();
            let _ = d.child.wait();
            let _ = &d.what;
        }
        let started = self
            .pairing_port
            .lock()
            .map(|p| p.is_some())
            .unwrap_or(true);
        if started {
            let _ = Command::new(self.dir.join("bin/ced"))
                .arg("--config")
                .arg(&self.conf)
                .args(["pairing-mode", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            eprintln!("fixture kept for inspection: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A TLS server holding a paired agent's certificate and key that answers
/// every request with one fixed reply; stopped on drop.
pub struct FakeAgent {
    /// Its registry name.
    pub name: String,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeAgent {
    /// `METHOD target` of every request it has answered so far.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn fake_answer(
    config: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    status: u16,
    body: &[u8],
    hits: &Mutex<Vec<String>>,
) {
    smol::block_on(async move {
        let Ok(tcp) = smol::Async::new(tcp) else {
            return;
        };
        let Ok(stream) = server::handshake(config, tcp, Duration::from_secs(10)).await else {
            return;
        };
        let mut conn = Conn::new(stream);
        let Ok(req) = conn.read_request(&Limits::default()).await else {
            return;
        };
        hits.lock()
            .unwrap()
            .push(format!("{} {}", req.head.method, req.head.target));
        let deadline = Instant::now() + Duration::from_secs(30);
        let _ = conn.write_response(status, body, deadline).await;
        let _ = smol::io::AsyncWriteExt::close(&mut conn.io).await;
    });
}

/// Which certificate a direct TLS client presents.
pub enum ClientCert {
    /// No client certificate at all.
    None,
    /// This certificate and key (PEM).
    Pem {
        /// Certificate PEM.
        cert: String,
        /// Key PEM.
        key: String,
    },
}

fn sanitise(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// The port of a `host:port` address a daemon printed.
pub fn port_of_addr(addr: &str) -> u16 {
    port_of(addr)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in listening address {addr:?}"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Plain HTTP for the API

/// One HTTP reply: status, raw head and body.
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the reply when it is not.
    pub fn json(&self) -> Value {
        json::parse(&self.body).unwrap_or_else(|| panic!("body is not JSON: {self}"))
    }
}

impl fmt::Display for HttpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n\n{}", self.head, self.text())
    }
}

/// Sends `bytes` to 127.0.0.1:`port` and reads the reply to EOF.
pub fn http_raw(port: u16, bytes: &[u8]) -> HttpReply {
    try_http_raw(port, bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`http_raw`], reporting a failed exchange instead of panicking.
pub fn try_http_raw(port: u16, bytes: &[u8]) -> Result<HttpReply, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    s.write_all(bytes)
        .map_err(|e| format!("send request: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| {
        format!(
            "reading reply failed after {} bytes ({:?}): {e}",
            buf.len(),
            String::from_utf8_lossy(&buf)
        )
    })?;
    Ok(parse_reply(&buf))
}

/// Connects to 127.0.0.1:`port`, sends nothing and reads what the server
/// says unprompted (an overload answer) to EOF.
pub fn http_unprompted(port: u16) -> HttpReply {
    http_raw(port, b"")
}

/// Parses a raw HTTP/1.x reply.
pub fn parse_reply(buf: &[u8]) -> HttpReply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in reply {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    HttpReply {
        status,
        head,
        body: buf[split + 4..].to_vec(),
    }
}

/// A request with `Content-Length` when there is a body, plus `headers`.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpReply {
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    http_raw(port, req.as_bytes())
}

/// One request to 127.0.0.1:`port` over TLS with `config`, within 20 s.
pub fn tls_request(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    rt::block_on(async {
        let stream = client::connect_tls("127.0.0.1", port, config, deadline)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        client::exchange(
            stream,
            method,
            path,
            "127.0.0.1",
            body,
            &Limits::default(),
            deadline,
        )
        .await
        .map_err(|e| format!("exchange: {e}"))
    })
}

/// A JSON object of string fields, as request bodies in tests.
pub fn json_body(fields: &[(&str, &str)]) -> Vec<u8> {
    let inner: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", jquote(k), jquote(v)))
        .collect();
    format!("{{{}}}", inner.join(",")).into_bytes()
}

/// `GET path`.
pub fn get(port: u16, path: &str) -> HttpReply {
    http(port, "GET", path, &[], None)
}

/// `POST path` with a JSON body.
pub fn post(port: u16, path: &str, body: &str) -> HttpReply {
    http(port, "POST", path, &[], Some(body))
}

// ------------------------------------------------------------------------------------------
// JSON navigation

/// The value at a dotted path (`results.0.stdout`); array indices are numbers.
pub fn jget<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        cur = match cur {
            Value::Object(o) => o.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The string at `path`.
pub fn jstr<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    match jget(v, path)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The integer at `path`.
pub fn jint(v: &Value, path: &str) -> Option<i64> {
    match jget(v, path)? {
        Value::Number(Number::I64(n)) => Some(*n),
        Value::Number(Number::U64(n)) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// The boolean at `path`.
pub fn jbool(v: &Value, path: &str) -> Option<bool> {
    match jget(v, path)? {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// The array at `path`.
pub fn jarr<'a>(v: &'a Value, path: &str) -> Option<&'a [Value]> {
    match jget(v, path)? {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

/// Compact JSON text of `v`, for messages.
pub fn jtext(v: &Value) -> String {
    json::to_string(v)
}

/// A JSON string literal for `s`.
pub fn jquote(s: &str) -> String {
    json::to_string(&json::str(s))
}

#[allow(dead_code)]
/// A tmpfs mounted on a directory for the life of the guard.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs on `dir`; `Err` says why it could not (not
    /// root, no mount(8), no permission in this container).
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Writes a file until the file system refuses more with ENOSPC.
    pub fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = fs::File::create(&path).expect("create filler");
        let chunk = [0u8; 4096];
        loop {
            match f.write_all(&chunk).and_then(|_| f.sync_all()) {
                Ok(()) => continue,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", self.0.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
