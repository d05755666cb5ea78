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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::agent::jobs;
use crate::agent::trust;
use crate::agent::AgentError;
use crate::conf::AgentConf;
use crate::net::limits::Limits;
use crate::net::server;
use crate::{log, rt, VERSION};

pub use handlers::is_executable;
pub use snapshot::read_material;

use snapshot::{load_snapshot, Snapshot};

/// The running agent.
pub struct Agent {
    /// agent.conf as loaded at start. Only the keys a reload cannot change
    /// (`snapshot::RESTART_KEYS`: port, bind, max_children, state paths)
    /// are read from here; the rest lives in the snapshot's settings.
    pub conf: AgentConf,
    conf_path: PathBuf,
    allowlist_path: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The certificate taken over by `/renew-complete`, which reloads keep.
    renewed: Mutex<Option<String>>,
    limiter: Mutex<crate::net::ratelimit::RateLimiter>,
    limits: Limits,
    /// Serials revoked through `/revoke-serial` since start: every reload
    /// keeps them revoked, even if they could not be written to the file.
    pushed_revocations: Mutex<BTreeSet<String>>,
    /// Trusted-map changes made through `/rotate-serial` since start
    /// (serial -> the id it was added for, or `None`: removed): every
    /// reload keeps them, even if they could not be written.
    pushed_trust: Mutex<BTreeMap<String, Option<String>>>,
    /// Detached jobs.
    pub jobs: jobs::Jobs,
    /// Room for connections that found every slot busy and get a 503
    /// "overloaded" answer instead of a silent close
    /// ([`crate::agent::limits::OVERLOAD_ANSWERS`]).
    overflow: Arc<smol::lock::Semaphore>,
}

/// Loads what [`serve`] loads at start, without listening: `Ok` with a
/// one-line summary exactly when `serve` would get as far as binding.
pub fn check(conf: &AgentConf, allowlist_path: &Path) -> Result<String, AgentError> {
    let snap = load_snapshot(conf, allowlist_path, None)?;
    Ok(format!(
        "{} scripts allowlisted, port {}",
        snap.allowlist.scripts.len(),
        conf.port
    ))
}

/// Runs the agent until SIGTERM/SIGINT; `conf` was loaded from `conf_path`,
/// which SIGHUP rereads with the allowlist.
pub fn serve(
    conf: AgentConf,
    conf_path: PathBuf,
    allowlist_path: PathBuf,
) -> Result<(), AgentError> {
    let snap = load_snapshot(&conf, &allowlist_path, None)?;
    for w in &snap.allowlist.warnings {
        log::warn("config-warn", &[("MSG", w)]);
    }
    crate::agent::cert::log_lifetime(snap.cert.as_ref());
    let limiter = snap.settings.limiter();
    let listener = server::bind(&conf.bind, conf.port).map_err(|e| {
        AgentError::Failed(format!("cannot listen on {}:{}: {e}", conf.bind, conf.port))
    })?;
    let addr = server::local_addr(&listener).map_err(|e| AgentError::Failed(e.to_string()))?;
    let jobs = jobs::Jobs::open(&conf.async_runs_dir).map_err(AgentError::Failed)?;
    let agent = Arc::new(Agent {
        conf_path,
        allowlist_path,
        snapshot: RwLock::new(Arc::new(snap)),
        renewed: Mutex::new(None),
        limiter: Mutex::new(limiter),
        limits: Limits::default(),
        pushed_revocations: Mutex::new(BTreeSet::new()),
        pushed_trust: Mutex::new(BTreeMap::new()),
        jobs,
        overflow: Arc::new(smol::lock::Semaphore::new(
            crate::agent::limits::OVERLOAD_ANSWERS,
        )),
        conf,
    });
    log::info(
        "start",
        &[("PORT", &addr.port().to_string()), ("VERSION", VERSION)],
    );
    let me = trust::RunsAs {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    };
    let exposed = trust::replaceable_by(&agent.conf, me);
    if !exposed.is_empty() {
        let paths: Vec<String> = exposed.iter().map(|p| p.display().to_string()).collect();
        log::warn(
            "trust-files-writable",
            &[
                ("PATHS", &paths.join(",")),
                (
                    "REASON",
                    "scripts run as this user could replace what the agent trusts; see cea self-check",
                ),
            ],
        );
    }
    crate::outln!("ctrl-exec-agent listening on {addr}")?;
    rt::block_on(listener::run(agent, listener))
}
