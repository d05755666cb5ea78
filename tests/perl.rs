//! A drop-in for a ctrl-exec 0.12 fleet: our binaries with the Perl
//! original's certificates (X.509 v1, RSA-4096, made with the openssl command
//! line exactly as the original makes them), trust files in its formats, a
//! Perl agent's pairing request, a Rust agent pairing with a Perl-style
//! dispatcher, and config files with the original's keys and with typos.
//! Every test skips, saying why, when openssl is not installed.

mod common;

use std::fs;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::perl::PerlPki;
use common::{eventually, jint, json, jstr, Agent, Fixture};
use ctrl_exec::net::http::{Conn, Response};
use ctrl_exec::net::limits::Limits;
use ctrl_exec::net::{client, server, tls};
use ctrl_exec::{pki, rt};

const TRUSTED_MAP_HEADER: &str = "# ctrl-exec trusted dispatchers: <serial> <id>, one per line.\n# Managed by pairing - do not edit by hand.\n";

/// ctrl-exec.conf naming the Perl dispatcher's files, state in the fixture.
fn perl_dispatcher_conf(f: &Fixture, pki: &PerlPki, extra: &str) {
    let d = f.path("dispatcher");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        &f.conf,
        format!(
            "cert = {p}/dispatcher.crt\nkey = {p}/dispatcher.key\nca = {p}/ca.crt\n\
             state_dir = {d}/state\napi_bind = 127.0.0.1\napi_port = 0\n{extra}\n",
            p = pki.dir.display(),
            d = d.display()
        ),
    )
    .unwrap();
}

/// A registry record exactly as the Perl dispatcher writes it (surface.md 4.6): no key pin.
fn perl_registry_record(f: &Fixture, name: &str) {
    let dir = f.registry_dir();
    fs::create_dir_all(&dir).unwrap();
    let record = format!(
        r#"{{"hostname":"{name}","ip":"127.0.0.1","paired":"2026-03-05T18:38:09Z","expiry":"Jun  7 16:28:00 2028 GMT","reqid":"0123456789abcdef","lookup_by":"ip","port":7443,"tags":{{}},"dispatcher_serial":"2","serial_status":"current","serial_broadcast":"","serial_confirmed":"2026-03-05T18:38:09Z"}}"#
    );
    fs::write(dir.join(format!("{name}.json")), record).unwrap();
}

/// Gives `agent` the Perl agent's files `<leaf>.crt`/`.key`, the CA and a
/// trusted map in the original's format.
fn install_perl_agent_files(agent: &Agent, pki: &PerlPki, leaf: &str, map_entries: &str) {
    fs::copy(
        pki.path(&format!("{leaf}.crt")),
        agent.dir.join("agent.crt"),
    )
    .unwrap();
    fs::copy(
        pki.path(&format!("{leaf}.key")),
        agent.dir.join("agent.key"),
    )
    .unwrap();
    fs::copy(pki.path("ca.crt"), agent.dir.join("ca.crt")).unwrap();
    fs::write(
        agent.trusted_map(),
        format!("{TRUSTED_MAP_HEADER}{map_entries}"),
    )
    .unwrap();
}

/// One request over mTLS as `cert`/`key`, verifying the server against `ca_pem`.
fn request(
    port: u16,
    (cert, key): (&str, &str),
    ca_pem: &str,
    path: &str,
    body: &str,
) -> Result<Response, String> {
    let id = tls::Identity::from_pem(cert, key).map_err(|e| e.to_string())?;
    let ca = pki::pem_certs(ca_pem).remove(0);
    let config = tls::mtls_client(&id, &ca).map_err(|e| e.to_string())?;
    common::tls_request(config, port, "POST", path, Some(body.as_bytes()))
}

const PING: &str = r#"{"reqid":"0123456789abcdef"}"#;

