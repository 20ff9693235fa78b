//! `palisade lab bench`: real packets through real rules. For each dataplane and endpoint
//! matching mode (`--endpoint-match`; under `--cni palisade` both by default, so that their
//! ratios come from one run), a 2-node lab wired by `--cni`:
//! a client pod on n1; a server pod (port 80) and `--idle-pods` idle pods on n2. From inside
//! the client, new TCP connections per second (sequential connect + close) and request
//! latency (connect, HTTP GET, answer, close; p50 and p99) to the benchmark's own
//! [`BenchServer`] (see why in [`palisade_lab::bench`]), in four scenarios:
//!
//! 1. `no policy`: the baseline;
//! 2. `1 policy`: the server selected by one policy that allows the client;
//!    then `1 policy + deny-all`: a default-deny on the server as well (enforced; the
//!    client is still allowed), and `1 policy + staged deny-all`: the same default-deny
//!    staged (`palisade.dev/staged`), which the server's chain evaluates besides the enforced
//!    policies; their ratio (staged / enforced, per round) is the cost of staging;
//! 3. `N policies on node`: n2 carries N active policies; the server is still selected only by
//!    the one allowing the client, the N - 1 others select the idle pods (each with its own
//!    peers and ports, see [`palisade_lab::bench::workload`]);
//! 4. `N policies on pod`: the N - 1 others moved onto the server (allowing absent clients):
//!    every new connection to it is judged by N policies (the adversarial case).
//!
//! With `--cnps C`, right after 3: `N policies on node + C+C CNPs`, the same with C Admin and
//! C Baseline ClusterNetworkPolicies added, all selecting every bench pod (the server
//! included) with rules for absent peers ([`workload::cluster_policies`]); deleted again
//! before 4.
//!
//! `--rounds` rounds each measure 1-4 in order (then every policy is deleted in one write);
//! the baseline once more at the end; each run waits `--settle-ms` first. A scenario's ratio
//! is the median over rounds of its run divided by the mean of the two no-policy runs around
//! its round, so that slow drift of a shared machine's load cancels. Before each run, n2's
//! agent (its `/metrics` and `/counters`) must report the scenario's count of policies active
//! on the node and selecting the server, or the benchmark stops; both counts are printed.
//!
//! Then policy apply → blocked: a prober connects continuously while a deny-all-ingress
//! policy for the server is applied; the time from the apply request to the first failing
//! attempt (p50, p99 over `--block-runs` runs; the policy is deleted and flow restored in
//! between). It is measured first, on the open server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use palisade_agent::CountersReport;
use palisade_lab::bench::{
    connection_rate, gauge, quantile, request_latencies, workload, BenchServer, ContinuousProber,
};
use palisade_lab::control::{self, AgentState, Request};
use palisade_lab::{Cni, EndpointMatch, IpFamily, LabNames, UpOptions};
use palisade_model::{EndpointId, Policy, PolicyId};
use serde::Serialize;

use super::{require_root, Output};

#[derive(clap::Args)]
#[command(after_help = "\
Scenarios (N = --policies), per dataplane; each round measures them in this order:
  no policy           baseline (measured once more after the last round)
  1 policy            the server selected by one policy allowing the client
  1 policy + deny-all the same, and a default-deny on the server (enforced)
  1 policy + staged deny-all
                      the same default-deny, staged: the cost of staging is the ratio of
                      these two (printed per dataplane at the end)
  N policies on node  n2 carries N active policies: 1 selects the server, the others
                      select idle pods of n2 (each with its own peers and ports)
  N policies on node + C+C CNPs
                      with --cnps C: the same, and C Admin + C Baseline
                      ClusterNetworkPolicies selecting every bench pod (rules for absent
                      peers: every connection to the server walks the Admin tier first)
  N policies on pod   all N select the server: each new connection is judged by all N
RATIO: median over rounds of (run / mean of the no-policy runs before and after the round).
ON N2 and ON SRV are what n2's agent reports (policies active on the node, selecting the
server); a count other than the scenario's stops the benchmark.

