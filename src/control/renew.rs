//! Agent-certificate renewal (protocol.md 6.4), driven by `ced ping`.
//!
//! Only the CLI renews: it runs where the CA key is; the API never calls
//! this. After a ping, every agent whose certificate has less than half of
//! `cert_days` left (and has nothing staged) is renewed, one TLS connection
//! per step: `POST /renew` gives a CSR for the agent's existing key; the CSR
//! must name the registry entry (CN) and hold the pinned key; the CA signs
//! it for `cert_days`; `POST /renew-complete` hands the certificate over.
//! Only an agent answering `status:"ok"` with `staged:true` gets its
//! registry record's `expiry` (and pinned key) updated; the original
//! updated it on any HTTP 2xx.

use std::sync::Arc;

use crate::control::dispatch::Dispatch;
use crate::control::engine::{Engine, Reply};
use crate::control::registry::{Registry, Target};
use crate::proto::json::FieldError;
use crate::proto::{
    HostPing, PingReply, RenewComplete, RenewCompleteReply, RenewReply, RenewRequest, ReqId,
};
use crate::{log, pki, time};

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// One agent's renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// Registry name.
    pub host: String,
    /// The new certificate's notAfter (OpenSSL text form), or why there is
    /// none.
    pub outcome: Result<String, String>,
}

/// Whether a ping reply says the agent's certificate is due for renewal:
/// status ok, nothing staged, and less than half of `cert_days` left at
/// `now`. An expiry that does not parse is not due.
pub fn due(ping: &PingReply, cert_days: u32, now: i64) -> bool {
    if ping.status != "ok" || ping.staged {
        return false;
    }
    time::parse_openssl_date(&ping.expiry).is_some_and(|expiry| in_window(expiry, cert_days, now))
}

/// The renewal rule: a certificate ending at `expiry` (unix seconds) has
/// less than half of `cert_days` left at `now`.
pub fn in_window(expiry: i64, cert_days: u32, now: i64) -> bool {
    (expiry - now) * 2 < i64::from(cert_days) * DAY_SECS
}

/// The CA a renewal signs with.
#[derive(Clone)]
struct Ca {
    cert: String,
    key: String,
    days: u32,
}

impl Dispatch {
    /// Renews the certificates of the agents `pings` shows due; `hosts` and
    /// `port` are the arguments the pings were sent with, so each renewal
    /// reaches the same address. Agents not due are left out of the result.
    pub async fn renew_due(
        &self,
        hosts: &[String],
        port: Option<u16>,
        pings: &[HostPing],
    ) -> Vec<Renewal> {
        let now = time::now();
        let days = self.conf.cert_days;
        let due_names: Vec<&str> = pings
            .iter()
            .filter(|p| p.reply.as_ref().is_ok_and(|r| due(r, days, now)))
            .map(|p| p.label.host.as_str())
            .collect();
        if due_names.is_empty() {
            return Vec::new();
        }
        let targets: Vec<Target> = match self.resolve_targets(hosts, port).await {
            Ok(t) => t
                .into_iter()
                .filter(|t| due_names.contains(&t.name.as_str()))
                .collect(),
            Err(e) => return failed(&due_names, &e.to_string()),
        };
        let (cert_path, key_path) = (self.conf.ca_cert_path(), self.conf.ca_key_path());
        let ca = smol::unblock(move || {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            Ok::<_, String>((read(&cert_path)?, read(&key_path)?))
        })
        .await;
        let ca = match ca {
            Ok((cert, key)) => Arc::new(Ca { cert, key, days }),
            Err(e) => return failed(&due_names, &e),
        };
        let registry = self.registry().clone();
        self.engine()
            .fan_out(&targets, move |eng, t| {
                let (ca, registry) = (ca.clone(), registry.clone());
                async move {
                    let outcome = renew_one(&eng, &t, &ca, &registry).await;
                    match &outcome {
                        Ok(expiry) => log::info(
                            "renew",
                            &[("AGENT", &t.name), ("EXPIRY", expiry), ("RESULT", "ok")],
                        ),
                        Err(e) => log::warn(
                            "renew",
                            &[("AGENT", &t.name), ("ERROR", e), ("RESULT", "error")],
                        ),
                    }
                    Renewal {
                        host: t.name,
                        outcome,
                    }
                }
            })
            .await
    }
}

