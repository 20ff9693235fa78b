//! `palisade bench`: timings of Palisade's computations on synthetic clusters
//! (`palisade_engine::synth`), for capacity planning and regressions. Run release builds.

mod fanout;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use palisade_engine::synth::{generate, SynthConfig, SynthRng};
use palisade_engine::{matrix, matrix_order, naive_rows, Probe};
use palisade_model::Protocol;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// The full TCP/80 reachability matrix: bitset engine against pair-by-pair evaluation.
    #[command(after_help = "\
Measure each size in a fresh process (peak memory is per process), with a release build:
  cargo run --release -p palisade-cli -- bench matrix --pods 1000 --policies 200
  cargo run --release -p palisade-cli -- bench matrix --pods 5000 --policies 1000 -o json")]
    Matrix(MatrixArgs),
    /// How fast a change in etcd reaches many agents: N simulated agents (syncer, translator,
    /// calculator; no kernel) in one process against one etcd.
    #[command(after_help = "\
Starts its own etcd on 127.0.0.1 (a free port, a temporary directory) unless --datastore is given.
Run a release build; the issue's target size:
  cargo run --release -p palisade-cli -- bench fanout --agents 1000 --pods 10000 --policies 2000
  cargo run --release -p palisade-cli -- bench fanout --agents 20 --pods 400 --changes 10 -o json")]
    Fanout(fanout::FanoutArgs),
    /// What-if (`palisade matrix --what-if-f`): one changed policy against the live matrix.
    Whatif(super::bench_whatif::Args),
    /// `--established revoke` (root): write of a denying policy → established connection cut.
    Revoke(super::bench_revoke::Args),
    /// The reachability page (`matrix -o html`) of a synthetic cluster, written to --out;
    /// its size and how long it took to compute are printed.
    #[command(after_help = "\
Example (then open /tmp/reach.html, or time it in Chromium):
  cargo run --release -p palisade-cli -- bench page --pods 1000 --policies 200 --out /tmp/reach.html")]
    Page(PageArgs),
}

#[derive(clap::Args)]
pub struct PageArgs {
    /// Pods in the synthetic cluster.
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Policies in the synthetic cluster.
    #[arg(long, default_value_t = 200)]
    pub policies: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Probes, as for `matrix --probe`.
    #[arg(long = "probe", value_name = "PORT/PROTO", default_values = ["80/TCP", "53/UDP"])]
    pub probes: Vec<Probe>,
    /// Where to write the page.
    #[arg(long, value_name = "FILE")]
    pub out: std::path::PathBuf,
    /// Output format of the report.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Serialize)]
struct PageReport {
    pods: usize,
    policies: usize,
    probes: usize,
    matrix_ms: f64,
    page_ms: f64,
    bytes: usize,
}

#[derive(clap::Args)]
pub struct MatrixArgs {
    /// Pods in the synthetic cluster.
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Policies in the synthetic cluster.
    #[arg(long, default_value_t = 200)]
    pub policies: usize,
    /// Namespaces (default: one per 50 pods).
    #[arg(long)]
    pub namespaces: Option<usize>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timed runs of the bitset matrix (the fastest and the median are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Rows of the naive matrix to time, chosen at random, then extrapolated to all rows;
    /// default: every row up to 2,000 pods, else 100.
    #[arg(long)]
    pub naive_rows: Option<usize>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Serialize)]
struct Report {
    pods: usize,
    policies: usize,
    namespaces: usize,
    seed: u64,
    generate_ms: f64,
    bitset_ms_min: f64,
    bitset_ms_median: f64,
    allowed_pairs: usize,
    /// Peak resident memory of the process (VmHWM) after generating the cluster and after
    /// the matrix runs, in KiB; `None` where /proc is unavailable.
    peak_kib_after_generate: Option<u64>,
    peak_kib_after_matrix: Option<u64>,
    naive_rows_timed: usize,
    naive_ms: f64,
    naive_extrapolated: bool,
    naive_agrees_on_timed_rows: bool,
    speedup: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Matrix(a) => bench_matrix(a),
        What::Fanout(a) => fanout::run(a),
        What::Whatif(a) => super::bench_whatif::run(a),
        What::Revoke(a) => super::bench_revoke::run(a),
        What::Page(a) => bench_page(a),
    }
}

