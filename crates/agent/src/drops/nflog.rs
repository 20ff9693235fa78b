//! Reading an NFLOG group over netlink (`netlink-sys` for the socket,
//! `netlink-packet-netfilter` for the messages): bind the group in the current thread's
//! network namespace, ask for the first [`COPY_RANGE`] bytes of each packet, and decode the
//! datagrams the kernel sends into [`LoggedPacket`]s (prefix and packet bytes).

use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

/// Bytes of each packet the kernel copies: IPv6 with a few extension headers and the
/// transport ports fit.
pub const COPY_RANGE: u32 = 128;
/// Socket receive buffer: when a burst fills it the kernel drops messages (`ENOBUFS` is
/// turned off), it never blocks the packet path.
const RECV_BUFFER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot bind NFLOG group {group}: {reason}")]
    Bind { group: u16, reason: String },
    #[error("cannot read from the NFLOG socket: {0}")]
    Recv(std::io::Error),
    #[error("undecodable NFLOG message: {0}")]
    Decode(String),
}

/// One packet the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    /// The rule's log prefix (without the terminating NUL).
    pub prefix: String,
    /// The packet from its network header on, at most [`COPY_RANGE`] bytes.
    pub payload: Vec<u8>,
}

/// The packets of one netlink datagram (several messages may share it). Acks, errors and
/// messages of other kinds carry no packet and are skipped.
pub fn decode(datagram: &[u8]) -> Result<Vec<LoggedPacket>, NflogError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&datagram[offset..])
            .map_err(|e| NflogError::Decode(e.to_string()))?;
        let len = msg.header.length as usize;
        if len == 0 {
            break;
        }
        if let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) = msg.payload
        {
            let mut prefix = String::new();
            let mut payload = Vec::new();
            for nla in nlas {
                match nla {
                    PacketNla::Prefix(p) => prefix = p.to_string_lossy().into_owned(),
                    PacketNla::Payload(p) => payload = p,
                    _ => {}
                }
            }
            out.push(LoggedPacket { prefix, payload });
        }
        // Messages are 4-byte aligned inside a datagram.
        offset += (len + 3) & !3;
    }
    Ok(out)
}

/// A bound NFLOG group of the network namespace the opening thread was in.
pub struct NflogSocket {
    socket: Socket,
    group: u16,
    buf: Vec<u8>,
}

