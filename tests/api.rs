//! `ctrl-exec-api` over plain HTTP: health, auth, runs, status, locks,
//! routing, request limits, concurrency and the OpenAPI documents.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::json::Value;
use common::{
    eventually, get, http, http_raw, http_unprompted, jarr, jbool, jget, jint, jstr, jtext, post,
    try_http_raw, Fixture,
};

/// A dispatcher with `extra` config, one agent `web1` with `scripts`, and the API.
fn api_fixture(name: &str, extra: &str, scripts: &[(&str, &str)]) -> (Fixture, u16) {
    let f = Fixture::new(name);
    f.dispatcher(extra);
    f.agent("web1", scripts, "");
    let port = f.api();
    (f, port)
}

const ALLOW: &str = "api_auth_default = allow";

#[test]
fn health_answers_without_auth() {
    let (_f, port) = api_fixture("api_health", "", &[]);
    let r = get(port, "/health");
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(jbool(&v, "ok"), Some(true), "{r}");
    assert_eq!(jstr(&v, "version"), Some(ctrl_exec::VERSION), "{r}");
    assert!(r.head.contains("Content-Type: application/json"), "{r}");

    let q = get(port, "/health?x=1&y");
    assert_eq!(
        q.status, 200,
        "a query string does not change the route: {q}"
    );
}

