//! `ctrl-exec-agent` (`cea`): the agent role.
//!
//! Modes: `serve` (the mTLS listener), `request-pairing`, `pairing-status`,
//! `self-check`, `self-ping`, and the service helpers `paired`,
//! `cert-staged` and `promote-cert`. Arguments are parsed into `Args` without I/O; the mode
//! then loads agent.conf and does its work, returning an [`AgentError`] that
//! `main` prints once.

mod access;
mod cert;
mod executor_client;
mod help;
mod jobs;
mod limits;
mod pairing;
mod runner;
mod schema;
mod serve;
mod trust;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::conf::{self, AgentConf};
use crate::exit::{self, Failure, Outcome};
use crate::net::{client, http::Conn, limits::Limits, tls};
use crate::proto::json;
use crate::{log, pki, rt, time, VERSION};

const DEFAULT_CONFIG: &str = "/etc/ctrl-exec-agent/agent.conf";
const DEFAULT_ALLOWLIST: &str = "/etc/ctrl-exec-agent/scripts.conf";
/// The group the packaged service runs in: pairing as root makes the new
/// key readable by it (0640 root:ctrl-exec-agent), as the original does.
const SERVICE_GROUP: &str = "ctrl-exec-agent";
const DEFAULT_PAIRING_PORT: u16 = 7444;

const USAGE: &str = "Usage: ctrl-exec-agent <mode> [options]

Modes:
  serve                         run the agent (mTLS listener)
  request-pairing --dispatcher <host> [--port <n>] [--lookup-by ip|hostname]
                  [--ca-fingerprint sha256:<hex>] [--key-type ec|rsa|rsa3072|rsa4096]
                  [--background [--timeout <s>]]
  pairing-status                show whether this agent is paired
  self-check                    check config, allowlist and certificates offline
  self-ping                     connect to the local agent over mTLS
  check-start [--user <name>]   exit 0 if serve would start (as <name>), else 78 with why
  paired | cert-staged          exit 0 if paired / a renewed certificate is staged
  promote-cert                  make a valid staged certificate the live one, and write
                                valid staged trusted-map changes into the map (exit 0)

Options:
  --config <path>      agent config (default /etc/ctrl-exec-agent/agent.conf)
  --allowlist <path>   script allowlist (default /etc/ctrl-exec-agent/scripts.conf)
  -v, --verbose        every log line on stderr on a terminal
  --version            print the version
";

/// Errors of the agent role, each knowing its exit code.
#[derive(Debug)]
pub enum AgentError {
    /// Bad invocation.
    Usage(String),
    /// agent.conf, the allowlist or the trust files are unusable (exit 78).
    Config(String),
    /// A certificate, key or CA file is missing (exit 78 for serve).
    NotPaired(String),
    /// Pairing: no decision before the timeout (exit 2).
    PairTimeout(String),
    /// Pairing: the operator denied the request (exit 3).
    PairDenied(String),
    /// Anything else (exit 1).
    Failed(String),
    /// Stdout could not be written.
    Output(std::io::Error),
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> AgentError {
        AgentError::Output(e)
    }
}

impl Failure for AgentError {
    fn exit_code(&self) -> u8 {
        self.code()
    }

    fn quiet(&self) -> bool {
        matches!(self, AgentError::Output(e) if exit::is_closed_output(e))
    }
}

impl AgentError {
    /// The process exit code for this error.
    pub fn code(&self) -> u8 {
        match self {
            AgentError::Usage(_) => exit::USAGE,
            AgentError::Config(_) | AgentError::NotPaired(_) => exit::CONFIG,
            AgentError::PairTimeout(_) => exit::PAIRING_TIMED_OUT,
            AgentError::PairDenied(_) => exit::PAIRING_DENIED,
            AgentError::Output(e) if exit::is_closed_output(e) => exit::SUCCESS,
            AgentError::Failed(_) | AgentError::Output(_) => exit::FAILURE,
        }
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Usage(m) | AgentError::Failed(m) | AgentError::PairTimeout(m) | AgentError::PairDenied(m) => {
                write!(f, "{m}")
            }
            AgentError::Config(m) => write!(f, "cannot start - configuration error: {m}"),
            AgentError::Output(e) => write!(f, "cannot write output: {e}"),
            AgentError::NotPaired(path) => write!(
                f,
                "cannot start - this agent has not been paired yet (missing {path}); run: ctrl-exec-agent request-pairing --dispatcher <dispatcher-host>"
            ),
        }
    }
}

