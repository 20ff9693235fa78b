//! Measurements between two pods, from inside the client pod's namespace: new TCP
//! connections per second, request latency (connect, HTTP GET, answer, close), and how long
//! after a policy change a continuous prober sees traffic blocked. [`BenchServer`] is the
//! server side; [`workload`] is the benchmark's cluster and policy sets; [`gauge`] reads a
//! value from an agent's `/metrics`.
//!
//! Why a server of its own: a sequential client opens a connection as soon as the kernel
//! completes the handshake, before the server accepts it. The lab's pod servers spawn a thread
//! per connection; when they fall behind (a loaded machine), the accept queue overflows, a SYN
//! is dropped and the client waits the 1 s SYN retransmission: one such stall halves a 2 s
//! rate measurement, so what was measured was the server, not the rules. [`BenchServer`]
//! accepts in a tight loop on a few threads and answers inline, with a long accept queue.

pub mod workload;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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

/// The benchmark's server: `port`/TCP in `netns` (a pod that declares no port of its own,
/// so the lab serves nothing there), answering a `GET` with a short body and dropping
/// connections that send nothing. Stops (and closes the port) when dropped.
pub struct BenchServer {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Accept threads of a [`BenchServer`].
const ACCEPT_THREADS: usize = 2;
/// The accept queue asked for (the namespace's `net.core.somaxconn` is raised to it).
const BACKLOG: i32 = 65535;

impl BenchServer {
    pub fn start(netns: &str, port: u16) -> Result<BenchServer> {
        let listener = netns::run_in(netns, move || {
            // Per network namespace: this changes only the pod's namespace, never the host's.
            let somaxconn = "/proc/sys/net/core/somaxconn";
            std::fs::write(somaxconn, BACKLOG.to_string())
                .map_err(|e| LabError::io(format!("cannot raise {somaxconn}"), e))?;
            let what = format!("cannot serve {port}/TCP");
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .map_err(|e| LabError::io(what.clone(), e))?;
            s.set_reuse_address(true)
                .and_then(|()| s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into()))
                .and_then(|()| s.listen(BACKLOG))
                // accept(2) honours SO_RCVTIMEO: the threads look at the stop flag this often.
                .and_then(|()| s.set_read_timeout(Some(Duration::from_millis(100))))
                .map_err(|e| LabError::io(what, e))?;
            Ok(TcpListener::from(s))
        })?;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..ACCEPT_THREADS)
            .map(|_| {
                let (l, flag) = (listener.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !flag.load(Ordering::Relaxed) {
                        if let Ok((conn, _)) = l.accept() {
                            answer(conn);
                        }
                    }
                })
            })
            .collect();
        Ok(BenchServer { stop, threads })
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads a request head (or nothing: EOF, reset, 1 s of silence) and answers a `GET`.
fn answer(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 1024];
    let mut seen = 0;
    loop {
        match conn.read(&mut buf[seen..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen += n,
        }
        if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") || seen == buf.len() {
            break;
        }
    }
    if buf.starts_with(b"GET") {
        let body = "bench\n";
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes());
    }
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

/// The value of the unlabelled metric `name` in a Prometheus/OpenMetrics text exposition.
pub fn gauge(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(name))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
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

    #[test]
    fn bench_server_answers_requests_and_keeps_up_with_connections() {
        if !palisade_dataplane::netns::is_root() {
            eprintln!("skipped: needs root (network namespaces)");
            return;
        }
        let guard = palisade_dataplane::netns::NetnsGuard::new("bench").unwrap();
        let ns = guard.name().to_string();
        let server = BenchServer::start(&ns, 8080).unwrap();
        let lo = Ipv4Addr::LOCALHOST;
        let req = request_latencies(&ns, lo, 8080, 200).unwrap();
        assert_eq!((req.failures, req.latencies.len()), (0, 200));
        let body = netns::run_in(&ns, move || {
            let mut s = TcpStream::connect((lo, 8080)).map_err(|e| LabError::io("connect", e))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")
                .map_err(|e| LabError::io("write", e))?;
            let mut out = String::new();
            s.read_to_string(&mut out)
                .map_err(|e| LabError::io("read", e))?;
            Ok(out)
        })
        .unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body:?}");
        assert!(body.ends_with("\r\n\r\nbench\n"), "{body:?}");
        // Far more connections than the default accept queue (4096) of a namespace.
        let rate = connection_rate(&ns, lo, 8080, Duration::from_millis(1500)).unwrap();
        assert_eq!(rate.failures, 0, "{rate:?}");
        drop(server);
        let closed = netns::run_in(&ns, move || Ok(TcpStream::connect((lo, 8080)).is_err()));
        assert!(
            closed.unwrap(),
            "the port is still open after the server was dropped"
        );
    }

    #[test]
    fn gauges_by_exact_name() {
        let text = "# HELP palisade_agent_rules Compiled policy rules in force.\n\
                    palisade_agent_rules 2002\n\
                    palisade_agent_rules_total 7\n\
                    palisade_agent_active_policies 1000\n\
                    # EOF\n";
        assert_eq!(gauge(text, "palisade_agent_active_policies"), Some(1000.0));
        assert_eq!(gauge(text, "palisade_agent_rules"), Some(2002.0));
        assert_eq!(gauge(text, "palisade_agent_ip_sets"), None);
    }
}