Example:
  cargo build --release -p palisade-cli && sudo target/release/palisade lab bench")]
pub struct BenchArgs {
    /// Dataplanes to measure.
    #[arg(long, value_delimiter = ',', default_value = "iptables,nftables")]
    pub dataplane: Vec<String>,
    /// Who wires the pods (see `lab up --cni`).
    #[arg(long, default_value = "bridge", value_parser = ["bridge", "ptp", "palisade"])]
    pub cni: String,
    /// Endpoint matching modes to measure, one lab each. Default: address and interface
    /// under --cni palisade (whose veths carry the names interface matching expects),
    /// address only under bridge and ptp.
    #[arg(long, value_delimiter = ',', value_parser = ["address", "interface"])]
    pub endpoint_match: Vec<String>,
    /// How long each connection-rate measurement runs, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub rate_ms: u64,
    /// Requests per latency measurement.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// N: the policies of the "N policies on node" and "N policies on pod" scenarios (≥ 2).
    #[arg(long, default_value_t = 1000)]
    pub policies: usize,
    /// C: with C > 0, the scenario "N policies on node + C+C CNPs" (C Admin and C Baseline
    /// ClusterNetworkPolicies as well) is measured after "N policies on node".
    #[arg(long, default_value_t = 0)]
    pub cnps: usize,
    /// Idle pods on n2 that the "on node" policies select (1..=200).
    #[arg(long, default_value_t = 20)]
    pub idle_pods: usize,
    /// Apply → blocked measurements per dataplane.
    #[arg(long, default_value_t = 20)]
    pub block_runs: usize,
    /// Apply → blocked: pause after flow is restored before the next apply, in
    /// milliseconds. An agent starts applies at most once per batch interval (50 ms): an apply
    /// that follows the previous one closer than that waits for the rest of the interval, so
    /// with 0 the runs measure back-to-back changes, not one change after a quiet period.
    #[arg(long, default_value_t = 100)]
    pub block_pause_ms: u64,
    /// Rounds: each measures every scenario once, in order (the no-policy baseline once
    /// more at the end).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Pause after each policy change before measuring, in milliseconds, so that what the
    /// agent and the kernel still do after a change (status write, freeing the old rules) is
    /// not measured.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// How the nftables agents lay out the tiers whose rules are all Allow (see `lab up
    /// --nft-layout`).
    #[arg(long, default_value = "chains", value_parser = ["flat", "chains"])]
    pub nft_layout: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// One scenario of one dataplane; figures are medians over its runs.
#[derive(Serialize)]
struct Case {
    dataplane: String,
    cni: String,
    endpoint_match: String,
    scenario: String,
    connections_per_sec: f64,
    /// The median over rounds of (this run / the mean of the no-policy runs just before and
    /// just after its round); for the no-policy case, its runs / their median.
    rate_ratio: f64,
    latency_p50_us: f64,
    latency_p99_us: f64,
    /// As `rate_ratio`, for the request latency p50.
    p50_ratio: f64,
    /// Connection attempts that failed (1 s timeout), in all runs.
    failures: u64,
    /// Policies that select a pod of n2, as n2's agent reports them.
    active_policies_on_node: u64,
    /// Policies that select the server (its ingress), as n2's agent reports them.
    policies_selecting_server: usize,
    /// Compiled policy rules in force on n2, as its agent reports them.
    rules_on_node: u64,
    runs: usize,
    connections_per_sec_runs: Vec<f64>,
    rate_ratio_runs: Vec<f64>,
    /// The median of the dataplane's no-policy runs.
    baseline_connections_per_sec: f64,
    baseline_latency_p50_us: f64,
}

#[derive(Serialize)]
struct Block {
    dataplane: String,
    cni: String,
    endpoint_match: String,
    runs: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Delete request → first attempt that connects again (p50).
    restore_p50_ms: f64,
    /// The pause after the restore before the next apply (`--block-pause-ms`).
    pause_ms: u64,
}

/// The staged default-deny against the same policy enforced.
#[derive(Serialize)]
struct StagedCost {
    dataplane: String,
    cni: String,
    endpoint_match: String,
    /// Median over rounds of (connection rate with the deny-all staged / with it enforced).
    rate_ratio: f64,
    rate_ratio_runs: Vec<f64>,
    /// The same for the request latency p50.
    p50_ratio: f64,
}

#[derive(Serialize)]
struct Report {
    cases: Vec<Case>,
    apply_to_blocked: Vec<Block>,
    staged_vs_enforced: Vec<StagedCost>,
}

fn apply(names: &LabNames, policies: Vec<Policy>) -> Result<()> {
    let timeout = palisade_lab::daemon::SYNC_TIMEOUT + Duration::from_secs(5);
    let request = Request::Apply {
        namespaces: vec![],
        pods: vec![],
        policies,
        rule_names: vec![],
    };
    control::call(&names.socket(), &request, timeout)?;
    Ok(())
}

fn delete(names: &LabNames, name: &str) -> Result<()> {
    let id = PolicyId {
        tier: palisade_model::DEFAULT_TIER.into(),
        namespace: Some(workload::NS.into()),
        name: name.into(),
    };
    let timeout = palisade_lab::daemon::SYNC_TIMEOUT + Duration::from_secs(5);
    control::call(&names.socket(), &Request::DeletePolicy { id }, timeout)
        .with_context(|| format!("cannot delete policy {name}"))?;
    Ok(())
}

fn delete_all(names: &LabNames, ids: Vec<PolicyId>) -> Result<()> {
    let timeout = palisade_lab::daemon::SYNC_TIMEOUT + Duration::from_secs(5);
    control::call(&names.socket(), &Request::DeletePolicies { ids }, timeout)
        .context("cannot delete the bench policies")?;
    Ok(())
}

struct Down(LabNames);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = palisade_lab::down(&self.0);
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// What n2's agent reports.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    active_on_node: u64,
    selecting_server: usize,
    rules_on_node: u64,
}

