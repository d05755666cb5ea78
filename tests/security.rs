//! The agent's gates (TLS, revocation, trusted serials, agent identity,
//! slow clients, request limits) and the dispatcher's auth hook.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{eventually, jstr, ClientCert, Fixture};
use ctrl_exec::pki;

const PING: &[u8] = br#"{"reqid":"00000000000000ab"}"#;

/// A paired, serving agent `web1` with a `hello` script.
fn fixture(name: &str) -> (Fixture, common::Agent) {
    let f = Fixture::new(name);
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], "");
    (f, a)
}

#[test]
fn agent_gives_no_reply_to_a_client_without_certificate() {
    let (f, a) = fixture("sec_nocert");
    let r = f.agent_request(a.port, &ClientCert::None, "POST", "/ping", Some(PING));
    assert!(
        r.is_err(),
        "a client without certificate got a reply: {:?}",
        r.map(|r| r.status)
    );
    // The real dispatcher still gets through.
    let ok = f.agent_request(a.port, &f.dispatcher_cert(), "POST", "/ping", Some(PING));
    assert_eq!(ok.map(|r| r.status), Ok(200));
}

#[test]
fn agent_gives_no_reply_to_a_certificate_from_another_ca() {
    let (f, a) = fixture("sec_otherca");
    let (ca, ca_key) = pki::create_ca(1).unwrap();
    let (cert, key) = pki::issue_key_and_cert(&ca, &ca_key, "it-dispatcher", 1).unwrap();
    let r = f.agent_request(
        a.port,
        &ClientCert::Pem { cert, key },
        "POST",
        "/ping",
        Some(PING),
    );
    assert!(
        r.is_err(),
        "a foreign-CA client got a reply: {:?}",
        r.map(|r| r.status)
    );
    eventually(
        "the agent to log the refused handshake",
        Duration::from_secs(10),
        || match a.log_count("tls-failure") {
            0 => Err(a.log_text()),
            _ => Ok(()),
        },
    );
}

