//! Who a `run_as` or a service user names: uid, primary gid and
//! supplementary groups, read from `/etc/passwd` and `/etc/group` (a static
//! binary has no NSS; hosts keep their service users in the local files),
//! and whether such a user can read and write what its service needs.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::fsx::{self, Access};

/// The identity a script runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (`initgroups`: the primary group and every group
    /// listing the user).
    pub groups: Vec<u32>,
    /// The login name (`USER`, `LOGNAME`); the number for a bare uid.
    pub name: String,
    /// The home directory (`HOME`); `/` for a bare uid.
    pub home: String,
}

/// Most bytes read from `/etc/passwd` or `/etc/group`: far above any real
/// host's, small enough that a corrupt file cannot exhaust memory.
const MAX_ACCOUNT_FILE_BYTES: u64 = 8 << 20;

fn read_small(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ACCOUNT_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

/// Looks up `run_as` (a user name, or a numeric uid that need not exist).
pub fn lookup(run_as: &str) -> Result<Account, String> {
    lookup_in(run_as, Path::new("/etc/passwd"), Path::new("/etc/group"))
}

/// The id of the group called `name` in `/etc/group`, if there is one.
pub fn group_id(name: &str) -> Option<u32> {
    group_id_in(name, Path::new("/etc/group"))
}

/// The group a service's key is written for: `name`'s gid when this
/// process may give files to it (root) and the group exists.
pub fn service_gid(name: &str) -> Option<u32> {
    rustix::process::geteuid()
        .is_root()
        .then(|| group_id(name))
        .flatten()
}

fn group_id_in(name: &str, group: &Path) -> Option<u32> {
    read_small(group).ok()?.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name))
            .then(|| f.get(2)?.parse().ok())
            .flatten()
    })
}

fn lookup_in(run_as: &str, passwd: &Path, group: &Path) -> Result<Account, String> {
    let numeric: Option<u32> = run_as.parse().ok();
    let users = read_small(passwd)?;
    let entry = users.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?.parse::<u32>().ok()?, f.get(3)?);
        let hit = match numeric {
            Some(n) => uid == n,
            None => *name == run_as,
        };
        let home = f.get(5).copied().filter(|h| !h.is_empty()).unwrap_or("/");
        hit.then(|| {
            Some((
                name.to_string(),
                uid,
                gid.parse::<u32>().ok()?,
                home.to_string(),
            ))
        })
        .flatten()
    });
    let (name, uid, gid, home) = match (entry, numeric) {
        (Some(e), _) => e,
        // A bare uid without an account: its own number as the group.
        (None, Some(n)) => {
            return Ok(Account {
                uid: n,
                gid: n,
                groups: vec![n],
                name: n.to_string(),
                home: "/".into(),
            })
        }
        (None, None) => return Err(format!("unknown run_as user '{run_as}'")),
    };
    let mut groups = vec![gid];
    for line in read_small(group)?.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let (Some(g), Some(members)) = (f.get(2).and_then(|g| g.parse().ok()), f.get(3)) else {
            continue;
        };
        if members.split(',').any(|m| m == name) && !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(Account {
        uid,
        gid,
        groups,
        name,
        home,
    })
}

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
        let account = lookup(name)?;
        let numeric = name.parse::<u32>().is_ok();
        let label = if numeric {
            format!("uid {name}")
        } else {
            name.to_string()
        };
        let group = match group_id(name) {
            Some(gid) if !numeric && gid == account.gid => name.to_string(),
            _ => account.gid.to_string(),
        };
        Ok(ServiceUser {
            label,
            group,
            account,
        })
    }

    /// One line per path this user cannot use, with its fix: each of
    /// `reads` it cannot read, each of `writes` (directories) it cannot
    /// create files in. Missing paths are not judged here.
    pub fn problems(&self, reads: &[&Path], writes: &[&Path]) -> Vec<String> {
        let (uid, group) = (self.account.uid, &self.group);
        let wanted = reads
            .iter()
            .map(|p| (*p, Access::Read))
            .chain(writes.iter().map(|d| (*d, Access::WriteDir)));
        wanted
            .filter(|(p, access)| {
                p.exists() && !fsx::permitted(p, uid, &self.account.groups, *access)
            })
            .map(|(p, access)| {
                let (verb, fix) = match access {
                    Access::Read => ("read", format!("chgrp {group} {0} && chmod g+r {0} (and make its directories searchable)", p.display())),
                    Access::WriteDir => ("write", format!("chown {uid}:{group} {0} && chmod 0750 {0}", p.display())),
                };
                format!("{} cannot {verb} {} ({}); fix: {fix}", self.label, p.display(), describe(p))
            })
            .collect()
    }
}

/// `0600 uid 0 gid 0`: what a fix changes.
fn describe(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!("{:04o} uid {} gid {}", m.mode() & 0o7777, m.uid(), m.gid()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_uids_resolve_with_their_groups() {
        let dir = crate::testutil::scratch_dir("account");
        let (passwd, group) = (dir.join("passwd"), dir.join("group"));
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\nbackup:x:34:34::/var/backups:/bin/false\nbroken:x\n",
        )
        .unwrap();
        std::fs::write(
            &group,
            "root:x:0:\ndisk:x:6:backup,other\nbackup:x:34:\ntape:x:26:backup\n",
        )
        .unwrap();
        let backup = lookup_in("backup", &passwd, &group).unwrap();
        assert_eq!(
            (backup.name.as_str(), backup.home.as_str()),
            ("backup", "/var/backups")
        );
        assert_eq!(
            (backup.uid, backup.gid, backup.groups),
            (34, 34, vec![34, 6, 26])
        );
        assert_eq!(lookup_in("0", &passwd, &group).unwrap().groups, vec![0]);
        assert_eq!(group_id_in("tape", &group), Some(26));
        assert_eq!(group_id_in("nope", &group), None);
        let bare = lookup_in("4000", &passwd, &group).unwrap();
        assert_eq!((bare.uid, bare.gid, bare.groups), (4000, 4000, vec![4000]));
        let err = lookup_in("nosuch", &passwd, &group).unwrap_err();
        assert!(err.contains("unknown run_as user 'nosuch'"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
