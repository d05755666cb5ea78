//! A long-lived load client for one agent: how many sync `/run`s a second it
//! serves to concurrent mTLS clients.
//!
//! `ced` is a process per run (config, identity, registry, lock files, a
//! full TLS handshake), so loops of `ced run` measure mostly `ced` and
//! cannot show the agent's own throughput. This keeps one [`Engine`] (one
//! rustls client configuration, so TLS sessions resume in-process) and
//! calls the agent's `/run` directly, as the engine does for one host of a
//! fan-out; the dispatcher's auth hook, locks and run store are not used.
//!
//! ```text
//! agent_load <dispatcher.conf> <host> <clients> <total> <script> [<script>...]
//! ```
//!
//! `<clients>` tasks share `<total>` runs; client `i` runs
//! `scripts[i % scripts.len()]`. A run counts as done only with HTTP 200,
//! exit 0 and no error. Prints `runs=<n> failed=<k> seconds=<s>
//! runs_per_s=<r>` and exits 1 if any run failed (2 on bad usage).

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ctrl_exec::conf::DispatcherConf;
use ctrl_exec::control::engine::{Engine, Reply};
use ctrl_exec::control::registry::{self, Registry};
use ctrl_exec::log;
use ctrl_exec::proto::json::Fields;
use ctrl_exec::proto::{Output, ReqId, RunRequest};
use ctrl_exec::rt::{self, FileWork};

const USAGE: &str =
    "usage: agent_load <dispatcher.conf> <host> <clients> <total> <script> [<script>...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [conf, host, clients, total, scripts @ ..] if !scripts.is_empty() => clients
            .parse::<usize>()
            .ok()
            .filter(|c| *c > 0)
            .and_then(|c| {
                let t = total.parse::<usize>().ok()?;
                Some((conf, host, c, t, scripts.to_vec()))
            }),
        _ => None,
    };
    let Some((conf, host, clients, total, scripts)) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match load(Path::new(conf), host, clients, total, scripts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("agent_load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the load and prints the summary; `Ok(false)` if any run failed.
fn load(
    conf: &Path,
    host: &str,
    clients: usize,
    total: usize,
    scripts: Vec<String>,
) -> Result<bool, String> {
    let conf = DispatcherConf::load(conf).map_err(|e| e.to_string())?;
    log::init_with_level("agent_load", log::Target::Stderr, ::log::LevelFilter::Warn);
    // Long-lived, as the API: file work (identity and revocation checks, at
    // most once a second) on the blocking pool.
    let engine = Engine::new(&conf, FileWork::Offloaded).map_err(|e| e.to_string())?;
    let target = registry::resolve(
        &Registry::new(&conf.registry_dir),
        &[host.to_string()],
        None,
    )
    .map_err(|e| format!("cannot resolve {host}: {e:?}"))?
    .remove(0);

    let (claimed, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    rt::block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let (engine, target) = (engine.clone(), target.clone());
                let (claimed, failed) = (claimed.clone(), failed.clone());
                let script = scripts[i % scripts.len()].clone();
                rt::spawn(async move {
                    while claimed.fetch_add(1, Ordering::Relaxed) < total {
                        let body = RunRequest {
                            script: script.clone(),
                            reqid: ReqId::random().to_string(),
                            username: "agent_load".into(),
                            ..RunRequest::default()
                        }
                        .to_json();
                        let reply = engine.call(&target, "POST", "/run", Some(&body)).await;
                        if let Err(why) = reply.map_err(|e| e.to_string()).and_then(succeeded) {
                            // The first failure says why; the count says how many.
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("agent_load: {script}: {why}");
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "runs={total} failed={failed} seconds={seconds:.3} runs_per_s={:.0}",
        total as f64 / seconds
    );
    Ok(failed == 0)
}

/// A run that succeeded: HTTP 200, exit 0, no error.
fn succeeded(reply: Reply) -> Result<(), String> {
    let body = reply
        .body
        .map_err(|e| format!("HTTP {}: {e}", reply.status))?;
    let out = Output::read(Fields(&body)).map_err(|e| e.to_string())?;
    match (reply.status, out.exit, out.error) {
        (200, 0, None) => Ok(()),
        (status, exit, error) => Err(format!(
            "HTTP {status}, exit {exit}, error {}",
            error.unwrap_or_default()
        )),
    }
}
