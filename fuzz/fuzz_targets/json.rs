//! The JSON edge: `proto::json::parse` / `parse_object` with the depth
//! bound, and every typed message's `from_json` on the parsed object.
//! Nothing may panic; a parsed value is never deeper than the bound; what
//! we serialise we read back identically; and for each type with both
//! `from_json` and `to_json`, our own output read back and written again
//! gives the same value (parse -> to_json -> parse is stable).
//!
//! Floats are compared to within a few ulps, not exactly: miniserde's
//! float parser is not correctly rounded (`9.999999999999999e+63` reads as
//! `1e64`; the 64-digit integer `99…944` reads one ulp below `1e64`), so
//! text -> f64 -> text may move the last digit. Only relayed values (a
//! schema sidecar) carry floats; no field we read is a float.
#![no_main]

use std::convert::Infallible;
use std::fmt::Debug;

use ctrl_exec::proto::json::{self, Builder, Number, Object, Value};
use ctrl_exec::proto::limits::MAX_JSON_DEPTH;
use ctrl_exec::proto::{
    AgentRecord, Capabilities, DiscoveryBody, ErrorBody, HostRun, JobRecord, PairAck, PairDecision,
    PairRequest, PingBody, PingReply, PingRequest, QueueEntry, RunBody, RunRecord, RunRequest,
};
use libfuzzer_sys::fuzz_target;

/// Nesting depth of a value (a scalar is 0), without recursion.
fn depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(o) => {
                max = max.max(d + 1);
                stack.extend(o.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    max
}

/// Equal values, floats within a few ulps (see the module note).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(Number::F64(x)), Value::Number(Number::F64(y))) => {
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        _ => json::to_string(a) == json::to_string(b),
    }
}

fn reparse(name: &str, v: &Value) -> Value {
    let s = json::to_string(v);
    json::parse(s.as_bytes())
        .unwrap_or_else(|e| panic!("{name}: own output does not parse ({e}): {s}"))
}

/// `from(o)`, then its `to_json` read back and written again must match.
fn round_trip<T, E: Debug>(
    name: &str,
    o: &Object,
    from: impl Fn(&Object) -> Result<T, E>,
    to: impl Fn(&T) -> Value,
) {
    let Ok(first) = from(o) else { return };
    let v1 = reparse(name, &to(&first));
    let Value::Object(o2) = &v1 else {
        panic!("{name}: own output is not an object")
    };
    let second = from(o2).unwrap_or_else(|e| panic!("{name}: own output refused ({e:?})"));
    let v2 = reparse(name, &to(&second));
    assert!(
        same(&v1, &v2),
        "{name}: round trip not stable:\n{}\n{}",
        json::to_string(&v1),
        json::to_string(&v2)
    );
}

fn ok<T>(t: T) -> Result<T, Infallible> {
    Ok(t)
}

fuzz_target!(|data: &[u8]| {
    // A small explicit limit exercises the bound itself.
    if let Ok(v) = json::parse_with_depth(data, 3) {
        assert!(depth(&v) <= 3);
    }
    let v = match json::parse(data) {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(
        depth(&v) <= MAX_JSON_DEPTH,
        "depth {} over bound",
        depth(&v)
    );
    // What we write we read back: once normalised (a float too large for
    // f64 is written as null), serialisation is a fixed point.
    let v2 = reparse("value", &v);
    let v3 = reparse("value", &v2);
    assert!(same(&v2, &v3), "value round trip not stable");

    let Value::Object(o) = v else {
        assert!(json::parse_object(data).is_err());
        return;
    };

    // Read-only messages: no panic, errors print.
    if let Err(e) = RunBody::from_json(&o) {
        let _ = e.to_string();
    }
    let _ = PingBody::from_json(&o);
    let _ = DiscoveryBody::from_json(&o);

    // Messages with both directions.
    round_trip("RunRequest", &o, RunRequest::from_json, RunRequest::to_json);
    round_trip(
        "PingRequest",
        &o,
        PingRequest::from_json,
        PingRequest::to_json,
    );
    round_trip("PingReply", &o, PingReply::from_json, PingReply::to_json);
    round_trip(
        "Capabilities",
        &o,
        Capabilities::from_json,
        Capabilities::to_json,
    );
    round_trip("JobRecord", &o, JobRecord::from_json, JobRecord::to_json);
    round_trip(
        "PairRequest",
        &o,
        PairRequest::from_json,
        PairRequest::to_json,
    );
    round_trip(
        "PairAck",
        &o,
        |o| ok(PairAck::from_json(o)),
        PairAck::to_json,
    );
    round_trip(
        "PairDecision",
        &o,
        |o| ok(PairDecision::from_json(o)),
        PairDecision::to_json,
    );
    round_trip(
        "QueueEntry",
        &o,
        |o| ok(QueueEntry::from_json(o)),
        QueueEntry::to_json,
    );
    round_trip(
        "AgentRecord",
        &o,
        |o| ok(AgentRecord::from_json(o)),
        AgentRecord::to_json,
    );
    round_trip(
        "HostRun",
        &o,
        |o| HostRun::from_json(&Value::Object(o.clone())),
        HostRun::to_json,
    );
    round_trip("RunRecord", &o, RunRecord::from_json, |r| {
        Value::Object(r.to_json(true))
    });
    // The client shape (no submitter) must read back too.
    if let Ok(r) = RunRecord::from_json(&o) {
        let shown = Value::Object(r.to_json(false));
        let s = json::to_string(&shown);
        let back = json::parse_object(s.as_bytes()).expect("client shape parses");
        RunRecord::from_json(&back).expect("client shape reads back");
    }

    // Builders fed arbitrary strings from the input still write valid JSON.
    let text = |k: &str| match o.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let err = ErrorBody {
        error: text("error").unwrap_or_default(),
        detail: text("detail"),
        code: None,
        conflicts: text("conflicts").into_iter().collect(),
    };
    let s = json::to_string(&err.to_json());
    json::parse_object(s.as_bytes()).expect("error body parses");
    let b = Builder::new()
        .value("echo", Value::Object(o.clone()))
        .build();
    let s = json::to_string(&b);
    if depth(&b) <= MAX_JSON_DEPTH {
        json::parse_object(s.as_bytes()).expect("echo parses");
    }
});