/// n2's agent, through its `/metrics` and `/counters`.
struct NodeAgent {
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
}

impl NodeAgent {
    fn find(names: &LabNames, node: &str) -> Result<NodeAgent> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = control::call(&names.socket(), &Request::Status, Duration::from_secs(10))?;
            let agents: Vec<AgentState> = serde_json::from_value(status["agents"].clone())
                .context("unreadable agent status")?;
            let addr = agents
                .iter()
                .find(|a| a.node == node)
                .and_then(|a| a.metrics_addr.as_deref());
            if let Some(addr) = addr {
                let addr = addr
                    .parse()
                    .with_context(|| format!("bad metrics address {addr:?} of node {node}"))?;
                let runtime = super::super::datastore_args::runtime()?;
                return Ok(NodeAgent { addr, runtime });
            }
            if Instant::now() > deadline {
                bail!("the agent of node {node} reported no metrics address");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> Result<String> {
        // Generous: with 1,000 policies on iptables, `/counters` reads every rule's counters,
        // and the machine may be shared.
        let (code, body) = self.runtime.block_on(palisade_agent::client::get(
            self.addr,
            path,
            Duration::from_secs(60),
        ))?;
        if code != 200 {
            bail!("{}{path} answered {code}: {}", self.addr, body.trim());
        }
        Ok(body)
    }

    fn counts(&self) -> Result<Counts> {
        let metrics = self.get("/metrics")?;
        let metric = |name: &str| {
            gauge(&metrics, name)
                .map(|v| v as u64)
                .with_context(|| format!("{}/metrics has no {name}", self.addr))
        };
        let counters: CountersReport = serde_json::from_str(&self.get("/counters")?)
            .with_context(|| format!("bad /counters answer from {}", self.addr))?;
        let server = EndpointId::new(workload::NS, "server").to_string();
        Ok(Counts {
            active_on_node: metric("palisade_agent_active_policies")?,
            selecting_server: counters
                .endpoints
                .iter()
                .find(|e| e.endpoint == server)
                .map_or(0, |e| e.ingress_count),
            rules_on_node: metric("palisade_agent_rules")?,
        })
    }

    /// The counts, once they are `(active on node, selecting the server)`; an error naming
    /// the scenario if they do not get there.
    fn expect(&self, scenario: &str, active: usize, selecting: usize) -> Result<Counts> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.counts()?;
            if c.active_on_node == active as u64 && c.selecting_server == selecting {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "scenario {scenario:?}: n2's agent reports {} active policies and {} \
                     selecting the server, not {active} and {selecting}",
                    c.active_on_node,
                    c.selecting_server
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One measurement of one scenario.
#[derive(Debug, Clone, Copy)]
struct Run {
    rate: f64,
    p50: f64,
    p99: f64,
    failures: u64,
}

fn measure(client: &str, server: Ipv4Addr, args: &BenchArgs) -> Result<Run> {
    let port = workload::SERVER_PORT;
    let rate = connection_rate(client, server, port, Duration::from_millis(args.rate_ms))?;
    let req = request_latencies(client, server, port, args.requests)?;
    Ok(Run {
        rate: rate.per_sec,
        p50: us(quantile(&req.latencies, 0.5)),
        p99: us(quantile(&req.latencies, 0.99)),
        failures: rate.failures + req.failures,
    })
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b.max(f64::MIN_POSITIVE)
}

/// Apply → blocked and delete → flowing again, each sorted.
fn apply_to_blocked(
    names: &LabNames,
    client: &str,
    server: Ipv4Addr,
    runs: usize,
    pause: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let prober = ContinuousProber::start(
        client,
        server,
        workload::SERVER_PORT,
        Duration::from_millis(50),
    )?;
    let (mut blocked, mut restored) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        apply(names, vec![workload::deny_all()?])?;
        let at = prober
            .wait_for(t0, false, Duration::from_secs(10))
            .context("traffic was never blocked after the deny policy was applied")?;
        blocked.push(at.saturating_duration_since(t0));
        let t1 = Instant::now();
        delete(names, workload::DENY_ALL)?;
        let at = prober
            .wait_for(t1, true, Duration::from_secs(10))
            .context("traffic did not flow again after the deny policy was deleted")?;
        restored.push(at.saturating_duration_since(t1));
        std::thread::sleep(pause);
    }
    blocked.sort();
    restored.sort();
    Ok((blocked, restored))
}

fn bench_dataplane(
    dataplane: &str,
    matching: EndpointMatch,
    args: &BenchArgs,
    report: &mut Report,
) -> Result<()> {
    let names = LabNames::new(&format!(
        "bench-{}-{}-{}",
        &dataplane[..3],
        &matching.as_str()[..4],
        std::process::id()
    ))?;
    let cni: Cni = args.cni.parse().map_err(anyhow::Error::msg)?;
    let options = UpOptions {
        nodes: Some(2),
        dataplane: dataplane.to_string(),
        datastore: "embedded:".into(),
        agents: true,
        cni,
        ip_family: IpFamily::Ipv4,
        endpoint_match: Some(matching),
        revoke: false,
        nft_layout: (dataplane == "nftables").then(|| args.nft_layout.clone()),
    };
    let label = (cni.to_string(), matching.to_string());
    let state = palisade_lab::up(&names, &options, workload::cluster(args.idle_pods))?;
    let _down = Down(names.clone());
    let pod = |name: &str| {
        state
            .plan
            .pod(&EndpointId::new(workload::NS, name))
            .with_context(|| format!("no {name} pod in the lab"))
    };
    let client = pod("client")?.netns.clone();
    let server = match pod("server")?.ip_of(false) {
        Some(IpAddr::V4(ip)) => ip,
        _ => bail!("the server pod has no IPv4 address"),
    };
    let _server = BenchServer::start(&pod("server")?.netns, workload::SERVER_PORT)?;
    let n2 = NodeAgent::find(&names, "n2")?;
    eprintln!("{dataplane}, cni {cni}, {matching} matching: lab up; measuring");

    let pause = Duration::from_millis(args.block_pause_ms);
    let (blocked, restored) = apply_to_blocked(&names, &client, server, args.block_runs, pause)?;
    report.apply_to_blocked.push(Block {
        dataplane: dataplane.into(),
        cni: label.0.clone(),
        endpoint_match: label.1.clone(),
        runs: blocked.len(),
        p50_ms: quantile(&blocked, 0.5).as_secs_f64() * 1e3,
        p99_ms: quantile(&blocked, 0.99).as_secs_f64() * 1e3,
        max_ms: blocked.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        restore_p50_ms: quantile(&restored, 0.5).as_secs_f64() * 1e3,
        pause_ms: args.block_pause_ms,
    });

    let n = args.policies;
    let scenarios = [
        ("no policy".to_string(), 0, 0),
        ("1 policy".to_string(), 1, 1),
        ("1 policy + deny-all".to_string(), 2, 2),
        // A staged policy is active on the node but selects the server only as staged.
        ("1 policy + staged deny-all".to_string(), 2, 1),
        (format!("{n} policies on node"), n, 1),
        (format!("{n} policies on pod"), n, n),
    ];
    let cnps = workload::cluster_policies(args.cnps);
    let cnp_ids: Vec<PolicyId> = cnps.iter().map(|p| p.id.clone()).collect();
    let mut scenarios = scenarios.to_vec();
    if !cnps.is_empty() {
        // Index 6, measured between 4 and 5; every CNP selects the server and n2's pods.
        let c = args.cnps;
        scenarios.push((
            format!("{n} policies on node + {c}+{c} CNPs"),
            n + cnps.len(),
            1 + cnps.len(),
        ));
    }
    let mut staged_deny = workload::deny_all()?;
    staged_deny.staged = true;
    let on_node = workload::on_node(n, args.idle_pods)?;
    let on_server = workload::on_server(n)?;
    let mut all: Vec<PolicyId> = on_node.iter().map(|p| p.id.clone()).collect();
    all.push(workload::allow_client()?.id);
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); scenarios.len()];
    let mut counts: Vec<Option<Counts>> = vec![None; scenarios.len()];
    let mut measure_scenario = |k: usize, round: usize| -> Result<()> {
        let (name, active, selecting) = &scenarios[k];
        let c = n2.expect(name, *active, *selecting)?;
        std::thread::sleep(Duration::from_millis(args.settle_ms));
        let run = measure(&client, server, args)?;
        eprintln!(
            "  round {round}: {name}: {:.0} conn/s, p50 {:.0} µs ({} active on n2, {} on the server)",
            run.rate, run.p50, c.active_on_node, c.selecting_server
        );
        runs[k].push(run);
        counts[k].get_or_insert(c);
        Ok(())
    };
    for round in 1..=args.rounds {
        measure_scenario(0, round)?;
        apply(&names, vec![workload::allow_client()?])?;
        measure_scenario(1, round)?;
        apply(&names, vec![workload::deny_all()?])?;
        measure_scenario(2, round)?;
        apply(&names, vec![staged_deny.clone()])?;
        measure_scenario(3, round)?;
        delete(&names, workload::DENY_ALL)?;
        let t = Instant::now();
        apply(&names, on_node.clone())?;
        eprintln!(
            "  applied {} policies on n2's idle pods in {:.1?}",
            n - 1,
            t.elapsed()
        );
        measure_scenario(4, round)?;
        if !cnps.is_empty() {
            let t = Instant::now();
            apply(&names, cnps.clone())?;
            eprintln!(
                "  applied {} ClusterNetworkPolicies in {:.1?}",
                cnps.len(),
                t.elapsed()
            );
            measure_scenario(6, round)?;
            delete_all(&names, cnp_ids.clone())?;
        }
        let t = Instant::now();
        apply(&names, on_server.clone())?;
        eprintln!(
            "  moved {} policies onto the server in {:.1?}",
            n - 1,
            t.elapsed()
        );
        measure_scenario(5, round)?;
        let t = Instant::now();
        delete_all(&names, all.clone())?;
        eprintln!("  deleted {n} policies in {:.1?}", t.elapsed());
    }
    measure_scenario(0, args.rounds + 1)?;

