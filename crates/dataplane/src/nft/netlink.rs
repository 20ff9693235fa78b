//! A fast path for element-only updates: the `nft` tool (1.0.6 here) fetches every element of
//! every set before it runs any `add element`/`delete element`, which costs about 2 µs per
//! element in the ruleset (100 ms and more for a node with ~50,000 elements). An
//! [`ElementWriter`] sends the same change as one nfnetlink batch (one transaction) instead:
//! `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` for our table only.
//!
//! Only plain elements are handled here: addresses, prefixes and ranges of interval sets (as a
//! start element and an `INTERVAL_END` element one past the last address, like nft writes
//! them) and `address . protocol . port` concatenations. Anything else makes the backend use
//! `nft -f`.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::error::DataplaneError;

/// One element change for one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementOp {
    pub set: String,
    pub add: bool,
    pub key: ElementKey,
}

/// An element as the kernel stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementKey {
    /// `[start, end]` inclusive, in an interval set.
    Range { start: IpAddr, end: IpAddr },
    /// `address . protocol . port` in a concatenation set.
    AddrProtoPort { addr: IpAddr, proto: u8, port: u16 },
    /// `addresses . protocols . ports`, each a range, in a concatenation interval set (the
    /// flat layout's lookups): sent as a start key and an end key.
    ConcatRange {
        start: IpAddr,
        end: IpAddr,
        protos: (u8, u8),
        ports: (u16, u16),
    },
    /// `"ifname" : jump chain` in an `ifname : verdict` map (the chain is ignored when the
    /// element is deleted).
    IfnameJump { ifname: String, chain: String },
    /// `address : jump chain` in an `ipv4_addr`/`ipv6_addr : verdict` map.
    AddrJump { addr: IpAddr, chain: String },
}

/// Writes element changes to `table inet palisade` in one transaction.
pub trait ElementWriter: Send + Sync {
    fn write(&self, ops: &[ElementOp]) -> Result<(), DataplaneError>;
}

/// Parses a canonical element of a set with `key_type` (see
/// [`crate::nft::program::canonical_element`]); `None` when the fast path cannot express it.
pub fn parse_element(key_type: &[String], interval: bool, e: &str) -> Option<ElementKey> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    match key_type {
        [t] if (t == "ipv4_addr" || t == "ipv6_addr") && !interval && e.contains(" : ") => {
            let (key, verdict) = e.split_once(" : ")?;
            let addr: IpAddr = key.parse().ok()?;
            if addr.is_ipv6() != (t == "ipv6_addr") {
                return None;
            }
            let chain = verdict.strip_prefix("jump ")?;
            if !plain(chain) || chain.len() > 255 {
                return None;
            }
            Some(ElementKey::AddrJump {
                addr,
                chain: chain.to_string(),
            })
        }
        [t] if (t == "ipv4_addr" || t == "ipv6_addr") && interval => {
            let (start, end) = if let Some((a, b)) = e.split_once('-') {
                (a.parse().ok()?, b.parse().ok()?)
            } else if e.contains('/') {
                let net: ipnet::IpNet = e.parse().ok()?;
                (net.network(), net.broadcast())
            } else {
                let a: IpAddr = e.parse().ok()?;
                (a, a)
            };
            Some(ElementKey::Range { start, end })
        }
        [a, p, s]
            if (a == "ipv4_addr" || a == "ipv6_addr")
                && p == "inet_proto"
                && s == "inet_service"
                && !interval =>
        {
            let mut parts = e.split(" . ");
            let addr: IpAddr = parts.next()?.parse().ok()?;
            let proto = match parts.next()? {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                other => other.parse().ok()?,
            };
            let port: u16 = parts.next()?.parse().ok()?;
            Some(ElementKey::AddrProtoPort { addr, proto, port })
        }
        [a, p, s]
            if (a == "ipv4_addr" || a == "ipv6_addr")
                && p == "inet_proto"
                && s == "inet_service"
                && interval =>
        {
            let mut parts = e.split(" . ");
            let (start, end) = addr_range(parts.next()?)?;
            if start.is_ipv6() != (a == "ipv6_addr") || end.is_ipv6() != start.is_ipv6() {
                return None;
            }
            let protos = num_range(parts.next()?, proto_number)?;
            let ports = num_range(parts.next()?, |s| s.parse().ok())?;
            if parts.next().is_some() {
                return None;
            }
            Some(ElementKey::ConcatRange {
                start,
                end,
                protos,
                ports,
            })
        }
        [t] if t == "ifname" && !interval => {
            let (key, verdict) = e.split_once(" : ")?;
            let ifname = key.strip_prefix('"')?.strip_suffix('"')?;
            let chain = verdict.strip_prefix("jump ")?;
            // IFNAMSIZ is 16 with the terminating NUL.
            if ifname.len() > 15 || !plain(ifname) || !plain(chain) || chain.len() > 255 {
                return None;
            }
            Some(ElementKey::IfnameJump {
                ifname: ifname.to_string(),
                chain: chain.to_string(),
            })
        }
        _ => None,
    }
}

