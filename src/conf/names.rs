//! Name rules shared by the parsers and the roles: agent, script and profile
//! names, and the dispatcher-id sanitiser. One validator per identifier.

use crate::conf::{FALLBACK_DISPATCHER_ID, MAX_DISPATCHER_ID_CHARS};
use crate::proto::{AgentName, ScriptName};

/// Sanitises a dispatcher id (protocol.md 5.6): characters outside
/// `[A-Za-z0-9._-]` become `-`, leading non-alphanumerics are stripped, the
/// result is cut to 64 characters, and an empty result becomes `dispatcher`.
pub fn sanitise_dispatcher_id(s: &str) -> String {
    let replaced: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id: String = replaced
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(MAX_DISPATCHER_ID_CHARS)
        .collect();
    if id.is_empty() {
        FALLBACK_DISPATCHER_ID.to_string()
    } else {
        id
    }
}

/// Whether `name` can name an agent: its certificate CN, its registry key and
/// registry file name (`^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 253 bytes).
pub fn valid_agent_name(name: &str) -> bool {
    AgentName::parse(name).is_some()
}

/// Whether `name` is a valid script name: `^[A-Za-z0-9_-]+$`, at most 255 chars.
pub fn valid_script_name(name: &str) -> bool {
    ScriptName::parse(name).is_some()
}

/// `[\w.-]+`.
pub(super) fn is_profile_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatcher_id_sanitising() {
        let cases = [
            ("ced01", "ced01"),
            ("ced 01/x", "ced-01-x"),
            ("..-_x.y", "x.y"),
            ("---", "dispatcher"),
            ("", "dispatcher"),
            ("héllo", "h-llo"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitise_dispatcher_id(input), want, "{input}");
        }
        assert_eq!(sanitise_dispatcher_id(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn script_names() {
        for (name, ok) in [
            ("backup", true),
            ("a-b_C9", true),
            ("", false),
            ("a.b", false),
            ("a b", false),
            ("../x", false),
            ("é", false),
        ] {
            assert_eq!(valid_script_name(name), ok, "{name:?}");
        }
        assert!(valid_script_name(&"a".repeat(255)));
        assert!(!valid_script_name(&"a".repeat(256)));
    }
}
