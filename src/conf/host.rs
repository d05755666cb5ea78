//! The host-name lookups the parsers fall back to when a config does not name
//! the host: the short name for `dispatcher_id`, the FQDN for an agent.

use std::fs;

use crate::conf::FALLBACK_DISPATCHER_ID;

fn first_line(path: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Short host name: the kernel's, else /etc/hostname, else `dispatcher`.
pub(super) fn system_hostname() -> String {
    first_line("/proc/sys/kernel/hostname")
        .or_else(|| first_line("/etc/hostname"))
        .unwrap_or_else(|| FALLBACK_DISPATCHER_ID.to_string())
}

/// The host's FQDN: the kernel host name if it has a dot, else a dotted alias
/// of it from /etc/hosts, else the short name.
pub(super) fn system_fqdn() -> String {
    let short = first_line("/proc/sys/kernel/hostname")
        .or_else(|| first_line("/etc/hostname"))
        .unwrap_or_else(|| "localhost".to_string());
    if short.contains('.') {
        return short;
    }
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    fqdn_from_hosts(&short, &hosts).unwrap_or(short)
}

/// First dotted name on an /etc/hosts line whose names include `short`.
fn fqdn_from_hosts(short: &str, hosts: &str) -> Option<String> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if names.contains(&short) {
            names
                .iter()
                .find(|n| n.contains('.'))
                .map(|n| n.to_string())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_lookup_in_hosts() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.1 web1.commented.org web1\n127.0.1.1 web1.example.org web1 # x\n";
        assert_eq!(
            fqdn_from_hosts("web1", hosts).as_deref(),
            Some("web1.example.org")
        );
        assert_eq!(fqdn_from_hosts("db1", hosts), None);
        assert_eq!(fqdn_from_hosts("web1", "127.0.1.1 web1\n"), None);
    }
}