fn failed(names: &[&str], why: &str) -> Vec<Renewal> {
    names
        .iter()
        .map(|n| Renewal {
            host: n.to_string(),
            outcome: Err(why.to_string()),
        })
        .collect()
}

/// The body of a 200 reply, read with `parse`.
fn body<T>(
    step: &str,
    reply: Reply,
    parse: impl Fn(&miniserde::json::Object) -> Result<T, FieldError>,
) -> Result<T, String> {
    match (reply.status, &reply.body) {
        (200, Ok(o)) => parse(o).map_err(|e| format!("{step}: invalid response: {e}")),
        (s, Ok(o)) => Err(format!(
            "{step}: agent answered HTTP {s}: {}",
            crate::proto::json::to_string(&miniserde::json::Value::Object(o.clone()))
        )),
        (s, Err(e)) => Err(format!("{step}: agent answered HTTP {s}: {e}")),
    }
}

async fn renew_one(
    eng: &Engine,
    t: &Target,
    ca: &Ca,
    registry: &Registry,
) -> Result<String, String> {
    let request = RenewRequest {
        reqid: ReqId::random().into_string(),
    };
    let reply = eng
        .call(t, "POST", "/renew", Some(&request.to_json()))
        .await
        .map_err(|e| format!("/renew: {e}"))?;
    let csr_pem = match body("/renew", reply, RenewReply::from_json)? {
        RenewReply::Csr { csr, .. } => csr,
        RenewReply::Error(e) => return Err(format!("/renew: {e}")),
    };
    let csr =
        pki::check_csr(&csr_pem, Some(&t.name)).map_err(|e| format!("/renew: CSR refused: {e}"))?;
    if !t.pubkey_sha256.is_empty() && pki::sha256_hex(&csr.public_key_der) != t.pubkey_sha256 {
        return Err("/renew: CSR refused: its key is not the one recorded at pairing".into());
    }
    let cert =
        pki::sign_csr(&ca.cert, &ca.key, &csr, ca.days).map_err(|e| format!("signing: {e}"))?;
    let info = pki::cert_info_pem(&cert).map_err(|e| format!("signing: {e}"))?;
    let complete = RenewComplete {
        cert,
        ca: Some(ca.cert.clone()),
        reqid: ReqId::random().into_string(),
    };
    let reply = eng
        .call(t, "POST", "/renew-complete", Some(&complete.to_json()))
        .await
        .map_err(|e| format!("/renew-complete: {e}"))?;
    if let RenewCompleteReply::Error(e) =
        body("/renew-complete", reply, RenewCompleteReply::from_json)?
    {
        return Err(format!("/renew-complete: {e}"));
    }
    let expiry = time::openssl_date(info.not_after);
    let (registry, name, new_expiry, key, serial) = (
        registry.clone(),
        t.name.clone(),
        expiry.clone(),
        info.spki_sha256,
        info.serial,
    );
    smol::unblock(move || {
        registry.update(&name, |r| {
            r.expiry = new_expiry;
            r.pubkey_sha256 = key;
            // `ced unpair --revoke` revokes the serial in use.
            r.serial = serial;
        })
    })
    .await
    .map_err(|e| format!("agent renewed, registry not updated: {e}"))?;
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(expiry: &str, staged: bool) -> PingReply {
        PingReply {
            status: "ok".into(),
            expiry: expiry.into(),
            staged,
            ..PingReply::default()
        }
    }

    #[test]
    fn due_below_half_of_cert_days() {
        let now = time::parse_openssl_date("Jan  1 00:00:00 2030 GMT").unwrap();
        let at = |days: i64| time::openssl_date(now + days * DAY_SECS);
        assert!(due(&ping(&at(182), false), 365, now));
        assert!(!due(&ping(&at(183), false), 365, now));
        assert!(due(&ping(&at(1), false), 365, now));
        assert!(due(&ping(&at(-1), false), 365, now), "expired is due");
        assert!(!due(&ping(&at(1), true), 365, now), "staged is not due");
        assert!(!due(&ping("unknown", false), 365, now));
        let mut err = ping(&at(1), false);
        err.status = "error".into();
        assert!(!due(&err, 365, now));
    }
}
