//! `run`, `status`, `wait` and `ping`: parse the words, call the one
//! dispatch path, render its results. [`report`] is the one place a
//! [`DispatchError`] becomes CLI output.

use std::time::{Duration, Instant};

use miniserde::json::Value;

use crate::control::auth::Caller;
use crate::rt::FileWork;
use std::io::IsTerminal;

use crate::control::dispatch::{Dispatch, DispatchError, Progress, RunOrder, RunOutcome};
use crate::dispatcher::{hosts, load_conf, output, Args, CliError};
use crate::proto::json::Builder;
use crate::proto::{HostRun, HostSubmit, RunRecord, ScriptName};
use crate::{exit, outln, rt};

/// Seconds between `wait` polls.
const WAIT_POLL: Duration = Duration::from_secs(2);
/// Default `wait --timeout`, in seconds.
const WAIT_DEFAULT_SECS: u64 = 300;
/// Largest `wait --timeout`, in seconds (a week): keeps the deadline
/// arithmetic far from overflow.
const WAIT_MAX_SECS: u64 = 604_800;

/// Fan-outs to more hosts than this show a done/failed/pending count on a
/// terminal's stderr while they run.
const LIVE_COUNT_FROM: usize = 5;

/// On a terminal: prints each host's block as it finishes and, for more
/// than [`LIVE_COUNT_FROM`] hosts, keeps a count on stderr, rewritten in
/// place. Output errors are left to the final write (a closed stdout ends
/// the command there).
fn live_output(total: usize) -> Progress {
    let counts = std::sync::Mutex::new((0usize, 0usize));
    let count = total > LIVE_COUNT_FROM && std::io::stderr().is_terminal();
    Progress(std::sync::Arc::new(move |r: &HostRun| {
        if count {
            eprint!("\r\x1b[K");
        }
        let _ = crate::out!("{}", output::run_block(r));
        if let Ok(mut c) = counts.lock() {
            c.0 += 1;
            if !r.succeeded() {
                c.1 += 1;
            }
            if count {
                eprint!(
                    "[{}/{total} done, {} failed, {} pending]",
                    c.0,
                    c.1,
                    total - c.0
                );
            }
        }
    }))
}

pub(super) fn dispatch(a: &Args) -> Result<Dispatch, CliError> {
    Dispatch::new(load_conf(a)?, FileWork::Inline).map_err(CliError::Engine)
}

/// The CLI's rendering of a dispatch error: in `--json` mode the error
/// object on stdout (then exit 1, nothing more on stderr); otherwise the
/// error itself, printed once by `main`.
pub(super) fn report(a: &Args, e: DispatchError) -> CliError {
    if !a.json {
        return CliError::Dispatch(e);
    }
    let body = match &e {
        DispatchError::Denied { code, reason } => Builder::new()
            .str("error", reason)
            .int("code", i64::from(*code)),
        DispatchError::Locked(conflicts) => Builder::new()
            .str("error", "locked")
            .int("code", 4)
            .strings("conflicts", conflicts),
        DispatchError::NotFound(reqid) => {
            Builder::new().str("error", "not found").str("reqid", reqid)
        }
        // Nothing was submitted: the error object says so on stdout.
        DispatchError::Record { .. } => Builder::new()
            .str("error", "cannot record run")
            .str("detail", e.to_string()),
        _ => return CliError::Dispatch(e),
    };
    match outln!("{}", output::cli_err(body.object())) {
        Ok(()) => CliError::Reported(exit::FAILURE),
        Err(io) => CliError::Output(io),
    }
}

