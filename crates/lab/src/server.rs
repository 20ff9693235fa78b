//! The servers inside each pod, one per declared container port: TCP accepts (and answers an
//! HTTP request with a short body, so `curl` works), UDP echoes, SCTP answers INIT with
//! INIT-ACK through raw sockets. Every server takes both families: TCP and UDP on `[::]`
//! with IPv4-mapped addresses accepted, SCTP on one raw socket per family. Sockets are made by a thread inside the pod's namespace;
//! serving threads then use them from anywhere. A host-networked pod's server runs in its
//! node's namespace bound to the node's addresses (one socket per address), so that its
//! answers leave from the address the client asked, whatever interface routing picks.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_model::{NamedPort, Protocol};
use socket2::{Domain, Socket, Type};

use crate::error::{LabError, Result};
use crate::netns;
use crate::sctp;

/// The servers of one pod; ports can be added while it runs.
pub struct PodServer {
    netns: String,
    /// The addresses to serve on; empty: every address (`[::]`).
    bind: Vec<IpAddr>,
    body: String,
    served: BTreeSet<(Protocol, u16)>,
    sctp_ports: Option<Arc<Mutex<BTreeSet<u16>>>>,
}

enum Made {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Sctp(Vec<Socket>),
}

impl PodServer {
    /// A server for the pod whose namespace is `netns`; `name` (`ns/pod`) is the HTTP body.
    pub fn new(netns: &str, name: &str) -> PodServer {
        PodServer {
            netns: netns.to_string(),
            bind: Vec::new(),
            body: format!("{name}\n"),
            served: BTreeSet::new(),
            sctp_ports: None,
        }
    }

    /// A server in `netns` that serves on `addresses` only (a host-networked pod in its
    /// node's namespace).
    pub fn on_addresses(netns: &str, name: &str, addresses: &[IpAddr]) -> PodServer {
        PodServer {
            bind: addresses.to_vec(),
            ..PodServer::new(netns, name)
        }
    }

    /// Starts serving every port not served yet (ICMP needs no server: the kernel answers).
    pub fn serve(&mut self, ports: &[NamedPort]) -> Result<()> {
        let mut todo = Vec::new();
        for p in ports {
            if p.protocol == Protocol::Icmp || !self.served.insert((p.protocol, p.port)) {
                continue;
            }
            match (p.protocol, &self.sctp_ports) {
                (Protocol::Sctp, Some(set)) => {
                    lock(set).insert(p.port);
                }
                (Protocol::Sctp, None) => {
                    let set = Arc::new(Mutex::new(BTreeSet::from([p.port])));
                    self.sctp_ports = Some(set.clone());
                    todo.push((Protocol::Sctp, 0));
                }
                (proto, _) => todo.push((proto, p.port)),
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let bind = self.bind.clone();
        let made = netns::run_in(&self.netns, move || {
            let mut made = Vec::new();
            for (proto, port) in todo {
                if bind.is_empty() {
                    made.push(make(proto, port, None)?);
                }
                for &ip in &bind {
                    made.push(make(proto, port, Some(ip))?);
                }
            }
            Ok(made)
        })?;
        for m in made {
            let body = self.body.clone();
            match m {
                Made::Tcp(l) => spawn(move || serve_tcp(l, body)),
                Made::Udp(s) => spawn(move || serve_udp(s)),
                Made::Sctp(sockets) => {
                    for s in sockets {
                        let ports = self.sctp_ports.clone().unwrap_or_default();
                        spawn(move || serve_sctp(s, ports))
                    }
                }
            }
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn(f: impl FnOnce() + Send + 'static) {
    let _ = std::thread::Builder::new().stack_size(128 * 1024).spawn(f);
}

/// The socket(s) of one port: on every address of both families, or on `on` only.
fn make(proto: Protocol, port: u16, on: Option<IpAddr>) -> Result<Made> {
    let addr = SocketAddr::new(on.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), port);
    let what = match on {
        Some(ip) => format!("cannot serve {port}/{proto} on {ip}"),
        None => format!("cannot serve {port}/{proto}"),
    };
    Ok(match proto {
        Protocol::Tcp => Made::Tcp(listen(addr).map_err(|e| LabError::io(what, e))?),
        Protocol::Udp => Made::Udp(udp(addr).map_err(|e| LabError::io(what, e))?),
        _ => {
            let raw = |domain, bound: Option<IpAddr>| -> Result<Socket> {
                let s = Socket::new(
                    domain,
                    Type::RAW,
                    Some(socket2::Protocol::from(sctp::IPPROTO_SCTP)),
                )
                .map_err(|e| LabError::io("cannot open a raw SCTP socket", e))?;
                if let Some(ip) = bound {
                    s.bind(&SocketAddr::new(ip, 0).into())
                        .map_err(|e| LabError::io(format!("cannot bind SCTP to {ip}"), e))?;
                }
                Ok(s)
            };
            match on {
                None => Made::Sctp(vec![raw(Domain::IPV4, None)?, raw(Domain::IPV6, None)?]),
                Some(ip) => Made::Sctp(vec![raw(Domain::for_address(addr), Some(ip))?]),
            }
        }
    })
}

/// A dual-stack TCP listener with a long accept queue (connection-rate benchmarks open
/// thousands).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A dual-stack UDP socket.
fn udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn serve_tcp(listener: TcpListener, body: String) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let body = body.clone();
        spawn(move || answer_http(conn, &body));
    }
}

/// Reads what the client sends (if anything) and, for a request, answers 200 with `body`.
fn answer_http(mut conn: TcpStream, body: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 2048];
    let mut seen = Vec::new();
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                // A complete request head, or a non-HTTP line: answer now.
                if seen.windows(4).any(|w| w == b"\r\n\r\n") || !seen.starts_with(b"GET") {
                    break;
                }
            }
        }
    }
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(reply.as_bytes());
}

fn serve_udp(socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    }
}

fn serve_sctp(socket: Socket, ports: Arc<Mutex<BTreeSet<u16>>>) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok(Some((src, payload))) = sctp::recv_raw(&socket, &mut buf) else {
            continue;
        };
        let Some(p) = sctp::parse(payload) else {
            continue;
        };
        if !p.is_init() || !lock(&ports).contains(&p.dst_port) {
            continue;
        }
        let reply = sctp::init_ack(p.dst_port, p.src_port, p.initiate_tag, fastrand::u32(1..));
        let to = SocketAddr::new(src, 0);
        let _ = socket.send_to(&reply, &to.into());
    }
}
