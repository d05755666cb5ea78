//! `ced maintain` (the timer job, as root) and the certificate upkeep it
//! shares with a running `pairing-mode`.
//!
//! Phases, each independent of the others' failures (every failure is
//! printed, logged as `ACTION=maintain PHASE=<phase>` and makes the exit
//! code [`exit::MAINTENANCE_INCOMPLETE`]):
//!
//! 1. `ping`: every registered agent, no auth hook (agents pending in a
//!    rotation are brought up to date first); an agent that does not answer
//!    is a failure and is left out of the phases that would contact it.
//! 2. `renew`: agent certificates past half of `cert_days`
//!    (`control::renew`, as `ced ping` does).
//! 3. [`cert_upkeep`]: `cert-check`/`rotate` (the dispatcher certificate
//!    when at most `cert_renewal_days` are left), `broadcast` (the current
//!    serial to agents still `pending` or `unknown`), `expire` (pending
//!    agents become `stale` when the overlap ends: each is a failure, it
//!    must be paired again), `retire` (the previous serial, after the
//!    overlap).
//! 4. `purge`: run records older than 24 h.

use std::fmt::Write;

use miniserde::json::Value;

use crate::control::dispatch::Dispatch;
use crate::control::renew::Renewal;
use crate::control::rotation::{self, Retired, Rotated};
use crate::dispatcher::rotation::{dispatch_recovered, rotation_json, rotation_text};
use crate::dispatcher::{output, Args, CliError};
use crate::proto::json::Builder;
use crate::proto::HostRotate;
use crate::{exit, log, outln, rt, time};

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// One thing a maintenance run could not do.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The phase (`ping`, `renew`, `cert-check`, `rotate`, `broadcast`,
    /// `expire`, `retire`).
    pub phase: &'static str,
    /// The agent concerned, if one.
    pub host: Option<String>,
    /// What went wrong.
    pub error: String,
}

impl Failure {
    fn new(phase: &'static str, host: Option<&str>, error: impl Into<String>) -> Failure {
        let f = Failure {
            phase,
            host: host.map(str::to_string),
            error: error.into(),
        };
        log::warn(
            "maintain",
            &[
                ("ERROR", &f.error),
                ("HOST", f.host.as_deref().unwrap_or("")),
                ("PHASE", f.phase),
            ],
        );
        f
    }

    fn to_json(&self) -> Value {
        Builder::new()
            .str("phase", self.phase)
            .opt_str("host", self.host.as_deref())
            .str("error", &self.error)
            .build()
    }
}

/// What the certificate upkeep did.
#[derive(Debug, Default)]
pub struct CertUpkeep {
    /// Seconds left on the dispatcher certificate before any rotation.
    pub seconds_left: Option<i64>,
    /// The rotation, when one was due.
    pub rotated: Option<Rotated>,
    /// The announcement to agents still pending or unknown.
    pub broadcast: Vec<HostRotate>,
    /// Agents that became stale.
    pub stale: Vec<String>,
    /// The retirement of the previous serial, when the overlap ended.
    pub retired: Option<Retired>,
    /// What could not be done.
    pub failures: Vec<Failure>,
}

/// Per-agent failures of a `/rotate-serial` fan-out, as `phase`.
fn host_failures(phase: &'static str, results: &[HostRotate]) -> Vec<Failure> {
    results
        .iter()
        .filter_map(|r| {
            r.reply
                .as_ref()
                .err()
                .map(|e| Failure::new(phase, Some(&r.label.host), e.as_str()))
        })
        .collect()
}

/// Checks and rotates the dispatcher certificate, announces the current
/// serial to agents not known to have it (but those in `skip`, known down),
/// expires pending agents and retires the previous serial once the overlap
/// ends. `ced maintain` runs it; so does a running pairing mode, at start
/// and every `cert_check_interval`.
pub async fn cert_upkeep(dispatch: &Dispatch, token: &str, skip: &[String]) -> CertUpkeep {
    let conf = dispatch.conf.clone();
    let mut up = CertUpkeep::default();
    match rotation::cert_seconds_left(&conf, time::now()) {
        Ok(left) => {
            up.seconds_left = Some(left);
            log::info(
                "cert-check",
                &[
                    ("DAYS_LEFT", &left.div_euclid(DAY_SECS).to_string()),
                    ("THRESHOLD", &conf.cert_renewal_days.to_string()),
                ],
            );
            if rotation::rotation_due(&conf, left) {
                match dispatch.rotate(token).await {
                    Ok(r) => {
                        up.failures.extend(host_failures("rotate", &r.results));
                        up.rotated = Some(r);
                    }
                    Err(e) => {
                        log::error("cert-rotation-fail", &[("ERROR", &e)]);
                        up.failures.push(Failure::new("rotate", None, e));
                    }
                }
            }
        }
        Err(e) => up.failures.push(Failure::new("cert-check", None, e)),
    }
    // A rotation just announced to everyone: the agents it missed are down.
    if up.rotated.is_none() {
        match dispatch.broadcast_pending(token, skip).await {
            Ok(results) => {
                up.failures.extend(host_failures("broadcast", &results));
                up.broadcast = results;
            }
            Err(e) => up.failures.push(Failure::new("broadcast", None, e)),
        }
    }
    match dispatch.expire_stale().await {
        Ok(stale) => {
            for name in &stale {
                up.failures.push(Failure::new(
                    "expire",
                    Some(name),
                    "missed the rotation and the overlap ended: pair it again (or add the current serial to its trusted map by hand)",
                ));
            }
            up.stale = stale;
        }
        Err(e) => up.failures.push(Failure::new("expire", None, e)),
    }
    match dispatch.retire_previous(token).await {
        Ok(Some(r)) => {
            up.failures.extend(host_failures("retire", &r.results));
            up.retired = Some(r);
        }
        Ok(None) => {}
        Err(e) => up.failures.push(Failure::new("retire", None, e)),
    }
    if let (Some(left), None) = (up.seconds_left, &up.rotated) {
        if rotation::rotation_due(&conf, left) {
            log::warn(
                "cert-expiry",
                &[
                    ("DAYS_LEFT", &left.div_euclid(DAY_SECS).to_string()),
                    (
                        "REASON",
                        "the dispatcher certificate is due and was not rotated",
                    ),
                ],
            );
        }
    }
    up
}

