//! Structured action logs: `ACTION=<action> KEY=value ...`, one line each.
//!
//! `ACTION` comes first and the other keys follow in alphabetical order, as
//! the original ctrl-exec writes them, so existing log alerts keep matching.
//! Unlike the original, every value a caller could influence is escaped: a
//! value with whitespace, quotes, backslashes, `=` or control characters is
//! wrapped in double quotes with `\"`, `\\`, `\n`, `\r`, `\t` and `\xNN`
//! escapes, so no request field can forge another field or another line.
//!
//! Lines go through the `log` facade to a tiny backend: stderr as
//! `<ident>: <line>`, or the local syslog socket (facility daemon) when the
//! role's config asks for it. Tokens are never passed here.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `<ident>: <line>` on standard error.
    Stderr,
    /// The local syslog socket `/dev/log`, facility daemon; stderr if absent.
    Syslog,
}

struct Backend {
    ident: &'static str,
    syslog: Option<UnixDatagram>,
}

static BACKEND: OnceLock<Backend> = OnceLock::new();

/// Sets the role's ident and target. Later calls are ignored.
pub fn init(ident: &'static str, target: Target) {
    init_with_level(ident, target, log::LevelFilter::Info);
}

/// Like [`init`], keeping only lines at `level` or above (the interactive CLI
/// shows warnings and errors on stderr, not every action).
pub fn init_with_level(ident: &'static str, target: Target, level: log::LevelFilter) {
    let syslog = match target {
        Target::Syslog => UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|_| s))
            .ok(),
        Target::Stderr => None,
    };
    if BACKEND.set(Backend { ident, syslog }).is_ok() {
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(level);
    }
}

/// Logs an informational action.
pub fn info(action: &str, fields: &[(&str, &str)]) {
    log::info!("{}", line(action, fields));
}

/// Logs a warning action (security-relevant refusals, config warnings).
pub fn warn(action: &str, fields: &[(&str, &str)]) {
    log::warn!("{}", line(action, fields));
}

/// Logs an error action (failures an operator must look at).
pub fn error(action: &str, fields: &[(&str, &str)]) {
    log::error!("{}", line(action, fields));
}

/// Formats one log line: `ACTION=` first, other keys sorted, values escaped.
pub fn line(action: &str, fields: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(64);
    out.push_str("ACTION=");
    push_value(&mut out, action);
    for (key, value) in sorted {
        out.push(' ');
        out.extend(key.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        }));
        out.push('=');
        push_value(&mut out, value);
    }
    out
}

fn push_value(out: &mut String, value: &str) {
    let plain = value
        .chars()
        .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\' && c != '=');
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        let Some(backend) = BACKEND.get() else { return };
        if let Some(sock) = &backend.syslog {
            let severity = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                _ => 6,
            };
            const FACILITY_DAEMON: u32 = 3;
            let msg = format!(
                "<{}>{}[{}]: {}",
                FACILITY_DAEMON * 8 + severity,
                backend.ident,
                std::process::id(),
                record.args()
            );
            if sock.send(msg.as_bytes()).is_ok() {
                return;
            }
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}: {}",
            backend.ident,
            record.args()
        );
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_first_then_sorted_keys() {
        assert_eq!(
            line(
                "run",
                &[("SCRIPT", "backup"), ("EXIT", "0"), ("PEER", "10.0.0.1")]
            ),
            "ACTION=run EXIT=0 PEER=10.0.0.1 SCRIPT=backup"
        );
    }

    #[test]
    fn injected_fields_stay_inside_one_quoted_value() {
        let l = line("deny", &[("USER", "x\" RESULT=pass\nACTION=run")]);
        assert_eq!(l, r#"ACTION=deny USER="x\" RESULT=pass\nACTION=run""#);
        assert_eq!(l.lines().count(), 1);
    }

    #[test]
    fn empty_value_is_bare_and_keys_are_sanitised() {
        assert_eq!(line("x", &[("a b", "")]), "ACTION=x A_B=");
    }
}
