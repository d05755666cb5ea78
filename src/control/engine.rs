//! The fan-out engine: one mTLS request per agent, at most `max_parallel` at
//! once, each bounded by `read_timeout`, results keyed by registry name.
//!
//! Before a request leaves, the agent's certificate must carry the public key
//! recorded for that registry entry at pairing, so a request (and its token)
//! never reaches an impostor that merely holds some certificate from our CA.
//! Transport failures are worded for operators, in the original's phrases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use smol::lock::Semaphore;

use crate::conf::DispatcherConf;
use crate::control::registry::Target;
use crate::json::{self, Object, Value};
use crate::net::client::{self, ClientError};
use crate::net::limits::Limits;
use crate::net::tls::{self, Identity};
use crate::{log, pki, rt};

/// Most hosts one fan-out may address (the original's limit).
pub const MAX_HOSTS: usize = 500;

/// What one call produced.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body, when it was a JSON object.
    pub body: Option<Object>,
    /// Round-trip time.
    pub rtt: Duration,
}

/// Largest agent reply read: a run result carries stdout and stderr, each up
/// to the agent's `max_output_bytes` (default 1 MiB) and JSON-escaped, so the
/// 1 MiB request-body limit would refuse ordinary capped output.
pub const MAX_AGENT_REPLY_BYTES: usize = 64 << 20;

/// The shared client side of the dispatcher host.
pub struct Engine {
    tls: Arc<ClientConfig>,
    read_timeout: Duration,
    slots: Arc<Semaphore>,
    limits: Limits,
}

impl Engine {
    /// Loads the dispatcher identity and CA named in the config.
    pub fn new(conf: &DispatcherConf) -> Result<Arc<Engine>, String> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let identity = Identity::from_pem(&read(&conf.cert)?, &read(&conf.key)?)
            .map_err(|e| format!("{}: {e}", conf.cert.display()))?;
        let ca = pki::pem_certs(&read(&conf.ca)?)
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: no certificate", conf.ca.display()))?;
        let tls = tls::mtls_client(&identity, &ca).map_err(|e| e.to_string())?;
        Ok(Arc::new(Engine {
            tls,
            read_timeout: conf.read_timeout,
            slots: Arc::new(Semaphore::new(conf.max_parallel.max(1))),
            limits: Limits {
                max_body_bytes: MAX_AGENT_REPLY_BYTES,
                ..Limits::default()
            },
        }))
    }

    /// The configured per-request timeout.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// One request to one agent, under a `max_parallel` slot.
    pub async fn call(
        &self,
        target: &Target,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let _slot = self.slots.acquire().await;
        let started = Instant::now();
        let deadline = started + self.read_timeout;
        let stream = client::connect_tls(&target.host, target.port, self.tls.clone(), deadline)
            .await
            .map_err(|e| describe(&e, target, self.read_timeout))?;
        if !target.pubkey_sha256.is_empty() {
            let presented = client::peer_certificate(&stream)
                .and_then(|der| pki::cert_info_der(&der).ok())
                .map(|i| i.spki_sha256)
                .unwrap_or_default();
            if presented != target.pubkey_sha256 {
                log::warn(
                    "agent-key-mismatch",
                    &[
                        ("AGENT", &target.name),
                        ("TARGET", &format!("{}:{}", target.host, target.port)),
                    ],
                );
                return Err(format!(
                    "agent '{}' presented a different key than the one recorded at pairing - refusing to talk to it",
                    target.name
                ));
            }
        }
        let body = body.map(json::to_string);
        let resp = client::exchange(
            stream,
            method,
            path,
            &target.host,
            body.as_deref().map(str::as_bytes),
            &self.limits,
            deadline,
        )
        .await
        .map_err(|e| describe(&e, target, self.read_timeout))?;
        Ok(Reply {
            status: resp.status,
            body: json::parse_object(&resp.body),
            rtt: started.elapsed(),
        })
    }

    /// Runs `each` for every target concurrently and returns results in
    /// target order.
    pub async fn fan_out<F, Fut>(self: &Arc<Self>, targets: &[Target], each: F) -> Vec<Value>
    where
        F: Fn(Arc<Engine>, Target) -> Fut,
        Fut: std::future::Future<Output = Value> + Send + 'static,
    {
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| rt::spawn(each(self.clone(), t.clone())))
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    }
}

/// Formats a round-trip time as the original does (`"42ms"`).
pub fn rtt(d: Duration) -> String {
    format!("{:.0}ms", d.as_secs_f64() * 1000.0)
}

