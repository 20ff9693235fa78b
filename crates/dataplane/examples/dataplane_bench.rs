//! iptables+ipset against nftables on one node: time to program from empty, to apply one pod
//! label change, to apply one policy add. Each backend runs in its own throwaway network
//! namespace. Needs root.
//!
//! ```text
//! cargo run --release -p palisade-dataplane --example dataplane_bench -- \
//!     [--local 110] [--remote 10000] [--policies 2000] [--iterations 50] [--seed 1]
//! ```
//!
//! Backends: `nft-cli` (every write through `nft -f`), `nft-nl` (element-only changes through
//! netlink, the rest through `nft -f`), `iptables` (ipset + iptables-restore).
//!
//! Three times per update: `render` (DesiredState → IR → program), `reconcile` (diff against
//! the cached view + the kernel writes) and `kernel` (the writing commands alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_calc::{CalcConfig, Calculator, DesiredState, Update};
use palisade_dataplane::netns::{is_root, NetnsGuard};
use palisade_dataplane::nft::libnft::LibNftables;
use palisade_dataplane::nft::netlink::NetlinkElements;
use palisade_dataplane::nft::NftBackend;
use palisade_dataplane::{
    iptables_dataplane, nft_dataplane, ApplyReport, Dataplane, RetryPolicy, StateDataplane,
    ThreadSleeper,
};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_model::{Cluster, Endpoint, PolicyId};
use palisade_render::RenderConfig;