#[test]
fn without_hook_the_default_denies_every_route_but_health() {
    let (_f, port) = api_fixture("api_default_deny", "", &[("hello", "echo hi")]);
    let r = post(port, "/run", r#"{"hosts":["web1"],"script":"hello"}"#);
    assert_eq!(r.status, 403, "{r}");
    let v = r.json();
    assert_eq!(jstr(&v, "error"), Some("no auth hook configured"), "{r}");
    assert_eq!(jint(&v, "code"), Some(1), "{r}");
    assert_eq!(jbool(&v, "ok"), Some(false), "{r}");
    assert_eq!(get(port, "/discovery").status, 403);
}

#[test]
fn sync_run_returns_results_and_reqid() {
    let (f, port) = api_fixture("api_sync", ALLOW, &[("hello", r#"echo "hi $1""#)]);
    let r = post(
        port,
        "/run",
        r#"{"hosts":["web1"],"script":"hello","args":["there"]}"#,
    );
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(jbool(&v, "ok"), Some(true), "{r}");
    let reqid = jstr(&v, "reqid").unwrap_or_else(|| panic!("no reqid: {r}"));
    assert_eq!(reqid.len(), 16, "{r}");
    assert_eq!(jstr(&v, "results.0.host"), Some("web1"), "{r}");
    assert_eq!(jstr(&v, "results.0.stdout"), Some("hi there\n"), "{r}");
    assert_eq!(jint(&v, "results.0.exit"), Some(0), "{r}");
    // The sync run is recorded and readable through /status.
    let s = get(port, &format!("/status/{reqid}"));
    assert_eq!(s.status, 200, "{s}");
    assert!(s.text().contains("hi there"), "{s}");
    assert!(f
        .path(&format!("dispatcher/state/runs/{reqid}.json"))
        .exists());
}

#[test]
fn malformed_run_requests_get_400_with_a_reason() {
    let (_f, port) = api_fixture("api_400", ALLOW, &[("hello", "echo hi")]);
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("no body", None, "request body required"),
        ("invalid JSON", Some("{nope"), "invalid JSON body"),
        ("not an object", Some("[1,2]"), "invalid JSON body"),
        (
            "hosts missing",
            Some(r#"{"script":"hello"}"#),
            "hosts must be a non-empty array",
        ),
        (
            "hosts a string",
            Some(r#"{"hosts":"web1","script":"hello"}"#),
            "hosts must be a non-empty array",
        ),
        (
            "hosts empty",
            Some(r#"{"hosts":[],"script":"hello"}"#),
            "hosts must be a non-empty array",
        ),
        (
            "hosts not strings",
            Some(r#"{"hosts":[1],"script":"hello"}"#),
            "hosts must be a non-empty array",
        ),
        (
            "script traversal",
            Some(r#"{"hosts":["web1"],"script":"../x"}"#),
            "script name required",
        ),
        (
            "script missing",
            Some(r#"{"hosts":["web1"]}"#),
            "script name required",
        ),
        (
            "script with slash",
            Some(r#"{"hosts":["web1"],"script":"a/b"}"#),
            "script name required",
        ),
        (
            "args a string",
            Some(r#"{"hosts":["web1"],"script":"hello","args":"x"}"#),
            "args must be an array",
        ),
        (
            "args not strings",
            Some(r#"{"hosts":["web1"],"script":"hello","args":[1]}"#),
            "args must be an array of strings",
        ),
    ];
    for (what, body, detail) in cases {
        let r = http(port, "POST", "/run", &[], *body);
        assert_eq!(r.status, 400, "{what}: {r}");
        let v = r.json();
        assert_eq!(jstr(&v, "error"), Some("bad request"), "{what}: {r}");
        assert!(
            jstr(&v, "detail").is_some_and(|d| d.starts_with(detail)),
            "{what}: want detail starting {detail:?}: {r}"
        );
    }
}

#[test]
fn unknown_host_gets_404_unknown_agent() {
    let (_f, port) = api_fixture("api_unknown_host", ALLOW, &[("hello", "echo hi")]);
    let r = post(
        port,
        "/run",
        r#"{"hosts":["web1","nosuch"],"script":"hello"}"#,
    );
    assert_eq!(r.status, 404, "{r}");
    let v = r.json();
    assert_eq!(jstr(&v, "error"), Some("unknown agent"), "{r}");
    assert!(
        jstr(&v, "detail").is_some_and(|d| d.contains("nosuch")),
        "{r}"
    );
}

#[test]
fn async_run_is_accepted_then_completes_in_status() {
    let (_f, port) = api_fixture(
        "api_async",
        ALLOW,
        &[("work", "echo working; echo on stderr >&2; exit 0")],
    );
    let r = post(
        port,
        "/run",
        r#"{"hosts":["web1"],"script":"work","async":true}"#,
    );
    assert_eq!(r.status, 202, "{r}");
    let v = r.json();
    assert_eq!(jbool(&v, "async"), Some(true), "{r}");
    let reqid = jstr(&v, "reqid").unwrap().to_string();
    let rec = eventually("the async run to complete", Duration::from_secs(20), || {
        let s = get(port, &format!("/status/{reqid}"));
        if s.status != 200 {
            return Err(s.to_string());
        }
        let v = s.json();
        match jbool(&v, "complete") {
            Some(true) => Ok(v),
            _ => Err(s.to_string()),
        }
    });
    assert_eq!(
        jstr(&rec, "hosts.web1.status"),
        Some("done"),
        "{}",
        jtext(&rec)
    );
    assert_eq!(jint(&rec, "hosts.web1.exit"), Some(0), "{}", jtext(&rec));
    assert_eq!(
        jstr(&rec, "hosts.web1.stdout"),
        Some("working\n"),
        "{}",
        jtext(&rec)
    );
    assert_eq!(jstr(&rec, "script"), Some("work"));
}

#[test]
fn second_run_of_a_locked_script_gets_409() {
    let f = Fixture::new("api_lock");
    f.dispatcher(ALLOW);
    let marker = f.path("slow-started");
    f.agent(
        "web1",
        &[
            (
                "slow",
                &format!("touch '{}'; sleep 2; echo slow done", marker.display()),
            ),
            ("other", "echo other"),
        ],
        "",
    );
    let port = f.api();
    std::thread::scope(|s| {
        let first = s.spawn(|| post(port, "/run", r#"{"hosts":["web1"],"script":"slow"}"#));
        eventually("the first run to start", Duration::from_secs(10), || {
            marker
                .exists()
                .then_some(())
                .ok_or_else(|| "not started".to_string())
        });
        let r = post(port, "/run", r#"{"hosts":["web1"],"script":"slow"}"#);
        assert_eq!(r.status, 409, "{r}");
        let v = r.json();
        assert_eq!(jstr(&v, "error"), Some("locked"), "{r}");
        assert_eq!(jint(&v, "code"), Some(4), "{r}");
        assert_eq!(jstr(&v, "conflicts.0"), Some("web1:slow"), "{r}");
        let held = f.ced_ok(&["list-locks", "--json"]).json();
        assert_eq!(
            jstr(&held, "locks.0.host"),
            Some("web1"),
            "{}",
            jtext(&held)
        );
        assert_eq!(
            jstr(&held, "locks.0.script"),
            Some("slow"),
            "{}",
            jtext(&held)
        );
        // A different script on the same host is not blocked.
        let other = post(port, "/run", r#"{"hosts":["web1"],"script":"other"}"#);
        assert_eq!(other.status, 200, "{other}");

        let first = first.join().unwrap();
        assert_eq!(first.status, 200, "{first}");
        assert_eq!(jstr(&first.json(), "results.0.stdout"), Some("slow done\n"));
    });
    // Released once the first run answered.
    let after = f.ced_ok(&["list-locks"]);
    assert!(after.stdout.contains("No locks currently held"), "{after}");
}

#[test]
fn status_refuses_reqids_that_are_not_plain_hex() {
    let (f, port) = api_fixture("api_status_ids", ALLOW, &[]);
    let long = "a".repeat(10_000);
    let ids = [
        "../x",
        "..%2f..%2fetc%2fpasswd",
        "..",
        "ABCDEF0123456789",
        long.as_str(),
        "0123456789abcdef",
        "",
    ];
    for id in ids {
        let r = get(port, &format!("/status/{id}"));
        assert_eq!(r.status, 404, "{id:.40}: {r}");
        let v = r.json();
        assert_eq!(jbool(&v, "ok"), Some(false), "{r}");
        assert_eq!(jstr(&v, "error"), Some("not found"), "{r}");
        let detail = jstr(&v, "detail").unwrap_or_default();
        assert!(detail.starts_with("no result for reqid"), "{r}");
        assert!(
            detail.len() < 100,
            "the detail never echoes a long id: {detail:.80}"
        );
    }
    assert!(!f.path("dispatcher/state/x").exists());
    assert!(!f.path("dispatcher/x.json").exists());
}

#[test]
fn unknown_route_gets_404_naming_it() {
    let (_f, port) = api_fixture("api_route", ALLOW, &[]);
    let r = get(port, "/nope");
    assert_eq!(r.status, 404, "{r}");
    assert_eq!(
        jstr(&r.json(), "detail"),
        Some("no route for GET /nope"),
        "{r}"
    );
    let r = get(port, "/nope?a=b");
    assert_eq!(
        jstr(&r.json(), "detail"),
        Some("no route for GET /nope"),
        "{r}"
    );
    let r = http(port, "DELETE", "/nope", &[], None);
    assert_eq!(r.status, 404, "{r}");
}

/// `GET /health` with `n` header lines in all (the Host line included).
fn health_with_headers(n: usize) -> Vec<u8> {
    let mut req = String::from("GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for i in 1..n {
        req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[test]
fn api_header_count_limit_at_the_edge() {
    let (_f, port) = api_fixture("api_headers", "", &[]);
    let at = http_raw(port, &health_with_headers(32));
    assert_eq!(at.status, 200, "32 header lines are allowed: {at}");
    let over = http_raw(port, &health_with_headers(33));
    assert_eq!(over.status, 431, "{over}");
    assert_eq!(
        jstr(&over.json(), "error"),
        Some("request header fields too large")
    );
}

#[test]
fn api_body_size_limit_at_the_edge() {
    let (_f, port) = api_fixture("api_body", ALLOW, &[]);
    let over = http_raw(
        port,
        b"POST /run HTTP/1.0\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n",
    );
    assert_eq!(over.status, 413, "{over}");
    assert_eq!(
        jstr(&over.json(), "error"),
        Some("payload too large"),
        "{over}"
    );

    // Exactly at the limit the body is read and judged on its content.
    let mut body = br#"{"hosts":["web1"],"script":"nosuch","pad":""#.to_vec();
    body.resize(1_048_576 - 2, b'x');
    body.extend_from_slice(b"\"}");
    let mut req = format!(
        "POST /run HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let at = http_raw(port, &req);
    assert_ne!(at.status, 413, "{at}");
    assert_ne!(at.status, 400, "a 1 MiB valid JSON body is accepted: {at}");
}

#[test]
fn requests_beyond_api_max_children_get_503() {
    let f = Fixture::new("api_503");
    f.dispatcher(&format!("api_max_children = 1\n{ALLOW}"));
    let marker = f.path("running");
    let slow = format!("touch {}; sleep 4; echo done", marker.display());
    f.agent("web1", &[("slow", slow.as_str())], "");
    let port = f.api();
    // A whole request holds the only slot while its run goes on.
    let hog =
        std::thread::spawn(move || post(port, "/run", r#"{"hosts":["web1"],"script":"slow"}"#));
    eventually("the slow run to start", Duration::from_secs(20), || {
        if marker.exists() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    // The overflow answer comes before any request is read: send nothing, so
    // no unread bytes turn the server's close into a reset.
    let r = http_unprompted(port);
    assert_eq!(r.status, 503, "{r}");
    assert_eq!(jstr(&r.json(), "error"), Some("service unavailable"), "{r}");
    let done = hog.join().unwrap();
    assert_eq!(done.status, 200, "{done}");
    eventually(
        "the slot to be released",
        Duration::from_secs(10),
        || match try_http_raw(port, b"GET /health HTTP/1.0\r\n\r\n") {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(e),
        },
    );
}

#[test]
fn a_half_sent_request_gives_its_slot_to_a_whole_one() {
    let (_f, port) = api_fixture("api_shed", "api_max_children = 1", &[]);
    let mut hog = TcpStream::connect(("127.0.0.1", port)).unwrap();
    hog.write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n")
        .unwrap();
    let r = get(port, "/health");
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn openapi_document_covers_every_listed_endpoint() {
    let (_f, port) = api_fixture("api_openapi", ALLOW, &[]);
    let index = get(port, "/");
    assert_eq!(index.status, 200, "{index}");
    let index = index.json();
    let spec = get(port, "/openapi.json");
    assert_eq!(spec.status, 200, "{spec}");
    let spec = spec.json();
    assert!(
        jstr(&spec, "openapi").is_some_and(|v| v.starts_with("3.1.")),
        "openapi version: {:?}",
        jget(&spec, "openapi")
    );
    let Some(Value::Object(paths)) = jget(&spec, "paths") else {
        panic!("no paths object");
    };
    let endpoints = jarr(&index, "endpoints").expect("endpoints");
    assert!(endpoints.len() >= 8, "{}", jtext(&index));
    for e in endpoints {
        let method = jstr(e, "method").unwrap().to_ascii_lowercase();
        let path = jstr(e, "path").unwrap();
        let op = paths.get(path).and_then(|p| jget(p, &method));
        assert!(op.is_some(), "openapi.json lacks {method} {path}");
    }
}

#[test]
fn live_openapi_lists_paired_hosts_and_their_scripts() {
    let f = Fixture::new("api_openapi_live");
    f.dispatcher(ALLOW);
    f.agent("web1", &[("hello", "echo hi"), ("deploy", "echo d")], "");
    f.agent("db1", &[("backup", "echo b")], "");
    let port = f.api();
    let r = get(port, "/openapi-live.json");
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    let strings = |path: &str| -> Vec<String> {
        let mut out: Vec<String> = jarr(&v, path)
            .unwrap_or_else(|| panic!("no array at {path}: {}", jtext(&v)))
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        strings("components.schemas.RunRequest.properties.hosts.items.enum"),
        ["db1", "web1"]
    );
    assert_eq!(
        strings("components.schemas.RunRequest.properties.script.enum"),
        ["backup", "deploy", "hello"]
    );
}

#[test]
fn bearer_token_hook_gates_discovery() {
    let f = Fixture::new("api_bearer");
    f.dispatcher("");
    f.agent("web1", &[("hello", "echo hi")], "");
    let hook = f.script("auth-hook", r#"[ "$ENVEXEC_TOKEN" = secret ] || exit 2"#);
    f.append_conf(&format!("auth_hook = {}", hook.display()));
    let port = f.api();

    let ok = http(
        port,
        "GET",
        "/discovery",
        &[("Authorization", "Bearer secret")],
        None,
    );
    assert_eq!(ok.status, 200, "{ok}");
    let v = ok.json();
    assert_eq!(jstr(&v, "hosts.web1.status"), Some("ok"), "{ok}");
    assert_eq!(jstr(&v, "hosts.web1.scripts.0.name"), Some("hello"), "{ok}");

    for headers in [&[][..], &[("Authorization", "Bearer wrong")][..]] {
        let no = http(port, "GET", "/discovery", headers, None);
        assert_eq!(no.status, 403, "{no}");
        let v = no.json();
        assert_eq!(jstr(&v, "error"), Some("bad credentials"), "{no}");
        assert_eq!(jint(&v, "code"), Some(2), "{no}");
    }
}

#[test]
fn status_denied_by_hook_looks_like_an_unknown_reqid() {
    let f = Fixture::new("api_status_hidden");
    f.dispatcher("");
    f.agent("web1", &[("hello", "echo hi")], "");
    let hook = f.script(
        "auth-hook",
        r#"[ "$ENVEXEC_ACTION" = status ] && exit 1; exit 0"#,
    );
    f.append_conf(&format!("auth_hook = {}", hook.display()));
    let port = f.api();

    let run = post(port, "/run", r#"{"hosts":["web1"],"script":"hello"}"#);
    assert_eq!(run.status, 200, "{run}");
    let reqid = jstr(&run.json(), "reqid").unwrap().to_string();
    assert!(f
        .path(&format!("dispatcher/state/runs/{reqid}.json"))
        .exists());

    let denied = get(port, &format!("/status/{reqid}"));
    // An unknown reqid of the same shape.
    let unknown_id: String = reqid
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let unknown = get(port, &format!("/status/{unknown_id}"));
    assert_eq!(denied.status, 404, "{denied}");
    assert_eq!(unknown.status, 404, "{unknown}");
    assert_eq!(
        denied.text().replace(&reqid, "ID"),
        unknown.text().replace(&unknown_id, "ID"),
        "a refused /status must be indistinguishable from an unknown reqid"
    );
    assert!(!denied.text().contains("hi\\n"), "{denied}");
}

#[test]
fn undeclared_methods_get_405_with_allow_and_discovery_refuses_a_non_object_body() {
    let (_f, port) = api_fixture("api_methods", ALLOW, &[]);
    for (method, path, allow) in [
        ("DELETE", "/run", "POST"),
        ("GET", "/run", "POST"),
        ("PUT", "/health", "GET"),
        ("PATCH", "/discovery", "GET, POST"),
        ("POST", "/status/0123456789abcdef", "GET"),
    ] {
        let r = common::http(port, method, path, &[], None);
        assert_eq!(r.status, 405, "{method} {path}: {r}");
        let want = format!("Allow: {allow}");
        assert!(
            r.head.lines().any(|l| l.trim_end() == want),
            "{method} {path}: {:?}",
            r.head
        );
        assert_eq!(jstr(&r.json(), "error"), Some("method not allowed"), "{r}");
    }
    assert_eq!(
        common::http(port, "DELETE", "/nowhere", &[], None).status,
        404
    );

    assert_eq!(post(port, "/discovery", "[1]").status, 400);
    assert_eq!(post(port, "/discovery", "\"x\"").status, 400);
    assert_eq!(post(port, "/discovery", "").status, 200);
    assert_eq!(post(port, "/discovery", "{}").status, 200);
}

#[test]
fn live_spec_with_no_agent_registered_has_no_null_enum() {
    let f = Fixture::new("api_live_empty");
    f.dispatcher(ALLOW);
    let port = f.api();
    let r = get(port, "/openapi-live.json");
    assert_eq!(r.status, 200, "{r}");
    let text = String::from_utf8_lossy(&r.body).replace(' ', "");
    assert!(!text.contains("\"enum\":null"), "{text}");
    assert!(!text.contains("\"enum\":[]"), "{text}");
}

#[test]
fn api_check_loads_everything_and_an_unusable_config_exits_78() {
    let f = Fixture::new("api_check");
    f.dispatcher("");
    let check = |conf: &std::path::Path| {
        let mut c = f.cmd("ctrl-exec-api");
        c.arg("--config").arg(conf).arg("--check");
        f.run(c)
    };
    let ok = check(&f.conf);
    assert_eq!(ok.code(), Some(0), "{ok}");
    assert!(
        ok.stdout.starts_with("ready to serve on 127.0.0.1:0"),
        "{ok}"
    );
    let bad = f.path("bad.conf");
    std::fs::write(&bad, "this is not a config\n").unwrap();
    for out in [check(&bad), {
        let mut c = f.cmd("ctrl-exec-api");
        c.arg("--config").arg(&bad);
        f.run(c)
    }] {
        assert_eq!(out.code(), Some(78), "{out}");
        assert!(out.stderr.contains("malformed line"), "{out}");
    }
    // The dispatcher's key unreadable: 78 as well, naming it.
    let key = f.path("dispatcher/ctrl-exec.key");
    std::fs::rename(&key, f.path("dispatcher/moved.key")).unwrap();
    let nokey = check(&f.conf);
    assert_eq!(nokey.code(), Some(78), "{nokey}");
    assert!(nokey.stderr.contains("ctrl-exec.key"), "{nokey}");
}
