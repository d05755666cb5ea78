//! Rate-limit rules as written in the config: `limit/window/block`.

use std::time::Duration;

use crate::conf::raw::parse_uint;

/// A rate-limit rule: `limit` events within `window` block the peer for `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    /// Event count that triggers the block.
    pub limit: u32,
    /// Sliding window the events are counted in.
    pub window: Duration,
    /// How long a triggered peer stays blocked.
    pub block: Duration,
}

impl RateRule {
    pub(super) const fn secs(limit: u32, window: u64, block: u64) -> Self {
        RateRule {
            limit,
            window: Duration::from_secs(window),
            block: Duration::from_secs(block),
        }
    }

    /// Parses `limit/window/block` (whole numbers, window and block in seconds).
    pub fn parse(s: &str) -> Option<RateRule> {
        let mut parts = s.trim().split('/').map(str::trim);
        let limit = parse_uint(parts.next()?)?;
        let window = parse_uint(parts.next()?)?;
        let block = parse_uint(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(RateRule::secs(limit, window, block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_rule_parse() {
        let cases: &[(&str, Option<RateRule>)] = &[
            ("10/60/300", Some(RateRule::secs(10, 60, 300))),
            (" 0 / 1 / 2 ", Some(RateRule::secs(0, 1, 2))),
            ("10/60", None),
            ("10/60/300/1", None),
            ("a/b/c", None),
            ("-1/60/300", None),
            ("", None),
        ];
        for &(s, want) in cases {
            assert_eq!(RateRule::parse(s), want, "{s}");
        }
    }
}
