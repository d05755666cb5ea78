//! `cea request-pairing`: send a CSR to the dispatcher's pairing listener and
//! wait for the operator's decision on the same connection.
//!
//! Nothing is stored unless the approval is consistent: the nonce echoes
//! ours, the certificate carries our public key and name and was issued by
//! the CA that came with it, the pairing listener's own certificate was issued
//! by that CA too, and — with `--ca-fingerprint` — that CA is the pinned one
//! (checked during the handshake when the listener presents its CA, and again
//! before storing).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::limits::PAIRING_CONNECT_TIMEOUT;
use crate::agent::{trust, AgentError};
use crate::conf::{self, account, AgentConf};
use crate::net::client::{self, ClientError};
use crate::net::http::Conn;
use crate::net::limits::Limits;
use crate::net::tls::{self, PairingVerifier};
use crate::proto::json;
use crate::proto::{DispatcherId, LookupBy, PairAck, PairDecision, PairRequest, Serial};
use crate::{fsx, log, pki};

/// What `request-pairing` was asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// The dispatcher host.
    pub dispatcher: String,
    /// Its pairing port.
    pub port: u16,
    /// Addressing suggested to the dispatcher.
    pub lookup_by: Option<LookupBy>,
    /// Print only the request id and wait quietly.
    pub background: bool,
    /// How long to wait for the decision.
    pub wait: Duration,
    /// Normalised pinned CA fingerprint.
    pub ca_fingerprint: Option<String>,
    /// The kind of key to make (`--key-type`, else `key_type` in agent.conf).
    pub key_type: pki::KeyType,
}

/// Runs the pairing exchange and stores the result.
pub fn request_pairing(conf: &AgentConf, req: &Request) -> Result<(), AgentError> {
    if !conf::valid_agent_name(&conf.hostname) {
        return Err(AgentError::Usage(format!(
            "agent name '{}' is not usable (letters, digits, '.', '-', '_'; set 'hostname' in agent.conf)",
            conf.hostname
        )));
    }
    for path in [
        &conf.cert,
        &conf.key,
        &conf.ca,
        &conf.trusted_dispatchers_path,
    ] {
        check_writable(path)?;
    }
    if !req.background {
        match req.key_type {
            pki::KeyType::Rsa(bits) => crate::outln!(
                "Generating an RSA-{bits} key and CSR for '{}' (this can take a while on a small host)...",
                conf.hostname
            )?,
            pki::KeyType::EcP256 => {
                crate::outln!("Generating key and CSR for '{}'...", conf.hostname)?
            }
        }
    }
    let key_pem =
        pki::generate_key_pem_of(req.key_type).map_err(|e| AgentError::Failed(e.to_string()))?;
    let csr_pem =
        pki::make_csr(&key_pem, &conf.hostname).map_err(|e| AgentError::Failed(e.to_string()))?;
    let code = pki::pairing_code(csr_pem.as_bytes());
    let nonce = pki::random_hex(16);
    if !req.background {
        crate::outln!("Pairing code: {code}")?;
        crate::outln!("  Verify this code matches the ctrl-exec display before approving.")?;
        crate::outln!()?;
        crate::outln!(
            "Connecting to ctrl-exec at {} for pairing...",
            req.dispatcher
        )?;
    }
    let verifier = Arc::new(PairingVerifier::new(req.ca_fingerprint.clone()));
    let approved = crate::rt::block_on(exchange(conf, req, &csr_pem, &nonce, verifier.clone()))?;
    store(
        conf,
        req,
        &key_pem,
        &nonce,
        &approved,
        &verifier.presented_chain(),
    )?;
    if !req.background {
        crate::outln!("Pairing complete. Certificates stored.")?;
        crate::outln!("Start the agent with:  ctrl-exec-agent serve   (or: sudo systemctl enable --now ctrl-exec-agent)")?;
        crate::outln!(
            "If it is already running, restart it (or send SIGHUP) to load the new certificate."
        )?;
        crate::outln!("Then verify with: ctrl-exec-agent self-ping")?;
    }
    Ok(())
}

