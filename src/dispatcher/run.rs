//! `run`, `status`, `wait` and `ping`: authorise, lock, resolve, fan out,
//! report. A run holds its `host:script` locks until every host answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conf::{self, DispatcherConf};
use crate::control::auth::{self, Caller};
use crate::control::engine::{Engine, MAX_HOSTS};
use crate::control::locks::Locks;
use crate::control::ops;
use crate::control::registry::{self, Registry, ResolveError, Target};
use crate::control::runstore::{self, RunStore};
use crate::dispatcher::{load_conf, output, Args, CliError};
use crate::hook::Verdict;
use crate::json::{self, Object, Value};
use crate::{log, pki, rt, time};

/// Seconds between `wait` polls.
const WAIT_POLL: Duration = Duration::from_secs(2);
/// Default `wait --timeout`.
const WAIT_DEFAULT_SECS: u64 = 300;

fn resolve(
    conf: &DispatcherConf,
    hosts: &[String],
    port: Option<u16>,
) -> Result<Vec<Target>, CliError> {
    if hosts.len() > MAX_HOSTS {
        return Err(CliError::Failed(format!(
            "too many hosts (max {MAX_HOSTS})"
        )));
    }
    registry::resolve(&Registry::new(&conf.registry_dir), hosts, port).map_err(|e| match e {
        ResolveError::Unknown(names) => CliError::Failed(format!(
            "Error: unknown agent{}: {}\nOnly registered agents can be addressed - run 'ctrl-exec-dispatcher list-agents' to see them.",
            if names.len() > 1 { "s" } else { "" },
            names.join(", ")
        )),
        ResolveError::Registry(e) => CliError::Failed(e.to_string()),
    })
}

fn engine(conf: &DispatcherConf) -> Result<Arc<Engine>, CliError> {
    Engine::new(conf).map_err(CliError::Failed)
}

/// Reports a hook denial the original's way; returns exit code 1.
fn denied(a: &Args, code: i32, reason: &str) -> u8 {
    if a.json {
        let mut o = Object::new();
        o.insert("error".into(), json::str(reason));
        o.insert("code".into(), json::int(code as i64));
        println!("{}", output::cli_err(o));
    } else {
        eprintln!("Denied: {reason}");
    }
    1
}

/// `ced run`.
pub fn run(a: &Args) -> Result<u8, CliError> {
    if a.words.len() < 2 {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher run <host>[:<port>] [<host>...] <script> [-- <arg>...]\nNeed at least one host and a script name".into(),
        ));
    }
    let script = a.words[a.words.len() - 1].clone();
    let hosts: Vec<String> = a.words[..a.words.len() - 1].to_vec();
    if !conf::valid_script_name(&script) {
        return Err(CliError::Usage(format!(
            "invalid script name '{script}' (letters, digits, '_' and '-' only)"
        )));
    }
    let conf = load_conf(a)?;
    rt::block_on(async {
        let mut req = auth::request("run", "127.0.0.1", &a.username, &a.token);
        req.script = script.clone();
        req.hosts = hosts.clone();
        req.args = a.script_args.clone();
        if let Verdict::Deny { code, reason } = auth::authorise(&conf, Caller::Cli, &req).await {
            return Ok(denied(a, code, &reason));
        }
        let targets = resolve(&conf, &hosts, a.port)?;
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let _held = match Locks::new(&conf.locks_dir()).acquire(&names, &script) {
            Ok(h) => h,
            Err(conflicts) => {
                log::warn("lock-conflict", &[("CONFLICTS", &conflicts.join(","))]);
                if a.json {
                    let mut o = Object::new();
                    o.insert("error".into(), json::str("locked"));
                    o.insert("code".into(), json::int(4));
                    o.insert("conflicts".into(), json::str_array(&conflicts));
                    println!("{}", output::cli_err(o));
                } else {
                    eprintln!("Locked: already running: {}", conflicts.join(", "));
                }
                return Ok(1);
            }
        };
        let eng = engine(&conf)?;
        let reqid = pki::random_hex(8);
        log::info(
            "dispatch",
            &[
                ("HOSTS", &names.join(",")),
                ("MODE", if a.detach { "async" } else { "sync" }),
                ("REQID", &reqid),
                ("SCRIPT", &script),
            ],
        );
        let results = ops::run(
            &eng,
            &targets,
            &script,
            &a.script_args,
            &reqid,
            &a.username,
            &a.token,
            a.detach,
        )
        .await;
        if a.detach {
            let rec = runstore::async_record(&reqid, &script, &results, None, time::now());
            if let Err(e) = RunStore::new(&conf.runs_dir()).save(&reqid, &rec) {
                log::warn(
                    "run-store-fail",
                    &[("ERROR", &e.to_string()), ("REQID", &reqid)],
                );
            }
            let any = results.iter().any(
                |r| matches!(r, Value::Object(o) if json::get_str(o, "status") == Some("accepted")),
            );
            if a.json {
                let mut o = Object::new();
                o.insert("reqid".into(), json::str(&reqid));
                o.insert(
                    "results".into(),
                    Value::Array(results.into_iter().collect()),
                );
                println!("{}", output::cli_ok(o));
            } else {
                print!("{}", output::submit_block(&reqid, &results));
            }
            return Ok(if any { 0 } else { 1 });
        }
        let all_ok = results
            .iter()
            .all(|r| matches!(r, Value::Object(o) if json::get_i64(o, "exit") == Some(0)));
        if a.json {
            println!("{}", output::cli_results(results));
        } else {
            for r in &results {
                if let Value::Object(o) = r {
                    print!("{}", output::run_block(o));
                }
            }
        }
        Ok(if all_ok { 0 } else { 1 })
    })
}

