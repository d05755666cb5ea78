//! Dispatcher-certificate rotation: `ced rotate-cert` announces the new
//! serial with the old certificate, agents accept it without a restart,
//! the old serial is retired after the overlap, an agent that was down is
//! brought up to date on its next contact, `/rotate-serial` never takes
//! another dispatcher's serial, `ced maintain` carries on past a down
//! agent, and `ced serial-status` shows where each agent stands.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::{jarr, jint, jstr, Agent, ClientCert, Fixture, Tmpfs};
use ctrl_exec::{pki, time};

const PING: &[u8] = br#"{"reqid":"00000000000000ab"}"#;

/// The status a direct `/ping` as `who` gets from `agent`.
fn ping_status(f: &Fixture, a: &Agent, who: &ClientCert) -> u16 {
    f.agent_request(a.port, who, "POST", "/ping", Some(PING))
        .map(|r| r.status)
        .unwrap_or_else(|e| panic!("ping {}: {e}", a.name))
}

fn serial_of(cert_pem: &str) -> String {
    pki::cert_info_pem(cert_pem).expect("certificate").serial
}

/// `ced serial-status --json`.
fn status_json(f: &Fixture) -> common::json::Value {
    f.ced_ok(&["serial-status", "--json"]).json()
}

/// The `serial_status` of `name` in `ced serial-status --json`.
fn agent_status(v: &common::json::Value, name: &str) -> String {
    jarr(v, "agents")
        .unwrap_or_default()
        .iter()
        .find(|a| jstr(a, "hostname") == Some(name))
        .and_then(|a| jstr(a, "serial_status"))
        .unwrap_or_else(|| panic!("no {name} in {}", common::jtext(v)))
        .to_string()
}

/// `POST /rotate-serial` as `who`: the status and the reply.
fn rotate_serial(
    f: &Fixture,
    a: &Agent,
    who: &ClientCert,
    fields: &[(&str, &str)],
) -> (u16, common::json::Value) {
    let r = f
        .agent_request(
            a.port,
            who,
            "POST",
            "/rotate-serial",
            Some(&common::json_body(fields)),
        )
        .unwrap_or_else(|e| panic!("/rotate-serial: {e}"));
    let v = common::json::parse(&r.body)
        .unwrap_or_else(|| panic!("not JSON: {}", String::from_utf8_lossy(&r.body)));
    (r.status, v)
}

fn map_text(a: &Agent) -> String {
    fs::read_to_string(a.trusted_map()).expect("trusted map")
}

