//! SIGHUP reload of scripts.conf and agent.conf: a broken or emptied
//! allowlist keeps the previous one, reloadable agent.conf keys apply at
//! once, keys that need a restart say so.

mod common;

use std::fs;
use std::io::Write;

use common::{jbool, jstr, Agent, Fixture};

const FAILED: &str = "reload failed, keeping previous configuration";

fn failures(a: &Agent) -> usize {
    a.log_text().lines().filter(|l| l.contains(FAILED)).count()
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

#[test]
fn garbage_empty_or_all_typo_scripts_conf_keeps_the_previous_allowlist() {
    let f = Fixture::new("reload_bad_allowlist");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    let good = fs::read_to_string(&a.allowlist).expect("read scripts.conf");
    let script = a.scripts_dir.join("hello.sh");
    let bad = [
        (
            "garbage",
            "\u{1}\u{2} {{{ ]]] not a config\n%%%\n".to_string(),
        ),
        ("empty", String::new()),
        (
            "a typo on every line",
            format!("hello: {}\nhelo = hello.sh\n", script.display()),
        ),
        (
            "no line valid",
            "hello = relative/hello.sh\nother = /nonexistent/x.sh\n".to_string(),
        ),
    ];
    for (n, (what, text)) in bad.iter().enumerate() {
        fs::write(&a.allowlist, text).expect("write scripts.conf");
        f.reload(&a);
        assert_eq!(failures(&a), n + 1, "{what}: {}", a.log_text());
        let out = f.ced_ok(&["run", "web1", "hello", "--json"]);
        assert_eq!(
            jstr(&out.json(), "results.0.stdout"),
            Some("hi\n"),
            "{what}"
        );
    }
    let log = a.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(FAILED)).collect();
    assert!(
        lines[0].contains(&format!("{}:1: malformed line", a.allowlist.display())),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("no valid script would be left"),
        "{}",
        lines[1]
    );
    assert!(!log.contains("cannot start"), "{log}");

    // A valid change still applies.
    fs::write(&a.allowlist, good).expect("restore scripts.conf");
    a.add_script("fresh", "echo fresh");
    f.reload(&a);
    assert_eq!(failures(&a), bad.len(), "{}", a.log_text());
    let out = f.ced_ok(&["run", "web1", "fresh", "--json"]);
    assert_eq!(jstr(&out.json(), "results.0.stdout"), Some("fresh\n"));
}

#[test]
fn tightened_allowed_ips_refuses_the_next_connection_after_reload() {
    let f = Fixture::new("reload_allowed_ips");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    f.ced_ok(&["run", "web1", "hello"]);
    append(&a.conf, "allowed_ips = 10.0.0.1\n");
    f.reload(&a);
    let out = f.ced(&["run", "web1", "hello", "--json"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(jstr(&out.json(), "results.0.error").is_some(), "{out}");
    assert!(a.log_count("ip-block") >= 1, "{}", a.log_text());
}

#[test]
fn reload_applies_max_output_bytes_and_warns_that_a_port_change_needs_a_restart() {
    let f = Fixture::new("reload_agent_conf");
    f.dispatcher("");
    let a = f.agent("web1", &[("long", "echo 0123456789")], "");
    append(&a.conf, "max_output_bytes = 4\nport = 1\n");
    f.reload(&a);
    let log = a.log_text();
    assert!(
        log.contains("agent.conf: port changed; restart required"),
        "{log}"
    );
    assert!(!log.contains(FAILED), "{log}");
    // Still serving on the port it bound at start, with the new cap.
    let out = f.ced_ok(&["run", "web1", "long", "--json"]);
    let v = out.json();
    assert_eq!(jstr(&v, "results.0.stdout"), Some("0123"), "{out}");
    assert_eq!(jbool(&v, "results.0.stdout_truncated"), Some(true), "{out}");
}

#[test]
fn unparsable_agent_conf_keeps_the_previous_configuration() {
    let f = Fixture::new("reload_bad_agent_conf");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    append(&a.conf, "this is not a key line\n");
    f.reload(&a);
    let log = a.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(FAILED))
        .unwrap_or_else(|| panic!("no reload failure logged:\n{log}"));
    assert!(line.contains(&format!("{}:", a.conf.display())), "{line}");
    assert!(line.contains("malformed line"), "{line}");
    assert!(!log.contains("cannot start"), "{log}");
    f.ced_ok(&["run", "web1", "hello"]);
}

#[test]
fn sighup_reloads_the_api_config_and_keeps_it_when_the_new_one_is_broken() {
    let f = Fixture::new("reload_api");
    f.dispatcher("");
    f.agent("web1", &[("hello", "echo hi")], "");
    let (pid, port) = f.api_process();
    let api_log = || fs::read_to_string(f.path("api.log")).unwrap_or_default();
    let run = || common::post(port, "/run", r#"{"hosts":["web1"],"script":"hello"}"#);
    assert_eq!(run().status, 403, "the default denies");

    append(&f.conf, "api_auth_default = allow\napi_port = 1\n");
    common::signal(pid, "HUP");
    common::eventually(
        "the reload to allow runs",
        std::time::Duration::from_secs(10),
        || match run() {
            r if r.status == 200 => Ok(()),
            r => Err(format!("{r}\n{}", api_log())),
        },
    );
    assert!(
        api_log().contains("ctrl-exec.conf: api_port changed; restart required"),
        "{}",
        api_log()
    );
    assert_eq!(
        common::get(port, "/health").status,
        200,
        "still on the old port"
    );

    append(&f.conf, "this is not a config line\n");
    common::signal(pid, "HUP");
    common::eventually(
        "the failed reload to be logged",
        std::time::Duration::from_secs(10),
        || match api_log().contains(FAILED) {
            true => Ok(()),
            false => Err(api_log()),
        },
    );
    assert_eq!(run().status, 200, "the previous configuration still serves");
}
