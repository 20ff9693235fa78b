//! The lab's address plan, per family:
//!
//! | what                         | IPv4                    | IPv6                      |
//! |------------------------------|-------------------------|---------------------------|
//! | pod CIDR (IPAM)              | `10.244.0.0/16`         | `fd00:10:244::/48`        |
//! | node i's subnet (IPAM)       | `10.244.<i-1>.0/24`     | `fd00:10:244:<i-1>::/64`  |
//! | node i's gateway on `cni0`   | `10.244.<i-1>.1`        | `fd00:10:244:<i-1>::1`    |
//! | node i on its inter-node links | `169.254.255.<i>`     | `fd00:ffff::<i>`          |
//!
//! A pod whose manifest gives its address keeps it (`static` IPAM). Its prefix on `eth0` is
//! /24 (IPv4) or /64 (IPv6, `ptp`) with a gateway in that prefix that no pod of the lab has
//! (the highest free address); under `bridge` an IPv6 static address is a /128 routed through
//! `fe80::1` on the bridge (no on-link prefix shared with pods of other nodes).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 pod CIDR: one /24 per node.
pub const POD_CIDR_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 16);
/// IPv6 pod CIDR: one /64 per node.
pub const POD_CIDR_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0), 48);
/// The link-local gateway of IPv6 static pods on a bridge (and of the lab's own wiring).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Node `index` (1-based)'s IPAM subnet of the family (`v6`), as `(network, prefix)`.
pub fn node_subnet(index: usize, v6: bool) -> (IpAddr, u8) {
    let i = (index - 1) as u32;
    if v6 {
        let base = u128::from(POD_CIDR_V6.0) | (u128::from(i) << 64);
        (IpAddr::V6(Ipv6Addr::from(base)), 64)
    } else {
        let base = u32::from(POD_CIDR_V4.0) | (i << 8);
        (IpAddr::V4(Ipv4Addr::from(base)), 24)
    }
}

/// Node `index`'s gateway address in its IPAM subnet (`.1` / `::1`).
pub fn node_gateway(index: usize, v6: bool) -> IpAddr {
    offset(node_subnet(index, v6).0, 1)
}

/// Host number `n` of the subnet whose network address is `net`.
pub fn offset(net: IpAddr, n: u32) -> IpAddr {
    match net {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + n)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + u128::from(n))),
    }
}

/// Node `index`'s own address on its links to the other nodes.
pub fn link_addr(index: usize, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, index as u16))
    } else {
        IpAddr::V4(Ipv4Addr::new(169, 254, 255, index as u8))
    }
}

/// Whether `ip` lies in the pod CIDR IPAM hands addresses out of.
pub fn in_pod_cidr(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => u32::from(a) >> 16 == u32::from(POD_CIDR_V4.0) >> 16,
        IpAddr::V6(a) => u128::from(a) >> 80 == u128::from(POD_CIDR_V6.0) >> 80,
    }
}

/// `ip/len` as text; `len` is the host length of the family when `None`.
pub fn cidr(ip: IpAddr, len: Option<u8>) -> String {
    let len = len.unwrap_or(if ip.is_ipv6() { 128 } else { 32 });
    format!("{ip}/{len}")
}

/// The prefix length and gateway a pod with static address `ip` gets on `eth0`: a /24 or /64
/// around it, gateway the highest address of that prefix (below broadcast) that is not in
/// `taken` (every pod address of the lab). `None` if the prefix has no free address.
pub fn static_gateway(ip: IpAddr, taken: &BTreeSet<IpAddr>) -> Option<(u8, IpAddr)> {
    match ip {
        IpAddr::V4(a) => {
            let net = u32::from(a) & !0xff;
            (1..=254u32)
                .rev()
                .map(|h| IpAddr::V4(Ipv4Addr::from(net | h)))
                .find(|g| *g != ip && !taken.contains(g))
                .map(|g| (24, g))
        }
        IpAddr::V6(a) => {
            let net = u128::from(a) & !u128::from(u64::MAX);
            (1..=0xffffu128)
                .map(|k| IpAddr::V6(Ipv6Addr::from(net | (u128::from(u64::MAX) - k))))
                .find(|g| *g != ip && !taken.contains(g))
                .map(|g| (64, g))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn node_subnets_and_links_per_family() {
        assert_eq!(node_subnet(1, false), (ip("10.244.0.0"), 24));
        assert_eq!(node_subnet(3, true), (ip("fd00:10:244:2::"), 64));
        assert_eq!(node_gateway(2, false), ip("10.244.1.1"));
        assert_eq!(node_gateway(2, true), ip("fd00:10:244:1::1"));
        assert_eq!(link_addr(2, true), ip("fd00:ffff::2"));
        assert!(in_pod_cidr(ip("10.244.9.9")));
        assert!(!in_pod_cidr(ip("10.245.0.1")));
        assert!(in_pod_cidr(ip("fd00:10:244:7::5")));
        assert!(!in_pod_cidr(ip("fd00::a00:101")));
        assert_eq!(cidr(ip("fd00::1"), None), "fd00::1/128");
    }

    #[test]
    fn static_gateways_avoid_pod_addresses() {
        let taken: BTreeSet<IpAddr> = [ip("10.0.1.254"), ip("10.0.1.1")].into();
        assert_eq!(
            static_gateway(ip("10.0.1.1"), &taken),
            Some((24, ip("10.0.1.253")))
        );
        assert_eq!(
            static_gateway(ip("fd00::a00:101"), &BTreeSet::new()),
            Some((64, ip("fd00::ffff:ffff:ffff:fffe")))
        );
    }
}
