//! Real traffic between pods: every ordered pair, every probe, in parallel threads that each
//! enter the source pod's namespace and try to reach the destination within a short timeout.
//!
//! * TCP: a connect;  UDP: a datagram and its echo;  ICMP: an echo request and its reply
//!   (ICMPv6 over IPv6; raw sockets);  SCTP: an INIT with a random tag and the INIT-ACK that
//!   answers it (raw sockets: this kernel has no SCTP sockets). A refusal, an ICMP error or
//!   silence until the timeout all count as "not reached".
//! * Family: the one asked for, else the engine's rule: the family of the source's first
//!   address that the destination also has (failing that, the source's first address).
//! * A host-networked pod probes from its node's namespace, bound to its own (the node's)
//!   address of the family, so that the destination sees the address the engine judges.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use palisade_engine::Probe;
use palisade_model::Protocol;
use socket2::{Domain, Socket, Type};

use crate::netns;
use crate::sctp;

/// How many probe threads run at once.
const PARALLEL: usize = 192;

/// A pod as the prober sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub netns: String,
    /// Every address of the pod, first address first.
    pub ips: Vec<IpAddr>,
    /// Probes leave from its address of the destination's family (a host-networked pod, whose
    /// node's namespace has other addresses too); else the kernel picks the source.
    pub bind: bool,
}

impl Target {
    /// The source address a probe to `dst` is bound to, if any.
    pub fn source_for(&self, dst: IpAddr) -> Option<IpAddr> {
        self.bind
            .then(|| {
                self.ips
                    .iter()
                    .copied()
                    .find(|ip| ip.is_ipv6() == dst.is_ipv6())
            })
            .flatten()
    }
}

/// The destination address of a probe from `src` to `dst`: of family `family` (`true`: IPv6)
/// if given, else by the engine's rule. `None`: `dst` has no address of that family.
pub fn destination(src: &[IpAddr], dst: &[IpAddr], family: Option<bool>) -> Option<IpAddr> {
    let v6 = match family {
        Some(v6) => v6,
        None => src
            .iter()
            .find(|s| dst.iter().any(|d| d.is_ipv6() == s.is_ipv6()))
            .or(src.first())?
            .is_ipv6(),
    };
    dst.iter().copied().find(|d| d.is_ipv6() == v6)
}

