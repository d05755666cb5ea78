//! Which hosts a `run` or `ping` addresses: the host words, `--hosts-file`
//! (one per line, `-` for stdin) and `--tags k=v[,k=v]` (every registered
//! agent whose tags all match), in that order, each host once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use crate::conf::DispatcherConf;
use crate::control::registry::Registry;
use crate::dispatcher::{Args, CliError};

use super::limits::MAX_LIST_FILE_BYTES;

/// The hosts named by `words`, `--hosts-file` and `--tags`, in that order,
/// without repeats. Empty when none of them names a host.
pub(super) fn select(
    a: &Args,
    conf: &DispatcherConf,
    words: &[String],
) -> Result<Vec<String>, CliError> {
    let mut hosts: Vec<String> = words.to_vec();
    if let Some(file) = &a.hosts_file {
        hosts.extend(read_lines(file, "host list")?);
    }
    if let Some(spec) = &a.tags {
        let filter = parse_tag_filter(spec)
            .map_err(|e| CliError::Usage(format!("Invalid --tags filter: {e}")))?;
        let agents = Registry::new(&conf.registry_dir)
            .list()
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let matched: Vec<String> = agents
            .into_iter()
            .filter(|ag| filter.iter().all(|(k, v)| ag.tags.get(k) == Some(v)))
            .map(|ag| ag.hostname)
            .collect();
        if matched.is_empty() {
            return Err(CliError::Failed(format!(
                "no registered agent has the tags {spec}"
            )));
        }
        hosts.extend(matched);
    }
    let mut seen = BTreeSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
    Ok(hosts)
}

/// The lines of `file` (`-`: stdin), trimmed; blank lines and `#` comments
/// skipped. `what` names the list in errors.
pub(super) fn read_lines(file: &str, what: &str) -> Result<Vec<String>, CliError> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin()
            .take(MAX_LIST_FILE_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(Path::new(file))
            .and_then(|f| f.take(MAX_LIST_FILE_BYTES + 1).read_to_string(&mut text))
    };
    let name = if file == "-" { "stdin" } else { file };
    read.map_err(|e| CliError::Failed(format!("cannot read {what} {name}: {e}")))?;
    if text.len() as u64 > MAX_LIST_FILE_BYTES {
        return Err(CliError::Failed(format!(
            "{what} {name} is larger than {} MiB",
            MAX_LIST_FILE_BYTES >> 20
        )));
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `k=v[,k=v...]` into a map; an empty or malformed filter is an error.
pub(super) fn parse_tag_filter(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("invalid tag filter '{pair}' (expected key=value)")),
        }
    }
    if out.is_empty() {
        return Err("empty tag filter (expected key=value[,key=value...])".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filters() {
        let f = parse_tag_filter("env=prod, role = web").unwrap();
        assert_eq!(f["env"], "prod");
        assert_eq!(f["role"], "web");
        assert!(parse_tag_filter("").is_err());
        assert!(parse_tag_filter("env").is_err());
        assert!(parse_tag_filter("=x").is_err());
    }
}
