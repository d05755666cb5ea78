//! IP networks for `allowed_ips`: an address and a prefix, IPv4 or IPv6, with
//! the original's lenient dotted-quad reading.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::conf::raw::parse_uint;

/// An IP network from `allowed_ips`: an address and a prefix length
/// (32 or 128 for a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Address as written (host bits are ignored when matching).
    pub addr: IpAddr,
    /// Prefix length. Invariant: <= 32 for IPv4, <= 128 for IPv6.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `a.b.c.d`, `a.b.c.d/N` (0-32), an IPv6 address or `addr/N`
    /// (0-128). IPv4 octets with leading zeros (`010.0.0.1`) read as decimal,
    /// as the original canonicalised them.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = match parse_ipv4_lenient(addr) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => parse_uint::<u8>(p).filter(|&p| p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 peer
    /// (`::ffff:10.0.0.1`) is compared as the IPv4 address it carries, and an
    /// IPv4 peer against an IPv6 entry as its mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => v4_match(net, peer, self.prefix),
            (IpAddr::V4(net), IpAddr::V6(peer)) => peer
                .to_ipv4_mapped()
                .is_some_and(|p| v4_match(net, p, self.prefix)),
            (IpAddr::V6(net), IpAddr::V6(peer)) => v6_match(net, peer, self.prefix),
            (IpAddr::V6(net), IpAddr::V4(peer)) => {
                v6_match(net, peer.to_ipv6_mapped(), self.prefix)
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn v4_match(net: Ipv4Addr, peer: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(net) & mask == u32::from(peer) & mask
}

fn v6_match(net: Ipv6Addr, peer: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(net) & mask == u128::from(peer) & mask
}

/// Dotted quad whose octets may carry leading zeros; std's parser refuses them.
fn parse_ipv4_lenient(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        // Bound the digit count before parsing; "0000000010" is not an octet.
        if p.len() > 3 {
            return None;
        }
        *o = parse_uint(p)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipnet_table() {
        // entry, peer, contains; entry None = must not parse
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("192.168.1.7/32", "192.168.1.7", true),
            ("192.168.1.7/32", "192.168.1.8", false),
            ("192.168.0.0/23", "192.168.1.200", true),
            ("010.000.000.001", "10.0.0.1", true),
            ("10.0.0.1", "::ffff:10.0.0.1", true),
            ("10.0.0.0/8", "::ffff:10.9.9.9", true),
            ("10.0.0.1", "::10.0.0.1", false),
            ("2001:db8::1", "2001:db8::1", true),
            ("2001:db8::/32", "2001:db8:ffff::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("::/0", "fe80::1", true),
            ("::/0", "10.0.0.1", true),
            ("::ffff:10.0.0.1", "10.0.0.1", true),
            ("2001:db8::1", "10.0.0.1", false),
        ];
        for &(entry, peer, want) in cases {
            let net = IpNet::parse(entry).unwrap_or_else(|| panic!("{entry} should parse"));
            assert_eq!(net.contains(ip(peer)), want, "{entry} contains {peer}");
        }
        assert_eq!(
            IpNet::parse("010.0.0.1/8"),
            Some(IpNet {
                addr: ip("10.0.0.1"),
                prefix: 8
            })
        );
        assert_eq!(IpNet::parse("::1").map(|n| n.prefix), Some(128));
        for bad in [
            "",
            "garbage",
            "10.0.0",
            "10.0.0.1.5",
            "256.0.0.1",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "0010.0.0.1",
            "10.0.0.1/8/8",
            "::1/129",
            "2001:db8::g",
            " 10.0.0.1",
        ] {
            assert_eq!(IpNet::parse(bad), None, "{bad:?}");
        }
    }
}