/// Parsed command line, no I/O done yet.
#[derive(Debug)]
struct Args {
    mode: String,
    config: PathBuf,
    allowlist: PathBuf,
    dispatcher: Option<String>,
    port: Option<u16>,
    lookup_by: Option<String>,
    background: bool,
    background_child: bool,
    timeout: Option<u64>,
    ca_fingerprint: Option<String>,
    key_type: Option<String>,
    /// `check-start --user`: the user the service will run as.
    user: Option<String>,
    /// `-v`: every action line on a terminal too.
    verbose: bool,
}

/// Entry point of the agent role.
pub fn main(args: Vec<String>) -> Outcome {
    entry(args).map_err(|e| Box::new(e) as Box<dyn Failure>)
}

fn entry(args: Vec<String>) -> Result<u8, AgentError> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        if let Some(text) = args.iter().find_map(|a| help::of(a)) {
            crate::out!("{text}")?;
            return Ok(exit::SUCCESS);
        }
    }
    let mut pargs = pico_args::Arguments::from_vec(args.into_iter().map(Into::into).collect());
    if pargs.contains(["-h", "--help"]) {
        crate::out!("{USAGE}")?;
        return Ok(exit::SUCCESS);
    }
    if pargs.contains("--version") {
        crate::outln!("ctrl-exec-agent {VERSION}")?;
        return Ok(exit::SUCCESS);
    }
    match parse_args(pargs)? {
        Some(a) => run_mode(a),
        None => {
            crate::out!("{USAGE}")?;
            Ok(exit::SUCCESS)
        }
    }
}

fn parse_args(mut p: pico_args::Arguments) -> Result<Option<Args>, AgentError> {
    let usage = |e: pico_args::Error| AgentError::Usage(format!("{e}\n{USAGE}"));
    let config: Option<PathBuf> = p.opt_value_from_str("--config").map_err(usage)?;
    let allowlist: Option<PathBuf> = p.opt_value_from_str("--allowlist").map_err(usage)?;
    let dispatcher: Option<String> = p.opt_value_from_str("--dispatcher").map_err(usage)?;
    let port: Option<u16> = p.opt_value_from_str("--port").map_err(usage)?;
    let lookup_by: Option<String> = p.opt_value_from_str("--lookup-by").map_err(usage)?;
    let timeout: Option<u64> = p.opt_value_from_str("--timeout").map_err(usage)?;
    let ca_fingerprint: Option<String> = p.opt_value_from_str("--ca-fingerprint").map_err(usage)?;
    let key_type: Option<String> = p.opt_value_from_str("--key-type").map_err(usage)?;
    let user: Option<String> = p.opt_value_from_str("--user").map_err(usage)?;
    let background = p.contains("--background");
    let background_child = p.contains("--background-child");
    let verbose = p.contains(["-v", "--verbose"]);
    let mode: Option<String> = p.opt_free_from_str().map_err(usage)?;
    let rest = p.finish();
    if let Some(extra) = rest.first() {
        return Err(AgentError::Usage(format!(
            "unexpected argument '{}'\n{USAGE}",
            extra.to_string_lossy()
        )));
    }
    let Some(mode) = mode else { return Ok(None) };
    Ok(Some(Args {
        mode,
        config: config.unwrap_or_else(|| DEFAULT_CONFIG.into()),
        allowlist: allowlist.unwrap_or_else(|| DEFAULT_ALLOWLIST.into()),
        dispatcher,
        port,
        lookup_by,
        background,
        background_child,
        timeout,
        ca_fingerprint,
        key_type,
        user,
        verbose,
    }))
}

fn load_conf(path: &Path) -> Result<AgentConf, AgentError> {
    AgentConf::load(path).map_err(|e| AgentError::Config(e.to_string()))
}

/// Starts logging as agent.conf says and logs its warnings (unknown keys,
/// keys that do nothing).
/// Logging for a mode: every action to syslog when configured, else to
/// stderr; a command run by hand on a terminal (`interactive`) shows only
/// warnings and errors there, so action lines never interleave with what
/// it prints (`-v` shows them all).
fn init_log(conf: &AgentConf, interactive: bool) {
    let target = if conf.syslog {
        log::Target::Syslog
    } else {
        log::Target::Stderr
    };
    let level = if interactive && !conf.syslog {
        ::log::LevelFilter::Warn
    } else {
        ::log::LevelFilter::Info
    };
    log::init_with_level("ctrl-exec-agent", target, level);
    for w in &conf.warnings {
        w.log();
    }
}