#[test]
fn rotate_cert_makes_every_agent_current_and_the_old_serial_is_refused_after_the_overlap() {
    let f = Fixture::new("rot_cycle");
    f.dispatcher("cert_overlap_days = 0");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    let b = f.agent("web2", &[("hello", "echo hello from web2")], "");
    let old = f.dispatcher_cert();
    let (old_pem, _) = f.dispatcher_identity();
    let old_serial = serial_of(&old_pem);
    let out = f.ced(&["serial-status"]);
    assert!(
        out.stdout.contains("No rotation has been performed."),
        "{out}"
    );

    let out = f.ced_ok(&["rotate-cert"]);
    for want in [
        "Rotating dispatcher certificate...",
        "New serial:",
        &format!("Old serial:      {old_serial}"),
        "Agents pending:  2",
        "Updated: 2",
        "Failed:  0",
    ] {
        assert!(out.stdout.contains(want), "{want:?}\n{out}");
    }
    let (new_pem, _) = f.dispatcher_identity();
    let new_serial = serial_of(&new_pem);
    assert_ne!(new_serial, old_serial);
    assert!(out.stdout.contains(&new_serial), "{out}");
    assert_eq!(
        pki::cert_info_pem(&new_pem).unwrap().cn,
        "ctrl-exec-dispatcher"
    );
    // Every agent trusts both serials, under the same id, without a restart.
    for agent in [&a, &b] {
        let map = map_text(agent);
        assert!(
            map.contains(&format!("{new_serial} it-dispatcher")),
            "{map}"
        );
        assert!(
            map.contains(&format!("{old_serial} it-dispatcher")),
            "{map}"
        );
        assert!(f.exited(agent.pid).is_none());
        assert_eq!(ping_status(&f, agent, &old), 200, "old still trusted");
    }
    // rotation.json as surface.md 4.10.
    let state = fs::read_to_string(f.path("dispatcher/state/rotation.json")).unwrap();
    let s = common::json::parse(state.as_bytes()).unwrap();
    assert_eq!(jstr(&s, "current_serial"), Some(new_serial.as_str()));
    assert_eq!(jstr(&s, "previous_serial"), Some(old_serial.as_str()));
    assert_eq!(jint(&s, "overlap_days"), Some(0));
    let rotated_at = jstr(&s, "rotated_at").and_then(time::parse_iso8601);
    assert!(
        rotated_at.is_some_and(|t| (t - time::now()).abs() < 600),
        "{state}"
    );
    assert_eq!(jstr(&s, "overlap_expires"), jstr(&s, "rotated_at"));

    let v = status_json(&f);
    for name in ["web1", "web2"] {
        assert_eq!(agent_status(&v, name), "current");
    }
    assert!(
        jarr(&v, "agents")
            .unwrap()
            .iter()
            .all(|r| jstr(r, "dispatcher_serial") == Some(new_serial.as_str())),
        "{}",
        common::jtext(&v)
    );
    let text = f.ced_ok(&["serial-status"]);
    for want in [
        format!("Current serial:  {new_serial}"),
        format!("Previous serial: {old_serial}"),
        "HOSTNAME".to_string(),
        format!("{:<30}  {:<10}", "web1", "current"),
    ] {
        assert!(text.stdout.contains(&want), "{want:?}\n{text}");
    }

    // Runs go over the new certificate.
    let out = f.ced_ok(&["run", "web1", "web2", "hello"]);
    assert!(out.stdout.contains("hello from web1"), "{out}");
    assert!(out.stdout.contains("hello from web2"), "{out}");

    // The overlap (0 days) is over: maintain retires the old serial.
    let out = f.ced_ok(&["maintain"]);
    assert!(
        out.stdout
            .contains("Maintenance run: 2/2 agents pinged, dispatcher cert checked."),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "Retired the previous serial {old_serial} (2 agent(s)"
        )),
        "{out}"
    );
    for agent in [&a, &b] {
        assert_eq!(ping_status(&f, agent, &old), 403, "old serial refused");
        assert!(!map_text(agent).contains(&old_serial));
        assert_eq!(ping_status(&f, agent, &f.dispatcher_cert()), 200);
    }
    f.ced_ok(&["run", "web1", "web2", "hello"]);
    assert!(!f.path("dispatcher/ctrl-exec.key.previous").exists());
    assert!(!f.path("dispatcher/ctrl-exec.crt.previous").exists());
    let text = f.ced_ok(&["serial-status"]);
    assert!(text.stdout.contains("Previous serial: (none)"), "{text}");
    assert!(text.stdout.contains("Retired at:"), "{text}");
    // Nothing left to do: a second maintain changes nothing and exits 0.
    let out = f.ced_ok(&["maintain", "--json"]);
    let v = out.json();
    assert_eq!(jint(&v, "ok"), Some(1), "{out}");
    assert_eq!(jint(&v, "pinged"), Some(2), "{out}");
    assert!(jget_null(&v, "retired"), "{out}");
}

fn jget_null(v: &common::json::Value, path: &str) -> bool {
    matches!(common::jget(v, path), Some(common::json::Value::Null))
}

