//! Resource readings of a process (from /proc/<pid>) and of etcd (its `/metrics`), taken
//! between the bench's phases.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;

/// CPU and memory of one process at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    /// User + system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// Resident set (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` "self" for this process).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 of `rest` (0-based 11, 12).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(ProcSample {
        cpu_seconds: ticks as f64 / hz,
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
    })
}

/// Bytes etcd has sent to gRPC clients (`etcd_network_client_grpc_sent_bytes_total`), read
/// from its plain-HTTP metrics listener at `host:port`.
pub fn etcd_sent_bytes(metrics: &str) -> Option<f64> {
    let body = http_get(metrics, "/metrics")?;
    body.lines().find_map(|l| {
        l.strip_prefix("etcd_network_client_grpc_sent_bytes_total")?
            .trim()
            .parse()
            .ok()
    })
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// etcd's resources at one moment: what this bench can see of it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EtcdSample {
    pub process: Option<ProcSample>,
    pub sent_bytes: Option<f64>,
}

/// Where to read etcd's figures: its pid (when the bench started it) and metrics listener.
#[derive(Debug, Clone, Default)]
pub struct EtcdProbe {
    pub pid: Option<u32>,
    pub metrics: Option<String>,
}

impl EtcdProbe {
    pub fn sample(&self) -> EtcdSample {
        EtcdSample {
            process: self.pid.and_then(|p| sample(&p.to_string())),
            sent_bytes: self.metrics.as_deref().and_then(etcd_sent_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample("self").expect("/proc/self is readable");
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib, "{s:?}");
        assert!(s.cpu_seconds >= 0.0);
    }
}
