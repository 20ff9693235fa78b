//! `palisade bench revoke` (root): how fast `--established revoke` cuts an established
//! connection that a new policy denies. A 2-node lab (bridge CNI, address matching, agents
//! with `--established revoke`): a client on n1 holds a TCP connection to a server on n2 and
//! sends a byte every 10 ms; `--conntrack` unrelated flows (UDP from a second client, which
//! the policy still admits) fill the nodes' conntrack tables. Each run applies a policy that
//! admits only the second client, measures the time from the write to the connection's last
//! delivered byte, deletes the policy and connects again.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use palisade_lab::bench::quantile;
use palisade_lab::held::Held;
use serde::Serialize;
use serde_json::Value;

use super::bench::Output;

#[derive(clap::Args)]
#[command(after_help = "\
Root only; builds a lab of its own and takes it down. Example:
  cargo build --release -p palisade-cli && sudo target/release/palisade bench revoke --runs 20 --conntrack 10000")]
pub struct Args {
    /// Measured runs.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Unrelated conntrack entries kept present (UDP flows the policy admits).
    #[arg(long, default_value_t = 10_000)]
    pub conntrack: u16,
    /// Dataplane of the lab's agents.
    #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables"])]
    pub dataplane: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

const PODS: &str = include_str!("../../../../examples/revoke/pods.yaml");

const ONLY_KEPT: &str = include_str!("../../../../examples/revoke/server-from-kept.yaml");

#[derive(Serialize)]
struct Report {
    dataplane: String,
    runs: usize,
    conntrack_entries_on_server_node: Vec<u64>,
    cut_ms: Vec<f64>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Runs this binary with `args`; its stdout, or an error with its output.
fn palisade(args: &[&str]) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find own binary")?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .context("run palisade")?;
    if !out.status.success() {
        bail!(
            "palisade {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = palisade(&["lab", "--name", &self.0, "down"]);
    }
}

fn pod<'a>(status: &'a Value, name: &str) -> Result<&'a Value> {
    status["pods"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pod"] == name))
        .with_context(|| format!("no pod {name} in the lab"))
}

fn first_ip(p: &Value) -> Result<IpAddr> {
    p["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("a pod without an address")
}

/// Sends one UDP datagram from namespace `netns` to each of `count` ports of `to`.
fn fill(netns: &str, to: IpAddr, count: u16) -> Result<()> {
    palisade_lab::netns::run_in(netns, move || {
        let any: SocketAddr = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .expect("literal");
        let sock = UdpSocket::bind(any)
            .map_err(|e| palisade_lab::LabError::Daemon(format!("udp socket: {e}")))?;
        for port in 20_000..20_000u16.saturating_add(count) {
            let _ = sock.send_to(b"x", (to, port));
        }
        Ok(())
    })?;
    Ok(())
}

/// The number of conntrack entries in namespace `netns`.
fn conntrack_count(netns: &str) -> u64 {
    Command::new("ip")
        .args(["netns", "exec", netns, "conntrack", "-C"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

pub fn run(a: Args) -> Result<ExitCode> {
    super::lab::require_root()?;
    anyhow::ensure!(a.runs >= 1, "--runs must be at least 1");
    let name = format!("brv-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _dir = RemoveDir(dir.clone());
    let pods = dir.join("pods.yaml");
    let policy = dir.join("policy.yaml");
    std::fs::write(&pods, PODS)?;
    std::fs::write(&policy, ONLY_KEPT)?;
    let (pods, policy) = (pods.display().to_string(), policy.display().to_string());
    let _down = Down(name.clone());
    palisade(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &pods,
        "--nodes",
        "2",
        "--dataplane",
        &a.dataplane,
        "--cni",
        "bridge",
        "--established",
        "revoke",
    ])?;
    let status: Value = serde_json::from_str(&palisade(&[
        "lab", "--name", &name, "status", "-o", "json",
    ])?)?;
    let netns = |p: &Value| p["netns"].as_str().unwrap_or_default().to_string();
    let (server, cut, kept) = (
        pod(&status, "rv/server")?,
        pod(&status, "rv/cut")?,
        pod(&status, "rv/kept")?,
    );
    let node2 = status["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == "n2"))
        .map(netns)
        .context("no node n2")?;
    let to = SocketAddr::new(first_ip(server)?, 7100);
    let mut held = Held::serve(&netns(server), 7100)?;

    let mut cuts: Vec<Duration> = Vec::new();
    let mut entries = Vec::new();
    for run in 0..a.runs {
        // Top the table up to about --conntrack entries (UDP entries expire after 30 s).
        if conntrack_count(&node2) < u64::from(a.conntrack) {
            fill(&netns(kept), to.ip(), a.conntrack)?;
        }
        let client = held.connect(&netns(cut), to, Duration::from_millis(10))?;
        if !held.wait_delivering(&[client], Instant::now(), Duration::from_secs(5)) {
            bail!("run {run}: the connection does not deliver");
        }
        entries.push(conntrack_count(&node2));
        let written = Instant::now();
        palisade(&["lab", "--name", &name, "apply", "-f", &policy])?;
        // Cut: nothing delivered for 500 ms (50 intervals).
        let deadline = written + Duration::from_secs(10);
        loop {
            let last = held.last_delivery(client).unwrap_or(written);
            if last.elapsed() > Duration::from_millis(500) {
                cuts.push(last.saturating_duration_since(written));
                break;
            }
            if Instant::now() > deadline {
                bail!("run {run}: the denied connection was not cut within 10 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        palisade(&[
            "lab",
            "--name",
            &name,
            "delete",
            "networkpolicy",
            "rv/server-from-kept",
        ])?;
    }
    drop(held);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut sorted = cuts.clone();
    sorted.sort();
    let report = Report {
        dataplane: a.dataplane,
        runs: a.runs,
        conntrack_entries_on_server_node: entries,
        p50_ms: ms(quantile(&sorted, 0.5)),
        p99_ms: ms(quantile(&sorted, 0.99)),
        max_ms: sorted.last().copied().map_or(0.0, ms),
        cut_ms: cuts.into_iter().map(ms).collect(),
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            let (lo, hi) = report
                .conntrack_entries_on_server_node
                .iter()
                .fold((u64::MAX, 0), |(lo, hi), &n| (lo.min(n), hi.max(n)));
            println!(
                "revoke on {}: {} runs, {lo}-{hi} conntrack entries on the server's node",
                report.dataplane, report.runs
            );
            println!(
                "write -> connection cut: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                report.p50_ms, report.p99_ms, report.max_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
