//! `ced check-config`: reads ctrl-exec.conf as every other command does and
//! reports what would go wrong, without touching any state. An unknown key
//! (a typo such as `read_timout`, which the original ignored silently) is an
//! error here; keys that do nothing are warnings. The certificate, key and CA
//! it names must load and fit together: the key is the certificate's, the
//! certificate was issued by the CA and is valid now.

use std::path::Path;

use crate::conf::account::ServiceUser;
use crate::conf::DispatcherConf;
use crate::dispatcher::{Args, CliError};
use crate::exit;
use crate::net::tls::{self, Identity};
use crate::{pki, time};

/// The user the packaged API runs as.
const API_USER: &str = "ctrl-exec";

/// `ced check-config`: exit 0 when the file is usable and has no unknown
/// key, [`exit::CONFIG`] otherwise.
pub fn check_config(a: &Args) -> Result<u8, CliError> {
    crate::outln!("Checking {}...", a.config.display())?;
    let conf = match DispatcherConf::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            crate::outln!("  Config error: {e}")?;
            return Ok(exit::CONFIG);
        }
    };
    let mut errors = 0;
    for w in &conf.warnings {
        if w.is_unknown() {
            errors += 1;
            crate::outln!("  Config error: {w}")?;
        } else {
            crate::outln!("  Config warning: {w}")?;
        }
    }
    match identity(&conf) {
        Ok(line) => crate::outln!("  {line}")?,
        Err(e) => {
            errors += 1;
            crate::outln!("  Certificate error: {e}")?;
        }
    }
    errors += service_user_access(&conf, a)?;
    if errors == 0 {
        crate::outln!("Config OK.")?;
        Ok(exit::SUCCESS)
    } else {
        crate::outln!("{errors} error(s).")?;
        Ok(exit::CONFIG)
    }
}

/// Where the API's service user exists (packages and install.sh create
/// it), whether it can read the config, key and certificates and write the
/// run records and locks; one `Access error` line per problem, with its fix.
fn service_user_access(conf: &DispatcherConf, a: &Args) -> Result<usize, CliError> {
    let Ok(user) = ServiceUser::named(API_USER) else {
        return Ok(0);
    };
    let (runs, locks) = (conf.runs_dir(), conf.locks_dir());
    let reads: [&Path; 4] = [&a.config, &conf.cert, &conf.key, &conf.ca];
    let problems = user.problems(&reads, &[&runs, &locks]);
    for p in &problems {
        crate::outln!("  Access error: {p}")?;
    }
    if problems.is_empty() {
        crate::outln!(
            "  Access OK ({API_USER}, the API's user, can read the config, key and certificates)"
        )?;
    }
    Ok(problems.len())
}

/// Loads `cert`, `key` and `ca` the way the engine does and checks that
/// they fit; the line to print when they do.
fn identity(conf: &DispatcherConf) -> Result<String, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (cert_pem, key_pem, ca_pem) = (read(&conf.cert)?, read(&conf.key)?, read(&conf.ca)?);
    let id = Identity::from_pem(&cert_pem, &key_pem)
        .map_err(|e| format!("{}: {e}", conf.cert.display()))?;
    let ca = pki::pem_certs(&ca_pem)
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: no certificate", conf.ca.display()))?;
    // Builds the client configuration, which checks that the key is the certificate's.
    tls::mtls_client(&id, &ca).map_err(|e| format!("{}: {e}", conf.key.display()))?;
    let info = pki::verify_leaf(&id.chain[0], &ca, time::now(), pki::Purpose::Client)
        .map_err(|e| format!("{}: {e} ({})", conf.cert.display(), conf.ca.display()))?;
    Ok(format!(
        "Certificate OK: {} (serial {}, expires {}, issued by {})",
        conf.cert.display(),
        info.serial,
        time::openssl_date(info.not_after),
        conf.ca.display()
    ))
}
