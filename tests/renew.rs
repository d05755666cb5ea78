//! Agent-certificate renewal: `ced ping` renews an agent past half of
//! `cert_days`, the agent serves the new certificate on the next handshake
//! without a restart, bad certificates and untrusted callers are refused,
//! and `cea promote-cert` / `cea cert-staged` at start.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{jstr, Agent, ClientCert, Fixture};
use ctrl_exec::net::{client, tls};
use ctrl_exec::{pki, rt, time};

/// The certificate the agent presents on a fresh handshake.
fn served_cert(f: &Fixture, port: u16) -> pki::CertInfo {
    let (cert, key) = f.dispatcher_identity();
    let id = tls::Identity::from_pem(&cert, &key).expect("dispatcher identity");
    let ca = pki::pem_certs(&f.ca_pem()).remove(0);
    let config = tls::mtls_client(&id, &ca).expect("client config");
    let deadline = Instant::now() + Duration::from_secs(20);
    let der = rt::block_on(async {
        let stream = client::connect_tls("127.0.0.1", port, config, deadline)
            .await
            .expect("TLS connect");
        client::peer_certificate(&stream).expect("a peer certificate")
    });
    pki::cert_info_der(&der).expect("served certificate parses")
}

fn registry_expiry(f: &Fixture, name: &str) -> String {
    let text = fs::read_to_string(f.registry_dir().join(format!("{name}.json"))).unwrap();
    let v = common::json::parse(text.as_bytes()).expect("registry record is JSON");
    jstr(&v, "expiry").expect("expiry in record").to_string()
}

fn staged_path(a: &Agent) -> std::path::PathBuf {
    a.state_dir.join("agent.crt.staged")
}

fn reply(r: &ctrl_exec::net::http::Response) -> common::json::Value {
    common::json::parse(&r.body)
        .unwrap_or_else(|| panic!("not JSON: {}", String::from_utf8_lossy(&r.body)))
}

#[test]
fn ping_renews_past_half_life_and_the_next_handshake_serves_the_new_cert() {
    let f = Fixture::new("renew_ping");
    f.dispatcher("cert_days = 1");
    let a = f.agent("web1", &[], "");
    let before = served_cert(&f, a.port);
    assert!(
        before.not_after - time::now() <= 86_400 + 600,
        "paired for a day"
    );
    let old_pem = fs::read_to_string(a.dir.join("agent.crt")).unwrap();

    // A day's certificate with cert_days = 1 is not past half-life.
    let out = f.ced_ok(&["ping", "web1", "--json"]);
    let v = out.json();
    assert_eq!(jstr(&v, "results.0.renewed"), None, "{out}");
    assert_eq!(
        jstr(&v, "results.0.expiry"),
        Some(time::openssl_date(before.not_after).as_str()),
        "{out}"
    );

    let listed = f.ced_ok(&["list-agents"]);
    assert!(!listed.stderr.contains("renewal due"), "{listed}");
    f.append_conf("cert_days = 365");
    let listed = f.ced_ok(&["list-agents"]);
    // The DAYS LEFT column stays a bare number for scripts (reference
    // 7.6); the renewal note goes to stderr.
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("web1 "))
        .unwrap_or("");
    let days = row.rsplit("  ").next().unwrap_or("");
    assert!(days.trim().parse::<i64>().is_ok(), "{listed}");
    assert!(
        listed.stderr.contains("Note: web1: renewal due ("),
        "{listed}"
    );
    f.append_conf("api_auth_default = allow");
    // The API pings without renewing: it holds no CA key.
    let api = f.api();
    let r = common::post(api, "/ping", r#"{"hosts":["web1"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jstr(&r.json(), "results.0.renewed"), None, "{}", r.text());
    assert_eq!(served_cert(&f, a.port).serial, before.serial);
    assert_eq!(a.log_count("renew"), 0, "{}", a.log_text());

    let out = f.ced_ok(&["ping", "web1", "--json"]);
    let v = out.json();
    let renewed = jstr(&v, "results.0.renewed")
        .unwrap_or_else(|| panic!("no renewal reported\n{out}\n{}", a.log_text()))
        .to_string();
    assert_eq!(jstr(&v, "results.0.renew_error"), None, "{out}");

    // The very next handshake presents the new certificate: same key, a
    // year's lifetime, a new serial, from the same process.
    let after = served_cert(&f, a.port);
    assert_eq!(time::openssl_date(after.not_after), renewed);
    assert_ne!(after.serial, before.serial);
    assert_eq!(after.spki_sha256, before.spki_sha256);
    assert!(after.not_after - time::now() > 300 * 86_400, "{renewed}");
    assert!(f.exited(a.pid).is_none(), "the agent was not restarted");
    assert_eq!(registry_expiry(&f, "web1"), renewed);

    // Both files hold it: the staged copy (0640) and the live certificate.
    let staged = staged_path(&a);
    let staged_pem = fs::read_to_string(&staged).expect("staged certificate");
    assert_eq!(
        fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        fs::read_to_string(a.dir.join("agent.crt")).unwrap(),
        staged_pem
    );
    assert_eq!(
        pki::cert_info_pem(&staged_pem).unwrap().serial,
        after.serial
    );

    // The ping reports the new expiry and a staged certificate, and does not
    // renew again.
    let out = f.ced_ok(&["ping", "web1", "--json"]);
    let v = out.json();
    assert_eq!(
        jstr(&v, "results.0.expiry"),
        Some(renewed.as_str()),
        "{out}"
    );
    assert_eq!(common::jbool(&v, "results.0.staged"), Some(true), "{out}");
    assert_eq!(jstr(&v, "results.0.renewed"), None, "{out}");

    // The text form says so too.
    let text = f.ced_ok(&["ping", "web1"]);
    assert!(text.stdout.contains(&renewed), "{text}");
    assert_eq!(a.log_count("renew-complete"), 1, "{}", a.log_text());

    // Where the agent cannot write the live file (the usual install), it
    // still holds the old certificate: a reload keeps serving the renewed one.
    fs::write(a.dir.join("agent.crt"), &old_pem).unwrap();
    f.reload(&a);
    assert_eq!(served_cert(&f, a.port).serial, after.serial);
    let out = f.ced_ok(&["ping", "web1", "--json"]);
    assert_eq!(
        jstr(&out.json(), "results.0.expiry"),
        Some(renewed.as_str()),
        "{out}"
    );
}