struct Args {
    local: usize,
    remote: usize,
    policies: usize,
    iterations: usize,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        local: 110,
        remote: 10_000,
        policies: 2_000,
        iterations: 50,
        seed: 1,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let n = pair.get(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        match pair[0].as_str() {
            "--local" => a.local = n as usize,
            "--remote" => a.remote = n as usize,
            "--policies" => a.policies = n as usize,
            "--iterations" => a.iterations = n as usize,
            "--seed" => a.seed = n,
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    a
}

fn cluster(a: &Args, policies: usize) -> (Cluster, String) {
    let pods = a.local + a.remote;
    let nodes = (pods / a.local.max(1)).max(1);
    let cfg = SynthConfig {
        namespaces: (pods / 50).max(1),
        pods,
        policies,
        nodes,
        seed: a.seed,
    };
    let c = generate(&cfg);
    // The node whose pod count is closest to the wanted local count.
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for e in &c.endpoints {
        if let Some(n) = &e.node {
            *counts.entry(n.clone()).or_default() += 1;
        }
    }
    let node = counts
        .iter()
        .min_by_key(|(_, n)| n.abs_diff(a.local))
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| "node-0".into());
    (c, node)
}

fn calculator(c: &Cluster, node: &str) -> Calculator {
    let mut calc = Calculator::new(CalcConfig::new(node));
    let mut ups: Vec<Update> = c.tiers.iter().cloned().map(Update::TierUpsert).collect();
    ups.extend(c.namespaces.values().cloned().map(Update::NamespaceUpsert));
    ups.extend(c.endpoints.iter().cloned().map(Update::EndpointUpsert));
    ups.extend(c.policies.iter().cloned().map(Update::PolicyUpsert));
    calc.apply_all(ups);
    calc
}

#[derive(Default)]
struct Samples {
    render: Vec<Duration>,
    reconcile: Vec<Duration>,
    kernel: Vec<Duration>,
    /// Per write command (`program phase`): its times.
    phases: std::collections::BTreeMap<String, Vec<Duration>>,
    noop: usize,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

impl Samples {
    fn print(&self, backend: &str, what: &str) {
        for (name, v) in [
            ("render", &self.render),
            ("reconcile", &self.reconcile),
            ("kernel", &self.kernel),
        ] {
            println!(
                "{backend:9} {what:16} {name:9} n={:3} p50={:>8} ms p99={:>8} ms max={:>8} ms",
                v.len(),
                ms(pct(v, 0.5)),
                ms(pct(v, 0.99)),
                ms(pct(v, 1.0))
            );
        }
        for (name, v) in &self.phases {
            println!(
                "{backend:9} {what:16}   {name:22} n={:3} p50={:>8} ms p99={:>8} ms",
                v.len(),
                ms(pct(v, 0.5)),
                ms(pct(v, 0.99)),
            );
        }
        if self.noop > 0 {
            println!(
                "{backend:9} {what:16} ({} updates changed nothing in the kernel)",
                self.noop
            );
        }
    }
}

fn timed_apply(
    dp: &mut dyn Dataplane,
    state: &DesiredState,
    s: &mut Samples,
) -> Result<ApplyReport, String> {
    let t = Instant::now();
    let report = dp.apply_state(state).map_err(|e| e.to_string())?;
    let total = t.elapsed();
    if report.wrote_nothing() {
        s.noop += 1;
    } else {
        s.render.push(total.saturating_sub(report.duration));
        s.reconcile.push(report.duration);
        s.kernel.push(report.write_time());
        for w in report.writes() {
            let name = format!("{} {}", w.program, w.args.join(" "));
            s.phases.entry(name).or_default().push(w.elapsed);
        }
    }
    Ok(report)
}

fn run(backend: &str, a: &Args, c: &Cluster, node: &str) -> Result<(), String> {
    let ns = NetnsGuard::new("bench").map_err(|e| e.to_string())?;
    let runner = Arc::new(ns.runner());
    let mut dp: Box<dyn Dataplane> = match backend {
        "iptables" => Box::new(iptables_dataplane(
            RenderConfig::default(),
            runner,
            Arc::new(ThreadSleeper),
            RetryPolicy::none(),
        )),
        "nft-cli" => Box::new(nft_dataplane(
            RenderConfig::default(),
            runner,
            Arc::new(ThreadSleeper),
            RetryPolicy::none(),
        )),
        "nft-lib" => {
            let writer = Arc::new(NetlinkElements::new(Some(ns.name().to_string())));
            let lib = LibNftables::open(Some(ns.name().to_string())).map_err(|e| e.to_string())?;
            Box::new(StateDataplane::new(
                NftBackend::with_writers(writer, Arc::new(lib)),
                RenderConfig::default(),
                runner,
                Arc::new(ThreadSleeper),
                RetryPolicy::none(),
            ))
        }
        _ => {
            let writer = Arc::new(NetlinkElements::new(Some(ns.name().to_string())));
            Box::new(StateDataplane::new(
                NftBackend::with_element_writer(writer),
                RenderConfig::default(),
                runner,
                Arc::new(ThreadSleeper),
                RetryPolicy::none(),
            ))
        }
    };
    let mut calc = calculator(c, node);
    let st = calc.state().clone();
    let mut full = Samples::default();
    let r = timed_apply(dp.as_mut(), &st, &mut full)?;
    println!(
        "{backend:9} program from empty: {} sets, {} chains, {} members; render {} ms, reconcile {} ms, kernel {} ms",
        r.sets_created.len(),
        r.chains_rewritten.len(),
        r.members_added,
        ms(full.render[0]),
        ms(full.reconcile[0]),
        ms(full.kernel[0])
    );

    // Pod label changes: a remote pod takes the labels of another pod of its namespace.
    let mut labels = Samples::default();
    let remote: Vec<&Endpoint> = c
        .endpoints
        .iter()
        .filter(|e| e.node.as_deref() != Some(node))
        .collect();
    let mut i = 0usize;
    let mut tries = 0usize;
    while labels.render.len() < a.iterations && tries < a.iterations * 20 {
        tries += 1;
        let p = remote[(i * 7919) % remote.len()];
        let q = remote[(i * 104_729 + 13) % remote.len()];
        i += 1;
        if p.id.namespace != q.id.namespace && tries.is_multiple_of(2) {
            continue;
        }
        let mut changed = p.clone();
        changed.labels = q.labels.clone();
        let deltas = calc.apply(Update::EndpointUpsert(changed));
        if deltas.is_empty() {
            continue;
        }
        timed_apply(dp.as_mut(), calc.state(), &mut labels)?;
        // Put it back (not measured) so every sample starts from the same state.
        calc.apply(Update::EndpointUpsert(p.clone()));
        dp.apply_state(calc.state()).map_err(|e| e.to_string())?;
    }
    labels.print(backend, "pod label change");

    // Policy adds: a copy of a policy that selects local pods, under a new name.
    let mut adds = Samples::default();
    let active: Vec<PolicyId> = calc.state().policies.keys().cloned().collect();
    for k in 0..a.iterations.min(active.len()) {
        let Some(orig) = c
            .policies
            .iter()
            .find(|p| p.id == active[(k * 31) % active.len()])
        else {
            continue;
        };
        let mut p = orig.clone();
        p.id.name = format!("bench-add-{k}");
        calc.apply(Update::PolicyUpsert(p.clone()));
        timed_apply(dp.as_mut(), calc.state(), &mut adds)?;
        calc.apply(Update::PolicyRemove(p.id.clone()));
        dp.apply_state(calc.state()).map_err(|e| e.to_string())?;
    }
    adds.print(backend, "policy add");

    let t = Instant::now();
    let r = dp.resync().map_err(|e| e.to_string())?;
    println!(
        "{backend:9} resync (read back everything): {} ms, wrote nothing: {}",
        ms(t.elapsed()),
        r.wrote_nothing()
    );
    Ok(())
}

fn main() {
    if !is_root() {
        eprintln!("dataplane_bench needs root (it creates network namespaces)");
        std::process::exit(2);
    }
    let a = args();
    let (c, node) = cluster(&a, a.policies);
    let local = c
        .endpoints
        .iter()
        .filter(|e| e.node.as_deref() == Some(node.as_str()))
        .count();
    println!(
        "cluster: {} pods ({} on {node}), {} policies, {} namespaces",
        c.endpoints.len(),
        local,
        c.policies.len(),
        c.namespaces.len()
    );
    let calc = calculator(&c, &node);
    let st = calc.state();
    println!(
        "desired state of {node}: {} active policies, {} ip sets, {} endpoints",
        st.policies.len(),
        st.ip_sets.len(),
        st.endpoints.len()
    );
    // Where the render time goes (no kernel involved).
    {
        let cfg = RenderConfig::default();
        let t = Instant::now();
        let rs = palisade_render::build(st, &cfg).expect("render");
        let t_build = t.elapsed();
        let t = Instant::now();
        let origins = palisade_dataplane::origins::rule_origins(st, &rs, &cfg);
        let t_origins = t.elapsed();
        let mut ipt_cache = Default::default();
        let mut nft_cache = Default::default();
        let t = Instant::now();
        let ipt = palisade_dataplane::from_ir::iptables_program(&rs, &origins, &mut ipt_cache)
            .expect("iptables program");
        let t_ipt = t.elapsed();
        let t = Instant::now();
        let nft = palisade_dataplane::from_ir::nft_program(&rs, &origins, &mut nft_cache)
            .expect("nft program");
        let t_nft = t.elapsed();
        // Again with the caches warm, as for every update after the first.
        let t = Instant::now();
        let _ = palisade_dataplane::from_ir::iptables_program(&rs, &origins, &mut ipt_cache);
        let t_ipt_warm = t.elapsed();
        let t = Instant::now();
        let _ = palisade_dataplane::from_ir::nft_program(&rs, &origins, &mut nft_cache);
        let t_nft_warm = t.elapsed();
        println!(
            "render breakdown (warm caches): iptables program {} ms, nft program {} ms",
            ms(t_ipt_warm),
            ms(t_nft_warm)
        );
        println!(
            "render breakdown: build {} ms, origins {} ms, iptables program {} ms ({} sets), nft program {} ms ({} sets)",
            ms(t_build),
            ms(t_origins),
            ms(t_ipt),
            ipt.sets.len(),
            ms(t_nft),
            nft.sets.len()
        );
    }
    let only = std::env::var("PALISADE_BENCH_BACKENDS").unwrap_or_default();
    for backend in ["nft-cli", "nft-nl", "nft-lib"] {
        if !only.is_empty() && !only.split(',').any(|b| b == backend) {
            continue;
        }
        if let Err(e) = run(backend, &a, &c, &node) {
            eprintln!("{backend}: {e}");
        }
    }

    // The kernel allows 256 ipsets in all: iptables gets the largest policy count that fits
    // in 200 (both families count; the scratch set needs one more).
    let mut policies = a.policies;
    loop {
        let (c2, node2) = cluster(&a, policies);
        let calc2 = calculator(&c2, &node2);
        let mut dp = iptables_dataplane(
            RenderConfig::default(),
            Arc::new(palisade_dataplane::NoopRunner),
            Arc::new(ThreadSleeper),
            RetryPolicy::none(),
        );
        let sets = dp
            .render(calc2.state())
            .map(|p| p.sets.len())
            .unwrap_or(usize::MAX);
        if sets <= 200 || policies <= 10 {
            if policies != a.policies {
                println!("iptables: {} policies need more than 200 ipsets; measuring with {policies} policies ({sets} ipsets)", a.policies);
            } else {
                println!("iptables: {sets} ipsets");
            }
            if let Err(e) = run("iptables", &a, &c2, &node2) {
                eprintln!("iptables: {e}");
            }
            break;
        }
        println!("iptables: {policies} policies would need {sets} ipsets (limit ~200 of the kernel's 256)");
        policies = policies * 2 / 3;
    }
}
