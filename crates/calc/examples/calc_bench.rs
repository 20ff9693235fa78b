//! Benchmark of the per-node calculation on a synthetic cluster (`palisade_engine::synth`).
//!
//! ```text
//! cargo run --release -p palisade-calc --example calc_bench [-- --pods N --policies N
//!     --nodes N --namespaces N --trials N --seed N]
//! ```
//!
//! Prints: the initial load (a fresh `Calculator` fed the whole cluster in one batch) and the
//! `compute_full` oracle time, peak memory (VmHWM), and p50/p99/max latency of single
//! incremental updates (pod label change, pod add, pod remove, policy add, policy remove,
//! namespace label change), plus set/rule counts. Defaults: 10,000 pods, 2,000 policies,
//! 100 nodes, 199 namespaces (coprime with the node count, so a node's pods spread over many
//! namespaces), node `node-0` under test.

use std::time::{Duration, Instant};

use palisade_calc::{cluster_updates, compute_full, CalcConfig, Calculator, Update};
use palisade_engine::synth::{generate, SynthConfig, SynthRng};
use palisade_model::{
    Action, Endpoint, EndpointId, EndpointPeer, NamespaceMatch, Peer, Policy, PolicyId, PortMatch,
    PortSpec, Protocol, Rule, Selector,
};

struct Args {
    synth: SynthConfig,
    trials: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut synth = SynthConfig {
        namespaces: 199,
        pods: 10_000,
        policies: 2_000,
        nodes: 100,
        seed: 42,
    };
    let mut trials = 2_000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--pods" => synth.pods = n as usize,
            "--policies" => synth.policies = n as usize,
            "--nodes" => synth.nodes = n as usize,
            "--namespaces" => synth.namespaces = n as usize,
            "--trials" => trials = n as usize,
            "--seed" => synth.seed = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args { synth, trials })
}

/// A `kB` field of /proc/self/status (`VmHWM`, `VmRSS`).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn vm_hwm() -> String {
    status_kb("VmHWM:").map_or_else(|| "unknown".into(), |kb| format!("{} MiB", kb / 1024))
}

struct Latencies {
    name: &'static str,
    samples: Vec<Duration>,
    deltas: usize,
}

impl Latencies {
    fn new(name: &'static str) -> Self {
        Latencies {
            name,
            samples: Vec::new(),
            deltas: 0,
        }
    }

    fn time(&mut self, calc: &mut Calculator, update: Update) {
        let start = Instant::now();
        let deltas = calc.apply(update);
        self.samples.push(start.elapsed());
        self.deltas += deltas.len();
    }

