//! Text and JSON renderings of results, in the original's formats
//! (reference surface.md section 7). CLI JSON uses `"ok":1`/`"ok":0`.

use std::fmt::Write;

use miniserde::json::{Object, Value};

use crate::control::renew::Renewal;
use crate::proto::json::{self, Builder};
use crate::proto::{HostPing, HostRun, HostState, HostSubmit, Output, RunRecord, Submitted};

/// Writes stdout verbatim (newline added) and stderr indented, when they
/// contain anything but whitespace.
fn streams(out: &mut String, o: &Output) {
    if !o.stdout.trim().is_empty() {
        out.push_str(&o.stdout);
        if !o.stdout.ends_with('\n') {
            out.push('\n');
        }
    }
    if !o.stderr.trim().is_empty() {
        out.push_str("    STDERR: ");
        out.push_str(&o.stderr);
        if !o.stderr.ends_with('\n') {
            out.push('\n');
        }
    }
}

/// One sync run result (7.1).
pub fn run_block(r: &HostRun) -> String {
    let exit = r.output.exit;
    let verdict = if exit == 0 {
        "OK".to_string()
    } else {
        format!("FAIL  exit:{exit}")
    };
    let mut out = format!(
        "==> {}  [{verdict}  {}  req:{}]\n",
        r.label.display(),
        r.rtt.text(),
        r.reqid
    );
    if let Some(e) = &r.output.error {
        let _ = writeln!(out, "    ERROR: {e}");
    }
    if r.output.stdout_truncated || r.output.stderr_truncated {
        out.push_str("    NOTE: output was truncated at the agent's max_output_bytes\n");
    }
    streams(&mut out, &r.output);
    out
}

/// The async submission summary (7.2).
pub fn submit_block(reqid: &str, results: &[HostSubmit]) -> String {
    let mut out = format!("Submitted async run  req:{reqid}\n");
    for r in results {
        let _ = match r.status {
            Submitted::Accepted => writeln!(out, "==> {}  [accepted  {}]", r.host, r.rtt.text()),
            Submitted::Busy => writeln!(
                out,
                "==> {}  [BUSY: {}]",
                r.host,
                r.error.as_deref().unwrap_or("already running")
            ),
            Submitted::Error => writeln!(
                out,
                "==> {}  [ERROR: {}]",
                r.host,
                r.error.as_deref().unwrap_or("submit failed")
            ),
        };
    }
    let _ = writeln!(
        out,
        "Check progress with: ctrl-exec-dispatcher status {reqid}"
    );
    out
}

/// A run record for `status`/`wait` (7.3).
pub fn status_block(rec: &RunRecord) -> String {
    let (reqid, script) = match rec {
        RunRecord::Sync(r) => (&r.reqid, &r.script),
        RunRecord::Async(r) => (&r.reqid, &r.script),
    };
    let mut out = format!(
        "Request {reqid}  (script: {script})  [{}]\n",
        if rec.complete() {
            "COMPLETE"
        } else {
            "PENDING"
        }
    );
    match rec {
        RunRecord::Sync(r) => {
            for h in &r.results {
                out.push_str(&run_block(h));
            }
        }
        RunRecord::Async(r) => {
            for (name, h) in &r.hosts {
                match (h.state, &h.output) {
                    (HostState::Done, Some(o)) => {
                        let _ = writeln!(out, "==> {name}  [done  exit:{}]", o.exit);
                        streams(&mut out, o);
                    }
                    (state, _) if state.pending() => {
                        let _ = writeln!(out, "==> {name}  [{}]", state.as_str());
                        if let Some(e) = &h.fetch_error {
                            let _ = writeln!(out, "    (fetch pending: {e})");
                        }
                    }
                    (state, output) => {
                        let _ = writeln!(out, "==> {name}  [{}]", state.as_str().to_uppercase());
                        let error = output
                            .as_ref()
                            .and_then(|o| o.error.as_ref())
                            .or(h.error.as_ref());
                        if let Some(e) = error {
                            let _ = writeln!(out, "    {e}");
                        }
                    }
                }
            }
        }
    }
    out
}

/// The ping table (7.4).
pub fn ping_table(results: &[HostPing]) -> String {
    let mut out = format!(
        "{:<30}  {:<8}  {:<8}  {:<28}  {}\n",
        "HOST", "STATUS", "RTT", "CERT EXPIRY", "VERSION"
    );
    out.push_str(&"-".repeat(85));
    out.push('\n');
    for r in results {
        let (status, expiry, version) = match &r.reply {
            Ok(p) => ("ok", p.expiry.as_str(), p.version.as_str()),
            Err(_) => ("error", "?", "?"),
        };
        let _ = writeln!(
            out,
            "{:<30}  {:<8}  {:<8}  {:<28}  {}",
            r.label.display(),
            status,
            r.rtt.text(),
            expiry,
            version
        );
        if let Err(e) = &r.reply {
            let _ = writeln!(out, "    ERROR: {e}");
        }
    }
    out
}

/// The lines `ced ping` adds under its table for certificate renewals.
pub fn renewal_lines(renewals: &[Renewal]) -> String {
    let mut out = String::new();
    for r in renewals {
        let _ = match &r.outcome {
            Ok(expiry) => writeln!(out, "{}: certificate renewed, expires {expiry}", r.host),
            Err(e) => writeln!(out, "{}: certificate renewal failed: {e}", r.host),
        };
    }
    out
}

/// A ping result as JSON, with `renewed` (the new expiry) or
/// `renew_error` when a renewal was attempted for the host.
pub fn ping_json(result: &HostPing, renewals: &[Renewal]) -> Value {
    let mut v = result.to_json();
    if let (Value::Object(o), Some(r)) = (
        &mut v,
        renewals.iter().find(|r| r.host == result.label.host),
    ) {
        match &r.outcome {
            Ok(expiry) => o.insert("renewed".into(), json::string(expiry.as_str())),
            Err(e) => o.insert("renew_error".into(), json::string(e.as_str())),
        };
    }
    v
}

/// `{"ok":1, ...}` for CLI JSON.
pub fn cli_ok(mut fields: Object) -> String {
    fields.insert("ok".into(), json::int(1));
    json::to_string(&Value::Object(fields))
}

/// `{"ok":1,"results":[...]}` for CLI JSON.
pub fn cli_results(results: Vec<Value>) -> String {
    cli_ok(
        Builder::new()
            .value("results", Value::Array(results.into_iter().collect()))
            .object(),
    )
}

/// `{"ok":0, ...}` for CLI JSON.
pub fn cli_err(mut fields: Object) -> String {
    fields.insert("ok".into(), json::int(0));
    json::to_string(&Value::Object(fields))
}
