//! Whether the agent's service user can use what `serve` needs: read its
//! config, allowlist, certificate, key, CA and trust files, and write its
//! state. Checked as root before a service starts (`cea check-start`) and
//! by `cea self-check`, so a key left 0600 root:root after pairing is named
//! with its fix instead of failing the service later.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::conf::account::{self, Account};
use crate::conf::AgentConf;
use crate::fsx::{self, Access};

/// The user a check is for, as named on the command line or found.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    /// How messages name it: the user name, or `uid N`.
    pub label: String,
    /// Its primary group as a fix names it: the group's name when it is
    /// the user's name (as packages create them), else its gid.
    pub group: String,
    /// Its ids.
    pub account: Account,
}

impl ServiceUser {
    /// Looks up `name` (a user name or a numeric uid).
    pub fn named(name: &str) -> Result<ServiceUser, String> {
        let account = account::lookup(name)?;
        let numeric = name.parse::<u32>().is_ok();
        let label = if numeric {
            format!("uid {name}")
        } else {
            name.to_string()
        };
        let group = match account::group_id(name) {
            Some(gid) if !numeric && gid == account.gid => name.to_string(),
            _ => account.gid.to_string(),
        };
        Ok(ServiceUser {
            label,
            group,
            account,
        })
    }
}

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
    let group = user.group.clone();
    let mut out = Vec::new();
    for path in reads.into_iter().filter(|p| p.exists()) {
        if !fsx::permitted(path, user.account.uid, &user.account.groups, Access::Read) {
            out.push(format!(
                "{} cannot read {} ({}); fix: chgrp {group} {p} && chmod g+r {p} (and make its directories searchable)",
                user.label,
                path.display(),
                describe(path),
                p = path.display(),
            ));
        }
    }
    let writes: Vec<PathBuf> = vec![conf.state_dir.clone(), conf.async_runs_dir.clone()];
    for dir in writes.iter().filter(|d| d.exists()) {
        if !fsx::permitted(
            dir,
            user.account.uid,
            &user.account.groups,
            Access::WriteDir,
        ) {
            out.push(format!(
                "{} cannot write {} ({}); fix: chown {}:{group} {d} && chmod 0750 {d}",
                user.label,
                dir.display(),
                describe(dir),
                user.account.uid,
                d = dir.display(),
            ));
        }
    }
    out
}

/// `0600 uid 0 gid 0`: what a fix changes.
fn describe(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!("{:04o} uid {} gid {}", m.mode() & 0o7777, m.uid(), m.gid()),
        Err(e) => e.to_string(),
    }
}
