//! `palisade lab bench`: real packets through real rules. For each dataplane, a 2-node lab
//! with a client pod on n1 and a server pod on n2 (port 80), and from inside the client:
//!
//! * new TCP connections per second (sequential connect + close) and request latency
//!   (connect, HTTP GET, answer, close; p50 and p99), with no policy, with the server selected
//!   by 1 policy that allows the client, and with 1,000 policies selecting the server (999
//!   allowing other, absent clients, then the one allowing ours: a new connection is judged
//!   by all of them); ratios to the no-policy baseline;
//! * policy apply → blocked: a prober connects continuously while a deny-all-ingress policy
//!   for the server is applied; the time from the apply request to the first failing attempt
//!   (p50, p99 over `--block-runs` runs; the policy is deleted and flow restored in between).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use palisade_lab::bench::{connection_rate, quantile, request_latencies, ContinuousProber};
use palisade_lab::control::{self, Request};
use palisade_lab::{LabNames, UpOptions};
use palisade_model::k8s::{
    LabelSelector, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec, ObjectMeta,
};
use palisade_model::{Cluster, Endpoint, EndpointId, NamedPort, Policy, PolicyId, Protocol};
use serde::Serialize;

use super::{require_root, Output};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Dataplanes to measure.
    #[arg(long, value_delimiter = ',', default_value = "iptables,nftables")]
    pub dataplane: Vec<String>,
    /// How long each connection-rate measurement runs, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub rate_ms: u64,
    /// Requests per latency measurement.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// The number of policies of the "many policies" case.
    #[arg(long, default_value_t = 1000)]
    pub policies: usize,
    /// Apply → blocked measurements per dataplane.
    #[arg(long, default_value_t = 20)]
    pub block_runs: usize,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Serialize)]
struct Case {
    dataplane: String,
    scenario: String,
    connections_per_sec: f64,
    rate_ratio: f64,
    latency_p50_us: f64,
    latency_p99_us: f64,
    p50_ratio: f64,
    /// Connection attempts that failed (1 s timeout) in both measurements.
    failures: u64,
}

#[derive(Serialize)]
struct Block {
    dataplane: String,
    runs: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    cases: Vec<Case>,
    apply_to_blocked: Vec<Block>,
}

const NS: &str = "bench";

fn policy(name: &str, ingress_from: Option<(&str, &str)>) -> Result<Policy> {
    let labels = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        match_expressions: None,
    };
    let ingress = ingress_from.map(|(k, v)| {
        vec![NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(labels(k, v)),
                ..Default::default()
            }]),
            ports: Some(vec![NetworkPolicyPort {
                protocol: Some("TCP".into()),
                port: Some(palisade_model::k8s::IntOrString::Int(80)),
                end_port: None,
            }]),
        }]
    });
    let np = NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(NS.to_string()),
            ..Default::default()
        },
        spec: NetworkPolicySpec {
            pod_selector: labels("app", "server"),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress.unwrap_or_default()),
            egress: None,
        },
    };
    palisade_model::convert::network_policy(&np)
        .map_err(|e| anyhow::anyhow!("bench policy {name}: {e:?}"))
}

fn cluster() -> Cluster {
    let mut c = Cluster::new();
    let pod = |name: &str, node: &str, app: &str, ports: Vec<NamedPort>| Endpoint {
        id: EndpointId::new(NS, name),
        node: Some(node.to_string()),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        ips: vec![],
        ports,
    };
    c.upsert_endpoint(pod("client", "n1", "client", vec![]));
    c.upsert_endpoint(pod(
        "server",
        "n2",
        "server",
        vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        }],
    ));
    c
}

fn apply(names: &LabNames, policies: Vec<Policy>) -> Result<()> {
    let timeout = palisade_lab::daemon::SYNC_TIMEOUT + Duration::from_secs(5);
    let request = Request::Apply {
        namespaces: vec![],
        pods: vec![],
        policies,
    };
    control::call(&names.socket(), &request, timeout)?;
    Ok(())
}