#[test]
fn rust_agent_and_rust_dispatcher_run_with_a_perl_deployments_certificates() {
    let f = Fixture::new("perl_deployment");
    let Some(pki) = PerlPki::new(&f.path("perl-ca")) else {
        return;
    };
    pki.leaf("dispatcher", "ctrl-exec-dispatcher", 825);
    pki.leaf("agent", "web-01", 825);
    assert_eq!(
        pki.serial("dispatcher"),
        "02",
        "the original's first serial"
    );
    perl_dispatcher_conf(&f, &pki, "");
    perl_registry_record(&f, "web-01");
    let mut agent = f.agent_files("web-01", &[("hello", "echo \"hello $1\"")], "");
    // The trusted map as the Perl agent wrote it after pairing with that dispatcher.
    install_perl_agent_files(&agent, &pki, "agent", "2 perl-ctl\n");
    f.serve(&mut agent);

    let out = f.ced_ok(&["run", "web-01", "hello", "--", "fleet"]);
    assert!(out.stdout.contains("hello fleet"), "{out}");
    assert!(
        agent.log_text().contains("DISPATCHER=perl-ctl"),
        "{}",
        agent.log_text()
    );
    let out = f.ced_ok(&["ping", "web-01", "--json"]);
    assert_eq!(jstr(&out.json(), "results.0.status"), Some("ok"), "{out}");
    assert_eq!(agent.log_count("serial-reject"), 0, "{}", agent.log_text());

    // The API's optional TLS with the Perl dispatcher's certificate; a client
    // checking it against the Perl CA gets through.
    f.append_conf(&format!(
        "api_cert = {}\napi_key = {}",
        pki.path("dispatcher.crt").display(),
        pki.path("dispatcher.key").display()
    ));
    let api = f.api();
    let (cert, key) = (pki.read("agent.crt"), pki.read("agent.key"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = tls::Identity::from_pem(&cert, &key).unwrap();
    let config = tls::mtls_client(&id, &pki::pem_certs(&pki.read("ca.crt")).remove(0)).unwrap();
    let health = rt::block_on(async {
        let s = client::connect_tls("127.0.0.1", api, config, deadline).await?;
        client::exchange(
            s,
            "GET",
            "/health",
            "127.0.0.1",
            None,
            &Limits::default(),
            deadline,
        )
        .await
    })
    .expect("the API serves a v1 certificate over TLS");
    assert_eq!(
        health.status,
        200,
        "{}",
        String::from_utf8_lossy(&health.body)
    );
}

#[test]
fn certificates_from_another_ca_expired_or_with_a_broken_signature_are_refused() {
    let f = Fixture::new("perl_refusals");
    let Some(pki) = PerlPki::new(&f.path("perl-ca")) else {
        return;
    };
    pki.leaf("dispatcher", "ctrl-exec-dispatcher", 825); // serial 02
    pki.leaf("agent", "web-01", 825); // serial 03
    pki.sign("dispatcher.csr", "expired.crt", -1); // serial 04, notAfter yesterday
                                                   // Another Perl CA: same CA name, and its first certificate has serial 02 too.
    let other = PerlPki::new(&f.path("other-ca")).unwrap();
    other.leaf("stranger", "ctrl-exec-dispatcher", 825);
    assert_eq!(other.serial("stranger"), "02");
    // The dispatcher's certificate with one bit of its signature flipped.
    let mut der = pki::pem_certs(&pki.read("dispatcher.crt")).remove(0);
    let last = der.len() - 1;
    der[last] ^= 0x01;
    fs::write(pki.path("broken.der"), &der).unwrap();
    pki.openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        "broken.der",
        "-out",
        "broken.crt",
    ]);

    let mut agent = f.agent_files("web-01", &[], "");
    // Every serial involved is trusted, so only the certificate checks can refuse.
    install_perl_agent_files(&agent, &pki, "agent", "2 perl-ctl\n4 perl-ctl\n");
    let port = f.serve_unregistered(&mut agent);
    let ca = pki.read("ca.crt");
    let (dcert, dkey) = (pki.read("dispatcher.crt"), pki.read("dispatcher.key"));

    let ok = request(port, (&dcert, &dkey), &ca, "/ping", PING).expect("the real dispatcher");
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let (scert, skey) = (other.read("stranger.crt"), other.read("stranger.key"));
    let expired = pki.read("expired.crt");
    let broken = pki.read("broken.crt");
    for (what, cert, key) in [
        ("another CA's certificate", &scert, &skey),
        ("an expired certificate", &expired, &dkey),
        ("a certificate with a broken signature", &broken, &dkey),
    ] {
        match request(port, (cert, key), &ca, "/ping", PING) {
            // With TLS 1.3 the client learns of the refusal on its first read.
            Err(e) => assert!(
                e.starts_with("connect") || e.contains("tls handshake failed"),
                "{what}: {e}"
            ),
            Ok(r) => panic!(
                "{what} was let in: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    // Still serving the real dispatcher afterwards.
    let ok = request(port, (&dcert, &dkey), &ca, "/ping", PING).unwrap();
    assert_eq!(ok.status, 200);

    // Our dispatcher, holding the Perl CA, refuses an agent certificate from the other CA.
    perl_dispatcher_conf(&f, &pki, "");
    perl_registry_record(&f, "web-02");
    let mut impostor = f.agent_files("web-02", &[], "");
    fs::copy(other.path("stranger.crt"), impostor.dir.join("agent.crt")).unwrap();
    fs::copy(other.path("stranger.key"), impostor.dir.join("agent.key")).unwrap();
    fs::copy(other.path("ca.crt"), impostor.dir.join("ca.crt")).unwrap();
    fs::write(
        impostor.trusted_map(),
        format!("{TRUSTED_MAP_HEADER}2 perl-ctl\n"),
    )
    .unwrap();
    f.serve(&mut impostor);
    let out = f.ced(&["ping", "web-02", "--json"]);
    let v = out.json();
    assert_ne!(jstr(&v, "results.0.status"), Some("ok"), "{out}");
    assert!(
        common::jtext(&v).contains("certificate or trust mismatch"),
        "{out}"
    );
}

/// Reads the pairing listener's next message.
fn next_message(conn: &mut Conn<client::ClientStream>) -> json::Object {
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = smol::block_on(conn.read_response(&Limits::default(), deadline))
        .expect("a message from the pairing listener");
    json::parse_object(&r.body)
        .unwrap_or_else(|| panic!("not JSON: {}", String::from_utf8_lossy(&r.body)))
}

#[test]
fn perl_agents_pairing_request_with_a_string_port_registers_that_port() {
    let f = Fixture::new("perl_pairing_request");
    let Some(perl) = PerlPki::without_ca(&f.path("perl-agent")) else {
        return;
    };
    f.dispatcher("");
    let csr = perl.agent_csr("agent", "perl-agent.example");
    let port = f.pairing_port();
    // The Perl agent does not verify the listener (SSL_VERIFY_NONE) and
    // writes exactly these bytes (protocol.md 5.2), its port as a JSON string.
    let deadline = Instant::now() + Duration::from_secs(20);
    let config = tls::pairing_client(Arc::new(tls::PairingVerifier::new(None))).unwrap();
    let stream = rt::block_on(client::connect_tls("127.0.0.1", port, config, deadline)).unwrap();
    let mut conn = Conn::new(stream);
    let nonce = "00112233445566778899aabbccddeeff";
    let body = format!(
        r#"{{"hostname":"perl-agent.example","csr":{},"nonce":"{nonce}","port":"7450","ip":"127.0.0.1"}}"#,
        common::jquote(&csr)
    );
    let raw = format!(
        "POST /pair HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    smol::block_on(conn.write_raw(raw.as_bytes(), deadline)).unwrap();
    let ack = next_message(&mut conn);
    assert_eq!(json::get_str(&ack, "status"), Some("pending"), "{ack:?}");
    let reqid = json::get_str(&ack, "reqid").unwrap().to_string();
    let listed = f.ced_ok(&["list-requests"]);
    assert!(
        listed.stdout.contains(&pki::pairing_code(csr.as_bytes())),
        "{listed}"
    );
    f.ced_ok(&["approve", &reqid]);

    let result = next_message(&mut conn);
    assert_eq!(
        json::get_str(&result, "status"),
        Some("approved"),
        "{result:?}"
    );
    assert_eq!(json::get_str(&result, "nonce"), Some(nonce));
    // What the Perl agent stores, OpenSSL accepts: the certificate chains to the CA sent.
    perl.openssl(&["version"]);
    fs::write(
        perl.path("agent.crt"),
        json::get_str(&result, "cert").unwrap(),
    )
    .unwrap();
    fs::write(perl.path("ca.crt"), json::get_str(&result, "ca").unwrap()).unwrap();
    perl.openssl(&["verify", "-CAfile", "ca.crt", "agent.crt"]);
    // The serial the Perl agent will store reads back the same under its rules.
    let serial = json::get_str(&result, "dispatcher_serial")
        .unwrap()
        .to_string();
    assert_eq!(pki::perl_serial(&serial).as_deref(), Some(serial.as_str()));

    let out = f.ced_ok(&["list-agents", "--json"]);
    let v = out.json();
    assert_eq!(jstr(&v, "0.hostname"), Some("perl-agent.example"), "{out}");
    assert_eq!(
        jint(&v, "0.port"),
        Some(7450),
        "the port it asked for\n{out}"
    );
    let record = fs::read_to_string(f.registry_dir().join("perl-agent.example.json")).unwrap();
    assert!(record.contains(r#""port":7450"#), "{record}");
}

/// Finds the 1-based line of `needle` in `path`.
fn line_of(path: &std::path::Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.starts_with(needle))
        .unwrap_or_else(|| panic!("no line starting {needle:?} in {}", path.display()))
        + 1
}

#[test]
fn config_typos_are_warnings_and_errors_in_the_check_commands() {
    let f = Fixture::new("perl_config_keys");
    f.dispatcher("read_timout = 5\npairing_port = 7444\nservice_user = ctrl-exec");
    let typo = line_of(&f.conf, "read_timout");
    let conf = f.conf.display().to_string();

    // Every command still works, and says so on stderr.
    let out = f.ced_ok(&["list-agents"]);
    assert!(out.stderr.contains("ACTION=config-warn"), "{out}");
    assert!(
        out.stderr.contains(&format!("FILE={conf}"))
            && out.stderr.contains(&format!("LINE={typo}")),
        "{out}"
    );
    assert!(out.stderr.contains("KEY=read_timout"), "{out}");

    let out = f.ced(&["check-config"]);
    assert_eq!(out.code(), Some(78), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "Config error: {conf}:{typo}: unknown key 'read_timout' (ignored)"
        )),
        "{out}"
    );
    assert!(out.stdout.contains("'pairing_port' does nothing"), "{out}");
    assert!(out.stdout.contains("Certificate OK"), "{out}");

    // Without the typo: warnings only, exit 0.
    let text = fs::read_to_string(&f.conf)
        .unwrap()
        .replace("read_timout = 5\n", "");
    fs::write(&f.conf, text).unwrap();
    let out = f.ced(&["check-config"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("'service_user' does nothing"), "{out}");
    assert!(out.stdout.contains("Config OK."), "{out}");

    // The agent: a warning at serve, an error in self-check.
    let agent = f.agent("web-01", &[], "stdin_timout = 5\nsandbox = 1");
    let typo = line_of(&agent.conf, "stdin_timout");
    eventually(
        "the agent's config warning",
        Duration::from_secs(10),
        || {
            let log = agent.log_text();
            if log.contains("ACTION=config-warn") && log.contains("KEY=stdin_timout") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    let out = f.self_check(&agent);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "Config error: {}:{typo}: unknown key 'stdin_timout' (ignored)",
            agent.conf.display()
        )),
        "{out}"
    );
    assert!(
        out.stdout.contains("Config warning") && out.stdout.contains("'sandbox' does nothing"),
        "{out}"
    );
}

#[test]
fn agent_with_an_rsa_key_pairs_with_our_dispatcher_and_runs() {
    let f = Fixture::new("rsa_agent_rust_dispatcher");
    f.dispatcher("");
    let agent = f.agent("web-01", &[("hello", "echo hello")], "key_type = rsa");
    let cert = fs::read_to_string(agent.dir.join("agent.crt")).unwrap();
    let der = pki::pem_certs(&cert).remove(0);
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        x.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1",
        "an RSA key"
    );
    let out = f.ced_ok(&["run", "web-01", "hello"]);
    assert!(out.stdout.contains("hello"), "{out}");
}

/// A pairing listener that behaves like the Perl dispatcher's: its own
/// certificate on the port, the original's CSR checks (`openssl req
/// -verify`, `Public-Key: (N bit)` with N >= 2048), signing with `openssl
/// x509 -req`, and its serial sent in the original's canonical form. Sends
/// what it found on `report`.
fn perl_pairing_listener(
    pki: Arc<PerlPki>,
    serial_sent: String,
    report: mpsc::Sender<String>,
) -> u16 {
    let id =
        tls::Identity::from_pem(&pki.read("dispatcher.crt"), &pki.read("dispatcher.key")).unwrap();
    let config = tls::plain_server(&id).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        smol::block_on(async move {
            let tcp = smol::Async::new(tcp).unwrap();
            let stream = server::handshake(config, tcp, Duration::from_secs(10))
                .await
                .unwrap();
            let mut conn = Conn::new(stream);
            let req = conn.read_request(&Limits::default()).await.unwrap();
            let body = json::parse_object(&req.body).unwrap();
            let csr = json::get_str(&body, "csr").unwrap().to_string();
            let nonce = json::get_str(&body, "nonce").unwrap().to_string();
            fs::write(pki.path("agent.csr"), &csr).unwrap();
            pki.openssl(&["req", "-in", "agent.csr", "-noout", "-verify"]);
            let text = pki.openssl(&["req", "-in", "agent.csr", "-noout", "-text"]);
            let bits: usize = text
                .split("Public-Key: (")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let _ = report.send(format!("bits={bits}"));
            let deadline = Instant::now() + Duration::from_secs(30);
            let ack = r#"{"status":"pending","reqid":"0123456789abcdef"}"#;
            conn.write_response(200, ack.as_bytes(), deadline)
                .await
                .unwrap();
            let answer = if bits >= 2048 {
                pki.sign("agent.csr", "agent.crt", 825);
                format!(
                    r#"{{"status":"approved","cert":{},"ca":{},"nonce":"{nonce}","dispatcher_serial":"{serial_sent}","dispatcher_id":"perl-ctl"}}"#,
                    common::jquote(&pki.read("agent.crt")),
                    common::jquote(&pki.read("ca.crt"))
                )
            } else {
                r#"{"status":"denied","reason":"rejected by operator"}"#.to_string()
            };
            conn.write_response(200, answer.as_bytes(), deadline)
                .await
                .unwrap();
            let _ = smol::io::AsyncWriteExt::close(&mut conn.io).await;
        });
    });
    port
}