#[test]
fn an_agent_down_during_rotation_catches_up_when_it_is_next_reached() {
    let f = Fixture::new("rot_catch_up");
    f.dispatcher("");
    let _a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    let mut b = f.agent("web2", &[("hello", "echo hello from web2")], "");
    f.kill(b.pid);

    let out = f.ced(&["rotate-cert"]);
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.contains("Updated: 1"), "{out}");
    assert!(out.stdout.contains("Failed:  1"), "{out}");
    assert!(out.stdout.contains("Agents requiring attention:"), "{out}");
    assert!(out.stdout.contains("web2"), "{out}");
    let v = status_json(&f);
    assert_eq!(agent_status(&v, "web1"), "current");
    assert_eq!(agent_status(&v, "web2"), "pending");
    f.ced_ok(&["run", "web1", "hello"]);

    // web2 comes back knowing only the old serial.
    f.serve(&mut b);
    let (pem, _) = f.dispatcher_identity();
    let new_serial = serial_of(&pem);
    assert!(!map_text(&b).contains(&new_serial));
    assert_eq!(ping_status(&f, &b, &f.dispatcher_cert()), 403);

    // The next run reaches it: announced with the old certificate first.
    let out = f.ced_ok(&["run", "web2", "hello"]);
    assert!(out.stdout.contains("hello from web2"), "{out}");
    assert!(
        map_text(&b).contains(&format!("{new_serial} it-dispatcher")),
        "{}",
        b.log_text()
    );
    assert_eq!(agent_status(&status_json(&f), "web2"), "current");
    assert_eq!(b.log_count("rotate"), 1, "{}", b.log_text());
    // And it needs nothing more: another run does not announce again.
    f.ced_ok(&["run", "web2", "hello"]);
    assert_eq!(b.log_count("rotate"), 1, "{}", b.log_text());
    // A rotation during the overlap is refused: web2 could have been left behind.
    let out = f.ced(&["rotate-cert"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("still in its overlap"), "{out}");
}

#[test]
fn an_agent_still_pending_after_the_overlap_becomes_stale() {
    let f = Fixture::new("rot_stale");
    f.dispatcher("cert_overlap_days = 0");
    let _a = f.agent("web1", &[], "");
    let b = f.agent("web2", &[], "");
    f.kill(b.pid);
    assert_eq!(f.ced(&["rotate-cert"]).code(), Some(75));
    let out = f.ced(&["maintain"]);
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(
        out.stdout.contains("[expire] web2: missed the rotation"),
        "{out}"
    );
    let v = status_json(&f);
    assert_eq!(agent_status(&v, "web1"), "current");
    assert_eq!(agent_status(&v, "web2"), "stale");
}

