//! The bench's relays: `palisade relay` processes (this same binary) in front of its etcd,
//! started before the agents and killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::procstat::{self, ProcSample};

/// Running relay processes and the addresses they listen on.
pub struct Relays {
    children: Vec<Child>,
    pub addrs: Vec<String>,
}

impl Relays {
    /// Starts `n` relays of the etcd at `url` on free ports of 127.0.0.1; returns once each
    /// holds its first listing (it prints its address then).
    pub fn start(n: usize, url: &str) -> Result<Relays> {
        let exe = std::env::current_exe().context("cannot find this program to run relays")?;
        let mut relays = Relays {
            children: Vec::new(),
            addrs: Vec::new(),
        };
        for _ in 0..n {
            let mut child = Command::new(&exe)
                .args([
                    "relay",
                    "--datastore",
                    url,
                    "--listen",
                    "127.0.0.1:0",
                    "--etcd-timeout",
                    "60",
                ])
                .env_remove("PALISADE_DATASTORE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start `palisade relay`")?;
            let stdout = child.stdout.take().expect("piped");
            relays.children.push(child);
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .context("a relay did not report its address within 120 s")?;
            let Some(addr) = line
                .strip_prefix("listening on ")
                .and_then(|rest| rest.split(',').next())
            else {
                bail!("a relay said {line:?} instead of its address");
            };
            relays.addrs.push(addr.trim().to_string());
        }
        Ok(relays)
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// The relays' CPU and memory, summed (`None` if one cannot be read).
    pub fn sample(&self) -> Option<ProcSample> {
        let mut sum = ProcSample::default();
        for c in &self.children {
            let s = procstat::sample(&c.id().to_string())?;
            sum.cpu_seconds += s.cpu_seconds;
            sum.rss_kib += s.rss_kib;
            sum.peak_rss_kib += s.peak_rss_kib;
        }
        Some(sum)
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