fn run_mode(a: Args) -> Result<u8, AgentError> {
    match a.mode.as_str() {
        "serve" => {
            let conf = load_conf(&a.config)?;
            init_log(&conf, false);
            refuse_unusable_files(&conf, &a)?;
            serve::serve(conf, a.config, a.allowlist).map(|_| 0)
        }
        "request-pairing" => request_pairing(a),
        "pairing-status" => {
            let conf = load_conf(&a.config)
                .map_err(|e| AgentError::Failed(format!("Config error: {e}")))?;
            match paired_expiry(&conf) {
                Ok((expiry, _)) => {
                    crate::outln!("Paired. Certificate expires: {expiry}")?;
                    Ok(0)
                }
                Err(reason) => {
                    crate::outln!("Not paired. Reason: {reason}")?;
                    Ok(1)
                }
            }
        }
        "self-check" => self_check(&a),
        "check-start" => check_start(&a),
        "self-ping" => self_ping(&a),
        "paired" => Ok(match AgentConf::load(&a.config) {
            Ok(conf) if [&conf.cert, &conf.key, &conf.ca].iter().all(|p| p.exists()) => 0,
            _ => 1,
        }),
        "cert-staged" => Ok(match AgentConf::load(&a.config) {
            Ok(conf) if conf.cert_staging_path.exists() => 0,
            _ => 1,
        }),
        // Runs before the service starts: whatever happens, it must not
        // keep the agent from starting, so it always exits 0.
        "promote-cert" => {
            match AgentConf::load(&a.config) {
                Ok(conf) => {
                    init_log(&conf, false);
                    cert::promote(&conf);
                    trust::promote_staged(&conf);
                }
                Err(e) => {
                    log::init("ctrl-exec-agent", log::Target::Stderr);
                    log::warn(
                        "cert-promote",
                        &[("ERROR", &e.to_string()), ("RESULT", "error")],
                    );
                }
            }
            Ok(0)
        }
        other => Err(AgentError::Usage(format!(
            "Unknown mode '{other}'\n{USAGE}"
        ))),
    }
}