/// `result[probe][from][to]`: whether `from` reached `to`.
pub fn probe_matrix(
    pods: &[Target],
    probes: &[Probe],
    family: Option<bool>,
    timeout: Duration,
) -> Vec<Vec<Vec<bool>>> {
    let n = pods.len();
    let results = Mutex::new(vec![vec![vec![false; n]; n]; probes.len()]);
    let tasks: Vec<(usize, usize, usize)> = (0..probes.len())
        .flat_map(|k| (0..n).flat_map(move |i| (0..n).map(move |j| (k, i, j))))
        .collect();
    for chunk in tasks.chunks(PARALLEL) {
        std::thread::scope(|s| {
            for &(k, i, j) in chunk {
                let results = &results;
                let (src, dst, probe) = (&pods[i], &pods[j], probes[k]);
                let Some(to) = destination(&src.ips, &dst.ips, family) else {
                    continue;
                };
                let spawned = std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn_scoped(s, move || {
                        let from = src.source_for(to);
                        let ok = netns::enter(&src.netns).is_ok()
                            && reach_from(from, to, probe, timeout);
                        if let Ok(mut r) = results.lock() {
                            r[k][i][j] = ok;
                        }
                    });
                if spawned.is_err() {
                    // Out of threads: this pair stays "not reached" and shows as a mismatch.
                    continue;
                }
            }
        });
    }
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// One probe from the calling thread's namespace to `dst`.
pub fn reach(dst: IpAddr, probe: Probe, timeout: Duration) -> bool {
    reach_from(None, dst, probe, timeout)
}

/// One probe from the calling thread's namespace to `dst`, from address `src` if given.
pub fn reach_from(src: Option<IpAddr>, dst: IpAddr, probe: Probe, timeout: Duration) -> bool {
    match probe.protocol {
        Protocol::Tcp => match src {
            None => TcpStream::connect_timeout(&SocketAddr::new(dst, probe.port), timeout).is_ok(),
            Some(src) => tcp_from(src, dst, probe.port, timeout).is_ok(),
        },
        Protocol::Udp => udp(src, dst, probe.port, timeout).unwrap_or(false),
        Protocol::Icmp => icmp(src, dst, timeout).unwrap_or(false),
        Protocol::Sctp => sctp_init(src, dst, probe.port, timeout).unwrap_or(false),
    }
}

fn tcp_from(src: IpAddr, dst: IpAddr, port: u16, timeout: Duration) -> std::io::Result<()> {
    let s = Socket::new(
        Domain::for_address(SocketAddr::new(dst, 0)),
        Type::STREAM,
        None,
    )?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect_timeout(&SocketAddr::new(dst, port).into(), timeout)
}

fn unspecified(dst: IpAddr) -> IpAddr {
    if dst.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

fn udp(src: Option<IpAddr>, dst: IpAddr, port: u16, timeout: Duration) -> std::io::Result<bool> {
    let s = UdpSocket::bind((src.unwrap_or_else(|| unspecified(dst)), 0))?;
    s.connect((dst, port))?;
    s.set_read_timeout(Some(timeout))?;
    s.send(b"palisade-probe")?;
    let mut buf = [0u8; 64];
    Ok(s.recv(&mut buf).is_ok())
}

/// A raw socket of `dst`'s family for protocol `v4` (IPv4) or `v6` (IPv6), bound to `src`
/// if given.
fn raw_socket(src: Option<IpAddr>, dst: IpAddr, v4: i32, v6: i32) -> std::io::Result<Socket> {
    let (domain, proto) = if dst.is_ipv6() {
        (Domain::IPV6, v6)
    } else {
        (Domain::IPV4, v4)
    };
    let s = Socket::new(domain, Type::RAW, Some(socket2::Protocol::from(proto)))?;
    if let Some(src) = src {
        s.bind(&SocketAddr::new(src, 0).into())?;
    }
    Ok(s)
}

/// Receives on a raw socket until `accept` says yes or no, or the deadline passes.
fn raw_wait(
    socket: &Socket,
    deadline: Instant,
    mut accept: impl FnMut(IpAddr, &[u8]) -> Option<bool>,
) -> std::io::Result<bool> {
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        match sctp::recv_raw(socket, &mut buf) {
            Ok(Some((src, payload))) => {
                if let Some(verdict) = accept(src, payload) {
                    return Ok(verdict);
                }
            }
            Ok(None) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(false)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn icmp(src: Option<IpAddr>, dst: IpAddr, timeout: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let socket = raw_socket(src, dst, libc::IPPROTO_ICMP, libc::IPPROTO_ICMPV6)?;
    // Echo request / reply: ICMP 8 / 0, ICMPv6 128 / 129 (whose checksum the kernel fills in).
    let (request, reply) = if dst.is_ipv6() { (128, 129) } else { (8, 0) };
    let id = fastrand::u16(..);
    let mut echo = vec![request, 0, 0, 0];
    echo.extend_from_slice(&id.to_be_bytes());
    echo.extend_from_slice(&1u16.to_be_bytes());
    echo.extend_from_slice(b"palisade-probe");
    if !dst.is_ipv6() {
        let sum = inet_checksum(&echo);
        echo[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    socket.send_to(&echo, &SocketAddr::new(dst, 0).into())?;
    raw_wait(&socket, deadline, |src, icmp| {
        let is_reply =
            src == dst && icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes();
        is_reply.then_some(true)
    })
}

/// The Internet checksum (RFC 1071).
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sctp_init(
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let socket = raw_socket(src, dst, sctp::IPPROTO_SCTP, sctp::IPPROTO_SCTP)?;
    let tag = fastrand::u32(1..);
    let src_port = fastrand::u16(32768..61000);
    socket.send_to(
        &sctp::init(src_port, port, tag),
        &SocketAddr::new(dst, 0).into(),
    )?;
    raw_wait(&socket, deadline, |src, payload| {
        let p = sctp::parse(payload)?;
        if src != dst || p.src_port != port || p.dst_port != src_port || p.vtag != tag {
            return None;
        }
        if p.is_init_ack() {
            Some(true)
        } else if p.is_abort() {
            Some(false)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_of_a_probe_follows_the_engine() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let dual = [ip("10.0.0.1"), ip("fd00::1")];
        let six_first = [ip("fd00::2"), ip("10.0.0.2")];
        let v4 = [ip("10.0.0.3")];
        let v6 = [ip("fd00::4")];
        assert_eq!(destination(&dual, &six_first, None), Some(ip("10.0.0.2")));
        assert_eq!(destination(&six_first, &dual, None), Some(ip("fd00::1")));
        assert_eq!(destination(&v6, &dual, None), Some(ip("fd00::1")));
        assert_eq!(destination(&v4, &v6, None), None);
        assert_eq!(destination(&dual, &dual, Some(true)), Some(ip("fd00::1")));
        assert_eq!(destination(&dual, &v4, Some(true)), None);
    }

    #[test]
    fn checksum_of_an_echo_request() {
        // 08 00 [sum] 00 01 00 01: sum = !(0x0800 + 0x0001 + 0x0001) = 0xf7fd
        assert_eq!(inet_checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
        assert_eq!(inet_checksum(&[8, 0, 0xf7, 0xfd, 0, 1, 0, 1]), 0);
    }
}