#[test]
fn a_run_in_flight_survives_the_renewal_and_text_ping_reports_it() {
    let f = Fixture::new("renew_inflight");
    f.dispatcher("cert_days = 1");
    let gate = f.dir.join("gate");
    let script = format!(
        "touch {g}.started; while [ ! -e {g}.release ]; do sleep 0.05; done; echo finished",
        g = gate.display()
    );
    let a = f.agent("web1", &[("slow", &script)], "");
    f.append_conf("cert_days = 365");
    std::thread::scope(|s| {
        let run = s.spawn(|| f.ced(&["run", "web1", "slow", "--json"]));
        let started = gate.with_extension("started");
        common::eventually("the script to start", Duration::from_secs(20), || {
            if started.exists() {
                Ok(())
            } else {
                Err(a.log_text())
            }
        });
        let out = f.ced_ok(&["ping", "web1"]);
        assert!(
            out.stdout.contains("web1: certificate renewed, expires "),
            "{out}\n{}",
            a.log_text()
        );
        fs::write(gate.with_extension("release"), "").unwrap();
        let out = run.join().unwrap();
        assert_eq!(out.code(), Some(0), "{out}");
        assert_eq!(
            jstr(&out.json(), "results.0.stdout"),
            Some("finished\n"),
            "{out}"
        );
    });
    // And a new run goes over the renewed certificate.
    fs::remove_file(gate.with_extension("started")).unwrap();
    let out = f.ced_ok(&["run", "web1", "slow", "--json"]);
    assert_eq!(
        jstr(&out.json(), "results.0.stdout"),
        Some("finished\n"),
        "{out}"
    );
}