impl NflogSocket {
    /// Binds `group`; [`NflogSocket::recv`] then waits at most `poll` for packets.
    pub fn open(group: u16, poll: Duration) -> Result<NflogSocket, NflogError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NflogError::Socket)?;
        socket.bind_auto().map_err(NflogError::Socket)?;
        socket.set_no_enobufs(true).map_err(NflogError::Socket)?;
        socket
            .set_rx_buf_sz(RECV_BUFFER)
            .map_err(NflogError::Socket)?;
        set_recv_timeout(&socket, poll).map_err(NflogError::Socket)?;
        let mut s = NflogSocket {
            socket,
            group,
            buf: vec![0; 64 * 1024],
        };
        let timeout: Timeout = Duration::from_millis(100).into();
        s.request(vec![ConfigCmd::Bind.into()])?;
        s.request(vec![
            ConfigMode::new_packet(COPY_RANGE).into(),
            ConfigNla::QThresh(16),
            timeout.into(),
            ConfigFlags::SEQ_GLOBAL.into(),
        ])?;
        Ok(s)
    }

    /// Sends one config request for the group and checks the kernel's ack.
    fn request(&mut self, nlas: Vec<ConfigNla>) -> Result<(), NflogError> {
        let bind_err = |reason: String| NflogError::Bind {
            group: self.group,
            reason,
        };
        let msg = config_request(NetfilterProtoFamily::Unspec, self.group, nlas);
        let mut bytes = vec![0; msg.header.length as usize];
        msg.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .map_err(|e| bind_err(e.to_string()))?;
        let n = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(|e| bind_err(format!("no answer from the kernel: {e}")))?;
        let answer = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n])
            .map_err(|e| bind_err(e.to_string()))?;
        match answer.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => Ok(()),
                Some(code) => {
                    let io = std::io::Error::from_raw_os_error(-code.get());
                    let hint = if io.raw_os_error() == Some(libc::EBUSY) {
                        " (another program listens on this group: choose another with --nflog-group)"
                    } else {
                        ""
                    };
                    Err(bind_err(format!("{io}{hint}")))
                }
            },
            other => Err(bind_err(format!("unexpected answer {other:?}"))),
        }
    }

    /// The packets of the next datagram; empty when none came within the poll time.
    pub fn recv(&mut self) -> Result<Vec<LoggedPacket>, NflogError> {
        match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => decode(&self.buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Vec::new())
            }
            // The receive buffer overflowed during a burst: some logs were lost, go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Vec::new()),
            Err(e) => Err(NflogError::Recv(e)),
        }
    }
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket descriptor and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One NFLOG packet message as the kernel sent it for an nft `log prefix "pal-drop
    /// 0123456789abcdef ingress default/app-web" group 9` rule and a TCP SYN from 127.0.0.1
    /// to 127.0.0.1:80: the nfgenmsg and attributes captured with `tcpdump -i nflog:9`
    /// (link type NFLOG), behind the 16-byte netlink header the socket delivers them with.
    pub(crate) fn captured() -> Vec<u8> {
        let body: &[u8] = &[
            0x02, 0x00, 0x00, 0x09, 0x08, 0x00, 0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x36, 0x00,
            0x0a, 0x00, 0x70, 0x61, 0x6c, 0x2d, 0x64, 0x72, 0x6f, 0x70, 0x20, 0x30, 0x31, 0x32,
            0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x20,
            0x69, 0x6e, 0x67, 0x72, 0x65, 0x73, 0x73, 0x20, 0x64, 0x65, 0x66, 0x61, 0x75, 0x6c,
            0x74, 0x2f, 0x61, 0x70, 0x70, 0x2d, 0x77, 0x65, 0x62, 0x00, 0x00, 0x00, 0x08, 0x00,
            0x05, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x08, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x09, 0x00, 0x45, 0x00,
            0x00, 0x3c, 0x89, 0x20, 0x40, 0x00, 0x40, 0x06, 0xb3, 0x99, 0x7f, 0x00, 0x00, 0x01,
            0x7f, 0x00, 0x00, 0x01, 0xab, 0x7a, 0x00, 0x50, 0xc5, 0x72, 0xb3, 0xb9, 0x00, 0x00,
            0x00, 0x00, 0xa0, 0x02, 0xff, 0xd7, 0xfe, 0x30, 0x00, 0x00, 0x02, 0x04, 0xff, 0xd7,
            0x04, 0x02, 0x08, 0x0a, 0xda, 0xd8, 0x78, 0x92, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03,
            0x03, 0x0a,
        ];
        let len = (16 + body.len()) as u32;
        let mut msg = Vec::new();
        msg.extend(len.to_ne_bytes());
        // NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET; no flags, sequence 0, from the kernel.
        msg.extend(0x0400u16.to_ne_bytes());
        msg.extend([0u8; 10]);
        msg.extend(body);
        msg
    }

    #[test]
    fn decodes_a_captured_packet() {
        let got = decode(&captured()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].prefix,
            "pal-drop 0123456789abcdef ingress default/app-web"
        );
        let h = crate::drops::packet::parse(&got[0].payload).unwrap();
        assert_eq!(h.dst, std::net::IpAddr::from([127, 0, 0, 1]));
        assert_eq!((h.protocol_name().as_str(), h.port), ("TCP", Some(80)));
        assert_eq!(
            palisade_render::names::drop_key_of_prefix(&got[0].prefix),
            Some("0123456789abcdef")
        );
    }

    #[test]
    fn decodes_several_messages_of_one_datagram_and_refuses_garbage() {
        let one = captured();
        let mut two = one.clone();
        two.extend(&one);
        assert_eq!(decode(&two).unwrap().len(), 2);
        assert!(decode(&one[..10]).is_err());
        let mut truncated = one.clone();
        truncated.truncate(40);
        assert!(decode(&truncated).is_err());
    }
}