#[test]
fn rotate_serial_never_takes_or_drops_another_dispatchers_serial() {
    let f = Fixture::new("rot_owner");
    f.dispatcher("");
    let hook_log = f.path("hook.log");
    let hook = f.script(
        "agent-hook",
        &format!(
            "echo \"$ENVEXEC_ACTION $ENVEXEC_ARGS_JSON $ENVEXEC_DISPATCHER\" >> {}\n[ \"$ENVEXEC_TOKEN\" != deny ]",
            hook_log.display()
        ),
    );
    let a = f.agent("web1", &[], &format!("auth_hook = {}", hook.display()));
    let (second, second_serial) = f.second_dispatcher(&a, "second");
    let me = f.dispatcher_cert();
    let before = map_text(&a);

    let refused: &[(&[(&str, &str)], &str)] = &[
        (
            &[("serial", &second_serial), ("action", "add")],
            "serial owned by 'second'",
        ),
        (
            &[("serial", &second_serial), ("action", "remove")],
            "serial not owned by 'it-dispatcher'",
        ),
        (&[("serial", "")], "serial required"),
        (&[("serial", "zzz")], "invalid serial 'zzz'"),
        (&[("serial", &"a".repeat(41))], "invalid serial"),
        (
            &[("serial", "1f"), ("action", "replace")],
            "invalid action 'replace'",
        ),
    ];
    for (fields, want) in refused {
        let (status, v) = rotate_serial(&f, &a, &me, fields);
        assert_eq!(status, 200, "{fields:?}");
        assert_eq!(jstr(&v, "status"), Some("error"), "{fields:?}");
        assert!(
            jstr(&v, "error").is_some_and(|e| e.contains(want)),
            "{fields:?}: {}",
            common::jtext(&v)
        );
        assert_eq!(map_text(&a), before, "{fields:?} changed the map");
    }
    // The serial of the connection asking cannot be removed.
    let (pem, _) = f.dispatcher_identity();
    let (_, v) = rotate_serial(
        &f,
        &a,
        &me,
        &[("serial", &serial_of(&pem)), ("action", "remove")],
    );
    assert!(
        jstr(&v, "error").is_some_and(|e| e.contains("connection asking")),
        "{}",
        common::jtext(&v)
    );
    // A certificate that does not hold the serial, or is no dispatcher's, is refused.
    let (other, _) =
        pki::issue_key_and_cert(&f.ca_pem(), &f.ca_key_pem(), "ctrl-exec-dispatcher", 30).unwrap();
    let (_, v) = rotate_serial(&f, &a, &me, &[("serial", "1f"), ("cert", &other)]);
    assert!(
        jstr(&v, "error").is_some_and(|e| e.starts_with("certificate refused")),
        "{}",
        common::jtext(&v)
    );
    let agent_pem = fs::read_to_string(a.dir.join("agent.crt")).unwrap();
    let (_, v) = rotate_serial(
        &f,
        &a,
        &me,
        &[("serial", &serial_of(&agent_pem)), ("cert", &agent_pem)],
    );
    assert!(
        jstr(&v, "error").is_some_and(|e| e.contains("not a dispatcher certificate")),
        "{}",
        common::jtext(&v)
    );
    assert_eq!(map_text(&a), before);

    // The hook is asked as `rotate` with [action, serial]; a denial is 403.
    let new_serial = serial_of(&other);
    let (status, v) = rotate_serial(
        &f,
        &a,
        &second,
        &[("serial", &new_serial), ("cert", &other), ("token", "deny")],
    );
    assert_eq!(status, 403, "{}", common::jtext(&v));
    assert_eq!(map_text(&a), before);
    // `second` adds a serial of its own: in effect at once, no reload.
    let (status, v) = rotate_serial(
        &f,
        &a,
        &second,
        &[("serial", &new_serial), ("cert", &other)],
    );
    assert_eq!(status, 200);
    assert_eq!(jstr(&v, "status"), Some("ok"), "{}", common::jtext(&v));
    assert_eq!(jstr(&v, "dispatcher"), Some("second"));
    assert_eq!(common::jbool(&v, "persisted"), Some(true));
    assert!(map_text(&a).contains(&format!("{new_serial} second")));
    let hooked = fs::read_to_string(&hook_log).unwrap();
    assert!(
        hooked.contains(&format!("rotate [\"add\",\"{new_serial}\"] second")),
        "{hooked}"
    );
    // And the same serial cannot be claimed by it-dispatcher now.
    let (_, v) = rotate_serial(&f, &a, &me, &[("serial", &new_serial), ("cert", &other)]);
    assert_eq!(
        jstr(&v, "error"),
        Some("serial owned by 'second'"),
        "{}",
        common::jtext(&v)
    );
    assert_eq!(a.log_count("reload"), 1, "only the fixture's reload");
}

