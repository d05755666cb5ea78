//! Pairing through the real listener: approve, deny, the pairing code, a
//! wrong CA pin and an unusable agent name; abuse of the pairing port (a
//! queue held by closed connections or by one address, refusals' statuses
//! and log tokens) and of the decisions (replacing a registered agent, two
//! approvals of one request).

mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::json;
use common::{eventually, jstr, Agent, Fixture};
use ctrl_exec::net::client::ClientStream;
use ctrl_exec::net::http::{Conn, Response};
use ctrl_exec::net::limits::Limits;
use ctrl_exec::net::tls;
use ctrl_exec::pki;
use ctrl_exec::proto::{PairAck, PairRequest, QueueEntry};

/// The files pairing writes on the agent; none may exist after a refusal.
fn stored_files(a: &Agent) -> Vec<String> {
    ["agent.crt", "agent.key", "ca.crt", "ctrl-exec-dispatchers"]
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

// ------------------------------------------------------------------------------------------
// Abuse of the pairing port and of the decision commands, through raw TLS
// requests to a real listener.

/// How long a test waits for the listener to notice something.
const NOTICE: Duration = Duration::from_secs(15);

/// Starts a foreground `ced pairing-mode` (stderr, so its log lines, in
/// `pairing.log`) and returns its port.
fn foreground_listener(f: &Fixture) -> u16 {
    let mut cmd = f.cmd("ced");
    cmd.arg("--config")
        .arg(&f.conf)
        .args(["pairing-mode", "--port", "0", "--timeout", "300"]);
    let (_, port) = f.daemon("pairing-mode", cmd, &f.path("pairing.log"), "on port ");
    port.parse().expect("pairing port")
}

/// A TLS connection to the pairing port on 127.0.0.1 from source address
/// `from` (any 127.x address: the socket is bound before it connects).
fn connect_from(port: u16, from: [u8; 4]) -> Conn<ClientStream> {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    rustix::net::bind(&fd, &SocketAddr::from((from, 0))).expect("bind client to source address");
    rustix::net::connect(&fd, &SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("connect to pairing port");
    let tcp = smol::Async::new(std::net::TcpStream::from(fd)).expect("async socket");
    let config = tls::pairing_client(Arc::new(tls::PairingVerifier::new(None))).unwrap();
    let stream = smol::block_on(async {
        futures_rustls::TlsConnector::from(config)
            .connect(tls::server_name("127.0.0.1"), tcp)
            .await
    })
    .expect("TLS handshake with the pairing listener");
    Conn::new(stream)
}

/// Sends `raw` and reads the first answer.
fn send(conn: &mut Conn<ClientStream>, raw: &[u8]) -> Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    smol::block_on(async {
        conn.write_raw(raw, deadline).await.expect("send request");
        conn.read_response(&Limits::default(), deadline)
            .await
            .expect("read the listener's answer")
    })
}

/// A `POST /pair` as the Perl agent writes it, plus `extra` header lines.
fn pair_bytes(body: &str, extra: &[String]) -> Vec<u8> {
    let mut head = String::from("POST /pair HTTP/1.0\r\nContent-Type: application/json\r\n");
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// A request body for `hostname` with `csr` (queueing does not parse the CSR).
fn pair_body(hostname: &str, csr: &str) -> String {
    let req = PairRequest {
        hostname: hostname.into(),
        csr: csr.into(),
        nonce: "0123456789abcdef0123456789abcdef".into(),
        ..PairRequest::default()
    };
    json::to_string(&req.to_json())
}

/// A fresh key and a CSR for `name` (the key PEM, the CSR PEM).
fn key_and_csr(name: &str) -> (String, String) {
    let key = pki::generate_key_pem().expect("generate key");
    let csr = pki::make_csr(&key, name).expect("make CSR");
    (key, csr)
}

/// The `reqid` of a pending acknowledgement; fails the test otherwise.
fn pending_id(r: &Response) -> String {
    let ack = json::parse_object(&r.body).expect("JSON acknowledgement");
    match PairAck::from_json(&ack) {
        PairAck::Pending { reqid } if r.status == 200 => reqid,
        other => panic!(
            "expected a pending ack, got {} {other:?}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
    }
}

/// The `reason` of an error answer, after checking the body's shape.
fn error_reason(r: &Response) -> String {
    let body = json::parse_object(&r.body).unwrap_or_else(|| {
        panic!(
            "error body is not JSON: {:?}",
            String::from_utf8_lossy(&r.body)
        )
    });
    assert_eq!(json::get_str(&body, "status"), Some("error"), "{body:?}");
    json::get_str(&body, "reason")
        .expect("error body has a reason")
        .to_string()
}

/// Waits until the listener's log has a `pair-reject` line with `REASON=token`.
fn expect_reject_logged(f: &Fixture, token: &str) {
    let log = f.path("pairing.log");
    eventually(&format!("pair-reject REASON={token}"), NOTICE, || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("ACTION=pair-reject") && l.contains(&format!(" REASON={token}")))
        {
            Ok(())
        } else {
            Err(text)
        }
    });
}

#[test]
fn request_leaves_the_queue_when_its_connection_closes() {
    let f = Fixture::new("pair_close");
    f.dispatcher("");
    let port = foreground_listener(&f);
    let mut conn = connect_from(port, [127, 0, 0, 1]);
    let id = pending_id(&send(&mut conn, &pair_bytes(&pair_body("gone1", "x"), &[])));
    let queued = f.path(&format!("dispatcher/state/pairing/{id}.json"));
    assert!(
        pending_rows(&f).iter().any(|r| r.0 == id),
        "the request is listed while its connection is open"
    );

    drop(conn);
    eventually("the closed request to leave the queue", NOTICE, || {
        let rows = pending_rows(&f);
        if rows.iter().any(|r| r.0 == id) || queued.exists() {
            Err(format!(
                "still listed: {rows:?}; file exists: {}",
                queued.exists()
            ))
        } else {
            Ok(())
        }
    });
    let out = f.ced(&["approve", &id]);
    assert!(
        !out.status.success(),
        "a withdrawn request cannot be approved\n{out}"
    );
    assert!(out.stderr.contains("No pending request"), "{out}");
}

#[test]
fn one_ip_cannot_fill_the_queue_and_another_ip_still_pairs() {
    let f = Fixture::new("pair_share");
    f.dispatcher("");
    let port = foreground_listener(&f);
    let body = pair_body("flood1", "x");
    // The share (2) from one address: both queued, connections held.
    let mut held: Vec<Conn<ClientStream>> = Vec::new();
    for _ in 0..2 {
        let mut c = connect_from(port, [127, 0, 0, 1]);
        pending_id(&send(&mut c, &pair_bytes(&body, &[])));
        held.push(c);
    }
    let mut third = connect_from(port, [127, 0, 0, 1]);
    let refused = send(&mut third, &pair_bytes(&body, &[]));
    assert_eq!(
        refused.status,
        429,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(
        error_reason(&refused),
        "too many pending requests from this address"
    );
    expect_reject_logged(&f, "queue-share");

    let mut other = connect_from(port, [127, 0, 0, 2]);
    let id = pending_id(&send(&mut other, &pair_bytes(&pair_body("web7", "x"), &[])));
    let rows = pending_rows(&f);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().any(|r| r.0 == id && r.1 == "web7"), "{rows:?}");
}

#[test]
fn refusals_carry_their_status_the_error_body_and_the_reference_log_tokens() {
    let f = Fixture::new("pair_refusals");
    f.dispatcher("pairing_max_queue = 3");
    let port = foreground_listener(&f);
    let fillers =
        |n: usize| -> Vec<String> { (0..n).map(|i| format!("X-Filler-{i}: {i}")).collect() };
    let body = pair_body("edge1", "x");
    let mut held = Vec::new();

    // 32 header lines (Content-Type, Content-Length and 30 fillers): accepted.
    let mut at = connect_from(port, [127, 0, 0, 1]);
    pending_id(&send(&mut at, &pair_bytes(&body, &fillers(30))));
    held.push(at);
    // 33: 431 with the error body.
    let mut over = connect_from(port, [127, 0, 0, 1]);
    let r = send(&mut over, &pair_bytes(&body, &fillers(31)));
    assert_eq!(r.status, 431, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_reason(&r), "request headers too large");
    expect_reject_logged(&f, "headers-too-large");

    // A body of exactly 64 KiB: accepted.
    let pad = 65_536 - pair_body("edge1", "").len();
    let full = pair_body("edge1", &"x".repeat(pad));
    assert_eq!(full.len(), 65_536);
    let mut at = connect_from(port, [127, 0, 0, 1]);
    pending_id(&send(&mut at, &pair_bytes(&full, &[])));
    held.push(at);
    // One byte more, declared: 413 before the body is read, the original's text.
    let mut over = connect_from(port, [127, 0, 0, 3]);
    let r = send(
        &mut over,
        b"POST /pair HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 65537\r\n\r\n",
    );
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_reason(&r), "request too large");
    expect_reject_logged(&f, "body-too-large");

    // Not JSON: 400, the original's text.
    let mut bad = connect_from(port, [127, 0, 0, 3]);
    let r = send(&mut bad, &pair_bytes("{not json", &[]));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_reason(&r), "invalid request");
    expect_reject_logged(&f, "invalid-request");

    // The queue (3) filled from a second address; the next is 503.
    let mut last = connect_from(port, [127, 0, 0, 2]);
    pending_id(&send(&mut last, &pair_bytes(&body, &[])));
    held.push(last);
    let mut full_q = connect_from(port, [127, 0, 0, 3]);
    let r = send(&mut full_q, &pair_bytes(&body, &[]));
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_reason(&r), "pairing queue full");
    expect_reject_logged(&f, "queue-full");

    // Every REASON is a bare token operators can match, never free text.
    let log = fs::read_to_string(f.path("pairing.log")).unwrap();
    for line in log.lines().filter(|l| l.contains("ACTION=pair-reject")) {
        let reason = line
            .split(" REASON=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("no REASON in {line:?}"));
        assert!(
            !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "REASON is not a token: {line:?}"
        );
    }
}