    // The staged deny-all against the same policy enforced, round by round.
    let (staged_ratios, staged_p50): (Vec<f64>, Vec<f64>) = runs[3]
        .iter()
        .zip(&runs[2])
        .map(|(s, e)| (ratio(s.rate, e.rate), ratio(s.p50, e.p50)))
        .unzip();
    report.staged_vs_enforced.push(StagedCost {
        dataplane: dataplane.into(),
        cni: label.0.clone(),
        endpoint_match: label.1.clone(),
        rate_ratio: median(staged_ratios.iter().copied()),
        rate_ratio_runs: staged_ratios,
        p50_ratio: median(staged_p50),
    });

    // Each run of a scenario against the mean of the two no-policy runs around its round.
    let base = &runs[0];
    let bracket = |r: usize, f: fn(&Run) -> f64| (f(&base[r]) + f(&base[r + 1])) / 2.0;
    let base_rate = median(base.iter().map(|b| b.rate));
    let base_p50 = median(base.iter().map(|b| b.p50));
    // In the order measured: the CNP scenario (index 6) right after "on node" (4).
    let order = [0, 1, 2, 3, 4, 6, 5]
        .into_iter()
        .filter(|&k| k < scenarios.len());
    for k in order {
        let name = &scenarios[k].0;
        let these = &runs[k];
        let (rate_ratios, p50_ratios): (Vec<f64>, Vec<f64>) = if k == 0 {
            let r = these.iter().map(|b| ratio(b.rate, base_rate)).collect();
            let p = these.iter().map(|b| ratio(b.p50, base_p50)).collect();
            (r, p)
        } else {
            these
                .iter()
                .enumerate()
                .map(|(r, m)| {
                    (
                        ratio(m.rate, bracket(r, |b| b.rate)),
                        ratio(m.p50, bracket(r, |b| b.p50)),
                    )
                })
                .unzip()
        };
        let c = counts[k].context("a scenario was never measured")?;
        report.cases.push(Case {
            dataplane: dataplane.into(),
            cni: label.0.clone(),
            endpoint_match: label.1.clone(),
            scenario: name.clone(),
            connections_per_sec: median(these.iter().map(|m| m.rate)),
            rate_ratio: median(rate_ratios.iter().copied()),
            latency_p50_us: median(these.iter().map(|m| m.p50)),
            latency_p99_us: median(these.iter().map(|m| m.p99)),
            p50_ratio: median(p50_ratios.iter().copied()),
            failures: these.iter().map(|m| m.failures).sum(),
            active_policies_on_node: c.active_on_node,
            policies_selecting_server: c.selecting_server,
            rules_on_node: c.rules_on_node,
            runs: these.len(),
            connections_per_sec_runs: these.iter().map(|m| m.rate.round()).collect(),
            rate_ratio_runs: rate_ratios,
            baseline_connections_per_sec: base_rate,
            baseline_latency_p50_us: base_p50,
        });
    }
    Ok(())
}

