//! `cea serve`: the mTLS listener on the agent port.
//!
//! This file holds the entry ([`serve`]) and the running [`Agent`];
//! `listener` owns the accept loop and each connection, `snapshot` what a
//! request is judged against and its reload, `routes` the route table and
//! serial gate, `handlers` the handlers.

mod handlers;
mod listener;
mod routes;
mod snapshot;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::agent::jobs;
use crate::agent::AgentError;
use crate::conf::{self, AgentConf, Allowlist};
use crate::hook::Hook;
use crate::net::limits::Limits;
use crate::net::ratelimit::{RateLimiter, Rule, DEFAULT_CAPACITY};
use crate::net::server;
use crate::{log, rt, VERSION};

pub use handlers::is_executable;
pub use snapshot::read_material;

use snapshot::{load_snapshot, Snapshot};

/// The running agent.
pub struct Agent {
    /// agent.conf as loaded at start (not reloaded: port, tags, hook).
    pub conf: AgentConf,
    allowlist_path: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    limiter: Mutex<RateLimiter>,
    hook: Option<Hook>,
    limits: Limits,
    /// Detached jobs.
    pub jobs: jobs::Jobs,
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn serve(conf: AgentConf, allowlist_path: PathBuf) -> Result<(), AgentError> {
    if let Some(sock) = &conf.executor_socket {
        return Err(AgentError::Config(format!(
            "executor_socket = {} is set, but this agent has no privileged executor; remove the key to run scripts as the agent user",
            sock.display()
        )));
    }
    let snap = load_snapshot(&conf, &allowlist_path)?;
    check_profiles(&conf, &snap.allowlist)?;
    let hook = conf.auth_hook.as_ref().map(|p| Hook {
        path: p.clone(),
        timeout: conf.auth_hook_timeout,
    });
    if let Some(h) = &hook {
        if !is_executable(&h.path) {
            return Err(AgentError::Config(format!(
                "auth_hook '{}' is not an executable file",
                h.path.display()
            )));
        }
    }
    let rule = |r: &Option<conf::RateRule>| {
        r.as_ref().map(|r| Rule {
            limit: r.limit,
            window: r.window,
            block: r.block,
        })
    };
    let limiter = RateLimiter::new(
        rule(&conf.rate_limit_volume),
        rule(&conf.rate_limit_probe),
        DEFAULT_CAPACITY,
    );
    let listener = server::bind(&conf.bind, conf.port).map_err(|e| {
        AgentError::Failed(format!("cannot listen on {}:{}: {e}", conf.bind, conf.port))
    })?;
    let addr = server::local_addr(&listener).map_err(|e| AgentError::Failed(e.to_string()))?;
    let jobs = jobs::Jobs::open(&conf.async_runs_dir).map_err(AgentError::Failed)?;
    let agent = Arc::new(Agent {
        allowlist_path,
        snapshot: RwLock::new(Arc::new(snap)),
        limiter: Mutex::new(limiter),
        hook,
        limits: Limits::default(),
        jobs,
        conf,
    });
    log::info(
        "start",
        &[("PORT", &addr.port().to_string()), ("VERSION", VERSION)],
    );
    crate::outln!("ctrl-exec-agent listening on {addr}")?;
    rt::block_on(listener::run(agent, listener))
}

/// Refuses an allowlist naming a profile agent.conf does not define.
fn check_profiles(conf: &AgentConf, allowlist: &Allowlist) -> Result<(), AgentError> {
    let missing: Vec<String> = allowlist
        .scripts
        .values()
        .filter(|s| s.profile != "default" && !conf.profiles.contains_key(&s.profile))
        .map(|s| format!("{} -> {}", s.name, s.profile))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AgentError::Config(format!(
            "undefined profile(s) referenced: {}",
            missing.join(", ")
        )))
    }
}
