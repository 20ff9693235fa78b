//! ctnetlink messages: the dump request, the delete request, and the flows of a dump reply.
//! Layout: `nlmsghdr` (16 bytes), `nfgenmsg` (4 bytes), then attributes; numbers inside the
//! tuple attributes are in network byte order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::CtFlow;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn header(buf: &mut Vec<u8>, cmd: u16, flags: u16, seq: u32, family: u8) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | cmd).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&0u16.to_be_bytes());
}

fn finish(buf: &mut [u8]) {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn nested(buf: &mut Vec<u8>, ty: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    fill(buf);
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// A request for every flow of both families.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(20);
    header(
        &mut buf,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
    );
    finish(&mut buf);
    buf
}

/// A request to delete one flow by its original tuple (acknowledged).
pub fn delete_request(flow: &CtFlow, seq: u32) -> Vec<u8> {
    let v6 = flow.src.is_ipv6();
    let mut buf = Vec::with_capacity(96);
    header(
        &mut buf,
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        if v6 { AF_INET6 } else { AF_INET },
    );
    nested(&mut buf, CTA_TUPLE_ORIG, |b| {
        nested(b, CTA_TUPLE_IP, |b| match (flow.src, flow.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                attr(b, CTA_IP_V4_SRC, &s.octets());
                attr(b, CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                attr(b, CTA_IP_V6_SRC, &v6_octets(s));
                attr(b, CTA_IP_V6_DST, &v6_octets(d));
            }
        });
        nested(b, CTA_TUPLE_PROTO, |b| {
            attr(b, CTA_PROTO_NUM, &[flow.protocol]);
            match flow.icmp {
                Some((ty, code, id)) => {
                    let icmp6 = flow.protocol == IPPROTO_ICMPV6;
                    let (a_id, a_ty, a_code) = if icmp6 {
                        (
                            CTA_PROTO_ICMPV6_ID,
                            CTA_PROTO_ICMPV6_TYPE,
                            CTA_PROTO_ICMPV6_CODE,
                        )
                    } else {
                        (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE)
                    };
                    attr(b, a_id, &id.to_be_bytes());
                    attr(b, a_ty, &[ty]);
                    attr(b, a_code, &[code]);
                }
                None => {
                    attr(b, CTA_PROTO_SRC_PORT, &flow.src_port.to_be_bytes());
                    attr(b, CTA_PROTO_DST_PORT, &flow.dst_port.to_be_bytes());
                }
            }
        });
    });
    if flow.zone != 0 {
        attr(&mut buf, CTA_ZONE, &flow.zone.to_be_bytes());
    }
    finish(&mut buf);
    buf
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The attributes of a block: `(type without flags, payload)`.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((ty, payload))
    })
}

fn be16(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*p.first()?, *p.get(1)?]))
}

