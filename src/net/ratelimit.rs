//! Per-source-IP connection rate limiting (reference surface.md 7.11).
//!
//! Two rules, each `limit` events inside `window` blocks the IP for `block`:
//! volume (connections known to be unauthenticated: the caller records one
//! once the handshake failed or proved no trusted identity, never at
//! accept, so a trusted peer's bursts never count) and probe (failed TLS
//! handshakes, keyed on the real peer IP, unlike the original which
//! recorded them as `unknown`). What a block means is the caller's choice
//! (refuse at accept, or admit only a peer that proves a trusted identity);
//! [`RateLimiter::blocked`] answers whether one is in force. Once a block
//! ends its entry is forgotten.
//!
//! Invariant: the table never holds more than `capacity` IPs, and each entry
//! keeps at most `limit` timestamps per rule, so a flood of distinct sources
//! costs bounded memory. Eviction drops expired blocks first, then unblocked
//! entries (oldest activity first), and only then the block that ends soonest,
//! so an active block is never dropped to make room for an unblocked IP.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One rule: `limit` events inside `window` block the IP for `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Events that trigger a block (0 disables the rule).
    pub limit: u32,
    /// The sliding window the events are counted in.
    pub window: Duration,
    /// How long a triggered block lasts.
    pub block: Duration,
}

/// Which rule caused a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Too many connections.
    Volume,
    /// Too many failed handshakes.
    Probe,
}

impl Reason {
    /// The log word for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Volume => "volume",
            Reason::Probe => "probe",
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    conns: VecDeque<Instant>,
    fails: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

/// The default table capacity (the original's 1000 IPs).
pub const DEFAULT_CAPACITY: usize = 1000;

/// The limiter state; one per listener.
#[derive(Debug)]
pub struct RateLimiter {
    volume: Option<Rule>,
    probe: Option<Rule>,
    capacity: usize,
    table: HashMap<IpAddr, Entry>,
}

impl RateLimiter {
    /// A limiter with the given rules (`None` or a zero limit disables a rule).
    pub fn new(volume: Option<Rule>, probe: Option<Rule>, capacity: usize) -> RateLimiter {
        let active = |r: Option<Rule>| r.filter(|r| r.limit > 0);
        RateLimiter {
            volume: active(volume),
            probe: active(probe),
            capacity: capacity.max(1),
            table: HashMap::new(),
        }
    }

    /// Whether any rule is active.
    pub fn enabled(&self) -> bool {
        self.volume.is_some() || self.probe.is_some()
    }

    /// Whether a block on `ip` is in force at `now`; records nothing. An
    /// expired block is forgotten here.
    pub fn blocked(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(until) = self.table.get(&ip).and_then(|e| e.blocked_until) else {
            return false;
        };
        if until > now {
            return true;
        }
        self.table.remove(&ip);
        false
    }

    /// Records a connection from `ip` known to be unauthenticated (volume
    /// rule); returns the reason if this one started a block.
    pub fn unauthenticated(&mut self, ip: IpAddr, now: Instant) -> Option<Reason> {
        let rule = self.volume?;
        if self.blocked(ip, now) {
            return None;
        }
        self.make_room(ip, now);
        let entry = self.table.entry(ip).or_default();
        entry.last_seen = Some(now);
        prune(&mut entry.conns, now, rule);
        push_capped(&mut entry.conns, now, rule.limit);
        if entry.conns.len() as u32 >= rule.limit {
            entry.blocked_until = Some(now + rule.block);
            return Some(Reason::Volume);
        }
        None
    }

    /// Records a failed handshake from `ip`; returns the reason if this
    /// failure started a block.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) -> Option<Reason> {
        let rule = self.probe?;
        self.make_room(ip, now);
        let entry = self.table.entry(ip).or_default();
        entry.last_seen = Some(now);
        prune(&mut entry.fails, now, rule);
        push_capped(&mut entry.fails, now, rule.limit);
        if entry.fails.len() as u32 >= rule.limit && entry.blocked_until.is_none_or(|t| t <= now) {
            entry.blocked_until = Some(now + rule.block);
            return Some(Reason::Probe);
        }
        None
    }

    /// Forgets everything (on reload).
    pub fn clear(&mut self) {
        self.table.clear();
    }