fn request_pairing(a: Args) -> Result<u8, AgentError> {
    let dispatcher = a.dispatcher.clone().ok_or_else(|| {
        AgentError::Usage("--dispatcher <host> required for request-pairing".into())
    })?;
    let lookup_by =
        match a.lookup_by.as_deref() {
            None => None,
            Some(text) => Some(crate::proto::LookupBy::parse(text).ok_or_else(|| {
                AgentError::Usage("--lookup-by must be 'ip' or 'hostname'".into())
            })?),
        };
    let wait = match a.timeout {
        Some(t) if t == 0 || t > limits::PAIRING_BACKGROUND_MAX_SECS => {
            return Err(AgentError::Usage(format!(
                "--timeout must be between 1 and {} seconds",
                limits::PAIRING_BACKGROUND_MAX_SECS
            )))
        }
        Some(t) => Duration::from_secs(t),
        None if a.background || a.background_child => limits::PAIRING_BACKGROUND_DEFAULT,
        None => limits::PAIRING_WAIT,
    };
    let ca_fingerprint = match &a.ca_fingerprint {
        Some(text) => Some(pki::normalise_fingerprint(text).ok_or_else(|| {
            AgentError::Usage(format!(
                "--ca-fingerprint '{text}' is not a SHA-256 fingerprint (sha256:<64 hex>)"
            ))
        })?),
        None => None,
    };
    let key_type = match &a.key_type {
        Some(text) => Some(pki::KeyType::parse(text).ok_or_else(|| {
            AgentError::Usage(format!(
                "--key-type must be one of {}, got '{text}'",
                pki::KeyType::NAMES
            ))
        })?),
        None => None,
    };
    let conf = load_conf(&a.config)?;
    init_log(
        &conf,
        !a.verbose && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    if a.background && !a.background_child {
        return spawn_background(&a);
    }
    let req = pairing::Request {
        dispatcher,
        port: a.port.unwrap_or(DEFAULT_PAIRING_PORT),
        lookup_by,
        background: a.background || a.background_child,
        wait,
        ca_fingerprint,
        key_type: key_type.unwrap_or(conf.key_type),
    };
    pairing::request_pairing(&conf, &req).map(|_| 0)
}

/// `--background`: run the exchange in a detached copy of this process, print
/// the request id it reports, and return at once.
fn spawn_background(a: &Args) -> Result<u8, AgentError> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| AgentError::Failed(format!("cannot find own executable: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("ctrl-exec-agent")
        .arg("request-pairing")
        .arg("--background-child");
    cmd.arg("--config").arg(&a.config);
    if let Some(d) = &a.dispatcher {
        cmd.arg("--dispatcher").arg(d);
    }
    if let Some(p) = a.port {
        cmd.arg("--port").arg(p.to_string());
    }
    if let Some(lb) = &a.lookup_by {
        cmd.arg("--lookup-by").arg(lb);
    }
    if let Some(t) = a.timeout {
        cmd.arg("--timeout").arg(t.to_string());
    }
    if let Some(fp) = &a.ca_fingerprint {
        cmd.arg("--ca-fingerprint").arg(fp);
    }
    if let Some(k) = &a.key_type {
        cmd.arg("--key-type").arg(k);
    }
    // The detached child must not hold the caller's stderr open (a caller
    // capturing output would wait for it); it logs to syslog when configured.
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| AgentError::Failed(format!("cannot start background pairing: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AgentError::Failed("no pipe to background pairing".into()))?;
    // The child's first line is `<reqid> <code> <hostname>` (internal).
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    let mut words = line.split_whitespace();
    let reqid = words.next().unwrap_or("");
    if reqid.is_empty() {
        let status = child
            .wait()
            .map_err(|e| AgentError::Failed(e.to_string()))?;
        return Ok(status.code().unwrap_or(1).clamp(1, 255) as u8);
    }
    // Stdout is the request id alone (scripts read it); the code, for the
    // operator to compare or to collect for `ced approve --codes-file`, goes
    // to stderr as `<hostname> <code>`, the line that file takes.
    if let (Some(code), Some(host)) = (words.next(), words.next()) {
        eprintln!("Pairing code: {host} {code}");
    }
    crate::outln!("{reqid}")?;
    Ok(0)
}

fn paired_expiry(conf: &AgentConf) -> Result<(String, pki::Lifetime), String> {
    for p in [&conf.cert, &conf.key, &conf.ca] {
        if !p.exists() {
            return Err(format!("missing file: {}", p.display()));
        }
    }
    let pem = std::fs::read_to_string(&conf.cert)
        .map_err(|_| format!("cannot parse cert: {}", conf.cert.display()))?;
    pki::cert_info_pem(&pem)
        .map(|i| (time::openssl_date(i.not_after), i.lifetime(time::now())))
        .map_err(|_| format!("cannot parse cert: {}", conf.cert.display()))
}

fn self_check(a: &Args) -> Result<u8, AgentError> {
    crate::outln!("Checking config...")?;
    let conf = match AgentConf::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            crate::outln!("  Config error: {e}")?;
            return Ok(1);
        }
    };
    let mut config_errors = 0;
    for w in &conf.warnings {
        if w.is_unknown() {
            config_errors += 1;
            crate::outln!("  Config error: {w}")?;
        } else {
            crate::outln!("  Config warning: {w}")?;
        }
    }
    if config_errors == 0 {
        crate::outln!("  Config OK (port {})", conf.port)?;
    }
    let allowlist = match conf::load_allowlist(&a.allowlist, &conf.script_dirs) {
        Ok(l) => l,
        Err(e) => {
            crate::outln!("  Allowlist error: {e}")?;
            return Ok(1);
        }
    };
    crate::outln!("  Allowlist OK ({} scripts)", allowlist.scripts.len())?;
    for w in &allowlist.warnings {
        crate::outln!("  Allowlist warning: {w}")?;
    }
    let mut cert_errors = 0;
    match paired_expiry(&conf) {
        Ok((expiry, pki::Lifetime::Fresh { .. })) => {
            crate::outln!("  Certs OK (expires {expiry})")?
        }
        Ok((expiry, pki::Lifetime::RenewalDue { days_left })) => crate::outln!(
            "  Certs warning: expires {expiry}, in {days_left} days, past half its lifetime; the dispatcher renews it at the next 'ced ping' or 'ced maintain'"
        )?,
        Ok((expiry, pki::Lifetime::Expired)) => {
            cert_errors += 1;
            crate::outln!(
                "  Certs error: expired {expiry}; dispatchers refuse this agent until it is paired again (cea request-pairing)"
            )?
        }
        Ok((_, pki::Lifetime::NotYetValid)) => {
            cert_errors += 1;
            crate::outln!("  Certs error: not valid yet; check this host's clock")?
        }
        Err(reason) => crate::outln!("  Certs: NOT paired - {reason}")?,
    }
    let mut undefined = Vec::new();
    for s in allowlist.scripts.values() {
        let state = if serve::is_executable(&s.path) {
            "ok"
        } else {
            "NOT EXECUTABLE"
        };
        crate::outln!(
            "  Script '{}': {}  (profile: {}) [{state}]",
            s.name,
            s.path.display(),
            s.profile
        )?;
        if s.profile != "default" && !conf.profiles.contains_key(&s.profile) {
            undefined.push(format!("{} -> {}", s.name, s.profile));
        }
    }
    if !undefined.is_empty() {
        crate::outln!(
            "  Profile error: undefined profile(s) referenced: {}",
            undefined.join(", ")
        )?;
    }
    if let Ok(map) = trust::load_trusted(&conf.trusted_dispatchers_path) {
        for (entry, id, other) in trust::ambiguous_entries(&map) {
            crate::outln!(
                "  Trust warning: entry '{entry} {id}' is read as serial 0x{entry}; in a map written by ctrl-exec 0.12 it may stand for serial 0x{other}. Compare with 'openssl x509 -noout -serial' on {id}'s certificate and write the serial it prints"
            )?;
        }
    }
    let who = service_user(&conf);
    let exposed = trust::replaceable_by(&conf, who);
    if exposed.is_empty() {
        crate::outln!(
            "  Trust files OK (not replaceable by uid {}: {})",
            who.uid,
            trust::trust_files(&conf)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    } else {
        for p in &exposed {
            crate::outln!(
                "  Trust error: {} can be replaced by uid {} (the agent and its scripts); make it root-owned and not writable by that user",
                p.display(),
                who.uid
            )?;
        }
    }
    let mut access_errors = 0;
    if who.uid != 0 {
        match access::ServiceUser::named(&who.uid.to_string()) {
            Ok(user) => {
                let problems = access::problems(&conf, &a.config, &a.allowlist, &user);
                access_errors = problems.len();
                for p in &problems {
                    crate::outln!("  Access error: {p}")?;
                }
                if problems.is_empty() {
                    crate::outln!(
                        "  Access OK ({} can read its config, allowlist, key and certificates and write its state)",
                        user.label
                    )?;
                }
            }
            Err(e) => crate::outln!("  Access warning: cannot look up uid {}: {e}", who.uid)?,
        }
    }
    match &conf.executor_socket {
        Some(socket) => crate::outln!(
            "  Job records OK (scripts run through the executor at {}, which keeps {} read-only to them)",
            socket.display(),
            conf.async_runs_dir.display()
        )?,
        None => crate::outln!(
            "  Job records warning: scripts run as uid {}, which can rewrite the results in {}; set executor_socket to run them through ctrl-exec-exec",
            who.uid,
            conf.async_runs_dir.display()
        )?,
    }
    crate::outln!("Self-check complete.")?;
    Ok(
        if exposed.is_empty() && config_errors == 0 && cert_errors == 0 && access_errors == 0 {
            0
        } else {
            1
        },
    )
}

/// Loads everything `serve` loads, and checks that the service user (by
/// default the one running this) can read and write what it needs: the
/// init scripts' guard, so an agent that would exit 78 is never started,
/// respawned or reported started.
fn check_start(a: &Args) -> Result<u8, AgentError> {
    let conf = load_conf(&a.config)?;
    let snap = serve::check(&conf, &a.allowlist)?;
    if let Some(name) = &a.user {
        let user = access::ServiceUser::named(name).map_err(AgentError::Config)?;
        require_access(&conf, a, &user)?;
    }
    crate::outln!("ready to serve: {snap}")?;
    Ok(exit::SUCCESS)
}

/// Run as a service user, names each file it cannot read or write, with
/// the fix, before anything fails on it with a bare "Permission denied".
fn refuse_unusable_files(conf: &AgentConf, a: &Args) -> Result<(), AgentError> {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return Ok(());
    }
    match access::ServiceUser::named(&uid.to_string()) {
        Ok(user) => require_access(conf, a, &user),
        Err(_) => Ok(()),
    }
}

/// A config error listing every file `user` cannot use, if there is one.
fn require_access(
    conf: &AgentConf,
    a: &Args,
    user: &access::ServiceUser,
) -> Result<(), AgentError> {
    let problems = access::problems(conf, &a.config, &a.allowlist, user);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AgentError::Config(problems.join("\n")))
    }
}

