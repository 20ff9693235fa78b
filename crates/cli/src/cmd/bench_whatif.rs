//! `palisade bench whatif`: the cost of a what-if (`palisade matrix --what-if-f`) on a
//! synthetic cluster, for three kinds of change to one policy, against two full matrices.

use std::time::{Duration, Instant};

use palisade_engine::synth::{generate, SynthConfig};
use palisade_engine::{matrix, what_if, Probe};
use palisade_model::{Cluster, Protocol, Selector};
use serde::Serialize;

use super::bench::Output;

#[derive(clap::Args)]
#[command(after_help = "\
Run a release build:
  cargo run --release -p palisade-cli -- bench whatif --pods 5000 --policies 1000")]
pub struct Args {
    /// Pods in the synthetic cluster.
    #[arg(long, default_value_t = 5000)]
    pub pods: usize,
    /// Policies in the synthetic cluster.
    #[arg(long, default_value_t = 1000)]
    pub policies: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timed runs per change (the fastest and the median are reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Serialize)]
struct Case {
    change: String,
    changed_pairs: usize,
    what_if_ms_min: f64,
    what_if_ms_median: f64,
}

#[derive(Serialize)]
struct Report {
    pods: usize,
    policies: usize,
    probe: String,
    two_full_matrices_ms_min: f64,
    cases: Vec<Case>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Three changes of one policy each: a policy whose selector widens to its whole namespace,
/// a new default-deny in the namespace of the first pod, a policy deleted.
fn changes(now: &Cluster) -> Vec<(String, Cluster)> {
    let mut out = Vec::new();
    let k = now.policies.len() / 2;
    if let Some(p) = now.policies.get(k) {
        let mut then = now.clone();
        then.policies[k].selector = Selector::All;
        out.push((format!("{} selects its whole namespace", p.id), then));
    }
    if let (Some(template), Some(ep)) = (now.policies.first(), now.endpoints.first()) {
        let mut deny = template.clone();
        deny.id.namespace = Some(ep.id.namespace.clone());
        deny.id.name = "bench-default-deny".to_string();
        deny.selector = Selector::All;
        deny.ingress = Some(Vec::new());
        deny.egress = None;
        let mut then = now.clone();
        then.policies.push(deny);
        out.push((
            format!("a new ingress default-deny in {}", ep.id.namespace),
            then,
        ));
    }
    if let Some(p) = now.policies.get(k + 1) {
        let mut then = now.clone();
        then.policies.remove(k + 1);
        out.push((format!("{} deleted", p.id), then));
    }
    out
}

pub fn run(a: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(a.runs >= 1, "--runs must be at least 1");
    let now = generate(&SynthConfig::sized(a.pods, a.policies, a.seed));
    let probe = [Probe::new(Protocol::Tcp, 80)];
    let full = (0..a.runs)
        .map(|_| {
            let t = Instant::now();
            let _ = matrix(&now, &probe);
            let _ = matrix(&now, &probe);
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    let mut cases = Vec::new();
    for (change, then) in changes(&now) {
        let mut times = Vec::new();
        let mut pairs = 0;
        for _ in 0..a.runs {
            let t = Instant::now();
            let w = what_if(&now, &then, &probe);
            times.push(t.elapsed());
            pairs = w.changes.len();
        }
        times.sort();
        cases.push(Case {
            change,
            changed_pairs: pairs,
            what_if_ms_min: ms(times[0]),
            what_if_ms_median: ms(times[times.len() / 2]),
        });
    }
    let report = Report {
        pods: now.endpoints.len(),
        policies: now.policies.len(),
        probe: probe[0].to_string(),
        two_full_matrices_ms_min: ms(full),
        cases,
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            println!(
                "synthetic cluster: {} pods, {} policies; probe {}",
                report.pods, report.policies, report.probe
            );
            println!(
                "two full bitset matrices (one side each): {:.1} ms",
                report.two_full_matrices_ms_min
            );
            for c in &report.cases {
                println!(
                    "what-if, {}: {} pair(s) change, {:.1} ms (fastest), {:.1} ms (median)",
                    c.change, c.changed_pairs, c.what_if_ms_min, c.what_if_ms_median
                );
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