#[test]
fn rust_agent_with_an_rsa_key_pairs_with_a_perl_style_dispatcher() {
    let f = Fixture::new("rsa_agent_perl_dispatcher");
    let Some(pki) = PerlPki::new(&f.path("perl-ca")) else {
        return;
    };
    // The dispatcher's certificate has serial 0x10, which the original sends
    // as `a`; another of its certificates (an agent's) has serial 0x0a.
    pki.next_serial(0x10);
    pki.leaf("dispatcher", "ctrl-exec-dispatcher", 825);
    assert_eq!(pki.serial("dispatcher"), "10");
    pki.next_serial(0x0a);
    pki.leaf("neighbour", "web-02", 825);
    assert_eq!(pki.serial("neighbour"), "0A");
    assert_eq!(pki::perl_serial("10").as_deref(), Some("a"));
    let pki = Arc::new(pki);
    let (tx, rx) = mpsc::channel();
    let port = perl_pairing_listener(pki.clone(), "a".into(), tx);

    let mut agent = f.agent_files("web-01", &[("hello", "echo hello")], "");
    let mut c = f.cmd("cea");
    c.arg("--config")
        .arg(&agent.conf)
        .args(["request-pairing", "--dispatcher", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--key-type", "rsa"]);
    let out = f.run(c);
    f.expect_success(&out);
    assert!(out.stdout.contains("Generating an RSA-2048 key"), "{out}");
    assert!(out.stdout.contains("Pairing complete"), "{out}");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "bits=2048"
    );
    let key_text = pki.openssl(&[
        "pkey",
        "-in",
        &agent.dir.join("agent.key").display().to_string(),
        "-noout",
        "-text",
    ]);
    assert!(key_text.contains("Private-Key: (2048 bit"), "{key_text}");
    // The true serial is stored, not the original's `a` (which is 0x0a).
    let map = fs::read_to_string(agent.trusted_map()).unwrap();
    assert!(map.lines().any(|l| l == "10 perl-ctl"), "{map}");
    assert!(!map.lines().any(|l| l.starts_with("a ")), "{map}");

    let port = f.serve_unregistered(&mut agent);
    let ca = pki.read("ca.crt");
    let (dcert, dkey) = (pki.read("dispatcher.crt"), pki.read("dispatcher.key"));
    let r = request(port, (&dcert, &dkey), &ca, "/ping", PING).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let run = request(
        port,
        (&dcert, &dkey),
        &ca,
        "/run",
        r#"{"script":"hello","args":[],"reqid":"0123456789abcdef"}"#,
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&run.body).contains("hello"),
        "{}",
        String::from_utf8_lossy(&run.body)
    );
    // The certificate the original would have confused with it gets nowhere.
    let (ncert, nkey) = (pki.read("neighbour.crt"), pki.read("neighbour.key"));
    let r = request(port, (&ncert, &nkey), &ca, "/ping", PING).unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn a_perl_written_map_with_a_decimal_read_serial_is_refused_with_a_hint() {
    let f = Fixture::new("perl_map_hint");
    let Some(pki) = PerlPki::new(&f.path("perl-ca")) else {
        return;
    };
    pki.next_serial(0x10);
    pki.leaf("dispatcher", "ctrl-exec-dispatcher", 825);
    pki.leaf("agent", "web-01", 825);
    let mut agent = f.agent_files("web-01", &[], "");
    // What the Perl agent wrote for a dispatcher of serial 0x10.
    install_perl_agent_files(&agent, &pki, "agent", "a perl-ctl\n");
    let port = f.serve_unregistered(&mut agent);
    let (dcert, dkey) = (pki.read("dispatcher.crt"), pki.read("dispatcher.key"));
    let r = request(port, (&dcert, &dkey), &pki.read("ca.crt"), "/ping", PING).unwrap();
    assert_eq!(r.status, 403);
    eventually("the refusal's hint", Duration::from_secs(10), || {
        let log = agent.log_text();
        if log.contains("ACTION=serial-reject") && log.contains("change the entry to '10 perl-ctl'")
        {
            Ok(())
        } else {
            Err(log)
        }
    });
    let out = f.self_check(&agent);
    assert!(
        out.stdout.contains("Trust warning: entry 'a perl-ctl'")
            && out.stdout.contains("serial 0x10"),
        "{out}"
    );
    // Corrected by hand as the hint says, it works after a reload.
    fs::write(
        agent.trusted_map(),
        format!("{TRUSTED_MAP_HEADER}10 perl-ctl\n"),
    )
    .unwrap();
    f.reload(&agent);
    let r = request(port, (&dcert, &dkey), &pki.read("ca.crt"), "/ping", PING).unwrap();
    assert_eq!(r.status, 200);
}