/// `ced ping`.
pub fn ping(a: &Args) -> Result<u8, CliError> {
    if a.words.is_empty() {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher ping <host>[:<port>] [<host>...]".into(),
        ));
    }
    let conf = load_conf(a)?;
    rt::block_on(async {
        let mut req = auth::request("ping", "127.0.0.1", &a.username, &a.token);
        req.hosts = a.words.clone();
        if let Verdict::Deny { code, reason } = auth::authorise(&conf, Caller::Cli, &req).await {
            return Ok(denied(a, code, &reason));
        }
        let targets = resolve(&conf, &a.words, a.port)?;
        let eng = engine(&conf)?;
        let results = ops::ping(&eng, &targets, &pki::random_hex(8)).await;
        if a.json {
            println!("{}", output::cli_results(results));
        } else {
            print!("{}", output::ping_table(&results));
        }
        Ok(0)
    })
}

/// `ced status` and `ced wait`.
pub fn status(a: &Args, wait: bool) -> Result<u8, CliError> {
    let Some(reqid) = a.words.first().filter(|_| a.words.len() == 1) else {
        return Err(CliError::Usage(format!(
            "Usage: ctrl-exec-dispatcher {} <reqid>",
            if wait { "wait" } else { "status" }
        )));
    };
    let timeout = match &a.timeout {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| CliError::Usage("--timeout must be a number of seconds".into()))?,
        None => WAIT_DEFAULT_SECS,
    };
    let conf = load_conf(a)?;
    let store = RunStore::new(&conf.runs_dir());
    store.purge();
    let not_found = || {
        if a.json {
            let mut o = Object::new();
            o.insert("error".into(), json::str("not found"));
            o.insert("reqid".into(), json::str(reqid));
            println!("{}", output::cli_err(o));
        } else {
            eprintln!("No such request: {reqid}");
        }
        1
    };
    let Some(mut rec) = store
        .load(reqid)
        .map_err(|e| CliError::Failed(format!("cannot read run record: {e}")))?
    else {
        return Ok(not_found());
    };
    let registry = Registry::new(&conf.registry_dir);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    if runstore::is_async(&rec) {
        let eng = engine(&conf)?;
        rt::block_on(async {
            loop {
                runstore::refresh(&eng, &registry, reqid, &mut rec).await;
                let _ = store.save(reqid, &rec);
                if !wait || json::truthy(&rec, "complete") || Instant::now() >= deadline {
                    break;
                }
                rt::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
            }
        });
    }
    rec.remove("submitter");
    let complete = json::truthy(&rec, "complete");
    if a.json {
        println!("{}", output::cli_ok(rec.clone()));
    } else {
        print!("{}", output::status_block(&rec));
    }
    if !wait {
        return Ok(0);
    }
    if !complete {
        return Ok(2);
    }
    Ok(if record_failed(&rec) { 1 } else { 0 })
}

/// Whether any host of a finished record failed.
fn record_failed(rec: &Object) -> bool {
    match rec.get("hosts") {
        Some(Value::Object(hosts)) => hosts.values().any(|h| match h {
            Value::Object(h) => {
                json::get_str(h, "status") != Some("done") || json::get_i64(h, "exit") != Some(0)
            }
            _ => true,
        }),
        _ => match rec.get("results") {
            Some(Value::Array(r)) => r
                .iter()
                .any(|r| !matches!(r, Value::Object(o) if json::get_i64(o, "exit") == Some(0))),
            _ => true,
        },
    }
}
