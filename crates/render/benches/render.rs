//! Render timings on synthetic clusters (engine's `synth`), for one node: IR build, iptables
//! text, nftables script, and a one-member delta. Run: `cargo bench -p palisade-render`.

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_calc::{compute_full, CalcConfig, Delta, IpSetMember};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_render::{build, delta, iptables, nft, RenderConfig};

fn bench(c: &mut Criterion) {
    for (pods, policies) in [(1_000, 200), (10_000, 1_000)] {
        let cluster = generate(&SynthConfig {
            namespaces: 50,
            pods,
            policies,
            nodes: 10,
            seed: 7,
        });
        let node = cluster.endpoints[0].node.clone().unwrap_or_default();
        let state = compute_full(&CalcConfig::new(node), &cluster);
        let cfg = RenderConfig::default();
        let rs = build(&state, &cfg).expect("synthetic state renders");
        let members: usize = rs.sets.iter().map(|s| s.members.len()).sum();
        let rules: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
        eprintln!(
            "{pods} pods, {policies} policies: {} local endpoints, {} chains, {rules} rules, {} sets, {members} members",
            state.endpoints.len(),
            rs.chains.len(),
            rs.sets.len()
        );
        let name = format!("{pods}p-{policies}pol");
        c.bench_function(&format!("build/{name}"), |b| b.iter(|| build(&state, &cfg)));
        c.bench_function(&format!("iptables/{name}"), |b| {
            b.iter(|| iptables::render(&rs, true))
        });
        c.bench_function(&format!("nft/{name}"), |b| b.iter(|| nft::render(&rs)));
        if let Some(set) = state.ip_sets.values().next() {
            let mut next = state.clone();
            let member = IpSetMember::Net("10.255.255.1/32".parse().expect("net"));
            if let Some(s) = next.ip_sets.get_mut(&set.id) {
                s.members.insert(member.clone());
            }
            let deltas = vec![Delta::SetMemberAdded {
                id: set.id.clone(),
                member,
            }];
            c.bench_function(&format!("delta-one-member/{name}"), |b| {
                b.iter(|| delta::iptables(&state, &next, &deltas, &cfg))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