#[test]
fn a_certificate_for_another_key_or_ca_is_refused_and_nothing_changes() {
    let f = Fixture::new("renew_refused");
    f.dispatcher("");
    let a = f.agent("web1", &[], "");
    let before = served_cert(&f, a.port);
    let expiry = registry_expiry(&f, "web1");
    let d = f.dispatcher_cert();

    let (other_key_cert, _) =
        pki::issue_key_and_cert(&f.ca_pem(), &f.ca_key_pem(), "web1", 365).unwrap();
    let (other_ca, other_ca_key) = pki::create_ca(30).unwrap();
    let agent_key = fs::read_to_string(a.dir.join("agent.key")).unwrap();
    let csr = pki::check_csr(&pki::make_csr(&agent_key, "web1").unwrap(), None).unwrap();
    let foreign = pki::sign_csr(&other_ca, &other_ca_key, &csr, 365).unwrap();

    for (cert, want) in [
        (
            other_key_cert.as_str(),
            "renewed cert public key does not match the agent key",
        ),
        (
            foreign.as_str(),
            "renewed cert does not verify against the agent CA",
        ),
        ("", "cert required"),
        (
            "not a certificate",
            "renewed cert does not verify against the agent CA",
        ),
    ] {
        let b = common::json_body(&[("cert", cert), ("ca", &f.ca_pem()), ("reqid", "abcd")]);
        let r = f
            .agent_request(a.port, &d, "POST", "/renew-complete", Some(&b))
            .unwrap();
        let v = reply(&r);
        assert_eq!(r.status, 200);
        assert_eq!(jstr(&v, "status"), Some("error"), "{cert}");
        assert_eq!(jstr(&v, "error"), Some(want), "{cert}");
    }
    assert!(!staged_path(&a).exists(), "nothing staged");
    let after = served_cert(&f, a.port);
    assert_eq!(after.serial, before.serial, "the old certificate is served");
    assert_eq!(registry_expiry(&f, "web1"), expiry);

    // A ping afterwards does not renew (not due) and keeps the old expiry.
    let out = f.ced_ok(&["ping", "web1", "--json"]);
    assert_eq!(jstr(&out.json(), "results.0.renewed"), None, "{out}");
    assert_eq!(registry_expiry(&f, "web1"), expiry);
}

