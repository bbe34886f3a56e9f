//! `daemon.allow_ips`: the addresses allowed to connect to the daemon's HTTP server (the
//! API, metrics and webhooks alike). A connection from elsewhere is closed as soon as it is
//! accepted, before a byte of HTTP is read. Entries are CIDRs (`10.0.0.0/8`, `fd00::/8`)
//! or single addresses; an IPv4 peer reaching an IPv6 listener (`::ffff:a.b.c.d`) is
//! matched as the IPv4 address it is.

use std::net::IpAddr;

/// One allowed network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `x:…/n`, or an address alone (all of its bits).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let t = text.trim();
        let (addr, bits) = match t.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (t, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{t}` is not an IP address or a CIDR such as `10.0.0.0/8`"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("`{t}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.bits)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Whether `ip` may connect: an empty list allows everyone.
pub fn allowed(list: &[Cidr], ip: IpAddr) -> bool {
    list.is_empty() || list.iter().any(|c| c.contains(ip))
}

/// The client of a request that came through `peer`: `peer` itself unless it is a
/// trusted proxy; then the rightmost address of `X-Forwarded-For` that is not one (a
/// client can put anything on the left of the list, only the proxies' own additions on
/// the right are to be believed). `None`: the header names no address to believe.
pub fn client(peer: IpAddr, trusted: &[Cidr], forwarded_for: &[&str]) -> Option<IpAddr> {
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Some(peer);
    }
    let mut hops: Vec<&str> = forwarded_for.iter().flat_map(|h| h.split(',')).map(str::trim).collect();
    while let Some(hop) = hops.pop() {
        let ip: IpAddr = hop.trim_start_matches('[').split(']').next()?.parse().ok()?;
        if !trusted.iter().any(|c| c.contains(ip)) {
            return Some(ip);
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_and_no_others() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "an IPv4 peer on an IPv6 listener");
        assert!(!c.contains(ip("fd00::1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.7")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(allowed(&[], ip("198.51.100.1")));
        assert!(!allowed(&[c, one], ip("198.51.100.1")));
    }

    #[test]
    fn what_is_not_a_network_says_why() {
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("fd00::/129").unwrap_err().contains("0 to 128"));
        assert!(Cidr::parse("office").unwrap_err().contains("not an IP address"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_hop() {
        let proxies = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = ip("10.0.0.5");
        assert_eq!(
            client(ip("203.0.113.9"), &proxies, &["198.51.100.1"]),
            Some(ip("203.0.113.9")),
            "not a proxy: its own address"
        );
        assert_eq!(
            client(peer, &proxies, &["198.51.100.1, 203.0.113.7"]),
            Some(ip("203.0.113.7")),
            "a spoofed left entry is not believed"
        );
        assert_eq!(
            client(peer, &proxies, &["203.0.113.7", "10.0.0.9"]),
            Some(ip("203.0.113.7")),
            "proxies skipped, headers joined"
        );
        assert_eq!(client(peer, &proxies, &[]), Some(peer), "no header: the proxy itself");
        assert_eq!(client(peer, &proxies, &["not-an-ip"]), None);
    }
}
