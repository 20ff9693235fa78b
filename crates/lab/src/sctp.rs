//! Just enough SCTP to probe reachability without kernel SCTP support: an INIT, an INIT-ACK
//! in answer, over raw IP sockets (protocol 132), with the CRC32c checksum SCTP requires
//! (conntrack drops packets whose checksum is wrong).

pub const IPPROTO_SCTP: i32 = 132;

const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;
const CHUNK_ABORT: u8 = 6;

/// CRC32c (Castagnoli), as SCTP uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

fn finish(mut packet: Vec<u8>) -> Vec<u8> {
    packet[8..12].copy_from_slice(&[0; 4]);
    let sum = crc32c(&packet);
    // SCTP carries the CRC32c value least significant byte first.
    packet[8..12].copy_from_slice(&sum.to_le_bytes());
    packet
}

fn header(src: u16, dst: u16, vtag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&src.to_be_bytes());
    p.extend_from_slice(&dst.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p
}

fn init_body(kind: u8, tag: u32, tsn: u32, extra: &[u8]) -> Vec<u8> {
    let len = 20 + extra.len();
    let mut c = vec![kind, 0];
    c.extend_from_slice(&(len as u16).to_be_bytes());
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    c.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    c.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    c.extend_from_slice(&tsn.to_be_bytes());
    c.extend_from_slice(extra);
    c
}

/// An INIT from `src` to `dst` port with initiate tag `tag` (verification tag 0).
pub fn init(src: u16, dst: u16, tag: u32) -> Vec<u8> {
    let mut p = header(src, dst, 0);
    p.extend(init_body(CHUNK_INIT, tag, tag, &[]));
    finish(p)
}

/// The INIT-ACK answering an INIT (`their_tag` = the INIT's initiate tag), with a state cookie.
pub fn init_ack(src: u16, dst: u16, their_tag: u32, our_tag: u32) -> Vec<u8> {
    let mut p = header(src, dst, their_tag);
    // State Cookie parameter (type 7), 8 bytes in all.
    let cookie = [0, 7, 0, 8, 0x70, 0x61, 0x6c, 0x21];
    p.extend(init_body(CHUNK_INIT_ACK, our_tag, our_tag, &cookie));
    finish(p)
}

/// The parts of an SCTP packet the lab looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src_port: u16,
    pub dst_port: u16,
    pub vtag: u32,
    pub chunk: u8,
    /// The initiate tag of an INIT or INIT-ACK (0 otherwise).
    pub initiate_tag: u32,
}

impl Packet {
    pub fn is_init(&self) -> bool {
        self.chunk == CHUNK_INIT
    }
    pub fn is_init_ack(&self) -> bool {
        self.chunk == CHUNK_INIT_ACK
    }
    pub fn is_abort(&self) -> bool {
        self.chunk == CHUNK_ABORT
    }
}

/// Parses an SCTP packet (without the IP header); `None` if it is too short.
pub fn parse(sctp: &[u8]) -> Option<Packet> {
    if sctp.len() < 16 {
        return None;
    }
    let u16_at = |i: usize| u16::from_be_bytes([sctp[i], sctp[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([sctp[i], sctp[i + 1], sctp[i + 2], sctp[i + 3]]);
    let chunk = sctp[12];
    let initiate_tag = if (chunk == CHUNK_INIT || chunk == CHUNK_INIT_ACK) && sctp.len() >= 20 {
        u32_at(16)
    } else {
        0
    };
    Some(Packet {
        src_port: u16_at(0),
        dst_port: u16_at(2),
        vtag: u32_at(4),
        chunk,
        initiate_tag,
    })
}

/// Splits an IPv4 packet into (source address, payload); `None` if it is not IPv4.
pub fn ipv4_payload(packet: &[u8]) -> Option<(std::net::Ipv4Addr, &[u8])> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if packet.len() < ihl {
        return None;
    }
    let src = std::net::Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((src, &packet[ihl..]))
}

/// Receives one packet on a raw socket of either family: (source address, payload). IPv4
/// raw sockets deliver the IP header (skipped here), IPv6 ones do not (the source comes from
/// the socket address). `Ok(None)`: not a packet of the socket's family.
pub fn recv_raw<'a>(
    socket: &socket2::Socket,
    buf: &'a mut [u8],
) -> std::io::Result<Option<(std::net::IpAddr, &'a [u8])>> {
    // SAFETY: `recv_from` only writes initialized bytes into the buffer, and `u8` and
    // `MaybeUninit<u8>` have the same layout.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, from) = socket.recv_from(uninit)?;
    let packet = &buf[..n];
    Ok(match from.as_socket() {
        Some(std::net::SocketAddr::V6(a)) => Some((std::net::IpAddr::V6(*a.ip()), packet)),
        _ => ipv4_payload(packet).map(|(src, p)| (std::net::IpAddr::V4(src), p)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn init_and_init_ack_round_trip() {
        let i = init(40000, 80, 0xdead_beef);
        let p = parse(&i).unwrap();
        assert!(p.is_init());
        assert_eq!((p.src_port, p.dst_port, p.vtag), (40000, 80, 0));
        assert_eq!(p.initiate_tag, 0xdead_beef);
        // The checksum verifies: recomputing over the packet with a zero field gives it back.
        let mut z = i.clone();
        z[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(crc32c(&z).to_le_bytes(), [i[8], i[9], i[10], i[11]]);

        let a = parse(&init_ack(80, 40000, 0xdead_beef, 7)).unwrap();
        assert!(a.is_init_ack());
        assert_eq!(
            (a.src_port, a.dst_port, a.vtag, a.initiate_tag),
            (80, 40000, 0xdead_beef, 7)
        );
        assert!(parse(&[0; 8]).is_none());
    }
}