fn bench_page(a: PageArgs) -> anyhow::Result<ExitCode> {
    let cluster = generate(&SynthConfig::sized(a.pods, a.policies, a.seed));
    let t = Instant::now();
    let m = matrix(&cluster, &a.probes);
    let matrix_ms = ms(t.elapsed());
    let t = Instant::now();
    let html = super::matrix_html::page(&cluster, &m);
    let page_ms = ms(t.elapsed());
    std::fs::write(&a.out, &html)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", a.out.display()))?;
    let r = PageReport {
        pods: m.pods.len(),
        policies: cluster.policies.len(),
        probes: m.probes.len(),
        matrix_ms,
        page_ms,
        bytes: html.len(),
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        Output::Text => println!(
            "{} pods, {} policies, {} probes: matrix {:.1} ms, page {:.1} ms, {} bytes ({:.1} KiB) in {}",
            r.pods,
            r.policies,
            r.probes,
            r.matrix_ms,
            r.page_ms,
            r.bytes,
            r.bytes as f64 / 1024.0,
            a.out.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_matrix(a: MatrixArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.runs >= 1, "--runs must be at least 1");
    let mut cfg = SynthConfig::sized(a.pods, a.policies, a.seed);
    if let Some(ns) = a.namespaces {
        cfg.namespaces = ns.max(1);
    }
    let t = Instant::now();
    let cluster = generate(&cfg);
    let generate_ms = ms(t.elapsed());
    let peak_gen = peak_kib();

    let probe = [Probe::new(Protocol::Tcp, 80)];
    let mut times = Vec::new();
    let mut result = None;
    for _ in 0..a.runs {
        let t = Instant::now();
        let m = matrix(&cluster, &probe);
        times.push(t.elapsed());
        result = Some(m);
    }
    let peak_matrix = peak_kib();
    times.sort();
    let m = result.ok_or_else(|| anyhow::anyhow!("no matrix run"))?;
    let pm = &m.probes[0];

    let order = matrix_order(&cluster);
    let n = order.len();
    let sample = a
        .naive_rows
        .unwrap_or(if n <= 2000 { n } else { 100 })
        .min(n);
    let rows: Vec<usize> = if sample == n {
        (0..n).collect()
    } else {
        let mut rng = SynthRng::new(a.seed ^ 0x6e61_6976_6521);
        let mut picked = std::collections::BTreeSet::new();
        while picked.len() < sample {
            picked.insert(rng.below(n));
        }
        picked.into_iter().collect()
    };
    let t = Instant::now();
    let naive = naive_rows(&cluster, &order, probe[0], &rows);
    let naive_sample = t.elapsed();
    let agrees = rows.iter().zip(&naive).all(|(&i, r)| pm.rows[i] == *r);
    let naive_ms = if rows.is_empty() {
        0.0
    } else {
        ms(naive_sample) * n as f64 / rows.len() as f64
    };
    let bitset_min = ms(times[0]);
    let report = Report {
        pods: n,
        policies: cluster.policies.len(),
        namespaces: cluster.namespaces.len(),
        seed: a.seed,
        generate_ms,
        bitset_ms_min: bitset_min,
        bitset_ms_median: ms(times[times.len() / 2]),
        allowed_pairs: pm.count(),
        peak_kib_after_generate: peak_gen,
        peak_kib_after_matrix: peak_matrix,
        naive_rows_timed: rows.len(),
        naive_ms,
        naive_extrapolated: rows.len() < n,
        naive_agrees_on_timed_rows: agrees,
        speedup: if bitset_min > 0.0 {
            naive_ms / bitset_min
        } else {
            0.0
        },
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print_report(&report),
    }
    Ok(if agrees {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the bitset matrix and the naive evaluation disagree");
        ExitCode::FAILURE
    })
}

fn print_report(r: &Report) {
    let kib = |k: Option<u64>| {
        k.map_or("n/a".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!(
        "synthetic cluster: {} pods, {} policies, {} namespaces (seed {}), generated in {:.1} ms",
        r.pods, r.policies, r.namespaces, r.seed, r.generate_ms
    );
    println!(
        "bitset matrix TCP/80: {:.1} ms (fastest), {:.1} ms (median); {} of {} pairs allowed",
        r.bitset_ms_min,
        r.bitset_ms_median,
        r.allowed_pairs,
        r.pods * r.pods
    );
    println!(
        "peak memory (VmHWM): {} after generating, {} after the matrix",
        kib(r.peak_kib_after_generate),
        kib(r.peak_kib_after_matrix)
    );
    let how = if r.naive_extrapolated {
        format!("extrapolated from {} random rows", r.naive_rows_timed)
    } else {
        "every pair".to_string()
    };
    println!(
        "naive pair-by-pair: {:.1} ms ({how}); agrees on the timed rows: {}",
        r.naive_ms, r.naive_agrees_on_timed_rows
    );
    println!("speedup: {:.1}x", r.speedup);
}

/// VmHWM of this process in KiB, from /proc/self/status.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
