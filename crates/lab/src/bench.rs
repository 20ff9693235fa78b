//! Measurements between two pods, from inside the client pod's namespace: new TCP
//! connections per second, request latency (connect, HTTP GET, answer, close), and how long
//! after a policy change a continuous prober sees traffic blocked.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::netns;

/// What a measurement saw: connections that opened and attempts that failed (timed out
/// after 1 s, e.g. a full accept queue).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub per_sec: f64,
    pub failures: u64,
    /// Sorted latencies of the successful attempts (request measurements only).
    pub latencies: Vec<Duration>,
}

/// Sequential connect + close for `duration`: connections per second and failures.
pub fn connection_rate(
    client_netns: &str,
    dst: Ipv4Addr,
    port: u16,
    duration: Duration,
) -> Result<Sample> {
    netns::run_in(client_netns, move || {
        let addr = SocketAddr::from((dst, port));
        let start = Instant::now();
        let (mut n, mut failures) = (0u64, 0u64);
        while start.elapsed() < duration {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => {
                    abortive_close(&s);
                    n += 1
                }
                Err(_) => failures += 1,
            }
        }
        Ok(Sample {
            per_sec: n as f64 / start.elapsed().as_secs_f64(),
            failures,
            latencies: Vec::new(),
        })
    })
}

/// `count` requests, each on a new connection: connect, `GET /`, read the whole answer.
pub fn request_latencies(
    client_netns: &str,
    dst: Ipv4Addr,
    port: u16,
    count: usize,
) -> Result<Sample> {
    netns::run_in(client_netns, move || {
        let addr = SocketAddr::from((dst, port));
        let mut out = Sample::default();
        let start = Instant::now();
        for _ in 0..count {
            let t = Instant::now();
            match request(addr) {
                Ok(()) => out.latencies.push(t.elapsed()),
                Err(_) => out.failures += 1,
            }
        }
        out.per_sec = out.latencies.len() as f64 / start.elapsed().as_secs_f64();
        out.latencies.sort();
        Ok(out)
    })
}

fn request(addr: SocketAddr) -> std::io::Result<()> {
    let mut buf = [0u8; 512];
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    while s.read(&mut buf)? > 0 {}
    abortive_close(&s);
    Ok(())
}

/// Closing with a zero linger sends RST and leaves no TIME_WAIT socket behind: otherwise tens
/// of thousands of them make the kernel's search for a free source port the bottleneck.
fn abortive_close(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// A prober that connects to `dst:port` from `client_netns` over and over (each attempt
/// with `attempt_timeout`) and reports the start time of every attempt with its outcome.
pub struct ContinuousProber {
    stop: Arc<AtomicBool>,
    results: mpsc::Receiver<(Instant, bool)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ContinuousProber {
    pub fn start(
        client_netns: &str,
        dst: Ipv4Addr,
        port: u16,
        attempt_timeout: Duration,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns = client_netns.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let entered = netns::enter(&ns);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if !ok {
                return;
            }
            let addr = SocketAddr::from((dst, port));
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let reached = TcpStream::connect_timeout(&addr, attempt_timeout).is_ok();
                if tx.send((t, reached)).is_err() {
                    return;
                }
                if reached {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        });
        ready_rx
            .recv()
            .map_err(|_| LabError::Daemon("the prober thread died".into()))??;
        Ok(ContinuousProber {
            stop,
            results: rx,
            thread: Some(thread),
        })
    }

    /// Waits until an attempt started at or after `since` has outcome `reached`; returns its
    /// start time, or `None` after `timeout`.
    pub fn wait_for(&self, since: Instant, reached: bool, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok((t, r)) if t >= since && r == reached => return Some(t),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Drop for ContinuousProber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `q` quantile (0..=1) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_durations() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&d, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
