//! Structural hardening: strict JSON field types on the API's and the
//! agent's request bodies, a closed stdout, out-of-range config numbers and a
//! hostile (deeply nested) agent reply.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::json::{self, Value};
use common::{eventually, get, jget, jint, jstr, jtext, post, Agent, Fixture, Out};

const ALLOW: &str = "api_auth_default = allow";

/// A dispatcher allowing every API call, one agent `web1` with `scripts`, and the API.
fn api_fixture(name: &str, scripts: &[(&str, &str)]) -> (Fixture, Agent, u16) {
    let f = Fixture::new(name);
    f.dispatcher(ALLOW);
    let a = f.agent("web1", scripts, "");
    let port = f.api();
    (f, a, port)
}

/// `base` (a JSON object) with `field` set to the JSON text `raw`.
fn with_field(base: &str, field: &str, raw: &str) -> String {
    let Some(Value::Object(mut o)) = json::parse(base.as_bytes()) else {
        panic!("base body is not an object: {base}");
    };
    let v = json::parse(raw.as_bytes()).unwrap_or_else(|| panic!("case value is not JSON: {raw}"));
    o.insert(field.to_string(), v);
    json::to_string(&Value::Object(o))
}

/// Whether the reply's `detail` or `error` mentions `field`.
fn names_field(v: &Value, field: &str) -> bool {
    ["detail", "error"]
        .iter()
        .any(|k| jstr(v, k).is_some_and(|s| s.contains(field)))
}

/// Fails unless the process ended without a panic message or an abort.
fn assert_no_panic_or_abort(out: &Out) {
    assert!(!out.stderr.contains("panicked"), "panic on stderr\n{out}");
    assert_ne!(out.status.signal(), Some(6), "aborted (SIGABRT)\n{out}");
    assert_ne!(out.code(), Some(134), "aborted (exit 134)\n{out}");
}

// ------------------------------------------------------------------------------------------
// 1. Strict field types on the API

const API_RUN: &str = r#"{"hosts":["web1"],"script":"hello"}"#;