/// The flow of one `IPCTNL_MSG_CT_NEW` message body (after `nfgenmsg`); `None` when it has no
/// usable original tuple.
fn parse_flow(body: &[u8]) -> Option<CtFlow> {
    let mut zone = 0;
    let mut orig = None;
    for (ty, p) in attrs(body) {
        match ty {
            CTA_TUPLE_ORIG => orig = Some(p),
            CTA_ZONE => zone = be16(p)?,
            _ => {}
        }
    }
    let (mut src, mut dst) = (None, None);
    let (mut protocol, mut sport, mut dport) = (None, 0, 0);
    let (mut icmp_id, mut icmp_type, mut icmp_code) = (None, None, None);
    for (ty, p) in attrs(orig?) {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, a) in attrs(p) {
                    let ip = match (ty, a.len()) {
                        (CTA_IP_V4_SRC | CTA_IP_V4_DST, 4) => {
                            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
                        }
                        (CTA_IP_V6_SRC | CTA_IP_V6_DST, 16) => {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(a);
                            IpAddr::V6(Ipv6Addr::from(o))
                        }
                        _ => continue,
                    };
                    match ty {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(ip),
                        _ => dst = Some(ip),
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, a) in attrs(p) {
                    match ty {
                        CTA_PROTO_NUM => protocol = a.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(a)?,
                        CTA_PROTO_DST_PORT => dport = be16(a)?,
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => icmp_id = be16(a),
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            icmp_type = a.first().copied()
                        }
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                            icmp_code = a.first().copied()
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let protocol = protocol?;
    let icmp = match (protocol, icmp_type, icmp_code, icmp_id) {
        (IPPROTO_ICMP | IPPROTO_ICMPV6, Some(t), Some(c), Some(id)) => Some((t, c, id)),
        _ => None,
    };
    Some(CtFlow {
        src: src?,
        dst: dst?,
        protocol,
        src_port: sport,
        dst_port: dport,
        icmp,
        zone,
    })
}

/// One received datagram of a dump.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub flows: Vec<CtFlow>,
    /// `NLMSG_DONE` was seen: the dump is complete.
    pub done: bool,
    /// An `NLMSG_ERROR` with a non-zero code (negative errno) and its sequence number.
    pub error: Option<(i32, u32)>,
    /// Acknowledgements (`NLMSG_ERROR` with code 0) by sequence number.
    pub acks: Vec<u32>,
}

/// Parses one datagram of netlink messages.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let len = word(off) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let seq = word(off + 8);
        match ty {
            NLMSG_DONE => out.done = true,
            NLMSG_ERROR if len >= 20 => {
                let code = word(off + 16) as i32;
                if code == 0 {
                    out.acks.push(seq);
                } else {
                    out.error = Some((code, seq));
                }
            }
            t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW && len >= 20 => {
                if let Some(f) = parse_flow(&buf[off + 20..off + len]) {
                    out.flows.push(f);
                }
            }
            _ => {}
        }
        off += align4(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, protocol: u8) -> CtFlow {
        CtFlow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            src_port: if protocol == 6 { 43210 } else { 0 },
            dst_port: if protocol == 6 { 80 } else { 0 },
            icmp: (protocol == 1 || protocol == 58).then_some((8, 0, 77)),
            zone: 0,
        }
    }

    /// A dump reply carrying `f` is what a delete request of `f` sends, with the reply's
    /// message type: so encoding and parsing agree on every field.
    fn as_reply(f: &CtFlow) -> Vec<u8> {
        let mut buf = delete_request(f, 9);
        let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf
    }

    #[test]
    fn tuples_round_trip_for_both_families_and_icmp() {
        for f in [
            flow("10.0.0.1", "10.0.0.2", 6),
            flow("fd00::1", "fd00::2", 6),
            flow("10.0.0.1", "10.0.0.2", 1),
            flow("fd00::1", "fd00::2", 58),
            CtFlow {
                zone: 7,
                ..flow("10.1.0.1", "10.1.0.2", 6)
            },
        ] {
            let parsed = parse(&as_reply(&f));
            assert_eq!(parsed.flows, vec![f]);
        }
    }

    #[test]
    fn requests_are_laid_out_as_ctnetlink_expects() {
        let d = dump_request(5);
        assert_eq!(d.len(), 20);
        assert_eq!(u32::from_ne_bytes([d[0], d[1], d[2], d[3]]), 20);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), 0x101); // CTNETLINK << 8 | GET
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), 0x301); // REQUEST | DUMP
        assert_eq!(d[16], 0, "AF_UNSPEC: both families");

        let del = delete_request(&flow("10.0.0.1", "10.0.0.2", 6), 6);
        assert_eq!(u16::from_ne_bytes([del[4], del[5]]), 0x102);
        assert_eq!(del[16], AF_INET);
        assert_eq!(del.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([del[0], del[1], del[2], del[3]]) as usize,
            del.len()
        );
    }

    #[test]
    fn done_errors_and_acks_are_reported() {
        let mut buf = Vec::new();
        for (ty, code, seq) in [
            (NLMSG_ERROR, 0i32, 3u32),
            (NLMSG_ERROR, -2, 4),
            (NLMSG_DONE, 0, 5),
        ] {
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&ty.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&code.to_ne_bytes());
        }
        let p = parse(&buf);
        assert!(p.done);
        assert_eq!(p.acks, vec![3]);
        assert_eq!(p.error, Some((-2, 4)));
    }

    #[test]
    fn truncated_input_is_ignored_not_a_panic() {
        let full = as_reply(&flow("10.0.0.1", "10.0.0.2", 6));
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
    }
}
