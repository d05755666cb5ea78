//! The agent's renewed certificate: the checks a certificate from
//! `/renew-complete` must pass, writing it, and `promote-cert`, which
//! re-checks a staged file at start and makes it the live certificate.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::agent::limits::CERT_EXPIRY_WARNING_DAYS;
use crate::conf::AgentConf;
use crate::{fsx, log, pki, time};

/// Logs where the agent's own certificate stands, at start and at every
/// reload: `cert-expiry` (warning) with fewer than
/// [`CERT_EXPIRY_WARNING_DAYS`] left or expired (nothing has renewed it);
/// `cert-renewal-due` (warning) past half its lifetime but not that close
/// (the dispatcher renews it at the next `ced ping` or `ced maintain`);
/// `cert-not-yet-valid` (error), a clock problem. Silent otherwise.
pub fn log_lifetime(cert: Option<&pki::CertInfo>) {
    let Some(info) = cert else { return };
    let now = time::now();
    let expiry = time::openssl_date(info.not_after);
    let days_left = (info.not_after - now).div_euclid(86_400);
    match info.lifetime(now) {
        pki::Lifetime::NotYetValid => log::error(
            "cert-not-yet-valid",
            &[("EXPIRY", &expiry), ("MSG", "check this host's clock")],
        ),
        _ if days_left < CERT_EXPIRY_WARNING_DAYS => log::warn(
            "cert-expiry",
            &[
                ("DAYS_LEFT", &days_left.to_string()),
                ("EXPIRY", &expiry),
                (
                    "REASON",
                    "the agent certificate is close to expiry and has not been renewed; check that the dispatcher runs ced maintain",
                ),
            ],
        ),
        pki::Lifetime::RenewalDue { days_left } => log::warn(
            "cert-renewal-due",
            &[
                ("DAYS_LEFT", &days_left.to_string()),
                ("EXPIRY", &expiry),
                (
                    "MSG",
                    "past half its lifetime; the dispatcher renews it at the next ced ping or ced maintain",
                ),
            ],
        ),
        _ => {}
    }
}

/// Mode of the staged and the live certificate file.
pub const CERT_MODE: u32 = 0o640;

/// Why a renewed certificate is refused, in the reference's words
/// (protocol.md 3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not issued by the agent's CA, or not valid now.
    NotByCa,
    /// Its public key is not the agent key's.
    OtherKey,
}

impl Refusal {
    /// The reply's `error`.
    pub fn text(&self) -> &'static str {
        match self {
            Refusal::NotByCa => "renewed cert does not verify against the agent CA",
            Refusal::OtherKey => "renewed cert public key does not match the agent key",
        }
    }
}

/// Checks `cert_pem` as a renewal of this agent's certificate: issued by the
/// CA in `ca_pem`, valid at `now`, and holding the public key of `key_pem`.
/// Returns its notAfter (unix seconds).
pub fn check(cert_pem: &str, key_pem: &str, ca_pem: &str, now: i64) -> Result<i64, Refusal> {
    let (Some(cert), Some(ca)) = (
        pki::pem_certs(cert_pem).into_iter().next(),
        pki::pem_certs(ca_pem).into_iter().next(),
    ) else {
        return Err(Refusal::NotByCa);
    };
    let info = pki::cert_info_der(&cert).map_err(|_| Refusal::NotByCa)?;
    if !pki::verify_issued_by(&cert, &ca) || !pki::time_valid(&info, now) || info.is_ca {
        return Err(Refusal::NotByCa);
    }
    match pki::key_spki_sha256(key_pem) {
        Ok(k) if k == info.spki_sha256 => Ok(info.not_after),
        _ => Err(Refusal::OtherKey),
    }
}

/// Writes `pem` to `path` atomically, mode 0640, keeping the owner and
/// group of the file it replaces when this process may (root).
pub fn write(path: &Path, pem: &str) -> io::Result<()> {
    let before = std::fs::metadata(path).ok();
    fsx::write_atomic(path, pem.as_bytes(), CERT_MODE)?;
    if let Some(m) = before {
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()))?;
        }
    }
    Ok(())
}

/// `cea promote-cert`: a staged certificate that passes [`check`] replaces
/// the live one and the staged file is removed; one that does not is
/// removed and the live certificate kept. Never fails: every outcome is
/// logged as `cert-promote` and the caller exits 0.
pub fn promote(conf: &AgentConf) {
    let staged = &conf.cert_staging_path;
    let where_ = staged.display().to_string();
    let text = match std::fs::read_to_string(staged) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::info("cert-promote", &[("RESULT", "none"), ("STAGED", &where_)]);
            return;
        }
        Err(e) => {
            log::warn(
                "cert-promote",
                &[
                    ("ERROR", &e.to_string()),
                    ("RESULT", "error"),
                    ("STAGED", &where_),
                ],
            );
            return;
        }
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let verdict = check(&text, &read(&conf.key), &read(&conf.ca), time::now());
    let outcome = match verdict {
        Ok(_) => match write(&conf.cert, &text) {
            Ok(()) => Ok(()),
            Err(e) => {
                // A good certificate that cannot be written stays staged
                // for the next start.
                let e = format!("cannot write {}: {e}", conf.cert.display());
                log::warn("cert-promote", &[("ERROR", &e), ("RESULT", "error")]);
                return;
            }
        },
        Err(r) => Err(r.text().to_string()),
    };
    if let Err(e) = std::fs::remove_file(staged) {
        log::warn(
            "cert-promote",
            &[("ERROR", &format!("cannot remove {where_}: {e}"))],
        );
    }
    match outcome {
        Ok(()) => log::info(
            "cert-promote",
            &[
                ("CERT", &conf.cert.display().to_string()),
                ("RESULT", "promoted"),
            ],
        ),
        Err(e) => log::warn(
            "cert-promote",
            &[("ERROR", &e), ("RESULT", "rejected"), ("STAGED", &where_)],
        ),
    }
}