fn delete(names: &LabNames, name: &str) -> Result<()> {
    let id = PolicyId {
        tier: palisade_model::DEFAULT_TIER.into(),
        namespace: Some(NS.into()),
        name: name.into(),
    };
    let timeout = palisade_lab::daemon::SYNC_TIMEOUT + Duration::from_secs(5);
    control::call(&names.socket(), &Request::DeletePolicy { id }, timeout)?;
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

fn bench_dataplane(dataplane: &str, args: &BenchArgs, report: &mut Report) -> Result<()> {
    let names = LabNames::new(&format!("bench-{}-{}", &dataplane[..3], std::process::id()))?;
    let options = UpOptions {
        nodes: 2,
        dataplane: dataplane.to_string(),
        datastore: "embedded:".into(),
        agents: true,
    };
    let state = palisade_lab::up(&names, &options, cluster())?;
    let _down = Down(names.clone());
    let client = state
        .plan
        .pod(&EndpointId::new(NS, "client"))
        .context("no client pod")?
        .netns
        .clone();
    let server = state
        .plan
        .pod(&EndpointId::new(NS, "server"))
        .context("no server pod")?
        .ip;
    eprintln!("{dataplane}: lab up; measuring");

    // Apply → blocked, on the open server.
    let prober = ContinuousProber::start(&client, server, 80, Duration::from_millis(50))?;
    let mut blocked = Vec::new();
    for _ in 0..args.block_runs {
        let t0 = Instant::now();
        apply(&names, vec![policy("bench-deny", None)?])?;
        let at = prober
            .wait_for(t0, false, Duration::from_secs(10))
            .context("traffic was never blocked after the deny policy was applied")?;
        blocked.push(at.saturating_duration_since(t0));
        delete(&names, "bench-deny")?;
        prober
            .wait_for(Instant::now(), true, Duration::from_secs(10))
            .context("traffic did not flow again after the deny policy was deleted")?;
    }
    drop(prober);
    blocked.sort();
    report.apply_to_blocked.push(Block {
        dataplane: dataplane.into(),
        runs: blocked.len(),
        p50_ms: quantile(&blocked, 0.5).as_secs_f64() * 1e3,
        p99_ms: quantile(&blocked, 0.99).as_secs_f64() * 1e3,
        max_ms: blocked.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    });

    let mut baseline = (0.0, 0.0);
    for scenario in ["no policy", "1 policy", "many policies"] {
        match scenario {
            "1 policy" => apply(
                &names,
                vec![policy("allow-client", Some(("app", "client")))?],
            )?,
            "many policies" => {
                let mut more = Vec::new();
                for i in 1..args.policies {
                    let label = format!("c{i}");
                    more.push(policy(&format!("allow-{i:05}"), Some(("client", &label)))?);
                }
                apply(&names, more)?;
            }
            _ => {}
        }
        let rate = connection_rate(&client, server, 80, Duration::from_millis(args.rate_ms))?;
        let req = request_latencies(&client, server, 80, args.requests)?;
        let lat = &req.latencies;
        let p50 = us(quantile(lat, 0.5));
        let rate_per_sec = rate.per_sec;
        if scenario == "no policy" {
            baseline = (rate_per_sec, p50);
        }
        report.cases.push(Case {
            dataplane: dataplane.into(),
            scenario: if scenario == "many policies" {
                format!("{} policies", args.policies)
            } else {
                scenario.into()
            },
            connections_per_sec: rate_per_sec,
            rate_ratio: rate_per_sec / baseline.0.max(f64::MIN_POSITIVE),
            latency_p50_us: p50,
            latency_p99_us: us(quantile(lat, 0.99)),
            p50_ratio: p50 / baseline.1.max(f64::MIN_POSITIVE),
            failures: rate.failures + req.failures,
        });
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    require_root()?;
    let mut report = Report {
        cases: vec![],
        apply_to_blocked: vec![],
    };
    for dp in &args.dataplane {
        if dp != "iptables" && dp != "nftables" {
            anyhow::bail!("unknown dataplane {dp:?}: use iptables or nftables");
        }
        bench_dataplane(dp, &args, &mut report)
            .with_context(|| format!("benchmark on {dp} failed"))?;
    }
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("client pod on n1 -> server pod on n2, port 80/TCP (debug builds are slower: use --release)");
    println!(
        "{:<9} {:<15} {:>10} {:>7} {:>10} {:>10} {:>7} {:>8}",
        "DATAPLANE", "SCENARIO", "CONN/S", "RATIO", "P50 µs", "P99 µs", "RATIO", "FAILED"
    );
    for c in &report.cases {
        println!(
            "{:<9} {:<15} {:>10.0} {:>7.2} {:>10.1} {:>10.1} {:>7.2} {:>8}",
            c.dataplane,
            c.scenario,
            c.connections_per_sec,
            c.rate_ratio,
            c.latency_p50_us,
            c.latency_p99_us,
            c.p50_ratio,
            c.failures
        );
    }
    println!(
        "\npolicy apply -> traffic blocked (continuous prober, deny-all-ingress on the server):"
    );
    for b in &report.apply_to_blocked {
        println!(
            "{:<9} runs {:>3}  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            b.dataplane, b.runs, b.p50_ms, b.p99_ms, b.max_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}