    fn report(&mut self) {
        self.samples.sort();
        let n = self.samples.len();
        if n == 0 {
            return;
        }
        let at = |q: f64| self.samples[((n as f64 * q) as usize).min(n - 1)];
        println!(
            "  {:<24} n={:<5} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}  deltas/update={:.1}",
            self.name,
            n,
            at(0.50),
            at(0.99),
            self.samples[n - 1],
            self.deltas as f64 / n as f64
        );
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("calc_bench: {e}");
            std::process::exit(2);
        }
    };
    let cfg = args.synth;
    let node = "node-0";
    let start = Instant::now();
    let mut cluster = generate(&cfg);
    println!(
        "cluster: {} pods, {} policies, {} namespaces, {} nodes (generated in {:.1?}); node under test {node}",
        cluster.endpoints.len(),
        cluster.policies.len(),
        cluster.namespaces.len(),
        cfg.nodes,
        start.elapsed()
    );
    let config = CalcConfig::new(node);
    let updates = cluster_updates(&cluster);

    let rss_before = status_kb("VmRSS:");
    let mut calc = Calculator::new(config.clone());
    calc.apply_all(updates.clone());
    if let (Some(before), Some(after)) = (rss_before, status_kb("VmRSS:")) {
        println!(
            "resident memory of one loaded Calculator (VmRSS growth): {} MiB",
            after.saturating_sub(before) / 1024
        );
    }
    let mut loads = Vec::new();
    for round in 0..3 {
        let mut fresh = Calculator::new(config.clone());
        let batch = updates.clone();
        let start = Instant::now();
        let deltas = fresh.apply_all(batch);
        loads.push(start.elapsed());
        if round == 0 {
            println!("initial load deltas: {}", deltas.len());
        }
        calc = fresh;
    }
    loads.sort();
    println!(
        "full compute (Calculator, one batch of {} updates): median {:.1?} (min {:.1?}, max {:.1?})",
        updates.len(),
        loads[1],
        loads[0],
        loads[2]
    );
    println!("peak memory after load (VmHWM): {}", vm_hwm());
    let start = Instant::now();
    let oracle = compute_full(&config, &cluster);
    println!(
        "compute_full oracle: {:.1?}; equal to incremental: {}",
        start.elapsed(),
        oracle == *calc.state()
    );
    drop(oracle);
    let stats = calc.stats();
    println!(
        "state: {} local endpoints, {} active policies of {}, {} ip sets, {} set members, {} rules",
        stats.local_endpoints,
        stats.active_policies,
        stats.policies,
        stats.ip_sets,
        stats.set_members,
        stats.rules
    );

    let mut rng = SynthRng::new(cfg.seed ^ 0x5eed);
    let trials = args.trials;
    println!("incremental latency ({trials} trials each):");

    // Pod label change: move a random pod to another app (and back, also timed).
    let mut label = Latencies::new("pod label change");
    for _ in 0..trials / 2 {
        let i = rng.below(cluster.endpoints.len());
        let original = cluster.endpoints[i].clone();
        let mut changed = original.clone();
        changed
            .labels
            .insert("app".into(), format!("app-{}", rng.below(20)));
        if rng.one_in(2) {
            changed.labels.insert("role".into(), "frontend".into());
        }
        label.time(&mut calc, Update::EndpointUpsert(changed));
        label.time(&mut calc, Update::EndpointUpsert(original));
    }
    label.report();

    // Pod add (random namespace, node and labels), then its removal.
    let mut add = Latencies::new("pod add");
    let mut remove = Latencies::new("pod remove");
    for t in 0..trials {
        let template = &cluster.endpoints[rng.below(cluster.endpoints.len())];
        let mut ep: Endpoint = template.clone();
        ep.id = EndpointId::new(template.id.namespace.clone(), format!("bench-{t}"));
        ep.node = Some(format!("node-{}", rng.below(cfg.nodes.max(1))));
        ep.labels
            .insert("app".into(), format!("app-{}", rng.below(20)));
        let n = 200_000 + t as u32;
        ep.ips = vec![std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0x0b00_0000 | n,
        ))];
        let id = ep.id.clone();
        add.time(&mut calc, Update::EndpointUpsert(ep));
        remove.time(&mut calc, Update::EndpointRemove(id));
    }
    add.report();
    remove.report();

    // Policy add in a random namespace, then its removal.
    let mut padd = Latencies::new("policy add");
    let mut premove = Latencies::new("policy remove");
    let namespaces: Vec<String> = cluster.namespaces.keys().cloned().collect();
    for t in 0..trials {
        let ns = &namespaces[rng.below(namespaces.len())];
        let policy = bench_policy(t, ns, &mut rng);
        let id = policy.id.clone();
        padd.time(&mut calc, Update::PolicyUpsert(policy));
        premove.time(&mut calc, Update::PolicyRemove(id));
    }
    padd.report();
    premove.report();

    // Namespace label change (env), and back.
    let mut nsl = Latencies::new("namespace label change");
    for _ in 0..trials / 2 {
        let name = &namespaces[rng.below(namespaces.len())];
        let Some(original) = cluster.namespaces.get(name).cloned() else {
            continue;
        };
        let mut changed = original.clone();
        let env = ["prod", "staging", "dev"][rng.below(3)];
        changed.labels.insert("env".into(), env.into());
        nsl.time(&mut calc, Update::NamespaceUpsert(changed));
        nsl.time(&mut calc, Update::NamespaceUpsert(original));
    }
    nsl.report();

    // Everything was undone: the state must equal the oracle again.
    cluster.tiers = palisade_model::Tier::defaults();
    let equal = compute_full(&config, &cluster) == *calc.state();
    println!("after all trials, state equal to compute_full: {equal}");
    println!(
        "peak memory at end (VmHWM, includes the oracle): {}",
        vm_hwm()
    );
}

fn bench_policy(t: usize, ns: &str, rng: &mut SynthRng) -> Policy {
    let app = |rng: &mut SynthRng| Selector::Eq("app".into(), format!("app-{}", rng.below(20)));
    let peer = if rng.one_in(2) {
        EndpointPeer {
            namespaces: NamespaceMatch::Name(ns.to_string()),
            pods: app(rng),
        }
    } else {
        EndpointPeer {
            namespaces: NamespaceMatch::Selector(Selector::Eq(
                "team".into(),
                ["payments", "search", "platform", "web"][rng.below(4)].into(),
            )),
            pods: app(rng),
        }
    };
    let port = if rng.one_in(3) {
        PortMatch::Named("http".into())
    } else {
        PortMatch::Range { start: 80, end: 80 }
    };
    Policy {
        id: PolicyId {
            tier: "default".into(),
            namespace: Some(ns.to_string()),
            name: format!("bench-{t}"),
        },
        order: 1000,
        selector: app(rng),
        namespace_selector: Selector::All,
        staged: false,
        ingress: Some(vec![Rule {
            action: Action::Allow,
            peers: vec![Peer::Endpoints(peer)],
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                port,
            }],
        }]),
        egress: None,
    }
}