    /// The number of IPs tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no IP is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Returns true if an entry was evicted.
    fn make_room(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.table.len() < self.capacity || self.table.contains_key(&ip) {
            return false;
        }
        self.table
            .retain(|_, e| e.blocked_until.is_none_or(|t| t > now));
        if self.table.len() < self.capacity {
            return true;
        }
        let victim = self
            .table
            .iter()
            .filter(|(_, e)| e.blocked_until.is_none())
            .min_by_key(|(_, e)| e.last_seen)
            .or_else(|| self.table.iter().min_by_key(|(_, e)| e.blocked_until))
            .map(|(ip, _)| *ip);
        if let Some(v) = victim {
            self.table.remove(&v);
        }
        true
    }
}

fn prune(events: &mut VecDeque<Instant>, now: Instant, rule: Rule) {
    while events
        .front()
        .is_some_and(|t| now.duration_since(*t) >= rule.window)
    {
        events.pop_front();
    }
}

fn push_capped(events: &mut VecDeque<Instant>, now: Instant, limit: u32) {
    events.push_back(now);
    while events.len() > limit as usize {
        events.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(limit: u32) -> Option<Rule> {
        Some(Rule {
            limit,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
        })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn tenth_unauthenticated_connection_in_window_blocks() {
        let mut rl = RateLimiter::new(rule(10), None, DEFAULT_CAPACITY);
        let t0 = Instant::now();
        for i in 0..9 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(rl.unauthenticated(ip(1), at), None, "conn {i}");
            assert!(!rl.blocked(ip(1), at));
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(rl.unauthenticated(ip(1), at), Some(Reason::Volume));
        assert!(rl.blocked(ip(1), t0 + Duration::from_secs(20)));
        assert_eq!(rl.unauthenticated(ip(1), at), None, "logged once");
        assert!(!rl.blocked(ip(2), t0 + Duration::from_secs(20)));
        // The block ends: the entry is forgotten.
        assert!(!rl.blocked(ip(1), t0 + Duration::from_secs(311)));
        assert_eq!(rl.len(), 0);
    }

    #[test]
    fn checking_a_block_records_nothing() {
        let mut rl = RateLimiter::new(rule(1), rule(1), DEFAULT_CAPACITY);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(!rl.blocked(ip(1), t0));
        }
        assert!(rl.is_empty());
    }

    #[test]
    fn window_slides() {
        let mut rl = RateLimiter::new(rule(2), None, DEFAULT_CAPACITY);
        let t0 = Instant::now();
        assert_eq!(rl.unauthenticated(ip(1), t0), None);
        assert_eq!(
            rl.unauthenticated(ip(1), t0 + Duration::from_secs(61)),
            None
        );
        assert!(!rl.blocked(ip(1), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn probe_failures_block_the_real_ip() {
        let mut rl = RateLimiter::new(None, rule(3), DEFAULT_CAPACITY);
        let t0 = Instant::now();
        assert_eq!(rl.failure(ip(7), t0), None);
        assert_eq!(rl.failure(ip(7), t0), None);
        assert_eq!(rl.failure(ip(7), t0), Some(Reason::Probe));
        assert!(rl.blocked(ip(7), t0));
        assert!(!rl.blocked(ip(8), t0));
    }

    #[test]
    fn flood_of_sources_stays_bounded_and_keeps_blocks() {
        let mut rl = RateLimiter::new(rule(2), None, 1000);
        let t0 = Instant::now();
        assert_eq!(rl.unauthenticated(ip(0), t0), None);
        assert_eq!(rl.unauthenticated(ip(0), t0), Some(Reason::Volume));
        for n in 1..5000 {
            rl.unauthenticated(ip(n), t0 + Duration::from_millis(n as u64));
            assert!(rl.len() <= 1000);
        }
        assert!(rl.blocked(ip(0), t0 + Duration::from_secs(10)));
    }

    #[test]
    fn disabled_rules_record_nothing() {
        let mut rl = RateLimiter::new(rule(0), None, 10);
        assert!(!rl.enabled());
        for _ in 0..100 {
            assert_eq!(rl.unauthenticated(ip(1), Instant::now()), None);
            assert!(!rl.blocked(ip(1), Instant::now()));
        }
    }
}