#[test]
fn api_run_refuses_wrong_type_for_each_field_with_400_naming_it() {
    let (_f, a, port) = api_fixture("st_api_run_types", &[("hello", "echo hi")]);
    let cases: &[(&str, &str)] = &[
        ("hosts", r#""web1""#),
        ("hosts", r#"{"web1":1}"#),
        ("hosts", "[1]"),
        ("hosts", r#"[["web1"]]"#),
        ("hosts", "true"),
        ("hosts", "null"),
        ("script", "5"),
        ("script", r#"["hello"]"#),
        ("script", r#"{"name":"hello"}"#),
        ("script", "true"),
        ("args", r#""x""#),
        ("args", r#"{"a":"b"}"#),
        ("args", "1"),
        ("args", "[1]"),
        ("args", r#"["x",null]"#),
        ("args", "true"),
        ("username", "1"),
        ("username", r#"["alice"]"#),
        ("username", r#"{"u":"alice"}"#),
        ("username", "true"),
        ("token", "1"),
        ("token", r#"["tok"]"#),
        ("token", "{}"),
        ("token", "false"),
    ];
    let mut wrong = Vec::new();
    for (field, raw) in cases {
        let body = with_field(API_RUN, field, raw);
        let r = post(port, "/run", &body);
        let ok = r.status == 400 && json::parse(&r.body).is_some_and(|v| names_field(&v, field));
        if !ok {
            wrong.push(format!("{body} -> {r}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "want 400 naming the field for each case; these were not:\n{}",
        wrong.join("\n---\n")
    );
    assert_eq!(a.log_count("run"), 0, "nothing may run: {}", a.log_text());
}

#[test]
fn api_run_refuses_string_async_with_400_naming_field() {
    let (_f, a, port) = api_fixture("st_api_async_str", &[("hello", "echo hi")]);
    let mut wrong = Vec::new();
    for raw in [
        r#""false""#,
        r#""true""#,
        r#""yes""#,
        r#""1""#,
        r#""0""#,
        r#""""#,
    ] {
        let body = with_field(API_RUN, "async", raw);
        let r = post(port, "/run", &body);
        let ok = r.status == 400 && json::parse(&r.body).is_some_and(|v| names_field(&v, "async"));
        if !ok {
            wrong.push(format!("{body} -> {r}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "want 400 naming async for each case; these were not:\n{}",
        wrong.join("\n---\n")
    );
    assert_eq!(
        a.log_count("run-async"),
        0,
        "no async run may start: {}",
        a.log_text()
    );
    assert_eq!(a.log_count("run"), 0, "nothing may run: {}", a.log_text());
}

#[test]
fn api_run_refuses_object_array_and_other_numbers_for_async() {
    let (_f, a, port) = api_fixture("st_api_async_other", &[("hello", "echo hi")]);
    let mut wrong = Vec::new();
    for raw in ["{}", r#"{"on":true}"#, "[]", "[true]", "2", "-1", "0.5"] {
        let body = with_field(API_RUN, "async", raw);
        let r = post(port, "/run", &body);
        let ok = r.status == 400 && json::parse(&r.body).is_some_and(|v| names_field(&v, "async"));
        if !ok {
            wrong.push(format!("{body} -> {r}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "want 400 naming async for each case; these were not:\n{}",
        wrong.join("\n---\n")
    );
    assert_eq!(
        a.log_count("run-async"),
        0,
        "no async run may start: {}",
        a.log_text()
    );
}

#[test]
fn api_run_takes_async_one_as_async_and_zero_false_or_null_as_sync() {
    let (_f, a, port) = api_fixture(
        "st_api_async_ok",
        &[
            ("hello", "echo hi"),
            ("bg1", "echo one"),
            ("bg2", "echo two"),
        ],
    );
    for (script, raw) in [("bg1", "1"), ("bg2", "true")] {
        let body = with_field(
            &format!(r#"{{"hosts":["web1"],"script":"{script}"}}"#),
            "async",
            raw,
        );
        let r = post(port, "/run", &body);
        assert_eq!(r.status, 202, "{body}: {r}");
        assert_eq!(jstr(&r.json(), "results.0.status"), Some("accepted"), "{r}");
    }
    for raw in ["0", "false", "null"] {
        let body = with_field(API_RUN, "async", raw);
        let r = post(port, "/run", &body);
        assert_eq!(r.status, 200, "{body}: {r}");
        let v = r.json();
        assert_eq!(jint(&v, "results.0.exit"), Some(0), "{body}: {r}");
        assert_eq!(jstr(&v, "results.0.stdout"), Some("hi\n"), "{body}: {r}");
    }
    eventually(
        "the agent to log both async runs",
        Duration::from_secs(10),
        || match a.log_count("run-async") {
            2 => Ok(()),
            n => Err(format!("{n} run-async lines:\n{}", a.log_text())),
        },
    );
}

#[test]
fn api_ping_refuses_wrong_type_fields_with_400_naming_field() {
    let (_f, a, port) = api_fixture("st_api_ping_types", &[]);
    let base = r#"{"hosts":["web1"]}"#;
    let cases: &[(&str, &str)] = &[
        ("hosts", r#""web1""#),
        ("hosts", "[1]"),
        ("hosts", r#"{"web1":true}"#),
        ("username", "1"),
        ("username", r#"["alice"]"#),
        ("token", "{}"),
        ("token", "true"),
    ];
    let mut wrong = Vec::new();
    for (field, raw) in cases {
        let body = with_field(base, field, raw);
        let r = post(port, "/ping", &body);
        let ok = r.status == 400 && json::parse(&r.body).is_some_and(|v| names_field(&v, field));
        if !ok {
            wrong.push(format!("{body} -> {r}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "want 400 naming the field for each case; these were not:\n{}",
        wrong.join("\n---\n")
    );
    // A well-typed ping still works.
    let r = post(
        port,
        "/ping",
        r#"{"hosts":["web1"],"username":"alice","token":"t"}"#,
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(jstr(&r.json(), "results.0.status"), Some("ok"), "{r}");
    assert_eq!(a.log_count("ping"), 1, "{}", a.log_text());
}

// ------------------------------------------------------------------------------------------
// 2. Strict field types on the agent

const AGENT_RUN: &str = r#"{"script":"hello","args":[]}"#;

#[test]
fn agent_run_refuses_wrong_type_for_each_field_with_400_naming_it() {
    let f = Fixture::new("st_agent_types");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    let me = f.dispatcher_cert();
    let cases: &[(&str, &str)] = &[
        ("script", "5"),
        ("script", r#"["hello"]"#),
        ("script", "{}"),
        ("script", "true"),
        ("args", r#""x""#),
        ("args", "{}"),
        ("args", "1"),
        ("args", "[1]"),
        ("args", "true"),
        ("reqid", "5"),
        ("reqid", r#"["r"]"#),
        ("reqid", "{}"),
        ("reqid", "true"),
        ("username", "1"),
        ("username", "[]"),
        ("username", "{}"),
        ("username", "true"),
        ("token", "1"),
        ("token", "[]"),
        ("token", "{}"),
        ("token", "false"),
        ("async", r#""false""#),
        ("async", r#""yes""#),
        ("async", "{}"),
        ("async", "[]"),
        ("async", "2"),
    ];
    let mut wrong = Vec::new();
    for (i, (field, raw)) in cases.iter().enumerate() {
        // A fresh reqid per case, so an async case that slips through cannot
        // make the next one fail as "reqid already used".
        let base = with_field(AGENT_RUN, "reqid", &format!(r#""{:016x}""#, 0xa100 + i));
        let body = with_field(&base, field, raw);
        let r = f
            .agent_request(a.port, &me, "POST", "/run", Some(body.as_bytes()))
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let ok = r.status == 400
            && json::parse(&r.body).is_some_and(|v| {
                jstr(&v, "error").is_some_and(|e| e.contains(field)) && jint(&v, "exit") == Some(-1)
            });
        if !ok {
            wrong.push(format!("{body} -> {} {text}", r.status));
        }
    }
    assert!(
        wrong.is_empty(),
        "want 400 {{\"error\":<names field>,\"exit\":-1}} for each case; these were not:\n{}",
        wrong.join("\n")
    );
    assert_eq!(a.log_count("run"), 0, "nothing may run: {}", a.log_text());
    assert_eq!(a.log_count("run-async"), 0, "{}", a.log_text());
}

#[test]
fn agent_run_keeps_accepting_well_typed_requests() {
    let f = Fixture::new("st_agent_valid");
    f.dispatcher("");
    let a = f.agent(
        "web1",
        &[
            ("hello", r#"echo "hi $1""#),
            ("bg1", "echo one"),
            ("bg2", "echo two"),
        ],
        "",
    );
    let me = f.dispatcher_cert();
    let full = r#"{"script":"hello","args":["there"],"reqid":"00000000000000b1","username":"alice","token":"tok"}"#;
    let mut sync_bodies = vec![full.to_string()];
    for raw in ["false", "0", "null"] {
        sync_bodies.push(with_field(full, "async", raw));
    }
    sync_bodies.push(r#"{"script":"hello"}"#.to_string());
    for body in &sync_bodies {
        let r = f
            .agent_request(a.port, &me, "POST", "/run", Some(body.as_bytes()))
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 200, "{body}: {text}");
        let v = json::parse(&r.body).unwrap_or_else(|| panic!("{body}: not JSON: {text}"));
        assert_eq!(jint(&v, "exit"), Some(0), "{body}: {text}");
        assert!(
            jstr(&v, "stdout").is_some_and(|s| s.starts_with("hi")),
            "{body}: {text}"
        );
    }
    for (script, reqid, raw) in [
        ("bg1", "00000000000000c1", "true"),
        ("bg2", "00000000000000c2", "1"),
    ] {
        let body = format!(r#"{{"script":"{script}","reqid":"{reqid}","async":{raw}}}"#);
        let r = f
            .agent_request(a.port, &me, "POST", "/run", Some(body.as_bytes()))
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 202, "{body}: {text}");
        let v = json::parse(&r.body).unwrap_or_else(|| panic!("{body}: not JSON: {text}"));
        assert_eq!(jstr(&v, "status"), Some("accepted"), "{body}: {text}");
    }
}

// ------------------------------------------------------------------------------------------
// 3. Closed stdout

/// Enough hand-written registry records that `list-agents` output is several
/// times a pipe buffer (64 KiB; about 220 KiB of text), so the child cannot finish writing before the
/// closed read end makes its writes fail.
const MANY_AGENTS: usize = 2000;

fn fixture_with_many_agents(name: &str) -> Fixture {
    let f = Fixture::new(name);
    f.dispatcher("");
    for i in 0..MANY_AGENTS {
        f.write_registry_record(&format!("host-{i:04}"), 7443);
    }
    f
}

#[test]
fn ced_list_agents_into_a_closed_pipe_exits_without_panic() {
    let f = fixture_with_many_agents("st_epipe_list");
    // The records are readable: the normal listing has one line per agent.
    let full = f.ced_ok(&["list-agents"]);
    assert!(full.stdout.lines().count() > MANY_AGENTS, "{}", full.cmd);
    assert!(full.stdout.len() > 2 * 65536, "{}", full.cmd);

    let mut c = f.cmd("ced");
    c.arg("--config").arg(&f.conf).arg("list-agents");
    let out = f.run_with_stdout_closed(c);
    assert_no_panic_or_abort(&out);
}

#[test]
fn ced_list_agents_json_into_a_closed_pipe_exits_without_panic() {
    let f = fixture_with_many_agents("st_epipe_list_json");
    let mut c = f.cmd("ced");
    c.arg("--config")
        .arg(&f.conf)
        .args(["list-agents", "--json"]);
    let out = f.run_with_stdout_closed(c);
    assert_no_panic_or_abort(&out);
}

#[test]
fn ced_help_into_a_closed_pipe_exits_without_panic() {
    let f = Fixture::new("st_epipe_help");
    let mut c = f.cmd("ced");
    c.arg("--help");
    let out = f.run_with_stdout_closed(c);
    assert_no_panic_or_abort(&out);
}

// ------------------------------------------------------------------------------------------
// 4. Out-of-range config numbers

/// The 1-based number of the first line of `path` equal to `line`.
fn line_number(path: &std::path::Path, line: &str) -> usize {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .position(|l| l.trim() == line)
        .unwrap_or_else(|| panic!("{line:?} not in {}:\n{text}", path.display()))
        + 1
}

/// Fails unless `out` is a one-line config error naming `path:line`, with a
/// non-zero exit and no panic.
fn assert_config_error_at(out: &Out, path: &std::path::Path, line: usize) {
    assert_no_panic_or_abort(out);
    assert!(
        out.code().is_some_and(|c| c != 0),
        "want a non-zero exit\n{out}"
    );
    let want = format!("{}:{line}", path.display());
    // Structured log lines (`ACTION=…`) are not part of the error message.
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" ACTION="))
        .collect();
    assert_eq!(lines.len(), 1, "want one error line on stderr\n{out}");
    assert!(lines[0].contains(&want), "want {want:?} on stderr\n{out}");
}

fn dispatcher_conf_with(name: &str, line: &str) -> Fixture {
    let f = Fixture::new(name);
    f.dispatcher("");
    f.append_conf(line);
    f
}

#[test]
fn ced_refuses_cert_days_past_range_naming_file_and_line() {
    let line = "cert_days = 4000000";
    let f = dispatcher_conf_with("st_conf_cert_days", line);
    let out = f.ced(&["list-agents"]);
    assert_config_error_at(&out, &f.conf, line_number(&f.conf, line));
}

#[test]
fn ced_refuses_read_timeout_of_u64_max_naming_file_and_line() {
    let line = "read_timeout = 18446744073709551615";
    let f = dispatcher_conf_with("st_conf_read_timeout", line);
    let out = f.ced(&["list-agents"]);
    assert_config_error_at(&out, &f.conf, line_number(&f.conf, line));
}

#[test]
fn cea_serve_refuses_script_timeout_of_u64_max_naming_file_and_line_with_exit_78() {
    let line = "script_timeout = 18446744073709551615";
    let f = Fixture::new("st_conf_script_timeout");
    // Not paired on purpose: if the value were accepted, serve stops at the
    // missing certificate (a different message) instead of serving forever.
    let a = f.agent_files("web1", &[], line);
    let out = f.run_within(f.cea_for(&a, "serve"), Duration::from_secs(30));
    assert_config_error_at(&out, &a.conf, line_number(&a.conf, line));
    assert_eq!(out.code(), Some(78), "{out}");
}

// ------------------------------------------------------------------------------------------
// 5. A deeply nested agent reply

const DEPTH: usize = 100_000;

fn nested_array() -> Vec<u8> {
    let mut b = Vec::with_capacity(2 * DEPTH);
    b.resize(DEPTH, b'[');
    b.resize(2 * DEPTH, b']');
    b
}

/// Whether an error text says the reply was too deeply nested or invalid.
fn says_nested_or_invalid(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    ["nest", "deep", "invalid"].iter().any(|w| e.contains(w))
}

#[test]
fn ced_run_against_agent_replying_deeply_nested_json_reports_a_host_error() {
    let f = Fixture::new("st_deep_ced");
    f.dispatcher("");
    let fake = f.fake_agent("deep1", 200, nested_array());

    let out = f.ced(&["run", "deep1", "hello"]);
    assert_no_panic_or_abort(&out);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("ERROR:") && says_nested_or_invalid(l)),
        "want a per-host error about the reply\n{out}"
    );
    assert!(
        fake.hits().iter().any(|h| h == "POST /run"),
        "the fake agent was never asked: {:?}\n{out}",
        fake.hits()
    );

    let out = f.ced(&["run", "deep1", "hello", "--json"]);
    assert_no_panic_or_abort(&out);
    assert_eq!(out.code(), Some(1), "{out}");
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(-1), "{out}");
    assert!(
        jstr(&v, "results.0.error").is_some_and(says_nested_or_invalid),
        "{out}"
    );

    let out = f.ced(&["ping", "deep1", "--json"]);
    assert_no_panic_or_abort(&out);
    assert!(out.code().is_some(), "{out}");
    assert_eq!(
        jstr(&out.json(), "results.0.status"),
        Some("error"),
        "{out}"
    );
}

#[test]
fn api_run_against_agent_replying_deeply_nested_json_returns_host_error_and_keeps_serving() {
    let f = Fixture::new("st_deep_api");
    f.dispatcher(ALLOW);
    let fake = f.fake_agent("deep1", 200, nested_array());
    let port = f.api();

    let r = post(port, "/run", r#"{"hosts":["deep1"],"script":"hello"}"#);
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(jstr(&v, "results.0.host"), Some("deep1"), "{r}");
    assert!(
        jstr(&v, "results.0.error").is_some_and(says_nested_or_invalid),
        "{r}"
    );
    let reqid = jstr(&v, "reqid")
        .unwrap_or_else(|| panic!("no reqid: {r}"))
        .to_string();
    assert!(
        fake.hits().iter().any(|h| h == "POST /run"),
        "{:?}",
        fake.hits()
    );

    let h = get(port, "/health");
    assert_eq!(h.status, 200, "the API must survive the reply: {h}");

    let p = post(port, "/ping", r#"{"hosts":["deep1"]}"#);
    assert_eq!(p.status, 200, "{p}");
    assert_eq!(jstr(&p.json(), "results.0.status"), Some("error"), "{p}");
    assert_eq!(get(port, "/health").status, 200);

    let out = f.ced(&["status", &reqid, "--json"]);
    assert_no_panic_or_abort(&out);
    assert_eq!(out.code(), Some(0), "{out}");
    let s = out.json();
    assert_eq!(jstr(&s, "reqid"), Some(reqid.as_str()), "{out}");
    assert!(
        jget(&s, "results.0.error").is_some(),
        "the stored result keeps the host error: {}",
        jtext(&s)
    );
    let text = f.ced(&["status", &reqid]);
    assert_no_panic_or_abort(&text);
    assert_eq!(text.code(), Some(0), "{text}");
}

#[test]
fn each_mode_has_its_own_help_with_its_flags_and_exit_codes() {
    let f = Fixture::new("st_mode_help");
    for (role, mode, flag) in [
        ("ced", "run", "--hosts-file"),
        ("ced", "wait", "2 still pending"),
        ("ced", "approve", "--replace"),
        ("ced", "unpair", "--revoke"),
        ("cea", "request-pairing", "--key-type"),
        ("cea", "serve", "78"),
    ] {
        let mut c = f.cmd(role);
        c.args([mode, "--help"]);
        let out = f.run(c);
        assert!(out.status.success(), "{out}");
        assert!(
            out.stdout.contains(flag),
            "{role} {mode} --help lacks {flag}: {out}"
        );
        assert!(out.stdout.contains("Exit:"), "{out}");
        assert!(
            !out.stdout.contains("Modes:"),
            "the global text again: {out}"
        );
    }
    // After `--` the words are the script's: no help is printed.
    let mut c = f.cmd("ced");
    c.args(["--config", "/nonexistent", "run", "h", "s", "--", "--help"]);
    let out = f.run(c);
    assert!(!out.status.success(), "{out}");
}