#[test]
fn second_pairing_of_a_registered_name_needs_replace() {
    let f = Fixture::new("pair_replace");
    f.dispatcher("");
    let a = f.agent_files("web1", &[], "");
    f.pair(&a);
    let record = f.registry_dir().join("web1.json");
    let before = fs::read(&record).unwrap();

    let (key, csr) = key_and_csr("web1");
    let mut conn = connect_from(f.pairing_port(), [127, 0, 0, 1]);
    let id = pending_id(&send(&mut conn, &pair_bytes(&pair_body("web1", &csr), &[])));

    let listed = f.ced_ok(&["list-requests"]);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("request {id} not listed\n{listed}"));
    assert!(
        lines
            .get(row + 1)
            .is_some_and(|l| l.trim_start().starts_with('!') && l.contains("ALREADY REGISTERED")),
        "the row of a registered name is marked\n{listed}"
    );

    let refused = f.ced(&["approve", &id]);
    assert!(!refused.status.success(), "{refused}");
    assert!(
        refused.stderr.contains("already registered")
            && refused.stderr.contains(&format!("approve {id} --replace")),
        "the refusal says what to do\n{refused}"
    );
    assert_eq!(
        fs::read(&record).unwrap(),
        before,
        "a refused approval leaves the registered agent alone"
    );

    let replaced = f.ced_ok(&["approve", &id, "--replace"]);
    assert!(replaced.stdout.contains("Replaced:"), "{replaced}");
    let after = json::parse_object(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(
        json::get_str(&after, "pubkey_sha256"),
        Some(pki::key_spki_sha256(&key).unwrap().as_str()),
        "the record now pins the new key"
    );
    let decision = smol::block_on(
        conn.read_response(&Limits::default(), Instant::now() + Duration::from_secs(30)),
    )
    .expect("the approval is delivered on the held connection");
    let decision = json::parse_object(&decision.body).unwrap();
    assert_eq!(json::get_str(&decision, "status"), Some("approved"));
}