/// Words a transport failure for an operator (reference surface.md 1.3).
pub fn describe(e: &ClientError, t: &Target, read_timeout: Duration) -> String {
    let h = &t.name;
    match e {
        ClientError::Resolve => format!("host '{h}' did not resolve - check the name or use an IP address"),
        ClientError::Refused => format!(
            "host '{h}' did not respond on port {} - connection refused (agent not running, or wrong port?)",
            t.port
        ),
        ClientError::Unreachable => format!("host '{h}' is unreachable - no route to host or network down"),
        ClientError::ConnectTimeout => format!("host '{h}' did not respond - connection timed out"),
        ClientError::Tls(_) => format!("TLS handshake with '{h}' failed - certificate or trust mismatch"),
        ClientError::ReadTimeout => format!("read timeout after {}s", read_timeout.as_secs()),
        ClientError::Http(e) => format!("invalid response from '{h}': {e}"),
        ClientError::Io(e) => format!("connection to '{h}' failed: {e}"),
    }
}

/// The per-host result of a sync run.
pub fn run_result(t: &Target, script: &str, reqid: &str, reply: Result<Reply, String>) -> Value {
    let mut o = Object::new();
    let (rtt_text, error) = match reply {
        Err(e) => (None, Some(e)),
        Ok(r) => {
            let rt_text = rtt(r.rtt);
            match (r.status, r.body) {
                (403, b) => (
                    Some(rt_text),
                    Some(format!(
                        "forbidden: {}",
                        b.as_ref()
                            .and_then(|b| json::get_str(b, "error"))
                            .unwrap_or("")
                    )),
                ),
                (413, _) => (Some(rt_text), Some("request too large".to_string())),
                (_, None) => (Some(rt_text), Some("invalid JSON response".to_string())),
                (status, Some(body)) => {
                    o = body;
                    if !o.contains_key("exit") {
                        o.insert("exit".into(), json::int(-1));
                    }
                    if status != 200 && !o.contains_key("error") {
                        o.insert(
                            "error".into(),
                            json::str(format!("agent answered HTTP {status}")),
                        );
                    }
                    (Some(rt_text), None)
                }
            }
        }
    };
    if let Some(e) = error {
        o.insert("exit".into(), json::int(-1));
        o.insert("error".into(), json::str(e));
    }
    adopt_host(&mut o, t);
    o.insert("script".into(), json::str(script));
    o.insert("reqid".into(), json::str(reqid));
    o.insert(
        "rtt".into(),
        json::str(rtt_text.unwrap_or_else(|| "0ms".into())),
    );
    Value::Object(o)
}

/// The per-host result of an async submission.
pub fn submit_result(t: &Target, script: &str, reqid: &str, reply: Result<Reply, String>) -> Value {
    let (status, error, rtt_text) = match reply {
        Err(e) => ("error", Some(e), "0ms".to_string()),
        Ok(r) => {
            let text = rtt(r.rtt);
            let agent_error = r
                .body
                .as_ref()
                .and_then(|b| json::get_str(b, "error"))
                .map(str::to_string);
            match r.status {
                202 => ("accepted", None, text),
                409 => (
                    "busy",
                    Some(agent_error.unwrap_or_else(|| "script already running".into())),
                    text,
                ),
                403 => (
                    "error",
                    Some(format!("forbidden: {}", agent_error.unwrap_or_default())),
                    text,
                ),
                _ => (
                    "error",
                    Some(agent_error.unwrap_or_else(|| "submit failed".into())),
                    text,
                ),
            }
        }
    };
    let mut o = Object::new();
    o.insert("host".into(), json::str(&t.name));
    o.insert("script".into(), json::str(script));
    o.insert("status".into(), json::str(status));
    if let Some(e) = error {
        o.insert("error".into(), json::str(e));
    }
    o.insert("reqid".into(), json::str(reqid));
    o.insert("rtt".into(), json::str(rtt_text));
    Value::Object(o)
}

/// The per-host result of a ping (or, with `extra_ok`, of capabilities).
pub fn status_result(t: &Target, reply: Result<Reply, String>) -> Value {
    let mut o = Object::new();
    let mut rtt_text = "0ms".to_string();
    let error = match reply {
        Err(e) => Some(e),
        Ok(r) => {
            rtt_text = rtt(r.rtt);
            match (r.status, r.body) {
                (200, Some(body)) => {
                    o = body;
                    None
                }
                (403, b) => Some(format!(
                    "forbidden: {}",
                    b.as_ref()
                        .and_then(|b| json::get_str(b, "error"))
                        .unwrap_or("")
                )),
                (_, None) => Some("invalid JSON response".to_string()),
                (s, Some(b)) => Some(
                    json::get_str(&b, "error")
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("agent answered HTTP {s}")),
                ),
            }
        }
    };
    if let Some(e) = error {
        o = Object::new();
        o.insert("status".into(), json::str("error"));
        o.insert("error".into(), json::str(e));
    }
    adopt_host(&mut o, t);
    o.insert("rtt".into(), json::str(rtt_text));
    Value::Object(o)
}

/// Keys a result by registry name, keeping a differing self-reported name.
fn adopt_host(o: &mut Object, t: &Target) {
    if let Some(reported) = json::get_str(o, "host").map(str::to_string) {
        if reported != t.name && !reported.is_empty() {
            o.insert("reported_hostname".into(), json::str(reported));
        }
    }
    o.insert("host".into(), json::str(&t.name));
}
