//! [`NetlinkConntrack`]: ctnetlink over a `NETLINK_NETFILTER` socket opened inside the node's
//! network namespace, kept open between calls and reopened after any error.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use super::wire::{self, Parsed};
use super::{Conntrack, CtFlow};
use crate::error::DataplaneError;
use crate::nft::netlink::{open_netfilter_socket, os_err};

/// The conntrack table of one network namespace (`None`: the agent's own).
#[derive(Debug)]
pub struct NetlinkConntrack {
    netns: Option<String>,
    conn: Mutex<Option<(OwnedFd, u32)>>,
}

/// A large receive buffer: a dump of tens of thousands of flows arrives in bursts.
const RECV_BUFFER: usize = 1 << 16;

impl NetlinkConntrack {
    pub fn new(netns: Option<String>) -> Self {
        NetlinkConntrack {
            netns,
            conn: Mutex::new(None),
        }
    }

    /// Runs `f` on the open socket with the next sequence number; drops the socket on error.
    fn with_socket<T>(
        &self,
        f: impl FnOnce(RawFd, u32) -> Result<T, DataplaneError>,
    ) -> Result<T, DataplaneError> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| DataplaneError::Netlink("conntrack socket poisoned".into()))?;
        if guard.is_none() {
            let fd = open_netfilter_socket(self.netns.as_deref(), 1 << 16)?;
            // A dump of tens of thousands of flows arrives faster than it is parsed: a large
            // receive buffer keeps the kernel from failing it with ENOBUFS.
            let size: libc::c_int = 8 << 20;
            // SAFETY: setsockopt on a descriptor we own, with a value that outlives the call.
            unsafe {
                for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
                    let ok = libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        &size as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as u32,
                    );
                    if ok == 0 {
                        break;
                    }
                }
            }
            *guard = Some((fd, 1));
        }
        let Some((fd, seq)) = guard.as_mut() else {
            return Err(DataplaneError::Netlink("no conntrack socket".into()));
        };
        *seq = if *seq > u32::MAX / 2 { 1 } else { *seq + 1 };
        let result = f(fd.as_raw_fd(), *seq);
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

fn send(fd: RawFd, buf: &[u8]) -> Result<(), DataplaneError> {
    // SAFETY: sendto on an open descriptor with a buffer that outlives the call.
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
            return Err(os_err("conntrack send"));
        }
    }
    Ok(())
}

fn recv(fd: RawFd, buf: &mut [u8]) -> Result<usize, DataplaneError> {
    // SAFETY: recv into a buffer we own, on an open descriptor.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return Err(os_err("conntrack receive"));
    }
    Ok(n as usize)
}

impl Conntrack for NetlinkConntrack {
    /// Dumps the table; a dump that fails (the socket is then reopened) is tried once more.
    fn flows(&self) -> Result<Vec<CtFlow>, DataplaneError> {
        self.dump().or_else(|_| self.dump())
    }

    fn delete(&self, flow: &CtFlow) -> Result<bool, DataplaneError> {
        self.delete_one(flow)
    }
}

impl NetlinkConntrack {
    fn dump(&self) -> Result<Vec<CtFlow>, DataplaneError> {
        self.with_socket(|fd, seq| {
            send(fd, &wire::dump_request(seq))?;
            let mut buf = vec![0u8; RECV_BUFFER];
            let mut flows = Vec::new();
            loop {
                let n = recv(fd, &mut buf)?;
                let Parsed {
                    flows: more,
                    done,
                    error,
                    ..
                } = wire::parse(&buf[..n]);
                flows.extend(more);
                if let Some((code, _)) = error {
                    return Err(DataplaneError::Netlink(format!(
                        "conntrack dump refused: {}",
                        std::io::Error::from_raw_os_error(-code)
                    )));
                }
                if done {
                    return Ok(flows);
                }
            }
        })
    }

    fn delete_one(&self, flow: &CtFlow) -> Result<bool, DataplaneError> {
        self.with_socket(|fd, seq| {
            send(fd, &wire::delete_request(flow, seq))?;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = recv(fd, &mut buf)?;
                let p = wire::parse(&buf[..n]);
                if p.acks.contains(&seq) {
                    return Ok(true);
                }
                match p.error {
                    Some((code, s)) if s == seq && -code == libc::ENOENT => return Ok(false),
                    Some((code, s)) if s == seq => {
                        return Err(DataplaneError::Netlink(format!(
                            "conntrack delete refused: {}",
                            std::io::Error::from_raw_os_error(-code)
                        )))
                    }
                    _ => {}
                }
            }
        })
    }
}