async fn exchange(
    conf: &AgentConf,
    req: &Request,
    csr_pem: &str,
    nonce: &str,
    verifier: Arc<PairingVerifier>,
) -> Result<Approval, AgentError> {
    let target = format!("{}:{}", req.dispatcher, req.port);
    let config = tls::pairing_client(verifier).map_err(|e| AgentError::Failed(e.to_string()))?;
    let connect_deadline = Instant::now() + PAIRING_CONNECT_TIMEOUT;
    let stream = client::connect_tls(&req.dispatcher, req.port, config, connect_deadline).await.map_err(|e| {
        AgentError::Failed(match e {
            ClientError::Resolve => format!("Pairing failed: could not resolve ctrl-exec hostname '{}'.", req.dispatcher),
            ClientError::Refused | ClientError::Unreachable | ClientError::ConnectTimeout => format!(
                "Pairing failed: could not connect to ctrl-exec at {target}. Is 'ctrl-exec-dispatcher pairing-mode' running there?"
            ),
            ClientError::HandshakeClosed | ClientError::HandshakeTimeout => format!(
                "Pairing failed: {target} accepted the connection but did not complete TLS - the pairing listener is busy or rate-limiting this host; try again later."
            ),
            ClientError::Tls(_) if req.ca_fingerprint.is_some() => format!(
                "Pairing failed: the dispatcher at {target} does not present the CA given with --ca-fingerprint - refusing to pair."
            ),
            _ => format!("Pairing failed: reached {target}, but it is not responding as a pairing listener ({e})."),
        })
    })?;
    let local_ip = stream
        .get_ref()
        .0
        .get_ref()
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let body = PairRequest {
        hostname: conf.hostname.clone(),
        csr: csr_pem.to_string(),
        nonce: nonce.to_string(),
        lookup_by: req.lookup_by,
        port: Some(conf.port),
        ip: (!local_ip.is_empty()).then_some(local_ip),
    };
    let body = json::to_string(&body.to_json());
    let raw = format!(
        "POST /pair HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let limits = Limits::default();
    let mut conn = Conn::new(stream);
    let not_listener = |e: &dyn std::fmt::Display| {
        AgentError::Failed(format!("Pairing failed: reached {target}, but it is not responding as a pairing listener ({e})."))
    };
    conn.write_raw(raw.as_bytes(), Instant::now() + limits.write_timeout)
        .await
        .map_err(|e| not_listener(&e))?;
    let ack = conn
        .read_response(&limits, Instant::now() + PAIRING_CONNECT_TIMEOUT * 6)
        .await
        .map_err(|e| not_listener(&e))?;
    let ack =
        json::parse_object(&ack.body).map_err(|_| not_listener(&"unreadable acknowledgement"))?;
    let pair_reqid = match PairAck::from_json(&ack) {
        PairAck::Pending { reqid } => reqid,
        PairAck::Error { reason } if reason.starts_with("unexpected answer") => {
            return Err(not_listener(&"unexpected acknowledgement"))
        }
        PairAck::Error { reason } => {
            let reason = if reason.is_empty() {
                "error".into()
            } else {
                reason
            };
            return Err(AgentError::Failed(format!("Pairing failed: {reason}")));
        }
    };
    if req.background {
        // Read by the parent (spawn_background), which prints the id alone.
        let code = pki::pairing_code(csr_pem.as_bytes());
        crate::outln!("{pair_reqid} {code} {}", conf.hostname)?;
        let _ = std::io::stdout().flush();
    } else {
        crate::outln!("Request {pair_reqid} queued; waiting for the operator to approve it...")?;
    }
    let final_msg = match conn.read_response(&limits, Instant::now() + req.wait).await {
        Ok(r) => r,
        Err(crate::net::http::HttpError::TimedOut(_)) => {
            log::warn(
                "pair-timeout",
                &[("DISPATCHER_HOST", &req.dispatcher), ("REQID", &pair_reqid)],
            );
            return Err(AgentError::PairTimeout(format!(
                "Pairing timed out after {}s waiting for approval (request {pair_reqid}).",
                req.wait.as_secs()
            )));
        }
        Err(e) => {
            return Err(AgentError::Failed(format!(
                "Pairing failed: connection lost while waiting ({e})."
            )))
        }
    };
    let result = json::parse_object(&final_msg.body)
        .map_err(|_| AgentError::Failed("Pairing failed: unreadable pairing result".into()))?;
    match PairDecision::from_json(&result) {
        PairDecision::Denied { reason } => {
            log::warn(
                "pair-denied",
                &[("DISPATCHER_HOST", &req.dispatcher), ("REASON", &reason)],
            );
            Err(AgentError::PairDenied(format!("Pairing failed: {reason}")))
        }
        PairDecision::Approved { nonce: echoed, .. } if echoed != nonce => Err(AgentError::Failed(
            "Pairing failed: nonce mismatch in pairing result".into(),
        )),
        PairDecision::Approved {
            cert,
            ca,
            dispatcher_serial,
            dispatcher_id,
            ..
        } => Ok(Approval {
            cert,
            ca,
            dispatcher_serial,
            dispatcher_id,
        }),
    }
}

/// What an approval delivers, before it is checked.
struct Approval {
    cert: String,
    ca: String,
    dispatcher_serial: String,
    dispatcher_id: String,
}

fn store(
    conf: &AgentConf,
    req: &Request,
    key_pem: &str,
    _nonce: &str,
    approved: &Approval,
    presented: &[Vec<u8>],
) -> Result<(), AgentError> {
    let fail = |m: String| AgentError::Failed(format!("Pairing failed: {m}; nothing was stored."));
    let (cert_pem, ca_pem) = (approved.cert.as_str(), approved.ca.as_str());
    let ca_der = pki::pem_certs(ca_pem)
        .into_iter()
        .next()
        .ok_or_else(|| fail("no CA certificate in the approval".into()))?;
    let cert_der = pki::pem_certs(cert_pem)
        .into_iter()
        .next()
        .ok_or_else(|| fail("no certificate in the approval".into()))?;
    let ca_fp = pki::sha256_hex(&ca_der);
    if let Some(pin) = &req.ca_fingerprint {
        if &ca_fp != pin {
            return Err(fail(format!(
                "the dispatcher's CA sha256:{ca_fp} does not match --ca-fingerprint"
            )));
        }
    }
    match presented.first() {
        Some(leaf) if pki::verify_issued_by(leaf, &ca_der) => {}
        _ => {
            return Err(fail(
                "the pairing listener's certificate was not issued by the CA it sent".into(),
            ))
        }
    }
    if !pki::verify_issued_by(&cert_der, &ca_der) {
        return Err(fail(
            "the issued certificate does not chain to the CA sent with it".into(),
        ));
    }
    let info = pki::cert_info_der(&cert_der).map_err(|e| fail(e.to_string()))?;
    let key_fp = pki::key_spki_sha256(key_pem).map_err(|e| fail(e.to_string()))?;
    if info.spki_sha256 != key_fp {
        return Err(fail("the issued certificate is for a different key".into()));
    }
    if info.cn != conf.hostname {
        return Err(fail(format!(
            "the issued certificate names '{}', not '{}'",
            info.cn, conf.hostname
        )));
    }
    let serial =
        dispatcher_serial(&approved.dispatcher_serial, presented.first()).ok_or_else(|| {
            fail(format!(
                "invalid dispatcher serial '{}'",
                approved.dispatcher_serial
            ))
        })?;
    // The original uses the serial as the id when the dispatcher sent none.
    let id_text = match approved.dispatcher_id.as_str() {
        "" => serial.as_str(),
        id => id,
    };
    let id = DispatcherId::parse(id_text)
        .ok_or_else(|| fail(format!("invalid dispatcher id '{id_text}'")))?;
    let write = |path: &Path, bytes: &[u8], mode: u32| {
        fsx::write_atomic(path, bytes, mode)
            .map_err(|e| AgentError::Failed(format!("cannot write {}: {e}", path.display())))
    };
    let readers = account::service_gid(super::SERVICE_GROUP);
    fsx::write_key(&conf.key, key_pem.as_bytes(), readers)
        .map_err(|e| AgentError::Failed(format!("cannot write {}: {e}", conf.key.display())))?;
    if readers.is_some() {
        // Not `?`: a --background child's stdout is gone by now, and the
        // certificate must still be written.
        let _ = crate::outln!(
            "Key {} is 0640 root:{}, for the agent service.",
            conf.key.display(),
            super::SERVICE_GROUP
        );
    }
    write(&conf.cert, cert_pem.as_bytes(), 0o644)?;
    write(&conf.ca, ca_pem.as_bytes(), 0o644)?;
    trust::add_trusted(&conf.trusted_dispatchers_path, serial.as_str(), id.as_str()).map_err(
        |e| {
            AgentError::Failed(format!(
                "cannot write {}: {e}",
                conf.trusted_dispatchers_path.display()
            ))
        },
    )?;
    log::info(
        "pair-complete",
        &[
            ("DISPATCHER", id.as_str()),
            ("DISPATCHER_HOST", &req.dispatcher),
            ("STATUS", "approved"),
        ],
    );
    Ok(())
}

/// The serial to trust for the approving dispatcher.
///
/// A Perl dispatcher sends its serial in the original's form (protocol.md
/// 2.4), where an all-digit hex serial was read as decimal: serial 0x10 comes
/// as `a`, which read as hex is 0x0a, another certificate (in a Perl CA,
/// with sequential serials, an agent's). The pairing listener presents the
/// dispatcher's own certificate, so when the text sent is that
/// certificate's serial in the original's form, the certificate's true
/// serial is what is stored. Otherwise the text is read as hex, as
/// everywhere else, and a serial that is not the listener's is logged.
fn dispatcher_serial(sent: &str, listener: Option<&Vec<u8>>) -> Option<Serial> {
    let exact = Serial::parse(sent)?;
    let Some(true_serial) = listener.and_then(|der| pki::cert_info_der(der).ok()) else {
        return Some(exact);
    };
    if exact.as_str() == true_serial.serial {
        return Some(exact);
    }
    if pki::perl_serial(&true_serial.serial).as_deref() == Some(sent.trim()) {
        log::info(
            "pair-serial",
            &[
                ("SENT", sent),
                ("SERIAL", &true_serial.serial),
                (
                    "MSG",
                    "dispatcher sent its serial in the original's decimal reading; stored the certificate's",
                ),
            ],
        );
        return Serial::parse(&true_serial.serial);
    }
    log::warn(
        "pair-serial-mismatch",
        &[
            ("SENT", sent),
            ("LISTENER_SERIAL", &true_serial.serial),
            (
                "MSG",
                "the serial to trust is not the pairing listener's certificate's",
            ),
        ],
    );
    Some(exact)
}

/// Fails before any network traffic when a file cannot be written.
fn check_writable(path: &Path) -> Result<(), AgentError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let denied = || {
        AgentError::Failed(format!(
            "Cannot write to '{}' - re-run as root or with sudo",
            dir.display()
        ))
    };
    fsx::ensure_dir(dir, 0o750).map_err(|_| denied())?;
    let probe = dir.join(format!(".ctrl-exec-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|_| denied())?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perl_dispatchers_decimal_read_serial_becomes_its_true_serial() {
        let (ca, ca_key) = pki::create_ca(1).unwrap();
        let (cert, _) = pki::issue_key_and_cert(&ca, &ca_key, "d", 1).unwrap();
        let der = pki::pem_certs(&cert).remove(0);
        let serial = pki::cert_info_der(&der).unwrap().serial;
        // Our own dispatcher sends the true serial.
        assert_eq!(
            dispatcher_serial(&serial, Some(&der)).unwrap().as_str(),
            serial
        );
        // No listener certificate seen: the text is read as hex.
        assert_eq!(dispatcher_serial("10", None).unwrap().as_str(), "10");
        // The original's form of the listener's serial maps back to it.
        let perl = pki::perl_serial(&serial).unwrap();
        if perl != serial {
            assert_eq!(
                dispatcher_serial(&perl, Some(&der)).unwrap().as_str(),
                serial
            );
        }
        // Another serial is kept as sent (read as hex).
        assert_eq!(
            dispatcher_serial("abc", Some(&der)).unwrap().as_str(),
            "abc"
        );
        assert!(dispatcher_serial("zz", Some(&der)).is_none());
    }
}