#[test]
fn maintain_with_one_agent_down_does_the_rest_and_exits_non_zero() {
    let f = Fixture::new("rot_maintain");
    f.dispatcher("cert_days = 1");
    let a = f.agent("web1", &[("hello", "echo hi")], "");
    let b = f.agent("web2", &[], "");
    f.kill(b.pid);
    // A day's certificate: the agent warns at start that nothing renewed it.
    assert_eq!(a.log_count("cert-expiry"), 1, "{}", a.log_text());
    // Agent certificates of one day are past half of 365; the dispatcher's
    // 825 days are within 900 of the end: both due.
    f.append_conf("cert_days = 365");
    f.append_conf("cert_renewal_days = 900");
    f.append_conf("dispatcher_cert_days = 1000");
    let runs = f.path("dispatcher/state/runs");
    fs::create_dir_all(&runs).unwrap();
    let old_run = runs.join("00000000000000aa.json");
    fs::write(&old_run, "{}").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&old_run)
        .status()
        .unwrap();
    assert!(touched.success());
    let old_serial = serial_of(&f.dispatcher_identity().0);

    let out = f.ced(&["maintain"]);
    assert_eq!(out.code(), Some(75), "{out}");
    for want in [
        "Maintenance run: 1/2 agents pinged, dispatcher cert checked.",
        "web1: certificate renewed, expires ",
        "Rotated the dispatcher certificate:",
        "Updated: 1",
        "[ping] web2: ",
        "[rotate] web2: ",
    ] {
        assert!(out.stdout.contains(want), "{want:?}\n{out}");
    }
    assert!(!out.stdout.contains("[renew]"), "{out}");
    assert!(!old_run.exists(), "run records older than a day are purged");
    let new_serial = serial_of(&f.dispatcher_identity().0);
    assert_ne!(new_serial, old_serial);
    assert!(map_text(&a).contains(&new_serial));
    let v = status_json(&f);
    assert_eq!(agent_status(&v, "web1"), "current");
    assert_eq!(agent_status(&v, "web2"), "pending");
    f.ced_ok(&["run", "web1", "hello"]);

    // Next run: nothing is due any more; web2 is still down.
    let out = f.ced(&["maintain", "--json"]);
    assert_eq!(out.code(), Some(75), "{out}");
    let v = out.json();
    assert_eq!(jint(&v, "ok"), Some(0), "{out}");
    assert_eq!((jint(&v, "agents"), jint(&v, "pinged")), (Some(2), Some(1)));
    assert!(jget_null(&v, "rotation"), "{out}");
    let failures = jarr(&v, "failures").unwrap();
    assert_eq!(failures.len(), 1, "{out}");
    assert_eq!(jstr(&failures[0], "phase"), Some("ping"));
    assert_eq!(jstr(&failures[0], "host"), Some("web2"));
}

#[test]
fn a_running_pairing_mode_rotates_a_certificate_that_is_due() {
    let f = Fixture::new("rot_pairing");
    f.dispatcher("");
    let a = f.agent("web1", &[], "");
    f.ced_ok(&["pairing-mode", "stop"]);
    let old_serial = serial_of(&f.dispatcher_identity().0);
    f.append_conf("cert_renewal_days = 900");
    f.append_conf("dispatcher_cert_days = 1000");
    f.ced_ok(&["pairing-mode", "start", "--port", "0", "--timeout", "60"]);
    let new_serial = common::eventually(
        "pairing mode to rotate the dispatcher certificate",
        Duration::from_secs(30),
        || {
            let s = serial_of(&f.dispatcher_identity().0);
            if s != old_serial && map_text(&a).contains(&s) {
                Ok(s)
            } else {
                Err(f.ced(&["serial-status"]).stdout)
            }
        },
    );
    f.ced_ok(&["pairing-mode", "stop"]);
    assert_eq!(ping_status(&f, &a, &f.dispatcher_cert()), 200);
    let v = status_json(&f);
    assert_eq!(jstr(&v, "state.current_serial"), Some(new_serial.as_str()));
    assert_eq!(agent_status(&v, "web1"), "current");
}

