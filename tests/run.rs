//! Running scripts through `ced run`: arguments, exit codes, the allowlist,
//! script names, timeouts, output caps, reload and ping.

mod common;

use std::time::Duration;

use common::{eventually, jbool, jint, jstr, jtext, vm_hwm_kib, Fixture};

/// Prints each argument as `[arg]` on its own line.
const ARGS_SCRIPT: &str = r#"for a in "$@"; do printf '[%s]\n' "$a"; done"#;

#[test]
fn tricky_arguments_reach_the_script_byte_exact() {
    let f = Fixture::new("run_args");
    f.dispatcher("");
    f.agent("web1", &[("args", ARGS_SCRIPT)], "");
    let args = [
        "two words",
        "single 'quoted'",
        "double \"quoted\"",
        "line\nbreak",
        "$(id)",
        "`id`",
        "*",
        "",
        "héllo ✓ 日本",
        "back\\slash",
        "--json",
        "--",
        "-x",
        "tab\there",
        "semi;colon && ls | cat > /tmp/x",
    ];
    let mut cmd = vec!["run", "web1", "args", "--json", "--"];
    cmd.extend(args);
    let out = f.ced_ok(&cmd);
    let v = out.json();
    let expected: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(
        jstr(&v, "results.0.stdout"),
        Some(expected.as_str()),
        "{out}"
    );
    assert_eq!(jint(&v, "results.0.exit"), Some(0), "{out}");
}

