//! The headers of a logged packet: addresses, protocol and destination port, read from the
//! start of its network header (NFLOG copies the first bytes of the packet from there).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a drop record says about the packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeaders {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
    /// Destination port (TCP, UDP, SCTP), when the copied bytes reach it.
    pub port: Option<u16>,
}

impl PacketHeaders {
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`, or the protocol number.
    pub fn protocol_name(&self) -> String {
        match self.protocol {
            6 => "TCP".into(),
            17 => "UDP".into(),
            132 => "SCTP".into(),
            1 => "ICMP".into(),
            58 => "ICMPv6".into(),
            n => n.to_string(),
        }
    }
}

/// Reads the IPv4 or IPv6 header at the start of `bytes` (IPv6 extension headers are
/// skipped); `None` when it is neither or too short.
pub fn parse(bytes: &[u8]) -> Option<PacketHeaders> {
    match bytes.first()? >> 4 {
        4 => parse_v4(bytes),
        6 => parse_v6(bytes),
        _ => None,
    }
}

fn parse_v4(b: &[u8]) -> Option<PacketHeaders> {
    let ihl = usize::from(b.first()? & 0x0f) * 4;
    if ihl < 20 || b.len() < 20 {
        return None;
    }
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let protocol = b[9];
    // Only the first fragment carries the transport header.
    let frag_offset = u16::from_be_bytes([b[6], b[7]]) & 0x1fff;
    let port = (frag_offset == 0)
        .then(|| dst_port(protocol, b.get(ihl..)?))
        .flatten();
    Some(PacketHeaders {
        src: src.into(),
        dst: dst.into(),
        protocol,
        port,
    })
}

fn parse_v6(b: &[u8]) -> Option<PacketHeaders> {
    if b.len() < 40 {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let octets: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(octets))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let mut next = b[6];
    let mut at = 40;
    let mut first_fragment = true;
    // Hop-by-hop, routing, fragment, destination options: skip to the transport header.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let h = b.get(at..at + 2);
                let Some(h) = h else { break };
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let Some(h) = b.get(at..at + 4) else { break };
                next = h[0];
                first_fragment = u16::from_be_bytes([h[2], h[3]]) >> 3 == 0;
                at += 8;
            }
            _ => break,
        }
    }
    let port = first_fragment
        .then(|| dst_port(next, b.get(at..)?))
        .flatten();
    Some(PacketHeaders {
        src: src.into(),
        dst: dst.into(),
        protocol: next,
        port,
    })
}

/// The destination port of a TCP, UDP or SCTP header (bytes 2..4 in all three).
fn dst_port(protocol: u8, l4: &[u8]) -> Option<u16> {
    match protocol {
        6 | 17 | 132 => Some(u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 and TCP headers of a SYN from 10.244.0.2:43512 to 10.244.1.2:80.
    pub(crate) const SYN_V4: &[u8] = &[
        0x45, 0x00, 0x00, 0x3c, 0x6f, 0x2c, 0x40, 0x00, 0x3f, 0x06, 0xb6, 0x4f, 0x0a, 0xf4, 0x00,
        0x02, 0x0a, 0xf4, 0x01, 0x02, 0xa9, 0xf8, 0x00, 0x50, 0x6b, 0x1b, 0x5d, 0x1e, 0x00, 0x00,
        0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x16, 0x3a, 0x00, 0x00,
    ];

    #[test]
    fn tcp_over_ipv4() {
        let h = parse(SYN_V4).unwrap();
        assert_eq!(h.src, "10.244.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "10.244.1.2".parse::<IpAddr>().unwrap());
        assert_eq!((h.protocol_name().as_str(), h.port), ("TCP", Some(80)));
    }

    #[test]
    fn icmp_has_no_port_and_later_fragments_neither() {
        let mut icmp = SYN_V4.to_vec();
        icmp[9] = 1;
        let h = parse(&icmp).unwrap();
        assert_eq!((h.protocol_name().as_str(), h.port), ("ICMP", None));
        let mut frag = SYN_V4.to_vec();
        frag[7] = 0x10;
        assert_eq!(parse(&frag).unwrap().port, None);
    }

    #[test]
    fn udp_over_ipv6_behind_a_destination_options_header() {
        let mut b = vec![0x60, 0, 0, 0, 0, 16, 60, 64];
        b.extend("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend([17, 0, 1, 4, 0, 0, 0, 0]); // dest options → UDP, 8 bytes
        b.extend([0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]); // 12345 → 53
        let h = parse(&b).unwrap();
        assert_eq!(h.dst, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!((h.protocol_name().as_str(), h.port), ("UDP", Some(53)));
        b[6] = 58;
        assert_eq!(parse(&b).unwrap().protocol_name(), "ICMPv6");
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x45, 0, 0]), None);
        assert_eq!(parse(&[0x20; 60]), None);
    }
}
