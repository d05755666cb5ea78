//! Pairing through the real listener: approve, deny, the pairing code, a
//! wrong CA pin and an unusable agent name.

mod common;

use std::fs;
use std::net::TcpListener;
use std::time::Duration;

use common::json;
use common::{eventually, jstr, Agent, Fixture};
use ctrl_exec::pki;

/// The files pairing writes on the agent; none may exist after a refusal.
fn stored_files(a: &Agent) -> Vec<String> {
    [
        "agent.crt",
        "agent.key",
        "ca.crt",
        "state/ctrl-exec-dispatchers",
    ]
    .iter()
    .filter(|f| a.dir.join(f).exists())
    .map(|f| f.to_string())
    .collect()
}

/// The pending request (id, hostname, code) rows of `ced list-requests`.
fn pending_rows(f: &Fixture) -> Vec<(String, String, String)> {
    let out = f.ced_ok(&["list-requests"]);
    out.stdout
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let id = w.first()?;
            (id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit())).then(|| {
                (
                    w[0].to_string(),
                    w[1].to_string(),
                    w[w.len() - 1].to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn approved_agent_is_registered_trusts_dispatcher_and_answers_ping() {
    let f = Fixture::new("pair_approve");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hi")], "");

    let trusted = fs::read_to_string(a.trusted_map()).unwrap();
    let (cert, _) = f.dispatcher_identity();
    let serial = pki::cert_info_pem(&cert).unwrap().serial;
    assert!(
        trusted.contains(&serial) && trusted.contains("it-dispatcher"),
        "trusted map should map the dispatcher serial {serial} to its id: {trusted:?}"
    );
    let agent_cert = fs::read_to_string(a.dir.join("agent.crt")).unwrap();
    let info = pki::cert_info_pem(&agent_cert).unwrap();
    assert_eq!(info.cn, "web1");
    assert!(pki::verify_issued_by(
        &pki::pem_certs(&agent_cert)[0],
        &pki::pem_certs(&f.ca_pem())[0]
    ));

    let status = f.cmd("cea");
    let mut status = status;
    status.arg("--config").arg(&a.conf).arg("pairing-status");
    let out = f.run(status);
    f.expect_success(&out);
    assert!(out.stdout.starts_with("Paired."), "{out}");

    let agents = f.ced_ok(&["list-agents", "--json"]);
    assert!(agents.stdout.contains("\"web1\""), "{agents}");
    let ping = f.ced_ok(&["ping", "web1", "--json"]);
    let v = ping.json();
    assert_eq!(jstr(&v, "results.0.status"), Some("ok"), "{ping}");
    assert_eq!(jstr(&v, "results.0.host"), Some("web1"), "{ping}");
}

#[test]
fn denied_request_exits_3_and_stores_nothing() {
    let f = Fixture::new("pair_deny");
    f.dispatcher("");
    let a = f.agent_files("web1", &[], "");
    let cmd = f.request_pairing_cmd(&a, &["--timeout", "60"]);
    let (pid, reqid) = f.daemon(
        "request-pairing",
        cmd,
        &a.dir.join("request.log"),
        "Request ",
    );
    assert_eq!(pending_rows(&f).len(), 1, "one pending request expected");

    f.ced_ok(&["deny", &reqid]);
    let status = eventually("request-pairing to exit", Duration::from_secs(20), || {
        f.exited(pid).ok_or_else(|| "still running".to_string())
    });
    assert_eq!(status.code(), Some(3), "a denied request exits 3");
    assert_eq!(
        stored_files(&a),
        Vec::<String>::new(),
        "nothing may be stored"
    );
    assert!(pending_rows(&f).is_empty());
    let agents = f.ced_ok(&["list-agents", "--json"]);
    assert!(!agents.stdout.contains("web1"), "{agents}");
}

#[test]
fn pairing_code_shown_by_agent_matches_list_requests_and_csr() {
    let f = Fixture::new("pair_code");
    f.dispatcher("");
    let a = f.agent_files("web1", &[], "");
    let cmd = f.request_pairing_cmd(&a, &["--timeout", "60"]);
    let (pid, code) = f.daemon(
        "request-pairing",
        cmd,
        &a.dir.join("request.log"),
        "Pairing code: ",
    );
    assert!(
        code.len() == 6 && code.bytes().all(|c| c.is_ascii_digit()),
        "code {code:?}"
    );

    let (id, host, listed) =
        eventually("the request to be queued", Duration::from_secs(20), || {
            pending_rows(&f)
                .pop()
                .ok_or_else(|| "no pending request".to_string())
        });
    assert_eq!(host, "web1");
    assert_eq!(
        listed, code,
        "list-requests CODE must equal the agent's code"
    );

    let queued = fs::read(f.path(&format!("dispatcher/state/pairing/{id}.json"))).unwrap();
    let queued = json::parse_object(&queued).unwrap();
    let csr = json::get_str(&queued, "csr").unwrap();
    assert_eq!(
        pki::pairing_code(csr.as_bytes()),
        code,
        "code is derived from the CSR"
    );

    f.ced_ok(&["approve", &id]);
    let status = eventually("request-pairing to exit", Duration::from_secs(20), || {
        f.exited(pid).ok_or_else(|| "still running".to_string())
    });
    assert_eq!(status.code(), Some(0));
    assert_eq!(stored_files(&a).len(), 4);
}

#[test]
fn wrong_ca_fingerprint_is_refused_and_nothing_is_stored() {
    let f = Fixture::new("pair_pin");
    f.dispatcher("");
    let a = f.agent_files("web1", &[], "");
    let zeros = format!("sha256:{}", "0".repeat(64));
    let out = f.run(f.request_pairing_cmd(&a, &["--ca-fingerprint", &zeros, "--timeout", "10"]));
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("--ca-fingerprint"), "{out}");
    assert_eq!(stored_files(&a), Vec::<String>::new());
    assert!(pending_rows(&f).is_empty(), "no request may be queued");
}

#[test]
fn unusable_agent_name_is_refused_before_any_network_traffic() {
    let f = Fixture::new("pair_hostname");
    let a = f.agent_files("../x", &[], "");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut cmd = f.cmd("cea");
    cmd.arg("--config").arg(&a.conf).args([
        "request-pairing",
        "--dispatcher",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    let out = f.run(cmd);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("../x"),
        "the refusal names the bad name\n{out}"
    );
    listener.set_nonblocking(true).unwrap();
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the agent connected anyway: {accepted:?}"
    );
    assert_eq!(stored_files(&a), Vec::<String>::new());
}
