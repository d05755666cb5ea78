//! Hostile bodies: memory stays bounded whatever the body's shape, and a
//! refused body's answer reaches a client that is still sending it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::{http_raw, jstr, port_of_addr, vm_hwm_kib, Fixture};

/// A body of `len` bytes that would be a huge value tree: an object whose
/// unknown key holds a wide array of small arrays.
fn wide_body(len: usize) -> Vec<u8> {
    let mut body = br#"{"junk":["#.to_vec();
    while body.len() + 8 < len {
        body.extend_from_slice(b"[[]],");
    }
    body.extend_from_slice(b"[]]}");
    body
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[test]
fn api_memory_stays_bounded_under_concurrent_wide_bodies() {
    let f = Fixture::new("hostile_api_memory");
    f.dispatcher("api_auth_default = allow");
    let mut cmd = f.cmd("ctrl-exec-api");
    cmd.arg("--config").arg(&f.conf);
    let (pid, addr) = f.daemon(
        "api",
        cmd,
        &f.path("api.log"),
        "ctrl-exec API listening on ",
    );
    let port = port_of_addr(&addr);
    let body = wide_body(1 << 20);
    let before = vm_hwm_kib(pid);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let req = post("/run", &body);
            thread::spawn(move || http_raw(port, &req))
        })
        .collect();
    for c in clients {
        let r = c.join().expect("client thread");
        // The unknown key is skipped; what is missing is the hosts list.
        assert_eq!(r.status, 400, "{r}");
        assert!(r.text().contains("hosts"), "{r}");
    }
    let grown_kib = vm_hwm_kib(pid).saturating_sub(before);
    // 16 bodies of 1 MiB are 16 MiB of buffers; as value trees they were
    // hundreds of megabytes.
    assert!(
        grown_kib < 48 * 1024,
        "peak RSS grew by {grown_kib} KiB for 16 concurrent 1 MiB bodies"
    );
    let health = http_raw(port, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(health.status, 200, "{health}");
}

#[test]
fn oversized_body_gets_its_413_while_the_client_is_still_sending() {
    let f = Fixture::new("hostile_413");
    f.dispatcher("api_auth_default = allow");
    let port = f.api();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(b"POST /run HTTP/1.0\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n")
        .expect("head");
    // Part of the refused body: the server must read it away, not reset.
    let chunk = vec![b'x'; 256 * 1024];
    let sent = s
        .write_all(&chunk)
        .and_then(|_| s.shutdown(Shutdown::Write));
    let mut reply = Vec::new();
    let read = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.0 413"),
        "sent: {sent:?}, read: {read:?}, reply: {text:?}"
    );
    assert!(read.is_ok(), "the answer ended in a reset: {read:?}");
    let health = common::get(port, "/health");
    assert_eq!(jstr(&health.json(), "version"), Some(ctrl_exec::VERSION));
}