/// The text of one maintenance run.
fn report_text(
    pinged: usize,
    total: usize,
    renewals: &[Renewal],
    up: &CertUpkeep,
    failures: &[Failure],
) -> String {
    let mut out =
        format!("Maintenance run: {pinged}/{total} agents pinged, dispatcher cert checked.\n");
    out.push_str(&output::renewal_lines(renewals));
    if let Some(left) = up.seconds_left {
        let _ = writeln!(
            out,
            "Dispatcher certificate: {} days left.",
            left.div_euclid(DAY_SECS)
        );
    }
    if let Some(r) = &up.rotated {
        let _ = writeln!(out, "Rotated the dispatcher certificate:");
        out.push_str(&rotation_text(r));
    }
    let confirmed = up.broadcast.iter().filter(|r| r.reply.is_ok()).count();
    if confirmed > 0 {
        let _ = writeln!(
            out,
            "Current serial announced to {confirmed} agent(s) that were pending."
        );
    }
    if let Some(r) = &up.retired {
        let removed = r.results.iter().filter(|h| h.reply.is_ok()).count();
        let _ = writeln!(
            out,
            "Retired the previous serial {} ({removed} agent(s) updated).",
            r.serial
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "Problems ({}):", failures.len());
        for f in failures {
            let _ = match &f.host {
                Some(h) => writeln!(out, "  [{}] {h}: {}", f.phase, f.error),
                None => writeln!(out, "  [{}] {}", f.phase, f.error),
            };
        }
    }
    out
}

/// `ced maintain [--json]`.
pub fn maintain(a: &Args) -> Result<u8, CliError> {
    if !a.words.is_empty() {
        return Err(CliError::Usage(
            "Usage: ctrl-exec-dispatcher maintain [--json]".into(),
        ));
    }
    let dispatch = dispatch_recovered(a)?;
    let (total, pinged, renewals, up, failures) = rt::block_on(async {
        let mut failures = Vec::new();
        let (names, pings) = match dispatch.ping_every(&a.token).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(Failure::new("ping", None, e.to_string()));
                (Vec::new(), Vec::new())
            }
        };
        let mut down = Vec::new();
        for p in &pings {
            if let Err(e) = &p.reply {
                failures.push(Failure::new("ping", Some(&p.label.host), e.as_str()));
                down.push(p.label.host.clone());
            }
        }
        let renewals = dispatch.renew_due(&names, None, &pings).await;
        for r in &renewals {
            if let Err(e) = &r.outcome {
                failures.push(Failure::new("renew", Some(&r.host), e.as_str()));
            }
        }
        let mut up = cert_upkeep(&dispatch, &a.token, &down).await;
        failures.append(&mut up.failures);
        dispatch.purge_runs().await;
        let pinged = pings.iter().filter(|p| p.reply.is_ok()).count();
        (names.len(), pinged, renewals, up, failures)
    });
    log::info(
        "maintain",
        &[
            ("AGENTS", &total.to_string()),
            ("FAILURES", &failures.len().to_string()),
            ("PINGED", &pinged.to_string()),
        ],
    );
    if a.json {
        let renewed: Vec<Value> = renewals
            .iter()
            .map(|r| {
                let b = Builder::new().str("host", &r.host);
                match &r.outcome {
                    Ok(expiry) => b.str("expiry", expiry),
                    Err(e) => b.str("error", e),
                }
                .build()
            })
            .collect();
        let body = Builder::new()
            .int("agents", total as i64)
            .int("pinged", pinged as i64)
            .value("renewals", Value::Array(renewed.into_iter().collect()))
            .opt_int(
                "cert_days_left",
                up.seconds_left.map(|s| s.div_euclid(DAY_SECS)),
            )
            .value(
                "rotation",
                up.rotated
                    .as_ref()
                    .map_or(Value::Null, |r| rotation_json(r).build()),
            )
            .value(
                "broadcast",
                Value::Array(up.broadcast.iter().map(HostRotate::to_json).collect()),
            )
            .strings("stale", &up.stale)
            .value(
                "retired",
                up.retired.as_ref().map_or(Value::Null, |r| {
                    Builder::new()
                        .str("serial", &r.serial)
                        .value(
                            "results",
                            Value::Array(r.results.iter().map(HostRotate::to_json).collect()),
                        )
                        .build()
                }),
            )
            .value(
                "failures",
                Value::Array(failures.iter().map(Failure::to_json).collect()),
            )
            .object();
        outln!(
            "{}",
            if failures.is_empty() {
                output::cli_ok(body)
            } else {
                output::cli_err(body)
            }
        )?;
    } else {
        crate::out!("{}", report_text(pinged, total, &renewals, &up, &failures))?;
    }
    Ok(if failures.is_empty() {
        exit::SUCCESS
    } else {
        exit::MAINTENANCE_INCOMPLETE
    })
}
