//! The `ctrl-exec-exec` role: the privileged executor (protocol.md 4.7).
//!
//! `resolve <agent.conf> <scripts.conf> <name>` prints how the executor
//! would run a script, from its own reading of both files:
//! `DENY not-allowlisted|not-in-script-dirs|undefined-profile`, or
//! `OK path=P profile=N run_as=U nnp=0|1 caps=A,B writable=/a:/b`.
//!
//! `serve <socket> <agent.conf> <scripts.conf> <peer-user>` runs scripts for
//! the agent front-end under their profiles ([`serve`]).

pub mod limits;
mod serve;

pub use serve::ALLOW_UNPRIVILEGED_ENV;

use std::fmt;
use std::path::Path;

use crate::conf::{self, AgentConf, ScriptEntry};
use crate::exit::{self, Failure, Outcome};

/// A failure of the executor's command line.
#[derive(Debug)]
pub enum ExecError {
    /// Wrong arguments (exit 64).
    Usage(String),
    /// A configuration file is unreadable or invalid (exit 2 for `resolve`).
    Config(String),
    /// `serve` cannot start on its configuration (exit 78: do not respawn).
    Startup(String),
    /// `serve` failed (exit 1).
    Failed(String),
    /// Stdout could not be written.
    Output(std::io::Error),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Usage(m)
            | ExecError::Config(m)
            | ExecError::Startup(m)
            | ExecError::Failed(m) => f.write_str(m),
            ExecError::Output(e) => write!(f, "cannot write output: {e}"),
        }
    }
}

impl Failure for ExecError {
    fn exit_code(&self) -> u8 {
        match self {
            ExecError::Usage(_) => exit::USAGE,
            ExecError::Config(_) => exit::EXEC_CONFIG,
            ExecError::Startup(_) => exit::CONFIG,
            ExecError::Failed(_) => exit::FAILURE,
            ExecError::Output(_) => exit::FAILURE,
        }
    }

    fn quiet(&self) -> bool {
        matches!(self, ExecError::Output(e) if exit::is_closed_output(e))
    }
}

const USAGE: &str = "usage: ctrl-exec-exec resolve <agent.conf> <scripts.conf> <name>
       ctrl-exec-exec serve <socket> <agent.conf> <scripts.conf> <peer-user>
       ctrl-exec-exec check <agent.conf> <scripts.conf> <peer-user>
check: exit 0 when serve would start on these files, 78 (reason on stderr) if not";

/// The role's entry point.
pub fn main(args: Vec<String>) -> Outcome {
    match args.first().map(String::as_str) {
        Some("resolve") if args.len() == 4 => {
            let line = resolve(Path::new(&args[1]), Path::new(&args[2]), &args[3])
                .map_err(|e| Box::new(e) as Box<dyn Failure>)?;
            crate::outln!("{line}")
                .map_err(|e| Box::new(ExecError::Output(e)) as Box<dyn Failure>)?;
            Ok(exit::SUCCESS)
        }
        Some("serve") if args.len() == 5 => {
            serve::serve(
                Path::new(&args[1]),
                Path::new(&args[2]),
                Path::new(&args[3]),
                &args[4],
            )
            .map_err(|e| Box::new(e) as Box<dyn Failure>)?;
            Ok(exit::SUCCESS)
        }
        Some("check") if args.len() == 4 => {
            serve::check(Path::new(&args[1]), Path::new(&args[2]), &args[3])
                .map_err(|e| Box::new(e) as Box<dyn Failure>)?;
            Ok(exit::SUCCESS)
        }
        Some("-h" | "--help") => {
            crate::outln!("{USAGE}")
                .map_err(|e| Box::new(ExecError::Output(e)) as Box<dyn Failure>)?;
            Ok(exit::SUCCESS)
        }
        _ => Err(Box::new(ExecError::Usage(USAGE.to_string()))),
    }
}

/// Why the executor refuses a script name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    /// The name is not in the executor's scripts.conf.
    NotAllowlisted,
    /// The path lies outside agent.conf's `script_dirs`.
    NotInScriptDirs,
    /// The script's profile has no `[profile NAME]` section.
    UndefinedProfile,
}

impl Deny {
    /// The word `resolve` prints.
    pub fn word(self) -> &'static str {
        match self {
            Deny::NotAllowlisted => "not-allowlisted",
            Deny::NotInScriptDirs => "not-in-script-dirs",
            Deny::UndefinedProfile => "undefined-profile",
        }
    }
}

/// A script as the executor would run it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The allowlist entry (path, profile name, timeout).
    pub entry: ScriptEntry,
    /// The profile applied.
    pub profile: conf::Profile,
}

/// Resolves `name` from the executor's own reading of its two files.
pub fn lookup(
    agent_conf: &AgentConf,
    scripts: &conf::Allowlist,
    name: &str,
) -> Result<Resolved, Deny> {
    let entry = scripts.scripts.get(name).ok_or(Deny::NotAllowlisted)?;
    if !agent_conf.script_dirs.is_empty()
        && !conf::within_script_dirs(&entry.path, &agent_conf.script_dirs)
    {
        return Err(Deny::NotInScriptDirs);
    }
    let profile = agent_conf
        .profiles
        .get(&entry.profile)
        .ok_or(Deny::UndefinedProfile)?;
    Ok(Resolved {
        entry: entry.clone(),
        profile: profile.clone(),
    })
}

/// The `resolve` line for `name`.
pub fn resolve(agent_path: &Path, scripts_path: &Path, name: &str) -> Result<String, ExecError> {
    let agent_conf = AgentConf::load(agent_path).map_err(|e| ExecError::Config(e.to_string()))?;
    // Paths are checked against script_dirs here, so the deny reason can be told apart.
    let scripts =
        conf::load_allowlist(scripts_path, &[]).map_err(|e| ExecError::Config(e.to_string()))?;
    Ok(match lookup(&agent_conf, &scripts, name) {
        Err(d) => format!("DENY {}", d.word()),
        Ok(r) => {
            let writable: Vec<String> = r
                .profile
                .writable
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(
                "OK path={} profile={} run_as={} nnp={} caps={} writable={}",
                r.entry.path.display(),
                r.entry.profile,
                r.profile.run_as.as_deref().unwrap_or("root"),
                u8::from(r.profile.no_new_privileges),
                r.profile.caps.join(","),
                writable.join(":"),
            )
        }
    })
}
