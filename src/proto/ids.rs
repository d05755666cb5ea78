//! The identifiers that cross the wire and name files, each a newtype whose
//! only constructor validates it: a value that reached a handler, a path or
//! a log line is already known to be safe.
//!
//! | type | form |
//! |---|---|
//! | [`ReqId`] | `^[A-Za-z0-9_-]{1,128}$` |
//! | [`ScriptName`] | `^[A-Za-z0-9_-]{1,255}$` (the original's `^[\w-]+$`) |
//! | [`AgentName`] | `^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 253 |
//! | [`DispatcherId`] | `^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 64 |
//! | [`Serial`] | minimal lowercase hex (any form of protocol.md 2.4 in) |
//! | [`Fingerprint`] | 64 lowercase hex digits (SHA-256) |

use std::fmt;

use crate::pki;
use crate::proto::limits::{
    MAX_AGENT_NAME_CHARS, MAX_DISPATCHER_ID_CHARS, MAX_REQID_CHARS, MAX_SCRIPT_NAME_CHARS,
    MAX_SERIAL_HEX_DIGITS,
};

/// Defines a string newtype with `as_str`, `Display`, `AsRef<str>` and
/// `into_string`; the validating constructor is written per type.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The validated text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A request id: names a run record and an async job file.
    ReqId
);
string_id!(
    /// A script name from the allowlist.
    ScriptName
);
string_id!(
    /// An host's name: certificate CN, registry key and file name.
    AgentName
);
string_id!(
    /// A controller's stable id: the host's job-store directory and the
    /// owner of trusted serials.
    DispatcherId
);
string_id!(
    /// A certificate serial in canonical form (minimal lowercase hex).
    Serial
);
string_id!(
    /// A SHA-256 fingerprint (of a certificate or a public key), lowercase hex.
    Fingerprint
);

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn is_dotted_name(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

impl ReqId {
    /// Validates a request id.
    pub fn parse(s: &str) -> Option<ReqId> {
        ((1..=MAX_REQID_CHARS).contains(&s.len()) && s.bytes().all(is_word_byte))
            .then(|| ReqId(s.to_string()))
    }

    /// A fresh id: 8 random bytes as 16 lowercase hex digits, as the
    /// original mints them.
    pub fn random() -> ReqId {
        ReqId(pki::random_hex(8))
    }
}

impl ScriptName {
    /// Validates a script name.
    pub fn parse(s: &str) -> Option<ScriptName> {
        ((1..=MAX_SCRIPT_NAME_CHARS).contains(&s.len()) && s.bytes().all(is_word_byte))
            .then(|| ScriptName(s.to_string()))
    }
}

impl AgentName {
    /// Validates an host name.
    pub fn parse(s: &str) -> Option<AgentName> {
        is_dotted_name(s, MAX_AGENT_NAME_CHARS).then(|| AgentName(s.to_string()))
    }
}

impl DispatcherId {
    /// Validates a controller id as stored in the trusted map.
    pub fn parse(s: &str) -> Option<DispatcherId> {
        is_dotted_name(s, MAX_DISPATCHER_ID_CHARS).then(|| DispatcherId(s.to_string()))
    }
}

impl Serial {
    /// Parses any form of protocol.md 2.4 (hex, colon hex, `serial=`/`0x`
    /// prefixes) into the canonical form. All-digit input is hex, unlike the
    /// original's `serial_to_hex` (see docs/COMPAT.md).
    pub fn parse(s: &str) -> Option<Serial> {
        pki::canonical_serial(s)
            .filter(|c| c.len() <= MAX_SERIAL_HEX_DIGITS)
            .map(Serial)
    }

    /// The serial of a certificate, from its big-endian serial bytes.
    pub fn from_bytes(bytes: &[u8]) -> Serial {
        Serial(pki::serial_hex(bytes))
    }
}

impl Fingerprint {
    /// Parses `sha256:HEX`, OpenSSL's `SHA256 Fingerprint=HEX` or bare hex,
    /// with or without colons, any case.
    pub fn parse(s: &str) -> Option<Fingerprint> {
        pki::normalise_fingerprint(s).map(Fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reqids_are_word_characters_up_to_128() {
        assert!(ReqId::parse("a3f9b2c1d4e5f607").is_some());
        assert!(ReqId::parse("0123abcd_-X").is_some());
        assert!(ReqId::parse(&"a".repeat(128)).is_some());
        for bad in ["", "../x", "a/b", "a.json", "a b", &"a".repeat(129)] {
            assert!(ReqId::parse(bad).is_none(), "{bad:?}");
        }
        let fresh = ReqId::random();
        assert_eq!(fresh.as_str().len(), 16);
        assert!(ReqId::parse(fresh.as_str()).is_some());
    }

    #[test]
    fn script_names_follow_the_allowlist_rule() {
        assert!(ScriptName::parse("backup-mysql").is_some());
        assert!(ScriptName::parse("check_disk2").is_some());
        assert!(ScriptName::parse(&"a".repeat(255)).is_some());
        for bad in ["", "a.sh", "../x", "a b", "é", &"a".repeat(256)] {
            assert!(ScriptName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn agent_names_and_dispatcher_ids_start_alphanumeric() {
        assert!(AgentName::parse("web-01.example.com").is_some());
        assert!(AgentName::parse(&"a".repeat(253)).is_some());
        for bad in ["", "-x", ".x", "a/b", "a b", &"a".repeat(254)] {
            assert!(AgentName::parse(bad).is_none(), "{bad:?}");
        }
        assert!(DispatcherId::parse("ctrl-1.example_x").is_some());
        for bad in ["", "-x", &"a".repeat(65)] {
            assert!(DispatcherId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn serials_and_fingerprints_are_canonical() {
        assert_eq!(Serial::parse("0x00AB").unwrap().as_str(), "ab");
        assert_eq!(Serial::parse("AA:BB").unwrap().as_str(), "aabb");
        assert!(Serial::parse("zz").is_none());
        assert!(Serial::parse(&"f".repeat(65)).is_none());
        assert_eq!(Serial::from_bytes(&[0, 1, 2]).as_str(), "102");
        let hex = "AB".repeat(32);
        assert_eq!(
            Fingerprint::parse(&format!("sha256:{hex}"))
                .unwrap()
                .as_str(),
            "ab".repeat(32)
        );
        assert!(Fingerprint::parse("sha256:abc").is_none());
    }
}
