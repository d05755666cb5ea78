//! Connection floods against every listener: stalled peers (silent TCP,
//! half a TLS handshake, a handshake then half a request), from one IP and
//! from many, more of them than the listener has slots; a legitimate
//! request still succeeds. Also the rate limiter: a trusted dispatcher's
//! bursts, bare connects and a blocked IP shared with the dispatcher.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, get, post, ClientCert, Fixture};
use ctrl_exec::net::tls;
use ctrl_exec::pki;

/// The first bytes of a TLS ClientHello record, and no more.
const HALF_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01];

/// Half an HTTP request head.
const HALF_REQUEST: &[u8] = b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le";

/// Source address number `i`: 127.0.0.`first`, `first`+1, ... cycling over
/// 50 addresses, so a flood comes from one IP and from many at once.
fn source(first: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, first + (i % 50) as u8)
}

/// A TCP connection to 127.0.0.1:`port` from `src`.
fn connect_from(src: Ipv4Addr, port: u16) -> TcpStream {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    bind(&fd, &SocketAddrV4::new(src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
    connect(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("connect from {src} to {port}: {e}"));
    TcpStream::from(fd)
}

/// What a stalled peer holds open.
enum Stalled {
    Tcp(#[allow(dead_code)] TcpStream),
    Tls(#[allow(dead_code)] Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// `n` connections of each stalled kind to `port` from sources starting at
/// 127.0.0.`first`: silent, half a ClientHello, then (with `tls`) a full
/// handshake followed by half a request, else half a request in the clear.
/// The handshaken ones come last: when they are done, the listener has
/// accepted every earlier one.
fn stall(port: u16, n: usize, first: u8, tls: Option<Arc<rustls::ClientConfig>>) -> Vec<Stalled> {
    let mut held = Vec::with_capacity(3 * n);
    for i in 0..n {
        held.push(Stalled::Tcp(connect_from(source(first, i), port)));
    }
    for i in 0..n {
        let mut s = connect_from(source(first, i + 7), port);
        s.write_all(HALF_CLIENT_HELLO).expect("half hello");
        held.push(Stalled::Tcp(s));
    }
    for i in 0..n {
        let mut s = connect_from(source(first, i + 13), port);
        match &tls {
            None => {
                s.write_all(HALF_REQUEST).expect("half request");
                held.push(Stalled::Tcp(s));
            }
            Some(cfg) => {
                let conn =
                    rustls::ClientConnection::new(cfg.clone(), tls::server_name("127.0.0.1"))
                        .expect("tls client");
                let mut t = rustls::StreamOwned::new(conn, s);
                // Writing drives the handshake to its end first; a stream
                // shed meanwhile may fail here, which is fine.
                let _ = t.write_all(HALF_REQUEST).and_then(|_| t.flush());
                held.push(Stalled::Tls(Box::new(t)));
            }
        }
    }
    held
}

/// A client certificate from the fixture's CA whose serial no agent trusts:
/// it completes the agent's handshake and proves nothing.
fn untrusted_client(f: &Fixture) -> Arc<rustls::ClientConfig> {
    let (cert, key) = pki::issue_key_and_cert(&f.ca_pem(), &f.ca_key_pem(), "stranger", 1).unwrap();
    let id = tls::Identity::from_pem(&cert, &key).unwrap();
    let ca = pki::pem_certs(&f.ca_pem()).remove(0);
    tls::mtls_client(&id, &ca).unwrap()
}

const SLOTS: usize = 4;

#[test]
fn agent_serves_the_dispatcher_behind_a_flood_of_stalled_connections() {
    let f = Fixture::new("flood_agent");
    f.dispatcher("");
    let a = f.agent(
        "web1",
        &[("hello", "echo hello from web1")],
        &format!("max_children = {SLOTS}"),
    );
    let held = stall(a.port, SLOTS + 4, 1, Some(untrusted_client(&f)));
    let out = f.ced_ok(&["run", "web1", "hello"]);
    assert!(out.stdout.contains("hello from web1"), "{out}");
    eventually(
        "the agent to log sheds",
        Duration::from_secs(10),
        || match a.log_count("conn-shed") {
            0 => Err(a.log_text()),
            _ => Ok(()),
        },
    );
    drop(held);
    f.ced_ok(&["run", "web1", "hello"]);
}

#[test]
fn an_agent_with_every_slot_busy_says_it_is_overloaded() {
    let f = Fixture::new("flood_overload");
    f.dispatcher("");
    let a = f.agent(
        "web1",
        &[
            (
                "hold",
                r#"touch "$1.started"; n=0; while [ ! -e "$1.release" ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; echo released"#,
            ),
            ("hello", "echo hello from web1"),
        ],
        "max_children = 1",
    );
    let flag = f.path("hold");
    let flag = flag.to_str().unwrap();
    std::thread::scope(|s| {
        let holder = s.spawn(|| f.ced(&["run", "web1", "hold", "--", flag]));
        eventually("the holding run to start", Duration::from_secs(20), || {
            match std::path::Path::new(&format!("{flag}.started")).exists() {
                true => Ok(()),
                false => Err(a.log_text()),
            }
        });
        let out = f.ced(&["run", "web1", "hello"]);
        assert!(!out.status.success(), "{out}");
        assert!(out.to_string().contains("agent overloaded"), "{out}");
        assert!(!out.to_string().contains("handshake"), "{out}");
        std::fs::write(format!("{flag}.release"), "").unwrap();
        let held = holder.join().unwrap();
        assert!(held.status.success(), "{held}");
        assert!(held.stdout.contains("released"), "{held}");
    });
    f.ced_ok(&["run", "web1", "hello"]);
}

#[test]
fn pairing_listener_queues_a_request_behind_a_flood_of_stalled_connections() {
    let f = Fixture::new("flood_pairing");
    f.dispatcher("");
    let port = f.pairing_port();
    let client = tls::pairing_client(Arc::new(tls::PairingVerifier::new(None))).unwrap();
    // More than the 64 pairing slots of each kind; not from 127.0.0.1,
    // whose pairing rate limit the real request below must not share.
    let held = stall(port, 70, 2, Some(client));
    let mut a = f.agent_files("web1", &[("hello", "echo hello from web1")], "");
    f.pair(&a);
    drop(held);
    f.serve(&mut a);
    f.ced_ok(&["run", "web1", "hello"]);
}

#[test]
fn api_answers_behind_a_flood_of_stalled_connections() {
    let f = Fixture::new("flood_api");
    f.dispatcher(&format!(
        "api_max_children = {SLOTS}\napi_auth_default = allow"
    ));
    f.agent("web1", &[("hello", "echo hello from web1")], "");
    let port = f.api();
    let held = stall(port, SLOTS + 4, 1, None);
    let health = get(port, "/health");
    assert_eq!(health.status, 200, "{health}");
    let run = post(port, "/run", r#"{"hosts":["web1"],"script":"hello"}"#);
    assert_eq!(run.status, 200, "{run}");
    assert!(run.text().contains("hello from web1"), "{run}");
    drop(held);
    assert_eq!(get(port, "/health").status, 200);
}

/// The agent's default rate limits (the fixture turns them off otherwise).
const DEFAULT_LIMITS: &str = "rate_limit_disable = 0";

#[test]
fn dispatcher_bursts_never_trip_the_rate_limiter() {
    let f = Arc::new(Fixture::new("flood_burst"));
    f.dispatcher("");
    // One script per loop: the dispatcher locks host and script per run.
    let names: Vec<String> = (0..16).map(|i| format!("hello{i}")).collect();
    let scripts: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "echo hi")).collect();
    let a = f.agent("web1", &scripts, DEFAULT_LIMITS);
    let loops: Vec<_> = (0..16)
        .map(|i| {
            let f = f.clone();
            let script = format!("hello{i}");
            // 200 runs in all: 8 loops of 13 and 8 of 12.
            let runs = if i < 8 { 13 } else { 12 };
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                for _ in 0..runs {
                    let out = f.ced(&["run", "web1", &script]);
                    if out.code() != Some(0) {
                        failed.push(out.to_string());
                    }
                }
                failed
            })
        })
        .collect();
    let failed: Vec<String> = loops.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        failed.is_empty(),
        "{} of 200 runs failed, the first:\n{}\nagent log:\n{}",
        failed.len(),
        failed[0],
        a.log_text()
    );
    assert_eq!(a.log_count("rate-block"), 0, "{}", a.log_text());
}

#[test]
fn bare_connects_do_not_block_an_ip() {
    let f = Fixture::new("flood_bare");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], DEFAULT_LIMITS);
    for _ in 0..5 {
        drop(TcpStream::connect(("127.0.0.1", a.port)).unwrap());
    }
    // A client without certificate is a real probe failure, unlike the
    // connects above; it still may not be blocked after one.
    let _ = f.agent_request(a.port, &ClientCert::None, "POST", "/ping", Some(b"{}"));
    let out = f.ced_ok(&["run", "web1", "hello"]);
    assert!(out.stdout.contains("hello from web1"), "{out}");
    eventually(
        "the agent to log the probe",
        Duration::from_secs(10),
        || match a.log_count("tls-failure") {
            1 => Ok(()),
            _ => Err(a.log_text()),
        },
    );
    assert_eq!(a.log_count("rate-block"), 0, "{}", a.log_text());
}

#[test]
fn a_blocked_ip_still_lets_the_trusted_dispatcher_through() {
    let f = Fixture::new("flood_probation");
    f.dispatcher("");
    let a = f.agent("web1", &[("hello", "echo hello from web1")], DEFAULT_LIMITS);
    // Three certificate-less handshakes from the dispatcher's own IP trip
    // the probe rule (3 in 600 s).
    for _ in 0..3 {
        let _ = f.agent_request(a.port, &ClientCert::None, "POST", "/ping", Some(b"{}"));
    }
    eventually("the block", Duration::from_secs(10), || {
        match a.log_count("rate-block") {
            1 => Ok(()),
            _ => Err(a.log_text()),
        }
    });
    let out = f.ced_ok(&["run", "web1", "hello"]);
    assert!(out.stdout.contains("hello from web1"), "{out}");
    // The blocked peer itself gets nothing.
    let r = f.agent_request(a.port, &ClientCert::None, "POST", "/ping", Some(b"{}"));
    assert!(r.is_err(), "a blocked client got a reply");
}