/// `ced run`.
pub fn run(a: &Args) -> Result<u8, CliError> {
    const USAGE: &str = "Usage: ctrl-exec-dispatcher run <host>[:<port>] [<host>...] <script> [-- <arg>...]\n       (hosts may also come from --hosts-file FILE|- and --tags k=v[,k=v])";
    let Some((script, words)) = a.words.split_last() else {
        return Err(CliError::Usage(format!(
            "{USAGE}\nNeed at least one host and a script name"
        )));
    };
    if ScriptName::parse(script).is_none() {
        return Err(CliError::Usage(
            DispatchError::InvalidScript(script.clone()).to_string(),
        ));
    }
    let dispatch = dispatch(a)?;
    let hosts = hosts::select(a, &dispatch.conf, words)?;
    if hosts.is_empty() {
        return Err(CliError::Usage(format!(
            "{USAGE}\nNeed at least one host and a script name"
        )));
    }
    let live = !a.json && !a.detach && std::io::stdout().is_terminal();
    let progress = live.then(|| live_output(hosts.len()));
    let order = RunOrder {
        progress,
        hosts,
        script: script.clone(),
        args: a.script_args.clone(),
        detach: a.detach,
        port: a.port,
    };
    let caller = Caller::cli(&a.username, &a.token);
    match rt::block_on(dispatch.run(&caller, order)).map_err(|e| report(a, e))? {
        RunOutcome::Ran { results, .. } => {
            let all_ok = results.iter().all(HostRun::succeeded);
            if a.json {
                outln!(
                    "{}",
                    output::cli_results(results.iter().map(HostRun::to_json).collect())
                )?;
            } else if live {
                // Each block was printed as its host finished.
                if results.len() > LIVE_COUNT_FROM && std::io::stderr().is_terminal() {
                    eprint!("\r\x1b[K");
                }
            } else {
                for r in &results {
                    crate::out!("{}", output::run_block(r))?;
                }
            }
            Ok(if all_ok { exit::SUCCESS } else { exit::FAILURE })
        }
        RunOutcome::Submitted { reqid, results } => {
            let any = results
                .iter()
                .any(|r| r.status == crate::proto::Submitted::Accepted);
            if a.json {
                let body = Builder::new().str("reqid", reqid.as_str()).value(
                    "results",
                    Value::Array(results.iter().map(HostSubmit::to_json).collect()),
                );
                outln!("{}", output::cli_ok(body.object()))?;
            } else {
                crate::out!("{}", output::submit_block(reqid.as_str(), &results))?;
            }
            Ok(if any { exit::SUCCESS } else { exit::FAILURE })
        }
    }
}

/// `ced ping`: exit 0 even when hosts fail, as the original. Agents whose
/// certificate is past half of `cert_days` are renewed
/// ([`Dispatch::renew_due`]).
pub fn ping(a: &Args) -> Result<u8, CliError> {
    let dispatch = dispatch(a)?;
    let hosts = hosts::select(a, &dispatch.conf, &a.words)?;
    if hosts.is_empty() {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher ping <host>[:<port>] [<host>...]\n       (hosts may also come from --hosts-file FILE|- and --tags k=v[,k=v])".into(),
        ));
    }
    let caller = Caller::cli(&a.username, &a.token);
    let (results, renewals) = rt::block_on(async {
        let results = dispatch.ping(&caller, &hosts, a.port).await?;
        // The CLI runs where the CA key is: it renews what the pings show
        // due (the API never does).
        let renewals = dispatch.renew_due(&hosts, a.port, &results).await;
        Ok((results, renewals))
    })
    .map_err(|e| report(a, e))?;
    if a.json {
        outln!(
            "{}",
            output::cli_results(
                results
                    .iter()
                    .map(|r| output::ping_json(r, &renewals))
                    .collect()
            )
        )?;
    } else {
        crate::out!("{}", output::ping_table(&results))?;
        crate::out!("{}", output::renewal_lines(&renewals))?;
    }
    Ok(exit::SUCCESS)
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
            .ok()
            .filter(|s| *s <= WAIT_MAX_SECS)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--timeout must be a number of seconds up to {WAIT_MAX_SECS}"
                ))
            })?,
        None => WAIT_DEFAULT_SECS,
    };
    let dispatch = dispatch(a)?;
    let caller = Caller::cli(&a.username, &a.token);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let record = rt::block_on(async {
        loop {
            let rec = dispatch.status(&caller, reqid, true).await?;
            if !wait || rec.complete() || Instant::now() >= deadline {
                return Ok(rec);
            }
            rt::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    })
    .map_err(|e| report(a, e))?;
    if a.json {
        outln!("{}", output::cli_ok(record.to_json(false)))?;
    } else {
        crate::out!("{}", output::status_block(&record))?;
    }
    Ok(match (wait, record.complete(), &record) {
        (false, _, _) => exit::SUCCESS,
        (true, false, _) => exit::WAIT_TIMED_OUT,
        (true, true, r) if RunRecord::any_failed(r) => exit::FAILURE,
        _ => exit::SUCCESS,
    })
}
