//! Long-lived TCP connections between lab pods, for measuring what happens to established
//! connections when policy changes (`--established keep|revoke`): a server in one pod's
//! namespace that notes when each connection last delivered a byte, and clients in other
//! pods' namespaces that send one byte every `interval` until stopped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::netns;

/// When each connection (by the client's address and port) last delivered a byte.
type Seen = Arc<Mutex<HashMap<SocketAddr, Instant>>>;

/// A server and its clients; everything stops when this is dropped.
pub struct Held {
    stop: Arc<AtomicBool>,
    seen: Seen,
    threads: Vec<JoinHandle<()>>,
}

impl Held {
    /// Listens on `[::]:port` (both families) inside namespace `server_netns`.
    pub fn serve(server_netns: &str, port: u16) -> Result<Held> {
        let listener = netns::run_in(server_netns, move || {
            TcpListener::bind(("::", port)).map_err(|e| LabError::io("cannot listen", e))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| LabError::io("nonblocking listener", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::default();
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || serve(listener, s, st));
        Ok(Held {
            stop,
            seen,
            threads: vec![thread],
        })
    }

    /// Connects from namespace `client_netns` to `to` and sends a byte every `interval`;
    /// the client's address and port (the key of [`Held::last_delivery`]).
    pub fn connect(
        &mut self,
        client_netns: &str,
        to: SocketAddr,
        interval: Duration,
    ) -> Result<SocketAddr> {
        let stream = netns::run_in(client_netns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(2))
                .map_err(|e| LabError::io(format!("cannot connect to {to}"), e))
        })?;
        let local = stream
            .local_addr()
            .map_err(|e| LabError::io("client address", e))?;
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            while !stop.load(Ordering::Relaxed) {
                // A write that fails (the connection was reset) ends this client.
                if stream.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(interval);
            }
        }));
        Ok(canonical(local))
    }

    /// When the connection from `client` last delivered a byte to the server.
    pub fn last_delivery(&self, client: SocketAddr) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .copied()
    }

    /// Waits until every one of `clients` has delivered after `since`; false on timeout.
    pub fn wait_delivering(
        &self,
        clients: &[SocketAddr],
        since: Instant,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if clients
                .iter()
                .all(|c| self.last_delivery(*c).is_some_and(|t| t > since))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// IPv4 peers of a dual-stack socket arrive as IPv4-mapped IPv6 addresses.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn serve(listener: TcpListener, seen: Seen, stop: Arc<AtomicBool>) {
    let mut conns: Vec<(SocketAddr, TcpStream)> = Vec::new();
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        while let Ok((s, peer)) = listener.accept() {
            if s.set_nonblocking(true).is_ok() {
                conns.push((canonical(peer), s));
            }
        }
        conns.retain_mut(|(peer, s)| match s.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*peer, Instant::now());
                true
            }
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        });
        std::thread::sleep(Duration::from_millis(2));
    }
}
