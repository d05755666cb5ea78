//! Round trips of the example messages in the reference
//! (`reference/protocol.md` sections 3 and 5, `surface.md` 3.3 and 4.x)
//! through the types, and a check that this module names no role.

use std::time::Duration;

use super::json::{parse_object, to_string, Fields};
use super::*;
use miniserde::json::Value;

/// The field a read refused.
fn refused(e: ReadError) -> &'static str {
    match e {
        ReadError::Field(f) => f.field,
        ReadError::Json(j) => panic!("not a field error: {j}"),
    }
}

/// An object back to the bytes a reader sees.
fn bytes(o: &miniserde::json::Object) -> Vec<u8> {
    to_string(&Value::Object(o.clone())).into_bytes()
}

fn obj(text: &str) -> miniserde::json::Object {
    parse_object(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Parses `text`, converts it with `from`, writes it back with `to`, and
/// checks the result equals the input as JSON (key order aside).
fn round_trip<T>(
    text: &str,
    from: impl Fn(&miniserde::json::Object) -> T,
    to: impl Fn(&T) -> Value,
) {
    let typed = from(&obj(text));
    let back = to_string(&to(&typed));
    assert_eq!(
        to_string(&Value::Object(obj(&back))),
        to_string(&Value::Object(obj(text))),
        "round trip of {text}"
    );
}

#[test]
fn run_request_of_protocol_3_1() {
    let text = r#"{ "script": "backup-mysql", "args": ["--db","myapp"], "reqid": "a3f9b2c1d4e5f607",
  "username": "alice", "token": "tok", "async": true }"#;
    round_trip(
        text,
        |o| RunRequest::read(&bytes(o)).unwrap(),
        RunRequest::to_json,
    );
    let r = RunRequest::read(text.as_bytes()).unwrap();
    assert!(r.detach);
    assert_eq!(r.args, vec!["--db", "myapp"]);
    // Every field is optional.
    assert_eq!(
        RunRequest::read("{}".as_bytes()).unwrap(),
        RunRequest::default()
    );
}

#[test]
fn run_request_refuses_each_wrong_type_by_name() {
    for (field, bad) in [
        ("script", "1"),
        ("args", r#""x""#),
        ("args", "[1]"),
        ("reqid", "{}"),
        ("username", "{}"),
        ("token", "[]"),
        ("async", r#""false""#),
        ("async", "{}"),
        ("async", "2"),
    ] {
        let text = format!(r#"{{"{field}":{bad}}}"#);
        let e = RunRequest::read(text.as_bytes()).unwrap_err();
        assert_eq!(refused(e), field, "{field}={bad}");
    }
    for (text, detach) in [
        (r#"{"async":false}"#, false),
        (r#"{"async":1}"#, true),
        (r#"{"async":0}"#, false),
        (r#"{"async":null}"#, false),
    ] {
        assert_eq!(
            RunRequest::read(text.as_bytes()).unwrap().detach,
            detach,
            "{text}"
        );
    }
}

#[test]
fn run_replies_of_protocol_3_1() {
    let ran = RunReply::Ran {
        script: "check-disk".into(),
        reqid: "r1".into(),
        output: Output {
            exit: 0,
            stdout: "ok\n".into(),
            ..Output::default()
        },
    };
    let o = match ran.to_json() {
        Value::Object(o) => o,
        _ => unreachable!(),
    };
    let f = Fields(&o);
    assert_eq!(f.int("exit").unwrap(), Some(0));
    assert_eq!(f.str("stdout").unwrap(), Some("ok\n"));
    assert_eq!(f.str("script").unwrap(), Some("check-disk"));
    assert_eq!(Output::read(f).unwrap().stdout, "ok\n");
    assert_eq!(
        to_string(&RunReply::InvalidJson.to_json()),
        r#"{"error":"invalid JSON","exit":-1}"#
    );
    let refused = RunReply::Refused {
        script: "x".into(),
        reqid: "r".into(),
        error: "script not permitted".into(),
    };
    assert_eq!(
        to_string(&refused.to_json()),
        r#"{"error":"script not permitted","exit":-1,"reqid":"r","script":"x"}"#
    );
    let accepted = RunReply::Accepted {
        script: "x".into(),
        reqid: "r".into(),
    };
    assert_eq!(accepted.status(), 202);
    assert_eq!(
        to_string(&accepted.to_json()),
        r#"{"reqid":"r","script":"x","status":"accepted"}"#
    );
    let busy = RunReply::Busy {
        script: "x".into(),
        reqid: "r".into(),
    };
    assert_eq!(busy.status(), 409);
    assert_eq!(
        to_string(&busy.to_json()),
        r#"{"error":"script already running","reqid":"r","script":"x","status":"busy"}"#
    );
}

#[test]
fn ping_of_protocol_3_2() {
    round_trip(
        r#"{"reqid":"abc"}"#,
        |o| PingRequest::read(&bytes(o)).unwrap(),
        PingRequest::to_json,
    );
    let reply = r#"{"status":"ok","host":"web-01.example.com","version":"0.12.3","expiry":"Jun  7 16:28:00 2028 GMT","staged":false,"reqid":"abc"}"#;
    round_trip(
        reply,
        |o| PingReply::from_json(o).unwrap(),
        PingReply::to_json,
    );
}

#[test]
fn renew_of_protocol_3_6() {
    round_trip(
        r#"{"reqid":"abc"}"#,
        |o| RenewRequest::read(&bytes(o)).unwrap(),
        RenewRequest::to_json,
    );
    assert_eq!(
        RenewRequest::read(b"not json").unwrap(),
        RenewRequest::default()
    );
    let ok = r#"{"status":"ok","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMII\n-----END CERTIFICATE REQUEST-----\n","reqid":"abc"}"#;
    round_trip(
        ok,
        |o| RenewReply::from_json(o).unwrap(),
        RenewReply::to_json,
    );
    let err = r#"{"status":"error","error":"could not generate CSR"}"#;
    round_trip(
        err,
        |o| RenewReply::from_json(o).unwrap(),
        RenewReply::to_json,
    );
    assert_eq!(
        RenewReply::from_json(&obj(r#"{"status":"ok"}"#)).unwrap(),
        RenewReply::Error("status \"ok\" without an error".into()),
        "ok without a CSR is no CSR"
    );
}

#[test]
fn renew_complete_of_protocol_3_7() {
    let body = r#"{"cert":"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n","ca":"CA PEM","reqid":"abc"}"#;
    round_trip(
        body,
        |o| RenewComplete::read(&bytes(o)).unwrap(),
        RenewComplete::to_json,
    );
    let no_ca = RenewComplete::read(br#"{"cert":"x"}"#).unwrap();
    assert_eq!((no_ca.ca, no_ca.reqid.as_str()), (None, ""));
    assert_eq!(
        refused(RenewComplete::read(br#"{"cert":1}"#).unwrap_err()),
        "cert"
    );
    assert_eq!(
        refused(RenewComplete::read(br#"{"cert":"x","ca":[]}"#).unwrap_err()),
        "ca"
    );
    let ok = r#"{"status":"ok","reqid":"abc","staged":true}"#;
    round_trip(
        ok,
        |o| RenewCompleteReply::from_json(o).unwrap(),
        RenewCompleteReply::to_json,
    );
    let err = r#"{"status":"error","error":"cert required"}"#;
    round_trip(
        err,
        |o| RenewCompleteReply::from_json(o).unwrap(),
        RenewCompleteReply::to_json,
    );
    // A 2xx that does not say it staged the certificate is not a success
    // (the original's controller counted it as one).
    assert!(matches!(
        RenewCompleteReply::from_json(&obj(r#"{"status":"ok","reqid":"abc"}"#)).unwrap(),
        RenewCompleteReply::Error(_)
    ));
}

#[test]
fn capabilities_of_protocol_3_3() {
    let text = r#"{ "status":"ok", "host":"web-01", "version":"0.12.3",
  "scripts":[ { "name":"check-disk", "path":"/opt/s/check-disk.sh",
                "executable":true, "profile":"default",
                "schema":{"type":"object"}, "schema_version":"2" },
              { "name":"plain", "path":"/opt/s/plain.sh", "executable":false, "profile":"default" } ],
  "tags":{ "env":"prod" } }"#;
    round_trip(
        text,
        |o| Capabilities::from_json(o).unwrap(),
        Capabilities::to_json,
    );
}

#[test]
fn job_records_of_protocol_3_4() {
    let running = r#"{"reqid":"r1","status":"running","script":"s","owner":"ctrl","started":"2026-01-01T00:00:00Z"}"#;
    round_trip(
        running,
        |o| JobRecord::from_json(o).unwrap(),
        JobRecord::to_json,
    );
    // A running record on disk carries the script's process group.
    let grouped = r#"{"reqid":"r1","status":"running","script":"s","owner":"ctrl","started":"2026-01-01T00:00:00Z","pgid":4242,"pgid_started":"0b7c5a9e-4f1e-4a53-9d3b-2f6f1c7d8e90/123456"}"#;
    round_trip(
        grouped,
        |o| JobRecord::from_json(o).unwrap(),
        JobRecord::to_json,
    );
    let job = JobRecord::from_json(&obj(grouped)).unwrap();
    assert_eq!(job.pgid, Some(4242));
    assert!(job.pgid_started.is_some_and(|s| s.ends_with("/123456")));
    assert_eq!(JobRecord::from_json(&obj(running)).unwrap().pgid, None);
    assert!(JobRecord::from_json(&obj(
        r#"{"reqid":"r1","status":"running","script":"s","owner":"ctrl","started":"a","pgid":"7"}"#
    ))
    .is_err());
    let done = r#"{"reqid":"r1","status":"done","script":"s","owner":"ctrl","started":"2026-01-01T00:00:00Z","finished":"2026-01-01T00:00:05Z","exit":3,"stdout":"o","stderr":"e","stdout_truncated":false,"stderr_truncated":false}"#;
    round_trip(
        done,
        |o| JobRecord::from_json(o).unwrap(),
        JobRecord::to_json,
    );
    // The original's done record has no truncation flags; it still reads.
    let perl = r#"{"reqid":"r1","status":"done","script":"s","owner":"ctrl","started":"a","finished":"b","exit":0,"stdout":"","stderr":""}"#;
    let job = JobRecord::from_json(&obj(perl)).unwrap();
    assert_eq!(job.output.unwrap().exit, 0);
    assert!(JobRecord::from_json(&obj(r#"{"status":"weird"}"#)).is_err());
}

#[test]
fn agent_error_bodies_of_protocol_3() {
    assert_eq!(
        to_string(&ErrorReply::SerialMismatch.to_json()),
        r#"{"error":"serial mismatch","status":"forbidden"}"#
    );
    assert_eq!(
        to_string(&ErrorReply::UnknownJob("r".into()).to_json()),
        r#"{"reqid":"r","status":"unknown"}"#
    );
}

#[test]
fn pairing_messages_of_protocol_5_2() {
    let request = r#"{"hostname":"web-01.example.com","csr":"-----BEGIN CERTIFICATE REQUEST-----\nX\n-----END CERTIFICATE REQUEST-----\n","nonce":"00112233445566778899aabbccddeeff","lookup_by":"ip","port":7443,"ip":"192.0.2.10"}"#;
    round_trip(
        request,
        |o| PairRequest::read(&bytes(o)).unwrap(),
        PairRequest::to_json,
    );
    // The Perl original sends its port as a JSON string.
    let perl = r#"{"hostname":"h","csr":"c","nonce":"n","port":"7450"}"#;
    assert_eq!(PairRequest::read(perl.as_bytes()).unwrap().port, Some(7450));
    let out_of_range = r#"{"hostname":"h","csr":"c","port":70000}"#;
    assert_eq!(
        PairRequest::read(out_of_range.as_bytes()).unwrap().port,
        None
    );
    assert!(PairRequest::read(r#"{"hostname":"h","csr":""}"#.as_bytes()).is_err());

    let ack = r#"{"status":"pending","reqid":"0123456789abcdef"}"#;
    round_trip(ack, PairAck::from_json, PairAck::to_json);
    round_trip(
        r#"{"status":"error","reason":"pairing queue full"}"#,
        PairAck::from_json,
        PairAck::to_json,
    );
    let approved = r#"{"status":"approved","cert":"C","ca":"A","nonce":"n","dispatcher_serial":"1f","dispatcher_id":"ctrl"}"#;
    round_trip(approved, PairDecision::from_json, PairDecision::to_json);
    round_trip(
        r#"{"status":"denied","reason":"approval timeout"}"#,
        PairDecision::from_json,
        PairDecision::to_json,
    );
}

#[test]
fn queue_entry_of_protocol_5_4() {
    let text = r#"{"id":"0123456789abcdef","hostname":"h","ip":"192.0.2.10","source_ip":"192.0.2.10","csr":"c","nonce":"n","lookup_by":"","port":7443,"received":"2026-01-01T00:00:00Z","code":"432319","reverse_dns":"","reverse_confirmed":0}"#;
    round_trip(text, QueueEntry::from_json, QueueEntry::to_json);
}

#[test]
fn registry_record_of_protocol_5_4() {
    let text = r#"{"hostname":"web-01","ip":"192.0.2.10","paired":"2026-01-01T00:00:00Z","expiry":"Jun  7 16:28:00 2028 GMT","reqid":"r","lookup_by":"ip","port":7443,"tags":{"env":"prod"},"dispatcher_serial":"1f","serial_status":"current","serial_broadcast":"","serial_confirmed":"","pubkey_sha256":""}"#;
    round_trip(text, AgentRecord::from_json, AgentRecord::to_json);
    // A Perl record: no pin, port as a string, unknown lookup_by.
    let perl = r#"{"hostname":"h","port":"7450","lookup_by":"dns"}"#;
    let r = AgentRecord::from_json(&obj(perl));
    assert_eq!((r.port, r.lookup_by), (7450, LookupBy::Hostname));
    assert_eq!(
        AgentRecord::from_json(&obj(r#"{"port":0}"#)).port,
        DEFAULT_AGENT_PORT
    );
}

#[test]
fn api_bodies_of_surface_3_3() {
    let run = RunBody::read(
        br#"{"hosts":["a","b:7450"],"script":"s","args":["x"],"username":"u","token":"t","async":true}"#,
    )
    .unwrap();
    assert_eq!(run.hosts, vec!["a", "b:7450"]);
    assert!(run.detach);
    for (field, text) in [
        ("hosts", r#"{"hosts":[]}"#),
        ("hosts", r#"{"hosts":"a"}"#),
        ("script", r#"{"hosts":["a"],"script":7}"#),
        ("args", r#"{"hosts":["a"],"args":"x"}"#),
        ("username", r#"{"hosts":["a"],"username":{}}"#),
        ("token", r#"{"hosts":["a"],"token":[]}"#),
        ("async", r#"{"hosts":["a"],"async":"false"}"#),
    ] {
        assert_eq!(
            refused(RunBody::read(text.as_bytes()).unwrap_err()),
            field,
            "{text}"
        );
    }
    assert_eq!(
        PingBody::read(br#"{"hosts":["a"],"token":1}"#)
            .map_err(refused)
            .unwrap_err(),
        "token"
    );
    assert!(DiscoveryBody::read(b"{}").unwrap().hosts.is_empty());
    assert_eq!(
        to_string(
            &Health {
                ok: true,
                version: "1".into()
            }
            .to_json()
        ),
        r#"{"ok":true,"version":"1"}"#
    );
    assert_eq!(
        to_string(&ErrorBody::new("not found", "no route for GET /x").to_json()),
        r#"{"detail":"no route for GET /x","error":"not found","ok":false}"#
    );
}

#[test]
fn run_records_of_surface_4_9() {
    let sync = r#"{"reqid":"r","script":"s","mode":"sync","hosts":["a"],"results":[{"host":"a","script":"s","reqid":"r","rtt":"3ms","exit":0,"stdout":"","stderr":"","stdout_truncated":false,"stderr_truncated":false}],"completed":5,"complete":true,"submitter":{"username":"u","source_ip":"127.0.0.1"}}"#;
    round_trip(
        sync,
        |o| RunRecord::from_json(o).unwrap(),
        |r| Value::Object(r.to_json(true)),
    );
    let asyn = r#"{"reqid":"r","script":"s","mode":"async","hosts":{"a":{"status":"accepted"},"b":{"status":"done","exit":1,"stdout":"","stderr":"x","stdout_truncated":false,"stderr_truncated":false},"c":{"status":"error","error":"refused"}},"created":5,"pending":["a"],"complete":false}"#;
    round_trip(
        asyn,
        |o| RunRecord::from_json(o).unwrap(),
        |r| Value::Object(r.to_json(true)),
    );
    let rec = RunRecord::from_json(&obj(asyn)).unwrap();
    assert!(!rec.complete());
    assert!(rec.any_failed());
    // The client's view never carries the submitter.
    let shown = RunRecord::from_json(&obj(sync)).unwrap().to_json(false);
    assert!(!shown.contains_key("submitter"));
}

#[test]
fn per_host_results_of_surface_3_3() {
    let run = HostRun {
        label: HostLabel::new("a", "a.example"),
        script: "s".into(),
        reqid: "r".into(),
        rtt: Rtt(Duration::from_millis(42)),
        output: Output::failed("read timeout after 60s"),
    };
    let text = to_string(&run.to_json());
    assert!(
        text.contains(r#""reported_hostname":"a.example""#),
        "{text}"
    );
    assert!(text.contains(r#""rtt":"42ms""#), "{text}");
    assert_eq!(HostRun::from_json(&run.to_json()).unwrap(), run);
    let ping = HostPing {
        label: HostLabel::new("a", "a"),
        rtt: Rtt::default(),
        reply: Err("refused".into()),
    };
    assert_eq!(
        to_string(&ping.to_json()),
        r#"{"error":"refused","host":"a","rtt":"0ms","status":"error"}"#
    );
}

#[test]
fn revoke_serial_messages() {
    let text = r#"{"serial":"1F:2A","token":"tok","reqid":"abc"}"#;
    round_trip(
        text,
        |o| RevokeSerialRequest::read(&bytes(o)).unwrap(),
        RevokeSerialRequest::to_json,
    );
    assert_eq!(
        RevokeSerialRequest::read(b"{}").unwrap(),
        RevokeSerialRequest::default()
    );
    assert_eq!(
        refused(RevokeSerialRequest::read(br#"{"serial":7}"#).unwrap_err()),
        "serial"
    );
    let reply = r#"{"status":"ok","host":"web-01","serial":"1f2a","already":false,"persisted":false,"warning":"cannot write x","dispatcher_id":"ctl-1","reqid":"abc"}"#;
    round_trip(
        reply,
        |o| RevokeSerialReply::from_json(o).unwrap(),
        RevokeSerialReply::to_json,
    );
    let r = RevokeSerialReply::from_json(&obj(reply)).unwrap();
    assert_eq!((r.serial.as_str(), r.by.as_str()), ("1f2a", "ctl-1"));
    assert_eq!(r.warning.as_deref(), Some("cannot write x"));
    assert!(RevokeSerialReply::from_json(&obj(r#"{"error":"x"}"#)).is_err());
}

#[test]
fn module_names_no_role() {
    let roles = [
        ["age", "nt"].concat(),
        ["dispat", "cher"].concat(),
        ["a", "pi"].concat(),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        // `_` joins a word: wire keys such as `dispatcher_id` are protocol, not roles.
        for word in src.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            assert!(
                !roles.iter().any(|r| word.eq_ignore_ascii_case(r)),
                "{} names role {word:?}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} files under {}", dir.display());
}

#[test]
fn files_the_original_wrote_are_read_unchanged() {
    // A pairing-queue entry (surface.md 4.7) as the original writes it: no hint
    // (`lookup_by` null), no port (it keeps only integers), `reverse_confirmed` a number.
    let queue = r#"{"id":"0123456789abcdef","hostname":"web-01.example.com","ip":"192.0.2.10","source_ip":"192.0.2.10","csr":"-----BEGIN CERTIFICATE REQUEST-----\nX\n-----END CERTIFICATE REQUEST-----\n","nonce":"00112233445566778899aabbccddeeff","lookup_by":null,"port":null,"received":"2026-03-05T18:38:09Z","code":"432319","reverse_dns":"web-01.example.com","reverse_confirmed":1}"#;
    let q = QueueEntry::from_json(&obj(queue));
    assert_eq!(q.hostname, "web-01.example.com");
    assert_eq!((q.port, q.code.as_str()), (None, "432319"));
    assert_eq!(q.received, "2026-03-05T18:38:09Z");
    // The registry record of surface.md 4.6, exactly as the reference shows it.
    let record = r#"{"hostname":"web-01.example.com","ip":"10.0.0.5","paired":"2026-03-05T18:38:09Z","expiry":"Jun  7 16:28:00 2028 GMT","reqid":"0123456789abcdef","lookup_by":"hostname","port":7443,"tags":{},"dispatcher_serial":"2","serial_status":"current","serial_broadcast":"","serial_confirmed":"2026-03-05T18:38:09Z"}"#;
    let r = AgentRecord::from_json(&obj(record));
    assert_eq!(
        (r.hostname.as_str(), r.ip.as_str(), r.port),
        ("web-01.example.com", "10.0.0.5", 7443)
    );
    assert_eq!(r.expiry, "Jun  7 16:28:00 2028 GMT");
    assert!(
        r.pubkey_sha256.is_empty(),
        "the original records no key pin"
    );
    // What we write back keeps every field the original reads, with the same types.
    let back = to_string(&r.to_json());
    for field in [
        r#""hostname":"web-01.example.com""#,
        r#""ip":"10.0.0.5""#,
        r#""port":7443"#,
        r#""lookup_by":"hostname""#,
        r#""expiry":"Jun  7 16:28:00 2028 GMT""#,
        r#""tags":{}"#,
        r#""dispatcher_serial":"2""#,
        r#""serial_status":"current""#,
    ] {
        assert!(back.contains(field), "{field} missing from {back}");
    }
    // Run records (surface.md 4.9) from the original: results without the truncation
    // flags, async hosts in every state the original writes.
    let sync = r#"{"reqid":"r1","script":"s","mode":"sync","hosts":["a"],"results":[{"host":"a","exit":0,"stdout":"hi\n","stderr":"","reqid":"r1","rtt":"12ms"}],"completed":1767225600,"complete":true}"#;
    let rec = RunRecord::from_json(&obj(sync)).unwrap();
    assert!(rec.complete() && !rec.any_failed());
    let asyn = r#"{"reqid":"r2","script":"s","mode":"async","hosts":{"a":{"status":"done","exit":0,"stdout":"","stderr":""},"b":{"status":"running"},"c":{"status":"expired"},"d":{"status":"fetch_error","error":"timeout"},"e":{"status":"busy"}},"created":1767225600,"submitter":{"username":"u","source_ip":"127.0.0.1"},"pending":["b"],"complete":false}"#;
    let rec = RunRecord::from_json(&obj(asyn)).unwrap();
    assert!(!rec.complete());
}