/// `a`, `a/len` or `a-b` as an inclusive address range.
fn addr_range(s: &str) -> Option<(IpAddr, IpAddr)> {
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (a.parse().ok()?, b.parse().ok()?);
        return (a <= b).then_some((a, b));
    }
    if s.contains('/') {
        let net: ipnet::IpNet = s.parse().ok()?;
        return Some((net.network(), net.broadcast()));
    }
    let a: IpAddr = s.parse().ok()?;
    Some((a, a))
}

/// `x` or `x-y`, each part read by `one`.
fn num_range<T: Copy + PartialOrd>(s: &str, one: impl Fn(&str) -> Option<T>) -> Option<(T, T)> {
    let (a, b) = match s.split_once('-') {
        // A protocol name may hold a dash (`ipv6-icmp`).
        Some((a, b)) if one(a).is_some() && one(b).is_some() => (one(a)?, one(b)?),
        _ => {
            let v = one(s)?;
            (v, v)
        }
    };
    (a <= b).then_some((a, b))
}

/// A protocol as nft prints it: the names the renderer uses, or a number.
fn proto_number(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        "icmp" => Some(1),
        "ipv6-icmp" => Some(58),
        other => other.parse().ok(),
    }
}

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
const IFNAMSIZ: usize = 16;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends an attribute; returns its offset so a nest can be closed.
fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn nest_start(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    // Callers keep nests below 64 KiB (see `batch`); saturate rather than wrap regardless.
    let len = u16::try_from(buf.len() - at).unwrap_or(u16::MAX);
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn msg_start(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, filled in by msg_end
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    at
}

fn msg_end(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One past `ip`, or `None` at the top of the address space.
fn next_ip(ip: &IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(a) => u32::from(*a).checked_add(1).map(|v| IpAddr::V4(v.into())),
        IpAddr::V6(a) => u128::from(*a).checked_add(1).map(|v| IpAddr::V6(v.into())),
    }
}

fn element(buf: &mut Vec<u8>, key: &[u8], flags: u32) {
    element_with(buf, key, flags, None);
}

/// An element of a concatenation interval set: its first and last key.
fn element_range(buf: &mut Vec<u8>, start: &[u8], end: &[u8]) {
    let e = nest_start(buf, NFTA_LIST_ELEM);
    for (ty, key) in [(NFTA_SET_ELEM_KEY, start), (NFTA_SET_ELEM_KEY_END, end)] {
        let k = nest_start(buf, ty);
        attr(buf, NFTA_DATA_VALUE, key);
        nest_end(buf, k);
    }
    nest_end(buf, e);
}

/// `address . protocol . port` as the kernel stores a concatenation: each field padded to
/// 4 bytes, the port in network order.
fn concat_key(addr: &IpAddr, proto: u8, port: u16) -> Vec<u8> {
    let mut key = ip_bytes(addr);
    key.extend_from_slice(&[proto, 0, 0, 0]);
    key.extend_from_slice(&port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

/// An element, with a `jump chain` verdict as its data when given (map elements).
fn element_with(buf: &mut Vec<u8>, key: &[u8], flags: u32, jump: Option<&str>) {
    let e = nest_start(buf, NFTA_LIST_ELEM);
    let k = nest_start(buf, NFTA_SET_ELEM_KEY);
    attr(buf, NFTA_DATA_VALUE, key);
    nest_end(buf, k);
    if flags != 0 {
        attr(buf, NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
    }
    if let Some(chain) = jump {
        let d = nest_start(buf, NFTA_SET_ELEM_DATA);
        let v = nest_start(buf, NFTA_DATA_VERDICT);
        attr(buf, NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
        let mut name = chain.as_bytes().to_vec();
        name.push(0);
        attr(buf, NFTA_VERDICT_CHAIN, &name);
        nest_end(buf, v);
        nest_end(buf, d);
    }
    nest_end(buf, e);
}

/// The whole batch: begin, one message per (set, add/delete) run of ops, end. Returns the
/// bytes and the number of acknowledgements to expect.
pub fn batch(ops: &[ElementOp], table: &str, seq0: u32) -> Result<(Vec<u8>, u32), DataplaneError> {
    let mut buf = Vec::new();
    let mut seq = seq0;
    let at = msg_start(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    msg_end(&mut buf, at);
    let mut acks = 0;
    let mut i = 0;
    while i < ops.len() {
        let (set, add) = (&ops[i].set, ops[i].add);
        let mut j = i;
        // At most 400 changes per message: a nested attribute holds at most 64 KiB.
        while j < ops.len() && ops[j].set == *set && ops[j].add == add && j - i < 400 {
            j += 1;
        }
        seq += 1;
        let ty = (NFNL_SUBSYS_NFTABLES << 8)
            | if add {
                NFT_MSG_NEWSETELEM
            } else {
                NFT_MSG_DELSETELEM
            };
        let flags = NLM_F_REQUEST | NLM_F_ACK | if add { NLM_F_CREATE } else { 0 };
        let at = msg_start(&mut buf, ty, flags, seq, NFPROTO_INET, 0);
        let mut name = table.as_bytes().to_vec();
        name.push(0);
        attr(&mut buf, NFTA_SET_ELEM_LIST_TABLE, &name);
        let mut sname = set.as_bytes().to_vec();
        sname.push(0);
        attr(&mut buf, NFTA_SET_ELEM_LIST_SET, &sname);
        let list = nest_start(&mut buf, NFTA_SET_ELEM_LIST_ELEMENTS);
        for op in &ops[i..j] {
            match &op.key {
                ElementKey::Range { start, end } => {
                    let Some(after) = next_ip(end) else {
                        return Err(DataplaneError::invalid(
                            format!("nft set {set}"),
                            "range up to the last address: use nft -f",
                        ));
                    };
                    element(&mut buf, &ip_bytes(start), 0);
                    element(&mut buf, &ip_bytes(&after), NFT_SET_ELEM_INTERVAL_END);
                }
                ElementKey::AddrProtoPort { addr, proto, port } => {
                    element(&mut buf, &concat_key(addr, *proto, *port), 0);
                }
                ElementKey::ConcatRange {
                    start,
                    end,
                    protos,
                    ports,
                } => element_range(
                    &mut buf,
                    &concat_key(start, protos.0, ports.0),
                    &concat_key(end, protos.1, ports.1),
                ),
                ElementKey::IfnameJump { ifname, chain } => {
                    let mut key = ifname.as_bytes().to_vec();
                    key.resize(IFNAMSIZ, 0);
                    element_with(&mut buf, &key, 0, add.then_some(chain.as_str()));
                }
                ElementKey::AddrJump { addr, chain } => {
                    element_with(&mut buf, &ip_bytes(addr), 0, add.then_some(chain.as_str()));
                }
            }
        }
        nest_end(&mut buf, list);
        msg_end(&mut buf, at);
        acks += 1;
        i = j;
    }
    seq += 1;
    let at = msg_start(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    msg_end(&mut buf, at);
    Ok((buf, acks))
}

/// Sends batches over a netfilter netlink socket opened inside a network namespace when
/// given (`/run/netns/NAME`, as `ip netns add` makes it). The socket stays open between
/// writes: closing a netfilter socket right after a commit waits for the kernel to finish
/// releasing what the commit replaced (milliseconds), which would land on the next update.
/// It is reopened after any error, so a failed batch's late answers are never read as the
/// next batch's.
#[derive(Debug, Default)]
pub struct NetlinkElements {
    netns: Option<String>,
    conn: Mutex<Option<Conn>>,
}

impl NetlinkElements {
    pub fn new(netns: Option<String>) -> Self {
        NetlinkElements {
            netns,
            conn: Mutex::new(None),
        }
    }
}

pub(crate) fn os_err(what: &str) -> DataplaneError {
    DataplaneError::Netlink(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// An open socket and the next sequence number.
#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    seq: u32,
}

/// The send buffer we ask for: a batch must fit in one send.
const SEND_BUFFER: libc::c_int = 16 << 20;

impl Conn {
    fn open(netns: Option<&str>) -> Result<Conn, DataplaneError> {
        let fd = open_netfilter_socket(netns, SEND_BUFFER)?;
        Ok(Conn { fd, seq: 1 })
    }
}

/// Opens a `NETLINK_NETFILTER` socket in `netns` (in a thread of our own: setns changes only
/// the calling thread, and the socket keeps the namespace it was made in), with a 2 s receive
/// timeout and a send buffer of `send_buffer` bytes where the kernel allows it.
pub(crate) fn open_netfilter_socket(
    netns: Option<&str>,
    send_buffer: libc::c_int,
) -> Result<OwnedFd, DataplaneError> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd, DataplaneError> {
            if let Some(ns) = netns {
                crate::netns::enter(ns)?;
            }
            // SAFETY: plain socket syscalls on a descriptor we then own.
            unsafe {
                let fd = libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    NETLINK_NETFILTER,
                );
                if fd < 0 {
                    return Err(os_err("netlink socket"));
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let tv = libc::timeval {
                    tv_sec: 2,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                // Root may exceed the system's maximum; otherwise take what we get.
                for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
                    let ok = libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        &send_buffer as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as u32,
                    );
                    if ok == 0 {
                        break;
                    }
                }
                Ok(fd)
            }
        })
        .join()
        .unwrap_or_else(|_| Err(DataplaneError::Netlink("netlink thread panicked".into())))
    })
}

impl ElementWriter for NetlinkElements {
    fn write(&self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| DataplaneError::Netlink("netlink writer poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(Conn::open(self.netns.as_deref())?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(DataplaneError::Netlink("no netlink socket".into()));
        };
        let seq0 = conn.seq;
        let result = batch(ops, crate::nft::program::TABLE_NAME, seq0)
            .and_then(|(buf, acks)| send(conn.fd.as_raw_fd(), &buf, acks, seq0));
        match result {
            Ok(next) => {
                // Wrap well before u32::MAX; the kernel only echoes the numbers back.
                conn.seq = if next > u32::MAX / 2 { 1 } else { next };
                Ok(())
            }
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }
}

/// Sends one batch and waits for its `acks` acknowledgements (messages numbered from
/// `seq0`); returns the next free sequence number.
fn send(fd: RawFd, buf: &[u8], acks: u32, seq0: u32) -> Result<u32, DataplaneError> {
    let last = seq0 + acks + 1;
    // SAFETY: plain socket syscalls on an open descriptor; buffers outlive the calls.
    unsafe {
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        if sent < 0 || sent as usize != buf.len() {
            return Err(os_err("netlink send"));
        }
        let mut got = 0;
        let mut rbuf = vec![0u8; 65536];
        while got < acks {
            let n = libc::recv(fd, rbuf.as_mut_ptr() as *mut libc::c_void, rbuf.len(), 0);
            if n < 0 {
                return Err(os_err("netlink receive"));
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let word = |at: usize| {
                    u32::from_ne_bytes([rbuf[at], rbuf[at + 1], rbuf[at + 2], rbuf[at + 3]])
                };
                let len = word(off) as usize;
                let ty = u16::from_ne_bytes([rbuf[off + 4], rbuf[off + 5]]);
                let seq = word(off + 8);
                if len < 16 || off + len > n {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 && (seq0..=last).contains(&seq) {
                    let code = word(off + 16) as i32;
                    if code != 0 {
                        return Err(DataplaneError::Netlink(format!(
                            "kernel refused the element batch: {}",
                            std::io::Error::from_raw_os_error(-code)
                        )));
                    }
                    got += 1;
                }
                off += align4(len);
            }
        }
    }
    Ok(last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_elements_it_can_write() {
        let v4 = vec!["ipv4_addr".to_string()];
        assert_eq!(
            parse_element(&v4, true, "10.0.0.0/24"),
            Some(ElementKey::Range {
                start: "10.0.0.0".parse().unwrap(),
                end: "10.0.0.255".parse().unwrap()
            })
        );
        assert_eq!(
            parse_element(&v4, true, "10.0.0.1"),
            Some(ElementKey::Range {
                start: "10.0.0.1".parse().unwrap(),
                end: "10.0.0.1".parse().unwrap()
            })
        );
        let cat = vec![
            "ipv4_addr".to_string(),
            "inet_proto".into(),
            "inet_service".into(),
        ];
        assert_eq!(
            parse_element(&cat, false, "10.0.0.1 . tcp . 80"),
            Some(ElementKey::AddrProtoPort {
                addr: "10.0.0.1".parse().unwrap(),
                proto: 6,
                port: 80
            })
        );
        // The flat layout's concatenated intervals, as nft prints them.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (text, start, end, protos, ports) in [
            (
                "10.0.0.0/24 . tcp . 80",
                "10.0.0.0",
                "10.0.0.255",
                (6, 6),
                (80, 80),
            ),
            (
                "10.0.0.1-10.0.0.5 . udp . 0-65535",
                "10.0.0.1",
                "10.0.0.5",
                (17, 17),
                (0, 65535),
            ),
            (
                "10.0.0.7 . ipv6-icmp . 1-2",
                "10.0.0.7",
                "10.0.0.7",
                (58, 58),
                (1, 2),
            ),
        ] {
            assert_eq!(
                parse_element(&cat, true, text),
                Some(ElementKey::ConcatRange {
                    start: ip(start),
                    end: ip(end),
                    protos,
                    ports
                }),
                "{text}"
            );
        }
        for odd in [
            "10.0.0.5-10.0.0.1 . tcp . 80",
            "fd00::1 . tcp . 80",
            "10.0.0.1 . tcp",
        ] {
            assert_eq!(parse_element(&cat, true, odd), None, "{odd}");
        }
        let ifname = vec!["ifname".to_string()];
        assert_eq!(
            parse_element(&ifname, false, "\"pal0a1b\" : jump pal-tw-pal0a1b"),
            Some(ElementKey::IfnameJump {
                ifname: "pal0a1b".into(),
                chain: "pal-tw-pal0a1b".into()
            })
        );
        // Anything but a plain jump, or a name that does not fit, is left to nft.
        for odd in [
            "\"x\" : accept",
            "\"x y\" : jump c",
            "\"0123456789abcdef\" : jump c",
            "x : jump c",
        ] {
            assert_eq!(parse_element(&ifname, false, odd), None, "{odd}");
        }
        // Address-keyed dispatch maps (address matching), per family.
        let v6 = vec!["ipv6_addr".to_string()];
        let v4map = vec!["ipv4_addr".to_string()];
        assert_eq!(
            parse_element(&v6, false, "fd00::1 : jump pal-fw-x"),
            Some(ElementKey::AddrJump {
                addr: "fd00::1".parse().unwrap(),
                chain: "pal-fw-x".into()
            })
        );
        for odd in [
            "10.0.0.1 : jump c",
            "fd00::1 : accept",
            "fd00::1 : jump a b",
        ] {
            assert_eq!(parse_element(&v6, false, odd), None, "{odd}");
        }
        assert!(parse_element(&v4map, false, "10.0.0.1 : jump c").is_some());
    }

    #[test]
    fn batch_layout() {
        let ops = vec![ElementOp {
            set: "s".into(),
            add: true,
            key: ElementKey::Range {
                start: "10.0.0.1".parse().unwrap(),
                end: "10.0.0.1".parse().unwrap(),
            },
        }];
        let (buf, acks) = batch(&ops, "palisade", 1).unwrap();
        assert_eq!(acks, 1);
        // Three messages, each length-prefixed and 4-aligned, covering the buffer exactly.
        let mut off = 0;
        let mut n = 0;
        while off < buf.len() {
            let len =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            assert!(len >= 20);
            off += align4(len);
            n += 1;
        }
        assert_eq!((off, n), (buf.len(), 3));
    }

    #[test]
    fn large_changes_are_split_into_messages_that_fit() {
        let ops: Vec<ElementOp> = (0..1000u32)
            .map(|i| ElementOp {
                set: "s".into(),
                add: true,
                key: ElementKey::Range {
                    start: IpAddr::V6(std::net::Ipv6Addr::from(u128::from(i) << 8)),
                    end: IpAddr::V6(std::net::Ipv6Addr::from(u128::from(i) << 8)),
                },
            })
            .collect();
        let (buf, acks) = batch(&ops, "palisade", 1).unwrap();
        assert_eq!(acks, 3);
        let mut off = 0;
        while off < buf.len() {
            let len =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            assert!(len < 65536, "message of {len} bytes");
            off += align4(len);
        }
    }
}
