//! Whether the agent's service user can use what `serve` needs: read its
//! config, allowlist, certificate, key, CA and trust files, and write its
//! state. Checked as root before a service starts (`cea check-start`) and
//! by `cea self-check`, so a key left 0600 root:root after pairing is named
//! with its fix instead of failing the service later.

use std::path::Path;

pub use crate::conf::account::ServiceUser;
use crate::conf::AgentConf;

/// One line per file or directory `user` cannot use, each with its fix.
/// Missing files are not judged here (pairing and `serve` report those).
pub fn problems(
    conf: &AgentConf,
    conf_path: &Path,
    allowlist_path: &Path,
    user: &ServiceUser,
) -> Vec<String> {
    let reads: Vec<&Path> = vec![
        conf_path,
        allowlist_path,
        &conf.cert,
        &conf.key,
        &conf.ca,
        &conf.trusted_dispatchers_path,
        &conf.revoked_serials,
    ];
    user.problems(&reads, &[&conf.state_dir, &conf.async_runs_dir])
}