#[test]
fn script_exit_codes_are_reported_and_set_ced_status() {
    let f = Fixture::new("run_exit");
    f.dispatcher("");
    f.agent(
        "web1",
        &[
            ("fail", "echo partial; echo oops >&2; exit 3"),
            ("ok", "echo fine"),
        ],
        "",
    );

    let out = f.ced(&["run", "web1", "fail", "--json"]);
    assert_eq!(
        out.code(),
        Some(1),
        "a failing script makes ced exit 1\n{out}"
    );
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(3), "{out}");
    assert_eq!(jstr(&v, "results.0.stdout"), Some("partial\n"), "{out}");
    assert_eq!(jstr(&v, "results.0.stderr"), Some("oops\n"), "{out}");

    let out = f.ced(&["run", "web1", "ok", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(jint(&out.json(), "results.0.exit"), Some(0), "{out}");

    let text = f.ced(&["run", "web1", "fail"]);
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(text.stdout.contains("[FAIL  exit:3"), "{text}");
}

#[test]
fn agent_refuses_script_not_in_allowlist() {
    let f = Fixture::new("run_not_allowed");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    // On disk and executable in the script dir, but not in the allowlist.
    f.script(
        &format!("agents/{}/scripts/hidden.sh", a.name),
        "echo should not run",
    );
    let out = f.ced(&["run", "web1", "hidden", "--json"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let v = out.json();
    assert_eq!(
        jstr(&v, "results.0.error"),
        Some("script not permitted"),
        "{out}"
    );
    assert!(!out.stdout.contains("should not run"), "{out}");
}

#[test]
fn invalid_script_names_are_refused_by_ced_and_by_the_agent() {
    let f = Fixture::new("run_bad_names");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    // A script the traversal names would reach if the agent resolved them as paths.
    f.script(&format!("agents/{}/x.sh", a.name), "echo escaped");
    for name in ["../x", "a/b", "$(id)", "", "hello.sh", " hello", "x\ny"] {
        let out = f.ced(&["run", "web1", name]);
        assert_eq!(
            out.code(),
            Some(64),
            "ced must refuse {name:?} as a usage error\n{out}"
        );
        assert!(
            out.stderr.contains("invalid script name"),
            "{name:?}\n{out}"
        );

        let body = format!(
            r#"{{"script":{},"args":[],"reqid":"00000000000000aa"}}"#,
            common::jquote(name)
        );
        let resp = f
            .agent_request(
                a.port,
                &f.dispatcher_cert(),
                "POST",
                "/run",
                Some(body.as_bytes()),
            )
            .unwrap_or_else(|e| panic!("agent request for {name:?} failed: {e}"));
        let text = String::from_utf8_lossy(&resp.body);
        assert!(
            text.contains("script not permitted"),
            "agent must refuse {name:?}: {} {text}",
            resp.status
        );
        assert!(!text.contains("escaped"), "{text}");
    }
}

#[test]
fn script_past_its_timeout_is_killed_and_reported() {
    let f = Fixture::new("run_timeout");
    f.dispatcher("");
    f.agent(
        "web1",
        &[("slow timeout=1", "echo started; sleep 30; echo never")],
        "",
    );
    let out = f.ced(&["run", "web1", "slow", "--json"]);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "a 1 s timeout must not wait for the 30 s sleep\n{out}"
    );
    assert_eq!(out.code(), Some(1), "{out}");
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(-1), "{out}");
    assert_eq!(jbool(&v, "results.0.timed_out"), Some(true), "{out}");
    assert!(!out.stdout.contains("never"), "{out}");
}

#[test]
fn output_over_the_cap_is_truncated_and_flagged() {
    let f = Fixture::new("run_cap");
    f.dispatcher("");
    f.agent(
        "web1",
        &[
            ("big", "head -c 5000 /dev/zero | tr '\\0' x"),
            ("exact", "head -c 1000 /dev/zero | tr '\\0' y"),
        ],
        "max_output_bytes = 1000",
    );
    let out = f.ced_ok(&["run", "web1", "big", "--json"]);
    let v = out.json();
    let stdout = jstr(&v, "results.0.stdout").unwrap_or_else(|| panic!("{out}"));
    assert_eq!(stdout.len(), 1000, "{}", jtext(&v));
    assert!(stdout.bytes().all(|b| b == b'x'));
    assert_eq!(
        jbool(&v, "results.0.stdout_truncated"),
        Some(true),
        "{}",
        jtext(&v)
    );

    let out = f.ced_ok(&["run", "web1", "exact", "--json"]);
    let v = out.json();
    assert_eq!(jstr(&v, "results.0.stdout").map(str::len), Some(1000));
    assert_eq!(
        jbool(&v, "results.0.stdout_truncated"),
        Some(false),
        "exactly at the cap is not truncated: {}",
        jtext(&v)
    );
}

#[test]
fn hundred_mib_of_output_is_truncated_with_bounded_agent_memory() {
    let f = Fixture::new("run_flood");
    f.dispatcher("");
    let a = f.agent(
        "web1",
        &[(
            "flood",
            "head -c 104857600 /dev/zero | tr '\\0' x; echo done >&2",
        )],
        "",
    );
    let before = vm_hwm_kib(a.pid);
    let out = f.ced_ok(&["run", "web1", "flood", "--json"]);
    let v = out.json();
    assert_eq!(jint(&v, "results.0.exit"), Some(0), "{}", out.stderr);
    assert_eq!(jbool(&v, "results.0.stdout_truncated"), Some(true));
    assert_eq!(
        jstr(&v, "results.0.stderr"),
        Some("done\n"),
        "the writer ran to the end, so the agent drained all 100 MiB"
    );
    let len = jstr(&v, "results.0.stdout").map(str::len).unwrap_or(0);
    assert!(
        len > 0 && len <= 1 << 20,
        "stdout is capped at max_output_bytes, got {len}"
    );
    let after = vm_hwm_kib(a.pid);
    eprintln!(
        "agent VmHWM {before} KiB -> {after} KiB; run took {:?}",
        out.elapsed
    );
    assert!(
        after < 64 * 1024,
        "agent peak RSS {after} KiB (was {before} KiB before the run) must stay under 64 MiB"
    );
}

#[test]
fn sighup_reload_adds_script_while_a_run_is_in_flight() {
    let f = Fixture::new("run_reload");
    f.dispatcher("");
    let marker = f.path("slow-started");
    let a = f.agent(
        "web1",
        &[(
            "slow",
            &format!("touch '{}'; sleep 3; echo slow finished", marker.display()),
        )],
        "",
    );
    let before = f.ced(&["run", "web1", "fresh", "--json"]);
    assert_eq!(
        jstr(&before.json(), "results.0.error"),
        Some("script not permitted")
    );

    std::thread::scope(|s| {
        let slow = s.spawn(|| f.ced(&["run", "web1", "slow", "--json"]));
        eventually("the slow script to start", Duration::from_secs(10), || {
            if marker.exists() {
                Ok(())
            } else {
                Err(format!("{} absent", marker.display()))
            }
        });
        a.add_script("fresh", "echo fresh script");
        f.reload(&a);
        let fresh = f.ced_ok(&["run", "web1", "fresh", "--json"]);
        assert_eq!(
            jstr(&fresh.json(), "results.0.stdout"),
            Some("fresh script\n")
        );

        let slow = slow.join().expect("slow run thread");
        f.expect_success(&slow);
        let v = slow.json();
        assert_eq!(jint(&v, "results.0.exit"), Some(0), "{slow}");
        assert_eq!(
            jstr(&v, "results.0.stdout"),
            Some("slow finished\n"),
            "{slow}"
        );
    });
}

#[test]
fn ping_reports_ok_with_version_and_expiry() {
    let f = Fixture::new("run_ping");
    f.dispatcher("");
    f.agent("web1", &[], "");
    f.agent("db1", &[], "");
    let out = f.ced_ok(&["ping", "web1", "db1"]);
    for host in ["web1", "db1"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no line for {host}\n{out}"));
        assert_eq!(line.split_whitespace().nth(1), Some("ok"), "{out}");
        assert!(line.contains(ctrl_exec::VERSION), "{out}");
    }
    let v = f.ced_ok(&["ping", "web1", "--json"]).json();
    assert_eq!(jstr(&v, "results.0.status"), Some("ok"));
    assert!(jstr(&v, "results.0.expiry").is_some_and(|e| !e.is_empty()));

    let unknown = f.ced(&["ping", "nosuch"]);
    assert_eq!(unknown.code(), Some(1), "{unknown}");
    assert!(unknown.stderr.contains("unknown agent"), "{unknown}");
}

/// Sets the cached tags of `name`'s registry record.
fn set_tags(f: &Fixture, name: &str, tags: &str) {
    let path = f.registry_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""tags":{}"#), "{text}");
    std::fs::write(
        &path,
        text.replace(r#""tags":{}"#, &format!(r#""tags":{tags}"#)),
    )
    .unwrap();
}

#[test]
fn hosts_come_from_words_a_file_stdin_and_tags_within_max_hosts() {
    let f = Fixture::new("run_host_sources");
    f.dispatcher("max_hosts = 2\n");
    for name in ["web1", "web2", "db1"] {
        f.agent(name, &[("hello", &format!("echo hello from {name}"))], "");
    }
    set_tags(&f, "web1", r#"{"env":"prod","role":"web"}"#);
    set_tags(&f, "web2", r#"{"env":"dev","role":"web"}"#);
    set_tags(&f, "db1", r#"{"env":"prod","role":"db"}"#);

    let out = f.ced_ok(&["run", "--tags", "env=prod,role=web", "hello"]);
    assert!(out.stdout.contains("hello from web1"), "{out}");
    assert!(
        !out.stdout.contains("web2") && !out.stdout.contains("db1"),
        "{out}"
    );

    let list = f.path("hosts.txt");
    std::fs::write(&list, "# fleet\nweb2\n\ndb1\nweb2\n").unwrap();
    let out = f.ced_ok(&["run", "--hosts-file", list.to_str().unwrap(), "hello"]);
    assert!(
        out.stdout.contains("hello from web2") && out.stdout.contains("hello from db1"),
        "{out}"
    );

    let mut c = f.cmd("ced");
    c.arg("--config")
        .arg(f.path("dispatcher/ctrl-exec.conf"))
        .args(["ping", "--hosts-file", "-"])
        .stdin(std::fs::File::open(&list).unwrap());
    let out = f.run(c);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains("web2") && out.stdout.contains("db1"),
        "{out}"
    );

    // Words, then tags: three distinct hosts are over max_hosts = 2.
    let out = f.ced(&["ping", "web1", "--tags", "role=web"]);
    assert!(out.status.success(), "{out}");
    let out = f.ced(&["run", "db1", "--tags", "role=web", "hello"]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.to_string()
            .contains("too many hosts (max 2; raise max_hosts"),
        "{out}"
    );

    let out = f.ced(&["run", "--tags", "env=staging", "hello"]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.to_string()
            .contains("no registered agent has the tags env=staging"),
        "{out}"
    );
}

#[test]
fn on_a_terminal_each_host_prints_as_it_finishes_with_a_live_count() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no 'script' command to give ced a terminal");
        return;
    }
    let f = Fixture::new("run_live");
    f.dispatcher("");
    let names: Vec<String> = (1..=6).map(|i| format!("web{i}")).collect();
    for n in &names {
        f.agent(n, &[("hello", &format!("echo hello from {n}"))], "");
    }
    let ced = f.path("bin/ced");
    let mut line = format!("{} --config {} run", ced.display(), f.conf.display());
    for n in &names {
        line.push_str(&format!(" {n}"));
    }
    line.push_str(" hello");
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &line, "/dev/null"]).current_dir(f.path(""));
    let out = f.run(c);
    assert!(out.status.success(), "{out}");
    for n in &names {
        assert_eq!(
            out.stdout.matches(&format!("hello from {n}")).count(),
            1,
            "each host once: {out}"
        );
    }
    assert!(
        out.stdout.contains("[6/6 done, 0 failed, 0 pending]"),
        "{out}"
    );
}

#[test]
fn action_lines_stay_off_stderr_unless_verbose() {
    let f = Fixture::new("run_verbose");
    f.dispatcher("");
    f.agent("web1", &[("hello", "echo hi")], "");
    let quiet = f.ced_ok(&["run", "web1", "hello"]);
    assert!(!quiet.stderr.contains("ACTION="), "{quiet}");
    let loud = f.ced_ok(&["-v", "run", "web1", "hello"]);
    assert!(loud.stderr.contains("ACTION=dispatch"), "{loud}");
}