/// The user the agent runs as: this one, or, when checking as root, the
/// owner of the state directory (the service user).
fn service_user(conf: &AgentConf) -> trust::RunsAs {
    let me = trust::RunsAs {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    };
    if me.uid != 0 {
        return me;
    }
    match rustix::fs::stat(&conf.state_dir) {
        Ok(st) => trust::RunsAs {
            uid: st.st_uid,
            gid: st.st_gid,
        },
        Err(_) => me,
    }
}

fn self_ping(a: &Args) -> Result<u8, AgentError> {
    crate::outln!("Checking config...")?;
    let conf =
        load_conf(&a.config).map_err(|e| AgentError::Failed(format!("Config error: {e}")))?;
    crate::outln!("  Config OK (port {})", conf.port)?;
    let expiry = match paired_expiry(&conf) {
        Ok((e, _)) => e,
        Err(reason) => {
            crate::outln!("  Paired: no - {reason}")?;
            crate::outln!("  Cannot self-ping: agent not paired.")?;
            return Ok(1);
        }
    };
    crate::outln!("  Paired: yes (cert expires {expiry})")?;
    let (cert, key, ca) = serve::read_material(&conf)?;
    let identity =
        tls::Identity::from_pem(&cert, &key).map_err(|e| AgentError::Failed(e.to_string()))?;
    let ca_der = pki::pem_certs(&ca).into_iter().next().unwrap_or_default();
    let config =
        tls::mtls_client(&identity, &ca_der).map_err(|e| AgentError::Failed(e.to_string()))?;
    let host = if conf.bind == "0.0.0.0" || conf.bind == "::" {
        "127.0.0.1".to_string()
    } else {
        conf.bind.clone()
    };
    crate::outln!("Connecting to {host}:{}...", conf.port)?;
    let deadline = Instant::now() + limits::SELF_PING_TIMEOUT;
    let outcome = rt::block_on(async {
        let tcp = client::connect_tcp(&host, conf.port, deadline).await;
        if tcp.is_err() {
            return Err(format!(
                "  Port {}: not listening - is the agent running?",
                conf.port
            ));
        }
        drop(tcp);
        crate::outln!("  Port {}: listening", conf.port).map_err(|e| e.to_string())?;
        let stream = client::connect_tls(&host, conf.port, config, deadline)
            .await
            .map_err(|e| format!("  mTLS handshake failed: {e}"))?;
        crate::outln!("  mTLS handshake: OK").map_err(|e| e.to_string())?;
        let body = json::to_string(
            &crate::proto::PingRequest {
                reqid: pki::random_hex(8),
            }
            .to_json(),
        );
        let mut conn = Conn::new(stream);
        conn.write_request("POST", "/ping", &host, Some(body.as_bytes()), deadline)
            .await
            .map_err(|e| format!("  Ping failed: {e}"))?;
        conn.read_response(&Limits::default(), deadline)
            .await
            .map_err(|e| format!("  Ping failed: {e}"))
    });
    match outcome {
        Err(msg) => {
            crate::outln!("{msg}")?;
            Ok(1)
        }
        Ok(resp) => {
            let text = String::from_utf8_lossy(&resp.body).into_owned();
            let code = if resp.status == 403 && text.contains("serial mismatch") {
                crate::outln!("  Ping response: 403 serial mismatch (expected - agent is running and enforcing policy)")?;
                0
            } else if resp.status == 200 && text.contains("\"status\":\"ok\"") {
                crate::outln!("  Ping response: OK")?;
                0
            } else {
                crate::outln!("  Ping response: unexpected - {text}")?;
                1
            };
            if code == 0 {
                crate::outln!("Self-ping complete.")?;
            }
            Ok(code)
        }
    }
}