#[test]
fn concurrent_approves_of_one_request_sign_once() {
    let f = Fixture::new("pair_race");
    f.dispatcher("");
    // The request is queued by hand, with no listener to deliver (and
    // remove) it, so every approve but one must meet the first one's claim
    // or its decision.
    let (_, csr) = key_and_csr("web2");
    let id = "00112233aabbccdd";
    let entry = QueueEntry {
        id: id.into(),
        hostname: "web2".into(),
        ip: "127.0.0.1".into(),
        source_ip: "127.0.0.1".into(),
        code: pki::pairing_code(csr.as_bytes()),
        csr,
        nonce: "0123456789abcdef0123456789abcdef".into(),
        received: "2026-01-01T00:00:00Z".into(),
        ..QueueEntry::default()
    };
    let dir = f.path("dispatcher/state/pairing");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(format!("{id}.json")),
        json::to_string(&entry.to_json()),
    )
    .unwrap();

    const RACERS: usize = 4;
    let outs: Vec<_> = std::thread::scope(|s| {
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| s.spawn(|| f.ced(&["approve", id])))
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let (won, lost): (Vec<_>, Vec<_>) = outs.iter().partition(|o| o.status.success());
    let all: Vec<String> = outs.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one approve signs:\n{}",
        all.join("\n")
    );
    for o in lost {
        assert!(
            o.stderr.contains("already being approved or denied")
                || o.stderr.contains("already been approved"),
            "the loser is told the request is taken\n{o}"
        );
    }
    assert!(dir.join(format!("{id}.approved")).exists());
    let denied = f.ced(&["deny", id]);
    assert!(
        !denied.status.success() && denied.stderr.contains("already been approved"),
        "a decided request cannot be denied\n{denied}"
    );
}

