//! `ctrl-exec-dispatcher` (`ced`): the operator's command line.
//!
//! Options may come before or after the mode; everything after a literal
//! `--` is passed to the script untouched. Arguments are parsed into [`Args`]
//! without I/O; each mode then loads `ctrl-exec.conf` and runs. Errors carry
//! their exit code and are printed once by [`main`].

mod agents;
mod ca;
mod check;
mod help;
mod hosts;
mod limits;
mod maintain;
mod output;
mod pairing;
mod revoke;
mod rotation;
mod run;

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::conf::{ConfError, DispatcherConf};
use crate::control::dispatch::DispatchError;
use crate::control::engine::EngineError;
use crate::control::registry::RegistryError;
use crate::exit::{self, Failure, Outcome};
use crate::{log, out, outln, VERSION};

const DEFAULT_CONFIG: &str = "/etc/ctrl-exec/ctrl-exec.conf";

const USAGE: &str = "Usage: ctrl-exec-dispatcher <mode> [options] [args]

Modes:
  run <host>[:<port>] [<host>...] <script> [-- <arg>...] [--async] [--json]
  status <reqid> [--json]            wait <reqid> [--timeout <s>] [--json]
  ping <host>[:<port>] [<host>...] [--json]
      run and ping also take hosts from --hosts-file <file|-> (one per line)
      and --tags k=v[,k=v...] (registered agents with all those tags)
  pairing-mode [start|stop] [--timeout <1-600>] [--port <n>]
  list-requests                      approve <reqid>... [--replace] [--lookup-by ip|hostname] [--ip <addr>] [--agent-port <n>]
  approve --codes-file <file|->      approve each request whose name and 6-digit code are a line of the file
  deny <reqid>                       setup-ca        setup-ctrl-exec
  list-agents [--json] [--tags k=v[,k=v...]]
  edit-agent <name> [--rename <new>] [--ip <addr>] [--agent-port <n>] [--lookup-by ip|hostname]
  unpair <hostname> [--revoke]       list-locks [--json]
  revoke-dispatcher <serial> [--json]
  check-config                       check ctrl-exec.conf and the certificates it names
  rotate-cert [--json]               serial-status [--json]
  maintain [--json]                  (timer job: renew, rotate, retire, purge)

Options: --config <path> (default /etc/ctrl-exec/ctrl-exec.conf), -v|--verbose (every log line on stderr), --username <s> (default $USER),
         --token <s> (default $ENVEXEC_TOKEN), --version
";

/// Errors of the dispatcher CLI, each knowing its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad invocation.
    Usage(String),
    /// The operation failed, with a message for the operator.
    Failed(String),
    /// ctrl-exec.conf is unusable.
    Config(ConfError),
    /// The dispatcher's identity could not be loaded.
    Engine(EngineError),
    /// The registry could not be read or written.
    Registry(RegistryError),
    /// The dispatch path refused or failed.
    Dispatch(DispatchError),
    /// Stdout could not be written.
    Output(io::Error),
    /// Already reported on stdout (`--json`): exit with this code, quietly.
    Reported(u8),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => write!(f, "{m}"),
            CliError::Config(e) => write!(f, "{e}"),
            CliError::Engine(e) => write!(f, "{e}"),
            CliError::Registry(e) => write!(f, "{e}"),
            CliError::Dispatch(e @ DispatchError::UnknownAgents(_)) => write!(
                f,
                "Error: {e}\nOnly registered agents can be addressed - run 'ctrl-exec-dispatcher list-agents' to see them."
            ),
            CliError::Dispatch(e) => write!(f, "{e}"),
            CliError::Output(e) => write!(f, "cannot write output: {e}"),
            CliError::Reported(_) => Ok(()),
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> CliError {
        CliError::Output(e)
    }
}

impl Failure for CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Dispatch(DispatchError::InvalidScript(_)) => exit::USAGE,
            CliError::Reported(code) => *code,
            CliError::Output(e) if exit::is_closed_output(e) => exit::SUCCESS,
            _ => exit::FAILURE,
        }
    }

    fn quiet(&self) -> bool {
        match self {
            CliError::Reported(_) => true,
            CliError::Output(e) => exit::is_closed_output(e),
            _ => false,
        }
    }
}

/// Parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    /// The mode word.
    pub mode: String,
    /// Positional words after the mode.
    pub words: Vec<String>,
    /// Words after `--`.
    pub script_args: Vec<String>,
    /// `--config`.
    pub config: PathBuf,
    /// `--json`.
    pub json: bool,
    /// `--port`.
    pub port: Option<u16>,
    /// `--username` (default `$USER`).
    pub username: String,
    /// `--token` (default `$ENVEXEC_TOKEN`).
    pub token: String,
    /// `--lookup-by`.
    pub lookup_by: Option<String>,
    /// `--agent-port`.
    pub agent_port: Option<String>,
    /// `--ip`.
    pub ip: Option<String>,
    /// `--rename`.
    pub rename: Option<String>,
    /// `--tags`.
    pub tags: Option<String>,
    /// `-v`: every action line on stderr, not only warnings and errors.
    pub verbose: bool,
    /// `--hosts-file` (`-` for stdin).
    pub hosts_file: Option<String>,
    /// `--codes-file` (`approve`): lines of `<name> <code>`, `-` for stdin.
    pub codes_file: Option<String>,
    /// `--async`.
    pub detach: bool,
    /// `--replace` (`approve`: replace an agent registered under the same name).
    pub replace: bool,
    /// `--timeout`.
    pub timeout: Option<String>,
    /// `--revoke` (`unpair`: also revoke the agent's serial and key).
    pub revoke: bool,
    /// Internal: run the pairing session as the background child.
    pub pairing_child: bool,
}