#[test]
fn revoked_dispatcher_serial_is_forbidden_after_reload() {
    let (f, a) = fixture("sec_revoked");
    f.ced_ok(&["run", "web1", "hello"]);
    let (cert, _) = f.dispatcher_identity();
    let serial = pki::cert_info_pem(&cert).unwrap().serial;
    std::fs::write(&a.revoked, format!("# revoked by the test\n{serial}\n")).unwrap();
    f.reload(&a);
    let out = f.ced(&["run", "web1", "hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout.contains("forbidden: certificate revoked"),
        "{out}"
    );
    assert!(!out.stdout.contains("hello from web1"), "{out}");
}

#[test]
fn untrusted_serial_from_the_same_ca_gets_serial_mismatch() {
    let (f, a) = fixture("sec_serial");
    let (cert, key) =
        pki::issue_key_and_cert(&f.ca_pem(), &f.ca_key_pem(), "it-dispatcher", 1).unwrap();
    let client = ClientCert::Pem { cert, key };
    let body = br#"{"script":"hello","args":[],"reqid":"00000000000000ac"}"#;
    for (method, path, body) in [
        ("POST", "/run", Some(&body[..])),
        ("POST", "/ping", Some(PING)),
        ("GET", "/result/00000000000000ac", None),
    ] {
        let r = f
            .agent_request(a.port, &client, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 403, "{method} {path}: {text}");
        assert!(text.contains("serial mismatch"), "{method} {path}: {text}");
    }
    assert_eq!(a.log_count("run"), 0, "nothing may run: {}", a.log_text());
}

#[test]
fn agent_presenting_a_different_key_than_recorded_is_refused() {
    let f = Fixture::new("sec_agentkey");
    f.dispatcher("");
    f.agent("web1", &[("hello", "echo web1")], "");
    let b = f.agent("db1", &[("hello", "echo db1")], "");
    f.ced_ok(&["run", "db1", "hello"]);
    assert_eq!(b.log_count("run"), 1);

    f.ced_ok(&["edit-agent", "web1", "--agent-port", &b.port.to_string()]);
    let out = f.ced(&["run", "web1", "hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout.contains("different key") || out.stderr.contains("different key"),
        "{out}"
    );
    assert!(!out.stdout.contains("db1\n"), "{out}");
    assert_eq!(
        b.log_count("run"),
        1,
        "db1 must not run web1's request: {}",
        b.log_text()
    );
}

#[test]
fn stalled_clients_do_not_block_other_requests() {
    let (f, a) = fixture("sec_slowloris");
    // One connection that sends nothing, one stuck halfway through a ClientHello.
    let _silent = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let mut half = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .unwrap();
    let out = f.ced_ok(&["run", "web1", "hello"]);
    assert!(out.stdout.contains("hello from web1"), "{out}");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "a run behind two stalled connections took {:?}",
        out.elapsed
    );
}

/// `POST /ping` with `n` header lines in all (the Host line included).
fn request_with_headers(n: usize) -> Vec<u8> {
    let mut req = format!(
        "POST /ping HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        PING.len()
    );
    for i in 2..n {
        req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(PING);
    bytes
}

#[test]
fn agent_refuses_oversize_headers_and_body_at_the_edge() {
    let (f, a) = fixture("sec_agentlimits");
    let at = f.agent_raw(a.port, &request_with_headers(32)).unwrap();
    assert_eq!(
        at.status,
        200,
        "32 header lines are allowed: {}",
        String::from_utf8_lossy(&at.body)
    );
    let over = f.agent_raw(a.port, &request_with_headers(33)).unwrap();
    assert_eq!(over.status, 431, "{}", String::from_utf8_lossy(&over.body));

    let big = b"POST /run HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 1048577\r\n\r\n";
    let r = f.agent_raw(a.port, big).unwrap();
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("request too large"));
}

/// A fixture whose dispatcher uses `hook` (an sh body) as its auth hook.
fn hooked(name: &str, hook: &str, extra: &str) -> Fixture {
    let (f, _a) = fixture(name);
    let path = f.script("auth-hook", hook);
    f.append_conf(&format!("auth_hook = {}\n{extra}", path.display()));
    f
}

#[test]
fn auth_hook_exit_0_allows_the_run() {
    let f = hooked(
        "sec_hook_allow",
        r#"[ "$ENVEXEC_ACTION" = run ] && [ "$ENVEXEC_SCRIPT" = hello ] && exit 0; exit 1"#,
        "",
    );
    let out = f.ced_ok(&["run", "web1", "hello", "--json"]);
    assert_eq!(
        jstr(&out.json(), "results.0.stdout"),
        Some("hello from web1\n")
    );
}

#[test]
fn auth_hook_exit_2_denies_with_bad_credentials() {
    let f = hooked("sec_hook_deny", "exit 2", "");
    let out = f.ced(&["run", "web1", "hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("Denied: bad credentials"), "{out}");
    assert!(!out.stdout.contains("hello from web1"), "{out}");
}

#[test]
fn auth_hook_past_its_timeout_denies_promptly() {
    let f = hooked(
        "sec_hook_timeout",
        "sleep 30; exit 0",
        "auth_hook_timeout = 1",
    );
    let out = f.ced(&["run", "web1", "hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("Denied"), "{out}");
    assert!(
        out.elapsed < Duration::from_secs(6),
        "a 1 s hook timeout took {:?}",
        out.elapsed
    );
}

#[test]
fn auth_hook_killed_by_a_signal_denies() {
    let f = hooked("sec_hook_crash", "kill -KILL $$; exit 0", "");
    let out = f.ced(&["run", "web1", "hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("Denied"), "{out}");
    assert!(!out.stdout.contains("hello from web1"), "{out}");
}

#[test]
fn self_check_flags_trust_files_the_agent_user_could_replace() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to hand the directories to a service user");
        return;
    }
    let f = Fixture::new("sec_trust_layout");
    let a = f.agent_files("web1", &[], "");
    std::fs::create_dir_all(&a.state_dir).unwrap();
    // The service user owns the state dir; the config dir stays root's.
    let user = Some(rustix::process::Uid::from_raw(4321));
    let group = Some(rustix::process::Gid::from_raw(4321));
    rustix::fs::chown(&a.state_dir, user, group).unwrap();
    let self_check = |f: &Fixture| f.self_check(&a);
    let ok = self_check(&f);
    assert!(ok.stdout.contains("Trust files OK"), "{}", ok.stdout);
    assert_eq!(ok.code(), Some(0), "{}", ok.stdout);
    // Without the executor, scripts share the agent's uid and its records.
    assert!(
        ok.stdout
            .contains("Job records warning: scripts run as uid 4321"),
        "{}",
        ok.stdout
    );

    // A trust map the service user could rename over: refused.
    rustix::fs::chown(&a.dir, user, group).unwrap();
    let bad = self_check(&f);
    assert!(bad.stdout.contains("Trust error"), "{}", bad.stdout);
    assert!(
        bad.stdout.contains(&a.dir.display().to_string()),
        "{}",
        bad.stdout
    );
    assert_eq!(bad.code(), Some(1), "{}", bad.stdout);
    rustix::fs::chown(&a.dir, Some(rustix::process::Uid::ROOT), None).unwrap();
}

#[test]
fn check_start_refuses_what_serve_would_and_names_each_unreadable_file() {
    let f = Fixture::new("sec_check_start");
    f.dispatcher("");
    let a = f.agent_files("web1", &[("hello", "echo hi")], "");
    let unpaired = f.run(f.cea_for(&a, "check-start"));
    assert_eq!(unpaired.code(), Some(78), "{unpaired}");
    assert!(unpaired.stderr.contains("not been paired"), "{unpaired}");

    f.pair(&a);
    let ready = f.run(f.cea_for(&a, "check-start"));
    assert_eq!(ready.code(), Some(0), "{ready}");
    assert!(
        ready.stdout.starts_with("ready to serve: 1 scripts"),
        "{ready}"
    );
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped the --user part: needs root to hand files to another user");
        return;
    }
    let key = a.dir.join("agent.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(&a.state_dir).unwrap();
    let as_nobody = || {
        let mut c = f.cea_for(&a, "check-start");
        c.args(["--user", "nobody"]);
        f.run(c)
    };
    let refused = as_nobody();
    assert_eq!(refused.code(), Some(78), "{refused}");
    let key_line = format!(
        "nobody cannot read {} (0600 uid 0 gid 0); fix: chgrp",
        key.display()
    );
    assert!(refused.stderr.contains(&key_line), "{refused}");
    assert!(
        refused
            .stderr
            .contains(&format!("nobody cannot write {}", a.state_dir.display())),
        "{refused}"
    );
    // The fixes it names are enough.
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    let gid = std::process::Command::new("id")
        .args(["-g", "nobody"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .unwrap()
        })
        .unwrap();
    let group = Some(rustix::process::Gid::from_raw(gid));
    rustix::fs::chown(&key, None, group).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    rustix::fs::chown(&a.state_dir, nobody, group).unwrap();
    let fixed = as_nobody();
    assert_eq!(fixed.code(), Some(0), "{fixed}");
}