#[test]
fn json_listings_are_json_when_empty_too() {
    let f = Fixture::new("pair_json_empty");
    f.dispatcher("");
    for mode in ["list-agents", "list-requests"] {
        let out = f.ced_ok(&[mode, "--json"]);
        assert_eq!(out.stdout.trim(), "[]", "{mode}: {out}");
    }
    let out = f.ced_ok(&["list-locks", "--json"]);
    assert_eq!(out.stdout.trim(), r#"{"locks":[],"ok":1}"#, "{out}");
    f.agent("web1", &[], "");
    let out = f.ced_ok(&["list-agents", "--json", "--tags", "env=none"]);
    assert_eq!(out.stdout.trim(), "[]", "{out}");
}

#[test]
fn approve_takes_many_ids_or_a_codes_file_checked_against_each_csr() {
    let f = Fixture::new("pair_bulk");
    f.dispatcher("");
    let fp = f.ca_fingerprint();
    let agents: Vec<_> = ["bulk1", "bulk2", "bulk3", "bulk4"]
        .iter()
        .map(|n| f.agent_files(n, &[], ""))
        .collect();
    // One address holds at most two pending requests: two at a time.
    let request = |a: &Agent| {
        let out = f.run(f.request_pairing_cmd(
            a,
            &["--ca-fingerprint", &fp, "--background", "--timeout", "60"],
        ));
        f.expect_success(&out);
        let reqid = out.stdout.trim().to_string();
        assert_eq!(reqid.len(), 16, "stdout is the request id alone: {out}");
        // stderr carries `<hostname> <code>`, the line --codes-file takes.
        let line = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("Pairing code: "))
            .unwrap_or_else(|| panic!("no pairing code on stderr: {out}"))
            .to_string();
        assert!(line.starts_with(&format!("{} ", a.name)), "{out}");
        (reqid, line)
    };
    let mut requests: Vec<(String, String)> = agents[..2].iter().map(request).collect();

    let usage = f.ced(&[
        "approve",
        &requests[0].0,
        &requests[1].0,
        "--ip",
        "10.0.0.1",
    ]);
    assert_eq!(usage.code(), Some(64), "{usage}");
    let both = f.ced_ok(&["approve", &requests[0].0, &requests[1].0]);
    assert!(
        both.stdout.contains("2 approved, 0 not approved."),
        "{both}"
    );
    requests.extend(agents[2..].iter().map(request));

    // One good line, one whose code is not the CSR's, one unknown host.
    let (name4, code4) = requests[3].1.split_once(' ').unwrap();
    let wrong = format!("{:06}", (code4.parse::<u32>().unwrap() + 1) % 1_000_000);
    let codes = f.path("codes.txt");
    fs::write(
        &codes,
        format!(
            "# collected from the agents\n{}\n{name4} {wrong}\nnohost 123456\n",
            requests[2].1
        ),
    )
    .unwrap();
    let bulk = f.ced(&["approve", "--codes-file", codes.to_str().unwrap()]);
    assert_eq!(bulk.code(), Some(1), "{bulk}");
    assert!(
        bulk.stdout.contains("1 approved, 2 not approved."),
        "{bulk}"
    );
    assert!(
        bulk.stderr.contains(&format!(
            "Not approved '{name4}': no pending request with code {wrong}"
        )),
        "{bulk}"
    );
    assert!(
        bulk.stderr
            .contains("Not approved 'nohost': no pending request from that host"),
        "{bulk}"
    );
    let pending = f.ced_ok(&["list-requests", "--json"]);
    assert!(
        pending.stdout.contains(&requests[3].0),
        "the mismatched request stays pending: {pending}"
    );
    assert!(!pending.stdout.contains(&requests[2].0), "{pending}");
    for a in &agents[..3] {
        let map = a.trusted_map();
        common::eventually(
            "the approved agent's trusted map",
            Duration::from_secs(30),
            || match fs::read_to_string(&map) {
                Ok(t) if t.contains("it-dispatcher") => Ok(()),
                other => Err(format!("{}: {other:?}", map.display())),
            },
        );
    }
    let mixed = f.ced(&[
        "approve",
        "--codes-file",
        codes.to_str().unwrap(),
        &requests[3].0,
    ]);
    assert_eq!(mixed.code(), Some(64), "{mixed}");
}