fn print_table(report: &Report, rounds: usize) {
    if let Some(c) = report.cases.first() {
        println!(
            "client pod on n1 -> server pod on n2, port 80/TCP, cni {} (debug builds are slower: use --release)",
            c.cni
        );
    }
    println!(
        "figures: medians of {rounds} runs ({} of no policy); RATIO: median over rounds of the \
         run / the mean of the no-policy runs before and after its round; RANGE: of those ratios",
        rounds + 1
    );
    println!(
        "{:<9} {:<9} {:<27} {:>6} {:>6} {:>6} {:>8} {:>6} {:>11} {:>8} {:>8} {:>6} {:>6}",
        "DATAPLANE",
        "MATCH",
        "SCENARIO",
        "ON N2",
        "ON SRV",
        "RULES",
        "CONN/S",
        "RATIO",
        "RANGE",
        "P50 µs",
        "P99 µs",
        "RATIO",
        "FAILED"
    );
    for c in &report.cases {
        let lo = c
            .rate_ratio_runs
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = c.rate_ratio_runs.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<9} {:<9} {:<27} {:>6} {:>6} {:>6} {:>8.0} {:>6.2} {:>11} {:>8.1} {:>8.1} {:>6.2} {:>6}",
            c.dataplane,
            c.endpoint_match,
            c.scenario,
            c.active_policies_on_node,
            c.policies_selecting_server,
            c.rules_on_node,
            c.connections_per_sec,
            c.rate_ratio,
            format!("{lo:.2}-{hi:.2}"),
            c.latency_p50_us,
            c.latency_p99_us,
            c.p50_ratio,
            c.failures
        );
    }
    println!(
        "ON N2: policies active on n2; ON SRV: policies selecting the server; RULES: rules on n2 \
         (all as n2's agent reports them)"
    );
    println!(
        "\npolicy apply -> traffic blocked (continuous prober, deny-all-ingress on the server):"
    );
    for b in &report.apply_to_blocked {
        println!(
            "{:<9} {:<9} runs {:>3}  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  \
             (delete -> flowing p50 {:.1} ms, then {} ms pause)",
            b.dataplane,
            b.endpoint_match,
            b.runs,
            b.p50_ms,
            b.p99_ms,
            b.max_ms,
            b.restore_p50_ms,
            b.pause_ms
        );
    }
    println!("\nstaged deny-all on the server / the same policy enforced (per round, median):");
    for c in &report.staged_vs_enforced {
        let lo = c
            .rate_ratio_runs
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = c.rate_ratio_runs.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<9} {:<9} connection rate {:.3} (range {lo:.3}-{hi:.3})  latency p50 {:.3}",
            c.dataplane, c.endpoint_match, c.rate_ratio, c.p50_ratio
        );
    }
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    require_root()?;
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.policies < 2 {
        bail!("--policies must be at least 2 (one allows the client, the others are the load)");
    }
    if args.cnps > 1000 {
        bail!("--cnps must be at most 1000 (priorities 0..=1000 per tier)");
    }
    if !(1..=200).contains(&args.idle_pods) {
        bail!("--idle-pods must be between 1 and 200 (one /24 of pod addresses per node)");
    }
    for dp in &args.dataplane {
        if dp != "iptables" && dp != "nftables" {
            bail!("unknown dataplane {dp:?}: use iptables or nftables");
        }
    }
    let mut report = Report {
        cases: vec![],
        apply_to_blocked: vec![],
        staged_vs_enforced: vec![],
    };
    let cni: Cni = args.cni.parse().map_err(anyhow::Error::msg)?;
    let modes: Vec<EndpointMatch> = if args.endpoint_match.is_empty() {
        match cni {
            Cni::Palisade => vec![EndpointMatch::Interface, EndpointMatch::Address],
            Cni::Bridge | Cni::Ptp => vec![EndpointMatch::Address],
        }
    } else {
        args.endpoint_match
            .iter()
            .map(|m| m.parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?
    };
    for dp in &args.dataplane {
        for &m in &modes {
            bench_dataplane(dp, m, &args, &mut report)
                .with_context(|| format!("benchmark on {dp} ({m} matching) failed"))?;
        }
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print_table(&report, args.rounds),
    }
    Ok(ExitCode::SUCCESS)
}