#[test]
fn an_agent_that_cannot_write_its_map_stages_the_serial_and_keeps_it_across_a_restart() {
    let f = Fixture::new("rot_staged");
    f.dispatcher("");
    let mut a = f.agent_files("web1", &[("hello", "echo hello")], "");
    f.pair(&a);
    // Move the map onto a file system the agent cannot write.
    let trust_dir = a.dir.join("trust");
    let mount = match Tmpfs::mount(&trust_dir, "64k") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs for the trusted map: {why}");
            return;
        }
    };
    let map = trust_dir.join("ctrl-exec-dispatchers");
    fs::copy(a.trusted_map(), &map).unwrap();
    fs::remove_file(a.trusted_map()).unwrap();
    let mut conf = fs::read_to_string(&a.conf).unwrap();
    conf.push_str(&format!("trusted_dispatchers_path = {}\n", map.display()));
    fs::write(&a.conf, conf).unwrap();
    let ro = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&trust_dir)
        .status()
        .unwrap();
    assert!(ro.success());
    f.serve(&mut a);
    let before = fs::read_to_string(&map).unwrap();

    let out = f.ced(&["rotate-cert", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", a.log_text());
    let v = out.json();
    assert_eq!(common::jbool(&v, "results.0.staged"), Some(true), "{out}");
    assert_eq!(
        common::jbool(&v, "results.0.persisted"),
        Some(true),
        "{out}"
    );
    let new_serial = serial_of(&f.dispatcher_identity().0);
    assert_eq!(fs::read_to_string(&map).unwrap(), before);
    let staged = fs::read_to_string(a.state_dir.join("ctrl-exec-dispatchers.staged")).unwrap();
    assert!(
        staged.contains(&format!("{new_serial} it-dispatcher")),
        "{staged}"
    );

    // A restart keeps it: the staged map checks out against its certificate.
    f.kill(a.pid);
    f.serve(&mut a);
    assert_eq!(
        ping_status(&f, &a, &f.dispatcher_cert()),
        200,
        "{}",
        a.log_text()
    );

    // A forged staged entry (a serial without a dispatcher certificate) is not taken.
    fs::write(
        a.state_dir.join("ctrl-exec-dispatchers.staged"),
        format!("{staged}abcdef12 it-dispatcher\n"),
    )
    .unwrap();
    f.reload(&a);
    assert!(
        a.log_text()
            .contains("abcdef12: no valid dispatcher certificate"),
        "{}",
        a.log_text()
    );
    f.ced_ok(&["run", "web1", "hello"]);

    // The root start step writes the checked changes into the map.
    let rw = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&trust_dir)
        .status()
        .unwrap();
    assert!(rw.success());
    let mut c = f.cmd("cea");
    c.arg("--config").arg(&a.conf).arg("promote-cert");
    let out = f.run(c);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("trust-promote"), "{out}");
    let promoted = fs::read_to_string(&map).unwrap();
    assert!(
        promoted.contains(&format!("{new_serial} it-dispatcher")),
        "{promoted}"
    );
    assert!(!promoted.contains("abcdef12"), "{promoted}");
    assert!(!a.state_dir.join("ctrl-exec-dispatchers.staged").exists());
    f.kill(a.pid);
    drop(mount);
}

#[test]
fn a_running_api_follows_a_rotation_made_by_another_process() {
    let f = Fixture::new("rot_api");
    f.dispatcher("cert_overlap_days = 0\napi_auth_default = allow");
    let _a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    let api = f.api();
    let r = common::post(api, "/ping", r#"{"hosts":["web1"]}"#);
    assert_eq!(jstr(&r.json(), "results.0.status"), Some("ok"), "{r}");
    f.ced_ok(&["rotate-cert"]);
    f.ced_ok(&["maintain"]);
    // The old serial is gone from the agent: only the new certificate works,
    // and the API, started before the rotation, presents it.
    let r = common::eventually(
        "the API to use the new certificate",
        Duration::from_secs(10),
        || {
            let r = common::post(api, "/run", r#"{"hosts":["web1"],"script":"hello"}"#);
            match jstr(&r.json(), "results.0.stdout") {
                Some("hello from web1\n") => Ok(r),
                _ => Err(r.to_string()),
            }
        },
    );
    assert_eq!(r.status, 200, "{r}");
}