#[test]
fn renewal_endpoints_need_a_trusted_dispatcher_serial() {
    let f = Fixture::new("renew_untrusted");
    f.dispatcher("");
    let a = f.agent("web1", &[], "");
    let (cert, key) = pki::issue_key_and_cert(&f.ca_pem(), &f.ca_key_pem(), "intruder", 1).unwrap();
    let intruder = ClientCert::Pem { cert, key };
    for path in ["/renew", "/renew-complete"] {
        let r = f
            .agent_request(
                a.port,
                &intruder,
                "POST",
                path,
                Some(br#"{"reqid":"abcd"}"#),
            )
            .unwrap();
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(jstr(&reply(&r), "error"), Some("serial mismatch"), "{path}");
    }
    assert!(a.log_count("serial-reject") >= 2, "{}", a.log_text());

    // The trusted dispatcher gets a CSR for the agent's own key, CN = its name.
    let r = f
        .agent_request(
            a.port,
            &f.dispatcher_cert(),
            "POST",
            "/renew",
            Some(br#"{"reqid":"abcd"}"#),
        )
        .unwrap();
    let v = reply(&r);
    assert_eq!(jstr(&v, "status"), Some("ok"), "{v:?}");
    assert_eq!(jstr(&v, "reqid"), Some("abcd"));
    let csr = pki::check_csr(jstr(&v, "csr").unwrap(), Some("web1")).expect("CSR checks");
    let agent_key = fs::read_to_string(a.dir.join("agent.key")).unwrap();
    assert_eq!(
        pki::sha256_hex(&csr.public_key_der),
        pki::key_spki_sha256(&agent_key).unwrap()
    );
}

fn cea(f: &Fixture, a: &Agent, mode: &str) -> common::Out {
    let mut c = f.cmd("cea");
    c.arg("--config").arg(&a.conf).arg(mode);
    f.run(c)
}

#[test]
fn promote_cert_takes_a_valid_staged_cert_and_drops_an_invalid_one() {
    let f = Fixture::new("renew_promote");
    f.dispatcher("");
    let a = f.agent_files("web1", &[], "");
    f.pair(&a);
    let live = a.dir.join("agent.crt");
    let original = fs::read_to_string(&live).unwrap();
    let staged = staged_path(&a);
    fs::create_dir_all(&a.state_dir).unwrap();

    // Nothing staged: exit 0, nothing changes.
    assert_eq!(cea(&f, &a, "cert-staged").code(), Some(1));
    let out = cea(&f, &a, "promote-cert");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("cert-promote"), "{out}");
    assert_eq!(fs::read_to_string(&live).unwrap(), original);

    // Invalid (another key): removed, the live certificate kept.
    let (other, _) = pki::issue_key_and_cert(&f.ca_pem(), &f.ca_key_pem(), "web1", 365).unwrap();
    fs::write(&staged, &other).unwrap();
    assert_eq!(cea(&f, &a, "cert-staged").code(), Some(0));
    let out = cea(&f, &a, "promote-cert");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("cert-promote"), "{out}");
    assert!(out.stderr.contains("rejected"), "{out}");
    assert!(!staged.exists(), "an invalid staged file is deleted");
    assert_eq!(fs::read_to_string(&live).unwrap(), original);
    assert_eq!(cea(&f, &a, "cert-staged").code(), Some(1));

    // Garbage: the same.
    fs::write(&staged, "garbage").unwrap();
    assert_eq!(cea(&f, &a, "promote-cert").code(), Some(0));
    assert!(!staged.exists());
    assert_eq!(fs::read_to_string(&live).unwrap(), original);

    // Valid: replaces the live certificate (0640), staged file removed.
    let key = fs::read_to_string(a.dir.join("agent.key")).unwrap();
    let csr = pki::check_csr(&pki::make_csr(&key, "web1").unwrap(), Some("web1")).unwrap();
    let renewed = pki::sign_csr(&f.ca_pem(), &f.ca_key_pem(), &csr, 365).unwrap();
    fs::write(&staged, &renewed).unwrap();
    let out = cea(&f, &a, "promote-cert");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("promoted"), "{out}");
    assert!(!staged.exists());
    assert_eq!(fs::read_to_string(&live).unwrap(), renewed);
    assert_eq!(
        fs::metadata(&live).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // A broken config never fails the start either; cert-staged says 1.
    let mut c = f.cmd("cea");
    c.arg("--config")
        .arg(a.dir.join("missing.conf"))
        .arg("promote-cert");
    assert_eq!(f.run(c).code(), Some(0));
    let mut c = f.cmd("cea");
    c.arg("--config")
        .arg(a.dir.join("missing.conf"))
        .arg("cert-staged");
    assert_eq!(f.run(c).code(), Some(1));

    // The promoted certificate is what the agent serves.
    let mut a = a;
    f.serve(&mut a);
    let served = served_cert(&f, a.port);
    assert_eq!(served.serial, pki::cert_info_pem(&renewed).unwrap().serial);
}

#[test]
fn ced_refuses_a_csr_for_another_name_or_key_and_keeps_the_record() {
    let f = Fixture::new("renew_bad_csr");
    f.dispatcher("");
    let soon = time::openssl_date(time::now() + 10 * 86_400);
    let stranger = pki::generate_key_pem().unwrap();
    for (name, csr_cn, want) in [
        ("web2", "other", "CSR refused"),
        ("web3", "web3", "not the one recorded at pairing"),
    ] {
        let csr = pki::make_csr(&stranger, csr_cn).unwrap();
        // The fake answers every request, /ping and /renew alike, with this.
        let reply = common::json_body(&[
            ("status", "ok"),
            ("host", name),
            ("version", "0"),
            ("expiry", &soon),
            ("csr", &csr),
            ("reqid", "abcd"),
        ]);
        let fake = f.fake_agent(name, 200, reply);
        let expiry = registry_expiry(&f, name);
        let out = f.ced_ok(&["ping", name, "--json"]);
        let v = out.json();
        assert_eq!(jstr(&v, "results.0.renewed"), None, "{out}");
        let err = jstr(&v, "results.0.renew_error").unwrap_or_default();
        assert!(err.contains(want), "{name}: {err}\n{out}");
        assert_eq!(registry_expiry(&f, name), expiry);
        let hits = fake.hits();
        assert!(hits.iter().any(|h| h == "POST /renew"), "{hits:?}");
        assert!(
            !hits.iter().any(|h| h == "POST /renew-complete"),
            "nothing is signed for a bad CSR: {hits:?}"
        );
    }
}
