//! `setup-ca` and `setup-ctrl-exec`: the private CA and the dispatcher's own
//! certificate. Keys are written 0600, atomically; an existing CA is never
//! overwritten.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::conf::account;
use crate::control::registry::Registry;
use crate::dispatcher::{load_conf, Args, CliError};
use crate::{fsx, log, pki};

/// CA lifetime: ten years.
pub const CA_DAYS: u32 = 3650;
/// The dispatcher certificate's common name.
pub const DISPATCHER_CN: &str = crate::conf::DISPATCHER_COMMON_NAME;

fn ca_dir(a: &Args) -> Result<PathBuf, CliError> {
    if a.config.exists() {
        Ok(load_conf(a)?.ca_dir)
    } else {
        Ok(PathBuf::from("/etc/ctrl-exec"))
    }
}

/// The group the packaged API runs in: its key is made readable by it
/// (0640 root:ctrl-exec), as the original does.
const SERVICE_GROUP: &str = "ctrl-exec";

fn write_err(path: &Path, e: std::io::Error) -> CliError {
    CliError::Failed(format!("cannot write {}: {e}", path.display()))
}

/// `ced setup-ca`.
pub fn setup_ca(a: &Args) -> Result<u8, CliError> {
    let dir = ca_dir(a)?;
    let key_path = dir.join("ca.key");
    let cert_path = dir.join("ca.crt");
    if key_path.exists() {
        return Err(CliError::Failed(format!(
            "CA already exists at '{}' - refusing to overwrite it.",
            key_path.display()
        )));
    }
    crate::outln!("Setting up dispatcher CA...")?;
    let (cert_pem, key_pem) =
        pki::create_ca(CA_DAYS).map_err(|e| CliError::Failed(e.to_string()))?;
    fsx::ensure_dir(&dir, 0o750).map_err(|e| write_err(&dir, e))?;
    fsx::write_new_atomic(&key_path, key_pem.as_bytes(), 0o600)
        .map_err(|e| write_err(&key_path, e))?;
    fsx::write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)
        .map_err(|e| write_err(&cert_path, e))?;
    let info = pki::cert_info_pem(&cert_pem).map_err(|e| CliError::Failed(e.to_string()))?;
    crate::outln!("CA created:")?;
    crate::outln!("  Key:  {}", key_path.display())?;
    crate::outln!("  Cert: {}", cert_path.display())?;
    crate::outln!("  Fingerprint: {}", info.fingerprint)?;
    crate::outln!("Keep ca.key secure - it never leaves this host.")?;
    crate::outln!(
        "Agents can pin this CA when pairing with: --ca-fingerprint {}",
        info.fingerprint
    )?;
    Ok(0)
}

/// `ced setup-ctrl-exec`.
pub fn setup_dispatcher(a: &Args) -> Result<u8, CliError> {
    let conf = load_conf(a)?;
    let ca_key = conf.ca_key_path();
    let ca_cert = conf.ca_cert_path();
    let read = |p: &Path| std::fs::read_to_string(p);
    let (Ok(ca_key_pem), Ok(ca_cert_pem)) = (read(&ca_key), read(&ca_cert)) else {
        return Err(CliError::Failed(format!(
            "CA key not found at '{}' - run setup-ca first",
            ca_key.display()
        )));
    };
    if conf.cert.exists() {
        let agents = Registry::new(&conf.registry_dir)
            .list()
            .map(|l| l.len())
            .unwrap_or(0);
        if agents > 0 {
            crate::outln!("WARNING: Existing dispatcher cert found.")?;
            crate::outln!(
                "  {agents} registered agent(s) trust the current certificate's serial and will"
            )?;
            crate::outln!("  refuse this dispatcher until they are re-paired.")?;
            crate::out!("Proceed? [y/N]: ")?;
            let _ = std::io::stdout().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            if !matches!(answer.trim(), "y" | "Y") {
                crate::outln!("Aborted.")?;
                return Ok(0);
            }
        } else {
            crate::outln!("Existing dispatcher cert found. No registered agents - replacing.")?;
        }
    }
    crate::outln!("Generating dispatcher certificate...")?;
    let (cert_pem, key_pem) = pki::issue_key_and_cert(
        &ca_cert_pem,
        &ca_key_pem,
        DISPATCHER_CN,
        conf.dispatcher_cert_days,
    )
    .map_err(|e| CliError::Failed(e.to_string()))?;
    for path in [&conf.key, &conf.cert] {
        if let Some(dir) = path.parent() {
            fsx::ensure_dir(dir, 0o750).map_err(|e| write_err(dir, e))?;
        }
    }
    let readers = account::service_gid(SERVICE_GROUP);
    fsx::write_key(&conf.key, key_pem.as_bytes(), readers).map_err(|e| write_err(&conf.key, e))?;
    if readers.is_some() {
        crate::outln!(
            "Key {} is 0640 root:{SERVICE_GROUP}, for the API service.",
            conf.key.display()
        )?;
    }
    fsx::write_atomic(&conf.cert, cert_pem.as_bytes(), 0o644)
        .map_err(|e| write_err(&conf.cert, e))?;
    if conf.ca != ca_cert && !conf.ca.exists() {
        fsx::write_atomic(&conf.ca, ca_cert_pem.as_bytes(), 0o644)
            .map_err(|e| write_err(&conf.ca, e))?;
    }
    let serial = pki::cert_info_pem(&cert_pem)
        .map(|i| i.serial)
        .unwrap_or_default();
    log::info("setup-ctrl-exec", &[("SERIAL", &serial)]);
    crate::outln!("dispatcher cert created:")?;
    crate::outln!("  Key:  {}", conf.key.display())?;
    crate::outln!("  Cert: {}", conf.cert.display())?;
    crate::outln!("Run 'ctrl-exec-dispatcher pairing-mode' to re-pair agents as needed.")?;
    Ok(0)
}
