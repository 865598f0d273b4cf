//! Which addresses roxpi may connect to upstream. A hostile index page (or
//! redirect) must not make roxpi fetch internal URLs, so by default every
//! address that is loopback, private, link-local (cloud metadata services
//! live there), shared (CGNAT), unspecified, multicast or otherwise special
//! is refused, unless the operator allows its class
//! (`ROXPI_UPSTREAM_ALLOW`). The configured origins themselves (each
//! index's, the bucket's and the proxy's scheme, host and port) are
//! trusted by the upstream client whatever they resolve to; any other
//! origin on the same address is not.
//!
//! Enforced where names become addresses (the upstream client's resolver),
//! so redirects and file links on any host are covered alike, and a name
//! cannot be resolved to one address when checked and another when used.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of an IP address, for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrClass {
    Public,
    Loopback,
    /// RFC 1918 and IPv6 unique local (fc00::/7).
    Private,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10 (carrier-grade NAT).
    Shared,
    Unspecified,
    /// Multicast, broadcast, reserved (240.0.0.0/4).
    Special,
}

impl AddrClass {
    /// Every class but `Public` (always allowed).
    pub const NON_PUBLIC: [AddrClass; 6] = [
        AddrClass::Loopback,
        AddrClass::Private,
        AddrClass::LinkLocal,
        AddrClass::Shared,
        AddrClass::Unspecified,
        AddrClass::Special,
    ];

    /// The setting's name for it.
    pub fn name(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Shared => "shared",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Special => "special",
        }
    }

    pub fn parse(s: &str) -> Option<AddrClass> {
        AddrClass::NON_PUBLIC
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_private() {
        AddrClass::Private
    } else if ip.is_link_local() {
        AddrClass::LinkLocal
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        AddrClass::Shared
    } else if ip.is_unspecified() || o[0] == 0 {
        AddrClass::Unspecified
    } else if ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        // Documentation ranges (TEST-NET) are not special: they reach no
        // internal service, and some sandboxes route mirrors there.
        AddrClass::Special
    } else {
        AddrClass::Public
    }
}

/// The IPv4 address an IPv6 address carries and reaches: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated but still
/// routed by some stacks), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let first = s[0];
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_unspecified() {
        AddrClass::Unspecified
    } else if (first & 0xfe00) == 0xfc00 || (s[0], s[1], s[2]) == (0x64, 0xff9b, 1) {
        // Unique local, and local-use NAT64 (RFC 8215: 64:ff9b:1::/48).
        AddrClass::Private
    } else if (first & 0xffc0) == 0xfe80 {
        AddrClass::LinkLocal
    } else if ip.is_multicast() {
        AddrClass::Special
    } else {
        AddrClass::Public
    }
}

/// The class of an address.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The classes upstream connections may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: BTreeSet<AddrClass>,
}

impl AddressPolicy {
    /// Public addresses, plus `extra` (the indexes' own classes and the
    /// operator's `ROXPI_UPSTREAM_ALLOW`).
    pub fn new(extra: impl IntoIterator<Item = AddrClass>) -> AddressPolicy {
        let mut allowed: BTreeSet<AddrClass> = extra.into_iter().collect();
        allowed.insert(AddrClass::Public);
        AddressPolicy { allowed }
    }

    /// Every address (`ROXPI_UPSTREAM_ALLOW=any`).
    pub fn any() -> AddressPolicy {
        AddressPolicy::new(AddrClass::NON_PUBLIC)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.contains(&classify(ip))
    }

    /// The classes allowed besides public ones, for the startup log.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self
            .allowed
            .iter()
            .filter(|c| **c != AddrClass::Public)
            .map(|c| c.name())
            .collect();
        if names.is_empty() {
            "public addresses only".into()
        } else {
            format!("public and {} addresses", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let cases = [
            ("8.8.8.8", AddrClass::Public),
            ("151.101.0.223", AddrClass::Public),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.8.9.10", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("169.254.169.254", AddrClass::LinkLocal),
            ("100.64.0.1", AddrClass::Shared),
            ("100.128.0.1", AddrClass::Public),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Unspecified),
            ("224.0.0.1", AddrClass::Special),
            ("255.255.255.255", AddrClass::Special),
            ("192.0.2.1", AddrClass::Public),
            ("203.0.113.80", AddrClass::Public),
            ("240.0.0.1", AddrClass::Special),
            ("::1", AddrClass::Loopback),
            ("::", AddrClass::Unspecified),
            ("fd00::1", AddrClass::Private),
            ("fc00::1", AddrClass::Private),
            ("fe80::1", AddrClass::LinkLocal),
            ("ff02::1", AddrClass::Special),
            ("2001:db8::1", AddrClass::Public),
            ("2a04:4e42::223", AddrClass::Public),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:169.254.169.254", AddrClass::LinkLocal),
            // IPv4-compatible, NAT64 and 6to4 carry an IPv4 address.
            ("::7f00:1", AddrClass::Loopback),
            ("::a01:203", AddrClass::Private),
            ("::808:808", AddrClass::Public),
            ("64:ff9b::7f00:1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::LinkLocal),
            ("64:ff9b::808:808", AddrClass::Public),
            ("64:ff9b:1::1", AddrClass::Private),
            ("2002:7f00:1::", AddrClass::Loopback),
            ("2002:a00:1::1", AddrClass::Private),
            ("2002:a9fe:a9fe::1", AddrClass::LinkLocal),
            ("2002:808:808::1", AddrClass::Public),
        ];
        for (ip, want) in cases {
            assert_eq!(classify(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn policy() {
        let default = AddressPolicy::new([]);
        assert!(default.allows("8.8.8.8".parse().unwrap()));
        for ip in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "0.0.0.0"] {
            assert!(!default.allows(ip.parse().unwrap()), "{ip}");
        }
        let local_index = AddressPolicy::new([AddrClass::Loopback]);
        assert!(local_index.allows("127.0.0.1".parse().unwrap()));
        assert!(!local_index.allows("169.254.169.254".parse().unwrap()));
        assert!(!local_index.allows("10.0.0.1".parse().unwrap()));
        assert!(AddressPolicy::any().allows("169.254.169.254".parse().unwrap()));
        assert_eq!(AddrClass::parse(" Link-Local "), Some(AddrClass::LinkLocal));
        assert_eq!(AddrClass::parse("public"), None, "public is always allowed");
        assert_eq!(local_index.describe(), "public and loopback addresses");
    }
}
