//! Revocation from the dispatcher host: `ced unpair --revoke` (the
//! dispatcher refuses the agent's certificate) and `ced revoke-dispatcher`
//! (agents refuse a dispatcher serial at once, without reload).

mod common;

use common::{jstr, Fixture};
use ctrl_exec::pki;

const PING: &[u8] = br#"{"reqid":"00000000000000ab"}"#;

#[test]
fn unpaired_and_revoked_agent_is_refused_even_with_its_record_put_back() {
    let f = Fixture::new("rev_unpair");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    f.ced_ok(&["run", "web1", "hello"]);
    let record_path = f.registry_dir().join("web1.json");
    let record = std::fs::read_to_string(&record_path).unwrap();
    assert!(record.contains(r#""serial":""#), "{record}");

    let out = f.ced_ok(&["unpair", "web1", "--revoke"]);
    assert!(out.stdout.contains("Unregistered 'web1'."), "{out}");
    assert!(
        out.stdout.contains("Revoked agent certificate serial"),
        "{out}"
    );
    assert!(
        out.stdout.contains("Revoked agent public key sha256"),
        "{out}"
    );
    let list = std::fs::read_to_string(f.path("dispatcher/state/revoked-agents")).unwrap();
    assert!(list.lines().any(|l| l.starts_with("serial ")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("key ")), "{list}");

    // The record, put back by hand as it was: refused before any request.
    std::fs::write(&record_path, &record).unwrap();
    let out = f.ced(&["run", "web1", "hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout
            .contains("agent 'web1' presented a revoked certificate (serial "),
        "{out}"
    );
    assert!(!out.stdout.contains("hello from web1"), "{out}");

    // A record without pin or serial (as older or hand-made ones are): the
    // certificate itself is still refused.
    f.write_registry_record("web1", a.port);
    let out = f.ced(&["ping", "web1"]);
    assert!(
        out.stdout.contains("presented a revoked certificate"),
        "{out}"
    );
    // Nothing reached the agent's handlers after the revocation.
    assert_eq!(a.log_count("ping"), 0, "{}", a.log_text());
    assert_eq!(a.log_count("run"), 1, "{}", a.log_text());
}

#[test]
fn unpair_without_revoke_keeps_the_warning_and_needs_a_record_to_revoke() {
    let f = Fixture::new("rev_unpair_plain");
    f.dispatcher("");
    f.write_registry_record("old1", 7443);
    let out = f.ced(&["unpair", "old1", "--revoke"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("neither a certificate serial nor a pinned key"),
        "{out}"
    );
    assert!(f.registry_dir().join("old1.json").exists());
    let out = f.ced_ok(&["unpair", "old1"]);
    assert!(
        out.stdout
            .contains("WARNING: Agent certificate remains valid"),
        "{out}"
    );
}

#[test]
fn a_dispatcher_serial_pushed_as_revoked_is_refused_at_once() {
    let f = Fixture::new("rev_push");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    let (second, serial) = f.second_dispatcher(&a, "second");
    let ok = f.agent_request(a.port, &second, "POST", "/ping", Some(PING));
    assert_eq!(ok.map(|r| r.status), Ok(200));

    let out = f.ced_ok(&["revoke-dispatcher", &serial.to_uppercase()]);
    assert!(out.stdout.contains("web1"), "{out}");
    assert!(out.stdout.contains("revoked"), "{out}");
    assert!(!out.stdout.contains("error"), "{out}");

    // No reload, no restart: the next connection is refused.
    let r = f
        .agent_request(a.port, &second, "POST", "/ping", Some(PING))
        .unwrap();
    assert_eq!(r.status, 403);
    let body = common::json::parse(&r.body).unwrap();
    assert_eq!(jstr(&body, "error"), Some("certificate revoked"));
    let file = std::fs::read_to_string(&a.revoked).unwrap();
    assert!(
        file.lines().any(|l| l.starts_with(&format!("{serial} #"))),
        "{file}"
    );
    // The dispatcher that asked still gets through.
    f.ced_ok(&["run", "web1", "hello"]);

    // Persisted: a reload keeps it revoked; a second push is a no-op.
    f.reload(&a);
    let r = f
        .agent_request(a.port, &second, "POST", "/ping", Some(PING))
        .unwrap();
    assert_eq!(r.status, 403);
    let out = f.ced_ok(&["revoke-dispatcher", &serial, "--json"]);
    assert!(out.stdout.contains(r#""already":true"#), "{out}");

    // A pushed revocation outlives a reload even when the file lost it (as
    // when the agent could not write it): only a restart forgets it.
    std::fs::write(&a.revoked, "").unwrap();
    f.reload(&a);
    let r = f
        .agent_request(a.port, &second, "POST", "/ping", Some(PING))
        .unwrap();
    assert_eq!(r.status, 403);
}

#[test]
fn an_agent_refuses_to_revoke_the_serial_asking() {
    let f = Fixture::new("rev_self");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    let (cert, _) = f.dispatcher_identity();
    let own = pki::cert_info_pem(&cert).unwrap().serial;
    let body = format!(r#"{{"serial":"{own}","reqid":"00000000000000ac"}}"#);
    let r = f
        .agent_request(
            a.port,
            &f.dispatcher_cert(),
            "POST",
            "/revoke-serial",
            Some(body.as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("refusing to revoke"));
    // The CLI refuses its own serial before asking anyone.
    let out = f.ced(&["revoke-dispatcher", &own]);
    assert_eq!(out.code(), Some(64), "{out}");
    // A bad or missing serial is a 400.
    for bad in [r#"{"serial":""}"#, r#"{"serial":"zz"}"#, "{}"] {
        let r = f
            .agent_request(
                a.port,
                &f.dispatcher_cert(),
                "POST",
                "/revoke-serial",
                Some(bad.as_bytes()),
            )
            .unwrap();
        assert_eq!(r.status, 400, "{bad}");
    }
    // Nothing was revoked: the dispatcher still runs scripts.
    f.ced_ok(&["run", "web1", "hello"]);
}

#[test]
fn the_agent_hook_is_asked_as_rotate_revoke_and_can_refuse() {
    let f = Fixture::new("rev_hook");
    f.dispatcher("");
    let seen = f.path("hook-seen");
    let hook = f.script(
        "cea-hook",
        &format!(
            "if [ \"$ENVEXEC_ACTION\" = rotate ]; then echo \"$ENVEXEC_ARGS_JSON\" > '{}'; exit 3; fi; exit 0",
            seen.display()
        ),
    );
    let a = f.agent(
        "web1",
        &[("hello", "echo hi")],
        &format!("auth_hook = {}", hook.display()),
    );
    let (second, serial) = f.second_dispatcher(&a, "second");
    let out = f.ced(&["revoke-dispatcher", &serial]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stdout.contains("not authorised"), "{out}");
    let args = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(args.trim(), format!(r#"["revoke","{serial}"]"#));
    let ok = f.agent_request(a.port, &second, "POST", "/ping", Some(PING));
    assert_eq!(ok.map(|r| r.status), Ok(200));
}