/// Entry point of the dispatcher CLI.
pub fn main(args: Vec<String>) -> Outcome {
    entry(args).map_err(|e| Box::new(e) as Box<dyn Failure>)
}

fn entry(args: Vec<String>) -> Result<u8, CliError> {
    // Words after `--` are the script's, never a request for help.
    let ours = || args.iter().take_while(|a| *a != "--");
    if ours().any(|a| a == "-h" || a == "--help") {
        if let Some(text) = ours().find_map(|a| help::of(a)) {
            out!("{text}")?;
            return Ok(exit::SUCCESS);
        }
    }
    match parse(args)? {
        ParseResult::Help => out!("{USAGE}")?,
        ParseResult::Version => outln!("ctrl-exec-dispatcher {VERSION}")?,
        ParseResult::Run(a) => return run_mode(*a),
    }
    Ok(exit::SUCCESS)
}

enum ParseResult {
    Help,
    Version,
    Run(Box<Args>),
}

fn parse(mut all: Vec<String>) -> Result<ParseResult, CliError> {
    let script_args = match all.iter().position(|a| a == "--") {
        Some(i) => {
            let rest = all.split_off(i + 1);
            all.pop();
            rest
        }
        None => Vec::new(),
    };
    let mut p = pico_args::Arguments::from_vec(all.into_iter().map(Into::into).collect());
    if p.contains(["-h", "--help"]) {
        return Ok(ParseResult::Help);
    }
    if p.contains("--version") {
        return Ok(ParseResult::Version);
    }
    let usage = |e: pico_args::Error| CliError::Usage(e.to_string());
    let mut a = Args {
        config: p
            .opt_value_from_str("--config")
            .map_err(usage)?
            .unwrap_or_else(|| DEFAULT_CONFIG.into()),
        json: p.contains("--json"),
        port: p.opt_value_from_str("--port").map_err(usage)?,
        username: p
            .opt_value_from_str("--username")
            .map_err(usage)?
            .unwrap_or_else(|| std::env::var("USER").unwrap_or_default()),
        token: p
            .opt_value_from_str("--token")
            .map_err(usage)?
            .unwrap_or_else(|| std::env::var("ENVEXEC_TOKEN").unwrap_or_default()),
        lookup_by: p.opt_value_from_str("--lookup-by").map_err(usage)?,
        agent_port: p.opt_value_from_str("--agent-port").map_err(usage)?,
        ip: p.opt_value_from_str("--ip").map_err(usage)?,
        rename: p.opt_value_from_str("--rename").map_err(usage)?,
        tags: p.opt_value_from_str("--tags").map_err(usage)?,
        hosts_file: p.opt_value_from_str("--hosts-file").map_err(usage)?,
        codes_file: p.opt_value_from_str("--codes-file").map_err(usage)?,
        verbose: p.contains(["-v", "--verbose"]),
        detach: p.contains("--async"),
        replace: p.contains("--replace"),
        revoke: p.contains("--revoke"),
        timeout: p.opt_value_from_str("--timeout").map_err(usage)?,
        pairing_child: p.contains("--pairing-child"),
        script_args,
        ..Args::default()
    };
    let mut words: Vec<String> = p
        .finish()
        .into_iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    if let Some(opt) = words.iter().find(|w| w.starts_with("--")) {
        return Err(CliError::Usage(format!("unknown option '{opt}'\n{USAGE}")));
    }
    if words.is_empty() {
        return Err(CliError::Usage(format!("no mode given\n{USAGE}")));
    }
    a.mode = words.remove(0);
    a.words = words;
    Ok(ParseResult::Run(Box::new(a)))
}

/// Loads the config named by `--config`.
pub fn load_conf(a: &Args) -> Result<DispatcherConf, CliError> {
    if !a.config.exists() {
        return Err(CliError::Failed(format!(
            "{}: no such file; install the dispatcher first (the ctrl-exec-dispatcher \
             package, or scripts/install.sh --dispatcher), or name another with --config",
            a.config.display()
        )));
    }
    let conf = DispatcherConf::load(&a.config).map_err(CliError::Config)?;
    // On a terminal every action line would drown the output: stderr gets
    // warnings and errors; syslog (when configured) gets every action.
    match conf.syslog {
        true => log::init("ctrl-exec-dispatcher", log::Target::Syslog),
        false => log::init_with_level(
            "ctrl-exec-dispatcher",
            log::Target::Stderr,
            if a.verbose {
                ::log::LevelFilter::Info
            } else {
                ::log::LevelFilter::Warn
            },
        ),
    }
    for w in &conf.warnings {
        w.log();
    }
    Ok(conf)
}

fn run_mode(a: Args) -> Result<u8, CliError> {
    match a.mode.as_str() {
        "run" => run::run(&a),
        "status" => run::status(&a, false),
        "wait" => run::status(&a, true),
        "ping" => run::ping(&a),
        "pairing-mode" => pairing::pairing_mode(&a),
        "list-requests" => pairing::list_requests(&a),
        "approve" => pairing::approve(&a),
        "deny" => pairing::deny(&a),
        "setup-ca" => ca::setup_ca(&a),
        "setup-ctrl-exec" => ca::setup_dispatcher(&a),
        "list-agents" => agents::list_agents(&a),
        "edit-agent" => agents::edit_agent(&a),
        "unpair" => agents::unpair(&a),
        "list-locks" => agents::list_locks(&a),
        "revoke-dispatcher" => revoke::revoke_dispatcher(&a),
        "check-config" => check::check_config(&a),
        "rotate-cert" => rotation::rotate_cert(&a),
        "serial-status" => rotation::serial_status(&a),
        "maintain" => maintain::maintain(&a),
        other => Err(CliError::Usage(format!("Unknown mode '{other}'\n{USAGE}"))),
    }
}
