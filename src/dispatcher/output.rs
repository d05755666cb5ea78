//! Text and JSON renderings of results, in the original's formats
//! (reference surface.md section 7). CLI JSON uses `"ok":1`/`"ok":0`.

use crate::json::{self, Object, Value};

fn s<'a>(o: &'a Object, k: &str) -> &'a str {
    json::get_str(o, k).unwrap_or("")
}

fn display_host(o: &Object) -> String {
    match json::get_str(o, "reported_hostname") {
        Some(r) => format!("{} ({r})", s(o, "host")),
        None => s(o, "host").to_string(),
    }
}

/// Writes stdout verbatim (newline added) and stderr indented, when they
/// contain anything but whitespace.
fn streams(out: &mut String, o: &Object) {
    let stdout = s(o, "stdout");
    if !stdout.trim().is_empty() {
        out.push_str(stdout);
        if !stdout.ends_with('\n') {
            out.push('\n');
        }
    }
    let stderr = s(o, "stderr");
    if !stderr.trim().is_empty() {
        out.push_str("    STDERR: ");
        out.push_str(stderr);
        if !stderr.ends_with('\n') {
            out.push('\n');
        }
    }
}

/// One sync run result (7.1).
pub fn run_block(o: &Object) -> String {
    let exit = json::get_i64(o, "exit").unwrap_or(-1);
    let verdict = if exit == 0 {
        "OK".to_string()
    } else {
        format!("FAIL  exit:{exit}")
    };
    let mut out = format!(
        "==> {}  [{verdict}  {}  req:{}]\n",
        display_host(o),
        s(o, "rtt"),
        s(o, "reqid")
    );
    if let Some(e) = json::get_str(o, "error") {
        out.push_str(&format!("    ERROR: {e}\n"));
    }
    if json::truthy(o, "stdout_truncated") || json::truthy(o, "stderr_truncated") {
        out.push_str("    NOTE: output was truncated at the agent's max_output_bytes\n");
    }
    streams(&mut out, o);
    out
}

/// The async submission summary (7.2).
pub fn submit_block(reqid: &str, results: &[Value]) -> String {
    let mut out = format!("Submitted async run  req:{reqid}\n");
    for r in results {
        let Value::Object(o) = r else { continue };
        match s(o, "status") {
            "accepted" => out.push_str(&format!(
                "==> {}  [accepted  {}]\n",
                s(o, "host"),
                s(o, "rtt")
            )),
            "busy" => out.push_str(&format!(
                "==> {}  [BUSY: {}]\n",
                s(o, "host"),
                json::get_str(o, "error").unwrap_or("already running")
            )),
            _ => out.push_str(&format!(
                "==> {}  [ERROR: {}]\n",
                s(o, "host"),
                json::get_str(o, "error").unwrap_or("submit failed")
            )),
        }
    }
    out.push_str(&format!(
        "Check progress with: ctrl-exec-dispatcher status {reqid}\n"
    ));
    out
}

/// A run record for `status`/`wait` (7.3).
pub fn status_block(rec: &Object) -> String {
    let complete = json::truthy(rec, "complete");
    let mut out = format!(
        "Request {}  (script: {})  [{}]\n",
        s(rec, "reqid"),
        s(rec, "script"),
        if complete { "COMPLETE" } else { "PENDING" }
    );
    match rec.get("hosts") {
        Some(Value::Object(hosts)) => {
            for (name, h) in hosts {
                let Value::Object(h) = h else { continue };
                match s(h, "status") {
                    "done" => {
                        out.push_str(&format!(
                            "==> {name}  [done  exit:{}]\n",
                            json::get_i64(h, "exit").unwrap_or(-1)
                        ));
                        streams(&mut out, h);
                    }
                    st @ ("accepted" | "running") => {
                        out.push_str(&format!("==> {name}  [{st}]\n"));
                        if let Some(e) = json::get_str(h, "fetch_error") {
                            out.push_str(&format!("    (fetch pending: {e})\n"));
                        }
                    }
                    other => {
                        out.push_str(&format!("==> {name}  [{}]\n", other.to_uppercase()));
                        if let Some(e) = json::get_str(h, "error") {
                            out.push_str(&format!("    {e}\n"));
                        }
                    }
                }
            }
        }
        _ => {
            if let Some(Value::Array(results)) = rec.get("results") {
                for r in results {
                    if let Value::Object(o) = r {
                        out.push_str(&run_block(o));
                    }
                }
            }
        }
    }
    out
}

/// The ping table (7.4).
pub fn ping_table(results: &[Value]) -> String {
    let mut out = format!(
        "{:<30}  {:<8}  {:<8}  {:<28}  {}\n",
        "HOST", "STATUS", "RTT", "CERT EXPIRY", "VERSION"
    );
    out.push_str(&"-".repeat(85));
    out.push('\n');
    for r in results {
        let Value::Object(o) = r else { continue };
        let ok = s(o, "status") == "ok";
        let q = |k: &str| {
            if ok {
                json::get_str(o, k).unwrap_or("?").to_string()
            } else {
                "?".to_string()
            }
        };
        out.push_str(&format!(
            "{:<30}  {:<8}  {:<8}  {:<28}  {}\n",
            display_host(o),
            if ok { "ok" } else { "error" },
            s(o, "rtt"),
            q("expiry"),
            q("version")
        ));
        if !ok {
            if let Some(e) = json::get_str(o, "error") {
                out.push_str(&format!("    ERROR: {e}\n"));
            }
        }
    }
    out
}

/// `{"ok":1, ...}` for CLI JSON.
pub fn cli_ok(mut fields: Object) -> String {
    fields.insert("ok".into(), json::int(1));
    json::to_string(&Value::Object(fields))
}

/// `{"ok":1,"results":[...]}` for CLI JSON.
pub fn cli_results(results: Vec<Value>) -> String {
    let mut o = Object::new();
    o.insert(
        "results".into(),
        Value::Array(results.into_iter().collect()),
    );
    cli_ok(o)
}

/// `{"ok":0, ...}` for CLI JSON.
pub fn cli_err(mut fields: Object) -> String {
    fields.insert("ok".into(), json::int(0));
    json::to_string(&Value::Object(fields))
}
